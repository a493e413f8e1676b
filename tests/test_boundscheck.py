"""Compiling the kernels: the debug switch and the cache.

COWBENCH_BOUNDSCHECK=1 runs the kernels with bounds checks. Numba checks no
index by default, so a bad index that got past validation would corrupt
memory silently. These tests run in a subprocess because the switch must be
set before Numba compiles anything. The cache must never hand back kernels
compiled from older code than the sources they take in.
"""
import atexit
import os
import subprocess
import sys
import tempfile
import textwrap

import pytest

pytestmark = pytest.mark.slow


def run_debug(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, COWBENCH_BOUNDSCHECK="1")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=900)


# The two tests that compile the whole engine again (under bounds checking; in a
# copy after an edit) take minutes each. conftest.py starts them as background
# processes when the session's tests are collected and runs these tests last, so
# the compiles use the second core while the rest of the suite runs on the first.
BACKGROUND: dict[str, tuple[subprocess.Popen, str, str]] = {}


def start_background(test_names) -> None:
    jobs = {"test_a_full_scenario_runs_clean_under_bounds_checking":
            (FULL_SCENARIO, dict(os.environ, COWBENCH_BOUNDSCHECK="1")),
            "test_an_edit_to_any_engine_file_takes_effect_in_every_kernel_that_compiles_it_in":
            (EDIT_DRIVER, {k: v for k, v in os.environ.items() if k != "COWBENCH_BOUNDSCHECK"})}
    for name in test_names:
        if name in jobs and name not in BACKGROUND:
            code, env = jobs[name]
            out, err = (tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False) for _ in range(2))
            proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, stdout=out,
                                    stderr=err, text=True)
            BACKGROUND[name] = (proc, out.name, err.name)
            atexit.register(_reap, proc, out.name, err.name)


def background(name: str) -> subprocess.CompletedProcess:
    """The finished background run of test `name` (started now if conftest did not)."""
    if name not in BACKGROUND:
        start_background([name])
    proc, out, err = BACKGROUND[name]
    proc.wait(timeout=1800)
    with open(out) as fo, open(err) as fe:
        return subprocess.CompletedProcess(proc.args, proc.returncode, fo.read(), fe.read())


def _reap(proc, *paths):
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for p in paths:
        os.unlink(p)


def test_a_bad_index_in_a_kernel_raises_instead_of_corrupting_memory():
    out = run_debug("""
        import numpy as np
        import cowbench as cb
        from cowbench._engine import abi
        from cowbench._engine.machine import machine_ref, new_machine
        from cowbench._engine.mmap import set_pte
        from cowbench.simulator import compile_scenario
        sc = cb.Scenario(phys_mem="1MiB")
        p = sc.spawn("p")
        p.mmap("heap", "64KiB")
        m = new_machine(compile_scenario(sc), sc.frames, abi.POLICY_COW, abi.OOM_LARGEST, True)
        try:
            set_pte(machine_ref(m), 0, 0, 10**6, 0, np.int32(8))   # table 10**6 does not exist
        except IndexError as e:
            print("IndexError", e)
    """)
    assert out.returncode == 0, out.stderr
    assert "IndexError" in out.stdout


FULL_SCENARIO = """
        import cowbench as cb
        sc = cb.Scenario(phys_mem="8MiB")
        root = sc.spawn("root")
        heap = root.mmap("heap", "3MiB")
        shm = root.mmap("shm", "64KiB", shared=True)
        root.write(heap, pages=cb.zipf(count=3000, s=1.1, seed=1))
        root.read(shm)
        kid = root.fork("kid")
        kid.write(heap, pages=cb.uniform(count=2000, seed=2))
        kid.write(shm)
        v = kid.vfork("v")
        v.exec()
        v.write(v.mmap("own", "32KiB"))
        kid.exit()
        root.write(heap)                 # needs more frames than there are: OOM
        res = cb.simulate(sc, policy="cow", keep_state=True)
        res.check_invariants()
        print(res.processes[["state", "minor_faults", "cow_copies"]].to_dict("list"))
"""


