"""The reproducibility contract: same seed, same numbers, whatever the threads and jobs.

The tests set the BLAS thread count themselves (threadpoolctl), so every machine runs the
case that once failed on a fresh machine only: a serial run under OpenBLAS's default
threads against joblib workers under one thread. See docs/guide/reproducibility.rst.
"""

import joblib
import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, TimeSeriesSplit
from threadpoolctl import threadpool_info, threadpool_limits

from dasim._threads import single_blas_thread
from dasim.benchmarks import b1_case, b1_methods, run_case
from dasim.datasets import make_twin_experiment
from dasim.filters import EnKF, KDEDiffusionFilter, SIRFilter
from dasim.models import Lorenz63, Lorenz96
from dasim.observations import ObservationModel

THREADS = (1, 2, 4)


def _blas_threads():
    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


@pytest.fixture(scope="module")
def l96():
    model = Lorenz96(n=40, dt=0.05, steps_per_cycle=1, process_noise=0.0)
    obs = ObservationModel("identity", noise_std=1.0)
    X, y = make_twin_experiment(model, obs, 25, random_state=1)
    return model, obs, X, y


FILTERS = {
    "ETKF": lambda m, o: EnKF(m, o, n_members=40, inflation=1.02),
    "EnKF-stochastic": lambda m, o: EnKF(m, o, n_members=40, variant="stochastic"),
    "LETKF": lambda m, o: EnKF(m, o, n_members=30, inflation=1.02, localization_radius=4.0),
    "SIR-jitter": lambda m, o: SIRFilter(m, o, n_members=200, jitter=0.5),
    "KDE-mixture": lambda m, o: KDEDiffusionFilter(m, o, n_members=60, sampler="mixture"),
}


# The KDE filter's global kernel collapses its weights in 40 dimensions (the reason for
# issue #14's localisation); the collapse warning is expected and not what is tested here.
@pytest.mark.filterwarnings("ignore::dasim.exceptions.WeightCollapseWarning")
@pytest.mark.parametrize("name", list(FILTERS))
def test_filters_are_bitwise_equal_whatever_the_blas_threads(l96, name):
    model, obs, X, y = l96
    runs = []
    for n in THREADS:
        with threadpool_limits(limits=n, user_api="blas"):
            est = FILTERS[name](model, obs).set_params(random_state=3).fit(X)
            ds = est.assimilate(y, keep_forecast=False)
            runs.append((ds["analysis"].values, est.score(X, y), est.sample(5)))
    for analysis, score, sample in runs[1:]:
        np.testing.assert_array_equal(analysis, runs[0][0])
        assert score == runs[0][1]
        np.testing.assert_array_equal(sample, runs[0][2])


def test_kde_ode_sampler_is_bitwise_equal_whatever_the_blas_threads():
    model = Lorenz63(dt=0.01, steps_per_cycle=10, process_noise=0.0)
    obs = ObservationModel("identity", noise_std=2.0)
    X, y = make_twin_experiment(model, obs, 4, random_state=0)
    runs = []
    for n in THREADS:
        with threadpool_limits(limits=n, user_api="blas"):
            est = KDEDiffusionFilter(
                model, obs, n_members=40, sampler="ode", bandwidth_y=4.0, random_state=0
            )
            runs.append(est.fit(X).assimilate(y)["analysis"].values)
    for run in runs[1:]:
        np.testing.assert_array_equal(run, runs[0])


@pytest.mark.parametrize("outer_threads", [2, 4])
def test_benchmark_runs_equal_across_jobs_backends_and_threads(outer_threads):
    """Serial under several BLAS threads and loky processes: bitwise; threads: to rounding."""
    case, methods = b1_case("l96-10"), b1_methods("l96-10")
    kwargs = dict(seeds=[3, 4], n_cycles=30, burn_in=10)
    with threadpool_limits(limits=outer_threads, user_api="blas"):
        serial = run_case(case, methods, n_jobs=1, **kwargs)
        on_loky = run_case(case, methods, n_jobs=2, **kwargs)
        with joblib.parallel_config(backend="threading"):
            on_threads = run_case(case, methods, n_jobs=2, **kwargs)
    for name in ["rmse", "crps", "spread", "spread_skill"]:
        np.testing.assert_array_equal(on_loky[name].values, serial[name].values)
        # Threads of one process allocate from other malloc arenas: arrays get other
        # alignments and SIMD kernels peel their loops differently, so the threading
        # backend agrees to rounding (seen: 2e-16 after 30 cycles), not bitwise.
        np.testing.assert_allclose(on_threads[name].values, serial[name].values, rtol=1e-12)


def test_grid_search_equal_serial_and_parallel(l96):
    model, obs, X, y = l96
    grid = {"inflation": [1.0, 1.05]}
    est = EnKF(model, obs, n_members=20, random_state=0)
    results = []
    for n_jobs in (1, 2):
        with threadpool_limits(limits=4, user_api="blas"):
            search = GridSearchCV(est, grid, cv=TimeSeriesSplit(2), n_jobs=n_jobs).fit(X, y)
        results.append(search.cv_results_["mean_test_score"])
    np.testing.assert_array_equal(results[0], results[1])


def test_pin_is_reentrant_and_restores_the_callers_threads():
    with threadpool_limits(limits=3, user_api="blas"):
        before = _blas_threads()
        with single_blas_thread():
            assert set(_blas_threads()) == {1}
            with single_blas_thread():
                assert set(_blas_threads()) == {1}
            assert set(_blas_threads()) == {1}  # the inner exit does not lift the pin
        assert _blas_threads() == before


def test_pin_restores_threads_after_an_error(l96):
    model, obs, X, _ = l96
    with threadpool_limits(limits=3, user_api="blas"):
        before = _blas_threads()
        est = EnKF(model, obs, n_members=10).fit(X)
        with pytest.raises(ValueError):
            est.assimilate(np.ones((3, 7)))
        assert _blas_threads() == before


def test_torch_kde_path_agrees_across_torch_threads():
    """torch's intra-op threads may split reductions: agreement to rounding is promised."""
    torch = pytest.importorskip("torch")
    model = Lorenz63(dt=0.01, steps_per_cycle=10, process_noise=0.0)
    obs = ObservationModel("identity", noise_std=2.0)
    X, y = make_twin_experiment(model, obs, 3, random_state=0)
    before = torch.get_num_threads()
    runs = []
    try:
        for n in (1, 4):
            torch.set_num_threads(n)
            est = KDEDiffusionFilter(
                model,
                obs,
                n_members=300,
                sampler="ode",
                bandwidth_y=4.0,
                device="cpu",
                random_state=0,
            )
            runs.append(est.fit(X).assimilate(y)["analysis"].values)
    finally:
        torch.set_num_threads(before)
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-10, atol=1e-10 * np.abs(runs[0]).max())
