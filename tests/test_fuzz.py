"""A fuzzer of the public API: hostile and extreme input, each case in a worker process.

Hypothesis builds cases (tests/fuzz_worker.py runs them): a scenario, processes,
regions, descriptors, touches with page sets of every shape, patterns built by
hand, and a simulate call, where every argument is drawn either from values that
make sense or from a pool of hostile ones (NaN, infinities, 2**63, 2**64, arrays
where a choice is expected, huge strings, objects whose repr raises). Every call
must work or raise ScenarioError; a run that works must be consistent. A segfault
or a hang of the worker fails the test instead of killing it.

The budget: COWBENCH_FUZZ_EXAMPLES cases (default 150, about half a minute).
`COWBENCH_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz.py -s` prints the counts of a
long run.
"""
from __future__ import annotations

import collections
import math
import os
import pickle
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_worker import Ref

WORKER = Path(__file__).with_name("fuzz_worker.py")
EXAMPLES = int(os.environ.get("COWBENCH_FUZZ_EXAMPLES", "150"))
CASE_TIMEOUT = 120.0         # s; the worker's first case may compile the kernels
HOSTILE = [None, True, False, 0, -1, 1, 3, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -2**63,
           10**20, 0.5, 1.0, -0.0, math.nan, math.inf, -math.inf, 1e308, "", "x", "rw", "64MiB", "1e3",
           "-4KiB", "9" * 400, "99999999999999999999TiB", np.int64(5), np.uint64(2**64 - 1), np.float32(1.5),
           np.float64(math.nan), np.bool_(True), np.array([1, 2]), np.array([]), np.array([[1]]),
           np.array(["rw"]), np.array([2**63], dtype=np.uint64), [1, 2], [], [-1], (1,), {}, {"a": 1},
           range(0, 10**20), range(5, -1, -1), range(0, 3), slice(None, None, 0), slice(0, 3), slice(-2, None),
           b"rw", 1 + 1j, "<evil>", object()]
hostile = st.sampled_from(HOSTILE)


def maybe(valid, hostile_in=8):
    """Mostly a sensible value; one time in `hostile_in`, a hostile one."""
    return st.integers(1, hostile_in).flatmap(lambda i: hostile if i == 3 else valid)   # not a bound: hypothesis favours those


sizes = maybe(st.sampled_from([4096, "8KiB", "64KiB", "1MiB", "2MiB", "4MiB", "1GiB", "1TiB", 12345]))
counts = maybe(st.integers(0, 5000))
seeds = maybe(st.integers(0, 2**63 - 1))
fractions = maybe(st.floats(0, 1))
patterns = st.one_of(
    st.tuples(st.just("<pattern>"), st.just("uniform"), st.tuples(counts, seeds)),
    st.tuples(st.just("<pattern>"), st.just("zipf"), st.tuples(counts, maybe(st.floats(0.01, 20)), seeds)),
    st.tuples(st.just("<pattern>"), st.just("sequential"),
              st.tuples(maybe(st.one_of(st.none(), st.integers(0, 5000))), maybe(st.integers(0, 600)),
                        maybe(st.integers(1, 2**70)))),
    st.tuples(st.just("<pattern>"), st.just("hotset"), st.tuples(counts, fractions, fractions, seeds)),
    st.tuples(st.just("<pattern>"), st.just("Pattern"),
              st.tuples(maybe(st.integers(-1, 4)), counts, seeds, maybe(st.floats(allow_nan=True)),
                        maybe(st.floats(allow_nan=True)), maybe(st.integers(0, 10**6)))),
)
pages = st.one_of(st.none(), patterns, maybe(st.integers(0, 600)),
                  st.builds(lambda a, b: range(a, b), st.integers(-5, 600), st.integers(-5, 600)),
                  st.lists(st.integers(-2, 600), max_size=20).map(lambda x: np.array(x, dtype=np.int64)),
                  hostile)
proc, region, file_, fd = (st.builds(Ref, st.just(k), st.integers(0, 5)) for k in ("proc", "region", "file", "fd"))
steps = st.one_of(
    st.tuples(st.just("spawn"), st.tuples(maybe(st.just("p")))),
    st.tuples(st.sampled_from(["fork", "vfork"]), st.tuples(proc, maybe(st.just("kid")))),
    st.tuples(st.sampled_from(["exec", "exit"]), st.tuples(proc)),
    st.tuples(st.just("mmap"), st.tuples(proc, maybe(st.just("heap")), sizes, maybe(st.booleans()),
                                         maybe(st.sampled_from(["r", "rw", "rx", "none", "rwx"])),
                                         maybe(st.sampled_from(["copy", "dontfork", "wipeonfork"])),
                                         maybe(st.booleans()))),
    st.tuples(st.sampled_from(["write", "read", "pin", "unpin"]), st.tuples(proc, maybe(region), pages)),
    st.tuples(st.just("write"), st.tuples(proc, region, pages, maybe(st.integers(0, 100)))),
    st.tuples(st.just("mprotect"), st.tuples(proc, maybe(region), maybe(st.sampled_from(["r", "rw", "none"])))),
    st.tuples(st.just("madvise"), st.tuples(proc, maybe(region),
                                            maybe(st.sampled_from(["dontfork", "dofork", "hugepage",
                                                                   "wipeonfork"])))),
    st.tuples(st.just("munmap"), st.tuples(proc, maybe(region))),
    st.tuples(st.just("concurrently"), st.tuples(proc, region, pages, maybe(st.integers(1, 64)), seeds)),
    st.tuples(st.just("file"), st.tuples(maybe(st.just("f")), maybe(st.sampled_from([0, 100, "4KiB"])))),
    st.tuples(st.just("open"), st.tuples(proc, maybe(file_), maybe(st.sampled_from(["r", "r+", "w", "a"])),
                                         maybe(st.booleans()))),
    st.tuples(st.sampled_from(["read_fd", "write_fd"]), st.tuples(proc, maybe(fd), maybe(st.integers(0, 9999)))),
    st.tuples(st.just("lseek"), st.tuples(proc, maybe(fd), maybe(st.integers(-10, 9999)),
                                          maybe(st.sampled_from(["set", "cur", "end"])))),
    st.tuples(st.sampled_from(["dup", "close"]), st.tuples(proc, maybe(fd))),
)
scenario = st.tuples(st.just("Scenario"), st.tuples(maybe(st.sampled_from(["64MiB", "1GiB", "8TiB", 2**20]), 20),
                                                    maybe(st.sampled_from([4096] * 7 + [16384]), 20)))
