"""File descriptors: what fork, dup, exec and exit do to descriptor tables, checked
against the simulator's bookkeeping and, where it can be run here, the real kernel."""
import os
import subprocess
import sys
import tomllib

import pytest

import cowbench as cb
from cowbench.costs import COST_FIELDS, CostModel


def _fileshare2(data_size=100):
    """The seed's fileshare2: the parent opens a file and forks; both read through the one fd."""
    sc = cb.Scenario(phys_mem="16MiB")
    parent = sc.spawn("parent")
    foobar = sc.file("foobar.txt", data_size)
    fd = parent.open(foobar, "r+")
    child = parent.fork("child")
    return sc, parent, child, fd


def test_a_forked_child_shares_the_parents_offset():
    sc, parent, child, fd = _fileshare2()
    assert child.read_fd(fd, 2) == 2
    assert parent.read_fd(fd, 2) == 2            # reads bytes 2-3: the child's read moved it
    assert parent.lseek(fd, 0, "cur") == 4
    files = cb.simulate(sc).files
    assert list(files.offset) == [4, 4]
    assert files.description.nunique() == 1


def test_open_twice_makes_two_offsets_dup_shares_one():
    sc = cb.Scenario(phys_mem="16MiB")
    p = sc.spawn("p")
    f = sc.file("f", "1KiB")
    a, b = p.open(f), p.open(f)
    c = p.dup(a)
    assert (a, b, c) == (0, 1, 2)                  # POSIX: the lowest free descriptor
    p.read_fd(a, 100)
    assert p.lseek(b, 0, "cur") == 0
    assert p.lseek(c, 0, "cur") == 100
    p.close(a)
    assert p.dup(b) == 0                           # the freed number comes back first


def test_a_close_in_the_child_leaves_the_parents_open():
    sc, parent, child, fd = _fileshare2()
    child.close(fd)
    with pytest.raises(cb.ScenarioError, match=r"read_fd: bad file descriptor 0 in process 'child'.*EBADF"):
        child.read_fd(fd, 1)
    assert parent.read_fd(fd, 10) == 10
    res = cb.simulate(sc)
    assert list(res.processes.open_fds) == [1, 0]
    assert list(res.processes.fork_fds_copied) == [0, 1]


def test_reads_stop_at_end_of_file_and_append_writes_at_the_end():
    sc = cb.Scenario(phys_mem="16MiB")
    p = sc.spawn("p")
    log = sc.file("log", 10)
    r, a = p.open(log, "r"), p.open(log, "a")
    assert p.read_fd(r, 100) == 10 and p.read_fd(r, 1) == 0
    p.lseek(a, 0)
    p.write_fd(a, 5)                               # O_APPEND: the end, whatever the offset
    assert p.lseek(a, 0, "cur") == 15 and log.size == 15
    assert p.read_fd(r, 100) == 5
    with pytest.raises(cb.ScenarioError, match="write_fd: file descriptor 0 is not open for writing"):
        p.write_fd(r, 1)
    p.open(log, "w")                               # O_TRUNC
    assert log.size == 0


def test_exec_closes_cloexec_descriptors_and_exit_closes_all():
    sc = cb.Scenario(phys_mem="16MiB")
    shell = sc.spawn("sh")
    f = sc.file("f", 0)
    keep = shell.open(f, "r")
    shell.open(f, "r", cloexec=True)
    kid = shell.fork("kid")
    kid.exec()
    assert kid.open_fds == 1
    with pytest.raises(cb.ScenarioError, match="EBADF"):
        kid.lseek(1, 0)
    kid.lseek(keep, 0)
    gone = shell.fork("gone")
    gone.exit()
    res = cb.simulate(sc)
    procs = res.processes.set_index("name")
    assert procs.loc["kid", "fork_fds_copied"] == 2 and procs.loc["kid", "open_fds"] == 1
    assert procs.loc["gone", "open_fds"] == 2            # as it stood at its exit
    assert res.summary["fork_fds_copied"] == 4
    assert list(res.timeline.fork_fds_copied) == [0, 2, 2, 4, 4]
    with pytest.raises(cb.ScenarioError, match="exited"):
        gone.open(f)


def test_fork_latency_is_priced_per_descriptor():
    costs = CostModel.default()
    sc = cb.Scenario(phys_mem="16MiB")
    p = sc.spawn("p")
    f = sc.file("sock")
    for _ in range(1000):
        p.open(f, "r+")
    p.fork("none")                                       # no memory at all: base + descriptors
    kid = cb.simulate(sc, costs=costs).processes.iloc[1]
    assert kid.fork_fds_copied == 1000
    assert kid.fork_ns == pytest.approx(costs.fork_base_ns + 1000 * costs.fork_fd_ns)


