r"""B3: the learned assimilators (SDA, SOAD) on Lorenz-63 trajectories.

The setting of BENCHMARKS.md, B3 (after the SDA paper): Lorenz-63 integrated by RK4 with
``dt = 0.025`` plus :math:`\mathcal{N}(0, dt)` noise after every step (``Lorenz63(dt=0.025,
steps_per_cycle=1, process_noise=sqrt(0.025))``); training trajectories after a burn-in,
all states normalised by the training mean and standard deviation; assimilation windows of
65 states observed (on the *normalised* states) as

==========  =========================  ==============  =========
case        observation                times           noise std
==========  =========================  ==============  =========
``b3-lo``   first component            every 8th       0.05
``b3-hi``   first component            every state     0.25
``b3-sin``  :math:`\sin(3 x_1)`        every 4th       0.1
``b3-atan`` :math:`\arctan(3 x_1)`     every 4th       0.1
==========  =========================  ==============  =========

SOAD is given the physical trajectories, with each case's operator composed with the
normalisation (it standardises its states internally); its samples are normalised for
the metrics. SDA runs in the configuration of Rozet and Louppe (2023): the normalised
trajectories, the cases' operators as they are, and the paper's
:math:`\gamma = 10^{-2}` in the paper's convention, in the squared units of ``y``
(``gamma_units="observation"``, not the estimator's default, which scales it by the
training variance of each case's operator). That is, operation for operation, the
computation that made the SDA figures of the B3 page, before the assimilators worked in
physical units; physical trajectories through the composed operator would change them by
float32 round-off in the guidance, which the sampler amplifies.

The reference posterior is a bootstrap particle filter-smoother
(:func:`dasim.smoothers.bootstrap_smoother`) with the true dynamics, started
from the stationary law (a pool of training states). Reported per case and method: W1 to
the reference (:func:`dasim.metrics.wasserstein1`: exact EMD, Euclidean cost on flattened
trajectories; for the reference, the floor between two independent smoother runs), RMSE
of the posterior mean, the mean :math:`\log p(y \mid x)` of the samples, training and
sampling seconds.

Run ``dasim trajectory-smoothing --help``.
"""

from __future__ import annotations

import time

import numpy as np
import xarray as xr
from joblib import delayed
from sklearn.base import clone

from ..metrics import wasserstein1
from ..models import Lorenz63
from ..observations import ObservationModel
from ..smoothers import bootstrap_smoother
from .case import Case
from .report import b3_markdown, plot_b3
from .runner import parallel_map

__all__ = [
    "B3_CASES",
    "b3_markdown",
    "b3_observation",
    "plot_b3",
    "run_b3",
    "simulate_lorenz",
]

WINDOW_LENGTH = 65
METHODS = ("SDA", "SOAD", "reference")


def _model():
    return Lorenz63(dt=0.025, steps_per_cycle=1, process_noise=float(np.sqrt(0.025)))


def _b3_case(name, operator, scale, every, noise_std):
    """A B3 case: ``operator(scale * x_1)`` of the normalised state, every ``every`` times."""
    what = "x_1" if operator == "identity" else f"{operator}({scale:g} x_1)"
    when = "every state" if every == 1 else f"every {every}th state"
    return Case(
        name=name,
        model=_model(),
        observation=ObservationModel(operator, noise_std=noise_std, indices=[0], scale=scale),
        n_cycles=WINDOW_LENGTH,
        burn_in=0,
        truth_noise=True,
        filter_noise=_model().process_noise,
        description=f"Lorenz-63 windows of {WINDOW_LENGTH} states, {what} of the normalised "
        f"state observed at {when}, noise std {noise_std}",
        observe_every=every,
    )


B3_CASES = {
    case.name: case
    for case in (
        _b3_case("b3-lo", "identity", 1.0, every=8, noise_std=0.05),
        _b3_case("b3-hi", "identity", 1.0, every=1, noise_std=0.25),
        _b3_case("b3-sin", "sin", 3.0, every=4, noise_std=0.1),
        _b3_case("b3-atan", "arctan", 3.0, every=4, noise_std=0.1),
    )
}
"""dict: the B3 cases by name, each a :class:`~dasim.benchmarks.case.Case`: the noisy
Lorenz-63 model, the observation (of the first *normalised* component), the time stride
``observe_every``; ``n_cycles`` is the window length. The windows, the training set and
their normalisation are drawn per run (:func:`run_b3`), not per case."""


