"""The one timing module of the benchmarks (B4, speed and scale).

The clock, :func:`best_time` (the fastest of ``repeats`` runs), and what B4 times with
it: :func:`time_filters` (the EnKF and the particle filter a cycle, timed exactly as
``dapper_timing.py`` times DAPPER's: same B1 settings, configurations, sizes, one BLAS
thread; ``dasim bench speed-l96-40 --dapper-python PATH`` runs both sides in one run),
:func:`time_kde_ode` and :func:`time_kde_samplers` (the KDE filter's samplers and ODE
solvers on a B2 case), and :func:`time_learned` (training seconds to a fixed validation
loss, and samples a second, of the learned assimilators on the B3 data; ``device="cuda"``
gives the GPU figures). One KDE score evaluation is timed by
:mod:`~dasim.benchmarks.score_speed`.
"""

from __future__ import annotations

import contextlib
import time
import warnings

import numpy as np
import xarray as xr
from threadpoolctl import threadpool_limits

from .._validation import check_n_members, check_positive, check_positive_int
from ..datasets import make_twin_experiment
from ..filters import EnKF, KDEDiffusionFilter, SIRFilter
from .dapper_parity import b1_case
from .nonlinear_filtering_cases import _fit_states, _initial_ensemble, _twin, b2_case
from .trajectory_smoothing import WINDOW_LENGTH, b3_observation, simulate_lorenz

__all__ = [
    "SPEED_FILTERS",
    "KDE_SAMPLERS",
    "speed_members",
    "time_filters",
    "best_time",
    "time_learned",
    "time_kde_ode",
    "time_kde_samplers",
]

#: The timed configurations, as in ``dapper_timing.py`` (label -> constructor of N).
SPEED_FILTERS = {
    "EnKF sqrt": lambda n: EnKF(n_members=n, variant="sqrt", inflation=1.02),
    "EnKF pert-obs": lambda n: EnKF(n_members=n, variant="stochastic", inflation=1.02),
    "SIR": lambda n: SIRFilter(n_members=n, jitter=0.9, ess_threshold=0.2),
}


def best_time(run, repeats=1):
    """The fastest of ``repeats`` calls of ``run()``, in seconds, and the last result.

    The fastest run counts, as :mod:`timeit` advises: slower runs measure the machine's
    other load, not the code.

    Parameters
    ----------
    run : callable
        Called with no argument.
    repeats : int, default=1
        Timed calls.

    Returns
    -------
    seconds : float
        The fastest call's wall-clock seconds (:func:`time.perf_counter`).
    result : object
        What the last call returned.

    Examples
    --------
    >>> from dasim.benchmarks.timing import best_time
    >>> seconds, result = best_time(lambda: sum(range(10)), repeats=3)
    >>> seconds >= 0, result
    (True, 45)
    """
    best, result = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def _time_assimilate(est, y, init, repeats=1, *, warmup=0):
    """:func:`best_time` of a fitted filter's ``assimilate`` of ``y`` from ``init``.

    ``warmup`` cycles run first, untimed (first-call costs: imports, allocations, caches);
    returns the seconds of the fastest run (forecasts included) and its output.
    """
    if warmup:
        est.assimilate(y[:warmup], initial_ensemble=init, keep_forecast=False)
    kwargs = {"initial_ensemble": init, "keep_forecast": False}
    return best_time(lambda: est.assimilate(y, **kwargs), repeats)


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
    >>> from dasim.benchmarks.timing import speed_members
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
    >>> from dasim.benchmarks.timing import time_filters
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
                best, _ = _time_assimilate(est, y, init, repeats, warmup=2)
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


