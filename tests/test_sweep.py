"""The sweep runner: grids, stable point names, resumable and atomic part files,
local process pools and a Dask LocalCluster."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cowbench.cli import main as cli_main
from cowbench.sweep import MANIFEST, SweepError, grid, load_sweep, part_path, point_id, run_sweep

CALLS: list = []


def square(x=1, tag="a"):
    CALLS.append((x, tag))
    return {"y": x * x, "tag_len": len(tag)}


def rows(n=2, policy="cow"):
    return [{"i": i, "v": i * n, "policy_again": policy} for i in range(n)]


def flaky(x=1, marker=""):
    if x == 3 and Path(marker).exists():
        raise RuntimeError("boom at x=3")
    return {"y": x}


def fork_point(heap_kib=256, policy="cow"):
    import cowbench as cb

    sc = cb.Scenario(phys_mem="16MiB")
    p = sc.spawn("parent")
    h = p.mmap("heap", heap_kib * 1024)
    p.write(h)
    kid = p.fork("kid")
    kid.write(h, pages=range(0, h.npages // 2))
    res = cb.simulate(sc, policy=policy)
    k = res.processes.set_index("name").loc["kid"]
    return {"copied": int(k.fork_pages_copied + k.cow_copies), "peak": int(res.summary.peak_frames)}


def _no_temp_files(d: Path):
    return [p.name for p in d.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")] == []


def test_grid_is_the_product_in_order():
    assert grid(a=[1, 2], b=["x", "y"]) == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"},
                                             {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]
    assert grid(a=3, b="cow") == [{"a": 3, "b": "cow"}]


def test_point_id_is_stable_and_ignores_key_order():
    assert point_id({"a": 1, "b": "x"}) == point_id({"b": "x", "a": 1})
    assert point_id({"a": np.int64(1)}) == point_id({"a": 1})
    assert point_id({"a": 1}) != point_id({"a": 1.5})
    # pinned: a point keeps its file name across versions, machines and processes
    assert point_id({"size_mib": 1024, "policy": "cow"}) == "6f84f59c9d407fd5"
    with pytest.raises(SweepError, match="parameter 'a'"):
        point_id({"a": object()})


def test_rerun_computes_only_missing_points_and_files_are_atomic(tmp_path):
    CALLS.clear()
    pts = grid(x=[1, 2, 3], tag=["a", "bb"])
    df = run_sweep(square, pts, tmp_path, workers=1, progress=False)
    assert len(CALLS) == 6 and len(df) == 6
    assert list(df.columns[:2]) == ["x", "tag"] and (df.y == df.x ** 2).all()
    for p in pts:
        assert part_path(tmp_path, p).exists()
        assert part_path(tmp_path, p).name == f"part-{point_id(p)}.parquet"
    assert _no_temp_files(tmp_path)
    assert json.loads((tmp_path / MANIFEST).read_text())["name"] == "square"

    CALLS.clear()
    again = run_sweep(square, pts, tmp_path, workers=1, progress=False)
    assert CALLS == []                                   # nothing recomputed
    pd.testing.assert_frame_equal(again, df)

    bigger = pts + grid(x=4, tag=["a", "bb"])            # a grown grid computes only the new points
    out = run_sweep(square, bigger, tmp_path, workers=1, progress=False)
    assert sorted(CALLS) == [(4, "a"), (4, "bb")] and len(out) == 8
    assert len(pd.read_parquet(tmp_path)) == 8           # the directory is a Parquet dataset
    assert len(load_sweep(tmp_path)) == 8


def test_a_failed_write_leaves_no_part_file(tmp_path, monkeypatch):
    real = pd.DataFrame.to_parquet

    def broken(self, path, *a, **kw):
        Path(path).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    with pytest.raises(SweepError, match="disk full"):
        run_sweep(square, grid(x=[1, 2]), tmp_path, workers=1, progress=False)
    assert list(tmp_path.glob("part-*")) == [] and _no_temp_files(tmp_path)
    monkeypatch.setattr(pd.DataFrame, "to_parquet", real)
    assert len(run_sweep(square, grid(x=[1, 2]), tmp_path, workers=1, progress=False)) == 2


def test_local_pool_matches_inline_and_keeps_grid_order(tmp_path):
    pts = grid(n=[3, 1, 2], policy=["eager", "cow"])
    inline = run_sweep(rows, pts, tmp_path / "a", workers=1, progress=False)
    pooled = run_sweep(rows, pts, tmp_path / "b", workers=2, progress=False)
    pd.testing.assert_frame_equal(inline, pooled)
    assert list(inline.n) == [3, 3, 3, 3, 3, 3, 1, 1, 2, 2, 2, 2]
    assert _no_temp_files(tmp_path)


def test_failing_points_are_reported_after_the_others_are_saved(tmp_path):
    marker = tmp_path / "fail"
    marker.write_text("")
    out = tmp_path / "sweep"
    pts = grid(x=[1, 2, 3, 4], marker=str(marker))
    with pytest.raises(SweepError, match="1 of 4 points raised") as e:
        run_sweep(flaky, pts, out, workers=2, progress=False)
    assert "boom at x=3" in str(e.value) and len(e.value.failures) == 1
    assert len(list(out.glob("part-*.parquet"))) == 3
    marker.unlink()
    df = run_sweep(flaky, pts, out, workers=2, progress=False)
    assert list(df.y) == [1, 2, 3, 4]


def test_a_directory_holds_one_sweep(tmp_path):
    run_sweep(square, grid(x=[1]), tmp_path, workers=1, progress=False)
    with pytest.raises(SweepError, match="holds the points of sweep 'square'"):
        run_sweep(rows, grid(n=[1]), tmp_path, workers=1, progress=False)
    assert len(run_sweep(rows, grid(n=[1]), tmp_path, workers=1, progress=False, fresh=True)) == 1


def test_bad_grids_are_refused(tmp_path):
    with pytest.raises(SweepError, match="more than once"):
        run_sweep(square, [{"x": 1}, {"x": 1}], tmp_path, progress=False)
    with pytest.raises(SweepError, match="identifiers"):
        run_sweep(square, [{"not a name": 1}], tmp_path, progress=False)
    with pytest.raises(SweepError, match="workers"):
        run_sweep(square, grid(x=[1]), tmp_path, workers=0, progress=False)


def test_engine_points_in_a_pool(tmp_path):
    df = run_sweep(fork_point, grid(heap_kib=[64, 256], policy=["eager", "cow"]), tmp_path, workers=2,
                   progress=False)
    got = df.set_index(["heap_kib", "policy"]).copied
    assert got[(256, "eager")] == 64 and got[(256, "cow")] == 32 and got[(64, "cow")] == 8


def test_cli_sweep_runs_a_file_function(tmp_path, capsys):
    out = tmp_path / "s"
    rc = cli_main(["sweep", f"{__file__}:fork_point", "--param", "heap_kib=64,128", "--policies", "eager,cow",
                   "--out", str(out), "--workers", "1", "--no-progress"])
    assert rc == 0
    df = pd.read_parquet(out)
    assert len(df) == 4 and set(df.policy) == {"eager", "cow"}
    assert "4 points" in capsys.readouterr().out


def test_dask_local_cluster(tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    pts = grid(heap_kib=[64, 128], policy=["eager", "cow", "odf"])
    local = run_sweep(fork_point, pts, tmp_path / "local", workers=1, progress=False)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        remote = run_sweep(fork_point, pts, tmp_path / "dask", scheduler=cluster.scheduler_address,
                           progress=False)
        pd.testing.assert_frame_equal(local, remote)
        with distributed.Client(cluster) as client:       # a Client works too; resumes: nothing to do
            again = run_sweep(fork_point, pts, tmp_path / "dask", scheduler=client, progress=False)
    pd.testing.assert_frame_equal(again, local)
    assert _no_temp_files(tmp_path)


def test_dask_worker_processes_get_experiment_functions_by_value(tmp_path):
    """An experiment script loaded from a file is not importable on a worker: it is shipped by value."""
    distributed = pytest.importorskip("dask.distributed")
    from cowbench.experiment import find_experiments, load_module

    mod = load_module(find_experiments()["memory_limit"])
    pts = mod.QUICK[:2]
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        df = run_sweep(mod.point, pts, tmp_path, scheduler=cluster.scheduler_address, progress=False)
    assert len(df) == 2 and set(df.outcome) == {"ok"}
