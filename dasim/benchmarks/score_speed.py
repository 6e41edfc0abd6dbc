"""B4 "KDE score": seconds and peak memory of one closed-form score evaluation.

One evaluation of :func:`dasim.diffusion.kde.kde_score` with ``M = N`` queries (the whole
ensemble, as in one right-hand side of the probability-flow ODE), ``N`` members in
dimension ``d``: :math:`O(N^2 d)` work, memory bounded by the tiles
(:data:`dasim.diffusion.kde.DEFAULT_MEMORY_BUDGET`).

The floor beside it is one pass over the same N x N kernel matrix, in the same tiles and
precision: one matrix product of ``(q, d + 2)`` by ``(d + 2, c)`` rows into a tile buffer
and one in-place ``exp`` of the tile (what any evaluation must at least do);
``score_over_floor`` is the ratio of the two.

Run from the command line::

    dasim score-speed --members 1000,10000,100000 --backend numpy,torch
    dasim score-speed --members 1000 --dim 3 --dtype float32 --threads 1
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import threading
import time
import tracemalloc

import numpy as np
import xarray as xr

from dasim._threads import single_blas_thread
from dasim.diffusion.kde import (
    DEFAULT_MEMORY_BUDGET,
    _numpy_tile,
    check_score_dtype,
    kde_score,
    resolve_device,
)
from dasim.diffusion.schedules import VESchedule

from .timing import best_time

__all__ = ["bench_kde_score"]


def _rss_bytes():
    """Resident set size of this process (Linux ``/proc``), or None."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class _RSSPeak:
    """Sample the resident set size in a thread; ``peak - start`` after the block."""

    def __init__(self, interval=0.002):
        self.interval = interval
        self.peak = self.start = None
        self._stop = threading.Event()

    def __enter__(self):
        self.start = self.peak = _rss_bytes()
        if self.start is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            v = _rss_bytes()
            if v is not None and v > self.peak:
                self.peak = v
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        if self.start is not None:
            self._thread.join()
            v = _rss_bytes()
            if v is not None and v > self.peak:
                self.peak = v

    @property
    def delta(self):
        return np.nan if self.start is None else float(self.peak - self.start)


def _time_numpy(x, log_w, schedule, memory_budget, repeat, dtype="float64"):
    """Fastest of ``repeat`` timed evaluations, then one more under ``tracemalloc``.

    The clock and the memory tracing are separate runs: tracing slows every allocation.
    The timed loop runs under one :func:`~dasim._threads.single_blas_thread` block (the
    score's own pin is then free, as inside a filter's ``assimilate``).
    """

    def once():
        return kde_score(x, 0.5, x, log_w, schedule, memory_budget=memory_budget, dtype=dtype)

    with single_blas_thread():  # pinned once around the loop, as the filters pin it
        best, _ = best_time(once, repeat)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        once()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return best, float(peak), "tracemalloc"


def _time_torch(x, log_w, schedule, memory_budget, repeat, device, dtype="float64"):
    """Fastest of ``repeat`` timed evaluations, then one more for the peak memory."""
    import torch

    dev = torch.device(device)
    xt = torch.as_tensor(x, device=dev, dtype=getattr(torch, dtype))
    wt = torch.as_tensor(log_w, device=dev, dtype=getattr(torch, dtype))
    kde_score(xt[:8], 0.5, xt[:8], wt[:8], schedule)  # warm-up (kernels, cuBLAS)
    cuda = dev.type == "cuda"

    def once():
        kde_score(xt, 0.5, xt, wt, schedule, memory_budget=memory_budget)

    seconds = []
    for _ in range(repeat):
        if cuda:
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        once()
        if cuda:
            torch.cuda.synchronize(dev)
        seconds.append(time.perf_counter() - t0)
    if cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        once()
        torch.cuda.synchronize(dev)
        peak = float(torch.cuda.max_memory_allocated(dev) - base)
        method = "torch.cuda.max_memory_allocated"
    else:
        with _RSSPeak() as rss:
            once()
        peak, method = rss.delta, "RSS peak minus start (sampled)"
    return min(seconds), float(peak), method


