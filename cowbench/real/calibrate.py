"""`cowbench calibrate`: measure this host's fork and fault costs with real processes.

    cowbench calibrate --out host.toml [--quick] [--csv medians.csv]

All memory is MAP_PRIVATE|MAP_ANONYMOUS madvised MADV_NOHUGEPAGE (15; 14 is
MADV_HUGEPAGE), so every number is per 4 KiB page even where THP is on. Pages
are touched by NumPy strided writes, one byte per page, so the interpreter is
not in the per-page time. What is measured:

fork latency   os.fork() timed in the parent until it returns; the child
               _exits at once and is reaped outside the timed region. Against
               dense dirty regions of several sizes, in the two states a
               parent's PTEs can be in: writable (the parent wrote every page
               since its last fork) and write-protected by an earlier fork (a
               parent that forks again without writing: prefork servers,
               zygotes, fork servers, a loop timing fork()). Per PTE the first
               costs ~30-45 % more (fork must write-protect the parent's PTE
               and clear the page's anon-exclusive bit). The model takes the
               mean of the two fits, within ~15-20 % of either state. Fit: fork = base +
               slope * pages, least squares on relative error over the per-size
               medians plus the fork of the bare process (pages = 0).
PTE tables     forks of sparse memory, one dirty page per 2 MiB (one PTE per
               PTE table), give slope_sparse = pte + table; dense memory gives
               slope_dense = pte + table/512; solved for both (fitted jointly,
               not folded). If that fails (a non-positive solution) the table
               cost is folded into fork_pte_ns and `source` says so.
COW fault      a child writes every page of the region it shares with its
               parent, timed in the child; per page.
reuse fault    the parent writes every page again after its children exited:
               its own pages again, but still write-protected (pgreuse).
zero fill      the first write to fresh anonymous memory; per page.
map            the first read of fresh anonymous memory (maps the zero page).
               A child's first read of a MAP_SHARED page its parent wrote is
               measured too and reported, not used.
exit           a child that shares every page of a dense region exits at once:
               its CPU time (getrusage RUSAGE_CHILDREN across the reap) against
               the region's size gives exit_pte_ns, per PTE zapped; munmap of
               a dirty private region (zap and free) per page, less that,
               gives exit_page_ns, per page freed.
descriptors    fork latency with 0 to ~10,000 extra descriptors open (each its
               own open file description, as a server's sockets are: a fresh
               open() of /dev/null), against their number: fork_fd_ns, the
               slope (dup_fd copying the table, get_file on each). RLIMIT_NOFILE's
               soft limit is raised to its hard one; the largest count stays
               under it.
eager copy     Linux has no eager fork, so fork_page_ns is an estimate: the
               in-kernel cost of allocating a zeroed page (MADV_POPULATE_WRITE:
               the zero-fill fault without the trap; the zero-fill fault where
               that is missing) plus a 4 KiB memcpy (timed as a 64 MiB copy).

How: every value is a median over rounds, after one warm-up round, of the CPU
time of the thread that takes the event (CLOCK_THREAD_CPUTIME_ID: kernel time
in fork and in page faults included, time spent waiting for a CPU excluded).
On a quiet machine that is the wall-clock time (they agree within ~3 %); on a
busy one the wall clock adds whatever the scheduler makes the process wait,
which is no cost of the event. Wall-clock medians are reported beside it.
Each round visits every size once, in a shuffled order, so a change in the
machine's load spreads over all sizes and measurements instead of bending
one fit; all regions stay mapped, hidden from fork by MADV_DONTFORK except
the one being measured. Forks are timed in groups of back-to-back forks, as a
timing loop does them (a fork after other work or a pause takes 1.3-1.8x as
long: the bare process's is reported as "cold").

The measuring process is a fresh interpreter running this file by path with
only NumPy loaded: a minimal Python + NumPy process (~14 MiB of anonymous
memory), not the cowbench CLI with Numba and pandas loaded (~75 MiB, which adds
~1.5 ms to every fork: a fork copies the parent's own PTEs too). fork_base_ns is
that minimal process's fork latency. Nothing at module level imports cowbench,
and the worker avoids numpy.random (90 more VMAs, 1.7 MiB more to copy).
"""
from __future__ import annotations

import gc
import json
import mmap
import os
import resource
import struct
import sys
import time

import numpy as np

PAGE = mmap.PAGESIZE
PTES_PER_TABLE = PAGE // 8
TABLE_SPAN = PAGE * PTES_PER_TABLE                     # 2 MiB on x86-64
MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)  # Linux value; Python < 3.12 lacks it
MADV_NOHUGEPAGE = getattr(mmap, "MADV_NOHUGEPAGE", None)  # 15 on Linux (14 is MADV_HUGEPAGE)
MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)  # Linux >= 5.14
MADV_DONTFORK = getattr(mmap, "MADV_DONTFORK", 10)
MADV_DOFORK = getattr(mmap, "MADV_DOFORK", 11)
MiB = 1 << 20

FULL_SIZES = ("16MiB", "64MiB", "256MiB", "1GiB")
QUICK_SIZES = ("16MiB", "64MiB", "256MiB")
FULL_SPARSE = ("1GiB", "2GiB")           # 512 and 1024 PTE tables
QUICK_SPARSE = ("512MiB", "1GiB")
FULL_REPEATS = 9
QUICK_REPEATS = 5
WARMUP = 1
FULL_FDS = (2_500, 5_000, 10_000)        # extra descriptors open at a fork (capped by RLIMIT_NOFILE)
QUICK_FDS = FULL_FDS                     # 10,000 too: at 2,500 and 5,000 alone (+20-35 us on a fork) a quick
                                         # run's noise made the slope negative in 2 of 11 runs (0 of 8 with it)
