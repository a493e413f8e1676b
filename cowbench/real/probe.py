"""A probe fork: a stopped child that holds a process's pages, so that every page the process
writes afterwards turns exclusive in its pagemap (bit 56) and a tracer outside sees its write
set over time, although the process itself never forks.

    import cowbench.real
    pid = cowbench.real.probe_fork()        # in the traced program, e.g. after it loaded its data
    ...                                     # `cowbench trace` samples it; the probe is skipped
    cowbench.real.end_probe(pid)            # or let it die with the program

The probe is a fork of the calling process that names itself `cowbench-probe`
(prctl PR_SET_NAME, so the tracer recognises it), asks to be killed when its parent dies
(PR_SET_PDEATHSIG) and stops itself (SIGSTOP) at once: it runs a few instructions of the
interpreter after fork returns, so it may copy a handful of the interpreter's own pages
(the tracer, as root, tells those from the parent's writes by their frame numbers).
Nothing is injected into a program that does not call this: a program that is not Python
needs its own fork (ptrace injection is out of scope). For a Python program started by
`cowbench trace --probe AFTER -- python3 prog.py`, the tracer sets COWBENCH_PROBE_AFTER=AFTER
and puts a sitecustomize on PYTHONPATH that loads this file by path and calls probe_fork()
AFTER seconds after start, from a timer thread (see probe_site/).
"""
from __future__ import annotations

import ctypes
import os
import signal

# This module imports nothing of cowbench (its own ctypes handle, not .libc): a program that only
# wants a probe can load the file by path without importing cowbench, NumPy or Numba
# (`cowbench trace --probe` does that, and so does benchmarks/_target.py).
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

__all__ = ["probe_fork", "end_probe", "PROBE_NAME"]

PROBE_NAME = b"cowbench-probe"
PR_SET_NAME, PR_SET_PDEATHSIG = 15, 1


def probe_fork() -> int:
    """Fork a stopped probe child holding this process's pages; returns its pid."""
    pid = os.fork()
    if pid == 0:                                  # the probe: name, tie to the parent, stop
        try:
            libc.prctl(PR_SET_NAME, ctypes.cast(ctypes.c_char_p(PROBE_NAME), ctypes.c_void_p).value, 0, 0, 0)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            while True:
                os.kill(os.getpid(), signal.SIGSTOP)
        finally:
            os._exit(0)
    return pid


def end_probe(pid: int) -> None:
    """Kill a probe and reap it."""
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
