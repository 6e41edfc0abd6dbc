r"""Score-based data assimilation (SDA, Rozet and Louppe 2023) as an estimator."""

from __future__ import annotations

import numpy as np

from .._inputs import store_params
from .._torch import import_torch
from ._base import WindowedAssimilator
from ._inputs import _check_float

__all__ = ["SDAAssimilator"]

#: Values of ``gamma_units``: dimensionless (``gamma`` on standardised observations), or
#: SDA's own convention (``gamma`` in the squared units of ``y``).
_GAMMA_UNITS = ("standardised", "observation")


def _check_gamma_units(gamma_units):
    """Return ``gamma_units`` if it is one of ``_GAMMA_UNITS``, else raise a ValueError."""
    if not (isinstance(gamma_units, str) and gamma_units in _GAMMA_UNITS):
        raise ValueError(
            f"gamma_units must be one of {', '.join(map(repr, _GAMMA_UNITS))}, got "
            f"{gamma_units!r}."
        )
    return gamma_units


class SDAAssimilator(WindowedAssimilator):
    r"""Score-based data assimilation over trajectory windows.

    ``fit`` trains a local score network on windows of :math:`2k+1` states of the
    normalised training trajectories (SDA's "pseudo-Markov blanket"); ``assimilate``
    composes it into a score of the whole observation window and samples the smoothing
    posterior with a predictor-corrector sampler and the Gaussian likelihood-score
    approximation

    .. math::

        \tilde p(y \mid z_t) = \mathcal{N}\Big(y \,\Big|\, h\big(m + s\,\hat z(z_t)\big),\,
        \operatorname{diag}\big(\mathrm{std}^2 + \gamma\, c^2\, \sigma_t^2/\mu_t^2\big)\Big),
        \qquad \hat z(z_t) = \frac{z_t - \sigma_t\, \varepsilon_\phi(z_t, t)}{\mu_t},

    differentiated through the Tweedie denoiser (identity term included) and through any
    differentiable observation operator ``h``. Everything outside the network is in
    physical units: the network sees standardised states :math:`z = (x - m)/s` (``mean_``,
    ``scale_``, learned by ``fit``), ``h`` acts on physical states :math:`x = m + s z`,
    ``y`` and the noise ``std`` are in the units of ``h``, and the samples come back in
    physical units. :math:`c` (``obs_scale_``) is the standard deviation of ``h`` over the
    training states, so the results do not depend on the units of ``x`` or ``y``
    (``gamma_units="standardised"``; with ``gamma_units="observation"``, :math:`c = 1`:
    SDA's own convention, see ``gamma``). NaN entries of ``y`` are left out of the
    likelihood.

    Parameters
    ----------
    observation : ObservationModel or None, default=None
        Observation operator and (diagonal) noise, on physical states. ``None``: the
        identity on the first ``y.shape[1]`` components (all when ``y`` is not given to
        ``fit``), with its noise learned from ``y - X`` in ``fit``, or, without ``y``, the
        standard deviation of each training component (a weak, climatological default).
    n_members : int, default=64
        Number of posterior samples drawn by :meth:`assimilate`.
    window : int, default=2
        Window order :math:`k`: the network sees :math:`2k+1` consecutive states.
    n_epochs : int, default=100
        Training epochs; an epoch draws ``epoch_size`` random windows.
    gamma : float, default=1e-2
        Likelihood variance inflation :math:`\gamma \ge 0`: the term
        :math:`\gamma\, c^2 \sigma_t^2/\mu_t^2` added to the noise variance, where
        :math:`\sigma_t^2/\mu_t^2` is the Tweedie denoiser's error variance on standardised
        states. With the default ``gamma_units="standardised"``, :math:`c` is
        ``obs_scale_`` (the observations' training standard deviation) and :math:`\gamma`
        is dimensionless: SDA's :math:`\gamma` on standardised states and observations,
        whatever their physical units. With ``gamma_units="observation"``, :math:`c = 1`
        and :math:`\gamma` is in the squared units of ``y``, as in SDA's paper and code.
        Larger values weaken the guidance early in the reverse process, where
        :math:`\hat z` is poor.
    n_steps : int, default=64
        Predictor steps of the sampler.
    n_corrections : int, default=1
        Langevin corrections after each predictor step (score re-evaluated each time).
    tau : float, default=0.25
        Langevin step-size factor.
    device : {"auto"} or str, default="auto"
        Torch device; ``"auto"`` is CUDA when available, else CPU (resolved in ``fit`` to
        ``device_``).
    random_state : int, RandomState or None, default=None
        Seed of the network initialisation, training and sampling.
    gamma_units : {"standardised", "observation"}, default="standardised"
        The units of ``gamma``. ``"standardised"``: dimensionless (:math:`c` =
        ``obs_scale_``), so that a value carries over between problems whatever the units
        of ``y``. ``"observation"``: the convention of Rozet and Louppe (2023) and their
        code (:math:`c = 1`), the squared units of ``y``; it agrees with
        ``"standardised"`` where the observations have unit variance over the training
        states, as the paper's identity observations of normalised Lorenz-63 states do.
        The two are one likelihood: ``"observation"`` with ``gamma=g`` is
        ``"standardised"`` with :math:`\gamma = g / c_j^2` on observation component
        :math:`j`. Use ``"observation"`` to rerun a configuration published with SDA's
        :math:`\gamma` on observations that are not standardised (benchmark B3 does).
    width, depth : int, default=128, 3
        Size of the kernel network.
    kernel : {"mlp", "conv"}, default="mlp"
        ``"mlp"`` on flattened windows, or ``"conv"``: a circular convolution over the state
        components (spatially extended, periodic states such as Lorenz-96).
    batch_size : int, default=256
        Training mini-batch size.
    learning_rate : float, default=1e-3
        AdamW learning rate (decayed linearly to zero).
    weight_decay : float, default=1e-3
        AdamW weight decay.
    epoch_size : int or None, default=None
        Windows per epoch; default ``n_trajectories * (n_times // (2k + 1))``.
    validation_fraction : float, default=0.1
        Held-out fraction (whole trajectories, or the end of a single one); the weights of
        the best validation epoch are kept. A single trajectory too short to spare a window
        trains without validation.
    patience : int or None, default=None
        Early stopping after this many epochs without improvement.
    gaussian_skip : bool, default=True
        Parametrise the kernel as the exact epsilon of a standard normal prior plus a
        learned correction whose gain starts at zero (a reparametrisation, same loss and
        sampler; it keeps undertrained networks from blowing up through the sampler's
        ``1/mu`` amplification). ``False``: SDA's plain network.
    detach : bool, default=False
        Do not differentiate the likelihood through the network (cheaper, cruder).
    progress : bool, default=True
        Show tqdm progress bars while training.
    step_size : {"sample", "batch"}, default="sample"
        Langevin step computed per sample (SDA's rule; widens the posterior on small
        problems) or shared by the batch (see
        :class:`~dasim.diffusion.sampling.PredictorCorrector`).
    n_threads : int or None, default=None
        Torch CPU threads while training and sampling (``torch.set_num_threads`` inside
        ``fit``, ``sample``, ``assimilate`` and ``score``; the previous count is restored
        afterwards). ``None``: half the physical cores, at least 1 and at most 4. These
        networks are small, so extra threads gain little, and threads competing for busy
        cores lose a lot: on a loaded 2-core machine, torch's default of one thread per
        core trained 17 times slower than one thread. Results do not depend on it beyond
        floating-point round-off.

    Attributes
    ----------
    score_net_ : LocalScoreNet
        The trained network (on ``device_``).
    mean_, scale_ : ndarray of shape (n_state,)
        Training mean and standard deviation used to standardise states.
    obs_mean_, obs_scale_ : ndarray of shape ``(n_obs_,)``
        Mean and standard deviation of ``h`` over the training states: the observations'
        units for ``gamma`` and for the units check. :meth:`assimilate` warns
        (:class:`~dasim.exceptions.UnitsWarning`) when the observed values of a column of
        ``y`` lie more than 3 standard deviations (``obs_scale_`` and the noise combined,
        root mean square) from ``obs_mean_`` and most of them outside the range of ``h``
        over the training states: ``y`` is then probably in other units than the training
        states.
    n_threads_ : int
        The torch thread count used by ``fit``.
    history_ : dict
        Training history (see :func:`dasim.diffusion.training.train_eps_model`).
    observation_ : ObservationModel
        The resolved observation model.
    n_obs_ : int
        Width of the observations.
    device_ : str
        The torch device used.
    training_seed_ : int
        The seed ``fit`` initialised and trained the network with (recorded as
        ``training_seed`` in the ``attrs`` of every result).
    n_features_in_ : int
        Number of state components.

    See Also
    --------
    SOADAssimilator : Learns the score of the augmented state ``[x, h(x)]`` instead.

    Notes
    -----
    Training draws random windows and is vectorised over them; sampling is vectorised over
    the ``n_members`` samples and all windows of the trajectory. The sampler's per-sample
    Langevin step can widen the posterior on small problems (see
    :class:`dasim.diffusion.sampling.PredictorCorrector`); ``n_corrections=0`` removes it.

    References
    ----------
    .. [1] F. Rozet and G. Louppe, "Score-based data assimilation", NeurIPS 2023.

    Examples
    --------
    >>> import numpy as np
    >>> from dasim.assimilators import SDAAssimilator
    >>> from dasim.observations import ObservationModel
    >>> X = np.cumsum(np.random.default_rng(0).normal(size=(200, 2)), axis=0)
    >>> obs = ObservationModel("identity", noise_std=0.5, indices=[0])
    >>> sda = SDAAssimilator(obs, n_members=4, n_epochs=2, width=16, n_steps=8,
    ...                      progress=False, random_state=0).fit(X)
    >>> y = obs.simulate(X[:9], random_state=0)
    >>> sda.assimilate(y)["analysis"].shape
    (9, 4, 2)
    """

    #: Guidance differentiates the observation operator (torch tensors go through it).
    _differentiates_observation = True

    def __init__(
        self,
        observation=None,
        n_members=64,
        window=2,
        n_epochs=100,
        gamma=1e-2,
        n_steps=64,
        n_corrections=1,
        tau=0.25,
        device="auto",
        random_state=None,
        *,
        gamma_units="standardised",
        width=128,
        depth=3,
        kernel="mlp",
        batch_size=256,
        learning_rate=1e-3,
        weight_decay=1e-3,
        epoch_size=None,
        validation_fraction=0.1,
        patience=None,
        gaussian_skip=True,
        detach=False,
        progress=True,
        step_size="sample",
        n_threads=None,
    ):
        store_params(self, locals())

    def _check_extra_params(self):
        _check_float(self.gamma, "gamma", strict=False)
        _check_gamma_units(self.gamma_units)
        if not isinstance(self.detach, bool):
            raise ValueError(f"detach must be a bool, got {self.detach!r}.")

    def _resolve_observation(self, X, y):
        super()._resolve_observation(X, y)
        self._check_differentiable(X)

    def _check_differentiable(self, X):
        """Probe each callable operator once with a torch tensor that requires grad.

        SDA's guidance differentiates ``h`` with torch autograd, so a callable written with
        numpy fails deep inside the sampler; this says so in ``fit``, before training.
        """
        callables = [o for o in self.observations_ if callable(o.operator)]
        if not callables:
            return
        torch = import_torch(type(self).__name__)
        n_state = X.shape[-1]
        probe = np.resize(X.reshape(-1, n_state), (6, n_state)).reshape(2, 3, n_state)
        for obs in callables:
            op = obs.operator
            name = getattr(op, "__qualname__", None) or type(op).__name__
            x = torch.as_tensor(probe, dtype=torch.float32, device=self.device_)
            x.requires_grad_(True)
            try:
                out = obs.apply(x)
                if not isinstance(out, torch.Tensor):
                    raise TypeError(f"it returned a {type(out).__name__}, not a torch tensor")
                if tuple(out.shape[:-1]) != tuple(x.shape[:-1]):
                    raise TypeError(
                        f"it returned shape {tuple(out.shape)}, expected "
                        f"({', '.join(map(str, x.shape[:-1]))}, n_obs)"
                    )
                torch.autograd.grad(out.sum(), x)
            except Exception as exc:
                raise TypeError(
                    f"{type(self).__name__} differentiates the observation operator: its "
                    "guidance needs the gradient of h(x) through torch autograd, so a callable "
                    "operator must accept a torch tensor of shape (n_members, n_times, "
                    "n_selected) and compute with torch operations (torch.sin, not np.sin). "
                    f"The callable observation operator (operator={name}) failed on a torch "
                    f"tensor of shape {tuple(x.shape)} (states of X) that requires grad: "
                    f"{type(exc).__name__}: {str(exc).rstrip('.')}. Rewrite it with torch "
                    "operations, or use SOADAssimilator (it learns h(x) alongside x and never "
                    "differentiates h) or a sequential filter (EnKF, SIRFilter, "
                    "KDEDiffusionFilter call h on numpy arrays only)."
                ) from exc

    def _guidance(self, y, net, schedule, torch, **kwargs):
        from ..diffusion.guidance import GaussianGuidance

        dev, dtype = self.device_, torch.float32
        mean = torch.as_tensor(self.mean_, dtype=dtype, device=dev)
        scale = torch.as_tensor(self.scale_, dtype=dtype, device=dev)
        obs_mean = torch.as_tensor(self.obs_mean_, dtype=dtype, device=dev)
        obs_scale = torch.as_tensor(self.obs_scale_, dtype=dtype, device=dev)
        observations = self.observations_

        # "standardised": the likelihood in standardised observation units,
        # (y - obs_mean_) / obs_scale_: the same posterior as in physical units, with gamma
        # scaled by obs_scale_**2. "observation": SDA's own, in the units of y (obs_mean_ 0,
        # obs_scale_ 1), computed as SDA's code does, without the standardisation.
        standardised = _check_gamma_units(self.gamma_units) == "standardised"

        def A(z):
            x = z * scale + mean  # h acts on physical states
            outs = [o.apply(x) for o in observations]
            out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
            return (out - obs_mean) / obs_scale if standardised else out

        if standardised:
            y, obs_std = (y - self.obs_mean_) / self.obs_scale_, self.obs_std_ / self.obs_scale_
        else:
            obs_std = self.obs_std_
        y_t = torch.as_tensor(y, dtype=dtype, device=dev)
        std = torch.as_tensor(obs_std, dtype=dtype, device=dev)
        guidance = GaussianGuidance(
            net, y_t, A, std, schedule, gamma=float(self.gamma), detach=bool(self.detach)
        )
        return guidance, None, True
