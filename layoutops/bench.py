"""The benchmark suite (``layoutops bench``) and the workspace harness (``--workspace``).

The suite runs every case of the project's benchmark table (``BENCH.md``: ResNet-style
convolutions, depthwise, grouped, dilated, 1-D and 3-D convolution, transposed convolution and
pooling) in channels-first and channels-last layout, in float32, and times layoutops against
the peers that are installed:

- PyTorch CPU in the same layout: ``x.contiguous()`` for channels-first,
  ``memory_format=torch.channels_last`` (``channels_last_3d`` for 3-D) for channels-last. PyTorch
  has no channels-last memory format for 1-D tensors: there the input is an ``(N, L, C)``
  array viewed as ``(N, C, L)``, which is what a user holding NWC data would pass.
- onnxruntime (CPU provider) where it has the op (Conv, ConvTranspose, MaxPool, AveragePool,
  GlobalAveragePool). onnxruntime's standard ops are NCHW only, so both layouts are compared
  with the same NCHW model (weights as initializers): the ``ort`` column of a channels-last row
  is onnxruntime's NCHW time.

Method: for each case, every contestant is run once and its output checked against the
others (``ours`` against each peer, in the same logical layout; a mismatch is reported loudly
and makes the exit status 1), then once more as a warm-up that also fixes how many calls make
one sample (at least ``--min-time`` seconds), then the samples are taken interleaved
(ours, torch, ort, ours, torch, ort, ...) ``--repeat`` times and the median is reported,
with a pause of ``--settle`` seconds (default 0.25) before every sample: OpenBLAS's worker
threads spin for about 0.1-0.2 s after a multi-threaded GEMM (its ``THREAD_TIMEOUT``), and so
do other runtimes' pools, and a contestant sampled inside that window shares its cores with
them (layoutops's resnet 3x3 channels-last conv right after a 1024x1024 ``np.matmul``: 40 ms
with no pause, 0.1 s pause 40 ms, 0.2 s pause 24 ms). After the pause the contestant runs
untimed for ``--warm`` seconds (default 0.1) before its sample: a core that slept is slow to
come back (on the 2-core test VM the grouped conv of the suite took 5.6 ms per call in the
first calls after a 0.25 s sleep, 4.7 ms after 0.03 s of warm calls and 3.8 ms after 0.1 s,
its steady speed), and a sample of a few calls would time that wake-up instead of the op. The
ratio is ours / peer (below 1: we are faster). Conv and transposed conv also report GFLOP/s
(``2 * N * C_out * prod(out) * C_in / groups * prod(k)``, for the transposed conv counted over
the input positions) as a fraction of this machine's float32 GEMM rate, measured in the same
run with a 1024x1024 ``np.matmul``: timed as one more contestant in the interleaved samples of
each conv case (so it sees the same machine load as the case), and also before and after the
cases for the run's headline rate.

Threads: PyTorch (``torch.set_num_threads``), onnxruntime (``intra_op_num_threads``) and
numexpr get ``--threads`` (default: the cores this process may use). NumPy's BLAS is not
changed at run time: OpenBLAS uses every core unless ``OPENBLAS_NUM_THREADS`` is set before the
process starts; the JSON records it.

The workspace harness runs each case of the workspace list in a fresh Python process that
never imports torch; see `run_workspace`.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import functools
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Case",
    "CASES",
    "SMALL_CASES",
    "SUITES",
    "WORKSPACE_CASES",
    "GEMM_BOUND",
    "case_ids",
    "select_cases",
    "flops",
    "gemm_rate",
    "machine_info",
    "run_suite",
    "run_workspace",
    "add_arguments",
    "run",
]

LAYOUTS = ("channels_first", "channels_last")
_SHORT = {"channels_first": "CF", "channels_last": "CL"}
_ORT_OPS = {
    "conv": "Conv",
    "conv_transpose": "ConvTranspose",
    "max_pool": "MaxPool",
    "avg_pool": "AveragePool",
    "global_avg_pool": "GlobalAveragePool",
}
MiB = 2**20


# --------------------------------------------------------------------------------------------
# cases


@dataclass(frozen=True)
class Case:
    """One benchmark case: an op and its shapes, independent of the layout.

    ``family`` is the layoutops function timed (``conv``, ``conv_transpose``, ``max_pool``,
    ``avg_pool``, ``global_avg_pool``); sizes are logical (``channels`` is ``C_in``, ``spatial``
    the spatial sizes); ``kernel``, ``stride``, ``padding`` and ``dilation`` apply to every
    spatial axis.

    Examples
    --------
    >>> from layoutops.bench import Case
    >>> c = Case("conv", "tiny", 1, 4, (5, 5), out_channels=8, kernel=3, padding=1)
    >>> c.id, c.input_shape("channels_last"), c.output_spatial
    ('conv:tiny', (1, 5, 5, 4), (5, 5))
    """

    family: str
    name: str
    batch: int
    channels: int
    spatial: tuple[int, ...]
    out_channels: int | None = None
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1

    @property
    def id(self) -> str:
        """``family:name`` with the name lower-cased and blanks as ``-``."""
        return f"{self.family}:{self.name.lower().replace(' ', '-')}"

    @property
    def n_spatial(self) -> int:
        return len(self.spatial)

    @property
    def c_out(self) -> int:
        return self.channels if self.out_channels is None else self.out_channels

    def input_shape(self, layout: str) -> tuple[int, ...]:
        if layout == "channels_last":
            return (self.batch, *self.spatial, self.channels)
        return (self.batch, self.channels, *self.spatial)

    @property
    def output_spatial(self) -> tuple[int, ...]:
        k, s, p, d = self.kernel, self.stride, self.padding, self.dilation
        if self.family == "global_avg_pool":
            return (1,) * self.n_spatial
        if self.family == "conv_transpose":
            return tuple((n - 1) * s - 2 * p + d * (k - 1) + 1 for n in self.spatial)
        return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n in self.spatial)

    def output_shape(self, layout: str) -> tuple[int, ...]:
        if layout == "channels_last":
            return (self.batch, *self.output_spatial, self.c_out)
        return (self.batch, self.c_out, *self.output_spatial)

    def torch_weight_shape(self) -> tuple[int, ...] | None:
        """The weight in PyTorch/ONNX form (``OI...`` for conv, ``IO...`` transposed)."""
        ks = (self.kernel,) * self.n_spatial
        if self.family == "conv":
            return (self.c_out, self.channels // self.groups, *ks)
        if self.family == "conv_transpose":
            return (self.channels, self.c_out // self.groups, *ks)
        return None

    def describe(self) -> str:
        """Shapes and parameters in one short string."""
        sp = "x".join(map(str, self.spatial))
        text = f"{self.batch}x{self.channels}x{sp}"
        if self.family in ("conv", "conv_transpose"):
            text += f"->{self.c_out}"
        if self.family != "global_avg_pool":
            text += f" k{self.kernel}"
            for letter, value, default in (
                ("s", self.stride, 1),
                ("p", self.padding, 0),
                ("d", self.dilation, 1),
                ("g", self.groups, 1),
            ):
                if value != default:
                    text += f" {letter}{value}"
        return text


def _conv(name, n, c, sp, o, k, s=1, p=0, d=1, g=1):
    return Case("conv", name, n, c, sp, o, k, s, p, d, g)


CASES: tuple[Case, ...] = (
    _conv("resnet stem", 8, 3, (224, 224), 64, 7, s=2, p=3),
    _conv("resnet 3x3", 8, 64, (56, 56), 64, 3, p=1),
    _conv("resnet 3x3 stride 2", 8, 128, (28, 28), 256, 3, s=2, p=1),
    _conv("late 3x3", 8, 512, (7, 7), 512, 3, p=1),
    _conv("pointwise", 8, 128, (28, 28), 512, 1),
    _conv("depthwise", 8, 96, (112, 112), 96, 3, p=1, g=96),
    _conv("grouped", 8, 256, (14, 14), 256, 3, p=1, g=32),
    _conv("dilated", 4, 128, (32, 32), 128, 3, p=2, d=2),
    _conv("1-D", 16, 32, (8000,), 64, 7, p=3),
    _conv("3-D", 2, 8, (16, 32, 32), 16, 3, p=1),
    Case("conv_transpose", "upsample k4 s2", 8, 64, (32, 32), 32, 4, 2, 1),
    Case("conv_transpose", "upsample k2 s2", 8, 256, (14, 14), 128, 2, 2),
    Case("max_pool", "3x3 s2", 8, 64, (112, 112), None, 3, 2, 1),
    Case("avg_pool", "2x2 s2", 8, 128, (56, 56), None, 2, 2),
    Case("global_avg_pool", "global", 64, 1024, (7, 7), None, 7),
)
"""The cases of BENCH.md, in its order."""

GEMM_BOUND = frozenset(
    f"conv:{n}"
    for n in (
        "resnet-stem",
        "resnet-3x3",
        "resnet-3x3-stride-2",
        "late-3x3",
        "pointwise",
        "1-d",
        "3-d",
    )
)
"""The cases over which the median GEMM efficiency target is taken."""

# Tiny versions of every case (``--quick``): same op and parameters, small odd/even sizes.
_QUICK = {
    "conv:resnet-stem": dict(batch=1, spatial=(19, 20), out_channels=8),
    "conv:resnet-3x3": dict(batch=1, channels=8, spatial=(9, 10), out_channels=8),
    "conv:resnet-3x3-stride-2": dict(batch=1, channels=8, spatial=(9, 10), out_channels=16),
    "conv:late-3x3": dict(batch=2, channels=16, out_channels=16),
    "conv:pointwise": dict(batch=1, channels=8, spatial=(6, 5), out_channels=16),
    "conv:depthwise": dict(batch=1, channels=8, spatial=(9, 10), out_channels=8, groups=8),
    "conv:grouped": dict(batch=1, channels=16, spatial=(6, 5), out_channels=16, groups=4),
    "conv:dilated": dict(batch=1, channels=4, spatial=(9, 10), out_channels=4),
    "conv:1-d": dict(batch=2, channels=4, spatial=(33,), out_channels=8),
    "conv:3-d": dict(batch=1, channels=2, spatial=(5, 6, 7), out_channels=4),
    "conv_transpose:upsample-k4-s2": dict(batch=1, channels=8, spatial=(5, 6), out_channels=4),
    "conv_transpose:upsample-k2-s2": dict(batch=1, channels=8, spatial=(5, 6), out_channels=4),
    "max_pool:3x3-s2": dict(batch=1, channels=4, spatial=(11, 12)),
    "avg_pool:2x2-s2": dict(batch=1, channels=4, spatial=(10, 12)),
    "global_avg_pool:global": dict(batch=2, channels=16),
}

WORKSPACE_CASES: tuple[Case, ...] = (
    _conv("3x3 1x64x1024x1024", 1, 64, (1024, 1024), 64, 3, p=1),
    _conv("7x7 16x32x256x256", 16, 32, (256, 256), 32, 7, p=3),
    Case("conv_transpose", "4x4 s2 4x64x256x256", 4, 64, (256, 256), 64, 4, 2, 1),
    Case("max_pool", "3x3 s1 8x64x512x512", 8, 64, (512, 512), None, 3, 1, 1),
    _conv("1-D k9 1x64x4000000", 1, 64, (4_000_000,), 64, 9, p=4),
)
"""The workspace cases of the performance issue (each needs hundreds of MiB)."""

_QUICK_WORKSPACE = {
    "conv:3x3-1x64x1024x1024": dict(spatial=(64, 64)),
    "conv:7x7-16x32x256x256": dict(batch=1, spatial=(32, 32)),
    "conv_transpose:4x4-s2-4x64x256x256": dict(batch=1, spatial=(16, 16)),
    "max_pool:3x3-s1-8x64x512x512": dict(batch=1, spatial=(32, 32)),
    "conv:1-d-k9-1x64x4000000": dict(spatial=(4000,)),
}


SMALL_CASES: tuple[Case, ...] = (
    _conv("cifar 3x3 16", 8, 16, (32, 32), 16, 3, p=1),
    _conv("cifar 3x3 32", 8, 32, (16, 16), 32, 3, p=1),
    _conv("cifar 3x3 64", 8, 64, (8, 8), 64, 3, p=1),
    _conv("cifar 3x3 stride 2", 8, 32, (16, 16), 64, 3, s=2, p=1),
    _conv("cifar stem", 8, 3, (32, 32), 16, 3, p=1),
    _conv("batch-1 3x3", 1, 64, (56, 56), 64, 3, p=1),
    _conv("batch-1 late 3x3", 1, 256, (14, 14), 256, 3, p=1),
    _conv("small depthwise", 8, 32, (32, 32), 32, 3, p=1, g=32),
    _conv("small grouped", 8, 64, (16, 16), 64, 3, p=1, g=8),
    _conv("short 1-d", 32, 32, (512,), 32, 7, p=3),
    Case("conv_transpose", "small k4 s2", 8, 32, (16, 16), 16, 4, 2, 1),
    Case("max_pool", "small 3x3 s2", 8, 32, (32, 32), None, 3, 2, 1),
    Case("avg_pool", "small 2x2 s2", 8, 64, (16, 16), None, 2, 2),
)
"""Small and mid-sized layers (CIFAR-sized planes, batch 1), off the BENCH.md suite
(``layoutops bench --suite small``): where per-call overheads and thin GEMMs dominate. The
BENCH.md targets are not defined for them."""

SUITES = {"bench": CASES, "small": SMALL_CASES}


def quick(case: Case) -> Case:
    """The tiny version of a case (same op and parameters) used by ``--quick``; the small
    suite's cases run one sample (``batch=1``)."""
    if case in SMALL_CASES:
        return dataclasses.replace(case, batch=1)
    changes = _QUICK.get(case.id) or _QUICK_WORKSPACE.get(case.id)
    if changes is None:
        raise KeyError(f"no quick version of {case.id}")
    return dataclasses.replace(case, **changes)


