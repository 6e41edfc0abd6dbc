"""Gaspari-Cohn tapering for localised ensemble Kalman filters."""

from __future__ import annotations

import numpy as np

__all__ = ["gaspari_cohn", "grid_distances"]

#: DAPPER's (and Sakov's) factor matching the Gaspari-Cohn function to a Gaussian.
GC_FACTOR = 1.82


def gaspari_cohn(distance, radius):
    """Gaspari-Cohn (1999) fifth-order compactly supported correlation function.

    The radius follows DAPPER's convention: it is the length scale of the Gaussian that
    the taper approximates; the half-width is ``c = 1.82 * radius`` and the taper is zero
    beyond ``2 c``.

    Parameters
    ----------
    distance : array-like
        Non-negative distances.
    radius : float
        Localisation radius (positive).

    Returns
    -------
    ndarray
        Taper coefficients in ``[0, 1]``, 1 at distance 0.

    Examples
    --------
    >>> from dasim.filters import gaspari_cohn
    >>> float(gaspari_cohn(0.0, 2.0)), float(gaspari_cohn(100.0, 2.0))
    (1.0, 0.0)
    """
    if not np.isfinite(radius) or radius <= 0:
        raise ValueError(f"radius must be positive, got {radius!r}.")
    d = np.asarray(distance, dtype=np.float64)
    if np.any(d < 0):
        raise ValueError("distance must be non-negative.")
    r = d / (GC_FACTOR * radius)
    out = np.zeros_like(r)
    near = r <= 1.0
    rn = r[near]
    out[near] = 1.0 - 5.0 / 3.0 * rn**2 + 5.0 / 8.0 * rn**3 + 0.5 * rn**4 - 0.25 * rn**5
    far = (r > 1.0) & (r <= 2.0)
    rf = r[far]
    out[far] = (
        4.0
        - 5.0 * rf
        + 5.0 / 3.0 * rf**2
        + 5.0 / 8.0 * rf**3
        - 0.5 * rf**4
        + rf**5 / 12.0
        - 2.0 / (3.0 * rf)
    )
    return np.clip(out, 0.0, 1.0) if out.ndim else float(np.clip(out, 0.0, 1.0))


def grid_distances(a, b, n, periodic=True):
    """Distances between grid indices ``a`` and ``b`` on a line of ``n`` points.

    Parameters
    ----------
    a, b : array-like of int
        Grid indices.
    n : int
        Number of grid points.
    periodic : bool, default=True
        Whether the grid is a ring (Lorenz-96).

    Returns
    -------
    ndarray of shape (len(a), len(b))
        Pairwise distances.
    """
    d = np.abs(np.asarray(a, dtype=np.float64)[:, None] - np.asarray(b, dtype=np.float64)[None])
    return np.minimum(d, n - d) if periodic else d
