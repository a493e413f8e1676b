"""Python workers, real: CPython multiprocessing workers traced over a shared heap, against the python_prefork model and the forkserver and spawn start methods.

A real CPython process builds a list of (int, str, float) tuples (64 MiB with --quick, 256
MiB at full size) and starts a multiprocessing pool (2 or 4 workers). Every request of a
worker reads 2,000 entries, 98 % of them from the first 45 % of the list (the hot set the
python_prefork model assumes) and binds each entry's str: reference counts change, so the
pages of every object read are copied on write ("copy on read"). With the fork start
method a cowbench Tracer samples the parent and its workers every 0.1 s; the workers' COW
copies over time are measured from pagemap (pages that turned exclusive in a worker with a
new frame), the fraction of the parent's heap a worker ends up copying is measured, and the
python_prefork model is run with that fraction as its hot set (its fitted 45 % replaced by
the measured one) to see whether its decay matches the real one; the trace's replay
predicts each worker's USS at the end, against smaps_rollup. gc "freeze" calls gc.freeze()
before the pool starts (the collector leaves the objects alone; reference counts still
change).

Then the start methods: fork (the workers share the parent's heap copy-on-write),
forkserver (the default on Linux since Python 3.14: workers fork from a clean server
process and must build or receive the data themselves) and spawn (a fresh interpreter per
worker): pool start time (until every worker answered) and memory (the total PSS of the
parent, the forkserver and the workers, from smaps_rollup while the workers are alive).
Runs one point at a time: it times real processes.
"""
import json
import subprocess
import sys

import numpy as np
import pandas as pd

from cowbench.experiment import grid, load_module, main, versus
from cowbench.plot import Ref, bars, lines

QUICK = grid(method=["fork"], gc_mode=["default"], heap_mib=[64], workers=[2])
FULL = (grid(method=["fork"], gc_mode=["default", "freeze"], heap_mib=[256], workers=[4])
        + grid(method=["forkserver", "spawn"], gc_mode=["default"], heap_mib=[256], workers=[4]))
SERIAL = True
REQUESTS, OBJECTS, ROUNDS, P_HOT = 400, 2000, 8, 0.98
PAGE_MIB = 4096 / 2**20


def unavailable():
    import os

    return "" if os.path.exists("/proc/self/pagemap") else "no /proc/PID/pagemap (not Linux)"


def _run_driver(method, gc_mode, heap_mib, workers, requests, trace):
    from cowbench.real.trace import Tracer

    import cowbench.real.pyworkers as driver

    # the driver runs by path: a bare interpreter (stdlib only), not one that imported cowbench
    cmd = [sys.executable, driver.__file__, "--method", method, "--heap-mib", str(heap_mib),
           "--workers", str(workers), "--requests", str(requests), "--rounds", str(ROUNDS),
           "--objects", str(OBJECTS), "--gc", gc_mode]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline().split()
        if not line or line[0] != "ready":
            raise RuntimeError(f"pyworkers did not start: {line}")
        pid = int(line[1])
        tracer = Tracer(pid, 0.1).start() if trace else None
        p.stdin.write("go\n")
        p.stdin.flush()
        out = json.loads(p.stdout.readline())
        tr = tracer.stop() if tracer else None
        p.stdin.write("exit\n")
        p.stdin.flush()
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return out, tr


def _memory(out):
    """Per role (parent, forkserver, worker) sums and means from the smaps_rollup the driver read."""
    roll = {int(k): v for k, v in out["rollup"].items()}
    workers = set(out["workers"])
    rows = []
    for pid, r in roll.items():
        role = "parent" if pid == out["driver"] else ("worker" if pid in workers else "helper")
        uss = r.get("Private_Clean", 0) + r.get("Private_Dirty", 0)
        rows.append({"pid": pid, "role": role, "rss_mib": r.get("Rss", 0) / 1024, "pss_mib": r.get("Pss", 0) / 1024,
                     "uss_mib": uss / 1024, "shared_mib": (r.get("Rss", 0) - uss) / 1024})
    return pd.DataFrame(rows)


