"""Scale: N processes forked from a large parent, each writing zipf(count, s=1.1).

The target shape is 10,000 children of a 16 GiB parent with 100,000 writes
each (1e9 writes). Prints wall seconds (build, simulate), writes/s, this
process's peak RSS, and where the simulator's memory went (the overlay pool
holds the children's private PTEs: bytes per private page), so a run at a
smaller N shows how the engine scales.

    python benchmarks/scale.py --children 10000 --parent 16GiB --writes 100000
"""
from __future__ import annotations

import argparse
import resource
import time

import cowbench as cb


def scenario(children: int, parent: str, writes: int, policy_mem: str = "8TiB") -> cb.Scenario:
    sc = cb.Scenario(phys_mem=policy_mem)
    root = sc.spawn("root")
    heap = root.mmap("heap", parent)
    root.write(heap)
    for i in range(children):
        kid = root.fork(f"kid{i}")
        kid.write(heap, pages=cb.zipf(writes, s=1.1, seed=i + 1))
    return sc


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--children", type=int, default=10_000)
    ap.add_argument("--parent", default="16GiB")
    ap.add_argument("--writes", type=int, default=100_000, help="writes per child")
    ap.add_argument("--policy", default="cow", choices=cb.POLICIES)
    args = ap.parse_args(argv)

    cb.simulate(scenario(2, "4MiB", 100))                     # compile outside the timing
    t0 = time.perf_counter()
    sc = scenario(args.children, args.parent, args.writes)
    t_build = time.perf_counter() - t0
    res = cb.simulate(sc, policy=args.policy, progress=True, keep_state=True)
    s = res.summary
    writes = args.children * args.writes + sc.regions[0].npages
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{args.children} children of a {args.parent} parent, {args.writes:,} zipf writes each, policy {args.policy}")
    print(f"build {t_build:.1f} s, simulate {res.wall_seconds:.1f} s, {writes / res.wall_seconds / 1e6:.1f} M writes/s")
    print(f"cow_copies {s.cow_copies:,}, fork_ptes_copied {s.fork_ptes_copied:,}, peak frames {s.peak_frames:,}")
    print(f"peak RSS of this process {peak:.2f} GiB")
    nbytes = res.state_nbytes()
    pool = nbytes["ov_key"] + nbytes["ov_val"]
    print(f"simulated state {nbytes.sum() / 2**30:.2f} GiB; overlay pool {pool / 2**30:.2f} GiB "
          f"(used) = {pool / max(s.cow_copies, 1):.1f} bytes per private page")
    print("largest arrays: " + ", ".join(f"{k} {v / 2**20:,.0f} MiB" for k, v in nbytes.head(5).items()))


if __name__ == "__main__":
    main()
