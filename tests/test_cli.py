"""The top-level command line, run as a user runs it: ``python -m layoutops ...``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from layoutops import cli


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "layoutops", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_help_lists_every_subcommand():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for name in ("demo", "convert", "bench"):
        assert f"    {name} " in proc.stdout
    assert proc.stderr == ""


def test_version():
    proc = run_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip().startswith("layoutops ")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("no-such-command",), "invalid choice: 'no-such-command'"),
        ((), "required: COMMAND"),
        (("demo", "--bogus"), "unrecognized arguments: --bogus"),
        (("demo", "--batch", "two"), "invalid int value: 'two'"),
        (("demo", "--size", "6"), "`size` must be a multiple of 4 and >= 8, got 6"),
    ],
)
def test_errors_are_one_line_on_stderr_with_status_2(args, needle):
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0]
    assert "Traceback" not in proc.stderr


def test_demo_exits_0_and_ends_with_the_agreement_line():
    proc = run_cli("demo")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("layouts agree: max abs diff ")
    assert " <= " in last
    for layer in ("conv1", "dw", "gconv", "maxpool", "up", "avgpool", "fc"):
        assert f"\n{layer} " in proc.stdout


def test_a_broken_subcommand_does_not_take_the_others_down(monkeypatch, capsys):
    monkeypatch.setitem(cli.SUBCOMMANDS, "broken", ("layoutops._no_such_module", "a broken one"))
    assert cli.main(["--help"]) == 0
    assert "broken" in capsys.readouterr().out
    assert cli.main(["broken", "x", "--y"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "the 'broken' command is unavailable" in err[0]
    assert "No module named 'layoutops._no_such_module'" in err[0]
    # the other commands still parse and run
    assert cli.main(["demo", "--help"]) == 0
    assert "--batch" in capsys.readouterr().out


def test_only_the_chosen_subcommand_module_is_imported(monkeypatch):
    imported = []
    real = cli.importlib.import_module

    def spy(name, *a, **k):
        imported.append(name)
        return real(name, *a, **k)

    monkeypatch.setattr(cli.importlib, "import_module", spy)
    cli.build_parser("demo")
    assert imported == ["layoutops.demo"]


def test_runtime_errors_become_one_line(monkeypatch, capsys):
    import layoutops.demo as demo

    def boom(args):
        raise OSError("disk on fire")

    monkeypatch.setattr(demo, "run", boom)
    assert cli.main(["demo"]) == 2
    assert capsys.readouterr().err == "layoutops demo: error: disk on fire\n"
