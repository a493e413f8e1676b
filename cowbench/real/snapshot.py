"""`cb.snapshot(pid)` / `cowbench snapshot PID --out F`: a live process's address space and
resident set, read from /proc, as a scenario can hold them.

    snap = cb.snapshot(pid)          # /proc/PID/smaps, pagemap, kpageflags + kpagecount (root)
    snap.summary                     # Rss, Anonymous, file, shmem, THP, swap, VmPTE: in pages
    snap.check()                     # the same against smaps_rollup and status, side by side
    snap.save("p.snap.parquet"); snap = cb.Snapshot.load("p.snap.parquet")
    sc, proc = snap.scenario()       # a Scenario whose process has that layout and resident set

What is read:

- regions (`snap.regions`, one row per VMA): /proc/PID/smaps: address range, perms, offset,
  device, inode, path, every smaps field (converted to pages), VmFlags (dc: MADV_DONTFORK,
  wf: MADV_WIPEONFORK, hg/nh: MADV_(NO)HUGEPAGE), THPeligible; the kind of mapping
  (layout.kind_of) and what fork does with it (layout.copied_at_fork).
- residency (`snap.runs`): /proc/PID/pagemap for every VMA (only its populated ranges, found
  with the PAGEMAP_SCAN ioctl, when it is mostly empty), in chunks of 1 GiB of address space
  into NumPy arrays: present, swapped, file/shared (bit 61), exclusively mapped (bit 56);
  PAGEMAP_SCAN also says which pages map the zero page or the huge zero page and which
  ranges a huge PMD maps. As root, the PFNs give /proc/kpageflags (THP, KSM, shmem) and
  /proc/kpagecount (how many mappings share each page that is not exclusive); without root
  those read as unknown (mapcount 0 for shared pages), and the output says so.
  Pages are stored as runs of consecutive pages of one VMA with the same attributes, so a
  64 GiB process that a fork never touched is a few thousand rows. PFNs are not stored.

The process should be quiescent while it is read (blocked, stopped, or idle): a page it
maps or writes during the read may be counted in its old or its new state.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import time
import warnings

import numpy as np
import pandas as pd

from .._params import ScenarioError
from ..fileio import load_parquet, save_parquet
from . import layout as L
from .procfs import (KPF_KSM, KPF_SWAPBACKED, KPF_THP, PAGE_IS_HUGE, PAGE_IS_PFNZERO, PAGE_IS_PRESENT,
                     PAGE_IS_SWAPPED, PAGE_SIZE, PFN_MASK, PM_EXCLUSIVE, PM_FILE, PM_PRESENT, PM_SWAP, USER_TOP,
                     KPages, Pagemap, read_keyed, read_smaps, read_stat, shmem_devices, zero_pfn)

__all__ = ["Snapshot", "snapshot", "ApproximationWarning", "main"]

META_KEY = b"cowbench.snapshot"
FORMAT = 1
KB = PAGE_SIZE // 1024
_SPAN = 1 << 20             # pages of one VMA handled at a time (4 GiB of address space)


def _mthp_always() -> bool:
    """Whether some multi-size THP order is enabled "always": then any anonymous VMA may hold
    large folios, and kpageflags must be read for all of them."""
    import glob

    for path in glob.glob("/sys/kernel/mm/transparent_hugepage/hugepages-*/enabled"):
        try:
            with open(path) as f:
                if "[always]" in f.read():
                    return True
        except OSError:
            pass
    return False


_MTHP_ALWAYS = _mthp_always()
SMAPS_PAGES = {"Rss": "rss_pages", "Pss": "pss_pages", "Shared_Clean": "shared_clean_pages",
               "Shared_Dirty": "shared_dirty_pages", "Private_Clean": "private_clean_pages",
               "Private_Dirty": "private_dirty_pages", "Anonymous": "anon_pages", "AnonHugePages": "anon_huge_kb",
               "ShmemPmdMapped": "shmem_pmd_kb", "FilePmdMapped": "file_pmd_kb", "Swap": "swap_pages",
               "Locked": "locked_pages", "KSM": "ksm_pages"}
RUN_COLUMNS = ["vma", "page", "npages"] + list(L.FLAG_NAMES) + ["mapcount"]


class ApproximationWarning(UserWarning):
    """A scenario built from a real process holds something the simulator cannot model exactly."""


# --- reading --------------------------------------------------------------------------------------

def _regions(pid: int, smaps: list[dict]) -> pd.DataFrame:
    """One row per VMA below the user address-space top, kinds and fork behaviour included."""
    devs = shmem_devices()
    rows = []
    for v in smaps:
        if v["start"] >= USER_TOP:
            continue
        flags = v.get("VmFlags", "")
        row = {"vma": len(rows), "start": v["start"], "end": v["end"], "npages": (v["end"] - v["start"]) // PAGE_SIZE,
               "perms": v["perms"], "offset": v["offset"], "dev": v["dev"], "inode": v["inode"], "path": v["path"],
               "kind": L.kind_of(v["path"], v["perms"], v["dev"], flags, devs), "vmflags": flags,
               "on_fork": L.on_fork_of(flags), "thp_eligible": int(v.get("THPeligible", 0) or 0)}
        for k, name in SMAPS_PAGES.items():
            val = v.get(k, 0) or 0
            row[name] = val if name.endswith("_kb") else (val / KB if k == "Pss" else val // KB)
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        raise ScenarioError(f"snapshot: process {pid} has no mappings (a kernel thread, or a zombie)")
    return df


def _scan(pm: Pagemap, anyof: int) -> np.ndarray:
    """PAGEMAP_SCAN over the whole user address space: (start, end, categories) rows."""
    return pm.scan(0, USER_TOP - PAGE_SIZE, anyof, PAGE_IS_PFNZERO | PAGE_IS_HUGE | PAGE_IS_PRESENT | PAGE_IS_SWAPPED)


def _mark(ranges: np.ndarray, cat: int, lo_page: int, n: int) -> np.ndarray:
    """Boolean per page of [lo_page, lo_page + n): inside a scanned range having category cat."""
    out = np.zeros(n, dtype=bool)
    if len(ranges) == 0:
        return out
    sel = ranges[(ranges[:, 2] & np.uint64(cat)) != 0]
    a = (sel[:, 0] >> np.uint64(12)).astype(np.int64) - lo_page
    b = (sel[:, 1] >> np.uint64(12)).astype(np.int64) - lo_page
    keep = (b > 0) & (a < n)
    for x, y in zip(np.maximum(a[keep], 0).tolist(), np.minimum(b[keep], n).tolist()):
        out[x:y] = True
    return out


def _populated(ranges: np.ndarray, lo_page: int, n: int) -> list[tuple[int, int]]:
    """(offset, length) of the present-or-swapped ranges inside [lo_page, lo_page + n)."""
    if len(ranges) == 0:
        return []
    a = (ranges[:, 0] >> np.uint64(12)).astype(np.int64) - lo_page
    b = (ranges[:, 1] >> np.uint64(12)).astype(np.int64) - lo_page
    keep = (b > 0) & (a < n)
    a, b = np.maximum(a[keep], 0), np.minimum(b[keep], n)
    return list(zip(a.tolist(), (b - a).tolist()))


def _flags(e: np.ndarray, zero: np.ndarray, pmd: np.ndarray, kind: str, zpfn: int, kp: KPages | None,
           folios: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per page: FLAG bits (uint16) and mapcount (int32; 1 for exclusive pages, the kernel's
    count for shared ones as root, 0 where unknown) from raw pagemap entries. kpageflags
    (kp) is read for file pages always, for anonymous ones if `folios` (the VMA may hold
    large folios or KSM pages); kpagecount for every page that is not exclusive."""
    present = (e & np.uint64(PM_PRESENT)) != 0
    swapped = (e & np.uint64(PM_SWAP)) != 0
    file_ = present & ((e & np.uint64(PM_FILE)) != 0)
    excl = present & ((e & np.uint64(PM_EXCLUSIVE)) != 0)
    pfn = np.where(present, e & np.uint64(PFN_MASK), 0).astype(np.int64)
    zero = present & (zero | ((pfn == zpfn) & (zpfn != 0)))
    code = (present * L.PRESENT | swapped * L.SWAPPED | file_ * L.FILE | excl * L.EXCLUSIVE | zero * L.ZERO
            | (present & pmd) * L.PMD).astype(np.uint16)
    mapcount = excl.astype(np.int32)
    normal = present & ~zero & (kind != "pfnmap")
    if kind == "shmem":
        code[file_] |= L.SHMEM
    if kp is not None and normal.any():
        idx = np.flatnonzero(normal if folios else normal & file_)
        fl = kp.flags(pfn[idx])
        code[idx] |= (((fl & np.uint64(KPF_THP)) != 0) * L.THP | ((fl & np.uint64(KPF_KSM)) != 0) * L.KSM
                      | (((fl & np.uint64(KPF_SWAPBACKED)) != 0) & file_[idx]) * L.SHMEM).astype(np.uint16)
        shared = np.flatnonzero(normal & ~excl)
        if len(shared):
            mapcount[shared] = np.minimum(kp.counts(pfn[shared]), np.iinfo(np.int32).max).astype(np.int32)
    return code, mapcount


