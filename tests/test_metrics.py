"""Tests of dasim.metrics: hand-computed cases, closed forms, brute-force references,
input validation and the scikit-learn scorers."""

import tracemalloc

import numpy as np
import pytest
import xarray as xr
from numpy.testing import assert_allclose
from scipy.special import gammaln
from scipy.stats import norm
from sklearn.base import BaseEstimator
from sklearn.model_selection import GridSearchCV, TimeSeriesSplit
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from dasim import metrics
from dasim.metrics import (
    SCORERS,
    crps_ensemble,
    energy_score,
    get_scorer,
    log_evidence,
    neg_crps,
    neg_energy_score,
    neg_rmse,
    rmse,
    spread,
    spread_skill,
    time_mean,
    wasserstein2,
)

# --------------------------------------------------------------------------------------
# Brute-force references (O(N^2), written independently of the module)
# --------------------------------------------------------------------------------------


def _uniform(n_members, lead=()):
    return np.full(lead + (n_members,), 1.0 / n_members)


def brute_crps(truth, ensemble, weights=None):
    """Per-time CRPS from the full pairwise sum, for (T, d) truth, (T, N, d) ensemble."""
    n_times, n_members, _ = ensemble.shape
    w = _uniform(n_members, (n_times,)) if weights is None else np.asarray(weights)
    out = np.empty(n_times)
    for t in range(n_times):
        x, y, wt = ensemble[t], truth[t], w[t]
        first = np.sum(wt[:, None] * np.abs(x - y), axis=0)
        pair = np.sum(
            wt[:, None, None] * wt[None, :, None] * np.abs(x[:, None, :] - x[None, :, :]),
            axis=(0, 1),
        )
        out[t] = np.mean(first - 0.5 * pair)
    return out


def brute_energy(truth, ensemble, weights=None):
    n_times, n_members, _ = ensemble.shape
    w = _uniform(n_members, (n_times,)) if weights is None else np.asarray(weights)
    out = np.empty(n_times)
    for t in range(n_times):
        x, y, wt = ensemble[t], truth[t], w[t]
        first = np.sum(wt * np.linalg.norm(x - y, axis=-1))
        dists = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)
        out[t] = first - 0.5 * wt @ dists @ wt
    return out


def gaussian_crps(y, mu, sigma):
    z = (y - mu) / sigma
    return sigma * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / np.sqrt(np.pi))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


# --------------------------------------------------------------------------------------
# Hand-computed cases
# --------------------------------------------------------------------------------------


def test_crps_two_members_by_hand():
    # members 0 and 2, y = 0.5: E|X - y| = (0.5 + 1.5) / 2 = 1, E|X - X'| = 2 * 2 / 4 = 1
    assert crps_ensemble([0.5], [[0.0], [2.0]]) == pytest.approx(0.5, abs=1e-15)
    # y = 3 outside the ensemble: E|X - y| = (3 + 1) / 2 = 2, so 2 - 0.5 = 1.5
    assert crps_ensemble([3.0], [[0.0], [2.0]]) == pytest.approx(1.5, abs=1e-15)
    # both at once as two components: mean over components
    assert crps_ensemble([0.5, 3.0], [[0.0, 0.0], [2.0, 2.0]]) == pytest.approx(1.0)
    # weights (3/4, 1/4): E|X - y| = 0.375 + 0.375, E|X - X'| = 2 * 3/16 * 2 = 0.75
    assert crps_ensemble([0.5], [[0.0], [2.0]], weights=[0.75, 0.25]) == pytest.approx(0.375)


def test_crps_is_not_the_fair_variant():
    # members (0, 2) at y = 1: plain 1 - 0.5 * 1 = 0.5; the fair variant divides the
    # pairwise sum 4 by N (N - 1) = 2 instead of N^2 = 4 and would give 0
    assert crps_ensemble([1.0], [[0.0], [2.0]]) == pytest.approx(0.5)


def test_rmse_by_hand():
    truth = [1.0, 2.0, 3.0]
    ens = [[0.0, 2.0, 4.0], [2.0, 4.0, 6.0]]  # mean (1, 3, 5): errors (0, 1, 2)
    assert rmse(truth, ens) == pytest.approx(np.sqrt(5.0 / 3.0))
    # weights (1, 0) pick the first member: errors (1, 0, 1)
    assert rmse(truth, ens, weights=[1.0, 0.0]) == pytest.approx(np.sqrt(2.0 / 3.0))
    assert isinstance(rmse(truth, ens), float)


def test_spread_by_hand():
    # component variances (unbiased): 2 and 8, mean 5
    assert spread([[0.0, 0.0], [2.0, 4.0]]) == pytest.approx(np.sqrt(5.0))
    # weighted: mean 2, biased variance 2, 1 - sum w^2 = 0.625
    assert spread([[0.0], [2.0], [4.0]], weights=[0.25, 0.5, 0.25]) == pytest.approx(np.sqrt(3.2))
    # all weight on one member: no spread
    assert spread([[0.0], [2.0]], weights=[1.0, 0.0]) == 0.0


