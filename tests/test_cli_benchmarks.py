"""Smoke runs of the command line and the benchmarks (seconds, not the full runs)."""

import numpy as np
import pytest
import xarray as xr

from dasim.benchmarks import B1_CASES, b1_case, b1_methods, markdown_table, run_case
from dasim.cli import main


@pytest.mark.parametrize("case", sorted(B1_CASES))
def test_bench_smoke_writes_results(case, tmp_path):
    assert main(["bench", case, "--smoke", "--out", str(tmp_path)]) == 0
    ds = xr.load_dataset(tmp_path / f"{case}.nc")
    assert set(ds.dims) == {"method", "seed"}
    assert np.all(np.isfinite(ds["rmse"].values))
    assert ds.attrs["case"] == case and "command" in ds.attrs
    assert (tmp_path / f"{case}.md").read_text().startswith("| method |")
    assert (tmp_path / f"{case}.png").exists()


def test_demo_runs(tmp_path, capsys):
    assert main(["demo", "--cycles", "40", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "EnKF" in out and "SIRFilter" in out
    assert (tmp_path / "demo.png").exists()


def test_run_case_is_reproducible_and_parallel_equals_serial():
    case = b1_case("l96-10")
    methods = b1_methods("l96-10")
    serial = run_case(case, methods, seeds=[3, 4], n_cycles=30, n_jobs=1, burn_in=10)
    parallel = run_case(case, methods, seeds=[3, 4], n_cycles=30, n_jobs=2, burn_in=10)
    for name in ["rmse", "crps", "spread_skill"]:
        np.testing.assert_array_equal(serial[name].values, parallel[name].values)
    assert "| EnKF" in markdown_table(serial)


def test_bad_case_and_members():
    with pytest.raises(ValueError, match="unknown B1 case"):
        b1_case("l42")
    assert [m.estimator.n_members for m in b1_methods("l63-full", members=[10])] == [10]
    with pytest.raises(ValueError, match="burn-in"):
        run_case(b1_case("l96-10"), b1_methods("l96-10"), n_cycles=10)
