"""Sequential ensemble filters sharing one base: EnKF, SIRFilter, KDEDiffusionFilter."""

from ._base import SequentialFilter
from ._localization import gaspari_cohn
from ._resampling import resample
from .enkf import EnKF
from .sir import SIRFilter

__all__ = ["SequentialFilter", "EnKF", "SIRFilter", "gaspari_cohn", "resample"]
