"""B2's results on disk: reuse tuned parameters (:func:`tuned_params_from`), merge runs.

The JSON-friendly form of parameter values the runs record in their ``attrs`` is
defined here too (:func:`_plain`, :func:`_as_param`, :func:`_params_label`).
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from .nonlinear_filtering_cases import B2_METHODS

__all__ = ["tuned_params_from", "merge_b2"]


def _plain(value):
    """JSON-friendly copy of a parameter value (tuples become lists)."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _as_param(value):
    """Inverse of :func:`_plain` for bandwidths: ``["scott", 0.5]`` -> ``("scott", 0.5)``."""
    if isinstance(value, list):
        return tuple(value)
    return value


def tuned_params_from(source):
    """The tuned parameters recorded by an earlier :func:`run_b2`, for ``params=``.

    Re-running some methods or ensemble sizes with the parameters an earlier run tuned
    (rather than tuning again) makes the new runs exactly those the earlier run would
    have made: every run is seeded by ``(seed, N, method)`` alone.

    Parameters
    ----------
    source : xarray.Dataset or path-like
        A dataset returned by :func:`run_b2`, or the netCDF file ``main`` wrote.

    Returns
    -------
    dict
        ``{group: {N: params}}`` for the tuning groups ``"KDE"``, ``"EnKF"`` and
        ``"SIR-jitter"``, bandwidth rules as tuples.

    Raises
    ------
    ValueError
        If ``source`` carries no ``tuned_params`` attribute.

    Examples
    --------
    >>> from dasim.benchmarks.nonlinear_filtering import run_b2, tuned_params_from
    >>> ds = run_b2("l96-10-atan", smoke=True, methods=["EnKF"], tune=False)
    >>> tuned_params_from(ds)
    {'EnKF': {16: {'inflation': 1.05}}}
    """
    attrs = _load(source).attrs
    if "tuned_params" not in attrs:
        raise ValueError("source has no 'tuned_params' attribute; is it a run_b2 result?")
    raw = json.loads(attrs["tuned_params"])
    return {
        key: {int(n): {k: _as_param(v) for k, v in p.items()} for n, p in by_n.items()}
        for key, by_n in raw.items()
    }


_MERGE_MUST_MATCH = (
    "case",
    "n_cycles",
    "burn_in",
    "filter_noise",
    "train_seed",
    "train_cycles",
    "tune_on",
    "n_reference",
    "n_reference_sub",
    "w2_stride",
)


