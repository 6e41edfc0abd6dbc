"""``import dasim`` exposes the estimators and helpers, fast and without torch."""

import subprocess
import sys

import dasim


def test_front_door_names_resolve_to_the_subpackages():
    from dasim.assimilators import SDAAssimilator
    from dasim.datasets import load_nile, make_twin_experiment
    from dasim.filters import EnKF, KDEDiffusionFilter, SIRFilter
    from dasim.models import Lorenz63, Lorenz96
    from dasim.observations import ObservationModel
    from dasim.smoothers import EnKS

    assert dasim.EnKF is EnKF and dasim.SIRFilter is SIRFilter
    assert dasim.KDEDiffusionFilter is KDEDiffusionFilter
    assert dasim.SDAAssimilator is SDAAssimilator and dasim.EnKS is EnKS
    assert dasim.Lorenz63 is Lorenz63 and dasim.Lorenz96 is Lorenz96
    assert dasim.ObservationModel is ObservationModel
    assert dasim.make_twin_experiment is make_twin_experiment
    assert dasim.load_nile is load_nile
    assert dasim.metrics.rmse is not None
    assert set(dasim.__all__) <= set(dir(dasim))


def test_unknown_attribute_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'EnkF'"):
        dasim.EnkF  # noqa: B018


def test_import_and_every_export_leave_torch_unloaded():
    code = (
        "import sys, dasim\n"
        "for name in dasim.__all__: getattr(dasim, name)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_module_is_longer_than_600_lines():
    """#12's layout rule: a module that outgrows 600 lines is split by what it does."""
    from pathlib import Path

    import dasim

    root = Path(dasim.__file__).parent
    long = {
        str(p.relative_to(root)): n
        for p in root.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 600
    }
    assert not long, long
