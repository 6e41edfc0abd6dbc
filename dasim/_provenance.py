"""How a result was made: the ``attrs`` of every Dataset that ``assimilate`` returns.

Every value is stored as something a netCDF attribute can hold (a ``str``, an ``int`` or
a ``float``), so ``ds.to_netcdf(path)`` round-trips it, and nothing holds a memory
address (``0x...``), so two runs of the same thing give the same ``attrs``:

* callables by their qualified name, ``module.qualname``;
* estimators (models, observation models, transformers) by a scikit-learn style repr that
  lists the parameters that differ from their defaults, nested values described the same
  way;
* arrays as ``array([...])`` with every element at full precision (round-trip exact).

The conventions (see :func:`seeded_rng` and :func:`estimator_attrs`):

* ``random_state`` is the integer seed the run actually used:
  ``assimilate(y, random_state=ds.attrs["random_state"])`` repeats it. ``seed_source``
  says where it came from. An estimator left at ``random_state=None`` draws the seed from
  numpy's global ``RandomState`` (so ``np.random.seed`` still governs it, as in
  scikit-learn) and records it; a ``RandomState`` or ``Generator`` given as
  ``random_state`` gives up one draw for the seed the same way.
* A constructor parameter ``p`` that ``fit`` resolves into a fitted attribute ``p_``
  (``device="auto"`` into ``device_``, ``model=None`` into the learned ``model_``, ...) is
  recorded at its resolved value, and the value asked for as ``p_requested`` when the two
  differ.
"""

from __future__ import annotations

import functools
import inspect
import numbers
import re
import types

import numpy as np

__all__ = [
    "attr_value",
    "describe",
    "device_label",
    "estimator_attrs",
    "seed_source",
    "seeded_rng",
]

#: Seeds drawn from a RandomState or Generator lie in [0, _SEED_HIGH).
_SEED_HIGH = 2**31 - 1
#: Arrays up to this many elements are written out in full.
_MAX_ARRAY_SIZE = 10_000
_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")


def _qualified_name(obj):
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if name is None:
        name = type(obj).__qualname__
    return name if not module or module == "builtins" else f"{module}.{name}"


def _init_params(obj):
    """``{name: default}`` of the constructor parameters of ``obj``'s class, or None."""
    init = type(obj).__init__
    if init is object.__init__:
        return None
    try:
        sig = inspect.signature(init)
    except (TypeError, ValueError):
        return None
    params = {}
    for name, p in list(sig.parameters.items())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            return None
        params[name] = p.default
    return params


def _describe_object(obj, params):
    """``ClassName(p=..., ...)`` listing the parameters that differ from their defaults."""
    defaults = _init_params(obj) or {}
    parts = []
    for name in sorted(params):
        default = defaults.get(name, inspect.Parameter.empty)
        text = describe(params[name])
        if default is not inspect.Parameter.empty and describe(default) == text:
            continue
        parts.append(f"{name}={text}")
    return f"{type(obj).__name__}({', '.join(parts)})"


def describe(value):
    """A reproducible text description of a parameter value, without memory addresses.

    Parameters
    ----------
    value : object
        Any parameter value.

    Returns
    -------
    str
        Numbers and strings as their ``repr``; arrays as ``array([...])`` at full
        precision; functions, methods and classes as ``module.qualname``; estimators and
        other objects whose constructor arguments are stored as attributes of the same
        name (the scikit-learn convention) as ``ClassName(param=..., ...)`` with the
        parameters that differ from their defaults; anything else as
        ``<module.ClassName object>``.
    """
    if value is None or isinstance(value, bool | str):
        return repr(value)
    if isinstance(value, np.generic):
        return describe(value.item())
    if isinstance(value, numbers.Number):
        return repr(value)
    if isinstance(value, np.ndarray):
        if value.size > _MAX_ARRAY_SIZE:
            return f"<array of shape {value.shape} and dtype {value.dtype}>"
        return f"array({value.tolist()!r})"
    if isinstance(value, list | tuple):
        items = [describe(v) for v in value]
        if isinstance(value, list):
            return f"[{', '.join(items)}]"
        return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{describe(k)}: {describe(v)}" for k, v in value.items()) + "}"
    if isinstance(value, functools.partial):
        args = [describe(value.func), *(describe(a) for a in value.args)]
        args += [f"{k}={describe(v)}" for k, v in value.keywords.items()]
        return f"functools.partial({', '.join(args)})"
    if isinstance(value, types.MethodType):
        owner = value.__self__
        if isinstance(owner, type):
            return _qualified_name(value.__func__)
        return f"{describe(owner)}.{value.__func__.__name__}"
    if isinstance(
        value,
        type | types.FunctionType | types.BuiltinFunctionType | types.BuiltinMethodType,
    ):
        return _qualified_name(value)
    if isinstance(value, np.ufunc):
        return f"numpy.{value.__name__}"
    if callable(value) and isinstance(getattr(value, "__qualname__", None), str):
        return _qualified_name(value)  # function-like objects (numpy's dispatchers, ...)
    if isinstance(value, np.random.RandomState | np.random.Generator):
        return f"<{_qualified_name(type(value))} object>"
    if hasattr(value, "get_params") and not isinstance(value, type):
        try:
            params = value.get_params(deep=False)
        except Exception:  # noqa: BLE001 - a broken get_params falls through to repr
            params = None
        if isinstance(params, dict) and _init_params(value) is not None:
            return _describe_object(value, params)
    init = _init_params(value)
    if init is not None and all(hasattr(value, name) for name in init):
        return _describe_object(value, {name: getattr(value, name) for name in init})
    text = repr(value)
    if _ADDRESS.search(text) is None and "\n" not in text:
        return text
    return f"<{_qualified_name(type(value))} object>"


