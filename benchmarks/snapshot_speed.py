"""How long cb.snapshot takes, against the size of the process.

    python benchmarks/snapshot_speed.py            # 1, 2, 4 GiB dense; 16 GiB mapped, 4 GiB resident

Each target is a separate process holding private anonymous memory (4 KiB pages:
MADV_NOHUGEPAGE), idle while it is read; each size is snapshotted 5 times and the median
printed, wall clock and CPU time of the reading process. The 16 GiB dense figure is
extrapolated from the 1, 2 and 4 GiB ones (a least-squares line: the cost is per page);
the machine this runs on has no 16 GiB to spare. Read with kpageflags where the VMA may
hold large folios (THP-eligible VMAs): the THP=1 rows show that cost.
"""
import os
import statistics
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
import cowbench as cb  # noqa: E402

CASES = [(1, 1, 0), (2, 2, 0), (4, 4, 0), (16, 4, 0), (1, 1, 1), (2, 2, 1)]


def main():
    rows = []
    for gib, res, thp in CASES:
        p = subprocess.Popen([sys.executable, os.path.join(HERE, "_target.py"), str(gib), str(res), "none", "0", "0",
                              str(thp)], stdout=subprocess.PIPE, text=True)
        pid = int(p.stdout.readline())
        try:
            cb.snapshot(pid)                              # warm: the page tables are in cache as in a real run
            wall, cpu = [], []
            for _ in range(5):
                s = cb.snapshot(pid)
                wall.append(s.meta["seconds"])
                cpu.append(s.meta["cpu_seconds"])
            ok = bool(s.check().match.all())
        finally:
            p.kill()
            p.wait()
        rows.append((gib, res, thp, statistics.median(wall), statistics.median(cpu), len(s.runs), ok))
        print(f"{gib:>3} GiB mapped, {res} GiB resident, THP {'on ' if thp else 'off'}: "
              f"{rows[-1][3]:.3f} s wall, {rows[-1][4]:.3f} s CPU (median of 5), {rows[-1][5]} runs, "
              f"matches smaps/status: {ok}", flush=True)
    dense = [(g, w, c) for g, r, t, w, c, _, _ in rows if g == r and not t]
    g = np.array([d[0] for d in dense], float)
    for name, k in (("wall", 1), ("CPU", 2)):
        y = np.array([d[k] for d in dense])
        slope, icept = np.polyfit(g, y, 1)
        print(f"16 GiB dense, extrapolated from 1, 2, 4 GiB: {icept + 16 * slope:.2f} s {name} "
              f"({slope * 1000:.0f} ms per GiB + {icept * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
