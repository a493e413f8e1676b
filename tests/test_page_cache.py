"""Stories of docs/semantics.md's file rules (F1-F5) and of programs: a
program's text shared through one page cache, its data copied on write,
exec giving a child its own image.

Each story is checked against the reference simulator as well as by its
counts; the real kernel's side is `cowbench validate`'s file_* scenarios
(tests/test_validate.py runs them).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import cowbench as cb
import reference

PAGE = 4096
N = 1024                       # pages of the file in most stories: 4 MiB


def run(sc, policy="cow"):
    """The engine's run, checked against the reference's and its own invariants."""
    res = cb.simulate(sc, policy, keep_state=True)
    res.check_invariants()
    ref = reference.simulate(sc, policy)
    ref.check_invariants()
    cols = [c for c in reference.COLUMNS if c != "pss_pages"]
    assert res.processes[cols].to_dict("list") == ref.processes[cols].to_dict("list")
    np.testing.assert_allclose(res.processes["pss_pages"], ref.processes["pss_pages"], rtol=1e-9)
    return res.processes.set_index("name")


def test_a_read_faults_around_and_maps_the_page_cache():
    """F1: a 4 MiB read takes 1024 / 16 faults; a second process reading it maps the same frames."""
    sc = cb.Scenario()
    lib = sc.file("libc.so.6", N * PAGE)
    a, b = sc.spawn("a"), sc.spawn("b")
    for p in (a, b):
        p.read(p.mmap("libc", N * PAGE, file=lib, prot="rx"))
    df = run(sc)
    assert list(df["minor_faults"]) == [N // 16, N // 16]
    assert list(df["major_faults"]) == [0, 0]
    assert list(df["rss_pages"]) == [N, N]
    assert list(df["pss_pages"]) == [N / 2, N / 2]        # one page cache, counted once
    assert list(df["zero_fills"]) == [0, 0]


def test_pages_not_in_the_page_cache_are_major_faults_with_read_around():
    """F1: the first read of an uncached file reads its read-around window; reads inside it are minor."""
    sc = cb.Scenario()
    f = sc.file("cold", N * PAGE, cached=False, readahead=64 * PAGE)
    p = sc.spawn("p")
    m = p.mmap("cold", N * PAGE, file=f, prot="r")
    p.read(m, pages=[100])          # reads 68 .. 131 in; its retry maps the block 96 .. 111
    p.read(m, pages=[120, 70])      # in the window: minor, mapping 112 .. 127 and 68 .. 79 (64 .. 67 not read)
    p.read(m, pages=[500])          # outside: major again
    df = run(sc)
    assert df.at["p", "major_faults"] == 2
    assert df.at["p", "minor_faults"] == 2
    assert df.at["p", "rss_pages"] == 16 + 16 + 12 + 16


def test_a_file_written_in_2mib_folios_maps_2mib_in_one_fault():
    """F1 with folio="2MiB" (what 2 MiB writes give on ext4): one read fault per 2 MiB."""
    sc = cb.Scenario()
    f = sc.file("big", "8MiB", folio="2MiB")
    p = sc.spawn("p")
    p.read(p.mmap("big", "8MiB", file=f, prot="r"))
    p.read(p.mmap("unaligned", "6MiB", file=f, offset="1MiB", prot="r"))   # 1 MiB into a folio: fault-around
    df = run(sc)
    assert df.at["p", "minor_faults"] == 4 + 6 * 256 // 16


def test_a_private_file_page_is_copied_on_write_never_reused():
    """F3: the first write copies the file page (do_cow_fault); a write after a read copies too, even with one mapper."""
    sc = cb.Scenario()
    f = sc.file("prog", N * PAGE)
    p = sc.spawn("p")
    data = p.mmap("data", N * PAGE, file=f, prot="rw")
    p.write(data, pages=range(0, 100))
    p.read(data, pages=range(192, 208))         # one fault-around block
    p.write(data, pages=range(192, 208))
    df = run(sc)
    assert df.at["p", "cow_copies"] == 116
    assert df.at["p", "cow_reuses"] == 0
    assert df.at["p", "minor_faults"] == 100 + 1 + 16
    assert df.at["p", "rss_pages"] == 116


def test_a_shared_file_write_dirties_the_page_cache_and_copies_nothing():
    """F2: read-only after a read, the first write of each page faults once, in place; another process sees it."""
    sc = cb.Scenario()
    f = sc.file("db", N * PAGE)
    a, b = sc.spawn("a"), sc.spawn("b")
    ma = a.mmap("db", N * PAGE, file=f, shared=True)
    mb = b.mmap("db", N * PAGE, file=f, shared=True)
    a.read(ma, pages=range(0, 16))
    a.write(ma, pages=range(0, 16), value=7)
    a.write(ma, pages=range(0, 16), value=8)      # writable now: no fault
    b.read(mb, pages=range(0, 16))
    res = cb.simulate(sc, keep_state=True)
    df = run(sc)
    assert list(df["minor_faults"]) == [1 + 16, 1]
    assert list(df["cow_copies"]) == [0, 0]
    assert (res.memory(b, mb)[:16] == 8).all()        # the page cache holds a's write


def test_fork_copies_no_pte_of_a_file_mapping_without_anon_vma():
    """F4: text only ever read is not copied (the child faults it around); data once written is."""
    sc = cb.Scenario()
    f = sc.file("prog", 2 * N * PAGE)
    p = sc.spawn("p")
    text = p.mmap("text", N * PAGE, file=f, prot="rx")
    data = p.mmap("data", N * PAGE, file=f, offset=N * PAGE, prot="rw")
    p.read(text)
    p.read(data)
    p.write(data, pages=[0])
    kid = p.fork("kid")
    kid.read(text)
    kid.read(data)
    df = run(sc)
    assert df.at["kid", "fork_ptes_copied"] == N            # data's PTEs (one anonymous, the rest file pages)
    assert df.at["kid", "minor_faults"] == N // 16          # text again; data is mapped already


@pytest.mark.parametrize("policy", ["cow", "eager", "odf"])
def test_eager_maps_file_pages_and_copies_anonymous_ones(policy):
    """F4 under every policy: eager copies the written page only; nothing is copied from the page cache."""
    sc = cb.Scenario()
    f = sc.file("prog", N * PAGE)
    p = sc.spawn("p")
    data = p.mmap("data", N * PAGE, file=f, prot="rw")
    p.read(data)
    p.write(data, pages=range(10))
    p.fork("kid")
    df = run(sc, policy)
    assert df.at["kid", "fork_pages_copied"] == (10 if policy == "eager" else 0)
    assert df.at["kid", "rss_pages"] == N


def test_the_page_cache_outlives_every_process():
    """After every process exits, the frames in use are the files' page cache, anonymous copies freed."""
    sc = cb.Scenario()
    hot, cold = sc.file("hot", 64 * PAGE), sc.file("cold", 64 * PAGE, cached=False, readahead=0)
    p = sc.spawn("p")
    p.write(p.mmap("hot", 64 * PAGE, file=hot, prot="rw"), pages=range(8))
    p.read(p.mmap("cold", 64 * PAGE, file=cold, prot="r"), pages=range(0, 64, 16))
    p.exit()
    res = cb.simulate(sc, keep_state=True)
    res.check_invariants()
    assert res.summary["frames_used"] == 64 + 4          # hot was cached whole; cold read a page per fault
    assert res.processes.at[0, "exit_pages_freed"] == 8 + 4 - 4   # its copies and its tables, not the cache


