"""The probability-flow ODE of a score ``score(x, t)``: adaptive RK45 or fixed steps.

The fixed-step exponential integrators in the log of the noise level (the grid
:func:`ode_sigma_grid`, the step weights and the flow), and :func:`probability_flow`, which
integrates the flow of any score callable by them or by RK45 (:mod:`dasim.diffusion._ode`),
on numpy arrays or torch tensors alike; shared by the global sampler
(:func:`dasim.diffusion.kde_sampling.sample_ode`) and the localised one
(:mod:`dasim.diffusion.kde_local`). The public names are documented, and imported, from
:mod:`dasim.diffusion.kde_sampling`.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from scipy.optimize import brentq

from dasim.diffusion._ode import rk45
from dasim.diffusion._xp import namespace
from dasim.diffusion.schedules import VESchedule

#: Solvers of the probability-flow ODE: adaptive RK45 (the paper's), and the fixed-step
#: exponential integrators in log sigma (see ``sample_ode``).
_ODE_SOLVERS = ("rk45", "heun", "ab2", "ab3")
#: Score evaluations a cycle of the fixed-step solvers' default step counts.
_DEFAULT_ODE_NFEV = 20

# Gauss-Legendre nodes and weights on [-1, 1] for the step weights: on panels of length
# at most 1, 8 nodes integrate exp(lambda) times a polynomial of degree <= 2 to rounding
# (the rule's error term is below 1e-20 there), and without the cancellation of the
# closed forms (phi functions) at small steps.
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(8)


def _step_weights(lam_a, lam_b, nodes):
    r"""Weights :math:`w_j` of :math:`z_b = r z_a + \sum_j w_j D_j` over one step in log sigma.

    With :math:`\lambda = -\log\tilde\sigma` the flow is :math:`d(e^{\lambda} z)/d\lambda
    = e^{\lambda} D`, so replacing :math:`D` by its Lagrange interpolant through
    :math:`(\lambda_j, D_j)` and integrating exactly gives
    :math:`w_j = e^{-\lambda_b}\int_{\lambda_a}^{\lambda_b} e^{\lambda} L_j(\lambda)\,
    d\lambda`, with :math:`\sum_j w_j = 1 - r`, :math:`r = e^{\lambda_a - \lambda_b}`.
    """
    h = lam_b - lam_a
    panels = max(1, math.ceil(h))
    edges = lam_a + h * np.arange(panels) / panels
    width = h / panels
    q = (edges[:, None] + 0.5 * width * (_GL_NODES + 1.0)).ravel()
    qw = (0.5 * width * np.tile(_GL_WEIGHTS, panels)) * np.exp(q - lam_b)
    nodes = np.asarray(nodes, dtype=np.float64)
    weights = []
    for j in range(nodes.shape[0]):
        basis = np.ones_like(q)
        for k in range(nodes.shape[0]):
            if k != j:
                basis *= (q - nodes[k]) / (nodes[j] - nodes[k])
        weights.append(float(qw @ basis))
    return weights


def _scaled_std(schedule, t):
    """The VE-equivalent noise level sigmabar(t) / mu(t) of the flow in z = x / mu(t)."""
    return math.sqrt(float(schedule.sigmabar2(t))) / float(schedule.mu(t))


def ode_sigma_grid(schedule, n_steps):
    r"""Time grid of the fixed-step probability-flow solvers: geometric in the noise level.

    Every schedule's marginals are :math:`\mu(t)` times those of a VE flow with noise level
    :math:`\tilde\sigma(t) = \bar\sigma(t)/\mu(t)` (for VE, :math:`\tilde\sigma =
    \bar\sigma`, the total standard deviation, kernel floor included). The grid is
    :math:`\tilde\sigma_k = \tilde\sigma(t_s)\,(\tilde\sigma(t_e)/\tilde\sigma(t_s))^{k/K}`,
    :math:`k = 0..K`, from ``t_start`` (noise) to ``t_end`` (the floor
    :math:`\tilde\sigma(t_e) = \sigma_x/\mu(t_e)`), and :math:`t_k` solves
    :math:`\tilde\sigma(t_k) = \tilde\sigma_k` (closed form for VE, Brent's method
    otherwise; :math:`\tilde\sigma` must increase with :math:`t`).

    Parameters
    ----------
    schedule : VESchedule or VPSchedule
        The diffusion schedule.
    n_steps : int
        Number of steps :math:`K` (>= 1).

    Returns
    -------
    t : numpy.ndarray of shape (n_steps + 1,)
        Times, from ``t_start`` down to ``t_end``.
    sigma : numpy.ndarray of shape (n_steps + 1,)
        :math:`\tilde\sigma(t_k)`, decreasing.

    Examples
    --------
    >>> from dasim.diffusion.schedules import VESchedule
    >>> t, sigma = ode_sigma_grid(VESchedule(1.0, 100.0), 2)
    >>> sigma.round(6).tolist(), t.round(6).tolist()
    ([100.0, 10.0, 1.0], [1.0, 0.090909, 0.0])
    """
    n_steps = _check_n_steps(n_steps)
    t0, t1 = float(schedule.t_start), float(schedule.t_end)
    s0, s1 = _scaled_std(schedule, t0), _scaled_std(schedule, t1)
    if not (math.isfinite(s0) and math.isfinite(s1) and s0 > s1 > 0):
        raise ValueError(
            f"the schedule's noise level sigmabar/mu must decrease from t_start to t_end, got "
            f"{s0!r} at t={t0!r} and {s1!r} at t={t1!r}."
        )
    target = np.geomspace(s0, s1, n_steps + 1)
    t = np.empty(n_steps + 1)
    t[0], t[-1] = t0, t1
    for k in range(1, n_steps):
        if isinstance(schedule, VESchedule):  # sigmabar linear in t
            t[k] = (target[k] - schedule.sigma_x) / (schedule.sigma_max - schedule.sigma_x)
        else:
            log_k = math.log(target[k])
            t[k] = brentq(
                lambda u, c=log_k: math.log(_scaled_std(schedule, u)) - c,
                t1,
                t0,
                xtol=1e-14,
                rtol=4 * np.finfo(float).eps,
            )
    sigma = np.array([_scaled_std(schedule, u) for u in t])
    if not np.all(np.diff(sigma) < 0):
        raise ValueError("the schedule's noise level sigmabar/mu is not monotone in t.")
    return t, sigma


def _check_n_steps(n_steps, name="n_steps"):
    if isinstance(n_steps, bool) or not isinstance(n_steps, numbers.Integral) or n_steps < 1:
        raise ValueError(f"{name} must be a positive integer, got {n_steps!r}.")
    return int(n_steps)


def default_ode_steps(solver):
    """Default step count of a fixed-step ODE solver: 20 score evaluations a sample.

    Parameters
    ----------
    solver : {"heun", "ab2", "ab3"}
        The solver (see :func:`sample_ode`).

    Returns
    -------
    int
        10 for ``"heun"`` (two score evaluations a step), 20 for the multistep solvers.

    Examples
    --------
    >>> default_ode_steps("ab3"), default_ode_steps("heun")
    (20, 10)
    """
    if solver not in _ODE_SOLVERS[1:]:
        raise ValueError(f"solver must be one of {_ODE_SOLVERS[1:]}, got {solver!r}.")
    return _DEFAULT_ODE_NFEV // 2 if solver == "heun" else _DEFAULT_ODE_NFEV


def _fixed_step_flow(denoise, z, sigma, solver):
    """Integrate dz/dsigma = (z - D(z, sigma)) / sigma down the grid ``sigma``.

    ``denoise(z, k)`` is the denoiser at ``sigma[k]``. Only multiplications by Python
    floats and additions: ``z`` may be a numpy array or a torch tensor. Returns the state
    at ``sigma[-1]`` and the number of ``denoise`` calls.
    """
    lam = -np.log(sigma)
    n_steps = lam.shape[0] - 1
    order = {"ab2": 2, "ab3": 3}.get(solver, 1)
    history = [(lam[0], denoise(z, 0))]
    nfev = 1
    for k in range(n_steps):
        r = float(sigma[k + 1] / sigma[k])
        used = history[-order:]
        w = _step_weights(lam[k], lam[k + 1], [node for node, _ in used])
        z_next = z * r
        for wj, (_, d) in zip(w, used, strict=True):
            z_next = z_next + d * wj
        if solver == "heun":  # exponential trapezoid: interpolate D linearly in lambda
            d_end = denoise(z_next, k + 1)
            nfev += 1
            w2 = _step_weights(lam[k], lam[k + 1], [lam[k], lam[k + 1]])
            z_next = z * r + history[-1][1] * w2[0] + d_end * w2[1]
        z = z_next
        if k + 1 < n_steps:
            history = history[-2:] + [(lam[k + 1], denoise(z, k + 1))]
            nfev += 1
    return z, nfev


def probability_flow(score, schedule, x1, solver, n_steps, rtol, atol, what=None):
    r"""Integrate :math:`dx/dt = f(t) x - \tfrac12 g^2(t)\, \text{score}(x, t)` from
    ``t_start`` to ``t_end``.

    ``solver="rk45"``: adaptive (``rtol``, ``atol``); otherwise the fixed-step solver
    ``solver`` in the log of the noise level, with ``n_steps`` steps, on the flow of
    :math:`z = x/\mu(t)` with the denoiser :math:`D = z + (\bar\sigma^2/\mu)\,
    \text{score}(\mu z, t)`. ``x1`` (the start) is a numpy array or a torch tensor; the
    score must take and return the same kind. Runs without autograd. Returns the state at
    ``t_end`` and an info dict (``n_steps``, ``nfev``, ``success``, ``message``, and with
    RK45 ``n_rejected``); raises RuntimeError ``"{what} solver failed: ..."`` when the
    solver fails or the result is not finite.
    """
    what = what or "probability-flow ODE"
    xp = namespace(x1)
    with xp.no_grad():
        if solver == "rk45":

            def drift(t, x):
                f, g2 = float(schedule.drift(t)), float(schedule.g2(t))
                return f * x - 0.5 * g2 * score(x, t)

            t0, t1 = float(schedule.t_start), float(schedule.t_end)
            return rk45(drift, t0, t1, x1, rtol, atol, what=what)
        t, sigma = ode_sigma_grid(schedule, n_steps)
        mus = [float(schedule.mu(u)) for u in t]

        def denoise(z, k):
            mu, sbar2 = mus[k], float(schedule.sigmabar2(t[k]))
            return z + score(z * mu, t[k]) * (sbar2 / mu)

        z, nfev = _fixed_step_flow(denoise, x1 / mus[0], sigma, solver)
    if not xp.all_finite(z):
        raise RuntimeError(
            f"{what} solver failed: non-finite state after the fixed-step {solver!r} solver."
        )
    info = {"n_steps": int(n_steps), "nfev": int(nfev), "success": True, "message": ""}
    return z * mus[-1], info
