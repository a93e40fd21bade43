"""Write docs/performance.md from the JSON of ``layoutops bench`` (and of ``--workspace``).

Usage::

    layoutops bench --json out.json --plot docs/performance.png
    layoutops bench --workspace --json workspace.json
    python benchmarks/write_performance_md.py out.json workspace.json > docs/performance.md

Options: ``--notes FILE`` inserts hand-written explanations (Markdown) into the section
"Where we are still slower, and why"; ``--plot NAME`` is the image the page links to
(default ``performance.png``, next to the page).

Uses only the standard library, so it runs anywhere the JSON files are.
"""

from __future__ import annotations

import argparse
import json
import sys

MiB = 2**20
LAYOUT_NAMES = {"channels_first": "CF", "channels_last": "CL"}
LIMIT_MIB = 64


def ms(seconds):
    return "–" if seconds is None else f"{seconds * 1e3:.2f}"


def num(value, digits=2):
    return "–" if value is None else f"{value:.{digits}f}"


def machine_section(bench: dict) -> list[str]:
    m = bench["machine"]
    g = bench["gemm"]
    s = bench["settings"]
    blas = m.get("blas") or {}
    blas_text = " ".join(str(blas[k]) for k in ("name", "version") if blas.get(k)) or "unknown"
    if blas.get("openblas configuration"):
        blas_text += f" (`{blas['openblas configuration'].strip()}`)"
    env = ", ".join(f"`{k}={v}`" for k, v in (m.get("env") or {}).items()) or "none set"
    lines = [
        "## Machine and software",
        "",
        f"- CPU: {m['cpu']}; {m['usable_cpus']} usable cores of {m['logical_cpus']} logical "
        f"CPUs; SIMD: {', '.join(m.get('simd') or []) or 'n/a'}; memory {m.get('memory_gib')} GiB",
        f"- {m['platform']}, Python {m['python']}",
        f"- NumPy {m['numpy']}, BLAS: {blas_text}",
        f"- numexpr {m.get('numexpr', '?')} ({m.get('numexpr_threads', '?')} threads), "
        f"opt_einsum {m.get('opt_einsum', '?')}, layoutops {m.get('layoutops', '?')}"
        + (f" (commit `{m['git_commit']}`)" if m.get("git_commit") else ""),
        f"- PyTorch {m.get('torch') or 'not installed'}"
        + (f" ({m['torch_threads']} threads)" if m.get("torch_threads") else "")
        + f", onnxruntime {m.get('onnxruntime') or 'not installed'}"
        + f" ({s['threads']} intra-op threads)",
        f"- thread environment variables: {env}",
        f"- measured {m['date_utc']} UTC; load average before "
        f"{num((m.get('loadavg') or [None])[0])}, after "
        f"{num((m.get('loadavg_after') or [None])[0])}",
        f"- float32 GEMM rate (`np.matmul`, {g['n']}x{g['n']}, median; each conv case also "
        'times it among its own samples, and its "of GEMM" uses that): '
        f"**{g['gflops']:.1f} GFLOP/s** (before the cases {g['before_gflops']:.1f}, after "
        f"{g['after_gflops']:.1f}; the higher is the reference)",
        f"- {s['repeat']} interleaved samples per contestant and case, each at least "
        f"{s['min_time']} s, each after a {s.get('settle', 0)} s pause (`--settle`: the "
        "previous contestant's spinning BLAS/OpenMP threads go to sleep first) and "
        f"{s.get('warm', 0)} s of untimed calls (`--warm`: the cores are awake again); float32"
        + (" — QUICK MODE, tiny shapes" if s.get("quick") else ""),
        "",
    ]
    return lines


