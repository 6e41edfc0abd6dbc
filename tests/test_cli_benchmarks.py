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
    argv = ["demo", "--cycles", "24", "--members", "40", "--reference-members", "800"]
    assert main([*argv, "--window", "12", "--out", str(tmp_path / "new")]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if "(N=" in line]
    assert [row[0] for row in rows] == ["KDE", "EnKF", "SIR", "reference"]
    for row in rows:  # RMSE, CRPS, W2, W2 and mass x > 0 at the shown cycles, ms a cycle
        values = [float(v) for v in row[-6:-3] + row[-3].split("/") + row[-1:]]
        assert all(np.isfinite(values)) and min(values) >= 0, row
        mass = [float(v) for v in row[-2].split("/")]
        assert len(mass) == 2 and all(0 <= m <= 1 for m in mass), row
    png = tmp_path / "new" / "demo.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_picks_bimodal_cycles_in_the_window():
    from dasim._demo import _bimodality, _pick_cycles

    rng = np.random.default_rng(0)
    n_times, n = 30, 400
    A = rng.normal(size=(n_times, n, 3))
    sign = np.where(np.arange(n) < n // 2, 1.0, -1.0)
    A[:, :, :2] += 8.0 * sign[:, None]  # two modes of equal mass at (8, 8) and (-8, -8)...
    A[:12, :, :2] = rng.normal(size=(12, n, 2))  # ...except the first cycles: one mode
    W = np.full((n_times, n), 1.0 / n)
    W[20] = np.where(sign > 0, 0.9, 0.1) / (n / 2)  # unequal masses at cycle 20
    score, p = _bimodality(A, W)
    np.testing.assert_allclose(p[20], 0.9)
    assert score[:12].max() < score[12:20].min() and score[20] < score[21:].min()
    window = slice(10, 30)
    shown = _pick_cycles(score, window, 2, min_gap=5)
    assert len(shown) == 2 and all(12 <= k < 30 and k != 20 for k in shown)
    assert abs(shown[0] - shown[1]) >= 5


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
    from dasim.benchmarks.dapper_parity import _dapper_accuracy, _dapper_timings

    assert _dapper_accuracy("false", "l63-full", [0]) == {}
    assert _dapper_timings("false", "l63-full", 10) == {}
    assert "DAPPER" in capsys.readouterr().err


def test_time_filters_and_speed_table():
    from dasim.benchmarks.report import speed_markdown
    from dasim.benchmarks.timing import SPEED_FILTERS, speed_members, time_filters

    assert speed_members("l96-40") == (40, 100, 1000) and speed_members("l63-full")[0] == 10
    ds = time_filters("l63-full", n_cycles=4, members=[5, 8], repeats=2)
    assert ds["seconds_per_cycle"].dims == ("filter", "n_members")
    assert list(ds["filter"].values) == list(SPEED_FILTERS)
    assert np.all(ds["seconds_per_cycle"].values > 0)
    assert ds.attrs["repeats"] == 2 and ds.attrs["n_cycles"] == 4
    table = speed_markdown(ds).splitlines()
    assert table[0] == "| filter | dasim ms |" and len(table) == 2 + 3 * 2
    ds["dapper_seconds_per_cycle"] = ds["seconds_per_cycle"] * 2
    ds["dapper_seconds_per_cycle"][0, 0] = np.nan
    table = speed_markdown(ds).splitlines()
    assert table[0].endswith("| dasim / DAPPER |")
    assert table[2].endswith("| - | - |") and table[3].endswith("| 0.50 |")


def test_time_filters_bad_input():
    from dasim.benchmarks.timing import time_filters

    with pytest.raises(ValueError, match="unknown B1 case"):
        time_filters("l42")
    with pytest.raises(ValueError, match="unknown filters"):
        time_filters("l63-full", filters=["3DVar"])
    with pytest.raises(ValueError, match="n_cycles"):
        time_filters("l63-full", n_cycles=1)
    with pytest.raises(TypeError, match="members"):
        time_filters("l63-full", members=[2.5])
    with pytest.raises(ValueError, match="repeats"):
        time_filters("l63-full", repeats=0)


def test_bench_speed_beside_dapper(tmp_path):
    fake = _fake_dapper(tmp_path, {})
    argv = ["bench", "speed-l63-full", "--smoke", "--dapper-python", fake, "--out", str(tmp_path)]
    assert main(argv) == 0
    ds = xr.load_dataset(tmp_path / "speed-l63-full.nc")
    assert ds["dapper_seconds_per_cycle"].sel({"filter": "EnKF sqrt", "n_members": 10}) == 0.004
    assert np.isnan(ds["dapper_seconds_per_cycle"].sel({"filter": "SIR", "n_members": 10}))
    table = (tmp_path / "speed-l63-full.md").read_text()
    assert "| EnKF sqrt N=10 |" in table and " 4.00 |" in table
