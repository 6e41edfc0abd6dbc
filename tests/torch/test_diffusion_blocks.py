"""Tests of the torch diffusion building blocks: windows, networks, schedule, sampler, training."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dasim.diffusion.denoising import denoising_loss, tweedie  # noqa: E402
from dasim.diffusion.networks import (  # noqa: E402
    ConvEpsNet,
    FourierTimeEmbedding,
    LocalScoreNet,
    MLPEpsNet,
    ParameterFreeLayerNorm,
    ResMLP,
)
from dasim.diffusion.sampling import PredictorCorrector  # noqa: E402
from dasim.diffusion.schedules import CosineSchedule  # noqa: E402
from dasim.diffusion.training import train_eps_model  # noqa: E402
from dasim.diffusion.windows import fold_windows, random_windows, unfold_windows  # noqa: E402

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def ar1_covariance(length, a, n_features=1):
    """Covariance of a stationary unit-variance AR(1) per feature, flattened (L, D)."""
    idx = torch.arange(length)
    time_cov = a ** (idx[:, None] - idx[None, :]).abs().to(F64)
    return torch.kron(time_cov, torch.eye(n_features, dtype=F64))


class GaussianEps:
    r"""Exact epsilon of x ~ N(m, C): eps(x, t) = sigma (mu^2 C + sigma^2 I)^{-1} (x - mu m)."""

    def __init__(self, mean, cov, schedule):
        self.mean = mean.reshape(-1)
        self.lam, self.vec = torch.linalg.eigh(cov)
        self.schedule = schedule
        self.calls = 0

    def __call__(self, x, t):
        self.calls += 1
        flat = x.reshape(x.shape[0], -1)
        mu, sigma = self.schedule(torch.as_tensor(t, dtype=x.dtype))
        if mu.ndim == 1:
            mu, sigma = mu[:, None], sigma[:, None]
        d = flat - mu * self.mean
        out = sigma * (((d @ self.vec) / (mu**2 * self.lam + sigma**2)) @ self.vec.T)
        return out.reshape(x.shape)


# ----------------------------------------------------------------------------- windows


@pytest.mark.parametrize("k, length", [(0, 1), (0, 5), (1, 3), (1, 7), (2, 5), (3, 11)])
def test_fold_unfold_roundtrip(k, length):
    x = torch.randn(3, length, 2, generator=torch.Generator().manual_seed(0))
    w = unfold_windows(x, k)
    assert w.shape == (3, length - 2 * k, 2 * k + 1, 2)
    for j in range(length - 2 * k):
        torch.testing.assert_close(w[:, j], x[:, j : j + 2 * k + 1], rtol=0, atol=0)
    torch.testing.assert_close(fold_windows(w, k), x, rtol=0, atol=0)


def test_fold_edge_rule_on_distinct_window_values():
    # give each window a different constant offset so that we can read off which window
    # provided each state of the folded trajectory
    k, length = 2, 9
    x = torch.arange(length, dtype=F64).reshape(1, length, 1)
    w = unfold_windows(x, k) + 100 * torch.arange(length - 2 * k, dtype=F64)[None, :, None, None]
    folded = fold_windows(w, k)[0, :, 0]
    source = torch.div(folded, 100, rounding_mode="floor")
    expected = [0, 0, 0, 1, 2, 3, 4, 4, 4]  # first k from window 0, last k from window N-1
    assert source.tolist() == expected
    torch.testing.assert_close(folded - 100 * source, x[0, :, 0])


def test_windows_reject_short_trajectories():
    with pytest.raises(ValueError, match="2k\\+1"):
        unfold_windows(torch.zeros(1, 4, 1), 2)
    with pytest.raises(ValueError, match="2k\\+1"):
        fold_windows(torch.zeros(1, 3, 4, 1), 2)
    with pytest.raises(ValueError, match="k"):
        unfold_windows(torch.zeros(1, 4, 1), -1)
    with pytest.raises(ValueError, match="n_times"):
        random_windows(torch.zeros(2, 4, 1), 2, 3)


def test_random_windows_are_contiguous_slices_and_cover_all_starts():
    n_traj, n_times, k = 3, 10, 1
    traj = (1000 * torch.arange(n_traj)[:, None] + torch.arange(n_times)[None, :]).to(F64)
    traj = traj[..., None]
    g = torch.Generator().manual_seed(1)
    w = random_windows(traj, k, 3000, g)
    assert w.shape == (3000, 3, 1)
    values = w[..., 0]
    which, start = torch.div(values[:, 0], 1000, rounding_mode="floor"), values[:, 0] % 1000
    torch.testing.assert_close(
        values - values[:, :1], torch.arange(3.0, dtype=F64).expand(3000, 3)
    )
    assert set(which.long().tolist()) == set(range(n_traj))
    assert set(start.long().tolist()) == set(range(n_times - 2 * k))
    w2 = random_windows(traj, k, 3000, torch.Generator().manual_seed(1))
    torch.testing.assert_close(w, w2, rtol=0, atol=0)


# ---------------------------------------------------------------------------- networks


def test_parameter_free_layer_norm():
    norm = ParameterFreeLayerNorm()
    assert len(list(norm.parameters())) == 0
    h = torch.randn(5, 7, dtype=F64) * 3 + 2
    out = norm(h)
    torch.testing.assert_close(out.mean(-1), torch.zeros(5, dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(out.var(-1), torch.full((5,), 1.0, dtype=F64), atol=1e-4, rtol=0)


def test_resmlp_parameter_count():
    # Linear(in, h) + block(h) ; block(h) ; Linear(h, out) + block(out): 2 linears per block
    net = ResMLP(4, 3, hidden=(8, 8))
    n = sum(p.numel() for p in net.parameters())
    block = lambda w: 2 * (w * w + w)  # noqa: E731
    assert n == (4 * 8 + 8) + block(8) + block(8) + (8 * 3 + 3) + block(3)


def test_time_embedding_scalar_and_batch_agree():
    emb = FourierTimeEmbedding(out=6).double()
    t = torch.tensor([0.1, 0.7], dtype=F64)
    torch.testing.assert_close(emb(t)[1], emb(t[1]))
    net = MLPEpsNet(4, width=8, depth=1).double()
    x = torch.randn(2, 4, dtype=F64)
    torch.testing.assert_close(
        net(x, torch.tensor(0.3, dtype=F64)), net(x, torch.full((2,), 0.3, dtype=F64))
    )


@pytest.mark.parametrize("kernel", ["mlp", "conv"])
def test_local_score_equals_kernel_on_one_window(kernel):
    torch.manual_seed(0)
    k, d = 2, 6
    net = LocalScoreNet(d, window=k, kernel=kernel, width=8, depth=2).double()
    x = torch.randn(3, 2 * k + 1, d, dtype=F64)
    t = torch.tensor([0.2, 0.5, 0.9], dtype=F64)
    direct = net.kernel(x.reshape(3, -1), t).reshape(x.shape)
    torch.testing.assert_close(net(x, t), direct, rtol=1e-12, atol=1e-12)


def test_local_score_edge_rule_on_long_trajectory():
    torch.manual_seed(1)
    k, d, length = 1, 2, 7
    net = LocalScoreNet(d, window=k, width=8, depth=2).double()
    x = torch.randn(2, length, d, dtype=F64)
    t = torch.tensor(0.4, dtype=F64)
    out = net(x, t)
    expected = torch.empty_like(x)
    for i in range(length):
        j = min(max(i - k, 0), length - 2 * k - 1)  # window that provides state i
        window_out = net.kernel(x[:, j : j + 2 * k + 1].reshape(2, -1), t).reshape(2, -1, d)
        expected[:, i] = window_out[:, i - j]
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_local_score_is_local():
    # the output at state i only depends on states within distance 2k (one window away)
    torch.manual_seed(2)
    k, length = 1, 12
    net = LocalScoreNet(1, window=k, width=8, depth=2).double()
    x = torch.randn(1, length, 1, dtype=F64)
    jac = torch.autograd.functional.jacobian(lambda v: net(v, 0.5), x)[0, :, 0, 0, :, 0]
    dist = (torch.arange(length)[:, None] - torch.arange(length)[None, :]).abs()
    assert torch.all(jac[dist > 2 * k] == 0)
    assert torch.all(jac[dist <= k].abs() > 0)


def test_conv_eps_net_commutes_with_periodic_shifts():
    torch.manual_seed(3)
    net = ConvEpsNet(channels=3, width=8, depth=2, kernel_size=3).double()
    x = torch.randn(4, 3, 10, dtype=F64)
    t = torch.rand(4, dtype=F64)
    out = net(x.reshape(4, -1), t).reshape(4, 3, 10)
    shifted = net(torch.roll(x, 3, dims=-1).reshape(4, -1), t).reshape(4, 3, 10)
    torch.testing.assert_close(shifted, torch.roll(out, 3, dims=-1), rtol=1e-10, atol=1e-12)


def test_network_argument_errors():
    with pytest.raises(ValueError, match="kernel"):
        LocalScoreNet(2, kernel="transformer")
    with pytest.raises(ValueError, match="kernel_size"):
        ConvEpsNet(3, kernel_size=4)
    net = LocalScoreNet(2, window=2, width=8, depth=1)
    with pytest.raises(ValueError, match="2k\\+1"):
        net(torch.zeros(1, 4, 2), 0.5)
    with pytest.raises(ValueError, match="shape"):
        net(torch.zeros(1, 9, 3), 0.5)
    with pytest.raises(ValueError, match="t"):
        net(torch.zeros(2, 9, 2), torch.zeros(3))


# ---------------------------------------------------------------------- schedule, loss


def test_tweedie_inverts_the_forward_process():
    schedule = CosineSchedule()
    x = torch.randn(4, 5, 2, dtype=F64)
    eps = torch.randn(4, 5, 2, dtype=F64)
    t = torch.tensor([0.0, 0.3, 0.7, 1.0], dtype=F64)
    mu, sigma = schedule(t)
    x_t = mu[:, None, None] * x + sigma[:, None, None] * eps
    torch.testing.assert_close(tweedie(x_t, eps, mu, sigma), x, rtol=1e-9, atol=1e-9)


def test_denoising_loss_of_the_optimal_model_matches_theory():
    # x ~ N(0, 1): E[eps | x_t] = sigma x_t / (mu^2 + sigma^2) and the minimal risk is
    # E_t[mu^2 / (mu^2 + sigma^2)]
    schedule = CosineSchedule()

    def optimal(x_t, t):
        mu, sigma = schedule(t)
        return (sigma / (mu**2 + sigma**2))[:, None, None] * x_t

    n = 200_000
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 1, generator=g, dtype=F64)
    loss = denoising_loss(optimal, x, schedule, generator=g)
    grid = torch.linspace(0, 1, 100_001, dtype=F64)
    mu, sigma = schedule(grid)
    risk = torch.trapezoid(mu**2 / (mu**2 + sigma**2), grid)
    # per-sample loss lies in [0, ~ (eps^2 + ...)], its sd is below 1.5
    assert abs(float(loss - risk)) < 5 * 1.5 / math.sqrt(n)
    zero = denoising_loss(lambda x_t, t: torch.zeros_like(x_t), x, schedule, generator=g)
    assert float(zero) > float(risk) + 0.1
    same = denoising_loss(optimal, x[:1000], schedule, torch.Generator().manual_seed(5))
    weighted = denoising_loss(
        optimal,
        x[:1000],
        schedule,
        torch.Generator().manual_seed(5),
        weights=torch.full((1, 1), 3.0, dtype=F64),
    )
    torch.testing.assert_close(same, weighted)


# ----------------------------------------------------------------------------- sampler


def test_predictor_is_exact_for_a_point_mass():
    # for p_0 = delta(x0), eps(x, t) = (x - mu x0)/sigma and DDIM keeps x = mu x0 + sigma e
    schedule = CosineSchedule()
    x0 = torch.randn(2, 4, 3, dtype=F64)
    e = torch.randn(2, 4, 3, dtype=F64)

    def eps(x, t):
        mu, sigma = schedule(t)
        return (x - mu * x0) / sigma

    sampler = PredictorCorrector(schedule, n_steps=7, n_corrections=0)
    times = sampler.timesteps(dtype=F64)
    mu, sigma = schedule(times[0])
    x = mu * x0 + sigma * e
    for t, s in zip(times[:-1], times[1:], strict=True):
        x = sampler.predict(x, t, s, eps(x, t))
        mu, sigma = schedule(s)
        torch.testing.assert_close(x, mu * x0 + sigma * e, rtol=1e-10, atol=1e-12)


def test_sampler_reproduces_gaussian_prior_covariance_without_corrections():
    # pure DDIM with the exact epsilon of N(0, C): only Monte-Carlo and O(1/T) errors
    schedule = CosineSchedule()
    length, n = 8, 4096
    cov = ar1_covariance(length, 0.8)
    eps = GaussianEps(torch.zeros(length), cov, schedule)
    sampler = PredictorCorrector(schedule, n_steps=256, n_corrections=0)
    x = sampler.sample(eps, (n, length, 1), torch.Generator().manual_seed(0), dtype=F64)
    flat = x.reshape(n, -1)
    se_mean = torch.sqrt(cov.diagonal() / n)
    assert torch.all(flat.mean(0).abs() < 5 * se_mean)
    emp = torch.cov(flat.T)
    se_cov = torch.sqrt((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / n)
    assert torch.all((emp - cov).abs() < 5 * se_cov)


def test_sampler_with_corrections_reproduces_prior_covariance():
    # with Langevin steps the per-sample step size delta = tau / mean(e^2) depends on the
    # sample, a bias of relative order 2/n_event that is small for n_event = 64
    schedule = CosineSchedule()
    length, d, n = 32, 2, 2048
    cov = ar1_covariance(length, 0.8, d)
    eps = GaussianEps(torch.zeros(length * d), cov, schedule)
    sampler = PredictorCorrector(schedule, n_steps=64, n_corrections=1, tau=0.25)
    x = sampler.sample(eps, (n, length, d), torch.Generator().manual_seed(0), dtype=F64)
    flat = x.reshape(n, -1)
    assert torch.all(flat.mean(0).abs() < 5 * torch.sqrt(cov.diagonal() / n))
    ratio = torch.cov(flat.T).diagonal() / cov.diagonal()
    # achieved (seeded): mean ratio 1.054, range [0.96, 1.13]; (n_event + 2) / n_event = 1.03
    assert abs(float(ratio.mean()) - 1) < 0.08
    assert float((ratio - 1).abs().max()) < 0.08 + 5 * math.sqrt(2 / n)
    lag1 = (flat[:, :-d] * flat[:, d:]).mean(0) / 0.8  # lag-one autocorrelation / a
    assert abs(float(lag1.mean()) - 1) < 0.08


def test_refresh_policies_and_evaluation_counts():
    schedule = CosineSchedule()
    cov = ar1_covariance(6, 0.5)
    calls = []

    def hook(x, s, generator):
        calls.append(float(s))
        return x

    for n_corr in (0, 2):
        outs = {}
        for refresh in (True, False):
            eps = GaussianEps(torch.zeros(6), cov, schedule)
            sampler = PredictorCorrector(schedule, n_steps=10, n_corrections=n_corr)
            calls.clear()
            outs[refresh] = sampler.sample(
                eps,
                (5, 6, 1),
                torch.Generator().manual_seed(3),
                post_step=hook,
                refresh_score_in_corrector=refresh,
                dtype=F64,
            )
            expected = 10 * (1 + n_corr) if refresh else (10 if n_corr == 0 else 11)
            assert eps.calls == expected
            assert len(calls) == 10 * (1 + n_corr)
            assert calls[0] == pytest.approx(0.9) and calls[-1] == 0.0
        if n_corr == 0:  # caching is exact when there is no correction
            torch.testing.assert_close(outs[True], outs[False], rtol=0, atol=0)
        else:
            assert not torch.equal(outs[True], outs[False])


def test_sampler_is_deterministic_and_validates():
    schedule = CosineSchedule()
    eps = GaussianEps(torch.zeros(4), torch.eye(4, dtype=F64), schedule)
    sampler = PredictorCorrector(schedule, n_steps=8, n_corrections=1)
    a = sampler.sample(eps, (3, 4, 1), torch.Generator().manual_seed(0), dtype=F64)
    b = sampler.sample(eps, (3, 4, 1), torch.Generator().manual_seed(0), dtype=F64)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="n_steps"):
        PredictorCorrector(schedule, n_steps=0)
    with pytest.raises(ValueError, match="tau"):
        PredictorCorrector(schedule, tau=-1.0)
    with pytest.raises(ValueError, match="n_corrections"):
        PredictorCorrector(schedule, n_corrections=-1)


# ---------------------------------------------------------------------------- training


def _ar1_trajectories(n_traj, n_times, a=0.8, seed=0):
    rng = np.random.default_rng(seed)
    x = np.empty((n_traj, n_times, 1))
    x[:, 0] = rng.standard_normal((n_traj, 1))
    for i in range(1, n_times):
        x[:, i] = a * x[:, i - 1] + math.sqrt(1 - a**2) * rng.standard_normal((n_traj, 1))
    return x.astype(np.float32)


def _tiny_model(seed=0):
    torch.manual_seed(seed)
    return LocalScoreNet(1, window=1, width=32, depth=2, embedding=16)


def test_training_decreases_the_loss():
    data = _ar1_trajectories(40, 48)
    model = _tiny_model()
    history = train_eps_model(
        model,
        data,
        CosineSchedule(),
        window=1,
        n_epochs=10,
        batch_size=32,
        epoch_size=640,
        learning_rate=3e-3,
        seed=0,
        progress=False,
    )
    assert history["n_steps"] == 200
    assert len(history["train_loss"]) == len(history["valid_loss"]) == 10
    assert history["valid_loss"][-1] < 0.8 * history["valid_loss"][0]
    assert min(history["valid_loss"]) < 0.6  # the eps = 0 model scores about 1
    assert history["lr"][-1] == pytest.approx(0.0, abs=1e-12)
    assert history["seconds"] > 0
    elapsed = history["elapsed"]
    assert len(elapsed) == 10 and bool(np.all(np.diff(elapsed) > 0))
    assert 0 < elapsed[-1] <= history["seconds"]
    assert not model.training


def test_training_is_deterministic_for_a_seed():
    data = _ar1_trajectories(10, 30)
    weights = []
    for seed in (0, 0, 1):
        model = _tiny_model()
        train_eps_model(
            model,
            data,
            CosineSchedule(),
            window=1,
            n_epochs=3,
            batch_size=16,
            epoch_size=64,
            seed=seed,
            progress=False,
        )
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], weights[2])


def test_early_stopping_and_best_weights():
    data = _ar1_trajectories(10, 30)
    model = _tiny_model()
    before = [p.detach().clone() for p in model.parameters()]
    history = train_eps_model(
        model,
        data,
        CosineSchedule(),
        window=1,
        n_epochs=20,
        batch_size=16,
        epoch_size=32,
        learning_rate=0.0,
        weight_decay=0.0,
        patience=2,
        seed=0,
        progress=False,
    )
    # no parameter change: the fixed validation loss never improves after epoch 0
    assert history["best_epoch"] == 0 and history["n_epochs"] == 3
    assert history["stopped_early"]
    assert len(set(history["valid_loss"])) == 1
    for p, q in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, q)
    # a single trajectory is split along time; plain samples (window=None) also work
    history = train_eps_model(
        _tiny_model(), data[:1], CosineSchedule(), window=1, n_epochs=2, seed=0, progress=False
    )
    assert len(history["valid_loss"]) == 2
    history = train_eps_model(
        _tiny_model(), data[:, :3], CosineSchedule(), n_epochs=2, seed=0, progress=False
    )
    assert history["n_steps"] == 2


def test_training_argument_errors():
    data = _ar1_trajectories(4, 10)
    schedule = CosineSchedule()
    with pytest.raises(ValueError, match="n_epochs"):
        train_eps_model(_tiny_model(), data, schedule, window=1, n_epochs=0)
    with pytest.raises(ValueError, match="validation_fraction"):
        train_eps_model(_tiny_model(), data, schedule, window=1, validation_fraction=1.0)
    with pytest.raises(ValueError, match="patience"):
        train_eps_model(
            _tiny_model(), data, schedule, window=1, patience=2, validation_fraction=0.0
        )
    with pytest.raises(ValueError, match="finite"):
        bad = data.copy()
        bad[0, 0, 0] = np.nan
        train_eps_model(_tiny_model(), bad, schedule, window=1)
    with pytest.raises(ValueError, match="n_times"):
        train_eps_model(_tiny_model(), data[:, :2], schedule, window=1)
