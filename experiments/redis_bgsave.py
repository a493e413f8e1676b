"""Redis BGSAVE: copy-on-write memory while a forked child writes the snapshot.

A Redis parent holds a dataset (4 GiB at full size, 256 MiB with --quick),
forks, and keeps serving writes while the child reads the whole heap to write
the RDB file at 512 MiB/s (8 s for 4 GiB). The parent's writes (1,000 to
1,000,000 page writes per second, spread uniformly or zipf-skewed with s=0.99,
YCSB's constant) run concurrently with the child's sequential read, cut into
pieces (a hundredth of the parent's writes, at most 1,024 touches) and
interleaved at steady rates (Scenario.concurrently). Every first write to a
page the child still shares is a COW copy; the child's original becomes private
to it, so at the end the child's Private_Dirty (its USS) is what Redis logs as
"RDB: N MB of memory used by copy-on-write" and reports as rdb_last_cow_size in
INFO persistence.

Published figures: Redis's persistence docs warn that a write-heavy instance
"may use up to 2 times the memory normally used" during BGSAVE; the COW memory
can never exceed the dataset (every page copied once). For uniform writes the
expected COW is N (1 - (1 - 1/N)^w) pages for w writes over N pages; zipf
concentrates the writes on few pages and copies far less.
"""

import cowbench as cb
from cowbench.experiment import grid, main, versus
from cowbench.plot import Ref, lines

RATES = [1_000, 10_000, 100_000, 1_000_000]
PATTERNS = ["uniform", "zipf"]
QUICK = grid(dataset_mib=256, pattern=PATTERNS, writes_per_s=RATES)
FULL = grid(dataset_mib=4096, pattern=PATTERNS, writes_per_s=RATES)
RDB_MIB_S = 512
PAGE_MIB = 4096 / 2**20
SAMPLES = 60


def point(dataset_mib=256, pattern="uniform", writes_per_s=100_000, rdb_mib_s=RDB_MIB_S, zipf_s=0.99):
    seconds = dataset_mib / rdb_mib_s
    writes = int(writes_per_s * seconds)
    sc = cb.Scenario(phys_mem=f"{3 * dataset_mib}MiB")
    redis = sc.spawn("redis")
    heap = redis.mmap("dataset", f"{dataset_mib}MiB")
    redis.write(heap)
    child = redis.fork("bgsave")
    pages = cb.uniform(writes, seed=7) if pattern == "uniform" else cb.zipf(writes, s=zipf_s, seed=7)
    with sc.concurrently(grain=max(1, min(1024, writes // 100)), seed=1, samples=SAMPLES):
        redis.write(heap, pages=pages)
        child.read(heap)
    child.exit()
    res = cb.simulate(sc, policy="cow")
    kid = res.processes.set_index("name").loc["bgsave"]
    n = heap.npages
    return [{
        "time_s": (row.piece + 1) / row.pieces * seconds,
        "cow_mib": int(row.cow_copies) * PAGE_MIB,
        "rdb_last_cow_mib": int(kid.uss_pages) * PAGE_MIB,
        "expected_uniform_mib": n * (1 - (1 - 1 / n) ** writes) * PAGE_MIB,
        "writes": writes,
        "save_seconds": seconds,
        "peak_mib": res.summary.peak_frames * PAGE_MIB,
    } for row in res.phase_timeline.itertuples()]


def finals(df):
    return df.groupby(["dataset_mib", "pattern", "writes_per_s"], as_index=False).last()


def compare(df):
    f = finals(df)
    d = float(f.dataset_mib.iloc[0])
    worst = f.loc[f.rdb_last_cow_mib.idxmax()]
    rows = [versus("BGSAVE memory, write-heavy worst case", "up to 2x the memory normally used",
                   f"{(d + worst.rdb_last_cow_mib) / d:.2f}x ({worst.pattern}, {worst.writes_per_s:,} writes/s)",
                   "Redis persistence docs")]
    for _, r in f[f.pattern == "uniform"].iterrows():
        rows.append(versus(f"rdb_last_cow_size, uniform, {r.writes_per_s:,} writes/s",
                           f"{r.expected_uniform_mib:,.1f} MiB expected (N(1-(1-1/N)^w))",
                           f"{r.rdb_last_cow_mib:,.1f} MiB", "balls-into-bins expectation"))
    for _, r in f[f.pattern == "zipf"].iterrows():
        u = f[(f.pattern == "uniform") & (f.writes_per_s == r.writes_per_s)].rdb_last_cow_mib.iloc[0]
        rows.append(versus(f"rdb_last_cow_size, zipf 0.99, {r.writes_per_s:,} writes/s",
                           "skewed writes copy fewer pages than uniform",
                           f"{r.rdb_last_cow_mib:,.1f} MiB ({r.rdb_last_cow_mib / max(u, 1e-9):.0%} of uniform)",
                           "YCSB zipfian"))
    return rows


def summary(df):
    f = finals(df)
    t = f.pivot(index="writes_per_s", columns="pattern", values="rdb_last_cow_mib").round(1)
    t.columns = [f"rdb_last_cow_mib[{c}]" for c in t.columns]
    t["dataset_mib"] = float(f.dataset_mib.iloc[0])
    return t.reset_index()


def plot(df, png):
    f = finals(df)
    d = float(f.dataset_mib.iloc[0])
    secs = float(f.save_seconds.iloc[0])
    rate_fmt = lambda r: f"{r:,} writes/s"   # noqa: E731
    exp = f[f.pattern == "uniform"]
    return [
        lines(df, "time_s", "cow_mib", png("cow_over_time"), hue="writes_per_s", style="pattern",
              hue_fmt=rate_fmt, style_order=PATTERNS, markers=False,
              title=f"COW memory during BGSAVE of a {d / 1024:g} GiB dataset" if d >= 1024
              else f"COW memory during BGSAVE of a {d:g} MiB dataset",
              xlabel="time since fork (s)", ylabel="memory copied on write (MiB, log scale above 1)",
              symlogy=1, refs=[Ref.hline(d, "dataset size: the 2x worst case (Redis docs)")], legend_out=True,
              note=f"The child writes the snapshot at {RDB_MIB_S} MiB/s ({secs:g} s); the parent writes "
                   "single pages at the given rate, uniform (solid) or zipf s=0.99 (dashed)."),
        lines(f, "writes_per_s", "rdb_last_cow_mib", png("rdb_last_cow_size"), hue="pattern",
              hue_order=PATTERNS, hue_fmt={"uniform": "uniform writes", "zipf": "zipf writes, s=0.99"}.get,
              logx=True, logy=True,
              title="rdb_last_cow_size: the child's Private_Dirty at the end",
              xlabel="parent's write rate during the save (page writes/s, log scale)",
              ylabel="COW memory at the end of the save (MiB, log scale)",
              refs=[Ref.under(exp.writes_per_s, exp.expected_uniform_mib, "uniform: N(1-(1-1/N)^w) expected"),
                    Ref.hline(d, "dataset size: the 2x worst case (Redis docs)")],
              legend_loc="lower right"),
    ]


if __name__ == "__main__":
    main(__name__)
