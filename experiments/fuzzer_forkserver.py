"""A fuzzer's fork server: executions per second against the target's size, per fork policy.

AFL++'s model: the target starts, initialises (here: writes a heap of 64 MiB
to 16 GiB, what a real target loads or builds before main's work begins) and
stops at a fork server; for every input the server forks, the child runs the
input (it writes a few hundred pages of its own: stack, heap, globals, and
the 64 KiB coverage bitmap the fuzzer shares with it) and exits, and the
server waits for it. What a fork server can sustain is one execution per
fork + the child's faults + its exit + the input's own run time.

Time is the cost model's estimate for the counts the simulator reports: the
fork (PTEs and tables copied, or pages under eager), the child's faults
(COW copies of the pages it writes, first touches of the bitmap) and its exit
(the pages it unmaps). The input's own computation is a parameter, run_us:
0 (the fork server's ceiling) and 100 us (a small parser).

On-demand-fork (Zhao, Gong and Fonseca, EuroSys'21) names fuzzing among the
workloads it speeds up: its abstract reports execution-throughput gains of
59 % to 226 % on testing, fuzzing and snapshotting workloads, and a fork 65x
faster than Linux's for a 1 GB process. (Its fuzzing figure itself could not
be consulted here; the comparison is with the abstract's range.)
"""
import numpy as np

import cowbench as cb
from cowbench.experiment import grid, main, versus
from cowbench.plot import Ref, lines

EXECS = 40                       # fork server iterations simulated per point
BITMAP = "64KiB"                 # AFL's coverage map (MAP_SIZE), shared with the fuzzer
QUICK = grid(size_mib=[64, 1024, 4096], policy=["eager", "cow", "odf"], touched=[300], run_us=[0, 100])
FULL = grid(size_mib=[64, 256, 1024, 4096, 16384], policy=["eager", "cow", "odf"], touched=[100, 300],
            run_us=[0, 100])


def point(size_mib=1024, policy="cow", touched=300, run_us=0, execs=EXECS):
    sc = cb.Scenario(phys_mem=f"{2 * size_mib + 4096}MiB")          # room for an eager copy
    target = sc.spawn("forkserver")
    heap = target.mmap("heap", f"{size_mib}MiB")
    bitmap = target.mmap("afl_area", BITMAP, shared=True)
    target.write(heap)                                   # initialisation, before the fork server starts
    target.write(bitmap)
    for i in range(execs):
        child = target.fork(f"exec{i}")
        child.write(heap, pages=cb.uniform(touched, seed=i + 1))
        child.write(bitmap, pages=cb.uniform(64, seed=10_000 + i))
        child.exit()
    res = cb.simulate(sc, policy=policy)
    kids = res.processes[res.processes.parent != 0]
    assert (kids.state == "exited").all(), f"{policy} at {size_mib} MiB: a fork failed or a child was killed"
    fork_ns = kids.fork_ns.mean()
    fault_ns = kids.est_time_ns.mean()
    exit_ns = kids.exit_ns.mean()
    per_exec_ns = fork_ns + fault_ns + exit_ns + run_us * 1000
    return {
        "execs_per_s": 1e9 / per_exec_ns,
        "fork_us": fork_ns / 1e3,
        "child_faults_us": fault_ns / 1e3,
        "exit_us": exit_ns / 1e3,
        "cow_copies_per_exec": float(kids.cow_copies.mean()),
        "fork_ptes_copied_per_exec": float(kids.fork_ptes_copied.mean()),
        "fault_tables_copied_per_exec": float(kids.fault_tables_copied.mean()),
    }


def _at(df, policy, size, touched, run_us, col="execs_per_s"):
    g = df[(df.policy == policy) & (df.size_mib == size) & (df.touched == touched) & (df.run_us == run_us)]
    return float(g[col].iloc[0])


