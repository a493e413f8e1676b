"""How long replaying a 60 s trace takes.

    python benchmarks/replay_speed.py

Records a 60 s trace at 10 samples a second of a 1 GiB process (benchmarks/_target.py) that
forks a child and writes 20,000 random pages a second while the child holds its pages, then
times Trace.scenario() (building the scenario) and Trace.replay() (building and simulating)
under cow, odf and eager, and with write_scale=2 (extrapolation included), each the best of 3.
"""
import os
import subprocess
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
from cowbench.real.trace import Tracer  # noqa: E402


def best(f, n=3):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = f()
        out.append(time.perf_counter() - t)
    return min(out), r


def main():
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "_target.py"), "1", "1", "child", "20000", "62"],
                         stdout=subprocess.PIPE, text=True)
    pid = int(p.stdout.readline())
    try:
        tr = Tracer(pid, 0.1).run(60)
    finally:
        p.kill()
        p.wait()
    print(tr, f"tracer {tr.meta['cpu_fraction']:.2f} of a core")
    warnings.simplefilter("ignore")                      # the scenario's approximation notes: printed once
    print("\n".join(f"note: {n}" for n in tr.replay().notes))
    s, sc = best(lambda: tr.scenario())
    print(f"scenario(): {s:.2f} s ({len(sc.ops):,} ops)")
    for knobs in ({"policy": "cow"}, {"policy": "odf"}, {"policy": "eager"}, {"write_scale": 2.0}):
        s, rp = best(lambda: tr.replay(**knobs))
        c = rp.cow_at_exit()
        print(f"replay({knobs}): {s:.2f} s; the child's COW at exit {c.uss_mib.iloc[0]:,.1f} MiB"
              + (f" ({rp.scenario.extrapolated_pages:,} first writes extrapolated)" if rp.scenario.extrapolated_pages else ""))


if __name__ == "__main__":
    main()
