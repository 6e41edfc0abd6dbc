r"""Likelihood guidance for diffusion posteriors: SDA and SOAD (torch).

A guidance object wraps a prior epsilon-model :math:`\varepsilon(x_t, t)` and is itself an
epsilon-model for the posterior :math:`p(x \mid y)`: since
:math:`\varepsilon = -\sigma_t \nabla \log p_t`,

.. math::

    \varepsilon_\text{post}(x_t, t) = \varepsilon(x_t, t)
    - \sigma_t \nabla_{x_t} \log \tilde{p}(y \mid x_t),

with an approximation :math:`\tilde{p}(y \mid x_t)` of the intractable likelihood of the
noisy state. Any guidance works with any sampler
(:class:`~dasim.diffusion.sampling.PredictorCorrector`).

* :class:`GaussianGuidance` (SDA): :math:`\tilde{p}(y \mid x_t) = \mathcal{N}\big(y \mid
  A(\hat{x}), \Sigma_y + \gamma (\sigma_t/\mu_t)^2 I\big)` for any differentiable ``A``.
* :class:`AugmentedGuidance` (SOAD): linear subsampling observations of the augmented state
  :math:`z = [x, h(x)]`, with the scalar-prior posterior variance
  :math:`v_t = \sigma_x^2 r_t^2 / (\sigma_x^2 + r_t^2)` and a sup-norm clip.
* :class:`ForwardDiffusionCorrector` (SOAD): a sampler ``post_step`` hook that replaces the
  observed components by a draw from the law of the forward-diffused observations.

Observations for the SOAD pieces are a list of triples ``(y_j, S_j, std_j)``:

* ``S_j`` selects entries of the augmented trajectory :math:`z \in \mathbb{R}^{L \times
  D_z}` (the event shape, without the batch): a boolean mask of shape ``(L, D_z)``, or a
  tuple of integer index tensors, one per event dimension (``(time_idx, feature_idx)``);
* ``y_j`` holds the observed values at the selected entries: shape ``(n_j,)`` (the same for
  every sample) or ``(B, n_j)`` (one observation per sample), ordered as
  ``z[b][S_j]`` (row-major order of a boolean mask, or the order of the index tensors);
* ``std_j`` is the observation noise standard deviation, a positive scalar or an
  ``(n_j,)`` tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from dasim.diffusion._linear_observations import (
    _as_float_tensor,
    _check_std,
    _LinearObservations,
)
from dasim.diffusion.denoising import broadcast_time, tweedie

__all__ = [
    "AugmentedGuidance",
    "ForwardDiffusionCorrector",
    "GaussianGuidance",
    "augmented_log_likelihood",
]


def _snr_terms(schedule, t, z: torch.Tensor, sigma_x: float):
    """``mu, sigma, r^2, v_t`` broadcast against ``z``."""
    mu, sigma = schedule(broadcast_time(t, z))
    r2 = (sigma / mu) ** 2
    v = sigma_x**2 * r2 / (sigma_x**2 + r2)
    return mu, sigma, r2, v


def _check_sigma_x(sigma_x) -> float:
    sigma_x = float(sigma_x)
    if not (sigma_x > 0 and math.isfinite(sigma_x)):
        raise ValueError(f"sigma_x must be positive and finite, got {sigma_x!r}")
    return sigma_x


class GaussianGuidance:
    r"""SDA posterior epsilon-model with the Gaussian likelihood-score approximation.

    With :math:`\mu = \mu(t)`, :math:`\sigma = \sigma(t)` and the Tweedie denoiser
    :math:`\hat{x}(x_t) = (x_t - \sigma \varepsilon(x_t, t)) / \mu`,

    .. math::

        \log \tilde{p}(y \mid x_t) = -\frac{1}{2} \sum_{j \text{ observed}}
        \frac{\big(y_j - A(\hat{x})_j\big)^2}{\mathrm{std}_j^2 + \gamma\, \sigma^2/\mu^2},
        \qquad
        \varepsilon_\text{post} = \varepsilon - \sigma\, \nabla_{x_t} \log \tilde{p}(y \mid x_t).

    The gradient is one backward pass through ``A`` and the denoiser,
    :math:`\partial \hat{x} / \partial x_t = (I - \sigma\, \partial\varepsilon/\partial x_t)
    / \mu`, identity term included. With ``detach=True`` the network is evaluated outside
    the graph so that :math:`\partial \hat{x} / \partial x_t = I/\mu` (cheaper, cruder).
    The inflation :math:`\gamma (\sigma/\mu)^2` stands in for :math:`A \operatorname{Cov}[x
    \mid x_t] A^\top`; the approximation becomes exact as :math:`t \to 0`.

    Parameters
    ----------
    eps_model : callable
        Prior epsilon-model ``eps_model(x, t)`` on ``(B, L, D)`` tensors.
    y : array_like
        Observations, shaped like (or broadcastable to) ``A(x)``; ``NaN`` marks unobserved
        entries, which are left out of the likelihood.
    A : callable
        Differentiable observation operator on ``(B, L, D)`` tensors (e.g.
        ``lambda x: x[:, ::4, :1]``).
    std : float or array_like
        Observation noise standard deviation, positive, broadcastable to ``y``.
    schedule : callable
        ``schedule(t) -> (mu, sigma)``.
    gamma : float, default=1e-2
        Variance inflation factor :math:`\gamma \ge 0`, in (units of ``y`` / units of
        ``x``)^2: it turns the state-space variance :math:`\sigma^2/\mu^2` into an
        observation-space one (:math:`\gamma = 1` for an identity ``A`` on states and
        observations in the same units).
    detach : bool, default=False
        Do not differentiate through the network.

    Examples
    --------
    >>> import torch
    >>> from dasim.diffusion.schedules import CosineSchedule
    >>> prior = lambda x, t: 0.1 * x
    >>> y = torch.tensor([[0.5], [float("nan")]])
    >>> post = GaussianGuidance(prior, y, lambda x: x[:, ::2], 0.1, CosineSchedule())
    >>> post(torch.zeros(3, 4, 1), torch.tensor(0.5)).shape
    torch.Size([3, 4, 1])
    """

    def __init__(
        self,
        eps_model: Callable,
        y,
        A: Callable,
        std,
        schedule,
        gamma: float = 1e-2,
        detach: bool = False,
    ):
        if not callable(eps_model):
            raise ValueError("eps_model must be callable")
        if not callable(A):
            raise ValueError("A must be a callable observation operator")
        y = _as_float_tensor(y)
        if torch.isinf(y).any():
            raise ValueError("y must not contain inf (use NaN for unobserved entries)")
        if torch.isnan(y).all():
            raise ValueError("y has no observed (non-NaN) entry")
        self.std = _check_std(std, "std")
        try:
            torch.broadcast_shapes(self.std.shape, y.shape)
        except RuntimeError as err:
            raise ValueError(
                f"std of shape {tuple(self.std.shape)} does not broadcast to y of shape "
                f"{tuple(y.shape)}"
            ) from err
        gamma = float(gamma)
        if not (gamma >= 0 and math.isfinite(gamma)):
            raise ValueError(f"gamma must be a non-negative finite float, got {gamma!r}")
        self.eps_model = eps_model
        self.y = y
        self.A = A
        self.schedule = schedule
        self.gamma = gamma
        self.detach = bool(detach)

    def _log_likelihood(self, x, t, eps):
        x_hat = tweedie(x, eps, *self.schedule(broadcast_time(t, x)))
        pred = self.A(x_hat)
        y = self.y.to(device=pred.device, dtype=pred.dtype)
        try:
            shape = torch.broadcast_shapes(y.shape, pred.shape)
        except RuntimeError:
            shape = None
        if shape != pred.shape:
            raise ValueError(
                f"y of shape {tuple(y.shape)} does not match A(x) of shape {tuple(pred.shape)}"
            )
        observed = ~torch.isnan(y)
        mu_p, sigma_p = self.schedule(broadcast_time(t, pred))
        var = self.std.to(device=pred.device, dtype=pred.dtype) ** 2
        var = var + self.gamma * (sigma_p / mu_p) ** 2
        res = torch.where(observed, torch.nan_to_num(y) - pred, torch.zeros_like(pred))
        sq = torch.broadcast_to(res**2 / var, pred.shape).reshape(pred.shape[0], -1)
        return -0.5 * sq.sum(dim=-1)

    def log_likelihood(self, x: torch.Tensor, t) -> torch.Tensor:
        r"""Compute the per-sample :math:`\log \tilde{p}(y \mid x_t)` up to a constant.

        Differentiable with respect to ``x`` (through the network unless ``detach``).

        Parameters
        ----------
        x : torch.Tensor
            Noisy states :math:`x_t`, shape ``(B, L, D)``.
        t : float or torch.Tensor
            Diffusion time, a scalar or a ``(B,)`` tensor.

        Returns
        -------
        torch.Tensor
            The log-likelihoods, shape ``(B,)``.
        """
        if self.detach:
            with torch.no_grad():
                eps = self.eps_model(x, t)
        else:
            eps = self.eps_model(x, t)
        return self._log_likelihood(x, t, eps)

    def __call__(self, x: torch.Tensor, t) -> torch.Tensor:
        r"""Posterior noise prediction :math:`\varepsilon_\text{post}(x, t)` (detached)."""
        _, sigma = self.schedule(broadcast_time(t, x))
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            if self.detach:
                with torch.no_grad():
                    eps = self.eps_model(x, t)
            else:
                eps = self.eps_model(x, t)
            log_p = self._log_likelihood(x, t, eps).sum()
            (grad,) = torch.autograd.grad(log_p, x)
        return (eps - sigma * grad).detach()

    def __repr__(self) -> str:
        return f"GaussianGuidance(gamma={self.gamma}, detach={self.detach})"


def augmented_log_likelihood(
    z_t: torch.Tensor, t, eps_model: Callable, observations, schedule, sigma_x: float = 1.0
) -> torch.Tensor:
    r"""Compute SOAD's Gaussian approximation of :math:`\log p(y \mid z_t)`.

    The observations are linear subsampling ones.

    With :math:`r_t = \sigma_t / \mu_t`, the Tweedie denoiser
    :math:`\hat{z}_0 = (z_t - \sigma_t \varepsilon(z_t, t)) / \mu_t` and the posterior variance
    of a scalar :math:`\mathcal{N}(\cdot, \sigma_x^2)` prior observed through
    :math:`z_t / \mu_t = z_0 + r_t n`, :math:`v_t = \sigma_x^2 r_t^2 / (\sigma_x^2 + r_t^2)`,

    .. math::

        \log p(y \mid z_t) \approx \sum_j \sum_{i \in S_j}
        \Big[-\frac{(y_{j,i} - \hat{z}_{0,i})^2}{2 (\mathrm{std}_{j,i}^2 + v_t)}
        - \frac{1}{2}\log\big(2\pi (\mathrm{std}_{j,i}^2 + v_t)\big)\Big].

    Its gradient is what :class:`AugmentedGuidance` applies:
    :math:`\Delta = -\sigma_t^2 \nabla_{z_t} \log p(y \mid z_t)` (unclipped).

    Parameters
    ----------
    z_t : torch.Tensor
        Noisy augmented trajectories, shape ``(B, L, D_z)``.
    t : float or torch.Tensor
        Diffusion time, scalar or ``(B,)``.
    eps_model : callable
        Prior epsilon-model on ``z``.
    observations : list of (y, S, std)
        Linear subsampling observations (module docstring).
    schedule : callable
        ``schedule(t) -> (mu, sigma)``.
    sigma_x : float, default=1.0
        Prior scale :math:`\sigma_x` of the normalised state.

    Returns
    -------
    torch.Tensor
        Shape ``(B,)``, differentiable with respect to ``z_t``.

    Examples
    --------
    >>> import torch
    >>> from dasim.diffusion.guidance import augmented_log_likelihood
    >>> from dasim.diffusion.schedules import CosineSchedule
    >>> selector = (torch.tensor([0, 2]), torch.tensor([0, 0]))  # (time, feature) indices
    >>> observations = [(torch.tensor([0.5, -0.5]), selector, 0.1)]
    >>> prior = lambda z, t: 0.1 * z
    >>> z_t = torch.zeros(3, 4, 2)
    >>> augmented_log_likelihood(z_t, 0.5, prior, observations, CosineSchedule()).shape
    torch.Size([3])
    """
    sigma_x = _check_sigma_x(sigma_x)
    dense = _LinearObservations(observations).dense(z_t)
    mu, sigma = schedule(broadcast_time(t, z_t))
    v = 1 / (1 / sigma_x**2 + (mu / sigma) ** 2)  # posterior variance of z_0 given z_t/mu
    z_hat = tweedie(z_t, eps_model(z_t, t), mu, sigma)
    total = torch.zeros(z_t.shape[0], dtype=z_t.dtype, device=z_t.device)
    for y, mask, std in dense:
        var = std**2 + v
        term = -0.5 * (y - z_hat) ** 2 / var - 0.5 * torch.log(2 * math.pi * var)
        term = torch.where(mask, term, torch.zeros_like(term))
        total = total + term.reshape(z_t.shape[0], -1).sum(dim=1)
    return total


class AugmentedGuidance:
    r"""SOAD posterior epsilon-model for linear subsampling observations of :math:`z`.

    With :math:`r_t = \sigma_t/\mu_t`, :math:`v_t = \sigma_x^2 r_t^2/(\sigma_x^2 + r_t^2)` and
    :math:`c_{t,j} = (r_t^2/2) / (\mathrm{std}_j^2 + v_t)` (elementwise), the increment to
    :math:`\sigma_t \varepsilon` is

    .. math::

        \Delta = \nabla_{z_t} \sum_j \sum_{i \in S_j} c_{t,j,i}
        \big(\mu_t y_{j,i} - z_{t,i} + \sigma_t \varepsilon(z_t, t)_i\big)^2
        = -\sigma_t^2 \nabla_{z_t} \log p(y \mid z_t),

    (see :func:`augmented_log_likelihood`), the gradient flowing through :math:`z_t`
    directly and through the network. The clip keeps :math:`\|\Delta\|_\infty \le 1`,
    :math:`\Delta \leftarrow \Delta \min(1, 1/\max|\Delta|)`, which for a single noise
    level is SOAD's :math:`c_t \leftarrow \min(c_t, 1/\max|g|)`. Then

    .. math::

        \varepsilon_\text{post}(z_t, t) = \varepsilon(z_t, t) + \Delta / \sigma_t.

    Parameters
    ----------
    eps_model : callable
        Prior epsilon-model on augmented trajectories ``(B, L, D_z)``.
    observations : list of (y, S, std)
        Linear subsampling observations (see the module docstring).
    schedule : callable
        ``schedule(t) -> (mu, sigma)``.
    sigma_x : float, default=1.0
        Prior scale of the (normalised) state.
    clip : {"batch", "sample", None}, default="batch"
        ``"batch"``: one max over the whole batch, as in the SOAD code (couples samples);
        ``"sample"``: one max per sample (samples stay independent); ``None``: no clip.

    Examples
    --------
    >>> import torch
    >>> from dasim.diffusion.guidance import AugmentedGuidance
    >>> from dasim.diffusion.schedules import CosineSchedule
    >>> mask = torch.zeros(4, 2, dtype=torch.bool)  # observe feature 0 at times 0 and 2
    >>> mask[[0, 2], 0] = True
    >>> post = AugmentedGuidance(
    ...     lambda z, t: 0.1 * z, [(torch.tensor([0.5, -0.5]), mask, 0.1)], CosineSchedule()
    ... )
    >>> post(torch.zeros(3, 4, 2), torch.tensor(0.5)).shape
    torch.Size([3, 4, 2])
    """

    def __init__(
        self,
        eps_model: Callable,
        observations,
        schedule,
        sigma_x: float = 1.0,
        clip: str | None = "batch",
    ):
        if not callable(eps_model):
            raise ValueError("eps_model must be callable")
        if clip not in ("batch", "sample", None):
            raise ValueError(f"clip must be 'batch', 'sample' or None, got {clip!r}")
        self.eps_model = eps_model
        self.observations = _LinearObservations(observations)
        self.schedule = schedule
        self.sigma_x = _check_sigma_x(sigma_x)
        self.clip = clip

    def increment(self, z: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Return the (clipped) increment :math:`\Delta` and :math:`\varepsilon(z, t)`.

        Parameters
        ----------
        z : torch.Tensor
            Noisy augmented trajectories :math:`z_t`, shape ``(B, L, D_z)``.
        t : float or torch.Tensor
            Diffusion time, a scalar or a ``(B,)`` tensor.

        Returns
        -------
        delta : torch.Tensor
            The increment :math:`\Delta` (clipped as set by ``clip``), detached, shaped
            like ``z``.
        eps : torch.Tensor
            The prior noise prediction :math:`\varepsilon(z, t)`, detached, shaped like
            ``z``.
        """
        dense = self.observations.dense(z)  # validates before any network evaluation
        mu, sigma, r2, v = _snr_terms(self.schedule, t, z, self.sigma_x)
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            eps = self.eps_model(z, t)
            total = z.new_zeros(())
            for y, mask, std in dense:
                c = 0.5 * r2 / (std**2 + v)
                res = mu * y - z + sigma * eps
                res = torch.where(mask, res, torch.zeros_like(res))
                total = total + (c * res**2).sum()
            (delta,) = torch.autograd.grad(total, z)
        if self.clip == "batch":
            delta = delta * torch.clamp(1 / delta.abs().max(), max=1.0)
        elif self.clip == "sample":
            peak = delta.abs().reshape(delta.shape[0], -1).amax(dim=1)
            delta = delta * broadcast_time(torch.clamp(1 / peak, max=1.0), delta)
        return delta.detach(), eps.detach()

    def __call__(self, z: torch.Tensor, t) -> torch.Tensor:
        r"""Posterior noise prediction :math:`\varepsilon + \Delta/\sigma_t` (detached)."""
        _, sigma = self.schedule(broadcast_time(t, z))
        delta, eps = self.increment(z, t)
        return eps + delta / sigma

    def __repr__(self) -> str:
        return f"AugmentedGuidance(sigma_x={self.sigma_x}, clip={self.clip!r})"


