"""Hardening: random bad input to every public estimator and function.

Every case must raise a ``ValueError`` or ``TypeError`` whose message names the argument
(or the cycle), before any work; never a crash deep inside numpy and never a silent NaN.
"""

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dasim import metrics
from dasim.coordinates import Grid2D, PeriodicGrid1D
from dasim.datasets import make_twin_experiment
from dasim.filters import EnKF, KDEDiffusionFilter, SIRFilter, resample
from dasim.models import FunctionModel, Lorenz63, Lorenz96, Persistence
from dasim.observations import ObservationModel

pytestmark = pytest.mark.filterwarnings("ignore::dasim.exceptions.WeightCollapseWarning")

FILTERS = {
    "EnKF": lambda: EnKF(n_members=6, random_state=0),
    "EnKF-stoch": lambda: EnKF(n_members=6, variant="stochastic", random_state=0),
    "SIRFilter": lambda: SIRFilter(n_members=12, jitter=0.5, random_state=0),
    "KDE": lambda: KDEDiffusionFilter(
        n_members=8, sampler="mixture", device="numpy", random_state=0
    ),
}
filters = st.sampled_from(sorted(FILTERS))

# Values that are invalid for each parameter (a value may be invalid for several reasons).
BAD_PARAMS = {
    "n_members": [0, 1, -5, 2.5, "ten", None],
    "inflation": [0.0, -1.0, np.nan, np.inf, "big"],
    "localization_radius": [0.0, -2.0, np.nan, "wide"],
    "state_coordinates": [
        "ring",
        np.zeros((2, 1)),
        np.full((3, 1), np.nan),
        Grid2D((2, 2)),
        PeriodicGrid1D(0),
    ],
    "variant": ["etkf", 3, None],
    "resampling": ["best", 1, None],
    "ess_threshold": [-0.1, 1.5, np.nan, "half"],
    "jitter": [-1.0, np.nan, np.inf, "some"],
    "bandwidth_x": [0.0, -1.0, np.nan, "wide", ("scott", 0.0), None],
    "bandwidth_y": [0.0, -1.0, np.inf, "tall", ("silverman", -2.0), None],
    "sigma_max": [0.0, -3.0, np.nan],
    "sampler": ["euler", 0],
    "schedule": ["cosine", 0],
    "likelihood": ["exact", None],
    "rtol": [0.0, -1e-3, np.nan],
    "n_steps": [0, -1, 2.5],
    "random_state": [1.5, "seed"],
    "model": ["lorenz", 3.0],
    "observation": ["identity", 3.0],
}


def _random_walk(seed, n=30, d=3):
    rng = np.random.default_rng(seed)
    X = np.cumsum(rng.normal(size=(n, d)), axis=0)
    return X, X + rng.normal(scale=0.5, size=X.shape)


@settings(max_examples=60)
@given(name=filters, data=st.data())
def test_bad_parameters_name_themselves(name, data):
    est = FILTERS[name]()
    params = sorted(set(est.get_params()) & set(BAD_PARAMS))
    param = data.draw(st.sampled_from(params))
    value = data.draw(st.sampled_from(BAD_PARAMS[param]))
    est.set_params(**{param: value})
    X, y = _random_walk(0)
    with pytest.raises((ValueError, TypeError), match=param):
        est.fit(X, y)


def _corrupt(X, data, kind):
    X = X.copy()
    i = data.draw(st.integers(0, X.shape[0] - 1))
    j = data.draw(st.integers(0, X.shape[1] - 1))
    X[i, j] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}[kind]
    return X


@settings(max_examples=60)
@given(name=filters, kind=st.sampled_from(["nan", "inf", "-inf"]), data=st.data())
def test_non_finite_states_are_refused(name, kind, data):
    X, y = _random_walk(1)
    with pytest.raises(ValueError, match="X"):
        FILTERS[name]().fit(_corrupt(X, data, kind), y)


@settings(max_examples=40)
@given(
    name=filters,
    shape=st.sampled_from([(0, 3), (5,), (2, 3, 4), (1, 3), ()]),
)
def test_bad_state_shapes(name, shape):
    with pytest.raises(ValueError, match="X"):
        FILTERS[name]().fit(np.ones(shape))


@settings(max_examples=60)
@given(name=filters, data=st.data())
def test_bad_observations_for_assimilate(name, data):
    X, y = _random_walk(2)
    est = FILTERS[name]().fit(X, y)
    case = data.draw(st.sampled_from(["inf", "width", "3d", "empty", "strings"]))
    if case == "inf":
        bad = _corrupt(y, data, data.draw(st.sampled_from(["inf", "-inf"])))
    elif case == "width":
        bad = np.ones((5, data.draw(st.sampled_from([2, 4, 7]))))
    elif case == "3d":
        bad = np.ones((5, 3, 1))
    elif case == "empty":
        bad = np.ones((0, 3))
    else:
        bad = [["a", "b", "c"]]
    with pytest.raises((ValueError, TypeError), match="y"):
        est.assimilate(bad)


