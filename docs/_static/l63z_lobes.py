"""B2's ``l63-z``: how much of each method's W2 is the lobe balance, how much the lobes.

The posterior of ``l63-z`` (Lorenz-63 observed through z) is symmetric under
``(x, y) -> (-x, -y)``: it has one mode on each wing of the attractor, with equal mass.
A filter can miss it in two ways: within a wing (the shape of each mode), or in the
balance between the wings (how many members sit on each). This script separates the
two. For every method, N and seed it runs B2's protocol (the same truth, observations,
initial ensemble, run seed and W2 target as ``dasim nonlinear-filtering l63-z`` with
largest N ``--n-pool``) and records, averaged over B2's scored cycles:

- ``w2``: B2's W2 to the reference posterior;
- ``w2_folded``: W2 after mapping every state, the method's and the reference's, to the
  wing ``x >= 0`` (``(x, y) -> -(x, y)`` where ``x < 0``): the error within a wing,
  whatever the balance;
- ``lobe_error``: the mean absolute difference between the method's (weighted) share of
  members with ``x > 0`` and the reference's;
- ``collapsed``: the share of scored cycles in which fewer than 5 % of the members sit
  on one of the wings (the reference never does: its share stays within 0.4-0.6).

Usage::

    python docs/_static/l63z_lobes.py MEMBERS SEEDS [--methods M,...]
        [--variant NAME=JSON ...] [--base JSON] [--params-from B2.nc] [--cache DIR]
        [--out OUT.nc]

``--methods`` takes B2 method names (tuned values from ``--params-from``, B2's untuned
values without it); ``--variant`` adds a ``KDEDiffusionFilter`` with the class defaults
updated by the JSON object; ``--base`` updates the class defaults for ``KDE-default``
and every variant (``'{"inflation": 1.0}'``: the defaults before finite-size
inflation). ``--cache`` keeps each seed's reference (about 12 s of one
core each) for later calls. ``--n-pool`` is the largest N of the B2 run whose W2 targets
are wanted (1000: the full run's); ``--n-reference`` and ``--n-sub`` are B2's
``n_reference`` and ``n_reference_sub`` (100,000 and 2,000). Prints a table of the means
and writes the dataset.
"""

import argparse
import json
import os
import warnings

import numpy as np
import xarray as xr
from threadpoolctl import threadpool_limits

from dasim import metrics
from dasim.benchmarks._reference import _reference
from dasim.benchmarks.nonlinear_filtering import b2_case, tuned_params_from
from dasim.benchmarks.nonlinear_filtering_cases import (
    _TUNE_KEY,
    _default_params,
    _estimator,
    _fit_states,
    _initial_ensemble,
    _int_seed,
    _method_index,
    _twin,
)
from dasim.filters import KDEDiffusionFilter

N_REFERENCE = 100_000


def fold(states):
    """Map every state to the wing ``x >= 0`` of the attractor."""
    sign = np.where(states[:, :1] >= 0, 1.0, -1.0)
    return np.concatenate([states[:, :2] * sign, states[:, 2:]], axis=1)


def share_right(states, weights=None):
    """The (weighted) share of states with ``x > 0``."""
    w = np.full(len(states), 1.0 / len(states)) if weights is None else weights / weights.sum()
    return float(np.sum(w * (states[:, 0] > 0)))


def reference(case, seed, n_pool, cache, n_reference=N_REFERENCE, n_sub=2000):
    """Truth, observations and W2 target of ``seed``, from ``cache`` when it has them."""
    name = f"l63-z-{seed}-{n_pool}.npz"
    if (n_reference, n_sub) != (N_REFERENCE, 2000):
        name = f"l63-z-{seed}-{n_pool}-{n_reference}-{n_sub}.npz"
    path = None if cache is None else os.path.join(cache, name)
    if path is not None and os.path.exists(path):
        r = np.load(path)
        return r["X"], r["y"], r["sub"]
    X, y = _twin(case, 100, seed)
    init = case.model.climatology(n_reference, np.random.default_rng([seed, 2]))
    sub, _, _ = _reference(case, seed, y, init, n_sub, n_pool)
    if path is not None:
        np.savez(path, X=X, y=y, sub=sub)
    return X, y, sub


