"""A worker: one real process of a scenario, serving the coordinator's commands over a socket.

It maps and unmaps regions, touches one byte per page through a ctypes
pointer in a C loop and counts its own minor faults with getrusage around the loop,
pins pages as io_uring fixed buffers, and forks (the child becomes the next
worker). See coordinator.py for what is measured from outside.
"""
from __future__ import annotations

import ctypes
import os
import pickle
import signal
import socket
from collections import deque
from itertools import repeat
from operator import getitem, setitem

import numpy as np

from ..patterns import Pattern
from ..scenario import Scenario
from .libc import (IORING_REGISTER_BUFFERS, IORING_REGISTER_BUFFERS_UPDATE, IORING_UNREGISTER_BUFFERS, MADV_HUGEPAGE,
                   MADV_NOHUGEPAGE, MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MAP_SHARED, SYS_IO_URING_REGISTER,
                   SYS_IO_URING_SETUP, Iovec, RsrcUpdate2, Rusage, errcheck, libc, map_anon, map_file, reserve,
                   ring_register)
from .procfs import PAGE_SIZE


class WorkerEnv:
    """What a worker needs; set by the coordinator before the first fork, inherited by every worker."""
    sc: Scenario = None
    slots: list = []            # (addr, slot_len) per region
    scratch: int = 0            # MAP_SHARED scratch, as many pages as the largest region
    ru0 = Rusage()
    ru1 = Rusage()
    rings: list = []            # this worker's pins: [io_uring fd, region index, pages, live mask] per pin op


def pin(region: int, addr: int, pages: list) -> tuple[int, int]:
    """Pin `pages` of the region at addr as io_uring fixed buffers, one page per buffer
    (io_sqe_buffer_register: pin_user_pages(FOLL_WRITE | FOLL_LONGTERM)). Returns
    (minor faults charged to this task during the registration, errno or 0)."""
    params = ctypes.create_string_buffer(120)                   # struct io_uring_params
    fd = libc.syscall(SYS_IO_URING_SETUP, ctypes.c_uint(4), params)
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"io_uring_setup: {os.strerror(e)}")
    iov = (Iovec * len(pages))(*[Iovec(addr + p * PAGE_SIZE, PAGE_SIZE) for p in pages])
    gr, sc, r0, r1 = libc.getrusage, libc.syscall, ctypes.byref(WorkerEnv.ru0), ctypes.byref(WorkerEnv.ru1)
    ru0, ru1 = WorkerEnv.ru0, WorkerEnv.ru1
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
        WorkerEnv.rings.append([fd, region, np.asarray(pages, dtype=np.int64), np.ones(len(pages), dtype=bool)])
    return faults, err


def unpin(region: int, pages) -> None:
    """Drop this worker's pins on `pages` of `region` (None: all): each buffer slot is replaced
    by an empty one (IORING_REGISTER_BUFFERS_UPDATE), which unpins its page at once."""
    empty = (Iovec * 1)(Iovec(None, 0))
    for ring in WorkerEnv.rings:
        fd, reg, pinned, live = ring
        if reg != region:
            continue
        hit = live & (np.isin(pinned, pages) if pages is not None else True)
        for k in np.flatnonzero(hit).tolist():
            upd = RsrcUpdate2(offset=k, data=ctypes.addressof(empty), nr=1)
            err = ring_register(fd, IORING_REGISTER_BUFFERS_UPDATE, ctypes.byref(upd), ctypes.sizeof(upd))
            if err:
                raise OSError(err, f"io_uring_register(BUFFERS_UPDATE): {os.strerror(err)}")
            live[k] = False
    WorkerEnv.rings = [r for r in WorkerEnv.rings if r[3].any() or os.close(r[0])]


def pins_usable() -> tuple[bool, str]:
    """Whether this process can pin pages as io_uring fixed buffers (run_real's pin/unpin); why not if not."""
    params = ctypes.create_string_buffer(120)
    fd = libc.syscall(SYS_IO_URING_SETUP, ctypes.c_uint(4), params)
    if fd < 0:
        e = ctypes.get_errno()
        return False, (f"io_uring_setup failed ({os.strerror(e)}): run_real pins pages as io_uring fixed buffers "
                       "(see /proc/sys/kernel/io_uring_disabled)")
    try:
        buf = ctypes.create_string_buffer(PAGE_SIZE)
        iov = (Iovec * 1)(Iovec(ctypes.addressof(buf), PAGE_SIZE))
        err = ring_register(fd, IORING_REGISTER_BUFFERS, iov, 1)
        if err:
            return False, f"io_uring_register(IORING_REGISTER_BUFFERS) failed: {os.strerror(err)}"
    finally:
        os.close(fd)
    return True, ""


def drop_rings(unregister: bool) -> None:
    """Close this worker's rings; unregister their buffers first (unpinning synchronously) when
    the pins are ours, and just close them in a freshly forked child, whose fds are inherited."""
    for fd, *_ in WorkerEnv.rings:
        if unregister:
            ring_register(fd, IORING_UNREGISTER_BUFFERS, None, 0)
        os.close(fd)
    WorkerEnv.rings = []


def _faults(it) -> tuple[int, int]:
    """Exhaust the iterator `it` between two getrusage reads; (minor, major) faults taken meanwhile.
    deque(it, maxlen=0) consumes it in C (consume_iterator), so no bytecode runs in the window."""
    gr, r0, r1 = libc.getrusage, ctypes.byref(WorkerEnv.ru0), ctypes.byref(WorkerEnv.ru1)
    gr(0, r0)
    deque(it, maxlen=0)
    gr(0, r1)
    return WorkerEnv.ru1.minflt - WorkerEnv.ru0.minflt, WorkerEnv.ru1.majflt - WorkerEnv.ru0.majflt