@settings(max_examples=40)
@given(name=filters, data=st.data())
def test_bad_initial_ensembles(name, data):
    X, y = _random_walk(3)
    est = FILTERS[name]().fit(X, y)
    case = data.draw(st.sampled_from(["nan", "width", "one", "1d"]))
    init = {
        "nan": np.full((6, 3), np.nan),
        "width": np.ones((6, 2)),
        "one": np.ones((1, 3)),
        "1d": np.ones(3),
    }[case]
    with pytest.raises(ValueError, match="initial_ensemble"):
        est.assimilate(y[:3], initial_ensemble=init)


@settings(max_examples=30)
@given(name=filters, k=st.integers(0, 6), blow=st.sampled_from([np.nan, np.inf]))
def test_model_diverging_at_cycle_k_is_named(name, k, blow):
    calls = {"n": 0}

    def model(ens):
        calls["n"] += 1
        return ens * (blow if calls["n"] == k + 1 else 1.0)

    X, y = _random_walk(4, n=10)
    est = FILTERS[name]().set_params(model=FunctionModel(model)).fit(X, y)
    calls["n"] = 0
    with pytest.raises(ValueError, match=f"cycle {k}"):
        est.assimilate(y)


@settings(max_examples=40)
@given(name=filters, seed=st.integers(0, 2**16), noise=st.floats(0.05, 20.0))
def test_valid_random_problems_never_give_nan(name, seed, noise):
    X, y = _random_walk(seed)
    y = X + np.random.default_rng(seed).normal(scale=noise, size=X.shape)
    ds = FILTERS[name]().fit(X, y).assimilate(y)
    assert np.all(np.isfinite(ds["analysis"].values))
    assert np.all(np.isfinite(ds["log_evidence"].values))


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_fitted_filters_pickle_round_trip(name):
    X, y = _random_walk(5)
    est = FILTERS[name]().fit(X, y)
    back = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(
        back.assimilate(y)["analysis"].values, est.assimilate(y)["analysis"].values
    )


@settings(max_examples=40)
@given(
    kwargs=st.sampled_from(
        [
            {"noise_std": 0.0},
            {"noise_std": -1.0},
            {"noise_std": np.nan},
            {"noise_std": [1.0, 2.0]},
            {"indices": [9]},
            {"indices": np.array([True, False])},
            {"operator": "log"},
            {"scale": np.nan},
        ]
    )
)
def test_bad_observation_models(kwargs):
    name = next(iter(kwargs))
    with pytest.raises((ValueError, TypeError), match=name.split("_")[0]):
        ObservationModel(**kwargs).simulate(np.ones((4, 3)), random_state=0)


@settings(max_examples=30)
@given(
    make=st.sampled_from(
        [
            (lambda: Lorenz63(dt=-0.01), "dt"),
            (lambda: Lorenz63(steps_per_cycle=0), "steps_per_cycle"),
            (lambda: Lorenz96(n=2), "n"),
            (lambda: Lorenz96(n=8, dt=np.nan), "dt"),
            (lambda: Persistence(process_noise=-1.0), "process_noise"),
            (lambda: Persistence(process_noise=np.inf), "process_noise"),
        ]
    )
)
def test_bad_models(make):
    factory, name = make
    n = 3 if "Lorenz63" in repr(factory()) else 8
    with pytest.raises((ValueError, TypeError), match=name):
        factory().forecast(np.ones((4, n)))


def test_twin_experiment_and_resample_inputs():
    with pytest.raises(TypeError, match="observation"):
        make_twin_experiment(Lorenz63(), "identity", 5)
    with pytest.raises(ValueError, match="n_times"):
        make_twin_experiment(Lorenz63(), ObservationModel(), 0)
    with pytest.raises(ValueError, match="weights"):
        resample([0.5, np.nan])
    with pytest.raises(ValueError, match="all zero"):
        resample([0.0, 0.0])
    with pytest.raises(ValueError, match="method"):
        resample([0.5, 0.5], method="best")


@settings(max_examples=40)
@given(
    case=st.sampled_from(["nan", "shape", "weights"]),
    func=st.sampled_from([metrics.rmse, metrics.crps_ensemble, metrics.energy_score]),
)
def test_metrics_refuse_bad_input(case, func):
    truth, ens = np.zeros((4, 2)), np.ones((4, 5, 2))
    if case == "nan":
        ens[1, 2, 0] = np.nan
        match = "ensemble"
        args = (truth, ens)
    elif case == "shape":
        match = "truth|ensemble"
        args = (np.zeros((3, 2)), ens)
    else:
        match = "weights"
        args = (truth, ens, -np.ones((4, 5)))
    with pytest.raises(ValueError, match=match):
        func(*args)
