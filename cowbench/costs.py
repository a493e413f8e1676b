"""The cost model: nanoseconds per kernel event, to turn the engine's counts into time.

The engine counts events exactly (PTEs and PTE tables copied at fork, pages
copied by an eager fork, zero-fill, COW-copy, reuse and map faults, pages
unmapped at exit); a CostModel prices each one. Estimated times are linear in
the counts:

    fork_ns   = fork_base_ns + fork_pte_ns * ptes + fork_table_ns * tables
                + fork_page_ns * pages_copied + fork_fd_ns * fds_copied
    faults_ns = zero_fill_ns * zero_fills + cow_copy_ns * cow_copies
                + reuse_ns * reuses + map_ns * maps
    exit_ns   = exit_pte_ns * ptes_zapped + exit_page_ns * pages_freed

`cowbench calibrate --out host.toml` measures these numbers on the machine it
runs on (cowbench/real/calibrate.py); `CostModel.load("host.toml")` reads them
back. `CostModel.default()` holds one such calibration, made on the host named
in its comments: a starting point, not a truth about your machine.

Each field, with the Linux code it stands for:

fork_base_ns   fixed cost of one fork(): copy_process() with everything but the
               private page tables (task, files, signal state, VMAs), plus the
               footprint of the calibrating process itself (a minimal Python +
               NumPy process: about 3,400 anonymous pages of its own).
fork_pte_ns    per present PTE copied at a COW fork: copy_present_pte(), i.e.
               write-protect parent and child PTE, raise the folio's
               refcount/mapcount (folio_try_dup_anon_rmap_pte). A PTE the
               parent wrote since its last fork costs ~30-45 % more than one an
               earlier fork already write-protected; calibrate stores the mean
               of the two.
fork_table_ns  per last-level PTE table (512 PTEs) the child gets:
               copy_pte_range() allocating and filling one page-table page.
fork_page_ns   per 4 KiB page copied by an eager fork (xv6 uvmcopy: allocate +
               memcpy). Linux has no eager fork: this one is an estimate.
zero_fill_ns   a fault that allocates a zeroed page (do_anonymous_page).
cow_copy_ns    a write fault that copies a shared page (wp_page_copy).
reuse_ns       a write fault that reuses the page in place (wp_page_reuse,
               vmstat pgreuse).
map_ns         a fault that maps an existing page without allocating: a read of
               never-written anonymous memory (the zero page), or a page of a
               shared mapping already in the page cache.
exit_pte_ns    per PTE mapping a page that exit_mmap zaps (zap_pte_range: the rmap,
               the refcount, the TLB batch), whether or not the page is freed.
exit_page_ns   per page that teardown frees, on top of its zap (back to the
               page allocator).
fork_fd_ns     per open file descriptor the child's table gets: dup_fd()
               copying the table and taking a reference on each open file
               description (get_file). Optional in a cost file: files written
               before calibrate measured it get the built-in value.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from pathlib import Path

from ._params import ScenarioError
from .fileio import atomic_write

__all__ = ["CostModel", "COST_FIELDS"]

#: The per-event costs, in nanoseconds, in file order.
COST_FIELDS = ("fork_base_ns", "fork_pte_ns", "fork_table_ns", "fork_page_ns", "zero_fill_ns",
               "cow_copy_ns", "reuse_ns", "map_ns", "exit_pte_ns", "exit_page_ns", "fork_fd_ns")
_ALL_FIELDS = COST_FIELDS + ("source", "page_size")
#: fork_fd_ns of the built-in model, and of cost files that predate it; see CostModel.default
_DEFAULT_FORK_FD_NS = 44.0
_PTES_PER_TABLE = 512         # PTEs in a table, pages in a huge page (x86-64)


@dataclasses.dataclass(frozen=True)
class CostModel:
    """Nanoseconds per kernel event; see the module docstring for each field."""

    fork_base_ns: float
    fork_pte_ns: float
    fork_table_ns: float
    fork_page_ns: float
    zero_fill_ns: float
    cow_copy_ns: float
    reuse_ns: float
    map_ns: float
    exit_pte_ns: float
    exit_page_ns: float
    source: str
    page_size: int = 4096
    fork_fd_ns: float = _DEFAULT_FORK_FD_NS

    def __post_init__(self):
        for name in COST_FIELDS:
            object.__setattr__(self, name, _check_cost("CostModel", name, getattr(self, name)))
        if not isinstance(self.source, str):
            raise ScenarioError(f"CostModel: 'source' must be a string; got {self.source!r}")
        ps = self.page_size
        if isinstance(ps, bool) or not isinstance(ps, numbers.Integral) or ps <= 0 or ps & (ps - 1):
            raise ScenarioError(f"CostModel: 'page_size' must be a positive power of two; got {ps!r}")
        object.__setattr__(self, "page_size", int(ps))

    # --- construction -----------------------------------------------------------------------

    @classmethod
    def default(cls) -> "CostModel":
        """The built-in model: `cowbench calibrate` on the project's development host.

        Our own measurements, not literature values: four full `cowbench calibrate`
        runs on 2026-11-28 between 02:01 and 02:06 UTC (the host clock's date), on
        Linux 6.18.44-fc-v509 (uname -r), x86_64, AMD EPYC, 2 vCPUs of a
        Firecracker/KVM guest, THP "madvise" (calibration memory madvised
        MADV_NOHUGEPAGE: every number is per 4 KiB page). Each run is a CPU-time
        median over 9 rounds; each value below is the median of the four runs
        (their range in the comment). Other jobs shared the machine at times,
        and the host itself drifts: in a slow spell fork and COW costs rise by up
        to ~25 %. Faults are slow in this guest (on bare metal expect several
        times less): calibrate your own machine for real numbers.
        """
        return cls(
            # intercept of fork latency vs dirty pages (0, 16, 64, 256 MiB, 1 GiB), mean of
            # the two parent PTE states; the forking process is a minimal Python + NumPy
            # one (~3,400 anonymous pages of its own). Runs: 396,000-418,000 ns.
            fork_base_ns=409_000.0,
            # slope of that fit less fork_table_ns/512. Runs: 77-83 ns. By state: 95-101 ns
            # per page when the parent's PTEs are writable (it wrote since its last fork),
            # 65-72 ns when an earlier fork already write-protected them.
            fork_pte_ns=79.0,
            # forks of sparse memory (one dirty page per 2 MiB, i.e. one PTE table each;
            # 1 and 2 GiB regions) against the dense ones. Runs: 1,526-1,595 ns.
            fork_table_ns=1_570.0,
            # estimate (Linux has no eager fork): MADV_POPULATE_WRITE per page (allocate,
            # zero, map: 1,088-1,117 ns) + a 4 KiB memcpy (191-242 ns). Runs: 1,287-1,340 ns.
            fork_page_ns=1_300.0,
            # first write to fresh private anonymous memory, per page. Runs: 1,229-1,260 ns.
            zero_fill_ns=1_235.0,
            # a child writing every page of its parent's dirty region, per page, median
            # over 16 MiB-1 GiB (1.8-2.0 us; 1 GiB children sometimes 2.4 us: this VM hands
            # freed memory back to its host, and the host faults it in again on first
            # touch). Runs: 1,834-1,924 ns.
            cow_copy_ns=1_880.0,
            # the parent writing its pages again after its children exited (pgreuse).
            # Runs: 711-722 ns.
            reuse_ns=712.0,
            # first read of fresh anonymous memory (maps the zero page). Runs: 623-646 ns.
            # (A child's first touch of a MAP_SHARED page in the page cache: 358-386 ns.)
            map_ns=636.0,
            # munmap of a dirty private region, per page (zap and free). Runs: 228-231 ns. Split
            # by one later calibration (2026-12-02, the machine busy: all of its costs ran
            # 1.3-1.5x these) into its zap, 40 % (a child's exit over pages it shares with its
            # parent: 103.9 of 260.2 ns/page), and the freeing, 60 %.
            exit_pte_ns=92.0,
            exit_page_ns=138.0,
            # slope of fork latency against open descriptors (distinct open files, 0-19,000:
            # RLIMIT_NOFILE's hard limit here). Not from the 2026-11-28 runs: seven runs on
            # 2026-12-02 (calibrate --quick, `cowbench run fork_fds`, plain os.fork loops) gave
            # 39-57 ns, with the machine busy (fork_base_ns then read 1.6-2.7x the value above).
            fork_fd_ns=_DEFAULT_FORK_FD_NS,
            source=("built-in default: cowbench calibrate on the development host, 2026-11-28, "
                    "Linux 6.18.44-fc-v509, x86_64 AMD EPYC, 2 vCPUs (Firecracker/KVM guest), "
                    "THP madvise, measured per 4 KiB page (MADV_NOHUGEPAGE); median of 4 runs (exit costs: one "
                    "run of 2026-12-02, as a share of munmap's; fork_fd_ns: runs of 2026-12-02 on a busy machine); "
                    "fork_page_ns is an estimate (MADV_POPULATE_WRITE + 4 KiB memcpy): Linux has no eager fork"),
        )

    @classmethod
    def from_dict(cls, d, origin: str = "CostModel.from_dict") -> "CostModel":
        """Build from a flat mapping, naming `origin` and the key in every error."""
        if not isinstance(d, dict):
            raise ScenarioError(f"{origin}: expected a table of costs; got {d!r}")
        unknown = [k for k in d if k not in _ALL_FIELDS]
        if unknown:
            k = unknown[0]
            raise ScenarioError(
                f"{origin}: unknown key {k!r} = {d[k]!r}; the keys are {', '.join(_ALL_FIELDS)}")
        missing = [k for k in COST_FIELDS if k not in d and k != "fork_fd_ns"]
        if missing:
            raise ScenarioError(f"{origin}: missing key{'s' if len(missing) > 1 else ''} "
                                f"{', '.join(repr(k) for k in missing)}")
        kw = {k: _check_cost(origin, k, d[k]) for k in COST_FIELDS if k in d}
        source = d.get("source", origin)
        if not isinstance(source, str):
            raise ScenarioError(f"{origin}: 'source' must be a string; got {source!r}")
        page_size = d.get("page_size", 4096)
        if isinstance(page_size, bool) or not isinstance(page_size, numbers.Integral) \
                or page_size <= 0 or page_size & (page_size - 1):
            raise ScenarioError(f"{origin}: 'page_size' must be a positive power of two; got {page_size!r}")
        return cls(**kw, source=source, page_size=int(page_size))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def load(cls, path) -> "CostModel":
        """Read a cost model from a TOML file (as `cowbench calibrate --out` writes)."""
        path = Path(path)
        data = path.read_bytes()
        try:
            table = _toml_loads(data.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:      # tomllib.TOMLDecodeError is a ValueError
            raise ScenarioError(f"CostModel.load({str(path)!r}): not a valid TOML file: {e}") from None
        return cls.from_dict(table, origin=f"CostModel.load({str(path)!r})")

    def save(self, path, comments=()) -> Path:
        """Write this model as TOML, atomically; `comments` become '#' lines at the top."""
        text = self.to_toml(comments)

        def write(tmp):
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)

        return atomic_write(path, write)

    def to_toml(self, comments=()) -> str:
        lines = []
        for block in comments:
            lines.extend(f"# {c}".rstrip() for c in str(block).splitlines() or [""])
        lines.append("# cowbench cost model: nanoseconds per event (see cowbench/costs.py)")
        width = max(len(k) for k in _ALL_FIELDS)
        for k in COST_FIELDS:
            lines.append(f"{k:<{width}} = {_toml_float(getattr(self, k))}")
        lines.append(f"{'page_size':<{width}} = {self.page_size}")
        lines.append(f"{'source':<{width}} = {_toml_string(self.source)}")
        return "\n".join(lines) + "\n"

    # --- arithmetic ---------------------------------------------------------------------------

    def fork_ns(self, ptes, tables, pages_copied=0, forks=1, fds_copied=0):
        """Estimated latency of fork(s) that copied `ptes` PTEs in `tables` PTE tables,
        (eager fork) `pages_copied` pages and `fds_copied` file descriptors. Scalars,
        NumPy arrays and pandas Series all work (element-wise; a Series keeps its
        index). `forks` counts the fixed cost: pass 0 (or a 0/1 array) for rows that
        were not created by a fork."""
        return (self.fork_base_ns * forks + self.fork_pte_ns * ptes + self.fork_table_ns * tables
                + self.fork_page_ns * pages_copied + self.fork_fd_ns * fds_copied)

    def faults_ns(self, zero_fills, cow_copies, reuses, maps):
        """Estimated time of faults: element-wise on scalars, arrays or Series."""
        return (self.zero_fill_ns * zero_fills + self.cow_copy_ns * cow_copies
                + self.reuse_ns * reuses + self.map_ns * maps)

    def exit_ns(self, ptes, pages_freed=0):
        """Estimated time of address-space teardowns (exit_mmap) that zapped
        `ptes` PTEs and freed `pages_freed` of their pages."""
        return self.exit_pte_ns * ptes + self.exit_page_ns * pages_freed

    # The engine's counts priced: c is a mapping of result columns (a
    # DataFrame, a row, a dict of totals), element-wise.

    def counted_fork_ns(self, c, forks=1):
        """Estimated time of `forks` forks that copied or shared what the counts c
        say. Sharing a PTE table (odf) takes a reference and write-protects one
        PMD entry: priced as copying one entry, like a huge PMD. Counts without
        fork_fds_copied (a replayed trace's) copied no descriptors."""
        fds = c["fork_fds_copied"] if "fork_fds_copied" in c else 0
        return self.fork_ns(c["fork_ptes_copied"] + c["fork_pmds_copied"] + c["fork_tables_shared"],
                            c["fork_tables_copied"], c["fork_pages_copied"], forks, fds)

    def counted_faults_ns(self, c):
        """Estimated time of the faults counted in c. A fault that maps an existing
        page (zero page, huge zero page, page cache) is every fault that neither
        allocated nor copied nor reused; an odf table copied at a fault is priced
        as a full table copied at fork, a huge page as 512 small ones (upper bounds)."""
        maps = (c["minor_faults"] - c["zero_fills"] - c["cow_copies"] - c["cow_reuses"]
                - c["thp_fault_alloc"] - c["thp_copies"])
        return (self.faults_ns(c["zero_fills"], c["cow_copies"], c["cow_reuses"], maps)
                + c["fault_tables_copied"] * (self.fork_table_ns + _PTES_PER_TABLE * self.fork_pte_ns)
                + _PTES_PER_TABLE * (self.zero_fill_ns * c["thp_fault_alloc"] + self.cow_copy_ns * c["thp_copies"]))

    def counted_exit_ns(self, c):
        """Estimated time of the address-space teardowns counted in c: each PTE
        zapped, and each page freed on top."""
        return self.exit_ns(c["exit_ptes_zapped"], c["exit_pages_freed"])


# --- helpers -----------------------------------------------------------------------------------

def _check_cost(origin: str, key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ScenarioError(f"{origin}: {key!r} must be a number of nanoseconds; got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise ScenarioError(f"{origin}: {key!r} must be a finite, non-negative number of nanoseconds; "
                            f"got {value!r}")
    return v


def _toml_loads(text: str) -> dict:
    try:
        import tomllib                      # Python >= 3.11
    except ImportError:                     # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ImportError("reading a cost model on Python 3.10 needs the 'tomli' package "
                              "(pip install tomli)") from None
    return tomllib.loads(text)


def _toml_float(v: float) -> str:
    s = repr(float(round(v, 3)))            # repr keeps '.' or 'e': always a TOML float
    return s


def _toml_string(s: str) -> str:
    """A TOML basic string: escape backslash, quote and every control character."""
    out = []
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(ch, f"\\u{ord(ch):04X}"))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'
