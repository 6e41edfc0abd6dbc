"""Samplers of the closed-form conditional KDE against its exact mixture form.

The target of one analysis is sum_i pi_i N(mu_e x_i, sigma_x^2 I) (mu_e = 1 except for
the early-stopped VP schedule), with closed-form mean mu_e sum_i pi_i x_i and covariance
sigma_x^2 I + mu_e^2 sum_i pi_i (x_i - m)(x_i - m)^T. The ODE and SDE samplers must match
it in distribution: moments within margins derived from the sample size (Z = 5 standard
errors, the standard errors of the covariance entries estimated from a large exact
sample), and a two-sample energy-distance permutation test against the exact sampler, whose
power is checked on wrong targets. Fixed seeds throughout.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp, softmax
from scipy.stats import gaussian_kde

from dasim.diffusion.kde import observation_log_weights
from dasim.diffusion.kde_sampling import (
    CovarianceKernel,
    bandwidth_rule,
    kde_analysis,
    reverse_start_std,
    sample_mixture,
    sample_ode,
    sample_sde,
)
from dasim.diffusion.schedules import VESchedule, VPSchedule

Z = 5.0
ALPHA = 1e-3  # level of the energy tests (1999 permutations)
SIGMA_X = 0.3


def bimodal_problem(seed=1):
    """N = 200 centred members in d = 2, two clusters; the 2nd component is observed."""
    rng = np.random.default_rng(seed)
    X = np.concatenate(
        [rng.normal(size=(100, 2)) * 0.5 + [2.0, 0.0], rng.normal(size=(100, 2)) * 0.5 - [2, 0]]
    )
    X -= X.mean(axis=0)
    log_w = observation_log_weights(np.array([1.0]), X[:, 1:], 0.3)
    return X, log_w


def mixture_moments(X, log_w, sigma_x, mu_e=1.0):
    pi = softmax(log_w)
    Xs = mu_e * X
    m = pi @ Xs
    C = sigma_x**2 * np.eye(X.shape[1]) + (Xs - m).T @ ((Xs - m) * pi[:, None])
    return m, C


def assert_moments(samples, X, log_w, schedule, rng_seed=123):
    """Sample mean and covariance within Z standard errors of the closed forms."""
    m, C = mixture_moments(X, log_w, schedule.floor_std, schedule.target_mu)
    n = samples.shape[0]
    big, _ = sample_mixture(X, log_w, schedule, np.random.default_rng(rng_seed), n_samples=200_000)
    dev = big - m
    prod_sd = np.std(dev[:, :, None] * dev[:, None, :], axis=0)
    mean_hat = samples.mean(axis=0)
    cov_hat = np.cov(samples.T, bias=True).reshape(C.shape)
    assert np.all(np.abs(mean_hat - m) <= Z * np.sqrt(np.diag(C) / n)), (mean_hat, m)
    assert np.all(np.abs(cov_hat - C) <= Z * prod_sd / np.sqrt(n)), (cov_hat, C)


def energy_pvalue(a, b, n_perm=1999, seed=0):
    """Permutation p-value of the two-sample energy distance (equal sample sizes)."""
    z = np.vstack([a, b])
    n, n_tot = a.shape[0], z.shape[0]
    D = np.sqrt(np.sum((z[:, None, :] - z[None, :, :]) ** 2, axis=-1))
    rng = np.random.default_rng(seed)
    labels = np.zeros((n_tot, n_perm + 1))  # column 0: the observed split
    labels[:n, 0] = 1.0
    for k in range(1, n_perm + 1):
        labels[rng.permutation(n_tot)[:n], k] = 1.0
    DA = D @ labels  # D a for every split
    aDa = np.einsum("ik,ik->k", labels, DA)
    aDb = np.einsum("ik,ik->k", 1.0 - labels, DA)
    bDb = D.sum() - aDa - 2.0 * aDb
    m = n_tot - n
    stats = 2.0 * aDb / (n * m) - aDa / n**2 - bDb / m**2
    return (np.sum(stats[1:] >= stats[0]) + 1) / (n_perm + 1)


SCHEDULES = {
    "ve": VESchedule(SIGMA_X, 30.0),
    "vp": VPSchedule(SIGMA_X, 20.0),
    "vp-early-stop": VPSchedule(SIGMA_X, 20.0, early_stop=True),
}


# --------------------------------------------------------------------------- oracle


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_mixture_sampler_is_exact(name):
    X, log_w = bimodal_problem()
    sched = SCHEDULES[name]
    x, info = sample_mixture(X, log_w, sched, np.random.default_rng(0), n_samples=50_000)
    assert info["nfev"] == 0 and x.shape == (50_000, 2)
    assert_moments(x, X, log_w, sched)


def test_energy_test_has_power():
    X, log_w = bimodal_problem()
    sched = SCHEDULES["ve"]
    post, _ = sample_mixture(X, log_w, sched, np.random.default_rng(1), n_samples=400)
    post2, _ = sample_mixture(X, log_w, sched, np.random.default_rng(2), n_samples=400)
    prior, _ = sample_mixture(X, None, sched, np.random.default_rng(3), n_samples=400)
    wide, _ = sample_mixture(
        X, log_w, VESchedule(3 * SIGMA_X, 30.0), np.random.default_rng(4), n_samples=400
    )
    assert energy_pvalue(post, post2) > ALPHA
    assert energy_pvalue(post, prior) < ALPHA
    assert energy_pvalue(post, wide) < ALPHA


# --------------------------------------------------------------------------- ODE / SDE


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_ode_matches_mixture(name):
    X, log_w = bimodal_problem()
    sched = SCHEDULES[name]
    x, info = sample_ode(X, log_w, sched, np.random.default_rng(10), n_samples=2000)
    assert info["success"] and x.shape == (2000, 2) and x.dtype == np.float64
    assert_moments(x, X, log_w, sched)
    ref, _ = sample_mixture(X, log_w, sched, np.random.default_rng(11), n_samples=400)
    assert energy_pvalue(x[:400], ref) > ALPHA
    # the adaptive RK45 takes a handful of accepted steps (spec: ~10-20), 6 RHS each (+2)
    assert 5 <= info["n_steps"] <= 30, info
    assert 6 * info["n_steps"] + 2 <= info["nfev"] <= 6 * info["n_steps"] + 2 + 6 * 10


@pytest.mark.parametrize("name", ["ve", "vp"])
def test_sde_matches_mixture(name):
    X, log_w = bimodal_problem()
    # Euler-Maruyama bias grows like h * sigma_max / sigma_x near t_end: sigma_max = 10 and
    # 1000 steps keep it well below the sampling error of 600 samples (the VP schedule, with
    # g^2(0) = 0, is much less stiff near t_end). With 20 steps the VE case fails both
    # checks, with 100 steps the moments: the test has power.
    sched = VESchedule(SIGMA_X, 10.0) if name == "ve" else SCHEDULES["vp"]
    n_steps = 1000 if name == "ve" else 500
    x, info = sample_sde(
        X, log_w, sched, np.random.default_rng(20), n_samples=600, n_steps=n_steps
    )
    assert info["n_steps"] == n_steps and info["nfev"] == n_steps
    assert_moments(x, X, log_w, sched)
    ref, _ = sample_mixture(X, log_w, sched, np.random.default_rng(21), n_samples=400)
    assert energy_pvalue(x[:400], ref) > ALPHA


def test_flat_weights_give_the_prior_kde():
    # sigma_y -> inf: all log-weights equal; kde_analysis also centres and un-centres.
    rng = np.random.default_rng(30)
    X = rng.normal(size=(200, 2)) * [1.0, 0.3] + [10.0, -5.0]
    huge_sigma_y = observation_log_weights(np.array([0.0]), X[:, :1], 1e12)
    Xa, info = kde_analysis(
        X, huge_sigma_y, sigma_x=SIGMA_X, sigma_max=30.0, sampler="ode", rng=31, n_samples=2000
    )
    assert info["ess"] == pytest.approx(200.0)
    m = X.mean(axis=0)
    C = SIGMA_X**2 * np.eye(2) + np.cov(X.T, bias=True)
    assert np.all(np.abs(Xa.mean(axis=0) - m) <= Z * np.sqrt(np.diag(C) / 2000))
    assert_moments(Xa - m, X - m, np.zeros(200), VESchedule(SIGMA_X, 30.0))


# --------------------------------------------------------------------------- linear-Gaussian


def _is_margins(X1, log_w, n_samples, sigma_x, P):
    """Margins for the analysis mean and variance of the mixture of a weighted sample.

    The mixture mean sum pi_i x_i is a self-normalised importance-sampling estimate of the
    Kalman mean, standard error sqrt(sum pi_i^2 (x_i - m)^2); its variance estimate has
    standard error sqrt(sum pi_i^2 ((x_i - m)^2 - P)^2); the n analysis samples add
    sqrt(var / n) and var sqrt(2 / n).
    """
    pi = softmax(log_w)
    m = pi @ X1
    se_mean = np.sqrt(pi**2 @ (X1 - m) ** 2)
    se_var = np.sqrt(pi**2 @ ((X1 - m) ** 2 - P) ** 2)
    var = P + sigma_x**2
    return (
        Z * np.hypot(se_mean, np.sqrt(var / n_samples)),
        Z * np.hypot(se_var, var * np.sqrt(2 / n_samples)),
    )


@pytest.mark.parametrize("likelihood", ["known", "simulated"])
def test_linear_gaussian_approaches_kalman(likelihood):
    # prior x ~ N(0, 1), y = x + N(0, r^2). With known log-likelihood weights the KDE
    # posterior approaches the Kalman update with R = r^2; with simulated y_i and bandwidth
    # sigma_y the weights are those of an inflated noise R = r^2 + sigma_y^2.
    rng = np.random.default_rng(40)
    N, r, sigma_y, y_star, sigma_x = 2000, 0.5, 0.3, 1.0, 0.05
    X = rng.normal(size=(N, 1))
    if likelihood == "known":
        log_w = observation_log_weights(np.array([y_star]), X, r)
        R = r**2
    else:
        Y = X + r * rng.normal(size=(N, 1))
        log_w = observation_log_weights(np.array([y_star]), Y, sigma_y)
        R = r**2 + sigma_y**2
    K = 1.0 / (1.0 + R)
    mean_kf, P = K * y_star, (1 - K) * 1.0
    for sampler, n in (("mixture", 20_000), ("ode", 500)):
        Xa, info = kde_analysis(
            X, log_w, sigma_x=sigma_x, sigma_max=30.0, sampler=sampler, rng=41, n_samples=n
        )
        tol_mean, tol_var = _is_margins(X[:, 0], log_w, n, sigma_x, P)
        assert abs(Xa.mean() - mean_kf) <= tol_mean, (sampler, Xa.mean(), mean_kf, tol_mean)
        assert abs(Xa.var() - sigma_x**2 - P) <= tol_var, (sampler, Xa.var(), P, tol_var)
        assert 1 < info["ess"] < N


# --------------------------------------------------------------------------- torch


@pytest.fixture
def torch_one_thread():
    """One torch thread: on a small shared CPU, OpenMP threads spinning against other
    processes slow the many small tiles of the samplers down by an order of magnitude."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(n)


