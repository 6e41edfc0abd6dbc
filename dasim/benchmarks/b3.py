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

The reference posterior is a bootstrap particle filter-smoother
(:func:`~dasim.benchmarks._smoother.bootstrap_smoother`) with the true dynamics, started
from the stationary law (a pool of training states). Reported per case and method: W1 to
the reference (exact EMD, Euclidean cost on flattened trajectories; for the reference, the
floor between two independent smoother runs), RMSE of the posterior mean, the mean
:math:`\log p(y \mid x)` of the samples, training and sampling seconds.

Run ``python -m dasim.benchmarks.b3 --help``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import xarray as xr
from joblib import Parallel, delayed

from ..models import Lorenz63
from ..observations import ObservationModel
from ._smoother import bootstrap_smoother

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


def _w1(a, b):
    import ot

    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    cost = ot.dist(a, b, metric="euclidean")
    return float(ot.emd2(np.full(len(a), 1 / len(a)), np.full(len(b), 1 / len(b)), cost))


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
    }
    first_obs, _ = b3_observation(cases[0])
    sda = SDAAssimilator(first_obs, gamma=s["gamma"], random_state=seed, **common)
    start = time.perf_counter()
    sda.fit(train)
    sda_train = time.perf_counter() - start

    keys = ("w1", "rmse", "log_likelihood", "train_seconds", "sample_seconds")
    out = {k: np.full((len(cases), len(METHODS)), np.nan) for k in keys}
    floor = np.full(len(cases), np.nan)
    for c, case in enumerate(cases):
        obs, every = b3_observation(case)
        unobserved = np.arange(WINDOW_LENGTH) % every != 0
        soad = SOADAssimilator(obs, random_state=seed, **common)
        start = time.perf_counter()
        soad.fit(train)
        soad_train = time.perf_counter() - start
        # SDA's prior is observation-free: reuse the network, re-resolve the operator.
        sda.set_params(observation=obs)
        sda._resolve_observation(train[:1], None)
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
            floors.append(_w1(ref, ref2))
            row = {}
            for name, est, fit_s in (("SDA", sda, sda_train), ("SOAD", soad, soad_train)):
                ds = est.assimilate(y, random_state=int(rng.integers(2**31)))
                samples = np.swapaxes(ds["analysis"].values, 0, 1)
                row[name] = (samples, fit_s, ds.attrs["sampling_seconds"])
            row["reference"] = (ref, 0.0, ref_seconds)
            for m, name in enumerate(METHODS):
                samples, fit_s, samp_s = row[name]
                per["w1"].append((m, floors[-1] if name == "reference" else _w1(samples, ref)))
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
        ``n_corrections`` (1), ``gamma`` (1e-2), ``epoch_size``, ``cpu`` (bool).

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


def main(argv=None):
    """Command line: ``python -m dasim.benchmarks.b3 --cases b3-sin b3-atan --out b3.nc``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(B3_CASES))
    parser.add_argument("--n-train-traj", type=int, default=1024)
    parser.add_argument("--n-train-times", type=int, default=1024)
    parser.add_argument("--n-epochs", type=int, default=10)
    parser.add_argument("--epoch-size", type=int, default=None)
    parser.add_argument("--n-test", type=int, default=8)
    parser.add_argument("--n-samples", type=int, default=64)
    parser.add_argument("--n-steps", type=int, default=64)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--n-particles", type=int, default=16384)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default=None, help="netCDF output")
    parser.add_argument("--plot", default=None, help="PNG output")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    ds = run_b3(
        args.cases,
        n_train_traj=args.n_train_traj,
        n_train_times=args.n_train_times,
        n_epochs=args.n_epochs,
        n_test=args.n_test,
        n_samples=args.n_samples,
        seeds=tuple(args.seeds),
        smoke=args.smoke,
        epoch_size=args.epoch_size,
        n_steps=args.n_steps,
        width=args.width,
        depth=args.depth,
        n_particles=args.n_particles,
    )
    print(b3_markdown(ds))
    if args.out:
        ds.to_netcdf(args.out)
    if args.plot:
        plot_b3(ds, args.plot)
    return ds


if __name__ == "__main__":  # pragma: no cover
    main()
