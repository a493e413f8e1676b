"""Process trees: chains and wide fan-outs, and what each level of the tree copies.

A root writes a 256 MiB heap (128 MiB with --quick), then builds a tree of n
more processes (1 to 64): a fan-out (the root forks them all, as a prefork
server does), a chain (each process forks the next, as nested shells do), or a
chain whose processes (but the root) exit once they have forked the next (the
daemon's double fork). Every process but the root writes the same hot 10 % of
the heap right after its birth (after its parent's exit, in the last shape),
before it forks.

What COW predicts, level by level: a process copies exactly the pages it writes
while another live process still maps them, whatever its depth, where eager
fork copies the whole heap at every level. In a chain whose parents exit, the
pages a process inherits from its exited parent are its own again: the first
level copies the hot 10 %, every deeper level reuses them in place (pgreuse).

Kernel reference (docs/semantics.md, observed on Linux 6.x): in a chain root ->
mid -> leaf over N pages, the leaf writes all (N copies) and exits, mid writes
all (N copies: still shared with root) and exits, root writes all (N reuses).
The `story` point runs exactly that.
"""
import cowbench as cb
from cowbench.experiment import grid, main, versus
from cowbench.plot import lines

SHAPES = ["fanout", "chain", "chain_exit"]
QUICK = (grid(heap_mib=128, tree=SHAPES, n=[1, 4, 16], policy=["eager", "cow"])
         + grid(heap_mib=128, tree="story", n=2, policy="cow"))
FULL = (grid(heap_mib=256, tree=SHAPES, n=[1, 2, 4, 8, 16, 32, 64], policy=["eager", "cow", "odf"])
        + grid(heap_mib=256, tree="story", n=2, policy="cow"))
HOT_PCT = 10
PAGE_MIB = 4096 / 2**20