def _tiled_pass(Q, A, tile, work, product_exp):
    """One pass over the ``N x N`` matrix ``exp(Q A^T)`` in tiles of ``tile`` rows x columns.

    ``product_exp(Qb, Ab, G)`` writes ``exp(Qb Ab^T)`` into ``G``, a view of the flat
    buffer ``work`` (numpy or torch: the tiles are written in place).
    """
    q, c = tile
    n = Q.shape[0]
    for q0 in range(0, n, q):
        for c0 in range(0, n, c):
            Qb, Ab = Q[q0 : q0 + q], A[c0 : c0 + c]
            product_exp(Qb, Ab, work[: Qb.shape[0] * Ab.shape[0]].reshape(len(Qb), len(Ab)))


def _floor_numpy(n, dim, tile, repeat, dtype, rng):
    """Seconds of one tiled pass over the N x N matrix: a matrix product, then ``exp``."""
    q, c = tile
    Q = (rng.standard_normal((n, dim + 2)) / math.sqrt(dim + 2)).astype(dtype)
    A = rng.standard_normal((n, dim + 2)).astype(dtype)
    work = np.empty(q * c, dtype=dtype)

    def product_exp(Qb, Ab, G):
        np.matmul(Qb, Ab.T, out=G)
        np.exp(G, out=G)

    best = np.inf
    with single_blas_thread():
        for _ in range(repeat):
            t0 = time.perf_counter()
            _tiled_pass(Q, A, (q, c), work, product_exp)
            best = min(best, time.perf_counter() - t0)
    return best


def _floor_torch(n, dim, memory_budget, repeat, device, dtype, rng):
    """Torch twin of :func:`_floor_numpy` (tiles of the torch score, on ``device``)."""
    import torch

    from dasim.diffusion._kde_torch import torch_tile

    dev = torch.device(device)
    tdt = getattr(torch, dtype)
    q, c = torch_tile(n, n, None, memory_budget, tdt, dev)
    Q = torch.as_tensor(rng.standard_normal((n, dim + 2)) / math.sqrt(dim + 2), device=dev)
    A = torch.as_tensor(rng.standard_normal((n, dim + 2)), device=dev)
    Q, A = Q.to(tdt), A.to(tdt)
    work = torch.empty(q * c, dtype=tdt, device=dev)
    cuda = dev.type == "cuda"

    def product_exp(Qb, Ab, G):
        torch.mm(Qb, Ab.T, out=G)
        G.exp_()

    best = np.inf
    for _ in range(repeat + 1):  # the first pass warms up
        if cuda:
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        _tiled_pass(Q, A, (q, c), work, product_exp)
        if cuda:
            torch.cuda.synchronize(dev)
        best = min(best, time.perf_counter() - t0)
    return best


