"""Bad input raises cb.ScenarioError (a ValueError) at build time, naming the
operation and the value, and records nothing."""
from __future__ import annotations

import re

import numpy as np
import pytest

import cowbench as cb

PAGE = 4096


def raises(*names):
    """pytest.raises(cb.ScenarioError) whose message contains every one of `names`."""
    return pytest.raises(cb.ScenarioError, match="(?s)" + "".join(f"(?=.*{re.escape(str(n))})" for n in names))


@pytest.fixture
def sc():
    return cb.Scenario(phys_mem=64 * PAGE)


@pytest.fixture
def world(sc):
    p = sc.spawn("p")
    heap = p.mmap("heap", 16 * PAGE)
    shm = p.mmap("shm", 4 * PAGE, shared=True)
    return sc, p, heap, shm


def test_scenario_error_is_a_value_error():
    assert issubclass(cb.ScenarioError, ValueError)


# --- regions --------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["read", "write", "munmap", "mprotect", "madvise"])
def test_region_of_another_scenario(world, op):
    sc, p, heap, shm = world
    other = cb.Scenario(phys_mem=64 * PAGE)
    stranger = other.spawn("q").mmap("alien", PAGE)
    args = {"mprotect": ("r",), "madvise": ("dontfork",)}.get(op, ())
    n = len(sc.ops)
    with raises(op, "unknown region", "alien"):
        getattr(p, op)(stranger, *args)
    assert len(sc.ops) == n


@pytest.mark.parametrize("op", ["read", "write", "munmap", "mprotect", "madvise"])
@pytest.mark.parametrize("bad", ["heap", 0, None])
def test_region_that_is_not_a_region(world, op, bad):
    sc, p, heap, shm = world
    args = {"mprotect": ("r",), "madvise": ("dontfork",)}.get(op, ())
    with raises(op, "unknown region", repr(bad)):
        getattr(p, op)(bad, *args)


# --- pages ----------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["read", "write"])
@pytest.mark.parametrize("pages,shown", [
    (16, "16"), (-1, "-1"), (10**12, str(10**12)),
    (range(0, 17), "range(0, 17)"), (range(-1, 3), "range(-1, 3)"), (range(20, 10, -1), "range(20, 10, -1)"),
    ([0, 3, 16], "16"), (np.array([2, -5, 1]), "-5"), (np.array([99], dtype=np.uint32), "99"),
])
def test_page_out_of_range(world, op, pages, shown):
    sc, p, heap, shm = world
    n = len(sc.ops)
    with raises(op, shown):
        getattr(p, op)(heap, pages=pages)
    assert len(sc.ops) == n


@pytest.mark.parametrize("pages", [np.zeros((2, 2), dtype=np.int64), np.array([0.5]), "0-3", [[1]], 1.0, True])
def test_pages_of_the_wrong_kind(world, pages):
    sc, p, heap, shm = world
    with raises("write", "pages"):
        p.write(heap, pages=pages)


def test_sequential_start_outside_the_region(world):
    sc, p, heap, shm = world
    with raises("read", "16"):
        p.read(heap, pages=cb.sequential(start=16))


@pytest.mark.parametrize("value", [0, -3, 1.5, True, "x"])
def test_bad_write_value(world, value):
    sc, p, heap, shm = world
    with raises("write", "value", repr(value)):
        p.write(heap, value=value)


# --- sizes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("size", ["12 parsecs", -1, "0", 0, "-4KiB", "", 1.5, None, True, "4 KiBs"])
def test_bad_mmap_size(sc, size):
    p = sc.spawn("p")
    with raises("mmap", "size", repr(size)):
        p.mmap("r", size)
    assert len(sc.regions) == 0


@pytest.mark.parametrize("kw,param", [({"phys_mem": "12 parsecs"}, "phys_mem"), ({"phys_mem": -1}, "phys_mem"),
                                      ({"phys_mem": "0"}, "phys_mem"), ({"phys_mem": 4096}, "phys_mem"),
                                      ({"page_size": 3000}, "page_size"), ({"page_size": 0}, "page_size")])