def merge_b2(base, *others):
    """Combine :func:`run_b2` results that extend one another.

    A run adds methods, ensemble sizes or seeds to ``base`` (e.g. ``KDE-ode`` at
    ``N = 1000`` with the parameters ``base`` tuned, see :func:`tuned_params_from`).
    The result holds the union of the coordinates, ordered as :data:`B2_METHODS`, by
    ``N`` and by seed; where a later dataset ran a ``(method, N, seed)`` (its
    ``failed`` is 0 or 1) its values are taken, failures included, elsewhere the
    earlier ones.

    Parameters
    ----------
    base : xarray.Dataset or path-like
        The run to extend (a dataset or its netCDF file).
    *others : xarray.Dataset or path-like
        Runs of the same case and setting.

    Returns
    -------
    xarray.Dataset
        The merged dataset. ``attrs`` are ``base``'s with the tuned parameters united,
        ``max_members`` recomputed, ``wall_seconds`` summed and the commands joined by
        ``" ; "``.

    Raises
    ------
    ValueError
        If no dataset is to be merged into ``base``, if one is not a :func:`run_b2`
        result, if the runs differ in case or
        setting (cycles, burn-in, model noise, training trajectory, reference, W2
        stride), or if they used different parameters for the same tuning group and
        ``N``.

    Examples
    --------
    >>> from dasim.benchmarks.nonlinear_filtering import merge_b2, run_b2
    >>> a = run_b2("l96-10-atan", smoke=True, methods=["EnKF"], tune=False)
    >>> b = run_b2("l96-10-atan", smoke=True, methods=["KDE-mixture"], tune=False)
    >>> merge_b2(a, b)["method"].values.tolist()
    ['KDE-mixture', 'EnKF']
    """
    if not others:
        raise ValueError("merge_b2 needs at least one dataset to merge into base.")
    datasets = [_load(d) for d in (base, *others)]
    for i, ds in enumerate(datasets):
        if "failed" not in ds or "case" not in ds.attrs:
            raise ValueError(f"dataset {i} is not a run_b2 result (no 'failed' or 'case').")
    first = datasets[0].attrs
    for i, ds in enumerate(datasets[1:], start=1):
        for key in _MERGE_MUST_MATCH:
            a, b = first.get(key), ds.attrs.get(key)
            if a is not None and b is not None and a != b:
                raise ValueError(
                    f"cannot merge: dataset {i} has {key}={b!r}, base has {key}={a!r}."
                )
    tuned = {}
    for i, ds in enumerate(datasets):
        for key, by_n in json.loads(ds.attrs.get("tuned_params", "{}")).items():
            for n, p in by_n.items():
                seen = tuned.setdefault(key, {}).setdefault(n, p)
                if seen != p:
                    raise ValueError(
                        f"cannot merge: dataset {i} ran {key} at N={n} with {p}, an "
                        f"earlier one with {seen}; reuse them with tuned_params_from."
                    )
    merged = datasets[0]
    for ds in datasets[1:]:
        old, new = xr.align(merged, ds, join="outer")
        ran = new["failed"].notnull()  # NaN where a run was not made, 0 or 1 where it was
        merged = old.copy()
        for name, var in new.data_vars.items():
            if name not in old:
                merged[name] = var
            elif set(ran.dims) <= set(var.dims):
                merged[name] = var.where(ran, old[name])
            else:
                merged[name] = var.where(var.notnull(), old[name])
    methods = [m for m in B2_METHODS if m in set(merged["method"].values)]
    methods += sorted(set(merged["method"].values) - set(methods))
    merged = merged.sel(
        {
            "method": methods,
            "n_members": np.sort(merged["n_members"].values),
            "seed": np.sort(merged["seed"].values),
        }
    )
    attrs = dict(first)
    ran = merged["failed"].notnull().any("seed")
    largest = int(merged["n_members"].max())
    max_members = {}
    for m in methods:
        ns = merged["n_members"].values[ran.sel({"method": m}).values]
        if ns.size and int(ns.max()) < largest:
            max_members[m] = int(ns.max())
    attrs["max_members"] = json.dumps(max_members)
    attrs["tuned_params"] = json.dumps(
        {k: dict(sorted(v.items(), key=lambda kv: int(kv[0]))) for k, v in sorted(tuned.items())}
    )
    for key, by_n in tuned.items():
        for n, p in by_n.items():
            attrs[f"tuned[{key}][N={n}]"] = _params_label(p)
    commands = [ds.attrs["command"] for ds in datasets if "command" in ds.attrs]
    if commands:
        attrs["command"] = " ; ".join(commands)
    walls = [ds.attrs["wall_seconds"] for ds in datasets if "wall_seconds" in ds.attrs]
    if walls:
        attrs["wall_seconds"] = float(sum(walls))
    dates = sorted({str(ds.attrs["date"]) for ds in datasets if "date" in ds.attrs})
    if dates:
        attrs["date"] = ", ".join(dates)
    merged.attrs = attrs
    # Encodings read from the inputs' files (e.g. a fixed string width fitting only the
    # shorter method names of one of them) would corrupt the merged file on writing.
    return merged.drop_encoding()


def _params_label(params):
    """``"name=value, ..."``: one tuned parameter set as a readable attribute."""
    return ", ".join(f"{k}={_plain(v)}" for k, v in params.items())


def _load(source):
    if isinstance(source, xr.Dataset):
        return source
    return xr.load_dataset(source)


def _keyed_by_n(value):
    return bool(value) and all(
        isinstance(k, int | np.integer) or (isinstance(k, str) and k.isdigit()) for k in value
    )