def _loop(p, offs: list, write: bool, val: int):
    """An iterator that touches p[o] for each o in offs (writes val, or reads) when exhausted."""
    if write:
        return map(setitem, repeat(p), offs, repeat(val))
    return map(getitem, repeat(p), offs)


def touch(addr: int, pages: np.ndarray, write: bool, val: int) -> tuple[int, int, int]:
    """Touch one byte at the start of each page, in order; return (minor faults - baseline,
    baseline, major faults) of the measured loop.

    The loop runs in C (map over operator.getitem/setitem on a ctypes pointer, consumed by a
    deque), never in bytecode: a `for` loop in Python let the interpreter fault on its own
    memory in the middle of the window. Under load a forked worker counted 1001 faults for
    1000 pages; `perf record -e minor-faults -d` showed the extra one in _PyType_Lookup, a
    copy-on-write of the type cache when the adaptive interpreter retried specialising the
    subscript after its backoff (not in the warm-up, whose iterations the backoff had not
    reached)."""
    offs = (pages.astype(np.int64) * PAGE_SIZE).tolist()
    p = ctypes.cast(addr, ctypes.POINTER(ctypes.c_uint8))
    s = ctypes.cast(WorkerEnv.scratch, ctypes.POINTER(ctypes.c_uint8))
    # Warm-up: the same loop over the same list on shared scratch memory, so that
    # the interpreter's own first-touch/COW faults happen before the measurement.
    _faults(_loop(s, offs, write, val))
    _faults(_loop(s, offs, write, val))
    base, _ = _faults(_loop(p, [], write, val))
    faults, major = _faults(_loop(p, offs, write, val))
    return faults - base, base, major


def send(sock: socket.socket, msg, fds=()) -> None:
    data = pickle.dumps(msg)
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.sendall(data)


def recv(sock: socket.socket):
    """One message (SOCK_SEQPACKET keeps boundaries), or None at EOF."""
    data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, 4)
    if not data:
        return None, []
    return pickle.loads(data), fds


def worker_setup() -> None:
    import faulthandler
    import resource

    faulthandler.disable()                  # pytest enables it; a SIGSEGV must just kill us
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def worker_main(sock: socket.socket) -> None:
    """Serve commands until told to exit; never returns."""
    code = 0
    try:
        worker_setup()
        send(sock, ("ready", os.getpid()))
        while True:
            msg, fds = recv(sock)
            if msg is None:
                break
            cmd = msg[0]
            try:
                if cmd == "touch":
                    _, op, addr, write, val = msg
                    pages = op_pages(WorkerEnv.sc, op)
                    send(sock, ("ok", touch(addr, pages, write, val)))
                elif cmd == "mmap":
                    _, addr, length, prot, shared, advice, thp, path, offset = msg
                    if path is None:
                        flags = (MAP_SHARED if shared else MAP_PRIVATE) | MAP_ANONYMOUS | MAP_FIXED
                        map_anon(addr, length, prot, flags)
                        huge = MADV_HUGEPAGE if thp else MADV_NOHUGEPAGE
                        errcheck(libc.madvise(addr, length, huge), f"madvise({huge})")
                    else:                          # a file: as it is (MADV_NOHUGEPAGE would stop PMD folio maps)
                        map_file(addr, length, prot, MAP_SHARED if shared else MAP_PRIVATE, path, offset)
                    if advice is not None:
                        errcheck(libc.madvise(addr, length, advice), f"madvise({advice})")
                    send(sock, ("ok", None))
                elif cmd == "munmap":
                    for addr, length in msg[1]:
                        errcheck(libc.munmap(addr, length), "munmap")
                        reserve(addr, length)
                    send(sock, ("ok", None))
                elif cmd == "mprotect":
                    _, addr, length, prot = msg
                    errcheck(libc.mprotect(addr, length, prot), "mprotect")
                    send(sock, ("ok", None))
                elif cmd == "madvise":
                    _, addr, length, advice = msg
                    errcheck(libc.madvise(addr, length, advice), "madvise")
                    send(sock, ("ok", None))
                elif cmd == "fork":
                    child_sock = socket.socket(fileno=fds[0])
                    pid = os.fork()
                    if pid == 0:
                        sock.close()
                        sock = child_sock
                        drop_rings(False)          # the parent's pins stay the parent's
                        send(sock, ("ready", os.getpid()))
                        continue
                    child_sock.close()
                    send(sock, ("ok", pid))
                elif cmd == "pin":
                    _, region, addr, pages = msg
                    send(sock, ("ok", pin(region, addr, pages)))
                elif cmd == "unpin":
                    _, region, pages = msg
                    unpin(region, pages)
                    send(sock, ("ok", None))
                elif cmd == "exit":
                    drop_rings(True)               # as io_uring's teardown at exit, but synchronously
                    break
                else:
                    send(sock, ("error", f"unknown command {cmd!r}"))
            except OSError as e:
                send(sock, ("error", f"{cmd}: {e}"))
    except BaseException:                       # pragma: no cover - a broken pipe to a dead coordinator
        code = 1
    finally:
        os._exit(code)


def op_pages(sc: Scenario, op) -> np.ndarray:
    npages = sc.regions[op.region].npages
    pages = op.pages
    if isinstance(pages, Pattern):
        return pages.pages(npages)
    return np.asarray(pages, dtype=np.int64)
