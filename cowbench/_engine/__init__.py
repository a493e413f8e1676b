"""The jitted engine (private): frames, PTE tables, address spaces and the fault path.

Laid out like the Linux files it mirrors, so that a reader who knows the
kernel opens the file of the same name; each module's docstring says what it
owns. Bottom to top (each imports only modules above it in this list):

    abi          op codes, pattern kinds, bit layouts, counter and state indices
    pte          a PTE's bits behind named helpers
    machine      the state, declared once (FIELDS); its allocation, growth and room check
    page_alloc   physical memory, frame ids, mapcounts                 mm/page_alloc.c
    pgtable      PTE tables, overlays, odf share groups                mm/pgtable-generic.c
    mmap         address spaces, unmapping, overcommit                 mm/mmap.c, mm/util.c
    task_mmu     smaps: rss, pss, uss; value tags                      fs/proc/task_mmu.c
    gup          pin records                                           mm/gup.c
    exit         a process ends                                        kernel/exit.c
    oom_kill     the OOM killer                                        mm/oom_kill.c
    huge_memory  transparent huge pages                                mm/huge_memory.c
    memory       the fault path                                        mm/memory.c
    fork         dup_mmap, copy_page_range                             kernel/fork.c
    mprotect     change_protection                                     mm/mprotect.c
    madvise      madvise                                               mm/madvise.c
    draws        the page-set generators (uniform, zipf, ...)          (cowbench's own)
    touch        the batched touch path: an op's pages, each once      (cowbench's own)
    loop         the op loop                                           (cowbench's own)
    check        the invariant checker (plain NumPy)

Kernels take a MachineRef and integers (a few hot helpers take arrays), trust
their arguments completely (simulator.py and the builder validated them),
and check nothing. Every kernel is compiled with cache=True. The entry
points a second thread runs beside (loop.run, touch.premark,
task_mmu.freeze_some) release the GIL; while they run, the two threads
write disjoint arrays, or the same values to the same bytes (premark).

Hot loops and reference counts. Every read of an array field of m, and every
array handed to a helper that branches (inlined or not), can cost an atomic
increment and decrement of the array's reference count, and a loop that
contains a rarely made call given m can pay around it on each pass: 15-30 ns
where the work itself is 2-3 ns (an overlay lookup a touch in touch_each, a
table_weights call in mm_smaps's loop over tables; measured, 2026-12-04). So a
loop run per page or per table holds the arrays it needs in locals, takes no
array argument into a branching helper (touch.touch_run writes its overlay
lookup out; page_alloc.frame_init and mapcount_of are branch-free), and leaves
rare calls given m to a loop of their own (task_mmu.tables_smaps), or ends and
is resumed when it must re-read a field (touch.touch_run after a fault that
grew the overlay pool). Measure before and after: not every such call costs.

The compilation cache. Numba keys a cached kernel by its own file only, but a
kernel here compiles in the code of every engine file it calls: after an
edit to memory.py, run()'s cached machine code would still hold the old fault
path. So at import the sources of this package are hashed, and if the hash
differs from the one recorded next to the cache, every cached kernel of the
package is dropped (the next call compiles afresh) and the new hash recorded.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

from numba.core.dispatcher import Dispatcher

from . import (abi, check, draws, exit, fork, gup, huge_memory, loop, machine, madvise, memory, mmap,  # noqa: F401
               mprotect, oom_kill, page_alloc, pgtable, pte, task_mmu, touch)

_MODULES = (abi, pte, machine, page_alloc, pgtable, mmap, task_mmu, gup, exit, oom_kill, huge_memory, memory,
            fork, mprotect, madvise, draws, touch, loop, check)
STAMP = "cowbench-engine-sources.sha256"


def sources_digest() -> str:
    """sha256 of this package's sources, file by file in name order."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def cache_dirs() -> list[str]:
    """The directories Numba caches this package's kernels in (one, normally)."""
    dirs = set()
    for module in _MODULES:
        for obj in vars(module).values():
            if isinstance(obj, Dispatcher) and obj.py_func.__module__ == module.__name__:
                path = getattr(getattr(obj, "_cache", None), "_cache_path", None)
                if path:
                    dirs.add(path)
    return sorted(dirs)


def drop_stale_cache(cache_dir: str, digest: str) -> int:
    """If cache_dir's recorded sources hash is not `digest`, delete its cached
    kernels (index .nbi and data .nbc files) and record `digest`; returns how
    many files went."""
    stamp = os.path.join(cache_dir, STAMP)
    try:
        with open(stamp, encoding="ascii") as f:
            if f.read().strip() == digest:
                return 0
    except FileNotFoundError:
        pass
    dropped = 0
    for name in os.listdir(cache_dir):
        if name.endswith((".nbi", ".nbc")):
            try:
                os.remove(os.path.join(cache_dir, name))
                dropped += 1
            except FileNotFoundError:          # another process dropped it first
                pass
    tmp = f"{stamp}.{os.getpid()}"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(digest + "\n")
    os.replace(tmp, stamp)
    return dropped


def keep_cache_current() -> None:
    """Drop the package's cached kernels if any engine source changed since
    they were compiled. Warns if Numba's cache cannot be found: then nothing
    here can tell whether a cached kernel is stale."""
    dirs = cache_dirs()
    if not dirs:
        warnings.warn("cowbench: cannot find Numba's cache directory for the engine's kernels "
                      "(Numba's internals changed?); cached kernels compiled from older sources may run. "
                      f"Delete {Path(__file__).parent / '__pycache__'} (or $NUMBA_CACHE_DIR) after editing "
                      "cowbench/_engine/.", RuntimeWarning, stacklevel=2)
        return
    digest = sources_digest()
    for d in dirs:
        try:
            os.makedirs(d, exist_ok=True)
            drop_stale_cache(d, digest)
        except OSError as e:
            warnings.warn(f"cowbench: cannot tidy the kernel cache in {d}: {e}; cached kernels compiled "
                          "from older sources may run", RuntimeWarning, stacklevel=2)


keep_cache_current()
