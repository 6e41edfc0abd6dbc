"""The SOAD guidance's subsampling observations (torch): the list of ``(y_j, S_j, std_j)``
triples parsed and checked once, and their dense masks on a state's event shape.

See :mod:`dasim.diffusion.guidance` for the format; the guidance classes there use them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def _as_float_tensor(value) -> torch.Tensor:
    """Tensor view of ``value``; non-tensors keep float64 precision until used."""
    if isinstance(value, torch.Tensor):
        return value if value.is_floating_point() else value.to(torch.get_default_dtype())
    return torch.as_tensor(np.asarray(value, dtype=np.float64))


def _check_std(std, name: str) -> torch.Tensor:
    std = _as_float_tensor(std)
    if std.numel() == 0 or not torch.isfinite(std).all() or (std <= 0).any():
        raise ValueError(f"{name} must be positive and finite")
    return std


class _LinearObservations:
    """Parsed list of ``(y_j, S_j, std_j)`` subsampling observations (see module doc)."""

    def __init__(self, observations, name: str = "observations"):
        if isinstance(observations, _LinearObservations):
            self.items = observations.items
            self.name = observations.name
            self._cache = {}
            return
        if (
            isinstance(observations, tuple)
            and len(observations) == 3
            and not isinstance(observations[0], tuple | list)
        ):
            observations = [observations]
        if not isinstance(observations, Sequence) or len(observations) == 0:
            raise ValueError(f"{name} must be a non-empty list of (y, S, std) triples")
        items = []
        for j, item in enumerate(observations):
            if not isinstance(item, tuple | list) or len(item) != 3:
                raise ValueError(f"{name}[{j}] must be a (y, S, std) triple")
            y, selector, std = item
            y = _as_float_tensor(y)
            if y.ndim not in (1, 2):
                raise ValueError(
                    f"{name}[{j}]: y must have shape (n_obs,) or (B, n_obs), got {tuple(y.shape)}"
                )
            if not torch.isfinite(y).all():
                raise ValueError(f"{name}[{j}]: y must be finite")
            if isinstance(selector, tuple | list):
                index = tuple(torch.as_tensor(i) for i in selector)
                if any(
                    i.ndim != 1 or i.is_floating_point() or i.dtype == torch.bool for i in index
                ):
                    raise ValueError(
                        f"{name}[{j}]: S must be a boolean mask or a tuple of 1-d integer "
                        "index tensors"
                    )
                if len({i.shape[0] for i in index}) != 1:
                    raise ValueError(f"{name}[{j}]: the index tensors of S differ in length")
                mask = None
                n_obs = index[0].shape[0]
            else:
                mask = torch.as_tensor(selector)
                if mask.dtype != torch.bool:
                    raise ValueError(
                        f"{name}[{j}]: S must be a boolean mask or a tuple of index tensors, "
                        f"got dtype {mask.dtype}"
                    )
                index = None
                n_obs = int(mask.sum())
            if y.shape[-1] != n_obs:
                raise ValueError(
                    f"{name}[{j}]: y has {y.shape[-1]} values but S selects {n_obs} entries"
                )
            std = _check_std(std, f"{name}[{j}]: std")
            if std.ndim > 1 or (std.ndim == 1 and std.shape[0] not in (1, n_obs)):
                raise ValueError(f"{name}[{j}]: std must be a scalar or have shape ({n_obs},)")
            items.append((y, mask, index, std))
        self.items = items
        self.name = name
        self._cache = {}

    def dense(self, z: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Dense ``(Y, M, STD)`` per observation, on the event shape of ``z``.

        ``Y`` has shape ``event`` or ``(B, *event)`` (zero where unobserved), ``M`` is the
        boolean mask of shape ``event`` and ``STD`` the standard deviations (one where
        unobserved).
        """
        event = tuple(z.shape[1:])
        key = (event, z.shape[0], z.device, z.dtype)
        if key in self._cache:
            return self._cache[key]
        out = []
        for j, (y, mask, index, std) in enumerate(self.items):
            if mask is not None:
                if tuple(mask.shape) != event:
                    raise ValueError(
                        f"{self.name}[{j}]: the mask S has shape {tuple(mask.shape)}, but the "
                        f"state has event shape {event}"
                    )
                mask = mask.to(z.device)
                idx = mask.nonzero(as_tuple=True)
            else:
                if len(index) != len(event):
                    raise ValueError(
                        f"{self.name}[{j}]: S has {len(index)} index tensors for an event of "
                        f"{len(event)} dimensions {event}"
                    )
                idx = tuple(i.to(z.device) for i in index)
                for d, (i, n) in enumerate(zip(idx, event, strict=True)):
                    if i.numel() and (i.min() < -n or i.max() >= n):
                        raise ValueError(f"{self.name}[{j}]: S index {d} is out of range")
                mask = torch.zeros(event, dtype=torch.bool, device=z.device)
                mask[idx] = True
                if int(mask.sum()) != idx[0].shape[0]:
                    raise ValueError(f"{self.name}[{j}]: S selects an entry twice")
            yv = y.to(device=z.device, dtype=z.dtype)
            if yv.ndim == 2:
                if yv.shape[0] != z.shape[0]:
                    raise ValueError(
                        f"{self.name}[{j}]: y has {yv.shape[0]} rows for a batch of "
                        f"{z.shape[0]} samples"
                    )
                dense_y = torch.zeros((z.shape[0],) + event, dtype=z.dtype, device=z.device)
                dense_y[(slice(None),) + idx] = yv
            else:
                dense_y = torch.zeros(event, dtype=z.dtype, device=z.device)
                dense_y[idx] = yv
            dense_std = torch.ones(event, dtype=z.dtype, device=z.device)
            dense_std[idx] = std.to(device=z.device, dtype=z.dtype)
            out.append((dense_y, mask, dense_std))
        self._cache = {key: out}
        return out
