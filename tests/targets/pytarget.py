"""The controlled target of cowtarget.c, in Python, for hosts without a C compiler: the same
commands on stdin, the same answers on stdout. Its mappings hold exactly what the commands
wrote; the interpreter's own memory changes too, so tests count pages inside the mappings.
Imports only the standard library."""
import ctypes
import os
import signal
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
MADV = {"h": 14, "n": 15, "d": 10, "w": 18}
HUGE = 2 << 20
maps: list = []          # (address, size)
armed = None
value = 1


def mmap_anon(size: int, flags: str) -> int:
    shared = "s" in flags
    extra = HUGE if "a" in flags else 0
    p = libc.mmap(None, size + extra, 3, (0x01 if shared else 0x02) | 0x20, -1, 0)
    if p in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap")
    if extra:                                      # keep a 2 MiB aligned [q, q + size)
        q = -(-p // extra) * extra
        if q > p:
            libc.munmap(p, q - p)
        if q + size < p + size + extra:
            libc.munmap(q + size, p + size + extra - q - size)
        p = q
    for c, adv in MADV.items():
        if c in flags:
            libc.madvise(p, size, adv)
    return p


def mmap_file(path: str) -> tuple[int, int]:
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    p = libc.mmap(None, size, 3, 0x02, fd, 0)
    os.close(fd)
    return p, size


def touch(i, first, count, stride, write):
    addr = maps[i][0]
    for k in range(count):
        c = ctypes.c_uint8.from_address(addr + (first + k * stride) * 4096)
        if write:
            c.value = value & 0xFF or 1
        else:
            c.value


def child_loop():
    global value
    os.close(0)
    os.close(1)
    sigs = {signal.SIGUSR1, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    while True:
        if signal.sigwait(sigs) == signal.SIGTERM:
            os._exit(0)
        value += 1
        if armed is not None:
            touch(*armed, True)


def main():
    global armed
    for line in sys.stdin:
        f = line.split()
        if not f:
            continue
        try:
            if f[0] == "mmap":
                size = int(f[1])
                maps.append((mmap_anon(size, f[2] if len(f) > 2 else "-"), size))
                print(f"ok {len(maps) - 1} {maps[-1][0]:x}", flush=True)
            elif f[0] == "file":
                maps.append(mmap_file(f[1]))
                print(f"ok {len(maps) - 1} {maps[-1][0]:x}", flush=True)
            elif f[0] in ("write", "read", "arm"):
                i, first, count, stride = (int(x) for x in f[1:5])
                if f[0] == "arm":
                    armed = (i, first, count, stride)
                else:
                    touch(i, first, count, stride, f[0] == "write")
                print("ok", flush=True)
            elif f[0] == "fork":
                pid = os.fork()
                if pid == 0:
                    child_loop()
                print(f"ok {pid}", flush=True)
            elif f[0] == "exit":
                return
            else:
                print("error command", flush=True)
        except Exception as e:                     # answer, so that the test sees what failed
            print(f"error {e}", flush=True)


if __name__ == "__main__":
    main()
