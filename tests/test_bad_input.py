"""Bad input fails early and clearly; a run that fails mid-way keeps what it computed.

Every case asserts the exception type and that the message names the argument (and,
where it matters, what was wrong). The errors come from ``fit`` (scikit-learn
estimators only store their arguments in ``__init__``), before any cycle runs; a model or
observation operator that fails during a run raises an ``AssimilationError`` whose
``partial`` Dataset holds the cycles before the failure.
"""

import pickle

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from dasim.compose import TransformedStateFilter
from dasim.datasets import make_twin_experiment
from dasim.exceptions import AssimilationError
from dasim.filters import EnKF, KDEDiffusionFilter, SIRFilter
from dasim.models import FunctionModel, Lorenz63, Persistence
from dasim.observations import ObservationModel

pytestmark = pytest.mark.filterwarnings("ignore::dasim.exceptions.WeightCollapseWarning")

MODEL = Lorenz63(steps_per_cycle=5, process_noise=0.1)
OBS = ObservationModel(noise_std=1.0)

FILTERS = {
    "EnKF": lambda model=MODEL, obs=OBS, **kw: EnKF(
        model, obs, **{"n_members": 10, "random_state": 0, **kw}
    ),
    "SIRFilter": lambda model=MODEL, obs=OBS, **kw: SIRFilter(
        model, obs, **{"n_members": 30, "jitter": 0.5, "random_state": 0, **kw}
    ),
    "KDEDiffusionFilter": lambda model=MODEL, obs=OBS, **kw: KDEDiffusionFilter(
        model,
        obs,
        **{"n_members": 10, "sampler": "mixture", "device": "numpy", "random_state": 0, **kw},
    ),
}


@pytest.fixture(scope="module")
def twin():
    X, y = make_twin_experiment(MODEL, OBS, 60, random_state=0)
    return X, y


def _rotation(theta=0.1):
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def _walk(n=60, d=2, seed=0):
    rng = np.random.default_rng(seed)
    X = np.cumsum(rng.normal(size=(n, d)), axis=0)
    return X, X + rng.normal(size=X.shape)


# ---------------------------------------------------------------- errors raised by fit
def _nan_at(X, value):
    bad = X.copy()
    bad[3, 1] = value
    return bad


