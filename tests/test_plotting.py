"""Tests of dasim.plotting on small synthetic Datasets (Agg backend, no filter runs)."""

import sys

import numpy as np
import pytest
import xarray as xr

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import PathCollection, PolyCollection  # noqa: E402

from dasim import plotting  # noqa: E402
from dasim.plotting import (  # noqa: E402
    plot_benchmark,
    plot_ensemble,
    plot_error,
    plot_posterior,
)

N_TIMES, N_MEMBERS, N_STATE = 12, 8, 3


def _dataset(weighted=False, seed=0):
    """A Dataset shaped like the output of ``assimilate``."""
    rng = np.random.default_rng(seed)
    analysis = rng.normal(size=(N_TIMES, N_MEMBERS, N_STATE)) + np.arange(N_STATE)
    data = {
        "analysis": (("time", "member", "state"), analysis),
        "forecast": (("time", "member", "state"), analysis + 0.5),
        "log_evidence": (("time",), rng.normal(size=N_TIMES)),
    }
    if weighted:
        w = rng.uniform(0.0, 1.0, size=(N_TIMES, N_MEMBERS)) ** 4
        data["weights"] = (("time", "member"), w / w.sum(axis=1, keepdims=True))
        data["ess"] = (("time",), 1.0 / np.sum(data["weights"][1] ** 2, axis=1))
    return xr.Dataset(
        data,
        coords={
            "time": np.arange(N_TIMES),
            "member": np.arange(N_MEMBERS),
            "state": np.arange(N_STATE),
        },
    )


@pytest.fixture
def ds():
    return _dataset()


@pytest.fixture
def wds():
    return _dataset(weighted=True)


@pytest.fixture
def truth():
    return np.random.default_rng(1).normal(size=(N_TIMES, N_STATE))


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# -------------------------------------------------------------------------- plot_ensemble


def test_plot_ensemble_minimal(ds):
    ax = plot_ensemble(ds)
    assert isinstance(ax, plt.Axes)
    assert len(ax.lines) == 1
    assert len(ax.collections) == 1
    assert isinstance(ax.collections[0], PolyCollection)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), ds["analysis"].values[:, :, 0].mean(1))


def test_plot_ensemble_truth_and_observations(ds, truth):
    y = truth + 0.1
    y[::3] = np.nan
    ax = plot_ensemble(ds, truth=truth, observations=y, component=2)
    assert len(ax.lines) == 3
    assert len(ax.collections) == 1
    labels = [line.get_label() for line in ax.lines]
    assert labels[1:] == ["truth", "observations"]
    np.testing.assert_allclose(ax.lines[1].get_ydata(), truth[:, 2])
    np.testing.assert_allclose(ax.lines[2].get_ydata(), y[:, 2])


def test_plot_ensemble_band_is_two_spreads(ds):
    ax = plot_ensemble(ds, component=1)
    x = ds["analysis"].values[:, :, 1]
    mean, std = x.mean(1), x.std(1, ddof=1)
    verts = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert np.isclose(verts.max(), np.max(mean + 2 * std))
    assert np.isclose(verts.min(), np.min(mean - 2 * std))


def test_plot_ensemble_weighted_mean(wds):
    ax = plot_ensemble(wds, component=0)
    w = wds["weights"].values
    expected = np.sum(w * wds["analysis"].values[:, :, 0], axis=1)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), expected)
    assert not np.allclose(expected, wds["analysis"].values[:, :, 0].mean(1))
    assert "weighted" in ax.lines[0].get_label()


def test_plot_ensemble_forecast_weights_are_previous_analysis_weights(wds):
    ax = plot_ensemble(wds, variable="forecast")
    w = wds["weights"].values
    f = wds["forecast"].values[:, :, 0]
    np.testing.assert_allclose(ax.lines[0].get_ydata()[0], f[0].mean())
    np.testing.assert_allclose(ax.lines[0].get_ydata()[1:], np.sum(w[:-1] * f[1:], axis=1))


def test_plot_ensemble_on_given_axes_and_one_observed_column(ds, truth):
    fig, (ax0, ax1) = plt.subplots(2)
    out = plot_ensemble(ds, observations=truth[:, 1], component=1, ax=ax1)
    assert out is ax1
    assert len(ax0.lines) == 0 and len(ax1.lines) == 2


@pytest.mark.parametrize("component", [3, -4, 1.5, "x", True])
def test_plot_ensemble_bad_component(ds, component):
    with pytest.raises(ValueError, match="component"):
        plot_ensemble(ds, component=component)