def targets_section(bench: dict) -> list[str]:
    summary = bench["summary"]
    t = summary.get("torch_all")
    rows = [
        "## Targets",
        "",
        "| target | required | aim | measured | met |",
        "|---|---|---|---|---|",
    ]

    def met(value, bound):
        return "–" if value is None else ("yes" if value <= bound else "**no**")

    if t:
        rows.append(
            f"| ours / PyTorch, geometric mean over all cases and layouts | <= 1.25 | <= 1.0 | "
            f"{t['geomean']:.2f} | {met(t['geomean'], 1.25)} |"
        )
        rows.append(
            f"| ours / PyTorch, worst case | <= 3.0 | <= 2.5 | {t['max']:.2f} "
            f"({t['max_case']}) | {met(t['max'], 3.0)} |"
        )
    else:
        rows.append("| ours / PyTorch | <= 1.25 | <= 1.0 | PyTorch not measured | – |")
    cm = summary.get("cl_over_cf_max")
    if cm:
        rows.append(
            f"| channels-last / channels-first, worst case | <= 1.2 | | {cm['value']:.2f} "
            f"({cm['case']}) | {met(cm['value'], 1.2)} |"
        )
    ge = summary.get("gemm_efficiency_median")
    if ge is not None:
        ok = "yes" if ge >= 0.6 else "**no**"
        rows.append(
            f"| median conv GEMM efficiency, GEMM-bound cases | >= 0.6 | | {ge:.2f} | {ok} |"
        )
    for lay in ("channels_first", "channels_last"):
        s = summary.get(f"torch_{lay}")
        if s:
            rows.append(
                f"| ours / PyTorch, geometric mean, {lay.replace('_', '-')} only | | | "
                f"{s['geomean']:.2f} (max {s['max']:.2f}) | |"
            )
    o = summary.get("ort_all")
    if o:
        rows.append(
            f"| ours / onnxruntime (NCHW model), geometric mean | | | {o['geomean']:.2f} "
            f"(max {o['max']:.2f}, {o['max_case']}) | |"
        )
    rows.append("")
    return rows


