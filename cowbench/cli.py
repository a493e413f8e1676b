"""The `cowbench` command line."""
from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
cowbench simulates fork() and copy-on-write memory, count for count with Linux.

  cowbench demo [--out DIR]      fork a parent, let the child write 0-100 % of its
                                 heap, compare eager copy with COW; writes a table
                                 and a plot under DIR (default results/demo)
  cowbench validate [--list|-v]  run the validation scenarios as real processes
                                 and in the simulator, side by side; exits 1 on
                                 any mismatch
  cowbench calibrate --out F     measure this host's fork and fault costs and
                                 write the cost model (TOML) that simulate(costs=)
                                 loads with cb.CostModel.load(F)

The Python API does the rest: see README.md.
"""


def _demo(args) -> int:
    from . import demo

    demo.main(args.out, heap=args.heap)
    return 0


# Subcommands with options of their own: everything after the name is theirs.
PASSTHROUGH = {"validate": "cowbench.validate", "calibrate": "cowbench.calibrate"}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in PASSTHROUGH:
        import importlib

        return importlib.import_module(PASSTHROUGH[argv[0]]).main(argv[1:])
    parser = argparse.ArgumentParser(prog="cowbench", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("demo", help="eager vs COW fork while the child writes 0-100 %% of the heap")
    p.add_argument("--out", default="results/demo", help="output directory (default: %(default)s)")
    p.add_argument("--heap", default="256MiB", help="size of the parent's heap (default: %(default)s)")
    p.set_defaults(func=_demo)
    sub.add_parser("validate", help="compare the simulator with the real kernel, scenario by scenario")
    sub.add_parser("calibrate", help="measure this host's costs and write a cost model")
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