FAULT_MAX = 256 * MiB                    # fault-cost regions: the dense sizes up to this (quick: 64 MiB)
_WORKER_NAME = "__cowbench_calibrate_worker__"

__all__ = ["calibrate", "measure", "measure_fds", "predict", "main"]


# ===================================================================================== worker
# Runs in a fresh interpreter: stdlib + NumPy only. Emits one JSON object per line.

def _ns() -> int:
    return time.perf_counter_ns()


_cpu = time.thread_time_ns     # this thread's CPU time: what a pass costs without the waits of a busy machine


_pending: list[str] = []


def _emit(**rec) -> None:
    """Queue a record; progress and done flush the queue. Writing to the pipe wakes the
    reading process, which would then compete for the CPUs while forks are timed: so
    that happens once per round, not once per sample."""
    _pending.append(json.dumps(rec))
    if rec["kind"] in ("progress", "done"):
        sys.stdout.write("\n".join(_pending) + "\n")
        sys.stdout.flush()
        _pending.clear()


class _Region:
    """A private (or shared) anonymous mapping with a uint8 NumPy view `a`."""

    def __init__(self, nbytes: int, shared: bool = False, noreserve: bool = False):
        flags = (mmap.MAP_SHARED if shared else mmap.MAP_PRIVATE) | mmap.MAP_ANONYMOUS
        if noreserve:
            flags |= MAP_NORESERVE
        self.mm = mmap.mmap(-1, nbytes, flags=flags)
        if MADV_NOHUGEPAGE is not None:
            self.mm.madvise(MADV_NOHUGEPAGE)
        self.a = np.frombuffer(self.mm, np.uint8)
        start = self.a.ctypes.data
        self.pages = nbytes // PAGE
        self.tables = (start + nbytes - 1) // TABLE_SPAN - start // TABLE_SPAN + 1

    def close(self):
        """munmap; returns its (wall, CPU) duration in ns."""
        self.a = None
        c0 = _cpu()
        t0 = _ns()
        self.mm.close()
        t = _ns() - t0
        return t, _cpu() - c0


# Each timed step returns (wall ns, CPU ns of the timed thread). The model is fitted to
# CPU time; wall time is reported beside it (equal on a quiet machine).

def _write(a, stride: int, value: int):
    c0 = _cpu()
    t0 = _ns()
    a[::stride] = value
    t = _ns() - t0
    return t, _cpu() - c0


def _read(a, stride: int):
    c0 = _cpu()
    t0 = _ns()
    a[::stride].max()
    t = _ns() - t0
    return t, _cpu() - c0


def _fork_exit():
    """Latency of os.fork() in the parent; the child exits at once, reaped untimed."""
    c0 = _cpu()
    t0 = _ns()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    t = _ns() - t0
    c = _cpu() - c0
    os.waitpid(pid, 0)
    return t, c


def _exit_child():
    """A child that exits at once: the CPU time it took (getrusage(RUSAGE_CHILDREN)
    across its reap: almost all of it exit_mmap tearing down the address space
    it shares with this process), and the wall time from fork's return to the reap."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    t0 = _ns()
    os.waitpid(pid, 0)
    t = _ns() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) * 1e9
    return t, cpu


def _fork_pass(a, op: str):
    """Fork a child that writes (or reads) every page of `a`; the child's pass time."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            t = _write(a, PAGE, 7) if op == "write" else _read(a, PAGE)
            os.write(w, struct.pack("qq", *t))
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    data = b""
    while len(data) < 16:
        chunk = os.read(r, 16 - len(data))
        if not chunk:
            break
        data += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if len(data) != 16:
        raise RuntimeError(f"the child's {op} pass failed (wait status {status:#x})")
    return struct.unpack("qq", data)


def _shuffled(n: int, seed: int) -> list[int]:
    """A permutation of range(n) (Fisher-Yates over a 64-bit LCG). Not numpy.random: importing
    it maps ~90 more VMAs and 1.7 MiB of anonymous memory, which every fork would then copy."""
    out = list(range(n))
    x = (seed * 6364136223846793005 + 1442695040888963407) & (2**64 - 1)
    for i in range(n - 1, 0, -1):
        x = (x * 6364136223846793005 + 1442695040888963407) & (2**64 - 1)
        j = (x >> 33) % (i + 1)
        out[i], out[j] = out[j], out[i]
    return out


