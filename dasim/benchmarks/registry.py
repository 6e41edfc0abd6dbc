"""Every benchmark case by name, run with the common options of ``dasim bench CASE``.

BENCHMARKS.md asks that every benchmark be a runnable entry of :mod:`dasim.benchmarks`:
:func:`run_named` runs one by its name (B1: ``l63-full``, ``l96-40``, ``l96-10``,
``l96-20``; B2: ``l63-z``, ``l63-atan``, ``l96-10-atan``, ``l96-20-atan``,
``l96-40-half``; B3: ``b3-lo``, ``b3-hi``, ``b3-sin``, ``b3-atan``; B4: ``speed-CASE``
for any B1 case, ``kde-score``, ``learned``) and returns its dataset, its markdown table
and its plot. The command line (:mod:`dasim.cli`) only parses and checks the options.
"""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace

__all__ = ["run_named", "case_names"]


def _save_plot(fig_or_ax, path):
    fig = getattr(fig_or_ax, "figure", fig_or_ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _bench_b1(args):
    from . import b1_case, b1_methods, markdown_table, plot_metric, run_case
    from .dapper_parity import _add_dapper_runs
    from .report import _dapper_seconds_table

    case, seeds = b1_case(args.case), args.seeds
    n_cycles = 40 if args.smoke else args.cycles
    ds = run_case(
        case,
        b1_methods(args.case, args.members),
        seeds=seeds,
        n_cycles=n_cycles,
        n_jobs=args.n_jobs,
        progress=not args.smoke,
        burn_in=10 if args.smoke else None,
    )
    if args.dapper_python:
        cycles = min(n_cycles or case.n_cycles, 200)
        _add_dapper_runs(ds, args.dapper_python, args.case, cycles, seeds, not args.smoke)
    table = markdown_table(ds) + _dapper_seconds_table(ds)
    return ds, table, lambda path: _save_plot(plot_metric(ds, "rmse"), path)


def _bench_b2(args):
    from .nonlinear_filtering import b2_markdown, plot_b2, run_b2

    ds = run_b2(
        args.case,
        members=args.members,
        seeds=args.seeds,
        n_cycles=args.cycles if args.cycles is not None else 100,
        n_jobs=args.n_jobs,
        progress=not args.smoke,
        smoke=args.smoke,
    )
    return ds, b2_markdown(ds), lambda path: plot_b2(ds, path)


def _bench_b3(args):
    from .trajectory_smoothing import b3_markdown, run_b3

    ds = run_b3(args.case, seeds=args.seeds, smoke=args.smoke, n_jobs=args.n_jobs)
    return ds, b3_markdown(ds), None


def _bench_learned(args):
    from .report import learned_markdown
    from .timing import time_learned

    kwargs = {"random_state": args.seeds[0]}
    if args.smoke:
        kwargs.update(n_train_traj=8, n_train_times=64, n_epochs=2, epoch_size=256)
        kwargs.update(width=16, depth=1, n_samples=4, n_steps=4, target_loss=10.0)
    ds = time_learned(**kwargs)
    return ds, learned_markdown(ds), None


def _bench_kde_score(args):
    from .score_speed import bench_kde_score

    sizes = args.members or ([200, 1000] if args.smoke else [10**3, 10**4, 10**5])
    ds = bench_kde_score(n_members=tuple(sizes), seed=args.seeds[0])
    return ds, ds.to_dataframe().to_markdown() if _has_tabulate() else str(ds), None


def _bench_speed(args):
    from .dapper_parity import _add_dapper_timings
    from .report import speed_markdown
    from .timing import time_filters

    case = args.case.removeprefix("speed-")
    n_cycles = (20 if args.smoke else 200) if args.cycles is None else args.cycles
    members = args.members or ([10] if args.smoke else None)
    repeats = 1 if args.smoke else 3
    ds = time_filters(case, n_cycles, members=members, repeats=repeats, seed=args.seeds[0])
    if args.dapper_python:
        _add_dapper_timings(ds, args.dapper_python, case, n_cycles, repeats)
    return ds, speed_markdown(ds), None


def _has_tabulate():
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


def _bench_registry():
    from . import B1_CASES
    from .nonlinear_filtering_cases import B2_CASES
    from .trajectory_smoothing import B3_CASES

    runners = {name: _bench_b1 for name in B1_CASES}
    runners.update({name: _bench_b2 for name in B2_CASES})
    runners.update({name: _bench_b3 for name in B3_CASES})
    runners.update({f"speed-{name}": _bench_speed for name in B1_CASES})
    runners["kde-score"] = _bench_kde_score
    runners["learned"] = _bench_learned
    return runners


def _case_kind(case):
    from . import B1_CASES
    from .nonlinear_filtering_cases import B2_CASES
    from .trajectory_smoothing import B3_CASES

    if case in B1_CASES:
        return "b1"
    if case in B2_CASES:
        return "b2"
    if case in B3_CASES:
        return "b3"
    if case.startswith("speed-") and case.removeprefix("speed-") in B1_CASES:
        return "speed"
    return case if case in ("kde-score", "learned") else None


def case_names():
    """The names :func:`run_named` runs.

    Returns
    -------
    list of str
        Every B1, B2, B3 and B4 case name, sorted.

    Examples
    --------
    >>> from dasim.benchmarks.registry import case_names
    >>> "l63-z" in case_names() and "speed-l96-40" in case_names()
    True
    """
    return sorted(_bench_registry())


def run_named(
    case,
    *,
    members=None,
    seeds=(0,),
    cycles=None,
    n_jobs=None,
    smoke=False,
    dapper_python=None,
):
    """Run a benchmark case by its name with the options of ``dasim bench CASE``.

    Parameters
    ----------
    case : str
        A name of :func:`case_names`.
    members : sequence of int, optional
        Ensemble sizes (the case's own by default).
    seeds : sequence of int, default=(0,)
        Seeds (the B4 cases use the first).
    cycles : int, optional
        Cycles per run (the case's own by default).
    n_jobs : int, optional
        Workers of the independent runs (joblib).
    smoke : bool, default=False
        The seconds-long version of the case.
    dapper_python : str, optional
        A Python with DAPPER: B1 and ``speed-*`` cases also run DAPPER alongside.

    Returns
    -------
    ds : xarray.Dataset
        The results.
    table : str
        Their markdown table.
    plot : callable or None
        ``plot(path)`` writes the case's figure, where it has one.

    Raises
    ------
    ValueError
        For an unknown case name.

    Examples
    --------
    >>> from dasim.benchmarks.registry import run_named
    >>> ds, table, plot = run_named("speed-l63-full", smoke=True, cycles=3)
    >>> table.splitlines()[0]
    '| filter | dasim ms |'
    """
    runners = _bench_registry()
    if case not in runners:
        raise ValueError(f"unknown case {case!r}; choose from {', '.join(sorted(runners))}.")
    options = SimpleNamespace(
        case=case,
        members=members,
        seeds=list(seeds),
        cycles=cycles,
        n_jobs=n_jobs,
        smoke=smoke,
        dapper_python=dapper_python,
    )
    return runners[case](options)


# ------------------------------------------------ what the command line's subcommands run
def _write_results(ds, table, plot, out, name, plot_path=None):
    """Write ``OUT/NAME.nc``, ``OUT/NAME.md`` and (with matplotlib) the plot; print the table."""
    out.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(out / f"{name}.nc")
    (out / f"{name}.md").write_text(table + "\n")
    print(table)
    written = ".md"
    if plot is not None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            plot(plot_path or out / f"{name}.png")
            written += ", .png"
        except ImportError:
            pass
    print(f"\nresults written to {out}/{name}.nc ({written})")
    return 0


def _run_b2_command(args, error):
    import time

    from .nonlinear_filtering import (
        b2_markdown,
        merge_b2,
        plot_b2,
        run_b2,
        tuned_params_from,
    )

    """``dasim nonlinear-filtering``: run (or merge) and write; ``error`` reports misuse."""
    command = " ".join(["dasim", *args.argv])
    if args.merge:
        ds = merge_b2(*args.merge)
        if ds.attrs.get("case") != args.case:
            error(f"--merge: the files hold case {ds.attrs.get('case')!r}, not {args.case!r}")
        ds.attrs["merged_by"] = command
    else:
        start = time.perf_counter()
        ds = run_b2(
            args.case,
            members=args.members,
            seeds=[0, 1, 2] if args.seeds is None else args.seeds,
            methods=None if not args.methods else args.methods.split(","),
            n_cycles=100 if args.cycles is None else args.cycles,
            tune=not args.no_tune,
            n_jobs=args.n_jobs,
            progress=not args.smoke,
            smoke=args.smoke,
            max_members=args.max_members,
            w2_stride=args.w2_stride,
            tune_on=args.tune_on,
            params=None if not args.params_from else tuned_params_from(args.params_from),
        )
        ds.attrs.update(
            command=command,
            date=str(date.today()),
            wall_seconds=time.perf_counter() - start,
            blas_threads=1,
        )
    plot = lambda path: plot_b2(ds, path)  # noqa: E731
    return _write_results(ds, b2_markdown(ds), plot, args.out, args.case, args.plot)


def _run_b3_command(args):
    """``dasim trajectory-smoothing``: run, print the table, write the files asked for."""
    from .report import b3_markdown, plot_b3
    from .trajectory_smoothing import run_b3

    ds = run_b3(args.cases, seeds=tuple(args.seeds), smoke=args.smoke, **args.settings)
    print(b3_markdown(ds))
    if args.out:
        ds.to_netcdf(args.out)
    if args.plot:
        plot_b3(ds, args.plot)
    return 0


def _run_score_speed(args):
    """``dasim score-speed``: time, print, write the file asked for."""
    from .report import score_speed_lines
    from .score_speed import bench_kde_score

    ds = bench_kde_score(
        n_members=args.members,
        dim=args.dim,
        backend=args.backend.split(","),
        repeat=args.repeat,
        device=args.device,
        dtype=args.dtype,
        torch_threads=args.threads,
        floor=not args.no_floor,
    )
    print(score_speed_lines(ds))
    if args.out:
        ds.to_netcdf(args.out)
    return 0