def case_ids(cases: Sequence[Case] = CASES) -> list[str]:
    """The ids of the cases, as ``--cases`` matches them.

    Examples
    --------
    >>> from layoutops.bench import case_ids
    >>> case_ids()[:2]
    ['conv:resnet-stem', 'conv:resnet-3x3']
    """
    return [c.id for c in cases]


def select_cases(patterns: str | None, cases: Sequence[Case] = CASES) -> list[Case]:
    """The cases whose id matches one of the comma-separated glob ``patterns``.

    A pattern without ``:`` also matches the name part alone, so ``'*3x3*'`` and
    ``'conv:*'`` both work. Matching ignores case.

    Examples
    --------
    >>> from layoutops.bench import select_cases
    >>> [c.id for c in select_cases("*pool*")]
    ['max_pool:3x3-s2', 'avg_pool:2x2-s2', 'global_avg_pool:global']
    """
    if not patterns:
        return list(cases)
    pats = [p.strip().lower() for p in patterns.split(",") if p.strip()]
    chosen = []
    for case in cases:
        name = case.id.split(":", 1)[1]
        if any(fnmatch.fnmatchcase(case.id, p) or fnmatch.fnmatchcase(name, p) for p in pats):
            chosen.append(case)
    return chosen


def flops(case: Case) -> int | None:
    """Floating-point operations of a conv or transposed conv case (multiply + add = 2).

    Examples
    --------
    >>> from layoutops.bench import CASES, flops
    >>> flops(CASES[1]) / 1e9  # resnet 3x3
    1.849688064
    """
    taps = case.kernel**case.n_spatial
    if case.family == "conv":
        positions = math.prod(case.output_spatial)
        return 2 * case.batch * case.c_out * positions * (case.channels // case.groups) * taps
    if case.family == "conv_transpose":
        positions = math.prod(case.spatial)
        return 2 * case.batch * case.channels * positions * (case.c_out // case.groups) * taps
    return None


# --------------------------------------------------------------------------------------------
# operands and contestants


def _operands(case: Case, layout: str, seed: int = 0):
    """(x in ``layout``, x channels-first, weight in our default layout, weight torch form)."""
    rng = np.random.default_rng(seed)
    x_cf = rng.standard_normal(case.input_shape("channels_first"), dtype=np.float32)
    x = np.ascontiguousarray(np.moveaxis(x_cf, 1, -1)) if layout == "channels_last" else x_cf
    w_shape = case.torch_weight_shape()
    if w_shape is None:
        return x, x_cf, None, None
    fan_in = math.prod(w_shape[1:]) if case.family == "conv" else math.prod(w_shape[2:])
    w_t = rng.standard_normal(w_shape, dtype=np.float32) / np.float32(math.sqrt(fan_in))
    if layout == "channels_last":
        # OI... -> ...IO (conv, HWIO) and IO... -> ...OI (conv_transpose, HWOI): same axes.
        perm = (*range(2, w_t.ndim), 1, 0)
        w = np.ascontiguousarray(w_t.transpose(perm))
    else:
        w = w_t
    return x, x_cf, w, w_t


def _ours(case: Case, layout: str, x, w, algorithm: str | None) -> Callable[[], np.ndarray]:
    """A call of the layoutops op the case names; raises AttributeError if it is missing."""
    import layoutops as lo

    fn = getattr(lo, case.family)
    k, s, p, d, g = case.kernel, case.stride, case.padding, case.dilation, case.groups
    extra = {} if algorithm in (None, "auto") else {"algorithm": algorithm}
    if case.family in ("conv", "conv_transpose"):
        return lambda: fn(x, w, stride=s, padding=p, dilation=d, groups=g, layout=layout, **extra)
    if case.family in ("max_pool", "avg_pool"):
        return lambda: fn(x, k, stride=s, padding=p, layout=layout)
    if case.family == "global_avg_pool":
        return lambda: fn(x, layout=layout)
    raise ValueError(f"unknown family {case.family!r}")


def _as_channels_first(out: np.ndarray, layout: str) -> np.ndarray:
    out = np.asarray(out)
    return np.moveaxis(out, -1, 1) if layout == "channels_last" else out


def _torch_call(torch, case: Case, layout: str, x_cf, w_t):
    """(call, to_numpy_cf, note) running the PyTorch op on a tensor in ``layout``."""
    F = torch.nn.functional
    n = case.n_spatial
    xt = torch.from_numpy(x_cf)
    wt = None if w_t is None else torch.from_numpy(w_t)
    note = ""
    if layout == "channels_last":
        if n in (2, 3):
            fmt = torch.channels_last if n == 2 else torch.channels_last_3d
            xt = xt.contiguous(memory_format=fmt)
            if wt is not None:
                wt = wt.contiguous(memory_format=fmt)
        else:
            # no channels-last memory format for 3-D tensors: an (N, L, C) array seen as NCL
            xt = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x_cf, 1, -1))).permute(0, 2, 1)
            note = "torch: (N, L, C) tensor viewed as NCL"
    k, s, p, d, g = case.kernel, case.stride, case.padding, case.dilation, case.groups
    if case.family == "conv":
        op = getattr(F, f"conv{n}d")

        def call():
            return op(xt, wt, None, s, p, d, g)

    elif case.family == "conv_transpose":
        op = getattr(F, f"conv_transpose{n}d")

        def call():
            return op(xt, wt, None, s, p, 0, g, d)

    elif case.family == "max_pool":
        op = getattr(F, f"max_pool{n}d")

        def call():
            return op(xt, k, s, p, d)

    elif case.family == "avg_pool":
        op = getattr(F, f"avg_pool{n}d")

        def call():
            return op(xt, k, s, p)

    else:
        op = getattr(F, f"adaptive_avg_pool{n}d")

        def call():
            return op(xt, 1)

    def to_numpy(out):
        return out.contiguous().numpy()

    return call, to_numpy, note


