"""The Kalman stage of :class:`~dasim.filters.KDEDiffusionFilter`'s ``kalman_fraction``.

With ``kalman_fraction = gamma`` the analysis splits the likelihood as
``p(y | x) = p(y | x)^gamma p(y | x)^(1 - gamma)`` (Frei and Kuensch 2013, the ensemble
Kalman particle filter): a square-root ensemble Kalman step assimilates the first factor,
whose noise is ``R / gamma``, and the KDE analysis assimilates the second, whose noise is
``R / (1 - gamma)``, from the Kalman step's ensemble. ``gamma = 0`` is the KDE filter,
``gamma -> 1`` the ETKF (LETKF with ``localization_radius``) followed by a kernel
smoothing of its ensemble. The Kalman step is exact for a linear-Gaussian model, so on
such a model the whole analysis is the Kalman posterior in distribution whatever
``gamma``, up to the KDE's kernel.
"""

from __future__ import annotations

import contextlib

import numpy as np

from .._noise import GaussianNoise
from .enkf import sqrt_update

__all__ = []


def kalman_step(filt, forecast, y, predicted, gamma):
    """ETKF (LETKF with the filter's ``_taper_xy``) update with observation noise ``R/gamma``.

    Returns the updated ensemble (n_members, n_state); unobserved components of ``y``
    (NaN) are left out, and a cycle with no observation returns ``forecast`` itself.
    """
    mask = ~np.isnan(y)
    if not mask.any():
        return forecast
    noise = filt._obs_noise.marginal(mask)
    scale = np.sqrt(gamma)  # R^(-1/2) of R / gamma is sqrt(gamma) R^(-1/2)
    taper = None if filt._taper_xy is None else filt._taper_xy[:, mask]
    return sqrt_update(
        forecast, y[mask], predicted[:, mask], lambda v: noise.whiten(scale * v), taper
    )


@contextlib.contextmanager
def tempered_noise(filt, fraction):
    """Within the block, the filter's observation noise ``filt._obs_noise`` is ``R / fraction``."""
    noise = filt._obs_noise
    if noise.is_diagonal:
        tempered = GaussianNoise(std=noise.std / np.sqrt(fraction), name=noise.name)
    else:
        tempered = GaussianNoise(covariance=noise.covariance / fraction, name=noise.name)
    try:
        filt._obs_noise = tempered
        yield
    finally:
        filt._obs_noise = noise
