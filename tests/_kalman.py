"""A textbook Kalman filter, the exact reference for linear-Gaussian tests."""

import numpy as np


def kalman_filter(m0, p0, transition, q, h, r, ys):
    """Filtering means and covariances of x_k = M x_{k-1} + N(0, Q), y_k = H x_k + N(0, R).

    The prior (m0, p0) stands one cycle before the first observation, as in dasim.
    """
    m, p = np.asarray(m0, float), np.asarray(p0, float)
    means, covs = [], []
    for y in ys:
        m = transition @ m
        p = transition @ p @ transition.T + q
        s = h @ p @ h.T + r
        k = np.linalg.solve(s, h @ p).T
        m = m + k @ (y - h @ m)
        p = p - k @ h @ p
        means.append(m)
        covs.append(p)
    return np.array(means), np.array(covs)
