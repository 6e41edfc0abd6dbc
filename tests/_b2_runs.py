"""Runs of filters on a B2 case's truth, observations and initial ensemble (fixed seed)."""

import warnings

import numpy as np
from threadpoolctl import threadpool_limits

from dasim.benchmarks.nonlinear_filtering import (
    B2_CASES,
    _filter_model,
    _fit_states,
    _initial_ensemble,
    _twin,
)


def b2_runs(case_name, seed, n, **estimators):
    """``{name: (rmse, dataset)}``, one run of each ``estimators[name]``.

    Each value is called as ``make(model, observation, n_members=n, random_state=seed)``.
    The RMSE is that of the ensemble mean, averaged over the cycles after the burn-in.
    BLAS runs on one thread, as in B2, so that a run does not depend on the thread count.
    """
    case = B2_CASES[case_name]
    X, y = _twin(case, case.n_cycles, seed)
    init = _initial_ensemble(case, n, seed)
    out = {}
    for name, make in estimators.items():
        est = make(_filter_model(case), case.observation, n_members=n, random_state=seed)
        with threadpool_limits(1), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = est.fit(_fit_states(case, seed)).assimilate(y, initial_ensemble=init)
        err = np.sqrt(((ds["analysis"].mean("member").values - X) ** 2).mean(1))
        out[name] = (float(err[case.burn_in :].mean()), ds)
    return out
