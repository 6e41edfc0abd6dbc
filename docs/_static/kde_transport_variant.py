"""B2's ``KDE-transport`` with some of its parameters replaced, through B2's own runner.

B2's truths, observations, initial ensembles and W2 references (the same targets as a
``dasim nonlinear-filtering CASE --members ... --w2-stride 8`` run with the same largest
N), untuned, with :data:`dasim.benchmarks.nonlinear_filtering.GLOBAL_TRANSPORT_PARAMS`
updated by the JSON object given. The runner reads that parameter set when it builds
each filter, so the module attribute is replaced for this process only.

Usage::

    python docs/_static/kde_transport_variant.py CASE MEMBERS SEEDS JSON OUT.nc

e.g. ``python docs/_static/kde_transport_variant.py l63-z 25,50,100,250
0,1,2,3,4,5,6,7,8,9 '{"kalman_fraction": "ess"}' l63-z-floor0.nc``; prints the mean W2
(Lorenz-63 cases) and RMSE per N and writes the result dataset.
"""

import json
import sys
import warnings

import dasim.benchmarks.nonlinear_filtering_cases as cases
from dasim.benchmarks.nonlinear_filtering import run_b2


def main(argv):
    case, members, seeds, variant, out = argv
    variant = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(variant).items()}
    cases.GLOBAL_TRANSPORT_PARAMS = {**cases.GLOBAL_TRANSPORT_PARAMS, **variant}
    warnings.simplefilter("ignore")
    ds = run_b2(
        case,
        members=[int(m) for m in members.split(",")],
        seeds=[int(s) for s in seeds.split(",")],
        methods=["KDE-transport"],
        tune=False,
        w2_stride=8,
        n_jobs=1,
    )
    ds.attrs["variant"] = json.dumps(variant)
    ds.to_netcdf(out)
    for name in ("w2", "rmse"):
        if name in ds:
            means = ds[name].sel({"method": "KDE-transport"}).mean("seed").values
            sizes = ds.n_members.values.tolist()
            print(name, dict(zip(sizes, means.round(3).tolist(), strict=True)))


if __name__ == "__main__":
    main(sys.argv[1:])
