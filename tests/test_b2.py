"""Smoke runs of benchmark B2 (the KDE diffusion filter comparison): plumbing, not results."""

import inspect
import json

import numpy as np
import pytest
import xarray as xr

from dasim.benchmarks import nonlinear_filtering as b2
from dasim.benchmarks.nonlinear_filtering import (
    B2_CASES,
    B2_METHODS,
    b2_case,
    b2_grids,
    b2_markdown,
    merge_b2,
    plot_b2,
    run_b2,
    time_kde_samplers,
    tuned_params_from,
)
from dasim.cli import nonlinear_filtering_main as b2_main
from dasim.metrics import wasserstein2

SCORES = ["rmse", "crps", "spread_skill", "seconds_per_cycle"]


@pytest.mark.parametrize("case", sorted(B2_CASES))
def test_smoke_every_case(case):
    ds = run_b2(case, smoke=True, tune=False, members=[12], n_jobs=1)
    assert dict(ds.sizes) == {"method": len(B2_METHODS), "n_members": 1, "seed": 1}
    assert list(ds["method"].values) == list(B2_METHODS)
    for name in SCORES:
        assert np.all(np.isfinite(ds[name].values)), name
    assert np.all(ds["failed"].values == 0)
    assert np.all(ds["seconds_per_cycle"].values > 0)
    ode = ds["ode_steps"].sel({"method": "KDE-ode"}).values
    assert np.all(ode > 0)
    assert np.all(np.isnan(ds["ode_steps"].sel({"method": "EnKF"}).values))
    assert np.all(np.isfinite(ds["bandwidth_x"].sel({"method": "KDE-mixture"}).values))
    # the finite-size factor of the defaults; 1 where a KDE method names inflation=1
    factor = ds["inflation"].sel({"method": "KDE-default"}).values
    assert np.all((factor > 0.99) & (factor <= 1.2))
    assert np.all(ds["inflation"].sel({"method": "KDE-mixture"}).values == 1.0)
    assert np.all(np.isnan(ds["inflation"].sel({"method": "EnKF"}).values))
    if B2_CASES[case].w2:
        assert np.all(np.isfinite(ds["w2"].values)) and np.all(ds["w2"].values > 0)
        assert ds["w2_floor"].dims == ("n_members", "seed")
        assert np.all(np.isfinite(ds["w2_floor"].values))
        assert json.loads(ds.attrs["reference_ess_mean"])
    else:
        assert "w2" not in ds and "w2_floor" not in ds
    assert ds.attrs["case"] == case and ds.attrs["tuned"] == 0


def test_smoke_with_tuning_records_tuned_parameters():
    ds = run_b2("l63-z", smoke=True, methods=["KDE-mixture", "EnKF", "SIR-jitter"])
    tuned = json.loads(ds.attrs["tuned_params"])
    assert set(tuned) == {"KDE", "EnKF", "SIR-jitter"}
    grid = b2_grids("l63-z", smoke=True)
    assert tuned["EnKF"]["16"]["inflation"] in grid["EnKF"]["inflation"]
    assert tuned["KDE"]["16"]["bandwidth_y"] in grid["KDE"]["bandwidth_y"]
    assert "tuned[KDE][N=16]" in ds.attrs
    assert np.all(np.isfinite(ds["w2"].values))


def test_deterministic_and_parallel_equals_serial():
    kwargs = dict(tune=False, members=[10, 20], seeds=[3, 4], n_cycles=24)
    kwargs.update(n_reference=1500, n_reference_sub=300)
    kwargs["methods"] = ["KDE-mixture", "SIR-jitter", "EnKF"]
    serial = run_b2("l63-atan", n_jobs=1, **kwargs)
    parallel = run_b2("l63-atan", n_jobs=2, **kwargs)
    for name in ["rmse", "crps", "spread_skill", "w2", "w2_floor", "ess_fraction"]:
        np.testing.assert_array_equal(serial[name].values, parallel[name].values)
    # Different seeds give different simulations.
    a, b = serial["rmse"].sel(seed=3).values, serial["rmse"].sel(seed=4).values
    assert not np.array_equal(a, b)


