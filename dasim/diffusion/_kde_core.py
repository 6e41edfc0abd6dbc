"""Numpy core of the closed-form KDE score: tiles, the fused pass and its exact rescue.

Private to :mod:`dasim.diffusion.kde` (read its module docstring for the method); the
names are re-exported there. :mod:`dasim.diffusion._kde_torch` is the torch twin.
"""

from __future__ import annotations

import math

import numpy as np

from .._threads import single_blas_thread
from .._validation import check_positive_int

#: Upper bound, in bytes, for the pairwise temporaries of one tile (256 MiB).
DEFAULT_MEMORY_BUDGET = 256 * 2**20
# Pairwise temporaries of one numpy tile, counted in (queries x centres) arrays.
_NUMPY_TEMPORARIES = 2
# Tile size (elements) that keeps the numpy working set in cache; the budget caps it.
_NUMPY_TILE_ELEMENTS = 2**17
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


# --------------------------------------------------------------------------- numpy core


class _Centres:
    """Centres preprocessed once (shifted by their mean; zero-weight ones dropped).

    ``dtype`` (a name of :data:`SCORE_DTYPES`) is the precision of the pairwise tiles;
    the shift, ``C0``, ``cc`` and the log-weights stay in float64.
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

    def __init__(self, centres, log_w, dtype="float64"):
        keep = log_w > -np.inf
        if not np.all(keep):
            centres, log_w = centres[keep], log_w[keep]
        self.shift = centres.mean(axis=0)
        self.C0 = centres - self.shift
        self.cc = np.einsum("ij,ij->i", self.C0, self.C0)
        self.log_w = log_w
        self.w_max = float(log_w.max())  # the shift of the fast pass
        self.lse_w = self.w_max + math.log(float(np.exp(log_w - self.w_max).sum()))
        # for the lower bound of the logits (_floor_needed)
        self.w_spread = self.w_max - float(log_w.min())
        self.c_norm = math.sqrt(float(self.cc.max()))
        self.dim = centres.shape[1]
        self.dtype = check_score_dtype(dtype, allow_none=False)
        # centres augmented by a column of ones: one product gives sum_i w_i C0_i and
        # sum_i w_i together
        self.C1 = np.ones((centres.shape[0], self.dim + 1), dtype=self.dtype)
        self.C1[:, : self.dim] = self.C0
        self.cap = log_w.astype(self.dtype)


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


def _lse_stats(xs, mu, sbar2, cen, tile, want_acc):
    """Fast pass of the log-sum-exp: every row shifted by ``cen.w_max`` (no row maximum).

    Returns ``row_max`` (``w_max``, or the row's own maximum for rescued rows),
    ``row_sum`` and ``acc`` as :func:`_lse_stats_exact` defines them. Rows whose sum is
    below :data:`RESCUE_BELOW` are recomputed by :func:`_lse_stats_exact`.
    """
    M, d = xs.shape
    N = cen.C0.shape[0]
    qc, cc_ = tile
    dt = cen.dtype
    inv2s2 = 0.5 / sbar2
    Q = np.empty((M, d + 2), dtype=dt)
    Q[:, :d] = xs
    Q[:, d] = 1.0
    xx = np.einsum("ij,ij->i", xs, xs)
    Q[:, d + 1] = xx
    A = np.empty((N, d + 2), dtype=dt)
    A[:, :d] = cen.C0 * (mu / sbar2)
    A[:, d] = (cen.log_w - cen.w_max) - (mu * mu * inv2s2) * cen.cc
    A[:, d + 1] = -inv2s2
    floor = np.array(EXP_FLOOR[dt], dtype=dt)
    use_floor = floor_needed(float(xx.max()), mu, sbar2, cen, EXP_FLOOR[dt])
    S = np.zeros((M, d + 1))
    work = np.empty(qc * cc_, dtype=dt)  # one reused tile buffer: no allocation per tile
    for q0 in range(0, M, qc):
        q1 = min(M, q0 + qc)
        Qb = Q[q0:q1]
        for c0 in range(0, N, cc_):
            c1 = min(N, c0 + cc_)
            G = work[: (q1 - q0) * (c1 - c0)].reshape(q1 - q0, c1 - c0)
            np.matmul(Qb, A[c0:c1].T, out=G)  # logits minus w_max
            if use_floor:
                np.maximum(G, floor, out=G)  # no slow underflow in exp
            np.exp(G, out=G)
            S[q0:q1] += G @ cen.C1[c0:c1]
    row_sum = S[:, d]
    acc = S[:, :d] if want_acc else None
    row_max = np.full(M, cen.w_max)
    rescue = np.flatnonzero(row_sum < RESCUE_BELOW[dt])
    if rescue.size:
        r_max, r_sum, r_acc = _lse_stats_exact(xs[rescue], mu, sbar2, cen, tile, want_acc)
        row_max[rescue], row_sum[rescue] = r_max, r_sum
        if want_acc:
            acc[rescue] = r_acc
    return row_max, row_sum, acc


def _lse_stats_exact(xs, mu, sbar2, cen, tile, want_acc):
    """Streaming log-sum-exp over centres for shifted queries ``xs = x - mu * shift``.

    With :math:`l_{mi} = \\ell_i - \\lVert x'_m - \\mu C0_i\\rVert^2 / (2\\bar\\sigma^2)`
    returns ``row_max``, ``row_sum`` with
    :math:`\\log\\sum_i e^{l_{mi}} = \\text{row\\_max} + \\log \\text{row\\_sum}` and
    ``acc`` = :math:`\\sum_i e^{l_{mi} - \\text{row\\_max}} C0_i` (or None), all float64.

    The logits of a tile come from one matrix product of augmented rows,
    :math:`[x', 1, \\lVert x'\\rVert^2] \\cdot [\\mu c'/\\bar\\sigma^2,\\
    \\ell - \\mu^2\\lVert c'\\rVert^2/(2\\bar\\sigma^2),\\ -1/(2\\bar\\sigma^2)]`,
    and are then capped at :math:`\\ell_i`: that cap is exactly the clipping of the
    expanded squared distance at 0 (it removes the negative values cancellation can give).
    They are shifted by their row maximum, floored at :data:`EXP_FLOOR` and exponentiated
    in place; one product with ``[C0, 1]`` gives the weighted sum and the sum of weights.
    The tiles run in ``cen.dtype``; the combination across centre tiles in float64.
    """
    M, d = xs.shape
    N = cen.C0.shape[0]
    qc, cc_ = tile
    dt = cen.dtype
    floor = EXP_FLOOR[dt]
    inv2s2 = 0.5 / sbar2
    Q = np.empty((M, d + 2), dtype=dt)
    Q[:, :d] = xs
    Q[:, d] = 1.0
    Q[:, d + 1] = np.einsum("ij,ij->i", xs, xs)
    A = np.empty((N, d + 2), dtype=dt)
    A[:, :d] = cen.C0 * (mu / sbar2)
    A[:, d] = cen.log_w - (mu * mu * inv2s2) * cen.cc
    A[:, d + 1] = -inv2s2
    row_max = np.empty(M)
    row_sum = np.empty(M)
    acc = np.empty((M, d)) if want_acc else None
    work = np.empty(qc * cc_, dtype=dt)  # one reused tile buffer: no allocation per tile
    for q0 in range(0, M, qc):
        q1 = min(M, q0 + qc)
        Qb = Q[q0:q1]
        r_max = r_sum = r_acc = None
        for c0 in range(0, N, cc_):
            c1 = min(N, c0 + cc_)
            G = work[: (q1 - q0) * (c1 - c0)].reshape(q1 - q0, c1 - c0)
            np.matmul(Qb, A[c0:c1].T, out=G)  # logits l_mi
            np.minimum(G, cen.cap[c0:c1], out=G)  # squared distance >= 0
            b_max = G.max(axis=1)
            G -= b_max[:, None]
            np.maximum(G, floor, out=G)  # no slow underflow in exp
            np.exp(G, out=G)
            # the same product with or without the score: the log-density is then bitwise
            # the same whether it is asked for alone or with the score
            S = (G @ cen.C1[c0:c1]).astype(np.float64, copy=False)
            b_acc, b_sum = (S[:, :d] if want_acc else None), S[:, d]
            b_max = b_max.astype(np.float64, copy=False)
            if r_max is None:
                r_max, r_sum, r_acc = b_max, b_sum, b_acc
            else:
                new_max = np.maximum(r_max, b_max)
                a = np.exp(r_max - new_max)
                b = np.exp(b_max - new_max)
                r_sum = r_sum * a + b_sum * b
                if want_acc:
                    r_acc = r_acc * a[:, None] + b_acc * b[:, None]
                r_max = new_max
        row_max[q0:q1] = r_max
        row_sum[q0:q1] = r_sum
        if want_acc:
            acc[q0:q1] = r_acc
    return row_max, row_sum, acc


def _score_logp_prepared(x, mu, sbar2, cen, tile, want_score=True, want_logp=True):
    """Score and/or log-density for validated queries ``x`` and prepared centres."""
    xs = x - mu * cen.shift
    # One BLAS thread: the tiles' products are small and threads only spin (one
    # N = 10^4, d = 20 score: about 20 s with OpenBLAS's 2 threads, 4 s with one).
    with single_blas_thread():
        row_max, row_sum, acc = _lse_stats(xs, mu, sbar2, cen, tile, want_score)
    score = logp = None
    if want_score:
        score = (mu * (acc / row_sum[:, None]) - xs) / sbar2
    if want_logp:
        logp = (
            row_max + np.log(row_sum) - cen.lse_w - 0.5 * cen.dim * math.log(2.0 * math.pi * sbar2)
        )
    return score, logp


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
