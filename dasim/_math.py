"""Small numerical kernels used on hot paths."""

from __future__ import annotations

import numpy as np

__all__ = ["logsumexp"]


def logsumexp(a, axis=None):
    """``log(sum(exp(a)))`` computed stably; ``-inf`` when every entry is ``-inf``.

    A lean replacement for :func:`scipy.special.logsumexp` (whose array-API dispatch costs
    hundreds of microseconds a call inside the filter loop).

    Parameters
    ----------
    a : ndarray
        Input values.
    axis : int or None, default=None
        Axis to reduce (all axes when ``None``).

    Returns
    -------
    float or ndarray
        The reduction.
    """
    a = np.asarray(a, dtype=np.float64)
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)) + m
    return out.item() if axis is None else np.squeeze(out, axis=axis)
