"""Controlled target processes for the snapshot, trace and predict tests: every page they map
or write is one a test asked for. tests/targets/cowtarget.c (built -static, where a C compiler
is found) and tests/targets/pytarget.py (its twin in Python) answer the same commands.

    with Target(kind) as t:               # kind: "c" or "py"
        heap, addr = t.mmap(64 << 20, "an")
        t.write(heap, 0, 10_000)
        kid = t.fork()
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cowbench.real import pagemap_readable

TARGETS = Path(__file__).resolve().parent / "targets"
OK, WHY = pagemap_readable()
needs_pagemap = pytest.mark.skipif(not OK, reason=f"real-process tests need /proc/PID/pagemap: {WHY}")
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root: PFNs and kpageflags are hidden from other users")


def build_c(directory: Path) -> tuple[str | None, str]:
    """Build cowtarget.c -static into directory: (path, "") or (None, why not)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None, "no C compiler (cc/gcc) on PATH"
    out = directory / "cowtarget"
    r = subprocess.run([cc, "-O2", "-static", "-o", str(out), str(TARGETS / "cowtarget.c")], capture_output=True,
                       text=True)
    if r.returncode != 0:
        return None, f"cc -static failed (static libc missing?): {r.stderr.strip()[:200]}"
    return str(out), ""


class Target:
    """A running target process, driven line by line."""

    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.kids: list[int] = []

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cmd(self, line: str) -> list[str]:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline().split()
        if not reply or reply[0] != "ok":
            raise RuntimeError(f"target: {line!r} -> {' '.join(reply) or 'no answer (it died)'}")
        return reply[1:]

    def mmap(self, size: int, flags: str = "-") -> tuple[int, int]:
        i, addr = self.cmd(f"mmap {size} {flags}")
        return int(i), int(addr, 16)

    def file(self, path) -> tuple[int, int]:
        i, addr = self.cmd(f"file {path}")
        return int(i), int(addr, 16)

    def write(self, i: int, first: int, count: int, stride: int = 1) -> None:
        self.cmd(f"write {i} {first} {count} {stride}")

    def read(self, i: int, first: int, count: int, stride: int = 1) -> None:
        self.cmd(f"read {i} {first} {count} {stride}")

    def arm(self, i: int, first: int, count: int, stride: int = 1) -> None:
        self.cmd(f"arm {i} {first} {count} {stride}")

    def fork(self) -> int:
        pid = int(self.cmd("fork")[0])
        self.kids.append(pid)
        return pid

    def close(self) -> None:
        for k in self.kids:
            try:
                os.kill(k, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("exit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture(scope="session")
def c_target(tmp_path_factory):
    """The path of the static C target, or skip."""
    path, why = build_c(tmp_path_factory.mktemp("cowtarget"))
    if path is None:
        pytest.skip(f"the C target cannot be built: {why}")
    return path


@pytest.fixture(scope="session")
def target_argv(tmp_path_factory):
    """argv of the best target here: the C one if it builds, else the Python one."""
    path, _ = build_c(tmp_path_factory.mktemp("cowtarget_any"))
    return [path] if path else [sys.executable, str(TARGETS / "pytarget.py")]
