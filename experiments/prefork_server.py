"""Prefork server: total memory against the number of workers and their working set.

A master builds a 512 MiB heap (256 MiB with --quick), then forks 1 to 64
workers; each worker writes its working set, 0 % to 100 % of the heap (distinct
pages; each worker starts at its own offset). Under COW a worker costs its page
tables plus the pages it writes; under eager fork every worker costs a full
copy at once. Total PSS (smem's figure for the whole pool: each shared page
counted once) is (1 + N w) H under COW against (1 + N) H under eager fork, so
COW's saving, 1 - (1 + N w) / (1 + N), falls to nothing at w = 100 %: the point
where COW saves no memory. Counted in time (the cost model's estimate of the
forks plus the workers' faults), COW stops paying earlier: a COW fault costs
more than an eager page copy, so past some working set eager fork is faster.

The master runs a server binary of Redis's size, as Debian 12 ships it: 13 MiB
of code (its text and its seven libraries'), which it and every worker execute,
and 0.5 MiB of data and bss, which the master initialises. The code is mapped
from files, one page cache: it adds T to the pool's PSS once, under either
fork, and every worker faults it in (fork copies no PTE of a file mapping
without an anon_vma). The data is anonymous once written: D more per worker
under eager fork, shared under COW. So the totals are (1 + N w) H + D + T and
(1 + N)(H + D) + T.

There is no single published figure for this one: the reference is the
arithmetic above, which the simulated totals must match page for page, and the
crossover it implies.
"""
import cowbench as cb
from cowbench.experiment import debian_program, grid, main, run_image, versus
from cowbench.plot import Ref, lines

WS = [0, 10, 25, 50, 75, 100]
QUICK = grid(heap_mib=256, workers=[1, 4, 16], ws_pct=[0, 25, 50, 100], policy=["eager", "cow"])
FULL = grid(heap_mib=512, workers=[1, 2, 4, 8, 16, 32, 64], ws_pct=WS, policy=["eager", "cow"])
PAGE_MIB = 4096 / 2**20
COSTS = cb.CostModel.default()