def _ort_model(case: Case, w_t):
    """An ONNX model (bytes) of the case's op on an NCHW input named ``x``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n = case.n_spatial
    attrs: dict = {}
    inputs = ["x"]
    inits = []
    if case.family != "global_avg_pool":
        attrs.update(kernel_shape=[case.kernel] * n, strides=[case.stride] * n)
        attrs["pads"] = [case.padding] * (2 * n)
    if case.family in ("conv", "conv_transpose"):
        attrs.update(dilations=[case.dilation] * n, group=case.groups)
        inputs.append("w")
        inits.append(numpy_helper.from_array(w_t, name="w"))
    node = helper.make_node(_ORT_OPS[case.family], inputs, ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        "bench",
        [
            helper.make_tensor_value_info(
                "x", TensorProto.FLOAT, list(case.input_shape("channels_first"))
            )
        ],
        [
            helper.make_tensor_value_info(
                "y", TensorProto.FLOAT, list(case.output_shape("channels_first"))
            )
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _ort_call(ort, case: Case, x_cf, w_t, threads: int):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # onnxruntime's intra-op threads spin after each run by default; interleaved with the other
    # contestants that spin steals the cores from whoever runs next (measured: our resnet 3x3
    # went from 40 to 76 ms, and so did the GEMM reference). Sleep-waiting threads keep each
    # sample about the contestant it names.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(_ort_model(case, w_t), opts, providers=["CPUExecutionProvider"])
    feed = {"x": x_cf}

    def call():
        return sess.run(None, feed)[0]

    return call


# --------------------------------------------------------------------------------------------
# timing


def _calibrate(fn: Callable[[], object], min_time: float) -> int:
    """Calls per sample so that one sample lasts at least ``min_time`` (this call warms up)."""
    t0 = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - t0
    if min_time <= 0 or elapsed >= min_time:
        return 1
    return int(min(1000, math.ceil(min_time / max(elapsed, 1e-7))))


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    repeat: int,
    min_time: float = 0.0,
    warmup: int = 0,
    settle: float = 0.0,
    warm: float = 0.0,
) -> dict[str, dict]:
    """Median seconds per call of each function, sampled in turn (A, B, A, B, ...).

    Each function is called ``warmup`` times, then once more to set the calls per sample
    (enough for ``min_time`` seconds), before the ``repeat`` rounds of samples. ``settle``
    seconds of sleep precede every sample, so that threads the previous contestant left
    spinning (OpenBLAS, OpenMP) have gone to sleep; then the function runs untimed for at
    least ``warm`` seconds, so that the sample starts on awake cores.

    Examples
    --------
    >>> from layoutops.bench import time_interleaved
    >>> r = time_interleaved({"a": lambda: None, "b": lambda: None}, repeat=3)
    >>> sorted(r), len(r["a"]["samples"])
    (['a', 'b'], 3)
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    numbers = {key: _calibrate(fn, min_time) for key, fn in fns.items()}
    samples: dict[str, list[float]] = {key: [] for key in fns}
    for _ in range(repeat):
        for key, fn in fns.items():
            number = numbers[key]
            if settle > 0:
                time.sleep(settle)
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < warm:
                fn()
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            samples[key].append((time.perf_counter() - t0) / number)
    return {
        key: {"median": statistics.median(v), "min": min(v), "samples": v, "number": numbers[key]}
        for key, v in samples.items()
    }


