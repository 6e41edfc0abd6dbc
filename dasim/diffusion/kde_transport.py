r"""Deterministic transport of an ensemble by the probability flow (encode, then decode).

The reverse probability-flow ODE maps noise to the KDE conditional; started from fresh
Gaussian noise it draws a new sample, which, like resampling, replaces the ensemble by
random draws every cycle. Its forward flow is the inverse map. Encoding the forecast
members with the forward flow of the *prior* KDE (the same centres and kernel, uniform
weights) and decoding the codes with the reverse flow of the *posterior* KDE (the
weighted one) moves every member deterministically:

.. math::

    x_i^a = \Phi^{-1}_{\mathrm{post}}\big(\Phi_{\mathrm{prior}}(x_i)\big),

the composition of two flow maps between the same noise distribution and the two
mixtures, in the spirit of dual diffusion implicit bridges (Su et al., 2023). Where the
weights are uniform the two maps are each other's inverse and the members do not move
(up to the solver's error), so nothing is lost to resampling noise; in one dimension both
maps are monotone and the transport is the optimal (monotone) one between the prior and
posterior mixtures. :func:`transport_ode` is the global transport (the fused closed-form
score, numpy or torch); with the localised score (:mod:`dasim.diffusion.kde_local`) the
transport is local: a component moves only as far as its own local weights say, and
neighbouring components move smoothly together, with no gluing between local analyses.

The fixed-step solvers of :func:`dasim.diffusion.kde_sampling.sample_ode` run in both
directions on the same geometric grid in the noise level.
"""

from __future__ import annotations

import numpy as np

from ._kde_core import _check_log_weights, check_score_dtype
from ._kde_samplers import _kde_score_fn, sample_ode
from ._xp import is_tensor
from .kde import _check_matrix
from .kde_local import local_kde_score, sample_ode_local
from .kde_sampling import _fixed_step_flow, default_ode_steps, ode_sigma_grid
from .solvers import _check_n_steps

__all__ = ["encode_ode", "encode_ode_local", "transport_ode", "transport_ode_local"]

_ENCODE_RETURNS = """Returns
    -------
    codes : numpy.ndarray of shape (n, d)
        The states at ``t_start``.
    nfev : int
        Score evaluations.
"""


_TRANSPORT_PARAMS = """schedule : VESchedule or VPSchedule
        The diffusion schedule.
    members : numpy.ndarray of shape (n, d)
        The states to move (usually the centred forecast members themselves).
    solver : {"heun", "ab2", "ab3"}, default="ab3"
        The fixed-step solver of both flows.
    n_steps : int, optional
        Steps of each flow (default: 20 score evaluations each)."""

_TRANSPORT_RETURNS = """Returns
    -------
    analysis : numpy.ndarray of shape (n, d)
        The moved members, float64.
    info : dict
        ``sampler`` (``"transport"``), ``solver``, ``n_steps`` and ``nfev`` (both flows)."""


def _encode_doc(func):
    """Fill the shared sections of the encoders' and transports' docstrings."""
    func.__doc__ = func.__doc__ % {
        "encode_returns": _ENCODE_RETURNS,
        "transport_params": _TRANSPORT_PARAMS,
        "transport_returns": _TRANSPORT_RETURNS,
    }
    return func


_FIXED = ("heun", "ab2", "ab3")


def _check_solver(solver, n_steps):
    if solver not in _FIXED:
        raise ValueError(
            f"solver must be one of {_FIXED} (a fixed-step solver, whose grid the encoder "
            f"retraces), got {solver!r}."
        )
    return default_ode_steps(solver) if n_steps is None else _check_n_steps(n_steps)


@_encode_doc
def encode_ode(score, schedule, x0, *, solver="ab3", n_steps=None):
    r"""Integrate the probability-flow ODE forward, from the data end to the noise end.

    The inverse of the fixed-step reverse flow of
    :func:`dasim.diffusion.kde_sampling.sample_ode`: the same ODE
    :math:`dx/dt = f(t) x - \tfrac12 g^2(t) s(x, t)`, integrated from
    ``schedule.t_end`` up to ``schedule.t_start`` on the same geometric grid in the noise
    level, so that decoding the codes with the same score gives back ``x0`` up to the
    solver's error (which falls with ``n_steps`` at the solver's order).

    Parameters
    ----------
    score : callable
        ``score(x, t)``, the score of the diffused density at rows ``x`` (numpy,
        ``(n, d)``) and time ``t``.
    schedule : VESchedule or VPSchedule
        The diffusion schedule.
    x0 : numpy.ndarray of shape (n, d)
        The states to encode (at ``t_end``).
    solver : {"heun", "ab2", "ab3"}, default="ab3"
        The fixed-step solver.
    n_steps : int, optional
        Steps (default: 20 score evaluations, as the sampler's).

    %(encode_returns)s
    Examples
    --------
    >>> import numpy as np
    >>> from dasim.diffusion.schedules import VESchedule
    >>> sch = VESchedule(0.5, 50.0)
    >>> score = lambda x, t: -x / (1.0 + float(sch.sigmabar2(t)))  # N(0, 1) diffused
    >>> z, nfev = encode_ode(score, sch, np.ones((1, 1)))
    >>> exact = np.sqrt((1 + 50.0**2) / (1 + 0.5**2))  # the flow scales N(0, 1 + s^2)
    >>> bool(abs(z[0, 0] / exact - 1) < 0.01), nfev
    (True, 20)
    """
    n_steps = _check_solver(solver, n_steps)
    x0 = _check_matrix(x0, "x0")
    z, nfev = _encode(lambda x, t: np.asarray(score(x, t)), schedule, x0, solver, n_steps)
    return np.asarray(z, dtype=np.float64), nfev


