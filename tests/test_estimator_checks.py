"""scikit-learn's estimator contract over every dasim estimator."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from dasim.filters import EnKF, SIRFilter

ESTIMATORS = [
    EnKF(n_members=5, random_state=0),
    EnKF(n_members=5, variant="stochastic", random_state=0),
    SIRFilter(n_members=20, jitter=0.5, random_state=0),
]


def _expected_failed_checks(estimator):
    return {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible(estimator, check):
    check(estimator)
