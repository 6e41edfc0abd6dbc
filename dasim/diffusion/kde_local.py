r"""Localised closed-form KDE score and its probability-flow sampler.

The global conditional KDE of :mod:`dasim.diffusion.kde` weights each member by the
likelihood of *all* observations and measures the distance of a point to a centre over
*all* state components; in 40 dimensions both collapse onto one member. The localised
score keeps, for each state component :math:`k`, only what lies near it.

Definitions
-----------
Let :math:`\ell_{ij}` be the log-likelihood term of observation :math:`j` for member
:math:`i` (e.g. :math:`-\tfrac12 (y^*_j - y_{ij})^2/\sigma_{y,j}^2`), :math:`\rho^{xy}_{kj}`
the taper between state component :math:`k` and observation :math:`j`, and
:math:`\rho_{kl}` the taper between state components (both Gaspari-Cohn of the distance
between locations, :func:`dasim.coordinates.localization_weights`, with
:math:`\rho_{kk} = 1`). Component :math:`k` sees the local log-weights and the local
diffused density

.. math::

    L_{ik} = \sum_j \rho^{xy}_{kj}\, \ell_{ij}, \qquad
    p^{(k)}_t(x) \propto \sum_i \pi_{ik} \prod_l
        \mathcal N\big(x_l;\, \mu(t) x_{il},\, \bar\sigma(t)^2\big)^{\rho_{kl}},
    \qquad \pi_{ik} = \operatorname{softmax}_i L_{ik},

a Gaussian mixture whose kernels are tempered by the taper: components far from
:math:`k` (:math:`\rho_{kl} = 0`) drop out of the responsibilities, components near it
count fully. The localised score is component :math:`k` of the score of
:math:`p^{(k)}_t`:

.. math::

    s_k(x, t) = \partial_{x_k} \log p^{(k)}_t(x)
      = \sum_i \bar w_{ik}(x, t)\, \frac{\mu(t) x_{ik} - x_k}{\bar\sigma(t)^2},
    \qquad
    \bar w_{ik} = \operatorname{softmax}_i\Big[L_{ik}
      - \sum_l \rho_{kl}\, \frac{(x_l - \mu(t) x_{il})^2}{2\bar\sigma(t)^2}\Big].

Properties (each is a test in ``tests/test_kde_local.py``):

* **Infinite radius** (:math:`\rho \equiv 1`): :math:`L_{ik} = \sum_j \ell_{ij}` and the
  distance is the full one, so :math:`s` is the global closed-form score exactly, and the
  flow is the global filter's.
* **Blocks** (:math:`\rho` zero between groups of components and observations, one
  within): the field is the product of the groups' global scores, so the flow transports
  the Gaussian start to the product of the groups' posterior mixtures exactly.
* **In general** :math:`s` is a smooth field but not the gradient of one density: each
  component follows the probability flow of its own local mixture, and neighbouring
  components, whose local mixtures share most of their terms, move coherently. This is
  the smooth, deterministic counterpart of the local particle filters' resampling, which
  needs ad hoc gluing between neighbouring components.

The derivation is in the user guide (KDE filter, "Localisation").
"""

from __future__ import annotations

import numbers

import numpy as np

from .._stats import column_effective_sample_size
from ._kde_core import _check_matrix, check_score_dtype
from ._kde_local_core import (
    _check_taper,
    _rows_per_chunk,
    _score_logp,
    _shared_columns,
    _StateTaper,
)
from ._kde_sampler_utils import _check_rng
from ._xp import namespace
from .solvers import _check_n_steps, _check_solver, probability_flow

__all__ = [
    "local_log_weights",
    "local_tempered_log_weights",
    "local_kde_score",
    "local_kde_log_density",
    "sample_ode_local",
]

# --------------------------------------------------------------------------- weights