def test_plot_ensemble_negative_component_counts_back(ds):
    ax = plot_ensemble(ds, component=-1)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), ds["analysis"].values[:, :, 2].mean(1))


def test_plot_ensemble_bad_arrays(ds, truth):
    with pytest.raises(ValueError, match="truth"):
        plot_ensemble(ds, truth=truth[:-1])
    with pytest.raises(ValueError, match="observations"):
        plot_ensemble(ds, observations=truth[:-1])
    with pytest.raises(ValueError, match="observation_component"):
        plot_ensemble(ds, observations=np.zeros((N_TIMES, 2)))
    with pytest.raises(ValueError, match="observation_component"):
        plot_ensemble(ds, observations=np.zeros((N_TIMES, 2)), observation_component=2)


def test_missing_variable_and_wrong_type(ds):
    with pytest.raises(ValueError, match="variable"):
        plot_ensemble(ds.drop_vars("analysis"))
    with pytest.raises(ValueError, match="variable"):
        plot_error(ds, np.zeros((N_TIMES, N_STATE)), variable="log_evidence")
    with pytest.raises(TypeError, match="ds"):
        plot_ensemble(ds["analysis"])


# ------------------------------------------------------------------------------ plot_error


def test_plot_error(ds, truth):
    ax = plot_error(ds, truth)
    assert isinstance(ax, plt.Axes)
    assert len(ax.lines) == 2
    A = ds["analysis"].values
    expected_rmse = np.sqrt(np.mean((A.mean(1) - truth) ** 2, axis=1))
    expected_spread = np.sqrt(np.mean(A.var(1, ddof=1), axis=1))
    np.testing.assert_allclose(ax.lines[0].get_ydata(), expected_rmse)
    np.testing.assert_allclose(ax.lines[1].get_ydata(), expected_spread)


def test_plot_error_weighted(wds, truth):
    from dasim.metrics import rmse

    ax = plot_error(wds, truth)
    expected = rmse(truth, wds["analysis"].values, wds["weights"].values)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), expected)
    unweighted = rmse(truth, wds["analysis"].values)
    assert not np.allclose(expected, unweighted)


def test_plot_error_bad_truth(ds):
    with pytest.raises(ValueError, match="truth"):
        plot_error(ds, None)
    with pytest.raises(ValueError, match="truth"):
        plot_error(ds, np.zeros((N_TIMES, N_STATE + 1)))


# -------------------------------------------------------------------------- plot_posterior


def test_plot_posterior_scatter(ds, truth):
    ax = plot_posterior(ds, cycle=4, components=(0, 2), truth=truth)
    assert isinstance(ax, plt.Axes)
    assert len(ax.collections) == 2
    assert all(isinstance(c, PathCollection) for c in ax.collections)
    members = ax.collections[0].get_offsets()
    np.testing.assert_allclose(members, ds["analysis"].values[4][:, [0, 2]])
    np.testing.assert_allclose(ax.collections[1].get_offsets(), [truth[4, [0, 2]]])
    sizes = ax.collections[0].get_sizes()
    assert np.ptp(sizes) == 0


def test_plot_posterior_scatter_weighted_sizes(wds):
    ax = plot_posterior(wds, cycle=-1)
    assert len(ax.collections) == 1
    sizes = ax.collections[0].get_sizes()
    w = wds["weights"].values[-1]
    np.testing.assert_allclose(sizes / sizes.sum(), w)


