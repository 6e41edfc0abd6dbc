"""Hardening of the learned assimilators: bad input is refused before any training."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from dasim.assimilators import SDAAssimilator, SOADAssimilator  # noqa: E402
from dasim.observations import ObservationModel  # noqa: E402

TINY = dict(
    n_members=2,
    n_epochs=1,
    width=8,
    depth=1,
    n_steps=2,
    progress=False,
    random_state=0,
    device="cpu",
)
ESTIMATORS = {"SDA": SDAAssimilator, "SOAD": SOADAssimilator}

BAD_PARAMS = {
    "n_members": [0, -3, 2.5, "many"],
    "window": [-1, 1.5, "two"],
    "n_epochs": [0, -2, 1.5],
    "n_steps": [0, -1, "ten"],
    "n_corrections": [-1, 0.5],
    "tau": [0.0, -0.25, np.nan],
    "gamma": [-1.0, np.nan, "big"],
    "gamma_units": ["physical", None, 1],
    "learning_rate": [0.0, -1e-3, np.inf],
    "batch_size": [0, -8],
    "width": [0, -4],
    "depth": [-1, 2.5],
    "kernel": ["transformer", 3],
    "clip": ["all", 3],
    "device": ["tpu", 7],
}


def _trajectory(seed=0, n=40, d=2):
    return np.cumsum(np.random.default_rng(seed).normal(size=(n, d)), axis=0)


@settings(max_examples=40)
@given(name=st.sampled_from(sorted(ESTIMATORS)), data=st.data())
def test_bad_parameters_name_themselves(name, data):
    est = ESTIMATORS[name](ObservationModel(noise_std=0.5), **TINY)
    params = sorted(set(est.get_params()) & set(BAD_PARAMS))
    param = data.draw(st.sampled_from(params))
    value = data.draw(st.sampled_from(BAD_PARAMS[param]))
    est.set_params(**{param: value})
    with pytest.raises((ValueError, TypeError), match=param):
        est.fit(_trajectory())


@settings(max_examples=30)
@given(
    name=st.sampled_from(sorted(ESTIMATORS)),
    kind=st.sampled_from(["nan", "inf"]),
    data=st.data(),
)
def test_non_finite_trajectories_are_refused(name, kind, data):
    X = _trajectory()
    i = data.draw(st.integers(0, X.shape[0] - 1))
    j = data.draw(st.integers(0, X.shape[1] - 1))
    X[i, j] = np.nan if kind == "nan" else np.inf
    with pytest.raises(ValueError, match="X"):
        ESTIMATORS[name](ObservationModel(noise_std=0.5), **TINY).fit(X)


@settings(max_examples=30)
@given(
    name=st.sampled_from(sorted(ESTIMATORS)),
    shape=st.sampled_from([(0, 2), (7,), (2, 3, 4, 5), (3, 2)]),
)
def test_bad_trajectory_shapes(name, shape):
    # (3, 2): fewer states than one window of 2k+1 = 5.
    with pytest.raises(ValueError, match="X|window"):
        ESTIMATORS[name](ObservationModel(noise_std=0.5), **TINY).fit(np.ones(shape))