def test_energy_score_by_hand():
    assert energy_score([0.0, 0.0], [[3.0, 4.0]]) == pytest.approx(5.0)
    # E||X - y|| = 5, E||X - X'|| = 2 * 10 / 4 = 5
    assert energy_score([0.0, 0.0], [[3.0, 4.0], [-3.0, -4.0]]) == pytest.approx(2.5)


def test_wasserstein2_by_hand():
    a = [[0.0, 0.0], [1.0, 0.0]]
    b = [[1.0, 1.0], [0.0, 1.0]]
    assert wasserstein2(a, b) == pytest.approx(1.0)
    # one point against two: cost = (1 + 9) / 2
    assert wasserstein2([[0.0]], [[1.0], [-3.0]]) == pytest.approx(np.sqrt(5.0))


def test_spread_skill_by_hand():
    # rmse 2 at both times, spread sqrt(2) at both times
    ens = [[[1.0], [3.0]], [[-1.0], [-3.0]]]
    assert spread_skill([[0.0], [0.0]], ens) == pytest.approx(np.sqrt(0.5))
    # burn-in drops the first time: rmse 1, spread sqrt(2)
    ens = [[[1.0], [3.0]], [[0.0], [2.0]]]
    assert spread_skill([[0.0], [0.0]], ens, burn_in=1) == pytest.approx(np.sqrt(2.0))


def test_spread_skill_near_one_when_calibrated(rng):
    n_times, n_members, d = 400, 40, 5
    truth = rng.normal(size=(n_times, d))
    ens = rng.normal(size=(n_times, n_members, d))

    def mean_sqrt_chi2(k):  # E sqrt(chi2_k / k)
        return np.sqrt(2 / k) * np.exp(gammaln((k + 1) / 2) - gammaln(k / 2))

    # rmse^2 ~ (1 + 1/N) chi2_d / d and spread^2 ~ chi2_{d(N-1)} / (d (N - 1))
    expected = mean_sqrt_chi2(d * (n_members - 1)) / (
        np.sqrt(1 + 1 / n_members) * mean_sqrt_chi2(d)
    )
    assert 1.0 < expected < 1.05
    assert spread_skill(truth, ens) == pytest.approx(expected, abs=0.04)


def test_spread_skill_zero_rmse_raises():
    with pytest.raises(ValueError, match="RMSE is zero"):
        spread_skill([[0.0]], [[[1.0], [-1.0]]])


def test_time_mean():
    assert time_mean([10.0, 1.0, 2.0, 3.0], burn_in=1) == pytest.approx(2.0)
    assert time_mean(np.arange(4.0)) == pytest.approx(1.5)
    assert_allclose(time_mean([[1.0, 2.0], [3.0, 6.0]]), [2.0, 4.0])
    with pytest.raises(ValueError, match="burn_in"):
        time_mean([1.0, 2.0], burn_in=2)
    with pytest.raises(ValueError, match="burn_in"):
        time_mean([1.0, 2.0], burn_in=-1)
    with pytest.raises(TypeError, match="burn_in"):
        time_mean([1.0, 2.0], burn_in=0.5)


# --------------------------------------------------------------------------------------
# Weighted ensembles: weights (0.5, 0.25, 0.25) == first member duplicated
# --------------------------------------------------------------------------------------


def test_weights_equal_duplicated_member(rng):
    n_times, d = 6, 3
    ens = rng.normal(size=(n_times, 3, d)) * [1.0, 3.0, 0.5]
    truth = rng.normal(size=(n_times, d))
    w = np.array([0.5, 0.25, 0.25])
    dup = np.concatenate([ens[:, :1], ens], axis=1)  # (x0, x0, x1, x2)

    assert_allclose(crps_ensemble(truth, ens, w), crps_ensemble(truth, dup), rtol=1e-12)
    assert_allclose(rmse(truth, ens, w), rmse(truth, dup), rtol=1e-12)
    assert_allclose(energy_score(truth, ens, w), energy_score(truth, dup), rtol=1e-8)
    assert_allclose(
        energy_score(truth, ens, np.tile(w, (n_times, 1))), energy_score(truth, dup), rtol=1e-8
    )
    # spread differs only by the bias corrections: 1 - sum w^2 = 0.625 and (N - 1) / N
    biased_w = spread(ens, w) ** 2 * (1 - np.sum(w**2))
    biased_dup = spread(dup) ** 2 * 3 / 4
    assert_allclose(biased_w, biased_dup, rtol=1e-12)
    assert_allclose(
        wasserstein2(ens[0], dup[0][::-1] + 1.0, weights_a=w),
        wasserstein2(dup[0], dup[0][::-1] + 1.0),
        rtol=1e-10,
    )


