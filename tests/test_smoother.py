"""The B3 reference smoother against the exact Kalman (RTS) smoother of a linear AR(1)."""

import numpy as np
import pytest

from dasim.smoothers import bootstrap_smoother

A, Q, R, P0 = 0.9, 0.5, 0.4, 1.5  # x_t = A x_{t-1} + N(0, Q^2); y_t = x_t + N(0, R^2)


def rts_smoother(y):
    """Exact smoothing means, variances and lag-one covariances (x_0 ~ N(0, P0^2))."""
    n = len(y)
    mf, pf, mp, pp = (np.zeros(n) for _ in range(4))
    m, p = 0.0, P0**2
    for t in range(n):
        if t > 0:
            m, p = A * m, A**2 * p + Q**2
        mp[t], pp[t] = m, p
        if not np.isnan(y[t]):
            k = p / (p + R**2)
            m, p = m + k * (y[t] - m), (1 - k) * p
        mf[t], pf[t] = m, p
    ms, ps = mf.copy(), pf.copy()
    cross = np.zeros(n - 1)  # Cov(x_t, x_{t+1} | y)
    for t in range(n - 2, -1, -1):
        g = pf[t] * A / pp[t + 1]
        ms[t] = mf[t] + g * (ms[t + 1] - mp[t + 1])
        ps[t] = pf[t] + g**2 * (ps[t + 1] - pp[t + 1])
        cross[t] = g * ps[t + 1]
    return ms, ps, cross


def _problem(seed=0, n_times=12):
    rng = np.random.default_rng(seed)
    x = np.empty(n_times)
    x[0] = P0 * rng.standard_normal()
    for t in range(1, n_times):
        x[t] = A * x[t - 1] + Q * rng.standard_normal()
    y = x + R * rng.standard_normal(n_times)
    y[[2, 3, 7]] = np.nan  # unobserved times
    return y


def _run(y, log_likelihood, seed=1):
    return bootstrap_smoother(
        y[:, None],
        lambda n, rng: P0 * rng.standard_normal((n, 1)),
        lambda x, rng: A * x + Q * rng.standard_normal(x.shape),
        log_likelihood,
        n_particles=20000,
        n_samples=4000,
        random_state=seed,
    )


def _gauss_loglik(yt, x):
    return -0.5 * ((yt[0] - x[:, 0]) / R) ** 2 - np.log(R * np.sqrt(2 * np.pi))


def test_smoother_matches_kalman_smoother():
    y = _problem()
    ms, ps, cross = rts_smoother(y)
    samples, log_z = _run(y, _gauss_loglik)
    assert samples.shape == (4000, len(y), 1)
    s = samples[..., 0]
    # marginal means within 0.1 of the exact ones (posterior sd ~0.35-0.6)
    np.testing.assert_allclose(s.mean(0), ms, atol=0.1)
    np.testing.assert_allclose(s.var(0), ps, rtol=0.3)
    # the joint (whole-trajectory) law: lag-one covariances
    emp = np.mean((s[:, :-1] - s[:, :-1].mean(0)) * (s[:, 1:] - s[:, 1:].mean(0)), axis=0)
    np.testing.assert_allclose(emp, cross, atol=0.06)
    # log-evidence: exact value from the Kalman filter's innovations
    exact, m, p = 0.0, 0.0, P0**2
    for t, yt in enumerate(y):
        if t > 0:
            m, p = A * m, A**2 * p + Q**2
        if not np.isnan(yt):
            s2 = p + R**2
            exact += -0.5 * ((yt - m) ** 2 / s2 + np.log(2 * np.pi * s2))
            k = p / s2
            m, p = m + k * (yt - m), (1 - k) * p
    assert abs(log_z - exact) < 0.1


def test_ignoring_observations_is_detected():
    """The comparison has teeth: a smoother that drops the likelihood fails it."""
    y = _problem()
    ms, _, _ = rts_smoother(y)
    samples, _ = _run(y, lambda yt, x: np.zeros(x.shape[0]))
    assert np.max(np.abs(samples[..., 0].mean(0) - ms)) > 0.1


def test_deterministic_and_bad_input():
    y = _problem()
    a, _ = _run(y, _gauss_loglik, seed=3)
    b, _ = _run(y, _gauss_loglik, seed=3)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="n_particles"):
        bootstrap_smoother(y, lambda n, r: np.zeros((n, 1)), None, None, n_particles=0)
    with pytest.raises(ValueError, match="y contains inf"):
        bootstrap_smoother(np.array([np.inf]), None, None, None)
