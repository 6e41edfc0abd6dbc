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

import contextlib
import numbers
import threading
import time
import warnings

import numpy as np
import xarray as xr
from sklearn.base import BaseEstimator, clone
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from .._provenance import attr_value, device_label, estimator_attrs, seed_source
from .._validation import check_array_finite, check_noise, check_torch_device
from ..exceptions import UnitsWarning
from ..filters._base import (
    _check_burn_in,
    _check_states_finite,
    _named_validation,
    _neg_crps,
    _score_inputs,
    _time_coordinate,
    _validate_states,
)
from ..observations import ObservationModel

__all__ = ["WindowedAssimilator"]

_TORCH_HINT = "{name} needs PyTorch, which is not installed: pip install dasim[torch]"


def _import_torch(name):
    """Import torch or raise an ImportError that says how to install it."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised only without torch
        raise ImportError(_TORCH_HINT.format(name=name)) from exc
    return torch


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_float(value, name, *, minimum=0.0, strict=True, maximum=None, strict_max=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}.")
    value = float(value)
    low_bad = value <= minimum if strict else value < minimum
    high_bad = maximum is not None and (value >= maximum if strict_max else value > maximum)
    if not np.isfinite(value) or low_bad or high_bad:
        bounds = f"{'>' if strict else '>='} {minimum}"
        if maximum is not None:
            bounds += f" and {'<' if strict_max else '<='} {maximum}"
        raise ValueError(f"{name} must be finite and {bounds}, got {value!r}.")
    return value


def _resolve_device(device, torch):
    if device == "auto" or device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "numpy":
        raise ValueError(
            "device='numpy' is for KDEDiffusionFilter only; the learned assimilators need "
            "torch: use device='auto', 'cpu' or 'cuda'."
        )
    return check_torch_device(device, torch, "device")


def _default_n_threads():
    """Torch threads used when ``n_threads=None``: half the physical cores, 1 to 4.

    The networks here are small (a few hundred thousand weights, batches of a few hundred
    windows): a second thread gains little, while threads that compete with other work for
    the cores lose a lot (on a busy 2-core machine, training took 18.6 s with torch's
    default of one thread per core against 1.1 s with one thread).
    """
    import joblib

    return max(1, min(4, joblib.cpu_count(only_physical_cores=True) // 2))


def _check_n_threads(n_threads):
    if n_threads is None:
        return None
    return _check_int(n_threads, "n_threads", 1)


_THREADS_LOCK = threading.Lock()
_THREADS_STATE = {"depth": 0, "previous": None}


@contextlib.contextmanager
def _torch_threads(torch, n_threads):
    """Run the block with ``torch.set_num_threads(n_threads)``, then restore the count.

    ``torch.set_num_threads`` is process-wide, so the blocks of a process share one
    setting: the first block entered sets it and the last one left restores the count from
    before (blocks running concurrently under joblib's threading backend, or nested, keep
    the first block's count rather than undo each other's).
    """
    with _THREADS_LOCK:
        if _THREADS_STATE["depth"] == 0:
            _THREADS_STATE["previous"] = torch.get_num_threads()
            if n_threads != _THREADS_STATE["previous"]:
                torch.set_num_threads(n_threads)
        _THREADS_STATE["depth"] += 1
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _THREADS_STATE["depth"] -= 1
            if _THREADS_STATE["depth"] == 0:
                if torch.get_num_threads() != _THREADS_STATE["previous"]:
                    torch.set_num_threads(_THREADS_STATE["previous"])
                _THREADS_STATE["previous"] = None


#: Units check: a column of ``y`` whose root-mean-square distance from the training mean
#: of ``h``, in units of ``sqrt(obs_scale_**2 + noise_std**2)``, exceeds this (about 1 for
#: observations of the training climatology) gets a warning if most of its values also
#: lie outside the training range of ``h``.
_UNITS_TOLERANCE = 3.0


def _seed_from(random_state):
    """A 63-bit integer seed drawn from an int / RandomState / Generator / None."""
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return int(random_state) % (2**63)
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**63 - 1))
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


_SKIP_CLASS = []


def _gaussian_skip_class(torch):
    """The kernel wrapper ``eps(w, t) = sigma_t w / (1 + eta^2) + g * inner(w, t)``.

    The first term is the exact epsilon of a standard normal prior (the normalised data's
    first two moments), so the network learns only the departure from it; the per-feature
    gain ``g`` starts at zero, so an untrained network samples a standard normal instead of
    amplifying its errors by up to ``1 / mu(1) = 1000`` through the sampler. It is a
    reparametrisation of the same epsilon-model: loss and samplers are unchanged.
    """
    if _SKIP_CLASS:
        return _SKIP_CLASS[0]

    class GaussianSkipKernel(torch.nn.Module):
        def __init__(self, inner, features, eta):
            super().__init__()
            self.inner = inner
            self.eta = float(eta)
            self.omega = float(np.arccos(np.sqrt(self.eta)))
            self.gain = torch.nn.Parameter(torch.zeros(int(features)))

        def forward(self, w, t):
            t = torch.as_tensor(t, dtype=w.dtype, device=w.device)
            mu = torch.cos(self.omega * t) ** 2
            sigma = torch.sqrt(1 - mu**2 + self.eta**2)
            if sigma.ndim == 1:
                sigma = sigma[:, None]
            return sigma * w / (1 + self.eta**2) + self.gain * self.inner(w, t)

    _SKIP_CLASS.append(GaussianSkipKernel)
    return GaussianSkipKernel


class WindowedAssimilator(BaseEstimator):
    """Base class of the learned assimilators over trajectory windows.

    Subclasses implement the observation handling (:meth:`_resolve_observation`,
    :meth:`_augment`) and the guided sampler (:meth:`_guidance`); fit, sample, score,
    validation, diagnostics and pickling live here. Not meant to be instantiated.
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
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        tags.non_deterministic = False
        return tags

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
        torch = _import_torch(type(self).__name__)
        self.device_ = _resolve_device(self.device, torch)
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

        seed = _seed_from(self.random_state)
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
        torch = _import_torch(type(self).__name__)
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

        Parameters
        ----------
        X : array-like of shape (n_times, n_state)
            True states, row-aligned with ``y``.
        y : array-like of shape (n_times, n_obs) or (n_times,)
            Observations.
        burn_in : int, default=0
            Number of leading times left out of the time mean; must be smaller than
            ``n_times``. In a search, pass
            ``scoring=dasim.metrics.get_scorer("neg_crps", burn_in=k)``: the same score.

        Returns
        -------
        float
            ``-mean_t CRPS_t`` over ``t >= burn_in`` (greater is better).
        """
        X, y = _score_inputs(self, X, y, self._check_obs)
        burn_in = _check_burn_in(burn_in, y.shape[0])
        ds = self._assimilate(y, random_state=None, n_members=None)
        return _neg_crps(X, ds["analysis"].values, burn_in=burn_in)

    # ------------------------------------------------------------------ validation
    def _validate_training_data(self, X, y):
        X_arr = np.asarray(X) if not hasattr(X, "toarray") else X
        if getattr(X_arr, "ndim", 2) == 3:
            try:
                X3 = np.asarray(X_arr, dtype=np.float64)
            except (TypeError, ValueError):
                X3 = None  # check_array_finite below says what is wrong
            if X3 is not None:
                _check_states_finite(X3)
            X = check_array_finite(X, "X", ndim=3)
            self.n_features_in_ = X.shape[-1]
            if y is not None:
                y = check_array_finite(y, "y", ndim=(2, 3), allow_nan=True)
                if y.ndim == 2:
                    y = y[..., None]
                if y.shape[:2] != X.shape[:2]:
                    raise ValueError(
                        f"y must have shape (n_trajectories, n_times, n_obs) matching X "
                        f"{X.shape[:2]}, got {y.shape}."
                    )
            return X, y
        if y is None:
            X = _validate_states(self, X)
        else:
            X, y = _named_validation(
                "X",
                validate_data,
                self,
                X,
                y,
                validate_separately=(
                    {"dtype": np.float64, "ensure_all_finite": False},
                    {"dtype": np.float64, "ensure_2d": False, "ensure_all_finite": "allow-nan"},
                ),
            )
            _check_states_finite(X)
            y = np.asarray(y, dtype=np.float64)
            if y.ndim == 1:
                y = y[:, None]
            if y.ndim != 2 or y.shape[0] != X.shape[0]:
                raise ValueError(
                    f"y must have shape (n_times, n_obs) with n_times = {X.shape[0]} (the rows "
                    f"of X), got {y.shape}."
                )
            if np.isinf(y).any():
                raise ValueError("y contains inf.")
            y = y[None]
        return X[None], y

    def _observation_list(self):
        obs = self.observation
        if obs is None:
            return None
        if isinstance(obs, ObservationModel):
            return [obs]
        if self._multi_source and isinstance(obs, list | tuple) and len(obs) > 0:
            if all(isinstance(o, ObservationModel) for o in obs):
                return list(obs)
        kind = (
            "an ObservationModel, a non-empty list of them"
            if self._multi_source
            else ("an ObservationModel")
        )
        raise TypeError(f"observation must be {kind} or None, got {obs!r}.")

    def _resolve_observation(self, X, y):
        """Set ``observations_`` (list), ``n_obs_`` and ``obs_std_`` from the parameters."""
        n_state = X.shape[-1]
        given = self._observation_list()
        if given is None:
            n_obs = n_state if y is None else y.shape[-1]
            if n_obs > n_state:
                raise ValueError(
                    f"y has {n_obs} columns but X has only {n_state}; with observation=None "
                    "the identity observes the first y.shape[-1] state components."
                )
            states = X[..., :n_obs].reshape(-1, n_obs)
            if y is None:
                noise = np.std(states, axis=0)
            else:
                with np.errstate(invalid="ignore"):
                    noise = np.sqrt(np.nanmean((y.reshape(-1, n_obs) - states) ** 2, axis=0))
            if not np.all(np.isfinite(noise)) or np.any(noise <= 0):
                raise ValueError(
                    "Cannot learn the observation noise from the training data (a component "
                    "has zero or undefined spread); pass observation=ObservationModel(...)."
                )
            observations = [
                ObservationModel("identity", noise_std=noise, indices=np.arange(n_obs))
            ]
        else:
            observations = [clone(o, safe=False) for o in given]
        stds, widths = [], []
        for j, obs in enumerate(observations):
            # Every parameter checked against n_state; a callable probed on states of X,
            # arranged (n_members, n_times, n_state) as the sampler calls it.
            n = obs._validate(n_state, X, data="X", lead_ndim=2)
            std, _ = check_noise(obs.noise_std, n, "observation.noise_std")
            if std is None:
                raise ValueError(
                    f"observation[{j}].noise_std: {type(self).__name__} needs independent "
                    "(diagonal) observation noise, got a full covariance matrix."
                )
            stds.append(std)
            widths.append(n)
        self.observations_ = observations
        self.observation_ = observations[0] if len(observations) == 1 else observations
        self.obs_widths_ = np.array(widths)
        self.n_obs_ = int(sum(widths))
        self.obs_std_ = np.concatenate(stds)
        if y is not None and y.shape[-1] != self.n_obs_:
            raise ValueError(
                f"y has {y.shape[-1]} columns but the observation operator(s) give {self.n_obs_}."
            )

    def _check_obs(self, y):
        y = check_array_finite(y, "y", ndim=(1, 2), allow_nan=True)
        if y.ndim == 1:
            y = y[:, None]
        if y.shape[1] != self.n_obs_:
            raise ValueError(
                f"y has {y.shape[1]} columns but the observation operator(s) give "
                f"{self.n_obs_} (observation={self.observation!r})."
            )
        size = 2 * int(self.window) + 1
        if y.shape[0] < size:
            raise ValueError(
                f"y has {y.shape[0]} rows (times), fewer than one window of 2 * window + 1 = "
                f"{size} states."
            )
        return y

    # ------------------------------------------------------------------ torch internals
    def _build_net(self, torch):
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
        kernel = _gaussian_skip_class(torch)(inner, features, self._schedule(torch).eta)
        return LocalScoreNet(cfg["n_state"], cfg["window"], kernel)

    @staticmethod
    def _schedule(torch):
        from ..diffusion.vpsde import CosineSchedule

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
        gen = torch.Generator(device=self.device_)
        gen.manual_seed(_seed_from(rs))
        return gen

    def _to_physical(self, z):
        """Physical states (numpy float64) from normalised network samples."""
        n_state = self.n_features_in_
        x = z[..., :n_state].detach().cpu().double().numpy()
        return x * self.scale_ + self.mean_

    def _n_threads(self):
        """The torch thread count for this call: ``n_threads``, or the default."""
        n_threads = _check_n_threads(getattr(self, "n_threads", None))
        return _default_n_threads() if n_threads is None else n_threads

    def _fit_obs_stats(self, X):
        """Set ``obs_mean_`` and ``obs_scale_`` (and the range) of ``h`` over the states ``X``."""
        h = np.asarray(self._predict_obs(X), dtype=np.float64).reshape(-1, self.n_obs_)
        h = np.where(np.isfinite(h), h, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a column never finite
            mean, scale = np.nanmean(h, axis=0), np.nanstd(h, axis=0)
            low, high = np.nanmin(h, axis=0), np.nanmax(h, axis=0)
        self.obs_mean_ = np.where(np.isfinite(mean), mean, 0.0)
        self.obs_scale_ = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        self._obs_range_ = np.stack([low, high])  # NaN where h was never finite

    def _check_units(self, y):
        """Warn when a column of ``y`` lies far from what ``h`` gives on the training states.

        ``z = (y - obs_mean_) / sqrt(obs_scale_**2 + noise_std**2)`` has a mean square of
        about 1 when ``y`` is drawn from the training climatology. A column gets a
        :class:`UnitsWarning` when the root mean square of ``z`` over its observed entries
        exceeds ``_UNITS_TOLERANCE`` *and* most of them lie outside the range of ``h``
        over the training states: a correct window can sit at an extreme of the
        climatology, but hardly beyond everything the training data held.
        """
        if not hasattr(self, "_obs_range_"):  # fitted by an older dasim
            return
        low, high = self._obs_range_
        z = (y - self.obs_mean_) / np.sqrt(self.obs_scale_**2 + self.obs_std_**2)
        observed = ~np.isnan(y)
        count = observed.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            rms = np.sqrt(np.nansum(z**2, axis=0) / count)
            outside = (observed & ((y < low) | (y > high))).sum(axis=0) / count
        bad = np.flatnonzero((count > 0) & (rms > _UNITS_TOLERANCE) & (outside > 0.5))
        if bad.size == 0:
            return
        j = int(bad[np.argmax(rms[bad])])
        warnings.warn(
            f"y looks like it is in other units than the training data: the observed values "
            f"of column {j} lie {rms[j]:.3g} standard deviations (root mean square) from the "
            f"mean {self.obs_mean_[j]:.3g} of the observation operator over the training "
            f"states (standard deviation {self.obs_scale_[j]:.3g}, noise "
            f"{self.obs_std_[j]:.3g}; {outside[j]:.0%} of them outside its training range "
            f"[{low[j]:.3g}, {high[j]:.3g}]), or the training data do not cover them. Give y "
            f"and the observation model in the units of the states {type(self).__name__} "
            "was fitted on; after a scaler in a Pipeline those are scaled units "
            "(dasim.compose.TransformedStateFilter keeps them physical).",
            UnitsWarning,
            stacklevel=4,
        )

    def _predict_obs(self, x):
        """Noise-free observations of physical states ``(..., n_state) -> (..., n_obs)``."""
        return np.concatenate([o.apply(x) for o in self.observations_], axis=-1)

    def _assimilate(self, y, *, random_state, n_members, **kwargs):
        check_is_fitted(self)
        time_coord = _time_coordinate(y)
        y = self._check_obs(y)
        n_members = self.n_members if n_members is None else n_members
        n_members = _check_int(n_members, "n_members", 1)
        n_threads = self._n_threads()
        self._check_units(y)
        torch = _import_torch(type(self).__name__)
        rs = self.random_state if random_state is None else random_state
        seed = _seed_from(rs)  # recorded, so the run can be repeated
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
        white = resid / self.obs_std_
        with np.errstate(invalid="ignore", divide="ignore"):
            rms = np.sqrt((resid**2).sum(axis=(1, 2)) / (n_obs_t * analysis.shape[1]))
        const = np.where(observed, np.log(2 * np.pi * self.obs_std_**2), 0.0).sum(axis=1)
        loglik = -0.5 * ((white**2).sum(axis=2).mean(axis=1) + const)
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
        attrs["torch_version"] = _import_torch(type(self).__name__).__version__
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
        torch = _import_torch(type(self).__name__)
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
