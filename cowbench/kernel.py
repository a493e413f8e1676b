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
import pickle
import signal
import socket
import time

import numpy as np
import pandas as pd

from ._params import ScenarioError
from .patterns import Pattern
from .scenario import (EXEC, EXIT, FORK, MADVISE, MMAP, MPROTECT, MUNMAP, PIN, READ, SPAWN, UNPIN, VFORK,
                       WRITE, OP_NAMES, Scenario)

__all__ = ["run_real", "pagemap_readable", "thp_usable", "pins_usable", "KernelUnavailable", "COLUMNS"]

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_HUGE = 2 << 20

PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC = 0, 1, 2, 4
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS, MAP_NORESERVE = 0x01, 0x02, 0x10, 0x20, 0x4000
MADV_DONTFORK, MADV_DOFORK, MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_WIPEONFORK, MADV_KEEPONFORK = 10, 11, 14, 15, 18, 19
PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37

PROTS = {"none": PROT_NONE, "r": PROT_READ, "rw": PROT_READ | PROT_WRITE,
         "rx": PROT_READ | PROT_EXEC, "rwx": PROT_READ | PROT_WRITE | PROT_EXEC}
ADVICE = {"dontfork": MADV_DONTFORK, "dofork": MADV_DOFORK,
          "wipeonfork": MADV_WIPEONFORK, "keeponfork": MADV_KEEPONFORK,
          "hugepage": MADV_HUGEPAGE, "nohugepage": MADV_NOHUGEPAGE}
HUGE_PAGES = _HUGE // PAGE_SIZE     # subpages of a PMD-sized huge page (512)

# PAGEMAP_SCAN (Linux >= 6.7): which 2 MiB ranges are mapped by a huge PMD.
PAGE_IS_PRESENT, PAGE_IS_PFNZERO, PAGE_IS_HUGE = 1 << 3, 1 << 5, 1 << 6
PMD_NONE, PMD_ZERO, PMD_ANON = 0, 1, 2     # per 2 MiB range: PTEs (or nothing), huge zero page, anonymous THP
KPF_ZERO_PAGE = 1 << 24

COLUMNS = ["pid", "name", "parent", "state", "reason", "minor_faults", "zero_fills", "cow_copies",
           "cow_reuses", "rss_pages", "pss_pages", "uss_pages", "shared_pages", "fork_ptes_copied",
           "fork_pages_copied", "fork_pmds_copied", "anon_huge_pages", "thp_fault_alloc", "thp_copies", "thp_splits",
           "baseline_faults", "smaps_rss_pages", "smaps_pss_pages", "smaps_uss_pages", "smaps_anon_huge_pages",
           "vmstat_thp_split_pmd", "pin_errno", "real_pid"]
THP_COLUMNS = ["fork_pmds_copied", "anon_huge_pages", "thp_fault_alloc", "thp_copies", "thp_splits"]


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
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
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


class _PmScanArg(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "size", "flags", "start", "end", "walk_end", "vec", "vec_len", "max_pages", "category_inverted",
        "category_mask", "category_anyof_mask", "return_mask")]


class _PageRegion(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("end", ctypes.c_uint64), ("categories", ctypes.c_uint64)]


PAGEMAP_SCAN = (3 << 30) | (ctypes.sizeof(_PmScanArg) << 16) | (ord("f") << 8) | 16     # _IOWR('f', 16, ...)


def _pmd_states(pid: int, addr: int, npages: int) -> np.ndarray:
    """PMD_NONE / PMD_ZERO / PMD_ANON for each whole 2 MiB range of [addr, addr + npages pages)
    in process pid (addr 2 MiB-aligned), read with the PAGEMAP_SCAN ioctl: PAGE_IS_HUGE is
    reported for PMD-mapped ranges only, so a split huge page (PTE-mapped) reads PMD_NONE."""
    n = npages // HUGE_PAGES
    out = np.zeros(n, dtype=np.int8)
    if n == 0:
        return out
    vec = (_PageRegion * n)()
    arg = _PmScanArg(size=ctypes.sizeof(_PmScanArg), start=addr, end=addr + n * _HUGE, vec=ctypes.addressof(vec),
                     vec_len=n, category_anyof_mask=PAGE_IS_HUGE, return_mask=PAGE_IS_HUGE | PAGE_IS_PFNZERO)
    fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    try:
        got = _libc.ioctl(fd, PAGEMAP_SCAN, ctypes.byref(arg))
        if got < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"ioctl(PAGEMAP_SCAN): {os.strerror(e)}")
    finally:
        os.close(fd)
    for i in range(got):
        lo, hi = (vec[i].start - addr) // _HUGE, (vec[i].end - addr) // _HUGE
        out[lo:hi] = PMD_ZERO if vec[i].categories & PAGE_IS_PFNZERO else PMD_ANON
    return out


