"""`cowbench validate`: the simulator against the real kernel, scenario by scenario.

Every scenario below is a small `cb.Scenario` (about 4 MiB) that exercises one
rule of docs/semantics.md. `validate()` runs each one twice: by the
simulator (`cb.simulate(sc, policy="cow")`) and as real processes on this
kernel (`cowbench.real.run_real`), and compares, process by process, the
columns both sides measure. The kernel is the ground truth: a MISMATCH means
the simulator is wrong (or the scenario asks the kernel something run_real
cannot emulate; see cowbench/real/coordinator.py).

    cowbench validate                 # all scenarios, exit status 1 on any mismatch
    cowbench validate --list
    cowbench validate chain_root_mid_leaf shared_child_writes -v
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import pandas as pd

from ..columns import by_name
from ..scenario import Scenario
from .coordinator import THP_COLUMNS

__all__ = ["SCENARIOS", "COMPARED", "KNOWN_DISAGREEMENTS", "validate", "not_compared", "main"]

N = 1000            # pages per region: 4 MB with 4 KiB pages, not a 2 MiB multiple
CHILD_WRITES = 300  # pages a child writes
HUGE = 512          # pages per 2 MiB huge page
PHYS = "256MiB"
RUNS = 3            # runs a scenario gets before a mismatch is reported (see validate)

# Columns compared between simulator and kernel. zero_fills, cow_copies,
# cow_reuses and fork_pages_copied need PFNs (root), the THP columns need
# PAGEMAP_SCAN (Linux >= 6.7); where the kernel side cannot measure a column it
# is NaN and not compared.
COMPARED = ["state", "reason", "minor_faults", "rss_pages", "pss_pages", "uss_pages", "shared_pages",
            "zero_fills", "cow_copies", "cow_reuses", "fork_ptes_copied", "fork_pages_copied",
            "fork_pmds_copied", "anon_huge_pages", "thp_fault_alloc", "thp_copies", "thp_splits", "major_faults",
            "anon_pages", "file_pages", "shmem_pages", "private_clean_pages", "private_dirty_pages",
            "shared_clean_pages", "shared_dirty_pages"]
assert all(by_name(c) for c in COMPARED)          # every one a column of the registry
PFN_COLUMNS = ["zero_fills", "cow_copies", "cow_reuses", "fork_pages_copied"]
THP_SHOWN = ["anon_huge_pages", "thp_splits", "thp_fault_alloc", "thp_copies", "fork_pmds_copied"]

# Scenarios where this kernel (Linux 6.18) was seen to disagree with the rules of
# docs/semantics.md. The simulator is what must change; until it does, these
# scenarios report MISMATCH and the tests expect them to (strictly: a fix turns
# the expected failure into a test failure that says to drop the entry here).
KNOWN_DISAGREEMENTS: dict[str, str] = {}   # scenario -> why the kernel and the rules differ; none today


def _sc() -> Scenario:
    return Scenario(phys_mem=PHYS, page_size=4096)


# --------------------------------------------------------------------------- scenarios
def zero_page_read_then_write() -> Scenario:
    """Reading never-written private memory maps the zero page (N faults, RSS
    unchanged); writing it afterwards takes N more faults and N zero fills."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", N * 4096)
    only_read = root.mmap("only_read", N * 4096)
    root.read(heap)
    root.read(only_read)                # stays out of RSS
    root.write(heap)
    root.read(heap)                     # present: no faults
    return sc


def cow_child_writes_k() -> Scenario:
    """fork, the child writes CHILD_WRITES of N shared pages: CHILD_WRITES faults, CHILD_WRITES copies; its private
    pages grow by CHILD_WRITES, its shared pages are N - CHILD_WRITES."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", N * 4096)
    root.write(heap)
    kid = root.fork("kid")
    kid.write(heap, pages=range(0, CHILD_WRITES))
    return sc


def reuse_after_child_exit() -> Scenario:
    """After the child exits the parent's write-protected pages are mapped once:
    writing all N takes N faults, N reuses, no copies."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", N * 4096)
    root.write(heap)
    kid = root.fork("kid")
    kid.write(heap, pages=range(0, CHILD_WRITES))
    kid.exit()
    root.write(heap)
    return sc


