"""Memory limit: can a parent that fills a fraction of physical memory still fork?

A machine with 128 MiB of physical memory (xv6's, PHYSTOP - KERNBASE); a
parent writes a heap of 5 % to 95 % of it, then forks. Eager fork must find a
free frame for every page of the parent at fork time, so it fails (ENOMEM, the
parent goes on) as soon as the parent holds more than half of memory; COW fork
copies only page tables, so it succeeds at any size. That is xv6's cowtest
`simpletest`: allocate 2/3 of physical memory, fork, check that fork succeeds,
which fails on the stock (eager) xv6 kernel and passes once fork is COW.

The second figure lets the child then write every page: COW only postponed the
copies, so past one half of memory a COW fault finds no frame and the OOM killer
(Linux's rule: the largest RSS, ties to the lowest pid) kills a process; the
parent, as large as its child, is the one that goes.

Overcommit decides whether Linux lets a COW fork promise memory it may not
have. Under the default heuristic (vm.overcommit_memory=0) and under 1 the fork
succeeds; under strict accounting (2, with overcommit_ratio=100 so that the
parent itself fits) the child's private writable memory is charged at fork, and
a COW fork fails where an eager one would: Redis's FAQ ("Background saving
fails with a fork() error ... even if I have a lot of free RAM"; its fix is
vm.overcommit_memory=1). The FAQ blames mode 0 for it; the kernel's mode 0
heuristic (__vm_enough_memory) refuses only a single charge larger than RAM +
swap, which is what the simulator does: the comparison shows the difference.

Page tables take frames too, so each limit sits a few pages below the exact
fraction.
"""
import cowbench as cb
from cowbench.experiment import grid, main, versus
from cowbench.plot import Ref, lines

PHYS_MIB = 128
FRACTIONS_QUICK = [0.25, 0.45, 0.55, 2 / 3, 0.9]
FRACTIONS_FULL = [0.05, 0.1, 0.2, 0.3, 0.4, 0.45, 0.49, 0.5, 0.51, 0.55, 0.6, 2 / 3, 0.7, 0.8, 0.9, 0.95]
QUICK = (grid(fraction=FRACTIONS_QUICK, policy=["eager", "cow"], child=["exits", "writes_all"])
         + grid(fraction=FRACTIONS_QUICK, policy="cow", child="exits", overcommit=2))
FULL = (grid(fraction=FRACTIONS_FULL, policy=["eager", "cow", "odf"], child=["exits", "writes_all"])
        + grid(fraction=FRACTIONS_FULL, policy="cow", child="exits", overcommit=[1, 2]))