# (id, filter parameters, how to call fit on the twin's X, exception, regex)
FIT_CASES = [
    # Observation model: checked in fit against the state dimension.
    (
        "unknown operator",
        {"obs": ObservationModel("log")},
        None,
        ValueError,
        r"operator='log'.*valid names are 'abs', 'arctan', 'cube', 'identity'",
    ),
    (
        "operator not a name",
        {"obs": ObservationModel(3)},
        None,
        TypeError,
        r"operator must be one of .*'identity'.* or a callable, got 3",
    ),
    (
        "indices out of range",
        {"obs": ObservationModel(indices=[5])},
        None,
        ValueError,
        r"indices \[5\] out of range for 3 components",
    ),
    (
        "noise_std wrong length",
        {"obs": ObservationModel(noise_std=[1.0, 2.0])},
        None,
        ValueError,
        r"noise_std has 2 entries but the dimension is 3",
    ),
    (
        "noise_std negative",
        {"obs": ObservationModel(noise_std=-1.0)},
        None,
        ValueError,
        r"noise_std must be positive",
    ),
    (
        "noise_std nan",
        {"obs": ObservationModel(noise_std=np.nan)},
        None,
        ValueError,
        r"noise_std must be finite",
    ),
    (
        "scale nan",
        {"obs": ObservationModel(scale=np.nan)},
        None,
        ValueError,
        r"scale must be a finite number",
    ),
    # Callable observation operators: probed once on rows of X, contract stated.
    (
        "operator not vectorised (indexes a member)",
        {"obs": ObservationModel(lambda x: x[1], noise_std=1.0)},
        None,
        ValueError,
        r"operator=.*returned shape \(3,\) when called on 2 states of X, an array of shape "
        r"\(2, 3\); expected \(2, n_obs\)\. A callable observation operator must map an array "
        r"of shape \(n_members, n_selected\)",
    ),
    (
        "operator not vectorised (raises)",
        {"obs": ObservationModel(lambda x: np.array([x[0, 0], x[0, 5]]), noise_std=1.0)},
        None,
        ValueError,
        r"operator=.*failed when called on 2 states of X, an array of shape \(2, 3\): "
        r"IndexError.*\(n_members, n_obs\)",
    ),
    (
        "operator returns (N,)",
        {"obs": ObservationModel(lambda x: x.sum(-1), noise_std=1.0)},
        None,
        ValueError,
        r"operator=.*returned shape \(2,\) .*expected \(2, n_obs\)",
    ),
    (
        "operator mixes members",
        {"obs": ObservationModel(lambda x: np.stack([x[0] ** 2, x[1]]), noise_std=1.0)},
        None,
        ValueError,
        r"operator=.*is not applied row by row",
    ),
    (
        "operator returns NaN",
        {"obs": ObservationModel(lambda x: np.log(-np.abs(x) - 1.0), noise_std=1.0)},
        None,
        ValueError,
        r"operator=.*returned non-finite values \(NaN or inf\)",
    ),
    # Model: parameters and shapes checked in fit.
    (
        "process_noise negative",
        {"model": Lorenz63(process_noise=-1.0)},
        None,
        ValueError,
        r"process_noise must be non-negative",
    ),
    (
        "process_noise negative (FunctionModel)",
        {"model": FunctionModel(lambda x: x, process_noise=-1.0)},
        None,
        ValueError,
        r"process_noise must be non-negative",
    ),
    (
        "process_noise wrong length",
        {"model": FunctionModel(lambda x: x, process_noise=[0.1, 0.2])},
        None,
        ValueError,
        r"process_noise has 2 entries but the state has 3",
    ),
    ("dt negative", {"model": Lorenz63(dt=-0.01)}, None, ValueError, r"dt must be positive"),
    (
        "func not callable",
        {"model": FunctionModel(None)},
        None,
        TypeError,
        r"func must be callable",
    ),
    (
        "model not vectorised",
        {"model": FunctionModel(lambda x: x[0])},
        None,
        ValueError,
        r"model=FunctionModel\(func=.*\) failed when called on 2 states of X, an array of "
        r"shape \(2, 3\).*must map an ensemble of shape \(n_members, n_state\)",
    ),
    (
        "model returns wrong shape (callable)",
        {"model": lambda x: x[:, :2]},
        None,
        ValueError,
        r"model=FunctionModel\(func=.*\) .*shape \(2, 3\)",
    ),
    # X itself.
    (
        "X with NaN",
        {},
        lambda X: _nan_at(X, np.nan),
        ValueError,
        r"^X contains NaN \(at index \(3, 1\).*states must be finite",
    ),
    (
        "X with inf",
        {},
        lambda X: _nan_at(X, np.inf),
        ValueError,
        r"^X contains inf \(at index \(3, 1\).*states must be finite",
    ),
    (
        "X transposed, model with n_state",
        {},
        lambda X: X.T,
        ValueError,
        r"X has 60 state components but the model Lorenz63 has n_state=3: X must have "
        r"shape \(n_times, 3\), got \(3, 60\).*transposed",
    ),
    (
        "X with a wrong width",
        {},
        lambda X: X[:, :2],
        ValueError,
        r"X has 2 state components.*n_state=3",
    ),
    ("X one row", {}, lambda X: X[:1], ValueError, r"X.*1 sample"),
    ("X 3-D", {}, lambda X: X[None], ValueError, r"^X: Found array with dim 3"),
    # The filters' own parameters.
    ("n_members zero", {"n_members": 0}, None, ValueError, r"n_members must be at least 2"),
    ("n_members one", {"n_members": 1}, None, ValueError, r"n_members must be at least 2"),
    ("n_members negative", {"n_members": -4}, None, ValueError, r"n_members must be at least 2"),
    ("n_members float", {"n_members": 2.5}, None, TypeError, r"n_members must be an integer"),
    ("n_members str", {"n_members": "ten"}, None, TypeError, r"n_members must be an integer"),
    ("random_state float", {"random_state": 1.5}, None, TypeError, r"random_state must be"),
    ("model not a model", {"model": "lorenz"}, None, TypeError, r"model must be"),
    (
        "observation not a model",
        {"obs": "identity"},
        None,
        TypeError,
        r"observation must be an ObservationModel",
    ),
]

