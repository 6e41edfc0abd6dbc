"""Tests of dasim.metrics.wasserstein1: closed forms, independent references (sorted
samples, scipy's 1-D distance, the optimal assignment), hypothesis properties in float64
and input validation."""

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from numpy.testing import assert_allclose
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from scipy.stats import wasserstein_distance

from dasim.metrics import wasserstein1, wasserstein2

BOUND = 1e3
VALUES = st.floats(
    -BOUND, BOUND, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=64
)
SETTINGS = settings(max_examples=60, deadline=None)


def _scale(*arrays_):
    """Magnitude of the inputs, for tolerances: 1 + largest absolute value."""
    return 1.0 + max(float(np.max(np.abs(a))) for a in arrays_)


def _assignment_w1(a, b):
    """W1 of two uniform clouds of the same size: the best one-to-one matching (Birkhoff)."""
    cost = cdist(a, b)
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


@st.composite
def clouds(draw, n_clouds, same_size=False, max_points=6, max_dim=3):
    d = draw(st.integers(1, max_dim))
    sizes = [draw(st.integers(1, max_points))] * n_clouds
    if not same_size:
        sizes = [draw(st.integers(1, max_points)) for _ in range(n_clouds)]
    return [draw(arrays(np.float64, (n, d), elements=VALUES)) for n in sizes]


# --------------------------------------------------------------------------------------
# Exact values
# --------------------------------------------------------------------------------------


def test_by_hand():
    # (0,0)->(3,4) and (1,0)->(4,4): both distance 5
    assert wasserstein1([[0.0, 0.0], [1.0, 0.0]], [[3.0, 4.0], [4.0, 4.0]]) == pytest.approx(5.0)
    # one point against two: (1 + 3) / 2
    assert wasserstein1([[0.0]], [[1.0], [-3.0]]) == pytest.approx(2.0)
    # W1 averages distances where W2 averages squares: sqrt((1 + 9) / 2) for W2
    assert wasserstein2([[0.0]], [[1.0], [-3.0]]) == pytest.approx(np.sqrt(5.0))


def test_two_point_masses_are_their_euclidean_distance():
    assert wasserstein1([[1.0, 2.0, 3.0]], [[1.0, -2.0, 0.0]]) == pytest.approx(5.0)
    assert wasserstein1([[-2.5]], [[4.0]]) == pytest.approx(6.5)


def test_one_dimensional_equal_sizes_is_the_l1_distance_of_sorted_samples(rng):
    a = rng.normal(size=50)
    b = rng.exponential(size=50)
    expected = np.mean(np.abs(np.sort(a) - np.sort(b)))
    assert wasserstein1(a[:, None], b[:, None]) == pytest.approx(expected, rel=1e-10)


def test_one_dimensional_weighted_and_unequal_sizes_match_scipy(rng):
    a = rng.normal(size=23)
    b = 0.5 + 2.0 * rng.normal(size=31)
    assert wasserstein1(a[:, None], b[:, None]) == pytest.approx(
        wasserstein_distance(a, b), rel=1e-10
    )
    wa = rng.dirichlet(np.ones(23))
    wb = rng.dirichlet(np.ones(31))
    assert wasserstein1(a[:, None], b[:, None], wa, wb) == pytest.approx(
        wasserstein_distance(a, b, wa, wb), rel=1e-10
    )


@pytest.mark.parametrize("c", [-3.5, 0.25, 7.0])
def test_one_dimensional_translation_is_its_length(rng, c):
    a = rng.normal(size=(40, 1))
    assert wasserstein1(a, a + c) == pytest.approx(abs(c), rel=1e-12)


def test_translation_is_its_euclidean_length(rng):
    a = rng.normal(size=(40, 3))
    v = np.array([1.0, -2.0, 2.0])
    assert wasserstein1(a, a + v) == pytest.approx(3.0, rel=1e-10)


def test_symmetric_and_zero_on_identical_sets(rng):
    a = rng.normal(size=(30, 4))
    b = rng.normal(size=(17, 4)) + 1.0
    assert wasserstein1(a, b) == pytest.approx(wasserstein1(b, a), rel=1e-12)
    assert wasserstein1(a, a) == 0.0  # cdist: each difference formed directly
    assert wasserstein1(a, a[::-1]) == 0.0


def test_equal_sizes_match_the_optimal_assignment(rng):
    a = rng.normal(size=(40, 5))
    b = rng.standard_t(3, size=(40, 5))
    assert wasserstein1(a, b) == pytest.approx(_assignment_w1(a, b), rel=1e-10)


def test_flattened_trajectories_as_b3_uses_them(rng):
    from dasim.benchmarks.trajectory_smoothing import _trajectory_w1

    a = rng.normal(size=(12, 65, 3))
    b = rng.normal(size=(12, 65, 3)) + 0.1
    expected = _assignment_w1(a.reshape(12, -1), b.reshape(12, -1))
    assert _trajectory_w1(a, b) == pytest.approx(expected, rel=1e-10)


