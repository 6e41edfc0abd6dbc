r"""Adaptive Dormand-Prince RK45 for numpy arrays and torch tensors (one implementation).

The same tableau, the same arithmetic and the same step-size control as
``scipy.integrate.RK45`` (the integrator behind ``solve_ivp(method="RK45")``, the KDE
filter paper's sampler): on numpy float64 the states, steps and evaluation counts are
those of scipy bit for bit (a test holds them equal). Written over the array namespace of
:mod:`dasim.diffusion._xp`, so that a torch state stays on its device: the only
device-to-host transfer is one scalar (the error norm) per step attempt. Only the
current state is kept, not the trajectory.
"""

from __future__ import annotations

import math

import numpy as np

from ._xp import namespace

# Dormand-Prince 5(4): nodes, stage coefficients, 5th-order weights and the difference of
# the 4th- and 5th-order weights (error estimate, 7 stages with FSAL), as scipy has them.
_C = np.array([0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1])
_A = np.array(
    [
        [0, 0, 0, 0, 0],
        [1 / 5, 0, 0, 0, 0],
        [3 / 40, 9 / 40, 0, 0, 0],
        [44 / 45, -56 / 15, 32 / 9, 0, 0],
        [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729, 0],
        [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
    ]
)
_B = np.array([35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84])
_E = np.array([-71 / 57600, 0, 71 / 16695, -71 / 1920, 17253 / 339200, -22 / 525, 1 / 40])
_SAFETY, _MIN_FACTOR, _MAX_FACTOR = 0.9, 0.2, 10
_ERROR_EXPONENT = -1 / 5


def _initial_step(rhs, xp, t0, y0, f0, t1, direction, rtol, atol):
    """Hairer's first step (``scipy.integrate._ivp.common.select_initial_step``)."""
    length = abs(t1 - t0)
    size = y0.shape[0]
    scale = atol + xp.abs(y0) * rtol
    d0 = xp.norm(y0 / scale) / size**0.5
    d1 = xp.norm(f0 / scale) / size**0.5
    h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
    h0 = min(h0, length)
    f1 = rhs(t0 + h0 * direction, y0 + h0 * direction * f0)
    d2 = xp.norm((f1 - f0) / scale) / size**0.5 / h0
    if d1 <= 1e-15 and d2 <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1 / 5)
    return min(100 * h0, h1, length)


def rk45(fun, t0, t1, y0, rtol, atol, *, what="ODE", max_steps=100_000):
    r"""Integrate :math:`dy/dt = \text{fun}(t, y)` from ``t0`` to ``t1`` by adaptive RK45.

    The error of a step is the RMS over all elements of :math:`h \sum_j E_j k_j /
    (\text{atol} + \text{rtol}\max(|y|, |y_{new}|))`; a step is accepted when it is < 1,
    and the next step is scaled by :math:`\min(10, \max(0.2, 0.9\,
    \text{err}^{-1/5}))` (no growth right after a rejection).

    Parameters
    ----------
    fun : callable ``(t: float, y) -> array``
        Right-hand side, for a state of the shape of ``y0`` (the whole array is one
        system).
    t0, t1 : float
        Start and end times (``t1 < t0`` integrates backwards).
    y0 : numpy.ndarray or torch.Tensor
        Initial state.
    rtol, atol : float
        Relative and absolute tolerances.
    what : str, default="ODE"
        What is integrated, for the error messages.
    max_steps : int, default=100000
        Step attempts allowed.

    Returns
    -------
    y : numpy.ndarray or torch.Tensor
        The state at ``t1`` (a new array, shape of ``y0``).
    info : dict
        ``n_steps`` (accepted), ``n_rejected``, ``nfev``, ``success`` (True), ``message``.

    Raises
    ------
    RuntimeError
        ``"{what} solver failed: ..."`` on a non-finite right-hand side, a step below the
        time spacing, or more than ``max_steps`` attempts.
    """
    xp = namespace(y0)
    shape = y0.shape

    def rhs(t, y):
        return fun(t, y.reshape(shape)).reshape(-1)

    def fail(message):
        raise RuntimeError(f"{what} solver failed: {message}")

    t0, t1 = float(t0), float(t1)
    direction = float(np.sign(t1 - t0)) if t1 != t0 else 1.0
    A, B, E = (xp.asarray(c) for c in (_A, _B, _E))
    y = y0.reshape(-1)
    f = rhs(t0, y)
    nfev = 1
    info = {"n_steps": 0, "n_rejected": 0, "nfev": nfev, "success": True}
    if not xp.all_finite(f):
        fail(f"non-finite right-hand side at t={t0!r}")
    h_abs = 0.0
    if t1 != t0:
        h_abs = _initial_step(rhs, xp, t0, y, f, t1, direction, rtol, atol)
        nfev += 1
    K = xp.empty((7, y.shape[0]), dtype=y.dtype, like=y)
    t, attempts = t0, 0
    while direction * (t - t1) < 0:
        min_step = 10 * abs(math.nextafter(t, direction * math.inf) - t)
        h_abs = max(h_abs, min_step)
        rejected = False
        while True:
            attempts += 1
            if attempts > max_steps:
                fail(f"more than max_steps={max_steps} step attempts.")
            if h_abs < min_step:
                fail("required step size is less than spacing between numbers.")
            t_new = t + h_abs * direction
            if direction * (t_new - t1) > 0:
                t_new = t1
            h = t_new - t
            h_abs = abs(h)
            K[0] = f
            for s in range(1, 6):
                dy = xp.matmul(K[:s].T, A[s, :s]) * h
                K[s] = rhs(t + float(_C[s]) * h, y + dy)
            y_new = y + h * xp.matmul(K[:-1].T, B)
            f_new = rhs(t + h, y_new)
            K[-1] = f_new
            nfev += 6
            scale = atol + xp.maximum(xp.abs(y), xp.abs(y_new)) * rtol
            err = xp.matmul(K.T, E) * h / scale
            err_norm = xp.norm(err) / err.shape[0] ** 0.5
            if not math.isfinite(err_norm):
                fail(f"non-finite right-hand side near t={t!r}.")
            if err_norm < 1:
                factor = (
                    _MAX_FACTOR
                    if err_norm == 0
                    else min(_MAX_FACTOR, _SAFETY * err_norm**_ERROR_EXPONENT)
                )
                if rejected:
                    factor = min(1, factor)
                h_abs *= factor
                break
            h_abs *= max(_MIN_FACTOR, _SAFETY * err_norm**_ERROR_EXPONENT)
            rejected = True
            info["n_rejected"] += 1
        t, y, f = t_new, y_new, f_new
        info["n_steps"] += 1
    info.update(
        nfev=nfev,
        message="The solver successfully reached the end of the integration interval.",
    )
    return y.reshape(shape), info
