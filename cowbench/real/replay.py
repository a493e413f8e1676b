"""A trace replayed as a scenario: the recorded forks, first writes and exits in time order,
and what-ifs around them.

    sc = tr.scenario(write_scale=2)              # the writes twice as fast (a ReplayScenario)
    rp = tr.replay(policy="odf", thp=True)       # simulated: rp.result, rp.timeline, rp.processes

How a trace becomes a scenario:

- regions: the union of every VMA any traced process had, over the whole trace (a heap that
  grew is one region as large as it ever was; an address range two VMAs of different kinds
  held is given to the first), laid out like a snapshot's (layout.plan_pieces), file mappings
  approximated the same way (layout.file_pieces);
- the traced process's first sample is its resident set (layout.populate); processes alive
  then are forked from it at once;
- then, sample by sample: the forks that happened in that interval (a child is forked at the
  sample it was first seen, or one earlier when its parent's pages already turned shared then),
  the pages each process wrote for the first time (mapped anonymous pages, written zero or
  file pages, exclusive pages that got a new frame: COW copies, and pages moved to a new frame
  while exclusive: copied right after a fork that fell between samples; without PFNs, a page two
  processes turned exclusive together is given to the lower pid, the parent), pages read
  (zero pages, file and shmem pages), and the exits. What several processes touch in one
  interval runs concurrently (Scenario.concurrently).
- Not replayed: pages that went away (the simulator cannot drop single pages: counted in the
  notes), second writes (never seen), and the times within an interval.

Knobs (each changes the scenario, not the trace):

    write_scale  every touch after `origin` (the first fork) happens at origin + (t - origin) /
                 write_scale: 2 writes twice as fast against the same lifetimes
    stretch      children live `stretch` times as long (their own touches slowed alike): a
                 save that takes twice as long
    children     each traced child forked this many times, every copy replaying its touches
    thp          None as traced; True / False: THP on / off for every private anonymous region
    probes       "child": a probe (cowbench.real.probe_fork) is a child that only holds the pages
                 (what it was); "drop": no child at all (the writes reuse pages, nothing copied)
    fork_at, hold  a what-if fork of the traced process at fork_at seconds whose child holds the
                 pages for `hold` seconds (None: to the end): for a trace without forks
    extrapolate  where a process lives on past the end of its recorded touches (write_scale > 1,
                 stretch > 1), its first writes go on at the rate of the last quarter of its record,
                 in the regions it wrote then, on pages drawn uniformly (seeded) from those it has not
                 written yet: as many on pages the traced process held at the first fork (COW
                 copies) as the record's last quarter had, the rest on pages it did not hold (new
                 ones); uniform is an upper bound for skewed writes; the notes say how many
Policy, thp_cow, overcommit and costs are simulate()'s: replay() passes them on.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .._params import ScenarioError, check_choice
from ..scenario import Scenario
from . import layout as L
from .snapshot import ApproximationWarning, approximation_notes, check_thp

__all__ = ["ReplayScenario", "Replay", "scenario", "replay"]

CODE = {"mapped": 0, "written": 1, "exclusive": 2, "shared": 3, "unmapped": 4, "moved": 5}


class ReplayScenario(Scenario):
    """A Scenario built from a trace, with what it needs to map results back to time:
    op_time_s (the replay time of every op), members (trace pid -> scenario process),
    origin_s, pieces, notes, extrapolated_pages."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.op_time_s: list[float] = []
        self.members = pd.DataFrame()
        self.origin_s = 0.0
        self.pieces: list[L.Piece] = []
        self.notes: list[str] = []
        self.extrapolated_pages = 0
        self.first_fork_op: int | None = None          # index of the first fork op
    def _stamp(self, t: float) -> None:
        """Give every op recorded since the last stamp the time t."""
        self.op_time_s.extend([t] * (len(self.ops) - len(self.op_time_s)))


def _check_positive(func, name, v, integer=False):
    ok = isinstance(v, (int, np.integer)) if integer else isinstance(v, (int, float, np.integer, np.floating))
    if isinstance(v, bool) or not ok or not v > 0 or (not integer and not np.isfinite(v)):
        kind = "a positive integer" if integer else "a positive number"
        raise ScenarioError(f"The {name!r} parameter of {func} must be {kind}; got {v!r}")


# --- regions: the union of every VMA seen ------------------------------------------------------------

