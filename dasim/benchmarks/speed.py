"""B4, classical row: milliseconds a cycle of the EnKF and the particle filter.

:func:`time_filters` times dasim's filters exactly as ``dapper_timing.py`` times
DAPPER's: the same B1 setting (DAPPER's Lorenz-63 ``sakov2012`` and Lorenz-96
``sakov2008``), the same configurations (square-root and perturbed-observation EnKF
with inflation 1.02, no rotation; the regularised particle filter with jitter 0.9 and
resampling below ESS = 0.2 N), the same ensemble sizes and one BLAS thread. The clock
covers ``assimilate`` over the whole record, forecasts included, after an untimed
two-cycle warm-up, and is divided by the number of cycles; with ``repeats`` the fastest
run counts (both sides). ``dasim bench speed-l96-40 --dapper-python PATH`` runs both sides in
one run and tabulates them with :func:`speed_markdown`.

:func:`time_kde_ode` is the KDE filter's row: score evaluations and milliseconds a cycle of
its samplers and ODE solvers on a B2 case (issue #14); :func:`time_kde_samplers` the
seconds a cycle of its ODE, SDE and mixture samplers at fixed bandwidths.
"""

from __future__ import annotations

import contextlib
import time
import warnings

import numpy as np
import xarray as xr
from threadpoolctl import threadpool_limits

from .._validation import check_n_members, check_positive_int
from ..datasets import make_twin_experiment
from ..filters import EnKF, KDEDiffusionFilter, SIRFilter
from ._b2_cases import _filter_model, _fit_states, _initial_ensemble, _twin, b2_case
from .b1 import b1_case

__all__ = [
    "SPEED_FILTERS",
    "KDE_SAMPLERS",
    "speed_members",
    "time_filters",
    "speed_markdown",
    "time_kde_ode",
    "time_kde_samplers",
]

#: The timed configurations, as in ``dapper_timing.py`` (label -> constructor of N).
SPEED_FILTERS = {
    "EnKF sqrt": lambda n: EnKF(n_members=n, variant="sqrt", inflation=1.02),
    "EnKF pert-obs": lambda n: EnKF(n_members=n, variant="stochastic", inflation=1.02),
    "SIR": lambda n: SIRFilter(n_members=n, jitter=0.9, ess_threshold=0.2),
}


def speed_members(case):
    """The ensemble sizes B4 times on a B1 case.

    Parameters
    ----------
    case : str
        A B1 case name (``"l96-40"``, ``"l63-full"``, ...).

    Returns
    -------
    tuple of int
        ``(40, 100, 1000)`` on ``"l96-40"`` (N = 40 and N = 1000 are the figures of
        BENCHMARKS.md), ``(10, 100, 1000)`` elsewhere.

    Examples
    --------
    >>> from dasim.benchmarks.speed import speed_members
    >>> speed_members("l96-40")
    (40, 100, 1000)
    """
    return (40, 100, 1000) if case == "l96-40" else (10, 100, 1000)