class ForwardDiffusionCorrector:
    r"""SOAD's forward-diffusion corrector, a sampler ``post_step`` hook.

    At time :math:`s` with :math:`r = \sigma_s/\mu_s`, every observed entry whose noise level
    satisfies :math:`r > \mathrm{std}` is replaced (out of place) by

    .. math::

        (S_j z)_i \leftarrow \mu_s \big(y_{j,i} + \sqrt{r^2 - \mathrm{std}_{j,i}^2}\,
        \xi_i\big), \qquad \xi \sim \mathcal{N}(0, I) \text{ fresh at each call}.

    Since :math:`y = S z_0 + \mathrm{std}\, n`, the result is
    :math:`\mu_s S z_0 + \sigma_s n'`: exactly the law of the forward-diffused observed
    components :math:`S z_s \mid z_0`. Once :math:`r \le \mathrm{std}` the entry is left
    to the likelihood guidance. A background :math:`(x_b, S_b, \sigma_b)` is handled the
    same way (it is used here only, not in the likelihood).

    Parameters
    ----------
    observations : list of (y, S, std)
        Linear subsampling observations (see the module docstring).
    schedule : callable
        ``schedule(t) -> (mu, sigma)``.
    background : tuple (x_b, S_b, sigma_b), optional
        Background values, the entries they cover (mask or index tensors) and their
        standard deviation, in the same format as one observation.

    Examples
    --------
    >>> import torch
    >>> from dasim.diffusion.guidance import ForwardDiffusionCorrector
    >>> from dasim.diffusion.schedules import CosineSchedule
    >>> mask = torch.zeros(4, 2, dtype=torch.bool)
    >>> mask[::2, 0] = True
    >>> observations = [(torch.tensor([0.5, -0.5]), mask, 0.1)]
    >>> corrector = ForwardDiffusionCorrector(observations, CosineSchedule())
    >>> z = corrector(torch.zeros(3, 4, 2), torch.tensor(0.5), torch.Generator().manual_seed(0))
    >>> bool((z[:, mask] != 0).all()), bool((z[:, ~mask] == 0).all())
    (True, True)
    """

    def __init__(self, observations, schedule, background=None):
        self.observations = _LinearObservations(observations)
        self.background = None
        if background is not None:
            self.background = _LinearObservations([background], name="background")
        self.schedule = schedule

    def __call__(
        self, z: torch.Tensor, s, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Return a copy of ``z`` with the observed (and background) entries re-drawn."""
        mu, sigma = self.schedule(broadcast_time(s, z))
        r = sigma / mu
        sets = list(self.observations.dense(z))
        if self.background is not None:
            sets += self.background.dense(z)
        for y, mask, std in sets:
            active = mask & (r > std)
            if not bool(active.any()):
                continue
            xi = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
            scale = torch.sqrt(torch.clamp(r**2 - std**2, min=0.0))
            z = torch.where(active, mu * (y + scale * xi), z)
        return z

    def __repr__(self) -> str:
        return f"ForwardDiffusionCorrector(background={self.background is not None})"
