"""The bootstrap particle filter (sequential importance resampling)."""

from __future__ import annotations

import numbers

import numpy as np

from .._inputs import store_params
from .._math import logsumexp
from .._stats import effective_sample_size, scott_factor
from .._validation import check_positive
from ._base import SequentialFilter, fill_shared_doc
from ._resampling import RESAMPLING_METHODS, resample

__all__ = ["SIRFilter"]


@fill_shared_doc
class SIRFilter(SequentialFilter):
    """Bootstrap particle filter with adaptive resampling and optional regularisation.

    Each cycle the particles are forecast by the model (its noise is the proposal), the
    log-weights are updated by the observation log-likelihood and normalised with
    log-sum-exp; when the effective sample size ``ESS = 1 / sum w_i^2`` falls below
    ``ess_threshold * N`` the particles are resampled, and with ``jitter > 0`` perturbed
    by Gaussian regularisation noise ``N(0, (jitter * h)^2 C)`` where
    ``h = N^{-1/(d+4)}`` and ``C`` is the weighted covariance before resampling (DAPPER's
    ``reg``). Weights are carried as log-weights throughout, so underflow cannot zero
    them; the returned ``weights`` are their exponentials.

    The analysis of a cycle is the weighted particle set right after the reweighting:
    resampling and jitter, when triggered (the ``resampled`` diagnostic), happen at the
    start of the next cycle, before the forecast. They only add noise to the estimate
    of the current posterior, so the analysis statistics (mean, RMSE, CRPS) are those
    of the weighted set, as in DAPPER's ``PartFilt``; the particles that are forecast
    are the same either way.

    Parameters
    ----------
    %(model_params)s
    n_members : int, default=1000
        Number of particles (at least 2).
    resampling : {"systematic", "stratified", "residual", "multinomial"}, \
default="systematic"
        Resampling scheme (see :func:`dasim.filters.resample`).
    ess_threshold : float, default=0.5
        Resample when ``ESS < ess_threshold * N``; in ``[0, 1]`` (1 resamples whenever
        the weights are not uniform, 0 never).
    jitter : float, default=0.0
        Regularisation noise, relative to the Gaussian-kernel bandwidth (non-negative).
    jitter_duplicates_only : bool, default=True
        Jitter only particles that resampling selected more than once (all their copies),
        leaving particles drawn exactly once where they are (DAPPER's default
        "no uniqueness jitter"); ``False`` jitters every particle.
    random_state : int, RandomState or None, default=None
        Seed.
    %(noise_params)s

    Attributes
    ----------
    %(fitted_attrs)s
    %(mle_attrs)s

    See Also
    --------
    EnKF : Ensemble Kalman filter.

    Examples
    --------
    >>> from dasim.datasets import make_twin_experiment
    >>> from dasim.filters import SIRFilter
    >>> from dasim.models import Lorenz63
    >>> from dasim.observations import ObservationModel
    >>> model, obs = Lorenz63(), ObservationModel(noise_std=2.0)
    >>> X, y = make_twin_experiment(model, obs, 100, random_state=0)
    >>> pf = SIRFilter(model, obs, n_members=500, jitter=0.9, random_state=0).fit(X, y)
    >>> ds = pf.assimilate(y)
    >>> sorted(ds.data_vars)
    ['analysis', 'ess', 'forecast', 'log_evidence', 'resampled', 'weights']
    """

    _weighted = True
    _diagnostics = ("ess", "resampled")

    def __init__(
        self,
        model=None,
        observation=None,
        n_members=1000,
        resampling="systematic",
        ess_threshold=0.5,
        jitter=0.0,
        jitter_duplicates_only=True,
        random_state=None,
        noise="moments",
        forecast_first=True,
    ):
        store_params(self, locals())

    def _check_params(self):
        if self.resampling not in RESAMPLING_METHODS:
            raise ValueError(
                f"resampling must be one of {RESAMPLING_METHODS}, got {self.resampling!r}."
            )
        thr = self.ess_threshold
        if isinstance(thr, bool) or not isinstance(thr, numbers.Real) or not 0 <= thr <= 1:
            raise ValueError(f"ess_threshold must be in [0, 1], got {thr!r}.")
        check_positive(self.jitter, "jitter", allow_zero=True)
        if not isinstance(self.jitter_duplicates_only, bool | np.bool_):
            raise TypeError(
                f"jitter_duplicates_only must be a bool, got {self.jitter_duplicates_only!r}."
            )

    def _analysis(self, forecast, y, predicted, loglik, log_weights, rng):
        logw = log_weights + loglik
        logw = logw - logsumexp(logw)
        ess = effective_sample_size(logw)
        # The analysis is the weighted particle set; resampling (and jitter) happens in
        # _before_forecast, so it adds no noise to this cycle's estimate (as DAPPER).
        resample_next = ess < self.ess_threshold * forecast.shape[0]
        return forecast, logw, {"ess": ess, "resampled": float(resample_next)}

    def _before_forecast(self, ensemble, log_weights, rng):
        particles, log_weights, _ = self._resample_step(ensemble, log_weights, rng)
        return particles, log_weights

    def _resample_step(self, ensemble, log_weights, rng):
        """Resample (and jitter) when the ESS is below the threshold.

        Returns the particles to forecast, their log-weights, and the indices drawn
        (``particles[j]`` descends from ``ensemble[idx[j]]``), None when not resampled;
        the particle smoother traces the genealogy through them.
        """
        n, d = ensemble.shape
        w = np.exp(log_weights - logsumexp(log_weights))
        w /= w.sum()
        if 1.0 / np.sum(w**2) >= self.ess_threshold * n:
            return ensemble, log_weights, None
        idx = resample(w, n, self.resampling, rng)
        particles = ensemble[idx]
        if self.jitter > 0:
            # Weighted covariance with the N_eff / (N_eff - 1) correction; degenerate
            # weights (one particle holds all the mass) fall back to equal weights.
            wc = np.full(n, 1.0 / n) if 1.0 - w.max() < 1e-10 else w
            anom = ensemble - wc @ ensemble
            cov = (anom.T * wc) @ anom / (1.0 - np.sum(wc**2))
            evals, evecs = np.linalg.eigh(cov)
            root = evecs * np.sqrt(np.clip(evals, 0.0, None))
            scale = self.jitter * scott_factor(n, d)
            if self.jitter_duplicates_only:
                # idx is sorted: every copy of a particle drawn more than once is jittered.
                same = idx[1:] == idx[:-1]
                dup = np.concatenate([[False], same]) | np.concatenate([same, [False]])
            else:
                dup = np.ones(n, dtype=bool)
            noise = scale * rng.standard_normal((int(dup.sum()), d)) @ root.T
            particles[dup] += noise
        return particles, np.full(n, -np.log(n)), idx
