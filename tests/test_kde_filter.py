"""KDEDiffusionFilter: the estimator on single analyses and short runs."""

import warnings

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, TimeSeriesSplit

from dasim import metrics
from dasim.datasets import make_twin_experiment
from dasim.exceptions import WeightCollapseWarning
from dasim.filters import EnKF, KDEDiffusionFilter
from dasim.filters.kde import PAPER_PARAMS
from dasim.models import Lorenz63, Persistence
from dasim.observations import ObservationModel


def _paper(*args, **kwargs):
    """The paper's filter (its parameter set), with ``kwargs`` on top."""
    return KDEDiffusionFilter(*args, **{**PAPER_PARAMS, **kwargs})


def _single_analysis(est, ens, y):
    """One analysis of ``ens`` (persistence model without noise keeps it as forecast)."""
    est.set_params(model=Persistence(0.0))
    est.fit(np.random.default_rng(0).normal(size=(30, ens.shape[1])))
    return est.assimilate(np.atleast_2d(y), initial_ensemble=ens)


def _energy_distance(a, b):
    def mean_dist(p, q):
        return np.mean(np.linalg.norm(p[:, None] - q[None], axis=-1))

    return 2 * mean_dist(a, b) - mean_dist(a, a) - mean_dist(b, b)


@pytest.mark.parametrize("sampler", ["mixture", "ode"])
def test_bimodal_posterior_keeps_both_modes(sampler):
    # x ~ N(0, 1), y = |x| + N(0, 0.1^2), y* = 1: the posterior has modes at +-1 with equal
    # mass. The KDE filter keeps both; the EnKF cannot (cov(x, |x|) = 0: no update). So
    # the whole likelihood goes to the KDE (kalman_fraction=0): the default split would
    # hand most of it to a Gaussian step, which cannot use this observation.
    rng = np.random.default_rng(1)
    ens = rng.normal(size=(2000, 1))
    obs = ObservationModel("abs", noise_std=0.1)
    kde = KDEDiffusionFilter(
        observation=obs,
        n_members=2000,
        bandwidth_x=0.05,
        likelihood="known",
        sampler=sampler,
        kalman_fraction=0.0,
        device="numpy",
        random_state=0,
    )
    a = _single_analysis(kde, ens, [1.0])["analysis"].values[0, :, 0]
    near = np.abs(np.abs(a) - 1.0) < 0.35
    assert near.mean() > 0.9
    frac_pos = np.mean(a[near] > 0)
    # Exact posterior mass of each mode is 1/2; the weights' ESS (about 400 here) sets the
    # Monte Carlo error sqrt(0.25 / ESS) = 0.025: 5 of them is the margin.
    assert abs(frac_pos - 0.5) < 0.125
    enkf = EnKF(observation=obs, n_members=2000, random_state=0)
    b = _single_analysis(enkf, ens, [1.0])["analysis"].values[0, :, 0]
    assert np.mean(np.abs(np.abs(b) - 1.0) < 0.35) < 0.5


def test_linear_gaussian_limit_is_the_kalman_update():
    # Exact weights (likelihood="known") and a small bandwidth: the mixture's mean is the
    # self-normalised importance estimate of the Kalman mean, its covariance the Kalman
    # covariance plus sigma_x^2 I.
    rng = np.random.default_rng(2)
    m0, p0 = np.array([1.0, -1.0]), np.array([[1.0, 0.6], [0.6, 2.0]])
    ens = rng.multivariate_normal(m0, p0, size=20000)
    r = 0.5
    obs = ObservationModel(noise_std=r, indices=[0])
    sx = 0.05
    kde = KDEDiffusionFilter(
        observation=obs,
        n_members=20000,
        bandwidth_x=sx,
        likelihood="known",
        sampler="mixture",
        device="numpy",
        random_state=0,
    )
    ds = _single_analysis(kde, ens, [2.0])
    a = ds["analysis"].values[0]
    pf = np.cov(ens.T)
    h = np.array([[1.0, 0.0]])
    k = pf @ h.T / (h @ pf @ h.T + r**2)
    mean = ens.mean(0) + (k @ (np.array([2.0]) - h @ ens.mean(0)))
    pa = pf - k @ h @ pf
    ess = float(ds["ess"][0])
    sd = np.sqrt(np.diag(pa))
    assert np.all(np.abs(a.mean(0) - mean) < 5 * sd / np.sqrt(ess))
    assert np.allclose(np.cov(a.T), pa + sx**2 * np.eye(2), atol=6 * np.sqrt(2 / ess))


