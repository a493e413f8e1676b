"""fork then exec: what the parent pays when its child only wants to exec.

A parent writes a heap of 64 MiB to 64 GiB and creates a child that calls exec
at once. Between the fork and the exec the parent keeps working: 10,000 writes
to uniformly random pages of its heap (a few milliseconds of a busy server).
Two schedules: the child runs first (it execs before the parent writes, what
the sched_child_runs_first sysctl of older Linux kernels arranged) or the
parent runs first (it writes while the child still shares its pages).

What the published accounts say: COW makes fork + exec cheap because nothing is
copied for a child that execs (eager fork copies every page, only for exec to
throw the copies away); and a parent that runs before its child execs takes COW
copies of every page it writes, all of them needless, which is why kernels have
tried to run the child first (the seed text; sched_child_runs_first).
Even with the child first, COW leaves the parent's PTEs write-protected: each
first write after the exec is a fault that reuses the page in place (pgreuse).
vfork suspends the parent until the exec: no copy and no fault.

The processes run real programs' images, at the sizes Debian 12 ships them: the
parent is a server of Redis's size (redis-server's text, data and bss, and
its seven libraries' text: 13 MiB of code), which it executes and whose data it
initialises before the heap; the child execs `true` (26 KiB of text and libc)
and runs it. Code is mapped from files: fork copies none of it (eager fork maps
the page-cache pages instead of copying them, COW copies no PTE of a file
mapping without an anon_vma), and the child's libc is the parent's, one page
cache.

Latency is the cost model's estimate: the fork itself plus the parent's faults
after it (COW copies, reuses and, under odf, PTE tables copied on a fault), for
the counts the simulator reports. Eager fork is the same in either order (its
parent never faults), so the figures show it once.
"""
import cowbench as cb
from cowbench.experiment import debian_program, grid, main, run_image, versus
from cowbench.plot import lines

PARENT_WRITES = 10_000
SIZES_QUICK = [64, 256, 1024, 4096]
SIZES_FULL = [64, 256, 1024, 4096, 16384, 65536]
QUICK = (grid(size_mib=SIZES_QUICK, method=["eager", "cow", "odf"], order=["child_first", "parent_first"])
         + grid(size_mib=SIZES_QUICK, method="vfork", order="child_first"))
FULL = (grid(size_mib=SIZES_FULL, method=["eager", "cow", "odf"], order=["child_first", "parent_first"])
        + grid(size_mib=SIZES_FULL, method="vfork", order="child_first"))
PAGE_MIB = 4096 / 2**20


def point(size_mib=1024, method="cow", order="child_first", parent_writes=PARENT_WRITES):
    sc = cb.Scenario(phys_mem=f"{2 * size_mib + 1024}MiB")
    parent = sc.spawn("parent", program=debian_program(sc, "redis-server"))
    run_image(parent)
    heap = parent.mmap("heap", f"{size_mib}MiB")
    parent.write(heap)
    work = cb.uniform(parent_writes, seed=1)
    child = parent.vfork("child") if method == "vfork" else parent.fork("child")
    if order == "parent_first":
        parent.write(heap, pages=work)
    child.exec(debian_program(sc, "true"))
    run_image(child)
    child.exit()
    if order == "child_first":
        parent.write(heap, pages=work)
    res = cb.simulate(sc, policy="cow" if method == "vfork" else method)
    p = res.processes.set_index("name")
    par, kid = p.loc["parent"], p.loc["child"]
    # the parent's faults after the fork: all of its estimated time but that of the faults before it
    before = res.timeline[res.timeline.op.isin(["fork", "vfork"])].index[0] - 1
    window_ns = par.est_time_ns - res.timeline.est_time_ns[before]
    return {
        "fork_ms": kid.fork_ns / 1e6,
        "parent_fault_ms": window_ns / 1e6,
        "total_ms": (kid.fork_ns + window_ns) / 1e6,
        # copies the fork caused: at the fork, and the parent's COW copies after it (the child's
        # own copies are its new program's data, copied from the page cache after the exec)
        "pages_copied": int(kid.fork_pages_copied + par.cow_copies - res.timeline.cow_copies[before]),
        "parent_cow_copies": int(par.cow_copies - res.timeline.cow_copies[before]),
        "parent_cow_reuses": int(par.cow_reuses),
        "parent_tables_copied": int(par.fault_tables_copied),
        "extra_peak_mib": (res.summary.peak_frames - res.timeline.frames_used[before]) * PAGE_MIB,
        "method_order": f"{method}, {order.replace('_', ' ')}",
    }


