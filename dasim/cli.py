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
    """Run a Lorenz-63 twin experiment with EnKF and SIRFilter; print a table, save a plot."""
    from . import metrics
    from .datasets import make_twin_experiment
    from .filters import EnKF, SIRFilter
    from .models import Lorenz63
    from .observations import ObservationModel

    model = Lorenz63(dt=0.01, steps_per_cycle=25)
    obs = ObservationModel("identity", noise_std=np.sqrt(2.0))
    X, y = make_twin_experiment(model, obs, args.cycles, random_state=args.seed)
    X_train, _ = make_twin_experiment(model, obs, 200, random_state=args.seed + 1)
    filters = {
        "EnKF (sqrt, N=10)": EnKF(model, obs, n_members=10, inflation=1.02),
        "EnKF (pert-obs, N=100)": EnKF(
            model, obs, n_members=100, variant="stochastic", inflation=1.02
        ),
        "SIRFilter (N=1000)": SIRFilter(model, obs, n_members=1000, jitter=0.9, ess_threshold=0.2),
    }
    print(f"Lorenz-63 twin experiment: {args.cycles} cycles, observe all, R = 2 I\n")
    print(f"{'filter':<26}{'RMSE':>8}{'CRPS':>8}{'spread/skill':>14}")
    results = {}
    for name, est in filters.items():
        est.set_params(random_state=args.seed).fit(X_train)
        ds = est.assimilate(y)
        w = ds["weights"].values if "weights" in ds else None
        a = ds["analysis"].values
        results[name] = ds
        print(
            f"{name:<26}{metrics.time_mean(metrics.rmse(X, a, w), 20):8.3f}"
            f"{metrics.time_mean(metrics.crps_ensemble(X, a, w), 20):8.3f}"
            f"{metrics.spread_skill(X, a, w, burn_in=20):14.2f}"
        )
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("\n(install matplotlib for the plot: pip install dasim[plot])")
        return 0
    fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    t = np.arange(len(X))
    ds = results["EnKF (sqrt, N=10)"]
    mean = ds["analysis"].mean("member").values
    sd = ds["analysis"].std("member").values
    for j, ax in enumerate(axes):
        ax.plot(t, X[:, j], "k", lw=1, label="truth")
        ax.plot(t, y[:, j], ".", color="tab:gray", ms=3, label="observations")
        ax.plot(t, mean[:, j], color="tab:blue", lw=1, label="EnKF mean")
        ax.fill_between(
            t,
            mean[:, j] - 2 * sd[:, j],
            mean[:, j] + 2 * sd[:, j],
            color="tab:blue",
            alpha=0.25,
            label="±2 spread",
        )
        ax.set_ylabel("xyz"[j])
    axes[0].legend(ncol=4, fontsize=8, loc="upper right")
    axes[-1].set_xlabel("cycle")
    fig.tight_layout()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "demo.png", dpi=110)
    print(f"\nplot written to {out / 'demo.png'}")
    return 0


def _dapper_timings(python, case, n_cycles):
    script = Path(__file__).parent / "benchmarks" / "dapper_timing.py"
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(
        [python, str(script), case, str(n_cycles)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        print(f"DAPPER timing failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return {}
    return json.loads(proc.stdout.strip().splitlines()[-1]).get(case, {})


def _bench(args):
    from threadpoolctl import threadpool_limits

    from .benchmarks import b1_case, b1_methods, markdown_table, run_case

    case = b1_case(args.case)
    members = None if args.members is None else [int(m) for m in args.members.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    n_cycles = 40 if args.smoke else args.cycles
    methods = b1_methods(args.case, members)
    if args.smoke:
        seeds = seeds[:1]
    with threadpool_limits(1):
        ds = run_case(
            case,
            methods,
            seeds=seeds,
            n_cycles=n_cycles,
            n_jobs=args.n_jobs,
            progress=not args.smoke,
        )
    ds.attrs.update(
        command=" ".join(["dasim", *sys.argv[1:]]),
        date=str(date.today()),
        seeds=",".join(map(str, seeds)),
        blas_threads=1,
    )
    if args.dapper_python:
        timings = _dapper_timings(args.dapper_python, args.case, n_cycles)
        for key, value in timings.items():
            ds.attrs[f"dapper_seconds_per_cycle[{key}]"] = value
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(out / f"{args.case}.nc")
    table = markdown_table(ds)
    print(table)
    if args.dapper_python:
        print("\nDAPPER, same machine, same run (ms per cycle):")
        for key, value in ds.attrs.items():
            if key.startswith("dapper_seconds"):
                print(f"  {key[len('dapper_seconds_per_cycle[') : -1]}: {1000 * value:.2f}")
    (out / f"{args.case}.md").write_text(table + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        from .benchmarks import plot_metric

        ax = plot_metric(ds, "rmse")
        ax.figure.tight_layout()
        ax.figure.savefig(out / f"{args.case}.png", dpi=110)
    except ImportError:
        pass
    print(f"\nresults written to {out}/{args.case}.nc (.md, .png)")
    return 0


def main(argv=None):
    """Run the ``dasim`` command (its entry point).

    Parameters
    ----------
    argv : list of str, optional
        Arguments (``sys.argv[1:]`` by default).

    Returns
    -------
    int
        Exit status.

    Examples
    --------
    ``main(["demo"])`` runs a Lorenz-63 twin experiment and ``main(["bench", "l63-full"])``
    a benchmark case; ``--help`` lists the commands:

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
    parser = argparse.ArgumentParser(prog="dasim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="Lorenz-63 twin experiment: table and plot")
    demo.add_argument("--cycles", type=int, default=300)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="results")
    demo.set_defaults(func=_demo)
    bench = sub.add_parser("bench", help="run a benchmark case of BENCHMARKS.md")
    bench.add_argument("case", help="l63-full, l96-40, l96-10 or l96-20")
    bench.add_argument("--members", help="comma-separated ensemble sizes to keep")
    bench.add_argument("--seeds", default="0,1,2")
    bench.add_argument("--cycles", type=int, default=1000)
    bench.add_argument("--n-jobs", type=int, default=None)
    bench.add_argument("--smoke", action="store_true", help="seconds-long version for CI")
    bench.add_argument("--dapper-python", help="a Python with DAPPER, to time it alongside")
    bench.add_argument("--out", default="results")
    bench.set_defaults(func=_bench)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
