"""libc and system calls through ctypes: mmap, madvise, getrusage, io_uring, the PAGEMAP_SCAN ioctl.

The real-process side (cowbench/real/) drives real processes through these;
nothing here knows about scenarios.
"""
from __future__ import annotations

import ctypes
import os

PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC = 0, 1, 2, 4
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS, MAP_NORESERVE = 0x01, 0x02, 0x10, 0x20, 0x4000
MADV_DONTFORK, MADV_DOFORK, MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_WIPEONFORK, MADV_KEEPONFORK = 10, 11, 14, 15, 18, 19
PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37

# A scenario's prot and madvise names, as the system calls take them.
PROTS = {"none": PROT_NONE, "r": PROT_READ, "rw": PROT_READ | PROT_WRITE,
         "rx": PROT_READ | PROT_EXEC, "rwx": PROT_READ | PROT_WRITE | PROT_EXEC}
ADVICE = {"dontfork": MADV_DONTFORK, "dofork": MADV_DOFORK,
          "wipeonfork": MADV_WIPEONFORK, "keeponfork": MADV_KEEPONFORK,
          "hugepage": MADV_HUGEPAGE, "nohugepage": MADV_NOHUGEPAGE}

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
MAP_FAILED = ctypes.c_void_p(-1).value


class Timeval(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("usec", ctypes.c_long)]


class Rusage(ctypes.Structure):
    _fields_ = [("utime", Timeval), ("stime", Timeval)] + [
        (n, ctypes.c_long) for n in ("maxrss", "ixrss", "idrss", "isrss", "minflt", "majflt", "nswap",
                                     "inblock", "oublock", "msgsnd", "msgrcv", "nsignals", "nvcsw", "nivcsw")]


def errcheck(ret, what: str) -> None:
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def map_anon(addr: int, length: int, prot: int, flags: int) -> int:
    got = libc.mmap(addr, length, prot, flags, -1, 0)
    if got in (None, MAP_FAILED):
        e = ctypes.get_errno()
        raise OSError(e, f"mmap({addr:#x}, {length}): {os.strerror(e)}")
    return got


def map_file(addr: int, length: int, prot: int, flags: int, path: str, offset: int) -> int:
    """mmap the file at path over [addr, addr+length) (MAP_FIXED), from byte offset."""
    fd = os.open(path, os.O_RDWR)
    try:
        got = libc.mmap(addr, length, prot, flags | MAP_FIXED, fd, offset)
    finally:
        os.close(fd)
    if got in (None, MAP_FAILED):
        e = ctypes.get_errno()
        raise OSError(e, f"mmap({addr:#x}, {length}, {path!r}, {offset}): {os.strerror(e)}")
    return got


def reserve(addr: int, length: int) -> None:
    """(Re)place a PROT_NONE reservation over [addr, addr+length)."""
    map_anon(addr, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED)


# --- io_uring: fixed buffers pin pages (pin_user_pages with FOLL_WRITE | FOLL_LONGTERM) ------------

SYS_IO_URING_SETUP, SYS_IO_URING_REGISTER = 425, 427            # x86-64 and arm64 (asm-generic) alike
IORING_REGISTER_BUFFERS, IORING_UNREGISTER_BUFFERS, IORING_REGISTER_BUFFERS_UPDATE = 0, 1, 16
libc.syscall.restype = ctypes.c_long


class Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class RsrcUpdate2(ctypes.Structure):
    _fields_ = [("offset", ctypes.c_uint32), ("resv", ctypes.c_uint32), ("data", ctypes.c_uint64),
                ("tags", ctypes.c_uint64), ("nr", ctypes.c_uint32), ("resv2", ctypes.c_uint32)]


def ring_register(fd: int, opcode: int, arg, nr: int) -> int:
    got = libc.syscall(SYS_IO_URING_REGISTER, ctypes.c_uint(fd), ctypes.c_uint(opcode), arg, ctypes.c_uint(nr))
    return 0 if got >= 0 else ctypes.get_errno()


# --- PAGEMAP_SCAN (Linux >= 6.7) -------------------------------------------------------------------

class PmScanArg(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "size", "flags", "start", "end", "walk_end", "vec", "vec_len", "max_pages", "category_inverted",
        "category_mask", "category_anyof_mask", "return_mask")]


class PageRegion(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("end", ctypes.c_uint64), ("categories", ctypes.c_uint64)]


PAGEMAP_SCAN = (3 << 30) | (ctypes.sizeof(PmScanArg) << 16) | (ord("f") << 8) | 16     # _IOWR('f', 16, ...)
