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
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from .._inputs import (
    check_burn_in,
    check_model,
    neg_crps,
    observation_tags,
    score_inputs,
    time_coordinate,
    transposed_hint,
    validate_states,
)
from .._math import logsumexp
from .._provenance import attr_value, device_label, estimator_attrs, seeded_rng
from .._random import as_generator
from .._stats import scott_factor
from .._threads import pinned_blas
from .._validation import check_array_finite, check_n_members
from ..exceptions import AssimilationError
from ..models import DynamicalModel, Persistence, as_model
from ..observations import ObservationModel
from ._noise_mle import check_noise_param, fit_noise_mle
from ._params import _check_forecast_first
from ._params import fill_shared_doc as fill_shared_doc  # for the filters' modules

__all__ = ["SequentialFilter"]


@fill_shared_doc
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
    #: Whether ``_analysis`` revises earlier analyses (smoothers): during a run
    #: ``self._past`` is then a view of the analyses of cycles ``0 .. k-1``.
    _revises_past = False

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
        return observation_tags(super().__sklearn_tags__())

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
        check_noise_param(self)  # noise and forecast_first

    @pinned_blas
    def fit(self, X, y=None):
        """Learn the climatological prior (and any noise levels left to be learned).

        %(fit_sections)s

        Notes
        -----
        Every parameter is checked here, before any cycle runs: the filter's own, the
        model's (``process_noise`` against the state dimension included) and the
        observation model's (operator name, ``indices``, ``noise_std``). A model without a
        fixed ``n_state`` (a callable, a :class:`~dasim.models.FunctionModel`) and a
        callable observation operator are each called once on a few rows of ``X`` to
        check that they take a whole ensemble ``(n_members, n_state)`` and return the
        right shape (and, for the operator, finite values).
        """
        self._validate_common()
        self._check_params()
        labels = time_coordinate(X if y is None else y)  # for a time-dependent model
        X = validate_states(self, X, ensure_min_samples=2)
        if y is not None:
            y = self._as_2d_obs(check_array_finite(y, "y", ndim=(1, 2), allow_nan=True), "y")
            if y.shape[0] != X.shape[0]:
                raise ValueError(
                    f"X and y must have the same number of rows, got {X.shape[0]} and "
                    f"{y.shape[0]}.{transposed_hint(X)}"
                )
        n_state = X.shape[1]

        # The dynamical model: given, or a persistence model learned from increments.
        if self.model is None:
            incr = np.diff(X, axis=0)
            q = np.sqrt(np.mean(incr**2, axis=0))
            self.model_ = Persistence(process_noise=q)
        else:
            self.model_ = copy.deepcopy(as_model(self.model))
            check_model(self.model_, X)

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
        # Every observation parameter checked against n_state; a callable probed on X.
        try:
            self.n_obs_ = self.observation_.validate(n_state, X)
        except ValueError as exc:
            hint = transposed_hint(X)
            if not hint:
                raise
            raise ValueError(f"{str(exc).rstrip('.')}.{hint}") from exc
        if y is not None and y.shape[1] != self.n_obs_:
            raise ValueError(
                f"y has {y.shape[1]} columns (shape {y.shape}) but the observation operator "
                f"gives {self.n_obs_}: y must have shape (n_times, {self.n_obs_})."
            )

        # Climatological prior: a Gaussian KDE of the training states (Scott's rule).
        self.climatology_ = X.copy()
        cov = np.atleast_2d(np.cov(X, rowvar=False))
        evals, evecs = np.linalg.eigh(cov)
        factor = scott_factor(X.shape[0], n_state)
        self.climatology_kernel_ = factor * evecs * np.sqrt(np.clip(evals, 0.0, None))
        if getattr(self, "noise", "moments") == "mle":  # see _noise_mle.py
            fit_noise_mle(self, X if y is None else y, times=labels)
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
        %(assimilate_params)s
        keep_forecast : bool, default=True
            Whether to return the forecast ensembles (set False to halve memory).
        progress : bool, default=False
            Show a tqdm progress bar over the cycles.

        Returns
        -------
        xarray.Dataset
            ``analysis`` and ``forecast`` with dims ``(time, member, state)``, ``weights``
            ``(time, member)`` for weighted filters, ``log_evidence`` (the per-cycle
            ``log p(y_k | y_{1:k-1})`` estimated from the forecast ensemble; NaN at an
            unobserved cycle, a row of ``y`` that is all NaN), the method's per-cycle
            diagnostics, and in ``attrs`` how the result was made: the parameters at
            their resolved values (``model`` and ``observation`` as fitted, ``n_members``
            of the ensemble used, ``<name>_requested`` where that differs from the
            constructor's value), ``random_state`` (the seed used) and ``seed_source``,
            ``device``, ``initial_ensemble``, ``dasim_version`` and ``numpy_version``;
            every value a str, int or float, so the Dataset writes to netCDF.

        Raises
        ------
        dasim.exceptions.AssimilationError
            If the run fails at cycle ``k``: the model or the observation operator raises
            or returns non-finite values, every member has zero likelihood, or the
            analysis fails. The message names the cycle; the exception's ``partial`` is
            the Dataset above for cycles ``0 .. k-1`` (what a run on ``y[:k]`` returns)
            and its ``cycle`` is ``k``, so a long run is not lost. It is a
            ``ValueError``.
        """
        check_is_fitted(self)
        for name, flag in (("keep_forecast", keep_forecast), ("progress", progress)):
            if not isinstance(flag, bool | np.bool_):
                raise TypeError(f"{name} must be a bool, got {flag!r}.")
        time = time_coordinate(y)
        y = self._check_obs(y)
        rng, seed, seed_source = seeded_rng(random_state, self.random_state)
        init = self._initial(initial_ensemble, rng)
        run = {
            "seed": seed,
            "seed_source": seed_source,
            "n_members": init.shape[0],
            "initial_ensemble": "drawn from the climatological prior (sample)"
            if initial_ensemble is None
            else "given",
        }

        def partial(out, k):  # the Dataset of cycles 0 .. k-1, for AssimilationError
            return self._to_dataset(out, None if time is None else time[:k], run=run)

        out = self._run(
            y,
            init,
            rng,
            keep_forecast=keep_forecast,
            progress=progress,
            partial=partial,
            times=time,
        )
        return self._to_dataset(out, time, run=run)

    @pinned_blas
    def score(self, X, y, *, burn_in=0):
        """Negative time-mean CRPS of the analysis ensembles against the true states.

        Runs :meth:`assimilate` on ``y`` from the climatological prior with the
        estimator's ``random_state``; the same definition for every dasim estimator, so
        ``GridSearchCV`` ranks methods alike. Every cycle after the burn-in counts, an
        unobserved one too (its analysis is the forecast).

        %(score_sections)s
        """
        time = time_coordinate(y)  # the labels a time-dependent model sees
        X, y = score_inputs(self, X, y, self._check_obs)
        burn_in = check_burn_in(burn_in, y.shape[0])
        rng = self._rng(None)
        out = self._run(y, self._initial(None, rng), rng, keep_forecast=False, times=time)
        return neg_crps(X, out["analysis"], out.get("weights"), burn_in=burn_in)

    # ------------------------------------------------------------------ internals
    def _rng(self, random_state):
        rs = self.random_state if random_state is None else random_state
        if isinstance(rs, numbers.Integral) and not isinstance(rs, bool):
            rs = np.random.SeedSequence(int(rs))  # default_rng(rs)'s stream
        elif rs is None:
            rs = check_random_state(None)  # numpy's global RandomState, as scikit-learn
        return as_generator(rs)

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
                f"y has {y.shape[1]} columns (shape {y.shape}) but the observation operator "
                f"gives {self.n_obs_}: y must have shape (n_times, {self.n_obs_})."
            )
        return y

    def _run(
        self, y, ensemble, rng, *, keep_forecast=True, progress=False, partial=None, times=None
    ):
        # times: the row labels passed to a time-dependent model (None: the row index).
        n_times = y.shape[0]
        n_members, n_state = ensemble.shape
        analysis = np.empty((n_times, n_members, n_state))
        forecast = np.empty_like(analysis) if keep_forecast else None
        log_weights = None
        all_weights = None
        if self._weighted:
            log_weights = np.full(n_members, -np.log(n_members))
            all_weights = np.empty((n_times, n_members))
        log_evidence = np.full(n_times, np.nan)  # NaN: an unobserved cycle has no evidence
        diags = {name: np.full(n_times, np.nan) for name in self._diagnostics}
        # Resolved once per run: the loop below must not re-validate the noise each cycle.
        self._obs_noise = self.observation_.noise_model(self.n_obs_)
        self._start_run(n_members, n_state)
        model = self.model_
        model.validate(n_state)
        # forecast_first=False: the initial ensemble is the prior at the time of y[0].
        first = 0 if _check_forecast_first(getattr(self, "forecast_first", True)) else 1

        def collect(n):
            """The output arrays of cycles 0 .. n-1."""
            out = {"analysis": analysis[:n], "log_evidence": log_evidence[:n]}
            out.update({name: values[:n] for name, values in diags.items()})
            if keep_forecast:
                out["forecast"] = forecast[:n]
            if all_weights is not None:
                out["weights"] = all_weights[:n]
            return out

        def failure(k, message):
            """An AssimilationError for cycle k carrying the result of cycles 0 .. k-1."""
            ds = None
            if partial is not None:
                try:  # copies: the partial result must not pin the full-length arrays
                    ds = partial({key: v.copy() for key, v in collect(k).items()}, k)
                except Exception:  # never hide the original failure
                    ds = None
            kept = f"the {k} cycle(s) before it are kept in the exception's .partial Dataset"
            return AssimilationError(f"{message.rstrip('.')}; {kept}.", cycle=k, partial=ds)

        cycles = tqdm(range(n_times), desc=type(self).__name__, disable=not progress)
        for k in cycles:
            if self._revises_past:
                self._past = analysis[:k]
            if k >= first:
                if log_weights is not None:
                    ensemble, log_weights = self._before_forecast(ensemble, log_weights, rng)
                try:
                    ensemble = model.forecast(
                        ensemble,
                        rng,
                        time=k if times is None else times[k],
                        check_input=False,
                    )
                except Exception as exc:
                    raise failure(k, f"Forecast failed at cycle {k}: {_describe(exc)}") from exc
            if keep_forecast:
                forecast[k] = ensemble
            yk = y[k]
            if not np.all(np.isnan(yk)):
                try:
                    predicted = self.observation_.apply(ensemble)
                except Exception as exc:
                    raise failure(
                        k, f"The observation operator failed at cycle {k}: {_describe(exc)}"
                    ) from exc
                if not np.all(np.isfinite(predicted[:, ~np.isnan(yk)])):
                    raise failure(
                        k,
                        f"The observation operator returned non-finite values at cycle {k} "
                        "for some forecast members",
                    )
                loglik = (
                    self._obs_noise.log_likelihood(yk, predicted) if self._needs_loglik else None
                )
                log_evidence[k] = self._log_evidence(yk, predicted, loglik, log_weights)
                if not np.isfinite(log_evidence[k]):
                    raise failure(
                        k,
                        f"Every member has zero likelihood at cycle {k}: the observation is "
                        "incompatible with the whole forecast ensemble",
                    )
                try:
                    ensemble, log_weights, diag = self._analysis(
                        ensemble, yk, predicted, loglik, log_weights, rng
                    )
                except ValueError as exc:  # LinAlgError included
                    raise failure(k, f"The analysis failed at cycle {k}: {exc}") from exc
                if not np.all(np.isfinite(ensemble)):
                    raise failure(k, f"The analysis produced non-finite states at cycle {k}")
                for name, value in diag.items():
                    diags[name][k] = value
            analysis[k] = ensemble
            if all_weights is not None:
                all_weights[k] = np.exp(log_weights)
        return collect(n_times)

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

    def _to_dataset(self, out, time, run=None):
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
        return xr.Dataset(data, coords=coords, attrs=self._provenance(run, n_members))

    def _provenance(self, run, n_members):
        """The ``attrs`` of a result: how it was made (see :mod:`dasim._provenance`).

        ``run`` holds what ``assimilate`` resolved (``seed``, ``seed_source``,
        ``initial_ensemble``); without it (a caller that does not pass it) the seed is
        recorded as the estimator's ``random_state`` with a source that says so.
        """
        run = {} if run is None else run
        seed = run.get("seed")
        if seed is None:
            seed = attr_value(self.random_state)
        attrs = estimator_attrs(
            self,
            seed=seed,
            seed_source=run.get("seed_source", "not recorded: the estimator's random_state"),
            device=device_label(getattr(self, "device_", "numpy")),
            # the ensemble run (a smoother may return another number of trajectories)
            overrides={"n_members": run.get("n_members", n_members)},
        )
        if "initial_ensemble" in run:
            attrs["initial_ensemble"] = run["initial_ensemble"]
        return attrs


def _describe(exc):
    """``exc``'s message, prefixed by its type unless it is a plain ValueError."""
    return str(exc) if type(exc) is ValueError else f"{type(exc).__name__}: {exc}"
