"""The `cowbench` command line."""
from __future__ import annotations

import argparse
import sys

from ._params import ScenarioError

DESCRIPTION = """\
cowbench simulates fork() and copy-on-write memory, count for count with Linux.

  cowbench demo [--out DIR]      fork a parent, let the child write 0-100 % of its
                                 heap, compare eager copy with COW; writes a table
                                 and a plot under DIR (default results/demo)
  cowbench list                  the experiments that reproduce the field's known
                                 results (Redis fork latency, BGSAVE, Instagram's
                                 prefork workers, xv6 cowtest, ...)
  cowbench run NAME [--quick]    run one experiment (or `all`): its parameter grid
               [--out DIR]       through the sweep runner, then a Parquet table,
                                 PNG figures and a published-vs-simulated table
  cowbench sweep TARGET ...      run any point function over a parameter grid, in
                                 parallel (local processes or a Dask cluster),
                                 resumably, into a Parquet dataset
  cowbench report DIR            one self-contained HTML page and a Markdown file
                                 with every experiment found under DIR
  cowbench validate [--list|-v]  run the validation scenarios as real processes
                                 and in the simulator, side by side; exits 1 on
                                 any mismatch
  cowbench calibrate --out F     measure this host's fork and fault costs and
                                 write the cost model (TOML) that simulate(costs=)
                                 loads with cb.CostModel.load(F)
  cowbench snapshot PID          a live process's layout and resident set, as the
               [--out F]         kernel counts them (smaps, pagemap; kpageflags as root)
  cowbench trace PID|-- CMD      sample a process tree's pagemap: forks, exits and
               [--out F]         each page's first write, over time
  cowbench predict PID|FILE      fork latency per policy, page tables, per-region
                                 breakdown, COW memory over time (trace or --write-rate)

A first session:

  cowbench list
  cowbench run fork_cost --quick --out /tmp/cb/fork_cost     # about 5 s
  cowbench run all --quick --out /tmp/cb                     # every experiment
  cowbench report /tmp/cb                                    # /tmp/cb/report.html

`cowbench COMMAND --help` explains each command. The Python API does the rest:
see README.md.
"""

RUN_EPILOG = """\
What a run writes into DIR (every name starts with the experiment's):
  NAME.parquet, NAME.csv     tidy results, one row per observation
  NAME_*.png                 the figures
  NAME_comparison.csv        published numbers next to the simulated ones
  NAME_summary.csv           a compact table of the results
  NAME.experiment.json       what `cowbench report` reads
  _points/NAME/              one Parquet file per grid point: a rerun computes
                             only the points that are missing (use --fresh to redo)

`cowbench run all --out DIR` runs every experiment into DIR/NAME/.

examples:
  cowbench run redis_bgsave --quick --out /tmp/cb/redis_bgsave
  cowbench run fork_cost --out results/fork_cost            # the full-size grid
  cowbench run zygote --scheduler tcp://10.0.0.5:8786       # on a Dask cluster
"""

SWEEP_EPILOG = """\
TARGET is an experiment name (see `cowbench list`), a module function
(package.module:function) or a function in a file (path/to/file.py:function).
The function is called once per grid point with the point's parameters as
keyword arguments and returns a dict (one row), a list of dicts or a DataFrame.

The grid is the product of every --param (and --policies, a shortcut for
--param policy=...). Values are parsed as int, then float, then kept as text.
Without --param, an experiment's own grid is used (--quick: the small one).
Parameters a point does not get take the function's defaults.

Results go to DIR as a Parquet dataset: one part-<hash>.parquet per point (the
hash names the parameters), written atomically; read it with
pandas.read_parquet(DIR). A rerun computes only the points that are missing.

examples:
  cowbench sweep fork_cost --param size_mib=64,1024,16384 --param method=eager,cow,odf \\
      --out /tmp/sweep1
  cowbench sweep redis_bgsave --param writes_per_s=1000,10000,100000 \\
      --param pattern=zipf --param zipf_s=0.8,0.99,1.2 --out /tmp/zipf
  cowbench sweep mypkg.points:fork_point --param heap=64MiB,1GiB --policies eager,cow \\
      --workers 8 --out /tmp/s
  cowbench sweep fork_exec --quick --scheduler tcp://10.0.0.5:8786 --out /tmp/s
"""


def _demo(args) -> int:
    from . import demo

    demo.main(args.out, heap=args.heap)
    return 0


def _list(args) -> int:
    from .experiment import describe, experiments_dir, find_experiments, load_module

    found = find_experiments()
    if not found:
        print("no experiments found: run from a cowbench checkout, or set COWBENCH_EXPERIMENTS "
              "to its experiments/ directory", file=sys.stderr)
        return 1
    print(f"experiments in {experiments_dir()}:\n")
    width = max(len(n) for n in found)
    for name, path in found.items():
        title, _ = describe(path)
        extra = ""
        if args.verbose:
            mod = load_module(path)
            extra = f"  [{len(mod.QUICK)} points quick, {len(mod.FULL)} full]"
        print(f"  {name:<{width}}  {title}{extra}")
    print("\nrun one with `cowbench run NAME --quick --out DIR`; `cowbench run NAME --help` for more.")
    return 0


