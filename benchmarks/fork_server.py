"""Fork servers: N children of a P-size parent, each writing K pages, then exiting, exec'ing or staying alive.

A fuzzer's fork server, a shell running commands, a prefork server recycling
workers: children that live briefly. What a child costs the simulator should
be what it did (K pages, its own page-table entries), not what its parent
maps. The children that stay alive are the yardstick, measured in the same
run: the same forks and the same writes, and no teardown at all.

Then the sparse cases: writes scattered over a huge region (state that grows
with what is written), a huge mapping nobody writes, and a concurrently()
block of 10**7 touches at grain 1.

    python benchmarks/fork_server.py [--children 100000] [--parent 4GiB] [--pages 10] [--repeats 3]
    python benchmarks/fork_server.py --children 2000 --repeats 3      # the 3x target's size

Prints, per case: the simulation's time (the first call after compilation,
and the best of --repeats), its ratio to the alive case, the engine's
counts, and the peak RSS of a fresh process for the sparse cases.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import cowbench as cb


def fork_server(children: int, parent: str, pages: int, ending: str) -> cb.Scenario:
    """A parent that wrote its whole heap forks `children` children one after the
    other; each writes `pages` pages (its own, spread over the heap) and then
    exits, execs (and exits), or stays alive."""
    sc = cb.Scenario(phys_mem="4TiB")          # room for 100,000 live children's page tables (8 MiB each)
    root = sc.spawn("server")
    heap = root.mmap("heap", parent)
    root.write(heap)
    stride = max(1, heap.npages // pages)
    for i in range(children):
        kid = root.fork()
        kid.write(heap, pages=cb.sequential(pages, start=(i * 7919) % heap.npages, stride=stride))
        if ending == "exec":
            kid.exec()
            kid.exit()
        elif ending == "exit":
            kid.exit()
    return sc


def timed(sc: cb.Scenario, repeats: int, **kw) -> tuple[float, float, cb.Result]:
    """(first call, best of `repeats`) seconds of simulate, and the last result."""
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        res = cb.simulate(sc, progress=False, **kw)
        times.append(time.perf_counter() - t0)
    return times[0], min(times), res


SPARSE = {
    # 10**5 uniform writes in 1 TiB, then two children write 10**5 each
    "sparse writes": """
import cowbench as cb
sc = cb.Scenario(phys_mem="8TiB")
p = sc.spawn("p")
r = p.mmap("r", "1TiB")
p.write(r, pages=cb.uniform(10**5, seed=1))
for i in range(2):
    p.fork().write(r, pages=cb.uniform(10**5, seed=2 + i))
""",
    # 128 TiB mapped, nothing written
    "128 TiB mapped": """
import cowbench as cb
sc = cb.Scenario(phys_mem="8TiB")
p = sc.spawn("p")
r = p.mmap("r", "127TiB")
p.read(r, pages=[0])
""",
    # a BGSAVE of 10**7 touches interleaved one touch at a time: one op, merged as it runs
    "concurrently": """
import cowbench as cb
sc = cb.Scenario(phys_mem="1GiB")
p = sc.spawn("p")
r = p.mmap("r", "256MiB")
p.write(r)
kid = p.fork()
with sc.concurrently(grain=1, seed=1):
    p.write(r, pages=cb.uniform(5 * 10**6, seed=2))
    kid.read(r, pages=cb.sequential(5 * 10**6))
""",
}

# Peak RSS from VmHWM, the high-water mark of this process's own address space: ru_maxrss of a
# process that a fork started is never below its parent's RSS at the fork (exec keeps it).
WARM = """
import json, time
import cowbench as cb
cb.simulate(cb.Scenario(phys_mem="1MiB"))          # load the kernels before the clock starts
def peak_rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
"""

SPARSE_RUN = WARM + """
t0 = time.perf_counter()
{code}
build = time.perf_counter() - t0
t0 = time.perf_counter()
res = cb.simulate(sc, progress=False)
t = time.perf_counter() - t0
print(json.dumps(dict(build=build, seconds=t, peak_rss=peak_rss(),
                      frames=int(res.summary.frames_used))))
"""


def sparse_case(name: str) -> dict:
    """Run a sparse case in a fresh process (so its peak RSS is its own), after a trivial
    simulate that loads the kernels; idle_rss is the peak of a process that did only that."""
    base = WARM + "print(json.dumps(dict(peak_rss=peak_rss())))"
    # `python -c` puts the current directory first on sys.path: run it from benchmarks/,
    # which holds no cowbench, so that PYTHONPATH=<old checkout> measures the old code
    here = os.path.dirname(os.path.abspath(__file__))
    idle = json.loads(subprocess.run([sys.executable, "-c", base], capture_output=True, text=True,
                                     check=True, cwd=here).stdout)["peak_rss"]
    out = subprocess.run([sys.executable, "-c", SPARSE_RUN.replace("{code}", SPARSE[name])], capture_output=True,
                         text=True, cwd=here)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else f"exit {out.returncode}"}
    d = json.loads(out.stdout)
    d["idle_rss"] = idle
    return d


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--children", type=int, default=100_000)
    ap.add_argument("--parent", default="4GiB")
    ap.add_argument("--pages", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-sparse", dest="sparse", action="store_false", help="skip the sparse cases")
    args = ap.parse_args(argv)

    cb.simulate(fork_server(3, "16MiB", 4, "exec"))               # compile (or load) the kernels
    print(f"{args.children:,} children of a {args.parent} parent, {args.pages} pages written each, policy cow")
    alive = None
    for ending in ("alive", "exit", "exec"):
        t0 = time.perf_counter()
        sc = fork_server(args.children, args.parent, args.pages, ending)
        build = time.perf_counter() - t0
        first, best, res = timed(sc, args.repeats)
        if ending == "alive":
            alive = best
        s = res.summary
        print(f"  {ending:<6} build {build:6.2f} s  simulate first {first:7.2f} s  best of {args.repeats} "
              f"{best:7.2f} s  = {best / alive:5.2f}x alive  ({args.children / best:,.0f} children/s; "
              f"cow_copies {int(s.cow_copies):,}, frames at the end {int(s.frames_used):,})")
    if args.sparse:
        for name in SPARSE:
            d = sparse_case(name)
            if "error" in d:
                print(f"  {name}: {d['error']}")
                continue
            print(f"  {name:<15} build {d['build']:6.2f} s  simulate {d['seconds']:6.2f} s  peak RSS {d['peak_rss'] / 2**20:7.0f} MiB "
                  f"(a fresh process that ran a trivial simulate: {d['idle_rss'] / 2**20:.0f} MiB)")
    print(f"peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
