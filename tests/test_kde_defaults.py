"""The default-constructed KDEDiffusionFilter (#13, item 4): it tracks where the EnKF does.

The defaults are the transported filter: an adaptive ETKF split, then the members moved by
the probability flow of the isotropic KDE. These runs use B2's truths, observations and
initial ensembles (fixed seeds); the margins are the gap between tracking (RMSE near the
EnKF's) and losing the track (RMSE near the climatological spread, 3-4 on Lorenz-96).
"""

import warnings

import numpy as np
import pytest
from _b2_runs import b2_runs

from dasim.benchmarks.nonlinear_filtering import JOINT_PARAMS
from dasim.datasets import make_twin_experiment
from dasim.filters import EnKF, KDEDiffusionFilter
from dasim.models import Lorenz63
from dasim.observations import ObservationModel


def _rmse(ds, truth, burn):
    err = np.sqrt(((ds["analysis"].mean("member").values - truth) ** 2).mean(1))
    return float(err[burn:].mean())


def _b2_rmse(case_name, seed, n, **estimators):
    return {k: rmse for k, (rmse, _) in b2_runs(case_name, seed, n, **estimators).items()}


def _default(model, obs, **kw):
    return KDEDiffusionFilter(model, obs, device="numpy", **kw)


def _joint(model, obs, **kw):
    return KDEDiffusionFilter(model, obs, device="numpy", **JOINT_PARAMS, **kw)


def test_defaults_are_the_transported_filter_with_an_adaptive_split():
    kde = KDEDiffusionFilter()
    assert kde.kernel == "isotropic" and kde.likelihood == "known"
    assert kde.kalman_fraction == ("ess", 0.5) and kde.ess_target == 0.9
    assert kde._flow_start == "members" and kde.ode_solver == "ab3"
    assert kde.inflation == "finite-size"
    # the paper's configuration and the benchmark parameter sets name what changed
    paper = KDEDiffusionFilter(**KDEDiffusionFilter.PAPER_PARAMS)
    assert paper.kalman_fraction == 0.0 and paper._flow_start == "noise"
    assert (
        paper.inflation
        == 1.0
        == KDEDiffusionFilter(**KDEDiffusionFilter.MULTIMODAL_PARAMS).inflation
    )
    assert paper.kernel == "isotropic" and paper.sampler == "ode"


def test_default_tracks_lorenz96_40_half_where_the_joint_kernel_loses():
    """``l96-40-half``, N = 100, seed 3: the previous default (the joint kernel, a fresh
    draw every cycle) loses the track (2.70 when measured; its spread collapses in 40
    dimensions); the transported default stays with the EnKF (0.28 against 0.29)."""
    r = _b2_rmse("l96-40-half", 3, 100, default=_default, joint=_joint, enkf=EnKF)
    assert r["default"] < 1.2 * r["enkf"]
    assert r["joint"] > 1.5 > 3 * r["enkf"]


@pytest.mark.parametrize("seed", [0, 1])
def test_default_tracks_lorenz63_identity_with_large_noise(seed):
    """#13's second failure: Lorenz-63, every component observed with R = 2 I, N = 50. The
    paper's defaults lost 3 of 6 runs there (here 0.64 and 2.47); the default is as
    accurate as the EnKF (0.36 and 0.31 against 0.39 and 0.36 when measured)."""
    model = Lorenz63(dt=0.01, steps_per_cycle=10, process_noise=0.1)
    obs = ObservationModel("identity", noise_std=np.sqrt(2.0))
    X, y = make_twin_experiment(model, obs, 120, random_state=seed, process_noise=False)
    r = {}
    for name, est in {
        "default": KDEDiffusionFilter(model, obs, n_members=50, device="numpy", random_state=0),
        "enkf": EnKF(model, obs, n_members=50, random_state=0),
    }.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r[name] = _rmse(est.fit(X).assimilate(y), X, 30)
    assert r["default"] < 1.25 * r["enkf"]


def test_default_is_the_exact_kalman_filter_on_the_nile_series():
    # The third failure: on a real series whose observation noise has sd about
    # 123 (the Nile flow, Durbin and Koopman's local-level model with their ML
    # variances), an absolute bandwidth_y of 1 (the paper's) collapses the weights to an
    # ESS of 1. The defaults' bandwidth is in units of the noise, and on this linear-
    # Gaussian model their analysis is the Kalman filter's: from cycle 10 (after the
    # initial ensemble's sample moments are forgotten) the analysis mean is within
    # Monte Carlo error of the exact one (N = 250, initial ensembles of seeds 0-2: 0.04-0.07
    # posterior sd on average and 0.15-0.19 at most; spread 1.00-1.03 times the exact sd).
    from dasim.datasets import load_nile
    from dasim.models import Persistence

    q2, r2 = 1469.1, 15099.0
    y = load_nile().to_numpy()[:, None]
    model = Persistence(process_noise=np.sqrt(q2))
    obs = ObservationModel("identity", noise_std=np.sqrt(r2))
    init = y[0] + np.sqrt(r2) * np.random.default_rng(0).standard_normal((250, 1))
    means, sds, m, p = [], [], init.mean(), init.var(ddof=1)
    for k, yk in enumerate(y[:, 0]):
        p = p + q2 if k > 0 else p
        gain = p / (p + r2)
        m, p = m + gain * (yk - m), (1 - gain) * p
        means.append(m)
        sds.append(np.sqrt(p))
    means, sds = np.array(means)[10:], np.array(sds)[10:]
    runs = {}
    for name, params in [("default", {}), ("paper", KDEDiffusionFilter.PAPER_PARAMS)]:
        est = KDEDiffusionFilter(model, obs, n_members=250, random_state=0, device="numpy")
        est.set_params(**params, forecast_first=False)  # the first cycle: no forecast
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runs[name] = est.fit(y).assimilate(y, initial_ensemble=init, keep_forecast=False)
    ds = runs["default"]
    A = ds["analysis"].values[10:, :, 0]
    err = np.abs(A.mean(axis=1) - means) / sds
    assert err.mean() < 0.12 and err.max() < 0.35
    assert 0.9 < np.median(A.std(axis=1, ddof=1) / sds) < 1.1
    assert ds["ess"].min() >= 0.5 * 250
    assert runs["paper"]["ess"].min() < 5  # the collapse the defaults no longer have
