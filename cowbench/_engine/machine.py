"""The simulated machine's state, declared once, and the room its arrays have.

FIELDS below is the one list of the machine's arrays: name, dtype, shape,
initial value, meaning. From it come the `Machine` NamedTuple (the Python
side's view, for results and growth), the StructRef type the kernels take
(`MachineRef`: passing it costs one pointer, where a tuple of arrays would
cost a reference-count update per array and call), the constructor that fills
one from the other (matched by name), the allocation (`new_machine`) and the
growth (`grow`).

A field's shape names its dimensions. The first one counts the field's rows:
a *growth group* (frame, folio, table, block, group, row, overlay) for the
arrays the kernels hand out ids from, which grow between ops when an op might
run out of them; otherwise a size fixed by the scenario (mm, proc, reg, ...).
How much room an op needs is loop.op_needs; whether there is that much is
`shortfall`, the one room check, which both the op loop and `grow` call.
"""
from __future__ import annotations

import ctypes
import mmap
from typing import NamedTuple

import numba
import numpy as np
from numba import njit, types
from numba.experimental import structref

from .abi import (BLOCKS_PER_TABLE, F_FLAGS, F_FOLIO, F_HOME, F_WIDTH, FF_CACHE, G_BLK_HWM, G_BLK_TOP,
                  G_COMMIT_LIMIT, G_FOLIO_HWM, G_FOLIO_TOP, G_FRAME_HWM, G_FRAME_MAX, G_FRAMES_PEAK, G_FRAMES_USED,
                  G_FREE_TOP, G_GROUP_HWM, G_GROUP_TOP, G_OOM, G_OV_FREE, G_OV_HWM, G_OVERCOMMIT, G_POLICY, GROUP_NONE,
                  G_ROW_HWM, G_ROW_TOP, G_TAB_HWM, G_TAB_TOP, G_THP_COW, G_ZERO_PAGE, MAX_PTE_VALUE, MAX_TABLES,
                  N_CTR, N_G, N_TOTALS, OV_CLASSES, OV_NONE, PMD_NONE, POLICY_ODF, PTES_PER_BLOCK, PTRS_PER_TABLE,
                  TABLE_SHIFT)

__all__ = ["FIELDS", "GROUPS", "Machine", "MachineRef", "machine_ref", "new_machine", "grow", "shortfall",
           "overlay_pool", "region_span", "count_event", "count_events"]


class Field(NamedTuple):
    name: str
    dtype: type
    shape: tuple          # dimension names (see _dims); the first counts the rows
    fill: object          # initial value; None: uninitialised (the kernels set a row when they hand its id out)
    doc: str
    odf_only: bool = False   # under other policies a 1 x 1 placeholder
    sparse: bool = False     # few rows ever written: kept out of transparent huge pages (see _array)


