r"""The base of the learned, windowed assimilators (SDA and SOAD).

A :class:`WindowedAssimilator` learns a *prior over trajectories*: a local score network
(:class:`~dasim.diffusion.networks.LocalScoreNet`) on windows of :math:`2k+1` consecutive
states, trained with the denoising loss on the normalised training trajectories. At
assimilation time the network is composed into a score for the whole observation window
and a guided predictor-corrector sampler draws samples of the smoothing posterior
:math:`p(x_{1:L} \mid y_{1:L})`.

Conventions shared by the subclasses:

* the network works on standardised features ``z = (x - net_mean_) / net_scale_``, learned
  by ``fit``; everything else is in *physical* units, the units of the states given to
  ``fit``: observation operators act on ``x = z * scale_ + mean_``, ``y`` and the noise
  are in the units of ``h``, outputs are physical states (in a
  :class:`~sklearn.pipeline.Pipeline`, "physical" means the space the assimilator is
  fitted in, i.e. after the preceding transformers; :class:`~dasim.compose.TransformedStateFilter`
  keeps them physical);
* torch runs with ``n_threads`` CPU threads inside ``fit``, ``sample`` and ``assimilate``,
  and the previous thread count is restored afterwards;
* ``y`` is ``(n_times, n_obs)`` row-aligned with the window; a row of NaN is an unobserved
  time, a partly NaN row observes its finite entries only;
* outputs are numpy arrays and :class:`xarray.Dataset` objects, never tensors;
* torch is imported lazily: importing :mod:`dasim.assimilators` works without it and
  :meth:`~WindowedAssimilator.fit` says how to install it.
"""

from __future__ import annotations

import numbers
import time

import numpy as np
import xarray as xr
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from .._inputs import check_burn_in, neg_crps, observation_tags, score_inputs, time_coordinate
from .._noise import GaussianNoise
from .._provenance import attr_value, device_label, estimator_attrs, seed_source
from .._random import seed_from, torch_generator
from .._shared_doc import fill_shared_doc
from .._torch import import_torch, resolve_device
from ._inputs import _check_float, _check_int, _ObservationInputs
from ._runtime import (
    _check_n_threads,
    _default_n_threads,
    _torch_threads,
)

__all__ = ["WindowedAssimilator"]

_NO_NUMPY = (
    "device='numpy' is for KDEDiffusionFilter only; the learned assimilators need "
    "torch: use device='auto', 'cpu' or 'cuda'."
)


