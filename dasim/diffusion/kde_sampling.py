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

import numpy as np

# The code lives in other modules (bandwidth rules, the ODE solvers in ``solvers``, the
# covariance kernel and tempering, what the samplers share, the samplers); this module is
# its public home and re-exports it, with the private helpers that ``kde_local`` and the
# tests import from here (the ``as`` aliases).
from dasim.diffusion._kde_bandwidth import bandwidth_rule, default_sigma_max, rule_constant
from dasim.diffusion._kde_kernel import CovarianceKernel, tempered_log_weights
from dasim.diffusion._kde_sampler_utils import _check_rng, reverse_start_std
from dasim.diffusion._kde_samplers import sample_mixture, sample_ode, sample_sde
from dasim.diffusion.kde import (
    _check_log_weights,
    _check_matrix,
    _is_tensor,
    check_score_dtype,
    effective_sample_size,
)
from dasim.diffusion.schedules import make_schedule
from dasim.diffusion.solvers import _ODE_SOLVERS, _check_n_steps, default_ode_steps, ode_sigma_grid
from dasim.diffusion.solvers import _fixed_step_flow as _fixed_step_flow
from dasim.diffusion.solvers import _step_weights as _step_weights

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
