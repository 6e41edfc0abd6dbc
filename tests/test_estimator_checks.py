"""scikit-learn's estimator contract over every dasim estimator."""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from dasim.filters import EnKF, KDEDiffusionFilter, SIRFilter
from dasim.smoothers import EnKS, ParticleSmoother

ESTIMATORS = [
    EnKF(n_members=5, random_state=0),
    EnKF(n_members=5, variant="stochastic", random_state=0),
    SIRFilter(n_members=20, jitter=0.5, random_state=0),
    KDEDiffusionFilter(n_members=8, device="numpy", random_state=0),
    KDEDiffusionFilter(n_members=8, sampler="mixture", device="numpy", random_state=0),
    EnKS(n_members=5, random_state=0),
    EnKS(n_members=5, variant="stochastic", lag=2, random_state=0),
    ParticleSmoother(n_members=20, jitter=0.5, random_state=0),
    ParticleSmoother(n_members=20, method="backward", n_trajectories=10, random_state=0),
]


def _expected_failed_checks(estimator):
    return {}


@pytest.mark.filterwarnings("ignore::dasim.exceptions.WeightCollapseWarning")
@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible(estimator, check):
    check(estimator)