def test_bad_scenario_sizes(kw, param):
    with raises("Scenario", param):
        cb.Scenario(**kw)


# --- choices ---------------------------------------------------------------------------------

@pytest.mark.parametrize("prot", ["wx", "RW", "", None])
def test_unknown_prot(world, prot):
    sc, p, heap, shm = world
    with raises("mmap", "prot", repr(prot)):
        p.mmap("r", PAGE, prot=prot)
    with raises("mprotect", "prot", repr(prot)):
        p.mprotect(heap, prot)


@pytest.mark.parametrize("advice", ["willneed", "DONTFORK", "hugepage-ish", None])
def test_unknown_advice(world, advice):
    sc, p, heap, shm = world
    n = len(sc.ops)
    with raises("madvise", "advice", repr(advice)):
        p.madvise(heap, advice)
    assert len(sc.ops) == n


@pytest.mark.parametrize("on_fork", ["keeponfork", "never", None])
def test_unknown_on_fork(sc, on_fork):
    p = sc.spawn("p")
    with raises("mmap", "on_fork", repr(on_fork)):
        p.mmap("r", PAGE, on_fork=on_fork)


def test_wipeonfork_on_a_shared_region_is_einval(world):
    sc, p, heap, shm = world
    with raises("madvise", "wipeonfork", "shm"):
        p.madvise(shm, "wipeonfork")
    with raises("mmap", "wipeonfork", "shm2"):
        p.mmap("shm2", PAGE, shared=True, on_fork="wipeonfork")


# --- mapped or not -------------------------------------------------------------------------

@pytest.mark.parametrize("op,args", [("munmap", ()), ("mprotect", ("r",)), ("madvise", ("dontfork",))])
def test_region_not_mapped(world, op, args):
    sc, p, heap, shm = world
    p.munmap(heap)
    with raises(op, "heap", "not mapped"):
        getattr(p, op)(heap, *args)
    q = sc.spawn("q")                         # another address space never mapped it
    with raises(op, "shm", "not mapped"):
        getattr(q, op)(shm, *args)


def test_a_region_mapped_after_exec_is_gone(world):
    sc, p, heap, shm = world
    p.exec()
    with raises("munmap", "heap", "not mapped"):
        p.munmap(heap)


# --- process life ------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["read", "write", "fork", "vfork", "exec", "exit", "mmap", "munmap", "mprotect",
                                "madvise"])
def test_acting_after_exit(world, op):
    sc, p, heap, shm = world
    p.exit()
    n = len(sc.ops)
    args = {"read": (heap,), "write": (heap,), "mmap": ("r", PAGE), "munmap": (heap,), "mprotect": (heap, "r"),
            "madvise": (heap, "dontfork")}.get(op, ())
    with raises(op, "'p'", "exited"):
        getattr(p, op)(*args)
    assert len(sc.ops) == n


@pytest.mark.parametrize("op", ["read", "write", "fork", "vfork", "exec", "exit", "mmap"])
def test_vfork_parent_acting_before_its_child_execs_or_exits(world, op):
    sc, p, heap, shm = world
    kid = p.vfork("kid")
    args = {"read": (heap,), "write": (heap,), "mmap": ("r", PAGE)}.get(op, ())
    with raises(op, "'p'", "vfork"):
        getattr(p, op)(*args)
    kid.exec()
    getattr(p, op)(*args)                    # resumed: now legal


def test_vfork_parent_resumes_when_its_child_exits(world):
    sc, p, heap, shm = world
    kid = p.vfork("kid")
    grandkid = kid.vfork("grandkid")
    with raises("write", "'kid'", "vfork"):
        kid.write(heap)
    grandkid.exit()
    kid.write(heap)
    with raises("write", "'p'", "vfork"):
        p.write(heap)
    kid.exit()
    p.write(heap)


