"""Redis BGSAVE, real: Debian's redis-server traced through a fork, replayed, and checked against its own figures.

A real redis-server (7.0, Debian's package) is filled with 1,000-byte values (64 MiB of
them with --quick, 256 MiB and 1 GiB at full size), then told to BGSAVE while
redis-benchmark overwrites existing keys ("overwrite") or writes new ones ("newkeys") from 4
clients. A cowbench Tracer samples the server and its save child every 0.1 s (pagemap: which
pages turned exclusive, and whether each got a new frame). The trace is replayed in the
simulator (cowbench.real.replay), and the replay's prediction is compared with what Redis
itself reports after the save: `rdb_last_cow_size` (INFO persistence: the child's
Private_Dirty at the end, the memory copy-on-write cost) against the replayed child's USS
at its exit, and `latest_fork_usec` (INFO stats: how long fork() took in the parent)
against the cost model's price of the replayed fork (the PTEs and tables it copies), and
against the fork's CPU time (schedstat of Redis's main thread over the BGSAVE command; the
load starts once the fork has returned, and a busy host stretches wall clock, not CPU time). Set
COWBENCH_COSTS to a `cowbench calibrate --out` TOML file to price with this host's costs;
otherwise the built-in model is used (the table says which).

Then the what-ifs, on the same trace: transparent huge pages on (Redis disables them for
itself) with the kernel's split-on-COW and with whole-huge-page copy (kernels before 5.8),
On-demand-fork, and the writes twice as fast against the same save (the first-write
sequence runs twice as fast; past its end it is extrapolated uniformly).

Needs redis-server, redis-cli and redis-benchmark (apt-get install -y redis-server
redis-tools; `make real-deps`), and root for the frame numbers that tell who copied a page.
The points run one at a time: they time real forks. Datasets stay at or under 1 GiB here
(the machine's memory is shared).
"""
import os

import numpy as np
import pandas as pd

from cowbench import CostModel
from cowbench.experiment import grid, main, versus
from cowbench.plot import Ref, bars, lines

QUICK = grid(dataset_mib=[64], workload=["overwrite"])
FULL = grid(dataset_mib=[256, 1024], workload=["overwrite", "newkeys"], key_save_delay=[0])
SERIAL = True
VALUE = 1000
PER_KEY = 1100              # bytes a 1,000-byte value costs Redis (dict entry, key, sds, jemalloc class)
PAGE_MIB = 4096 / 2**20
WHATIFS = {
    "as traced": {},
    "odf": {"policy": "odf"},
    "THP on, split": {"thp": True, "thp_cow": "split"},
    "THP on, copy": {"thp": True, "thp_cow": "copy"},
    "2x write rate": {"write_scale": 2.0},
}


def unavailable():
    from cowbench.real.redis import redis_unavailable

    return redis_unavailable()


def _costs():
    path = os.environ.get("COWBENCH_COSTS")
    return (CostModel.load(path), path) if path else (CostModel.default(), "built-in default")


