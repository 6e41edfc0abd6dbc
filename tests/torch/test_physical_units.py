"""Learned assimilators in physical units: internal standardisation, 3-D trajectories through
TransformedStateFilter, the units warning, and the torch thread count."""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer, StandardScaler  # noqa: E402

from dasim.assimilators import SDAAssimilator, SOADAssimilator  # noqa: E402
from dasim.assimilators._runtime import _default_n_threads  # noqa: E402
from dasim.compose import TransformedStateFilter  # noqa: E402
from dasim.exceptions import UnitsWarning  # noqa: E402
from dasim.observations import ObservationModel  # noqa: E402

L = 9  # assimilation window
SETTINGS = {
    "n_members": 16,
    "n_epochs": 8,
    "epoch_size": 1024,
    "batch_size": 128,
    "width": 32,
    "depth": 2,
    "n_steps": 16,
    "learning_rate": 3e-3,
    "progress": False,
    "device": "cpu",
    "random_state": 0,
    "n_threads": 1,
}
FAST = dict(SETTINGS, n_epochs=1, epoch_size=64, width=8, depth=1, n_steps=4, n_members=4)
A, B = 100.0, 500.0  # physical state = A * standardised state + B
YA, YB = 1000.0, 7.0  # physical observation = YA * standardised observation + YB


def ar1(n_traj=48, n_times=40, n_state=2, seed=0, a=0.9):
    """Stationary AR(1) trajectories with unit variance per component (standardised)."""
    rng = np.random.default_rng(seed)
    x = np.empty((n_traj, n_times, n_state))
    x[:, 0] = rng.standard_normal((n_traj, n_state))
    for t in range(1, n_times):
        x[:, t] = a * x[:, t - 1] + np.sqrt(1 - a**2) * rng.standard_normal((n_traj, n_state))
    return x


def _arctan(u):
    return u.arctan() if isinstance(u, torch.Tensor) else np.arctan(u)


def h_standard(x):
    """arctan(3 x) of standardised states."""
    return _arctan(3 * x)


def h_physical(x):
    """The same observation for physical states, in other observation units."""
    return YA * _arctan(3 * (x - B) / A) + YB


OBS_STANDARD = ObservationModel(h_standard, noise_std=0.1, indices=[0])
OBS_PHYSICAL = ObservationModel(h_physical, noise_std=YA * 0.1, indices=[0])


def windows(n=4):
    """Standardised truths and observations (every other state observed)."""
    out = []
    for seed in range(1, n + 1):
        truth = ar1(1, L, seed=seed)[0]
        y = OBS_STANDARD.simulate(truth, random_state=seed)
        y[np.arange(L) % 2 != 0] = np.nan
        out.append((truth, y))
    return out


def posterior_rmse(est, physical):
    """RMSE of the posterior mean per window, in standardised units."""
    errors = []
    for truth, y in windows():
        ds = est.assimilate(YA * y + YB if physical else y, random_state=0)
        mean = ds["analysis"].mean("member").values
        if physical:
            mean = (mean - B) / A
        errors.append(np.sqrt(np.mean((mean - truth) ** 2)))
    return np.array(errors)


@pytest.mark.parametrize(
    ("cls", "extra"),
    [(SDAAssimilator, {"gamma": 1.0}), (SOADAssimilator, {"width": 64, "n_epochs": 20})],
)
def test_physical_units_give_the_standardised_posterior(cls, extra):
    # Standardisation inside makes the posterior equivariant under affine changes of the
    # state units and of the observation units: training on A x + B with h and y in other
    # units gives the same samples, mapped, as training on x (to float32 round-off).
    X = ar1()
    std = cls(OBS_STANDARD, **dict(SETTINGS, **extra)).fit(X)
    phys = cls(OBS_PHYSICAL, **dict(SETTINGS, **extra)).fit(A * X + B)
    np.testing.assert_allclose(phys.mean_, A * std.mean_ + B, rtol=1e-12)
    np.testing.assert_allclose(phys.scale_, A * std.scale_, rtol=1e-12)
    np.testing.assert_allclose(phys.obs_scale_, YA * std.obs_scale_, rtol=1e-12)
    rmse_std = posterior_rmse(std, physical=False)
    rmse_phys = posterior_rmse(phys, physical=True)
    assert np.all(rmse_std < 2.0)  # a posterior, not a blow-up (climatology: about 1.4)
    np.testing.assert_allclose(rmse_phys, rmse_std, rtol=1e-3)
    # unconditional samples come back physical as well
    prior = phys.sample(64, random_state=0)
    assert abs(prior.mean() - B) < 0.5 * A and 0.3 * A < prior.std() < 3 * A


