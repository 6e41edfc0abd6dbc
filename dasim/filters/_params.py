"""The parameters every sequential filter shares (``noise``, ``forecast_first``): their
docstring entry and the check of ``forecast_first``.
"""

from __future__ import annotations

import numpy as np

#: The ``noise`` and ``forecast_first`` parameter entries shared by the sequential
#: filters' docstrings, inserted by :func:`fill_shared_doc` at ``%(noise_params)s``.
SHARED_PARAMS_DOC = """    noise : {"moments", "mle"}, default="moments"
        How ``fit`` learns the noise levels left to be learned: the standard deviations
        of the persistence model's increments (``model=None``) and of the identity
        observation's noise (``observation=None``). ``"moments"``: from the increments of
        ``X`` and from ``y - X`` (or the spread of ``X``). ``"mle"``: starting there,
        maximise the filter's log-evidence of the observations (``y``, or ``X`` itself
        when ``y`` is None: fit on the observations alone) over those levels, with common
        random numbers; a given model or observation model keeps its noise. See
        :ref:`noise-mle` in the user guide.
    forecast_first : bool, default=True
        Whether the initial ensemble stands one cycle before the first row of ``y``
        (forecast, then analyse, at every cycle) or, with ``False``, is the prior at the
        time of ``y[0]`` (the first cycle analyses it without a forecast: a known or
        wide prior at the first observation, as in the local-level model's textbook
        treatment).
"""


def fill_shared_doc(cls):
    """Class decorator: insert :data:`SHARED_PARAMS_DOC` into the class docstring."""
    if cls.__doc__:  # None under python -OO
        cls.__doc__ = cls.__doc__.replace("    %(noise_params)s\n", SHARED_PARAMS_DOC)
    return cls


def _check_forecast_first(value):
    """Validate the ``forecast_first`` parameter (a bool) and return it."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"forecast_first must be a bool, got {value!r}.")
    return bool(value)
