"""The fused KDE score (one shift for all rows, rescued rows) and its float32 tiles (#14).

Checks: the score and log-density of numpy float64, numpy float32 and torch (float64,
float32) against the direct float64 reference (explicit differences x - mu c, no
expansion) on random problems, with tolerances derived from an error model of the
expanded logits (scaled to their magnitude and to the precision's eps); rows rescued by
the exact path mixed with rows of the fast path; the probability-flow ODE with float32
tiles against the exact mixture (the oracle of ``test_kde_sampling``) and against the
float64 flow from the same start; the new parameters' validation; the floor of the B4
benchmark.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_kde_sampling import (
    ALPHA,
    SCHEDULES,
    assert_moments,
    bimodal_problem,
    energy_pvalue,
)
from test_kde_score import direct_reference

from dasim.diffusion.kde import (
    EXP_FLOOR,
    RESCUE_BELOW,
    SCORE_DTYPES,
    _Centres,
    _lse_stats,
    _lse_stats_exact,
    check_score_dtype,
    floor_needed,
    kde_log_density,
    kde_score,
    kde_score_and_log_density,
)
from dasim.diffusion.kde_sampling import kde_analysis, sample_mixture, sample_ode, sample_sde

EPS = {"float64": np.finfo(np.float64).eps, "float32": float(np.finfo(np.float32).eps)}


def tolerances(x, t, centres, log_w, schedule, dtype):
    """Absolute error bounds (score per row, log-density per row) of the tiled evaluation.

    Error model: each logit is a (d + 2)-term product of rounded entries, so its error is
    at most about (d + 4) eps T with T = (|x'| + mu |c'|)^2 / (2 s2) + |l - max l| (x', c':
    shifted by the centres' mean). A logit error delta moves the weights by a factor within
    exp(+-2 delta), the denoiser D = sum w c' by at most max|c' - D| (exp(2 delta) - 1),
    and the sums of the second product add N eps relative. The direct reference carries
    the same kind of error in float64, but unshifted: its differences x - mu c are rounded
    at the magnitude A = |x| + mu |c|, so they are off by about eps A each, its logits by
    (d + 2) eps A |x - mu c| / s2 and its score by eps A / s2 (the terms with ``r_abs``;
    they decide where the data sit far from the origin, e.g. at 65 with a kernel of
    0.3). Both normalise the log-weights by their largest, ``max l``, and add it back, a
    rounding at its magnitude: eps |max l| on the log-density (it decides when every
    log-weight is far below 0, e.g. one centre at -1555). A factor 4 covers the rounding
    of the last steps.
    """
    mu = float(schedule.mu(t))
    s2 = float(schedule.sigmabar2(t))
    d = x.shape[1]
    shift = centres.mean(axis=0)
    xs = x - mu * shift
    c0 = centres - shift
    r_x = np.linalg.norm(xs, axis=1)
    r_c = np.linalg.norm(c0, axis=1).max()
    spread = np.abs(log_w - log_w.max()).max()
    big_t = (r_x + mu * r_c) ** 2 / (2 * s2) + spread
    n = centres.shape[0]
    eps = EPS[dtype]
    r_abs = np.linalg.norm(x, axis=1) + mu * np.linalg.norm(centres, axis=1).max()
    delta_ref = (d + 2) * EPS["float64"] * r_abs * (r_x + mu * r_c) / s2
    delta = (d + 4) * eps * big_t + (d + 4) * EPS["float64"] * big_t + delta_ref
    sum_err = (n + 2) * eps
    d_err = 2 * r_c * np.expm1(2 * delta) + sum_err * r_c
    score_tol = 4 * (mu * d_err / s2 + EPS["float64"] * (r_x + mu * r_c + r_abs) / s2)
    shift_abs = abs(float(log_w.max()))
    logp_tol = 4 * (
        delta + sum_err + EPS["float64"] * (big_t + d * abs(math.log(s2)) + 1 + shift_abs)
    )
    return score_tol, logp_tol


def assert_within(got_s, got_l, ref_s, ref_l, tol_s, tol_l):
    err_s = np.linalg.norm(got_s - ref_s, axis=1)
    assert np.all(err_s <= tol_s), (err_s.max(), tol_s[np.argmax(err_s - tol_s)])
    err_l = np.abs(got_l - ref_l)
    assert np.all(err_l <= tol_l), (err_l.max(), tol_l[np.argmax(err_l - tol_l)])


@st.composite
def problems(draw):
    """Random centres, log-weights (up to 2000 nats apart: rescued rows) and queries."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = draw(st.integers(1, 40))
    m = draw(st.integers(1, 30))
    d = draw(st.integers(1, 4))
    scale = draw(st.floats(0.1, 10.0))
    offset = draw(st.floats(-100.0, 100.0))
    spread = draw(st.sampled_from([0.0, 1.0, 30.0, 2000.0]))
    centres = offset + scale * rng.normal(size=(n, d))
    log_w = -spread * rng.uniform(size=n)
    near = centres[rng.integers(n, size=m)] + scale * draw(st.floats(0.0, 3.0)) * rng.normal(
        size=(m, d)
    )
    far = offset + 20 * scale * rng.normal(size=(m, d))
    x = np.where(rng.uniform(size=(m, 1)) < 0.8, near, far)
    schedule = SCHEDULES[draw(st.sampled_from(sorted(SCHEDULES)))]
    t = max(draw(st.floats(0.0, 1.0)), float(schedule.t_end))
    return x, t, centres, log_w, schedule


# A draw that CI's random profile found against the model without the reference's
# unshifted rounding: a query on a centre, data at 65, the VP schedule's end (its
# log-density error 2.5e-14 against the old bound of 2.4e-14).
_ON_A_CENTRE = (
    (
        np.array([[65.13358836]]),
        0.03125,
        np.array([[65.13358836], [64.85963858]]),
        np.array([-0.0, -0.0]),
        SCHEDULES["vp"],
    ),
    "float64",
)


def _far_below_zero():
    """One centre whose log-weight is -1555, eight queries around it (the VE schedule).

    The random profile found a draw like it (under 4 BLAS threads) against the model
    without the log-weights' own magnitude: its log-density error was 2.3e-13, one unit
    in the last place at 1555, against a bound of 2.2e-14. This one (seed 1602) shows
    the same error on any thread count.
    """
    rng = np.random.default_rng(1602)
    centres = rng.normal(size=(1, 3))
    x = centres + 3 * rng.normal(size=(8, 3))
    t = float(rng.uniform(0.5, 1.0))
    return (x, t, centres, np.array([-1555.06816584]), SCHEDULES["ve"]), "float64"


@settings(max_examples=80, deadline=None)
@given(problem=problems(), dtype=st.sampled_from(SCORE_DTYPES))
@example(*_ON_A_CENTRE)
@example(*_far_below_zero())
def test_numpy_score_matches_the_direct_reference(problem, dtype):
    x, t, centres, log_w, schedule = problem
    ref_s, ref_l = direct_reference(x, t, centres, log_w, schedule)
    s, lp = kde_score_and_log_density(x, t, centres, log_w, schedule, dtype=dtype)
    assert s.dtype == np.float64 and lp.dtype == np.float64
    assert_within(s, lp, ref_s, ref_l, *tolerances(x, t, centres, log_w, schedule, dtype))


@settings(max_examples=40, deadline=None)
@given(
    problem=problems(),
    dtype=st.sampled_from(SCORE_DTYPES),
    chunk=st.tuples(st.integers(1, 16), st.integers(1, 16)),
)
def test_torch_score_matches_the_direct_reference(problem, dtype, chunk):
    torch = pytest.importorskip("torch")
    x, t, centres, log_w, schedule = problem
    ref_s, ref_l = direct_reference(x, t, centres, log_w, schedule)
    xt = torch.as_tensor(x)  # float64 state, tiles in ``dtype``
    s, lp = kde_score_and_log_density(
        xt, t, torch.as_tensor(centres), torch.as_tensor(log_w), schedule, chunk, dtype=dtype
    )
    assert s.dtype == torch.float64 and lp.dtype == torch.float64
    tol_s, tol_l = tolerances(x, t, centres, log_w, schedule, dtype)
    assert_within(s.numpy(), lp.numpy(), ref_s, ref_l, tol_s, tol_l)


def test_float32_tiles_are_float32_accurate_not_float64():
    # The float32 option is really float32 (errors far above float64 rounding) yet within
    # its own bound: a guard against a silent float64 fallback or a wrong bound.
    rng = np.random.default_rng(3)
    centres = 5.0 * rng.normal(size=(300, 3))
    x = centres[:100] + 0.3 * rng.normal(size=(100, 3))
    log_w = -0.5 * rng.normal(size=300) ** 2
    sched = SCHEDULES["ve"]
    ref_s, ref_l = direct_reference(x, 0.0, centres, log_w, sched)
    s64 = kde_score(x, 0.0, centres, log_w, sched)
    s32 = kde_score(x, 0.0, centres, log_w, sched, dtype="float32")
    scale = np.abs(ref_s).max()
    assert np.abs(s64 - ref_s).max() < 1e3 * EPS["float64"] * scale
    assert np.abs(s32 - ref_s).max() > 1e3 * EPS["float64"] * scale
    tol_s, tol_l = tolerances(x, 0.0, centres, log_w, sched, "float32")
    lp32 = kde_log_density(x, 0.0, centres, log_w, sched, dtype=np.float32)
    assert_within(s32, lp32, ref_s, ref_l, tol_s, tol_l)


@pytest.mark.parametrize("dtype", SCORE_DTYPES)
def test_rescued_rows_and_fast_rows_together(dtype):
    # Queries near the heaviest centre take the fast pass; queries next to a centre
    # 5000 nats lighter, far from the others, underflow against the common shift and are
    # recomputed exactly: both kinds, interleaved and across several tiles, must match the
    # reference and the exact path.
    rng = np.random.default_rng(4)
    centres = np.array([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0], [1.0, 1.0]])
    log_w = np.array([0.0, -5000.0, -5000.0, -1.0])
    x = np.vstack([centres[[0, 1, 3, 2, 0, 1]] + 0.1 * rng.normal(size=(6, 2))])
    sched = SCHEDULES["ve"]
    t = float(sched.t_end)
    mu, s2 = float(sched.mu(t)), float(sched.sigmabar2(t))
    cen = _Centres(centres, log_w, dtype)
    xs = x - mu * cen.shift
    fast = _lse_stats(xs, mu, s2, cen, (4, 3), True)
    exact = _lse_stats_exact(xs, mu, s2, cen, (4, 3), True)
    rescued = fast[0] != cen.w_max
    assert rescued.tolist() == [False, True, False, True, False, True]
    # the same log-sum-exp and weighted mean either way
    for a, b in ((fast[0] + np.log(fast[1]), exact[0] + np.log(exact[1])),):
        np.testing.assert_allclose(a, b, rtol=0, atol=50 * EPS[dtype] * np.abs(b).max())
    np.testing.assert_allclose(
        fast[2] / fast[1][:, None], exact[2] / exact[1][:, None], atol=1e3 * EPS[dtype]
    )
    ref_s, ref_l = direct_reference(x, t, centres, log_w, sched)
    s, lp = kde_score_and_log_density(x, t, centres, log_w, sched, (4, 3), dtype=dtype)
    assert_within(s, lp, ref_s, ref_l, *tolerances(x, t, centres, log_w, sched, dtype))


