"""The localised closed-form KDE score and its probability-flow sampler (#14).

Checked from the formulas of :mod:`dasim.diffusion.kde_local`: the score is the
derivative of each component's local log-density (finite differences, hypothesis,
float64); an infinite radius gives the global score and sampler; a block taper gives the
product of the blocks' global scores; the ESS-tempered local weights meet their target.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dasim.coordinates import PeriodicGrid1D, localization_weights
from dasim.diffusion import _kde_local_core, kde_local
from dasim.diffusion.kde import kde_log_density, kde_score
from dasim.diffusion.kde_local import (
    local_kde_log_density,
    local_kde_score,
    local_log_weights,
    local_tempered_log_weights,
    sample_ode_local,
)
from dasim.diffusion.kde_sampling import sample_ode
from dasim.diffusion.schedules import make_schedule


def _problem(seed, n=12, d=6, radius=1.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    ring = PeriodicGrid1D(d)
    taper = localization_weights(ring, ring, radius)
    terms = -0.5 * rng.normal(size=(n, d)) ** 2
    L = local_log_weights(terms, taper)
    return rng, X, L, taper


SCHEDULES = {
    "ve": make_schedule("ve", sigma_x=0.3, sigma_max=8.0),
    "vp": make_schedule("vp", sigma_x=0.3),
}


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    t=st.floats(0.0, 1.0),
    radius=st.floats(0.3, 4.0),
    name=st.sampled_from(sorted(SCHEDULES)),
)
def test_score_is_derivative_of_local_log_density(seed, t, radius, name):
    schedule = SCHEDULES[name]
    rng, X, L, taper = _problem(seed, radius=radius)
    x = rng.normal(size=(3, X.shape[1])) * 1.5
    s = local_kde_score(x, t, X, L, taper, schedule)
    h = 1e-5
    fd = np.empty_like(s)
    for k in range(X.shape[1]):
        e = np.zeros(X.shape[1])
        e[k] = h
        up = local_kde_log_density(x + e, t, X, L, taper, schedule)[:, k]
        down = local_kde_log_density(x - e, t, X, L, taper, schedule)[:, k]
        fd[:, k] = (up - down) / (2 * h)
    scale = 1.0 + np.abs(s).max()
    np.testing.assert_allclose(s, fd, rtol=0, atol=1e-6 * scale)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), t=st.floats(0.0, 1.0))
def test_infinite_radius_is_the_global_score_and_density(seed, t):
    rng = np.random.default_rng(seed)
    n, d = 9, 4
    X = rng.normal(size=(n, d))
    log_w = -0.5 * rng.normal(size=n) ** 2 * 3
    x = rng.normal(size=(5, d)) * 2
    ones = np.ones((d, d))
    L = np.repeat(log_w[:, None], d, axis=1)
    schedule = SCHEDULES["ve"]
    np.testing.assert_allclose(
        local_kde_score(x, t, X, L, ones, schedule),
        kde_score(x, t, X, log_w, schedule),
        rtol=1e-10,
        atol=1e-12,
    )
    lp = local_kde_log_density(x, t, X, L, ones, schedule)
    glob = kde_log_density(x, t, X, log_w, schedule)
    np.testing.assert_allclose(lp, np.repeat(glob[:, None], d, axis=1), rtol=1e-12, atol=1e-10)


def test_local_log_weights_with_full_taper_sum_every_observation():
    rng = np.random.default_rng(0)
    terms = -rng.random((7, 3))
    L = local_log_weights(terms, np.ones((5, 3)))
    np.testing.assert_allclose(L, np.repeat(terms.sum(1)[:, None], 5, axis=1))


def test_local_log_weights_minus_inf_only_where_the_taper_reaches():
    terms = np.array([[0.0, -np.inf], [-1.0, -2.0]])
    L = local_log_weights(terms, np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert L[0, 0] == 0.0 and L[0, 1] == -np.inf
    np.testing.assert_allclose(L[1], [-1.0, -2.0])


def test_block_taper_gives_the_product_of_block_scores():
    rng = np.random.default_rng(3)
    n, t = 15, 0.2
    X = rng.normal(size=(n, 4))
    w1, w2 = rng.normal(size=n), rng.normal(size=n)
    taper = np.kron(np.eye(2), np.ones((2, 2)))
    L = np.column_stack([w1, w1, w2, w2])
    x = rng.normal(size=(6, 4))
    schedule = SCHEDULES["ve"]
    s = local_kde_score(x, t, X, L, taper, schedule)
    np.testing.assert_allclose(
        s[:, :2], kde_score(x[:, :2], t, X[:, :2], w1, schedule), rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(
        s[:, 2:], kde_score(x[:, 2:], t, X[:, 2:], w2, schedule), rtol=1e-10, atol=1e-12
    )


def test_sparse_and_dense_taper_paths_agree(monkeypatch):
    rng, X, L, taper = _problem(5, n=10, d=30, radius=1.0)
    x = rng.normal(size=(4, 30))
    schedule = SCHEDULES["ve"]
    assert kde_local._StateTaper(taper).dense
    dense = local_kde_score(x, 0.1, X, L, taper, schedule)
    monkeypatch.setattr(_kde_local_core, "_DENSE_UP_TO", 10)
    assert not kde_local._StateTaper(taper).dense
    sparse = local_kde_score(x, 0.1, X, L, taper, schedule, chunk_size=3)
    np.testing.assert_allclose(sparse, dense, rtol=1e-12, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    t=st.floats(0.0, 1.0),
    chunk=st.integers(1, 9),
    radius=st.sampled_from([0.5, 1.0, 2.0, "full"]),
)
def test_chunking_does_not_change_the_score(seed, t, chunk, radius):
    """The query rows are independent: any chunk size gives the one-chunk score and
    log-density (to rounding: a BLAS product may block differently by row count)."""
    rng, X, L, taper = _problem(seed, n=12, d=6, radius=1.0 if radius == "full" else radius)
    if radius == "full":
        taper = np.ones_like(taper)
        L = np.repeat(L[:, :1], 6, axis=1)
    x = rng.normal(size=(9, 6))
    schedule = SCHEDULES["ve"]
    core = kde_local._StateTaper(taper)
    L = _kde_local_core._shared_columns(kde_local._normalise_local(L), core)
    mu, sbar2 = float(schedule.mu(t)), float(schedule.sigmabar2(t))
    whole = _kde_local_core._score_logp(x, mu, sbar2, X, L, core, 9, want_logp=True)
    parts = _kde_local_core._score_logp(x, mu, sbar2, X, L, core, chunk, want_logp=True)
    for a, b in zip(parts, whole, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())


def test_cpu_chunks_stay_in_cache_and_accelerator_chunks_are_large():
    """On the CPU one (rows, members, components) temporary stays near 256 KiB (at least
    one row); an accelerator takes chunks from the larger budget; a given size wins."""
    rows = _kde_local_core._rows_per_chunk
    assert rows(1000, 40, None) == 1
    assert rows(100, 40, None) * 100 * 40 * 8 <= _kde_local_core._CPU_TEMPORARY_BYTES
    assert rows(25, 3, None) == _kde_local_core._CPU_TEMPORARY_BYTES // (25 * 3 * 8)
    assert rows(1000, 40, None, cpu=False) == _kde_local_core._MEMORY_BUDGET // (1000 * 40 * 8 * 5)
    assert rows(1000, 40, 7) == rows(1000, 40, 7, cpu=False) == 7


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), t=st.floats(0.0, 1.0), d=st.integers(1, 8))
def test_full_taper_shortcut_is_the_per_component_computation(seed, t, d):
    """An infinite radius (every taper entry 1) with equal weight columns computes one set
    of kernel weights for all components; it must equal the per-component computation,
    score and log-density, and columns that differ must not take the shortcut."""
    rng = np.random.default_rng(seed)
    n = 9
    X, x = rng.normal(size=(n, d)), rng.normal(size=(5, d))
    taper = np.ones((d, d))
    full = kde_local._StateTaper(taper)
    per_component = kde_local._StateTaper(taper)
    per_component.full = False  # the general path: the dense taper product
    schedule = SCHEDULES["ve"]
    mu, sbar2 = float(schedule.mu(t)), float(schedule.sigmabar2(t))
    L = np.repeat(-0.5 * rng.normal(size=(n, 1)) ** 2, d, axis=1)
    L -= np.log(np.exp(L[:, :1]).sum())
    assert _kde_local_core._shared_columns(L, full).shape == (n, 1)
    assert _kde_local_core._shared_columns(L, per_component).shape == (n, d)
    args = (x, mu, sbar2, X)
    fast = _kde_local_core._score_logp(*args, L[:, :1], full, 3, want_logp=True)
    slow = _kde_local_core._score_logp(*args, L, per_component, 3, want_logp=True)
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * (1 + np.abs(b).max()))
    if d > 1:
        L2 = L.copy()
        L2[0, -1] -= 1.0
        assert _kde_local_core._shared_columns(L2, full).shape == (n, d)
    np.testing.assert_allclose(
        local_kde_score(x, t, X, L, taper, schedule), slow[0], rtol=1e-12, atol=1e-12
    )


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(0.1, 300.0),
    frac=st.floats(0.05, 1.0),
)
def test_tempered_local_weights_meet_the_target(seed, scale, frac):
    rng = np.random.default_rng(seed)
    n = 40
    L = -scale * rng.random((n, 5))
    target = frac * n
    cap = rng.uniform(0.0, 1.0, size=5)
    capped, cbeta = local_tempered_log_weights(L, target, max_exponent=cap)
    assert np.all(cbeta <= cap) and np.all(kde_local._column_ess(capped) >= target * (1 - 1e-9))
    tempered, beta = local_tempered_log_weights(L, target)
    # Same root; where the target is N itself the ESS is flat near beta = 0 and both
    # bisections stop anywhere below ~1e-7, hence the absolute tolerance.
    np.testing.assert_allclose(cbeta, np.minimum(beta, cap), rtol=1e-9, atol=1e-6)
    ess = kde_local._column_ess(tempered)
    assert np.all(ess >= target * (1 - 1e-9))
    assert np.all((0 <= beta) & (beta <= 1))
    np.testing.assert_allclose(tempered, L * beta, rtol=1e-12)
    # The largest such exponent: a little more breaks the target (unless beta is 1).
    below = beta < 1
    if below.any():
        more = kde_local._column_ess(L * np.minimum(1.0, beta * (1 + 1e-6) + 1e-9))
        assert np.all(more[below] < target * (1 + 1e-6))


@pytest.mark.parametrize("solver", ["ab3", "heun", "rk45"])
def test_infinite_radius_flow_is_the_global_flow(solver):
    rng = np.random.default_rng(1)
    n, d = 20, 3
    X = rng.normal(size=(n, d))
    X -= X.mean(0)
    log_w = -0.5 * (X[:, 0] - 0.5) ** 2 / 0.2
    schedule = make_schedule("ve", sigma_x=0.25, sigma_max=10.0)
    start = 10.0 * rng.standard_normal((n, d))
    L = np.repeat(log_w[:, None], d, axis=1)
    local, info = sample_ode_local(
        X, L, np.ones((d, d)), schedule, 0, solver=solver, x_start=start
    )
    glob, ginfo = sample_ode(X, log_w, schedule, 0, solver=solver, x_start=start)
    np.testing.assert_allclose(local, glob, rtol=1e-8, atol=1e-8)
    assert info["nfev"] == ginfo["nfev"]


def test_blocks_transport_to_the_product_of_block_posteriors():
    """Two independent blocks: each block's flow is the global flow of that block."""
    rng = np.random.default_rng(2)
    n = 25
    X = rng.normal(size=(n, 4))
    X -= X.mean(0)
    w1, w2 = -(X[:, 0] ** 2), -((X[:, 3] - 1) ** 2)
    L = np.column_stack([w1, w1, w2, w2])
    taper = np.kron(np.eye(2), np.ones((2, 2)))
    schedule = make_schedule("ve", sigma_x=0.3, sigma_max=10.0)
    start = 10.0 * rng.standard_normal((n, 4))
    out, _ = sample_ode_local(X, L, taper, schedule, 0, x_start=start)
    a, _ = sample_ode(X[:, :2], w1, schedule, 0, solver="ab3", x_start=start[:, :2])
    b, _ = sample_ode(X[:, 2:], w2, schedule, 0, solver="ab3", x_start=start[:, 2:])
    np.testing.assert_allclose(out, np.hstack([a, b]), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dense_up_to", [10, 1000])
def test_torch_backend_matches_numpy(dense_up_to, monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(_kde_local_core, "_DENSE_UP_TO", dense_up_to)
    rng, X, L, taper = _problem(7, n=15, d=30, radius=1.5)
    schedule = make_schedule("ve", sigma_x=0.3, sigma_max=10.0)
    a, _ = sample_ode_local(X, L, taper, schedule, 4)
    b, _ = sample_ode_local(X, L, taper, schedule, 4, backend="torch", device="cpu")
    assert isinstance(b, np.ndarray)
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
    del torch


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"solver": "euler"}, "solver"),
        ({"backend": "jax"}, "backend"),
        ({"solver": "rk45", "n_steps": 5}, "n_steps"),
        ({"n_steps": 0}, "n_steps"),
        ({"x_start": np.zeros((3, 6))}, "x_start"),
    ],
)
def test_sampler_rejects_bad_arguments(kwargs, match):
    _, X, L, taper = _problem(0)
    with pytest.raises(ValueError, match=match):
        sample_ode_local(X, L, taper, SCHEDULES["ve"], 0, **kwargs)


