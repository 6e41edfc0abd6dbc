"""The localised KDE score's inner loop: the state taper and one chunked pass (private).

Backend-neutral: the same code runs on numpy arrays and torch tensors, through the array
namespace of :mod:`dasim.diffusion._xp`. :mod:`dasim.diffusion.kde_local` checks the inputs
and holds the public API.
"""

from __future__ import annotations

import math

import numpy as np

from ._xp import namespace

#: Bytes for the (queries, members, components) temporaries of one chunk on an
#: accelerator, where large chunks amortise the kernel launches.
_MEMORY_BUDGET = 64 * 2**20
#: Bytes for one (queries, members, components) temporary on the CPU: the score makes
#: about ten passes over it, which run twice as fast while it stays in cache (measured
#: on l96-40-half's taper at N = 1000, one core: 0.70 s a score evaluation with 13 MB
#: temporaries, 0.31 s at 0.3 MB; at N = 100 and 250 chunks of 0.1-0.3 MB are fastest).
#: The rows are independent, so the chunking does not change a result.
_CPU_TEMPORARY_BYTES = 2**18
#: The state taper is applied as a dense matrix product up to this many components, or
#: above this density; as neighbour lists (cost linear in the dimension) otherwise.
_DENSE_UP_TO = 512
_DENSE_ABOVE = 0.25


def _check_taper(taper, name, shape=None):
    if shape is not None and taper.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {taper.shape}.")
    if not np.all(np.isfinite(taper)) or np.any(taper < 0) or np.any(taper > 1):
        raise ValueError(f"{name} must have entries in [0, 1].")


class _StateTaper:
    """The state taper, as a dense matrix or as padded neighbour lists (sparse tapers)."""

    def __init__(self, taper):
        taper = np.asarray(taper, dtype=np.float64)
        d = taper.shape[0]
        _check_taper(taper, "taper_xx", (d, d))
        if not np.allclose(np.diag(taper), 1.0):
            raise ValueError("taper_xx must be 1 on its diagonal (a component is near itself).")
        nnz = np.count_nonzero(taper, axis=1)
        # One BLAS product beats the neighbour-list gathers up to a few hundred components
        # (where the exp over (queries, members, components) dominates either way).
        self.dense = bool(d <= _DENSE_UP_TO or nnz.sum() > _DENSE_ABOVE * d * d)
        #: Every entry 1 (an infinite radius): one distance serves every component.
        self.full = bool(np.all(taper == 1.0))
        self.taper = taper
        self.width = int(nnz.max())
        if not self.dense:
            order = np.argsort(taper == 0, axis=1, kind="stable")[:, : self.width]
            self.idx = order
            self.val = np.take_along_axis(taper, order, axis=1)

    def to(self, xp, dtype=None):
        """A copy as arrays of namespace ``xp`` (its device), the taper in ``dtype``."""
        out = _StateTaper.__new__(_StateTaper)
        out.dense, out.width, out.full = self.dense, self.width, self.full
        out.taper = xp.astype(xp.asarray(self.taper), dtype or xp.float_dtype)
        if not self.dense:
            out.idx = xp.as_index(self.idx)
            out.val = xp.astype(xp.asarray(self.val), dtype or xp.float_dtype)
        return out

    def apply(self, sq):
        """``D[..., k] = sum_l taper[k, l] sq[..., l]`` for ``sq`` of shape (m, N, d).

        A full taper gives the one column ``sum_l sq[..., l]``, shape (m, N, 1), which
        broadcasts over the components.
        """
        if self.full:
            return namespace(sq).sum(sq, 2, keepdims=True)
        if self.dense:
            m, n, d = sq.shape
            return (sq.reshape(m * n, d) @ self.taper.T).reshape(m, n, d)
        out = sq[:, :, self.idx[:, 0]] * self.val[:, 0]
        for slot in range(1, self.width):
            out += sq[:, :, self.idx[:, slot]] * self.val[:, slot]
        return out


def _shared_columns(L, taper):
    """``L`` as one column when every component has the same weights and distance.

    With a full taper (``localization_radius=inf``) and equal columns of the local
    log-weights, the localised score is the global one: every component's mixture has
    the same weights, so one set of kernel weights serves all of them, and the score's
    cost drops from ``O(M N d^2)`` to ``O(M N d)`` (the results are the same).
    """
    if taper.full and np.array_equal(L, np.broadcast_to(L[:, :1], L.shape)):
        return L[:, :1]
    return L


def _rows_per_chunk(n_centres, d, chunk_size, cpu=True):
    """Query rows per chunk: ``chunk_size``, else from the budget of the device kind."""
    if chunk_size is not None:
        return int(chunk_size)
    if cpu:
        return max(1, _CPU_TEMPORARY_BYTES // (8 * n_centres * d))
    return max(1, _MEMORY_BUDGET // (8 * n_centres * d * 5))


def _score_logp(x, mu, sbar2, X, L, taper, chunk, want_logp=False):
    """Localised score (and local log-densities) at rows ``x``; numpy or torch, no checks."""
    xp = namespace(x)
    Xmu = X * mu
    scores, logps = [], []
    for start in range(0, x.shape[0], chunk):
        xc = x[start : start + chunk]
        diff = Xmu[None, :, :] - xc[:, None, :]  # (m, N, d)
        dist = taper.apply(diff * diff)
        dist *= 0.5 / sbar2
        logits = L[None, :, :] - dist
        top = xp.amax(logits, 1, keepdims=True)
        logits -= top
        w = xp.exp_(logits)
        norm = xp.sum(w, 1, keepdims=True)
        diff *= w
        scores.append(xp.sum(diff, 1) / (norm[:, 0, :] * sbar2))
        if want_logp:
            rho_sum = xp.sum(taper.taper if taper.dense else taper.val, 1)
            logps.append(
                (top + xp.log(norm))[:, 0, :] - 0.5 * math.log(2 * math.pi * sbar2) * rho_sum
            )
    score = xp.concat(scores, 0)
    return (score, xp.concat(logps, 0)) if want_logp else (score, None)
