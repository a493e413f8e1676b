"""Redis BGSAVE with transparent huge pages: split (Linux >= 5.8) against copy.

Redis warns at start-up when THP is enabled ("This will create latency and
memory usage issues with Redis") because, on the kernels of the time, the first
write to a huge page still shared with the BGSAVE child copied all 2 MiB of it
(`thp_cow="copy"`). Since Linux 5.8 the write splits the PMD and copies only
the 4 KiB written (`thp_cow="split"`). A Redis parent with its dataset in 4 KiB
pages (THP off) or in huge pages forks, then serves uniform single-page writes
while the child reads the heap for the snapshot (Scenario.concurrently); the
child's Private_Dirty at the end is Redis's rdb_last_cow_size.

Published figure: the copy behaviour multiplies COW memory by up to 512 (one
2 MiB copy per 4 KiB written) until every huge page has been copied; split
brings it back to the 4 KiB figure. Full size: a 1 GiB dataset (Redis's
warning is about instances of any size; the ratio does not depend on it).
"""
import cowbench as cb
from cowbench.experiment import grid, main, versus
from cowbench.plot import Ref, lines

RATES = [100, 1_000, 10_000, 100_000]
MODES = ["off", "split", "copy"]
QUICK = grid(dataset_mib=128, thp=MODES, writes_per_s=RATES)
FULL = grid(dataset_mib=1024, thp=MODES, writes_per_s=RATES)
RDB_MIB_S = 512
PAGE_MIB = 4096 / 2**20


def point(dataset_mib=128, thp="split", writes_per_s=1_000):
    seconds = dataset_mib / RDB_MIB_S
    writes = max(1, int(writes_per_s * seconds))
    sc = cb.Scenario(phys_mem=f"{3 * dataset_mib}MiB")
    redis = sc.spawn("redis")
    heap = redis.mmap("dataset", f"{dataset_mib}MiB", thp=thp != "off")
    redis.write(heap)
    child = redis.fork("bgsave")
    with sc.concurrently(grain=max(1, min(1024, writes // 100)), seed=1):
        redis.write(heap, pages=cb.uniform(writes, seed=7))
        child.read(heap)
    child.exit()
    res = cb.simulate(sc, policy="cow", thp_cow="copy" if thp == "copy" else "split")
    df = res.processes.set_index("name")
    parent, kid = df.loc["redis"], df.loc["bgsave"]
    return [{
        "writes": writes,
        "rdb_last_cow_mib": int(kid.uss_pages) * PAGE_MIB,
        "parent_fault_ms": float(parent.est_time_ns) / 1e6,
        "thp_splits": int(parent.thp_splits + kid.thp_splits),
        "thp_copies": int(parent.thp_copies),
        "peak_mib": res.summary.peak_frames * PAGE_MIB,
    }]


def compare(df):
    rows = []
    for rate in sorted(df.writes_per_s.unique()):
        f = df[df.writes_per_s == rate].set_index("thp")
        off, split, copy = (float(f.loc[m, "rdb_last_cow_mib"]) for m in MODES)
        rows.append(versus(f"rdb_last_cow_size at {rate:,} writes/s: copy / split",
                           "up to 512x (a 2 MiB copy per 4 KiB write)",
                           f"{copy:,.1f} / {split:,.1f} MiB = {copy / max(split, 1e-9):,.0f}x "
                           f"(THP off: {off:,.1f} MiB)", "Redis THP warning; Linux 5.8 THP COW split"))
    return rows


def summary(df):
    t = df.pivot(index="writes_per_s", columns="thp", values="rdb_last_cow_mib").round(1)
    t.columns = [f"rdb_last_cow_mib[{c}]" for c in t.columns]
    return t.reset_index()


def plot(df, png):
    d = float(df.dataset_mib.iloc[0])
    fmt = {"off": "THP off (4 KiB pages)", "split": "THP, split on COW (Linux >= 5.8)",
           "copy": "THP, 2 MiB copy on COW (older kernels)"}.get
    return [
        lines(df, "writes_per_s", "rdb_last_cow_mib", png("cow_size"), hue="thp", hue_order=MODES, hue_fmt=fmt,
              logx=True, logy=True, title="BGSAVE copy-on-write memory with transparent huge pages",
              xlabel="parent's write rate during the save (page writes/s, log scale)",
              ylabel="rdb_last_cow_size (MiB, log scale)",
              refs=[Ref.hline(d, "dataset size")], legend_loc="lower right"),
        lines(df, "writes_per_s", "parent_fault_ms", png("fault_time"), hue="thp", hue_order=MODES, hue_fmt=fmt,
              logx=True, logy=True, title="Time the parent spends in faults during the save",
              xlabel="parent's write rate during the save (page writes/s, log scale)",
              ylabel="estimated fault time (ms, log scale)", legend_loc="lower right"),
    ]


if __name__ == "__main__":
    main(__name__)
