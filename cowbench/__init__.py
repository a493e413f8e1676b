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
from .scenario import Process, Region, Scenario

__version__ = "0.1.0"
__all__ = ["Scenario", "Process", "Region", "Result", "ScenarioError", "CostModel", "simulate", "POLICIES",
           "Pattern", "uniform", "zipf", "sequential", "hotset"]