def test_3d_trajectories_through_transformed_state_filter():
    X3 = A * ar1(16, 30) + B
    obs = ObservationModel("identity", noise_std=0.1 * A, indices=[0])
    truth, y = windows(1)[0]
    y_phys = A * truth[:, :1] + B + 0.1 * A * np.random.default_rng(5).standard_normal((L, 1))
    y_phys[np.arange(L) % 2 != 0] = np.nan
    truth = A * truth + B

    plain = SDAAssimilator(obs, gamma=1.0, **SETTINGS).fit(X3)
    wrapped = TransformedStateFilter(SDAAssimilator(obs, gamma=1.0, **SETTINGS), StandardScaler())
    wrapped.fit(X3)
    assert wrapped.n_features_in_ == 2
    ds = wrapped.assimilate(y_phys)
    assert ds["analysis"].shape == (L, 16, 2)
    # the filter inside sees standardised states, the outside physical ones: standardising
    # twice is standardising once, so the samples match the plain estimator's
    np.testing.assert_allclose(
        ds["analysis"].values, plain.assimilate(y_phys)["analysis"].values, rtol=1e-5, atol=1e-3
    )
    rmse = np.sqrt(np.mean((ds["analysis"].mean("member").values - truth) ** 2))
    assert rmse < 2.0 * A  # physical units (climatological spread: about 1.4 A)
    assert np.isfinite(wrapped.score(truth, y_phys)) and wrapped.score(truth, y_phys) < 0
    assert wrapped.sample(3, n_times=7, random_state=0).shape == (3, 7, 2)
    with pytest.raises(ValueError, match="initial_ensemble"):
        wrapped.assimilate(y_phys, initial_ensemble=np.ones((4, 2)))


def test_transformed_state_filter_learned_options():
    X3 = A * ar1(8, 20) + B
    obs = ObservationModel("identity", noise_std=0.1 * A, indices=[0])
    log = FunctionTransformer(np.log, inverse_func=np.exp)
    # SOAD never differentiates h, so any bijective transformer works
    soad = TransformedStateFilter(SOADAssimilator(obs, **FAST), log).fit(X3)
    y = X3[0, :L, :1].copy()
    assert soad.assimilate(y)["analysis"].shape == (L, 4, 2)
    # SDA differentiates h in torch: the transformer must be affine
    with pytest.raises(ValueError, match="transformer"):
        TransformedStateFilter(SDAAssimilator(obs, **FAST), log).fit(X3)
    # no observation model: the identity's noise is learned from y - X in physical units
    noise = 0.3 * A
    y3 = X3[..., :1] + noise * np.random.default_rng(0).standard_normal(X3[..., :1].shape)
    est = TransformedStateFilter(SDAAssimilator(**FAST)).fit(X3, y3)
    assert est.filter_.n_obs_ == 1
    np.testing.assert_allclose(est.filter_.obs_std_, [noise], rtol=0.1)
    np.testing.assert_allclose(est.filter_.obs_scale_, X3[..., 0].std(), rtol=1e-9)


