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
    assert [m.estimator.n_members for m in b1_methods("l63-full", members=[10])] == [10, 10]
    with pytest.raises(ValueError, match="burn-in"):
        run_case(b1_case("l96-10"), b1_methods("l96-10"), n_cycles=10)


def _fake_dapper(tmp_path, accuracy):
    """An executable that answers like DAPPER's helper scripts, with a noise line first."""
    import json
    import stat

    script = tmp_path / "fake-dapper-python"
    timing = json.dumps({"l63-full": {"EnKF sqrt N=10": 0.004}})
    script.write_text(
        "#!/bin/sh\n"
        "echo 'Warning: not JSON'\n"
        'case "$1" in\n'
        f"  *dapper_accuracy.py) echo '{json.dumps(accuracy)}' ;;\n"
        f"  *) echo '{timing}' ;;\n"
        "esac\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_bench_b1_places_dapper_runs_beside_dasim(tmp_path):
    label = "EnKF sqrt N=10 infl=1.02 rotate"
    fake = _fake_dapper(tmp_path, {"l63-full": {label: [0.5, 0.7], "unmatched": [1.0, 1.0]}})
    argv = ["bench", "l63-full", "--members", "10", "--seeds", "0,1", "--cycles", "70"]
    assert main([*argv, "--dapper-python", fake, "--out", str(tmp_path)]) == 0
    ds = xr.load_dataset(tmp_path / "l63-full.nc")
    row = ds["dapper_rmse"].sel({"method": label}).values  # sel(method=) is a keyword
    np.testing.assert_array_equal(row, [0.5, 0.7])
    assert ds.attrs["dapper_seconds_per_cycle[EnKF sqrt N=10]"] == 0.004
    table = (tmp_path / "l63-full.md").read_text()
    assert "| DAPPER here |" in table.splitlines()[0]
    assert "0.600 ± 0.100" in table  # DAPPER's seed mean ± std beside dasim's


def test_dapper_helpers_fail_soft(tmp_path, capsys):
    from dasim.cli import _dapper_accuracy, _dapper_timings

    assert _dapper_accuracy("false", "l63-full", [0]) == {}
    assert _dapper_timings("false", "l63-full", 10) == {}
    assert "DAPPER" in capsys.readouterr().err
