r"""Training loop for epsilon-models on trajectory windows (torch).

The loss is the denoising loss of :func:`~dasim.diffusion.denoising.denoising_loss`,

.. math::

    \mathcal{L}(\phi) = \mathbb{E}_{t \sim \mathcal{U}(0,1),\, x,\, \varepsilon}
    \big\|\varepsilon_\phi(\mu(t) x + \sigma(t) \varepsilon, t) - \varepsilon\big\|^2,

minimised with AdamW and a learning rate decayed linearly to zero over all steps. For a
local score network the samples :math:`x` are random windows of :math:`2k+1` consecutive
states, drawn afresh at every epoch.
"""

from __future__ import annotations

import copy
import math
import time

import torch
from tqdm.auto import tqdm

from dasim._validation import check_positive_int
from dasim.diffusion.denoising import _squared_error, denoising_loss
from dasim.diffusion.windows import check_window, random_windows

__all__ = ["train_eps_model"]

_MAX_VALID = 4096


def _fixed_noise_loss(model, x, t, eps, schedule, batch_size: int) -> float:
    """Denoising loss with pre-drawn ``t`` and ``eps`` (a deterministic validation loss)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            xb, tb, eb = x[i : i + batch_size], t[i : i + batch_size], eps[i : i + batch_size]
            total += float(_squared_error(model, xb, tb, eb, schedule).sum())
            count += eb.numel()
    return total / count


def train_eps_model(
    model: torch.nn.Module,
    data,
    schedule,
    *,
    window: int | None = None,
    n_epochs: int = 100,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-3,
    epoch_size: int | None = None,
    validation_fraction: float = 0.1,
    patience: int | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    device=None,
    progress: bool = True,
) -> dict:
    r"""Train an epsilon-model with the denoising loss (in place) and return its history.

    Parameters
    ----------
    model : torch.nn.Module
        Epsilon-model ``model(x, t)`` with ``t`` of shape ``(B,)``.
    data : torch.Tensor or array_like
        With ``window=k``: trajectories ``(n_traj, n_times, D)``; each epoch draws
        ``epoch_size`` random windows of ``2k+1`` states from the training trajectories
        (:func:`~dasim.diffusion.windows.random_windows`). With ``window=None``: training
        samples ``(n, ...)`` used as they are (one shuffled pass per epoch).
    schedule : callable
        ``schedule(t) -> (mu, sigma)``.
    window : int, optional
        Window order :math:`k`; see ``data``.
    n_epochs : int, default=100
        Maximum number of epochs.
    batch_size : int, default=64
        Mini-batch size.
    learning_rate : float, default=1e-3
        Initial AdamW learning rate, decayed linearly to 0 at the last step.
    weight_decay : float, default=1e-3
        AdamW weight decay.
    epoch_size : int, optional
        Windows per epoch (``window`` given). Default: as many as fit without overlap,
        ``n_train_traj * max(1, n_times // (2k+1))``.
    validation_fraction : float, default=0.1
        Held-out fraction in ``[0, 1)``: whole trajectories when there are at least two,
        else the last part of the single trajectory's time axis; samples when
        ``window=None``. The validation loss uses fixed windows and fixed noise drawn once,
        so it is comparable across epochs.
    patience : int, optional
        Early stopping: stop after ``patience`` epochs without a lower validation loss. The
        weights of the best validation epoch are restored at the end whenever there is a
        validation set.
    seed : int, optional
        Seed of the generator for every draw (windows, split, times, noise).
    generator : torch.Generator, optional
        Alternatively, a generator on ``device`` (not together with ``seed``).
    device : str or torch.device, optional
        Where to train; default: the device of the model's parameters.
    progress : bool, default=True
        Show a tqdm progress bar over epochs.

    Returns
    -------
    dict
        ``train_loss`` and ``valid_loss`` (lists, one value per epoch; ``valid_loss`` is
        empty without validation), ``lr`` (learning rate at the end of each epoch),
        ``best_epoch`` (index, or ``None``), ``n_epochs`` (run), ``n_steps``,
        ``stopped_early`` (bool), ``seconds`` (wall time) and ``elapsed`` (wall seconds
        since the start at the end of each epoch, validation included).

    Notes
    -----
    On CPU two calls with the same ``seed`` and the same initial weights give identical
    weights. The model is left in ``eval`` mode.

    Examples
    --------
    >>> import torch
    >>> from dasim.diffusion.networks import LocalScoreNet
    >>> from dasim.diffusion.training import train_eps_model
    >>> from dasim.diffusion.schedules import CosineSchedule
    >>> trajectories = torch.randn(4, 12, 2)
    >>> net = LocalScoreNet(n_state=2, window=1, width=8, depth=1, embedding=4)
    >>> history = train_eps_model(
    ...     net, trajectories, CosineSchedule(), window=1, n_epochs=2, seed=0, progress=False
    ... )
    >>> history["n_epochs"], len(history["train_loss"]), len(history["valid_loss"])
    (2, 2, 2)
    """
    if not isinstance(model, torch.nn.Module):
        raise ValueError("model must be a torch.nn.Module")
    n_epochs = check_positive_int(n_epochs, "n_epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    learning_rate = float(learning_rate)
    if not (learning_rate >= 0 and math.isfinite(learning_rate)):
        raise ValueError(f"learning_rate must be non-negative and finite, got {learning_rate!r}")
    weight_decay = float(weight_decay)
    if not (weight_decay >= 0 and math.isfinite(weight_decay)):
        raise ValueError(f"weight_decay must be non-negative and finite, got {weight_decay!r}")
    validation_fraction = float(validation_fraction)
    if not (0.0 <= validation_fraction < 1.0):
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}")
    if patience is not None:
        patience = check_positive_int(patience, "patience")
        if validation_fraction == 0.0:
            raise ValueError("patience needs a validation set: set validation_fraction > 0")
    if seed is not None and generator is not None:
        raise ValueError("give either seed or generator, not both")

    params = list(model.parameters())
    if not params:
        raise ValueError("model has no parameters to train")
    device = torch.device(device) if device is not None else params[0].device
    dtype = params[0].dtype
    model.to(device)
    if generator is None:
        generator = torch.Generator(device=device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(int(seed))

    data = torch.as_tensor(data)
    if not data.is_floating_point():
        raise ValueError(f"data must hold floating-point values, got dtype {data.dtype}")
    data = data.to(device=device, dtype=dtype)
    if data.ndim < 2 or data.shape[0] < 1:
        raise ValueError(f"data must have shape (n, ...), got {tuple(data.shape)}")
    if not torch.isfinite(data).all():
        raise ValueError("data must be finite (no NaN or inf)")

    # ---- train / validation split -------------------------------------------------
    if window is not None:
        k = check_window(window)
        size = 2 * k + 1
        if data.ndim != 3:
            raise ValueError(
                f"data must be trajectories (n_traj, n_times, D) when window is given, got "
                f"shape {tuple(data.shape)}"
            )
        n_traj, n_times = data.shape[:2]
        if n_times < size:
            raise ValueError(
                f"data: n_times={n_times} is shorter than a window of 2k+1={size} states"
            )
        valid = None
        if validation_fraction > 0 and n_traj >= 2:
            n_valid = min(n_traj - 1, max(1, round(validation_fraction * n_traj)))
            perm = torch.randperm(n_traj, generator=generator, device=device)
            train, valid = data[perm[n_valid:]], data[perm[:n_valid]]
        elif validation_fraction > 0:
            n_valid = max(size, round(validation_fraction * n_times))
            if n_times - n_valid < size:
                raise ValueError(
                    f"data: one trajectory of {n_times} states is too short to hold out "
                    f"{n_valid} states for validation; set validation_fraction=0"
                )
            train, valid = data[:, : n_times - n_valid], data[:, n_times - n_valid :]
        else:
            train = data
        if epoch_size is None:
            epoch_size = train.shape[0] * max(1, train.shape[1] // size)
        epoch_size = check_positive_int(epoch_size, "epoch_size")
        if valid is not None:
            # all non-overlapping windows of the validation trajectories, at most _MAX_VALID
            starts = torch.arange(0, valid.shape[1] - size + 1, size, device=device)
            idx = starts[:, None] + torch.arange(size, device=device)
            valid = valid[:, idx].reshape(-1, size, *valid.shape[2:])
            if valid.shape[0] > _MAX_VALID:
                keep = torch.randperm(valid.shape[0], generator=generator, device=device)
                valid = valid[keep[:_MAX_VALID]]
    else:
        n = data.shape[0]
        valid = None
        if validation_fraction > 0:
            if n < 2:
                raise ValueError("data: need at least 2 samples for a validation split")
            n_valid = min(n - 1, max(1, round(validation_fraction * n)))
            perm = torch.randperm(n, generator=generator, device=device)
            train, valid = data[perm[n_valid:]], data[perm[:n_valid]]
        else:
            train = data
        if epoch_size is not None:
            raise ValueError("epoch_size applies only with window; got window=None")
        epoch_size = train.shape[0]

    if valid is not None:
        t_valid = torch.rand(valid.shape[0], generator=generator, device=device, dtype=dtype)
        eps_valid = torch.randn(valid.shape, generator=generator, device=device, dtype=dtype)

    # ---- optimisation ---------------------------------------------------------------
    steps_per_epoch = math.ceil(epoch_size / batch_size)
    total_steps = n_epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    lr_decay = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, 1.0 - step / total_steps)
    )
    history = {
        "train_loss": [],
        "valid_loss": [],
        "lr": [],
        "best_epoch": None,
        "n_epochs": 0,
        "n_steps": 0,
        "stopped_early": False,
        "seconds": 0.0,
        "elapsed": [],
    }
    best_loss, best_state, bad_epochs = math.inf, None, 0
    start = time.perf_counter()
    bar = tqdm(range(n_epochs), disable=not progress, desc="training", unit="epoch")
    for epoch in bar:
        model.train()
        if window is not None:
            samples = random_windows(train, k, epoch_size, generator)
        else:
            samples = train[torch.randperm(train.shape[0], generator=generator, device=device)]
        losses = []
        for i in range(0, epoch_size, batch_size):
            loss = denoising_loss(model, samples[i : i + batch_size], schedule, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            lr_decay.step()
            losses.append(loss.detach())
        history["n_steps"] += len(losses)
        history["train_loss"].append(float(torch.stack(losses).mean()))
        history["lr"].append(optimizer.param_groups[0]["lr"])
        history["n_epochs"] = epoch + 1
        postfix = {"loss": f"{history['train_loss'][-1]:.4f}"}
        if valid is not None:
            model.eval()
            v = _fixed_noise_loss(model, valid, t_valid, eps_valid, schedule, 4 * batch_size)
            history["valid_loss"].append(v)
            postfix["valid"] = f"{v:.4f}"
            if v < best_loss:
                best_loss, bad_epochs = v, 0
                history["best_epoch"] = epoch
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad_epochs += 1
        history["elapsed"].append(time.perf_counter() - start)
        bar.set_postfix(postfix)
        if not math.isfinite(history["train_loss"][-1]):
            raise FloatingPointError(
                f"non-finite training loss at epoch {epoch}; lower learning_rate"
            )
        if patience is not None and bad_epochs >= patience:
            history["stopped_early"] = epoch + 1 < n_epochs
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    history["seconds"] = time.perf_counter() - start
    return history
