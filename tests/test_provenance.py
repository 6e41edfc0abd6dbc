"""Results record how they were made: the ``attrs`` of every Dataset ``assimilate`` returns.

The seed actually used (and that it repeats the run), the resolved device and parameters,
the dasim version, callables by qualified name; every value storable in netCDF and free of
memory addresses.
"""

import functools
import importlib.util

import numpy as np
import pytest
import xarray as xr

import dasim
from dasim._provenance import attr_value, describe
from dasim.compose import TransformedStateFilter
from dasim.datasets import make_twin_experiment
from dasim.filters import EnKF, KDEDiffusionFilter, SIRFilter
from dasim.models import FunctionModel, Lorenz63
from dasim.observations import ObservationModel

pytestmark = pytest.mark.filterwarnings("ignore::dasim.exceptions.WeightCollapseWarning")

MODEL = Lorenz63(steps_per_cycle=5, process_noise=0.2)
OBS = ObservationModel("identity", noise_std=1.0)

FILTERS = {
    "EnKF": lambda **kw: EnKF(MODEL, OBS, n_members=8, **kw),
    "SIRFilter": lambda **kw: SIRFilter(MODEL, OBS, n_members=40, **kw),
    "KDEDiffusionFilter": lambda **kw: KDEDiffusionFilter(
        MODEL, OBS, n_members=20, sampler="mixture", bandwidth_y=2.0, **kw
    ),
}


@pytest.fixture(scope="module")
def twin():
    X, y = make_twin_experiment(MODEL, OBS, 12, random_state=0)
    return X, y


def _observe_first_two(x):
    return x[..., :2]


class _Scaled:
    """A callable object without a repr of its own (its default repr has an address)."""

    def __init__(self, factor):
        self.factor = factor

    def apply(self, x):
        return self.factor * x[..., :2]


def torch_cuda_index():
    import torch

    return torch.cuda.current_device()


def _no_address(attrs):
    bad = {k: v for k, v in attrs.items() if "0x" in str(v)}
    assert not bad, f"attrs with a memory address: {bad}"


def _netcdf_round_trip(ds, path):
    ds.to_netcdf(path, engine="netcdf4")
    with xr.open_dataset(path, engine="netcdf4") as back:
        attrs = dict(back.attrs)
    assert set(attrs) == set(ds.attrs)
    for key, value in ds.attrs.items():
        assert attrs[key] == value, key
    return attrs


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_seed_passed_to_assimilate_is_recorded_and_repeats_the_run(name, twin):
    X, y = twin
    est = FILTERS[name](random_state=0).fit(X)
    ds = est.assimilate(y, random_state=5)
    assert ds.attrs["random_state"] == 5
    assert "passed to assimilate" in ds.attrs["seed_source"]
    again = est.assimilate(y, random_state=ds.attrs["random_state"])
    np.testing.assert_allclose(again["analysis"].values, ds["analysis"].values, rtol=1e-12)
    own = est.assimilate(y)
    assert own.attrs["random_state"] == 0
    assert "estimator's random_state" in own.attrs["seed_source"]


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_seed_drawn_for_random_state_none_repeats_the_run(name, twin):
    X, y = twin
    est = FILTERS[name]().fit(X)
    saved = np.random.get_state()  # noqa: NPY002 - the global state is what None means
    try:
        np.random.seed(3)  # noqa: NPY002
        first = est.assimilate(y)
        seed = first.attrs["random_state"]
        np.random.seed(3)  # noqa: NPY002 - None is numpy's global RandomState, as in sklearn
        assert est.assimilate(y).attrs["random_state"] == seed
    finally:
        np.random.set_state(saved)  # noqa: NPY002
    assert isinstance(seed, int) and 0 <= seed < 2**31
    assert "global RandomState" in first.attrs["seed_source"]
    again = est.assimilate(y, random_state=seed)
    np.testing.assert_allclose(again["analysis"].values, first["analysis"].values, rtol=1e-12)


