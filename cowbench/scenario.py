"""The scenario builder: processes, regions and the operations they perform.

A `Scenario` records what happens, in order, as a list of `Op`s; `simulate`
runs that list any number of times. Everything a user can get wrong is checked
here, when the operation is recorded, so the message can name the operation and
the value; what only the run can decide (a SIGSEGV on a dontfork region, an
OOM kill, an eager fork that finds no memory) is the engine's business.

An address space (the kernel's mm) is tracked at build time too, because it is
fully determined by the operations: mmap, munmap, fork, vfork and exec. A vfork
child shares its parent's; exec gives a process a fresh one. So is each
process's descriptor table (cowbench/files.py): fork and vfork copy it, exec
closes its O_CLOEXEC descriptors, exit closes them all.
"""
from __future__ import annotations

import contextlib
import numbers
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ._engine.abi import (EXEC, EXIT, FORK, MADVISE, MMAP, MPROTECT, MUNMAP, PAT_SEQUENTIAL, PHASE, PIN, READ,
                          SPAWN, UNPIN, VFORK, WRITE)
from . import files
from ._params import ScenarioError, check_choice, parse_size, safe_repr
from .files import MODES, FdTable, File, OpenFile
from .patterns import Pattern

__all__ = ["Scenario", "Process", "Region", "Op", "Phase", "Program", "Image"]

PROTS = ("none", "r", "rw", "rx", "rwx")
ON_FORK = ("copy", "dontfork", "wipeonfork")
ADVICE = ("dontfork", "dofork", "wipeonfork", "keeponfork", "hugepage", "nohugepage")
MAX_REGION = 1 << 47          # x86-64 user address space (TASK_SIZE), per process
MAX_PHYS = 1 << 52            # x86-64's physical address width
PAGE_SIZES = (4096, 65536)    # powers of two from x86-64's 4 KiB to arm64's 64 KiB base pages


class Op(NamedTuple):
    """One recorded operation. `arg` is the new pid/mm for spawn/fork/vfork/exec,
    the prot for mprotect, the advice for madvise and the value tag for write. A
    concurrently() block is one op, code PHASE, whose `pages` is the Phase."""

    code: int
    pid: int
    region: int = -1
    pages: Any = None        # Pattern or int64 array, for read/write
    arg: Any = None
    mm: int = -1             # the address space the op acts on (new one for spawn/fork/exec)


@dataclass(eq=False)
class Region:
    """A mapping: one address range, named in every process that inherits it by fork."""

    scenario: "Scenario" = field(repr=False)
    index: int
    name: str
    npages: int
    shared: bool
    prot: str
    on_fork: str
    thp: bool = False
    file: File | None = None      # a file mapping of this file, else anonymous
    offset: int = 0               # the file page the region's first page maps

    @property
    def size(self) -> int:
        return self.npages * self.scenario.page_size

    def __repr__(self) -> str:
        kind = "shared" if self.shared else "private"
        what = "" if self.file is None else f" of {safe_repr(self.file.name)}"
        return f"<Region {safe_repr(self.name)} {self.npages} pages {kind}{what} {self.prot}>"


class _MM:
    """Build-time address space: which regions are mapped in it, and which of
    those a fork leaves out (dontfork)."""

    def __init__(self, index: int, mapped=()):
        self.index = index
        self.mapped = set(mapped)
        self.span = 0                    # bytes of address space the mapped regions take (see _span)
        self.dontfork: set[int] = set()


