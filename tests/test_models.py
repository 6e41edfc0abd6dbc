"""Dynamical models: integration accuracy, vectorisation, noise, climatology, errors."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dasim.models import FunctionModel, Lorenz63, Lorenz96, Persistence, as_model, rk4_step


def _integrate(model, x0, dt, t_end):
    x = x0.copy()
    for _ in range(int(round(t_end / dt))):
        x = rk4_step(model.tendency, x, dt)
    return x


@given(seed=st.integers(0, 2**31 - 1), which=st.sampled_from(["l63", "l96"]))
def test_rk4_fourth_order_convergence(seed, which):
    # Halving the step divides the error by about 2^4 = 16 (RK4 is fourth order).
    model = Lorenz63() if which == "l63" else Lorenz96(n=6)
    x0 = model.climatology(1, random_state=seed)[0]
    t_end = 0.16
    ref = _integrate(model, x0, 0.0005, t_end)
    e1 = np.linalg.norm(_integrate(model, x0, 0.02, t_end) - ref)
    e2 = np.linalg.norm(_integrate(model, x0, 0.01, t_end) - ref)
    ratio = e1 / e2
    assert 10.0 < ratio < 24.0, ratio


def test_lorenz96_fixed_point_and_tendency():
    model = Lorenz96(n=5, forcing=8.0)
    assert np.allclose(model.tendency(np.full(5, 8.0)), 0.0)
    x = np.arange(5.0)
    expected = [(x[(j + 1) % 5] - x[j - 2]) * x[j - 1] - x[j] + 8.0 for j in range(5)]
    assert np.allclose(model.tendency(x), expected)


def test_lorenz63_tendency_by_hand():
    model = Lorenz63()
    assert np.allclose(model.tendency(np.array([1.0, 2.0, 3.0])), [10.0, 23.0, -6.0])


def test_forecast_is_vectorised_over_members(rng):
    model = Lorenz96(n=8, dt=0.05, steps_per_cycle=3)
    ens = model.climatology(7, random_state=0)
    together = model.forecast(ens)
    one_by_one = np.stack([model.forecast(e[None])[0] for e in ens])
    assert np.allclose(together, one_by_one, rtol=0, atol=1e-12)


def test_process_noise_statistics():
    model = Persistence(process_noise=[0.5, 2.0])
    out = model.forecast(np.zeros((40000, 2)), random_state=0)
    # Standard error of a std estimate is std / sqrt(2n): 5 of them is the margin.
    assert np.allclose(out.std(axis=0), [0.5, 2.0], rtol=5 / np.sqrt(2 * 40000))
    cov = np.array([[1.0, 0.8], [0.8, 1.0]])
    out = Persistence(process_noise=cov).forecast(np.zeros((40000, 2)), random_state=0)
    assert np.allclose(np.cov(out.T), cov, atol=5 * np.sqrt(2 / 40000))


def test_simulate_and_seeds():
    model = Lorenz63(steps_per_cycle=10, process_noise=0.1)
    a = model.simulate(20, random_state=3)
    b = model.simulate(20, random_state=3)
    assert a.shape == (20, 3) and np.array_equal(a, b)
    x0 = np.array([1.0, 2.0, 20.0])
    c = model.simulate(2, initial_state=x0, process_noise=False)
    noise_free = Lorenz63(steps_per_cycle=10)
    assert np.allclose(c[0], noise_free.forecast(x0[None])[0])
    assert np.allclose(c[1], noise_free.forecast(c[0][None])[0])


def test_climatology_statistics():
    clim = Lorenz63().climatology(5000, random_state=0)
    # The Lorenz attractor: x and y centred on 0, z around 23.5, std about (7.9, 9.0, 8.6).
    assert abs(clim[:, 0].mean()) < 1.0 and 22.0 < clim[:, 2].mean() < 25.0
    assert np.allclose(clim.std(axis=0), [7.9, 9.0, 8.6], rtol=0.1)
    l96 = Lorenz96(n=40).climatology(2000, random_state=0)
    assert 2.0 < l96.mean() < 2.7 and 3.3 < l96.std() < 3.9


def test_climatology_draws_do_not_depend_on_earlier_draws():
    # A larger pool cached by an earlier draw (B2's reference particles) once changed
    # later small draws in the same process, so a seed's truth and initial ensemble
    # depended on what had run before it (and on n_jobs).
    model = Lorenz63(dt=0.02, steps_per_cycle=5)  # a cache key of its own
    small = model.climatology(5, random_state=1)
    from_big = model.climatology(5, random_state=1, pool_size=17000)
    again = Lorenz63(dt=0.02, steps_per_cycle=5).climatology(5, random_state=1)
    assert np.array_equal(small, again)
    assert not np.array_equal(small, from_big)
    assert np.array_equal(from_big, model.climatology(5, random_state=1, pool_size=17000))
    # Every pool size up to 16384 is the one default pool.
    assert np.array_equal(small, model.climatology(5, random_state=1, pool_size=100))
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="pool_size"):
            model.climatology(5, pool_size=bad)


def test_function_model_and_as_model():
    model = as_model(lambda e: 2.0 * e)
    assert isinstance(model, FunctionModel)
    assert np.allclose(model.forecast(np.ones((3, 2))), 2.0)
    with pytest.raises(TypeError, match="model"):
        as_model(3.0)
    with pytest.raises(ValueError, match="func returned shape"):
        FunctionModel(lambda e: e[:, :1]).forecast(np.ones((3, 2)))


def test_divergence_names_the_cycle():
    model = FunctionModel(lambda e: e * 1e200)
    with pytest.raises(ValueError, match="cycle 1"):
        model.simulate(5, initial_state=np.ones(2), process_noise=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dt": -0.1}, "dt"),
        ({"dt": 0.0}, "dt"),
        ({"steps_per_cycle": 0}, "steps_per_cycle"),
        ({"process_noise": -1.0}, "process_noise"),
        ({"process_noise": [0.1, 0.1]}, "process_noise"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Lorenz63(**kwargs).forecast(np.ones((2, 3)))


def test_bad_ensembles():
    with pytest.raises(ValueError, match="state components"):
        Lorenz63().forecast(np.ones((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        Lorenz63().forecast(np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="inf"):
        Lorenz63().forecast(np.full((2, 3), np.inf))
    with pytest.raises(ValueError, match="n must be an integer >= 4"):
        Lorenz96(n=3).forecast(np.ones((2, 3)))
    with pytest.raises(ValueError, match="n_times"):
        Lorenz63().simulate(0)