def test_random_state_objects_give_up_one_seed(twin):
    X, y = twin
    est = EnKF(MODEL, OBS, n_members=8).fit(X)
    for rs in (np.random.RandomState(1), np.random.default_rng(1)):
        ds = est.assimilate(y, random_state=rs)
        assert f"{type(rs).__name__} given as the random_state passed" in ds.attrs["seed_source"]
        again = est.assimilate(y, random_state=ds.attrs["random_state"])
        np.testing.assert_allclose(again["analysis"].values, ds["analysis"].values, rtol=1e-12)
    # a RandomState as the constructor's random_state keeps its old stream
    legacy = EnKF(MODEL, OBS, n_members=8, random_state=np.random.RandomState(2)).fit(X)
    seed = np.random.RandomState(2).randint(0, 2**31 - 1)
    assert legacy.assimilate(y).attrs["random_state"] == seed


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_attrs_round_trip_netcdf_without_addresses(name, twin, tmp_path):
    X, y = twin
    y = y.copy()
    y[4] = np.nan
    est = FILTERS[name](random_state=1).fit(X)
    ds = est.assimilate(y)
    _no_address(ds.attrs)
    assert ds.attrs["estimator"] == name
    assert ds.attrs["dasim_version"] == dasim.__version__
    assert ds.attrs["numpy_version"] == np.__version__
    assert ds.attrs["model"] == "Lorenz63(process_noise=0.2, steps_per_cycle=5)"
    assert ds.attrs["observation"] == "ObservationModel()"
    assert ds.attrs["device"] != "auto"
    assert all(isinstance(v, str | int | float) for v in ds.attrs.values())
    _netcdf_round_trip(ds, tmp_path / "run.nc")


def test_kde_device_is_the_resolved_one(twin):
    X, y = twin
    est = FILTERS["KDEDiffusionFilter"](random_state=0).set_params(device="auto").fit(X)
    ds = est.assimilate(y)
    expected = est.device_ if est.device_ != "cuda" else f"cuda:{torch_cuda_index()}"
    assert ds.attrs["device"] == expected
    assert ds.attrs["device"] != "auto" and ds.attrs["device_requested"] == "auto"
    numpy = FILTERS["KDEDiffusionFilter"](random_state=0).set_params(device="numpy").fit(X)
    attrs = numpy.assimilate(y).attrs
    assert attrs["device"] == "numpy" and "device_requested" not in attrs
    assert EnKF(MODEL, OBS, n_members=8).fit(X).assimilate(y).attrs["device"] == "numpy"


def test_learned_parameters_and_run_sizes_are_recorded(twin, tmp_path):
    X, y = twin
    est = SIRFilter(n_members=30, random_state=0).fit(X, y)  # model and noise learned
    init = est.sample(12, random_state=1)
    ds = est.assimilate(y, initial_ensemble=init)
    assert ds.attrs["model_requested"] == "None"
    assert ds.attrs["model"].startswith("Persistence(process_noise=array([")
    noise = est.model_.process_noise
    assert ds.attrs["model"] == f"Persistence(process_noise=array({noise.tolist()!r}))"
    assert ds.attrs["observation_requested"] == "None"
    assert "noise_std=array([" in ds.attrs["observation"]
    assert ds.attrs["n_members"] == 12 and ds.attrs["n_members_requested"] == 30
    assert ds.attrs["initial_ensemble"] == "given"
    _no_address(ds.attrs)
    _netcdf_round_trip(ds, tmp_path / "learned.nc")


def test_callables_are_recorded_by_qualified_name(twin, tmp_path):
    X, y = twin
    scaled = _Scaled(2.0)
    observations = {
        "function": (_observe_first_two, f"{__name__}._observe_first_two"),
        "lambda": (
            lambda x: x[..., :2],
            f"{__name__}.test_callables_are_recorded_by_qualified_name.<locals>.<lambda>",
        ),
        "partial": (
            functools.partial(np.take, indices=[0, 1], axis=-1),
            "functools.partial(numpy.take, indices=[0, 1], axis=-1)",
        ),
        "bound method": (scaled.apply, "_Scaled(factor=2.0).apply"),
    }
    for key, (operator, text) in observations.items():
        obs = ObservationModel(operator, noise_std=1.0)
        model = FunctionModel(np.sin, process_noise=0.5)
        est = EnKF(model, obs, n_members=8, random_state=0).fit(X)
        ds = est.assimilate(y[:, :2])
        assert ds.attrs["observation"] == f"ObservationModel(operator={text})", key
        assert ds.attrs["model"] == "FunctionModel(func=numpy.sin, process_noise=0.5)"
        _no_address(ds.attrs)
        _netcdf_round_trip(ds, tmp_path / "callable.nc")


