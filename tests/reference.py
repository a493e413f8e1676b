"""A small, slow, obviously-correct simulator of docs/semantics.md.

The jitted engine is checked against this file. It interprets a Scenario's ops
one operation and one page at a time with plain dicts and tiny classes, and
follows docs/semantics.md rule by rule; the comments name the rule. Nothing here
is clever: when in doubt, it is the engine that should be clever.

    ref = simulate(sc, policy="cow", oom="largest", zero_page=True, overcommit=0, overcommit_ratio=50,
                   thp_cow="split")
    ref.processes          # one row per process, pid order
    ref.summary            # frames_used, peak_frames and counter totals
    ref.memory(pid, r)     # the value tag each page of region r reads in pid's mm

Policies: "cow", "eager", and "odf", which is "cow" at page level, copies no
PTE or table at fork and shares the tables instead; a fault or mprotect that
must change a PTE of a still-shared table first copies it (fault_tables_copied).

Transparent huge pages: a PMD-mapped huge page is one Huge entry per (mm,
2 MiB range) holding its Folio (None for the huge zero page) and the W and E
bits; a Folio is its 512 frames (each subpage's mapcount counts the PMD
mappings too). A split turns the Huge entry into 512 ordinary PTEs, keeping the
deposited table. thp_cow="split" | "copy" chooses what a write to a shared huge
page does.

Covered: every rule of docs/semantics.md.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from cowbench._engine.abi import (EXEC, EXIT, FORK, MADVISE, MMAP, MPROTECT, MUNMAP, PHASE, PIN, READ, SPAWN,
                                  UNPIN, VFORK, WRITE)
from cowbench import columns
from cowbench.patterns import Pattern

__all__ = ["simulate", "Reference", "interleave", "COLUMNS", "INT_COLUMNS", "COUNTERS"]

PTES_PER_TABLE = 512
FAULT_AROUND_PAGES = 16   # fault_around_bytes = 64 KiB
ZERO_PAGE = 0             # frame 0: the shared zero page, never allocated, freed or counted

HUGE_PAGES = PTES_PER_TABLE   # 4 KiB pages in a 2 MiB huge page (one PMD)
# Free frames a write to a write-protected huge PMD needs for a new huge folio
# (huge zero page, thp_cow="copy"): 512, as docs/semantics.md says; its table was
# deposited at the first fault. (The engine asks 513, as for a first fault.)
WP_HUGE_FREE = HUGE_PAGES

# The registry's columns (cowbench/columns.py) the reference models: all but odf's count of
# tables shared at fork (it only counts what is copied) and the cost model's times.
COUNTERS = tuple(c for c in columns.EVENT_NAMES if c != "fork_tables_shared")
VALUES = columns.MEMORY_NAMES
COLUMNS = tuple(c for c in columns.PROCESS_COLUMNS
                if c in {"pid", "name", "parent", "state", "reason"} | set(COUNTERS) | set(VALUES))
INT_COLUMNS = tuple(c for c in COLUMNS if c not in ("name", "state", "reason", "pss_pages"))


def interleave(phase) -> list:
    """A concurrently() block's pieces in the order they run (Scenario.concurrently's
    rule, the obvious way): cut every op into pieces of `grain` touches, give piece j of
    an op cut into n the key (j + u) / n with u the next draw of default_rng(seed), and
    sort all the pieces by key, stably."""
    rng = np.random.default_rng(phase.seed)
    keys, pieces = [], []
    for op in phase.ops:
        n = op.pages.count if isinstance(op.pages, Pattern) else len(op.pages)
        cuts = list(range(0, n, phase.grain)) or [0]
        for j, lo in enumerate(cuts):
            hi = min(lo + phase.grain, n)
            sub = op.pages.piece(lo, hi) if isinstance(op.pages, Pattern) else op.pages[lo:hi]
            pieces.append(op._replace(pages=sub))
            keys.append((j + rng.random()) / len(cuts))
    order = np.argsort(np.array(keys), kind="stable")
    return [pieces[i] for i in order]


class Frame:
    """A physical frame: PTEs mapping it, pins on it, and the tag last written to it."""

    def __init__(self, cached: bool):
        self.mapcount = 0
        self.pins = 0
        self.tag = 0          # a fresh frame is zero-filled
        self.cached = cached  # held by a page cache (a shared anonymous region's, or a file's)
        self.dirty = False    # a page-cache page written since read (F5): a file's folio, a shmem page
        self.folio: Folio | None = None   # the huge folio it is a subpage of


class Folio:
    """A huge folio: 512 frames, subpage s of its 2 MiB range in frames[s]."""

    def __init__(self, frames: list[int]):
        self.frames = frames


class Huge:
    """A PMD mapping a whole 2 MiB range: a folio (None: the huge zero page), W and E."""

    def __init__(self, folio: Folio | None, w: bool, e: bool):
        self.folio = folio
        self.w = w
        self.e = e


class PTE:
    """A present page-table entry: the frame it maps, its W and E bits, and D
    (dirty), kept for shmem pages only (F5)."""

    def __init__(self, frame: int, w: bool, e: bool):
        self.frame = frame
        self.w = w
        self.e = e
        self.d = False


class VMA:
    """One region as one address space maps it (prot, flags, anon_vma, accounting are per mm)."""

    def __init__(self, prot: str, dontfork: bool, wipeonfork: bool, anon_vma: bool = False,
                 accounted: bool = False, hugepage: bool = False):
        self.prot = prot
        self.dontfork = dontfork
        self.wipeonfork = wipeonfork
        self.hugepage = hugepage     # VM_HUGEPAGE: mmap thp=True or madvise "hugepage"
        self.anon_vma = anon_vma     # created by the first fault that allocates an anonymous page
        self.accounted = accounted   # VM_ACCOUNT: a private region charged for overcommit

    def copy_for_child(self) -> "VMA":
        """dup_mmap: same prot and flags; the anon_vma too, except for wipeonfork."""
        return VMA(self.prot, self.dontfork, self.wipeonfork, self.anon_vma and not self.wipeonfork,
                   self.accounted, self.hugepage)


class Table:
    """A PTE table. Under odf one table can be shared by several address spaces."""

    def __init__(self):
        self.sharers = 1


class MM:
    """An address space: its VMAs, its PTEs ((region, page) -> PTE), its huge
    PMDs ((region, page // 512) -> Huge, each with its deposited table in
    tables) and its tables."""

    def __init__(self):
        self.vmas: dict[int, VMA] = {}
        self.ptes: dict[tuple[int, int], PTE] = {}
        self.huge: dict[tuple[int, int], Huge] = {}
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
        for (reg, t), huge in proc.mm.huge.items():
            if reg == r and huge.folio is not None:
                for s, f in enumerate(huge.folio.frames):
                    out[t * HUGE_PAGES + s] = self._m.frames[f].tag
        return out

    def check_invariants(self) -> None:
        self._m.check_invariants()


class _Machine:
    def __init__(self, sc, policy: str, oom: str, zero_page: bool, overcommit: int, overcommit_ratio: int,
                 thp_cow: str = "split"):
        if thp_cow not in ("split", "copy"):
            raise ValueError(f"reference: unknown thp_cow {thp_cow!r}")
        if policy not in ("cow", "eager", "odf"):
            raise ValueError(f"reference: unknown policy {policy!r}")
        if oom not in ("largest", "faulting"):
            raise ValueError(f"reference: unknown oom {oom!r}")
        if overcommit not in (0, 1, 2):
            raise ValueError(f"reference: unknown overcommit {overcommit!r}")
        self.sc = sc
        self.policy = policy
        self.thp_cow = thp_cow
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
        self.page_cache: dict[int, dict[int, int]] = {}   # shared anonymous region -> page -> frame
        self.file_cache: dict[int, dict[int, int]] = {}   # file -> file page -> frame
        self.file_npages: dict[int, int] = {}             # file -> pages its page cache can hold
        self.procs: dict[int, Proc] = {}
        self.absent_vma_ops = 0                     # munmap/mprotect/madvise that found no VMA (for tests)
        self.faultaround_ooms = 0                   # shared read faults that found no frame (for tests)
        for p in sc.processes:
            self.procs[p.pid] = Proc(p.pid, p.name, 0 if p.parent is None else p.parent.pid)
        for f in sc.files:            # a mapped file's pages: all in the cache from the start if it is cached
            ends = [r.offset + r.npages for r in sc.regions if r.file is f]
            if ends:
                self.file_npages[f.index] = max([-(-f.initial_size // sc.page_size)] + ends)
                self.file_cache[f.index] = {}
                if f.cached:
                    for q in range(self.file_npages[f.index]):
                        self.file_cache[f.index][q] = self.alloc(cached=True)

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
        if pte.d:
            self.frames[pte.frame].dirty = True           # F5: unmapping a dirty PTE dirties its page
        if pte.frame != ZERO_PAGE:
            self.frames[pte.frame].mapcount -= 1
            assert self.frames[pte.frame].mapcount >= 0
            self.maybe_free(pte.frame)

    # -- the page cache (rules F1-F3) ---------------------------------------------
    def cache_frame(self, r: int, p: int) -> int | None:
        """The frame the page cache holds for page p of region r, None if it holds none."""
        region = self.sc.regions[r]
        if region.file is None:
            return self.page_cache[r].get(p)
        return self.file_cache[region.file.index].get(region.offset + p)

    def cache_get(self, proc: Proc, r: int, p: int) -> tuple[int | None, bool]:
        """(frame, major) of page p of region r from the page cache. A file page
        not in it is read (a major fault), then the rest of its read-around
        window (readahead bytes from half of it before the page, inside the
        file) while frames are free; a shmem page is zero-filled. Frame None:
        none was free for the page itself."""
        region = self.sc.regions[r]
        f = self.cache_frame(r, p)
        if f is not None:
            return f, False
        f = self.alloc(cached=True)
        if region.file is None:
            if f is not None:
                self.page_cache[r][p] = f
                proc.counters["zero_fills"] += 1
            return f, False
        if f is None:
            return None, True
        cache = self.file_cache[region.file.index]
        q = region.offset + p
        cache[q] = f
        ra = region.file.readahead // self.sc.page_size
        lo = max(0, q - ra // 2)
        for x in range(lo, min(lo + ra, self.file_npages[region.file.index])):
            if x not in cache:
                g = self.alloc(cached=True)
                if g is None:
                    break
                cache[x] = g
        return f, True

    def mark_dirty(self, r: int, p: int) -> None:
        """F5: a write through a MAP_SHARED mapping dirties the page-cache folio
        of page p of region r: for a file cached in folios larger than a page,
        every cached page of the folio's aligned block, else the page alone."""
        region = self.sc.regions[r]
        n = region.file.folio // self.sc.page_size if region.file is not None and region.file.cached else 1
        q = (region.offset + p if region.file is not None else p)
        lo = q - q % n
        for x in range(lo, lo + n):
            f = (self.file_cache[region.file.index] if region.file is not None else self.page_cache[r]).get(x)
            if f is not None:
                self.frames[f].dirty = True

    def fault_around(self, region) -> int:
        """Pages one read fault maps: a whole 2 MiB folio of a cached file mapped
        aligned, else fault_around_bytes."""
        f = region.file
        if f is not None and f.cached and f.folio >= HUGE_PAGES * self.sc.page_size \
                and region.offset % HUGE_PAGES == 0:
            return HUGE_PAGES
        return FAULT_AROUND_PAGES

    # -- huge pages (mm/huge_memory.c) -------------------------------------------
    def thp_eligible(self, vma: VMA, r: int, p: int) -> bool:
        """THP enabled on a private region, and the whole aligned 2 MiB range of p inside it."""
        region = self.sc.regions[r]
        return vma.hugepage and not region.shared and (p // HUGE_PAGES + 1) * HUGE_PAGES <= region.npages

    def folio_pinned(self, f: int) -> bool:
        """folio_maybe_dma_pinned: a pin on the page, or on any (live) page of its huge folio."""
        frame = self.frames[f]
        if frame.pins > 0:
            return True
        return frame.folio is not None and any(
            g in self.frames and self.frames[g].pins > 0 for g in frame.folio.frames)

    def new_folio(self, src: Folio | None) -> Folio:
        """512 new frames, a copy of src's tags (None: zero-filled). The caller checked they are free."""
        frames = []
        for s in range(HUGE_PAGES):
            f = self.alloc()
            assert f is not None
            if src is not None:
                self.frames[f].tag = self.frames[src.frames[s]].tag
            frames.append(f)
        folio = Folio(frames)
        for f in frames:
            self.frames[f].folio = folio
        return folio

    def install_huge(self, mm: MM, key: tuple[int, int], huge: Huge) -> None:
        """Map a PMD: every subpage's mapcount + 1."""
        assert key in mm.tables and key not in mm.huge
        mm.huge[key] = huge
        if huge.folio is not None:
            for f in huge.folio.frames:
                self.frames[f].mapcount += 1

    def drop_huge(self, mm: MM, key: tuple[int, int]) -> None:
        """Unmap a PMD: every subpage's mapcount - 1; frames may become free."""
        huge = mm.huge.pop(key)
        if huge.folio is not None:
            for f in huge.folio.frames:
                self.frames[f].mapcount -= 1
                self.maybe_free(f)

    def split_huge(self, proc: Proc, mm: MM, key: tuple[int, int]) -> None:
        """__split_huge_pmd: the PMD becomes 512 PTEs of the same subpages, same
        W and E, in the deposited table (no frame moves, mapcounts unchanged)."""
        huge = mm.huge.pop(key)
        r, t = key
        for s in range(HUGE_PAGES):
            f = ZERO_PAGE if huge.folio is None else huge.folio.frames[s]
            mm.ptes[(r, t * HUGE_PAGES + s)] = PTE(f, huge.w, huge.e)
        proc.counters["thp_splits"] += 1

    def huge_exclusive(self, folio: Folio) -> bool:
        """Every subpage is mapped once (by this PMD) and nothing pins the folio."""
        return (not self.folio_pinned(folio.frames[0])
                and all(self.frames[f].mapcount == 1 for f in folio.frames))

    def can_reuse(self, mm: MM, r: int, p: int, f: int) -> bool:
        """Rule 7 reuse of a page that is not E (wp_can_reuse_anon_folio). A
        small page: mapcount 1, no pin. A subpage of a huge folio: the folio is
        mapped by this address space alone, more than once in all, and unpinned."""
        frame = self.frames[f]
        if frame.folio is None:
            return frame.mapcount == 1 and frame.pins == 0
        if self.folio_pinned(f):
            return False
        live = {g for g in frame.folio.frames if g in self.frames}
        total = sum(self.frames[g].mapcount for g in live)
        t = p // HUGE_PAGES
        mine = sum(1 for s in range(HUGE_PAGES)
                   if (pte := mm.ptes.get((r, t * HUGE_PAGES + s))) is not None and pte.frame in live)
        return total > 1 and mine == total

    def huge_anonymous_fault(self, proc: Proc, mm: MM, vma: VMA, key: tuple[int, int], write: bool):
        """do_huge_pmd_anonymous_page, first touch of an empty eligible 2 MiB
        range: True done, False no frame (OOM), None fall back to 4 KiB pages."""
        zero = not write and self.zero_page
        if not zero and self.free() < HUGE_PAGES + 1:    # 512 frames and the deposited table
            return None
        if not self.new_table(mm, key):                  # the deposited table
            return False
        vma.anon_vma = True                              # even for the huge zero page
        if zero:
            self.install_huge(mm, key, Huge(None, False, False))
        else:
            self.install_huge(mm, key, Huge(self.new_folio(None), "w" in vma.prot, True))
            proc.counters["thp_fault_alloc"] += 1
        proc.counters["minor_faults"] += 1
        return True

    def huge_wp_fault(self, proc: Proc, mm: MM, key: tuple[int, int], huge: Huge) -> bool:
        """do_huge_pmd_wp_page, a write to a write-protected huge PMD: True when
        handled whole; False after a split (rule 7 then handles the 4 KiB page)."""
        c = proc.counters
        if huge.folio is not None and (huge.e or self.huge_exclusive(huge.folio)):
            huge.w = huge.e = True                       # reuse it whole
            c["minor_faults"] += 1
            c["cow_reuses"] += 1
            return True
        if self.free() >= WP_HUGE_FREE and (huge.folio is None or self.thp_cow == "copy"):
            # the huge zero page: a new huge folio (do_huge_zero_wp_pmd); "copy": all 2 MiB copied
            folio = self.new_folio(huge.folio)
            self.drop_huge(mm, key)
            self.install_huge(mm, key, Huge(folio, True, True))
            c["minor_faults"] += 1
            c["thp_fault_alloc" if huge.folio is None else "thp_copies"] += 1
            return True
        self.split_huge(proc, mm, key)
        return False

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
        for key in [k for k in mm.huge if k[0] == r]:
            self.drop_huge(mm, key)
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
            # exit_mmap walks every PTE mapping a page, but (odf) those of tables another mm still shares
            shared = {key for key, tab in mm.tables.items() if tab.sharers > 1}
            walked = self.rss(mm) - sum(1 for (r, p), pte in mm.ptes.items()
                                        if pte.frame != ZERO_PAGE and (r, p // PTES_PER_TABLE) in shared)
            frames = len(self.frames)
            for r in list(mm.vmas):
                self.unmap_region(mm, r)
            assert not mm.ptes and not mm.huge and not mm.tables
            proc.counters["exit_ptes_zapped"] += walked
            proc.counters["exit_pages_freed"] += frames - len(self.frames)

    def values(self, mm: MM) -> dict:
        rss = uss = 0
        pss = 0.0
        kinds = dict.fromkeys(("anon_pages", "file_pages", "shmem_pages", "private_clean_pages",
                               "private_dirty_pages", "shared_clean_pages", "shared_dirty_pages"), 0)
        for (r, _), pte in mm.ptes.items():
            if pte.frame == ZERO_PAGE:
                continue
            frame = self.frames[pte.frame]
            n = frame.mapcount
            rss += 1
            pss += 1.0 / n
            uss += n == 1
            # F5: a page-cache page is its file's or shmem's, clean until written; every other page is anonymous
            kind = ("file_pages" if self.sc.regions[r].file is not None else "shmem_pages") if frame.cached \
                else "anon_pages"
            dirty = frame.dirty or pte.d or not frame.cached
            kinds[kind] += 1
            kinds[f"{'private' if n == 1 else 'shared'}_{'dirty' if dirty else 'clean'}_pages"] += 1
        anon_huge = 0                                     # PMD-mapped huge pages (not the huge zero page)
        for huge in mm.huge.values():
            if huge.folio is None:
                continue
            anon_huge += 1
            for f in huge.folio.frames:
                n = self.frames[f].mapcount
                rss += 1
                pss += 1.0 / n
                uss += n == 1
                kinds["anon_pages"] += 1
                kinds["private_dirty_pages" if n == 1 else "shared_dirty_pages"] += 1
        return {"rss_pages": rss, "pss_pages": pss, "uss_pages": uss,
                "shared_pages": rss - uss, "pte_pages": len(mm.tables), "anon_huge_pages": anon_huge, **kinds}

    def rss(self, mm: MM) -> int:
        return (sum(1 for pte in mm.ptes.values() if pte.frame != ZERO_PAGE)
                + sum(HUGE_PAGES for huge in mm.huge.values() if huge.folio is not None))

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
            frames = len(self.frames)
            self.drop_pins(proc, list(proc.pins))
            proc.counters["exit_pages_freed"] += frames - len(self.frames)    # pinned pages nothing maps
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
        key = (r, p // PTES_PER_TABLE)
        huge = mm.huge.get(key)
        if huge is not None:                              # a huge PMD maps p
            if not write:                                 # rule 2
                return True
            if not huge.w and not self.huge_wp_fault(proc, mm, key, huge):
                huge = None                               # split: rule 7 below
            if huge is not None:
                if tag is not None:                       # rule 9
                    self.frames[mm.huge[key].folio.frames[p % HUGE_PAGES]].tag = tag
                return True
        elif key not in mm.tables and self.thp_eligible(vma, r, p):
            done = self.huge_anonymous_fault(proc, mm, vma, key, write)
            if done is not None:                          # else: fall back to rule 5
                if done and write and tag is not None:
                    self.frames[mm.huge[key].folio.frames[p % HUGE_PAGES]].tag = tag
                return done
        pte = mm.ptes.get((r, p))
        if pte is not None and (not write or pte.w):
            # rule 2 (read, present) and rule 6 (write, present and W): no fault
            if write and region.shared and region.file is None:
                pte.d = True                              # F5: a shmem write that took no fault
            if tag is not None:
                self.frames[pte.frame].tag = tag          # rule 9
            return True
        if pte is not None and region.shared and region.file is None:
            raise AssertionError("rule 8: a shared PTE is never write-protected while its prot has w")
        # a PTE of table t will be installed or changed: the page walk first
        # allocates the table (it stays, even if the page allocation fails), or
        # under odf copies a still-shared one
        if key not in mm.tables:
            if not self.new_table(mm, key):
                return False
        elif not self.own_table(proc, mm, *key):
            return False

        file = region.file is not None
        if (region.shared or file) and pte is None and not write:   # rule 4 / F1: do_read_fault
            n = self.fault_around(region)
            if p - p % n + n > region.npages:
                n = FAULT_AROUND_PAGES                    # a PMD maps whole 2 MiB of the VMA only
            w = writable and not file                     # file pages are mapped read-only
            lo = p - p % n
            for q in range(lo, min(lo + n, region.npages)):
                f = self.cache_frame(r, q)
                if f is not None and (r, q) not in mm.ptes:
                    self.install(mm, r, q, PTE(f, w, False))
            major = False
            if (r, p) not in mm.ptes:
                f, major = self.cache_get(proc, r, p)
                if f is None:
                    self.faultaround_ooms += 1           # (kept for tests)
                    return False
                for q in range(lo, min(lo + n, region.npages)) if major else [p]:   # F1: a major fault's
                    f = self.cache_frame(r, q)                                     # retry faults around again
                    if f is not None and (r, q) not in mm.ptes:
                        self.install(mm, r, q, PTE(f, w, False))
            c["major_faults" if major else "minor_faults"] += 1
            return True
        if region.shared and pte is None:                 # rule 4 / F2 write: do_shared_fault
            f, major = self.cache_get(proc, r, p)
            if f is None:
                return False
            self.mark_dirty(r, p)
            lo = p - p % HUGE_PAGES
            if self.fault_around(region) == HUGE_PAGES and lo + HUGE_PAGES <= region.npages:
                block = range(lo, lo + HUGE_PAGES)        # a 2 MiB folio is mapped whole, writable
            else:
                block = [p]
            for q in block:
                g = self.cache_frame(r, q)
                if g is not None and (r, q) not in mm.ptes:
                    self.install(mm, r, q, PTE(g, True, False))
            c["major_faults" if major else "minor_faults"] += 1
            if tag is not None:
                self.frames[f].tag = tag
            return True
        if region.shared:                                 # F2: wp_page_shared, no copy
            self.mark_dirty(r, p)
            pte.w = True
            c["minor_faults"] += 1
            if tag is not None:
                self.frames[pte.frame].tag = tag
            return True
        if file and pte is None:                          # F3: do_cow_fault
            f, major = self.cache_get(proc, r, p)
            if f is None:
                return False
            g = self.alloc()
            if g is None:
                return False                              # the page read stays in the cache
            self.frames[g].tag = self.frames[f].tag
            self.install(mm, r, p, PTE(g, True, True))
            vma.anon_vma = True
            c["cow_copies"] += 1
            c["major_faults" if major else "minor_faults"] += 1
            if tag is not None:
                self.frames[g].tag = tag
            return True
        if pte is None and not write and self.zero_page:   # rule 3
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
        elif pte.e or (not self.frames[pte.frame].cached
                       and self.can_reuse(mm, r, p, pte.frame)):   # rule 7, reuse (F3: never a file page)
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

    def frame_of(self, mm: MM, r: int, p: int) -> int:
        """The frame page p maps in mm, by its PTE or its huge PMD."""
        huge = mm.huge.get((r, p // HUGE_PAGES))
        if huge is not None:
            return ZERO_PAGE if huge.folio is None else huge.folio.frames[p % HUGE_PAGES]
        return mm.ptes[(r, p)].frame

    # -- pins (pin_user_pages FOLL_WRITE | FOLL_LONGTERM) ------------------------
    def pin(self, proc: Proc, r: int, pages) -> None:
        vma = proc.mm.vmas.get(r)
        if vma is None or "w" not in vma.prot:           # EFAULT: pins nothing
            return
        for p in pages:
            if not self.touch(proc, r, int(p), True, None, gup=True):
                return
            f = self.frame_of(proc.mm, r, int(p))
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

        def gets_own_page(pte: PTE) -> bool:
            if pte.frame == ZERO_PAGE or self.frames[pte.frame].cached:   # F4: a file page is mapped, not copied
                return False
            return self.policy == "eager" or self.folio_pinned(pte.frame)   # copy_present_page

        # huge PMDs: one with a pinned subpage is split in the parent first and
        # then copied as a PTE table (all 512 subpages count as pinned)
        huges = [(key, huge) for key, huge in sorted(pmm.huge.items()) if key[0] in copied]
        pinned_huge = [key for key, huge in huges
                       if huge.folio is not None and self.folio_pinned(huge.folio.frames[0])]
        whole_huge = [(key, huge) for key, huge in huges if key not in pinned_huge]
        huge_need = sum(HUGE_PAGES + 1 for _ in pinned_huge) + sum(
            (HUGE_PAGES if self.policy == "eager" and huge.folio is not None else 0) + 1   # + its deposited table
            for _, huge in whole_huge)

        def plan():
            to_copy = [(key, pte) for key, pte in sorted(pmm.ptes.items()) if key[0] in copied]
            pinned_tables = {(r, p // PTES_PER_TABLE) for (r, p), pte in to_copy
                             if gets_own_page(pte) and self.policy != "eager"}
            child_tables = {(r, p // PTES_PER_TABLE) for (r, p), _ in to_copy}
            new_tables = pinned_tables if self.policy == "odf" else child_tables
            return to_copy, pinned_tables, child_tables, new_tables

        to_copy, pinned_tables, child_tables, new_tables = plan()
        need = sum(1 for _, pte in to_copy if gets_own_page(pte)) + len(new_tables) + huge_need
        if self.free() < need:                            # ENOMEM: nothing is copied
            parent.counters["enomem"] += 1                 # fork(2) returned ENOMEM to the parent
            child.state = "fork_failed"
            return
        self.committed += sum(charges)
        for key in pinned_huge:
            self.split_huge(parent, pmm, key)
        if pinned_huge:
            to_copy, pinned_tables, child_tables, new_tables = plan()
        cmm = MM()
        for r, vma in inherited.items():
            cmm.vmas[r] = vma.copy_for_child()
            self.region_maps[r] += 1
        for key, huge in whole_huge:                      # copy_huge_pmd: one PMD entry, cow and odf alike
            assert self.new_table(cmm, key)               # its deposited table
            if self.policy == "eager" and huge.folio is not None:
                writable = "w" in cmm.vmas[key[0]].prot
                self.install_huge(cmm, key, Huge(self.new_folio(huge.folio), writable, True))
                child.counters["fork_pages_copied"] += HUGE_PAGES
            elif self.policy == "eager":                  # the huge zero page: shared as it is
                self.install_huge(cmm, key, Huge(None, False, False))
            else:                                         # both copies lose W and E
                huge.w = huge.e = False
                self.install_huge(cmm, key, Huge(huge.folio, False, False))
            child.counters["fork_pmds_copied"] += 1
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
            elif self.policy == "eager":   # the zero page, a file page: shared as they are
                self.install(cmm, r, p, PTE(pte.frame, False, False))
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
            child.counters["fork_tables_copied"] = len(child_tables)
        child.mm = cmm
        child.state = "running"

    # -- the op loop -----------------------------------------------------------
    def pages_of(self, op) -> np.ndarray:
        npages = self.sc.regions[op.region].npages
        return op.pages.pages(npages) if isinstance(op.pages, Pattern) else op.pages

    def steps(self):
        """The scenario's ops, a concurrently() block as its pieces."""
        for op in self.sc.ops:
            yield from interleave(op.pages) if op.code == PHASE else [op]

    def run(self) -> None:
        for op in self.steps():
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
                # a MAP_SHARED file mapping is backed by its file: no charge
                charged = region.file is None if region.shared else "w" in region.prot
                if charged and self.refused(region.npages):
                    proc.counters["enomem"] += 1          # MAP_FAILED: the region stays unmapped
                    continue
                if charged:
                    self.committed += region.npages
                mm.vmas[op.region] = VMA(region.prot, region.on_fork == "dontfork",
                                         region.on_fork == "wipeonfork", anon_vma=False,
                                         accounted=charged and not region.shared,
                                         hugepage=bool(getattr(region, "thp", False)))
                self.region_maps[op.region] = 1
                if region.shared and region.file is None:
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
                file = self.sc.regions[op.region].file is not None
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
                    elif pte.e or shared and (not file or self.frames[pte.frame].dirty):
                        pte.w = True        # shmem: no write notification; a shared file: once dirty
                for (r, t), huge in mm.huge.items():   # a huge PMD: as its PTEs would be
                    if r == op.region:
                        if "w" not in op.arg:
                            huge.w = False
                        elif huge.e:
                            huge.w = True
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
                    elif op.arg == "hugepage":
                        vma.hugepage = True
                    elif op.arg == "nohugepage":
                        vma.hugepage = False
                    else:
                        raise NotImplementedError(f"reference: advice {op.arg!r} is not modelled")
            elif op.code in (READ, WRITE):
                for p in self.pages_of(op):
                    if not self.touch(proc, op.region, int(p), op.code == WRITE,
                                      op.arg if op.code == WRITE else None):
                        break
            elif op.code == PIN:
                self.pin(proc, op.region, self.pages_of(op))
            elif op.code == UNPIN:
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
            pte_tables = {(r, p // PTES_PER_TABLE) for (r, p) in mm.ptes}
            assert not pte_tables & set(mm.huge), "a huge PMD over a PTE table"
            assert pte_tables | set(mm.huge) == set(mm.tables), "tables != PTEs' tables and huge PMDs"
            for (r, t), huge in mm.huge.items():
                assert r in mm.vmas and not self.sc.regions[r].shared, "a huge PMD outside a private VMA"
                assert (t + 1) * HUGE_PAGES <= self.sc.regions[r].npages, "a huge PMD past the region's end"
                assert mm.vmas[r].anon_vma, "a huge PMD in a region without anon_vma"
                assert mm.tables[(r, t)].sharers == 1, "a huge PMD's table is shared"
                assert not huge.w or huge.e, "a writable huge PMD that is not exclusive"
                if huge.folio is None:
                    assert not huge.w and not huge.e, "a writable huge zero page"
                    continue
                assert len(huge.folio.frames) == HUGE_PAGES
                for f in huge.folio.frames:
                    assert f in self.frames and self.frames[f].folio is huge.folio, "a huge PMD maps a freed frame"
                    count[f] = count.get(f, 0) + 1
            assert mm.users == sum(1 for q in live if q.mm is mm)
            for r, vma in mm.vmas.items():
                committed += self.sc.regions[r].npages if vma.accounted else 0
            for (r, p), pte in mm.ptes.items():
                assert r in mm.vmas, "a PTE outside every VMA"
                if self.sc.regions[r].shared and self.sc.regions[r].file is None and "w" in mm.vmas[r].prot:
                    assert pte.w, "a write-protected shared PTE in a writable region"
                if pte.frame != ZERO_PAGE:
                    assert pte.frame in self.frames, "a PTE maps a freed frame"
                    count[pte.frame] = count.get(pte.frame, 0) + 1
                    if not self.sc.regions[r].shared and not self.frames[pte.frame].cached:
                        assert mm.vmas[r].anon_vma, "an anonymous page in a region without anon_vma"
                    if not self.sc.regions[r].shared and self.frames[pte.frame].cached:
                        assert not pte.w and not pte.e, "a file page mapped writable or exclusive by a private mapping"
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
        cached = {f for cache in [*self.page_cache.values(), *self.file_cache.values()] for f in cache.values()}
        for f, frame in self.frames.items():
            assert frame.mapcount == count.get(f, 0), f"frame {f}: mapcount {frame.mapcount} != {count.get(f, 0)} PTEs"
            assert frame.pins == pins.get(f, 0), f"frame {f}: {frame.pins} pins != {pins.get(f, 0)} records"
            assert frame.cached == (f in cached)
            assert frame.mapcount > 0 or frame.cached or frame.pins > 0, f"frame {f} leaked"
        assert self.used() <= self.limit


def simulate(sc, policy: str = "cow", oom: str = "largest", zero_page: bool = True,
             overcommit: int = 0, overcommit_ratio: int = 50, thp_cow: str = "split") -> Reference:
    """Run scenario `sc` through the reference rules of docs/semantics.md."""
    m = _Machine(sc, policy, oom, zero_page, overcommit, overcommit_ratio, thp_cow)
    m.run()
    df = m.process_rows()
    return Reference(df, m.summary(df), m)
