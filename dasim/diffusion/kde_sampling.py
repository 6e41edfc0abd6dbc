r"""Samplers of the closed-form conditional KDE, and the one-call analysis step.

The target of one analysis (spec sections 1.6-1.7) is, in the centred coordinates of the
forecast ensemble :math:`x_i` (:math:`i = 1..N`), the Gaussian mixture

.. math::

    p(x \mid y^*) = \sum_i \pi_i\, \mathcal N\big(x;\ \mu(t_{end})\, x_i,\
    \sigma_x^2 I\big),\qquad \pi_i = \operatorname{softmax}_i(\ell_i),

with :math:`\mu(t_{end}) = 1` for the VE and (default) VP schedules (see
:mod:`dasim.diffusion.schedules`). Three samplers reach it:

* :func:`sample_mixture`: exact, :math:`O(N d)`: draw :math:`i \sim \pi`, add
  :math:`\sigma_x \xi`.
* :func:`sample_ode`: the probability-flow ODE
  :math:`dx/dt = f(t) x - \tfrac12 g^2(t)\, s(x, t \mid y^*)` from ``t_start = 1`` to
  ``t_end``, started from :math:`\mathcal N(0, s_1^2 I)`, by adaptive RK45 (the authors'
  sampler) or by a fixed-step exponential integrator in the log of the noise level
  (``solver="heun"``, ``"ab2"``, ``"ab3"``: 20 score evaluations by default);
  :math:`O(N^2 d)` per score evaluation.
* :func:`sample_sde`: the reverse SDE
  :math:`dx = [f(t) x - g^2(t)\, s(x, t \mid y^*)]\,dt + g(t)\, d\bar W` by
  Euler-Maruyama on a uniform grid.

:func:`kde_analysis` centres the ensemble, builds the schedule, samples and adds the mean
back: it is what ``KDEDiffusionFilter`` calls once per cycle.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from scipy.integrate import RK45
from scipy.optimize import brentq
from scipy.special import logsumexp

from dasim.diffusion.kde import (
    _Centres,
    _check_log_weights,
    _check_matrix,
    _is_tensor,
    _numpy_tile,
    _score_logp_prepared,
    check_score_dtype,
    effective_sample_size,
    resolve_device,
)
from dasim.diffusion.schedules import VESchedule, make_schedule

__all__ = [
    "bandwidth_rule",
    "rule_constant",
    "default_sigma_max",
    "reverse_start_std",
    "sample_mixture",
    "sample_ode",
    "ode_sigma_grid",
    "default_ode_steps",
    "sample_sde",
    "kde_analysis",
    "CovarianceKernel",
    "tempered_log_weights",
]

_SAMPLERS = ("ode", "sde", "mixture")
_KERNELS = ("isotropic", "covariance")
#: Solvers of the probability-flow ODE: adaptive RK45 (the paper's), and the fixed-step
#: exponential integrators in log sigma (see ``sample_ode``).
_ODE_SOLVERS = ("rk45", "heun", "ab2", "ab3")
#: Score evaluations a cycle of the fixed-step solvers' default step counts.
_DEFAULT_ODE_NFEV = 20


class _NonFinite(ArithmeticError):
    """Raised inside the ODE right-hand side when it is not finite."""


# --------------------------------------------------------------------------- helpers


def bandwidth_rule(X, rule="scott", factor=1.0):
    r"""Isotropic rule-of-thumb bandwidth of a Gaussian KDE of the rows of ``X``.

    .. math::

        h = \text{factor}\cdot c(N, d)\cdot \sqrt{\tfrac1d \textstyle\sum_j
        \widehat{\operatorname{Var}}(X_{:, j})},\qquad
        c_{\text{scott}} = N^{-1/(d+4)},\quad
        c_{\text{silverman}} = \Big(\frac{4}{d+2}\Big)^{1/(d+4)} N^{-1/(d+4)},

    with the unbiased (``ddof=1``) per-component variances. The kernel is isotropic: one
    scalar bandwidth, the rule's factor times the root of the *mean* variance (not a full
    covariance as in ``scipy.stats.gaussian_kde``). A user's multiplier of the rule
    (``bandwidth_x=0.5`` meaning "half of Scott") is ``factor``.

    Parameters
    ----------
    X : array-like of shape (N, d)
        Ensemble (N >= 2, finite).
    rule : {"scott", "silverman"}, default="scott"
        The rule.
    factor : float, default=1.0
        Multiplier, > 0.

    Returns
    -------
    float
        The bandwidth, > 0.

    Examples
    --------
    >>> X = np.array([[0.0], [2.0]])
    >>> round(bandwidth_rule(X, "scott"), 4)  # 2 ** (-1 / 5) * sqrt(2)
    1.2311
    """
    X = _check_matrix(X, "X")
    N, d = X.shape
    if N < 2:
        raise ValueError(f"X needs at least 2 rows for a bandwidth rule, got {N}.")
    if (
        isinstance(factor, bool)
        or not isinstance(factor, numbers.Real)
        or not (math.isfinite(factor) and factor > 0)
    ):
        raise ValueError(f"factor must be finite and > 0, got {factor!r}.")
    c = rule_constant(rule, N, d)
    spread = math.sqrt(float(np.mean(np.var(X, axis=0, ddof=1))))
    if spread == 0.0:
        raise ValueError("X has zero spread: every bandwidth rule gives 0.")
    return float(factor) * c * spread


def default_sigma_max(X, sigma_x):
    """The VE schedule's default ``sigma_max`` for centres ``X`` and bandwidth ``sigma_x``.

    Ten times the larger of the centres' root-mean-square distance to their mean and the
    bandwidth: the start of the reverse flow is then far wider than the target.

    Parameters
    ----------
    X : numpy.ndarray of shape (N, d)
        The kernel centres (the forecast ensemble, or its whitened centres).
    sigma_x : float
        The bandwidth (absolute, or the relative ``h`` in whitened units).

    Returns
    -------
    float
        ``10 * max(sqrt(sum_j Var(X[:, j])), sigma_x)``.

    Examples
    --------
    >>> default_sigma_max(np.array([[0.0], [2.0]]), 0.5)
    10.0
    """
    spread = math.sqrt(float(np.sum(np.var(X, axis=0))))
    return 10.0 * max(spread, float(sigma_x))


def rule_constant(rule, n, d):
    r"""The dimensionless constant :math:`c(N, d)` of a bandwidth rule.

    :math:`c_{\text{scott}} = N^{-1/(d+4)}` and :math:`c_{\text{silverman}} =
    (4/(d+2))^{1/(d+4)} N^{-1/(d+4)}`: the bandwidth relative to the data's spread, and the
    relative bandwidth :math:`h` of the covariance-shaped kernel
    (:class:`CovarianceKernel`).

    Parameters
    ----------
    rule : {"scott", "silverman"}
        The rule.
    n : int
        Number of points (>= 1).
    d : int
        Dimension (>= 1).

    Returns
    -------
    float
        :math:`c(N, d)`, in ``(0, 1]`` for Scott's rule.

    Examples
    --------
    >>> round(rule_constant("scott", 32, 1), 4)  # 32 ** (-1 / 5)
    0.5
    """
    if rule == "scott":
        return float(n ** (-1.0 / (d + 4)))
    if rule == "silverman":
        return float((4.0 / (d + 2)) ** (1.0 / (d + 4)) * n ** (-1.0 / (d + 4)))
    raise ValueError(f"rule must be 'scott' or 'silverman', got {rule!r}.")


def _check_rng(rng):
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, numbers.Integral | np.random.SeedSequence):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy.random.Generator, an int or None, got {rng!r}.")


def _normalised_weights(log_w):
    return np.exp(log_w - logsumexp(log_w))


def reverse_start_std(schedule, X, log_w_obs=None):
    r"""Standard deviation of the Gaussian the reverse ODE/SDE starts from at ``t = 1``.

    For the VE schedule it is ``schedule.prior_std`` :math:`= \sigma_{max}` (as in the
    authors' code). For schedules with ``moment_matched_start`` (VP) it is the
    root-mean-square per component of the diffused mixture at ``t_start``, in the centred
    coordinates the samplers work in:

    .. math::

        s_1 = \sqrt{\bar\sigma(1)^2 + \mu(1)^2\, \textstyle\sum_i \pi_i \lVert x_i\rVert^2 / d}.

    Parameters
    ----------
    schedule : VESchedule or VPSchedule
        The diffusion schedule.
    X : numpy.ndarray of shape (N, d)
        Centres (the centred forecast ensemble).
    log_w_obs : numpy.ndarray of shape (N,), optional
        Observation log-weights (uniform when None).

    Returns
    -------
    float
        The standard deviation :math:`s_1`.

    Examples
    --------
    >>> from dasim.diffusion.schedules import VESchedule
    >>> reverse_start_std(VESchedule(0.5, 30.0), np.zeros((3, 2)))
    30.0
    """
    if not getattr(schedule, "moment_matched_start", False):
        return float(schedule.prior_std)
    X = np.asarray(X, dtype=np.float64)
    log_w = _check_log_weights(log_w_obs, X.shape[0])
    pi = _normalised_weights(log_w)
    m2 = float(pi @ np.einsum("ij,ij->i", X, X)) / X.shape[1]
    t1 = schedule.t_start
    return math.sqrt(float(schedule.sigmabar2(t1)) + float(schedule.mu(t1)) ** 2 * m2)


def _prepare(X, log_w_obs, n_samples, backend):
    if backend not in ("numpy", "torch"):
        raise ValueError(f"backend must be 'numpy' or 'torch', got {backend!r}.")
    if _is_tensor(X):
        X = X.detach().cpu().numpy()
    if _is_tensor(log_w_obs):
        log_w_obs = log_w_obs.detach().cpu().numpy()
    X = _check_matrix(X, "X")
    log_w = _check_log_weights(log_w_obs, X.shape[0])
    if n_samples is None:
        n_samples = X.shape[0]
    if (
        isinstance(n_samples, bool)
        or not isinstance(n_samples, numbers.Integral)
        or (n_samples < 1)
    ):
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
    return X, log_w, int(n_samples)


def _start(x_start, schedule, X, log_w, n, rng):
    if x_start is None:
        std = reverse_start_std(schedule, X, log_w)
        return std * rng.standard_normal((n, X.shape[1])), std
    if _is_tensor(x_start):
        x_start = x_start.detach().cpu().numpy()
    x_start = _check_matrix(x_start, "x_start", ncols=X.shape[1])
    if x_start.shape[0] != n:
        raise ValueError(f"x_start must have {n} rows (n_samples), got {x_start.shape[0]}.")
    return x_start, None


def _torch_setup(device):
    import torch

    from dasim.diffusion import _kde_torch

    return torch, _kde_torch, torch.device(resolve_device(device))


def _coefficients(schedule, t):
    return (
        float(schedule.mu(t)),
        float(schedule.sigmabar2(t)),
        float(schedule.drift(t)),
        float(schedule.g2(t)),
    )


# --------------------------------------------------------------------------- fixed-step ODE

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


# --------------------------------------------------------------------------- samplers


def sample_mixture(X, log_w_obs, schedule, rng, *, n_samples=None, backend="numpy", device=None):
    r"""Exact sample of the target :math:`\sum_i \pi_i \mathcal N(\mu_e x_i, \sigma_x^2 I)`.

    Draws i.i.d. indices :math:`i_k \sim \pi` (multinomial, ``rng.choice`` with
    probabilities :math:`\pi = \operatorname{softmax}(\ell)`) and returns
    :math:`\mu_e x_{i_k} + \sigma_f \xi_k`, where :math:`\mu_e = \mu(t_{end})`
    (``schedule.target_mu``, 1 except for the early-stopped VP schedule) and
    :math:`\sigma_f = \bar\sigma(t_{end}) = \sigma_x` (``schedule.floor_std``). Cost
    :math:`O(N d)`; no score evaluation.

    Parameters
    ----------
    X : numpy.ndarray of shape (N, d)
        Centres: the centred forecast ensemble.
    log_w_obs : numpy.ndarray of shape (N,) or None
        Observation log-weights :math:`\ell_i` (``-inf`` allowed; None: uniform, the prior
        KDE).
    schedule : VESchedule or VPSchedule
        The diffusion schedule (:mod:`dasim.diffusion.schedules`).
    rng : numpy.random.Generator
        Source of randomness (an int or None seeds a new Generator).
    n_samples : int, optional
        Number of samples (default N).
    backend : {"numpy", "torch"}, default="numpy"
        Compute with numpy, or with torch on ``device`` (and return a tensor there).
    device : str, optional
        The torch device (``"auto"``, the default, picks CUDA when available).

    Returns
    -------
    samples : numpy.ndarray or torch.Tensor of shape (n_samples, d)
        The samples (drawn with ``rng`` on the CPU in either backend).
    info : dict
        Keys ``sampler``, ``n_steps`` (0), ``nfev`` (0), ``success``, ``message``.

    Examples
    --------
    >>> from dasim.diffusion.schedules import VESchedule
    >>> x, info = sample_mixture(np.zeros((3, 2)), None, VESchedule(1.0, 5.0),
    ...                          np.random.default_rng(0), n_samples=4)
    >>> x.shape, info["nfev"]
    ((4, 2), 0)
    """
    X, log_w, n = _prepare(X, log_w_obs, n_samples, backend)
    rng = _check_rng(rng)
    pi = _normalised_weights(log_w)
    idx = rng.choice(X.shape[0], size=n, replace=True, p=pi)
    out = schedule.target_mu * X[idx] + schedule.floor_std * rng.standard_normal((n, X.shape[1]))
    info = {"sampler": "mixture", "n_steps": 0, "nfev": 0, "success": True, "message": ""}
    if backend == "torch":
        torch, _, dev = _torch_setup(device)
        out = torch.as_tensor(out, device=dev)
    return out, info


def sample_ode(
    X,
    log_w_obs,
    schedule,
    rng,
    *,
    n_samples=None,
    rtol=1e-5,
    atol=1e-5,
    backend="numpy",
    device=None,
    chunk_size=None,
    memory_budget=None,
    x_start=None,
    solver="rk45",
    n_steps=None,
    score_dtype="float64",
):
    r"""Sample by the reverse probability-flow ODE: adaptive RK45 (the paper's) or fixed steps.

    .. math::

        \frac{dx}{dt} = f(t)\, x - \tfrac12 g^2(t)\, s(x, t \mid y^*),
        \qquad x(1) \sim \mathcal N(0, s_1^2 I),

    integrated from ``t_start = 1`` to ``schedule.t_end``, with :math:`s_1` from
    :func:`reverse_start_std`. The whole ensemble, flattened, is one system.

    ``solver="rk45"`` (the default, the paper's sampler) takes one shared adaptive step.
    numpy: scipy's ``RK45`` stepper (the integrator behind
    ``solve_ivp(method="RK45")``, stepped directly so that only the current state is kept
    in memory, not the whole trajectory); ``n_steps`` is the number of accepted steps
    (``len(sol.t) - 1`` of ``solve_ivp``). torch: :func:`dasim.diffusion._kde_torch.dopri5`,
    the same Dormand-Prince pair with the same step-size control on tensors; the state and
    the centres stay on ``device``, only the error norm (one scalar a step) is read back.

    The fixed-step solvers (``"heun"``, ``"ab2"``, ``"ab3"``) integrate in the log of the
    noise level. Under every schedule, :math:`z = x/\mu(t)` follows the VE flow

    .. math::

        \frac{dz}{d\tilde\sigma} = \frac{z - D(z, \tilde\sigma)}{\tilde\sigma},\qquad
        \tilde\sigma = \frac{\bar\sigma(t)}{\mu(t)},\qquad
        D = \sum_i \bar w_i\, x_i = z + \frac{\bar\sigma^2}{\mu}\, s(\mu z, t \mid y^*),

    where :math:`D` is the denoiser (the posterior mean of the kernel centre) and, for VE,
    :math:`\tilde\sigma = \bar\sigma = \sigma_x + t(\sigma_{max} - \sigma_x)` is the total
    standard deviation, kernel floor included: the flow ends at
    :math:`\tilde\sigma = \sigma_x` (:math:`\sigma_x/\mu(t_{end})` in general), where the
    density is the target mixture itself. With :math:`\lambda = -\log\tilde\sigma`,
    :math:`d(e^{\lambda} z)/d\lambda = e^{\lambda} D`, so a step from :math:`\tilde\sigma_k`
    to :math:`\tilde\sigma_{k+1}`, :math:`r = \tilde\sigma_{k+1}/\tilde\sigma_k`, is

    .. math::

        z_{k+1} = r\, z_k + (1 - r)\, D(z_k, \tilde\sigma_k)

    to first order (DDIM), exactly wherever :math:`D` does not change over the step (at
    large noise :math:`D` is the weighted mean of the centres). The solvers replace
    :math:`D` by a polynomial in :math:`\lambda` and integrate :math:`e^{\lambda}` times it
    exactly (weights by 8-point Gauss-Legendre, exact to rounding):

    * ``"heun"``: the first-order step predicts :math:`\hat z_{k+1}`, then :math:`D` is
      interpolated linearly between :math:`D(z_k, \tilde\sigma_k)` and
      :math:`D(\hat z_{k+1}, \tilde\sigma_{k+1})` (the exponential trapezoidal rule, EDM's
      Heun step in exponential form); second order, two score evaluations a step.
    * ``"ab2"``, ``"ab3"``: exponential Adams-Bashforth, :math:`D` extrapolated from its
      values at the last 2 or 3 grid points (fewer at the first steps); order 2 or 3, one
      score evaluation a step (the DPM-Solver++ (2M)/(3M) family, with exact weights).

    The grid is geometric in :math:`\tilde\sigma` (:func:`ode_sigma_grid`). By default the
    fixed-step solvers take 20 score evaluations a sample (:func:`default_ode_steps`); on
    the oracle problems of the test suite (energy distance and moments against
    :func:`sample_mixture`) they then match the exact mixture within its sampling noise.
    The arithmetic of the steps is shared by numpy and torch (one implementation; only the
    score differs).

    Parameters
    ----------
    X : numpy.ndarray of shape (N, d)
        Centres: the centred forecast ensemble.
    log_w_obs : numpy.ndarray of shape (N,) or None
        Observation log-weights :math:`\ell_i` (``-inf`` allowed; None: uniform, the prior
        KDE).
    schedule : VESchedule or VPSchedule
        The diffusion schedule (:mod:`dasim.diffusion.schedules`).
    rng : numpy.random.Generator
        Source of randomness (an int or None seeds a new Generator).
    n_samples : int, optional
        Number of samples (default N).
    rtol : float, default=1e-5
        Relative tolerance of RK45.
    atol : float, default=1e-5
        Absolute tolerance of RK45.
    backend : {"numpy", "torch"}, default="numpy"
        Compute with numpy, or with torch on ``device`` (and return a tensor there).
    device : str, optional
        The torch device (``"auto"``, the default, picks CUDA when available).
    chunk_size : int or tuple of (int, int), optional
        Tile of the score computation (see :func:`dasim.diffusion.kde.kde_score`).
    memory_budget : int, optional
        Bytes for the pairwise temporaries of one score tile (default 256 MiB).
    x_start : numpy.ndarray of shape (n_samples, d), optional
        Given start at ``t = 1`` instead of the Gaussian draw.
    solver : {"rk45", "heun", "ab2", "ab3"}, default="rk45"
        The ODE solver: adaptive RK45 (``rtol``, ``atol``), or a fixed-step solver in
        :math:`\log\tilde\sigma` (``n_steps``).
    n_steps : int, optional
        Steps of a fixed-step solver (default: :func:`default_ode_steps`, 20 score
        evaluations); must be None with ``"rk45"``.
    score_dtype : {"float64", "float32"}, default="float64"
        Precision of the score's pairwise tiles (see the ``dtype`` of
        :func:`dasim.diffusion.kde.kde_score`); the solver's state and the result stay in
        float64. ``"float32"`` makes a score evaluation about 1.5 x faster on CPU.

    Returns
    -------
    samples : numpy.ndarray or torch.Tensor of shape (n_samples, d)
        The samples at ``t_end``.
    info : dict
        Keys ``sampler``, ``solver``, ``n_steps`` (accepted steps), ``nfev`` (score
        evaluations: :math:`K` for ``"ab2"``/``"ab3"``, :math:`2K` for ``"heun"``),
        ``success``, ``message``, ``start_std`` (None when ``x_start`` is given), and with
        RK45 on torch ``n_rejected``.

    Raises
    ------
    RuntimeError
        When the integrator fails (with its message), e.g. on a non-finite right-hand side
        (RK45) or a non-finite result (fixed steps).

    Examples
    --------
    >>> from dasim.diffusion.schedules import VESchedule
    >>> rng = np.random.default_rng(0)
    >>> x, info = sample_ode(rng.normal(size=(20, 2)), None, VESchedule(0.3, 20.0), rng)
    >>> x.shape, 5 < info["n_steps"] < 40
    ((20, 2), True)
    >>> x, info = sample_ode(rng.normal(size=(20, 2)), None, VESchedule(0.3, 20.0), rng,
    ...                      solver="ab3")
    >>> info["n_steps"], info["nfev"]
    (20, 20)
    """
    X, log_w, n = _prepare(X, log_w_obs, n_samples, backend)
    rng = _check_rng(rng)
    _check_tolerance(rtol, "rtol")
    _check_tolerance(atol, "atol")
    score_dtype = check_score_dtype(score_dtype, "score_dtype", allow_none=False)
    if solver not in _ODE_SOLVERS:
        raise ValueError(f"solver must be one of {_ODE_SOLVERS}, got {solver!r}.")
    if solver == "rk45":
        if n_steps is not None:
            raise ValueError(
                "n_steps is the step count of the fixed-step solvers; solver='rk45' is "
                "adaptive (set rtol and atol), so leave n_steps=None."
            )
    else:
        n_steps = default_ode_steps(solver) if n_steps is None else _check_n_steps(n_steps)
        grid = ode_sigma_grid(schedule, n_steps)
    x1, std = _start(x_start, schedule, X, log_w, n, rng)
    if solver != "rk45":
        out, info = _sample_ode_fixed(
            X,
            log_w,
            schedule,
            x1,
            grid,
            solver,
            backend,
            device,
            chunk_size,
            memory_budget,
            score_dtype,
        )
        info["start_std"] = std
        return out, info
    t0, t1 = float(schedule.t_start), float(schedule.t_end)
    d = X.shape[1]
    if backend == "numpy":
        cen = _Centres(X, log_w, score_dtype)
        tile = _numpy_tile(n, cen.C0.shape[0], chunk_size, memory_budget)

        def rhs(t, y):
            mu, sbar2, f, g2 = _coefficients(schedule, t)
            x = y.reshape(n, d)
            s = _score_logp_prepared(x, mu, sbar2, cen, tile, True, False)[0]
            out = (f * x - 0.5 * g2 * s).ravel()
            if not np.all(np.isfinite(out)):  # scipy's RK45 would loop forever on NaN
                raise _NonFinite(f"non-finite right-hand side at t={t!r}")
            return out

        n_acc = 0
        try:
            stepper = RK45(rhs, t0, x1.ravel(), t1, rtol=rtol, atol=atol)
            while stepper.status == "running":
                message = stepper.step()
                if stepper.status == "failed":
                    raise RuntimeError(f"probability-flow ODE solver failed: {message}")
                n_acc += 1
        except _NonFinite as exc:
            raise RuntimeError(f"probability-flow ODE solver failed: {exc}") from None
        out = stepper.y.reshape(n, d).copy()
        info = {
            "sampler": "ode",
            "solver": "rk45",
            "n_steps": n_acc,
            "nfev": int(stepper.nfev),
            "success": True,
            "message": "The solver successfully reached the end of the integration interval.",
        }
    else:
        torch, kt, dev = _torch_setup(device)
        Xt = torch.as_tensor(X, device=dev)
        cen = kt.Centres(Xt, torch.as_tensor(log_w, device=dev), kt.as_torch_dtype(score_dtype))
        tile = kt.torch_tile(n, cen.C0.shape[0], chunk_size, memory_budget, cen.dtype, dev)

        def rhs(t, x):
            mu, sbar2, f, g2 = _coefficients(schedule, t)
            s = kt.score_logp_prepared(x, mu, sbar2, cen, tile, True, False)[0]
            return x * f - (0.5 * g2) * s if f != 0.0 else s * (-0.5 * g2)

        with torch.no_grad():
            out, info = kt.dopri5(rhs, t0, t1, torch.as_tensor(x1, device=dev), rtol, atol)
        if not info["success"]:
            raise RuntimeError(f"probability-flow ODE solver failed: {info['message']}")
        info = {"sampler": "ode", "solver": "rk45", **info}
    info["start_std"] = std
    return out, info


def _sample_ode_fixed(
    X,
    log_w,
    schedule,
    x1,
    grid,
    solver,
    backend,
    device,
    chunk_size,
    memory_budget,
    score_dtype="float64",
):
    r"""The fixed-step solvers of :func:`sample_ode`: one loop for numpy and torch.

    The flow runs in :math:`z = x/\mu(t)`, where every schedule is the VE flow
    :math:`dz/d\tilde\sigma = (z - D(z))/\tilde\sigma` with the denoiser
    :math:`D = z + (\bar\sigma^2/\mu)\, s(\mu z, t)` built from the score.
    """
    t, sigma = grid
    coeffs = [(float(schedule.mu(u)), float(schedule.sigmabar2(u))) for u in t]
    n = x1.shape[0]
    if backend == "numpy":
        cen = _Centres(X, log_w, score_dtype)
        tile = _numpy_tile(n, cen.C0.shape[0], chunk_size, memory_budget)

        def score(x, mu, sbar2):
            return _score_logp_prepared(x, mu, sbar2, cen, tile, True, False)[0]

        z0 = x1
    else:
        torch, kt, dev = _torch_setup(device)
        Xt = torch.as_tensor(X, device=dev)
        cen = kt.Centres(Xt, torch.as_tensor(log_w, device=dev), kt.as_torch_dtype(score_dtype))
        tile = kt.torch_tile(n, cen.C0.shape[0], chunk_size, memory_budget, cen.dtype, dev)

        def score(x, mu, sbar2):
            return kt.score_logp_prepared(x, mu, sbar2, cen, tile, True, False)[0]

        z0 = torch.as_tensor(x1, device=dev)

    def denoise(z, k):
        mu, sbar2 = coeffs[k]
        return z + score(z * mu, mu, sbar2) * (sbar2 / mu)

    mu0, mu_end = coeffs[0][0], coeffs[-1][0]
    if backend == "numpy":
        z, nfev = _fixed_step_flow(denoise, z0 / mu0, sigma, solver)
        finite = bool(np.all(np.isfinite(z)))
    else:
        with torch.no_grad():
            z, nfev = _fixed_step_flow(denoise, z0 / mu0, sigma, solver)
        finite = bool(torch.isfinite(z).all())
    if not finite:
        raise RuntimeError(
            f"probability-flow ODE solver failed: non-finite state after the fixed-step "
            f"{solver!r} solver."
        )
    info = {
        "sampler": "ode",
        "solver": solver,
        "n_steps": int(sigma.shape[0] - 1),
        "nfev": int(nfev),
        "success": True,
        "message": "",
    }
    return z * mu_end, info


def sample_sde(
    X,
    log_w_obs,
    schedule,
    rng,
    *,
    n_samples=None,
    n_steps=1000,
    backend="numpy",
    device=None,
    chunk_size=None,
    memory_budget=None,
    x_start=None,
    score_dtype="float64",
):
    r"""Sample by the reverse SDE with Euler-Maruyama on a uniform time grid.

    With :math:`t_k = 1 - k h`, :math:`h = (1 - t_{end})/n`, :math:`k = 0..n-1`:

    .. math::

        x_{k+1} = x_k - h\,\big[f(t_k)\, x_k - g^2(t_k)\, s(x_k, t_k \mid y^*)\big]
        + \sqrt{g^2(t_k)\, h}\ \xi_k,\qquad x_0 \sim \mathcal N(0, s_1^2 I).

    Every step, the last one included, adds its noise: the target at ``t_end`` already
    contains the :math:`\sigma_x` jitter, so a noise-free ("denoising") last step would
    under-disperse the sample by :math:`g^2(t_{n-1}) h` in variance. The discretisation
    bias shrinks like :math:`h`; the VE schedule needs
    :math:`h \ll \sigma_x / (2\sigma_{max})` near ``t_end``.

    Parameters
    ----------
    X : numpy.ndarray of shape (N, d)
        Centres: the centred forecast ensemble.
    log_w_obs : numpy.ndarray of shape (N,) or None
        Observation log-weights :math:`\ell_i` (``-inf`` allowed; None: uniform, the prior
        KDE).
    schedule : VESchedule or VPSchedule
        The diffusion schedule (:mod:`dasim.diffusion.schedules`).
    rng : numpy.random.Generator
        Source of randomness (an int or None seeds a new Generator).
    n_samples : int, optional
        Number of samples (default N).
    n_steps : int, default=1000
        Number of Euler-Maruyama steps.
    backend : {"numpy", "torch"}, default="numpy"
        Compute with numpy, or with torch on ``device`` (and return a tensor there).
    device : str, optional
        The torch device (``"auto"``, the default, picks CUDA when available).
    chunk_size : int or tuple of (int, int), optional
        Tile of the score computation (see :func:`dasim.diffusion.kde.kde_score`).
    memory_budget : int, optional
        Bytes for the pairwise temporaries of one score tile (default 256 MiB).
    x_start : numpy.ndarray of shape (n_samples, d), optional
        Given start at ``t = 1`` instead of the Gaussian draw.
    score_dtype : {"float64", "float32"}, default="float64"
        Precision of the score's pairwise tiles (see the ``dtype`` of
        :func:`dasim.diffusion.kde.kde_score`); the state and the result stay in float64.

    Returns
    -------
    samples : numpy.ndarray or torch.Tensor of shape (n_samples, d)
        The samples at ``t_end``.
    info : dict
        Keys ``sampler``, ``n_steps``, ``nfev`` (= ``n_steps`` score evaluations),
        ``success``, ``message``, ``start_std``.

    Examples
    --------
    >>> from dasim.diffusion.schedules import VPSchedule
    >>> rng = np.random.default_rng(0)
    >>> x, info = sample_sde(rng.normal(size=(20, 2)), None, VPSchedule(0.3), rng, n_steps=50)
    >>> x.shape, info["nfev"]
    ((20, 2), 50)
    """
    X, log_w, n = _prepare(X, log_w_obs, n_samples, backend)
    rng = _check_rng(rng)
    if isinstance(n_steps, bool) or not isinstance(n_steps, numbers.Integral) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}.")
    score_dtype = check_score_dtype(score_dtype, "score_dtype", allow_none=False)
    x, std = _start(x_start, schedule, X, log_w, n, rng)
    ts = np.linspace(float(schedule.t_start), float(schedule.t_end), int(n_steps) + 1)
    if backend == "numpy":
        cen = _Centres(X, log_w, score_dtype)
        tile = _numpy_tile(n, cen.C0.shape[0], chunk_size, memory_budget)
        for k in range(int(n_steps)):
            t, h = ts[k], ts[k] - ts[k + 1]
            mu, sbar2, f, g2 = _coefficients(schedule, t)
            s = _score_logp_prepared(x, mu, sbar2, cen, tile, True, False)[0]
            x = x - h * (f * x - g2 * s) + math.sqrt(g2 * h) * rng.standard_normal(x.shape)
    else:
        torch, kt, dev = _torch_setup(device)
        Xt = torch.as_tensor(X, device=dev)
        cen = kt.Centres(Xt, torch.as_tensor(log_w, device=dev), kt.as_torch_dtype(score_dtype))
        tile = kt.torch_tile(n, cen.C0.shape[0], chunk_size, memory_budget, cen.dtype, dev)
        gen = torch.Generator(device=dev)
        gen.manual_seed(int(rng.integers(2**63 - 1)))
        x = torch.as_tensor(x, device=dev)
        with torch.no_grad():
            for k in range(int(n_steps)):
                t, h = float(ts[k]), float(ts[k] - ts[k + 1])
                mu, sbar2, f, g2 = _coefficients(schedule, t)
                s = kt.score_logp_prepared(x, mu, sbar2, cen, tile, True, False)[0]
                noise = torch.randn(x.shape, generator=gen, device=dev, dtype=x.dtype)
                x = x * (1.0 - h * f) + s * (h * g2) + noise * math.sqrt(g2 * h)
    info = {
        "sampler": "sde",
        "n_steps": int(n_steps),
        "nfev": int(n_steps),
        "success": True,
        "message": "",
        "start_std": std,
    }
    return x, info


# --------------------------------------------------------------------------- kernel shape


class CovarianceKernel:
    r"""The covariance-shaped state kernel, with variance-preserving shrinkage of the centres.

    The regularised particle filter's kernel: the bandwidth matrix is :math:`h^2 C`, with
    :math:`C = \sum_i \pi_i (x_i - m)(x_i - m)^\top` the weighted forecast covariance and
    :math:`m = \sum_i \pi_i x_i` the weighted mean. With ``shrink=True`` the centres are
    shrunk toward :math:`m` by :math:`a = \sqrt{1 - h^2}` (Liu and West 2001), so that the
    target mixture

    .. math::

        \sum_i \pi_i\, \mathcal N\big(m + a (x_i - m),\ h^2 C\big)

    has exactly the weighted ensemble's mean :math:`m` and covariance
    :math:`a^2 C + h^2 C = C`: the kernel no longer widens the ensemble cycle after cycle.

    The samplers run in whitened coordinates :math:`z = W (x - m)`, :math:`W =
    \Lambda_r^{-1/2} V_r^\top` from the eigendecomposition :math:`C = V \Lambda V^\top`
    restricted to its :math:`r` non-zero eigenvalues, where the kernel is isotropic with
    bandwidth :math:`h`: the existing closed-form score, ODE, SDE and mixture samplers
    (numpy and torch) serve unchanged, and :math:`x = m + B z` with :math:`B = V_r
    \Lambda_r^{1/2}` maps their output back. The diffusion in :math:`z` is a forward
    process with noise covariance :math:`\sigma(t)^2 C` in :math:`x` (a preconditioning, as
    in EDM); every sampler still ends on the mixture above. Directions in which the
    weighted ensemble has no spread (:math:`r < d`, e.g. ``N <= d``) carry none in the
    analysis either.

    Parameters
    ----------
    X : array-like of shape (N, d)
        Forecast ensemble (finite).
    log_w : array-like of shape (N,) or None
        Observation log-weights (None: uniform).
    bandwidth : float
        The relative bandwidth :math:`h`, in ``(0, 1)`` when ``shrink=True``, > 0 otherwise.
    shrink : bool, default=True
        Shrink the centres by :math:`\sqrt{1 - h^2}` (variance-preserving).
    rank_rtol : float, default=1e-10
        Eigenvalues below ``rank_rtol`` times the largest count as zero.

    Attributes
    ----------
    mean : numpy.ndarray of shape (d,)
        The weighted mean :math:`m`.
    cov : numpy.ndarray of shape (d, d)
        The weighted covariance :math:`C`.
    sqrt_cov : numpy.ndarray of shape (d, r)
        :math:`B`, with :math:`B B^\top = C`.
    whiten : numpy.ndarray of shape (r, d)
        :math:`W`, with :math:`W C W^\top = I_r`.
    centres : numpy.ndarray of shape (N, r)
        The (shrunk) centres in whitened coordinates, :math:`a\, W (x_i - m)`.
    shrink_factor : float
        :math:`a` (1 without shrinkage).
    rank : int
        :math:`r`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 2)) @ np.array([[2.0, 0.0], [1.0, 0.5]])
    >>> k = CovarianceKernel(X, None, 0.5)
    >>> mean, cov = k.mixture_moments(None)
    >>> bool(np.allclose(cov, k.cov)), k.rank
    (True, 2)
    """

    def __init__(self, X, log_w, bandwidth, *, shrink=True, rank_rtol=1e-10):
        X = _check_matrix(X, "X")
        log_w = _check_log_weights(log_w, X.shape[0])
        h = float(bandwidth)
        if not (math.isfinite(h) and h > 0):
            raise ValueError(f"bandwidth must be positive and finite, got {bandwidth!r}.")
        if shrink and h >= 1:
            raise ValueError(
                f"bandwidth must be below 1 with shrink=True (the centres are shrunk by "
                f"sqrt(1 - h^2)), got {bandwidth!r}."
            )
        pi = _normalised_weights(log_w)
        self.bandwidth = h
        self.mean = pi @ X
        anomalies = X - self.mean
        self.cov = (anomalies * pi[:, None]).T @ anomalies
        evals, evecs = np.linalg.eigh(self.cov)
        keep = evals > rank_rtol * max(float(evals[-1]), 0.0)
        if evals[-1] <= 0:
            keep[:] = False
        root = np.sqrt(evals[keep])
        self.rank = int(keep.sum())
        self.sqrt_cov = evecs[:, keep] * root
        self.whiten = (evecs[:, keep] / root).T
        self.shrink_factor = math.sqrt(1.0 - h * h) if shrink else 1.0
        self.centres = self.shrink_factor * (anomalies @ self.whiten.T)

    def to_latent(self, x):
        """Map states to whitened coordinates, :math:`z = W (x - m)`.

        Parameters
        ----------
        x : array-like of shape (M, d)
            States.

        Returns
        -------
        numpy.ndarray of shape (M, r)
            Their whitened coordinates.
        """
        return (np.asarray(x, dtype=np.float64) - self.mean) @ self.whiten.T

    def from_latent(self, z):
        """Map whitened coordinates back to states, :math:`x = m + B z`.

        Parameters
        ----------
        z : array-like of shape (M, r)
            Whitened coordinates.

        Returns
        -------
        numpy.ndarray of shape (M, d)
            The states.
        """
        return self.mean + np.asarray(z, dtype=np.float64) @ self.sqrt_cov.T

    def mixture_moments(self, log_w):
        r"""Mean and covariance of the target mixture, in state coordinates.

        Parameters
        ----------
        log_w : array-like of shape (N,) or None
            The log-weights the kernel was built with.

        Returns
        -------
        mean : numpy.ndarray of shape (d,)
            :math:`\sum_i \pi_i c_i`, the weighted mean of the shrunk centres :math:`c_i`.
        cov : numpy.ndarray of shape (d, d)
            :math:`\sum_i \pi_i c_i c_i^\top - m m^\top + h^2 C` with the shrunk centres
            :math:`c_i`.
        """
        pi = _normalised_weights(_check_log_weights(log_w, self.centres.shape[0]))
        c = self.from_latent(self.centres)
        mean = pi @ c
        dev = c - mean
        return mean, (dev * pi[:, None]).T @ dev + self.bandwidth**2 * self.cov

    def score(self, x, t, log_w, schedule, **kwargs):
        r"""State-space score of the diffused covariance-kernel KDE (full rank only).

        :math:`s_x(x, t) = W^\top s_z(W (x - m), t)`, with :math:`s_z` the isotropic
        closed-form score (:func:`dasim.diffusion.kde.kde_score`) of the whitened centres.

        Parameters
        ----------
        x : array-like of shape (M, d)
            Query states.
        t : float
            Diffusion time.
        log_w : array-like of shape (N,) or None
            Observation log-weights.
        schedule : VESchedule or VPSchedule
            The schedule in whitened units (``sigma_x`` is the bandwidth :math:`h`).
        **kwargs
            Passed to :func:`~dasim.diffusion.kde.kde_score`.

        Returns
        -------
        numpy.ndarray of shape (M, d)
            The score at ``x``.
        """
        from dasim.diffusion.kde import kde_score

        self._check_full_rank()
        return kde_score(self.to_latent(x), t, self.centres, log_w, schedule, **kwargs) @ (
            self.whiten
        )

    def log_density(self, x, t, log_w, schedule, **kwargs):
        r"""State-space log-density of the diffused covariance-kernel KDE (full rank only).

        :math:`\log p_x(x, t) = \log p_z(W (x - m), t) + \log\lvert\det W\rvert`.

        Parameters
        ----------
        x : array-like of shape (M, d)
            Query states.
        t : float
            Diffusion time.
        log_w : array-like of shape (N,) or None
            Observation log-weights.
        schedule : VESchedule or VPSchedule
            The schedule in whitened units.
        **kwargs
            Passed to :func:`~dasim.diffusion.kde.kde_log_density`.

        Returns
        -------
        numpy.ndarray of shape (M,)
            The log-density at ``x``.
        """
        from dasim.diffusion.kde import kde_log_density

        self._check_full_rank()
        log_det = float(np.linalg.slogdet(self.whiten)[1])
        return kde_log_density(self.to_latent(x), t, self.centres, log_w, schedule, **kwargs) + (
            log_det
        )

    def _check_full_rank(self):
        if self.rank != self.mean.shape[0]:
            raise ValueError(
                f"the weighted covariance has rank {self.rank} < {self.mean.shape[0]}: the "
                "state-space density is singular (sample in the whitened coordinates)."
            )


def tempered_log_weights(log_lik, target_ess, *, max_exponent=None, n_bisect=60):
    r"""Tempered log-weights :math:`\beta \ell_i` whose ESS meets a target.

    Finds the largest exponent :math:`\beta` (at most ``max_exponent``) such that the
    effective sample size of :math:`\operatorname{softmax}(\beta \ell)` is at least
    ``target_ess``: the ESS of tempered weights decreases as :math:`\beta` grows (its
    derivative in :math:`\beta` is :math:`2\,\mathrm{ESS}\,(\bar\ell_{\pi^2} -
    \bar\ell_{\pi}) \le 0`), so bisection on :math:`\log\beta` converges. For Gaussian
    log-likelihoods in units of the observation noise, :math:`\beta = 1/c^2` is the
    observation bandwidth :math:`\sigma_y = c\,R^{1/2}`: the smallest bandwidth that keeps
    the weights from collapsing.

    Parameters
    ----------
    log_lik : array-like of shape (N,)
        Untempered log-weights :math:`\ell_i` (finite, or ``-inf``).
    target_ess : float
        The ESS to keep, in ``[1, N]``.
    max_exponent : float, optional
        Upper bound of :math:`\beta` (e.g. 1: never sharper than the likelihood). Default:
        no bound but the bisection's range (:math:`10^{8}`).
    n_bisect : int, default=60
        Bisection steps on :math:`\log\beta`.

    Returns
    -------
    log_w : numpy.ndarray of shape (N,)
        :math:`\beta \ell`.
    exponent : float
        :math:`\beta`.

    Examples
    --------
    >>> ell = -0.5 * np.linspace(0.0, 10.0, 50) ** 2
    >>> log_w, beta = tempered_log_weights(ell, 25.0)
    >>> round(effective_sample_size(log_w), 6)
    25.0
    """
    ell = np.asarray(log_lik, dtype=np.float64)
    if ell.ndim != 1:
        raise ValueError(f"log_lik must be 1-D, got shape {ell.shape}.")
    ell = _check_log_weights(ell, ell.shape[0])
    n = ell.shape[0]
    target = float(target_ess)
    if not (1.0 <= target <= n):
        raise ValueError(f"target_ess must be in [1, {n}], got {target_ess!r}.")
    hi_cap = 1e8 if max_exponent is None else float(max_exponent)
    if not (math.isfinite(hi_cap) and hi_cap > 0):
        raise ValueError(f"max_exponent must be positive and finite, got {max_exponent!r}.")
    finite = np.isfinite(ell)
    # Shift so that the best member has log-weight 0: tempering is then well scaled.
    ell = np.where(finite, ell - ell[finite].max(), -np.inf)

    def ess(beta):
        return effective_sample_size(np.where(finite, beta * ell, -np.inf))

    if ess(hi_cap) >= target:
        return np.where(finite, hi_cap * ell, -np.inf), hi_cap
    lo = min(hi_cap, 1.0)
    while ess(lo) < target and lo > 1e-300:
        lo *= 1e-3
    hi = hi_cap if ess(lo) >= target else lo
    if hi == lo:  # even the flattest finite weights miss the target (members at -inf)
        return np.where(finite, 0.0, -np.inf), 0.0
    lo_l, hi_l = math.log(lo), math.log(hi)
    for _ in range(n_bisect):
        mid = 0.5 * (lo_l + hi_l)
        if ess(math.exp(mid)) >= target:
            lo_l = mid
        else:
            hi_l = mid
    beta = math.exp(lo_l)
    return np.where(finite, beta * ell, -np.inf), beta


def _check_tolerance(value, name):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not (math.isfinite(value) and value > 0)
    ):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}.")


# --------------------------------------------------------------------------- analysis


def kde_analysis(
    X_forecast,
    log_w_obs,
    *,
    sigma_x=None,
    sigma_max=None,
    schedule="ve",
    beta_max=50.0,
    sampler="ode",
    rtol=1e-5,
    atol=1e-5,
    n_steps=1000,
    rng=None,
    backend="numpy",
    device=None,
    chunk_size=None,
    memory_budget=None,
    n_samples=None,
    kernel="isotropic",
    shrink=False,
    ode_solver="rk45",
    ode_steps=None,
    score_dtype="float64",
):
    r"""One analysis step of the closed-form KDE diffusion filter (spec section 2).

    1. :math:`m = \frac1N\sum_i x_i`, centre :math:`x_i \leftarrow x_i - m`;
    2. build the schedule (:func:`dasim.diffusion.schedules.make_schedule`);
    3. sample the conditional KDE with ``sampler``;
    4. add :math:`m` back.

    The result is (exactly for ``"mixture"``, up to discretisation for ``"ode"``/``"sde"``)
    a sample of :math:`\sum_i \pi_i \mathcal N(m + \mu_e (x_i - m), \sigma_x^2 I)`, with
    :math:`\mu_e = 1` except for ``schedule="vp-early-stop"``.

    With ``kernel="covariance"`` the kernel is :math:`h^2 C` (``sigma_x`` is the relative
    bandwidth :math:`h`), the centres are shrunk toward the weighted mean when ``shrink``,
    and steps 1-4 run in the whitened coordinates of :class:`CovarianceKernel`: the target
    is :math:`\sum_i \pi_i \mathcal N(m + a (x_i - m), h^2 C)`.

    Parameters
    ----------
    X_forecast : numpy.ndarray of shape (N, d)
        Forecast ensemble (N >= 2, finite).
    log_w_obs : numpy.ndarray of shape (N,) or None
        Observation log-weights (:func:`dasim.diffusion.kde.observation_log_weights`, or a
        known log-likelihood); None for uniform weights.
    sigma_x : float
        State bandwidth, > 0 (a rule's value is computed by the caller, see
        :func:`bandwidth_rule`). Ignored when ``schedule`` is an instance.
    sigma_max : float, optional
        VE total standard deviation at ``t = 1`` (> ``sigma_x``); required for ``"ve"``.
    schedule : {"ve", "vp", "vp-early-stop"} or schedule instance, default="ve"
        The diffusion schedule (:func:`dasim.diffusion.schedules.make_schedule`).
    beta_max : float, default=50.0
        The VP :math:`\beta(1)`.
    sampler : {"ode", "sde", "mixture"}, default="ode"
        Which sampler: :func:`sample_ode`, :func:`sample_sde` or :func:`sample_mixture`.
    rtol : float, default=1e-5
        Relative tolerance of the ODE (``ode_solver="rk45"``).
    atol : float, default=1e-5
        Absolute tolerance of the ODE (``ode_solver="rk45"``).
    n_steps : int, default=1000
        Euler-Maruyama steps of the SDE.
    rng : numpy.random.Generator, int or None
        Randomness (an int or None seeds a new Generator).
    backend : {"numpy", "torch"}, default="numpy"
        Compute with numpy or with torch.
    device : str, optional
        The torch device; ``"auto"`` or None pick CUDA when available.
    chunk_size : int or tuple of (int, int), optional
        Tile of the score computation.
    memory_budget : int, optional
        Bytes for the pairwise temporaries of one score tile (default 256 MiB).
    n_samples : int, optional
        Number of analysis members (default N).
    kernel : {"isotropic", "covariance"}, default="isotropic"
        The state kernel: :math:`\sigma_x^2 I` (the paper's) or :math:`h^2 C` with
        :math:`h` = ``sigma_x`` (:class:`CovarianceKernel`). With ``"covariance"``,
        ``sigma_max`` is in whitened units and defaults to ten times the larger of the
        whitened centres' root-mean-square distance to their mean and :math:`h`.
    shrink : bool, default=False
        Variance-preserving shrinkage of the centres (``kernel="covariance"`` only).
    ode_solver : {"rk45", "heun", "ab2", "ab3"}, default="rk45"
        Solver of the probability-flow ODE (``sampler="ode"``): the paper's adaptive RK45,
        or a fixed-step exponential integrator in the log of the noise level (see
        :func:`sample_ode`; ``"ab3"`` is the most accurate for 20 score evaluations). With
        ``kernel="covariance"`` the solver runs in the whitened coordinates, like every
        sampler.
    ode_steps : int, optional
        Steps of a fixed-step ODE solver (default: :func:`default_ode_steps`, 20 score
        evaluations); ignored by ``"rk45"`` and by the other samplers.
    score_dtype : {"float64", "float32"}, default="float64"
        Precision of the score's pairwise tiles in the ``"ode"`` and ``"sde"`` samplers
        (see :func:`sample_ode`); ignored by ``"mixture"``. The analysis is float64.

    Returns
    -------
    X_analysis : numpy.ndarray of shape (n_samples, d)
        The analysis ensemble, float64.
    info : dict
        ``n_steps``, ``nfev``, ``ess`` (:math:`1/\sum_i\pi_i^2`), ``sampler``, ``schedule``,
        ``success``, ``start_std``, ``sigma_x``, ``t_end``; with ``sampler="ode"`` also
        ``solver``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(50, 2))
    >>> Xa, info = kde_analysis(X, -0.5 * X[:, 0] ** 2, sigma_x=0.3, sigma_max=10.0,
    ...                         sampler="mixture", rng=rng)
    >>> Xa.shape, info["ess"] < 50
    ((50, 2), True)
    """
    if _is_tensor(X_forecast):
        X_forecast = X_forecast.detach().cpu().numpy()
    if _is_tensor(log_w_obs):
        log_w_obs = log_w_obs.detach().cpu().numpy()
    X = _check_matrix(X_forecast, "X_forecast")
    if X.shape[0] < 2:
        raise ValueError(f"X_forecast needs at least 2 members, got {X.shape[0]}.")
    log_w = _check_log_weights(log_w_obs, X.shape[0])
    if sampler not in _SAMPLERS:
        raise ValueError(f"sampler must be one of {_SAMPLERS}, got {sampler!r}.")
    if backend not in ("numpy", "torch"):
        raise ValueError(f"backend must be 'numpy' or 'torch', got {backend!r}.")
    if kernel not in _KERNELS:
        raise ValueError(f"kernel must be one of {_KERNELS}, got {kernel!r}.")
    if shrink and kernel != "covariance":
        raise ValueError("shrink=True needs kernel='covariance'.")
    if ode_solver not in _ODE_SOLVERS:
        raise ValueError(f"ode_solver must be one of {_ODE_SOLVERS}, got {ode_solver!r}.")
    if ode_steps is not None:
        _check_n_steps(ode_steps, "ode_steps")
    score_dtype = check_score_dtype(score_dtype, "score_dtype", allow_none=False)
    rng = _check_rng(rng)
    shape = None
    if kernel == "covariance":
        if sigma_x is None:
            raise ValueError("sigma_x (the relative bandwidth h) is required.")
        shape = CovarianceKernel(X, log_w, sigma_x, shrink=shrink)
        if shape.rank == 0:  # every weight on one state: the mixture is a point mass
            n = X.shape[0] if n_samples is None else int(n_samples)
            info = {"sampler": sampler, "n_steps": 0, "nfev": 0, "success": True}
            info.update(ess=effective_sample_size(log_w), schedule=str(schedule))
            info.update(sigma_x=float(sigma_x), t_end=0.0, rank=0, message="rank 0")
            return np.tile(shape.mean, (n, 1)), info
        X = shape.centres
        if sigma_max is None and (schedule == "ve"):
            sigma_max = default_sigma_max(X, sigma_x)
    sched = make_schedule(schedule, sigma_x=sigma_x, sigma_max=sigma_max, beta_max=beta_max)
    mean = X.mean(axis=0)
    Xc = X - mean
    common = {"n_samples": n_samples, "backend": backend, "device": device}
    if sampler == "mixture":
        out, info = sample_mixture(Xc, log_w, sched, rng, **common)
    elif sampler == "ode":
        out, info = sample_ode(
            Xc,
            log_w,
            sched,
            rng,
            rtol=rtol,
            atol=atol,
            chunk_size=chunk_size,
            memory_budget=memory_budget,
            solver=ode_solver,
            n_steps=None if ode_solver == "rk45" else ode_steps,
            score_dtype=score_dtype,
            **common,
        )
    else:
        out, info = sample_sde(
            Xc,
            log_w,
            sched,
            rng,
            n_steps=n_steps,
            chunk_size=chunk_size,
            memory_budget=memory_budget,
            score_dtype=score_dtype,
            **common,
        )
    if _is_tensor(out):
        out = out.detach().cpu().numpy()
    out = np.asarray(out, dtype=np.float64) + mean
    if shape is not None:
        out = shape.from_latent(out)
        info["rank"] = shape.rank
    info.update(
        ess=effective_sample_size(log_w),
        schedule=sched.name,
        sigma_x=sched.sigma_x,
        t_end=float(sched.t_end),
    )
    return out, info
