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


def files_dir() -> str:
    """Where run_real makes the real files of a scenario's file mappings
    (COWBENCH_FILES_DIR, else the temporary directory)."""
    import tempfile

    return os.environ.get("COWBENCH_FILES_DIR") or tempfile.gettempdir()


def device_readahead(path: str) -> int | None:
    """Bytes of read-around the block device under path gives a major fault
    (queue/read_ahead_kb), None where path is on no block device (tmpfs,
    overlay): its page cache cannot be evicted to disk there."""
    dev = os.stat(path).st_dev
    base = f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}"
    for q in (f"{base}/queue/read_ahead_kb", f"{base}/../queue/read_ahead_kb"):   # a disk, or a partition's disk
        try:
            with open(q) as f:
                return int(f.read()) * 1024
        except OSError:
            continue
    return None


def files_usable() -> tuple[bool, str]:
    """Whether run_real's files sit on a block device, so that POSIX_FADV_DONTNEED
    evicts them and a fault reads them back (major faults, read-around)."""
    where = files_dir()
    if device_readahead(where) is None:
        return False, (f"{where} is on no block device (tmpfs or overlay?): its files cannot be evicted; "
                       "set COWBENCH_FILES_DIR to a directory on a disk")
    return True, ""


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


# --- whole processes: maps, smaps, status, pagemap in bulk, kpageflags/kpagecount ----------------
#
# The readers below serve snapshot.py and trace.py: they read a live process
# from outside, in large chunks, into NumPy arrays. pagemap bits
# (Documentation/admin-guide/mm/pagemap.rst): 63 present, 62 swapped, 61 file
# page or shared anonymous (!PageAnon), 56 exclusively mapped (the page's
# mapcount is 1), 0-54 the PFN when present and the reader has CAP_SYS_ADMIN.

PM_PRESENT, PM_SWAP, PM_FILE, PM_EXCLUSIVE = 1 << 63, 1 << 62, 1 << 61, 1 << 56
PFN_MASK = (1 << 55) - 1
PAGE_IS_FILE, PAGE_IS_SWAPPED = 1 << 2, 1 << 4
KPF_ANON, KPF_COMPOUND_HEAD, KPF_COMPOUND_TAIL, KPF_KSM, KPF_THP = 1 << 12, 1 << 15, 1 << 16, 1 << 21, 1 << 22
KPF_SWAPBACKED = 1 << 14
USER_TOP = 1 << 47               # x86-64 TASK_SIZE: pagemap ends here ([vsyscall] lies above)
_CHUNK = 1 << 18                 # pagemap entries per read (2 MiB of entries: 1 GiB of address space)
_SCAN_VEC = 4096                 # page_region slots per PAGEMAP_SCAN call
_KPAGE_GAP = 64                  # PFNs read in one pread when closer than this


def parse_smaps(text: str) -> list[dict]:
    """/proc/PID/smaps (or maps) text -> one dict per VMA: start, end, perms, offset, dev, inode,
    path, then every 'Key: N kB' field in kB (THPeligible as a number) and VmFlags as a string."""
    vmas, cur = [], None
    for line in text.splitlines():
        head, _, rest = line.partition(" ")
        if head.endswith(":"):
            key = head[:-1]
            if key == "VmFlags":
                cur["VmFlags"] = rest.strip()
            else:
                v = rest.split()
                cur[key] = int(v[0]) if v and v[0].isdigit() else (v[0] if v else "")
            continue
        if "-" not in head:
            continue
        lo, hi = head.split("-")
        f = line.split(None, 5)
        cur = {"start": int(lo, 16), "end": int(hi, 16), "perms": f[1], "offset": int(f[2], 16), "dev": f[3],
               "inode": int(f[4]), "path": f[5].strip() if len(f) > 5 else ""}
        vmas.append(cur)
    return vmas


