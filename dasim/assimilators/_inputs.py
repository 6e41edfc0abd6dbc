"""Input checks of the learned assimilators: parameters, training data, observation
models, observations ``y`` and the check that ``y`` is in the units of the training
states."""

from __future__ import annotations

import numbers
import warnings

import numpy as np
from sklearn.base import clone
from sklearn.utils.validation import validate_data

from .._inputs import check_states_finite, named_validation, validate_states
from .._validation import check_array_finite
from ..exceptions import UnitsWarning
from ..observations import ObservationModel


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_float(value, name, *, minimum=0.0, strict=True, maximum=None, strict_max=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}.")
    value = float(value)
    low_bad = value <= minimum if strict else value < minimum
    high_bad = maximum is not None and (value >= maximum if strict_max else value > maximum)
    if not np.isfinite(value) or low_bad or high_bad:
        bounds = f"{'>' if strict else '>='} {minimum}"
        if maximum is not None:
            bounds += f" and {'<' if strict_max else '<='} {maximum}"
        raise ValueError(f"{name} must be finite and {bounds}, got {value!r}.")
    return value


#: Units check: a column of ``y`` whose root-mean-square distance from the training mean
#: of ``h``, in units of ``sqrt(obs_scale_**2 + noise_std**2)``, exceeds this (about 1 for
#: observations of the training climatology) gets a warning if most of its values also
#: lie outside the training range of ``h``.
_UNITS_TOLERANCE = 3.0


