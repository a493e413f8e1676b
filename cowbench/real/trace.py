"""`cb.trace(pid, seconds=, interval=)` / `cowbench trace PID` / `cowbench trace -- CMD ...`:
sample a live process tree's pagemap and record, page by page, what changed.

    tr = cb.trace(pid, seconds=10, interval=0.1)    # pid and its descendants, as they appear
    tr.events          # one row per run of pages of one process that changed in one sample
    tr.lifecycle       # births (forks), execs and exits
    tr.samples         # per sample and process: resident, exclusive, shared pages; tracer cost
    tr.save("t.parquet"); tr = cb.Trace.load("t.parquet")
    sc = tr.scenario()  # replays the forks and first writes in time order (cowbench.real.replay)

Every `interval` seconds the tracer lists the process's descendants (/proc/PID/task/*/children),
reads each one's /proc/PID/maps (no page walk) and its pagemap over every VMA (the populated
ranges only, found with PAGEMAP_SCAN, where a VMA is mostly empty), and compares each page's
entry with the previous sample's. Events (`event`):

    mapped     the page became present (kind: anon, zero (the zero page), file, shmem; `huge`:
               under a huge PMD, where PAGEMAP_SCAN was run: THP-eligible VMAs)
    written    a zero page or a private file page became an anonymous page (a first write)
    exclusive  a shared page became exclusively mapped (bit 56): `copied` says whether this
               process got a new frame (it wrote: a COW copy) or kept its frame (the other
               mappings went away: another process wrote its own copy, or exited)
    shared     an exclusive page became shared (a fork, KSM)
    unmapped   the page went away (munmap, MADV_DONTNEED, swap-out, reclaim of file pages)
    moved      an exclusive page is exclusive again but in another frame (PFNs only): copied on
               write after a fork that fell between two samples (the page never read as
               shared), or migrated (compaction, khugepaged): replayed as a write

A process's first sample records only how it differs from its parent's last sample (pages
it has that the parent had not, or in another frame), so a fork costs a few rows, not one per
page. `copied` needs PFNs (root); without them it is unknown (NA).

What sampling cannot see: a page written twice between samples (or twice at all: once it is
exclusive, later writes change nothing in pagemap) is one event; events between two samples
are known only to have happened in that interval, so the interval bounds the time resolution;
a page mapped and unmapped between samples is not seen; a process that is born and exits
between two samples is missed. Soft-dirty bits are not used (they do not work on this kernel).

Probe processes (cowbench.real.probe_fork: comm `cowbench-probe`) are recorded as births and
exits but not sampled: they only hold pages.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import resource
import shlex
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd

from .._params import ScenarioError
from ..fileio import load_parquet, save_parquet
from . import layout as L
from .probe import PROBE_NAME
from .procfs import (PAGE_IS_HUGE, PAGE_IS_PFNZERO, PAGE_IS_PRESENT, PAGE_IS_SWAPPED, PAGE_SIZE, PFN_MASK,
                     PM_EXCLUSIVE, PM_FILE, PM_PRESENT, PM_SWAP, USER_TOP, Pagemap, descendants, parse_smaps,
                     read_smaps, read_stat, shmem_devices, zero_pfn)

__all__ = ["Trace", "Tracer", "trace", "EVENTS", "main"]

EVENTS = ("mapped", "written", "exclusive", "shared", "unmapped", "moved")
KINDS = ("anon", "zero", "file", "shmem", "")
META_KEY = b"cowbench.trace"
FORMAT = 1
SEG_SHIFT = 18                         # state is kept in segments cut at every 2**18 pages (1 GiB)
_KEEP = np.uint64(PM_PRESENT | PM_SWAP | PM_FILE | PM_EXCLUSIVE | PFN_MASK)   # soft-dirty, uffd-wp, guard: ignored
_PRESENT, _SWAP, _FILE, _EXCL, _PFN = (np.uint64(x) for x in (PM_PRESENT, PM_SWAP, PM_FILE, PM_EXCLUSIVE, PFN_MASK))
MISSES = ("sampling misses: a page written twice (or again after its first write) is one event; events between "
          "two samples are only known to lie in that interval ({interval:g} s here), which bounds the time "
          "resolution; a page mapped and unmapped between samples, and a process born and gone between samples, "
          "are not seen")
PF_EXITING = 0x4                       # /proc/PID/stat flags: the process is in do_exit
SMAPS_EVERY = 2.0                      # seconds between smaps reads (VmFlags) of a process whose VMAs changed


# --- one traced process --------------------------------------------------------------------------

class _Proc:
    """A traced process: its pagemap, its VMAs and its last sample (blocks of raw entries)."""

    def __init__(self, pid: int, ppid: int, comm: str, born: int, probe: bool):
        self.pid, self.ppid, self.comm, self.born, self.probe = pid, ppid, comm, born, probe
        self.pm: Pagemap | None = None
        self.segs: dict[tuple, np.ndarray] = {}      # (first page, end page) -> raw entries of its pages
        self.stats = np.zeros(5, dtype=np.int64)     # present (not zero), exclusive, shared, zero, swapped
        self.vmas: list[dict] = []
        self.info: dict[tuple, dict] = {}            # (start, end, perms, path) -> VmFlags, THPeligible
        self.smaps_at = -1e9
        self.present: dict[tuple, int] = {}          # (start, end) -> present pages at the last sample
        self.exe = ""
        self.sampled = False
        self.spare: dict[tuple, np.ndarray] = {}     # the segments before the last: reused as read buffers
        self.maps_text: str | None = None
        self.rows: list[dict] = []
        self.mark: tuple | None = None               # (minflt, majflt, statm) at the last sample read

    def close(self):
        if self.pm is not None:
            self.pm.close()
            self.pm = None


def _vma_key(v: dict) -> tuple:
    return (v["start"], v["end"], v["perms"], v["path"])


class Tracer:
    """Samples process `pid` and its descendants every `interval` seconds.

    run(seconds) samples in this thread until `seconds` have passed (None: until the tree is
    gone) and returns the Trace; start() / stop() do the same in a background thread (for a
    program driven from this one). `until`: a callable checked after every sample; True stops.
    max_cpu: a share of a core the tracer may use (None: no limit); a sample that cost more
    delays the next one, so the interval grows rather than the cost (meta["samples"] / meta
    ["seconds"] says the rate reached). A sample in which no process of the tree faulted,
    changed its resident counts, was born or exited reads no pagemap (meta["idle_samples"])."""

    def __init__(self, pid: int, interval: float = 0.1, *, until=None, progress: bool = False,
                 max_cpu: float | None = None):
        if isinstance(pid, bool) or not isinstance(pid, (int, np.integer)) or pid <= 0:
            raise ScenarioError(f"The 'pid' parameter of trace must be a positive process id; got {pid!r}")
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0.001 <= interval <= 3600:
            raise ScenarioError(f"The 'interval' parameter of trace must be a number of seconds in "
                                f"[0.001, 3600]; got {interval!r}")
        if not os.path.exists(f"/proc/{pid}"):
            raise ScenarioError(f"trace: no process {pid} (/proc/{pid} does not exist)")
        if max_cpu is not None and (isinstance(max_cpu, bool) or not isinstance(max_cpu, (int, float))
                                    or not 0 < max_cpu <= 1):
            raise ScenarioError(f"The 'max_cpu' parameter of trace must be a share of a core in (0, 1] or None; "
                                f"got {max_cpu!r}")
        self.root = int(pid)
        self.interval = float(interval)
        self.max_cpu = max_cpu
        self.until = until
        self.progress = progress
        self.procs: dict[int, _Proc] = {}
        self.gone: dict[int, _Proc] = {}
        self.zero_pfn = zero_pfn()
        self.pfns = self.zero_pfn != 0
        self.shmem_devs = shmem_devices()
        self._ev: list[tuple] = []
        self._life: list[tuple] = []
        self._samples: list[tuple] = []
        self._vma_rows: dict[tuple, dict] = {}
        self._times: list[float] = []
        self._stop = threading.Event()
        self.skipped = 0                               # samples that found nothing could have changed
        self._thread: threading.Thread | None = None
        self._result: Trace | None = None
        self._error: BaseException | None = None
        self.t0 = time.monotonic()
        self.cpu0 = None

    # -- running ------------------------------------------------------------------------------
    def run(self, seconds: float | None = None) -> "Trace":
        """Sample until `seconds` have passed, the tree is gone, until() or stop(); the Trace."""
        from tqdm.auto import tqdm

        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                    or seconds <= 0):
            raise ScenarioError(f"The 'seconds' parameter of trace must be a positive number or None; got {seconds!r}")
        self.t0 = time.monotonic()
        self.cpu0 = _thread_cpu()
        wall0 = _dt.datetime.now(_dt.timezone.utc)
        bar = tqdm(total=None if seconds is None else round(seconds / self.interval), unit="sample",
                   disable=not self.progress, desc=f"trace {self.root}")
        s = 0
        next_at = self.t0
        try:
            while not self._stop.is_set():
                t = time.monotonic() - self.t0
                c0 = time.thread_time()
                alive = self._sample(s, t)
                cost = time.thread_time() - c0
                self._samples_cost(s, cost)
                bar.update(1)
                s += 1
                if not alive or (seconds is not None and t >= seconds) or (self.until and self.until()):
                    break
                now = time.monotonic()
                next_at = max(next_at + self.interval, now)          # late: the next at once, no burst
                if self.max_cpu is not None:                         # rest long enough to stay within budget
                    next_at = max(next_at, now + cost * (1 / self.max_cpu - 1))
                delay = next_at - now
                if delay > 0:
                    self._stop.wait(delay)
        finally:
            bar.close()
            for p in list(self.procs.values()) + list(self.gone.values()):
                p.close()
        cpu = _thread_cpu() - self.cpu0
        wall = time.monotonic() - self.t0
        return self._trace(wall0, wall, cpu, s)

    def start(self) -> "Tracer":
        """Sample in a background thread until stop()."""
        def body():
            try:
                self._result = self.run(None)
            except BaseException as e:          # handed to stop()
                self._error = e

        self._thread = threading.Thread(target=body, name=f"cowbench-trace-{self.root}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> "Trace":
        """Stop a start()ed tracer after its current sample; the Trace."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result

    # -- one sample ---------------------------------------------------------------------------
    def _sample(self, s: int, t: float) -> bool:
        """Sample every live process of the tree once; False when none is left."""
        self._times.append(t)
        pids = [self.root] + descendants(self.root) if os.path.exists(f"/proc/{self.root}") else []
        live = set()
        st_of = {}
        for pid in pids:
            try:
                st = st_of[pid] = read_stat(pid)
            except OSError:
                continue
            if st["state"] in ("Z", "X") or st["flags"] & PF_EXITING:
                continue                                 # exiting: its pages are being torn down, not written
            live.add(pid)
            p = self.procs.get(pid)
            if p is None:
                p = _Proc(pid, st["ppid"] if pid != self.root else 0, st["comm"], s,
                          st["comm"] == PROBE_NAME.decode()[:15])
                p.exe = _readlink(f"/proc/{pid}/exe")
                self.procs[pid] = p
                self._life.append((s, t, pid, p.ppid, "birth" if pid != self.root else "traced", p.comm, p.probe))
            else:
                if st["comm"] != p.comm:
                    if st["comm"] == PROBE_NAME.decode()[:15]:
                        p.probe = True
                        self._forget(pid)
                        self._life.append((s, t, pid, p.ppid, "probe", st["comm"], True))
                    else:
                        exe = _readlink(f"/proc/{pid}/exe")
                        self._life.append((s, t, pid, p.ppid, "exec", st["comm"], p.probe))
                        p.exe, p.segs, p.info, p.smaps_at = exe, {}, {}, -1e9
                        p.stats = np.zeros(5, dtype=np.int64)
                        p.sampled = False
                    p.comm = st["comm"]
        for pid in [q for q in self.procs if q not in live]:
            p = self.procs.pop(pid)
            p.close()
            self.gone[pid] = p
            self._life.append((s, t, pid, p.ppid, "exit", p.comm, p.probe))
        # Nothing can have changed in any page table of the tree if no process faulted, none changed
        # its resident counts and none was born, exec'd or exited: then the sample reads no pagemap
        marks = {pid: self._mark(pid, st_of.get(pid)) for pid in self.procs}
        if (not self._life_changed(s) and all(p.sampled or p.probe for p in self.procs.values())
                and all(marks[pid] is not None and marks[pid] == p.mark for pid, p in self.procs.items())):
            for p in self.procs.values():
                if not p.probe:
                    self._samples.append([s, p.pid, *p.stats.tolist(), len(p.vmas)])
            self.skipped += 1
            return bool(self.procs)
        for pid, p in self.procs.items():
            p.mark = marks[pid]
        # parents first: a newborn's first sample is compared with its parent's previous one
        prev = {pid: (p.segs, p.stats, p.sampled) for pid, p in self.procs.items()}
        for pid in sorted(self.procs, key=lambda q: (self.procs[q].born, q)):
            p = self.procs[pid]
            if p.probe:
                continue
            try:
                self._sample_proc(p, s, t, prev)
            except (FileNotFoundError, ProcessLookupError):
                pass                                 # exited meanwhile: the next sample says so
        return bool(self.procs)

    def _forget(self, pid: int) -> None:
        """Drop what was sampled of pid: a probe caught between its fork and its PR_SET_NAME was
        sampled as a process of the tree (its copy of the parent's pages), and a probe is not
        sampled. Its birth stays in the life table."""
        self._ev = [e for e in self._ev if not (len(e[1]) and e[1][0] == pid)]
        self._samples = [row for row in self._samples if row[1] != pid]
        self._vma_rows = {key: row for key, row in self._vma_rows.items() if key[0] != pid}

    def _mark(self, pid: int, st: dict | None):
        """What says a process's page tables may have changed: its fault counts and statm."""
        if st is None:
            return None
        try:
            with open(f"/proc/{pid}/statm") as f:
                statm = f.read()
        except OSError:
            return None
        return (st["minflt"], st["majflt"], statm)

    def _life_changed(self, s: int) -> bool:
        return bool(self._life) and self._life[-1][0] == s

    def _sample_proc(self, p: _Proc, s: int, t: float, prev: dict) -> None:
        if p.pm is None:
            p.pm = Pagemap(p.pid)
        vmas = self._vmas(p, s, t)
        if not vmas:                                     # exiting (its mm is gone): the exit shows next sample
            return
        new, zero, pmd = self._read(p, vmas)
        unknown = False
        if not p.sampled and p.pid != self.root and p.ppid in self.procs:
            psegs, pstats, psampled = prev[p.ppid]
            if psampled:
                base = psegs                             # a newborn: against its parent's last sample
            else:                                        # both new (the child was there when the trace began):
                base, unknown = self.procs[p.ppid].segs, True    # against the parent now, history unknown
            first = True
        else:
            base = p.segs
            first = False
        self._diff(p, s, base, new, zero, pmd, vmas, first, unknown)
        p.spare, p.segs = p.segs, new
        p.sampled = True

    def _vmas(self, p: _Proc, s: int, t: float) -> list[dict]:
        """p's VMAs below the user top, each with its VmFlags, THPeligible and kind; /proc/PID/maps
        is parsed again only when its text changed, and smaps read (for VmFlags) when a VMA is new,
        at most every SMAPS_EVERY seconds."""
        with open(f"/proc/{p.pid}/maps") as f:
            text = f.read()
        if text == p.maps_text and p.vmas:
            for row in p.rows:
                row["last_sample"] = s
            return p.vmas
        vmas = [v for v in parse_smaps(text) if v["start"] < USER_TOP]
        unknown = [v for v in vmas if _vma_key(v) not in p.info]
        # smaps walks every page table (as costly as the pagemap): read it for the VmFlags of new VMAs
        # at the first sample, then only for new VMAs of 2 MiB or more, at most every SMAPS_EVERY s
        big = any(v["end"] - v["start"] >= 2 << 20 for v in unknown)
        if unknown and (not p.sampled or big):
            if t - p.smaps_at >= (0 if not p.sampled else SMAPS_EVERY):
                for v in read_smaps(p.pid):
                    p.info[_vma_key(v)] = {"vmflags": v.get("VmFlags", ""),
                                           "thp_eligible": int(v.get("THPeligible", 0) or 0)}
                p.smaps_at = t
            else:
                text = None                              # a large VMA still unknown: look again next time
        rows = []
        for v in vmas:
            key = (p.pid,) + _vma_key(v)
            row = self._vma_rows.get(key)
            inf = p.info.get(_vma_key(v))
            if row is not None and (inf is None or row["vmflags"] == inf["vmflags"]):
                v.update(vmflags=row["vmflags"], thp_eligible=row["thp_eligible"], kind=row["kind"])
                row["last_sample"] = s                   # seen before: its kind is known
                rows.append(row)
                continue
            inf = inf or {"vmflags": "", "thp_eligible": 0}
            v.update(inf)
            v["kind"] = L.kind_of(v["path"], v["perms"], v["dev"], v["vmflags"], self.shmem_devs)
            if row is None:
                row = self._vma_rows[key] = {
                    "pid": p.pid, "start": v["start"], "end": v["end"], "perms": v["perms"], "offset": v["offset"],
                    "dev": v["dev"], "inode": v["inode"], "path": v["path"], "kind": v["kind"],
                    "vmflags": v["vmflags"], "on_fork": L.on_fork_of(v["vmflags"]),
                    "thp_eligible": v["thp_eligible"], "first_sample": s, "last_sample": s}
            else:                                        # VmFlags learnt since it was first seen
                row.update(vmflags=v["vmflags"], on_fork=L.on_fork_of(v["vmflags"]), kind=v["kind"],
                           thp_eligible=v["thp_eligible"], last_sample=s)
            rows.append(row)
        p.maps_text, p.vmas, p.rows = text, vmas, rows
        return vmas

    def _read(self, p: _Proc, vmas: list[dict]):
        """New segments of raw entries, and per segment the pages that map the zero page or lie
        under a huge PMD (PAGEMAP_SCAN over THP-eligible VMAs; without PFNs, over private
        anonymous VMAs for zero pages too). A segment is a run of adjacent VMAs (a library's
        text, data and bss: one read) or the populated ranges of a mostly empty VMA, cut at
        every 2**SEG_SHIFT pages so that a large VMA's segments keep their keys."""
        pm = p.pm
        new: dict[tuple, np.ndarray] = {}
        spare = p.spare
        zero: dict[tuple, np.ndarray] = {}
        pmd: dict[tuple, np.ndarray] = {}
        reads: list[tuple[int, int, bool]] = []          # (first page, end page, sparse) to read
        for v in vmas:
            if v["kind"] == "pfnmap":
                continue
            lo, hi = v["start"] >> 12, v["end"] >> 12
            n = hi - lo
            key = (v["start"], v["end"])
            last = p.present.get(key)
            if n >= 8192 and (last is None or 2 * last < n) and pm.scan_usable():
                r = pm.scan(v["start"], v["end"], PAGE_IS_PRESENT | PAGE_IS_SWAPPED, 0)
                ranges = [(int(a) >> 12, int(b) >> 12) for a, b, _ in r.tolist()]
                reads.extend((a, b, True) for a, b in ranges)
                p.present[key] = sum(b - a for a, b in ranges)
            else:
                if reads and not reads[-1][2] and reads[-1][1] == lo:
                    reads[-1] = (reads[-1][0], hi, False)        # adjacent to the last dense VMA: one read
                else:
                    reads.append((lo, hi, False))
                p.present[key] = n
        for a, b, sparse in reads:
            x = a
            while x < b:
                y = min(b, ((x >> SEG_SHIFT) + 1) << SEG_SHIFT)
                sk = (x, y)
                arr = spare.pop(sk, None)                      # a buffer of two samples ago, or a fresh one
                if arr is None:
                    arr = np.empty(y - x, dtype=np.uint64)
                new[sk] = pm.read(x, y - x, arr)
                x = y
        keys = sorted(new)
        for v in vmas:
            want_zero = v["kind"] == "anon" and (not self.pfns or v["thp_eligible"])
            if (v["thp_eligible"] or want_zero) and pm.scan_usable():
                r = pm.scan(v["start"], v["end"], PAGE_IS_PFNZERO | PAGE_IS_HUGE, PAGE_IS_PFNZERO | PAGE_IS_HUGE)
                for a, b, cat in r.tolist():
                    for target, bit in ((zero, PAGE_IS_PFNZERO), (pmd, PAGE_IS_HUGE)):
                        if cat & bit:
                            _mark_segs(target, keys, a >> 12, b >> 12)
        return new, zero, pmd

    def _diff(self, p: _Proc, s: int, base: dict, new: dict, zero: dict, pmd: dict, vmas: list[dict],
              first: bool, unknown: bool = False) -> None:
        """Events of process p at sample s: its new segments against `base` (its own last sample,
        or its parent's for a newborn); its running counts follow from the changed pages alone."""
        starts = np.array([v["start"] >> 12 for v in vmas], dtype=np.int64)
        kinds = np.array([KINDS.index(_event_kind(v["kind"])) for v in vmas], dtype=np.int8)
        private_file = np.array([v["kind"] == "file" for v in vmas], dtype=bool)
        old_keys = sorted(base)
        old_starts = [k[0] for k in old_keys]
        covered: dict[tuple, np.ndarray | None] = {}     # old segment -> pages still mapped (None: all)
        if first:
            p.stats = self._count(new, zero)
        for key in sorted(new):
            e = new[key]
            o = _old_view(base, old_keys, old_starts, key, covered)
            ch = np.flatnonzero(o != e)                  # raw entries: the bits _KEEP drops rarely change
            if len(ch):
                oc, ec = o[ch] & _KEEP, e[ch] & _KEEP
                keep = oc != ec
                if first:                                # only what differs from the parent, not what it lost
                    keep &= (ec & _PRESENT) != 0
                ch, oc, ec = ch[keep], oc[keep], ec[keep]
            if len(ch):
                zb, hb = zero.get(key), pmd.get(key)
                self._classify(p, s, key[0], ch, oc, ec, None if zb is None else zb[ch], starts, kinds,
                               private_file, first, unknown, None if hb is None else hb[ch])
        if not first:                                    # pages of old segments no longer mapped at all
            for key in old_keys:
                mask = covered.get(key, False)
                if mask is None:
                    continue
                o = base[key] & _KEEP
                gone = (o & (_PRESENT | _SWAP)) != 0
                if mask is not False:
                    gone &= ~mask
                ch = np.flatnonzero(gone)
                if len(ch):
                    self._classify(p, s, key[0], ch, o[ch], np.zeros(len(ch), np.uint64), None, starts, kinds,
                                   private_file, first)
        self._samples.append([s, p.pid, *p.stats.tolist(), len(vmas)])

    def _count(self, segs: dict, zero: dict) -> np.ndarray:
        """present (not zero), exclusive, shared, zero, swapped pages over all segments."""
        out = np.zeros(5, dtype=np.int64)
        for key, e in segs.items():
            pres = (e & _PRESENT) != 0
            z = self._is_zero(e, zero.get(key))
            ex = (e & _EXCL) != 0
            out += (int((pres & ~z).sum()), int(ex.sum()), int((pres & ~z & ~ex).sum()), int(z.sum()),
                    int(np.count_nonzero(e & _SWAP)))
        return out

    def _is_zero(self, x: np.ndarray, zb) -> np.ndarray:
        """Which entries map the zero page (by PFN, as root) or were scanned as zero/huge zero."""
        z = np.zeros(len(x), dtype=bool) if zb is None else zb.copy()
        if self.pfns:
            z |= (x & _PFN) == np.uint64(self.zero_pfn)
        return z & ((x & _PRESENT) != 0)

    def _classify(self, p, s, first_page, ch, o, e, zb, starts, kinds, private_file, first, unknown=False,
                  huge=None) -> None:
        op, ep = (o & _PRESENT) != 0, (e & _PRESENT) != 0
        ox, ex = (o & _EXCL) != 0, (e & _EXCL) != 0
        of, ef = (o & _FILE) != 0, (e & _FILE) != 0
        oz, ez = self._is_zero(o, None), self._is_zero(e, zb)
        osw, esw = (o & _SWAP) != 0, (e & _SWAP) != 0
        if not first:
            p.stats += (int((ep & ~ez).sum()) - int((op & ~oz).sum()), int(ex.sum()) - int(ox.sum()),
                        int((ep & ~ez & ~ex).sum()) - int((op & ~oz & ~ox).sum()), int(ez.sum()) - int(oz.sum()),
                        int(esw.sum()) - int(osw.sum()))
        page = np.int64(first_page) + ch.astype(np.int64)
        vi = np.maximum(np.searchsorted(starts, page, side="right") - 1, 0)
        both = op & ep
        samepfn = (o & _PFN) == (e & _PFN)
        pfnchg = ~samepfn if self.pfns else None
        written = both & ((oz & ~ez) | (of & ~ef & private_file[vi]))
        code = np.full(len(ch), -1, dtype=np.int8)
        code[ep & ~op] = 0                                          # mapped
        code[written] = 1                                           # written
        code[both & ~written & ~ox & ex] = 2                        # exclusive
        code[both & ~written & ox & ~ex] = 3                        # shared
        if self.pfns:
            code[both & ~written & ox & ex & pfnchg] = 5            # moved: a new frame, exclusive before and after
        if first:
            code[code == 3] = -1                                    # every inherited page: implied by the fork
        else:
            code[op & ~ep] = 4                                      # unmapped
        kind = np.where(ez, KINDS.index("zero"), np.where(ef, np.where(kinds[vi] == KINDS.index("shmem"),
                        KINDS.index("shmem"), KINDS.index("file")), KINDS.index("anon"))).astype(np.int8)
        kind[code == 4] = KINDS.index("")
        copied = np.full(len(ch), -1, dtype=np.int8)                 # NA: mapped, shared, unmapped, or no PFNs
        copied[(code == 1) | (code == 5)] = 1
        if self.pfns and not unknown:
            ex_ev = code == 2
            copied[ex_ev] = pfnchg[ex_ev]
        keep = code >= 0
        if not keep.any():
            return
        hg = np.zeros(len(ch), dtype=bool) if huge is None else huge & ep
        page, code, kind, ex, copied, hg = page[keep], code[keep], kind[keep], ex[keep], copied[keep], hg[keep]
        brk = np.flatnonzero((np.diff(page) != 1) | (np.diff(code) != 0) | (np.diff(kind) != 0)
                             | (np.diff(ex.view(np.int8)) != 0) | (np.diff(copied) != 0)
                             | (np.diff(hg.view(np.int8)) != 0)) + 1
        st = np.r_[0, brk]
        n = np.diff(np.r_[st, len(page)])
        self._ev.append((np.full(len(st), s, np.int32), np.full(len(st), p.pid, np.int32), page[st], n,
                         code[st], kind[st], ex[st], copied[st], hg[st]))

    def _samples_cost(self, s: int, cpu: float) -> None:
        self._cost = getattr(self, "_cost", {})
        self._cost[s] = cpu

    # -- the result ---------------------------------------------------------------------------
    def _trace(self, wall0, wall: float, cpu: float, nsamples: int) -> "Trace":
        times = np.array(self._times, dtype=np.float64)
        if self._ev:
            cols = [np.concatenate([e[i] for e in self._ev]) for i in range(9)]
        else:
            cols = [np.zeros(0, t) for t in (np.int32, np.int32, np.int64, np.int64, np.int8, np.int8, bool, np.int8,
                                             bool)]
        events = pd.DataFrame({
            "sample": cols[0], "time_s": times[cols[0]] if len(cols[0]) else np.zeros(0),
            "pid": cols[1], "page": cols[2], "npages": cols[3],
            "event": pd.Categorical.from_codes(cols[4], EVENTS),
            "kind": pd.Categorical.from_codes(cols[5], KINDS),
            "exclusive": cols[6].astype(bool),
            "copied": pd.array(np.where(cols[7] < 0, None, cols[7] == 1), dtype="boolean"),
            "huge": cols[8].astype(bool),
        })
        life = pd.DataFrame(self._life, columns=["sample", "time_s", "pid", "ppid", "event", "comm", "probe"])
        smp = pd.DataFrame(self._samples, columns=["sample", "pid", "rss_pages", "exclusive_pages", "shared_pages",
                                                   "zero_pages", "swap_pages", "vmas"])
        smp.insert(1, "time_s", times[smp["sample"].to_numpy()] if len(smp) else np.zeros(0))
        cost = getattr(self, "_cost", {})
        smp["tracer_cpu_s"] = smp["sample"].map(cost).astype(float) / smp.groupby("sample")["pid"].transform("size")
        vmas = pd.DataFrame(list(self._vma_rows.values()))
        procs = {**{p.pid: p for p in self.gone.values()}, **self.procs}
        meta = {
            "format": FORMAT, "root": self.root, "interval": self.interval, "samples": nsamples,
            "seconds": round(wall, 4), "tracer_cpu_s": round(cpu, 4), "idle_samples": self.skipped,
            "cpu_fraction": round(cpu / wall, 4) if wall > 0 else 0.0,
            "started": wall0.strftime("%Y-%m-%d %H:%M:%S UTC"), "kernel": platform.release(),
            "page_size": PAGE_SIZE, "pfns": self.pfns,
            "mem_total_kb": _mem_total_kb(),
            "exes": {str(pid): p.exe for pid, p in procs.items()},
            "misses": MISSES.format(interval=self.interval),
        }
        return Trace(meta, events, life, smp, vmas)