def local_log_weights(terms, taper_xy):
    r"""Local log-weights :math:`L_{ik} = \sum_j \rho^{xy}_{kj} \ell_{ij}`.

    Parameters
    ----------
    terms : numpy.ndarray of shape (N, n_obs)
        Log-likelihood terms :math:`\ell_{ij}` of each observation for each member (finite
        or ``-inf``; an unobserved component's column is all zeros).
    taper_xy : numpy.ndarray of shape (d, n_obs)
        Taper between state components and observations, entries in ``[0, 1]``.

    Returns
    -------
    numpy.ndarray of shape (N, d)
        The local log-weights (unnormalised).

    Examples
    --------
    >>> terms = np.array([[0.0, -1.0], [-2.0, 0.0]])
    >>> local_log_weights(terms, np.array([[1.0, 0.0], [0.5, 1.0]])).tolist()
    [[0.0, -1.0], [-2.0, -1.0]]
    """
    terms = np.asarray(terms, dtype=np.float64)
    taper_xy = np.asarray(taper_xy, dtype=np.float64)
    if terms.ndim != 2 or taper_xy.ndim != 2 or taper_xy.shape[1] != terms.shape[1]:
        raise ValueError(
            f"terms (N, n_obs) and taper_xy (d, n_obs) must share n_obs, got shapes "
            f"{terms.shape} and {taper_xy.shape}."
        )
    if np.isnan(terms).any() or np.any(terms == np.inf):
        raise ValueError("terms must be finite or -inf.")
    _check_taper(taper_xy, "taper_xy")
    # -inf times a zero taper is 0 (that observation does not reach component k).
    finite = np.where(np.isfinite(terms), terms, 0.0)
    out = finite @ taper_xy.T
    neg_inf = (~np.isfinite(terms)).astype(np.float64) @ (taper_xy > 0).T.astype(np.float64)
    out[neg_inf > 0] = -np.inf
    return out


#: Column-wise ESS (the one ESS of :mod:`dasim._stats`, in its column form).
_column_ess = column_effective_sample_size


def local_tempered_log_weights(log_w, target_ess, *, max_exponent=1.0, n_bisect=60):
    r"""Temper each column of the local log-weights to keep its ESS at least ``target_ess``.

    Column :math:`k` becomes :math:`\beta_k L_{:k}` with the largest
    :math:`\beta_k \in [0, b_k]` (``b = max_exponent``) whose effective sample size is
    at least ``target_ess``
    (bisection; the ESS decreases with :math:`\beta`): the column-wise version of
    :func:`dasim.diffusion.kde_sampling.tempered_log_weights`, so that no component's
    weights collapse.

    Parameters
    ----------
    log_w : numpy.ndarray of shape (N, d)
        Local log-weights (finite; ``-inf`` entries stay ``-inf`` for any
        :math:`\beta > 0`).
    target_ess : float
        Target effective sample size, in ``(0, N]``.
    max_exponent : float or numpy.ndarray of shape (d,), default=1.0
        Largest exponent per column, in ``[0, 1]`` (what is left to assimilate, in
        progressive correction).
    n_bisect : int, default=60
        Bisection steps.

    Returns
    -------
    tempered : numpy.ndarray of shape (N, d)
        :math:`\beta_k L_{ik}`.
    beta : numpy.ndarray of shape (d,)
        The exponents, in ``[0, max_exponent]``.

    Examples
    --------
    >>> L = np.array([[0.0, 0.0], [-50.0, -0.1]])
    >>> _, beta = local_tempered_log_weights(L, 1.5)
    >>> float(beta[1]), 0 < float(beta[0]) < 0.1
    (1.0, True)
    """
    log_w = np.asarray(log_w, dtype=np.float64)
    if log_w.ndim != 2:
        raise ValueError(f"log_w must be 2-D (N, d), got shape {log_w.shape}.")
    n = log_w.shape[0]
    if (
        isinstance(target_ess, bool)
        or not isinstance(target_ess, numbers.Real)
        or not 0 < target_ess <= n
    ):
        raise ValueError(f"target_ess must be in (0, {n}], got {target_ess!r}.")
    top = np.broadcast_to(np.asarray(max_exponent, dtype=np.float64), log_w.shape[1:]).copy()
    if not np.all((top >= 0) & (top <= 1)):
        raise ValueError(f"max_exponent must be in [0, 1], got {max_exponent!r}.")
    finite = np.where(np.isfinite(log_w), log_w, 0.0)
    dead = ~np.isfinite(log_w)

    def tempered(beta):
        out = finite * beta
        out[dead & (beta > 0)[None, :]] = -np.inf
        return out

    ok = _column_ess(tempered(top)) >= target_ess
    lo, hi = np.zeros_like(top), top.copy()
    lo[ok] = top[ok]
    for _ in range(n_bisect):
        mid = 0.5 * (lo + hi)
        good = _column_ess(tempered(mid)) >= target_ess
        lo = np.where(good, mid, lo)
        hi = np.where(good, hi, mid)
    return tempered(lo), lo


# --------------------------------------------------------------------------- the score

_QUERY_PARAMS = """\
    x : numpy.ndarray of shape (M, d)
        Query points.
    t : float
        Diffusion time.
    X : numpy.ndarray of shape (N, d)
        Centres :math:`x_i`.
    log_w_local : numpy.ndarray of shape (N, d)
        Local log-weights :math:`L_{ik}` (:func:`local_log_weights`); each column needs a
        finite entry.
    taper_xx : numpy.ndarray of shape (d, d)
        State taper :math:`\\rho_{kl}`, 1 on the diagonal.
    schedule : VESchedule or VPSchedule
        The diffusion schedule (:math:`\\mu(t)`, :math:`\\bar\\sigma(t)^2`).
"""


