"""Cost a cycle of the localised KDE filter against the Lorenz-96 dimension (N = 100).

Lorenz-96 with ``n`` = 40 ... 400 components (F = 8, RK4 dt = 0.01, 5 steps a cycle,
model noise 0.1), every other component observed with noise variance 0.5 (B2's
``l96-40-half`` setting, scaled up). The localised KDE filter (radius 1.5, bandwidth 0.3,
``bandwidth_y="ess"``, exact likelihood, ``"ab3"`` with 20 score evaluations) and the
LETKF (radius 4) run ``N_CYCLES`` cycles from the climatological prior; the table gives
milliseconds a cycle (median over cycles, forecast included), the ratio to the smallest
dimension, and the RMSE over the second half of the run.

Usage::

    python docs/_static/kde_local_scaling.py [DIMS] [N_CYCLES]

e.g. ``python docs/_static/kde_local_scaling.py 40,100,200,400 40``.
"""

import sys
import time
import warnings

import numpy as np

from dasim.datasets import make_twin_experiment
from dasim.filters import EnKF, KDEDiffusionFilter
from dasim.models import Lorenz96
from dasim.observations import ObservationModel


def run(n, n_cycles, n_members=100):
    model = Lorenz96(n=n, forcing=8.0, dt=0.01, steps_per_cycle=5, process_noise=0.1)
    obs = ObservationModel("identity", noise_std=np.sqrt(0.5), indices=np.arange(1, n, 2))
    X, y = make_twin_experiment(model, obs, 200 + n_cycles, random_state=0)
    train, truth, y = X[:200], X[200:], y[200:]
    filters = {
        "KDE-local": KDEDiffusionFilter(
            model,
            obs,
            n_members=n_members,
            localization_radius=1.5,
            bandwidth_x=0.3,
            bandwidth_y="ess",
            ess_target=0.5,
            likelihood="known",
            ode_solver="ab3",
            kalman_fraction=0.0,
            flow_start="noise",
            inflation=1.0,
            device="numpy",
            random_state=0,
        ),
        "LETKF": EnKF(model, obs, n_members=n_members, localization_radius=4.0, random_state=0),
    }
    out = {}
    for name, f in filters.items():
        f.fit(train)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            ds = f.assimilate(y)
            seconds = time.perf_counter() - start
        err = np.sqrt(((ds["analysis"].mean("member").values - truth) ** 2).mean(1))
        out[name] = (1e3 * seconds / n_cycles, float(err[n_cycles // 2 :].mean()))
    return out


def main(argv):
    dims = [int(v) for v in (argv[0] if argv else "40,100,200,400").split(",")]
    n_cycles = int(argv[1]) if len(argv) > 1 else 40
    rows = {n: run(n, n_cycles) for n in dims}
    base = rows[dims[0]]
    print(
        "| n | KDE-local ms a cycle | ratio | KDE-local RMSE | LETKF ms a cycle | ratio | "
        "LETKF RMSE |"
    )
    print("|---|---|---|---|---|---|---|")
    for n, r in rows.items():
        k, e = r["KDE-local"], r["LETKF"]
        print(
            f"| {n} | {k[0]:.0f} | {k[0] / base['KDE-local'][0]:.1f} | {k[1]:.3f} | "
            f"{e[0]:.1f} | {e[0] / base['LETKF'][0]:.1f} | {e[1]:.3f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