def test_a_failed_fork_copies_no_descriptors():
    sc = cb.Scenario(phys_mem="1MiB")                    # 256 frames: no room for an eager copy
    p = sc.spawn("p")
    heap = p.mmap("heap", "768KiB")
    p.write(heap)
    p.open(sc.file("f"), "r")
    p.fork("copy")
    res = cb.simulate(sc, policy="eager")
    kid = res.processes.iloc[1]
    assert kid.state == "fork_failed"
    assert kid.fork_fds_copied == 0 and kid.open_fds == 0
    assert res.summary["fork_fds_copied"] == 0
    assert list(res.files.pid) == [1]


@pytest.mark.parametrize("call, message", [
    (lambda p, f: p.open("f"), "open: unknown file 'f'"),
    (lambda p, f: p.open(f, "rw"), "The 'mode' parameter of open must be one of"),
    (lambda p, f: p.open(f, cloexec=1.0), "The 'cloexec' parameter of open"),
    (lambda p, f: p.read_fd(True, 1), "bad file descriptor True"),
    (lambda p, f: p.read_fd(0, -1), "The 'count' parameter of read_fd must be"),
    (lambda p, f: p.lseek(0, 1.5), "The 'offset' parameter of lseek must be an int"),
    (lambda p, f: p.lseek(0, 0, "start"), "The 'whence' parameter of lseek must be one of"),
    (lambda p, f: p.dup(7), "dup: bad file descriptor 7"),
    (lambda p, f: p.close(-1), "close: bad file descriptor -1"),
])
def test_bad_descriptor_calls_are_scenario_errors(call, message):
    sc = cb.Scenario(phys_mem="16MiB")
    p = sc.spawn("p")
    f = sc.file("f", 10)
    p.open(f)
    with pytest.raises(cb.ScenarioError, match=message):
        call(p, f)
    assert len(cb.simulate(sc).files) == 1               # the failed call changed nothing


def test_a_cost_file_without_fork_fd_ns_loads_with_the_builtin_value(tmp_path):
    model = CostModel.default()
    text = "".join(line + "\n" for line in model.to_toml().splitlines() if not line.startswith("fork_fd_ns"))
    path = tmp_path / "old.toml"
    path.write_text(text)
    assert "fork_fd_ns" not in tomllib.loads(text)
    assert CostModel.load(path).fork_fd_ns == model.fork_fd_ns
    assert "fork_fd_ns" in COST_FIELDS
    assert CostModel.load(model.save(tmp_path / "new.toml")) == model


# --- the real kernel --------------------------------------------------------------------

_REAL = r"""
import os, sys
CHECK = '''
import os, sys
def is_open(d):
    try:
        os.fstat(d)
        return True
    except OSError:
        return False
print([d for d in range(int(sys.argv[1]), int(sys.argv[2]) + 1) if is_open(d)])
'''
path = sys.argv[1]
fd = os.open(path, os.O_RDWR)
keep = os.open(path, os.O_RDONLY)
gone = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
for d in (fd, keep):
    os.set_inheritable(d, True)      # Python opens O_CLOEXEC by default (PEP 446); C's open() does not
pid = os.fork()
if pid == 0:
    os.read(fd, 2)
    os.close(keep)
    os._exit(0)
os.waitpid(pid, 0)
second = os.read(fd, 2)
dup = os.dup(keep)
os.set_inheritable(dup, True)
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, "-c", CHECK, str(fd), str(dup)])
os.waitpid(pid, 0)
print(second.decode(), os.lseek(fd, 0, os.SEEK_CUR), fd, keep, gone, dup, flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_the_descriptor_rules_match_the_real_kernel(tmp_path):
    path = tmp_path / "foobar.txt"
    path.write_bytes(b"foobar")
    out = subprocess.run([sys.executable, "-c", _REAL, str(path)], capture_output=True, text=True,
                         check=True, close_fds=True, stdin=subprocess.DEVNULL).stdout.splitlines()
    exec_fds = eval(out[0])                             # which of the parent's descriptors the exec'd child holds
    second, offset, *real_fds = out[1].split()
    base = int(real_fds[0])                             # the first free descriptor of the real process

    sc = cb.Scenario(phys_mem="16MiB")
    p = sc.spawn("p")
    foobar = sc.file("foobar.txt", 6)
    fd, keep, gone = p.open(foobar, "r+"), p.open(foobar, "r"), p.open(foobar, "r", cloexec=True)
    kid = p.fork("reader")
    kid.read_fd(fd, 2)
    kid.close(keep)
    kid.exit()
    p.read_fd(fd, 2)
    dup = p.dup(keep)
    shell = p.fork("exec")
    shell.exec()
    res = cb.simulate(sc)
    files = res.files
    assert second == "ob"                               # the kernel: the child's read moved the offset
    assert int(offset) == files.loc[(files.name == "p") & (files.fd == fd), "offset"].item() == 4
    assert [int(x) - base for x in real_fds] == [fd, keep, gone, dup]
    sim_exec = sorted(files.loc[files.name == "exec", "fd"])
    assert [x - base for x in exec_fds] == sim_exec == [fd, keep, dup]