# Parameters of one filter only: (filter, parameters, exception, regex).
OWN_CASES = [
    ("EnKF", {"inflation": 0.5}, ValueError, r"inflation must be at least 1"),
    ("EnKF", {"inflation": 0.0}, ValueError, r"inflation must be positive"),
    ("EnKF", {"inflation": np.nan}, ValueError, r"inflation must be finite"),
    (
        "EnKF",
        {"inflation": "big"},
        ValueError,
        r"inflation must be a float of at least 1, 'finite-size'",
    ),
    ("EnKF", {"inflation": [1.1]}, ValueError, r"inflation must be a float of at least 1"),
    ("EnKF", {"variant": "etkf"}, ValueError, r"variant must be 'sqrt' or 'stochastic'"),
    ("EnKF", {"localization_radius": 0.0}, ValueError, r"localization_radius must be positive"),
    ("EnKF", {"localization_radius": -2.0}, ValueError, r"localization_radius must be positive"),
    ("EnKF", {"rotate": "yes"}, TypeError, r"rotate must be a bool"),
    (
        "SIRFilter",
        {"resampling": "best"},
        ValueError,
        r"resampling must be one of \('systematic', 'stratified', 'residual', 'multinomial'\)",
    ),
    ("SIRFilter", {"ess_threshold": 1.5}, ValueError, r"ess_threshold must be in \[0, 1\]"),
    ("SIRFilter", {"ess_threshold": -0.1}, ValueError, r"ess_threshold must be in \[0, 1\]"),
    ("SIRFilter", {"jitter": -1.0}, ValueError, r"jitter must be non-negative"),
    ("KDEDiffusionFilter", {"bandwidth_x": 0.0}, ValueError, r"bandwidth_x must be positive"),
    ("KDEDiffusionFilter", {"bandwidth_x": -1.0}, ValueError, r"bandwidth_x must be positive"),
    ("KDEDiffusionFilter", {"bandwidth_y": 0.0}, ValueError, r"bandwidth_y must be positive"),
    (
        "KDEDiffusionFilter",
        {"bandwidth_x": "wide"},
        ValueError,
        r"bandwidth_x must be a positive float, one of \('scott', 'silverman'\)",
    ),
    (
        "KDEDiffusionFilter",
        {"bandwidth_y": ("scott", 0.0)},
        ValueError,
        r"bandwidth_y's factor must be a positive number",
    ),
    (
        "KDEDiffusionFilter",
        {"sampler": "euler"},
        ValueError,
        r"sampler must be one of \('ode', 'sde', 'mixture'\)",
    ),
    (
        "KDEDiffusionFilter",
        {"schedule": "cosine"},
        ValueError,
        r"schedule must be one of \('ve', 'vp', 'vp-early-stop'\)",
    ),
    (
        "KDEDiffusionFilter",
        {"likelihood": "exact"},
        ValueError,
        r"likelihood must be one of \('simulated', 'known'\)",
    ),
    ("KDEDiffusionFilter", {"sigma_max": 0.0}, ValueError, r"sigma_max must be positive"),
    ("KDEDiffusionFilter", {"n_steps": 0}, ValueError, r"n_steps must be a positive integer"),
    (
        "KDEDiffusionFilter",
        {"device": "mps"},
        ValueError,
        r"device='mps': device type 'mps' is not supported",
    ),
    (
        "KDEDiffusionFilter",
        {"device": "tpu0"},
        ValueError,
        r"device='tpu0' is not a torch device name",
    ),
    ("KDEDiffusionFilter", {"device": 0}, TypeError, r"device must be a string"),
]


