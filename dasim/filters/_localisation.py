"""Localisation shared by the localised filters: locations, tapers, the ``fit`` check.

A filter that mixes this in has the parameters ``localization_radius``, ``periodic`` and
``state_coordinates`` (documented by each filter) and gets, after ``fit``, the
attributes ``state_coordinates_`` and ``observation_coordinates_``; :meth:`_tapers`
builds the Gaspari-Cohn tapers between state components and observations for a run.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .._shared_doc import fill_shared_doc
from ..coordinates import _filter_locations, localization_weights

__all__ = []


@fill_shared_doc
class LocalisedMixin:
    """``fit`` and tapers of a filter with ``localization_radius`` (a private mixin)."""

    def _check_localisation(self, allow_infinite=False):
        rad = self.localization_radius
        if rad is not None:
            if isinstance(rad, bool) or not isinstance(rad, numbers.Real):
                raise TypeError(f"localization_radius must be a real number, got {rad!r}.")
            ok = rad > 0 and (math.isfinite(rad) or (allow_infinite and rad == math.inf))
            if not ok:
                extra = " (or inf)" if allow_infinite else ""
                raise ValueError(
                    f"localization_radius must be positive and finite{extra}, got {rad!r}."
                )
        if not isinstance(self.periodic, bool | np.bool_):
            raise TypeError(f"periodic must be a bool, got {self.periodic!r}.")

    def fit(self, X, y=None):
        """Learn the climatological prior and check the localisation coordinates.

        %(fit_sections)s
        """
        super().fit(X, y)
        self.state_coordinates_, self.observation_coordinates_ = self._locations()
        return self

    def _locations(self):
        """The state and observation coordinates, checked against the fitted shapes."""
        return _filter_locations(
            self.state_coordinates,
            self.periodic,
            self.observation_,
            self.n_features_in_,
            self.n_obs_,
        )

    def _tapers(self, pairs):
        """Tapers for ``pairs`` among ``"xy"``, ``"yy"``, ``"xx"`` (None when global).

        An infinite radius gives tapers of ones (every component sees everything).
        """
        if self.localization_radius is None:
            return dict.fromkeys(pairs)
        rad = float(self.localization_radius)
        if math.isinf(rad):  # no locations needed: every component sees everything
            sizes = {"x": self.n_features_in_, "y": self.n_obs_}
            return {pair: np.ones((sizes[pair[0]], sizes[pair[1]])) for pair in pairs}
        state, obs = self._locations()
        if obs is None:
            raise ValueError(
                "localization_radius needs a location for each observation: a componentwise "
                "observation operator (a built-in operator with indices) or the observation "
                "model's coordinates."
            )
        where = {"x": state, "y": obs}
        out = {}
        for pair in pairs:
            out[pair] = localization_weights(where[pair[0]], where[pair[1]], rad)
        return out
