"""Input checks shared by every public function and estimator.

Each helper raises a ``ValueError`` or ``TypeError`` that names the offending argument, so
that bad input is reported before any work starts and never surfaces as a NaN result or a
crash deep inside numpy.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "check_array_finite",
    "check_positive",
    "check_n_members",
    "check_noise",
    "check_torch_device",
]


def check_array_finite(
    value, name, *, ndim=None, allow_nan=False, dtype=np.float64, shape_tail=None, copy=False
):
    """Convert ``value`` to a float array and check its shape and finiteness.

    Parameters
    ----------
    value : array-like
        The input.
    name : str
        Argument name used in error messages.
    ndim : int or tuple of int, optional
        Allowed numbers of dimensions.
    allow_nan : bool, default=False
        Whether NaN entries are allowed (``inf`` never is).
    dtype : numpy dtype, default=float64
        Target dtype.
    shape_tail : tuple of int, optional
        Required trailing shape (``None`` entries are free).
    copy : bool, default=False
        Whether to force a copy.

    Returns
    -------
    numpy.ndarray
        The validated array.
    """
    if value is None:
        raise ValueError(f"{name} must be an array, got None.")
    try:
        arr = np.array(value, dtype=dtype, copy=copy or None)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a numeric array; could not convert it ({exc}).") from exc
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            raise ValueError(
                f"{name} must have {' or '.join(map(str, allowed))} dimensions, "
                f"got shape {arr.shape}."
            )
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}).")
    if shape_tail is not None:
        tail = arr.shape[-len(shape_tail) :]
        if len(tail) != len(shape_tail) or any(
            want is not None and got != want for got, want in zip(tail, shape_tail, strict=True)
        ):
            raise ValueError(f"{name} must have trailing shape {shape_tail}, got {arr.shape}.")
    if np.isinf(arr).any():
        raise ValueError(f"{name} contains inf.")
    if not allow_nan and np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN.")
    return arr


def is_real(value):
    """True for a real scalar (Python or numpy), False for a bool and anything else."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_positive(value, name, *, allow_zero=False, allow_array=False):
    """Check that a scalar (or, optionally, every array entry) is positive and finite.

    Parameters
    ----------
    value : float or array-like
        The value to check.
    name : str
        Argument name used in error messages.
    allow_zero : bool, default=False
        Accept zero.
    allow_array : bool, default=False
        Accept an array and check every entry.

    Returns
    -------
    float or numpy.ndarray
        The value as float (or float array).
    """
    if isinstance(value, bool) or (
        not allow_array and not isinstance(value, numbers.Real | np.floating | np.integer)
    ):
        raise TypeError(f"{name} must be a real number, got {value!r}.")
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {value!r}.")
    bad = arr < 0 if allow_zero else arr <= 0
    if np.any(bad):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be {kind}, got {value!r}.")
    return float(arr) if arr.ndim == 0 else arr


def check_positive_int(value, name):
    """Check a count: an integer (not a bool) of at least 1; return it as ``int``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def check_n_members(n, name="n_members"):
    """Check an ensemble size: an integer of at least 2."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {n!r}.")
    if n < 2:
        raise ValueError(f"{name} must be at least 2, got {n}.")
    return int(n)


def check_noise(noise, dim, name):
    """Resolve a noise specification to a covariance matrix and its Cholesky factor.

    Parameters
    ----------
    noise : float, array of shape (dim,), or array of shape (dim, dim)
        A standard deviation (scalar or per component) or a covariance matrix.
    dim : int
        The dimension of the noise.
    name : str
        Argument name used in error messages.

    Returns
    -------
    std : ndarray of shape (dim,) or None
        Per-component standard deviations when the noise is diagonal, else ``None``.
    cov : ndarray of shape (dim, dim)
        The covariance matrix.
    """
    from ._noise import GaussianNoise

    resolved = GaussianNoise.from_spec(noise, dim, name)
    return (resolved.std if resolved.is_diagonal else None), resolved.covariance


def check_torch_device(device, torch, name="device", types=("cpu", "cuda", "mps")):
    """Parse a torch device name and check that this machine has it.

    Parameters
    ----------
    device : str or torch.device
        The requested device (not ``"auto"``: resolve that first).
    torch : module
        The imported torch module.
    name : str, default="device"
        Argument name used in error messages.
    types : tuple of str, default=("cpu", "cuda", "mps")
        The device types the caller supports.

    Returns
    -------
    str
        The device as torch writes it (``"cpu"``, ``"cuda:1"``, ...).
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(
            f"{name}={device!r} is not a torch device name; use 'auto' or one of "
            f"{', '.join(repr(t) for t in types)} (e.g. 'cuda:1')."
        ) from exc
    if dev.type not in types:
        raise ValueError(
            f"{name}={device!r}: device type {dev.type!r} is not supported here; use 'auto' "
            f"or one of {', '.join(repr(t) for t in types)}."
        )
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"{name}={device!r} but CUDA is not available on this machine; use "
                f"{name}='auto' (CUDA when present, else the CPU) or 'cpu'."
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(
                f"{name}={device!r} but this machine has {count} CUDA device(s) "
                f"(cuda:0 to cuda:{count - 1})."
            )
    if dev.type == "mps":
        mps = getattr(getattr(torch, "backends", None), "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(
                f"{name}={device!r} but the Apple MPS backend is not available on this "
                f"machine; use {name}='auto' or 'cpu'."
            )
    return str(dev)
