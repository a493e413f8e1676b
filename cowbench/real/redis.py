"""A real Redis (Debian's redis-server) driven for the redis_real experiment: start it, fill it,
BGSAVE it under redis-benchmark write load while a Tracer samples it, and read its own figures.

    with RedisServer() as r:                       # a private server on a free port, in a temp dir
        r.populate(keys=250_000, value_bytes=1000)
        run = r.bgsave_traced(workload="overwrite", interval=0.1)
    run.trace, run.info["rdb_last_cow_size"], run.info["latest_fork_usec"]

Keys are "key:%012d", the form redis-benchmark's __rand_int__ gives, so "overwrite" load
(SET key:__rand_int__ over the populated key range) rewrites existing values in place and
"newkeys" load (SET new:__rand_int__ over a range 1000 times larger) allocates new ones.
The load starts as soon as BGSAVE has returned (the fork is done), so that the fork itself
is timed on an otherwise idle server.
The RDB is written uncompressed into the server's temp dir and removed with it;
rdb-key-save-delay (a Redis testing knob: a negative -X sleeps 1 us before one key in X)
stretches the save so that the load has time to write.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass

from .trace import Trace, Tracer

__all__ = ["redis_unavailable", "RedisServer", "BgsaveRun"]

BINARIES = ("redis-server", "redis-cli", "redis-benchmark")
POPULATE = ("local n = tonumber(ARGV[1]); local a = tonumber(ARGV[2]); local v = string.rep('x', tonumber(ARGV[3])); "
            "for i = a, a + n - 1 do redis.call('SET', string.format('key:%012d', i), v) end return n")


def redis_unavailable() -> str:
    """Why the real Redis cannot run here ("" if it can)."""
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return (f"{', '.join(missing)} not installed (Debian: apt-get install -y redis-server redis-tools; "
                "`make real-deps` does it as root)")
    if not os.path.exists("/proc/self/pagemap"):
        return "no /proc/PID/pagemap (not Linux)"
    return ""


class _Conn:
    """One RESP connection to the server (commands without spawning redis-cli, for polling)."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.buf = b""

    def command(self, *args: str):
        out = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args)
        self.sock.sendall(out)
        return self._reply()

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(f"redis: {rest.decode()}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.sock.recv(65536)
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data.decode(errors="replace")
        if kind == b"*":
            return [self._reply() for _ in range(int(rest))]
        raise RuntimeError(f"redis: unexpected reply {line[:40]!r}")

    def close(self):
        self.sock.close()


def _schedstat(pid: int) -> tuple[int, int]:
    """(CPU time, time waiting for a CPU) of a thread so far, in ns (/proc/PID/task/TID/schedstat)."""
    with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
        run, wait, _ = f.read().split()
    return int(run), int(wait)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class BgsaveRun:
    """One traced BGSAVE: the trace, Redis's INFO (persistence, stats, memory) after it, the
    save's wall time, the CoW lines of Redis's log, and the CPU time and CPU wait of Redis's
    main thread over the BGSAVE command (the fork, measured like calibrate measures forks:
    CPU time, not the wall clock a busy host stretches)."""

    trace: Trace
    info: dict
    save_s: float
    log: list[str]
    child_pid: int
    fork_cpu_ms: float
    fork_wait_ms: float


class RedisServer:
    """A private redis-server on a free port (a context manager: stopped and cleaned up on exit)."""

    def __init__(self, port: int | None = None, extra=()):
        self.dir = tempfile.mkdtemp(prefix="cowbench-redis-")
        self.port = port or _free_port()
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", self.dir, "--dbfilename", "dump.rdb", "--rdbcompression", "no", "--rdbchecksum", "no",
                "--daemonize", "no", "--logfile", os.path.join(self.dir, "redis.log"), "--protected-mode", "yes",
                *extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while self.cli("PING") != "PONG":
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"redis-server did not start on port {self.port} (see {self.dir}/redis.log)")
            time.sleep(0.02)
        self.conn = _Conn(self.port)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cli(self, *args: str) -> str:
        r = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, timeout=600)
        return r.stdout.strip()

    def info(self, *sections: str) -> dict:
        """INFO of the sections named, as {field: int, float or str}."""
        out = {}
        for sec in sections or ("all",):
            out.update(_parse_info(self.conn.command("INFO", sec)))
        return out

    def populate(self, keys: int, value_bytes: int, batch: int = 100_000) -> None:
        """SET key:000000000000 .. key:%012d(keys-1) to value_bytes of 'x' (Lua, a batch per call)."""
        for a in range(0, keys, batch):
            self.conn.command("EVAL", POPULATE, "0", str(min(batch, keys - a)), str(a), str(value_bytes))

    def bgsave_traced(self, *, keys: int, value_bytes: int, workload: str = "overwrite", interval: float = 0.1,
                      key_save_delay: int = 0, clients: int = 4, pipeline: int = 4, warmup: float = 0.5,
                      timeout: float = 300.0) -> BgsaveRun:
        """BGSAVE while redis-benchmark SETs values (workload "overwrite": existing keys; "newkeys":
        new ones), sampled by a Tracer from `warmup` seconds before the fork until the child is gone."""
        if workload not in ("overwrite", "newkeys"):
            raise ValueError(f"workload must be 'overwrite' or 'newkeys'; got {workload!r}")
        self.conn.command("CONFIG", "SET", "rdb-key-save-delay", str(key_save_delay))
        prefix, space = ("key", keys) if workload == "overwrite" else ("new", keys * 1000)
        tracer = Tracer(self.pid, interval).start()
        bench = None
        try:
            time.sleep(warmup)
            before = self.info("persistence").get("rdb_saves", 0)
            run0, wait0 = _schedstat(self.pid)
            t0 = time.monotonic()
            self.conn.command("BGSAVE")              # replies once fork() has returned in the parent
            run1, wait1 = _schedstat(self.pid)
            bench = subprocess.Popen(["redis-benchmark", "-p", str(self.port), "-r", str(space), "-n", str(10**9),
                                      "-c", str(clients), "-P", str(pipeline), "-q", "SET", f"{prefix}:__rand_int__",
                                      "x" * value_bytes], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            child = _child_of(self.pid)
            while time.monotonic() - t0 < timeout:
                p = self.info("persistence")
                if p.get("rdb_bgsave_in_progress") == 0 and p.get("rdb_saves", 0) > before:
                    break
                time.sleep(0.02)
            save_s = time.monotonic() - t0
            time.sleep(2 * interval)                 # the child's exit in the trace
        finally:
            if bench is not None:
                bench.terminate()
                bench.wait()
            tr = tracer.stop()
        info = self.info("persistence", "stats", "memory")
        with open(os.path.join(self.dir, "redis.log"), errors="replace") as f:
            log = [ln.strip() for ln in f if "copy-on-write" in ln or "CoW" in ln]
        return BgsaveRun(tr, info, save_s, log, child, (run1 - run0) / 1e6, (wait1 - wait0) / 1e6)

    def close(self) -> None:
        if getattr(self, "conn", None) is not None:
            self.conn.close()
            self.conn = None
        if self.proc.poll() is None:
            self.cli("SHUTDOWN", "NOSAVE")
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _parse_info(text: str) -> dict:
    out = {}
    for line in (text or "").splitlines():
        k, sep, v = line.strip().partition(":")
        if sep and not k.startswith("#"):
            for cast in (int, float):
                try:
                    v = cast(v)
                    break
                except ValueError:
                    pass
            out[k] = v
    return out


def _child_of(pid: int) -> int:
    from .procfs import children

    kids = children(pid)
    return kids[0] if kids else 0
