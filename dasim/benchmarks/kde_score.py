"""B4 "KDE score": seconds and peak memory of one closed-form score evaluation.

One evaluation of :func:`dasim.diffusion.kde.kde_score` with ``M = N`` queries (the whole
ensemble, as in one right-hand side of the probability-flow ODE), ``N`` members in
dimension ``d``: :math:`O(N^2 d)` work, memory bounded by the tiles
(:data:`dasim.diffusion.kde.DEFAULT_MEMORY_BUDGET`).

Run from the command line::

    python -m dasim.benchmarks.kde_score --members 1000,10000,100000 --backend numpy,torch
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import threading
import time
import tracemalloc

import numpy as np
import xarray as xr

from dasim.diffusion.kde import DEFAULT_MEMORY_BUDGET, _numpy_tile, kde_score, resolve_device
from dasim.diffusion.schedules import VESchedule

__all__ = ["bench_kde_score", "main"]


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


def _time_numpy(x, log_w, schedule, memory_budget, repeat):
    seconds, peak = [], []
    for _ in range(repeat):
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            t0 = time.perf_counter()
            kde_score(x, 0.5, x, log_w, schedule, memory_budget=memory_budget)
            seconds.append(time.perf_counter() - t0)
            peak.append(tracemalloc.get_traced_memory()[1] - base)
        finally:
            tracemalloc.stop()
    return min(seconds), float(max(peak)), "tracemalloc"


def _time_torch(x, log_w, schedule, memory_budget, repeat, device):
    import torch

    dev = torch.device(device)
    xt = torch.as_tensor(x, device=dev)
    wt = torch.as_tensor(log_w, device=dev)
    kde_score(xt[:8], 0.5, xt[:8], wt[:8], schedule)  # warm-up (kernels, cuBLAS)
    seconds, peak = [], []
    cuda = dev.type == "cuda"
    for _ in range(repeat):
        if cuda:
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            base = torch.cuda.memory_allocated(dev)
            t0 = time.perf_counter()
            kde_score(xt, 0.5, xt, wt, schedule, memory_budget=memory_budget)
            torch.cuda.synchronize(dev)
            seconds.append(time.perf_counter() - t0)
            peak.append(float(torch.cuda.max_memory_allocated(dev) - base))
        else:
            with _RSSPeak() as rss:
                t0 = time.perf_counter()
                kde_score(xt, 0.5, xt, wt, schedule, memory_budget=memory_budget)
                seconds.append(time.perf_counter() - t0)
            peak.append(rss.delta)
    method = "torch.cuda.max_memory_allocated" if cuda else "RSS peak minus start (sampled)"
    return min(seconds), float(max(peak)), method


def bench_kde_score(
    n_members=(10**3, 10**4, 10**5),
    dim=20,
    backend=("numpy", "torch"),
    repeat=1,
    *,
    device="auto",
    memory_budget=None,
    seed=0,
):
    """Time one KDE score evaluation (``M = N`` queries) and measure its peak memory.

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
        Evaluations per setting; the fastest is reported, and the largest peak.
    device : str, default="auto"
        The torch device (CUDA when available).
    memory_budget : int, optional
        Tile budget in bytes (default 256 MiB).
    seed : int, default=0
        Seed of the random ensemble and weights.

    Returns
    -------
    xarray.Dataset
        Variables ``seconds`` and ``peak_memory_bytes`` over (``backend``, ``n_members``),
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
    methods = []
    for j, n in enumerate(n_members):
        x = rng.standard_normal((n, int(dim)))
        log_w = -0.5 * rng.standard_normal(n) ** 2
        for i, b in enumerate(backends):
            if b == "numpy":
                s, p, m = _time_numpy(x, log_w, schedule, memory_budget, int(repeat))
            else:
                s, p, m = _time_torch(x, log_w, schedule, memory_budget, int(repeat), device)
            seconds[i, j], peak[i, j] = s, p
            if j == 0:
                methods.append(m)
    tiles = [_numpy_tile(n, n, None, memory_budget) for n in n_members]
    attrs = {
        "benchmark": "B4 KDE score: one evaluation, M = N queries",
        "dim": int(dim),
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
    return xr.Dataset(
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


def main(argv=None):
    """Command-line entry: print the table and optionally write netCDF.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    xarray.Dataset
        The result of :func:`bench_kde_score`.

    Examples
    --------
    >>> ds = main(["--members", "40", "--dim", "2", "--backend", "numpy"])  # doctest: +SKIP
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", default="1000,10000,100000")
    parser.add_argument("--dim", type=int, default=20)
    parser.add_argument("--backend", default="numpy,torch")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None, help="netCDF file to write")
    args = parser.parse_args(argv)
    ds = bench_kde_score(
        n_members=[int(v) for v in args.members.split(",")],
        dim=args.dim,
        backend=args.backend.split(","),
        repeat=args.repeat,
        device=args.device,
    )
    for b in ds.backend.values:
        for n in ds.n_members.values:
            s = float(ds.seconds.sel(backend=b, n_members=n))
            p = float(ds.peak_memory_bytes.sel(backend=b, n_members=n))
            print(f"{b:6s} N={n:>7d} d={ds.attrs['dim']}: {s:9.3f} s, peak {p / 2**20:9.1f} MiB")
    if args.out:
        ds.to_netcdf(args.out)
    return ds


if __name__ == "__main__":  # pragma: no cover
    main()
