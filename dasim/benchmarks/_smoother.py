r"""A bootstrap particle filter-smoother: the reference posterior of benchmark B3.

The filter runs :math:`N` particles forward through the window: draw :math:`x_0^i` from
the prior, then at each time propagate with the dynamics (no proposal other than the
prior), multiply the weights by :math:`p(y_t \mid x_t^i)` where ``y_t`` is observed, and
resample systematically when the effective sample size falls below ``ess_threshold * N``.
Every resampling records the *ancestor* of each particle. Whole trajectories are sampled
at the end by drawing final particles from their weights and following their genealogy
back to time 0 (Kitagawa's genealogy-tracing smoother): a consistent sample of the
joint smoothing distribution :math:`p(x_{0:L-1} \mid y_{0:L-1})` whose early times are
represented by few distinct ancestors when :math:`N` is small (path degeneracy).

Everything is vectorised over particles; the only Python loop runs over time.
"""

from __future__ import annotations

import numpy as np

from .._math import logsumexp
from ..filters._resampling import resample
from ..models._base import _as_generator

__all__ = ["bootstrap_smoother"]


def bootstrap_smoother(
    y,
    initial,
    transition,
    log_likelihood,
    *,
    n_particles=16384,
    n_samples=1000,
    ess_threshold=1.0,
    random_state=None,
):
    r"""Sample whole trajectories from a bootstrap particle filter-smoother.

    Parameters
    ----------
    y : array-like of shape (n_times, n_obs)
        Observations; NaN entries are unobserved (a row of NaN is not weighted).
    initial : callable
        ``initial(n, rng) -> (n, n_state)``: draws of the state at the first time (before
        its observation is assimilated).
    transition : callable
        ``transition(particles, rng) -> particles``: one step of the (stochastic)
        dynamics, vectorised over particles.
    log_likelihood : callable
        ``log_likelihood(y_t, particles) -> (n,)``: ``log p(y_t | x)`` for an observation
        row ``y_t`` (NaN entries unobserved; it is called only when some entry is finite).
    n_particles : int, default=16384
        Number of particles.
    n_samples : int, default=1000
        Number of trajectories to return.
    ess_threshold : float, default=1.0
        Resample when the effective sample size is below ``ess_threshold * n_particles``
        (1.0: after every observed time; 0: never).
    random_state : int, numpy.random.Generator, RandomState or None
        Seed or generator.

    Returns
    -------
    samples : ndarray of shape (n_samples, n_times, n_state)
        Trajectories drawn from the particle approximation of the smoothing posterior.
    log_evidence : float
        The filter's estimate of :math:`\log p(y_{0:L-1})`.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.array([[0.5], [np.nan], [1.0]])
    >>> samples, log_z = bootstrap_smoother(
    ...     y,
    ...     lambda n, rng: rng.standard_normal((n, 1)),
    ...     lambda x, rng: 0.9 * x + 0.3 * rng.standard_normal(x.shape),
    ...     lambda yt, x: -0.5 * ((yt - x) ** 2).sum(axis=1) / 0.25,
    ...     n_particles=1000, n_samples=10, random_state=0)
    >>> samples.shape
    (10, 3, 1)
    """
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[0] < 1:
        raise ValueError(f"y must have shape (n_times, n_obs), got {y.shape}.")
    if np.isinf(y).any():
        raise ValueError("y contains inf.")
    for name, value in (("n_particles", n_particles), ("n_samples", n_samples)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if not 0.0 <= float(ess_threshold) <= 1.0:
        raise ValueError(f"ess_threshold must be in [0, 1], got {ess_threshold!r}.")
    rng = _as_generator(random_state)
    n = int(n_particles)
    n_times = y.shape[0]
    x = np.asarray(initial(n, rng), dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != n:
        raise ValueError(f"initial must return shape ({n}, n_state), got {x.shape}.")
    states = np.empty((n_times, n, x.shape[1]))
    ancestors = np.empty((n_times, n), dtype=np.int64)
    log_w = np.full(n, -np.log(n))  # normalised log-weights
    log_evidence = 0.0
    for t in range(n_times):
        if t > 0:
            x = np.asarray(transition(x, rng), dtype=np.float64)
        parent = np.arange(n)
        if not np.isnan(y[t]).all():
            ll = np.asarray(log_likelihood(y[t], x), dtype=np.float64)
            joint = log_w + ll
            increment = logsumexp(joint)
            if not np.isfinite(increment):
                raise ValueError(f"every particle has zero likelihood at time {t}.")
            log_evidence += float(increment)
            log_w = joint - increment
            w = np.exp(log_w)
            ess = 1.0 / np.sum(w**2)
            if ess < float(ess_threshold) * n or float(ess_threshold) == 1.0:
                parent = resample(w / w.sum(), method="systematic", random_state=rng)
                x = x[parent]
                log_w = np.full(n, -np.log(n))
        states[t] = x
        ancestors[t] = parent
    w = np.exp(log_w - logsumexp(log_w))
    idx = rng.choice(n, size=int(n_samples), p=w / w.sum())
    out = np.empty((int(n_samples), n_times, states.shape[2]))
    for t in range(n_times - 1, -1, -1):
        out[:, t] = states[t, idx]
        idx = ancestors[t, idx]
    return out, log_evidence