def test_time_varying_weights_match_per_time_results(rng):
    n_times, n_members, d = 5, 7, 2
    ens = rng.normal(size=(n_times, n_members, d))
    truth = rng.normal(size=(n_times, d))
    w = rng.dirichlet(np.ones(n_members), size=n_times)
    for func in (rmse, crps_ensemble, energy_score):
        vectorised = func(truth, ens, w)
        assert vectorised.shape == (n_times,)
        per_time = [func(truth[t], ens[t], w[t]) for t in range(n_times)]
        assert_allclose(vectorised, per_time, rtol=1e-10, err_msg=func.__name__)
    assert_allclose(spread(ens, w), [spread(ens[t], w[t]) for t in range(n_times)])


def test_leading_dimensions_and_broadcasting(rng):
    ens = rng.normal(size=(2, 3, 5, 4))
    truth = rng.normal(size=(2, 3, 4))
    for func in (rmse, crps_ensemble, energy_score):
        assert func(truth, ens).shape == (2, 3)
    assert spread(ens).shape == (2, 3)
    # a fixed ensemble scored against a sequence of truths
    out = crps_ensemble(truth[0], ens[0, 0])
    assert_allclose(out, [crps_ensemble(truth[0, i], ens[0, 0]) for i in range(3)])


# --------------------------------------------------------------------------------------
# Closed forms and brute force
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("y", [-3.0, -0.4, 1.0, 1.7, 5.0])
def test_crps_matches_gaussian_closed_form(y):
    n_members, mu, sigma = 2000, 1.0, 2.0
    ens = mu + sigma * norm.ppf((np.arange(1, n_members + 1) - 0.5) / n_members)
    # The mid-quantile ensemble's CDF is within 1 / (2N) of the Gaussian's, and the
    # discrepancy integrates to O(sigma log(N) / N^2) for y inside the ensemble's range.
    # The fair variant would differ by about 0.56 sigma / N, far above this tolerance.
    tol = 2 * sigma * (1 + np.log(n_members)) / n_members**2
    got = crps_ensemble([y], ens[:, None])
    assert got == pytest.approx(gaussian_crps(y, mu, sigma), abs=tol)
    assert abs(got - gaussian_crps(y, mu, sigma)) < 0.1 * 0.56 * sigma / n_members


def test_crps_matches_brute_force(rng):
    n_times, n_members, d = 4, 37, 3
    ens = rng.standard_t(3, size=(n_times, n_members, d))
    truth = rng.normal(size=(n_times, d))
    assert_allclose(crps_ensemble(truth, ens), brute_crps(truth, ens), rtol=1e-12)
    w = rng.dirichlet(np.full(n_members, 0.5), size=n_times)
    assert_allclose(crps_ensemble(truth, ens, w), brute_crps(truth, ens, w), rtol=1e-12)
    # ties among members
    ens = np.round(ens)
    assert_allclose(crps_ensemble(truth, ens, w), brute_crps(truth, ens, w), rtol=1e-12)


def test_energy_score_matches_brute_force_and_chunking(rng):
    n_times, n_members, d = 5, 23, 4
    ens = rng.normal(size=(n_times, n_members, d)) + 10.0
    truth = rng.normal(size=(n_times, d)) + 10.0
    w = rng.dirichlet(np.ones(n_members), size=n_times)
    ref = brute_energy(truth, ens, w)
    for chunk_size in (1, 7, n_members**2, 3 * n_members**2, 10**6):
        assert_allclose(energy_score(truth, ens, w, chunk_size=chunk_size), ref, rtol=1e-9)
    assert_allclose(energy_score(truth, ens), brute_energy(truth, ens), rtol=1e-9)


def test_energy_score_in_one_dimension_is_crps(rng):
    ens = rng.normal(size=(6, 30, 1))
    truth = rng.normal(size=(6, 1))
    w = rng.dirichlet(np.ones(30), size=6)
    assert_allclose(energy_score(truth, ens), crps_ensemble(truth, ens), rtol=1e-8)
    assert_allclose(energy_score(truth, ens, w), crps_ensemble(truth, ens, w), rtol=1e-8)


def test_energy_score_memory_is_bounded(rng):
    n_members, d = 3000, 8
    ens = rng.normal(size=(n_members, d))
    truth = np.zeros(d)
    tracemalloc.start()
    try:
        energy_score(truth, ens, chunk_size=2**18)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # one N x N float64 matrix would be 72 MB; the chunks stay far below
    assert peak < n_members**2 * 8 / 4


def test_wasserstein2_one_dimensional_sorted_matching(rng):
    a = rng.normal(size=50)
    b = rng.exponential(size=50)
    expected = np.sqrt(np.mean((np.sort(a) - np.sort(b)) ** 2))
    assert wasserstein2(a[:, None], b[:, None]) == pytest.approx(expected, rel=1e-10)


def test_wasserstein2_translation(rng):
    a = rng.normal(size=(40, 3))
    v = np.array([1.0, -2.0, 2.0])
    assert wasserstein2(a, a + v) == pytest.approx(3.0, rel=1e-10)
    b = rng.normal(size=(25, 3))
    assert wasserstein2(a, b + v) != pytest.approx(wasserstein2(a, b))


