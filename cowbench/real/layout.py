"""A real address space in the simulator's terms: VMAs classified, the kernel's fork rules
applied to the real layout, and scenario regions laid out so that their page tables fall
where the real ones do.

Used by snapshot.py (one process at one moment) and trace.py (a process tree over time).
Nothing here reads /proc: the inputs are tables that the readers built.

Kinds of VMA (`kind`), from /proc/PID/maps and smaps VmFlags:

    anon         private anonymous ([heap], [stack], [anon:...], unnamed)
    shmem        MAP_SHARED on shmem/tmpfs (shared anonymous memory is /dev/zero on 00:01)
    file         private file mapping (text, data, relro of programs and libraries)
    file_shared  MAP_SHARED file mapping (not shmem)
    pfnmap       VM_PFNMAP / VM_IO ([vvar]): PTEs without struct pages, never in Rss
    special      [vdso], [uprobes]: kernel pages mapped like a file's

fork (dup_mmap, vma_needs_copy): a VMA with VmFlags `dc` (MADV_DONTFORK) is not
inherited; `wf` (MADV_WIPEONFORK) is inherited empty; otherwise its PTEs are copied
if it has an anon_vma (it once got an anonymous page: here, it maps an anonymous
page, a swapped page or the huge zero page now) or is VM_PFNMAP / VM_MIXEDMAP, and
not copied otherwise (the child faults them in again).

The page tables of a real process (VmPTE, mm_pgtables_bytes) are PTE tables (one per
2 MiB range holding a present or swapped PTE, plus the table the kernel deposits under
each anonymous huge PMD), PMD tables (one per 1 GiB range in use) and PUD tables (one
per 512 GiB). The simulator lays out every region from a 2 MiB boundary, so a region
here begins with `pad` untouched pages: its pages then fall in the same 2 MiB ranges as
the real VMA's. Two VMAs that share one 2 MiB range (small library segments) share one
real table but get one simulated table each: `table_counts` gives the real counts, so
that predictions can correct the simulated ones.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

PAGE_SHIFT = 12
PTE_SHIFT, PMD_SHIFT, PUD_SHIFT = 9, 18, 27         # pages per PTE table, PMD table, PUD table (log2)
HUGE_PAGES = 1 << PTE_SHIFT
SPECIAL = ("[vdso]", "[uprobes]", "[vsyscall]", "[sigpage]", "[vectors]")
PROT_OF = {"---": "none", "r--": "r", "rw-": "rw", "r-x": "rx", "rwx": "rwx", "-w-": "rw", "--x": "rx",
           "-wx": "rwx"}

#: Attribute bits of a page in a snapshot's runs (and a trace's states).
PRESENT, SWAPPED, FILE, EXCLUSIVE, ZERO, PMD, THP, KSM, SHMEM = (1 << i for i in range(9))
FLAG_NAMES = ("present", "swapped", "file", "exclusive", "zero", "pmd", "thp", "ksm", "shmem")

FILE_APPROXIMATION = ("file mappings are approximated until the simulator models the page cache: "
                      "{n} pages ({copied} of them as anonymous pages of mappings that fork copies, "
                      "{shared} as pages of shared read-only regions)")


def kind_of(path: str, perms: str, dev: str, vmflags: str, shmem_devs) -> str:
    """The kind of a VMA (see the module docstring)."""
    flags = vmflags.split()
    if "pf" in flags or "io" in flags:
        return "pfnmap"
    if path in SPECIAL:
        return "special"
    shared = perms[3] == "s"
    anonymous = path == "" or path.startswith("[") or (path.startswith("/dev/zero") and dev == "00:01")
    if shared:
        return "shmem" if anonymous or dev in shmem_devs else "file_shared"
    if anonymous:
        return "anon"
    return "file"


def on_fork_of(vmflags: str) -> str:
    """copy | dontfork (VmFlags dc: VM_DONTCOPY) | wipeonfork (wf: VM_WIPEONFORK)."""
    flags = vmflags.split()
    if "dc" in flags:
        return "dontfork"
    if "wf" in flags:
        return "wipeonfork"
    return "copy"


def prot_of(perms: str) -> str:
    """A scenario prot ("none", "r", "rw", "rx", "rwx") from the rwx of /proc/PID/maps."""
    return PROT_OF[perms[:3]]


def copied_at_fork(kind: str, on_fork: str, anon_vma: bool, vmflags: str) -> bool:
    """Whether fork copies this VMA's PTEs into the child (copy_page_range / vma_needs_copy)."""
    if on_fork != "copy":
        return False
    return bool(anon_vma) or kind == "pfnmap" or "mx" in vmflags.split()


