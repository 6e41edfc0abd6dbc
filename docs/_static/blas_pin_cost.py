"""Cost of the one-BLAS-thread pin: the same runs with the pin and with it lifted.

Run: ``python docs/_static/blas_pin_cost.py`` (fastest of 3 after a warm-up, ms a cycle).
"""

import time
import warnings

from threadpoolctl import threadpool_info

import dasim._threads as threads
from dasim.datasets import make_twin_experiment
from dasim.filters import EnKF, KDEDiffusionFilter, SIRFilter
from dasim.models import Lorenz63, Lorenz96
from dasim.observations import ObservationModel

#: The paper's configuration (the KDE rows below time it).
PAPER = KDEDiffusionFilter.PAPER_PARAMS

warnings.simplefilter("ignore")
l96 = Lorenz96(n=40, dt=0.05, steps_per_cycle=1)
o96 = ObservationModel("identity", noise_std=1.0)
l63 = Lorenz63(dt=0.01, steps_per_cycle=25)
o63 = ObservationModel("identity", indices=[2], noise_std=2.0)
CASES = [
    (
        "LETKF N=20, L96-40",
        l96,
        o96,
        EnKF(n_members=20, inflation=1.02, localization_radius=4),
        60,
    ),
    ("ETKF N=100, L96-40", l96, o96, EnKF(n_members=100, inflation=1.02), 60),
    ("SIR N=1000, L96-40", l96, o96, SIRFilter(n_members=1000, jitter=0.5), 60),
    (
        "KDE mixture N=1000, L63",
        l63,
        o63,
        KDEDiffusionFilter(n_members=1000, **{**PAPER, "sampler": "mixture"}),
        30,
    ),
    ("KDE ode N=250, L63", l63, o63, KDEDiffusionFilter(n_members=250, **PAPER), 5),
]


def best_ms(est, y):
    est.assimilate(y[:2])
    times = []
    for _ in range(3):
        t = time.perf_counter()
        est.assimilate(y)
        times.append(time.perf_counter() - t)
    return 1e3 * min(times) / len(y)


real = threads.threadpool_limits
print("BLAS:", [(i["internal_api"], i["num_threads"]) for i in threadpool_info()])
print("| run | pinned (1 thread) ms/cycle | default threads ms/cycle |")
print("|---|---|---|")
for label, model, obs, est, n in CASES:
    X, y = make_twin_experiment(model, obs, n, random_state=0)
    est.set_params(model=model, observation=obs, random_state=0).fit(X)
    threads.threadpool_limits = real
    pinned = best_ms(est, y)
    threads.threadpool_limits = lambda **kw: type(
        "Off", (), {"restore_original_limits": lambda self: None}
    )()
    free = best_ms(est, y)
    threads.threadpool_limits = real
    print(f"| {label} | {pinned:.2f} | {free:.2f} |")