class _ObservationInputs:
    """Input checks of :class:`~dasim.assimilators._base.WindowedAssimilator` (a mixin).

    Training data, observation models, observations ``y`` and the units of ``y``; the
    methods hold no state of their own and work on the estimator's parameters and fitted
    attributes.
    """

    # ------------------------------------------------------------------ validation
    def _validate_training_data(self, X, y):
        X_arr = np.asarray(X) if not hasattr(X, "toarray") else X
        if getattr(X_arr, "ndim", 2) == 3:
            try:
                X3 = np.asarray(X_arr, dtype=np.float64)
            except (TypeError, ValueError):
                X3 = None  # check_array_finite below says what is wrong
            if X3 is not None:
                check_states_finite(X3)
            X = check_array_finite(X, "X", ndim=3)
            self.n_features_in_ = X.shape[-1]
            if y is not None:
                y = check_array_finite(y, "y", ndim=(2, 3), allow_nan=True)
                if y.ndim == 2:
                    y = y[..., None]
                if y.shape[:2] != X.shape[:2]:
                    raise ValueError(
                        f"y must have shape (n_trajectories, n_times, n_obs) matching X "
                        f"{X.shape[:2]}, got {y.shape}."
                    )
            return X, y
        if y is None:
            X = validate_states(self, X)
        else:
            X, y = named_validation(
                "X",
                validate_data,
                self,
                X,
                y,
                validate_separately=(
                    {"dtype": np.float64, "ensure_all_finite": False},
                    {"dtype": np.float64, "ensure_2d": False, "ensure_all_finite": "allow-nan"},
                ),
            )
            check_states_finite(X)
            y = np.asarray(y, dtype=np.float64)
            if y.ndim == 1:
                y = y[:, None]
            if y.ndim != 2 or y.shape[0] != X.shape[0]:
                raise ValueError(
                    f"y must have shape (n_times, n_obs) with n_times = {X.shape[0]} (the rows "
                    f"of X), got {y.shape}."
                )
            if np.isinf(y).any():
                raise ValueError("y contains inf.")
            y = y[None]
        return X[None], y

    def _observation_list(self):
        obs = self.observation
        if obs is None:
            return None
        if isinstance(obs, ObservationModel):
            return [obs]
        if self._multi_source and isinstance(obs, list | tuple) and len(obs) > 0:
            if all(isinstance(o, ObservationModel) for o in obs):
                return list(obs)
        kind = (
            "an ObservationModel, a non-empty list of them"
            if self._multi_source
            else ("an ObservationModel")
        )
        raise TypeError(f"observation must be {kind} or None, got {obs!r}.")

    def _resolve_observation(self, X, y):
        """Set ``observations_`` (list), ``n_obs_`` and ``obs_std_`` from the parameters."""
        n_state = X.shape[-1]
        given = self._observation_list()
        if given is None:
            n_obs = n_state if y is None else y.shape[-1]
            if n_obs > n_state:
                raise ValueError(
                    f"y has {n_obs} columns but X has only {n_state}; with observation=None "
                    "the identity observes the first y.shape[-1] state components."
                )
            states = X[..., :n_obs].reshape(-1, n_obs)
            if y is None:
                noise = np.std(states, axis=0)
            else:
                with np.errstate(invalid="ignore"):
                    noise = np.sqrt(np.nanmean((y.reshape(-1, n_obs) - states) ** 2, axis=0))
            if not np.all(np.isfinite(noise)) or np.any(noise <= 0):
                raise ValueError(
                    "Cannot learn the observation noise from the training data (a component "
                    "has zero or undefined spread); pass observation=ObservationModel(...)."
                )
            observations = [
                ObservationModel("identity", noise_std=noise, indices=np.arange(n_obs))
            ]
        else:
            observations = [clone(o, safe=False) for o in given]
        stds, widths = [], []
        for j, obs in enumerate(observations):
            # Every parameter checked against n_state; a callable probed on states of X,
            # arranged (n_members, n_times, n_state) as the sampler calls it.
            n = obs.validate(n_state, X, data="X", lead_ndim=2)
            noise = obs.noise_model(n)
            if not noise.is_diagonal:
                raise ValueError(
                    f"observation[{j}].noise_std: {type(self).__name__} needs independent "
                    "(diagonal) observation noise, got a full covariance matrix."
                )
            stds.append(noise.std)
            widths.append(n)
        self.observations_ = observations
        self.observation_ = observations[0] if len(observations) == 1 else observations
        self.obs_widths_ = np.array(widths)
        self.n_obs_ = int(sum(widths))
        self.obs_std_ = np.concatenate(stds)
        if y is not None and y.shape[-1] != self.n_obs_:
            raise ValueError(
                f"y has {y.shape[-1]} columns but the observation operator(s) give {self.n_obs_}."
            )

    def _check_obs(self, y):
        y = check_array_finite(y, "y", ndim=(1, 2), allow_nan=True)
        if y.ndim == 1:
            y = y[:, None]
        if y.shape[1] != self.n_obs_:
            raise ValueError(
                f"y has {y.shape[1]} columns but the observation operator(s) give "
                f"{self.n_obs_} (observation={self.observation!r})."
            )
        size = 2 * int(self.window) + 1
        if y.shape[0] < size:
            raise ValueError(
                f"y has {y.shape[0]} rows (times), fewer than one window of 2 * window + 1 = "
                f"{size} states."
            )
        return y

    def _fit_obs_stats(self, X):
        """Set ``obs_mean_`` and ``obs_scale_`` (and the range) of ``h`` over the states ``X``."""
        h = np.asarray(self._predict_obs(X), dtype=np.float64).reshape(-1, self.n_obs_)
        h = np.where(np.isfinite(h), h, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a column never finite
            mean, scale = np.nanmean(h, axis=0), np.nanstd(h, axis=0)
            low, high = np.nanmin(h, axis=0), np.nanmax(h, axis=0)
        self.obs_mean_ = np.where(np.isfinite(mean), mean, 0.0)
        self.obs_scale_ = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        self._obs_range_ = np.stack([low, high])  # NaN where h was never finite

    def _check_units(self, y):
        """Warn when a column of ``y`` lies far from what ``h`` gives on the training states.

        ``z = (y - obs_mean_) / sqrt(obs_scale_**2 + noise_std**2)`` has a mean square of
        about 1 when ``y`` is drawn from the training climatology. A column gets a
        :class:`UnitsWarning` when the root mean square of ``z`` over its observed entries
        exceeds ``_UNITS_TOLERANCE`` *and* most of them lie outside the range of ``h``
        over the training states: a correct window can sit at an extreme of the
        climatology, but hardly beyond everything the training data held.
        """
        if not hasattr(self, "_obs_range_"):  # fitted by an older dasim
            return
        low, high = self._obs_range_
        z = (y - self.obs_mean_) / np.sqrt(self.obs_scale_**2 + self.obs_std_**2)
        observed = ~np.isnan(y)
        count = observed.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            rms = np.sqrt(np.nansum(z**2, axis=0) / count)
            outside = (observed & ((y < low) | (y > high))).sum(axis=0) / count
        bad = np.flatnonzero((count > 0) & (rms > _UNITS_TOLERANCE) & (outside > 0.5))
        if bad.size == 0:
            return
        j = int(bad[np.argmax(rms[bad])])
        warnings.warn(
            f"y looks like it is in other units than the training data: the observed values "
            f"of column {j} lie {rms[j]:.3g} standard deviations (root mean square) from the "
            f"mean {self.obs_mean_[j]:.3g} of the observation operator over the training "
            f"states (standard deviation {self.obs_scale_[j]:.3g}, noise "
            f"{self.obs_std_[j]:.3g}; {outside[j]:.0%} of them outside its training range "
            f"[{low[j]:.3g}, {high[j]:.3g}]), or the training data do not cover them. Give y "
            f"and the observation model in the units of the states {type(self).__name__} "
            "was fitted on; after a scaler in a Pipeline those are scaled units "
            "(dasim.compose.TransformedStateFilter keeps them physical).",
            UnitsWarning,
            stacklevel=4,
        )

    def _predict_obs(self, x):
        """Noise-free observations of physical states ``(..., n_state) -> (..., n_obs)``."""
        return np.concatenate([o.apply(x) for o in self.observations_], axis=-1)
