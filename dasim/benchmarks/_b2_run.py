"""B2's runner: tuning by GridSearchCV, the reference posterior, the runs (:func:`run_b2`).

Every ``(method, N, seed)`` of :func:`run_b2` is an independent joblib task; the tuning
data, the reference particle filter of the W2 distance and the scoring of one run are
the private helpers here.
"""

from __future__ import annotations

import json
import time
import warnings

import numpy as np
import xarray as xr
from joblib import Parallel, delayed
from sklearn.model_selection import GridSearchCV, PredefinedSplit, TimeSeriesSplit
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from .. import metrics
from ..filters import SIRFilter
from ..filters._resampling import resample
from ._b2_cases import (
    _TRUTH_SPINUP,
    _TUNE_KEY,
    _TUNE_METHOD,
    B2_METHODS,
    TRAIN_SEED,
    _default_params,
    _estimator,
    _filter_model,
    _fit_states,
    _initial_ensemble,
    _int_seed,
    _method_index,
    _twin,
    b2_case,
    b2_grids,
)
from ._b2_results import _as_param, _keyed_by_n, _params_label, _plain

__all__ = ["run_b2"]


# ------------------------------------------------------------------------------- tuning
def _training_set(case, tune_on, train_cycles, n_cycles, train_seed):
    """The tuning data and its splitter: ``(X, y, cv, groups)``.

    ``tune_on=1``: one trajectory of ``train_cycles`` cycles from ``train_seed``,
    ``TimeSeriesSplit(3)``, ``groups`` all zero. ``tune_on=K > 1``: ``K`` trajectories of
    ``n_cycles`` cycles (as long as the scored runs), from seeds derived from
    ``train_seed``, concatenated in time; ``groups`` is the trajectory of every cycle and
    the splitter a :class:`~sklearn.model_selection.PredefinedSplit` whose test folds are
    the whole trajectories (each assimilated from the climatological prior fitted on the
    other ones' states).
    """
    tune_on = int(tune_on)
    if tune_on == 1:
        X, y = _twin(case, train_cycles, train_seed)
        return X, y, TimeSeriesSplit(3), np.zeros(X.shape[0], dtype=int)
    parts = [_twin(case, n_cycles, s) for s in _train_seeds(train_seed, tune_on)]
    X = np.concatenate([x for x, _ in parts])
    y = np.concatenate([obs for _, obs in parts])
    groups = np.repeat(np.arange(tune_on), n_cycles)
    return X, y, PredefinedSplit(groups), groups


def _train_seeds(train_seed, tune_on):
    """The training trajectories' seeds: ``train_seed`` alone, or ``K`` derived from it."""
    if int(tune_on) == 1:
        return [int(train_seed)]
    return [_int_seed(train_seed, 7, k) for k in range(int(tune_on))]


def _tune_one(case, key, n_members, grid, train, seed):
    """GridSearchCV of one tuning group at one ensemble size."""
    X, y, cv = train
    method = _TUNE_METHOD[key]
    est = _estimator(method, n_members, {}).set_params(
        model=_filter_model(case),
        observation=case.observation,
        random_state=_int_seed(seed, n_members, _method_index(method)),
    )
    start = time.perf_counter()
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search = GridSearchCV(est, grid, cv=cv, n_jobs=1, error_score=np.nan)
        search.fit(X, y)
    best = {k: _plain(v) for k, v in search.best_params_.items()}
    return key, int(n_members), best, float(search.best_score_), time.perf_counter() - start


# ---------------------------------------------------------------------------- reference
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
        _filter_model(case),
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


# ------------------------------------------------------------------------------ one run
def _nan_result(failed=0.0):
    keys = (
        "w2",
        "rmse",
        "crps",
        "spread",
        "spread_skill",
        "seconds_per_cycle",
        "ode_steps",
        "nfev",
        "ess_fraction",
        "bandwidth_x",
        "bandwidth_y",
    )
    res = dict.fromkeys(keys, np.nan)
    res["failed"] = failed
    return res