def _proc_kib(path: str, key: str):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _worker(plan: dict) -> None:
    """Measure in rounds; each round visits every size once, in a shuffled order.

    Every dense and sparse region stays mapped for the whole run, hidden from fork
    by MADV_DONTFORK except while it is the one measured, so a round can visit the
    sizes in any order. A round times forks first, then faults; rounds spread over
    the whole run, so a slow spell of the machine (seconds to tens of seconds on
    the development VM) touches a few rounds of every measurement and the median
    drops it, instead of bending one measurement or one size.
    """
    R, W = plan["repeats"], plan["warmup"]
    seed = plan.get("seed", 1)
    gc.disable()
    state = {"populate": True}

    def sample(what, rep, t, pages=0, tables=0, once=False):
        """One measurement t = (wall ns, CPU ns); `once` marks one-shot ones (never a warm-up)."""
        _emit(kind="sample", what=what, rep=rep, warmup=rep < W and not once, ns=t[0], cpu_ns=t[1],
              pages=pages, tables=tables)

    _emit(kind="info", key="worker_rss_anon_kib", value=_proc_kib("/proc/self/status", "RssAnon"))
    _emit(kind="info", key="first_fork_ns", value=list(_fork_exit()))    # a process's first fork, kept apart

    _emit(kind="progress", msg="mapping and touching the regions")
    dense = []
    for nbytes in plan["dense"]:
        reg = _Region(nbytes)
        reg.mm.madvise(MADV_DONTFORK)
        sample("zero_fill_first", 0, _write(reg.a, PAGE, 1), reg.pages, reg.tables, once=True)
        dense.append(reg)
    _emit(kind="info", key="anon_huge_kib", value=_proc_kib("/proc/self/smaps_rollup", "AnonHugePages"))
    sparse = []
    for nbytes in plan["sparse"]:
        reg = _Region(nbytes, noreserve=True)
        reg.mm.madvise(MADV_DONTFORK)
        _write(reg.a, TABLE_SPAN, 1)
        reg.touched = len(range(0, nbytes, TABLE_SPAN))
        sparse.append(reg)

    fork_items = ([("base", None)] + [("dense", r) for r in dense] + [("sparse", r) for r in sparse]
                  + [("fds", n) for n in plan.get("fds", ())])
    fault_items = [("cow", r) for r in dense] + [("faults", b) for b in plan["faults"]]
    for rep in range(W + R):
        _emit(kind="progress", msg=f"round {rep + 1}/{W + R}" + (" (warm-up)" if rep < W else ""))
        if rep:
            _spin(plan["settle_s"])     # let the last round's frees settle; spinning keeps the CPU awake
        for i in _shuffled(len(fork_items), seed + rep):
            _fork_item(rep, *fork_items[i], sample, plan["group"])
        for i in _shuffled(len(fault_items), seed + 1000 + rep):
            _fault_item(rep, *fault_items[i], sample, state)
    for reg in dense:
        sample("munmap_dense", 0, reg.close(), reg.pages, reg.tables, once=True)
    for reg in sparse:
        reg.close()

    # memcpy bandwidth, as a 4 KiB copy_page would see it (buffers beyond the caches)
    _emit(kind="progress", msg="memcpy")
    nb = plan["memcpy_bytes"]
    src = np.full(nb, 1, np.uint8)
    dst = np.full(nb, 2, np.uint8)
    for rep in range(W + R):
        c0, t0 = _cpu(), _ns()
        np.copyto(dst, src)
        sample("memcpy", rep, (_ns() - t0, _cpu() - c0), nb // PAGE)
    _emit(kind="done")


def _fork_item(rep, kind, reg, sample, group) -> None:
    """Fork latency. Forks come in back-to-back groups, as a loop timing fork() does
    them: a fork after other work finds the kernel's data out of the caches (a bare
    fork ~1.3x as long; after a 50 ms sleep ~1.8x; a process's first fork ~2.5x)."""
    if kind == "base":                                   # no region forked at all
        sample("fork_base_cold", rep, _fork_exit())
        for _ in range(2 * group):
            sample("fork_base", rep, _fork_exit())
        for _ in range(group):
            sample("exit_base", rep, _exit_child())
    elif kind == "dense":
        P, T = reg.pages, reg.tables
        reg.mm.madvise(MADV_DOFORK)
        # the parent's PTEs were write-protected by the last round's forks; its pages are its own
        sample("reuse", rep, _write(reg.a, PAGE, (rep % 200) + 2), P, T)
        sample("fork_w", rep, _fork_exit(), P, T)                  # parent PTEs writable
        for _ in range(group):
            sample("fork_a", rep, _fork_exit(), P, T)              # already write-protected
        for _ in range(group):
            sample("exit_a", rep, _exit_child(), P, T)             # a child that shares every page exits
        reg.mm.madvise(MADV_DONTFORK)
    elif kind == "fds":                                  # reg: how many descriptors to hold open
        fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(reg)]
        try:
            _fork_exit()             # untimed: the first fork after the opens is a cold one (see above)
            for _ in range(2 * group):
                sample("fork_fds", rep, _fork_exit(), reg)
        finally:
            for fd in fds:
                os.close(fd)
    else:                                                # sparse: one dirty page per PTE table
        n = reg.touched
        reg.mm.madvise(MADV_DOFORK)
        _write(reg.a, TABLE_SPAN, (rep % 200) + 2)
        sample("sparse_fork_w", rep, _fork_exit(), n, n)
        for _ in range(group):
            sample("sparse_fork_a", rep, _fork_exit(), n, n)
        reg.mm.madvise(MADV_DONTFORK)


