r"""Epsilon-networks for the learned assimilators (torch).

An epsilon-network :math:`\varepsilon_\phi(x_t, t)` predicts the noise in
:math:`x_t = \mu(t) x + \sigma(t)\varepsilon`; the score is
:math:`s_\phi = -\varepsilon_\phi / \sigma(t)`. The building blocks are

* :class:`FourierTimeEmbedding`: :math:`t \mapsto [\cos(\pi k t), \sin(\pi k t)]_{k=1..K}`
  followed by a small MLP;
* :class:`ResMLP`: a residual MLP whose blocks use a parameter-free layer norm;
* :class:`MLPEpsNet` (flat states) and :class:`ConvEpsNet` (spatially extended states, a
  circular 1-d convolution over space with the window's states as channels), both called as
  ``net(x, t)`` on ``(B, F)`` inputs;
* :class:`LocalScoreNet`: a kernel network on windows of :math:`2k+1` states composed into a
  score for whole trajectories ``(B, L, D)`` of any length :math:`L \ge 2k+1` (see
  :mod:`dasim.diffusion.windows`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dasim._validation import check_positive_int
from dasim.diffusion.windows import check_window, fold_windows, unfold_windows

__all__ = [
    "ConvEpsNet",
    "FourierTimeEmbedding",
    "LocalScoreNet",
    "MLPEpsNet",
    "ParameterFreeLayerNorm",
    "ResMLP",
    "ResidualBlock",
]


def _time_features(embedding: nn.Module, t, batch_shape: tuple[int, ...], like: torch.Tensor):
    """Embed ``t`` (scalar or ``(B,)``) and broadcast it to ``batch_shape + (E,)``."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.ndim > 1:
        raise ValueError(f"t must be a scalar or a (B,) tensor, got shape {tuple(t.shape)}")
    if t.ndim == 1 and (len(batch_shape) == 0 or t.shape[0] != batch_shape[0]):
        raise ValueError(
            f"t: got {t.shape[0]} times for a batch of leading shape {tuple(batch_shape)}"
        )
    emb = embedding(t)
    if t.ndim == 1:
        emb = emb.reshape((t.shape[0],) + (1,) * (len(batch_shape) - 1) + (emb.shape[-1],))
    return emb.expand(*batch_shape, emb.shape[-1])


class ParameterFreeLayerNorm(nn.Module):
    r"""Layer normalisation over the last dimension, without affine parameters.

    .. math::

        \operatorname{LN}(h) = \frac{h - \bar{h}}{\sqrt{s^2(h) + \epsilon}},

    with :math:`\bar{h}` the mean and :math:`s^2` the unbiased variance over the last
    dimension.

    Parameters
    ----------
    eps : float, default=1e-5
        Added to the variance.

    Examples
    --------
    >>> import torch
    >>> from dasim.diffusion.networks import ParameterFreeLayerNorm
    >>> ParameterFreeLayerNorm()(torch.tensor([[1.0, 2.0, 3.0]])).round(decimals=3)
    tensor([[-1.,  0.,  1.]])
    """

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = float(eps)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Normalise ``h`` over its last dimension.

        Parameters
        ----------
        h : torch.Tensor
            Input of shape ``(..., n)``.

        Returns
        -------
        torch.Tensor
            The normalised input, same shape.
        """
        var, mean = torch.var_mean(h, dim=-1, unbiased=True, keepdim=True)
        return (h - mean) / torch.sqrt(var + self.eps)


class ResidualBlock(nn.Module):
    r"""Residual wrapper :math:`h \mapsto h + f(h)` around a sequence of modules.

    Parameters
    ----------
    *layers : torch.nn.Module
        The modules of :math:`f`, applied in order.

    Examples
    --------
    >>> import torch
    >>> from dasim.diffusion.networks import ResidualBlock
    >>> ResidualBlock(torch.nn.Identity())(torch.tensor([1.0, 2.0]))
    tensor([2., 4.])
    """

    def __init__(self, *layers: nn.Module):
        super().__init__()
        self.body = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Return ``h + body(h)``.

        Parameters
        ----------
        h : torch.Tensor
            Input, of the shape the wrapped modules expect.

        Returns
        -------
        torch.Tensor
            ``h + body(h)``, same shape.
        """
        return h + self.body(h)


