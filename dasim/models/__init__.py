"""Dynamical models: Lorenz-63, Lorenz-96, persistence and black-box callables."""

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