def point(heap_mib=128, tree="chain", n=4, policy="cow"):
    sc = cb.Scenario(phys_mem=f"{(n + 2) * heap_mib}MiB")
    root = sc.spawn("root")
    heap = root.mmap("heap", f"{heap_mib}MiB")
    root.write(heap)
    hot = range(0, heap.npages * HOT_PCT // 100)
    depth = {"root": 0}
    if tree == "story":                      # docs/semantics.md: the chain rule
        mid = root.fork("mid")
        leaf = mid.fork("leaf")
        depth.update(mid=1, leaf=2)
        for p in (leaf, mid):
            p.write(heap)
            p.exit()
        root.write(heap)
    else:
        parent = root
        for i in range(1, n + 1):
            kid = parent.fork(f"p{i}")
            if tree == "chain_exit" and parent is not root:
                parent.exit()
            kid.write(heap, pages=hot)
            depth[f"p{i}"] = i if tree != "fanout" else 1
            if tree != "fanout":
                parent = kid
    res = cb.simulate(sc, policy=policy)
    p = res.processes
    frames_mib = res.summary.frames_used * PAGE_MIB
    return [{
        "process": r.name,
        "depth": depth[r.name],
        "level": i,
        "state": r.state,
        "pages_copied": int(r.fork_pages_copied + r.cow_copies),
        "fork_pages_copied": int(r.fork_pages_copied),
        "cow_copies": int(r.cow_copies),
        "cow_reuses": int(r.cow_reuses),
        "fork_ms": r.fork_ns / 1e6,
        "pss_mib": r.pss_pages * PAGE_MIB,
        "frames_mib": frames_mib,
        "peak_mib": res.summary.peak_frames * PAGE_MIB,
    } for i, r in enumerate(p.itertuples())]


def _trees(df):
    return df[df.tree != "story"]


def compare(df):
    t = _trees(df)
    nmax = int(t.n.max())
    h = float(t.heap_mib.iloc[0])
    big = t[(t.n == nmax) & (t.depth > 0)]
    per = lambda shape, pol, depth: big[(big["tree"] == shape) & (big.policy == pol)  # noqa: E731
                                        & (big.depth == depth)].pages_copied.mean()
    story = df[df.tree == "story"].set_index("process")
    npg = int(h * 256)
    rows = [
        versus(f"pages copied per process, chain of {nmax}, eager", f"the whole heap ({npg:,}) at every level",
               f"{per('chain', 'eager', 1):,.0f} at depth 1, {per('chain', 'eager', nmax):,.0f} at depth {nmax}",
               "xv6 uvmcopy"),
        versus(f"pages copied per process, chain of {nmax}, COW", f"only what it writes ({npg // 10:,})",
               f"{per('chain', 'cow', 1):,.0f} at depth 1, {per('chain', 'cow', nmax):,.0f} at depth {nmax}",
               "docs/semantics.md (COW fault rule)"),
        versus(f"chain of {nmax} whose parents exit, COW", "depth 1 copies, deeper levels reuse",
               f"{per('chain_exit', 'cow', 1):,.0f} copies at depth 1, {per('chain_exit', 'cow', 2):,.0f} at "
               f"depth 2, {per('chain_exit', 'cow', nmax):,.0f} at depth {nmax}", "docs/semantics.md (reuse rule)"),
    ]
    if len(story):
        s = story
        rows.append(versus("chain root -> mid -> leaf over N pages (copies / reuses)",
                           f"leaf N/0, mid N/0, root 0/N (N = {npg:,})",
                           f"leaf {s.loc['leaf', 'cow_copies']:,}/{s.loc['leaf', 'cow_reuses']:,}, "
                           f"mid {s.loc['mid', 'cow_copies']:,}/{s.loc['mid', 'cow_reuses']:,}, "
                           f"root {s.loc['root', 'cow_copies']:,}/{s.loc['root', 'cow_reuses']:,}",
                           "docs/semantics.md, observed on Linux 6.x"))
    return rows


def summary(df):
    t = _trees(df)
    tot = t.groupby(["tree", "policy", "n"], as_index=False).agg(frames_mib=("frames_mib", "first"),
                                                                   pages_copied=("pages_copied", "sum"))
    w = tot.pivot_table(index="n", columns=["tree", "policy"], values="frames_mib").round(0)
    w.columns = [f"mib[{s},{p}]" for s, p in w.columns]
    return w.reset_index()


def plot(df, png):
    t = _trees(df)
    nmax = int(t.n.max())
    h = float(t.heap_mib.iloc[0])
    kids = t[(t.n == nmax) & (t.depth > 0) & (t.policy != "odf")]
    fan = kids[kids["tree"] == "fanout"].groupby("policy", as_index=False).pages_copied.mean()
    chains = kids[kids["tree"] != "fanout"]
    tot = t.groupby(["tree", "policy", "n"], as_index=False).frames_mib.first()
    return [
        lines(chains, "depth", "pages_copied", png("copies_by_depth"), hue="policy", style="tree",
              hue_order=["eager", "cow"], style_order=["chain", "chain_exit"],
              style_fmt=lambda s: {"chain": "chain", "chain_exit": "chain, parents exit"}[s],
              logx=2, symlogy=1, legend_loc="center right",
              title=f"Pages each process of a chain of {nmax} copies",
              xlabel="depth in the chain (log scale)", ylabel="pages copied (fork + COW faults, log scale)",
              note=f"{h:g} MiB heap; every process writes the same hot {HOT_PCT} %. A fan-out's children copy "
                   f"{fan.set_index('policy').pages_copied.get('cow', float('nan')):,.0f} pages each under cow, "
                   f"{fan.set_index('policy').pages_copied.get('eager', float('nan')):,.0f} under eager. "
                   "odf copies what cow copies."),
        lines(tot[tot.policy != "odf"], "n", "frames_mib", png("memory"), hue="policy", style="tree",
              hue_order=["eager", "cow"], style_order=["fanout", "chain_exit"],
              style_fmt=lambda s: {"chain_exit": "chain, parents exit", "fanout": "fan-out or chain"}[s],
              logx=2, logy=True, legend_loc="upper left",
              title="Memory in use once the tree is built",
              xlabel="processes forked (log scale)", ylabel="memory in use (MiB, log scale)",
              note="A chain uses what a fan-out of the same size uses: each process copies what it writes. "
                   "odf uses what cow uses, minus the page tables it shares."),
    ]


if __name__ == "__main__":
    main(__name__)
