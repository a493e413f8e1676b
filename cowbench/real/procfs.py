"""What /proc says of a process's memory: pagemap, PAGEMAP_SCAN, vmstat (fs/proc/task_mmu.c, mm/vmstat.c).

pagemap has one 64-bit entry per virtual page: bit 63 present, bits 0-54 the
PFN (0 unless the reader has CAP_SYS_ADMIN). PAGEMAP_SCAN (an ioctl on the
same file, Linux >= 6.7) says which ranges a huge PMD maps.
"""
from __future__ import annotations

import ctypes
import os

import numpy as np

from .libc import (MADV_HUGEPAGE, MAP_ANONYMOUS, MAP_PRIVATE, PAGEMAP_SCAN, PROT_READ, PROT_WRITE, PageRegion,
                   PmScanArg, libc, map_anon)

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
HUGE = 2 << 20
HUGE_PAGES = HUGE // PAGE_SIZE     # subpages of a PMD-sized huge page (512)

# PAGEMAP_SCAN categories: which 2 MiB ranges are mapped by a huge PMD.
PAGE_IS_PRESENT, PAGE_IS_PFNZERO, PAGE_IS_HUGE = 1 << 3, 1 << 5, 1 << 6
PMD_NONE, PMD_ZERO, PMD_ANON = 0, 1, 2     # per 2 MiB range: PTEs (or nothing), huge zero page, anonymous THP
KPF_ZERO_PAGE = 1 << 24


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


def page_values(pid: int, slots):
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


def pmd_states(pid: int, addr: int, npages: int) -> np.ndarray:
    """PMD_NONE / PMD_ZERO / PMD_ANON for each whole 2 MiB range of [addr, addr + npages pages)
    in process pid (addr 2 MiB-aligned), read with the PAGEMAP_SCAN ioctl: PAGE_IS_HUGE is
    reported for PMD-mapped ranges only, so a split huge page (PTE-mapped) reads PMD_NONE."""
    n = npages // HUGE_PAGES
    out = np.zeros(n, dtype=np.int8)
    if n == 0:
        return out
    vec = (PageRegion * n)()
    arg = PmScanArg(size=ctypes.sizeof(PmScanArg), start=addr, end=addr + n * HUGE, vec=ctypes.addressof(vec),
                     vec_len=n, category_anyof_mask=PAGE_IS_HUGE, return_mask=PAGE_IS_HUGE | PAGE_IS_PFNZERO)
    fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    try:
        got = libc.ioctl(fd, PAGEMAP_SCAN, ctypes.byref(arg))
        if got < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"ioctl(PAGEMAP_SCAN): {os.strerror(e)}")
    finally:
        os.close(fd)
    for i in range(got):
        lo, hi = (vec[i].start - addr) // HUGE, (vec[i].end - addr) // HUGE
        out[lo:hi] = PMD_ZERO if vec[i].categories & PAGE_IS_PFNZERO else PMD_ANON
    return out


def vmstat(*keys: str) -> dict:
    """The /proc/vmstat counters named."""
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
    base = map_anon(0, 2 * HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    try:
        addr = -(-base // HUGE) * HUGE
        if libc.madvise(addr, HUGE, MADV_HUGEPAGE) != 0:
            return False, f"madvise(MADV_HUGEPAGE) failed: {os.strerror(ctypes.get_errno())}"
        ctypes.c_uint8.from_address(addr).value = 1
        try:
            st = pmd_states(os.getpid(), addr, HUGE_PAGES)
        except OSError as e:
            return False, f"cannot tell huge PMDs from PTEs (PAGEMAP_SCAN needs Linux >= 6.7): {e}"
        if st[0] != PMD_ANON:
            return False, "the kernel refused a huge page even with MADV_HUGEPAGE (memory fragmented or THP limited)"
    finally:
        libc.munmap(base, 2 * HUGE)
    return True, ""