@pytest.mark.parametrize("sampler", ["mixture", "ode"])
def test_huge_observation_bandwidth_gives_the_prior_kde(sampler):
    rng = np.random.default_rng(3)
    ens = rng.normal(size=(400, 2)) * [1.0, 3.0]
    kde = _paper(
        observation=ObservationModel(noise_std=1.0),
        n_members=400,
        bandwidth_x=0.3,
        bandwidth_y=1e8,
        sampler=sampler,
        device="numpy",
        random_state=0,
    )
    ds = _single_analysis(kde, ens, [5.0, 5.0])
    a = ds["analysis"].values[0]
    assert float(ds["ess"][0]) > 399.0
    n = 400
    assert np.all(np.abs(a.mean(0) - ens.mean(0)) < 5 * np.array([1.0, 3.0]) / np.sqrt(n))
    want = np.cov(ens.T) * (n - 1) / n + 0.09 * np.eye(2)
    assert np.allclose(np.cov(a.T), want, rtol=6 * np.sqrt(2 / n), atol=0.3)


def test_ode_and_sde_match_the_mixture_in_distribution():
    # Two-sample test on single analyses: the ODE and SDE samples are as close to one
    # mixture sample as a second, independent mixture sample is (energy distance).
    rng = np.random.default_rng(4)
    ens = rng.normal(size=(300, 2)) * [2.0, 1.0]
    obs = ObservationModel("square", noise_std=0.5, indices=[0])
    common = dict(observation=obs, n_members=300, bandwidth_x=0.3, bandwidth_y=0.5, device="numpy")
    draws = {}
    for name, kw in {
        "mix1": {"sampler": "mixture", "random_state": 0},
        "mix2": {"sampler": "mixture", "random_state": 1},
        "ode": {"sampler": "ode", "random_state": 2},
        "sde": {"sampler": "sde", "n_steps": 400, "random_state": 3},
    }.items():
        ds = _single_analysis(KDEDiffusionFilter(**common, **kw), ens, [2.0])
        draws[name] = ds["analysis"].values[0]
    floor = _energy_distance(draws["mix1"], draws["mix2"])
    for name in ["ode", "sde"]:
        d = _energy_distance(draws["mix1"], draws[name])
        # Both are O(1/N) for equal laws; a different law gives O(1). Margin: 4x the floor
        # plus the scale of the 1/N sampling noise.
        assert d < 4 * floor + 0.05, (name, d, floor)


def test_ode_records_its_steps_and_torch_cpu_matches_numpy():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    model = Lorenz63(steps_per_cycle=10, process_noise=0.1)
    obs = ObservationModel("identity", noise_std=2.0, indices=[2])
    X, y = make_twin_experiment(model, obs, 3, random_state=0, process_noise=False)
    init = model.climatology(60, 1)
    out = {}
    for device in ["numpy", "cpu"]:
        est = _paper(model, obs, n_members=60, bandwidth_y=2.0, device=device, random_state=0).fit(
            model.climatology(50, 0)
        )
        out[device] = est.assimilate(y, initial_ensemble=init)
        assert est.device_ == device
    steps = out["numpy"]["n_steps"].values
    assert np.all((steps >= 5) & (steps <= 40))
    assert np.all(out["numpy"]["nfev"].values >= 6 * steps)
    np.testing.assert_allclose(out["cpu"]["analysis"], out["numpy"]["analysis"], atol=1e-6)