# --- what smaps shows: kinds and Clean/Dirty (F5) ------------------------------------

SPLIT = ["anon_pages", "file_pages", "shmem_pages", "private_clean_pages", "private_dirty_pages",
         "shared_clean_pages", "shared_dirty_pages"]


def split(df, name):
    return dict(zip(SPLIT, (int(v) for v in df.loc[name, SPLIT])))


def test_after_fork_anonymous_pages_are_shared_dirty_and_text_private_clean():
    """F5, as smaps shows a forked process: its heap Shared_Dirty in both,
    its text (never copied at fork) Private_Clean in each, its data's copies
    anonymous and the file pages they were copied from Shared_Clean."""
    sc = cb.Scenario()
    f = sc.file("prog", 2 * N * PAGE)
    p = sc.spawn("p")
    heap = p.mmap("heap", N * PAGE)
    text = p.mmap("text", N * PAGE, file=f, prot="rx")
    data = p.mmap("data", N * PAGE, file=f, offset=N * PAGE, prot="rw")
    p.write(heap, pages=range(100))
    p.read(text, pages=range(16))
    p.read(data, pages=range(16))
    p.write(data, pages=range(8))
    kid = p.fork("kid")
    kid.read(text, pages=range(32, 64))     # pages p does not map
    df = run(sc)
    assert split(df, "p") == {"anon_pages": 108, "file_pages": 16 + 8, "shmem_pages": 0,
                              "private_clean_pages": 16, "private_dirty_pages": 0,
                              "shared_clean_pages": 8, "shared_dirty_pages": 108}
    assert split(df, "kid") == {"anon_pages": 108, "file_pages": 8 + 32, "shmem_pages": 0,
                                "private_clean_pages": 32, "private_dirty_pages": 0,
                                "shared_clean_pages": 8, "shared_dirty_pages": 108}


