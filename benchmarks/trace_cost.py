"""What tracing costs: the tracer's CPU time while it samples a 4 GiB process 10 times a second.

    python benchmarks/trace_cost.py [GIB]

The target (benchmarks/_target.py) holds GIB GiB (default 4) of 4 KiB pages and writes 20,000
random pages a second; the tracer samples it every 0.1 s for 10 s, in this process, and its
CPU time (getrusage RUSAGE_THREAD of the tracing thread) divided by the wall time is the
share of a core it took; "reading the pagemap alone" is one plain read of the process's
whole pagemap (the kernel's share: the floor of any tracer of this kind). Three cases: the process alone (it does not fork), with a probe (a
stopped child holds its pages: cowbench.real.probe_fork; not sampled) and with a forked
child (sampled too: two processes of GIB GiB each); then the last two again with max_cpu=0.5
(the tracer spaces its samples out to stay within half a core).
"""
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
from cowbench.real.procfs import Pagemap, read_smaps  # noqa: E402
from cowbench.real.trace import Tracer  # noqa: E402


def pagemap_floor(pid: int, reps: int = 10) -> float:
    """Median CPU seconds of reading the whole pagemap of pid once (what the kernel charges)."""
    vmas = [v for v in read_smaps(pid, maps_only=True) if v["start"] < 1 << 47 and "[vvar" not in v["path"]]
    out = []
    with Pagemap(pid) as pm:
        for _ in range(reps):
            c = time.thread_time()
            for v in vmas:
                pm.read(v["start"] >> 12, (v["end"] - v["start"]) >> 12)
            out.append(time.thread_time() - c)
            time.sleep(0.05)
    return sorted(out)[len(out) // 2]


def main():
    gib = sys.argv[1] if len(sys.argv) > 1 else "4"
    for mode, budget in (("none", None), ("probe", None), ("child", None), ("probe", 0.5), ("child", 0.5)):
        p = subprocess.Popen([sys.executable, os.path.join(HERE, "_target.py"), gib, gib, mode, "20000", "14"],
                             stdout=subprocess.PIPE, text=True)
        pid = int(p.stdout.readline())
        try:
            time.sleep(0.5)
            floor = pagemap_floor(pid)
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            tr = Tracer(pid, 0.1, max_cpu=budget).run(10)
            r1 = resource.getrusage(resource.RUSAGE_SELF)
        finally:
            p.kill()
            p.wait()
        m = tr.meta
        per = tr.samples.groupby("sample").tracer_cpu_s.sum()
        proc = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / m["seconds"]
        print(f"{gib} GiB, {mode:>5}{'' if budget is None else f', max_cpu {budget}'}: {m['samples']} samples in {m['seconds']:.1f} s "
              f"({m['samples'] / m['seconds']:.1f}/s); tracer thread {m['cpu_fraction']:.2f} of a core "
              f"(whole process {proc:.2f}); per sample median {per.median() * 1000:.0f} ms CPU, of which reading "
              f"the pagemap alone {floor * 1000:.0f} ms", flush=True)


if __name__ == "__main__":
    main()
