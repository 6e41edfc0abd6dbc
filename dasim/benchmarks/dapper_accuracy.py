"""Run DAPPER's filters on the B1 settings over many seeds (run with DAPPER's interpreter).

Not imported by dasim: it needs DAPPER, which stays out of dasim's environment. It prints
one JSON object ``{method_label: [rmse_a per seed]}`` where ``rmse_a`` is DAPPER's own
time-mean analysis RMSE (``xp.avrgs.err.rms.a``) after its burn-in, so the seed-to-seed
spread of DAPPER's figure can be placed beside dasim's.

Usage: ``python dapper_accuracy.py CASE SEED [SEED ...]``.
"""

import json
import sys


def _hmm(case):
    import dapper.mods as modelling
    import numpy as np

    if case == "l63-full":
        from dapper.mods.Lorenz63.sakov2012 import HMM

        return HMM.copy()
    if case.startswith("l96-"):
        from dapper.mods.Lorenz96 import Tplot, step, x0

        nx = int(case.split("-")[1])
        tseq = modelling.Chronology(0.05, dko=1, Ko=1000, Tplot=Tplot, BurnIn=2 * Tplot)
        dyn = {"M": nx, "model": step, "noise": 0}
        obs = modelling.partial_Id_Obs(nx, np.arange(nx))
        obs["noise"] = 1
        if nx == 40:
            from dapper.tools.localization import nd_Id_localization

            obs["localizer"] = nd_Id_localization((nx,), (2,))
        return modelling.HiddenMarkovModel(dyn, obs, tseq, modelling.GaussRV(mu=x0(nx), C=0.001))
    raise SystemExit(f"no DAPPER setting for {case}")


def _configs(case):
    import dapper.da_methods as da

    if case == "l63-full":
        return {
            "EnKF sqrt N=10 infl=1.02 rotate": lambda: da.EnKF("Sqrt", N=10, infl=1.02, rot=True),
            "EnKF sqrt N=10 infl=1.06 rotate": lambda: da.EnKF("Sqrt", N=10, infl=1.06, rot=True),
            "EnKF pert-obs N=100 infl=1.02": lambda: da.EnKF("PertObs", N=100, infl=1.02),
            "SIR N=100 jitter=2.4 ess<0.3": lambda: da.PartFilt(N=100, reg=2.4, NER=0.3),
            "SIR N=100 jitter=2.4 ess<0.2": lambda: da.PartFilt(N=100, reg=2.4, NER=0.2),
            "SIR N=1000 jitter=0.9 ess<0.2": lambda: da.PartFilt(N=1000, reg=0.9, NER=0.2),
            "SIR N=1000 jitter=1.2 ess<0.2": lambda: da.PartFilt(N=1000, reg=1.2, NER=0.2),
        }
    if case == "l96-40":
        return {
            "EnKF sqrt N=40 infl=1.02": lambda: da.EnKF("Sqrt", N=40, infl=1.02),
            "LETKF N=20 radius=4 infl=1.01": lambda: da.LETKF(N=20, infl=1.01, loc_rad=4),
        }
    return {
        "EnKF sqrt N=100 infl=1.02 rotate": lambda: da.EnKF("Sqrt", N=100, infl=1.02, rot=True),
        "SIR N=1000 jitter=0.8 ess<0.2": lambda: da.PartFilt(N=1000, reg=0.8, NER=0.2),
    }


def main():
    from dapper.tools.seeding import set_seed

    case, seeds = sys.argv[1], [int(s) for s in sys.argv[2:]]
    hmm = _hmm(case)
    out = {label: [] for label in _configs(case)}
    for seed in seeds:
        set_seed(1000 + seed)  # DAPPER refuses seed 0
        xx, yy = hmm.simulate()
        for label, make in _configs(case).items():
            xp = make()
            set_seed(2000 + seed)
            xp.assimilate(hmm, xx, yy, liveplots=False)
            xp.stats.average_in_time()
            out[label].append(float(xp.avrgs.err.rms.a.val))
    print(json.dumps({case: out}))


if __name__ == "__main__":
    main()
