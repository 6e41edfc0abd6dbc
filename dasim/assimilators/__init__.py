"""Learned assimilators over trajectory windows: SDA and SOAD.

Both learn a diffusion prior over short windows of training trajectories and sample the
smoothing posterior of a whole observation window. They need PyTorch
(``pip install dasim[torch]``), which is imported only when an estimator is fitted.
"""

from .sda import SDAAssimilator
from .soad import SOADAssimilator

__all__ = ["SDAAssimilator", "SOADAssimilator"]