def test_wasserstein2_per_time_and_sizes(rng):
    a = rng.normal(size=(3, 20, 2))
    b = rng.normal(size=(3, 30, 2)) + 1.0
    out = wasserstein2(a, b)
    assert out.shape == (3,)
    assert_allclose(out, [wasserstein2(a[t], b[t]) for t in range(3)])
    wa = rng.dirichlet(np.ones(20), size=3)
    out = wasserstein2(a, b, weights_a=wa)
    assert_allclose(out, [wasserstein2(a[t], b[t], weights_a=wa[t]) for t in range(3)])
    # one weights row shared by all times
    assert_allclose(
        wasserstein2(a, b, weights_a=wa[0]),
        [wasserstein2(a[t], b[t], weights_a=wa[0]) for t in range(3)],
    )


def test_wasserstein2_raises_when_not_converged(monkeypatch, rng):
    import ot

    def fake_emd2(a, b, M, **kwargs):
        return 0.0, {"result_code": 3, "warning": "numItermax reached"}

    monkeypatch.setattr(ot, "emd2", fake_emd2)
    with pytest.raises(RuntimeError, match="optimal"):
        wasserstein2(rng.normal(size=(5, 2)), rng.normal(size=(5, 2)))


def test_wasserstein2_calls_emd2_with_float64(monkeypatch, rng):
    import ot

    seen = {}
    real = ot.emd2

    def spy(a, b, M, **kwargs):
        seen["dtypes"] = (a.dtype, b.dtype, M.dtype)
        seen["numItermax"] = kwargs.get("numItermax")
        return real(a, b, M, **kwargs)

    monkeypatch.setattr(ot, "emd2", spy)
    wasserstein2(rng.normal(size=(5, 2)).astype(np.float32), np.arange(6).reshape(3, 2))
    assert seen["dtypes"] == (np.float64,) * 3
    assert seen["numItermax"] >= 100_000


# --------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------

T, N, D = 4, 5, 3
GOOD_TRUTH = np.zeros((T, D))
GOOD_ENS = np.ones((T, N, D))
GOOD_W = np.full((T, N), 1.0 / N)


def _with(arr, index, value):
    arr = np.array(arr, dtype=float)
    arr[index] = value
    return arr


BAD_INPUTS = [
    # (truth, ensemble, weights, error type, pattern)
    (np.zeros((T, D + 1)), GOOD_ENS, None, ValueError, r"truth.*\(4, 4\).*\(4, 5, 3\)"),
    (np.zeros((T + 1, D)), GOOD_ENS, None, ValueError, "truth"),
    (np.zeros(()), GOOD_ENS, None, ValueError, "truth"),
    (_with(GOOD_TRUTH, (1, 1), np.nan), GOOD_ENS, None, ValueError, "truth contains NaN"),
    (_with(GOOD_TRUTH, (0, 2), np.inf), GOOD_ENS, None, ValueError, "truth contains inf"),
    (GOOD_TRUTH, _with(GOOD_ENS, (1, 1, 1), np.nan), None, ValueError, "ensemble contains NaN"),
    (GOOD_TRUTH, _with(GOOD_ENS, (2, 0, 1), -np.inf), None, ValueError, "ensemble.*inf"),
    (GOOD_TRUTH, np.ones(D), None, ValueError, "ensemble"),
    (GOOD_TRUTH, np.ones((T, 0, D)), None, ValueError, "ensemble has 0 members"),
    (np.zeros((T, 0)), np.ones((T, N, 0)), None, ValueError, "ensemble is empty"),
    (np.zeros((0, D)), np.ones((0, N, D)), None, ValueError, "empty"),
    (GOOD_TRUTH, GOOD_ENS, _with(GOOD_W, (0, 0), np.nan), ValueError, "weights contains NaN"),
    (GOOD_TRUTH, GOOD_ENS, _with(GOOD_W, (0, 0), np.inf), ValueError, "weights contains inf"),
    (GOOD_TRUTH, GOOD_ENS, np.tile([-0.2, 0.3, 0.3, 0.3, 0.3], (T, 1)), ValueError, "weights"),
    (GOOD_TRUTH, GOOD_ENS, GOOD_W * 1.01, ValueError, "weights.*sum to 1"),
    (GOOD_TRUTH, GOOD_ENS, np.zeros((T, N)), ValueError, "weights.*sum to 1"),
    (GOOD_TRUTH, GOOD_ENS, np.full((T, N + 1), 1 / (N + 1)), ValueError, "weights"),
    (GOOD_TRUTH, GOOD_ENS, np.full((T + 1, N), 1 / N), ValueError, "weights"),
    (GOOD_TRUTH, GOOD_ENS, np.ones((T, 0)), ValueError, "weights"),
    (np.array([["a"] * D] * T), GOOD_ENS, None, TypeError, "truth"),
    (None, GOOD_ENS, None, TypeError, "truth"),
    (GOOD_TRUTH, None, None, TypeError, "ensemble"),
    (GOOD_TRUTH, GOOD_ENS.astype(complex), None, TypeError, "ensemble"),
    (GOOD_TRUTH, GOOD_ENS, np.full((T, N), "x"), TypeError, "weights"),
]


