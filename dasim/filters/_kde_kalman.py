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
from scipy.linalg import solve_triangular

from .enkf import _etkf, _letkf

__all__ = []


def kalman_step(filt, forecast, y, predicted, gamma):
    """ETKF (LETKF with the filter's ``_taper_xy``) update with observation noise ``R/gamma``.

    Returns the updated ensemble (n_members, n_state); unobserved components of ``y``
    (NaN) are left out, and a cycle with no observation returns ``forecast`` itself.
    """
    mask = ~np.isnan(y)
    if not mask.any():
        return forecast
    n = forecast.shape[0]
    hx = predicted[:, mask]
    scale = np.sqrt(gamma)  # R^(-1/2) of R / gamma is sqrt(gamma) R^(-1/2)
    if filt._noise_std is not None:
        std = filt._noise_std[mask]

        def whiten(v):
            return scale * v / std

    else:
        chol = np.linalg.cholesky(filt._noise_cov[np.ix_(mask, mask)])

        def whiten(v):
            return scale * solve_triangular(chol, v.T, lower=True).T

    xbar = forecast.mean(axis=0)
    anom = (forecast - xbar) / np.sqrt(n - 1)
    ybar = hx.mean(axis=0)
    yw = whiten(hx - ybar) / np.sqrt(n - 1)
    dw = whiten(y[mask] - ybar)
    if filt._taper_xy is None:
        incr, anom_a = _etkf(yw, dw, anom)
    else:
        incr, anom_a = _letkf(yw, dw, anom, np.sqrt(filt._taper_xy[:, mask]))
    return (xbar + incr) + np.sqrt(n - 1) * anom_a


@contextlib.contextmanager
def tempered_noise(filt, fraction):
    """Within the block, the filter's observation noise is ``R / fraction``."""
    std, cov = filt._noise_std, filt._noise_cov
    try:
        if std is not None:
            filt._noise_std = std / np.sqrt(fraction)
        if cov is not None:
            filt._noise_cov = cov / fraction
        yield
    finally:
        filt._noise_std, filt._noise_cov = std, cov