def bench_kde_score(
    n_members=(10**3, 10**4, 10**5),
    dim=20,
    backend=("numpy", "torch"),
    repeat=1,
    *,
    device="auto",
    memory_budget=None,
    seed=0,
    dtype="float64",
    torch_threads=None,
    floor=True,
):
    """Time one KDE score evaluation (``M = N`` queries) and measure its peak memory.

    The clock takes the fastest of ``repeat`` evaluations; the peak memory comes from one
    more evaluation (tracing or sampling memory would slow the timed ones).
    Peak memory is the extra memory of the evaluation above what was allocated before it
    (inputs excluded, output included): traced allocations (``tracemalloc``) for numpy;
    ``torch.cuda.max_memory_allocated`` on CUDA; on a torch CPU device, the peak resident
    set size sampled every 2 ms minus its value at the start (an estimate: the C allocator
    may reuse memory already held by the process).

    Parameters
    ----------
    n_members : sequence of int, default=(1000, 10000, 100000)
        Ensemble sizes ``N``.
    dim : int, default=20
        State dimension ``d``.
    backend : sequence of {"numpy", "torch"}, default=("numpy", "torch")
        Backends to time (torch is skipped when it is not installed).
    repeat : int, default=1
        Timed evaluations per setting; the fastest is reported.
    device : str, default="auto"
        The torch device (CUDA when available).
    memory_budget : int, optional
        Tile budget in bytes (default 256 MiB).
    seed : int, default=0
        Seed of the random ensemble and weights.
    dtype : {"float64", "float32"}, default="float64"
        Precision of the evaluation (the ``dtype`` of
        :func:`dasim.diffusion.kde.kde_score`; torch gets tensors of that dtype).
    torch_threads : int, optional
        Threads of torch's CPU operations during the run (restored after); None leaves
        torch's setting. numpy always runs with one BLAS thread.
    floor : bool, default=True
        Also time the floor (module docstring): one tiled pass of a matrix product and an
        ``exp`` over the N x N matrix, same precision, tiles and threads.

    Returns
    -------
    xarray.Dataset
        Variables ``seconds`` and ``peak_memory_bytes`` over (``backend``, ``n_members``),
        with ``floor``: ``floor_seconds`` and ``score_over_floor`` too;
        ``memory_method`` over ``backend``, and the setting in ``attrs``.

    Examples
    --------
    >>> ds = bench_kde_score(n_members=(50,), dim=2, backend=("numpy",))
    >>> float(ds.seconds.sel(backend="numpy", n_members=50)) > 0
    True
    """
    n_members = [int(n) for n in n_members]
    if any(n < 1 for n in n_members):
        raise ValueError(f"n_members must be positive integers, got {n_members!r}.")
    if int(dim) < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}.")
    if int(repeat) < 1:
        raise ValueError(f"repeat must be a positive integer, got {repeat!r}.")
    dtype = check_score_dtype(dtype, "dtype", allow_none=False)
    if torch_threads is not None and (isinstance(torch_threads, bool) or int(torch_threads) < 1):
        raise ValueError(f"torch_threads must be None or a positive int, got {torch_threads!r}.")
    backends = [backend] if isinstance(backend, str) else list(backend)
    for b in backends:
        if b not in ("numpy", "torch"):
            raise ValueError(f"backend entries must be 'numpy' or 'torch', got {b!r}.")
    torch_version = None
    if "torch" in backends:
        try:
            import torch

            torch_version = torch.__version__
            device = resolve_device(device)
        except ImportError:
            backends.remove("torch")
    schedule = VESchedule(0.5, 50.0)
    rng = np.random.default_rng(seed)
    seconds = np.full((len(backends), len(n_members)), np.nan)
    peak = np.full_like(seconds, np.nan)
    floor_s = np.full_like(seconds, np.nan)
    methods = []
    tiles = [_numpy_tile(n, n, None, memory_budget) for n in n_members]
    old_threads = None
    if torch_version and torch_threads is not None:
        old_threads = torch.get_num_threads()
        torch.set_num_threads(int(torch_threads))
    try:
        for j, n in enumerate(n_members):
            x = rng.standard_normal((n, int(dim)))
            log_w = -0.5 * rng.standard_normal(n) ** 2
            for i, b in enumerate(backends):
                if b == "numpy":
                    s, p, m = _time_numpy(x, log_w, schedule, memory_budget, int(repeat), dtype)
                    if floor:
                        floor_s[i, j] = _floor_numpy(
                            n, int(dim), tiles[j], int(repeat), dtype, rng
                        )
                else:
                    s, p, m = _time_torch(
                        x, log_w, schedule, memory_budget, int(repeat), device, dtype
                    )
                    if floor:
                        floor_s[i, j] = _floor_torch(
                            n, int(dim), memory_budget, int(repeat), device, dtype, rng
                        )
                seconds[i, j], peak[i, j] = s, p
                if j == 0:
                    methods.append(m)
    finally:
        if old_threads is not None:
            torch.set_num_threads(old_threads)
    attrs = {
        "benchmark": "B4 KDE score: one evaluation, M = N queries",
        "dim": int(dim),
        "dtype": dtype,
        "torch_threads": "default" if torch_threads is None else int(torch_threads),
        "repeat": int(repeat),
        "memory_budget": int(DEFAULT_MEMORY_BUDGET if memory_budget is None else memory_budget),
        "torch_device": str(device) if torch_version else "none",
        "numpy_version": np.__version__,
        "torch_version": torch_version or "none",
        "machine": f"{platform.machine()} {platform.processor()} ({os.cpu_count()} CPUs)",
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seed": int(seed),
    }
    ds = xr.Dataset(
        {
            "seconds": (("backend", "n_members"), seconds),
            "peak_memory_bytes": (("backend", "n_members"), peak),
            "memory_method": (("backend",), np.array(methods, dtype=object)),
            "numpy_tile_queries": (("n_members",), np.array([t[0] for t in tiles])),
            "numpy_tile_centres": (("n_members",), np.array([t[1] for t in tiles])),
        },
        coords={"backend": backends, "n_members": n_members},
        attrs=attrs,
    )
    if floor:
        ds["floor_seconds"] = (("backend", "n_members"), floor_s)
        ds["score_over_floor"] = ds["seconds"] / ds["floor_seconds"]
    return ds
