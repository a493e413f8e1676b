"""Fork cost against parent size: eager copy, COW, On-demand-fork and vfork.

A parent writes every page of a heap of 64 MiB to 64 GiB, then creates a child
that exits at once; the child is made by an eager fork (every page copied, as
xv6's uvmcopy), a Linux COW fork (PTEs copied and write-protected), an
On-demand-fork (PTE tables shared) or a vfork (nothing copied). Latency is the
cost model's estimate for the counts the simulator reports (PTEs, PTE tables
and pages copied, plus a fixed cost per fork); memory is what the fork itself
allocates (copied pages plus the child's new page tables).

Published figures it reproduces:
- Redis, "Diagnosing latency issues" (fork time in different systems): 9-13 ms
  per GB of RSS on bare metal, 23.3 ms/GB in a KVM guest.
- Baumann et al., "A fork() in the road" (HotOS'19), Fig. 1: fork's latency
  grows with the parent's size, posix_spawn (vfork + exec) stays flat.
- Zhao et al., "On-demand-fork" (EuroSys'21): 65x faster than fork at 1 GB.

The default cost model was calibrated in a KVM guest, so it should land on
Redis's KVM figure, not its bare-metal one. Its fixed cost per fork (0.5 ms,
measured with a Python parent) and its price for sharing a PTE table (that of
copying one) bound On-demand-fork's speed-up from below: see the comparison.
"""
import cowbench as cb
from cowbench.experiment import grid, main, versus
from cowbench.plot import Ref, lines

METHODS = ["eager", "cow", "odf", "vfork"]
QUICK = grid(size_mib=[64, 256, 1024, 4096], method=METHODS)
FULL = grid(size_mib=[64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536], method=METHODS)
PAGE_MIB = 4096 / 2**20


def point(size_mib=1024, method="cow"):
    sc = cb.Scenario(phys_mem=f"{2 * size_mib + 1024}MiB")
    parent = sc.spawn("parent")
    heap = parent.mmap("heap", f"{size_mib}MiB")
    parent.write(heap)
    if method == "vfork":
        child = parent.vfork("child")
        child.exec()
    else:
        child = parent.fork("child")
    child.exit()
    res = cb.simulate(sc, policy="cow" if method == "vfork" else method)
    kid = res.processes.set_index("name").loc["child"]
    return {
        "fork_ms": kid.fork_ns / 1e6,
        "fork_ms_per_gib": kid.fork_ns / 1e6 / (size_mib / 1024),
        "fork_pages_copied": int(kid.fork_pages_copied),
        "fork_ptes_copied": int(kid.fork_ptes_copied),
        "fork_tables_copied": int(kid.fork_tables_copied),
        "fork_mib": (kid.fork_pages_copied + kid.fork_tables_copied) * PAGE_MIB,
        "peak_mib": res.summary.peak_frames * PAGE_MIB,
    }


def _at(df, method, size, col="fork_ms"):
    return float(df[(df.method == method) & (df.size_mib == size)][col].iloc[0])


def _slope(df, method):
    """ms per GiB from the two largest sizes (the fixed cost cancels)."""
    g = df[df.method == method].sort_values("size_mib")
    a, b = g.iloc[-2], g.iloc[-1]
    return (b.fork_ms - a.fork_ms) / ((b.size_mib - a.size_mib) / 1024)


def compare(df):
    lo, hi = df.size_mib.min(), df.size_mib.max()
    cow1, odf1 = _at(df, "cow", 1024), _at(df, "odf", 1024)
    base = float(df[df.method == "vfork"].fork_ms.iloc[0])
    cow = df[df.method == "cow"]
    tables_per_gib = float((cow.fork_tables_copied * PAGE_MIB / (cow.size_mib / 1024)).median())
    return [
        versus("COW fork latency per GiB of RSS, bare metal", "9-13 ms/GB",
               f"{_slope(df, 'cow'):.1f} ms/GiB", "Redis latency docs",
               "cost model calibrated in a KVM guest: compare with the KVM row"),
        versus("COW fork latency per GiB of RSS, KVM guest", "23.3 ms/GB (360 MB forked in 8.2 ms)",
               f"{_slope(df, 'cow'):.1f} ms/GiB", "Redis latency docs"),
        versus("fork grows with the parent, vfork/posix_spawn flat",
               "fork grows linearly; posix_spawn flat (Fig. 1)",
               f"cow {_at(df, 'cow', lo):.2f} -> {_at(df, 'cow', hi):.0f} ms, "
               f"vfork {_at(df, 'vfork', lo):.2f} -> {_at(df, 'vfork', hi):.2f} ms "
               f"({lo:g} MiB -> {hi / 1024:g} GiB)", "Baumann et al., HotOS'19"),
        versus("page tables of a 24 GB instance (copied by fork)", "48 MB",
               f"{24 * tables_per_gib:.0f} MiB ({tables_per_gib:.1f} MiB of PTE tables per GiB)",
               "Redis latency docs"),
        versus("On-demand-fork speed-up over fork at 1 GB", "65x",
               f"{cow1 / odf1:.1f}x ({cow1:.1f} vs {odf1:.2f} ms); "
               f"{(cow1 - base) / (odf1 - base):.0f}x without the fixed cost",
               "Zhao et al., EuroSys'21",
               "fixed cost 0.5 ms per fork and shared tables priced as copied ones bound it"),
        versus("eager fork at 1 GiB: pages copied / latency", "copies every page (xv6 uvmcopy)",
               f"{_at(df, 'eager', 1024, 'fork_pages_copied'):,.0f} pages, {_at(df, 'eager', 1024):.0f} ms",
               "xv6 book, ch. 3"),
    ]


def summary(df):
    t = df.pivot(index="size_mib", columns="method", values="fork_ms")[METHODS].round(2)
    t.columns = [f"fork_ms[{c}]" for c in t.columns]
    m = df.pivot(index="size_mib", columns="method", values="fork_mib")[METHODS].round(1)
    m.columns = [f"fork_mib[{c}]" for c in m.columns]
    return t.join(m).reset_index()


def plot(df, png):
    xs = sorted(df.size_mib.unique())
    gib = [x / 1024 for x in xs]
    refs = [Ref.band(xs, [9 * g for g in gib], [13 * g for g in gib], "Redis, bare metal: 9-13 ms/GB"),
            Ref.curve(xs, [23.3 * g for g in gib], "Redis, KVM guest: 23.3 ms/GB"),
            Ref.point(1024, _at(df, "cow", 1024) / 65, "On-demand-fork paper: fork / 65 at 1 GB")]
    return [
        lines(df, "size_mib", "fork_ms", png("latency"), hue="method", hue_order=METHODS,
              title="fork() latency against parent size",
              xlabel="parent's resident memory (log scale)", ylabel="estimated fork latency (ms, log scale)",
              size_x=True, logy=True, refs=refs, legend_loc="upper left"),
        lines(df, "size_mib", "fork_mib", png("memory"), hue="method", hue_order=["eager", "cow", "vfork", "odf"],
              refs=[Ref.point(24 * 1024, 48, "Redis docs: 24 GB instance, 48 MB of page tables")],
              title="Memory the fork itself allocates",
              xlabel="parent's resident memory (log scale)",
              ylabel="pages + page tables allocated at fork (MiB)", size_x=True, symlogy=0.1, ylim=(0, 2e7),
              legend_loc="upper left", note="odf shares the parent's PTE tables and vfork its whole "
              "address space: both allocate 0 MiB (log scale above 0.1 MiB)."),
    ]


if __name__ == "__main__":
    main(__name__)