@pytest.mark.parametrize(
    "params, observation, n_cycles",
    [
        ({}, ObservationModel("arctan", noise_std=0.1), 4),
        (
            KDEDiffusionFilter.MULTIMODAL_PARAMS,
            ObservationModel("identity", noise_std=2.0, indices=[2]),
            6,
        ),
    ],
    ids=["defaults", "multimodal"],
)
def test_transport_on_torch_cpu_matches_numpy(params, observation, n_cycles):
    """The defaults, and MULTIMODAL_PARAMS with its tempered weights (active in all 6
    cycles here), move the members with the global transport; on torch it is the same
    filter as the numpy reference, to rounding through a few chaotic cycles."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    model = Lorenz63(steps_per_cycle=10, process_noise=0.1)
    X, y = make_twin_experiment(model, observation, n_cycles, random_state=0, process_noise=False)
    init = model.climatology(40, 1)
    out = {}
    for device in ["numpy", "cpu"]:
        est = KDEDiffusionFilter(
            model, observation, n_members=40, device=device, random_state=0, **params
        )
        out[device] = est.fit(model.climatology(50, 0)).assimilate(y, initial_ensemble=init)
        assert est.device_ == device and est._flow_start == "members"
    np.testing.assert_allclose(out["cpu"]["analysis"], out["numpy"]["analysis"], atol=1e-8)
    np.testing.assert_array_equal(out["cpu"]["nfev"], out["numpy"]["nfev"])
    np.testing.assert_allclose(out["cpu"]["bandwidth_y"], out["numpy"]["bandwidth_y"], rtol=1e-9)


@pytest.mark.filterwarnings("ignore::dasim.exceptions.WeightCollapseWarning")
def test_gridsearch_over_bandwidths_with_every_scorer():
    model = Lorenz63(steps_per_cycle=10, process_noise=0.1)
    obs = ObservationModel("arctan", noise_std=0.1)
    X, y = make_twin_experiment(model, obs, 45, random_state=0, process_noise=False)
    est = KDEDiffusionFilter(
        model, obs, n_members=40, sampler="mixture", device="numpy", random_state=0
    )
    grid = {"bandwidth_x": [0.3, ("scott", 1.0)], "bandwidth_y": [0.05, 0.3]}
    for scoring in [None, *metrics.SCORERS.values()]:
        search = GridSearchCV(est, grid, cv=TimeSeriesSplit(2), scoring=scoring).fit(X, y)
        scores = search.cv_results_["mean_test_score"]
        assert np.all(np.isfinite(scores))
        assert search.best_params_ == search.cv_results_["params"][int(np.argmax(scores))]


# 30 members drawn from climatology see a sharp identity observation: the first cycles'
# weights collapse, which is expected here (test_collapsing_weights_warn tests the warning).
@pytest.mark.filterwarnings("ignore::dasim.exceptions.WeightCollapseWarning")
def test_missing_observations_and_diagnostics():
    model = Lorenz63(steps_per_cycle=10, process_noise=0.1)
    obs = ObservationModel("identity", noise_std=1.0)
    X, y = make_twin_experiment(model, obs, 6, random_state=0)
    y[2] = np.nan
    y[4, 0] = np.nan
    est = KDEDiffusionFilter(
        model, obs, n_members=30, sampler="mixture", device="numpy", random_state=0
    ).fit(X)
    ds = est.assimilate(y)
    assert np.allclose(ds["analysis"][2], ds["forecast"][2])
    assert np.isnan(ds["ess"][2]) and np.isfinite(ds["ess"][4])
    assert set(ds.data_vars) >= {"ess", "n_steps", "nfev", "bandwidth_x", "bandwidth_y"}
    a = est.assimilate(y)
    np.testing.assert_array_equal(a["analysis"], ds["analysis"])


def test_collapsing_weights_warn():
    rng = np.random.default_rng(5)
    ens = rng.normal(size=(100, 1))
    kde = _paper(
        observation=ObservationModel(noise_std=0.01),
        n_members=100,
        bandwidth_y=0.001,
        sampler="mixture",
        device="numpy",
        random_state=0,
    )
    with pytest.warns(WeightCollapseWarning, match="collapsed"):
        _single_analysis(kde, ens, [0.5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _single_analysis(kde.set_params(ess_warning=0.0), ens, [0.5])


@pytest.mark.parametrize(
    "params, match, exc",
    [
        ({"bandwidth_x": 0.0}, "bandwidth_x", ValueError),
        ({"bandwidth_x": "wide"}, "bandwidth_x", ValueError),
        ({"bandwidth_x": ("scott", -1.0)}, "factor", ValueError),
        ({"bandwidth_y": None}, "bandwidth_y", TypeError),
        ({"sigma_max": -1.0}, "sigma_max", ValueError),
        ({"schedule": "cosine"}, "schedule", ValueError),
        ({"sampler": "euler"}, "sampler", ValueError),
        ({"likelihood": "exact"}, "likelihood", ValueError),
        ({"rtol": 0.0}, "rtol", ValueError),
        ({"n_steps": 0}, "n_steps", ValueError),
        ({"device": "tpu"}, "device", ValueError),
        ({"n_members": 1}, "n_members", ValueError),
    ],
)
def test_bad_parameters(params, match, exc):
    est = KDEDiffusionFilter(**params)
    with pytest.raises(exc, match=match):
        est.fit(np.random.default_rng(0).normal(size=(10, 2)))


def test_sigma_max_must_exceed_bandwidth():
    rng = np.random.default_rng(6)
    kde = _paper(
        observation=ObservationModel(noise_std=1.0),
        n_members=20,
        bandwidth_x=2.0,
        sigma_max=1.0,
        device="numpy",
        random_state=0,
    )
    with pytest.raises(ValueError, match="sigma_max"):
        _single_analysis(kde, rng.normal(size=(20, 1)), [0.0])


def test_warnings_do_not_fire_on_healthy_runs():
    model = Lorenz63(steps_per_cycle=10, process_noise=0.1)
    obs = ObservationModel("identity", noise_std=2.0)
    X, y = make_twin_experiment(model, obs, 10, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        KDEDiffusionFilter(
            model,
            obs,
            n_members=50,
            bandwidth_y=2.0,
            sampler="mixture",
            device="numpy",
            random_state=0,
        ).fit(X).assimilate(y)
