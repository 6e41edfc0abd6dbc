"""The shared solvers of dasim.diffusion.solvers: both schedule families, numpy and torch."""

import numpy as np
import pytest

from dasim.diffusion.schedules import CosineSchedule, VESchedule, VPSchedule
from dasim.diffusion.solvers import (
    ddim_step,
    langevin_step,
    predictor_corrector_step,
    probability_flow,
    reverse_sde,
)

SCHEDULES = [CosineSchedule(), VPSchedule(1.0), VESchedule(0.5, 20.0)]


def _gaussian_score(schedule, var0=1.0):
    """The exact score of N(0, var0) diffused by ``schedule`` (``sigmabar2`` for KDE)."""

    def score(x, t):
        alpha = float(schedule.alpha(t))
        return -x / (alpha**2 * var0 + float(schedule.sigma2(t)))

    return score


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
@pytest.mark.parametrize(("solver", "n_steps"), [("rk45", None), ("ab3", 80), ("heun", 120)])
def test_probability_flow_keeps_a_gaussian(schedule, solver, n_steps):
    score = _gaussian_score(schedule)
    v1 = float(schedule.marginal_variance(schedule.t_start, 1.0))
    v0 = float(schedule.marginal_variance(schedule.t_end, 1.0))
    x1 = np.random.default_rng(0).normal(size=(50, 3)) * np.sqrt(v1)
    x0, info = probability_flow(schedule, score, x1, solver=solver, n_steps=n_steps)
    # the flow of a centred Gaussian is the scaling sqrt(v(t) / v(1))
    np.testing.assert_allclose(x0, x1 * np.sqrt(v0 / v1), rtol=2e-3, atol=1e-6)
    assert info["success"] and info["nfev"] > 0


@pytest.mark.parametrize("schedule", SCHEDULES[:2], ids=repr)
def test_reverse_sde_reaches_the_gaussian(schedule):
    score = _gaussian_score(schedule)
    rng = np.random.default_rng(1)
    v1 = float(schedule.marginal_variance(1.0, 1.0))
    x = reverse_sde(schedule, score, rng.normal(size=(4000, 2)) * np.sqrt(v1), rng, n_steps=400)
    assert abs(x.std() - 1.0) < 0.03 and abs(x.mean()) < 0.05


def test_solvers_validate_their_arguments():
    s, score, x = CosineSchedule(), _gaussian_score(CosineSchedule()), np.zeros((2, 2))
    with pytest.raises(ValueError, match="solver must be one of"):
        probability_flow(s, score, x, solver="euler")
    with pytest.raises(ValueError, match="leave n_steps=None"):
        probability_flow(s, score, x, n_steps=5)
    with pytest.raises(ValueError, match="n_steps must be a positive integer"):
        reverse_sde(s, score, x, np.random.default_rng(0), n_steps=0)


def test_steps_agree_on_numpy_and_torch():
    torch = pytest.importorskip("torch")
    s = CosineSchedule()
    rng = np.random.default_rng(2)
    x, eps, z = (rng.normal(size=(5, 3, 2)) for _ in range(3))
    t, u = 0.7, np.linspace(0.2, 0.6, 5)
    T = [torch.from_numpy(a) for a in (x, eps, z)]
    np.testing.assert_allclose(
        ddim_step(s, T[0], t, torch.from_numpy(u), T[1]).numpy(),
        ddim_step(s, x, t, u, eps),
        rtol=1e-13,
    )
    for step_size in ("sample", "batch"):
        np.testing.assert_allclose(
            langevin_step(s, T[0], u[0], T[1], T[2], step_size=step_size).numpy(),
            langevin_step(s, x, u[0], eps, z, step_size=step_size),
            rtol=1e-13,
        )

    def eps_model(y, tt):
        alpha, sigma = s(tt)
        return sigma * y / (alpha**2 + sigma**2)

    draws = iter([z, z])
    out_np, cache = predictor_corrector_step(
        s, eps_model, x, t, 0.6, lambda shape: next(draws), n_corrections=2, refresh=False
    )
    draws_t = iter([T[2], T[2]])
    out_t, cache_t = predictor_corrector_step(
        s, eps_model, T[0], t, 0.6, lambda shape: next(draws_t), n_corrections=2, refresh=False
    )
    np.testing.assert_allclose(out_t.numpy(), out_np, rtol=1e-13)
    np.testing.assert_allclose(cache_t.numpy(), cache, rtol=1e-13)


def test_probability_flow_on_torch_matches_numpy():
    torch = pytest.importorskip("torch")
    s = VPSchedule(1.0)
    score = _gaussian_score(s)
    x1 = np.random.default_rng(3).normal(size=(10, 2))
    for solver in ("rk45", "ab2"):
        a, _ = probability_flow(s, score, x1, solver=solver)
        b, _ = probability_flow(s, score, torch.from_numpy(x1), solver=solver)
        np.testing.assert_allclose(b.numpy(), a, rtol=1e-12)