def _event_kind(kind: str) -> str:
    return "shmem" if kind == "shmem" else ("file" if kind in ("file", "file_shared", "special") else "anon")


def _mark_segs(target: dict, keys: list, a: int, b: int) -> None:
    """Mark pages [a, b) in per-segment boolean arrays (segments: the sorted keys (first, end))."""
    import bisect

    i = max(bisect.bisect_right(keys, (a, 1 << 62)) - 1, 0)
    while i < len(keys) and keys[i][0] < b:
        k = keys[i]
        x, y = max(a, k[0]), min(b, k[1])
        if x < y:
            arr = target.get(k)
            if arr is None:
                arr = target[k] = np.zeros(k[1] - k[0], dtype=bool)
            arr[x - k[0]: y - k[0]] = True
        i += 1


def _old_view(base: dict, keys: list, starts: list, key: tuple, covered: dict) -> np.ndarray:
    """The old entries over segment `key`'s pages: the same segment, or zeros with whatever old
    segments overlap it copied in (a VMA that grew, shrank, split or moved). Records in
    `covered` which pages of each old segment are still mapped (None: the whole segment)."""
    import bisect

    o = base.get(key)
    if o is not None:
        covered[key] = None
        return o
    a, b = key
    out = np.zeros(b - a, dtype=np.uint64)
    i = max(bisect.bisect_right(starts, a) - 1, 0)
    while i < len(keys) and keys[i][0] < b:
        k = keys[i]
        x, y = max(a, k[0]), min(b, k[1])
        if x < y:
            out[x - a: y - a] = base[k][x - k[0]: y - k[0]]
            if covered.get(k, False) is not None:
                m = covered.get(k)
                if m is False or m is None and k not in covered:
                    m = np.zeros(k[1] - k[0], dtype=bool)
                m[x - k[0]: y - k[0]] = True
                covered[k] = m
        i += 1
    return out


