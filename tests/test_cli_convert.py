"""``layoutops convert`` end to end: conversions, the table, each error, the atomic write.

A few cases run as a user runs them (``python -m layoutops convert ...`` in a subprocess);
the rest call the same entry point in-process (``layoutops.cli.main``) to keep the run short.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np
import pytest

import layoutops.cli_convert as cli_convert


def _main_in_process(argv: list[str]) -> int:
    try:
        from layoutops import cli

        cli.build_parser()  # the lead's wiring (needs demo/bench modules)
    except ImportError:  # pragma: no cover - only before the CLI is wired
        cli = None
    if cli is not None:
        return cli.main(argv)
    from layoutops.cli import CliError  # pragma: no cover

    parser = argparse.ArgumentParser(prog="layoutops")  # pragma: no cover
    sub = parser.add_subparsers(dest="command", required=True)
    cli_convert.add_arguments(sub.add_parser("convert"))
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except CliError as e:
        print(f"layoutops convert: error: {e}", file=sys.stderr)
        return 2


@pytest.fixture
def run(capsys):
    """Run ``layoutops convert ARGS`` in-process; returns (status, stdout, stderr)."""

    def call(*args: str):
        status = _main_in_process(["convert", *args])
        out, err = capsys.readouterr()
        return status, out, err

    return call


def run_subprocess(*args: str, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "layoutops", "convert", *args],
        capture_output=True, text=True, timeout=120, cwd=cwd,
    )


def rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


STATE = {
    "conv1.weight": rand((8, 3, 3, 2), 1),  # Conv2d(3, 8, (3, 2))
    "conv1.bias": rand((8,), 2),
    "bn1.weight": rand((8,), 3),  # rank 1: not a kernel despite its name
    "dw.weight": rand((6, 1, 3, 3), 4),  # depthwise, C = 3, M = 2
    "up.weight": rand((8, 4, 2, 3), 5),  # ConvTranspose2d(8, 4, (2, 3)): IOHW
    "fc.weight": rand((10, 8), 6),  # Linear(8, 10)
    "pos_embed": rand((1, 5, 8), 7),  # rank 3, not named like a kernel
    "conv1d.weight": rand((4, 2, 3), 8),  # Conv1d(2, 4, 3)
}


@pytest.fixture
def state_file(tmp_path):
    path = tmp_path / "model.npz"
    np.savez(path, **STATE)
    return path


def loop_oihw_to_hwio(w):
    o, i, kh, kw = w.shape
    out = np.empty((kh, kw, i, o), w.dtype)
    for a, b, y, x in np.ndindex(w.shape):
        out[y, x, b, a] = w[a, b, y, x]
    return out


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The converted rows of the table: name -> the rest of the line."""
    lines = stdout.splitlines()
    assert lines[0].split()[:2] == ["name", "shape"], stdout
    rows = {}
    for line in lines[1:]:
        if line.startswith("left alone"):
            break
        rows[line.split()[0]] = line
    return rows


def left_alone(stdout: str) -> dict[str, str]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("left alone"))
    return {line.split()[0]: line for line in lines[start + 1:] if line.startswith("  ")}