def b3_observation(case):
    """The observation model and time stride of a B3 case.

    Parameters
    ----------
    case : str
        One of ``"b3-lo"``, ``"b3-hi"``, ``"b3-sin"``, ``"b3-atan"``.

    Returns
    -------
    observation : ObservationModel
        Acts on normalised Lorenz-63 states (a fresh clone of the case's).
    every : int
        Observed times are ``0, every, 2 * every, ...``.

    Examples
    --------
    >>> obs, every = b3_observation("b3-sin")
    >>> obs.operator, obs.scale, every
    ('sin', 3.0, 4)
    """
    if case not in B3_CASES:
        raise ValueError(f"unknown B3 case {case!r}; choose from {sorted(B3_CASES)}.")
    spec = B3_CASES[case]
    return clone(spec.observation), spec.observe_every


def simulate_lorenz(n_traj, n_times, *, burn_in=1024, random_state=None):
    """Noisy Lorenz-63 trajectories of B3, vectorised over trajectories.

    Parameters
    ----------
    n_traj, n_times : int
        Number and length of the trajectories.
    burn_in : int, default=1024
        Steps dropped at the start (from the model's climatology).
    random_state : int, numpy.random.Generator or None
        Seed.

    Returns
    -------
    ndarray of shape (n_traj, n_times, 3)
        Physical states.

    Examples
    --------
    >>> simulate_lorenz(2, 5, burn_in=10, random_state=0).shape
    (2, 5, 3)
    """
    rng = np.random.default_rng(random_state)
    model = _model()
    x = model.climatology(int(n_traj), rng)
    for _ in range(int(burn_in)):
        x = model.forecast(x, rng)
    out = np.empty((int(n_traj), int(n_times), 3))
    for t in range(int(n_times)):
        x = model.forecast(x, rng)
        out[:, t] = x
    return out


class _OnNormalised:
    """``x -> h((x - mean) / std)``: a B3 operator (on normalised states) on physical ones."""

    def __init__(self, observation, mean, std):
        self.observation = observation
        self.mean = mean
        self.std = std

    def __call__(self, x):
        if type(x).__module__.startswith("torch"):
            return self.observation.apply((x - x.new_tensor(self.mean)) / x.new_tensor(self.std))
        return self.observation.apply((np.asarray(x, dtype=np.float64) - self.mean) / self.std)


def _on_physical(observation, mean, std):
    """The observation model of a B3 case for physical Lorenz-63 states."""
    return ObservationModel(_OnNormalised(observation, mean, std), noise_std=observation.noise_std)


def _trajectory_w1(a, b):
    """W1 between two sets of trajectories ``(n, L, d)``, each flattened into one point."""
    return wasserstein1(a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1))


def _window_loglik(obs, y, samples):
    """Mean over samples of sum_t log p(y_t | x_t) (NaN entries skipped)."""
    pred = obs.apply(samples)  # (n, L, n_obs)
    std = np.asarray(obs.noise_std, dtype=np.float64)
    observed = ~np.isnan(y)
    z = np.where(observed, (pred - np.nan_to_num(y)) / std, 0.0)
    const = np.sum(observed * np.log(2 * np.pi * std**2))
    return float(np.mean(-0.5 * (z**2).sum(axis=(1, 2)) - 0.5 * const))


def _settings(smoke, n_train_traj, n_train_times, n_epochs, n_test, n_samples, overrides):
    s = {
        "n_train_traj": n_train_traj,
        "n_train_times": n_train_times,
        "burn_in": 1024,
        "n_epochs": n_epochs,
        "n_test": n_test,
        "n_samples": n_samples,
        "n_particles": 16384,
        "window": 2,
        "width": 128,
        "depth": 3,
        "batch_size": 256,
        "learning_rate": 1e-3,
        "n_steps": 64,
        "n_corrections": 1,
        "gamma": 1e-2,
        "gamma_units": "observation",
        "epoch_size": None,
    }
    if smoke:
        s.update(
            n_train_traj=16,
            n_train_times=64,
            burn_in=64,
            n_epochs=1,
            n_test=2,
            n_samples=8,
            n_particles=512,
            width=16,
            depth=1,
            n_steps=4,
        )
    s.update(overrides)
    return s


