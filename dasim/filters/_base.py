"""The sequential-filter base shared by EnKF, SIRFilter and KDEDiffusionFilter.

One cycle is: forecast the ensemble with the model (model noise included), compute the
observation log-likelihood of every member (for the log-evidence and the weights), then
the method's analysis. NaN observations are skipped entry-wise; an all-NaN row is a
forecast-only cycle. Diagnostics are collected per cycle and returned with the ensembles
as an :class:`xarray.Dataset`.
"""

from __future__ import annotations

import copy
import numbers

import numpy as np
import xarray as xr
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data
from tqdm.auto import tqdm

from .._math import logsumexp
from .._threads import pinned_blas
from .._validation import check_array_finite, check_n_members, check_noise
from ..models import DynamicalModel, Persistence, as_model
from ..models._base import _as_generator
from ..observations import ObservationModel

__all__ = ["SequentialFilter"]


class SequentialFilter(BaseEstimator):
    """Base class of the sequential ensemble filters.

    Subclasses implement :meth:`_analysis` and :meth:`_check_params`; everything else
    (fit, assimilate, sample, score, NaN handling, diagnostics, output) lives here.
    Not meant to be instantiated.
    """

    #: Names of per-cycle diagnostics a subclass returns from ``_analysis``.
    _diagnostics = ()
    #: Whether the filter carries importance weights between cycles.
    _weighted = False
    #: Whether the analysis or the evidence uses the members' log-likelihoods.
    _needs_loglik = True

    # ------------------------------------------------------------------ subclass hooks
    def _check_params(self):
        """Validate the method's own parameters (called by ``fit``)."""

    def _analysis(self, forecast, y, predicted, loglik, log_weights, rng):
        """One analysis.

        Parameters
        ----------
        forecast : ndarray (n_members, n_state)
            Forecast ensemble.
        y : ndarray (n_obs,)
            Observation with NaN for unobserved entries (never all-NaN).
        predicted : ndarray (n_members, n_obs)
            Noise-free predicted observations ``h(forecast_i)``.
        loglik : ndarray (n_members,) or None
            ``log p(y | forecast_i)`` under the observation model (None when the
            class sets ``_needs_loglik = False``).
        log_weights : ndarray (n_members,) or None
            Normalised log-weights carried from the previous cycle (weighted filters).
        rng : numpy.random.Generator
            Random numbers.

        Returns
        -------
        analysis : ndarray (n_members, n_state)
        log_weights : ndarray (n_members,) or None
        diagnostics : dict of float
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ scikit-learn API
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        tags.non_deterministic = False
        return tags

    def _validate_common(self):
        check_n_members(self.n_members)
        rs = self.random_state
        if not (rs is None or isinstance(rs, numbers.Integral | np.random.RandomState)) or (
            isinstance(rs, bool)
        ):
            raise TypeError(f"random_state must be None, an int or a RandomState, got {rs!r}.")
        if self.model is not None and not (
            isinstance(self.model, DynamicalModel) or callable(self.model)
        ):
            raise TypeError(
                f"model must be a dasim DynamicalModel, a callable or None, got {self.model!r}."
            )
        if self.observation is not None and not isinstance(self.observation, ObservationModel):
            raise TypeError(
                f"observation must be an ObservationModel or None, got {self.observation!r}."
            )

    @pinned_blas
    def fit(self, X, y=None):
        """Learn the climatological prior (and any noise levels left to be learned).

        Parameters
        ----------
        X : array-like of shape (n_times, n_state)
            States in time order (a training trajectory). No NaN or inf.
        y : array-like of shape (n_times, n_obs) or (n_times,), optional
            Observations row-aligned with ``X`` (NaN where unobserved). Used only when
            ``observation=None``, to learn the identity operator's noise from ``y - X``.

        Returns
        -------
        self : object
            The fitted filter.
        """
        self._validate_common()
        self._check_params()
        X = _named_validation("X", validate_data, self, X, dtype=np.float64, ensure_min_samples=2)
        if y is not None:
            y = self._as_2d_obs(check_array_finite(y, "y", ndim=(1, 2), allow_nan=True), "y")
            if y.shape[0] != X.shape[0]:
                raise ValueError(
                    f"X and y must have the same number of rows, got {X.shape[0]} and "
                    f"{y.shape[0]}."
                )
        n_state = X.shape[1]

        # The dynamical model: given, or a persistence model learned from increments.
        if self.model is None:
            incr = np.diff(X, axis=0)
            q = np.sqrt(np.mean(incr**2, axis=0))
            self.model_ = Persistence(process_noise=q)
        else:
            self.model_ = copy.deepcopy(as_model(self.model))
            if self.model_.n_state is not None and self.model_.n_state != n_state:
                raise ValueError(
                    f"X has {n_state} state components but the model has "
                    f"n_state={self.model_.n_state}."
                )

        # The observation model: given, or the identity with noise learned from y - X.
        if self.observation is None:
            n_obs = n_state if y is None else y.shape[1]
            if n_obs > n_state:
                raise ValueError(
                    f"y has {n_obs} columns but X has only {n_state}; with observation=None "
                    "the identity observes the first y.shape[1] state components."
                )
            if y is None:
                noise = np.std(X[:, :n_obs], axis=0)
            else:
                with np.errstate(invalid="ignore"):
                    noise = np.sqrt(np.nanmean((y - X[:, :n_obs]) ** 2, axis=0))
            if not np.all(np.isfinite(noise)) or np.any(noise <= 0):
                raise ValueError(
                    "Cannot learn the observation noise from the training data (a component "
                    "has zero or undefined spread); pass observation=ObservationModel(...)."
                )
            self.observation_ = ObservationModel(
                "identity", noise_std=noise, indices=np.arange(n_obs)
            )
        else:
            self.observation_ = copy.deepcopy(self.observation)
        self.n_obs_ = self.observation_.n_obs(n_state)
        self.observation_.noise_cov(self.n_obs_)  # validates noise_std against n_obs
        if y is not None and y.shape[1] != self.n_obs_:
            raise ValueError(
                f"y has {y.shape[1]} columns but the observation operator gives {self.n_obs_}."
            )

        # Climatological prior: a Gaussian KDE of the training states (Scott's rule).
        self.climatology_ = X.copy()
        cov = np.atleast_2d(np.cov(X, rowvar=False))
        evals, evecs = np.linalg.eigh(cov)
        factor = X.shape[0] ** (-1.0 / (n_state + 4))
        self.climatology_kernel_ = factor * evecs * np.sqrt(np.clip(evals, 0.0, None))
        return self

    @pinned_blas
    def sample(self, n_samples=1, *, random_state=None):
        """Draw states from the fitted climatological prior.

        The prior is a Gaussian kernel density estimate of the training states (Scott's
        bandwidth factor times their covariance), as :class:`sklearn.neighbors.
        KernelDensity` would give; it is the default initial ensemble of
        :meth:`assimilate`.

        Parameters
        ----------
        n_samples : int, default=1
            Number of states.
        random_state : int, RandomState, numpy.random.Generator or None
            Seed; ``None`` uses the estimator's ``random_state``.

        Returns
        -------
        ndarray of shape (n_samples, n_state)
            Draws from the prior.
        """
        check_is_fitted(self)
        if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral):
            raise TypeError(f"n_samples must be an integer, got {n_samples!r}.")
        if n_samples < 1:
            raise ValueError(f"n_samples must be at least 1, got {n_samples}.")
        rng = self._rng(random_state)
        return self._sample(int(n_samples), rng)

    def _sample(self, n, rng):
        base = self.climatology_[rng.integers(0, self.climatology_.shape[0], size=n)]
        z = rng.standard_normal(base.shape)
        return base + z @ self.climatology_kernel_.T

    @pinned_blas
    def assimilate(
        self, y, *, initial_ensemble=None, random_state=None, keep_forecast=True, progress=False
    ):
        """Run the filter over an observation sequence.

        The initial ensemble stands one cycle before the first row of ``y``: every cycle
        forecasts, then analyses (a row of NaN is a forecast-only cycle).

        Parameters
        ----------
        y : array-like of shape (n_times, n_obs) or (n_times,)
            Observations, NaN where unobserved. A pandas DataFrame or xarray DataArray
            lends its index / first coordinate to the output's ``time``.
        initial_ensemble : array-like of shape (n_members, n_state), optional
            The starting ensemble; ``n_members`` draws from :meth:`sample` by default.
        random_state : int, RandomState, numpy.random.Generator or None
            Seed; ``None`` uses the estimator's ``random_state``.
        keep_forecast : bool, default=True
            Whether to return the forecast ensembles (set False to halve memory).
        progress : bool, default=False
            Show a tqdm progress bar over the cycles.

        Returns
        -------
        xarray.Dataset
            ``analysis`` and ``forecast`` with dims ``(time, member, state)``, ``weights``
            ``(time, member)`` for weighted filters, ``log_evidence`` (the per-cycle
            ``log p(y_k | y_{1:k-1})`` estimated from the forecast ensemble), the
            method's per-cycle diagnostics, and the parameters in ``attrs``.
        """
        check_is_fitted(self)
        time = _time_coordinate(y)
        y = self._check_obs(y)
        rng = self._rng(random_state)
        init = self._initial(initial_ensemble, rng)
        out = self._run(y, init, rng, keep_forecast=keep_forecast, progress=progress)
        return self._to_dataset(out, time)

    @pinned_blas
    def score(self, X, y):
        """Negative time-mean CRPS of the analysis ensembles against the true states.

        Runs :meth:`assimilate` on ``y`` from the climatological prior with the
        estimator's ``random_state``; the same definition for every dasim estimator, so
        ``GridSearchCV`` ranks methods alike.

        Parameters
        ----------
        X : array-like of shape (n_times, n_state)
            True states, row-aligned with ``y``.
        y : array-like of shape (n_times, n_obs) or (n_times,)
            Observations.

        Returns
        -------
        float
            ``-mean_t CRPS_t`` (greater is better).
        """
        X, y = _score_inputs(self, X, y, self._check_obs)
        rng = self._rng(None)
        out = self._run(y, self._initial(None, rng), rng, keep_forecast=False)
        return _neg_crps(X, out["analysis"], out.get("weights"))

    # ------------------------------------------------------------------ internals
    def _rng(self, random_state):
        rs = self.random_state if random_state is None else random_state
        if isinstance(rs, np.random.Generator):
            return rs
        if isinstance(rs, numbers.Integral) and not isinstance(rs, bool):
            return np.random.default_rng(int(rs))
        return _as_generator(check_random_state(rs))

    @property
    def _n_members(self):
        return self.n_members

    def _initial(self, initial_ensemble, rng):
        if initial_ensemble is None:
            return self._sample(check_n_members(self._n_members), rng)
        init = check_array_finite(initial_ensemble, "initial_ensemble", ndim=2, copy=True)
        if init.shape[1] != self.n_features_in_:
            raise ValueError(
                f"initial_ensemble has {init.shape[1]} state components, the filter was "
                f"fitted on {self.n_features_in_}."
            )
        check_n_members(init.shape[0], "initial_ensemble's number of members")
        return init

    @staticmethod
    def _as_2d_obs(y, name):
        y = np.asarray(y, dtype=np.float64)
        if y.ndim == 1:
            y = y[:, None]
        if y.ndim != 2:
            raise ValueError(f"{name} must be 1-D or 2-D, got shape {y.shape}.")
        return y

    def _check_obs(self, y):
        y = check_array_finite(y, "y", ndim=(1, 2), allow_nan=True)
        y = self._as_2d_obs(y, "y")
        if y.shape[1] != self.n_obs_:
            raise ValueError(
                f"y has {y.shape[1]} columns but the observation operator gives {self.n_obs_}."
            )
        return y

    def _run(self, y, ensemble, rng, *, keep_forecast=True, progress=False):
        n_times = y.shape[0]
        n_members, n_state = ensemble.shape
        analysis = np.empty((n_times, n_members, n_state))
        forecast = np.empty_like(analysis) if keep_forecast else None
        log_weights = None
        all_weights = None
        if self._weighted:
            log_weights = np.full(n_members, -np.log(n_members))
            all_weights = np.empty((n_times, n_members))
        log_evidence = np.zeros(n_times)
        diags = {name: np.full(n_times, np.nan) for name in self._diagnostics}
        # Resolved once per run: the loop below must not re-validate the noise each cycle.
        self._noise_std, self._noise_cov = check_noise(
            self.observation_.noise_std, self.n_obs_, "noise_std"
        )
        self._start_run(n_members, n_state)
        model = self.model_
        model._check_params()
        noise = model._noise(n_state)
        cycles = tqdm(range(n_times), desc=type(self).__name__, disable=not progress)
        for k in cycles:
            if log_weights is not None:
                ensemble, log_weights = self._before_forecast(ensemble, log_weights, rng)
            try:
                ensemble = model._forecast_checked(ensemble, rng, noise)
            except ValueError as exc:
                raise ValueError(f"Forecast failed at cycle {k}: {exc}") from exc
            if keep_forecast:
                forecast[k] = ensemble
            yk = y[k]
            if not np.all(np.isnan(yk)):
                predicted = self.observation_.apply(ensemble)
                loglik = (
                    self.observation_._log_likelihood(
                        yk, predicted, self._noise_std, self._noise_cov
                    )
                    if self._needs_loglik
                    else None
                )
                log_evidence[k] = self._log_evidence(yk, predicted, loglik, log_weights)
                if not np.isfinite(log_evidence[k]):
                    raise ValueError(
                        f"Every member has zero likelihood at cycle {k}: the observation is "
                        "incompatible with the whole forecast ensemble."
                    )
                ensemble, log_weights, diag = self._analysis(
                    ensemble, yk, predicted, loglik, log_weights, rng
                )
                if not np.all(np.isfinite(ensemble)):
                    raise ValueError(f"The analysis produced non-finite states at cycle {k}.")
                for name, value in diag.items():
                    diags[name][k] = value
            analysis[k] = ensemble
            if all_weights is not None:
                all_weights[k] = np.exp(log_weights)
        out = {"analysis": analysis, "log_evidence": log_evidence, **diags}
        if keep_forecast:
            out["forecast"] = forecast
        if all_weights is not None:
            out["weights"] = all_weights
        return out

    def _log_evidence(self, y, predicted, loglik, log_weights):
        """Estimate ``log p(y_k | y_{1:k-1})`` from the forecast ensemble.

        The default is the Monte Carlo estimate ``log sum_i w_i p(y | x_i)`` (uniform
        weights when the filter carries none), unbiased in the evidence itself.
        """
        if log_weights is None:
            return logsumexp(loglik) - np.log(loglik.size)
        return logsumexp(loglik + log_weights)

    def _before_forecast(self, ensemble, log_weights, rng):
        """Hook for weighted filters, run before each forecast (e.g. resampling).

        Returns the ensemble to forecast and its log-weights; the default keeps both.
        """
        return ensemble, log_weights

    def _start_run(self, n_members, n_state):
        """Hook called before the first cycle (e.g. to precompute localisation)."""

    def _to_dataset(self, out, time):
        n_times, n_members, n_state = out["analysis"].shape
        dims3 = ("time", "member", "state")
        data = {"analysis": (dims3, out["analysis"])}
        if "forecast" in out:
            data["forecast"] = (dims3, out["forecast"])
        if "weights" in out:
            data["weights"] = (("time", "member"), out["weights"])
        data["log_evidence"] = (("time",), out["log_evidence"])
        for name in self._diagnostics:
            data[name] = (("time",), out[name])
        coords = {
            "time": np.arange(n_times) if time is None else time,
            "member": np.arange(n_members),
            "state": np.arange(n_state),
        }
        attrs = {"estimator": type(self).__name__}
        for key, value in self.get_params(deep=False).items():
            attrs[key] = _attr_value(value)
        return xr.Dataset(data, coords=coords, attrs=attrs)


def _score_inputs(estimator, X, y, check_obs):
    """Validate ``score``'s inputs before any work; shared by every dasim estimator.

    Checks that ``estimator`` is fitted, validates ``X`` against the fitted state width,
    requires ``y`` (checked by ``check_obs``) and matches the numbers of rows.
    """
    check_is_fitted(estimator)
    X = _named_validation("X", validate_data, estimator, X, reset=False, dtype=np.float64)
    if y is None:
        raise ValueError("score needs the observations y.")
    y = check_obs(y)
    if y.shape[0] != X.shape[0]:
        raise ValueError(
            f"X and y must have the same number of rows, got {X.shape[0]} and {y.shape[0]}."
        )
    return X, y


def _neg_crps(X, analysis, weights=None):
    """The default score of every dasim estimator: minus the time-mean CRPS."""
    from ..metrics import crps_ensemble

    return -float(np.mean(crps_ensemble(X, analysis, weights)))


def _named_validation(name, func, *args, **kwargs):
    """Call a scikit-learn validator, making sure its error names the argument."""
    try:
        return func(*args, **kwargs)
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        if name in msg.split():
            raise
        raise type(exc)(f"{name}: {msg}") from exc


def _attr_value(value):
    """Make a parameter value storable as a netCDF attribute."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, numbers.Number | str):
        return value
    return repr(value)


def _time_coordinate(y):
    """Index of a DataFrame / first coordinate of a DataArray, else None."""
    index = getattr(y, "index", None)
    if index is not None and not callable(index):
        return np.asarray(index)
    if isinstance(y, xr.DataArray) and y.dims and y.dims[0] in y.coords:
        return np.asarray(y.coords[y.dims[0]])
    return None
