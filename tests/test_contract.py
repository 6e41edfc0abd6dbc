"""The public contract between the estimators and models / observation models."""

import numpy as np

from dasim.models import Lorenz96, Persistence
from dasim.observations import GaussianNoise, ObservationModel


def test_forecast_without_checks_is_the_checked_forecast():
    model = Lorenz96(n=8, process_noise=0.1)
    x = model.climatology(5, random_state=0)
    checked = model.forecast(x, np.random.default_rng(1), time=0)
    fast = model.validate(8).forecast(x, np.random.default_rng(1), time=0, check_input=False)
    np.testing.assert_array_equal(checked, fast)
    np.testing.assert_array_equal(model.propagate(x), model._propagate(x))


def test_noise_model_follows_the_parameter():
    model = Persistence(process_noise=np.array([0.1, 0.2]))
    assert model.noise_model(2).std.tolist() == [0.1, 0.2]
    model.process_noise[0] = 0.5  # changed in place: the cache sees it
    assert model.noise_model(2).std.tolist() == [0.5, 0.2]
    assert Persistence(process_noise=0.0).noise_model(2) is None

    obs = ObservationModel(noise_std=2.0)
    assert isinstance(obs.noise_model(3), GaussianNoise)
    obs.set_params(noise_std=np.diag([1.0, 4.0]))
    np.testing.assert_array_equal(obs.noise_model(2).std, [1.0, 2.0])
    assert obs.validate(2) == 2