def _one_seed(cases, seed, s):
    from ..assimilators import SDAAssimilator, SOADAssimilator

    rng = np.random.default_rng(seed)
    train = simulate_lorenz(
        s["n_train_traj"], s["n_train_times"], burn_in=s["burn_in"], random_state=rng
    )
    test = simulate_lorenz(s["n_test"], WINDOW_LENGTH, burn_in=s["burn_in"], random_state=rng)
    flat = train.reshape(-1, 3)
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    # The cases, the reference and the metrics live on normalised states; SOAD gets
    # physical ones (it standardises internally) with the operators mapped to them, SDA
    # the normalised ones (the paper's configuration, below).
    train_phys = train
    train = (train - mean) / std
    test = (test - mean) / std
    pool = train.reshape(-1, 3)
    model = _model()

    def initial(n, r):
        return pool[r.integers(0, pool.shape[0], size=n)]

    def transition(z, r):
        return (model.forecast(z * std + mean, r) - mean) / std

    common = {
        "n_members": s["n_samples"],
        "window": s["window"],
        "n_epochs": s["n_epochs"],
        "n_steps": s["n_steps"],
        "n_corrections": s["n_corrections"],
        "width": s["width"],
        "depth": s["depth"],
        "batch_size": s["batch_size"],
        "learning_rate": s["learning_rate"],
        "epoch_size": s["epoch_size"],
        "progress": False,
        "device": "cpu" if s.get("cpu", False) else "auto",
        "n_threads": s.get("n_threads"),
    }
    first_obs, _ = b3_observation(cases[0])
    # SDA as in the paper: normalised states, the cases' operators as they are, and the
    # paper's gamma in the squared units of y. (Its guidance evaluates h on float32
    # states: physical ones put through _on_physical would change its figures by float32
    # round-off, amplified by the sampler.)
    sda = SDAAssimilator(
        first_obs, gamma=s["gamma"], gamma_units=s["gamma_units"], random_state=seed, **common
    )
    start = time.perf_counter()
    sda.fit(train)
    sda_train = time.perf_counter() - start

    keys = ("w1", "rmse", "log_likelihood", "train_seconds", "sample_seconds")
    out = {k: np.full((len(cases), len(METHODS)), np.nan) for k in keys}
    floor = np.full(len(cases), np.nan)
    for c, case in enumerate(cases):
        obs, every = b3_observation(case)
        unobserved = np.arange(WINDOW_LENGTH) % every != 0
        obs_phys = _on_physical(obs, mean, std)
        soad = SOADAssimilator(obs_phys, random_state=seed, **common)
        start = time.perf_counter()
        soad.fit(train_phys)
        soad_train = time.perf_counter() - start
        # SDA's prior is observation-free: reuse the network, re-resolve the operator
        # and its training statistics.
        sda.set_params(observation=obs)
        sda._resolve_observation(train[:1], None)
        sda._fit_obs_stats(train)
        per = {k: [] for k in keys}
        floors = []
        for w in range(s["n_test"]):
            y = obs.simulate(test[w], random_state=rng)
            y[unobserved] = np.nan

            def loglik(yt, z, obs=obs):
                return obs.log_likelihood_from_predicted(yt, obs.apply(z))

            def smooth(y=y, loglik=loglik):
                return bootstrap_smoother(
                    y,
                    initial,
                    transition,
                    loglik,
                    n_particles=s["n_particles"],
                    n_samples=s["n_samples"],
                    random_state=rng,
                )[0]

            start = time.perf_counter()
            ref = smooth()
            ref_seconds = time.perf_counter() - start
            ref2 = smooth()
            floors.append(_trajectory_w1(ref, ref2))
            row = {}
            for name, est, fit_s in (("SDA", sda, sda_train), ("SOAD", soad, soad_train)):
                ds = est.assimilate(y, random_state=int(rng.integers(2**31)))
                samples = np.swapaxes(ds["analysis"].values, 0, 1)
                if est is soad:  # physical samples
                    samples = (samples - mean) / std
                row[name] = (samples, fit_s, ds.attrs["sampling_seconds"])
            row["reference"] = (ref, 0.0, ref_seconds)
            for m, name in enumerate(METHODS):
                samples, fit_s, samp_s = row[name]
                w1 = floors[-1] if name == "reference" else _trajectory_w1(samples, ref)
                per["w1"].append((m, w1))
                err = np.sqrt(np.mean((samples.mean(axis=0) - test[w]) ** 2))
                per["rmse"].append((m, err))
                per["log_likelihood"].append((m, _window_loglik(obs, y, samples)))
                per["train_seconds"].append((m, fit_s))
                per["sample_seconds"].append((m, samp_s))
        for k in keys:
            for m in range(len(METHODS)):
                out[k][c, m] = np.mean([v for i, v in per[k] if i == m])
        floor[c] = np.mean(floors)
    return out, floor


