"""The wide-row GEMM path of 2-D convolutions (`layoutops.kernels.wide_rows`) against the
plain-loop reference, in both layouts, with its chunking forced onto small inputs."""

from __future__ import annotations

import numpy as np
import pytest
from conv_reference import act_from, act_to, conv_ref, kernel_to
from forced_conv import KERNELS, conv2d_in, on_one_and_two_threads
from recording import record_taken

import layoutops as lo
from layoutops.kernels import conv as kconv
from layoutops.kernels import gemm as kgemm
from layoutops.kernels import wide_rows

pytestmark = pytest.mark.usefixtures("no_tiny_path")


@pytest.fixture(params=["accumulating GEMMs", "NumPy products and additions"])
def forced(monkeypatch, request):
    """The wide path on tiny inputs: no single-GEMM shortcut, few rows per halo row, small
    chunks (several per sample); records each call's result (None: not taken). Run with the
    BLAS GEMMs that add into the output and with the NumPy fallback."""
    if request.param != "accumulating GEMMs":
        monkeypatch.setattr(kgemm, "gemm", lambda *args, **kwargs: False)
    monkeypatch.setattr(kconv, "_MIN_SPLIT_BYTES", 0)
    monkeypatch.setattr(wide_rows, "MIN_ROWS_PER_HALO", 2)
    monkeypatch.setattr(wide_rows, "CHUNK_BYTES", 600)
    monkeypatch.setattr(wide_rows, "MIN_GEMM_FLOPS", {"A": 0, "B": 0})
    return record_taken(monkeypatch, kconv, "_wide_tile")



