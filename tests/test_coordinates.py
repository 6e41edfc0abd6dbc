"""Coordinates, distances and localisation tapers, and the EnKF / LETKF that use them."""

import math

import numpy as np
import pytest
from scipy.linalg import eigh

from dasim.coordinates import (
    Coordinates,
    Grid2D,
    PeriodicGrid1D,
    Points,
    gaspari_cohn,
    localization_weights,
)
from dasim.datasets import make_twin_experiment
from dasim.filters import EnKF
from dasim.filters._localization import grid_distances
from dasim.metrics import rmse
from dasim.models import FunctionModel, Lorenz96, Persistence
from dasim.observations import ObservationModel


def _gc_direct(d, radius):
    """Gaspari and Cohn (1999), eq. (4.10), one distance at a time; half-width 1.82 r."""
    c = 1.82 * radius
    z = d / c
    if z <= 1:
        return -0.25 * z**5 + 0.5 * z**4 + 5 / 8 * z**3 - 5 / 3 * z**2 + 1
    if z <= 2:
        return z**5 / 12 - 0.5 * z**4 + 5 / 8 * z**3 + 5 / 3 * z**2 - 5 * z + 4 - 2 / (3 * z)
    return 0.0


def _grid_distance_direct(i, j, shape, spacing, periodic):
    """Distance between flat indices i and j of a row-major grid, wrapped by hand."""
    parts = []
    for a, b, n, h, wrap in zip(
        divmod(i, shape[1]), divmod(j, shape[1]), shape, spacing, periodic, strict=True
    ):
        steps = abs(a - b)
        if wrap:
            steps = min(steps, n - steps)
        parts.append(steps * h)
    return math.hypot(*parts)


# ----------------------------------------------------------------------- distances
def test_periodic_grid_distances_wrap():
    ring = PeriodicGrid1D(10)
    d = ring.pairwise_distance()
    assert d[0, 9] == 1.0 and d[0, 5] == 5.0 and d[2, 8] == 4.0
    assert np.array_equal(d, d.T) and np.all(np.diag(d) == 0)
    half = PeriodicGrid1D(10, length=5.0)
    assert half.pairwise_distance()[0, 9] == 0.5
    assert half.periods.tolist() == [5.0]


@pytest.mark.parametrize("n", [5, 8, 40])
@pytest.mark.parametrize("periodic", [True, False])
def test_default_grid_is_bitwise_the_index_distance_of_before(n, periodic):
    # EnKF(state_coordinates=None) must keep its results exactly: the same distances and
    # the same taper, bit for bit, as the index-based code it replaces.
    state = PeriodicGrid1D(n) if periodic else Points(np.arange(n, dtype=float))
    for idx in (np.arange(n), np.arange(0, n, 2), np.array([n - 1, 0, 3 % n])):
        old = grid_distances(np.arange(n), idx, n, periodic)
        assert np.array_equal(state.pairwise_distance(state.take(idx)), old)
        for radius in (0.7, 2.0, 4.0):
            assert np.array_equal(
                localization_weights(state, state.take(idx), radius), gaspari_cohn(old, radius)
            )


@pytest.mark.parametrize("periodic", [False, True, (True, False)])
@pytest.mark.parametrize("spacing", [1.0, (0.5, 2.0)])
def test_grid2d_distances_against_a_direct_computation(periodic, spacing):
    shape = (4, 5)
    grid = Grid2D(shape, spacing=spacing, periodic=periodic)
    flags = periodic if isinstance(periodic, tuple) else (periodic, periodic)
    hs = spacing if isinstance(spacing, tuple) else (spacing, spacing)
    want = np.array(
        [[_grid_distance_direct(i, j, shape, hs, flags) for j in range(20)] for i in range(20)]
    )
    assert np.allclose(grid.pairwise_distance(), want, rtol=1e-14, atol=0)
    # Row-major: component i is the point (i // nx, i % nx), at (row * dy, col * dx).
    assert grid.positions[7].tolist() == [1 * hs[0], 2 * hs[1]]


def test_points_wrap_any_coordinate_and_mix_axes():
    pts = Points([[0.0, 0.0], [10.5, 3.0], [-0.25, 4.0]], periodic_lengths=[10.0, None])
    d = pts.pairwise_distance()
    assert np.isclose(d[0, 1], math.hypot(0.5, 3.0))
    assert np.isclose(d[0, 2], math.hypot(0.25, 4.0))
    assert np.isclose(d[1, 2], math.hypot(0.75, 1.0))
    # Positions as an array lie in the same space.
    assert np.isclose(pts.pairwise_distance([[9.0, 0.0]])[0, 0], 1.0)
    assert Points([1.0, 4.0]).pairwise_distance().tolist() == [[0.0, 3.0], [3.0, 0.0]]


