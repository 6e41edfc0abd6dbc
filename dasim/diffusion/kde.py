r"""Closed-form conditional score of a diffused Gaussian KDE (numpy reference path).

Model (spec sections 1.2-1.5). Given centres :math:`x_i` (the forecast ensemble,
:math:`i = 1..N`) and observation log-weights :math:`\ell_i` (for instance
:math:`\ell_i = -\lVert y^* - y_i\rVert^2 / (2\sigma_y^2)`, see
:func:`observation_log_weights`), the conditional density of the state at diffusion time
:math:`t` under a schedule (:mod:`dasim.diffusion.schedules`) is the Gaussian mixture

.. math::

    p_t(x \mid y^*) = \sum_i \pi_i\, \mathcal N\big(x;\ \mu(t) x_i,\ \bar\sigma(t)^2 I\big),
    \qquad \pi_i = \frac{e^{\ell_i}}{\sum_j e^{\ell_j}},

and its score is

.. math::

    s(x, t \mid y^*) = \nabla_x \log p_t(x \mid y^*)
    = \sum_i \bar w_i\, \frac{\mu(t) x_i - x}{\bar\sigma(t)^2},
    \qquad \bar w_i = \operatorname{softmax}_i\Big[\ell_i
    - \frac{\lVert x - \mu(t) x_i\rVert^2}{2\bar\sigma(t)^2}\Big].

Cost is :math:`O(MNd)` for ``M`` queries. The pairwise terms are processed in tiles of
``q`` queries by ``c`` centres, so memory is :math:`O(qc + (M + N)d)` and never
:math:`O(MN)`. Squared distances are expanded as :math:`\lVert x'\rVert^2 - 2\mu\,
x'\cdot c' + \mu^2\lVert c'\rVert^2` with a matrix product, after shifting queries and
centres by the centres' mean (to keep the expansion well conditioned for un-centred data).

Each tile is one fused pass of four operations over the (queries x centres) tile, where
the floor (one pass over the kernel matrix,
:func:`dasim.benchmarks.score_speed.bench_kde_score`) has two. One matrix product of
augmented rows gives the logits shifted by one constant for all rows, the largest
log-weight :math:`U = \max_i \ell_i` (an upper bound of every logit, so no row maximum
is needed); they are floored at :data:`EXP_FLOOR`, which keeps ``exp`` out of its slow
underflow path (20-50 x slower on CPU where most terms underflow); an in-place ``exp``;
and a second product, with the centres augmented by a column of ones, gives the weighted
sum of the centres and the sum of the weights together (no (M, N, d) temporary anywhere).
A row whose sum falls below :data:`RESCUE_BELOW` (a query far from every centre of
appreciable weight) is recomputed exactly, with its own running maximum across the centre
tiles (a streaming log-sum-exp), the squared distances clipped at 0. Either way the
floored terms weigh at most :math:`N e^{-100}` (float64) or :math:`N e^{-30}` (float32)
against the row's sum, far below rounding. The fast pass does not clip the expanded
squared distance at 0: a negative value there is a rounding error of the expansion, of
the same size as the positive ones.

The pairwise tiles can be computed in float32 (``dtype="float32"``): the centres' shift,
the squared norms, the sums across centre tiles and the result stay in float64;
only the two matrix products and the ``exp`` run in float32. The error of the expanded
squared distance is then about :math:`\epsilon_{32}(\lVert x'\rVert^2 +
\mu^2\lVert c'\rVert^2)/(2\bar\sigma^2)` in each logit.

Functions accept numpy arrays (computed in float64) or torch tensors (computed on the
tensor's device and dtype); one implementation serves both, written over the small array
namespace of :mod:`dasim.diffusion._xp` (in :mod:`dasim.diffusion._kde_core`). torch is
imported only when a tensor is passed or ``backend="torch"`` is asked for. With torch the
log-density is differentiable by autograd:
``torch.autograd.grad(kde_log_density(x, ...).sum(), x)`` equals :func:`kde_score`.
"""

from __future__ import annotations

import numpy as np