def compare(df):
    touched = 300 if 300 in set(df.touched) else int(df.touched.max())
    gib = 1024 if 1024 in set(df.size_mib) else int(df.size_mib.max())
    big = int(df.size_mib.max())
    gain = {z: _at(df, "odf", z, touched, 0) / _at(df, "cow", z, touched, 0) - 1 for z in sorted(set(df.size_mib))}
    return [
        versus("fork of a 1 GiB target, odf vs Linux fork",
               "On-demand-fork 65x faster for a 1 GB process",
               f"{_at(df, 'cow', gib, touched, 0, 'fork_us') / _at(df, 'odf', gib, touched, 0, 'fork_us'):.0f}x "
               f"({_at(df, 'cow', gib, touched, 0, 'fork_us'):,.0f} us vs "
               f"{_at(df, 'odf', gib, touched, 0, 'fork_us'):,.0f} us)",
               "Zhao et al., EuroSys'21 (abstract)",
               "the fork alone; the cost model's fork_base_ns (a minimal Python process's fork) is in both"),
        versus(f"execution throughput, odf over cow, {gib / 1024:g} GiB target",
               "+59 % to +226 % on testing, fuzzing and snapshotting workloads",
               f"{100 * gain[gib]:+.0f} % (from {100 * min(gain.values()):+.0f} % at "
               f"{min(gain, key=gain.get):g} MiB to {100 * max(gain.values()):+.0f} % at "
               f"{max(gain, key=gain.get) / 1024:g} GiB)",
               "Zhao et al., EuroSys'21 (abstract)",
               f"{touched} pages written per input: odf copies a PTE table at each first write into a 2 MiB "
               "range, so a small target whose every table an input writes gains nothing"),
        versus(f"executions per second, {gib / 1024:g} GiB target (cow)",
               "AFL's fork server: fork + exit per input",
               f"{_at(df, 'cow', gib, touched, 0):,.0f}/s ceiling, {_at(df, 'cow', gib, touched, 100):,.0f}/s with "
               f"100 us per input; eager {_at(df, 'eager', gib, touched, 0):,.1f}/s",
               "cost model", "eager copies the whole target for every input"),
    ]


def summary(df):
    d = df[df.run_us == 0]
    d = d[d.touched == d.touched.max()]
    t = d.pivot(index="size_mib", columns="policy", values="execs_per_s").round(0)
    return t.reset_index()


def plot(df, png):
    touched = int(df.touched.max())
    d = df[df.touched == touched]
    common = dict(hue="policy", hue_order=["eager", "cow", "odf"], xlabel="target's resident memory (log scale)",
                  size_x=True, legend_loc="upper right")
    note = (f"{EXECS} fork server iterations per point; each input writes {touched} pages of the target's heap "
            f"and the {BITMAP} coverage bitmap, then exits.")
    out = [lines(d[d.run_us == 0], "size_mib", "execs_per_s", png("execs"), **common,
                 title="A fork server's ceiling: executions per second",
                 ylabel="executions per second (log scale)", logy=True, note=note + " No run time per input."),
           lines(d[d.run_us == 0], "size_mib", "fork_us", png("fork"), **common,
                 title="fork latency of the fork server", ylabel="fork (us, log scale)", logy=True, note=note)]
    sizes = np.array(sorted(d.size_mib.unique()), dtype=float)
    cow100 = d[(d.run_us == 100) & (d.policy == "cow")].set_index("size_mib").execs_per_s.reindex(sizes)
    ref = Ref.band(sizes, 1.59 * cow100.to_numpy(), 3.26 * cow100.to_numpy(), "cow x 1.59 to 3.26 (ODF paper, abstract)")
    out.append(lines(d[d.run_us == 100], "size_mib", "execs_per_s", png("execs_100us"), **common,
                     title="Executions per second with 100 us per input", ylabel="executions per second (log scale)",
                     logy=True, refs=[ref], note=note))
    return out


if __name__ == "__main__":
    main(__name__)