def _run(args) -> int:
    from pathlib import Path

    from .experiment import find_experiments, load_experiment, run

    names = list(find_experiments()) if args.name == "all" else [args.name]
    if not names:
        print("no experiments found", file=sys.stderr)
        return 1
    # Without --out, results/NAME holds the committed full-size results: a quick run
    # goes to results/quick/NAME instead, never over them.
    default = Path("results") / "quick" if args.quick else Path("results")
    for name in names:
        module = load_experiment(name)
        if args.name == "all":
            out = (Path(args.out) if args.out else default) / Path(module.__file__).stem
        else:
            out = Path(args.out) if args.out else default / Path(module.__file__).stem
        cmd = f"cowbench run {Path(module.__file__).stem}{' --quick' if args.quick else ''} --out {out}"
        run(module, quick=args.quick, out=out, scheduler=args.scheduler, workers=args.workers,
            progress=args.progress, fresh=args.fresh, command=cmd)
        if len(names) > 1:
            print()
    return 0


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def _sweep(args) -> int:
    from .experiment import resolve_target
    from .sweep import grid, run_sweep

    fn, module = resolve_target(args.target)
    axes: dict[str, list] = {}
    for spec in args.param or []:
        if "=" not in spec:
            raise SystemExit(f"cowbench sweep: --param expects NAME=V1,V2,...; got {spec!r}")
        k, _, vals = spec.partition("=")
        axes[k.strip()] = [_value(v.strip()) for v in vals.split(",") if v.strip()]
    if args.policies:
        axes["policy"] = [v.strip() for v in args.policies.split(",") if v.strip()]
    if axes:
        points = grid(**axes)
    elif module is not None:
        points = module.QUICK if args.quick else module.FULL
    else:
        raise SystemExit("cowbench sweep: give the grid with --param NAME=V1,V2,... (and/or --policies)")
    df = run_sweep(fn, points, args.out, scheduler=args.scheduler, workers=args.workers,
                   progress=args.progress, fresh=args.fresh,
                   name=args.target if module is None else f"{args.target}[sweep]")
    import pandas as pd
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(df.drop(columns=["point"]).to_string(index=False, max_rows=40))
    print(f"\n{len(points)} points, {len(df)} rows in {args.out} (a Parquet dataset: pandas.read_parquet)")
    return 0


def _report(args) -> int:
    from .report import write_report

    try:
        h, m = write_report(args.dir, title=args.title)
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"wrote {h} and {m}")
    return 0


# Subcommands with options of their own: everything after the name is theirs.
PASSTHROUGH = {"validate": "cowbench.real.validate", "calibrate": "cowbench.real.calibrate",
               "snapshot": "cowbench.real.snapshot", "trace": "cowbench.real.trace", "predict": "cowbench.real.predict"}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in PASSTHROUGH:
        import importlib

        return importlib.import_module(PASSTHROUGH[argv[0]]).main(argv[1:])
    from .experiment import add_run_arguments

    parser = argparse.ArgumentParser(prog="cowbench", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("demo", help="eager vs COW fork while the child writes 0-100 %% of the heap")
    p.add_argument("--out", default="results/demo", help="output directory (default: %(default)s)")
    p.add_argument("--heap", default="256MiB", help="size of the parent's heap (default: %(default)s)")
    p.set_defaults(func=_demo)

    p = sub.add_parser("list", help="the experiments: name and what each reproduces",
                       description="List the experiments in experiments/ with what each reproduces.")
    p.add_argument("-v", "--verbose", action="store_true", help="also the size of each grid")
    p.set_defaults(func=_list)

    p = sub.add_parser("run", help="run an experiment (or all): tables, figures, published numbers",
                       description="Run one experiment's parameter grid through the sweep runner and write "
                                   "its tables and figures, with the published numbers it reproduces.",
                       epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", metavar="NAME", help="an experiment (see `cowbench list`), a script path, or `all`")
    add_run_arguments(p, None)
    p.set_defaults(func=_run)

    p = sub.add_parser("sweep", help="any point function over a parameter grid, in parallel, resumably",
                       description="Run a point function over a grid of parameters (x policies), in "
                                   "parallel local processes or on a Dask cluster, into a resumable "
                                   "Parquet dataset.",
                       epilog=SWEEP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", metavar="TARGET", help="experiment name, module:function or file.py:function")
    p.add_argument("-p", "--param", action="append", metavar="NAME=V1,V2",
                   help="one axis of the grid (repeat for more axes)")
    p.add_argument("--policies", metavar="P1,P2", help="shortcut for --param policy=P1,P2 (eager, cow, odf)")
    p.add_argument("--quick", action="store_true", help="an experiment's small grid (when no --param)")
    p.add_argument("--out", required=True, metavar="DIR", help="the Parquet dataset directory")
    p.add_argument("--scheduler", metavar="ADDR", help="Dask scheduler address (default: local processes)")
    p.add_argument("--workers", type=int, metavar="N", help="local processes (default: one per CPU)")
    p.add_argument("--fresh", action="store_true", help="recompute every point")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=_sweep)

    p = sub.add_parser("report", help="an HTML page and a Markdown file of every experiment under DIR",
                       description="Write DIR/report.html (self-contained: figures embedded) and "
                                   "DIR/report.md (figures linked) from every experiment run found under "
                                   "DIR, each with its published-vs-simulated table, summary and figures.")
    p.add_argument("dir", metavar="DIR", help="a directory holding experiment outputs (searched recursively)")
    p.add_argument("--title", default="cowbench experiments", help="the report's title (default: %(default)s)")
    p.set_defaults(func=_report)

    sub.add_parser("validate", help="compare the simulator with the real kernel, scenario by scenario")
    sub.add_parser("calibrate", help="measure this host's costs and write a cost model")
    sub.add_parser("snapshot", help="a live process's layout and resident set, as the kernel counts them")
    sub.add_parser("trace", help="sample a live process tree's pagemap: forks, exits, first writes over time")
    sub.add_parser("predict", help="fork latency, page tables and COW memory of a real process, per policy")
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from .sweep import SweepError

    try:
        return args.func(args)
    except (ScenarioError, SweepError) as e:    # bad input: one line, as argparse reports a bad option
        print(f"cowbench {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