def test_torch_to_tf_state_dict_end_to_end(state_file, tmp_path):
    out = tmp_path / "tf.npz"
    proc = run_subprocess(
        str(state_file), str(out), "--from", "torch", "--to", "tf",
        "--depthwise", "dw.*", "--groups", "dw.*=3", "--transposed", "up.*", "--dense",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    got = dict(np.load(out))
    assert list(got) == list(STATE)  # every array kept, in order
    np.testing.assert_array_equal(got["conv1.weight"], loop_oihw_to_hwio(STATE["conv1.weight"]))
    dw = STATE["dw.weight"]
    for y, x, c, m in np.ndindex(3, 3, 3, 2):
        assert got["dw.weight"][y, x, c, m] == dw[c * 2 + m, 0, y, x]
    up = STATE["up.weight"]  # IOHW -> HWOI, no flip between torch and tf
    for i, o, y, x in np.ndindex(up.shape):
        assert got["up.weight"][y, x, o, i] == up[i, o, y, x]
    np.testing.assert_array_equal(got["fc.weight"], STATE["fc.weight"].T)
    np.testing.assert_array_equal(got["conv1d.weight"], STATE["conv1d.weight"].transpose(2, 1, 0))
    for name in ("conv1.bias", "bn1.weight", "pos_embed"):
        np.testing.assert_array_equal(got[name], STATE[name])
        assert got[name].dtype == STATE[name].dtype

    rows = table_rows(proc.stdout)
    assert set(rows) == {"conv1.weight", "dw.weight", "up.weight", "fc.weight", "conv1d.weight"}
    assert "(8, 3, 3, 2)" in rows["conv1.weight"] and "(3, 2, 3, 8)" in rows["conv1.weight"]
    assert "conv torch -> tf" in rows["conv1.weight"]
    assert "depthwise torch -> tf, groups=3" in rows["dw.weight"]
    assert "(3, 3, 3, 2)" in rows["dw.weight"]
    assert "conv_transpose torch -> tf" in rows["up.weight"]
    assert "flipped" not in rows["up.weight"]
    assert "dense OI -> IO" in rows["fc.weight"]
    alone = left_alone(proc.stdout)
    assert set(alone) == {"conv1.bias", "bn1.weight", "pos_embed"}
    assert "rank 1: not a kernel" in alone["bn1.weight"]
    assert "not named like a kernel" in alone["pos_embed"]
    assert "5 converted, 3 left alone" in proc.stdout


def test_defaults_leave_dense_alone_and_say_so(state_file, tmp_path, run):
    out = tmp_path / "o.npz"
    status, stdout, err = run(str(state_file), str(out), "--from", "torch", "--to", "jax",
                              "--exclude", "dw.*", "--exclude", "up.*")
    assert status == 0, err
    got = dict(np.load(out))
    # torch and jax (lax defaults) share OIHW: a plain copy, still listed as converted
    np.testing.assert_array_equal(got["conv1.weight"], STATE["conv1.weight"])
    np.testing.assert_array_equal(got["fc.weight"], STATE["fc.weight"])
    alone = left_alone(stdout)
    assert "add --dense" in alone["fc.weight"]
    assert "excluded" in alone["dw.weight"] and "excluded" in alone["up.weight"]


def test_flax_conv_transpose_is_flipped(state_file, tmp_path, run):
    out = tmp_path / "flax.npz"
    status, stdout, err = run(str(state_file), str(out), "--from", "torch", "--to", "flax",
                              "--kernels", "up.weight", "--transposed", "up.*")
    assert status == 0, err
    up = STATE["up.weight"]  # IOHW (8, 4, 2, 3) -> HWIO flipped
    got = np.load(out)["up.weight"]
    for i, o, y, x in np.ndindex(up.shape):
        assert got[1 - y, 2 - x, i, o] == up[i, o, y, x]
    assert "spatially flipped" in table_rows(stdout)["up.weight"]
    # --kernels overrides the default: conv1.weight is now left alone
    assert "conv1.weight" in left_alone(stdout)


def test_kernel_layouts_with_groups_and_transposed(tmp_path, run):
    src = tmp_path / "k.npz"
    w = rand((6, 2, 3, 3))
    t = rand((2, 6, 3, 3), 1)  # a transposed kernel in OIHW: I = all 6 input channels
    np.savez(src, **{"a.kernel": w, "t.kernel": t})
    out = tmp_path / "g.npz"
    status, stdout, err = run(str(src), str(out), "--from", "OIHW", "--to", "GOIHW",
                              "--groups", "*=3", "--transposed", "t.*")
    assert status == 0, err
    got = np.load(out)
    for g, o, i in np.ndindex(3, 2, 2):
        np.testing.assert_array_equal(got["a.kernel"][g, o, i], w[g * 2 + o, i])
    # transposed: G splits I (i = g * I_per + i')
    assert got["t.kernel"].shape == (3, 2, 2, 3, 3)
    for g, o, i in np.ndindex(3, 2, 2):
        np.testing.assert_array_equal(got["t.kernel"][g, o, i], t[o, g * 2 + i])
    rows = table_rows(stdout)
    assert "OIHW -> GOIHW, groups=3" in rows["a.kernel"]
    assert "OIHW -> GOIHW (transposed), groups=3" in rows["t.kernel"]


def test_npy_activation_with_aliases(tmp_path):
    x = rand((2, 3, 5, 4))
    src = tmp_path / "act.npy"
    np.save(src, x)
    out = tmp_path / "act_nhwc.npy"
    proc = run_subprocess(str(src), str(out), "--from", "channels_first", "--to", "channels_last")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.load(out), x.transpose(0, 2, 3, 1))
    assert "NCHW -> NHWC" in table_rows(proc.stdout)["act"]


