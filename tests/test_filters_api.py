"""The sequential filters' estimator API: output, determinism, NaN, errors, tuning."""

import pickle

import numpy as np
import pytest
import xarray as xr
from sklearn.model_selection import GridSearchCV, TimeSeriesSplit

from dasim import metrics
from dasim.datasets import make_twin_experiment
from dasim.filters import EnKF, SIRFilter
from dasim.models import FunctionModel, Lorenz63, Lorenz96
from dasim.observations import ObservationModel

MODEL = Lorenz63(steps_per_cycle=10, process_noise=0.1)
OBS = ObservationModel(noise_std=1.0)
FILTERS = [
    lambda **kw: EnKF(MODEL, OBS, n_members=20, inflation=1.02, random_state=0, **kw),
    lambda **kw: EnKF(MODEL, OBS, n_members=20, variant="stochastic", random_state=0, **kw),
    lambda **kw: SIRFilter(MODEL, OBS, n_members=200, jitter=0.5, random_state=0, **kw),
]


@pytest.fixture(scope="module")
def twin():
    X, y = make_twin_experiment(MODEL, OBS, 60, random_state=0)
    X_train, y_train = make_twin_experiment(MODEL, OBS, 200, random_state=1)
    return X_train, y_train, X, y


@pytest.mark.parametrize("make", FILTERS)
def test_dataset_structure_and_accuracy(make, twin):
    X_train, y_train, X, y = twin
    est = make().fit(X_train, y_train)
    ds = est.assimilate(y)
    assert isinstance(ds, xr.Dataset)
    n = est.n_members
    assert ds["analysis"].dims == ("time", "member", "state")
    assert ds["analysis"].shape == (60, n, 3) and ds["forecast"].shape == (60, n, 3)
    assert ds["log_evidence"].dims == ("time",)
    assert ds.attrs["estimator"] == type(est).__name__
    assert np.all(np.isfinite(ds["analysis"].values))
    if isinstance(est, SIRFilter):
        assert ds["weights"].dims == ("time", "member")
        assert np.allclose(ds["weights"].sum("member"), 1.0)
        assert ds["ess"].dims == ("time",)
    # The filter must beat the observation noise (std 1) and climatology (about 8).
    weights = ds["weights"].values if "weights" in ds else None
    err = metrics.rmse(X, ds["analysis"].values, weights)
    assert metrics.time_mean(err, burn_in=10) < 0.9


@pytest.mark.parametrize("make", FILTERS)
def test_same_seed_same_result(make, twin):
    X_train, _, _, y = twin
    a = make().fit(X_train).assimilate(y[:10])
    b = make().fit(X_train).assimilate(y[:10])
    xr.testing.assert_identical(a, b)
    c = make().fit(X_train).assimilate(y[:10], random_state=1)
    assert not np.allclose(a["analysis"], c["analysis"])
    assert make().fit(X_train).score(X_train[:10], y[:10]) == make().fit(X_train).score(
        X_train[:10], y[:10]
    )


@pytest.mark.parametrize("make", FILTERS)
def test_missing_observations(make, twin):
    X_train, _, _, y = twin
    y = y[:12].copy()
    y[3] = np.nan  # forecast-only cycle
    y[5, 1] = np.nan  # partial observation
    est = make().fit(X_train)
    ds = est.assimilate(y)
    n = ds.sizes["member"]

    def forecast_weights(k):
        # a weighted filter forecasts its previous analysis weights, uniform once resampled
        if "weights" not in ds or ds["resampled"][k - 1] == 1:
            return np.full(n, 1.0 / n)
        return ds["weights"][k - 1].values

    def analysis_weights(k):
        return ds["weights"][k].values if "weights" in ds else np.full(n, 1.0 / n)

    assert np.allclose(ds["analysis"][3], ds["forecast"][3])
    assert np.allclose(analysis_weights(3), forecast_weights(3))
    assert np.isnan(ds["log_evidence"][3])  # an unobserved cycle has no evidence
    assert np.isfinite(np.delete(ds["log_evidence"].values, 3)).all()
    analysis_mean = analysis_weights(5) @ ds["analysis"][5].values
    forecast_mean = forecast_weights(5) @ ds["forecast"][5].values
    assert not np.allclose(analysis_mean, forecast_mean)
    assert np.all(np.isfinite(ds["analysis"].values))


def test_noise_mle_ignores_unobserved_cycles():
    # The evidence of an unobserved cycle is NaN; the maximum-likelihood search sums the
    # evidence of the observed cycles only (a NaN sum would stall it at its start).
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.normal(size=80))[:, None]
    y = x + 2.0 * rng.normal(size=x.shape)
    y[[10, 40, 41, 42]] = np.nan
    moments = EnKF(n_members=50, random_state=0).fit(x, y)
    mle = EnKF(noise="mle", n_members=50, random_state=0).fit(x, y)
    assert np.isfinite(mle.log_evidence_)
    assert not np.allclose(mle.noise_std_, moments.observation_.noise_std)
    assert not np.allclose(mle.process_noise_, moments.model_.process_noise)


