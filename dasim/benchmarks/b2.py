"""B2: the closed-form diffusion (KDE) filter against the EnKF and particle filters.

The five settings of BENCHMARKS.md, B2 (Binder, Dasgupta and Oberai, 2026): Lorenz-63
observed through ``z`` or through ``arctan`` of every component, Lorenz-96 in 10 and 20
dimensions observed through ``arctan``, and Lorenz-96 in 40 dimensions observed on every
other component. Per ensemble size ``N`` and seed, the filters run on the same
observation record from the same initial ensemble:

``KDE-ode``, ``KDE-mixture``
    :class:`~dasim.filters.KDEDiffusionFilter` with the probability-flow ODE (the paper's
    sampler, adaptive RK45) and with the exact mixture sampler. Both target the same
    distribution, the Gaussian mixture ``sum_i pi_i N(x_i, sigma_x^2 I)``; the ODE costs
    ``O(N^2)`` per right-hand-side evaluation, the mixture ``O(N)``.
    Both are built from :data:`KDEDiffusionFilter.PAPER_PARAMS
    <dasim.filters.KDEDiffusionFilter>` explicitly (plus the sampler and the tuned
    bandwidths), so they stay the paper's filter whatever the class defaults become.
``KDE-robust``, ``KDE-robust-default``
    :class:`~dasim.filters.KDEDiffusionFilter` with :data:`ROBUST_PARAMS`: the
    covariance-shaped kernel with variance-preserving shrinkage, the exact likelihood
    tempered to keep the ESS at ``ess_target * N`` with up to 20 stages of progressive
    correction, the mixture sampler. ``KDE-robust`` tunes the relative bandwidth
    (a fraction of Scott's constant) and ``ess_target``; ``KDE-robust-default`` is the
    same configuration untuned (Scott's constant, ``ess_target=0.5``).
``KDE-local``
    The localised :class:`~dasim.filters.KDEDiffusionFilter` (issue #14,
    :data:`LOCAL_PARAMS`): local weights and a tapered state distance within a tuned
    Gaspari-Cohn ``localization_radius``, the exact likelihood tempered per component
    to an ESS of N/2, the ``"ab3"`` probability-flow ODE (20 score evaluations); tuned
    ``localization_radius`` and ``bandwidth_x``.
``KDE-joint``
    :class:`~dasim.filters.KDEDiffusionFilter` with :data:`JOINT_PARAMS`: the kernel
    shaped by the joint covariance of states and predicted observations, conditioned in
    closed form (each kernel moved toward the observation), with shrinkage, the exact
    likelihood and the ``"ab3"`` probability-flow ODE; tuned relative bandwidth and
    inflation.
``KDE-default``
    :class:`~dasim.filters.KDEDiffusionFilter` with its class defaults, untuned: what a
    new user gets.
``EnKF``
    Square-root :class:`~dasim.filters.EnKF` (ETKF), tuned multiplicative inflation.
``LETKF``
    The same with a tuned ``localization_radius`` (and inflation).
``SIR``
    Bootstrap :class:`~dasim.filters.SIRFilter` resampling every cycle, no jitter (the
    baseline the paper ran).
``SIR-jitter``
    Regularised particle filter: :class:`~dasim.filters.SIRFilter` with tuned jitter and
    resampling threshold. In distribution the KDE filter is a weighted resample plus
    Gaussian jitter, so this is the honest baseline.

Tuning: every tuned parameter (``bandwidth_x`` and ``bandwidth_y`` of the KDE filter,
``bandwidth_x`` and ``ess_target`` of ``KDE-robust``, the EnKF inflation, the SIR jitter
and resampling threshold) is chosen per ``N`` by
:class:`~sklearn.model_selection.GridSearchCV` and the filters' default score (negative
CRPS), on training data simulated with seeds of its own (``train_seed``), never on a
scored one: by default one trajectory split by ``TimeSeriesSplit(3)``; with
``tune_on=K`` (``--tune-on K``), ``K`` independent trajectories as long as the scored
runs, each test fold one whole trajectory assimilated from the climatological prior
(as the scored runs are). The KDE bandwidths are tuned with the
mixture sampler and used by both KDE methods: the ODE has the same target distribution.

Metrics (BENCHMARKS.md): RMSE, CRPS and spread/skill of the analysis ensemble, time mean
after the burn-in; for the Lorenz-63 cases the exact-OT W2 distance to a reference
posterior, a bootstrap particle filter with 100,000 particles on the same observation
record (see :func:`run_b2`).

``run_b2("l63-z")`` runs a case from Python; :func:`main` is the command line
(``python -m dasim.benchmarks.b2 l63-z``).

This module gathers B2's names and holds its command line; the code lives in
``_b2_cases`` (the experiment definition: cases, methods, parameters, grids, seeds),
``_b2_run`` (tuning, reference posterior, :func:`run_b2`), ``_b2_results``
(:func:`tuned_params_from`, :func:`merge_b2`), ``_report`` (:func:`b2_markdown`,
:func:`b2_seeds_lost`, :func:`plot_b2`) and ``speed`` (:func:`time_kde_samplers`).
"""