def time_filters(case="l96-40", n_cycles=200, *, members=None, filters=None, repeats=1, seed=0):
    """Time dasim's EnKF and particle filter, in seconds a cycle, on a B1 case.

    Parameters
    ----------
    case : str, default="l96-40"
        A B1 case (:data:`dasim.benchmarks.B1_CASES`).
    n_cycles : int, default=200
        Assimilation cycles timed per filter and ensemble size.
    members : sequence of int, optional
        Ensemble sizes; :func:`speed_members` by default.
    filters : sequence of str, optional
        Labels of :data:`SPEED_FILTERS` (all by default).
    repeats : int, default=1
        Timed runs per filter and size; the fastest is reported (as :mod:`timeit`
        advises: slower runs measure the machine's other load, not the code).
    seed : int, default=0
        Seed of the twin experiment, the initial ensembles and the filters.

    Returns
    -------
    xarray.Dataset
        ``seconds_per_cycle`` with dims ``(filter, n_members)``; the case, cycles and
        repeats in ``attrs``.

    Raises
    ------
    ValueError
        For an unknown case or filter label, fewer than 2 cycles or members, or
        ``repeats`` below 1.
    TypeError
        For a non-integer ``n_cycles`` or ensemble size.

    Examples
    --------
    >>> from dasim.benchmarks.speed import time_filters
    >>> ds = time_filters("l63-full", n_cycles=5, members=[10], filters=["EnKF sqrt"])
    >>> float(ds["seconds_per_cycle"].sel({"filter": "EnKF sqrt", "n_members": 10})) > 0
    True
    """
    c = b1_case(case)
    n_cycles = check_n_members(n_cycles, "n_cycles")
    repeats = check_positive_int(repeats, "repeats")
    members = [
        check_n_members(n, "members")
        for n in (speed_members(case) if members is None else members)
    ]
    filters = list(SPEED_FILTERS if filters is None else filters)
    unknown = [f for f in filters if f not in SPEED_FILTERS]
    if unknown:
        raise ValueError(f"unknown filters {unknown}; choose from {list(SPEED_FILTERS)}.")
    rng = np.random.default_rng(seed)
    model = c.model
    _, y = make_twin_experiment(
        model, c.observation, n_cycles, rng, initial_state=model.climatology(1, rng)[0]
    )
    seconds = np.full((len(filters), len(members)), np.nan)
    with threadpool_limits(1):
        for i, label in enumerate(filters):
            for j, n in enumerate(members):
                est = SPEED_FILTERS[label](n).set_params(
                    model=model, observation=c.observation, random_state=seed
                )
                est.fit(model.climatology(64, rng))
                init = model.climatology(n, rng)
                # Untimed warm-up (first-call costs: imports, allocations, caches).
                est.assimilate(y[:2], initial_ensemble=init, keep_forecast=False)
                best = np.inf
                for _ in range(repeats):
                    start = time.perf_counter()
                    est.assimilate(y, initial_ensemble=init, keep_forecast=False)
                    best = min(best, time.perf_counter() - start)
                seconds[i, j] = best / n_cycles
    return xr.Dataset(
        {"seconds_per_cycle": (("filter", "n_members"), seconds)},
        coords={"filter": filters, "n_members": members},
        attrs={
            "case": case,
            "n_cycles": n_cycles,
            "repeats": repeats,
            "seed": int(seed),
            "blas_threads": 1,
            "configurations": "EnKF inflation 1.02 (sqrt: no rotation); SIR jitter 0.9, "
            "resampling below ESS = 0.2 N",
        },
    )


def speed_markdown(ds):
    """Tabulate milliseconds a cycle in markdown, beside DAPPER's where measured.

    Parameters
    ----------
    ds : xarray.Dataset
        Output of :func:`time_filters`, optionally with ``dapper_seconds_per_cycle``
        (same dims, NaN where DAPPER did not run).

    Returns
    -------
    str
        One row per filter and size: dasim's ms a cycle, and with DAPPER's figures also
        DAPPER's and the ratio dasim / DAPPER.

    Examples
    --------
    >>> from dasim.benchmarks.speed import speed_markdown, time_filters
    >>> ds = time_filters("l63-full", n_cycles=5, members=[10], filters=["SIR"])
    >>> speed_markdown(ds).splitlines()[0]
    '| filter | dasim ms |'
    """
    dapper = "dapper_seconds_per_cycle" in ds
    head = (
        "| filter | dasim ms | DAPPER ms | dasim / DAPPER |" if dapper else "| filter | dasim ms |"
    )
    lines = [head, "|---|---|---|---|" if dapper else "|---|---|"]
    for label in ds["filter"].values:
        for n in ds["n_members"].values:
            sel = {"filter": label, "n_members": n}
            ours = 1000 * float(ds["seconds_per_cycle"].sel(sel))
            row = f"| {label} N={int(n)} | {ours:.2f} |"
            if dapper:
                theirs = 1000 * float(ds["dapper_seconds_per_cycle"].sel(sel))
                if np.isfinite(theirs):
                    row += f" {theirs:.2f} | {ours / theirs:.2f} |"
                else:
                    row += " - | - |"
            lines.append(row)
    return "\n".join(lines)


#: The KDE filter's samplers timed by :func:`time_kde_ode` (label -> parameters on top of
#: ``KDEDiffusionFilter.PAPER_PARAMS``): the exact mixture, the paper's RK45, the
#: fixed-step solvers of the probability-flow ODE at their default 20 score evaluations,
#: and the reverse SDE (Euler-Maruyama, the filter's default 1000 steps).
KDE_SAMPLERS = {
    "mixture": {"sampler": "mixture"},
    "rk45": {"sampler": "ode", "ode_solver": "rk45"},
    "heun": {"sampler": "ode", "ode_solver": "heun"},
    "ab2": {"sampler": "ode", "ode_solver": "ab2"},
    "ab3": {"sampler": "ode", "ode_solver": "ab3"},
    "sde": {"sampler": "sde"},
}
# Timed when ``samplers`` is None: all but the SDE (1000 score evaluations a cycle).
_DEFAULT_KDE_SAMPLERS = ("mixture", "rk45", "heun", "ab2", "ab3")


