"""KDEDiffusionFilter's robust options: covariance kernel, shrinkage, ESS-targeted sigma_y.

Exact references where theory gives them: on a linear-Gaussian system the progressive,
covariance-kernel filter with shrinkage is a moment-matching filter whose analyses converge
to the Kalman filter's as N grows; the ESS target is met every cycle; the relative
bandwidth never depends on the ensemble's spread (no feedback).
"""

import numpy as np
import pytest
from _kalman import kalman_filter

from dasim.datasets import make_twin_experiment
from dasim.diffusion.kde_sampling import rule_constant
from dasim.filters import KDEDiffusionFilter
from dasim.filters.kde import PAPER_PARAMS
from dasim.models import FunctionModel, Lorenz63
from dasim.observations import ObservationModel

M = np.array([[0.9, 0.2], [-0.1, 0.8]])
Q = np.array([[0.3, 0.05], [0.05, 0.2]])
R = np.array([[0.5]])
H = np.array([[1.0, 0.5]])

ROBUST = dict(
    kernel="covariance", shrink=True, bandwidth_y="ess", likelihood="known", kalman_fraction=0.0
)


def _linear_problem(n_times=5, seed=0):
    rng = np.random.default_rng(seed)
    model = FunctionModel(lambda e: e @ M.T, process_noise=Q)
    obs = ObservationModel(lambda x: x[..., :1] + 0.5 * x[..., 1:2], noise_std=R)
    x = rng.normal(size=2)
    ys = []
    for _ in range(n_times):
        x = M @ x + rng.multivariate_normal(np.zeros(2), Q)
        ys.append(H @ x + rng.normal(scale=np.sqrt(R[0, 0]), size=1))
    return model, obs, np.array(ys)


@pytest.mark.parametrize("sampler", ["mixture", pytest.param("ode", marks=pytest.mark.slow)])
def test_progressive_covariance_filter_matches_the_kalman_filter(sampler):
    model, obs, ys = _linear_problem()
    n = 20000 if sampler == "mixture" else 2000
    m0, p0 = np.array([0.5, -0.5]), np.array([[1.0, 0.3], [0.3, 0.7]])
    init = np.random.default_rng(1).multivariate_normal(m0, p0, size=n)
    kde = KDEDiffusionFilter(
        model,
        obs,
        n_members=n,
        max_stages=30,
        ess_target=0.5,
        sampler=sampler,
        device="numpy",
        random_state=0,
        **ROBUST,
    ).fit(np.random.default_rng(99).normal(size=(50, 2)))
    ds = kde.assimilate(ys, initial_ensemble=init)
    a = ds["analysis"].values
    # the whole likelihood is assimilated, within the stage budget
    np.testing.assert_allclose(ds["bandwidth_y"].values, 1.0)
    assert np.all(ds["n_stages"].values >= 1)
    means, covs = kalman_filter(init.mean(0), np.cov(init.T), M, Q, H, R, ys)
    for k in range(len(ys)):
        sd = np.sqrt(np.diag(covs[k]))
        # Each stage is an importance step at ESS >= N/2 (error ~ sd / sqrt(N/2)); stages
        # and cycles compound it: margin 6 sd sqrt((k + 2) * stages / (N / 2)).
        n_eff = n / 2 / ds["n_stages"].values[k]
        assert np.all(np.abs(a[k].mean(0) - means[k]) < 6 * sd * np.sqrt((k + 2) / n_eff))
        assert np.allclose(np.cov(a[k].T), covs[k], atol=8 * np.sqrt(2 * (k + 2) / n_eff))


def test_single_stage_tempering_assimilates_less_and_says_so():
    model, obs, ys = _linear_problem()
    init = np.random.default_rng(1).multivariate_normal([0.5, -0.5], np.eye(2) * 4, size=200)
    kde = KDEDiffusionFilter(
        model,
        obs,
        n_members=200,
        ess_target=0.9,
        sampler="mixture",
        device="numpy",
        random_state=0,
        **ROBUST,
    ).fit(np.random.default_rng(99).normal(size=(50, 2)))
    ds = kde.assimilate(ys, initial_ensemble=init)
    assert np.all(ds["ess"].values >= 0.9 * 200 * (1 - 1e-9))
    assert ds["bandwidth_y"].values[0] > 1.0  # the first, wide prior: only part assimilated
    assert np.all(ds["bandwidth_y"].values >= 1.0 - 1e-12)  # never sharper than R


