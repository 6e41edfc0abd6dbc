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
    from ._kde_global import _noise_units, _resolve_bandwidth

    mask = ~np.isnan(y)
    spec = filt.bandwidth_y
    noise = filt._obs_noise
    std = noise.std if noise.is_diagonal else None
    if filt.likelihood == "known":
        resid = (y[mask] - predicted[:, mask]) / _diagonal_std(std, mask)
        return -0.5 * resid**2, mask, (1.0 if spec == "ess" else np.nan)
    sim = (predicted + noise.sample(predicted.shape[:-1], rng))[:, mask]
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
    """One localised analysis: local weights, then the localised probability flow.

    With ``max_stages > 1`` (``likelihood="known"``, ``bandwidth_y="ess"``): progressive
    correction per component. Each stage tempers each component's local weights with the
    largest exponent that keeps its ESS at the target (at most what is left of 1 for that
    component), runs the flow, and re-evaluates the likelihood terms at the new members,
    until every component has assimilated its whole tapered likelihood or the stages run
    out.
    """
    from .._stats import column_effective_sample_size
    from ..diffusion.kde_local import local_log_weights, local_tempered_log_weights

    n, d = forecast.shape
    target = filt._ess_count(n)
    ensemble = forecast
    done = np.zeros(d)
    ess_min, n_steps, nfev, stages = np.inf, 0.0, 0.0, 0
    while stages < filt.max_stages and np.any(done < 1.0 - 1e-12):
        if stages > 0:
            predicted = filt.observation_.apply(ensemble)
        terms, mask, c = observation_terms(filt, y, predicted, rng)
        L = local_log_weights(terms, filt._taper_xy[:, mask])
        beta = np.ones(d)
        if filt.bandwidth_y == "ess":
            L, beta = local_tempered_log_weights(L, target, max_exponent=1.0 - done)
        ess = column_effective_sample_size(L)
        ess_min = min(ess_min, float(np.mean(ess)))
        if stages == 0:
            filt._warn_collapse(float(ess.min()), n)
        ensemble, info = _flow(filt, ensemble, L, sigma_x, rng)
        done += beta
        stages += 1
        n_steps += info["n_steps"]
        nfev += info["nfev"]
        if not np.any(beta > 0):
            break
    if filt.bandwidth_y == "ess":
        with np.errstate(divide="ignore"):
            c = float(np.mean(1.0 / np.sqrt(done)))
    diag = {
        "ess": ess_min,
        "n_steps": float(n_steps),
        "nfev": float(nfev),
        "bandwidth_x": sigma_x,
        "bandwidth_y": c,
        "n_stages": float(stages),
    }
    return ensemble, None, diag


def _flow(filt, ensemble, L, sigma_x, rng):
    """Sample the localised KDE conditional with local log-weights ``L``."""
    from ..diffusion.kde_local import sample_ode_local
    from ..diffusion.schedules import make_schedule

    sigma_max = filt._state_sigma_max(ensemble, sigma_x)
    schedule = make_schedule(
        filt.schedule, sigma_x=sigma_x, sigma_max=sigma_max, beta_max=filt.beta_max
    )
    centres = shrink_local(ensemble, L, sigma_x) if filt._shrink else ensemble
    mean = centres.mean(axis=0)
    if filt._flow_start == "members":
        from ..diffusion.kde_transport import transport_ode_local

        out, info = transport_ode_local(
            centres - mean,
            L,
            filt._taper_xx,
            schedule,
            ensemble - mean,
            solver=filt.ode_solver,
            n_steps=filt.ode_steps,
            chunk_size=filt.chunk_size,
            score_dtype=filt.score_dtype,
        )
        return out + mean, info
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
        score_dtype=filt.score_dtype,
    )
    return out + mean, info