def test_score_rejects_bad_tapers_and_weights():
    _, X, L, taper = _problem(0)
    x = X[:2]
    sched = SCHEDULES["ve"]
    with pytest.raises(ValueError, match="taper_xx"):
        local_kde_score(x, 0.1, X, L, taper * 0.5, sched)  # diagonal not 1
    with pytest.raises(ValueError, match="taper_xx"):
        local_kde_score(x, 0.1, X, L, taper[:3], sched)
    with pytest.raises(ValueError, match="log_w_local"):
        local_kde_score(x, 0.1, X, L[:, :2], taper, sched)
    bad = L.copy()
    bad[:, 0] = -np.inf
    with pytest.raises(ValueError, match="finite entry"):
        local_kde_score(x, 0.1, X, bad, taper, sched)
    with pytest.raises(ValueError, match="n_obs"):
        local_log_weights(np.zeros((3, 2)), np.ones((4, 3)))
    with pytest.raises(ValueError, match="target_ess"):
        local_tempered_log_weights(L, 0.0)
    with pytest.raises(ValueError, match="max_exponent"):
        local_tempered_log_weights(L, 3.0, max_exponent=1.5)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_float32_score_flow_stays_close_to_float64(backend):
    if backend == "torch":
        pytest.importorskip("torch")
    rng, X, L, taper = _problem(11, n=25, d=8, radius=1.0)
    X -= X.mean(0)
    schedule = make_schedule("ve", sigma_x=0.3, sigma_max=10.0)
    start = 10.0 * rng.standard_normal((25, 8))
    kw = dict(x_start=start, backend=backend, device="cpu" if backend == "torch" else None)
    a, _ = sample_ode_local(X, L, taper, schedule, 0, **kw)
    b, _ = sample_ode_local(X, L, taper, schedule, 0, score_dtype="float32", **kw)
    assert a.dtype == b.dtype == np.float64
    # float32 eps (1.2e-7) times the logits' magnitude, amplified along 20 steps.
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-4 * np.abs(a).max())
    assert not np.array_equal(a, b)  # really computed in float32
    with pytest.raises(ValueError, match="score_dtype"):
        sample_ode_local(X, L, taper, schedule, 0, score_dtype="float16")