@settings(max_examples=60, deadline=None)
@given(problem=problems(), dtype=st.sampled_from(SCORE_DTYPES))
def test_the_floor_is_skipped_only_where_no_logit_reaches_it(problem, dtype):
    x, t, centres, log_w, schedule = problem
    mu, s2 = float(schedule.mu(t)), float(schedule.sigmabar2(t))
    cen = _Centres(centres, log_w, dtype)
    xs = x - mu * cen.shift
    xx_max = float(np.max(np.sum(xs**2, axis=1)))
    logits = cen.log_w - cen.w_max - np.sum((xs[:, None] - mu * cen.C0) ** 2, -1) / (2 * s2)
    if not floor_needed(xx_max, mu, s2, cen, EXP_FLOOR[dtype]):
        assert logits.min() >= EXP_FLOOR[dtype] - 1e-9 * np.abs(logits).max()
    if logits.min() < EXP_FLOOR[dtype]:
        assert floor_needed(xx_max, mu, s2, cen, EXP_FLOOR[dtype])


def test_the_floor_and_the_rescue_threshold_leave_rounding_alone():
    # The floored terms weigh at most N e^(floor) / RESCUE_BELOW against a row's sum:
    # below eps / 10 for N = 10^5 in both precisions.
    for dtype in SCORE_DTYPES:
        bound = 1e5 * math.exp(EXP_FLOOR[dtype]) / RESCUE_BELOW[dtype]
        assert bound < EPS[dtype] / 10
        # the floor stays above the smallest normal number (no subnormal exp)
        assert math.exp(EXP_FLOOR[dtype]) > np.finfo(dtype).tiny * 1e6


