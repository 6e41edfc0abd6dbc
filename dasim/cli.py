"""The ``dasim`` command line: ``dasim demo`` and ``dasim bench CASE``."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np

__all__ = ["main"]


def _demo(args):
    """The KDE filter beside the EnKF and the SIR filter on B2's ``l63-z``: table and figure."""
    # POT (the W2 distance) would otherwise import torch for a backend the demo never uses
    if "ot" not in sys.modules:
        os.environ.setdefault("POT_BACKEND_DISABLE_PYTORCH", "1")
    from ._demo import demo_table, plot_demo, run_demo

    res = run_demo(
        n_cycles=args.cycles,
        n_members=args.members,
        n_reference=args.reference_members,
        seed=args.seed,
        window=args.window,
    )
    print(demo_table(res))
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        print("\n(install matplotlib for the figure: pip install dasim[plot])")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot_demo(res, out / "demo.png")
    print(f"\nfigure written to {out / 'demo.png'}")
    return 0


def _resolve_demo_args(parser, args):
    """Refuse (exit status 2, before any work) demo options that cannot be honoured."""
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


def _run_dapper(python, script, args, what):
    """Run one of DAPPER's helper scripts; its last JSON line, or {} if it failed."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(
        [python, str(Path(__file__).parent / "benchmarks" / script), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        print(f"DAPPER {what} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return {}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def _dapper_timings(python, case, n_cycles, repeats=1):
    """DAPPER's seconds per cycle, ``{label: seconds}`` (fastest of ``repeats`` runs)."""
    out = _run_dapper(python, "dapper_timing.py", [case, n_cycles, repeats], "timing")
    return out.get(case, {})


def _dapper_accuracy(python, case, seeds):
    """DAPPER's own time-mean analysis RMSE per seed, ``{label: [rmse, ...]}``."""
    out = _run_dapper(python, "dapper_accuracy.py", [case, *seeds], "accuracy run")
    return out.get(case, {})


