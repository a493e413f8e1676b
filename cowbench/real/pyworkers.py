"""Real CPython workers over a large in-memory structure, for the python_workers_real experiment.

    python cowbench/real/pyworkers.py --method fork --heap-mib 64 --workers 2 --requests 400

(by path, so that the interpreter holds nothing but the standard library: `-m` would import
cowbench, NumPy and Numba into the parent and every worker)

The driver builds a list of tuples (an int, a str, a float: ~150 bytes an entry) until it
holds about --heap-mib MiB, prints "ready PID" and waits for a line on stdin (so a tracer can
start), then starts a multiprocessing pool with the given start method (fork, forkserver,
spawn). A fork worker inherits the list; a forkserver or spawn worker builds its own copy
(the structure has to come from somewhere: that is their cost). Each worker then serves
--requests requests in --rounds rounds (a short pause between rounds, so that a trace sees
the decay): a request reads --objects entries, 98 % from the first 45 % of the list (a hot
set, as the python_prefork model assumes) and the rest from the others, binding each
entry's str, which increments and decrements reference counts: a write to each object's
header, so every page holding a touched object is copied on write. With --gc freeze the
driver calls gc.freeze() before starting the pool (the collector then never writes the
objects' gc links; the reference counts still change).

After the last round the driver prints one JSON line: start_s (pool start until every worker
answered), the pids, per-round times, and smaps_rollup of itself and every descendant (Rss,
Pss, Private_*, Shared_*), read while the workers are still alive; then it waits for a line
on stdin and exits.
"""
from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import random
import sys
import time

DATA = None


def build(heap_mib: int) -> list:
    """A list of (int, str, float) tuples of about heap_mib MiB."""
    n = int(heap_mib * 2**20 / 150)
    return [(i, f"value-{i:012d}", i * 0.5) for i in range(n)]


def _init(method: str, heap_mib: int) -> None:
    global DATA
    if DATA is None:                      # forkserver / spawn: the worker builds its own copy
        DATA = build(heap_mib)


def _ready(_=None) -> int:
    return os.getpid()


def _serve(args) -> tuple[int, float]:
    """Serve `n` requests of `objects` reads each; returns (pid, seconds)."""
    n, objects, hot, p_hot, seed = args
    rnd = random.Random(seed)
    data = DATA
    cut = int(len(data) * hot)
    t0 = time.perf_counter()
    total = 0
    for _ in range(n):
        for _ in range(objects):
            i = rnd.randrange(cut) if rnd.random() < p_hot else rnd.randrange(cut, len(data))
            s = data[i][1]                # a new reference to the tuple and to its str: two refcount writes
            total += len(s)
    return os.getpid(), time.perf_counter() - t0


def _rollup(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                k, sep, v = line.partition(":")
                if sep and v.strip().endswith("kB"):
                    out[k.strip()] = int(v.split()[0])
    except OSError:
        pass
    return out


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    kids = [int(c) for c in f.read().split()]
                out += kids
                todo += kids
        except OSError:
            pass
    return out


def main(argv=None) -> int:
    global DATA
    ap = argparse.ArgumentParser(prog="pyworkers.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", choices=("fork", "forkserver", "spawn"), default="fork")
    ap.add_argument("--heap-mib", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--objects", type=int, default=2000)
    ap.add_argument("--hot", type=float, default=0.45)
    ap.add_argument("--p-hot", type=float, default=0.98)
    ap.add_argument("--gc", choices=("default", "freeze"), default="default")
    ap.add_argument("--pause", type=float, default=0.25)
    a = ap.parse_args(argv)
    if a.method == "fork":
        DATA = build(a.heap_mib)
        if a.gc == "freeze":
            gc.freeze()
    print(f"ready {os.getpid()}", flush=True)
    sys.stdin.readline()
    ctx = mp.get_context(a.method)
    t0 = time.perf_counter()
    pool = ctx.Pool(a.workers, initializer=_init, initargs=(a.method, a.heap_mib))
    pids = sorted(set(pool.map(_ready, range(a.workers * 4), chunksize=1)))
    start_s = time.perf_counter() - t0
    rounds = []
    per = max(1, a.requests // a.rounds)
    for r in range(a.rounds):
        time.sleep(a.pause)
        t = time.perf_counter() - t0
        got = pool.map(_serve, [(per, a.objects, a.hot, a.p_hot, 1000 * r + w) for w in range(a.workers)],
                       chunksize=1)
        rounds.append({"round": r, "start_s": t, "requests_done": per * (r + 1),
                       "seconds": max(s for _, s in got)})
    time.sleep(a.pause)
    mem = {str(p): _rollup(p) for p in [os.getpid()] + _descendants(os.getpid())}
    print(json.dumps({"start_s": start_s, "workers": pids, "rounds": rounds, "rollup": mem,
                      "driver": os.getpid(), "entries": len(DATA) if DATA is not None else 0}), flush=True)
    sys.stdin.readline()
    pool.terminate()
    pool.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