def test_a_shared_write_dirties_the_file_page_for_every_mapper():
    """F5: a MAP_SHARED write fault dirties the page in the page cache, so a
    process that only read it shows it Dirty too. In a 2 MiB folio, the write
    fault maps the whole folio (as the read fault does) and dirties it whole."""
    for folio, a_maps, b_maps in (("4KiB", 16, 1), ("2MiB", 512, 512)):
        sc = cb.Scenario()
        f = sc.file("db", N * PAGE, folio=folio)
        a, b = sc.spawn("a"), sc.spawn("b")
        a.read(a.mmap("db", N * PAGE, file=f, prot="r"), pages=[0])
        b.write(b.mmap("db", N * PAGE, file=f, shared=True, prot="rw"), pages=[5])
        df = run(sc)
        assert split(df, "a") == {"anon_pages": 0, "file_pages": a_maps, "shmem_pages": 0,
                                  "private_clean_pages": a_maps - b_maps, "private_dirty_pages": 0,
                                  "shared_clean_pages": 0, "shared_dirty_pages": b_maps}, folio
        assert split(df, "b")["shared_dirty_pages"] == b_maps, folio
        assert df.at["b", "minor_faults"] == 1, folio


def test_a_shmem_write_without_a_fault_dirties_the_writers_pte_only():
    """F5: a read fault maps a clean shmem page writable; the write after it
    takes no fault and sets the dirty bit of the writer's PTE alone, so
    another process mapping the page sees it clean, until the writer unmaps
    it (its exit here) and the bit moves to the page. A write fault dirties
    the page itself."""
    sc = cb.Scenario()
    p = sc.spawn("p")
    shm = p.mmap("shm", N * PAGE, shared=True)
    p.read(shm, pages=range(64))
    kid = p.fork("kid")
    kid.read(shm, pages=range(64))           # fork copies no shmem PTE: the kid faults them in
    p.write(shm, pages=range(8))             # mapped writable by the reads: no fault
    p.write(shm, pages=range(100, 104))      # do_shared_fault
    late = p.fork("late")
    late.read(shm, pages=range(64))
    p.exit()
    df = run(sc)
    assert df.at["p", "minor_faults"] == 64 + 4
    assert split(df, "p") == {"anon_pages": 0, "file_pages": 0, "shmem_pages": 68,
                              "private_clean_pages": 0, "private_dirty_pages": 4,
                              "shared_clean_pages": 56, "shared_dirty_pages": 8}
    # the kid and late are frozen at the end, after p's exit moved its dirty bits to the pages
    assert split(df, "kid")["shared_dirty_pages"] == 8
    sc2 = cb.Scenario()
    p = sc2.spawn("p")
    shm = p.mmap("shm", N * PAGE, shared=True)
    p.read(shm, pages=range(64))
    kid = p.fork("kid")
    kid.read(shm, pages=range(64))
    p.write(shm, pages=range(8))
    df = run(sc2)
    assert split(df, "kid")["shared_clean_pages"] == 64          # the writer still maps them: clean here
    assert split(df, "p")["shared_dirty_pages"] == 8


def test_cached_files_must_fit_in_physical_memory():
    sc = cb.Scenario(phys_mem="1MiB")
    p = sc.spawn("p")
    p.read(p.mmap("m", "2MiB", file=sc.file("big", "2MiB"), prot="r"))
    with pytest.raises(cb.ScenarioError, match="cached files"):
        cb.simulate(sc)


# --- programs -----------------------------------------------------------------

