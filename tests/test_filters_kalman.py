"""Exactness of the classical filters on linear-Gaussian systems."""

import numpy as np
import pytest
from _kalman import kalman_filter

from dasim.filters import EnKF, SIRFilter
from dasim.models import FunctionModel, Persistence
from dasim.observations import ObservationModel

M = np.array([[0.9, 0.2], [-0.1, 0.8]])
Q = np.array([[0.3, 0.05], [0.05, 0.2]])
R = np.array([[0.5]])
H = np.array([[1.0, 0.5]])


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


def _fitted(est, n_state=2):
    rng = np.random.default_rng(99)
    return est.fit(rng.normal(size=(50, n_state)))


@pytest.mark.parametrize("n_members", [3, 5, 7, 30])
@pytest.mark.parametrize("observed", [[0, 1, 2, 3, 4, 5], [0, 2, 3]])
def test_etkf_single_analysis_is_the_kalman_update(n_members, observed):
    # With the persistence model and no noise the forecast is the initial ensemble; the
    # ETKF mean and covariance must equal the Kalman update with the ensemble covariance.
    # N < n_obs exercises the ensemble-space form, N >= n_obs the observation-space one.
    rng = np.random.default_rng(n_members)
    ens = rng.normal(size=(n_members, 6)) * [1.0, 2.0, 0.5, 1.0, 1.5, 0.7] + 1.0
    cov_r = np.diag([0.5, 1.5, 0.8, 1.0, 0.3, 2.0])
    obs = ObservationModel("identity", noise_std=cov_r)
    y = rng.normal(size=(1, 6))
    y[0, [i for i in range(6) if i not in observed]] = np.nan
    enkf = _fitted(EnKF(Persistence(0.0), obs, n_members=n_members, random_state=0), 6)
    ds = enkf.assimilate(y, initial_ensemble=ens)
    a = ds["analysis"].values[0]

    mask = ~np.isnan(y[0])
    h = np.eye(6)[mask]
    pf = np.cov(ens.T)
    k = pf @ h.T @ np.linalg.pinv(h @ pf @ h.T + cov_r[np.ix_(mask, mask)])
    mean = ens.mean(0) + k @ (y[0, mask] - h @ ens.mean(0))
    pa = pf - k @ h @ pf
    assert np.allclose(a.mean(0), mean, atol=1e-10)
    assert np.allclose(np.cov(a.T), pa, atol=1e-10)


@pytest.mark.parametrize("n_members", [3, 8])
def test_stochastic_gain_forms_agree(n_members):
    # The perturbed-observation increments computed in observation space and in ensemble
    # space are the same linear map: compare with the explicit Kalman gain.
    from dasim.filters.enkf import _gain_increments

    rng = np.random.default_rng(0)
    yw = rng.normal(size=(n_members, 5))
    anom = rng.normal(size=(n_members, 4))
    innov = rng.normal(size=(n_members, 5))
    gain = anom.T @ yw @ np.linalg.inv(np.eye(5) + yw.T @ yw)
    assert np.allclose(_gain_increments(yw, innov, anom), innov @ gain.T, atol=1e-12)


def test_etkf_rotation_keeps_mean_and_covariance():
    rng = np.random.default_rng(3)
    ens = rng.normal(size=(8, 3))
    obs = ObservationModel(noise_std=1.0)
    y = np.array([[0.1, 0.2, 0.3]])
    plain = _fitted(EnKF(Persistence(0.0), obs, n_members=8, random_state=0), 3)
    rot = _fitted(EnKF(Persistence(0.0), obs, n_members=8, rotate=True, random_state=0), 3)
    a = plain.assimilate(y, initial_ensemble=ens)["analysis"].values[0]
    b = rot.assimilate(y, initial_ensemble=ens)["analysis"].values[0]
    assert not np.allclose(a, b)
    assert np.allclose(a.mean(0), b.mean(0), atol=1e-12)
    assert np.allclose(np.cov(a.T), np.cov(b.T), atol=1e-12)


@pytest.mark.parametrize("n_members", [2, 10])
def test_letkf_with_huge_radius_is_the_etkf(n_members):
    rng = np.random.default_rng(4)
    ens = rng.normal(size=(n_members, 6))
    obs = ObservationModel(noise_std=0.7, indices=[0, 2, 4])
    y = np.array([[0.3, -0.2, 0.5]])
    glob = _fitted(EnKF(Persistence(0.0), obs, n_members=n_members, random_state=0), 6)
    loc = _fitted(EnKF(Persistence(0.0), obs, n_members=n_members, localization_radius=1e6), 6)
    a = glob.assimilate(y, initial_ensemble=ens)["analysis"].values
    b = loc.set_params(random_state=0).assimilate(y, initial_ensemble=ens)["analysis"].values
    assert np.allclose(a, b, atol=1e-10)


