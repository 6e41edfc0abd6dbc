r"""State-observation augmented diffusion (SOAD, Li, Dong, Zhang et al.) as an estimator."""

from __future__ import annotations

import numpy as np

from .._inputs import store_params
from .._validation import check_array_finite
from ._base import WindowedAssimilator
from ._inputs import _check_float

__all__ = ["SOADAssimilator"]


class SOADAssimilator(WindowedAssimilator):
    r"""State-observation augmented diffusion over trajectory windows.

    ``fit`` trains a local score network on the augmented trajectories
    :math:`z = [x, h_1(x), \dots, h_m(x)]` (noise-free operators, each channel normalised
    by its training mean and standard deviation). At assimilation time every observation is
    a *linear subsampling* of :math:`z`: the finite entries of ``y`` select the matching
    ``h`` channels at their times, so no operator is differentiated, however nonlinear or
    non-injective it is. The posterior is sampled with SOAD's guidance (Gaussian
    approximation with the scalar-prior variance :math:`v_t = \sigma_x^2 r_t^2 / (\sigma_x^2
    + r_t^2)`, :math:`r_t = \sigma_t/\mu_t`, and a sup-norm clip) and its forward-diffusion
    corrector, which re-draws the observed entries (and an optional background state of the
    first frame) from their forward-diffused law while :math:`r_t` exceeds their noise. The
    state part of :math:`z` is returned, in physical units.

    Everything outside the network is in physical units: ``h`` acts on physical states,
    ``y`` and its noise are in the units of ``h``; ``fit`` learns the mean and standard
    deviation of every channel of :math:`z` (``net_mean_``, ``net_scale_``) and the
    observations and their noise enter the likelihood and the corrector in the
    standardised units of their ``h`` channel, so the results do not depend on the units
    of ``x`` or ``y``.

    Parameters
    ----------
    observation : ObservationModel, list of ObservationModel, or None, default=None
        One or several observation models on physical states (multi-source: the columns of
        ``y`` are their outputs concatenated in order). Noise must be diagonal. ``None``:
        the identity on the first ``y.shape[1]`` components, noise learned from ``y - X``
        in ``fit`` (without ``y``: each component's training standard deviation).
    n_members : int, default=64
        Number of posterior samples drawn by :meth:`assimilate`.
    window : int, default=2
        Window order :math:`k` (windows of :math:`2k+1` states).
    n_epochs : int, default=100
        Training epochs.
    n_steps : int, default=64
        Predictor steps (the SOAD code used 256).
    n_corrections : int, default=1
        Langevin corrections per step (the SOAD code used 5).
    tau : float, default=0.25
        Langevin step-size factor.
    device : {"auto"} or str, default="auto"
        Torch device, resolved in ``fit`` to ``device_``.
    random_state : int, RandomState or None, default=None
        Seed of the initialisation, training and sampling.
    sigma_x : float, default=1.0
        Prior scale of the normalised augmented state in :math:`v_t`.
    clip : {"batch", "sample"} or None, default="batch"
        Sup-norm clip of the guidance increment: one maximum over the whole batch (the SOAD
        code; couples the samples), one per sample, or none.
    refresh_score_in_corrector : bool, default=False
        ``False`` reuses the score evaluated after each predictor in every correction (the
        SOAD code); ``True`` re-evaluates it (textbook Langevin, one more guided evaluation
        per correction).
    fdc : bool, default=True
        Apply the forward-diffusion corrector (set False for an ablation).
    width : int, default=128
        Hidden width of the window network.
    depth : int, default=3
        Number of residual blocks.
    kernel : {"mlp", "conv"}, default="mlp"
        Window network; with ``"conv"`` the augmented features form the periodic axis.
    batch_size : int, default=256
        Training batch size.
    learning_rate : float, default=1e-3
        AdamW learning rate (decayed linearly to zero).
    weight_decay : float, default=1e-3
        AdamW weight decay.
    epoch_size : int or None, default=None
        Training windows per epoch (``None``: about one pass over the data).
    validation_fraction : float, default=0.1
        Fraction of trajectories (or of time) held out for validation.
    patience : int or None, default=None
        Early-stopping patience in epochs (``None``: no early stopping).
    gaussian_skip : bool, default=True
        Predict the noise of a standard-normal prior plus a learned correction (see
        :class:`SDAAssimilator`).
    progress : bool, default=True
        Show a tqdm progress bar while training.
    step_size : {"sample", "batch"}, default="sample"
        Langevin step computed per sample (SDA's rule; widens the posterior on small
        problems) or shared by the batch (see
        :class:`~dasim.diffusion.sampling.PredictorCorrector`).
    n_threads : int or None, default=None
        Torch CPU threads while training and sampling, restored afterwards; ``None``: half
        the physical cores, 1 to 4 (see :class:`SDAAssimilator`).

    Attributes
    ----------
    score_net_ : LocalScoreNet
        The trained network on augmented trajectories.
    mean_, scale_ : ndarray of shape (n_state,)
        Normalisation of the state part.
    net_mean_, net_scale_ : ndarray of shape ``(n_state + n_obs_,)``
        Normalisation of every augmented channel.
    obs_mean_, obs_scale_ : ndarray of shape ``(n_obs_,)``
        Mean and standard deviation of ``h`` over the training states (the ``h`` part of
        ``net_mean_`` and ``net_scale_``), for the units check of :meth:`assimilate` (see
        :class:`SDAAssimilator`).
    n_threads_ : int
        The torch thread count used by ``fit``.
    observations_ : list of ObservationModel
        The resolved observation models.
    n_obs_ : int
        Total width of ``y``.
    history_ : dict
        Training history.
    device_ : str
        The torch device used.
    training_seed_ : int
        The seed ``fit`` initialised and trained the network with (recorded as
        ``training_seed`` in the ``attrs`` of every result).
    n_features_in_ : int
        Number of state components.

    See Also
    --------
    SDAAssimilator : Guidance through a differentiable observation operator.

    Notes
    -----
    A background (:meth:`assimilate` ``background=``) enters the corrector only, as in the
    SOAD code. With ``clip="batch"`` samples of one call are not independent.

    References
    ----------
    .. [1] Z. Li, B. Dong, P. Zhang, "State-observation augmented diffusion model for
       nonlinear assimilation", arXiv:2407.21314.

    Examples
    --------
    >>> import numpy as np
    >>> from dasim.assimilators import SOADAssimilator
    >>> from dasim.observations import ObservationModel
    >>> X = np.cumsum(np.random.default_rng(0).normal(size=(200, 2)), axis=0)
    >>> obs = [ObservationModel("sin", 0.1, indices=[0]), ObservationModel("identity", 0.5)]
    >>> soad = SOADAssimilator(obs, n_members=4, n_epochs=2, width=16, n_steps=8,
    ...                        progress=False, random_state=0).fit(X)
    >>> y = np.hstack([o.simulate(X[:9], random_state=0) for o in obs])
    >>> soad.assimilate(y)["analysis"].shape
    (9, 4, 2)
    """

    _multi_source = True

    def __init__(
        self,
        observation=None,
        n_members=64,
        window=2,
        n_epochs=100,
        n_steps=64,
        n_corrections=1,
        tau=0.25,
        device="auto",
        random_state=None,
        *,
        sigma_x=1.0,
        clip="batch",
        refresh_score_in_corrector=False,
        fdc=True,
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
        progress=True,
        step_size="sample",
        n_threads=None,
    ):
        store_params(self, locals())

    def _check_extra_params(self):
        _check_float(self.sigma_x, "sigma_x")
        if self.clip not in ("batch", "sample", None):
            raise ValueError(f"clip must be 'batch', 'sample' or None, got {self.clip!r}.")
        for name in ("refresh_score_in_corrector", "fdc"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}.")

    def _augment(self, X):
        return np.concatenate([X, self._predict_obs(X)], axis=-1)

    def assimilate(
        self, y, *, random_state=None, n_members=None, background=None, background_std=None
    ):
        """Draw samples of the smoothing posterior of the window given ``y``.

        The whole window is sampled at once (there are no cycles), so unlike the
        sequential filters a failure leaves no partial result to return.

        Parameters
        ----------
        y : array-like of shape (n_times, n_obs) or (n_times,)
            Observations (all sources' columns concatenated), NaN where unobserved.
        random_state : int, RandomState, numpy.random.Generator or None
            Seed; ``None`` uses the estimator's ``random_state``.
        n_members : int, optional
            Number of posterior samples; default ``self.n_members``.
        background : array-like of shape (n_state,), optional
            A background (prior guess) of the first state of the window, physical units.
        background_std : float or array-like of shape (n_state,), optional
            Its error standard deviation; required with ``background``.

        Returns
        -------
        xarray.Dataset
            As :meth:`SDAAssimilator.assimilate`, plus ``manifold_gap`` ``(time,)``: the
            root-mean-square mismatch between the sampled observation channels and ``h`` of
            the sampled states (how well the learned prior keeps ``z`` on ``[x, h(x)]``).
        """
        return self._assimilate(
            y,
            random_state=random_state,
            n_members=n_members,
            background=background,
            background_std=background_std,
        )

    def _background(self, background, background_std, torch, dtype):
        n_state = self.n_features_in_
        xb = check_array_finite(background, "background", ndim=1)
        if xb.shape != (n_state,):
            raise ValueError(f"background must have shape ({n_state},), got {xb.shape}.")
        if background_std is None:
            raise ValueError("background_std is required with background.")
        std = check_array_finite(background_std, "background_std", ndim=(0, 1))
        std = np.broadcast_to(std, (n_state,)) if std.ndim == 0 else std
        if std.shape != (n_state,) or np.any(std <= 0):
            raise ValueError(
                f"background_std must be positive, a scalar or of shape ({n_state},)."
            )
        idx = (np.zeros(n_state, dtype=np.int64), np.arange(n_state))  # frame 0, x-part
        values = (xb - self.mean_) / self.scale_
        return (
            torch.as_tensor(values, dtype=dtype),
            tuple(torch.as_tensor(i) for i in idx),
            torch.as_tensor(std / self.scale_, dtype=dtype),
        )

    def _guidance(self, y, net, schedule, torch, background=None, background_std=None):
        from ..diffusion.guidance import AugmentedGuidance, ForwardDiffusionCorrector

        dtype = torch.float32
        n_state = self.n_features_in_
        observations = []
        offset = 0
        for width, std in zip(
            self.obs_widths_,
            np.split(self.obs_std_, np.cumsum(self.obs_widths_)[:-1]),
            strict=True,
        ):
            cols = slice(offset, offset + width)
            feats = np.arange(n_state + offset, n_state + offset + width)
            offset += width
            yj = y[:, cols]
            observed = ~np.isnan(yj)
            if not observed.any():
                continue
            t_idx, c_idx = np.nonzero(observed)  # row-major order
            values = (yj[t_idx, c_idx] - self.net_mean_[feats[c_idx]]) / self.net_scale_[
                feats[c_idx]
            ]
            stds = std[c_idx] / self.net_scale_[feats[c_idx]]
            observations.append(
                (
                    torch.as_tensor(values, dtype=dtype),
                    (torch.as_tensor(t_idx), torch.as_tensor(feats[c_idx])),
                    torch.as_tensor(stds, dtype=dtype),
                )
            )
        bg = None
        if background is not None or background_std is not None:
            if background is None:
                raise ValueError("background_std was given without background.")
            bg = self._background(background, background_std, torch, dtype)
        if observations:
            guidance = AugmentedGuidance(
                net, observations, schedule, sigma_x=float(self.sigma_x), clip=self.clip
            )
            fdc = ForwardDiffusionCorrector(observations, schedule, background=bg)
        else:  # background only: it enters the corrector, the prior score is unguided
            guidance = net
            fdc = ForwardDiffusionCorrector([bg], schedule)
        post_step = fdc if self.fdc else None
        return guidance, post_step, bool(self.refresh_score_in_corrector)

    def _extra_diagnostics(self, z, y):
        n_state = self.n_features_in_
        zz = z.detach().cpu().double().numpy() * self.net_scale_ + self.net_mean_
        x, h = zz[..., :n_state], zz[..., n_state:]
        gap = np.sqrt(np.mean((h - self._predict_obs(x)) ** 2, axis=(0, 2)))
        return {"manifold_gap": gap}
