"""Twin experiments: a true trajectory and its simulated observations."""

from __future__ import annotations

import numpy as np

from .models import as_model
from .models._base import _as_generator
from .observations import ObservationModel

__all__ = ["make_twin_experiment"]


def make_twin_experiment(
    model,
    observation,
    n_times,
    random_state=None,
    *,
    initial_state=None,
    process_noise=True,
    missing_every=None,
):
    """Simulate a true trajectory and noisy observations of it.

    Parameters
    ----------
    model : DynamicalModel or callable
        The dynamics (see :mod:`dasim.models`).
    observation : ObservationModel
        The observation operator and noise.
    n_times : int
        Number of assimilation cycles (rows).
    random_state : int, numpy.random.Generator, RandomState or None
        Seed or generator for the initial state, model noise and observation noise.
    initial_state : array-like of shape (n_state,), optional
        The state one cycle before the first row; a climatology draw by default.
    process_noise : bool, default=True
        Whether the truth receives the model's process noise.
    missing_every : int, optional
        If given, only every ``missing_every``-th row is observed; the others are NaN
        (forecast-only cycles).

    Returns
    -------
    X_true : ndarray of shape (n_times, n_state)
        The true states.
    y : ndarray of shape (n_times, n_obs)
        The observations, NaN where not observed.

    Examples
    --------
    >>> from dasim.datasets import make_twin_experiment
    >>> from dasim.models import Lorenz63
    >>> from dasim.observations import ObservationModel
    >>> X, y = make_twin_experiment(Lorenz63(), ObservationModel(noise_std=2.0), 10, 0)
    >>> X.shape, y.shape
    ((10, 3), (10, 3))
    """
    model = as_model(model)
    if not isinstance(observation, ObservationModel):
        raise TypeError(f"observation must be an ObservationModel, got {observation!r}.")
    rng = _as_generator(random_state)
    X = model.simulate(
        n_times, random_state=rng, initial_state=initial_state, process_noise=process_noise
    )
    y = observation.simulate(X, random_state=rng)
    if missing_every is not None:
        if not isinstance(missing_every, int) or missing_every < 1:
            raise ValueError(f"missing_every must be a positive integer, got {missing_every!r}.")
        mask = (1 + np.arange(n_times)) % missing_every != 0
        y[mask] = np.nan
    return X, y