def results_section(bench: dict, plot: str | None) -> list[str]:
    cl_cf = bench["summary"].get("cl_over_cf", {})
    lines = ["## Results", ""]
    if plot:
        lines += [f"![ours / peer time per case and layout]({plot})", ""]
    lines += [
        "Times are medians in milliseconds; a ratio below 1 means layoutops is faster. "
        '"of GEMM" is the achieved GFLOP/s over the machine\'s float32 GEMM rate above. '
        "CL/CF is our channels-last time over our channels-first time.",
        "",
        "| case | shape and parameters | layout | ours ms | PyTorch ms | ours/PyTorch | "
        "onnxruntime ms | ours/ort | GFLOP/s | of GEMM | PyTorch of GEMM | CL/CF | check |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in bench["cases"]:
        clcf = cl_cf.get(r["id"], {}).get("ours") if r["layout"] == "channels_last" else None
        status = r["status"]
        if status == "ok" and r.get("check"):
            status = "ok (max rel. err " + f"{max(r['check'].values()):.0e})"
        lines.append(
            f"| {r['id']} | {r['params']} | {LAYOUT_NAMES[r['layout']]} | {ms(r['ours_s'])} | "
            f"{ms(r.get('torch_s'))} | {num(r.get('ratio_torch'))} | {ms(r.get('ort_s'))} | "
            f"{num(r.get('ratio_ort'))} | {num(r.get('ours_gflops'), 1)} | "
            f"{num(r.get('gemm_fraction'))} | {num(r.get('torch_gemm_fraction'))} | "
            f"{num(clcf)} | {status} |"
        )
    lines.append("")
    return lines


def workspace_section(ws: dict | None) -> list[str]:
    lines = ["## Workspace", ""]
    if not ws:
        return lines + ["Not measured in this run (`layoutops bench --workspace`).", ""]
    limit = ws.get("limit") or LIMIT_MIB * MiB
    lines += [
        "Workspace = peak RSS − (RSS after `import layoutops` and a tiny warm-up call of the "
        "same op) − input bytes − output bytes, each case in a fresh process that never "
        f"imports torch. Limit: {limit / MiB:.0f} MiB (the default).",
        "",
        "| case | shape and parameters | layout | input MiB | output MiB | peak RSS MiB | "
        "workspace MiB | time s | within limit |",
        "|---|---|---|--:|--:|--:|--:|--:|---|",
    ]
    for r in ws["cases"]:
        lay = LAYOUT_NAMES.get(r["layout"], r["layout"])
        if "workspace_mib" not in r:
            lines.append(f"| {r['id']} | {r.get('params', '')} | {lay} | | | | | | {r['status']} |")
            continue
        ok = "yes" if r["workspace_bytes"] <= limit else "**no**"
        lines.append(
            f"| {r['id']} | {r['params']} | {lay} | {r['input_bytes'] / MiB:.0f} | "
            f"{r['output_bytes'] / MiB:.0f} | {r['peak_rss'] / MiB:.0f} | "
            f"{r['workspace_mib']:.1f} | {r['seconds']:.2f} | {ok} |"
        )
    lines.append("")
    return lines


def slower_section(bench: dict, notes: str | None) -> list[str]:
    lines = ["## Where we are still slower, and why", ""]
    rows = [r for r in bench["cases"] if r.get("ratio_torch") is not None]
    slow = sorted((r for r in rows if r["ratio_torch"] > 1.0), key=lambda r: -r["ratio_torch"])
    if not rows:
        lines.append("PyTorch was not measured, so there is no comparison in this run.")
    elif not slow:
        lines.append("No case is slower than PyTorch in this run.")
    else:
        lines.append("Cases slower than PyTorch in this run, worst first:")
        lines.append("")
        for r in slow:
            text = (
                f"- {r['id']} {LAYOUT_NAMES[r['layout']]} ({r['params']}): "
                f"{r['ratio_torch']:.2f}x PyTorch"
            )
            if r.get("gemm_fraction") is not None and r.get("torch_gemm_fraction") is not None:
                text += (
                    f"; we reach {r['gemm_fraction']:.2f} of the GEMM rate, PyTorch "
                    f"{r['torch_gemm_fraction']:.2f}"
                )
            elif r["family"] in ("max_pool", "avg_pool", "global_avg_pool"):
                text += "; memory-bound pooling"
            lines.append(text)
    unavailable = [r for r in bench["cases"] if r["ours_s"] is None]
    if unavailable:
        lines.append("")
        lines.append(
            "Not measured (op missing or failing): "
            + ", ".join(
                f"{r['id']} {LAYOUT_NAMES[r['layout']]} ({r['status']})" for r in unavailable
            )
        )
    if notes:
        lines += ["", notes.strip()]
    lines.append("")
    return lines


def method_section() -> list[str]:
    return [
        "## How to reproduce",
        "",
        "On a quiet machine (no other jobs: the numbers are wall-clock times on shared cores):",
        "",
        "```",
        'pip install -e ".[bench]"        # torch==2.13.0 (CPU), onnxruntime, matplotlib',
        "layoutops bench --json out.json --plot docs/performance.png",
        "layoutops bench --workspace --json workspace.json",
        "python benchmarks/write_performance_md.py out.json workspace.json \\",
        "    --notes benchmarks/performance_notes.md > docs/performance.md",
        "```",
        "",
        "`layoutops bench --help` lists the options (`--cases GLOB`, `--repeat N`, "
        "`--layout`, `--threads`, `--algorithm`, `--no-peers`, `--quick`, `--list`).",
        "",
        "## Method",
        "",
        "- Every case is run by each contestant once and the outputs are compared (layoutops "
        "against PyTorch and onnxruntime, max |difference| / max(|reference|, 1) <= 1e-4) "
        "before anything is timed; a disagreement is reported as MISMATCH.",
        "- Then one warm-up call each, then samples taken in turn (ours, PyTorch, onnxruntime, "
        "ours, ...); the median is reported. Calls are repeated within a sample until it lasts "
        "at least `--min-time`.",
        "- PyTorch runs on `torch.set_num_threads(--threads)` (default: the usable cores) under "
        "`torch.inference_mode()`, in the same layout: `x.contiguous()` for channels-first, "
        "`memory_format=torch.channels_last` (`channels_last_3d`) for channels-last, the weight "
        "in the same memory format. PyTorch has no channels-last format for 1-D tensors: "
        "there it gets an `(N, L, C)` array viewed as `(N, C, L)`.",
        "- onnxruntime (CPU provider, all graph optimizations, `intra_op_num_threads` = "
        "`--threads`, weights as initializers) has NCHW standard ops only; both layouts are "
        "compared with the same NCHW model, so its channels-last column is its NCHW time.",
        "- layoutops gets the weight in its default kernel layout for the activation layout "
        "(`OIHW` / `HWIO`, transposed conv `IOHW` / `HWOI`); no bias anywhere. NumPy's BLAS "
        "threads follow `OPENBLAS_NUM_THREADS` (default: all cores); numexpr gets `--threads`.",
        "- GFLOP/s counts `2 * N * C_out * prod(out) * C_in / groups * prod(k)` (transposed "
        "conv: over the input positions), against a 1024x1024 float32 `np.matmul` measured in "
        "the same run: timed as one more contestant among each conv case's interleaved "
        "samples, so that it sees the same machine load (the headline rate above is timed "
        "before and after the cases). The GEMM-bound cases of the efficiency target are "
        "resnet stem, resnet 3x3, resnet 3x3 stride 2, late 3x3, pointwise, 1-D and 3-D "
        "(both layouts).",
        "- Workspace: peak RSS read from `VmHWM` in `/proc/self/status` after resetting it to "
        "the current RSS (writing `5` to `/proc/self/clear_refs`, Linux >= 4.0) once the "
        "inputs exist; the baseline is `VmRSS` after import and a tiny warm-up call of the "
        "same op with the same channels. Page-granular, so about +-1 MiB; first use of BLAS "
        "threads during the big call (their packing buffers) counts as workspace.",
        "",
    ]


def render(
    bench: dict,
    ws: dict | None,
    *,
    notes=None,
    plot="performance.png",
) -> str:
    lines = [
        "# Performance",
        "",
        "layoutops against PyTorch CPU and onnxruntime on the benchmark suite "
        "(convolutions of ResNet-style networks, depthwise, grouped, dilated, 1-D and 3-D "
        "convolution, transposed convolution and pooling), every case in channels-first "
        "and channels-last layout, float32, on the machine described below. The numbers "
        "come from one run of `layoutops bench`; they are wall-clock medians, and on a "
        "shared machine they move between runs (see the note on noise below).",
        "",
    ]
    load = (bench["machine"].get("loadavg") or [0])[0]
    if bench["settings"].get("quick") or load > 0.5 * bench["machine"]["usable_cpus"]:
        lines += [
            "**Provisional numbers**: "
            + ("tiny `--quick` shapes; " if bench["settings"].get("quick") else "")
            + f"measured while the machine was busy (load average {load:.1f} on "
            f"{bench['machine']['usable_cpus']} cores), so the times are noisy. Re-run on a "
            'quiet machine as shown under "How to reproduce".',
            "",
        ]
    lines += machine_section(bench)
    lines += targets_section(bench)
    lines += results_section(bench, plot)
    lines += workspace_section(ws)
    lines += slower_section(bench, notes)
    lines += method_section()
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bench_json", help="JSON written by `layoutops bench --json`")
    parser.add_argument(
        "workspace_json", nargs="?", help="JSON written by `layoutops bench --workspace --json`"
    )
    parser.add_argument("--notes", help="Markdown file with the explanations of slow cases")
    parser.add_argument("--plot", default="performance.png", help="image the page links to")
    args = parser.parse_args(argv)
    try:
        with open(args.bench_json) as f:
            bench = json.load(f)
        ws = None
        if args.workspace_json:
            with open(args.workspace_json) as f:
                ws = json.load(f)
        notes = None
        if args.notes:
            with open(args.notes) as f:
                notes = f.read()
    except (OSError, json.JSONDecodeError) as e:
        print(f"write_performance_md: error: {e}", file=sys.stderr)
        return 2
    if "cases" not in bench or "summary" not in bench:
        print(
            f"write_performance_md: error: {args.bench_json} is not a bench JSON", file=sys.stderr
        )
        return 2
    sys.stdout.write(
        render(
            bench,
            ws,
            notes=notes,
            plot=args.plot or None,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
