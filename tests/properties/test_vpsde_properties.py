"""Property tests (float64) of the VP schedule and of SOAD's likelihood increment."""

import math

import pytest

torch = pytest.importorskip("torch")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dasim.diffusion.guidance import AugmentedGuidance, augmented_log_likelihood  # noqa: E402
from dasim.diffusion.schedules import CosineSchedule  # noqa: E402

F64 = torch.float64
etas = st.floats(1e-6, 0.5)
times = st.floats(0.0, 1.0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ---------------------------------------------------------------------------- schedule


@given(eta=etas, t=st.lists(times, min_size=1, max_size=20))
def test_schedule_variance_identity(eta, t):
    schedule = CosineSchedule(eta)
    mu, sigma = schedule(torch.tensor(t, dtype=F64))
    torch.testing.assert_close(
        mu**2 + sigma**2, torch.full_like(mu, 1 + eta**2), rtol=1e-13, atol=1e-13
    )
    assert torch.all(mu > 0) and torch.all(sigma > 0)


@given(eta=etas)
def test_schedule_endpoints(eta):
    schedule = CosineSchedule(eta)
    mu, sigma = schedule(torch.tensor([0.0, 1.0], dtype=F64))
    assert float(mu[0]) == pytest.approx(1.0, abs=1e-14)
    assert float(sigma[0]) == pytest.approx(eta, rel=1e-6, abs=1e-12)
    assert float(mu[1]) == pytest.approx(eta, rel=1e-9, abs=1e-14)
    assert float(sigma[1]) == pytest.approx(1.0, abs=1e-14)


@given(eta=etas, t1=times, t2=times)
def test_schedule_monotonicity(eta, t1, t2):
    lo, hi = min(t1, t2), max(t1, t2)
    schedule = CosineSchedule(eta)
    mu, sigma = schedule(torch.tensor([lo, hi], dtype=F64))
    assert float(mu[0]) >= float(mu[1]) - 1e-15
    assert float(sigma[0]) <= float(sigma[1]) + 1e-15
    # and the signal-to-noise ratio r = sigma / mu is increasing
    assert float(sigma[0] / mu[0]) <= float(sigma[1] / mu[1]) * (1 + 1e-12)


@given(eta=etas, t=st.lists(times, min_size=2, max_size=8))
def test_schedule_is_vectorised(eta, t):
    schedule = CosineSchedule(eta)
    mu, sigma = schedule(torch.tensor(t, dtype=F64))
    for i, ti in enumerate(t):
        m, s = schedule(torch.tensor(ti, dtype=F64))
        assert float(m) == float(mu[i]) and float(s) == float(sigma[i])


def test_schedule_rejects_bad_eta():
    for eta in (0.0, 1.0, -1e-3, float("nan")):
        with pytest.raises(ValueError, match="eta"):
            CosineSchedule(eta)


# --------------------------------------------------------------------- SOAD likelihood


class TinyNet:
    """A fixed random float64 epsilon-model that mixes all entries (and depends on t)."""

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.randn(n, 16, generator=g, dtype=F64) / math.sqrt(n)
        self.b = torch.randn(16, generator=g, dtype=F64)
        self.w2 = torch.randn(16, n, generator=g, dtype=F64) / 4

    def __call__(self, z, t):
        t = torch.as_tensor(t, dtype=z.dtype)
        t = t[:, None] if t.ndim == 1 else t
        h = torch.tanh(z.reshape(z.shape[0], -1) @ self.w1 + t * self.b)
        return (h @ self.w2).reshape(z.shape)


@st.composite
def soad_problems(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    batch = draw(st.integers(1, 3))
    length = draw(st.integers(1, 5))
    dz = draw(st.integers(1, 3))
    n_obs = draw(st.integers(1, 3))
    per_sample_t = draw(st.booleans())
    if per_sample_t:
        t = torch.tensor(
            draw(st.lists(st.floats(0.02, 0.98), min_size=batch, max_size=batch)), dtype=F64
        )
    else:
        t = torch.tensor(draw(st.floats(0.02, 0.98)), dtype=F64)
    sigma_x = draw(st.floats(0.3, 3.0))
    g = torch.Generator().manual_seed(seed)
    observations = []
    for _ in range(n_obs):
        mask = torch.rand(length, dz, generator=g) < 0.5
        mask.view(-1)[torch.randint(length * dz, (1,), generator=g)] = True  # non-empty
        n = int(mask.sum())
        shape = (batch, n) if draw(st.booleans()) else (n,)
        y = torch.randn(shape, generator=g, dtype=F64)
        if draw(st.booleans()):
            std = draw(st.floats(0.05, 1.0))
        else:
            std = 0.05 + torch.rand(n, generator=g, dtype=F64)
        observations.append((y, mask, std))
    z = 2 * torch.randn(batch, length, dz, generator=g, dtype=F64)
    return TinyNet(length * dz, seed), z, t, observations, sigma_x


@settings(max_examples=40, deadline=None)
@given(problem=soad_problems())
def test_soad_increment_is_minus_sigma2_grad_log_likelihood(problem):
    net, z, t, observations, sigma_x = problem
    schedule = CosineSchedule()
    guidance = AugmentedGuidance(net, observations, schedule, sigma_x=sigma_x, clip=None)
    delta, eps = guidance.increment(z, t)
    zz = z.clone().requires_grad_(True)
    loglik = augmented_log_likelihood(zz, t, net, observations, schedule, sigma_x=sigma_x)
    (grad,) = torch.autograd.grad(loglik.sum(), zz)
    _, sigma = schedule(t)
    sigma = sigma.reshape(-1, 1, 1) if sigma.ndim == 1 else sigma
    torch.testing.assert_close(delta, -(sigma**2) * grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(eps, net(z, t), rtol=0, atol=0)
    # the posterior epsilon is eps + delta / sigma = -sigma * (prior score + grad log-lik)
    torch.testing.assert_close(guidance(z, t), eps - sigma * grad, rtol=1e-9, atol=1e-12)
    # clipping rescales each sample's increment to a sup-norm of at most one
    clipped, _ = AugmentedGuidance(
        net, observations, schedule, sigma_x=sigma_x, clip="sample"
    ).increment(z, t)
    peak = delta.abs().reshape(z.shape[0], -1).amax(1)
    scale = torch.clamp(1 / peak, max=1.0).reshape(-1, 1, 1)
    torch.testing.assert_close(clipped, delta * scale, rtol=1e-12, atol=1e-15)


@settings(max_examples=20, deadline=None)
@given(problem=soad_problems(), direction_seed=st.integers(0, 2**31 - 1))
def test_soad_log_likelihood_gradient_by_finite_differences(problem, direction_seed):
    net, z, t, observations, sigma_x = problem
    schedule = CosineSchedule()

    def f(v):
        return augmented_log_likelihood(v, t, net, observations, schedule, sigma_x=sigma_x)

    zz = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(zz).sum(), zz)
    g = torch.Generator().manual_seed(direction_seed)
    direction = torch.randn(z.shape, generator=g, dtype=F64)
    h = 1e-5
    fd = (f(z + h * direction) - f(z - h * direction)) / (2 * h)  # (B,): samples separate
    analytic = (grad * direction).reshape(z.shape[0], -1).sum(1)
    scale = 1 + analytic.abs()
    assert torch.all((fd - analytic).abs() <= 1e-6 * scale), (fd, analytic)
