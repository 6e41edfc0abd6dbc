"""The command lines: help text, --version, --out, and options a case cannot honour.

Every check here calls ``main([...])`` in-process; usage errors leave through argparse's
``SystemExit(2)`` before any work (nothing is written).
"""

import argparse
import ast
import re
from pathlib import Path

import pytest
import xarray as xr

import dasim
from dasim import cli
from dasim.cli import nonlinear_filtering_main as b2_main
from dasim.cli import trajectory_smoothing_main as b3_main

ROOT = Path(__file__).resolve().parents[1]


def _all_parsers():
    """Every parser and sub-parser of the three command lines, by program name."""
    found = {}

    def walk(parser):
        found[parser.prog] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)

    walk(cli._parser())
    return found


def _usage_error(capsys, argv, entry=cli.main):
    with pytest.raises(SystemExit) as info:
        entry(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


def test_every_option_has_help():
    parsers = _all_parsers()
    assert {"dasim", "dasim demo", "dasim bench"} <= set(parsers)
    for prog, parser in parsers.items():
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help.strip(), (prog, action.option_strings)


def test_help_refers_only_to_files_in_the_repository(capsys):
    text = "\n".join(parser.format_help() for parser in _all_parsers().values())
    assert "BENCHMARKS.md" not in text
    files = set(re.findall(r"docs/[\w/.-]+\.(?:md|rst)", text))
    assert files, "the help should say where the benchmarks are described"
    for name in files:
        assert (ROOT / name).is_file(), name


def test_bench_help_lists_every_case():
    text = cli._parser()._subparsers._group_actions[0].choices["bench"].format_help()
    text = " ".join(text.split())
    for case in cli._bench_registry():
        kind = cli._case_kind(case)
        assert kind is not None, case
        if kind != "speed":
            assert case in text, case
    assert "speed-CASE" in text


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"dasim {dasim.__version__}"


@pytest.mark.parametrize("command", [["demo"], ["bench", "l63-full", "--smoke"]])
@pytest.mark.parametrize("out", ["run.nc", "plot.png", "table.md"])
def test_out_is_a_directory_and_a_file_name_is_refused(command, out, tmp_path, capsys):
    target = tmp_path / out
    err = _usage_error(capsys, [*command, "--out", str(target)])
    assert "--out is the directory" in err and "looks like a file name" in err
    assert not target.exists()
    existing = tmp_path / "existing"
    existing.write_text("")
    err = _usage_error(capsys, [*command, "--out", str(existing)])
    assert "is an existing file" in err


def test_out_directory_receives_the_results(tmp_path):
    out = tmp_path / "new" / "dir"
    assert (
        cli.main(["bench", "speed-l63-full", "--smoke", "--cycles", "3", "--out", str(out)]) == 0
    )
    ds = xr.load_dataset(out / "speed-l63-full.nc")
    assert ds.attrs["n_cycles"] == 3  # --cycles honoured by --smoke for a speed case
    assert ds.attrs["seeds"] == "0" and ds.attrs["dasim_version"] == dasim.__version__
    assert (out / "speed-l63-full.md").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["l63-full", "--smoke", "--seeds", "0,1"], "--smoke runs one seed"),
        (["l63-z", "--smoke", "--seeds", "0,1"], "--smoke runs one seed"),
        (["b3-lo", "--smoke", "--seeds", "0,1"], "--smoke runs one seed"),
        (["l63-full", "--smoke", "--cycles", "50"], "--smoke fixes the number of cycles"),
        (["l63-z", "--smoke", "--cycles", "50"], "--smoke fixes the number of cycles"),
        (["b3-lo", "--cycles", "50"], "does not use --cycles"),
        (["b3-lo", "--members", "10"], "does not use --members"),
        (["l63-z", "--dapper-python", "python"], "does not use --dapper-python"),
        (["learned", "--n-jobs", "2"], "does not use --n-jobs"),
        (["kde-score", "--cycles", "3"], "does not use --cycles"),
        (["speed-l96-40", "--seeds", "0,1"], "runs one seed"),
        (["speed-l96-40", "--n-jobs", "2"], "does not use --n-jobs"),
        (["l63-full", "--seeds", "1,1"], "repeats a seed"),
        (["l42"], "unknown case 'l42'"),
        (["l63-full", "--seeds", "zero"], "comma-separated integers"),
        (["l63-full", "--members", "0"], "positive integers"),
        (["l63-full", "--cycles", "-3"], "positive integer"),
        (["l63-full", "--n-jobs", "0"], "non-zero"),
    ],
)
def test_options_a_case_cannot_honour_are_refused(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    err = _usage_error(capsys, ["bench", *argv, "--out", str(out)])
    assert message in err
    assert not out.exists()  # refused before any work


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cycles", "5"], "--cycles must be at least"),
        (["--members", "1"], "--members must be at least 2"),
        (["--members", "0"], "positive integer"),
        (["--members", "100", "--reference-members", "999"], "at least 10 times --members"),
        (["--cycles", "40", "--window", "41"], "--window (41) cannot exceed --cycles (40)"),
        (["--seed", "-1"], "--seed must be a non-negative integer"),
        (["--smoke"], "unrecognized arguments: --smoke"),
    ],
)
def test_demo_options_it_cannot_honour_are_refused(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    err = _usage_error(capsys, ["demo", *argv, "--out", str(out)])
    assert message in err
    assert not out.exists()  # refused before any work


def test_refusals_name_what_the_case_uses(capsys, tmp_path):
    err = _usage_error(capsys, ["bench", "learned", "--cycles", "3", "--out", str(tmp_path)])
    assert "it uses --seeds" in err


def test_b2_command_line_refusals(tmp_path, capsys):
    out = ["--out", str(tmp_path / "b2")]
    assert "--smoke runs one seed" in _usage_error(
        capsys, ["l63-z", "--smoke", "--seeds", "0,1", *out], b2_main
    )
    assert "fixes the number of cycles" in _usage_error(
        capsys, ["l63-z", "--smoke", "--cycles", "30", *out], b2_main
    )
    err = _usage_error(capsys, ["l63-z", "--merge", "a.nc", "--seeds", "1", *out], b2_main)
    assert "--merge runs nothing" in err and "--seeds" in err
    assert "looks like a file name" in _usage_error(
        capsys, ["l63-z", "--smoke", "--out", str(tmp_path / "b2.nc")], b2_main
    )
    assert "METHOD=N" in _usage_error(capsys, ["l63-z", "--max-members", "KDE", *out], b2_main)
    assert not (tmp_path / "b2").exists()


def test_b3_command_line_refusals(tmp_path, capsys):
    assert "--smoke fixes --n-test" in _usage_error(capsys, ["--smoke", "--n-test", "3"], b3_main)
    assert "is a directory" in _usage_error(capsys, ["--out", str(tmp_path)], b3_main)
    assert "invalid choice" in _usage_error(capsys, ["--cases", "b3-x"], b3_main)


def test_no_benchmark_module_imports_the_command_line():
    """The command line sits above the benchmarks: no import runs back up to it."""
    for path in sorted((ROOT / "dasim" / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                package = ["", "dasim.benchmarks", "dasim"][node.level]
                module = ".".join(filter(None, [package, node.module]))
                names = [module, *(f"{module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            assert not any((n + ".").startswith("dasim.cli.") for n in names), path