def _save_plot(fig_or_ax, path):
    fig = getattr(fig_or_ax, "figure", fig_or_ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _bench_b1(args, out):
    from .benchmarks import b1_case, b1_methods, markdown_table, plot_metric, run_case

    case = b1_case(args.case)
    members, seeds = args.members, args.seeds
    n_cycles = 40 if args.smoke else args.cycles
    ds = run_case(
        case,
        b1_methods(args.case, members),
        seeds=seeds,
        n_cycles=n_cycles,
        n_jobs=args.n_jobs,
        progress=not args.smoke,
        burn_in=10 if args.smoke else None,
    )
    if args.dapper_python:
        timings = _dapper_timings(
            args.dapper_python, args.case, min(n_cycles or case.n_cycles, 200)
        )
        for key, value in timings.items():
            ds.attrs[f"dapper_seconds_per_cycle[{key}]"] = value
        if not args.smoke:
            accuracy = _dapper_accuracy(args.dapper_python, args.case, seeds)
            rmse = np.full((ds.sizes["method"], len(seeds)), np.nan)
            for i, label in enumerate(ds["method"].values):
                if str(label) in accuracy:
                    rmse[i] = accuracy[str(label)]
            # DAPPER's own runs on the same seed numbers (its own random streams)
            ds["dapper_rmse"] = (("method", "seed"), rmse)
    table = markdown_table(ds)
    if any(k.startswith("dapper_seconds") for k in ds.attrs):
        lines = [
            f"| {k[len('dapper_seconds_per_cycle[') : -1]} | {1000 * v:.2f} ms |"
            for k, v in ds.attrs.items()
            if k.startswith("dapper_seconds")
        ]
        table += "\n\nDAPPER, same machine, same run:\n\n| method | ms per cycle |\n|---|---|\n"
        table += "\n".join(lines)
    return ds, table, lambda path: _save_plot(plot_metric(ds, "rmse"), path)


def _bench_b2(args, out):
    from .benchmarks.b2 import b2_markdown, plot_b2, run_b2

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


def _bench_b3(args, out):
    from .benchmarks.b3 import b3_markdown, run_b3

    ds = run_b3(args.case, seeds=args.seeds, smoke=args.smoke, n_jobs=args.n_jobs)
    return ds, b3_markdown(ds), None


def _bench_learned(args, out):
    from .benchmarks.learned import time_learned

    kwargs = {"random_state": args.seeds[0]}
    if args.smoke:
        kwargs.update(n_train_traj=8, n_train_times=64, n_epochs=2, epoch_size=256)
        kwargs.update(width=16, depth=1, n_samples=4, n_steps=4, target_loss=10.0)
    ds = time_learned(**kwargs)
    head = "| method | " + " | ".join(ds.data_vars) + " |"
    rows = [
        f"| {m} | " + " | ".join(f"{float(ds[v].sel({'method': m})):.4g}" for v in ds.data_vars)
        for m in ds["method"].values
    ]
    table = "\n".join([head, "|" + "---|" * (len(ds.data_vars) + 1), *(r + " |" for r in rows)])
    return (
        ds,
        f"device: {ds.attrs['device']}, target loss {ds.attrs['target_loss']}\n\n{table}",
        None,
    )


def _bench_kde_score(args, out):
    from .benchmarks.kde_score import bench_kde_score

    sizes = args.members or ([200, 1000] if args.smoke else [10**3, 10**4, 10**5])
    ds = bench_kde_score(n_members=tuple(sizes), seed=args.seeds[0])
    return ds, ds.to_dataframe().to_markdown() if _has_tabulate() else str(ds), None


def _bench_speed(args, out):
    from .benchmarks.speed import speed_markdown, time_filters

    case = args.case.removeprefix("speed-")
    n_cycles = (20 if args.smoke else 200) if args.cycles is None else args.cycles
    members = args.members or ([10] if args.smoke else None)
    repeats = 1 if args.smoke else 3
    seed = args.seeds[0]
    ds = time_filters(case, n_cycles, members=members, repeats=repeats, seed=seed)
    if args.dapper_python:
        timings = _dapper_timings(args.dapper_python, case, n_cycles, repeats)
        theirs = np.full(ds["seconds_per_cycle"].shape, np.nan)
        for i, label in enumerate(ds["filter"].values):
            for j, n in enumerate(ds["n_members"].values):
                theirs[i, j] = timings.get(f"{label} N={int(n)}", np.nan)
        ds["dapper_seconds_per_cycle"] = (("filter", "n_members"), theirs)
        ds.attrs["dapper"] = "dapper_timing.py in " + args.dapper_python
    return ds, speed_markdown(ds), None


def _has_tabulate():
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


def _bench_registry():
    from .benchmarks import B1_CASES
    from .benchmarks.b2 import B2_CASES
    from .benchmarks.b3 import B3_CASES

    runners = {name: _bench_b1 for name in B1_CASES}
    runners.update({name: _bench_b2 for name in B2_CASES})
    runners.update({name: _bench_b3 for name in B3_CASES})
    runners.update({f"speed-{name}": _bench_speed for name in B1_CASES})
    runners["kde-score"] = _bench_kde_score
    runners["learned"] = _bench_learned
    return runners


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


def _case_kind(case):
    from .benchmarks import B1_CASES
    from .benchmarks.b2 import B2_CASES
    from .benchmarks.b3 import B3_CASES

    if case in B1_CASES:
        return "b1"
    if case in B2_CASES:
        return "b2"
    if case in B3_CASES:
        return "b3"
    if case.startswith("speed-") and case.removeprefix("speed-") in B1_CASES:
        return "speed"
    return case if case in ("kde-score", "learned") else None


def _int_list(text):
    """``"0,1,2"`` -> ``[0, 1, 2]``, for argparse (a clear error on anything else)."""
    try:
        values = [int(v) for v in str(text).split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 0,1,2, got {text!r}"
        ) from None
    return values


def _positive_int_list(text):
    values = _int_list(text)
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _n_jobs(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
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
    kind = _case_kind(args.case)
    if kind is None:
        runners = _bench_registry()
        parser.error(f"unknown case {args.case!r}; choose from {', '.join(sorted(runners))}")
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

    runners = _bench_registry()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    with threadpool_limits(1):
        ds, table, plot = runners[args.case](args, out)
    ds.attrs.update(
        command=" ".join(["dasim", *args.argv]),
        date=str(date.today()),
        seeds=",".join(map(str, args.seeds)),
        blas_threads=1,
        dasim_version=__version__,
    )
    ds.to_netcdf(out / f"{args.case}.nc")
    (out / f"{args.case}.md").write_text(table + "\n")
    print(table)
    written = ".md"
    if plot is not None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            plot(out / f"{args.case}.png")
            written += ", .png"
        except ImportError:
            pass
    print(f"\nresults written to {out}/{args.case}.nc ({written})")
    return 0


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
    demo.add_argument(
        "--cycles",
        type=_positive_int,
        default=100,
        help=f"assimilation cycles, at least {_DEMO_MIN_CYCLES} (default: 100)",
    )
    demo.add_argument(
        "--members",
        type=_positive_int,
        default=500,
        help="ensemble size of the KDE filter, the EnKF and the SIR filter, at least 2 "
        "(default: 500)",
    )
    demo.add_argument(
        "--reference-members",
        type=_positive_int,
        default=30000,
        help="particles of the reference particle filter, at least 10 times --members "
        "(default: 30000)",
    )
    demo.add_argument(
        "--window",
        type=_positive_int,
        default=50,
        help="cycles in the figure's time window, the last ones, at most --cycles (default: 50)",
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
    demo.set_defaults(func=_demo, parser=demo)
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
    bench.set_defaults(func=_bench, parser=bench)
    return parser


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
    written = "demo.png is" if args.command == "demo" else "CASE.nc, CASE.md and CASE.png are"
    args.out = _check_out(args.parser, args.out, written)
    if args.command == "bench":
        _resolve_bench_args(args.parser, args)
    else:
        _resolve_demo_args(args.parser, args)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