def test_torch_samplers(torch_one_thread):
    torch = torch_one_thread
    X, log_w = bimodal_problem()
    sched = SCHEDULES["ve"]
    x_np, info_np = sample_ode(X, log_w, sched, np.random.default_rng(50), n_samples=300)
    x_t, info_t = sample_ode(
        X,
        log_w,
        sched,
        np.random.default_rng(50),
        n_samples=300,
        backend="torch",
        device="cpu",
        chunk_size=(64, 50),
    )
    assert isinstance(x_t, torch.Tensor) and x_t.dtype == torch.float64
    # same start, same Dormand-Prince pair and step control: the same transport map
    assert abs(info_t["n_steps"] - info_np["n_steps"]) <= 1
    np.testing.assert_allclose(x_t.numpy(), x_np, atol=1e-3)
    x_s, info_s = sample_sde(
        X,
        log_w,
        VESchedule(SIGMA_X, 10.0),
        np.random.default_rng(51),
        n_samples=600,
        n_steps=1000,
        backend="torch",
        device="cpu",
    )
    assert isinstance(x_s, torch.Tensor) and info_s["nfev"] == 1000
    assert_moments(x_s.numpy(), X, log_w, sched)
    x_m, _ = sample_mixture(
        X, log_w, sched, np.random.default_rng(52), backend="torch", device="cpu"
    )
    assert isinstance(x_m, torch.Tensor) and x_m.shape == (200, 2)
    Xa, info = kde_analysis(
        X + 3.0, log_w, sigma_x=SIGMA_X, sigma_max=30.0, rng=53, backend="torch", device="cpu"
    )
    assert isinstance(Xa, np.ndarray) and Xa.dtype == np.float64 and Xa.shape == (200, 2)
    assert info["n_steps"] > 0 and info["ess"] < 200


