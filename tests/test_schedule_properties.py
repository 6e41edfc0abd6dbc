"""Property tests (float64) of the schedule interface: what is derived from alpha and sigma.

Every schedule (VE, VP with a linear beta, early-stopped or not, and cosine) is checked
against finite differences of its own alpha and sigma, against the moment equation of its
SDE, and (where a subclass writes g^2 or the KDE's total variance in closed form) against
the generic derivation.
"""

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

from dasim.diffusion.schedules import (
    CosineSchedule,
    DiffusionSchedule,
    VESchedule,
    VPSchedule,
    make_schedule,
)

times = st.floats(0.02, 0.98)


@st.composite
def schedules(draw):
    kind = draw(st.sampled_from(["ve", "vp", "vp-early-stop", "cosine"]))
    if kind == "cosine":
        return CosineSchedule(draw(st.floats(1e-6, 0.5)))
    if kind == "ve":
        sigma_x = draw(st.floats(1e-3, 10.0))
        return VESchedule(sigma_x, sigma_x * draw(st.floats(1.01, 1e3)))
    try:
        return VPSchedule(
            draw(st.floats(1e-3, 0.9)),
            draw(st.floats(1.0, 100.0)),
            early_stop=kind == "vp-early-stop",
        )
    except ValueError:  # beta_max too small for the early stop to come before t = 1
        assume(False)


def _central(f, t, h=1e-6):
    return (f(t + h) - f(t - h)) / (2 * h)


@settings(max_examples=60, deadline=None)
@given(schedule=schedules(), t=times)
def test_drift_and_diffusion_are_those_of_alpha_and_sigma(schedule, t):
    # f = d log(alpha) / dt and g^2 = d sigma^2 / dt - 2 f sigma^2, by finite differences
    f, g2, sigma2 = schedule.drift(t), schedule.g2(t), schedule.sigma2(t)
    fd_f = _central(lambda u: math.log(schedule.alpha(u)), t)
    assert f == pytest.approx(fd_f, rel=1e-6, abs=1e-8)
    fd_dsigma2 = _central(schedule.sigma2, t)
    scale = abs(fd_dsigma2) + abs(2 * f * sigma2) + 1e-8
    assert abs(g2 - (fd_dsigma2 - 2 * f * sigma2)) <= 1e-6 * scale
    assert g2 > 0 and schedule.diffusion(t) == pytest.approx(math.sqrt(g2), rel=1e-15)
    # a closed-form g^2 of a subclass agrees with the generic derivation
    generic = DiffusionSchedule._g2(schedule, np.float64(t), np)
    assert g2 == pytest.approx(generic, rel=1e-12, abs=1e-300)
    alpha, sigma = schedule(t)
    assert alpha == schedule.alpha(t) == schedule.mu(t) and sigma == schedule.sigma(t)
    assert sigma == pytest.approx(math.sqrt(sigma2), rel=1e-15)


@settings(max_examples=30, deadline=None)
@given(schedule=schedules(), t0=times, t1=times, var0=st.floats(0.0, 4.0))
def test_marginal_variance_solves_the_moment_equation(schedule, t0, t1, var0):
    # v(t) = alpha^2 var0 + sigma^2 solves dv/dt = 2 f v + g^2, forward in time (the
    # direction in which the equation is stable)
    t0, t1 = min(t0, t1), max(t0, t1)
    assume(t1 - t0 > 1e-3)
    v0 = schedule.marginal_variance(t0, var0)
    sol = solve_ivp(
        lambda t, v: 2 * schedule.drift(t) * v + schedule.g2(t),
        (t0, t1),
        [v0],
        method="DOP853",
        rtol=1e-11,
        atol=1e-14 * (1 + v0),
    )
    assert sol.success
    expected = schedule.marginal_variance(t1, var0)
    assert sol.y[0, -1] == pytest.approx(expected, rel=1e-7, abs=1e-12)
    mean = schedule.marginal_mean(np.array([var0, -1.0]), t1)
    np.testing.assert_allclose(mean, schedule.alpha(t1) * np.array([var0, -1.0]), rtol=1e-15)


