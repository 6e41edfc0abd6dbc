"""The check of ``forecast_first``, a parameter every sequential filter shares; the
shared docstring fragments live in :mod:`dasim._shared_doc` (re-exported here).
"""

from __future__ import annotations

import numpy as np

from .._shared_doc import fill_shared_doc as fill_shared_doc


def _check_forecast_first(value):
    """Validate the ``forecast_first`` parameter (a bool) and return it."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"forecast_first must be a bool, got {value!r}.")
    return bool(value)
