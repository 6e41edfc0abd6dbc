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

Run ``python -m dasim.benchmarks.b3 --help``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import xarray as xr
from joblib import Parallel, delayed

from ..metrics import wasserstein1
from ..models import Lorenz63
from ..observations import ObservationModel
from ..smoothers import bootstrap_smoother

__all__ = ["B3_CASES", "b3_markdown", "b3_observation", "plot_b3", "run_b3", "simulate_lorenz"]

B3_CASES = {
    "b3-lo": {"operator": "identity", "scale": 1.0, "every": 8, "noise_std": 0.05},
    "b3-hi": {"operator": "identity", "scale": 1.0, "every": 1, "noise_std": 0.25},
    "b3-sin": {"operator": "sin", "scale": 3.0, "every": 4, "noise_std": 0.1},
    "b3-atan": {"operator": "arctan", "scale": 3.0, "every": 4, "noise_std": 0.1},
}
"""dict: the B3 cases: operator on the first normalised component, time stride, noise."""

WINDOW_LENGTH = 65
METHODS = ("SDA", "SOAD", "reference")


def b3_observation(case):
    """The observation model and time stride of a B3 case.

    Parameters
    ----------
    case : str
        One of ``"b3-lo"``, ``"b3-hi"``, ``"b3-sin"``, ``"b3-atan"``.

    Returns
    -------
    observation : ObservationModel
        Acts on normalised Lorenz-63 states.
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
    obs = ObservationModel(
        spec["operator"], noise_std=spec["noise_std"], indices=[0], scale=spec["scale"]
    )
    return obs, spec["every"]


def _model():
    return Lorenz63(dt=0.025, steps_per_cycle=1, process_noise=float(np.sqrt(0.025)))


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

            start = time.perf_counter()
            ref, _ = bootstrap_smoother(
                y,
                initial,
                transition,
                loglik,
                n_particles=s["n_particles"],
                n_samples=s["n_samples"],
                random_state=rng,
            )
            ref_seconds = time.perf_counter() - start
            ref2, _ = bootstrap_smoother(
                y,
                initial,
                transition,
                loglik,
                n_particles=s["n_particles"],
                n_samples=s["n_samples"],
                random_state=rng,
            )
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
    results = Parallel(n_jobs=n_jobs)(delayed(_one_seed)(cases, sd, s) for sd in seeds)
    data = {}
    for k in results[0][0]:
        data[k] = (("case", "method", "seed"), np.stack([r[0][k] for r in results], axis=-1))
    data["w1_floor"] = (("case", "seed"), np.stack([r[1] for r in results], axis=-1))
    attrs = {k: ("None" if v is None else v) for k, v in s.items()}
    attrs.update(smoke=int(bool(smoke)), window_length=WINDOW_LENGTH)
    return xr.Dataset(
        data, coords={"case": cases, "method": list(METHODS), "seed": seeds}, attrs=attrs
    )


def b3_markdown(ds):
    """A markdown table (seed means) of a :func:`run_b3` result.

    Parameters
    ----------
    ds : xarray.Dataset
        Output of :func:`run_b3`.

    Returns
    -------
    str
        One row per case and method.

    Examples
    --------
    >>> print(b3_markdown(ds))  # doctest: +SKIP
    """
    head = "| case | method | W1 to reference | RMSE | mean log p(y\\|x) | train s | sample s |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for case in ds["case"].values:
        for method in ds["method"].values:
            v = {
                k: float(ds[k].sel({"case": case, "method": method}).mean())
                for k in ("w1", "rmse", "log_likelihood", "train_seconds", "sample_seconds")
            }
            w1 = f"{v['w1']:.2f}" + (" (floor)" if method == "reference" else "")
            lines.append(
                f"| {case} | {method} | {w1} | {v['rmse']:.3f} | {v['log_likelihood']:.1f} | "
                f"{v['train_seconds']:.0f} | {v['sample_seconds']:.1f} |"
            )
    return "\n".join(lines)


def plot_b3(ds, path=None):
    """Bar charts of W1 (with the floor) and RMSE per case and method.

    Parameters
    ----------
    ds : xarray.Dataset
        Output of :func:`run_b3`.
    path : str, optional
        Where to save the figure (matplotlib Agg backend).

    Returns
    -------
    matplotlib.figure.Figure
        The figure.

    Examples
    --------
    >>> plot_b3(ds, "b3.png")  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(ds["case"].values)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    x = np.arange(len(cases))
    for ax, metric, title in ((axes[0], "w1", "W1 to reference"), (axes[1], "rmse", "RMSE")):
        for m, method in enumerate(ds["method"].values):
            vals = ds[metric].sel({"method": method}).mean("seed").values
            label = "reference (floor)" if method == "reference" and metric == "w1" else method
            ax.bar(x + (m - 1) * 0.27, vals, width=0.27, label=label)
        ax.set_xticks(x, cases)
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