def test_partial_nan_equals_subset_observation(twin):
    # Observing components (0, 2) of a NaN row must equal an operator that observes only
    # those components.
    X_train, _, _, y = twin
    y_nan = y[:5].copy()
    y_nan[:, 1] = np.nan
    a = EnKF(MODEL, OBS, n_members=10, random_state=0).fit(X_train).assimilate(y_nan)
    sub = ObservationModel(noise_std=1.0, indices=[0, 2])
    b = EnKF(MODEL, sub, n_members=10, random_state=0).fit(X_train).assimilate(y[:5, [0, 2]])
    assert np.allclose(a["analysis"], b["analysis"], atol=1e-10)


def test_time_coordinate_from_pandas_and_xarray(twin):
    pd = pytest.importorskip("pandas")
    X_train, _, _, y = twin
    est = EnKF(MODEL, OBS, n_members=5, random_state=0).fit(X_train)
    idx = pd.date_range("2026-01-01", periods=4, freq="6h")
    ds = est.assimilate(pd.DataFrame(y[:4], index=idx))
    assert np.array_equal(ds["time"].values, idx.values)
    da = xr.DataArray(y[:4], dims=("t", "obs"), coords={"t": [10, 20, 30, 40]})
    assert est.assimilate(da)["time"].values.tolist() == [10, 20, 30, 40]


@pytest.mark.parametrize("make", FILTERS)
def test_default_constructed_filters_fit_and_score_any_2d_data(make, rng):
    est = type(make())()
    X = np.cumsum(rng.normal(size=(40, 4)), axis=0)
    y = X + rng.normal(scale=0.5, size=X.shape)
    est.set_params(n_members=30, random_state=0).fit(X, y)
    assert est.model_.process_noise.shape == (4,)
    assert np.allclose(est.observation_.noise_std, 0.5, rtol=0.35)
    s = est.score(X, y)
    assert np.isfinite(s) and s < 0
    # A 1-D y observes the first component.
    est.fit(X, y[:, 0])
    assert est.n_obs_ == 1
    assert est.assimilate(y[:, 0])["analysis"].shape == (40, 30, 4)


def test_sample_draws_from_the_climatology(twin):
    X_train, *_ = twin
    est = EnKF(MODEL, OBS, random_state=0).fit(X_train)
    draws = est.sample(5000, random_state=0)
    assert draws.shape == (5000, 3)
    assert np.allclose(draws.mean(0), X_train.mean(0), atol=0.1 * X_train.std(0).max())
    assert np.array_equal(draws, est.sample(5000, random_state=0))
    with pytest.raises(ValueError, match="n_samples"):
        est.sample(0)


def test_gridsearch_picks_by_score():
    X_all, y_all = make_twin_experiment(MODEL, OBS, 120, random_state=5)
    search = GridSearchCV(
        EnKF(MODEL, OBS, n_members=10, random_state=0),
        {"inflation": [1.0, 1.05, 3.0]},
        cv=TimeSeriesSplit(3),
    ).fit(X_all, y_all)
    scores = search.cv_results_["mean_test_score"]
    assert search.best_params_["inflation"] == [1.0, 1.05, 3.0][int(np.argmax(scores))]
    # Tripling the spread every cycle is the worst choice (inflation below 1, deflation,
    # is refused by fit).
    assert np.argmin(scores) == 2
    # Nested parameters of the model and observation are tunable too, with any scorer.
    search = GridSearchCV(
        EnKF(MODEL, OBS, n_members=10, random_state=0),
        {"observation__noise_std": [0.5, 1.0, 4.0]},
        cv=TimeSeriesSplit(2),
        scoring=metrics.log_evidence,
    ).fit(X_all, y_all)
    assert search.best_params_["observation__noise_std"] == 1.0


@pytest.mark.parametrize("make", FILTERS)
def test_pickle_round_trip(make, twin):
    X_train, _, _, y = twin
    est = make().fit(X_train)
    clone = pickle.loads(pickle.dumps(est))
    xr.testing.assert_identical(est.assimilate(y[:5]), clone.assimilate(y[:5]))


def test_netcdf_round_trip(tmp_path, twin):
    X_train, _, _, y = twin
    ds = SIRFilter(MODEL, OBS, n_members=30, random_state=0).fit(X_train).assimilate(y[:5])
    path = tmp_path / "run.nc"
    ds.to_netcdf(path)
    back = xr.load_dataset(path)
    assert np.allclose(back["analysis"], ds["analysis"])