def _has_cuda():
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.parametrize("name", sorted(FILTERS))
@pytest.mark.parametrize(
    "params, make_X, exc, match", [c[1:] for c in FIT_CASES], ids=[c[0] for c in FIT_CASES]
)
def test_fit_rejects_bad_input(name, params, make_X, exc, match, twin):
    X, _ = twin
    est = FILTERS[name](**params)
    with pytest.raises(exc, match=match) as info:
        est.fit(X if make_X is None else make_X(X))
    assert "HistGradientBoosting" not in str(info.value)


@pytest.mark.parametrize(
    "name, params, exc, match", OWN_CASES, ids=[f"{c[0]}-{c[1]}" for c in OWN_CASES]
)
def test_fit_rejects_bad_parameters(name, params, exc, match, twin):
    X, _ = twin
    if params.get("device") in ("mps", "tpu0"):
        pytest.importorskip("torch")
    with pytest.raises(exc, match=match):
        FILTERS[name](**params).fit(X)


@pytest.mark.skipif(_has_cuda(), reason="CUDA is available here")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_unavailable_cuda_is_refused_by_fit(device, twin):
    pytest.importorskip("torch")
    with pytest.raises(ValueError, match=rf"device='{device}' but CUDA is not available"):
        FILTERS["KDEDiffusionFilter"](device=device).fit(twin[0])


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_transposed_X_is_caught_for_a_model_without_n_state(name):
    # The issue's case: a 2-state black-box model, X given as (2, 60).
    A = _rotation()
    calls = []

    def rotate(x):
        calls.append(x.shape)
        return x @ A.T

    X, _ = _walk()
    est = FILTERS[name](model=FunctionModel(rotate, process_noise=0.1))
    with pytest.raises(ValueError, match=r"model=FunctionModel\(func=.*rotate\) failed") as info:
        est.fit(X.T)
    assert "an array of shape (2, 60)" in str(info.value)
    assert "X has shape (2, 60): is it transposed?" in str(info.value)
    assert calls == [(2, 60)]  # one probe in fit; no cycle ran


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_errors_come_before_any_cycle(name, twin):
    # A bad observation model is reported by fit; the model never sees an ensemble.
    X, _ = twin
    calls = []

    def model(x):
        calls.append(x.shape[0])
        return MODEL._propagate(x)

    bad = ObservationModel(lambda x: x[0], noise_std=1.0)
    est = FILTERS[name](model=FunctionModel(model), obs=bad)
    with pytest.raises(ValueError, match="observation operator"):
        est.fit(X)
    assert all(n < est.n_members for n in calls)  # at most fit's small probe


def test_y_and_initial_ensemble_are_checked_with_shapes(twin):
    X, y = twin
    est = FILTERS["EnKF"]().fit(X)
    with pytest.raises(ValueError, match=r"y has 2 columns \(shape \(60, 2\)\) .*gives 3"):
        est.assimilate(y[:, :2])
    with pytest.raises(ValueError, match=r"y has 2 columns \(shape \(60, 2\)\) .*gives 3"):
        FILTERS["EnKF"]().fit(X, y[:, :2])
    with pytest.raises(ValueError, match=r"X and y must have the same number of rows"):
        FILTERS["EnKF"]().fit(X, y[:-1])
    with pytest.raises(ValueError, match=r"initial_ensemble has 2 state components"):
        est.assimilate(y, initial_ensemble=np.zeros((10, 2)))
    with pytest.raises(ValueError, match=r"initial_ensemble's number of members"):
        est.assimilate(y, initial_ensemble=np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"y contains inf"):
        est.assimilate(np.where(np.isnan(y), np.inf, y) + np.inf)
    with pytest.raises(TypeError, match=r"keep_forecast must be a bool"):
        est.assimilate(y, keep_forecast="no")
    with pytest.raises(TypeError, match=r"progress must be a bool"):
        est.assimilate(y, progress=1)
    with pytest.raises(ValueError, match=r"^X contains NaN"):
        est.score(_nan_at(X, np.nan), y)


