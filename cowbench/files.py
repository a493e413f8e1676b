"""Files and file descriptors, as fork and exec see them (fs/file.c, fs/open.c).

A process's descriptor table maps small integers to open file descriptions
(struct file): one description holds the file, the access mode and the
offset. fork() copies the table (dup_fd), so parent and child hold the same
descriptions: a read in one moves the other's offset, a close in one leaves
the other's open (the seed text's `fileshare2`). dup() makes a second
descriptor for the same description; open() of the same file again makes a
new description with its own offset. exec closes the O_CLOEXEC descriptors.

Like address spaces, descriptor tables are fully determined by the recorded
operations, so they are tracked here when each operation is recorded; a
bad descriptor is a ScenarioError at the call, in the kernel's errno words.
What a descriptor's reads and writes do to memory (the page cache) is not
modelled yet: they move offsets and file sizes only. Mapping a file
(Process.mmap(file=...)) is modelled by the engine: its page cache, major
faults, fault-around and copies on write.
"""
from __future__ import annotations

import numbers

from ._params import ScenarioError, check_choice, parse_size, safe_repr

__all__ = ["File", "OpenFile", "FdTable", "MODES", "NR_OPEN"]

#: open() modes, as Python's open() spells them: (readable, writable, append, truncate)
MODES = {"r": (True, False, False, False), "r+": (True, True, False, False),
         "w": (False, True, False, True), "w+": (True, True, False, True),
         "a": (False, True, True, False), "a+": (True, True, True, False)}
NR_OPEN = 1 << 20              # fs.nr_open: no descriptor table grows past it (EMFILE)
WHENCE = ("set", "cur", "end")


class File:
    """A file of the scenario (an inode): a name and a size, shared by every
    description and every mapping of it. Its page cache is one set of frames
    however many processes map it: `cached` says whether its pages are in the
    cache before the run (else a fault reads them, a major fault, with
    `readahead` bytes of read-around), `folio` the size of the page-cache
    folios holding them (2 MiB folios are mapped whole by one read fault)."""

    def __init__(self, scenario, index: int, name: str, size: int, cached: bool = True, folio: int = 4096,
                 readahead: int = 128 << 10):
        self.scenario = scenario
        self.index = index
        self.name = name
        self.size = size
        self.initial_size = size
        self.cached = cached
        self.folio = folio
        self.readahead = readahead

    def mappings(self) -> list:
        """The scenario's regions that map this file."""
        return [r for r in self.scenario.regions if r.file is self]

    def cache_pages(self) -> int:
        """Pages its page cache can hold: its size when made, or the furthest page a mapping of it maps."""
        ps = self.scenario.page_size
        return max([-(-self.initial_size // ps)] + [r.offset + r.npages for r in self.mappings()])

    def __repr__(self) -> str:
        return f"<File {safe_repr(self.name)} {self.size} bytes>"


class OpenFile:
    """An open file description (struct file): the file, how it was opened, the offset."""

    def __init__(self, index: int, file: File, mode: str):
        self.index = index
        self.file = file
        self.mode = mode
        self.readable, self.writable, self.append, truncate = MODES[mode]
        self.offset = 0
        if truncate:
            file.size = 0

    def __repr__(self) -> str:
        return f"<OpenFile {self.index} {safe_repr(self.file.name)} {safe_repr(self.mode)} offset {self.offset}>"


class FdTable:
    """One process's descriptor table (struct files_struct): fd -> (description, cloexec)."""

    def __init__(self, owner: str, entries=None):
        self.owner = owner                 # "process 'name' (pid N)", for messages
        self.entries: dict[int, tuple[OpenFile, bool]] = dict(entries or {})
        self.next_fd = 0                   # no fd below this is free (the kernel's files->next_fd)

    def copy(self, owner: str) -> "FdTable":
        """dup_fd: the same descriptions under the same numbers, flags included."""
        table = FdTable(owner, self.entries)
        table.next_fd = self.next_fd
        return table

    def __len__(self) -> int:
        return len(self.entries)

    # -- the system calls ------------------------------------------------------------
    def install(self, op: str, ofd: OpenFile, cloexec: bool) -> int:
        """fd_install at the lowest free number (POSIX: open and dup return the lowest)."""
        fd = self.next_fd
        while fd in self.entries:
            fd += 1
        if fd >= NR_OPEN:
            raise ScenarioError(f"{op}: {self.owner} has {NR_OPEN} descriptors open (EMFILE)")
        self.entries[fd] = (ofd, cloexec)
        self.next_fd = fd + 1
        return fd

    def get(self, op: str, fd) -> OpenFile:
        """The description behind fd, or EBADF naming the op and the fd."""
        if isinstance(fd, bool) or not isinstance(fd, numbers.Integral) or int(fd) not in self.entries:
            raise ScenarioError(f"{op}: bad file descriptor {safe_repr(fd)} in {self.owner} (EBADF)")
        return self.entries[int(fd)][0]

    def close(self, op: str, fd) -> None:
        self.get(op, fd)
        del self.entries[int(fd)]
        self.next_fd = min(self.next_fd, int(fd))

    def close_on_exec(self) -> None:
        """do_close_on_exec: drop the O_CLOEXEC descriptors."""
        self.entries = {fd: e for fd, e in self.entries.items() if not e[1]}
        self.next_fd = 0

    def rows(self) -> list[dict]:
        """One row per descriptor, in fd order (res.files)."""
        return [{"fd": fd, "file": ofd.file.name, "description": ofd.index, "mode": ofd.mode,
                 "offset": ofd.offset, "cloexec": cloexec}
                for fd, (ofd, cloexec) in sorted(self.entries.items())]


def read(op: str, ofd: OpenFile, fd, count) -> int:
    """read(2) of `count` bytes at the description's offset: the bytes read (short at end of file)."""
    n = _count(op, count)
    if not ofd.readable:
        raise ScenarioError(f"{op}: file descriptor {fd} is not open for reading (EBADF)")
    got = max(0, min(n, ofd.file.size - ofd.offset))
    ofd.offset += got
    return got


def write(op: str, ofd: OpenFile, fd, count) -> int:
    """write(2) of `count` bytes: at the end of file for O_APPEND, else at the offset."""
    n = _count(op, count)
    if not ofd.writable:
        raise ScenarioError(f"{op}: file descriptor {fd} is not open for writing (EBADF)")
    if ofd.append:
        ofd.offset = ofd.file.size
    ofd.offset += n
    ofd.file.size = max(ofd.file.size, ofd.offset)
    return n


def lseek(op: str, ofd: OpenFile, offset, whence: str) -> int:
    """lseek(2): the new offset; a negative one is EINVAL."""
    check_choice(op, "whence", whence, WHENCE)
    if isinstance(offset, bool) or not isinstance(offset, numbers.Integral):
        raise ScenarioError(f"The 'offset' parameter of {op} must be an int; got {safe_repr(offset)}")
    base = {"set": 0, "cur": ofd.offset, "end": ofd.file.size}[whence]
    new = base + int(offset)
    if new < 0:
        raise ScenarioError(f"{op}: offset {safe_repr(offset)} from {safe_repr(whence)} is before the start of the file (EINVAL)")
    ofd.offset = new
    return new


def _count(op: str, count) -> int:
    if isinstance(count, numbers.Integral) and not isinstance(count, bool) and count == 0:
        return 0
    return parse_size(op, "count", count)
