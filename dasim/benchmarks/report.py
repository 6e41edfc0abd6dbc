"""The one report module of the benchmarks: markdown tables and plots of their results.

B1 and any :func:`~dasim.benchmarks.run_case` result: :func:`markdown_table`,
:func:`plot_metric`; B2: :func:`b2_markdown`, :func:`b2_seeds_lost`, :func:`plot_b2`;
B3: :func:`b3_markdown`, :func:`plot_b3`; B4: :func:`speed_markdown`,
:func:`learned_markdown`, :func:`score_speed_lines`.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = [
    "markdown_table",
    "plot_metric",
    "b2_markdown",
    "b2_seeds_lost",
    "plot_b2",
    "b3_markdown",
    "plot_b3",
    "speed_markdown",
    "learned_markdown",
    "score_speed_lines",
]


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


#: The metrics :func:`plot_b2` draws by default.
_B2_PLOT_METRICS = ("w2", "rmse", "crps", "spread_skill", "seconds_per_cycle")


# ------------------------------------------------------------------------------ reports
def _fmt(vals, scale=1.0, digits=3):
    vals = np.asarray(vals, dtype=float) * scale
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return "-"
    if vals.size == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{vals.mean():.{digits}f} ± {vals.std():.{digits}f}"


#: Seeds lost (issue #13): W2 above this on the Lorenz-63 cases ...
LOST_W2 = 3.0
#: ... and RMSE above this on the Lorenz-96 cases.
LOST_RMSE = 1.5


def b2_seeds_lost(ds):
    """How many seeds each method lost, per ``N``.

    A seed is lost when its run failed (``failed`` is 1, e.g. a non-finite forecast) or
    its score is not finite or above the threshold: W2 above 3 where the dataset has
    ``w2`` (the Lorenz-63 cases), RMSE above 1.5 otherwise (Lorenz-96). Seeds not run
    (``failed`` is NaN) are not counted.

    Parameters
    ----------
    ds : xarray.Dataset
        Output of :func:`run_b2` (or :func:`merge_b2`).

    Returns
    -------
    lost : xarray.DataArray
        Seeds lost, dims ``(method, n_members)``.
    ran : xarray.DataArray
        Seeds run, dims ``(method, n_members)``.

    Examples
    --------
    >>> from dasim.benchmarks.nonlinear_filtering import b2_seeds_lost, run_b2
    >>> ds = run_b2("l96-10-atan", smoke=True, methods=["EnKF"], tune=False)
    >>> lost, ran = b2_seeds_lost(ds)
    >>> int(ran.sel({"method": "EnKF", "n_members": 16}))
    1
    """
    if "failed" not in ds:
        raise ValueError("ds has no 'failed' variable; is it a run_b2 result?")
    if "w2" in ds:
        score, limit = ds["w2"], LOST_W2
    else:
        score, limit = ds["rmse"], LOST_RMSE
    ran = ds["failed"].notnull()
    bad = (ds["failed"] == 1) | ~np.isfinite(score) | (score > limit)
    lost = (bad & ran).sum("seed")
    return lost, ran.sum("seed")


def b2_markdown(ds, metrics_=("w2", "rmse", "crps", "spread_skill", "seconds_per_cycle")):
    """Markdown tables of a :func:`run_b2` result: one per metric, methods by ``N``.

    Entries are the mean ± standard deviation over seeds (``-`` where not run);
    seconds a cycle are shown in milliseconds. The W2 table carries the reference floor
    and the KDE-ode table of ODE steps is appended when present. A last table gives the
    seeds lost per method and ``N`` (:func:`b2_seeds_lost`: W2 above 3 on Lorenz-63,
    RMSE above 1.5 on Lorenz-96, failed runs included), as ``lost/run``.

    Parameters
    ----------
    ds : xarray.Dataset
        Output of :func:`run_b2`.
    metrics_ : sequence of str
        Variables to tabulate (missing ones are skipped).

    Returns
    -------
    str
        The tables, each under a bold caption.

    Examples
    --------
    >>> from dasim.benchmarks.nonlinear_filtering import b2_markdown, run_b2
    >>> ds = run_b2("l96-10-atan", smoke=True, methods=["EnKF"], tune=False)
    >>> print(b2_markdown(ds, ["rmse"]).splitlines()[2])
    | method | N=16 |
    """
    ns = [int(n) for n in ds["n_members"].values]
    head = "| method | " + " | ".join(f"N={n}" for n in ns) + " |"
    sep = "|---|" + "---|" * len(ns)
    names = [m for m in metrics_ if m in ds]
    if "ode_steps" in ds and np.isfinite(ds["ode_steps"].values).any():
        names.append("ode_steps")
    blocks = []
    for name in names:
        scale, digits, caption = 1.0, 3, name
        if name == "seconds_per_cycle":
            scale, digits, caption = 1000.0, 1, "milliseconds a cycle"
        if name == "ode_steps":
            digits, caption = 1, "ODE steps a cycle (accepted RK45 steps; KDE-ode)"
        lines = [f"**{caption}** ({ds.attrs.get('case', '')})", "", head, sep]
        for method in ds["method"].values:
            if name == "ode_steps" and method != "KDE-ode":
                continue
            cells = [
                _fmt(ds[name].sel({"method": method, "n_members": n}).values, scale, digits)
                for n in ns
            ]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        if name == "w2" and "w2_floor" in ds:
            cells = [_fmt(ds["w2_floor"].sel(n_members=n).values, 1.0, digits) for n in ns]
            lines.append("| *reference floor* | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    if "failed" in ds:
        lost, ran = b2_seeds_lost(ds)
        rule = f"W2 > {LOST_W2:g}" if "w2" in ds else f"RMSE > {LOST_RMSE:g}"
        lines = [
            f"**seeds lost** ({rule} or failed; lost/run) ({ds.attrs.get('case', '')})",
            "",
            head,
            sep,
        ]
        for method in ds["method"].values:
            cells = []
            for n in ns:
                r = int(ran.sel({"method": method, "n_members": n}))
                k = int(lost.sel({"method": method, "n_members": n}))
                cells.append(f"{k}/{r}" if r else "-")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _laid_out(fig, path, dpi):
    """Lay ``fig`` out, save it to ``path`` (unless None) and return it."""
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


#: Colour, marker and line of each B2 method in :func:`plot_b2` (a test checks that every
#: method of ``B2_METHODS`` has one, and that no two share a colour).
_B2_STYLES = {
    "KDE-ode": ("tab:red", "o", "-"),
    "KDE-mixture": ("tab:orange", "s", "--"),
    "KDE-robust": ("tab:purple", "P", "-"),
    "KDE-robust-default": ("tab:pink", "X", "--"),
    "KDE-local": ("tab:brown", "*", "-"),
    "KDE-local-transport": ("sienna", ">", "--"),
    "KDE-transport": ("teal", "p", "--"),
    "KDE-joint": ("tab:olive", "h", "-"),
    "KDE-default": ("black", "d", "-"),
    "KDE-multimodal": ("magenta", "H", "-"),
    "EnKF": ("tab:blue", "^", "-"),
    "LETKF": ("tab:cyan", "<", "--"),
    "SIR": ("tab:gray", "v", ":"),
    "SIR-jitter": ("tab:green", "D", "-"),
}


def plot_b2(ds, path=None, metrics_=_B2_PLOT_METRICS):
    """Plot each metric against the ensemble size, one line per method.

    Seed means with their standard deviation as error bars, log-log axes (linear for
    spread/skill); the W2 panel also draws the reference floor (``N`` exact reference
    draws).

    Parameters
    ----------
    ds : xarray.Dataset
        Output of :func:`run_b2`.
    path : str or path-like, optional
        Where to save the figure (PNG); not saved when omitted.
    metrics_ : sequence of str
        Variables to plot (missing ones are skipped).

    Returns
    -------
    matplotlib.figure.Figure
        The figure.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from dasim.benchmarks.nonlinear_filtering import plot_b2, run_b2
    >>> ds = run_b2("l96-10-atan", smoke=True, methods=["EnKF"], tune=False)
    >>> len(plot_b2(ds).axes)
    4
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, NullFormatter, ScalarFormatter

    names = [m for m in metrics_ if m in ds]
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.4), squeeze=False)
    ns = ds["n_members"].values
    for ax, name in zip(axes[0], names, strict=True):
        for method in ds["method"].values:
            vals = ds[name].sel({"method": method}).values
            if not np.isfinite(vals).any():
                continue
            scale = 1000.0 if name == "seconds_per_cycle" else 1.0
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, sd = scale * np.nanmean(vals, -1), scale * np.nanstd(vals, -1)
            color, marker, line = _B2_STYLES.get(str(method), (None, "o", "-"))
            ax.errorbar(
                ns,
                mean,
                yerr=sd,
                color=color,
                marker=marker,
                ls=line,
                ms=4,
                capsize=2,
                label=str(method),
            )
        if name == "w2" and "w2_floor" in ds:
            ax.plot(ns, ds["w2_floor"].mean("seed").values, "k--", lw=1, label="ref. floor")
        if name == "spread_skill":
            ax.axhline(1.0, color="k", lw=0.5)
        ax.set_xscale("log")
        if name != "spread_skill":
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(ScalarFormatter())
            lo, hi = ax.get_ylim()
            # no power of ten inside the range: label the minor ticks, or there is none
            one_decade = lo > 0 and np.floor(np.log10(lo)) == np.floor(np.log10(hi))
            ax.yaxis.set_minor_formatter(
                FormatStrFormatter("%g") if one_decade else NullFormatter()
            )
        ax.set_xlabel("N (members)")
        ax.set_title("ms a cycle" if name == "seconds_per_cycle" else name)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"B2 {ds.attrs.get('case', '')}", fontsize=10)
    return _laid_out(fig, path, dpi=110)


