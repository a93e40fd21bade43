"""unfold / fold against plain loops (tests/pool_reference.py), N-d, in both forms."""

from __future__ import annotations

import math

import numpy as np
import pool_reference as ref
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import layoutops as lo

LAYOUTS = {1: ("NCW", "NWC"), 2: ("NCHW", "NHWC", "NWHC"), 3: ("NCDHW", "NDHWC")}

CASES = [
    # in_sizes, kernel, stride, dilation, pads ((begin, end) per axis)
    ((5,), (2,), (1,), (1,), ((0, 0),)),
    ((6,), (3,), (2,), (2,), ((1, 2),)),
    ((7,), (2,), (3,), (1,), ((0, 1),)),
    ((4, 5), (2, 3), (1, 1), (1, 1), ((0, 0), (1, 1))),
    ((6, 7), (3, 2), (2, 3), (1, 2), ((1, 0), (2, 1))),
    ((5, 4), (1, 2), (3, 1), (2, 1), ((0, 2), (0, 0))),
    ((3, 4, 5), (2, 2, 3), (1, 2, 2), (1, 1, 2), ((0, 1), (1, 0), (2, 2))),
    ((4, 3, 2), (2, 1, 2), (2, 1, 1), (2, 1, 1), ((1, 1), (0, 0), (0, 1))),
]


def _perm(src, dst):
    return tuple(src.index(c) for c in dst)


def _canon(layout):
    return "NC" + "".join(c for c in layout if c not in "NC")


def _x(shape, seed=0):
    return np.random.default_rng(seed).integers(-9, 10, size=shape).astype(np.float64)


@pytest.mark.parametrize("case", CASES, ids=[str(c[0]) + str(c[1]) for c in CASES])
def test_unfold_and_fold_match_reference(case):
    in_sizes, ks, ss, ds, pads = case
    rank = len(in_sizes)
    r = _x((2, 3, *in_sizes), seed=len(in_sizes))
    want_cf = ref.unfold(r, ks, ss, ds, pads)
    want_cl = ref.unfold_channels_last(r, ks, ss, ds, pads)
    rng = np.random.default_rng(1)
    cols_cf = rng.standard_normal(want_cf.shape)
    want_fold = ref.fold(cols_cf, in_sizes, ks, ss, ds, pads)
    # the same patches in the channels-last form (kernel offset major, channel minor)
    kk = math.prod(ks)
    blocks = want_cl.shape[1:-1]
    cols_cl = (
        cols_cf.reshape(2, 3, kk, *blocks)
        .transpose(0, *range(3, 3 + rank), 2, 1)
        .reshape(want_cl.shape)
    )
    kw = dict(stride=ss, padding=pads, dilation=ds)
    for layout in LAYOUTS[rank]:
        x = np.ascontiguousarray(r.transpose(_perm(_canon(layout), layout)))
        got = lo.unfold(x, ks, layout=layout, **kw)
        channels_last = layout.index("C") > 1
        np.testing.assert_array_equal(got, want_cl if channels_last else want_cf)
        folded = lo.fold(
            cols_cl if channels_last else cols_cf, in_sizes, ks, layout=layout, **kw
        )
        assert folded.shape == x.shape and folded.flags.c_contiguous
        np.testing.assert_allclose(
            folded.transpose(_perm(layout, _canon(layout))), want_fold, rtol=1e-12, atol=1e-12
        )


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_fold_of_ones_counts_overlaps_and_fold_unfold_relation(layout):
    in_sizes, ks, ss, ds, pads = (6, 5), (3, 2), (2, 1), (1, 2), ((1, 1), (0, 2))
    kw = dict(stride=ss, padding=pads, dilation=ds, layout=layout)
    x = _x((2, 3, 6, 5) if layout == "NCHW" else (2, 6, 5, 3))
    cols = lo.unfold(x, ks, **kw)
    counts = lo.fold(np.ones_like(cols), in_sizes, ks, **kw)
    # counts by plain loops: how many windows cover each cell
    want = np.zeros(in_sizes)
    outs = [ref.out_size(n, k, s, d, p) for n, k, s, d, p in zip(in_sizes, ks, ss, ds, pads,
                                                                    strict=True)]
    for oh in range(outs[0]):
        for ow in range(outs[1]):
            for i in range(ks[0]):
                for j in range(ks[1]):
                    h = oh * ss[0] - pads[0][0] + i * ds[0]
                    w = ow * ss[1] - pads[1][0] + j * ds[1]
                    if 0 <= h < in_sizes[0] and 0 <= w < in_sizes[1]:
                        want[h, w] += 1
    for c in range(3):
        plane = counts[0, c] if layout == "NCHW" else counts[0, :, :, c]
        np.testing.assert_array_equal(plane, want)
    # fold(unfold(x)) == x * counts
    np.testing.assert_allclose(lo.fold(cols, in_sizes, ks, **kw), x * counts)


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    k=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    s=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    d=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    p=st.tuples(*[st.integers(0, 2)] * 4),
    layout=st.sampled_from(LAYOUTS[2]),
)
def test_fold_is_the_adjoint_of_unfold(h, w, k, s, d, p, layout):
    shape = (2, 3, h, w) if layout == "NCHW" else (2, h, w, 3) if layout == "NHWC" else (2, w, h, 3)
    kw = dict(stride=s, padding=p, dilation=d, layout=layout)
    sizes = (h, w) if layout != "NWHC" else (w, h)
    pairs = ((p[0], p[1]), (p[2], p[3]))
    if any(ref.out_size(n, kk, ss, dd, pp) < 1
           for n, kk, ss, dd, pp in zip(sizes, k, s, d, pairs, strict=True)):
        with pytest.raises(ValueError, match="`unfold`: output size"):
            lo.unfold(np.zeros(shape), k, **kw)
        return
    rng = np.random.default_rng(h * 7 + w)
    x = rng.standard_normal(shape)
    cols = lo.unfold(x, k, **kw)
    y = rng.standard_normal(cols.shape)
    np.testing.assert_allclose(
        np.vdot(cols, y), np.vdot(x, lo.fold(y, sizes, k, **kw)), rtol=1e-10
    )