@functools.lru_cache(maxsize=2)
def _gemm_operands(n: int):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    return a, b, np.empty((n, n), np.float32)


def gemm_rate(n: int = 1024, repeat: int = 15, min_time: float = 0.02) -> dict:
    """This machine's float32 GEMM rate: ``np.matmul`` of two ``n x n`` matrices.

    Returns a dict with ``gflops`` (from the median time), ``gflops_best`` (from the fastest
    sample) and ``seconds``.

    Examples
    --------
    >>> from layoutops.bench import gemm_rate
    >>> gemm_rate(n=64, repeat=2, min_time=0)["gflops"] > 0
    True
    """
    a, b, out = _gemm_operands(n)
    r = time_interleaved({"gemm": lambda: np.matmul(a, b, out=out)}, repeat, min_time, 2)["gemm"]
    work = 2.0 * n**3
    return {
        "n": n,
        "seconds": r["median"],
        "gflops": work / r["median"] / 1e9,
        "gflops_best": work / r["min"] / 1e9,
    }


def _max_rel_error(ours: np.ndarray, ref: np.ndarray) -> float:
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if ours.shape != ref.shape:
        if ours.size == ref.size and ours.squeeze().shape == ref.squeeze().shape:
            ours, ref = ours.squeeze(), ref.squeeze()
        else:
            return math.inf
    if ours.size == 0:
        return 0.0
    scale = max(float(np.max(np.abs(ref))), 1.0)
    return float(np.max(np.abs(ours - ref))) / scale


# --------------------------------------------------------------------------------------------
# machine


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def machine_info(peers: dict | None = None) -> dict:
    """A description of the machine and the software: CPU, cores, memory, NumPy/BLAS, peers.

    Examples
    --------
    >>> from layoutops.bench import machine_info
    >>> info = machine_info()
    >>> "cpu" in info and "numpy" in info
    True
    """
    cpuinfo = _read("/proc/cpuinfo")
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")),
        platform.processor() or platform.machine(),
    )
    flags_line = next((ln for ln in cpuinfo.splitlines() if ln.startswith("flags")), "")
    flags = set(flags_line.split(":", 1)[1].split()) if flags_line else set()
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    mem = next(
        (ln.split()[1] for ln in _read("/proc/meminfo").splitlines() if ln.startswith("MemTotal")),
        None,
    )
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    blas: dict = {}
    try:
        deps = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = {
            k: deps.get(k) for k in ("name", "version", "openblas configuration") if deps.get(k)
        }
    except Exception:  # older NumPy: no dict mode
        pass
    info = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "cpu": model,
        "simd": simd,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "memory_gib": round(int(mem) / 2**20, 1) if mem else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas,
        "env": {
            k: os.environ[k]
            for k in (
                "OPENBLAS_NUM_THREADS",
                "OMP_NUM_THREADS",
                "MKL_NUM_THREADS",
                "NUMEXPR_NUM_THREADS",
                "NUMEXPR_MAX_THREADS",
            )
            if k in os.environ
        },
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        import layoutops

        info["layoutops"] = layoutops.__version__
    except Exception:
        pass
    for name in ("numexpr", "opt_einsum"):
        try:
            mod = __import__(name)
            info[name] = mod.__version__
            if name == "numexpr":
                info["numexpr_threads"] = mod.get_num_threads()
        except Exception:
            pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=os.path.dirname(os.path.abspath(__file__)),
            capture_output=True,
            text=True,
            timeout=5,
        )
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
    except Exception:
        pass
    for key, value in (peers or {}).items():
        info[key] = value
    return info


# --------------------------------------------------------------------------------------------
# the suite


def _load_peers(no_peers: bool, threads: int, log) -> tuple[dict, dict]:
    """(modules, description) of the installed peers, configured to ``threads`` threads."""
    mods: dict = {}
    desc: dict = {}
    if no_peers:
        log("peers: disabled (--no-peers); reporting layoutops alone")
        return mods, desc
    try:
        import torch

        torch.set_num_threads(threads)
        mods["torch"] = torch
        desc["torch"] = torch.__version__
        desc["torch_threads"] = torch.get_num_threads()
    except ImportError:
        log("peers: PyTorch is not installed (pip install torch): no torch ratios")
        desc["torch"] = None
    try:
        import onnxruntime as ort

        mods["ort"] = ort
        desc["onnxruntime"] = ort.__version__
    except ImportError:
        log("peers: onnxruntime is not installed (pip install onnxruntime): no ort ratios")
        desc["onnxruntime"] = None
    return mods, desc


