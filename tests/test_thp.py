"""Transparent huge pages, as docs/semantics.md states them (and `cowbench
validate` checked them on Linux 6.18). Each story runs on the engine and on the
reference simulator (the `simulate` fixture of conftest.py); every expected
number is derived from the rules in the docstring, and every run ends with
check_invariants.
"""
import pytest

import cowbench as cb

HUGE = 512                       # 4 KiB pages per 2 MiB huge page


def run(simulate, sc, **kw):
    res = simulate(sc, **kw)
    res.check_invariants()
    return res.processes.set_index("name")


def heap(npages_huge=2, phys="64MiB"):
    sc = cb.Scenario(phys_mem=phys)
    root = sc.spawn("root")
    return sc, root, root.mmap("heap", npages_huge * HUGE * 4096, thp=True)


def test_first_write_maps_one_huge_page_per_2mib(simulate):
    sc, root, h = heap(2)
    root.write(h)
    p = run(simulate, sc).loc["root"]
    assert (p.minor_faults, p.thp_fault_alloc, p.anon_huge_pages, p.rss_pages) == (2, 2, 2, 2 * HUGE)
    assert p.pte_pages == 2                       # one deposited table per huge page


def test_a_partial_2mib_tail_uses_small_pages(simulate):
    sc = cb.Scenario(phys_mem="64MiB")
    root = sc.spawn("root")
    h = root.mmap("heap", (HUGE + 10) * 4096, thp=True)
    root.write(h)
    p = run(simulate, sc).loc["root"]
    assert (p.minor_faults, p.thp_fault_alloc, p.anon_huge_pages, p.zero_fills) == (1 + 10, 1, 1, 10)


def test_read_maps_the_huge_zero_page_then_a_write_allocates_a_huge_page(simulate):
    sc, root, h = heap(2)
    root.read(h)                                  # 2 faults, the huge zero page: no RSS
    root.write(h, pages=[0, 1])                   # 1 fault: a huge page replaces it; page 1 is in it
    p = run(simulate, sc).loc["root"]
    assert (p.minor_faults, p.thp_fault_alloc, p.thp_splits, p.rss_pages, p.anon_huge_pages) == (3, 1, 0, HUGE, 1)


def test_fork_copies_one_pmd_per_huge_page_and_no_ptes(simulate):
    sc, root, h = heap(2)
    root.write(h)
    kid = root.fork("kid")
    kid.read(h)
    k = run(simulate, sc).loc["kid"]
    assert (k.fork_pmds_copied, k.fork_ptes_copied, k.fork_tables_copied, k.minor_faults) == (2, 0, 0, 0)
    assert (k.rss_pages, k.pss_pages, k.anon_huge_pages) == (2 * HUGE, HUGE, 2)


def test_split_copies_only_the_4k_page_written(simulate):
    """thp_cow="split": the child's write splits its PMD (it loses 2 MiB of
    AnonHugePages) and copies one page; the parent's write to the same huge page
    splits the parent's PMD too and copies, since the folio is still mapped by
    the child (reuse is decided per folio)."""
    sc, root, h = heap(2)
    root.write(h)
    kid = root.fork("kid")
    kid.write(h, pages=[5])
    root.write(h, pages=[5])
    df = run(simulate, sc, thp_cow="split")
    k, r = df.loc["kid"], df.loc["root"]
    assert (k.minor_faults, k.thp_splits, k.cow_copies, k.anon_huge_pages) == (1, 1, 1, 1)
    assert (r.minor_faults - 2, r.thp_splits, r.cow_copies, r.cow_reuses) == (1, 1, 1, 0)


def test_copy_mode_copies_all_2mib_in_one_fault(simulate):
    sc, root, h = heap(2)
    root.write(h)
    kid = root.fork("kid")
    kid.write(h, pages=[5])
    k = run(simulate, sc, thp_cow="copy").loc["kid"]
    assert (k.minor_faults, k.thp_copies, k.thp_splits, k.cow_copies, k.anon_huge_pages) == (1, 1, 0, 0, 2)
    assert k.uss_pages == HUGE                    # its own 2 MiB copy


def test_after_the_child_exits_the_parent_reuses_whole_huge_pages(simulate):
    sc, root, h = heap(2)
    root.write(h)
    kid = root.fork("kid")
    kid.exit()
    root.write(h)
    r = run(simulate, sc).loc["root"]
    assert (r.minor_faults, r.cow_reuses, r.cow_copies, r.anon_huge_pages) == (2 + 2, 2, 0, 2)


def test_a_pinned_subpage_makes_fork_copy_the_whole_folio(simulate):
    sc, root, h = heap(1)
    root.write(h)
    root.pin(h, pages=[0])
    kid = root.fork("kid")
    kid.write(h, pages=[0, 1])                    # its own copies: no faults
    root.write(h, pages=[1])                      # still writable in the parent
    df = run(simulate, sc)
    k, r = df.loc["kid"], df.loc["root"]
    assert (k.fork_pages_copied, k.minor_faults, k.uss_pages) == (HUGE, 0, HUGE)
    assert (r.thp_splits, r.minor_faults, r.uss_pages) == (1, 1, HUGE)


@pytest.mark.parametrize("policy", ["eager", "cow", "odf"])
def test_memory_returns_when_everyone_exits(simulate, policy):
    sc, root, h = heap(2)
    root.write(h)
    kid = root.fork("kid")
    kid.write(h, pages=range(0, 700, 7))
    root.madvise(h, "nohugepage")
    root.write(h, pages=[3])
    kid.exit()
    root.exit()
    res = simulate(sc, policy=policy)
    res.check_invariants()
    assert res.summary.frames_used == 0 and res.summary.pte_frames == 0


# --- room for exactly 512 frames ---------------------------------------------------
# A write to a write-protected huge PMD allocates only the 512 frames of the new
# folio: its table was deposited at the first fault (Linux's do_huge_zero_wp_pmd).

def test_a_write_to_the_huge_zero_page_needs_512_free_frames(simulate):
    sc = cb.Scenario(phys_mem=(1 + 1 + HUGE) * 4096)   # the zero page, the deposited table, 512 frames
    root = sc.spawn("root")
    h = root.mmap("heap", HUGE * 4096, thp=True)
    root.read(h, pages=[0])                             # the huge zero page and its table
    root.write(h, pages=[0])                            # exactly 512 frames free: a huge folio
    p = run(simulate, sc).loc["root"]
    assert (p.minor_faults, p.thp_fault_alloc, p.thp_splits, p.zero_fills, p.rss_pages) == (2, 1, 0, 0, HUGE)


def test_copy_mode_copies_with_512_free_frames(simulate):
    sc = cb.Scenario(phys_mem=(1 + 2 + 2 * HUGE) * 4096)   # zero page, 2 deposited tables, 2 folios
    root = sc.spawn("root")
    h = root.mmap("heap", HUGE * 4096, thp=True)
    root.write(h, pages=[0])
    kid = root.fork("kid")
    kid.write(h, pages=[0])                             # exactly 512 frames free: copy all 2 MiB
    k = run(simulate, sc, thp_cow="copy").loc["kid"]
    assert (k.minor_faults, k.thp_copies, k.thp_splits, k.cow_copies, k.anon_huge_pages) == (1, 1, 0, 0, 1)
