"""Plots of assimilation results: ensembles over time, errors, posteriors and benchmarks.

Every function takes the :class:`xarray.Dataset` that ``assimilate`` returns (or, for
:func:`plot_benchmark`, a benchmark result) and draws on a matplotlib Axes, which it
returns, so plots compose with ``plt.subplots`` as usual. When the Dataset carries member
``weights`` (a particle filter), means, spreads, scatter sizes and histograms are weighted.

matplotlib is an optional dependency (``pip install dasim[plot]``); it is imported only
when a function of this module is called.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["plot_benchmark", "plot_ensemble", "plot_error", "plot_posterior"]

_ENSEMBLE_DIMS = ("time", "member", "state")
_KINDS = ("scatter", "hist")

#: The start of the examples: a Lorenz-63 twin experiment, filters to run on it.
_TWIN_EXAMPLE = """\
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from dasim.datasets import make_twin_experiment
    >>> from dasim.filters import EnKF, SIRFilter
    >>> from dasim.models import Lorenz63
    >>> from dasim.observations import ObservationModel
    >>> model, obs = Lorenz63(steps_per_cycle=10), ObservationModel(noise_std=2.0)
    >>> X, y = make_twin_experiment(model, obs, 30, random_state=0)
"""


def _twin_example(func):
    """Put :data:`_TWIN_EXAMPLE` at ``%(twin_example)s`` in ``func``'s docstring."""
    if func.__doc__:  # None under python -OO
        func.__doc__ = func.__doc__.replace("    %(twin_example)s\n", _TWIN_EXAMPLE)
    return func


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _pyplot():
    """Import ``matplotlib.pyplot``, or raise an ImportError that says how to get it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "dasim.plotting needs matplotlib, which is not installed: "
            "pip install dasim[plot] (or pip install matplotlib)"
        ) from exc
    return plt


def _check_dataset(ds, name="ds"):
    import xarray as xr

    if not isinstance(ds, xr.Dataset):
        raise TypeError(
            f"{name} must be an xarray.Dataset (the output of assimilate), got {type(ds).__name__}"
        )


def _ensemble(ds, variable):
    """Return the members of ``ds[variable]`` as ``(time, member, state)`` and their weights.

    For ``variable="forecast"`` of a weighted filter the weights are those the forecast
    members carry into the cycle: the previous analysis weights (uniform at the first
    cycle). ``weights`` is None when the Dataset has none.
    """
    _check_dataset(ds)
    if not isinstance(variable, str):
        raise TypeError(f"variable must be a string, got {variable!r}")
    if variable not in ds:
        raise ValueError(
            f"ds has no variable {variable!r} (variable={variable!r}); "
            f"it has {sorted(map(str, ds.data_vars))}"
        )
    da = ds[variable]
    if set(da.dims) != set(_ENSEMBLE_DIMS):
        raise ValueError(
            f"ds[{variable!r}] must have dims {_ENSEMBLE_DIMS}, got {da.dims} "
            f"(variable={variable!r})"
        )
    values = np.asarray(da.transpose(*_ENSEMBLE_DIMS).values, dtype=np.float64)
    n_times, n_members, _ = values.shape
    if n_times == 0 or n_members == 0:
        raise ValueError(f"ds[{variable!r}] is empty (shape {values.shape})")
    weights = None
    if "weights" in ds and variable in ("analysis", "forecast"):
        w = ds["weights"]
        if set(w.dims) != {"time", "member"}:
            raise ValueError(f"ds['weights'] must have dims ('time', 'member'), got {w.dims}")
        w = np.asarray(w.transpose("time", "member").values, dtype=np.float64)
        if w.shape != (n_times, n_members):
            raise ValueError(
                f"ds['weights'] has shape {w.shape}, expected {(n_times, n_members)} "
                f"to match ds[{variable!r}]"
            )
        if not np.all(np.isfinite(w)) or (w < 0).any():
            raise ValueError("ds['weights'] must be finite and non-negative")
        if variable == "forecast":
            w = np.concatenate([np.full((1, n_members), 1.0 / n_members), w[:-1]])
        total = w.sum(axis=1, keepdims=True)
        if (total <= 0).any():
            raise ValueError("every row of ds['weights'] must have a positive sum")
        weights = w / total
    return values, weights


def _check_index(value, size, name, what):
    """Validate an integer index into an axis of ``size`` entries; negatives count back."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer {what} index, got {value!r}")
    value = int(value)
    if not -size <= value < size:
        raise ValueError(
            f"{name}={value} is out of range: there are {size} {what}s "
            f"(valid indices {-size} to {size - 1})"
        )
    return value % size