def test_take_keeps_the_space():
    grid = Grid2D((3, 3), periodic=True)
    sub = grid.take([0, 2])
    assert isinstance(sub, Coordinates) and sub.n_points == 2
    assert sub.pairwise_distance()[0, 1] == 1.0  # (0, 0) to (0, 2) wraps
    assert np.array_equal(grid.take(slice(None, None, 4)).positions, grid.positions[::4])
    mask = np.zeros(9, bool)
    mask[[1, 5]] = True
    assert np.array_equal(grid.take(mask).positions, grid.positions[[1, 5]])
    with pytest.raises(ValueError, match="indices"):
        grid.take([9])
    with pytest.raises(TypeError, match="indices"):
        grid.take([0.5])


@pytest.mark.parametrize(
    "make, match, exc",
    [
        (lambda: PeriodicGrid1D(0), "n", ValueError),
        (lambda: PeriodicGrid1D(4, length=-1.0), "length", ValueError),
        (lambda: Grid2D(8), "shape", ValueError),
        (lambda: Grid2D((8, 0)), "shape", ValueError),
        (lambda: Grid2D((2, 2), spacing=(1.0, 0.0)), "spacing", ValueError),
        (lambda: Grid2D((2, 2), periodic="yes"), "periodic", TypeError),
        (lambda: Points([[0.0], [np.nan]]), "coords", ValueError),
        (lambda: Points(np.zeros((2, 2, 2))), "coords", ValueError),
        (lambda: Points([[0.0, 1.0]], periodic_lengths=[1.0]), "periodic_lengths", ValueError),
        (lambda: Points([[0.0]], periodic_lengths=0.0), "periodic_lengths", ValueError),
    ],
)
def test_bad_coordinates_name_the_parameter(make, match, exc):
    with pytest.raises(exc, match=match):
        make().pairwise_distance()


def test_distances_between_different_spaces_are_refused():
    with pytest.raises(ValueError, match="different space"):
        PeriodicGrid1D(4).pairwise_distance(Points([[0.0]]))
    with pytest.raises(ValueError, match="dimension"):
        Grid2D((2, 2)).pairwise_distance([[0.0, 0.0, 0.0]])


# ------------------------------------------------------------------------- tapers
def test_localization_weights_against_the_gaspari_cohn_formula():
    grid = Grid2D((8, 8), periodic=(True, False))
    obs = grid.take(np.arange(0, 64, 3))
    radius = 1.3
    got = localization_weights(grid, obs, radius)
    obs_idx = np.arange(0, 64, 3)
    want = np.array(
        [
            [
                _gc_direct(_grid_distance_direct(i, j, (8, 8), (1, 1), (True, False)), radius)
                for j in obs_idx
            ]
            for i in range(64)
        ]
    )
    assert got.shape == (64, obs_idx.size)
    assert np.allclose(got, want, rtol=0, atol=1e-14)
    assert np.all(got[obs_idx, np.arange(obs_idx.size)] == 1.0)


def test_other_tapers():
    d = np.array([[0.0, 1.0, 2.5]])
    assert np.allclose(
        localization_weights([[0.0]], [[0.0], [1.0], [2.5]], 1.0), gaspari_cohn(d, 1.0)
    )
    gauss = localization_weights([[0.0]], [[0.0], [1.0], [2.5]], 2.0, taper="gaussian")
    assert np.allclose(gauss, np.exp(-0.5 * (d / 2.0) ** 2))
    step = localization_weights([[0.0]], [[0.0], [1.0], [2.5]], 1.0, taper="step")
    assert step.tolist() == [[1.0, 1.0, 0.0]]
    own = localization_weights([[0.0]], [[0.0], [1.0], [2.5]], 1.0, taper=lambda d, r: 1 / (1 + d))
    assert np.allclose(own, 1 / (1 + d))
    # other=None: the coordinates against themselves.
    assert localization_weights(PeriodicGrid1D(5), None, 1.0).shape == (5, 5)
    with pytest.raises(ValueError, match="taper"):
        localization_weights([[0.0]], None, 1.0, taper="boxcar")
    with pytest.raises(ValueError, match="radius"):
        localization_weights([[0.0]], None, 0.0)
    with pytest.raises(TypeError, match="radius"):
        localization_weights([[0.0]], None, "wide")


# --------------------------------------------------------------------- in the EnKF
def _fit(est, n_state, seed=99):
    return est.fit(np.random.default_rng(seed).normal(size=(30, n_state)))


