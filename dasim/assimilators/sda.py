r"""Score-based data assimilation (SDA, Rozet and Louppe 2023) as an estimator."""

from __future__ import annotations

from ._base import WindowedAssimilator, _check_float

__all__ = ["SDAAssimilator"]


class SDAAssimilator(WindowedAssimilator):
    r"""Score-based data assimilation over trajectory windows.

    ``fit`` trains a local score network on windows of :math:`2k+1` states of the
    normalised training trajectories (SDA's "pseudo-Markov blanket"); ``assimilate``
    composes it into a score of the whole observation window and samples the smoothing
    posterior with a predictor-corrector sampler and the Gaussian likelihood-score
    approximation

    .. math::

        \tilde p(y \mid z_t) = \mathcal{N}\Big(y \,\Big|\, h\big(\hat z(z_t)\,s + m\big),\,
        \operatorname{diag}(\mathrm{std}^2) + \gamma\, \frac{\sigma_t^2}{\mu_t^2} I\Big),
        \qquad \hat z(z_t) = \frac{z_t - \sigma_t\, \varepsilon_\phi(z_t, t)}{\mu_t},

    differentiated through the Tweedie denoiser (identity term included) and through any
    differentiable observation operator ``h``. The network sees normalised states
    :math:`z = (x - m)/s` (``mean_``, ``scale_``); ``h`` always acts on physical states
    :math:`x = z s + m`, and ``y`` and its noise are in observation units. NaN entries of
    ``y`` are left out of the likelihood.

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
        Likelihood variance inflation :math:`\gamma \ge 0`. It is added to the
        observation variance ``std**2`` (observation units squared) times
        :math:`\sigma_t^2/\mu_t^2`, a variance of the *normalised* state, so it carries
        the units (observation unit / normalised-state unit)^2: for an identity
        observation of component ``j``, :math:`\gamma \approx s_j^2` (``scale_**2``)
        makes it the Tweedie denoiser's error variance in physical units. Larger values
        weaken the guidance early in the reverse process, where :math:`\hat z` is poor.
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

    Attributes
    ----------
    score_net_ : LocalScoreNet
        The trained network (on ``device_``).
    mean_, scale_ : ndarray of shape (n_state,)
        Training mean and standard deviation used to normalise states.
    history_ : dict
        Training history (see :func:`dasim.diffusion.training.train_eps_model`).
    observation_ : ObservationModel
        The resolved observation model.
    n_obs_ : int
        Width of the observations.
    device_ : str
        The torch device used.
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
    ):
        self.observation = observation
        self.n_members = n_members
        self.window = window
        self.n_epochs = n_epochs
        self.gamma = gamma
        self.n_steps = n_steps
        self.n_corrections = n_corrections
        self.tau = tau
        self.step_size = step_size
        self.device = device
        self.random_state = random_state
        self.width = width
        self.depth = depth
        self.kernel = kernel
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.epoch_size = epoch_size
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.gaussian_skip = gaussian_skip
        self.detach = detach
        self.progress = progress

    def _check_extra_params(self):
        _check_float(self.gamma, "gamma", strict=False)
        if not isinstance(self.detach, bool):
            raise ValueError(f"detach must be a bool, got {self.detach!r}.")

    def _guidance(self, y, net, schedule, torch, **kwargs):
        from ..diffusion.guidance import GaussianGuidance

        dev, dtype = self.device_, torch.float32
        mean = torch.as_tensor(self.mean_, dtype=dtype, device=dev)
        scale = torch.as_tensor(self.scale_, dtype=dtype, device=dev)
        observations = self.observations_

        def A(z):
            x = z * scale + mean
            outs = [o.apply(x) for o in observations]
            return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)

        y_t = torch.as_tensor(y, dtype=dtype, device=dev)
        std = torch.as_tensor(self.obs_std_, dtype=dtype, device=dev)
        guidance = GaussianGuidance(
            net, y_t, A, std, schedule, gamma=float(self.gamma), detach=bool(self.detach)
        )
        return guidance, None, True