# --- interval arithmetic over page numbers ------------------------------------------------------

def merge_intervals(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Union of closed integer intervals [lo, hi], as sorted disjoint intervals."""
    lo, hi = np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64)
    if len(lo) == 0:
        return lo, hi
    o = np.argsort(lo, kind="stable")
    lo, hi = lo[o], hi[o]
    reach = np.maximum.accumulate(hi)
    start = np.r_[True, lo[1:] > reach[:-1] + 1]
    idx = np.flatnonzero(start)
    return lo[idx], np.r_[reach[idx[1:] - 1], reach[-1]] if len(idx) > 1 else reach[-1:]


def count_in(lo: np.ndarray, hi: np.ndarray) -> int:
    """Integers in a union of closed intervals."""
    mlo, mhi = merge_intervals(lo, hi)
    return int((mhi - mlo + 1).sum())


def expand(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Every integer of a union of closed intervals, sorted (for small unions: table indices)."""
    mlo, mhi = merge_intervals(lo, hi)
    if len(mlo) == 0:
        return np.zeros(0, dtype=np.int64)
    n = mhi - mlo + 1
    base = np.repeat(mlo - np.r_[0, np.cumsum(n)[:-1]], n)
    return base + np.arange(int(n.sum()), dtype=np.int64)


def inside(points: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Which points lie in the union of closed intervals [lo, hi]."""
    mlo, mhi = merge_intervals(lo, hi)
    if len(mlo) == 0:
        return np.zeros(len(points), dtype=bool)
    i = np.searchsorted(mlo, points, side="right") - 1
    ok = i >= 0
    return ok & (points <= mhi[np.maximum(i, 0)])


# --- page tables of a real layout ---------------------------------------------------------------

@dataclass(frozen=True)
class TableCounts:
    """Page-table pages of an address space, by level (mm_pgtables_bytes / page size)."""

    pte: int          # PTE tables, deposited tables under huge PMDs included
    pmd: int
    pud: int

    @property
    def total(self) -> int:
        return self.pte + self.pmd + self.pud


def table_counts(run_lo: np.ndarray, run_hi: np.ndarray) -> tuple[TableCounts, dict]:
    """The page tables of an address space whose populated pages (present or swapped PTEs, and
    every page under a huge PMD) are the virtual page numbers in runs [run_lo, run_hi) . Also
    returns the table indices per level (sorted arrays), for child_tables."""
    lo, hi = np.asarray(run_lo, dtype=np.int64), np.asarray(run_hi, dtype=np.int64) - 1
    idx = {}
    for name, shift in (("pte", PTE_SHIFT), ("pmd", PMD_SHIFT), ("pud", PUD_SHIFT)):
        idx[name] = expand(lo >> shift, hi >> shift)
    return TableCounts(len(idx["pte"]), len(idx["pmd"]), len(idx["pud"])), idx


def child_tables(parent_idx: dict, copied_lo: np.ndarray, copied_hi: np.ndarray,
                 huge_tables: np.ndarray) -> TableCounts:
    """Tables a fork gives the child: at every level, each table of the parent whose range meets
    a copied VMA [copied_lo, copied_hi) (page numbers): copy_p4d/pud/pmd_range allocate the
    child's table wherever the parent's entry above is not none, and copy_pte_range fills it
    even if this VMA's part of it is empty. huge_tables: the PTE-table indices mapped by a huge
    PMD in copied VMAs (copy_huge_pmd deposits a fresh table for each)."""
    lo, hi = np.asarray(copied_lo, dtype=np.int64), np.asarray(copied_hi, dtype=np.int64) - 1
    out = {}
    for name, shift in (("pte", PTE_SHIFT), ("pmd", PMD_SHIFT), ("pud", PUD_SHIFT)):
        pts = parent_idx[name]
        out[name] = int(inside(pts, lo >> shift, hi >> shift).sum()) if len(lo) else 0
    return TableCounts(out["pte"], out["pmd"], out["pud"])


# --- scenario regions from real VMAs ------------------------------------------------------------

@dataclass
class Piece:
    """One scenario region standing for all or part of one real VMA.

    Real pages [first, first + npages) of the VMA (counted from its start) are region pages
    [pad, pad + npages); the region's first `pad` pages lie before the VMA in the same 2 MiB
    range and are never touched."""

    vma: int
    name: str
    first: int
    npages: int
    pad: int
    shared: bool
    prot: str
    on_fork: str
    thp: bool
    how: str                # "private" | "shared" | "file-as-anon" | "file-as-shared" | "pfnmap" | "skipped"

    @property
    def size_pages(self) -> int:
        return self.pad + self.npages


def file_pieces(vma: dict, anon_vma: bool) -> str:
    """How a file-backed VMA is represented in a scenario, until the simulator models files and
    a page cache (this is the one function that issue #12 replaces):

    - a private file mapping that fork copies (it has an anon_vma: its process wrote some of
      it, as data and relro segments): a private region whose every resident page is written,
      so fork copies all its PTEs as the kernel does; its clean file pages become anonymous
      pages (their sharing with other processes through the page cache is lost);
    - any other file mapping (text, read-only data, MAP_SHARED files): a shared region whose
      resident pages are read, so fork copies none of its PTEs and the child faults them in
      again, as the kernel does; its pages are frames of that region alone.

    Returns the piece's `how`: "file-as-anon" or "file-as-shared"."""
    if vma["kind"] == "file" and anon_vma:
        return "file-as-anon"
    return "file-as-shared"


def plan_pieces(regions: pd.DataFrame, pmd_ranges: dict, thp: bool | None = None) -> list[Piece]:
    """The scenario regions for a table of VMAs (columns start, end, perms, path, kind, on_fork,
    thp_eligible, anon_vma, resident: pages present or swapped). pmd_ranges[vma]: indices
    (within the VMA, in 2 MiB units from the VMA's first aligned 2 MiB) of huge-PMD ranges.
    thp: None keeps each VMA's THP eligibility, True/False sets it for every private anonymous
    VMA (a what-if). VMAs that hold nothing and can hold nothing (PROT_NONE reservations and
    guard areas) are skipped."""
    pieces = []
    for v in regions.itertuples(index=False):
        vma = v.vma
        npages = int((v.end - v.start) >> PAGE_SHIFT)
        pad = int((v.start >> PAGE_SHIFT) & (HUGE_PAGES - 1))
        label = os.path.basename(v.path) if v.path.startswith("/") else (v.path or v.kind)
        name = f"{vma}:{label}@{v.start:x}"
        prot = prot_of(v.perms)
        if prot == "none" and v.resident == 0:
            pieces.append(Piece(vma, name, 0, npages, pad, False, "none", v.on_fork, False, "skipped"))
            continue
        if v.kind == "anon":
            eligible = bool(v.thp_eligible) if thp is None else bool(thp)
            if eligible:
                head = min(npages, (-pad) % HUGE_PAGES)          # pages before the first 2 MiB boundary
                if head and npages - head >= HUGE_PAGES:
                    pieces.append(Piece(vma, name + "/head", 0, head, pad, False, prot, v.on_fork, False, "private"))
                    pieces.append(Piece(vma, name, head, npages - head, 0, False, prot, v.on_fork, True, "private"))
                    continue
            pieces.append(Piece(vma, name, 0, npages, pad, False, prot, v.on_fork, eligible and pad == 0
                                and npages >= HUGE_PAGES, "private"))
        elif v.kind in ("file", "file_shared"):
            how = file_pieces(v._asdict(), bool(v.anon_vma))
            shared = how == "file-as-shared"
            pieces.append(Piece(vma, name, 0, npages, pad, shared, prot, "copy" if shared and v.on_fork == "wipeonfork"
                                else v.on_fork, False, how))
        elif v.kind == "shmem":
            pieces.append(Piece(vma, name, 0, npages, pad, True, prot, v.on_fork if v.on_fork != "wipeonfork"
                                else "copy", False, "shared"))
        elif v.kind == "pfnmap":
            pieces.append(Piece(vma, name, 0, npages, pad, False, "r" if prot == "none" else prot, v.on_fork, False,
                                "pfnmap"))
        else:                               # special: kernel pages mapped like a file's
            pieces.append(Piece(vma, name, 0, npages, pad, True, "r" if prot == "none" else prot, v.on_fork, False,
                                "file-as-shared"))
    return pieces


def pieces_frame(pieces: list[Piece]) -> pd.DataFrame:
    """The pieces as a table (one row per scenario region)."""
    return pd.DataFrame([{**p.__dict__, "size_pages": p.size_pages} for p in pieces])


def locate(pieces: list[Piece], vma: np.ndarray, page: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Piece index and region page of each (vma, page within the VMA); piece -1 for skipped."""
    vma = np.asarray(vma, dtype=np.int64)
    page = np.asarray(page, dtype=np.int64)
    keys = np.array([(p.vma << 40) + p.first for p in pieces], dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    k = (vma << 40) + page
    pc = order[np.maximum(np.searchsorted(keys[order], k, side="right") - 1, 0)]
    first = np.array([p.first for p in pieces], dtype=np.int64)
    pad = np.array([p.pad for p in pieces], dtype=np.int64)
    pv = np.array([p.vma for p in pieces], dtype=np.int64)
    skipped = np.array([p.how == "skipped" for p in pieces], dtype=bool)
    ok = (pv[pc] == vma) & ~skipped[pc]
    return np.where(ok, pc, -1), page - first[pc] + pad[pc]


def map_pieces(proc, pieces: list[Piece]) -> list:
    """mmap every piece in scenario process `proc` (skipped ones get None); private pieces are
    mapped writable (their pages are written to make them resident) and without THP:
    populate() gives them their real prot and THP advice once the 4 KiB pages are in."""
    regions = []
    for p in pieces:
        if p.how == "skipped":
            regions.append(None)
            continue
        prot = p.prot if p.shared or p.how == "pfnmap" else "rw"
        on_fork = p.on_fork if not (p.shared and p.on_fork == "wipeonfork") else "copy"
        regions.append(proc.mmap(p.name, p.size_pages * proc.scenario.page_size, shared=p.shared, prot=prot,
                                 on_fork=on_fork))
    return regions


def populate(proc, pieces: list[Piece], regions: list, pages: pd.DataFrame, huge_first: bool = False) -> dict:
    """Make `proc`'s resident set the one in `pages` (columns piece, page (region page), npages,
    state: FLAG bits of each run), then give each piece its real prot and THP advice. Order, so that
    the simulator's faults build the real mapping: 4 KiB pages of private pieces are written (zero
    pages read), THP is enabled, then huge-PMD ranges are written (the huge zero page read), and
    shared pieces' pages are read. huge_first (a THP what-if for a process that ran without):
    THP is enabled first, so the first write into each empty aligned 2 MiB range of a THP piece
    maps a huge page, as it would have had the process run with THP on. Swapped pages are left
    out (the simulator has no swap). Returns counts of what was approximated."""
    notes = {"swapped": 0, "file_as_anon": 0, "file_as_shared": 0, "pfnmap": 0, "ksm": 0}
    if len(pages) == 0:
        groups = {}
    else:
        groups = {k: g for k, g in pages.groupby("piece", sort=True)}
    for i, (p, r) in enumerate(zip(pieces, regions)):
        if r is None:
            continue
        g = groups.get(i)
        if g is not None:
            fl = g["state"].to_numpy()
            notes["swapped"] += int(g.npages[(fl & SWAPPED) != 0].sum())
            notes["ksm"] += int(g.npages[(fl & KSM) != 0].sum())
            pres = (fl & PRESENT) != 0
            g = g[pres]
            fl = fl[pres]
        if p.shared or p.how == "pfnmap":
            if g is not None and len(g) and p.prot != "none":
                proc.read(r, pages=_pages(g))
                if p.how == "file-as-shared":
                    notes["file_as_shared"] += int(g.npages[(fl & ZERO) == 0].sum())
                elif p.how == "pfnmap":
                    notes["pfnmap"] += int(g.npages.sum())
            continue
        if g is not None and len(g):
            zero, pmd = (fl & ZERO) != 0, (fl & PMD) != 0
            if huge_first and p.thp:
                pmd = np.ones(len(fl), dtype=bool)           # every page after the advice
            if p.how == "file-as-anon":
                notes["file_as_anon"] += int(g.npages[((fl & FILE) != 0) & ~zero].sum())
            small_w, small_r = g[~pmd & ~zero], g[~pmd & zero]
            if len(small_w):
                proc.write(r, pages=_pages(small_w))
            if len(small_r):
                proc.read(r, pages=_pages(small_r))
        if p.thp:
            proc.madvise(r, "hugepage")
        if g is not None and len(g):
            huge_w, huge_r = g[pmd & ~zero], g[pmd & zero]
            if len(huge_w):
                proc.write(r, pages=_pages(huge_w))
            if len(huge_r):
                proc.read(r, pages=_pages(huge_r))
        if p.prot != "rw":
            proc.mprotect(r, p.prot)
    return notes


def _pages(g: pd.DataFrame) -> np.ndarray:
    """Every page of runs (page, npages), as one sorted array."""
    lo = g.page.to_numpy(dtype=np.int64)
    n = g.npages.to_numpy(dtype=np.int64)
    return expand(lo, lo + n - 1)
