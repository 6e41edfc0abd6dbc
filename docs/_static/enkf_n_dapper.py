"""The EnKF-N (``EnKF(inflation="finite-size")``, nothing tuned) on B1's DAPPER cases.

Usage: ``python docs/_static/enkf_n_dapper.py [N_SEEDS]`` (default 5). Runs B1's
``l96-40`` (Lorenz-96, 40 variables, everything observed, R = I, 1000 cycles) and
``l63-full`` (Lorenz-63, R = 2 I, 1000 cycles) with :func:`dasim.benchmarks.run_case`,
seeds 0 to N_SEEDS - 1, beside B1's tuned square-root EnKFs and the same filters without
inflation, and prints the time-mean analysis RMSE after DAPPER's burn-in (DAPPER's
reference figure where B1 has one).
"""

import sys

import numpy as np

from dasim.benchmarks import Method, run_case
from dasim.benchmarks.dapper_parity import b1_case, b1_methods
from dasim.filters import EnKF

EXTRA = {
    "l96-40": [
        Method("EnKF-N N=40", EnKF(n_members=40, inflation="finite-size")),
        Method("EnKF-N N=40, no bound", EnKF(n_members=40, inflation=("finite-size", np.inf))),
        Method("ETKF N=40, no inflation", EnKF(n_members=40)),
        Method("EnKF-N N=25", EnKF(n_members=25, inflation="finite-size")),
    ],
    "l63-full": [
        Method("EnKF-N N=10 rotate", EnKF(n_members=10, inflation="finite-size", rotate=True)),
        Method("ETKF N=10 rotate, no inflation", EnKF(n_members=10, rotate=True)),
    ],
}


def main(argv):
    seeds = tuple(range(int(argv[0]) if argv else 5))
    for name, extra in EXTRA.items():
        methods = [m for m in b1_methods(name) if "SIR" not in m.label] + extra
        ds = run_case(b1_case(name), methods, seeds=seeds, n_jobs=1)
        for m in ds.method.values:
            r = ds.rmse.sel({"method": m}).values
            ref = float(ds.reference.sel({"method": m}))
            print(
                f"{name:9s} {m:34s} mean {r.mean():.3f} (DAPPER {ref:.3f})  per seed "
                f"{np.round(r, 3).tolist()}",
                flush=True,
            )


if __name__ == "__main__":
    main(sys.argv[1:])
