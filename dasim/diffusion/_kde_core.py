"""Core of the closed-form KDE score: checks, tiles, the fused pass and its exact rescue.

Written once over the array namespace of :mod:`dasim.diffusion._xp`: the same code runs
on numpy arrays and on torch tensors (any device). Private to
:mod:`dasim.diffusion.kde` (read its module docstring for the method); the names are
re-exported there.

With torch, the log-density is differentiable by autograd (the tile maxima used for the
log-sum-exp are detached constants, which does not change the gradient): with autograd
recording, every row goes through :func:`_lse_stats_exact`'s differentiable branch.
"""

from __future__ import annotations

import math

import numpy as np

from .._validation import check_positive_int
from ._xp import NUMPY, is_tensor, namespace

#: Upper bound, in bytes, for the pairwise temporaries of one tile (256 MiB).
DEFAULT_MEMORY_BUDGET = 256 * 2**20
# Per backend: pairwise temporaries of one tile, counted in (queries x centres) arrays,
# and the tile size (elements) that keeps the working set in cache on a CPU (the budget
# caps it; on an accelerator the budget alone decides).
_NUMPY_TEMPORARIES, _NUMPY_TILE_ELEMENTS = 2, 2**17
_TORCH_TEMPORARIES, _TORCH_CPU_TILE_ELEMENTS = 4, 2**18
# Queries per tile wanted before the centres are split (keeps the matmuls efficient).
_MIN_TILE_QUERIES = 64
#: Floor of the shifted logits before ``exp``, by dtype name: it keeps ``exp`` out of its
#: slow underflow path (20-50 x slower on CPU) at a cost far below rounding.
EXP_FLOOR = {"float64": -600.0, "float32": -70.0}
#: Row sums (relative to the largest weight) below which a row is recomputed exactly,
#: with its own maximum: the floored terms then weigh at most e^-100 (float64) or e^-30
#: (float32) each against the row's sum.
RESCUE_BELOW = {"float64": math.exp(-500.0), "float32": math.exp(-40.0)}
#: The floating-point types the pairwise score tiles can be computed in.
SCORE_DTYPES = ("float64", "float32")


def check_score_dtype(dtype, name="dtype", allow_none=True):
    """Validate a score precision and return its name (``"float64"`` or ``"float32"``).

    Accepts the names, numpy dtypes/types and torch dtypes of float64 and float32 (and
    None when ``allow_none``, returned as None). Anything else raises a ValueError (a
    TypeError for a non-dtype object) that names ``name``.
    """
    if dtype is None:
        if allow_none:
            return None
        raise ValueError(f"{name} must be one of {SCORE_DTYPES}, got None.")
    if isinstance(dtype, str):
        label = dtype
    elif type(dtype).__name__ == "dtype" and type(dtype).__module__ == "torch":
        label = str(dtype).removeprefix("torch.")
    else:
        try:
            label = np.dtype(dtype).name
        except TypeError as exc:
            raise TypeError(
                f"{name} must be one of {SCORE_DTYPES} (a name, numpy or torch dtype), "
                f"got {dtype!r}."
            ) from exc
    if label not in SCORE_DTYPES:
        raise ValueError(f"{name} must be one of {SCORE_DTYPES}, got {dtype!r}.")
    return label


# --------------------------------------------------------------------------- tiling


