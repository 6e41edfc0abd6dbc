"""Fixed-step solvers of the probability-flow ODE (``sample_ode(solver=...)``, issue #14).

Three kinds of check: exact references where theory gives them (the step weights against
their closed form; one kernel centre, where the denoiser is constant and every solver is
exact); convergence to adaptive RK45 at a tight tolerance from the same starting noise, at
the solver's order as the steps double; and, at the default 20 score evaluations, the
oracle of ``test_kde_sampling`` (moments and the energy-distance test against the exact
mixture sampler), with its power shown on too few steps.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_kde_sampling import (
    ALPHA,
    SCHEDULES,
    SIGMA_X,
    anisotropic_problem,
    assert_moments,
    bimodal_problem,
    energy_pvalue,
)

from dasim.diffusion.kde_sampling import (
    CovarianceKernel,
    _step_weights,
    default_ode_steps,
    kde_analysis,
    ode_sigma_grid,
    reverse_start_std,
    sample_mixture,
    sample_ode,
)
from dasim.diffusion.schedules import VESchedule, VPSchedule

SOLVERS = ("heun", "ab2", "ab3")
ORDER = {"heun": 2, "ab2": 2, "ab3": 3}
N_START = 100


# --------------------------------------------------------------------------- exact references


@settings(max_examples=60, deadline=None)
@given(h=st.floats(1e-3, 20.0), lam_a=st.floats(-8.0, 8.0))
def test_two_point_weights_are_the_closed_form(h, lam_a):
    # w_b = e^{-lam_b} int e^lam (lam - lam_a)/h = 1 - (1 - r)/h, w_a = (1 - r) - w_b.
    r = math.exp(-h)
    w_a, w_b = _step_weights(lam_a, lam_a + h, [lam_a, lam_a + h])
    phi = -math.expm1(-h)  # 1 - r without cancellation
    w_b_exact = 1.0 - phi / h
    assert w_a + w_b == pytest.approx(1.0 - r, rel=1e-13)
    assert w_b == pytest.approx(w_b_exact, rel=1e-9, abs=1e-13)


@settings(max_examples=40, deadline=None)
@given(
    h=st.floats(0.01, 15.0),
    c=st.lists(st.floats(-3.0, 3.0), min_size=3, max_size=3),
    spacing=st.floats(0.2, 1.5),
)
def test_weights_integrate_quadratics_exactly(h, c, spacing):
    # D(lam) = c0 + c1 u + c2 u^2 (u = lam - lam_a): the three-point weights integrate
    # e^{lam - lam_b} D exactly; the reference is by parts, in closed form.
    lam_a, lam_b = 0.0, h
    nodes = [lam_a - 2 * spacing * h, lam_a - spacing * h, lam_a]
    w = _step_weights(lam_a, lam_b, nodes)
    values = [c[0] + c[1] * u + c[2] * u * u for u in nodes]
    got = sum(wj * v for wj, v in zip(w, values, strict=True))
    # int_0^h e^{u-h} u^k du for k = 0, 1, 2
    e = math.exp(-h)
    i0 = 1 - e
    i1 = h - 1 + e
    i2 = h * h - 2 * h + 2 - 2 * e
    exact = c[0] * i0 + c[1] * i1 + c[2] * i2
    assert got == pytest.approx(exact, rel=1e-10, abs=1e-12 * (1 + sum(map(abs, c))))


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("schedule", [VESchedule(0.4, 25.0), VPSchedule(0.4, 10.0)])
def test_one_centre_is_integrated_exactly(solver, schedule):
    """One centre: D = x_1 for every z, so z(s) = x_1 + (z_0 - x_1) s / s_0 exactly."""
    X = np.array([[1.5, -0.5]])
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=(7, 2)) * 3.0
    x, info = sample_ode(X, None, schedule, 0, n_samples=7, x_start=x0, solver=solver, n_steps=3)
    t, sig = ode_sigma_grid(schedule, 3)
    mu0, mu1 = float(schedule.mu(t[0])), float(schedule.mu(t[-1]))
    exact = mu1 * (X + (x0 / mu0 - X) * sig[-1] / sig[0])
    np.testing.assert_allclose(x, exact, rtol=1e-12, atol=1e-12)
    assert info["n_steps"] == 3 and info["nfev"] == (6 if solver == "heun" else 3)


def test_sigma_grid_is_geometric_and_hits_the_floor():
    ve = VESchedule(0.5, 50.0)
    t, sig = ode_sigma_grid(ve, 4)
    np.testing.assert_allclose(sig, np.geomspace(50.0, 0.5, 5), rtol=1e-14)
    np.testing.assert_allclose(ve.sigmabar(t), sig, rtol=1e-14)
    assert t[0] == 1.0 and t[-1] == 0.0
    for vp in (VPSchedule(0.3, 20.0), VPSchedule(0.3, 20.0, early_stop=True)):
        t, sig = ode_sigma_grid(vp, 6)
        scaled = np.sqrt(vp.sigmabar2(t)) / vp.mu(t)
        np.testing.assert_allclose(sig, scaled, rtol=1e-14)
        np.testing.assert_allclose(sig, np.geomspace(sig[0], sig[-1], 7), rtol=1e-10)
        assert t[0] == 1.0 and t[-1] == vp.t_end and np.all(np.diff(t) < 0)
        assert sig[-1] == pytest.approx(vp.sigma_x / vp.target_mu, rel=1e-12)


# --------------------------------------------------------------------------- against RK45


@functools.cache
def _rk45_reference(name):
    """RK45 at rtol = atol = 1e-10 from a fixed start (cached: shared by the solvers)."""
    X, log_w = bimodal_problem()
    sched = SCHEDULES[name]
    std = reverse_start_std(sched, X, log_w)
    x0 = std * np.random.default_rng(7).standard_normal((N_START, 2))
    ref, info = sample_ode(
        X, log_w, sched, 0, n_samples=N_START, x_start=x0, rtol=1e-10, atol=1e-10
    )
    return x0, ref


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("name", ["ve", "vp"])
def test_fixed_steps_converge_to_rk45_at_their_order(solver, name):
    X, log_w = bimodal_problem()
    sched = SCHEDULES[name]
    x0, ref = _rk45_reference(name)
    steps = [60, 120, 240]
    errors = []
    for k in steps:
        x, info = sample_ode(
            X, log_w, sched, 0, n_samples=N_START, x_start=x0, solver=solver, n_steps=k
        )
        assert info["n_steps"] == k and info["solver"] == solver
        errors.append(float(np.sqrt(np.mean((x - ref) ** 2))))
    slope = -np.polyfit(np.log2(steps), np.log2(errors), 1)[0]
    # measured: heun 1.93-1.94, ab2 1.95, ab3 3.07-3.09 (VE and VP)
    assert abs(slope - ORDER[solver]) < 0.3, (errors, slope)
    # at 240 steps the transport is RK45's to a small fraction of the bandwidth
    assert errors[-1] < 1e-3 * SIGMA_X, errors


def test_rk45_reference_is_tight():
    # the reference's own error is far below the fixed-step errors the test measures
    X, log_w = bimodal_problem()
    x0, ref = _rk45_reference("ve")
    loose, _ = sample_ode(
        X, log_w, SCHEDULES["ve"], 0, n_samples=N_START, x_start=x0, rtol=1e-8, atol=1e-8
    )
    assert np.sqrt(np.mean((loose - ref) ** 2)) < 1e-7


# --------------------------------------------------------------------------- oracle


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_default_steps_match_the_exact_mixture(solver, name):
    X, log_w = bimodal_problem()
    sched = SCHEDULES[name]
    x, info = sample_ode(X, log_w, sched, np.random.default_rng(60), n_samples=2000, solver=solver)
    assert info["nfev"] == 20 and info["n_steps"] == default_ode_steps(solver)
    assert info["success"] and x.shape == (2000, 2) and x.dtype == np.float64
    assert_moments(x, X, log_w, sched)
    ref, _ = sample_mixture(X, log_w, sched, np.random.default_rng(61), n_samples=400)
    assert energy_pvalue(x[:400], ref) > ALPHA


@pytest.mark.parametrize("solver", ["ab2", "ab3"])
def test_the_oracle_has_power_against_too_few_steps(solver):
    # Four steps bias the covariance (measured: 9-20 standard errors off): the moment
    # check of the oracle fails, so passing it at the default means something.
    X, log_w = bimodal_problem()
    sched = SCHEDULES["ve"]
    x, _ = sample_ode(
        X, log_w, sched, np.random.default_rng(60), n_samples=2000, solver=solver, n_steps=4
    )
    with pytest.raises(AssertionError):
        assert_moments(x, X, log_w, sched)


@pytest.mark.parametrize("shrink", [True, False])
def test_covariance_kernel_with_a_fixed_step_solver(shrink):
    """The whitened coordinates of kde_analysis serve the fixed-step solvers unchanged."""
    X, log_w = anisotropic_problem()
    h = 0.6
    common = dict(sigma_x=h, kernel="covariance", shrink=shrink, schedule="ve")
    kernel = CovarianceKernel(X, log_w, h, shrink=shrink)
    m, C = kernel.mixture_moments(log_w)
    x, info = kde_analysis(
        X, log_w, sampler="ode", ode_solver="ab3", rng=40, n_samples=1500, **common
    )
    assert info["solver"] == "ab3" and info["nfev"] == 20 and info["rank"] == 2
    big, _ = kde_analysis(X, log_w, sampler="mixture", rng=41, n_samples=200_000, **common)
    dev = big - m
    prod_sd = np.std(dev[:, :, None] * dev[:, None, :], axis=0)
    n = x.shape[0]
    assert np.all(np.abs(x.mean(axis=0) - m) <= 5 * np.sqrt(np.diag(C) / n))
    assert np.all(np.abs(np.cov(x.T, bias=True) - C) <= 5 * prod_sd / np.sqrt(n))
    ref, _ = kde_analysis(X, log_w, sampler="mixture", rng=42, n_samples=400, **common)
    assert energy_pvalue(x[:400], ref) > ALPHA


# --------------------------------------------------------------------------- torch, API


@pytest.mark.parametrize("solver", SOLVERS)
def test_torch_runs_the_same_steps(solver):
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        X, log_w = bimodal_problem()
        for sched in (SCHEDULES["ve"], SCHEDULES["vp"]):
            kwargs = dict(n_samples=200, solver=solver, n_steps=6)
            x_np, info_np = sample_ode(X, log_w, sched, np.random.default_rng(5), **kwargs)
            x_t, info_t = sample_ode(
                X,
                log_w,
                sched,
                np.random.default_rng(5),
                backend="torch",
                device="cpu",
                chunk_size=(128, 100),
                **kwargs,
            )
            assert isinstance(x_t, torch.Tensor) and x_t.dtype == torch.float64
            assert info_t["nfev"] == info_np["nfev"] and info_t["n_steps"] == 6
            np.testing.assert_allclose(x_t.numpy(), x_np, rtol=1e-9, atol=1e-9)
    finally:
        torch.set_num_threads(threads)


def test_non_finite_state_raises(monkeypatch):
    import dasim.diffusion._kde_samplers as ks

    def nan_score(x, *args, **kwargs):
        return np.full_like(x, np.nan), None

    monkeypatch.setattr(ks, "_score_logp_prepared", nan_score)
    X, log_w = bimodal_problem()
    with pytest.raises(RuntimeError, match="ODE solver failed"):
        sample_ode(X, log_w, SCHEDULES["ve"], 0, n_samples=5, solver="ab2", n_steps=4)


def test_sigma_grid_needs_a_decreasing_noise_level():
    class Flat(VESchedule):
        def sigmabar2(self, t):
            return np.full_like(np.asarray(t, dtype=float), 4.0)[()]

    with pytest.raises(ValueError, match="must decrease"):
        ode_sigma_grid(Flat(0.3, 30.0), 4)
    with pytest.raises(ValueError, match="n_steps"):
        ode_sigma_grid(SCHEDULES["ve"], 0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"solver": "euler"}, "solver must be one of"),
        ({"solver": "ab2", "n_steps": 0}, "n_steps must be a positive integer"),
        ({"solver": "ab2", "n_steps": 2.5}, "n_steps must be a positive integer"),
        ({"solver": "heun", "n_steps": True}, "n_steps must be a positive integer"),
        ({"n_steps": 10}, "leave n_steps=None"),
    ],
)
def test_sample_ode_rejects_bad_solver_arguments(kwargs, match):
    X, log_w = bimodal_problem()
    with pytest.raises(ValueError, match=match):
        sample_ode(X, log_w, SCHEDULES["ve"], 0, n_samples=3, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ode_solver": "dopri"}, "ode_solver must be one of"),
        ({"ode_solver": "ab3", "ode_steps": 0}, "ode_steps must be a positive integer"),
    ],
)
def test_kde_analysis_rejects_bad_solver_arguments(kwargs, match):
    X, log_w = bimodal_problem()
    with pytest.raises(ValueError, match=match):
        kde_analysis(X, log_w, sigma_x=SIGMA_X, sigma_max=30.0, rng=0, **kwargs)


def test_default_steps_are_twenty_score_evaluations():
    assert {s: default_ode_steps(s) for s in SOLVERS} == {"heun": 10, "ab2": 20, "ab3": 20}
    with pytest.raises(ValueError, match="solver"):
        default_ode_steps("rk45")


# --------------------------------------------------------------------------- the filter


def _l63_filter(**params):
    from dasim.datasets import make_twin_experiment
    from dasim.filters import KDEDiffusionFilter
    from dasim.models import Lorenz63
    from dasim.observations import ObservationModel

    model = Lorenz63(steps_per_cycle=10, process_noise=0.1)
    obs = ObservationModel("identity", noise_std=2.0, indices=[2])
    X, y = make_twin_experiment(model, obs, 6, random_state=0, process_noise=False)
    est = KDEDiffusionFilter(
        model,
        obs,
        n_members=60,
        bandwidth_y=2.0,
        device="numpy",
        random_state=0,
        **{"flow_start": "noise", **params},
    )
    return est.fit(X), y


@pytest.mark.parametrize(
    ("solver", "steps", "nfev"), [("ab3", None, 20), ("heun", None, 20), ("ab2", 7, 7)]
)
def test_filter_runs_the_fixed_step_solvers(solver, steps, nfev):
    est, y = _l63_filter(ode_solver=solver, ode_steps=steps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = est.assimilate(y)
    assert np.all(ds["nfev"].values == nfev)
    assert np.all(np.isfinite(ds["analysis"].values))


def test_transport_takes_twice_the_score_evaluations():
    """The default moves the members (``flow_start="auto"``): the forward flow encodes
    them and the reverse flow decodes them, 20 score evaluations each."""
    est, y = _l63_filter(flow_start="auto")
    assert est._flow_start == "members"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = est.assimilate(y)
    assert np.all(ds["nfev"].values == 40) and np.all(ds["n_steps"].values == 40)
    assert est.set_params(sampler="mixture")._flow_start == "noise"
    assert est.set_params(sampler="ode", ode_solver="rk45")._flow_start == "noise"


def test_paper_params_keep_rk45():
    from dasim.filters import KDEDiffusionFilter

    assert KDEDiffusionFilter.PAPER_PARAMS["ode_solver"] == "rk45"
    # The defaults use the fixed-step solver (20 score evaluations); the paper's RK45 stays
    # in its parameter set.
    assert KDEDiffusionFilter().ode_solver == "ab3" and KDEDiffusionFilter().ode_steps is None


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"ode_solver": "rk4"}, "ode_solver must be one of"),
        ({"ode_solver": "ab3", "ode_steps": 0}, "ode_steps must be a positive integer"),
        ({"ode_solver": "ab3", "ode_steps": 3.0}, "ode_steps must be a positive integer"),
    ],
)
def test_filter_rejects_bad_solver_parameters(params, match):
    est, _ = _l63_filter()
    with pytest.raises(ValueError, match=match):
        est.set_params(**params).fit(np.zeros((5, 3)))


def test_time_kde_ode_reports_score_evaluations():
    from dasim.benchmarks.timing import time_kde_ode

    ds = time_kde_ode(n_members=20, n_cycles=2, samplers=["mixture", "ab3", "heun", "rk45"])
    nfev = dict(zip(ds["sampler"].values, ds["nfev"].values, strict=True))
    assert nfev["mixture"] == 0 and nfev["ab3"] == 20 and nfev["heun"] == 20
    assert nfev["rk45"] > 20
    assert np.all(ds["seconds_per_cycle"].values > 0)
    assert float(ds["ratio_to_mixture"].sel(sampler="mixture")) == 1.0
    with pytest.raises(ValueError, match="unknown samplers"):
        time_kde_ode(n_members=20, n_cycles=2, samplers=["dopri"])
