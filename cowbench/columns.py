"""Every column cowbench reports, in one registry: its name, where it comes from, what it means.

Names follow the kernel's vocabulary: smaps (Rss, Pss; USS as smem names
it), vmstat (pgfault as minor_faults, pgreuse as cow_reuses), /proc status
(VmPTE as pte_pages). Counts are in pages unless the unit says otherwise.
A column read from an engine counter names the counter (`abi.C_*`);
results.py checks, by name, that every counter has exactly one column. This
module imports nothing of the engine, so plots and the real-kernel side can
use the names without compiling anything.
"""
from __future__ import annotations

from typing import NamedTuple

__all__ = ["Column", "PROCESS", "EVENTS", "MEMORY", "DESCRIPTORS", "TIME", "FILES", "PAGEMAP", "TIMELINE_TOTALS",
           "REAL_ONLY", "PROCESS_COLUMNS", "EVENT_NAMES", "MEMORY_NAMES", "TIMELINE_NAMES", "FILES_COLUMNS",
           "PAGEMAP_COLUMNS", "by_name"]


class Column(NamedTuple):
    name: str
    source: str           # an engine counter (C_*), a timeline entry (T_*), or how it is derived
    doc: str


PROCESS = (
    Column("pid", "scenario", "process id, 1 for the first spawned"),
    Column("name", "scenario", "the name given at spawn or fork"),
    Column("parent", "scenario", "pid of the process that forked it, 0 for a spawned one"),
    Column("state", "P_*", "running (a vfork parent still waiting included), exited, killed or fork_failed"),
    Column("reason", "R_*", "SIGSEGV or OOM for a killed process, else empty"),
)

# Per process and summed over the run (the run totals): the engine's event
# counters, in the order of their C_* indices.
EVENTS = (
    Column("minor_faults", "C_MINOR_FAULTS", "page faults the process took (vmstat pgfault, ru_minflt)"),
    Column("zero_fills", "C_ZERO_FILLS", "faults that allocated a zeroed page (do_anonymous_page; a shared "
                                         "page's first fault)"),
    Column("cow_copies", "C_COW_COPIES", "write faults that copied a shared page (wp_page_copy)"),
    Column("cow_reuses", "C_COW_REUSES", "write faults that reused the page in place (wp_page_reuse, pgreuse)"),
    Column("fork_pages_copied", "C_FORK_PAGES", "pages the fork that created it copied (eager; pinned pages)"),
    Column("fork_ptes_copied", "C_FORK_PTES", "PTEs the fork that created it copied (copy_pte_range)"),
    Column("fork_tables_copied", "C_FORK_TABLES", "PTE tables the fork that created it copied"),
    Column("fork_tables_shared", "C_FORK_TABLES_SHARED", "PTE tables the fork shared instead (odf)"),
    Column("fault_tables_copied", "C_FAULT_TABLES", "shared PTE tables its faults copied (odf)"),
    Column("fork_pmds_copied", "C_FORK_PMDS", "huge PMDs the fork that created it copied (copy_huge_pmd)"),
    Column("thp_fault_alloc", "C_THP_FAULT_ALLOC", "huge pages its faults allocated (vmstat thp_fault_alloc)"),
    Column("thp_copies", "C_THP_COPIES", "huge pages its writes copied whole (thp_cow='copy')"),
    Column("thp_splits", "C_THP_SPLITS", "huge PMDs split under it (vmstat thp_split_pmd)"),
    Column("enomem", "C_ENOMEM", "mmap, mprotect or fork calls refused with ENOMEM"),
    Column("exit_ptes_zapped", "C_EXIT_PTES", "PTEs mapping a page that its teardown of an address space (as "
                                               "its last user: exit, death or exec) walked (exit_mmap; under odf "
                                               "not those of tables still shared, dropped whole)"),
    Column("exit_pages_freed", "C_EXIT_FREED", "pages that teardown freed (no other mapping, cache or pin held them)"),
    Column("major_faults", "C_MAJOR_FAULTS", "faults that read their page from a file (ru_majflt; not counted in "
                                             "minor_faults, as the kernel counts them)"),
)

# Per process, as smaps_rollup and status would show them at the end of the
# run (or at the process's exit or death).
MEMORY = (
    Column("rss_pages", "C_RSS", "resident pages but the zero page (smaps Rss)"),
    Column("pss_pages", "proc_pss", "proportional set size: a page mapped by n processes adds 1/n (smaps Pss)"),
    Column("uss_pages", "C_USS", "pages mapped by this process only (smem USS)"),
    Column("shared_pages", "rss_pages - uss_pages", "resident pages another process maps too"),
    Column("pte_pages", "C_PTE_PAGES", "PTE tables of its address space (status VmPTE / 4 KiB)"),
    Column("anon_huge_pages", "C_ANON_HUGE", "PMD-mapped transparent huge pages (smaps AnonHugePages / 2 MiB)"),
    Column("anon_pages", "C_ANON_PAGES", "resident anonymous pages, private copies of file pages included "
                                         "(status RssAnon, smaps Anonymous)"),
    Column("file_pages", "C_FILE_PAGES", "resident page-cache pages of files it maps (status RssFile)"),
    Column("shmem_pages", "C_SHMEM_PAGES", "resident pages of shared anonymous mappings (status RssShmem)"),
    Column("private_clean_pages", "C_PRIVATE_CLEAN", "resident pages mapped once and clean: page-cache pages "
                                                     "not written since read (smaps Private_Clean)"),
    Column("private_dirty_pages", "C_PRIVATE_DIRTY", "resident pages mapped once and dirty: every anonymous "
                                                     "page, written page-cache pages (smaps Private_Dirty)"),
    Column("shared_clean_pages", "C_SHARED_CLEAN", "resident clean pages another process maps too "
                                                   "(smaps Shared_Clean)"),
    Column("shared_dirty_pages", "C_SHARED_DIRTY", "resident dirty pages another process maps too, such as "
                                                   "anonymous pages shared copy-on-write (smaps Shared_Dirty)"),
)

