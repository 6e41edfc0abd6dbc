"""SDAAssimilator and SOADAssimilator: outputs, determinism, guidance, pickling, errors."""

import pickle
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from dasim.assimilators import SDAAssimilator, SOADAssimilator  # noqa: E402
from dasim.observations import ObservationModel  # noqa: E402

L = 9  # assimilation window
TINY = {
    "n_members": 16,
    "n_epochs": 12,
    "epoch_size": 1024,
    "batch_size": 128,
    "width": 32,
    "depth": 2,
    "n_steps": 16,
    "learning_rate": 3e-3,
    "progress": False,
    "device": "cpu",
    "random_state": 0,
}
FAST = dict(TINY, n_epochs=1, epoch_size=64, width=8, depth=1, n_steps=4, n_members=4)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def ar1(n_traj=48, n_times=40, n_state=2, seed=0, a=0.9):
    """Stationary AR(1) trajectories with unit variance per component."""
    rng = np.random.default_rng(seed)
    x = np.empty((n_traj, n_times, n_state))
    x[:, 0] = rng.standard_normal((n_traj, n_state))
    for t in range(1, n_times):
        x[:, t] = a * x[:, t - 1] + np.sqrt(1 - a**2) * rng.standard_normal((n_traj, n_state))
    return 2.0 * x + 1.0  # physical units differ from the network's normalised ones


OBS = ObservationModel("identity", noise_std=0.1, indices=[0])


def window_obs(obs=OBS, seed=1, every=2):
    truth = ar1(1, L, seed=seed)[0]
    y = obs.simulate(truth, random_state=seed)
    y[np.arange(L) % every != 0] = np.nan
    return truth, y


@pytest.fixture(scope="module")
def sda():
    # A seconds-trained network is inaccurate near t = 1, where SDA's Tweedie estimate
    # amplifies errors by 1/mu(1) = 1000: gamma = 1 (not 1e-2) keeps the guidance stable.
    return SDAAssimilator(OBS, gamma=1.0, **TINY).fit(ar1())


@pytest.fixture(scope="module")
def soad():
    # SOAD must learn the manifold z = [x, h(x)] to carry the observed channel over to x
    return SOADAssimilator(OBS, **dict(TINY, width=64, n_epochs=30)).fit(ar1())


def test_output_dataset(sda):
    _, y = window_obs()
    y[1, 0] = np.nan
    ds = sda.assimilate(y, n_members=5)
    assert ds["analysis"].dims == ("time", "member", "state")
    assert ds["analysis"].shape == (L, 5, 2)
    assert isinstance(ds["analysis"].values, np.ndarray)
    for name in ("obs_residual", "log_likelihood", "n_observed"):
        assert ds[name].dims == ("time",)
    np.testing.assert_array_equal(ds["n_observed"].values, (np.arange(L) % 2 == 0).astype(int))
    assert np.isnan(ds["obs_residual"].values[1])
    assert ds.attrs["estimator"] == "SDAAssimilator"
    assert ds.attrs["gamma"] == 1.0 and ds.attrs["device"] == "cpu"
    assert sda.mean_.shape == (2,) and sda.scale_.shape == (2,)
    assert np.all(np.abs(sda.mean_ - 1.0) < 0.3)  # fitted on physical units
    assert len(sda.history_["train_loss"]) == TINY["n_epochs"]


def test_sample_shapes(sda, soad):
    assert sda.sample(3).shape == (3, 5, 2)  # default: one window, 2k+1 states
    assert soad.sample(2, n_times=11).shape == (2, 11, 2)
    with pytest.raises(ValueError, match="n_times"):
        sda.sample(2, n_times=3)


@pytest.mark.parametrize("name", ["sda", "soad"])
def test_determinism(name, request):
    est = request.getfixturevalue(name)
    _, y = window_obs()
    a = est.assimilate(y, random_state=3)["analysis"].values
    b = est.assimilate(y, random_state=3)["analysis"].values
    c = est.assimilate(y, random_state=4)["analysis"].values
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # the estimator's own random_state makes score deterministic
    truth, _ = window_obs()
    assert est.score(truth, y) == est.score(truth, y)


def test_fit_is_deterministic():
    X = ar1(8, 20)
    a = SDAAssimilator(OBS, **FAST).fit(X)
    b = SDAAssimilator(OBS, **FAST).fit(X)
    for (ka, va), (kb, vb) in zip(
        a.score_net_.state_dict().items(), b.score_net_.state_dict().items(), strict=True
    ):
        assert ka == kb
        torch.testing.assert_close(va, vb, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["sda", "soad"])
