"""Property tests: the distance of :mod:`dasim.coordinates` is a metric on the torus."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dasim.coordinates import Points, localization_weights

coord = st.floats(-50.0, 50.0, allow_nan=False, allow_infinity=False)
period = st.one_of(st.none(), st.floats(0.5, 20.0))


@st.composite
def spaces(draw):
    n_dims = draw(st.integers(1, 3))
    n = draw(st.integers(1, 6))
    pos = draw(arrays(np.float64, (n, n_dims), elements=coord))
    lengths = [draw(period) for _ in range(n_dims)]
    return pos, lengths


@settings(max_examples=80, deadline=None)
@given(space=spaces(), shifts=st.lists(st.integers(-3, 3), min_size=3, max_size=3))
def test_distance_is_a_metric_invariant_under_whole_periods(space, shifts):
    pos, lengths = space
    pts = Points(pos, periodic_lengths=lengths)
    d = pts.pairwise_distance()
    scale = 1.0 + np.abs(pos).max()
    tol = 1e-12 * scale
    assert np.all(d >= 0)
    assert np.allclose(np.diag(d), 0.0, atol=tol)
    assert np.allclose(d, d.T, atol=tol)
    # Triangle inequality d(i, k) <= d(i, j) + d(j, k).
    assert np.all(d[:, None, :] <= d[:, :, None] + d[None, :, :] + 4 * tol)
    # On a torus no axis contributes more than half its period.
    if all(L is not None for L in lengths):
        assert np.all(d <= np.sqrt(np.sum(np.square(0.5 * np.array(lengths)))) + tol)
    # Moving the points by whole periods along the periodic axes changes nothing.
    moved = pos.copy()
    for k, L in enumerate(lengths):
        if L is not None:
            moved[:, k] += shifts[k] * L
    assert np.allclose(pts.pairwise_distance(moved), d, atol=8 * tol)


@settings(max_examples=40, deadline=None)
@given(space=spaces(), radius=st.floats(0.1, 30.0))
def test_tapers_are_one_at_zero_and_within_unit_interval(space, radius):
    pos, lengths = space
    pts = Points(pos, periodic_lengths=lengths)
    for taper in ("gaspari-cohn", "gaussian", "step"):
        w = localization_weights(pts, None, radius, taper=taper)
        assert np.all((w >= 0) & (w <= 1))
        assert np.allclose(np.diag(w), 1.0)