def test_per_time_and_weights(rng):
    a = rng.normal(size=(3, 20, 2))
    b = rng.normal(size=(3, 30, 2)) + 1.0
    out = wasserstein1(a, b)
    assert out.shape == (3,)
    assert_allclose(out, [wasserstein1(a[t], b[t]) for t in range(3)], rtol=1e-12)
    wa = rng.dirichlet(np.ones(20), size=3)
    out = wasserstein1(a, b, weights_a=wa)
    assert_allclose(out, [wasserstein1(a[t], b[t], weights_a=wa[t]) for t in range(3)])
    # one weights row shared by all times
    assert_allclose(
        wasserstein1(a, b, weights_b=np.full(30, 1 / 30)),
        wasserstein1(a, b),
        rtol=1e-12,
    )


def test_weights_equal_to_duplicated_points(rng):
    ens = rng.normal(size=(5, 2))
    other = rng.normal(size=(7, 2))
    w = np.array([0.4, 0.2, 0.2, 0.1, 0.1])
    dup = ens[[0, 0, 0, 0, 1, 1, 2, 2, 3, 4]]
    assert wasserstein1(ens, other, weights_a=w) == pytest.approx(
        wasserstein1(dup, other), rel=1e-10
    )


def test_takes_a_weighted_dataset(rng):
    a = rng.normal(size=(4, 6, 2))
    w = rng.dirichlet(np.ones(6), size=4)
    ds = xr.Dataset(
        {
            "analysis": (("time", "member", "state"), a),
            "weights": (("time", "member"), w),
        }
    )
    b = rng.normal(size=(4, 9, 2))
    assert_allclose(wasserstein1(ds, b), wasserstein1(a, b, weights_a=w), rtol=1e-12)
    with pytest.raises(ValueError, match="weights_a"):
        wasserstein1(ds, b, weights_a=w)


def test_returns_a_python_float_for_one_pair():
    out = wasserstein1([[0.0]], [[1.0]])
    assert type(out) is float
    assert type(wasserstein2([[0.0]], [[1.0]])) is float


def test_raises_when_not_converged(monkeypatch, rng):
    import ot

    def fake_emd2(a, b, M, **kwargs):
        return 0.0, {"result_code": 3, "warning": "numItermax reached"}

    monkeypatch.setattr(ot, "emd2", fake_emd2)
    with pytest.raises(RuntimeError, match="optimal"):
        wasserstein1(rng.normal(size=(5, 2)), rng.normal(size=(5, 2)))


def _with(arr, index, value):
    arr = np.array(arr, dtype=float)
    arr[index] = value
    return arr


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
        (None, np.ones((4, 2)), {}, TypeError, "a must"),
    ],
)
def test_bad_inputs(a, b, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        wasserstein1(a, b, **kwargs)


# --------------------------------------------------------------------------------------
# Properties (hypothesis, float64)
# --------------------------------------------------------------------------------------


@SETTINGS
@given(clouds(2))
def test_property_symmetric_non_negative_and_zero_on_identical_clouds(pair):
    a, b = pair
    scale = _scale(a, b)
    ab, ba = wasserstein1(a, b), wasserstein1(b, a)
    assert ab >= 0.0
    assert_allclose(ab, ba, rtol=1e-9, atol=1e-9 * scale)
    assert wasserstein1(a, a) <= 1e-9 * scale
    assert wasserstein1(b, b[::-1]) <= 1e-9 * scale


@SETTINGS
@given(clouds(3, same_size=True))
def test_property_triangle_inequality(triple):
    a, b, c = triple
    tol = 1e-9 * _scale(a, b, c)
    assert wasserstein1(a, c) <= wasserstein1(a, b) + wasserstein1(b, c) + tol


@SETTINGS
@given(clouds(2))
def test_property_bounded_by_w2_and_the_mean_distance(pair):
    # Jensen: W1 <= W2; the independent coupling costs the mean pairwise distance
    a, b = pair
    tol = 1e-9 * _scale(a, b)
    w1 = wasserstein1(a, b)
    assert w1 <= wasserstein2(a, b) + tol
    assert w1 <= cdist(a, b).mean() + tol
    # Kantorovich-Rubinstein with the 1-Lipschitz f(x) = <x, u>, |u| = 1: W1 >= |E_a f - E_b f|
    diff = a.mean(axis=0) - b.mean(axis=0)
    assert w1 >= np.linalg.norm(diff) - tol


@SETTINGS
@given(clouds(2, same_size=True))
def test_property_equal_sizes_match_the_optimal_assignment(pair):
    a, b = pair
    assert_allclose(wasserstein1(a, b), _assignment_w1(a, b), rtol=1e-9, atol=1e-9 * _scale(a, b))


@SETTINGS
@given(
    arrays(np.float64, st.integers(1, 8), elements=VALUES),
    arrays(np.float64, st.integers(1, 8), elements=VALUES),
)
def test_property_one_dimensional_matches_scipy(a, b):
    assert_allclose(
        wasserstein1(a[:, None], b[:, None]),
        wasserstein_distance(a, b),
        rtol=1e-9,
        atol=1e-9 * _scale(a, b),
    )


@SETTINGS
@given(clouds(1), arrays(np.float64, 3, elements=VALUES))
def test_property_translate_is_the_shift_length(cloud, shift):
    (a,) = cloud
    shift = shift[: a.shape[1]]
    assert_allclose(
        wasserstein1(a, a + shift),
        np.linalg.norm(shift),
        rtol=1e-9,
        atol=1e-9 * _scale(a, shift),
    )