@pytest.mark.parametrize("func", [rmse, crps_ensemble, energy_score, spread_skill])
@pytest.mark.parametrize(("truth", "ens", "weights", "error", "pattern"), BAD_INPUTS)
def test_bad_inputs_raise_naming_the_argument(func, truth, ens, weights, error, pattern):
    with pytest.raises(error, match=pattern):
        func(truth, ens, weights)


@pytest.mark.parametrize(
    ("ens", "weights", "pattern"),
    [
        (np.ones((T, 1, D)), None, "ensemble has 1 members"),
        (_with(GOOD_ENS, (0, 0, 0), np.nan), None, "ensemble contains NaN"),
        (GOOD_ENS, GOOD_W + 0.1, "weights"),
    ],
)
def test_spread_bad_inputs(ens, weights, pattern):
    with pytest.raises(ValueError, match=pattern):
        spread(ens, weights)


def test_weights_sum_tolerance():
    w = np.array([0.5, 0.5 + 5e-9])
    assert crps_ensemble([0.0], [[0.0], [1.0]], w) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="weights"):
        crps_ensemble([0.0], [[0.0], [1.0]], [0.5, 0.5 + 1e-7])


@pytest.mark.parametrize("chunk_size", [0, -3])
def test_energy_score_bad_chunk_size(chunk_size):
    with pytest.raises(ValueError, match="chunk_size"):
        energy_score(GOOD_TRUTH, GOOD_ENS, chunk_size=chunk_size)
    with pytest.raises(TypeError, match="chunk_size"):
        energy_score(GOOD_TRUTH, GOOD_ENS, chunk_size=2.5)


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "error", "pattern"),
    [
        (np.ones((4, 2)), np.ones((4, 3)), {}, ValueError, r"a and b.*\(4, 2\).*\(4, 3\)"),
        (np.ones((2, 4, 2)), np.ones((4, 2)), {}, ValueError, "a and b"),
        (np.ones((2, 4, 2)), np.ones((3, 4, 2)), {}, ValueError, "a and b"),
        (np.ones((1, 2, 4, 2)), np.ones((1, 2, 4, 2)), {}, ValueError, "a must"),
        (np.ones(4), np.ones(4), {}, ValueError, "a must"),
        (_with(np.ones((4, 2)), (0, 0), np.nan), np.ones((4, 2)), {}, ValueError, "a contains"),
        (np.ones((4, 2)), _with(np.ones((4, 2)), (0, 0), np.inf), {}, ValueError, "b contains"),
        (np.ones((4, 2)), np.ones((0, 2)), {}, ValueError, "b has 0 members"),
        (np.ones((4, 2)), np.ones((3, 2)), {"weights_a": [0.5, 0.5]}, ValueError, "weights_a"),
        (
            np.ones((4, 2)),
            np.ones((3, 2)),
            {"weights_b": [1.0, 1.0, -1.0]},
            ValueError,
            "weights_b",
        ),
        (
            np.ones((4, 2)),
            np.ones((3, 2)),
            {"weights_b": [0.3, 0.3, 0.3]},
            ValueError,
            "weights_b",
        ),
        (np.ones((4, 2)), "abc", {}, TypeError, "b must"),
    ],
)
def test_wasserstein2_bad_inputs(a, b, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        wasserstein2(a, b, **kwargs)


# --------------------------------------------------------------------------------------
# Scorers
# --------------------------------------------------------------------------------------


class FakeFilter(BaseEstimator):
    """Identity-observation stand-in: the analysis is y + bias + fixed member offsets."""

    def __init__(self, bias=0.0, offsets=(-1.0, 0.0, 1.0), weights=None):
        self.bias = bias
        self.offsets = offsets
        self.weights = weights

    def fit(self, X, y=None):
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def assimilate(self, y):
        y = np.asarray(y, dtype=float)
        off = np.asarray(self.offsets, dtype=float)
        # dims deliberately stored in a different order than (time, member, state)
        analysis = y[:, None, :] + self.bias + off[None, :, None]
        data = {
            "analysis": (("member", "time", "state"), analysis.transpose(1, 0, 2)),
            "log_evidence": (("time",), -0.5 * np.sum(y**2, axis=1)),
        }
        if self.weights is not None:
            w = np.broadcast_to(np.asarray(self.weights, dtype=float), (len(y), off.size))
            data["weights"] = (("time", "member"), w)
        return xr.Dataset(data)


@pytest.fixture
def twin(rng):
    X = rng.normal(size=(12, 2))
    y = X + 0.3 * rng.normal(size=X.shape)
    return X, y


def test_scorers_on_fake_estimator(twin):
    X, y = twin
    est = FakeFilter(bias=0.5).fit(X, y)
    analysis = est.assimilate(y)["analysis"].transpose("time", "member", "state").values
    assert neg_rmse(est, X, y) == pytest.approx(-np.mean(rmse(X, analysis)))
    assert neg_crps(est, X, y) == pytest.approx(-np.mean(crps_ensemble(X, analysis)))
    assert neg_energy_score(est, X, y) == pytest.approx(-np.mean(energy_score(X, analysis)))
    assert log_evidence(est, X, y) == pytest.approx(-0.5 * np.mean(np.sum(y**2, axis=1)))
    assert log_evidence(est, None, y) == log_evidence(est, X, y)
    for scorer in SCORERS.values():
        assert isinstance(scorer(est, X, y), float)
    # greater is better: no bias beats bias
    for name in ("neg_rmse", "neg_crps", "neg_energy_score"):
        better = get_scorer(name)(FakeFilter(bias=0.0).fit(X), X, X)
        worse = get_scorer(name)(FakeFilter(bias=2.0).fit(X), X, X)
        assert better > worse, name


def test_scorers_use_weights_when_present(twin):
    X, y = twin
    w = [0.7, 0.2, 0.1]
    est = FakeFilter(weights=w).fit(X)
    analysis = FakeFilter().assimilate(y)["analysis"].transpose("time", "member", "state")
    analysis = analysis.values
    weights = np.tile(w, (len(y), 1))
    assert neg_rmse(est, X, y) == pytest.approx(-np.mean(rmse(X, analysis, weights)))
    assert neg_crps(est, X, y) == pytest.approx(-np.mean(crps_ensemble(X, analysis, weights)))
    assert neg_crps(est, X, y) != pytest.approx(neg_crps(FakeFilter().fit(X), X, y))


def test_scorers_transform_X_through_pipeline(rng):
    X = 5.0 + 3.0 * rng.normal(size=(20, 2))
    pipe = Pipeline([("scale", StandardScaler()), ("filt", FakeFilter())])
    pipe.fit(X)
    Xs = pipe[:-1].transform(X)
    # observations in the scaled space centred on the truth: a perfect ensemble mean
    assert neg_rmse(pipe, X, Xs) == pytest.approx(0.0, abs=1e-12)
    analysis = FakeFilter().assimilate(Xs)["analysis"].transpose("time", "member", "state")
    expected = -np.mean(crps_ensemble(Xs, analysis.values))
    assert neg_crps(pipe, X, Xs) == pytest.approx(expected)
    assert neg_crps(pipe, X, Xs) != pytest.approx(-np.mean(crps_ensemble(X, analysis.values)))
    assert log_evidence(pipe, X, Xs) == pytest.approx(-0.5 * np.mean(np.sum(Xs**2, axis=1)))
    assert log_evidence(pipe, None, Xs) == log_evidence(pipe, X, Xs)


def test_scorer_in_grid_search(twin):
    X, _ = twin
    search = GridSearchCV(
        FakeFilter(), {"bias": [-1.0, 0.0, 0.5]}, scoring=neg_crps, cv=TimeSeriesSplit(3)
    )
    search.fit(X, X)
    assert search.best_params_ == {"bias": 0.0}
    multi = GridSearchCV(
        FakeFilter(),
        {"bias": [1.0, 0.0]},
        scoring={"crps": neg_crps, "rmse": neg_rmse, "es": neg_energy_score},
        refit="rmse",
        cv=TimeSeriesSplit(2),
    ).fit(X, X)
    assert multi.best_params_ == {"bias": 0.0}


def test_scorer_errors(twin):
    X, y = twin
    est = FakeFilter().fit(X)
    with pytest.raises(ValueError, match="X"):
        neg_crps(est, X[:-1], y)
    with pytest.raises(ValueError, match="X"):
        neg_rmse(est, X[:, :1], y)
    with pytest.raises(TypeError, match="assimilate"):
        neg_rmse(StandardScaler().fit(X), X, y)
    with pytest.raises(ValueError, match="unknown scorer"):
        get_scorer("rmse")
    with pytest.raises(TypeError, match="name"):
        get_scorer(None)


def test_scorer_registry():
    assert set(SCORERS) == {"neg_rmse", "neg_crps", "neg_energy_score", "log_evidence"}
    for name, scorer in SCORERS.items():
        assert get_scorer(name) is scorer
        assert scorer.__name__ == name
    assert set(metrics.__all__) >= {"rmse", "spread", "crps_ensemble", "get_scorer"}


# --------------------------------------------------------------------------------------
# An assimilation Dataset as the ensemble argument
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sir_run():
    from dasim.datasets import make_twin_experiment
    from dasim.filters import SIRFilter
    from dasim.models import Lorenz63
    from dasim.observations import ObservationModel

    model = Lorenz63(steps_per_cycle=5, process_noise=0.3)
    obs = ObservationModel("identity", noise_std=1.0)
    X, y = make_twin_experiment(model, obs, 15, random_state=2)
    # resample rarely, so the analysis weights are far from uniform
    pf = SIRFilter(model, obs, n_members=60, ess_threshold=0.05, random_state=0).fit(X)
    return X, y, pf, pf.assimilate(y)


def test_metrics_take_a_weighted_dataset(sir_run):
    X, _, _, ds = sir_run
    a = ds["analysis"].values
    w = ds["weights"].values
    assert np.max(np.abs(w - 1.0 / w.shape[1])) > 0.01  # genuinely weighted
    # the explicit weighted mean, written out
    mean = np.einsum("tm,tms->ts", w, a)
    assert_allclose(rmse(X, ds), np.sqrt(np.mean((mean - X) ** 2, axis=1)), rtol=1e-12)
    assert not np.allclose(rmse(X, ds), rmse(X, a))  # the unweighted mean is another number
    assert_allclose(crps_ensemble(X, ds), crps_ensemble(X, a, w), rtol=1e-12)
    assert_allclose(energy_score(X, ds), energy_score(X, a, w), rtol=1e-12)
    assert_allclose(spread(ds), spread(a, w), rtol=1e-12)
    assert spread_skill(X, ds, burn_in=3) == pytest.approx(spread_skill(X, a, w, burn_in=3))
    assert_allclose(wasserstein2(ds, a), wasserstein2(a, a, w), rtol=1e-12)


def test_metrics_take_dataarrays_and_reorder_dims(sir_run):
    X, _, _, ds = sir_run
    forecast = ds["forecast"]
    swapped = forecast.transpose("state", "time", "member")
    assert_allclose(rmse(X, swapped), rmse(X, forecast.values), rtol=1e-12)
    # a Dataset stored in another dim order gives the same numbers
    reordered = ds.transpose("member", "state", "time")
    assert_allclose(crps_ensemble(X, reordered), crps_ensemble(X, ds), rtol=1e-12)


def test_metrics_dataset_bad_input(sir_run):
    X, _, _, ds = sir_run
    with pytest.raises(ValueError, match="weights"):
        rmse(X, ds, ds["weights"].values)
    with pytest.raises(ValueError, match="'analysis'"):
        rmse(X, ds.drop_vars("analysis"))
    with pytest.raises(ValueError, match="'member' and 'state'"):
        rmse(X, ds["analysis"].rename({"member": "sample"}))
    with pytest.raises(ValueError, match="weights_a"):
        wasserstein2(ds, ds["analysis"].values, weights_a=ds["weights"].values)


# --------------------------------------------------------------------------------------
# Burn-in, unobserved cycles, scorers by name
# --------------------------------------------------------------------------------------


def test_scorers_burn_in(twin):
    X, y = twin
    est = FakeFilter(bias=0.5, weights=[0.5, 0.3, 0.2]).fit(X)
    ds = est.assimilate(y)
    a = ds["analysis"].transpose("time", "member", "state").values
    w = ds["weights"].values
    for k in (0, 1, 5, len(y) - 1):
        assert neg_rmse(est, X, y, burn_in=k) == pytest.approx(-np.mean(rmse(X, a, w)[k:]))
        assert neg_crps(est, X, y, burn_in=k) == pytest.approx(
            -np.mean(crps_ensemble(X, a, w)[k:])
        )
        assert neg_energy_score(est, X, y, burn_in=k) == pytest.approx(
            -np.mean(energy_score(X, a, w)[k:])
        )
        expected = -0.5 * np.mean(np.sum(y[k:] ** 2, axis=1))
        assert log_evidence(est, X, y, burn_in=k) == pytest.approx(expected)
        for name in SCORERS:
            bound = get_scorer(name, burn_in=k)
            assert bound(est, X, y) == SCORERS[name](est, X, y, burn_in=k)


class _CountingFilter(FakeFilter):
    calls = 0

    def assimilate(self, y):
        type(self).calls += 1
        return super().assimilate(y)


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_scorers_check_burn_in_before_any_work(name, twin):
    X, y = twin
    est = _CountingFilter().fit(X)
    _CountingFilter.calls = 0
    for bad, error in [
        (-1, ValueError),
        (len(y), ValueError),
        (1.5, TypeError),
        (True, TypeError),
    ]:
        with pytest.raises(error, match="burn_in"):
            SCORERS[name](est, X, y, burn_in=bad)
    assert _CountingFilter.calls == 0
    with pytest.raises(ValueError, match="burn_in"):
        get_scorer(name, burn_in=-1)
    with pytest.raises(TypeError, match="burn_in"):
        get_scorer(name, burn_in=2.0)


class _GappyFilter(FakeFilter):
    """Reports NaN log-evidence on the rows of y that are all NaN, as the filters do."""

    def assimilate(self, y):
        y = np.asarray(y, dtype=float)
        ds = super().assimilate(np.nan_to_num(y))
        ds["log_evidence"] = ds["log_evidence"].where(~np.isnan(y).all(axis=1))
        return ds


def test_log_evidence_scorer_ignores_unobserved_cycles(twin):
    X, y = twin
    gappy = y.copy()
    gappy[[0, 3, 4]] = np.nan
    est = _GappyFilter().fit(X)
    observed = np.delete(y, [0, 3, 4], axis=0)
    assert log_evidence(est, X, gappy) == pytest.approx(-0.5 * np.mean(np.sum(observed**2, 1)))
    # burn-in counts cycles, observed or not
    rest = y[5:]  # burn_in=3 leaves rows 3.. of which 3 and 4 are unobserved
    assert log_evidence(est, X, gappy, burn_in=3) == pytest.approx(
        -0.5 * np.mean(np.sum(rest**2, axis=1))
    )
    # fully observed: the plain time mean, as before
    assert log_evidence(est, X, y) == pytest.approx(-0.5 * np.mean(np.sum(y**2, axis=1)))
    blank = y.copy()
    blank[2:] = np.nan
    with pytest.raises(ValueError, match="no observed cycle"):
        log_evidence(est, X, blank, burn_in=2)


def test_log_evidence_of_a_real_filter_with_gaps(sir_run):
    X, y, pf, _ = sir_run
    gappy = y.copy()
    gappy[[2, 7]] = np.nan
    ds = pf.assimilate(gappy)
    values = ds["log_evidence"].values
    assert np.isnan(values[[2, 7]]).all() and np.isfinite(np.delete(values, [2, 7])).all()
    assert log_evidence(pf, X, gappy) == pytest.approx(np.nanmean(values))
    assert np.isfinite(log_evidence(pf, X, gappy))
    # and on fully observed data nothing changed: the plain mean
    assert log_evidence(pf, X, y) == pytest.approx(np.mean(pf.assimilate(y)["log_evidence"]))


def test_get_scorer_by_name_list_and_callable(twin):
    import pickle

    import sklearn.metrics

    assert metrics.get_scorer_names() == sorted(SCORERS)
    assert not set(SCORERS) & set(sklearn.metrics.get_scorer_names())
    bound = get_scorer("neg_crps", burn_in=3)
    assert repr(bound) == "get_scorer('neg_crps', burn_in=3)"
    X, y = twin
    est = FakeFilter(bias=0.2).fit(X)
    assert pickle.loads(pickle.dumps(bound))(est, X, y) == bound(est, X, y)
    both = get_scorer(["neg_crps", "log_evidence"], burn_in=2)
    assert sorted(both) == ["log_evidence", "neg_crps"]
    assert both["log_evidence"](est, X, y) == log_evidence(est, X, y, burn_in=2)
    assert get_scorer(neg_rmse) is neg_rmse
    with pytest.raises(ValueError, match="burn_in"):
        get_scorer(neg_rmse, burn_in=2)
    with pytest.raises(ValueError, match="twice"):
        get_scorer(["neg_crps", "neg_crps"])
    with pytest.raises(ValueError, match="at least one"):
        get_scorer([])
    with pytest.raises(ValueError, match="sklearn.metrics.get_scorer"):
        get_scorer("r2")


def test_scorers_by_name_in_grid_search(sir_run):
    X, y, pf, _ = sir_run
    grid = {"jitter": [0.0, 0.5]}
    cv = TimeSeriesSplit(2)
    by_name = GridSearchCV(pf, grid, cv=cv, scoring=get_scorer("log_evidence")).fit(X, y)
    direct = GridSearchCV(pf, grid, cv=cv, scoring=log_evidence).fit(X, y)
    assert_allclose(by_name.cv_results_["mean_test_score"], direct.cv_results_["mean_test_score"])
    multi = GridSearchCV(
        pf,
        grid,
        cv=cv,
        scoring=get_scorer(["neg_crps", "log_evidence"], burn_in=2),
        refit="neg_crps",
    ).fit(X, y)
    assert {"mean_test_neg_crps", "mean_test_log_evidence"} <= set(multi.cv_results_)


def test_score_burn_in_matches_the_scorer_and_metadata_routing(sir_run):
    import sklearn

    X, y, pf, _ = sir_run
    for k in (0, 4):
        assert pf.score(X, y, burn_in=k) == pytest.approx(neg_crps(pf, X, y, burn_in=k))
    assert pf.score(X, y, burn_in=4) != pytest.approx(pf.score(X, y))
    with pytest.raises(ValueError, match="burn_in"):
        pf.score(X, y, burn_in=len(y))
    grid, cv = {"jitter": [0.0, 0.5]}, TimeSeriesSplit(2)
    scored = GridSearchCV(pf, grid, cv=cv, scoring=get_scorer("neg_crps", burn_in=3)).fit(X, y)
    with sklearn.config_context(enable_metadata_routing=True):
        routed_est = sklearn.clone(pf).set_score_request(burn_in=True)
        routed = GridSearchCV(routed_est, grid, cv=cv).fit(X, y, burn_in=3)
    assert_allclose(routed.cv_results_["mean_test_score"], scored.cv_results_["mean_test_score"])