def test_plot_posterior_truth_as_single_state(ds):
    ax = plot_posterior(ds, cycle=0, truth=np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(ax.collections[1].get_offsets(), [[1.0, 2.0]])


def test_plot_posterior_hist(ds, truth):
    axes = plot_posterior(ds, cycle=3, components=(0, 1, 2), truth=truth, kind="hist", bins=5)
    assert isinstance(axes, np.ndarray) and axes.shape == (3,)
    for j, a in enumerate(axes):
        assert len(a.patches) == 5
        assert len(a.lines) == 1
        heights = [p.get_height() for p in a.patches]
        expected, _ = np.histogram(ds["analysis"].values[3, :, j], bins=5, density=True)
        np.testing.assert_allclose(heights, expected)


def test_plot_posterior_hist_weighted(wds):
    axes = plot_posterior(wds, cycle=2, components=1, kind="hist", bins=4)
    assert axes.shape == (1,)
    heights = [p.get_height() for p in axes[0].patches]
    x, w = wds["analysis"].values[2, :, 1], wds["weights"].values[2]
    expected, _ = np.histogram(x, bins=4, weights=w, density=True)
    unweighted, _ = np.histogram(x, bins=4, density=True)
    np.testing.assert_allclose(heights, expected)
    assert not np.allclose(expected, unweighted)


def test_plot_posterior_hist_on_given_axes(ds):
    fig, axes = plt.subplots(1, 2)
    out = plot_posterior(ds, cycle=0, components=(0, 1), kind="hist", ax=axes)
    assert list(out) == list(axes)
    with pytest.raises(ValueError, match="ax"):
        plot_posterior(ds, cycle=0, components=(0, 1, 2), kind="hist", ax=axes)


@pytest.mark.parametrize("cycle", [N_TIMES, -N_TIMES - 1, 1.0, None])
def test_plot_posterior_bad_cycle(ds, cycle):
    with pytest.raises(ValueError, match="cycle"):
        plot_posterior(ds, cycle=cycle)


@pytest.mark.parametrize("components", [(0,), (0, 1, 2), (1, 1), (0, 3), None])
def test_plot_posterior_bad_components(ds, components):
    with pytest.raises(ValueError, match="components"):
        plot_posterior(ds, cycle=0, components=components)


def test_plot_posterior_bad_kind_and_truth(ds):
    with pytest.raises(ValueError, match="kind"):
        plot_posterior(ds, cycle=0, kind="kde")
    with pytest.raises(ValueError, match="truth"):
        plot_posterior(ds, cycle=0, truth=np.zeros((N_TIMES + 1, N_STATE)))


# -------------------------------------------------------------------------- plot_benchmark


def _results(seeds=3):
    rng = np.random.default_rng(0)
    sizes = [5, 10, 20, 50]
    dims = ("method", "n_members") + (("seed",) if seeds else ())
    shape = (2, len(sizes)) + ((seeds,) if seeds else ())
    return xr.Dataset(
        {
            "rmse": (dims, rng.uniform(0.5, 1.5, size=shape)),
            "crps": (dims, rng.uniform(0.2, 0.8, size=shape)),
            "reference": (("method",), [0.5, np.nan]),
        },
        coords={"method": ["EnKF", "SIR"], "n_members": sizes},
    )


def test_plot_benchmark_with_seeds():
    results = _results()
    ax = plot_benchmark(results, metric="crps")
    assert isinstance(ax, plt.Axes)
    assert len(ax.containers) == 2
    for container, method in zip(ax.containers, ["EnKF", "SIR"], strict=True):
        line = container.lines[0]
        expected = results["crps"].sel({"method": method}).mean("seed").values
        np.testing.assert_allclose(line.get_ydata(), expected)
        np.testing.assert_allclose(line.get_xdata(), [5, 10, 20, 50])
        assert container.has_yerr
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["EnKF", "SIR"]


def test_plot_benchmark_without_seeds_and_single_method():
    ax = plot_benchmark(_results(seeds=0))
    assert len(ax.lines) == 2 and len(ax.containers) == 0
    one = _results(seeds=0).sel({"method": "SIR"}, drop=True)
    ax = plot_benchmark(one)
    assert len(ax.lines) == 1


def test_plot_benchmark_bad_arguments():
    results = _results()
    with pytest.raises(ValueError, match="metric"):
        plot_benchmark(results, metric="energy")
    with pytest.raises(ValueError, match="x="):
        plot_benchmark(results, x="inflation")
    with pytest.raises(ValueError, match="'case'"):
        plot_benchmark(results.expand_dims(case=["a", "b"]))
    with pytest.raises(TypeError, match="results"):
        plot_benchmark(results["rmse"])


# ------------------------------------------------------------------------------- misc


def test_matplotlib_missing_gives_install_hint(monkeypatch, ds):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"pip install dasim\[plot\]"):
        plot_ensemble(ds)


def test_module_imports_without_matplotlib():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(plotting))
    top_level = [
        node
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        and any("matplotlib" in (getattr(node, "module", "") or a.name) for a in node.names)
    ]
    assert top_level == []


def test_real_filter_output():
    from dasim.datasets import make_twin_experiment
    from dasim.filters import SIRFilter
    from dasim.models import Lorenz63
    from dasim.observations import ObservationModel

    model = Lorenz63(steps_per_cycle=5)
    obs = ObservationModel(noise_std=2.0)
    X, y = make_twin_experiment(model, obs, 8, random_state=0)
    ds = SIRFilter(model, obs, n_members=50, random_state=0).fit(X).assimilate(y)
    fig, axes = plt.subplots(3)
    plot_ensemble(ds, truth=X, observations=y, ax=axes[0])
    plot_error(ds, X, ax=axes[1])
    plot_posterior(ds, cycle=-1, truth=X, ax=axes[2])
    fig.canvas.draw()