def _vmstat(*keys: str) -> dict:
    want, out = set(keys), {}
    with open("/proc/vmstat") as f:
        for line in f:
            k, _, v = line.partition(" ")
            if k in want:
                out[k] = int(v)
    return out


def thp_usable() -> tuple[bool, str]:
    """Whether this host gives a MADV_HUGEPAGE region a 2 MiB huge page on a write fault right now,
    and whether run_real can see it (PAGEMAP_SCAN); the reason if not."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            mode = f.read()
    except OSError:
        return False, "no /sys/kernel/mm/transparent_hugepage (kernel built without THP)"
    if "[never]" in mode:
        return False, "transparent huge pages are disabled (/sys/kernel/mm/transparent_hugepage/enabled: never)"
    if PAGE_SIZE != 4096:
        return False, f"page size {PAGE_SIZE}: the THP scenarios assume 4 KiB pages and 2 MiB PMDs"
    base = _map(0, 2 * _HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    try:
        addr = -(-base // _HUGE) * _HUGE
        if _libc.madvise(addr, _HUGE, MADV_HUGEPAGE) != 0:
            return False, f"madvise(MADV_HUGEPAGE) failed: {os.strerror(ctypes.get_errno())}"
        ctypes.c_uint8.from_address(addr).value = 1
        try:
            st = _pmd_states(os.getpid(), addr, HUGE_PAGES)
        except OSError as e:
            return False, f"cannot tell huge PMDs from PTEs (PAGEMAP_SCAN needs Linux >= 6.7): {e}"
        if st[0] != PMD_ANON:
            return False, "the kernel refused a huge page even with MADV_HUGEPAGE (memory fragmented or THP limited)"
    finally:
        _libc.munmap(base, 2 * _HUGE)
    return True, ""


# --------------------------------------------------------------------------- worker
class _WorkerEnv:
    """What a worker needs; set by the coordinator before the first fork, inherited by every worker."""
    sc: Scenario = None
    slots: list = []            # (addr, slot_len) per region
    scratch: int = 0            # MAP_SHARED scratch, as many pages as the largest region
    ru0 = _Rusage()
    ru1 = _Rusage()
    rings: list = []            # this worker's pins: [io_uring fd, region index, pages, live mask] per pin op


# --------------------------------------------------------------------------- pins (io_uring fixed buffers)
SYS_IO_URING_SETUP, SYS_IO_URING_REGISTER = 425, 427            # x86-64 and arm64 (asm-generic) alike
IORING_REGISTER_BUFFERS, IORING_UNREGISTER_BUFFERS, IORING_REGISTER_BUFFERS_UPDATE = 0, 1, 16
_libc.syscall.restype = ctypes.c_long


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _RsrcUpdate2(ctypes.Structure):
    _fields_ = [("offset", ctypes.c_uint32), ("resv", ctypes.c_uint32), ("data", ctypes.c_uint64),
                ("tags", ctypes.c_uint64), ("nr", ctypes.c_uint32), ("resv2", ctypes.c_uint32)]


def _ring_register(fd: int, opcode: int, arg, nr: int) -> int:
    got = _libc.syscall(SYS_IO_URING_REGISTER, ctypes.c_uint(fd), ctypes.c_uint(opcode), arg, ctypes.c_uint(nr))
    return 0 if got >= 0 else ctypes.get_errno()


def _pin(region: int, addr: int, pages: list) -> tuple[int, int]:
    """Pin `pages` of the region at addr as io_uring fixed buffers, one page per buffer
    (io_sqe_buffer_register: pin_user_pages(FOLL_WRITE | FOLL_LONGTERM)). Returns
    (minor faults charged to this task during the registration, errno or 0)."""
    params = ctypes.create_string_buffer(120)                   # struct io_uring_params
    fd = _libc.syscall(SYS_IO_URING_SETUP, ctypes.c_uint(4), params)
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"io_uring_setup: {os.strerror(e)}")
    iov = (_Iovec * len(pages))(*[_Iovec(addr + p * PAGE_SIZE, PAGE_SIZE) for p in pages])
    gr, sc, r0, r1 = _libc.getrusage, _libc.syscall, ctypes.byref(_WorkerEnv.ru0), ctypes.byref(_WorkerEnv.ru1)
    ru0, ru1 = _WorkerEnv.ru0, _WorkerEnv.ru1
    nr, op = ctypes.c_uint(len(pages)), ctypes.c_uint(IORING_REGISTER_BUFFERS)
    good = (SYS_IO_URING_REGISTER, ctypes.c_uint(fd), op, iov, nr)
    bad = (SYS_IO_URING_REGISTER, ctypes.c_uint(0xFFFFFFFF), op, iov, nr)     # EBADF: nothing happens
    # Warm-up: the very same call path on a bad fd, so that the interpreter's own
    # (copy-on-write) faults land before the measured window; the last one is the baseline.
    for _ in range(3):
        gr(0, r0)
        sc(*bad)
        gr(0, r1)
    base = ru1.minflt - ru0.minflt
    gr(0, r0)
    got = sc(*good)
    gr(0, r1)
    err = 0 if got >= 0 else ctypes.get_errno()
    faults = ru1.minflt - ru0.minflt - base
    if err:
        os.close(fd)
    else:
        _WorkerEnv.rings.append([fd, region, np.asarray(pages, dtype=np.int64), np.ones(len(pages), dtype=bool)])
    return faults, err


def _unpin(region: int, pages) -> None:
    """Drop this worker's pins on `pages` of `region` (None: all): each buffer slot is replaced
    by an empty one (IORING_REGISTER_BUFFERS_UPDATE), which unpins its page at once."""
    empty = (_Iovec * 1)(_Iovec(None, 0))
    for ring in _WorkerEnv.rings:
        fd, reg, pinned, live = ring
        if reg != region:
            continue
        hit = live & (np.isin(pinned, pages) if pages is not None else True)
        for k in np.flatnonzero(hit).tolist():
            upd = _RsrcUpdate2(offset=k, data=ctypes.addressof(empty), nr=1)
            err = _ring_register(fd, IORING_REGISTER_BUFFERS_UPDATE, ctypes.byref(upd), ctypes.sizeof(upd))
            if err:
                raise OSError(err, f"io_uring_register(BUFFERS_UPDATE): {os.strerror(err)}")
            live[k] = False
    _WorkerEnv.rings = [r for r in _WorkerEnv.rings if r[3].any() or os.close(r[0])]


def pins_usable() -> tuple[bool, str]:
    """Whether this process can pin pages as io_uring fixed buffers (run_real's pin/unpin); why not if not."""
    params = ctypes.create_string_buffer(120)
    fd = _libc.syscall(SYS_IO_URING_SETUP, ctypes.c_uint(4), params)
    if fd < 0:
        e = ctypes.get_errno()
        return False, (f"io_uring_setup failed ({os.strerror(e)}): run_real pins pages as io_uring fixed buffers "
                       "(see /proc/sys/kernel/io_uring_disabled)")
    try:
        buf = ctypes.create_string_buffer(PAGE_SIZE)
        iov = (_Iovec * 1)(_Iovec(ctypes.addressof(buf), PAGE_SIZE))
        err = _ring_register(fd, IORING_REGISTER_BUFFERS, iov, 1)
        if err:
            return False, f"io_uring_register(IORING_REGISTER_BUFFERS) failed: {os.strerror(err)}"
    finally:
        os.close(fd)
    return True, ""


def _drop_rings(unregister: bool) -> None:
    """Close this worker's rings; unregister their buffers first (unpinning synchronously) when
    the pins are ours, and just close them in a freshly forked child, whose fds are inherited."""
    for fd, *_ in _WorkerEnv.rings:
        if unregister:
            _ring_register(fd, IORING_UNREGISTER_BUFFERS, None, 0)
        os.close(fd)
    _WorkerEnv.rings = []


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
                    _, addr, length, prot, shared, advice, thp = msg
                    flags = (MAP_SHARED if shared else MAP_PRIVATE) | MAP_ANONYMOUS | MAP_FIXED
                    _map(addr, length, prot, flags)
                    huge = MADV_HUGEPAGE if thp else MADV_NOHUGEPAGE
                    _errcheck(_libc.madvise(addr, length, huge), f"madvise({huge})")
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
                        _drop_rings(False)          # the parent's pins stay the parent's
                        _send(sock, ("ready", os.getpid()))
                        continue
                    child_sock.close()
                    _send(sock, ("ok", pid))
                elif cmd == "pin":
                    _, region, addr, pages = msg
                    _send(sock, ("ok", _pin(region, addr, pages)))
                elif cmd == "unpin":
                    _, region, pages = msg
                    _unpin(region, pages)
                    _send(sock, ("ok", None))
                elif cmd == "exit":
                    _drop_rings(True)               # as io_uring's teardown at exit, but synchronously
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
        # Huge PMDs are told from PTE-mapped pages by PAGEMAP_SCAN (Linux >= 6.7).
        try:
            _pmd_states(os.getpid(), -(-base // _HUGE) * _HUGE, HUGE_PAGES)     # PROT_NONE reservation
            self.huge_ok = True
        except OSError:
            self.huge_ok = False
        self.fallback0 = _vmstat("thp_fault_fallback").get("thp_fault_fallback", 0)
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

    def _state(self, w: _Worker, regions=None):
        """(present, pfn, zero, pmds) over the regions (all by default), concatenated: zero marks
        pages mapping the zero page or the huge zero page; pmds holds, per region, the
        PMD_NONE/PMD_ZERO/PMD_ANON state of each whole 2 MiB range (all PMD_NONE without PAGEMAP_SCAN)."""
        idx = range(len(self.sc.regions)) if regions is None else regions
        slots = [self.region_pages[i] for i in idx]
        present, pfn = _page_values(w.pid, slots)
        zero = present & (pfn == self.zero_pfn)
        pmds, off = [], 0
        for addr, npages in slots:
            st = _pmd_states(w.pid, addr, npages) if self.huge_ok else np.zeros(npages // HUGE_PAGES, np.int8)
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
        """Rss, Pss, Private_* of the VMAs inside region slots, in kB."""
        lo_hi = [(a, a + ln) for a, ln in self.slots]
        tot = {"Rss": 0, "Pss": 0, "Private_Clean": 0, "Private_Dirty": 0, "AnonHugePages": 0}
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
        present, pfn, zero, pmds = self._state(w)
        sm = self._smaps(w)
        kb = PAGE_SIZE // 1024
        d = {"smaps_rss_pages": sm["Rss"] // kb, "smaps_pss_pages": sm["Pss"] / kb,
             "smaps_uss_pages": (sm["Private_Clean"] + sm["Private_Dirty"]) // kb,
             "smaps_anon_huge_pages": sm["AnonHugePages"] // (_HUGE // 1024)}
        d["anon_huge_pages"] = int(sum(int((st == PMD_ANON).sum()) for st in pmds)) if self.huge_ok else np.nan
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
            self.rows[p.pid] = dict(pid=p.pid, name=p.name, parent=p.parent.pid if p.parent else 0,
                                    state="fork_failed", reason="", minor_faults=0, zero_fills=0,
                                    cow_copies=0, cow_reuses=0, rss_pages=0, pss_pages=0.0, uss_pages=0,
                                    shared_pages=0, fork_ptes_copied=0, fork_pages_copied=0, fork_pmds_copied=0,
                                    anon_huge_pages=0, thp_fault_alloc=0, thp_copies=0, thp_splits=0,
                                    baseline_faults=0, smaps_rss_pages=0, smaps_pss_pages=0.0, smaps_uss_pages=0,
                                    smaps_anon_huge_pages=0, vmstat_thp_split_pmd=0, pin_errno=0, real_pid=0)
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
        df.attrs["thp_fault_fallback"] = (_vmstat("thp_fault_fallback").get("thp_fault_fallback", 0)
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
            self._call(self._host(pid), "mmap", addr, r.npages * PAGE_SIZE, PROTS[r.prot], r.shared, advice,
                       bool(r.thp))
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
        pages = np.unique(_op_pages(self.sc, op))
        present0, pfn0, zero0, (pmd0,) = self._state(host, [r.index])
        val = (int(op.arg) % 255 + 1) if write else 0
        split0 = _vmstat("thp_split_pmd").get("thp_split_pmd", 0)
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
        row["vmstat_thp_split_pmd"] += _vmstat("thp_split_pmd").get("thp_split_pmd", 0) - split0
        row["minor_faults"] += faults
        row["baseline_faults"] += base
        present1, pfn1, zero1, (pmd1,) = self._state(host, [r.index])
        # 2 MiB ranges: a new anonymous huge PMD (from nothing or from the huge zero page) is a
        # THP fault allocation; an anonymous huge PMD onto another huge page is a THP copy; a
        # huge PMD (anonymous or zero) that became a PTE table was split.
        bases = np.arange(len(pmd0)) * HUGE_PAGES
        alloc = (pmd1 == PMD_ANON) & (pmd0 != PMD_ANON)
        hcopy = (pmd1 == PMD_ANON) & (pmd0 == PMD_ANON) & (pfn1[bases] != pfn0[bases])
        if self.huge_ok:
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
