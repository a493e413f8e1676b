"""A process ends: exit, SIGSEGV or the OOM killer (kernel/exit.c do_exit, exit_mm).

Its memory columns freeze as they stand (task_mmu.freeze_memory), a vfork
parent waiting for it wakes, its address space loses a user (the last one
tears it down: mmap.mmput), and its pins go.
"""
from __future__ import annotations

from numba import njit

from .abi import C_EXIT_FREED, G_EPOCH, G_FRAMES_USED, G_RUNNING, P_RUNNING, P_SUSPENDED
from .machine import count_events
from .gup import unpin_all
from .mmap import mmput
from .task_mmu import freeze_memory


@njit(cache=True)
def do_exit(m, pid, state, reason):
    """pid ends in state (P_EXITED, P_KILLED) for reason (R_*). (Callers
    pass np.int8 values, not literals: a literal argument makes Numba compile
    a function once per value.)"""
    m.g[G_EPOCH] += 1
    freeze_memory(m, pid)
    m.proc_state[pid] = state
    m.proc_reason[pid] = reason
    m.g[G_RUNNING] -= 1
    wake_vfork_parent(m, pid)
    mmput(m, pid, m.proc_mm[pid])
    used = m.g[G_FRAMES_USED]
    unpin_all(m, pid)                       # pages the teardown left to their pins go now
    count_events(m.ctr, m.totals, pid, C_EXIT_FREED, used - m.g[G_FRAMES_USED])


@njit(cache=True)
def wake_vfork_parent(m, pid):
    """pid execs or ends: a parent suspended in vfork for it runs again (mm_release)."""
    parent = m.proc_vparent[pid]
    if parent != 0:
        if m.proc_state[parent] == P_SUSPENDED:
            m.proc_state[parent] = P_RUNNING
        m.proc_vparent[pid] = 0
