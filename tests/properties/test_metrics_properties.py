"""Property-based tests of dasim.metrics (hypothesis, float64, bounded values)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dasim.metrics import crps_ensemble, energy_score, rmse, wasserstein2

BOUND = 1e3
VALUES = st.floats(
    -BOUND, BOUND, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=64
)
SETTINGS = settings(max_examples=60, deadline=None)


def _scale(*arrays_):
    """Magnitude of the inputs, for tolerances: 1 + largest absolute value."""
    return 1.0 + max(float(np.max(np.abs(a))) for a in arrays_)


@st.composite
def cases(draw, max_times=3, max_members=7, max_state=4, members=None, state=None):
    """(truth (T, d), ensemble (T, N, d), weights (T, N) or None)."""
    n_times = draw(st.integers(1, max_times))
    n_members = members if members is not None else draw(st.integers(1, max_members))
    n_state = state if state is not None else draw(st.integers(1, max_state))
    truth = draw(arrays(np.float64, (n_times, n_state), elements=VALUES))
    ens = draw(arrays(np.float64, (n_times, n_members, n_state), elements=VALUES))
    weights = None
    if draw(st.booleans()):
        raw = draw(
            arrays(
                np.float64,
                (n_times, n_members),
                elements=st.floats(0.0, 1.0, allow_subnormal=False),
            )
        )
        raw = raw + 1e-3
        weights = raw / raw.sum(axis=1, keepdims=True)
    return truth, ens, weights


@st.composite
def clouds(draw, n_clouds, same_size=False, max_points=6, max_dim=3):
    d = draw(st.integers(1, max_dim))
    sizes = [draw(st.integers(1, max_points))] * n_clouds
    if not same_size:
        sizes = [draw(st.integers(1, max_points)) for _ in range(n_clouds)]
    return [draw(arrays(np.float64, (n, d), elements=VALUES)) for n in sizes]


def _brute_crps(truth, ens, weights):
    n_members = ens.shape[1]
    w = np.full(ens.shape[:2], 1.0 / n_members) if weights is None else weights
    first = np.einsum("tn,tnd->td", w, np.abs(ens - truth[:, None, :]))
    pair = np.einsum("tn,tm,tnmd->td", w, w, np.abs(ens[:, :, None, :] - ens[:, None, :, :]))
    return np.mean(first - 0.5 * pair, axis=-1)


# --------------------------------------------------------------------------------------
# CRPS
# --------------------------------------------------------------------------------------


@SETTINGS
@given(cases(members=1))
def test_crps_of_one_member_is_mean_absolute_error(case):
    truth, ens, weights = case
    expected = np.mean(np.abs(ens[:, 0, :] - truth), axis=-1)
    got = crps_ensemble(truth, ens, weights)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12 * _scale(truth, ens))


@SETTINGS
@given(cases())
def test_crps_is_non_negative_and_matches_brute_force(case):
    truth, ens, weights = case
    got = crps_ensemble(truth, ens, weights)
    tol = 1e-11 * _scale(truth, ens)
    assert np.all(got >= -tol)
    np.testing.assert_allclose(got, _brute_crps(truth, ens, weights), rtol=1e-9, atol=tol)


@SETTINGS
@given(cases(), arrays(np.float64, 4, elements=VALUES))
def test_crps_and_energy_score_are_translation_invariant(case, shift):
    truth, ens, weights = case
    shift = shift[: truth.shape[-1]]
    scale = _scale(truth, ens, shift)
    np.testing.assert_allclose(
        crps_ensemble(truth + shift, ens + shift, weights),
        crps_ensemble(truth, ens, weights),
        rtol=1e-9,
        atol=1e-11 * scale,
    )
    # the energy score's pairwise term goes through a Gram expansion: about sqrt(eps)
    np.testing.assert_allclose(
        energy_score(truth + shift, ens + shift, weights),
        energy_score(truth, ens, weights),
        rtol=1e-6,
        atol=1e-6 * scale,
    )


@SETTINGS
@given(cases(state=1))
def test_energy_score_in_one_dimension_is_crps(case):
    truth, ens, weights = case
    np.testing.assert_allclose(
        energy_score(truth, ens, weights),
        crps_ensemble(truth, ens, weights),
        rtol=1e-6,
        atol=1e-6 * _scale(truth, ens),
    )


# --------------------------------------------------------------------------------------
# Energy score
# --------------------------------------------------------------------------------------


@SETTINGS
@given(cases(), st.integers(1, 7))
def test_energy_score_of_point_ensemble_at_truth_is_zero(case, n_members):
    truth, _, _ = case
    ens = np.repeat(truth[:, None, :], n_members, axis=1)
    np.testing.assert_allclose(energy_score(truth, ens), 0.0, atol=1e-9 * _scale(truth))
    np.testing.assert_allclose(crps_ensemble(truth, ens), 0.0, atol=1e-12 * _scale(truth))
    np.testing.assert_allclose(rmse(truth, ens), 0.0, atol=1e-12 * _scale(truth))


@SETTINGS
@given(cases(members=1))
def test_energy_score_of_one_member_is_symmetric_distance(case):
    truth, ens, _ = case
    member = ens[:, 0, :]
    forward = energy_score(truth, member[:, None, :])
    backward = energy_score(member, truth[:, None, :])
    np.testing.assert_allclose(forward, backward, rtol=1e-12)
    np.testing.assert_allclose(forward, np.linalg.norm(member - truth, axis=-1), rtol=1e-12)


@SETTINGS
@given(cases(), st.randoms(use_true_random=False))
def test_scores_are_symmetric_in_the_members(case, random):
    truth, ens, weights = case
    perm = list(range(ens.shape[1]))
    random.shuffle(perm)
    w_perm = None if weights is None else weights[:, perm]
    tol = 1e-6 * _scale(truth, ens)
    np.testing.assert_allclose(
        energy_score(truth, ens[:, perm], w_perm),
        energy_score(truth, ens, weights),
        rtol=1e-6,
        atol=tol,
    )
    np.testing.assert_allclose(
        crps_ensemble(truth, ens[:, perm], w_perm),
        crps_ensemble(truth, ens, weights),
        rtol=1e-9,
        atol=1e-11 * _scale(truth, ens),
    )


# --------------------------------------------------------------------------------------
# Wasserstein-2
# --------------------------------------------------------------------------------------


@SETTINGS
@given(clouds(2))
def test_wasserstein2_is_symmetric_and_zero_on_identical_clouds(pair):
    a, b = pair
    scale = _scale(a, b)
    ab, ba = wasserstein2(a, b), wasserstein2(b, a)
    assert ab >= 0.0
    np.testing.assert_allclose(ab, ba, rtol=1e-9, atol=1e-9 * scale)
    assert wasserstein2(a, a) <= 1e-9 * scale
    assert wasserstein2(b, b[::-1]) <= 1e-9 * scale


@SETTINGS
@given(clouds(3, same_size=True))
def test_wasserstein2_triangle_inequality(triple):
    a, b, c = triple
    tol = 1e-9 * _scale(a, b, c)
    assert wasserstein2(a, c) <= wasserstein2(a, b) + wasserstein2(b, c) + tol


@SETTINGS
@given(clouds(1), arrays(np.float64, 3, elements=VALUES))
def test_wasserstein2_of_a_translate_is_the_shift_length(cloud, shift):
    (a,) = cloud
    shift = shift[: a.shape[1]]
    np.testing.assert_allclose(
        wasserstein2(a, a + shift),
        np.linalg.norm(shift),
        rtol=1e-7,
        atol=1e-7 * _scale(a, shift),
    )
