r"""Solvers of the reverse diffusion, shared by the KDE filter and the learned assimilators.

Every solver takes a schedule (:mod:`dasim.diffusion.schedules`: :math:`t \mapsto
(\alpha(t), \sigma(t))` with the drift :math:`f`, the squared diffusion :math:`g^2`, the
probability-flow drift and the reverse-SDE drift derived from it) and a model of the
diffused density, and works on numpy arrays and torch tensors alike (the arithmetic is
written once over :mod:`dasim.diffusion._xp`; a torch state stays on its device):

* :func:`probability_flow`: the probability-flow ODE
  :math:`dx/dt = f(t)\, x - \tfrac12 g^2(t)\, s(x, t)` of a score callable
  ``score(x, t)``, by adaptive RK45 (scipy's Dormand-Prince arithmetic,
  :mod:`dasim.diffusion._ode`) or by a fixed-step exponential integrator in the log of
  the noise level (``"heun"``, ``"ab2"``, ``"ab3"``, on the grid :func:`ode_sigma_grid`);
* :func:`reverse_sde`: the reverse SDE :math:`dx = [f x - g^2 s(x, t)]\,dt + g\, d\bar W`
  by Euler-Maruyama;
* :func:`ddim_step`, :func:`langevin_step` and :func:`predictor_corrector_step`: the
  predictor (the first-order exponential integrator of the same flow) and the Langevin
  corrector of the learned assimilators' sampler
  (:class:`dasim.diffusion.sampling.PredictorCorrector`). These take the noise
  prediction :math:`\varepsilon(x, t) = -\sigma(t)\, s(x, t)` that the networks return,
  in which the steps stay stable at small :math:`\sigma`.

The KDE samplers (:mod:`dasim.diffusion.kde_sampling`, :mod:`dasim.diffusion.kde_local`)
build the closed-form score and call :func:`probability_flow` and :func:`reverse_sde`; the
learned assimilators sample through :class:`~dasim.diffusion.sampling.PredictorCorrector`,
which calls the predictor-corrector step. Every schedule has a start ``t_start`` (noise) and
an end ``t_end`` of the reverse flow (1 and 0 unless the schedule says otherwise).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from scipy.optimize import brentq

from dasim.diffusion._ode import rk45
from dasim.diffusion._xp import is_tensor, namespace
from dasim.diffusion.schedules import VESchedule

__all__ = [
    "probability_flow",
    "reverse_sde",
    "ddim_step",
    "langevin_step",
    "predictor_corrector_step",
]

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


def _check_solver(solver, n_steps):
    """The step count of ``solver`` (None for RK45), or a ValueError naming the argument."""
    if solver not in _ODE_SOLVERS:
        raise ValueError(f"solver must be one of {_ODE_SOLVERS}, got {solver!r}.")
    if solver != "rk45":
        return default_ode_steps(solver) if n_steps is None else _check_n_steps(n_steps)
    if n_steps is not None:
        raise ValueError(
            "n_steps is the step count of the fixed-step solvers; solver='rk45' is "
            "adaptive (set rtol and atol), so leave n_steps=None."
        )
    return None


def probability_flow(
    schedule, score, x, *, solver="rk45", n_steps=None, rtol=1e-5, atol=1e-5, what=None
):
    r"""Integrate the probability-flow ODE of ``score`` from ``t_start`` down to ``t_end``.

    .. math::

        \frac{dx}{dt} = f(t)\, x - \tfrac12 g^2(t)\, s(x, t)

    (``schedule.probability_flow_drift``). ``solver="rk45"`` takes adaptive steps
    (``rtol``, ``atol``; on numpy float64 the arithmetic of
    ``scipy.integrate.solve_ivp(method="RK45")``, bit for bit). The fixed-step solvers
    integrate the flow of :math:`z = x/\alpha(t)`,
    :math:`dz/d\tilde\sigma = (z - D(z, \tilde\sigma))/\tilde\sigma` with the noise level
    :math:`\tilde\sigma = \bar\sigma/\alpha` and the denoiser
    :math:`D = z + (\bar\sigma^2/\alpha)\, s(\alpha z, t)` (:math:`\bar\sigma^2` is
    ``schedule.sigmabar2``: :math:`\sigma^2`, plus the diffused kernel variance for the KDE
    schedules), exactly in :math:`e^{\lambda}`, :math:`\lambda = -\log\tilde\sigma`, with
    :math:`D` interpolated linearly over the step (``"heun"``, two score evaluations a
    step) or extrapolated from the last 2 or 3 grid points (``"ab2"``, ``"ab3"``), on the
    grid :func:`~dasim.diffusion.kde_sampling.ode_sigma_grid`. Runs without autograd.

    Parameters
    ----------
    schedule : DiffusionSchedule
        The schedule (:mod:`dasim.diffusion.schedules`), with ``t_start`` and ``t_end``.
    score : callable
        ``score(x, t) -> array`` for a state shaped like ``x`` and a float ``t``: the score
        :math:`\nabla\log p_t(x)`, of the same kind (numpy or torch) as ``x``.
    x : numpy.ndarray or torch.Tensor
        The state at ``t_start`` (the whole array is one system).
    solver : {"rk45", "heun", "ab2", "ab3"}, default="rk45"
        The solver.
    n_steps : int, optional
        Steps of a fixed-step solver (default: 20 score evaluations); None with RK45.
    rtol, atol : float, default=1e-5
        Tolerances of RK45.
    what : str, optional
        What is integrated, for the error messages (default "probability-flow ODE").

    Returns
    -------
    x : numpy.ndarray or torch.Tensor
        The state at ``t_end``.
    info : dict
        ``n_steps``, ``nfev`` (score evaluations), ``success``, ``message``, and with RK45
        ``n_rejected``.

    Raises
    ------
    RuntimeError
        ``"{what} solver failed: ..."`` when the solver fails or the result is not finite.

    Examples
    --------
    The flow of :math:`\mathcal N(0, 1)` under the cosine schedule keeps it standard:

    >>> import numpy as np
    >>> from dasim.diffusion.schedules import CosineSchedule
    >>> s = CosineSchedule()
    >>> def score(x, t):
    ...     return -x / s.marginal_variance(t, 1.0)
    >>> x1 = np.random.default_rng(0).normal(size=(4000, 2))
    >>> x0, info = probability_flow(s, score, x1)
    >>> round(float(x0.std() / x1.std()), 6), info["nfev"] < 100
    (1.0, True)
    >>> x0, info = probability_flow(s, score, x1, solver="ab3", n_steps=80)
    >>> round(float(x0.std() / x1.std()), 3), info["nfev"]
    (1.0, 80)
    """
    n_steps = _check_solver(solver, n_steps)
    what = what or "probability-flow ODE"
    t0, t1 = float(schedule.t_start), float(schedule.t_end)
    xp = namespace(x)
    with xp.no_grad():
        if solver == "rk45":

            def drift(t, y):
                return schedule.probability_flow_drift(y, t, score(y, t))

            return rk45(drift, t0, t1, x, rtol, atol, what=what)
        t, sigma = ode_sigma_grid(schedule, n_steps)
        mus = [float(schedule.mu(u)) for u in t]

        def denoise(z, k):
            mu, sbar2 = mus[k], float(schedule.sigmabar2(t[k]))
            return z + score(z * mu, t[k]) * (sbar2 / mu)

        z, nfev = _fixed_step_flow(denoise, x / mus[0], sigma, solver)
    if not xp.all_finite(z):
        raise RuntimeError(
            f"{what} solver failed: non-finite state after the fixed-step {solver!r} solver."
        )
    info = {"n_steps": int(n_steps), "nfev": int(nfev), "success": True, "message": ""}
    return z * mus[-1], info


def reverse_sde(schedule, score, x, rng, *, n_steps=1000):
    r"""Integrate the reverse SDE of ``score`` by Euler-Maruyama, ``t_start`` to ``t_end``.

    On the uniform grid :math:`t_k = t_s - k h`, :math:`h = (t_s - t_e)/n`:

    .. math::

        x_{k+1} = x_k - h\, b(x_k, t_k) + \sqrt{g^2(t_k)\, h}\ \xi_k,\qquad
        b = f(t)\, x - g^2(t)\, s(x, t)

    (``schedule.reverse_drift`` and ``schedule.g2``). Every step, the last one included,
    adds its noise. Runs without autograd.

    Parameters
    ----------
    schedule : DiffusionSchedule
        The schedule, with ``t_start`` and ``t_end``.
    score : callable
        ``score(x, t) -> array``, as for :func:`probability_flow`.
    x : numpy.ndarray or torch.Tensor
        The state at ``t_start``.
    rng : numpy.random.Generator or callable
        The noise: a numpy Generator (for a torch state, it seeds a torch Generator on the
        state's device), or ``draw(shape) -> array`` giving standard normal draws of the
        kind of ``x``.
    n_steps : int, default=1000
        Number of steps.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        The state at ``t_end``.

    Examples
    --------
    >>> from dasim.diffusion.schedules import VPSchedule
    >>> s = VPSchedule(1.0)  # the diffused N(0, 1) stays N(0, 1)
    >>> rng = np.random.default_rng(0)
    >>> x = reverse_sde(s, lambda x, t: -x, rng.normal(size=(4000, 2)), rng, n_steps=200)
    >>> round(float(x.std()), 1)
    1.0
    """
    n_steps = _check_n_steps(n_steps)
    xp = namespace(x)
    draw = rng if callable(rng) else xp.normal_source(rng)
    t0, t1 = float(schedule.t_start), float(schedule.t_end)
    ts = np.linspace(t0, t1, n_steps + 1)
    with xp.no_grad():
        for k in range(n_steps):
            t, h = float(ts[k]), float(ts[k] - ts[k + 1])
            g2 = float(schedule.g2(t))
            drift = schedule.reverse_drift(x, t, score(x, t))
            x = x - h * drift + math.sqrt(g2 * h) * draw(tuple(x.shape))
    return x


def _per_sample(v, x):
    """``v`` (a scalar or one value a sample) shaped to broadcast against the batch ``x``."""
    if is_tensor(x):
        from dasim.diffusion.denoising import broadcast_time

        return broadcast_time(v, x)
    v = np.asarray(v, dtype=np.float64)
    return v.reshape((-1,) + (1,) * (x.ndim - 1)) if v.ndim == 1 else v


def ddim_step(schedule, x, t, s, eps):
    r"""The predictor: one DDIM step (first-order exponential integrator) from ``t`` to ``s``.

    .. math::

        x_s = \frac{\alpha_s}{\alpha_t} x_t
        + \Big(\sigma_s - \frac{\alpha_s}{\alpha_t}\sigma_t\Big)\, \varepsilon(x_t, t),

    exact when :math:`\varepsilon` does not change over the step; with
    :math:`\varepsilon = -\sigma s` it is the first-order step of :func:`probability_flow`
    in :math:`\tilde\sigma = \sigma/\alpha`.

    Parameters
    ----------
    schedule : DiffusionSchedule
        The schedule (called as ``schedule(t) -> (alpha, sigma)``).
    x : numpy.ndarray or torch.Tensor
        The state :math:`x_t`, shape ``(B, ...)``.
    t, s : float, numpy.ndarray or torch.Tensor
        Current and next time (``s < t``), scalars or one per sample, ``(B,)``.
    eps : numpy.ndarray or torch.Tensor
        The noise prediction :math:`\varepsilon(x_t, t)`, shaped like ``x``.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        The state at ``s``.

    Examples
    --------
    >>> from dasim.diffusion.schedules import CosineSchedule
    >>> s, x0, e = CosineSchedule(), np.ones((1, 2)), np.full((1, 2), 0.5)
    >>> a, sig = s(0.8)
    >>> b, sig_s = s(0.3)
    >>> np.allclose(ddim_step(s, a * x0 + sig * e, 0.8, 0.3, e), b * x0 + sig_s * e)
    True
    """
    mu_t, sigma_t = schedule(_per_sample(t, x))
    mu_s, sigma_s = schedule(_per_sample(s, x))
    ratio = mu_s / mu_t
    return ratio * x + (sigma_s - ratio * sigma_t) * eps


def langevin_step(schedule, x, s, eps, noise, *, tau=0.25, step_size="sample"):
    r"""The corrector: one Langevin step at time ``s``, in noise-prediction units.

    .. math::

        \delta_b = \frac{\tau}{\operatorname{mean}_\text{event}(e_b^2)}, \qquad
        x_b \leftarrow x_b - \big(\delta_b e_b + \sqrt{2\delta_b}\, z_b\big)\sigma_s,

    the step :math:`x \leftarrow x + \delta' s + \sqrt{2\delta'} z` on the score
    :math:`s = -e/\sigma_s` with :math:`\delta' = \tau/\operatorname{mean}(s^2)`.

    Parameters
    ----------
    schedule : DiffusionSchedule
        The schedule.
    x : numpy.ndarray or torch.Tensor
        The state at ``s``, shape ``(B, ...)``.
    s : float, numpy.ndarray or torch.Tensor
        The time, a scalar or one per sample.
    eps : numpy.ndarray or torch.Tensor
        :math:`e = \varepsilon(x, s)`, shaped like ``x``.
    noise : numpy.ndarray or torch.Tensor
        Standard normal :math:`z`, shaped like ``x``.
    tau : float, default=0.25
        Step-size factor.
    step_size : {"sample", "batch"}, default="sample"
        :math:`\delta` per sample, or one for the batch (the mean of :math:`e^2` over it).

    Returns
    -------
    numpy.ndarray or torch.Tensor
        The corrected state.

    Examples
    --------
    >>> from dasim.diffusion.schedules import CosineSchedule
    >>> x = np.zeros((3, 2))
    >>> langevin_step(CosineSchedule(), x, 0.5, np.ones((3, 2)), np.zeros((3, 2))).shape
    (3, 2)
    """
    _, sigma_s = schedule(_per_sample(s, x))
    power = (eps * eps).reshape(eps.shape[0], -1).mean(1)
    if step_size == "batch":
        # One step for the whole batch: a fixed step keeps the Langevin target (up to
        # discretisation), which a step depending on each sample's own e does not.
        delta = tau / power.mean()
    else:
        delta = _per_sample(tau / power, x)
    root = (2 * delta).sqrt() if is_tensor(delta) else np.sqrt(2 * delta)
    return x - (delta * eps + root * noise) * sigma_s


def predictor_corrector_step(
    schedule,
    eps_model,
    x,
    t,
    s,
    draw,
    *,
    n_corrections=1,
    tau=0.25,
    step_size="sample",
    post_step=None,
    eps_t=None,
    refresh=True,
):
    r"""One predictor step from ``t`` to ``s``, then ``n_corrections`` Langevin steps at ``s``.

    Parameters
    ----------
    schedule : DiffusionSchedule
        The schedule.
    eps_model : callable
        ``eps_model(x, t) -> eps``, the noise prediction :math:`\varepsilon = -\sigma s`.
    x : numpy.ndarray or torch.Tensor
        The state at ``t``, shape ``(B, ...)``.
    t, s : float, numpy.ndarray or torch.Tensor
        Current and next time (``s < t``).
    draw : callable
        ``draw(shape) -> array``: the Langevin noise, standard normal.
    n_corrections : int, default=1
        Langevin steps after the predictor.
    tau : float, default=0.25
        Langevin step-size factor (:func:`langevin_step`).
    step_size : {"sample", "batch"}, default="sample"
        See :func:`langevin_step`.
    post_step : callable, optional
        ``post_step(x, s) -> x``, applied after the predictor and after each correction.
    eps_t : numpy.ndarray or torch.Tensor, optional
        A cached :math:`\varepsilon(x, t)`; evaluated when None.
    refresh : bool, default=True
        Evaluate :math:`\varepsilon` again before every correction (textbook Langevin);
        when False, evaluate it once after the predictor and use it for every correction.

    Returns
    -------
    x : numpy.ndarray or torch.Tensor
        The state at ``s``.
    eps_cache : numpy.ndarray, torch.Tensor or None
        With ``refresh=False``, the :math:`\varepsilon(x, s)` evaluated after the predictor
        (to pass as ``eps_t`` to the next step); None otherwise.

    Examples
    --------
    >>> from dasim.diffusion.schedules import CosineSchedule
    >>> sched, rng = CosineSchedule(), np.random.default_rng(0)
    >>> x, _ = predictor_corrector_step(
    ...     sched, lambda x, t: sched(t)[1] * x, rng.normal(size=(3, 2)), 1.0, 0.9,
    ...     rng.standard_normal)
    >>> x.shape
    (3, 2)
    """
    if eps_t is None:
        eps_t = eps_model(x, t)
    x = ddim_step(schedule, x, t, s, eps_t)
    if post_step is not None:
        x = post_step(x, s)
    eps_s = None if refresh else eps_model(x, s)
    for _ in range(n_corrections):
        eps = eps_model(x, s) if refresh else eps_s
        x = langevin_step(schedule, x, s, eps, draw(tuple(x.shape)), tau=tau, step_size=step_size)
        if post_step is not None:
            x = post_step(x, s)
    return x, eps_s
