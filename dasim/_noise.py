"""One value for zero-mean Gaussian noise: model noise, observation noise, likelihoods.

:class:`GaussianNoise` is what a dynamical model's ``process_noise`` and an observation
model's ``noise_std`` resolve to, and what the filters, smoothers and assimilators draw
from, whiten with and evaluate. It is public as :class:`dasim.observations.GaussianNoise`.
A low-level module: it imports nothing from dasim.
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy.linalg import solve_triangular

__all__ = ["GaussianNoise", "cached_noise"]

_LOG_2PI = np.log(2.0 * np.pi)


class GaussianNoise:
    """Zero-mean Gaussian noise ``N(0, C)`` with its Cholesky factor cached.

    Give exactly one of ``std``, ``variance`` or ``covariance``.

    Parameters
    ----------
    std : float or array-like of shape (dim,), optional
        Standard deviation(s): a scalar (isotropic, needs ``dim``) or one per component
        (a diagonal covariance ``diag(std**2)``).
    variance : float or array-like of shape (dim,), optional
        Variance(s), scalar (needs ``dim``) or one per component (a diagonal covariance).
    covariance : array-like of shape (dim, dim), optional
        A full covariance: symmetric positive definite. One with no off-diagonal entries
        is stored as diagonal.
    dim : int, optional
        The dimension; needed with a scalar, checked against the length otherwise.
    name : str, default="noise"
        Argument name used in error messages (e.g. ``"noise_std"``).
    allow_zero : bool, default=False
        Accept zero standard deviations or variances: a degenerate noise that leaves
        those components unchanged (a model's ``process_noise`` may have them). It can
        be sampled but not whitened or evaluated.

    Attributes
    ----------
    dim : int
        The dimension.
    is_diagonal : bool
        Whether the covariance is diagonal (whitening is then a division).

    See Also
    --------
    ObservationModel.noise_model : The observation noise as a ``GaussianNoise``.
    dasim.models.DynamicalModel.noise_model : The model noise per cycle.

    Examples
    --------
    >>> import numpy as np
    >>> from dasim.observations import GaussianNoise
    >>> noise = GaussianNoise(std=[1.0, 2.0])
    >>> noise.covariance.tolist()
    [[1.0, 0.0], [0.0, 4.0]]
    >>> noise.whiten(np.array([[2.0, 2.0]])).tolist()
    [[2.0, 1.0]]
    >>> GaussianNoise(std=0.5, dim=3).sample(4, random_state=0).shape
    (4, 3)
    """

    def __init__(
        self, std=None, *, variance=None, covariance=None, dim=None, name="noise", allow_zero=False
    ):
        pairs = (("std", std), ("variance", variance), ("covariance", covariance))
        given = [k for k, v in pairs if v is not None]
        if len(given) != 1:
            raise TypeError(
                f"{name}: give exactly one of std, variance or covariance, got "
                f"{', '.join(given) or 'none'}."
            )
        if dim is not None and (
            isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < 1
        ):
            raise ValueError(f"{name}: dim must be a positive integer, got {dim!r}.")
        self.name = name
        self._chol = None
        if covariance is not None:
            cov = _as_float(covariance, name)
            if dim is not None and cov.shape != (dim, dim):
                raise ValueError(f"{name} must be a ({dim}, {dim}) covariance, got {cov.shape}.")
            if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
                raise ValueError(f"{name} covariance must be a square matrix, got {cov.shape}.")
            if not np.allclose(cov, cov.T, rtol=1e-10, atol=1e-12):
                raise ValueError(f"{name} covariance must be symmetric.")
            try:
                chol = np.linalg.cholesky(cov)
            except np.linalg.LinAlgError as exc:
                raise ValueError(f"{name} covariance must be positive definite.") from exc
            diag = np.diag(cov)
            if np.count_nonzero(cov - np.diag(diag)) == 0:
                self._std = np.sqrt(diag)
                self._cov = cov.copy()
            else:
                self._std = None
                self._cov = cov.copy()
                self._chol = chol
            self.dim = cov.shape[0]
        else:
            value, kind = (std, "std") if std is not None else (variance, "variance")
            arr = _as_float(value, name)
            if arr.ndim == 0:
                if dim is None:
                    raise ValueError(f"{name}: a scalar {kind} needs dim.")
                arr = np.full(dim, float(arr))
            elif arr.ndim != 1:
                raise ValueError(
                    f"{name} must be a scalar, a vector or a matrix, got shape {arr.shape}."
                )
            elif dim is not None and arr.shape != (dim,):
                raise ValueError(f"{name} has {arr.shape[0]} entries but the dimension is {dim}.")
            if arr.size == 0:
                raise ValueError(f"{name} is empty.")
            if np.any(arr < 0) or (not allow_zero and np.any(arr == 0)):
                kind = "non-negative" if allow_zero else "positive"
                raise ValueError(f"{name} must be {kind}, got {value!r}.")
            self._std = arr.copy() if kind == "std" else np.sqrt(arr)
            self._cov = np.diag(self._std**2)
            self.dim = arr.shape[0]

    @classmethod
    def from_spec(cls, noise, dim, name="noise"):
        """Resolve a dasim noise parameter: a standard deviation (or one each), or a covariance.

        The convention of ``process_noise`` and ``noise_std``: a scalar or a vector is a
        standard deviation, a matrix a covariance.

        Parameters
        ----------
        noise : float, array-like of shape (dim,) or (dim, dim)
            The specification.
        dim : int
            The dimension.
        name : str, default="noise"
            Argument name used in error messages.

        Returns
        -------
        GaussianNoise
            The noise.
        """
        arr = _as_float(noise, name)
        if arr.ndim == 2:
            return cls(covariance=arr, dim=dim, name=name)
        if arr.ndim > 2:
            raise ValueError(
                f"{name} must be a scalar, a vector or a matrix, got shape {arr.shape}."
            )
        return cls(std=noise, dim=dim, name=name)

    def __repr__(self):
        kind = "std" if self.is_diagonal else "covariance"
        return f"GaussianNoise(dim={self.dim}, {kind})"

    # ------------------------------------------------------------------ properties
    @property
    def is_diagonal(self):
        """Whether the covariance is diagonal."""
        return self._std is not None

    @property
    def std(self):
        """Standard deviation of each component, shape ``(dim,)`` (a new array)."""
        return self._std.copy() if self._std is not None else np.sqrt(np.diag(self._cov))

    @property
    def covariance(self):
        """The covariance matrix, shape ``(dim, dim)`` (a new array)."""
        return self._cov.copy()

    @property
    def cholesky(self):
        """Lower Cholesky factor ``L`` of the covariance (``C = L L^T``), cached."""
        if self._chol is None:
            self._chol = np.diag(self._std)
        return self._chol

    # ------------------------------------------------------------------ operations
    def whiten(self, r):
        """Whitened residuals ``L^{-1} r``, row by row over leading axes.

        Parameters
        ----------
        r : array-like of shape (..., dim)
            Residuals.

        Returns
        -------
        ndarray of shape (..., dim)
            Residuals with identity covariance under the noise.
        """
        r = np.asarray(r, dtype=np.float64)
        if self._std is not None:
            return r / self._std
        flat = r.reshape(-1, self.dim)
        return solve_triangular(self._chol, flat.T, lower=True).T.reshape(r.shape)

    def log_density(self, r, observed=None):
        """Log-density of residuals ``r`` under ``N(0, C)``, normalising constant included.

        Parameters
        ----------
        r : array-like of shape (..., dim)
            Residuals (members, times, ... on the leading axes).
        observed : array-like of bool, shape (dim,) or (..., dim), optional
            Components that count (the marginal density of those): entries of ``r``
            outside it are ignored (they may be NaN). A mask per row needs diagonal noise.

        Returns
        -------
        ndarray of shape r.shape[:-1]
            Log-densities.
        """
        r = np.asarray(r, dtype=np.float64)
        if observed is not None:
            observed = np.asarray(observed, dtype=bool)
            if observed.ndim == 1:
                if observed.all():
                    return self.log_density(r)
                return self.marginal(observed).log_density(r[..., observed])
            if self._std is None:
                raise ValueError(
                    f"{self.name}: a mask per row needs diagonal noise; pass one mask."
                )
            with np.errstate(invalid="ignore"):
                white = np.where(observed, r / self._std, 0.0)
            logdet = np.where(observed, 2.0 * np.log(self._std), 0.0).sum(axis=-1)
            n = observed.sum(axis=-1)
            return -0.5 * (np.sum(white**2, axis=-1) + logdet + n * _LOG_2PI)
        if r.shape[-1] != self.dim:
            raise ValueError(
                f"{self.name}: residuals have {r.shape[-1]} components, the noise {self.dim}."
            )
        white = self.whiten(r)
        if self._std is not None:
            logdet = 2.0 * np.sum(np.log(self._std))
        else:
            logdet = 2.0 * np.sum(np.log(np.diag(self._chol)))
        with np.errstate(over="ignore"):
            return -0.5 * (np.sum(white**2, axis=-1) + logdet + self.dim * _LOG_2PI)

    def log_likelihood(self, y, predicted):
        """Log-likelihood ``log N(y; h_i, C)`` for every predicted observation ``h_i``.

        NaN entries of ``y`` are unobserved and skipped (the marginal of the observed
        entries); an all-NaN ``y`` gives zeros.

        Parameters
        ----------
        y : ndarray of shape (dim,)
            One observation, NaN where unobserved.
        predicted : ndarray of shape (..., dim)
            Noise-free predicted observations.

        Returns
        -------
        ndarray of shape predicted.shape[:-1]
            Log-likelihoods.
        """
        mask = ~np.isnan(y)
        if not mask.any():
            return np.zeros(predicted.shape[:-1])
        return self.log_density(y - predicted, observed=mask)

    def sample(self, size=(), random_state=None):
        """Draw noise vectors.

        Parameters
        ----------
        size : int or tuple of int, default=()
            Leading shape of the draws.
        random_state : int, numpy.random.Generator, RandomState or None
            Seed or generator.

        Returns
        -------
        ndarray of shape size + (dim,)
            Draws from ``N(0, C)``.
        """
        from ._random import as_generator

        size = (size,) if isinstance(size, numbers.Integral) else tuple(size)
        z = as_generator(random_state).standard_normal((*size, self.dim))
        return self.colour(z)

    def colour(self, z):
        """Map standard normal draws ``z`` to the noise: ``L z`` row by row.

        Parameters
        ----------
        z : ndarray of shape (..., dim)
            Standard normal draws.

        Returns
        -------
        ndarray of shape (..., dim)
            Draws from ``N(0, C)``.
        """
        if self._std is not None:
            return z * self._std
        return z @ self._chol.T

    def marginal(self, observed):
        """The noise of a subset of the components.

        Parameters
        ----------
        observed : array-like of bool of shape (dim,) or of int
            The components kept.

        Returns
        -------
        GaussianNoise
            Their marginal noise.
        """
        if self._std is not None:
            return GaussianNoise(std=self._std[observed], name=self.name)
        idx = np.arange(self.dim)[observed]
        return GaussianNoise(covariance=self._cov[np.ix_(idx, idx)], name=self.name)


def cached_noise(owner, value, dim, resolve):
    """``resolve(value, dim)``, cached on ``owner`` while ``value`` and ``dim`` are unchanged.

    The models and observation models resolve their noise parameter once, not every
    cycle; the cache compares values (a copy is kept), so ``set_params`` or an array
    changed in place is seen.
    """
    arr = None if value is None else np.array(value, dtype=object if _ragged(value) else None)
    cached = owner.__dict__.get("_noise_cache")
    if (
        cached is not None
        and cached[1] == dim
        and (cached[0] is None) == (arr is None)
        and (arr is None or (cached[0].shape == arr.shape and np.array_equal(cached[0], arr)))
    ):
        return cached[2]
    noise = resolve(value, dim)
    if arr is None or arr.dtype != object:
        owner.__dict__["_noise_cache"] = (arr, dim, noise)
    return noise


def _ragged(value):
    try:
        np.asarray(value)
    except ValueError:
        return True
    return False


def _as_float(value, name):
    if value is None:
        raise TypeError(f"{name} must be a number, a vector or a matrix, got {value!r}.")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a number, a vector or a matrix, got {value!r}.") from exc
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {value!r}.")
    return arr
