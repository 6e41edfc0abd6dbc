"""Turn benchmark Datasets into markdown tables and plots."""

from __future__ import annotations

import numpy as np

__all__ = ["markdown_table", "plot_metric"]


def markdown_table(ds, metrics=("rmse", "crps", "spread_skill", "seconds_per_cycle")):
    """Format a markdown table of seed means (and standard deviations) per method.

    Parameters
    ----------
    ds : xarray.Dataset
        Output of :func:`dasim.benchmarks.run_case` (dims ``method`` and ``seed``). A
        ``reference`` variable (dim ``method``) adds a column of reference figures, and
        a ``dapper_rmse`` variable (dims ``method`` and ``seed``, NaN where DAPPER has no
        counterpart) a column "DAPPER here": DAPPER's own RMSE on this machine, seed mean
        ± std, when ``rmse`` is the first metric.
    metrics : sequence of str, default=("rmse", "crps", "spread_skill", "seconds_per_cycle")
        Variables to tabulate.

    Returns
    -------
    str
        The table.

    Examples
    --------
    >>> import xarray as xr
    >>> from dasim.benchmarks import markdown_table
    >>> ds = xr.Dataset(
    ...     {"rmse": (("method", "seed"), [[0.5, 0.7]]), "reference": (("method",), [0.55])},
    ...     coords={"method": ["EnKF"], "seed": [0, 1]},
    ... )
    >>> print(markdown_table(ds, metrics=("rmse",)))
    | method | rmse | reference |
    |---|---|---|
    | EnKF | 0.600 ± 0.100 | 0.550 |
    """
    names = [m for m in metrics if m in ds]
    head = ["method", *names]
    if "reference" in ds:
        head.insert(2, "reference")
    dapper = "dapper_rmse" in ds and names[:1] == ["rmse"]
    if dapper:
        head.insert(3 if "reference" in ds else 2, "DAPPER here")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in ds["method"].values:
        row = [str(method)]
        for name in names:
            vals = ds[name].sel({"method": method}).values
            if name == "seconds_per_cycle":
                row.append(f"{1000 * np.mean(vals):.2f} ms")
            else:
                sd = np.std(vals) if vals.size > 1 else 0.0
                row.append(f"{np.mean(vals):.3f} ± {sd:.3f}")
            if name == names[0] and "reference" in ds:
                ref = float(ds["reference"].sel({"method": method}))
                row.append("" if np.isnan(ref) else f"{ref:.3f}")
            if name == names[0] and dapper:
                here = ds["dapper_rmse"].sel({"method": method}).values
                ok = not np.isnan(here).all()
                row.append(f"{np.nanmean(here):.3f} ± {np.nanstd(here):.3f}" if ok else "")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot_metric(ds, metric="rmse", ax=None, title=None):
    """Plot a bar chart of a metric per method (seed mean, error bar = seed std).

    Parameters
    ----------
    ds : xarray.Dataset
        Benchmark result with dims ``(method, seed)``.
    metric : str, default="rmse"
        Variable to plot.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on.
    title : str, optional
        Axes title.

    Returns
    -------
    matplotlib.axes.Axes
        The axes.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import xarray as xr
    >>> from dasim.benchmarks import plot_metric
    >>> ds = xr.Dataset(
    ...     {"rmse": (("method", "seed"), [[0.5, 0.7], [0.2, 0.3]])},
    ...     coords={"method": ["EnKF", "SIR"], "seed": [0, 1]},
    ... )
    >>> plot_metric(ds, title="demo").get_title()
    'demo'
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * ds.sizes["method"]))
    methods = [str(m) for m in ds["method"].values]
    mean = ds[metric].mean("seed").values
    sd = ds[metric].std("seed").values
    pos = np.arange(len(methods))
    ax.barh(pos, mean, xerr=sd, color="tab:blue", alpha=0.7, label="dasim")
    if "reference" in ds and metric == "rmse":
        ref = ds["reference"].values
        ok = ~np.isnan(ref)
        ax.scatter(ref[ok], pos[ok], color="k", marker="|", s=300, zorder=3, label="DAPPER")
    ax.set_yticks(pos, methods)
    ax.set_xscale("log")
    ax.set_xlabel(metric)
    ax.legend(loc="lower right")
    ax.set_title(title or ds.attrs.get("case", ""))
    return ax
