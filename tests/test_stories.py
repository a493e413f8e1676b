"""One short story per rule of docs/semantics.md (the Linux semantics the engine reproduces).

Every story runs twice, on the jitted engine and on the reference simulator (the
`simulate` fixture of conftest.py). The expected numbers are derived from the
rule in each docstring, by hand: none was copied from a run.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import cowbench as cb

PAGE = 4096


def row(res, proc) -> pd.Series:
    df = res.processes
    return df[df["pid"] == proc.pid].iloc[0]


def check(res, proc, **expected) -> None:
    r = row(res, proc)
    got = {k: (float(r[k]) if k == "pss_pages" else (r[k] if isinstance(r[k], str) else int(r[k])))
           for k in expected}
    want = {k: (pytest.approx(v, rel=1e-12) if k == "pss_pages" else v) for k, v in expected.items()}
    assert got == want, f"{proc.name} (pid {proc.pid})"


def summary(res, key) -> int:
    return int(res.summary[key])


def machine(frames: int = 4096) -> cb.Scenario:
    return cb.Scenario(phys_mem=frames * PAGE)


# --- COW fault: copy when shared, reuse when not (do_wp_page) -----------------------

N, K = 16, 5


def _k_of_n():
    sc = machine()
    root = sc.spawn("root")
    heap = root.mmap("heap", N * PAGE)
    root.write(heap, value=1)
    kid = root.fork("kid")
    kid.write(heap, pages=range(0, K), value=2)
    return sc, root, kid, heap


def test_child_writing_k_of_n_shared_pages_copies_k(simulate):
    """After fork a child writing K of N shared pages takes K faults and K copies;
    its private pages grow by K and its shared pages drop by K."""
    sc, root, kid, heap = _k_of_n()
    res = simulate(sc, policy="cow")
    check(res, root, minor_faults=N, zero_fills=N, cow_copies=0, cow_reuses=0,
          rss_pages=N, uss_pages=K, shared_pages=N - K, pss_pages=K + (N - K) / 2, pte_pages=1)
    check(res, kid, state="running", minor_faults=K, zero_fills=0, cow_copies=K, cow_reuses=0,
          rss_pages=N, uss_pages=K, shared_pages=N - K, pss_pages=K + (N - K) / 2,
          fork_ptes_copied=N, fork_tables_copied=1, fork_pages_copied=0, pte_pages=1)
    assert summary(res, "frames_used") == N + K + 2          # and one PTE table each
    assert summary(res, "cow_copies") == K
    np.testing.assert_array_equal(res.memory(kid.pid, heap), [2] * K + [1] * (N - K))
    np.testing.assert_array_equal(res.memory(root.pid, heap), [1] * N)


def test_parent_reuses_every_page_after_the_child_exits(simulate):
    """After that child exits, the parent writing all N pages takes N faults and
    N reuses (mapcount 1), no copies. The child's row keeps its values at exit."""
    sc, root, kid, heap = _k_of_n()
    kid.exit()
    root.write(heap, value=3)
    res = simulate(sc, policy="cow")
    check(res, root, minor_faults=2 * N, zero_fills=N, cow_copies=0, cow_reuses=N,
          rss_pages=N, uss_pages=N, shared_pages=0, pss_pages=N)
    check(res, kid, state="exited", reason="", minor_faults=K, cow_copies=K,
          rss_pages=N, uss_pages=K, shared_pages=N - K, pss_pages=K + (N - K) / 2)
    assert summary(res, "frames_used") == N + 1
    assert summary(res, "peak_frames") == N + K + 2
    assert summary(res, "cow_reuses") == N
    np.testing.assert_array_equal(res.memory(root.pid, heap), [3] * N)


@pytest.mark.parametrize("first", ["child", "parent"])
def test_the_seeds_write_copy_program(simulate, first):
    """The seed's TestWriteCopyTech.c: `p = 'p'` and `number = 11` share one stack
    page; after fork the child sets p = 'c', the parent number = 14, in either
    order. Each prints what it wrote and the other variable as it was at fork: the
    first writer copies the page (wp_page_copy), the second, now its sole user,
    writes in place (wp_page_reuse). A page's value here encodes both variables."""
    def page(p, number):
        return ord(p) * 1000 + number
    sc = machine()
    parent = sc.spawn("parent")
    stack = parent.mmap("stack", PAGE)
    parent.write(stack, value=page("p", 11))
    child = parent.fork("child")
    writes = {"child": lambda: child.write(stack, value=page("c", 11)),
              "parent": lambda: parent.write(stack, value=page("p", 14))}
    writes[first]()
    writes["parent" if first == "child" else "child"]()
    res = simulate(sc, policy="cow")
    assert res.memory(child.pid, stack).tolist() == [page("c", 11)]     # p = c , number = 11
    assert res.memory(parent.pid, stack).tolist() == [page("p", 14)]    # p = p , number = 14
    second = parent if first == "child" else child
    check(res, sc.process(first), cow_copies=1, cow_reuses=0, uss_pages=1)
    check(res, second, cow_copies=0, cow_reuses=1, uss_pages=1)


def test_parent_writing_first_copies_then_the_child_reuses(simulate):
    """Whoever writes a shared page first copies it; the other one then finds
    mapcount 1 and reuses its frame in place."""
    sc = machine()
    root = sc.spawn("root")
    heap = root.mmap("heap", N * PAGE)
    root.write(heap, value=1)
    kid = root.fork("kid")
    root.write(heap, value=2)
    kid.write(heap, value=3)
    res = simulate(sc, policy="cow")
    check(res, root, minor_faults=2 * N, cow_copies=N, cow_reuses=0, uss_pages=N)
    check(res, kid, minor_faults=N, cow_copies=0, cow_reuses=N, zero_fills=0, uss_pages=N)
    assert summary(res, "frames_used") == 2 * N + 2
    np.testing.assert_array_equal(res.memory(root.pid, heap), [2] * N)
    np.testing.assert_array_equal(res.memory(kid.pid, heap), [3] * N)


def test_chain_root_mid_leaf(simulate):
    """root -> mid -> leaf over N pages: leaf writes all (N copies), exits; mid
    writes all (N copies: still shared with root), exits; root writes all (N reuses)."""
    n = 12
    sc = machine()
    root = sc.spawn("root")
    heap = root.mmap("heap", n * PAGE)
    root.write(heap)
    mid = root.fork("mid")
    leaf = mid.fork("leaf")
    leaf.write(heap)
    leaf.exit()
    mid.write(heap)
    mid.exit()
    root.write(heap)
    res = simulate(sc, policy="cow")
    check(res, leaf, state="exited", minor_faults=n, cow_copies=n, cow_reuses=0, fork_ptes_copied=n)
    check(res, mid, state="exited", minor_faults=n, cow_copies=n, cow_reuses=0, fork_ptes_copied=n)
    check(res, root, state="running", minor_faults=2 * n, zero_fills=n, cow_copies=0, cow_reuses=n,
          rss_pages=n, uss_pages=n)
    assert summary(res, "cow_copies") == 2 * n
    assert summary(res, "cow_reuses") == n
    assert summary(res, "minor_faults") == 4 * n
    assert summary(res, "frames_used") == n + 1
    assert summary(res, "peak_frames") == 2 * n + 3             # leaf copying, with three tables


def test_reading_after_fork_takes_no_fault(simulate):
    """Rule 2: a read of a present PTE is free, write-protected or not."""
    sc = machine()
    root = sc.spawn("root")
    heap = root.mmap("heap", N * PAGE)
    root.write(heap, value=4)
    kid = root.fork("kid")
    kid.read(heap)
    root.read(heap)
    res = simulate(sc, policy="cow")
    check(res, kid, minor_faults=0, rss_pages=N, shared_pages=N, uss_pages=0)
    check(res, root, minor_faults=N)
    np.testing.assert_array_equal(res.memory(kid.pid, heap), [4] * N)


# --- the zero page -------------------------------------------------------------------

def test_reading_untouched_memory_maps_the_zero_page(simulate):
    """Rule 3: one fault per page, RSS unchanged, no frame allocated; reading
    again is free; the page table is still built."""
    n = 8
    sc = machine()
    p = sc.spawn("p")
    heap = p.mmap("heap", n * PAGE)
    p.read(heap)
    p.read(heap)
    res = simulate(sc)
    check(res, p, minor_faults=n, zero_fills=0, rss_pages=0, pss_pages=0.0, uss_pages=0, pte_pages=1)
    assert summary(res, "frames_used") == 1                     # the table: reading builds it too
    np.testing.assert_array_equal(res.memory(p.pid, heap), np.zeros(n))


