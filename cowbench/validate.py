"""`cowbench validate`: the simulator against the real kernel, scenario by scenario.

Every scenario below is a small `cb.Scenario` (about 4 MiB) that exercises one
rule of DESIGN.md's "Linux semantics". `validate()` runs each one twice: by the
simulator (`cb.simulate(sc, policy="cow")`) and as real processes on this
kernel (`cowbench.kernel.run_real`), and compares, process by process, the
columns both sides measure. The kernel is the ground truth: a MISMATCH means
the simulator is wrong (or the scenario asks the kernel something run_real
cannot emulate; see cowbench/kernel.py).

    cowbench validate                 # all scenarios, exit status 1 on any mismatch
    cowbench validate --list
    cowbench validate chain_root_mid_leaf shared_child_writes -v
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import pandas as pd

from .scenario import Scenario

__all__ = ["SCENARIOS", "COMPARED", "validate", "main"]

N = 1000            # pages per region: 4 MB with 4 KiB pages, not a 2 MiB multiple
K = 300             # pages a child writes
PHYS = "256MiB"

# Columns compared between simulator and kernel. The last four need PFNs
# (root); without them the kernel side is NaN and they are not compared.
COMPARED = ["state", "reason", "minor_faults", "rss_pages", "pss_pages", "uss_pages", "shared_pages",
            "zero_fills", "cow_copies", "cow_reuses", "fork_ptes_copied"]


def _sc() -> Scenario:
    return Scenario(phys_mem=PHYS, page_size=4096)


# --------------------------------------------------------------------------- scenarios
def zero_page_read_then_write() -> Scenario:
    """Reading never-written private memory maps the zero page (N faults, RSS
    unchanged); writing it afterwards takes N more faults and N zero fills."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", N * 4096)
    only_read = root.mmap("only_read", N * 4096)
    root.read(heap)
    root.read(only_read)                # stays out of RSS
    root.write(heap)
    root.read(heap)                     # present: no faults
    return sc


def cow_child_writes_k() -> Scenario:
    """fork, the child writes K of N shared pages: K faults, K copies; its private
    pages grow by K, its shared pages are N - K."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", N * 4096)
    root.write(heap)
    kid = root.fork("kid")
    kid.write(heap, pages=range(0, K))
    return sc


def reuse_after_child_exit() -> Scenario:
    """After the child exits the parent's write-protected pages are mapped once:
    writing all N takes N faults, N reuses, no copies."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", N * 4096)
    root.write(heap)
    kid = root.fork("kid")
    kid.write(heap, pages=range(0, K))
    kid.exit()
    root.write(heap)
    return sc


