"""Time DAPPER's filters per cycle (run this file with an interpreter that has DAPPER).

Not imported by dasim: ``dasim bench ... --dapper-python PATH`` runs it in a subprocess so
that dasim and DAPPER are timed on the same machine in the same run. DAPPER's heavy
dependencies never enter dasim's environment. Prints one JSON object:
``{case: {method_label: seconds_per_cycle}}``.

Usage: ``python dapper_timing.py CASE N_CYCLES [REPEATS]``: with ``REPEATS`` (default 1)
each configuration runs that many times, each with a fresh DAPPER object, and the fastest
run counts.
"""

import json
import sys
import time


def _hmm(case, n_cycles):
    import dapper.mods as modelling

    if case == "l63-full":
        from dapper.mods.Lorenz63.sakov2012 import HMM
    elif case == "l96-40":
        from dapper.mods.Lorenz96.sakov2008 import HMM
    else:
        raise SystemExit(f"no DAPPER setting for {case}")
    hmm = HMM.copy()
    hmm.tseq = modelling.Chronology(
        hmm.tseq.dt, dko=hmm.tseq.dko, Ko=n_cycles, BurnIn=hmm.tseq.dt * hmm.tseq.dko
    )
    return hmm


def main():
    import dapper.da_methods as da

    case, n_cycles = sys.argv[1], int(sys.argv[2])
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    hmm = _hmm(case, n_cycles)
    xx, yy = hmm.simulate()
    configs = {
        "EnKF sqrt": lambda n: da.EnKF("Sqrt", N=n, infl=1.02),
        "EnKF pert-obs": lambda n: da.EnKF("PertObs", N=n, infl=1.02),
        "SIR": lambda n: da.PartFilt(N=n, reg=0.9, NER=0.2),
    }
    out = {}
    for label, make in configs.items():
        for n in (40, 100, 1000) if case == "l96-40" else (10, 100, 1000):
            best = float("inf")
            for _ in range(repeats):
                xp = make(n)
                start = time.perf_counter()
                xp.assimilate(hmm, xx, yy, liveplots=False)
                best = min(best, time.perf_counter() - start)
            out[f"{label} N={n}"] = best / n_cycles
    print(json.dumps({case: out}))


if __name__ == "__main__":
    main()
