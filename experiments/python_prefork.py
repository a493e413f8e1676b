"""Python prefork workers: reference counts turn reads into writes, and sharing decays.

A master process preloads 250 MiB of Python objects (Instagram's uWSGI master:
"RSS 250 MB per worker") and forks 4 workers. Each request touches 2,000
objects of the preloaded heap; in CPython every touch increments and decrements
the object's reference count, a write to its header, so every page holding a
touched object is copied on write: copy on read, in effect. Requests use the
objects on 45 % of the heap's pages (98 % of touches) and, rarely, the rest
(2 %); each worker also writes a private 4 MiB arena of its own per request.

With a gc.freeze()-like layout (the preloaded objects frozen so that their
headers are never written: what gc.freeze achieves for the collector's links
and immortal objects, PEP 683, achieve for reference counts) the same touches
are reads, and the workers keep sharing the whole heap.

The master runs CPython as Debian 12 ships it (python3.11: 5.3 MiB of text,
1.5 MiB of data and bss; libc, libm, libz and libexpat: 3 MiB more code), and
every worker executes the interpreter's code: 8.8 MiB of page cache that each
worker maps (faulted in after the fork, which copies no PTE of it) and shares,
whatever the layout. The interpreter's data, written by the master before the
fork, is copied only where a worker writes it (here: never).

Published figure: Instagram Engineering, "Dismissing Python Garbage Collection
at Instagram" (2017): a worker's RSS starts at 250 MB and its shared memory
falls from 250 MB to about 140 MB within seconds. The 45 % hot fraction is the
model's one assumption fitted to that figure (it sets the plateau); the
simulator shows how fast sharing decays towards it, and that freezing holds it.
"""
import cowbench as cb
from cowbench.experiment import debian_program, grid, main, run_image, versus
from cowbench.plot import Ref, lines

LAYOUTS = ["refcounted", "frozen"]
LABELS = {"refcounted": "refcounted objects (CPython default)", "frozen": "frozen objects (gc.freeze-like)"}
QUICK = grid(layout=LAYOUTS, requests=[0, 1, 3, 10, 30, 100])
FULL = grid(layout=LAYOUTS, requests=[0, 1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 300, 500, 1000, 2000])
WORKERS = 4
HEAP_MIB = 250
PAGE_MIB = 4096 / 2**20


def point(layout="refcounted", requests=10, workers=WORKERS, heap_mib=HEAP_MIB, objects_per_request=2_000,
          hot=0.45, p_hot=0.98):
    sc = cb.Scenario(phys_mem="4GiB")
    master = sc.spawn("master", program=debian_program(sc, "python3.11"))
    run_image(master)
    heap = master.mmap("preloaded", f"{heap_mib}MiB")
    master.write(heap)
    for w in range(workers):
        worker = master.fork(f"worker{w}")
        run_image(worker, init=False)
        arena = worker.mmap("arena", "4MiB")
        touches = cb.hotset(requests * objects_per_request, hot=hot, p_hot=p_hot, seed=w + 1)
        if layout == "refcounted":
            worker.write(heap, pages=touches)
        else:
            worker.read(heap, pages=touches)
        if requests:
            worker.write(arena)
    res = cb.simulate(sc, policy="cow")
    p = res.processes
    wk = p[p.name.str.startswith("worker")]
    return {
        "worker_rss_mib": wk.rss_pages.mean() * PAGE_MIB,
        "worker_shared_mib": wk.shared_pages.mean() * PAGE_MIB,
        "worker_uss_mib": wk.uss_pages.mean() * PAGE_MIB,
        "worker_pss_mib": wk.pss_pages.mean() * PAGE_MIB,
        # a heap page a worker has not copied is still shared (its copies are all of heap pages)
        "worker_heap_shared_pct": 100 * (1 - wk.cow_copies.mean() / heap.npages),
        "worker_code_mib": wk.file_pages.mean() * PAGE_MIB,
        "total_pss_mib": p.pss_pages.sum() * PAGE_MIB,
        "cow_copies_per_worker": wk.cow_copies.mean(),
    }


def _at(df, layout, requests, col):
    return float(df[(df.layout == layout) & (df.requests == requests)][col].iloc[0])


def compare(df):
    last = int(df.requests.max())
    r10 = 10 if 10 in set(df.requests) else last
    return [
        versus("worker RSS after fork", "250 MB", f"{_at(df, 'refcounted', 1, 'worker_rss_mib'):.0f} MiB",
               "Instagram Engineering, 2017"),
        versus("shared memory per worker, refcounted heap", "250 MB -> about 140 MB within seconds",
               f"{_at(df, 'refcounted', 0, 'worker_shared_mib'):.0f} -> "
               f"{_at(df, 'refcounted', r10, 'worker_shared_mib'):.0f} MiB after {r10} requests, "
               f"{_at(df, 'refcounted', last, 'worker_shared_mib'):.0f} MiB after {last}",
               "Instagram Engineering, 2017", "plateau set by the assumed 45 % hot fraction"),
        versus("shared memory per worker, frozen heap (gc.freeze-like)", "sharing holds",
               f"{_at(df, 'frozen', last, 'worker_shared_mib'):.0f} MiB after {last} requests",
               "Instagram Engineering, 'Copy-on-write friendly Python GC', 2018"),
        versus(f"total PSS of master + {WORKERS} workers after {last} requests",
               "freezing saves the copied pages",
               f"{_at(df, 'refcounted', last, 'total_pss_mib'):.0f} MiB refcounted vs "
               f"{_at(df, 'frozen', last, 'total_pss_mib'):.0f} MiB frozen", "(simulated)"),
    ]


def summary(df):
    t = df.pivot(index="requests", columns="layout", values="worker_shared_mib")[LAYOUTS].round(1)
    t.columns = [f"shared_mib[{c}]" for c in t.columns]
    u = df.pivot(index="requests", columns="layout", values="total_pss_mib")[LAYOUTS].round(0)
    u.columns = [f"total_pss_mib[{c}]" for c in u.columns]
    return t.join(u).reset_index()


def plot(df, png):
    d = df.assign(requests_plot=df.requests.clip(lower=0.5))
    return [
        lines(d, "requests_plot", "worker_shared_mib", png("shared_decay"), hue="layout", hue_order=LAYOUTS,
              hue_fmt=LABELS.get,
              logx=True, ylim=(0, 270),
              title="Shared memory of a prefork Python worker",
              xlabel="requests served per worker (log scale; 0 drawn at 0.5)",
              ylabel="shared memory per worker (MiB)",
              refs=[Ref.hline(250, "Instagram: RSS 250 MB per worker", ls=":"),
                    Ref.hline(140, "Instagram: shared fell to ~140 MB in seconds")],
              legend_loc="lower left",
              note=f"{HEAP_MIB} MiB preloaded heap and the interpreter's code (python3.11 and its libraries, "
                   f"shared), {WORKERS} workers, 2,000 object touches per request "
                   "on 45 % of the heap's pages (98 %) or the rest (2 %)."),
        lines(d, "requests_plot", "total_pss_mib", png("total_pss"), hue="layout", hue_order=LAYOUTS,
              hue_fmt=LABELS.get, logx=True, ylim=(0, None),
              refs=[Ref.hline((WORKERS + 1) * HEAP_MIB, f"no heap page shared: {WORKERS + 1} x {HEAP_MIB} MiB",
                              ls=":")],
              title=f"Memory of master + {WORKERS} workers",
              xlabel="requests served per worker (log scale; 0 drawn at 0.5)",
              ylabel="total PSS (MiB)", legend_loc="upper left"),
    ]


if __name__ == "__main__":
    main(__name__)
