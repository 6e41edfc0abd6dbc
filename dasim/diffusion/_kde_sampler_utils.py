"""What the KDE samplers share: input checks, the start of the reverse flow, the shared
parameter documentation.

Also imported by :mod:`dasim.diffusion.kde_local`. The public names are documented, and
imported, from :mod:`dasim.diffusion.kde_sampling`.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from scipy.special import logsumexp

from dasim._random import as_generator
from dasim.diffusion._kde_core import _check_log_weights, _check_matrix
from dasim.diffusion._xp import is_tensor as _is_tensor

# Parameter descriptions the samplers share (filled in by ``_fill_doc``).
_DOC_PARAMS = {
    "centres_params": """\
    X : numpy.ndarray of shape (N, d)
        Centres: the centred forecast ensemble.
    log_w_obs : numpy.ndarray of shape (N,) or None
        Observation log-weights :math:`\\ell_i` (``-inf`` allowed; None: uniform, the prior
        KDE).
    schedule : VESchedule or VPSchedule
        The diffusion schedule (:mod:`dasim.diffusion.schedules`).
    rng : numpy.random.Generator
        Source of randomness (an int or None seeds a new Generator).
    n_samples : int, optional
        Number of samples (default N).
""",
    "backend_params": """\
    backend : {"numpy", "torch"}, default="numpy"
        Compute with numpy, or with torch on ``device`` (and return a tensor there).
    device : str, optional
        The torch device (``"auto"``, the default, picks CUDA when available).
""",
    "score_params": """\
    chunk_size : int or tuple of (int, int), optional
        Tile of the score computation (see :func:`dasim.diffusion.kde.kde_score`).
    memory_budget : int, optional
        Bytes for the pairwise temporaries of one score tile (default 256 MiB).
    x_start : numpy.ndarray of shape (n_samples, d), optional
        Given start at ``t = 1`` instead of the Gaussian draw.
""",
}


def _fill_doc(func):
    """Put the shared parameter descriptions into ``func``'s docstring."""
    if func.__doc__:  # None under python -OO
        for key, text in _DOC_PARAMS.items():
            func.__doc__ = func.__doc__.replace(f"    %({key})s\n", text)
    return func


def _check_rng(rng):
    if isinstance(rng, numbers.Integral):
        # The samplers read an int as numpy does (default_rng(seed)), not through a
        # RandomState as the estimators' random_state: SeedSequence(seed) is that stream.
        rng = np.random.SeedSequence(rng)
    if rng is None or isinstance(rng, np.random.Generator | np.random.SeedSequence):
        return as_generator(rng)
    raise TypeError(f"rng must be a numpy.random.Generator, an int or None, got {rng!r}.")


def _normalised_weights(log_w):
    return np.exp(log_w - logsumexp(log_w))


def reverse_start_std(schedule, X, log_w_obs=None):
    r"""Standard deviation of the Gaussian the reverse ODE/SDE starts from at ``t = 1``.

    For the VE schedule it is ``schedule.prior_std`` :math:`= \sigma_{max}` (as in the
    authors' code). For schedules with ``moment_matched_start`` (VP) it is the
    root-mean-square per component of the diffused mixture at ``t_start``, in the centred
    coordinates the samplers work in:

    .. math::

        s_1 = \sqrt{\bar\sigma(1)^2 + \mu(1)^2\, \textstyle\sum_i \pi_i \lVert x_i\rVert^2 / d}.

    Parameters
    ----------
    schedule : VESchedule or VPSchedule
        The diffusion schedule.
    X : numpy.ndarray of shape (N, d)
        Centres (the centred forecast ensemble).
    log_w_obs : numpy.ndarray of shape (N,), optional
        Observation log-weights (uniform when None).

    Returns
    -------
    float
        The standard deviation :math:`s_1`.

    Examples
    --------
    >>> from dasim.diffusion.schedules import VESchedule
    >>> reverse_start_std(VESchedule(0.5, 30.0), np.zeros((3, 2)))
    30.0
    """
    if not getattr(schedule, "moment_matched_start", False):
        return float(schedule.prior_std)
    X = np.asarray(X, dtype=np.float64)
    log_w = _check_log_weights(log_w_obs, X.shape[0])
    pi = _normalised_weights(log_w)
    m2 = float(pi @ np.einsum("ij,ij->i", X, X)) / X.shape[1]
    t1 = schedule.t_start
    return math.sqrt(float(schedule.sigmabar2(t1)) + float(schedule.mu(t1)) ** 2 * m2)


def _prepare(X, log_w_obs, n_samples, backend):
    if backend not in ("numpy", "torch"):
        raise ValueError(f"backend must be 'numpy' or 'torch', got {backend!r}.")
    if _is_tensor(X):
        X = X.detach().cpu().numpy()
    if _is_tensor(log_w_obs):
        log_w_obs = log_w_obs.detach().cpu().numpy()
    X = _check_matrix(X, "X")
    log_w = _check_log_weights(log_w_obs, X.shape[0])
    if n_samples is None:
        n_samples = X.shape[0]
    if (
        isinstance(n_samples, bool)
        or not isinstance(n_samples, numbers.Integral)
        or (n_samples < 1)
    ):
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
    return X, log_w, int(n_samples)


def _start(x_start, schedule, X, log_w, n, rng):
    if x_start is None:
        std = reverse_start_std(schedule, X, log_w)
        return std * rng.standard_normal((n, X.shape[1])), std
    if _is_tensor(x_start):
        x_start = x_start.detach().cpu().numpy()
    x_start = _check_matrix(x_start, "x_start", ncols=X.shape[1])
    if x_start.shape[0] != n:
        raise ValueError(f"x_start must have {n} rows (n_samples), got {x_start.shape[0]}.")
    return x_start, None


def _check_tolerance(value, name):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not (math.isfinite(value) and value > 0)
    ):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}.")
