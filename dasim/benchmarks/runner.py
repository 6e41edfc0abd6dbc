"""The one runner of the benchmarks: seeds, tuning, reference posterior, joblib.

Every run is independent (its own seed, truth, observations and initial ensemble), so a
sweep goes through :class:`joblib.Parallel` and runs on a dask or ray cluster under
``joblib.parallel_config(backend=...)`` with no code change. Results are
:class:`xarray.Dataset` objects that save to netCDF.

:func:`run_case` runs a list of :class:`~dasim.benchmarks.Method` on a
:class:`~dasim.benchmarks.Case` over seeds (B1 and any user-defined experiment);
:func:`run_b2` runs the methods of :mod:`~dasim.benchmarks.nonlinear_filtering_cases`
per ensemble size and seed, with each tuning group tuned by GridSearchCV on training
trajectories of its own (:mod:`._tuning`) and, for the Lorenz-63 cases, W2 to a
reference particle filter (:mod:`._reference`). Both score the analysis ensembles with
the same :func:`ensemble_scores`.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import replace

import numpy as np
import xarray as xr
from joblib import Parallel, delayed
from sklearn.base import clone
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from .. import metrics
from .._threads import pinned_blas
from ..datasets import make_twin_experiment
from ._reference import _floor_run, _reference
from ._tuning import _resolve_params, _train_seeds, _training_set, _tune_one
from .nonlinear_filtering_cases import (
    _TRUTH_SPINUP,
    _TUNE_KEY,
    B2_METHODS,
    TRAIN_SEED,
    _estimator,
    _fit_states,
    _initial_ensemble,
    _int_seed,
    _method_index,
    _twin,
    b2_case,
    b2_grids,
)
from .results import _as_param, _params_label, _plain

__all__ = ["run_case", "run_b2", "ensemble_scores", "parallel_map"]


def parallel_map(tasks, n_jobs=None, *, desc="", progress=False):
    """Run joblib ``delayed`` tasks, in order, with an optional progress bar.

    Parameters
    ----------
    tasks : iterable of joblib delayed calls
        The independent runs.
    n_jobs : int, optional
        Parallel jobs (``None``: the active ``joblib.parallel_config``).
    desc : str, default=""
        Progress bar label.
    progress : bool, default=False
        Show a tqdm bar (runs completed in submission order).

    Returns
    -------
    list
        The tasks' results in submission order.
    """
    tasks = list(tasks)
    runs = Parallel(n_jobs=n_jobs, return_as="generator")(tasks)
    return list(tqdm(runs, total=len(tasks), desc=desc, disable=not progress))


def ensemble_scores(truth, analysis, weights, burn_in):
    """RMSE, CRPS, spread and spread/skill of an analysis, time means after the burn-in.

    Parameters
    ----------
    truth : ndarray of shape (n_times, n_state)
        True states.
    analysis : ndarray of shape (n_times, n_members, n_state)
        Analysis ensembles.
    weights : ndarray of shape (n_times, n_members) or None
        Member weights (weighted filters).
    burn_in : int
        Leading cycles left out of the time means.

    Returns
    -------
    dict
        ``rmse``, ``crps``, ``spread`` and ``spread_skill`` (time-mean spread over
        time-mean RMSE), floats.

    Examples
    --------
    >>> import numpy as np
    >>> from dasim.benchmarks.runner import ensemble_scores
    >>> X = np.zeros((3, 2))
    >>> A = np.tile([[1.0, 1.0], [3.0, 3.0]], (3, 1, 1))  # 3 cycles, 2 members
    >>> float(ensemble_scores(X, A, None, 0)["rmse"])
    2.0
    """
    rmse = metrics.time_mean(metrics.rmse(truth, analysis, weights), burn_in)
    spread = metrics.time_mean(metrics.spread(analysis, weights), burn_in)
    return {
        "rmse": rmse,
        "crps": metrics.time_mean(metrics.crps_ensemble(truth, analysis, weights), burn_in),
        "spread": spread,
        "spread_skill": spread / rmse,
    }


# ------------------------------------------------------------------------------ one run
def _assimilate(est, X, y, init, burn_in):
    """Assimilate ``y`` from ``init`` with a fitted filter; the dataset and its scores."""
    start = time.perf_counter()
    ds = est.assimilate(y, initial_ensemble=init, keep_forecast=False)
    seconds = time.perf_counter() - start
    w = ds["weights"].values if "weights" in ds else None
    res = ensemble_scores(X, ds["analysis"].values, w, burn_in)
    res["seconds_per_cycle"] = seconds / y.shape[0]
    return ds, res


@pinned_blas
def _case_run(case, method, seed, n_cycles):
    """One seed of one method of :func:`run_case`: truth, observations, ensemble, scores."""
    rng = np.random.default_rng(seed)
    model = clone(case.model)
    if case.initial_mean is None:
        x0 = model.climatology(1, rng)[0]
    else:
        mean = np.asarray(case.initial_mean, dtype=np.float64)
        x0 = mean + np.sqrt(case.initial_var) * rng.standard_normal(mean.shape)
    X, y = make_twin_experiment(
        model, case.observation, n_cycles, rng, initial_state=x0, process_noise=case.truth_noise
    )
    est = clone(method.estimator)
    est.set_params(model=case.filter_model(), observation=case.observation, random_state=seed)
    n_members = est.get_params()["n_members"]
    if case.initial_mean is None:
        init = model.climatology(n_members, rng)
    else:
        init = mean + np.sqrt(case.initial_var) * rng.standard_normal((n_members, mean.size))
    est.fit(model.climatology(64, rng))
    _, res = _assimilate(est, X, y, init, case.burn_in)
    b = case.burn_in
    res["climatology_rmse"] = float(np.sqrt(np.mean((X[b:] - X[b:].mean(0)) ** 2)))
    return res


def run_case(
    case, methods, seeds=(0, 1, 2), n_cycles=None, n_jobs=None, progress=False, burn_in=None
):
    """Run every method on every seed of a case.

    Parameters
    ----------
    case : Case
        The twin-experiment setting.
    methods : list of Method
        The filters to run.
    seeds : sequence of int, default=(0, 1, 2)
        One independent simulation per seed (truth, observations, ensemble).
    n_cycles : int, optional
        Override the case's number of cycles (smoke runs).
    n_jobs : int, optional
        Parallel jobs for joblib (``None``: the active ``parallel_config``).
    progress : bool, default=False
        Show a tqdm progress bar over the runs (completed in submission order).
    burn_in : int, optional
        Override the case's burn-in (smoke runs).

    Returns
    -------
    xarray.Dataset
        Variables ``rmse``, ``crps``, ``spread``, ``spread_skill``,
        ``seconds_per_cycle`` and ``climatology_rmse`` with dims ``(method, seed)``, and
        ``reference`` with dim ``method``; the setting in ``attrs``.

    Examples
    --------
    >>> from dasim.benchmarks import Case, Method, run_case
    >>> from dasim.filters import EnKF
    >>> from dasim.models import Lorenz63
    >>> from dasim.observations import ObservationModel
    >>> case = Case("tiny", Lorenz63(), ObservationModel("identity"), n_cycles=30, burn_in=10)
    >>> ds = run_case(case, [Method("EnKF N=10", EnKF(n_members=10))], seeds=(0,), n_jobs=1)
    >>> ds["rmse"].dims, ds["rmse"].shape
    (('method', 'seed'), (1, 1))
    """
    n_cycles = case.n_cycles if n_cycles is None else int(n_cycles)
    if burn_in is not None:
        case = replace(case, burn_in=int(burn_in))
    if n_cycles <= case.burn_in:
        raise ValueError(f"n_cycles must exceed the burn-in ({case.burn_in}), got {n_cycles}.")
    seeds = [int(s) for s in seeds]
    tasks = (delayed(_case_run)(case, m, s, n_cycles) for m in methods for s in seeds)
    results = parallel_map(tasks, n_jobs, desc=case.name, progress=progress)
    shape = (len(methods), len(seeds))
    data = {
        name: (("method", "seed"), np.array([r[name] for r in results]).reshape(shape))
        for name in results[0]
    }
    data["reference"] = (
        ("method",),
        np.array([np.nan if m.reference is None else m.reference for m in methods]),
    )
    coords = {"method": [m.label for m in methods], "seed": seeds}
    return xr.Dataset(data, coords=coords, attrs=case.attrs(n_cycles))


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
        "inflation",
    )
    res = dict.fromkeys(keys, np.nan)
    res["failed"] = failed
    return res


def _one_run(case, method, n_members, seed, params, X, y, ref_sub, w2_cycles, pool_size=None):
    """One method, one ensemble size, one seed: assimilate and score.

    ``pool_size``: the climatology pool of the initial ensemble (see ``run_b2``).
    """
    est = _estimator(method, n_members, params).set_params(
        model=case.filter_model(),
        observation=case.observation,
        random_state=_int_seed(seed, n_members, _method_index(method)),
    )
    init = _initial_ensemble(case, n_members, seed, pool_size)
    b = case.burn_in
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(_fit_states(case, seed))
        try:
            ds, res = _assimilate(est, X, y, init, b)
        except (ValueError, RuntimeError, FloatingPointError, np.linalg.LinAlgError):
            return _nan_result(failed=1.0)
        res = {**_nan_result(), **res}
        A = ds["analysis"].values
        w = ds["weights"].values if "weights" in ds else None
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
        if "inflation" in ds:  # all NaN (a fixed EnKF inflation) gives NaN
            res["inflation"] = float(np.nanmean(ds["inflation"].values[b:]))
    return res


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
    target. The filters' initial ensembles of these cases are drawn from the same
    climatology pool (``pool_size=n_reference`` of
    :meth:`~dasim.models.Lorenz63.climatology`), in every process and with any
    ``n_jobs``; W2 per cycle is the exact optimal-transport distance
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
        ``inflation`` (time-mean finite-size inflation factor, where a method has one;
        1 for a KDE method with ``inflation=1``), ``failed``; for Lorenz-63 also
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
    >>> from dasim.benchmarks.nonlinear_filtering import run_b2
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

    # Tuned (or fixed) parameters per tuning group and N.
    grids = {**b2_grids(case, smoke=smoke), **(grids or {})}
    chosen, to_tune = _resolve_params(c, runs, params, tune)
    scores, tune_seconds = {}, {}
    if to_tune:
        X_train, y_train, cv, _ = _training_set(c, tune_on, train_cycles, n_cycles, train_seed)
        train = (X_train, y_train, cv)
        tasks = (
            delayed(_tune_one)(c, key, n, grids[key], train, train_seed) for key, n in to_tune
        )
        for key, n, best, score, secs in parallel_map(
            tasks, n_jobs, desc=f"{case} tuning", progress=progress
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
        tasks = (
            delayed(_reference)(c, s, twins[s][1], inits[s], n_reference_sub, n_pool)
            for s in seeds
        )
        out = parallel_map(tasks, n_jobs, desc=f"{case} reference", progress=progress)
        for s, (sub, pool, info) in zip(seeds, out, strict=True):
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
            n_reference if c.w2 else None,
        )
        for m, n, s in runs
    ]
    if c.w2:
        floors = [(n, s) for n in members for s in seeds]
        tasks += [delayed(_floor_run)(n, refs[s][0], refs[s][1], w2_cycles) for n, s in floors]
    results = parallel_map(tasks, n_jobs, desc=f"{case} runs", progress=progress)

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
        **c.attrs(n_cycles),
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
