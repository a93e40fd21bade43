"""The ``layoutops`` command line: ``demo``, ``convert`` and ``bench``.

Each subcommand lives in its own module exposing ``add_arguments(parser)``, which declares the
options and calls ``parser.set_defaults(run=run)``; ``run(args)`` returns the exit status.
Only the module of the subcommand being run is imported, so ``layoutops --help`` and
``layoutops demo`` keep working even if another subcommand's module cannot be imported.

Exit status: 0 on success, 1 when a subcommand reports a failed check (e.g. ``demo`` when the
layouts disagree), 2 on any error (bad option, missing file, invalid layout, ...). An error is
printed as one line on stderr, never a traceback (set ``LAYOUTOPS_DEBUG=1`` to get one).

Examples
--------
>>> from layoutops.cli import main
>>> main(["no-such-command"])  # prints one line on stderr
2
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser", "CliError", "SUBCOMMANDS"]

#: name -> (module, one-line help). The module defines ``add_arguments(parser)``.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "layoutops.demo",
        "run a small CNN in NCHW (PyTorch weights) and NHWC (TF weights) and compare",
    ),
    "convert": (
        "layoutops.cli_convert",
        "convert the arrays of an .npz/.npy file between layouts or frameworks",
    ),
    "bench": ("layoutops.bench", "run the benchmark suite against the installed peers"),
}


class CliError(Exception):
    """A user error on the command line: printed as one line, exit status 2."""


class _UsageError(Exception):
    """Raised instead of argparse's print-usage-and-exit, so the error stays one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # noqa: D401 - argparse hook
        raise _UsageError(f"{self.prog}: error: {message} (see '{self.prog} --help')")


def _version() -> str:
    from . import __version__

    return __version__


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyError) and exc.args:
        text = f"unknown key {exc.args[0]!r}"
    text = " ".join(text.split())
    if isinstance(exc, (CliError, ValueError, TypeError, OSError, KeyError)):
        return text
    return f"{type(exc).__name__}: {text}"


def _unavailable(name: str, exc: BaseException):
    reason = _one_line(exc)

    def run(args: argparse.Namespace) -> int:
        raise CliError(f"the '{name}' command is unavailable: {reason}")

    return run


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Build the argument parser.

    Parameters
    ----------
    command : str, optional
        The subcommand that will run: only its module is imported and its options declared.
        ``None`` declares every subcommand's options (importing every module that imports).

    Returns
    -------
    argparse.ArgumentParser

    Examples
    --------
    >>> from layoutops.cli import build_parser
    >>> args = build_parser("demo").parse_args(["demo", "--batch", "4"])
    >>> args.command, args.batch, args.size
    ('demo', 4, 32)
    """
    parser = _Parser(
        prog="layoutops",
        description=(
            "Convolution, transposed convolution and pooling in NCHW or NHWC layout on NumPy, "
            "and conversion of arrays and weights between framework layouts."
        ),
        epilog="Run 'layoutops COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"layoutops {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    sub.required = True
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if command is not None and name != command:
            continue
        try:
            module = importlib.import_module(module_name)
            module.add_arguments(sp)
        except Exception as exc:  # a broken subcommand must not take the others down
            if os.environ.get("LAYOUTOPS_DEBUG"):
                raise
            # accept anything so the user gets the real reason, not an argparse complaint
            sp.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            sp.set_defaults(run=_unavailable(name, exc))
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    for arg in argv:
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg if arg in SUBCOMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name; ``sys.argv[1:]`` by default.

    Returns
    -------
    int
        0 on success, 1 when a check fails (``demo``: layouts disagree), 2 on errors.

    Examples
    --------
    >>> from layoutops.cli import main
    >>> main(["--version"])
    layoutops 0.1.0
    0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_of(argv)
    try:
        parser = build_parser(command)
        args = parser.parse_args(argv)
    except _UsageError as e:
        print(e, file=sys.stderr)
        return 2
    except SystemExit as e:  # --help / --version
        return e.code if isinstance(e.code, int) else 0
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("layoutops: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `layoutops demo | head`
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return 0
    except Exception as e:
        if os.environ.get("LAYOUTOPS_DEBUG"):
            raise
        print(f"layoutops {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
