"""Run every script of ``examples/`` as a user would: ``python examples/plot_x.py``.

Each example runs in a subprocess with the non-interactive Agg backend, in a temporary
working directory (so nothing it might write lands in the repository), and must exit
cleanly. Examples are written to run in well under a minute on a CPU, so none is marked
slow: CI's ``-m "not slow"`` runs them all.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.py"))
#: Examples that need an optional dependency beyond matplotlib.
NEEDS_TORCH = {"plot_sda_soad.py", "plot_pipeline_scaler.py"}
TIMEOUT_S = 300


def _has(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_examples_found():
    assert len(EXAMPLES) >= 6, f"expected the example scripts in {EXAMPLES_DIR}"
    assert (EXAMPLES_DIR / "README.rst").is_file(), "sphinx-gallery needs a gallery header"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path, tmp_path):
    if not _has("matplotlib"):
        pytest.skip("the examples plot with matplotlib: pip install dasim[plot]")
    if path.name in NEEDS_TORCH and not _has("torch"):
        pytest.skip(f"{path.name} needs torch: pip install dasim[torch]")
    env = dict(os.environ, MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, str(path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 0, (
        f"{path.name} exited with {proc.returncode}\n--- stdout ---\n{proc.stdout[-3000:]}"
        f"\n--- stderr ---\n{proc.stderr[-5000:]}"
    )
    assert proc.stdout.strip(), f"{path.name} printed nothing (every example prints a table)"
    assert list(tmp_path.iterdir()) == [], f"{path.name} wrote files: {list(tmp_path.iterdir())}"