@contextlib.contextmanager
def _torch_threads(device, n):
    """Set torch's CPU threads to ``n`` in the block (not for numpy, nor when None)."""
    if device == "numpy" or n is None:
        yield
        return
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _kde_filter(case, n_members, seed, **params):
    """An unfitted KDE filter on a B2 case: the filters' model, seeded by ``seed``."""
    return KDEDiffusionFilter(
        _filter_model(case), case.observation, n_members=n_members, random_state=seed, **params
    )


def time_kde_ode(
    case="l63-z",
    n_members=1000,
    n_cycles=5,
    *,
    samplers=None,
    bandwidth_x=0.2,
    bandwidth_y=2.0,
    repeats=1,
    seed=0,
    device="numpy",
    score_dtype=None,
    torch_threads=1,
):
    """Score evaluations and seconds a cycle of the KDE filter's samplers on a B2 case.

    Every sampler runs the paper's configuration (``KDEDiffusionFilter.PAPER_PARAMS``,
    one BLAS thread) with the given bandwidths (B2's tuned values at N = 1000 on
    ``l63-z`` by default) on the same truth, observations, initial ensemble and seed as
    B2. The clock covers ``assimilate`` over ``n_cycles`` cycles, forecasts included,
    after an untimed one-cycle warm-up; with ``repeats`` the fastest run counts.

    Parameters
    ----------
    case : str, default="l63-z"
        A B2 case (:data:`dasim.benchmarks.b2.B2_CASES`).
    n_members : int, default=1000
        Ensemble size.
    n_cycles : int, default=5
        Cycles timed.
    samplers : sequence of str, optional
        Labels of :data:`KDE_SAMPLERS` (all but ``"sde"`` by default).
    bandwidth_x, bandwidth_y : float, default=0.2, 2.0
        State and observation bandwidths.
    repeats : int, default=1
        Timed runs per sampler; the fastest is reported.
    seed : int, default=0
        Seed of the twin experiment, the initial ensemble and the filter.
    device : str, default="numpy"
        The filter's ``device``: ``"numpy"`` or a torch device (``"cpu"``, ``"cuda"``).
    score_dtype : {None, "float64", "float32"}, optional
        Precision of the score's pairwise tiles, passed to the filter as its
        ``score_dtype``; None leaves the filter's default (float64).
    torch_threads : int or None, default=1
        Threads of torch's CPU operations during the timing (restored after), when
        ``device`` is a torch device; None leaves torch's setting.

    Returns
    -------
    xarray.Dataset
        ``seconds_per_cycle``, ``nfev`` (score evaluations a cycle, mean over the cycles)
        and ``n_steps`` (ODE steps a cycle: accepted steps for RK45, 0 for the mixture),
        dim ``sampler``; ``ratio_to_mixture`` (seconds a cycle over the mixture's) when
        the mixture was timed.

    Examples
    --------
    >>> from dasim.benchmarks.speed import time_kde_ode
    >>> ds = time_kde_ode(n_members=20, n_cycles=2, samplers=["mixture", "ab3"])
    >>> ds["nfev"].values.tolist()
    [0.0, 20.0]
    """
    c = b2_case(case)
    n_members = check_n_members(n_members, "n_members")
    n_cycles = check_n_members(n_cycles, "n_cycles")
    repeats = check_positive_int(repeats, "repeats")
    samplers = list(_DEFAULT_KDE_SAMPLERS if samplers is None else samplers)
    unknown = [label for label in samplers if label not in KDE_SAMPLERS]
    if unknown:
        raise ValueError(f"unknown samplers {unknown}; choose from {list(KDE_SAMPLERS)}.")
    extra = {}
    if score_dtype is not None:
        from ..diffusion.kde import check_score_dtype

        extra["score_dtype"] = check_score_dtype(score_dtype, "score_dtype", allow_none=False)
    if torch_threads is not None:
        torch_threads = check_positive_int(torch_threads, "torch_threads")
    X, y = _twin(c, n_cycles, seed)
    init = _initial_ensemble(c, n_members, seed)
    rows = []
    for label in samplers:
        params = {
            **KDEDiffusionFilter.PAPER_PARAMS,
            **KDE_SAMPLERS[label],
            "bandwidth_x": bandwidth_x,
            "bandwidth_y": bandwidth_y,
            **extra,
        }
        est = _kde_filter(c, n_members, seed, device=device, **params)
        with (
            threadpool_limits(1),
            _torch_threads(device, torch_threads),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            est.fit(_fit_states(c, seed))
            est.assimilate(y[:1], initial_ensemble=init, keep_forecast=False)
            best, ds = np.inf, None
            for _ in range(repeats):
                start = time.perf_counter()
                ds = est.assimilate(y, initial_ensemble=init, keep_forecast=False)
                best = min(best, time.perf_counter() - start)
        rows.append(
            (
                best / n_cycles,
                float(np.mean(ds["nfev"].values)),
                float(np.mean(ds["n_steps"].values)),
            )
        )
    rows = np.array(rows)
    out = xr.Dataset(
        {
            "seconds_per_cycle": (("sampler",), rows[:, 0]),
            "nfev": (("sampler",), rows[:, 1]),
            "n_steps": (("sampler",), rows[:, 2]),
        },
        coords={"sampler": samplers},
        attrs={
            "case": c.name,
            "n_members": n_members,
            "n_cycles": n_cycles,
            "repeats": repeats,
            "bandwidth_x": bandwidth_x,
            "bandwidth_y": bandwidth_y,
            "seed": int(seed),
            "blas_threads": 1,
            "device": str(device),
            "score_dtype": "float64" if score_dtype is None else extra["score_dtype"],
            "torch_threads": "default" if torch_threads is None else torch_threads,
        },
    )
    if "mixture" in samplers:
        out["ratio_to_mixture"] = out["seconds_per_cycle"] / out["seconds_per_cycle"].sel(
            sampler="mixture"
        )
    return out


# -------------------------------------------------------------------------- B4 timing
def time_kde_samplers(
    case="l96-20-atan",
    n_members=1000,
    n_cycles=3,
    samplers=("ode", "sde", "mixture"),
    *,
    bandwidth_x=0.2,
    bandwidth_y=0.2,
    n_steps=1000,
    seed=0,
):
    """Time the KDE filter's samplers, in seconds a cycle (BENCHMARKS.md, B4 "KDE filter").

    Every sampler runs the same ``n_cycles`` cycles (same truth, observations, initial
    ensemble and seed), single-threaded BLAS, numpy backend, in the paper's configuration
    (``KDEDiffusionFilter.PAPER_PARAMS``) with the given bandwidths.

    Parameters
    ----------
    case : str, default="l96-20-atan"
        A B2 case.
    n_members : int, default=1000
        Ensemble size.
    n_cycles : int, default=3
        Cycles timed.
    samplers : sequence of str, default=("ode", "sde", "mixture")
        Samplers of :class:`~dasim.filters.KDEDiffusionFilter`.
    bandwidth_x, bandwidth_y : float, default=0.2, 0.2
        Bandwidths.
    n_steps : int, default=1000
        Euler-Maruyama steps of the SDE sampler.
    seed : int, default=0
        Seed.

    Returns
    -------
    xarray.Dataset
        ``seconds_per_cycle``, ``n_steps`` (accepted RK45 steps for the ODE, the fixed
        steps for the SDE, 0 for the mixture) and ``nfev`` (score evaluations a cycle),
        dim ``sampler``.

    Examples
    --------
    >>> from dasim.benchmarks.b2 import time_kde_samplers
    >>> ds = time_kde_samplers("l63-z", n_members=20, n_cycles=1, samplers=["mixture"])
    >>> float(ds["nfev"].sel(sampler="mixture"))
    0.0
    """
    c = b2_case(case)
    X, y = _twin(c, n_cycles, seed)
    init = _initial_ensemble(c, n_members, seed)
    rows = []
    for sampler in samplers:
        est = _kde_filter(
            c,
            n_members,
            seed,
            **KDEDiffusionFilter.PAPER_PARAMS,
        ).set_params(
            bandwidth_x=bandwidth_x,
            bandwidth_y=bandwidth_y,
            sampler=sampler,
            n_steps=n_steps,
            device="numpy",
        )
        with threadpool_limits(1), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(_fit_states(c, seed))
            start = time.perf_counter()
            ds = est.assimilate(y, initial_ensemble=init, keep_forecast=False)
            seconds = (time.perf_counter() - start) / n_cycles
        rows.append(
            (seconds, float(np.mean(ds["n_steps"].values)), float(np.mean(ds["nfev"].values)))
        )
    rows = np.array(rows)
    return xr.Dataset(
        {
            "seconds_per_cycle": (("sampler",), rows[:, 0]),
            "n_steps": (("sampler",), rows[:, 1]),
            "nfev": (("sampler",), rows[:, 2]),
        },
        coords={"sampler": list(samplers)},
        attrs={
            "case": c.name,
            "n_members": int(n_members),
            "n_cycles": int(n_cycles),
            "bandwidth_x": bandwidth_x,
            "bandwidth_y": bandwidth_y,
            "blas_threads": 1,
        },
    )