def _thread_cpu() -> float:
    """CPU time of the calling (tracer) thread, as getrusage(RUSAGE_THREAD) counts it."""
    r = resource.getrusage(resource.RUSAGE_THREAD)
    return r.ru_utime + r.ru_stime


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def _mem_total_kb() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def trace(pid: int, seconds: float | None = 10.0, interval: float = 0.1, *, until=None,
          progress: bool = False, max_cpu: float | None = None) -> "Trace":
    """Sample process `pid` and its descendants every `interval` seconds for `seconds` (None:
    until they are all gone), and return the Trace (see the module docstring and Tracer)."""
    return Tracer(pid, interval, until=until, progress=progress, max_cpu=max_cpu).run(seconds)


# --- the trace ------------------------------------------------------------------------------------

class Trace:
    """What a Tracer recorded: events, lifecycle, samples, vmas (DataFrames) and meta."""

    def __init__(self, meta: dict, events: pd.DataFrame, lifecycle: pd.DataFrame, samples: pd.DataFrame,
                 vmas: pd.DataFrame):
        self.meta = meta
        self.events = events
        self.lifecycle = lifecycle
        self.samples = samples
        self.vmas = vmas

    def __repr__(self) -> str:
        m = self.meta
        return (f"<Trace of pid {m['root']}: {m['samples']} samples over {m['seconds']:.2f} s, "
                f"{self.lifecycle.pid.nunique()} processes, {len(self.events):,} event rows>")

    @property
    def processes(self) -> pd.DataFrame:
        """One row per process seen: pid, ppid, comm, probe, born_s (first seen), exited_s (first
        seen gone; NaN if alive at the end), first and last sample."""
        life = self.lifecycle
        rows = []
        for pid, g in life.groupby("pid", sort=False):
            b = g.iloc[0]
            ex = g[g.event == "exit"]
            smp = self.samples[self.samples.pid == pid]
            rows.append({"pid": int(pid), "ppid": int(b.ppid), "comm": g.comm.iloc[-1], "probe": bool(g.probe.any()),
                         "born_s": float(b.time_s), "exited_s": float(ex.time_s.iloc[0]) if len(ex) else np.nan,
                         "execs": int((g.event == "exec").sum()),
                         "first_sample": int(b["sample"]),
                         "last_sample": int(smp["sample"].max()) if len(smp) else int(b["sample"]),
                         "exe": self.meta.get("exes", {}).get(str(int(pid)), "")})
        return pd.DataFrame(rows)

    def writes(self) -> pd.DataFrame:
        """Pages each process wrote for the first time, per sample: mapped anonymous pages (zero
        fills), written pages (zero or file page -> anonymous) and exclusive pages with a new
        frame (COW copies), pages moved to a new frame: sample, time_s, pid, pages."""
        e = self.events
        w = e[((e.event == "mapped") & (e.kind == "anon") & e.exclusive) | (e.event == "written") | (e.event == "moved")
              | ((e.event == "exclusive") & (e.copied.fillna(False)))]
        return w.groupby(["sample", "time_s", "pid"], as_index=False, observed=True).npages.sum().rename(
            columns={"npages": "pages"})

    def save(self, path) -> str:
        """One Parquet file: the events, with meta, lifecycle, samples and vmas in its metadata."""
        return str(save_parquet(path, self.events, META_KEY, self.meta,
                                {name: getattr(self, name) for name in ("lifecycle", "samples", "vmas")}))

    @classmethod
    def load(cls, path) -> "Trace":
        """Read a trace written by save() (or `cowbench trace --out`)."""
        ev, meta, frames = load_parquet(path, META_KEY, "Trace.load", "trace", "a snapshot loads with cb.Snapshot.load")
        for c, cats in (("event", EVENTS), ("kind", KINDS)):
            ev[c] = pd.Categorical(ev[c].astype(str), categories=cats)
        ev["copied"] = ev["copied"].astype("boolean")
        return cls(meta, ev, frames["lifecycle"], frames["samples"], frames["vmas"])

    def scenario(self, **knobs):
        """A Scenario replaying this trace: see cowbench.real.replay.scenario for the knobs."""
        from .replay import scenario

        return scenario(self, **knobs)

    def replay(self, **knobs):
        """Simulate the replay: see cowbench.real.replay.replay."""
        from .replay import replay

        return replay(self, **knobs)