def _at(df, method, order, size, col):
    g = df[(df.method == method) & (df.order == order) & (df.size_mib == size)]
    return float(g[col].iloc[0])


def compare(df):
    lo, hi = df.size_mib.min(), df.size_mib.max()
    s = 1024 if 1024 in set(df.size_mib) else hi
    return [
        versus("pages copied by fork + exec, eager vs COW",
               "eager copies the whole parent; COW copies nothing",
               f"eager {_at(df, 'eager', 'child_first', lo, 'pages_copied'):,.0f} -> "
               f"{_at(df, 'eager', 'child_first', hi, 'pages_copied'):,.0f} pages; "
               f"cow {_at(df, 'cow', 'child_first', lo, 'pages_copied'):,.0f} -> "
               f"{_at(df, 'cow', 'child_first', hi, 'pages_copied'):,.0f} ({lo:g} MiB -> {hi / 1024:g} GiB)",
               "seed text; xv6 book ch. 3"),
        versus("needless COW copies when the parent runs first",
               "the parent copies every page it writes before the exec",
               f"{_at(df, 'cow', 'parent_first', s, 'parent_cow_copies'):,.0f} copies "
               f"(of {PARENT_WRITES:,} writes) vs {_at(df, 'cow', 'child_first', s, 'parent_cow_copies'):,.0f} "
               f"child first, at {s / 1024:g} GiB", "seed text; Linux sched_child_runs_first"),
        versus("extra latency, parent first vs child first (cow)", "child first avoids the copies",
               f"{_at(df, 'cow', 'parent_first', s, 'parent_fault_ms'):.1f} ms vs "
               f"{_at(df, 'cow', 'child_first', s, 'parent_fault_ms'):.1f} ms of parent faults "
               f"(reuses: {_at(df, 'cow', 'child_first', s, 'parent_cow_reuses'):,.0f})", "cost model"),
        versus("vfork + exec (posix_spawn)", "flat, no copies",
               f"{_at(df, 'vfork', 'child_first', lo, 'total_ms'):.2f} ms at {lo:g} MiB, "
               f"{_at(df, 'vfork', 'child_first', hi, 'total_ms'):.2f} ms at {hi / 1024:g} GiB, 0 copies",
               "Baumann et al., HotOS'19"),
    ]


def summary(df):
    t = df.pivot(index="size_mib", columns="method_order", values="total_ms").round(2)
    return t.reset_index()


def plot(df, png):
    d = df[~((df.method == "eager") & (df.order == "parent_first"))]
    common = dict(hue="method", style="order", hue_order=["eager", "cow", "odf", "vfork"],
                  style_order=["child_first", "parent_first"], style_fmt=lambda s: s.replace("_", " "),
                  xlabel="parent's resident memory (log scale)", size_x=True, legend_loc="upper left")
    note = (f"Between fork and exec the parent makes {PARENT_WRITES:,} random page writes (parent first), "
            "or writes them after the exec (child first).")
    return [
        lines(d[d.method != "odf"], "size_mib", "pages_copied", png("copies"),
              **{**common, "hue_order": ["eager", "vfork", "cow"]},
              title="Pages copied by fork + exec", ylabel="pages copied (fork + COW faults)", symlogy=1,
              note=note + " cow with the child first copies nothing (its line lies on vfork's);"
                          " odf copies what cow copies; eager copies the same in either order."),
        lines(d, "size_mib", "total_ms", png("latency"), **common,
              title="Cost of fork + exec to the parent",
              ylabel="fork + parent's faults after it (ms, log scale)", logy=True, note=note),
    ]


if __name__ == "__main__":
    main(__name__)
