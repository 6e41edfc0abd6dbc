"""scikit-learn's estimator contract over the learned assimilators (tiny settings)."""

import pytest

torch = pytest.importorskip("torch")

from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from dasim.assimilators import SDAAssimilator, SOADAssimilator  # noqa: E402

TINY = {
    "n_members": 4,
    "n_epochs": 1,
    "width": 8,
    "depth": 1,
    "n_steps": 4,
    "device": "cpu",
    "progress": False,
    "random_state": 0,
}

ESTIMATORS = [
    SDAAssimilator(**TINY),
    SOADAssimilator(**TINY),
    SOADAssimilator(clip="sample", refresh_score_in_corrector=True, **TINY),
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _expected_failed_checks(estimator):
    # None: both estimators pass every check. (The three skipped checks are scikit-learn's
    # array-API checks, which skip themselves when SCIPY_ARRAY_API is not set.)
    return {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible(estimator, check):
    check(estimator)
