"""Run filters over twin experiments, repeated over seeds, in parallel through joblib.

Every run is independent (its own seed, truth, observations and initial ensemble), so a
sweep goes through :class:`joblib.Parallel` and runs on a dask or ray cluster under
``joblib.parallel_config(backend=...)`` with no code change. Results are
:class:`xarray.Dataset` objects that save to netCDF.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import xarray as xr
from joblib import Parallel, delayed
from sklearn.base import clone
from tqdm.auto import tqdm

from .. import metrics
from .._threads import pinned_blas
from ..datasets import make_twin_experiment

__all__ = ["Case", "Method", "run_case"]


@dataclass
class _Setting:
    """The fields every benchmark setting has (:class:`Case`, the B2 cases' ``B2Case``)."""

    name: str
    model: object
    observation: object
    n_cycles: int = 1000
    burn_in: int = 20
    truth_noise: bool = False
    filter_noise: float = 0.0
    description: str = ""


@dataclass
class Case(_Setting):
    """A twin-experiment setting.

    Parameters
    ----------
    name : str
        Identifier used on the command line.
    model : DynamicalModel
        Dynamics of the truth (and of the filters, with ``filter_noise`` added).
    observation : ObservationModel
        Observation operator and noise.
    n_cycles : int
        Assimilation cycles per run.
    burn_in : int
        Cycles dropped before time averages.
    truth_noise : bool
        Whether the truth receives the model noise.
    filter_noise : float
        Additive model noise in the filters' forecast model (std per cycle).
    description : str
        One-line description.
    initial_mean : array-like or None
        If given, the initial truth and every initial ensemble member are drawn from
        ``N(initial_mean, initial_var I)`` (DAPPER's ``X0``); otherwise both are independent
        draws from the model's climatology.
    initial_var : float
        Variance of that initial distribution.

    Examples
    --------
    >>> from dasim.benchmarks import Case
    >>> from dasim.models import Lorenz63
    >>> from dasim.observations import ObservationModel
    >>> case = Case("tiny", Lorenz63(), ObservationModel("identity"), n_cycles=30, burn_in=10)
    >>> case.n_cycles, case.truth_noise
    (30, False)
    """

    initial_mean: object = None
    initial_var: float = 0.0


@dataclass
class Method:
    """A filter configuration with its reference figure.

    Parameters
    ----------
    label : str
        Row label in tables.
    estimator : SequentialFilter
        An unfitted filter; ``model`` and ``observation`` are set by the runner.
    reference : float or None
        Published analysis RMSE to compare with (DAPPER's, for B1).
    params : dict
        Extra metadata to store.

    Examples
    --------
    >>> from dasim.benchmarks import Method
    >>> from dasim.filters import EnKF
    >>> Method("EnKF N=10", EnKF(n_members=10), reference=0.557)
    Method(label='EnKF N=10', estimator=EnKF(n_members=10), reference=0.557, params={})
    """

    label: str
    estimator: object
    reference: float | None = None
    params: dict = field(default_factory=dict)


@pinned_blas
def _one_run(case, method, seed, n_cycles):
    """One seed of one method: truth, observations, initial ensemble, filter, metrics."""
    rng = np.random.default_rng(seed)
    model = clone(case.model)
    if case.initial_mean is None:
        x0 = model.climatology(1, rng)[0]
    else:
        mean = np.asarray(case.initial_mean, dtype=np.float64)
        x0 = mean + np.sqrt(case.initial_var) * rng.standard_normal(mean.shape)
    X, y = make_twin_experiment(
        model, case.observation, n_cycles, rng, initial_state=x0, process_noise=case.truth_noise
    )
    est = clone(method.estimator)
    filt_model = clone(case.model).set_params(process_noise=case.filter_noise)
    est.set_params(model=filt_model, observation=case.observation, random_state=seed)
    n_members = est.get_params()["n_members"]
    if case.initial_mean is None:
        init = model.climatology(n_members, rng)
    else:
        init = mean + np.sqrt(case.initial_var) * rng.standard_normal((n_members, mean.size))
    est.fit(model.climatology(64, rng))
    start = time.perf_counter()
    ds = est.assimilate(y, initial_ensemble=init, keep_forecast=False)
    seconds = time.perf_counter() - start
    A = ds["analysis"].values
    w = ds["weights"].values if "weights" in ds else None
    b = case.burn_in
    rmse_t = metrics.rmse(X, A, w)
    crps_t = metrics.crps_ensemble(X, A, w)
    spread_t = metrics.spread(A, w)
    return {
        "rmse": metrics.time_mean(rmse_t, b),
        "crps": metrics.time_mean(crps_t, b),
        "spread": metrics.time_mean(spread_t, b),
        "spread_skill": metrics.time_mean(spread_t, b) / metrics.time_mean(rmse_t, b),
        "seconds_per_cycle": seconds / n_cycles,
        "climatology_rmse": float(np.sqrt(np.mean((X[b:] - X[b:].mean(0)) ** 2))),
    }


def run_case(
    case, methods, seeds=(0, 1, 2), n_cycles=None, n_jobs=None, progress=False, burn_in=None
):
    """Run every method on every seed of a case.

    Parameters
    ----------
    case : Case
        The twin-experiment setting.
    methods : list of Method
        The filters to run.
    seeds : sequence of int, default=(0, 1, 2)
        One independent simulation per seed (truth, observations, ensemble).
    n_cycles : int, optional
        Override the case's number of cycles (smoke runs).
    n_jobs : int, optional
        Parallel jobs for joblib (``None``: the active ``parallel_config``).
    progress : bool, default=False
        Show a tqdm progress bar over the runs (completed in submission order).
    burn_in : int, optional
        Override the case's burn-in (smoke runs).

    Returns
    -------
    xarray.Dataset
        Variables ``rmse``, ``crps``, ``spread``, ``spread_skill``,
        ``seconds_per_cycle`` and ``climatology_rmse`` with dims ``(method, seed)``, and
        ``reference`` with dim ``method``; the setting in ``attrs``.

    Examples
    --------
    >>> from dasim.benchmarks import Case, Method, run_case
    >>> from dasim.filters import EnKF
    >>> from dasim.models import Lorenz63
    >>> from dasim.observations import ObservationModel
    >>> case = Case("tiny", Lorenz63(), ObservationModel("identity"), n_cycles=30, burn_in=10)
    >>> ds = run_case(case, [Method("EnKF N=10", EnKF(n_members=10))], seeds=(0,), n_jobs=1)
    >>> ds["rmse"].dims, ds["rmse"].shape
    (('method', 'seed'), (1, 1))
    """
    n_cycles = case.n_cycles if n_cycles is None else int(n_cycles)
    if burn_in is not None:
        case = replace(case, burn_in=int(burn_in))
    if n_cycles <= case.burn_in:
        raise ValueError(f"n_cycles must exceed the burn-in ({case.burn_in}), got {n_cycles}.")
    seeds = [int(s) for s in seeds]
    jobs = [(m, s) for m in methods for s in seeds]
    runs = Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(_one_run)(case, m, s, n_cycles) for m, s in jobs
    )
    results = list(tqdm(runs, total=len(jobs), desc=case.name, disable=not progress))
    names = list(results[0])
    data = {
        name: (
            ("method", "seed"),
            np.array([r[name] for r in results]).reshape(len(methods), len(seeds)),
        )
        for name in names
    }
    data["reference"] = (
        ("method",),
        np.array([np.nan if m.reference is None else m.reference for m in methods]),
    )
    return xr.Dataset(
        data,
        coords={"method": [m.label for m in methods], "seed": seeds},
        attrs={
            "case": case.name,
            "description": case.description,
            "n_cycles": n_cycles,
            "burn_in": case.burn_in,
            "model": repr(case.model),
            "observation": repr(case.observation),
            "filter_noise": case.filter_noise,
            "truth_noise": int(case.truth_noise),
        },
    )
