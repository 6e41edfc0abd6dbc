"""Property tests of the covariance-shaped kernel and the ESS-targeted bandwidth.

* The state-space score of the covariance-kernel KDE is the gradient of its log-density
  (central finite differences), and both equal the closed form written directly in state
  coordinates: the mixture sum_i pi_i N(x; m + a (x_i - m), sigmabar(t)^2 C), where the
  VE schedule in whitened units has sigmabar(0) = h.
* After shrinkage the mixture's mean and covariance are exactly the weighted ensemble's.
* The ESS-targeted tempering meets its target, and is the largest exponent that does.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from dasim.diffusion.kde import effective_sample_size
from dasim.diffusion.kde_sampling import CovarianceKernel, tempered_log_weights
from dasim.diffusion.schedules import VESchedule

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def ensembles(draw, min_n=2):
    d = draw(st.integers(1, 4))
    n = draw(st.integers(max(min_n, d + 2), 12))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) + 2.0 * np.eye(d)
    scale = 10.0 ** draw(st.floats(-2.0, 2.0))
    X = scale * rng.normal(size=(n, d)) @ mix + scale * rng.normal(size=d)
    log_w = draw(st.one_of(st.none(), st.just("random")))
    if log_w == "random":
        log_w = rng.normal(size=n) * draw(st.floats(0.0, 5.0))
    return X, log_w


def direct_log_density(kernel, x, t, log_w, schedule):
    """log sum_i pi_i N(x; m + a (x_i - m), sigmabar(t)^2 C) in state coordinates, by scipy."""
    n = kernel.centres.shape[0]
    pi_log = np.zeros(n) if log_w is None else np.asarray(log_w, dtype=float)
    pi_log = pi_log - logsumexp(pi_log)
    var = float(schedule.sigmabar(t)) ** 2  # sigmabar includes the bandwidth h at t_end
    centres = kernel.from_latent(kernel.centres)
    comps = np.array(
        [multivariate_normal(c, var * kernel.cov).logpdf(x) for c in centres]
    ).reshape(n, -1)
    return logsumexp(comps + pi_log[:, None], axis=0)


#: Draws that broke earlier finite-difference rules (kept as regression examples): a
#: cond-5e4 covariance (rounding) and narrow kernels with sharp switches (truncation).
_ILL_CONDITIONED = (
    np.array(
        [
            [-0.50431057, -0.4111421, -0.06902344],
            [1.27791624, -1.64422521, -1.95817484],
            [-0.73244061, -0.82752741, 1.75458402],
            [-0.8296659, 0.14571629, -0.39110046],
            [-1.63059594, 1.1851512, 4.69806273],
            [0.50068286, 1.43144261, 0.86175718],
            [0.55535841, -0.93472824, -1.02307989],
            [-1.02986073, -0.4459747, -2.13755497],
            [0.16188677, -3.35077081, -2.15238155],
            [-0.20417414, 2.22786313, 1.2520817],
        ]
    ),
    np.array(
        [
            -0.37881298,
            -2.74533731,
            7.58864641,
            -3.29629948,
            -2.18283957,
            -2.4952943,
            12.59727727,
            -4.67057634,
            7.33889116,
            -7.17576243,
        ]
    ),
)
_SHARP = (
    np.array(
        [
            [-2.11278791, 2.12636764],
            [2.39966757, -3.0651244],
            [-0.98122457, 1.07675978],
            [-1.01665344, 0.57153955],
        ]
    ),
    None,
)


@SETTINGS
@given(ensembles(), st.floats(0.05, 0.95), st.booleans(), st.floats(0.0, 1.0))
@example(_ILL_CONDITIONED, 0.25, False, 0.0)
@example(_SHARP, 0.0625, False, 0.0)
def test_score_is_gradient_of_log_density_and_matches_direct_form(problem, h, shrink, t):
    X, log_w = problem
    kernel = CovarianceKernel(X, log_w, h, shrink=shrink)
    if kernel.rank < X.shape[1]:
        return  # degenerate draws: the state-space density does not exist
    # The state-space log-density goes through W = C^(-1/2): its rounding error grows with
    # the condition number of C (seen: 3e-10 absolute at cond 4e7, which a central
    # difference of step 5e-6 turns into 6e-5). Finite differences check the formula on
    # well-conditioned draws (the isotropic score it whitens is checked against finite
    # differences for any data in test_kde_score_properties.py).
    assume(np.linalg.cond(kernel.cov) < 1e5)
    # Positions are rounded at eps |x|, so a kernel far narrower than the data's magnitude
    # turns that rounding into eps |x| / width of error in every standardised distance
    # (seen: weights e^-18 apart left a kernel 3e-4 wide among points of size 10, and the
    # two log-density paths parted by 9e-9). Keep the kernel at least 1e-3 of the data's
    # scale, where that term is below 1e-12.
    width = h * np.sqrt(np.linalg.eigvalsh(kernel.cov).min())
    assume(width > 1e-3 * (1.0 + np.abs(X).max()))
    sched = VESchedule(h, h * 8.0)
    rng = np.random.default_rng(0)
    x = kernel.mean + rng.normal(size=(3, X.shape[1])) @ kernel.sqrt_cov.T
    score = kernel.score(x, t, log_w, sched)
    logp = kernel.log_density(x, t, log_w, sched)
    np.testing.assert_allclose(
        logp, direct_log_density(kernel, x, t, log_w, sched), rtol=1e-9, atol=1e-9
    )
    # Central differences along the kernel's principal axes (columns of B, C = B B^T),
    # Richardson-extrapolated: D = (4 D(s) - D(2 s)) / 3 has a truncation error of order
    # s^4, with a step s of 1e-3 of the kernel's own width along each axis. Error model:
    # the log-density's rounding (through W = C^(-1/2), up to ~3e-10 at cond 5e4) divided
    # by the step (2.5e-4 h) stays below 1e-5 / h; the truncation error stays small where
    # the responsibilities switch sharply between narrow kernels (h = 0.06), where the
    # plain central difference at this step was off by 2e-3 on a score of 116. (A step of
    # 1e-5 h instead made the rounding term 1e-4 on a cond-5e4 draw.)
    for j in range(kernel.rank):
        direction = kernel.sqrt_cov[:, j]
        step = 1e-3 * h

        def central(s, direction=direction):
            return (
                kernel.log_density(x + s * direction, t, log_w, sched)
                - kernel.log_density(x - s * direction, t, log_w, sched)
            ) / (2 * s)

        fd = (4.0 * central(step) - central(2.0 * step)) / 3.0
        along = score @ direction
        tol = 1e-5 * (np.abs(along) + 1.0 / h)
        assert np.all(np.abs(fd - along) <= tol), (fd, along)


@SETTINGS
@given(ensembles(), st.floats(0.01, 0.99))
def test_shrunk_mixture_has_the_weighted_mean_and_covariance(problem, h):
    X, log_w = problem
    kernel = CovarianceKernel(X, log_w, h, shrink=True)
    pi = np.exp(
        (np.zeros(len(X)) if log_w is None else log_w)
        - logsumexp(np.zeros(len(X)) if log_w is None else log_w)
    )
    m = pi @ X
    C = ((X - m) * pi[:, None]).T @ (X - m)
    mean, cov = kernel.mixture_moments(log_w)
    scale = np.abs(X).max() + 1.0
    np.testing.assert_allclose(mean, m, rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(cov, C, rtol=0, atol=1e-10 * scale**2)
    # Without shrinkage the jitter widens the covariance by h^2 C: the test has power.
    _, wide = CovarianceKernel(X, log_w, h, shrink=False).mixture_moments(log_w)
    np.testing.assert_allclose(wide, (1 + h * h) * C, rtol=0, atol=1e-10 * scale**2)


@SETTINGS
@given(
    st.integers(2, 300),
    st.integers(0, 2**31 - 1),
    st.floats(0.1, 1e4),
    st.floats(0.0, 1.0),
)
def test_tempering_meets_the_ess_target_and_is_the_largest_that_does(n, seed, spread, frac):
    rng = np.random.default_rng(seed)
    ell = -0.5 * (spread * rng.standard_normal(n)) ** 2
    target = 1.0 + frac * (n - 1)
    log_w, beta = tempered_log_weights(ell, target)
    ess = effective_sample_size(log_w)
    assert ess >= target * (1 - 1e-9)
    if beta < 1e8:  # not capped: a slightly larger exponent misses the target
        assert effective_sample_size(ell * beta * (1 + 1e-6)) < target * (1 + 1e-9) or (
            np.isclose(ess, target, rtol=1e-6)
        )
    np.testing.assert_allclose(log_w - log_w.max(), beta * (ell - ell.max()), atol=1e-12)


def test_tempering_respects_its_cap_and_rejects_bad_targets():
    ell = -0.5 * np.linspace(0.0, 3.0, 20) ** 2
    log_w, beta = tempered_log_weights(ell, 2.0, max_exponent=1.0)
    assert beta == 1.0  # the untempered likelihood already keeps ESS >= 2
    np.testing.assert_allclose(log_w - log_w.max(), ell - ell.max())
    for bad in (0.5, 21.0, np.nan):
        try:
            tempered_log_weights(ell, bad)
        except ValueError as exc:
            assert "target_ess" in str(exc)
        else:
            raise AssertionError(f"target {bad} accepted")