def point(method="fork", gc_mode="default", heap_mib=64, workers=2, requests=REQUESTS):
    out, tr = _run_driver(method, gc_mode, heap_mib, workers, requests, trace=method == "fork")
    mem = _memory(out)
    wk = mem[mem.role == "worker"]
    common = {"start_s": out["start_s"], "total_pss_mib": mem.pss_mib.sum(), "worker_uss_mib": wk.uss_mib.mean(),
              "worker_shared_mib": wk.shared_mib.mean(), "worker_rss_mib": wk.rss_mib.mean(),
              "parent_pss_mib": mem[mem.role == "parent"].pss_mib.sum(), "processes": len(mem)}
    if tr is None:
        return [{**common, "requests_done": requests, "measured_cow_mib": np.nan, "model_cow_mib": np.nan,
                 "touched_fraction": np.nan, "replay_worker_uss_mib": np.nan, "tracer_cpu_fraction": np.nan}]
    procs = tr.processes
    kids = procs[(procs.ppid == tr.meta["root"]) & ~procs.probe]
    born = float(kids.born_s.min())
    smp = tr.samples
    root = smp[smp.pid == tr.meta["root"]]
    before = root[root.time_s < born]
    heap_pages = int(before.rss_pages.iloc[-1]) if len(before) else int(root.rss_pages.iloc[0])
    w = tr.writes()
    w = w[w.pid.isin(kids.pid) & (w.time_s >= born)]
    per = w.groupby("pid").pages.sum().reindex(kids.pid, fill_value=0)
    touched = float(per.mean()) / heap_pages if heap_pages else np.nan
    rp = tr.replay()
    rpp = rp.processes
    replay_uss = float(rpp[rpp.role == "child"].uss_pages.mean()) * PAGE_MIB
    model = load_module(_prefork_path())
    rows = []
    t_pool = born
    for r in out["rounds"]:
        t_end = t_pool + r["start_s"] + r["seconds"]
        done = w[w.time_s <= t_end + 0.1].groupby("pid").pages.sum().reindex(kids.pid, fill_value=0).mean()
        m = model.point(layout="refcounted", requests=r["requests_done"], workers=workers,
                        heap_mib=heap_pages * PAGE_MIB, objects_per_request=OBJECTS,
                        hot=min(max(touched, 1e-6), 1.0), p_hot=P_HOT)
        rows.append({**common, "requests_done": r["requests_done"], "measured_cow_mib": done * PAGE_MIB,
                     "model_cow_mib": m["cow_copies_per_worker"] * PAGE_MIB, "touched_fraction": touched,
                     "replay_worker_uss_mib": replay_uss, "tracer_cpu_fraction": tr.meta["cpu_fraction"],
                     "heap_mib_at_fork": heap_pages * PAGE_MIB})
    return rows


def _prefork_path():
    from pathlib import Path

    return Path(__file__).resolve().parent / "python_prefork.py"


def finals(df):
    return df.groupby(["method", "gc_mode", "heap_mib", "workers"], as_index=False, sort=False).last()


def compare(df):
    f = finals(df)
    rows = []
    fk = f[f.method == "fork"]
    for _, r in fk.iterrows():
        rows.append(versus(f"worker COW after {r.requests_done:g} requests, gc {r.gc_mode}",
                           f"{r.measured_cow_mib:,.1f} MiB measured (pagemap)",
                           f"{r.model_cow_mib:,.1f} MiB python_prefork model, hot = measured "
                           f"{r.touched_fraction:.1%} of the heap", "this trace",
                           "the model's fitted 45 % replaced by the measured fraction"))
        rows.append(versus(f"worker USS at the end, gc {r.gc_mode}", f"{r.worker_uss_mib:,.1f} MiB (smaps_rollup)",
                           f"{r.replay_worker_uss_mib:,.1f} MiB replayed", "smaps_rollup of each worker"))
        rows.append(versus(f"worker RSS, gc {r.gc_mode}", "Instagram: 250 MB per worker, shared falls to ~140 MB",
                           f"RSS {r.worker_rss_mib:,.0f} MiB, shared {r.worker_shared_mib:,.0f} MiB after "
                           f"{r.requests_done:g} requests ({r.heap_mib:g} MiB heap)",
                           "Instagram Engineering, 2017"))
    base = f[(f.method == "fork") & (f.gc_mode == "default")]
    for _, r in f[f.method != "fork"].iterrows():
        b = base[(base.heap_mib == r.heap_mib) & (base.workers == r.workers)]
        ref = (f" vs fork {b.total_pss_mib.iloc[0]:,.0f} MiB, {b.start_s.iloc[0]:.2f} s" if len(b) else "")
        rows.append(versus(f"{r.method}: total PSS and pool start", "forkserver is the default since Python 3.14",
                           f"{r.total_pss_mib:,.0f} MiB, {r.start_s:.2f} s{ref}", "smaps_rollup, pool start time"))
    return rows


def summary(df):
    f = finals(df)
    cols = ["method", "gc_mode", "heap_mib", "workers", "start_s", "total_pss_mib", "worker_uss_mib",
            "worker_shared_mib", "touched_fraction", "measured_cow_mib", "model_cow_mib", "replay_worker_uss_mib"]
    return f[cols].round(3)


def plot(df, png):
    figs = []
    fk = df[df.method == "fork"]
    if len(fk):
        long = pd.concat([fk.assign(series="measured (pagemap)", cow=fk.measured_cow_mib),
                          fk.assign(series="model, hot = measured fraction", cow=fk.model_cow_mib)])
        long["case"] = long.series + ", gc " + long.gc_mode
        figs.append(lines(long, "requests_done", "cow", png("cow_per_worker"), hue="case",
                          title="COW copies per worker: real CPython against the model",
                          xlabel="requests served per worker", ylabel="copied on write per worker (MiB)",
                          refs=[Ref.hline(float(fk.heap_mib_at_fork.max()), "parent's heap at fork")],
                          legend_loc="lower right"))
    f = finals(df)
    f = f[f.gc_mode == "default"]
    figs.append(bars(f.assign(m=f.method), "m", "total_pss_mib", png("start_methods_memory"),
                     title="Memory of parent + workers by start method", xlabel="start method",
                     ylabel="total PSS (MiB)", fmt="{:,.0f}"))
    figs.append(bars(f.assign(m=f.method), "m", "start_s", png("start_methods_time"),
                     title="Pool start time by start method", xlabel="start method",
                     ylabel="until every worker answered (s)", fmt="{:,.2f}"))
    return figs


if __name__ == "__main__":
    main(__name__)
