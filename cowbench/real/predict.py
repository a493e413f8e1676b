"""`cowbench predict PID|FILE`: what forking a real process costs, per policy.

    pr = predict(cb.snapshot(pid), costs=cb.CostModel.load("host.toml"), write_rate=50_000, seconds=5)
    pr = predict(cb.Trace.load("bgsave.parquet"))        # COW memory over time from the recorded writes
    pr.fork          # per policy: fork latency, PTEs, tables, pages copied, page-table bytes
    pr.regions       # per region: size, resident, what fork does with it, its share of the fork
    pr.over_time     # per policy and time: memory copied on write since the fork, memory in use
    print(pr.format()); pr.plot("out/")

Fork latency is the cost model's price of the counts: fork_base_ns + fork_pte_ns x (PTEs and
huge PMDs copied, and under odf the PMD entries of shared tables) + fork_table_ns x PTE tables
copied + fork_page_ns x pages copied (eager). For a snapshot the counts are the simulator's
(snapshot.scenario() forked once, the child idle) with the page tables counted on the real
layout (Snapshot.fork_estimate: several small VMAs in one 2 MiB range share one real table, one
simulated table each) and the PTEs of VM_PFNMAP VMAs added (the simulator has no PFN maps).
The cost model's fork_base_ns was measured on a minimal Python process and so already holds
that process's ~3,400 PTEs: for a small process the prediction is high by up to ~0.3 ms.

COW memory over time: from a trace, its replay (cowbench.real.replay) under each policy; from
a snapshot, an assumed write rate: the process forks at t = 0, its child only holds the pages,
and the parent writes `write_rate` pages a second for `seconds`, uniformly (or zipf-skewed)
over its resident private pages.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np
import pandas as pd

from .._params import ScenarioError, check_choice
from ..costs import CostModel
from . import layout as L
from .snapshot import ApproximationWarning, Snapshot, check_thp, snapshot
from .trace import Trace

__all__ = ["Prediction", "predict", "load_source", "main"]

POLICIES = ("cow", "odf", "eager")
MIB = 2**20


def load_source(source) -> Snapshot | Trace:
    """A Snapshot or Trace as given, a pid (snapshot it now) or a file written by either."""
    if isinstance(source, (Snapshot, Trace)):
        return source
    if isinstance(source, (int, np.integer)) and not isinstance(source, bool):
        return snapshot(int(source))
    if isinstance(source, str) and source.isdigit() and not os.path.exists(source):
        return snapshot(int(source))
    if isinstance(source, (str, os.PathLike)):
        path = str(source)
        if not os.path.exists(path):
            raise ScenarioError(f"predict: {path!r} is neither a process id nor a file")
        import pyarrow.parquet as pq

        md = pq.read_schema(path).metadata or {}
        if b"cowbench.trace" in md:
            return Trace.load(path)
        return Snapshot.load(path)
    raise ScenarioError(f"The 'source' parameter of predict must be a pid, a file, a Snapshot or a Trace; "
                        f"got {source!r}")


class Prediction:
    """What predict() found: fork, regions, over_time (DataFrames), about (dict), notes."""

    def __init__(self, about: dict, fork: pd.DataFrame, regions: pd.DataFrame, over_time: pd.DataFrame,
                 notes: list[str]):
        self.about, self.fork, self.regions, self.over_time, self.notes = about, fork, regions, over_time, notes

    def format(self, rows: int = 12) -> str:
        """The text `cowbench predict` prints."""
        a = self.about
        out = [a["title"], f"cost model: {a['costs']}", ""]
        with pd.option_context("display.width", 200, "display.max_columns", 30):
            f = self.fork.copy()
            out.append("fork (one fork of the process, the child idle):")
            out.append(f.to_string(index=False, float_format=lambda x: f"{x:,.2f}"))
            if len(self.regions):
                out += ["", f"per region ({'largest first' if len(self.regions) <= rows else f'top {rows} of {len(self.regions)}'}):"]
                out.append(self.regions.head(rows).to_string(index=False, float_format=lambda x: f"{x:,.2f}"))
            if len(self.over_time):
                ot = self.over_time
                t = ot.pivot_table(index="time_s", columns="policy", values="cow_mib", aggfunc="last")
                t.columns = [f"cow_mib[{c}]" for c in t.columns]
                m = ot.pivot_table(index="time_s", columns="policy", values="memory_mib", aggfunc="last")
                m.columns = [f"memory_mib[{c}]" for c in m.columns]
                tab = t.join(m).reset_index()
                keep = np.unique(np.linspace(0, len(tab) - 1, min(len(tab), rows)).round().astype(int))
                out += ["", f"memory copied on write since the fork, over time ({a['over_time']}):",
                        tab.iloc[keep].to_string(index=False, float_format=lambda x: f"{x:,.1f}")]
        if self.notes:
            out += [""] + [f"note: {n}" for n in self.notes]
        return "\n".join(out)

    def plot(self, directory, stem: str = "predict") -> list[str]:
        """PNG figures into directory: fork latency per policy, COW memory over time."""
        from ..plot import bars, lines

        d = str(directory)
        os.makedirs(d, exist_ok=True)
        out = [str(bars(self.fork, "policy", "fork_ms", os.path.join(d, f"{stem}_fork_latency.png"),
                        title=f"Fork latency of {self.about['name']}", xlabel="fork policy",
                        ylabel="estimated fork latency (ms)", note=f"cost model: {self.about['costs'][:120]}",
                        fmt="{:,.2f}"))]
        if len(self.over_time):
            out.append(str(lines(self.over_time, "time_s", "cow_mib", os.path.join(d, f"{stem}_cow_over_time.png"),
                                 hue="policy", markers=False, title=f"Memory copied on write: {self.about['name']}",
                                 xlabel="time (s)", ylabel="copied since the fork (MiB)",
                                 note=self.about["over_time"])))
        return out


def predict(source, *, costs: CostModel | None = None, policies=POLICIES, write_rate: float | None = None,
            seconds: float = 10.0, pattern: str = "uniform", zipf_s: float = 0.99, thp: bool | None = None,
            thp_cow: str = "split", steps: int = 40, seed: int = 1, **replay_knobs) -> Prediction:
    """Fork latency per policy, page tables, a per-region breakdown and COW memory over time for
    a process (a pid, a snapshot or trace file, a Snapshot or a Trace): see the module docstring.
    replay_knobs (traces): write_scale, stretch, children, probes, fork_at, hold, extrapolate."""
    src = load_source(source)
    if costs is None:
        costs = CostModel.default()
    elif not isinstance(costs, CostModel):
        raise ScenarioError(f"The 'costs' parameter of predict must be a CostModel or None; got {costs!r}")
    policies = tuple(policies)
    for p in policies:
        check_choice("predict", "policies", p, POLICIES)
    check_thp("predict", thp)
    check_choice("predict", "pattern", pattern, ("uniform", "zipf"))
    check_choice("predict", "thp_cow", thp_cow, ("split", "copy"))
    if write_rate is not None and (isinstance(write_rate, bool) or not isinstance(write_rate, (int, float))
                                   or write_rate < 0):
        raise ScenarioError(f"The 'write_rate' parameter of predict must be a number of pages per second >= 0; "
                            f"got {write_rate!r}")
    if isinstance(src, Snapshot):
        if replay_knobs:
            raise ScenarioError(f"predict: {', '.join(replay_knobs)} apply to traces only (a snapshot has no writes "
                                "to replay; give write_rate=)")
        return _from_snapshot(src, costs, policies, write_rate, seconds, pattern, zipf_s, thp, thp_cow, steps, seed)
    return _from_trace(src, costs, policies, thp, thp_cow, replay_knobs)


# --- from a snapshot ---------------------------------------------------------------------------------

def _from_snapshot(snap: Snapshot, costs, policies, write_rate, seconds, pattern, zipf_s, thp, thp_cow, steps,
                   seed) -> Prediction:
    from ..simulator import simulate

    s = snap.summary
    est = snap.fork_estimate()
    notes = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ApproximationWarning)
        sc, proc = snap.scenario(thp=thp)
    notes += [str(w.message) for w in caught if issubclass(w.category, ApproximationWarning)]
    start = len(sc.ops)
    kid = proc.fork("child")
    marks = _write_load(sc, proc, snap, write_rate, seconds, pattern, zipf_s, steps, seed)
    kid.exit()
    rows, over = [], []
    sim = {}
    for policy in policies:
        res = simulate(sc, policy=policy, costs=costs, thp_cow=thp_cow)
        sim[policy] = res
    cow_ref = sim.get("cow") or simulate(sc, policy="cow", costs=costs, thp_cow=thp_cow)
    c = cow_ref.processes.iloc[1]
    d_tables = int(est.fork_tables_copied) - int(c.fork_tables_copied)
    d_ptes = int(est.fork_ptes_copied) - int(c.fork_ptes_copied)
    parent_pt = int(s.pte_pages) * snap.meta["page_size"]
    for policy, res in sim.items():
        k = res.processes.iloc[1]
        ptes = int(k.fork_ptes_copied) + (d_ptes if policy != "odf" else 0)
        tables = max(int(k.fork_tables_copied) + (d_tables if policy != "odf" else 0), 0)
        shared = max(int(k.fork_tables_shared) + (d_tables if policy == "odf" else 0), 0)
        pmds, pages = int(k.fork_pmds_copied), int(k.fork_pages_copied)
        ns = costs.fork_ns(ptes + pmds + shared, tables, pages, 1)
        child_pt = (int(est.child_pte_pages) if policy != "odf"
                    else int(est.child_pmd_tables + est.child_pud_tables) + pmds)
        rows.append({"policy": policy, "fork_ms": ns / 1e6, "ptes_copied": ptes, "pmds_copied": pmds,
                     "tables_copied": tables, "tables_shared": shared, "pages_copied": pages,
                     "parent_page_tables_kib": parent_pt / 1024,
                     "child_page_tables_kib": child_pt * snap.meta["page_size"] / 1024})
        if marks:
            tl = res.timeline
            base = int(tl.cow_copies.iloc[start] + 512 * tl.thp_copies.iloc[start])
            for t, i in marks:
                over.append({"policy": policy, "time_s": t,
                             "cow_mib": (int(tl.cow_copies.iloc[i] + 512 * tl.thp_copies.iloc[i]) - base)
                             * sc.page_size / MIB,
                             "memory_mib": int(tl.frames_used.iloc[i]) * sc.page_size / MIB})
    if d_tables:
        notes.append(f"page tables counted on the real layout: {d_tables:+d} PTE tables against the simulator's "
                     "(small VMAs sharing a 2 MiB range share one table)")
    if d_ptes:
        notes.append(f"{d_ptes:+d} PTEs of VM_PFNMAP VMAs ([vvar]) added: fork copies them, the simulator has none")
    m = snap.meta
    name = f"pid {m['pid']} ({m['comm']})"
    title = (f"{name}: Rss {s.rss_pages * m['page_size'] / MIB:,.1f} MiB (anon {s.anon_pages * m['page_size'] / MIB:,.1f}, "
             f"file {s.file_pages * m['page_size'] / MIB:,.1f}, shmem {s.shmem_pages * m['page_size'] / MIB:,.1f}), "
             f"THP {s.anon_huge_pages * 2} MiB, VmPTE {s.pte_pages * m['page_size'] / 1024:,.0f} kB, "
             f"{s.vmas} VMAs; {snap.detail()}")
    about = {"name": name, "title": title, "costs": costs.source,
             "over_time": (f"assumed: {write_rate:,.0f} page writes/s for {seconds:g} s, {pattern}"
                           + (f" s={zipf_s:g}" if pattern == "zipf" else "")
                           + ", over the resident private pages; the child only holds the pages")
             if marks else "no write rate given (--write-rate)"}
    return Prediction(about, pd.DataFrame(rows), _regions(snap, costs), pd.DataFrame(over), notes)


def _write_load(sc, proc, snap: Snapshot, rate, seconds, pattern, zipf_s, steps, seed) -> list[tuple[float, int]]:
    """The parent writes `rate` pages/s for `seconds` over its resident private writable pages, in
    `steps` ops; returns (time, index of the op's timeline row) per step."""
    if not rate or seconds <= 0:
        return []
    pieces, regions = sc.pieces, sc.regions_of
    pr = snap.piece_runs(pieces)
    fl = pr["state"].to_numpy()
    ok = ((fl & L.PRESENT) != 0) & ((fl & L.ZERO) == 0)
    writable = np.array([not p.shared and p.how in ("private", "file-as-anon") and "w" in p.prot for p in pieces])
    pr = pr[ok & writable[pr.piece.to_numpy()]]
    if not len(pr):
        return []
    n = pr.npages.to_numpy()
    rep = np.repeat(np.arange(len(pr)), n)
    off = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    cand_piece = pr.piece.to_numpy()[rep]
    cand_page = pr.page.to_numpy()[rep] + off
    rng = np.random.default_rng(seed)
    total = int(rate * seconds)
    if pattern == "uniform":
        draw = rng.integers(0, len(cand_page), total)
    else:
        ranks = np.arange(1, len(cand_page) + 1, dtype=np.float64) ** -zipf_s
        cdf = np.cumsum(ranks)
        cdf /= cdf[-1]
        perm = rng.permutation(len(cand_page))          # which page each rank is
        draw = perm[np.minimum(np.searchsorted(cdf, rng.random(total)), len(cdf) - 1)]
    marks = []
    cuts = np.linspace(0, total, steps + 1).round().astype(int)
    for i in range(steps):
        part = draw[cuts[i]:cuts[i + 1]]
        for pc in np.unique(cand_piece[part]).tolist():
            proc.write(regions[pc], pages=np.unique(cand_page[part][cand_piece[part] == pc]))
        marks.append(((i + 1) * seconds / steps, len(sc.ops) - 1))
    return marks


def _regions(snap: Snapshot, costs) -> pd.DataFrame:
    """Per region (VMAs of one file, or [heap], [stack], anonymous, shmem): size, resident memory,
    what fork does with it, the PTEs a COW fork copies and their share of its cost."""
    reg = snap.regions.copy()
    r = snap._runs
    ps = snap.meta["page_size"]
    fl = r["state"].to_numpy()
    v = r.vma.to_numpy()
    n = r.npages.to_numpy()
    present = (fl & L.PRESENT) != 0
    swapped = (fl & L.SWAPPED) != 0
    pmd = (fl & L.PMD) != 0
    nv = len(reg)
    reg["ptes"] = np.bincount(v[(present | swapped) & ~pmd], weights=n[(present | swapped) & ~pmd], minlength=nv)[:nv]
    reg["pmds"] = np.bincount(v[pmd], weights=n[pmd], minlength=nv)[:nv] / L.HUGE_PAGES
    start = reg.start.to_numpy() // ps
    lo = start[v] + r.page.to_numpy()
    hi = lo + n - 1
    tabs = np.zeros(nv)
    for i in np.unique(v[(present | swapped) & ~pmd]).tolist():
        sel = (v == i) & (present | swapped) & ~pmd
        tabs[i] = L.count_in(lo[sel] >> L.PTE_SHIFT, hi[sel] >> L.PTE_SHIFT)
    reg["tables"] = tabs
    reg["fork"] = np.where(reg.on_fork != "copy", reg.on_fork, np.where(reg.copied, "copied", "refaulted"))
    label = np.where(reg.path.str.startswith("/"), reg.path.map(os.path.basename), reg.path)
    label = np.where(label == "", "anonymous " + reg.kind, label)
    reg["region"] = label
    cp = reg.copied.to_numpy()
    reg["cow_fork_ms"] = np.where(cp, (costs.fork_pte_ns * (reg.ptes + reg.pmds) + costs.fork_table_ns * reg.tables)
                                  / 1e6, 0.0)
    g = reg.groupby(["region", "kind", "fork"], as_index=False).agg(
        vmas=("vma", "size"), size_mib=("npages", "sum"), rss_mib=("rss_pages", "sum"),
        anon_mib=("anon_pages", "sum"), thp_mib=("anon_huge_kb", "sum"), ptes=("ptes", "sum"),
        cow_fork_ms=("cow_fork_ms", "sum"))
    for c in ("size_mib", "rss_mib", "anon_mib"):
        g[c] = g[c] * ps / MIB
    g["thp_mib"] = g.thp_mib / 1024
    g["ptes_copied"] = np.where(g.fork == "copied", g.ptes, 0).astype(np.int64)
    g = g.drop(columns="ptes")
    return g.sort_values(["rss_mib", "size_mib"], ascending=False).reset_index(drop=True)


# --- from a trace --------------------------------------------------------------------------------------

def _from_trace(tr: Trace, costs, policies, thp, thp_cow, knobs) -> Prediction:
    from .replay import replay

    rows, over = [], []
    notes: list[str] = []
    for policy in policies:
        rp = replay(tr, policy=policy, thp_cow=thp_cow, costs=costs, thp=thp, **knobs)
        if not notes:
            notes = list(rp.notes)
        p = rp.processes
        kids = p[p.role.isin(["child", "probe", "what-if"])]
        k = kids.iloc[0] if len(kids) else None
        if k is not None:
            ns = costs.counted_fork_ns(k, 1)
            rows.append({"policy": policy, "fork_ms": ns / 1e6, "ptes_copied": int(k.fork_ptes_copied),
                         "pmds_copied": int(k.fork_pmds_copied), "tables_copied": int(k.fork_tables_copied),
                         "tables_shared": int(k.fork_tables_shared), "pages_copied": int(k.fork_pages_copied),
                         "child": k["name"], "child_uss_mib": int(k.uss_pages) * rp.scenario.page_size / MIB})
        tl = rp.timeline
        for r in tl.itertuples(index=False):
            over.append({"policy": policy, "time_s": r.time_s, "cow_mib": r.cow_mib, "memory_mib": r.memory_mib})
    if not rows:
        notes.append("the trace holds no fork: give fork_at= (a what-if fork) for fork costs and COW memory")
    m = tr.meta
    procs = tr.processes
    root = procs[procs.pid == m["root"]]
    comm = root.comm.iloc[0] if len(root) else "?"
    name = f"pid {m['root']} ({comm})"
    title = (f"trace of {name}: {m['samples']} samples over {m['seconds']:.1f} s, {len(procs)} processes "
             f"({int(procs.probe.sum())} probes); {'PFNs read' if m['pfns'] else 'no PFNs'}")
    about = {"name": name, "title": title, "costs": costs.source,
             "over_time": "the trace's forks and first writes replayed" + (
                 f" ({', '.join(f'{k}={v}' for k, v in knobs.items())})" if knobs else "")}
    notes.append(m.get("misses", ""))
    return Prediction(about, pd.DataFrame(rows), _trace_regions(tr), pd.DataFrame(over), [n for n in notes if n])


def _trace_regions(tr: Trace) -> pd.DataFrame:
    """Per region of the trace: pages first written after the first fork, by region."""
    from .replay import _areas

    ev = tr.events
    if not len(ev):
        return pd.DataFrame()
    areas = _areas(tr.vmas)
    starts = areas.start.to_numpy() >> 12
    w = ev[(ev.event == "written") | (ev.event == "moved") | ((ev.event == "exclusive") & ev.copied.fillna(False))
           | ((ev.event == "mapped") & (ev.kind == "anon") & ev.exclusive)]
    ai = np.maximum(np.searchsorted(starts, w.page.to_numpy(), side="right") - 1, 0)
    label = np.where(areas.path.str.startswith("/"), areas.path.map(os.path.basename), areas.path)
    label = np.where(label == "", "anonymous " + areas.kind, label)
    df = pd.DataFrame({"region": label[ai], "kind": areas.kind.to_numpy()[ai], "pid": w.pid.to_numpy(),
                       "pages": w.npages.to_numpy()})
    ps = tr.meta["page_size"]
    g = df.groupby(["region", "kind"], as_index=False).pages.sum()
    g["first_writes_mib"] = g.pages * ps / MIB
    return g.drop(columns="pages").sort_values("first_writes_mib", ascending=False).reset_index(drop=True)


# --- command line -------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="cowbench predict",
        description="Predict what forking a real process costs: fork latency per policy (cow, odf, eager) from "
                    "the cost model, page-table bytes, a per-region breakdown, and memory copied on write over "
                    "time (replayed from a trace, or for an assumed write rate).",
        epilog="examples:\n  cowbench predict $(pidof redis-server) --costs host.toml --write-rate 20000 --seconds 8\n"
               "  cowbench predict bgsave.trace.parquet --write-scale 2 --plots out/\n"
               "  cowbench predict p.snap.parquet --thp on --thp-cow copy",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", metavar="PID|FILE", help="a live process, or a file from cowbench snapshot/trace --out")
    ap.add_argument("--costs", metavar="TOML", help="cost model from `cowbench calibrate --out` (default: built in)")
    ap.add_argument("--policies", default=",".join(POLICIES), help="comma-separated (default: %(default)s)")
    ap.add_argument("--write-rate", type=float, metavar="PAGES_S", help="snapshot: page writes per second after fork")
    ap.add_argument("--seconds", type=float, default=10.0, help="snapshot: how long the child lives (default: 10)")
    ap.add_argument("--pattern", choices=("uniform", "zipf"), default="uniform", help="snapshot: write pattern")
    ap.add_argument("--zipf-s", type=float, default=0.99, help="zipf exponent (default: %(default)s)")
    ap.add_argument("--thp", choices=("on", "off"), help="THP on or off for every private anonymous region")
    ap.add_argument("--thp-cow", choices=("split", "copy"), default="split", help="a write to a shared huge page")
    ap.add_argument("--write-scale", type=float, help="trace: writes this many times as fast")
    ap.add_argument("--stretch", type=float, help="trace: children live this many times as long")
    ap.add_argument("--children", type=int, help="trace: each child forked this many times")
    ap.add_argument("--fork-at", type=float, help="trace: a what-if fork at this time (s)")
    ap.add_argument("--hold", type=float, help="trace: the what-if child lives this long (s)")
    ap.add_argument("--plots", metavar="DIR", help="write PNG figures here")
    ap.add_argument("--csv", metavar="DIR", help="write the tables here as CSV")
    args = ap.parse_args(argv)
    knobs = {k: v for k, v in (("write_scale", args.write_scale), ("stretch", args.stretch),
                               ("children", args.children), ("fork_at", args.fork_at), ("hold", args.hold))
             if v is not None}
    try:
        costs = CostModel.load(args.costs) if args.costs else None
        pr = predict(args.source, costs=costs, policies=[p.strip() for p in args.policies.split(",") if p.strip()],
                     write_rate=args.write_rate, seconds=args.seconds, pattern=args.pattern, zipf_s=args.zipf_s,
                     thp=None if args.thp is None else args.thp == "on", thp_cow=args.thp_cow, **knobs)
    except (ScenarioError, FileNotFoundError) as e:
        print(f"cowbench predict: {e}", file=sys.stderr)
        return 1
    print(pr.format())
    if args.plots:
        for f in pr.plot(args.plots):
            print(f"wrote {f}")
    if args.csv:
        from ..fileio import atomic_write

        for name in ("fork", "regions", "over_time"):
            df = getattr(pr, name)
            path = os.path.join(args.csv, f"predict_{name}.csv")
            atomic_write(path, lambda p, df=df: df.to_csv(p, index=False))
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