def test_subsample_uniform_and_weighted():
    rng = np.random.default_rng(0)
    A = np.arange(2 * 50 * 2, dtype=float).reshape(2, 50, 2)
    W = np.ones((2, 50))
    out = b2._subsample(A, W, 20, rng)
    assert out.shape == (2, 20, 2)
    # Uniform weights: distinct particles (without replacement).
    assert len(np.unique(out[0, :, 0])) == 20
    # Weighted: all the mass on particle 7 at time 1.
    W[1] = 0.0
    W[1, 7] = 1.0
    out = b2._subsample(A, W, 20, rng)
    np.testing.assert_array_equal(out[1], np.repeat(A[1, 7][None], 20, axis=0))


def test_reference_pipeline_targets_the_posterior():
    case = b2_case("l63-z")
    X, y = b2._twin(case, 25, 0)
    init = case.model.climatology(3000, np.random.default_rng(1))
    sub, pool, info = b2._reference(case, 0, y, init, n_sub=500, n_pool=200)
    assert sub.shape == (25, 500, 3) and pool.shape == (25, 200, 3)
    assert info["ess_min"] > 1 and 0 < info["unique_fraction"] <= 1
    # The reference is close to the truth after a few cycles (z observed, noise 2)...
    err_z = np.abs(sub[20:, :, 2].mean(1) - X[20:, 2])
    assert np.mean(err_z) < 3.0
    # ...and its own further draws are closer to it than the climatology is.
    clim = case.model.climatology(200, np.random.default_rng(2))
    floor = np.mean([wasserstein2(pool[k], sub[k]) for k in range(20, 25)])
    far = np.mean([wasserstein2(clim, sub[k]) for k in range(20, 25)])
    assert floor < far