def b3_markdown(ds):
    """A markdown table (seed means) of a :func:`run_b3` result.

    Parameters
    ----------
    ds : xarray.Dataset
        Output of :func:`run_b3`.

    Returns
    -------
    str
        One row per case and method.

    Examples
    --------
    >>> import numpy as np
    >>> import xarray as xr
    >>> from dasim.benchmarks.report import b3_markdown
    >>> names = ("w1", "rmse", "log_likelihood", "train_seconds", "sample_seconds")
    >>> dims, shape = ("case", "method", "seed"), (1, 1, 1)
    >>> ds = xr.Dataset(
    ...     {k: (dims, np.ones(shape)) for k in names},
    ...     coords={"case": ["b3-lo"], "method": ["SDA"], "seed": [0]},
    ... )
    >>> print(b3_markdown(ds).splitlines()[2])
    | b3-lo | SDA | 1.00 | 1.000 | 1.0 | 1 | 1.0 |
    """
    head = "| case | method | W1 to reference | RMSE | mean log p(y\\|x) | train s | sample s |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for case in ds["case"].values:
        for method in ds["method"].values:
            v = {
                k: float(ds[k].sel({"case": case, "method": method}).mean())
                for k in ("w1", "rmse", "log_likelihood", "train_seconds", "sample_seconds")
            }
            w1 = f"{v['w1']:.2f}" + (" (floor)" if method == "reference" else "")
            lines.append(
                f"| {case} | {method} | {w1} | {v['rmse']:.3f} | {v['log_likelihood']:.1f} | "
                f"{v['train_seconds']:.0f} | {v['sample_seconds']:.1f} |"
            )
    return "\n".join(lines)


