"""A target process for the real-process benchmarks (run by path: stdlib + NumPy only).

    python benchmarks/_target.py GIB RESIDENT_GIB MODE RATE SECONDS [THP]

Maps GIB GiB of private anonymous memory (MADV_NOHUGEPAGE unless THP=1), writes the first
RESIDENT_GIB of it, then MODE: "none" (does not fork), "probe" (cowbench.real.probe_fork: a
stopped child holds the pages) or "child" (a forked child that sleeps); prints its pid and
then writes RATE random resident pages a second for SECONDS (0: sleeps instead)."""
import mmap
import os
import signal
import sys
import time

import numpy as np

G = 1 << 30
gib, res, mode, rate, seconds = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
thp = len(sys.argv) > 6 and sys.argv[6] == "1"
m = mmap.mmap(-1, int(gib * G), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x4000)   # MAP_NORESERVE
m.madvise(14 if thp else 15)
a = np.frombuffer(m, np.uint8)
n = int(res * G) // 4096
a[: n * 4096: 4096] = 1
if mode == "probe":                              # probe.py by path: this process imports nothing of cowbench
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "probe", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cowbench", "real", "probe.py"))
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    probe.probe_fork()
elif mode == "child":
    if os.fork() == 0:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)     # PR_SET_PDEATHSIG: die with the parent
        if os.getppid() == 1:
            os._exit(0)
        signal.pause()
        os._exit(0)
print(os.getpid(), flush=True)
rng = np.random.default_rng(1)
t0 = time.monotonic()
step = 0.1
while time.monotonic() - t0 < seconds:
    if rate:
        a[rng.integers(0, n, int(rate * step)) * 4096] += 1
    time.sleep(step)
if not seconds:
    signal.pause()