def run_b3(
    case,
    *,
    n_train_traj=1024,
    n_train_times=1024,
    n_epochs=10,
    n_test=8,
    n_samples=64,
    seeds=(0,),
    smoke=False,
    n_jobs=None,
    **settings,
):
    """Run benchmark B3 for one or several cases.

    Per seed: simulate the training and test trajectories, train SDA once (its prior does
    not depend on the observations) and SOAD once per case, compute the reference
    smoother twice per test window (for the floor), and score both assimilators.

    Parameters
    ----------
    case : str or sequence of str
        Case name(s) of :data:`B3_CASES`.
    n_train_traj, n_train_times : int, default=1024, 1024
        Training trajectories and their length (after a burn-in of ``burn_in`` steps).
    n_epochs : int, default=10
        Training epochs (an epoch draws ``n_train_traj * (n_train_times // 5)`` windows
        unless ``epoch_size`` is given).
    n_test : int, default=8
        Test windows of 65 states per case.
    n_samples : int, default=64
        Posterior samples per window, for each method and each reference run.
    seeds : sequence of int, default=(0,)
        Independent repetitions (data, training, observations).
    smoke : bool, default=False
        Tiny settings that run in seconds (checks the plumbing, not the methods).
    n_jobs : int, optional
        Parallel joblib jobs over seeds (serial by default).
    **settings
        Overrides of ``burn_in``, ``n_particles`` (16384), ``window`` (2), ``width`` (128),
        ``depth`` (3), ``batch_size`` (256), ``learning_rate``, ``n_steps`` (64),
        ``n_corrections`` (1), ``gamma`` (1e-2), ``gamma_units`` (``"observation"``:
        SDA's convention, as in the paper; see
        :class:`~dasim.assimilators.SDAAssimilator`), ``epoch_size``, ``cpu`` (bool),
        ``n_threads`` (the assimilators' torch threads; default: theirs).

    Returns
    -------
    xarray.Dataset
        ``w1``, ``rmse``, ``log_likelihood``, ``train_seconds``, ``sample_seconds`` with dims
        ``(case, method, seed)``, methods ``SDA``, ``SOAD`` and ``reference`` (for which
        ``w1`` is the reference-vs-reference floor), ``w1_floor`` ``(case, seed)``; the
        settings in ``attrs``.

    Examples
    --------
    >>> ds = run_b3("b3-hi", smoke=True)  # doctest: +SKIP
    >>> ds["w1"].sel({"method": "SDA"})  # doctest: +SKIP
    """
    cases = [case] if isinstance(case, str) else list(case)
    for c in cases:
        b3_observation(c)
    s = _settings(smoke, n_train_traj, n_train_times, n_epochs, n_test, n_samples, settings)
    seeds = [int(v) for v in seeds]
    results = parallel_map((delayed(_one_seed)(cases, sd, s) for sd in seeds), n_jobs)
    data = {}
    for k in results[0][0]:
        data[k] = (("case", "method", "seed"), np.stack([r[0][k] for r in results], axis=-1))
    data["w1_floor"] = (("case", "seed"), np.stack([r[1] for r in results], axis=-1))
    attrs = {k: ("None" if v is None else v) for k, v in s.items()}
    attrs.update(smoke=int(bool(smoke)), window_length=WINDOW_LENGTH)
    return xr.Dataset(
        data, coords={"case": cases, "method": list(METHODS), "seed": seeds}, attrs=attrs
    )
