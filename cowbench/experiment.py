"""The harness every script in experiments/ runs through.

An experiment is a Python file that defines, at module level:

    \"\"\"Title line.

    What it reproduces, the published figure, the model's assumptions.\"\"\"
    QUICK = grid(...)           # the small grid (--quick): under a minute on 2 cores
    FULL = grid(...)            # the full-size grid (results/ holds its outputs)
    def point(**params): ...    # scenario -> simulate -> tidy rows (a dict, list of dicts, DataFrame)
    def plot(df, png): ...      # figures: png("latency") is the path of DIR/<name>_latency.png
    def compare(df): ...        # [versus(quantity, published, measured, source), ...]
    def summary(df): ...        # optional: a compact table of the results for the report
    def unavailable(): ...      # optional: why it cannot run here ("" if it can): real programs
    SERIAL = True               # optional: run the points one at a time (they time real processes)

and ends with `if __name__ == "__main__": main(__name__)`. `run` sends the grid
through the sweep runner (resumable: DIR/_points/<name>/ holds one Parquet file
per point), then writes into DIR, every name prefixed with the experiment's:

    <name>.parquet, <name>.csv      the tidy results, one row per observation
    <name>_<figure>.png             the figures
    <name>_comparison.csv           published number next to the simulated one
    <name>_summary.csv              the summary table (when the experiment has one)
    <name>.experiment.json          what `cowbench report DIR` needs

so several experiments can share one DIR, and `cowbench report DIR` finds them all.
"""
from __future__ import annotations

import argparse
import ast
import datetime as _dt
import importlib.util
import json
import os
import shlex
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Callable

import pandas as pd

from .fileio import atomic_write
from .sweep import SweepError, grid, part_path, run_sweep

__all__ = ["grid", "versus", "debian_program", "run_image", "main", "run", "find_experiments", "load_experiment",
           "load_module", "resolve_target", "describe", "ORDER"]

#: The order experiments appear in `cowbench list` and in the report.
ORDER = ("fork_cost", "fork_exec", "redis_bgsave", "redis_thp", "python_prefork", "memory_limit",
         "prefork_server", "zygote", "process_trees", "fuzzer_forkserver", "fork_fds", "redis_real", "python_workers_real")
META_SUFFIX = ".experiment.json"
MODULE_PREFIX = "cowbench_experiment_"


def versus(quantity: str, published: str, measured: str, source: str, note: str = "") -> dict:
    """One row of an experiment's comparison table: a published number and ours."""
    return {"quantity": quantity, "published": published, "simulated": measured, "source": source,
            "note": note}


# --- programs as a Debian system ships them ------------------------------------------------------

# `size` of each binary on Debian 12 (bookworm), x86-64: text, data and bss in
# bytes, and the libraries `ldd` lists (libc, libm ... : their text; their own
# data and bss are a few pages each and left out). The dynamic loader is left
# out too. Measured with `size /usr/bin/python3.11 /lib/x86_64-linux-gnu/libc.so.6 ...`.
DEBIAN_PROGRAMS = {
    "python3.11": (5516458, 1303712, 282168, ("libc.so.6", "libm.so.6", "libz.so.1", "libexpat.so.1")),
    "redis-server": (2007393, 373800, 129872, ("libc.so.6", "libm.so.6", "libssl.so.3", "libcrypto.so.3",
                                               "libjemalloc.so.2", "libstdc++.so.6", "libsystemd.so.0")),
    "bash": (1209582, 48244, 45152, ("libc.so.6", "libtinfo.so.6")),
    "true": (26640, 1104, 408, ("libc.so.6",)),
}
DEBIAN_LIB_TEXT = {"libc.so.6": 1887545, "libm.so.6": 901474, "libz.so.1": 107512, "libexpat.so.1": 156286,
                   "libssl.so.3": 630502, "libcrypto.so.3": 4318578, "libjemalloc.so.2": 803959,
                   "libstdc++.so.6": 2129264, "libsystemd.so.0": 790573, "libtinfo.so.6": 178716}


def debian_program(sc, name: str, heap=0) -> "Program":
    """The Program `name` of DEBIAN_PROGRAMS in scenario sc, with a heap of
    `heap` bytes: its libraries are files of sc, made at the first call that
    needs them and shared by every later one (one page cache per library)."""
    from .scenario import Program

    if name not in DEBIAN_PROGRAMS:
        raise ValueError(f"The 'name' parameter of debian_program must be one of {sorted(DEBIAN_PROGRAMS)}; "
                         f"got {name!r}")
    text, data, bss, libs = DEBIAN_PROGRAMS[name]
    have = {f.name: f for f in sc.files}
    files = [have.get(lib) or sc.file(lib, DEBIAN_LIB_TEXT[lib]) for lib in libs]
    return Program(name, text=text, data=data, bss=bss, heap=heap, libs=files)