# --------------------------------------------------------------------------- the ODE


@pytest.mark.parametrize(
    ("solver", "name"), [("ab3", "ve"), ("heun", "vp"), ("ab3", "vp-early-stop")]
)
def test_float32_ode_matches_the_exact_mixture(solver, name):
    X, log_w = bimodal_problem()
    sched = SCHEDULES[name]
    x, info = sample_ode(
        X,
        log_w,
        sched,
        np.random.default_rng(60),
        n_samples=2000,
        solver=solver,
        score_dtype="float32",
    )
    assert info["nfev"] == 20 and x.dtype == np.float64
    assert_moments(x, X, log_w, sched)
    ref, _ = sample_mixture(X, log_w, sched, np.random.default_rng(61), n_samples=400)
    assert energy_pvalue(x[:400], ref) > ALPHA


def test_float32_rk45_and_torch_match_the_exact_mixture():
    X, log_w = bimodal_problem()
    sched = SCHEDULES["ve"]
    x, info = sample_ode(
        X, log_w, sched, np.random.default_rng(62), n_samples=1000, score_dtype="float32"
    )
    assert info["solver"] == "rk45"
    assert_moments(x, X, log_w, sched)
    torch = pytest.importorskip("torch")
    xt, _ = sample_ode(
        X,
        log_w,
        sched,
        np.random.default_rng(63),
        n_samples=2000,
        solver="ab3",
        backend="torch",
        device="cpu",
        score_dtype="float32",
    )
    assert xt.dtype == torch.float64
    assert_moments(xt.numpy(), X, log_w, sched)
    ref, _ = sample_mixture(X, log_w, sched, np.random.default_rng(64), n_samples=400)
    assert energy_pvalue(xt.numpy()[:400], ref) > ALPHA