def test_max_members_params_and_reports(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    ds = run_b2(
        "l96-10-atan",
        smoke=True,
        members=[8, 16],
        methods=["KDE-ode", "KDE-mixture", "EnKF"],
        max_members={"KDE-ode": 8},
        params={"KDE": {"bandwidth_x": 0.3, "bandwidth_y": 0.1}, "EnKF": {8: {"inflation": 1.0}}},
        grids={"EnKF": {"inflation": [1.01, 1.3]}},
    )
    assert np.isnan(ds["rmse"].sel({"method": "KDE-ode", "n_members": 16})).all()
    assert np.isfinite(ds["rmse"].sel({"method": "KDE-ode", "n_members": 8})).all()
    tuned = json.loads(ds.attrs["tuned_params"])
    assert tuned["KDE"]["16"] == {"bandwidth_x": 0.3, "bandwidth_y": 0.1}
    assert tuned["EnKF"]["8"] == {"inflation": 1.0}
    assert tuned["EnKF"]["16"]["inflation"] in (1.01, 1.3)  # tuned on the given grid
    np.testing.assert_allclose(ds["bandwidth_x"].sel({"method": "KDE-mixture"}).values, 0.3)
    table = b2_markdown(ds)
    assert "| KDE-ode | " in table and "ODE steps" in table and " - |" in table
    fig = plot_b2(ds, tmp_path / "b2.png")
    assert (tmp_path / "b2.png").exists() and len(fig.axes) == 4
    ds.to_netcdf(tmp_path / "b2.nc")
    back = xr.load_dataset(tmp_path / "b2.nc")
    assert back.attrs["case"] == "l96-10-atan"


def test_results_do_not_depend_on_n_jobs():
    # The initial ensembles of a W2 case come from the reference's climatology pool. Once
    # that pool was whatever the process had cached: the main process (n_jobs=1) drew
    # from the reference's 100,000 states, a fresh worker from the default 16,384, so
    # the same seed gave other figures with more jobs. Single-threaded BLAS on both sides
    # (the runner pins it), so only rounding in a chaotic model could differ.
    kwargs = dict(
        members=[8],
        seeds=[0],
        methods=["EnKF"],
        n_cycles=24,
        tune=False,
        n_reference=20_000,
        n_reference_sub=200,
    )
    one = run_b2("l63-z", n_jobs=1, **kwargs)
    two = run_b2("l63-z", n_jobs=2, **kwargs)
    for name in ("w2", "rmse", "w2_floor"):
        np.testing.assert_allclose(one[name].values, two[name].values, rtol=1e-8)


def test_every_method_has_its_own_plot_style():
    # A method without a style took the colour cycle's first colour, the EnKF's blue.
    from matplotlib.colors import to_rgb

    from dasim.benchmarks.report import _B2_STYLES

    assert set(B2_METHODS) <= set(_B2_STYLES)
    colours = [to_rgb(_B2_STYLES[m][0]) for m in B2_METHODS]
    assert len(set(colours)) == len(colours)


def test_main_writes_files(tmp_path):
    assert (
        b2_main(["l63-z", "--smoke", "--no-tune", "--methods", "EnKF,SIR", "--out", str(tmp_path)])
        == 0
    )
    for ext in ("nc", "md", "png"):
        assert (tmp_path / f"l63-z.{ext}").exists()
    assert "**w2**" in (tmp_path / "l63-z.md").read_text()


def _scores(ds):
    """Every data variable but the wall-clock one, for exact comparisons."""
    return ds.drop_vars("seconds_per_cycle")


def test_extend_a_run_reproduces_the_full_run(tmp_path):
    # A run extended by the missing (method, N) with the base's parameters is exactly
    # the run that made them all at once: every run is seeded by (seed, N, method).
    # (The B2 tables' KDE-ode at N = 1000: the base tuned the KDE group with KDE-mixture.)
    kwargs = dict(smoke=True, members=[8, 16], methods=["KDE-ode", "KDE-mixture", "EnKF"])
    full = run_b2("l63-z", **kwargs)
    base = run_b2("l63-z", max_members={"KDE-ode": 8}, **kwargs)
    assert json.loads(base.attrs["max_members"]) == {"KDE-ode": 8}
    assert np.isnan(base["rmse"].sel({"method": "KDE-ode", "n_members": 16})).all()
    params = tuned_params_from(base)
    assert params == tuned_params_from(full)  # same training trajectory and grids
    more = {"members": [16], "methods": ["KDE-ode"]}
    extra = run_b2("l63-z", **{**kwargs, **more}, params=params)
    assert extra.attrs["tuning_scores"] == "{}"  # nothing was tuned again
    merged = merge_b2(base, extra)
    xr.testing.assert_identical(_scores(merged).drop_attrs(), _scores(full).drop_attrs())
    assert merged.attrs["max_members"] == "{}"
    assert merged.attrs["tuned_params"] == full.attrs["tuned_params"]
    # From files, in either order of the extensions.
    base.to_netcdf(tmp_path / "base.nc")
    extra.to_netcdf(tmp_path / "extra.nc")
    assert tuned_params_from(tmp_path / "base.nc") == params
    back = merge_b2(tmp_path / "base.nc", tmp_path / "extra.nc")
    xr.testing.assert_allclose(_scores(back).drop_attrs(), _scores(full).drop_attrs())
    # ... and written again: "KDE-ode" alone in extra.nc must not truncate the names.
    back.to_netcdf(tmp_path / "merged.nc")
    again = xr.load_dataset(tmp_path / "merged.nc")
    assert again["method"].values.tolist() == ["KDE-ode", "KDE-mixture", "EnKF"]
    xr.testing.assert_allclose(_scores(again).drop_attrs(), _scores(full).drop_attrs())


def test_merge_order_failures_and_mismatches():
    kwargs = dict(smoke=True, tune=False, members=[8])
    enkf = run_b2("l96-10-atan", methods=["EnKF"], **kwargs)
    kde = run_b2("l96-10-atan", methods=["KDE-mixture"], seeds=[1], **kwargs)
    merged = merge_b2(enkf, kde)
    assert list(merged["method"].values) == ["KDE-mixture", "EnKF"]  # B2_METHODS order
    assert list(merged["seed"].values) == [0, 1]
    # Runs not made stay missing, and are not reported as failures.
    assert np.isnan(merged["rmse"].sel({"method": "EnKF", "seed": 1})).all()
    assert np.isnan(merged["failed"].sel({"method": "EnKF", "seed": 1})).all()
    assert json.loads(merged.attrs["max_members"]) == {}
    # A later failed run replaces the earlier value: it is not masked by it.
    redo = enkf.copy(deep=True)
    redo["failed"][:] = 1.0
    redo["rmse"][:] = np.nan
    again = merge_b2(enkf, redo)
    assert np.isnan(again["rmse"]).all() and (again["failed"] == 1).all()
    with pytest.raises(ValueError, match="at least one"):
        merge_b2(enkf)
    longer = kde.copy()
    longer.attrs["n_cycles"] = 30
    with pytest.raises(ValueError, match="n_cycles"):
        merge_b2(enkf, longer)
    with pytest.raises(ValueError, match="case"):
        merge_b2(enkf, run_b2("l96-20-atan", methods=["EnKF"], **kwargs))
    other = run_b2("l96-10-atan", methods=["EnKF"], params={"EnKF": {"inflation": 1.3}}, **kwargs)
    with pytest.raises(ValueError, match="EnKF at N=8"):
        merge_b2(enkf, other)
    with pytest.raises(ValueError, match="not a run_b2 result"):
        merge_b2(enkf, xr.Dataset())
    with pytest.raises(ValueError, match="tuned_params"):
        tuned_params_from(xr.Dataset())


def test_main_params_from_and_merge(tmp_path):
    common = ["--smoke", "--no-tune", "--members", "8"]
    assert (
        b2_main(["l96-10-atan", *common, "--methods", "EnKF", "--out", str(tmp_path / "a")]) == 0
    )
    a = tmp_path / "a" / "l96-10-atan.nc"
    argv = ["l96-10-atan", *common, "--methods", "KDE-mixture", "--params-from", str(a)]
    assert b2_main([*argv, "--out", str(tmp_path / "b")]) == 0
    b = tmp_path / "b" / "l96-10-atan.nc"
    assert b2_main(["l96-10-atan", "--merge", str(a), str(b), "--out", str(tmp_path)]) == 0
    merged = xr.load_dataset(tmp_path / "l96-10-atan.nc")
    assert list(merged["method"].values) == ["KDE-mixture", "EnKF"]
    assert " ; " in merged.attrs["command"] and "--merge" in merged.attrs["merged_by"]
    assert "| KDE-mixture |" in (tmp_path / "l96-10-atan.md").read_text()
    with pytest.raises(SystemExit):
        b2_main(["l63-z", "--merge", str(a), str(b), "--out", str(tmp_path)])


def test_time_kde_samplers():
    ds = time_kde_samplers("l63-atan", n_members=20, n_cycles=2, n_steps=20)
    assert list(ds["sampler"].values) == ["ode", "sde", "mixture"]
    assert np.all(ds["seconds_per_cycle"].values > 0)
    assert ds["n_steps"].sel(sampler="ode") > 0 and ds["nfev"].sel(sampler="sde") == 20
    assert ds["nfev"].sel(sampler="mixture") == 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown B2 case"):
        run_b2("l42", smoke=True)
    with pytest.raises(ValueError, match="unknown B2 method"):
        run_b2("l63-z", smoke=True, methods=["3DVar"])
    with pytest.raises(ValueError, match="burn-in"):
        run_b2("l63-z", n_cycles=10, tune=False, members=[10], seeds=[0])
    with pytest.raises(ValueError, match="train_seed"):
        run_b2("l63-z", smoke=True, seeds=[b2.TRAIN_SEED])


def test_cases_match_benchmarks_md():
    z = B2_CASES["l63-z"]
    assert z.model.steps_per_cycle == 10 and z.model.dt == 0.01
    assert list(z.observation.indices) == [2] and z.observation.noise_std == 2.0
    atan = B2_CASES["l63-atan"]
    assert atan.observation.operator == "arctan" and atan.observation.noise_std == 0.1
    for n in (10, 20):
        c = B2_CASES[f"l96-{n}-atan"]
        assert c.model.n == n and c.model.dt == 0.01 and c.model.steps_per_cycle == 5
        assert c.observation.operator == "arctan" and c.observation.noise_std == 0.05
    half = B2_CASES["l96-40-half"]
    assert half.observation.n_obs(40) == 20
    np.testing.assert_allclose(half.observation.noise_std**2, 0.5)
    assert half.members == (100, 250, 500, 1000)
    for c in B2_CASES.values():
        assert (c.filter_noise, c.n_cycles, c.burn_in, c.truth_noise) == (0.1, 100, 20, False)


# ------------------------------------------------------------ robust variants (#13)
def test_paper_methods_use_paper_params_whatever_the_defaults(monkeypatch):
    from dasim.filters import KDEDiffusionFilter

    paper = KDEDiffusionFilter.PAPER_PARAMS
    tuned = {"bandwidth_x": ("scott", 0.5), "bandwidth_y": 0.3}
    # Change the class defaults to something else: the paper methods must not follow.
    sig = inspect.signature(KDEDiffusionFilter.__init__)
    changed = {**b2.ROBUST_PARAMS, "rtol": 1e-3, "atol": 1e-3, "schedule": "vp"}
    defaults = tuple(
        changed.get(name, p.default)
        for name, p in sig.parameters.items()
        if p.default is not inspect.Parameter.empty
    )
    monkeypatch.setattr(KDEDiffusionFilter.__init__, "__defaults__", defaults)
    assert KDEDiffusionFilter().get_params()["kernel"] == "covariance"
    for method, sampler in [("KDE-ode", "ode"), ("KDE-mixture", "mixture")]:
        params = b2._estimator(method, 16, tuned).get_params()
        expected = {**paper, "sampler": sampler, **tuned}
        assert {k: params[k] for k in expected} == expected
    for method in ("KDE-robust", "KDE-robust-default"):
        params = b2._estimator(method, 16, {}).get_params()
        assert {k: params[k] for k in b2.ROBUST_PARAMS} == b2.ROBUST_PARAMS


def test_every_kde_method_but_the_defaults_names_the_parameters_whose_default_changed():
    """So that a method's figures stand when the class defaults change (``inflation``
    became ``"finite-size"``, the kernel, the split and the flow start changed before)."""
    from dasim.benchmarks.nonlinear_filtering_cases import B2_METHODS, _kde_config

    kde_methods = [m for m in B2_METHODS if m.startswith("KDE-") and m != "KDE-default"]
    assert len(kde_methods) >= 8
    for method in kde_methods:
        config = _kde_config(method)
        for name in ("kernel", "kalman_fraction", "flow_start", "inflation"):
            assert name in config, (method, name)
        assert config["inflation"] == 1.0  # KDE-joint tunes it from there
    assert _kde_config("KDE-default") == {}


# The paper's configuration at N = 12 collapses its weights on this case (the reason the
# robust variants exist); the warning is expected and not what this test is about.
@pytest.mark.filterwarnings("ignore::dasim.exceptions.WeightCollapseWarning")
def test_paper_methods_equal_an_explicit_paper_params_run():
    from dasim.filters import KDEDiffusionFilter

    c = b2_case("l96-10-atan")
    ds = run_b2("l96-10-atan", smoke=True, methods=["KDE-mixture"], members=[12])
    tuned = tuned_params_from(ds)["KDE"][12]
    X, y = b2._twin(c, 25, 0)
    est = KDEDiffusionFilter(
        b2._filter_model(c),
        c.observation,
        n_members=12,
        device="numpy",
        random_state=b2._int_seed(0, 12, 1),
        **{**KDEDiffusionFilter.PAPER_PARAMS, "sampler": "mixture", **tuned},
    )
    est.fit(b2._fit_states(c, 0))
    out = est.assimilate(y, initial_ensemble=b2._initial_ensemble(c, 12, 0), keep_forecast=False)
    from dasim import metrics

    w = out["weights"].values if "weights" in out else None
    rmse = metrics.time_mean(metrics.rmse(X, out["analysis"].values, w), c.burn_in)
    assert float(ds["rmse"].sel({"method": "KDE-mixture", "n_members": 12, "seed": 0})) == rmse


def test_robust_methods_smoke_and_tuning():
    ds = run_b2("l63-atan", smoke=True, methods=["KDE-robust", "KDE-robust-default"], tune_on=2)
    assert list(ds["method"].values) == ["KDE-robust", "KDE-robust-default"]
    for name in ["w2", "rmse", "crps", "spread_skill", "bandwidth_x", "bandwidth_y"]:
        assert np.all(np.isfinite(ds[name].values)), name
    assert np.all(ds["failed"].values == 0)
    tuned = tuned_params_from(ds)
    assert set(tuned) == {"KDE-robust"}
    grid = b2_grids("l63-atan", smoke=True)["KDE-robust"]
    assert tuned["KDE-robust"][16]["ess_target"] in grid["ess_target"]
    assert ds.attrs["tune_on"] == 2 and len(json.loads(ds.attrs["train_seeds"])) == 2
    assert "PredefinedSplit" in ds.attrs["tuning"]
    full = b2_grids("l96-20-atan")["KDE-robust"]
    assert full["bandwidth_x"] == [("scott", 0.5), ("scott", 0.75), ("scott", 1.0)]
    assert full["ess_target"] == [0.25, 0.5, 0.75]
    # Covariance-kernel runs report the relative bandwidth h, scott's constant times 1.
    h = ds["bandwidth_x"].sel({"method": "KDE-robust-default"}).values
    np.testing.assert_allclose(h, 16 ** (-1 / 7))
    assert "**seeds lost**" in b2_markdown(ds)


def test_multi_trajectory_splitter_folds_are_whole_trajectories():
    c = b2_case("l63-z")
    X, y, cv, groups = b2._training_set(c, 3, 240, 30, b2.TRAIN_SEED)
    assert X.shape == (90, 3) and y.shape == (90, 1)
    seeds = b2._train_seeds(b2.TRAIN_SEED, 3)
    assert len(set(seeds)) == 3 and b2.TRAIN_SEED not in seeds
    folds = list(cv.split(X, y))
    assert len(folds) == 3
    tested = []
    for train, test in folds:
        (k,) = np.unique(groups[test])
        np.testing.assert_array_equal(test, np.flatnonzero(groups == k))
        np.testing.assert_array_equal(test, np.arange(30 * k, 30 * (k + 1)))
        np.testing.assert_array_equal(np.sort(train), np.flatnonzero(groups != k))
        Xk, yk = b2._twin(c, 30, seeds[k])
        np.testing.assert_array_equal(X[test], Xk)
        np.testing.assert_array_equal(y[test], yk)
        tested.append(int(k))
    assert sorted(tested) == [0, 1, 2]
    # One trajectory: the old TimeSeriesSplit on train_cycles cycles.
    X1, _, cv1, _ = b2._training_set(c, 1, 240, 30, b2.TRAIN_SEED)
    assert X1.shape[0] == 240 and cv1.get_n_splits() == 3
    with pytest.raises(ValueError, match="tune_on"):
        run_b2("l63-z", smoke=True, tune_on=0)


def _hand_made(score_name, values, failed):
    values, failed = np.asarray(values, float), np.asarray(failed, float)
    dims = ("method", "n_members", "seed")
    data = {score_name: (dims, values), "failed": (dims, failed)}
    if score_name == "w2":
        data["rmse"] = (dims, np.zeros_like(values))
    return xr.Dataset(
        data,
        coords={"method": ["A", "B"], "n_members": [25, 50], "seed": [0, 1, 2]},
        attrs={"case": "hand"},
    )


def test_seeds_lost_on_a_hand_made_dataset():
    nan = np.nan
    rmse = [
        [[0.1, 1.6, 0.2], [1.5, 0.3, nan]],  # A: 1 lost (1.6); N=50: 1.5 is not lost, nan not run
        [[nan, 9.0, 0.1], [0.2, 0.2, nan]],  # B: failed seed 0, 9.0 lost; N=50 nan failed
    ]
    failed = [
        [[0, 0, 0], [0, 0, nan]],
        [[1, 0, 0], [0, 0, 1]],
    ]
    lost, ran = b2.b2_seeds_lost(_hand_made("rmse", rmse, failed))
    np.testing.assert_array_equal(lost.values, [[1, 0], [2, 1]])
    np.testing.assert_array_equal(ran.values, [[3, 2], [3, 3]])
    # W2 where present (Lorenz-63): the threshold is 3, RMSE is ignored.
    w2 = [[[2.9, 3.1, 0.5], [inf := np.inf, 0.1, 0.1]], [[1, 1, 1], [1, 1, 1]]]
    lost, ran = b2.b2_seeds_lost(_hand_made("w2", w2, np.zeros((2, 2, 3))))
    assert inf == np.inf
    np.testing.assert_array_equal(lost.values, [[1, 1], [0, 0]])
    table = b2_markdown(_hand_made("rmse", rmse, failed), ["rmse"])
    assert "| A | 1/3 | 0/2 |" in table and "| B | 2/3 | 1/3 |" in table
    with pytest.raises(ValueError, match="failed"):
        b2.b2_seeds_lost(xr.Dataset())


def test_main_tune_on(tmp_path):
    argv = [
        "l96-10-atan",
        "--smoke",
        "--methods",
        "EnKF",
        "--tune-on",
        "2",
        "--out",
        str(tmp_path),
    ]
    assert b2_main(argv) == 0
    ds = xr.load_dataset(tmp_path / "l96-10-atan.nc")
    assert ds.attrs["tune_on"] == 2
    assert "seeds lost" in (tmp_path / "l96-10-atan.md").read_text()