# Per process, from its descriptor table (cowbench/files.py), tracked as the ops are recorded.
DESCRIPTORS = (
    Column("open_fds", "fd table", "descriptors open at the end of the run, or just before its exit or death "
                                   "(status FDSize counts slots; this counts descriptors, as ls /proc/PID/fd)"),
    Column("fork_fds_copied", "fd table", "descriptors the fork that created it copied (dup_fd; 0 if spawned "
                                          "or if the fork failed)"),
)

# Per process, from the cost model (costs.CostModel).
TIME = (
    Column("fork_ns", "CostModel.fork_ns", "estimated latency of the fork that created it (NaN if spawned)"),
    Column("est_time_ns", "CostModel.faults_ns", "estimated time of its own faults"),
    Column("exit_ns", "CostModel.exit_ns", "estimated time of the address-space teardowns it did (exit, exec)"),
)

# res.files: one row per (process, descriptor).
FILES = (
    Column("pid", "scenario", "the process holding the descriptor"),
    Column("name", "scenario", "its name"),
    Column("fd", "fd table", "the descriptor number (lowest free at open and dup, as POSIX says)"),
    Column("file", "Scenario.file", "the file's name"),
    Column("description", "fd table", "the open file description (struct file) it points at: descriptors "
                                      "with the same number share one offset (fork, dup)"),
    Column("mode", "open", "the mode it was opened with (Python's spelling: r, r+, w, w+, a, a+)"),
    Column("offset", "fd table", "the description's offset, in bytes"),
    Column("cloexec", "open", "O_CLOEXEC: exec closes it"),
)

# res.pagemap(proc): one row per present page of a process at the end of the run (or just before its exit).
PAGEMAP = (
    Column("region", "Scenario", "the region's name"),
    Column("page", "page table", "the page's index in the region"),
    Column("frame", "page table", "the frame it maps: the simulated PFN (0: the zero page), or <NA> for a page "
                                  "only this process maps that the engine holds without a frame id"),
    Column("exclusive", "frame_mapcount", "mapped once (pagemap bit 56, PM_MMAP_EXCLUSIVE)"),
    Column("file_backed", "FF_CACHE", "a page of a file's or of shmem's page cache (pagemap bit 61)"),
    Column("huge", "tab_huge", "mapped by a huge PMD"),
    Column("dirty", "F5", "dirty as smaps counts it (docs/semantics.md F5)"),
    Column("writable", "PTE W", "its PTE allows a write without a fault"),
)

# The timeline: after every op, the run totals (EVENTS), then these.
TIMELINE_TOTALS = (
    Column("frames_used", "T_FRAMES_USED", "pages of physical memory in use, page tables included"),
    Column("processes_running", "T_RUNNING", "processes running or suspended by vfork"),
    Column("forks", "T_FORKS", "forks and vforks so far"),
    Column("pte_frames", "T_PTE_FRAMES", "page-table pages in use"),
)

# run_real (cowbench/real/) measures these beside the simulator's columns, as cross-checks.
REAL_ONLY = (
    Column("baseline_faults", "getrusage", "the interpreter's own faults around an empty touch loop, subtracted"),
    Column("smaps_rss_pages", "smaps", "Rss of the scenario's VMAs in /proc/PID/smaps, in pages"),
    Column("smaps_pss_pages", "smaps", "Pss of the scenario's VMAs (to 1 kB)"),
    Column("smaps_uss_pages", "smaps", "Private_Clean + Private_Dirty of the scenario's VMAs"),
    Column("smaps_anon_huge_pages", "smaps", "AnonHugePages of the scenario's VMAs / 2 MiB"),
    Column("vmstat_thp_split_pmd", "vmstat", "system-wide thp_split_pmd delta around the process's touches"),
    Column("pin_errno", "io_uring", "errno of the last pin's buffer registration (0: pinned)"),
    Column("real_pid", "kernel", "the real process's pid (0 for a vfork child borrowing its parent's)"),
)

EVENT_NAMES = tuple(c.name for c in EVENTS)
MEMORY_NAMES = tuple(c.name for c in MEMORY)
TIMELINE_NAMES = EVENT_NAMES + tuple(c.name for c in TIMELINE_TOTALS)
#: res.processes, in order: who, the four fault counts, memory, then the rest
PROCESS_COLUMNS = (tuple(c.name for c in PROCESS) + EVENT_NAMES[:4] + MEMORY_NAMES + EVENT_NAMES[4:]
                   + tuple(c.name for c in DESCRIPTORS) + tuple(c.name for c in TIME))
FILES_COLUMNS = tuple(c.name for c in FILES)
PAGEMAP_COLUMNS = tuple(c.name for c in PAGEMAP)

_ALL = {c.name: c for c in FILES + PAGEMAP + PROCESS + EVENTS + MEMORY + DESCRIPTORS + TIME + TIMELINE_TOTALS
        + REAL_ONLY}


def by_name(name: str) -> Column:
    """The registry entry of a column (KeyError for a name cowbench does not report)."""
    return _ALL[name]