@pytest.mark.parametrize("solver", ["ab3", "heun", "rk45"])
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_float32_flow_stays_next_to_the_float64_flow(solver, name):
    # Same start, same steps (RK45: the same step sequence is not required): the float32
    # tiles perturb the score by a few float32 eps relative, and the flow carries that
    # along; 1000 eps32 of the ensemble's extent leaves a margin of 30 x or more over the
    # largest difference measured (1e-5 with the VP RK45 flow).
    X, log_w = bimodal_problem()
    sched = SCHEDULES[name]
    kw = dict(n_samples=300, solver=solver)
    a, _ = sample_ode(X, log_w, sched, np.random.default_rng(3), **kw)
    b, _ = sample_ode(X, log_w, sched, np.random.default_rng(3), score_dtype="float32", **kw)
    assert np.abs(a - b).max() < 1e3 * EPS["float32"] * np.abs(X).max()
    assert np.abs(a - b).max() > 0  # the float32 tiles are used


def test_sde_and_analysis_take_the_precision():
    X, log_w = bimodal_problem()
    sched = SCHEDULES["vp"]
    a, _ = sample_sde(X, log_w, sched, np.random.default_rng(1), n_steps=30)
    b, _ = sample_sde(X, log_w, sched, np.random.default_rng(1), n_steps=30, score_dtype="float32")
    assert 0 < np.abs(a - b).max() < 1e3 * EPS["float32"] * np.abs(X).max()
    common = dict(sigma_x=0.3, sigma_max=10.0, sampler="ode", ode_solver="ab3")
    a, _ = kde_analysis(X, log_w, rng=2, **common)
    b, _ = kde_analysis(X, log_w, rng=2, score_dtype="float32", **common)
    assert 0 < np.abs(a - b).max() < 1e3 * EPS["float32"] * np.abs(X).max()
    # ignored by the mixture sampler, but still validated
    c, _ = kde_analysis(
        X, log_w, rng=2, sigma_x=0.3, sigma_max=10.0, score_dtype="float32", sampler="mixture"
    )
    assert c.shape == X.shape


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("value", "error"),
    [("float16", ValueError), ("double", ValueError), (np.int64, ValueError), (3, TypeError)],
)
def test_bad_precisions_are_named(value, error):
    X, log_w = bimodal_problem()
    sched = SCHEDULES["ve"]
    with pytest.raises(error, match="score_dtype"):
        sample_ode(X, log_w, sched, 0, solver="ab3", score_dtype=value)
    with pytest.raises(error, match="score_dtype"):
        sample_sde(X, log_w, sched, 0, n_steps=3, score_dtype=value)
    with pytest.raises(error, match="score_dtype"):
        kde_analysis(X, log_w, sigma_x=0.3, sigma_max=5.0, sampler="mixture", score_dtype=value)
    with pytest.raises(error, match="dtype"):
        kde_score(X, 0.5, X, log_w, sched, dtype=value)
    with pytest.raises(ValueError, match="score_dtype"):
        sample_ode(X, log_w, sched, 0, solver="ab3", score_dtype=None)


