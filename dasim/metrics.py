"""Verification metrics and scorers for ensemble data assimilation.

Every metric compares a true state (or a second sample) with an ensemble and is vectorised
over any number of leading "time" dimensions: a state array has shape ``(..., n_state)``,
an ensemble ``(..., n_members, n_state)`` and optional member weights (particle filters)
``(..., n_members)``, non-negative with every row summing to one. Leading dimensions
broadcast as in numpy, and each metric returns one value per leading index (a Python
float when there is none).

The ensemble argument may also be what ``assimilate`` returns: an :class:`xarray.Dataset`
stands for its ``analysis`` ensemble (dims ``(time, member, state)``) with its member
``weights`` when it has them (a particle filter's), so ``rmse(X, ds)`` is the RMSE of the
*weighted* mean; an :class:`xarray.DataArray` with ``member`` and ``state`` dims (e.g.
``ds["forecast"]``) is put in that order and taken unweighted.

The scorers at the end of the module have the scikit-learn callable-scorer signature
``scorer(estimator, X, y) -> float`` (greater is better), so they can be passed to
``GridSearchCV(scoring=...)``: they run ``estimator.assimilate(y)`` and compare its
analysis ensemble with the true states ``X``.

All computations are numpy float64. Inputs are validated before any work, and bad input
raises a ``ValueError`` or ``TypeError`` naming the argument at fault.
"""

import numbers
import warnings

import numpy as np
import xarray as xr

__all__ = [
    "SCORERS",
    "crps_ensemble",
    "energy_score",
    "get_scorer",
    "get_scorer_names",
    "log_evidence",
    "neg_crps",
    "neg_energy_score",
    "neg_rmse",
    "rmse",
    "spread",
    "spread_skill",
    "time_mean",
    "wasserstein2",
]

# Tolerance on |sum(weights) - 1| for every weights row.
_WEIGHTS_SUM_RTOL = 1e-8
# Default number of pairwise distances the energy score holds in memory at once.
_DEFAULT_CHUNK_SIZE = 2**22


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


def _as_float_array(value, name):
    """Return ``value`` as a float64 array, or raise ``TypeError`` naming ``name``."""
    if value is None:
        raise TypeError(f"{name} must be an array of real numbers, got None")
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be an array of real numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def _from_xarray(ensemble, weights, e_name, w_name):
    """Unpack an assimilation Dataset (or a DataArray) into ensemble and weights arrays.

    A Dataset gives its ``analysis`` with dims ordered ``(..., member, state)`` and, when
    it has them, its ``weights`` broadcast to the same leading dims; a DataArray with
    ``member`` and ``state`` dims is put in that order. Anything else is returned as is.
    """
    if isinstance(ensemble, xr.Dataset):
        if "analysis" not in ensemble:
            raise ValueError(
                f"{e_name} is an xarray.Dataset without an 'analysis' variable (variables: "
                f"{sorted(ensemble.data_vars)}); pass what assimilate returns, or an array"
            )
        has_weights = "weights" in ensemble
        if has_weights and weights is not None:
            raise ValueError(
                f"{w_name} was given but {e_name} is a Dataset with its own 'weights'; pass "
                f"one of them (e.g. {e_name}['analysis'] with your {w_name})"
            )
        da = _member_state_last(ensemble["analysis"], e_name)
        if has_weights:
            w = ensemble["weights"]
            if "member" not in w.dims:
                raise ValueError(f"the 'weights' of {e_name} have no 'member' dimension")
            w, _ = xr.broadcast(w, da.isel(state=0, drop=True))
            weights = w.transpose(*da.dims[:-1]).values
        return da.values, weights
    if isinstance(ensemble, xr.DataArray):
        return _member_state_last(ensemble, e_name).values, weights
    return ensemble, weights


def _member_state_last(da, name):
    """A DataArray with ``member`` and ``state`` dims put last (positional otherwise)."""
    if "member" in da.dims and "state" in da.dims:
        return da.transpose(..., "member", "state")
    if not ({"member", "state"} & set(da.dims)):
        return da
    raise ValueError(
        f"{name} must have both 'member' and 'state' dimensions (or neither, taken in the "
        f"order (..., n_members, n_state)), got dims {da.dims}"
    )