def point(fraction=2 / 3, policy="cow", child="exits", overcommit=0, phys_mib=PHYS_MIB):
    sc = cb.Scenario(phys_mem=f"{phys_mib}MiB")
    parent = sc.spawn("parent")
    heap = parent.mmap("heap", int(fraction * phys_mib * 2**20) // 4096 * 4096)
    parent.write(heap)
    kid = parent.fork("child")
    if child == "writes_all":
        kid.write(heap)
    kid.exit()
    parent.write(heap, pages=range(0, 1))        # the parent carries on
    res = cb.simulate(sc, policy=policy, overcommit=overcommit, overcommit_ratio=100)
    p = res.processes.set_index("name")
    killed = [n for n in ("parent", "child") if p.loc[n, "state"] == "killed"]
    fork_ok = p.loc["child", "state"] != "fork_failed"
    if not fork_ok:
        outcome = "fork failed (ENOMEM)"
    elif killed:
        outcome = " + ".join(killed) + " OOM-killed"
    else:
        outcome = "ok"
    return {
        "overcommit": overcommit,
        "mode": policy if overcommit == 0 else f"{policy}, overcommit={overcommit}",
        "heap_mib": heap.size / 2**20,
        "fork_ok": int(fork_ok),
        "all_survive": int(fork_ok and not killed),
        "outcome": outcome,
        "parent_state": p.loc["parent", "state"],
        "child_state": p.loc["child", "state"],
        "peak_pct_of_phys": 100 * res.summary.peak_frames / sc.frames,
    }


def _ok(df, policy, frac, child="exits", overcommit=0):
    g = df[(df.policy == policy) & (df.child == child) & ((df.fraction - frac).abs() < 1e-9)
           & (df.overcommit == overcommit)]
    return g.iloc[0]


def _limit(df, policy, col, child, overcommit=0):
    g = df[(df.policy == policy) & (df.child == child) & (df.overcommit == overcommit)].sort_values("fraction")
    ok = g[g[col] == 1]
    return f"{ok.fraction.max():.2f}" if len(ok) else "none"


def compare(df):
    e, c = _ok(df, "eager", 2 / 3), _ok(df, "cow", 2 / 3)
    return [
        versus("xv6 cowtest simpletest: fork with 2/3 of memory in use, eager (stock xv6)", "fork() failed",
               e.outcome, "xv6-riscv user/cowtest.c"),
        versus("xv6 cowtest simpletest: fork with 2/3 of memory in use, COW", "ok", c.outcome,
               "xv6-riscv user/cowtest.c"),
        versus("largest fraction of memory an eager parent can fork at", "1/2 (every page copied)",
               _limit(df, "eager", "fork_ok", "exits"), "xv6 book, ch. 3"),
        versus("largest fraction of memory a COW parent can fork at", "any (only page tables copied)",
               _limit(df, "cow", "fork_ok", "exits"), "Linux fork(2)"),
        versus("... when the child then writes every page (COW)", "1/2: copies only postponed",
               _limit(df, "cow", "all_survive", "writes_all") + " (past it: "
               + _ok(df, "cow", 2 / 3, "writes_all").outcome + ")", "Linux OOM killer"),
        versus("COW fork under strict overcommit (mode 2, ratio 100)", "fails without RAM for a full copy",
               f"largest fraction forked: {_limit(df, 'cow', 'fork_ok', 'exits', 2)}; at 2/3: "
               + _ok(df, "cow", 2 / 3, "exits", 2).outcome, "Redis FAQ (fork() error with free RAM)"),
        versus("COW fork under the default heuristic (mode 0)",
               "Redis FAQ: fails unless free RAM covers the dataset",
               f"largest fraction forked: {_limit(df, 'cow', 'fork_ok', 'exits', 0)}",
               "Linux __vm_enough_memory", "the kernel's mode 0 refuses only a single charge larger than RAM"),
    ]


def summary(df):
    t = df.pivot_table(index="fraction", columns=["mode", "child"], values="outcome", aggfunc="first")
    t.columns = [f"{p}, child {c}" for p, c in t.columns]
    t = t.reset_index()
    t["fraction"] = t.fraction.round(3)
    return t


def plot(df, png):
    modes = [m for m in ("eager", "cow", "odf", "cow, overcommit=1", "cow, overcommit=2") if m in set(df["mode"])]
    refs = [Ref.vline(2 / 3, "xv6 cowtest simpletest: 2/3 of memory"),
            Ref.vline(0.5, "eager limit: 1/2 of memory", ls=":")]
    offset = {m: 0.025 * i for i, m in enumerate(modes)}
    d = df.assign(fork_ok=df.fork_ok + df["mode"].map(offset), all_survive=df.all_survive + df["mode"].map(offset))
    palette = {"cow, overcommit=1": "#17becf", "cow, overcommit=2": "#9467bd"}
    common = dict(hue="mode", hue_order=modes, xlabel="parent's memory / physical memory",
                  drawstyle="steps-mid", ylim=(-0.1, 1.25), legend_loc="center left")
    return [
        lines(d[d.child == "exits"], "fraction", "fork_ok", png("fork_success"), **common, palette=palette,
              hue_fmt=lambda m: {"eager": "eager copy", "cow": "COW (overcommit=0, the default)",
                                 "odf": "on-demand-fork", "cow, overcommit=1": "COW, overcommit=1",
                                 "cow, overcommit=2": "COW, overcommit=2 (strict, ratio 100)"}[m],
              title=f"Does fork() succeed? ({PHYS_MIB} MiB of physical memory)",
              ylabel="fork()", yticks={0: "failed\n(ENOMEM)", 1: "succeeded"}, refs=refs,
              note="Lines are offset by 0.025 so that equal outcomes do not hide each other."),
        lines(d[(d.child == "writes_all") & (d.overcommit == 0)], "fraction", "all_survive",
              png("child_writes_all"), **{**common, "hue": "policy",
                                          "hue_order": [m for m in ("eager", "cow", "odf") if m in modes]},
              title="...and when the child then writes every page",
              ylabel="parent and child", yticks={0: "one killed\nor no fork", 1: "both\nsurvive"},
              refs=[Ref.vline(0.5, "1/2 of memory: parent + a full copy", ls=":")],
              note="Eager: the fork fails past 1/2. COW: the fork succeeds, then a COW fault finds no "
                   "frame and the OOM killer kills the parent (largest RSS, lowest pid)."),
    ]


if __name__ == "__main__":
    main(__name__)