def _letkf_reference(ens, y, obs_idx, noise_std, taper):
    """Hunt et al. (2007) LETKF, one local analysis per state component, in a loop."""
    n, d = ens.shape
    xbar = ens.mean(0)
    xa = ens - xbar
    hx = ens[:, obs_idx]
    ybar = hx.mean(0)
    ya = hx - ybar
    out = np.empty_like(ens)
    for j in range(d):
        rinv = taper[j] / noise_std**2  # the observation precision, tapered
        c = ya * rinv  # (N, m): Y^T R_j^{-1}
        pa = np.linalg.inv((n - 1) * np.eye(n) + c @ ya.T)
        ev, vec = eigh((n - 1) * pa)
        w = vec @ np.diag(np.sqrt(ev)) @ vec.T  # symmetric square root
        wbar = pa @ c @ (y - ybar)
        out[:, j] = xbar[j] + xa[:, j] @ (wbar[:, None] + w)
    return out


@pytest.mark.parametrize("n_members", [5, 40])
def test_letkf_on_a_2d_grid_matches_the_textbook_letkf(n_members):
    # 8x8 field, every third point observed; a torus in rows only. N = 5 < n_obs and
    # N = 40 > n_obs exercise the two forms of the batched LETKF.
    grid = Grid2D((8, 8), periodic=(True, False))
    obs_idx = np.arange(0, 64, 3)
    noise = 0.6
    obs = ObservationModel(noise_std=noise, indices=obs_idx)
    rng = np.random.default_rng(n_members)
    ens = rng.normal(size=(n_members, 64)) + np.linspace(-1, 1, 64)
    y = rng.normal(size=obs_idx.size)
    radius = 1.5
    est = _fit(
        EnKF(
            Persistence(0.0),
            obs,
            n_members=n_members,
            localization_radius=radius,
            state_coordinates=grid,
            random_state=0,
        ),
        64,
    )
    got = est.assimilate(y[None], initial_ensemble=ens)["analysis"].values[0]
    taper = np.array(
        [
            [
                _gc_direct(_grid_distance_direct(i, j, (8, 8), (1, 1), (True, False)), radius)
                for j in obs_idx
            ]
            for i in range(64)
        ]
    )
    want = _letkf_reference(ens, y, obs_idx, noise, taper)
    assert np.allclose(got, want, rtol=1e-9, atol=1e-9 * np.abs(want).max())
    # Components beyond the taper's reach of every observation are left alone.
    untouched = np.all(np.isclose(got, ens, rtol=0, atol=1e-12), axis=0)
    assert np.array_equal(taper.max(axis=1) == 0, untouched)


@pytest.mark.parametrize("variant", ["sqrt", "stochastic"])
def test_a_huge_radius_is_no_localisation(variant):
    grid = Grid2D((8, 8), spacing=0.5)
    obs = ObservationModel(noise_std=0.8, indices=np.arange(1, 64, 2))
    rng = np.random.default_rng(7)
    ens = rng.normal(size=(12, 64))
    y = rng.normal(size=(2, 32))
    common = dict(n_members=12, variant=variant, random_state=3)
    glob = _fit(EnKF(Persistence(0.1), obs, **common), 64)
    loc = _fit(
        EnKF(Persistence(0.1), obs, localization_radius=1e9, state_coordinates=grid, **common), 64
    )
    assert np.all(localization_weights(grid, grid.take(np.arange(1, 64, 2)), 1e9) > 1 - 1e-15)
    a = glob.assimilate(y, initial_ensemble=ens)["analysis"].values
    b = loc.assimilate(y, initial_ensemble=ens)["analysis"].values
    assert np.allclose(a, b, rtol=1e-9, atol=1e-9 * np.abs(a).max())


@pytest.mark.parametrize("variant", ["sqrt", "stochastic"])
def test_localisation_beats_a_global_analysis_on_a_correlated_2d_field(variant):
    # A damped 8x8 field driven by spatially correlated noise (Gaussian correlation of
    # length 2 grid points), half the points observed. With N = 8 members the global
    # analysis suffers from sampling noise in 64 dimensions; the LETKF / localised
    # stochastic EnKF does not. Over seeds 0-2 the ratio of time-mean RMSEs is
    # 0.62-0.77; the test asks for 0.85 on seed 0.
    grid = Grid2D((8, 8))
    q = 0.25 * np.exp(-0.5 * (grid.pairwise_distance() / 2.0) ** 2) + 1e-8 * np.eye(64)
    model = FunctionModel(lambda e: 0.9 * e, process_noise=q)
    obs = ObservationModel(noise_std=0.5, indices=np.arange(0, 64, 2))
    X_train, _ = make_twin_experiment(
        model, obs, 300, random_state=100, initial_state=np.zeros(64)
    )
    X, y = make_twin_experiment(model, obs, 60, random_state=0, initial_state=np.zeros(64))
    scores = {}
    for radius in (None, 1.5):
        est = EnKF(
            model,
            obs,
            n_members=8,
            variant=variant,
            localization_radius=radius,
            state_coordinates=grid,
            random_state=0,
        ).fit(X_train)
        scores[radius] = np.mean(rmse(X, est.assimilate(y)["analysis"].values)[10:])
    assert scores[1.5] < 0.85 * scores[None]