# (input NCHW, kernel OIHW, stride, padding pairs, dilation): odd and even sizes
_CASES = [
    ((2, 3, 11, 9), (4, 3, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),
    ((1, 4, 12, 10), (5, 4, 2, 2), (1, 1), ((0, 0), (0, 0)), (1, 1)),
    ((3, 2, 13, 8), (3, 2, 3, 2), (1, 2), ((2, 1), (0, 1)), (1, 1)),  # row stride 1, col 2
    ((2, 3, 12, 11), (2, 3, 2, 3), (1, 1), ((1, 1), (2, 2)), (2, 2)),  # dilated both ways
    ((2, 5, 10, 7), (6, 5, 4, 1), (1, 1), ((1, 2), (0, 0)), (1, 1)),  # one kernel column
]


@pytest.mark.parametrize("case", _CASES, ids=lambda c: f"{c[0]}-{c[1]}-s{c[2]}-d{c[4]}")
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_wide_rows_matches_reference(case, layout, forced):
    shape, wshape, stride, pads, dilation = case
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape)
    w = rng.standard_normal(wshape)
    b = rng.standard_normal(wshape[0])
    want = conv_ref(x, w, b, strides=stride, pads=pads, dilations=dilation)
    got = conv2d_in(layout, x, w, bias=b, stride=stride, padding=list(pads), dilation=dilation)
    assert forced and all(forced)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_wide_rows_same_result_on_one_and_two_threads(layout, forced):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 4, 14, 9))
    w = rng.standard_normal((5, 4, 3, 3))
    results = on_one_and_two_threads(lambda: conv2d_in(layout, x, w, padding=1))
    assert all(forced)
    np.testing.assert_array_equal(results[0], results[1])
    want = conv_ref(x, w, strides=(1, 1), pads=((1, 1), (1, 1)), dilations=(1, 1))
    np.testing.assert_allclose(results[0], want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_wide_rows_on_strided_input_padding_modes_and_half(layout, forced):
    """A strided (non-contiguous) input without padding (the block is a view: the general
    copy, not the opaque-item one), reflect padding, and float16 (a float32 result buffer
    instead of the output)."""
    rng = np.random.default_rng(7)
    big = rng.standard_normal((2, 3, 26, 20))
    x = big[:, :, ::2, ::2]  # (2, 3, 13, 10), strided
    w = rng.standard_normal((4, 3, 3, 3))
    xl = act_to(x, "NCHW", layout)
    if layout == "NHWC":
        xl = np.ascontiguousarray(np.moveaxis(big, 1, -1))[:, ::2, ::2]  # a strided NHWC view
    wl = kernel_to(w, KERNELS[layout], "OIHW")
    got = act_from(lo.conv2d(xl, wl, layout=layout, algorithm="im2col"), layout, "NCHW")
    want = conv_ref(x, w, strides=(1, 1), pads=((0, 0), (0, 0)), dilations=(1, 1))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    got = act_from(lo.conv2d(xl, wl, layout=layout, padding=1, padding_mode="reflect",
                             algorithm="im2col"), layout, "NCHW")
    want = conv_ref(x, w, strides=(1, 1), pads=((1, 1), (1, 1)), dilations=(1, 1),
                    mode="reflect")
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    got = lo.conv2d(xl.astype(np.float16), wl.astype(np.float16), layout=layout, padding=1,
                    algorithm="im2col")
    assert got.dtype == np.float16
    want = conv_ref(x.astype(np.float16), w.astype(np.float16), strides=(1, 1),
                    pads=((1, 1), (1, 1)), dilations=(1, 1))
    np.testing.assert_allclose(act_from(got, layout, "NCHW"), want, rtol=2e-3, atol=2e-2)
    assert len(forced) == 3 and all(forced)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_wide_rows_under_workspace_tiling(layout, forced):
    """Tiles cut by a small workspace limit: each tile's target is a strided part of the
    output (rows and columns cut)."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 3, 36, 33))
    w = rng.standard_normal((4, 3, 3, 3))
    with lo.workspace_limit(65536):
        got = conv2d_in(layout, x, w, padding=1)
    want = conv_ref(x, w, strides=(1, 1), pads=((1, 1), (1, 1)), dilations=(1, 1))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert len(forced) > 2 and any(forced)


def test_wide_rows_declines_what_it_does_not_cover(forced, monkeypatch):
    """Groups, row stride 2, one kernel row, 1-D / 3-D and too few rows per halo row run on
    the ordinary im2col chunks (and still match the reference)."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 4, 12, 9))
    cases = [
        (rng.standard_normal((4, 2, 3, 3)), {"groups": 2, "padding": 1}),
        (rng.standard_normal((3, 4, 3, 3)), {"stride": (2, 1), "padding": 1}),
        (rng.standard_normal((3, 4, 1, 3)), {"padding": (0, 1)}),
    ]
    for w, kw in cases:
        groups = kw.get("groups", 1)
        stride = kw.get("stride", (1, 1))
        pad = kw["padding"]
        pads = ((pad, pad), (pad, pad)) if isinstance(pad, int) else tuple((p, p) for p in pad)
        want = conv_ref(x, w, strides=stride, pads=pads, dilations=(1, 1), groups=groups)
        np.testing.assert_allclose(conv2d_in("NHWC", x, w, **kw), want, rtol=1e-12, atol=1e-12)
    assert forced == [False] * len(cases)
    monkeypatch.setattr(wide_rows, "MIN_ROWS_PER_HALO", 16)  # 12 rows < 16 per halo row
    w = rng.standard_normal((3, 4, 3, 3))
    want = conv_ref(x, w, strides=(1, 1), pads=((1, 1), (1, 1)), dilations=(1, 1))
    np.testing.assert_allclose(conv2d_in("NCHW", x, w, padding=1), want, rtol=1e-12, atol=1e-12)
    assert forced[-1] is False


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_wide_rows_on_reversed_views(layout, forced):
    """Negative strides (a flipped view of the input) read through the general copy."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 3, 13, 11))
    w = rng.standard_normal((4, 3, 3, 3))
    xl = act_to(x, "NCHW", layout)
    flipped = xl[:, ::-1] if layout == "NHWC" else xl[:, :, ::-1]  # rows reversed
    flipped = flipped[..., ::-1] if layout == "NCHW" else flipped[:, :, ::-1]  # and columns
    want = conv_ref(x[:, :, ::-1, ::-1], w, strides=(1, 1), pads=((1, 1), (1, 1)),
                    dilations=(1, 1))
    got = lo.conv2d(flipped, kernel_to(w, KERNELS[layout], "OIHW"), padding=1, layout=layout,
                    algorithm="im2col")
    np.testing.assert_allclose(act_from(got, layout, "NCHW"), want, rtol=1e-12, atol=1e-12)
    assert forced and all(forced)
