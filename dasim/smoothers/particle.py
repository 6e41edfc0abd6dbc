r"""The bootstrap particle smoother: ancestry tracing and backward simulation.

Both smoothers start from a bootstrap particle filter's forward pass, which keeps, for
every time :math:`t`, a weighted particle approximation of the filtering law
:math:`p(x_t \mid y_{0:t})`, and the genealogy of the particles through resampling.

- *Ancestry tracing* (Kitagawa 1996): follow each final particle's ancestors back to the
  first time. The paths, weighted by the final weights, are a consistent sample of the
  joint smoothing law :math:`p(x_{0:T-1} \mid y_{0:T-1})`; with few distinct ancestors at
  early times when the window is long (path degeneracy).
- *Backward simulation* (Godsill, Doucet and West 2004): draw :math:`x_{T-1}` from the
  final weighted particles, then for :math:`t = T-2, \dots, 0` draw :math:`x_t` among the
  filtering particles with weights :math:`w_t^i\, f(x_{t+1} \mid x_t^i)`, where
  :math:`f` is the transition density. It needs that density (here: additive Gaussian
  model noise) and costs :math:`O(T M N)` for :math:`M` trajectories, but does not
  degenerate.

Everything is vectorised over particles and trajectories; the only Python loops run over
time.
"""

from __future__ import annotations

import numbers

import numpy as np

from .._inputs import store_params
from .._math import logsumexp
from .._random import as_generator
from .._shared_doc import fill_shared_doc
from .._stats import effective_sample_size
from .._validation import check_positive_int
from ..filters._resampling import resample
from ..filters.sir import SIRFilter
from ..models import as_model

__all__ = ["ParticleSmoother", "bootstrap_smoother"]

METHODS = ("ancestry", "backward")

#: Entries of one (trajectories x particles) block of backward-simulation weights.
_BLOCK = 2**20