FIELDS = (
    Field("g", np.int64, ("N_G",), 0, "scalars, G_*"),
    Field("totals", np.int64, ("N_TOTALS",), 0, "run totals of the event counters"),
    Field("frame", np.int32, ("frame", "F_WIDTH"), None, "one 32-byte record per frame id, columns F_*"),
    Field("frame_free", np.int32, ("frame",), None, "stack of freed frame ids"),
    Field("folio_frames", np.int32, ("folio", "PTRS"), 0, "a huge folio's subpages"),
    Field("folio_live", np.int32, ("folio",), 0, "subpages not yet freed"),
    Field("folio_pins", np.int32, ("folio",), 0, "pins on any subpage"),
    Field("folio_free", np.int32, ("folio",), 0, "stack of freed folio ids"),
    Field("pt", np.int32, ("block", "BLOCK"), 0, "PTE blocks: a table's entries, 32 slots a block (block 0: "
                                                 "all zero, never written)"),
    Field("blk_free", np.int32, ("block",), 0, "stack of freed blocks"),
    Field("tab_blk", np.int32, ("table", "BLOCKS"), 0, "the block of each 32 slots of the table, 0: none mapped"),
    Field("tab_count", np.int32, ("table",), 0, "present PTEs per table"),
    Field("tab_free", np.int32, ("table",), 0, "stack of freed tables"),
    Field("tab_huge", np.uint8, ("table",), 0, "1: a PMD-mapped huge page, its 512 subpages in the entries"),
    Field("tab_ref", np.int32, ("table",), 0, "directory entries pointing at the table (its users)"),
    Field("tab_ovr", np.int32, ("table", "PTRS"), 0, "users of the table that override the slot", sparse=True),
    Field("tab_maxovr", np.int32, ("table",), 0, "an upper bound on the table's tab_ovr"),
    Field("tab_wp", np.uint8, ("table",), 0, "1: ready to share as it is: no entry writable, exclusive or inline, "
                                            "every frame homed at its slot and unpinned (fork.py)"),
    Field("tab_epoch", np.int64, ("table",), -1, "G_EPOCH when tab_rss/uss/pss were computed"),
    Field("tab_ver", np.int64, ("table",), 0, "changes to the table's entries, overrides, or the mapcounts of "
                                             "frames homed in it: what its cached smaps depend on but tab_ref"),
    Field("tab_seen", np.int64, ("table",), -1, "tab_ver when its smaps were last summed in full"),
    Field("tab_uniform", np.uint8, ("table",), 0, "1: as last summed, every page it maps has mapcount tab_ref "
                                                 "(pss = rss / tab_ref whoever joins or leaves)"),
    Field("tab_rss", np.int32, ("table",), 0, "smaps of the table's own entries, cached"),
    Field("tab_uss", np.int32, ("table",), 0, "(cached with tab_rss)"),
    Field("tab_pss", np.float64, ("table",), 0, "(cached with tab_rss)"),
    Field("tab_w", np.float64, ("table", "PTRS"), 0, "each entry's pss share, -1 where no page, cached too "
                                                     "(written for the tables someone overrides; row 0: all -1)",
          sparse=True),
    Field("group_ref", np.int32, ("group",), 0, "address spaces sharing one table of the simulated odf kernel"),
    Field("group_free", np.int32, ("group",), 0, "stack of freed groups"),
    Field("pmd", np.int32, ("row", "n_pmd"), PMD_NONE, "table of each 2 MiB range"),
    Field("ovl", np.int32, ("row", "n_pmd"), 0, "offset of the range's overlay in ov_key/ov_val"),
    Field("ovc", np.int8, ("row", "n_pmd"), OV_NONE, "its size class"),
    Field("ovn", np.int16, ("row", "n_pmd"), 0, "its entries"),
    Field("odfg", np.int32, ("row", "n_pmd"), GROUP_NONE, "simulated-kernel share group", odf_only=True),
    Field("row_free", np.int32, ("row",), 0, "stack of freed directory rows"),
    Field("ov_key", np.uint16, ("overlay",), None, "overlay slots (sparse classes)"),
    Field("ov_val", np.int32, ("overlay",), None, "overlay PTEs; 0 is an empty dense slot (or a free-list link)"),
    Field("mm_row", np.int32, ("mm",), -1, "directory row of a live mm, -1 none"),
    Field("mm_users", np.int32, ("mm",), 0, "processes using the mm"),
    Field("mm_tables", np.int64, ("mm",), 0, "PTE tables"),
    Field("mm_rss", np.int64, ("mm", "reg"), 0, "present PTEs of the mm in the region mapping a page other "
                                                "than the zero page"),
    Field("vma", np.uint8, ("mm", "reg"), 0, "VM_* flags"),
    Field("reg_pmd0", np.int64, ("reg",), "program", "first 2 MiB range of the region"),
    Field("reg_npages", np.int64, ("reg",), "program", "pages of the region"),
    Field("reg_shared", np.uint8, ("reg",), "program", "MAP_SHARED"),
    Field("reg_shm0", np.int64, ("reg",), "program", "page-cache slot of the region's first page (shared or "
                                                      "file-backed regions)"),
    Field("reg_file", np.uint8, ("reg",), "program", "1: file-backed (a mapping of a Scenario.file)"),
    Field("reg_around", np.int64, ("reg",), "program", "pages a read fault maps from the page cache: "
                                                       "fault-around's 16, or 512 for 2 MiB folios"),
    Field("reg_folio", np.int64, ("reg",), "program", "pages of the file's page-cache folios (a write "
          "dirties its whole folio)"),
    Field("reg_ra", np.int64, ("reg",), "program", "pages a major fault reads into the page cache (read-around)"),
    Field("reg_flo", np.int64, ("reg",), "program", "the file's page-cache slots are reg_flo .. reg_fhi - 1"),
    Field("reg_fhi", np.int64, ("reg",), "program", "(read-around stays inside the file)"),
    Field("reg_thp", np.uint8, ("reg",), "program", "1: a fault may map a huge page here (thp=True or "
                                                    "madvise hugepage, in any address space)"),
    Field("reg_maps", np.int32, ("reg",), 0, "address spaces mapping the region"),
    Field("shm_frame", np.int32, ("shm",), -1, "page cache: frame or -1 (not in the cache; for a cached file, "
                                             "simulator.py fills its pages in before the run)"),
    Field("proc_mm", np.int32, ("proc",), -1, "indexed by pid"),
    Field("proc_state", np.int8, ("proc",), 0, "P_*"),
    Field("proc_reason", np.int8, ("proc",), 0, "R_*"),
    Field("proc_vparent", np.int32, ("proc",), 0, "vfork parent to wake, 0 none"),
    Field("ctr", np.int64, ("proc", "N_CTR"), 0, "counters C_*"),
    Field("proc_pss", np.float64, ("proc",), 0, "pss as frozen with the memory counters"),
    Field("pin_pid", np.int32, ("pin",), 0, "pid holding pin record i, 0 once released"),
    Field("pin_region", np.int32, ("pin",), 0, "region of pin record i"),
    Field("pin_page", np.int64, ("pin",), 0, "page of pin record i"),
    Field("pin_frame", np.int32, ("pin",), 0, "frame of pin record i"),
    Field("seen", np.uint8, ("marks",), 0, "1: the op running touches the page (pages of the largest region, "
                                           "in whole 2 MiB ranges); all zero between ops (touch.py)"),
    Field("seen_ranges", np.uint8, ("marked_ranges",), 0, "1: the op touches a page in the 2 MiB range"),
)