def _fault_item(rep, kind, it, sample, state) -> None:
    """Faults: COW in a child of a dense region, or first touches of a fresh region."""
    if kind == "cow":                                    # the child writes every page
        it.mm.madvise(MADV_DOFORK)
        sample("cow", rep, _fork_pass(it.a, "write"), it.pages, it.tables)
        it.mm.madvise(MADV_DONTFORK)
        return
    nbytes = it
    reg = _Region(nbytes)
    sample("map_zero", rep, _read(reg.a, PAGE), reg.pages)
    reg.close()
    reg = _Region(nbytes)
    sample("zero_fill", rep, _write(reg.a, PAGE, 1), reg.pages)
    sample("munmap", rep, reg.close(), reg.pages)
    if state["populate"]:
        reg = _Region(nbytes)
        try:
            c0, t0 = _cpu(), _ns()
            reg.mm.madvise(MADV_POPULATE_WRITE)
            sample("populate", rep, (_ns() - t0, _cpu() - c0), reg.pages)
        except OSError:                                  # Linux < 5.14
            state["populate"] = False
        reg.close()
    reg = _Region(nbytes, shared=True)
    _write(reg.a, PAGE, 1)
    sample("shared_map", rep, _fork_pass(reg.a, "read"), reg.pages)
    reg.close()


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


# ================================================================================ the caller

def _parse_sizes(func: str, param: str, sizes) -> list[int]:
    from .._params import ScenarioError, parse_size

    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
        raise ScenarioError(f"The {param!r} parameter of {func} must be a list of sizes; got {sizes!r}")
    out = sorted({-(-parse_size(func, param, s) // PAGE) * PAGE for s in sizes})
    return out


def _mem_available() -> int | None:
    kib = _proc_kib("/proc/meminfo", "MemAvailable")
    return None if kib is None else kib * 1024


def _run_worker(plan: dict, progress: bool, timeout: float) -> tuple[list[dict], dict]:
    """Run _worker(plan) in a fresh interpreter; its samples and info."""
    import subprocess
    import tempfile
    import threading

    boot = ("import runpy, sys\n"
            "if sys.path and sys.path[0] in ('', '.'): del sys.path[0]\n"
            f"runpy.run_path(sys.argv[1], run_name={_WORKER_NAME!r})\n")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONWARNINGS="ignore::DeprecationWarning")
    samples, info, done = [], {}, False
    with tempfile.TemporaryFile(mode="w+") as errf:
        proc = subprocess.Popen([sys.executable, "-c", boot, os.path.abspath(__file__), json.dumps(plan)],
                                stdout=subprocess.PIPE, stderr=errf, text=True, env=env)
        timer = threading.Timer(timeout, proc.kill)     # kills only the worker we started
        timer.start()
        t0 = time.perf_counter()
        try:
            for line in proc.stdout:
                rec = json.loads(line)
                kind = rec.pop("kind")
                if kind == "sample":
                    samples.append(rec)
                elif kind == "info":
                    info[rec["key"]] = rec["value"]
                elif kind == "progress":
                    if progress:
                        print(f"  [{time.perf_counter() - t0:5.1f} s] {rec['msg']}", file=sys.stderr, flush=True)
                elif kind == "done":
                    done = True
            proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        errf.seek(0)
        err = errf.read()
    if not done:
        why = "timed out" if proc.returncode == -9 else f"exit status {proc.returncode}"
        raise RuntimeError(f"calibration worker failed ({why}):\n{err.strip()}")
    return samples, info


def _plan(dense, sparse, faults, repeats, memcpy_bytes, fds=()) -> dict:
    return {"dense": dense, "sparse": sparse, "faults": faults, "repeats": repeats, "warmup": WARMUP,
            "group": 2, "settle_s": 0.05, "memcpy_bytes": memcpy_bytes, "seed": 1, "fds": list(fds)}


def _fd_counts(counts) -> list[int]:
    """The descriptor counts to measure, below RLIMIT_NOFILE (its soft limit raised to the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))    # the worker inherits it
    room = (hard if hard != resource.RLIM_INFINITY else 1 << 20) - 64       # the interpreter's own
    return sorted({min(n, room) for n in counts if room > 0})


def _medians(samples: list[dict]):
    """Per (what, pages, tables): median ns over the non-warm-up repetitions, with spread."""
    import pandas as pd

    df = pd.DataFrame(samples)
    keep = df[~df["warmup"]]
    g = keep.groupby(["what", "pages", "tables"])
    med = g["ns"].agg(median_ns="median", q25_ns=lambda s: s.quantile(0.25), q75_ns=lambda s: s.quantile(0.75),
                      n="size")
    med["median_cpu_ns"] = g["cpu_ns"].median()
    med = med.reset_index()
    med["per_page_ns"] = med["median_cpu_ns"] / med["pages"].where(med["pages"] > 0)
    return df, med


def _wls(x: np.ndarray, y: np.ndarray, intercept: bool = True):
    """Least squares on relative error: minimise sum(((y - fit) / y)**2).

    Relative weighting keeps small sizes as well fitted as large ones (the
    cost model is judged by percentage error). Returns coef, fitted, R^2
    (ordinary, unweighted) and the largest |residual| in % of the fit.
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    X = np.column_stack(([np.ones_like(x)] if intercept else []) + [x])
    w = 1.0 / y
    coef = np.linalg.lstsq(X * w[:, None], y * w, rcond=None)[0]
    fit = X @ coef
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - fit) ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    resid = float(np.max(np.abs(y - fit) / fit)) * 100 if len(y) else float("nan")
    return coef, fit, r2, resid


def _fork_fit(med, what: str, base_ns: float, col: str):
    """Fit fork = b + s * pages over the per-size medians of `what` plus the bare fork (pages 0)."""
    d = med[med["what"] == what].sort_values("pages")
    x = np.concatenate([[0.0], d["pages"].to_numpy(float)])
    y = np.concatenate([[base_ns], d[col].to_numpy(float)])
    (b, s), fit, r2, resid = _wls(x, y)
    return b, s, r2, resid


def _per_page(med, what: str, col: str):
    """Per-page cost: median of the per-size medians; R^2 of total = c * pages; spread in %."""
    d = med[med["what"] == what].sort_values("pages")
    if d.empty:
        return float("nan"), float("nan"), float("nan"), 0
    y = d[col].to_numpy(float)
    pages = d["pages"].to_numpy(float)
    per = y / pages
    c = float(np.median(per))
    fit = c * pages
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - fit) ** 2).sum()) / ss_tot if len(y) > 1 and ss_tot > 0 else float("nan")
    spread = float(np.max(np.abs(per - c)) / c * 100)
    return c, r2, spread, len(d)


