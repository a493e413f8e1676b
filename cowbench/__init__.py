"""cowbench: predict what fork() costs.

    import cowbench as cb
    sc = cb.Scenario(phys_mem="1GiB")
    root = sc.spawn("root")
    heap = root.mmap("heap", "64MiB")
    root.write(heap)
    kid = root.fork("kid")
    kid.write(heap, pages=range(0, 100))
    res = cb.simulate(sc, policy="cow")
    res.processes

Real processes (Linux, /proc): cb.snapshot(pid) reads one's address space and resident set,
cb.trace(pid, seconds=10) samples a process tree's pagemap while it forks and writes, and
cb.Trace.load / cb.Snapshot.load read them back (cowbench/real/).

Set COWBENCH_BOUNDSCHECK=1 before importing to run the jitted kernels with
bounds checking (compiled into a separate cache).
"""
import os as _os

if _os.environ.get("COWBENCH_BOUNDSCHECK", "") not in ("", "0"):
    _os.environ["NUMBA_BOUNDSCHECK"] = "1"
    _os.environ.setdefault("NUMBA_CACHE_DIR", _os.path.join(_os.path.expanduser("~"), ".cache", "cowbench-boundscheck"))
    import numba.core.config as _nbconfig

    _nbconfig.reload_config()

from ._params import ScenarioError
from .costs import CostModel
from .simulator import POLICIES, simulate
from .patterns import Pattern, hotset, sequential, uniform, zipf
from .results import Result
from .scenario import Image, Process, Program, Region, Scenario

__version__ = "0.1.0"
__all__ = ["Scenario", "Process", "Region", "Program", "Image", "Result", "ScenarioError", "CostModel", "simulate",
           "POLICIES", "Pattern", "uniform", "zipf", "sequential", "hotset", "snapshot", "Snapshot", "trace", "Trace"]

# The real-process side loads on first use (it reads /proc; the simulator does not need it).
_REAL = {"snapshot": ("cowbench.real.snapshot", "snapshot"), "Snapshot": ("cowbench.real.snapshot", "Snapshot"),
         "trace": ("cowbench.real.trace", "trace"), "Trace": ("cowbench.real.trace", "Trace")}


def __getattr__(name):
    if name in _REAL:
        import importlib

        mod, attr = _REAL[name]
        value = getattr(importlib.import_module(mod), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cowbench' has no attribute {name!r}")
