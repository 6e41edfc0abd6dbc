"""Torch at run time for the learned assimilators: the thread count (the lazy import
and the device are :mod:`dasim._torch`'s, seeds :mod:`dasim._random`'s).

Everything here takes the ``torch`` module as an argument or imports it lazily, so that
importing :mod:`dasim.assimilators` works without torch.
"""

from __future__ import annotations

import contextlib
import threading

from ._inputs import _check_int


def _default_n_threads():
    """Torch threads used when ``n_threads=None``: half the physical cores, 1 to 4.

    The networks here are small (a few hundred thousand weights, batches of a few hundred
    windows): a second thread gains little, while threads that compete with other work for
    the cores lose a lot (on a busy 2-core machine, training took 18.6 s with torch's
    default of one thread per core against 1.1 s with one thread).
    """
    import joblib

    return max(1, min(4, joblib.cpu_count(only_physical_cores=True) // 2))


def _check_n_threads(n_threads):
    if n_threads is None:
        return None
    return _check_int(n_threads, "n_threads", 1)


_THREADS_LOCK = threading.Lock()
_THREADS_STATE = {"depth": 0, "previous": None}


@contextlib.contextmanager
def _torch_threads(torch, n_threads):
    """Run the block with ``torch.set_num_threads(n_threads)``, then restore the count.

    ``torch.set_num_threads`` is process-wide, so the blocks of a process share one
    setting: the first block entered sets it and the last one left restores the count from
    before (blocks running concurrently under joblib's threading backend, or nested, keep
    the first block's count rather than undo each other's).
    """
    with _THREADS_LOCK:
        if _THREADS_STATE["depth"] == 0:
            _THREADS_STATE["previous"] = torch.get_num_threads()
            if n_threads != _THREADS_STATE["previous"]:
                torch.set_num_threads(n_threads)
        _THREADS_STATE["depth"] += 1
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _THREADS_STATE["depth"] -= 1
            if _THREADS_STATE["depth"] == 0:
                if torch.get_num_threads() != _THREADS_STATE["previous"]:
                    torch.set_num_threads(_THREADS_STATE["previous"])
                _THREADS_STATE["previous"] = None