def test_units_warning():
    X = A * ar1() + B
    obs = ObservationModel("identity", noise_std=0.1 * A, indices=[0])
    ests = [SDAAssimilator(obs, **FAST).fit(X), SOADAssimilator(obs, **FAST).fit(X)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnitsWarning)
        for est in ests:
            for seed in range(20):  # windows of the training climatology: no warning
                y = obs.simulate(A * ar1(1, L, seed=seed)[0] + B, random_state=seed)
                y[1::2] = np.nan
                est.assimilate(y)
            # a window at an extreme of the climatology, but within the training range
            low, high = est._obs_range_[:, 0]
            z_edge = 0.98 * (high - est.obs_mean_[0]) / est.obs_scale_[0]
            assert z_edge / np.hypot(1.0, est.obs_std_[0] / est.obs_scale_[0]) > 3.0
            edge = np.full((L, 1), est.obs_mean_[0] + z_edge * est.obs_scale_[0])
            est.assimilate(edge)
    y_std = obs.simulate(ar1(1, L, seed=1)[0], random_state=1) / A  # standardised units
    for est in ests:
        with pytest.warns(UnitsWarning, match="other units than the training data"):
            est.assimilate(y_std)
        with pytest.warns(UnitsWarning):
            est.score(A * ar1(1, L, seed=1)[0] + B, y_std)
    # the pipeline mistake: an assimilator fitted on scaled states given physical y
    scaled_obs = ObservationModel("identity", noise_std=0.1, indices=[0])
    pipe = make_pipeline(StandardScaler(), SDAAssimilator(scaled_obs, **FAST)).fit(X[0])
    y_phys = obs.simulate(X[1, :L], random_state=0)
    with pytest.warns(UnitsWarning, match="column 0"):
        pipe[-1].assimilate(y_phys)
    with pytest.warns(UnitsWarning):
        pipe.score(X[1, :L], y_phys)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnitsWarning)
        pipe[-1].assimilate(pipe[0].transform(X[1, :L])[:, :1])  # scaled y: no warning


@pytest.fixture
def restore_threads():
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def test_n_threads_is_applied_and_restored(monkeypatch, restore_threads):
    import dasim.diffusion.training as training

    seen = {}
    train = training.train_eps_model

    def recording_train(*args, **kwargs):
        seen["fit"] = torch.get_num_threads()
        return train(*args, **kwargs)

    def h(x):
        if isinstance(x, torch.Tensor):
            seen["assimilate"] = torch.get_num_threads()
        return x

    monkeypatch.setattr(training, "train_eps_model", recording_train)
    obs = ObservationModel(h, noise_std=0.1, indices=[0])
    X = ar1(4, 20)
    torch.set_num_threads(3)
    est = SDAAssimilator(obs, **dict(FAST, n_threads=2)).fit(X)
    assert seen["fit"] == 2 and est.n_threads_ == 2
    assert torch.get_num_threads() == 3
    est.assimilate(X[0, :L, :1])
    assert seen["assimilate"] == 2 and torch.get_num_threads() == 3
    est.sample(2)
    assert torch.get_num_threads() == 3
    # the default: half the physical cores, 1 to 4, whatever torch's own setting is
    default = SDAAssimilator(obs, **dict(FAST, n_threads=None)).fit(X)
    assert default.n_threads_ == _default_n_threads()
    assert 1 <= default.n_threads_ <= 4 and seen["fit"] == default.n_threads_
    assert torch.get_num_threads() == 3


def test_n_threads_restored_after_an_error_and_validated(monkeypatch, restore_threads):
    import dasim.diffusion.training as training

    def failing_train(*args, **kwargs):
        raise FloatingPointError("non-finite training loss")

    torch.set_num_threads(3)
    X = ar1(4, 20)
    for bad in (0, -1, 1.5, True, "4"):
        est = SOADAssimilator(**dict(FAST, n_threads=bad))
        with pytest.raises(ValueError, match="n_threads"):
            est.fit(X)
        assert not hasattr(est, "score_net_")
    monkeypatch.setattr(training, "train_eps_model", failing_train)
    with pytest.raises(FloatingPointError):
        SOADAssimilator(**dict(FAST, n_threads=1)).fit(X)
    assert torch.get_num_threads() == 3


def test_thread_blocks_nest_without_undoing_each_other(restore_threads):
    from dasim.assimilators._runtime import _torch_threads

    torch.set_num_threads(3)
    with _torch_threads(torch, 2):
        assert torch.get_num_threads() == 2
        with _torch_threads(torch, 1):  # e.g. a second estimator in another thread
            assert torch.get_num_threads() == 2
        assert torch.get_num_threads() == 2  # the inner block did not restore 3
    assert torch.get_num_threads() == 3
