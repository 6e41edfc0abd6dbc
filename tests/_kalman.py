"""A textbook Kalman filter, the exact reference for linear-Gaussian tests."""

import numpy as np


def kalman_filter(m0, p0, transition, q, h, r, ys):
    """Filtering means and covariances of x_k = M x_{k-1} + N(0, Q), y_k = H x_k + N(0, R).

    The prior (m0, p0) stands one cycle before the first observation, as in dasim.
    ``transition`` is one matrix M, or one per cycle, shape (n_times, d, d): the cycle
    that produces row k uses ``transition[k]`` (time-varying x_k = M_k x_{k-1}).
    """
    m, p = np.asarray(m0, float), np.asarray(p0, float)
    transitions = np.asarray(transition, float)
    if transitions.ndim == 2:
        transitions = np.broadcast_to(transitions, (len(ys), *transitions.shape))
    means, covs = [], []
    for y, transition in zip(ys, transitions, strict=True):
        m = transition @ m
        p = transition @ p @ transition.T + q
        s = h @ p @ h.T + r
        k = np.linalg.solve(s, h @ p).T
        m = m + k @ (y - h @ m)
        p = p - k @ h @ p
        means.append(m)
        covs.append(p)
    return np.array(means), np.array(covs)


def rts_smoother(m0, p0, transition, q, h, r, ys, cross=False):
    """Smoothing means and covariances (Rauch-Tung-Striebel) of the same system.

    Same convention as :func:`kalman_filter`: the prior (m0, p0) stands one cycle before
    the first observation. A row of ``ys`` that is all NaN is a forecast-only cycle.
    Returns the smoothed means ``(n_times, n)`` and covariances ``(n_times, n, n)``, and
    with ``cross=True`` also the lag-one covariances ``Cov(x_t, x_{t+1} | y)``,
    ``(n_times - 1, n, n)``.
    """
    m, p = np.asarray(m0, float), np.asarray(p0, float)
    pred_m, pred_p, filt_m, filt_p = [], [], [], []
    for y in ys:
        m = transition @ m
        p = transition @ p @ transition.T + q
        pred_m.append(m)
        pred_p.append(p)
        if not np.all(np.isnan(y)):
            s = h @ p @ h.T + r
            k = np.linalg.solve(s, h @ p).T
            m = m + k @ (y - h @ m)
            p = p - k @ h @ p
        filt_m.append(m)
        filt_p.append(p)
    means, covs, lag_one = [filt_m[-1]], [filt_p[-1]], []
    for t in range(len(ys) - 2, -1, -1):
        # Smoother gain G_t = P_t M^T (P_{t+1|t})^{-1}.
        g = np.linalg.solve(pred_p[t + 1], transition @ filt_p[t]).T
        lag_one.append(g @ covs[-1])
        means.append(filt_m[t] + g @ (means[-1] - pred_m[t + 1]))
        covs.append(filt_p[t] + g @ (covs[-1] - pred_p[t + 1]) @ g.T)
    means, covs = np.array(means[::-1]), np.array(covs[::-1])
    if cross:
        return means, covs, np.array(lag_one[::-1]).reshape(-1, *covs.shape[1:])
    return means, covs
