"""Ensemble verification metrics: RMSE, spread, CRPS, energy score, time means."""

import numpy as np

from ._checks import (
    _as_float_array,
    _check_burn_in,
    _check_inputs,
    _check_positive_int,
    _finish,
    _weighted_mean,
)

# Default number of pairwise distances the energy score holds in memory at once.
_DEFAULT_CHUNK_SIZE = 2**22

#: Parameter descriptions shared by the metrics' docstrings, put in at ``%(name)s``.
_DOC_PARAMS = {
    "ensemble_params": """\
    ensemble : array-like of shape (..., n_members, n_state), xarray.Dataset or DataArray
        Ensemble(s); leading dimensions broadcast with those of ``truth``. The Dataset
        ``assimilate`` returns stands for its ``analysis`` with its ``weights`` if any.
    weights : array-like of shape (..., n_members), optional
        Non-negative member weights, each row summing to one. Uniform when omitted (and
        not allowed with a Dataset that has its own).
""",
    "weights_param": """\
    weights : array-like of shape (..., n_members), optional
        Non-negative member weights, each row summing to one. Uniform when omitted (and
        not allowed with a Dataset that has its own).
""",
}


def _fill_doc(func):
    """Put the shared parameter descriptions into ``func``'s docstring."""
    if func.__doc__:  # None under python -OO
        for key, text in _DOC_PARAMS.items():
            func.__doc__ = func.__doc__.replace(f"    %({key})s\n", text)
    return func


@_fill_doc
def rmse(truth, ensemble, weights=None):
    """Root-mean-square error of the ensemble mean.

    ``sqrt(mean_j (xbar_j - truth_j) ** 2)`` where ``xbar`` is the (weighted) ensemble
    mean and ``j`` runs over the state components.

    Parameters
    ----------
    truth : array-like of shape (..., n_state)
        True state(s).
    %(ensemble_params)s

    Returns
    -------
    rmse : float or ndarray of shape (...)
        One value per leading (time) index; a float for 1-D ``truth`` and 2-D ``ensemble``.

    Examples
    --------
    >>> import numpy as np
    >>> from dasim.metrics import rmse
    >>> rmse([0.0, 0.0], [[1.0, 2.0], [3.0, 2.0]])
    2.0
    >>> rmse(np.zeros((3, 2)), np.ones((3, 5, 2)))
    array([1., 1., 1.])

    What ``assimilate`` returns goes in directly; a particle filter's weights are used:

    >>> import xarray as xr
    >>> ds = xr.Dataset({"analysis": (("time", "member", "state"), [[[0.0], [4.0]]]),
    ...                  "weights": (("time", "member"), [[0.75, 0.25]])})
    >>> rmse([[0.0]], ds)
    array([1.])
    """
    truth, ensemble, weights, _ = _check_inputs(truth, ensemble, weights)
    err = _weighted_mean(ensemble, weights) - truth
    return _finish(np.sqrt(np.mean(err**2, axis=-1)))


@_fill_doc
def spread(ensemble, weights=None):
    """Ensemble spread: square root of the state-averaged ensemble variance.

    ``sqrt(mean_j var_j)`` with the unbiased variance (factor ``N / (N - 1)``) for an
    unweighted ensemble, and the reliability-weights correction
    ``sum_i w_i (x_ij - xbar_j) ** 2 / (1 - sum_i w_i ** 2)`` for a weighted one.

    Parameters
    ----------
    ensemble : array-like of shape (..., n_members, n_state), xarray.Dataset or DataArray
        Ensemble(s), at least 2 members. The Dataset ``assimilate`` returns stands for its
        ``analysis`` with its ``weights`` if any.
    %(weights_param)s

    Returns
    -------
    spread : float or ndarray of shape (...)
        One value per leading (time) index. A row whose weight sits on a single member
        (``sum w ** 2 == 1``) has no spread and gives 0.

    Examples
    --------
    >>> from dasim.metrics import spread
    >>> spread([[0.0], [2.0]])
    1.4142135623730951
    >>> spread([[0.0], [2.0], [4.0]], weights=[0.25, 0.5, 0.25])
    1.7888543819998317
    """
    _, ensemble, weights, _ = _check_inputs(
        None, ensemble, weights, need_truth=False, min_members=2
    )
    n_members = ensemble.shape[-2]
    anomalies = ensemble - _weighted_mean(ensemble, weights)[..., None, :]
    if weights is None:
        var = np.sum(anomalies**2, axis=-2) / (n_members - 1)
        return _finish(np.sqrt(np.mean(var, axis=-1)))
    biased = np.mean((weights[..., None, :] @ anomalies**2)[..., 0, :], axis=-1)
    denom = 1.0 - np.sum(weights**2, axis=-1)
    degenerate = denom <= 4 * np.finfo(np.float64).eps
    var = np.where(degenerate, 0.0, biased / np.where(degenerate, 1.0, denom))
    return _finish(np.sqrt(var))