@pytest.mark.parametrize("name", [3, b"x"])
def test_bad_process_and_region_names(sc, name):
    with raises("spawn", "name", repr(name)):
        sc.spawn(name)
    p = sc.spawn("p")
    with raises("fork", "name", repr(name)):
        p.fork(name)
    with raises("mmap", "name", repr(name)):
        p.mmap(name, PAGE)


# --- patterns ----------------------------------------------------------------------------------

@pytest.mark.parametrize("make,param,value", [
    (lambda: cb.uniform(-1), "count", "-1"), (lambda: cb.uniform(2.5), "count", "2.5"),
    (lambda: cb.uniform(3, seed=-1), "seed", "-1"), (lambda: cb.uniform(3, seed=2**63), "seed", str(2**63)),
    (lambda: cb.zipf(3, s=0), "s", "0"), (lambda: cb.zipf(3, s=-1.0), "s", "-1.0"), (lambda: cb.zipf(3, s=21), "s", "21"),
    (lambda: cb.hotset(3, hot=1.5), "hot", "1.5"), (lambda: cb.hotset(3, p_hot=-0.1), "p_hot", "-0.1"),
    (lambda: cb.sequential(3, stride=0), "stride", "0"), (lambda: cb.sequential(3, start=-2), "start", "-2"),
    (lambda: cb.sequential(-3), "count", "-3"),
])
def test_bad_pattern_parameters(make, param, value):
    with raises(param, value):
        make()


# --- simulate ------------------------------------------------------------------------------------

def test_unknown_policy(world):
    sc, p, heap, shm = world
    with raises("The 'policy' parameter of simulate must be one of", "'lazy'"):
        cb.simulate(sc, policy="lazy")


def test_unknown_oom(world):
    sc, p, heap, shm = world
    with raises("The 'oom' parameter of simulate must be one of", "'random'"):
        cb.simulate(sc, oom="random")


def test_zero_page_must_be_a_bool(world):
    sc, p, heap, shm = world
    with raises("zero_page", "'yes'"):
        cb.simulate(sc, zero_page="yes")


# --- Scenario.concurrently ----------------------------------------------------------------------

@pytest.mark.parametrize("op", ["fork", "vfork", "mmap", "exec", "exit", "munmap", "mprotect", "madvise"])
def test_only_reads_and_writes_run_concurrently_and_a_refused_op_leaves_no_trace(world, op):
    """Inside concurrently() only read and write may be recorded; any other op
    raises, naming itself, and leaves the scenario as it was: no phantom
    process or region that no op ever created."""
    sc, p, heap, shm = world
    args = {"mmap": ("r", PAGE), "munmap": (heap,), "mprotect": (heap, "r"), "madvise": (heap, "dontfork")}
    n_procs, n_regions, n_ops = len(sc.processes), len(sc.regions), len(sc.ops)
    with sc.concurrently():
        with raises(op, "concurrently"):
            getattr(p, op)(*args.get(op, ()))
    assert (len(sc.processes), len(sc.regions), len(sc.ops)) == (n_procs, n_regions, n_ops)
    p.write(heap)                            # p can still act
    cb.simulate(sc)


@pytest.mark.parametrize("bad,grain,seed,samples", [
    ("grain", 0, 0, 1), ("grain", -1, 0, 1), ("grain", 1.5, 0, 1), ("grain", True, 0, 1), ("seed", 1, -1, 1),
    ("samples", 1, 0, -1), ("samples", 1, 0, False), ("samples", 1, 0, "9")])
def test_bad_concurrently_parameters(sc, bad, grain, seed, samples):
    with raises("concurrently", f"'{bad}'"):
        with sc.concurrently(grain=grain, seed=seed, samples=samples):
            pass