def _run_case(case: Case, layout: str, peers: dict, args, log) -> dict:
    row: dict = {
        "id": case.id,
        "family": case.family,
        "name": case.name,
        "layout": layout,
        "params": case.describe(),
        "input_shape": list(case.input_shape(layout)),
        "output_shape": list(case.output_shape(layout)),
        "flops": flops(case),
        "status": "ok",
        "check": {},
        "notes": [],
    }
    x, x_cf, w, w_t = _operands(case, layout)
    fns: dict[str, Callable[[], object]] = {}
    outputs: dict[str, np.ndarray] = {}
    try:
        ours = _ours(case, layout, x, w, args.algorithm)
    except AttributeError:
        row["status"] = "not available"
        ours = None
    if ours is not None:
        try:
            out = ours()
            outputs["ours"] = _as_channels_first(out, layout)
            if tuple(np.shape(out)) != case.output_shape(layout):
                row["check"]["ours_shape"] = list(np.shape(out))
            fns["ours"] = ours
        except NotImplementedError as e:
            row["status"] = "not available"
            row["notes"].append(f"ours: NotImplementedError: {e}")
        except Exception as e:  # report, keep going
            row["status"] = "error"
            row["notes"].append(f"ours: {type(e).__name__}: {e}")
    if "torch" in peers:
        torch = peers["torch"]
        call, to_numpy, note = _torch_call(torch, case, layout, x_cf, w_t)
        if note:
            row["notes"].append(note)
        try:
            with torch.inference_mode():
                out = call()
        except Exception as e:  # a peer that cannot run the case is not our failure
            row["notes"].append(f"torch: failed ({type(e).__name__}: {e})")
            out = None
    if "torch" in peers and out is not None:
        if layout == "channels_last" and case.n_spatial in (2, 3):
            fmt = torch.channels_last if case.n_spatial == 2 else torch.channels_last_3d
            row["torch_out_channels_last"] = bool(out.is_contiguous(memory_format=fmt))
        outputs["torch"] = to_numpy(out)

        def torch_fn(call=call, torch=torch):
            with torch.inference_mode():
                return call()

        fns["torch"] = torch_fn
    if "ort" in peers:
        try:
            call = _ort_call(peers["ort"], case, x_cf, w_t, args.threads)
            outputs["ort"] = call()
            fns["ort"] = call
            if layout == "channels_last":
                row["notes"].append("ort: NCHW model (onnxruntime has no NHWC standard ops)")
        except Exception as e:
            row["notes"].append(f"ort: unavailable for this case ({type(e).__name__}: {e})")
    if "ours" in outputs:
        for peer in ("torch", "ort"):
            if peer in outputs:
                err = _max_rel_error(outputs["ours"], outputs[peer])
                row["check"][peer] = err
                if not err <= args.tolerance:
                    row["status"] = "MISMATCH"
    del outputs
    gc.collect()
    gemm_n = getattr(args, "gemm_n", 1024)
    if row["flops"] and "ours" in fns:
        # the GEMM reference as one more contestant: it sees the same machine load as the case
        a, b, c = _gemm_operands(gemm_n)
        fns["gemm"] = lambda: np.matmul(a, b, out=c)
    warmup = 0 if args.quick else 1
    settle = getattr(args, "settle", 0.0)
    warm = getattr(args, "warm", 0.0)
    timings = (
        time_interleaved(fns, args.repeat, args.min_time, warmup, settle, warm) if fns else {}
    )
    if "gemm" in timings:
        row["gemm_gflops"] = 2.0 * gemm_n**3 / timings["gemm"]["median"] / 1e9
    for key in ("ours", "torch", "ort"):
        row[f"{key}_s"] = timings[key]["median"] if key in timings else None
        if key in timings:
            row[f"{key}_samples"] = timings[key]["samples"]
    for peer in ("torch", "ort"):
        ok = row["ours_s"] is not None and row[f"{peer}_s"]
        row[f"ratio_{peer}"] = row["ours_s"] / row[f"{peer}_s"] if ok else None
    for key in ("ours", "torch"):
        if row["flops"] and row[f"{key}_s"]:
            row[f"{key}_gflops"] = row["flops"] / row[f"{key}_s"] / 1e9
    return row


def _fmt_ms(s):
    return "-" if s is None else f"{s * 1e3:.2f}"


def _fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}"


def _progress_line(i: int, total: int, row: dict) -> str:
    text = f"[{i}/{total}] {row['id']} {_SHORT[row['layout']]} ({row['params']}): "
    if row["ours_s"] is None:
        text += f"ours {row['status']}"
    else:
        text += f"ours {_fmt_ms(row['ours_s'])} ms"
    for peer in ("torch", "ort"):
        if row.get(f"{peer}_s") is not None:
            text += f", {peer} {_fmt_ms(row[f'{peer}_s'])} ms"
            if row[f"ratio_{peer}"] is not None:
                text += f" (x{row[f'ratio_{peer}']:.2f})"
    if row.get("gemm_fraction") is not None:
        text += f", {row['ours_gflops']:.1f} GFLOP/s = {row['gemm_fraction']:.2f} of GEMM"
    if row["status"] == "MISMATCH":
        text += f"  *** MISMATCH: max relative error {row['check']} ***"
    elif row["status"] == "error":
        text += f"  *** ERROR: {'; '.join(row['notes'])} ***"
    return text


def _geomean(values):
    values = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def summarize(rows: list[dict], targets: bool = True) -> dict:
    """Geometric means and maxima of the ratios, CL/CF ratios, GEMM efficiency, and (for the
    BENCH.md suite, ``targets``) the targets."""
    summary: dict = {}
    for peer in ("torch", "ort"):
        for scope, sel in (
            ("all", rows),
            *((lay, [r for r in rows if r["layout"] == lay]) for lay in LAYOUTS),
        ):
            ratios = [(r[f"ratio_{peer}"], r) for r in sel if r.get(f"ratio_{peer}") is not None]
            if not ratios:
                continue
            worst = max(ratios, key=lambda t: t[0])
            summary[f"{peer}_{scope}"] = {
                "geomean": _geomean([v for v, _ in ratios]),
                "max": worst[0],
                "max_case": f"{worst[1]['id']} {_SHORT[worst[1]['layout']]}",
                "n": len(ratios),
            }
    by_key = {(r["id"], r["layout"]): r for r in rows}
    cl_cf = {}
    for r in rows:
        if r["layout"] != "channels_last":
            continue
        cf = by_key.get((r["id"], "channels_first"))
        if cf and r["ours_s"] and cf["ours_s"]:
            entry = {"ours": r["ours_s"] / cf["ours_s"]}
            if r.get("torch_s") and cf.get("torch_s"):
                entry["torch"] = r["torch_s"] / cf["torch_s"]
            cl_cf[r["id"]] = entry
    summary["cl_over_cf"] = cl_cf
    if cl_cf:
        worst = max(cl_cf.items(), key=lambda kv: kv[1]["ours"])
        summary["cl_over_cf_max"] = {"value": worst[1]["ours"], "case": worst[0]}
    eff = [r["gemm_fraction"] for r in rows if r["id"] in GEMM_BOUND and r.get("gemm_fraction")]
    summary["gemm_efficiency_median"] = statistics.median(eff) if eff else None
    summary["gemm_efficiency_n"] = len(eff)
    t = summary.get("torch_all")
    cm = summary.get("cl_over_cf_max")
    ge = summary["gemm_efficiency_median"]
    if not targets:
        summary["targets"] = {}
        return summary
    summary["targets"] = {
        "geomean ratio to torch <= 1.25 (aim 1.0)": None if not t else t["geomean"] <= 1.25,
        "max ratio to torch <= 3.0 (aim 2.5)": None if not t else t["max"] <= 3.0,
        "channels-last / channels-first <= 1.2": None if not cm else cm["value"] <= 1.2,
        "median GEMM efficiency >= 0.6": None if ge is None else ge >= 0.6,
    }
    return summary