from .._stats import effective_sample_size
from .._torch import resolve_device as _resolve_device
from ._kde_core import (
    DEFAULT_MEMORY_BUDGET,
    EXP_FLOOR,
    RESCUE_BELOW,
    SCORE_DTYPES,
    Centres,
    _check_log_weights,
    _check_matrix,
    _check_time,
    _score_logp_prepared,
    check_score_dtype,
    tile_for,
)

# re-exported for the samplers, the benchmarks and the tests
from ._kde_core import _Centres as _Centres
from ._kde_core import _lse_stats as _lse_stats
from ._kde_core import _lse_stats_exact as _lse_stats_exact
from ._kde_core import _numpy_tile as _numpy_tile
from ._kde_core import floor_needed as floor_needed
from ._kde_core import tile_shape as tile_shape
from ._xp import is_tensor as _is_tensor
from ._xp import torch_namespace

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "EXP_FLOOR",
    "RESCUE_BELOW",
    "SCORE_DTYPES",
    "observation_log_weights",
    "kde_log_density",
    "kde_score",
    "kde_score_and_log_density",
    "resolve_device",
    "effective_sample_size",
]

# --------------------------------------------------------------------------- helpers


def resolve_device(device="auto"):
    """Resolve a device specification to a torch device name.

    The KDE's front to :func:`dasim._torch.resolve_device`, the package's one device
    resolver.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda", ...}, torch.device or None
        ``"auto"`` and ``None`` give ``"cuda"`` when ``torch.cuda.is_available()``, else
        ``"cpu"``. Anything else is checked against the devices this machine has.

    Returns
    -------
    str
        The device name.

    Examples
    --------
    >>> resolve_device("cpu")
    'cpu'
    """
    if device is not None and not isinstance(device, str) and type(device).__name__ != "device":
        raise TypeError(f"device must be a string or a torch.device, got {device!r}.")
    return _resolve_device(device)


def observation_log_weights(y_obs, Y_sim, sigma_y):
    r"""Observation log-weights of the joint KDE, computed once per analysis.

    .. math::

        \ell_i = -\sum_{k \in \mathcal O} \frac{(y^*_k - y_{i,k})^2}{2\sigma_{y,k}^2},

    where :math:`\mathcal O` is the set of observed (non-NaN) components of ``y_obs``. The
    kernel normalising constants are equal for all ``i`` and are left out (they cancel in
    every softmax). With noise-free predictions :math:`h(x_i)` for ``Y_sim`` and the true
    noise standard deviation for ``sigma_y`` this is the exact Gaussian log-likelihood up to
    a constant: what ``likelihood="known"`` passes to :func:`kde_score`.

    Parameters
    ----------
    y_obs : array-like of shape (dy,)
        The actual observation :math:`y^*`; NaN entries are unobserved and skipped.
    Y_sim : array-like of shape (N, dy)
        Simulated observations :math:`y_i` of the ensemble members (finite).
    sigma_y : float or array-like of shape (dy,)
        Observation bandwidth(s), > 0.

    Returns
    -------
    numpy.ndarray of shape (N,)
        The log-weights :math:`\ell_i` (all zero when nothing is observed).

    Examples
    --------
    >>> observation_log_weights([0.0, np.nan], [[1.0, 5.0], [0.0, -3.0]], 1.0)
    array([-0.5, -0. ])
    """
    y_obs = np.asarray(y_obs, dtype=np.float64)
    if y_obs.ndim != 1:
        raise ValueError(f"y_obs must be 1-D (dy,), got shape {y_obs.shape}.")
    if np.any(np.isinf(y_obs)):
        raise ValueError("y_obs contains inf (use NaN for unobserved components).")
    Y_sim = np.asarray(Y_sim, dtype=np.float64)
    if Y_sim.ndim != 2 or Y_sim.shape[1] != y_obs.shape[0]:
        raise ValueError(
            f"Y_sim must have shape (N, {y_obs.shape[0]}) to match y_obs, got {Y_sim.shape}."
        )
    sigma_y = np.asarray(sigma_y, dtype=np.float64)
    if sigma_y.ndim > 1 or (sigma_y.ndim == 1 and sigma_y.shape != y_obs.shape):
        raise ValueError(
            f"sigma_y must be a scalar or of shape {y_obs.shape}, got {sigma_y.shape}."
        )
    if not np.all(np.isfinite(sigma_y)) or np.any(sigma_y <= 0):
        raise ValueError(f"sigma_y must be finite and > 0, got {sigma_y!r}.")
    observed = ~np.isnan(y_obs)
    Y_obs_part = Y_sim[:, observed]
    if not np.all(np.isfinite(Y_obs_part)):
        raise ValueError("Y_sim contains NaN or inf in an observed component.")
    scale = np.broadcast_to(sigma_y, y_obs.shape)[observed]
    z = (y_obs[observed] - Y_obs_part) / scale
    return -0.5 * np.einsum("ij,ij->i", z, z)


