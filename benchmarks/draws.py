"""Page-draw cost: ns per draw of the pattern generators, as the engine calls them.

Fills a TOUCH_CHUNK buffer over and over from a small jitted loop (as
touch_pages does), 20 M draws per case, best of 3; compilation excluded.

    python benchmarks/draws.py [--draws 20000000]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from numba import njit

from cowbench._engine.abi import PAT_UNIFORM, PAT_ZIPF, TOUCH_CHUNK
from cowbench._engine.draws import pattern_fill
from cowbench.patterns import Pattern

CASES = [("zipf s=1.2", PAT_ZIPF, 1.2, 1024), ("zipf s=1.2", PAT_ZIPF, 1.2, 262_144),
         ("zipf s=1.1", PAT_ZIPF, 1.1, 4_194_304), ("uniform", PAT_UNIFORM, 0.0, 4_194_304)]


@njit
def draw(kind, seed, a, n, total, ztab):
    buf = np.empty(TOUCH_CHUNK, dtype=np.int64)
    scratch = np.empty_like(buf)
    acc = 0
    for i0 in range(0, total, TOUCH_CHUNK):
        pattern_fill(kind, seed, a, 0.0, n, i0, buf, ztab, 0, scratch)
        acc += buf[0] + buf[TOUCH_CHUNK - 1]          # keep the fill alive
    return acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=20_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    for name, kind, s, n in CASES:
        ztab = Pattern(kind, 0, 0, s).table(n)
        draw(kind, 7, s, n, TOUCH_CHUNK, ztab)                      # compile
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            draw(kind, 7, s, n, args.draws, ztab)
            best = min(best, time.perf_counter() - t0)
        print(f"{name:<11} n={n:>9,}  {best / args.draws * 1e9:6.2f} ns/draw")


if __name__ == "__main__":
    main()