Machine = NamedTuple("Machine", [(f.name, np.ndarray) for f in FIELDS])
Machine.__doc__ = "The simulated machine's arrays, one field per entry of FIELDS."


# --- the kernels' handle -------------------------------------------------------------------------

@structref.register
class MachineRefType(types.StructRef):
    pass


class MachineRef(structref.StructRefProxy):
    """Opaque handle the kernels take; read results from the Machine it was made from."""


structref.define_boxing(MachineRefType, MachineRef)
MACHINE_REF = MachineRefType([(f.name, types.Array(numba.from_dtype(np.dtype(f.dtype)), len(f.shape), "C"))
                              for f in FIELDS])


def _ref_constructor():
    """A cached kernel that builds a MachineRef from the fields, by name. Its
    source is generated from FIELDS (as dataclasses generate __init__) and
    compiled as if it were in this file, so Numba caches it like the others."""
    names = [f.name for f in FIELDS]
    src = (f"def new_machine_ref({', '.join(names)}):\n"
           "    m = structref.new(MACHINE_REF)\n"
           + "".join(f"    m.{n} = {n}\n" for n in names)
           + "    return m\n")
    ns = {"structref": structref, "MACHINE_REF": MACHINE_REF, "__name__": __name__}
    exec(compile(src, __file__, "exec"), ns)
    return njit(cache=True)(ns["new_machine_ref"])


_new_machine_ref = _ref_constructor()


def machine_ref(m: Machine) -> MachineRef:
    """The kernels' handle on machine m (shares its arrays)."""
    return _new_machine_ref(**m._asdict())


@njit(cache=True)
def overlay_pool(m):
    """The overlay arrays as they are now (kernels may have grown them: pgtable.overlay_grow)."""
    return m.ov_key, m.ov_val


# --- small accessors every subsystem uses --------------------------------------------------------

@njit(cache=True, inline="always")
def region_span(m, r):
    """The 2 MiB ranges region r spans: range(*region_span(m, r))."""
    first = m.reg_pmd0[r]
    return first, first + ((m.reg_npages[r] + PTRS_PER_TABLE - 1) >> TABLE_SHIFT)


@njit(cache=True, inline="always")
def count_events(ctr, totals, pid, c, n):
    """n events of counter c for pid, and in the run totals (on the arrays
    themselves, for loops that hold them in locals)."""
    ctr[pid, c] += n
    totals[c] += n


@njit(cache=True, inline="always")
def count_event(m, pid, c):
    count_events(m.ctr, m.totals, pid, c, 1)


# --- growth groups and the room check ------------------------------------------------------------

