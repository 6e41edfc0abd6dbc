"""Property tests of :class:`dasim.observations.GaussianNoise`: the one Gaussian noise value."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import multivariate_normal

from dasim._random import as_generator, seed_from
from dasim._stats import effective_sample_size, scott_factor
from dasim.observations import GaussianNoise

positive = st.floats(0.05, 5.0)


@st.composite
def noises(draw):
    """A noise in one of its three forms, with the covariance it stands for."""
    dim = draw(st.integers(1, 5))
    form = draw(st.sampled_from(["scalar", "diagonal", "variance", "full"]))
    if form == "scalar":
        s = draw(positive)
        return GaussianNoise(std=s, dim=dim), s**2 * np.eye(dim)
    if form in ("diagonal", "variance"):
        v = draw(arrays(np.float64, dim, elements=positive))
        if form == "diagonal":
            return GaussianNoise(std=v), np.diag(v**2)
        return GaussianNoise(variance=v), np.diag(v)
    a = draw(arrays(np.float64, (dim, dim), elements=st.floats(-2.0, 2.0)))
    cov = a @ a.T + 0.5 * np.eye(dim)
    return GaussianNoise(covariance=cov), cov


@settings(max_examples=80, deadline=None)
@given(pair=noises(), seed=st.integers(0, 2**16))
def test_log_density_is_scipy_logpdf(pair, seed):
    noise, cov = pair
    r = np.random.default_rng(seed).normal(scale=2.0, size=(4, noise.dim))
    expected = multivariate_normal(np.zeros(noise.dim), cov).logpdf(r)
    np.testing.assert_allclose(noise.log_density(r), np.atleast_1d(expected), rtol=1e-9)
    np.testing.assert_allclose(noise.covariance, cov, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(noise.std, np.sqrt(np.diag(cov)), rtol=1e-12)
    chol = noise.cholesky
    np.testing.assert_allclose(chol @ chol.T, cov, rtol=1e-9, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(pair=noises(), seed=st.integers(0, 2**16))
def test_log_likelihood_skips_unobserved_entries(pair, seed):
    noise, cov = pair
    rng = np.random.default_rng(seed)
    y = rng.normal(size=noise.dim)
    predicted = rng.normal(size=(3, noise.dim))
    mask = rng.random(noise.dim) < 0.6
    y[~mask] = np.nan
    got = noise.log_likelihood(y, predicted)
    if not mask.any():
        np.testing.assert_array_equal(got, 0.0)
        return
    sub = multivariate_normal(np.zeros(mask.sum()), cov[np.ix_(mask, mask)])
    np.testing.assert_allclose(got, sub.logpdf(y[mask] - predicted[:, mask]), rtol=1e-9)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"std": 0.7, "dim": 3},
        {"std": [0.5, 1.0, 2.0]},
        {"covariance": [[2.0, 0.9, 0.1], [0.9, 1.0, -0.3], [0.1, -0.3, 0.5]]},
    ],
)
def test_whitened_samples_have_identity_covariance(kwargs):
    noise = GaussianNoise(**kwargs)
    n = 200_000
    white = noise.whiten(noise.sample(n, random_state=0))
    # Each entry of the sample covariance has standard error about sqrt(2 / n) < 0.0032:
    # 0.02 is six of them.
    np.testing.assert_allclose(np.cov(white, rowvar=False), np.eye(3), atol=0.02)
    np.testing.assert_allclose(white.mean(axis=0), 0.0, atol=0.02)


def test_sample_is_seeded():
    noise = GaussianNoise(std=[1.0, 2.0])
    np.testing.assert_array_equal(noise.sample((2, 3), 5), noise.sample((2, 3), 5))
    assert noise.sample((2, 3), 5).shape == (2, 3, 2)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({}, TypeError, "noise_std: give exactly one of std, variance or covariance"),
        ({"std": 1.0, "variance": 1.0}, TypeError, "noise_std: give exactly one"),
        ({"std": 1.0}, ValueError, "noise_std: a scalar std needs dim"),
        ({"std": [1.0, -1.0]}, ValueError, "noise_std must be positive"),
        ({"std": [1.0, 0.0]}, ValueError, "noise_std must be positive"),
        ({"std": [1.0, np.inf]}, ValueError, "noise_std must be finite"),
        ({"std": [1.0, 2.0], "dim": 3}, ValueError, "noise_std has 2 entries"),
        ({"std": "abc"}, TypeError, "noise_std must be a number"),
        ({"covariance": [[1.0, 2.0], [2.0, 1.0]]}, ValueError, "positive definite"),
        (
            {"covariance": [[1.0, 0.5], [0.0, 1.0]]},
            ValueError,
            "noise_std covariance must be symmetric",
        ),
        ({"covariance": np.eye(2), "dim": 3}, ValueError, r"noise_std must be a \(3, 3\)"),
        ({"std": 1.0, "dim": 0}, ValueError, "noise_std: dim must be a positive integer"),
    ],
)
def test_bad_input_names_the_argument(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        GaussianNoise(name="noise_std", **kwargs)


def test_degenerate_model_noise_samples_but_zero_components_stay():
    noise = GaussianNoise(std=[0.0, 1.0], allow_zero=True)
    draws = noise.sample(100, random_state=0)
    assert np.all(draws[:, 0] == 0.0) and np.std(draws[:, 1]) > 0.5


def test_seeding_helpers():
    assert isinstance(as_generator(None), np.random.Generator)
    gen = np.random.default_rng(0)
    assert as_generator(gen) is gen
    np.testing.assert_array_equal(as_generator(3).random(3), as_generator(3).random(3))
    assert seed_from(7) == 7
    assert seed_from(np.random.RandomState(0)) == seed_from(np.random.RandomState(0))


def test_ess_and_scott():
    assert effective_sample_size(np.zeros(4)) == pytest.approx(4.0)
    assert effective_sample_size([0.0, -np.inf]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="log_w must be 1-D"):
        effective_sample_size(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="every weight is zero"):
        effective_sample_size([-np.inf, -np.inf])
    assert scott_factor(32, 1) == pytest.approx(0.5)