_PARAMS = """\
    x : numpy.ndarray or torch.Tensor of shape (M, d)
        Query points.
    t : float
        Diffusion time, with :math:`\\bar\\sigma(t) > 0` (at or above the schedule's
        ``t_end``).
    centres : numpy.ndarray or torch.Tensor of shape (N, d)
        KDE centres :math:`x_i` (the forecast ensemble, centred by the caller if wanted).
    log_w_obs : numpy.ndarray or torch.Tensor of shape (N,), or None
        Observation log-weights :math:`\\ell_i` (unnormalised; ``-inf`` allowed for zero
        weight; ``None`` for uniform weights, the prior KDE). See
        :func:`observation_log_weights`, or pass a known log-likelihood vector.
    schedule : VESchedule or VPSchedule
        Gives :math:`\\mu(t)` and :math:`\\bar\\sigma(t)`.
    chunk_size : int or tuple of (int, int), optional
        Forced tile: queries per tile, or (queries, centres) per tile. Default: from
        ``memory_budget``.
    memory_budget : int, optional
        Bytes allowed for the pairwise temporaries of one tile (default 256 MiB).
    backend : {None, "numpy", "torch"}, optional
        ``None`` dispatches on the type of the inputs (torch if any is a tensor).
    device : str, optional
        The torch device used when numpy inputs are sent to ``backend="torch"``
        (default ``"auto"``); tensors are computed on the device of ``x``.
    dtype : {None, "float64", "float32"}, optional
        Precision of the pairwise tiles (the two matrix products and the ``exp``; a numpy
        or torch dtype is accepted too). None: float64 for numpy inputs, the dtype of
        ``x`` for tensors. ``"float32"`` is about 1.5 x faster on CPU, with logits
        accurate to about :math:`\\epsilon_{32}\\lVert x\\rVert^2/\\bar\\sigma^2`; the
        shift, the norms and the results stay in the input precision.

"""


def _dispatch(
    x,
    t,
    centres,
    log_w_obs,
    schedule,
    chunk_size,
    memory_budget,
    backend,
    device,
    want_score,
    want_logp,
    dtype=None,
):
    if backend not in (None, "numpy", "torch"):
        raise ValueError(f"backend must be None, 'numpy' or 'torch', got {backend!r}.")
    dtype = check_score_dtype(dtype)
    xp = None  # numpy float64 (the checks' default)
    return_numpy = not _is_tensor(x)
    if backend == "torch" or any(_is_tensor(a) for a in (x, centres, log_w_obs)):
        if backend == "numpy":
            raise ValueError("backend='numpy' was asked for but torch tensors were passed.")
        xp = torch_namespace(device, like=None if return_numpy else x)
    x = _check_matrix(x, "x", xp=xp)
    centres = _check_matrix(centres, "centres", ncols=x.shape[1], xp=xp)
    log_w = _check_log_weights(log_w_obs, centres.shape[0], xp=xp, like=x)
    _, mu, sbar2 = _check_time(t, schedule)
    cen = Centres(centres, log_w, dtype)
    tile = tile_for(cen.xp, x.shape[0], cen.C0.shape[0], chunk_size, memory_budget, cen.dtype)
    out = _score_logp_prepared(x, mu, sbar2, cen, tile, want_score, want_logp)
    if xp is not None and return_numpy:
        out = tuple(None if o is None else xp.to_numpy(o) for o in out)
    return out


