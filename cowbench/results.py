"""What a run produced, as tidy pandas tables, plus the checks tests lean on.

Columns are the registry's (cowbench/columns.py), read from the engine's
counters by name; times come from the run's CostModel. Counts are in pages;
values are as they stand at the end of the run, or at a process's exit or death.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd

from . import columns
from ._engine import abi
from ._engine.check import check_machine
from ._engine.machine import machine_ref
from ._engine.task_mmu import PM_DIRTY, PM_EXCLUSIVE, PM_FILE, PM_HUGE, PM_WRITE, mm_pagemap, mm_tags
from ._params import ScenarioError, safe_repr
from .costs import CostModel
from .fileio import atomic_write
from .scenario import Process, Region

__all__ = ["Result"]

# A vfork parent still waiting for its child is alive (in D state): "running".
STATE_NAMES = {abi.P_UNBORN: "fork_failed", abi.P_RUNNING: "running", abi.P_SUSPENDED: "running",
               abi.P_EXITED: "exited", abi.P_KILLED: "killed", abi.P_FORK_FAILED: "fork_failed"}
REASON_NAMES = {abi.R_NONE: "", abi.R_SIGSEGV: "SIGSEGV", abi.R_OOM: "OOM"}


def _counter_columns() -> dict[str, int]:
    """Result column -> engine counter index, by the counter's name; checks
    that every counter is read by exactly one column and the events come in
    counter order (the run totals and the timeline are laid out so)."""
    read = {c.name: getattr(abi, c.source) for c in columns.EVENTS + columns.MEMORY if c.source.startswith("C_")}
    counters = sorted(v for k, v in vars(abi).items() if k.startswith("C_"))
    if sorted(read.values()) != counters or counters != list(range(abi.N_CTR)):
        raise ImportError("cowbench.columns and the engine's counters (abi.C_*) disagree")
    if [read[n] for n in columns.EVENT_NAMES] != list(range(abi.N_TOTALS)):
        raise ImportError("cowbench.columns.EVENTS must list the event counters in abi.C_* order")
    timeline = [getattr(abi, c.source) for c in columns.TIMELINE_TOTALS]
    if timeline != list(range(abi.N_TOTALS, abi.N_TL)):
        raise ImportError("cowbench.columns.TIMELINE_TOTALS must follow the engine's T_* order")
    return read


COUNTER_OF = _counter_columns()


class Result:
    """The outcome of simulate(): `processes`, `summary` and `timeline`."""

    def __init__(self, scenario, program, machine, out: dict, timeline: np.ndarray, policy: str,
                 costs: CostModel, wall_s: float, options: dict):
        self.scenario = scenario
        self._options = options             # simulate's arguments, to replay a prefix of the run
        self.policy = policy
        self.costs = costs
        self.wall_seconds = wall_s          # not part of summary: it is the one non-reproducible number
        self._prog = program
        self._m = machine
        self._out = out
        self._tl = timeline

    # -- tables ----------------------------------------------------------------
    @property
    def processes(self) -> pd.DataFrame:
        """One row per process, in pid order."""
        sc, o = self.scenario, self._out
        pids = np.arange(1, len(sc.processes) + 1)
        df = pd.DataFrame({
            "pid": pids.astype(np.int64),
            "name": [p.name for p in sc.processes],
            "parent": np.array([p.parent.pid if p.parent else 0 for p in sc.processes], dtype=np.int64),
            "state": [STATE_NAMES[s] for s in o["proc_state"][1:]],
            "reason": [REASON_NAMES[r] for r in o["proc_reason"][1:]],
        })
        ctr = o["ctr"][1:]
        for name, c in COUNTER_OF.items():
            df[name] = ctr[:, c]
        df["pss_pages"] = o["proc_pss"][1:]
        df["shared_pages"] = df["rss_pages"] - df["uss_pages"]
        born = self._born()[1:]
        df["open_fds"] = np.where(born, [p.open_fds for p in sc.processes], 0).astype(np.int64)
        df["fork_fds_copied"] = np.where(born, [p.fork_fds for p in sc.processes], 0).astype(np.int64)
        forked = (df.parent != 0).to_numpy()
        df["fork_ns"] = np.where(forked, self.costs.counted_fork_ns(df, 1), np.nan)
        df["est_time_ns"] = self.costs.counted_faults_ns(df).astype(np.float64)
        df["exit_ns"] = self.costs.counted_exit_ns(df).astype(np.float64)
        return df[list(columns.PROCESS_COLUMNS)]

    @property
    def summary(self) -> pd.Series:
        """Totals of the run."""
        o, sc = self._out, self.scenario
        states = pd.Series([STATE_NAMES[s] for s in o["proc_state"][1:]], dtype=object)
        events = dict(zip(columns.EVENT_NAMES, (int(v) for v in o["totals"])))
        events["fork_fds_copied"] = int(self._fds_copied_per_op().sum())
        forks = int(self._tl[-1, abi.T_FORKS]) if len(self._tl) else 0
        return pd.Series({
            "policy": self.policy,
            "page_size": sc.page_size,
            "phys_frames": sc.frames,
            "processes": len(sc.processes),
            "running": int((states == "running").sum()),
            "exited": int((states == "exited").sum()),
            "killed": int((states == "killed").sum()),
            "fork_failed": int((states == "fork_failed").sum()),
            "frames_used": o["frames_used"],
            "pte_frames": o["pte_frames"],
            "peak_frames": o["peak_frames"],
            "forks": forks,
            **events,
            "fork_ns": float(self.costs.counted_fork_ns(events, forks)),
            "est_time_ns": float(self.costs.counted_faults_ns(events)),
            "exit_ns": float(self.costs.counted_exit_ns(events)),
        }, name=self.policy)

    @property
    def timeline(self) -> pd.DataFrame:
        """Run totals sampled after every op: one row per op, in order, with the
        estimated time (forks, faults and exits) spent up to the end of that op.
        A concurrently() block is one op, "concurrently", with pid -1."""
        ops = self._prog.ops
        df = self._totals(self._tl, np.cumsum(self._fds_copied_per_op()))
        df.insert(0, "op", [abi.OP_NAMES[c] for c in ops[:, 0]])
        df.insert(0, "pid", ops[:, 1])
        df.insert(0, "step", np.arange(len(ops), dtype=np.int64))
        return df

    @property
    def phase_timeline(self) -> pd.DataFrame:
        """Run totals inside each concurrently() block: after `samples` of its pieces
        (evenly spaced, the last included; see Scenario.concurrently). step is the
        block's row in the timeline, piece the piece's place in the run order (from
        0), pieces the block's count of them: (piece + 1) / pieces is how far
        through the block the totals were taken."""
        steps = np.flatnonzero(self._prog.ops[:, 0] == abi.PHASE)
        fds = np.cumsum(self._fds_copied_per_op())
        parts = []
        for step, kept in zip(steps.tolist(), self._out["phase_tl"]):
            phase = self.scenario.ops[step].pages
            df = self._totals(kept, np.full(len(kept), fds[step], dtype=np.int64))
            df.insert(0, "pieces", np.int64(phase.npieces().sum()))
            df.insert(0, "piece", phase.sampled())
            df.insert(0, "step", np.int64(step))
            parts.append(df)
        if parts:
            return pd.concat(parts, ignore_index=True)
        empty = self._totals(np.zeros((0, self._tl.shape[1]), dtype=np.int64), np.zeros(0, dtype=np.int64))
        for name in ("pieces", "piece", "step"):
            empty.insert(0, name, np.zeros(0, dtype=np.int64))
        return empty

    def _totals(self, tl: np.ndarray, fds_copied: np.ndarray) -> pd.DataFrame:
        """Timeline rows as columns, with the estimated time so far."""
        df = pd.DataFrame(tl, columns=list(columns.TIMELINE_NAMES))
        df.insert(len(columns.EVENT_NAMES), "fork_fds_copied", fds_copied)
        df["est_time_ns"] = (self.costs.counted_fork_ns(df, df.forks) + self.costs.counted_faults_ns(df)
                             + self.costs.counted_exit_ns(df))
        return df

    @property
    def files(self) -> pd.DataFrame:
        """One row per (process, descriptor): each process's table at the end of the
        run, or as it stood at its exit (a killed process's as last recorded; one whose
        fork failed has none). Offsets are those the recorded reads, writes and seeks left."""
        born = self._born()
        rows = []
        for p in self.scenario.processes:
            if born[p.pid]:
                table = p.exit_files if p.exit_files is not None else p._fds.rows()
                rows += [{"pid": p.pid, "name": p.name, **r} for r in table]
        df = pd.DataFrame(rows, columns=list(columns.FILES_COLUMNS))
        return df.astype({"pid": np.int64, "fd": np.int64, "description": np.int64, "offset": np.int64,
                          "cloexec": bool})

    def _born(self) -> np.ndarray:
        """By pid (0 unused): did the process come to exist (its fork did not fail)?"""
        st = self._out["proc_state"]
        return (st != abi.P_UNBORN) & (st != abi.P_FORK_FAILED)

    def _fds_copied_per_op(self) -> np.ndarray:
        """Descriptors each op's fork or vfork copied (0 for other ops and failed forks)."""
        ops, born = self._prog.ops, self._born()
        out = np.zeros(len(ops), dtype=np.int64)
        forks = np.flatnonzero((ops[:, 0] == abi.FORK) | (ops[:, 0] == abi.VFORK))
        procs = self.scenario.processes
        for i in forks:
            child = int(ops[i, 3])
            out[i] = procs[child - 1].fork_fds if born[child] else 0
        return out

    def save(self, directory, stem: str = "run") -> list[Path]:
        """Write processes and timeline (and phase_timeline, if the scenario has a
        concurrently() block) as Parquet and summary as CSV, atomically."""
        d = Path(directory)
        paths = [
            atomic_write(d / f"{stem}_processes.parquet", lambda p: self.processes.to_parquet(p, index=False)),
            atomic_write(d / f"{stem}_timeline.parquet", lambda p: self.timeline.to_parquet(p, index=False)),
            atomic_write(d / f"{stem}_summary.csv", lambda p: self.summary.to_frame().T.to_csv(p, index=False)),
        ]
        if self._out["phase_tl"]:
            paths.append(atomic_write(d / f"{stem}_phase_timeline.parquet",
                                      lambda p: self.phase_timeline.to_parquet(p, index=False)))
        return paths

    def __repr__(self) -> str:
        s = self.summary
        return (f"<Result policy={self.policy} processes={s.processes} faults={s.minor_faults} "
                f"copies={s.cow_copies} reuses={s.cow_reuses} frames_used={s.frames_used}>")

    # -- the final machine (keep_state=True) ----------------------------------------
    def _machine(self, op: str):
        if self._m is None:
            raise ScenarioError(f"{op}: run simulate(..., keep_state=True) to keep the final machine")
        return self._m

    def _pid(self, op: str, proc) -> int:
        if isinstance(proc, Process):
            return proc.pid
        if isinstance(proc, str):
            return self.scenario.process(proc).pid
        if isinstance(proc, (int, np.integer)) and 1 <= proc <= len(self.scenario.processes):
            return int(proc)
        raise ScenarioError(f"{op}: unknown process {safe_repr(proc)}")

    def memory(self, proc, region) -> np.ndarray:
        """Value tag each page of `region` reads in `proc`'s address space at the
        end of the run (0: never written, or not mapped)."""
        m = self._machine("memory")
        pid = self._pid("memory", proc)
        r = region.index if isinstance(region, Region) else int(region)
        if not 0 <= r < len(self.scenario.regions):
            raise ScenarioError(f"memory: unknown region {safe_repr(region)}")
        out = np.zeros(int(m.reg_npages[r]), dtype=np.int64)
        mm = m.proc_mm[pid]
        if mm < 0 or m.mm_row[mm] < 0 or not (m.vma[mm, r] & abi.VM_MAPPED):
            return out
        mm_tags(machine_ref(m), mm, r, out)
        return self._prog.tag_values[out]

    def pagemap(self, proc) -> pd.DataFrame:
        """One row per present page of `proc`'s address space at the end of the
        run, as /proc/PID/pagemap shows it (columns.PAGEMAP): its region and
        page, the frame (simulated PFN) it maps, and whether it is mapped once,
        a file's or shmem page, huge, dirty, writable. An
        exited process shows its pages as they were just before its exit (the
        run is replayed up to it: the same scenario and options give the same
        frames); a killed one, or one whose fork failed, has none to show."""
        m = self._machine("pagemap")
        pid = self._pid("pagemap", proc)
        state = STATE_NAMES[int(m.proc_state[pid])]
        if state == "exited":
            return self._before_exit(pid).pagemap(pid)
        if state != "running":
            raise ScenarioError(f"pagemap: process {safe_repr(self.scenario.processes[pid - 1].name)} is {state} at "
                                "the end of the run: it has no address space to show")
        mm = int(m.proc_mm[pid])
        parts = []
        for region in self.scenario.regions:
            r = region.index
            if not m.vma[mm, r] & abi.VM_MAPPED:
                continue
            frames = np.zeros(int(m.reg_npages[r]), dtype=np.int64)
            flags = np.zeros(int(m.reg_npages[r]), dtype=np.int64)
            mm_pagemap(machine_ref(m), mm, r, frames, flags)
            page = np.flatnonzero(flags)
            fl, fr = flags[page], frames[page]
            parts.append(pd.DataFrame({
                "region": region.name, "page": page,
                "frame": pd.arrays.IntegerArray(np.maximum(fr, 0), fr < 0),        # <NA>: inline
                **{name: (fl & bit) != 0 for name, bit in (
                    ("exclusive", PM_EXCLUSIVE), ("file_backed", PM_FILE), ("huge", PM_HUGE), ("dirty", PM_DIRTY),
                    ("writable", PM_WRITE))}}))
        cols = list(columns.PAGEMAP_COLUMNS)
        return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)

    def _before_exit(self, pid: int) -> "Result":
        """This run replayed up to pid's exit, its final machine kept."""
        from .simulator import simulate

        sc = self.scenario
        i = next(i for i, op in enumerate(sc.ops) if op.code == abi.EXIT and op.pid == pid)
        prefix = copy.copy(sc)
        prefix.ops = sc.ops[:i]
        return simulate(prefix, **self._options, keep_state=True, progress=False)

    def state_nbytes(self) -> pd.Series:
        """Bytes the simulated machine's arrays hold at the end of the run, by
        array (capacity included), largest first: where the simulator's own
        memory went. The overlay pool (ov_key, ov_val) holds the processes'
        private PTEs in tables they share, the PTE blocks (pt) the tables'
        own entries, 32 slots a block. They and the frame records count up
        to their high-water marks. The other arrays count their capacity,
        which is an upper bound: they are calloc'd, and the host backs only
        the pages of them a run has written (a huge mapping's directory row,
        say, where one 2 MiB range was touched)."""
        m = self._machine("state_nbytes")
        nbytes = pd.Series({name: getattr(m, name).nbytes for name in m._fields}, name="bytes")
        for names, hwm in ((("ov_key", "ov_val"), abi.G_OV_HWM), (("pt", "blk_free"), abi.G_BLK_HWM),
                           (("frame", "frame_free"), abi.G_FRAME_HWM)):
            for name in names:
                a = getattr(m, name)
                nbytes[name] = int(m.g[hwm]) * (a.nbytes // max(a.shape[0], 1))
        return nbytes.sort_values(ascending=False)

    def check_invariants(self) -> None:
        """Recount the machine from its page tables and compare with what the
        engine kept incrementally. Raises AssertionError naming the first broken rule."""
        check_machine(self._machine("check_invariants"))
