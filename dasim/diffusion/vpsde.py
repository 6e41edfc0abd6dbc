r"""Variance-preserving noise schedule, denoising loss and Tweedie denoiser (torch).

The forward (noising) process of SDA and SOAD perturbs a clean sample :math:`x` as

.. math::

    x_t = \mu(t)\, x + \sigma(t)\, \varepsilon, \qquad \varepsilon \sim \mathcal{N}(0, I),
    \qquad t \in [0, 1],

and a network :math:`\varepsilon_\phi(x_t, t)` is trained to predict the noise
:math:`\varepsilon`. Everything in :mod:`dasim.diffusion` speaks three tiny interfaces:

* a *schedule* is a callable ``schedule(t) -> (mu, sigma)``;
* an *epsilon-model* is any callable ``eps(x, t) -> eps`` on tensors of shape ``(B, L, D)``
  (batch, time, features), with ``t`` a 0-d tensor or a ``(B,)`` tensor;
* a *sampler* integrates from :math:`t = 1` to :math:`t = 0` with one ``step``.

References
----------
.. [1] F. Rozet and G. Louppe, "Score-based data assimilation", NeurIPS 2023.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["CosineSchedule", "broadcast_time", "denoising_loss", "tweedie"]


def _as_time(t, like: torch.Tensor | None = None) -> torch.Tensor:
    """Return ``t`` as a floating tensor (dtype and device of ``like`` when given)."""
    if isinstance(t, torch.Tensor):
        if like is not None:
            return t.to(dtype=like.dtype, device=like.device)
        return t if t.is_floating_point() else t.to(torch.get_default_dtype())
    if like is not None:
        return torch.as_tensor(t, dtype=like.dtype, device=like.device)
    return torch.as_tensor(t, dtype=torch.get_default_dtype())


def broadcast_time(v, x: torch.Tensor) -> torch.Tensor:
    r"""Reshape a per-sample quantity so that it broadcasts against a batch ``x``.

    Parameters
    ----------
    v : float or torch.Tensor
        A scalar (0-d), a ``(B,)`` tensor with one value per sample, or a tensor that
        already broadcasts against ``x``.
    x : torch.Tensor
        Batch of shape ``(B, ...)``.

    Returns
    -------
    torch.Tensor
        ``v`` with the dtype and device of ``x``; a ``(B,)`` tensor becomes
        ``(B, 1, ..., 1)`` with ``x.ndim`` dimensions.

    Raises
    ------
    ValueError
        If ``v`` is 1-d and its length is not the batch size of ``x``.

    Examples
    --------
    >>> import torch
    >>> from dasim.diffusion.vpsde import broadcast_time
    >>> broadcast_time(torch.ones(4), torch.zeros(4, 3, 2)).shape
    torch.Size([4, 1, 1])
    """
    v = _as_time(v, x)
    if v.ndim == 0 or v.ndim == x.ndim:
        return v
    if v.ndim == 1:
        if v.shape[0] != x.shape[0]:
            raise ValueError(
                f"t: a 1-d time tensor must have one entry per sample ({x.shape[0]}), "
                f"got shape {tuple(v.shape)}"
            )
        return v.reshape((-1,) + (1,) * (x.ndim - 1))
    raise ValueError(
        f"t: expected a scalar or a (B,) tensor, got shape {tuple(v.shape)} for a batch of "
        f"shape {tuple(x.shape)}"
    )


class CosineSchedule:
    r"""The cosine-squared variance-preserving schedule of SDA and SOAD.

    .. math::

        \mu(t) = \cos(\omega t)^2, \qquad \omega = \arccos\sqrt{\eta}, \qquad
        \sigma(t) = \sqrt{1 - \mu(t)^2 + \eta^2},

    so that :math:`\mu(t)^2 + \sigma(t)^2 = 1 + \eta^2`, :math:`\mu(0) = 1`,
    :math:`\sigma(0) = \eta`, :math:`\mu(1) = \eta`, :math:`\sigma(1) = 1`; :math:`\mu` is
    decreasing and :math:`\sigma` increasing on :math:`[0, 1]`. The signal-to-noise ratio
    :math:`r(t) = \sigma(t)/\mu(t)` runs from :math:`\eta` to :math:`1/\eta`.

    Note the square: a schedule :math:`\mu = \cos(\omega t)` (without it) is a different
    process, and the SDA/SOAD formulas do not apply to it.

    Parameters
    ----------
    eta : float, default=1e-3
        Smallest noise level, in ``(0, 1)``.

    Examples
    --------
    >>> import torch
    >>> schedule = CosineSchedule()
    >>> mu, sigma = schedule(torch.tensor([0.0, 1.0], dtype=torch.float64))
    >>> [round(v, 6) for v in mu.tolist()], [round(v, 6) for v in sigma.tolist()]
    ([1.0, 0.001], [0.001, 1.0])
    """

    def __init__(self, eta: float = 1e-3):
        eta = float(eta)
        if not (0.0 < eta < 1.0) or not math.isfinite(eta):
            raise ValueError(f"eta must be in (0, 1), got {eta!r}")
        self.eta = eta
        self.omega = math.acos(math.sqrt(eta))

    def mu(self, t) -> torch.Tensor:
        r"""Compute the signal scale :math:`\mu(t) = \cos(\omega t)^2`.

        Parameters
        ----------
        t : float or torch.Tensor
            Diffusion time(s) in :math:`[0, 1]`, of any shape.

        Returns
        -------
        torch.Tensor
            :math:`\mu(t)`, with the shape of ``t`` (vectorised over ``t``).
        """
        t = _as_time(t)
        return torch.cos(self.omega * t) ** 2

    def sigma(self, t) -> torch.Tensor:
        r"""Compute the noise scale :math:`\sigma(t) = \sqrt{1 - \mu(t)^2 + \eta^2}`.

        Parameters
        ----------
        t : float or torch.Tensor
            Diffusion time(s) in :math:`[0, 1]`, of any shape.

        Returns
        -------
        torch.Tensor
            :math:`\sigma(t)`, with the shape of ``t`` (vectorised over ``t``).
        """
        mu = self.mu(t)
        return torch.sqrt(1 - mu**2 + self.eta**2)

    def __call__(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Return :math:`(\mu(t), \sigma(t))` with the shape, dtype and device of ``t``."""
        mu = self.mu(t)
        return mu, torch.sqrt(1 - mu**2 + self.eta**2)

    def __repr__(self) -> str:
        return f"CosineSchedule(eta={self.eta!r})"


