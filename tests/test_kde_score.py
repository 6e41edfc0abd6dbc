"""Closed-form KDE score: schedules, accuracy against direct differences, tiling, errors."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from scipy.special import logsumexp, softmax

from dasim.diffusion.kde import (
    DEFAULT_MEMORY_BUDGET,
    effective_sample_size,
    kde_log_density,
    kde_score,
    kde_score_and_log_density,
    observation_log_weights,
    resolve_device,
    tile_shape,
)
from dasim.diffusion.schedules import VESchedule, VPSchedule, make_schedule

SCHEDULES = [
    VESchedule(0.3, 20.0),
    VPSchedule(0.3, 20.0),
    VPSchedule(0.3, 20.0, early_stop=True),
]
SCHEDULE_IDS = ["ve", "vp", "vp-early-stop"]


def direct_reference(x, t, centres, log_w, schedule):
    """Score and log-density from explicit differences x - mu c (no expansion)."""
    mu = schedule.mu(t)
    s2 = schedule.sigmabar2(t)
    diff = x[:, None, :] - mu * centres[None, :, :]
    logits = log_w[None, :] - np.sum(diff**2, axis=-1) / (2 * s2)
    w = softmax(logits, axis=1)
    score = -np.einsum("mn,mnd->md", w, diff) / s2
    d = x.shape[1]
    logp = logsumexp(logits, axis=1) - logsumexp(log_w) - 0.5 * d * np.log(2 * np.pi * s2)
    return score, logp


# --------------------------------------------------------------------------- schedules


def _fd(f, t, h=1e-6):
    return (f(t + h) - f(t - h)) / (2 * h)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=SCHEDULE_IDS)
def test_schedule_is_the_linear_sde(schedule):
    # Transition kernel of dx = f x dt + g dW: d mu/dt = f mu, d var/dt = 2 f var + g^2.
    # The diffused kernel variance sigmabar^2 obeys the same law (the mu^2 sigma_x^2 part
    # scales like mu^2), so both identities must hold for every schedule.
    t = np.linspace(max(schedule.t_end, 1e-3) + 1e-3, 0.99, 7)
    np.testing.assert_allclose(
        _fd(schedule.mu, t), schedule.drift(t) * schedule.mu(t), rtol=1e-6, atol=1e-9
    )
    np.testing.assert_allclose(
        _fd(schedule.sigmabar2, t),
        2 * schedule.drift(t) * schedule.sigmabar2(t) + schedule.g2(t),
        rtol=1e-6,
        atol=1e-8,
    )
    assert np.all(schedule.g2(t) > 0)


def test_ve_values():
    s = VESchedule(0.5, 50.0)
    assert s.sigmabar(0.0) == 0.5 and s.sigmabar(1.0) == 50.0
    assert s.t_end == 0.0 and s.t_start == 1.0
    assert s.prior_std == 50.0 and s.floor_std == 0.5 and s.target_mu == 1.0
    np.testing.assert_allclose(s.g2(0.5), 2 * (0.5 + 0.5 * 49.5) * 49.5)
    assert s.drift(0.3) == 0.0 and s.mu(0.3) == 1.0


def test_vp_values():
    s = VPSchedule(0.4, 50.0)
    assert s.t_end == 0.0 and s.floor_std == pytest.approx(0.4) and s.target_mu == 1.0
    np.testing.assert_allclose(s.mu(1.0), np.exp(-12.5))
    np.testing.assert_allclose(s.sigma2(0.7), 1 - s.mu(0.7) ** 2)
    np.testing.assert_allclose(s.g2(0.3), 15.0)
    np.testing.assert_allclose(s.drift(0.3), -7.5)
    np.testing.assert_allclose(s.prior_std, np.sqrt(np.exp(-25) * 0.16 + 1 - np.exp(-25)))


def test_vp_early_stop_reaches_the_floor():
    s = VPSchedule(0.5, 50.0, early_stop=True)
    assert 0 < s.t_end < 1
    np.testing.assert_allclose(np.sqrt(s.sigma2(s.t_end)), 0.5, rtol=1e-12)
    np.testing.assert_allclose(s.floor_std, 0.5, rtol=1e-12)
    np.testing.assert_allclose(s.target_mu, np.sqrt(1 - 0.25), rtol=1e-12)


def test_schedules_are_vectorised():
    for s in SCHEDULES:
        t = np.linspace(0.2, 1.0, 5).reshape(5, 1)
        for fun in (s.mu, s.sigmabar, s.sigmabar2, s.drift, s.g2):
            out = fun(t)
            assert out.shape == (5, 1)
            np.testing.assert_allclose(out[:, 0], [fun(float(v)) for v in t[:, 0]])
        assert np.ndim(s.sigmabar(0.5)) == 0


@pytest.mark.parametrize(
    ("factory", "name"),
    [
        (lambda v: VESchedule(v, 10.0), "sigma_x"),
        (lambda v: VESchedule(0.1, v), "sigma_max"),
        (lambda v: VPSchedule(v, 10.0), "sigma_x"),
        (lambda v: VPSchedule(0.1, v), "beta_max"),
    ],
)
@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan, np.inf])
def test_schedule_rejects_bad_parameters(factory, name, bad):
    with pytest.raises(ValueError, match=name):
        factory(bad)


def test_schedule_rejects_inconsistent_parameters():
    with pytest.raises(ValueError, match="sigma_max must exceed sigma_x"):
        VESchedule(2.0, 1.0)
    with pytest.raises(ValueError, match="sigma_x"):
        VPSchedule(1.5, 10.0, early_stop=True)
    with pytest.raises(ValueError, match="beta_max"):
        VPSchedule(0.9, 0.1, early_stop=True)
    with pytest.raises(ValueError, match="sigma_max is required"):
        make_schedule("ve", sigma_x=0.1)
    with pytest.raises(ValueError, match="schedule"):
        make_schedule("cosine", sigma_x=0.1)
    assert isinstance(make_schedule("vp", sigma_x=0.1), VPSchedule)
    assert make_schedule("vp-early-stop", sigma_x=0.1).early_stop


# --------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize("schedule", SCHEDULES, ids=SCHEDULE_IDS)
@pytest.mark.parametrize("t", [None, 0.05, 0.5, 1.0])
def test_matches_direct_differences(schedule, t):
    rng = np.random.default_rng(0)
    t = schedule.t_end if t is None else max(t, schedule.t_end)
    centres = rng.normal(size=(37, 3))
    x = rng.normal(size=(23, 3)) * 2
    log_w = rng.normal(size=37) * 4
    ref_s, ref_l = direct_reference(x, t, centres, log_w, schedule)
    s, lp = kde_score_and_log_density(x, t, centres, log_w, schedule)
    assert s.dtype == np.float64 and lp.dtype == np.float64
    np.testing.assert_allclose(s, ref_s, rtol=1e-10, atol=1e-10 * np.abs(ref_s).max())
    np.testing.assert_allclose(lp, ref_l, rtol=1e-12, atol=1e-10)
    np.testing.assert_array_equal(kde_score(x, t, centres, log_w, schedule), s)
    np.testing.assert_array_equal(kde_log_density(x, t, centres, log_w, schedule), lp)


def test_expansion_is_guarded_against_cancellation():
    # Far from the origin, with a small bandwidth: the naive |x|^2 - 2x.c + |c|^2 loses
    # all digits (|x|^2 ~ 1e8, distances ~ 1e-2); the shift by the centres' mean and the
    # clipping keep the result accurate.
    rng = np.random.default_rng(1)
    offset = 1e4
    centres = offset + 0.05 * rng.normal(size=(30, 2))
    x = np.vstack([centres[:5], offset + 0.05 * rng.normal(size=(10, 2))])
    sched = VESchedule(0.01, 1.0)
    ref_s, ref_l = direct_reference(x - offset, 0.0, centres - offset, np.zeros(30), sched)
    s, lp = kde_score_and_log_density(x, 0.0, centres, None, sched)
    np.testing.assert_allclose(s, ref_s, rtol=1e-7, atol=1e-7 * np.abs(ref_s).max())
    np.testing.assert_allclose(lp, ref_l, rtol=1e-9)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=SCHEDULE_IDS)
def test_far_queries_and_tiny_weights_stay_finite(schedule):
    # 1e3 sigmabar away from every centre and with all log-weights near -1e5 a naive
    # exp underflows to 0/0; log-sum-exp must give the exact limit: the softmax picks the
    # centre with the largest logit.
    rng = np.random.default_rng(2)
    t = max(0.3, schedule.t_end)
    sbar = float(schedule.sigmabar(t))
    mu = float(schedule.mu(t))
    centres = rng.normal(size=(10, 2))
    log_w = -1e5 + rng.normal(size=10)
    direction = np.array([[0.6, 0.8], [-1.0, 0.0], [0.0, -1.0]])
    x = 1e3 * sbar * direction
    s, lp = kde_score_and_log_density(x, t, centres, log_w, schedule)
    assert np.all(np.isfinite(s)) and np.all(np.isfinite(lp))
    ref_s, ref_l = direct_reference(x, t, centres, log_w, schedule)
    np.testing.assert_allclose(s, ref_s, rtol=1e-9)
    np.testing.assert_allclose(lp, ref_l, rtol=1e-12)
    logits = log_w - np.sum((x[:, None] - mu * centres) ** 2, -1) / (2 * sbar**2)
    best = centres[np.argmax(logits, axis=1)]
    np.testing.assert_allclose(
        s, (mu * best - x) / sbar**2, rtol=1e-6, atol=1e-6 * np.abs(s).max()
    )
    # adding a constant to the log-weights changes nothing
    s0, lp0 = kde_score_and_log_density(x, t, centres, log_w + 1e5, schedule)
    np.testing.assert_allclose(s0, s, rtol=1e-9)
    np.testing.assert_allclose(lp0, lp, rtol=1e-9)


def test_log_density_is_normalised():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(5, 1))
    log_w = rng.normal(size=5)
    for sched in SCHEDULES:
        t = max(0.2, sched.t_end)
        half = np.abs(centres).max() + 12 * float(sched.sigmabar(t))
        grid = np.linspace(-half, half, 20001)[:, None]
        p = np.exp(kde_log_density(grid, t, centres, log_w, sched))
        np.testing.assert_allclose(np.trapezoid(p, grid[:, 0]), 1.0, rtol=1e-8)


def test_zero_weights_equal_dropped_centres():
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(12, 3))
    x = rng.normal(size=(6, 3))
    log_w = rng.normal(size=12)
    log_w[[0, 5, 7]] = -np.inf
    keep = np.isfinite(log_w)
    sched = SCHEDULES[0]
    a = kde_score_and_log_density(x, 0.2, centres, log_w, sched, chunk_size=(2, 4))
    b = kde_score_and_log_density(x, 0.2, centres[keep], log_w[keep], sched)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-12)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-12)


def test_uniform_weights_by_none():
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(9, 2))
    x = rng.normal(size=(4, 2))
    sched = SCHEDULES[1]
    np.testing.assert_array_equal(
        kde_score(x, 0.4, centres, None, sched), kde_score(x, 0.4, centres, np.zeros(9), sched)
    )


# --------------------------------------------------------------------------- tiling & memory


def test_tile_shape_respects_the_budget():
    for n in (10**3, 10**4, 10**5):
        q, c = tile_shape(n, n)
        assert q * c * 8 * 2 <= DEFAULT_MEMORY_BUDGET
        assert q >= 1 and c >= 1
    assert tile_shape(100, 50) == (100, 50)
    assert (
        tile_shape(10**5, 10**5, memory_budget=2**20, itemsize=8, temporaries=2)[0]
        * tile_shape(10**5, 10**5, memory_budget=2**20, itemsize=8, temporaries=2)[1]
        <= 2**16
    )
    assert tile_shape(100, 50, chunk_size=7) == (7, 50)
    assert tile_shape(100, 50, chunk_size=(3, 200)) == (3, 50)
    for bad in (0, -1, (1, 0), (1, 2, 3), 1.5):
        with pytest.raises(ValueError, match="chunk_size"):
            tile_shape(10, 10, chunk_size=bad)
    with pytest.raises(ValueError, match="memory_budget"):
        tile_shape(10, 10, memory_budget=0)


def test_memory_stays_bounded():
    # M = N = 3000: the full pairwise matrix would be 72 MB; with a 1 MiB budget the peak
    # traced allocation must stay a few MB (tiles plus O((M + N) d) vectors).
    rng = np.random.default_rng(6)
    n, d = 3000, 5
    centres = rng.normal(size=(n, d))
    log_w = rng.normal(size=n)
    sched = SCHEDULES[0]
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        s = kde_score(centres, 0.1, centres, log_w, sched, memory_budget=2**20)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, peak
    ref = kde_score(centres[:50], 0.1, centres, log_w, sched)
    np.testing.assert_allclose(s[:50], ref, rtol=1e-12)


# --------------------------------------------------------------------------- weights


def test_observation_log_weights():
    y = np.array([1.0, np.nan, -2.0])
    Y = np.array([[1.0, 7.0, -2.0], [0.0, np.nan, 0.0], [3.0, 1.0, -1.0]])
    lw = observation_log_weights(y, Y, 2.0)
    np.testing.assert_allclose(lw, [0.0, -(1 + 4) / 8, -(4 + 1) / 8])
    lw2 = observation_log_weights(y, Y, np.array([1.0, 5.0, 2.0]))
    np.testing.assert_allclose(lw2, [0.0, -0.5 - 0.5, -2.0 - 1 / 8])
    np.testing.assert_array_equal(
        observation_log_weights(np.full(3, np.nan), np.zeros((4, 3)), 1.0), np.zeros(4)
    )


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((np.zeros(2), np.zeros((3, 2)), 0.0), "sigma_y"),
        ((np.zeros(2), np.zeros((3, 2)), -1.0), "sigma_y"),
        ((np.zeros(2), np.zeros((3, 2)), np.ones(3)), "sigma_y"),
        ((np.zeros(2), np.zeros((3, 3)), 1.0), "Y_sim"),
        ((np.array([np.inf, 0.0]), np.zeros((3, 2)), 1.0), "y_obs"),
        ((np.zeros((2, 1)), np.zeros((3, 2)), 1.0), "y_obs"),
        ((np.zeros(2), np.array([[np.nan, 0.0]]), 1.0), "Y_sim"),
    ],
)
def test_observation_log_weights_errors(args, match):
    with pytest.raises(ValueError, match=match):
        observation_log_weights(*args)


def test_effective_sample_size():
    assert effective_sample_size(np.zeros(7)) == pytest.approx(7.0)
    assert effective_sample_size([0.0, -np.inf, -np.inf]) == pytest.approx(1.0)
    assert effective_sample_size([-1e5, -1e5]) == pytest.approx(2.0)
    np.testing.assert_allclose(effective_sample_size(np.log([1.0, 3.0])), 1 / (1 / 16 + 9 / 16))


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"x": np.zeros(3)}, "x must be 2-D"),
        ({"x": np.full((2, 2), np.nan)}, "x contains NaN"),
        ({"centres": np.zeros((4, 3))}, "centres must have 2 columns"),
        ({"centres": np.array([[np.inf, 0.0]] * 4)}, "centres contains"),
        ({"log_w_obs": np.zeros(3)}, r"log_w_obs must have shape \(4,\)"),
        ({"log_w_obs": np.array([0.0, np.nan, 0, 0])}, "log_w_obs contains NaN"),
        ({"log_w_obs": np.full(4, -np.inf)}, "every observation weight is zero"),
        ({"t": -0.1}, "t must be finite"),
        ({"t": np.nan}, "t must be finite"),
        ({"t": [0.1, 0.2]}, "t must be a scalar"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"backend": "jax"}, "backend"),
    ],
)
def test_bad_input_is_named(kwargs, match):
    args = {
        "x": np.zeros((2, 2)),
        "t": 0.5,
        "centres": np.zeros((4, 2)),
        "log_w_obs": np.zeros(4),
        "schedule": SCHEDULES[0],
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        kde_score(**args)


def test_time_below_the_early_stop_is_rejected():
    with pytest.raises(ValueError, match="sigmabar"):
        kde_score(np.zeros((1, 1)), 0.0, np.zeros((1, 1)), None, SCHEDULES[2])


# --------------------------------------------------------------------------- backends


def test_torch_is_not_imported_by_the_numpy_modules():
    code = (
        "import sys, numpy as np\n"
        "import dasim.diffusion.kde as k, dasim.diffusion.kde_sampling as s\n"
        "from dasim.diffusion.schedules import VESchedule\n"
        "k.kde_score(np.zeros((2, 1)), 0.5, np.ones((3, 1)), None, VESchedule(0.1, 2.0))\n"
        "s.kde_analysis(np.arange(6.0).reshape(3, 2), None, sigma_x=0.5, sigma_max=5.0,\n"
        "               sampler='mixture', rng=0)\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_resolve_device():
    torch = pytest.importorskip("torch")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == expected
    assert resolve_device(None) == expected
    assert resolve_device("cpu") == "cpu"
    assert resolve_device(torch.device("cpu")) == "cpu"
    with pytest.raises(TypeError, match="device"):
        resolve_device(3)


def test_torch_dispatch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(40, 3))
    x = rng.normal(size=(11, 3))
    log_w = rng.normal(size=40)
    sched = SCHEDULES[1]
    ref_s, ref_l = kde_score_and_log_density(x, 0.3, centres, log_w, sched)
    # numpy in, torch backend: numpy float64 out
    s, lp = kde_score_and_log_density(
        x, 0.3, centres, log_w, sched, backend="torch", device="cpu", chunk_size=(4, 9)
    )
    assert isinstance(s, np.ndarray) and s.dtype == np.float64
    np.testing.assert_allclose(s, ref_s, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(lp, ref_l, rtol=1e-12)
    # tensors in: tensor out, same dtype; float32 allowed
    xt = torch.tensor(x, dtype=torch.float32)
    s32 = kde_score(xt, 0.3, torch.tensor(centres), torch.tensor(log_w), sched)
    assert isinstance(s32, torch.Tensor) and s32.dtype == torch.float32
    np.testing.assert_allclose(s32.numpy(), ref_s, rtol=1e-4, atol=1e-4 * np.abs(ref_s).max())
    with pytest.raises(ValueError, match="backend='numpy'"):
        kde_score(torch.tensor(x), 0.3, centres, log_w, sched, backend="numpy")
    with pytest.raises(ValueError, match="x contains NaN"):
        kde_score(torch.full((2, 3), float("nan")), 0.3, centres, log_w, sched)


def test_benchmark_smoke():
    from dasim.benchmarks.score_speed import bench_kde_score

    ds = bench_kde_score(n_members=(30, 60), dim=3, backend=("numpy", "torch"))
    assert ds.seconds.dims == ("backend", "n_members")
    assert np.all(ds.seconds.values > 0)
    assert np.all(ds.peak_memory_bytes.sel(backend="numpy").values > 0)
    assert ds.attrs["dim"] == 3
    with pytest.raises(ValueError, match="backend"):
        bench_kde_score(n_members=(10,), backend=("jax",))
