"""Smoke tests of the benchmark harness (``layoutops bench``): tiny shapes, no timing asserts.

They check that the suite runs, that its JSON has the documented fields, that a wrong result
is caught by the output check, that the workspace harness works in a fresh process, and that
the page writer renders the JSON. The real measurements are taken by hand (docs/performance.md).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import layoutops as lo
from layoutops import bench
from layoutops.cli import main

ROOT = Path(__file__).resolve().parents[1]
ROW_KEYS = {
    "id", "family", "name", "layout", "params", "input_shape", "output_shape", "flops",
    "status", "check", "notes", "ours_s", "torch_s", "ort_s", "ratio_torch", "ratio_ort",
}  # fmt: skip


def _run_bench(tmp_path, *extra) -> tuple[int, dict]:
    out = tmp_path / "bench.json"
    argv = ["bench", "--quick", "--repeat", "1", "--json", str(out), *extra]
    status = main(argv)
    return status, json.loads(out.read_text())


def test_flops_formula_matches_bench_md():
    # resnet 3x3: 8x64x56x56 -> 64, k3 p1 -> 2 * N * C_out * H_out * W_out * C_in * 9
    case = bench.select_cases("conv:resnet-3x3")[0]
    assert bench.flops(case) == 2 * 8 * 64 * 56 * 56 * 64 * 9
    # grouped: C_in / groups input channels per output channel
    grouped = bench.select_cases("conv:grouped")[0]
    assert bench.flops(grouped) == 2 * 8 * 256 * 14 * 14 * (256 // 32) * 9
    # transposed: every input position meets C_out / groups * k*k weights
    ct = bench.select_cases("conv_transpose:upsample-k4-s2")[0]
    assert ct.output_spatial == (64, 64)
    assert bench.flops(ct) == 2 * 8 * 64 * 32 * 32 * 32 * 16
    assert bench.flops(bench.select_cases("max_pool:*")[0]) is None


def test_every_bench_md_case_is_present_with_a_quick_version():
    ids = bench.case_ids()
    assert len(ids) == 15 and len(set(ids)) == 15
    for case in (*bench.CASES, *bench.WORKSPACE_CASES):
        small = bench.quick(case)
        assert (small.family, small.kernel, small.stride, small.padding, small.dilation) == (
            case.family, case.kernel, case.stride, case.padding, case.dilation,
        )  # fmt: skip
        assert small.channels % small.groups == 0 and small.c_out % small.groups == 0
        assert math.prod(small.input_shape("channels_first")) <= 300_000
        assert min(small.output_spatial) >= 1
    assert bench.GEMM_BOUND <= set(ids)


def test_select_cases_globs():
    assert [c.id for c in bench.select_cases("conv:1-d,conv:3-d")] == ["conv:1-d", "conv:3-d"]
    assert {c.family for c in bench.select_cases("*pool*")} == {
        "max_pool", "avg_pool", "global_avg_pool",
    }  # fmt: skip
    assert bench.select_cases("no-such-case") == []


def test_quick_suite_without_peers_json_fields(tmp_path):
    status, result = _run_bench(tmp_path, "--no-peers", "--cases", "conv:resnet-3x3,max_pool:*")
    assert status == 0
    assert {"machine", "settings", "gemm", "cases", "summary"} <= set(result)
    assert result["settings"]["peers"] == [] and result["settings"]["quick"] is True
    assert result["settings"]["settle"] == 0.0  # --quick: no pause between samples
    assert result["settings"]["warm"] == 0.0  # ... and no untimed warm calls
    assert result["gemm"]["gflops"] > 0
    assert result["machine"]["cpu"] and result["machine"]["numpy"] == np.__version__
    rows = result["cases"]
    assert [(r["id"], r["layout"]) for r in rows] == [
        ("conv:resnet-3x3", "channels_first"),
        ("conv:resnet-3x3", "channels_last"),
        ("max_pool:3x3-s2", "channels_first"),
        ("max_pool:3x3-s2", "channels_last"),
    ]
    for r in rows:
        assert ROW_KEYS <= set(r)
        assert r["torch_s"] is None and r["ratio_torch"] is None
        available = hasattr(lo, r["family"])
        assert r["status"] == ("ok" if available else "not available")
        assert (r["ours_s"] is not None and r["ours_s"] > 0) == available
    conv_rows = [r for r in rows if r["family"] == "conv" and r["ours_s"]]
    for r in conv_rows:
        # the GEMM reference is timed among the case's own interleaved samples
        assert r["gemm_gflops"] > 0
        assert r["gemm_fraction"] == pytest.approx(r["ours_gflops"] / r["gemm_gflops"])
    assert set(result["summary"]["targets"]) >= {"median GEMM efficiency >= 0.6"}


def test_small_suite_runs_every_case_without_targets(tmp_path):
    status, result = _run_bench(tmp_path, "--suite", "small", "--no-peers", "--layout",
                                "channels_last")
    assert status == 0
    assert result["settings"]["suite"] == "small"
    assert [r["id"] for r in result["cases"]] == bench.case_ids(bench.SMALL_CASES)
    assert all(r["status"] == "ok" and r["ours_s"] > 0 for r in result["cases"])
    assert [r["input_shape"][0] for r in result["cases"]] == [1] * len(bench.SMALL_CASES)
    assert result["summary"]["targets"] == {}  # BENCH.md's targets are for its suite


def test_small_suite_cases_differ_from_the_bench_md_ones():
    ids = bench.case_ids(bench.SMALL_CASES)
    assert len(set(ids)) == len(ids) and not set(ids) & set(bench.case_ids())
    assert {c.family for c in bench.SMALL_CASES} >= {"conv", "conv_transpose", "max_pool"}


def test_quick_suite_against_torch_checks_outputs(tmp_path):
    pytest.importorskip("torch")
    status, result = _run_bench(tmp_path, "--cases", "conv:depthwise,conv_transpose:*k2*")
    assert status == 0
    for r in result["cases"]:
        assert r["torch_s"] > 0
        if r["ours_s"] is not None:
            assert r["status"] == "ok"
            assert r["check"]["torch"] <= 1e-4
            assert r["ratio_torch"] == pytest.approx(r["ours_s"] / r["torch_s"])
            if "ort" in r["check"]:
                assert r["check"]["ort"] <= 1e-4
    if any(r["ratio_torch"] for r in result["cases"]):
        assert result["summary"]["torch_all"]["n"] >= 1


def test_a_wrong_result_is_reported_as_mismatch(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    if not hasattr(lo, "conv"):
        pytest.skip("lo.conv not available yet")
    real_conv = lo.conv

    def off_by_one_pixel(*args, **kwargs):
        out = real_conv(*args, **kwargs)
        out.flat[out.size // 2] += 1.0
        return out

    monkeypatch.setattr(lo, "conv", off_by_one_pixel)
    status, result = _run_bench(tmp_path, "--cases", "conv:pointwise", "--layout", "channels_last")
    assert status == 1
    (row,) = result["cases"]
    assert row["status"] == "MISMATCH" and row["check"]["torch"] > 1e-3
    assert "MISMATCH" in capsys.readouterr().err


def test_bench_cli_errors_and_list():
    proc = subprocess.run(
        [sys.executable, "-m", "layoutops", "bench", "--cases", "nothing-matches", "--no-peers"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "no case matches" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "layoutops", "bench", "--list"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0 and "conv:resnet-stem" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "layoutops", "bench", "--settle", "-1", "--no-peers"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "--settle must be >= 0" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "layoutops", "bench", "--warm", "-1", "--no-peers"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "--warm must be >= 0" in proc.stderr


def test_time_interleaved_settles_before_every_sample(monkeypatch):
    from layoutops import bench

    pauses = []
    monkeypatch.setattr(bench.time, "sleep", pauses.append)
    r = bench.time_interleaved({"a": lambda: None, "b": lambda: None}, repeat=3, settle=0.25)
    assert len(r["a"]["samples"]) == 3 and pauses == [0.25] * 6


def test_time_interleaved_warms_up_untimed_before_every_sample(monkeypatch):
    from layoutops import bench

    clock = [0.0]
    calls = []

    def tick():
        clock[0] += 0.01
        return clock[0]

    def fn():
        calls.append(clock[0])

    monkeypatch.setattr(bench.time, "perf_counter", tick)
    monkeypatch.setattr(bench.time, "sleep", lambda s: None)
    r = bench.time_interleaved({"a": fn}, repeat=2, settle=0.25, warm=0.035)
    # calibration: one call; each sample: warm calls until 0.035 s have passed on the fake
    # clock (3 calls: each loop test reads the clock once, 0.01 s), then one timed call
    assert len(calls) == 1 + 2 * (3 + 1)
    assert r["a"]["number"] == 1 and len(r["a"]["samples"]) == 2


def test_workspace_harness_in_a_fresh_process(tmp_path):
    case = bench.quick(bench.select_cases("conv:3x3*", bench.WORKSPACE_CASES)[0])
    result = bench.run_workspace([case], ["channels_last"], log=lambda msg: None)
    (row,) = result["cases"]
    if not hasattr(lo, "conv"):
        assert row["status"].startswith("not available")
        return
    assert row["status"] == "ok", row
    assert row["torch_imported"] is False
    assert row["output_shape"] == list(case.output_shape("channels_last"))
    assert row["input_bytes"] >= math.prod(case.input_shape("channels_last")) * 4
    assert row["peak_rss"] >= row["baseline_rss"]
    assert row["workspace_bytes"] == (
        row["peak_rss"] - row["baseline_rss"] - row["input_bytes"] - row["output_bytes"]
    )


def test_performance_page_from_the_json(tmp_path):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "perf.png"
    status, result = _run_bench(tmp_path, "--no-peers", "--cases", "conv:1-d", "--plot", str(plot))
    assert status == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ws = {
        "limit": 64 * 2**20,
        "cases": [
            {"id": "conv:x", "layout": "channels_first", "params": "p", "status": "ok",
             "input_bytes": 2**20, "output_bytes": 2**20, "peak_rss": 2**27,
             "workspace_bytes": 3 * 2**20, "workspace_mib": 3.0, "seconds": 0.5},
            {"id": "max_pool:y", "layout": "channels_last", "params": "q",
             "status": "not available (AttributeError)"},
        ],
    }  # fmt: skip
    (tmp_path / "ws.json").write_text(json.dumps(ws))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "write_performance_md.py"),
         str(tmp_path / "bench.json"), str(tmp_path / "ws.json")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    page = proc.stdout
    assert page.startswith("# Performance")
    for heading in ("## Machine", "## Targets", "## Results", "## Workspace", "## How to"):
        assert heading in page
    assert result["machine"]["cpu"] in page
    assert "| conv:1-d |" in page and "| conv:x |" in page and "not available" in page
    assert ">>>" not in page  # docs/*.md run as doctests
