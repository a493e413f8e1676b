"""cowbench predict and the snapshot/predict command lines, on a controlled target; the real
Redis (skipped, with the reason, where redis-server is not installed)."""
from __future__ import annotations

import os

import pytest

import cowbench as cb
from cowbench.cli import main as cli_main
from cowbench.real.predict import predict
from realtargets import Target, needs_pagemap, target_argv  # noqa: F401

pytestmark = needs_pagemap
MiB = 1 << 20


@pytest.fixture(scope="module")
def snap(target_argv):
    with Target(target_argv) as t:
        heap, _ = t.mmap(32 * MiB, "an")
        t.write(heap, 0, 6000)
        small, _ = t.mmap(1 * MiB)
        t.write(small, 0, 100)
        return cb.snapshot(t.pid)


def test_predict_a_snapshot(snap):
    pr = predict(snap, write_rate=20_000, seconds=1.0, steps=10)
    f = pr.fork.set_index("policy")
    assert list(f.index) == ["cow", "odf", "eager"]
    est = snap.fork_estimate()
    assert f.loc["cow", "ptes_copied"] == est.fork_ptes_copied
    assert f.loc["cow", "tables_copied"] == est.fork_tables_copied
    assert f.loc["odf", "fork_ms"] < f.loc["cow", "fork_ms"] < f.loc["eager", "fork_ms"]
    assert f.loc["eager", "pages_copied"] == est.child_rss_pages
    assert f.loc["cow", "child_page_tables_kib"] == est.child_pte_pages * 4
    ot = pr.over_time
    assert set(ot.policy) == {"cow", "odf", "eager"} and len(ot) == 30
    cow = ot[ot.policy == "cow"].cow_mib
    assert cow.is_monotonic_increasing and 0 < cow.iloc[-1] <= 6100 * 4096 / MiB
    assert (ot[ot.policy == "eager"].cow_mib == 0).all()         # eager copied everything at fork
    assert pr.regions.rss_mib.sum() > 20
    text = pr.format()
    assert "fork (one fork of the process" in text and "per region" in text


def test_predict_costs_and_errors(snap, tmp_path):
    slow = cb.CostModel.from_dict({**cb.CostModel.default().to_dict(), "fork_pte_ns": 790.0})
    a = predict(snap, policies=["cow"]).fork.fork_ms.iloc[0]
    b = predict(snap, policies=["cow"], costs=slow).fork.fork_ms.iloc[0]
    assert b > 5 * a
    with pytest.raises(cb.ScenarioError, match="policies"):
        predict(snap, policies=["fast"])
    with pytest.raises(cb.ScenarioError, match="traces only"):
        predict(snap, write_scale=2)
    with pytest.raises(cb.ScenarioError, match="neither a process id nor a file"):
        predict(str(tmp_path / "nothing.parquet"))


def test_snapshot_and_predict_cli(target_argv, tmp_path, capsys):
    with Target(target_argv) as t:
        heap, _ = t.mmap(8 * MiB, "an")
        t.write(heap, 0, 1000)
        out = tmp_path / "s.parquet"
        assert cli_main(["snapshot", str(t.pid), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "VmPTE" in text and "True" in text and out.exists()
    plots = tmp_path / "plots"
    assert cli_main(["predict", str(out), "--write-rate", "5000", "--seconds", "1", "--plots", str(plots),
                     "--csv", str(tmp_path / "csv")]) == 0
    text = capsys.readouterr().out
    assert "memory copied on write since the fork" in text
    assert sorted(os.listdir(plots)) == ["predict_cow_over_time.png", "predict_fork_latency.png"]
    assert (tmp_path / "csv" / "predict_fork.csv").exists()
    assert cli_main(["snapshot", "999999999"]) == 1
    assert "no process" in capsys.readouterr().err


def test_redis_bgsave_replay_matches_rdb_last_cow_size():
    from cowbench.real.redis import RedisServer, redis_unavailable

    why = redis_unavailable()
    if why:
        pytest.skip(f"real Redis: {why}")
    keys = 32 * MiB // 1100
    with RedisServer() as r:
        r.populate(keys, 1000)
        run = r.bgsave_traced(keys=keys, value_bytes=1000, workload="overwrite", key_save_delay=-2)
    real = run.info["rdb_last_cow_size"] / 4096
    rp = run.trace.replay()
    kid = rp.cow_at_exit()
    pred = float(kid[kid.role == "child"].uss_pages.iloc[0])
    assert real > 256, "the save should have copied something"
    assert abs(pred - real) <= 0.05 * real + 64, (pred, real)
