"""The fuzzer's worker: runs cases of public-API calls in its own process, one at a time.

tests/test_fuzz.py starts it, sends each case (pickled, length-prefixed, on stdin)
and reads one outcome back (on stdout). A case is a list of steps, each an API call
with arguments that are either sensible or hostile; references to earlier results
(processes, regions, descriptors) are indices into what the case has built. Every
step must either work or raise cowbench.ScenarioError; then the scenario is
simulated, and a run that succeeds must be consistent (pss <= rss, uss <= rss,
the machine's invariants). A crash of this process (a segfault) or a hang is the
test's to see: it is why the cases run here and not in the test process.
"""
from __future__ import annotations

import math
import os
import pickle
import struct
import sys
import traceback

import numpy as np

import cowbench as cb

MAX_TOUCHES = 10**7          # a valid case this large is skipped, not run: it would be slow, not wrong
MAX_MAPPED = 1 << 41         # likewise address space over 2 TiB (sparse state: issue #15)


class Ref:
    """The i-th object of a kind the case made so far (modulo how many there are)."""

    def __init__(self, kind: str, i: int):
        self.kind, self.i = kind, i


class Evil:
    """A value whose every protocol raises: repr, index, eq, hash, len, iter, float."""

    def __repr__(self):
        raise RuntimeError("Evil.__repr__")

    def __index__(self):
        raise RuntimeError("Evil.__index__")

    def __eq__(self, other):
        raise RuntimeError("Evil.__eq__")

    __hash__ = None

    def __len__(self):
        raise RuntimeError("Evil.__len__")

    def __iter__(self):
        raise RuntimeError("Evil.__iter__")

    def __float__(self):
        raise RuntimeError("Evil.__float__")


def _resolve(v, made):
    if isinstance(v, Ref):
        pool = made[v.kind]
        return pool[v.i % len(pool)] if pool else None
    if isinstance(v, str) and v == "<evil>":
        return Evil()
    if isinstance(v, tuple) and v and v[0] == "<pattern>":
        return _call(v[1], [_resolve(a, made) for a in v[2]], made)
    return v


def _call(name, args, made):
    """A pattern builder: returns the pattern (errors propagate)."""
    return {"uniform": cb.uniform, "zipf": cb.zipf, "sequential": cb.sequential, "hotset": cb.hotset,
            "Pattern": cb.Pattern}[name](*args)


def _step(made, op, args):
    """One API call; returns nothing, records what it made."""
    if op == "__crash__":                     # the harness's own check (test_fuzz.py): die as a segfault would
        os.abort()
    a = [_resolve(x, made) for x in args]
    if op != "Scenario" and not made["scenario"]:
        raise cb.ScenarioError("no scenario: its constructor refused the arguments")
    if op == "Scenario":
        made["scenario"].append(cb.Scenario(*a))
    elif op == "file":
        made["file"].append(made["scenario"][-1].file(*a))
    elif op == "spawn":
        made["proc"].append(made["scenario"][-1].spawn(*a))
    elif a[0] is None:                        # no process yet (every spawn was refused)
        raise cb.ScenarioError(f"{op}: no process to call it on")
    elif op in ("fork", "vfork"):
        made["proc"].append(getattr(a[0], op)(*a[1:]))
    elif op == "mmap":
        made["region"].append(a[0].mmap(a[1], a[2], shared=a[3], prot=a[4], on_fork=a[5], thp=a[6]))
    elif op == "open":
        made["fd"].append(a[0].open(a[1], a[2], cloexec=a[3]))
    elif op == "concurrently":
        proc, region, pages, grain, seed = a
        with made["scenario"][-1].concurrently(grain=grain, seed=seed):
            proc.write(region, pages=pages)
            proc.read(region, pages=pages)
    else:                                     # a method of a process: exec, exit, write, madvise, ...
        getattr(a[0], op)(*a[1:])


def _work(sc) -> tuple[int, int]:
    touches = sum(op.pages.count if isinstance(op.pages, cb.Pattern) else
                  (op.pages.size if op.pages is not None else 0) for op in sc.flat_ops())
    mapped = sum(r.npages * sc.page_size for r in sc.regions)
    return touches, mapped


def _check(res) -> str | None:
    df = res.processes
    if ((df.pss_pages > df.rss_pages + 1e-6) | (df.uss_pages > df.rss_pages) | (df.rss_pages < 0)).any():
        return "inconsistent: pss or uss above rss"
    if not all(math.isfinite(x) for x in df.pss_pages):
        return "inconsistent: pss not finite"
    try:
        res.check_invariants()
    except AssertionError as e:
        return f"invariants: {e}"
    return None


def run_case(case) -> tuple[str, str]:
    """(outcome, detail): simulated (every call worked or was refused, and the run is
    consistent), refused (the scenario or simulate refused its arguments), skipped (too
    large to run here), or a failure: bad (another exception), inconsistent."""
    steps, sim_args = case
    made = {"scenario": [], "proc": [], "region": [], "file": [], "fd": []}
    refused = 0
    try:
        for op, args in steps:
            try:
                _step(made, op, args)
            except cb.ScenarioError:
                refused += 1
        if not made["scenario"]:
            return "refused", "the scenario"
        sc = made["scenario"][-1]
        touches, mapped = _work(sc)
        if touches > MAX_TOUCHES or mapped > MAX_MAPPED:
            return "skipped", f"{touches} touches, {mapped} bytes mapped"
        kw = {k: _resolve(v, made) for k, v in sim_args.items()}
        if "costs" in kw and isinstance(kw["costs"], dict):
            kw["costs"] = cb.CostModel.from_dict(kw["costs"])
        try:
            res = cb.simulate(sc, keep_state=True, **kw)
        except cb.ScenarioError as e:
            return "refused", f"simulate: {e}"
        problem = _check(res)
        if problem:
            return "inconsistent", problem
        return "simulated", f"{refused} of {len(steps)} calls refused"
    except cb.ScenarioError as e:
        return "refused", f"{e}"
    except Exception:
        return "bad", traceback.format_exc(limit=6)


def main() -> None:
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = inp.read(8)
        if len(head) < 8:
            return
        case = pickle.loads(inp.read(struct.unpack("<q", head)[0]))
        reply = pickle.dumps(run_case(case))
        out.write(struct.pack("<q", len(reply)) + reply)
        out.flush()


if __name__ == "__main__":
    import fuzz_worker            # one copy of the module: the pickled Refs name fuzz_worker.Ref

    fuzz_worker.main()
