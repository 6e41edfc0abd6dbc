"""The samplers of the KDE conditional: the exact mixture, the probability-flow ODE
(adaptive RK45 or fixed steps) and the reverse SDE.

The public names are documented, and imported, from :mod:`dasim.diffusion.kde_sampling`.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from dasim.diffusion._kde_fixed_step import (
    _ODE_SOLVERS,
    _check_n_steps,
    _fixed_step_flow,
    default_ode_steps,
    ode_sigma_grid,
)
from dasim.diffusion._kde_sampler_utils import (
    _check_rng,
    _check_tolerance,
    _coefficients,
    _normalised_weights,
    _prepare,
    _rk45_numpy,
    _start,
    _torch_setup,
)
from dasim.diffusion.kde import _Centres, _numpy_tile, _score_logp_prepared, check_score_dtype


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
    if backend == "numpy":
        cen = _Centres(X, log_w, score_dtype)
        tile = _numpy_tile(n, cen.C0.shape[0], chunk_size, memory_budget)

        def drift(t, x):
            mu, sbar2, f, g2 = _coefficients(schedule, t)
            s = _score_logp_prepared(x, mu, sbar2, cen, tile, True, False)[0]
            return f * x - 0.5 * g2 * s

        out, n_acc, nfev = _rk45_numpy(drift, t0, t1, x1, rtol, atol)
        info = {
            "sampler": "ode",
            "solver": "rk45",
            "n_steps": n_acc,
            "nfev": nfev,
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
