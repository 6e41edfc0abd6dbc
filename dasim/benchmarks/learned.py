"""B4, learned row: training seconds to a fixed loss, and samples a second.

``dasim bench learned`` runs :func:`time_learned` on the B3 data (Lorenz-63 trajectories,
normalised): each learned assimilator is trained with a per-epoch clock, and the time
and optimiser steps until its validation loss first reaches ``target_loss`` are read
from the training history; then unconditional (prior) and guided (posterior) sampling
are timed on one 65-state window. On a machine with CUDA, ``device="cuda"`` gives the
GPU figures with the same code.
"""

from __future__ import annotations

import time

import numpy as np
import xarray as xr

from .._validation import check_positive
from .b3 import WINDOW_LENGTH, b3_observation, simulate_lorenz

__all__ = ["time_learned"]


def time_learned(
    case="b3-lo",
    *,
    target_loss=0.11,
    n_train_traj=256,
    n_train_times=512,
    n_epochs=40,
    epoch_size=25_600,
    width=128,
    depth=3,
    batch_size=256,
    n_samples=64,
    n_steps=64,
    device="cpu",
    random_state=0,
):
    """Time training to a fixed validation loss, and sampling, for SDA and SOAD.

    Parameters
    ----------
    case : str, default="b3-lo"
        A B3 case (:data:`dasim.benchmarks.b3.B3_CASES`); it sets the observation of the
        posterior sampling and SOAD's augmented channels.
    target_loss : float, default=0.11
        The fixed validation loss (denoising mean squared error per entry, on the
        normalised data; an epsilon of zero scores 1).
    n_train_traj, n_train_times : int, default=256, 512
        Training trajectories and their length.
    n_epochs : int, default=40
        Training epochs (the learning rate decays linearly over all of them).
    epoch_size : int, default=25600
        Training windows per epoch.
    width, depth : int, default=128, 3
        Residual MLP size.
    batch_size : int, default=256
        Training batch.
    n_samples : int, default=64
        Trajectories drawn per timing (prior and posterior).
    n_steps : int, default=64
        Predictor steps of the sampler (one Langevin correction each).
    device : str, default="cpu"
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    random_state : int, default=0
        Seed of the data, the networks and the samplers.

    Returns
    -------
    xarray.Dataset
        Dim ``method`` (``SDA``, ``SOAD``): ``seconds_to_target`` and ``steps_to_target``
        (NaN if the target was never reached), ``best_valid_loss``,
        ``train_steps_per_second``, ``train_seconds``, ``prior_samples_per_second`` and
        ``posterior_samples_per_second``; the settings and the device in ``attrs``.

    Examples
    --------
    >>> from dasim.benchmarks.learned import time_learned
    >>> ds = time_learned(n_train_traj=8, n_train_times=64, n_epochs=2,
    ...                   epoch_size=256, width=16, depth=1, n_samples=4,
    ...                   n_steps=4)  # doctest: +SKIP
    >>> sorted(ds["method"].values)  # doctest: +SKIP
    ['SDA', 'SOAD']
    """
    from ..assimilators import SDAAssimilator, SOADAssimilator

    check_positive(target_loss, "target_loss")
    obs, every = b3_observation(case)  # raises for an unknown case
    rng = np.random.default_rng(random_state)
    train = simulate_lorenz(n_train_traj, n_train_times, random_state=rng)
    test = simulate_lorenz(1, WINDOW_LENGTH, random_state=rng)[0]
    mean = train.reshape(-1, 3).mean(axis=0)
    std = train.reshape(-1, 3).std(axis=0)
    train, test = (train - mean) / std, (test - mean) / std
    y = obs.simulate(test, random_state=rng)
    y[np.arange(WINDOW_LENGTH) % every != 0] = np.nan
    settings = {
        "n_members": n_samples,
        "window": 2,
        "n_epochs": n_epochs,
        "epoch_size": epoch_size,
        "width": width,
        "depth": depth,
        "batch_size": batch_size,
        "n_steps": n_steps,
        "progress": False,
        "device": device,
        "random_state": random_state,
    }
    names = ("SDA", "SOAD")
    keys = (
        "seconds_to_target",
        "steps_to_target",
        "best_valid_loss",
        "train_steps_per_second",
        "train_seconds",
        "prior_samples_per_second",
        "posterior_samples_per_second",
    )
    out = {k: np.full(len(names), np.nan) for k in keys}
    used_device = None
    for m, cls in enumerate((SDAAssimilator, SOADAssimilator)):
        est = cls(obs, **settings).fit(train)
        used_device = str(est.device_)
        h = est.history_
        valid = np.asarray(h["valid_loss"])
        hit = np.flatnonzero(valid <= target_loss)
        if hit.size:
            out["seconds_to_target"][m] = h["elapsed"][hit[0]]
            out["steps_to_target"][m] = h["n_steps"] / h["n_epochs"] * (hit[0] + 1)
        out["best_valid_loss"][m] = valid.min()
        out["train_seconds"][m] = h["seconds"]
        out["train_steps_per_second"][m] = h["n_steps"] / h["seconds"]
        start = time.perf_counter()
        est.sample(n_samples, n_times=WINDOW_LENGTH, random_state=random_state)
        out["prior_samples_per_second"][m] = n_samples / (time.perf_counter() - start)
        ds = est.assimilate(y, random_state=random_state)
        out["posterior_samples_per_second"][m] = n_samples / ds.attrs["sampling_seconds"]
    attrs = {
        "case": case,
        "target_loss": float(target_loss),
        "device": used_device,
        **{k: v for k, v in settings.items() if k not in ("progress", "device")},
        "n_train_traj": n_train_traj,
        "n_train_times": n_train_times,
    }
    return xr.Dataset(
        {k: (("method",), v) for k, v in out.items()},
        coords={"method": list(names)},
        attrs=attrs,
    )