def _areas(vmas: pd.DataFrame) -> pd.DataFrame:
    """Disjoint address ranges from every VMA of every process over the trace, earliest first:
    start, end, perms (the union of the rwx bits seen), path, kind, on_fork, thp_eligible, vmflags."""
    if vmas.empty:
        raise ScenarioError("scenario: the trace holds no VMAs (no sample of the traced process)")
    v = vmas.sort_values(["first_sample", "start"])
    perms = v.groupby(["start", "end", "path", "kind", "on_fork"], sort=False).perms.agg(
        lambda ps: _union_all(list(ps)))                     # one range mprotected over time: all it allowed
    rows = v.drop_duplicates(["start", "end", "path", "kind", "on_fork"]).copy()
    rows["perms"] = [perms[(a, b, c, d, e)] for a, b, c, d, e in zip(rows.start, rows.end, rows.path, rows.kind,
                                                                    rows.on_fork)]
    taken: list[tuple[int, int]] = []            # sorted disjoint accepted ranges
    out = []
    import bisect

    for r in rows.itertuples(index=False):
        a, b = int(r.start), int(r.end)
        i = bisect.bisect_left(taken, (a, a))
        if i > 0 and taken[i - 1][1] > a:
            i -= 1
        free, x = [], a
        while i < len(taken) and taken[i][0] < b:
            s0, e0 = taken[i]
            if s0 > x:
                free.append((x, s0))
            x = max(x, e0)
            i += 1
        if x < b:
            free.append((x, b))
        for s0, e0 in free:
            bisect.insort(taken, (s0, e0))
            out.append({"start": s0, "end": e0, "perms": r.perms, "path": r.path, "kind": r.kind,
                        "on_fork": r.on_fork, "thp_eligible": int(r.thp_eligible), "vmflags": r.vmflags})
    df = pd.DataFrame(out).sort_values("start").reset_index(drop=True)
    # merge anonymous neighbours of one prot (a heap that grew, an arena that extended); file
    # mappings stay apart (a library's read-only data and its relro differ in their anon_vma)
    key = list(zip(df.kind, df.path, df.perms, df.on_fork))
    merged = []
    for i, r in enumerate(df.to_dict("records")):
        if merged and merged[-1]["end"] == r["start"] and merged[-1]["_key"] == key[i] and r["kind"] == "anon":
            m = merged[-1]
            m["end"] = r["end"]
            m["thp_eligible"] = max(m["thp_eligible"], r["thp_eligible"])
        else:
            merged.append({**r, "_key": key[i]})
    out = pd.DataFrame(merged).drop(columns="_key")
    out.insert(0, "vma", np.arange(len(out)))
    return out


def _union_all(ps: list[str]) -> str:
    out = ps[0]
    for q in ps[1:]:
        out = _union_perms(out, q)
    return out


def _union_perms(a: str, b: str) -> str:
    return "".join(x if x != "-" else y for x, y in zip(a[:3], b[:3])) + a[3]


# --- events as pages -------------------------------------------------------------------------------