def _one_run(case, method, n_members, seed, params, X, y, ref_sub, w2_cycles):
    """One method, one ensemble size, one seed: assimilate and score."""
    est = _estimator(method, n_members, params).set_params(
        model=_filter_model(case),
        observation=case.observation,
        random_state=_int_seed(seed, n_members, _method_index(method)),
    )
    init = _initial_ensemble(case, n_members, seed)
    b = case.burn_in
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(_fit_states(case, seed))
        start = time.perf_counter()
        try:
            ds = est.assimilate(y, initial_ensemble=init, keep_forecast=False)
        except (ValueError, RuntimeError, FloatingPointError, np.linalg.LinAlgError):
            return _nan_result(failed=1.0)
        seconds = time.perf_counter() - start
        A = ds["analysis"].values
        w = ds["weights"].values if "weights" in ds else None
        res = _nan_result()
        rmse_t = metrics.rmse(X, A, w)
        spread_t = metrics.spread(A, w)
        res["rmse"] = metrics.time_mean(rmse_t, b)
        res["crps"] = metrics.time_mean(metrics.crps_ensemble(X, A, w), b)
        res["spread"] = metrics.time_mean(spread_t, b)
        res["spread_skill"] = metrics.spread_skill(X, A, w, burn_in=b)
        res["seconds_per_cycle"] = seconds / y.shape[0]
        if ref_sub is not None:
            vals = [
                metrics.wasserstein2(
                    A[k], ref_sub[k], weights_a=None if w is None else w[k] / w[k].sum()
                )
                for k in w2_cycles
            ]
            res["w2"] = float(np.mean(vals))
        if "ess" in ds:
            res["ess_fraction"] = float(np.nanmean(ds["ess"].values[b:]) / n_members)
        if method == "KDE-ode":
            res["ode_steps"] = float(np.nanmean(ds["n_steps"].values))
            res["nfev"] = float(np.nanmean(ds["nfev"].values))
        if method.startswith("KDE"):
            res["bandwidth_x"] = float(np.nanmean(ds["bandwidth_x"].values[b:]))
            res["bandwidth_y"] = float(np.nanmean(ds["bandwidth_y"].values[b:]))
    return res


def _floor_run(n_members, ref_sub, ref_pool, w2_cycles):
    """W2 between ``N`` further reference particles and the reference subsample."""
    with threadpool_limits(1):
        vals = [metrics.wasserstein2(ref_pool[k, :n_members], ref_sub[k]) for k in w2_cycles]
    return float(np.mean(vals))