class _BrokenSchedule(VESchedule):
    def g2(self, t):
        return np.nan * super().g2(t)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_ode_failure_raises(backend):
    if backend == "torch":
        pytest.importorskip("torch")
    X, log_w = bimodal_problem()
    with pytest.raises(RuntimeError, match="ODE solver failed"):
        sample_ode(
            X,
            log_w,
            _BrokenSchedule(0.3, 30.0),
            np.random.default_rng(0),
            n_samples=5,
            backend=backend,
            device="cpu",
        )


# --------------------------------------------------------------------------- API & errors


def test_analysis_info_and_start_std():
    X, log_w = bimodal_problem()
    Xa, info = kde_analysis(X, log_w, sigma_x=SIGMA_X, sigma_max=30.0, rng=0)
    assert set(info) >= {"n_steps", "nfev", "ess", "sampler", "schedule", "success"}
    np.testing.assert_allclose(info["ess"], 1 / np.sum(softmax(log_w) ** 2))
    assert info["start_std"] == 30.0
    vp = VPSchedule(SIGMA_X, 2.0)  # mu(1) = e^-0.5 is not small: the data term matters
    pi = softmax(log_w)
    expected = np.sqrt(vp.sigmabar2(1.0) + vp.mu(1.0) ** 2 * (pi @ np.sum(X**2, 1)) / 2)
    np.testing.assert_allclose(reverse_start_std(vp, X, log_w), expected)
    Xs, info_s = kde_analysis(
        X, log_w, sigma_x=SIGMA_X, schedule="vp", sampler="sde", n_steps=5, rng=0
    )
    assert info_s["n_steps"] == 5 and Xs.shape == X.shape


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"sigma_x": 0.0}, ValueError, "sigma_x"),
        ({"sigma_x": -1.0}, ValueError, "sigma_x"),
        ({"sigma_max": None}, ValueError, "sigma_max"),
        ({"sigma_max": 0.1}, ValueError, "sigma_max"),
        ({"sampler": "euler"}, ValueError, "sampler"),
        ({"schedule": "cosine"}, ValueError, "schedule"),
        ({"backend": "jax"}, ValueError, "backend"),
        ({"rtol": 0.0}, ValueError, "rtol"),
        ({"atol": -1.0}, ValueError, "atol"),
        ({"sampler": "sde", "n_steps": 0}, ValueError, "n_steps"),
        ({"n_samples": 0}, ValueError, "n_samples"),
        ({"rng": "seed"}, TypeError, "rng"),
        ({"X_forecast": np.zeros((1, 2))}, ValueError, "X_forecast"),
        ({"X_forecast": np.full((3, 2), np.nan)}, ValueError, "X_forecast"),
        ({"log_w_obs": np.zeros(2)}, ValueError, "log_w_obs"),
    ],
)
def test_analysis_errors(kwargs, error, match):
    args = {
        "X_forecast": np.arange(6.0).reshape(3, 2),
        "log_w_obs": np.zeros(3),
        "sigma_x": 0.5,
        "sigma_max": 5.0,
        "rng": 0,
    }
    args.update(kwargs)
    X, log_w = args.pop("X_forecast"), args.pop("log_w_obs")
    with pytest.raises(error, match=match):
        kde_analysis(X, log_w, **args)