def test_processes_running_one_program_share_its_text_and_libraries():
    """The seed's text segment: parent and child map one copy of the code; their data, heap and stack are their own."""
    sc = cb.Scenario()
    libc = sc.file("libc.so.6", "2MiB")
    bash = cb.Program("bash", text="1MiB", data="64KiB", bss="32KiB", heap="1MiB", stack="132KiB", libs=[libc])
    sh = sc.spawn("sh", program=bash)
    img = sh.image
    assert [r.name for r in (img.text, img.data, img.bss, img.heap, img.stack)] == \
        ["bash:text", "bash:data", "bash:bss", "bash:heap", "bash:stack"]
    assert img.data.file is img.text.file and img.data.offset == 256
    sh.read(img.text)
    sh.read(img.libs[0])
    sh.write(img.data)
    sh.write(img.heap)
    kid = sh.fork("kid")
    kid.read(img.text)
    kid.write(img.data, pages=range(4))
    df = run(sc)
    text_pages, lib_pages = 256, 512
    assert df.at["kid", "fork_ptes_copied"] == 16 + 256      # data and heap: text and libc were only read
    assert df.at["kid", "cow_copies"] == 4
    assert df.at["sh", "pss_pages"] == pytest.approx(text_pages / 2 + lib_pages + (16 + 256) / 2 + 2)


def test_exec_after_fork_gives_the_child_its_own_image():
    """The seed: exec replaces the child's image; the parent's stays. Both programs' text come from the page cache."""
    sc = cb.Scenario()
    bash = cb.Program("bash", text="1MiB", data="64KiB", heap="1MiB")
    ls = cb.Program("ls", text="128KiB", data="8KiB")
    sh = sc.spawn("sh", program=bash)
    sh.write(sh.image.heap)
    kid = sh.fork("kid")
    img = kid.exec(ls)
    assert kid.image is img and img.program is ls and sh.image.program is bash
    kid.read(img.text)
    kid.write(img.data)
    bash_file = sh.image.text.file
    kid2 = sh.fork("kid2")
    kid2.exec(bash)                       # bash again: the same file, the same page cache
    assert kid2.image.text.file is bash_file
    kid2.read(kid2.image.text)
    df = run(sc)
    assert df.at["kid", "rss_pages"] == 32 + 2
    assert df.at["kid", "cow_copies"] == 2
    assert df.at["kid2", "pss_pages"] == 256          # nobody else maps bash's text now


def test_program_errors_name_the_parameter():
    with pytest.raises(cb.ScenarioError, match="'text' parameter of Program"):
        cb.Program("x", text="lots")
    with pytest.raises(cb.ScenarioError, match="text must not be empty"):
        cb.Program("x", text=0)
    with pytest.raises(cb.ScenarioError, match="'libs' parameter of Program"):
        cb.Program("x", libs=["libc"])
    sc = cb.Scenario()
    with pytest.raises(cb.ScenarioError, match="'program' parameter of spawn"):
        sc.spawn("p", program="bash")
    other = cb.Scenario().file("libc", "1MiB")
    with pytest.raises(cb.ScenarioError, match="another scenario"):
        sc.spawn("p", program=cb.Program("x", libs=[other]))


def test_file_mapping_errors_name_the_operation_and_value():
    sc = cb.Scenario()
    f = sc.file("f", "1MiB")
    p = sc.spawn("p")
    with pytest.raises(cb.ScenarioError, match="not a multiple of the 4096-byte page size"):
        p.mmap("m", "4KiB", file=f, offset=100)
    with pytest.raises(cb.ScenarioError, match="SIGBUS"):
        p.mmap("m", "2MiB", file=f)
    with pytest.raises(cb.ScenarioError, match="offset 4096 given for anonymous region"):
        p.mmap("m", "4KiB", offset=4096)
    with pytest.raises(cb.ScenarioError, match="'file' parameter of mmap"):
        p.mmap("m", "4KiB", file="f")
    with pytest.raises(cb.ScenarioError, match="thp=True is modelled for private anonymous regions only"):
        p.mmap("m", "4KiB", file=f, thp=True)
    m = p.mmap("m", "4KiB", file=f)
    with pytest.raises(cb.ScenarioError, match="file-backed"):
        p.madvise(m, "wipeonfork")
    with pytest.raises(cb.ScenarioError, match="'folio' parameter of file"):
        sc.file("g", "1MiB", folio="3KiB")
    with pytest.raises(cb.ScenarioError, match="'readahead' parameter of file"):
        sc.file("g", "1MiB", readahead=100)
    with pytest.raises(cb.ScenarioError, match="'cached' parameter of file"):
        sc.file("g", "1MiB", cached=1)