def test_guidance_lowers_observation_residual(name, request):
    est = request.getfixturevalue(name)
    _, y = window_obs()
    guided = est.assimilate(y, random_state=0)
    free = est.sample(16, n_times=L, random_state=0)  # (member, time, state)
    observed = ~np.isnan(y[:, 0])
    free_rms = np.sqrt(np.mean((free[:, observed, 0] - y[observed, 0]) ** 2))
    guided_rms = np.sqrt(np.nanmean(guided["obs_residual"].values ** 2))
    assert guided_rms < 0.5 * free_rms


def test_soad_multi_source_returns_state_part():
    obs = [
        ObservationModel("identity", noise_std=0.1, indices=[0]),
        ObservationModel("sin", noise_std=0.1, indices=[1, 2]),
    ]
    X = ar1(8, 20, n_state=3)
    est = SOADAssimilator(obs, **FAST).fit(X)
    assert est.n_obs_ == 3 and est.net_config_["n_state"] == 6
    assert est.net_mean_.shape == (6,) and est.mean_.shape == (3,)
    truth = X[0, :L]
    y = np.hstack([o.simulate(truth, random_state=0) for o in obs])
    y[::2, 1:] = np.nan
    ds = est.assimilate(y)
    assert ds["analysis"].shape == (L, 4, 3)
    assert ds["manifold_gap"].dims == ("time",)
    assert est.sample(2).shape == (2, 5, 3)
    with pytest.raises(ValueError, match="y has 2 columns"):
        est.assimilate(y[:, :2])


def test_soad_background_pins_first_frame(soad):
    y = np.full((L, 1), np.nan)
    xb = np.array([3.0, -1.0])
    ds = soad.assimilate(y, background=xb, background_std=0.05, random_state=0)
    first = ds["analysis"].values[0].mean(axis=0)
    free = ds["analysis"].values[-1].mean(axis=0)
    assert np.all(np.abs(first - xb) < 0.5)
    assert np.abs(free - xb).max() > 0.5  # the last frame is not pinned
    with pytest.raises(ValueError, match="background_std"):
        soad.assimilate(y, background=xb)
    with pytest.raises(ValueError, match="background"):
        soad.assimilate(y, background=np.zeros(3), background_std=0.1)


def test_pipeline_end_to_end():
    X = ar1(1, 120)[0]
    obs_y = X[:, :1] + 0.1 * np.random.default_rng(0).standard_normal((120, 1))
    pipe = make_pipeline(StandardScaler(), SDAAssimilator(**FAST)).fit(X, obs_y)
    est = pipe[-1]
    assert est.n_obs_ == 1 and est.observation_.operator == "identity"
    score = pipe.score(X[:L], obs_y[:L])
    assert np.isfinite(score) and score <= 0


def test_pickle_roundtrip_maps_to_cpu(sda):
    _, y = window_obs()
    before = sda.assimilate(y, random_state=1)["analysis"].values
    loaded = pickle.loads(pickle.dumps(sda))
    assert all(p.device.type == "cpu" for p in loaded.score_net_.parameters())
    np.testing.assert_array_equal(loaded.assimilate(y, random_state=1)["analysis"].values, before)
    state = sda.__getstate__()
    assert "score_net_" not in state
    assert all(v.device.type == "cpu" for v in state["_score_net_weights"].values())
    # a pickle made on a CUDA machine loads here: __setstate__ falls back to the CPU
    state["device_"] = "cuda"
    clone = SDAAssimilator.__new__(SDAAssimilator)
    clone.__setstate__(state)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert clone.device_ == expected
    assert next(clone.score_net_.parameters()).device.type == expected


