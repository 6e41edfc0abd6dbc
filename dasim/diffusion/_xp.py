"""A small array namespace: the few operations the KDE score and its samplers need.

One adapter for numpy arrays and one for torch tensors, so that the closed-form score
(:mod:`dasim.diffusion._kde_core`), the ODE/SDE solvers and the localised score are each
written once. Not a general array API (array-api-compat is not a dependency): only the
operations used here, each mapped to the call the numpy and torch code made before, so
that numpy float64 results are unchanged.

An adapter also fixes where new arrays live and in what precision: :data:`NUMPY` is numpy
float64; :func:`torch_namespace` gives one for a torch device and float dtype. torch is
imported only by :func:`torch_namespace` (or when a tensor is seen, in which case torch is
already loaded).
"""

from __future__ import annotations

import contextlib
import math
import sys

import numpy as np

from .._threads import single_blas_thread


def is_tensor(obj):
    """Whether ``obj`` is a torch tensor (without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


class NumpyNamespace:
    """numpy, float64 by default."""

    name = "numpy"
    #: Whether the arrays live in host memory (chunk sizes are chosen for the cache).
    on_cpu = True

    def __init__(self):
        self.float_dtype = np.dtype(np.float64)

    # dtypes and conversion
    def dtype(self, name):
        """The dtype of a precision name (``"float64"``, ``"float32"``)."""
        return np.dtype(name)

    def dtype_name(self, a):
        """The precision name of an array."""
        return a.dtype.name

    def asarray(self, value):
        """``value`` as a float64 array (raises TypeError/ValueError if not numeric)."""
        return np.asarray(value, dtype=np.float64)

    def as_index(self, a):
        """An integer index array ``a`` (numpy) as an index of this namespace."""
        return a

    def astype(self, a, dtype):
        """``a`` in ``dtype`` (a name or a dtype); no copy when it already is."""
        return a.astype(dtype, copy=False)

    def to_numpy(self, a):
        """A numpy float64 copy of ``a`` on the host."""
        return np.asarray(a, dtype=np.float64)

    # creation (``like``: the array whose device the result shares)
    def empty(self, shape, dtype=None, like=None):
        """An uninitialised array."""
        return np.empty(shape, dtype=self.float_dtype if dtype is None else dtype)

    def zeros(self, shape, dtype=None, like=None):
        """An array of zeros."""
        return np.zeros(shape, dtype=self.float_dtype if dtype is None else dtype)

    def full(self, shape, value, dtype=None, like=None):
        """An array filled with ``value``."""
        return np.full(shape, value, dtype=self.float_dtype if dtype is None else dtype)

    # arithmetic
    def rowdot(self, a, b):
        """Row-wise dot products of two (n, d) arrays."""
        return np.einsum("ij,ij->i", a, b)

    def matmul(self, a, b, out=None):
        """``a @ b``, into ``out`` when given."""
        return np.matmul(a, b, out=out)

    def addmm(self, base, a, b, alpha):
        """``base + alpha * (a @ b)``."""
        return base + alpha * (a @ b)

    def exp_(self, a):
        """``exp`` in place."""
        return np.exp(a, out=a)

    def clip_min_(self, a, value):
        """``max(a, value)`` in place."""
        return np.maximum(a, np.asarray(value, dtype=a.dtype), out=a)

    def clip_min(self, a, value):
        """``max(a, value)``."""
        return np.maximum(a, value)

    def minimum_(self, a, b):
        """``min(a, b)`` in place."""
        return np.minimum(a, b, out=a)

    def maximum(self, a, b):
        """Element-wise maximum."""
        return np.maximum(a, b)

    def amax(self, a, axis, keepdims=False):
        """Maximum along ``axis``."""
        return a.max(axis=axis, keepdims=keepdims)

    def sum(self, a, axis, keepdims=False):
        """Sum along ``axis``."""
        return a.sum(axis=axis, keepdims=keepdims)

    exp = staticmethod(np.exp)
    log = staticmethod(np.log)
    abs = staticmethod(np.abs)

    def logsumexp(self, v):
        """``log(sum(exp(v)))`` of a 1-D array with a finite maximum, as a float."""
        top = float(v.max())
        return top + math.log(float(np.exp(v - top).sum()))

    def norm(self, a):
        """Euclidean norm of all entries, as a float."""
        return float(np.linalg.norm(a))

    def concat(self, parts, axis=0):
        """Concatenate along ``axis``."""
        return np.concatenate(parts, axis=axis)

    def nonzero(self, mask):
        """Indices of the true entries of a 1-D mask."""
        return np.flatnonzero(mask)

    def all_finite(self, a):
        """Whether every entry is finite."""
        return bool(np.all(np.isfinite(a)))

    # autograd and threads
    def requires_grad(self, *arrays):
        """Whether autograd records operations on any of ``arrays`` (never for numpy)."""
        return False

    def detach(self, a):
        """``a`` cut from autograd (itself for numpy)."""
        return a

    def no_grad(self):
        """Context without autograd recording."""
        return contextlib.nullcontext()

    def compute(self):
        """Context of one score evaluation: one BLAS thread (the tiles' products are small
        and threads only spin: one N = 10^4, d = 20 score takes about 20 s with
        OpenBLAS's 2 threads, 4 s with one)."""
        return single_blas_thread()

    # randomness
    def normal_source(self, rng):
        """``draw(shape)``: standard normal draws from the numpy Generator ``rng``."""
        return rng.standard_normal


class TorchNamespace(NumpyNamespace):
    """torch on one device, with a default float dtype (float64 or float32)."""

    name = "torch"

    def __init__(self, device, float_dtype=None):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.on_cpu = self.device.type == "cpu"
        self.float_dtype = torch.float64 if float_dtype is None else float_dtype

    def dtype(self, name):
        """The torch dtype of a precision name (a torch dtype is returned as it is)."""
        return name if isinstance(name, self.torch.dtype) else getattr(self.torch, name)

    def dtype_name(self, a):
        """The precision name of a tensor."""
        return str(a.dtype).removeprefix("torch.")

    def asarray(self, value):
        """``value`` as a tensor of this device and float dtype."""
        torch = self.torch
        if not isinstance(value, torch.Tensor):
            value = torch.as_tensor(np.asarray(value, dtype=np.float64))
        elif not value.is_floating_point():
            value = value.to(torch.float64)
        return value.to(device=self.device, dtype=self.float_dtype)

    def as_index(self, a):
        """An integer index array ``a`` (numpy) as a tensor on this device."""
        return self.torch.as_tensor(a, device=self.device)

    def astype(self, a, dtype):
        """``a`` in ``dtype`` (a name or a torch dtype)."""
        return a.to(self.dtype(dtype))

    def to_numpy(self, a):
        """A numpy float64 copy of ``a`` on the host."""
        return a.detach().cpu().numpy().astype(np.float64)

    def _kw(self, dtype, like):
        dev = self.device if like is None else like.device
        return {"dtype": self.float_dtype if dtype is None else self.dtype(dtype), "device": dev}

    def empty(self, shape, dtype=None, like=None):
        """An uninitialised tensor."""
        return self.torch.empty(shape, **self._kw(dtype, like))

    def zeros(self, shape, dtype=None, like=None):
        """A tensor of zeros."""
        return self.torch.zeros(shape, **self._kw(dtype, like))

    def full(self, shape, value, dtype=None, like=None):
        """A tensor filled with ``value``."""
        return self.torch.full(shape, value, **self._kw(dtype, like))

    def rowdot(self, a, b):
        """Row-wise dot products of two (n, d) tensors."""
        return (a * b).sum(dim=1)

    def matmul(self, a, b, out=None):
        """``a @ b``, into ``out`` when given."""
        return self.torch.mm(a, b, out=out) if out is not None else a @ b

    def addmm(self, base, a, b, alpha):
        """``base + alpha * (a @ b)`` (one fused call)."""
        return self.torch.addmm(base, a, b, beta=1.0, alpha=alpha)

    def exp_(self, a):
        """``exp`` in place."""
        return a.exp_()

    def clip_min_(self, a, value):
        """``max(a, value)`` in place."""
        return a.clamp_min_(value)

    def clip_min(self, a, value):
        """``max(a, value)``."""
        return a.clamp_min(value)

    def minimum_(self, a, b):
        """``min(a, b)`` in place."""
        return self.torch.minimum(a, b, out=a)

    def maximum(self, a, b):
        """Element-wise maximum."""
        return self.torch.maximum(a, b)

    def amax(self, a, axis, keepdims=False):
        """Maximum along ``axis``."""
        return a.amax(dim=axis, keepdim=keepdims)

    def sum(self, a, axis, keepdims=False):
        """Sum along ``axis``."""
        return a.sum(dim=axis, keepdim=keepdims)

    def exp(self, a):
        """Element-wise ``exp``."""
        return self.torch.exp(a)

    def log(self, a):
        """Element-wise ``log``."""
        return self.torch.log(a)

    def abs(self, a):
        """Element-wise absolute value."""
        return a.abs()

    def logsumexp(self, v):
        """``log(sum(exp(v)))`` of a 1-D tensor (a 0-d tensor, differentiable)."""
        return self.torch.logsumexp(v, dim=0)

    def norm(self, a):
        """Euclidean norm of all entries, as a float (one scalar read back)."""
        return float(self.torch.linalg.vector_norm(a))

    def concat(self, parts, axis=0):
        """Concatenate along ``axis``."""
        return self.torch.cat(parts, dim=axis)

    def nonzero(self, mask):
        """Indices of the true entries of a 1-D mask."""
        return self.torch.nonzero(mask).squeeze(1)

    def all_finite(self, a):
        """Whether every entry is finite (one boolean read back)."""
        return bool(self.torch.isfinite(a).all())

    def requires_grad(self, *arrays):
        """Whether autograd records operations on any of ``arrays``."""
        return self.torch.is_grad_enabled() and any(a.requires_grad for a in arrays)

    def detach(self, a):
        """``a`` cut from autograd."""
        return a.detach()

    def no_grad(self):
        """Context without autograd recording."""
        return self.torch.no_grad()

    def compute(self):
        """Context of one score evaluation (nothing to set for torch)."""
        return contextlib.nullcontext()

    def normal_source(self, rng):
        """``draw(shape)``: standard normal tensors from a torch Generator on this device,
        seeded once from the numpy Generator ``rng``."""
        gen = self.torch.Generator(device=self.device)
        gen.manual_seed(int(rng.integers(2**63 - 1)))

        def draw(shape):
            return self.torch.randn(
                shape, generator=gen, device=self.device, dtype=self.float_dtype
            )

        return draw


#: The numpy float64 namespace.
NUMPY = NumpyNamespace()


def torch_namespace(device=None, like=None):
    """The torch namespace of ``like``'s device and dtype, else of ``device`` in float64.

    ``device`` follows :func:`dasim.diffusion.kde.resolve_device` (``"auto"``/None: CUDA
    when available). A ``like`` tensor of a non-float dtype computes in float64.
    """
    if like is not None:
        import torch

        dtype = like.dtype if like.dtype in (torch.float32, torch.float64) else torch.float64
        return TorchNamespace(like.device, dtype)
    from .kde import resolve_device

    return TorchNamespace(resolve_device(device))


def namespace(*arrays, backend=None, device=None):
    """The namespace of ``arrays`` (torch if any is a tensor), or of ``backend``.

    Parameters
    ----------
    *arrays : numpy.ndarray, torch.Tensor or None
        The inputs; the first tensor among them fixes the torch device and dtype.
    backend : {None, "numpy", "torch"}, optional
        Forces a backend; ``"numpy"`` with tensors is a ValueError.
    device : str, optional
        The torch device when no tensor is passed (``"auto"``: CUDA when available).

    Returns
    -------
    NumpyNamespace or TorchNamespace
    """
    if backend not in (None, "numpy", "torch"):
        raise ValueError(f"backend must be None, 'numpy' or 'torch', got {backend!r}.")
    tensors = [a for a in arrays if is_tensor(a)]
    if tensors:
        if backend == "numpy":
            raise ValueError("backend='numpy' was asked for but torch tensors were passed.")
        return torch_namespace(like=tensors[0])
    if backend == "torch":
        return torch_namespace(device)
    return NUMPY
