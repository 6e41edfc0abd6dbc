"""Noise levels learned from observations alone: maximum ensemble log-evidence.

``SequentialFilter(noise="mle").fit`` calls :func:`fit_noise_mle` once the model, the
observation model and the climatological prior are resolved. The levels left to be
learned (the standard deviations of the persistence model's increments when
``model=None``, of the identity observation's noise when ``observation=None``) are the
free parameters, one per component, optimised on the log scale.

The objective is the filter's own total log-evidence ``sum_k log p(y_k | y_{1:k-1})`` (the
``log_evidence`` that :meth:`~SequentialFilter.assimilate` returns) with the first
observed row's term left out: that term measures the arbitrary initial prior more than
the noise, and under a diffuse prior it is not defined; Durbin and Koopman's diffuse
likelihood and statsmodels' ``loglikelihood_burn`` leave it out likewise, so the maximum
is comparable with theirs. Every evaluation runs the filter from the same initial
ensemble with the same random numbers (common random numbers), so the objective is a
deterministic function of the parameters: smooth for the EnKF (whose evidence is the
Gaussian predictive density of the forecast ensemble), piecewise constant on a fine
scale for the particle filter (resampling), which the simplex search tolerates.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import minimize

from ..exceptions import WeightCollapseWarning

__all__ = ["check_noise_param", "fit_noise_mle"]

#: Largest move, in natural-log units, of a learned level away from its starting value
#: (a factor e^10 ~ 2e4 either way): keeps the search away from overflow.
_LOG_RANGE = 10.0
#: The objective's value where the filter fails (finite, so the simplex stays comparable).
_FAILED = 1e300
#: Nelder-Mead up to this many parameters, L-BFGS-B (finite differences) beyond.
_MAX_SIMPLEX_PARAMS = 6


def check_noise_param(estimator):
    """Validate ``noise`` and ``forecast_first`` before any work (called by ``fit``)."""
    from ._base import _check_forecast_first

    _check_forecast_first(getattr(estimator, "forecast_first", True))
    noise = getattr(estimator, "noise", "moments")
    if not isinstance(noise, str) or noise not in ("moments", "mle"):
        raise ValueError(f"noise must be 'moments' or 'mle', got {noise!r}.")
    if noise == "mle" and estimator.model is not None and estimator.observation is not None:
        raise ValueError(
            "noise='mle' learns the noise levels of model=None (the persistence model's "
            "increments) and of observation=None (the identity's noise); both the model "
            "and the observation model are given, so there is nothing to learn."
        )


def fit_noise_mle(estimator, y, times=None):
    """Maximise the filter's log-evidence of ``y`` over the noise levels left to learn.

    Parameters
    ----------
    estimator : SequentialFilter
        A filter whose ``fit`` has resolved ``model_``, ``observation_`` and the
        climatological prior. Its ``model_.process_noise`` (when ``model=None``) and
        ``observation_.noise_std`` (when ``observation=None``) are the starting values;
        they are replaced by the maximiser.
    y : ndarray of shape (n_times, n_obs)
        The observations (NaN where unobserved).
    times : array-like of shape (n_times,), optional
        Row labels passed to a time-dependent model (None: the row index).

    Returns
    -------
    estimator : SequentialFilter
        The same filter with ``process_noise_`` and/or ``noise_std_``, ``log_evidence_``
        and ``n_iter_`` set.
    """
    if y.shape[1] != estimator.n_obs_:
        raise ValueError(
            f"noise='mle' maximises the log-evidence of the observations, which have "
            f"{estimator.n_obs_} components; got {y.shape[1]} (with y=None, X is taken as the "
            "observations: pass y when X holds states)."
        )
    observed = np.flatnonzero(~np.all(np.isnan(y), axis=1))
    if observed.size < 3:
        raise ValueError(f"noise='mle' needs at least 3 observed rows, got {observed.size}.")
    after_first = observed[1:]  # the rows whose evidence is summed

    learn_q = estimator.model is None
    learn_r = estimator.observation is None
    n_state = estimator.n_features_in_
    scale = np.nanstd(y, axis=0)
    fallback = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    starts = []
    if learn_q:
        q0 = np.broadcast_to(
            np.asarray(estimator.model_.process_noise, dtype=np.float64), (n_state,)
        )
        starts.append(np.where(q0 > 0, q0, 0.1 * np.resize(fallback, n_state)))
    if learn_r:
        r0 = np.broadcast_to(
            np.asarray(estimator.observation_.noise_std, dtype=np.float64), (estimator.n_obs_,)
        )
        starts.append(np.where(r0 > 0, r0, 0.1 * fallback))
    theta0 = np.log(np.concatenate(starts))
    lower, upper = theta0 - _LOG_RANGE, theta0 + _LOG_RANGE

    # Common random numbers: one initial ensemble and one seed for every evaluation.
    rng = estimator._rng(None)
    init = estimator._initial(None, rng)
    seed = rng.integers(0, 2**32, size=4)

    def set_levels(theta):
        levels = np.exp(np.clip(theta, lower, upper))
        if learn_q:
            estimator.model_.process_noise = levels[:n_state]
            levels = levels[n_state:]
        if learn_r:
            estimator.observation_.noise_std = levels

    def objective(theta):
        set_levels(theta)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", WeightCollapseWarning)
                out = estimator._run(
                    y, init.copy(), np.random.default_rng(seed), keep_forecast=False, times=times
                )
        except ValueError:  # e.g. every member has zero likelihood at some cycle
            return _FAILED
        value = -float(np.sum(out["log_evidence"][after_first]))
        return value if np.isfinite(value) else _FAILED

    n_params = theta0.size
    if n_params <= _MAX_SIMPLEX_PARAMS:
        simplex = theta0 + np.vstack([np.zeros(n_params), 0.5 * np.eye(n_params)])
        result = minimize(
            objective,
            theta0,
            method="Nelder-Mead",
            options={
                "initial_simplex": simplex,
                "xatol": 1e-3,
                "fatol": 1e-4,
                "maxiter": 400 * n_params,
                "maxfev": 400 * n_params,
            },
        )
    else:
        result = minimize(
            objective,
            theta0,
            method="L-BFGS-B",
            bounds=list(zip(lower, upper, strict=True)),
            options={"eps": 1e-4, "maxiter": 200},
        )
    if not result.fun < _FAILED:
        raise ValueError(
            "noise='mle' found no noise levels under which the filter runs through y "
            "(every evaluation failed); check the observations and the model."
        )
    set_levels(result.x)
    levels = np.exp(np.clip(result.x, lower, upper))
    if learn_q:
        estimator.process_noise_ = levels[:n_state].copy()
        levels = levels[n_state:]
    if learn_r:
        estimator.noise_std_ = levels.copy()
    estimator.log_evidence_ = -float(result.fun)
    estimator.n_iter_ = int(result.nit)
    return estimator
