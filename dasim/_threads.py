"""One BLAS thread for dasim's numerical work: the reproducibility contract's pin.

The same seed must give the same numbers whatever ``n_jobs``, the joblib backend and the
machine's BLAS thread count. A BLAS product summed by two threads adds its terms in
another order than one thread does, so a run in the main process (OpenBLAS's default
threads) and the same run in a joblib or dask worker (one thread) differ in the last bits,
and a filter amplifies those bits cycle after cycle. Every public numerical entry point of
the numpy filters therefore runs under :func:`single_blas_thread`. At dasim's sizes
(ensembles of tens to thousands of members, states of tens of components) threaded BLAS
buys nothing: the products are small and the threads spin (measured in
``docs/guide/reproducibility.rst``); parallelism comes from independent runs (``n_jobs``).
"""

from __future__ import annotations

import contextlib
import functools
import threading

from threadpoolctl import threadpool_limits

__all__ = ["single_blas_thread", "pinned_blas"]

_lock = threading.Lock()
_depth = 0
_limiter = None


@contextlib.contextmanager
def single_blas_thread():
    """Limit every loaded BLAS library to one thread for the duration of the block.

    Re-entrant and shared by the threads of a process: the first block entered sets the
    limit, the last one left restores the previous thread counts, so nested calls (a
    filter's ``assimilate`` calling the KDE score) cost nothing and concurrent runs under
    joblib's threading backend never see the limit lifted mid-run.

    Yields
    ------
    None
    """
    global _depth, _limiter
    with _lock:
        if _depth == 0:
            _limiter = threadpool_limits(limits=1, user_api="blas")
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _limiter.restore_original_limits()
                _limiter = None


def pinned_blas(method):
    """Decorator: run ``method`` under :func:`single_blas_thread`.

    Parameters
    ----------
    method : callable
        The function or method to wrap.

    Returns
    -------
    callable
        The wrapped function, with the same signature and docstring.
    """

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with single_blas_thread():
            return method(*args, **kwargs)

    return wrapper
