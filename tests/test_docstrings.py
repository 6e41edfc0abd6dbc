"""numpydoc validation of every public docstring.

Every name in the ``__all__`` of a public module is checked with
:func:`numpydoc.validate.validate`: functions, classes (their docstring against the
``__init__`` signature) and the public methods and properties that dasim itself defines
on those classes. One test per object, so a failure names the object and lists its error
codes; run ``pytest tests/test_docstrings.py -q`` to see them all.

Modules that import torch at the top are skipped when torch is absent, and so are modules
not written yet (listed below so they are picked up as soon as they exist).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect

import pytest

validate_module = pytest.importorskip("numpydoc.validate")
validate = validate_module.validate

#: The public modules whose ``__all__`` is checked.
PUBLIC_MODULES = [
    "dasim.filters",
    "dasim.smoothers",
    "dasim.models",
    "dasim.observations",
    "dasim.coordinates",
    "dasim.datasets",
    "dasim.metrics",
    "dasim.compose",
    "dasim.exceptions",
    "dasim.benchmarks",
    "dasim.benchmarks.timing",
    "dasim.benchmarks.nonlinear_filtering",
    "dasim.benchmarks.trajectory_smoothing",
    "dasim.benchmarks.score_speed",
    "dasim.benchmarks.report",
    "dasim.benchmarks.registry",
    "dasim.cli",
    "dasim.assimilators",
    "dasim.plotting",
    "dasim.diffusion",
    "dasim.diffusion.kde",
    "dasim.diffusion.kde_sampling",
    "dasim.diffusion.kde_local",
    "dasim.diffusion.kde_transport",
    "dasim.diffusion.kde_joint",
    "dasim.diffusion.schedules",
    "dasim.diffusion.solvers",
    "dasim.diffusion.denoising",
    "dasim.diffusion.networks",
    "dasim.diffusion.windows",
    "dasim.diffusion.training",
    "dasim.diffusion.sampling",
    "dasim.diffusion.guidance",
]

#: Error codes ignored everywhere, each for a stated reason.
IGNORED = {
    # GL01: numpydoc wants the summary on the line *after* the opening quotes; we follow
    # PEP 257 / scikit-learn and start it right after them.
    "GL01",
    # GL02: a one-line docstring closes its quotes on the same line (PEP 257).
    "GL02",
    # ES01: an extended summary is welcome but not required; short helpers need none.
    "ES01",
    # SA01: "See Also" only where there is something useful to point to.
    "SA01",
    # RT02: we name single return values as scikit-learn does (``self : object``,
    # ``score : float``), which numpydoc's strict rule counts as an error.
    "RT02",
}
# Not ignored: PR02 (unknown parameters). Methods inherited from scikit-learn or torch
# (get_params, set_params, forward hooks, ...) are not ours and are not collected at all
# (see _own_members), so their docstrings need no exemption.

#: Codes ignored for methods and properties only: classes and functions must carry an
#: example, methods are demonstrated in their class's example and in the user guide.
IGNORED_FOR_METHODS = {"EX01"}


def _torch_available():
    return importlib.util.find_spec("torch") is not None


def _import(modname):
    """Import ``modname``; return ``(module, reason_to_skip)``."""
    try:
        return importlib.import_module(modname), None
    except ModuleNotFoundError as exc:
        if exc.name == "torch" and not _torch_available():
            return None, f"{modname} needs torch, which is not installed"
        if exc.name is not None and modname.startswith(exc.name):
            return None, f"{modname} does not exist (yet)"
        raise


def _own_members(cls):
    """Public methods and properties that a dasim module defines on ``cls`` (or a base).

    Members inherited from scikit-learn, torch or the standard library are not ours to
    document and are left out; a member defined on a dasim base class is checked once,
    under the first public class that exposes it.
    """
    names = []
    for name in sorted(dir(cls)):
        if name.startswith("_"):
            continue
        for klass in inspect.getmro(cls):
            if name in vars(klass):
                attr = vars(klass)[name]
                owner = klass
                break
        else:  # pragma: no cover - dir() only lists attributes found on the MRO
            continue
        if not owner.__module__.startswith("dasim"):
            continue
        if isinstance(attr, staticmethod | classmethod):
            attr = attr.__func__
        if isinstance(attr, property) or inspect.isfunction(attr):
            names.append((name, owner, attr))
    return names


def _collect():
    """Return pytest params ``(import_path, kind)`` for every public object."""
    params = []
    seen = set()
    for modname in PUBLIC_MODULES:
        module, reason = _import(modname)
        if module is None:
            params.append(
                pytest.param(modname, "module", marks=pytest.mark.skip(reason=reason), id=modname)
            )
            continue
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue  # constants (dicts, tuples, numbers) have no numpydoc docstring
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            path = f"{modname}.{name}"
            params.append(
                pytest.param(path, "function" if inspect.isfunction(obj) else "class", id=path)
            )
            if inspect.isclass(obj):
                for member, _owner, attr in _own_members(obj):
                    if id(attr) in seen:
                        continue
                    seen.add(id(attr))
                    mpath = f"{path}.{member}"
                    params.append(pytest.param(mpath, "method", id=mpath))
    return params


def _errors(import_path, kind):
    """The numpydoc errors of one object, less the ignored ones, as ``(code, message)``."""
    ignored = IGNORED | (IGNORED_FOR_METHODS if kind == "method" else set())
    result = validate(import_path)
    return [(code, msg) for code, msg in result["errors"] if code not in ignored]


@pytest.mark.parametrize(("import_path", "kind"), _collect())
def test_docstring(import_path, kind):
    errors = _errors(import_path, kind)
    if errors:
        lines = "\n".join(f"  {code}: {msg}" for code, msg in errors)
        pytest.fail(f"numpydoc errors in {import_path} ({kind}):\n{lines}", pytrace=False)


# --------------------------------------------------------------------------- the checker
def _undocumented(a, b=1):
    """Add two numbers.

    Returns
    -------
    float
        The sum.

    Examples
    --------
    >>> _undocumented(1, 2)
    3
    """
    return a + b


def _documented(a, b=1):
    """Add two numbers.

    Parameters
    ----------
    a : float
        First term.
    b : float, default=1
        Second term.

    Returns
    -------
    float
        The sum.

    Examples
    --------
    >>> _documented(1, 2)
    3
    """
    return a + b


def test_checker_flags_missing_parameters():
    """The check can fail: a docstring without a Parameters section is reported (PR01)."""
    codes = [code for code, _ in _errors(f"{__name__}._undocumented", "function")]
    assert "PR01" in codes
    assert _errors(f"{__name__}._documented", "function") == []


def test_every_public_module_is_listed():
    """A new public module under dasim/ must be added to PUBLIC_MODULES."""
    import pkgutil

    import dasim

    found = set()
    for info in pkgutil.walk_packages(dasim.__path__, "dasim."):
        parts = info.name.split(".")
        if any(part.startswith("_") for part in parts):
            continue
        found.add(info.name)
    # Submodules of these packages are reached through the package's ``__all__``
    # (dasim.filters.enkf through dasim.filters, dasim.benchmarks.dapper_parity through
    # dasim.benchmarks, ...).
    packages = {
        "dasim.filters",
        "dasim.smoothers",
        "dasim.models",
        "dasim.observations",
        "dasim.assimilators",
        "dasim.benchmarks",
    }
    covered_by_package = {name for name in found if name.rsplit(".", 1)[0] in packages}
    missing = found - set(PUBLIC_MODULES) - covered_by_package
    assert not missing, f"public modules not checked by test_docstrings: {sorted(missing)}"