def _expand(ev: pd.DataFrame) -> pd.DataFrame:
    """One row per page of the event runs given (sample, pid, page, code, kind, exclusive, copied, huge)."""
    n = ev.npages.to_numpy(np.int64)
    if len(n) == 0:
        return pd.DataFrame({c: [] for c in ("sample", "pid", "page", "code", "kind", "exclusive", "copied", "huge")})
    rep = np.repeat(np.arange(len(n)), n)
    off = np.arange(int(n.sum()), dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
    copied = ev.copied.astype("Int8").fillna(-1).to_numpy(np.int8)
    return pd.DataFrame({
        "sample": ev["sample"].to_numpy()[rep], "pid": ev.pid.to_numpy()[rep],
        "page": ev.page.to_numpy(np.int64)[rep] + off,
        "code": ev.event.map(CODE).to_numpy(np.int8)[rep], "kind": ev.kind.astype(str).to_numpy()[rep],
        "exclusive": ev.exclusive.to_numpy(bool)[rep], "copied": copied[rep], "huge": ev.huge.to_numpy(bool)[rep]})


# --- the scenario ------------------------------------------------------------------------------------

def scenario(tr, *, write_scale: float = 1.0, stretch: float = 1.0, children: int = 1, thp: bool | None = None,
             probes: str = "child", fork_at: float | None = None, hold: float | None = None,
             extrapolate: bool = True, grain: int | None = None, phys_mem=None, seed: int = 0) -> ReplayScenario:
    """The trace `tr` as a ReplayScenario (see the module docstring for the knobs)."""
    func = "Trace.scenario"
    _check_positive(func, "write_scale", write_scale)
    _check_positive(func, "stretch", stretch)
    _check_positive(func, "children", children, integer=True)
    check_thp(func, thp)
    check_choice(func, "probes", probes, ("child", "drop"))
    check_choice(func, "extrapolate", extrapolate, (True, False))
    if fork_at is not None:
        _check_positive(func, "fork_at", fork_at) if fork_at != 0 else None
    if hold is not None:
        _check_positive(func, "hold", hold)
    b = _Builder(tr, write_scale=float(write_scale), stretch=float(stretch), children=int(children), thp=thp,
                 probes=probes, fork_at=fork_at, hold=hold, extrapolate=extrapolate, grain=grain,
                 phys_mem=phys_mem, seed=int(seed))
    return b.build()


class _Builder:
    def __init__(self, tr, **kw):
        self.tr = tr
        self.__dict__.update(kw)
        self.notes: list[str] = []

    # -- preparation ------------------------------------------------------------------------------
    def build(self) -> ReplayScenario:
        tr = self.tr
        m = tr.meta
        self.ps = m["page_size"]
        self.areas = _areas(tr.vmas)
        ev = tr.events
        self.times = self._sample_times()
        procs = tr.processes
        root = int(m["root"])
        if root not in set(procs.pid):
            raise ScenarioError(f"{'Trace.scenario'}: the trace never sampled its root process {root}")
        self.procs = procs.set_index("pid")
        self.root = root
        keep = self._replayed()
        self.keep = keep
        # areas: which file mappings got anonymous pages (anon_vma), what is resident
        pages = _expand(ev[ev.event.isin(["mapped", "written", "exclusive", "moved"]) & ev.pid.isin(list(keep))])
        self.unmapped = int(ev.npages[ev.event == "unmapped"].sum())
        starts = self.areas.start.to_numpy() >> 12
        ends = self.areas.end.to_numpy() >> 12
        ai = np.maximum(np.searchsorted(starts, pages.page.to_numpy(), side="right") - 1, 0)
        inside = (pages.page.to_numpy() >= starts[ai]) & (pages.page.to_numpy() < ends[ai])
        pages = pages[inside].assign(area=ai[inside])
        anon_pages = pages[(pages.kind == "anon") | (pages.code == 1)]
        self.areas["anon_vma"] = np.bincount(anon_pages.area, minlength=len(self.areas))[:len(self.areas)] > 0
        self.areas["resident"] = np.bincount(pages.area, minlength=len(self.areas))[:len(self.areas)]
        self.pieces = L.plan_pieces(self.areas, {}, thp=self.thp)
        piece, rpage = L.locate(self.pieces, pages.area.to_numpy(), pages.page.to_numpy() - starts[pages.area])
        pages = pages.assign(piece=piece, rpage=rpage)
        self.pages = pages[pages.piece >= 0]
        phys = self.phys_mem
        if phys is None:
            peak = int(tr.samples.rss_pages.max()) if len(tr.samples) else 0
            phys = max(m.get("mem_total_kb", 0) * 1024, 8 * peak * self.ps, 1 << 30)
        self.sc = ReplayScenario(phys_mem=phys, page_size=self.ps)
        self.sc.pieces = self.pieces
        return self._ops()

    def _sample_times(self) -> np.ndarray:
        s = pd.concat([self.tr.samples[["sample", "time_s"]], self.tr.lifecycle[["sample", "time_s"]]])
        s = s.groupby("sample").time_s.first()
        n = int(s.index.max()) + 1 if len(s) else 1
        t = np.full(n, np.nan)
        t[s.index.to_numpy()] = s.to_numpy()
        return pd.Series(t).interpolate(limit_direction="both").to_numpy()

    def _replayed(self) -> dict:
        """trace pid -> role (root, child, probe) for the processes the scenario holds."""
        keep = {self.root: "root"}
        for pid, r in self.procs.sort_values(["first_sample"]).iterrows():
            if pid == self.root or r.ppid not in keep or keep[r.ppid] == "probe":
                continue
            if r.probe:
                if self.probes == "child":
                    keep[pid] = "probe"
            else:
                keep[pid] = "child"
        dropped = [p for p in self.procs.index if p not in keep and p != self.root]
        if dropped:
            self.notes.append(f"{len(dropped)} processes not replayed (probes dropped, or not descended from "
                              f"the traced process through replayed ones): pids {dropped[:8]}")
        return keep

    # -- timing -------------------------------------------------------------------------------------
    def _births(self) -> dict:
        """trace pid -> (fork sample, exit sample or None) for the replayed non-root processes."""
        life = self.tr.lifecycle
        ev = self.tr.events
        out = {}
        for pid, role in self.keep.items():
            if pid == self.root:
                continue
            g = life[life.pid == pid]
            born = int(g["sample"].iloc[0])
            ppid = int(self.procs.loc[pid, "ppid"])
            sh = ev[(ev.pid == ppid) & (ev.event == "shared") & (ev["sample"] == born - 1)]
            if len(sh) and born - 1 > self._first(ppid):
                born -= 1                              # the parent's pages turned shared a sample early
            ex = g[g.event == "exit"]
            out[pid] = (born, int(ex["sample"].iloc[0]) if len(ex) else None)
        return out

    def _first(self, pid: int) -> int:
        return int(self.procs.loc[pid, "first_sample"])

    def _time(self, pid: int, t: float, origin: float, born: float | None) -> float:
        """The replay time of a touch of process pid recorded at t."""
        if born is not None and self.stretch != 1.0:
            t = born + self.stretch * (t - born)
        if t > origin:
            t = origin + (t - origin) / self.write_scale
        return t

    # -- building ------------------------------------------------------------------------------------
    def _ops(self) -> ReplayScenario:
        sc, pieces, times = self.sc, self.pieces, self.times
        births = self._births()
        t_born = {pid: float(times[b]) for pid, (b, _) in births.items()}
        origin = min(t_born.values()) if t_born else (self.fork_at if self.fork_at is not None else float(times[0]))
        if self.fork_at is not None and not t_born:
            origin = float(self.fork_at)
        sc.origin_s = origin
        root_first = self._first(self.root)
        pages = self.pages
        # the touches: (replay time, pid, piece, rpage, write?)
        touch = self._touches(pages, births, root_first)
        comm = str(self.procs.loc[self.root, "comm"])
        rootp = sc.spawn(comm)
        regs = L.map_pieces(rootp, pieces)
        # the initial resident set
        init = pages[(pages.pid == self.root) & (pages["sample"] == root_first) & (pages.code == 0)]
        fl = (L.PRESENT | np.where(init.kind == "zero", L.ZERO, 0) | np.where(init.kind.isin(["file", "shmem"]),
              L.FILE, 0) | np.where(init.exclusive, L.EXCLUSIVE, 0) | np.where(init.huge, L.PMD, 0)).astype(np.uint16)
        runs = pd.DataFrame({"piece": init.piece.to_numpy(), "page": init.rpage.to_numpy(),
                             "npages": np.ones(len(init), np.int64), "state": fl})
        notes = L.populate(rootp, pieces, regs, runs, huge_first=self.thp is True)
        sc._stamp(float(times[root_first]))
        t0_ops = len(sc.ops)
        # forks, touches and exits on the replay timeline
        grid = self._grid(births, origin)
        actors = {self.root: (rootp, regs, set(i for i, r in enumerate(regs) if r is not None))}
        members = [{"trace_pid": self.root, "role": "root", "name": rootp.name, "pid": rootp.pid, "copy": 0}]
        forks, exits = {}, {}
        for pid, (b, e) in births.items():
            tb = float(times[b])
            forks.setdefault(tb, []).append(pid)
            if e is not None:
                te = tb + self.stretch * (float(times[e]) - tb)
                exits.setdefault(te, []).append(pid)
        if self.fork_at is not None:
            forks.setdefault(float(self.fork_at), []).append("what-if")
            if self.hold is not None:
                exits.setdefault(float(self.fork_at) + self.hold, []).append("what-if")
        if len(touch):
            touch["w"] = np.searchsorted(grid, touch.t.to_numpy(), side="left").clip(0, len(grid) - 1)
        events_at = sorted(set(forks) | set(exits) | set(grid[np.unique(touch.w)] if len(touch) else []))
        wgrid = {float(g): i for i, g in enumerate(grid)}
        by_w = {w: g for w, g in touch.groupby("w")} if len(touch) else {}
        ex_state = self._extrapolation_plan(touch, births, origin) if self.extrapolate else {}
        rng = np.random.default_rng(self.seed)
        done_w = set()
        for t in sorted(set(events_at) | set(float(g) for g in grid if self._extrap_active(ex_state, float(g)))):
            w = wgrid.get(t)
            if w is None:
                w = int(np.searchsorted(grid, t, side="left").clip(0, len(grid) - 1))
            g = by_w.get(w) if w not in done_w and float(grid[w]) == t else None
            if g is not None:
                done_w.add(w)
            # touches the parents made before the forks of this window (pages shared with the newborn)
            if g is not None and t in forks:
                pre = g.pre.to_numpy()
                self._touch_block(actors, g[pre], t)
                g = g[~pre]
            for pid in forks.get(t, []):
                if sc.first_fork_op is None:
                    sc.first_fork_op = len(sc.ops)
                if pid == "what-if":
                    kid = rootp.fork("what-if")
                    actors["what-if"] = (kid, regs, self._inherit(actors[self.root][2], pieces))
                    members.append({"trace_pid": -1, "role": "what-if", "name": kid.name, "pid": kid.pid, "copy": 0})
                    continue
                ppid = int(self.procs.loc[pid, "ppid"])
                if ppid not in actors:
                    continue
                par, pregs, pmapped = actors[ppid][:3]
                role = self.keep[pid]
                n = self.children if role == "child" else 1
                for i in range(n):
                    name = str(self.procs.loc[pid, "comm"]) + (f"#{i}" if n > 1 else "")
                    kid = par.fork(name if role != "probe" else "probe")
                    key = pid if i == 0 else (pid, i)
                    actors[key] = (kid, pregs, self._inherit(pmapped, pieces))
                    members.append({"trace_pid": pid, "role": role, "name": kid.name, "pid": kid.pid, "copy": i})
            if g is not None and len(g):
                self._touch_block(actors, g, t)
            if ex_state:
                self._extrapolate(ex_state, actors, t, rng, pieces)
            for pid in exits.get(t, []):
                for key in [k for k in actors if k == pid or (isinstance(k, tuple) and k[0] == pid)]:
                    actors[key][0].exit()
                    actors.pop(key)
            sc._stamp(t)
        sc.members = pd.DataFrame(members)
        nf = notes.get("file_as_anon", 0) + notes.get("file_as_shared", 0)
        self.notes = approximation_notes(notes) + self.notes
        if self.unmapped:
            self.notes.append(f"{self.unmapped} pages went away during the trace (munmap, MADV_DONTNEED, reclaim): "
                              "not replayed (the simulator does not drop single pages)")
        if self.touch_dropped:
            self.notes.append(f"{self.touch_dropped} touched pages lie in regions the process does not map in the "
                              "scenario (dontfork in its parent, or mapped anew after fork): not replayed")
        if sc.extrapolated_pages:
            self.notes.append(f"{sc.extrapolated_pages} first writes extrapolated past the end of the record "
                              "(uniformly over the pages not yet written: an upper bound for skewed writes)")
        sc.notes = self.notes
        for msg in sc.notes:
            warnings.warn(msg, ApproximationWarning, stacklevel=4)
        del nf, t0_ops
        return sc

    def _inherit(self, mapped: set, pieces) -> set:
        return {i for i in mapped if pieces[i].on_fork != "dontfork"}

    def _grid(self, births, origin) -> np.ndarray:
        """Window ends on the replay timeline: the trace's sample times, extended at the sampling
        interval to cover stretched lifetimes and what-if holds."""
        t = np.asarray(self.times, dtype=float)
        end = float(t[-1])
        last = end
        for pid, (b, e) in births.items():
            if e is not None:
                tb = float(t[b])
                last = max(last, tb + self.stretch * (float(t[e]) - tb))
            elif self.stretch != 1.0:
                tb = float(t[b])
                last = max(last, tb + self.stretch * (end - tb))
        if self.fork_at is not None and self.hold is not None:
            last = max(last, self.fork_at + self.hold)
        step = float(self.tr.meta["interval"])
        if last > end + 1e-9:
            t = np.r_[t, np.arange(end + step, last + step, step)]
        return t

    def _touches(self, pages: pd.DataFrame, births: dict, root_first: int) -> pd.DataFrame:
        """Every replayed touch: t (replay time), pid, piece, rpage, write, pre (made before a fork of
        this window)."""
        times = self.times
        p = pages[~((pages.pid == self.root) & (pages["sample"] == root_first) & (pages.code == 0))]
        first_of = {pid: b for pid, (b, _) in births.items()}
        first_of[self.root] = root_first
        fs = p.pid.map(first_of).to_numpy()
        newborn = p["sample"].to_numpy() <= fs
        code, kind, excl, copied = p.code.to_numpy(), p.kind.to_numpy(), p.exclusive.to_numpy(), p.copied.to_numpy()
        write = (((code == 0) & (kind == "anon") & (excl | ~newborn)) | (code == 1) | ((code == 2) & (copied == 1))
                 | (code == 5))
        read = (code == 0) & np.isin(kind, ["zero", "file", "shmem"]) & ~newborn
        # exclusive, frame unknown (no PFNs): a newborn's own; else the lowest pid's of that page and sample
        na = (code == 2) & (copied == -1)
        if na.any():
            sub = p[na]
            first = ~sub.sort_values("pid").duplicated(["sample", "page"], keep="first")
            first = first.reindex(sub.index)
            write[na] = first.to_numpy() | newborn[na]
        sel = write | read
        p = p[sel]
        write = write[sel]
        smp, pids = p["sample"].to_numpy(), p.pid.to_numpy()
        t = np.asarray(times, dtype=float)[smp]
        if self.stretch != 1.0 and births:                   # children run slower: their touches later
            bt = pd.Series({pid: float(times[b]) for pid, (b, _) in births.items()}).reindex(pids).to_numpy()
            has = ~np.isnan(bt)
            t = np.where(has, bt + self.stretch * (t - bt), t)
        o = self.sc.origin_s
        t = np.where(t > o, o + (t - o) / self.write_scale, t)
        big = np.int64(1) << 32
        keys = np.array([int(self.procs.loc[pid, "ppid"]) * big + b for pid, (b, _) in births.items()], dtype=np.int64)
        pre = np.isin(pids.astype(np.int64) * big + smp, keys) & ~p.exclusive.to_numpy() & (p.code.to_numpy() == 0)
        self.touch_dropped = 0
        return pd.DataFrame({"t": t, "pid": p.pid.to_numpy(), "piece": p.piece.to_numpy(), "rpage": p.rpage.to_numpy(),
                             "write": write, "pre": pre})

    def _touch_block(self, actors: dict, g: pd.DataFrame, t: float) -> None:
        """The touches of one window: per process and region, reads then writes; several processes
        at once run concurrently."""
        if len(g) == 0:
            return
        ops = []
        for pid, gp in g.groupby("pid", sort=True):
            keys = [k for k in actors if k == pid or (isinstance(k, tuple) and k[0] == pid)]
            for key in keys:
                proc, regs, mapped = actors[key]
                for (piece, w), gg in gp.groupby(["piece", "write"], sort=True):
                    if piece not in mapped or regs[piece] is None:
                        self.touch_dropped += len(gg)
                        continue
                    pc = self.pieces[piece]
                    if pc.how == "pfnmap" or (w and "w" not in pc.prot):
                        continue                     # a frame moved under a read-only page: no write to replay
                    if not w and pc.prot == "none":
                        continue
                    ops.append((proc, regs[piece], np.unique(gg.rpage.to_numpy()), bool(w), key, piece))
        if not ops:
            return
        if len({id(o[0]) for o in ops}) > 1:
            total = sum(len(o[2]) for o in ops)
            grain = self.grain or max(1, min(1024, total // 100))
            with self.sc.concurrently(grain=grain, seed=self.seed):
                for proc, r, pg, w, *_ in ops:
                    (proc.write if w else proc.read)(r, pages=pg)
        else:
            for proc, r, pg, w, *_ in ops:
                (proc.write if w else proc.read)(r, pages=pg)
        for proc, r, pg, w, key, piece in ops:
            if w:
                self._mark_written(key, piece, pg)

    # -- extrapolation --------------------------------------------------------------------------------
    def _mark_written(self, key, piece, pg) -> None:
        st = getattr(self, "_written", None)
        if st is None:
            st = self._written = {}
        arr = st.get((key, piece))
        if arr is None:
            arr = st[(key, piece)] = np.zeros(self.pieces[piece].size_pages, dtype=bool)
        arr[pg] = True

    def _extrapolation_plan(self, touch: pd.DataFrame, births: dict, origin: float) -> dict:
        """Per process that lives on past its recorded touches: from when (replay time), at what rate
        (pages/s) and over which regions its first writes continue, and which share of them fell
        on pages the traced process held at the first fork (COW copies) rather than on new ones."""
        if not len(touch):
            return {}
        t_end = float(self.times[-1])
        plan = {}
        life = {self.root: (float(self.times[0]), None)}
        for pid, (b, e) in births.items():
            tb = float(self.times[b])
            life[pid] = (tb, None if e is None else tb + self.stretch * (float(self.times[e]) - tb))
        holders_end = max([v[1] if v[1] is not None else np.inf for k, v in life.items() if k != self.root]
                          + ([self.fork_at + self.hold if self.hold is not None else np.inf]
                             if self.fork_at is not None else []), default=None)
        if holders_end is None:
            return {}
        held = self._held_at_origin(births, origin)
        for pid, (tb, te) in life.items():
            horizon = self._time(pid, t_end, origin, tb if pid != self.root else None)
            stop = min(te if te is not None else np.inf, holders_end)
            if not np.isfinite(stop):
                stop = float(self._grid(births, origin)[-1])
            if stop <= horizon + 1e-9:
                continue
            w = touch[(touch.pid == pid) & touch.write & (touch.t > origin)]
            if not len(w):
                continue
            lo = origin + 0.75 * (horizon - origin)
            tail = w[w.t >= lo]
            span = max(horizon - lo, 1e-9)
            rate = len(tail) / span
            if rate <= 0:
                continue
            key = tail.piece.to_numpy().astype(np.int64) << 40 | tail.rpage.to_numpy().astype(np.int64)
            cow = float(np.isin(key, held).mean()) if len(held) else 0.0
            plan[pid] = {"from": horizon, "to": stop, "rate": rate, "pieces": np.unique(tail.piece.to_numpy()),
                         "last": horizon, "cow": cow, "held": held}
        return plan

    def _held_at_origin(self, births: dict, origin: float) -> np.ndarray:
        """(piece << 40 | page) of every page the traced process held at the first fork, sorted."""
        pg = self.pages
        r = pg[(pg.pid == self.root) & (pg.code.isin([0, 1])) & (pg.kind != "zero")]
        t = np.asarray(self.times, dtype=float)[r["sample"].to_numpy()]
        r = r[t <= origin + 1e-9]
        return np.unique(r.piece.to_numpy().astype(np.int64) << 40 | r.rpage.to_numpy().astype(np.int64))

    def _held_mask(self, held: np.ndarray, piece: int) -> np.ndarray:
        """Which pages of a piece the traced process held at the first fork (cached per piece)."""
        cache = self.__dict__.setdefault("_held_masks", {})
        m = cache.get(piece)
        if m is None:
            m = np.zeros(self.pieces[piece].size_pages, dtype=bool)
            lo, hi = np.searchsorted(held, [np.int64(piece) << 40, (np.int64(piece) + 1) << 40])
            m[(held[lo:hi] & ((np.int64(1) << 40) - 1))] = True
            cache[piece] = m
        return m.copy()

    def _extrap_active(self, plan: dict, t: float) -> bool:
        return any(p["from"] < t <= p["to"] + 1e-9 for p in plan.values())

    def _extrapolate(self, plan: dict, actors: dict, t: float, rng, pieces) -> None:
        """The extrapolated first writes due by replay time t: a share `cow` on held pages not yet
        written, the rest on pages the traced process did not hold (new allocations)."""
        written = getattr(self, "_written", {})
        ops = []
        for pid, p in plan.items():
            if not (p["from"] < t <= p["to"] + 1e-9) or pid not in actors:
                continue
            n = int(round(p["rate"] * (t - p["last"])))
            p["last"] = t
            if n <= 0:
                continue
            proc, regs, mapped = actors[pid]
            held, picks = p["held"], []
            for want_held, count in ((True, int(round(n * p["cow"]))), (False, n - int(round(n * p["cow"])))):
                if count <= 0:
                    continue
                cand_p, cand_pg = [], []
                for pc in p["pieces"].tolist():
                    if pc not in mapped or regs[pc] is None:
                        continue
                    hm = self._held_mask(held, pc)
                    done = written.get((pid, pc))
                    ok = hm if want_held else ~hm
                    if done is not None:
                        ok = ok & ~done
                    ok[: pieces[pc].pad] = False
                    free = np.flatnonzero(ok)
                    cand_p.append(np.full(len(free), pc))
                    cand_pg.append(free)
                if not cand_p:
                    continue
                cp, cg = np.concatenate(cand_p), np.concatenate(cand_pg)
                if len(cg):
                    pick = rng.choice(len(cg), size=min(count, len(cg)), replace=False)
                    picks.append((cp[pick], cg[pick]))
            for cp, cg in picks:
                for pc in np.unique(cp).tolist():
                    ops.append((proc, regs[pc], np.sort(cg[cp == pc]), pid, pc))
                self.sc.extrapolated_pages += len(cg)
        if not ops:
            return
        ctx = self.sc.concurrently(grain=max(1, min(1024, sum(len(o[2]) for o in ops) // 100)), seed=self.seed) \
            if len({id(o[0]) for o in ops}) > 1 else None
        if ctx is not None:
            with ctx:
                for proc, r, pg, *_ in ops:
                    proc.write(r, pages=pg)
        else:
            for proc, r, pg, *_ in ops:
                proc.write(r, pages=pg)
        for proc, r, pg, pid, pc in ops:
            self._mark_written(pid, pc, pg)


# --- simulated ---------------------------------------------------------------------------------------

class Replay:
    """A simulated replay: result (the cb Result), timeline (per replay time: totals and COW
    memory), processes (res.processes with the trace pid and role), notes."""

    def __init__(self, sc: ReplayScenario, res, knobs: dict):
        self.scenario = sc
        self.result = res
        self.knobs = knobs
        self.notes = sc.notes

    @property
    def processes(self) -> pd.DataFrame:
        p = self.result.processes
        m = self.scenario.members[["pid", "trace_pid", "role", "copy"]]
        return p.merge(m, on="pid", how="left")

    @property
    def timeline(self) -> pd.DataFrame:
        """One row per replay time: time_s, the run's totals at the end of that time's ops, and
        cow_mib: memory copied on write since the first fork (cow_copies, huge copies as 512)."""
        tl = self.result.timeline
        t = np.asarray(self.scenario.op_time_s, dtype=float)
        tl = tl.assign(time_s=t[: len(tl)])
        last = tl.groupby("time_s", sort=True).tail(1)
        f = self.scenario.first_fork_op
        before = tl.iloc[:f] if f is not None else tl
        base = int(before.cow_copies.iloc[-1] + 512 * before.thp_copies.iloc[-1]) if len(before) else 0
        mib = self.scenario.page_size / 2**20
        out = last[["time_s", "frames_used", "minor_faults", "zero_fills", "cow_copies", "cow_reuses", "thp_copies",
                    "thp_splits", "processes_running", "est_time_ns"]].reset_index(drop=True)
        out["cow_mib"] = ((out.cow_copies + 512 * out.thp_copies - base).clip(lower=0)) * mib
        out["memory_mib"] = out.frames_used * mib
        return out

    def cow_at_exit(self) -> pd.DataFrame:
        """Per child: its USS when it exited (or at the end): what Redis reports as rdb_last_cow_size
        (the child's Private_Dirty), in pages and MiB."""
        p = self.processes
        k = p[p.role.isin(["child", "probe", "what-if"])]
        return k[["name", "trace_pid", "role", "state", "uss_pages", "rss_pages", "fork_ns"]].assign(
            uss_mib=k.uss_pages * self.scenario.page_size / 2**20)


def replay(tr, *, policy: str = "cow", thp_cow: str = "split", overcommit: int = 0, costs=None, **knobs) -> Replay:
    """Simulate the trace's replay (scenario(tr, **knobs)) under a policy; a Replay."""
    from ..simulator import simulate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ApproximationWarning)
        sc = scenario(tr, **knobs)
    res = simulate(sc, policy=policy, thp_cow=thp_cow, overcommit=overcommit, costs=costs)
    return Replay(sc, res, dict(knobs, policy=policy, thp_cow=thp_cow, overcommit=overcommit))