def test_explicit_ring_is_the_default():
    model = Lorenz96(n=12)
    obs = ObservationModel(noise_std=1.0, indices=slice(None, None, 3))
    X = model.climatology(40, random_state=0)
    ens = model.climatology(6, random_state=1)
    y = np.random.default_rng(2).normal(size=(3, 4))
    default = EnKF(model, obs, n_members=6, localization_radius=2.0, random_state=0).fit(X)
    ring = EnKF(
        model,
        obs,
        n_members=6,
        localization_radius=2.0,
        state_coordinates=PeriodicGrid1D(12),
        periodic=False,  # ignored when state_coordinates is given
        random_state=0,
    ).fit(X)
    a = default.assimilate(y, initial_ensemble=ens)["analysis"].values
    b = ring.assimilate(y, initial_ensemble=ens)["analysis"].values
    assert np.allclose(a, b, rtol=1e-12, atol=1e-12)
    assert isinstance(default.state_coordinates_, PeriodicGrid1D)
    assert default.observation_coordinates_.positions.ravel().tolist() == [0.0, 3.0, 6.0, 9.0]
    line = EnKF(model, obs, n_members=6, localization_radius=2.0, periodic=False).fit(X)
    assert line.state_coordinates_.pairwise_distance()[0, -1] == 11.0


def test_observation_coordinates_localise_a_callable_operator():
    # Averages of neighbouring pairs on a 40-point ring, located between the pair.
    n = 40
    obs = ObservationModel(
        lambda x: 0.5 * (x[..., 0::2] + x[..., 1::2]),
        noise_std=0.5,
        coordinates=np.arange(0, n, 2) + 0.5,
    )
    est = _fit(
        EnKF(Persistence(0.0), obs, n_members=10, localization_radius=1.0, random_state=0), n
    )
    ens = np.random.default_rng(3).normal(size=(10, n))
    y = np.full((1, n // 2), np.nan)
    y[0, 0] = 3.0  # one observation, at 0.5: between components 0 and 1
    a = est.assimilate(y, initial_ensemble=ens)["analysis"].values[0]
    # Gaspari-Cohn support 2 * 1.82 = 3.64 around 0.5 on the ring: components 37..39
    # and 0..4 may move, the rest may not.
    far = np.arange(5, 37)
    assert np.allclose(a[:, far], ens[:, far], rtol=0, atol=1e-12)
    assert not np.allclose(a[:, :2], ens[:, :2])
    assert not np.allclose(a[:, [-1, 2]], ens[:, [-1, 2]])
    assert est.observation_coordinates_.periods.tolist() == [40.0]


@pytest.mark.parametrize(
    "state_coordinates, obs_coordinates, match, exc",
    [
        (Grid2D((3, 3)), None, "state_coordinates", ValueError),
        (np.zeros((5, 2)), None, "state_coordinates", ValueError),
        (np.full((8, 1), np.nan), None, "state_coordinates", ValueError),
        ("ring", None, "state_coordinates", TypeError),
        (PeriodicGrid1D(0), None, "state_coordinates", ValueError),
        (None, np.arange(3.0), "observation.coordinates", ValueError),
        (None, np.zeros((4, 2)), "observation.coordinates", ValueError),
        (None, Points(np.arange(4.0)), "observation.coordinates", ValueError),
        (
            Grid2D((2, 4)),
            Points(np.zeros((4, 2)), periodic_lengths=2.0),
            "observation.coord",
            ValueError,
        ),
    ],
)
def test_coordinates_that_do_not_fit_are_refused_in_fit(
    state_coordinates, obs_coordinates, match, exc
):
    # 8 state components, 4 observations (every other one); the default state grid is a
    # ring, so plain Points without periods lie in a different space.
    obs = ObservationModel(
        noise_std=1.0, indices=slice(None, None, 2), coordinates=obs_coordinates
    )
    est = EnKF(Persistence(0.1), obs, n_members=4, state_coordinates=state_coordinates)
    with pytest.raises(exc, match=match):
        _fit(est, 8)
