"""B2's ``l63-z``: the share of the members on one wing, cycle by cycle, with and without
``MULTIMODAL_PARAMS``'s drift bound on the ESS.

The exact posterior of ``l63-z`` holds half of its mass on each wing of the attractor;
a filter's share of members at ``x > 0`` random-walks around it, one step a cycle. With
the ESS held at N/2 a cycle's weights move the share by a variance of about
``p (1 - p) / N``; the drift bound (``ess_target=("drift", 100, 0.5)``) holds it at
``p (1 - p) / 100``. The figure draws it for B2's seeds, at each N, for the
reference (100,000 particles) and the two parameter sets, as the share on the emptier
wing (``min(p, 1 - p)``: 0.5 in balance, 0 when a wing is empty), on B2's protocol (the same
truths, observations, initial ensembles and run seeds as ``dasim nonlinear-filtering``).

Usage::

    python docs/_static/l63z_balance.py MEMBERS SEEDS OUT.png [--cache DIR]
        [--n-pool N] [--n-reference N] [--n-sub N]

e.g. ``python docs/_static/l63z_balance.py 25,50 0,1,2,3,4,5,6,7,8,9
docs/_static/l63z-balance.png --cache refs/`` (the references take about 12 s of one
core a seed, the runs about 3 s each). ``--n-pool``, ``--n-reference`` and ``--n-sub``
are those of ``l63z_lobes.py``.
"""

import argparse
import os
import sys
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from l63z_lobes import build, reference  # noqa: E402

from dasim.benchmarks.nonlinear_filtering import b2_case  # noqa: E402
from dasim.benchmarks.nonlinear_filtering_cases import (  # noqa: E402
    _fit_states,
    _initial_ensemble,
)

#: B2's method ``KDE-multimodal`` (its run seeds), and the same with the ESS at N/2, as
#: ``MULTIMODAL_PARAMS`` had it before the drift bound (B2's rows of that time).
SETS = {
    "MULTIMODAL_PARAMS (drift bound)": {},
    "the same, ESS N/2": {"ess_target": 0.5},
}


def shares(case, change, n, seed, y, n_reference=100_000):
    """The share of members at ``x > 0`` after each cycle's analysis."""
    est = build(case, "KDE-multimodal", n, seed, {}, None).set_params(**change)
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(_fit_states(case, seed))
        init = _initial_ensemble(case, n, seed, n_reference)
        A = est.assimilate(y, initial_ensemble=init, keep_forecast=False)["analysis"].values
    return (A[:, :, 0] > 0).mean(axis=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("members")
    parser.add_argument("seeds")
    parser.add_argument("out")
    parser.add_argument("--cache")
    parser.add_argument("--n-pool", type=int, default=1000)
    parser.add_argument("--n-reference", type=int, default=100_000)
    parser.add_argument("--n-sub", type=int, default=2000)
    args = parser.parse_args(argv)
    case = b2_case("l63-z")
    members = [int(m) for m in args.members.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    fig, axes = plt.subplots(
        len(members),
        len(SETS),
        figsize=(5.2 * len(SETS), 3.2 * len(members)),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    for row, n in zip(axes, members, strict=True):
        for ax, (title, change) in zip(row, SETS.items(), strict=True):
            empty = []
            for seed in seeds:
                _, y, sub = reference(
                    case, seed, args.n_pool, args.cache, args.n_reference, args.n_sub
                )
                s = shares(case, change, n, seed, y, args.n_reference)
                lesser = np.minimum(s, 1 - s)
                empty.append(np.mean(lesser[case.burn_in :] < 0.05))
                ax.plot(lesser, lw=1, alpha=0.8)
                ref = (sub[:, :, 0] > 0).mean(axis=1)
                ax.plot(np.minimum(ref, 1 - ref), color="k", lw=0.6, alpha=0.5)
            ax.set_title(
                f"{title}, N = {n}\na wing empty in {100 * np.mean(empty):.0f} % of the "
                "cycles after the burn-in",
                fontsize=9,
            )
            ax.axhline(0.05, color="k", lw=0.5, ls=":")
            print(
                f"N = {n}, {title}: a wing empty (< 5 % of the members) in "
                f"{100 * np.mean(empty):.1f} % of the cycles after the burn-in"
            )
        row[0].set_ylabel("share on the emptier wing\n(black: the reference)")
    for ax in axes[-1]:
        ax.set_xlabel("cycle")
    fig.tight_layout()
    fig.savefig(args.out, dpi=72)


if __name__ == "__main__":
    main()
