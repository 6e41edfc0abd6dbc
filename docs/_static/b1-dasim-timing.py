"""Time dasim's filters per cycle like dapper_timing.py times DAPPER's (same configs, one BLAS thread)."""
import json, sys, time
import numpy as np
from threadpoolctl import threadpool_limits
from dasim.benchmarks import b1_case
from dasim.datasets import make_twin_experiment
from dasim.filters import EnKF, SIRFilter

case_name, n_cycles = sys.argv[1], int(sys.argv[2])
case = b1_case(case_name)
rng = np.random.default_rng(0)
model = case.model
X, y = make_twin_experiment(model, case.observation, n_cycles, rng, initial_state=model.climatology(1, rng)[0])
configs = {
    "EnKF sqrt": lambda n: EnKF(n_members=n, inflation=1.02),
    "EnKF pert-obs": lambda n: EnKF(n_members=n, variant="stochastic", inflation=1.02),
    "SIR": lambda n: SIRFilter(n_members=n, jitter=0.9, ess_threshold=0.2),
}
out = {}
with threadpool_limits(1):
    for label, make in configs.items():
        for n in ((40, 100, 1000) if case_name == "l96-40" else (10, 100, 1000)):
            est = make(n).set_params(model=model, observation=case.observation, random_state=0)
            est.fit(model.climatology(64, rng))
            init = model.climatology(n, rng)
            start = time.perf_counter()
            est.assimilate(y, initial_ensemble=init, keep_forecast=False)
            out[f"{label} N={n}"] = (time.perf_counter() - start) / n_cycles
print(json.dumps({case_name: out}))
