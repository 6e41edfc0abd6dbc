r"""The noise-prediction (epsilon) parametrisation: denoising loss and Tweedie denoiser (torch).

The forward (noising) process of SDA and SOAD perturbs a clean sample :math:`x` as

.. math::

    x_t = \mu(t)\, x + \sigma(t)\, \varepsilon, \qquad \varepsilon \sim \mathcal{N}(0, I),
    \qquad t \in [0, 1],

with :math:`(\mu, \sigma)` from a schedule of :mod:`dasim.diffusion.schedules` (the
learned assimilators use :class:`~dasim.diffusion.schedules.CosineSchedule`), and a
network :math:`\varepsilon_\phi(x_t, t)` is trained to predict the noise
:math:`\varepsilon`. The learned side of :mod:`dasim.diffusion` speaks three tiny
interfaces:

* a *schedule* is a callable ``schedule(t) -> (mu, sigma)`` (every
  :class:`~dasim.diffusion.schedules.DiffusionSchedule` is one);
* an *epsilon-model* is any callable ``eps(x, t) -> eps`` on tensors of shape ``(B, L, D)``
  (batch, time, features), with ``t`` a 0-d tensor or a ``(B,)`` tensor;
* a *sampler* integrates from :math:`t = 1` to :math:`t = 0` with one ``step``.

References
----------
.. [1] F. Rozet and G. Louppe, "Score-based data assimilation", NeurIPS 2023.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["GaussianSkip", "broadcast_time", "denoising_loss", "tweedie"]


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
    >>> from dasim.diffusion.denoising import broadcast_time
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


#: Docstring of ``forward(x, t)`` of the epsilon-networks (one contract, one text).
_EPS_FORWARD_DOC = """Predict the noise in ``{x}`` at time ``t``.

        Parameters
        ----------
        {x} : torch.Tensor
            Noisy inputs of shape ``{shape}``.
        t : float or torch.Tensor
            Diffusion time: a scalar or a ``({n},)`` tensor.

        Returns
        -------
        torch.Tensor
            The predicted noise, shaped like ``{x}``.
        """


def _squared_error(eps_model, x, t, eps, schedule):
    """``(eps_model(x_t, t) - eps)**2`` for the noised ``x_t = mu(t) x + sigma(t) eps``."""
    mu, sigma = schedule(t)
    x_t = broadcast_time(mu, x) * x + broadcast_time(sigma, x) * eps
    return (eps_model(x_t, t) - eps) ** 2


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
        ``schedule(t) -> (mu, sigma)``, e.g.
        :class:`~dasim.diffusion.schedules.CosineSchedule`.
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
    >>> from dasim.diffusion.denoising import denoising_loss
    >>> from dasim.diffusion.schedules import CosineSchedule
    >>> x = torch.randn(8, 5, 2, generator=torch.Generator().manual_seed(0))
    >>> loss = denoising_loss(lambda x_t, t: torch.zeros_like(x_t), x, CosineSchedule())
    >>> loss.shape, bool(loss > 0)
    (torch.Size([]), True)
    """
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise ValueError("x must be a torch.Tensor of shape (B, ...) with at least 2 dims")
    t = torch.rand(x.shape[0], generator=generator, dtype=x.dtype, device=x.device)
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    err = _squared_error(eps_model, x, t, eps, schedule)
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
    >>> from dasim.diffusion.denoising import tweedie
    >>> tweedie(torch.tensor([[1.0]]), torch.tensor([[0.5]]), mu=0.5, sigma=1.0)
    tensor([[1.]])
    """
    return (x_t - broadcast_time(sigma, x_t) * eps) / broadcast_time(mu, x_t)


class GaussianSkip(torch.nn.Module):
    r"""Epsilon-model with the exact noise of a standard normal prior as a skip connection.

    .. math::

        \varepsilon(w, t) = \frac{\sigma(t)}{1 + \eta^2}\, w
        + g \odot \varepsilon_\text{inner}(w, t).

    The first term is the exact epsilon :math:`\sigma w / (\alpha^2 + \sigma^2)` of a
    standard normal prior (the first two moments of standardised data) under the
    :class:`~dasim.diffusion.schedules.CosineSchedule`, whose :math:`\alpha^2 + \sigma^2`
    is the constant :math:`1 + \eta^2`; the network learns only the departure from it. The
    per-feature gain :math:`g` starts at zero, so an untrained model samples a standard
    normal instead of amplifying its errors by up to :math:`1/\alpha(1) = 1/\eta` through
    the sampler. It is a reparametrisation of the same epsilon-model: the loss and the
    samplers are unchanged.

    Parameters
    ----------
    inner : torch.nn.Module
        The learned epsilon-model ``inner(w, t)`` on flat inputs ``(N, features)``.
    features : int
        Number of features of ``w`` (the size of the gain).
    schedule : CosineSchedule
        The schedule the model is trained and sampled with.

    Examples
    --------
    Untrained (zero gain), the model is the exact epsilon of a standard normal prior:

    >>> import torch
    >>> from dasim.diffusion.networks import MLPEpsNet
    >>> from dasim.diffusion.schedules import CosineSchedule
    >>> schedule = CosineSchedule()
    >>> skip = GaussianSkip(MLPEpsNet(4, width=8, depth=1), 4, schedule)
    >>> w, t = torch.randn(3, 4), torch.rand(3)
    >>> alpha, sigma = schedule(t)
    >>> torch.allclose(skip(w, t), (sigma / (alpha**2 + sigma**2))[:, None] * w)
    True
    """

    def __init__(self, inner: torch.nn.Module, features: int, schedule):
        super().__init__()
        self.inner = inner
        self.schedule = schedule
        self.gain = torch.nn.Parameter(torch.zeros(int(features)))

    def forward(self, w: torch.Tensor, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=w.dtype, device=w.device)
        _, sigma = self.schedule(t)
        if sigma.ndim == 1:
            sigma = sigma[:, None]
        return sigma * w / (1 + self.schedule.eta**2) + self.gain * self.inner(w, t)

    forward.__doc__ = _EPS_FORWARD_DOC.format(x="w", shape="(N, features)", n="N")
