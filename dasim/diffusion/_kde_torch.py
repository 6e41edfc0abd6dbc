r"""Torch path of the closed-form KDE score, and a Dormand-Prince RK45 on tensors.

Same mathematics and tiling as :mod:`dasim.diffusion.kde` (read its module docstring), on
torch tensors of any device, in float64 (default) or float32. Importing this module imports
torch; :mod:`dasim.diffusion.kde` and :mod:`dasim.diffusion.kde_sampling` only import it
when a tensor is passed or ``backend="torch"`` is asked for.

The log-density is differentiable by autograd (the tile maxima used for the log-sum-exp are
detached constants, which does not change the gradient), so
``torch.autograd.grad(kde_log_density(x, ...).sum(), x)`` equals :func:`kde_score`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dasim.diffusion.kde import (
    EXP_FLOOR,
    RESCUE_BELOW,
    _check_time,
    check_score_dtype,
    floor_needed,
    resolve_device,
    tile_shape,
)

__all__ = [
    "kde_score",
    "kde_log_density",
    "kde_score_and_log_density",
    "dopri5",
    "resolve_device",
]

# Pairwise (queries x centres) temporaries alive at once in one torch tile.
_TORCH_TEMPORARIES = 4
# Preferred tile size on CPU (elements); on accelerators the memory budget alone decides.
_TORCH_CPU_TILE_ELEMENTS = 2**18


def _as_float_tensor(value, name, device, dtype):
    if isinstance(value, torch.Tensor):
        t = value
        if not t.is_floating_point():
            t = t.to(torch.float64)
    else:
        try:
            t = torch.as_tensor(np.asarray(value, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a numeric array or tensor ({exc}).") from exc
    return t.to(device=device, dtype=dtype)


def _check_matrix(t, name, ncols=None):
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {tuple(t.shape)}.")
    if t.shape[0] < 1 or t.shape[1] < 1:
        raise ValueError(f"{name} must have at least one row and one column.")
    if ncols is not None and t.shape[1] != ncols:
        raise ValueError(
            f"{name} must have {ncols} columns (the state dimension), got {tuple(t.shape)}."
        )
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf.")
    return t


def _check_log_weights(log_w, n, like):
    if log_w is None:
        return torch.zeros(n, dtype=like.dtype, device=like.device)
    log_w = _as_float_tensor(log_w, "log_w_obs", like.device, like.dtype)
    if tuple(log_w.shape) != (n,):
        raise ValueError(
            f"log_w_obs must have shape ({n},) (one per centre), got {tuple(log_w.shape)}."
        )
    if bool(torch.isnan(log_w).any()) or bool((log_w == math.inf).any()):
        raise ValueError("log_w_obs contains NaN or +inf.")
    if not bool(torch.isfinite(log_w).any()):
        raise ValueError("every observation weight is zero (all log_w_obs are -inf).")
    return log_w


class Centres:
    """Centres preprocessed once: shifted by their mean, zero-weight ones dropped.

    ``dtype`` (a torch dtype, default the centres' own) is the precision of the pairwise
    tiles; the shift, ``C0``, ``cc`` and the log-weights stay in the centres' dtype.
    """

    __slots__ = (
        "shift",
        "C0",
        "cc",
        "log_w",
        "lse_w",
        "dim",
        "dtype",
        "C1",
        "cap",
        "w_max",
        "w_spread",
        "c_norm",
    )

    def __init__(self, centres, log_w, dtype=None):
        keep = log_w > -math.inf
        if not bool(keep.all()):
            centres, log_w = centres[keep], log_w[keep]
        self.shift = centres.mean(dim=0)
        self.C0 = centres - self.shift
        self.cc = (self.C0 * self.C0).sum(dim=1)
        self.log_w = log_w
        self.lse_w = torch.logsumexp(log_w, dim=0)
        self.dim = centres.shape[1]
        self.dtype = centres.dtype if dtype is None else dtype
        # centres augmented by a column of ones: one product gives sum_i w_i C0_i and
        # sum_i w_i together
        self.C1 = torch.cat([self.C0, torch.ones_like(self.cc)[:, None]], dim=1).to(self.dtype)
        self.cap = log_w.to(self.dtype)
        self.w_max = float(log_w.max())  # the shift of the fast pass
        # for the lower bound of the logits (kde.floor_needed)
        self.w_spread = self.w_max - float(log_w.min())
        self.c_norm = math.sqrt(float(self.cc.max()))


def as_torch_dtype(dtype):
    """The torch dtype of a score precision name (None stays None)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    return {"float64": torch.float64, "float32": torch.float32}[check_score_dtype(dtype)]


def torch_tile(n_q, n_c, chunk_size, memory_budget, dtype, device):
    """Tile shape (queries, centres) for a torch computation on ``device``."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    target = _TORCH_CPU_TILE_ELEMENTS if torch.device(device).type == "cpu" else None
    return tile_shape(
        n_q,
        n_c,
        chunk_size,
        memory_budget,
        itemsize=itemsize,
        temporaries=_TORCH_TEMPORARIES,
        target_elements=target,
    )


def _lse_stats(xs, mu, sbar2, cen, tile, want_acc):
    """Torch twin of ``kde._lse_stats``: the fast pass, one shift ``w_max`` for all rows.

    Rows whose sum falls below ``RESCUE_BELOW`` are recomputed by
    :func:`_lse_stats_exact` (one boolean read back per call); with autograd everything
    goes through :func:`_lse_stats_exact`.
    """
    if torch.is_grad_enabled() and (xs.requires_grad or cen.C0.requires_grad):
        return _lse_stats_exact(xs, mu, sbar2, cen, tile, want_acc)
    M, d = xs.shape
    N = cen.C0.shape[0]
    qc, ccn = tile
    dt, out_dt = cen.dtype, xs.dtype
    name = str(dt).removeprefix("torch.")
    floor = EXP_FLOOR[name]
    inv2s2 = 0.5 / sbar2
    xx = (xs * xs).sum(dim=1)
    Q = torch.cat([xs, torch.ones_like(xx)[:, None], xx[:, None]], dim=1).to(dt)
    A = torch.cat(
        [
            cen.C0 * (mu / sbar2),
            ((cen.log_w - cen.w_max) - (inv2s2 * mu * mu) * cen.cc)[:, None],
            torch.full_like(cen.cc, -inv2s2)[:, None],
        ],
        dim=1,
    ).to(dt)
    work = torch.empty(qc * ccn, dtype=dt, device=xs.device)
    S = torch.zeros((M, d + 1), dtype=out_dt, device=xs.device)
    use_floor = floor_needed(float(xx.max()), mu, sbar2, cen, floor)
    for q0 in range(0, M, qc):
        q1 = min(M, q0 + qc)
        for c0 in range(0, N, ccn):
            c1 = min(N, c0 + ccn)
            E = work[: (q1 - q0) * (c1 - c0)].view(q1 - q0, c1 - c0)
            torch.mm(Q[q0:q1], A[c0:c1].T, out=E)  # logits minus w_max
            if use_floor:
                E.clamp_min_(floor)  # no slow underflow in exp
            E.exp_()
            S[q0:q1] += (E @ cen.C1[c0:c1]).to(out_dt)
    row_sum = S[:, d]
    acc = S[:, :d] if want_acc else None
    row_max = torch.full_like(row_sum, cen.w_max)
    rescue = row_sum < RESCUE_BELOW[name]
    if bool(rescue.any()):
        idx = torch.nonzero(rescue).squeeze(1)
        r_max, r_sum, r_acc = _lse_stats_exact(xs[idx], mu, sbar2, cen, tile, want_acc)
        row_max[idx], row_sum[idx] = r_max, r_sum
        if want_acc:
            acc[idx] = r_acc
    return row_max, row_sum, acc


def _lse_stats_exact(xs, mu, sbar2, cen, tile, want_acc):
    """Streaming log-sum-exp over centre tiles with running row maxima (``kde``'s twin).

    The tiles run in ``cen.dtype``; the results, and their combination across centre
    tiles, are in the dtype of ``xs``.
    """
    M = xs.shape[0]
    N = cen.C0.shape[0]
    d = cen.dim
    qc, ccn = tile
    dt, out_dt = cen.dtype, xs.dtype
    floor = EXP_FLOOR[str(dt).removeprefix("torch.")]
    inv2s2 = 0.5 / sbar2
    mu2cc = (mu * mu) * cen.cc
    xx = (xs * xs).sum(dim=1)
    grad = torch.is_grad_enabled() and (xs.requires_grad or cen.C0.requires_grad)
    # Without autograd every tile is computed in place in one reused buffer: no large
    # allocation per tile (which also spares the C allocator's fragmentation on CPU).
    # The in-place path gets its logits from one product of augmented rows, capped at
    # log_w (= clipping the expanded squared distance at 0), as in ``kde._lse_stats``,
    # shifts them by the row maximum, floors them at EXP_FLOOR (no slow underflow in
    # exp) and gets the weighted sum and the sum of weights from one product with C1.
    work = Q = A = None
    if not grad:
        work = torch.empty(qc * ccn, dtype=dt, device=xs.device)
        Q = torch.cat([xs, torch.ones_like(xx)[:, None], xx[:, None]], dim=1).to(dt)
        A = torch.cat(
            [
                cen.C0 * (mu / sbar2),
                (cen.log_w - inv2s2 * mu2cc)[:, None],
                torch.full_like(cen.cc, -inv2s2)[:, None],
            ],
            dim=1,
        ).to(dt)
    maxes, sums, accs = [], [], []
    for q0 in range(0, M, qc):
        q1 = min(M, q0 + qc)
        r_max = r_sum = r_acc = None
        for c0 in range(0, N, ccn):
            c1 = min(N, c0 + ccn)
            if grad:
                xb = xs[q0:q1].to(dt)
                Cb = cen.C0[c0:c1].to(dt)
                d2 = torch.addmm(
                    (xx[q0:q1, None] + mu2cc[c0:c1]).to(dt), xb, Cb.T, beta=1.0, alpha=-2.0 * mu
                )
                # clip the value at 0 but keep the gradient 2(x' - mu c') of the expansion
                # (a plain clamp would zero it where cancellation gave a tiny negative)
                d2 = d2 + (d2.clamp_min(0.0) - d2).detach()
                L = cen.cap[c0:c1] - inv2s2 * d2
                b_max = L.amax(dim=1).detach()
                E = torch.exp(L - b_max[:, None])
                b_sum = E.sum(dim=1)
                b_acc = E @ Cb if want_acc else None
            else:
                E = work[: (q1 - q0) * (c1 - c0)].view(q1 - q0, c1 - c0)
                torch.mm(Q[q0:q1], A[c0:c1].T, out=E)  # logits
                torch.minimum(E, cen.cap[c0:c1], out=E)  # squared distance >= 0
                b_max = E.amax(dim=1)
                E.sub_(b_max[:, None]).clamp_min_(floor).exp_()
                # the same product with or without the score (as in ``kde._lse_stats``)
                S = (E @ cen.C1[c0:c1]).to(out_dt)
                b_acc, b_sum = (S[:, :d] if want_acc else None), S[:, d]
            b_max = b_max.to(out_dt)
            if grad:
                b_sum = b_sum.to(out_dt)
                b_acc = b_acc.to(out_dt) if want_acc else None
            if r_max is None:
                r_max, r_sum, r_acc = b_max, b_sum, b_acc
            else:
                new_max = torch.maximum(r_max, b_max)
                a = torch.exp(r_max - new_max)
                b = torch.exp(b_max - new_max)
                r_sum = r_sum * a + b_sum * b
                if want_acc:
                    r_acc = r_acc * a[:, None] + b_acc * b[:, None]
                r_max = new_max
        maxes.append(r_max)
        sums.append(r_sum)
        if want_acc:
            accs.append(r_acc)
    if len(maxes) == 1:
        return maxes[0], sums[0], accs[0] if want_acc else None
    acc = torch.cat(accs) if want_acc else None
    return torch.cat(maxes), torch.cat(sums), acc


def score_logp_prepared(x, mu, sbar2, cen, tile, want_score=True, want_logp=True):
    """Score and/or log-density for validated queries ``x`` and prepared :class:`Centres`."""
    xs = x - mu * cen.shift
    row_max, row_sum, acc = _lse_stats(xs, mu, sbar2, cen, tile, want_score)
    score = logp = None
    if want_score:
        score = (mu * (acc / row_sum[:, None]) - xs) / sbar2
    if want_logp:
        logp = (
            row_max
            + torch.log(row_sum)
            - cen.lse_w
            - 0.5 * cen.dim * math.log(2.0 * math.pi * sbar2)
        )
    return score, logp


def score_and_log_density(
    x,
    t,
    centres,
    log_w_obs,
    schedule,
    chunk_size=None,
    *,
    memory_budget=None,
    device=None,
    want_score=True,
    want_logp=True,
    dtype=None,
):
    """Validate, convert and compute (the body of the public torch functions).

    ``dtype`` (None or a name of ``SCORE_DTYPES``) is the precision of the pairwise
    tiles; None: that of ``x`` (float64 for numpy input). Results are in ``x``'s dtype.
    """
    tile_dtype = as_torch_dtype(dtype)
    if isinstance(x, torch.Tensor):
        dev = x.device
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float64
    else:
        dev = torch.device(resolve_device(device))
        dtype = torch.float64
    x = _check_matrix(_as_float_tensor(x, "x", dev, dtype), "x")
    centres = _check_matrix(
        _as_float_tensor(centres, "centres", dev, dtype), "centres", ncols=x.shape[1]
    )
    log_w = _check_log_weights(log_w_obs, centres.shape[0], x)
    _, mu, sbar2 = _check_time(t, schedule)
    cen = Centres(centres, log_w, tile_dtype)
    tile = torch_tile(x.shape[0], cen.C0.shape[0], chunk_size, memory_budget, cen.dtype, dev)
    return score_logp_prepared(x, mu, sbar2, cen, tile, want_score, want_logp)


def kde_score(
    x, t, centres, log_w_obs, schedule, chunk_size=None, *, memory_budget=None, dtype=None
):
    """Torch :func:`dasim.diffusion.kde.kde_score` (same parameters, returns a tensor)."""
    return score_and_log_density(
        x,
        t,
        centres,
        log_w_obs,
        schedule,
        chunk_size,
        memory_budget=memory_budget,
        want_logp=False,
        dtype=dtype,
    )[0]


def kde_log_density(
    x, t, centres, log_w_obs, schedule, chunk_size=None, *, memory_budget=None, dtype=None
):
    """Torch :func:`dasim.diffusion.kde.kde_log_density` (differentiable by autograd)."""
    return score_and_log_density(
        x,
        t,
        centres,
        log_w_obs,
        schedule,
        chunk_size,
        memory_budget=memory_budget,
        want_score=False,
        dtype=dtype,
    )[1]


def kde_score_and_log_density(
    x, t, centres, log_w_obs, schedule, chunk_size=None, *, memory_budget=None, dtype=None
):
    """Torch :func:`dasim.diffusion.kde.kde_score_and_log_density`."""
    return score_and_log_density(
        x, t, centres, log_w_obs, schedule, chunk_size, memory_budget=memory_budget, dtype=dtype
    )


# --------------------------------------------------------------------------- RK45 on tensors

# Dormand-Prince 5(4) tableau: nodes, stage coefficients, 5th-order weights, and the
# difference between the 5th- and 4th-order weights (error estimate, 7 stages with FSAL).
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0)
_DP_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
)
_DP_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)
_DP_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)
_SAFETY, _MIN_FACTOR, _MAX_FACTOR = 0.9, 0.2, 10.0


def _rms(v):
    return float(torch.linalg.vector_norm(v)) / math.sqrt(v.numel())


def _combine(y, h, coeffs, K):
    out = y
    for a, k in zip(coeffs, K, strict=False):
        if a != 0.0:
            out = out.add(k, alpha=h * a) if out is not None else k * (h * a)
    return out


def dopri5(fun, t0, t1, y0, rtol=1e-5, atol=1e-5, max_steps=100_000):
    r"""Adaptive Dormand-Prince RK45 for :math:`dy/dt = \text{fun}(t, y)` on tensors.

    The step-size control is the classical one (the same rules as
    ``scipy.integrate.solve_ivp(method="RK45")``): the error of a step is the RMS over all
    elements of :math:`h \sum_j E_j k_j / (\text{atol} + \text{rtol}\max(|y|, |y_{new}|))`;
    a step is accepted when it is < 1, and the next step is scaled by
    :math:`\min(10, \max(0.2, 0.9\, \text{err}^{-1/5}))` (no growth right after a
    rejection); the first step follows Hairer's heuristic. The state stays on its device;
    the only device-to-host transfer is one scalar (the error norm) per step attempt.

    Parameters
    ----------
    fun : callable ``(t: float, y: Tensor) -> Tensor``
        Right-hand side (any tensor shape; the whole tensor is one system).
    t0, t1 : float
        Start and end times (``t1 < t0`` integrates backwards).
    y0 : torch.Tensor
        Initial state.
    rtol, atol : float
        Relative and absolute tolerances.
    max_steps : int
        Step attempts allowed before giving up.

    Returns
    -------
    y : torch.Tensor
        State at ``t1``.
    info : dict
        ``n_steps`` (accepted), ``n_rejected``, ``nfev``, ``success``, ``message``.
    """
    t0, t1 = float(t0), float(t1)
    direction = 1.0 if t1 >= t0 else -1.0
    length = abs(t1 - t0)
    y = y0
    f = fun(t0, y)
    nfev = 1
    info = {"n_steps": 0, "n_rejected": 0, "nfev": nfev, "success": True, "message": ""}
    if length == 0.0:
        return y, info
    if not bool(torch.isfinite(f).all()):
        info.update(success=False, message=f"dopri5: non-finite right-hand side at t={t0!r}.")
        return y, info
    # initial step
    scale = atol + y.abs() * rtol
    d0, d1 = _rms(y / scale), _rms(f / scale)
    h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
    h0 = min(h0, length)
    f1 = fun(t0 + direction * h0, y + (direction * h0) * f)
    nfev += 1
    d2 = _rms((f1 - f) / scale) / h0
    if d1 <= 1e-15 and d2 <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / 5.0)
    h_abs = min(100.0 * h0, h1, length)

    t = t0
    attempts = 0
    while direction * (t1 - t) > 0.0:
        min_step = 10.0 * abs(math.nextafter(t, direction * math.inf) - t)
        rejected = False
        while True:
            attempts += 1
            if attempts > max_steps:
                info.update(
                    success=False,
                    nfev=nfev,
                    message=f"dopri5: more than max_steps={max_steps} step attempts.",
                )
                return y, info
            if h_abs < min_step:
                info.update(
                    success=False,
                    nfev=nfev,
                    message="dopri5: required step size is below the time spacing.",
                )
                return y, info
            t_new = t + direction * h_abs
            if direction * (t_new - t1) > 0.0:
                t_new = t1
            h = t_new - t
            h_abs = abs(h)
            K = [f]
            for i in range(1, 6):
                K.append(fun(t + _DP_C[i] * h, _combine(y, h, _DP_A[i], K)))
            y_new = _combine(y, h, _DP_B, K)
            f_new = fun(t_new, y_new)
            K.append(f_new)
            nfev += 6
            scale = atol + torch.maximum(y.abs(), y_new.abs()) * rtol
            err = _combine(None, h, _DP_E, K)
            err_norm = _rms(err / scale)
            if not math.isfinite(err_norm):
                info.update(
                    success=False,
                    nfev=nfev,
                    message=f"dopri5: non-finite error estimate at t={t!r}.",
                )
                return y, info
            if err_norm < 1.0:
                factor = (
                    _MAX_FACTOR
                    if err_norm == 0.0
                    else min(_MAX_FACTOR, _SAFETY * err_norm ** (-0.2))
                )
                if rejected:
                    factor = min(1.0, factor)
                h_abs *= factor
                break
            h_abs *= max(_MIN_FACTOR, _SAFETY * err_norm ** (-0.2))
            rejected = True
            info["n_rejected"] += 1
        t, y, f = t_new, y_new, f_new
        info["n_steps"] += 1
    info["nfev"] = nfev
    info["message"] = "The solver successfully reached the end of the integration interval."
    return y, info
