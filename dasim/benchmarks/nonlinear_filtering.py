"""B2, nonlinear filtering: the closed-form diffusion (KDE) filter against the EnKF and PFs.

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
``KDE-local-transport``, ``KDE-transport``
    The transported KDE filter, untuned: an ETKF (LETKF) step assimilates a fraction of
    the likelihood (``kalman_fraction``), then the probability flow moves the members
    themselves (``flow_start="members"``) under the rest. ``KDE-local-transport``
    (:data:`TRANSPORT_PARAMS`, issue #14) is localised within a Gaspari-Cohn radius of 4;
    ``KDE-transport`` (:data:`GLOBAL_TRANSPORT_PARAMS`, issue #13) is global, with Scott's
    isotropic bandwidth and an adaptive split: at least half of the likelihood to the
    ETKF, more in a cycle where the rest would collapse the weights.
``KDE-joint``
    :class:`~dasim.filters.KDEDiffusionFilter` with :data:`JOINT_PARAMS`: the kernel
    shaped by the joint covariance of states and predicted observations, conditioned in
    closed form (each kernel moved toward the observation), with shrinkage, the exact
    likelihood and the ``"ab3"`` probability-flow ODE; tuned relative bandwidth and
    inflation.
``KDE-default``
    :class:`~dasim.filters.KDEDiffusionFilter` with its class defaults, untuned: what a
    new user gets.
``KDE-multimodal``
    :class:`~dasim.filters.KDEDiffusionFilter` with :data:`KDEDiffusionFilter.MULTIMODAL_PARAMS
    <dasim.filters.KDEDiffusionFilter>`, untuned: no Gaussian step, the members moved by
    the flow of a narrow isotropic kernel (Scott's rule times 0.25, 200 steps a flow),
    the exact likelihood tempered to keep the ESS at N/2 (issue #13; for the bimodal
    ``l63-z``).
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

``run_b2("l63-z")`` runs a case from Python; the command line is
``dasim nonlinear-filtering l63-z`` (:func:`dasim.cli.nonlinear_filtering_main`).

This module gathers B2's names; the code lives in
:mod:`~dasim.benchmarks.nonlinear_filtering_cases` (the experiment definition: cases,
methods, parameters, grids, seeds: where a method is added),
:mod:`~dasim.benchmarks.runner` (tuning, reference posterior, :func:`run_b2`),
:mod:`~dasim.benchmarks.results` (:func:`tuned_params_from`, :func:`merge_b2`),
:mod:`~dasim.benchmarks.report` (:func:`b2_markdown`, :func:`b2_seeds_lost`,
:func:`plot_b2`) and :mod:`~dasim.benchmarks.timing` (:func:`time_kde_samplers`).
"""

from __future__ import annotations

# The private names are those that tests and docs/_static scripts import from here.
from ._reference import _reference, _subsample  # noqa: F401
from ._tuning import _train_seeds, _training_set  # noqa: F401
from .case import Case
from .nonlinear_filtering_cases import (  # noqa: F401
    B2_CASES,
    B2_METHODS,
    GLOBAL_TRANSPORT_PARAMS,
    JOINT_PARAMS,
    LOCAL_PARAMS,
    ROBUST_PARAMS,
    TRAIN_SEED,
    TRANSPORT_PARAMS,
    _estimator,
    _fit_states,
    _initial_ensemble,
    _int_seed,
    _twin,
    b2_case,
    b2_grids,
)
from .report import b2_markdown, b2_seeds_lost, plot_b2
from .results import merge_b2, tuned_params_from
from .runner import run_b2
from .timing import time_kde_samplers

__all__ = [
    "B2_CASES",
    "B2_METHODS",
    "ROBUST_PARAMS",
    "LOCAL_PARAMS",
    "TRANSPORT_PARAMS",
    "GLOBAL_TRANSPORT_PARAMS",
    "JOINT_PARAMS",
    "b2_case",
    "b2_grids",
    "run_b2",
    "tuned_params_from",
    "merge_b2",
    "b2_markdown",
    "b2_seeds_lost",
    "plot_b2",
    "time_kde_samplers",
]

#: The filters' forecast model of a case (``case.filter_model()``).
_filter_model = Case.filter_model
