r"""Overlapping time windows: the local-score ("pseudo-Markov blanket") trick of SDA.

For a trajectory :math:`x_{1:L}` and an order :math:`k`, the score of state :math:`i` is
approximated from the :math:`2k+1` states around it,

.. math::

    \nabla_{x_i} \log p(x_{1:L}) \approx
    \big[s_\phi(x_{i-k:i+k})\big]_{\text{centre}},

so a network trained on windows of :math:`2k+1` states gives a score for trajectories of
any length :math:`L \ge 2k+1`. :func:`unfold_windows` cuts the :math:`L - 2k` overlapping
windows, :func:`fold_windows` composes per-window outputs back into a trajectory: states
:math:`1..k` come from the first window, states :math:`k+1..L-k` from the centre of their
own window, and the last :math:`k` states from the last window.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["check_window", "fold_windows", "random_windows", "unfold_windows"]


def check_window(k) -> int:
    """Validate a window order and return it as ``int``.

    Parameters
    ----------
    k : int
        Window order (half-width); a window holds ``2k + 1`` states.

    Returns
    -------
    int
        ``k``.

    Raises
    ------
    ValueError
        If ``k`` is not a non-negative integer.

    Examples
    --------
    >>> import numpy as np
    >>> from dasim.diffusion.windows import check_window
    >>> check_window(np.int64(2))
    2
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
        raise ValueError(f"k (the window order) must be a non-negative integer, got {k!r}")
    return int(k)


def unfold_windows(x: torch.Tensor, k: int) -> torch.Tensor:
    r"""Cut a batch of trajectories into all overlapping windows of :math:`2k+1` states.

    .. math::

        w_{b, j, m} = x_{b, j + m}, \qquad j = 0..L-2k-1, \quad m = 0..2k.

    Parameters
    ----------
    x : torch.Tensor
        Trajectories of shape ``(B, L, D)`` (more trailing event dimensions are allowed).
    k : int
        Window order; windows hold ``2k+1`` states.

    Returns
    -------
    torch.Tensor
        Shape ``(B, L - 2k, 2k + 1, D)``, a strided view of ``x`` (no copy).

    Raises
    ------
    ValueError
        If ``x`` has fewer than 3 dimensions or ``L < 2k + 1``.

    Examples
    --------
    >>> import torch
    >>> from dasim.diffusion.windows import unfold_windows
    >>> x = torch.arange(5.0).reshape(1, 5, 1)
    >>> w = unfold_windows(x, k=1)
    >>> w.shape
    torch.Size([1, 3, 3, 1])
    >>> w[0, :, :, 0]
    tensor([[0., 1., 2.],
            [1., 2., 3.],
            [2., 3., 4.]])
    """
    k = check_window(k)
    if not isinstance(x, torch.Tensor) or x.ndim < 3:
        raise ValueError("x must be a torch.Tensor of shape (B, L, D)")
    size = 2 * k + 1
    if x.shape[1] < size:
        raise ValueError(
            f"x: the trajectory length L={x.shape[1]} is shorter than a window of 2k+1="
            f"{size} states (k={k}); use L >= 2k+1"
        )
    return x.unfold(1, size, 1).movedim(-1, 2)


def fold_windows(w: torch.Tensor, k: int) -> torch.Tensor:
    r"""Compose per-window values into one trajectory (inverse of :func:`unfold_windows`).

    With :math:`N = L - 2k` windows :math:`w_{j}` of :math:`2k+1` states,

    .. math::

        x_i = \begin{cases}
            w_{0, i} & i < k, \\
            w_{i-k, k} & k \le i < L - k, \\
            w_{N-1, i - (L - 2k - 1)} & i \ge L - k,
        \end{cases}

    (0-based indices). For ``w = unfold_windows(x, k)`` this returns ``x``.

    Parameters
    ----------
    w : torch.Tensor
        Window values of shape ``(B, N, 2k + 1, D)``.
    k : int
        Window order.

    Returns
    -------
    torch.Tensor
        Shape ``(B, N + 2k, D)``.

    Raises
    ------
    ValueError
        If the third dimension of ``w`` is not ``2k + 1`` or there is no window.

    Examples
    --------
    >>> import torch
    >>> from dasim.diffusion.windows import fold_windows, unfold_windows
    >>> x = torch.arange(5.0).reshape(1, 5, 1)
    >>> torch.equal(fold_windows(unfold_windows(x, k=1), k=1), x)
    True
    """
    k = check_window(k)
    if not isinstance(w, torch.Tensor) or w.ndim < 4:
        raise ValueError("w must be a torch.Tensor of shape (B, N, 2k+1, D)")
    if w.shape[2] != 2 * k + 1:
        raise ValueError(f"w: expected windows of 2k+1={2 * k + 1} states, got {w.shape[2]}")
    if w.shape[1] < 1:
        raise ValueError("w: needs at least one window")
    return torch.cat([w[:, 0, :k], w[:, :, k], w[:, -1, k + 1 :]], dim=1)


def random_windows(
    trajectories,
    k: int,
    n: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Draw ``n`` random windows of :math:`2k+1` consecutive states.

    Each window picks a trajectory uniformly, then a start uniformly among the
    :math:`n_\text{times} - 2k` valid starts (so every window position is equally likely
    for equal-length trajectories).

    Parameters
    ----------
    trajectories : torch.Tensor or array_like
        Shape ``(n_traj, n_times, D)``.
    k : int
        Window order.
    n : int
        Number of windows.
    generator : torch.Generator, optional
        Source of randomness; must live on the device of ``trajectories``.

    Returns
    -------
    torch.Tensor
        Windows of shape ``(n, 2k + 1, D)``.

    Raises
    ------
    ValueError
        If ``trajectories`` is not 3-d, ``n_times < 2k + 1`` or ``n < 1``.

    Examples
    --------
    >>> import torch
    >>> from dasim.diffusion.windows import random_windows
    >>> trajectories = torch.randn(4, 20, 3)
    >>> generator = torch.Generator().manual_seed(0)
    >>> random_windows(trajectories, k=2, n=8, generator=generator).shape
    torch.Size([8, 5, 3])
    """
    k = check_window(k)
    trajectories = torch.as_tensor(trajectories)
    if trajectories.ndim != 3:
        raise ValueError(
            f"trajectories must have shape (n_traj, n_times, D), got {tuple(trajectories.shape)}"
        )
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    n_traj, n_times = trajectories.shape[:2]
    size = 2 * k + 1
    if n_times < size:
        raise ValueError(
            f"trajectories: n_times={n_times} is shorter than a window of 2k+1={size} states"
        )
    device = trajectories.device
    i = torch.randint(n_traj, (int(n),), generator=generator, device=device)
    start = torch.randint(n_times - size + 1, (int(n),), generator=generator, device=device)
    times = start[:, None] + torch.arange(size, device=device)
    return trajectories[i[:, None], times]