class Process:
    """A process in a scenario. Methods record operations; they return at once."""

    def __init__(self, scenario: "Scenario", pid: int, name: str, parent: "Process | None", mm: _MM):
        self.scenario = scenario
        self.pid = pid
        self.name = name
        self.parent = parent
        self._mm = mm
        self._state = "running"          # running | suspended (vfork parent) | exited
        self._vfork_parent: Process | None = None
        self._fds = FdTable(self._who()) if parent is None else parent._fds.copy(self._who())
        self.fork_fds = len(self._fds)   # descriptors the fork that created it copied (0 if spawned)
        self.exit_files: list[dict] | None = None     # its table as it stood at exit
        self.image: Image | None = None if parent is None else parent.image   # the program image it maps

    def _who(self) -> str:
        return f"process {safe_repr(self.name)} (pid {self.pid})"

    def __repr__(self) -> str:
        return f"<Process {safe_repr(self.name)} pid {self.pid} {self._state}>"

    # -- address space -----------------------------------------------------
    def mmap(self, name: str, size, *, file: File | None = None, offset=0, shared: bool = False, prot: str = "rw",
             on_fork: str = "copy", thp: bool = False) -> Region:
        """Map a new region (private unless shared=True) and return its handle:
        anonymous memory, or with `file` that file's pages from byte `offset`
        (a multiple of the page size) on, through its page cache. A private
        file mapping copies a page on its first write (a program's data); a
        shared one writes the page cache. thp=True lets faults back an
        anonymous private region with 2 MiB transparent huge pages
        (MADV_HUGEPAGE) wherever a whole aligned 2 MiB lies inside it."""
        self._act("mmap")
        if not isinstance(name, str):
            raise ScenarioError(f"The 'name' parameter of mmap must be a str; got {safe_repr(name)}")
        nbytes = parse_size("mmap", "size", size)
        check_choice("mmap", "shared", shared, (False, True))
        check_choice("mmap", "prot", prot, PROTS)
        check_choice("mmap", "on_fork", on_fork, ON_FORK)
        check_choice("mmap", "thp", thp, (False, True))
        what = "shared" if shared else "file-backed" if file is not None else ""
        if thp and what:
            raise ScenarioError(f"mmap: thp=True is modelled for private anonymous regions only; {safe_repr(name)} is {what}")
        if on_fork == "wipeonfork" and what:
            raise ScenarioError(f"mmap: on_fork='wipeonfork' needs a private anonymous region; {safe_repr(name)} is {what} (EINVAL)")
        sc = self.scenario
        first = self._file_offset(name, file, offset, nbytes)
        if nbytes > MAX_REGION:
            raise ScenarioError(f"mmap: size {safe_repr(size)} of {safe_repr(name)} exceeds the 128 TiB user address space (ENOMEM)")
        npages = -(-nbytes // sc.page_size)
        if self._mm.span + _span(npages * sc.page_size) > MAX_REGION:
            raise ScenarioError(f"mmap: {safe_repr(name)} ({safe_repr(size)}) does not fit: {self._who()} already "
                                f"maps {self._mm.span / 2**40:.1f} TiB of its 128 TiB user address space (ENOMEM)")
        region = Region(sc, len(sc.regions), name, npages, bool(shared), prot, on_fork, bool(thp), file, first)
        sc.regions.append(region)
        self._mm.mapped.add(region.index)
        self._mm.span += _span(npages * sc.page_size)
        if on_fork == "dontfork":
            self._mm.dontfork.add(region.index)
        self._record(MMAP, region)
        return region

    def _file_offset(self, name: str, file, offset, nbytes: int) -> int:
        """The first file page of a mapping of `file` at byte `offset` (0 for anonymous memory)."""
        if file is None:
            if not (isinstance(offset, int) and not isinstance(offset, bool) and offset == 0):
                raise ScenarioError(f"mmap: offset {safe_repr(offset)} given for anonymous region {safe_repr(name)}; "
                                    "pass file= to map a file")
            return 0
        if not isinstance(file, File) or file.scenario is not self.scenario:
            raise ScenarioError(f"The 'file' parameter of mmap must be a File of this scenario (Scenario.file) or None; "
                                f"got {safe_repr(file)}")
        start = 0 if isinstance(offset, int) and not isinstance(offset, bool) and offset == 0 \
            else parse_size("mmap", "offset", offset)
        ps = self.scenario.page_size
        if start % ps:
            raise ScenarioError(f"mmap: offset {safe_repr(offset)} of {safe_repr(name)} is not a multiple of the "
                                f"{ps}-byte page size (EINVAL)")
        if start + nbytes > file.size:
            raise ScenarioError(f"mmap: {safe_repr(name)} maps bytes {start} .. {start + nbytes} of "
                                f"{safe_repr(file.name)}, which has {file.size}; a touch past its end would be "
                                "SIGBUS, which is not modelled")
        return start // ps

    def munmap(self, region: Region) -> None:
        """Unmap `region` from this process's address space."""
        self._record(MUNMAP, self._mapped_region("munmap", region))
        self._mm.mapped.discard(region.index)
        self._mm.span -= _span(region.size)
        self._mm.dontfork.discard(region.index)

    def mprotect(self, region: Region, prot: str) -> None:
        """Change the protection of `region` ("none", "r", "rw", "rx", "rwx")."""
        self._mapped_region("mprotect", region)
        check_choice("mprotect", "prot", prot, PROTS)
        self._record(MPROTECT, region, arg=prot)

    def madvise(self, region: Region, advice: str) -> None:
        """MADV_DONTFORK / DOFORK / WIPEONFORK / KEEPONFORK on the whole region."""
        self._mapped_region("madvise", region)
        check_choice("madvise", "advice", advice, ADVICE)
        if advice in ("wipeonfork", "hugepage") and (region.shared or region.file is not None):
            raise ScenarioError(
                f"madvise: {safe_repr(advice)} needs a private anonymous region; {safe_repr(region.name)} is "
                f"{'shared' if region.shared else 'file-backed'} (EINVAL)"
            )
        self._record(MADVISE, region, arg=advice)
        if advice == "dontfork":
            self._mm.dontfork.add(region.index)
        elif advice == "dofork":
            self._mm.dontfork.discard(region.index)

    # -- memory access -----------------------------------------------------
    def read(self, region: Region, pages=None) -> None:
        """Read `pages` of `region` (all of it when pages is None)."""
        self._touch(READ, "read", region, pages, None)

    def write(self, region: Region, pages=None, value: int | None = None) -> None:
        """Write `pages` of `region`. `value` is the tag stored in each page
        (default: a number unique to this write), so isolation can be checked."""
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                  or not 0 < value < 2**63):
            raise ScenarioError(f"The 'value' parameter of write must be an integer in [1, 2**63); got {safe_repr(value)}")
        self._touch(WRITE, "write", region, pages, value)

    def pin(self, region: Region, pages=None) -> None:
        """Pin pages for DMA, as io_uring fixed buffers or RDMA do
        (pin_user_pages with FOLL_WRITE | FOLL_LONGTERM): each page is faulted in
        writable and exclusive, and a pinned page is copied for a child at fork
        instead of shared. Pins last until unpin() or this process's exit."""
        self._pin(PIN, "pin", region, pages)

    def unpin(self, region: Region, pages=None) -> None:
        """Drop this process's pins on `pages` of `region` (all of them when None)."""
        self._pin(UNPIN, "unpin", region, pages)

    def _pin(self, code: int, op: str, region, pages) -> None:
        self._act(op)
        region = self._region(op, region)
        if isinstance(pages, Pattern):
            raise ScenarioError(f"{op}: pages must be an int, a range, a slice or an integer array; got {safe_repr(pages)}")
        every = code == UNPIN and pages is None
        pageset = _page_set(op, pages, region.npages)
        if isinstance(pageset, Pattern):          # a whole region, a range or a slice
            pageset = pageset.pages(region.npages)
        self._record(code, region, pages=pageset, arg=int(every))

    # -- process life ------------------------------------------------------
    def fork(self, name: str | None = None) -> "Process":
        """fork(2): a child with a copy (COW or eager, by policy) of this address space."""
        self._act("fork")
        sc = self.scenario
        mm = sc._new_mm(self._mm.mapped - self._mm.dontfork)
        child = sc._new_process(name, self, mm)
        self._record(FORK, arg=child.pid, mm=mm.index)
        return child

    def vfork(self, name: str | None = None) -> "Process":
        """vfork(2): the child borrows this address space; this process is suspended
        until the child calls exec() or exit()."""
        self._act("vfork")
        child = self.scenario._new_process(name, self, self._mm)
        child._vfork_parent = self
        self._record(VFORK, arg=child.pid)
        self._state = "suspended"
        return child

    def exec(self, program: "Program | None" = None) -> "Image | None":
        """execve(2): drop this address space for a fresh one, and close the
        O_CLOEXEC descriptors. With a Program, map its image in the new one
        and return it (also as `self.image`); without, the new one is empty."""
        self._act("exec")
        if program is not None and not isinstance(program, Program):
            raise ScenarioError(f"The 'program' parameter of exec must be a Program or None; got {safe_repr(program)}")
        mm = self.scenario._new_mm()
        self._record(EXEC, arg=mm.index, mm=mm.index)
        self._mm = mm
        self._fds.close_on_exec()
        self._release_vfork_parent()
        self.image = None if program is None else self._map_image(program)
        return self.image

    def _map_image(self, program: "Program") -> "Image":
        """What execve's ELF loader maps: the program's text (read-only, executable)
        and data (private, writable) from its file, bss, heap and stack anonymous,
        and each library's pages (read-only, executable) from its file."""
        exe = self.scenario._image_file(program)
        ps = self.scenario.page_size
        text_bytes = -(-program.text // ps) * ps

        def segment(seg, size, **kw):
            return self.mmap(f"{program.name}:{seg}", size, **kw) if size else None

        return Image(program,
                     segment("text", program.text, file=exe, prot="rx"),
                     segment("data", program.data, file=exe, offset=text_bytes, prot="rw"),
                     segment("bss", program.bss), segment("heap", program.heap), segment("stack", program.stack),
                     tuple(self.mmap(lib.name, lib.size, file=lib, prot="rx") for lib in program.libs))

    def exit(self) -> None:
        """_exit(2): release the address space and close every descriptor; counters
        (and res.files) freeze as they are now."""
        self._act("exit")
        self._record(EXIT)
        self._state = "exited"
        self.exit_files = self._fds.rows()
        self._fds = FdTable(self._who())
        self._release_vfork_parent()

    # -- file descriptors (cowbench/files.py) -------------------------------
    def open(self, file: File, mode: str = "r", *, cloexec: bool = False) -> int:
        """open(2) `file` with a mode as Python's open() spells it ("r", "r+", "w",
        "w+", "a", "a+"; "w" truncates): a new open file description with its own
        offset, at the lowest free descriptor, which is returned."""
        self._act("open")
        if not isinstance(file, File) or file.scenario is not self.scenario:
            raise ScenarioError(f"open: unknown file {safe_repr(file)}; make one with Scenario.file()")
        check_choice("open", "mode", mode, tuple(MODES))
        if not isinstance(cloexec, (bool, np.bool_)):
            raise ScenarioError(f"The 'cloexec' parameter of open must be a bool; got {safe_repr(cloexec)}")
        sc = self.scenario
        ofd = OpenFile(sc.n_open_files, file, mode)
        sc.n_open_files += 1
        return self._fds.install("open", ofd, bool(cloexec))

    def read_fd(self, fd: int, count) -> int:
        """read(2) `count` bytes (a size: 4096, "4KiB") from fd: the bytes read, short at
        end of file. The offset moves in every process sharing the description."""
        self._act("read_fd")
        return files.read("read_fd", self._fds.get("read_fd", fd), fd, count)

    def write_fd(self, fd: int, count) -> int:
        """write(2) `count` bytes to fd (at the end of the file if opened for append)."""
        self._act("write_fd")
        return files.write("write_fd", self._fds.get("write_fd", fd), fd, count)

    def lseek(self, fd: int, offset: int, whence: str = "set") -> int:
        """lseek(2): move fd's offset ("set", "cur" or "end"); returns the new offset."""
        self._act("lseek")
        return files.lseek("lseek", self._fds.get("lseek", fd), offset, whence)

    def dup(self, fd: int) -> int:
        """dup(2): a second descriptor (the lowest free) for fd's description; not O_CLOEXEC."""
        self._act("dup")
        return self._fds.install("dup", self._fds.get("dup", fd), False)

    def close(self, fd: int) -> None:
        """close(2): drop fd; the description lives on while another descriptor holds it."""
        self._act("close")
        self._fds.close("close", fd)

    @property
    def open_fds(self) -> int:
        """Descriptors open now (at build time), or at exit for an exited process."""
        return len(self._fds) if self.exit_files is None else len(self.exit_files)

    # -- helpers -----------------------------------------------------------
    def _release_vfork_parent(self) -> None:
        if self._vfork_parent is not None:
            self._vfork_parent._state = "running"
            self._vfork_parent = None

    def _act(self, op: str) -> None:
        if self.scenario._phase is not None and op not in ("read", "write"):
            raise ScenarioError(f"{op}: only read and write can run inside Scenario.concurrently()")
        if self._state == "exited":
            raise ScenarioError(f"{op}: process {safe_repr(self.name)} (pid {self.pid}) has exited")
        if self._state == "suspended":
            raise ScenarioError(
                f"{op}: process {safe_repr(self.name)} (pid {self.pid}) is suspended by vfork until its child execs or exits"
            )

    def _region(self, op: str, region) -> Region:
        if not isinstance(region, Region) or region.scenario is not self.scenario:
            raise ScenarioError(f"{op}: unknown region {safe_repr(region)}")
        return region

    def _mapped_region(self, op: str, region) -> Region:
        self._act(op)
        region = self._region(op, region)
        if region.index not in self._mm.mapped:
            raise ScenarioError(
                f"{op}: region {safe_repr(region.name)} is not mapped in process {safe_repr(self.name)} (pid {self.pid})"
            )
        return region

    def _touch(self, code: int, op: str, region, pages, value) -> None:
        # Touching a region this address space does not map is legal input: the
        # kernel answers it with SIGSEGV at run time, as for a dontfork region.
        self._act(op)
        region = self._region(op, region)
        pageset = _page_set(op, pages, region.npages)
        if value is None and code == WRITE:
            value = len(self.scenario.ops) + 1
        self._record(code, region, pages=pageset, arg=value)

    def _record(self, code: int, region: Region | None = None, pages=None, arg=None, mm: int | None = None) -> None:
        sc = self.scenario
        op = Op(code, self.pid, -1 if region is None else region.index, pages, arg,
                self._mm.index if mm is None else mm)
        (sc.ops if sc._phase is None else sc._phase).append(op)     # _act allowed only touches in a phase


def _page_set(op: str, pages, npages: int):
    """Pages as a Pattern (ranges, slices, patterns) or a validated int64 array."""
    if pages is None:
        return Pattern(PAT_SEQUENTIAL, npages, 0, 0, 1)
    if isinstance(pages, Pattern):
        if pages.kind == PAT_SEQUENTIAL:
            if pages.a >= npages:
                raise ScenarioError(f"{op}: sequential start {pages.a} is outside the region's {npages} pages")
            count = npages if pages.count < 0 else pages.count
            return Pattern(PAT_SEQUENTIAL, count, 0, pages.a, pages.b)
        return pages
    if isinstance(pages, slice):
        try:
            pages = range(*pages.indices(npages))
        except (TypeError, ValueError) as e:          # a zero step, a non-integer bound
            raise ScenarioError(f"{op}: bad slice of pages {safe_repr(pages)}: {e}") from None
    if isinstance(pages, range):
        if not pages:
            return Pattern(PAT_SEQUENTIAL, 0, 0, 0, 1)
        lo, hi = min(pages[0], pages[-1]), max(pages[0], pages[-1])
        if lo < 0 or hi >= npages:                    # before len(): a range may be longer than sys.maxsize
            raise ScenarioError(f"{op}: pages {safe_repr(pages)} out of range for a region of {npages} pages")
        if pages.step > 0:
            return Pattern(PAT_SEQUENTIAL, len(pages), 0, pages.start, pages.step)
        pages = np.arange(pages.start, pages.stop, pages.step, dtype=np.int64)
    if isinstance(pages, (numbers.Integral, np.integer)) and not isinstance(pages, (bool, np.bool_)):
        if not 0 <= int(pages) < npages:
            raise ScenarioError(f"{op}: page {int(pages)} out of range for a region of {npages} pages")
        pages = [int(pages)]
    try:
        arr = np.asarray(pages)
    except Exception:                                 # ragged lists and other things that are no arrays
        arr = None
    if arr is None or arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise ScenarioError(
            f"{op}: pages must be None, an int, a range, a slice, a 1-D integer array or a pattern; "
            f"got {safe_repr(pages)}"
        )
    if arr.size and (arr.min() < 0 or arr.max() >= npages):   # in the array's own dtype: uint64 stays unsigned
        bad = arr[(arr < 0) | (arr >= npages)][0]
        raise ScenarioError(f"{op}: page {int(bad)} out of range for a region of {npages} pages")
    return arr.astype(np.int64, copy=True)


def _span(nbytes: int) -> int:
    """Address space a region takes: the simulator starts every region on a 2 MiB boundary."""
    return -(-nbytes // (1 << 21)) << 21


class Phase(NamedTuple):
    """The reads and writes of one Scenario.concurrently() block, recorded as one
    op (code PHASE, its `pages`) and run piece by piece.

    Each op is cut into pieces of `grain` touches (an op with none is one empty
    piece), and piece j of an op cut into n runs at key (j + u) / n, u a uniform
    draw in [0, 1): the draws of default_rng(seed), in the order of the ops and
    then of their pieces. Pieces run in key order, ties in that same order. An
    op's keys never decrease, so the order is a k-way merge of the ops, and
    `order` makes it a key range at a time: a phase of 10**9 touches never
    becomes a list of its pieces."""

    ops: tuple          # the Ops recorded in the block, in order
    grain: int
    seed: int
    samples: int        # pieces after which the run totals are kept (Result.phase_timeline)

    def touches(self) -> np.ndarray:
        """Touches of each op."""
        return np.array([op.pages.count if isinstance(op.pages, Pattern) else len(op.pages) for op in self.ops],
                        dtype=np.int64)

    def npieces(self) -> np.ndarray:
        """Pieces of each op."""
        return np.maximum(-(-self.touches() // self.grain), 1)

    def sampled(self) -> np.ndarray:
        """The pieces (in run order) after which the run totals are sampled: `samples` of
        them, evenly spaced and the last one included."""
        total = int(self.npieces().sum())
        return np.unique(np.linspace(0, total - 1, min(self.samples, total)).round().astype(np.int64))

    def order(self, chunk: int = 1 << 16):
        """Yield (op, piece) index arrays, about `chunk` pieces at a time, in run order."""
        n = self.npieces()
        total = int(n.sum())
        gens = []
        for skip in np.r_[0, np.cumsum(n)[:-1]].tolist():
            bits = np.random.PCG64(self.seed)
            bits.advance(skip)                      # this op's first draw, without drawing the ones before
            gens.append(np.random.Generator(bits))
        keys = [np.zeros(0)] * len(n)               # drawn, not yet run: pieces first[i] .. first[i] + len - 1
        first = np.zeros(len(n), dtype=np.int64)
        width, lo, done = chunk / total, 0.0, 0
        while done < total:
            hi = lo + width if lo + width < 1.0 else np.inf
            ops, pieces, ks = [], [], []
            for i, ni in enumerate(n.tolist()):
                drawn = int(first[i]) + len(keys[i])
                want = ni if hi == np.inf else min(ni, int(np.ceil(hi * ni)) + 2)   # every key < hi is in here
                if want > drawn:
                    j = np.arange(drawn, want, dtype=np.int64)
                    keys[i] = np.concatenate([keys[i], (j + gens[i].random(want - drawn)) / ni])
                take = int(np.searchsorted(keys[i], hi, side="left"))
                ops.append(np.full(take, i, dtype=np.int64))
                pieces.append(np.arange(first[i], first[i] + take, dtype=np.int64))
                ks.append(keys[i][:take])
                keys[i], first[i] = keys[i][take:], first[i] + take
            ks = np.concatenate(ks)
            run = np.argsort(ks, kind="stable")     # stable: ties keep op order, as one argsort of all keys would
            done += len(ks)
            lo = hi
            if len(ks):
                yield np.concatenate(ops)[run], np.concatenate(pieces)[run]

    def pieces(self, chunk: int = 1 << 16):
        """Yield the Op of every piece, in run order (what run_real steps through)."""
        n = self.touches()
        for ops, pieces in self.order(chunk):
            for i, j in zip(ops.tolist(), pieces.tolist()):
                op = self.ops[i]
                lo, hi = j * self.grain, min((j + 1) * self.grain, int(n[i]))
                yield op._replace(pages=op.pages.piece(lo, hi) if isinstance(op.pages, Pattern) else op.pages[lo:hi])


@dataclass(frozen=True, eq=False)
class Program:
    """An executable: what execve maps. Sizes in bytes or as "1MiB"; `libs` are
    Scenario.file()s mapped read-only and executable beside it (shared
    libraries). Every process running the program maps its text and data from
    one file, so their text pages are one set of page-cache frames.

    >>> libc = sc.file("libc.so.6", "2MiB")
    >>> bash = cb.Program("bash", text="1MiB", data="64KiB", bss="32KiB", heap="1MiB", libs=[libc])
    >>> sh = sc.spawn("sh", program=bash); kid = sh.fork(); kid.exec(bash)
    """

    name: str
    text: Any = "1MiB"
    data: Any = 0
    bss: Any = 0
    heap: Any = 0
    stack: Any = "132KiB"
    libs: Any = ()
    cached: bool = True

    def __post_init__(self):
        if not isinstance(self.name, str):
            raise ScenarioError(f"The 'name' parameter of Program must be a str; got {safe_repr(self.name)}")
        for seg in ("text", "data", "bss", "heap", "stack"):
            v = getattr(self, seg)
            n = 0 if isinstance(v, int) and not isinstance(v, bool) and v == 0 else parse_size("Program", seg, v)
            object.__setattr__(self, seg, n)
        if self.text == 0:
            raise ScenarioError(f"Program {safe_repr(self.name)}: text must not be empty")
        if isinstance(self.libs, (str, bytes, File)) or not isinstance(self.libs, (list, tuple)) \
                or not all(isinstance(lib, File) for lib in self.libs):
            raise ScenarioError(f"The 'libs' parameter of Program must be a list of Scenario.file()s; got {safe_repr(self.libs)}")
        object.__setattr__(self, "libs", tuple(self.libs))
        check_choice("Program", "cached", self.cached, (True, False))


class Image(NamedTuple):
    """The regions a Program's image maps in a process (a segment of size 0 is None)."""

    program: Program
    text: Region
    data: Region | None
    bss: Region | None
    heap: Region | None
    stack: Region | None
    libs: tuple


class Scenario:
    """A machine and the process tree that runs on it.

    >>> sc = Scenario(phys_mem="1GiB")
    >>> root = sc.spawn("root")
    >>> heap = root.mmap("heap", "64MiB")
    >>> root.write(heap)
    >>> kid = root.fork("kid")
    """

    def __init__(self, phys_mem="1GiB", page_size=4096):
        self.page_size = parse_size("Scenario", "page_size", page_size)
        lo, hi = PAGE_SIZES
        if self.page_size & (self.page_size - 1) or not lo <= self.page_size <= hi:
            raise ScenarioError(f"The 'page_size' parameter of Scenario must be a power of two from {lo} to {hi} "
                                f"bytes; got {safe_repr(page_size)}")
        self.phys_mem = parse_size("Scenario", "phys_mem", phys_mem)
        if not 2 * self.page_size <= self.phys_mem <= MAX_PHYS:
            raise ScenarioError(f"The 'phys_mem' parameter of Scenario must hold at least two pages and at most "
                                f"4 PiB (2**52 bytes, x86-64's physical address space); got {safe_repr(phys_mem)}")
        self.processes: list[Process] = []
        self.regions: list[Region] = []
        self.ops: list[Op] = []
        self.n_mm = 0
        self.files: list[File] = []
        self.n_open_files = 0
        self._images: dict[int, File] = {}     # id(Program) -> its executable's File
        self._phase: list[Op] | None = None

    @property
    def frames(self) -> int:
        """Physical frames, the zero page included."""
        return self.phys_mem // self.page_size

    def spawn(self, name: str | None = None, program: "Program | None" = None) -> Process:
        """A new process (no parent in the scenario): an empty address space,
        or with a Program its image mapped (`p.image`), as after execve."""
        if program is not None and not isinstance(program, Program):
            raise ScenarioError(f"The 'program' parameter of spawn must be a Program or None; got {safe_repr(program)}")
        if self._phase is not None:
            raise ScenarioError("spawn: only read and write can run inside Scenario.concurrently()")
        mm = self._new_mm()
        p = self._new_process(name, None, mm)
        self.ops.append(Op(SPAWN, p.pid, arg=p.pid, mm=mm.index))
        if program is not None:
            p.image = p._map_image(program)
        return p

    def _image_file(self, program: "Program") -> File:
        """The program's executable in this scenario: its text, then its data (one
        file, made at the first spawn or exec of the program)."""
        for lib in program.libs:
            if lib.scenario is not self:
                raise ScenarioError(f"Program {safe_repr(program.name)}: library {safe_repr(lib.name)} is a File of "
                                    "another scenario")
        exe = self._images.get(id(program))
        if exe is None:
            ps = self.page_size
            exe = self.file(program.name, -(-program.text // ps) * ps + program.data, cached=program.cached)
            self._images[id(program)] = exe
        return exe

    @contextlib.contextmanager
    def concurrently(self, grain: int = 1024, seed: int = 0, samples: int = 100):
        """Reads and writes recorded inside this block run at the same time.

        Each op is cut into pieces of `grain` touches, and the pieces of all
        ops are interleaved as if every op ran at a steady rate from the start
        of the phase to its end (a piece's place is its position in its op,
        jittered by a random draw from `seed`): a 10**6-touch writer and a
        10**4-touch reader finish together. Same seed, same order. The block
        is one op (one timeline row); `samples` evenly spaced pieces, the last
        included, keep the run totals after them (Result.phase_timeline).

        >>> with sc.concurrently(grain=256, seed=1):   # Redis BGSAVE
        ...     parent.write(heap, pages=zipf(10**6, s=1.2))
        ...     child.read(heap)
        """
        for name, v, low in (("grain", grain, 1), ("seed", seed, 0), ("samples", samples, 0)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                kind = "positive" if low else "non-negative"
                raise ScenarioError(f"The {name!r} parameter of concurrently must be a {kind} integer; got {safe_repr(v)}")
        if self._phase is not None:
            raise ScenarioError("concurrently: phases do not nest")
        self._phase = []
        try:
            yield self
            ops = self._phase
        finally:
            self._phase = None
        if ops:
            self.ops.append(Op(PHASE, -1, pages=Phase(tuple(ops), int(grain), int(seed), int(samples))))

    def flat_ops(self):
        """Yield sc.ops with every concurrently() block replaced by its pieces, in the order they run."""
        for op in self.ops:
            if op.code == PHASE:
                yield from op.pages.pieces()
            else:
                yield op

    def file(self, name: str, size=0, *, cached: bool = True, folio="4KiB", readahead="128KiB") -> File:
        """A file (an inode) that processes can open() and mmap(file=...); `size`
        in bytes or as "4MiB".

        cached: its pages are in the page cache before the run (and in physical
            memory), as after it was written or read; False: on disk only, so the
            first fault on a page is a major fault that reads it.
        folio: the size of the page-cache folios holding its cached pages. On
            Linux 6.18 with ext4 that is the size the file was written in (4 KiB
            writes give 4 KiB folios, 2 MiB writes 2 MiB ones) and pages read by
            a fault's read-around are 4 KiB. A read fault maps a 2 MiB folio
            whole where a mapping covers it aligned (one fault per 2 MiB); below
            2 MiB, fault-around maps 64 KiB whatever the folio size.
        readahead: the read-around window of a major fault (the block device's
            read_ahead_kb; 128 KiB is the kernel's default).
        """
        if not isinstance(name, str):
            raise ScenarioError(f"The 'name' parameter of file must be a str; got {safe_repr(name)}")
        nbytes = 0 if isinstance(size, int) and not isinstance(size, bool) and size == 0 \
            else parse_size("file", "size", size)
        check_choice("file", "cached", cached, (True, False))
        folio_bytes = parse_size("file", "folio", folio)
        if folio_bytes & (folio_bytes - 1) or not self.page_size <= folio_bytes <= 2 << 20:
            raise ScenarioError(f"The 'folio' parameter of file must be a power of two from the page size to 2 MiB; "
                                f"got {safe_repr(folio)}")
        ra = 0 if isinstance(readahead, int) and not isinstance(readahead, bool) and readahead == 0 \
            else parse_size("file", "readahead", readahead)
        if ra % self.page_size or ra > 1 << 30:
            raise ScenarioError(f"The 'readahead' parameter of file must be a multiple of the page size up to 1 GiB; "
                                f"got {safe_repr(readahead)}")
        f = File(self, len(self.files), name, nbytes, bool(cached), folio_bytes, ra)
        self.files.append(f)
        return f

    def process(self, name: str) -> Process:
        """The process called `name` (the first, if several share it)."""
        for p in self.processes:
            if p.name == name:
                return p
        raise ScenarioError(f"process: no process named {safe_repr(name)}")

    def _new_mm(self, mapped=()) -> _MM:
        mm = _MM(self.n_mm, mapped)
        mm.span = sum(_span(self.regions[r].size) for r in mm.mapped)
        self.n_mm += 1
        return mm

    def _new_process(self, name, parent, mm) -> Process:
        pid = len(self.processes) + 1
        if name is None:
            name = f"p{pid}"
        elif not isinstance(name, str):
            raise ScenarioError(f"The 'name' parameter of spawn/fork must be a str; got {safe_repr(name)}")
        p = Process(self, pid, name, parent, mm)
        self.processes.append(p)
        return p

    def __repr__(self) -> str:
        return (f"<Scenario {len(self.processes)} processes, {len(self.regions)} regions, "
                f"{len(self.ops)} ops, {self.phys_mem} bytes>")
