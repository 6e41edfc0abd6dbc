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

With ``kalman_fraction="ess"`` the fraction is chosen every cycle, as in Frei and Kuensch's
adaptive EnKPF: the smallest ``gamma`` whose remaining weights
``p(y | x_i^gamma)^(1 - gamma)`` at the Kalman step's members ``x_i^gamma`` keep an
effective sample size of at least ``ess_target * N`` (:func:`adaptive_fraction`);
``("ess", floor)`` never takes less than ``floor``. Where the likelihood is weak against
the ensemble this is the floor; where the weights would collapse it hands more of the
update to the Kalman step.
"""

from __future__ import annotations

import contextlib
import numbers

import numpy as np

from .._noise import GaussianNoise
from .._stats import effective_sample_size
from .enkf import sqrt_update

#: Largest fraction the adaptive choice hands to the Kalman step, and its resolution.
_GAMMA_MAX = 0.99
_GAMMA_TOL = 1e-3

__all__ = []


def check_kalman_fraction(kf):
    """Raise a ValueError naming ``kalman_fraction`` unless ``kf`` is one of its forms."""

    def fraction(v):
        return not isinstance(v, bool) and isinstance(v, numbers.Real) and 0 <= v < 1

    adaptive = isinstance(kf, str) and kf == "ess"
    pair = isinstance(kf, tuple | list) and len(kf) == 2 and isinstance(kf[0], str)
    if not (fraction(kf) or adaptive or (pair and kf[0] == "ess" and fraction(kf[1]))):
        raise ValueError(
            "kalman_fraction must be in [0, 1), 'ess' or ('ess', floor) with floor in "
            f"[0, 1), got {kf!r}."
        )


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


def adaptive_fraction(filt, forecast, y, predicted, target, floor=0.0):
    """The smallest ``gamma`` in ``[floor, 0.99]`` whose remaining weights keep ESS >= ``target``.

    The remaining weights are ``(1 - gamma) log p(y | x_i^gamma)`` at the members of
    :func:`kalman_step` with ``gamma``. Their ESS is N as ``gamma -> 1`` (the exponent
    vanishes); bisection on ``gamma`` to a resolution of 1e-3 finds where it crosses the
    target (0.99 when it never does, ``floor`` when ``floor`` already meets it).

    Returns
    -------
    gamma : float
    members : numpy.ndarray of shape (n_members, n_state)
        The Kalman step's ensemble for ``gamma`` (``forecast`` itself for 0).
    """
    if not (~np.isnan(y)).any():
        return floor, forecast

    def ess(gamma):
        members = forecast if gamma == 0.0 else kalman_step(filt, forecast, y, predicted, gamma)
        pred = predicted if gamma == 0.0 else filt.observation_.apply(members)
        ell = filt._obs_noise.log_likelihood(y, pred)
        return effective_sample_size((1.0 - gamma) * ell), members

    value, members = ess(floor)
    if value >= target:
        return floor, members
    value, members = ess(_GAMMA_MAX)
    if value < target:
        return _GAMMA_MAX, members
    lo, hi, best = floor, _GAMMA_MAX, members
    while hi - lo > _GAMMA_TOL:
        mid = 0.5 * (lo + hi)
        value, members = ess(mid)
        if value >= target:
            hi, best = mid, members
        else:
            lo = mid
    return hi, best