# ------------------------------------------------------------------------------ run_b2
def run_b2(
    case,
    members=None,
    seeds=range(10),
    methods=None,
    n_cycles=100,
    tune=True,
    n_jobs=None,
    progress=False,
    *,
    smoke=False,
    max_members=None,
    params=None,
    grids=None,
    train_seed=TRAIN_SEED,
    train_cycles=240,
    tune_on=1,
    n_reference=100_000,
    n_reference_sub=2000,
    w2_stride=1,
):
    """Run benchmark B2 on one case.

    For every seed: a noise-free truth started from a climatology draw (spun up 50
    cycles so that it is not one of the states the ensembles are drawn from), its
    observations, one initial ensemble per ``N`` of independent climatology draws shared
    by all methods, and (Lorenz-63 cases) the reference posterior. Then every
    ``(method, N, seed)`` runs as an independent joblib task, single-threaded BLAS.

    The reference posterior is a bootstrap particle filter with ``n_reference``
    particles (:class:`~dasim.filters.SIRFilter`, systematic resampling every cycle, no
    jitter, the filters' model noise ``q`` and the true observation noise) on the same
    record, started from ``n_reference`` independent climatology draws. Each cycle a
    random subsample of ``n_reference_sub`` of its (equally weighted) particles is the W2
    target; W2 per cycle is the exact optimal-transport distance
    (:func:`dasim.metrics.wasserstein2`, the members' weights for a weighted ensemble),
    time-averaged after the burn-in. ``w2_floor`` is the same distance for ``N`` other
    reference particles: what a filter sampling the reference exactly would score.

    Parameters
    ----------
    case : str
        A name of :data:`B2_CASES`.
    members : sequence of int, optional
        Ensemble sizes; the case's own list (BENCHMARKS.md) by default.
    seeds : sequence of int, default=range(10)
        One independent simulation per seed (truth, observations, ensembles, reference).
    methods : sequence of str, optional
        A subset of :data:`B2_METHODS` (all by default).
    n_cycles : int, default=100
        Assimilation cycles (the burn-in is 20).
    tune : bool, default=True
        Tune per ``N`` by GridSearchCV on the training trajectory; ``False`` uses fixed
        untuned defaults (smoke runs, quick looks).
    n_jobs : int, optional
        Parallel joblib jobs (``None``: the active ``parallel_config``, serial by default).
    progress : bool, default=False
        Show tqdm progress bars.
    smoke : bool, default=False
        Seconds-long plumbing check: ``N = 16`` unless ``members`` is given, the first
        seed, 25 cycles, a 2,000-particle reference subsampled to 400, 60 training cycles
        and two-point grids.
    max_members : dict, optional
        Largest ``N`` run per method, e.g. ``{"KDE-ode": 250}``; larger sizes are NaN.
    params : dict, optional
        Fixed parameters per tuning group (``"KDE"``, ``"KDE-robust"``, ``"EnKF"``,
        ``"SIR-jitter"``), either one dict for every ``N`` or ``{N: dict}``; those groups
        are not tuned.
    grids : dict, optional
        Grids per tuning group replacing :func:`b2_grids`.
    train_seed : int, default=987654
        Seed of the training trajectory (must not be a scored seed).
    train_cycles : int, default=240
        Length of the training trajectory (``TimeSeriesSplit(3)``: test folds of 60);
        used with ``tune_on=1`` only.
    tune_on : int, default=1
        Training trajectories. ``1``: one trajectory of ``train_cycles`` cycles from
        ``train_seed``, split by ``TimeSeriesSplit(3)``. ``K >= 2``: ``K`` trajectories of
        ``n_cycles`` cycles from seeds derived from ``train_seed``, each test fold one
        whole trajectory assimilated from the climatological prior
        (:class:`~sklearn.model_selection.PredefinedSplit`), so that the chosen
        parameters are those that work from a fresh start on an unseen trajectory, as
        the scored runs are made.
    n_reference : int, default=100000
        Particles of the reference filter.
    n_reference_sub : int, default=2000
        Reference particles per cycle in W2.
    w2_stride : int, default=1
        Compute W2 every ``w2_stride``-th cycle after the burn-in (1: every cycle).

    Returns
    -------
    xarray.Dataset
        Dims ``(method, n_members, seed)``: ``rmse``, ``crps``, ``spread``,
        ``spread_skill``, ``seconds_per_cycle``, ``ode_steps`` and ``nfev`` (KDE-ode:
        accepted RK45 steps and score evaluations a cycle), ``ess_fraction`` (time-mean
        ESS over N before resampling, weighted filters), ``bandwidth_x`` and
        ``bandwidth_y`` (realised KDE bandwidths; for ``KDE-robust`` ``bandwidth_y`` is the
        tempering factor ``c``, 1 when the whole likelihood was assimilated),
        ``failed``; for Lorenz-63 also
        ``w2`` and ``w2_floor`` ``(n_members, seed)``. The setting, the grids, the tuned
        parameters (JSON, and ``tuned[GROUP][N=..]`` strings) and the reference
        diagnostics are in ``attrs``.

    Raises
    ------
    ValueError
        For an unknown case or method, too few cycles, ``tune_on`` not a positive
        integer, or a scored seed equal to a training seed.

    Examples
    --------
    >>> from dasim.benchmarks.b2 import run_b2
    >>> ds = run_b2("l96-10-atan", smoke=True, methods=["KDE-mixture", "EnKF"])
    >>> dict(ds.sizes)
    {'method': 2, 'n_members': 1, 'seed': 1}
    >>> bool(ds["rmse"].notnull().all())
    True
    """
    c = b2_case(case)
    methods = list(B2_METHODS if methods is None else methods)
    for m in methods:
        if m not in B2_METHODS:
            raise ValueError(f"unknown B2 method {m!r}; choose from {B2_METHODS}.")
    seeds = [int(s) for s in seeds]
    if smoke:
        members = (16,) if members is None else members
        seeds = seeds[:1]
        n_cycles = 25
        n_reference, n_reference_sub = min(n_reference, 2000), min(n_reference_sub, 400)
        train_cycles = min(train_cycles, 60)
    members = [int(n) for n in (c.members if members is None else members)]
    if not seeds or not members:
        raise ValueError("seeds and members must not be empty.")
    if isinstance(tune_on, bool) or not isinstance(tune_on, int | np.integer) or tune_on < 1:
        raise ValueError(f"tune_on must be a positive integer, got {tune_on!r}.")
    tune_on = int(tune_on)
    if train_seed in seeds:
        raise ValueError(f"train_seed={train_seed} is a scored seed; choose another.")
    clash = set(_train_seeds(train_seed, tune_on)) & set(seeds)
    if clash:
        raise ValueError(f"training seeds {sorted(clash)} are scored seeds; change train_seed.")
    n_cycles = int(n_cycles)
    if n_cycles <= c.burn_in:
        raise ValueError(f"n_cycles must exceed the burn-in ({c.burn_in}), got {n_cycles}.")
    max_members = dict(max_members or {})
    w2_cycles = list(range(c.burn_in, n_cycles, int(w2_stride)))
    runs = [
        (m, n, s)
        for m in methods
        for n in members
        for s in seeds
        if n <= max_members.get(m, np.inf)
    ]
    parallel = Parallel(n_jobs=n_jobs, return_as="generator")

    # Tuned (or fixed) parameters per tuning group and N.
    grids = {**b2_grids(case, smoke=smoke), **(grids or {})}
    params = dict(params or {})
    needed = sorted({(_TUNE_KEY[m], n) for m, n, _ in runs if m in _TUNE_KEY})
    chosen, scores, tune_seconds = {}, {}, {}
    to_tune = []
    for key, n in needed:
        given = params.get(key)
        if given is not None:
            given = given.get(n, given.get(str(n))) if _keyed_by_n(given) else given
        if given is not None:
            chosen[key, n] = {k: _as_param(v) for k, v in dict(given).items()}
        elif tune:
            to_tune.append((key, n))
        else:
            chosen[key, n] = _default_params(c)[key]
    if to_tune:
        X_train, y_train, cv, _ = _training_set(c, tune_on, train_cycles, n_cycles, train_seed)
        train = (X_train, y_train, cv)
        out = parallel(
            delayed(_tune_one)(c, key, n, grids[key], train, train_seed) for key, n in to_tune
        )
        for key, n, best, score, secs in tqdm(
            out, total=len(to_tune), desc=f"{case} tuning", disable=not progress
        ):
            chosen[key, n] = {k: _as_param(v) for k, v in best.items()}
            scores[key, n] = score
            tune_seconds[key, n] = secs

    # Truth, observations and reference posterior per seed.
    twins = {s: _twin(c, n_cycles, s) for s in seeds}
    refs, ref_info = {}, {}
    if c.w2:
        n_pool = max(members)
        inits = {s: c.model.climatology(n_reference, np.random.default_rng([s, 2])) for s in seeds}
        out = parallel(
            delayed(_reference)(c, s, twins[s][1], inits[s], n_reference_sub, n_pool)
            for s in seeds
        )
        for s, (sub, pool, info) in zip(
            seeds,
            tqdm(out, total=len(seeds), desc=f"{case} reference", disable=not progress),
            strict=True,
        ):
            refs[s] = (sub, pool)
            ref_info[s] = info
        del inits

    # The runs.
    tasks = [
        delayed(_one_run)(
            c,
            m,
            n,
            s,
            chosen.get((_TUNE_KEY.get(m), n)),
            twins[s][0],
            twins[s][1],
            refs[s][0] if c.w2 else None,
            w2_cycles,
        )
        for m, n, s in runs
    ]
    if c.w2:
        floors = [(n, s) for n in members for s in seeds]
        tasks += [delayed(_floor_run)(n, refs[s][0], refs[s][1], w2_cycles) for n, s in floors]
    results = list(
        tqdm(parallel(tasks), total=len(tasks), desc=f"{case} runs", disable=not progress)
    )

    shape = (len(methods), len(members), len(seeds))
    names = list(_nan_result())
    if not c.w2:
        names.remove("w2")
    data = {name: np.full(shape, np.nan) for name in names}
    for (m, n, s), res in zip(runs, results[: len(runs)], strict=True):
        i, j, k = methods.index(m), members.index(n), seeds.index(s)
        for name in names:
            data[name][i, j, k] = res[name]
    dims = ("method", "n_members", "seed")
    variables = {name: (dims, value) for name, value in data.items()}
    if c.w2:
        floor = np.full((len(members), len(seeds)), np.nan)
        for (n, s), value in zip(floors, results[len(runs) :], strict=True):
            floor[members.index(n), seeds.index(s)] = value
        variables["w2_floor"] = (("n_members", "seed"), floor)

    tuned_json = {
        key: {str(n): _plain(p) for (k2, n), p in chosen.items() if k2 == key}
        for key in sorted({k for k, _ in chosen})
    }
    attrs = {
        "case": c.name,
        "description": c.description,
        "n_cycles": n_cycles,
        "burn_in": c.burn_in,
        "model": repr(c.model),
        "observation": repr(c.observation),
        "filter_noise": c.filter_noise,
        "truth_noise": 0,
        "truth_spinup_cycles": _TRUTH_SPINUP,
        "tuned": int(bool(tune)),
        "train_seed": int(train_seed),
        "train_cycles": int(train_cycles if tune_on == 1 else n_cycles),
        "tune_on": tune_on,
        "train_seeds": json.dumps(_train_seeds(train_seed, tune_on)),
        "tuning": (
            "GridSearchCV(cv=TimeSeriesSplit(3)) on one training trajectory"
            if tune_on == 1
            else f"GridSearchCV(cv=PredefinedSplit) over {tune_on} training trajectories, "
            "each test fold one whole trajectory from the climatological prior"
        )
        + "; score = -CRPS; KDE via the mixture",
        "grids": json.dumps({k: _plain(v) for k, v in grids.items()}),
        "tuned_params": json.dumps(tuned_json),
        "tuning_scores": json.dumps({f"{k}|{n}": v for (k, n), v in scores.items()}),
        "tuning_seconds": float(sum(tune_seconds.values())),
        "max_members": json.dumps(max_members),
        "smoke": int(bool(smoke)),
    }
    for (key, n), p in sorted(chosen.items()):
        attrs[f"tuned[{key}][N={n}]"] = _params_label(p)
    if c.w2:
        attrs.update(
            n_reference=int(n_reference),
            n_reference_sub=int(n_reference_sub),
            w2_stride=int(w2_stride),
            w2_cycles=len(w2_cycles),
            reference=(
                "bootstrap SIRFilter, systematic resampling every cycle (ess_threshold=1), "
                "no jitter, filters' model noise, true observation noise"
            ),
            reference_ess_mean=json.dumps({s: i["ess_mean"] for s, i in ref_info.items()}),
            reference_ess_min=json.dumps({s: i["ess_min"] for s, i in ref_info.items()}),
            reference_unique_fraction=json.dumps(
                {s: i["unique_fraction"] for s, i in ref_info.items()}
            ),
            reference_seconds=float(sum(i["seconds"] for i in ref_info.values())),
        )
    return xr.Dataset(
        variables,
        coords={"method": methods, "n_members": members, "seed": seeds},
        attrs=attrs,
    )
