"""Torch at run time for the learned assimilators: the thread count and the gaussian-skip
kernel wrapper (the lazy import and the device are :mod:`dasim._torch`'s, seeds
:mod:`dasim._random`'s).

Everything here takes the ``torch`` module as an argument or imports it lazily, so that
importing :mod:`dasim.assimilators` works without torch.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

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


_SKIP_CLASS = []


def _gaussian_skip_class(torch):
    """The kernel wrapper ``eps(w, t) = sigma_t w / (1 + eta^2) + g * inner(w, t)``.

    The first term is the exact epsilon of a standard normal prior (the normalised data's
    first two moments), so the network learns only the departure from it; the per-feature
    gain ``g`` starts at zero, so an untrained network samples a standard normal instead of
    amplifying its errors by up to ``1 / mu(1) = 1000`` through the sampler. It is a
    reparametrisation of the same epsilon-model: loss and samplers are unchanged.
    """
    if _SKIP_CLASS:
        return _SKIP_CLASS[0]

    class GaussianSkipKernel(torch.nn.Module):
        def __init__(self, inner, features, eta):
            super().__init__()
            self.inner = inner
            self.eta = float(eta)
            self.omega = float(np.arccos(np.sqrt(self.eta)))
            self.gain = torch.nn.Parameter(torch.zeros(int(features)))

        def forward(self, w, t):
            t = torch.as_tensor(t, dtype=w.dtype, device=w.device)
            mu = torch.cos(self.omega * t) ** 2
            sigma = torch.sqrt(1 - mu**2 + self.eta**2)
            if sigma.ndim == 1:
                sigma = sigma[:, None]
            return sigma * w / (1 + self.eta**2) + self.gain * self.inner(w, t)

    _SKIP_CLASS.append(GaussianSkipKernel)
    return GaussianSkipKernel