class Group(NamedTuple):
    name: str
    hwm: int              # Machine.g index of the high-water mark (ids ever handed out)
    top: int              # Machine.g index of the free-stack top, -1: freed room is not counted
    need: int             # which of loop.op_needs's (frames, tables, rows, overlay slots) it must hold
    in_place: bool        # grown by realloc (mremap: never held twice) instead of a copy
    ceiling: int          # at most this many rows, 0: no limit
    what: str             # for the error past the ceiling
    per: int = 1          # rows per unit of that need


_MAX_FRAMES_IN_USE = MAX_PTE_VALUE - 1     # frame + 1 must fit in the 28 bits a PTE has for it
GROUPS = (
    Group("frame", G_FRAME_HWM, G_FREE_TOP, 0, False, _MAX_FRAMES_IN_USE + 1, f"{_MAX_FRAMES_IN_USE} frames"),
    Group("table", G_TAB_HWM, G_TAB_TOP, 1, False, MAX_TABLES, f"{MAX_TABLES} PTE tables"),
    # an op writes entries in at most the tables it may take or touch, so in at most that many blocks a table
    Group("block", G_BLK_HWM, G_BLK_TOP, 1, False, MAX_TABLES * BLOCKS_PER_TABLE, f"{MAX_TABLES} PTE tables",
          BLOCKS_PER_TABLE),
    Group("folio", G_FOLIO_HWM, G_FOLIO_TOP, 1, False, 0, ""),
    Group("group", G_GROUP_HWM, G_GROUP_TOP, 1, False, 0, ""),
    Group("row", G_ROW_HWM, G_ROW_TOP, 2, False, 0, ""),
    Group("overlay", G_OV_HWM, -1, 3, True, 0, ""),
)
GROUP_FRAME, GROUP_TABLE, GROUP_BLOCK, GROUP_FOLIO, GROUP_GROUP, GROUP_ROW, GROUP_OVERLAY = range(len(GROUPS))
NEED_OF = tuple(grp.need for grp in GROUPS)
PER_NEED = tuple(grp.per for grp in GROUPS)


@njit(cache=True)
def shortfall(m, grp, need):
    """Rows group grp lacks for `need` more ids (0: room enough). Frames
    lack nothing once their records cover physical memory: a fault that
    finds it full fails first."""
    g = m.g
    if grp == GROUP_FRAME:
        cap = m.frame.shape[0]
        if cap >= g[G_FRAME_MAX]:
            return 0
        free = cap - g[G_FRAME_HWM] + g[G_FREE_TOP]
    elif grp == GROUP_TABLE:
        free = m.tab_ref.shape[0] - g[G_TAB_HWM] + g[G_TAB_TOP]
    elif grp == GROUP_BLOCK:
        free = m.pt.shape[0] - g[G_BLK_HWM] + g[G_BLK_TOP]
    elif grp == GROUP_FOLIO:
        free = m.folio_live.shape[0] - g[G_FOLIO_HWM] + g[G_FOLIO_TOP]
    elif grp == GROUP_GROUP:
        free = m.group_ref.shape[0] - g[G_GROUP_HWM] + g[G_GROUP_TOP]
    elif grp == GROUP_ROW:
        free = m.pmd.shape[0] - g[G_ROW_HWM] + g[G_ROW_TOP]
    else:
        free = m.ov_val.shape[0] - g[G_OV_HWM]
    return max(need - free, 0)


@njit(cache=True)
def has_room(m, needs):
    """Every group has room for what an op needs (loop.op_needs)."""
    for grp in range(len(NEED_OF)):
        if shortfall(m, grp, needs[NEED_OF[grp]] * PER_NEED[grp]) > 0:
            return False
    return True


# --- allocation and growth (Python) --------------------------------------------------------------

