"""The ``dasim`` command line, the only one of the package.

``dasim demo``; ``dasim bench CASE`` (every benchmark case, common options);
``dasim nonlinear-filtering CASE`` (B2 with all its options), ``dasim
trajectory-smoothing`` (B3 with all its options) and ``dasim score-speed`` (B4's KDE
score timing).
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

from ._demo import _demo_command
from .benchmarks.registry import (  # noqa: F401  (_bench_registry, _case_kind: what a case is)
    _bench_registry,
    _case_kind,
    _run_b2_command,
    _run_b3_command,
    _run_score_speed,
    _write_results,
)

__all__ = ["main", "nonlinear_filtering_main", "trajectory_smoothing_main"]


def _resolve_demo_args(parser, args):
    """Refuse (exit status 2, before any work) demo options that cannot be honoured."""
    args.out = _check_out(parser, args.out, "demo.png is")
    if args.cycles < _DEMO_MIN_CYCLES:
        parser.error(
            f"--cycles must be at least {_DEMO_MIN_CYCLES} (a burn-in and a time window), "
            f"got {args.cycles}"
        )
    if args.members < 2:
        parser.error(f"--members must be at least 2 (an ensemble), got {args.members}")
    if args.reference_members < 10 * args.members:
        parser.error(
            f"--reference-members must be at least 10 times --members ({10 * args.members}) "
            f"to stand for the exact posterior, got {args.reference_members}"
        )
    if args.window > args.cycles:
        parser.error(f"--window ({args.window}) cannot exceed --cycles ({args.cycles})")
    if args.seed < 0:
        parser.error(f"--seed must be a non-negative integer, got {args.seed}")


#: Fewest cycles ``dasim demo`` runs (its burn-in is half the cycles, at most 20).
_DEMO_MIN_CYCLES = 10
#: The size options of ``dasim demo``: flag, default, help.
_DEMO_SIZES = (
    ("--cycles", 100, f"assimilation cycles, at least {_DEMO_MIN_CYCLES}"),
    ("--members", 500, "ensemble size of the KDE filter, the EnKF and the SIR filter, >= 2"),
    ("--reference-members", 30000, "reference particles, at least 10 times --members"),
    ("--window", 50, "cycles in the figure's time window, the last ones, at most --cycles"),
)


#: The options of ``dasim bench`` that each kind of case honours (the rest are refused).
_HONOURED = {
    "b1": {"members", "seeds", "cycles", "n_jobs", "dapper_python"},
    "b2": {"members", "seeds", "cycles", "n_jobs"},
    "b3": {"seeds", "n_jobs"},
    "speed": {"members", "seeds", "cycles", "dapper_python"},
    "kde-score": {"members", "seeds"},
    "learned": {"seeds"},
}
#: Kinds of case that run one seed only, and kinds whose --smoke fixes the cycles.
_ONE_SEED = {"speed", "kde-score", "learned"}
_SMOKE_FIXES_CYCLES = {"b1", "b2"}
#: Suffixes that make an --out path a file name, not a directory.
_FILE_SUFFIXES = {".nc", ".nc4", ".cdf", ".h5", ".md", ".png", ".pdf", ".svg", ".csv", ".json"}


def _int_type(text, minimum=None, as_list=False):
    """An argparse integer (or comma-separated integers) at least ``minimum``."""
    what = "comma-separated integers such as 0,1,2" if as_list else "an integer"
    try:
        values = [int(v) for v in str(text).split(",")] if as_list else [int(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if minimum is not None and min(values) < minimum:
        kind = "positive integers" if as_list else "a positive integer"
        raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}")
    return values if as_list else values[0]


def _int_list(text):
    """``"0,1,2"`` -> ``[0, 1, 2]``, for argparse (a clear error on anything else)."""
    return _int_type(text, as_list=True)


def _positive_int_list(text):
    return _int_type(text, 1, as_list=True)


def _positive_int(text):
    try:
        return _int_type(text, 1)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None


def _n_jobs(text):
    value = _int_type(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a non-zero integer (-1: all cores), got 0")
    return value


def _check_out(parser, out, written):
    """``--out`` names a directory: refuse a file name or an existing file, before any work."""
    path = Path(out)
    if path.suffix.lower() in _FILE_SUFFIXES or (path.exists() and not path.is_dir()):
        what = "is an existing file" if path.is_file() else "looks like a file name"
        suggestion = path.parent / path.stem if path.suffix else "results"
        parser.error(
            f"--out is the directory {written} written into, but {out!r} {what}; pass a "
            f"directory, e.g. --out {suggestion}"
        )
    return path


def _resolve_bench_args(parser, args):
    """Check the options against what the case honours; fill in the case's defaults.

    Refuses (``parser.error``, exit status 2) an unknown case, an option the case does not
    use, several seeds where one is run, and ``--cycles`` where ``--smoke`` fixes them.
    """
    args.out = _check_out(parser, args.out, "CASE.nc, CASE.md and CASE.png are")
    from .benchmarks.registry import case_names

    kind = _case_kind(args.case)
    if kind is None:
        parser.error(f"unknown case {args.case!r}; choose from {', '.join(case_names())}")
    given = {
        name
        for name in ("members", "seeds", "cycles", "n_jobs", "dapper_python")
        if getattr(args, name) is not None
    }
    refused = sorted(given - _HONOURED[kind])
    if refused:
        flags = ", ".join("--" + name.replace("_", "-") for name in refused)
        usable = ", ".join("--" + n.replace("_", "-") for n in sorted(_HONOURED[kind]))
        parser.error(
            f"case {args.case!r} does not use {flags}; of the run options it uses "
            f"{usable or 'none'} (besides --smoke and --out)"
        )
    one_seed = kind in _ONE_SEED or args.smoke
    if args.seeds is not None and one_seed and len(args.seeds) > 1:
        why = "--smoke runs one seed" if args.smoke else f"case {args.case!r} runs one seed"
        parser.error(f"{why}; got --seeds {','.join(map(str, args.seeds))} (pass one seed)")
    if args.smoke and args.cycles is not None and kind in _SMOKE_FIXES_CYCLES:
        parser.error("--smoke fixes the number of cycles of this case; drop --cycles or --smoke")
    if args.seeds is None:
        args.seeds = [0] if one_seed else [0, 1, 2]
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds repeats a seed: {','.join(map(str, args.seeds))}")
    return args


def _bench(args):
    from threadpoolctl import threadpool_limits

    from . import __version__
    from .benchmarks.registry import run_named

    with threadpool_limits(1):
        options = ("members", "seeds", "cycles", "n_jobs", "smoke", "dapper_python")
        ds, table, plot = run_named(args.case, **{k: getattr(args, k) for k in options})
    ds.attrs.update(
        command=" ".join(["dasim", *args.argv]),
        date=str(date.today()),
        seeds=",".join(map(str, args.seeds)),
        blas_threads=1,
        dasim_version=__version__,
    )
    return _write_results(ds, table, plot, args.out, args.case)


_CASES_HELP = (
    "the case to run. B1 (classical parity with DAPPER): l63-full, l96-40, l96-10, "
    "l96-20; B2 (KDE diffusion filter): l63-z, l63-atan, l96-10-atan, l96-20-atan, "
    "l96-40-half; B3 (learned assimilators): b3-lo, b3-hi, b3-sin, b3-atan; B4 (speed): "
    "speed-CASE for any B1 CASE, kde-score, learned. Settings and results: "
    "docs/benchmarks.md in the dasim repository"
)


def _parser():
    from . import __version__

    parser = argparse.ArgumentParser(prog="dasim", description=__doc__)
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {__version__}",
        help="print dasim's version and exit",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="the KDE filter, the EnKF and the SIR filter on a bimodal Lorenz-63 posterior",
        description="Lorenz-63 observed through z only (B2 case l63-z), whose posterior of "
        "(x, y) has two mirror-image modes: the KDE diffusion filter, the EnKF and the SIR "
        "filter beside a reference particle filter with many particles. Prints RMSE, CRPS, "
        "W2 to the reference and the time per cycle; writes OUT/demo.png (needs matplotlib): "
        "a time window of z and x, and each filter's (x, y) ensemble against the reference at "
        "the two cycles of the window where the reference is most clearly bimodal.",
    )
    for flag, default, text in _DEMO_SIZES:
        demo.add_argument(
            flag, type=_positive_int, default=default, help=f"{text} (default: {default})"
        )
    demo.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the truth, the observations, the ensembles and the filters, "
        "non-negative (default: 0)",
    )
    demo.add_argument(
        "--out",
        default="results",
        help="directory for demo.png, created if missing (default: results)",
    )
    demo.set_defaults(func=_demo_command, parser=demo, resolve=_resolve_demo_args)
    bench = sub.add_parser(
        "bench",
        help="run a benchmark case (settings and results: docs/benchmarks.md)",
        description="Run a benchmark case and write OUT/CASE.nc (the results, with how they "
        "were made in its attributes), OUT/CASE.md (the table) and, where the case has one, "
        "OUT/CASE.png. Options a case does not use are refused.",
    )
    bench.add_argument("case", metavar="CASE", help=_CASES_HELP)
    bench.add_argument(
        "--members",
        type=_positive_int_list,
        help="comma-separated ensemble sizes, e.g. 10,100 (default: the case's own; "
        "kde-score: the sizes timed)",
    )
    bench.add_argument(
        "--seeds",
        type=_int_list,
        help="comma-separated seeds, e.g. 0,1,2 (default: 0,1,2 for B1, B2 and B3, one "
        "seed 0 with --smoke and for the B4 cases, which run one seed)",
    )
    bench.add_argument(
        "--cycles",
        type=_positive_int,
        help="cycles per run (default: the case's own); B1 and B2 cases (not with --smoke) "
        "and speed-* cases (the cycles timed)",
    )
    bench.add_argument(
        "--n-jobs",
        type=_n_jobs,
        help="joblib workers for independent runs, -1 for all cores (B1, B2, B3; default: "
        "joblib's, one unless a joblib.parallel_config says otherwise)",
    )
    bench.add_argument(
        "--smoke",
        action="store_true",
        help="a seconds-long version of the case (small sizes, one seed), for CI",
    )
    bench.add_argument(
        "--dapper-python",
        metavar="PYTHON",
        help="a Python with DAPPER installed: B1 and speed-* cases then also run DAPPER's "
        "filters on this machine alongside (RMSE per seed, ms per cycle)",
    )
    bench.add_argument(
        "--out",
        default="results",
        help="directory the results are written into, created if missing (default: "
        "results); a file name such as out.nc is refused",
    )
    bench.set_defaults(func=_bench, parser=bench, resolve=_resolve_bench_args)
    _add_nonlinear_filtering(sub)
    _add_trajectory_smoothing(sub)
    _add_score_speed(sub)
    return parser


# ----------------------------------------------- dasim nonlinear-filtering (B2 in full)
def _add_nonlinear_filtering(sub):
    from .benchmarks.nonlinear_filtering_cases import B2_CASES, B2_METHODS

    p = sub.add_parser(
        "nonlinear-filtering",
        help="B2 with every option: the KDE filter against the EnKF and particle filters",
        description="B2: the closed-form KDE diffusion filter against the EnKF and the "
        "particle filters (settings and results: docs/benchmarks_b2.md). Writes "
        "OUT/CASE.nc, OUT/CASE.md and OUT/CASE.png.",
    )
    add = p.add_argument
    add("case", choices=sorted(B2_CASES), help="the B2 setting to run")
    add(
        "--members",
        type=_positive_int_list,
        help="comma-separated ensemble sizes, e.g. 25,50 (default: the case's own; 16 "
        "with --smoke)",
    )
    add(
        "--seeds",
        type=_int_list,
        help="comma-separated scored seeds (default: 0,1,2; 0 with --smoke, which runs one)",
    )
    add("--methods", help=f"comma-separated methods (default: all of {', '.join(B2_METHODS)})")
    add(
        "--max-members",
        default="",
        help="largest ensemble per method, e.g. KDE-ode=250 (comma-separated METHOD=N)",
    )
    add(
        "--cycles",
        type=_positive_int,
        help="cycles per run (default: 100; --smoke fixes 25 and refuses this option)",
    )
    add(
        "--no-tune",
        action="store_true",
        help="skip the GridSearchCV tuning of the bandwidths and inflation (use defaults)",
    )
    add(
        "--tune-on",
        type=_positive_int,
        default=1,
        help="training trajectories for the tuning: 1 (default) tunes on one trajectory "
        "with TimeSeriesSplit(3); K >= 2 on K trajectories as long as the runs, each test "
        "fold one whole trajectory",
    )
    add(
        "--w2-stride",
        type=_positive_int,
        default=1,
        help="compute W2 to the reference every this many cycles (default: 1)",
    )
    add("--n-jobs", type=_n_jobs, help="joblib workers for the runs, -1 for all cores")
    add("--smoke", action="store_true", help="a seconds-long version (small sizes, one seed)")
    add(
        "--out",
        default="results/b2",
        help="directory the results are written into, created if missing (default: "
        "results/b2); a file name such as out.nc is refused",
    )
    add("--plot", help="PNG file for the plot (default: OUT/CASE.png)")
    add(
        "--params-from",
        metavar="FILE.nc",
        help="an earlier run's netCDF file whose tuned parameters are reused (those groups "
        "are not tuned again)",
    )
    add(
        "--merge",
        nargs="+",
        metavar="FILE.nc",
        help="run nothing: merge earlier runs of CASE and write the tables of the result",
    )
    p.set_defaults(
        func=lambda args: _run_b2_command(args, args.parser.error),
        parser=p,
        resolve=_resolve_b2_args,
    )


#: Options ``--merge`` ignores, with the value each has when not given.
_B2_MERGE_IGNORES = {
    "members": None,
    "seeds": None,
    "methods": None,
    "max_members": "",
    "cycles": None,
    "no_tune": False,
    "tune_on": 1,
    "n_jobs": None,
    "smoke": False,
    "params_from": None,
}


def _resolve_b2_args(parser, args):
    """Refuse, before any work, what ``dasim nonlinear-filtering`` cannot honour."""
    args.out = _check_out(parser, args.out, "CASE.nc, CASE.md and CASE.png are")
    if args.smoke and args.seeds is not None and len(args.seeds) > 1:
        parser.error(f"--smoke runs one seed; got --seeds {','.join(map(str, args.seeds))}")
    if args.smoke and args.cycles is not None:
        parser.error("--smoke fixes the number of cycles (25); drop --cycles or --smoke")
    if args.merge:
        given = [k for k, v in _B2_MERGE_IGNORES.items() if getattr(args, k) != v]
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            parser.error(f"--merge runs nothing, so {flags} would be ignored; drop it")
    try:
        items = (item.split("=") for item in args.max_members.split(",") if item)
        args.max_members = {k: int(v) for k, v in items}
    except ValueError:
        parser.error(f"--max-members must be METHOD=N[,METHOD=N...], got {args.max_members!r}")


# ---------------------------------------------- dasim trajectory-smoothing (B3 in full)
#: Size options of ``dasim trajectory-smoothing`` that ``--smoke`` fixes, and the others.
_B3_SMOKE_FIXED = {
    "n_train_traj": "training trajectories (default: 1024)",
    "n_train_times": "states per training trajectory (default: 1024)",
    "n_epochs": "training epochs (default: 10)",
    "n_test": "test windows per case and seed (default: 8)",
    "n_samples": "posterior samples per window and method (default: 64)",
}
_B3_OVERRIDES = {
    "epoch_size": "windows per epoch (default: n_train_traj * (n_train_times // 5))",
    "n_steps": "sampler steps (default: 64)",
    "width": "score network width (default: 128)",
    "depth": "score network depth (default: 3)",
    "n_particles": "particles of the reference smoother (default: 16384)",
}


def _add_trajectory_smoothing(sub):
    from .benchmarks.trajectory_smoothing import B3_CASES

    p = sub.add_parser(
        "trajectory-smoothing",
        help="B3 with every option: SDA and SOAD against a particle smoother",
        description="B3: the learned assimilators (SDA, SOAD) on Lorenz-63 trajectories. "
        "Settings and results: docs/benchmarks_b3.md. Prints the table; --out and --plot "
        "write the results and the plot.",
    )
    add = p.add_argument
    cases = list(B3_CASES)
    add("--cases", nargs="+", default=cases, choices=cases, help="the cases (default: all)")
    # The sizes default to None so that one given with --smoke, which fixes it, can be
    # refused; run_b3's own defaults apply otherwise.
    for name, text in _B3_SMOKE_FIXED.items():
        add("--" + name.replace("_", "-"), type=_positive_int, help=text + "; not with --smoke")
    for name, text in _B3_OVERRIDES.items():
        add("--" + name.replace("_", "-"), type=_positive_int, help=text)
    add("--seeds", type=int, nargs="+", default=[0], help="seeds, space-separated (default: 0)")
    add(
        "--threads",
        type=_positive_int,
        help="torch threads for training and sampling (the assimilators' n_threads; "
        "default: theirs)",
    )
    add("--smoke", action="store_true", help="a seconds-long version (tiny training set)")
    add("--out", metavar="FILE.nc", help="netCDF file of the results (default: none)")
    add("--plot", metavar="FILE.png", help="PNG file of the plot (default: none)")
    p.set_defaults(func=_run_b3_command, parser=p, resolve=_resolve_b3_args)


def _resolve_b3_args(parser, args):
    """Refuse, before any work, what ``dasim trajectory-smoothing`` cannot honour."""
    for flag, path in (("--out", args.out), ("--plot", args.plot)):
        if path is not None and Path(path).is_dir():
            parser.error(f"{flag} is a file to write, but {path!r} is a directory")
    given = {name: getattr(args, name) for name in _B3_SMOKE_FIXED if getattr(args, name)}
    if args.smoke and given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        parser.error(f"--smoke fixes {flags}; drop those options or --smoke")
    given.update({name: getattr(args, name) for name in _B3_OVERRIDES if getattr(args, name)})
    if args.threads:
        given["n_threads"] = args.threads
    args.settings = given


# ------------------------------------------------------- dasim score-speed (B4 KDE score)
def _add_score_speed(sub):
    p = sub.add_parser(
        "score-speed",
        help="B4 KDE score: seconds and peak memory of one closed-form score evaluation",
        description="Time one KDE score evaluation (M = N queries) per backend and "
        "ensemble size, with its peak memory and the floor (docs/benchmarks_b2.md).",
    )
    add = p.add_argument
    add("--members", type=_positive_int_list, default=[1000, 10000, 100000], help="sizes N")
    add("--dim", type=_positive_int, default=20, help="state dimension d (default: 20)")
    add("--backend", default="numpy,torch", help="comma-separated backends (default: both)")
    add("--repeat", type=_positive_int, default=1, help="timed evaluations; the fastest counts")
    add("--device", default="auto", help="the torch device (default: auto)")
    add("--dtype", default="float64", choices=("float64", "float32"), help="precision")
    add("--threads", type=_positive_int, help="torch CPU threads (default: torch's)")
    add("--no-floor", action="store_true", help="skip the floor timing")
    add("--out", metavar="FILE.nc", help="netCDF file to write (default: none)")
    p.set_defaults(func=_run_score_speed, parser=p, resolve=lambda parser, args: None)


def _forward(command, argv=None):
    """``dasim COMMAND ARGV...``, for the per-command entry points below."""
    return main([command, *(sys.argv[1:] if argv is None else argv)])


#: The docstring of each ``*_main`` below, one ``dasim COMMAND`` run from Python.
_ENTRY_DOC = """Run ``dasim {command}`` ({what}) from Python.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after ``dasim {command}`` (``sys.argv[1:]`` by default).

    Returns
    -------
    {returns}.
        Usage errors exit through ``SystemExit(2)`` before any work.

    Examples
    --------
    >>> from dasim.cli import {name}
    >>> {name}({example})  # doctest: +SKIP
    """


def _entry_doc(command, what, returns, example):
    """Decorator: give a ``*_main`` below :data:`_ENTRY_DOC`, filled in."""

    def decorate(func):
        fields = {"command": command, "what": what, "returns": returns, "example": example}
        func.__doc__ = _ENTRY_DOC.format(name=func.__name__, **fields)
        return func

    return decorate


@_entry_doc(
    "nonlinear-filtering",
    "B2 with every option",
    "int\n        Exit status",
    '["l63-z", "--smoke", "--out", "/tmp/b2"]',
)
def nonlinear_filtering_main(argv=None):
    return _forward("nonlinear-filtering", argv)


@_entry_doc(
    "trajectory-smoothing",
    "B3 with every option",
    "xarray.Dataset\n        The results, as "
    ":func:`~dasim.benchmarks.trajectory_smoothing.run_b3` returns them",
    '["--cases", "b3-hi", "--smoke"]',
)
def trajectory_smoothing_main(argv=None):
    return _forward("trajectory-smoothing", argv)


def main(argv=None):
    """Run the ``dasim`` command (its entry point).

    Parameters
    ----------
    argv : list of str, optional
        Arguments (``sys.argv[1:]`` by default).

    Returns
    -------
    int
        Exit status. Usage errors (an unknown case, an option the case does not use, an
        ``--out`` that names a file, demo sizes it cannot honour) exit through
        ``SystemExit`` with status 2, as :mod:`argparse` does, before any work.

    Examples
    --------
    ``main(["demo"])`` runs the KDE filter, the EnKF and the SIR filter on a bimodal
    Lorenz-63 posterior and ``main(["bench", "l63-full"])`` a benchmark case; ``--help``
    lists the commands:

    >>> import contextlib
    >>> import io
    >>> from dasim.cli import main
    >>> buf = io.StringIO()
    >>> with contextlib.redirect_stdout(buf):
    ...     try:
    ...         main(["--help"])
    ...     except SystemExit as exc:
    ...         code = exc.code
    >>> code, buf.getvalue().startswith("usage: dasim")
    (0, True)
    """
    parser = _parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    args.resolve(args.parser, args)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
