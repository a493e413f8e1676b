"""Every experiment script: its contract with the harness, its point function on its
smallest point, and one whole quick run through the harness into a report."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from cowbench.cli import main as cli_main
from cowbench.experiment import ORDER, describe, find_experiments, load_module, run
from cowbench.report import write_report
from cowbench.sweep import _rows

EXPERIMENTS = find_experiments()


def test_the_suite_is_complete():
    assert list(EXPERIMENTS) == list(ORDER)


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_experiment_contract_and_smallest_point(name):
    path = EXPERIMENTS[name]
    title, description = describe(path)
    assert title and len(description) > 200, "the docstring says what is reproduced and against what"
    mod = load_module(path)
    for attr in ("QUICK", "FULL", "point", "plot", "compare"):
        assert hasattr(mod, attr), attr
    why = mod.unavailable() if hasattr(mod, "unavailable") else ""
    if why:
        pytest.skip(f"{name} cannot run here: {why}")
    assert 1 <= len(mod.QUICK) <= len(mod.FULL)
    assert all(isinstance(p, dict) for p in mod.QUICK + mod.FULL)
    smallest = mod.QUICK[0]
    df = _rows(mod.point(**smallest), smallest)
    assert len(df) >= 1
    assert not df.drop(columns=["point"]).isna().all().any(), "no column is empty"
    numeric = df.select_dtypes("number").columns
    assert len(numeric) >= 3


def test_a_quick_run_writes_tables_figures_and_a_report(tmp_path, capsys):
    mod = load_module(EXPERIMENTS["memory_limit"])
    out = tmp_path / "memory_limit"
    df = run(mod, quick=True, out=out, workers=1, progress=False)
    printed = capsys.readouterr().out
    assert "Published vs simulated" in printed and "xv6" in printed
    assert len(pd.read_parquet(out / "memory_limit.parquet")) == len(df) == len(mod.QUICK)
    meta = json.loads((out / "memory_limit.experiment.json").read_text())
    assert meta["quick"] and meta["figures"] and all((out / f).stat().st_size > 10_000 for f in meta["figures"])
    comp = pd.read_csv(out / "memory_limit_comparison.csv")
    assert {"quantity", "published", "simulated", "source"} <= set(comp.columns) and len(comp) >= 3

    html, md = write_report(tmp_path)
    page = html.read_text()
    assert page.count("data:image/png;base64,") == len(meta["figures"]) and "<table>" in page
    assert "src='memory_limit" not in page                       # nothing linked: self-contained
    text = md.read_text()
    assert "![memory_limit_fork_success.png](memory_limit/memory_limit_fork_success.png)" in text
    assert "| quantity | published | simulated | source |" in text


def test_cli_list_and_report(tmp_path, capsys):
    assert cli_main(["list"]) == 0
    listed = capsys.readouterr().out
    assert all(n in listed for n in ORDER)
    assert cli_main(["report", str(tmp_path)]) == 1            # nothing to report yet
    assert "no experiment results" in capsys.readouterr().err


def test_an_experiment_script_runs_as_a_script(tmp_path):
    script = EXPERIMENTS["zygote"]
    r = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--quick" in r.stdout and "Zygote" in r.stdout