def test_observation_model_names_are_checked_outside_the_filters():
    with pytest.raises(ValueError, match=r"operator='log'.*valid names"):
        ObservationModel("log").simulate(np.ones((2, 3)), random_state=0)
    with pytest.raises(ValueError, match=r"operator='log'.*valid names"):
        ObservationModel("log").n_obs(3)
    with pytest.raises(ValueError, match=r"operator='log'.*valid names"):
        make_twin_experiment(MODEL, ObservationModel("log"), 5, random_state=0)


def test_transposed_X_is_named_when_only_the_observation_can_tell():
    # model=None learns a persistence model of any width; the noise vector gives X.T away.
    X, y = _walk()
    est = EnKF(None, ObservationModel(noise_std=[1.0, 1.0]), n_members=5)
    with pytest.raises(ValueError, match=r"noise_std has 2 entries.*\(2, 60\): is it transposed"):
        est.fit(X.T)
    with pytest.raises(ValueError, match=r"same number of rows.*is it transposed"):
        EnKF(None, None, n_members=5).fit(X.T, y)


def test_transformed_state_filter_checks_the_observation_in_physical_units(twin):
    X, _ = twin
    model = FunctionModel(lambda x: x, process_noise=[0.1, 0.2])
    with pytest.raises(ValueError, match=r"process_noise has 2 entries but the state has 3"):
        TransformedStateFilter(FILTERS["EnKF"](model=model)).fit(X)
    with pytest.raises(ValueError, match=r"operator='log'.*valid names"):
        TransformedStateFilter(FILTERS["EnKF"](obs=ObservationModel("log"))).fit(X)
    bad = ObservationModel(lambda x: x[1], noise_std=1.0)
    with pytest.raises(ValueError, match=r"returned shape \(3,\) when called on 2 states of X"):
        TransformedStateFilter(FILTERS["EnKF"](obs=bad)).fit(X)


# ---------------------------------------------------------------- the learned assimilators
def _assimilator_cases():
    return [
        ("SDAAssimilator", {"window": 0}, ValueError, r"window must be an integer >= 1, got 0"),
        ("SOADAssimilator", {"window": 0}, ValueError, r"window must be an integer >= 1"),
        ("SDAAssimilator", {"window": -1}, ValueError, r"window must be an integer >= 1"),
        ("SDAAssimilator", {"n_members": 0}, ValueError, r"n_members must be an integer >= 1"),
        ("SDAAssimilator", {"n_epochs": 0}, ValueError, r"n_epochs must be an integer >= 1"),
        ("SDAAssimilator", {"n_steps": 2.5}, ValueError, r"n_steps must be an integer >= 1"),
        ("SDAAssimilator", {"gamma": -1.0}, ValueError, r"gamma must be finite and >= 0"),
        (
            "SDAAssimilator",
            {"device": "mps"},
            ValueError,
            r"device='mps' but the Apple MPS backend is not available",
        ),
        (
            "SDAAssimilator",
            {"device": "numpy"},
            ValueError,
            r"device='numpy' is for KDEDiffusionFilter only",
        ),
        (
            "SOADAssimilator",
            {"device": "tpu0"},
            ValueError,
            r"device='tpu0' is not a torch device name",
        ),
        (
            "SOADAssimilator",
            {"observation": ObservationModel("log", 0.5)},
            ValueError,
            r"operator='log'.*valid names",
        ),
        (
            "SOADAssimilator",
            {"observation": ObservationModel(lambda x: x[0], 0.5)},
            ValueError,
            r"operator=.*returned shape \(3, 2\) when called on 6 states of X "
            r"arranged as \(2, 3\), an array of shape \(2, 3, 2\)",
        ),
        (
            "SDAAssimilator",
            {"observation": ObservationModel(indices=[4])},
            ValueError,
            r"indices \[4\] out of range for 2 components",
        ),
        (
            "SDAAssimilator",
            {"observation": ObservationModel(lambda x: np.sin(x), 0.5)},
            TypeError,
            r"SDAAssimilator differentiates the observation operator.*torch "
            r"operations.*SOADAssimilator",
        ),
    ]