def test_precision_names_and_dtypes_are_accepted():
    assert check_score_dtype(None) is None
    assert check_score_dtype("float32") == "float32"
    assert check_score_dtype(np.float64) == "float64"
    assert check_score_dtype(np.dtype("float32")) == "float32"
    torch = pytest.importorskip("torch")
    assert check_score_dtype(torch.float32) == "float32"
    with pytest.raises(ValueError, match="dtype"):
        check_score_dtype(torch.float16)


# --------------------------------------------------------------------------- benchmark


def test_benchmark_reports_the_floor():
    from dasim.benchmarks.score_speed import bench_kde_score

    ds = bench_kde_score(
        n_members=(40,), dim=2, backend=("numpy", "torch"), dtype="float32", torch_threads=1
    )
    assert ds.attrs["dtype"] == "float32"
    assert np.all(ds.floor_seconds.values > 0)
    np.testing.assert_allclose(ds.score_over_floor, ds.seconds / ds.floor_seconds)
    with pytest.raises(ValueError, match="dtype"):
        bench_kde_score(n_members=(10,), backend=("numpy",), dtype="float16")
    ds = bench_kde_score(n_members=(10,), backend=("numpy",), floor=False)
    assert "floor_seconds" not in ds


def test_time_kde_ode_times_the_sde_and_torch():
    pytest.importorskip("torch")
    from dasim.benchmarks.timing import time_kde_ode

    ds = time_kde_ode(n_members=20, n_cycles=2, samplers=["mixture", "sde"], device="cpu")
    assert ds["nfev"].values.tolist() == [0.0, 1000.0]
    assert ds.attrs["device"] == "cpu" and ds.attrs["score_dtype"] == "float64"
    with pytest.raises(ValueError, match="score_dtype"):
        time_kde_ode(n_members=20, n_cycles=2, samplers=["ab3"], score_dtype="half")