def point(heap_mib=256, workers=4, ws_pct=25, policy="cow"):
    sc = cb.Scenario(phys_mem=f"{(workers + 2) * heap_mib}MiB")
    master = sc.spawn("master", program=debian_program(sc, "redis-server"))
    run_image(master)
    heap = master.mmap("heap", f"{heap_mib}MiB")
    master.write(heap)
    n = heap.npages
    k = n * ws_pct // 100
    for w in range(workers):
        worker = master.fork(f"worker{w}")
        run_image(worker, init=False)
        if k:
            worker.write(heap, pages=cb.sequential(k, start=w * n // workers))
    img = master.image
    code_mib = sum(r.npages for r in (img.text, *img.libs)) * PAGE_MIB
    data_mib = (img.data.npages + img.bss.npages) * PAGE_MIB
    share = 1 if policy == "eager" else ws_pct / 100
    res = cb.simulate(sc, policy=policy)
    p = res.processes
    wk = p[p.name.str.startswith("worker")]
    return {
        "total_pss_mib": p.pss_pages.sum() * PAGE_MIB,
        "total_uss_mib": p.uss_pages.sum() * PAGE_MIB,
        "total_rss_mib": p.rss_pages.sum() * PAGE_MIB,
        "page_table_mib": p.pte_pages.sum() * PAGE_MIB,
        "expected_pss_mib": (heap_mib * (1 + workers * share) + code_mib
                             + data_mib * (1 + workers if policy == "eager" else 1)),
        "code_mib": code_mib,
        "time_ms": (wk.fork_ns.sum() + wk.est_time_ns.sum()) / 1e6,
        "worker_pss_mib": wk.pss_pages.mean() * PAGE_MIB,
    }


def savings(df):
    """COW against eager at the same (workers, working set): memory and time saved."""
    key = ["heap_mib", "workers", "ws_pct"]
    e = df[df.policy == "eager"].set_index(key)
    c = df[df.policy == "cow"].set_index(key)
    out = (1 - c.total_pss_mib / e.total_pss_mib).mul(100).rename("memory_saved_pct").to_frame()
    out["time_saved_pct"] = (1 - c.time_ms / e.time_ms).mul(100)
    return out.reset_index()


def _crossover(s, n):
    """Working set (%) where COW's time saving crosses 0 for n workers (linear interpolation)."""
    g = s[s.workers == n].sort_values("ws_pct")
    for (_, a), (_, b) in zip(g.iterrows(), g.iloc[1:].iterrows()):
        if a.time_saved_pct > 0 >= b.time_saved_pct:
            return a.ws_pct + (b.ws_pct - a.ws_pct) * a.time_saved_pct / (a.time_saved_pct - b.time_saved_pct)
    return float("nan")


def compare(df):
    s = savings(df)
    nmax = int(df.workers.max())
    err = (df.total_pss_mib - df.expected_pss_mib).abs().max()
    at = lambda ws: float(s[(s.workers == nmax) & (s.ws_pct == ws)].memory_saved_pct.iloc[0])  # noqa: E731
    mid = 25 if 25 in set(s.ws_pct) else sorted(s.ws_pct)[1]
    exp = df.set_index(["policy", "workers", "ws_pct"]).expected_pss_mib
    saved = lambda ws: 100 * (1 - exp["cow", nmax, ws] / exp["eager", nmax, ws])       # noqa: E731
    return [
        versus("total PSS = (1 + N w) H + D + T under COW, (1 + N)(H + D) + T under eager", "arithmetic",
               f"largest deviation {err:.2f} MiB over {len(df)} points",
               "smem / PSS definition"),
        versus(f"COW memory saving, {nmax} workers, working set {mid} %",
               f"{saved(mid):.1f} %", f"{at(mid):.1f} %", "arithmetic"),
        versus(f"COW memory saving, {nmax} workers, working set 100 %",
               f"{saved(100):.1f} %: COW saves only the data's copies", f"{at(100):.1f} %", "arithmetic"),
        versus(f"working set past which COW is slower than eager fork ({nmax} workers)",
               f"{100 * COSTS.fork_page_ns / COSTS.cow_copy_ns:.0f} % (fork_page_ns / cow_copy_ns)",
               f"{_crossover(s, nmax):.0f} %", "cost model (default)"),
    ]


def summary(df):
    s = savings(df)
    t = s.pivot(index="workers", columns="ws_pct", values="memory_saved_pct").round(1)
    t.columns = [f"mem_saved%[ws={c}%]" for c in t.columns]
    return t.reset_index()


def plot(df, png):
    s = savings(df)
    c = df[df.policy == "cow"]
    e = df[(df.policy == "eager") & (df.ws_pct == df.ws_pct.min())]
    h = float(df.heap_mib.iloc[0])
    pct = lambda v: f"cow, working set {v} %"   # noqa: E731
    return [
        lines(c, "workers", "total_pss_mib", png("total_pss"), hue="ws_pct", hue_fmt=pct, logx=2, logy=True,
              title=f"Total memory of a prefork pool ({h:g} MiB heap)",
              xlabel="workers (log scale)", ylabel="total PSS of master + workers (MiB, log scale)",
              refs=[Ref.under(e.workers, e.total_pss_mib, "eager fork, any working set (~ cow at 100 %)")],
              legend_loc="upper left"),
        lines(s, "ws_pct", "memory_saved_pct", png("memory_saved"), hue="workers",
              hue_fmt=lambda n: f"{n} workers", ylim=(-5, 105),
              title="Memory COW saves against eager fork",
              xlabel="working set: share of the heap each worker writes (%)",
              ylabel="total PSS saved by COW (%)", refs=[Ref.hline(0, "COW saves nothing", ls=":")],
              legend_loc="upper right"),
        lines(s[s.workers == s.workers.max()], "ws_pct", "time_saved_pct", png("time_saved"), hue="workers",
              hue_fmt=lambda n: "any number of workers (the lines coincide)",
              title="Time COW saves against eager fork",
              xlabel="working set: share of the heap each worker writes (%)",
              ylabel="fork + fault time saved by COW (%)", refs=[Ref.hline(0, "break-even", ls=":")],
              legend_loc="upper right",
              note="Default cost model: 85 ns per PTE copied at fork + 2 us per COW fault, against 1 us "
                   "per page copied by an eager fork."),
    ]


if __name__ == "__main__":
    main(__name__)
