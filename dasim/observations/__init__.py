"""Observation operators and Gaussian noise.

The contract the estimators rely on (they call nothing else of an observation model):

- ``obs.validate(n_state, states=None)``: check every parameter (and probe a callable
  operator) before any work; returns ``n_obs``.
- ``obs.apply(X)``: the noise-free observation ``h(X)`` (the prediction), vectorised over
  leading axes, numpy or torch.
- ``obs.noise_model(n_obs)``: the observation noise as a :class:`GaussianNoise`
  (whiten, log-density, sample; its Cholesky factor cached).
- ``obs.simulate(X, random_state)`` and ``obs.add_noise(predicted, random_state)``: noisy
  observations.
- ``obs.log_likelihood(y, ensemble)`` and ``obs.log_likelihood_from_predicted(y, predicted)``:
  ``log p(y | x_i)`` per member, NaN entries of ``y`` unobserved.

:class:`GaussianNoise` is the one encoding of Gaussian noise in dasim: a model's
``process_noise``, an observation model's ``noise_std``, the EnKF's perturbed
observations and the likelihoods of the particle and KDE filters all go through it.
"""

from .._noise import GaussianNoise
from ._model import OPERATORS, ObservationModel

__all__ = ["ObservationModel", "GaussianNoise", "OPERATORS"]