def _time_kde(case, n_members, n_cycles, seed, configs, repeats=1, warmup=0, threads=None):
    """``(seconds a cycle, score evaluations, ODE steps)`` of a KDE filter per configuration.

    Every configuration runs on the same B2 truth, observations, initial ensemble and
    seed, one BLAS thread (and ``threads`` torch threads on a torch device).
    """
    _, y = _twin(case, n_cycles, seed)
    init = _initial_ensemble(case, n_members, seed)
    rows = []
    for params in configs:
        est = KDEDiffusionFilter(
            case.filter_model(), case.observation, n_members=n_members, random_state=seed, **params
        )
        with (
            threadpool_limits(1),
            _torch_threads(params.get("device", "numpy"), threads),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            est.fit(_fit_states(case, seed))
            best, ds = _time_assimilate(est, y, init, repeats, warmup=warmup)
        nfev, steps = (float(np.mean(ds[k].values)) for k in ("nfev", "n_steps"))
        rows.append((best / n_cycles, nfev, steps))
    return np.array(rows)


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
        A B2 case (:data:`dasim.benchmarks.nonlinear_filtering.B2_CASES`).
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
    >>> from dasim.benchmarks.timing import time_kde_ode
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
    configs = [
        {
            **KDEDiffusionFilter.PAPER_PARAMS,
            **KDE_SAMPLERS[label],
            "bandwidth_x": bandwidth_x,
            "bandwidth_y": bandwidth_y,
            **extra,
            "device": device,
        }
        for label in samplers
    ]
    rows = _time_kde(c, n_members, n_cycles, seed, configs, repeats, 1, torch_threads)
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
    >>> from dasim.benchmarks.timing import time_kde_samplers
    >>> ds = time_kde_samplers("l63-z", n_members=20, n_cycles=1, samplers=["mixture"])
    >>> float(ds["nfev"].sel(sampler="mixture"))
    0.0
    """
    c = b2_case(case)
    configs = [
        {
            **KDEDiffusionFilter.PAPER_PARAMS,
            "bandwidth_x": bandwidth_x,
            "bandwidth_y": bandwidth_y,
            "sampler": sampler,
            "n_steps": n_steps,
            "device": "numpy",
        }
        for sampler in samplers
    ]
    rows = _time_kde(c, n_members, n_cycles, seed, configs)[:, [0, 2, 1]]
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


def time_learned(
    case="b3-lo",
    *,
    target_loss=0.11,
    n_train_traj=256,
    n_train_times=512,
    n_epochs=40,
    epoch_size=25_600,
    width=128,
    depth=3,
    batch_size=256,
    n_samples=64,
    n_steps=64,
    device="cpu",
    random_state=0,
):
    """Time training to a fixed validation loss, and sampling, for SDA and SOAD.

    Parameters
    ----------
    case : str, default="b3-lo"
        A B3 case (:data:`~dasim.benchmarks.trajectory_smoothing.B3_CASES`); it sets the
        observation of the posterior sampling and SOAD's augmented channels.
    target_loss : float, default=0.11
        The fixed validation loss (denoising mean squared error per entry, on the
        normalised data; an epsilon of zero scores 1).
    n_train_traj, n_train_times : int, default=256, 512
        Training trajectories and their length.
    n_epochs : int, default=40
        Training epochs (the learning rate decays linearly over all of them).
    epoch_size : int, default=25600
        Training windows per epoch.
    width, depth : int, default=128, 3
        Residual MLP size.
    batch_size : int, default=256
        Training batch.
    n_samples : int, default=64
        Trajectories drawn per timing (prior and posterior).
    n_steps : int, default=64
        Predictor steps of the sampler (one Langevin correction each).
    device : str, default="cpu"
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    random_state : int, default=0
        Seed of the data, the networks and the samplers.

    Returns
    -------
    xarray.Dataset
        Dim ``method`` (``SDA``, ``SOAD``): ``seconds_to_target`` and ``steps_to_target``
        (NaN if the target was never reached), ``best_valid_loss``,
        ``train_steps_per_second``, ``train_seconds``, ``prior_samples_per_second`` and
        ``posterior_samples_per_second``; the settings and the device in ``attrs``.

    Examples
    --------
    >>> from dasim.benchmarks.timing import time_learned
    >>> ds = time_learned(n_train_traj=8, n_train_times=64, n_epochs=2,
    ...                   epoch_size=256, width=16, depth=1, n_samples=4,
    ...                   n_steps=4)  # doctest: +SKIP
    >>> sorted(ds["method"].values)  # doctest: +SKIP
    ['SDA', 'SOAD']
    """
    from ..assimilators import SDAAssimilator, SOADAssimilator

    check_positive(target_loss, "target_loss")
    obs, every = b3_observation(case)  # raises for an unknown case
    rng = np.random.default_rng(random_state)
    train = simulate_lorenz(n_train_traj, n_train_times, random_state=rng)
    test = simulate_lorenz(1, WINDOW_LENGTH, random_state=rng)[0]
    mean = train.reshape(-1, 3).mean(axis=0)
    std = train.reshape(-1, 3).std(axis=0)
    train, test = (train - mean) / std, (test - mean) / std
    y = obs.simulate(test, random_state=rng)
    y[np.arange(WINDOW_LENGTH) % every != 0] = np.nan
    settings = {
        "n_members": n_samples,
        "window": 2,
        "n_epochs": n_epochs,
        "epoch_size": epoch_size,
        "width": width,
        "depth": depth,
        "batch_size": batch_size,
        "n_steps": n_steps,
        "progress": False,
        "device": device,
        "random_state": random_state,
    }
    names = ("SDA", "SOAD")
    keys = (
        "seconds_to_target",
        "steps_to_target",
        "best_valid_loss",
        "train_steps_per_second",
        "train_seconds",
        "prior_samples_per_second",
        "posterior_samples_per_second",
    )
    out = {k: np.full(len(names), np.nan) for k in keys}
    used_device = None
    for m, cls in enumerate((SDAAssimilator, SOADAssimilator)):
        est = cls(obs, **settings).fit(train)
        used_device = str(est.device_)
        h = est.history_
        valid = np.asarray(h["valid_loss"])
        hit = np.flatnonzero(valid <= target_loss)
        if hit.size:
            out["seconds_to_target"][m] = h["elapsed"][hit[0]]
            out["steps_to_target"][m] = h["n_steps"] / h["n_epochs"] * (hit[0] + 1)
        out["best_valid_loss"][m] = valid.min()
        out["train_seconds"][m] = h["seconds"]
        out["train_steps_per_second"][m] = h["n_steps"] / h["seconds"]
        seconds, _ = best_time(
            lambda est=est: est.sample(n_samples, n_times=WINDOW_LENGTH, random_state=random_state)
        )
        out["prior_samples_per_second"][m] = n_samples / seconds
        ds = est.assimilate(y, random_state=random_state)
        out["posterior_samples_per_second"][m] = n_samples / ds.attrs["sampling_seconds"]
    attrs = {
        "case": case,
        "target_loss": float(target_loss),
        "device": used_device,
        **{k: v for k, v in settings.items() if k not in ("progress", "device")},
        "n_train_traj": n_train_traj,
        "n_train_times": n_train_times,
    }
    return xr.Dataset(
        {k: (("method",), v) for k, v in out.items()},
        coords={"method": list(names)},
        attrs=attrs,
    )