def _dims(prog, frame_max: int) -> dict:
    """Rows of each dimension, and for the groups reserved up front, the rows
    to fall back to when even their address space is refused (strict
    overcommit): the frame records, the overlay pool and the touch marks."""
    touches = int(prog.work.sum())
    n_reg = len(prog.reg_npages)
    ranges = int(-(-prog.reg_npages.max(initial=0) // PTRS_PER_TABLE))
    return {
        "N_G": N_G, "N_TOTALS": N_TOTALS, "N_CTR": N_CTR, "F_WIDTH": F_WIDTH, "PTRS": PTRS_PER_TABLE,
        "BLOCK": PTES_PER_BLOCK, "BLOCKS": BLOCKS_PER_TABLE,
        # a frame id is handed out when a page is shared, pinned or cached; about two slots a touch
        "frame": (min(frame_max, 2 * touches + (1 << 12) + len(prog.cached), max(1 << 26, len(prog.cached) + 1)),
                  min(frame_max, (1 << 12) + len(prog.cached))),
        "overlay": (min(2 * touches, 1 << 30) + (1 << 12), 1 << 12),
        "marks": (ranges * PTRS_PER_TABLE, 0), "marked_ranges": (ranges, 0),
        "folio": 64, "table": 64, "block": 256, "group": 64, "row": 4,
        "n_pmd": max(prog.n_pmd, 1), "mm": max(prog.n_mm, 1), "reg": n_reg, "proc": prog.n_proc + 1,
        "shm": prog.n_shm, "pin": prog.n_pins,
    }


def _array(f: Field, rows: int, dims: dict, odf: bool) -> np.ndarray:
    shape = (rows,) + tuple(dims[d] for d in f.shape[1:])
    if f.odf_only and not odf:
        shape = (1,) * len(f.shape)
    if f.fill is None:
        return np.empty(shape, dtype=f.dtype)         # untouched pages cost no memory
    if f.fill == 0:
        return _zeros(shape, f.dtype, f.sparse)       # calloc: nor do they here, until written
    return np.full(shape, f.fill, dtype=f.dtype)


_libc = ctypes.CDLL(None, use_errno=True)


def _zeros(shape: tuple, dtype, sparse: bool) -> np.ndarray:
    """np.zeros, which NumPy advises into transparent huge pages when large: the
    first write anywhere in 2 MiB then costs the host 2 MiB. That suits arrays
    written densely (the kernels' random reads take fewer TLB misses); a sparse
    field's array, where a row here and there is written, is advised back to
    4 KiB pages before anything is written (MADV_NOHUGEPAGE), and starts on a
    page, so that a row of a page's size written costs one page, not two."""
    if not sparse:
        return np.zeros(shape, dtype=dtype)
    ps = mmap.PAGESIZE
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    buf = np.zeros(nbytes + ps, dtype=np.uint8)
    lo = -buf.ctypes.data % ps
    if hasattr(mmap, "MADV_NOHUGEPAGE"):               # advice: a refusal changes nothing but memory
        _libc.madvise(ctypes.c_void_p(buf.ctypes.data + lo), ctypes.c_size_t(nbytes // ps * ps),
                      mmap.MADV_NOHUGEPAGE)
    return buf[lo: lo + nbytes].view(dtype).reshape(shape)


def new_machine(prog, frame_max: int, policy: int, oom: int, zero_page: bool,
                overcommit: int = 0, overcommit_ratio: int = 50, thp_cow: int = 0) -> Machine:
    """A machine for program `prog` (simulator.Compiled) with frame_max frames, nothing running."""
    dims = _dims(prog, frame_max)
    odf = policy == POLICY_ODF
    arrays: dict[str, np.ndarray] = {}
    for dim in dict.fromkeys(f.shape[0] for f in FIELDS):
        fields = [f for f in FIELDS if f.shape[0] == dim and f.fill != "program"]
        rows, fallback = dims[dim] if isinstance(dims[dim], tuple) else (dims[dim], dims[dim])
        try:
            arrays.update({f.name: _array(f, rows, dims, odf) for f in fields})
        except MemoryError:
            arrays.update({f.name: _array(f, fallback, dims, odf) for f in fields})
    arrays.update({f.name: getattr(prog, f.name) for f in FIELDS if f.fill == "program"})
    m = Machine(**{f.name: arrays[f.name] for f in FIELDS})
    g = m.g
    g[G_FRAME_MAX] = frame_max
    g[G_FRAME_HWM] = 1                          # frame 0 is the zero page
    g[G_TAB_HWM] = g[G_GROUP_HWM] = 1           # table 0 and group 0 are none (abi.PMD_NONE, GROUP_NONE)
    g[G_BLK_HWM] = 1                            # block 0 is every table's empty block
    m.tab_w[0] = -1.0                           # no page at any slot (task_mmu.overlay_weights)
    g[G_POLICY], g[G_OOM], g[G_ZERO_PAGE] = policy, oom, int(zero_page)
    g[G_OVERCOMMIT] = overcommit
    g[G_THP_COW] = thp_cow
    g[G_COMMIT_LIMIT] = frame_max * overcommit_ratio // 100     # no swap is modelled
    g[G_OV_FREE: G_OV_FREE + OV_CLASSES] = -1
    m.frame[0] = 0
    m.frame[0, F_FOLIO] = m.frame[0, F_HOME] = -1
    fill_page_cache(m, prog.cached)
    return m


def fill_page_cache(m: Machine, slots: np.ndarray) -> None:
    """The pages of cached files are in the page cache before anything runs
    (as after the file was written or read): frames 1 .. len(slots), in physical
    memory, mapped by nobody yet. simulate checks they fit."""
    n = len(slots)
    ids = np.arange(1, n + 1, dtype=np.int32)
    m.frame[1: n + 1] = 0
    m.frame[1: n + 1, F_FOLIO] = m.frame[1: n + 1, F_HOME] = -1
    m.frame[1: n + 1, F_FLAGS] = FF_CACHE
    m.shm_frame[slots] = ids
    m.g[G_FRAME_HWM] = n + 1
    m.g[G_FRAMES_USED] = m.g[G_FRAMES_PEAK] = n


def _grown(a: np.ndarray, n: int, used: int, sparse: bool) -> np.ndarray:
    """a with room for n rows, of which the first `used` (the ids ever handed
    out) are copied. The rest are zero (a directory row is empty when zero, see
    mmap.mm_init; other ids are initialised when handed out), and calloc'd: the
    operating system gives them memory only once they are written. So are the
    used rows' blocks that hold only zeros (copy_written): a table's row of
    tab_w or tab_ovr that nobody wrote costs no memory after growth either."""
    out = _zeros((n,) + a.shape[1:], a.dtype, sparse)
    if used > 0:
        word = np.uint64 if a[:used].nbytes % 8 == 0 else np.uint8
        dst, src = (x[:used].reshape(-1).view(word) for x in (out, a))
        copy_written(dst, src, 4096 // src.itemsize)
    return out


@njit(cache=True)
def copy_written(dst, src, block):
    """dst[:] = src for dst all zero, copying only the blocks of src (`block`
    entries, 4 KiB) that are not all zero (a store of zeros would make the
    host back the block)."""
    n = src.shape[0]
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        for i in range(lo, hi):
            if src[i] != 0:
                dst[lo:hi] = src[lo:hi]
                break


def _grown_in_place(a: np.ndarray, n: int, used: int, sparse: bool) -> np.ndarray:
    """a with room for n entries: realloc, which moves a large block's pages
    (mremap) instead of copying them, so growing never holds the array twice.
    An array the kernels allocated does not own its memory: that one is copied."""
    if not a.flags.owndata:
        return _grown(a, n, used, sparse)
    a.resize(n, refcheck=False)      # the kernels' reference is rebuilt after grow()
    return a


def grow(arrays: dict, needs) -> Machine:
    """The machine whose arrays are `arrays` (Machine._asdict()) with room for
    an op that needs `needs` (loop.op_needs): each group short of room
    doubles, or grows by what is missing if that is more (the overlay pool
    grows by a quarter, in place: it is the one that gets large). Raises
    ScenarioError past a group's ceiling.

    It consumes `arrays`, whose other references the caller has dropped: each
    array is replaced in it as soon as its larger copy is made, so growing
    holds one array twice at a time, never the whole machine."""
    from .._params import ScenarioError

    ref = machine_ref(Machine(**arrays))
    g = arrays["g"]
    odf = g[G_POLICY] == POLICY_ODF
    plan = []
    for i, grp in enumerate(GROUPS):
        need = int(needs[grp.need]) * grp.per
        if shortfall(ref, i, need) == 0:
            continue
        fields = [f for f in FIELDS if f.shape[0] == grp.name and (odf or not f.odf_only)]
        cap = arrays[fields[0].name].shape[0]
        want = max(cap + cap // 4 if grp.in_place else 2 * cap, int(g[grp.hwm]) + need)
        if i == GROUP_FRAME:
            want = min(want, int(g[G_FRAME_MAX]))
        if grp.ceiling:
            want = min(want, grp.ceiling)
            if want <= cap:
                raise ScenarioError(f"simulate: more than {grp.what} in use at once is not supported")
        plan.append((_grown_in_place if grp.in_place else _grown, fields, want, min(int(g[grp.hwm]), cap)))
    del ref
    for resize, fields, want, used in plan:
        for f in fields:
            arrays[f.name] = resize(arrays[f.name], want, used, f.sparse)
    return Machine(**arrays)