@fill_shared_doc
class WindowedAssimilator(_ObservationInputs, BaseEstimator):
    """Base class of the learned assimilators over trajectory windows.

    Subclasses implement the observation handling (:meth:`_resolve_observation`,
    :meth:`_augment`) and the guided sampler (:meth:`_guidance`); fit, sample, score,
    diagnostics and pickling live here, the input checks in the ``_ObservationInputs``
    mixin (``_inputs.py``). Not meant to be instantiated.
    """

    #: Whether ``observation`` may be a list of observation models (SOAD).
    _multi_source = False

    # ------------------------------------------------------------------ subclass hooks
    def _check_extra_params(self):
        """Validate the subclass's own parameters (called by ``fit`` before training)."""

    def _augment(self, X):
        """Training features from physical trajectories ``(..., n_state)``."""
        return X

    def _guidance(self, y, net, schedule, torch, **kwargs):
        """Return ``(eps_model, post_step, refresh_score_in_corrector)`` for ``y``."""
        raise NotImplementedError

    def _extra_diagnostics(self, z, y):
        """Per-time diagnostics from the normalised samples ``z`` (dict of (time,) arrays)."""
        return {}

    # ------------------------------------------------------------------ scikit-learn API
    def __sklearn_tags__(self):
        return observation_tags(super().__sklearn_tags__())

    def _validate_params(self):
        _check_int(self.n_members, "n_members", 1)
        _check_int(self.window, "window", 1)
        _check_int(self.n_epochs, "n_epochs", 1)
        _check_int(self.n_steps, "n_steps", 1)
        _check_int(self.n_corrections, "n_corrections", 0)
        _check_float(self.tau, "tau")
        if self.step_size not in ("sample", "batch"):
            raise ValueError(f"step_size must be 'sample' or 'batch', got {self.step_size!r}.")
        _check_int(self.width, "width", 1)
        _check_int(self.depth, "depth", 1)
        _check_int(self.batch_size, "batch_size", 1)
        _check_float(self.learning_rate, "learning_rate")
        _check_float(self.weight_decay, "weight_decay", strict=False)
        _check_float(
            self.validation_fraction,
            "validation_fraction",
            strict=False,
            maximum=1.0,
            strict_max=True,
        )
        if self.patience is not None:
            _check_int(self.patience, "patience", 1)
            if self.validation_fraction == 0:
                raise ValueError("patience needs a validation set: set validation_fraction > 0.")
        if self.epoch_size is not None:
            _check_int(self.epoch_size, "epoch_size", 1)
        if not isinstance(self.gaussian_skip, bool | np.bool_):
            raise ValueError(f"gaussian_skip must be a bool, got {self.gaussian_skip!r}.")
        if self.kernel not in ("mlp", "conv"):
            raise ValueError(f"kernel must be 'mlp' or 'conv', got {self.kernel!r}.")
        if not isinstance(self.progress, bool | np.bool_):
            raise ValueError(f"progress must be a bool, got {self.progress!r}.")
        _check_n_threads(self.n_threads)
        rs = self.random_state
        if isinstance(rs, bool) or not (
            rs is None or isinstance(rs, numbers.Integral | np.random.RandomState)
        ):
            raise TypeError(f"random_state must be None, an int or a RandomState, got {rs!r}.")
        self._check_extra_params()

    def fit(self, X, y=None):
        """Train the local score network on trajectories of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_times, n_state) or (n_trajectories, n_times, n_state)
            Training trajectories in time order. No NaN or inf; ``n_times`` must be at
            least ``2 * window + 1``.
        y : array-like of shape (n_times, n_obs) or (n_times,), optional
            Observations row-aligned with ``X`` (``(n_trajectories, n_times, n_obs)`` for a
            3-D ``X``). Used only when ``observation=None``, to learn the identity
            operator's noise from ``y - X``.

        Returns
        -------
        self : object
            The fitted assimilator.
        """
        self._validate_params()
        X, y = self._validate_training_data(X, y)
        torch = import_torch(type(self).__name__)
        self.device_ = resolve_device(self.device, numpy=_NO_NUMPY)
        n_traj, n_times, n_state = X.shape
        k = int(self.window)
        if n_times < 2 * k + 1:
            raise ValueError(
                f"X has {n_times} time steps (n_samples = {n_times}), fewer than one window of "
                f"2 * window + 1 = {2 * k + 1} states (window={k})."
            )
        self._resolve_observation(X, y)

        feats = np.asarray(self._augment(X), dtype=np.float64)
        if not np.all(np.isfinite(feats)):
            raise ValueError("observation returned non-finite values on the training states X.")
        flat = feats.reshape(-1, feats.shape[-1])
        self.net_mean_ = flat.mean(axis=0)
        scale = flat.std(axis=0)
        self.net_scale_ = np.where(scale > 0, scale, 1.0)
        self.mean_ = self.net_mean_[:n_state].copy()
        self.scale_ = self.net_scale_[:n_state].copy()
        data = (feats - self.net_mean_) / self.net_scale_
        self._fit_obs_stats(X)
        self.n_threads_ = self._n_threads()

        from ..diffusion.training import train_eps_model

        seed = seed_from(self.random_state)
        self.training_seed_ = seed  # recorded in the attrs of every result
        self.net_config_ = {
            "n_state": int(feats.shape[-1]),
            "window": k,
            "kernel": self.kernel,
            "width": int(self.width),
            "depth": int(self.depth),
            "gaussian_skip": bool(self.gaussian_skip),
        }
        # A single short trajectory cannot spare states for validation: train on all.
        vf = float(self.validation_fraction)
        if n_traj == 1 and vf > 0 and n_times - max(2 * k + 1, round(vf * n_times)) < 2 * k + 1:
            vf = 0.0
        patience = self.patience if vf > 0 else None
        with _torch_threads(torch, self.n_threads_):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed % (2**63))
                net = self._build_net(torch)
            net = net.to(self.device_)
            self.history_ = train_eps_model(
                net,
                torch.as_tensor(data, dtype=torch.float32),
                self._schedule(torch),
                window=k,
                n_epochs=int(self.n_epochs),
                batch_size=int(self.batch_size),
                learning_rate=float(self.learning_rate),
                weight_decay=float(self.weight_decay),
                epoch_size=self.epoch_size,
                validation_fraction=vf,
                patience=patience,
                seed=(seed + 1) % (2**63),
                device=self.device_,
                progress=bool(self.progress),
            )
        net.requires_grad_(False)
        net.eval()
        self.score_net_ = net
        self.n_times_ = n_times
        return self

    def sample(self, n_samples=1, *, n_times=None, random_state=None):
        """Draw unconditional trajectories from the learned prior.

        Parameters
        ----------
        n_samples : int, default=1
            Number of trajectories.
        n_times : int, optional
            Trajectory length, at least ``2 * window + 1``. Default: ``2 * window + 1``,
            the window the network was trained on.
        random_state : int, RandomState, numpy.random.Generator or None
            Seed; ``None`` uses the estimator's ``random_state``.

        Returns
        -------
        ndarray of shape (n_samples, n_times, n_state)
            Trajectories in physical units.
        """
        check_is_fitted(self)
        n_samples = _check_int(n_samples, "n_samples", 1)
        k = int(self.window)
        n_times = 2 * k + 1 if n_times is None else _check_int(n_times, "n_times", 2 * k + 1)
        torch = import_torch(type(self).__name__)
        gen = self._generator(torch, random_state)
        with _torch_threads(torch, self._n_threads()):
            z = self._sampler(torch).sample(
                self.score_net_,
                (n_samples, n_times, self.net_config_["n_state"]),
                generator=gen,
                device=self.device_,
                dtype=torch.float32,
            )
        return self._to_physical(z)

    def assimilate(self, y, *, random_state=None, n_members=None):
        """Draw samples of the smoothing posterior of the window given ``y``.

        The whole window is sampled at once (there are no cycles), so unlike the
        sequential filters a failure leaves no partial result to return.

        Parameters
        ----------
        y : array-like of shape (n_times, n_obs) or (n_times,)
            Observations, NaN where unobserved (a row of NaN: an unobserved time). The
            window has ``n_times >= 2 * window + 1`` states. A pandas DataFrame or xarray
            DataArray lends its index / first coordinate to the output's ``time``.
        random_state : int, RandomState, numpy.random.Generator or None
            Seed; ``None`` uses the estimator's ``random_state``.
        n_members : int, optional
            Number of posterior samples; default ``self.n_members``.

        Returns
        -------
        xarray.Dataset
            ``analysis`` with dims ``(time, member, state)`` (posterior samples of the whole
            window, physical units); per-time diagnostics ``obs_residual`` (root-mean-square
            of ``y - h(x)`` over observed entries and members, NaN where unobserved),
            ``log_likelihood`` (member mean of ``log p(y_t | x_t)``, 0 where unobserved) and
            ``n_observed``; in ``attrs`` how the result was made: the parameters at their
            resolved values (``device`` as used, e.g. ``"cuda:0"``, ``n_members`` drawn,
            ``<name>_requested`` where that differs from the constructor's value),
            ``random_state`` (the integer seed of this run: passing it back repeats the
            run) and ``seed_source``, ``training_seed`` (the seed ``fit`` trained with),
            ``dasim_version``, ``numpy_version``, ``torch_version`` and
            ``sampling_seconds``; every value a str, int or float.
        """
        return self._assimilate(y, random_state=random_state, n_members=n_members)

    def score(self, X, y, *, burn_in=0):
        """Negative time-mean CRPS of the posterior samples against the true states.

        Runs :meth:`assimilate` on ``y`` with the estimator's ``random_state`` (so the
        score is deterministic for an integer seed); the same definition as the filters'.

        %(score_sections)s
        """
        X, y = score_inputs(self, X, y, self._check_obs)
        burn_in = check_burn_in(burn_in, y.shape[0])
        ds = self._assimilate(y, random_state=None, n_members=None)
        return neg_crps(X, ds["analysis"].values, burn_in=burn_in)

    # ------------------------------------------------------------------ torch internals
    def _build_net(self, torch):
        from ..diffusion.denoising import GaussianSkip
        from ..diffusion.networks import ConvEpsNet, LocalScoreNet, MLPEpsNet

        cfg = self.net_config_
        if not cfg.get("gaussian_skip", False):
            return LocalScoreNet(
                cfg["n_state"],
                cfg["window"],
                cfg["kernel"],
                width=cfg["width"],
                depth=cfg["depth"],
            )
        size = 2 * cfg["window"] + 1
        features = size * cfg["n_state"]
        if cfg["kernel"] == "mlp":
            inner = MLPEpsNet(features, cfg["width"], cfg["depth"])
        else:
            inner = ConvEpsNet(size, cfg["width"], cfg["depth"])
        kernel = GaussianSkip(inner, features, self._schedule(torch))
        return LocalScoreNet(cfg["n_state"], cfg["window"], kernel)

    @staticmethod
    def _schedule(torch):
        from ..diffusion.schedules import CosineSchedule

        return CosineSchedule()

    def _sampler(self, torch):
        from ..diffusion.sampling import PredictorCorrector

        return PredictorCorrector(
            self._schedule(torch),
            int(self.n_steps),
            int(self.n_corrections),
            float(self.tau),
            step_size=self.step_size,
        )

    def _generator(self, torch, random_state):
        rs = self.random_state if random_state is None else random_state
        return torch_generator(rs, self.device_, torch)

    def _to_physical(self, z):
        """Physical states (numpy float64) from normalised network samples."""
        n_state = self.n_features_in_
        x = z[..., :n_state].detach().cpu().double().numpy()
        return x * self.scale_ + self.mean_

    def _n_threads(self):
        """The torch thread count for this call: ``n_threads``, or the default."""
        n_threads = _check_n_threads(getattr(self, "n_threads", None))
        return _default_n_threads() if n_threads is None else n_threads

    def _assimilate(self, y, *, random_state, n_members, **kwargs):
        check_is_fitted(self)
        time_coord = time_coordinate(y)
        y = self._check_obs(y)
        n_members = self.n_members if n_members is None else n_members
        n_members = _check_int(n_members, "n_members", 1)
        n_threads = self._n_threads()
        self._check_units(y)
        torch = import_torch(type(self).__name__)
        rs = self.random_state if random_state is None else random_state
        seed = seed_from(rs)  # recorded, so the run can be repeated
        gen = self._generator(torch, seed)
        schedule = self._schedule(torch)
        n_times = y.shape[0]
        start = time.perf_counter()
        with _torch_threads(torch, n_threads):
            if np.isnan(y).all() and kwargs.get("background") is None:
                eps_model, post_step, refresh = self.score_net_, None, True
            else:
                eps_model, post_step, refresh = self._guidance(
                    y, self.score_net_, schedule, torch, **kwargs
                )
            z = self._sampler(torch).sample(
                eps_model,
                (n_members, n_times, self.net_config_["n_state"]),
                generator=gen,
                post_step=post_step,
                refresh_score_in_corrector=refresh,
                device=self.device_,
                dtype=torch.float32,
            )
        seconds = time.perf_counter() - start
        x = self._to_physical(z)  # (member, time, state)
        analysis = np.swapaxes(x, 0, 1)
        diags = self._diagnostics(analysis, y)
        diags.update(self._extra_diagnostics(z, y))
        run = {"seed": seed, "seed_source": seed_source(random_state, self.random_state)}
        run.update(kwargs)
        return self._to_dataset(analysis, diags, time_coord, seconds, run=run)

    def _diagnostics(self, analysis, y):
        """Per-time observation residual, log-likelihood and count (vectorised over time)."""
        pred = self._predict_obs(analysis)  # (time, member, n_obs)
        observed = ~np.isnan(y)  # (time, n_obs)
        n_obs_t = observed.sum(axis=1)
        resid = np.where(observed[:, None, :], pred - np.nan_to_num(y)[:, None, :], 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            rms = np.sqrt((resid**2).sum(axis=(1, 2)) / (n_obs_t * analysis.shape[1]))
        noise = GaussianNoise(std=self.obs_std_, name="noise_std")
        loglik = noise.log_density(resid, observed=observed[:, None, :]).mean(axis=1)
        return {
            "obs_residual": np.where(n_obs_t > 0, rms, np.nan),
            "log_likelihood": loglik,
            "n_observed": n_obs_t,
        }

    def _to_dataset(self, analysis, diags, time_coord, seconds, run=None):
        n_times, n_members, n_state = analysis.shape
        data = {"analysis": (("time", "member", "state"), analysis)}
        for name, values in diags.items():
            data[name] = (("time",), np.asarray(values))
        coords = {
            "time": np.arange(n_times) if time_coord is None else time_coord,
            "member": np.arange(n_members),
            "state": np.arange(n_state),
        }
        run = {} if run is None else dict(run)
        seed = run.pop("seed", None)
        attrs = estimator_attrs(
            self,
            seed=attr_value(self.random_state) if seed is None else seed,
            seed_source=run.pop("seed_source", "not recorded: the estimator's random_state"),
            device=device_label(self.device_),
            overrides={"n_members": n_members},
        )
        attrs["training_seed"] = attr_value(getattr(self, "training_seed_", None))
        for key, value in run.items():  # per-run options (e.g. SOAD's background)
            attrs[key] = attr_value(value)
        attrs["sampling_seconds"] = float(seconds)
        attrs["torch_version"] = import_torch(type(self).__name__).__version__
        return xr.Dataset(data, coords=coords, attrs=attrs)

    # ------------------------------------------------------------------ pickling
    def __getstate__(self):
        state = dict(super().__getstate__())
        net = state.pop("score_net_", None)
        if net is not None:
            state["_score_net_weights"] = {
                key: value.detach().to("cpu") for key, value in net.state_dict().items()
            }
        return state

    def __setstate__(self, state):
        state = dict(state)
        weights = state.pop("_score_net_weights", None)
        super().__setstate__(state)
        if weights is None:
            return
        torch = import_torch(type(self).__name__)
        net = self._build_net(torch)
        net.load_state_dict({k: v.to("cpu") for k, v in weights.items()})
        device = str(getattr(self, "device_", "cpu"))
        if device.startswith("cuda") and not torch.cuda.is_available():
            device = "cpu"
        self.device_ = device
        net = net.to(device)
        net.requires_grad_(False)
        net.eval()
        self.score_net_ = net
