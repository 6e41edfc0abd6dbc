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


#: The ``model`` and ``observation`` entries of every sequential filter and smoother.
MODEL_PARAMS_DOC = """    model : DynamicalModel, callable or None, default=None
        The dynamics; ``None`` is a persistence model with noise learned in ``fit``.
    observation : ObservationModel or None, default=None
        Observation operator and noise; ``None`` observes the first ``y.shape[1]``
        components with noise learned in ``fit``.
"""

#: The fitted attributes every sequential filter and smoother has.
FITTED_ATTRS_DOC = """    model_ : DynamicalModel
        The resolved dynamical model.
    observation_ : ObservationModel
        The resolved observation model.
    n_obs_ : int
        Number of observed components.
    n_features_in_ : int
        State dimension.
    climatology_ : ndarray of shape (n_times, n_state)
        Training states defining the climatological prior.
    climatology_kernel_ : ndarray of shape (n_state, n_state)
        Square-root kernel covariance of the prior KDE.
"""

#: The fitted attributes of ``noise="mle"``.
MLE_ATTRS_DOC = """    process_noise_ : ndarray of shape (n_state,)
        With ``noise="mle"`` and ``model=None``: the learned standard deviations of the
        persistence model's increments (also in ``model_``).
    noise_std_ : ndarray of shape (n_obs,)
        With ``noise="mle"`` and ``observation=None``: the learned observation noise
        standard deviations (also in ``observation_``).
    log_evidence_ : float
        With ``noise="mle"``: the maximised log-evidence, summed over the cycles after
        the first observed one.
    n_iter_ : int
        With ``noise="mle"``: iterations of the optimiser.
"""

_FRAGMENTS = {
    "noise_params": SHARED_PARAMS_DOC,
    "model_params": MODEL_PARAMS_DOC,
    "fitted_attrs": FITTED_ATTRS_DOC,
    "mle_attrs": MLE_ATTRS_DOC,
}


def fill_shared_doc(cls):
    """Class decorator: insert the shared entries at ``%(<name>)s`` in the class docstring.

    The fragments: ``noise_params`` (:data:`SHARED_PARAMS_DOC`), ``model_params``,
    ``fitted_attrs`` and ``mle_attrs``.
    """
    if cls.__doc__:  # None under python -OO
        for key, text in _FRAGMENTS.items():
            cls.__doc__ = cls.__doc__.replace(f"    %({key})s\n", text)
    return cls


def _check_forecast_first(value):
    """Validate the ``forecast_first`` parameter (a bool) and return it."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"forecast_first must be a bool, got {value!r}.")
    return bool(value)
