"""Scorers with the scikit-learn signature ``scorer(estimator, X, y) -> float``."""

import numbers

import numpy as np

from ._checks import _as_float_array, _check_burn_in
from ._scores import crps_ensemble, energy_score, rmse


def _assimilate(estimator, X, y, *, transform_X=True):
    """Run ``assimilate`` on the final estimator, transforming ``X`` through a pipeline.

    For a :class:`sklearn.pipeline.Pipeline`, ``X`` goes through every step but the last
    (their ``transform``) and ``assimilate(y)`` is called on the last step, so the
    analysis and ``X`` are in the same (transformed) state space.

    Returns
    -------
    X : ndarray or None
        The (transformed) true states, as float64; None when not asked for.
    analysis : ndarray of shape (n_times, n_members, n_state)
    weights : ndarray of shape (n_times, n_members) or None
    dataset : xarray.Dataset
        The full output of ``assimilate``.
    """
    from sklearn.pipeline import Pipeline

    final = estimator
    if isinstance(estimator, Pipeline):
        final = estimator[-1]
        if transform_X and X is not None and len(estimator) > 1:
            X = estimator[:-1].transform(X)
    if not hasattr(final, "assimilate"):
        raise TypeError(
            f"estimator must have an assimilate method (or be a Pipeline ending in one), "
            f"got {type(final).__name__}"
        )
    ds = final.assimilate(y)
    if "analysis" not in ds:
        raise ValueError("the Dataset returned by assimilate has no 'analysis' variable")
    analysis = ds["analysis"].transpose("time", "member", "state").values
    weights = None
    if "weights" in ds:
        weights = ds["weights"].transpose("time", "member").values
    if transform_X:
        X = _as_float_array(X, "X")
        expected = (analysis.shape[0], analysis.shape[2])
        if X.shape != expected:
            raise ValueError(
                f"X must have shape (n_times, n_state) = {expected} to match the analysis "
                f"ensemble of shape {analysis.shape}, got X shape {X.shape}"
            )
    return X, analysis, weights, ds


def _n_rows(y):
    """Number of rows (times) of ``y`` without converting it, for an early burn-in check."""
    shape = np.shape(y)
    if len(shape) == 0:
        raise ValueError(f"y must have a time axis, got shape {shape}")
    return shape[0]


def _metric_scorer(metric, estimator, X, y, burn_in):
    burn_in = _check_burn_in(burn_in, _n_rows(y))
    X, analysis, weights, _ = _assimilate(estimator, X, y)
    b = slice(burn_in, None)
    values = metric(X[b], analysis[b], None if weights is None else weights[b])
    return -float(np.mean(values))


#: The docstring of the three metric scorers below, which differ only in the metric.
_METRIC_SCORER_DOC = """Scorer: minus the time-mean {what}.

    {note}Every time after the burn-in counts, an unobserved one too (its analysis is the
    forecast, compared with the truth like any other).

    Parameters
    ----------
    estimator : estimator or Pipeline
        Fitted object with ``assimilate(y) -> xarray.Dataset`` (variable ``analysis`` with
        dims ``(time, member, state)``, optional ``weights`` ``(time, member)``), or a
        :class:`~sklearn.pipeline.Pipeline` ending in one.
    X : array-like of shape (n_times, n_state)
        True states, row-aligned with ``y``.
    y : array-like of shape (n_times, n_obs)
        Observations passed to ``assimilate``.
    burn_in : int, default=0
        Number of leading times left out of the mean (``get_scorer("{name}",
        burn_in=k)`` binds it for ``GridSearchCV``).

    Returns
    -------
    score : float
        ``-mean_{{t >= burn_in}} {metric}(X, analysis, weights)``; greater is better.

    Examples
    --------
    >>> from sklearn.model_selection import GridSearchCV  # doctest: +SKIP
    >>> GridSearchCV(filt, grid, scoring={example})  # doctest: +SKIP
    """


def _scorer_doc(what, metric, note="", example=None):
    """Decorator: give a metric scorer :data:`_METRIC_SCORER_DOC`, filled in."""

    def decorate(func):
        name = func.__name__
        fields = {"what": what, "metric": metric, "note": note, "name": name}
        func.__doc__ = _METRIC_SCORER_DOC.format(example=example or name, **fields)
        return func

    return decorate


@_scorer_doc("RMSE of the analysis ensemble mean", "rmse")
def neg_rmse(estimator, X, y, *, burn_in=0):
    return _metric_scorer(rmse, estimator, X, y, burn_in)


@_scorer_doc(
    "ensemble CRPS of the analysis",
    "crps_ensemble",
    note="The same number as the estimators' own ``score(X, y, burn_in=...)``.\n    ",
    example='{"crps": neg_crps, "rmse": neg_rmse}, refit="crps"',
)
def neg_crps(estimator, X, y, *, burn_in=0):
    return _metric_scorer(crps_ensemble, estimator, X, y, burn_in)


@_scorer_doc("energy score of the analysis ensemble", "energy_score")
def neg_energy_score(estimator, X, y, *, burn_in=0):
    return _metric_scorer(energy_score, estimator, X, y, burn_in)


