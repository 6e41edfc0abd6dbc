"""B2's tuning: the training trajectories, their splitter, one GridSearchCV per group and N.

Part of the runner (:mod:`dasim.benchmarks.runner`): every tuned parameter is chosen
per ensemble size on training data simulated with seeds of its own, never on a scored
trajectory.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from sklearn.model_selection import GridSearchCV, PredefinedSplit, TimeSeriesSplit
from threadpoolctl import threadpool_limits

from .nonlinear_filtering_cases import (
    _TUNE_KEY,
    _TUNE_METHOD,
    _default_params,
    _estimator,
    _int_seed,
    _method_index,
    _twin,
)
from .results import _as_param, _keyed_by_n, _plain


def _training_set(case, tune_on, train_cycles, n_cycles, train_seed):
    """The tuning data and its splitter: ``(X, y, cv, groups)``.

    ``tune_on=1``: one trajectory of ``train_cycles`` cycles from ``train_seed``,
    ``TimeSeriesSplit(3)``, ``groups`` all zero. ``tune_on=K > 1``: ``K`` trajectories of
    ``n_cycles`` cycles (as long as the scored runs), from seeds derived from
    ``train_seed``, concatenated in time; ``groups`` is the trajectory of every cycle and
    the splitter a :class:`~sklearn.model_selection.PredefinedSplit` whose test folds are
    the whole trajectories (each assimilated from the climatological prior fitted on the
    other ones' states).
    """
    tune_on = int(tune_on)
    if tune_on == 1:
        X, y = _twin(case, train_cycles, train_seed)
        return X, y, TimeSeriesSplit(3), np.zeros(X.shape[0], dtype=int)
    parts = [_twin(case, n_cycles, s) for s in _train_seeds(train_seed, tune_on)]
    X = np.concatenate([x for x, _ in parts])
    y = np.concatenate([obs for _, obs in parts])
    groups = np.repeat(np.arange(tune_on), n_cycles)
    return X, y, PredefinedSplit(groups), groups


def _train_seeds(train_seed, tune_on):
    """The training trajectories' seeds: ``train_seed`` alone, or ``K`` derived from it."""
    if int(tune_on) == 1:
        return [int(train_seed)]
    return [_int_seed(train_seed, 7, k) for k in range(int(tune_on))]


def _tune_one(case, key, n_members, grid, train, seed):
    """GridSearchCV of one tuning group at one ensemble size."""
    X, y, cv = train
    method = _TUNE_METHOD[key]
    est = _estimator(method, n_members, {}).set_params(
        model=case.filter_model(),
        observation=case.observation,
        random_state=_int_seed(seed, n_members, _method_index(method)),
    )
    start = time.perf_counter()
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search = GridSearchCV(est, grid, cv=cv, n_jobs=1, error_score=np.nan)
        search.fit(X, y)
    best = {k: _plain(v) for k, v in search.best_params_.items()}
    return key, int(n_members), best, float(search.best_score_), time.perf_counter() - start


def _resolve_params(case, runs, params, tune):
    """The fixed parameters per ``(group, N)`` and the ``(group, N)`` left to tune."""
    params = dict(params or {})
    needed = sorted({(_TUNE_KEY[m], n) for m, n, _ in runs if m in _TUNE_KEY})
    chosen, to_tune = {}, []
    for key, n in needed:
        given = params.get(key)
        if given is not None:
            given = given.get(n, given.get(str(n))) if _keyed_by_n(given) else given
        if given is not None:
            chosen[key, n] = {k: _as_param(v) for k, v in dict(given).items()}
        elif tune:
            to_tune.append((key, n))
        else:
            chosen[key, n] = _default_params(case)[key]
    return chosen, to_tune