def point(dataset_mib=64, workload="overwrite", interval=0.1, key_save_delay=-2, clients=4, pipeline=4):
    from cowbench.real.redis import RedisServer

    keys = int(dataset_mib * 2**20 // PER_KEY)
    costs, costs_name = _costs()
    with RedisServer() as r:
        r.populate(keys, VALUE)
        used = r.info("memory")["used_memory"]
        run = r.bgsave_traced(keys=keys, value_bytes=VALUE, workload=workload, interval=interval,
                              key_save_delay=key_save_delay, clients=clients, pipeline=pipeline)
    tr, info = run.trace, run.info
    procs = tr.processes
    kid = procs[procs.pid != tr.meta["root"]]
    kid_pid = int(kid.pid.iloc[0]) if len(kid) else -1
    smp = tr.samples[tr.samples.pid == kid_pid]
    traced_last = int(smp.exclusive_pages.max()) if len(smp) else 0       # it only grows until the exit
    common = {
        "keys": keys, "used_memory_mib": used / 2**20, "save_s": run.save_s,
        "rdb_last_cow_mib": info.get("rdb_last_cow_size", 0) / 2**20,
        "latest_fork_ms": info.get("latest_fork_usec", 0) / 1e3,
        "fork_cpu_ms": run.fork_cpu_ms, "fork_wait_ms": run.fork_wait_ms,
        "traced_child_exclusive_mib": traced_last * PAGE_MIB,
        "tracer_cpu_fraction": tr.meta["cpu_fraction"], "samples": tr.meta["samples"], "cost_model": costs_name,
    }
    rows = []
    born = float(kid.born_s.iloc[0]) if len(kid) else 0.0
    for _, s in smp.iterrows():
        rows.append({**common, "scenario": "measured (pagemap)", "time_s": s.time_s - born,
                     "cow_mib": s.exclusive_pages * PAGE_MIB, "predicted_cow_mib": np.nan, "predicted_fork_ms": np.nan})
    for name, knobs in WHATIFS.items():
        rp = tr.replay(costs=costs, **knobs)
        k = rp.cow_at_exit()
        kk = k[k.role == "child"]
        pred = float(kk.uss_mib.iloc[0]) if len(kk) else np.nan
        fork_ms = float(kk.fork_ns.iloc[0]) / 1e6 if len(kk) else np.nan
        tl = rp.timeline
        for t in tl.itertuples(index=False):
            if t.time_s >= rp.scenario.origin_s - 1e-9:
                rows.append({**common, "scenario": name, "time_s": t.time_s - rp.scenario.origin_s,
                             "cow_mib": t.cow_mib, "predicted_cow_mib": pred, "predicted_fork_ms": fork_ms})
    return rows


def finals(df):
    d = df[df.scenario != "measured (pagemap)"]
    return d.groupby(["dataset_mib", "workload", "scenario"], as_index=False, sort=False).last()


def compare(df):
    f = finals(df)
    rows = []
    for (size, wl), g in f.groupby(["dataset_mib", "workload"], sort=False):
        t = g[g.scenario == "as traced"].iloc[0]
        err = (t.predicted_cow_mib - t.rdb_last_cow_mib) / t.rdb_last_cow_mib if t.rdb_last_cow_mib else np.nan
        rows.append(versus(f"rdb_last_cow_size, {size:g} MiB, {wl}", f"{t.rdb_last_cow_mib:,.1f} MiB (Redis INFO)",
                           f"{t.predicted_cow_mib:,.1f} MiB replayed ({err:+.1%})", "Redis INFO persistence",
                           "target: within 5 %"))
        ferr = (t.predicted_fork_ms - t.latest_fork_ms) / t.latest_fork_ms if t.latest_fork_ms else np.nan
        rows.append(versus(f"latest_fork_usec, {size:g} MiB, {wl}", f"{t.latest_fork_ms:,.2f} ms (Redis INFO)",
                           f"{t.predicted_fork_ms:,.2f} ms predicted ({ferr:+.1%}; {t.cost_model})",
                           "Redis INFO stats", "target: within 30 % with a calibrated cost model; wall clock: "
                           f"the main thread waited {t.fork_wait_ms:,.2f} ms for a CPU meanwhile"))
        cerr = (t.predicted_fork_ms - t.fork_cpu_ms) / t.fork_cpu_ms if t.fork_cpu_ms else np.nan
        rows.append(versus(f"fork CPU time, {size:g} MiB, {wl}", f"{t.fork_cpu_ms:,.2f} ms (schedstat of Redis's "
                           "main thread over BGSAVE)", f"{t.predicted_fork_ms:,.2f} ms predicted ({cerr:+.1%})",
                           "/proc/PID/task/PID/schedstat", "CPU time, as calibrate measures forks"))
        rows.append(versus(f"child's exclusive pages, last sampled, {size:g} MiB, {wl}",
                           f"{t.rdb_last_cow_mib:,.1f} MiB (Redis INFO)", f"{t.traced_child_exclusive_mib:,.1f} MiB "
                           f"traced", "pagemap bit 56, sampled every 0.1 s"))
        for s in ("odf", "THP on, split", "THP on, copy", "2x write rate"):
            w = g[g.scenario == s]
            if len(w):
                w = w.iloc[0]
                rows.append(versus(f"what-if {s}, {size:g} MiB, {wl}", "(no measurement)",
                                   f"COW {w.predicted_cow_mib:,.1f} MiB, fork {w.predicted_fork_ms:,.2f} ms",
                                   "replayed trace"))
    return rows


def summary(df):
    f = finals(df)
    t = f.pivot_table(index=["dataset_mib", "workload"], columns="scenario", values="predicted_cow_mib",
                      sort=False).round(1)
    t.columns = [f"cow_mib[{c}]" for c in t.columns]
    m = f.groupby(["dataset_mib", "workload"], sort=False)[["rdb_last_cow_mib", "latest_fork_ms", "fork_cpu_ms",
                                                              "save_s", "tracer_cpu_fraction"]].first().round(3)
    fk = f.pivot_table(index=["dataset_mib", "workload"], columns="scenario", values="predicted_fork_ms",
                       sort=False)[["as traced", "odf"]].round(2)
    fk.columns = [f"fork_ms[{c}]" for c in fk.columns]
    return m.join(t).join(fk).reset_index()


def _until_exit(df):
    """The measured series up to its largest value: a sample taken while the child was being torn
    down (its pages unmapped at exit) is not the COW it held."""
    m = df.scenario == "measured (pagemap)"
    keep = []
    for _, g in df[m].groupby(["dataset_mib", "workload"], sort=False):
        keep.append(g.loc[: g.cow_mib.idxmax()])
    return pd.concat([df[~m]] + keep)


def plot(df, png):
    figs = []
    df = _until_exit(df)
    big = df[df.dataset_mib == df.dataset_mib.max()]
    for wl, g in big.groupby("workload", sort=False):
        f = finals(g).iloc[0]
        figs.append(lines(g, "time_s", "cow_mib", png(f"cow_over_time_{wl}"), hue="scenario", markers=False,
                          title=f"Redis BGSAVE of {f.dataset_mib:g} MiB under {wl} load: COW memory",
                          xlabel="time since fork (s)", ylabel="memory copied on write (MiB)",
                          refs=[Ref.hline(f.rdb_last_cow_mib, "rdb_last_cow_size (Redis INFO)")], legend_out=True,
                          note="measured: the child's exclusive pages (pagemap); the rest: the trace replayed in "
                               "the simulator, as traced and under what-ifs"))
    f = finals(df)
    t = f[f.scenario == "as traced"]
    cmp_rows = []
    for _, r in t.iterrows():
        lab = f"{r.dataset_mib:g} MiB {r.workload}"
        cmp_rows += [{"case": lab, "source": "Redis", "mib": r.rdb_last_cow_mib},
                     {"case": lab, "source": "replay", "mib": r.predicted_cow_mib}]
    figs.append(bars(pd.DataFrame(cmp_rows), "case", "mib", png("rdb_last_cow_size"), hue="source",
                     title="rdb_last_cow_size: Redis against the replayed trace", xlabel="",
                     ylabel="COW memory at the end of the save (MiB)"))
    return figs


if __name__ == "__main__":
    main(__name__)