def test_concurrently_does_not_nest(sc):
    with sc.concurrently():
        with raises("concurrently", "nest"):
            with sc.concurrently():
                pass


# --- issue #14: each bad input its reporter found, refused at the call -----------------------

class _BadRepr:
    def __repr__(self):
        raise RuntimeError("repr")


@pytest.mark.parametrize("kwargs, names", [
    (dict(kind=-1, count=1), ["kind", "-1"]),
    (dict(kind=99, count=1), ["kind", "99"]),
    (dict(kind=True, count=1), ["kind", "True"]),
    (dict(kind=1, count=-5), ["count", "-5"]),
    (dict(kind=1, count=2**63), ["count"]),
    (dict(kind=2, count=5, a=float("nan")), ["zipf s", "nan"]),
    (dict(kind=2, count=5, a=float("inf")), ["zipf s", "inf"]),
    (dict(kind=3, count=5, a=0.5, b=1.5), ["p_hot", "1.5"]),
    (dict(kind=1, count=5, a=2.0), ["unused by uniform"]),
    (dict(kind=0, count=5, a=0, b=0), ["stride", "0"]),
    (dict(kind=0, count=5, a=1.5, b=1), ["start", "1.5"]),
    (dict(kind=1, count=5, first=-1), ["first", "-1"]),
    (dict(kind=1, count=5, seed=2**63), ["seed"]),
])
def test_a_hand_built_pattern_is_checked_where_it_is_made(kwargs, names):
    with raises("Pattern", *names):
        cb.Pattern(**kwargs)


def test_the_segfault_reproducer_is_refused_at_the_call():
    sc = cb.Scenario(phys_mem="8TiB")
    p = sc.spawn("p")
    big, small = p.mmap("big", "1TiB"), p.mmap("small", "8KiB")
    p.write(big, pages=np.array([2**28 - 1]))
    kids = [p.fork() for _ in range(3)]
    with raises("kind", "-1"):
        kids[0].write(small, pages=cb.Pattern(kind=-1, count=1))
    res = cb.simulate(sc, overcommit=1, keep_state=True)
    res.check_invariants()
    assert res.processes.rss_pages.max() == 1


@pytest.mark.parametrize("make, names", [
    (lambda: cb.Scenario(phys_mem=2**80), ["phys_mem"]),
    (lambda: cb.Scenario(phys_mem="99999999999999999999TiB"), ["phys_mem"]),
    (lambda: cb.Scenario(phys_mem="8PiB"), ["phys_mem"]),
    (lambda: cb.Scenario(phys_mem=2**53), ["phys_mem", "4 PiB"]),
    (lambda: cb.uniform(2**63), ["count", "uniform"]),
    (lambda: cb.uniform(2**63 - 1), ["count", "uniform"]),
    (lambda: cb.zipf(10, s=float("nan")), ["'s'", "zipf"]),
    (lambda: cb.hotset(10, hot=float("inf")), ["hot", "hotset"]),
    (lambda: cb.sequential(5, stride=0), ["stride"]),
    (lambda: cb.Scenario(page_size=512), ["page_size", "512"]),
    (lambda: cb.Scenario(page_size=1), ["page_size"]),
])
def test_sizes_and_counts_out_of_reach(make, names):
    with raises(*names):
        make()


@pytest.mark.parametrize("pages, names", [
    (range(0, 10**20), ["write", "range(0, 100000000000000000000)"]),
    (slice(None, None, 0), ["write", "slice step cannot be zero"]),
    (np.uint64(2**64 - 1), ["write", "18446744073709551615"]),
    (np.array([2**64 - 1], dtype=np.uint64), ["write", "18446744073709551615"]),
    (np.array([[1]]), ["write", "1-D integer array"]),
    ([1, [2]], ["write", "1-D integer array"]),
    (_BadRepr(), ["write", "repr failed"]),
])
def test_page_sets_out_of_reach(world, pages, names):
    sc, p, heap, _ = world
    with raises(*names):
        p.write(heap, pages=pages)
    assert len(sc.ops) == 3              # spawn, two mmaps and nothing else