def _check_truth(truth, n_times, n_state, name="truth"):
    """Return ``truth`` as a float array of shape ``(n_times, n_state)``."""
    arr = np.asarray(truth, dtype=np.float64)
    if arr.ndim == 1 and n_state == 1:
        arr = arr[:, None]
    if arr.shape != (n_times, n_state):
        raise ValueError(
            f"{name} must have shape (n_times, n_state) = {(n_times, n_state)}, got {arr.shape}"
        )
    return arr


def _weighted_mean(values, weights):
    """Mean over the member axis 1 of ``(time, member, ...)``, weighted when given."""
    if weights is None:
        return values.mean(axis=1)
    return np.einsum("tm,tm...->t...", weights, values)


def _component_label(ds, component):
    label = ds["state"].values[component] if "state" in ds.coords else component
    return f"state {label}"


def _new_axes(ax, **subplots_kw):
    if ax is None:
        _, ax = _pyplot().subplots(**subplots_kw)
    return ax


# --------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------


@_twin_example
def plot_ensemble(
    ds,
    truth=None,
    observations=None,
    component=0,
    ax=None,
    *,
    variable="analysis",
    observation_component=None,
    n_std=2.0,
):
    """Plot the ensemble mean and a spread band of one state component over time.

    Draws the (weighted) ensemble mean as a line, a band of ``n_std`` ensemble standard
    deviations around it, and, when given, the true trajectory and the observations.

    Parameters
    ----------
    ds : xarray.Dataset
        Output of ``assimilate``: ``variable`` with dims ``(time, member, state)``, and
        ``weights`` ``(time, member)`` for a weighted filter.
    truth : array-like of shape (n_times, n_state), optional
        True states, row-aligned with ``ds.time``.
    observations : array-like of shape (n_times,) or (n_times, n_obs), optional
        Observations (NaN where not observed), drawn as dots. Meaningful on the state axis
        for an identity operator only.
    component : int, default=0
        State component to plot (negative values count from the end).
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure by default.
    variable : {"analysis", "forecast"}, default="analysis"
        Ensemble to plot.
    observation_component : int, optional
        Column of a 2-D ``observations`` to draw. By default ``component`` when
        ``observations`` has one column per state component, and the single column when it
        has one.
    n_std : float, default=2.0
        Half-width of the band in ensemble standard deviations.

    Returns
    -------
    matplotlib.axes.Axes
        The axes, with one line for the mean, one band (a ``PolyCollection``), and one line
        each for the truth and the observations when given.

    Examples
    --------
    %(twin_example)s
    >>> from dasim.plotting import plot_ensemble
    >>> ds = EnKF(model, obs, n_members=10, random_state=0).fit(X).assimilate(y)
    >>> ax = plot_ensemble(ds, truth=X, observations=y, component=0)
    >>> len(ax.lines), len(ax.collections)
    (3, 1)
    """
    values, weights = _ensemble(ds, variable)
    n_times, n_members, n_state = values.shape
    component = _check_index(component, n_state, "component", "state component")
    if not (isinstance(n_std, numbers.Real) and np.isfinite(n_std) and n_std >= 0):
        raise ValueError(f"n_std must be a non-negative number, got {n_std!r}")
    if truth is not None:
        truth = _check_truth(truth, n_times, n_state)
    obs_line = None
    if observations is not None:
        obs = np.asarray(observations, dtype=np.float64)
        if obs.ndim == 1:
            obs = obs[:, None]
        if obs.ndim != 2 or obs.shape[0] != n_times:
            raise ValueError(
                f"observations must have shape (n_times,) or (n_times, n_obs) with "
                f"n_times = {n_times}, got {np.shape(observations)}"
            )
        if observation_component is None:
            if obs.shape[1] == n_state:
                observation_component = component
            elif obs.shape[1] == 1:
                observation_component = 0
            else:
                raise ValueError(
                    f"observations has {obs.shape[1]} columns and the state {n_state} "
                    "components: say which column to draw with observation_component"
                )
        j = _check_index(
            observation_component, obs.shape[1], "observation_component", "observation column"
        )
        obs_line = obs[:, j]

    x = values[:, :, component]
    mean = _weighted_mean(x, weights)
    if n_members > 1:
        from .metrics import spread

        std = np.asarray(spread(x[..., None], weights), dtype=np.float64)
    else:
        std = np.zeros(n_times)
    time = ds["time"].values if "time" in ds.coords else np.arange(n_times)

    ax = _new_axes(ax, figsize=(8, 3))
    label = f"{variable} mean" + (" (weighted)" if weights is not None else "")
    (line,) = ax.plot(time, mean, color="tab:blue", lw=1.5, label=label, zorder=3)
    ax.fill_between(
        time,
        mean - n_std * std,
        mean + n_std * std,
        color=line.get_color(),
        alpha=0.25,
        lw=0,
        label=f"±{n_std:g} spread",
    )
    if truth is not None:
        ax.plot(time, truth[:, component], color="k", lw=1.0, label="truth", zorder=2)
    if obs_line is not None:
        ax.plot(
            time,
            obs_line,
            ls="none",
            marker=".",
            ms=4,
            color="tab:red",
            label="observations",
            zorder=4,
        )
    ax.set_xlabel("time")
    ax.set_ylabel(_component_label(ds, component))
    ax.legend(loc="best", fontsize="small")
    return ax


