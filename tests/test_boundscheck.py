"""Compiling the kernels: the debug switch and the cache.

COWBENCH_BOUNDSCHECK=1 runs the kernels with bounds checks. Numba checks no
index by default, so a bad index that got past validation would corrupt
memory silently. These tests run in a subprocess because the switch must be
set before Numba compiles anything. The cache must never hand back kernels
compiled from older code than the sources they take in.
"""
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow


def run_debug(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, COWBENCH_BOUNDSCHECK="1")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=900)


def test_a_bad_index_in_a_kernel_raises_instead_of_corrupting_memory():
    out = run_debug("""
        import numpy as np
        import cowbench as cb
        from cowbench import _kernels as K
        from cowbench.engine import compile_scenario, _new_machine
        sc = cb.Scenario(phys_mem="1MiB")
        p = sc.spawn("p")
        p.mmap("heap", "64KiB")
        m = _new_machine(compile_scenario(sc), sc.frames, K.POLICY_COW, K.OOM_LARGEST, True)
        try:
            K.set_pte(K.machine_ref(m), 0, 0, 10**6, 0, np.int32(8))   # table 10**6 does not exist
        except IndexError as e:
            print("IndexError", e)
    """)
    assert out.returncode == 0, out.stderr
    assert "IndexError" in out.stdout


def test_a_full_scenario_runs_clean_under_bounds_checking():
    out = run_debug("""
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
    """)
    assert out.returncode == 0, out.stderr
    assert "minor_faults" in out.stdout


def test_cached_kernels_older_than_the_code_they_compile_in_are_dropped(tmp_path):
    """The kernels' cache entries are keyed by _kernels.py alone; entries older
    than patterns.py or scenario.py (whose code they compile in) are deleted,
    index and data files, and nothing else is."""
    import time

    from cowbench._kernels import drop_stale_cache

    old = ["_kernels.run-10.py311.nbi", "_kernels.run-10.py311.1.nbc", "_kernels.run-10.py311.2.nbc"]
    new = ["_kernels.step-20.py311.nbi", "_kernels.step-20.py311.1.nbc"]
    others = ["patterns._pattern_fill-5.py311.nbi", "patterns._pattern_fill-5.py311.1.nbc"]
    for name in old + new + others:
        (tmp_path / name).write_bytes(b"cached")
    now = time.time()
    for name in old + others:
        os.utime(tmp_path / name, (now - 100, now - 100))
    assert drop_stale_cache(str(tmp_path), now - 50) == 3
    assert sorted(os.listdir(tmp_path)) == sorted(new + others)
    assert drop_stale_cache(str(tmp_path), now - 50) == 0