def _table(rows: list[dict], summary: dict, gemm: dict) -> str:
    head = (
        f"{'case':<32} {'lay':<3} {'ours ms':>9} {'torch ms':>9} {'/torch':>6} "
        f"{'ort ms':>9} {'/ort':>6} {'GFLOP/s':>8} {'ofGEMM':>6} {'CL/CF':>6}  status"
    )
    lines = [
        f"float32 GEMM rate (np.matmul {gemm['n']}x{gemm['n']}): {gemm['gflops']:.1f} GFLOP/s",
        head,
        "-" * len(head),
    ]
    cl_cf = summary.get("cl_over_cf", {})
    for r in rows:
        clcf = cl_cf.get(r["id"], {}).get("ours") if r["layout"] == "channels_last" else None
        gf = r.get("ours_gflops")
        frac = r.get("gemm_fraction")
        lines.append(
            f"{r['id']:<32} {_SHORT[r['layout']]:<3} {_fmt_ms(r['ours_s']):>9} "
            f"{_fmt_ms(r.get('torch_s')):>9} {_fmt_ratio(r.get('ratio_torch')):>6} "
            f"{_fmt_ms(r.get('ort_s')):>9} {_fmt_ratio(r.get('ratio_ort')):>6} "
            f"{'-' if gf is None else f'{gf:.1f}':>8} {_fmt_ratio(frac):>6} "
            f"{_fmt_ratio(clcf):>6}  {r['status']}"
        )
    lines.append("")
    for peer in ("torch", "ort"):
        for scope in ("all", *LAYOUTS):
            s = summary.get(f"{peer}_{scope}")
            if s:
                lines.append(
                    f"ours/{peer} ({scope}, {s['n']} cases): geometric mean {s['geomean']:.2f}, "
                    f"max {s['max']:.2f} ({s['max_case']})"
                )
    if summary.get("cl_over_cf_max"):
        m = summary["cl_over_cf_max"]
        lines.append(f"channels-last / channels-first (ours): max {m['value']:.2f} ({m['case']})")
    if summary.get("gemm_efficiency_median") is not None:
        lines.append(
            f"median GEMM efficiency over the GEMM-bound cases "
            f"({summary['gemm_efficiency_n']} rows): {summary['gemm_efficiency_median']:.2f}"
        )
    for name, ok in summary["targets"].items():
        lines.append(f"target {name}: {'n/a' if ok is None else ('met' if ok else 'NOT met')}")
    return "\n".join(lines)