def run_image(p, init: bool = True) -> None:
    """p runs its program: it executes all of its text and its libraries'
    (reads them) and, if init (a process that starts it, not a forked copy),
    initialises its data and bss (writes them)."""
    img = p.image
    for r in (img.text, *img.libs):
        p.read(r)
    for r in (img.data, img.bss) if init else ():
        if r is not None:
            p.write(r)


# --- finding and loading experiments -------------------------------------------------------------

def experiments_dir() -> Path | None:
    """$COWBENCH_EXPERIMENTS, else ./experiments, else the experiments/ of this checkout."""
    env = os.environ.get("COWBENCH_EXPERIMENTS")
    candidates = [Path(env)] if env else []
    candidates += [Path.cwd() / "experiments", Path(__file__).resolve().parent.parent / "experiments"]
    for c in candidates:
        if c.is_dir() and any(c.glob("*.py")):
            return c
    return None


def find_experiments() -> dict[str, Path]:
    """Experiment name -> script, in ORDER first, then alphabetically."""
    d = experiments_dir()
    if d is None:
        return {}
    found = {p.stem: p for p in d.glob("*.py") if not p.name.startswith("_")}
    names = [n for n in ORDER if n in found] + sorted(n for n in found if n not in ORDER)
    return {n: found[n] for n in names}


def describe(path: Path) -> tuple[str, str]:
    """(title, description) from a script's docstring, without running it."""
    doc = ast.get_docstring(ast.parse(Path(path).read_text(encoding="utf-8"))) or ""
    title, _, rest = doc.strip().partition("\n")
    return title.strip().rstrip("."), rest.strip()


def load_module(path: Path) -> ModuleType:
    """Import a script by path, under a module name that pickles (for the sweep's workers)."""
    path = Path(path).resolve()
    name = MODULE_PREFIX + path.stem
    mod = sys.modules.get(name)
    if mod is not None and Path(getattr(mod, "__file__", "")).resolve() == path:
        return mod
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return mod


def load_experiment(name: str) -> ModuleType:
    """The experiment called `name` (see `cowbench list`), or a path to a script."""
    p = Path(name)
    if p.suffix == ".py" and p.exists():
        return load_module(p)
    found = find_experiments()
    if name not in found:
        known = ", ".join(found) or "none found (set COWBENCH_EXPERIMENTS to the experiments/ directory)"
        raise SystemExit(f"cowbench: unknown experiment {name!r}; the experiments are: {known}")
    return load_module(found[name])


def experiment_name(module: ModuleType) -> str:
    return Path(module.__file__).stem


# --- running ------------------------------------------------------------------------------------

def _table(df: pd.DataFrame) -> str:
    if df is None or df.empty:
        return "(empty)"
    with pd.option_context("display.max_colwidth", 60, "display.width", 200):
        return df.to_string(index=False)


def warm_up() -> None:
    """Load (or compile, on a cold cache) the engine's kernels in this process, under
    every policy, so that the sweep's forked workers inherit them instead of each
    compiling its own copy at the same time."""
    from .simulator import POLICIES, simulate
    from .patterns import uniform
    from .scenario import Scenario

    sc = Scenario(phys_mem="64MiB")
    p = sc.spawn("warm")
    h = p.mmap("h", "4MiB")
    p.write(h)
    kid = p.fork("kid")
    with sc.concurrently(grain=8):
        kid.write(h, pages=uniform(16, seed=1))
        p.read(h, pages=range(0, 16))
    kid.exit()
    for policy in POLICIES:
        simulate(sc, policy=policy)