@settings(max_examples=40, deadline=None)
@given(
    schedule=schedules(), t=times, m=st.floats(-3, 3), v=st.floats(0.0, 4.0), z=st.floats(-3, 3)
)
def test_probability_flow_transports_gaussian_marginals(schedule, t, m, v, z):
    # x_0 ~ N(m, v): the flow x(t) = alpha m + sqrt(V(t)) z, V = alpha^2 v + sigma^2, moves
    # along the probability-flow drift evaluated with the exact Gaussian score
    def path(u):
        return schedule.alpha(u) * m + math.sqrt(schedule.marginal_variance(u, v)) * z

    x = path(t)
    score = -(x - schedule.alpha(t) * m) / schedule.marginal_variance(t, v)
    velocity = schedule.probability_flow_drift(np.array([x]), t, np.array([score]))[0]
    fd = _central(path, t)
    assert velocity == pytest.approx(fd, rel=1e-6, abs=1e-6 * (1 + abs(x)))
    reverse = schedule.reverse_drift(np.array([x]), t, np.array([score]))[0]
    assert reverse == pytest.approx(velocity - 0.5 * schedule.g2(t) * score, rel=1e-12, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    sigma_x=st.floats(1e-3, 0.9),
    beta_max=st.floats(1.0, 100.0),
    t=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=10),
)
def test_vp_preserves_variance(sigma_x, beta_max, t):
    schedule = VPSchedule(sigma_x, beta_max)
    alpha, sigma = schedule(np.array(t))
    np.testing.assert_allclose(alpha**2 + sigma**2, 1.0, rtol=0, atol=4e-16)
    np.testing.assert_allclose(schedule.marginal_variance(np.array(t), 1.0), 1.0, atol=4e-16)


@settings(max_examples=40, deadline=None)
@given(schedule=schedules(), t=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=10))
def test_kde_total_variance_is_the_marginal_variance_of_the_kernel(schedule, t):
    assume(not isinstance(schedule, CosineSchedule))
    t = np.array(t)
    var0 = 0.0 if getattr(schedule, "early_stop", False) else schedule.sigma_x**2
    np.testing.assert_allclose(
        schedule.sigmabar2(t), schedule.marginal_variance(t, var0), rtol=1e-12, atol=1e-300
    )
    assert make_schedule(schedule, sigma_x=None) is schedule


@settings(max_examples=20, deadline=None)
@given(schedule=schedules(), t=st.lists(times, min_size=1, max_size=6))
def test_numpy_and_torch_inputs_agree(schedule, t):
    torch = pytest.importorskip("torch")
    names = ["alpha", "sigma", "sigma2", "drift", "g2", "diffusion"]
    if hasattr(schedule, "sigmabar2"):
        names += ["sigmabar", "sigmabar2"]
    tt = torch.tensor(t, dtype=torch.float64)
    for name in names:
        out = getattr(schedule, name)(tt)
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float64, name
        np.testing.assert_allclose(
            out.numpy(), getattr(schedule, name)(np.array(t)), rtol=1e-13, err_msg=name
        )
    # integer tensors get torch's default dtype, numpy scalars stay numpy scalars
    assert schedule.alpha(torch.tensor(1)).dtype == torch.get_default_dtype()
    assert isinstance(schedule.alpha(0.5), np.float64)


def test_cosine_closed_forms():
    s = CosineSchedule(1e-3)
    t = np.linspace(0, 1, 11)
    np.testing.assert_allclose(s.drift(t), -2 * s.omega * np.tan(s.omega * t), rtol=1e-15)
    np.testing.assert_allclose(s.g2(t), -2 * (1 + 1e-6) * s.drift(t), rtol=1e-15)
    np.testing.assert_allclose(s.marginal_variance(t, 1.0), 1 + 1e-6, rtol=1e-15)
    assert repr(s) == "CosineSchedule(eta=0.001)"