class ResMLP(nn.Module):
    r"""Residual MLP with parameter-free layer norms.

    For each consecutive pair of sizes :math:`(a, b)` along
    ``(in_features, *hidden) -> (*hidden, out_features)`` the network applies a
    ``Linear(a, b)`` when :math:`a \ne b`, then a residual block

    .. math::

        h \mapsto h + W_2\, \operatorname{act}\big(W_1 \operatorname{LN}(h) + b_1\big) + b_2

    at width :math:`b` (so the output size also gets a residual block).

    Parameters
    ----------
    in_features, out_features : int
        Input and output sizes.
    hidden : sequence of int, default=(256, 256, 256)
        Hidden widths.
    activation : type of torch.nn.Module, default=torch.nn.SiLU
        Activation class.

    Examples
    --------
    >>> import torch
    >>> from dasim.diffusion.networks import ResMLP
    >>> ResMLP(3, 2, hidden=(8,))(torch.zeros(5, 3)).shape
    torch.Size([5, 2])
    """

    def __init__(
        self, in_features: int, out_features: int, hidden=(256, 256, 256), activation=nn.SiLU
    ):
        super().__init__()
        in_features = check_positive_int(in_features, "in_features")
        out_features = check_positive_int(out_features, "out_features")
        hidden = tuple(check_positive_int(h, "hidden") for h in hidden)
        layers: list[nn.Module] = []
        sizes = (in_features, *hidden, out_features)
        for before, after in zip(sizes[:-1], sizes[1:], strict=True):
            if before != after:
                layers.append(nn.Linear(before, after))
            layers.append(
                ResidualBlock(
                    ParameterFreeLayerNorm(),
                    nn.Linear(after, after),
                    activation(),
                    nn.Linear(after, after),
                )
            )
        self.layers = nn.Sequential(*layers)
        self.in_features = in_features
        self.out_features = out_features

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Apply the network to the last dimension of ``h``.

        Parameters
        ----------
        h : torch.Tensor
            Input of shape ``(..., in_features)``.

        Returns
        -------
        torch.Tensor
            Output of shape ``(..., out_features)``.
        """
        return self.layers(h)


class FourierTimeEmbedding(nn.Module):
    r"""Fourier features of the diffusion time followed by a two-layer MLP.

    .. math::

        e(t) = W_2\, \operatorname{SiLU}\big(W_1 \phi(t) + b_1\big) + b_2, \qquad
        \phi(t) = \big[\cos(\pi k t), \sin(\pi k t)\big]_{k = 1..K}.

    Parameters
    ----------
    n_freq : int, default=16
        Number :math:`K` of frequencies (``2K`` Fourier features).
    out : int, default=32
        Embedding size.
    hidden : int, default=256
        Width of the hidden layer.

    Examples
    --------
    >>> import torch
    >>> from dasim.diffusion.networks import FourierTimeEmbedding
    >>> FourierTimeEmbedding(n_freq=4, out=8, hidden=16)(torch.rand(5)).shape
    torch.Size([5, 8])
    """

    def __init__(self, n_freq: int = 16, out: int = 32, hidden: int = 256):
        super().__init__()
        n_freq = check_positive_int(n_freq, "n_freq")
        out = check_positive_int(out, "out")
        hidden = check_positive_int(hidden, "hidden")
        self.register_buffer("freqs", math.pi * torch.arange(1, n_freq + 1).float())
        self.mlp = nn.Sequential(nn.Linear(2 * n_freq, hidden), nn.SiLU(), nn.Linear(hidden, out))
        self.out_features = out

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Embed diffusion times.

        Parameters
        ----------
        t : float or torch.Tensor
            Diffusion time(s), of any shape ``(...)``.

        Returns
        -------
        torch.Tensor
            Embeddings of shape ``(..., out)``.
        """
        t = torch.as_tensor(t, dtype=self.freqs.dtype, device=self.freqs.device)
        angles = t[..., None] * self.freqs
        return self.mlp(torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1))