@pytest.mark.parametrize("target", [0.2, 0.5, 0.8])
def test_ess_target_is_met_every_observed_cycle(target):
    model = Lorenz63(dt=0.01, steps_per_cycle=10, process_noise=0.1)
    obs = ObservationModel("arctan", noise_std=0.1)
    X, y = make_twin_experiment(model, obs, 30, random_state=3, process_noise=False)
    y[5] = np.nan
    kde = KDEDiffusionFilter(
        model,
        obs,
        n_members=80,
        kernel="covariance",
        shrink=True,
        bandwidth_y="ess",
        ess_target=target,
        sampler="mixture",
        device="numpy",
        random_state=0,
    ).fit(X)
    ds = kde.assimilate(y)
    ess = ds["ess"].values
    observed = ~np.isnan(y).all(axis=1)
    assert np.all(ess[observed] >= target * 80 * (1 - 1e-9))
    assert np.isnan(ess[5])


def test_relative_bandwidth_does_not_depend_on_the_ensemble():
    """No feedback: h is the rule's constant c(N, d) every cycle, whatever the spread."""
    model = Lorenz63(dt=0.01, steps_per_cycle=10, process_noise=0.1)
    obs = ObservationModel("identity", noise_std=np.sqrt(2.0))
    X, y = make_twin_experiment(model, obs, 20, random_state=0, process_noise=False)
    for spec, factor in [("scott", 1.0), (("silverman", 0.5), 0.5)]:
        kde = KDEDiffusionFilter(
            model,
            obs,
            n_members=60,
            bandwidth_x=spec,
            sampler="mixture",
            device="numpy",
            random_state=0,
            **ROBUST,
        ).fit(X)
        h = kde.assimilate(y)["bandwidth_x"].values
        rule = spec if isinstance(spec, str) else spec[0]
        np.testing.assert_allclose(h, factor * rule_constant(rule, 60, 3))


def test_observation_bandwidth_in_noise_units():
    """("noise", c) weights are the Gaussian log-likelihood of y* given y_i, over c^2."""
    rng = np.random.default_rng(4)
    obs = ObservationModel("identity", noise_std=[0.5, 2.0])
    ens = rng.normal(size=(400, 2)) * [1.0, 4.0]
    common = dict(
        observation=obs,
        n_members=400,
        sampler="mixture",
        device="numpy",
        kernel="isotropic",
        likelihood="simulated",
    )
    fits = []
    for spec in [("noise", 2.0), "noise"]:
        est = KDEDiffusionFilter(bandwidth_y=spec, random_state=0, **common)
        est.set_params(model=FunctionModel(lambda e: e, process_noise=0.0))
        est.fit(rng.normal(size=(30, 2)))
        fits.append(est.assimilate(np.array([[0.3, -1.0]]), initial_ensemble=ens))
    assert float(fits[0]["bandwidth_y"][0]) == 2.0 and float(fits[1]["bandwidth_y"][0]) == 1.0
    # a wider bandwidth (c = 2) flattens the weights: larger ESS, same simulated noise draws
    assert float(fits[0]["ess"][0]) > float(fits[1]["ess"][0])


def test_paper_parameter_set_is_the_isotropic_absolute_configuration():
    kde = KDEDiffusionFilter(**PAPER_PARAMS)
    assert KDEDiffusionFilter.PAPER_PARAMS is PAPER_PARAMS
    assert kde.kernel == "isotropic" and kde.shrink is False
    assert kde.bandwidth_x == "scott" and kde.bandwidth_y == 1.0 and kde.sampler == "ode"
    assert kde.likelihood == "simulated" and kde.max_stages == 1


@pytest.mark.parametrize(
    "params, match",
    [
        ({"kernel": "gaussian"}, "kernel must be one of"),
        ({"shrink": 1}, "shrink must be a bool"),
        ({"kernel": "isotropic", "shrink": True}, "shrink=True needs kernel='covariance'"),
        ({"kernel": "covariance", "shrink": True, "bandwidth_x": 1.2}, "bandwidth_x"),
        ({"bandwidth_y": ("ess", 2.0)}, "bandwidth_y='ess' takes no factor"),
        ({"bandwidth_y": "nois"}, "bandwidth_y must be"),
        ({"ess_target": 0.0}, "ess_target must be in"),
        ({"ess_target": 1.5}, "ess_target must be in"),
        ({"max_stages": 0}, "max_stages must be a positive integer"),
        ({"max_stages": 5, "likelihood": "simulated", "bandwidth_y": "ess"}, "max_stages > 1"),
    ],
)
def test_bad_robust_parameters_fail_in_fit(params, match):
    X = np.random.default_rng(0).normal(size=(30, 3))
    with pytest.raises((ValueError, TypeError), match=match):
        KDEDiffusionFilter(**params).fit(X)