#: Size options of the command line that ``--smoke`` fixes, and those it leaves to the user.
_SMOKE_FIXED = {
    "n_train_traj": "training trajectories (default: 1024)",
    "n_train_times": "states per training trajectory (default: 1024)",
    "n_epochs": "training epochs (default: 10)",
    "n_test": "test windows per case and seed (default: 8)",
    "n_samples": "posterior samples per window and method (default: 64)",
}
_OVERRIDES = {
    "epoch_size": "windows per epoch (default: n_train_traj * (n_train_times // 5))",
    "n_steps": "sampler steps (default: 64)",
    "width": "score network width (default: 128)",
    "depth": "score network depth (default: 3)",
    "n_particles": "particles of the reference smoother (default: 16384)",
}


def _parser():
    """The argument parser of :func:`main` (every option with its help)."""
    from ..cli import _positive_int

    parser = argparse.ArgumentParser(
        prog="python -m dasim.benchmarks.b3",
        description=__doc__.splitlines()[0]
        + " Settings and results: docs/benchmarks_b3.md. Prints the table; --out and "
        "--plot write the results and the plot.",
    )
    add = parser.add_argument
    add(
        "--cases",
        nargs="+",
        default=list(B3_CASES),
        choices=list(B3_CASES),
        help="the cases to run (default: all)",
    )
    # The sizes default to None so that one given with --smoke, which fixes it, can be
    # refused; run_b3's own defaults apply otherwise.
    for name, text in _SMOKE_FIXED.items():
        add("--" + name.replace("_", "-"), type=_positive_int, help=text + "; not with --smoke")
    for name, text in _OVERRIDES.items():
        add("--" + name.replace("_", "-"), type=_positive_int, help=text)
    add("--seeds", type=int, nargs="+", default=[0], help="seeds, space-separated (default: 0)")
    add(
        "--threads",
        type=_positive_int,
        default=None,
        help="torch threads for training and sampling (the assimilators' n_threads; "
        "default: theirs)",
    )
    add(
        "--smoke",
        action="store_true",
        help="a seconds-long version (tiny training set, network and reference)",
    )
    add(
        "--out",
        default=None,
        metavar="FILE.nc",
        help="netCDF file the results are written to (default: none)",
    )
    add(
        "--plot",
        default=None,
        metavar="FILE.png",
        help="PNG file the plot is written to (default: none)",
    )
    return parser


def main(argv=None):
    """Command line: ``python -m dasim.benchmarks.b3 --cases b3-sin b3-atan --out b3.nc``.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (``sys.argv[1:]`` by default); ``--help`` lists them.

    Returns
    -------
    xarray.Dataset
        The result of :func:`run_b3`.

    Examples
    --------
    >>> from dasim.benchmarks.b3 import main
    >>> ds = main(["--cases", "b3-hi", "--smoke"])  # doctest: +SKIP
    """
    from pathlib import Path

    parser = _parser()
    args = parser.parse_args(argv)
    for flag, path in (("--out", args.out), ("--plot", args.plot)):
        if path is not None and Path(path).is_dir():
            parser.error(f"{flag} is a file to write, but {path!r} is a directory")
    given = {name: getattr(args, name) for name in _SMOKE_FIXED if getattr(args, name)}
    if args.smoke and given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        parser.error(f"--smoke fixes {flags}; drop those options or --smoke")
    given.update({name: getattr(args, name) for name in _OVERRIDES if getattr(args, name)})
    if args.threads:
        given["n_threads"] = args.threads
    ds = run_b3(args.cases, seeds=tuple(args.seeds), smoke=args.smoke, **given)
    print(b3_markdown(ds))
    if args.out:
        ds.to_netcdf(args.out)
    if args.plot:
        plot_b3(ds, args.plot)
    return ds


if __name__ == "__main__":  # pragma: no cover
    main()