from __future__ import annotations

import argparse
import time

# The private names are those that tests, docs/_static scripts and notes import from here.
from ._b2_cases import (  # noqa: F401
    B2_CASES,
    B2_METHODS,
    JOINT_PARAMS,
    LOCAL_PARAMS,
    ROBUST_PARAMS,
    TRAIN_SEED,
    B2Case,
    _estimator,
    _filter_model,
    _fit_states,
    _initial_ensemble,
    _int_seed,
    _twin,
    b2_case,
    b2_grids,
)
from ._b2_results import merge_b2, tuned_params_from
from ._b2_run import _reference, _subsample, _train_seeds, _training_set, run_b2  # noqa: F401
from ._report import b2_markdown, b2_seeds_lost, plot_b2
from .speed import time_kde_samplers

__all__ = [
    "B2Case",
    "B2_CASES",
    "B2_METHODS",
    "ROBUST_PARAMS",
    "LOCAL_PARAMS",
    "JOINT_PARAMS",
    "b2_case",
    "b2_grids",
    "run_b2",
    "tuned_params_from",
    "merge_b2",
    "b2_markdown",
    "b2_seeds_lost",
    "plot_b2",
    "time_kde_samplers",
    "main",
]


# ------------------------------------------------------------------------ command line
def _parser():
    """The argument parser of :func:`main` (every option with its help)."""
    from ..cli import _int_list, _n_jobs, _positive_int, _positive_int_list

    p = argparse.ArgumentParser(
        prog="python -m dasim.benchmarks.b2",
        description="B2: the closed-form KDE diffusion filter against the EnKF and the "
        "particle filters (settings and results: docs/benchmarks_b2.md). Writes "
        "OUT/CASE.nc, OUT/CASE.md and OUT/CASE.png.",
    )
    p.add_argument("case", choices=sorted(B2_CASES), help="the B2 setting to run")
    p.add_argument(
        "--members",
        type=_positive_int_list,
        help="comma-separated ensemble sizes, e.g. 25,50 (default: the case's own; 16 "
        "with --smoke)",
    )
    p.add_argument(
        "--seeds",
        type=_int_list,
        help="comma-separated scored seeds (default: 0,1,2; 0 with --smoke, which runs one)",
    )
    p.add_argument(
        "--methods",
        help=f"comma-separated methods to run (default: all of {', '.join(B2_METHODS)})",
    )
    p.add_argument(
        "--max-members",
        default="",
        help="largest ensemble per method, e.g. KDE-ode=250 (comma-separated METHOD=N)",
    )
    p.add_argument(
        "--cycles",
        type=_positive_int,
        help="cycles per run (default: 100; --smoke fixes 25 and refuses this option)",
    )
    p.add_argument(
        "--no-tune",
        action="store_true",
        help="skip the GridSearchCV tuning of the bandwidths and inflation (use defaults)",
    )
    p.add_argument(
        "--tune-on",
        type=_positive_int,
        default=1,
        help="training trajectories for the tuning: 1 (default) tunes on one trajectory "
        "with TimeSeriesSplit(3); K >= 2 on K trajectories as long as the runs, each test "
        "fold one whole trajectory",
    )
    p.add_argument(
        "--w2-stride",
        type=_positive_int,
        default=1,
        help="compute W2 to the reference every this many cycles (default: 1)",
    )
    p.add_argument(
        "--n-jobs",
        type=_n_jobs,
        default=None,
        help="joblib workers for the independent runs, -1 for all cores",
    )
    p.add_argument(
        "--smoke", action="store_true", help="a seconds-long version (small sizes, one seed)"
    )
    p.add_argument(
        "--out",
        default="results/b2",
        help="directory the results are written into, created if missing (default: "
        "results/b2); a file name such as out.nc is refused",
    )
    p.add_argument("--plot", help="PNG file for the plot (default: OUT/CASE.png)")
    p.add_argument(
        "--params-from",
        metavar="FILE.nc",
        help="an earlier run's netCDF file whose tuned parameters are reused (those groups "
        "are not tuned again)",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        metavar="FILE.nc",
        help="run nothing: merge earlier runs of CASE and write the tables of the result",
    )
    return p


