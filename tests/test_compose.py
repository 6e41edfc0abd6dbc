"""TransformedStateFilter: filters in transformed coordinates, physical units outside."""

import numpy as np
import pytest
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from dasim.compose import TransformedStateFilter
from dasim.datasets import make_twin_experiment
from dasim.filters import EnKF, KDEDiffusionFilter, SIRFilter
from dasim.models import Lorenz63
from dasim.observations import ObservationModel

MODEL = Lorenz63(steps_per_cycle=10, process_noise=0.1)
OBS = ObservationModel("arctan", noise_std=0.1, scale=0.2)


@pytest.fixture(scope="module")
def twin():
    return make_twin_experiment(MODEL, OBS, 40, random_state=0)


def test_affine_transform_leaves_the_enkf_unchanged(twin):
    # The ETKF is affine-equivariant: filtering standardised states and mapping back gives
    # the same ensembles as filtering physical states (to round-off).
    X, y = twin
    init = MODEL.climatology(20, random_state=1)
    plain = EnKF(MODEL, OBS, n_members=20, random_state=0).fit(X)
    wrapped = TransformedStateFilter(EnKF(MODEL, OBS, n_members=20, random_state=0)).fit(X)
    a = plain.assimilate(y, initial_ensemble=init)
    b = wrapped.assimilate(y, initial_ensemble=init)
    np.testing.assert_allclose(b["analysis"], a["analysis"], rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(b["forecast"], a["forecast"], rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize(
    "filt",
    [
        SIRFilter(MODEL, OBS, n_members=50, jitter=0.5, random_state=0),
        KDEDiffusionFilter(
            MODEL,
            OBS,
            n_members=50,
            sampler="mixture",
            device="numpy",
            bandwidth_y=0.1,
            random_state=0,
        ),
    ],
)
# 50 members and a sharp arctan observation (noise 0.1): a few cycles' KDE weights
# collapse, as expected at this size; the test is about units, not the warning.
@pytest.mark.filterwarnings("ignore::dasim.exceptions.WeightCollapseWarning")
def test_wrapped_filters_track_the_truth_in_physical_units(filt, twin):
    X, y = twin
    est = TransformedStateFilter(filt, StandardScaler()).fit(X, y)
    ds = est.assimilate(y)
    mean = ds["analysis"].mean("member").values
    assert np.sqrt(np.mean((mean[10:] - X[10:]) ** 2)) < 3.0
    assert np.isfinite(est.score(X, y))
    assert est.sample(7, random_state=0).shape == (7, 3)


def test_default_observation_and_nonlinear_transformer(twin):
    X, y = twin
    obs_all = ObservationModel(noise_std=1.0)
    _, y = make_twin_experiment(MODEL, obs_all, 40, random_state=0)
    cube = FunctionTransformer(np.cbrt, inverse_func=lambda z: z**3)
    est = TransformedStateFilter(EnKF(MODEL, n_members=20, random_state=0), cube).fit(X, y)
    ds = est.assimilate(y)
    assert ds["analysis"].shape == (40, 20, 3)
    assert np.all(np.isfinite(ds["analysis"].values))


def test_bad_arguments(twin):
    X, y = twin
    with pytest.raises(TypeError, match="filter"):
        TransformedStateFilter(StandardScaler()).fit(X)
    with pytest.raises(TypeError, match="transformer"):
        TransformedStateFilter(EnKF(MODEL, OBS), transformer=object()).fit(X)
    est = TransformedStateFilter(EnKF(MODEL, OBS, n_members=5, random_state=0)).fit(X)
    with pytest.raises(ValueError, match="initial_ensemble"):
        est.assimilate(y, initial_ensemble=np.ones((5, 2)))
    with pytest.raises(ValueError, match="X"):
        est.fit(np.full((4, 3), np.nan))
