"""The real-process side: scenarios run on this machine's Linux kernel, and what /proc says.

    coordinator  run_real(sc): a Scenario as real forked processes, measured from outside
    worker       one real process of a scenario, driven over a socket
    procfs       pagemap, PAGEMAP_SCAN, vmstat
    libc         the system calls, through ctypes
    validate     `cowbench validate`: the simulator against run_real, scenario by scenario
    calibrate    `cowbench calibrate`: this host's fork and fault costs, as a CostModel
    snapshot     `cb.snapshot(pid)`, `cowbench snapshot`: a live process's layout and resident set
    trace        `cb.trace(pid)`, `cowbench trace`: a live process tree's page events over time
    replay       a trace as a scenario, with what-ifs (Trace.scenario, Trace.replay)
    predict      `cowbench predict`: fork latency, page tables, COW memory over time, per policy
    probe        probe_fork(): a stopped child that holds a process's pages, for tracing its writes
    layout       VMA kinds, the kernel's fork rules and page tables on a real layout

Nothing here imports the jitted engine but validate (which runs both sides).
"""
from .coordinator import COLUMNS, KernelUnavailable, run_real
from .procfs import device_readahead, files_dir, files_usable, pagemap_readable, thp_usable
from .probe import end_probe, probe_fork
from .worker import pins_usable

__all__ = ["run_real", "KernelUnavailable", "COLUMNS", "pagemap_readable", "thp_usable", "pins_usable", "files_usable",
           "device_readahead", "files_dir",
           "probe_fork", "end_probe"]