# --- command line ------------------------------------------------------------------------------------

def format_trace(tr: Trace) -> str:
    m = tr.meta
    procs = tr.processes
    lines = [f"traced pid {m['root']}: {m['samples']} samples in {m['seconds']:.2f} s (every {m['interval']:g} s asked, "
             f"{m['samples'] / max(m['seconds'], 1e-9):.1f}/s reached; {m.get('idle_samples', 0)} found nothing could "
             f"have changed), tracer CPU {m['tracer_cpu_s']:.2f} s = {m['cpu_fraction']:.0%} of a core",
             f"{'PFNs read: who copied a page is known' if m['pfns'] else 'PFNs hidden (not root): who copied a page is unknown'}",
             ""]
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        lines.append("processes:")
        lines.append(procs[["pid", "ppid", "comm", "probe", "born_s", "exited_s", "execs"]].to_string(index=False))
        w = tr.writes()
        if len(w):
            per = w.groupby("pid").pages.sum().rename("first_writes_pages")
            ev = tr.events.groupby(["pid", "event"], observed=True).npages.sum().unstack(fill_value=0)
            lines += ["", "pages per process and event:", ev.join(per).fillna(0).astype(int).to_string()]
    lines += ["", m["misses"]]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    cmd = None
    if "--" in argv:
        i = argv.index("--")
        argv, cmd = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(
        prog="cowbench trace",
        description="Sample a live process tree's pagemap every INTERVAL seconds and record, page by page, "
                    "when each page of each process became present, became exclusive or went away, and "
                    "every fork and exit. Give a PID, or `-- CMD ...` to start the program and trace it until it "
                    "exits. The trace (Parquet) feeds `cowbench predict FILE` and cb.Trace.load.",
        epilog="examples:\n  cowbench trace $(pidof redis-server) --seconds 30 --out bgsave.trace.parquet\n"
               "  cowbench trace --interval 0.05 --out w.parquet -- python3 workers.py\n"
               "  cowbench trace --probe 2 --out p.parquet -- python3 app.py   # a program that never forks\n\n"
               + MISSES.format(interval=0.1),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pid", type=int, nargs="?", metavar="PID", help="the process to trace (or -- CMD ...)")
    ap.add_argument("--seconds", type=float, default=None, help="stop after this long (default: 10 s for a PID, "
                                                                 "until CMD exits for a command)")
    ap.add_argument("--interval", type=float, default=0.1, help="seconds between samples (default: %(default)s)")
    ap.add_argument("--out", metavar="FILE", help="write the trace here (Parquet)")
    ap.add_argument("--max-cpu", type=float, metavar="SHARE", help="the share of a core the tracer may use "
                    "(e.g. 0.5): samples are spaced out to stay within it")
    ap.add_argument("--probe", type=float, metavar="AFTER", default=None,
                    help="with -- python3 ...: fork a probe AFTER seconds after start (see cowbench.real.probe)")
    ap.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    args = ap.parse_args(argv)
    if (args.pid is None) == (cmd is None):
        ap.error("give a PID or -- CMD ..., not both")
    proc = None
    try:
        if cmd is not None:
            if not cmd:
                ap.error("-- needs a command")
            env = dict(os.environ)
            if args.probe is not None:
                site = os.path.join(os.path.dirname(os.path.abspath(__file__)), "probe_site")
                env["PYTHONPATH"] = site + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
                env["COWBENCH_PROBE_AFTER"] = str(args.probe)
            proc = subprocess.Popen(cmd, env=env)
            pid = proc.pid
            seconds = args.seconds
        else:
            pid, seconds = args.pid, 10.0 if args.seconds is None else args.seconds
        tr = Tracer(pid, args.interval, progress=args.progress, max_cpu=args.max_cpu).run(seconds)
    except ScenarioError as e:
        print(f"cowbench trace: {e}", file=sys.stderr)
        return 1
    except FileNotFoundError as e:
        print(f"cowbench trace: cannot start {shlex.join(cmd)}: {e.strerror}", file=sys.stderr)
        return 1
    finally:
        if proc is not None and proc.poll() is None and args.seconds is not None:
            proc.send_signal(signal.SIGTERM)
        if proc is not None:
            proc.wait()
    print(format_trace(tr))
    if args.out:
        path = tr.save(args.out)
        print(f"\nwrote {path} ({os.path.getsize(path):,} bytes)")
    return 0 if proc is None else (proc.returncode if proc.returncode >= 0 else 128 - proc.returncode)


if __name__ == "__main__":
    sys.exit(main())