def _fill_query_params(func):
    """Put the parameters the score and the log-density share into the docstring."""
    if func.__doc__:  # None under python -OO
        func.__doc__ = func.__doc__.replace("    %(query_params)s\n", _QUERY_PARAMS)
    return func


def _normalise_local(L):
    top = np.max(L, axis=0, keepdims=True)
    if not np.all(np.isfinite(top)):
        raise ValueError("every column of the local log-weights needs a finite entry.")
    lse = top + np.log(np.sum(np.exp(L - top), axis=0, keepdims=True))
    return L - lse


def _local_weights(log_w_local, shape, taper):
    """``log_w_local`` checked against ``shape`` (N, d), normalised per component."""
    L = np.asarray(log_w_local, dtype=np.float64)
    if L.shape != shape:
        raise ValueError(f"log_w_local must have shape {shape} (N, d), got {L.shape}.")
    if np.isnan(L).any() or np.any(L == np.inf):
        raise ValueError("log_w_local must be finite or -inf.")
    return _shared_columns(_normalise_local(L), taper)


def _check_inputs(x, X, log_w_local, taper_xx):
    X = _check_matrix(X, "X")
    n, d = X.shape
    x = _check_matrix(x, "x", ncols=d)
    taper = _StateTaper(taper_xx)
    return x, X, _local_weights(log_w_local, (n, d), taper), taper


@_fill_query_params
def local_kde_score(x, t, X, log_w_local, taper_xx, schedule, *, chunk_size=None):
    r"""Localised closed-form score :math:`s_k(x, t) = \partial_{x_k}\log p^{(k)}_t(x)`.

    See the module docstring for the definitions.

    Parameters
    ----------
    %(query_params)s
    chunk_size : int, optional
        Query rows per chunk (default: about 256 KiB a temporary on the CPU, to stay in cache).

    Returns
    -------
    numpy.ndarray of shape (M, d)
        The localised score.

    Examples
    --------
    >>> from dasim.diffusion.schedules import VESchedule
    >>> X = np.array([[0.0, 0.0], [2.0, 2.0]])
    >>> s = local_kde_score(np.ones((1, 2)), 0.0, X, np.zeros((2, 2)), np.eye(2),
    ...                     VESchedule(1.0, 10.0))
    >>> np.allclose(s, 0.0)
    True
    """
    x, X, L, taper = _check_inputs(x, X, log_w_local, taper_xx)
    mu, sbar2 = float(schedule.mu(t)), float(schedule.sigmabar2(t))
    chunk = _rows_per_chunk(X.shape[0], X.shape[1], chunk_size)
    return _score_logp(x, mu, sbar2, X, L, taper, chunk)[0]


@_fill_query_params
def local_kde_log_density(x, t, X, log_w_local, taper_xx, schedule):
    r"""Log of each component's local density :math:`\log p^{(k)}_t(x)`, up to a constant.

    The constant (independent of :math:`x`) is the tempered kernels' normalisation;
    :func:`local_kde_score` is :math:`\partial_{x_k}` of column :math:`k`. With
    :math:`\rho \equiv 1` every column is the global log-density
    (:func:`dasim.diffusion.kde.kde_log_density`) exactly.

    Parameters
    ----------
    %(query_params)s

    Returns
    -------
    numpy.ndarray of shape (M, d)
        Column :math:`k` is :math:`\log p^{(k)}_t` at each query.

    Examples
    --------
    >>> from dasim.diffusion.schedules import VESchedule
    >>> lp = local_kde_log_density(np.zeros((1, 2)), 0.0, np.zeros((1, 2)),
    ...                            np.zeros((1, 2)), np.eye(2), VESchedule(1.0, 10.0))
    >>> np.allclose(lp, -0.5 * np.log(2 * np.pi))
    True
    """
    x, X, L, taper = _check_inputs(x, X, log_w_local, taper_xx)
    mu, sbar2 = float(schedule.mu(t)), float(schedule.sigmabar2(t))
    chunk = _rows_per_chunk(X.shape[0], X.shape[1], None)
    return _score_logp(x, mu, sbar2, X, L, taper, chunk, want_logp=True)[1]


# --------------------------------------------------------------------------- the flow


def _start_std(schedule, X, L):
    """Per-component start standard deviation (VP: moment-matched to the local mixture)."""
    if not getattr(schedule, "moment_matched_start", False):
        return np.full(X.shape[1], float(schedule.prior_std))
    pi = np.exp(L)
    m2 = np.sum(pi * X * X, axis=0)
    t1 = schedule.t_start
    return np.sqrt(float(schedule.sigmabar2(t1)) + float(schedule.mu(t1)) ** 2 * m2)