@_twin_example
def plot_error(ds, truth, ax=None, *, variable="analysis"):
    """Plot the RMSE of the ensemble mean and the ensemble spread over time.

    A well-calibrated ensemble has a spread close to its RMSE; the legend gives the time
    means of both.

    Parameters
    ----------
    ds : xarray.Dataset
        Output of ``assimilate`` (``weights`` are used when present).
    truth : array-like of shape (n_times, n_state)
        True states, row-aligned with ``ds.time``.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure by default.
    variable : {"analysis", "forecast"}, default="analysis"
        Ensemble to verify.

    Returns
    -------
    matplotlib.axes.Axes
        The axes, with two lines: RMSE and spread.

    Examples
    --------
    %(twin_example)s
    >>> from dasim.plotting import plot_error
    >>> ds = SIRFilter(model, obs, n_members=100, random_state=0).fit(X).assimilate(y)
    >>> ax = plot_error(ds, X)
    >>> [line.get_label().split()[0] for line in ax.lines]
    ['RMSE', 'spread']
    """
    from .metrics import rmse, spread

    values, weights = _ensemble(ds, variable)
    n_times, n_members, n_state = values.shape
    if truth is None:
        raise ValueError("truth is required: the true states, shape (n_times, n_state)")
    truth = _check_truth(truth, n_times, n_state)
    if n_members < 2:
        raise ValueError(f"ds[{variable!r}] has {n_members} member; the spread needs 2")
    err = np.asarray(rmse(truth, values, weights), dtype=np.float64)
    spr = np.asarray(spread(values, weights), dtype=np.float64)
    time = ds["time"].values if "time" in ds.coords else np.arange(n_times)

    ax = _new_axes(ax, figsize=(8, 3))
    ax.plot(time, err, color="tab:red", lw=1.2, label=f"RMSE (mean {np.mean(err):.3g})")
    ax.plot(
        time, spr, color="tab:blue", lw=1.2, ls="--", label=f"spread (mean {np.mean(spr):.3g})"
    )
    ax.set_xlabel("time")
    ax.set_ylabel(f"{variable} error")
    ax.set_ylim(bottom=0)
    ax.legend(loc="best", fontsize="small")
    return ax