def read_smaps(pid: int, maps_only: bool = False) -> list[dict]:
    """The VMAs of process pid, from /proc/PID/smaps (maps_only: /proc/PID/maps, which walks no
    page tables and so costs nothing however large the process)."""
    with open(f"/proc/{pid}/{'maps' if maps_only else 'smaps'}") as f:
        return parse_smaps(f.read())


def read_keyed(path: str) -> dict:
    """'Key: value [kB]' lines (status, smaps_rollup, meminfo) -> {key: int or str}."""
    out = {}
    with open(path) as f:
        for line in f:
            k, sep, v = line.partition(":")
            if not sep:
                continue
            v = v.split()
            out[k.strip()] = int(v[0]) if v and v[0].lstrip("-").isdigit() else " ".join(v)
    return out


def read_stat(pid: int) -> dict:
    """/proc/PID/stat: comm, state, ppid, flags (PF_*: 0x4 PF_EXITING), minflt, majflt, starttime
    (clock ticks since boot)."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    comm = text[text.index("(") + 1: text.rindex(")")]
    rest = text[text.rindex(")") + 2:].split()
    return {"comm": comm, "state": rest[0], "ppid": int(rest[1]), "flags": int(rest[6]), "minflt": int(rest[7]),
            "majflt": int(rest[9]),
            "starttime": int(rest[19])}


def children(pid: int) -> list[int]:
    """Children of every thread of pid (/proc/PID/task/*/children), in pid order; [] once pid is gone."""
    out = set()
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.update(int(c) for c in f.read().split())
        except OSError:
            pass
    return sorted(out)


def descendants(pid: int) -> list[int]:
    """pid's children, their children, ... (breadth first)."""
    out, todo = [], [pid]
    while todo:
        kids = children(todo.pop(0))
        out.extend(kids)
        todo.extend(kids)
    return out


def shmem_devices() -> set[str]:
    """Device numbers ("MAJ:MIN" as maps shows them) of tmpfs and shmem mounts: a MAP_SHARED
    VMA on one of them holds shmem pages (RssShmem), as do shared anonymous mappings (00:01)."""
    devs = {"00:01"}
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fstype = right.split(" ", 1)[0]
                if fstype in ("tmpfs", "shmem", "devtmpfs", "ramfs", "hugetlbfs"):
                    maj, mi = left.split()[2].split(":")
                    devs.add(f"{int(maj):02x}:{int(mi):02x}")
    except OSError:
        pass
    return devs


def zero_pfn() -> int:
    """The zero page's PFN as pagemap shows it to this reader (0 without CAP_SYS_ADMIN)."""
    probe = map_anon(0, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    try:
        ctypes.c_uint8.from_address(probe).value
        _, pfn = page_values(os.getpid(), [(probe, 1)])
        return int(pfn[0])
    finally:
        libc.munmap(probe, PAGE_SIZE)


class Pagemap:
    """/proc/PID/pagemap of one process, open for bulk reads (close() or use as a context manager)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
        self._scan_ok: bool | None = None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def read(self, first_page: int, npages: int, out: np.ndarray | None = None) -> np.ndarray:
        """The raw 64-bit entries of pages [first_page, first_page + npages), in chunks of 1 GiB of
        address space, into `out` (allocated if None). Entries the kernel does not return (the
        process exited or unmapped the range meanwhile) read as 0."""
        if out is None:
            out = np.empty(npages, dtype=np.uint64)
        view = memoryview(out).cast("B")
        done = 0
        while done < npages:
            k = min(_CHUNK, npages - done)
            got = os.preadv(self.fd, [view[8 * done: 8 * (done + k)]], 8 * (first_page + done))
            if got < 8 * k:
                out[done + got // 8: npages] = 0
                break
            done += k
        return out

    def scan_usable(self) -> bool:
        """Whether the PAGEMAP_SCAN ioctl works here (Linux >= 6.7)."""
        if self._scan_ok is None:
            try:
                self.scan(0, PAGE_SIZE, PAGE_IS_PRESENT, PAGE_IS_PRESENT)
                self._scan_ok = True
            except OSError:
                self._scan_ok = False
        return self._scan_ok

    def scan(self, start: int, end: int, anyof: int, ret: int) -> np.ndarray:
        """PAGEMAP_SCAN over [start, end) (bytes): the ranges with any category of `anyof`, as an
        (n, 3) uint64 array of start, end (bytes) and the categories of `ret` they have. The kernel
        walks page tables only, so a sparse range costs what its populated tables cost."""
        vec = (PageRegion * _SCAN_VEC)()
        parts = []
        while start < end:
            arg = PmScanArg(size=ctypes.sizeof(PmScanArg), start=start, end=end, vec=ctypes.addressof(vec),
                            vec_len=_SCAN_VEC, category_anyof_mask=anyof, return_mask=ret)
            got = libc.ioctl(self.fd, PAGEMAP_SCAN, ctypes.byref(arg))
            if got < 0:
                e = ctypes.get_errno()
                raise OSError(e, f"ioctl(PAGEMAP_SCAN) on /proc/{self.pid}/pagemap: {os.strerror(e)}")
            if got:
                parts.append(np.frombuffer(bytes(vec)[: got * ctypes.sizeof(PageRegion)],
                                           dtype=np.uint64).reshape(got, 3).copy())
            if got < _SCAN_VEC or arg.walk_end >= end:
                break
            start = arg.walk_end
        return np.concatenate(parts) if parts else np.zeros((0, 3), dtype=np.uint64)


class KPages:
    """/proc/kpageflags and /proc/kpagecount (root only): flags and mapcounts of physical pages."""

    def __init__(self):
        self.flags_fd = self.count_fd = -1
        try:
            self.flags_fd = os.open("/proc/kpageflags", os.O_RDONLY)
            self.count_fd = os.open("/proc/kpagecount", os.O_RDONLY)
            os.pread(self.flags_fd, 8, 0)
        except OSError as e:
            self.close()
            self.why = f"/proc/kpageflags cannot be read: {e.strerror}"
        else:
            self.why = ""

    @property
    def readable(self) -> bool:
        return self.flags_fd >= 0

    def close(self) -> None:
        for fd in (self.flags_fd, self.count_fd):
            if fd >= 0:
                os.close(fd)
        self.flags_fd = self.count_fd = -1

    def flags(self, pfns: np.ndarray) -> np.ndarray:
        return _read_by_pfn(self.flags_fd, pfns)

    def counts(self, pfns: np.ndarray) -> np.ndarray:
        return _read_by_pfn(self.count_fd, pfns)


def _read_by_pfn(fd: int, pfns: np.ndarray) -> np.ndarray:
    """The 64-bit value of each PFN in a /proc/kpage* file, one pread per cluster of nearby
    PFNs (a process's pages sit in long runs of consecutive frames)."""
    pfns = np.asarray(pfns, dtype=np.int64)
    out = np.zeros(len(pfns), dtype=np.uint64)
    if len(pfns) == 0:
        return out
    order = np.argsort(pfns, kind="stable")
    s = pfns[order]
    brk = np.flatnonzero(np.diff(s) > _KPAGE_GAP) + 1
    lo_i = np.r_[0, brk]
    hi_i = np.r_[brk, len(s)]
    vals = np.empty(len(s), dtype=np.uint64)
    for i0, i1 in zip(lo_i.tolist(), hi_i.tolist()):
        b, e = int(s[i0]), int(s[i1 - 1]) + 1
        buf = np.frombuffer(os.pread(fd, 8 * (e - b), 8 * b), dtype=np.uint64)
        idx = s[i0:i1] - b
        ok = idx < len(buf)
        vals[i0:i1] = np.where(ok, buf[np.minimum(idx, max(len(buf) - 1, 0))] if len(buf) else 0, 0)
    out[order] = vals
    return out
