"""Zygote: many apps forked from one large preloaded parent.

Android starts every app by forking the zygote, a process that has already
preloaded the framework's classes and resources (512 MiB here, 256 MiB with
--quick). Each app then dirties a share of the inherited heap (1 %, 5 % or 20 %:
class initialisation, caches, JIT; distinct pages, from its own offset) and
writes a private heap of its own (32 MiB). The zygote stays alive, so every
inherited page an app has not written stays shared with it and with every
other app.

Two numbers per app count N: the share of the apps' summed RSS that is shared
memory (flat in N: it depends only on what each app writes), and the memory
sharing saves, 1 - (frames in use) / (RSS summed over every process), which
grows with N towards 1 - (d Z + P) / (Z + P) for a zygote of Z, dirty share d
and private heap P, while the mean PSS per app falls towards d Z + P.

Besides its preloaded heap, the zygote maps the framework's code from files (its
boot image, compiled framework and native libraries): 64 MiB here, an
assumption of the order procrank shows (zygote64 on an emulator: 138 MB RSS, 25
MB PSS). The zygote and every app execute all of it. It is one page cache:
fork copies no PTE of it (no anon_vma), each app faults it in, and every app's
RSS holds it as shared pages (C, added to the limit: 1 - (d Z + P) / (Z + C + P)).

Published reference (qualitative): Android's "Overview of memory management":
forking from the zygote "allows most of the RAM pages allocated for framework
code and resources to be shared across all app processes".
"""
import cowbench as cb
from cowbench.experiment import grid, main, run_image, versus
from cowbench.plot import Ref, lines

QUICK = grid(zygote_mib=256, apps=[1, 4, 16], dirty_pct=[1, 5, 20])
FULL = grid(zygote_mib=512, apps=[1, 2, 4, 8, 16, 32, 64, 128], dirty_pct=[1, 5, 20])
PRIVATE_MIB = 32
CODE_MIB = 64
PAGE_MIB = 4096 / 2**20


def point(zygote_mib=256, apps=4, dirty_pct=5, private_mib=PRIVATE_MIB, code_mib=CODE_MIB):
    sc = cb.Scenario(phys_mem=f"{zygote_mib + apps * (private_mib + zygote_mib * dirty_pct // 100) + 1024}MiB")
    framework = sc.file("framework code", f"{code_mib}MiB")
    zygote = sc.spawn("zygote", program=cb.Program("app_process64", text="32KiB", libs=[framework]))
    run_image(zygote)
    boot = zygote.mmap("preloaded", f"{zygote_mib}MiB")
    zygote.write(boot)
    n = boot.npages
    k = n * dirty_pct // 100
    for a in range(apps):
        app = zygote.fork(f"app{a}")
        run_image(app, init=False)
        if k:
            app.write(boot, pages=cb.sequential(k, start=(a * 7919) % n))
        heap = app.mmap("app_heap", f"{private_mib}MiB")
        app.write(heap)
    res = cb.simulate(sc, policy="cow")
    p = res.processes
    ap = p[p.name.str.startswith("app")]
    z, d, q = zygote_mib, dirty_pct / 100, private_mib
    c = sum(r.npages for r in (zygote.image.text, *zygote.image.libs)) * PAGE_MIB
    return {
        "app_shared_pct": 100 * ap.shared_pages.sum() / ap.rss_pages.sum(),
        "saved_pct": 100 * (1 - res.summary.frames_used / p.rss_pages.sum()),
        "saved_limit_pct": 100 * (1 - (d * z + q) / (z + c + q)),
        "app_file_mib": ap.file_pages.mean() * PAGE_MIB,
        "app_pss_mib": ap.pss_pages.mean() * PAGE_MIB,
        "app_rss_mib": ap.rss_pages.mean() * PAGE_MIB,
        "app_uss_mib": ap.uss_pages.mean() * PAGE_MIB,
        "frames_mib": res.summary.frames_used * PAGE_MIB,
        "rss_sum_mib": p.rss_pages.sum() * PAGE_MIB,
    }


def compare(df):
    nmax = int(df.apps.max())
    rows = []
    for d in sorted(df.dirty_pct.unique()):
        g = df[(df.dirty_pct == d) & (df.apps == nmax)].iloc[0]
        rows.append(versus(f"apps dirtying {d} % of the zygote: shared share of an app's RSS",
                           "most framework pages shared by all apps",
                           f"{g.app_shared_pct:.0f} % of each app's {g.app_rss_mib:.0f} MiB RSS",
                           "Android memory overview"))
        rows.append(versus(f"memory saved by sharing, {nmax} apps, {d} % dirtied",
                           f"-> {g.saved_limit_pct:.1f} % as apps grow (arithmetic)",
                           f"{g.saved_pct:.1f} % ({g.frames_mib:,.0f} MiB in use for {g.rss_sum_mib:,.0f} MiB "
                           f"of summed RSS)", "arithmetic"))
    return rows


def summary(df):
    t = df.pivot(index="apps", columns="dirty_pct", values="saved_pct").round(1)
    t.columns = [f"saved%[dirty={c}%]" for c in t.columns]
    u = df.pivot(index="apps", columns="dirty_pct", values="app_pss_mib").round(1)
    u.columns = [f"app_pss_mib[dirty={c}%]" for c in u.columns]
    return t.join(u).reset_index()


def plot(df, png):
    z = float(df.zygote_mib.iloc[0])
    dirty = lambda d: f"apps dirty {d} % of the zygote"   # noqa: E731
    lim = df.groupby("dirty_pct").saved_limit_pct.first()
    return [
        lines(df, "apps", "saved_pct", png("sharing"), hue="dirty_pct", hue_fmt=dirty, logx=2, ylim=(0, 100),
              title=f"Memory saved by forking apps from a {z:g} MiB zygote",
              xlabel="apps forked from the zygote (log scale)",
              ylabel="1 - memory in use / summed RSS (%)",
              refs=[Ref.hline(v, "limits as apps grow: 1 - (dZ + P) / (Z + C + P)" if i == 0 else "_nolegend_",
                              ls=":")
                    for i, (d, v) in enumerate(lim.items())],
              legend_loc="lower right",
              note=f"Each app also writes a private {PRIVATE_MIB} MiB heap and executes the zygote's "
                   f"{CODE_MIB} MiB of framework code (from files, shared). The share of each app's own RSS "
                   "that is shared stays flat: see the summary table."),
        lines(df, "apps", "app_pss_mib", png("app_pss"), hue="dirty_pct", hue_fmt=dirty, logx=2, logy=True,
              title="Proportional memory (PSS) of one app",
              xlabel="apps forked from the zygote (log scale)", ylabel="mean PSS per app (MiB, log scale)",
              refs=[Ref.hline(z + CODE_MIB + PRIVATE_MIB, "RSS of an app (what ps shows)", ls=":")],
              legend_loc="lower left"),
    ]


if __name__ == "__main__":
    main(__name__)
