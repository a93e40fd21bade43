"""2-D convolutions by per-tap GEMMs on flat views of the input
(`layoutops.kernels.taps_flat`) against the plain-loop reference, in both layouts, with the
path forced onto small inputs."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from conv_reference import conv_ref
from forced_conv import assert_infs_where_due, conv2d_in, on_one_and_two_threads
from hypothesis import given, settings
from hypothesis import strategies as st
from recording import record_taken

import layoutops as lo
from layoutops.kernels import conv as kconv
from layoutops.kernels import taps_flat
from layoutops.kernels.gemm import available

pytestmark = [
    pytest.mark.skipif(not available(np.float64),
                       reason="no BLAS gemm with beta for float64 here"),
    pytest.mark.usefixtures("no_tiny_path"),
]



def _force(mp, chunk_bytes: int = 1200):
    """The flat path on tiny inputs (no single-GEMM shortcut, any channel and tap count,
    narrow outputs, chunks of a few rows); records whether each tile took it."""
    mp.setattr(kconv, "_MIN_SPLIT_BYTES", 0)
    mp.setattr(taps_flat, "MIN_CHANNELS", 1)
    mp.setattr(taps_flat, "MAX_TAPS", 100)
    mp.setattr(taps_flat, "MIN_WIDTH_PER_BORDER", 1)
    mp.setattr(taps_flat, "MIN_PIXELS", 1)
    mp.setattr(taps_flat, "MIN_GEMM_FLOPS", 0)
    mp.setattr(taps_flat, "MIN_PIXELS_LAST", 1)
    mp.setattr(taps_flat, "CHUNK_BYTES", chunk_bytes)
    return record_taken(mp, kconv, "_taps_flat_tile")


@pytest.fixture
def forced(monkeypatch):
    return _force(monkeypatch)


# (input NCHW, kernel OIHW, padding pairs (rows, columns) with pl + pr = (kw - 1) * dw,
# dilation): odd and even sizes
_CASES = [
    ((2, 3, 11, 9), (4, 3, 3, 3), ((1, 1), (1, 1)), (1, 1)),
    ((1, 4, 12, 10), (5, 4, 2, 2), ((0, 1), (0, 1)), (1, 1)),  # even kernel, "same"
    ((3, 2, 13, 8), (3, 2, 3, 5), ((2, 0), (1, 3)), (1, 1)),  # asymmetric, wide kernel
    ((2, 3, 12, 11), (2, 3, 3, 3), ((0, 3), (2, 2)), (2, 2)),  # dilated
    ((2, 5, 10, 7), (6, 5, 4, 1), ((1, 2), (0, 0)), (1, 1)),  # one kernel column: no wrap
    ((2, 3, 9, 10), (4, 3, 2, 2), ((1, 1), (1, 2)), (1, 3)),  # no kernel column of shift 0
    ((2, 3, 4, 9), (3, 3, 3, 3), ((5, 6), (1, 1)), (1, 1)),  # chunks no tap covers
]


@pytest.mark.parametrize("case", _CASES, ids=lambda c: f"{c[0]}-{c[1]}-p{c[2]}-d{c[3]}")
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_taps_flat_matches_reference(case, layout, dtype, forced):
    shape, wshape, pads, dilation = case
    rng = np.random.default_rng(21)
    x = rng.standard_normal(shape)
    w = rng.standard_normal(wshape)
    b = rng.standard_normal(wshape[0])
    want = conv_ref(x, w, b, strides=(1, 1), pads=pads, dilations=dilation)
    got = conv2d_in(layout, x.astype(dtype), w.astype(dtype), bias=b.astype(dtype),
               padding=list(pads), dilation=dilation)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    assert forced and all(forced)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_taps_flat_wrapped_reads_leave_no_trace(layout, forced):
    """A tap shifted off a row's end reads the neighbouring row's edge pixel in the flat
    view; an inf there must not reach the output pixels it does not belong to (no
    inf - inf, no NaN: the wrapped columns are put back, not corrected by subtraction)."""
    rng = np.random.default_rng(22)
    x = rng.uniform(1, 2, (2, 3, 8, 9))
    x[0, 1, 3, -1] = np.inf  # last column: the next row's first output reads it wrapped
    x[1, 2, 5, 0] = np.inf  # first column: the previous row's last output reads it
    w = rng.uniform(1, 2, (4, 3, 3, 3))
    want = conv_ref(x, w, strides=(1, 1), pads=((1, 1), (1, 1)), dilations=(1, 1))
    got = conv2d_in(layout, x, w, padding=1)
    assert forced and all(forced)
    assert_infs_where_due(got, want)


def test_taps_flat_same_on_one_and_two_threads_and_under_tiling(forced):
    rng = np.random.default_rng(23)
    x = rng.standard_normal((3, 4, 30, 17))
    w = rng.standard_normal((5, 4, 3, 3))
    want = conv_ref(x, w, strides=(1, 1), pads=((1, 1), (1, 1)), dilations=(1, 1))
    for layout in ("NCHW", "NHWC"):
        results = on_one_and_two_threads(functools.partial(conv2d_in, layout, x, w, padding=1))
        np.testing.assert_array_equal(results[0], results[1])
        np.testing.assert_allclose(results[0], want, rtol=1e-12, atol=1e-12)
        with lo.workspace_limit(65536):  # row tiles: tiles start inside the input
            tiled = conv2d_in(layout, x, w, padding=1)
        np.testing.assert_allclose(tiled, want, rtol=1e-12, atol=1e-12)
    assert forced and all(forced)


def test_taps_flat_declines_what_it_does_not_cover(forced):
    """A narrower output than input, stride 2, groups, reflect padding and an input without
    flat rows take the other paths, and still match the reference."""
    rng = np.random.default_rng(24)
    x = rng.standard_normal((2, 4, 12, 11))
    w = rng.standard_normal((4, 4, 3, 3))
    for kw in (
        dict(padding=((1, 1), (0, 0))),
        dict(padding=1, stride=2),
        dict(padding=1, groups=2),
        dict(padding=1, padding_mode="reflect"),
    ):
        groups = kw.get("groups", 1)
        wk = w[:, : 4 // groups]
        pads = kw["padding"] if isinstance(kw["padding"], tuple) else ((1, 1), (1, 1))
        s = kw.get("stride", 1)
        mode = kw.get("padding_mode", "zeros")
        want = conv_ref(x, wk, strides=(s, s), pads=pads, dilations=(1, 1), groups=groups,
                        mode=mode)
        args = dict(kw, padding=list(pads))
        np.testing.assert_allclose(conv2d_in("NCHW", x, wk, **args), want, rtol=1e-12,
                                   atol=1e-12)
    assert not any(forced)  # none of those reached it (reflect never asks)
    xs = rng.standard_normal((2, 4, 12, 22))[:, :, :, ::2]  # no flat pixel runs
    want = conv_ref(xs, w, strides=(1, 1), pads=((1, 1), (1, 1)), dilations=(1, 1))
    got = lo.conv2d(xs, w, padding=1, layout="NCHW", algorithm="im2col")
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert forced[-1] is False


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 2),
    c=st.integers(1, 3),
    h=st.integers(1, 9),
    w_=st.integers(2, 12),
    kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    rows=st.tuples(st.integers(0, 3), st.integers(0, 3)),
    left=st.integers(0, 6),
    chunk=st.sampled_from([1, 400, 4000]),
    layout=st.sampled_from(["NCHW", "NHWC"]),
)
def test_property_taps_flat_matches_reference(n, c, h, w_, kernel, dilation, rows, left,
                                              chunk, layout):
    """Any "same width" geometry (pad_left + pad_right = (kw - 1) * dw, any split), any row
    padding, chunks of one row or more."""
    spread = (kernel[1] - 1) * dilation[1]
    left = min(left, spread)
    pads = (rows, (left, spread - left))
    out_rows = h + sum(rows) - (kernel[0] - 1) * dilation[0]
    if out_rows < 1 or kernel == (1, 1):
        return
    rng = np.random.default_rng(n + 10 * c + 100 * h + 1000 * w_)
    x = rng.standard_normal((n, c, h, w_))
    w = rng.standard_normal((2, c, *kernel))
    want = conv_ref(x, w, strides=(1, 1), pads=pads, dilations=dilation)
    with pytest.MonkeyPatch.context() as mp:
        taken = _force(mp, chunk)
        got = conv2d_in(layout, x, w, padding=list(pads), dilation=dilation)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert taken == [w_ >= spread]  # narrower than its border columns: left to the others