def chain_root_mid_leaf() -> Scenario:
    """root -> mid -> leaf: leaf writes all (N copies), exits; mid writes all (N
    copies, still shared with root), exits; root writes all (N reuses)."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", N * 4096)
    root.write(heap)
    mid = root.fork("mid")
    leaf = mid.fork("leaf")
    leaf.write(heap)
    leaf.exit()
    mid.write(heap)
    mid.exit()
    root.write(heap)
    return sc


def zero_page_fork() -> Scenario:
    """Zero-page PTEs at fork. `untouched` was only ever read (no anonymous page,
    so the kernel's VMA has no anon_vma and fork copies none of its PTEs: the
    child's reads fault again); `mixed` had page 0 written, so fork copies all its
    PTEs, zero-page ones included (the child's reads cost nothing)."""
    sc = _sc()
    root = sc.spawn("root")
    untouched = root.mmap("untouched", N * 4096)
    mixed = root.mmap("mixed", N * 4096)
    root.read(untouched)
    root.write(mixed, pages=range(0, 1))
    root.read(mixed, pages=range(1, N))
    kid = root.fork("kid")
    kid.read(untouched)
    kid.read(mixed)
    kid.write(untouched, pages=range(0, CHILD_WRITES))
    kid.write(mixed, pages=range(1, CHILD_WRITES))
    root.write(untouched, pages=range(0, CHILD_WRITES))
    return sc


def shared_child_writes() -> Scenario:
    """MAP_SHARED: fork copies no PTEs; the child's first write to each page is one
    minor fault, no copies; both see the same frames (PSS halves)."""
    sc = _sc()
    root = sc.spawn("root")
    shm = root.mmap("shm", N * 4096, shared=True)
    root.write(shm)
    kid = root.fork("kid")
    kid.write(shm)
    kid.write(shm)                      # writable already: no faults
    return sc


def shared_child_reads() -> Scenario:
    """MAP_SHARED read faults: the child reads pages the parent populated (the
    kernel's fault-around maps up to 16 cached neighbours per read fault), then
    writes them (a read fault on a shared writable mapping maps it writable:
    no more faults)."""
    sc = _sc()
    root = sc.spawn("root")
    shm = root.mmap("shm", N * 4096, shared=True)
    root.write(shm, pages=range(0, N // 2))
    kid = root.fork("kid")
    kid.read(shm)                       # first half: in the page cache; second half: new frames
    kid.write(shm)
    return sc


def dontfork_segv() -> Scenario:
    """MADV_DONTFORK: the region is absent in the child; touching it kills the
    child with SIGSEGV. The child's other memory is intact up to its death."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", N * 4096)
    secret = root.mmap("secret", N * 4096)
    root.write(heap)
    root.write(secret)
    root.madvise(secret, "dontfork")
    kid = root.fork("kid")
    kid.write(heap, pages=range(0, CHILD_WRITES))
    kid.read(secret, pages=range(0, 1))
    kid2 = root.fork("kid2")            # still dontfork: kid2 is fine until it touches
    kid2.read(heap)
    root.madvise(secret, "dofork")
    kid3 = root.fork("kid3")
    kid3.read(secret)                   # inherited again: copied PTEs, no faults
    return sc


def wipeonfork_grandchild() -> Scenario:
    """MADV_WIPEONFORK: the child sees zero-filled memory (reads map the zero page:
    N faults, RSS 0); the flag is inherited, so the grandchild sees zeroes too;
    MADV_KEEPONFORK undoes it."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", N * 4096)
    root.write(heap)
    root.madvise(heap, "wipeonfork")
    kid = root.fork("kid")
    kid.read(heap)
    kid.write(heap, pages=range(0, CHILD_WRITES))
    grandkid = kid.fork("grandkid")
    grandkid.read(heap)
    root.madvise(heap, "keeponfork")
    kid2 = root.fork("kid2")
    kid2.read(heap)
    return sc


def readonly_write_segv() -> Scenario:
    """A write to a read-only region kills the writer with SIGSEGV; nothing is
    copied. Both a region mapped read-only and one mprotect'ed read-only after
    being written."""
    sc = _sc()
    root = sc.spawn("root")
    ro = root.mmap("ro", N * 4096, prot="r")
    heap = root.mmap("heap", N * 4096)
    root.write(heap)
    root.mprotect(heap, "r")
    kid = root.fork("kid")
    kid.read(heap)
    kid.write(heap, pages=range(0, 1))
    kid2 = root.fork("kid2")
    kid2.write(ro, pages=range(5, 6))
    root.read(ro)                       # zero page: N faults, RSS unchanged
    return sc


def vfork_exec() -> Scenario:
    """vfork: the child borrows the parent's address space (its touches are the
    parent's memory, no copies), the parent waits; after the child's exec the
    parent's pages are still writable: rewriting them costs nothing."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", N * 4096)
    root.write(heap, pages=range(0, N // 2))
    kid = root.vfork("kid")
    kid.write(heap, pages=range(0, CHILD_WRITES))             # already writable: no faults
    kid.read(heap, pages=range(N // 2, N))         # zero page, in the shared mm
    kid.exec()
    own = kid.mmap("own", 100 * 4096)
    kid.write(own)
    root.write(heap)                               # 0 faults for the first half, zero fills for the rest
    kid2 = root.vfork("kid2")
    kid2.exit()
    return sc


def pss_three_sharers() -> Scenario:
    """PSS: a page mapped by n processes adds 1/n to each one's PSS; USS counts the
    pages mapped only by that process."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", N * 4096)
    root.write(heap)
    a = root.fork("a")
    b = root.fork("b")
    a.write(heap, pages=range(0, CHILD_WRITES))
    b.write(heap, pages=range(CHILD_WRITES // 2, CHILD_WRITES + CHILD_WRITES // 2))
    return sc


def exec_after_fork() -> Scenario:
    """exec releases the child's copy of the address space: the parent's pages go
    back to one mapping, so the parent's writes are reuses, not copies."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", N * 4096)
    root.write(heap)
    kid = root.fork("kid")
    kid.write(heap, pages=range(0, CHILD_WRITES))
    kid.exec()
    own = kid.mmap("own", 200 * 4096)
    kid.write(own)
    root.write(heap)
    return sc


def mprotect_private() -> Scenario:
    """mprotect r then rw: exclusively owned pages become writable again (no
    faults); pages write-protected by a fork are not (one fault each)."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", N * 4096)
    root.write(heap)
    root.mprotect(heap, "r")
    root.mprotect(heap, "rw")
    root.write(heap)                    # 0 faults
    kid = root.fork("kid")
    kid.exit()
    root.mprotect(heap, "r")
    root.mprotect(heap, "rw")
    root.write(heap)                    # N faults, N reuses (lost exclusivity at fork)
    return sc


def mprotect_shared() -> Scenario:
    """mprotect r then rw on a MAP_SHARED anonymous region (shmem needs no write
    notification, so its PTEs become writable again at once)."""
    sc = _sc()
    root = sc.spawn("root")
    shm = root.mmap("shm", N * 4096, shared=True)
    root.write(shm)
    root.mprotect(shm, "r")
    root.mprotect(shm, "rw")
    root.write(shm)
    return sc


def munmap_after_fork() -> Scenario:
    """The parent unmaps its copy after fork: the child's pages are mapped once
    again, so its writes are reuses."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", N * 4096)
    root.write(heap)
    kid = root.fork("kid")
    root.munmap(heap)
    kid.write(heap)
    return sc


def cow_random_pattern() -> Scenario:
    """Touch patterns: the child writes 2000 uniformly drawn pages (repeats
    included) and reads a zipf sample; only the first write to each distinct
    page faults (and copies)."""
    from ..patterns import uniform, zipf

    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", N * 4096)
    root.write(heap, pages=np.arange(0, N, 2))        # even pages: frames; odd pages: none yet
    kid = root.fork("kid")
    kid.write(heap, pages=uniform(count=2000, seed=7))
    kid.read(heap, pages=zipf(count=3000, s=1.1, seed=3))
    return sc


# --- transparent huge pages (need THP from the host: skipped if it refuses) ---
def thp_first_touch() -> Scenario:
    """THP first touch: writing a 4 MiB MADV_HUGEPAGE region takes 2 faults and
    maps 2 huge pages (thp_fault_alloc 2, RSS 1024); reading it again is free."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", 2 * HUGE * 4096, thp=True)
    root.write(heap)
    root.read(heap)
    return sc


def thp_zero_page_then_write() -> Scenario:
    """Reading a THP region maps the huge zero page: 1 fault per 2 MiB, RSS 0.
    Then a write of one page."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", 2 * HUGE * 4096, thp=True)
    root.read(heap)
    root.write(heap, pages=range(0, 1))
    return sc


def thp_fork_child_writes() -> Scenario:
    """fork copies each huge PMD as one entry; the child's write of one 4 KiB page
    splits its PMD (it loses one huge page) and copies that page only (1 fault);
    then the parent writes another page of the same 2 MiB range: split + copy."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", 2 * HUGE * 4096, thp=True)
    root.write(heap)
    kid = root.fork("kid")
    kid.write(heap, pages=range(0, 1))
    root.write(heap, pages=range(1, 2))
    return sc


def thp_rewrite_copied_page() -> Scenario:
    """After the child's write split and copied page 0, the parent writes page 0,
    which only it maps now."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", 2 * HUGE * 4096, thp=True)
    root.write(heap)
    kid = root.fork("kid")
    kid.write(heap, pages=range(0, 1))
    root.write(heap, pages=range(0, 1))
    return sc


def thp_reuse_after_child_exit() -> Scenario:
    """After the child (which split and copied one page) exits, the parent's huge
    pages are mapped once: writing all 4 MiB takes 2 faults, each reusing a whole
    huge page; they stay huge."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", 2 * HUGE * 4096, thp=True)
    root.write(heap)
    kid = root.fork("kid")
    kid.write(heap, pages=range(0, 1))
    kid.exit()
    root.write(heap)
    return sc


