"""Does a KDE filter configuration track wherever the EnKF tracks? (issue #13's sweep)

Usage: ``python docs/_static/kde_robust_sweep.py CASES [N_SEEDS] [MEMBERS] [METHODS]``,
e.g. ``python docs/_static/kde_robust_sweep.py duffing,l63-id,l63-atan,l63-z 6`` and
``python docs/_static/kde_robust_sweep.py l96-10-atan,l96-20-atan,l96-40-half 4 50,100,250``;
``METHODS`` (default: the EnKF and every KDE candidate) is a comma-separated list of
names of ``BASELINES`` and ``CANDIDATES``.
Prints, per case and N, the median over seeds of the time-mean RMSE after the burn-in,
the seeds lost (RMSE above 3 on Lorenz-63, above 1.5 on Lorenz-96; a run that raises,
e.g. on non-finite states, counts as lost and as inf) and the mean over seeds. The B2
cases use B2's truths, initial ensembles and filter noise; the others are twin
experiments of 200 cycles (burn-in 50).
"""

import sys
import warnings

import numpy as np

from dasim import metrics
from dasim.benchmarks.nonlinear_filtering import (
    B2_CASES,
    JOINT_PARAMS,
    _filter_model,
    _fit_states,
    _initial_ensemble,
    _twin,
)
from dasim.datasets import make_twin_experiment
from dasim.filters import EnKF, KDEDiffusionFilter
from dasim.models import FunctionModel, Lorenz63
from dasim.observations import ObservationModel

# Named in full: the class defaults changed after the first runs of this sweep.
ROBUST = dict(
    kernel="covariance",
    shrink=True,
    bandwidth_y="ess",
    ess_target=0.5,
    sampler="mixture",
    kalman_fraction=0.0,
    inflation=1.0,
)
PAPER = KDEDiffusionFilter.PAPER_PARAMS
CANDIDATES = {
    "paper-mix": dict(PAPER, sampler="mixture"),  # the paper's configuration, exact sampler
    "cov-ess0.5": dict(ROBUST, ess_target=0.5, likelihood="simulated"),  # one stage, sim. y
    "pc20": dict(ROBUST, likelihood="known", max_stages=20),  # progressive correction
    "pc20-e25": dict(ROBUST, likelihood="known", max_stages=20, ess_target=0.25),
    "joint": JOINT_PARAMS,  # the class defaults before the transported filter
    "previous": {"inflation": 1.0},  # the class defaults before finite-size inflation
    "fs-1.1": {"inflation": ("finite-size", 1.1)},  # the defaults, other bounds
    "fs-inf": {"inflation": ("finite-size", float("inf"))},
    "default": {},  # the defaults: finite-size inflation, the adaptive split, the transport
}
#: The baselines: the EnKF untuned, and the EnKF-N (finite-size inflation, nothing tuned).
BASELINES = {"EnKF": {}, "EnKF-N": {"inflation": "finite-size"}}


def duffing(x):
    """A forced, damped Duffing oscillator: 10 Euler steps of 0.01 a cycle (black box)."""
    x = np.array(x, dtype=float)
    for _ in range(10):
        p, v = x[:, 0], x[:, 1]
        dv = p - p**3 - 0.25 * v + 0.3 * np.cos(1.2 * p)
        x = np.stack([p + 0.01 * v, v + 0.01 * dv], axis=1)
    return x


def problem(case, seed, n):
    if case in B2_CASES:
        c = B2_CASES[case]
        X, y = _twin(c, c.n_cycles, seed)
        threshold = 3.0 if case.startswith("l63") else 1.5
        init = _initial_ensemble(c, n, seed)
        return (
            _filter_model(c),
            c.observation,
            X,
            y,
            _fit_states(c, seed),
            init,
            c.burn_in,
            threshold,
        )
    if case == "duffing":
        model = FunctionModel(duffing, process_noise=0.02)
        obs = ObservationModel("identity", noise_std=0.1)
        x0 = np.array([1.0, 0.0])
    else:
        model = Lorenz63(dt=0.01, steps_per_cycle=10, process_noise=0.1)
        if case == "l63-id":
            obs = ObservationModel("identity", noise_std=np.sqrt(2.0))
        else:
            obs = ObservationModel("arctan", noise_std=0.1)
        x0 = None
    X, y = make_twin_experiment(
        model, obs, 200, random_state=seed, process_noise=False, initial_state=x0
    )
    return model, obs, X, y, X, None, 50, 3.0


def main(argv):
    warnings.simplefilter("ignore")
    cases = argv[0].split(",")
    seeds = range(int(argv[1]) if len(argv) > 1 else 6)
    members = [int(v) for v in (argv[2].split(",") if len(argv) > 2 else ["50", "100"])]
    names = argv[3].split(",") if len(argv) > 3 else ["EnKF", *CANDIDATES]
    unknown = sorted(set(names) - set(BASELINES) - set(CANDIDATES))
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; choose from {[*BASELINES, *CANDIDATES]}")
    for case in cases:
        for n in members:
            rows = {}
            for seed in seeds:
                model, obs, X, y, fit_X, init, burn, threshold = problem(case, seed, n)
                ests = {}
                for name in names:
                    if name in BASELINES:
                        ests[name] = EnKF(
                            model, obs, n_members=n, random_state=seed, **BASELINES[name]
                        )
                    else:
                        ests[name] = KDEDiffusionFilter(
                            model,
                            obs,
                            n_members=n,
                            random_state=seed,
                            device="numpy",
                            **CANDIDATES[name],
                        )
                for name, est in ests.items():
                    try:
                        ds = est.fit(fit_X).assimilate(y, initial_ensemble=init)
                        w = ds["weights"].values if "weights" in ds else None
                        rmse = metrics.time_mean(metrics.rmse(X, ds["analysis"].values, w), burn)
                    except ValueError:
                        rmse = np.inf
                    rows.setdefault(name, []).append(rmse)
            cells = [
                f"{k}={np.median(v):.2f}[lost {sum(x > threshold for x in v)}/{len(v)}]"
                f"(mean {np.mean(v):.3f})"
                for k, v in rows.items()
            ]
            print(f"{case:12s} N={n:4d} " + " ".join(cells), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
