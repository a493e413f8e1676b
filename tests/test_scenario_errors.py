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


@pytest.mark.parametrize("grain,seed", [(0, 0), (-1, 0), (1.5, 0), (1, -1), (True, 0)])
def test_bad_concurrently_parameters(sc, grain, seed):
    with raises("concurrently"):
        with sc.concurrently(grain=grain, seed=seed):
            pass


def test_concurrently_does_not_nest(sc):
    with sc.concurrently():
        with raises("concurrently", "nest"):
            with sc.concurrently():
                pass