def denoising_loss(
    eps_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    schedule,
    generator: torch.Generator | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Denoising (noise-prediction) loss of an epsilon-model on a batch of clean samples.

    For each sample :math:`t \sim \mathcal{U}(0, 1)` and :math:`\varepsilon \sim
    \mathcal{N}(0, I)` are drawn, :math:`x_t = \mu(t) x + \sigma(t) \varepsilon`, and

    .. math::

        \mathcal{L} = \operatorname{mean} \big(\varepsilon_\phi(x_t, t) - \varepsilon\big)^2
        \quad\text{or, with weights } w,\quad
        \frac{\operatorname{mean}\big(w\, (\varepsilon_\phi - \varepsilon)^2\big)}
        {\operatorname{mean}(w)},

    the mean running over every element (batch and event). The minimiser is
    :math:`\varepsilon_\phi(x_t, t) = -\sigma(t) \nabla_{x_t} \log p_t(x_t)`.

    Parameters
    ----------
    eps_model : callable
        ``eps_model(x_t, t) -> eps`` with ``t`` of shape ``(B,)``.
    x : torch.Tensor
        Clean samples, shape ``(B, ...)``.
    schedule : callable
        ``schedule(t) -> (mu, sigma)``, e.g. :class:`CosineSchedule`.
    generator : torch.Generator, optional
        Source of randomness for ``t`` and :math:`\varepsilon` (on the device of ``x``).
    weights : torch.Tensor, optional
        Non-negative weights broadcastable to ``x``.

    Returns
    -------
    torch.Tensor
        The scalar loss (differentiable with respect to the parameters of ``eps_model``).

    Examples
    --------
    >>> import torch
    >>> from dasim.diffusion.vpsde import CosineSchedule, denoising_loss
    >>> x = torch.randn(8, 5, 2, generator=torch.Generator().manual_seed(0))
    >>> loss = denoising_loss(lambda x_t, t: torch.zeros_like(x_t), x, CosineSchedule())
    >>> loss.shape, bool(loss > 0)
    (torch.Size([]), True)
    """
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise ValueError("x must be a torch.Tensor of shape (B, ...) with at least 2 dims")
    t = torch.rand(x.shape[0], generator=generator, dtype=x.dtype, device=x.device)
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    mu, sigma = schedule(t)
    x_t = broadcast_time(mu, x) * x + broadcast_time(sigma, x) * eps
    err = (eps_model(x_t, t) - eps) ** 2
    if weights is None:
        return err.mean()
    weights = torch.as_tensor(weights, dtype=x.dtype, device=x.device)
    if (weights < 0).any():
        raise ValueError("weights must be non-negative")
    weights = torch.broadcast_to(weights, err.shape)
    return (err * weights).mean() / weights.mean()


def tweedie(x_t: torch.Tensor, eps: torch.Tensor, mu, sigma) -> torch.Tensor:
    r"""Tweedie denoiser: the posterior mean of the clean sample given :math:`x_t`.

    .. math::

        \hat{x}(x_t) = \mathbb{E}[x \mid x_t]
        = \frac{x_t + \sigma^2 \nabla \log p_t(x_t)}{\mu}
        = \frac{x_t - \sigma\, \varepsilon(x_t, t)}{\mu}.

    Parameters
    ----------
    x_t : torch.Tensor
        Noisy samples, shape ``(B, ...)``.
    eps : torch.Tensor
        Predicted noise, same shape.
    mu, sigma : float or torch.Tensor
        Schedule values at ``t``: scalars or ``(B,)`` tensors.

    Returns
    -------
    torch.Tensor
        :math:`\hat{x}`, same shape as ``x_t``.

    Examples
    --------
    >>> import torch
    >>> from dasim.diffusion.vpsde import tweedie
    >>> tweedie(torch.tensor([[1.0]]), torch.tensor([[0.5]]), mu=0.5, sigma=1.0)
    tensor([[1.]])
    """
    return (x_t - broadcast_time(sigma, x_t) * eps) / broadcast_time(mu, x_t)
