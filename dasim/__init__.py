"""dasim: data assimilation with a scikit-learn API.

The front door: the estimators, the models, the observation model, the twin-experiment
and data helpers and the metrics, loaded on first use so that ``import dasim`` stays fast
and never imports torch (the learned assimilators import it when they are fitted).

>>> import dasim
>>> dasim.EnKF, dasim.KDEDiffusionFilter, dasim.SDAAssimilator  # doctest: +ELLIPSIS
(<class 'dasim.filters.enkf.EnKF'>, ...)

Subpackages: :mod:`dasim.models` (dynamics), :mod:`dasim.observations` (operators and
noise), :mod:`dasim.coordinates` (locations and localisation), :mod:`dasim.filters`
(EnKF, SIR, KDE diffusion filter), :mod:`dasim.smoothers` (EnKS, particle smoother),
:mod:`dasim.assimilators` (SDA, SOAD), :mod:`dasim.diffusion` (schedules, closed-form KDE
score, samplers, score networks), :mod:`dasim.metrics`, :mod:`dasim.datasets`,
:mod:`dasim.benchmarks`.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0.dev0"

#: Public name -> module that defines it (imported on first access).
_EXPORTS = {
    "EnKF": "dasim.filters",
    "SIRFilter": "dasim.filters",
    "KDEDiffusionFilter": "dasim.filters",
    "EnKS": "dasim.smoothers",
    "ParticleSmoother": "dasim.smoothers",
    "SDAAssimilator": "dasim.assimilators",
    "SOADAssimilator": "dasim.assimilators",
    "Lorenz63": "dasim.models",
    "Lorenz96": "dasim.models",
    "FunctionModel": "dasim.models",
    "Persistence": "dasim.models",
    "ObservationModel": "dasim.observations",
    "make_twin_experiment": "dasim.datasets",
    "load_nile": "dasim.datasets",
}
_SUBMODULES = (
    "metrics",
    "datasets",
    "models",
    "observations",
    "filters",
    "smoothers",
    "assimilators",
    "diffusion",
    "coordinates",
    "benchmarks",
    "exceptions",
)

__all__ = ["__version__", *_EXPORTS, *_SUBMODULES]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"dasim.{name}")
    else:
        raise AttributeError(f"module 'dasim' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