# ----------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "params, match, exc",
    [
        ({"n_members": 1}, "n_members", ValueError),
        ({"n_members": 2.5}, "n_members", TypeError),
        ({"variant": "etkf"}, "variant", ValueError),
        ({"inflation": 0.0}, "inflation", ValueError),
        ({"localization_radius": -1.0}, "localization_radius", ValueError),
        ({"model": "lorenz"}, "model", TypeError),
        ({"observation": "identity"}, "observation", TypeError),
    ],
)
def test_enkf_bad_parameters(params, match, exc, twin):
    X_train, *_ = twin
    with pytest.raises(exc, match=match):
        EnKF(MODEL, OBS).set_params(**params).fit(X_train)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"resampling": "best"}, "resampling"),
        ({"ess_threshold": 1.5}, "ess_threshold"),
        ({"jitter": -0.1}, "jitter"),
    ],
)
def test_sir_bad_parameters(params, match, twin):
    X_train, *_ = twin
    with pytest.raises(ValueError, match=match):
        SIRFilter(MODEL, OBS).set_params(**params).fit(X_train)


def test_bad_data(twin):
    X_train, y_train, _, y = twin
    est = EnKF(MODEL, OBS, n_members=5, random_state=0)
    bad = X_train.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        est.fit(bad)
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="inf"):
        est.fit(bad)
    with pytest.raises(ValueError, match="state components"):
        est.fit(np.ones((10, 4)))
    with pytest.raises(ValueError, match="same number of rows"):
        est.fit(X_train, y_train[:-1])
    est.fit(X_train)
    with pytest.raises(ValueError, match="y has 2 columns"):
        est.assimilate(y[:, :2])
    with pytest.raises(ValueError, match="y contains inf"):
        est.assimilate(np.full((3, 3), np.inf))
    with pytest.raises(ValueError, match="initial_ensemble has 2 state components"):
        est.assimilate(y, initial_ensemble=np.ones((5, 2)))
    with pytest.raises(ValueError, match="initial_ensemble's number of members"):
        est.assimilate(y, initial_ensemble=np.ones((1, 3)))
    with pytest.raises(ValueError, match="initial_ensemble contains NaN"):
        est.assimilate(y, initial_ensemble=np.full((5, 3), np.nan))
    with pytest.raises(ValueError, match="noise_std"):
        EnKF(MODEL, ObservationModel(noise_std=-1.0)).fit(X_train)
    with pytest.raises(ValueError, match="operator gives 3"):
        EnKF(MODEL, OBS).fit(X_train, y_train[:, :2])


@pytest.mark.parametrize("blow", [np.nan, 1e300])
def test_diverging_model_names_the_cycle(rng, blow):
    # NaN states are caught after the forecast; huge finite ones make every likelihood
    # underflow, which is reported too: both name the cycle.
    calls = {"n": 0}

    def blows_up(ens):
        calls["n"] += 1
        return ens * (blow if calls["n"] == 4 else 1.0)

    est = EnKF(FunctionModel(blows_up), ObservationModel(noise_std=1.0), n_members=5)
    est.set_params(random_state=0).fit(rng.normal(size=(20, 2)))
    calls["n"] = 0  # fit calls the model once, to check its shapes
    with pytest.raises(ValueError, match="cycle 3"):
        est.assimilate(rng.normal(size=(10, 2)))


def test_localization_needs_componentwise_operator(rng):
    obs = ObservationModel(lambda x: x.sum(-1, keepdims=True), noise_std=1.0)
    est = EnKF(Lorenz96(n=8), obs, n_members=5, localization_radius=2.0, random_state=0)
    est.fit(Lorenz96(n=8).climatology(50, random_state=0))
    with pytest.raises(ValueError, match="componentwise"):
        est.assimilate(np.zeros((2, 1)))


def test_sir_analysis_is_the_weighted_set_and_resampling_comes_before_the_forecast(twin):
    # Bayes' rule on the forecast particles gives the analysis; resampling (every cycle
    # here) and jitter then happen before the next forecast, from the weighted set.
    X_train, _, _, y = twin
    y = y[:6]
    pf = SIRFilter(MODEL, OBS, n_members=300, ess_threshold=1.0, jitter=0.5, random_state=0)
    ds = pf.fit(X_train).assimilate(y)
    for k in range(6):
        np.testing.assert_array_equal(ds["analysis"][k].values, ds["forecast"][k].values)
        logl = OBS.log_likelihood(y[k], ds["forecast"][k].values)
        prior = np.zeros(300) if k == 0 else np.full(300, -np.log(300))  # resampled
        expected = np.exp(logl + prior - np.max(logl + prior))
        np.testing.assert_allclose(ds["weights"][k], expected / expected.sum(), rtol=1e-10)
        assert ds["resampled"][k] == 1.0
    # the forecast particles are not the analysis particles pushed through the model
    # unchanged: they were resampled (duplicates) and jittered in between
    assert not np.allclose(ds["forecast"][1], MODEL.forecast(ds["analysis"][0].values, 0))
