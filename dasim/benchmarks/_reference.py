"""B2's reference posterior: a large bootstrap particle filter on the scored record.

Part of the runner (:mod:`dasim.benchmarks.runner`): the W2 target of the Lorenz-63
cases, its subsamples, and the W2 floor (further reference particles against it).
"""

from __future__ import annotations

import time

import numpy as np
from threadpoolctl import threadpool_limits

from .. import metrics
from ..filters import SIRFilter
from ..filters._resampling import resample
from .nonlinear_filtering_cases import _fit_states, _int_seed


def _reference(case, seed, y, init, n_sub, n_pool):
    """Bootstrap PF reference posterior; returns per-cycle subsamples and diagnostics.

    Resampling every cycle (``ess_threshold=1``), systematic, no jitter, the filters' model
    noise. The analysis of each cycle is the weighted particle set (``SIRFilter`` resamples
    before the next forecast), so ``n_sub + n_pool`` particles are drawn from it by a
    systematic weighted resample, randomly permuted (a uniform draw without replacement
    if the weights are equal). The first ``n_sub`` are the W2 target, the other
    ``n_pool`` serve the W2 floor.
    """
    n_ref = init.shape[0]
    pf = SIRFilter(
        case.filter_model(),
        case.observation,
        n_members=n_ref,
        resampling="systematic",
        ess_threshold=1.0,
        random_state=_int_seed(seed, 2),
    )
    start = time.perf_counter()
    with threadpool_limits(1):
        pf.fit(_fit_states(case, seed))
        ds = pf.assimilate(y, initial_ensemble=init, keep_forecast=False)
    seconds = time.perf_counter() - start
    A = ds["analysis"].values
    W = ds["weights"].values
    out = _subsample(A, W, n_sub + n_pool, np.random.default_rng([int(seed), 3]))
    ess = ds["ess"].values
    unique = np.mean([np.unique(out[k, :n_sub], axis=0).shape[0] / n_sub for k in range(len(out))])
    info = {
        "seconds": seconds,
        "ess_mean": float(np.nanmean(ess)),
        "ess_min": float(np.nanmin(ess)),
        "unique_fraction": float(unique),
    }
    return out[:, :n_sub], out[:, n_sub:], info


def _subsample(A, W, n_take, rng):
    """Draw ``n_take`` equally weighted particles per cycle from ``(A, W)``.

    Equal weights: a uniform draw without replacement. Unequal weights: a systematic
    weighted resample, randomly permuted (so any prefix is a random subsample).
    """
    n_times, n_ref, d = A.shape
    out = np.empty((n_times, n_take, d))
    for k in range(n_times):
        w = W[k] / W[k].sum()
        if np.ptp(w) <= 1e-12 * w.max():
            idx = rng.choice(n_ref, size=n_take, replace=n_take > n_ref)
        else:
            idx = rng.permutation(resample(w, n_take, "systematic", rng))
        out[k] = A[k, idx]
    return out


def _floor_run(n_members, ref_sub, ref_pool, w2_cycles):
    """W2 between ``N`` further reference particles and the reference subsample."""
    with threadpool_limits(1):
        vals = [metrics.wasserstein2(ref_pool[k, :n_members], ref_sub[k]) for k in w2_cycles]
    return float(np.mean(vals))