def _runs(vma: int, offset: int, code: np.ndarray, mapcount: np.ndarray) -> tuple | None:
    """Runs of consecutive populated pages with equal flags and mapcount, as arrays
    (vma, page, npages, state, mapcount), or None if nothing is populated."""
    keep = (code & (L.PRESENT | L.SWAPPED)) != 0
    idx = np.flatnonzero(keep)
    if len(idx) == 0:
        return None
    c, m = code[idx], mapcount[idx]
    brk = np.flatnonzero((np.diff(idx) != 1) | (np.diff(c) != 0) | (np.diff(m) != 0)) + 1
    starts = np.r_[0, brk]
    ends = np.r_[brk, len(idx)]
    return (np.full(len(starts), vma, dtype=np.int32), (idx[starts] + offset).astype(np.int64),
            (ends - starts).astype(np.int64), c[starts], m[starts])


def _runs_frame(parts: list[tuple]) -> pd.DataFrame:
    """One table of runs from _runs' arrays."""
    cols = ("vma", "page", "npages", "state", "mapcount")
    types = (np.int32, np.int64, np.int64, np.uint16, np.int32)
    if not parts:
        return pd.DataFrame({c: np.zeros(0, t) for c, t in zip(cols, types)})
    return pd.DataFrame({c: np.concatenate([p[i] for p in parts]).astype(t, copy=False)
                         for i, (c, t) in enumerate(zip(cols, types))})