def test_transformed_state_filter_records_its_pieces(twin, tmp_path):
    X, y = twin
    est = TransformedStateFilter(SIRFilter(MODEL, OBS, n_members=30, random_state=0)).fit(X, y)
    ds = est.assimilate(y, random_state=4)
    assert ds.attrs["meta_estimator"] == "TransformedStateFilter"
    assert ds.attrs["transformer"] == "StandardScaler()"
    assert ds.attrs["random_state"] == 4
    assert "Lorenz63(process_noise=0.2, steps_per_cycle=5)" in ds.attrs["model"]
    _no_address(ds.attrs)
    _netcdf_round_trip(ds, tmp_path / "transformed.nc")


def test_describe_and_attr_value():
    assert attr_value(None) == "None" and attr_value(np.True_) == "True"
    assert attr_value(np.int64(3)) == 3 and type(attr_value(np.int64(3))) is int
    assert attr_value(np.float32(0.5)) == 0.5 and type(attr_value(np.float32(0.5))) is float
    # arrays at full precision: the text gives back the exact numbers
    values = np.array([0.1, 1 / 3, 1e-17])
    text = describe(values)
    assert np.array_equal(np.array(eval(text.removeprefix("array"))), values)
    assert describe(("scott", 0.5)) == "('scott', 0.5)" and describe((1,)) == "(1,)"
    assert describe({"a": [1, None]}) == "{'a': [1, None]}"
    assert describe(np.random.default_rng(0)) == "<numpy.random._generator.Generator object>"
    assert describe(object()) == "<object object>"
    assert describe(EnKF) == "dasim.filters.enkf.EnKF"
    assert describe(np.zeros(10**5)) == "<array of shape (100000,) and dtype float64>"


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
@pytest.mark.parametrize("name", ["SDAAssimilator", "SOADAssimilator"])
def test_learned_assimilators_record_seed_device_and_training_seed(name, tmp_path):
    import torch

    from dasim import assimilators

    rng = np.random.default_rng(0)
    X = np.cumsum(rng.standard_normal((40, 2)), axis=0) * 0.3
    obs = ObservationModel("identity", noise_std=0.5, indices=[0])
    y = obs.simulate(X[:9], random_state=1)
    est = getattr(assimilators, name)(
        obs,
        n_members=3,
        n_epochs=1,
        epoch_size=32,
        width=8,
        depth=1,
        n_steps=2,
        progress=False,
        device="auto",
        random_state=None,
    )
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        est.fit(X)
        ds = est.assimilate(y, random_state=7, n_members=2)
        again = est.assimilate(y, random_state=ds.attrs["random_state"], n_members=2)
    finally:
        torch.set_num_threads(previous)
    assert ds.attrs["random_state"] == 7 and "passed to assimilate" in ds.attrs["seed_source"]
    assert isinstance(ds.attrs["training_seed"], int)
    assert ds.attrs["training_seed"] == est.training_seed_
    assert ds.attrs["device"] in ("cpu",) or ds.attrs["device"].startswith("cuda:")
    assert ds.attrs["device_requested"] == "auto"
    assert ds.attrs["n_members"] == 2 and ds.attrs["n_members_requested"] == 3
    assert ds.attrs["torch_version"] == torch.__version__
    np.testing.assert_allclose(again["analysis"].values, ds["analysis"].values, rtol=1e-6)
    _no_address(ds.attrs)
    _netcdf_round_trip(ds, tmp_path / "learned.nc")
