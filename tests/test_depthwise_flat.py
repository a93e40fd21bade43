"""Depthwise convolutions by one fused sum of products per padded chunk
(`layoutops.kernels.depthwise_flat`), both layouts, against the plain-loop reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conv_reference import act_from, act_to, conv_ref
from hypothesis import given, settings
from hypothesis import strategies as st
from peak_memory import temporaries
from recording import record_taken, spy_parallel

import layoutops as lo
from layoutops.kernels import conv as kconv
from layoutops.kernels import conv_transpose as kct
from layoutops.kernels import depthwise_flat
from layoutops.kernels.threads import get_num_threads, set_num_threads
from layoutops.ops import grad as ograd

pytestmark = pytest.mark.usefixtures("no_tiny_path")


def _depthwise_route(monkeypatch):
    """``algorithm="auto"`` resolves to ``direct`` for every depthwise conv, whatever its
    groups, outputs per group and layout: the tiny shapes here (a few channels) would
    otherwise go to ``im2col`` (`kconv.choose_algorithm`, tested in test_conv.py)."""
    real = kconv.choose_algorithm

    def direct_for_depthwise(algorithm, c_per_group, *args, **kwargs):
        if algorithm == "auto" and c_per_group == 1:
            return "direct"
        return real(algorithm, c_per_group, *args, **kwargs)

    monkeypatch.setattr(kconv, "choose_algorithm", direct_for_depthwise)


@pytest.fixture
def forced(monkeypatch):
    """The flat path on tiny inputs in chunks of a few rows, several row blocks per chunk for
    channels-first outputs, and scratch buffers with NaN after their end (a view reading past
    its chunk poisons the result); records the calls that took the path."""
    _depthwise_route(monkeypatch)
    monkeypatch.setattr(depthwise_flat, "CHUNK_ELEMS", 150)
    monkeypatch.setattr(depthwise_flat, "OUT_ROWS", 2)
    monkeypatch.setattr(depthwise_flat, "MIN_PARALLEL_MACS", 0)  # tiny convs split too

    def poisoned(slot, size, dtype):
        return np.full(size + 64, np.nan, dtype)[:size]

    monkeypatch.setattr(depthwise_flat, "scratch", poisoned)
    return record_taken(monkeypatch, kconv, "depthwise_flat", taken=lambda result: True)


# (input NC*S, kernel size, padding pairs, dilation, stride): odd and even sizes
_CASES = [
    ((2, 5, 9, 8), (3, 3), ((1, 1), (1, 1)), (1, 1), (1, 1)),
    ((3, 4, 10, 7), (2, 3), ((0, 1), (2, 0)), (1, 1), (1, 1)),  # asymmetric, one side only
    ((2, 3, 8, 11), (3, 2), ((2, 2), (1, 3)), (2, 3), (1, 1)),  # dilated both ways
    ((1, 6, 5, 6), (1, 4), ((0, 0), (0, 0)), (1, 1), (1, 1)),  # no padding, one kernel row
    ((2, 5, 9, 12), (3, 3), ((1, 1), (1, 1)), (1, 1), (2, 2)),  # stride 2
    ((2, 3, 11, 10), (3, 4), ((1, 2), (0, 1)), (2, 1), (3, 2)),  # strides 3 / 2, dilated
    ((1, 4, 7, 9), (2, 2), ((0, 0), (1, 1)), (1, 1), (1, 3)),  # width stride only
    ((2, 4, 13), (5,), ((2, 2),), (1,), (1,)),  # 1-D
    ((2, 3, 12), (3,), ((3, 0),), (2,), (1,)),  # 1-D, dilated, one side
    ((2, 3, 17), (4,), ((1, 2),), (1,), (3,)),  # 1-D, stride 3
]


@pytest.mark.parametrize("case", _CASES, ids=lambda c: f"{c[0]}-k{c[1]}-d{c[3]}-s{c[4]}")
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("channels_last", [True, False], ids=["last", "first"])
@pytest.mark.parametrize("column_tiles", [False, True], ids=["rows", "tiles"])
def test_flat_depthwise_matches_reference(case, threads, channels_last, column_tiles, forced,
                                          monkeypatch):
    if column_tiles:  # repeated weights of at most 40 values: tiles of a few output columns
        monkeypatch.setattr(depthwise_flat, "MAX_WEIGHT_ELEMS", 40)
        monkeypatch.setattr(depthwise_flat, "ROW_WEIGHT_ELEMS", 40)
    got, want = _case_conv(case, channels_last, threads)
    assert forced == [True]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def _case_conv(case, channels_last: bool, threads: int):
    """``(ours, reference)`` for a `_CASES` entry (with a bias), ours in the reference's
    channels-first order, computed in either layout on ``threads`` threads."""
    shape, ksize, pads, dilation, stride = case
    n_sp = len(ksize)
    c = shape[1]
    rng = np.random.default_rng(len(shape) + sum(ksize))
    x = rng.standard_normal(shape)
    w = rng.standard_normal((c, 1, *ksize))
    b = rng.standard_normal(c)
    want = conv_ref(x, w, b, strides=stride, pads=pads, dilations=dilation, groups=c)
    canon = "NCW" if n_sp == 1 else "NCHW"
    layout = ("NWC" if n_sp == 1 else "NHWC") if channels_last else canon
    kernel = np.moveaxis(w, (0, 1), (-1, -2)) if channels_last else w  # HWIO / OIHW
    previous = set_num_threads(threads)
    try:
        got = lo.conv(act_to(x, canon, layout), kernel, b, padding=[tuple(p) for p in pads],
                      dilation=dilation, stride=stride, groups=c, layout=layout)
    finally:
        set_num_threads(previous)
    return act_from(got, layout, canon), want


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_flat_depthwise_same_result_on_one_and_two_threads(layout, forced, monkeypatch):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 17, 9, 4) if layout == "NHWC" else (3, 4, 17, 9))
    x = x.astype(np.float32)
    w = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    previous = set_num_threads(None)
    try:
        runs = []
        for n in (1, 2):
            set_num_threads(n)
            runs.append(lo.conv2d(x, w, padding=1, groups=4, layout=layout,
                                  kernel_layout="OIHW"))
    finally:
        set_num_threads(previous)
    assert forced == [True, True]
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_flat_depthwise_half_types_compute_in_float32(layout, forced):
    """float16 in and out: the chunk copy casts to float32, the result comes back through
    scratch (einsum writes float32)."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 9, 10)).astype(np.float16)
    w = rng.standard_normal((3, 1, 3, 3)).astype(np.float16)
    got = lo.conv2d(act_to(x, "NCHW", layout), w, padding=1, stride=(1, 2), groups=3,
                    layout=layout, kernel_layout="OIHW")
    assert forced == [True] and got.dtype == np.float16
    want = conv_ref(x.astype(np.float64), w.astype(np.float64), None, strides=(1, 2),
                    pads=((1, 1), (1, 1)), dilations=(1, 1), groups=3)
    np.testing.assert_allclose(act_from(got, layout, "NCHW").astype(np.float64), want,
                               rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_flat_depthwise_leaves_padding_modes(layout, forced):
    """Padding modes other than zeros take the generic direct path, with the same results
    as the reference."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 9, 10))
    w = rng.standard_normal((3, 1, 3, 3))
    got = lo.conv2d(act_to(x, "NCHW", layout), w, groups=3, layout=layout,
                    kernel_layout="OIHW", padding=1, padding_mode="reflect")
    assert forced == []
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    want = conv_ref(padded, w, None, strides=(1, 1), pads=((0, 0), (0, 0)), dilations=(1, 1),
                    groups=3)
    np.testing.assert_allclose(act_from(got, layout, "NCHW"), want, rtol=1e-12, atol=1e-12)


def _depthwise_vjp_ref(x, w, g, strides, pads, dilations):
    """The input and weight gradients of a depthwise conv, by a loop over every output
    element and tap (float64): each term ``x[n, c, src] * w[c, 0, tap]`` of the forward sends
    ``g * w`` to the input and ``g * x`` to the weight."""
    x, w, g = (np.asarray(a, dtype=np.float64) for a in (x, w, g))
    gx, gw = np.zeros_like(x), np.zeros_like(w)
    in_sizes, outs = x.shape[2:], g.shape[2:]
    for n, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        for pos in itertools.product(*(range(s) for s in outs)):
            for tap in itertools.product(*(range(k) for k in w.shape[2:])):
                src = tuple(pos[a] * strides[a] - pads[a][0] + tap[a] * dilations[a]
                            for a in range(len(outs)))
                if all(0 <= p < size for p, size in zip(src, in_sizes, strict=True)):
                    gx[(n, c, *src)] += g[(n, c, *pos)] * w[(c, 0, *tap)]
                    gw[(c, 0, *tap)] += g[(n, c, *pos)] * x[(n, c, *src)]
    return gx, gw


@pytest.fixture
def fused_grads(monkeypatch):
    """Small chunks, as in `forced`; records the depthwise weight gradients and transposed
    convolutions that took the fused path."""
    _depthwise_route(monkeypatch)
    monkeypatch.setattr(depthwise_flat, "CHUNK_ELEMS", 150)
    monkeypatch.setattr(depthwise_flat, "OUT_ROWS", 2)
    monkeypatch.setattr(depthwise_flat, "MIN_PARALLEL_MACS", 0)
    weights = record_taken(monkeypatch, ograd, "depthwise_weight_grad", taken=lambda r: True)
    inputs = record_taken(monkeypatch, kct, "_depthwise_as_conv", taken=bool)
    forward = record_taken(monkeypatch, kconv, "depthwise_flat", taken=lambda r: True)
    return weights, inputs, forward


@pytest.mark.parametrize("case", _CASES, ids=lambda c: f"{c[0]}-k{c[1]}-d{c[3]}-s{c[4]}")
@pytest.mark.parametrize("channels_last", [True, False], ids=["last", "first"])
@pytest.mark.parametrize("column_tiles", [False, True], ids=["rows", "tiles"])
def test_depthwise_backward_matches_loop_reference(case, channels_last, column_tiles,
                                                   fused_grads, monkeypatch):
    if column_tiles:  # repeated weights of at most 40 values: tiles of a few output columns
        monkeypatch.setattr(depthwise_flat, "MAX_WEIGHT_ELEMS", 40)
        monkeypatch.setattr(depthwise_flat, "ROW_WEIGHT_ELEMS", 40)
    shape, ksize, pads, dilation, stride = case
    n_sp, c = len(ksize), shape[1]
    rng = np.random.default_rng(sum(shape) + sum(ksize))
    x = rng.standard_normal(shape)
    w = rng.standard_normal((c, 1, *ksize))
    outs = tuple((n + b + e - d * (k - 1) - 1) // s + 1 for n, k, s, d, (b, e)
                 in zip(shape[2:], ksize, stride, dilation, pads, strict=True))
    g = rng.standard_normal((shape[0], c, *outs))
    want_x, want_w = _depthwise_vjp_ref(x, w, g, stride, pads, dilation)
    canon = "NCW" if n_sp == 1 else "NCHW"
    layout = ("NWC" if n_sp == 1 else "NHWC") if channels_last else canon
    kernel_layout = "OIW" if n_sp == 1 else "OIHW"
    gx, gw, _ = lo.conv_backward(act_to(g, canon, layout), act_to(x, canon, layout), w,
                                 stride=stride, padding=[tuple(p) for p in pads],
                                 dilation=dilation, groups=c, layout=layout,
                                 kernel_layout=kernel_layout)
    weights, inputs, forward = fused_grads
    # the input gradient, a depthwise transposed conv: with unit strides the forward conv
    # it equals, else one per output phase
    unit = all(s == 1 for s in stride)
    assert weights == [True] and inputs == ([] if unit else [True])
    assert forward == ([True] if unit else [])
    np.testing.assert_allclose(gw, want_w, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(act_from(gx, layout, canon), want_x, rtol=1e-12, atol=1e-12)


def test_depthwise_weight_grad_same_on_one_and_two_threads(fused_grads):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 17, 9, 4)).astype(np.float32)
    w = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    g = rng.standard_normal((3, 17, 9, 4)).astype(np.float32)
    previous = set_num_threads(None)
    try:
        runs = []
        for n in (1, 2):
            set_num_threads(n)
            runs.append(lo.conv_backward(g, x, w, padding=1, groups=4, layout="NHWC",
                                         kernel_layout="OIHW", needs=("weight",)).grad_weight)
    finally:
        set_num_threads(previous)
    assert fused_grads[0] == [True, True]
    np.testing.assert_array_equal(runs[0], runs[1])


# (input NCHW, kernel, stride, padding, output_padding, dilation)
_TRANSPOSED = [
    ((2, 3, 8, 9), (3, 3), (1, 1), (1, 1), (0, 0), (1, 1)),
    ((2, 3, 8, 9), (3, 3), (1, 1), (3, 3), (0, 0), (1, 1)),  # crop beyond the spread
    ((2, 3, 7, 6), (4, 4), (2, 2), (1, 1), (0, 0), (1, 1)),
    ((1, 4, 5, 8), (3, 2), (2, 3), (1, 0), (1, 2), (1, 1)),  # k < s: an empty phase
    ((2, 2, 6, 7), (3, 3), (3, 2), (2, 1), (2, 1), (2, 3)),  # dilated, strided
    ((1, 3, 5, 5), (1, 1), (2, 2), (0, 0), (1, 1), (1, 1)),  # only phase 0 has a tap
]


@pytest.mark.parametrize("case", _TRANSPOSED, ids=lambda c: f"k{c[1]}-s{c[2]}-p{c[3]}-op{c[4]}")
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("staged", [True, False], ids=["staged", "einsum-into-phase"])
@pytest.mark.parametrize("side_by_side", [False, True], ids=["in-turn", "side-by-side"])
def test_depthwise_conv_transpose_by_phases(case, layout, staged, side_by_side, fused_grads,
                                            monkeypatch):
    """Depthwise transposed convs run as one forward depthwise conv per output phase (its
    channels-last phases summed in scratch and copied out, or written by einsum straight
    into their strided view; the phases in turn, or side by side on two threads); against a
    plain scatter loop (every input cell times every tap, added where it lands)."""
    monkeypatch.setattr(depthwise_flat, "STAGED_RUN_BYTES", 1 << 30 if staged else 0)
    if side_by_side:  # every phase below the split threshold, none below the side-by-side one
        monkeypatch.setattr(depthwise_flat, "MIN_PARALLEL_MACS", 1 << 30)
        monkeypatch.setattr(kct, "PHASES_PARALLEL_MACS", 0)
    spied = spy_parallel(monkeypatch, kct)
    shape, ksize, stride, padding, output_padding, dilation = case
    c = shape[1]
    rng = np.random.default_rng(sum(shape) + sum(ksize) + sum(stride))
    x = rng.standard_normal(shape)
    w = rng.standard_normal((c, 1, *ksize))  # IOHW: C_in, C_out / groups
    b = rng.standard_normal(c)
    got = lo.conv_transpose(act_to(x, "NCHW", layout), w, b, stride=stride, padding=padding,
                            output_padding=output_padding, dilation=dilation, groups=c,
                            layout=layout, kernel_layout="IOHW")
    sizes = [(n - 1) * s - 2 * p + d * (k - 1) + 1 + op for n, s, p, d, k, op
             in zip(shape[2:], stride, padding, dilation, ksize, output_padding, strict=True)]
    want = np.zeros((shape[0], c, *sizes))
    for i, j, a, bb in itertools.product(range(shape[2]), range(shape[3]), range(ksize[0]),
                                         range(ksize[1])):
        oi = i * stride[0] + a * dilation[0] - padding[0]
        oj = j * stride[1] + bb * dilation[1] - padding[1]
        if 0 <= oi < sizes[0] and 0 <= oj < sizes[1]:
            want[:, :, oi, oj] += x[:, :, i, j] * w[:, 0, a, bb]
    want += b[:, None, None]
    unit = stride == (1, 1) and padding[0] <= ksize[0] - 1 and padding[1] <= ksize[1] - 1
    # unit strides: the forward depthwise conv (unless the crop exceeds the spread)
    assert fused_grads[1] == ([] if unit else [True])
    assert fused_grads[2] == ([True] if unit else [])
    np.testing.assert_allclose(act_from(got, layout, "NCHW"), want, rtol=1e-12, atol=1e-12)
    reached = sum(1 for taps in _phase_taps(ksize, stride, padding, dilation) if taps)
    assert spied == ([None] if side_by_side and not unit and reached > 1 else [])


def _phase_taps(ksize, stride, padding, dilation):
    """Per output phase of a transposed conv, the number of kernel taps that land on it."""
    per_axis = [[sum(1 for t in range(k) if (t * d - p - r) % s == 0) for r in range(s)]
                for k, s, p, d in zip(ksize, stride, padding, dilation, strict=True)]
    return [a * b for a, b in itertools.product(*per_axis)]


def test_depthwise_conv_transpose_1d_strided(fused_grads):
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, 11, 3))  # NWC
    w = rng.standard_normal((3, 1, 4))   # IOW
    got = lo.conv_transpose(x, w, stride=3, padding=1, groups=3, layout="NWC",
                            kernel_layout="IOW")
    want = np.zeros((2, 10 * 3 - 2 + 4, 3))
    for i, t in itertools.product(range(11), range(4)):
        o = i * 3 + t - 1
        if 0 <= o < want.shape[1]:
            want[:, o] += x[:, i] * w[:, 0, t]
    assert fused_grads[1] == [True]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", _CASES[::2], ids=lambda c: f"{c[0]}-k{c[1]}-s{c[4]}")
@pytest.mark.parametrize("multiplier", [2, 3])
@pytest.mark.parametrize("channels_last", [True, False], ids=["last", "first"])
def test_flat_depthwise_channel_multiplier(case, multiplier, channels_last, forced):
    """``M`` output channels per input channel (``c * M + m``): M sums per chunk."""
    shape, ksize, pads, dilation, stride = case
    n_sp, c = len(ksize), shape[1]
    rng = np.random.default_rng(multiplier + sum(shape))
    x = rng.standard_normal(shape)
    w = rng.standard_normal((c * multiplier, 1, *ksize))
    b = rng.standard_normal(c * multiplier)
    want = conv_ref(x, w, b, strides=stride, pads=pads, dilations=dilation, groups=c)
    canon = "NCW" if n_sp == 1 else "NCHW"
    layout = ("NWC" if n_sp == 1 else "NHWC") if channels_last else canon
    got = lo.conv(act_to(x, canon, layout), w, b, padding=[tuple(p) for p in pads],
                  dilation=dilation, stride=stride, groups=c, layout=layout,
                  kernel_layout="OIW" if n_sp == 1 else "OIHW")
    assert forced == [True]
    np.testing.assert_allclose(act_from(got, layout, canon), want, rtol=1e-12, atol=1e-12)


def test_depthwise_temporaries_stay_within_the_workspace_limit(monkeypatch):
    """Beyond its result, a depthwise conv (forward 2-D and 3-D, weight gradient, transposed)
    holds about one workspace limit of temporaries at most (here 1 MiB, on 4 MiB inputs)."""
    volumes = record_taken(monkeypatch, kconv, "depthwise_volume", taken=lambda r: r)
    rng = np.random.default_rng(14)
    x = rng.standard_normal((4, 64, 64, 64)).astype(np.float32)  # NHWC
    xf = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    w = rng.standard_normal((64, 1, 3, 3)).astype(np.float32)
    calls = {
        "forward CL": lambda: lo.conv2d(x, w, padding=1, groups=64, layout="NHWC",
                                        kernel_layout="OIHW"),
        "forward CF": lambda: lo.conv2d(xf, w, padding=1, groups=64),
        "stride 2 CL": lambda: lo.conv2d(x, w, padding=1, stride=2, groups=64,
                                         layout="NHWC", kernel_layout="OIHW"),
        "weight grad": lambda: lo.conv_backward(x, x, w, padding=1, groups=64, layout="NHWC",
                                                kernel_layout="OIHW", needs=("weight",)),
        "transposed CF": lambda: lo.conv_transpose2d(xf, w, stride=2, padding=1, groups=64),
        "3-D CL": lambda: lo.conv(x3, w3, padding=1, groups=32, layout="NDHWC",
                                  kernel_layout="OIDHW"),
        "3-D CF": lambda: lo.conv(x3f, w3, padding=1, groups=32),
    }
    x3 = rng.standard_normal((8, 16, 16, 16, 32)).astype(np.float32)  # NDHWC, 4 MiB
    x3f = np.ascontiguousarray(np.moveaxis(x3, -1, 1))
    w3 = rng.standard_normal((32, 1, 3, 3, 3)).astype(np.float32)
    with lo.workspace_limit(2**20):
        for name, call in calls.items():
            extra = temporaries(call)
            assert extra < 1.25 * 2**20, (name, extra)
    assert volumes and all(volumes)  # the 3-D convs by one einsum per chunk


@pytest.mark.parametrize(("layout", "out_layout"), [("NCHW", "NHWC"), ("NHWC", "NCHW")])
def test_flat_depthwise_output_in_another_layout(layout, out_layout, forced):
    rng = np.random.default_rng(15)
    x = rng.standard_normal((2, 6, 9, 10))
    w = rng.standard_normal((12, 1, 3, 3))  # a channel multiplier of 2
    want = conv_ref(x, w, None, strides=(1, 2), pads=((1, 1), (0, 2)), dilations=(1, 1),
                    groups=6)
    got = lo.conv2d(act_to(x, "NCHW", layout), w, padding=((1, 1), (0, 2)), stride=(1, 2),
                    groups=6, layout=layout, kernel_layout="OIHW", out_layout=out_layout)
    assert forced == [True]
    np.testing.assert_allclose(act_from(got, out_layout, "NCHW"), want, rtol=1e-12,
                               atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 2),
    c=st.integers(1, 4),
    mult=st.integers(1, 2),
    h=st.integers(1, 8),
    w_=st.integers(1, 10),
    kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    pads=st.tuples(st.tuples(st.integers(0, 3), st.integers(0, 3)),
                   st.tuples(st.integers(0, 3), st.integers(0, 3))),
    chunk=st.sampled_from([1, 60, 4000]),
    weights_cap=st.sampled_from([1, 50, 1 << 18]),
    layout=st.sampled_from(["NCHW", "NHWC"]),
)
def test_property_depthwise_matches_reference(n, c, mult, h, w_, kernel, stride, dilation,
                                              pads, chunk, weights_cap, layout):
    """Any 2-D depthwise geometry (strides, dilation, one-sided padding, a multiplier), any
    chunk and column-tile size, both layouts: the forward conv and its gradients."""
    outs = [(size + b + e - d * (k - 1) - 1) // s + 1 for size, k, s, d, (b, e)
            in zip((h, w_), kernel, stride, dilation, pads, strict=True)]
    if min(outs) < 1:
        return
    rng = np.random.default_rng(n + c + h + w_ + sum(kernel))
    x = rng.standard_normal((n, c, h, w_))
    w = rng.standard_normal((c * mult, 1, *kernel))
    g = rng.standard_normal((n, c * mult, *outs))
    want = conv_ref(x, w, None, strides=stride, pads=pads, dilations=dilation, groups=c)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(depthwise_flat, "CHUNK_ELEMS", chunk)
        mp.setattr(depthwise_flat, "MAX_WEIGHT_ELEMS", weights_cap)
        mp.setattr(depthwise_flat, "ROW_WEIGHT_ELEMS", weights_cap)
        args = dict(stride=stride, padding=[tuple(p) for p in pads], dilation=dilation,
                    groups=c, layout=layout, kernel_layout="OIHW")
        got = lo.conv2d(act_to(x, "NCHW", layout), w, **args)
        np.testing.assert_allclose(act_from(got, layout, "NCHW"), want, rtol=1e-12,
                                   atol=1e-12)
        if mult == 1:
            gx, gw, _ = lo.conv_backward(act_to(g, "NCHW", layout), act_to(x, "NCHW", layout),
                                         w, **args)
            want_x, want_w = _depthwise_vjp_ref(x, w, g, stride, pads, dilation)
            np.testing.assert_allclose(gw, want_w, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(act_from(gx, layout, "NCHW"), want_x, rtol=1e-12,
                                       atol=1e-12)


@pytest.mark.parametrize("channels_last", [True, False], ids=["last", "first"])
@pytest.mark.parametrize("threads", [1, 2])
def test_width_strides_by_phase_match_reference(channels_last, threads, forced, monkeypatch):
    """Strided (undilated along the width) chunks stored by column phase (`_phase_piece`):
    every strided case of the table, with NaN past and around the written cells of the
    scratch (`forced`), against the reference; and the same cases by runs of C values."""
    pieces = []
    real = depthwise_flat._phase_piece

    def spy(*args):
        pieces.append(args[0].shape)
        return real(*args)

    monkeypatch.setattr(depthwise_flat, "_phase_piece", spy)
    strided = [c for c in _CASES if c[4][-1] > 1 and c[3][-1] == 1]
    assert len(strided) >= 3
    for phases in (True, False):
        monkeypatch.setattr(depthwise_flat, "_PHASES", phases)
        for case in strided:
            got, want = _case_conv(case, channels_last, threads)
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        if phases:
            assert pieces, "no chunk was stored by phase"
            pieces.clear()
    assert not pieces  # with phases off, none


_CASES_3D = [
    # (input NC*S, kernel, padding pairs, dilation, stride, channel multiplier)
    ((2, 3, 5, 6, 7), (3, 3, 3), ((1, 1), (1, 1), (1, 1)), (1, 1, 1), (1, 1, 1), 1),
    ((3, 2, 6, 5, 4), (2, 3, 3), ((0, 1), (2, 0), (1, 2)), (2, 1, 2), (2, 2, 1), 1),
    ((1, 4, 6, 7, 5), (2, 3, 2), ((1, 0), (2, 1), (0, 1)), (2, 1, 1), (2, 1, 2), 1),
    ((2, 2, 4, 5, 6), (3, 1, 3), ((2, 2), (0, 0), (1, 1)), (1, 1, 2), (1, 1, 1), 2),
    ((1, 3, 3, 4, 4), (3, 2, 2), ((0, 0), (1, 1), (0, 1)), (1, 1, 1), (3, 1, 1), 1),
]


@pytest.mark.parametrize("case", _CASES_3D, ids=lambda c: f"{c[0]}-k{c[1]}-d{c[3]}-s{c[4]}")
@pytest.mark.parametrize("layout", ["NDHWC", "NCDHW"])
@pytest.mark.parametrize("volume", [True, False], ids=["volume", "depth-taps"])
def test_3d_depthwise_matches_reference(case, layout, volume, forced, monkeypatch):
    """3-D depthwise convs as one einsum per chunk of output depths (`depthwise_volume`:
    unit width stride, no channel multiplier) or one 2-D `depthwise_flat` conv per depth tap
    (`depthwise_depth_taps`), in small runs of output depths (a tiny workspace limit), with
    a bias; on one thread and on two the same bits."""
    shape, ksize, pads, dilation, stride, mult = case
    c = shape[1]
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape)
    w = rng.standard_normal((c * mult, 1, *ksize))
    b = rng.standard_normal(c * mult)
    want = conv_ref(x, w, b, strides=stride, pads=pads, dilations=dilation, groups=c)
    monkeypatch.setattr(depthwise_flat, "_VOLUME", volume)
    by_volume = volume and stride[2] == 1 and mult == 1
    runs = record_taken(monkeypatch, kconv, "depthwise_depth_taps", taken=lambda r: True)
    volumes = record_taken(monkeypatch, kconv, "depthwise_volume", taken=lambda r: r)
    # one output depth a run (the volume needs a few planes of its input per thread)
    limit = 65536 if by_volume else 2048
    monkeypatch.setattr(depthwise_flat, "get_workspace_limit", lambda: limit)
    got = {}
    for threads in (1, 2):
        previous = set_num_threads(threads)
        try:
            got[threads] = lo.conv(act_to(x, "NCDHW", layout), w, b, padding=pads,
                                   dilation=dilation, stride=stride, groups=c, layout=layout,
                                   kernel_layout="OIDHW", algorithm="direct")
        finally:
            set_num_threads(previous)
    assert runs == ([] if by_volume else [True, True])
    assert volumes == ([True, True] if by_volume else [False, False] if mult == 1 else [])
    np.testing.assert_allclose(act_from(got[1], layout, "NCDHW"), want, rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_array_equal(got[1], got[2])


def test_small_depthwise_convs_stay_on_one_thread(monkeypatch):
    """Below `MIN_PARALLEL_MACS` the chunks run on the calling thread; above, split."""
    seen = spy_parallel(monkeypatch, depthwise_flat)
    x = np.zeros((1, 8, 8, 4), np.float32)  # 2304 multiply-adds
    lo.conv(x, np.ones((3, 3, 1, 4), np.float32), padding=1, groups=4, layout="NHWC")
    monkeypatch.setattr(depthwise_flat, "MIN_PARALLEL_MACS", 0)
    lo.conv(x, np.ones((3, 3, 1, 4), np.float32), padding=1, groups=4, layout="NHWC")
    assert seen == [1, get_num_threads()]


@pytest.fixture
def sample_runs(forced, monkeypatch):
    """`forced`, with chunks large enough for several whole samples: records the samples
    of every chunk the forward convs plan."""
    monkeypatch.setattr(depthwise_flat, "CHUNK_ELEMS", 1 << 14)
    runs = []
    real = depthwise_flat._Chunks

    def recording(*args, **kwargs):
        plan = real(*args, **kwargs)
        runs.extend(item[1] for item in plan.items)
        return plan

    monkeypatch.setattr(depthwise_flat, "_Chunks", recording)
    return runs


@pytest.mark.parametrize("case", _CASES, ids=lambda c: f"{c[0]}-k{c[1]}-d{c[3]}-s{c[4]}")
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("channels_last", [True, False], ids=["last", "first"])
def test_runs_of_whole_samples_match_reference(case, threads, channels_last, sample_runs):
    """Chunks holding several whole samples (5 samples: runs of 5 on one thread, 3 and 2
    on two), one padded piece and one einsum per run, NaN around the scratch they use."""
    case = ((5, *case[0][1:]), *case[1:])
    got, want = _case_conv(case, channels_last, threads)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert sorted(set(sample_runs)) == ([5] if threads == 1 else [2, 3])


@pytest.mark.parametrize("multiplier", [1, 2])
def test_runs_of_whole_samples_same_on_one_and_two_threads(multiplier, sample_runs):
    rng = np.random.default_rng(multiplier)
    x = rng.standard_normal((7, 6, 5, 3)).astype(np.float32)
    w = rng.standard_normal((3, 3, 1, 3 * multiplier)).astype(np.float32)
    w_ref = np.moveaxis(w.astype(np.float64), (2, 3), (1, 0))  # OIHW
    want = conv_ref(np.moveaxis(x, 3, 1).astype(np.float64), w_ref, None, strides=(1, 1),
                    pads=((1, 1), (1, 1)), dilations=(1, 1), groups=3)
    previous = set_num_threads(None)
    try:
        runs = []
        for n in (1, 2):
            set_num_threads(n)
            runs.append(lo.conv(x, w, padding=1, groups=3, layout="NHWC"))
    finally:
        set_num_threads(previous)
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_allclose(np.moveaxis(runs[0], 3, 1), want, rtol=1e-5, atol=1e-5)
    assert max(sample_runs) > 1


def test_runs_of_c_values_keep_one_sample_chunks(sample_runs):
    """A width stride over 96 float32 channels (einsum's loop over runs of C values, not
    stored by phase): one sample per chunk, and the reference's result."""
    rng = np.random.default_rng(14)
    x = rng.standard_normal((4, 96, 7, 9))
    w = rng.standard_normal((96, 1, 3, 3))
    want = conv_ref(x, w, None, strides=(2, 2), pads=((1, 1), (1, 1)), dilations=(1, 1),
                    groups=96)
    got = lo.conv(act_to(x, "NCHW", "NHWC").astype(np.float32),
                  w.astype(np.float32), stride=2, padding=1, groups=96, layout="NHWC",
                  kernel_layout="OIHW")
    np.testing.assert_allclose(act_from(got, "NHWC", "NCHW"), want, rtol=1e-4, atol=1e-4)
    assert sample_runs and set(sample_runs) == {1}


@pytest.mark.parametrize(("n", "fit", "parts", "want"),
                         [(8, 3, 2, [2, 2, 2, 2]), (7, 2, 2, [2, 2, 2, 1]), (5, 9, 1, [5]),
                          (6, 9, 2, [3, 3]), (3, 1, 2, [1, 1, 1])])
def test_sample_runs_split_evenly_over_the_threads(n, fit, parts, want, monkeypatch):
    """Runs as many as a multiple of the threads (8 samples that fit 3 to a chunk: 4 runs of
    2 on two threads, not 3, 3 and 2), of equal length but the last."""
    sizes = ((3, 3), (1, 1), (1, 1), ((1, 1), (1, 1)))
    per_sample = 6 * 7 * 4  # the padded piece of a 4x5x4 sample
    monkeypatch.setattr(depthwise_flat, "CHUNK_ELEMS", fit * per_sample)
    plan = depthwise_flat._Chunks((n, 4, 5, 4), (n, 4, 5, 4), sizes, np.float32, parts=parts)
    assert [item[1] for item in plan.items] == want


@pytest.mark.parametrize(("channels", "phased"), [(64, True), (72, False)])
def test_width_strides_by_phase_up_to_64_float32_channels(channels, phased, monkeypatch):
    """`PHASE_RUN_BYTES` (256) of channels per pixel and fewer are stored by phase."""
    pieces = record_taken(monkeypatch, depthwise_flat, "_phase_piece", taken=lambda r: True)
    x = np.ones((1, 6, 6, channels), np.float32)
    got = lo.conv(x, np.ones((3, 3, 1, channels), np.float32), stride=2, padding=1,
                  groups=channels, layout="NHWC")
    assert bool(pieces) == phased
    assert got[0, 1, 1, 0] == 9 and got[0, 0, 0, 0] == 4


def test_3d_depthwise_volume_declines_what_the_workspace_cannot_hold(monkeypatch):
    """One output depth's input planes larger than a thread's share of the workspace limit:
    the depth taps (which cut rows) run instead, with the reference's result."""
    volumes = record_taken(monkeypatch, kconv, "depthwise_volume", taken=lambda r: r)
    runs = record_taken(monkeypatch, kconv, "depthwise_depth_taps", taken=lambda r: True)
    monkeypatch.setattr(depthwise_flat, "get_workspace_limit", lambda: 4096)
    rng = np.random.default_rng(15)
    x = rng.standard_normal((1, 3, 4, 9, 8))
    w = rng.standard_normal((3, 1, 3, 3, 3))
    want = conv_ref(x, w, None, strides=(1, 1, 1), pads=((1, 1),) * 3, dilations=(1, 1, 1),
                    groups=3)
    got = lo.conv(act_to(x, "NCDHW", "NDHWC"), w, padding=1, groups=3, layout="NDHWC",
                  kernel_layout="OIDHW", algorithm="direct")
    np.testing.assert_allclose(act_from(got, "NDHWC", "NCDHW"), want, rtol=1e-12, atol=1e-12)
    assert volumes == [False] and runs == [True]
