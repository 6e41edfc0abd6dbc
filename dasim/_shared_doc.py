"""Docstring fragments shared by the dasim estimators, and the decorator that inserts them.

A parameter, attribute or section written the same for several estimators (the
filters' ``noise`` and ``forecast_first``, ``fit``'s and ``score``'s
sections) is written once here and put in place of a ``%(<name>)s`` line by
:func:`fill_shared_doc`. A low-level module: it imports nothing from dasim.
"""

from __future__ import annotations

import re
import textwrap

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

#: The Parameters and Returns sections of the filters' and smoothers' ``fit``.
FIT_SECTIONS_DOC = """    Parameters
    ----------
    X : array-like of shape (n_times, n_state)
        States in time order (a training trajectory). No NaN or inf.
    y : array-like of shape (n_times, n_obs) or (n_times,), optional
        Observations row-aligned with ``X`` (NaN where unobserved). Used only when
        ``observation=None``, to learn the identity operator's noise from ``y - X``.

    Returns
    -------
    self : object
        The fitted estimator.
"""

#: The Parameters and Returns sections of the filters', smoothers' and assimilators' ``score``.
SCORE_SECTIONS_DOC = """    Parameters
    ----------
    X : array-like of shape (n_times, n_state)
        True states, row-aligned with ``y``.
    y : array-like of shape (n_times, n_obs) or (n_times,)
        Observations.
    burn_in : int, default=0
        Number of leading cycles left out of the time mean (the spin-up from the
        prior); must be smaller than ``n_times``. In a search, pass
        ``scoring=dasim.metrics.get_scorer("neg_crps", burn_in=k)``: the same score.

    Returns
    -------
    float
        ``-mean_t CRPS_t`` over ``t >= burn_in`` (greater is better).
"""

#: The ``y``, ``initial_ensemble`` and ``random_state`` entries of ``assimilate``.
ASSIMILATE_PARAMS_DOC = """    y : array-like of shape (n_times, n_obs) or (n_times,)
        Observations, NaN where unobserved. A pandas DataFrame or xarray DataArray
        lends its index / first coordinate to the output's ``time``.
    initial_ensemble : array-like of shape (n_members, n_state), optional
        The starting ensemble; ``n_members`` draws from :meth:`sample` by default.
    random_state : int, RandomState, numpy.random.Generator or None
        Seed; ``None`` uses the estimator's ``random_state``. The integer seed the
        run actually used is recorded in ``attrs["random_state"]`` (drawn from a
        RandomState, a Generator or, for ``None`` everywhere, numpy's global
        RandomState), so ``assimilate(y, random_state=ds.attrs["random_state"])``
        repeats the run.
"""

_FRAGMENTS = {
    "noise_params": SHARED_PARAMS_DOC,
    "model_params": MODEL_PARAMS_DOC,
    "fitted_attrs": FITTED_ATTRS_DOC,
    "mle_attrs": MLE_ATTRS_DOC,
    "fit_sections": FIT_SECTIONS_DOC,
    "score_sections": SCORE_SECTIONS_DOC,
    "assimilate_params": ASSIMILATE_PARAMS_DOC,
}

_PLACEHOLDER = re.compile(r"^( *)%\((\w+)\)s\n", re.MULTILINE)


def _fill(doc):
    """``doc`` with each ``%(<name>)s`` line replaced by its fragment, at its indent."""

    def fragment(match):
        text = _FRAGMENTS.get(match.group(2))
        if text is None:
            return match.group(0)
        return textwrap.indent(textwrap.dedent(text), match.group(1))

    return _PLACEHOLDER.sub(fragment, doc)


def fill_shared_doc(cls):
    """Class decorator: insert the shared entries at ``%(<name>)s`` in the docstrings.

    The class docstring and those of the functions the class defines. The fragments:
    ``noise_params`` (:data:`SHARED_PARAMS_DOC`), ``model_params``, ``fitted_attrs``,
    ``mle_attrs``, ``fit_sections`` (``fit``'s Parameters and Returns),
    ``assimilate_params`` (``assimilate``'s ``y``, ``initial_ensemble`` and
    ``random_state``) and ``score_sections`` (``score``'s Parameters and Returns).
    """
    if cls.__doc__:  # None under python -OO
        cls.__doc__ = _fill(cls.__doc__)
    for member in vars(cls).values():
        if callable(member) and getattr(member, "__doc__", None):
            member.__doc__ = _fill(member.__doc__)
    return cls