ASSIMILATOR_CASES = _assimilator_cases()
TINY = dict(n_members=4, n_epochs=1, width=8, depth=1, n_steps=4, progress=False)


@pytest.mark.parametrize(
    "name, params, exc, match",
    ASSIMILATOR_CASES,
    ids=[f"{c[0]}-{sorted(c[1])[0]}-{i}" for i, c in enumerate(ASSIMILATOR_CASES)],
)
def test_assimilators_reject_bad_input_in_fit(name, params, exc, match):
    pytest.importorskip("torch")
    from dasim import assimilators

    if name == "SDAAssimilator" and params.get("device") == "mps":
        import torch

        if torch.backends.mps.is_available():
            pytest.skip("MPS is available here")
    X, _ = _walk(n=30)
    kwargs = {"observation": ObservationModel(noise_std=0.5), **TINY, **params}
    est = getattr(assimilators, name)(**kwargs)
    with pytest.raises(exc, match=match):
        est.fit(X)
    assert not hasattr(est, "score_net_")  # no training happened


def test_assimilators_report_nan_in_X_in_dasim_words():
    pytest.importorskip("torch")
    from dasim.assimilators import SDAAssimilator

    X, _ = _walk(n=30)
    est = SDAAssimilator(ObservationModel(noise_std=0.5), **TINY)
    for bad in (_nan_at(X, np.nan), _nan_at(X, np.nan)[None]):
        with pytest.raises(ValueError, match=r"^X contains NaN.*states must be finite"):
            est.fit(bad)


def test_sda_accepts_a_torch_operator_and_soad_a_numpy_one():
    torch = pytest.importorskip("torch")
    from dasim.assimilators import SDAAssimilator, SOADAssimilator

    X, _ = _walk(n=30)

    def cube(x):  # numpy in, numpy out; torch in, torch out
        return x**3 if isinstance(x, np.ndarray) else torch.pow(x, 3)

    SDAAssimilator(ObservationModel(cube, 0.5), **TINY, random_state=0).fit(X)
    SOADAssimilator(ObservationModel(lambda x: np.sin(x), 0.5), **TINY, random_state=0).fit(X)


# ---------------------------------------------------------------- partial results
def _blowing_model(start, *, value=np.nan, raise_instead=False):
    """A rotation that goes bad from its ``start``-th call (counted from ``reset``)."""
    A = _rotation()
    state = {"n": 0}

    def f(x):
        state["n"] += 1
        if state["n"] >= start:
            if raise_instead:
                raise RuntimeError("the solver diverged")
            return x @ A.T * value
        return x @ A.T

    def reset():
        state["n"] = 0

    return FunctionModel(f, process_noise=0.1), reset


def _clean_model():
    A = _rotation()
    return FunctionModel(lambda x: x @ A.T, process_noise=0.1)


OBS2 = ObservationModel(noise_std=1.0)


@pytest.mark.parametrize("name", sorted(FILTERS))
@pytest.mark.parametrize("keep_forecast", [True, False])
def test_model_failure_keeps_the_good_cycles(name, keep_forecast):
    X, y = _walk()
    model, reset = _blowing_model(5)
    est = FILTERS[name](model=model, obs=OBS2, random_state=3).fit(X)
    reset()  # fit called the model once, to check its shapes
    with pytest.raises(
        AssimilationError, match=r"Forecast failed at cycle 4: .*non-finite"
    ) as info:
        est.assimilate(y[:12], keep_forecast=keep_forecast)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.cycle == 4
    assert "the 4 cycle(s) before it are kept" in str(err)
    partial = err.partial
    assert isinstance(partial, xr.Dataset)
    assert partial.sizes["time"] == 4
    ref = FILTERS[name](model=_clean_model(), obs=OBS2, random_state=3).fit(X)
    full = ref.assimilate(y[:12], keep_forecast=keep_forecast)
    assert set(partial.data_vars) == set(full.data_vars)
    assert set(partial.attrs) == set(full.attrs)
    xr.testing.assert_allclose(partial, full.isel(time=slice(0, 4)), rtol=1e-12, atol=0)