def test_letkf_leaves_far_components_alone():
    rng = np.random.default_rng(5)
    ens = rng.normal(size=(10, 40))
    obs = ObservationModel(noise_std=0.5, indices=[0])
    loc = _fitted(
        EnKF(Persistence(0.0), obs, n_members=10, localization_radius=2.0, random_state=0), 40
    )
    a = loc.assimilate(np.array([[3.0]]), initial_ensemble=ens)["analysis"].values[0]
    # GC support is 2 * 1.82 * radius = 7.28 grid points on the ring.
    far = np.arange(8, 33)
    assert np.allclose(a[:, far], ens[:, far])
    assert not np.allclose(a[:, 0], ens[:, 0])


def _kf_reference(ys, m0, p0):
    return kalman_filter(m0, p0, M, Q, H, R, ys)


@pytest.mark.parametrize("variant", ["sqrt", "stochastic"])
def test_enkf_large_ensemble_matches_kalman_filter(variant):
    model, obs, ys = _linear_problem()
    n = 20000
    m0, p0 = np.array([0.5, -0.5]), np.array([[1.0, 0.3], [0.3, 0.7]])
    init = np.random.default_rng(1).multivariate_normal(m0, p0, size=n)
    enkf = _fitted(EnKF(model, obs, n_members=n, variant=variant, random_state=0))
    a = enkf.assimilate(ys, initial_ensemble=init)["analysis"].values
    means, covs = _kf_reference(ys, init.mean(0), np.cov(init.T))
    for k in range(len(ys)):
        sd = np.sqrt(np.diag(covs[k]))
        # Monte Carlo error of an N-member mean is sd / sqrt(N); 6 of them, compounded
        # over cycles, is the margin. Covariances: relative error sqrt(2/N) each.
        assert np.all(np.abs(a[k].mean(0) - means[k]) < 6 * sd * np.sqrt((k + 2) / n))
        assert np.allclose(np.cov(a[k].T), covs[k], atol=6 * np.sqrt(2 * (k + 2) / n))


def test_sir_large_ensemble_matches_kalman_filter():
    model, obs, ys = _linear_problem()
    n = 40000
    m0, p0 = np.array([0.5, -0.5]), np.array([[1.0, 0.3], [0.3, 0.7]])
    init = np.random.default_rng(2).multivariate_normal(m0, p0, size=n)
    pf = _fitted(SIRFilter(model, obs, n_members=n, random_state=0))
    ds = pf.assimilate(ys, initial_ensemble=init)
    a, w = ds["analysis"].values, ds["weights"].values
    means, covs = _kf_reference(ys, init.mean(0), np.cov(init.T))
    for k in range(len(ys)):
        ess = ds["ess"].values[k] if np.isfinite(ds["ess"].values[k]) else n
        mean = w[k] @ a[k]
        cov = np.cov(a[k].T, aweights=w[k])
        sd = np.sqrt(np.diag(covs[k]))
        # Importance-sampling error ~ sd / sqrt(ESS); resampling and earlier cycles add to
        # it: margin 6 sd sqrt((k+2)/ESS).
        assert np.all(np.abs(mean - means[k]) < 6 * sd * np.sqrt((k + 2) / min(ess, n)))
        assert np.allclose(cov, covs[k], atol=8 * np.sqrt(2 * (k + 2) / min(ess, n)))


def test_log_evidence_matches_kalman_predictive():
    # For a linear-Gaussian model the one-step log evidence is Gaussian in closed form;
    # the SIR estimate (unbiased in the evidence) must be close with many particles.
    model, obs, ys = _linear_problem(n_times=3)
    n = 40000
    m0, p0 = np.array([0.0, 0.0]), np.eye(2)
    init = np.random.default_rng(3).multivariate_normal(m0, p0, size=n)
    pf = _fitted(SIRFilter(model, obs, n_members=n, random_state=0))
    got = pf.assimilate(ys, initial_ensemble=init)["log_evidence"].values
    m, p = init.mean(0), np.cov(init.T)
    from scipy.stats import multivariate_normal

    for k, y in enumerate(ys):
        m, p = M @ m, M @ p @ M.T + Q
        s = H @ p @ H.T + R
        want = multivariate_normal(H @ m, s).logpdf(y)
        assert abs(got[k] - want) < 0.05
        kg = np.linalg.solve(s, H @ p).T
        m, p = m + kg @ (y - H @ m), p - kg @ H @ p