def test_unfold_keeps_dtype_and_padding_strings():
    x = np.arange(2 * 3 * 5 * 4, dtype=np.uint8).reshape(2, 3, 5, 4)
    got = lo.unfold(x, 3, stride=2, padding="same")
    assert got.dtype == np.uint8
    pads = (ref.same_padding(5, 3, 2, 1), ref.same_padding(4, 3, 2, 1))
    np.testing.assert_array_equal(got, ref.unfold(x, (3, 3), (2, 2), (1, 1), pads))
    assert got.shape == (2, 27, 3 * 2)
    got = lo.unfold(x, 2, padding="valid")
    np.testing.assert_array_equal(got, ref.unfold(x, (2, 2), (1, 1), (1, 1), ((0, 0), (0, 0))))
    half = lo.fold(lo.unfold(x.astype(np.float16), 2), (5, 4), 2)
    assert half.dtype == np.float16
    np.testing.assert_allclose(
        half.astype(np.float64), lo.fold(lo.unfold(x.astype(np.float64), 2), (5, 4), 2)
    )
    assert lo.fold(np.ones((1, 4, 4), np.int32), (3, 3), 2).dtype == np.int32


def test_fold_rank_and_default_layout():
    cols = np.ones((1, 4, 4))
    assert lo.fold(cols, 3, 2).shape == (1, 1, 3, 3)  # ints only: 2-D channels-first
    assert lo.fold(cols, (5,), (2,)).shape == (1, 2, 5)  # 1-D: C = 4 / 2
    with lo.default_layout("channels_last"):
        # rank-3 cols under channels-last: 1-D (N, L, K*C)
        assert lo.fold(np.ones((1, 4, 6)), 5, 2).shape == (1, 5, 3)
        assert lo.unfold(np.ones((1, 5, 5, 2)), 2).shape == (1, 4, 4, 8)
    assert lo.fold(np.ones((1, 2, 2, 8)), 3, 2, layout="NHWC").shape == (1, 3, 3, 2)


def test_patch_errors():
    with pytest.raises(lo.LayoutError, match=r"`unfold`: layout 'NHCW' has C between spatial"):
        lo.unfold(np.ones((1, 4, 2, 4)), 2, layout="NHCW")
    with pytest.raises(ValueError, match=r"`unfold`: output size along 'W' would be 0 < 1"):
        lo.unfold(np.ones((1, 1, 4, 2)), 3)
    with pytest.raises(ValueError, match=r"`unfold`: `kernel_size` must be >= 1"):
        lo.unfold(np.ones((1, 1, 4, 4)), 0)
    with pytest.raises(ValueError, match=r"`fold`: `cols` for layout NCHW .* must have shape "
                                         r"\(N, 4\*C, 4\)"):
        lo.fold(np.ones((1, 4, 5)), (3, 3), 2)
    with pytest.raises(ValueError, match=r"`fold`: `cols` for layout NCHW"):
        lo.fold(np.ones((1, 5, 4)), (3, 3), 2)
    with pytest.raises(ValueError, match=r"`fold`: `cols` for layout NHWC .* \(N, 2, 2, 4\*C\)"):
        lo.fold(np.ones((1, 2, 3, 4)), (3, 3), 2, layout="NHWC")
    with pytest.raises(TypeError, match=r"`fold`: `cols` must be a numeric \(not bool\)"):
        lo.fold(np.ones((1, 4, 4), bool), (3, 3), 2)
    with pytest.raises(ValueError, match=r"`fold`: `output_size` must be >= 1"):
        lo.fold(np.ones((1, 4, 4)), (0, 3), 2)
    with pytest.raises(ValueError, match=r"`fold`: output size along 'H' would be"):
        lo.fold(np.ones((1, 4, 4)), (1, 3), 2)
    with pytest.raises(lo.LayoutError, match=r"`fold`: layout 'NHWC' has 4 axes"):
        lo.fold(np.ones((1, 4, 4)), (5,), 2, layout="NHWC")
