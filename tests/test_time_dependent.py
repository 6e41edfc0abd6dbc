"""Time-dependent models: ``FunctionModel(time_arg=True)`` receives the time of each cycle."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from _kalman import kalman_filter

from dasim.compose import TransformedStateFilter
from dasim.datasets import make_twin_experiment
from dasim.filters import EnKF, SIRFilter
from dasim.models import FunctionModel, Lorenz63
from dasim.observations import ObservationModel


class _Recorder:
    """A persistence model that records the times it is called with (picklable)."""

    def __init__(self):
        self.times = []

    def __call__(self, ensemble, t):
        self.times.append(t)
        return ensemble.copy()


def _fitted(est, n_state=2):
    return est.fit(np.random.default_rng(99).normal(size=(30, n_state)))


def test_simulate_and_twin_experiment_pass_the_row_index():
    rec = _Recorder()
    model = FunctionModel(rec, time_arg=True)
    model.simulate(4, initial_state=np.zeros(2))
    assert rec.times == [0, 1, 2, 3]
    rec.times.clear()
    model.simulate(3, initial_state=np.zeros(2), times=[10.0, 20.0, 30.0])
    assert rec.times == [10.0, 20.0, 30.0]
    rec.times.clear()
    make_twin_experiment(model, ObservationModel(), 5, random_state=0, initial_state=np.zeros(2))
    assert rec.times == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="times"):
        model.simulate(3, initial_state=np.zeros(2), times=[1.0, 2.0])


@pytest.mark.parametrize("estimator", [EnKF, SIRFilter])
def test_filters_pass_the_time_label_of_each_row(estimator):
    y = np.random.default_rng(0).normal(size=(5, 2))
    est = _fitted(estimator(FunctionModel(_Recorder(), time_arg=True), n_members=4))
    est.set_params(random_state=0)
    est.model_.func.times.clear()  # fit may call the model once to check its shapes
    # A plain array: the row index, the first cycle (from the prior) being t = 0.
    est.assimilate(y)
    assert est.model_.func.times == [0, 1, 2, 3, 4]
    # A labelled y: its labels, which the output's time coordinate carries as well.
    est.model_.func.times.clear()
    ds = est.assimilate(pd.DataFrame(y, index=[1990, 1991, 1992, 1993, 1994]))
    assert est.model_.func.times == [1990, 1991, 1992, 1993, 1994]
    assert ds["time"].values.tolist() == est.model_.func.times
    est.model_.func.times.clear()
    est.assimilate(xr.DataArray(y, dims=("t", "obs"), coords={"t": np.arange(5) * 0.5}))
    assert est.model_.func.times == [0.0, 0.5, 1.0, 1.5, 2.0]
    # score sees the same labels as assimilate (GridSearchCV keeps a DataFrame's index).
    est.model_.func.times.clear()
    est.score(np.zeros((3, 2)), pd.DataFrame(y[2:], index=[7, 8, 9]))
    assert est.model_.func.times == [7, 8, 9]


def test_transformed_state_filter_passes_time_through():
    rec = _Recorder()
    filt = TransformedStateFilter(EnKF(FunctionModel(rec, time_arg=True), n_members=4))
    X = np.random.default_rng(1).normal(size=(20, 2))
    filt.set_params(filter__random_state=0).fit(X, X + 0.1)
    model = filt.filter_.model_.model
    model.func.times.clear()
    filt.assimilate(X[:3])
    assert model.func.times == [0, 1, 2]


def test_forecast_takes_time():
    model = FunctionModel(lambda e, t: e + t, time_arg=True)
    assert model.forecast(np.zeros((2, 1)), time=3).tolist() == [[3.0], [3.0]]
    with pytest.raises(ValueError, match="time"):
        model.forecast(np.zeros((2, 1)))
    # Time-independent models ignore it.
    e = Lorenz63().climatology(3, random_state=0)
    assert np.array_equal(Lorenz63().forecast(e, time=5), Lorenz63().forecast(e))
    plain = FunctionModel(lambda e: 2 * e)
    assert plain.forecast(np.ones((1, 1)), time=4).tolist() == [[2.0]]


@pytest.mark.parametrize("value", [1, "yes", None])
def test_time_arg_must_be_a_bool(value):
    est = EnKF(FunctionModel(lambda e, t: e, time_arg=value), n_members=4)
    with pytest.raises(TypeError, match="time_arg"):
        _fitted(est).assimilate(np.zeros((2, 2)))


# --------------------------------------------------- exactness on a time-varying system
#: x_k = M_k x_{k-1} + N(0, Q): a rotation by a varying angle, growing and shrinking.
N_TIMES = 10
SCALES = np.array([1.3, 0.6, 1.2, 0.5, 1.25, 0.7, 1.1, 0.55, 1.3, 0.8])
ANGLES = np.linspace(0.2, 1.5, N_TIMES)
TRANSITIONS = np.array(
    [
        s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        for s, a in zip(SCALES, ANGLES, strict=True)
    ]
)
Q = np.array([[0.2, 0.05], [0.05, 0.1]])
H = np.array([[1.0, 0.0]])
R = np.array([[0.4]])


def _step(ensemble, t):
    return ensemble @ TRANSITIONS[t].T


@pytest.mark.parametrize("variant", ["sqrt", "stochastic"])
def test_enkf_on_a_time_varying_model_matches_the_kalman_filter(variant):
    model = FunctionModel(_step, process_noise=Q, time_arg=True)
    obs = ObservationModel("identity", noise_std=np.sqrt(R[0, 0]), indices=[0])
    _, y = make_twin_experiment(model, obs, N_TIMES, random_state=4, initial_state=[1.0, -1.0])
    n = 20000
    m0, p0 = np.array([0.5, -0.5]), np.array([[1.0, 0.2], [0.2, 0.6]])
    init = np.random.default_rng(1).multivariate_normal(m0, p0, size=n)
    enkf = _fitted(EnKF(model, obs, n_members=n, variant=variant, random_state=0))
    a = enkf.assimilate(y, initial_ensemble=init)["analysis"].values
    means, covs = kalman_filter(init.mean(0), np.cov(init.T), TRANSITIONS, Q, H, R, y)
    # The same filter with the transitions one cycle late: what a model fed the time at
    # the start of the cycle would track. It must be told apart from the right one.
    late = np.concatenate([TRANSITIONS[:1], TRANSITIONS[:-1]])
    late_means, _ = kalman_filter(init.mean(0), np.cov(init.T), late, Q, H, R, y)
    for k in range(N_TIMES):
        sd = np.sqrt(np.diag(covs[k]))
        # Monte Carlo error of an N-member mean is sd / sqrt(N); 6 of them, compounded
        # over cycles, is the margin. Covariances: relative error sqrt(2/N) each.
        margin = 6 * sd * np.sqrt((k + 2) / n)
        assert np.all(np.abs(a[k].mean(0) - means[k]) < margin)
        scale = np.sqrt(np.outer(np.diag(covs[k]), np.diag(covs[k])))
        assert np.all(np.abs(np.cov(a[k].T) - covs[k]) < 6 * scale * np.sqrt(2 * (k + 2) / n))
    assert np.max(np.abs(late_means - means) / np.sqrt(covs[:, [0, 1], [0, 1]])) > 1.0
