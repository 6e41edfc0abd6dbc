"""The global analysis of :class:`~dasim.filters.KDEDiffusionFilter`: bandwidth specs,
observation weights, progressive correction and the global transport (private)."""

from __future__ import annotations

import numbers

import numpy as np

__all__ = []

_RULES = ("scott", "silverman")
#: Observation-bandwidth specs in units of the observation noise R^(1/2).
_NOISE_RULES = ("noise", "ess")


def _check_bandwidth(value, name, rules=_RULES):
    """Validate a bandwidth spec: float > 0, a rule name, or a (rule, factor) pair."""
    if isinstance(value, str):
        if value not in rules:
            raise ValueError(
                f"{name} must be a positive float, one of {rules}, or a "
                f"(rule, factor) pair; got {value!r}."
            )
        return
    if isinstance(value, tuple | list) and len(value) == 2 and isinstance(value[0], str):
        if value[0] == "ess":
            raise ValueError(f"{name}='ess' takes no factor (set ess_target), got {value!r}.")
        _check_bandwidth(value[0], name, rules)
        factor = value[1]
        if (
            isinstance(factor, bool)
            or not isinstance(factor, numbers.Real)
            or not (np.isfinite(factor) and factor > 0)
        ):
            raise ValueError(f"{name}'s factor must be a positive number, got {factor!r}.")
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a positive float, one of {_RULES}, or a "
            f"(rule, factor) pair; got {value!r}."
        )
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}.")


def _resolve_bandwidth(value, ensemble):
    """Turn a bandwidth spec into a number for this ensemble."""
    from ..diffusion.kde_sampling import bandwidth_rule

    if isinstance(value, str):
        return bandwidth_rule(ensemble, value)
    if isinstance(value, tuple | list):
        return bandwidth_rule(ensemble, value[0], float(value[1]))
    return float(value)


def _relative_bandwidth(value, n_members, n_state):
    """The covariance kernel's relative bandwidth h: a rule's constant (times a factor)."""
    from ..diffusion.kde_sampling import rule_constant

    if isinstance(value, str):
        return rule_constant(value, n_members, n_state)
    if isinstance(value, tuple | list):
        return float(value[1]) * rule_constant(value[0], n_members, n_state)
    return float(value)


def _noise_units(value):
    """Whether an observation-bandwidth spec is in units of the observation noise."""
    head = value[0] if isinstance(value, tuple | list) else value
    return isinstance(head, str) and head in _NOISE_RULES


def progressive_analysis(filt, ensemble, y, loglik, sigma_x, rng):
    """Progressive correction: stages of ESS-targeted tempering until the exponent is 1.

    Each stage takes the largest exponent ``beta_s`` (at most what is left of 1) that
    keeps the weights' ESS at ``ess_target * N``, samples the tempered KDE conditional,
    and re-evaluates the likelihood at the new members (Musso, Oudjane and Le Gland
    2001). The diagnostic ``bandwidth_y`` is ``1/sqrt(sum_s beta_s)``: 1 when the whole
    likelihood was assimilated within ``max_stages``.
    """
    from ..diffusion.kde_sampling import tempered_log_weights

    n = ensemble.shape[0]
    target = filt._ess_count(n)
    done, ess_min, n_steps, nfev, stages = 0.0, np.inf, 0.0, 0.0, 0
    while stages < filt.max_stages and done < 1.0 - 1e-12:
        if stages > 0:
            predicted = filt.observation_.apply(ensemble)
            loglik = filt._obs_noise.log_likelihood(y, predicted)
        log_w, beta = tempered_log_weights(loglik, target, max_exponent=1.0 - done)
        ensemble, info = filt._draw(ensemble, log_w, sigma_x, rng)
        done += beta
        stages += 1
        ess_min = min(ess_min, float(info["ess"]))
        n_steps += float(info.get("n_steps", 0.0))
        nfev += float(info.get("nfev", 0.0))
        if beta <= 0.0:
            break
    filt._warn_collapse(ess_min, n)
    diag = {
        "ess": ess_min,
        "n_steps": n_steps,
        "nfev": nfev,
        "bandwidth_x": sigma_x,
        "bandwidth_y": 1.0 / np.sqrt(done) if done > 0 else np.inf,
        "n_stages": float(stages),
    }
    return ensemble, None, diag


def observation_weights(filt, y, predicted, loglik, rng):
    """Log-weights of the members and the observation bandwidth used.

    Returns the log-weights and ``sigma_y``: absolute for the paper's specs, the factor
    ``c`` of ``c R^(1/2)`` for ``"noise"`` and ``"ess"``, NaN for the untempered known
    likelihood.
    """
    from ..diffusion.kde import observation_log_weights
    from ..diffusion.kde_sampling import tempered_log_weights

    spec = filt.bandwidth_y
    target = filt._ess_count(predicted.shape[0])
    if filt.likelihood == "known":
        if spec == "ess":
            log_w, beta = tempered_log_weights(loglik, target, max_exponent=1.0)
            return log_w, 1.0 / np.sqrt(beta) if beta > 0 else np.inf
        return loglik, np.nan
    sim = predicted + filt._obs_noise.sample(predicted.shape[:-1], rng)
    if not _noise_units(spec):
        sigma_y = _resolve_bandwidth(spec, sim[:, ~np.isnan(y)])
        return observation_log_weights(y, sim, sigma_y), sigma_y
    # -|R^(-1/2) (y* - y_i)|^2 / 2 (plus a constant): the distance in noise units.
    ell = filt._obs_noise.log_likelihood(y, sim)
    if spec == "ess":
        log_w, beta = tempered_log_weights(ell, target)
        return log_w, 1.0 / np.sqrt(beta) if beta > 0 else np.inf
    c = 1.0 if isinstance(spec, str) else float(spec[1])
    return ell / c**2, c


def transport_analysis(filt, forecast, log_w, sigma_x, sigma_max):
    """Move the members to the weighted KDE by the probability flow (``flow_start``)."""
    from .._stats import effective_sample_size
    from ..diffusion.kde_transport import transport_ode
    from ..diffusion.schedules import make_schedule

    schedule = make_schedule(
        filt.schedule, sigma_x=sigma_x, sigma_max=sigma_max, beta_max=filt.beta_max
    )
    mean = forecast.mean(axis=0)
    centred = forecast - mean  # the centres, and the members they move
    torch_backend = filt.device_ != "numpy"
    out, info = transport_ode(
        centred,
        log_w,
        schedule,
        centred,
        solver=filt.ode_solver,
        n_steps=filt.ode_steps,
        backend="torch" if torch_backend else "numpy",
        device=filt.device_ if torch_backend else None,
        chunk_size=filt.chunk_size,
        score_dtype=filt.score_dtype,
    )
    return out + mean, dict(info, ess=effective_sample_size(log_w))