@_twin_example
def plot_posterior(
    ds,
    cycle,
    components=(0, 1),
    truth=None,
    kind="scatter",
    ax=None,
    *,
    variable="analysis",
    bins=30,
):
    """Plot the posterior ensemble of one cycle: a 2-D scatter or marginal histograms.

    With ``kind="scatter"`` the members are drawn in the plane of two state components,
    with marker areas proportional to the member weights when ``ds`` has ``weights``. With
    ``kind="hist"`` each component gets a density histogram of the members on its own
    axes, weighted when ``ds`` has weights. The true state, when given, is marked.

    Parameters
    ----------
    ds : xarray.Dataset
        Output of ``assimilate``.
    cycle : int
        Position along ``time`` of the cycle to plot (negative values count from the end).
    components : int or sequence of int, default=(0, 1)
        State components: exactly two for a scatter, one or more for histograms.
    truth : array-like of shape (n_times, n_state) or (n_state,), optional
        True trajectory (the row ``cycle`` is used) or the true state at that cycle.
    kind : {"scatter", "hist"}, default="scatter"
        Plot type.
    ax : matplotlib.axes.Axes or sequence of Axes, optional
        For a scatter, one Axes; for histograms, one Axes per component. New ones by
        default.
    variable : {"analysis", "forecast"}, default="analysis"
        Ensemble to plot.
    bins : int or sequence, default=30
        Histogram bins (``kind="hist"``).

    Returns
    -------
    matplotlib.axes.Axes or ndarray of Axes
        The scatter's Axes (one ``PathCollection`` of members, a second for the truth), or,
        for ``kind="hist"``, an array with one Axes per component (bars, and a vertical
        line at the truth).

    Examples
    --------
    %(twin_example)s
    >>> from dasim.plotting import plot_posterior
    >>> ds = SIRFilter(model, obs, n_members=200, random_state=0).fit(X).assimilate(y)
    >>> ax = plot_posterior(ds, cycle=-1, components=(0, 2), truth=X)
    >>> len(ax.collections)
    2
    >>> axes = plot_posterior(ds, cycle=-1, components=(0, 1, 2), kind="hist")
    >>> axes.shape
    (3,)
    """
    values, weights = _ensemble(ds, variable)
    n_times, n_members, n_state = values.shape
    cycle = _check_index(cycle, n_times, "cycle", "cycle")
    if not isinstance(kind, str) or kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    if isinstance(components, numbers.Integral) and not isinstance(components, bool):
        components = (components,)
    try:
        components = tuple(components)
    except TypeError:
        raise ValueError(
            f"components must be an int or a sequence of ints, got {components!r}"
        ) from None
    components = tuple(
        _check_index(c, n_state, "components", "state component") for c in components
    )
    if kind == "scatter" and (len(components) != 2 or components[0] == components[1]):
        raise ValueError(
            f"components must name two different state components for kind='scatter', "
            f"got {components!r}"
        )
    if kind == "hist" and len(components) == 0:
        raise ValueError("components must name at least one state component")
    true_state = None
    if truth is not None:
        arr = np.asarray(truth, dtype=np.float64)
        if arr.ndim == 1 and arr.shape[0] == n_state:
            true_state = arr
        else:
            true_state = _check_truth(arr, n_times, n_state)[cycle]

    members = values[cycle]
    w = None if weights is None else weights[cycle]
    time = ds["time"].values[cycle] if "time" in ds.coords else cycle
    title = f"{variable} at time {time}" + (" (weighted)" if w is not None else "")

    if kind == "scatter":
        ax = _new_axes(ax, figsize=(4.5, 4.5))
        i, j = components
        sizes = 12.0 if w is None else 12.0 * n_members * w
        ax.scatter(
            members[:, i],
            members[:, j],
            s=sizes,
            alpha=0.5,
            color="tab:blue",
            edgecolors="none",
            label=f"{variable} members",
        )
        if true_state is not None:
            ax.scatter(
                true_state[i],
                true_state[j],
                s=150,
                marker="*",
                color="k",
                edgecolors="w",
                zorder=3,
                label="truth",
            )
        ax.set_xlabel(_component_label(ds, i))
        ax.set_ylabel(_component_label(ds, j))
        ax.set_title(title)
        ax.legend(loc="best", fontsize="small")
        return ax

    if ax is None:
        plt = _pyplot()
        _, axes = plt.subplots(
            1, len(components), figsize=(3.2 * len(components), 3), squeeze=False
        )
        axes = axes[0]
    else:
        axes = np.atleast_1d(np.asarray(ax, dtype=object)).ravel()
        if axes.size != len(components):
            raise ValueError(
                f"ax must hold one Axes per component ({len(components)}), got {axes.size}"
            )
    for a, c in zip(axes, components, strict=True):
        a.hist(members[:, c], bins=bins, weights=w, density=True, color="tab:blue", alpha=0.6)
        if true_state is not None:
            a.axvline(true_state[c], color="k", lw=1.5, label="truth")
        a.set_xlabel(_component_label(ds, c))
        a.set_ylabel("density")
    axes[0].set_title(title, loc="left", fontsize="medium")
    return axes