simulate_args = st.fixed_dictionaries({}, optional={   # each hostile one time in 8: most runs go through
    "policy": maybe(st.sampled_from(["cow", "eager", "odf"])), "oom": maybe(st.sampled_from(["largest", "faulting"])),
    "thp_cow": maybe(st.sampled_from(["split", "copy"])), "overcommit": maybe(st.sampled_from([0, 1, 2])),
    "overcommit_ratio": maybe(st.integers(0, 200)), "zero_page": maybe(st.booleans()),
    "progress": maybe(st.just(False)),
    "costs": maybe(st.fixed_dictionaries({k: maybe(st.floats(0, 1e6)) for k in
                                          ("fork_base_ns", "fork_pte_ns", "fork_table_ns", "fork_page_ns",
                                           "zero_fill_ns", "cow_copy_ns", "reuse_ns", "map_ns", "exit_pte_ns",
                                           "exit_page_ns")})),
})
cases = st.tuples(st.tuples(scenario, st.tuples(st.just("spawn"), st.tuples(st.just("root"))))
                  .map(list).flatmap(lambda head: st.lists(steps, min_size=3, max_size=14).map(lambda rest: head + rest)),
                  simulate_args)


class Worker:
    """The worker process, restarted after a crash; run() returns (outcome, detail)."""

    def __init__(self):
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     cwd=str(WORKER.parent))

    def run(self, case, timeout=CASE_TIMEOUT):
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        data = pickle.dumps(case)
        self.proc.stdin.write(struct.pack("<q", len(data)) + data)
        self.proc.stdin.flush()
        timer = threading.Timer(timeout, self.proc.kill)
        timer.start()
        try:
            head = self.proc.stdout.read(8)
            reply = self.proc.stdout.read(struct.unpack("<q", head)[0]) if len(head) == 8 else b""
        finally:
            timed_out = not timer.is_alive() and self.proc.poll() is not None
            timer.cancel()
        if len(reply) == 0:
            code = self.proc.wait()
            self.proc = None
            return ("hang" if timed_out else "crash"), f"worker exit status {code}"
        return pickle.loads(reply)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.stop()


COUNTS: collections.Counter = collections.Counter()


@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(case=cases)
def test_no_input_crashes_or_corrupts(worker, case):
    outcome, detail = worker.run(case)
    COUNTS[outcome] += 1
    assert outcome in ("simulated", "refused", "skipped"), f"{outcome}: {detail}\ncase: {case!r}"


def test_fuzz_counts(worker):
    """The counts of the run above (printed with -s). The fuzzer must reach the engine:
    a fair share of its cases get through the builder and simulate (hostile values
    elsewhere in the case refused), or it tests only the first checks it meets."""
    if not COUNTS:
        pytest.skip("runs after test_no_input_crashes_or_corrupts")
    print(f"\nfuzz: {sum(COUNTS.values())} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(COUNTS.items())))
    assert COUNTS["simulated"] >= 0.2 * sum(COUNTS.values())


def test_the_worker_reports_a_crash_as_a_failure(worker):
    """The harness itself: a worker that dies mid-case is reported, not waited on."""
    outcome, _ = worker.run(([("Scenario", ()), ("__crash__", ())], {}), timeout=60)
    assert outcome == "crash"


@pytest.mark.parametrize("name", ["kind", "count", "a"])
def test_the_issue_reproducers_are_refused(worker, name):
    """Issue #14's SIGSEGV and silent corruption: hand-built patterns reach the engine no more."""
    bad = {"kind": (-1, 1, 0, 0.0, 0.0, 0), "count": (1, -5, 0, 0.0, 0.0, 0), "a": (2, 5, 0, math.nan, 0.0, 0)}[name]
    case = ([("Scenario", ("8TiB",)), ("spawn", ("p",)),
             ("mmap", (Ref("proc", 0), "big", "1TiB", False, "rw", "copy", False)),
             ("mmap", (Ref("proc", 0), "small", "8KiB", False, "rw", "copy", False)),
             ("write", (Ref("proc", 0), Ref("region", 0), np.array([2**28 - 1]))),
             ("fork", (Ref("proc", 0), "k")),
             ("write", (Ref("proc", 1), Ref("region", 1), ("<pattern>", "Pattern", bad)))], {"overcommit": 1})
    outcome, detail = worker.run(case)
    assert (outcome, detail) == ("simulated", "1 of 7 calls refused")
