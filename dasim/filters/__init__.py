"""Sequential ensemble filters sharing one base: EnKF, SIRFilter, KDEDiffusionFilter."""

from ._localization import gaspari_cohn
from ._resampling import resample
from .enkf import EnKF
from .kde import KDEDiffusionFilter
from .sir import SIRFilter

__all__ = ["EnKF", "SIRFilter", "KDEDiffusionFilter", "gaspari_cohn", "resample"]