def _check_burn_in(burn_in, n_times):
    """Validate a burn-in against ``n_times`` and return it as an int."""
    if isinstance(burn_in, bool) or not isinstance(burn_in, numbers.Integral):
        raise TypeError(f"burn_in must be an integer, got {burn_in!r}")
    if burn_in < 0:
        raise ValueError(f"burn_in must be non-negative, got {burn_in}")
    if burn_in >= n_times:
        raise ValueError(
            f"burn_in ({burn_in}) must be smaller than the number of times ({n_times})"
        )
    return int(burn_in)


def _check_finite(arr, name):
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")
    if np.isinf(arr).any():
        raise ValueError(f"{name} contains inf")


def _check_inputs(
    truth,
    ensemble,
    weights=None,
    *,
    need_truth=True,
    min_members=1,
    names=("truth", "ensemble", "weights"),
):
    """Validate the arguments shared by all metrics.

    Parameters
    ----------
    truth : array-like of shape (..., n_state) or None
        Verifying state; ignored when ``need_truth`` is False.
    ensemble : array-like of shape (..., n_members, n_state), xarray.Dataset or DataArray
        Ensemble (or point cloud); a Dataset gives its ``analysis`` and ``weights``.
    weights : array-like of shape (..., n_members) or None
        Member weights, broadcastable to the leading shape of the result.
    need_truth : bool, default=True
        Whether ``truth`` is part of the metric.
    min_members : int, default=1
        Fewest members the metric is defined for.
    names : tuple of str
        Argument names used in error messages.

    Returns
    -------
    truth : ndarray or None
    ensemble : ndarray
    weights : ndarray or None
        Validated weights, renormalised so that every row sums to one exactly.
    lead : tuple of int
        Broadcast leading ("time") shape of the result.
    """
    t_name, e_name, w_name = names
    ensemble, weights = _from_xarray(ensemble, weights, e_name, w_name)
    ens = _as_float_array(ensemble, e_name)
    tru = _as_float_array(truth, t_name) if need_truth else None
    w = _as_float_array(weights, w_name) if weights is not None else None

    # Shapes first, so that a wrong layout gets a layout message.
    if ens.ndim < 2:
        raise ValueError(
            f"{e_name} must have shape (..., n_members, n_state) with at least 2 "
            f"dimensions, got shape {ens.shape}"
        )
    n_members, n_state = ens.shape[-2:]
    if n_members < min_members:
        raise ValueError(
            f"{e_name} has {n_members} members (shape {ens.shape}); at least "
            f"{min_members} member{'s' if min_members > 1 else ''} needed"
        )
    if ens.size == 0:
        raise ValueError(f"{e_name} is empty (shape {ens.shape})")
    lead = ens.shape[:-2]
    if tru is not None:
        if tru.ndim < 1:
            raise ValueError(
                f"{t_name} must have shape (..., n_state) with at least 1 dimension, got a scalar"
            )
        if tru.shape[-1] != n_state:
            raise ValueError(
                f"{t_name} has {tru.shape[-1]} state components but {e_name} has {n_state} "
                f"({t_name} shape {tru.shape}, {e_name} shape {ens.shape})"
            )
        try:
            lead = np.broadcast_shapes(tru.shape[:-1], lead)
        except ValueError:
            raise ValueError(
                f"leading (time) dimensions of {t_name} {tru.shape[:-1]} and {e_name} "
                f"{ens.shape[:-2]} do not broadcast ({t_name} shape {tru.shape}, {e_name} "
                f"shape {ens.shape})"
            ) from None
        if tru.size == 0:
            raise ValueError(f"{t_name} is empty (shape {tru.shape})")
    if w is not None:
        if w.ndim < 1 or w.shape[-1] != n_members:
            raise ValueError(
                f"{w_name} must have shape (..., n_members) with n_members = {n_members} "
                f"as in {e_name}, got {w_name} shape {w.shape} and {e_name} shape "
                f"{ens.shape}"
            )
        try:
            ok = np.broadcast_shapes(w.shape[:-1], lead) == lead
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"leading (time) dimensions of {w_name} {w.shape[:-1]} do not broadcast to "
                f"{lead} ({w_name} shape {w.shape}, {e_name} shape {ens.shape})"
            )
        if w.size == 0:
            raise ValueError(f"{w_name} is empty (shape {w.shape})")
    if any(s == 0 for s in lead):
        raise ValueError(f"{e_name} is empty: leading (time) shape {lead}")

    # Then values.
    if tru is not None:
        _check_finite(tru, t_name)
    _check_finite(ens, e_name)
    if w is not None:
        _check_finite(w, w_name)
        if (w < 0).any():
            raise ValueError(f"{w_name} must be non-negative, found {w.min()}")
        total = w.sum(axis=-1, keepdims=True)
        bad = np.abs(total - 1.0) > _WEIGHTS_SUM_RTOL
        if bad.any():
            worst = total[bad].flat[0]
            raise ValueError(
                f"every row of {w_name} must sum to 1 (tolerance {_WEIGHTS_SUM_RTOL:g}); "
                f"{int(bad.sum())} row(s) do not, e.g. one sums to {worst!r}"
            )
        w = w / total
    return tru, ens, w, lead


