"""Dynamical models: Lorenz-63, Lorenz-96, persistence and black-box callables.

The contract the estimators rely on (they call nothing else of a model):

- ``model.validate(n_state=None)``: check every parameter (``process_noise`` against
  the state dimension when given) before any work.
- ``model.forecast(ensemble, random_state, *, time=None, check_input=True)``: one
  cycle of a whole ensemble ``(n_members, n_state)`` with model noise; the filters'
  cycle loop passes ``check_input=False`` after :meth:`~DynamicalModel.validate`.
- ``model.propagate(ensemble, *, time=None)``: one noise-free cycle, unchecked (the
  mean of the transition density, for the particle smoother).
- ``model.noise_model(n_state)``: the model noise per cycle as a
  :class:`~dasim.observations.GaussianNoise`, or ``None``.
- ``model.simulate(n_times, random_state)`` and ``model.climatology(n, random_state)``:
  a true trajectory, and draws from the model's climatology.

A new model subclasses :class:`DynamicalModel` (or :class:`ODEModel`) and implements
``_propagate`` (and ``_initial_guess`` where it has a climatology).
"""

from ._base import DynamicalModel, FunctionModel, ODEModel, Persistence, as_model, rk4_step
from .lorenz import Lorenz63, Lorenz96

__all__ = [
    "DynamicalModel",
    "ODEModel",
    "Persistence",
    "FunctionModel",
    "Lorenz63",
    "Lorenz96",
    "as_model",
    "rk4_step",
]
