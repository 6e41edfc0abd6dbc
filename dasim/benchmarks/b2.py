"""B2: the closed-form diffusion (KDE) filter against the EnKF and particle filters.

The five settings of BENCHMARKS.md, B2 (Binder, Dasgupta and Oberai, 2026): Lorenz-63
observed through ``z`` or through ``arctan`` of every component, Lorenz-96 in 10 and 20
dimensions observed through ``arctan``, and Lorenz-96 in 40 dimensions observed on every
other component. Per ensemble size ``N`` and seed, the filters run on the same
observation record from the same initial ensemble:

``KDE-ode``, ``KDE-mixture``
    :class:`~dasim.filters.KDEDiffusionFilter` with the probability-flow ODE (the paper's
    sampler, adaptive RK45) and with the exact mixture sampler. Both target the same
    distribution, the Gaussian mixture ``sum_i pi_i N(x_i, sigma_x^2 I)``; the ODE costs
    ``O(N^2)`` per right-hand-side evaluation, the mixture ``O(N)``.
    Both are built from :data:`KDEDiffusionFilter.PAPER_PARAMS
    <dasim.filters.KDEDiffusionFilter>` explicitly (plus the sampler and the tuned
    bandwidths), so they stay the paper's filter whatever the class defaults become.
``KDE-robust``, ``KDE-robust-default``
    :class:`~dasim.filters.KDEDiffusionFilter` with :data:`ROBUST_PARAMS`: the
    covariance-shaped kernel with variance-preserving shrinkage, the exact likelihood
    tempered to keep the ESS at ``ess_target * N`` with up to 20 stages of progressive
    correction, the mixture sampler. ``KDE-robust`` tunes the relative bandwidth
    (a fraction of Scott's constant) and ``ess_target``; ``KDE-robust-default`` is the
    same configuration untuned (Scott's constant, ``ess_target=0.5``).
``KDE-local``
    The localised :class:`~dasim.filters.KDEDiffusionFilter` (issue #14,
    :data:`LOCAL_PARAMS`): local weights and a tapered state distance within a tuned
    Gaspari-Cohn ``localization_radius``, the exact likelihood tempered per component
    to an ESS of N/2, the ``"ab3"`` probability-flow ODE (20 score evaluations); tuned
    ``localization_radius`` and ``bandwidth_x``.
``EnKF``
    Square-root :class:`~dasim.filters.EnKF` (ETKF), tuned multiplicative inflation.
``LETKF``
    The same with a tuned ``localization_radius`` (and inflation).
``SIR``
    Bootstrap :class:`~dasim.filters.SIRFilter` resampling every cycle, no jitter (the
    baseline the paper ran).
``SIR-jitter``
    Regularised particle filter: :class:`~dasim.filters.SIRFilter` with tuned jitter and
    resampling threshold. In distribution the KDE filter is a weighted resample plus
    Gaussian jitter, so this is the honest baseline.

Tuning: every tuned parameter (``bandwidth_x`` and ``bandwidth_y`` of the KDE filter,
``bandwidth_x`` and ``ess_target`` of ``KDE-robust``, the EnKF inflation, the SIR jitter
and resampling threshold) is chosen per ``N`` by
:class:`~sklearn.model_selection.GridSearchCV` and the filters' default score (negative
CRPS), on training data simulated with seeds of its own (``train_seed``), never on a
scored one: by default one trajectory split by ``TimeSeriesSplit(3)``; with
``tune_on=K`` (``--tune-on K``), ``K`` independent trajectories as long as the scored
runs, each test fold one whole trajectory assimilated from the climatological prior
(as the scored runs are). The KDE bandwidths are tuned with the
mixture sampler and used by both KDE methods: the ODE has the same target distribution.

Metrics (BENCHMARKS.md): RMSE, CRPS and spread/skill of the analysis ensemble, time mean
after the burn-in; for the Lorenz-63 cases the exact-OT W2 distance to a reference
posterior, a bootstrap particle filter with 100,000 particles on the same observation
record (see :func:`run_b2`).

``run_b2("l63-z")`` runs a case from Python; :func:`main` is the command line
(``python -m dasim.benchmarks.b2 l63-z``).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import dataclass

import numpy as np
import xarray as xr
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, PredefinedSplit, TimeSeriesSplit
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from .. import metrics
from ..filters import EnKF, KDEDiffusionFilter, SIRFilter
from ..filters._resampling import resample
from ..models import Lorenz63, Lorenz96
from ..observations import ObservationModel

__all__ = [
    "B2Case",
    "B2_CASES",
    "B2_METHODS",
    "ROBUST_PARAMS",
    "LOCAL_PARAMS",
    "b2_case",
    "b2_grids",
    "run_b2",
    "tuned_params_from",
    "merge_b2",
    "b2_markdown",
    "b2_seeds_lost",
    "plot_b2",
    "time_kde_samplers",
    "main",
]

#: The methods of B2, in table order.
B2_METHODS = (
    "KDE-ode",
    "KDE-mixture",
    "KDE-robust",
    "KDE-robust-default",
    "KDE-local",
    "EnKF",
    "LETKF",
    "SIR",
    "SIR-jitter",
)

#: Which tuning result a method uses (the two KDE samplers share the mixture's;
#: ``KDE-robust-default`` and ``SIR`` are never tuned).
_TUNE_KEY = {
    "KDE-ode": "KDE",
    "KDE-mixture": "KDE",
    "KDE-robust": "KDE-robust",
    "KDE-local": "KDE-local",
    "EnKF": "EnKF",
    "LETKF": "LETKF",
    "SIR-jitter": "SIR-jitter",
}

#: The method each tuning group is tuned with.
_TUNE_METHOD = {
    "KDE": "KDE-mixture",
    "KDE-robust": "KDE-robust",
    "KDE-local": "KDE-local",
    "EnKF": "EnKF",
    "LETKF": "LETKF",
    "SIR-jitter": "SIR-jitter",
}

#: The localised KDE configuration of ``KDE-local`` (issue #14); ``localization_radius``
#: and ``bandwidth_x`` are tuned, the values here are the untuned ones.
LOCAL_PARAMS = {
    "kernel": "isotropic",
    "localization_radius": 1.5,
    "bandwidth_x": 0.3,
    "bandwidth_y": "ess",
    "ess_target": 0.5,
    "likelihood": "known",
    "sampler": "ode",
    "ode_solver": "ab3",
}

#: The robust KDE configuration of ``KDE-robust`` and ``KDE-robust-default`` (issue #13):
#: covariance-shaped kernel with variance-preserving shrinkage, the exact likelihood
#: tempered to an ESS target with progressive correction, the exact mixture sampler.
#: ``bandwidth_x`` and ``ess_target`` are the tuned parameters of ``KDE-robust``; the
#: values here are ``KDE-robust-default``'s.
ROBUST_PARAMS = {
    "kernel": "covariance",
    "shrink": True,
    "bandwidth_x": "scott",
    "bandwidth_y": "ess",
    "ess_target": 0.5,
    "likelihood": "known",
    "max_stages": 20,
    "sampler": "mixture",
}

#: Seed of the training trajectory used for tuning (never a scored seed).
TRAIN_SEED = 987_654

#: Cycles the truth runs before the first recorded cycle, so that the initial truth is
#: a climatological state but not one of the pool states the ensembles are drawn from.
_TRUTH_SPINUP = 50

_METRICS = ("w2", "rmse", "crps", "spread_skill", "seconds_per_cycle")


@dataclass
class B2Case:
    """A B2 setting (the fields of :class:`~dasim.benchmarks.Case` plus the sizes).

    Parameters
    ----------
    name : str
        Identifier used on the command line.
    model : DynamicalModel
        Noise-free dynamics of the truth; the filters use it with ``filter_noise``.
    observation : ObservationModel
        Observation operator and noise.
    n_cycles : int
        Assimilation cycles per run.
    burn_in : int
        Cycles dropped before time averages.
    truth_noise : bool
        Whether the truth receives model noise (never, in B2).
    filter_noise : float
        Additive model noise std per cycle in the filters' forecast model.
    description : str
        One-line description.
    members : tuple of int
        The ensemble sizes of BENCHMARKS.md.
    w2 : bool
        Whether W2 to the particle-filter reference posterior is computed (Lorenz-63).

    Examples
    --------
    >>> from dasim.benchmarks.b2 import B2_CASES
    >>> case = B2_CASES["l63-z"]
    >>> case.filter_noise, case.n_cycles, case.burn_in, case.w2
    (0.1, 100, 20, True)
    """

    name: str
    model: object
    observation: object
    n_cycles: int = 100
    burn_in: int = 20
    truth_noise: bool = False
    filter_noise: float = 0.1
    description: str = ""
    members: tuple = (25, 50, 100, 250, 500, 1000)
    w2: bool = False


def _l96_atan(n):
    return B2Case(
        name=f"l96-{n}-atan",
        model=Lorenz96(n=n, forcing=8.0, dt=0.01, steps_per_cycle=5),
        observation=ObservationModel("arctan", noise_std=0.05),
        n_cycles=100,
        filter_noise=0.1,
        description=(
            f"Lorenz-96 n={n}, F=8, RK4 dt=0.01, 5 steps a cycle; y = arctan(x) + N(0, 0.05^2) "
            "on every component; q=0.1"
        ),
    )


#: The five B2 settings of BENCHMARKS.md, by name.
B2_CASES = {
    "l63-z": B2Case(
        name="l63-z",
        model=Lorenz63(dt=0.01, steps_per_cycle=10),
        observation=ObservationModel("identity", noise_std=2.0, indices=[2]),
        n_cycles=100,
        filter_noise=0.1,
        w2=True,
        description=(
            "Lorenz-63, RK4 dt=0.01, 10 steps a cycle; y = z + N(0, 2^2) (bimodal posterior "
            "by the x,y -> -x,-y symmetry); q=0.1"
        ),
    ),
    "l63-atan": B2Case(
        name="l63-atan",
        model=Lorenz63(dt=0.01, steps_per_cycle=10),
        observation=ObservationModel("arctan", noise_std=0.1),
        n_cycles=100,
        filter_noise=0.1,
        w2=True,
        description=(
            "Lorenz-63, RK4 dt=0.01, 10 steps a cycle; y = arctan(x) + N(0, 0.1^2) on all "
            "3 components; q=0.1"
        ),
    ),
    "l96-10-atan": _l96_atan(10),
    "l96-20-atan": _l96_atan(20),
    "l96-40-half": B2Case(
        name="l96-40-half",
        model=Lorenz96(n=40, forcing=8.0, dt=0.01, steps_per_cycle=5),
        observation=ObservationModel(
            "identity", noise_std=float(np.sqrt(0.5)), indices=np.arange(1, 40, 2)
        ),
        n_cycles=100,
        filter_noise=0.1,
        members=(100, 250, 500, 1000),
        description=(
            "Lorenz-96 n=40, F=8, RK4 dt=0.01, 5 steps a cycle; y = x + N(0, 0.5) on the "
            "20 odd-indexed components; q=0.1"
        ),
    ),
}


def b2_case(name):
    """The B2 case called ``name``.

    Parameters
    ----------
    name : str
        One of ``l63-z``, ``l63-atan``, ``l96-10-atan``, ``l96-20-atan``, ``l96-40-half``.

    Returns
    -------
    B2Case
        The setting.

    Raises
    ------
    ValueError
        If the name is unknown.

    Examples
    --------
    >>> from dasim.benchmarks.b2 import b2_case
    >>> b2_case("l96-20-atan").model.n
    20
    """
    try:
        return B2_CASES[name]
    except KeyError:
        raise ValueError(f"unknown B2 case {name!r}; choose from {sorted(B2_CASES)}.") from None


def _noise_std(case):
    return float(np.mean(np.atleast_1d(case.observation.noise_std)))


def b2_grids(name, smoke=False):
    """The tuning grids of a case, keyed by tuning group.

    The KDE state bandwidth mixes absolute values (the authors' style) with half of
    Scott's rule recomputed from every forecast ensemble; the observation bandwidth is a
    multiple of the observation noise std (0.5 to 8 for Lorenz-63, 1 to 16 for Lorenz-96),
    since the weights are a one-sample estimate of the likelihood with noise inflated to
    ``R + sigma_y^2 I``. ``KDE-robust``: relative bandwidth 0.5, 0.75 or 1 times Scott's
    constant, ESS target 0.25, 0.5 or 0.75. EnKF: inflation 1 to 1.4. Regularised SIR:
    jitter 0.1 (0.2 for Lorenz-96) to 1.5, resampling when the ESS falls below 0.5 N or
    every cycle.

    Parameters
    ----------
    name : str
        Case name.
    smoke : bool, default=False
        Two-point grids, for smoke runs.

    Returns
    -------
    dict
        ``{"KDE": {...}, "KDE-robust": {...}, "EnKF": {...}, "SIR-jitter": {...}}``,
        each a :class:`~sklearn.model_selection.GridSearchCV` ``param_grid``.

    Examples
    --------
    >>> from dasim.benchmarks.b2 import b2_grids
    >>> b2_grids("l63-z")["KDE"]["bandwidth_y"]
    [1.0, 2.0, 4.0, 8.0, 16.0]
    """
    case = b2_case(name)
    r = _noise_std(case)
    if smoke:
        return {
            "KDE": {"bandwidth_x": [("scott", 0.5)], "bandwidth_y": [r, 4 * r]},
            "KDE-robust": {"bandwidth_x": [("scott", 1.0)], "ess_target": [0.25, 0.5]},
            "KDE-local": {"localization_radius": [1.0, 2.0], "bandwidth_x": [0.3]},
            "EnKF": {"inflation": [1.0, 1.1]},
            "LETKF": {"localization_radius": [2.0, 4.0], "inflation": [1.0]},
            "SIR-jitter": {"jitter": [0.2, 1.0], "ess_threshold": [0.5]},
        }
    enkf = {"inflation": [1.0, 1.02, 1.05, 1.1, 1.2, 1.4]}
    local = {
        "KDE-local": {"localization_radius": [1.0, 1.5, 2.0], "bandwidth_x": [0.2, 0.3, 0.5]},
        "LETKF": {"localization_radius": [2.0, 4.0, 8.0], "inflation": [1.0, 1.02, 1.05, 1.1]},
    }
    robust = {
        "bandwidth_x": [("scott", f) for f in (0.5, 0.75, 1.0)],
        "ess_target": [0.25, 0.5, 0.75],
    }
    if name.startswith("l63"):
        return {
            "KDE": {
                "bandwidth_x": [0.1, 0.2, 0.5, 1.0, 2.0, ("scott", 0.5)],
                "bandwidth_y": [m * r for m in (0.5, 1.0, 2.0, 4.0, 8.0)],
            },
            "KDE-robust": robust,
            "EnKF": enkf,
            **local,
            "SIR-jitter": {"jitter": [0.1, 0.2, 0.4, 0.7, 1.0, 1.5], "ess_threshold": [0.5, 1.0]},
        }
    # Lorenz-96: small observation multiples collapse the weights (never chosen); wide
    # bandwidths are chosen in 20 and 40 dimensions, so the grid reaches 16 R^(1/2).
    return {
        "KDE": {
            "bandwidth_x": [0.1, 0.2, 0.4, 0.8, 1.6, ("scott", 0.5)],
            "bandwidth_y": [m * r for m in (1.0, 2.0, 4.0, 8.0, 16.0)],
        },
        "KDE-robust": robust,
        "EnKF": enkf,
        **local,
        "SIR-jitter": {"jitter": [0.2, 0.4, 0.7, 1.0, 1.5], "ess_threshold": [0.5, 1.0]},
    }


def _default_params(case):
    """Untuned parameters (``tune=False``)."""
    return {
        "KDE": {"bandwidth_x": ("scott", 0.5), "bandwidth_y": 2.0 * _noise_std(case)},
        "KDE-robust": {
            "bandwidth_x": ROBUST_PARAMS["bandwidth_x"],
            "ess_target": ROBUST_PARAMS["ess_target"],
        },
        "KDE-local": {
            "localization_radius": LOCAL_PARAMS["localization_radius"],
            "bandwidth_x": LOCAL_PARAMS["bandwidth_x"],
        },
        "EnKF": {"inflation": 1.05},
        "LETKF": {"localization_radius": 4.0, "inflation": 1.05},
        "SIR-jitter": {"jitter": 0.5, "ess_threshold": 0.5},
    }


def _estimator(method, n_members, params):
    """An unfitted filter for ``method`` with ``params``.

    The KDE methods are built from an explicit parameter set (the paper's, or
    :data:`ROBUST_PARAMS`), never from the class defaults.
    """
    params = dict(params or {})
    if method in ("KDE-ode", "KDE-mixture"):
        sampler = "ode" if method == "KDE-ode" else "mixture"
        config = {**KDEDiffusionFilter.PAPER_PARAMS, "sampler": sampler, **params}
        return KDEDiffusionFilter(n_members=n_members, device="numpy", **config)
    if method in ("KDE-robust", "KDE-robust-default"):
        config = {**ROBUST_PARAMS, **params}
        return KDEDiffusionFilter(n_members=n_members, device="numpy", **config)
    if method == "KDE-local":
        config = {**LOCAL_PARAMS, **params}
        return KDEDiffusionFilter(n_members=n_members, device="numpy", **config)
    if method in ("EnKF", "LETKF"):
        return EnKF(n_members=n_members, variant="sqrt", **params)
    if method == "SIR":
        return SIRFilter(n_members=n_members, resampling="systematic", ess_threshold=1.0)
    if method == "SIR-jitter":
        return SIRFilter(n_members=n_members, resampling="systematic", **params)
    raise ValueError(f"unknown B2 method {method!r}; choose from {B2_METHODS}.")


def _filter_model(case):
    return clone(case.model).set_params(process_noise=case.filter_noise)


def _int_seed(*keys):
    """A 31-bit integer seed derived deterministically from ``keys``."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0] >> 1)


#: Each method's key in the run seeds, fixed (not its table position), so that adding
#: methods never changes the runs of the others.
_METHOD_SEED_KEY = {
    "KDE-ode": 0,
    "KDE-mixture": 1,
    "EnKF": 2,
    "SIR": 3,
    "SIR-jitter": 4,
    "KDE-robust": 5,
    "KDE-robust-default": 6,
    "KDE-local": 7,
    "LETKF": 8,
}


def _method_index(method):
    return _METHOD_SEED_KEY[method]


def _twin(case, n_cycles, seed):
    """Truth (noise-free, started from climatology and spun up) and observations."""
    rng = np.random.default_rng([int(seed), 0])
    model = clone(case.model)
    x0 = model.climatology(1, rng)[0]
    X = model.simulate(
        _TRUTH_SPINUP + n_cycles, random_state=rng, initial_state=x0, process_noise=False
    )[_TRUTH_SPINUP:]
    y = case.observation.simulate(X, random_state=rng)
    return X, y


def _initial_ensemble(case, n_members, seed):
    """The initial ensemble of every method for ``(seed, N)``: climatology draws."""
    rng = np.random.default_rng([int(seed), 1, int(n_members)])
    return case.model.climatology(int(n_members), rng)


def _fit_states(case, seed):
    """States passed to ``fit`` (only validated: every run gets its initial ensemble)."""
    return case.model.climatology(64, np.random.default_rng([int(seed), 5]))


# ------------------------------------------------------------------------------- tuning
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
        model=_filter_model(case),
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


def _plain(value):
    """JSON-friendly copy of a parameter value (tuples become lists)."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _as_param(value):
    """Inverse of :func:`_plain` for bandwidths: ``["scott", 0.5]`` -> ``("scott", 0.5)``."""
    if isinstance(value, list):
        return tuple(value)
    return value


# ---------------------------------------------------------------------------- reference
def _reference(case, seed, y, init, n_sub, n_pool):
    """Bootstrap PF reference posterior; returns per-cycle subsamples and diagnostics.

    Resampling every cycle (``ess_threshold=1``), systematic, no jitter, the filters' model
    noise. The analysis of each cycle is the weighted particle set (``SIRFilter`` resamples
    before the next forecast), so ``n_sub + n_pool`` particles are drawn from it by a
    systematic weighted resample, randomly permuted (a uniform draw without replacement
    if the weights are equal). The first ``n_sub`` are the W2 target, the other
    ``n_pool`` serve the W2 floor.
    """
    n_ref = init.shape[0]
    pf = SIRFilter(
        _filter_model(case),
        case.observation,
        n_members=n_ref,
        resampling="systematic",
        ess_threshold=1.0,
        random_state=_int_seed(seed, 2),
    )
    start = time.perf_counter()
    with threadpool_limits(1):
        pf.fit(_fit_states(case, seed))
        ds = pf.assimilate(y, initial_ensemble=init, keep_forecast=False)
    seconds = time.perf_counter() - start
    A = ds["analysis"].values
    W = ds["weights"].values
    out = _subsample(A, W, n_sub + n_pool, np.random.default_rng([int(seed), 3]))
    ess = ds["ess"].values
    unique = np.mean([np.unique(out[k, :n_sub], axis=0).shape[0] / n_sub for k in range(len(out))])
    info = {
        "seconds": seconds,
        "ess_mean": float(np.nanmean(ess)),
        "ess_min": float(np.nanmin(ess)),
        "unique_fraction": float(unique),
    }
    return out[:, :n_sub], out[:, n_sub:], info


def _subsample(A, W, n_take, rng):
    """Draw ``n_take`` equally weighted particles per cycle from ``(A, W)``.

    Equal weights: a uniform draw without replacement. Unequal weights: a systematic
    weighted resample, randomly permuted (so any prefix is a random subsample).
    """
    n_times, n_ref, d = A.shape
    out = np.empty((n_times, n_take, d))
    for k in range(n_times):
        w = W[k] / W[k].sum()
        if np.ptp(w) <= 1e-12 * w.max():
            idx = rng.choice(n_ref, size=n_take, replace=n_take > n_ref)
        else:
            idx = rng.permutation(resample(w, n_take, "systematic", rng))
        out[k] = A[k, idx]
    return out


# ------------------------------------------------------------------------------ one run
def _nan_result(failed=0.0):
    keys = (
        "w2",
        "rmse",
        "crps",
        "spread",
        "spread_skill",
        "seconds_per_cycle",
        "ode_steps",
        "nfev",
        "ess_fraction",
        "bandwidth_x",
        "bandwidth_y",
    )
    res = dict.fromkeys(keys, np.nan)
    res["failed"] = failed
    return res


def _one_run(case, method, n_members, seed, params, X, y, ref_sub, w2_cycles):
    """One method, one ensemble size, one seed: assimilate and score."""
    est = _estimator(method, n_members, params).set_params(
        model=_filter_model(case),
        observation=case.observation,
        random_state=_int_seed(seed, n_members, _method_index(method)),
    )
    init = _initial_ensemble(case, n_members, seed)
    b = case.burn_in
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(_fit_states(case, seed))
        start = time.perf_counter()
        try:
            ds = est.assimilate(y, initial_ensemble=init, keep_forecast=False)
        except (ValueError, RuntimeError, FloatingPointError, np.linalg.LinAlgError):
            return _nan_result(failed=1.0)
        seconds = time.perf_counter() - start
        A = ds["analysis"].values
        w = ds["weights"].values if "weights" in ds else None
        res = _nan_result()
        rmse_t = metrics.rmse(X, A, w)
        spread_t = metrics.spread(A, w)
        res["rmse"] = metrics.time_mean(rmse_t, b)
        res["crps"] = metrics.time_mean(metrics.crps_ensemble(X, A, w), b)
        res["spread"] = metrics.time_mean(spread_t, b)
        res["spread_skill"] = metrics.spread_skill(X, A, w, burn_in=b)
        res["seconds_per_cycle"] = seconds / y.shape[0]
        if ref_sub is not None:
            vals = [
                metrics.wasserstein2(
                    A[k], ref_sub[k], weights_a=None if w is None else w[k] / w[k].sum()
                )
                for k in w2_cycles
            ]
            res["w2"] = float(np.mean(vals))
        if "ess" in ds:
            res["ess_fraction"] = float(np.nanmean(ds["ess"].values[b:]) / n_members)
        if method == "KDE-ode":
            res["ode_steps"] = float(np.nanmean(ds["n_steps"].values))
            res["nfev"] = float(np.nanmean(ds["nfev"].values))
        if method.startswith("KDE"):
            res["bandwidth_x"] = float(np.nanmean(ds["bandwidth_x"].values[b:]))
            res["bandwidth_y"] = float(np.nanmean(ds["bandwidth_y"].values[b:]))
    return res


def _floor_run(n_members, ref_sub, ref_pool, w2_cycles):
    """W2 between ``N`` further reference particles and the reference subsample."""
    with threadpool_limits(1):
        vals = [metrics.wasserstein2(ref_pool[k, :n_members], ref_sub[k]) for k in w2_cycles]
    return float(np.mean(vals))


# ------------------------------------------------------------------------------ run_b2
def run_b2(
    case,
    members=None,
    seeds=range(10),
    methods=None,
    n_cycles=100,
    tune=True,
    n_jobs=None,
    progress=False,
    *,
    smoke=False,
    max_members=None,
    params=None,
    grids=None,
    train_seed=TRAIN_SEED,
    train_cycles=240,
    tune_on=1,
    n_reference=100_000,
    n_reference_sub=2000,
    w2_stride=1,
):
    """Run benchmark B2 on one case.

    For every seed: a noise-free truth started from a climatology draw (spun up 50
    cycles so that it is not one of the states the ensembles are drawn from), its
    observations, one initial ensemble per ``N`` of independent climatology draws shared
    by all methods, and (Lorenz-63 cases) the reference posterior. Then every
    ``(method, N, seed)`` runs as an independent joblib task, single-threaded BLAS.

    The reference posterior is a bootstrap particle filter with ``n_reference``
    particles (:class:`~dasim.filters.SIRFilter`, systematic resampling every cycle, no
    jitter, the filters' model noise ``q`` and the true observation noise) on the same
    record, started from ``n_reference`` independent climatology draws. Each cycle a
    random subsample of ``n_reference_sub`` of its (equally weighted) particles is the W2
    target; W2 per cycle is the exact optimal-transport distance
    (:func:`dasim.metrics.wasserstein2`, the members' weights for a weighted ensemble),
    time-averaged after the burn-in. ``w2_floor`` is the same distance for ``N`` other
    reference particles: what a filter sampling the reference exactly would score.

    Parameters
    ----------
    case : str
        A name of :data:`B2_CASES`.
    members : sequence of int, optional
        Ensemble sizes; the case's own list (BENCHMARKS.md) by default.
    seeds : sequence of int, default=range(10)
        One independent simulation per seed (truth, observations, ensembles, reference).
    methods : sequence of str, optional
        A subset of :data:`B2_METHODS` (all by default).
    n_cycles : int, default=100
        Assimilation cycles (the burn-in is 20).
    tune : bool, default=True
        Tune per ``N`` by GridSearchCV on the training trajectory; ``False`` uses fixed
        untuned defaults (smoke runs, quick looks).
    n_jobs : int, optional
        Parallel joblib jobs (``None``: the active ``parallel_config``, serial by default).
    progress : bool, default=False
        Show tqdm progress bars.
    smoke : bool, default=False
        Seconds-long plumbing check: ``N = 16`` unless ``members`` is given, the first
        seed, 25 cycles, a 2,000-particle reference subsampled to 400, 60 training cycles
        and two-point grids.
    max_members : dict, optional
        Largest ``N`` run per method, e.g. ``{"KDE-ode": 250}``; larger sizes are NaN.
    params : dict, optional
        Fixed parameters per tuning group (``"KDE"``, ``"KDE-robust"``, ``"EnKF"``,
        ``"SIR-jitter"``), either one dict for every ``N`` or ``{N: dict}``; those groups
        are not tuned.
    grids : dict, optional
        Grids per tuning group replacing :func:`b2_grids`.
    train_seed : int, default=987654
        Seed of the training trajectory (must not be a scored seed).
    train_cycles : int, default=240
        Length of the training trajectory (``TimeSeriesSplit(3)``: test folds of 60);
        used with ``tune_on=1`` only.
    tune_on : int, default=1
        Training trajectories. ``1``: one trajectory of ``train_cycles`` cycles from
        ``train_seed``, split by ``TimeSeriesSplit(3)``. ``K >= 2``: ``K`` trajectories of
        ``n_cycles`` cycles from seeds derived from ``train_seed``, each test fold one
        whole trajectory assimilated from the climatological prior
        (:class:`~sklearn.model_selection.PredefinedSplit`), so that the chosen
        parameters are those that work from a fresh start on an unseen trajectory, as
        the scored runs are made.
    n_reference : int, default=100000
        Particles of the reference filter.
    n_reference_sub : int, default=2000
        Reference particles per cycle in W2.
    w2_stride : int, default=1
        Compute W2 every ``w2_stride``-th cycle after the burn-in (1: every cycle).

    Returns
    -------
    xarray.Dataset
        Dims ``(method, n_members, seed)``: ``rmse``, ``crps``, ``spread``,
        ``spread_skill``, ``seconds_per_cycle``, ``ode_steps`` and ``nfev`` (KDE-ode:
        accepted RK45 steps and score evaluations a cycle), ``ess_fraction`` (time-mean
        ESS over N before resampling, weighted filters), ``bandwidth_x`` and
        ``bandwidth_y`` (realised KDE bandwidths; for ``KDE-robust`` ``bandwidth_y`` is the
        tempering factor ``c``, 1 when the whole likelihood was assimilated),
        ``failed``; for Lorenz-63 also
        ``w2`` and ``w2_floor`` ``(n_members, seed)``. The setting, the grids, the tuned
        parameters (JSON, and ``tuned[GROUP][N=..]`` strings) and the reference
        diagnostics are in ``attrs``.

    Raises
    ------
    ValueError
        For an unknown case or method, too few cycles, ``tune_on`` not a positive
        integer, or a scored seed equal to a training seed.

    Examples
    --------
    >>> from dasim.benchmarks.b2 import run_b2
    >>> ds = run_b2("l96-10-atan", smoke=True, methods=["KDE-mixture", "EnKF"])
    >>> dict(ds.sizes)
    {'method': 2, 'n_members': 1, 'seed': 1}
    >>> bool(ds["rmse"].notnull().all())
    True
    """
    c = b2_case(case)
    methods = list(B2_METHODS if methods is None else methods)
    for m in methods:
        if m not in B2_METHODS:
            raise ValueError(f"unknown B2 method {m!r}; choose from {B2_METHODS}.")
    seeds = [int(s) for s in seeds]
    if smoke:
        members = (16,) if members is None else members
        seeds = seeds[:1]
        n_cycles = 25
        n_reference, n_reference_sub = min(n_reference, 2000), min(n_reference_sub, 400)
        train_cycles = min(train_cycles, 60)
    members = [int(n) for n in (c.members if members is None else members)]
    if not seeds or not members:
        raise ValueError("seeds and members must not be empty.")
    if isinstance(tune_on, bool) or not isinstance(tune_on, int | np.integer) or tune_on < 1:
        raise ValueError(f"tune_on must be a positive integer, got {tune_on!r}.")
    tune_on = int(tune_on)
    if train_seed in seeds:
        raise ValueError(f"train_seed={train_seed} is a scored seed; choose another.")
    clash = set(_train_seeds(train_seed, tune_on)) & set(seeds)
    if clash:
        raise ValueError(f"training seeds {sorted(clash)} are scored seeds; change train_seed.")
    n_cycles = int(n_cycles)
    if n_cycles <= c.burn_in:
        raise ValueError(f"n_cycles must exceed the burn-in ({c.burn_in}), got {n_cycles}.")
    max_members = dict(max_members or {})
    w2_cycles = list(range(c.burn_in, n_cycles, int(w2_stride)))
    runs = [
        (m, n, s)
        for m in methods
        for n in members
        for s in seeds
        if n <= max_members.get(m, np.inf)
    ]
    parallel = Parallel(n_jobs=n_jobs, return_as="generator")

    # Tuned (or fixed) parameters per tuning group and N.
    grids = {**b2_grids(case, smoke=smoke), **(grids or {})}
    params = dict(params or {})
    needed = sorted({(_TUNE_KEY[m], n) for m, n, _ in runs if m in _TUNE_KEY})
    chosen, scores, tune_seconds = {}, {}, {}
    to_tune = []
    for key, n in needed:
        given = params.get(key)
        if given is not None:
            given = given.get(n, given.get(str(n))) if _keyed_by_n(given) else given
        if given is not None:
            chosen[key, n] = {k: _as_param(v) for k, v in dict(given).items()}
        elif tune:
            to_tune.append((key, n))
        else:
            chosen[key, n] = _default_params(c)[key]
    if to_tune:
        X_train, y_train, cv, _ = _training_set(c, tune_on, train_cycles, n_cycles, train_seed)
        train = (X_train, y_train, cv)
        out = parallel(
            delayed(_tune_one)(c, key, n, grids[key], train, train_seed) for key, n in to_tune
        )
        for key, n, best, score, secs in tqdm(
            out, total=len(to_tune), desc=f"{case} tuning", disable=not progress
        ):
            chosen[key, n] = {k: _as_param(v) for k, v in best.items()}
            scores[key, n] = score
            tune_seconds[key, n] = secs

    # Truth, observations and reference posterior per seed.
    twins = {s: _twin(c, n_cycles, s) for s in seeds}
    refs, ref_info = {}, {}
    if c.w2:
        n_pool = max(members)
        inits = {s: c.model.climatology(n_reference, np.random.default_rng([s, 2])) for s in seeds}
        out = parallel(
            delayed(_reference)(c, s, twins[s][1], inits[s], n_reference_sub, n_pool)
            for s in seeds
        )
        for s, (sub, pool, info) in zip(
            seeds,
            tqdm(out, total=len(seeds), desc=f"{case} reference", disable=not progress),
            strict=True,
        ):
            refs[s] = (sub, pool)
            ref_info[s] = info
        del inits

    # The runs.
    tasks = [
        delayed(_one_run)(
            c,
            m,
            n,
            s,
            chosen.get((_TUNE_KEY.get(m), n)),
            twins[s][0],
            twins[s][1],
            refs[s][0] if c.w2 else None,
            w2_cycles,
        )
        for m, n, s in runs
    ]
    if c.w2:
        floors = [(n, s) for n in members for s in seeds]
        tasks += [delayed(_floor_run)(n, refs[s][0], refs[s][1], w2_cycles) for n, s in floors]
    results = list(
        tqdm(parallel(tasks), total=len(tasks), desc=f"{case} runs", disable=not progress)
    )

    shape = (len(methods), len(members), len(seeds))
    names = list(_nan_result())
    if not c.w2:
        names.remove("w2")
    data = {name: np.full(shape, np.nan) for name in names}
    for (m, n, s), res in zip(runs, results[: len(runs)], strict=True):
        i, j, k = methods.index(m), members.index(n), seeds.index(s)
        for name in names:
            data[name][i, j, k] = res[name]
    dims = ("method", "n_members", "seed")
    variables = {name: (dims, value) for name, value in data.items()}
    if c.w2:
        floor = np.full((len(members), len(seeds)), np.nan)
        for (n, s), value in zip(floors, results[len(runs) :], strict=True):
            floor[members.index(n), seeds.index(s)] = value
        variables["w2_floor"] = (("n_members", "seed"), floor)

    tuned_json = {
        key: {str(n): _plain(p) for (k2, n), p in chosen.items() if k2 == key}
        for key in sorted({k for k, _ in chosen})
    }
    attrs = {
        "case": c.name,
        "description": c.description,
        "n_cycles": n_cycles,
        "burn_in": c.burn_in,
        "model": repr(c.model),
        "observation": repr(c.observation),
        "filter_noise": c.filter_noise,
        "truth_noise": 0,
        "truth_spinup_cycles": _TRUTH_SPINUP,
        "tuned": int(bool(tune)),
        "train_seed": int(train_seed),
        "train_cycles": int(train_cycles if tune_on == 1 else n_cycles),
        "tune_on": tune_on,
        "train_seeds": json.dumps(_train_seeds(train_seed, tune_on)),
        "tuning": (
            "GridSearchCV(cv=TimeSeriesSplit(3)) on one training trajectory"
            if tune_on == 1
            else f"GridSearchCV(cv=PredefinedSplit) over {tune_on} training trajectories, "
            "each test fold one whole trajectory from the climatological prior"
        )
        + "; score = -CRPS; KDE via the mixture",
        "grids": json.dumps({k: _plain(v) for k, v in grids.items()}),
        "tuned_params": json.dumps(tuned_json),
        "tuning_scores": json.dumps({f"{k}|{n}": v for (k, n), v in scores.items()}),
        "tuning_seconds": float(sum(tune_seconds.values())),
        "max_members": json.dumps(max_members),
        "smoke": int(bool(smoke)),
    }
    for (key, n), p in sorted(chosen.items()):
        attrs[f"tuned[{key}][N={n}]"] = _params_label(p)
    if c.w2:
        attrs.update(
            n_reference=int(n_reference),
            n_reference_sub=int(n_reference_sub),
            w2_stride=int(w2_stride),
            w2_cycles=len(w2_cycles),
            reference=(
                "bootstrap SIRFilter, systematic resampling every cycle (ess_threshold=1), "
                "no jitter, filters' model noise, true observation noise"
            ),
            reference_ess_mean=json.dumps({s: i["ess_mean"] for s, i in ref_info.items()}),
            reference_ess_min=json.dumps({s: i["ess_min"] for s, i in ref_info.items()}),
            reference_unique_fraction=json.dumps(
                {s: i["unique_fraction"] for s, i in ref_info.items()}
            ),
            reference_seconds=float(sum(i["seconds"] for i in ref_info.values())),
        )
    return xr.Dataset(
        variables,
        coords={"method": methods, "n_members": members, "seed": seeds},
        attrs=attrs,
    )


def tuned_params_from(source):
    """The tuned parameters recorded by an earlier :func:`run_b2`, for ``params=``.

    Re-running some methods or ensemble sizes with the parameters an earlier run tuned
    (rather than tuning again) makes the new runs exactly those the earlier run would
    have made: every run is seeded by ``(seed, N, method)`` alone.

    Parameters
    ----------
    source : xarray.Dataset or path-like
        A dataset returned by :func:`run_b2`, or the netCDF file ``main`` wrote.

    Returns
    -------
    dict
        ``{group: {N: params}}`` for the tuning groups ``"KDE"``, ``"EnKF"`` and
        ``"SIR-jitter"``, bandwidth rules as tuples.

    Raises
    ------
    ValueError
        If ``source`` carries no ``tuned_params`` attribute.

    Examples
    --------
    >>> from dasim.benchmarks.b2 import run_b2, tuned_params_from
    >>> ds = run_b2("l96-10-atan", smoke=True, methods=["EnKF"], tune=False)
    >>> tuned_params_from(ds)
    {'EnKF': {16: {'inflation': 1.05}}}
    """
    attrs = _load(source).attrs
    if "tuned_params" not in attrs:
        raise ValueError("source has no 'tuned_params' attribute; is it a run_b2 result?")
    raw = json.loads(attrs["tuned_params"])
    return {
        key: {int(n): {k: _as_param(v) for k, v in p.items()} for n, p in by_n.items()}
        for key, by_n in raw.items()
    }


_MERGE_MUST_MATCH = (
    "case",
    "n_cycles",
    "burn_in",
    "filter_noise",
    "train_seed",
    "train_cycles",
    "tune_on",
    "n_reference",
    "n_reference_sub",
    "w2_stride",
)


def merge_b2(base, *others):
    """Combine :func:`run_b2` results that extend one another.

    A run adds methods, ensemble sizes or seeds to ``base`` (e.g. ``KDE-ode`` at
    ``N = 1000`` with the parameters ``base`` tuned, see :func:`tuned_params_from`).
    The result holds the union of the coordinates, ordered as :data:`B2_METHODS`, by
    ``N`` and by seed; where a later dataset ran a ``(method, N, seed)`` (its
    ``failed`` is 0 or 1) its values are taken, failures included, elsewhere the
    earlier ones.

    Parameters
    ----------
    base : xarray.Dataset or path-like
        The run to extend (a dataset or its netCDF file).
    *others : xarray.Dataset or path-like
        Runs of the same case and setting.

    Returns
    -------
    xarray.Dataset
        The merged dataset. ``attrs`` are ``base``'s with the tuned parameters united,
        ``max_members`` recomputed, ``wall_seconds`` summed and the commands joined by
        ``" ; "``.

    Raises
    ------
    ValueError
        If no dataset is to be merged into ``base``, if one is not a :func:`run_b2`
        result, if the runs differ in case or
        setting (cycles, burn-in, model noise, training trajectory, reference, W2
        stride), or if they used different parameters for the same tuning group and
        ``N``.

    Examples
    --------
    >>> from dasim.benchmarks.b2 import merge_b2, run_b2
    >>> a = run_b2("l96-10-atan", smoke=True, methods=["EnKF"], tune=False)
    >>> b = run_b2("l96-10-atan", smoke=True, methods=["KDE-mixture"], tune=False)
    >>> merge_b2(a, b)["method"].values.tolist()
    ['KDE-mixture', 'EnKF']
    """
    if not others:
        raise ValueError("merge_b2 needs at least one dataset to merge into base.")
    datasets = [_load(d) for d in (base, *others)]
    for i, ds in enumerate(datasets):
        if "failed" not in ds or "case" not in ds.attrs:
            raise ValueError(f"dataset {i} is not a run_b2 result (no 'failed' or 'case').")
    first = datasets[0].attrs
    for i, ds in enumerate(datasets[1:], start=1):
        for key in _MERGE_MUST_MATCH:
            a, b = first.get(key), ds.attrs.get(key)
            if a is not None and b is not None and a != b:
                raise ValueError(
                    f"cannot merge: dataset {i} has {key}={b!r}, base has {key}={a!r}."
                )
    tuned = {}
    for i, ds in enumerate(datasets):
        for key, by_n in json.loads(ds.attrs.get("tuned_params", "{}")).items():
            for n, p in by_n.items():
                seen = tuned.setdefault(key, {}).setdefault(n, p)
                if seen != p:
                    raise ValueError(
                        f"cannot merge: dataset {i} ran {key} at N={n} with {p}, an "
                        f"earlier one with {seen}; reuse them with tuned_params_from."
                    )
    merged = datasets[0]
    for ds in datasets[1:]:
        old, new = xr.align(merged, ds, join="outer")
        ran = new["failed"].notnull()  # NaN where a run was not made, 0 or 1 where it was
        merged = old.copy()
        for name, var in new.data_vars.items():
            if name not in old:
                merged[name] = var
            elif set(ran.dims) <= set(var.dims):
                merged[name] = var.where(ran, old[name])
            else:
                merged[name] = var.where(var.notnull(), old[name])
    methods = [m for m in B2_METHODS if m in set(merged["method"].values)]
    methods += sorted(set(merged["method"].values) - set(methods))
    merged = merged.sel(
        {
            "method": methods,
            "n_members": np.sort(merged["n_members"].values),
            "seed": np.sort(merged["seed"].values),
        }
    )
    attrs = dict(first)
    ran = merged["failed"].notnull().any("seed")
    largest = int(merged["n_members"].max())
    max_members = {}
    for m in methods:
        ns = merged["n_members"].values[ran.sel({"method": m}).values]
        if ns.size and int(ns.max()) < largest:
            max_members[m] = int(ns.max())
    attrs["max_members"] = json.dumps(max_members)
    attrs["tuned_params"] = json.dumps(
        {k: dict(sorted(v.items(), key=lambda kv: int(kv[0]))) for k, v in sorted(tuned.items())}
    )
    for key, by_n in tuned.items():
        for n, p in by_n.items():
            attrs[f"tuned[{key}][N={n}]"] = _params_label(p)
    commands = [ds.attrs["command"] for ds in datasets if "command" in ds.attrs]
    if commands:
        attrs["command"] = " ; ".join(commands)
    walls = [ds.attrs["wall_seconds"] for ds in datasets if "wall_seconds" in ds.attrs]
    if walls:
        attrs["wall_seconds"] = float(sum(walls))
    dates = sorted({str(ds.attrs["date"]) for ds in datasets if "date" in ds.attrs})
    if dates:
        attrs["date"] = ", ".join(dates)
    merged.attrs = attrs
    # Encodings read from the inputs' files (e.g. a fixed string width fitting only the
    # shorter method names of one of them) would corrupt the merged file on writing.
    return merged.drop_encoding()


def _params_label(params):
    """``"name=value, ..."``: one tuned parameter set as a readable attribute."""
    return ", ".join(f"{k}={_plain(v)}" for k, v in params.items())


def _load(source):
    if isinstance(source, xr.Dataset):
        return source
    return xr.load_dataset(source)


def _keyed_by_n(value):
    return bool(value) and all(
        isinstance(k, int | np.integer) or (isinstance(k, str) and k.isdigit()) for k in value
    )


# ------------------------------------------------------------------------------ reports
def _fmt(vals, scale=1.0, digits=3):
    vals = np.asarray(vals, dtype=float) * scale
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return "-"
    if vals.size == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{vals.mean():.{digits}f} ± {vals.std():.{digits}f}"


#: Seeds lost (issue #13): W2 above this on the Lorenz-63 cases ...
LOST_W2 = 3.0
#: ... and RMSE above this on the Lorenz-96 cases.
LOST_RMSE = 1.5


def b2_seeds_lost(ds):
    """How many seeds each method lost, per ``N``.

    A seed is lost when its run failed (``failed`` is 1, e.g. a non-finite forecast) or
    its score is not finite or above the threshold: W2 above 3 where the dataset has
    ``w2`` (the Lorenz-63 cases), RMSE above 1.5 otherwise (Lorenz-96). Seeds not run
    (``failed`` is NaN) are not counted.

    Parameters
    ----------
    ds : xarray.Dataset
        Output of :func:`run_b2` (or :func:`merge_b2`).

    Returns
    -------
    lost : xarray.DataArray
        Seeds lost, dims ``(method, n_members)``.
    ran : xarray.DataArray
        Seeds run, dims ``(method, n_members)``.

    Examples
    --------
    >>> from dasim.benchmarks.b2 import b2_seeds_lost, run_b2
    >>> ds = run_b2("l96-10-atan", smoke=True, methods=["EnKF"], tune=False)
    >>> lost, ran = b2_seeds_lost(ds)
    >>> int(ran.sel({"method": "EnKF", "n_members": 16}))
    1
    """
    if "failed" not in ds:
        raise ValueError("ds has no 'failed' variable; is it a run_b2 result?")
    if "w2" in ds:
        score, limit = ds["w2"], LOST_W2
    else:
        score, limit = ds["rmse"], LOST_RMSE
    ran = ds["failed"].notnull()
    bad = (ds["failed"] == 1) | ~np.isfinite(score) | (score > limit)
    lost = (bad & ran).sum("seed")
    return lost, ran.sum("seed")


def b2_markdown(ds, metrics_=("w2", "rmse", "crps", "spread_skill", "seconds_per_cycle")):
    """Markdown tables of a :func:`run_b2` result: one per metric, methods by ``N``.

    Entries are the mean ± standard deviation over seeds (``-`` where not run);
    seconds a cycle are shown in milliseconds. The W2 table carries the reference floor
    and the KDE-ode table of ODE steps is appended when present. A last table gives the
    seeds lost per method and ``N`` (:func:`b2_seeds_lost`: W2 above 3 on Lorenz-63,
    RMSE above 1.5 on Lorenz-96, failed runs included), as ``lost/run``.

    Parameters
    ----------
    ds : xarray.Dataset
        Output of :func:`run_b2`.
    metrics_ : sequence of str
        Variables to tabulate (missing ones are skipped).

    Returns
    -------
    str
        The tables, each under a bold caption.

    Examples
    --------
    >>> from dasim.benchmarks.b2 import b2_markdown, run_b2
    >>> ds = run_b2("l96-10-atan", smoke=True, methods=["EnKF"], tune=False)
    >>> print(b2_markdown(ds, ["rmse"]).splitlines()[2])
    | method | N=16 |
    """
    ns = [int(n) for n in ds["n_members"].values]
    head = "| method | " + " | ".join(f"N={n}" for n in ns) + " |"
    sep = "|---|" + "---|" * len(ns)
    names = [m for m in metrics_ if m in ds]
    if "ode_steps" in ds and np.isfinite(ds["ode_steps"].values).any():
        names.append("ode_steps")
    blocks = []
    for name in names:
        scale, digits, caption = 1.0, 3, name
        if name == "seconds_per_cycle":
            scale, digits, caption = 1000.0, 1, "milliseconds a cycle"
        if name == "ode_steps":
            digits, caption = 1, "ODE steps a cycle (accepted RK45 steps; KDE-ode)"
        lines = [f"**{caption}** ({ds.attrs.get('case', '')})", "", head, sep]
        for method in ds["method"].values:
            if name == "ode_steps" and method != "KDE-ode":
                continue
            cells = [
                _fmt(ds[name].sel({"method": method, "n_members": n}).values, scale, digits)
                for n in ns
            ]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        if name == "w2" and "w2_floor" in ds:
            cells = [_fmt(ds["w2_floor"].sel(n_members=n).values, 1.0, digits) for n in ns]
            lines.append("| *reference floor* | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    if "failed" in ds:
        lost, ran = b2_seeds_lost(ds)
        rule = f"W2 > {LOST_W2:g}" if "w2" in ds else f"RMSE > {LOST_RMSE:g}"
        lines = [
            f"**seeds lost** ({rule} or failed; lost/run) ({ds.attrs.get('case', '')})",
            "",
            head,
            sep,
        ]
        for method in ds["method"].values:
            cells = []
            for n in ns:
                r = int(ran.sel({"method": method, "n_members": n}))
                k = int(lost.sel({"method": method, "n_members": n}))
                cells.append(f"{k}/{r}" if r else "-")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def plot_b2(ds, path=None, metrics_=_METRICS):
    """Plot each metric against the ensemble size, one line per method.

    Seed means with their standard deviation as error bars, log-log axes (linear for
    spread/skill); the W2 panel also draws the reference floor (``N`` exact reference
    draws).

    Parameters
    ----------
    ds : xarray.Dataset
        Output of :func:`run_b2`.
    path : str or path-like, optional
        Where to save the figure (PNG); not saved when omitted.
    metrics_ : sequence of str
        Variables to plot (missing ones are skipped).

    Returns
    -------
    matplotlib.figure.Figure
        The figure.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from dasim.benchmarks.b2 import plot_b2, run_b2
    >>> ds = run_b2("l96-10-atan", smoke=True, methods=["EnKF"], tune=False)
    >>> len(plot_b2(ds).axes)
    4
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    names = [m for m in metrics_ if m in ds]
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.4), squeeze=False)
    ns = ds["n_members"].values
    styles = {
        "KDE-ode": ("tab:red", "o", "-"),
        "KDE-mixture": ("tab:orange", "s", "--"),
        "KDE-robust": ("tab:purple", "P", "-"),
        "KDE-robust-default": ("tab:pink", "X", "--"),
        "KDE-local": ("tab:brown", "*", "-"),
        "EnKF": ("tab:blue", "^", "-"),
        "LETKF": ("tab:cyan", "<", "--"),
        "SIR": ("tab:gray", "v", ":"),
        "SIR-jitter": ("tab:green", "D", "-"),
    }
    for ax, name in zip(axes[0], names, strict=True):
        for method in ds["method"].values:
            vals = ds[name].sel({"method": method}).values
            if not np.isfinite(vals).any():
                continue
            scale = 1000.0 if name == "seconds_per_cycle" else 1.0
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, sd = scale * np.nanmean(vals, -1), scale * np.nanstd(vals, -1)
            color, marker, line = styles.get(str(method), (None, "o", "-"))
            ax.errorbar(
                ns,
                mean,
                yerr=sd,
                color=color,
                marker=marker,
                ls=line,
                ms=4,
                capsize=2,
                label=str(method),
            )
        if name == "w2" and "w2_floor" in ds:
            ax.plot(ns, ds["w2_floor"].mean("seed").values, "k--", lw=1, label="ref. floor")
        if name == "spread_skill":
            ax.axhline(1.0, color="k", lw=0.5)
        ax.set_xscale("log")
        if name != "spread_skill":
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("N (members)")
        ax.set_title("ms a cycle" if name == "seconds_per_cycle" else name)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"B2 {ds.attrs.get('case', '')}", fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


# -------------------------------------------------------------------------- B4 timing
def time_kde_samplers(
    case="l96-20-atan",
    n_members=1000,
    n_cycles=3,
    samplers=("ode", "sde", "mixture"),
    *,
    bandwidth_x=0.2,
    bandwidth_y=0.2,
    n_steps=1000,
    seed=0,
):
    """Time the KDE filter's samplers, in seconds a cycle (BENCHMARKS.md, B4 "KDE filter").

    Every sampler runs the same ``n_cycles`` cycles (same truth, observations, initial
    ensemble and seed), single-threaded BLAS, numpy backend.

    Parameters
    ----------
    case : str, default="l96-20-atan"
        A B2 case.
    n_members : int, default=1000
        Ensemble size.
    n_cycles : int, default=3
        Cycles timed.
    samplers : sequence of str, default=("ode", "sde", "mixture")
        Samplers of :class:`~dasim.filters.KDEDiffusionFilter`.
    bandwidth_x, bandwidth_y : float, default=0.2, 0.2
        Bandwidths.
    n_steps : int, default=1000
        Euler-Maruyama steps of the SDE sampler.
    seed : int, default=0
        Seed.

    Returns
    -------
    xarray.Dataset
        ``seconds_per_cycle``, ``n_steps`` (accepted RK45 steps for the ODE, the fixed
        steps for the SDE, 0 for the mixture) and ``nfev`` (score evaluations a cycle),
        dim ``sampler``.

    Examples
    --------
    >>> from dasim.benchmarks.b2 import time_kde_samplers
    >>> ds = time_kde_samplers("l63-z", n_members=20, n_cycles=1, samplers=["mixture"])
    >>> float(ds["nfev"].sel(sampler="mixture"))
    0.0
    """
    c = b2_case(case)
    X, y = _twin(c, n_cycles, seed)
    init = _initial_ensemble(c, n_members, seed)
    rows = []
    for sampler in samplers:
        est = KDEDiffusionFilter(
            _filter_model(c),
            c.observation,
            n_members=n_members,
            bandwidth_x=bandwidth_x,
            bandwidth_y=bandwidth_y,
            sampler=sampler,
            n_steps=n_steps,
            device="numpy",
            random_state=seed,
        )
        with threadpool_limits(1), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(_fit_states(c, seed))
            start = time.perf_counter()
            ds = est.assimilate(y, initial_ensemble=init, keep_forecast=False)
            seconds = (time.perf_counter() - start) / n_cycles
        rows.append(
            (seconds, float(np.mean(ds["n_steps"].values)), float(np.mean(ds["nfev"].values)))
        )
    rows = np.array(rows)
    return xr.Dataset(
        {
            "seconds_per_cycle": (("sampler",), rows[:, 0]),
            "n_steps": (("sampler",), rows[:, 1]),
            "nfev": (("sampler",), rows[:, 2]),
        },
        coords={"sampler": list(samplers)},
        attrs={
            "case": c.name,
            "n_members": int(n_members),
            "n_cycles": int(n_cycles),
            "bandwidth_x": bandwidth_x,
            "bandwidth_y": bandwidth_y,
            "blas_threads": 1,
        },
    )


# ------------------------------------------------------------------------ command line
def _parser():
    """The argument parser of :func:`main` (every option with its help)."""
    from ..cli import _int_list, _n_jobs, _positive_int, _positive_int_list

    p = argparse.ArgumentParser(
        prog="python -m dasim.benchmarks.b2",
        description="B2: the closed-form KDE diffusion filter against the EnKF and the "
        "particle filters (settings and results: docs/benchmarks_b2.md). Writes "
        "OUT/CASE.nc, OUT/CASE.md and OUT/CASE.png.",
    )
    p.add_argument("case", choices=sorted(B2_CASES), help="the B2 setting to run")
    p.add_argument(
        "--members",
        type=_positive_int_list,
        help="comma-separated ensemble sizes, e.g. 25,50 (default: the case's own; 16 "
        "with --smoke)",
    )
    p.add_argument(
        "--seeds",
        type=_int_list,
        help="comma-separated scored seeds (default: 0,1,2; 0 with --smoke, which runs one)",
    )
    p.add_argument(
        "--methods",
        help=f"comma-separated methods to run (default: all of {', '.join(B2_METHODS)})",
    )
    p.add_argument(
        "--max-members",
        default="",
        help="largest ensemble per method, e.g. KDE-ode=250 (comma-separated METHOD=N)",
    )
    p.add_argument(
        "--cycles",
        type=_positive_int,
        help="cycles per run (default: 100; --smoke fixes 25 and refuses this option)",
    )
    p.add_argument(
        "--no-tune",
        action="store_true",
        help="skip the GridSearchCV tuning of the bandwidths and inflation (use defaults)",
    )
    p.add_argument(
        "--tune-on",
        type=_positive_int,
        default=1,
        help="training trajectories for the tuning: 1 (default) tunes on one trajectory "
        "with TimeSeriesSplit(3); K >= 2 on K trajectories as long as the runs, each test "
        "fold one whole trajectory",
    )
    p.add_argument(
        "--w2-stride",
        type=_positive_int,
        default=1,
        help="compute W2 to the reference every this many cycles (default: 1)",
    )
    p.add_argument(
        "--n-jobs",
        type=_n_jobs,
        default=None,
        help="joblib workers for the independent runs, -1 for all cores",
    )
    p.add_argument(
        "--smoke", action="store_true", help="a seconds-long version (small sizes, one seed)"
    )
    p.add_argument(
        "--out",
        default="results/b2",
        help="directory the results are written into, created if missing (default: "
        "results/b2); a file name such as out.nc is refused",
    )
    p.add_argument("--plot", help="PNG file for the plot (default: OUT/CASE.png)")
    p.add_argument(
        "--params-from",
        metavar="FILE.nc",
        help="an earlier run's netCDF file whose tuned parameters are reused (those groups "
        "are not tuned again)",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        metavar="FILE.nc",
        help="run nothing: merge earlier runs of CASE and write the tables of the result",
    )
    return p


def main(argv=None):
    """Command line: ``python -m dasim.benchmarks.b2 CASE [options]``.

    Runs :func:`run_b2` (or, with ``--merge``, :func:`merge_b2`) and writes
    ``OUT/CASE.nc``, ``OUT/CASE.md`` (the tables) and ``OUT/CASE.png`` (the plot).

    Parameters
    ----------
    argv : list of str, optional
        Arguments (``sys.argv[1:]`` by default): ``CASE``, ``--members 25,50``,
        ``--seeds 0,1,2``, ``--methods KDE-mixture,EnKF``, ``--max-members KDE-ode=250``,
        ``--cycles``, ``--no-tune``, ``--tune-on K`` (tune over ``K`` training
        trajectories), ``--w2-stride``, ``--n-jobs``, ``--smoke``,
        ``--out`` (default ``results/b2``), ``--plot`` (PNG path), ``--params-from`` (an
        earlier run's netCDF file whose tuned parameters are reused, see
        :func:`tuned_params_from`), ``--merge A.nc B.nc ...`` (run nothing: merge
        earlier runs of ``CASE`` with :func:`merge_b2` and write the tables of the
        result).

    Returns
    -------
    int
        Exit status.

    Examples
    --------
    >>> from dasim.benchmarks.b2 import main
    >>> main(["l63-z", "--smoke", "--out", "/tmp/b2"])  # doctest: +SKIP
    0
    """
    import sys
    from datetime import date

    from ..cli import _check_out

    p = _parser()
    args = p.parse_args(argv)
    out = _check_out(p, args.out, "CASE.nc, CASE.md and CASE.png are")
    if args.smoke and args.seeds is not None and len(args.seeds) > 1:
        p.error(f"--smoke runs one seed; got --seeds {','.join(map(str, args.seeds))}")
    if args.smoke and args.cycles is not None:
        p.error("--smoke fixes the number of cycles (25); drop --cycles or --smoke")
    if args.merge:
        given = [
            flag
            for flag, value in [
                ("--members", args.members),
                ("--seeds", args.seeds),
                ("--methods", args.methods),
                ("--max-members", args.max_members or None),
                ("--cycles", args.cycles),
                ("--no-tune", args.no_tune or None),
                ("--tune-on", None if args.tune_on == 1 else args.tune_on),
                ("--n-jobs", args.n_jobs),
                ("--smoke", args.smoke or None),
                ("--params-from", args.params_from),
            ]
            if value is not None
        ]
        if given:
            p.error(f"--merge runs nothing, so {', '.join(given)} would be ignored; drop it")
    members = args.members
    try:
        max_members = {
            k: int(v) for k, v in (item.split("=") for item in args.max_members.split(",") if item)
        }
    except ValueError:
        p.error(f"--max-members must be METHOD=N[,METHOD=N...], got {args.max_members!r}")
    if args.merge:
        ds = merge_b2(*args.merge)
        if ds.attrs.get("case") != args.case:
            p.error(f"--merge: the files hold case {ds.attrs.get('case')!r}, not {args.case!r}")
        ds.attrs["merged_by"] = " ".join(
            ["python -m dasim.benchmarks.b2", *(sys.argv[1:] if argv is None else argv)]
        )
    else:
        start = time.perf_counter()
        ds = run_b2(
            args.case,
            members=members,
            seeds=[0, 1, 2] if args.seeds is None else args.seeds,
            methods=None if not args.methods else args.methods.split(","),
            n_cycles=100 if args.cycles is None else args.cycles,
            tune=not args.no_tune,
            n_jobs=args.n_jobs,
            progress=not args.smoke,
            smoke=args.smoke,
            max_members=max_members,
            w2_stride=args.w2_stride,
            tune_on=args.tune_on,
            params=None if not args.params_from else tuned_params_from(args.params_from),
        )
        ds.attrs.update(
            command=" ".join(
                ["python -m dasim.benchmarks.b2", *(sys.argv[1:] if argv is None else argv)]
            ),
            date=str(date.today()),
            wall_seconds=time.perf_counter() - start,
            blas_threads=1,
        )
    out.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(out / f"{args.case}.nc")
    table = b2_markdown(ds)
    (out / f"{args.case}.md").write_text(table + "\n")
    print(table)
    import matplotlib

    matplotlib.use("Agg")
    plot_b2(ds, args.plot or out / f"{args.case}.png")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
