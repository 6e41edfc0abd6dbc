"""The samplers of the KDE conditional: the exact mixture, the probability-flow ODE
(adaptive RK45 or fixed steps) and the reverse SDE.

Each builds the closed-form score once as a ``score(x, t)`` callable over the array
namespace of the backend (:mod:`dasim.diffusion._xp`) and hands it to a solver that holds
no per-backend code. The public names are documented, and imported, from
:mod:`dasim.diffusion.kde_sampling`.
"""

from __future__ import annotations

from dasim.diffusion._kde_core import (
    Centres,
    _score_logp_prepared,
    check_score_dtype,
    tile_for,
)
from dasim.diffusion._kde_sampler_utils import (
    _check_rng,
    _check_tolerance,
    _fill_doc,
    _normalised_weights,
    _prepare,
    _start,
)
from dasim.diffusion._xp import namespace
from dasim.diffusion.solvers import _check_n_steps, _check_solver, probability_flow, reverse_sde


def _kde_score_fn(X, log_w, schedule, n, backend, device, chunk_size, memory_budget, dtype):
    """The namespace of ``backend`` and the closed-form score ``score(x, t)`` there."""
    xp = namespace(backend=backend, device=device)
    cen = Centres(xp.asarray(X), xp.asarray(log_w), dtype)
    tile = tile_for(xp, n, cen.C0.shape[0], chunk_size, memory_budget, cen.dtype)

    def score(x, t):
        mu, sbar2 = float(schedule.mu(t)), float(schedule.sigmabar2(t))
        return _score_logp_prepared(x, mu, sbar2, cen, tile, True, False)[0]

    return xp, score


@_fill_doc
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
    %(centres_params)s
    %(backend_params)s

    Returns
    -------
    samples : numpy.ndarray or torch.Tensor of shape (n_samples, d)
        The samples (drawn with ``rng`` on the CPU in either backend).
    info : dict
        Keys ``sampler``, ``n_steps`` (0), ``nfev`` (0), ``success``, ``message``.

    Examples
    --------
    >>> import numpy as np
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
    return namespace(backend=backend, device=device).asarray(out), info


@_fill_doc
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

    ``solver="rk45"`` (the default, the paper's sampler) takes one shared adaptive step:
    the Dormand-Prince pair of ``scipy.integrate.solve_ivp(method="RK45")``, with its
    arithmetic and step-size control (on numpy float64 the result is scipy's bit for bit),
    written once for numpy arrays and torch tensors, keeping only the current state;
    ``n_steps`` is the number of accepted steps (``len(sol.t) - 1`` of ``solve_ivp``). On
    torch the state and the centres stay on ``device``; only the error norm (one scalar a
    step attempt) is read back.

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
    Every solver takes the score as a ``score(x, t)`` callable and runs unchanged on numpy
    and torch.

    Parameters
    ----------
    %(centres_params)s
    rtol : float, default=1e-5
        Relative tolerance of RK45.
    atol : float, default=1e-5
        Absolute tolerance of RK45.
    %(backend_params)s
    %(score_params)s
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
        RK45 ``n_rejected``.

    Raises
    ------
    RuntimeError
        When the integrator fails (with its message), e.g. on a non-finite right-hand side
        (RK45) or a non-finite result (fixed steps).

    Examples
    --------
    >>> import numpy as np
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
    n_steps = _check_solver(solver, n_steps)
    x1, std = _start(x_start, schedule, X, log_w, n, rng)
    xp, score = _kde_score_fn(
        X, log_w, schedule, n, backend, device, chunk_size, memory_budget, score_dtype
    )
    out, info = probability_flow(
        schedule, score, xp.asarray(x1), solver=solver, n_steps=n_steps, rtol=rtol, atol=atol
    )
    return out, {"sampler": "ode", "solver": solver, **info, "start_std": std}


@_fill_doc
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
    %(centres_params)s
    n_steps : int, default=1000
        Number of Euler-Maruyama steps.
    %(backend_params)s
    %(score_params)s
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
    >>> import numpy as np
    >>> from dasim.diffusion.schedules import VPSchedule
    >>> rng = np.random.default_rng(0)
    >>> x, info = sample_sde(rng.normal(size=(20, 2)), None, VPSchedule(0.3), rng, n_steps=50)
    >>> x.shape, info["nfev"]
    ((20, 2), 50)
    """
    X, log_w, n = _prepare(X, log_w_obs, n_samples, backend)
    rng = _check_rng(rng)
    n_steps = _check_n_steps(n_steps)
    score_dtype = check_score_dtype(score_dtype, "score_dtype", allow_none=False)
    x, std = _start(x_start, schedule, X, log_w, n, rng)
    xp, score = _kde_score_fn(
        X, log_w, schedule, n, backend, device, chunk_size, memory_budget, score_dtype
    )
    x = reverse_sde(schedule, score, xp.asarray(x), rng, n_steps=n_steps)
    info = {"sampler": "sde", "n_steps": n_steps, "nfev": n_steps, "success": True}
    return x, {**info, "message": "", "start_std": std}