def _merge_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Join runs that continue each other (split only where a VMA was read in pieces)."""
    if len(runs) < 2:
        return runs.reset_index(drop=True)
    v, p, n = runs.vma.to_numpy(), runs.page.to_numpy(), runs.npages.to_numpy()
    f, m = runs["state"].to_numpy(), runs.mapcount.to_numpy()
    cont = np.r_[False, (v[1:] == v[:-1]) & (p[1:] == p[:-1] + n[:-1]) & (f[1:] == f[:-1]) & (m[1:] == m[:-1])]
    group = np.cumsum(~cont) - 1
    out = runs.loc[~cont].copy()
    out["npages"] = np.bincount(group, weights=n).astype(np.int64)
    return out.reset_index(drop=True)


def _read_vma(pm: Pagemap, v, scanned: np.ndarray, zpfn: int, kp, use_scan: bool) -> list[tuple]:
    """Runs of one VMA, read span by span (4 GiB of address space at a time)."""
    lo, n = int(v.start) // PAGE_SIZE, int(v.npages)
    folios = v.kind != "anon" or v.thp_eligible or "mg" in v.vmflags.split() or _MTHP_ALWAYS
    out = []
    for s0 in range(0, n, _SPAN):
        k = min(_SPAN, n - s0)
        if use_scan:
            parts = _populated(scanned, lo + s0, k)
            if not parts:
                continue
        else:
            parts = [(0, k)]
        e = np.zeros(k, dtype=np.uint64)
        for off, ln in parts:
            pm.read(lo + s0 + off, ln, e[off: off + ln])
        zero = _mark(scanned, PAGE_IS_PFNZERO, lo + s0, k)
        pmd = _mark(scanned, PAGE_IS_HUGE, lo + s0, k)
        code, mc = _flags(e, zero, pmd, v.kind, zpfn, kp, folios)
        r = _runs(v.vma, s0, code, mc)
        if r is not None:
            out.append(r)
    return out


def snapshot(pid: int, *, kpage: bool | None = None) -> "Snapshot":
    """Read process `pid`'s address space and resident set (see the module docstring).

    kpage: read /proc/kpageflags and /proc/kpagecount for each resident page (THP, KSM,
    shmem and the mapcount of shared pages); None: wherever they are readable (root)."""
    if isinstance(pid, bool) or not isinstance(pid, (int, np.integer)) or pid <= 0:
        raise ScenarioError(f"The 'pid' parameter of snapshot must be a positive process id; got {pid!r}")
    pid = int(pid)
    if not os.path.exists(f"/proc/{pid}"):
        raise ScenarioError(f"snapshot: no process {pid} (/proc/{pid} does not exist)")
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        smaps = read_smaps(pid)
        stat = read_stat(pid)
        pm = Pagemap(pid)
    except PermissionError as e:
        raise ScenarioError(f"snapshot: cannot read /proc/{pid} ({e.strerror}): run as the process's owner or root")
    regions = _regions(pid, smaps)
    kp = KPages() if kpage is not False else None
    notes = [] if kpage is not False else ["kpageflags/kpagecount not read (kpage=False): THP folios, KSM and the "
                                           "mapcount of shared pages are unknown"]
    if kp is not None and not kp.readable:
        if kpage:
            raise ScenarioError(f"snapshot: kpage=True but {kp.why}")
        notes.append(f"no kpageflags/kpagecount ({kp.why}): THP folios, KSM and the mapcount of shared pages "
                     "are unknown")
        kp = None
    zpfn = zero_pfn()
    pfns = zpfn != 0
    if not pfns:
        notes.append("PFNs hidden (not root): zero pages found with PAGEMAP_SCAN, sharers unknown")
        if kp is not None:                       # kpageflags without PFNs would describe frame 0
            kp.close()
            kp = None
    try:
        scan_ok = pm.scan_usable()
        scanned = _scan(pm, PAGE_IS_PFNZERO | PAGE_IS_HUGE) if scan_ok else np.zeros((0, 3), np.uint64)
        parts = []
        for v in regions.itertuples(index=False):
            sparse = scan_ok and v.npages >= 8192 and (v.rss_pages + v.swap_pages) * 2 < v.npages
            sc = scanned
            if sparse:
                pop = pm.scan(int(v.start), int(v.end), PAGE_IS_PRESENT | PAGE_IS_SWAPPED, PAGE_IS_PRESENT)
                sc = np.concatenate([scanned, pop]) if len(pop) else scanned
                sc = sc[np.argsort(sc[:, 0], kind="stable")]
            got = _read_vma(pm, v, sc if sparse else scanned, zpfn, kp, sparse)
            parts.extend(got)
        if not scan_ok:
            notes.append("no PAGEMAP_SCAN (Linux < 6.7): huge PMDs and the huge zero page are not told apart")
        status = read_keyed(f"/proc/{pid}/status")
    except (FileNotFoundError, ProcessLookupError):
        raise ScenarioError(f"snapshot: process {pid} exited while it was read") from None
    finally:
        pm.close()
        if kp is not None:
            kp.close()
    runs = _merge_runs(_runs_frame(parts))
    regions = _with_anon_vma(regions, runs)
    meta = {
        "format": FORMAT, "pid": pid, "comm": stat["comm"], "ppid": stat["ppid"],
        "cmdline": _cmdline(pid), "exe": _readlink(f"/proc/{pid}/exe"),
        "taken": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "kernel": platform.release(), "page_size": PAGE_SIZE, "pfns": pfns, "kpage": kp is not None,
        "pagemap_scan": scan_ok, "seconds": round(time.perf_counter() - t0, 4),
        "cpu_seconds": round(time.process_time() - c0, 4), "notes": notes,
        "mem_total_kb": read_keyed("/proc/meminfo").get("MemTotal", 0), "thp": _thp_mode(),
        "rollup": _rollup(smaps),
        "status": {k: v for k, v in status.items() if isinstance(v, int) and k.startswith(("Vm", "Rss", "Hugetlb"))},
    }
    return Snapshot(meta, regions, runs)


def _with_anon_vma(regions: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """regions plus `resident` (present or swapped pages), `anon_vma` (a private VMA that maps an
    anonymous page, a swapped page or the huge zero page, or that smaps says holds anonymous
    memory) and `copied` (fork copies its PTEs)."""
    df = regions.copy()
    fl = runs["state"].to_numpy()
    anon = ((fl & L.PRESENT) != 0) & ((fl & L.FILE) == 0) & ((fl & L.ZERO) == 0)
    hz = ((fl & L.ZERO) != 0) & ((fl & L.PMD) != 0)
    sw = (fl & L.SWAPPED) != 0
    n = len(df)
    v = runs.vma.to_numpy()
    df["resident"] = np.bincount(v, weights=runs.npages.to_numpy(), minlength=n)[:n].astype(np.int64)
    has = np.bincount(v[anon | hz | sw], minlength=n)[:n] > 0
    private = df.perms.str[3] == "p"
    df["anon_vma"] = private.to_numpy() & (has | (df.anon_pages.to_numpy() > 0) | (df.swap_pages.to_numpy() > 0)) \
        & df.kind.isin(["anon", "file"]).to_numpy()
    df["copied"] = [L.copied_at_fork(k, o, a, f) for k, o, a, f in zip(df.kind, df.on_fork, df.anon_vma, df.vmflags)]
    return df


def _rollup(smaps: list[dict]) -> dict:
    """smaps_rollup as the sum of the smaps just read (kB): the same numbers without a second
    walk of the page tables."""
    out: dict[str, int] = {}
    for v in smaps:
        for k, val in v.items():
            if k[0].isupper() and isinstance(val, int) and k not in ("KernelPageSize", "MMUPageSize", "THPeligible",
                                                                     "ProtectionKey"):
                out[k] = out.get(k, 0) + val
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def _thp_mode() -> str:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            t = f.read()
        return t[t.index("[") + 1: t.index("]")]
    except (OSError, ValueError):
        return "unknown"


# --- the snapshot -----------------------------------------------------------------------------------

class Snapshot:
    """A process's address space and resident set at one moment (see the module docstring).

    meta: what was read and how (pid, comm, kernel, whether PFNs and kpageflags were readable,
    the kernel's own figures: smaps summed, status); regions: one row per VMA; runs: runs of
    pages with their attributes (`state` holds them as layout.FLAG bits)."""

    def __init__(self, meta: dict, regions: pd.DataFrame, runs: pd.DataFrame):
        self.meta = meta
        self.regions = regions
        self._runs = runs

    def __repr__(self) -> str:
        s = self.summary
        return (f"<Snapshot pid {self.meta['pid']} ({self.meta['comm']}): {len(self.regions)} VMAs, "
                f"Rss {s.rss_pages} pages, VmPTE {s.pte_pages} pages, {len(self._runs)} runs>")

    # -- tables --------------------------------------------------------------------------------------
    @property
    def runs(self) -> pd.DataFrame:
        """Runs of populated pages: vma, page (from the VMA's start), npages, one boolean column
        per attribute (present, swapped, file, exclusive, zero, pmd, thp, ksm, shmem) and mapcount
        (1 for exclusive pages; for shared ones the kernel's count as root, else 0: unknown)."""
        r = self._runs
        out = r[["vma", "page", "npages"]].copy()
        fl = r["state"].to_numpy()
        for i, name in enumerate(L.FLAG_NAMES):
            out[name] = (fl & (1 << i)) != 0
        out["mapcount"] = r.mapcount.to_numpy()
        return out

    def _per_vma(self, mask) -> np.ndarray:
        n = len(self.regions)
        r = self._runs
        sel = np.asarray(mask)
        return np.bincount(r.vma.to_numpy()[sel], weights=r.npages.to_numpy()[sel], minlength=n)[:n].astype(np.int64)

    def _masks(self):
        fl = self._runs["state"].to_numpy()
        kinds = self.regions.kind.to_numpy()[self._runs.vma.to_numpy()]
        present = (fl & L.PRESENT) != 0
        zero = (fl & L.ZERO) != 0
        normal = present & ~zero & (kinds != "pfnmap")
        file_ = normal & ((fl & L.FILE) != 0)
        shmem = file_ & (((fl & L.SHMEM) != 0) | (kinds == "shmem"))
        return dict(fl=fl, kinds=kinds, present=present, zero=zero, normal=normal, file=file_, shmem=shmem)

    @property
    def summary(self) -> pd.Series:
        """The process's memory as smaps_rollup and status count it, from the pagemap read, in
        pages (anon_huge_pages: PMD-mapped huge pages, 2 MiB each, as the simulator counts them)."""
        m = self._masks()
        n = self._runs.npages.to_numpy()
        fl = m["fl"]
        tc, _ = self._tables()
        anon_huge = m["normal"] & ((fl & L.PMD) != 0) & ~m["file"]
        return pd.Series({
            "rss_pages": int(n[m["normal"]].sum()),
            "anon_pages": int(n[m["normal"] & ~m["file"]].sum()),
            "file_pages": int(n[m["file"] & ~m["shmem"]].sum()),
            "shmem_pages": int(n[m["shmem"]].sum()),
            "anon_huge_pages": int(n[anon_huge].sum()) // L.HUGE_PAGES,
            "swap_pages": int(n[(fl & L.SWAPPED) != 0].sum()),
            "zero_pages": int(n[m["zero"]].sum()),
            "exclusive_pages": int(n[m["normal"] & ((fl & L.EXCLUSIVE) != 0)].sum()),
            "shared_pages": int(n[m["normal"] & ((fl & L.EXCLUSIVE) == 0)].sum()),
            "thp_folio_pages": int(n[m["normal"] & ((fl & L.THP) != 0)].sum()),
            "pte_pages": tc.total, "pte_tables": tc.pte, "pmd_tables": tc.pmd, "pud_tables": tc.pud,
            "vmas": len(self.regions),
        }, name=f"pid {self.meta['pid']}")

    def check(self) -> pd.DataFrame:
        """Each quantity of `summary` the kernel also reports, next to the kernel's figure, in
        pages: Rss, Anonymous, AnonHugePages and Swap summed over the smaps read just before the
        pagemap (what smaps_rollup says, without walking the page tables a second time),
        RssFile, RssShmem and VmPTE from status read just after it."""
        s, ro, st = self.summary, self.meta["rollup"], self.meta["status"]
        rows = [("Rss", "rss_pages", ro.get("Rss"), KB), ("Anonymous", "anon_pages", ro.get("Anonymous"), KB),
                ("AnonHugePages", "anon_huge_pages", ro.get("AnonHugePages"), 2048),
                ("RssFile", "file_pages", st.get("RssFile"), KB), ("RssShmem", "shmem_pages", st.get("RssShmem"), KB),
                ("Swap", "swap_pages", ro.get("Swap"), KB), ("VmPTE", "pte_pages", st.get("VmPTE"), KB)]
        out = []
        for kernel_name, col, kb, per in rows:
            k = None if kb is None else kb // per
            out.append({"quantity": kernel_name, "snapshot": int(s[col]), "kernel": k,
                        "match": k is not None and int(s[col]) == k})
        return pd.DataFrame(out)

    # -- page tables and fork, on the real layout -------------------------------------------------------
    def _tables(self):
        r = self._runs
        start = self.regions.start.to_numpy() // PAGE_SIZE
        lo = start[r.vma.to_numpy()] + r.page.to_numpy()
        return L.table_counts(lo, lo + r.npages.to_numpy())

    def fork_estimate(self) -> pd.Series:
        """What a COW fork of this process copies, on its real layout: PTEs (present and swapped,
        zero-page ones included), huge PMDs, page tables by level, and the child's Rss and VmPTE
        right after the fork (before it faults anything in itself)."""
        reg = self.regions
        r = self._runs
        copied = reg.copied.to_numpy()
        fl = r["state"].to_numpy()
        v = r.vma.to_numpy()
        n = r.npages.to_numpy()
        in_copied = copied[v]
        pmd = (fl & L.PMD) != 0
        kinds = reg.kind.to_numpy()[v]
        present = (fl & L.PRESENT) != 0
        normal = present & ((fl & L.ZERO) == 0) & (kinds != "pfnmap")
        _, idx = self._tables()
        start = reg.start.to_numpy() // PAGE_SIZE
        sel = in_copied & pmd
        lo = start[v[sel]] + r.page.to_numpy()[sel]
        huge_tables = L.expand(lo >> L.PTE_SHIFT, (lo + n[sel] - 1) >> L.PTE_SHIFT)
        c = reg[reg.copied]
        tc = L.child_tables(idx, c.start.to_numpy() // PAGE_SIZE, c.end.to_numpy() // PAGE_SIZE, huge_tables)
        pte_copied = int(n[in_copied & ~pmd & (present | ((fl & L.SWAPPED) != 0))].sum())
        return pd.Series({
            "fork_ptes_copied": pte_copied,
            "fork_pmds_copied": int(n[sel].sum()) // L.HUGE_PAGES,
            "fork_tables_copied": tc.pte - len(huge_tables),
            "child_pte_tables": tc.pte, "child_pmd_tables": tc.pmd, "child_pud_tables": tc.pud,
            "child_pte_pages": tc.total,
            "child_rss_pages": int(n[in_copied & normal].sum()),
        }, name="fork")

    # -- as a scenario ------------------------------------------------------------------------------------
    def pieces(self, thp: bool | None = None) -> list[L.Piece]:
        """The scenario regions this snapshot maps to (layout.plan_pieces)."""
        return L.plan_pieces(self.regions, {}, thp=thp)

    def scenario(self, *, thp: bool | None = None, phys_mem=None, name: str | None = None):
        """(Scenario, Process): a scenario whose one process has this snapshot's layout and
        resident set: every VMA a region (at its real offset in its 2 MiB range), every resident
        page written (zero pages and file pages read), huge-PMD ranges written with THP on.

        thp: None keeps each anonymous VMA's THP eligibility (smaps THPeligible); True or False
        turns THP on or off for every private anonymous VMA (a what-if). phys_mem: the
        simulated machine's memory (default: this host's MemTotal, at least 4x the Rss).
        Warns (ApproximationWarning) about what the simulator cannot hold: file pages (no page
        cache yet), swapped pages (no swap), pages shared with processes outside the scenario."""
        from ..scenario import Scenario

        check_thp("scenario", thp)
        s = self.summary
        if phys_mem is None:
            phys_mem = max(self.meta.get("mem_total_kb", 0) * 1024, 4 * s.rss_pages * PAGE_SIZE, 1 << 30)
        sc = Scenario(phys_mem=phys_mem, page_size=PAGE_SIZE)
        proc = sc.spawn(name or self.meta["comm"] or f"pid{self.meta['pid']}")
        pieces = self.pieces(thp)
        regions = L.map_pieces(proc, pieces)
        pages = self.piece_runs(pieces)
        notes = L.populate(proc, pieces, regions, pages, huge_first=thp is True)
        m = self._masks()
        shared_anon = int(self._runs.npages.to_numpy()[m["normal"] & ~m["file"]
                                                      & ((m["fl"] & L.EXCLUSIVE) == 0)].sum())
        for msg in approximation_notes(notes, shared_anon):
            warnings.warn(msg, ApproximationWarning, stacklevel=2)
        sc.pieces = pieces
        sc.regions_of = regions
        return sc, proc

    def piece_runs(self, pieces: list[L.Piece]) -> pd.DataFrame:
        """The runs split at piece boundaries, located in scenario regions: piece, page (region
        page), npages, state (FLAG bits)."""
        r = self._runs
        if len(r) == 0:
            return pd.DataFrame({"piece": [], "page": [], "npages": [], "state": []})
        cuts = [(p.vma, p.first) for p in pieces if p.first > 0]
        v, pg, n, fl = (r.vma.to_numpy().astype(np.int64), r.page.to_numpy(), r.npages.to_numpy(),
                        r["state"].to_numpy())
        if cuts:                                        # split runs that cross a head/body boundary
            extra_v, extra_p, extra_n, extra_f = [], [], [], []
            for cv, cf in cuts:
                hit = np.flatnonzero((v == cv) & (pg < cf) & (pg + n > cf))
                for i in hit.tolist():
                    extra_v.append(v[i]); extra_p.append(cf); extra_n.append(pg[i] + n[i] - cf); extra_f.append(fl[i])
                    n = n.copy(); n[i] = cf - pg[i]
            if extra_v:
                v = np.r_[v, extra_v]; pg = np.r_[pg, extra_p]; n = np.r_[n, extra_n]; fl = np.r_[fl, extra_f]
        piece, page = L.locate(pieces, v, pg)
        keep = piece >= 0
        return pd.DataFrame({"piece": piece[keep], "page": page[keep], "npages": n[keep], "state": fl[keep]})

    # -- files ----------------------------------------------------------------------------------------------
    def save(self, path) -> str:
        """Write the snapshot as one Parquet file (the runs; regions and meta in its metadata), atomically."""
        return str(save_parquet(path, self.runs, META_KEY, self.meta, {"regions": self.regions}))

    @classmethod
    def load(cls, path) -> "Snapshot":
        """Read a snapshot written by save() (or `cowbench snapshot --out`)."""
        df, meta, frames = load_parquet(path, META_KEY, "Snapshot.load", "snapshot",
                                        "a trace loads with cb.Trace.load")
        regions = frames["regions"]
        flags = np.zeros(len(df), dtype=np.uint16)
        for i, name in enumerate(L.FLAG_NAMES):
            flags |= (df[name].to_numpy(dtype=bool) * (1 << i)).astype(np.uint16)
        runs = pd.DataFrame({"vma": df.vma.to_numpy(np.int32), "page": df.page.to_numpy(np.int64),
                             "npages": df.npages.to_numpy(np.int64), "state": flags,
                             "mapcount": df.mapcount.to_numpy(np.int32)})
        return cls(meta, regions, runs)

    def detail(self) -> str:
        """One line: what this snapshot could see."""
        m = self.meta
        if m["pfns"] and m["kpage"]:
            return "root: PFNs, kpageflags (THP, KSM, shmem) and kpagecount (sharers) read"
        return "; ".join(m["notes"]) or "PFNs read"


def check_thp(func: str, thp) -> None:
    if thp not in (None, True, False):
        raise ScenarioError(f"The 'thp' parameter of {func} must be None, True or False; got {thp!r}")


def approximation_notes(notes: dict, shared_pages: int = 0) -> list[str]:
    """The warnings a scenario built from a real process carries, from populate()'s counts."""
    out = []
    nfile = notes.get("file_as_anon", 0) + notes.get("file_as_shared", 0)
    if nfile:
        out.append(L.FILE_APPROXIMATION.format(n=nfile, copied=notes.get("file_as_anon", 0),
                                               shared=notes.get("file_as_shared", 0)))
    if notes.get("swapped"):
        out.append(f"{notes['swapped']} swapped pages are left out (the simulator has no swap)")
    if notes.get("ksm"):
        out.append(f"{notes['ksm']} KSM pages are mapped as private pages (the simulator has no KSM)")
    if shared_pages:
        out.append(f"{shared_pages} anonymous pages are shared with other processes (a fork's relatives) or "
                   "mapped twice; the scenario maps them in this process alone")
    return out


# --- command line ------------------------------------------------------------------------------------------

def format_snapshot(snap: Snapshot) -> str:
    """The text `cowbench snapshot` prints."""
    m, s = snap.meta, snap.summary
    lines = [f"pid {m['pid']} ({m['comm']}): {m['cmdline'][:100]}",
             f"read in {m['seconds']:.3f} s ({m['cpu_seconds']:.3f} s CPU): {len(snap.regions)} VMAs, "
             f"{len(snap._runs):,} runs; {snap.detail()}", ""]
    chk = snap.check()
    chk["snapshot_mib"] = chk.snapshot * PAGE_SIZE / 2**20
    chk.loc[chk.quantity == "AnonHugePages", "snapshot_mib"] = chk.snapshot * 2
    with pd.option_context("display.width", 160):
        lines.append("the snapshot's counts (pages; AnonHugePages in 2 MiB pages) against the kernel's "
                     "(smaps summed, status):")
        lines.append(chk.to_string(index=False, float_format=lambda x: f"{x:,.1f}"))
    kinds = snap.regions.groupby("kind").agg(vmas=("vma", "size"), size_pages=("npages", "sum"),
                                             rss_pages=("rss_pages", "sum"), copied_at_fork=("copied", "sum"))
    lines += ["", "by kind of mapping (pages):", kinds.to_string()]
    lines += [f"\nexclusive pages {s.exclusive_pages:,}, shared with other mappings {s.shared_pages:,}, "
              f"zero-page mappings {s.zero_pages:,}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="cowbench snapshot",
        description="Read a live process's address space (smaps) and resident set (pagemap, and as root "
                    "kpageflags/kpagecount) and print its memory as the kernel counts it; --out saves it for "
                    "`cowbench predict FILE` and cb.Snapshot.load.",
        epilog="examples:\n  cowbench snapshot $(pidof redis-server) --out redis.snap.parquet\n"
               "  cowbench predict redis.snap.parquet --costs host.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pid", type=int, metavar="PID")
    ap.add_argument("--out", metavar="FILE", help="write the snapshot here (Parquet)")
    ap.add_argument("--no-kpage", action="store_true", help="do not read /proc/kpageflags and kpagecount")
    args = ap.parse_args(argv)
    try:
        snap = snapshot(args.pid, kpage=False if args.no_kpage else None)
    except ScenarioError as e:
        print(f"cowbench snapshot: {e}", file=sys.stderr)
        return 1
    print(format_snapshot(snap))
    if args.out:
        path = snap.save(args.out)
        print(f"\nwrote {path} ({os.path.getsize(path):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
