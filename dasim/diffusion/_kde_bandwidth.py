"""Rule-of-thumb bandwidths of the KDE filter's state kernel.

The public names are documented, and imported, from :mod:`dasim.diffusion.kde_sampling`.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from dasim._stats import scott_factor
from dasim.diffusion.kde import _check_matrix


def bandwidth_rule(X, rule="scott", factor=1.0):
    r"""Isotropic rule-of-thumb bandwidth of a Gaussian KDE of the rows of ``X``.

    .. math::

        h = \text{factor}\cdot c(N, d)\cdot \sqrt{\tfrac1d \textstyle\sum_j
        \widehat{\operatorname{Var}}(X_{:, j})},\qquad
        c_{\text{scott}} = N^{-1/(d+4)},\quad
        c_{\text{silverman}} = \Big(\frac{4}{d+2}\Big)^{1/(d+4)} N^{-1/(d+4)},

    with the unbiased (``ddof=1``) per-component variances. The kernel is isotropic: one
    scalar bandwidth, the rule's factor times the root of the *mean* variance (not a full
    covariance as in ``scipy.stats.gaussian_kde``). A user's multiplier of the rule
    (``bandwidth_x=0.5`` meaning "half of Scott") is ``factor``.

    Parameters
    ----------
    X : array-like of shape (N, d)
        Ensemble (N >= 2, finite).
    rule : {"scott", "silverman"}, default="scott"
        The rule.
    factor : float, default=1.0
        Multiplier, > 0.

    Returns
    -------
    float
        The bandwidth, > 0.

    Examples
    --------
    >>> X = np.array([[0.0], [2.0]])
    >>> round(bandwidth_rule(X, "scott"), 4)  # 2 ** (-1 / 5) * sqrt(2)
    1.2311
    """
    X = _check_matrix(X, "X")
    N, d = X.shape
    if N < 2:
        raise ValueError(f"X needs at least 2 rows for a bandwidth rule, got {N}.")
    if (
        isinstance(factor, bool)
        or not isinstance(factor, numbers.Real)
        or not (math.isfinite(factor) and factor > 0)
    ):
        raise ValueError(f"factor must be finite and > 0, got {factor!r}.")
    c = rule_constant(rule, N, d)
    spread = math.sqrt(float(np.mean(np.var(X, axis=0, ddof=1))))
    if spread == 0.0:
        raise ValueError("X has zero spread: every bandwidth rule gives 0.")
    return float(factor) * c * spread


def default_sigma_max(X, sigma_x):
    """The VE schedule's default ``sigma_max`` for centres ``X`` and bandwidth ``sigma_x``.

    Ten times the larger of the centres' root-mean-square distance to their mean and the
    bandwidth: the start of the reverse flow is then far wider than the target.

    Parameters
    ----------
    X : numpy.ndarray of shape (N, d)
        The kernel centres (the forecast ensemble, or its whitened centres).
    sigma_x : float
        The bandwidth (absolute, or the relative ``h`` in whitened units).

    Returns
    -------
    float
        ``10 * max(sqrt(sum_j Var(X[:, j])), sigma_x)``.

    Examples
    --------
    >>> default_sigma_max(np.array([[0.0], [2.0]]), 0.5)
    10.0
    """
    spread = math.sqrt(float(np.sum(np.var(X, axis=0))))
    return 10.0 * max(spread, float(sigma_x))


def rule_constant(rule, n, d):
    r"""The dimensionless constant :math:`c(N, d)` of a bandwidth rule.

    :math:`c_{\text{scott}} = N^{-1/(d+4)}` and :math:`c_{\text{silverman}} =
    (4/(d+2))^{1/(d+4)} N^{-1/(d+4)}`: the bandwidth relative to the data's spread, and the
    relative bandwidth :math:`h` of the covariance-shaped kernel
    (:class:`CovarianceKernel`).

    Parameters
    ----------
    rule : {"scott", "silverman"}
        The rule.
    n : int
        Number of points (>= 1).
    d : int
        Dimension (>= 1).

    Returns
    -------
    float
        :math:`c(N, d)`, in ``(0, 1]`` for Scott's rule.

    Examples
    --------
    >>> round(rule_constant("scott", 32, 1), 4)  # 32 ** (-1 / 5)
    0.5
    """
    if rule == "scott":
        return scott_factor(n, d)
    if rule == "silverman":
        return float((4.0 / (d + 2)) ** (1.0 / (d + 4)) * scott_factor(n, d))
    raise ValueError(f"rule must be 'scott' or 'silverman', got {rule!r}.")
