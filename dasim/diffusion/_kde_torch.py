"""Former home of the torch twin of the closed-form KDE score (kept for old imports).

The score, its samplers and their RK45 are written once over the array namespace of
:mod:`dasim.diffusion._xp` (:mod:`dasim.diffusion._kde_core`,
:mod:`dasim.diffusion._ode`) and serve numpy and torch alike; only the torch tile rule is
imported from here (by :mod:`dasim.benchmarks.score_speed`).
"""

from ._kde_core import torch_tile

__all__ = ["torch_tile"]
