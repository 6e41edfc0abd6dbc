"""Observation operators and noise models."""

from ._model import OPERATORS, ObservationModel

__all__ = ["ObservationModel", "OPERATORS"]
