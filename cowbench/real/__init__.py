"""The real-process side: scenarios run on this machine's Linux kernel, and what /proc says.

    coordinator  run_real(sc): a Scenario as real forked processes, measured from outside
    worker       one real process of a scenario, driven over a socket
    procfs       pagemap, PAGEMAP_SCAN, vmstat
    libc         the system calls, through ctypes
    validate     `cowbench validate`: the simulator against run_real, scenario by scenario
    calibrate    `cowbench calibrate`: this host's fork and fault costs, as a CostModel

Nothing here imports the jitted engine but validate (which runs both sides).
"""
from .coordinator import COLUMNS, KernelUnavailable, run_real
from .procfs import pagemap_readable, thp_usable
from .worker import pins_usable

__all__ = ["run_real", "KernelUnavailable", "COLUMNS", "pagemap_readable", "thp_usable", "pins_usable"]