def build(case, name, n, seed, variants, tuned, base=None):
    """The filter ``name`` for ``(N, seed)``, seeded as B2 seeds it (variants: keys 1000+).

    ``base`` updates the class defaults for ``KDE-default`` and every variant.
    """
    base = base or {}
    if name in variants:
        est = KDEDiffusionFilter(n_members=n, device="numpy", **{**base, **variants[name]})
        key = 1000 + list(variants).index(name)
    else:
        group = _TUNE_KEY.get(name)
        params = (tuned or {}).get(group, {}).get(n, _default_params(case).get(group))
        est = _estimator(name, n, params)
        if name == "KDE-default":
            est.set_params(**base)
        key = _method_index(name)
    return est.set_params(
        model=case.filter_model(),
        observation=case.observation,
        random_state=_int_seed(seed, n, key),
    )


def one_run(case, est, n, seed, X, y, sub, n_reference=N_REFERENCE):
    init = _initial_ensemble(case, n, seed, n_reference)
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(_fit_states(case, seed))
        ds = est.assimilate(y, initial_ensemble=init, keep_forecast=False)
    A = ds["analysis"].values
    W = ds["weights"].values if "weights" in ds else None
    out = {"w2": [], "w2_folded": [], "lobe_error": [], "collapsed": []}
    for k in range(case.burn_in, 100, 8):
        w = None if W is None else W[k] / W[k].sum()
        share = share_right(A[k], w)
        out["w2"].append(metrics.wasserstein2(A[k], sub[k], weights_a=w))
        out["w2_folded"].append(metrics.wasserstein2(fold(A[k]), fold(sub[k]), weights_a=w))
        out["lobe_error"].append(abs(share - share_right(sub[k])))
        out["collapsed"].append(float(min(share, 1.0 - share) < 0.05))
    return {k: float(np.mean(v)) for k, v in out.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("members")
    parser.add_argument("seeds")
    parser.add_argument("--methods", default="")
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--base", default="{}")
    parser.add_argument("--params-from")
    parser.add_argument("--cache")
    parser.add_argument("--n-pool", type=int, default=1000)
    parser.add_argument("--n-reference", type=int, default=N_REFERENCE)
    parser.add_argument("--n-sub", type=int, default=2000)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    case = b2_case("l63-z")
    members = [int(m) for m in args.members.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]

    def params(spec):
        return {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(spec).items()}

    variants = {}
    for text in args.variant:
        name, spec = text.split("=", 1)
        variants[name] = params(spec)
    base = params(args.base)
    names = [m for m in args.methods.split(",") if m] + list(variants)
    tuned = tuned_params_from(args.params_from) if args.params_from else None
    keys = ("w2", "w2_folded", "lobe_error", "collapsed")
    data = {k: np.full((len(names), len(members), len(seeds)), np.nan) for k in keys}
    for j, seed in enumerate(seeds):
        X, y, sub = reference(case, seed, args.n_pool, args.cache, args.n_reference, args.n_sub)
        for i, name in enumerate(names):
            for m, n in enumerate(members):
                est = build(case, name, n, seed, variants, tuned, base)
                res = one_run(case, est, n, seed, X, y, sub, args.n_reference)
                for k in keys:
                    data[k][i, m, j] = res[k]
    ds = xr.Dataset(
        {k: (("method", "n_members", "seed"), v) for k, v in data.items()},
        coords={"method": names, "n_members": members, "seed": seeds},
        attrs={
            "variants": json.dumps(variants),
            "base": json.dumps(base),
            "params_from": str(args.params_from),
        },
    )
    for n in members:
        print(f"N = {n}: method, then the mean over seeds of " + ", ".join(keys))
        for name in names:
            row = ds.sel({"method": name, "n_members": n}).mean("seed")
            print(f"  {name:24s} " + "  ".join(f"{float(row[k]):7.3f}" for k in keys))
    if args.out:
        ds.to_netcdf(args.out)
    return ds


if __name__ == "__main__":
    main()
