"""Locations of state and observation components, their distances, and localisation tapers.

A localised filter needs to know where each state component and each observation sits,
and how far apart two locations are. A :class:`Coordinates` object holds the locations of
a set of points (one row per state component or observation) and the space they live in:
some axes may be periodic (a ring, a torus), and the distance is Euclidean with each
periodic axis wrapped to its shorter way round.

- :class:`PeriodicGrid1D`: ``n`` equally spaced points on a ring (Lorenz-96).
- :class:`Grid2D`: a rectangular grid, state vector ``field.ravel()`` (row-major), with
  optionally periodic axes.
- :class:`Points`: any explicit locations in one or more dimensions.

:func:`localization_weights` turns the distances between two sets of locations into taper
coefficients (Gaspari-Cohn by default), the matrix that the localised filters multiply
their covariances or observation precisions by.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator

__all__ = [
    "Coordinates",
    "PeriodicGrid1D",
    "Grid2D",
    "Points",
    "localization_weights",
    "gaspari_cohn",
]

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
    >>> from dasim.coordinates import gaspari_cohn
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


def _gaussian_taper(distance, radius):
    return np.exp(-0.5 * (distance / radius) ** 2)


def _step_taper(distance, radius):
    return (distance <= radius).astype(np.float64)


#: Tapers by name: ``f(distance, radius) -> coefficients``.
_TAPERS = {"gaspari-cohn": gaspari_cohn, "gaussian": _gaussian_taper, "step": _step_taper}


class Coordinates(BaseEstimator):
    """Base class of point locations in a space with a (possibly periodic) distance.

    A subclass describes ``n_points`` locations, one row per state component or
    observation, by implementing ``_resolve()``, which validates the parameters and
    returns the positions, shape ``(n_points, n_dims)``, and the period of each axis
    (``inf`` for an axis that does not wrap). The distance between two locations is
    Euclidean, each periodic axis of length ``L`` contributing ``min(|a - b| mod L,
    L - |a - b| mod L)``. Not meant to be instantiated.

    See Also
    --------
    PeriodicGrid1D, Grid2D, Points : The concrete coordinates.
    localization_weights : Taper coefficients from the distances.

    Examples
    --------
    >>> from dasim.coordinates import Coordinates, PeriodicGrid1D
    >>> isinstance(PeriodicGrid1D(4), Coordinates)
    True
    """

    def _resolve(self):
        raise NotImplementedError

    @property
    def positions(self):
        """Locations of the points, ``ndarray`` of shape ``(n_points, n_dims)``."""
        return self._resolve()[0].copy()

    @property
    def periods(self):
        """Period of each axis, ``ndarray`` of shape ``(n_dims,)`` (``inf``: no wrap)."""
        return self._resolve()[1].copy()

    @property
    def n_points(self):
        """Number of locations (``int``)."""
        return int(self._resolve()[0].shape[0])

    def take(self, indices):
        """Select a subset of the locations, in the same space.

        Parameters
        ----------
        indices : int, slice, sequence of int or bool mask
            Which points to keep (for example the state components an observation
            model observes).

        Returns
        -------
        Points
            The selected locations, with the same periodic axes.

        Examples
        --------
        >>> from dasim.coordinates import PeriodicGrid1D
        >>> PeriodicGrid1D(8).take([0, 7]).pairwise_distance().tolist()
        [[0.0, 1.0], [1.0, 0.0]]
        """
        pos, periods = self._resolve()
        if isinstance(indices, slice):
            sel = pos[indices]
        else:
            idx = np.asarray(indices)
            if idx.dtype == bool:
                if idx.shape != (pos.shape[0],):
                    raise ValueError(
                        f"indices mask has shape {idx.shape}, there are {pos.shape[0]} points."
                    )
            elif idx.dtype.kind not in "iu":
                raise TypeError(f"indices must be integers, a slice or a mask, got {indices!r}.")
            elif np.any(idx < -pos.shape[0]) or np.any(idx >= pos.shape[0]):
                raise ValueError(f"indices {indices!r} out of range for {pos.shape[0]} points.")
            sel = pos[np.atleast_1d(idx)]
        if sel.shape[0] == 0:
            raise ValueError(f"indices {indices!r} select no point.")
        return Points(sel, periodic_lengths=_periods_to_lengths(periods))

    def pairwise_distance(self, other=None):
        """Compute the distances between these locations and ``other``'s.

        Parameters
        ----------
        other : Coordinates, array-like of shape (n_other, n_dims) or None, default=None
            The second set of locations: coordinates in the same space (same number of
            dimensions and the same periodic axes), or positions given as an array (in
            this space); ``None`` for these locations themselves.

        Returns
        -------
        ndarray of shape (n_points, n_other)
            Pairwise distances.

        Examples
        --------
        >>> from dasim.coordinates import Grid2D
        >>> grid = Grid2D((3, 4), periodic=(False, True))
        >>> float(grid.pairwise_distance()[0, 3])  # (0, 0) to (0, 3) wraps: one step
        1.0
        """
        pos, periods = self._resolve()
        other_pos = pos if other is None else _other_positions(other, pos.shape[1], periods)
        return _distances(pos, other_pos, periods)


class Points(Coordinates):
    """Explicit point locations in one or more dimensions.

    Parameters
    ----------
    coords : array-like of shape (n_points, n_dims) or (n_points,)
        The locations (a 1-D array is one dimension). Finite.
    periodic_lengths : float, sequence of (float or None), or None, default=None
        The period of each axis: ``None`` for no periodic axis, one positive number for
        all axes, or one entry per axis (``None`` for an axis that does not wrap).

    See Also
    --------
    PeriodicGrid1D : Equally spaced points on a ring.
    Grid2D : A rectangular grid.

    Examples
    --------
    >>> from dasim.coordinates import Points
    >>> pts = Points([[0.0, 0.0], [3.0, 4.0], [9.0, 0.0]], periodic_lengths=[10.0, None])
    >>> pts.pairwise_distance().round(3).tolist()[0]
    [0.0, 5.0, 1.0]
    """

    def __init__(self, coords=None, periodic_lengths=None):
        self.coords = coords
        self.periodic_lengths = periodic_lengths

    def _resolve(self):
        pos = _positions(self.coords, "coords")
        return pos, _lengths_to_periods(self.periodic_lengths, pos.shape[1], "periodic_lengths")


class PeriodicGrid1D(Coordinates):
    """``n`` equally spaced points on a ring (a periodic 1-D grid).

    Point ``i`` sits at ``i * length / n``; the distance wraps around the ring, so the
    first and the last points are one spacing apart. This is the geometry of the
    Lorenz-96 model and the default of the filters' localisation (with ``length=n``,
    distances counted in grid points).

    Parameters
    ----------
    n : int
        Number of points (at least 1).
    length : float or None, default=None
        Circumference of the ring; ``None`` means ``n`` (unit spacing).

    See Also
    --------
    Grid2D : A rectangular grid.
    Points : Explicit locations.

    Examples
    --------
    >>> from dasim.coordinates import PeriodicGrid1D
    >>> PeriodicGrid1D(6).pairwise_distance()[0].tolist()
    [0.0, 1.0, 2.0, 3.0, 2.0, 1.0]
    >>> PeriodicGrid1D(4, length=2.0).positions.ravel().tolist()
    [0.0, 0.5, 1.0, 1.5]
    """

    def __init__(self, n=None, length=None):
        self.n = n
        self.length = length

    def _resolve(self):
        n = _check_count(self.n, "n")
        pos = np.arange(n, dtype=np.float64)
        if self.length is None:
            return pos[:, None], np.array([float(n)])
        length = _check_length(self.length, "length")
        return (pos * (length / n))[:, None], np.array([length])


class Grid2D(Coordinates):
    """A rectangular 2-D grid, the state vector being the field flattened row-major.

    State component ``i`` is the grid point ``(i // nx, i % nx)`` of a field of shape
    ``(ny, nx)`` (numpy's ``field.ravel()``), at position ``(row * dy, column * dx)``.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)``, the number of rows and columns (each at least 1).
    spacing : float or tuple of float, default=1.0
        Grid spacing, the same on both axes or ``(dy, dx)``.
    periodic : bool or tuple of bool, default=False
        Whether the axes wrap (a torus when both do): one flag for both or ``(rows,
        columns)``. A periodic axis of ``ny`` rows has period ``ny * dy``.

    See Also
    --------
    PeriodicGrid1D : Equally spaced points on a ring.
    Points : Explicit locations.

    Examples
    --------
    >>> from dasim.coordinates import Grid2D
    >>> grid = Grid2D((2, 3), spacing=(1.0, 2.0))
    >>> grid.positions.tolist()
    [[0.0, 0.0], [0.0, 2.0], [0.0, 4.0], [1.0, 0.0], [1.0, 2.0], [1.0, 4.0]]
    >>> float(grid.pairwise_distance()[0, 4])  # from (0, 0) to (1, 2)
    2.23606797749979
    """

    def __init__(self, shape=None, spacing=1.0, periodic=False):
        self.shape = shape
        self.spacing = spacing
        self.periodic = periodic

    def _resolve(self):
        shape = self.shape
        if not isinstance(shape, tuple | list | np.ndarray) or len(shape) != 2:
            raise ValueError(f"shape must be a pair (ny, nx), got {shape!r}.")
        ny, nx = (_check_count(s, "shape") for s in shape)
        spacing = self.spacing
        pair = spacing if isinstance(spacing, tuple | list) else (spacing, spacing)
        if len(pair) != 2:
            raise ValueError(f"spacing must be a number or a pair, got {spacing!r}.")
        dy, dx = (_check_length(s, "spacing") for s in pair)
        periodic = self.periodic
        flags = periodic if isinstance(periodic, tuple | list) else (periodic, periodic)
        if len(flags) != 2 or not all(isinstance(f, bool | np.bool_) for f in flags):
            raise TypeError(f"periodic must be a bool or a pair of bools, got {periodic!r}.")
        rows, cols = np.divmod(np.arange(ny * nx), nx)
        pos = np.column_stack([rows * dy, cols * dx]).astype(np.float64)
        periods = np.array(
            [ny * dy if flags[0] else np.inf, nx * dx if flags[1] else np.inf], dtype=np.float64
        )
        return pos, periods


def localization_weights(coordinates, other, radius, *, taper="gaspari-cohn"):
    """Localisation taper between two sets of locations.

    The coefficient of a pair is ``taper(distance, radius)``: 1 at distance 0, decreasing
    with distance. The localised ensemble Kalman filters multiply the observation
    precision (LETKF) or the forecast covariances (stochastic EnKF) by it.

    Parameters
    ----------
    coordinates : Coordinates or array-like of shape (n_points, n_dims)
        The first set of locations (for a filter, the state's). An array is taken as
        :class:`Points` without periodic axes.
    other : Coordinates, array-like of shape (n_other, n_dims) or None
        The second set (for a filter, the observations'), in the same space; ``None``
        for ``coordinates`` itself.
    radius : float
        Localisation radius, in the units of the coordinates (positive).
    taper : {"gaspari-cohn", "gaussian", "step"} or callable, default="gaspari-cohn"
        ``"gaspari-cohn"``: :func:`gaspari_cohn` (DAPPER's convention, zero beyond
        ``2 * 1.82 * radius``); ``"gaussian"``: ``exp(-d^2 / (2 radius^2))``; ``"step"``:
        1 within ``radius``, 0 beyond; or a callable ``f(distance, radius)`` returning
        coefficients of the same shape.

    Returns
    -------
    ndarray of shape (n_points, n_other)
        Taper coefficients.

    See Also
    --------
    gaspari_cohn : The default taper.

    Examples
    --------
    >>> from dasim.coordinates import PeriodicGrid1D, localization_weights
    >>> ring = PeriodicGrid1D(10)
    >>> w = localization_weights(ring, ring.take([0]), radius=1.0)
    >>> w.shape, float(w[0, 0]), float(w[5, 0])
    ((10, 1), 1.0, 0.0)
    """
    if isinstance(radius, bool) or not isinstance(radius, numbers.Real | np.floating):
        raise TypeError(f"radius must be a real number, got {radius!r}.")
    if not np.isfinite(radius) or radius <= 0:
        raise ValueError(f"radius must be positive and finite, got {radius!r}.")
    if callable(taper):
        func = taper
    elif isinstance(taper, str) and taper in _TAPERS:
        func = _TAPERS[taper]
    else:
        raise ValueError(f"taper must be one of {sorted(_TAPERS)} or a callable, got {taper!r}.")
    coords = coordinates if isinstance(coordinates, Coordinates) else Points(coordinates)
    dist = _named(coords.pairwise_distance, "coordinates", other)
    out = np.asarray(func(dist, float(radius)), dtype=np.float64)
    if out.shape != dist.shape:
        raise ValueError(f"taper returned shape {out.shape} for distances of shape {dist.shape}.")
    return out


# --------------------------------------------------------------------------- helpers
def _check_count(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _check_length(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real | np.floating):
        raise TypeError(f"{name} must be a positive number, got {value!r}.")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be positive and finite, got {value!r}.")
    return float(value)


def _positions(value, name, n_dims=None):
    """Validate an array of locations; return it as float64, shape ``(n, n_dims)``."""
    if value is None:
        raise ValueError(f"{name} must be an array of locations, got None.")
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a numeric array; could not convert it ({exc}).") from exc
    if arr.ndim == 1 and n_dims in (None, 1):
        arr = arr[:, None]
    if arr.ndim != 2:
        want = "(n_points,) or (n_points, n_dims)" if n_dims in (None, 1) else "(n, n_dims)"
        raise ValueError(f"{name} must have shape {want}, got {arr.shape}.")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}).")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (no NaN or inf).")
    if n_dims is not None and arr.shape[1] != n_dims:
        raise ValueError(f"{name} has {arr.shape[1]} dimension(s), the space has {n_dims}.")
    return arr


def _lengths_to_periods(lengths, n_dims, name):
    if lengths is None:
        return np.full(n_dims, np.inf)
    entries = (
        list(lengths) if isinstance(lengths, tuple | list | np.ndarray) else [lengths] * n_dims
    )
    if len(entries) != n_dims:
        raise ValueError(f"{name} has {len(entries)} entries but the points have {n_dims} dims.")
    return np.array(
        [np.inf if v is None else _check_length(v, name) for v in entries], dtype=np.float64
    )


def _periods_to_lengths(periods):
    if not np.any(np.isfinite(periods)):
        return None
    return [float(p) if np.isfinite(p) else None for p in periods]


def _other_positions(other, n_dims, periods):
    """Positions of ``other`` checked to lie in the space of ``(n_dims, periods)``."""
    if isinstance(other, Coordinates):
        pos, other_periods = other._resolve()
        if pos.shape[1] != n_dims:
            raise ValueError(
                f"other has {pos.shape[1]} dimension(s), these coordinates have {n_dims}."
            )
        if not np.array_equal(other_periods, periods):
            raise ValueError(
                f"other lies in a different space: its axes have periods {other_periods}, "
                f"these coordinates' {periods} (inf: no wrap). Give the same periodic "
                "lengths, or plain positions as an array."
            )
        return pos
    return _positions(other, "other", n_dims)


def _distances(a, b, periods):
    """Pairwise distances between rows of ``a`` and ``b``, periodic axes wrapped."""
    total = None
    for k in range(a.shape[1]):
        d = np.abs(a[:, k, None] - b[None, :, k])
        period = periods[k]
        if np.isfinite(period):
            d = np.mod(d, period)
            d = np.minimum(d, period - d)
        if a.shape[1] == 1:
            return d
        total = d * d if total is None else total + d * d
    return np.sqrt(total)


def _named(func, name, *args):
    """Call ``func``, making sure a ValueError / TypeError names ``name``."""
    try:
        return func(*args)
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        if name in msg:
            raise
        raise type(exc)(f"{name}: {msg}") from exc


def _as_coordinates(value, name, periods=None):
    """``value`` as Coordinates (an array becomes Points, in the space of ``periods``)."""
    if isinstance(value, Coordinates):
        _named(value._resolve, name)
        return value
    if isinstance(value, str) or value is None:
        raise TypeError(f"{name} must be a dasim Coordinates object or an array, got {value!r}.")
    pos = _named(_positions, name, value, name)
    lengths = None if periods is None else _periods_to_lengths(periods)
    if periods is not None and pos.shape[1] != periods.size:
        raise ValueError(
            f"{name} has {pos.shape[1]} dimension(s), the state coordinates have {periods.size}."
        )
    return Points(pos, periodic_lengths=lengths)


def _filter_locations(state_coordinates, periodic, observation, n_state, n_obs):
    """Resolve and check the state and observation locations of a localised filter.

    Called by the filters' ``fit``. ``state_coordinates=None`` places the state
    components on a 1-D grid of unit spacing, a ring when ``periodic``; the observations
    sit at ``observation.coordinates`` when given, else at the locations of the state
    components they observe (``None`` for a callable operator, which observes no single
    component).

    Returns
    -------
    state : Coordinates
        ``n_state`` locations.
    obs : Coordinates or None
        ``n_obs`` locations in the same space, or ``None`` when they cannot be derived.
    """
    if state_coordinates is None:
        if periodic:
            state = PeriodicGrid1D(n_state)
        else:
            state = Points(np.arange(n_state, dtype=np.float64))
    else:
        state = _as_coordinates(state_coordinates, "state_coordinates")
        if state.n_points != n_state:
            raise ValueError(
                f"state_coordinates has {state.n_points} locations (rows) but the state has "
                f"{n_state} components."
            )
    pos, periods = state._resolve()
    obs_coords = getattr(observation, "coordinates", None)
    if obs_coords is None:
        if callable(observation.operator):
            return state, None
        return state, state.take(observation.selected(n_state))
    name = "observation.coordinates"
    obs = _as_coordinates(obs_coords, name, periods)
    obs_pos, obs_periods = obs._resolve()
    if obs_pos.shape[1] != pos.shape[1]:
        raise ValueError(
            f"{name} has {obs_pos.shape[1]} dimension(s), the state coordinates have "
            f"{pos.shape[1]}."
        )
    if not np.array_equal(obs_periods, periods):
        raise ValueError(
            f"{name} lies in a different space from the state coordinates: periods "
            f"{obs_periods} against {periods} (inf: no wrap). Give the observation "
            "locations as an array to place them in the state's space."
        )
    if obs_pos.shape[0] != n_obs:
        raise ValueError(
            f"{name} has {obs_pos.shape[0]} locations (rows) but the observation operator "
            f"gives {n_obs} observations."
        )
    return state, obs