def test_npz_activations_convert_by_rank(tmp_path, run):
    src = tmp_path / "acts.npz"
    np.savez(src, a=rand((1, 2, 3, 4)), b=rand((1, 2, 3)), c=rand((2, 3, 4, 5)))
    out = tmp_path / "o.npz"
    status, stdout, err = run(str(src), str(out), "--from", "NCHW", "--to", "NHWC",
                              "--exclude", "c")
    assert status == 0, err
    got = np.load(out)
    assert got["a"].shape == (1, 3, 4, 2) and got["b"].shape == (1, 2, 3)
    assert got["c"].shape == (2, 3, 4, 5)
    alone = left_alone(stdout)
    assert "rank 3 does not fit NCHW" in alone["b"] and "excluded" in alone["c"]


# -- errors: one line on stderr, exit 2, output untouched ---------------------------------------


@pytest.fixture
def existing_out(tmp_path):
    path = tmp_path / "out.npz"
    path.write_bytes(b"previous content")
    return path


ERROR_CASES = [
    (["{missing}", "{out}", "--from", "torch", "--to", "tf"], r"no such file"),
    (["{state}", "{out}", "--from", "torch", "--to", "keras"],
     r"--to 'keras' is neither a framework \(torch, tf, jax, flax, onnx, tflite\) nor a valid"),
    (["{state}", "{out}", "--from", "NCHw", "--to", "NHWC"], r"--from 'NCHw' is neither"),
    (["{state}", "{out}", "--from", "NCCW", "--to", "NWCC"], r"letter 'C' appears twice"),
    (["{state}", "{out}", "--from", "torch", "--to", "NHWC"],
     r"'torch' is a framework but --to 'NHWC' is an activation layout"),
    (["{state}", "{out}", "--from", "OIHW", "--to", "NHWC"],
     r"'OIHW' is a kernel layout but --to 'NHWC' is an activation layout"),
    (["{state}", "{out}", "--from", "torch", "--to", "tf", "--kernels", "enc.*"],
     r"--kernels 'enc\.\*' matches no array \(arrays: conv1.weight"),
    (["{state}", "{out}", "--from", "torch", "--to", "tf", "--exclude", "zzz"],
     r"--exclude 'zzz' matches no array"),
    (["{state}", "{out}", "--from", "torch", "--to", "tf", "--transposed", "conv1.bias"],
     r"--transposed 'conv1.bias' matches no kernel \(kernels: conv1.weight"),
    (["{state}", "{out}", "--from", "torch", "--to", "tf", "--depthwise", "dw.*"],
     r"dw.weight \(6, 1, 3, 3\): .*pass `groups=` C \(use --groups GLOB=G\)"),
    (["{state}", "{out}", "--from", "torch", "--to", "tf", "--depthwise", "dw.*",
      "--groups", "dw.*=4"], r"dw.weight \(6, 1, 3, 3\): .*`groups`=4 \(C\) does not divide O=6"),
    (["{state}", "{out}", "--from", "torch", "--to", "tf", "--depthwise", "conv1.weight",
      "--groups", "conv1.weight=3"], r"conv1.weight \(8, 3, 3, 2\): .*has I=1, got I=3"),
    (["{state}", "{out}", "--from", "torch", "--to", "tf", "--groups", "conv1.*=two"],
     r"--groups 'conv1.\*=two': G must be an int >= 1"),
    (["{state}", "{out}", "--from", "torch", "--to", "tf", "--groups", "conv1"],
     r"--groups 'conv1' must be GLOB=G"),
    (["{state}", "{out}", "--from", "torch", "--to", "flax", "--transposed", "up.*",
      "--groups", "up.*=2"], r"flax's transposed convolution takes no groups"),
    (["{state}", "{out}", "--from", "torch", "--to", "tf", "--transposed", "dw.*",
      "--depthwise", "dw.*", "--groups", "dw.*=3"],
     r"'dw.weight' matches both --transposed and --depthwise"),
    (["{state}", "{out}", "--from", "OIHW", "--to", "HWIO"],
     r"conv1d.weight \(4, 2, 3\): rank 3 does not fit layout 'OIHW'"),
    (["{state}", "{out}", "--from", "OIHW", "--to", "HWCM", "--exclude", "conv1d.*"],
     r"splits O=8 into C channels.*--groups GLOB=G"),
    (["{state}", "{out}", "--from", "OIHW", "--to", "HWIO", "--depthwise", "dw.*"],
     r"--depthwise applies to framework names"),
    (["{state}", "{out}", "--from", "NCHW", "--to", "NHWC", "--dense"],
     r"--dense apply to kernels"),
    (["{state}", "{outnpy}", "--from", "torch", "--to", "tf"], r"must end in .npz like IN"),
    (["{state}", "{nodir}", "--from", "torch", "--to", "tf"], r"directory .* does not exist"),
    (["{garbage}", "{out}", "--from", "torch", "--to", "tf"],
     r"IN '.*garbage.npz' is not a readable .npz array file"),
    (["{textnpy}", "{outnpy}", "--from", "NCHW", "--to", "NHWC"],
     r"is not a readable .npy array file"),
    (["{txt}", "{out}", "--from", "torch", "--to", "tf"], r"is not an .npz or .npy file"),
    (["{npy3}", "{outnpy}", "--from", "NCHW", "--to", "NHWC"],
     r"rank 3 does not fit layout NCHW"),
]


