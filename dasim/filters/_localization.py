"""Gaspari-Cohn tapering for localised ensemble Kalman filters.

The coordinates, distances and tapers live in :mod:`dasim.coordinates`; this module keeps
the names the filters have always imported.
"""

from __future__ import annotations

import numpy as np

from ..coordinates import GC_FACTOR, gaspari_cohn

__all__ = ["gaspari_cohn", "grid_distances", "GC_FACTOR"]


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