def test_writing_a_zero_page_mapping_takes_a_second_fault(simulate):
    """Rule 7, zero page: writing after the read is one more fault per page, a
    zero fill, no COW copy; RSS grows by the pages written."""
    n = 8
    sc = machine()
    p = sc.spawn("p")
    heap = p.mmap("heap", n * PAGE)
    p.read(heap)
    p.write(heap, pages=range(0, n, 2), value=6)
    res = simulate(sc)
    check(res, p, minor_faults=n + n // 2, zero_fills=n // 2, cow_copies=0, cow_reuses=0,
          rss_pages=n // 2, uss_pages=n // 2)
    assert summary(res, "frames_used") == n // 2 + 1
    np.testing.assert_array_equal(res.memory(p.pid, heap), [6, 0] * (n // 2))


@pytest.mark.parametrize("policy", ["cow", "eager"])
def test_a_region_only_ever_read_is_not_copied_at_fork(simulate, policy):
    """vma_needs_copy: a private region that never allocated an anonymous page
    has no anon_vma, so fork copies none of its (zero-page) PTEs; the child's
    first write to each page is a fault and a zero fill, not a COW copy."""
    n = 6
    sc = machine()
    root = sc.spawn("root")
    bss = root.mmap("bss", n * PAGE)
    root.read(bss)
    kid = root.fork("kid")
    res = simulate(sc, policy=policy)
    check(res, kid, fork_ptes_copied=0, fork_tables_copied=0, fork_pages_copied=0, rss_pages=0, pte_pages=0)
    kid.write(bss, value=9)
    res = simulate(sc, policy=policy)
    check(res, kid, minor_faults=n, zero_fills=n, cow_copies=0, cow_reuses=0, rss_pages=n, uss_pages=n,
          pte_pages=1)
    check(res, root, rss_pages=0, minor_faults=n, pte_pages=1)
    assert summary(res, "frames_used") == n + 2


@pytest.mark.parametrize("policy", ["cow", "eager"])
def test_zero_page_ptes_are_copied_at_fork_but_no_frame(simulate, policy):
    """Once one write gave the region an anon_vma, fork copies all its present
    PTEs, zero-page ones included (fork_ptes_copied counts them) but allocates
    nothing for those: the child's first write to one is a zero fill."""
    n = 6
    sc = machine()
    root = sc.spawn("root")
    bss = root.mmap("bss", n * PAGE)
    root.write(bss, pages=[0], value=1)
    root.read(bss)
    kid = root.fork("kid")
    kid.write(bss, pages=range(1, n), value=9)
    res = simulate(sc, policy=policy)
    check(res, kid, fork_ptes_copied=n, fork_tables_copied=1, fork_pages_copied=1 if policy == "eager" else 0,
          minor_faults=n - 1, zero_fills=n - 1, cow_copies=0, cow_reuses=0, rss_pages=n,
          uss_pages=n if policy == "eager" else n - 1)
    check(res, root, rss_pages=1, minor_faults=n)
    assert summary(res, "frames_used") == (n + 3 if policy == "eager" else n + 2)
    np.testing.assert_array_equal(res.memory(kid.pid, bss), [1] + [9] * (n - 1))


def test_without_the_zero_page_a_read_allocates(simulate):
    """zero_page=False: a read fault allocates a zeroed frame (a zero fill). As
    Linux's do_anonymous_page does then, the new PTE is writable in a writable
    VMA, so a later write takes no fault. (docs/semantics.md does not spell out
    the W bit of this case; this is the kernel's behaviour.) The allocation
    gives the region its anon_vma, so fork copies it."""
    n = 5
    sc = machine()
    p = sc.spawn("p")
    heap = p.mmap("heap", n * PAGE)
    p.read(heap)
    res_read = simulate(sc, zero_page=False)
    check(res_read, p, minor_faults=n, zero_fills=n, rss_pages=n, uss_pages=n)
    assert summary(res_read, "frames_used") == n + 1
    p.write(heap, value=2)
    kid = p.fork("kid")
    res = simulate(sc, zero_page=False)
    check(res, p, minor_faults=n, zero_fills=n, cow_reuses=0, rss_pages=n)
    check(res, kid, fork_ptes_copied=n, rss_pages=n, shared_pages=n)
    np.testing.assert_array_equal(res.memory(kid.pid, heap), [2] * n)


# --- MAP_SHARED --------------------------------------------------------------------

@pytest.mark.parametrize("policy", ["cow", "eager"])
def test_shared_mapping_fork_copies_nothing_and_the_child_sees_the_parents_writes(simulate, policy):
    """Rule 4 and vma_needs_copy: fork copies no PTE of a shared region; the
    child's first read maps every cached page of its 16-page block (fault
    around): one minor fault for all 6 pages, no copies, no zero fills (the
    page cache has the frames), and both see each other's writes. A read fault
    on a shared writable mapping installs writable PTEs: the writes are free."""
    n = 6
    sc = machine()
    root = sc.spawn("root")
    shm = root.mmap("shm", n * PAGE, shared=True)
    root.write(shm, value=7)
    kid = root.fork("kid")
    kid.read(shm)
    kid.write(shm, pages=[0, 1], value=9)
    root.write(shm, pages=[2], value=11)
    res = simulate(sc, policy=policy)
    check(res, root, minor_faults=n, zero_fills=n, cow_copies=0, rss_pages=n, uss_pages=0,
          shared_pages=n, pss_pages=n / 2)
    check(res, kid, minor_faults=1, zero_fills=0, cow_copies=0, cow_reuses=0, fork_ptes_copied=0,
          fork_tables_copied=0, fork_pages_copied=0, rss_pages=n, uss_pages=0, shared_pages=n,
          pss_pages=n / 2, pte_pages=1)
    assert summary(res, "frames_used") == n + 2
    expected = [9, 9, 11] + [7] * (n - 3)
    np.testing.assert_array_equal(res.memory(root.pid, shm), expected)
    np.testing.assert_array_equal(res.memory(kid.pid, shm), expected)


def test_shared_mapping_child_writing_first(simulate):
    """A child writing a shared page it never touched: one fault per page (a
    write fault maps no neighbours), no copy."""
    n = 4
    sc = machine()
    root = sc.spawn("root")
    shm = root.mmap("shm", n * PAGE, shared=True)
    root.write(shm, value=1)
    kid = root.fork("kid")
    kid.write(shm, value=2)
    res = simulate(sc, policy="cow")
    check(res, kid, minor_faults=n, cow_copies=0, zero_fills=0, pte_pages=1)
    check(res, root, pte_pages=1)
    np.testing.assert_array_equal(res.memory(root.pid, shm), [2] * n)


def test_fault_around_maps_before_the_faulting_page_is_allocated(simulate):
    """Rule 4 order (do_read_fault: do_fault_around, then __do_fault): the
    cached neighbours are mapped before the page itself is allocated, so when
    that allocation finds no frame they already count in the faulting
    process's RSS, and so in its oom_badness. 18 frames, 17 allocatable: 10
    page-cache pages, q's 5 pages + table, p's new table = 17; p's page 10
    finds none. p scores 10 + 1 > q's 5 + 1: p dies, with 10 pages mapped."""
    sc = machine(18)
    p = sc.spawn("p")
    shm = p.mmap("shm", 16 * PAGE, shared=True)
    kid = p.fork("kid")
    kid.write(shm, pages=range(10))
    kid.exit()                              # the page cache stays: p maps shm
    q = sc.spawn("q")
    heap = q.mmap("heap", 5 * PAGE)
    q.write(heap)
    p.read(shm, pages=[10])
    res = simulate(sc, oom="largest")
    check(res, p, state="killed", reason="OOM", minor_faults=0, rss_pages=10, pte_pages=1)
    check(res, q, state="running", rss_pages=5)
    assert summary(res, "frames_used") == 5 + 1


def test_shared_page_cache_lives_while_any_mm_maps_the_region(simulate):
    """Release: a shared region's frames are freed when its mapping count
    reaches 0, not when its PTEs are gone: after the parent's munmap the child
    still maps it (with no PTE) and the frames stay."""
    n = 5
    sc = machine()
    root = sc.spawn("root")
    shm = root.mmap("shm", n * PAGE, shared=True)
    root.write(shm, value=3)
    kid = root.fork("kid")
    root.munmap(shm)
    res = simulate(sc)
    assert summary(res, "frames_used") == n
    check(res, root, rss_pages=0, pte_pages=0)
    check(res, kid, rss_pages=0, pte_pages=0)
    kid.read(shm)
    res = simulate(sc)
    np.testing.assert_array_equal(res.memory(kid.pid, shm), [3] * n)
    check(res, kid, minor_faults=1, zero_fills=0, rss_pages=n, uss_pages=n)
    kid.exit()
    res = simulate(sc)
    assert summary(res, "frames_used") == 0


# --- madvise: dontfork, wipeonfork -------------------------------------------------------

@pytest.mark.parametrize("how", ["mmap", "madvise"])
def test_dontfork_region_is_absent_in_the_child(simulate, how):
    """dontfork: the child does not get the region; touching it kills the child
    with SIGSEGV, and nothing is counted. Its later ops are skipped. Other
    regions are inherited as usual."""
    n = 4
    sc = machine()
    root = sc.spawn("root")
    if how == "mmap":
        buf = root.mmap("buf", n * PAGE, on_fork="dontfork")
    else:
        buf = root.mmap("buf", n * PAGE)
        root.madvise(buf, "dontfork")
    other = root.mmap("other", 2 * PAGE)
    root.write(buf)
    root.write(other)
    kid = root.fork("kid")
    kid.read(buf, pages=[0])
    kid.write(other)                      # skipped: kid is dead
    res = simulate(sc, policy="cow")
    check(res, kid, state="killed", reason="SIGSEGV", minor_faults=0, cow_copies=0,
          fork_ptes_copied=2, fork_tables_copied=1, rss_pages=2, shared_pages=2, pte_pages=1)
    check(res, root, state="running", minor_faults=n + 2, rss_pages=n + 2, uss_pages=n + 2)
    assert summary(res, "frames_used") == n + 2 + 2             # and root's two tables


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("how", ["mmap", "madvise"])
def test_a_child_cannot_munmap_the_dontfork_region_it_never_got(shared, how):
    """A dontfork region is absent from the child, and the builder knows it
    (whether the flag came with mmap or with madvise): munmap there names the
    region and the process instead of reaching the engine."""
    sc = machine()
    root = sc.spawn("root")
    buf = root.mmap("buf", 2 * PAGE, shared=shared, on_fork="dontfork" if how == "mmap" else "copy")
    if how == "madvise":
        root.madvise(buf, "dontfork")
    kid = root.fork("kid")
    with pytest.raises(cb.ScenarioError, match="munmap: region 'buf' is not mapped in process 'kid'"):
        kid.munmap(buf)
    root.munmap(buf)                        # the parent still has it


def test_dofork_undoes_dontfork(simulate):
    n = 4
    sc = machine()
    root = sc.spawn("root")
    buf = root.mmap("buf", n * PAGE, on_fork="dontfork")
    root.write(buf, value=5)
    root.madvise(buf, "dofork")
    kid = root.fork("kid")
    kid.read(buf)
    res = simulate(sc, policy="cow")
    check(res, kid, state="running", minor_faults=0, fork_ptes_copied=n, rss_pages=n)
    np.testing.assert_array_equal(res.memory(kid.pid, buf), [5] * n)


@pytest.mark.parametrize("how", ["mmap", "madvise"])
def test_wipeonfork_child_reads_zeros_and_grandchildren_inherit_it(simulate, how):
    """wipeonfork: the child has the region but none of its PTEs (it reads the
    zero page); the flag is inherited, so a grandchild sees zeros too; the
    parent keeps its data."""
    n = 4
    sc = machine()
    root = sc.spawn("root")
    if how == "mmap":
        seed = root.mmap("seed", n * PAGE, on_fork="wipeonfork")
    else:
        seed = root.mmap("seed", n * PAGE)
        root.madvise(seed, "wipeonfork")
    root.write(seed, value=5)
    kid = root.fork("kid")
    kid.read(seed)
    kid.write(seed, pages=[0], value=3)
    grandkid = kid.fork("grandkid")
    grandkid.read(seed)
    res = simulate(sc, policy="cow")
    check(res, kid, fork_ptes_copied=0, fork_tables_copied=0, minor_faults=n + 1, zero_fills=1,
          cow_copies=0, rss_pages=1, uss_pages=1)
    check(res, grandkid, fork_ptes_copied=0, minor_faults=n, zero_fills=0, rss_pages=0)
    check(res, root, rss_pages=n, uss_pages=n)
    np.testing.assert_array_equal(res.memory(root.pid, seed), [5] * n)
    np.testing.assert_array_equal(res.memory(kid.pid, seed), [3] + [0] * (n - 1))
    np.testing.assert_array_equal(res.memory(grandkid.pid, seed), [0] * n)


@pytest.mark.parametrize("policy", ["cow", "eager"])
def test_keeponfork_undoes_wipeonfork(simulate, policy):
    n = 4
    sc = machine()
    root = sc.spawn("root")
    seed = root.mmap("seed", n * PAGE, on_fork="wipeonfork")
    root.write(seed, value=5)
    root.madvise(seed, "keeponfork")
    kid = root.fork("kid")
    kid.read(seed)
    res = simulate(sc, policy=policy)
    check(res, kid, fork_ptes_copied=n, minor_faults=0, rss_pages=n,
          fork_pages_copied=n if policy == "eager" else 0)
    np.testing.assert_array_equal(res.memory(kid.pid, seed), [5] * n)


# --- protection ------------------------------------------------------------------------

def test_write_to_a_read_only_region_is_sigsegv(simulate):
    """Rule 1: a write to a region without w kills the process; nothing is
    copied, allocated or counted for it."""
    n = 3
    sc = machine()
    p = sc.spawn("p")
    ro = p.mmap("ro", n * PAGE, prot="r")
    p.read(ro)
    p.write(ro, pages=[0])
    res = simulate(sc)
    check(res, p, state="killed", reason="SIGSEGV", minor_faults=n, zero_fills=0, cow_copies=0, rss_pages=0)
    assert summary(res, "frames_used") == 0                     # it died: its table went with it


@pytest.mark.parametrize("prot,write", [("none", False), ("none", True), ("rx", True)])
def test_prot_none_and_rx_kill(simulate, prot, write):
    sc = machine()
    p = sc.spawn("p")
    reg = p.mmap("reg", PAGE, prot=prot)
    (p.write if write else p.read)(reg)
    res = simulate(sc)
    check(res, p, state="killed", reason="SIGSEGV", minor_faults=0)


def test_touching_an_unmapped_region_is_sigsegv(simulate):
    sc = machine()
    p = sc.spawn("p")
    heap = p.mmap("heap", 2 * PAGE)
    p.write(heap)
    p.munmap(heap)
    p.read(heap, pages=[1])
    res = simulate(sc)
    check(res, p, state="killed", reason="SIGSEGV", minor_faults=2, rss_pages=0, pte_pages=0)
    assert summary(res, "frames_used") == 0


def test_mprotect_read_only_then_write_is_sigsegv(simulate):
    sc = machine()
    p = sc.spawn("p")
    heap = p.mmap("heap", 2 * PAGE)
    p.write(heap)
    p.mprotect(heap, "r")
    p.read(heap)
    p.write(heap, pages=[1])
    res = simulate(sc)
    check(res, p, state="killed", reason="SIGSEGV", minor_faults=2, rss_pages=2)


def test_mprotect_round_trip_on_private_exclusive_pages_costs_no_fault(simulate):
    """mprotect to rw sets W again on private PTEs that have E
    (can_change_pte_writable): writing afterwards takes no fault."""
    n = 4
    sc = machine()
    p = sc.spawn("p")
    heap = p.mmap("heap", n * PAGE)
    p.write(heap, value=1)
    p.mprotect(heap, "r")
    p.mprotect(heap, "rw")
    p.write(heap, value=2)
    res = simulate(sc)
    check(res, p, state="running", minor_faults=n, zero_fills=n, cow_reuses=0)
    np.testing.assert_array_equal(res.memory(p.pid, heap), [2] * n)


def test_mprotect_rw_does_not_make_cow_shared_pages_writable(simulate):
    """After a COW fork no PTE has E, so mprotect rw leaves W clear: the child's
    writes still fault and copy."""
    n = 4
    sc = machine()
    root = sc.spawn("root")
    heap = root.mmap("heap", n * PAGE)
    root.write(heap, value=1)
    kid = root.fork("kid")
    kid.mprotect(heap, "r")
    kid.mprotect(heap, "rw")
    kid.write(heap, value=2)
    res = simulate(sc, policy="cow")
    check(res, kid, minor_faults=n, cow_copies=n)
    np.testing.assert_array_equal(res.memory(root.pid, heap), [1] * n)


def test_eager_copy_into_a_read_only_region_is_exclusive(simulate):
    """eager maps the copies E but not W in a read-only region; mprotect rw then
    makes them writable without a fault."""
    n = 4
    sc = machine()
    root = sc.spawn("root")
    heap = root.mmap("heap", n * PAGE)
    root.write(heap, value=1)
    root.mprotect(heap, "r")
    kid = root.fork("kid")
    kid.mprotect(heap, "rw")
    kid.write(heap, value=2)
    res = simulate(sc, policy="eager")
    check(res, kid, fork_pages_copied=n, minor_faults=0, cow_copies=0, uss_pages=n)
    np.testing.assert_array_equal(res.memory(root.pid, heap), [1] * n)
    np.testing.assert_array_equal(res.memory(kid.pid, heap), [2] * n)


def test_mprotect_round_trip_on_a_shared_region_costs_no_fault(simulate):
    """mprotect rw sets W on every PTE of a shared region (shmem needs no write
    notification), so after r -> rw the writes take no fault."""
    n = 4
    sc = machine()
    p = sc.spawn("p")
    shm = p.mmap("shm", n * PAGE, shared=True)
    p.write(shm, value=1)
    p.mprotect(shm, "r")
    p.read(shm)
    p.mprotect(shm, "rw")
    p.write(shm, value=2)
    res = simulate(sc)
    check(res, p, minor_faults=n, zero_fills=n, cow_copies=0, cow_reuses=0, rss_pages=n)
    np.testing.assert_array_equal(res.memory(p.pid, shm), [2] * n)


def test_read_faults_on_a_read_only_shared_region_then_mprotect_rw(simulate):
    """Rule 4 maps a read-only shared region's pages without W, one fault per
    page while the page cache is empty (fault-around finds nothing to map);
    mprotect rw makes them writable; the writes then take no fault."""
    n = 3
    sc = machine()
    p = sc.spawn("p")
    shm = p.mmap("shm", n * PAGE, shared=True, prot="r")
    p.read(shm)
    p.mprotect(shm, "rw")
    p.write(shm, value=4)
    res = simulate(sc)
    check(res, p, minor_faults=n, zero_fills=n, rss_pages=n)
    np.testing.assert_array_equal(res.memory(p.pid, shm), [4] * n)


def test_fault_around_maps_the_cached_pages_of_a_16_page_block(simulate):
    """do_fault_around: a read fault on a shared region first maps every page
    of p's aligned 16-page block that the page cache holds (clipped to the
    region), then allocates p if needed. 40 pages = blocks 0-15, 16-31, 32-39."""
    sc = machine()
    root = sc.spawn("root")
    shm = root.mmap("shm", 40 * PAGE, shared=True)
    root.write(shm, pages=range(0, 40, 2), value=5)   # the even pages are cached
    kid = root.fork("kid")
    kid.read(shm, pages=[3])        # maps evens 0..14 (8 pages), allocates 3: rss 9
    kid.read(shm, pages=[2, 4])     # already mapped: no fault
    kid.read(shm, pages=[38])       # maps 32, 34, 36, 38: one fault
    kid.read(shm, pages=[17])       # maps evens 16..30 (8) and allocates 17
    kid.write(shm, pages=[19], value=6)   # a write maps only its own page
    res = simulate(sc)
    check(res, kid, minor_faults=4, zero_fills=3, rss_pages=9 + 4 + 9 + 1, pte_pages=1)
    assert summary(res, "frames_used") == 20 + 3 + 2
    mem = np.zeros(40, dtype=np.int64)
    mem[0:40:2] = 5
    mem[19] = 6
    np.testing.assert_array_equal(res.memory(kid.pid, shm), mem)
    check(res, root, rss_pages=20, minor_faults=20)


# --- vfork --------------------------------------------------------------------------------

def test_vfork_child_borrows_the_address_space(simulate):
    """vfork: nothing copied or counted at fork; the child writes the parent's
    pages in place (present, writable: no fault) and the parent sees them."""
    n = 6
    sc = machine()
    root = sc.spawn("root")
    heap = root.mmap("heap", n * PAGE)
    root.write(heap, pages=range(0, n - 1), value=1)
    kid = root.vfork("kid")
    kid.write(heap, value=2)              # n - 1 present pages, 1 new one
    kid.exit()
    root.read(heap)
    res = simulate(sc, policy="cow")
    check(res, kid, state="exited", fork_ptes_copied=0, fork_tables_copied=0, fork_pages_copied=0,
          minor_faults=1, zero_fills=1, cow_copies=0, rss_pages=n, uss_pages=n, pte_pages=1)
    check(res, root, state="running", minor_faults=n - 1, cow_copies=0, rss_pages=n, uss_pages=n)
    assert summary(res, "frames_used") == n + 1
    assert summary(res, "cow_copies") == 0
    np.testing.assert_array_equal(res.memory(root.pid, heap), [2] * n)


@pytest.mark.parametrize("policy", ["cow", "eager"])
def test_vfork_then_exec_leaves_the_parent_alone(simulate, policy):
    """exec gives the vfork child a fresh mm and resumes the parent, whose
    memory is untouched."""
    n, m = 5, 3
    sc = machine()
    root = sc.spawn("root")
    heap = root.mmap("heap", n * PAGE)
    root.write(heap, value=1)
    kid = root.vfork("kid")
    kid.exec()
    own = kid.mmap("own", m * PAGE)
    kid.write(own, value=8)
    root.write(heap)
    res = simulate(sc, policy=policy)
    check(res, kid, state="running", minor_faults=m, zero_fills=m, fork_ptes_copied=0, fork_pages_copied=0,
          rss_pages=m, uss_pages=m, pte_pages=1)
    check(res, root, state="running", minor_faults=n, rss_pages=n, uss_pages=n)
    assert summary(res, "frames_used") == n + m + 2
    np.testing.assert_array_equal(res.memory(kid.pid, own), [8] * m)
    np.testing.assert_array_equal(res.memory(kid.pid, heap), [0] * n)


def test_vfork_child_segfault_kills_only_the_child(simulate):
    """SIGSEGV kills the process that faulted; its vfork parent resumes and the
    shared mm (the parent's) is not released."""
    n = 3
    sc = machine()
    root = sc.spawn("root")
    heap = root.mmap("heap", n * PAGE)
    root.write(heap, value=1)
    kid = root.vfork("kid")
    kid.munmap(heap)                      # unmaps it from the parent's mm too: the mm is shared
    kid.read(heap)
    kid.exit()                            # skipped: already dead
    more = root.mmap("more", PAGE)
    root.write(more, value=2)
    res = simulate(sc)
    check(res, kid, state="killed", reason="SIGSEGV", rss_pages=0)
    check(res, root, state="running", rss_pages=1, minor_faults=n + 1)
    assert summary(res, "frames_used") == 1 + 1


def test_vfork_parent_still_waiting_at_the_end_is_reported_running(simulate):
    """res.processes documents four states (running, exited, killed,
    fork_failed): a vfork parent whose child never exec'd is running."""
    sc = machine()
    root = sc.spawn("root")
    root.vfork("kid")
    res = simulate(sc)
    assert list(res.processes["state"]) == ["running", "running"]


# --- PSS, USS ------------------------------------------------------------------------------

def test_pss_splits_each_page_between_its_mappers(simulate):
    """A page mapped by n processes adds 1/n to each one's PSS; USS counts pages
    mapped only by that process."""
    n = 12
    sc = machine()
    root = sc.spawn("root")
    heap = root.mmap("heap", n * PAGE)
    root.write(heap)
    kids = [root.fork(f"kid{i}") for i in range(3)]
    res = simulate(sc, policy="cow")
    for p in [root] + kids:
        check(res, p, rss_pages=n, pss_pages=n / 4, uss_pages=0, shared_pages=n)
    kids[0].write(heap, pages=[0])
    res = simulate(sc, policy="cow")
    check(res, kids[0], rss_pages=n, uss_pages=1, shared_pages=n - 1, pss_pages=1 + (n - 1) / 4)
    for p in [root] + kids[1:]:
        check(res, p, rss_pages=n, uss_pages=0, pss_pages=(n - 1) / 4 + 1 / 3)
    assert float(res.processes["pss_pages"].sum()) == pytest.approx(n + 1)


# --- eager vs cow --------------------------------------------------------------------------

@pytest.mark.parametrize("policy", ["cow", "eager"])
def test_eager_copies_at_fork_cow_copies_on_write(simulate, policy):
    """eager copies every present private page at fork (W|E, parent unchanged),
    so later writes are free; cow copies PTEs only and pays on the writes."""
    n, m = 10, 4
    sc = machine()
    root = sc.spawn("root")
    heap = root.mmap("heap", n * PAGE)
    bss = root.mmap("bss", m * PAGE)
    root.write(heap, value=1)
    root.read(bss)
    kid = root.fork("kid")
    res = simulate(sc, policy=policy)
    # bss was only read (no anon_vma): fork copies heap's PTEs, not bss's
    if policy == "eager":
        check(res, kid, fork_pages_copied=n, fork_ptes_copied=n, fork_tables_copied=1,
              rss_pages=n, uss_pages=n, pss_pages=n, pte_pages=1)
        check(res, root, uss_pages=n, pte_pages=2)
        assert summary(res, "frames_used") == 2 * n + 3
    else:
        check(res, kid, fork_pages_copied=0, fork_ptes_copied=n, fork_tables_copied=1,
              rss_pages=n, uss_pages=0, shared_pages=n, pss_pages=n / 2, pte_pages=1)
        assert summary(res, "frames_used") == n + 3
    kid.write(heap, value=2)
    root.write(heap, value=3)
    res = simulate(sc, policy=policy)
    if policy == "eager":
        check(res, kid, minor_faults=0, cow_copies=0)
        check(res, root, minor_faults=n + m, cow_copies=0, cow_reuses=0)
        assert summary(res, "frames_used") == 2 * n + 3
    else:
        check(res, kid, minor_faults=n, cow_copies=n)
        check(res, root, minor_faults=n + m + n, cow_copies=0, cow_reuses=n)
        assert summary(res, "frames_used") == 2 * n + 3
    np.testing.assert_array_equal(res.memory(kid.pid, heap), [2] * n)
    np.testing.assert_array_equal(res.memory(root.pid, heap), [3] * n)


# Page tables take frames too: one per PTE table. In the tight machines below
# "allocatable" is frames - 1 (frame 0 is the zero page), shared by data pages
# and tables.

@pytest.mark.parametrize("frames,fits", [(22, False), (23, True)])
def test_eager_fork_without_enough_frames_fails_and_the_parent_goes_on(simulate, frames, fits):
    """eager ENOMEM: the root holds 10 pages and 1 table; the fork needs 10
    pages and 1 table. 22 frames leave 21 - 11 = 10 free: the fork fails
    (fork_failed, nothing copied, the child's ops skipped, ENOMEM counted for
    the parent) and the parent continues; 23 frames leave exactly 11."""
    sc = machine(frames)
    root = sc.spawn("root")
    heap = root.mmap("heap", 10 * PAGE)
    root.write(heap, value=1)
    kid = root.fork("kid")
    kid.write(heap, value=2)
    root.write(heap, value=3)
    res = simulate(sc, policy="eager")
    if fits:
        check(res, kid, state="running", fork_pages_copied=10, minor_faults=0, rss_pages=10, pte_pages=1)
        check(res, root, enomem=0)
        assert summary(res, "frames_used") == 22
    else:
        check(res, kid, state="fork_failed", reason="", fork_pages_copied=0, fork_ptes_copied=0,
              fork_tables_copied=0, minor_faults=0, rss_pages=0, pss_pages=0.0, pte_pages=0)
        check(res, root, enomem=1)
        assert summary(res, "frames_used") == 11
    check(res, root, state="running", minor_faults=10, rss_pages=10, uss_pages=10)
    np.testing.assert_array_equal(res.memory(root.pid, heap), [3] * 10)


@pytest.mark.parametrize("frames,fits", [(12, False), (13, True)])
def test_cow_fork_needs_frames_only_for_its_tables(simulate, frames, fits):
    """cow copies PTEs, not pages: its fork needs one frame per table. The root
    holds 10 pages and 1 table; 13 frames leave 1 free (enough), 12 leave none
    (ENOMEM)."""
    sc = machine(frames)
    root = sc.spawn("root")
    heap = root.mmap("heap", 10 * PAGE)
    root.write(heap)
    kid = root.fork("kid")
    res = simulate(sc, policy="cow")
    if fits:
        check(res, kid, state="running", fork_ptes_copied=10, fork_tables_copied=1, rss_pages=10, pte_pages=1)
        assert summary(res, "frames_used") == summary(res, "peak_frames") == 12
    else:
        check(res, kid, state="fork_failed", fork_ptes_copied=0, rss_pages=0)
        check(res, root, enomem=1)
        assert summary(res, "frames_used") == 11


# --- OOM -------------------------------------------------------------------------------

@pytest.mark.parametrize("oom", ["largest", "faulting"])
def test_oom_largest_and_faulting_pick_different_victims(simulate, oom):
    """16 frames: 15 allocatable. big holds 10 pages + 1 table; small takes a
    table and 3 pages, and its 4th page finds no frame. largest kills big (RSS
    10 > 3) and small's fault is retried; faulting kills small, whose 4th
    fault never completes."""
    sc = machine(16)
    big = sc.spawn("big")
    small = sc.spawn("small")
    a = big.mmap("a", 10 * PAGE)
    b = small.mmap("b", 6 * PAGE)
    big.write(a)
    small.write(b, value=4)
    res = simulate(sc, oom=oom)
    assert summary(res, "peak_frames") == 15
    if oom == "largest":
        check(res, big, state="killed", reason="OOM", minor_faults=10, rss_pages=10, pte_pages=1)
        check(res, small, state="running", reason="", minor_faults=6, zero_fills=6, rss_pages=6)
        assert summary(res, "frames_used") == 6 + 1
        np.testing.assert_array_equal(res.memory(small.pid, b), [4] * 6)
    else:
        check(res, big, state="running", reason="", rss_pages=10)
        check(res, small, state="killed", reason="OOM", minor_faults=3, zero_fills=3, rss_pages=3)
        assert summary(res, "frames_used") == 10 + 1


@pytest.mark.parametrize("oom", ["largest", "faulting"])
def test_oom_during_cow_faults(simulate, oom):
    """A COW fault that finds no frame runs the OOM killer. 16 frames: the root
    holds 10 pages + 1 table, the child's table makes 12, it copies 3 pages and
    the 4th copy fails. largest: both mms have RSS 10, the tie goes to the
    lower pid, the root; its death leaves the child's remaining pages at
    mapcount 1, so the retried fault and the rest are reuses. faulting: the
    child dies with 3 copies."""
    sc = machine(16)
    root = sc.spawn("root")
    heap = root.mmap("heap", 10 * PAGE)
    root.write(heap, value=1)
    kid = root.fork("kid")
    kid.write(heap, value=2)
    res = simulate(sc, policy="cow", oom=oom)
    assert summary(res, "peak_frames") == 15
    assert summary(res, "frames_used") == 10 + 1
    if oom == "largest":
        check(res, root, state="killed", reason="OOM", minor_faults=10, rss_pages=10, uss_pages=3,
              shared_pages=7, pss_pages=3 + 7 / 2)
        check(res, kid, state="running", minor_faults=10, cow_copies=3, cow_reuses=7, rss_pages=10, uss_pages=10)
        np.testing.assert_array_equal(res.memory(kid.pid, heap), [2] * 10)
    else:
        check(res, kid, state="killed", reason="OOM", minor_faults=3, cow_copies=3, cow_reuses=0,
              rss_pages=10, uss_pages=3, pss_pages=3 + 7 / 2)
        check(res, root, state="running", rss_pages=10, uss_pages=10)
        np.testing.assert_array_equal(res.memory(root.pid, heap), [1] * 10)


@pytest.mark.parametrize("oom", ["largest", "faulting"])
def test_oom_kills_every_process_sharing_the_mm(simulate, oom):
    """A vfork child and its parent share one mm: the OOM killer takes both.
    16 frames: 10 pages + 1 table, then the child's new region's table and 3
    pages; the 4th finds none."""
    sc = machine(16)
    root = sc.spawn("root")
    heap = root.mmap("heap", 10 * PAGE)
    root.write(heap)
    kid = root.vfork("kid")
    more = kid.mmap("more", 6 * PAGE)
    kid.write(more)
    res = simulate(sc, oom=oom)
    check(res, root, state="killed", reason="OOM", minor_faults=10, rss_pages=13, pte_pages=2)
    check(res, kid, state="killed", reason="OOM", minor_faults=3, rss_pages=13, pte_pages=2)
    assert summary(res, "frames_used") == 0


def test_oom_largest_counts_only_the_victims_mm_rss(simulate):
    """largest ranks mms by oom_badness: RSS (present PTEs mapping frames other
    than the zero page) plus page tables. The reader's 600 zero-page PTEs count
    only as the 2 tables holding them: reader 2 pages + 3 tables = 5, writer
    9 pages + 1 table = 10 when its 10th page finds no frame: the writer dies."""
    sc = machine(16)                         # 15 allocatable frames
    reader = sc.spawn("reader")
    writer = sc.spawn("writer")
    zeros = reader.mmap("zeros", 600 * PAGE, prot="r")   # read-only: not charged by overcommit
    reader.read(zeros)                       # 600 zero-page PTEs in 2 tables, RSS 0
    reader_heap = reader.mmap("heap", 2 * PAGE)
    reader.write(reader_heap)                # 1 table, RSS 2
    w = writer.mmap("w", 12 * PAGE)
    writer.write(w)
    res = simulate(sc, oom="largest")
    check(res, writer, state="killed", reason="OOM", minor_faults=9, rss_pages=9)
    check(res, reader, state="running", rss_pages=2, pte_pages=3, minor_faults=602)
    assert summary(res, "frames_used") == 2 + 3


def test_oom_largest_counts_pages_written_after_a_zero_page_read(simulate):
    """A page read first (zero page) and written next is in RSS like any other:
    big holds 10 such pages (and a table); small's 4th page finds no frame:
    largest kills big, RSS 10 > 3."""
    sc = machine(16)
    big = sc.spawn("big")
    small = sc.spawn("small")
    a = big.mmap("a", 10 * PAGE)
    b = small.mmap("b", 6 * PAGE)
    big.read(a)
    big.write(a)
    small.write(b)
    res = simulate(sc, oom="largest")
    check(res, big, state="killed", reason="OOM", minor_faults=20, zero_fills=10, rss_pages=10)
    check(res, small, state="running", minor_faults=6, zero_fills=6, rss_pages=6)
    assert summary(res, "frames_used") == 6 + 1


def test_a_fault_allocates_its_table_before_its_page(simulate):
    """The page walk allocates a missing PTE table before the page
    (__handle_mm_fault's pte_alloc, then do_anonymous_page), and the table
    stays: 4 frames, 3 allocatable: region a takes a table and a page; region
    b's table takes the last frame and its page finds none. The process dies
    (faulting) with 2 tables and 1 page."""
    sc = machine(4)
    p = sc.spawn("p")
    a = p.mmap("a", PAGE)
    b = p.mmap("b", PAGE)
    p.write(a)
    p.write(b)
    res = simulate(sc, oom="faulting")
    check(res, p, state="killed", reason="OOM", minor_faults=1, rss_pages=1, pte_pages=2)
    assert summary(res, "frames_used") == 0
    assert summary(res, "peak_frames") == 3


def test_oom_largest_counts_page_tables_as_linux_oom_badness_does(simulate):
    """oom_badness = RSS + page tables. 3 frames, 2 allocatable: p1 reads (a
    table, RSS 0); p2's write takes a table, its page finds no frame: p1 and p2
    both score 1, the tie goes to the lower pid, p1; p2's retried fault
    succeeds. Then p3's write finds no frame for its table: p2 scores 2, p3 0:
    p2 dies and p3 gets its table and page."""
    sc = machine(3)
    p1, p2, p3 = sc.spawn("p1"), sc.spawn("p2"), sc.spawn("p3")
    a, b, c = p1.mmap("a", PAGE), p2.mmap("b", PAGE), p3.mmap("c", PAGE)
    p1.read(a)
    p2.write(b)
    p3.write(c)
    res = simulate(sc, oom="largest")
    check(res, p1, state="killed", reason="OOM", minor_faults=1, rss_pages=0, pte_pages=1)
    check(res, p2, state="killed", reason="OOM", minor_faults=1, rss_pages=1, pte_pages=1)
    check(res, p3, state="running", minor_faults=1, rss_pages=1, pte_pages=1)
    assert summary(res, "frames_used") == 2


def test_a_zero_page_read_can_need_a_table_frame(simulate):
    """Reading maps the zero page (no data frame) but may need a new table: with
    no frame left for it the OOM killer runs."""
    sc = machine(3)                          # 2 allocatable
    p = sc.spawn("p")
    a = p.mmap("a", PAGE)
    b = p.mmap("b", PAGE)
    p.write(a)                               # table + page
    p.read(b)                                # a table: none left
    res = simulate(sc, oom="faulting")
    check(res, p, state="killed", reason="OOM", minor_faults=1, rss_pages=1, pte_pages=1)


# --- exec, exit, munmap: memory comes back ------------------------------------------------

def test_exec_releases_the_old_address_space(simulate):
    """exec: a new, empty mm; the old one's frames lose a mapping, so the
    parent's pages become exclusive again and its writes are reuses."""
    n = 8
    sc = machine()
    root = sc.spawn("root")
    heap = root.mmap("heap", n * PAGE)
    root.write(heap)
    kid = root.fork("kid")
    kid.exec()
    root.write(heap)
    res = simulate(sc, policy="cow")
    check(res, kid, state="running", rss_pages=0, pte_pages=0, fork_ptes_copied=n)
    check(res, root, minor_faults=2 * n, cow_reuses=n, cow_copies=0, uss_pages=n)
    assert summary(res, "frames_used") == n + 1


def test_exec_of_the_only_user_frees_its_frames(simulate):
    sc = machine()
    p = sc.spawn("p")
    heap = p.mmap("heap", 7 * PAGE)
    shm = p.mmap("shm", 3 * PAGE, shared=True)
    p.write(heap)
    p.write(shm)
    p.exec()
    res = simulate(sc)
    assert summary(res, "frames_used") == 0
    assert summary(res, "peak_frames") == 10 + 2
    check(res, p, state="running", rss_pages=0, pte_pages=0, minor_faults=10, zero_fills=10)


@pytest.mark.parametrize("policy", ["cow", "odf"])
def test_the_last_user_of_an_address_space_unmaps_what_is_resident(simulate, policy):
    """exit_mmap: a process that releases an address space as its last user
    (exit, or exec) zaps the PTEs of its resident pages, zero page aside, and
    frees the pages nobody else maps; under odf a table still shared with
    another address space is dropped whole, its PTEs not walked. A vfork
    child that exits leaves the mm to its parent and unmaps nothing."""
    sc = machine()
    root = sc.spawn("root")
    heap = root.mmap("heap", 10 * PAGE)
    root.write(heap, pages=range(0, 6))
    root.read(heap, pages=range(6, 10))                 # zero page: not resident
    kid = root.fork("kid")
    kid.write(heap, pages=range(0, 2))
    kid.exit()
    v = root.vfork("v")
    v.write(heap, pages=range(6, 7))
    v.exit()
    sh = root.fork("sh")
    sh.exec()
    root.exit()
    res = simulate(sc, policy=policy)
    check(res, kid, exit_ptes_zapped=6, exit_pages_freed=2)      # its two copies; the rest is root's too
    check(res, v, exit_ptes_zapped=0, exit_pages_freed=0)
    check(res, sh, exit_ptes_zapped=7 if policy == "cow" else 0,  # at exec; under odf its table is root's too
          exit_pages_freed=0)
    check(res, root, exit_ptes_zapped=7, exit_pages_freed=7)


@pytest.mark.parametrize("policy", ["cow", "eager"])
def test_everything_comes_back_after_every_process_exits(simulate, policy):
    sc = machine()
    root = sc.spawn("root")
    heap = root.mmap("heap", 20 * PAGE)
    shm = root.mmap("shm", 4 * PAGE, shared=True)
    root.write(heap)
    root.write(shm)
    kid = root.fork("kid")
    kid.write(heap, pages=range(0, 20, 3))
    kid.read(shm)
    grandkid = kid.fork("grandkid")
    grandkid.write(shm)
    vkid = grandkid.vfork("vkid")
    vkid.write(heap, pages=[1, 2])
    vkid.exit()
    for p in (grandkid, kid, root):
        p.exit()
    res = simulate(sc, policy=policy)
    assert summary(res, "frames_used") == 0
    assert set(res.processes["state"]) == {"exited"}


def test_munmap_frees_frames_and_tables(simulate):
    """Tables: one per 2 MiB (512 pages) range with a PTE in it; fork counts the
    tables holding the PTEs it copies; munmap frees both pages and tables."""
    sc = machine()
    root = sc.spawn("root")
    big = root.mmap("big", 1030 * PAGE)      # three tables: pages 0-511, 512-1023, 1024-1029
    root.write(big, pages=[0, 511, 1029])
    kid = root.fork("kid")
    res = simulate(sc, policy="cow")
    check(res, root, rss_pages=3, pte_pages=2)
    check(res, kid, fork_ptes_copied=3, fork_tables_copied=2, pte_pages=2)
    root.munmap(big)
    res = simulate(sc, policy="cow")
    check(res, root, rss_pages=0, pte_pages=0)
    check(res, kid, rss_pages=3, uss_pages=3, pte_pages=2)
    assert summary(res, "frames_used") == 3 + 2


def test_sizes_round_up_to_whole_pages(simulate):
    sc = machine()
    p = sc.spawn("p")
    r = p.mmap("r", 2 * PAGE + 1)
    p.write(r)
    res = simulate(sc)
    check(res, p, minor_faults=3, rss_pages=3)
    assert r.npages == 3


# --- skipped ops, determinism ------------------------------------------------------------------

def test_ops_of_a_dead_process_are_skipped(simulate):
    """After its SIGSEGV a process's ops are skipped; a fork it would have done
    never happens: that child is reported fork_failed, with all counts 0."""
    sc = machine()
    p = sc.spawn("p")
    heap = p.mmap("heap", 2 * PAGE)
    p.mprotect(heap, "r")
    p.write(heap)                            # SIGSEGV
    p.mprotect(heap, "rw")
    p.write(heap)                            # skipped
    ghost = p.fork("ghost")                  # never happens
    ghost.write(heap)                        # skipped
    res = simulate(sc)
    check(res, p, state="killed", reason="SIGSEGV", minor_faults=0, rss_pages=0)
    check(res, ghost, state="fork_failed", reason="", minor_faults=0, rss_pages=0, fork_ptes_copied=0)
    assert summary(res, "frames_used") == 0


def _patterned():
    sc = cb.Scenario(phys_mem=300 * PAGE)
    root = sc.spawn("root")
    heap = root.mmap("heap", 250 * PAGE)
    root.write(heap, pages=cb.zipf(500, s=1.1, seed=7))
    kids = [root.fork(f"kid{i}") for i in range(3)]
    for i, k in enumerate(kids):
        k.write(heap, pages=cb.uniform(80, seed=i))
        k.read(heap, pages=cb.hotset(50, hot=0.1, p_hot=0.9, seed=10 + i))
    return sc


@pytest.mark.parametrize("policy", ["cow", "eager"])
def test_same_scenario_same_result(simulate, policy):
    """Determinism: running a scenario twice, or an identical scenario built
    again with the same seeds, gives identical DataFrames."""
    sc = _patterned()
    a = simulate(sc, policy=policy)
    b = simulate(sc, policy=policy)
    c = simulate(_patterned(), policy=policy)
    pd.testing.assert_frame_equal(a.processes, b.processes)
    pd.testing.assert_frame_equal(a.processes, c.processes)
    pd.testing.assert_series_equal(a.summary, c.summary)
    running = a.processes.loc[a.processes["state"] == "running", "pid"]
    assert len(running) > 0
    for pid in running:
        np.testing.assert_array_equal(a.memory(int(pid), sc.regions[0]), c.memory(int(pid), sc.regions[0]))


# --- pins (pin_user_pages FOLL_WRITE | FOLL_LONGTERM) -------------------------------------

def test_pin_faults_pages_in_writable_without_writing(simulate):
    """pin: a write-intent fault per page (rule 5 here: a fault and a zero fill
    each, counted in minor_faults), the tag unchanged; the pages are then
    writable: later writes take no fault."""
    n = 3
    sc = machine()
    p = sc.spawn("p")
    heap = p.mmap("heap", n * PAGE)
    p.pin(heap)
    res = simulate(sc)
    check(res, p, minor_faults=n, zero_fills=n, rss_pages=n, uss_pages=n)
    np.testing.assert_array_equal(res.memory(p.pid, heap), [0] * n)
    p.write(heap, value=5)
    res = simulate(sc)
    check(res, p, minor_faults=n, zero_fills=n)
    np.testing.assert_array_equal(res.memory(p.pid, heap), [5] * n)


def test_a_pinned_page_is_copied_at_fork_and_stays_writable_in_the_parent(simulate):
    """copy_present_page: under cow a pinned page is copied for the child at
    fork (one fork_pages_copied, one frame); the parent's PTE keeps W, so its
    next write there takes no fault, while an unpinned page still COWs."""
    n = 4
    sc = machine()
    root = sc.spawn("root")
    heap = root.mmap("heap", n * PAGE)
    root.write(heap, value=1)
    root.pin(heap, pages=[0])                # present and writable: no fault
    kid = root.fork("kid")
    res = simulate(sc, policy="cow")
    check(res, kid, fork_pages_copied=1, fork_ptes_copied=n, fork_tables_copied=1,
          rss_pages=n, uss_pages=1, shared_pages=n - 1, pss_pages=1 + (n - 1) / 2)
    check(res, root, minor_faults=n, rss_pages=n, uss_pages=1)
    assert summary(res, "frames_used") == n + 1 + 2
    root.write(heap, pages=[0, 1], value=2)  # page 0: no fault; page 1: a COW copy
    res = simulate(sc, policy="cow")
    check(res, root, minor_faults=n + 1, cow_copies=1, cow_reuses=0)
    np.testing.assert_array_equal(res.memory(kid.pid, heap), [1] * n)
    np.testing.assert_array_equal(res.memory(root.pid, heap), [2, 2] + [1] * (n - 2))


def test_pin_after_a_cow_fork_copies_and_grandchildren_get_a_copy(simulate):
    """Pinning a COW-shared page is a write fault: one cow_copy (tag kept).
    That page is then copied at the child's own fork."""
    n = 4
    sc = machine()
    root = sc.spawn("root")
    heap = root.mmap("heap", n * PAGE)
    root.write(heap, value=1)
    kid = root.fork("kid")
    kid.pin(heap, pages=[0])
    grandkid = kid.fork("grandkid")
    res = simulate(sc, policy="cow")
    check(res, kid, minor_faults=1, cow_copies=1, zero_fills=0)
    check(res, grandkid, fork_pages_copied=1, fork_ptes_copied=n, uss_pages=1)
    np.testing.assert_array_equal(res.memory(kid.pid, heap), [1] * n)
    np.testing.assert_array_equal(res.memory(grandkid.pid, heap), [1] * n)
    assert summary(res, "frames_used") == n + 2 + 3


def test_a_pin_holds_its_frame_until_unpin(simulate):
    """A frame is freed only when no PTE maps it, no page cache holds it and no
    pin holds it: after munmap the pinned page still takes a frame."""
    sc = machine()
    p = sc.spawn("p")
    heap = p.mmap("heap", 2 * PAGE)
    p.write(heap)
    p.pin(heap, pages=[0])
    p.munmap(heap)
    res = simulate(sc)
    assert summary(res, "frames_used") == 1
    check(res, p, rss_pages=0, pte_pages=0)
    p.unpin(heap, pages=[0])
    res = simulate(sc)
    assert summary(res, "frames_used") == 0


def test_pins_are_dropped_when_the_process_exits(simulate):
    sc = machine()
    root = sc.spawn("root")
    heap = root.mmap("heap", 2 * PAGE)
    root.write(heap)
    kid = root.fork("kid")
    kid.pin(heap, pages=[0])                 # a COW copy, pinned
    kid.exit()
    root.pin(heap, pages=[1])
    root.munmap(heap)                        # page 1 stays: pinned
    res = simulate(sc)
    assert summary(res, "frames_used") == 1
    root.exit()
    res = simulate(sc)
    assert summary(res, "frames_used") == 0


def test_pinning_what_the_process_cannot_write_pins_nothing(simulate):
    """EFAULT, not SIGSEGV: no fault, no pin, the process goes on."""
    sc = machine()
    p = sc.spawn("p")
    q = sc.spawn("q")
    ro = p.mmap("ro", 2 * PAGE, prot="r")
    other = q.mmap("other", 2 * PAGE)
    p.pin(ro)
    p.pin(other)                             # not mapped in p
    p.read(ro)
    res = simulate(sc)
    check(res, p, state="running", minor_faults=2, zero_fills=0, rss_pages=0)
    assert summary(res, "frames_used") == 1  # the table of ro's zero-page PTEs


@pytest.mark.parametrize("frames,fits", [(22, False), (23, True)])
def test_a_fork_that_cannot_copy_its_pinned_pages_fails(simulate, frames, fits):
    """cow copies pinned pages at fork: 10 pinned pages and 1 table need 11
    frames; 22 frames leave 21 - 11 = 10 free (ENOMEM), 23 leave 11."""
    sc = machine(frames)
    root = sc.spawn("root")
    heap = root.mmap("heap", 10 * PAGE)
    root.write(heap)
    root.pin(heap)
    kid = root.fork("kid")
    res = simulate(sc, policy="cow")
    if fits:
        check(res, kid, state="running", fork_pages_copied=10, uss_pages=10)
        assert summary(res, "frames_used") == 22
    else:
        check(res, kid, state="fork_failed", fork_pages_copied=0)
        check(res, root, enomem=1)
        assert summary(res, "frames_used") == 11


# --- overcommit (__vm_enough_memory) ------------------------------------------------------

def test_overcommit_0_refuses_one_mapping_larger_than_ram(simulate):
    """overcommit=0: a single charge larger than RAM (16 pages here) is refused;
    the region stays unmapped (touching it is a SIGSEGV) and enomem counts it.
    Read-only private mappings are not charged at all."""
    sc = machine(16)
    p1, p2, p3 = sc.spawn("p1"), sc.spawn("p2"), sc.spawn("p3")
    fits = p1.mmap("fits", 16 * PAGE)
    p1.write(fits, pages=[0])
    big = p2.mmap("big", 17 * PAGE)
    p2.write(big, pages=[0])
    ro = p3.mmap("ro", 17 * PAGE, prot="r")
    p3.read(ro, pages=[0])
    res = simulate(sc, overcommit=0)
    check(res, p1, state="running", enomem=0, minor_faults=1)
    check(res, p2, state="killed", reason="SIGSEGV", enomem=1, minor_faults=0)
    check(res, p3, state="running", enomem=0, minor_faults=1)
    res = simulate(sc, overcommit=1)
    check(res, p2, state="running", enomem=0, minor_faults=1)


def test_overcommit_2_limits_the_committed_total(simulate):
    """overcommit=2 with ratio 50 on 100 pages of RAM: at most 50 pages
    committed. 30 + 20 fit exactly; 1 more is refused; munmap gives its charge
    back."""
    sc = machine(100)
    p = sc.spawn("p")
    q = sc.spawn("q")
    a = p.mmap("a", 30 * PAGE)
    p.mmap("b", 20 * PAGE)
    c = q.mmap("c", PAGE)                    # 51 > 50: refused
    p.munmap(a)
    d = q.mmap("d", 25 * PAGE)               # 45: fine
    q.write(d, pages=[0])
    q.write(c, pages=[0])                    # never mapped: SIGSEGV
    res = simulate(sc, overcommit=2, overcommit_ratio=50)
    check(res, p, state="running", enomem=0)
    check(res, q, state="killed", reason="SIGSEGV", enomem=1, minor_faults=1)


def test_overcommit_2_charges_private_writable_regions_again_at_fork(simulate):
    """fork charges every accounted region the child gets (private writable:
    20 pages), not shared ones (charged once) nor read-only ones. Limit 50:
    20 + 10 shared = 30; kid1 makes 50; kid2 would make 70 (ENOMEM); after
    kid1 exits kid3 fits."""
    sc = machine(100)
    root = sc.spawn("root")
    root.mmap("heap", 20 * PAGE)
    root.mmap("shm", 10 * PAGE, shared=True)
    root.mmap("text", 40 * PAGE, prot="r")
    kid1 = root.fork("kid1")
    kid2 = root.fork("kid2")
    kid1.exit()
    kid3 = root.fork("kid3")
    res = simulate(sc, overcommit=2, overcommit_ratio=50)
    check(res, kid1, state="exited")
    check(res, kid2, state="fork_failed")
    check(res, kid3, state="running")
    check(res, root, enomem=1)


@pytest.mark.parametrize("ratio,granted", [(50, False), (100, True)])
def test_mprotect_giving_w_is_charged(simulate, ratio, granted):
    """mprotect giving w to a private region not yet accounted charges it; a
    refused mprotect changes nothing (the region stays read-only)."""
    sc = machine(100)
    p = sc.spawn("p")
    ro = p.mmap("ro", 40 * PAGE, prot="r")
    p.mmap("rw", 20 * PAGE)
    p.mprotect(ro, "rw")                     # 60 pages: > 50, <= 100
    p.write(ro, pages=[0])
    res = simulate(sc, overcommit=2, overcommit_ratio=ratio)
    if granted:
        check(res, p, state="running", enomem=0, minor_faults=1)
    else:
        check(res, p, state="killed", reason="SIGSEGV", enomem=1, minor_faults=0)


# --- odf (On-demand-fork) ------------------------------------------------------------------

def test_odf_shares_tables_at_fork_and_copies_one_at_the_first_write(simulate):
    """odf: fork copies no PTE and no table (the one table is shared: one
    frame); the child's first write copies that table (fault_tables_copied)
    then COWs the page; the parent, now the table's last sharer, keeps it and
    only COWs."""
    n = 10
    sc = machine()
    root = sc.spawn("root")
    heap = root.mmap("heap", n * PAGE)
    root.write(heap, value=1)
    kid = root.fork("kid")
    res = simulate(sc, policy="odf")
    check(res, kid, fork_ptes_copied=0, fork_tables_copied=0, fork_pages_copied=0,
          rss_pages=n, shared_pages=n, pss_pages=n / 2)
    assert summary(res, "frames_used") == n + 1
    kid.write(heap, pages=[0], value=2)
    root.write(heap, pages=[1], value=3)
    res = simulate(sc, policy="odf")
    check(res, kid, minor_faults=1, cow_copies=1, fault_tables_copied=1)
    check(res, root, minor_faults=n + 1, cow_copies=1, fault_tables_copied=0)
    assert summary(res, "frames_used") == n + 2 + 2
    np.testing.assert_array_equal(res.memory(kid.pid, heap), [2] + [1] * (n - 1))
    np.testing.assert_array_equal(res.memory(root.pid, heap), [1, 3] + [1] * (n - 2))


def test_odf_page_level_behaviour_is_cows(simulate):
    sc, root, kid, heap = _k_of_n()
    kid.exit()
    root.write(heap, value=3)
    cols = ["state", "minor_faults", "zero_fills", "cow_copies", "cow_reuses",
            "rss_pages", "pss_pages", "uss_pages", "shared_pages"]
    cow = simulate(sc, policy="cow").processes[cols]
    odf = simulate(sc, policy="odf").processes[cols]
    pd.testing.assert_frame_equal(odf, cow)


def test_odf_a_read_fault_installing_a_pte_copies_a_shared_table(simulate):
    sc = machine()
    root = sc.spawn("root")
    heap = root.mmap("heap", 4 * PAGE)
    root.write(heap, pages=[0])              # an anon_vma: the region is shared at fork
    kid = root.fork("kid")
    kid.read(heap, pages=[0])                # present: no fault, the table stays shared
    kid.read(heap, pages=[1])                # a zero-page PTE into the shared table: copy it first
    res = simulate(sc, policy="odf")
    check(res, kid, minor_faults=1, fault_tables_copied=1, rss_pages=1)


def test_odf_mprotect_over_a_shared_table_copies_it(simulate):
    sc = machine()
    root = sc.spawn("root")
    heap = root.mmap("heap", 4 * PAGE)
    root.write(heap)
    kid = root.fork("kid")
    kid.mprotect(heap, "r")
    res = simulate(sc, policy="odf")
    check(res, kid, minor_faults=0, fault_tables_copied=1)
    check(res, root, fault_tables_copied=0)