@fill_shared_doc
class ParticleSmoother(SIRFilter):
    """Bootstrap particle smoother: the SIR filter, then whole trajectories.

    The forward pass is the :class:`~dasim.filters.SIRFilter`'s, with all its options
    (resampling scheme, ESS threshold, regularisation jitter); the filter's weighted
    particles at every time and their genealogy are kept. ``assimilate`` then returns
    trajectories of the joint smoothing law ``p(x_0, ..., x_{T-1} | y_0, ..., y_{T-1})``:

    - ``method="ancestry"`` (Kitagawa 1996): the final particles' ancestral lines.
      With ``n_trajectories=None`` all ``n_members`` lines are returned with the final
      weights (``weights`` then holds the final weights at every time); with an integer,
      that many lines drawn by the final weights (with the ``resampling`` scheme), equally
      weighted. Cheap, but long windows leave few distinct ancestors at early times
      (path degeneracy: see the ``n_distinct`` diagnostic).
    - ``method="backward"`` (Godsill, Doucet and West 2004): backward simulation. A
      trajectory ends at a particle drawn by the final weights; going back in time, its
      state at ``t`` is drawn among the filtering particles ``x_t^i`` with weights
      ``w_t^i f(x_{t+1} | x_t^i)``, where ``f`` is the model's transition density: for
      dasim's additive Gaussian model noise, ``N(x_{t+1}; m(x_t^i), Q)`` with ``m`` the
      noise-free forecast and ``Q`` the ``process_noise`` covariance. A model without
      process noise has no transition density and is refused. ``n_trajectories``
      (``n_members`` by default) trajectories, equally weighted, cost
      ``O(T n_trajectories n_members d)`` and one extra noise-free forecast of the
      particles per cycle.

    With ``jitter > 0`` the filter's particles are regularised after resampling; the
    traced ancestral lines pass through the particles before their jitter.

    Parameters
    ----------
    %(model_params)s
    n_members : int, default=1000
        Number of particles of the forward filter (at least 2).
    resampling : {"systematic", "stratified", "residual", "multinomial"}, \
default="systematic"
        Resampling scheme of the filter, also used to draw the trajectories' end points
        (see :func:`dasim.filters.resample`).
    ess_threshold : float, default=0.5
        The filter resamples when ``ESS < ess_threshold * N``; in ``[0, 1]``.
    jitter : float, default=0.0
        Regularisation noise after resampling, relative to the Gaussian-kernel bandwidth
        (non-negative), as for :class:`~dasim.filters.SIRFilter`.
    jitter_duplicates_only : bool, default=True
        Jitter only particles that resampling selected more than once.
    random_state : int, RandomState or None, default=None
        Seed.
    %(noise_params)s
    method : {"ancestry", "backward"}, default="ancestry"
        Ancestry tracing or backward simulation.
    n_trajectories : int or None, default=None
        Number of trajectories ``assimilate`` returns (the ``member`` dimension);
        ``None``: ``n_members`` (for ``"ancestry"``, every ancestral line, weighted).

    Attributes
    ----------
    %(fitted_attrs)s

    See Also
    --------
    dasim.filters.SIRFilter : The forward filter.
    EnKS : Ensemble Kalman smoother.
    bootstrap_smoother : The ancestry-tracing smoother as a function of callables.

    References
    ----------
    .. [1] G. Kitagawa (1996), "Monte Carlo filter and smoother for non-Gaussian
       nonlinear state space models", Journal of Computational and Graphical Statistics
       5(1), 1-25.
    .. [2] S. J. Godsill, A. Doucet and M. West (2004), "Monte Carlo smoothing for
       nonlinear time series", Journal of the American Statistical Association 99(465),
       156-168.

    Examples
    --------
    >>> import numpy as np
    >>> from dasim.models import FunctionModel
    >>> from dasim.observations import ObservationModel
    >>> from dasim.smoothers import ParticleSmoother
    >>> rng = np.random.default_rng(0)
    >>> X = np.cumsum(rng.normal(size=(30, 1)), axis=0)
    >>> y = X + rng.normal(size=(30, 1))
    >>> model = FunctionModel(lambda x: 0.9 * x, process_noise=1.0)
    >>> ps = ParticleSmoother(model, ObservationModel(noise_std=1.0), n_members=500,
    ...                       method="backward", n_trajectories=100, random_state=0)
    >>> ds = ps.fit(X, y).assimilate(y)
    >>> ds["analysis"].shape
    (30, 100, 1)
    """

    _diagnostics = ("ess", "resampled", "n_distinct")

    def __init__(
        self,
        model=None,
        observation=None,
        n_members=1000,
        resampling="systematic",
        ess_threshold=0.5,
        jitter=0.0,
        jitter_duplicates_only=True,
        random_state=None,
        noise="moments",
        forecast_first=True,
        method="ancestry",
        n_trajectories=None,
    ):
        store_params(self, locals())

    def _check_params(self):
        super()._check_params()
        if not isinstance(self.method, str) or self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}.")
        if self.n_trajectories is not None:
            check_positive_int(self.n_trajectories, "n_trajectories")
        if self.method == "backward" and self.model is not None:
            _check_transition_noise(as_model(self.model))

    def fit(self, X, y=None):
        """Learn the climatological prior (and any noise levels left to be learned).

        %(fit_sections)s
        """
        super().fit(X, y)
        if self.method == "backward":
            _check_transition_noise(self.model_, self.n_features_in_)
        return self

    def assimilate(
        self, y, *, initial_ensemble=None, random_state=None, keep_forecast=True, progress=False
    ):
        """Run the particle filter over an observation sequence, then smooth.

        Parameters
        ----------
        %(assimilate_params)s
        keep_forecast : bool, default=True
            Ignored (accepted as the filters accept it): the result has no forecast.
        progress : bool, default=False
            Show a tqdm progress bar over the filter's cycles.

        Returns
        -------
        xarray.Dataset
            ``analysis``: the smoothing trajectories, dims ``(time, member, state)``
            (``member`` indexes trajectories); ``weights`` ``(time, member)``: their
            weights (the same at every time; uniform unless ``method="ancestry"`` with
            ``n_trajectories=None``); ``log_evidence``: the filter's per-cycle
            ``log p(y_k | y_{1:k-1})``; the filter's ``ess`` and ``resampled``; and
            ``n_distinct``, the number of distinct filter particles the trajectories
            pass through at each time. ``attrs`` hold the parameters, ``n_members`` (the
            particles) and the seed. There is no ``forecast``: the filter's particles and
            the trajectories are different sets.
        """
        return super().assimilate(
            y,
            initial_ensemble=initial_ensemble,
            random_state=random_state,
            keep_forecast=False,
            progress=progress,
        )

    # ------------------------------------------------------------------ internals
    def _start_run(self, n_members, n_state):
        super()._start_run(n_members, n_state)
        self._parents = []

    def _before_forecast(self, ensemble, log_weights, rng):
        particles, log_weights, idx = self._resample_step(ensemble, log_weights, rng)
        self._parents.append(idx)
        return particles, log_weights

    def _run(self, y, ensemble, rng, *, keep_forecast=True, **kwargs):
        try:
            out = super()._run(y, ensemble, rng, keep_forecast=False, **kwargs)
            drawn = self._parents
        finally:
            self.__dict__.pop("_parents", None)  # the run's arrays are not kept
        particles, weights = out["analysis"], out["weights"]
        n_times, n, _ = particles.shape
        # parents[t, j]: index among the particles of time t-1 of particle j's ancestor.
        # _before_forecast runs once per forecast cycle, i.e. for the last len(drawn).
        parents = np.tile(np.arange(n), (n_times, 1))
        for k, idx in enumerate(drawn, start=n_times - len(drawn)):
            if idx is not None:
                parents[k] = idx
        m = n if self.n_trajectories is None else int(self.n_trajectories)
        if self.method == "ancestry" and self.n_trajectories is None:
            index = _ancestor_indices(parents, np.arange(n))
            traj_weights = weights[-1]
        else:
            end = resample(weights[-1] / weights[-1].sum(), m, self.resampling, rng)
            if self.method == "ancestry":
                index = _ancestor_indices(parents, end)
            else:
                times = kwargs.get("times")
                index = self._backward_indices(particles, weights, end, rng, times)
            traj_weights = np.full(m, 1.0 / m)
        out["analysis"] = np.take_along_axis(particles, index[:, :, None], axis=1)
        out["weights"] = np.repeat(traj_weights[None, :], n_times, axis=0)
        out["n_distinct"] = np.array(
            [np.count_nonzero(np.bincount(row, minlength=n)) for row in index], dtype=float
        )
        return out

    def _backward_indices(self, particles, weights, end, rng, times=None):
        """Backward simulation: particle indices ``(n_times, m)`` of ``m`` trajectories.

        ``times`` are the row labels a time-dependent model is given (None: row indices).
        """
        n_times, n, d = particles.shape
        model = self.model_
        whiten = _check_transition_noise(model, d).whiten  # Q^{-1/2} v, rows of v
        with np.errstate(divide="ignore"):
            log_w = np.log(weights)  # a weight that underflowed to 0 keeps probability 0
        index = np.empty((n_times, end.size), dtype=np.int64)
        index[-1] = end
        rows = max(1, _BLOCK // n)
        for t in range(n_times - 2, -1, -1):
            with np.errstate(over="ignore", invalid="ignore"):
                mean = model.propagate(particles[t], time=t + 1 if times is None else times[t + 1])
            if mean.shape != particles[t].shape or not np.all(np.isfinite(mean)):
                raise ValueError(
                    f"The noise-free forecast of the particles at cycle {t} is not finite "
                    "(or has the wrong shape); backward simulation needs it."
                )
            # Whitened and centred, so the squared distances below lose no precision.
            wm = whiten(mean)
            centre = wm.mean(axis=0)
            wm -= centre
            wx = whiten(particles[t + 1, index[t + 1]]) - centre
            norm_m = np.einsum("ij,ij->i", wm, wm)
            for s in range(0, end.size, rows):
                x = wx[s : s + rows]
                dist2 = np.einsum("ij,ij->i", x, x)[:, None] - 2.0 * (x @ wm.T) + norm_m
                index[t, s : s + rows] = _draw_rows(log_w[t] - 0.5 * dist2, rng)
        return index

    def _provenance(self, run, n_members):
        # n_members is the number of particles; the trajectories are n_trajectories.
        particles = (run or {}).get("n_members", n_members)
        return super()._provenance(run, particles)


def _check_transition_noise(model, n_state=None):
    """The model's Gaussian transition noise (a GaussianNoise); refuse none or zero.

    Without ``n_state`` only the values of ``process_noise`` are checked (in
    ``_check_params``, before any work); with it, the resolved noise.
    """
    q = getattr(model, "process_noise", None)
    if n_state is None:
        arr = None if q is None else np.asarray(q, dtype=np.float64)
        zero = arr is None or (arr.ndim <= 1 and bool(np.any(arr == 0)))
        noise = None
    else:
        noise = model.noise_model(n_state)
        zero = noise is None or bool(np.any(noise.std == 0))
    if zero:
        raise ValueError(
            "method='backward' needs the model's transition density, a Gaussian around "
            "the noise-free forecast with covariance from model.process_noise, which must "
            f"be positive in every component; {type(model).__name__} has process_noise="
            f"{q!r}. Use method='ancestry' for a model without process noise."
        )
    return noise


def _draw_rows(log_p, rng):
    """One index per row of unnormalised log-probabilities ``(m, n)`` (inverse CDF)."""
    p = np.exp(log_p - log_p.max(axis=1, keepdims=True))
    cdf = np.cumsum(p, axis=1)
    u = rng.random(p.shape[0]) * cdf[:, -1]
    return np.minimum(np.sum(cdf <= u[:, None], axis=1), p.shape[1] - 1)


def _ancestor_indices(parents, final):
    """Trace paths back through a genealogy.

    ``parents[t, j]`` is the index, among the particles of time ``t - 1``, of the
    ancestor of particle ``j`` of time ``t`` (``parents[0]`` is unused). Returns the
    particle indices ``(n_times, m)`` of the paths that end at particles ``final``.
    """
    n_times = parents.shape[0]
    index = np.empty((n_times, np.size(final)), dtype=np.int64)
    index[-1] = final
    for t in range(n_times - 1, 0, -1):
        index[t - 1] = parents[t, index[t]]
    return index


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
    r"""Sample whole trajectories from a bootstrap particle filter-smoother of callables.

    The functional form of :class:`ParticleSmoother` (``method="ancestry"``) for dynamics
    that are not a dasim model, e.g. a model in normalised coordinates; benchmark B3's
    reference posterior. The filter runs :math:`N` particles forward through the
    window: draw :math:`x_0^i` from ``initial`` (the state *at* the first time, before
    its observation is assimilated), then at each time propagate with ``transition``
    (the prior is the proposal), multiply the weights by :math:`p(y_t \mid x_t^i)`
    where ``y_t`` is observed, and resample systematically when the effective sample
    size falls below ``ess_threshold * N``, recording each particle's ancestor.
    Trajectories are drawn at the end by picking final particles by their weights and
    following their genealogy back to the first time (Kitagawa's genealogy-tracing
    smoother): a consistent sample of the joint smoothing law whose early times are
    represented by few distinct ancestors when :math:`N` is small (path degeneracy).

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

    See Also
    --------
    ParticleSmoother : The estimator, on dasim models, with backward simulation.

    Examples
    --------
    >>> import numpy as np
    >>> from dasim.smoothers import bootstrap_smoother
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
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if not 0.0 <= float(ess_threshold) <= 1.0:
        raise ValueError(f"ess_threshold must be in [0, 1], got {ess_threshold!r}.")
    rng = as_generator(random_state)
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
            ess = effective_sample_size(log_w)
            if ess < float(ess_threshold) * n or float(ess_threshold) == 1.0:
                parent = resample(w / w.sum(), method="systematic", random_state=rng)
                x = x[parent]
                log_w = np.full(n, -np.log(n))
        # states[t] are the (resampled) particles; particle j descends from particle
        # parent[j] of the previous time's states.
        states[t] = x
        ancestors[t] = parent
    w = np.exp(log_w - logsumexp(log_w))
    idx = rng.choice(n, size=int(n_samples), p=w / w.sum())
    index = _ancestor_indices(ancestors, idx)
    out = np.empty((int(n_samples), n_times, states.shape[2]))
    for t in range(n_times):
        out[:, t] = states[t, index[t]]
    return out, log_evidence
