"""The GEMM floor of the conv cases: how fast layoutops' kernels, as they are structured,
could run if everything but their GEMMs cost nothing.

For each conv / conv_transpose case of the suite (`layoutops.bench.CASES`) and layout, one
call of our op runs with every GEMM it issues recorded: ``np.matmul``, ``np.tensordot`` and
the accumulating ``cblas_?gemm`` of `layoutops.kernels.gemm`, with the operand views
themselves, the thread that ran it and the pipeline (`blas.pipelines` call) it ran in. The
replay then issues exactly those GEMMs again on the same operands, threads and BLAS thread
settings (pipelines: one thread per recorded pipeline thread, single-threaded BLAS; GEMMs
outside a pipeline: on the calling thread, BLAS as it is), with none of the column copies,
padding, bias, argument handling or output writes between them. The replay is timed like
the suite times the op, interleaved with the op itself and PyTorch.

``gemm_ms / torch_ms`` is then the best ratio to PyTorch our kernels can reach with NumPy's
BLAS on this machine: what is left after every copy is made free. The recorded GEMM work is
compared with the case's FLOP count, and a row whose recorded work differs by more than 1%
says so: less means a GEMM went unrecorded (``np.einsum`` / opt_einsum contractions, as in
grouped transposed convs, are not recorded; per-tap GEMMs skip the taps that fall into the
padding, a fraction of a percent), more means the strategy computes extra products
(transposed conv phases over zero-padded planes). Depthwise convs run no GEMM at all.

Usage::

    python benchmarks/gemm_floor.py [--cases GLOB] [--repeat N] [--json out.json]
        [--suite suite.json]

``--suite`` takes the JSON of a full ``layoutops bench`` run and also reports the suite's
geometric mean with each conv row's ratio replaced by its floor ratio (every other row as
measured there).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import threading
import time

import numpy as np

from layoutops import bench
from layoutops.kernels import blas, taps_1d, taps_flat
from layoutops.kernels import gemm as gemm_module
from layoutops.kernels.threads import get_num_threads

#: the GEMM that measures the machine's rate (as `layoutops bench`)
GEMM_N = 1024


class GemmRecorder:
    """Records the GEMMs issued while it is active (a context manager).

    ``calls`` holds ``(region, thread, kind, args, flops)``: ``region`` the number of the
    `blas.pipelines` call the GEMM ran in (``None`` outside one), ``thread`` the
    ``threading.get_ident()`` of the thread that issued it.

    Examples
    --------
    >>> import numpy as np
    >>> rec = GemmRecorder()
    >>> with rec:
    ...     _ = np.matmul(np.ones((2, 3), np.float32), np.ones((3, 4), np.float32))
    >>> rec.flops()
    48
    """

    def __init__(self):
        self.calls: list[tuple] = []
        self.main = threading.get_ident()
        self._region: int | None = None  # the pipeline being recorded
        self._regions = 0
        self._split: dict[int, bool] = {}
        self._lock = threading.Lock()
        self._saved: list[tuple] = []

    # -- recording -----------------------------------------------------------------------

    def _log(self, kind: str, args: tuple, flops: int) -> None:
        with self._lock:
            self.calls.append((self._region, threading.get_ident(), kind, args, flops))

    def __enter__(self):
        real_matmul, real_tensordot = np.matmul, np.tensordot
        real_gemm, real_pipelines = gemm_module.gemm, blas.pipelines

        def matmul(a, b, out=None, **kw):
            a, b = np.asarray(a), np.asarray(b)
            res = real_matmul(a, b, out=out, **kw)
            self._log("matmul", (a, b, out), 2 * np.size(res) * a.shape[-1])
            return res

        def tensordot(a, b, axes=2):
            a, b = np.asarray(a), np.asarray(b)
            res = real_tensordot(a, b, axes)
            self._log("tensordot", (a, b, axes), 2 * res.size * _contracted(a, axes))
            return res

        def gemm(a, b, c, accumulate):
            done = real_gemm(a, b, c, accumulate)
            if done:
                self._log("gemm", (a, b, c, accumulate), 2 * a.shape[0] * a.shape[1] * b.shape[1])
            return done

        def pipelines(fn, items, threads=None, flops=None):
            with self._lock:
                self._regions += 1
                self._region = self._regions
                # as `blas.pipelines` decides: several threads, BLAS held to one
                n = min(get_num_threads() if threads is None else threads, len(items))
                self._split[self._regions] = n > 1
            try:
                return real_pipelines(fn, items, threads, flops)
            finally:
                self._region = None

        self._saved = [
            (np, "matmul", real_matmul), (np, "tensordot", real_tensordot),
            (gemm_module, "gemm", real_gemm), (taps_1d, "gemm", taps_1d.gemm),
            (taps_flat, "gemm", taps_flat.gemm), (blas, "pipelines", real_pipelines),
        ]
        np.matmul, np.tensordot = matmul, tensordot
        gemm_module.gemm = taps_1d.gemm = taps_flat.gemm = gemm
        blas.pipelines = pipelines
        return self

    def __exit__(self, *exc):
        for owner, name, value in self._saved:
            setattr(owner, name, value)
        return False

    def flops(self) -> int:
        """The recorded GEMM work (multiply + add = 2)."""
        return sum(c[4] for c in self.calls)

    # -- replay --------------------------------------------------------------------------

    def replay_plan(self) -> list[tuple[bool, list[list[tuple]]]]:
        """The recorded calls as ``(split, per-thread call lists)``, one entry per pipeline
        (``split``: it ran on several threads) or run of calls outside pipelines, in the
        recorded order, the calling thread's list first."""
        groups: list[tuple[int | None, dict]] = []
        for region, thread, kind, args, _ in self.calls:
            if not groups or groups[-1][0] != region:
                groups.append((region, {}))
            groups[-1][1].setdefault(thread, []).append((kind, args))
        plan = []
        for region, lists in groups:
            order = sorted(lists, key=lambda t: t != self.main)
            plan.append((self._split.get(region, False), [lists[t] for t in order]))
        return plan

    def replayer(self):
        """A function that issues the recorded GEMMs again (see the module docstring)."""
        plan = self.replay_plan()

        def run_all(parts):
            for calls in parts:
                for kind, args in calls:
                    _issue(kind, args)

        def replay():
            for split, lists in plan:
                if split:
                    blas.pipelines(run_all, lists, len(lists))
                else:
                    run_all(lists)

        return replay


