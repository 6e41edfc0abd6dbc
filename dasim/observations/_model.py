"""Observation operators with Gaussian noise."""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator

from .._validation import check_array_finite, check_noise

__all__ = ["ObservationModel", "OPERATORS"]


def _identity(x, xp):
    return x


#: Built-in operators: name -> f(x, xp) with ``xp`` the array module (numpy or torch).
OPERATORS = {
    "identity": _identity,
    "arctan": lambda x, xp: xp.arctan(x),
    "sin": lambda x, xp: xp.sin(x),
    "cube": lambda x, xp: x**3,
    "square": lambda x, xp: x**2,
    "abs": lambda x, xp: xp.abs(x),
}


class ObservationModel(BaseEstimator):
    """Observe states through an operator and additive Gaussian noise.

    ``y = h(scale * x[indices]) + e``, ``e ~ N(0, R)``, applied row-wise and vectorised over
    any leading axes (ensembles, times).

    Parameters
    ----------
    operator : {"identity", "arctan", "sin", "cube", "square", "abs"} or callable, \
default="identity"
        The observation operator, applied elementwise to the selected components. A
        callable receives the selected components, shape ``(..., n_selected)``, and
        returns ``(..., n_obs)``; it must work on numpy arrays (and on torch tensors for
        the learned assimilators, which differentiate through it).
    noise_std : float, array of shape (n_obs,) or (n_obs, n_obs), default=1.0
        Observation noise: a standard deviation, one per observed component, or a full
        covariance matrix ``R``.
    indices : int, slice, sequence of int, bool mask or None, default=None
        The state components that are observed (all when ``None``).
    scale : float, default=1.0
        Multiplies the selected components before the operator (``arctan(3 x)`` is
        ``ObservationModel("arctan", scale=3.0)``).

    Examples
    --------
    >>> import numpy as np
    >>> from dasim.observations import ObservationModel
    >>> obs = ObservationModel("arctan", noise_std=0.1, indices=slice(None, None, 2))
    >>> obs.apply(np.zeros((5, 4))).shape
    (5, 2)
    >>> obs.simulate(np.zeros((5, 4)), random_state=0).shape
    (5, 2)
    """

    def __init__(self, operator="identity", noise_std=1.0, indices=None, scale=1.0):
        self.operator = operator
        self.noise_std = noise_std
        self.indices = indices
        self.scale = scale

    # -- resolution ----------------------------------------------------------------------
    def selected(self, n_state):
        """Integer indices of the observed state components.

        Parameters
        ----------
        n_state : int
            State dimension.

        Returns
        -------
        ndarray of int
            The observed components, in order.
        """
        idx = self.indices
        full = np.arange(n_state)
        if idx is None:
            return full
        if isinstance(idx, slice):
            out = full[idx]
        else:
            arr = np.asarray(idx)
            if arr.dtype == bool:
                if arr.shape != (n_state,):
                    raise ValueError(
                        f"indices mask has shape {arr.shape}, the state has {n_state} components."
                    )
                out = full[arr]
            elif arr.dtype.kind in "iu":
                arr = np.atleast_1d(arr)
                if arr.ndim != 1 or np.any(arr < -n_state) or np.any(arr >= n_state):
                    raise ValueError(f"indices {idx!r} out of range for {n_state} components.")
                out = full[arr]
            else:
                raise TypeError(f"indices must be integers, a slice or a mask, got {idx!r}.")
        if out.size == 0:
            raise ValueError(f"indices {idx!r} select no component of a {n_state}-state.")
        return out

    def _op(self):
        op = self.operator
        if callable(op):
            return lambda x, xp: op(x)
        if isinstance(op, str) and op in OPERATORS:
            return OPERATORS[op]
        raise ValueError(f"operator must be one of {sorted(OPERATORS)} or a callable, got {op!r}.")

    def _check_scale(self):
        s = self.scale
        if isinstance(s, bool) or not isinstance(s, numbers.Real) or not np.isfinite(s):
            raise ValueError(f"scale must be a finite number, got {s!r}.")
        return float(s)

    def n_obs(self, n_state):
        """Number of observed components for a state of dimension ``n_state``.

        Parameters
        ----------
        n_state : int
            State dimension.

        Returns
        -------
        int
            Width of ``apply``'s output.
        """
        if callable(self.operator):
            return int(self.apply(np.zeros((1, n_state))).shape[-1])
        return int(self.selected(n_state).size)

    def noise_cov(self, n_obs):
        """The observation-noise covariance ``R``, shape ``(n_obs, n_obs)``.

        Parameters
        ----------
        n_obs : int
            Number of observed components.

        Returns
        -------
        ndarray of shape (n_obs, n_obs)
            The covariance.
        """
        return check_noise(self.noise_std, n_obs, "noise_std")[1]

    # -- maps ------------------------------------------------------------------------------
    def apply(self, X):
        """Noise-free observation ``h(X)``, vectorised over leading axes.

        Parameters
        ----------
        X : ndarray or torch.Tensor of shape (..., n_state)
            States.

        Returns
        -------
        ndarray or torch.Tensor of shape (..., n_obs)
            Observations without noise (torch in, torch out).
        """
        is_torch = type(X).__module__.startswith("torch")
        if is_torch:
            import torch

            xp = torch
        else:
            xp = np
            X = np.asarray(X, dtype=np.float64)
        idx = self.selected(X.shape[-1])
        sel = X[..., idx] if idx.size != X.shape[-1] else X
        scale = self._check_scale()
        if scale != 1.0:
            sel = scale * sel
        out = self._op()(sel, xp)
        if not is_torch:
            out = np.asarray(out, dtype=np.float64)
            if out.shape[:-1] != X.shape[:-1]:
                raise ValueError(
                    f"operator returned shape {out.shape} for states of shape {X.shape}."
                )
        return out

    def simulate(self, X, random_state=None):
        """Noisy observations ``h(X) + e`` of states ``X``.

        Parameters
        ----------
        X : array-like of shape (..., n_state)
            States (for a twin experiment, the true trajectory).
        random_state : int, numpy.random.Generator, RandomState or None
            Seed or generator for the noise.

        Returns
        -------
        ndarray of shape (..., n_obs)
            Observations.
        """
        X = check_array_finite(X, "X")
        return self.add_noise(self.apply(X), random_state)

    def add_noise(self, predicted, random_state=None):
        """Add observation noise ``e ~ N(0, R)`` to noise-free observations.

        Parameters
        ----------
        predicted : ndarray of shape (..., n_obs)
            Noise-free observations ``h(x)``.
        random_state : int, numpy.random.Generator, RandomState or None
            Seed or generator.

        Returns
        -------
        ndarray of shape (..., n_obs)
            ``predicted + e``.
        """
        from ..models._base import _as_generator

        predicted = np.asarray(predicted, dtype=np.float64)
        std, cov = check_noise(self.noise_std, predicted.shape[-1], "noise_std")
        return self._add_noise(predicted, _as_generator(random_state), std, cov)

    @staticmethod
    def _add_noise(predicted, rng, std, cov):
        """``add_noise`` with the noise already resolved by ``check_noise`` (hot loops)."""
        z = rng.standard_normal(predicted.shape)
        if std is not None:
            return predicted + z * std
        return predicted + z @ np.linalg.cholesky(cov).T

    def log_likelihood(self, y, ensemble):
        """Gaussian log-likelihood ``log p(y | x_i)`` for every member ``x_i``.

        NaN entries of ``y`` are unobserved and skipped (the marginal of the observed
        entries); an all-NaN ``y`` gives zeros.

        Parameters
        ----------
        y : array-like of shape (n_obs,)
            One observation vector.
        ensemble : array-like of shape (n_members, n_state)
            States.

        Returns
        -------
        ndarray of shape (n_members,)
            Log-likelihoods, normalising constant included.
        """
        ensemble = check_array_finite(ensemble, "ensemble", ndim=2)
        y = check_array_finite(y, "y", ndim=1, allow_nan=True)
        return self.log_likelihood_from_predicted(y, self.apply(ensemble))

    def log_likelihood_from_predicted(self, y, predicted):
        """Gaussian log-likelihood of ``y`` given predicted observations ``h(x_i)``.

        Parameters
        ----------
        y : ndarray of shape (n_obs,)
            Observation, NaN where unobserved.
        predicted : ndarray of shape (n_members, n_obs)
            Noise-free predicted observations.

        Returns
        -------
        ndarray of shape (n_members,)
            Log-likelihoods.
        """
        if predicted.shape[-1] != y.shape[-1]:
            raise ValueError(
                f"y has {y.shape[-1]} components but the observation operator gives "
                f"{predicted.shape[-1]}."
            )
        std, cov = check_noise(self.noise_std, y.shape[-1], "noise_std")
        return self._log_likelihood(y, predicted, std, cov)

    @staticmethod
    def _log_likelihood(y, predicted, std, cov):
        """Log-likelihood with the noise already resolved by ``check_noise`` (hot loops)."""
        mask = ~np.isnan(y)
        n = int(mask.sum())
        if n == 0:
            return np.zeros(predicted.shape[0])
        resid = y[mask] - predicted[:, mask]
        with np.errstate(over="ignore"):
            return ObservationModel._gaussian_log_density(resid, std, cov, mask, n)

    @staticmethod
    def _gaussian_log_density(resid, std, cov, mask, n):
        if std is not None:
            s = std[mask]
            white = resid / s
            logdet = 2.0 * np.sum(np.log(s))
        else:
            chol = np.linalg.cholesky(cov[np.ix_(mask, mask)])
            white = np.linalg.solve(chol, resid.T).T
            logdet = 2.0 * np.sum(np.log(np.diag(chol)))
        return -0.5 * (np.sum(white**2, axis=1) + logdet + n * np.log(2.0 * np.pi))