def _sorted_pair_term(ensemble, weights):
    """``sum_ik w_i w_k |x_ij - x_kj|`` per component ``j`` by sorting: O(N log N).

    For sorted members ``x_(1) <= ... <= x_(N)`` with cumulative weights ``C_k``, the
    pairwise sum equals ``2 sum_i w_i x_(i) (C_(i-1) + C_i - 1)``; summing by parts gives
    the form used here, ``2 sum_k (x_(k+1) - x_(k)) C_k (1 - C_k)``, whose terms are all
    non-negative and depend on gaps only (exactly translation invariant).
    """
    x = np.swapaxes(ensemble, -1, -2)  # (..., n_state, n_members)
    n_members = x.shape[-1]
    if weights is None:
        xs = np.sort(x, axis=-1)
        cum = np.arange(1, n_members) / n_members
    else:
        w = weights[..., None, :]  # (..., 1, n_members)
        shape = np.broadcast_shapes(x.shape, w.shape)
        x, w = np.broadcast_to(x, shape), np.broadcast_to(w, shape)
        order = np.argsort(x, axis=-1)
        xs = np.take_along_axis(x, order, axis=-1)
        cum = np.cumsum(np.take_along_axis(w, order, axis=-1), axis=-1)[..., :-1]
    gaps = np.diff(xs, axis=-1)
    return 2.0 * np.sum(gaps * cum * (1.0 - cum), axis=-1)


@_fill_doc
def crps_ensemble(truth, ensemble, weights=None):
    """Compute the continuous ranked probability score of an ensemble, averaged over components.

    Per state component the energy form ``E|X - y| - 0.5 E|X - X'|`` of the (weighted)
    empirical distribution of the members (not the "fair" variant), computed in
    ``O(N log N)`` by sorting the members; then the mean over components.

    Parameters
    ----------
    truth : array-like of shape (..., n_state)
        Verifying observation(s) or true state(s) ``y``.
    %(ensemble_params)s

    Returns
    -------
    crps : float or ndarray of shape (...)
        One value per leading (time) index, in the units of the state.

    Examples
    --------
    >>> from dasim.metrics import crps_ensemble
    >>> crps_ensemble([0.5], [[0.0], [2.0]])
    0.5
    >>> crps_ensemble([0.5], [[0.0], [2.0]], weights=[0.75, 0.25])
    0.375
    """
    truth, ensemble, weights, _ = _check_inputs(truth, ensemble, weights)
    abs_err = np.abs(ensemble - truth[..., None, :])
    if weights is None:
        first = abs_err.mean(axis=-2)
    else:
        first = (weights[..., None, :] @ abs_err)[..., 0, :]
    pair = _sorted_pair_term(ensemble, weights)
    return _finish(np.mean(first - 0.5 * pair, axis=-1))