def _encode(score, schedule, x0, solver, n_steps):
    """:func:`encode_ode`'s flow on checked inputs, for numpy arrays or torch tensors."""
    t, sigma = ode_sigma_grid(schedule, n_steps)
    mus = [float(schedule.mu(u)) for u in t]
    last = len(t) - 1

    def denoise(z, k):  # k counts up from the data end
        j = last - k
        mu, sbar2 = mus[j], float(schedule.sigmabar2(t[j]))
        return z + score(z * mu, t[j]) * (sbar2 / mu)

    z, nfev = _fixed_step_flow(denoise, x0 * (1.0 / mus[-1]), sigma[::-1].copy(), solver)
    return z * mus[0], int(nfev)


@_encode_doc
def encode_ode_local(X, taper_xx, schedule, x0, *, solver="ab3", n_steps=None, chunk_size=None):
    """Encode states with the forward flow of the localised KDE with uniform weights.

    The prior of :func:`transport_ode_local`: :func:`encode_ode` with the localised score
    (:func:`~dasim.diffusion.kde_local.local_kde_score`) of the centres ``X``, every
    weight ``1/N``.

    Parameters
    ----------
    X : numpy.ndarray of shape (N, d)
        Centres.
    taper_xx : numpy.ndarray of shape (d, d)
        State taper, 1 on the diagonal.
    schedule : VESchedule or VPSchedule
        The diffusion schedule.
    x0 : numpy.ndarray of shape (n, d)
        The states to encode.
    solver : {"heun", "ab2", "ab3"}, default="ab3"
        The fixed-step solver.
    n_steps : int, optional
        Steps (default: 20 score evaluations).
    chunk_size : int, optional
        Query rows per chunk of the score.

    %(encode_returns)s
    Examples
    --------
    >>> import numpy as np
    >>> from dasim.diffusion.schedules import VESchedule
    >>> X = np.random.default_rng(0).normal(size=(20, 3))
    >>> z, nfev = encode_ode_local(X, np.eye(3), VESchedule(0.3, 20.0), X)
    >>> z.shape, nfev
    ((20, 3), 20)
    """
    X = _check_matrix(X, "X")
    uniform = np.zeros(X.shape)

    def score(x, t):
        return local_kde_score(x, t, X, uniform, taper_xx, schedule, chunk_size=chunk_size)

    return encode_ode(score, schedule, x0, solver=solver, n_steps=n_steps)