def run(module: ModuleType, *, quick: bool = False, out=None, scheduler=None, workers: int | None = None,
        progress: bool = True, fresh: bool = False, command: str | None = None, echo: bool = True) -> pd.DataFrame:
    """Run one experiment: its grid through the sweep, then tables, figures and metadata into out."""
    name = experiment_name(module)
    for attr in ("QUICK", "FULL", "point", "plot", "compare"):
        if not hasattr(module, attr):
            raise SystemExit(f"cowbench: experiment {name!r} ({module.__file__}) does not define {attr!r}")
    out = Path(out if out is not None else Path("results") / name)
    why = module.unavailable() if hasattr(module, "unavailable") else ""
    if why:
        if echo:
            print(f"== {name}: skipped: {why}")
        return pd.DataFrame()
    if getattr(module, "SERIAL", False) and scheduler is None:
        workers = 1
    points = module.QUICK if quick else module.FULL
    title, description = describe(Path(module.__file__))
    computed = len(points) if fresh else sum(not part_path(out / "_points" / name, p).exists() for p in points)
    t0 = time.perf_counter()
    if scheduler is None and computed:
        warm_up()
    df = run_sweep(module.point, points, out / "_points" / name, scheduler=scheduler, workers=workers,
                   progress=progress, name=name, fresh=fresh)
    t_sweep = time.perf_counter() - t0

    atomic_write(out / f"{name}.parquet", lambda p: df.to_parquet(p, index=False))
    atomic_write(out / f"{name}.csv", lambda p: df.to_csv(p, index=False))
    figures = [Path(f) for f in (module.plot(df, lambda fig: out / f"{name}_{fig}.png") or [])]
    comparison = pd.DataFrame(module.compare(df),
                              columns=["quantity", "published", "simulated", "source", "note"])
    atomic_write(out / f"{name}_comparison.csv", lambda p: comparison.to_csv(p, index=False))
    tables = {"comparison": f"{name}_comparison.csv"}
    summary = module.summary(df) if hasattr(module, "summary") else None
    if summary is not None:
        atomic_write(out / f"{name}_summary.csv", lambda p: summary.to_csv(p, index=False))
        tables["summary"] = f"{name}_summary.csv"
    seconds = time.perf_counter() - t0
    if command is None:
        command = f"cowbench run {name}{' --quick' if quick else ''} --out {shlex.quote(str(out))}"
    from . import __version__
    meta = {
        "cowbench_experiment": 1,
        "name": name,
        "title": title,
        "description": description,
        "quick": bool(quick),
        "points": len(points),
        "points_computed": computed,
        "rows": int(len(df)),
        "seconds": round(seconds, 2),
        "sweep_seconds": round(t_sweep, 2),
        "command": command,
        "finished": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cowbench": __version__,
        "results": [f"{name}.parquet", f"{name}.csv"],
        "figures": [f.name for f in figures],
        "tables": tables,
    }
    atomic_write(out / f"{name}{META_SUFFIX}",
                 lambda p: Path(p).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8"))
    if echo:
        print(f"== {name}: {title}")
        reused = f", {len(points) - computed} reused from {out / '_points' / name}" if computed < len(points) else ""
        print(f"   {len(points)} points{' (quick grid)' if quick else ''}{reused}, {seconds:.1f} s\n")
        print("Published vs simulated:")
        print(_table(comparison.drop(columns=["note"])))
        if summary is not None:
            print("\nSummary:")
            print(_table(summary))
        written = [out / f"{name}.parquet", out / f"{name}.csv", out / f"{name}_comparison.csv"] + figures
        print("\nwrote " + ", ".join(str(p) for p in written))
    return df


def add_run_arguments(ap: argparse.ArgumentParser, default_out: str | None) -> None:
    ap.add_argument("--quick", action="store_true",
                    help="the small grid: a minute or less on a laptop (default: the full-size grid)")
    ap.add_argument("--out", default=default_out, metavar="DIR",
                    help="where tables, figures and the resumable point files go (default: "
                         f"{default_out or 'results/NAME'}, or results/quick/NAME with --quick: a quick run "
                         "never replaces the committed full-size results)")
    ap.add_argument("--scheduler", metavar="ADDR",
                    help="run the points on a Dask distributed cluster, e.g. tcp://10.0.0.5:8786 "
                         "(default: local processes)")
    ap.add_argument("--workers", type=int, metavar="N",
                    help="local worker processes (default: one per CPU; 1 runs in this process)")
    ap.add_argument("--fresh", action="store_true",
                    help="recompute every point (default: reuse the point files already in DIR)")
    ap.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def main(module_name: str, argv=None) -> int:
    """Command line of one experiment script: `python experiments/NAME.py [--quick] [--out DIR]`."""
    module = sys.modules[module_name]
    name = experiment_name(module)
    title, description = describe(Path(module.__file__))
    ap = argparse.ArgumentParser(prog=f"experiments/{name}.py", description=f"{title}\n\n{description}",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(ap, None)
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    argv_str = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    out = args.out or Path("results", *(["quick"] if args.quick else []), name)
    run(module, quick=args.quick, out=out, scheduler=args.scheduler, workers=args.workers,
        progress=args.progress, fresh=args.fresh,
        command=f"python experiments/{name}.py {argv_str}".strip())
    return 0


def resolve_target(target: str) -> tuple[Callable, ModuleType | None]:
    """What `cowbench sweep TARGET` runs: an experiment name (its point function,
    and the experiment), 'package.module:function' or 'path/to/file.py:function'
    (the function, and None)."""
    if ":" not in target:
        mod = load_experiment(target)
        return mod.point, mod
    where, func = target.rsplit(":", 1)
    if where.endswith(".py") or os.sep in where:
        module = load_module(Path(where))
    else:
        module = importlib.import_module(where)
    try:
        return getattr(module, func), None
    except AttributeError:
        raise SweepError(f"sweep: {where} has no function {func!r}") from None
