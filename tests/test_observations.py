"""Observation operators, noise models and the Gaussian log-likelihood."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import multivariate_normal

from dasim.observations import ObservationModel

finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False)


@pytest.mark.parametrize(
    "operator, func",
    [
        ("identity", lambda x: x),
        ("arctan", np.arctan),
        ("sin", np.sin),
        ("cube", lambda x: x**3),
        ("square", lambda x: x**2),
        ("abs", np.abs),
        (lambda x: x[..., :1] + x[..., 1:2], lambda x: x[..., :1] + x[..., 1:2]),
    ],
)
def test_operators(operator, func, rng):
    x = rng.normal(size=(7, 4))
    obs = ObservationModel(operator, indices=[0, 2, 3])
    assert np.allclose(obs.apply(x), func(x[:, [0, 2, 3]]))


def test_indices_forms_and_scale(rng):
    x = rng.normal(size=(5, 6))
    assert np.allclose(ObservationModel(indices=slice(None, None, 2)).apply(x), x[:, ::2])
    mask = np.array([True, False] * 3)
    assert np.allclose(ObservationModel(indices=mask).apply(x), x[:, ::2])
    assert np.allclose(ObservationModel(indices=2).apply(x), x[:, [2]])
    assert np.allclose(ObservationModel("arctan", scale=3.0).apply(x), np.arctan(3 * x))
    assert ObservationModel(indices=slice(1, None, 2)).n_obs(6) == 3


def test_torch_operators_match_numpy(rng):
    torch = pytest.importorskip("torch")
    x = rng.normal(size=(3, 4))
    for op in ["identity", "arctan", "sin", "cube", "square", "abs"]:
        obs = ObservationModel(op, indices=[1, 3], scale=2.0)
        out = obs.apply(torch.as_tensor(x))
        assert isinstance(out, torch.Tensor)
        assert np.allclose(out.numpy(), obs.apply(x))


@given(
    data=st.data(),
    n_obs=st.integers(1, 4),
    kind=st.sampled_from(["scalar", "vector", "matrix"]),
)
def test_log_likelihood_matches_scipy(data, n_obs, kind):
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if kind == "scalar":
        noise = data.draw(st.floats(0.05, 5.0))
        cov = noise**2 * np.eye(n_obs)
    elif kind == "vector":
        noise = rng.uniform(0.05, 5.0, n_obs)
        cov = np.diag(noise**2)
    else:
        a = rng.normal(size=(n_obs, n_obs))
        noise = cov = a @ a.T + 0.5 * np.eye(n_obs)
    obs = ObservationModel("sin", noise_std=noise, indices=np.arange(n_obs))
    ens = data.draw(arrays(np.float64, (5, n_obs + 1), elements=finite))
    y = data.draw(arrays(np.float64, (n_obs,), elements=finite))
    got = obs.log_likelihood(y, ens)
    want = [multivariate_normal(np.sin(e[:n_obs]), cov).logpdf(y) for e in ens]
    assert np.allclose(got, want, rtol=1e-10, atol=1e-10 * max(1.0, np.max(np.abs(want))))


def test_log_likelihood_skips_nan_entries(rng):
    cov = np.array([[1.0, 0.3, 0.0], [0.3, 2.0, 0.1], [0.0, 0.1, 1.5]])
    obs = ObservationModel(noise_std=cov)
    ens = rng.normal(size=(4, 3))
    y = np.array([0.5, np.nan, -1.0])
    sub = cov[np.ix_([0, 2], [0, 2])]
    want = [multivariate_normal(e[[0, 2]], sub).logpdf(y[[0, 2]]) for e in ens]
    assert np.allclose(obs.log_likelihood(y, ens), want)
    assert np.array_equal(obs.log_likelihood(np.full(3, np.nan), ens), np.zeros(4))


def test_simulate_noise_statistics():
    obs = ObservationModel("identity", noise_std=[0.5, 2.0])
    y = obs.simulate(np.zeros((40000, 2)), random_state=1)
    assert np.allclose(y.std(axis=0), [0.5, 2.0], rtol=5 / np.sqrt(2 * 40000))
    assert np.array_equal(y, obs.simulate(np.zeros((40000, 2)), random_state=1))


@pytest.mark.parametrize(
    "kwargs, match, exc",
    [
        ({"operator": "exp"}, "operator", ValueError),
        ({"noise_std": 0.0}, "noise_std", ValueError),
        ({"noise_std": -1.0}, "noise_std", ValueError),
        ({"noise_std": [1.0, 2.0]}, "noise_std", ValueError),
        ({"noise_std": np.array([[1.0, 2.0], [2.0, 1.0]])}, "noise_std", ValueError),
        ({"indices": [7]}, "indices", ValueError),
        ({"indices": "a"}, "indices", TypeError),
        ({"scale": np.inf}, "scale", ValueError),
    ],
)
def test_bad_parameters(kwargs, match, exc):
    obs = ObservationModel(**kwargs)
    with pytest.raises(exc, match=match):
        obs.simulate(np.zeros((2, 3)), random_state=0)


def test_bad_inputs():
    obs = ObservationModel()
    with pytest.raises(ValueError, match="X contains NaN"):
        obs.simulate(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="y contains inf"):
        obs.log_likelihood(np.array([np.inf, 1.0]), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="y has 3 components"):
        obs.log_likelihood(np.zeros(3), np.zeros((2, 2)))
