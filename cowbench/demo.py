"""The default experiment behind `make demo` and `cowbench demo`.

A parent fills a heap, forks, and the child writes 0 % to 100 % of it, under
eager copy and under Linux COW. Eager pays for every page at fork whatever the
child does; COW pays one fault and one copy per page the child actually writes.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .simulator import simulate
from .plot import write_fraction
from .fileio import atomic_write
from .scenario import Scenario

PERCENTS = (0, 10, 25, 50, 75, 100)


def fork_then_write(heap: str, written_pct: float, phys_mem: str = "4GiB") -> Scenario:
    """Parent writes its whole heap, forks; the child writes the first written_pct % of it."""
    sc = Scenario(phys_mem=phys_mem)
    parent = sc.spawn("parent")
    h = parent.mmap("heap", heap)
    parent.write(h)
    child = parent.fork("child")
    child.write(h, pages=range(0, round(h.npages * written_pct / 100)))
    return sc


def run(heap: str = "256MiB", percents=PERCENTS, policies=("eager", "cow")) -> pd.DataFrame:
    """One tidy row per (policy, written_pct)."""
    rows = []
    for pct in percents:
        sc = fork_then_write(heap, pct)
        for policy in policies:
            res = simulate(sc, policy=policy)
            child = res.processes.set_index("name").loc["child"]
            s = res.summary
            rows.append({
                "policy": policy,
                "written_pct": pct,
                "heap_mib": sc.regions[0].size / 2**20,
                "fork_pages_copied": int(child.fork_pages_copied),
                "fork_ptes_copied": int(child.fork_ptes_copied),
                "child_minor_faults": int(child.minor_faults),
                "child_cow_copies": int(child.cow_copies),
                "pages_copied": int(child.fork_pages_copied + child.cow_copies),
                "peak_frames": int(s.peak_frames),
                "peak_mib": s.peak_frames * sc.page_size / 2**20,
            })
    return pd.DataFrame(rows)


def main(out: str | Path = "results/demo", heap: str = "256MiB") -> pd.DataFrame:
    """Run the demo, print its table, write demo.parquet, demo.csv and demo.png under out."""
    out = Path(out)
    df = run(heap)
    atomic_write(out / "demo.parquet", lambda p: df.to_parquet(p, index=False))
    atomic_write(out / "demo.csv", lambda p: df.to_csv(p, index=False))
    png = write_fraction(df, out / "demo.png")
    table = df.pivot(index="written_pct", columns="policy", values=["pages_copied", "child_minor_faults", "peak_mib"])
    table.columns = [f"{a}[{b}]" for a, b in table.columns]
    print(f"fork of a parent with a {heap} heap; the child writes part of it\n")
    print(table.to_string(float_format=lambda v: f"{v:,.0f}"))
    print(f"\nwrote {out / 'demo.parquet'}, {out / 'demo.csv'}, {png}")
    return df
