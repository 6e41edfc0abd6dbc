"""The localised analysis of :class:`~dasim.filters.KDEDiffusionFilter` (#14).

Each state component ``k`` is updated with the observations near it: the log-likelihood
terms of the observations are tapered into local log-weights ``L[i, k]``
(:func:`dasim.diffusion.kde_local.local_log_weights`), optionally tempered column by
column to an ESS target, and the analysis ensemble is the probability flow of the
localised score (:func:`dasim.diffusion.kde_local.sample_ode_local`).
"""

from __future__ import annotations

import numpy as np

__all__ = []


def observation_terms(filt, y, predicted, rng):
    """Per-observation log-likelihood terms ``l[i, j]`` of the observed components.

    Returns the terms (N, n_observed), the boolean mask of observed components, and the
    factor ``c`` of ``c R^(1/2)`` (noise-unit specs), the absolute ``sigma_y`` (the
    paper's specs) or NaN (the untempered known likelihood).
    """
    from .kde import _noise_units, _resolve_bandwidth

    mask = ~np.isnan(y)
    spec = filt.bandwidth_y
    std = filt._noise_std
    if filt.likelihood == "known":
        resid = (y[mask] - predicted[:, mask]) / _diagonal_std(std, mask)
        return -0.5 * resid**2, mask, (1.0 if spec == "ess" else np.nan)
    sim = filt.observation_._add_noise(predicted, rng, std, filt._noise_cov)[:, mask]
    if not _noise_units(spec):
        sigma_y = float(_resolve_bandwidth(spec, sim))
        return -0.5 * ((y[mask] - sim) / sigma_y) ** 2, mask, sigma_y
    c = 1.0 if isinstance(spec, str) else float(spec[1])
    resid = (y[mask] - sim) / _diagonal_std(std, mask)
    return -0.5 * resid**2 / c**2, mask, c


def _diagonal_std(std, mask):
    if std is None:  # checked in _start_run; kept as a guard for direct callers
        raise ValueError("a localised likelihood needs a diagonal observation noise.")
    return std[mask]


def shrink_local(X, L, sigma_x):
    r"""Shrink each component's centres toward its local weighted mean, preserving variance.

    Component :math:`k` of every centre becomes :math:`m_k + a_k (x_{ik} - m_k)`, with
    :math:`m_k = \sum_i \pi_{ik} x_{ik}`, :math:`v_k = \sum_i \pi_{ik} (x_{ik} - m_k)^2` and
    :math:`a_k = \sqrt{1 - \sigma_x^2 / v_k}` (Liu and West 2001, per component), so
    that component :math:`k`'s local mixture :math:`\sum_i \pi_{ik}
    \mathcal N(m_k + a_k (x_{ik} - m_k), \sigma_x^2)` has mean :math:`m_k` and variance
    :math:`v_k`. Where :math:`v_k \le \sigma_x^2`, :math:`a_k = 0`: the centres meet at
    the mean and the kernel alone gives the variance :math:`\sigma_x^2`.
    """
    top = np.max(L, axis=0, keepdims=True)
    pi = np.exp(L - top)
    pi /= pi.sum(axis=0, keepdims=True)
    m = np.sum(pi * X, axis=0)
    v = np.sum(pi * (X - m) ** 2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.sqrt(np.clip(1.0 - sigma_x**2 / v, 0.0, 1.0))
    a = np.where(v > 0, a, 0.0)
    return m + a * (X - m)


def local_analysis(filt, forecast, y, predicted, sigma_x, rng):
    """One localised analysis: local weights, then the localised probability flow."""
    from ..diffusion.kde_local import (
        _column_ess,
        local_log_weights,
        local_tempered_log_weights,
        sample_ode_local,
    )
    from ..diffusion.kde_sampling import default_sigma_max
    from ..diffusion.schedules import make_schedule

    n = forecast.shape[0]
    terms, mask, c = observation_terms(filt, y, predicted, rng)
    L = local_log_weights(terms, filt._taper_xy[:, mask])
    if filt.bandwidth_y == "ess":
        L, beta = local_tempered_log_weights(L, filt.ess_target * n)
        with np.errstate(divide="ignore"):
            c = float(np.mean(1.0 / np.sqrt(beta)))
    ess = _column_ess(L)
    filt._warn_collapse(float(ess.min()), n)
    if filt.sigma_max is None:
        sigma_max = default_sigma_max(forecast, sigma_x)
    else:
        sigma_max = float(filt.sigma_max)
        if sigma_max <= sigma_x:
            raise ValueError(
                f"sigma_max={sigma_max} must exceed the state bandwidth sigma_x={sigma_x}."
            )
    schedule = make_schedule(
        filt.schedule, sigma_x=sigma_x, sigma_max=sigma_max, beta_max=filt.beta_max
    )
    centres = forecast
    if filt.shrink:
        centres = shrink_local(forecast, L, sigma_x)
    mean = centres.mean(axis=0)
    torch_backend = filt.device_ != "numpy"
    out, info = sample_ode_local(
        centres - mean,
        L,
        filt._taper_xx,
        schedule,
        rng,
        solver=filt.ode_solver,
        n_steps=None if filt.ode_solver == "rk45" else filt.ode_steps,
        rtol=filt.rtol,
        atol=filt.atol,
        backend="torch" if torch_backend else "numpy",
        device=filt.device_ if torch_backend else None,
        chunk_size=filt.chunk_size,
    )
    diag = {
        "ess": float(np.mean(ess)),
        "n_steps": float(info["n_steps"]),
        "nfev": float(info["nfev"]),
        "bandwidth_x": sigma_x,
        "bandwidth_y": c,
        "n_stages": 1.0,
    }
    return out + mean, None, diag
