"""Run a Scenario as real processes on this Linux kernel and measure what it did.

`run_real(sc)` interprets the same `sc.ops` list that `simulate` runs, in order,
with real processes: every scenario process is a real forked Python process (a
*worker*) that a coordinator (the calling process) drives over a Unix socket.
Workers execute mmap/munmap/mprotect/madvise through libc (ctypes), touch one
byte per page through a ctypes pointer, and fork. The coordinator measures:

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
- fork_ptes_copied: present PTEs in the child's regions right after fork.

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
pages whatever /sys/kernel/mm/transparent_hugepage says.
"""
from __future__ import annotations

import ctypes
import os
import pickle
import signal
import socket
import time

import numpy as np
import pandas as pd

from ._params import ScenarioError
from .patterns import Pattern
from .scenario import (EXEC, EXIT, FORK, MADVISE, MMAP, MPROTECT, MUNMAP, READ, SPAWN, VFORK, WRITE,
                       OP_NAMES, Scenario)

__all__ = ["run_real", "pagemap_readable", "KernelUnavailable", "COLUMNS"]

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_HUGE = 2 << 20

PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC = 0, 1, 2, 4
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS, MAP_NORESERVE = 0x01, 0x02, 0x10, 0x20, 0x4000
MADV_DONTFORK, MADV_DOFORK, MADV_NOHUGEPAGE, MADV_WIPEONFORK, MADV_KEEPONFORK = 10, 11, 15, 18, 19
PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37

PROTS = {"none": PROT_NONE, "r": PROT_READ, "rw": PROT_READ | PROT_WRITE,
         "rx": PROT_READ | PROT_EXEC, "rwx": PROT_READ | PROT_WRITE | PROT_EXEC}
ADVICE = {"dontfork": MADV_DONTFORK, "dofork": MADV_DOFORK,
          "wipeonfork": MADV_WIPEONFORK, "keeponfork": MADV_KEEPONFORK}

COLUMNS = ["pid", "name", "parent", "state", "reason", "minor_faults", "zero_fills", "cow_copies",
           "cow_reuses", "rss_pages", "pss_pages", "uss_pages", "shared_pages", "fork_ptes_copied",
           "baseline_faults", "smaps_rss_pages", "smaps_pss_pages", "smaps_uss_pages", "real_pid"]


class KernelUnavailable(RuntimeError):
    """This host cannot run scenarios as real processes (no /proc/PID/pagemap, other page size...)."""


# --------------------------------------------------------------------------- libc
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_MAP_FAILED = ctypes.c_void_p(-1).value


class _Timeval(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("usec", ctypes.c_long)]


class _Rusage(ctypes.Structure):
    _fields_ = [("utime", _Timeval), ("stime", _Timeval)] + [
        (n, ctypes.c_long) for n in ("maxrss", "ixrss", "idrss", "isrss", "minflt", "majflt", "nswap",
                                     "inblock", "oublock", "msgsnd", "msgrcv", "nsignals", "nvcsw", "nivcsw")]


def _errcheck(ret, what: str) -> None:
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def _map(addr: int, length: int, prot: int, flags: int) -> int:
    got = _libc.mmap(addr, length, prot, flags, -1, 0)
    if got in (None, _MAP_FAILED):
        e = ctypes.get_errno()
        raise OSError(e, f"mmap({addr:#x}, {length}): {os.strerror(e)}")
    return got


def _reserve(addr: int, length: int) -> None:
    """(Re)place a PROT_NONE reservation over [addr, addr+length)."""
    _map(addr, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED)