def test_a_numpy_array_is_no_choice(world):
    sc, p, heap, _ = world
    with raises("prot", "mprotect", "array"):
        p.mprotect(heap, np.array(["rw", "r"]))
    with raises("policy", "simulate", "array"):
        cb.simulate(sc, policy=np.array(["cow", "odf"]))


@pytest.mark.parametrize("size", ["9" * 400, np.array([4096]), 2**63, _BadRepr(), 4096.0])
def test_mmap_sizes_that_are_no_size(world, size):
    _, p, _, _ = world
    with raises("size", "mmap"):
        p.mmap("x", size)


def test_a_name_whose_repr_raises_is_reported_not_raised(world):
    _, p, _, _ = world
    with raises("name", "mmap", "repr failed"):
        p.mmap(_BadRepr(), 4096)


def test_sequential_strides_stay_exact():
    """Strides past 2**53 (a float's mantissa) and past 2**63 wrap exactly, as integers do."""
    for start, stride in ((1, 2**70), (0, 2**53 + 1), (7, 2**64 - 3)):
        got = cb.sequential(5, start=start, stride=stride).pages(1000)
        assert got.tolist() == [(start + i * stride) % 1000 for i in range(5)]
    big = cb.sequential(4, stride=3).piece(2**52, 2**52 + 4)        # far into the sequence: no overflow
    assert big.pages(2**35 - 1).tolist() == [(3 * (2**52 + i)) % (2**35 - 1) for i in range(4)]


def test_a_process_maps_at_most_128_tib():
    sc = cb.Scenario(phys_mem="8TiB")
    p = sc.spawn("p")
    for i in range(1):
        p.mmap(f"m{i}", "100TiB")
    with raises("mmap", "128 TiB", "ENOMEM"):
        p.mmap("m1", "100TiB")
    kid = p.fork("kid")                                # the child inherits the 100 TiB
    with raises("mmap", "ENOMEM"):
        kid.mmap("more", "30TiB")
    kid.exec()                                         # a fresh address space
    kid.mmap("more", "30TiB")


@pytest.mark.parametrize("call, names", [
    (lambda sc, p: p.mmap("y", 4096, shared=1.0), ["shared", "1.0"]),
    (lambda sc, p: p.mmap("y", 4096, thp=1), ["thp"]),
    (lambda sc, p: cb.simulate(sc, zero_page=1.0), ["zero_page"]),
    (lambda sc, p: cb.simulate(sc, overcommit=True), ["overcommit", "True"]),
    (lambda sc, p: cb.simulate(sc, keep_state="yes"), ["keep_state"]),
    (lambda sc, p: cb.simulate(sc, progress=2), ["progress"]),
])
def test_lenient_values_are_refused(world, call, names):
    sc, p, _, _ = world
    with raises(*names):
        call(sc, p)


def test_a_cost_model_for_other_pages_is_refused():
    import dataclasses

    sc = cb.Scenario(page_size=16384)
    sc.spawn("p")
    with raises("16384", "4096"):
        cb.simulate(sc)
    costs = dataclasses.replace(cb.CostModel.default(), page_size=16384)
    assert cb.simulate(sc, costs=costs).summary.processes == 1


def test_sparse_writes_in_a_large_region_are_not_refused():
    """The room check reserved 512 frames a touch, as if every region had huge pages."""
    sc = cb.Scenario(phys_mem="8TiB")
    p = sc.spawn("p")
    big = p.mmap("big", "1TiB")
    p.write(big, pages=cb.uniform(524_289))
    s = cb.simulate(sc).summary
    assert 520_000 < s.zero_fills == s.minor_faults <= 524_289       # distinct pages of 2**28
    assert s.frames_used == s.zero_fills + s.pte_frames
