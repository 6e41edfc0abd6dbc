"""Observation operators with Gaussian noise."""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator

from .._noise import GaussianNoise, cached_noise
from .._random import as_generator
from .._validation import check_array_finite

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
        callable receives the selected components of a whole ensemble, shape
        ``(..., n_selected)`` (e.g. ``(n_members, n_selected)``), and returns
        ``(..., n_obs)``, row by row and finite; it must work on numpy arrays (and on torch
        tensors for :class:`~dasim.assimilators.SDAAssimilator`, which differentiates
        through it). The estimators' ``fit`` checks the name (an unknown one is an error
        listing the valid names) and calls a callable once on a few training states to
        check this contract, before any cycle runs.
    noise_std : float, array of shape (n_obs,) or (n_obs, n_obs), default=1.0
        Observation noise: a standard deviation, one per observed component, or a full
        covariance matrix ``R``.
    indices : int, slice, sequence of int, bool mask or None, default=None
        The state components that are observed (all when ``None``).
    scale : float, default=1.0
        Multiplies the selected components before the operator (``arctan(3 x)`` is
        ``ObservationModel("arctan", scale=3.0)``).
    coordinates : Coordinates, array-like of shape (n_obs, n_dims) or None, default=None
        Where each observation sits, for localised filters (see
        :mod:`dasim.coordinates`): a :class:`~dasim.coordinates.Coordinates` object in the
        space of the filter's state coordinates, or positions as an array (placed in that
        space). ``None`` puts each observation at the location of the state component it
        observes (``indices``); a callable operator then has no location and needs
        explicit coordinates to be localised.

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

    def __init__(
        self, operator="identity", noise_std=1.0, indices=None, scale=1.0, coordinates=None
    ):
        self.operator = operator
        self.noise_std = noise_std
        self.indices = indices
        self.scale = scale
        self.coordinates = coordinates

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

    def _check_operator(self):
        """Check ``operator``: a built-in name or a callable."""
        op = self.operator
        if callable(op) or (isinstance(op, str) and op in OPERATORS):
            return
        if isinstance(op, str):
            raise ValueError(
                f"operator={op!r} is not a built-in observation operator; the valid names are "
                f"{', '.join(map(repr, sorted(OPERATORS)))}, or pass a callable."
            )
        raise TypeError(
            f"operator must be one of {', '.join(map(repr, sorted(OPERATORS)))} or a "
            f"callable, got {op!r}."
        )

    def _op(self):
        self._check_operator()
        op = self.operator
        if callable(op):
            return lambda x, xp: op(x)
        return OPERATORS[op]

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
            State dimension. A callable operator is called once on a zero state to
            find the width of its output.

        Returns
        -------
        int
            Width of ``apply``'s output.
        """
        self._check_operator()
        if callable(self.operator):
            return int(self.apply(np.zeros((1, n_state))).shape[-1])
        return int(self.selected(n_state).size)

    def validate(self, n_state, states=None, data="X", lead_ndim=1):
        """Check every parameter against a state dimension; return the number of outputs.

        Called by the estimators' ``fit`` before any cycle runs: the operator name,
        ``scale``, ``indices`` (against ``n_state``) and ``noise_std`` (against the number
        of outputs). A callable operator is called (twice, the second time with the
        members in reverse order) on a few rows of ``states``, arranged with ``lead_ndim``
        leading axes as the estimator will call it; it must return a finite array with
        the same leading shape, computed row by row.

        Parameters
        ----------
        n_state : int
            The state dimension.
        states : array-like of shape (..., n_state), optional
            The user's own states to probe a callable operator on (zeros by default).
        data : str, default="X"
            What ``states`` are called in error messages.
        lead_ndim : {1, 2}, default=1
            Number of leading axes the estimator calls the operator with.

        Returns
        -------
        int
            The number of observed components ``n_obs``.
        """
        self._check_operator()
        self._check_scale()
        idx = self.selected(n_state)
        if callable(self.operator):
            rows = (
                np.zeros((1, n_state))
                if states is None
                else np.asarray(states, dtype=np.float64).reshape(-1, n_state)
            )
            p = probe_size(n_state, idx.size)
            if lead_ndim == 1:
                probe = np.resize(rows, (p, n_state))
            else:
                probe = np.resize(rows, (2 * p, n_state)).reshape(2, p, n_state)
            n_obs = self._probe_callable(probe, idx, data)
        else:
            n_obs = int(idx.size)
        self.noise_model(n_obs)
        return n_obs

    def _probe_callable(self, probe, idx, data):
        op = self.operator
        name = "the callable observation operator (operator={}) ".format(
            getattr(op, "__qualname__", None) or type(op).__name__
        )
        sel = self._check_scale() * probe[..., idx]
        lead = probe.shape[:-1]
        what = (
            f"{lead[0]} states of {data}"
            if len(lead) == 1
            else f"{int(np.prod(lead))} states of {data} arranged as {lead}"
        )
        contract = (
            "A callable observation operator must map an array of shape (n_members, "
            "n_selected), the observed state components of every member at once (any "
            "leading axes), to (n_members, n_obs), row by row: it is called with the whole "
            "ensemble, not once per member."
        )
        seen = f"called on {what}, an array of shape {sel.shape}"

        def call(x):
            try:
                with np.errstate(all="ignore"):
                    return np.asarray(op(x), dtype=np.float64)
            except Exception as exc:
                raise ValueError(
                    f"{name}failed when {seen}: {type(exc).__name__}: "
                    f"{str(exc).rstrip('.')}. {contract}"
                ) from exc

        out = call(sel)
        if out.ndim != sel.ndim or out.shape[:-1] != sel.shape[:-1] or out.shape[-1] == 0:
            expected = "(" + ", ".join([*map(str, sel.shape[:-1]), "n_obs"]) + ")"
            raise ValueError(
                f"{name}returned shape {out.shape} when {seen}; expected {expected}. {contract}"
            )
        if not np.all(np.isfinite(out)):
            raise ValueError(
                f"{name}returned non-finite values (NaN or inf) when {seen}; it "
                "must return finite observations for the states it will see."
            )
        flipped = call(sel[::-1])
        tol = 1e-5 * max(1.0, float(np.max(np.abs(out))))
        if flipped.shape != out.shape or not np.allclose(flipped[::-1], out, rtol=1e-5, atol=tol):
            raise ValueError(
                f"{name}is not applied row by row: when {seen}, the output for a "
                f"member changed with the order of the members. {contract}"
            )
        return int(out.shape[-1])

    def noise_model(self, n_obs):
        """The observation noise as a :class:`GaussianNoise` (from ``noise_std``).

        Parameters
        ----------
        n_obs : int
            Number of observed components.

        Returns
        -------
        GaussianNoise
            The noise ``N(0, R)``; its Cholesky factor is computed once.
        """
        return cached_noise(self, self.noise_std, n_obs, _resolve_noise_std)

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
        return self.noise_model(n_obs).covariance

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
        predicted = np.asarray(predicted, dtype=np.float64)
        noise = self.noise_model(predicted.shape[-1])
        z = as_generator(random_state).standard_normal(predicted.shape)
        return predicted + noise.colour(z)

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
        return self.noise_model(y.shape[-1]).log_likelihood(y, predicted)


def _resolve_noise_std(noise_std, n_obs):
    return GaussianNoise.from_spec(noise_std, n_obs, "noise_std")


def probe_size(n_state, n_selected):
    """A small ensemble size that differs from the state and selection widths.

    A callable that confuses members with components then gives a wrong shape rather than
    a silent transpose.
    """
    return next(p for p in (2, 3, 4) if p not in (n_state, n_selected))