def _fit_costs(med, plan: dict, col: str) -> tuple[dict, list, list]:
    """The costs from the per-size medians in column `col`, with fit-quality rows and notes."""
    nan = float("nan")
    base = float(med.loc[med["what"] == "fork_base", col].iloc[0])
    bw, sw, r2w, resw = _fork_fit(med, "fork_w", base, col)
    ba, sa, r2a, resa = _fork_fit(med, "fork_a", base, col)
    fork_base, slope_dense = (bw + ba) / 2, (sw + sa) / 2
    notes = []

    # PTE tables: sparse forks (1 PTE per table: slope = pte + table) against dense ones
    # (512 PTEs per table: slope = pte + table / 512)
    table, pte = 0.0, slope_dense
    sparse_r2 = sparse_res = nan
    if plan["sparse"]:
        _, ssw, r2sw, rsw = _fork_fit(med, "sparse_fork_w", base, col)
        _, ssa, r2sa, rsa = _fork_fit(med, "sparse_fork_a", base, col)
        slope_sparse = (ssw + ssa) / 2
        sparse_r2, sparse_res = min(r2sw, r2sa), max(rsw, rsa)
        k = PTES_PER_TABLE
        table = (slope_sparse - slope_dense) / (1 - 1 / k)
        pte = slope_dense - table / k
        if table <= 0 or pte <= 0:
            notes.append(f"PTE-table cost not separable (sparse slope {slope_sparse:.0f} ns/table, dense "
                         f"{slope_dense:.1f} ns/page): folded into fork_pte_ns")
            table, pte = 0.0, slope_dense
        else:
            notes.append("fork_pte_ns and fork_table_ns fitted jointly from dense and sparse forks")
    else:
        notes.append("no sparse forks measured: PTE-table cost folded into fork_pte_ns")

    # the whole fork model against every fork median (the two PTE states averaged)
    pts = [(0.0, 0.0, base)]
    for w_, a_ in (("fork_w", "fork_a"), ("sparse_fork_w", "sparse_fork_a")):
        dw = med[med["what"] == w_].set_index(["pages", "tables"])[col]
        da = med[med["what"] == a_].set_index(["pages", "tables"])[col]
        pts += [(p, t, v) for (p, t), v in ((dw + da) / 2).items()]
    P, T, Y = (np.array(c, float) for c in zip(*pts))
    F = fork_base + pte * P + table * T
    all_r2 = 1 - float(((Y - F) ** 2).sum()) / float(((Y - Y.mean()) ** 2).sum())
    all_res = float(np.max(np.abs(Y - F) / F)) * 100

    pp = {w: _per_page(med, w, col) for w in ("cow", "reuse", "zero_fill", "map_zero", "munmap", "populate",
                                               "shared_map", "memcpy", "zero_fill_first")}
    cpy = pp["memcpy"][0]
    if np.isfinite(pp["populate"][0]):
        eager, eager_q = pp["populate"][0] + cpy, pp["populate"]
        eager_how = "estimate: MADV_POPULATE_WRITE/page + 4 KiB memcpy"
    else:
        eager, eager_q = pp["zero_fill"][0] + cpy, pp["zero_fill"]
        eager_how = "estimate: zero-fill fault + 4 KiB memcpy"
        notes.append("MADV_POPULATE_WRITE unavailable")
    notes.append(f"fork_page_ns is an {eager_how} (Linux has no eager fork)")

    # exit: a child that shares every page unmaps them (zap_pte_range) and frees its
    # tables; munmap of a dirty private region also frees each page
    exit_base = float(med.loc[med["what"] == "exit_base", col].iloc[0])
    _, exit_pte, r2e, rese = _fork_fit(med, "exit_a", exit_base, col)
    if exit_pte < 0:        # seen in a quick run's wall-clock fit on a loaded machine: noise, not a cost
        notes.append(f"a sharing child's exit did not grow with its pages ({exit_pte:.1f} ns each): exit_pte_ns is 0")
        exit_pte = 0.0
    exit_page = pp["munmap"][0] - exit_pte
    if exit_page <= 0:
        notes.append(f"freeing a page at exit not separable (munmap {pp['munmap'][0]:.0f} ns/page, a sharing "
                     f"child's exit {exit_pte:.0f} ns/page): exit_page_ns is 0")
        exit_page = 0.0

    nd, nsp = len(plan["dense"]) + 1, len(plan["sparse"]) + 1
    q = (min(r2w, r2a), max(resw, resa))
    fork_fd, r2f, resf = 0.0, nan, nan
    if plan.get("fds"):
        _, fork_fd, r2f, resf = _fork_fit(med, "fork_fds", base, col)
        if fork_fd < 0:
            notes.append(f"fork latency did not grow with open descriptors ({fork_fd:.1f} ns each): fork_fd_ns is 0")
            fork_fd = 0.0
    costs = {"fork_base_ns": fork_base, "fork_pte_ns": pte, "fork_table_ns": table, "fork_page_ns": eager,
             "zero_fill_ns": pp["zero_fill"][0], "cow_copy_ns": pp["cow"][0], "reuse_ns": pp["reuse"][0],
             "map_ns": pp["map_zero"][0], "exit_pte_ns": exit_pte, "exit_page_ns": exit_page,
             "fork_fd_ns": fork_fd}

    def per(name, key, how):
        c, r2, sp, n = pp[key]
        return (name, c, how, n, r2, sp)

    rows = [
        ("fork_base_ns", fork_base, "intercept of fork vs pages (mean of 2 PTE states)", nd, *q),
        ("fork_pte_ns", pte, "slope of fork vs pages, less fork_table_ns/512", nd, *q),
        ("fork_table_ns", table, "sparse forks, 1 dirty page per 2 MiB", nsp, sparse_r2, sparse_res),
        ("fork_page_ns", eager, eager_how, eager_q[3], eager_q[1], eager_q[2]),
        per("zero_fill_ns", "zero_fill", "first write to a fresh region"),
        per("cow_copy_ns", "cow", "child writes every page it shares"),
        per("reuse_ns", "reuse", "parent rewrites its pages after the child exited"),
        per("map_ns", "map_zero", "first read of a fresh region (zero page)"),
        ("exit_pte_ns", exit_pte, "slope of a sharing child's exit vs its pages (its CPU time)", nd, r2e, rese),
        ("exit_page_ns", exit_page, "munmap of a dirty region per page, less exit_pte_ns", pp["munmap"][3],
         pp["munmap"][1], pp["munmap"][2]),
        ("fork_fd_ns", fork_fd, "slope of fork vs open descriptors (distinct open files)",
         len(plan.get("fds", ())) + 1, r2f, resf),
        ("(fork model, all points)", nan, "base + pte*P + table*T vs every fork median", len(Y), all_r2, all_res),
        ("(fork/page, writable)", sw, "PTEs writable at fork (parent wrote since)", nd, r2w, resw),
        ("(fork/page, wrprotected)", sa, "PTEs write-protected by an earlier fork", nd, r2a, resa),
        ("(fork, no region)", base, "bare worker process (RssAnon ~14 MiB)", 1, nan, nan),
        ("(fork, no region, cold)", float(med.loc[med["what"] == "fork_base_cold", col].iloc[0]),
         "the same, first fork of a back-to-back group", 1, nan, nan),
        per("(zero fill, first touch)", "zero_fill_first", "each dense region's first touch, once"),
        per("(shared map fault)", "shared_map", "child's first read of a MAP_SHARED page"),
        per("(populate write)", "populate", "MADV_POPULATE_WRITE, per page"),
        ("(memcpy 4 KiB)", cpy, f"np.copyto of {plan['memcpy_bytes'] // MiB} MiB, per 4 KiB", 1, nan, nan),
    ]
    return costs, rows, notes


