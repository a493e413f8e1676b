"""run_real(): a Scenario as real processes on this Linux kernel, and what the kernel did.

`run_real(sc)` interprets the same `sc.ops` that `simulate` runs, in order (a
concurrently() block piece by piece: `sc.flat_ops()`),
with real processes: every scenario process is a real forked Python process (a
*worker*) that a coordinator (the calling process) drives over a Unix socket.
Workers execute mmap/munmap/mprotect/madvise through libc (ctypes), touch one
byte per page through a ctypes pointer (a loop in C, no bytecode), and fork. The coordinator measures:

- minor faults: `getrusage(RUSAGE_SELF)` inside the worker, read through libc
  into preallocated structs immediately around the touch loop; minus the
  baseline of an empty touch op run just before it (the interpreter's own
  faults; it is 0 on Linux 6.x, and is reported as `baseline_faults`). Before
  measuring, the worker runs the very same loop over the very same offset list
  on a shared scratch mapping, so that copy-on-write faults the interpreter
  takes on its own heap after a fork land outside the measured window (without
  that warm-up, 0-4 stray faults show up after a fork).
- rss/pss/uss/shared: /proc/PID/pagemap over the scenario's regions (bit 63
  present, PFN in bits 0-54 when root) and /proc/kpagecount for the mapcount of
  each frame: rss = present PTEs not mapping the zero page, uss = frames mapped
  once, pss = sum of 1/mapcount, shared = rss - uss (smaps' definitions, computed
  exactly instead of smaps' truncated kB). The same numbers are read from
  /proc/PID/smaps, restricted to the regions' VMAs, as a cross-check
  (`smaps_rss_pages`, `smaps_pss_pages`, `smaps_uss_pages`); smaps_rollup itself
  cannot be used because it sums the whole Python interpreter. Without root the
  PFNs read as 0 and the smaps values are used instead (pss to 1 kB).
- zero_fills / cow_copies / cow_reuses of private regions: the PFN of every
  touched page before and after each write op (a new frame where there was none
  or the zero page: zero fill; a new frame where there was another: copy; the
  rest of the op's faults: reuses). For shared regions a zero fill is the first
  frame any process maps for that page. Needs PFNs (root); NaN otherwise.
- fork_ptes_copied: present PTEs in the child's regions right after fork, not
  counting pages under a huge PMD; fork_pmds_copied: huge PMDs (anonymous THP or
  huge zero page) in the child right after fork; fork_pages_copied: pages the
  child got a frame of its own for at fork (a PFN other than the parent's at the
  same address: pinned pages), root only.
- THP: which 2 MiB ranges are mapped by a huge PMD, and whether by the huge zero
  page, comes from the PAGEMAP_SCAN ioctl on /proc/PID/pagemap (Linux >= 6.7;
  PAGE_IS_HUGE is set for PMD mappings only, so a split huge page reads as PTEs).
  anon_huge_pages: anonymous huge PMDs over the regions (smaps AnonHugePages / 2 MiB,
  which is also read as the cross-check smaps_anon_huge_pages). Per touch op:
  thp_fault_alloc = ranges that became an anonymous huge PMD (from nothing or from
  the huge zero page), thp_copies = ranges whose anonymous huge PMD now maps another
  huge page, thp_splits = ranges that were a huge PMD and are PTEs now (also counted
  for the parent across a fork, which splits a pinned huge page); the pages of the
  first two are not counted again as zero fills or copies, and each counts one
  fault. These are per process and exact; vmstat_thp_split_pmd (the system-wide
  /proc/vmstat thp_split_pmd delta around the process's touches) is a cross-check
  that other processes on the host can inflate. Without PAGEMAP_SCAN the THP
  columns are NaN. The huge zero page is excluded from rss like the zero page.
  df.attrs["thp_fault_fallback"] is the vmstat thp_fault_fallback delta over the
  run: non-zero means some huge page fault (possibly another process's) fell
  back to 4 KiB pages.
- Pins: a pin op registers the pages as io_uring fixed buffers, one page per
  buffer, on a ring of its own (io_uring_setup/io_uring_register through
  syscall(2): pin_user_pages(FOLL_WRITE | FOLL_LONGTERM)); minor_faults is the
  getrusage delta around the registration, zero_fills/cow_copies come from the
  PFNs as for a write, pin_errno is the registration's errno (EFAULT on a
  read-only region). GUP's faults are charged to the task's min_flt (Linux >=
  5.10), and cannot be told apart there, so gup_faults is not measured (and a
  pin's reuses are not counted). unpin replaces the buffers of those pages with
  empty ones (IORING_REGISTER_BUFFERS_UPDATE), which unpins at once. A forked
  worker closes the ring fds it inherited; an exiting worker unregisters its
  buffers before it exits. Limitations: the real teardown at exit is
  asynchronous and waits for every fd of the ring (including ones a fork
  child inherited), and a worker killed by a signal leaves its pins to that
  asynchronous teardown.

Values are read at the end of the run for running processes, just before the
exit for exiting ones, and just before the fatal op for killed ones. A worker
that dies during a touch is reported as killed with the signal's name.

Emulations (Python cannot run in a real vfork child, and a real exec would end
the worker):
- vfork: the child gets no process of its own until it execs. Until then its
  memory operations run in the parent's process, i.e. in the very address space
  a vfork child shares, with their faults charged to the child; the parent is
  suspended meanwhile (the scenario builder guarantees it issues nothing). At
  exec the child becomes a new worker with an empty address space; at exit its
  values are those of the shared address space at that moment. Nothing is
  forked for a vfork, so the parent's PTEs stay writable, as with vfork(2).
  Limitation: a vfork child that dies of SIGSEGV would take the parent's
  process with it; run_real refuses such a scenario with an error.
- exec: the process munmaps every scenario region (its old address space is
  released exactly as exec releases it; the interpreter's own mappings stay).

Layout: every region gets a fixed, 2 MiB-aligned slot inside one PROT_NONE
reservation made before any worker exists, with at least 2 MiB of PROT_NONE
between slots, so regions sit at the same address in every process and never
merge with each other or with the interpreter's mappings (a merged VMA would
change the kernel's behaviour: fork skips the PTEs of a VMA that never had an
anonymous page, and merging decides which VMA that is). THP: every region gets
madvise(MADV_NOHUGEPAGE) right after mmap, so 2 MiB-multiple regions stay 4 KiB
pages whatever /sys/kernel/mm/transparent_hugepage says, except thp=True regions,
which get MADV_HUGEPAGE instead (madvise "hugepage"/"nohugepage" ops pass through).
Whether the kernel then really gives a huge page depends on the host (THP mode,
fragmentation): see `thp_usable()`. khugepaged may collapse a MADV_HUGEPAGE range
in the background (every 10 s by default); a scenario runs in well under that.
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import shutil
import tempfile
import time

import numpy as np
import pandas as pd

from .._engine.abi import (EXEC, EXIT, FORK, MADVISE, MMAP, MPROTECT, MUNMAP, OP_NAMES, PIN, READ, SPAWN, UNPIN,
                           VFORK, WRITE)
from .._params import ScenarioError
from ..columns import REAL_ONLY, by_name
from ..scenario import Scenario
from .libc import (ADVICE, MAP_ANONYMOUS, MAP_NORESERVE, MAP_PRIVATE, MAP_SHARED, PR_GET_CHILD_SUBREAPER,
                   PR_SET_CHILD_SUBREAPER, PROT_NONE, PROT_READ, PROT_WRITE, PROTS, libc, map_anon)
from .procfs import (HUGE, HUGE_PAGES, PAGE_SIZE, PMD_ANON, PMD_NONE, PMD_ZERO, files_dir, page_values,
                     pagemap_readable, pmd_states, vmstat)
from .worker import WorkerEnv, op_pages, recv, send, worker_main

__all__ = ["run_real", "KernelUnavailable", "COLUMNS"]

# The simulator's columns run_real measures (in the simulator's order), then its own cross-checks.
MEASURED = ("pid", "name", "parent", "state", "reason", "minor_faults", "zero_fills", "cow_copies", "cow_reuses",
            "rss_pages", "pss_pages", "uss_pages", "shared_pages", "fork_ptes_copied", "fork_pages_copied",
            "fork_pmds_copied", "anon_huge_pages", "thp_fault_alloc", "thp_copies", "thp_splits", "major_faults",
            "anon_pages", "file_pages", "shmem_pages", "private_clean_pages", "private_dirty_pages",
            "shared_clean_pages", "shared_dirty_pages")
COLUMNS = [by_name(c).name for c in MEASURED] + [c.name for c in REAL_ONLY]
THP_COLUMNS = ["fork_pmds_copied", "anon_huge_pages", "thp_fault_alloc", "thp_copies", "thp_splits"]


class KernelUnavailable(RuntimeError):
    """This host cannot run scenarios as real processes (no /proc/PID/pagemap, other page size...)."""


class _Worker:
    def __init__(self, pid: int, sock: socket.socket, child_of_coordinator: bool):
        self.pid = pid
        self.sock = sock
        self.ours = child_of_coordinator
        self.alive = True


class _Died(Exception):
    pass


class _Coordinator:
    def __init__(self, sc: Scenario, timeout: float):
        self.sc = sc
        self.timeout = timeout
        self.workers: dict[int, _Worker] = {}       # real pid -> worker
        self.own: dict[int, _Worker] = {}           # scenario pid -> its own worker (absent for a borrowing vfork child)
        self.pid_mm: dict[int, int] = {}            # scenario pid -> mm index
        self.mm_host: dict[int, _Worker] = {}       # mm index -> worker whose address space it is
        self.mm_users: dict[int, set] = {}
        self.rows: dict[int, dict] = {}
        self.snap: dict[int, dict] = {}             # last values read for a scenario pid
        self.shared_seen: dict[int, set] = {}       # shared region -> pages some process has a frame for
        self.reserve = None
        self.vfork_parent: dict[int, int] = {}      # borrowing vfork child -> suspended parent
        self.tmpdir = None
        self.paths: dict[int, str] = {}             # scenario file -> the real file made for it

    # -- setup -----------------------------------------------------------------
    def make_files(self):
        """A real file on this machine's filesystem for each mapped scenario file:
        written in writes of its folio size (which is what gives the page cache
        folios of that size), fsynced, and evicted (POSIX_FADV_DONTNEED) unless
        it is cached. Its size is what the mappings need (sizes move with
        write_fd, which run_real does not replay)."""
        sc = self.sc
        for f in sc.files:
            if not f.mappings():
                continue
            if self.tmpdir is None:
                self.tmpdir = tempfile.mkdtemp(prefix="cowbench-files-", dir=files_dir())
            path = os.path.join(self.tmpdir, f"f{f.index}")
            size = max(f.initial_size, f.cache_pages() * PAGE_SIZE)
            fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_RDWR, 0o600)
            try:
                chunk = b"\x5a" * f.folio
                for off in range(0, size, f.folio):
                    os.pwrite(fd, chunk[: size - off], off)
                os.fsync(fd)
                if not f.cached:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
            self.paths[f.index] = path

    def setup(self):
        sc = self.sc
        ps = PAGE_SIZE
        self.make_files()
        slot_lens = [-(-r.npages * ps // HUGE) * HUGE for r in sc.regions]
        total = sum(slot_lens) + HUGE * (len(slot_lens) + 2)
        base = map_anon(0, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE)
        self.reserve = (base, total)
        addr = -(-base // HUGE) * HUGE + HUGE
        slots = []
        for r, ln in zip(sc.regions, slot_lens):
            slots.append((addr, ln))
            addr += ln + HUGE
        self.slots = slots
        self.region_pages = [(slots[r.index][0], r.npages) for r in sc.regions]
        big = max([r.npages for r in sc.regions] + [1])
        self.scratch = (map_anon(0, big * ps, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS), big * ps)
        WorkerEnv.sc, WorkerEnv.slots, WorkerEnv.scratch = sc, slots, self.scratch[0]
        # The zero page's PFN: read one never-written private page.
        probe = map_anon(0, ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        ctypes.c_uint8.from_address(probe).value
        present, pfn = page_values(os.getpid(), [(probe, 1)])
        libc.munmap(probe, ps)
        self.zero_pfn = int(pfn[0])
        self.pfn_ok = bool(present[0]) and self.zero_pfn != 0
        # Huge PMDs are told from PTE-mapped pages by PAGEMAP_SCAN (Linux >= 6.7).
        try:
            pmd_states(os.getpid(), -(-base // HUGE) * HUGE, HUGE_PAGES)     # PROT_NONE reservation
            self.huge_ok = True
        except OSError:
            self.huge_ok = False
        self.fallback0 = vmstat("thp_fault_fallback").get("thp_fault_fallback", 0)
        self.kpagecount = None
        if self.pfn_ok:
            try:
                self.kpagecount = os.open("/proc/kpagecount", os.O_RDONLY)
            except OSError:
                self.pfn_ok = False
        self.prev_subreaper = ctypes.c_int(0)
        libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.addressof(self.prev_subreaper), 0, 0, 0)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    def teardown(self):
        for w in list(self.workers.values()):
            if w.alive:
                try:
                    send(w.sock, ("exit",))
                    self._wait_eof(w)
                except OSError:
                    pass
        for w in self.workers.values():
            w.sock.close()
        self._reap_all()
        libc.prctl(PR_SET_CHILD_SUBREAPER, self.prev_subreaper.value, 0, 0, 0)
        if self.kpagecount is not None:
            os.close(self.kpagecount)
        if self.reserve:
            libc.munmap(*self.reserve)
        libc.munmap(*self.scratch)
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def _reap_all(self):
        deadline = time.monotonic() + 5
        pending = set(self.workers)
        while pending and time.monotonic() < deadline:
            for pid in list(pending):
                try:
                    got, _ = os.waitpid(pid, os.WNOHANG)
                    if got:
                        pending.discard(pid)
                except ChildProcessError:
                    if not os.path.exists(f"/proc/{pid}"):
                        pending.discard(pid)     # reaped by someone else
            if pending:
                time.sleep(0.002)

    # -- workers ---------------------------------------------------------------
    def _spawn_worker(self) -> _Worker:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        others = [w.sock for w in self.workers.values()]
        pid = os.fork()
        if pid == 0:
            a.close()
            for s in others:
                s.close()
            worker_main(b)
        b.close()
        w = _Worker(pid, a, True)
        self._hello(w)
        return w

    def _fork_worker(self, host: _Worker) -> _Worker:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        send(host.sock, ("fork",), fds=[b.fileno()])
        b.close()
        reply = self._reply(host)
        w = _Worker(reply, a, False)
        self._hello(w)
        return w

    def _hello(self, w: _Worker):
        w.sock.settimeout(self.timeout)
        msg, _ = recv(w.sock)
        if msg is None or msg[0] != "ready":
            raise RuntimeError(f"worker {w.pid} did not start")
        w.pid = msg[1]
        self.workers[w.pid] = w

    def _reply(self, w: _Worker):
        msg, _ = recv(w.sock)
        if msg is None:
            raise _Died()
        if msg[0] == "error":
            raise RuntimeError(f"worker {w.pid}: {msg[1]}")
        return msg[1]

    def _call(self, w: _Worker, *msg):
        send(w.sock, msg)
        return self._reply(w)

    def _wait_eof(self, w: _Worker):
        w.sock.settimeout(self.timeout)
        while True:
            msg, _ = recv(w.sock)
            if msg is None:
                break
        w.alive = False

    def _death_signal(self, w: _Worker) -> str:
        """Name of the signal that killed worker w (it has closed its socket)."""
        w.alive = False
        status = None
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:                                # ours, or reparented to us (we are a subreaper)
                got, st = os.waitpid(w.pid, os.WNOHANG)
                if got:
                    status = st
                    break
            except ChildProcessError:
                pass
            try:
                with open(f"/proc/{w.pid}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
                if rest[0] == "Z":
                    status = int(rest[49])      # field 52: exit code as waitpid reports it
                    break
            except (OSError, IndexError):
                pass
            time.sleep(0.001)
        if status is None:
            return "unknown"
        if os.WIFSIGNALED(status):
            return signal.Signals(os.WTERMSIG(status)).name
        return f"exit {os.WEXITSTATUS(status)}"

    # -- measurement -------------------------------------------------------------
    def _pfns(self, w: _Worker, regions=None):
        slots = self.region_pages if regions is None else [self.region_pages[i] for i in regions]
        return page_values(w.pid, slots)

    def _state(self, w: _Worker, regions=None):
        """(present, pfn, zero, pmds) over the regions (all by default), concatenated: zero marks
        pages mapping the zero page or the huge zero page; pmds holds, per region, the
        PMD_NONE/PMD_ZERO/PMD_ANON state of each whole 2 MiB range (all PMD_NONE without PAGEMAP_SCAN)."""
        idx = range(len(self.sc.regions)) if regions is None else regions
        slots = [self.region_pages[i] for i in idx]
        present, pfn = page_values(w.pid, slots)
        zero = present & (pfn == self.zero_pfn)
        pmds, off = [], 0
        for addr, npages in slots:
            st = pmd_states(w.pid, addr, npages) if self.huge_ok else np.zeros(npages // HUGE_PAGES, np.int8)
            for j in np.flatnonzero(st == PMD_ZERO).tolist():
                zero[off + j * HUGE_PAGES: off + (j + 1) * HUGE_PAGES] = True
            pmds.append(st)
            off += npages
        return present, pfn, zero, pmds

    def _mapcounts(self, pfns: np.ndarray) -> np.ndarray:
        out = np.empty(len(pfns), dtype=np.int64)
        for i, p in enumerate(pfns.tolist()):
            out[i] = int.from_bytes(os.pread(self.kpagecount, 8, p * 8), "little")
        return out

    def _smaps(self, w: _Worker) -> dict:
        """Rss, Pss, Anonymous, the Private/Shared Clean/Dirty split and
        AnonHugePages of the VMAs inside region slots, in kB, with file_Rss,
        file_Anonymous and shmem_Rss: those of the VMAs of file regions and of
        shared anonymous ones."""
        lo_hi = [(a, a + ln) for a, ln in self.slots]
        kind = ["file" if r.file is not None else "shmem" if r.shared else "" for r in self.sc.regions]
        tot = dict.fromkeys(("Rss", "Pss", "Anonymous", "Private_Clean", "Private_Dirty", "Shared_Clean",
                             "Shared_Dirty", "AnonHugePages", "file_Rss", "file_Anonymous", "shmem_Rss"), 0)
        inside = None
        with open(f"/proc/{w.pid}/smaps") as f:
            for line in f:
                head = line.split(None, 1)[0]
                if not head.endswith(":"):
                    lo, hi = (int(x, 16) for x in head.split("-"))
                    inside = next((i for i, (a, b) in enumerate(lo_hi) if a <= lo and hi <= b), None)
                elif inside is not None and head[:-1] in tot:
                    kb = int(line.split()[1])
                    tot[head[:-1]] += kb
                    if f"{kind[inside]}_{head[:-1]}" in tot:
                        tot[f"{kind[inside]}_{head[:-1]}"] += kb
        return tot

    def _snapshot(self, w: _Worker) -> dict:
        present, pfn, zero, pmds = self._state(w)
        sm = self._smaps(w)
        kb = PAGE_SIZE // 1024
        d = {"smaps_rss_pages": sm["Rss"] // kb, "smaps_pss_pages": sm["Pss"] / kb,
             "smaps_uss_pages": (sm["Private_Clean"] + sm["Private_Dirty"]) // kb,
             "smaps_anon_huge_pages": sm["AnonHugePages"] // (HUGE // 1024),
             "anon_pages": sm["Anonymous"] // kb, "shmem_pages": sm["shmem_Rss"] // kb,
             "file_pages": (sm["file_Rss"] - sm["file_Anonymous"]) // kb,
             **{f"{k.lower()}_pages": sm[k] // kb
                for k in ("Private_Clean", "Private_Dirty", "Shared_Clean", "Shared_Dirty")}}
        d["anon_huge_pages"] = int(sum(int((st == PMD_ANON).sum()) for r, st in zip(self.sc.regions, pmds)
                                       if r.file is None)) if self.huge_ok else np.nan   # not a file's PMD folios
        if self.pfn_ok:
            frames = pfn[present & ~zero]
            mc = self._mapcounts(frames)
            mc = np.maximum(mc, 1)
            d.update(rss_pages=int(len(frames)), uss_pages=int((mc == 1).sum()),
                     pss_pages=float((1.0 / mc).sum()))
        else:
            d.update(rss_pages=d["smaps_rss_pages"], uss_pages=d["smaps_uss_pages"], pss_pages=d["smaps_pss_pages"])
        d["shared_pages"] = d["rss_pages"] - d["uss_pages"]
        return d

    def _freeze(self, pid: int):
        self.rows[pid].update(self._snapshot(self._host(pid)))

    def _host(self, pid: int) -> _Worker:
        return self.mm_host[self.pid_mm[pid]]

    # -- the run ---------------------------------------------------------------
    def run(self) -> pd.DataFrame:
        sc = self.sc
        for p in sc.processes:
            self.rows[p.pid] = {**dict.fromkeys(COLUMNS, 0), "pid": p.pid, "name": p.name,
                                "parent": p.parent.pid if p.parent else 0, "state": "fork_failed", "reason": "",
                                "pss_pages": 0.0, "smaps_pss_pages": 0.0}
        for i, op in enumerate(sc.flat_ops()):      # a concurrently() block piece by piece
            if op.code != SPAWN and self.rows[op.pid]["state"] not in ("running", "suspended"):
                continue                         # killed earlier, or never forked
            try:
                self._op(i, op)
            except _Died:
                raise RuntimeError(f"op {i} ({OP_NAMES[op.code]} by pid {op.pid}): the worker died unexpectedly")
        for pid, row in self.rows.items():
            if row["state"] in ("running", "suspended"):
                row.update(self._snapshot(self._host(pid)))
                row["state"] = "running"         # a vfork parent still waiting is running (four documented states)
        if not self.pfn_ok:
            for row in self.rows.values():
                for c in ("zero_fills", "cow_copies", "cow_reuses", "fork_pages_copied"):
                    row[c] = np.nan
        if not self.huge_ok:
            for row in self.rows.values():
                for c in THP_COLUMNS:
                    row[c] = np.nan
        df = pd.DataFrame([self.rows[p.pid] for p in sc.processes], columns=COLUMNS)
        df.attrs["pfn_visible"] = self.pfn_ok
        df.attrs["zero_pfn"] = self.zero_pfn
        df.attrs["huge_pmds_visible"] = self.huge_ok
        df.attrs["thp_fault_fallback"] = (vmstat("thp_fault_fallback").get("thp_fault_fallback", 0)
                                          - self.fallback0)
        return df

    def _op(self, i: int, op):
        sc, code, pid = self.sc, op.code, op.pid
        row = self.rows[pid]
        if code == SPAWN:
            w = self._spawn_worker()
            self.own[pid] = w
            self._set_mm(pid, op.mm, w)
            row.update(state="running", real_pid=w.pid)
        elif code == FORK:
            child = op.arg
            pmds0 = self._state(self._host(pid))[3] if self.huge_ok else None
            w = self._fork_worker(self._host(pid))
            if self.huge_ok:                     # copy_huge_pmd splits a pinned huge page in the parent
                pmds1 = self._state(self._host(pid))[3]
                row["thp_splits"] += sum(int(((a != PMD_NONE) & (b == PMD_NONE)).sum()) for a, b in zip(pmds0, pmds1))
            self.own[child] = w
            self._set_mm(child, op.mm, w)
            present, pfn, zero, pmds = self._state(w)
            npmd = sum(int((st != PMD_NONE).sum()) for st in pmds)
            upd = dict(state="running", real_pid=w.pid, fork_ptes_copied=int(present.sum()) - npmd * HUGE_PAGES,
                       fork_pmds_copied=npmd)
            if self.pfn_ok:                      # pages the child got a copy of at fork (pinned pages)
                ppresent, ppfn = self._pfns(self._host(pid))
                upd["fork_pages_copied"] = int((present & ppresent & ~zero & (pfn != ppfn)).sum())
            self.rows[child].update(upd)
        elif code == VFORK:
            child = op.arg
            self.pid_mm[child] = self.pid_mm[pid]
            self.mm_users[self.pid_mm[pid]].add(child)
            self.rows[child].update(state="running", real_pid=0)
            row["state"] = "suspended"
            self.vfork_parent[child] = pid
        elif code == EXEC:
            if pid in self.own:
                w = self.own[pid]
                self._call(w, "munmap", [(a, ln) for a, ln in self.slots])
                self._drop_mm(pid)
            else:                                # a vfork child: its own process starts now
                self._drop_mm(pid)
                w = self._spawn_worker()
                self.own[pid] = w
                row["real_pid"] = w.pid
                self._resume_vfork_parent(pid)
            self._set_mm(pid, op.mm, w)
        elif code == EXIT:
            self._freeze(pid)
            row["state"] = "exited"
            if pid in self.own:
                w = self.own.pop(pid)
                send(w.sock, ("exit",))
                self._wait_eof(w)               # EOF comes after exit_mm(): the mm is gone
                self._reap(w)
            else:
                self._resume_vfork_parent(pid)
            self._drop_mm(pid)
        elif code == MMAP:
            r = sc.regions[op.region]
            addr = self.slots[r.index][0]
            advice = ADVICE.get(r.on_fork) if r.on_fork != "copy" else None
            if r.npages == 0:
                return                           # mmap(2) would say EINVAL; the builder allows an empty region
            path = None if r.file is None else self.paths[r.file.index]
            self._call(self._host(pid), "mmap", addr, r.npages * PAGE_SIZE, PROTS[r.prot], r.shared, advice,
                       bool(r.thp), path, r.offset * PAGE_SIZE)
        elif code == MUNMAP:
            r = sc.regions[op.region]
            addr, ln = self.slots[r.index]
            self._call(self._host(pid), "munmap", [(addr, ln)])
        elif code in (MPROTECT, MADVISE) and sc.regions[op.region].npages == 0:
            return
        elif code == MPROTECT:
            r = sc.regions[op.region]
            self._call(self._host(pid), "mprotect", self.slots[r.index][0], r.npages * PAGE_SIZE, PROTS[op.arg])
        elif code == MADVISE:
            r = sc.regions[op.region]
            self._call(self._host(pid), "madvise", self.slots[r.index][0], r.npages * PAGE_SIZE, ADVICE[op.arg])
        elif code in (READ, WRITE):
            self._touch(i, op)
        elif code == PIN:
            self._pin(op)
        elif code == UNPIN:
            every = bool(op.arg)
            self._call(self._host(pid), "unpin", op.region, None if every else np.asarray(op.pages).tolist())
        else:                                    # pragma: no cover
            raise RuntimeError(f"unknown op code {code}")

    def _touch(self, i: int, op):
        r = self.sc.regions[op.region]
        pid, write = op.pid, op.code == WRITE
        host = self._host(pid)
        row = self.rows[pid]
        self.snap[pid] = self._snapshot(host)    # the values at death, should this touch kill
        pages = np.unique(op_pages(self.sc, op))
        present0, pfn0, zero0, (pmd0,) = self._state(host, [r.index])
        val = (int(op.arg) % 255 + 1) if write else 0
        split0 = vmstat("thp_split_pmd").get("thp_split_pmd", 0)
        try:
            faults, base, major = self._call(host, "touch", op, self.slots[r.index][0], write, val)
        except _Died:
            sig = self._death_signal(host)
            if pid not in self.own:
                raise RuntimeError(
                    f"op {i}: vfork child {row['name']!r} was killed ({sig}); run_real emulates a vfork child "
                    "inside its parent's process and cannot survive that") from None
            row.update(self.snap.pop(pid), state="killed", reason=sig)
            self.own.pop(pid, None)
            self._drop_mm(pid)
            return
        self.snap.pop(pid, None)
        row["vmstat_thp_split_pmd"] += vmstat("thp_split_pmd").get("thp_split_pmd", 0) - split0
        row["minor_faults"] += faults
        row["major_faults"] += major
        row["baseline_faults"] += base
        present1, pfn1, zero1, (pmd1,) = self._state(host, [r.index])
        # 2 MiB ranges: a new anonymous huge PMD (from nothing or from the huge zero page) is a
        # THP fault allocation; an anonymous huge PMD onto another huge page is a THP copy; a
        # huge PMD (anonymous or zero) that became a PTE table was split.
        bases = np.arange(len(pmd0)) * HUGE_PAGES
        alloc = (pmd1 == PMD_ANON) & (pmd0 != PMD_ANON)
        hcopy = (pmd1 == PMD_ANON) & (pmd0 == PMD_ANON) & (pfn1[bases] != pfn0[bases])
        if self.huge_ok and r.file is None:     # a file's 2 MiB folios are PMD-mapped too, but not THPs
            row["thp_fault_alloc"] += int(alloc.sum())
            row["thp_copies"] += int(hcopy.sum())
            row["thp_splits"] += int(((pmd0 != PMD_NONE) & (pmd1 == PMD_NONE)).sum())
        if not self.pfn_ok or len(pages) == 0:
            return
        whole = np.zeros(len(present1), dtype=bool)          # pages counted above as whole huge pages
        for j in np.flatnonzero(alloc | hcopy).tolist():
            whole[j * HUGE_PAGES:(j + 1) * HUGE_PAGES] = True
        b_p, b_f, a_p, a_f = present0[pages], pfn0[pages], present1[pages], pfn1[pages]
        b_z, a_z, wh = zero0[pages], zero1[pages], whole[pages]
        if r.file is not None and r.shared:      # the page cache's pages: read in or found, never filled or copied
            return
        if r.file is not None:                   # private: a write copies the file page (do_cow_fault, wp_page_copy)
            if write:
                cp = int((a_p & (~b_p | (a_f != b_f))).sum())
                row["cow_copies"] += cp
                row["cow_reuses"] += max(0, faults + major - cp)
            return
        if r.shared:
            seen = self.shared_seen.setdefault(r.index, set())
            new = [p for p, ok in zip(pages.tolist(), a_p.tolist()) if ok and p not in seen]
            row["zero_fills"] += len(new)
            seen.update(new)
            # fault-around may map neighbours: those are frames the page cache already had
            present_all = np.flatnonzero(present1)
            seen.update(present_all.tolist())
            return
        fresh = a_p & ~a_z & (~b_p | b_z) & ~wh
        copied = a_p & b_p & ~b_z & (a_f != b_f) & ~wh
        zf, cp = int(fresh.sum()), int(copied.sum())
        row["zero_fills"] += zf
        row["cow_copies"] += cp
        if write:
            row["cow_reuses"] += max(0, faults - zf - cp - int(alloc.sum()) - int(hcopy.sum()))

    def _pin(self, op):
        """A pin op: zero fills and copies from the PFNs before and after, as for a write; the
        faults GUP takes are charged to the task's min_flt (Linux >= 5.10), so they land in
        minor_faults. Reuses by a pin are not counted (no write fault to take them from)."""
        r = self.sc.regions[op.region]
        row, host = self.rows[op.pid], self._host(op.pid)
        pages = np.unique(np.asarray(op.pages, dtype=np.int64))
        if len(pages) == 0 or r.npages == 0:
            return
        present0, pfn0, zero0, _ = self._state(host, [r.index])
        faults, err = self._call(host, "pin", r.index, self.slots[r.index][0], pages.tolist())
        row["minor_faults"] += faults
        row["pin_errno"] = err
        if not self.pfn_ok:
            return
        present1, pfn1, zero1, _ = self._state(host, [r.index])
        b_p, b_f, b_z, a_p, a_f, a_z = (x[pages] for x in (present0, pfn0, zero0, present1, pfn1, zero1))
        row["zero_fills"] += int((a_p & ~a_z & (~b_p | b_z)).sum())
        row["cow_copies"] += int((a_p & b_p & ~b_z & (a_f != b_f)).sum())

    def _set_mm(self, pid: int, mm: int, w: _Worker):
        self.pid_mm[pid] = mm
        self.mm_host[mm] = w
        self.mm_users.setdefault(mm, set()).add(pid)

    def _drop_mm(self, pid: int):
        mm = self.pid_mm.pop(pid, None)
        if mm is None:
            return
        users = self.mm_users.get(mm, set())
        users.discard(pid)
        if not users:
            self.mm_users.pop(mm, None)
            self.mm_host.pop(mm, None)

    def _resume_vfork_parent(self, child: int):
        parent = self.vfork_parent.pop(child, None)
        if parent is not None and self.rows[parent]["state"] == "suspended":
            self.rows[parent]["state"] = "running"

    def _reap(self, w: _Worker):
        if w.ours:
            try:
                os.waitpid(w.pid, 0)
            except ChildProcessError:
                pass


def run_real(sc: Scenario, *, timeout: float = 60.0) -> pd.DataFrame:
    """Run `sc` as real processes on this kernel; one row per scenario process.

    Columns: pid, name, parent, state, reason, minor_faults, zero_fills,
    cow_copies, cow_reuses, rss_pages, pss_pages, uss_pages, shared_pages,
    fork_ptes_copied, fork_pages_copied, fork_pmds_copied, anon_huge_pages,
    thp_fault_alloc, thp_copies, thp_splits, plus baseline_faults (the
    interpreter's own faults subtracted), the smaps/vmstat cross-check columns,
    pin_errno and real_pid. See the module docstring for how each is measured,
    for pins (io_uring fixed buffers) and for the vfork/exec emulations.
    """
    if not isinstance(sc, Scenario):
        raise ScenarioError(f"The 'sc' parameter of run_real must be a Scenario; got {sc!r}")
    if not os.path.exists("/proc/self/smaps"):
        raise KernelUnavailable("run_real needs Linux's /proc (smaps, pagemap)")
    ok, why = pagemap_readable()
    if not ok:
        raise KernelUnavailable(why)
    if sc.page_size != PAGE_SIZE:
        raise ScenarioError(f"run_real: the scenario's page_size is {sc.page_size} but this host's is {PAGE_SIZE}")
    co = _Coordinator(sc, timeout)
    co.setup()
    try:
        return co.run()
    finally:
        co.teardown()