def thp_chain_root_mid_leaf() -> Scenario:
    """root -> mid -> leaf over huge pages, via madvise(hugepage): leaf and mid
    each split and copy every page; root then reuses its huge pages whole."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", 2 * HUGE * 4096)
    root.madvise(heap, "hugepage")
    root.write(heap)
    mid = root.fork("mid")
    leaf = mid.fork("leaf")
    leaf.write(heap)
    leaf.exit()
    mid.write(heap)
    mid.exit()
    root.write(heap)
    return sc


def thp_read_only_fork() -> Scenario:
    """A THP region that was only read (huge zero page) at fork; the child reads
    it."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", 2 * HUGE * 4096, thp=True)
    root.read(heap)
    kid = root.fork("kid")
    kid.read(heap)
    return sc


# --- pins (io_uring fixed buffers in the real processes) ---------------------
def pin_fork() -> Scenario:
    """Pinned pages (FOLL_LONGTERM) are copied for the child at fork and stay
    writable in the parent: the parent rewrites them without faults, unpinned
    pages still COW; the child's copies are its own (no faults). After unpin,
    the next fork shares those pages again."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", N * 4096)
    root.write(heap)
    root.pin(heap, pages=range(0, 4))
    kid = root.fork("kid")
    root.write(heap, pages=range(0, 8))          # 0..3: no faults; 4..7: COW
    kid.read(heap, pages=range(0, 4))
    kid.write(heap, pages=range(0, 4))           # its own copies: no faults
    kid.write(heap, pages=range(8, 12))
    root.unpin(heap, pages=range(2, 4))
    kid2 = root.fork("kid2")                     # only pages 0, 1 are copied
    kid2.write(heap, pages=range(0, 4))
    kid.exit()
    return sc


def pin_fresh_pages() -> Scenario:
    """Pinning never-touched pages zero-fills them, and pinning a page shared
    after fork copies it (GUP's write-intent faults)."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", N * 4096)
    root.pin(heap, pages=range(0, 4))
    root.write(heap, pages=range(4, 8))
    kid = root.fork("kid")
    root.pin(heap, pages=range(4, 5))
    kid.write(heap, pages=range(4, 8))
    return sc


def pin_thp_fork() -> Scenario:
    """fork of a huge page with one pinned subpage."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", 2 * HUGE * 4096, thp=True)
    root.write(heap)
    root.pin(heap, pages=range(0, 1))
    kid = root.fork("kid")
    kid.write(heap, pages=range(0, 2))
    root.write(heap, pages=range(0, 3))
    return sc


# --------------------------------------------------------------------------- files (rules F1-F5)
# run_real makes each scenario file a real file on disk (cowbench.real.files_dir()), written in
# writes of its folio size and fsynced; an uncached one is then evicted (POSIX_FADV_DONTNEED).

def file_text_shared() -> Scenario:
    """A cached file mapped read-only, as a program's text: reads fault around
    (N / 16 faults); a forked child maps none of it (no anon_vma: fork copies no
    PTE) and faults around too; both map the same page-cache frames (pss halves)."""
    sc = _sc()
    lib = sc.file("lib", N * 4096)
    root = sc.spawn("root")
    text = root.mmap("text", N * 4096, file=lib, prot="rx")
    root.read(text)
    kid = root.fork("kid")
    kid.read(text)
    return sc


def file_private_write_copies() -> Scenario:
    """A private writable file mapping, as a program's data: a first write copies
    the file page (do_cow_fault), a write after a read copies it too (wp_page_copy),
    never reusing a page-cache page; after fork the child's writes copy, and the
    parent then reuses the anonymous pages only it maps."""
    sc = _sc()
    f = sc.file("data", N * 4096)
    root = sc.spawn("root")
    data = root.mmap("data", N * 4096, file=f, prot="rw")
    root.write(data, pages=range(0, CHILD_WRITES))
    root.read(data)
    root.write(data, pages=range(CHILD_WRITES, 2 * CHILD_WRITES))
    kid = root.fork("kid")
    kid.write(data, pages=range(0, 100))
    kid.write(data, pages=range(800, 900))
    root.write(data, pages=range(0, 100))
    return sc


def file_shared_write() -> Scenario:
    """A MAP_SHARED file mapping: reads fault around and map read-only, the first
    write of each page faults (the page turns dirty) and copies nothing; a child
    maps none of it after fork, and its writes and reads find the page cache's pages."""
    sc = _sc()
    f = sc.file("shared", N * 4096)
    root = sc.spawn("root")
    sh = root.mmap("sh", N * 4096, file=f, shared=True)
    root.read(sh)
    root.write(sh, pages=range(0, CHILD_WRITES))
    kid = root.fork("kid")
    kid.write(sh, pages=range(0, 100))
    kid.read(sh, pages=range(500, 600))
    return sc


def file_uncached_major() -> Scenario:
    """Files not in the page cache: the first read of a page is a major fault,
    whose read-around (the disk's read_ahead_kb) reads the small file in whole,
    and whose retry maps the fault-around block; a read elsewhere in the file is
    minor. (Each file's first read is at its page 0, so that the block's reads
    complete together: in the middle of a window the retry may find only some
    of its neighbours read, a timing the model does not follow.)"""
    from .procfs import device_readahead, files_dir

    ra = device_readahead(files_dir()) or 128 << 10
    sc = _sc()
    root = sc.spawn("root")
    for i in range(3):
        f = sc.file(f"cold{i}", 64 * 4096, cached=False, readahead=ra)
        cold = root.mmap(f"cold{i}", 64 * 4096, file=f, prot="r")
        root.read(cold, pages=[0])
        root.read(cold, pages=[40, 41])
    return sc


def file_folio_pmd() -> Scenario:
    """A cached file written in 2 MiB writes is held in 2 MiB page-cache folios,
    and a read fault maps a whole folio: one fault per 2 MiB."""
    sc = _sc()
    f = sc.file("big", 4 * HUGE * 4096, folio="2MiB")
    root = sc.spawn("root")
    m = root.mmap("big", 4 * HUGE * 4096, file=f, prot="r")
    root.read(m)
    return sc


def file_folio_dirty() -> Scenario:
    """smaps' Dirty is the folio's: a MAP_SHARED write of one page of a file
    held in 2 MiB folios dirties its whole folio, so a process that only read
    the file shows 512 pages Dirty, and the other folio Clean."""
    sc = _sc()
    f = sc.file("big", 2 * HUGE * 4096, folio="2MiB")
    root = sc.spawn("root")
    root.read(root.mmap("big", 2 * HUGE * 4096, file=f, prot="r"))
    writer = sc.spawn("writer")
    writer.write(writer.mmap("big", 2 * HUGE * 4096, file=f, shared=True), pages=[5])
    return sc


def shmem_write_after_read() -> Scenario:
    """A shmem page read first is mapped writable, so the write after it takes
    no fault: Linux keeps that page's dirtiness in the writer's PTE, and a
    process that only read it shows it Clean (until the writer unmaps it). The
    simulator marks the page dirty for every mapper (a known disagreement)."""
    sc = _sc()
    root = sc.spawn("root")
    shm = root.mmap("shm", N * 4096, shared=True)
    root.read(shm)
    kid = root.fork("kid")
    kid.read(shm)
    root.write(shm, pages=range(0, CHILD_WRITES))
    return sc


SCENARIOS = {f.__name__: f for f in (
    zero_page_read_then_write, cow_child_writes_k, reuse_after_child_exit, chain_root_mid_leaf,
    zero_page_fork, shared_child_writes, shared_child_reads, dontfork_segv, wipeonfork_grandchild,
    readonly_write_segv, vfork_exec, pss_three_sharers, exec_after_fork, mprotect_private,
    mprotect_shared, munmap_after_fork, cow_random_pattern,
    thp_first_touch, thp_zero_page_then_write, thp_fork_child_writes, thp_rewrite_copied_page,
    thp_reuse_after_child_exit, thp_chain_root_mid_leaf, thp_read_only_fork,
    pin_fork, pin_fresh_pages, pin_thp_fork,
    file_text_shared, file_private_write_copies, file_shared_write, file_uncached_major, file_folio_pmd,
    file_folio_dirty, shmem_write_after_read,
)}


def needs(sc: Scenario) -> list[str]:
    """What a scenario needs from the host besides pagemap: "thp" (huge pages on
    MADV_HUGEPAGE regions), "pins" (io_uring fixed buffers), "files" (files on a
    disk, for major faults)."""
    from .._engine.abi import MADVISE, PIN

    out = []
    if any(r.thp for r in sc.regions) or any(op.code == MADVISE and op.arg == "hugepage" for op in sc.ops):
        out.append("thp")
    if any(op.code == PIN for op in sc.ops):
        out.append("pins")
    if any(not f.cached for f in sc.files):
        out.append("files")
    return out


# --------------------------------------------------------------------------- comparison
def _same(col: str, a, b, pss_tol: float) -> bool:
    if col == "state":
        norm = lambda v: "running" if str(v) == "suspended" else str(v)      # noqa: E731
        return norm(a) == norm(b)
    if col == "reason":
        return str(a) == str(b)
    if b is None or (isinstance(b, float) and math.isnan(b)):
        return True                     # not measurable on this host (no PFNs)
    if col == "pss_pages":
        return abs(float(a) - float(b)) <= pss_tol
    return int(a) == int(b)


def _resolve(scenarios) -> list[tuple[str, Scenario]]:
    if scenarios is None:
        scenarios = list(SCENARIOS)
    if isinstance(scenarios, (str, Scenario)) or callable(scenarios):
        scenarios = [scenarios]
    out = []
    for s in scenarios:
        if isinstance(s, str):
            if s not in SCENARIOS:
                raise KeyError(f"unknown validation scenario {s!r}; known: {', '.join(SCENARIOS)}")
            out.append((s, SCENARIOS[s]()))
        elif isinstance(s, Scenario):
            out.append((f"scenario{len(out)}", s))
        elif isinstance(s, tuple):
            out.append((s[0], s[1]() if callable(s[1]) else s[1]))
        elif callable(s):
            out.append((s.__name__, s()))
        else:
            raise TypeError(f"validate: cannot run {s!r}")
    return out


def not_compared(kernel: pd.DataFrame) -> dict[str, str]:
    """Columns a run_real table could not measure on this host, and why."""
    out = {}
    if not kernel.attrs.get("pfn_visible", True):
        why = ("PFNs are hidden: /proc/PID/pagemap shows them to CAP_SYS_ADMIN only (run as root); pss_pages "
               "is then smaps' and compared to within a page")
        out.update(dict.fromkeys(PFN_COLUMNS, why))
    if not kernel.attrs.get("huge_pmds_visible", True):
        out.update(dict.fromkeys(THP_COLUMNS, "no PAGEMAP_SCAN ioctl (Linux >= 6.7) to tell huge PMDs from PTEs"))
    return out


def validate(scenarios=None) -> pd.DataFrame:
    """Run scenarios in the simulator and as real processes; one row per (scenario, process).

    scenarios: None (all of SCENARIOS), or a list of names, builder functions,
    (name, Scenario) pairs or Scenarios. Columns: scenario, pid, name, then
    sim_<col> and kernel_<col> for every column in COMPARED, `match` (bool),
    `mismatches` (the columns that differ), `skipped` (why the kernel side
    did not run, or empty), `runs` (the kernel runs it took, at most RUNS) and
    `earlier` (what the runs before the last one differed in, or empty). `df.attrs["pfn_visible"]` says whether the kernel
    side could read PFNs (root); `df.attrs["not_compared"]` maps each column
    it could not measure on this host to the reason.
    """
    from .. import real, simulator

    rows = []
    pfn_visible = True
    uncompared: dict[str, str] = {}
    host = {}                           # need -> (ok, why), probed once
    probes = {"thp": real.thp_usable, "pins": real.pins_usable, "files": real.files_usable}
    for name, sc in _resolve(scenarios):
        sim = simulator.simulate(sc, policy="cow").processes.set_index("pid")
        skipped = ""
        for need in needs(sc):
            if need not in host:
                host[need] = probes[need]()
            if not host[need][0]:
                skipped = host[need][1]
                break
        # A run can count a fault the rules do not: until the worker's touch loop ran in C, the
        # interpreter's own copy-on-write faults landed in the measured window under load (see
        # worker.touch). Should anything of the host's still do so, a scenario gets up to RUNS
        # runs; a mismatch in every one is reported, and a match after a mismatch says what the
        # earlier runs saw (the `earlier` column, printed after the verdict), so none is hidden.
        earlier: list[str] = []
        for attempt in range(1, RUNS + 1):
            if attempt > 1:
                earlier.append(_differences(done))
            kern = None
            if not skipped:
                kern = real.run_real(sc).set_index("pid")
                pfn_visible &= bool(kern.attrs.get("pfn_visible", True))
                uncompared.update(not_compared(kern))
                if "thp" in needs(sc) and kern.attrs.get("thp_fault_fallback", 0) > 0:
                    skipped = ("a huge page fault fell back to 4 KiB pages during the run (vmstat "
                               "thp_fault_fallback rose): the host refused THP")
            tol = 1e-6 if kern is None or kern.attrs.get("pfn_visible", True) else 1.0
            done = []
            for pid in sim.index:
                row = {"scenario": name, "pid": int(pid), "name": sim.at[pid, "name"]}
                bad = []
                for col in COMPARED:
                    a = sim.at[pid, col] if col in sim.columns else None
                    b = None if skipped else kern.at[pid, col]
                    row[f"sim_{col}"], row[f"kernel_{col}"] = a, b
                    if not skipped and a is not None and not _same(col, a, b, tol):
                        bad.append(col)
                row["match"] = not bad
                row["mismatches"] = ",".join(bad)
                row["skipped"] = skipped
                row["runs"] = attempt
                done.append(row)
            if all(row["match"] for row in done):
                break
        for row in done:
            row["earlier"] = " | ".join(earlier)
        rows.extend(done)
    df = pd.DataFrame(rows)
    df.attrs["pfn_visible"] = pfn_visible
    df.attrs["not_compared"] = uncompared
    return df


# --------------------------------------------------------------------------- printing
def _num(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "?"
    if isinstance(v, (float, np.floating)) and float(v) != int(v):
        return f"{float(v):.2f}"
    return str(int(v))


def _proc(r, side: str, thp: bool = False) -> str:
    g = lambda c: r[f"{side}_{c}"]                                       # noqa: E731
    s = (f"{r['name']}={_num(g('minor_faults'))}/{_num(g('cow_copies'))}/{_num(g('cow_reuses'))}"
         f"/{_num(g('rss_pages'))}/{_num(g('pss_pages'))}/{_num(g('uss_pages'))}")
    if thp:
        s += "[" + "/".join(_num(g(c)) for c in THP_SHOWN) + "]"
    state = g("state")
    if state == "killed":
        s += f"!{g('reason') or 'killed'}"
    elif state == "exited":
        s += "x"
    elif state != "running":
        s += f"({state})"
    return s


def format_lines(df: pd.DataFrame) -> list[str]:
    """One line per scenario: `name  sim: ...  kernel: ...  match|MISMATCH (...)`."""
    lines = []
    groups = list(df.groupby("scenario", sort=False))
    width = max((len(n) for n, _ in groups), default=0)
    for name, g in groups:
        why = g["skipped"].iloc[0] if "skipped" in g.columns else ""
        thp = any(float(v or 0) != 0 for c in THP_SHOWN for v in g[f"sim_{c}"].tolist()
                  + ([] if why else g[f"kernel_{c}"].fillna(0).tolist()))
        sim = " ".join(_proc(r, "sim", thp) for _, r in g.iterrows())
        if why:
            lines.append(f"{name:<{width}}  sim: {sim}  skipped: {why}")
            continue
        ker = " ".join(_proc(r, "kernel", thp) for _, r in g.iterrows())
        verdict = "match"
        if not g["match"].all():
            verdict = f"MISMATCH ({_differences(r for _, r in g.iterrows())})"
            if name in KNOWN_DISAGREEMENTS:
                verdict += " [known: see KNOWN_DISAGREEMENTS]"
        earlier = g["earlier"].iloc[0] if "earlier" in g.columns else ""
        if earlier:
            verdict += f" (run {int(g['runs'].iloc[0])}; earlier runs: {earlier})"
        lines.append(f"{name:<{width}}  sim: {sim}  kernel: {ker}  {verdict}")
    return lines


def _differences(rows) -> str:
    """`kid.minor_faults 1599!=1600; ...`: the columns where simulator and kernel differ."""
    out = []
    for r in rows:
        if not r["match"]:
            out += [f"{r['name']}.{c} {_num_or(r['sim_' + c])}!={_num_or(r['kernel_' + c])}"
                    for c in r["mismatches"].split(",")]
    return "; ".join(out)


def _num_or(v) -> str:
    return v if isinstance(v, str) else _num(v)


def main(argv=None) -> int:
    """`cowbench validate [NAME ...] [--list] [-v] [--strict] [--csv PATH]`; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="cowbench validate",
        description="Run each validation scenario in the simulator (policy cow) and as real processes on this "
                    "kernel, and compare them process by process. Per process: "
                    "name=faults/copies/reuses/rss/pss/uss (pages), x = exited, !SIG = killed.")
    parser.add_argument("names", nargs="*", help="scenarios to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and what each checks")
    parser.add_argument("-v", "--verbose", action="store_true", help="print both tables for mismatching scenarios")
    parser.add_argument("--csv", help="write the comparison table to this CSV file")
    parser.add_argument("--strict", action="store_true",
                        help="fail (exit status 1) if any column could not be compared on this host, or any "
                             "scenario was skipped, as well as on a mismatch")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.list:
        for name, f in SCENARIOS.items():
            print(f"{name:<28} {(f.__doc__ or '').split(chr(10))[0].strip()}")
        return 0
    from .coordinator import KernelUnavailable

    unknown = [n for n in args.names if n not in SCENARIOS]
    if unknown:
        print(f"cowbench validate: unknown scenario(s) {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        df = validate(args.names or None)
    except KernelUnavailable as e:
        print(f"cowbench validate: cannot run real processes here: {e}", file=sys.stderr)
        return 2
    print("per process: name=minor_faults/cow_copies/cow_reuses/rss/pss/uss pages (x exited, !SIG killed); "
          "THP scenarios add [anon_huge_pages/thp_splits/thp_fault_alloc/thp_copies/fork_pmds_copied]")
    for line in format_lines(df):
        print(line)
    missing = df.attrs.get("not_compared", {})
    for why in dict.fromkeys(missing.values()):
        print(f"not compared on this host: {', '.join(c for c, w in missing.items() if w == why)}: {why}")
    if args.csv:
        df.to_csv(args.csv, index=False)
    bad = df.loc[~df["match"], "scenario"].unique()
    if args.verbose:
        cols = ["name"] + [f"{s}_{c}" for c in COMPARED for s in ("sim", "kernel")]
        for name in bad:
            print(f"\n{name}:")
            if name in KNOWN_DISAGREEMENTS:
                print(f"  known: {KNOWN_DISAGREEMENTS[name]}")
            print(df.loc[df["scenario"] == name, cols].to_string(index=False))
    skipped = df.loc[df["skipped"] != "", "scenario"].unique()
    n = df["scenario"].nunique() - len(skipped)
    known = sum(1 for b in bad if b in KNOWN_DISAGREEMENTS)
    print(f"{n - len(bad)}/{n} scenarios match" + (f" ({known} of the mismatches known)" if known else "")
          + (f", {len(skipped)} skipped" if len(skipped) else "") + f" ({time.perf_counter() - t0:.1f} s)")
    if args.strict and (missing or len(skipped)):
        print(f"--strict: {len(missing)} column(s) not compared, {len(skipped)} scenario(s) skipped on this host")
        return 1
    return 1 if len(bad) else 0


if __name__ == "__main__":
    sys.exit(main())