class MLPEpsNet(nn.Module):
    r"""Epsilon-network for flat states: :math:`\varepsilon_\phi(x, t) = \text{ResMLP}([x, e(t)])`.

    Parameters
    ----------
    features : int
        Size ``F`` of the state (the last dimension of ``x``).
    width : int, default=128
        Hidden width.
    depth : int, default=3
        Number of hidden layers.
    embedding : int, default=32
        Size of the time embedding :math:`e(t)` (:class:`FourierTimeEmbedding`).
    activation : type of torch.nn.Module, default=torch.nn.SiLU
        Activation class.

    Notes
    -----
    ``forward(x, t)`` takes ``x`` of shape ``(B, ..., F)`` and ``t`` a scalar or a ``(B,)``
    tensor, and returns a tensor shaped like ``x``.

    Examples
    --------
    >>> import torch
    >>> from dasim.diffusion.networks import MLPEpsNet
    >>> net = MLPEpsNet(features=3, width=8, depth=1, embedding=4)
    >>> net(torch.zeros(5, 3), torch.rand(5)).shape
    torch.Size([5, 3])
    """

    def __init__(
        self,
        features: int,
        width: int = 128,
        depth: int = 3,
        embedding: int = 32,
        activation=nn.SiLU,
    ):
        super().__init__()
        self.features = check_positive_int(features, "features")
        width = check_positive_int(width, "width")
        depth = check_positive_int(depth, "depth")
        embedding = check_positive_int(embedding, "embedding")
        self.embedding = FourierTimeEmbedding(out=embedding)
        self.network = ResMLP(
            self.features + embedding, self.features, (width,) * depth, activation
        )

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        """Predict the noise in ``x`` at time ``t``.

        Parameters
        ----------
        x : torch.Tensor
            Noisy states of shape ``(B, ..., F)``.
        t : float or torch.Tensor
            Diffusion time: a scalar or a ``(B,)`` tensor.

        Returns
        -------
        torch.Tensor
            The predicted noise, shaped like ``x``.
        """
        if x.shape[-1] != self.features:
            raise ValueError(f"x: expected {self.features} features, got {x.shape[-1]}")
        emb = _time_features(self.embedding, t, tuple(x.shape[:-1]), x)
        return self.network(torch.cat([x, emb], dim=-1))


class _ConvBlock(nn.Module):
    """Pre-norm residual conv block with an additive time projection."""

    def __init__(self, width: int, kernel_size: int, embedding: int, activation):
        super().__init__()
        pad = kernel_size // 2
        self.norm = nn.GroupNorm(1, width, affine=False)
        self.conv1 = nn.Conv1d(width, width, kernel_size, padding=pad, padding_mode="circular")
        self.time = nn.Linear(embedding, width)
        self.act = activation()
        self.conv2 = nn.Conv1d(width, width, kernel_size, padding=pad, padding_mode="circular")

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        u = self.conv1(self.norm(h)) + self.time(emb)[..., None]
        return h + self.conv2(self.act(u))


