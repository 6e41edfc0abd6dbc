"""torch at run time: the lazy import and the one device resolver.

Nothing here imports torch at module level, so ``import dasim`` stays torch-free. A
low-level module: it imports only :mod:`dasim._validation`.
"""

from __future__ import annotations

from ._validation import check_torch_device

__all__ = ["import_torch", "resolve_device"]

_TORCH_HINT = "{name} needs PyTorch, which is not installed: pip install dasim[torch]"


def import_torch(name):
    """Import torch or raise an ImportError that says ``name`` needs it and how to install it."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised only without torch
        raise ImportError(_TORCH_HINT.format(name=name)) from exc
    return torch


def resolve_device(
    device="auto",
    *,
    name="device",
    fallback="cpu",
    numpy=None,
    types=("cpu", "cuda", "mps"),
):
    """Resolve a device request to the device a run uses.

    Parameters
    ----------
    device : {"auto", "numpy", "cpu", "cuda", ...}, torch.device or None
        ``"auto"`` (or ``None``): ``"cuda"`` when torch sees a GPU, else ``fallback``
        (also when torch is not installed). ``"numpy"``: accepted only where ``numpy``
        is None (the caller has a numpy path); otherwise a ``ValueError`` with ``numpy``
        as its explanation. Anything else is checked by
        :func:`dasim._validation.check_torch_device` (torch needed).
    name : str, default="device"
        Argument name used in error messages.
    fallback : str, default="cpu"
        What ``"auto"`` gives without a GPU (``"numpy"`` for the KDE filter).
    numpy : str or None, default=None
        ``None`` if ``"numpy"`` is a valid device here, else the message explaining why not.
    types : tuple of str, default=("cpu", "cuda", "mps")
        The torch device types the caller supports.

    Returns
    -------
    str
        ``"numpy"``, ``"cpu"``, ``"cuda"`` or torch's name of the device (``"cuda:1"``).
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        try:
            import torch
        except ImportError:
            return fallback
        return "cuda" if torch.cuda.is_available() else fallback
    if isinstance(device, str) and device == "numpy":
        if numpy is not None:
            raise ValueError(numpy)
        return "numpy"
    try:
        import torch
    except ImportError:
        hint = f" (or use {name}='numpy')" if numpy is None else ""
        raise ImportError(
            f"{name}={device!r} needs torch: pip install dasim[torch]{hint}."
        ) from None
    return check_torch_device(device, torch, name, types=types)
