"""Input checks and small helpers shared by the metrics of :mod:`dasim.metrics`."""

import numbers

import numpy as np
import xarray as xr

# Tolerance on |sum(weights) - 1| for every weights row.
_WEIGHTS_SUM_RTOL = 1e-8


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