def _write_atomic(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_plot(result: dict, path: str) -> None:
    """Bar chart of ours/torch (or our milliseconds without torch) per case and layout."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["cases"]
    ids = list(dict.fromkeys(r["id"] for r in rows))
    by_key = {(r["id"], r["layout"]): r for r in rows}
    have_torch = any(r.get("ratio_torch") for r in rows)
    have_ort = any(r.get("ratio_ort") for r in rows)
    panels = [("ratio_torch", "time ours / PyTorch (log)")] if have_torch else []
    if have_ort:
        panels.append(("ratio_ort", "time ours / onnxruntime NCHW (log)"))
    if not panels:
        panels = [("ours_s", "layoutops time, ms (log)")]
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, 4.2 * len(panels)), squeeze=False)
    width = 0.4
    pos = np.arange(len(ids))
    for ax, (key, label) in zip(axes[:, 0], panels, strict=True):
        for j, lay in enumerate(LAYOUTS):
            vals = []
            for cid in ids:
                r = by_key.get((cid, lay))
                v = None if r is None else r.get(key)
                if v is not None and key == "ours_s":
                    v *= 1e3
                vals.append(np.nan if v is None else v)
            ax.bar(pos + (j - 0.5) * width, vals, width, label=lay.replace("_", "-"))
        if key.startswith("ratio"):
            ax.axhline(1.0, color="k", lw=0.8)
            ax.axhline(1.25, color="tab:orange", lw=0.8, ls="--", label="1.25 (geomean target)")
            ax.axhline(3.0, color="tab:red", lw=0.8, ls=":", label="3.0 (max)")
        ax.set_yscale("log")
        ax.set_ylabel(label)
        ax.set_xticks(pos)
        ax.set_xticklabels(ids, rotation=35, ha="right", fontsize=8)
        ax.legend(fontsize=8)
        ax.grid(axis="y", which="both", alpha=0.3)
    m = result["machine"]
    fig.suptitle(
        f"layoutops {m.get('layoutops', '')} on {m['cpu']} ({m['usable_cpus']} cores), float32",
        fontsize=10,
    )
    fig.tight_layout()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp{os.getpid()}{ext or '.png'}"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def _set_fractions(row: dict, global_gflops: float) -> None:
    """GFLOP/s over the GEMM rate timed with the case (or the run's rate without one)."""
    reference = row.get("gemm_gflops") or global_gflops
    for key, frac in (("ours_gflops", "gemm_fraction"), ("torch_gflops", "torch_gemm_fraction")):
        if row.get(key):
            row[frac] = row[key] / reference


def run_suite(args, log=None) -> dict:
    """Run the timed suite as ``args`` says (the fields of ``add_arguments``); returns the
    result dict that ``--json`` writes: ``machine``, ``settings``, ``gemm``, ``cases``,
    ``summary``."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    suite = getattr(args, "suite", "bench")
    cases = select_cases(args.cases, SUITES[suite])
    if args.quick:
        cases = [quick(c) for c in cases]
    layouts = LAYOUTS if args.layout == "both" else (args.layout,)
    if not cases:
        raise _cli_error(f"no case matches --cases {args.cases!r}; cases: {', '.join(case_ids())}")
    try:
        import numexpr

        numexpr.set_num_threads(args.threads)
    except ImportError:
        pass
    peers, peer_desc = _load_peers(args.no_peers, args.threads, log)
    machine = machine_info(peer_desc)
    load = machine.get("loadavg")
    if load and load[0] > 0.5 * machine["usable_cpus"]:
        log(
            f"warning: the machine is busy (load average {load[0]:.1f} on "
            f"{machine['usable_cpus']} cores): the times will be noisy"
        )
    gemm_repeat = 3 if args.quick else 15
    gemm_n = 256 if args.quick else 1024
    args.gemm_n = gemm_n
    gemm = gemm_rate(gemm_n, gemm_repeat, 0 if args.quick else 0.05)
    log(f"float32 GEMM {gemm_n}x{gemm_n}: {gemm['gflops']:.1f} GFLOP/s")
    rows = []
    total = len(cases) * len(layouts)
    i = 0
    for case in cases:
        for layout in layouts:
            i += 1
            row = _run_case(case, layout, peers, args, log)
            _set_fractions(row, gemm["gflops"])
            rows.append(row)
            log(_progress_line(i, total, row))
    gemm_after = gemm_rate(gemm_n, gemm_repeat, 0 if args.quick else 0.05)
    gemm_used = dict(gemm_after if gemm_after["gflops"] > gemm["gflops"] else gemm)
    gemm_used["before_gflops"] = gemm["gflops"]
    gemm_used["after_gflops"] = gemm_after["gflops"]
    for row in rows:
        _set_fractions(row, gemm_used["gflops"])
    machine["loadavg_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result = {
        "machine": machine,
        "settings": {
            "repeat": args.repeat,
            "min_time": args.min_time,
            "settle": args.settle,
            "warm": args.warm,
            "threads": args.threads,
            "quick": args.quick,
            "cases": args.cases,
            "suite": suite,
            "layouts": list(layouts),
            "algorithm": args.algorithm,
            "tolerance": args.tolerance,
            "dtype": "float32",
            "peers": sorted(peers),
        },
        "gemm": gemm_used,
        "cases": rows,
    }
    result["summary"] = summarize(rows, targets=suite == "bench")
    return result


# --------------------------------------------------------------------------------------------
# workspace: one fresh process per case


def _vm_status() -> dict[str, int]:
    """VmRSS and VmHWM of this process in bytes (from /proc/self/status)."""
    values = {}
    for line in _read("/proc/self/status").splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, rest = line.split(":", 1)
            values[key] = int(rest.split()[0]) * 1024
    return values


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    status = _vm_status()
    return bool(status) and status["VmHWM"] <= status["VmRSS"] + 4 * MiB


def _workspace_child(spec_json: str) -> int:
    """Body of the fresh process of `run_workspace` (prints one JSON line)."""
    import resource

    spec = json.loads(spec_json)
    case = Case(**{**spec["case"], "spatial": tuple(spec["case"]["spatial"])})
    layout = spec["layout"]
    report: dict = {"id": case.id, "layout": layout, "params": case.describe()}
    if spec.get("address_space_gib"):
        cap = int(spec["address_space_gib"] * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    import layoutops as lo

    if spec.get("limit"):
        lo.set_workspace_limit(int(spec["limit"]))
    report["limit"] = lo.get_workspace_limit()
    # a tiny call of the same op (same channels and parameters) to load and warm everything
    extent = case.dilation * (case.kernel - 1) + 1
    tiny = dataclasses.replace(case, batch=1, spatial=(max(2 * extent, 8),) * case.n_spatial)
    try:
        tx, _, tw, _ = _operands(tiny, layout)
        _ours(tiny, layout, tx, tw, spec.get("algorithm"))()
        del tx, tw
    except (AttributeError, NotImplementedError) as e:
        report["status"] = f"not available ({type(e).__name__})"
        print(json.dumps(report))
        return 0
    gc.collect()
    base = _vm_status()
    report["baseline_rss"] = base.get("VmRSS")
    rng = np.random.default_rng(0)
    x = np.empty(case.input_shape(layout), np.float32)
    rng.standard_normal(out=x, dtype=np.float32)
    w = None
    if case.torch_weight_shape() is not None:
        w_t = rng.standard_normal(case.torch_weight_shape(), dtype=np.float32)
        perm = (*range(2, w_t.ndim), 1, 0)
        w = np.ascontiguousarray(w_t.transpose(perm)) if layout == "channels_last" else w_t
        del w_t
    input_bytes = x.nbytes + (0 if w is None else w.nbytes)
    report["input_bytes"] = input_bytes
    report["rss_with_inputs"] = _vm_status().get("VmRSS")
    report["hwm_reset"] = _reset_peak()
    call = _ours(case, layout, x, w, spec.get("algorithm"))
    t0 = time.perf_counter()
    try:
        out = call()
    except MemoryError:
        report["status"] = "MemoryError (address-space cap reached)"
        print(json.dumps(report))
        return 0
    report["seconds"] = time.perf_counter() - t0
    status = _vm_status()
    peak = status.get("VmHWM")
    if not report["hwm_reset"] or peak is None:
        peak = max(peak or 0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    report["peak_rss"] = peak
    report["output_bytes"] = out.nbytes
    report["output_shape"] = list(out.shape)
    report["workspace_bytes"] = peak - report["baseline_rss"] - input_bytes - out.nbytes
    report["workspace_mib"] = report["workspace_bytes"] / MiB
    # the same from the RSS measured once the inputs exist (robust when small inputs reuse
    # heap pages that were already resident); equal to the above for large inputs
    report["workspace_after_inputs_bytes"] = peak - report["rss_with_inputs"] - out.nbytes
    report["torch_imported"] = "torch" in sys.modules
    report["status"] = "ok" if tuple(out.shape) == case.output_shape(layout) else "wrong shape"
    print(json.dumps(report))
    return 0


_CHILD = (
    "import sys\nfrom layoutops.bench import _workspace_child\n"
    "sys.exit(_workspace_child(sys.argv[1]))\n"
)


def run_workspace(
    cases: Sequence[Case] = WORKSPACE_CASES,
    layouts: Sequence[str] = LAYOUTS,
    *,
    limit: int | None = None,
    algorithm: str | None = None,
    timeout: float = 900.0,
    address_space_gib: float | None = 16.0,
    log=None,
) -> dict:
    """Measure the workspace of each case in a fresh process (no torch), in each layout.

    Method, per case and layout, in a new ``python`` process: import layoutops; call the
    same op once on a tiny input with the same channels and parameters (warm-up: imports,
    plan caches, BLAS buffers); ``gc.collect()``; baseline = VmRSS; allocate the float32
    input (random, filled in place) and the weight; reset the peak (VmHWM) to the current RSS
    by writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0; where that is impossible the
    peak is ``ru_maxrss``, the peak since process start, which is larger or equal); run the
    op; peak = VmHWM. ``workspace = peak - baseline - input bytes - output bytes``. The child
    runs under an address-space cap (``address_space_gib``) so a runaway allocation fails
    with MemoryError instead of exhausting a shared machine.

    Returns ``{"machine": ..., "cases": [...]}``; each case has ``workspace_bytes`` and
    ``workspace_mib``, or a ``status`` saying why not.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    env = dict(os.environ)
    rows = []
    total = len(cases) * len(layouts)
    i = 0
    for case in cases:
        for layout in layouts:
            i += 1
            spec = {
                "case": dataclasses.asdict(case),
                "layout": layout,
                "limit": limit,
                "algorithm": algorithm,
                "address_space_gib": address_space_gib,
            }
            try:
                proc = subprocess.run(
                    [sys.executable, "-c", _CHILD, json.dumps(spec)],
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    env=env,
                )
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
                if proc.returncode == 0 and lines:
                    row = json.loads(lines[-1])
                else:
                    err = proc.stderr.strip().splitlines()
                    row = {
                        "id": case.id,
                        "layout": layout,
                        "params": case.describe(),
                        "status": f"child failed (exit {proc.returncode}): "
                        f"{err[-1] if err else ''}",
                    }
            except subprocess.TimeoutExpired:
                row = {
                    "id": case.id,
                    "layout": layout,
                    "params": case.describe(),
                    "status": f"timeout after {timeout:.0f} s",
                }
            rows.append(row)
            if "workspace_mib" in row:
                log(
                    f"[{i}/{total}] workspace {row['id']} {_SHORT[layout]} ({row['params']}): "
                    f"{row['workspace_mib']:.1f} MiB (input {row['input_bytes'] / MiB:.0f} MiB, "
                    f"output {row['output_bytes'] / MiB:.0f} MiB, {row['seconds']:.2f} s)"
                )
            else:
                log(f"[{i}/{total}] workspace {row['id']} {_SHORT[layout]}: {row['status']}")
    return {"machine": machine_info(), "limit": limit, "cases": rows}


def _workspace_table(result: dict) -> str:
    head = (
        f"{'case':<40} {'lay':<3} {'input MiB':>9} {'output MiB':>10} "
        f"{'workspace MiB':>13} {'s':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in result["cases"]:
        if "workspace_mib" in r:
            lines.append(
                f"{r['id']:<40} {_SHORT[r['layout']]:<3} {r['input_bytes'] / MiB:>9.1f} "
                f"{r['output_bytes'] / MiB:>10.1f} {r['workspace_mib']:>13.1f} "
                f"{r['seconds']:>7.2f}"
            )
        else:
            lines.append(f"{r['id']:<40} {_SHORT[r['layout']]:<3} {r['status']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# command line


def _cli_error(message: str) -> Exception:
    from .cli import CliError

    return CliError(message)


def _default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``layoutops bench`` to ``parser`` (and set ``run`` as its action).

    Examples
    --------
    >>> import argparse
    >>> from layoutops import bench
    >>> p = argparse.ArgumentParser()
    >>> bench.add_arguments(p)
    >>> args = p.parse_args(["--quick", "--repeat", "1"])
    >>> args.repeat, args.quick, args.run is bench.run
    (1, True, True)
    """
    parser.description = (
        "Time layoutops against PyTorch CPU and onnxruntime (when installed) on the "
        "benchmark suite, in channels-first and channels-last layout, float32."
    )
    parser.add_argument("--json", metavar="PATH", help="write the full results as JSON")
    parser.add_argument("--plot", metavar="PATH", help="write a bar chart (needs matplotlib)")
    parser.add_argument(
        "--cases",
        metavar="GLOB",
        default=None,
        help="comma-separated globs over case ids such as 'conv:resnet-3x3' (or names alone, "
        "e.g. '*3x3*'); --list shows them",
    )
    parser.add_argument("--list", action="store_true", help="list the case ids and exit")
    parser.add_argument(
        "--suite",
        choices=tuple(SUITES),
        default="bench",
        help="the cases: BENCH.md's suite (default, with its targets) or 'small', "
        "CIFAR-sized and batch-1 layers where call overheads and thin GEMMs dominate",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=7,
        metavar="N",
        help="interleaved samples per contestant (median reported; default 7)",
    )
    parser.add_argument(
        "--min-time",
        type=float,
        default=None,
        metavar="S",
        help="seconds per sample at least, by repeating calls (default 0.02; 0 with --quick)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=None,
        metavar="S",
        help="sleep before every sample so that the previous contestant's spinning threads "
        "(OpenBLAS, OpenMP) are asleep (default 0.25; 0 with --quick)",
    )
    parser.add_argument(
        "--warm",
        type=float,
        default=None,
        metavar="S",
        help="after the pause, run the contestant untimed for S seconds so that the sample "
        "starts on awake cores (default 0.1; 0 with --quick)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny shapes (smoke test; the numbers mean nothing)"
    )
    parser.add_argument("--no-peers", action="store_true", help="time layoutops only")
    parser.add_argument("--layout", choices=("both", *LAYOUTS), default="both")
    parser.add_argument(
        "--threads",
        type=int,
        default=_default_threads(),
        metavar="N",
        help="threads for PyTorch, onnxruntime and numexpr (default: usable "
        "cores); NumPy's BLAS follows OPENBLAS_NUM_THREADS",
    )
    parser.add_argument(
        "--algorithm",
        default=None,
        help="pass algorithm= to conv and conv_transpose (default: auto)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="max |ours - peer| / max(|peer|, 1) before a case is a mismatch",
    )
    parser.add_argument(
        "--workspace",
        action="store_true",
        help="measure workspace (peak RSS beyond input and output) of the workspace cases, "
        "each in a fresh process; large inputs (up to 512 MiB): run on a quiet machine",
    )
    parser.add_argument(
        "--workspace-limit",
        type=int,
        default=None,
        metavar="BYTES",
        help="with --workspace: set lo.set_workspace_limit in the child",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``layoutops bench`` with parsed ``args``; returns the exit status.

    0 when every case ran and agreed with the peers, 1 when a case disagreed (MISMATCH) or
    our op raised an error.
    """
    if args.list:
        for case in SUITES[args.suite]:
            print(f"{case.id:<34} {case.describe()}")
        for case in WORKSPACE_CASES:
            print(f"{case.id:<34} {case.describe()}  (--workspace)")
        return 0
    if args.repeat < 1:
        raise _cli_error(f"--repeat must be >= 1, got {args.repeat}")
    if args.threads < 1:
        raise _cli_error(f"--threads must be >= 1, got {args.threads}")
    if args.min_time is None:
        args.min_time = 0.0 if args.quick else 0.02
    if args.settle is None:
        args.settle = 0.0 if args.quick else 0.25
    if args.settle < 0:
        raise _cli_error(f"--settle must be >= 0, got {args.settle}")
    if args.warm is None:
        args.warm = 0.0 if args.quick else 0.1
    if args.warm < 0:
        raise _cli_error(f"--warm must be >= 0, got {args.warm}")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise _cli_error("--plot needs matplotlib (pip install matplotlib)") from None
    layouts = LAYOUTS if args.layout == "both" else (args.layout,)
    if args.workspace:
        cases = select_cases(args.cases, WORKSPACE_CASES)
        if not cases:
            raise _cli_error(f"no workspace case matches --cases {args.cases!r}")
        if args.quick:
            cases = [quick(c) for c in cases]
        result = run_workspace(cases, layouts, limit=args.workspace_limit, algorithm=args.algorithm)
        print(_workspace_table(result))
        if args.json:
            _write_atomic(args.json, json.dumps(result, indent=1) + "\n")
        bad = [r for r in result["cases"] if not r["status"].startswith(("ok", "not available"))]
        return 1 if bad else 0
    result = run_suite(args)
    print(_table(result["cases"], result["summary"], result["gemm"]))
    if args.json:
        _write_atomic(args.json, json.dumps(result, indent=1) + "\n")
    if args.plot:
        write_plot(result, args.plot)
    bad = [r for r in result["cases"] if r["status"] in ("MISMATCH", "error")]
    for r in bad:
        print(
            f"layoutops bench: {r['status']}: {r['id']} {r['layout']}: "
            f"{r['check'] or '; '.join(r['notes'])}",
            file=sys.stderr,
        )
    return 1 if bad else 0
