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
from dasim.diffusion.denoising import _EPS_FORWARD_DOC
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


def _forward_doc(summary, name, given, returned, kind="torch.Tensor"):
    """Numpydoc text of the ``forward`` of a module with one input."""
    return f"""{summary}

        Parameters
        ----------
        {name} : {kind}
            {given}

        Returns
        -------
        torch.Tensor
            {returned}
        """


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
        var, mean = torch.var_mean(h, dim=-1, unbiased=True, keepdim=True)
        return (h - mean) / torch.sqrt(var + self.eps)

    forward.__doc__ = _forward_doc(
        "Normalise ``h`` over its last dimension.",
        "h",
        "Input of shape ``(..., n)``.",
        "The normalised input, same shape.",
    )


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
        return h + self.body(h)

    forward.__doc__ = _forward_doc(
        "Return ``h + body(h)``.",
        "h",
        "Input, of the shape the wrapped modules expect.",
        "``h + body(h)``, same shape.",
    )


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
        return self.layers(h)

    forward.__doc__ = _forward_doc(
        "Apply the network to the last dimension of ``h``.",
        "h",
        "Input of shape ``(..., in_features)``.",
        "Output of shape ``(..., out_features)``.",
    )


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
        t = torch.as_tensor(t, dtype=self.freqs.dtype, device=self.freqs.device)
        angles = t[..., None] * self.freqs
        return self.mlp(torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1))

    forward.__doc__ = _forward_doc(
        "Embed diffusion times.",
        "t",
        "Diffusion time(s), of any shape ``(...)``.",
        "Embeddings of shape ``(..., out)``.",
        kind="float or torch.Tensor",
    )


class _EpsNet(nn.Module):
    """Shared part of :class:`MLPEpsNet` and :class:`ConvEpsNet`: sizes, time embedding, call.

    Subclasses call ``width, depth = self._embedding_and_sizes(width, depth, embedding)``
    before making their other layers (so the time embedding draws its initial weights
    first) and implement ``_check_features(x)`` and ``_predict(x, emb)``.
    """

    def _embedding_and_sizes(self, width: int, depth: int, embedding: int):
        """Check the sizes, make ``self.embedding`` and return ``(width, depth)``."""
        width = check_positive_int(width, "width")
        depth = check_positive_int(depth, "depth")
        self.embedding = FourierTimeEmbedding(out=check_positive_int(embedding, "embedding"))
        return width, depth

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        self._check_features(x)
        return self._predict(x, _time_features(self.embedding, t, tuple(x.shape[:-1]), x))

    forward.__doc__ = _EPS_FORWARD_DOC.format(x="x", shape="(B, ..., F)", n="B")


class MLPEpsNet(_EpsNet):
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
        width, depth = self._embedding_and_sizes(width, depth, embedding)
        self.network = ResMLP(
            self.features + self.embedding.out_features,
            self.features,
            (width,) * depth,
            activation,
        )

    def _check_features(self, x):
        if x.shape[-1] != self.features:
            raise ValueError(f"x: expected {self.features} features, got {x.shape[-1]}")

    def _predict(self, x, emb):
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


class ConvEpsNet(_EpsNet):
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
    >>> x = torch.randn(2, 3 * 8)  # 3 channels, 8 points of periodic space
    >>> shift = lambda v: v.reshape(2, 3, 8).roll(1, dims=-1).reshape(2, 24)
    >>> torch.allclose(net(shift(x), 0.5), shift(net(x, 0.5)), atol=1e-6)
    True
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
        kernel_size = check_positive_int(kernel_size, "kernel_size")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        width, depth = self._embedding_and_sizes(width, depth, embedding)
        embedding = self.embedding.out_features
        pad = kernel_size // 2
        self.conv_in = nn.Conv1d(
            self.channels, width, kernel_size, padding=pad, padding_mode="circular"
        )
        self.blocks = nn.ModuleList(
            [_ConvBlock(width, kernel_size, embedding, activation) for _ in range(depth)]
        )
        self.conv_out = nn.Conv1d(
            width, self.channels, kernel_size, padding=pad, padding_mode="circular"
        )

    def _check_features(self, x):
        if x.shape[-1] % self.channels != 0:
            raise ValueError(
                f"x: the number of features {x.shape[-1]} is not a multiple of "
                f"channels={self.channels}"
            )

    def _predict(self, x, emb):
        emb = emb.reshape(-1, self.embedding.out_features)
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

    forward.__doc__ = _EPS_FORWARD_DOC.format(x="x", shape="(B, L, D)", n="B")