@_encode_doc
def transport_ode(
    X,
    log_w,
    schedule,
    members,
    *,
    solver="ab3",
    n_steps=None,
    backend="numpy",
    device=None,
    chunk_size=None,
    memory_budget=None,
    score_dtype="float64",
):
    r"""Move ``members`` from the prior to the posterior KDE by the probability flow.

    The global transport: the codes :math:`z_i = \Phi_{\mathrm{prior}}(x_i)` of the forward
    flow of the KDE of the centres ``X`` with uniform weights (:func:`encode_ode`), decoded
    by the reverse flow of the same KDE with the weights ``log_w``
    (:func:`~dasim.diffusion.kde_sampling.sample_ode` started at the codes). Both flows use
    the fused closed-form score and the same fixed-step grid; with uniform ``log_w`` the
    members come back unchanged up to the solver's error. Deterministic: no random
    numbers are drawn. It equals :func:`transport_ode_local` with tapers of ones and the
    log-weights repeated in every column, at the cost of the global score.

    Parameters
    ----------
    X : numpy.ndarray of shape (N, d)
        Centres (usually the centred forecast ensemble).
    log_w : numpy.ndarray of shape (N,) or None
        Log-weights of the posterior (None: uniform).
    %(transport_params)s
    backend : {"numpy", "torch"}, default="numpy"
        Where the flows run (the result is numpy either way).
    device : str, optional
        The torch device (``backend="torch"``); None or ``"auto"`` picks CUDA when there
        is one.
    chunk_size : int or tuple of (int, int), optional
        Tile of the score.
    memory_budget : int, optional
        Bytes for one tile's pairwise temporaries.
    score_dtype : {"float64", "float32"}, default="float64"
        Precision of both scores' pairwise tiles (the flows' states stay float64).

    %(transport_returns)s

    Examples
    --------
    >>> import numpy as np
    >>> from dasim.diffusion.schedules import VESchedule
    >>> X = np.random.default_rng(0).normal(size=(20, 3))
    >>> out, info = transport_ode(X, None, VESchedule(0.3, 20.0), X, n_steps=40)
    >>> bool(np.abs(out - X).max() < 0.01), info["nfev"]  # uniform weights: no move
    (True, 80)
    >>> out, _ = transport_ode(X, -2.0 * X[:, 0] ** 2, VESchedule(0.3, 20.0), X)
    >>> bool(np.abs(out[:, 0]).mean() < np.abs(X[:, 0]).mean())  # drawn toward x_0 = 0
    True
    """
    n_steps = _check_solver(solver, n_steps)
    X = _check_matrix(X, "X")
    members = _check_matrix(members, "members", ncols=X.shape[1])
    log_w = _check_log_weights(log_w, X.shape[0], name="log_w")  # before the first flow
    score_dtype = check_score_dtype(score_dtype, "score_dtype", allow_none=False)
    n = members.shape[0]
    xp, prior = _kde_score_fn(
        X,
        np.zeros(X.shape[0]),
        schedule,
        n,
        backend,
        device,
        chunk_size,
        memory_budget,
        score_dtype,
    )
    codes, nfev_enc = _encode(prior, schedule, xp.asarray(members), solver, n_steps)
    out, info = sample_ode(
        X,
        log_w,
        schedule,
        None,
        n_samples=n,
        backend=backend,
        device=device,
        chunk_size=chunk_size,
        memory_budget=memory_budget,
        x_start=codes,
        solver=solver,
        n_steps=n_steps,
        score_dtype=score_dtype,
    )
    if is_tensor(out):
        out = out.detach().cpu().numpy()
    return np.asarray(out, dtype=np.float64), {
        "sampler": "transport",
        "solver": solver,
        "n_steps": 2 * int(n_steps),
        "nfev": int(nfev_enc) + int(info["nfev"]),
    }


@_encode_doc
def transport_ode_local(
    X,
    log_w_local,
    taper_xx,
    schedule,
    members,
    *,
    solver="ab3",
    n_steps=None,
    chunk_size=None,
    score_dtype="float64",
):
    """Move ``members`` from the prior to the posterior localised KDE by the flow.

    Encodes ``members`` with the uniform-weight localised flow of the centres ``X``
    (:func:`encode_ode_local`), then decodes the codes with the reverse flow of the
    weighted one (:func:`~dasim.diffusion.kde_local.sample_ode_local` with ``x_start``).
    With uniform ``log_w_local`` the members come back unchanged up to the solver's
    error. Deterministic: no random numbers are drawn.

    Parameters
    ----------
    X : numpy.ndarray of shape (N, d)
        Centres (the centred forecast ensemble, or its shrunk centres).
    log_w_local : numpy.ndarray of shape (N, d)
        Local log-weights of the posterior
        (:func:`~dasim.diffusion.kde_local.local_log_weights`).
    taper_xx : numpy.ndarray of shape (d, d)
        State taper, 1 on the diagonal.
    %(transport_params)s
    chunk_size : int, optional
        Query rows per chunk of the score.
    score_dtype : {"float64", "float32"}, default="float64"
        Precision of the decoding score's pairwise computations.

    %(transport_returns)s

    Examples
    --------
    >>> import numpy as np
    >>> from dasim.diffusion.schedules import VESchedule
    >>> X = np.random.default_rng(0).normal(size=(20, 3))
    >>> out, info = transport_ode_local(X, np.zeros((20, 3)), np.eye(3),
    ...                                 VESchedule(0.3, 20.0), X, n_steps=40)
    >>> bool(np.abs(out - X).max() < 0.01), info["nfev"]  # uniform weights: no move
    (True, 80)
    """
    n_steps = _check_solver(solver, n_steps)
    codes, nfev_enc = encode_ode_local(
        X, taper_xx, schedule, members, solver=solver, n_steps=n_steps, chunk_size=chunk_size
    )
    out, info = sample_ode_local(
        X,
        log_w_local,
        taper_xx,
        schedule,
        None,
        solver=solver,
        n_steps=n_steps,
        chunk_size=chunk_size,
        x_start=codes,
        score_dtype=score_dtype,
        n_samples=codes.shape[0],
    )
    return out, {
        "sampler": "transport",
        "solver": solver,
        "n_steps": 2 * int(n_steps),
        "nfev": int(nfev_enc) + int(info["nfev"]),
    }
