"""Input checks shared by every dasim estimator (filters, smoothers, learned assimilators,
the composition meta-estimator), before any work: states, a resolved model against the
training states, ``score``'s inputs and ``burn_in``; the time labels of ``y``; and the
default score (minus the time-mean CRPS). A low-level module: it imports
:mod:`dasim.models` and :mod:`dasim.observations` only (and :mod:`dasim.metrics` lazily).
"""

from __future__ import annotations

import inspect

import numpy as np
import xarray as xr
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = [
    "observation_tags",
    "store_params",
    "validate_states",
    "check_states_finite",
    "transposed_hint",
    "check_model",
    "score_inputs",
    "neg_crps",
    "check_burn_in",
    "named_validation",
    "time_coordinate",
]

from .models import FunctionModel


def validate_states(estimator, X, **kwargs):
    """``validate_data`` on states ``X``, with dasim's own message for NaN and inf."""
    X = named_validation(
        "X", validate_data, estimator, X, dtype=np.float64, ensure_all_finite=False, **kwargs
    )
    check_states_finite(X)
    return X


def check_states_finite(X, name="X"):
    """Raise a ``ValueError`` naming ``name`` if the states hold NaN or inf."""
    finite = np.isfinite(X)
    if finite.all():
        return
    where = tuple(int(i) for i in np.argwhere(~finite)[0])
    kind = "NaN" if np.isnan(X[where]) else "inf"
    raise ValueError(
        f"{name} contains {kind} (at index {where}; non-finite entries: "
        f"{int(np.sum(~finite))}): states must be finite. dasim does not impute missing "
        f"states; drop or fill those rows (a missing observation is a NaN in y, not in "
        f"{name})."
    )


def transposed_hint(X):
    """A hint appended to shape errors when ``X`` has fewer rows than columns."""
    if X.shape[0] >= X.shape[1]:
        return ""
    return f" X has shape {X.shape}: is it transposed? fit expects (n_times, n_state)."


def check_model(model, X):
    """Validate a resolved model against training states ``X`` before any cycle runs.

    Checks the model's parameters (``process_noise`` against the state dimension
    included) and ``X``'s width against a known ``n_state``. A model with no fixed
    ``n_state`` (a :class:`~dasim.models.FunctionModel`, a plain callable, a user's
    subclass) is called once on a few rows of ``X`` to check that it maps an ensemble
    ``(n_members, n_state)`` to the same shape.
    """
    n_times, n_state = X.shape
    name = type(model).__name__
    func = getattr(model, "func", None)
    if isinstance(model, FunctionModel) and callable(func):
        name = f"FunctionModel(func={getattr(func, '__qualname__', type(func).__name__)})"
    hint = transposed_hint(X)
    if model.n_state is not None and model.n_state != n_state:
        raise ValueError(
            f"X has {n_state} state components but the model {name} has n_state="
            f"{model.n_state}: X must have shape (n_times, {model.n_state}), got "
            f"{X.shape}.{hint}"
        )
    if isinstance(model, FunctionModel) and not callable(model.func):
        raise TypeError(f"model: FunctionModel's func must be callable, got {model.func!r}.")
    model.validate(n_state)  # process_noise against the state dimension included
    if model.n_state is not None:
        return
    from .observations._model import probe_size

    probe = np.resize(X, (probe_size(n_state, n_state), n_state))
    contract = (
        "The model must map an ensemble of shape (n_members, n_state) to the states one "
        "cycle later, same shape: it is called once per cycle with every member, not once "
        "per member."
    )
    seen = f"called on {probe.shape[0]} states of X, an array of shape {probe.shape}"
    try:
        with np.errstate(all="ignore"):
            # time 0: the first cycle of a plain-array run (time-dependent models).
            out = model.propagate(probe.copy(), time=0)
    except Exception as exc:
        raise ValueError(
            f"model={name} failed when {seen}: {type(exc).__name__}: "
            f"{str(exc).rstrip('.')}. {contract}{hint}"
        ) from exc
    if out.shape != probe.shape:
        raise ValueError(f"model={name} returned shape {out.shape} when {seen}. {contract}{hint}")


def score_inputs(estimator, X, y, check_obs):
    """Validate ``score``'s inputs before any work; shared by every dasim estimator.

    Checks that ``estimator`` is fitted, validates ``X`` against the fitted state width,
    requires ``y`` (checked by ``check_obs``) and matches the numbers of rows.
    """
    check_is_fitted(estimator)
    X = validate_states(estimator, X, reset=False)
    if y is None:
        raise ValueError("score needs the observations y.")
    y = check_obs(y)
    if y.shape[0] != X.shape[0]:
        raise ValueError(
            f"X and y must have the same number of rows, got {X.shape[0]} and {y.shape[0]}."
        )
    return X, y


def neg_crps(X, analysis, weights=None, burn_in=0):
    """The default score of every dasim estimator: minus the time-mean CRPS after burn-in."""
    from .metrics import crps_ensemble

    if weights is not None:
        weights = weights[burn_in:]
    return -float(np.mean(crps_ensemble(X[burn_in:], analysis[burn_in:], weights)))


def check_burn_in(burn_in, n_times):
    """Validate ``score``'s ``burn_in`` against the number of cycles, before any work."""
    from .metrics import _check_burn_in as check

    return check(burn_in, n_times)


def named_validation(name, func, *args, **kwargs):
    """Call a scikit-learn validator, making sure its error names the argument."""
    try:
        return func(*args, **kwargs)
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        if name in msg.split():
            raise
        raise type(exc)(f"{name}: {msg}") from exc


def time_coordinate(y):
    """Index of a DataFrame / first coordinate of a DataArray, else None."""
    index = getattr(y, "index", None)
    if index is not None and not callable(index):
        return np.asarray(index)
    if isinstance(y, xr.DataArray) and y.dims and y.dims[0] in y.coords:
        return np.asarray(y.coords[y.dims[0]])
    return None


def store_params(estimator, values):
    """Store each constructor argument as the attribute of the same name, unchanged.

    scikit-learn's contract for ``__init__`` (which still lists every parameter, so
    ``get_params`` sees them): ``store_params(self, locals())`` as its only statement.
    """
    for name in inspect.signature(type(estimator).__init__).parameters:
        if name != "self":
            setattr(estimator, name, values[name])


def observation_tags(tags):
    """Set the scikit-learn tags of an estimator fitted on states with optional observations.

    ``y`` (the observations) is optional and multi-output, and a fixed ``random_state``
    makes the estimator deterministic. Returns ``tags``, changed in place.
    """
    tags.target_tags.required = False
    tags.target_tags.multi_output = True
    tags.target_tags.single_output = True
    tags.non_deterministic = False
    return tags