def _finish(values):
    """Return a Python float for a 0-d result, the array otherwise."""
    values = np.asarray(values, dtype=np.float64)
    return float(values) if values.ndim == 0 else values


def _weighted_mean(ensemble, weights):
    """Mean over the member axis ``-2``, weighted when ``weights`` is given."""
    if weights is None:
        return ensemble.mean(axis=-2)
    return (weights[..., None, :] @ ensemble)[..., 0, :]


def _check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return int(value)


# --------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------


def rmse(truth, ensemble, weights=None):
    """Root-mean-square error of the ensemble mean.

    ``sqrt(mean_j (xbar_j - truth_j) ** 2)`` where ``xbar`` is the (weighted) ensemble
    mean and ``j`` runs over the state components.

    Parameters
    ----------
    truth : array-like of shape (..., n_state)
        True state(s).
    ensemble : array-like of shape (..., n_members, n_state), xarray.Dataset or DataArray
        Ensemble(s); leading dimensions broadcast with those of ``truth``. The Dataset
        ``assimilate`` returns stands for its ``analysis`` with its ``weights`` if any.
    weights : array-like of shape (..., n_members), optional
        Non-negative member weights, each row summing to one. Uniform when omitted (and
        not allowed with a Dataset that has its own).

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
    weights : array-like of shape (..., n_members), optional
        Non-negative member weights, each row summing to one. Uniform when omitted (and
        not allowed with a Dataset that has its own).

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


def crps_ensemble(truth, ensemble, weights=None):
    """Compute the continuous ranked probability score of an ensemble, averaged over components.

    Per state component the energy form ``E|X - y| - 0.5 E|X - X'|`` of the (weighted)
    empirical distribution of the members (not the "fair" variant), computed in
    ``O(N log N)`` by sorting the members; then the mean over components.

    Parameters
    ----------
    truth : array-like of shape (..., n_state)
        Verifying observation(s) or true state(s) ``y``.
    ensemble : array-like of shape (..., n_members, n_state), xarray.Dataset or DataArray
        Ensemble(s); leading dimensions broadcast with those of ``truth``. The Dataset
        ``assimilate`` returns stands for its ``analysis`` with its ``weights`` if any.
    weights : array-like of shape (..., n_members), optional
        Non-negative member weights, each row summing to one. Uniform when omitted (and
        not allowed with a Dataset that has its own).

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
    ensemble : array-like of shape (..., n_members, n_state), xarray.Dataset or DataArray
        Ensemble(s); leading dimensions broadcast with those of ``truth``. The Dataset
        ``assimilate`` returns stands for its ``analysis`` with its ``weights`` if any.
    weights : array-like of shape (..., n_members), optional
        Non-negative member weights, each row summing to one. Uniform when omitted (and
        not allowed with a Dataset that has its own).
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