@pytest.mark.parametrize(("argv", "message"), ERROR_CASES)
def test_errors_exit_2_one_line_output_untouched(argv, message, state_file, existing_out,
                                                  tmp_path, run):
    (tmp_path / "garbage.npz").write_bytes(b"PK\x03\x04 not really a zip")
    (tmp_path / "text.npy").write_text("hello")
    (tmp_path / "notes.txt").write_text("hello")
    np.save(tmp_path / "three.npy", rand((1, 2, 3)))
    outnpy = tmp_path / "out.npy"
    outnpy.write_bytes(b"previous npy")
    paths = {
        "state": state_file, "out": existing_out, "outnpy": outnpy,
        "missing": tmp_path / "missing.npz", "nodir": tmp_path / "no" / "such" / "o.npz",
        "garbage": tmp_path / "garbage.npz", "textnpy": tmp_path / "text.npy",
        "txt": tmp_path / "notes.txt", "npy3": tmp_path / "three.npy",
    }
    before = set(os.listdir(tmp_path))
    status, stdout, err = run(*[a.format(**{k: str(v) for k, v in paths.items()}) for a in argv])
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("layoutops convert: error: ")
    import re

    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in err and stdout == ""
    assert existing_out.read_bytes() == b"previous content"
    assert outnpy.read_bytes() == b"previous npy"
    assert set(os.listdir(tmp_path)) == before  # no temporary file left behind


def test_error_via_subprocess_has_no_traceback(tmp_path, existing_out):
    proc = run_subprocess(str(tmp_path / "nope.npz"), str(existing_out), "--from", "torch",
                          "--to", "tf")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"layoutops convert: error: IN {str(tmp_path / 'nope.npz')!r}: no such file"
    ]
    assert existing_out.read_bytes() == b"previous content"


def test_failure_while_writing_leaves_output_untouched(state_file, existing_out, tmp_path,
                                                       monkeypatch, run):
    calls = []
    real = np.lib.format.write_array

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", failing)
    before = set(os.listdir(tmp_path))
    status, _, err = run(str(state_file), str(existing_out), "--from", "torch", "--to", "tf",
                         "--exclude", "dw.*")
    assert status == 2 and "No space left on device" in err
    assert existing_out.read_bytes() == b"previous content"
    assert set(os.listdir(tmp_path)) == before


def test_overwriting_in_place_and_array_named_file(tmp_path, run):
    path = tmp_path / "w.npz"
    np.savez(path, **{"conv.weight": rand((2, 1, 3, 3)), "other": rand((2,))})
    # also names np.savez cannot take as keywords survive the rewrite
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    status, _, err = run(str(path), str(path), "--from", "onnx", "--to", "tflite")
    assert status == 0, err
    got = np.load(path)
    np.testing.assert_array_equal(got["conv.weight"],
                                  arrays["conv.weight"].transpose(0, 2, 3, 1))
    src = tmp_path / "named.npz"
    import zipfile

    with zipfile.ZipFile(src, "w") as zf:
        for name in ("file", "allow_pickle"):
            with zf.open(name + ".npy", "w") as m:
                np.lib.format.write_array(m, np.arange(3))
    out = tmp_path / "named_out.npz"
    status, stdout, err = run(str(src), str(out), "--from", "torch", "--to", "tf")
    assert status == 0, err
    assert sorted(np.load(out).files) == ["allow_pickle", "file"]
    assert "nothing converted" in stdout


def test_add_arguments_sets_run():
    parser = argparse.ArgumentParser()
    cli_convert.add_arguments(parser)
    args = parser.parse_args(["a.npz", "b.npz", "--from", "torch", "--to", "tf"])
    assert args.run is cli_convert.run and args.kernels is None and args.dense is False