def attr_value(value):
    """Make a parameter value storable as a netCDF attribute (str, int or float).

    Parameters
    ----------
    value : object
        Any parameter value.

    Returns
    -------
    str, int or float
        Python ints and floats (numpy scalars included) as themselves, strings as
        themselves, ``None`` and booleans as ``"None"``, ``"True"``, ``"False"``, anything
        else as :func:`describe` gives it.
    """
    if value is None or isinstance(value, bool | np.bool_):
        return str(value if value is None else bool(value))
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        return value
    return describe(value)


def seeded_rng(random_state, default, where="assimilate"):
    """Resolve a ``random_state`` into an integer seed, its Generator and its source.

    Parameters
    ----------
    random_state : int, RandomState, numpy.random.Generator or None
        The seed given to the method (``None``: use ``default``).
    default : int, RandomState or None
        The estimator's own ``random_state``.
    where : str, default="assimilate"
        Name of the method, for the recorded source.

    Returns
    -------
    rng : numpy.random.Generator
        ``numpy.random.default_rng(seed)``.
    seed : int
        The seed actually used.
    source : str
        Where the seed came from, in words.
    """
    rs = random_state if random_state is not None else default
    source = seed_source(random_state, default, where)
    if isinstance(rs, numbers.Integral) and not isinstance(rs, bool):
        seed = int(rs)
    elif isinstance(rs, np.random.Generator):
        seed = int(rs.integers(0, _SEED_HIGH))
    elif isinstance(rs, np.random.RandomState):
        seed = int(rs.randint(0, _SEED_HIGH))
    elif rs is None:
        # scikit-learn's meaning of None: numpy's global RandomState (np.random.seed
        # governs it); the draw is recorded so the run can be repeated.
        from sklearn.utils import check_random_state

        seed = int(check_random_state(None).randint(0, _SEED_HIGH))
    else:
        raise TypeError(
            f"random_state must be None, an int, a RandomState or a Generator, got {rs!r}."
        )
    return np.random.default_rng(seed), seed, source


def seed_source(random_state, default, where="assimilate"):
    """Where the seed of a run comes from, in words (the ``seed_source`` attribute).

    Parameters
    ----------
    random_state : int, RandomState, numpy.random.Generator or None
        The seed given to the method (``None``: the estimator's is used).
    default : int, RandomState or None
        The estimator's own ``random_state``.
    where : str, default="assimilate"
        Name of the method.

    Returns
    -------
    str
        E.g. ``"the random_state passed to assimilate (an int)"``.
    """
    given = random_state is not None
    rs = random_state if given else default
    owner = f"the random_state passed to {where}" if given else "the estimator's random_state"
    if isinstance(rs, numbers.Integral) and not isinstance(rs, bool):
        return f"{owner} (an int)"
    if isinstance(rs, np.random.Generator | np.random.RandomState):
        return f"drawn from the {type(rs).__name__} given as {owner}"
    return "drawn from numpy's global RandomState (random_state=None)"


def estimator_attrs(estimator, *, seed, seed_source, device, overrides=None):
    """The provenance ``attrs`` of a Dataset made by ``estimator``.

    Parameters
    ----------
    estimator : BaseEstimator
        The (fitted) estimator that made the result.
    seed : int
        The seed the run used.
    seed_source : str
        Where the seed came from.
    device : str
        The resolved device (``"numpy"``, ``"cpu"``, ``"cuda:0"``, ...).
    overrides : dict, optional
        Per-run values of parameters (e.g. ``n_members`` of a given initial ensemble),
        recorded in place of the constructor's; the constructor's value is kept as
        ``<name>_requested`` when it differs.

    Returns
    -------
    dict
        ``estimator`` (class name), every constructor parameter at its resolved value,
        ``<name>_requested`` where that differs from the value asked for,
        ``random_state`` (the seed used), ``seed_source``, ``device``, ``dasim_version``
        and ``numpy_version``; every value a str, int or float.
    """
    from . import __version__

    overrides = {} if overrides is None else overrides
    attrs = {"estimator": type(estimator).__name__}
    for key, value in estimator.get_params(deep=False).items():
        if key == "random_state":
            continue
        given = attr_value(value)
        if key in overrides:
            resolved = attr_value(overrides[key])
        elif key == "device":
            resolved = device
        elif hasattr(estimator, key + "_"):
            resolved = attr_value(getattr(estimator, key + "_"))
        else:
            resolved = given
        attrs[key] = resolved
        if resolved != given:
            attrs[f"{key}_requested"] = given
    attrs["random_state"] = attr_value(seed)
    attrs["seed_source"] = seed_source
    attrs["device"] = device
    attrs["dasim_version"] = __version__
    attrs["numpy_version"] = np.__version__
    return attrs


def device_label(device):
    """The resolved device with its index (``"cuda"`` becomes ``"cuda:0"``).

    Parameters
    ----------
    device : str
        A resolved device (``"numpy"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).

    Returns
    -------
    str
        ``device`` itself, with the current CUDA device's index added to a bare
        ``"cuda"``.
    """
    device = str(device)
    if device == "cuda":
        import torch  # already imported: a CUDA device was resolved with it

        return f"cuda:{torch.cuda.current_device()}"
    return device