def _contracted(a: np.ndarray, axes) -> int:
    """The length of the sums `numpy.tensordot` makes (every result value is one)."""
    if isinstance(axes, int):
        return math.prod(a.shape[a.ndim - axes :])
    first = axes[0]
    return math.prod(a.shape[i] for i in ([first] if isinstance(first, int) else first))


def _issue(kind: str, args: tuple) -> None:
    if kind == "matmul":
        a, b, out = args
        np.matmul(a, b, out=out)
    elif kind == "tensordot":
        a, b, axes = args
        np.tensordot(a, b, axes)
    else:
        gemm_module.gemm(*args)


def floor_case(case: bench.Case, layout: str, repeat: int, settle: float, warm: float,
               torch=None) -> dict:
    """Time our op, its GEMMs alone and PyTorch on one case and layout."""
    x, x_cf, w, w_t = bench._operands(case, layout)
    ours = bench._ours(case, layout, x, w, None)
    ours()  # warm: plans, scratch
    rec = GemmRecorder()
    with rec:
        ours()
    a, b, c = bench._gemm_operands(GEMM_N)
    fns = {"ours": ours, "gemms": rec.replayer(),
           "gemm": lambda: np.matmul(a, b, out=c)}  # the machine's GEMM rate, as the suite
    if torch is not None:
        fns["torch"], _, _ = bench._torch_call(torch, case, layout, x_cf, w_t)
    t = bench.time_interleaved(fns, repeat, min_time=0.02, warmup=1, settle=settle, warm=warm)
    row = {
        "id": case.id, "layout": layout, "params": case.describe(),
        "flops": bench.flops(case), "recorded_flops": rec.flops(),
        "gemm_calls": len(rec.calls),
        "pipelines": len({c[0] for c in rec.calls if c[0] is not None}),
        **{f"{k}_s": v["median"] for k, v in t.items()},
    }
    rate = 2.0 * GEMM_N**3 / row.pop("gemm_s") / 1e9
    row["gemm_gflops"] = rate
    row["gemm_fraction"] = row["flops"] / row["ours_s"] / 1e9 / rate
    row["gemm_fraction_floor"] = (
        row["flops"] / row["gemms_s"] / 1e9 / rate if rec.calls else None
    )
    if "torch_s" in row:
        row["ratio_torch"] = row["ours_s"] / row["torch_s"]
        if rec.calls:
            row["floor_ratio_torch"] = row["gemms_s"] / row["torch_s"]
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="conv:*,conv_transpose:*")
    parser.add_argument("--layout", default="both",
                        choices=("both", "channels_first", "channels_last"))
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--settle", type=float, default=0.25)
    parser.add_argument("--warm", type=float, default=0.1)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--suite", metavar="PATH", help="JSON of a full `layoutops bench` run")
    args = parser.parse_args(argv)
    cases = [c for c in bench.select_cases(args.cases)
             if c.family in ("conv", "conv_transpose")]
    if not cases:
        parser.error(f"no conv case matches {args.cases!r}")
    torch = None
    if not args.no_torch:
        try:
            import torch
            torch.set_num_threads(get_num_threads())
        except ImportError:
            print("torch not installed: ratios to PyTorch are left out", file=sys.stderr)
    layouts = bench.LAYOUTS if args.layout == "both" else (args.layout,)
    rows = []
    total = len(cases) * len(layouts)
    for case in cases:
        for layout in layouts:
            t0 = time.perf_counter()
            row = floor_case(case, layout, args.repeat, args.settle, args.warm, torch)
            rows.append(row)
            print(_line(len(rows), total, row, time.perf_counter() - t0), flush=True)
    summary = _summary(rows, args.suite)
    for line in summary["lines"]:
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "summary": summary}, f, indent=1)
    return 0


