"""Verification metrics and scorers for ensemble data assimilation.

Every metric compares a true state (or a second sample) with an ensemble and is vectorised
over any number of leading "time" dimensions: a state array has shape ``(..., n_state)``,
an ensemble ``(..., n_members, n_state)`` and optional member weights (particle filters)
``(..., n_members)``, non-negative with every row summing to one. Leading dimensions
broadcast as in numpy, and each metric returns one value per leading index (a Python
float when there is none).

The ensemble argument may also be what ``assimilate`` returns: an :class:`xarray.Dataset`
stands for its ``analysis`` ensemble (dims ``(time, member, state)``) with its member
``weights`` when it has them (a particle filter's), so ``rmse(X, ds)`` is the RMSE of the
*weighted* mean; an :class:`xarray.DataArray` with ``member`` and ``state`` dims (e.g.
``ds["forecast"]``) is put in that order and taken unweighted.

The scorers have the scikit-learn callable-scorer signature
``scorer(estimator, X, y) -> float`` (greater is better), so they can be passed to
``GridSearchCV(scoring=...)``: they run ``estimator.assimilate(y)`` and compare its
analysis ensemble with the true states ``X``.

All computations are numpy float64. Inputs are validated before any work, and bad input
raises a ``ValueError`` or ``TypeError`` naming the argument at fault.
"""

from ._checks import _check_burn_in  # noqa: F401  (used by dasim.filters._base)
from ._distances import wasserstein1, wasserstein2
from ._scorers import (
    SCORERS,
    get_scorer,
    get_scorer_names,
    log_evidence,
    neg_crps,
    neg_energy_score,
    neg_rmse,
)
from ._scores import crps_ensemble, energy_score, rmse, spread, spread_skill, time_mean

__all__ = [
    "SCORERS",
    "crps_ensemble",
    "energy_score",
    "get_scorer",
    "get_scorer_names",
    "log_evidence",
    "neg_crps",
    "neg_energy_score",
    "neg_rmse",
    "rmse",
    "spread",
    "spread_skill",
    "time_mean",
    "wasserstein1",
    "wasserstein2",
]