def test_a_full_scenario_runs_clean_under_bounds_checking():
    out = background("test_a_full_scenario_runs_clean_under_bounds_checking")
    assert out.returncode == 0, out.stderr
    assert "minor_faults" in out.stdout


def test_a_changed_source_drops_the_whole_engine_cache_and_nothing_else(tmp_path):
    """drop_stale_cache deletes every cached kernel (index and data files) of a
    cache directory whose recorded sources hash differs, records the new one,
    and leaves other files alone; with the hash current it deletes nothing."""
    from cowbench._engine import STAMP, drop_stale_cache

    cached = ["touch.touch_each-41.py311.nbi", "touch.touch_each-41.py311.1.nbc", "loop.run-120.py311.nbi"]
    others = ["touch.cpython-311.pyc", "README"]
    for name in cached + others:
        (tmp_path / name).write_bytes(b"x")
    assert drop_stale_cache(str(tmp_path), "new") == 3
    assert sorted(os.listdir(tmp_path)) == sorted(others + [STAMP])
    (tmp_path / cached[0]).write_bytes(b"x")
    assert drop_stale_cache(str(tmp_path), "new") == 0           # current: kept
    assert drop_stale_cache(str(tmp_path), "newer") == 1


def test_the_engine_finds_numbas_cache():
    """If it could not, keep_cache_current would warn instead of checking anything."""
    from cowbench._engine import cache_dirs

    dirs = cache_dirs()
    assert dirs and all(os.path.isdir(d) for d in dirs)


FAULT_AROUND = """
    import cowbench as cb
    sc = cb.Scenario(phys_mem="64MiB")
    p = sc.spawn("p")
    shm = p.mmap("shm", "256KiB", shared=True)
    p.write(shm)
    kid = p.fork("kid")
    kid.read(shm)
    print(cb.__file__, int(cb.simulate(sc).processes.minor_faults.iloc[1]))
"""


EDIT_DRIVER = f"""
import os, shutil, subprocess, sys, tempfile
import cowbench
root = tempfile.mkdtemp()
try:
    copy = os.path.join(root, "cowbench")
    shutil.copytree(os.path.dirname(cowbench.__file__), copy)        # copy2: the cache stays valid
    env = dict(os.environ, PYTHONPATH=root)
    def faults():
        out = subprocess.run([sys.executable, "-c", {textwrap.dedent(FAULT_AROUND)!r}], env=env, cwd=root,
                             capture_output=True, text=True, timeout=900)
        if out.returncode:
            sys.exit(out.stderr)
        where, n = out.stdout.split()
        return where.startswith(copy), int(n)
    before = faults()
    abi = os.path.join(copy, "_engine", "abi.py")
    text = open(abi).read()
    edited = text.replace("FAULT_AROUND_PAGES = 16 ", "FAULT_AROUND_PAGES = 8 ")
    open(abi, "w").write(edited)
    print(before[0], before[1], edited != text, *faults())
finally:
    shutil.rmtree(root)
"""


def test_an_edit_to_any_engine_file_takes_effect_in_every_kernel_that_compiles_it_in():
    """Numba keys a cached kernel by its own file, but run() compiles in the
    fault path of memory.py and the constants of abi.py. In a copy of the
    package (cache included), the child's 64 reads of a shared region take 4
    faults (fault-around maps 16 pages); halve FAULT_AROUND_PAGES in abi.py
    and the same run takes 8: the stale kernels were not used."""
    out = background("test_an_edit_to_any_engine_file_takes_effect_in_every_kernel_that_compiles_it_in")
    assert out.returncode == 0, out.stderr
    copied, before, edited, copied_after, after = out.stdout.split()
    assert copied == copied_after == edited == "True"     # the copy ran, and abi.py held the line edited
    assert (int(before), int(after)) == (4, 8)