def log_evidence(estimator, X, y, *, burn_in=0):
    """Scorer: mean observation log-likelihood ``log p(y_k | y_{1:k-1})`` per observed cycle.

    Needs no truth, so it is what one tunes by on real data: ``X`` is ignored. An
    unobserved cycle (a row of ``y`` that is all NaN) has no evidence: ``assimilate``
    reports NaN there and this mean leaves it out, so gaps in the data neither reward nor
    penalise a model. On fully observed data it is the plain time mean.

    Parameters
    ----------
    estimator : estimator or Pipeline
        Fitted object whose ``assimilate(y)`` returns an ``xarray.Dataset`` with a
        ``log_evidence`` variable of dims ``(time,)``, or a Pipeline ending in one.
    X : array-like or None
        Ignored.
    y : array-like of shape (n_times, n_obs)
        Observations passed to ``assimilate``.
    burn_in : int, default=0
        Number of leading cycles left out of the mean.

    Returns
    -------
    score : float
        Mean of ``log_evidence`` over the observed cycles ``t >= burn_in``; greater is
        better.

    Raises
    ------
    ValueError
        If no cycle after the burn-in is observed (the mean is undefined).

    Examples
    --------
    >>> from sklearn.model_selection import GridSearchCV  # doctest: +SKIP
    >>> GridSearchCV(filt, grid, scoring=log_evidence).fit(X_train, y_train)  # doctest: +SKIP
    """
    burn_in = _check_burn_in(burn_in, _n_rows(y))
    _, _, _, ds = _assimilate(estimator, X, y, transform_X=False)
    if "log_evidence" not in ds:
        raise ValueError(
            "the Dataset returned by assimilate has no 'log_evidence' variable; "
            f"{type(estimator).__name__} does not report the observation likelihood"
        )
    values = np.asarray(ds["log_evidence"].values, dtype=np.float64).reshape(-1)[burn_in:]
    observed = ~np.isnan(values)
    if not observed.any():
        raise ValueError(
            f"no observed cycle after burn_in={burn_in}: every log_evidence value is NaN "
            "(every row of y is all NaN), so the mean evidence is undefined"
        )
    return float(np.mean(values[observed]))


SCORERS = {
    "neg_rmse": neg_rmse,
    "neg_crps": neg_crps,
    "neg_energy_score": neg_energy_score,
    "log_evidence": log_evidence,
}
"""dict: The scorers of this module by name."""


class _BurnInScorer:
    """A scorer of this module with its ``burn_in`` bound (picklable, readable repr)."""

    def __init__(self, name, burn_in):
        self.name = name
        self.burn_in = burn_in

    def __call__(self, estimator, X, y):
        return SCORERS[self.name](estimator, X, y, burn_in=self.burn_in)

    def __repr__(self):
        return f"get_scorer({self.name!r}, burn_in={self.burn_in})"


def get_scorer_names():
    """Return the names of the scorers :func:`get_scorer` knows.

    Returns
    -------
    list of str
        Sorted names; none of them is one of scikit-learn's own scorer names.

    Examples
    --------
    >>> from dasim.metrics import get_scorer_names
    >>> get_scorer_names()
    ['log_evidence', 'neg_crps', 'neg_energy_score', 'neg_rmse']
    """
    return sorted(SCORERS)


def get_scorer(name, *, burn_in=0):
    """Return a scorer of this module by name, ready for ``GridSearchCV(scoring=...)``.

    scikit-learn's searches accept a string only from their own registry, which cannot be
    extended, so ``GridSearchCV(scoring="log_evidence")`` is refused; pass
    ``scoring=get_scorer("log_evidence")`` instead, or a list of names for several
    metrics. Like :func:`sklearn.metrics.get_scorer`, a callable is returned as is.

    Parameters
    ----------
    name : str, list or tuple of str, or callable
        One of :func:`get_scorer_names` (``"neg_rmse"``, ``"neg_crps"``,
        ``"neg_energy_score"``, ``"log_evidence"``); a list or tuple of them gives a
        dict ``{name: scorer}`` for multi-metric searches (``refit=`` one of the names).
    burn_in : int, default=0
        Number of leading cycles every returned scorer leaves out of its time mean (such
        a scorer raises on data with no more cycles than that).

    Returns
    -------
    scorer : callable or dict
        ``scorer(estimator, X, y) -> float``, greater is better (the function itself
        when ``burn_in=0``); a dict of them for a list of names.

    Examples
    --------
    >>> from dasim.metrics import get_scorer
    >>> get_scorer("neg_crps").__name__
    'neg_crps'
    >>> get_scorer("log_evidence", burn_in=20)
    get_scorer('log_evidence', burn_in=20)
    >>> sorted(get_scorer(["neg_crps", "log_evidence"]))
    ['log_evidence', 'neg_crps']

    In a search (``filt`` a dasim estimator, ``grid`` its parameter grid):

    >>> GridSearchCV(filt, grid, scoring=get_scorer("log_evidence"))  # doctest: +SKIP
    """
    if isinstance(burn_in, bool) or not isinstance(burn_in, numbers.Integral):
        raise TypeError(f"burn_in must be an integer, got {burn_in!r}")
    if burn_in < 0:
        raise ValueError(f"burn_in must be non-negative, got {burn_in}")
    if isinstance(name, list | tuple):
        if not name:
            raise ValueError("name must list at least one scorer name, got an empty list")
        names = [_check_scorer_name(n) for n in name]
        if len(set(names)) != len(names):
            raise ValueError(f"name lists a scorer twice: {list(name)}")
        return {n: get_scorer(n, burn_in=burn_in) for n in names}
    if callable(name):
        if burn_in != 0:
            raise ValueError(
                f"burn_in can be bound to a scorer given by name only, got name={name!r}"
            )
        return name
    name = _check_scorer_name(name)
    return SCORERS[name] if burn_in == 0 else _BurnInScorer(name, int(burn_in))


def _check_scorer_name(name):
    if not isinstance(name, str):
        raise TypeError(
            f"name must be a scorer name (str), a list of names or a callable, got {name!r}"
        )
    if name not in SCORERS:
        raise ValueError(
            f"unknown scorer name {name!r}; valid names are {get_scorer_names()} "
            "(scikit-learn's own names are for estimators with predict: use "
            "sklearn.metrics.get_scorer for those)"
        )
    return name