def chain_root_mid_leaf() -> Scenario:
    """root -> mid -> leaf: leaf writes all (N copies), exits; mid writes all (N
    copies, still shared with root), exits; root writes all (N reuses)."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", N * 4096)
    root.write(heap)
    mid = root.fork("mid")
    leaf = mid.fork("leaf")
    leaf.write(heap)
    leaf.exit()
    mid.write(heap)
    mid.exit()
    root.write(heap)
    return sc


def zero_page_fork() -> Scenario:
    """Zero-page PTEs at fork. `untouched` was only ever read (no anonymous page,
    so the kernel's VMA has no anon_vma and fork copies none of its PTEs: the
    child's reads fault again); `mixed` had page 0 written, so fork copies all its
    PTEs, zero-page ones included (the child's reads cost nothing)."""
    sc = _sc()
    root = sc.spawn("root")
    untouched = root.mmap("untouched", N * 4096)
    mixed = root.mmap("mixed", N * 4096)
    root.read(untouched)
    root.write(mixed, pages=range(0, 1))
    root.read(mixed, pages=range(1, N))
    kid = root.fork("kid")
    kid.read(untouched)
    kid.read(mixed)
    kid.write(untouched, pages=range(0, K))
    kid.write(mixed, pages=range(1, K))
    root.write(untouched, pages=range(0, K))
    return sc


def shared_child_writes() -> Scenario:
    """MAP_SHARED: fork copies no PTEs; the child's first write to each page is one
    minor fault, no copies; both see the same frames (PSS halves)."""
    sc = _sc()
    root = sc.spawn("root")
    shm = root.mmap("shm", N * 4096, shared=True)
    root.write(shm)
    kid = root.fork("kid")
    kid.write(shm)
    kid.write(shm)                      # writable already: no faults
    return sc


def shared_child_reads() -> Scenario:
    """MAP_SHARED read faults: the child reads pages the parent populated (the
    kernel's fault-around maps up to 16 cached neighbours per read fault), then
    writes them (a read fault on a shared writable mapping maps it writable:
    no more faults)."""
    sc = _sc()
    root = sc.spawn("root")
    shm = root.mmap("shm", N * 4096, shared=True)
    root.write(shm, pages=range(0, N // 2))
    kid = root.fork("kid")
    kid.read(shm)                       # first half: in the page cache; second half: new frames
    kid.write(shm)
    return sc


def dontfork_segv() -> Scenario:
    """MADV_DONTFORK: the region is absent in the child; touching it kills the
    child with SIGSEGV. The child's other memory is intact up to its death."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", N * 4096)
    secret = root.mmap("secret", N * 4096)
    root.write(heap)
    root.write(secret)
    root.madvise(secret, "dontfork")
    kid = root.fork("kid")
    kid.write(heap, pages=range(0, K))
    kid.read(secret, pages=range(0, 1))
    kid2 = root.fork("kid2")            # still dontfork: kid2 is fine until it touches
    kid2.read(heap)
    root.madvise(secret, "dofork")
    kid3 = root.fork("kid3")
    kid3.read(secret)                   # inherited again: copied PTEs, no faults
    return sc


def wipeonfork_grandchild() -> Scenario:
    """MADV_WIPEONFORK: the child sees zero-filled memory (reads map the zero page:
    N faults, RSS 0); the flag is inherited, so the grandchild sees zeroes too;
    MADV_KEEPONFORK undoes it."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", N * 4096)
    root.write(heap)
    root.madvise(heap, "wipeonfork")
    kid = root.fork("kid")
    kid.read(heap)
    kid.write(heap, pages=range(0, K))
    grandkid = kid.fork("grandkid")
    grandkid.read(heap)
    root.madvise(heap, "keeponfork")
    kid2 = root.fork("kid2")
    kid2.read(heap)
    return sc


def readonly_write_segv() -> Scenario:
    """A write to a read-only region kills the writer with SIGSEGV; nothing is
    copied. Both a region mapped read-only and one mprotect'ed read-only after
    being written."""
    sc = _sc()
    root = sc.spawn("root")
    ro = root.mmap("ro", N * 4096, prot="r")
    heap = root.mmap("heap", N * 4096)
    root.write(heap)
    root.mprotect(heap, "r")
    kid = root.fork("kid")
    kid.read(heap)
    kid.write(heap, pages=range(0, 1))
    kid2 = root.fork("kid2")
    kid2.write(ro, pages=range(5, 6))
    root.read(ro)                       # zero page: N faults, RSS unchanged
    return sc


def vfork_exec() -> Scenario:
    """vfork: the child borrows the parent's address space (its touches are the
    parent's memory, no copies), the parent waits; after the child's exec the
    parent's pages are still writable: rewriting them costs nothing."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", N * 4096)
    root.write(heap, pages=range(0, N // 2))
    kid = root.vfork("kid")
    kid.write(heap, pages=range(0, K))             # already writable: no faults
    kid.read(heap, pages=range(N // 2, N))         # zero page, in the shared mm
    kid.exec()
    own = kid.mmap("own", 100 * 4096)
    kid.write(own)
    root.write(heap)                               # 0 faults for the first half, zero fills for the rest
    kid2 = root.vfork("kid2")
    kid2.exit()
    return sc


def pss_three_sharers() -> Scenario:
    """PSS: a page mapped by n processes adds 1/n to each one's PSS; USS counts the
    pages mapped only by that process."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", N * 4096)
    root.write(heap)
    a = root.fork("a")
    b = root.fork("b")
    a.write(heap, pages=range(0, K))
    b.write(heap, pages=range(K // 2, K + K // 2))
    return sc


def exec_after_fork() -> Scenario:
    """exec releases the child's copy of the address space: the parent's pages go
    back to one mapping, so the parent's writes are reuses, not copies."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", N * 4096)
    root.write(heap)
    kid = root.fork("kid")
    kid.write(heap, pages=range(0, K))
    kid.exec()
    own = kid.mmap("own", 200 * 4096)
    kid.write(own)
    root.write(heap)
    return sc


def mprotect_private() -> Scenario:
    """mprotect r then rw: exclusively owned pages become writable again (no
    faults); pages write-protected by a fork are not (one fault each)."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", N * 4096)
    root.write(heap)
    root.mprotect(heap, "r")
    root.mprotect(heap, "rw")
    root.write(heap)                    # 0 faults
    kid = root.fork("kid")
    kid.exit()
    root.mprotect(heap, "r")
    root.mprotect(heap, "rw")
    root.write(heap)                    # N faults, N reuses (lost exclusivity at fork)
    return sc


def mprotect_shared() -> Scenario:
    """mprotect r then rw on a MAP_SHARED anonymous region (shmem needs no write
    notification, so its PTEs become writable again at once)."""
    sc = _sc()
    root = sc.spawn("root")
    shm = root.mmap("shm", N * 4096, shared=True)
    root.write(shm)
    root.mprotect(shm, "r")
    root.mprotect(shm, "rw")
    root.write(shm)
    return sc


def munmap_after_fork() -> Scenario:
    """The parent unmaps its copy after fork: the child's pages are mapped once
    again, so its writes are reuses."""
    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", N * 4096)
    root.write(heap)
    kid = root.fork("kid")
    root.munmap(heap)
    kid.write(heap)
    return sc


def cow_random_pattern() -> Scenario:
    """Touch patterns: the child writes 2000 uniformly drawn pages (repeats
    included) and reads a zipf sample; only the first write to each distinct
    page faults (and copies)."""
    from .patterns import uniform, zipf

    sc = _sc()
    root = sc.spawn("root")
    heap = root.mmap("heap", N * 4096)
    root.write(heap, pages=np.arange(0, N, 2))        # even pages: frames; odd pages: none yet
    kid = root.fork("kid")
    kid.write(heap, pages=uniform(count=2000, seed=7))
    kid.read(heap, pages=zipf(count=3000, s=1.1, seed=3))
    return sc


SCENARIOS = {f.__name__: f for f in (
    zero_page_read_then_write, cow_child_writes_k, reuse_after_child_exit, chain_root_mid_leaf,
    zero_page_fork, shared_child_writes, shared_child_reads, dontfork_segv, wipeonfork_grandchild,
    readonly_write_segv, vfork_exec, pss_three_sharers, exec_after_fork, mprotect_private,
    mprotect_shared, munmap_after_fork, cow_random_pattern,
)}


# --------------------------------------------------------------------------- comparison
def _same(col: str, a, b, pss_tol: float) -> bool:
    if col == "state":
        norm = lambda v: "running" if str(v) == "suspended" else str(v)      # noqa: E731
        return norm(a) == norm(b)
    if col == "reason":
        return str(a) == str(b)
    if b is None or (isinstance(b, float) and math.isnan(b)):
        return True                     # not measurable on this host (no PFNs)
    if col == "pss_pages":
        return abs(float(a) - float(b)) <= pss_tol
    return int(a) == int(b)


def _resolve(scenarios) -> list[tuple[str, Scenario]]:
    if scenarios is None:
        scenarios = list(SCENARIOS)
    if isinstance(scenarios, (str, Scenario)) or callable(scenarios):
        scenarios = [scenarios]
    out = []
    for s in scenarios:
        if isinstance(s, str):
            if s not in SCENARIOS:
                raise KeyError(f"unknown validation scenario {s!r}; known: {', '.join(SCENARIOS)}")
            out.append((s, SCENARIOS[s]()))
        elif isinstance(s, Scenario):
            out.append((f"scenario{len(out)}", s))
        elif isinstance(s, tuple):
            out.append((s[0], s[1]() if callable(s[1]) else s[1]))
        elif callable(s):
            out.append((s.__name__, s()))
        else:
            raise TypeError(f"validate: cannot run {s!r}")
    return out


def validate(scenarios=None) -> pd.DataFrame:
    """Run scenarios in the simulator and as real processes; one row per (scenario, process).

    scenarios: None (all of SCENARIOS), or a list of names, builder functions,
    (name, Scenario) pairs or Scenarios. Columns: scenario, pid, name, then
    sim_<col> and kernel_<col> for every column in COMPARED, `match` (bool) and
    `mismatches` (the columns that differ). `df.attrs["pfn_visible"]` says
    whether the kernel side could read PFNs (root).
    """
    from . import engine
    from .kernel import run_real

    rows = []
    pfn_visible = True
    for name, sc in _resolve(scenarios):
        sim = engine.simulate(sc, policy="cow").processes.set_index("pid")
        real = run_real(sc).set_index("pid")
        pfn_visible &= bool(real.attrs.get("pfn_visible", True))
        tol = 1e-6 if real.attrs.get("pfn_visible", True) else 1.0
        for pid in sim.index:
            row = {"scenario": name, "pid": int(pid), "name": sim.at[pid, "name"]}
            bad = []
            for col in COMPARED:
                a = sim.at[pid, col] if col in sim.columns else None
                b = real.at[pid, col]
                row[f"sim_{col}"], row[f"kernel_{col}"] = a, b
                if a is not None and not _same(col, a, b, tol):
                    bad.append(col)
            row["match"] = not bad
            row["mismatches"] = ",".join(bad)
            rows.append(row)
    df = pd.DataFrame(rows)
    df.attrs["pfn_visible"] = pfn_visible
    return df


# --------------------------------------------------------------------------- printing
def _num(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "?"
    if isinstance(v, (float, np.floating)) and float(v) != int(v):
        return f"{float(v):.2f}"
    return str(int(v))


def _proc(r, side: str) -> str:
    g = lambda c: r[f"{side}_{c}"]                                       # noqa: E731
    s = (f"{r['name']}={_num(g('minor_faults'))}/{_num(g('cow_copies'))}/{_num(g('cow_reuses'))}"
         f"/{_num(g('rss_pages'))}/{_num(g('pss_pages'))}/{_num(g('uss_pages'))}")
    state = g("state")
    if state == "killed":
        s += f"!{g('reason') or 'killed'}"
    elif state == "exited":
        s += "x"
    elif state != "running":
        s += f"({state})"
    return s


def format_lines(df: pd.DataFrame) -> list[str]:
    """One line per scenario: `name  sim: ...  kernel: ...  match|MISMATCH (...)`."""
    lines = []
    groups = list(df.groupby("scenario", sort=False))
    width = max((len(n) for n, _ in groups), default=0)
    for name, g in groups:
        sim = " ".join(_proc(r, "sim") for _, r in g.iterrows())
        ker = " ".join(_proc(r, "kernel") for _, r in g.iterrows())
        ok = bool(g["match"].all())
        verdict = "match"
        if not ok:
            diffs = []
            for _, r in g[~g["match"]].iterrows():
                for c in r["mismatches"].split(","):
                    diffs.append(f"{r['name']}.{c} {_num_or(r['sim_' + c])}!={_num_or(r['kernel_' + c])}")
            verdict = "MISMATCH (" + "; ".join(diffs) + ")"
        lines.append(f"{name:<{width}}  sim: {sim}  kernel: {ker}  {verdict}")
    return lines


def _num_or(v) -> str:
    return v if isinstance(v, str) else _num(v)


def main(argv=None) -> int:
    """`cowbench validate [NAME ...] [--list] [-v] [--csv PATH]`; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="cowbench validate",
        description="Run each validation scenario in the simulator (policy cow) and as real processes on this "
                    "kernel, and compare them process by process. Per process: "
                    "name=faults/copies/reuses/rss/pss/uss (pages), x = exited, !SIG = killed.")
    parser.add_argument("names", nargs="*", help="scenarios to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and what each checks")
    parser.add_argument("-v", "--verbose", action="store_true", help="print both tables for mismatching scenarios")
    parser.add_argument("--csv", help="write the comparison table to this CSV file")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.list:
        for name, f in SCENARIOS.items():
            print(f"{name:<28} {(f.__doc__ or '').split(chr(10))[0].strip()}")
        return 0
    from .kernel import KernelUnavailable

    unknown = [n for n in args.names if n not in SCENARIOS]
    if unknown:
        print(f"cowbench validate: unknown scenario(s) {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        df = validate(args.names or None)
    except KernelUnavailable as e:
        print(f"cowbench validate: cannot run real processes here: {e}", file=sys.stderr)
        return 2
    print("per process: name=minor_faults/cow_copies/cow_reuses/rss/pss/uss pages (x exited, !SIG killed)")
    for line in format_lines(df):
        print(line)
    if not df.attrs.get("pfn_visible", True):
        print("note: PFNs are hidden (not root): copies, reuses and zero fills not compared; pss to 1 kB")
    if args.csv:
        df.to_csv(args.csv, index=False)
    bad = df.loc[~df["match"], "scenario"].unique()
    if args.verbose:
        cols = ["name"] + [f"{s}_{c}" for c in COMPARED for s in ("sim", "kernel")]
        for name in bad:
            print(f"\n{name}:")
            print(df.loc[df["scenario"] == name, cols].to_string(index=False))
    n = df["scenario"].nunique()
    print(f"{n - len(bad)}/{n} scenarios match ({time.perf_counter() - t0:.1f} s)")
    return 1 if len(bad) else 0


if __name__ == "__main__":
    sys.exit(main())