def test_bandwidth_rules():
    rng = np.random.default_rng(60)
    x = rng.normal(size=300) * 2.0
    # in 1-D the isotropic rule is scipy's bandwidth (factor times the ddof=1 std)
    for rule in ("scott", "silverman"):
        ref = np.sqrt(gaussian_kde(x, bw_method=rule).covariance[0, 0])
        np.testing.assert_allclose(bandwidth_rule(x[:, None], rule), ref, rtol=1e-12)
    X = rng.normal(size=(100, 3)) * [1.0, 2.0, 3.0]
    spread = np.sqrt(np.mean(np.var(X, axis=0, ddof=1)))
    np.testing.assert_allclose(
        bandwidth_rule(X, "scott", factor=0.5), 0.5 * 100 ** (-1 / 7) * spread
    )
    np.testing.assert_allclose(
        bandwidth_rule(X, "silverman"), (4 / 5) ** (1 / 7) * 100 ** (-1 / 7) * spread
    )
    with pytest.raises(ValueError, match="rule"):
        bandwidth_rule(X, "min_dist")
    with pytest.raises(ValueError, match="factor"):
        bandwidth_rule(X, factor=0.0)
    with pytest.raises(ValueError, match="zero spread"):
        bandwidth_rule(np.ones((5, 2)))
    with pytest.raises(ValueError, match="at least 2 rows"):
        bandwidth_rule(np.ones((1, 2)))