def tile_shape(
    n_queries,
    n_centres,
    chunk_size=None,
    memory_budget=None,
    *,
    itemsize=8,
    temporaries=2,
    target_elements=None,
):
    """Queries and centres per tile of the pairwise computation.

    Parameters
    ----------
    n_queries, n_centres : int
        Problem size ``M`` and ``N``.
    chunk_size : int or (int, int), optional
        Forced tile: an int gives that many queries per tile and all centres; a pair gives
        (queries, centres). ``None`` derives the tile from the budget.
    memory_budget : int, optional
        Byte budget for the ``temporaries`` pairwise arrays of one tile
        (:data:`DEFAULT_MEMORY_BUDGET` when ``None``).
    itemsize : int, default=8
        Bytes per element.
    temporaries : int, default=2
        Number of (queries x centres) arrays alive at once.
    target_elements : int, optional
        Preferred tile size in elements (below the budget); ``None``: the budget alone.

    Returns
    -------
    (int, int)
        Queries and centres per tile; their product times ``itemsize * temporaries`` is at
        most ``memory_budget`` (unless a forced ``chunk_size`` says otherwise).
    """
    if chunk_size is not None:
        if isinstance(chunk_size, tuple | list):
            if len(chunk_size) != 2:
                raise ValueError(f"chunk_size must be an int or a pair, got {chunk_size!r}.")
            q = check_positive_int(chunk_size[0], "chunk_size[0]")
            c = check_positive_int(chunk_size[1], "chunk_size[1]")
        else:
            q, c = check_positive_int(chunk_size, "chunk_size"), n_centres
        return min(q, n_queries), min(c, n_centres)
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else memory_budget
    budget = check_positive_int(budget, "memory_budget")
    elements = max(1, budget // (itemsize * temporaries))
    if target_elements is not None:
        elements = min(elements, target_elements)
    if n_queries * n_centres <= elements:
        return n_queries, n_centres
    c = min(n_centres, max(1, elements // min(n_queries, _MIN_TILE_QUERIES)))
    q = min(n_queries, max(1, elements // c))
    return q, c


# --------------------------------------------------------------------------- tiles per backend


def tile_for(xp, n_q, n_c, chunk_size, memory_budget, dtype):
    """Tile shape (queries, centres) of a computation in namespace ``xp``, tiles in ``dtype``."""
    if xp.name == "torch":
        return torch_tile(n_q, n_c, chunk_size, memory_budget, dtype, xp.device)
    return _numpy_tile(n_q, n_c, chunk_size, memory_budget)


def _numpy_tile(n_q, n_c, chunk_size, memory_budget):
    return tile_shape(
        n_q,
        n_c,
        chunk_size,
        memory_budget,
        itemsize=8,
        temporaries=_NUMPY_TEMPORARIES,
        target_elements=_NUMPY_TILE_ELEMENTS,
    )


def torch_tile(n_q, n_c, chunk_size, memory_budget, dtype, device):
    """Tile shape (queries, centres) for a torch computation on ``device``.

    ``dtype`` is the tiles' precision (a name or a torch dtype).
    """
    itemsize = np.dtype(check_score_dtype(dtype, allow_none=False)).itemsize
    on_cpu = getattr(device, "type", str(device).split(":")[0]) == "cpu"
    return tile_shape(
        n_q,
        n_c,
        chunk_size,
        memory_budget,
        itemsize=itemsize,
        temporaries=_TORCH_TEMPORARIES,
        target_elements=_TORCH_CPU_TILE_ELEMENTS if on_cpu else None,
    )


# --------------------------------------------------------------------------- input checks


def _check_matrix(value, name, ncols=None, xp=None):
    """``value`` as a finite 2-D float array of namespace ``xp`` (numpy float64 if None).

    Without ``xp`` a torch tensor is a TypeError (all arrays numpy or all torch).
    """
    if xp is None:
        xp = NUMPY
        if is_tensor(value):
            raise TypeError(f"{name} is a torch tensor; pass all arrays as numpy or all as torch.")
    try:
        arr = xp.asarray(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a numeric array ({exc}).") from exc
    shape = tuple(arr.shape)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {shape}.")
    if shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"{name} must have at least one row and one column, got {shape}.")
    if ncols is not None and shape[1] != ncols:
        raise ValueError(f"{name} must have {ncols} columns (the state dimension), got {shape}.")
    if not xp.all_finite(arr):
        raise ValueError(f"{name} contains NaN or inf.")
    return arr


def _check_log_weights(log_w, n, xp=None, like=None, name="log_w_obs"):
    """Validate log-weights; ``None`` means uniform. ``-inf`` (zero weight) is allowed.

    In namespace ``xp`` (numpy float64 if None, where a tensor is a TypeError); ``like``:
    the array whose device uniform weights share.
    """
    if xp is None:
        xp = NUMPY
        if is_tensor(log_w):
            raise TypeError(f"{name} is a torch tensor; pass all arrays as numpy or all as torch.")
    if log_w is None:
        return xp.zeros((n,), like=like)
    arr = xp.asarray(log_w)
    if tuple(arr.shape) != (n,):
        raise ValueError(
            f"{name} must have shape ({n},) (one per centre), got {tuple(arr.shape)}."
        )
    if bool((arr != arr).any()) or bool((arr == math.inf).any()):
        raise ValueError(f"{name} contains NaN or +inf.")
    if not bool((arr > -math.inf).any()):
        raise ValueError(f"every observation weight is zero (all {name} are -inf).")
    return arr


def _check_time(t, schedule):
    if is_tensor(t):
        t = t.item()
    if isinstance(t, bool):
        raise TypeError("t must be a real scalar, got bool.")
    try:
        t_arr = np.asarray(t, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"t must be a real scalar, got {type(t).__name__}.") from exc
    if t_arr.ndim != 0:
        raise ValueError(f"t must be a scalar, got shape {t_arr.shape}.")
    t = float(t_arr)
    if not math.isfinite(t) or t < 0.0:
        raise ValueError(f"t must be finite and >= 0, got {t!r}.")
    mu = float(schedule.mu(t))
    sbar2 = float(schedule.sigmabar2(t))
    if not (math.isfinite(sbar2) and sbar2 > 0.0 and math.isfinite(mu)):
        raise ValueError(
            f"t={t!r} gives sigmabar(t)^2={sbar2!r}; it must be > 0 (t below the "
            f"schedule's t_end={getattr(schedule, 't_end', None)!r}?)."
        )
    return t, mu, sbar2


# --------------------------------------------------------------------------- the core


class Centres:
    """Centres preprocessed once (shifted by their mean; zero-weight ones dropped).

    Numpy arrays or torch tensors (their namespace is kept in ``xp``). ``dtype`` (a name
    of :data:`SCORE_DTYPES`, or a numpy/torch dtype; default the centres' own) is the
    precision of the pairwise tiles; the shift, ``C0``, ``cc`` and the log-weights stay in
    the centres' precision.
    """

    __slots__ = (
        "xp",
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
        xp = self.xp = namespace(centres)
        keep = log_w > -math.inf
        if not bool(keep.all()):
            centres, log_w = centres[keep], log_w[keep]
        self.shift = centres.mean(0)
        self.C0 = centres - self.shift
        self.cc = xp.rowdot(self.C0, self.C0)
        self.log_w = log_w
        self.w_max = float(log_w.max())  # the shift of the fast pass
        self.lse_w = xp.logsumexp(log_w)
        # for the lower bound of the logits (floor_needed)
        self.w_spread = self.w_max - float(log_w.min())
        self.c_norm = math.sqrt(float(self.cc.max()))
        self.dim = centres.shape[1]
        self.dtype = check_score_dtype(dtype) or xp.dtype_name(centres)
        # centres augmented by a column of ones: one product gives sum_i w_i C0_i and
        # sum_i w_i together
        self.C1 = xp.full((centres.shape[0], self.dim + 1), 1.0, dtype=self.dtype, like=centres)
        self.C1[:, : self.dim] = xp.detach(self.C0)
        self.cap = xp.astype(log_w, self.dtype)


def floor_needed(xx_max, mu, sbar2, cen, floor):
    """Whether some shifted logit of the fast pass may fall below ``floor``.

    Every logit minus ``w_max`` is at least :math:`-(\\ell_{max} - \\ell_{min}) -
    (\\max\\lVert x'\\rVert + \\mu\\max\\lVert c'\\rVert)^2 / (2\\bar\\sigma^2)`; when
    that bound is above the floor (large noise levels) the flooring pass is skipped. The
    floor is 100 (float64) or 17 (float32) nats above ``exp``'s underflow, so a bound a
    little off by rounding costs nothing.
    """
    reach = math.sqrt(max(xx_max, 0.0)) + mu * cen.c_norm
    return -cen.w_spread - reach * reach * (0.5 / sbar2) < floor


def _augmented(xs, xx, mu, sbar2, cen, log_w):
    r"""Rows whose product is the logits: :math:`[x', 1, \lVert x'\rVert^2]` for the
    queries, :math:`[\mu c'/\bar\sigma^2,\ \ell - \mu^2\lVert c'\rVert^2/(2\bar\sigma^2),\
    -1/(2\bar\sigma^2)]` for the centres (with ``log_w`` for :math:`\ell`), in
    ``cen.dtype``."""
    xp, dt = cen.xp, cen.dtype
    (M, d), N = xs.shape, cen.C0.shape[0]
    inv2s2 = 0.5 / sbar2
    Q = xp.empty((M, d + 2), dtype=dt, like=xs)
    Q[:, :d] = xs
    Q[:, d] = 1.0
    Q[:, d + 1] = xx
    A = xp.empty((N, d + 2), dtype=dt, like=xs)
    A[:, :d] = cen.C0 * (mu / sbar2)
    A[:, d] = log_w - (mu * mu * inv2s2) * cen.cc
    A[:, d + 1] = -inv2s2
    return Q, A


def _lse_stats(xs, mu, sbar2, cen, tile, want_acc):
    """Fast pass of the log-sum-exp: every row shifted by ``cen.w_max`` (no row maximum).

    Returns ``row_max`` (``w_max``, or the row's own maximum for rescued rows),
    ``row_sum`` and ``acc`` as :func:`_lse_stats_exact` defines them. Rows whose sum is
    below :data:`RESCUE_BELOW` are recomputed by :func:`_lse_stats_exact` (on torch, one
    boolean read back per call); with autograd everything goes through
    :func:`_lse_stats_exact`.
    """
    xp = cen.xp
    if xp.requires_grad(xs, cen.C0):
        return _lse_stats_exact(xs, mu, sbar2, cen, tile, want_acc)
    (M, d), N = xs.shape, cen.C0.shape[0]
    qc, cc_ = tile
    dt = cen.dtype
    xx = xp.rowdot(xs, xs)
    Q, A = _augmented(xs, xx, mu, sbar2, cen, cen.log_w - cen.w_max)
    use_floor = floor_needed(float(xx.max()), mu, sbar2, cen, EXP_FLOOR[dt])
    S = xp.zeros((M, d + 1), dtype=xs.dtype, like=xs)
    work = xp.empty((qc * cc_,), dtype=dt, like=xs)  # one reused tile buffer
    for q0 in range(0, M, qc):
        q1 = min(M, q0 + qc)
        for c0 in range(0, N, cc_):
            c1 = min(N, c0 + cc_)
            G = work[: (q1 - q0) * (c1 - c0)].reshape(q1 - q0, c1 - c0)
            xp.matmul(Q[q0:q1], A[c0:c1].T, out=G)  # logits minus w_max
            if use_floor:
                xp.clip_min_(G, EXP_FLOOR[dt])  # no slow underflow in exp
            xp.exp_(G)
            S[q0:q1] += G @ cen.C1[c0:c1]
    row_sum = S[:, d]
    acc = S[:, :d] if want_acc else None
    row_max = xp.full((M,), cen.w_max, dtype=xs.dtype, like=xs)
    rescue = row_sum < RESCUE_BELOW[dt]
    if bool(rescue.any()):
        idx = xp.nonzero(rescue)
        r_max, r_sum, r_acc = _lse_stats_exact(xs[idx], mu, sbar2, cen, tile, want_acc)
        row_max[idx], row_sum[idx] = r_max, r_sum
        if want_acc:
            acc[idx] = r_acc
    return row_max, row_sum, acc


def _lse_stats_exact(xs, mu, sbar2, cen, tile, want_acc):
    """Streaming log-sum-exp over centres for shifted queries ``xs = x - mu * shift``.

    With :math:`l_{mi} = \\ell_i - \\lVert x'_m - \\mu C0_i\\rVert^2 / (2\\bar\\sigma^2)`
    returns ``row_max``, ``row_sum`` with
    :math:`\\log\\sum_i e^{l_{mi}} = \\text{row\\_max} + \\log \\text{row\\_sum}` and
    ``acc`` = :math:`\\sum_i e^{l_{mi} - \\text{row\\_max}} C0_i` (or None), all in the
    precision of ``xs``.

    The logits of a tile come from one matrix product of augmented rows
    (:func:`_augmented`) and are then capped at :math:`\\ell_i`: that cap is exactly the
    clipping of the expanded squared distance at 0 (it removes the negative values
    cancellation can give). They are shifted by their row maximum, floored at
    :data:`EXP_FLOOR` and exponentiated in place in one reused buffer; one product with
    ``[C0, 1]`` gives the weighted sum and the sum of weights. The tiles run in
    ``cen.dtype``; the combination across centre tiles in the precision of ``xs``. With
    autograd recording (torch) each tile is computed out of place, differentiably.
    """
    xp = cen.xp
    (M, d), N = xs.shape, cen.C0.shape[0]
    qc, cc_ = tile
    dt, out_dt = cen.dtype, xs.dtype
    floor = EXP_FLOOR[dt]
    xx = xp.rowdot(xs, xs)
    grad = xp.requires_grad(xs, cen.C0)
    if not grad:
        Q, A = _augmented(xs, xx, mu, sbar2, cen, cen.log_w)
        work = xp.empty((qc * cc_,), dtype=dt, like=xs)
    maxes, sums, accs = [], [], []
    for q0 in range(0, M, qc):
        q1 = min(M, q0 + qc)
        r_max = r_sum = r_acc = None
        for c0 in range(0, N, cc_):
            c1 = min(N, c0 + cc_)
            if grad:
                b_max, b_sum, b_acc = _tile_grad(xs[q0:q1], xx[q0:q1], mu, sbar2, cen, c0, c1)
            else:
                G = work[: (q1 - q0) * (c1 - c0)].reshape(q1 - q0, c1 - c0)
                xp.matmul(Q[q0:q1], A[c0:c1].T, out=G)  # logits l_mi
                xp.minimum_(G, cen.cap[c0:c1])  # squared distance >= 0
                b_max = xp.amax(G, 1)
                G -= b_max[:, None]
                xp.clip_min_(G, floor)  # no slow underflow in exp
                xp.exp_(G)
                # the same product with or without the score: the log-density is then
                # bitwise the same whether it is asked for alone or with the score
                S = xp.astype(G @ cen.C1[c0:c1], out_dt)
                b_acc, b_sum = S[:, :d], S[:, d]
            b_max = xp.astype(b_max, out_dt)
            if r_max is None:
                r_max, r_sum, r_acc = b_max, b_sum, b_acc
            else:
                new_max = xp.maximum(r_max, b_max)
                a = xp.exp(r_max - new_max)
                b = xp.exp(b_max - new_max)
                r_sum = r_sum * a + b_sum * b
                if want_acc:
                    r_acc = r_acc * a[:, None] + b_acc * b[:, None]
                r_max = new_max
        maxes.append(r_max)
        sums.append(r_sum)
        accs.append(r_acc)
    if len(maxes) == 1:
        return maxes[0], sums[0], accs[0] if want_acc else None
    return xp.concat(maxes), xp.concat(sums), xp.concat(accs) if want_acc else None


def _tile_grad(xb, xxb, mu, sbar2, cen, c0, c1):
    """One tile of :func:`_lse_stats_exact` out of place, for autograd."""
    xp, dt, out_dt = cen.xp, cen.dtype, xb.dtype
    Cb = xp.astype(cen.C0[c0:c1], dt)
    base = xp.astype(xxb[:, None] + (mu * mu) * cen.cc[c0:c1], dt)
    d2 = xp.addmm(base, xp.astype(xb, dt), Cb.T, -2.0 * mu)
    # clip the value at 0 but keep the gradient 2(x' - mu c') of the expansion (a plain
    # clip would zero it where cancellation gave a tiny negative)
    d2 = d2 + xp.detach(xp.clip_min(d2, 0.0) - d2)
    L = cen.cap[c0:c1] - (0.5 / sbar2) * d2
    b_max = xp.detach(xp.amax(L, 1))
    E = xp.exp(L - b_max[:, None])
    return b_max, xp.astype(xp.sum(E, 1), out_dt), xp.astype(E @ Cb, out_dt)


def _score_logp_prepared(x, mu, sbar2, cen, tile, want_score=True, want_logp=True):
    """Score and/or log-density for validated queries ``x`` and prepared :class:`Centres`."""
    xp = cen.xp
    xs = x - mu * cen.shift
    with xp.compute():
        row_max, row_sum, acc = _lse_stats(xs, mu, sbar2, cen, tile, want_score)
    score = logp = None
    if want_score:
        score = (mu * (acc / row_sum[:, None]) - xs) / sbar2
    if want_logp:
        logp = (
            row_max + xp.log(row_sum) - cen.lse_w - 0.5 * cen.dim * math.log(2.0 * math.pi * sbar2)
        )
    return score, logp


#: The former name of :class:`Centres`.
_Centres = Centres
