"""Property tests of the closed-form KDE score (hypothesis, float64).

For random small problems (N 1..8 centres, d 1..4, times in [t_end, 1], bandwidths,
observation weights, all schedules):

* the score is the gradient of the log-density (central finite differences);
* the torch score equals the numpy score, and torch autograd of the torch log-density
  equals the torch score;
* forced tiny tiles (queries and centres split, streaming log-sum-exp) equal one tile;
* the score does not change when a constant is added to the observation log-weights.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dasim.diffusion.kde import kde_log_density, kde_score, kde_score_and_log_density
from dasim.diffusion.schedules import VESchedule, VPSchedule

torch = pytest.importorskip("torch")

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

finite = {"allow_nan": False, "allow_infinity": False}


@st.composite
def schedules(draw):
    kind = draw(st.sampled_from(["ve", "vp", "vp-early-stop"]))
    if kind == "ve":
        sigma_x = draw(st.floats(0.2, 2.0))
        return VESchedule(sigma_x, sigma_x * draw(st.floats(1.5, 20.0)))
    if kind == "vp":
        return VPSchedule(draw(st.floats(0.2, 2.0)), draw(st.floats(0.5, 30.0)))
    return VPSchedule(draw(st.floats(0.2, 0.9)), draw(st.floats(5.0, 30.0)), early_stop=True)


@st.composite
def problems(draw):
    n = draw(st.integers(1, 8))
    d = draw(st.integers(1, 4))
    m = draw(st.integers(1, 3))
    centres = draw(arrays(np.float64, (n, d), elements=st.floats(-2.0, 2.0, **finite)))
    x = draw(arrays(np.float64, (m, d), elements=st.floats(-4.0, 4.0, **finite)))
    log_w = draw(arrays(np.float64, (n,), elements=st.floats(-20.0, 0.0, **finite)))
    schedule = draw(schedules())
    t = draw(st.floats(schedule.t_end, 1.0))
    return x, t, centres, log_w, schedule


def central_difference_gradient(x, t, centres, log_w, schedule):
    h_base = np.cbrt(np.finfo(np.float64).eps)
    grad = np.empty_like(x)
    for j in range(x.shape[1]):
        h = h_base * np.maximum(1.0, np.abs(x[:, j]))
        xp, xm = x.copy(), x.copy()
        xp[:, j] += h
        xm[:, j] -= h
        h_eff = xp[:, j] - xm[:, j]  # the representable step
        fp = kde_log_density(xp, t, centres, log_w, schedule)
        fm = kde_log_density(xm, t, centres, log_w, schedule)
        grad[:, j] = (fp - fm) / h_eff
    return grad


@SETTINGS
@given(problems())
def test_score_is_gradient_of_log_density(problem):
    x, t, centres, log_w, schedule = problem
    score = kde_score(x, t, centres, log_w, schedule)
    fd = central_difference_gradient(x, t, centres, log_w, schedule)
    np.testing.assert_allclose(score, fd, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(score).max()))


@SETTINGS
@given(problems())
def test_torch_matches_numpy_and_autograd(problem):
    x, t, centres, log_w, schedule = problem
    score, logp = kde_score_and_log_density(x, t, centres, log_w, schedule)
    xt = torch.tensor(x, requires_grad=True)
    ct, wt = torch.tensor(centres), torch.tensor(log_w)
    logp_t = kde_log_density(xt, t, ct, wt, schedule)
    (grad,) = torch.autograd.grad(logp_t.sum(), xt)
    score_t = kde_score(xt.detach(), t, ct, wt, schedule)
    scale = max(1.0, np.abs(score).max())
    np.testing.assert_allclose(score_t.numpy(), score, rtol=1e-10, atol=1e-12 * scale)
    np.testing.assert_allclose(logp_t.detach().numpy(), logp, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad.numpy(), score_t.numpy(), rtol=1e-10, atol=1e-12 * scale)


@SETTINGS
@given(problems(), st.integers(1, 3), st.integers(1, 8))
def test_tiles_do_not_change_the_result(problem, q, c):
    x, t, centres, log_w, schedule = problem
    ref_s, ref_l = kde_score_and_log_density(x, t, centres, log_w, schedule)
    s, lp = kde_score_and_log_density(x, t, centres, log_w, schedule, chunk_size=(q, c))
    scale = max(1.0, np.abs(ref_s).max())
    np.testing.assert_allclose(s, ref_s, rtol=1e-12, atol=1e-13 * scale)
    np.testing.assert_allclose(lp, ref_l, rtol=1e-12, atol=1e-12)
    st_, lt = kde_score_and_log_density(
        torch.tensor(x),
        t,
        torch.tensor(centres),
        torch.tensor(log_w),
        schedule,
        chunk_size=(q, c),
    )
    np.testing.assert_allclose(st_.numpy(), ref_s, rtol=1e-10, atol=1e-12 * scale)
    np.testing.assert_allclose(lt.numpy(), ref_l, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(problems(), st.floats(-1e5, 1e5, **finite))
def test_weights_are_scale_free(problem, shift):
    x, t, centres, log_w, schedule = problem
    s0, l0 = kde_score_and_log_density(x, t, centres, log_w, schedule)
    s1, l1 = kde_score_and_log_density(x, t, centres, log_w + shift, schedule)
    scale = max(1.0, np.abs(s0).max())
    # log_w + shift is rounded at ulp(1e5) ~ 1.5e-11, which moves the weights that much.
    np.testing.assert_allclose(s1, s0, rtol=1e-8, atol=1e-9 * scale)
    np.testing.assert_allclose(l1, l0, rtol=1e-9, atol=1e-9)