def plot_b3(ds, path=None):
    """Bar charts of W1 (with the floor) and RMSE per case and method.

    Parameters
    ----------
    ds : xarray.Dataset
        Output of :func:`run_b3`.
    path : str or path-like, optional
        Where to save the figure (PNG, Agg backend); not saved when omitted.

    Returns
    -------
    matplotlib.figure.Figure
        Two panels: W1 to the reference (the reference's bar is its floor), and RMSE.

    Examples
    --------
    >>> import numpy as np
    >>> import xarray as xr
    >>> from dasim.benchmarks.report import plot_b3
    >>> dims, shape = ("case", "method", "seed"), (1, 3, 1)
    >>> ds = xr.Dataset(
    ...     {"w1": (dims, np.ones(shape)), "rmse": (dims, np.ones(shape))},
    ...     coords={"case": ["b3-lo"], "method": ["SDA", "SOAD", "reference"], "seed": [0]},
    ... )
    >>> len(plot_b3(ds).axes)
    2
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(ds["case"].values)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    x = np.arange(len(cases))
    for ax, metric, title in ((axes[0], "w1", "W1 to reference"), (axes[1], "rmse", "RMSE")):
        for m, method in enumerate(ds["method"].values):
            vals = ds[metric].sel({"method": method}).mean("seed").values
            label = "reference (floor)" if method == "reference" and metric == "w1" else method
            ax.bar(x + (m - 1) * 0.27, vals, width=0.27, label=label)
        ax.set_xticks(x, cases)
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    return _laid_out(fig, path, dpi=120)


def speed_markdown(ds):
    """Tabulate milliseconds a cycle in markdown, beside DAPPER's where measured.

    Parameters
    ----------
    ds : xarray.Dataset
        Output of :func:`time_filters`, optionally with ``dapper_seconds_per_cycle``
        (same dims, NaN where DAPPER did not run).

    Returns
    -------
    str
        One row per filter and size: dasim's ms a cycle, and with DAPPER's figures also
        DAPPER's and the ratio dasim / DAPPER.

    Examples
    --------
    >>> from dasim.benchmarks.report import speed_markdown
    >>> from dasim.benchmarks.timing import time_filters
    >>> ds = time_filters("l63-full", n_cycles=5, members=[10], filters=["SIR"])
    >>> speed_markdown(ds).splitlines()[0]
    '| filter | dasim ms |'
    """
    dapper = "dapper_seconds_per_cycle" in ds
    head = (
        "| filter | dasim ms | DAPPER ms | dasim / DAPPER |" if dapper else "| filter | dasim ms |"
    )
    lines = [head, "|---|---|---|---|" if dapper else "|---|---|"]
    for label in ds["filter"].values:
        for n in ds["n_members"].values:
            sel = {"filter": label, "n_members": n}
            ours = 1000 * float(ds["seconds_per_cycle"].sel(sel))
            row = f"| {label} N={int(n)} | {ours:.2f} |"
            if dapper:
                theirs = 1000 * float(ds["dapper_seconds_per_cycle"].sel(sel))
                if np.isfinite(theirs):
                    row += f" {theirs:.2f} | {ours / theirs:.2f} |"
                else:
                    row += " - | - |"
            lines.append(row)
    return "\n".join(lines)


def learned_markdown(ds):
    """A markdown table of a :func:`~dasim.benchmarks.timing.time_learned` result.

    Parameters
    ----------
    ds : xarray.Dataset
        Output of :func:`~dasim.benchmarks.timing.time_learned` (dim ``method``).

    Returns
    -------
    str
        The device and target loss, then one row per method, one column per variable.

    Examples
    --------
    >>> import xarray as xr
    >>> from dasim.benchmarks.report import learned_markdown
    >>> ds = xr.Dataset({"train_seconds": (("method",), [2.0])}, coords={"method": ["SDA"]},
    ...                 attrs={"device": "cpu", "target_loss": 0.1})
    >>> print(learned_markdown(ds).splitlines()[-1])
    | SDA | 2 |
    """
    head = "| method | " + " | ".join(ds.data_vars) + " |"
    rows = [
        f"| {m} | " + " | ".join(f"{float(ds[v].sel({'method': m})):.4g}" for v in ds.data_vars)
        for m in ds["method"].values
    ]
    table = "\n".join([head, "|" + "---|" * (len(ds.data_vars) + 1), *(r + " |" for r in rows)])
    return f"device: {ds.attrs['device']}, target loss {ds.attrs['target_loss']}\n\n{table}"


def score_speed_lines(ds):
    """One line per backend and size of a KDE score timing (``bench_kde_score``).

    Parameters
    ----------
    ds : xarray.Dataset
        Output of :func:`~dasim.benchmarks.score_speed.bench_kde_score`.

    Returns
    -------
    str
        Seconds and peak memory per backend and ``N``, with the floor where timed.

    Examples
    --------
    >>> from dasim.benchmarks.report import score_speed_lines
    >>> from dasim.benchmarks.score_speed import bench_kde_score
    >>> ds = bench_kde_score(n_members=(40,), dim=2, backend=("numpy",), floor=False)
    >>> score_speed_lines(ds).startswith("numpy  float64 N=     40 d=2:")
    True
    """
    lines = []
    for b in ds.backend.values:
        for n in ds.n_members.values:
            s = float(ds.seconds.sel(backend=b, n_members=n))
            p = float(ds.peak_memory_bytes.sel(backend=b, n_members=n))
            line = (
                f"{b:6s} {ds.attrs['dtype']} N={n:>7d} d={ds.attrs['dim']}: {s:9.4f} s, "
                f"peak {p / 2**20:9.1f} MiB"
            )
            if "floor_seconds" in ds:
                f = float(ds.floor_seconds.sel(backend=b, n_members=n))
                line += f", floor {f:9.4f} s, score/floor {s / f:5.2f}"
            lines.append(line)
    return "\n".join(lines)


def _dapper_seconds_table(ds):
    """DAPPER's ms a cycle from a B1 result's attributes, as a table to append ("" if none)."""
    lines = [
        f"| {k[len('dapper_seconds_per_cycle[') : -1]} | {1000 * v:.2f} ms |"
        for k, v in ds.attrs.items()
        if k.startswith("dapper_seconds")
    ]
    if not lines:
        return ""
    head = "\n\nDAPPER, same machine, same run:\n\n| method | ms per cycle |\n|---|---|\n"
    return head + "\n".join(lines)