def pagemap_readable() -> tuple[bool, str]:
    """Whether /proc/self/pagemap can be read here, and why not if it cannot."""
    try:
        with open("/proc/self/pagemap", "rb") as f:
            f.seek((id(f) // PAGE_SIZE) * 8)
            if len(f.read(8)) != 8:
                return False, "/proc/self/pagemap returned no data"
    except OSError as e:
        return False, f"/proc/self/pagemap cannot be read: {e}"
    return True, ""


# --------------------------------------------------------------------------- worker
class _WorkerEnv:
    """What a worker needs; set by the coordinator before the first fork, inherited by every worker."""
    sc: Scenario = None
    slots: list = []            # (addr, slot_len) per region
    scratch: int = 0            # MAP_SHARED scratch, as many pages as the largest region
    ru0 = _Rusage()
    ru1 = _Rusage()


def _loop_write(p, offs, val):
    gr, r0, r1 = _libc.getrusage, ctypes.byref(_WorkerEnv.ru0), ctypes.byref(_WorkerEnv.ru1)
    gr(0, r0)
    for o in offs:
        p[o] = val
    gr(0, r1)
    return _WorkerEnv.ru1.minflt - _WorkerEnv.ru0.minflt


def _loop_read(p, offs, val):
    gr, r0, r1 = _libc.getrusage, ctypes.byref(_WorkerEnv.ru0), ctypes.byref(_WorkerEnv.ru1)
    gr(0, r0)
    for o in offs:
        p[o]
    gr(0, r1)
    return _WorkerEnv.ru1.minflt - _WorkerEnv.ru0.minflt


def _touch(addr: int, pages: np.ndarray, write: bool, val: int) -> tuple[int, int]:
    """Touch one byte at the start of each page; return (faults - baseline, baseline)."""
    loop = _loop_write if write else _loop_read
    offs = (pages.astype(np.int64) * PAGE_SIZE).tolist()
    p = ctypes.cast(addr, ctypes.POINTER(ctypes.c_uint8))
    s = ctypes.cast(_WorkerEnv.scratch, ctypes.POINTER(ctypes.c_uint8))
    # Warm-up: the same loop over the same list on shared scratch memory, so that
    # the interpreter's own first-touch/COW faults happen before the measurement.
    loop(s, offs, val)
    loop(s, offs, val)
    base = loop(p, [], val)
    return loop(p, offs, val) - base, base


def _send(sock: socket.socket, msg, fds=()) -> None:
    data = pickle.dumps(msg)
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.sendall(data)


def _recv(sock: socket.socket):
    """One message (SOCK_SEQPACKET keeps boundaries), or None at EOF."""
    data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, 4)
    if not data:
        return None, []
    return pickle.loads(data), fds


def _worker_setup() -> None:
    import faulthandler
    import resource

    faulthandler.disable()                  # pytest enables it; a SIGSEGV must just kill us
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def _worker_main(sock: socket.socket) -> None:
    """Serve commands until told to exit; never returns."""
    code = 0
    try:
        _worker_setup()
        _send(sock, ("ready", os.getpid()))
        while True:
            msg, fds = _recv(sock)
            if msg is None:
                break
            cmd = msg[0]
            try:
                if cmd == "touch":
                    _, i, addr, write, val = msg
                    op = _WorkerEnv.sc.ops[i]
                    pages = _op_pages(_WorkerEnv.sc, op)
                    _send(sock, ("ok", _touch(addr, pages, write, val)))
                elif cmd == "mmap":
                    _, addr, length, prot, shared, advice = msg
                    flags = (MAP_SHARED if shared else MAP_PRIVATE) | MAP_ANONYMOUS | MAP_FIXED
                    _map(addr, length, prot, flags)
                    _errcheck(_libc.madvise(addr, length, MADV_NOHUGEPAGE), "madvise(MADV_NOHUGEPAGE)")
                    if advice is not None:
                        _errcheck(_libc.madvise(addr, length, advice), f"madvise({advice})")
                    _send(sock, ("ok", None))
                elif cmd == "munmap":
                    for addr, length in msg[1]:
                        _errcheck(_libc.munmap(addr, length), "munmap")
                        _reserve(addr, length)
                    _send(sock, ("ok", None))
                elif cmd == "mprotect":
                    _, addr, length, prot = msg
                    _errcheck(_libc.mprotect(addr, length, prot), "mprotect")
                    _send(sock, ("ok", None))
                elif cmd == "madvise":
                    _, addr, length, advice = msg
                    _errcheck(_libc.madvise(addr, length, advice), "madvise")
                    _send(sock, ("ok", None))
                elif cmd == "fork":
                    child_sock = socket.socket(fileno=fds[0])
                    pid = os.fork()
                    if pid == 0:
                        sock.close()
                        sock = child_sock
                        _send(sock, ("ready", os.getpid()))
                        continue
                    child_sock.close()
                    _send(sock, ("ok", pid))
                elif cmd == "exit":
                    break
                else:
                    _send(sock, ("error", f"unknown command {cmd!r}"))
            except OSError as e:
                _send(sock, ("error", f"{cmd}: {e}"))
    except BaseException:                       # pragma: no cover - a broken pipe to a dead coordinator
        code = 1
    finally:
        os._exit(code)


def _op_pages(sc: Scenario, op) -> np.ndarray:
    npages = sc.regions[op.region].npages
    pages = op.pages
    if isinstance(pages, Pattern):
        return pages.pages(npages)
    return np.asarray(pages, dtype=np.int64)


# --------------------------------------------------------------------------- coordinator
class _Worker:
    def __init__(self, pid: int, sock: socket.socket, child_of_coordinator: bool):
        self.pid = pid
        self.sock = sock
        self.ours = child_of_coordinator
        self.alive = True


class _Died(Exception):
    pass


def _page_values(pid: int, slots):
    """(present, pfn) arrays for all regions of a worker, concatenated."""
    with open(f"/proc/{pid}/pagemap", "rb", buffering=0) as f:
        out = []
        for addr, npages in slots:
            f.seek((addr // PAGE_SIZE) * 8)
            data = f.read(8 * npages)
            out.append(np.frombuffer(data, dtype=np.uint64))
    e = np.concatenate(out) if out else np.zeros(0, dtype=np.uint64)
    present = ((e >> np.uint64(63)) & np.uint64(1)).astype(bool)
    pfn = (e & np.uint64((1 << 55) - 1)).astype(np.int64)
    return present, pfn


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

    # -- setup -----------------------------------------------------------------
    def setup(self):
        sc = self.sc
        ps = PAGE_SIZE
        slot_lens = [-(-r.npages * ps // _HUGE) * _HUGE for r in sc.regions]
        total = sum(slot_lens) + _HUGE * (len(slot_lens) + 2)
        base = _map(0, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE)
        self.reserve = (base, total)
        addr = -(-base // _HUGE) * _HUGE + _HUGE
        slots = []
        for r, ln in zip(sc.regions, slot_lens):
            slots.append((addr, ln))
            addr += ln + _HUGE
        self.slots = slots
        self.region_pages = [(slots[r.index][0], r.npages) for r in sc.regions]
        big = max([r.npages for r in sc.regions] + [1])
        self.scratch = (_map(0, big * ps, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS), big * ps)
        _WorkerEnv.sc, _WorkerEnv.slots, _WorkerEnv.scratch = sc, slots, self.scratch[0]
        # The zero page's PFN: read one never-written private page.
        probe = _map(0, ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        ctypes.c_uint8.from_address(probe).value
        present, pfn = _page_values(os.getpid(), [(probe, 1)])
        _libc.munmap(probe, ps)
        self.zero_pfn = int(pfn[0])
        self.pfn_ok = bool(present[0]) and self.zero_pfn != 0
        self.kpagecount = None
        if self.pfn_ok:
            try:
                self.kpagecount = os.open("/proc/kpagecount", os.O_RDONLY)
            except OSError:
                self.pfn_ok = False
        self.prev_subreaper = ctypes.c_int(0)
        _libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.addressof(self.prev_subreaper), 0, 0, 0)
        _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    def teardown(self):
        for w in list(self.workers.values()):
            if w.alive:
                try:
                    _send(w.sock, ("exit",))
                    self._wait_eof(w)
                except OSError:
                    pass
        for w in self.workers.values():
            w.sock.close()
        self._reap_all()
        _libc.prctl(PR_SET_CHILD_SUBREAPER, self.prev_subreaper.value, 0, 0, 0)
        if self.kpagecount is not None:
            os.close(self.kpagecount)
        if self.reserve:
            _libc.munmap(*self.reserve)
        _libc.munmap(*self.scratch)

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
            _worker_main(b)
        b.close()
        w = _Worker(pid, a, True)
        self._hello(w)
        return w

    def _fork_worker(self, host: _Worker) -> _Worker:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        _send(host.sock, ("fork",), fds=[b.fileno()])
        b.close()
        reply = self._reply(host)
        w = _Worker(reply, a, False)
        self._hello(w)
        return w

    def _hello(self, w: _Worker):
        w.sock.settimeout(self.timeout)
        msg, _ = _recv(w.sock)
        if msg is None or msg[0] != "ready":
            raise RuntimeError(f"worker {w.pid} did not start")
        w.pid = msg[1]
        self.workers[w.pid] = w

    def _reply(self, w: _Worker):
        msg, _ = _recv(w.sock)
        if msg is None:
            raise _Died()
        if msg[0] == "error":
            raise RuntimeError(f"worker {w.pid}: {msg[1]}")
        return msg[1]

    def _call(self, w: _Worker, *msg):
        _send(w.sock, msg)
        return self._reply(w)

    def _wait_eof(self, w: _Worker):
        w.sock.settimeout(self.timeout)
        while True:
            msg, _ = _recv(w.sock)
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
        return _page_values(w.pid, slots)

    def _mapcounts(self, pfns: np.ndarray) -> np.ndarray:
        out = np.empty(len(pfns), dtype=np.int64)
        for i, p in enumerate(pfns.tolist()):
            out[i] = int.from_bytes(os.pread(self.kpagecount, 8, p * 8), "little")
        return out

    def _smaps(self, w: _Worker) -> dict:
        """Rss, Pss, Private_* of the VMAs inside region slots, in kB."""
        lo_hi = [(a, a + ln) for a, ln in self.slots]
        tot = {"Rss": 0, "Pss": 0, "Private_Clean": 0, "Private_Dirty": 0}
        inside = False
        with open(f"/proc/{w.pid}/smaps") as f:
            for line in f:
                head = line.split(None, 1)[0]
                if not head.endswith(":"):
                    lo, hi = (int(x, 16) for x in head.split("-"))
                    inside = any(a <= lo and hi <= b for a, b in lo_hi)
                elif inside and head[:-1] in tot:
                    tot[head[:-1]] += int(line.split()[1])
        return tot

    def _snapshot(self, w: _Worker) -> dict:
        present, pfn = self._pfns(w)
        sm = self._smaps(w)
        kb = PAGE_SIZE // 1024
        d = {"smaps_rss_pages": sm["Rss"] // kb, "smaps_pss_pages": sm["Pss"] / kb,
             "smaps_uss_pages": (sm["Private_Clean"] + sm["Private_Dirty"]) // kb}
        if self.pfn_ok:
            frames = pfn[present & (pfn != self.zero_pfn)]
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
            self.rows[p.pid] = dict(pid=p.pid, name=p.name, parent=p.parent.pid if p.parent else 0,
                                    state="fork_failed", reason="", minor_faults=0, zero_fills=0,
                                    cow_copies=0, cow_reuses=0, rss_pages=0, pss_pages=0.0, uss_pages=0,
                                    shared_pages=0, fork_ptes_copied=0, baseline_faults=0,
                                    smaps_rss_pages=0, smaps_pss_pages=0.0, smaps_uss_pages=0, real_pid=0)
        for i, op in enumerate(sc.ops):
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
                for c in ("zero_fills", "cow_copies", "cow_reuses"):
                    row[c] = np.nan
        df = pd.DataFrame([self.rows[p.pid] for p in sc.processes], columns=COLUMNS)
        df.attrs["pfn_visible"] = self.pfn_ok
        df.attrs["zero_pfn"] = self.zero_pfn
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
            w = self._fork_worker(self._host(pid))
            self.own[child] = w
            self._set_mm(child, op.mm, w)
            present, pfn = self._pfns(w)
            self.rows[child].update(state="running", real_pid=w.pid, fork_ptes_copied=int(present.sum()))
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
                _send(w.sock, ("exit",))
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
            self._call(self._host(pid), "mmap", addr, r.npages * PAGE_SIZE, PROTS[r.prot], r.shared, advice)
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
        else:                                    # pragma: no cover
            raise RuntimeError(f"unknown op code {code}")

    def _touch(self, i: int, op):
        r = self.sc.regions[op.region]
        pid, write = op.pid, op.code == WRITE
        host = self._host(pid)
        row = self.rows[pid]
        self.snap[pid] = self._snapshot(host)    # the values at death, should this touch kill
        pages = np.unique(_op_pages(self.sc, op))
        present0, pfn0 = self._pfns(host, [r.index])
        val = (int(op.arg) % 255 + 1) if write else 0
        try:
            faults, base = self._call(host, "touch", i, self.slots[r.index][0], write, val)
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
        row["minor_faults"] += faults
        row["baseline_faults"] += base
        if not self.pfn_ok or len(pages) == 0:
            return
        present1, pfn1 = self._pfns(host, [r.index])
        b_p, b_f, a_p, a_f = present0[pages], pfn0[pages], present1[pages], pfn1[pages]
        z = self.zero_pfn
        if r.shared:
            seen = self.shared_seen.setdefault(r.index, set())
            new = [p for p, ok in zip(pages.tolist(), a_p.tolist()) if ok and p not in seen]
            row["zero_fills"] += len(new)
            seen.update(new)
            # fault-around may map neighbours: those are frames the page cache already had
            present_all = np.flatnonzero(present1)
            seen.update(present_all.tolist())
            return
        fresh = a_p & (a_f != z) & (~b_p | (b_f == z))
        copied = a_p & b_p & (b_f != z) & (a_f != b_f)
        zf, cp = int(fresh.sum()), int(copied.sum())
        row["zero_fills"] += zf
        row["cow_copies"] += cp
        if write:
            row["cow_reuses"] += max(0, faults - zf - cp)

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
    fork_ptes_copied, plus baseline_faults (the interpreter's own faults
    subtracted), the smaps cross-check columns and real_pid. See the module
    docstring for how each is measured and for the vfork/exec emulations.
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