def plot_benchmark(results, metric="rmse", x="n_members", ax=None):
    """Plot a benchmark metric against ensemble size (or another swept parameter).

    One line per method; when ``results`` has a ``seed`` dimension the line is the seed
    mean and the error bars are one standard deviation over seeds.

    Parameters
    ----------
    results : xarray.Dataset
        Benchmark results whose ``metric`` variable has dims ``(method, x)`` or
        ``(method, x, seed)`` (``method`` may be absent for a single method), e.g. several
        :func:`dasim.benchmarks.run_case` results combined along ``n_members``.
    metric : str, default="rmse"
        Variable to plot.
    x : str, default="n_members"
        Dimension to put on the horizontal axis (log scale when its values are positive and
        span a decade or more).
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure by default.

    Returns
    -------
    matplotlib.axes.Axes
        The axes, with one line per method (an ``ErrorbarContainer`` each when there are
        several seeds).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> import xarray as xr
    >>> from dasim.plotting import plot_benchmark
    >>> rmse = np.random.default_rng(0).uniform(0.5, 1.0, size=(2, 3, 4))
    >>> results = xr.Dataset(
    ...     {"rmse": (("method", "n_members", "seed"), rmse)},
    ...     coords={"method": ["EnKF", "SIR"], "n_members": [10, 30, 100]},
    ... )
    >>> ax = plot_benchmark(results)
    >>> len(ax.containers)
    2
    """
    _check_dataset(results, "results")
    if not isinstance(metric, str) or metric not in results:
        raise ValueError(
            f"metric={metric!r} is not a variable of results; "
            f"it has {sorted(map(str, results.data_vars))}"
        )
    da = results[metric]
    if not isinstance(x, str) or x not in da.dims:
        raise ValueError(f"x={x!r} is not a dimension of results[{metric!r}] {da.dims}")
    extra = [d for d in da.dims if d not in ("method", x, "seed")]
    if extra:
        raise ValueError(
            f"results[{metric!r}] has dims {da.dims}; only 'method', {x!r} and 'seed' can "
            f"be plotted (select or average over {extra} first)"
        )
    if da.sizes[x] == 0:
        raise ValueError(f"results[{metric!r}] is empty along x={x!r}")
    if "method" not in da.dims:
        da = da.expand_dims(method=[metric])
    xv = np.asarray(da[x].values)
    with_seeds = "seed" in da.dims and da.sizes["seed"] > 1
    mean = da.mean("seed") if "seed" in da.dims else da
    std = da.std("seed", ddof=1) if with_seeds else None

    ax = _new_axes(ax, figsize=(6, 4))
    for method in da["method"].values:
        m = mean.sel({"method": method}).transpose(x).values
        if with_seeds:
            s = std.sel({"method": method}).transpose(x).values
            ax.errorbar(xv, m, yerr=s, marker="o", ms=4, capsize=3, label=str(method))
        else:
            ax.plot(xv, m, marker="o", ms=4, label=str(method))
    numeric = np.issubdtype(xv.dtype, np.number)
    if numeric and np.all(xv > 0) and xv.max() >= 10 * xv.min():
        ax.set_xscale("log")
        ax.set_xticks(xv, [f"{v:g}" for v in xv])
        ax.minorticks_off()
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    note = f" (mean ± sd over {da.sizes['seed']} seeds)" if with_seeds else ""
    ax.set_title(f"{metric} against {x}{note}", fontsize="medium")
    ax.legend(loc="best", fontsize="small")
    return ax
