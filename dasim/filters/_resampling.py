"""Resampling schemes for particle filters, vectorised (no loop over particles)."""

from __future__ import annotations

import numpy as np

from .._random import as_generator

__all__ = ["resample", "RESAMPLING_METHODS"]

RESAMPLING_METHODS = ("systematic", "stratified", "residual", "multinomial")


def _inverse_cdf(weights, u):
    cdf = np.cumsum(weights)
    cdf[-1] = 1.0  # guard round-off so every u < 1 finds an index
    return np.searchsorted(cdf, u, side="right")


def resample(weights, n=None, method="systematic", random_state=None):
    """Draw particle indices from normalised weights.

    Parameters
    ----------
    weights : array-like of shape (n_particles,)
        Non-negative weights summing to one.
    n : int, optional
        Number of indices to draw (``n_particles`` by default).
    method : {"systematic", "stratified", "residual", "multinomial"}, default="systematic"
        Systematic (one uniform shift), stratified (one uniform per stratum), residual
        (deterministic copies of ``floor(n w)`` plus a multinomial remainder) or
        multinomial (i.i.d.) resampling. All are unbiased: the expected number of copies of
        particle ``i`` is ``n w_i``.
    random_state : int, numpy.random.Generator, RandomState or None
        Seed or generator.

    Returns
    -------
    ndarray of int, shape (n,)
        Sorted particle indices.

    Examples
    --------
    >>> from dasim.filters import resample
    >>> resample([0.0, 1.0, 0.0], method="systematic", random_state=0).tolist()
    [1, 1, 1]
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"weights must be a non-empty 1-D array, got shape {w.shape}.")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and non-negative.")
    total = w.sum()
    if not total > 0:
        raise ValueError("weights are all zero: nothing to resample.")
    if abs(total - 1.0) > 1e-8:
        raise ValueError(f"weights must sum to 1, got {total!r}.")
    n = w.size if n is None else int(n)
    if n < 1:
        raise ValueError(f"n must be positive, got {n}.")
    rng = as_generator(random_state)
    if method == "systematic":
        u = (rng.random() + np.arange(n)) / n
    elif method == "stratified":
        u = (rng.random(n) + np.arange(n)) / n
    elif method == "multinomial":
        u = np.sort(rng.random(n))
    elif method == "residual":
        copies = np.floor(n * w).astype(np.int64)
        det = np.repeat(np.arange(w.size), copies)
        rest = n - det.size
        if rest == 0:
            return det
        resid = n * w - copies
        resid /= resid.sum()
        extra = _inverse_cdf(resid, np.sort(rng.random(rest)))
        return np.sort(np.concatenate([det, extra]))
    else:
        raise ValueError(f"method must be one of {RESAMPLING_METHODS}, got {method!r}.")
    return _inverse_cdf(w, u)