def sample_ode_local(
    X,
    log_w_local,
    taper_xx,
    schedule,
    rng,
    *,
    n_samples=None,
    solver="ab3",
    n_steps=None,
    rtol=1e-5,
    atol=1e-5,
    backend="numpy",
    device=None,
    chunk_size=None,
    x_start=None,
    score_dtype="float64",
):
    r"""Sample by the probability-flow ODE of the localised score.

    .. math::

        \frac{dx}{dt} = f(t)\, x - \tfrac12 g^2(t)\, s(x, t),
        \qquad x_k(1) \sim \mathcal N(0, s_{1k}^2),

    with :math:`s` the localised score (:func:`local_kde_score`), from ``t_start`` to
    ``schedule.t_end``, by the same solvers as the global
    :func:`dasim.diffusion.kde_sampling.sample_ode`: adaptive RK45 or a fixed-step
    exponential integrator in the log of the noise level (``"heun"``, ``"ab2"``,
    ``"ab3"``). With :math:`\rho \equiv 1` it is the global sampler.

    Parameters
    ----------
    X : numpy.ndarray of shape (N, d)
        Centres (the centred forecast ensemble).
    log_w_local : numpy.ndarray of shape (N, d)
        Local log-weights (:func:`local_log_weights`).
    taper_xx : numpy.ndarray of shape (d, d)
        State taper, 1 on the diagonal.
    schedule : VESchedule or VPSchedule
        The diffusion schedule.
    rng : numpy.random.Generator, int or None
        Randomness of the start.
    n_samples : int, optional
        Number of samples (default N).
    solver : {"rk45", "heun", "ab2", "ab3"}, default="ab3"
        The ODE solver.
    n_steps : int, optional
        Steps of a fixed-step solver (default: 20 score evaluations); None with RK45.
    rtol, atol : float, default=1e-5
        Tolerances of RK45.
    backend : {"numpy", "torch"}, default="numpy"
        numpy float64, or torch (float64) on ``device``.
    device : str, optional
        The torch device.
    chunk_size : int, optional
        Query rows per chunk of the score.
    x_start : numpy.ndarray of shape (n_samples, d), optional
        Given start at ``t_start`` instead of the Gaussian draw.
    score_dtype : {"float64", "float32"}, default="float64"
        Precision of the score's pairwise computations; the solver state stays float64.

    Returns
    -------
    samples : numpy.ndarray of shape (n_samples, d)
        The samples at ``t_end`` (numpy, float64, on either backend).
    info : dict
        ``sampler``, ``solver``, ``n_steps``, ``nfev``, ``success``, ``message``.

    Examples
    --------
    >>> from dasim.diffusion.schedules import VESchedule
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(30, 4))
    >>> x, info = sample_ode_local(X, np.zeros((30, 4)), np.eye(4), VESchedule(0.3, 20.0),
    ...                            rng)
    >>> x.shape, info["nfev"]
    ((30, 4), 20)
    """
    X = _check_matrix(X, "X")
    n_c, d = X.shape
    taper = _StateTaper(taper_xx)
    L = _local_weights(log_w_local, (n_c, d), taper)
    rng = _check_rng(rng)
    n_steps = _check_solver(solver, n_steps)
    if backend not in ("numpy", "torch"):
        raise ValueError(f"backend must be 'numpy' or 'torch', got {backend!r}.")
    n = n_c if n_samples is None else _check_n_steps(n_samples, "n_samples")
    if x_start is None:
        x1 = _start_std(schedule, X, L) * rng.standard_normal((n, d))
    else:
        x1 = _check_matrix(x_start, "x_start", ncols=d)
        if x1.shape[0] != n:
            raise ValueError(f"x_start must have {n} rows (n_samples), got {x1.shape[0]}.")
    dt = check_score_dtype(score_dtype, "score_dtype", allow_none=False)
    xp = namespace(backend=backend, device=device)
    chunk = _rows_per_chunk(n_c, d, chunk_size, cpu=xp.on_cpu)
    X, L = (xp.astype(xp.asarray(a), dt) for a in (X, L))
    taper = taper.to(xp, dt)
    x1 = xp.asarray(x1)

    def score(x, t):
        mu, sbar2 = float(schedule.mu(t)), float(schedule.sigmabar2(t))
        return xp.astype(_score_logp(xp.astype(x, dt), mu, sbar2, X, L, taper, chunk)[0], x1.dtype)

    out, info = probability_flow(
        schedule,
        score,
        x1,
        solver=solver,
        n_steps=n_steps,
        rtol=rtol,
        atol=atol,
        what="localised probability-flow ODE",
    )
    return xp.to_numpy(out), {"sampler": "ode", "solver": solver, **info}
