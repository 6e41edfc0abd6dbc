"""Small statistics shared by the filters, smoothers and samplers.

The effective sample size of importance weights and the Gaussian-kernel bandwidth
factor (Scott's rule). A low-level module: it imports only
:mod:`dasim._math`.
"""

from __future__ import annotations

import numpy as np

from ._math import logsumexp

__all__ = ["column_effective_sample_size", "effective_sample_size", "scott_factor"]


def column_effective_sample_size(log_w):
    """Effective sample size of each column's normalised weights.

    The column-wise form of :func:`effective_sample_size` for a matrix of log-weights
    (members by columns, e.g. the local weights of every state component), without input
    checks: it sits in the bisections of the tempering, a hot path.

    Parameters
    ----------
    log_w : numpy.ndarray of shape (N, d)
        Log-weights, normalised or not; ``-inf`` is a zero weight.

    Returns
    -------
    numpy.ndarray of shape (d,)
        Between 1 and N per column.

    Examples
    --------
    >>> import numpy as np
    >>> column_effective_sample_size(np.array([[0.0, 0.0], [0.0, -np.inf]])).tolist()
    [2.0, 1.0]
    """
    m = np.max(log_w, axis=0, keepdims=True)
    w = np.exp(log_w - np.where(np.isfinite(m), m, 0.0))
    s1 = w.sum(axis=0)
    return s1**2 / np.sum(w * w, axis=0)


def effective_sample_size(log_w, *, name="log_w"):
    r"""Effective sample size :math:`1 / \sum_i \pi_i^2` of importance weights.

    Parameters
    ----------
    log_w : array-like of shape (N,)
        Log-weights, normalised or not (``-inf`` allowed: a zero weight; NaN and
        ``+inf`` not; not all ``-inf``).
    name : str, default="log_w"
        Argument name used in error messages.

    Returns
    -------
    float
        Between 1 and N.

    Examples
    --------
    >>> effective_sample_size([0.0, 0.0, 0.0, 0.0])
    4.0
    """
    log_w = np.asarray(log_w, dtype=np.float64)
    if log_w.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {log_w.shape}.")
    if np.any(np.isnan(log_w)) or np.any(log_w == np.inf):
        raise ValueError(f"{name} contains NaN or +inf.")
    if not np.any(np.isfinite(log_w)):
        raise ValueError(f"every weight is zero (all of {name} are -inf).")
    log_pi = log_w - logsumexp(log_w)
    return float(np.exp(-logsumexp(2.0 * log_pi)))


def scott_factor(n, d):
    """Scott's bandwidth factor ``n ** (-1 / (d + 4))`` for ``n`` points in ``d`` dimensions.

    Parameters
    ----------
    n : int or float
        Number of points (or effective number).
    d : int
        Dimension.

    Returns
    -------
    float
        The factor that multiplies the data's standard deviation (or covariance root).

    Examples
    --------
    >>> round(scott_factor(32, 1), 4)  # 32 ** (-1 / 5)
    0.5
    """
    return float(n ** (-1.0 / (d + 4)))
