"""Finite-size adaptive inflation: the prior inflation of the EnKF-N (Bocquet 2011, 2015).

The EnKF-N does not trust the ensemble's mean and covariance as the prior's: it treats
them as unknown, with Jeffreys' hyperprior, and integrates them out. With raw anomalies
``X = E - mean(E)`` (rows the N members) and the state written ``x = mean(E) + X^T w``,
the prior of ``w`` becomes ``p(w) ∝ (eps_N + |w|^2)^(-N/2)``, ``eps_N = 1 + 1/N``, in place
of the ETKF's Gaussian ``N(0, I / (N - 1))``. Since ``log a = min_z (z a - log z - 1)``
for ``a > 0``, the analysis cost

    J(w) = 1/2 |d - S w|^2 + N/2 log(eps_N + |w|^2),

with ``S`` the whitened observation anomalies (``R^(-1/2) (h(E) - mean h(E))``, one column
a member) and ``d = R^(-1/2) (y - mean h(E))`` the whitened innovation, has the dual

    D(z) = 1/2 d^T (I + S S^T / z)^(-1) d + eps_N z / 2 - N/2 log z,

a function of one positive number ``z`` (Bocquet, Raanes and Hannart 2015, the "dual
EnKF-N"). At its minimiser ``z*`` the analysis is the ETKF's with the prior weight ``z*``
in place of ``N - 1``, which is the ETKF of the forecast inflated by
``lambda = sqrt((N - 1) / z*)``. So the EnKF-N is a prior inflation chosen every cycle
from the innovation: large where the observations lie far outside the ensemble's spread,
close to 1 where they do not. Without data (``d = 0``) ``z* = N / eps_N``, which is
``lambda = sqrt(1 - 1/N^2)``; ``dD/dz > 0`` beyond it, so ``z*`` never exceeds it.

The derivation assumes a linear observation operator. With a saturating one (arctan far
from 0) the innovation can lie far outside what any spread of the ensemble predicts, and
the estimate runs away: on B2's ``l96-20-atan`` at N = 25 the unbounded factor grew from
1.5-2.9 in the first cycle to hundreds and thousands in the third, where the forecast
overflowed. ``max_factor`` bounds the search, ``z >= (N - 1) / max_factor^2``.

The dual need not be convex in ``z`` (``z / (z + s^2)`` is concave), so the minimiser is
found by a log-spaced scan of 64 points followed by a bounded Brent search in ``log z``
between the scan's neighbours of the best point.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_positive, is_real

__all__ = []

#: The bound on the finite-size factor with ``inflation="finite-size"``: the largest
#: factor the adaptive choice may apply to the forecast anomalies in one cycle.
FINITE_SIZE_MAX = 1.2

_SCAN = 64


def check_inflation(value, name="inflation"):
    """Check an ``inflation`` parameter; return ``None`` (fixed) or the finite-size bound.

    Accepted: a float of at least 1 (a fixed factor), ``"finite-size"`` (the adaptive
    factor, bounded by :data:`FINITE_SIZE_MAX`) or ``("finite-size", max_factor)`` with a
    ``max_factor`` above 1 (``inf`` for no bound). A value that is neither a string, a
    tuple nor a real number is a ``TypeError``.
    """
    if isinstance(value, str | tuple | list):
        spec = (value,) if isinstance(value, str) else tuple(value)
        bound = FINITE_SIZE_MAX if len(spec) == 1 else spec[1] if len(spec) == 2 else None
        if not spec or spec[0] != "finite-size" or not is_real(bound) or not bound > 1.0:
            raise ValueError(
                f"{name} must be a float of at least 1, 'finite-size' or ('finite-size', "
                f"max_factor) with max_factor > 1, got {value!r}."
            )
        return float(bound)
    check_positive(value, name)
    if value < 1.0:
        raise ValueError(
            f"{name} must be at least 1 (1 means no inflation; a value below 1 would "
            f"shrink the spread), got {value!r}."
        )
    return None


def inflate(ensemble, factor):
    """The ensemble (members in rows) with its anomalies multiplied by ``factor``."""
    mean = ensemble.mean(axis=0)
    return mean + factor * (ensemble - mean)


def finite_size_dual(z, du, s2, rest, n):
    """The EnKF-N dual cost ``D(z)`` (up to a constant), vectorised over ``z``.

    ``du`` are the coordinates of the whitened innovation on the left singular vectors of
    ``S`` (singular values squared ``s2``), ``rest`` the squared norm of its part outside
    their span, ``n`` the ensemble size.
    """
    z = np.asarray(z, dtype=float)[..., None]
    fit = np.sum(du**2 * z / (z + s2), axis=-1) + rest
    eps = 1.0 + 1.0 / n
    return 0.5 * fit + 0.5 * eps * z[..., 0] - 0.5 * n * np.log(z[..., 0])


def finite_size_factor(predicted, y, noise, max_factor=FINITE_SIZE_MAX):
    """The EnKF-N's prior inflation factor ``sqrt((N - 1) / z*)`` for one cycle.

    Parameters
    ----------
    predicted : ndarray of shape (n_members, n_obs)
        The forecast members' predicted observations ``h(x_i)``.
    y : ndarray of shape (n_obs,)
        The observation (NaN: not observed, left out).
    noise : GaussianNoise
        The observation noise.
    max_factor : float, default=FINITE_SIZE_MAX
        Upper bound of the factor (``inf``: none).

    Returns
    -------
    float
        The factor, in ``[sqrt(1 - 1/N^2), max_factor]``; 1 when nothing is observed.
    """
    from scipy.optimize import minimize_scalar  # not at import: dasim's import stays light

    mask = ~np.isnan(y)
    n = predicted.shape[0]
    if not mask.any():
        return 1.0
    hx = predicted[:, mask]
    ybar = hx.mean(axis=0)
    marginal = noise.marginal(mask)
    s = marginal.whiten(hx - ybar)  # (N, m): S^T
    d = marginal.whiten(y[mask] - ybar)
    # S = U diag(sv) V^T with U over observations: the right singular vectors of S^T.
    _, sv, ut = np.linalg.svd(s, full_matrices=False)
    du = ut @ d
    rest = max(float(d @ d - du @ du), 0.0)
    z_max = n / (1.0 + 1.0 / n)
    z_min = (n - 1) / max_factor**2 if np.isfinite(max_factor) else z_max * 1e-12
    grid = np.geomspace(z_min, z_max, _SCAN)
    s2 = sv**2
    values = finite_size_dual(grid, du, s2, rest, n)
    k = int(np.argmin(values))
    lo, hi = np.log(grid[max(k - 1, 0)]), np.log(grid[min(k + 1, _SCAN - 1)])
    result = minimize_scalar(
        lambda t: float(finite_size_dual(np.exp(t), du, s2, rest, n)),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-8},
    )
    z = np.exp(result.x) if result.fun <= values[k] else grid[k]
    return float(np.sqrt((n - 1) / z))