def test_bad_inputs():
    X = ar1(4, 20)
    bad = X.copy()
    bad[0, 3, 1] = np.nan
    with pytest.raises(ValueError, match="X contains NaN"):
        SDAAssimilator(OBS, **FAST).fit(bad)
    with pytest.raises(ValueError, match="X"):
        SDAAssimilator(OBS, **FAST).fit(X[0, :4])  # 4 states < 2k+1 = 5
    with pytest.raises(ValueError, match="X has 4 time steps"):
        SOADAssimilator(OBS, **FAST).fit(X[:, :4])
    est = SDAAssimilator(OBS, **FAST).fit(X)
    _, y = window_obs()
    with pytest.raises(ValueError, match="y has 2 columns"):
        est.assimilate(np.hstack([y, y]))
    with pytest.raises(ValueError, match="y has 3 rows"):
        est.assimilate(y[:3])
    with pytest.raises(ValueError, match="y contains inf"):
        est.assimilate(np.where(np.isnan(y), np.inf, y))
    with pytest.raises(ValueError, match="n_members"):
        est.assimilate(y, n_members=0)
    for params in (
        {"gamma": -1.0},
        {"n_members": 0},
        {"window": -1},
        {"kernel": "rnn"},
        {"tau": 0.0},
        {"validation_fraction": 1.0},
        {"n_steps": 0},
    ):
        fresh = SDAAssimilator(OBS, **dict(FAST, **params))
        name = next(iter(params))
        with pytest.raises(ValueError, match=name):
            fresh.fit(X)
        assert not hasattr(fresh, "score_net_")  # raised before any training
    with pytest.raises(ValueError, match="clip"):
        SOADAssimilator(OBS, clip="global", **FAST).fit(X)
    with pytest.raises(TypeError, match="observation"):
        SDAAssimilator([OBS], **FAST).fit(X)
    with pytest.raises(ValueError, match="diagonal"):
        SDAAssimilator(ObservationModel(noise_std=[[1.0, 0.5], [0.5, 1.0]]), **FAST).fit(X)


def test_conv_kernel_for_extended_states():
    X = ar1(4, 20, n_state=6)
    est = SDAAssimilator(ObservationModel(noise_std=0.3), kernel="conv", **FAST).fit(X)
    assert est.assimilate(X[0, :L])["analysis"].shape == (L, 4, 6)


def test_missing_torch_messages(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"pip install dasim\[torch\]"):
        SDAAssimilator(OBS, **FAST).fit(ar1(2, 10))


def test_import_without_torch():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import dasim.assimilators as a\n"
        "a.SDAAssimilator(); a.SOADAssimilator()\n"
        "assert 'dasim.diffusion.networks' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_b3_smoke(tmp_path):
    from dasim.benchmarks.trajectory_smoothing import b3_markdown, plot_b3, run_b3

    ds = run_b3("b3-sin", smoke=True, n_particles=128)
    assert ds["w1"].dims == ("case", "method", "seed")
    assert list(ds["method"].values) == ["SDA", "SOAD", "reference"]
    assert np.all(np.isfinite(ds["w1_floor"].values))
    # SDA runs with the paper's gamma, in the paper's convention (the squared units of y)
    assert ds.attrs["gamma"] == 1e-2 and ds.attrs["gamma_units"] == "observation"
    assert "| b3-sin | SOAD |" in b3_markdown(ds)
    plot_b3(ds, tmp_path / "b3.png")
    assert (tmp_path / "b3.png").stat().st_size > 0


def test_time_learned_reads_the_target_from_the_training_clock():
    from dasim.benchmarks.timing import time_learned

    tiny = dict(
        n_train_traj=8,
        n_train_times=64,
        n_epochs=2,
        epoch_size=256,
        width=16,
        depth=1,
        n_samples=4,
        n_steps=4,
    )
    ds = time_learned(target_loss=10.0, **tiny)  # reached after the first epoch
    assert list(ds["method"].values) == ["SDA", "SOAD"]
    assert np.all(ds["steps_to_target"].values == 1.0)  # one step of 256 windows an epoch
    assert np.all(ds["seconds_to_target"].values > 0)
    assert np.all(ds["seconds_to_target"].values <= ds["train_seconds"].values)
    for name in [
        "train_steps_per_second",
        "prior_samples_per_second",
        "posterior_samples_per_second",
    ]:
        assert np.all(np.isfinite(ds[name].values)) and np.all(ds[name].values > 0)
    never = time_learned(target_loss=1e-9, **tiny)
    assert np.isnan(never["seconds_to_target"].values).all()
    assert np.isnan(never["steps_to_target"].values).all()
    with pytest.raises(ValueError, match="target_loss"):
        time_learned(target_loss=0.0, **tiny)
    with pytest.raises(ValueError, match="b3"):
        time_learned("b3-nope", **tiny)


def test_bench_learned_smoke(tmp_path):
    import xarray as xr

    from dasim.cli import main

    assert main(["bench", "learned", "--smoke", "--out", str(tmp_path)]) == 0
    ds = xr.load_dataset(tmp_path / "learned.nc")
    assert ds.attrs["device"] == "cpu" and ds.attrs["target_loss"] == 10.0
    assert (tmp_path / "learned.md").read_text().startswith("device: cpu")
