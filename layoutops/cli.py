"""The ``layoutops`` command line: ``demo``, ``convert`` and ``bench``.

Errors print one line to stderr and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main", "CliError"]


class CliError(Exception):
    """A user error on the command line: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="layoutops",
        description="Convolution and pooling in any layout, and layout conversion, on NumPy.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    from . import cli_convert, demo

    demo.add_arguments(sub.add_parser("demo", help="run a small CNN in NCHW and NHWC and compare"))
    cli_convert.add_arguments(
        sub.add_parser("convert", help="convert the arrays of an .npz/.npy file between layouts")
    )
    from . import bench

    bench.add_arguments(sub.add_parser("bench", help="run the benchmark suite"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except CliError as e:
        print(f"layoutops {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("layoutops: interrupted", file=sys.stderr)
        return 130