# --- pagemap ------------------------------------------------------------------------

def test_pagemap_shows_one_page_cache_frame_in_every_mapper_and_a_copy_of_ones_own():
    """res.pagemap: two processes reading a file map the same frames (file
    pages, clean, mapped twice); a private write gives the writer an anonymous
    page of its own (exclusive, dirty, writable), in place of the file's. An
    exited process shows its pages as they were at its exit."""
    sc = cb.Scenario()
    f = sc.file("lib", 64 * PAGE)
    a, b = sc.spawn("a"), sc.spawn("b")
    ma = a.mmap("lib", 64 * PAGE, file=f, prot="rw")
    mb = b.mmap("lib", 64 * PAGE, file=f, prot="r")
    a.read(ma, pages=[0])
    b.read(mb, pages=[0])
    a.write(ma, pages=[3])
    b.exit()
    res = cb.simulate(sc, keep_state=True)
    pa = res.pagemap(a).set_index("page")
    assert list(pa.index) == list(range(16)) and set(pa.region) == {"lib"}
    assert pa.loc[3, ["exclusive", "file_backed", "dirty", "writable"]].tolist() == [True, False, True, True]
    assert pd.isna(pa.at[3, "frame"])                       # an inline page: no frame id
    others = pa.drop(index=3)
    assert not others.dirty.any() and others.file_backed.all() and others.exclusive.all()   # b has exited
    pb = res.pagemap(b).set_index("page")                    # as just before its exit, a mapping them too
    assert pb.drop(index=3).frame.tolist() == others.frame.tolist() and pb.file_backed.all()
    assert pb.exclusive.tolist() == [p == 3 for p in range(16)]     # a maps its own copy of page 3
    k = sc.spawn("k")
    k.write(k.mmap("ro", PAGE, prot="r"))                     # SIGSEGV
    with pytest.raises(cb.ScenarioError, match="pagemap: process 'k' is killed"):
        cb.simulate(sc, keep_state=True).pagemap(k)
    with pytest.raises(cb.ScenarioError, match="keep_state=True"):
        cb.simulate(sc).pagemap(a)
    sc2 = cb.Scenario()
    f2 = sc2.file("lib", 64 * PAGE)
    a2, b2 = sc2.spawn("a"), sc2.spawn("b")
    a2.read(a2.mmap("lib", 64 * PAGE, file=f2, prot="r"), pages=[0])
    b2.read(b2.mmap("lib", 64 * PAGE, file=f2, prot="r"), pages=[0])
    res2 = cb.simulate(sc2, keep_state=True)
    p, q = res2.pagemap(a2), res2.pagemap(b2)
    assert p.frame.tolist() == q.frame.tolist() and not p.exclusive.any()


def test_pagemap_of_an_exited_process_is_its_address_space_just_before_the_exit():
    """The replay up to an exit gives the frames the run had there: the same
    scenario stopped before the exit shows the same pagemap at its end."""
    def build(whole):
        sc = cb.Scenario()
        f = sc.file("lib", 64 * PAGE)
        p = sc.spawn("p")
        heap, lib = p.mmap("heap", 64 * PAGE), p.mmap("lib", 64 * PAGE, file=f, prot="r")
        p.write(heap, pages=range(0, 64, 3))
        p.read(lib, pages=[0, 40])
        kid = p.fork("kid")
        kid.write(heap, pages=range(0, 64, 6))             # 11 copies of its own
        kid.read(lib, pages=[20])                          # fork copied no PTE of lib: 16 .. 31 faulted around
        if whole:
            kid.exit()
            p.write(heap, pages=range(64))                 # after the kid's exit: reuses, in place
        return sc, kid

    sc, kid = build(whole=True)
    at_exit = cb.simulate(sc, keep_state=True).pagemap(kid)
    sc2, kid2 = build(whole=False)
    assert at_exit.equals(cb.simulate(sc2, keep_state=True).pagemap(kid2))
    assert len(at_exit) == 22 + 16 and at_exit.frame.notna().sum() == 11 + 16
