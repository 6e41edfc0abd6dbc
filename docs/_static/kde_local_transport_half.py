"""``KDE-local-transport`` against the EnKF on B2's ``l96-40-half``, seed by seed.

B2's truths, observations and initial ensembles (:func:`kde_robust_sweep.problem`), the
localised KDE filter with :data:`dasim.benchmarks.nonlinear_filtering.TRANSPORT_PARAMS`
(an LETKF step taking 80 % of the likelihood, then the transported localised flow),
untuned, beside the EnKF with inflation 1 and 1.05.

Usage::

    python docs/_static/kde_local_transport_half.py N SEEDS

e.g. ``python docs/_static/kde_local_transport_half.py 100 0,1,2,3,4,5,6,7,8,9``; prints
each run, then a markdown row per method (mean ± std, median, seeds lost with RMSE > 1.5,
and the per-seed RMSEs).
"""

import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from kde_robust_sweep import problem  # noqa: E402

from dasim import metrics  # noqa: E402
from dasim.benchmarks.nonlinear_filtering import TRANSPORT_PARAMS  # noqa: E402
from dasim.filters import EnKF, KDEDiffusionFilter  # noqa: E402


def main(argv):
    warnings.simplefilter("ignore")
    n = int(argv[0])
    seeds = [int(s) for s in argv[1].split(",")]
    rows = {}
    for seed in seeds:
        model, obs, X, y, fit_X, init, burn, _ = problem("l96-40-half", seed, n)
        ests = {
            "EnKF": EnKF(model, obs, n_members=n, random_state=seed),
            "EnKF-1.05": EnKF(model, obs, n_members=n, inflation=1.05, random_state=seed),
            "KDE-local-transport": KDEDiffusionFilter(
                model, obs, n_members=n, random_state=seed, device="numpy", **TRANSPORT_PARAMS
            ),
        }
        for name, est in ests.items():
            start = time.perf_counter()
            try:
                ds = est.fit(fit_X).assimilate(y, initial_ensemble=init)
                r = metrics.time_mean(metrics.rmse(X, ds["analysis"].values), burn)
            except ValueError:
                r = np.inf
            rows.setdefault(name, []).append(r)
            print(f"seed {seed} {name} {r:.3f} {time.perf_counter() - start:.0f}s", flush=True)
    for name, v in rows.items():
        v = np.array(v)
        per = ", ".join(f"{x:.3f}" for x in v)
        print(
            f"| {name} | N={n} | {v.mean():.3f} ± {v.std():.3f} | median {np.median(v):.3f} "
            f"| lost {int(np.sum(v > 1.5))}/{len(v)} | {per} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