def _line(i: int, total: int, row: dict, seconds: float) -> str:
    text = (
        f"[{i}/{total}] {row['id']:<32} {_short(row['layout'])}  ours "
        f"{row['ours_s'] * 1e3:7.2f} ms  GEMMs alone {row['gemms_s'] * 1e3:7.2f} ms "
        f"({row['gemms_s'] / row['ours_s']:.0%})"
    )
    if "torch_s" in row:
        text += f"  torch {row['torch_s'] * 1e3:6.2f} ms  ratio {row['ratio_torch']:.2f}"
        if "floor_ratio_torch" in row:
            text += f" floor {row['floor_ratio_torch']:.2f}"
    text += f"  of GEMM {row['gemm_fraction']:.2f}"
    if not row["gemm_calls"]:
        text += "  [no GEMMs: a direct kernel]"
    else:
        text += f" floor {row['gemm_fraction_floor']:.2f}"
        if abs(row["recorded_flops"] - row["flops"]) > 0.01 * row["flops"]:
            text += f"  [recorded {row['recorded_flops'] / row['flops']:.2f}x the case's FLOPs]"
    return text + f"  ({seconds:.0f} s)"


def _short(layout: str) -> str:
    return "CF" if layout == "channels_first" else "CL"


def _geomean(values) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


def _summary(rows: list[dict], suite_path: str | None) -> dict:
    rates = [r["gemm_gflops"] for r in rows]
    summary: dict = {"lines": [
        f"float32 GEMM rate (1024^3 np.matmul, timed in each case): {min(rates):.0f}-"
        f"{max(rates):.0f} GFLOP/s"
    ]}
    direct = [r for r in rows if not r["gemm_calls"]]
    rows = [r for r in rows if r["gemm_calls"]]
    if direct:
        summary["lines"].append(
            "no GEMMs (direct kernels), left out below: "
            + ", ".join(f"{r['id']} {_short(r['layout'])}" for r in direct)
        )
    eff = [r["gemm_fraction_floor"] for r in rows if r["id"] in bench.GEMM_BOUND]
    if eff:
        summary["gemm_efficiency_median_floor"] = statistics.median(eff)
        measured = [r["gemm_fraction"] for r in rows if r["id"] in bench.GEMM_BOUND]
        summary["lines"].append(
            f"median GEMM efficiency over the GEMM-bound cases: {statistics.median(measured):.2f}"
            f", with every copy free {statistics.median(eff):.2f}"
        )
    with_torch = [r for r in rows if "floor_ratio_torch" in r]
    if with_torch:
        summary["floor_geomean"] = _geomean(r["floor_ratio_torch"] for r in with_torch)
        summary["lines"].append(
            f"ours / PyTorch over these {len(with_torch)} rows: geometric mean "
            f"{_geomean(r['ratio_torch'] for r in with_torch):.2f}, GEMMs alone "
            f"{summary['floor_geomean']:.2f}"
        )
    if suite_path and with_torch:
        with open(suite_path) as f:
            suite = json.load(f)
        floors = {(r["id"], r["layout"]): r["floor_ratio_torch"] for r in with_torch}
        ratios = [floors.get((r["id"], r["layout"]), r.get("ratio_torch"))
                  for r in suite["cases"]]
        ratios = [v for v in ratios if v]
        summary["suite_geomean_with_floors"] = _geomean(ratios)
        summary["lines"].append(
            f"suite geometric mean with these rows at their GEMM floor and the rest as in "
            f"{suite_path}: {summary['suite_geomean_with_floors']:.2f} over {len(ratios)} rows"
        )
    return summary


if __name__ == "__main__":
    sys.exit(main())