class ConvEpsNet(nn.Module):
    r"""Circular 1-d convolutional epsilon-network for spatially extended states.

    A flat input of ``F = channels * n_space`` features (e.g. a Lorenz-96 window of
    :math:`2k+1` states of :math:`n` variables, flattened state-major) is viewed as
    ``(channels, n_space)``: channels are the window's states, the convolution runs over
    space with circular padding, so the network commutes with periodic shifts of space.

    .. math::

        h_0 = \text{conv}_\text{in}(x), \quad
        h_{l+1} = h_l + \text{conv}_2\Big(\operatorname{act}\big(\text{conv}_1(
        \operatorname{GN}(h_l)) + W_l e(t)\big)\Big), \quad
        \varepsilon = \text{conv}_\text{out}(h_\text{depth}).

    Parameters
    ----------
    channels : int
        Number of channels (the window length ``2k+1`` for a local score).
    width : int, default=32
        Hidden channels.
    depth : int, default=3
        Number of residual blocks.
    kernel_size : int, default=5
        Odd kernel size.
    embedding : int, default=32
        Size of the time embedding.
    activation : type of torch.nn.Module, default=torch.nn.SiLU
        Activation class.

    Notes
    -----
    ``forward(x, t)`` takes ``x`` of shape ``(B, ..., F)`` with ``F`` a multiple of
    ``channels`` and ``t`` a scalar or a ``(B,)`` tensor, and returns a tensor shaped like
    ``x``.

    Examples
    --------
    >>> import torch
    >>> from dasim.diffusion.networks import ConvEpsNet
    >>> net = ConvEpsNet(channels=3, width=4, depth=1, kernel_size=3, embedding=4)
    >>> net(torch.zeros(2, 3 * 8), 0.5).shape
    torch.Size([2, 24])
    """

    def __init__(
        self,
        channels: int,
        width: int = 32,
        depth: int = 3,
        kernel_size: int = 5,
        embedding: int = 32,
        activation=nn.SiLU,
    ):
        super().__init__()
        self.channels = check_positive_int(channels, "channels")
        width = check_positive_int(width, "width")
        depth = check_positive_int(depth, "depth")
        kernel_size = check_positive_int(kernel_size, "kernel_size")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        embedding = check_positive_int(embedding, "embedding")
        pad = kernel_size // 2
        self.embedding = FourierTimeEmbedding(out=embedding)
        self.conv_in = nn.Conv1d(
            self.channels, width, kernel_size, padding=pad, padding_mode="circular"
        )
        self.blocks = nn.ModuleList(
            [_ConvBlock(width, kernel_size, embedding, activation) for _ in range(depth)]
        )
        self.conv_out = nn.Conv1d(
            width, self.channels, kernel_size, padding=pad, padding_mode="circular"
        )

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        """Predict the noise in ``x`` at time ``t``.

        Parameters
        ----------
        x : torch.Tensor
            Noisy states of shape ``(B, ..., channels * n_space)``.
        t : float or torch.Tensor
            Diffusion time: a scalar or a ``(B,)`` tensor.

        Returns
        -------
        torch.Tensor
            The predicted noise, shaped like ``x``.
        """
        if x.shape[-1] % self.channels != 0:
            raise ValueError(
                f"x: the number of features {x.shape[-1]} is not a multiple of "
                f"channels={self.channels}"
            )
        lead = tuple(x.shape[:-1])
        emb = _time_features(self.embedding, t, lead, x).reshape(-1, self.embedding.out_features)
        h = self.conv_in(x.reshape(-1, self.channels, x.shape[-1] // self.channels))
        for block in self.blocks:
            h = block(h, emb)
        return self.conv_out(h).reshape(x.shape)


class LocalScoreNet(nn.Module):
    r"""Local (windowed) epsilon-network for whole trajectories: SDA's ``MCScoreNet``.

    A kernel network :math:`\varepsilon_\phi` sees windows of :math:`2k+1` consecutive
    states flattened to :math:`(2k+1) D` features. On a trajectory
    :math:`x \in \mathbb{R}^{B \times L \times D}` (:math:`L \ge 2k+1`) the kernel is applied
    to every window :math:`x_{j:j+2k}` with the same :math:`t`, and the outputs are composed
    by :func:`~dasim.diffusion.windows.fold_windows`:

    .. math::

        \varepsilon(x, t)_i = \big[\varepsilon_\phi(x_{w(i)}, t)\big]_{i - w(i)}, \qquad
        w(i) = \min\big(\max(i - k, 0), L - 2k - 1\big),

    i.e. the centre of each state's own window, and the first/last window for the first/last
    :math:`k` states.

    Parameters
    ----------
    n_state : int
        Number ``D`` of state variables per time.
    window : int, default=2
        The window order :math:`k` (half-width): the kernel sees ``2k+1`` states.
    kernel : {"mlp", "conv"} or torch.nn.Module, default="mlp"
        ``"mlp"``: :class:`MLPEpsNet` on ``(2k+1) * n_state`` features; ``"conv"``:
        :class:`ConvEpsNet` with the ``2k+1`` states as channels and the ``n_state``
        variables as the periodic space axis (Lorenz-96); or any module called as
        ``kernel(w, t)`` on flat windows ``w`` of shape ``(N, (2k+1) * n_state)`` with ``t``
        a scalar or ``(N,)`` tensor.
    width, depth, embedding : int
        Kernel sizes (defaults 128, 3, 32 for ``"mlp"``; use about 32-64 for ``"conv"``).
    kernel_size : int, default=5
        Convolution size for ``kernel="conv"``.
    activation : type of torch.nn.Module, default=torch.nn.SiLU
        Activation class.

    Examples
    --------
    >>> import torch
    >>> from dasim.diffusion.networks import LocalScoreNet
    >>> net = LocalScoreNet(n_state=3, window=1, width=8, depth=1, embedding=4)
    >>> net.window_size
    3
    >>> net(torch.zeros(2, 10, 3), torch.rand(2)).shape
    torch.Size([2, 10, 3])
    """

    def __init__(
        self,
        n_state: int,
        window: int = 2,
        kernel="mlp",
        width: int = 128,
        depth: int = 3,
        embedding: int = 32,
        kernel_size: int = 5,
        activation=nn.SiLU,
    ):
        super().__init__()
        self.n_state = check_positive_int(n_state, "n_state")
        self.window = check_window(window)
        size = 2 * self.window + 1
        if isinstance(kernel, nn.Module):
            self.kernel = kernel
        elif kernel == "mlp":
            self.kernel = MLPEpsNet(size * self.n_state, width, depth, embedding, activation)
        elif kernel == "conv":
            self.kernel = ConvEpsNet(size, width, depth, kernel_size, embedding, activation)
        else:
            raise ValueError(f"kernel must be 'mlp', 'conv' or a torch.nn.Module, got {kernel!r}")

    @property
    def window_size(self) -> int:
        """Number of states ``2k+1`` in a window."""
        return 2 * self.window + 1

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        """Predict the noise of whole trajectories at time ``t``.

        Parameters
        ----------
        x : torch.Tensor
            Noisy trajectories of shape ``(B, L, D)``, with ``L >= 2k+1``.
        t : float or torch.Tensor
            Diffusion time: a scalar or a ``(B,)`` tensor.

        Returns
        -------
        torch.Tensor
            The predicted noise, shape ``(B, L, D)``.
        """
        if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[-1] != self.n_state:
            raise ValueError(
                f"x must have shape (B, L, {self.n_state}), got {tuple(getattr(x, 'shape', ()))}"
            )
        k, size = self.window, self.window_size
        w = unfold_windows(x, k)
        batch, n_win = w.shape[:2]
        flat = w.reshape(batch * n_win, size * self.n_state)
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.ndim == 1:
            if t.shape[0] != batch:
                raise ValueError(f"t: got {t.shape[0]} times for a batch of {batch}")
            t = t.repeat_interleave(n_win)
        elif t.ndim > 1:
            raise ValueError(f"t must be a scalar or a (B,) tensor, got shape {tuple(t.shape)}")
        out = self.kernel(flat, t).reshape(batch, n_win, size, self.n_state)
        return fold_windows(out, k)
