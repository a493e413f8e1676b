"""The `cowbench` command line."""
from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
cowbench simulates fork() and copy-on-write memory, count for count with Linux.

  cowbench demo [--out DIR]      fork a parent, let the child write 0-100 % of its
                                 heap, compare eager copy with COW; writes a table
                                 and a plot under DIR (default results/demo)
  cowbench validate              run the validation scenarios as real processes
                                 and in the simulator, side by side

The Python API does the rest: see README.md.
"""


def _demo(args) -> int:
    from . import demo

    demo.main(args.out, heap=args.heap)
    return 0


def _validate(args) -> int:
    from . import validate

    return validate.main(args.rest)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cowbench", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("demo", help="eager vs COW fork while the child writes 0-100 %% of the heap")
    p.add_argument("--out", default="results/demo", help="output directory (default: %(default)s)")
    p.add_argument("--heap", default="256MiB", help="size of the parent's heap (default: %(default)s)")
    p.set_defaults(func=_demo)
    p = sub.add_parser("validate", help="compare the simulator with the real kernel, scenario by scenario")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options passed to the validator")
    p.set_defaults(func=_validate)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