def wasserstein2(a, b, weights_a=None, weights_b=None):
    """Exact 2-Wasserstein distance between two point clouds.

    Optimal transport with the squared-Euclidean cost (POT's ``ot.dist``, computed by
    direct differences, and the network simplex ``ot.emd2``), returning the square root
    of the optimal cost. Exact, not sliced or entropic. The clouds may differ in size.

    Parameters
    ----------
    a : array-like of shape (n, d) or (n_times, n, d), xarray.Dataset or DataArray
        First point cloud(s). The Dataset ``assimilate`` returns stands for its
        ``analysis`` ensembles with their ``weights`` if any.
    b : array-like of shape (m, d) or (n_times, m, d), xarray.Dataset or DataArray
        Second point cloud(s), with the same ``d`` (and ``n_times``) as ``a``.
    weights_a : array-like of shape (n,) or (n_times, n), optional
        Non-negative weights of the points of ``a``, each row summing to one.
        Uniform when omitted (and not allowed with a Dataset that has its own).
    weights_b : array-like of shape (m,) or (n_times, m), optional
        Same for ``b``.

    Returns
    -------
    w2 : float or ndarray of shape (n_times,)
        A float for 2-D inputs, one value per time for 3-D inputs.

    Raises
    ------
    RuntimeError
        If the network simplex stops before reaching optimality.

    Notes
    -----
    The transport problems are solved one time step after another: the network simplex
    solves one problem per call.

    Examples
    --------
    >>> from dasim.metrics import wasserstein2
    >>> wasserstein2([[0.0, 0.0], [1.0, 0.0]], [[3.0, 4.0], [4.0, 4.0]])
    5.0
    """
    import ot

    _, a, wa, _ = _check_inputs(None, a, weights_a, need_truth=False, names=("", "a", "weights_a"))
    _, b, wb, _ = _check_inputs(None, b, weights_b, need_truth=False, names=("", "b", "weights_b"))
    if a.ndim not in (2, 3):
        raise ValueError(f"a must have shape (n, d) or (n_times, n, d), got shape {a.shape}")
    if b.ndim != a.ndim:
        raise ValueError(
            f"a and b must have the same number of dimensions, got a shape {a.shape} and "
            f"b shape {b.shape}"
        )
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"a and b must have the same dimension d, got a shape {a.shape} and b shape {b.shape}"
        )
    if a.ndim == 3 and a.shape[0] != b.shape[0]:
        raise ValueError(
            f"a and b must have the same number of times, got a shape {a.shape} and b "
            f"shape {b.shape}"
        )

    single = a.ndim == 2
    if single:
        a, b = a[None], b[None]
    n_times, n, _ = a.shape
    m = b.shape[1]
    wa = np.broadcast_to(np.full(n, 1.0 / n) if wa is None else wa, (n_times, n))
    wb = np.broadcast_to(np.full(m, 1.0 / m) if wb is None else wb, (n_times, m))
    num_iter_max = max(1_000_000, 100 * n * m)
    out = np.empty(n_times)
    for t in range(n_times):
        # scipy's cdist forms each difference directly: no cancellation, so identical
        # points cost exactly zero (POT's default Gram expansion does not guarantee it).
        cost_matrix = np.ascontiguousarray(
            ot.dist(a[t], b[t], metric="sqeuclidean", backend="scipy"), dtype=np.float64
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            cost, log = ot.emd2(
                np.ascontiguousarray(wa[t], dtype=np.float64),
                np.ascontiguousarray(wb[t], dtype=np.float64),
                cost_matrix,
                numItermax=num_iter_max,
                log=True,
            )
        if log.get("result_code") != 1:
            raise RuntimeError(
                f"ot.emd2 did not reach an optimal transport plan at time index {t} "
                f"(result_code {log.get('result_code')}: {log.get('warning')})"
            )
        out[t] = np.sqrt(max(float(cost), 0.0))
    return float(out[0]) if single else out


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


# --------------------------------------------------------------------------------------
# Scorers: (estimator, X, y) -> float, greater is better
# --------------------------------------------------------------------------------------


def _assimilate(estimator, X, y, *, transform_X=True):
    """Run ``assimilate`` on the final estimator, transforming ``X`` through a pipeline.

    For a :class:`sklearn.pipeline.Pipeline`, ``X`` goes through every step but the last
    (their ``transform``) and ``assimilate(y)`` is called on the last step, so the
    analysis and ``X`` are in the same (transformed) state space.

    Returns
    -------
    X : ndarray or None
        The (transformed) true states, as float64; None when not asked for.
    analysis : ndarray of shape (n_times, n_members, n_state)
    weights : ndarray of shape (n_times, n_members) or None
    dataset : xarray.Dataset
        The full output of ``assimilate``.
    """
    from sklearn.pipeline import Pipeline

    final = estimator
    if isinstance(estimator, Pipeline):
        final = estimator[-1]
        if transform_X and X is not None and len(estimator) > 1:
            X = estimator[:-1].transform(X)
    if not hasattr(final, "assimilate"):
        raise TypeError(
            f"estimator must have an assimilate method (or be a Pipeline ending in one), "
            f"got {type(final).__name__}"
        )
    ds = final.assimilate(y)
    if "analysis" not in ds:
        raise ValueError("the Dataset returned by assimilate has no 'analysis' variable")
    analysis = ds["analysis"].transpose("time", "member", "state").values
    weights = None
    if "weights" in ds:
        weights = ds["weights"].transpose("time", "member").values
    if transform_X:
        X = _as_float_array(X, "X")
        expected = (analysis.shape[0], analysis.shape[2])
        if X.shape != expected:
            raise ValueError(
                f"X must have shape (n_times, n_state) = {expected} to match the analysis "
                f"ensemble of shape {analysis.shape}, got X shape {X.shape}"
            )
    return X, analysis, weights, ds


def _n_rows(y):
    """Number of rows (times) of ``y`` without converting it, for an early burn-in check."""
    shape = np.shape(y)
    if len(shape) == 0:
        raise ValueError(f"y must have a time axis, got shape {shape}")
    return shape[0]


def _metric_scorer(metric, estimator, X, y, burn_in):
    burn_in = _check_burn_in(burn_in, _n_rows(y))
    X, analysis, weights, _ = _assimilate(estimator, X, y)
    b = slice(burn_in, None)
    values = metric(X[b], analysis[b], None if weights is None else weights[b])
    return -float(np.mean(values))


def neg_rmse(estimator, X, y, *, burn_in=0):
    """Scorer: minus the time-mean RMSE of the analysis ensemble mean.

    Every time after the burn-in counts, an unobserved one too (its analysis is the
    forecast, compared with the truth like any other).

    Parameters
    ----------
    estimator : estimator or Pipeline
        Fitted object with ``assimilate(y) -> xarray.Dataset`` (variable ``analysis`` with
        dims ``(time, member, state)``, optional ``weights`` ``(time, member)``), or a
        :class:`~sklearn.pipeline.Pipeline` ending in one.
    X : array-like of shape (n_times, n_state)
        True states, row-aligned with ``y``.
    y : array-like of shape (n_times, n_obs)
        Observations passed to ``assimilate``.
    burn_in : int, default=0
        Number of leading times left out of the mean (``get_scorer("neg_rmse",
        burn_in=k)`` binds it for ``GridSearchCV``).

    Returns
    -------
    score : float
        ``-mean_{t >= burn_in} rmse(X, analysis, weights)``; greater is better.

    Examples
    --------
    >>> from sklearn.model_selection import GridSearchCV  # doctest: +SKIP
    >>> GridSearchCV(filt, grid, scoring=neg_rmse)  # doctest: +SKIP
    """
    return _metric_scorer(rmse, estimator, X, y, burn_in)


def neg_crps(estimator, X, y, *, burn_in=0):
    """Scorer: minus the time-mean ensemble CRPS of the analysis.

    The same number as the estimators' own ``score(X, y, burn_in=...)``. Every time after
    the burn-in counts, an unobserved one too.

    Parameters
    ----------
    estimator : estimator or Pipeline
        Fitted object with ``assimilate(y) -> xarray.Dataset`` (see :func:`neg_rmse`).
    X : array-like of shape (n_times, n_state)
        True states, row-aligned with ``y``.
    y : array-like of shape (n_times, n_obs)
        Observations passed to ``assimilate``.
    burn_in : int, default=0
        Number of leading times left out of the mean.

    Returns
    -------
    score : float
        ``-mean_{t >= burn_in} crps_ensemble(X, analysis, weights)``; greater is better.

    Examples
    --------
    >>> from sklearn.model_selection import GridSearchCV  # doctest: +SKIP
    >>> GridSearchCV(filt, grid, scoring={"crps": neg_crps, "rmse": neg_rmse},
    ...              refit="crps")  # doctest: +SKIP
    """
    return _metric_scorer(crps_ensemble, estimator, X, y, burn_in)


def neg_energy_score(estimator, X, y, *, burn_in=0):
    """Scorer: minus the time-mean energy score of the analysis ensemble.

    Every time after the burn-in counts, an unobserved one too.

    Parameters
    ----------
    estimator : estimator or Pipeline
        Fitted object with ``assimilate(y) -> xarray.Dataset`` (see :func:`neg_rmse`).
    X : array-like of shape (n_times, n_state)
        True states, row-aligned with ``y``.
    y : array-like of shape (n_times, n_obs)
        Observations passed to ``assimilate``.
    burn_in : int, default=0
        Number of leading times left out of the mean.

    Returns
    -------
    score : float
        ``-mean_{t >= burn_in} energy_score(X, analysis, weights)``; greater is better.

    Examples
    --------
    >>> from sklearn.model_selection import GridSearchCV  # doctest: +SKIP
    >>> GridSearchCV(filt, grid, scoring=neg_energy_score)  # doctest: +SKIP
    """
    return _metric_scorer(energy_score, estimator, X, y, burn_in)


def log_evidence(estimator, X, y, *, burn_in=0):
    """Scorer: mean observation log-likelihood ``log p(y_k | y_{1:k-1})`` per observed cycle.

    Needs no truth, so it is what one tunes by on real data: ``X`` is ignored. An
    unobserved cycle (a row of ``y`` that is all NaN) has no evidence: ``assimilate``
    reports NaN there and this mean leaves it out, so gaps in the data neither reward nor
    penalise a model. On fully observed data it is the plain time mean.

    Parameters
    ----------
    estimator : estimator or Pipeline
        Fitted object whose ``assimilate(y)`` returns an ``xarray.Dataset`` with a
        ``log_evidence`` variable of dims ``(time,)``, or a Pipeline ending in one.
    X : array-like or None
        Ignored.
    y : array-like of shape (n_times, n_obs)
        Observations passed to ``assimilate``.
    burn_in : int, default=0
        Number of leading cycles left out of the mean.

    Returns
    -------
    score : float
        Mean of ``log_evidence`` over the observed cycles ``t >= burn_in``; greater is
        better.

    Raises
    ------
    ValueError
        If no cycle after the burn-in is observed (the mean is undefined).

    Examples
    --------
    >>> from sklearn.model_selection import GridSearchCV  # doctest: +SKIP
    >>> GridSearchCV(filt, grid, scoring=log_evidence).fit(X_train, y_train)  # doctest: +SKIP
    """
    burn_in = _check_burn_in(burn_in, _n_rows(y))
    _, _, _, ds = _assimilate(estimator, X, y, transform_X=False)
    if "log_evidence" not in ds:
        raise ValueError(
            "the Dataset returned by assimilate has no 'log_evidence' variable; "
            f"{type(estimator).__name__} does not report the observation likelihood"
        )
    values = np.asarray(ds["log_evidence"].values, dtype=np.float64).reshape(-1)[burn_in:]
    observed = ~np.isnan(values)
    if not observed.any():
        raise ValueError(
            f"no observed cycle after burn_in={burn_in}: every log_evidence value is NaN "
            "(every row of y is all NaN), so the mean evidence is undefined"
        )
    return float(np.mean(values[observed]))


SCORERS = {
    "neg_rmse": neg_rmse,
    "neg_crps": neg_crps,
    "neg_energy_score": neg_energy_score,
    "log_evidence": log_evidence,
}
"""dict: The scorers of this module by name."""


class _BurnInScorer:
    """A scorer of this module with its ``burn_in`` bound (picklable, readable repr)."""

    def __init__(self, name, burn_in):
        self.name = name
        self.burn_in = burn_in

    def __call__(self, estimator, X, y):
        return SCORERS[self.name](estimator, X, y, burn_in=self.burn_in)

    def __repr__(self):
        return f"get_scorer({self.name!r}, burn_in={self.burn_in})"


def get_scorer_names():
    """Return the names of the scorers :func:`get_scorer` knows.

    Returns
    -------
    list of str
        Sorted names; none of them is one of scikit-learn's own scorer names.

    Examples
    --------
    >>> from dasim.metrics import get_scorer_names
    >>> get_scorer_names()
    ['log_evidence', 'neg_crps', 'neg_energy_score', 'neg_rmse']
    """
    return sorted(SCORERS)


def get_scorer(name, *, burn_in=0):
    """Return a scorer of this module by name, ready for ``GridSearchCV(scoring=...)``.

    scikit-learn's searches accept a string only from their own registry, which cannot be
    extended, so ``GridSearchCV(scoring="log_evidence")`` is refused; pass
    ``scoring=get_scorer("log_evidence")`` instead, or a list of names for several
    metrics. Like :func:`sklearn.metrics.get_scorer`, a callable is returned as is.

    Parameters
    ----------
    name : str, list or tuple of str, or callable
        One of :func:`get_scorer_names` (``"neg_rmse"``, ``"neg_crps"``,
        ``"neg_energy_score"``, ``"log_evidence"``); a list or tuple of them gives a
        dict ``{name: scorer}`` for multi-metric searches (``refit=`` one of the names).
    burn_in : int, default=0
        Number of leading cycles every returned scorer leaves out of its time mean (such
        a scorer raises on data with no more cycles than that).

    Returns
    -------
    scorer : callable or dict
        ``scorer(estimator, X, y) -> float``, greater is better (the function itself
        when ``burn_in=0``); a dict of them for a list of names.

    Examples
    --------
    >>> from dasim.metrics import get_scorer
    >>> get_scorer("neg_crps").__name__
    'neg_crps'
    >>> get_scorer("log_evidence", burn_in=20)
    get_scorer('log_evidence', burn_in=20)
    >>> sorted(get_scorer(["neg_crps", "log_evidence"]))
    ['log_evidence', 'neg_crps']

    In a search (``filt`` a dasim estimator, ``grid`` its parameter grid):

    >>> GridSearchCV(filt, grid, scoring=get_scorer("log_evidence"))  # doctest: +SKIP
    """
    if isinstance(burn_in, bool) or not isinstance(burn_in, numbers.Integral):
        raise TypeError(f"burn_in must be an integer, got {burn_in!r}")
    if burn_in < 0:
        raise ValueError(f"burn_in must be non-negative, got {burn_in}")
    if isinstance(name, list | tuple):
        if not name:
            raise ValueError("name must list at least one scorer name, got an empty list")
        names = [_check_scorer_name(n) for n in name]
        if len(set(names)) != len(names):
            raise ValueError(f"name lists a scorer twice: {list(name)}")
        return {n: get_scorer(n, burn_in=burn_in) for n in names}
    if callable(name):
        if burn_in != 0:
            raise ValueError(
                f"burn_in can be bound to a scorer given by name only, got name={name!r}"
            )
        return name
    name = _check_scorer_name(name)
    return SCORERS[name] if burn_in == 0 else _BurnInScorer(name, int(burn_in))


def _check_scorer_name(name):
    if not isinstance(name, str):
        raise TypeError(
            f"name must be a scorer name (str), a list of names or a callable, got {name!r}"
        )
    if name not in SCORERS:
        raise ValueError(
            f"unknown scorer name {name!r}; valid names are {get_scorer_names()} "
            "(scikit-learn's own names are for estimators with predict: use "
            "sklearn.metrics.get_scorer for those)"
        )
    return name