@_fill_doc
def energy_score(truth, ensemble, weights=None, chunk_size=_DEFAULT_CHUNK_SIZE):
    """Multivariate energy score of an ensemble.

    ``E||X - y|| - 0.5 E||X - X'||`` with the Euclidean norm over the state and the
    (weighted) empirical distribution of the members. In one dimension it equals
    :func:`crps_ensemble`.

    The pairwise term is computed from the Gram matrix of the centred members, in blocks
    of at most ``chunk_size`` member pairs, so memory stays bounded for large ensembles
    (no ``N x N x n_state`` array). The Gram expansion costs some precision on nearly
    coincident members: absolute errors are of order ``1e-8`` times the ensemble's size.

    Parameters
    ----------
    truth : array-like of shape (..., n_state)
        Verifying state(s) ``y``.
    %(ensemble_params)s
    chunk_size : int, default=2**22
        Largest number of member pairs whose distances are held in memory at once
        (at least one row of ``n_members`` pairs is always used).

    Returns
    -------
    score : float or ndarray of shape (...)
        One value per leading (time) index.

    Examples
    --------
    >>> from dasim.metrics import energy_score
    >>> energy_score([0.0, 0.0], [[3.0, 4.0]])
    5.0
    >>> energy_score([0.0, 0.0], [[3.0, 4.0], [-3.0, -4.0]])
    2.5
    """
    chunk_size = _check_positive_int(chunk_size, "chunk_size")
    truth, ensemble, weights, lead = _check_inputs(truth, ensemble, weights)
    n_members, n_state = ensemble.shape[-2:]

    dist_to_truth = np.sqrt(np.sum((ensemble - truth[..., None, :]) ** 2, axis=-1))
    if weights is None:
        first = dist_to_truth.mean(axis=-1)
    else:
        first = np.sum(weights * dist_to_truth, axis=-1)
    first = np.broadcast_to(first, lead)

    # Pairwise term, on the ensemble's own leading shape flattened to one axis.
    ens_lead = ensemble.shape[:-2]
    if weights is None:
        w = np.full(ens_lead + (n_members,), 1.0 / n_members)
        pair_lead = ens_lead
    else:
        pair_lead = np.broadcast_shapes(ens_lead, weights.shape[:-1])
        w = np.broadcast_to(weights, pair_lead + (n_members,))
    n_times = int(np.prod(pair_lead, dtype=np.int64))
    x = np.broadcast_to(ensemble, pair_lead + (n_members, n_state)).reshape(
        n_times, n_members, n_state
    )
    w = w.reshape(n_times, n_members)
    x = x - (w[:, None, :] @ x)  # centre: better conditioned Gram expansion
    sq = np.sum(x**2, axis=-1)
    pair = np.zeros(n_times)
    per_step = n_members * n_members
    times_per_block = max(1, chunk_size // per_step)
    rows_per_block = n_members if times_per_block > 1 else max(1, chunk_size // n_members)
    for t0 in range(0, n_times, times_per_block):
        t1 = min(t0 + times_per_block, n_times)
        for r0 in range(0, n_members, rows_per_block):
            r1 = min(r0 + rows_per_block, n_members)
            gram = x[t0:t1, r0:r1] @ np.swapaxes(x[t0:t1], -1, -2)
            d2 = sq[t0:t1, r0:r1, None] + sq[t0:t1, None, :] - 2.0 * gram
            dist = np.sqrt(np.maximum(d2, 0.0, out=d2), out=d2)
            rows = np.arange(r1 - r0)
            dist[:, rows, rows + r0] = 0.0  # exact zeros on the diagonal
            pair[t0:t1] += np.einsum("tr,trn,tn->t", w[t0:t1, r0:r1], dist, w[t0:t1])
    pair = np.broadcast_to(pair.reshape(pair_lead), lead)
    return _finish(first - 0.5 * pair)


def time_mean(values, burn_in=0):
    """Mean over the first (time) axis after dropping a burn-in.

    Parameters
    ----------
    values : array-like of shape (n_times, ...)
        Per-time values, e.g. the output of :func:`rmse`.
    burn_in : int, default=0
        Number of leading entries to drop; must be smaller than ``n_times``.

    Returns
    -------
    mean : float or ndarray of shape values.shape[1:]
        A float for 1-D ``values``.

    Examples
    --------
    >>> from dasim.metrics import time_mean
    >>> time_mean([10.0, 1.0, 2.0, 3.0], burn_in=1)
    2.0
    """
    arr = _as_float_array(values, "values")
    if arr.ndim < 1:
        raise ValueError("values must have a time axis, got a scalar")
    burn_in = _check_burn_in(burn_in, arr.shape[0])
    return _finish(arr[burn_in:].mean(axis=0))


def spread_skill(truth, ensemble, weights=None, *, burn_in=0):
    """Spread/skill ratio: time-mean spread over time-mean RMSE.

    A calibrated ensemble gives about 1; below 1 it is over-confident.

    Parameters
    ----------
    truth : array-like of shape (n_times, n_state) or (n_state,)
        True states.
    ensemble : array-like of shape (n_times, n_members, n_state) or (n_members, n_state)
        Ensembles, at least 2 members; or the Dataset ``assimilate`` returns (its
        ``analysis`` with its ``weights`` if any).
    weights : array-like of shape (n_times, n_members) or (n_members,), optional
        Non-negative member weights, each row summing to one. Uniform when omitted (and
        not allowed with a Dataset that has its own).
    burn_in : int, default=0
        Number of leading times left out of both time means.

    Returns
    -------
    ratio : float
        ``time_mean(spread) / time_mean(rmse)`` (means over all leading dimensions).

    Raises
    ------
    ValueError
        If the time-mean RMSE is zero (the ratio is undefined).

    Examples
    --------
    >>> from dasim.metrics import spread_skill
    >>> spread_skill([[0.0], [0.0]], [[[1.0], [3.0]], [[-1.0], [-3.0]]])
    0.7071067811865476
    """
    truth, ensemble, weights, lead = _check_inputs(truth, ensemble, weights, min_members=2)
    err = rmse(truth, ensemble, weights)
    spr = spread(ensemble, weights)
    err = np.broadcast_to(err, lead)
    spr = np.broadcast_to(spr, lead)
    if len(lead) == 0:
        if burn_in != 0:
            raise ValueError(f"burn_in must be 0 for inputs without a time axis, got {burn_in}")
        mean_err, mean_spr = float(err), float(spr)
    else:
        mean_err = float(np.mean(time_mean(err, burn_in)))
        mean_spr = float(np.mean(time_mean(spr, burn_in)))
    if mean_err == 0.0:
        raise ValueError("the time-mean RMSE is zero: the spread/skill ratio is undefined")
    return mean_spr / mean_err