def main(argv=None):
    """Command line: ``python -m dasim.benchmarks.b2 CASE [options]``.

    Runs :func:`run_b2` (or, with ``--merge``, :func:`merge_b2`) and writes
    ``OUT/CASE.nc``, ``OUT/CASE.md`` (the tables) and ``OUT/CASE.png`` (the plot).

    Parameters
    ----------
    argv : list of str, optional
        Arguments (``sys.argv[1:]`` by default): ``CASE``, ``--members 25,50``,
        ``--seeds 0,1,2``, ``--methods KDE-mixture,EnKF``, ``--max-members KDE-ode=250``,
        ``--cycles``, ``--no-tune``, ``--tune-on K`` (tune over ``K`` training
        trajectories), ``--w2-stride``, ``--n-jobs``, ``--smoke``,
        ``--out`` (default ``results/b2``), ``--plot`` (PNG path), ``--params-from`` (an
        earlier run's netCDF file whose tuned parameters are reused, see
        :func:`tuned_params_from`), ``--merge A.nc B.nc ...`` (run nothing: merge
        earlier runs of ``CASE`` with :func:`merge_b2` and write the tables of the
        result).

    Returns
    -------
    int
        Exit status.

    Examples
    --------
    >>> from dasim.benchmarks.b2 import main
    >>> main(["l63-z", "--smoke", "--out", "/tmp/b2"])  # doctest: +SKIP
    0
    """
    import sys
    from datetime import date

    from ..cli import _check_out

    p = _parser()
    args = p.parse_args(argv)
    out = _check_out(p, args.out, "CASE.nc, CASE.md and CASE.png are")
    if args.smoke and args.seeds is not None and len(args.seeds) > 1:
        p.error(f"--smoke runs one seed; got --seeds {','.join(map(str, args.seeds))}")
    if args.smoke and args.cycles is not None:
        p.error("--smoke fixes the number of cycles (25); drop --cycles or --smoke")
    if args.merge:
        given = [
            flag
            for flag, value in [
                ("--members", args.members),
                ("--seeds", args.seeds),
                ("--methods", args.methods),
                ("--max-members", args.max_members or None),
                ("--cycles", args.cycles),
                ("--no-tune", args.no_tune or None),
                ("--tune-on", None if args.tune_on == 1 else args.tune_on),
                ("--n-jobs", args.n_jobs),
                ("--smoke", args.smoke or None),
                ("--params-from", args.params_from),
            ]
            if value is not None
        ]
        if given:
            p.error(f"--merge runs nothing, so {', '.join(given)} would be ignored; drop it")
    members = args.members
    try:
        max_members = {
            k: int(v) for k, v in (item.split("=") for item in args.max_members.split(",") if item)
        }
    except ValueError:
        p.error(f"--max-members must be METHOD=N[,METHOD=N...], got {args.max_members!r}")
    if args.merge:
        ds = merge_b2(*args.merge)
        if ds.attrs.get("case") != args.case:
            p.error(f"--merge: the files hold case {ds.attrs.get('case')!r}, not {args.case!r}")
        ds.attrs["merged_by"] = " ".join(
            ["python -m dasim.benchmarks.b2", *(sys.argv[1:] if argv is None else argv)]
        )
    else:
        start = time.perf_counter()
        ds = run_b2(
            args.case,
            members=members,
            seeds=[0, 1, 2] if args.seeds is None else args.seeds,
            methods=None if not args.methods else args.methods.split(","),
            n_cycles=100 if args.cycles is None else args.cycles,
            tune=not args.no_tune,
            n_jobs=args.n_jobs,
            progress=not args.smoke,
            smoke=args.smoke,
            max_members=max_members,
            w2_stride=args.w2_stride,
            tune_on=args.tune_on,
            params=None if not args.params_from else tuned_params_from(args.params_from),
        )
        ds.attrs.update(
            command=" ".join(
                ["python -m dasim.benchmarks.b2", *(sys.argv[1:] if argv is None else argv)]
            ),
            date=str(date.today()),
            wall_seconds=time.perf_counter() - start,
            blas_threads=1,
        )
    out.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(out / f"{args.case}.nc")
    table = b2_markdown(ds)
    (out / f"{args.case}.md").write_text(table + "\n")
    print(table)
    import matplotlib

    matplotlib.use("Agg")
    plot_b2(ds, args.plot or out / f"{args.case}.png")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
