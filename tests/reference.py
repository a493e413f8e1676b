"""A small, slow, obviously-correct simulator of docs/semantics.md.

The jitted engine is checked against this file. It interprets a Scenario's ops
one operation and one page at a time with plain dicts and tiny classes, and
follows docs/semantics.md rule by rule; the comments name the rule. Nothing here
is clever: when in doubt, it is the engine that should be clever.

    ref = simulate(sc, policy="cow", oom="largest", zero_page=True, overcommit=0, overcommit_ratio=50)
    ref.processes          # one row per process, pid order
    ref.summary            # frames_used, peak_frames and counter totals
    ref.memory(pid, r)     # the value tag each page of region r reads in pid's mm

Policies: "cow", "eager", and "odf", which is "cow" at page level, copies no
PTE or table at fork and shares the tables instead; a fault or mprotect that
must change a PTE of a still-shared table first copies it (fault_tables_copied).

Covered: every rule of docs/semantics.md except transparent huge pages (a
region with thp=True or madvise "hugepage" raises NotImplementedError).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from cowbench import scenario as _scenario
from cowbench.patterns import Pattern
from cowbench.scenario import (EXEC, EXIT, FORK, MADVISE, MMAP, MPROTECT, MUNMAP, READ, SPAWN, VFORK,
                               WRITE)

PIN = getattr(_scenario, "PIN", None)
UNPIN = getattr(_scenario, "UNPIN", None)

__all__ = ["simulate", "Reference", "COLUMNS", "INT_COLUMNS", "COUNTERS"]

PTES_PER_TABLE = 512
FAULT_AROUND_PAGES = 16   # fault_around_bytes = 64 KiB
ZERO_PAGE = 0             # frame 0: the shared zero page, never allocated, freed or counted

COUNTERS = ("minor_faults", "zero_fills", "cow_copies", "cow_reuses",
            "fork_pages_copied", "fork_ptes_copied", "fork_tables_copied", "fault_tables_copied", "enomem")
VALUES = ("rss_pages", "pss_pages", "uss_pages", "shared_pages", "pte_pages")
COLUMNS = ("pid", "name", "parent", "state", "reason",
           "minor_faults", "zero_fills", "cow_copies", "cow_reuses",
           "rss_pages", "pss_pages", "uss_pages", "shared_pages",
           "fork_pages_copied", "fork_ptes_copied", "fork_tables_copied", "pte_pages",
           "fault_tables_copied", "enomem")
INT_COLUMNS = tuple(c for c in COLUMNS if c not in ("name", "state", "reason", "pss_pages"))


class Frame:
    """A physical frame: PTEs mapping it, pins on it, and the tag last written to it."""

    def __init__(self, cached: bool):
        self.mapcount = 0
        self.pins = 0
        self.tag = 0          # a fresh frame is zero-filled
        self.cached = cached  # held by a shared region's page cache


class PTE:
    """A present page-table entry: the frame it maps and its W and E bits."""

    def __init__(self, frame: int, w: bool, e: bool):
        self.frame = frame
        self.w = w
        self.e = e


class VMA:
    """One region as one address space maps it (prot, flags, anon_vma, accounting are per mm)."""

    def __init__(self, prot: str, dontfork: bool, wipeonfork: bool, anon_vma: bool = False,
                 accounted: bool = False):
        self.prot = prot
        self.dontfork = dontfork
        self.wipeonfork = wipeonfork
        self.anon_vma = anon_vma     # created by the first fault that allocates an anonymous page
        self.accounted = accounted   # VM_ACCOUNT: a private region charged for overcommit

    def copy_for_child(self) -> "VMA":
        """dup_mmap: same prot and flags; the anon_vma too, except for wipeonfork."""
        return VMA(self.prot, self.dontfork, self.wipeonfork, self.anon_vma and not self.wipeonfork,
                   self.accounted)


class Table:
    """A PTE table. Under odf one table can be shared by several address spaces."""

    def __init__(self):
        self.sharers = 1


class MM:
    """An address space: its VMAs, its PTEs ((region, page) -> PTE) and its tables."""

    def __init__(self):
        self.vmas: dict[int, VMA] = {}
        self.ptes: dict[tuple[int, int], PTE] = {}
        self.tables: dict[tuple[int, int], Table] = {}   # (region, page // 512) -> table
        self.users = 1                                   # processes using it (vfork shares)


class Proc:
    def __init__(self, pid: int, name: str, parent: int):
        self.pid = pid
        self.name = name
        self.parent = parent
        self.state = "not_started"   # -> running -> exited | killed ; or fork_failed
        self.reason = ""
        self.mm: MM | None = None
        self.vfork_parent: Proc | None = None
        self.suspended = False
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.pins: dict[tuple[int, int], list[int]] = {}   # (region, page) -> frames pinned
        self.frozen: dict | None = None                    # values at exit/death

    @property
    def alive(self) -> bool:
        return self.state == "running"


class Reference:
    """What one run of the reference produced."""

    def __init__(self, processes: pd.DataFrame, summary: pd.Series, machine: "_Machine"):
        self.processes = processes
        self.summary = summary
        self._m = machine

    def memory(self, pid, region) -> np.ndarray:
        """The tag each page of `region` reads in the mm of running process `pid`:
        0 for a page absent, mapped to the zero page or never written."""
        pid = getattr(pid, "pid", pid)
        r = getattr(region, "index", region)
        proc = self._m.procs[pid]
        if not proc.alive:
            raise ValueError(f"memory: process {pid} is {proc.state}, not running")
        out = np.zeros(self._m.sc.regions[r].npages, dtype=np.int64)
        for (reg, p), pte in proc.mm.ptes.items():
            if reg == r and pte.frame != ZERO_PAGE:
                out[p] = self._m.frames[pte.frame].tag
        return out

    def check_invariants(self) -> None:
        self._m.check_invariants()


class _Machine:
    def __init__(self, sc, policy: str, oom: str, zero_page: bool, overcommit: int, overcommit_ratio: int):
        if policy not in ("cow", "eager", "odf"):
            raise ValueError(f"reference: unknown policy {policy!r}")
        if oom not in ("largest", "faulting"):
            raise ValueError(f"reference: unknown oom {oom!r}")
        if overcommit not in (0, 1, 2):
            raise ValueError(f"reference: unknown overcommit {overcommit!r}")
        self.sc = sc
        self.policy = policy
        self.oom = oom
        self.zero_page = zero_page
        self.overcommit = overcommit
        self.overcommit_ratio = overcommit_ratio
        self.committed = 0                          # pages charged (vm_committed_as)
        self.ram = sc.frames                        # RAM in pages, for overcommit
        self.limit = sc.frames - 1                  # allocatable frames: all but the zero page
        self.frames: dict[int, Frame] = {}          # allocated data frames by id
        self.table_frames = 0                       # frames holding page tables
        self.next_frame = 1
        self.peak = 0
        self.region_maps: dict[int, int] = {}       # region -> number of mms mapping it
        self.page_cache: dict[int, dict[int, int]] = {}   # shared region -> page -> frame
        self.procs: dict[int, Proc] = {}
        self.absent_vma_ops = 0                     # munmap/mprotect/madvise that found no VMA (for tests)
        self.faultaround_ooms = 0                   # shared read faults that found no frame (for tests)
        for p in sc.processes:
            self.procs[p.pid] = Proc(p.pid, p.name, 0 if p.parent is None else p.parent.pid)
        for r in sc.regions:
            if getattr(r, "thp", False):
                raise NotImplementedError("reference: transparent huge pages are not modelled")

    # -- frames ----------------------------------------------------------------
    def used(self) -> int:
        """frames_used: data pages and page tables together."""
        return len(self.frames) + self.table_frames

    def free(self) -> int:
        return self.limit - self.used()

    def alloc(self, cached: bool = False) -> int | None:
        if self.free() <= 0:
            return None
        f = self.next_frame
        self.next_frame += 1
        self.frames[f] = Frame(cached)
        self.peak = max(self.peak, self.used())
        return f

    def new_table(self, mm: MM, key: tuple[int, int]) -> bool:
        """A new PTE table takes a frame; False when none is free."""
        if self.free() <= 0:
            return False
        self.table_frames += 1
        mm.tables[key] = Table()
        self.peak = max(self.peak, self.used())
        return True

    def drop_table(self, tab: Table) -> None:
        tab.sharers -= 1
        if tab.sharers == 0:
            self.table_frames -= 1

    def maybe_free(self, f: int) -> None:
        """A frame is freed when no PTE maps it, no page cache holds it, no pin holds it."""
        frame = self.frames[f]
        if frame.mapcount == 0 and frame.pins == 0 and not frame.cached:
            del self.frames[f]

    def install(self, mm: MM, r: int, p: int, pte: PTE) -> None:
        assert (r, p) not in mm.ptes
        assert (r, p // PTES_PER_TABLE) in mm.tables, "a PTE installed without its table"
        mm.ptes[(r, p)] = pte
        if pte.frame != ZERO_PAGE:
            self.frames[pte.frame].mapcount += 1

    def drop_pte(self, mm: MM, r: int, p: int) -> None:
        """Remove one PTE: mapcount - 1, and the frame may become free."""
        pte = mm.ptes.pop((r, p))
        if pte.frame != ZERO_PAGE:
            self.frames[pte.frame].mapcount -= 1
            assert self.frames[pte.frame].mapcount >= 0
            self.maybe_free(pte.frame)

    def own_table(self, proc: Proc, mm: MM, r: int, t: int) -> bool:
        """odf: before a PTE of table t changes in mm, a still-shared table is
        copied (into a new frame) for the process that changes it; the last
        sharer keeps it. False when the copy found no frame."""
        tab = mm.tables.get((r, t))
        if tab is not None and tab.sharers > 1:
            if self.free() <= 0:
                return False
            tab.sharers -= 1
            self.table_frames += 1
            mm.tables[(r, t)] = Table()
            self.peak = max(self.peak, self.used())
            proc.counters["fault_tables_copied"] += 1
        return True

    # -- overcommit (__vm_enough_memory) -----------------------------------------
    def refused(self, pages: int) -> bool:
        """Would a charge of `pages` be refused? (nothing is charged here)"""
        if self.overcommit == 1:
            return False
        if self.overcommit == 0:
            return pages > self.ram                               # larger than RAM
        return 100 * (self.committed + pages) > self.overcommit_ratio * self.ram   # past ratio % of RAM

    # -- address spaces --------------------------------------------------------
    def unmap_region(self, mm: MM, r: int) -> None:
        """munmap / release of one region: its PTEs, its tables, its mapping count, its charge."""
        for key in [k for k in mm.ptes if k[0] == r]:
            self.drop_pte(mm, *key)
        for key in [k for k in mm.tables if k[0] == r]:
            self.drop_table(mm.tables.pop(key))
        vma = mm.vmas.pop(r)
        if vma.accounted:
            self.committed -= self.sc.regions[r].npages
        self.region_maps[r] -= 1
        if self.region_maps[r] == 0 and r in self.page_cache:
            self.committed -= self.sc.regions[r].npages           # the shmem object's charge
            for f in self.page_cache.pop(r).values():
                self.frames[f].cached = False
                self.maybe_free(f)

    def drop_mm(self, proc: Proc) -> None:
        mm = proc.mm
        proc.mm = None
        mm.users -= 1
        if mm.users == 0:
            for r in list(mm.vmas):
                self.unmap_region(mm, r)
            assert not mm.ptes and not mm.tables

    def values(self, mm: MM) -> dict:
        rss = uss = 0
        pss = 0.0
        for pte in mm.ptes.values():
            if pte.frame == ZERO_PAGE:
                continue
            n = self.frames[pte.frame].mapcount
            rss += 1
            pss += 1.0 / n
            uss += n == 1
        return {"rss_pages": rss, "pss_pages": pss, "uss_pages": uss,
                "shared_pages": rss - uss, "pte_pages": len(mm.tables)}

    def rss(self, mm: MM) -> int:
        return sum(1 for pte in mm.ptes.values() if pte.frame != ZERO_PAGE)

    # -- process life ----------------------------------------------------------
    def release_vfork_parent(self, proc: Proc) -> None:
        if proc.vfork_parent is not None:
            proc.vfork_parent.suspended = False
            proc.vfork_parent = None

    def drop_pins(self, proc: Proc, keys) -> None:
        for key in keys:
            for f in proc.pins.pop(key, []):
                self.frames[f].pins -= 1
                self.maybe_free(f)

    def end(self, procs: list[Proc], state: str, reason: str) -> None:
        """exit or death of processes (all sharing one mm for an OOM kill):
        values frozen first, then pins dropped and the mm released."""
        for proc in procs:
            proc.frozen = self.values(proc.mm)
        for proc in procs:
            proc.state = state
            proc.reason = reason
            proc.suspended = False
            self.release_vfork_parent(proc)
            self.drop_pins(proc, list(proc.pins))
            self.drop_mm(proc)

    def out_of_memory(self, faulting: Proc) -> None:
        """`out_of_memory`: pick a victim, kill it and every process sharing its mm."""
        if self.oom == "faulting":
            victim = faulting
        else:
            # oom_badness: RSS plus page-table pages (docs/semantics.md says
            # "largest RSS"; Linux's oom_badness, and the engine, add the
            # tables, which now take frames)
            victim, best = None, -1
            for q in sorted(self.procs.values(), key=lambda q: q.pid):
                if q.alive:  # running or suspended by vfork
                    badness = self.rss(q.mm) + len(q.mm.tables)
                    if badness > best:         # ties: the lowest pid
                        victim, best = q, badness
        mm = victim.mm
        self.end([q for q in self.procs.values() if q.alive and q.mm is mm], "killed", "OOM")

    # -- faults (handle_mm_fault) ----------------------------------------------
    def touch(self, proc: Proc, r: int, p: int, write: bool, tag: int | None, gup: bool = False) -> bool:
        """One touch (or the write-intent fault of a pin, gup=True: it stores no
        tag); False when the process died."""
        while True:  # a fault that found no frame is retried after the OOM kill
            if self.fault(proc, r, p, write, tag, gup):
                return proc.alive
            self.out_of_memory(proc)
            if not proc.alive:
                return False

    def fault(self, proc: Proc, r: int, p: int, write: bool, tag: int | None, gup: bool) -> bool:
        """Rules 1-9 for one touch. False when a frame was needed and none was
        free: nothing is counted then, the fault did not complete."""
        region = self.sc.regions[r]
        c = proc.counters
        mm = proc.mm
        vma = mm.vmas.get(r)
        # rule 1 (a pin checked its region before: it never gets here with a bad one)
        if vma is None or vma.prot == "none" or (write and "w" not in vma.prot):
            assert not gup
            self.end([proc], "killed", "SIGSEGV")
            return True
        writable = "w" in vma.prot
        pte = mm.ptes.get((r, p))
        if pte is not None and (not write or pte.w):
            # rule 2 (read, present) and rule 6 (write, present and W): no fault
            if tag is not None:
                self.frames[pte.frame].tag = tag          # rule 9
            return True
        if pte is not None and region.shared:
            raise AssertionError("rule 8: a shared PTE is never write-protected while its prot has w")
        # a PTE of table t will be installed or changed: the page walk first
        # allocates the table (it stays, even if the page allocation fails), or
        # under odf copies a still-shared one
        key = (r, p // PTES_PER_TABLE)
        if key not in mm.tables:
            if not self.new_table(mm, key):
                return False
        elif not self.own_table(proc, mm, *key):
            return False

        if region.shared:                                 # rule 4, read or write, PTE absent
            cache = self.page_cache[r]
            if not write:                                 # do_fault_around
                lo = p - p % FAULT_AROUND_PAGES
                for q in range(lo, min(lo + FAULT_AROUND_PAGES, region.npages)):
                    if q in cache and (r, q) not in mm.ptes:
                        self.install(mm, r, q, PTE(cache[q], writable, False))
            if p not in cache:
                f = self.alloc(cached=True)
                if f is None:
                    self.faultaround_ooms += not write   # (kept for tests)
                    return False
                cache[p] = f
                c["zero_fills"] += 1
            if (r, p) not in mm.ptes:
                self.install(mm, r, p, PTE(cache[p], writable, False))
        elif pte is None and not write and self.zero_page:   # rule 3
            self.install(mm, r, p, PTE(ZERO_PAGE, False, False))
        elif pte is None:
            # rule 5 (write), or a read without the zero page: do_anonymous_page
            # allocates a zeroed page, writable if the VMA is (as Linux maps it).
            f = self.alloc()
            if f is None:
                return False
            self.install(mm, r, p, PTE(f, writable, True))
            vma.anon_vma = True
            c["zero_fills"] += 1
        elif pte.frame == ZERO_PAGE:                      # rule 7, zero page
            f = self.alloc()
            if f is None:
                return False
            del mm.ptes[(r, p)]
            self.install(mm, r, p, PTE(f, True, True))
            vma.anon_vma = True
            c["zero_fills"] += 1
        elif pte.e or self.frames[pte.frame].mapcount == 1:   # rule 7, reuse
            pte.w = pte.e = True
            c["cow_reuses"] += 1
        else:                                             # rule 7, copy
            f = self.alloc()
            if f is None:
                return False
            self.frames[f].tag = self.frames[pte.frame].tag
            self.drop_pte(mm, r, p)
            self.install(mm, r, p, PTE(f, True, True))
            vma.anon_vma = True
            c["cow_copies"] += 1
        c["minor_faults"] += 1    # GUP faults too: counted in min_flt since Linux 5.10
        if tag is not None:                               # rule 9
            self.frames[mm.ptes[(r, p)].frame].tag = tag
        return True

    # -- pins (pin_user_pages FOLL_WRITE | FOLL_LONGTERM) ------------------------
    def pin(self, proc: Proc, r: int, pages) -> None:
        vma = proc.mm.vmas.get(r)
        if vma is None or "w" not in vma.prot:           # EFAULT: pins nothing
            return
        for p in pages:
            if not self.touch(proc, r, int(p), True, None, gup=True):
                return
            f = proc.mm.ptes[(r, int(p))].frame
            self.frames[f].pins += 1
            proc.pins.setdefault((r, int(p)), []).append(f)

    # -- fork (dup_mmap / copy_page_range) -------------------------------------
    def fork(self, parent: Proc, child: Proc) -> None:
        pmm = parent.mm
        inherited = {r: vma for r, vma in pmm.vmas.items() if not vma.dontfork}
        # overcommit: every accounted region the child gets, all or nothing
        charges = [self.sc.regions[r].npages for r, vma in inherited.items() if vma.accounted]
        if self.overcommit == 0 and any(self.refused(n) for n in charges) or \
                self.overcommit == 2 and self.refused(sum(charges)):
            parent.counters["enomem"] += 1
            child.state = "fork_failed"
            return
        # vma_needs_copy: private, not wipeonfork, with an anon_vma
        copied = {r for r, vma in inherited.items()
                  if not self.sc.regions[r].shared and not vma.wipeonfork and vma.anon_vma}
        to_copy = [(key, pte) for key, pte in sorted(pmm.ptes.items()) if key[0] in copied]

        def gets_own_page(pte: PTE) -> bool:
            if pte.frame == ZERO_PAGE:
                return False
            return self.policy == "eager" or self.frames[pte.frame].pins > 0   # copy_present_page

        pinned_tables = {(r, p // PTES_PER_TABLE) for (r, p), pte in to_copy
                         if gets_own_page(pte) and self.policy != "eager"}
        child_tables = {(r, p // PTES_PER_TABLE) for (r, p), _ in to_copy}
        new_tables = pinned_tables if self.policy == "odf" else child_tables
        need = sum(1 for _, pte in to_copy if gets_own_page(pte)) + len(new_tables)
        if self.free() < need:                            # ENOMEM: nothing is copied
            parent.counters["enomem"] += 1                 # fork(2) returned ENOMEM to the parent
            child.state = "fork_failed"
            return
        self.committed += sum(charges)
        cmm = MM()
        for r, vma in inherited.items():
            cmm.vmas[r] = vma.copy_for_child()
            self.region_maps[r] += 1
        for key in sorted(child_tables):
            if key in new_tables:
                assert self.new_table(cmm, key)
            else:   # odf: the parent's table itself, shared
                cmm.tables[key] = pmm.tables[key]
                pmm.tables[key].sharers += 1
        for (r, p), pte in to_copy:
            if gets_own_page(pte):   # a new frame holding a copy; the parent's PTE unchanged
                f = self.alloc()
                assert f is not None
                self.frames[f].tag = self.frames[pte.frame].tag
                self.install(cmm, r, p, PTE(f, "w" in cmm.vmas[r].prot, True))
                child.counters["fork_pages_copied"] += 1
            elif self.policy == "eager":   # the zero page: shared as it is
                self.install(cmm, r, p, PTE(ZERO_PAGE, False, False))
            else:                          # cow, odf: both copies lose W and E
                pte.w = pte.e = False
                self.install(cmm, r, p, PTE(pte.frame, False, False))
        if self.policy == "odf":
            # the shared tables are not counted; a table holding a pinned page
            # is copied, and counted as cow counts it. (docs say "all 0 under
            # odf"; the pins section makes this the exception.)
            child.counters["fork_ptes_copied"] = sum(
                1 for (r, p), _ in to_copy if (r, p // PTES_PER_TABLE) in pinned_tables)
            child.counters["fork_tables_copied"] = len(pinned_tables)
        else:
            child.counters["fork_ptes_copied"] = len(to_copy)
            child.counters["fork_tables_copied"] = len(cmm.tables)
        child.mm = cmm
        child.state = "running"

    # -- the op loop -----------------------------------------------------------
    def pages_of(self, op) -> np.ndarray:
        npages = self.sc.regions[op.region].npages
        return op.pages.pages(npages) if isinstance(op.pages, Pattern) else op.pages

    def run(self) -> None:
        for op in self.sc.ops:
            proc = self.procs[op.pid]
            if op.code == SPAWN:
                proc.mm = MM()
                proc.state = "running"
                continue
            if not proc.alive:
                if op.code in (FORK, VFORK):   # a child whose fork never happened
                    self.procs[op.arg].state = "fork_failed"
                continue
            assert not proc.suspended, "the builder never records ops of a vfork-suspended process"
            mm = proc.mm
            if op.code == FORK:
                self.fork(proc, self.procs[op.arg])
            elif op.code == VFORK:
                child = self.procs[op.arg]
                child.mm = mm
                mm.users += 1
                child.state = "running"
                child.vfork_parent = proc
                proc.suspended = True
            elif op.code == EXEC:
                self.drop_mm(proc)
                proc.mm = MM()
                self.release_vfork_parent(proc)
            elif op.code == EXIT:
                self.end([proc], "exited", "")
            elif op.code == MMAP:
                region = self.sc.regions[op.region]
                charged = region.shared or "w" in region.prot
                if charged and self.refused(region.npages):
                    proc.counters["enomem"] += 1          # MAP_FAILED: the region stays unmapped
                    continue
                if charged:
                    self.committed += region.npages
                mm.vmas[op.region] = VMA(region.prot, region.on_fork == "dontfork",
                                         region.on_fork == "wipeonfork", anon_vma=False,
                                         accounted=charged and not region.shared)
                self.region_maps[op.region] = 1
                if region.shared:
                    self.page_cache[op.region] = {}
            elif op.code == MUNMAP:
                if op.region in mm.vmas:
                    self.unmap_region(mm, op.region)
                else:   # munmap of a range this mm does not map (a dontfork child): nothing to do
                    self.absent_vma_ops += 1
            elif op.code == MPROTECT:
                vma = mm.vmas.get(op.region)
                if vma is None:          # mprotect(2) of an unmapped range: nothing changes
                    self.absent_vma_ops += 1
                    continue
                shared = self.sc.regions[op.region].shared
                if "w" in op.arg and not shared and not vma.accounted:
                    npages = self.sc.regions[op.region].npages
                    if self.refused(npages):
                        proc.counters["enomem"] += 1      # a refused mprotect changes nothing
                        continue
                    self.committed += npages
                    vma.accounted = True
                for (r, t) in sorted(mm.tables):         # odf: mprotect copies shared tables
                    if r == op.region:
                        while proc.alive and not self.own_table(proc, mm, r, t):
                            self.out_of_memory(proc)     # no frame for the copy: as a fault
                if not proc.alive:
                    continue
                vma.prot = op.arg
                for (r, p), pte in mm.ptes.items():
                    if r != op.region:
                        continue
                    if "w" not in op.arg:
                        pte.w = False
                    elif shared or pte.e:   # shmem: no write notification needed
                        pte.w = True
            elif op.code == MADVISE:
                vma = mm.vmas.get(op.region)
                if vma is None:
                    self.absent_vma_ops += 1
                else:
                    if op.arg == "dontfork":
                        vma.dontfork = True
                    elif op.arg == "dofork":
                        vma.dontfork = False
                    elif op.arg == "wipeonfork":
                        vma.wipeonfork = True
                    elif op.arg == "keeponfork":
                        vma.wipeonfork = False
                    else:
                        raise NotImplementedError(f"reference: advice {op.arg!r} is not modelled")
            elif op.code in (READ, WRITE):
                for p in self.pages_of(op):
                    if not self.touch(proc, op.region, int(p), op.code == WRITE,
                                      op.arg if op.code == WRITE else None):
                        break
            elif PIN is not None and op.code == PIN:
                self.pin(proc, op.region, self.pages_of(op))
            elif UNPIN is not None and op.code == UNPIN:
                self.drop_pins(proc, [(op.region, int(p)) for p in dict.fromkeys(self.pages_of(op).tolist())])
            else:
                raise NotImplementedError(f"reference: op code {op.code} is not modelled")

    # -- results ---------------------------------------------------------------
    def process_rows(self) -> pd.DataFrame:
        rows = []
        for pid in sorted(self.procs):
            q = self.procs[pid]
            if q.alive:
                vals = self.values(q.mm)
            elif q.frozen is not None:
                vals = q.frozen
            else:
                vals = dict.fromkeys(VALUES, 0)
            state = q.state if q.state != "not_started" else "fork_failed"
            row = {"pid": q.pid, "name": q.name, "parent": q.parent, "state": state, "reason": q.reason}
            row.update(q.counters)
            row.update(vals)
            rows.append(row)
        df = pd.DataFrame(rows, columns=list(COLUMNS))
        for col in INT_COLUMNS:
            df[col] = df[col].astype(np.int64)
        df["pss_pages"] = df["pss_pages"].astype(np.float64)
        for col in ("name", "state", "reason"):
            df[col] = df[col].astype(object)
        return df

    def summary(self, df: pd.DataFrame) -> pd.Series:
        s = {"frames_used": self.used(), "peak_frames": self.peak, "pte_frames": self.table_frames,
             "committed_pages": self.committed}
        for col in ("minor_faults", "zero_fills", "cow_copies", "cow_reuses", "fork_pages_copied"):
            s[col] = int(df[col].sum())
        return pd.Series(s, dtype=np.int64)

    def check_invariants(self) -> None:
        """mapcount == PTEs mapping each frame; pins == live pin records; every
        frame is mapped, cached or pinned; tables match PTEs; odf sharer counts
        match; no shared PTE is write-protected in a writable region; the
        committed charge is what the live mappings account."""
        live = [q for q in self.procs.values() if q.alive]
        mms = {id(q.mm): q.mm for q in live}
        count: dict[int, int] = {}
        committed = 0
        for mm in mms.values():
            assert {(r, p // PTES_PER_TABLE) for (r, p) in mm.ptes} == set(mm.tables), "tables != PTEs' tables"
            assert mm.users == sum(1 for q in live if q.mm is mm)
            for r, vma in mm.vmas.items():
                committed += self.sc.regions[r].npages if vma.accounted else 0
            for (r, p), pte in mm.ptes.items():
                assert r in mm.vmas, "a PTE outside every VMA"
                if self.sc.regions[r].shared and "w" in mm.vmas[r].prot:
                    assert pte.w, "a write-protected shared PTE in a writable region"
                if pte.frame != ZERO_PAGE:
                    assert pte.frame in self.frames, "a PTE maps a freed frame"
                    count[pte.frame] = count.get(pte.frame, 0) + 1
                    if not self.sc.regions[r].shared:
                        assert mm.vmas[r].anon_vma, "an anonymous page in a region without anon_vma"
        committed += sum(self.sc.regions[r].npages for r in self.page_cache)
        assert committed == self.committed, f"committed {self.committed} != {committed} accounted"
        sharers: dict[int, int] = {}
        tables = {}
        for mm in mms.values():
            for tab in mm.tables.values():
                sharers[id(tab)] = sharers.get(id(tab), 0) + 1
                tables[id(tab)] = tab
        for key, tab in tables.items():
            assert tab.sharers == sharers[key], "a table's sharer count != the mms holding it"
        assert self.table_frames == len(tables), f"{self.table_frames} table frames != {len(tables)} tables"
        pins: dict[int, int] = {}
        for q in self.procs.values():
            if q.pins:
                assert q.alive, "a dead process holds pins"
            for frames in q.pins.values():
                for f in frames:
                    pins[f] = pins.get(f, 0) + 1
        cached = {f for cache in self.page_cache.values() for f in cache.values()}
        for f, frame in self.frames.items():
            assert frame.mapcount == count.get(f, 0), f"frame {f}: mapcount {frame.mapcount} != {count.get(f, 0)} PTEs"
            assert frame.pins == pins.get(f, 0), f"frame {f}: {frame.pins} pins != {pins.get(f, 0)} records"
            assert frame.cached == (f in cached)
            assert frame.mapcount > 0 or frame.cached or frame.pins > 0, f"frame {f} leaked"
        assert self.used() <= self.limit


def simulate(sc, policy: str = "cow", oom: str = "largest", zero_page: bool = True,
             overcommit: int = 0, overcommit_ratio: int = 50) -> Reference:
    """Run scenario `sc` through the reference rules of docs/semantics.md."""
    m = _Machine(sc, policy, oom, zero_page, overcommit, overcommit_ratio)
    m.run()
    df = m.process_rows()
    return Reference(df, m.summary(df), m)