def _entry_point(name, want_score, want_logp, doc):
    """A public function of the closed-form KDE: one body, three entry points that differ
    in what they compute (the score, the log-density or both) and return."""

    def evaluate(
        x,
        t,
        centres,
        log_w_obs,
        schedule,
        chunk_size=None,
        *,
        memory_budget=None,
        backend=None,
        device=None,
        dtype=None,
    ):
        args = (x, t, centres, log_w_obs, schedule, chunk_size, memory_budget, backend, device)
        score, logp = _dispatch(*args, want_score, want_logp, dtype)
        if want_score and want_logp:
            return score, logp
        return score if want_score else logp

    evaluate.__name__ = evaluate.__qualname__ = name
    evaluate.__doc__ = doc.replace("    %(kde_params)s\n", _PARAMS)
    return evaluate


# --------------------------------------------------------------------------- public API

kde_score = _entry_point(
    "kde_score",
    True,
    False,
    r"""Closed-form conditional score :math:`s(x, t \mid y^*)` of the diffused KDE.

    .. math::

        s(x, t \mid y^*) = \frac{\mu(t) \sum_i \bar w_i x_i - x}{\bar\sigma(t)^2},\qquad
        \bar w_i = \operatorname{softmax}_i\Big[\ell_i
        - \frac{\lVert x - \mu(t) x_i\rVert^2}{2\bar\sigma(t)^2}\Big].

    Parameters
    ----------
    %(kde_params)s
    Returns
    -------
    numpy.ndarray or torch.Tensor of shape (M, d)
        The score; a tensor (dtype and device of ``x``) when ``x`` is a tensor, else a
        float64 numpy array.

    Examples
    --------
    >>> from dasim.diffusion.schedules import VESchedule
    >>> kde_score(np.array([[1.0]]), 0.0, np.array([[0.0]]), None, VESchedule(1.0, 10.0))
    array([[-1.]])
    """,
)

kde_log_density = _entry_point(
    "kde_log_density",
    False,
    True,
    r"""Log-density :math:`\log p_t(x \mid y^*)` of the diffused conditional KDE.

    A proper (normalised) log-density in :math:`x`:

    .. math::

        \log p_t(x \mid y^*) = \log \sum_i \pi_i\,
        \mathcal N\big(x;\ \mu(t)x_i,\ \bar\sigma(t)^2 I\big)
        = \operatorname{LSE}_i\Big[\ell_i - \frac{\lVert x-\mu x_i\rVert^2}{2\bar\sigma^2}
        \Big] - \operatorname{LSE}_i[\ell_i] - \frac d2 \log(2\pi\bar\sigma^2).

    Parameters
    ----------
    %(kde_params)s
    Returns
    -------
    numpy.ndarray or torch.Tensor of shape (M,)
        The log-density (tensor when ``x`` is a tensor, else float64 numpy).

    Examples
    --------
    >>> from dasim.diffusion.schedules import VESchedule
    >>> lp = kde_log_density(np.zeros((1, 1)), 0.0, np.zeros((1, 1)), None, VESchedule(1.0, 2.0))
    >>> bool(np.isclose(lp[0], -0.5 * np.log(2 * np.pi)))
    True
    """,
)

kde_score_and_log_density = _entry_point(
    "kde_score_and_log_density",
    True,
    True,
    r"""Score and log-density in one pass over the pairs (the tiles are shared).

    Parameters
    ----------
    %(kde_params)s
    Returns
    -------
    score : numpy.ndarray or torch.Tensor of shape (M, d)
        As :func:`kde_score` returns it.
    log_density : numpy.ndarray or torch.Tensor of shape (M,)
        As :func:`kde_log_density` returns it.

    Examples
    --------
    >>> from dasim.diffusion.schedules import VESchedule
    >>> s, lp = kde_score_and_log_density(np.ones((2, 3)), 0.5, np.zeros((4, 3)), None,
    ...                                   VESchedule(0.5, 5.0))
    >>> s.shape, lp.shape
    ((2, 3), (2,))
    """,
)