def _host() -> dict:
    import platform

    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    thp = ""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            thp = f.read().strip()
    except OSError:
        pass
    return {"node": platform.node(), "release": platform.release(), "machine": platform.machine(),
            "cpu": cpu, "cpus": os.cpu_count(), "thp": thp,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def _fit(samples: list[dict], info: dict, plan: dict, host: dict):
    import pandas as pd

    from ..costs import CostModel

    raw, med = _medians(samples)
    costs, rows, notes = _fit_costs(med, plan, "median_cpu_ns")
    wall_costs, wall_rows, _ = _fit_costs(med, plan, "median_ns")
    report = pd.DataFrame(rows, columns=["parameter", "value_ns", "how", "points", "r2", "max_dev_pct"])
    report.insert(2, "wall_ns", [r[1] for r in wall_rows])
    report = report.set_index("parameter")
    first = info.get("first_fork_ns")
    if first is not None:
        report.loc["(first fork of a process)"] = [float(first[1]), float(first[0]), "the worker's first fork, once",
                                                  1, float("nan"), float("nan")]

    sizes = ", ".join(_fmt_size(b) for b in plan["dense"])
    sparse = ", ".join(_fmt_size(b) for b in plan["sparse"])
    source = (f"cowbench calibrate on {host['node']} ({host['cpu']}, {host['cpus']} CPUs, {host['machine']}), "
              f"{host['date']}, Linux {host['release']}, THP '{host['thp']}' (measured with MADV_NOHUGEPAGE); "
              f"CPU-time medians of {plan['repeats']} rounds; dense {sizes}; sparse {sparse or 'none'}; "
              f"fork = mean of writable and write-protected PTE states; " + "; ".join(notes))
    model = CostModel(**costs, source=source, page_size=PAGE)
    timed = raw[~raw["warmup"] & (raw["cpu_ns"] > 0)]
    report.attrs["wall_over_cpu"] = float(timed["ns"].sum() / timed["cpu_ns"].sum()) if len(timed) else 1.0
    report.attrs["wall_model"] = CostModel(**wall_costs, source=source.replace("CPU-time", "wall-clock"),
                                          page_size=PAGE)
    report.attrs["measurements"] = med
    report.attrs["samples"] = raw
    report.attrs["info"] = dict(info, **{f"host_{k}": v for k, v in host.items()})
    return model, report


def _fmt_size(b: int) -> str:
    return f"{b / (1 << 30):g} GiB" if b >= 1 << 30 else f"{b / MiB:g} MiB"


def _check_platform() -> None:
    if not hasattr(os, "fork"):
        raise RuntimeError("cowbench calibrate needs os.fork (a Unix system)")
    if not hasattr(mmap, "MAP_ANONYMOUS") or not hasattr(mmap.mmap, "madvise"):
        raise RuntimeError("cowbench calibrate needs anonymous mmap with madvise (Linux)")


def calibrate(sizes=None, repeats=None, progress=True, *, quick=False, sparse_sizes=None, timeout=600.0):
    """Measure this host; returns (CostModel, report DataFrame).

    sizes: dense region sizes for fork latency, COW and reuse faults ("64MiB",
        bytes, ...); default 16, 64, 256 MiB and 1 GiB (quick: 16, 64, 256 MiB).
        At least two. Sizes that do not fit into MemAvailable are dropped (all
        stay mapped at once, and a child copies the largest).
    repeats: rounds after one warm-up round; default FULL_REPEATS (9), quick QUICK_REPEATS (5).
    sparse_sizes: virtual sizes of the sparse regions (one dirty page per 2 MiB);
        default 1 and 2 GiB (quick: 0.5 and 1 GiB); [] folds the table cost
        into fork_pte_ns.
    quick: the quick defaults (~7 s instead of ~20 s on a 2-CPU VM).

    The report has one row per CostModel field: value_ns (CPU time, what the
    model holds), wall_ns (the same fit on wall-clock time), how, points (sizes in the
    fit), r2 and max_dev_pct (the largest deviation of one size from the fit,
    in %), plus informational rows in parentheses. report.attrs holds
    "measurements" (per-size medians), "samples" (every repetition),
    "wall_over_cpu", "wall_model", "info" and "elapsed_s".
    """
    from .._params import ScenarioError

    _check_platform()
    t0 = time.perf_counter()
    dense = _parse_sizes("calibrate", "sizes", sizes if sizes is not None else
                         (QUICK_SIZES if quick else FULL_SIZES))
    sparse = _parse_sizes("calibrate", "sparse_sizes", sparse_sizes if sparse_sizes is not None else
                          (QUICK_SPARSE if quick else FULL_SPARSE))
    if repeats is None:
        repeats = QUICK_REPEATS if quick else FULL_REPEATS
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ScenarioError(f"The 'repeats' parameter of calibrate must be a positive int; got {repeats!r}")
    avail = _mem_available()
    if avail is not None:
        fits = list(dense)       # all dense regions stay mapped; a child copies the largest one
        while fits and sum(fits) + max(fits) + min(max(fits), FAULT_MAX) + 256 * MiB > avail:
            fits.pop()
        if len(fits) < len(dense) and progress:
            print(f"calibrate: skipping {', '.join(_fmt_size(b) for b in dense if b not in fits)}: "
                  f"only {_fmt_size(avail)} of memory available", file=sys.stderr)
        dense = fits
    if len(dense) < 2:
        raise ScenarioError(f"calibrate needs at least two dense sizes that fit in memory; got {sizes!r}")
    fault_max = FAULT_MAX // 4 if quick else FAULT_MAX
    faults = [b for b in dense if b <= fault_max] or dense[:1]
    plan = _plan(dense, sparse, faults, repeats, memcpy_bytes=(32 if quick else 64) * MiB,
                 fds=_fd_counts(QUICK_FDS if quick else FULL_FDS))
    if progress:
        print(f"calibrate: measuring this host (dense {', '.join(_fmt_size(b) for b in dense)}; "
              f"{repeats} repeats + {WARMUP} warm-up)", file=sys.stderr, flush=True)
    samples, info = _run_worker(plan, progress, timeout)
    model, report = _fit(samples, info, plan, _host())
    report.attrs["elapsed_s"] = time.perf_counter() - t0
    return model, report


def measure(sizes, repeats=FULL_REPEATS, progress=False, timeout=600.0):
    """Fork latency and COW time on real processes at `sizes`, as calibrate measures them.

    Returns one row per size: pages, tables, fork_ns (wall-clock median over
    both PTE states), fork_writable_ns, fork_wrprotected_ns, cow_ns (the child's
    wall-clock time to write every page), cow_per_page_ns, and fork_cpu_ns and
    cow_cpu_ns (the same on CPU time). For checking a CostModel at sizes it was
    not calibrated on (see predict()).
    """
    import pandas as pd

    _check_platform()
    dense = _parse_sizes("measure", "sizes", sizes)
    plan = _plan(dense, [], [], repeats, memcpy_bytes=PAGE)
    samples, info = _run_worker(plan, progress, timeout)
    df = pd.DataFrame(samples)
    df = df[~df["warmup"] & df["what"].isin(["fork_w", "fork_a", "cow"])]
    rows = []
    for (p, t), g in df.groupby(["pages", "tables"]):
        fw, fa, cw = (g.loc[g["what"] == w, "ns"] for w in ("fork_w", "fork_a", "cow"))
        fwc, fac, cwc = (g.loc[g["what"] == w, "cpu_ns"] for w in ("fork_w", "fork_a", "cow"))
        rows.append({"size_mib": p * PAGE / MiB, "pages": p, "tables": t,
                     "fork_ns": float(pd.concat([fw, fa]).median()), "fork_writable_ns": float(fw.median()),
                     "fork_wrprotected_ns": float(fa.median()), "cow_ns": float(cw.median()),
                     "cow_per_page_ns": float(cw.median()) / p,
                     "fork_cpu_ns": float(pd.concat([fwc, fac]).median()), "cow_cpu_ns": float(cwc.median())})
    return pd.DataFrame(rows)


def measure_fds(counts, repeats=FULL_REPEATS, progress=False, timeout=600.0):
    """Fork latency of a minimal Python + NumPy process (calibrate's worker) holding
    `counts` extra descriptors open (distinct open files), as calibrate measures it.

    Returns one row per count (0 included): fds, fork_ns and fork_cpu_ns (medians
    over the rounds), with q25/q75 of the wall clock. Counts above RLIMIT_NOFILE's
    hard limit are capped to it (the `fds` column says what was measured).
    """
    _check_platform()
    plan = _plan([], [], [], repeats, memcpy_bytes=PAGE, fds=_fd_counts(counts))
    samples, _ = _run_worker(plan, progress, timeout)
    _, med = _medians(samples)
    med = med[med["what"].isin(["fork_base", "fork_fds"])].rename(columns={"pages": "fds"})
    out = med[["fds", "median_ns", "median_cpu_ns", "q25_ns", "q75_ns", "n"]].rename(
        columns={"median_ns": "fork_ns", "median_cpu_ns": "fork_cpu_ns"})
    return out.sort_values("fds").reset_index(drop=True).astype({"fds": np.int64})


def predict(model, measured):
    """Add the model's predictions and their % errors to a measure() table."""
    out = measured.copy()
    out["fork_pred_ns"] = model.fork_ns(out["pages"], out["tables"])
    out["fork_err_pct"] = (out["fork_pred_ns"] / out["fork_ns"] - 1) * 100
    out["cow_pred_ns"] = model.cow_copy_ns * out["pages"]
    out["cow_err_pct"] = (out["cow_pred_ns"] / out["cow_ns"] - 1) * 100
    return out


def format_report(report) -> str:
    """The report as an aligned text table (NaN shown blank)."""
    def num(v, fmt, unit=""):
        return "" if v != v else format(v, fmt) + unit

    w = max(len(str(n)) for n in report.index)
    lines = [f"{'parameter':<{w}}  {'ns':>11}  {'(wall ns)':>11}  {'points':>6}  {'R^2':>7}  {'max dev':>7}  how"]
    for name, r in report.iterrows():
        lines.append(f"{name:<{w}}  {num(r['value_ns'], ',.1f'):>11}  {num(r['wall_ns'], ',.1f'):>11}  "
                     f"{int(r['points']):>6}  {num(r['r2'], '.4f'):>7}  {num(r['max_dev_pct'], '.1f', ' %'):>7}  "
                     f"{r['how']}")
    return "\n".join(lines)


def _warnings(report) -> list[str]:
    from ..costs import COST_FIELDS

    out = []
    huge = report.attrs["info"].get("anon_huge_kib")
    if huge:
        out.append(f"warning: {huge} KiB of the measured memory was backed by transparent huge pages despite "
                   f"MADV_NOHUGEPAGE: the per-page numbers are not per 4 KiB page")
    if report.attrs["wall_over_cpu"] > 1.15:
        out.append("warning: the machine was busy while calibrating (the measuring process waited for a CPU, "
                   "and other work slows the caches and memory it shares): rerun on a quiet machine")
    for name in COST_FIELDS:
        r2, dev = report.loc[name, "r2"], report.loc[name, "max_dev_pct"]
        if r2 == r2 and (r2 < 0.9 or dev > 50):
            out.append(f"warning: {name}: the sizes disagree (R^2 {r2:.3f}, one size {dev:.0f} % off the fit); "
                       f"see --csv for the per-size medians")
    return out


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="cowbench calibrate",
        description="Measure this host's fork latency and fault costs with real processes and write the "
                    "cost model (TOML) that cowbench's time estimates use.")
    parser.add_argument("--out", required=True, help="TOML file to write (atomically)")
    parser.add_argument("--quick", action="store_true", help="smaller regions, fewer rounds (~5 s instead of ~20 s)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds after the warm-up (default 9, quick 5)")
    parser.add_argument("--csv", default=None, help="also write the per-size medians to this CSV file")
    args = parser.parse_args(argv)
    from ..fileio import atomic_write

    model, report = calibrate(repeats=args.repeats, quick=args.quick, progress=True)
    table = format_report(report)
    busy = report.attrs["wall_over_cpu"]
    busy_line = (f"wall / CPU time of all timed steps: {busy:.2f} (1.00: the measuring process never "
                 f"waited for a CPU)")
    notes = [busy_line] + _warnings(report)
    print(table)
    print("\n".join(notes))
    elapsed = report.attrs["elapsed_s"]
    model.save(args.out, comments=[f"written by `cowbench calibrate{' --quick' if args.quick else ''}` "
                                   f"in {elapsed:.1f} s", "", "fit quality (medians over repeats):", table,
                                   *notes, ""])
    print(f"wrote {args.out}")
    if args.csv:
        med = report.attrs["measurements"]
        atomic_write(args.csv, lambda tmp: med.to_csv(tmp, index=False))
        print(f"wrote {args.csv}")
    print(f"elapsed {elapsed:.1f} s")
    return 0


if __name__ == _WORKER_NAME:
    _worker(json.loads(sys.argv[2]))
elif __name__ == "__main__":
    sys.exit(main())