def test_model_raising_mid_run_keeps_the_good_cycles_and_the_cause():
    X, y = _walk()
    model, reset = _blowing_model(7, raise_instead=True)
    est = FILTERS["EnKF"](model=model, obs=OBS2).fit(X)
    reset()
    with pytest.raises(AssimilationError, match=r"cycle 6: RuntimeError: the solver") as info:
        est.assimilate(y[:10])
    assert isinstance(info.value.__cause__, RuntimeError)
    assert info.value.partial.sizes["time"] == 6


def test_failure_at_the_first_cycle_gives_an_empty_partial():
    X, y = _walk()
    model, reset = _blowing_model(1, value=np.inf)
    est = FILTERS["SIRFilter"](model=model, obs=OBS2).fit(X)
    reset()
    with pytest.raises(AssimilationError, match=r"cycle 0") as info:
        est.assimilate(y[:5])
    assert info.value.cycle == 0
    assert info.value.partial.sizes["time"] == 0
    assert info.value.partial["analysis"].shape == (0, 30, 2)


@pytest.mark.parametrize("failure", ["raises", "nan"])
def test_observation_operator_failing_mid_run_keeps_the_good_cycles(failure):
    X, y = _walk()
    state = {"n": 0, "armed": False}

    def h(x):
        if state["armed"]:
            state["n"] += 1
            if state["n"] >= 3:
                if failure == "raises":
                    raise FloatingPointError("table lookup out of range")
                return np.full(x.shape, np.nan)
        return x

    est = FILTERS["EnKF"](model=_clean_model(), obs=ObservationModel(h, 1.0)).fit(X)
    state["armed"] = True
    match = (
        r"observation operator failed at cycle 2: FloatingPointError"
        if failure == "raises"
        else r"observation operator returned non-finite values at cycle 2"
    )
    with pytest.raises(AssimilationError, match=match) as info:
        est.assimilate(y[:8])
    assert info.value.partial.sizes["time"] == 2
    ref = FILTERS["EnKF"](model=_clean_model(), obs=ObservationModel(lambda x: x, 1.0)).fit(X)
    xr.testing.assert_allclose(
        info.value.partial, ref.assimilate(y[:8]).isel(time=slice(0, 2)), rtol=1e-12, atol=0
    )


def test_partial_result_keeps_the_time_coordinate():
    X, y = _walk()
    model, reset = _blowing_model(4)
    est = FILTERS["EnKF"](model=model, obs=OBS2).fit(X)
    reset()
    index = pd.date_range("2024-01-01", periods=10, freq="6h")
    with pytest.raises(AssimilationError) as info:
        est.assimilate(pd.DataFrame(y[:10], index=index))
    np.testing.assert_array_equal(info.value.partial["time"].values, index[:3].values)


def test_transformed_state_filter_partial_is_in_physical_units():
    X, y = _walk()
    model, reset = _blowing_model(5)
    est = TransformedStateFilter(FILTERS["EnKF"](model=model, obs=OBS2)).fit(X)
    reset()
    with pytest.raises(AssimilationError) as info:
        est.assimilate(y[:10])
    ref = TransformedStateFilter(FILTERS["EnKF"](model=_clean_model(), obs=OBS2)).fit(X)
    full = ref.assimilate(y[:10])
    xr.testing.assert_allclose(info.value.partial, full.isel(time=slice(0, 4)), rtol=1e-12)


def test_assimilation_error_pickles_with_its_cycle():
    err = AssimilationError("failed at cycle 3", cycle=3)
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, AssimilationError) and back.cycle == 3
    assert str(back) == "failed at cycle 3"


def test_persistence_default_model_is_not_probed_into_failure(twin):
    # model=None learns a persistence model; its fit needs no probe and works on any width.
    X, _ = twin
    est = EnKF(None, OBS, n_members=5, random_state=0).fit(X)
    assert isinstance(est.model_, Persistence)