# --------------------------------------------------------------------------- covariance kernel


def anisotropic_problem(seed=2):
    """Two elongated, correlated clusters in d = 2 (not centred), the 2nd coordinate observed."""
    rng = np.random.default_rng(seed)
    shape = np.array([[3.0, 0.0], [1.5, 0.15]])
    X = np.concatenate(
        [rng.normal(size=(100, 2)) @ shape + [4.0, 1.0], rng.normal(size=(100, 2)) @ shape]
    )
    log_w = observation_log_weights(np.array([1.5]), X[:, 1:], 0.5)
    return X, log_w


@pytest.mark.parametrize("shrink", [True, False])
@pytest.mark.parametrize("sampler", ["ode", "sde"])
def test_covariance_kernel_samplers_match_the_exact_mixture(sampler, shrink):
    X, log_w = anisotropic_problem()
    h = 0.6
    common = dict(sigma_x=h, kernel="covariance", shrink=shrink, schedule="ve")
    kernel = CovarianceKernel(X, log_w, h, shrink=shrink)
    m, C = kernel.mixture_moments(log_w)
    if shrink:  # variance-preserving: the weighted ensemble's own moments
        np.testing.assert_allclose(C, kernel.cov, atol=1e-10 * np.abs(C).max())
    extra = {"n_steps": 1000, "sigma_max": 10.0} if sampler == "sde" else {}
    x, info = kde_analysis(X, log_w, sampler=sampler, rng=40, n_samples=1500, **common, **extra)
    assert info["rank"] == 2
    big, _ = kde_analysis(X, log_w, sampler="mixture", rng=41, n_samples=200_000, **common)
    dev = big - m
    prod_sd = np.std(dev[:, :, None] * dev[:, None, :], axis=0)

    def moments_agree(sample):
        n = sample.shape[0]
        mean_ok = np.all(np.abs(sample.mean(axis=0) - m) <= Z * np.sqrt(np.diag(C) / n))
        cov_ok = np.all(np.abs(np.cov(sample.T, bias=True) - C) <= Z * prod_sd / np.sqrt(n))
        return mean_ok and cov_ok

    assert moments_agree(x)
    ref, _ = kde_analysis(X, log_w, sampler="mixture", rng=42, n_samples=400, **common)
    assert energy_pvalue(x[:400], ref) > ALPHA
    # Power: an isotropic kernel of the same total variance fails the same check.
    iso, _ = kde_analysis(
        X,
        log_w,
        sigma_x=h * np.sqrt(np.trace(kernel.cov) / 2),
        sigma_max=30.0,
        sampler="mixture",
        rng=43,
        n_samples=x.shape[0],
    )
    assert not moments_agree(iso)


def test_covariance_kernel_rank_deficient_ensemble_stays_in_its_span():
    """N <= d: the analysis varies only along the weighted anomalies' span."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(4, 6))
    log_w = rng.normal(size=4)
    x, info = kde_analysis(
        X, log_w, sigma_x=0.5, kernel="covariance", shrink=True, sampler="ode", rng=6
    )
    assert info["rank"] == 3  # 4 members, weighted-mean removed
    anomalies = X - np.exp(log_w - logsumexp(log_w)) @ X
    resid = (x - x.mean(0)) - (x - x.mean(0)) @ np.linalg.pinv(anomalies) @ anomalies
    assert np.abs(resid).max() < 1e-8 * np.abs(X).max()
