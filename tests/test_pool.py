"""Pooling ops against the plain-loop references of tests/pool_reference.py, in every layout."""

from __future__ import annotations

import random

import numpy as np
import pool_reference as ref
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from peak_memory import temporaries

import layoutops as lo
import layoutops.kernels.pool as kpool

LAYOUTS = {1: ("NCW", "NWC"), 2: ("NCHW", "NHWC", "NWHC"), 3: ("NCDHW", "NDHWC")}


def _perm(src: str, dst: str) -> tuple[int, ...]:
    return tuple(src.index(c) for c in dst)


def _canon(layout: str) -> str:
    return "NC" + "".join(c for c in layout if c not in "NC")


def to_layout(r, layout):
    """An (N, C, *spatial-in-layout-order) array in ``layout``."""
    return np.ascontiguousarray(r.transpose(_perm(_canon(layout), layout)))


def from_layout(y, layout):
    return y.transpose(_perm(layout, _canon(layout)))


def _grid(rank: int, count: int, seed: int):
    rnd = random.Random(seed)
    sizes = [1, 2, 4, 5, 6, 7] if rank < 3 else [2, 3, 4, 5]
    cases = []
    while len(cases) < count:
        ks = tuple(rnd.choice([1, 2, 3]) for _ in range(rank))
        ss = tuple(rnd.choice([1, 2, 3, 4]) for _ in range(rank))
        ds = tuple(rnd.choice([1, 1, 2]) for _ in range(rank))
        pads = tuple((rnd.choice([0, 0, 1, 2]), rnd.choice([0, 0, 1, 2])) for _ in range(rank))
        in_sizes = tuple(rnd.choice(sizes) for _ in range(rank))
        ceil_mode = rnd.random() < 0.5
        cases.append((in_sizes, ks, ss, ds, pads, ceil_mode))
    return cases


GRID = (
    [(1, c) for c in _grid(1, 40, 1)]
    + [(2, c) for c in _grid(2, 40, 2)]
    + [(3, c) for c in _grid(3, 12, 3)]
)


def _case_id(case):
    rank, (in_sizes, ks, ss, ds, pads, ceil_mode) = case
    return f"in{in_sizes}-k{ks}-s{ss}-d{ds}-p{pads}-{'ceil' if ceil_mode else 'floor'}"


def _data(shape, seed=0):
    rng = np.random.default_rng(seed)
    # few distinct values so that ties happen
    return rng.integers(-4, 5, size=shape).astype(np.float64) + rng.choice([0, 0.5], size=shape)


@pytest.mark.usefixtures("both_argmax_paths")
@pytest.mark.parametrize("case", GRID, ids=[_case_id(c) for c in GRID])
def test_pools_match_reference_in_every_layout(case):
    rank, (in_sizes, ks, ss, ds, pads, ceil_mode) = case
    r = _data((2, 3, *in_sizes), seed=sum(in_sizes))
    kw = dict(stride=ss, padding=pads, dilation=ds, ceil_mode=ceil_mode)
    if not ref.valid_config(in_sizes, ks, ss, ds, pads, ceil_mode):
        for layout in LAYOUTS[rank]:
            with pytest.raises(ValueError, match="`max_pool`"):
                lo.max_pool(to_layout(r, layout), ks, layout=layout, **kw)
            with pytest.raises(ValueError, match="`avg_pool`"):
                lo.avg_pool(to_layout(r, layout), ks, layout=layout, **kw)
        return
    want_max, want_idx = ref.max_pool(r, ks, ss, ds, pads, ceil_mode)
    want_avg = ref.avg_pool(r, ks, ss, ds, pads, ceil_mode, count_include_pad=True)
    want_avg_ex = ref.avg_pool(r, ks, ss, ds, pads, ceil_mode, count_include_pad=False)
    want_lp = ref.lp_pool(r, 3, ks, ss, ds, pads, ceil_mode)
    for layout in LAYOUTS[rank]:
        x = to_layout(r, layout)
        out, idx = lo.max_pool(x, ks, return_indices=True, layout=layout, **kw)
        assert out.flags.c_contiguous and idx.dtype == np.int64
        np.testing.assert_array_equal(from_layout(out, layout), want_max)
        np.testing.assert_array_equal(from_layout(idx, layout), want_idx)
        np.testing.assert_array_equal(
            from_layout(lo.max_pool(x, ks, layout=layout, **kw), layout), want_max
        )
        got = lo.avg_pool(x, ks, layout=layout, **kw)
        np.testing.assert_allclose(from_layout(got, layout), want_avg, rtol=1e-12, atol=1e-12)
        got = lo.avg_pool(x, ks, count_include_pad=False, layout=layout, **kw)
        np.testing.assert_allclose(from_layout(got, layout), want_avg_ex, rtol=1e-12, atol=1e-12)
        got = lo.lp_pool(x, 3, ks, layout=layout, **kw)
        np.testing.assert_allclose(from_layout(got, layout), want_lp, rtol=1e-12, atol=1e-12)


def test_grid_covers_the_edge_cases():
    """The generated grid holds what it is meant to: stride > kernel, dilation, asymmetric
    padding, ceil_mode with a dropped window, odd and even sizes, invalid configs."""
    flags = set()
    for _, (in_sizes, ks, ss, ds, pads, ceil_mode) in GRID:
        if any(s > k for s, k in zip(ss, ks, strict=True)):
            flags.add("stride>kernel")
        if any(d > 1 for d in ds):
            flags.add("dilation")
        if any(p[0] != p[1] for p in pads):
            flags.add("asymmetric")
        if any(n % 2 == 0 for n in in_sizes) and any(n % 2 for n in in_sizes):
            flags.add("odd+even")
        valid = ref.valid_config(in_sizes, ks, ss, ds, pads, ceil_mode)
        flags.add("valid" if valid else "invalid")
        if ceil_mode and valid:
            args = list(zip(in_sizes, ks, ss, ds, pads, strict=True))
            floor = [ref.out_size(*a) for a in args]
            ceil = [ref.out_size(*a, True) for a in args]
            if ceil != floor:
                flags.add("ceil adds a window")
    assert flags >= {
        "stride>kernel", "dilation", "asymmetric", "odd+even", "valid", "invalid",
        "ceil adds a window",
    }


@pytest.mark.usefixtures("both_argmax_paths")
def test_max_pool_ceil_mode_last_window_starts_in_padding():
    # in 5, kernel 2, stride 2, pad 1: windows would start at -1, 1, 3, 5; the one at 5
    # starts in the end padding and is dropped (PyTorch), so ceil_mode gives 3 outputs, not 4
    x = np.array([[[1.0, 9.0, 2.0, 3.0, 8.0]]])
    out, idx = lo.max_pool(x, 2, stride=2, padding=1, ceil_mode=True, return_indices=True)
    assert out.tolist() == [[[1.0, 9.0, 8.0]]]
    assert idx.tolist() == [[[0, 1, 4]]]
    assert ref.out_size(5, 2, 2, 1, (1, 1), True) == 3
    # the kept last window (start 3) reads the input and the end padding: the divisor counts
    # 2 taps with count_include_pad, 2 without (3 and 4 are input, no overhang here)
    avg = lo.avg_pool(x, 2, stride=2, padding=1, ceil_mode=True)
    assert avg.tolist() == [[[0.5, 5.5, 5.5]]]
    # in 6, kernel 3, stride 2, pad 1: the last window starts at 5 (the last input cell),
    # covers the end pad (6) and the overhang (7): divisor 2 with padding, 1 without
    x = np.arange(1.0, 7.0).reshape(1, 1, 6)
    avg = lo.avg_pool(x, 3, stride=2, padding=1, ceil_mode=True)
    assert avg[0, 0, -1] == 6.0 / 2
    avg = lo.avg_pool(x, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    assert avg[0, 0, -1] == 6.0
    for layout in ("NCHW", "NHWC"):
        r = _data((1, 2, 5, 6))
        xl = to_layout(r, layout)
        got = lo.max_pool(xl, 2, stride=2, padding=1, ceil_mode=True, layout=layout)
        want, _ = ref.max_pool(r, (2, 2), (2, 2), (1, 1), ((1, 1), (1, 1)), True)
        assert want.shape[2:] == (3, 4)
        np.testing.assert_array_equal(from_layout(got, layout), want)


@pytest.mark.usefixtures("both_argmax_paths")
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int64, np.bool_])
def test_integer_and_bool_max_pool_with_padding(layout, dtype):
    """Padding is excluded, not value-filled: a 0 (or a negative) is never beaten by it."""
    rng = np.random.default_rng(3)
    if dtype == np.bool_:
        r = rng.random((2, 2, 5, 4)) < 0.3
    elif dtype == np.int8:
        r = rng.integers(-100, -1, size=(2, 2, 5, 4)).astype(dtype)
    else:
        r = rng.integers(0, 3, size=(2, 2, 5, 4)).astype(dtype)
    x = to_layout(r, layout)
    kw = dict(stride=2, padding=((1, 2), (2, 1)), dilation=(1, 2), ceil_mode=True)
    out, idx = lo.max_pool(x, (3, 3), return_indices=True, layout=layout, **kw)
    want, want_idx = ref.max_pool(r, (3, 3), (2, 2), (1, 2), ((1, 2), (2, 1)), True)
    assert out.dtype == dtype
    np.testing.assert_array_equal(from_layout(out, layout), want)
    np.testing.assert_array_equal(from_layout(idx, layout), want_idx)
    if dtype == np.int8:
        assert out.max() < 0  # padding never contributed a 0


@pytest.mark.usefixtures("both_argmax_paths")
def test_all_zero_uint8_image_keeps_first_in_bounds_index():
    x = np.zeros((1, 1, 4, 4), np.uint8)
    out, idx = lo.max_pool(x, 3, stride=2, padding=1, return_indices=True)
    assert out.tolist() == [[[[0, 0], [0, 0]]]]
    # first in-bounds cell of each window in row-major window order
    assert idx.tolist() == [[[[0, 1], [4, 5]]]]


@pytest.mark.usefixtures("both_argmax_paths")
def test_ties_go_to_the_first_cell_in_window_order():
    x = np.array([[[[1.0, 7.0], [7.0, 7.0]]]])
    out, idx = lo.max_pool(x, 2, return_indices=True)
    assert out.item() == 7.0 and idx.item() == 1
    # NWHC: window order is W-major, so (w=0, h=1) comes before (w=1, h=0)
    xl = x.transpose(0, 3, 2, 1)  # NWHC
    out, idx = lo.max_pool(xl, 2, return_indices=True, layout="NWHC")
    assert idx.item() == 1  # flat w * H + h of (w=0, h=1)
    # -inf everywhere: the first in-bounds cell
    x = np.full((1, 1, 3), -np.inf)
    _, idx = lo.max_pool(x, 3, padding=1, stride=1, return_indices=True)
    assert idx.tolist() == [[[0, 0, 1]]]


@pytest.mark.usefixtures("both_argmax_paths")
def test_nan_makes_the_output_nan_with_the_last_nan_index():
    nan = np.nan
    x = np.array([[[1.0, nan, 9.0, nan, 2.0, 3.0, 6.0, 5.0, 4.0]]])
    out, idx = lo.max_pool(x, 3, return_indices=True)
    assert np.isnan(out[0, 0, :2]).all() and out[0, 0, 2] == 6.0
    assert idx.tolist() == [[[1, 3, 6]]]
    # two NaNs in a window: the last; a larger value after a NaN does not win
    out, idx = lo.max_pool(x, 6, stride=3, return_indices=True)
    assert np.isnan(out).all() and idx.tolist() == [[[3, 3]]]
    assert np.isnan(lo.max_pool(x, 3)[0, 0, :2]).all()
    # 2-D: last NaN in row-major window order
    x = np.zeros((1, 1, 2, 2))
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = nan
    out, idx = lo.max_pool(x, 2, return_indices=True)
    assert np.isnan(out.item()) and idx.item() == 2
    out, idx = lo.adaptive_max_pool(x, 1, return_indices=True)
    assert np.isnan(out.item()) and idx.item() == 2
    assert np.isnan(lo.global_max_pool(x).item())
    # NaN in avg/lp propagates
    assert np.isnan(lo.avg_pool(x, 2).item()) and np.isnan(lo.lp_pool(x, 2, 2).item())


@pytest.mark.parametrize(
    ("rank", "in_sizes", "out_sizes"),
    [
        (1, (7,), (3,)),
        (1, (5,), (8,)),
        (2, (7, 5), (3, 2)),
        (2, (5, 9), (4, 3)),
        (2, (6, 4), (3, 2)),
        (3, (5, 4, 3), (2, 3, 2)),
    ],
)
def test_adaptive_pools_match_reference(rank, in_sizes, out_sizes):
    r = _data((2, 3, *in_sizes), seed=7)
    r[0, 0].flat[1] = np.nan
    want_avg = ref.adaptive_pool(r, out_sizes, "avg")
    want_max, want_idx = ref.adaptive_pool(r, out_sizes, "max")
    for layout in LAYOUTS[rank]:
        x = to_layout(r, layout)
        got = lo.adaptive_avg_pool(x, out_sizes, layout=layout)
        np.testing.assert_allclose(from_layout(got, layout), want_avg, rtol=1e-12, atol=1e-15)
        out, idx = lo.adaptive_max_pool(x, out_sizes, return_indices=True, layout=layout)
        np.testing.assert_array_equal(from_layout(out, layout), want_max)
        np.testing.assert_array_equal(from_layout(idx, layout), want_idx)
        out = lo.adaptive_max_pool(x, out_sizes, layout=layout)
        np.testing.assert_array_equal(from_layout(out, layout), want_max)


def test_adaptive_max_pool_integers_and_none_sizes():
    r = np.random.default_rng(1).integers(0, 4, size=(1, 2, 7, 5)).astype(np.uint8)
    out, idx = lo.adaptive_max_pool(r, (3, None), return_indices=True)
    want, want_idx = ref.adaptive_pool(r, (3, 5), "max")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(idx, want_idx)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "NWHC"])
def test_global_pools(layout):
    r = _data((2, 3, 5, 4))
    x = to_layout(r, layout)
    got = lo.global_avg_pool(x, layout=layout)
    assert got.shape == to_layout(np.zeros((2, 3, 1, 1)), layout).shape
    np.testing.assert_allclose(from_layout(got, layout), r.mean(axis=(2, 3), keepdims=True))
    got = lo.global_max_pool(x, layout=layout)
    np.testing.assert_array_equal(from_layout(got, layout), r.max(axis=(2, 3), keepdims=True))
    got = lo.global_lp_pool(x, 3, layout=layout)
    want = (np.abs(r) ** 3).sum(axis=(2, 3), keepdims=True) ** (1 / 3)
    np.testing.assert_allclose(from_layout(got, layout), want)
    got = lo.global_lp_pool(x, 2, layout=layout)
    want = np.sqrt((r**2).sum(axis=(2, 3), keepdims=True))
    np.testing.assert_allclose(from_layout(got, layout), want)
    assert lo.global_max_pool(x.astype(np.int16), layout=layout).dtype == np.int16


@pytest.mark.parametrize("layout", ["NCW", "NWC"])
def test_global_pools_1d_and_3d(layout):
    r = _data((2, 3, 7))
    got = lo.global_avg_pool(to_layout(r, layout), layout=layout)
    np.testing.assert_allclose(from_layout(got, layout), r.mean(axis=2, keepdims=True))
    r = _data((1, 2, 3, 4, 5))
    got = lo.global_max_pool(to_layout(r, "NDHWC"), layout="NDHWC")
    assert got.shape == (1, 1, 1, 1, 2)


# NHCW: the spatial axes are not adjacent, so the unpool decodes each flat index per axis
@pytest.mark.usefixtures("both_argmax_paths")
@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "NWHC", "NHCW"])
@pytest.mark.parametrize(
    ("in_sizes", "k", "s", "p"),
    [((4, 6), (2, 2), None, 0), ((5, 7), (3, 2), (2, 3), (1, 1)), ((6, 5), (2, 3), (1, 2), 0)],
)
def test_max_unpool_round_trip(layout, in_sizes, k, s, p):
    r = np.random.default_rng(5).standard_normal((2, 3, *in_sizes))
    x = to_layout(r, layout)
    out, idx = lo.max_pool(x, k, stride=s, padding=p, return_indices=True, layout=layout)
    up = lo.max_unpool(out, idx, k, stride=s, padding=p, output_size=in_sizes, layout=layout)
    want = ref.max_unpool(from_layout(out, layout), from_layout(idx, layout), in_sizes)
    np.testing.assert_array_equal(from_layout(up, layout), want)
    # every winner is back in its place: reading the unpooled plane at the indices gives
    # the pooled values back, and every nonzero cell holds the input's value
    up_c = from_layout(up, layout).reshape(2, 3, -1)
    idx_c = from_layout(idx, layout).reshape(2, 3, -1)
    back = np.take_along_axis(up_c, idx_c, axis=2)
    np.testing.assert_array_equal(back, from_layout(out, layout).reshape(2, 3, -1))
    mask = from_layout(up, layout) != 0
    np.testing.assert_array_equal(from_layout(up, layout)[mask], r[mask])


def test_max_unpool_default_and_given_output_size():
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    idx = np.array([[[[0, 3], [9, 15]]]])
    up = lo.max_unpool(x, idx, 2)
    assert up.shape == (1, 1, 4, 4)
    np.testing.assert_array_equal(up, ref.max_unpool(x, idx, (4, 4)))
    up = lo.max_unpool(x, idx, 2, output_size=(5, 5))
    np.testing.assert_array_equal(up, ref.max_unpool(x, idx, (5, 5)))
    up = lo.max_unpool(x, idx, 2, output_size=(1, 1, 5, 5))  # full shape, as PyTorch allows
    assert up.shape == (1, 1, 5, 5)
    # channels-last, full shape in that layout
    xl = x.transpose(0, 2, 3, 1)
    il = idx.transpose(0, 2, 3, 1)
    up = lo.max_unpool(xl, il, 2, output_size=(1, 5, 5, 1), layout="NHWC")
    np.testing.assert_array_equal(up[..., 0], ref.max_unpool(x, idx, (5, 5))[:, 0])
    assert lo.max_unpool(x.astype(np.uint8), idx, 2).dtype == np.uint8


@pytest.mark.usefixtures("both_argmax_paths")
def test_padding_forms_agree():
    r = _data((1, 2, 6, 5))
    base = lo.max_pool(r, 3, stride=2, padding=((1, 2), (0, 1)))
    np.testing.assert_array_equal(lo.max_pool(r, 3, stride=2, padding=(1, 2, 0, 1)), base)
    np.testing.assert_array_equal(
        lo.avg_pool(r, 3, stride=1, padding=1), lo.avg_pool(r, 3, stride=1, padding=((1, 1),) * 2)
    )
    np.testing.assert_array_equal(
        lo.avg_pool(r, 3, padding=(1, 0)), lo.avg_pool(r, 3, padding=((1, 1), (0, 0)))
    )
    for name, lower in (("same", False), ("SAME_LOWER", True)):
        for s in (1, 2, 3):
            pads = tuple(ref.same_padding(n, 3, s, 1, lower) for n in (6, 5))
            want, want_i = ref.max_pool(r, (3, 3), (s, s), (1, 1), pads)
            assert want.shape[2:] == (-(-6 // s), -(-5 // s))
            got, got_i = lo.max_pool(r, 3, stride=s, padding=name, return_indices=True)
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(got_i, want_i)
            got = lo.avg_pool(r, 3, stride=s, padding=name, count_include_pad=False)
            np.testing.assert_allclose(got, ref.avg_pool(r, (3, 3), (s, s), (1, 1), pads,
                                                         count_include_pad=False))
    np.testing.assert_array_equal(lo.max_pool(r, 2, padding="valid"), lo.max_pool(r, 2))


def test_default_stride_is_kernel_size_and_names():
    r = _data((2, 3, 6, 6))
    np.testing.assert_array_equal(lo.max_pool(r, 3), lo.max_pool(r, 3, stride=3))
    np.testing.assert_array_equal(lo.max_pool2d(r, 3), lo.max_pool(r, 3, stride=3))
    np.testing.assert_array_equal(lo.avg_pool2d(r, 2), lo.avg_pool(r, 2, stride=2))
    np.testing.assert_array_equal(lo.lp_pool2d(r, 2, 2), lo.lp_pool(r, 2, 2, stride=2))
    assert lo.max_pool1d(r[0], 2).shape == (3, 6, 3)
    assert lo.avg_pool1d(r[0], 2).shape == (3, 6, 3)
    assert lo.lp_pool1d(r[0], 1, 2).shape == (3, 6, 3)
    r3 = _data((1, 2, 4, 4, 4))
    assert lo.max_pool3d(r3, 2).shape == lo.avg_pool3d(r3, 2).shape == (1, 2, 2, 2, 2)
    assert lo.lp_pool3d(r3, 2, 2).shape == (1, 2, 2, 2, 2)
    with lo.default_layout("channels_last"):
        assert lo.max_pool(np.zeros((1, 6, 6, 3)), 2).shape == (1, 3, 3, 3)


def test_avg_divisor_override_and_lp_p():
    r = _data((1, 2, 5, 5))
    got = lo.avg_pool(r, 2, stride=1, padding=1, divisor_override=3)
    np.testing.assert_allclose(
        got, ref.avg_pool(r, (2, 2), (1, 1), (1, 1), ((1, 1), (1, 1)), divisor=3)
    )
    for p in (1, 2, 2.5, 4):
        got = lo.lp_pool(r, p, 3, stride=2, padding=1, ceil_mode=True)
        want = ref.lp_pool(r, p, (3, 3), (2, 2), (1, 1), ((1, 1), (1, 1)), True)
        np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.usefixtures("both_argmax_paths")
@pytest.mark.parametrize("dtype", ["float16", "float32", "bfloat16"])
def test_half_types_accumulate_in_float32(dtype):
    if dtype == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        dtype = ml_dtypes.bfloat16
    r = np.random.default_rng(2).standard_normal((2, 3, 9, 8)).astype(dtype)
    r64 = r.astype(np.float64)
    got = lo.avg_pool(r, 3, stride=2, padding=1)
    assert got.dtype == np.dtype(dtype)
    want = ref.avg_pool(r64, (3, 3), (2, 2), (1, 1), ((1, 1), (1, 1)))
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=1e-2, atol=1e-2)
    got = lo.lp_pool(r, 2, 3, layout="NCHW")
    assert got.dtype == np.dtype(dtype)
    out, idx = lo.max_pool(r, 3, stride=2, return_indices=True)
    want, want_idx = ref.max_pool(r64, (3, 3), (2, 2), (1, 1), ((0, 0), (0, 0)))
    np.testing.assert_array_equal(out.astype(np.float64), want)
    np.testing.assert_array_equal(idx, want_idx)
    assert lo.global_avg_pool(r).dtype == np.dtype(dtype)
    assert lo.adaptive_avg_pool(r, (4, 3)).dtype == np.dtype(dtype)


def test_small_tiles_give_the_same_result(monkeypatch):
    """Tile boundaries: force tiny tiles (a few outputs each) and compare with the reference."""
    monkeypatch.setattr(kpool, "CACHE_TILE_BYTES", 64)
    r = _data((2, 3, 9, 7), seed=11)
    for layout in ("NCHW", "NHWC"):
        x = to_layout(r, layout)
        kw = dict(stride=2, padding=((1, 2), (1, 0)), dilation=(2, 1), ceil_mode=True)
        out, idx = lo.max_pool(x, 3, return_indices=True, layout=layout, **kw)
        want, want_idx = ref.max_pool(r, (3, 3), (2, 2), (2, 1), ((1, 2), (1, 0)), True)
        np.testing.assert_array_equal(from_layout(out, layout), want)
        np.testing.assert_array_equal(from_layout(idx, layout), want_idx)
        got = lo.avg_pool(x.astype(np.float32), 3, layout=layout, **kw)
        want = ref.avg_pool(r, (3, 3), (2, 2), (2, 1), ((1, 2), (1, 0)), True)
        np.testing.assert_allclose(from_layout(got, layout), want, rtol=1e-6, atol=1e-6)
    monkeypatch.undo()
    with lo.workspace_limit(65536):  # below the cache tile: the workspace limit decides
        x = np.random.default_rng(0).standard_normal((4, 8, 40, 40)).astype(np.float32)
        got = lo.lp_pool(x, 2, 3, stride=1)
    np.testing.assert_allclose(got, lo.lp_pool(x, 2, 3, stride=1), rtol=1e-6)


def test_empty_batch_and_results_do_not_alias():
    x = np.zeros((0, 3, 5, 5))
    assert lo.max_pool(x, 2).shape == (0, 3, 2, 2)
    out, idx = lo.max_pool(x, 2, return_indices=True)
    assert idx.shape == (0, 3, 2, 2)
    assert lo.avg_pool(x, 2, layout="NCHW").shape == (0, 3, 2, 2)
    assert lo.lp_pool(x, 2, 3, stride=1).shape == (0, 3, 3, 3)
    assert lo.adaptive_avg_pool(x, 3).shape == (0, 3, 3, 3)
    assert lo.adaptive_max_pool(x, 3).shape == (0, 3, 3, 3)
    assert lo.global_avg_pool(x).shape == (0, 3, 1, 1)
    assert lo.global_max_pool(x).shape == (0, 3, 1, 1)
    x = np.ones((1, 1, 2, 2))
    out = lo.max_pool(x, 1)
    assert not np.shares_memory(out, x)
    out[...] = 5
    assert x.max() == 1


# -- errors ----------------------------------------------------------------------------------


def test_window_rule_errors():
    x = np.ones((1, 1, 5))
    with pytest.raises(ValueError, match=r"`max_pool`: padding along 'W' must be smaller"):
        lo.max_pool(x, 2, padding=2)
    with pytest.raises(ValueError, match=r"extent dilation\*\(kernel_size-1\)\+1=3"):
        lo.avg_pool(x, 2, padding=(0, 3), dilation=2)
    # dilation skips the whole input: taps at -1 and 2 of an input of size 1
    with pytest.raises(ValueError, match=r"`max_pool`: output window 0 along 'W' contains no"):
        lo.max_pool(np.ones((1, 1, 1)), 2, dilation=3, padding=(1, 2), stride=1)
    with pytest.raises(ValueError, match=r"`lp_pool`: output size along 'W' would be 0 < 1"):
        lo.lp_pool(x, 2, 7)
    with pytest.raises(ValueError, match=r"`max_pool2d`: output size along 'H'"):
        lo.max_pool2d(np.ones((1, 1, 2, 9)), 3)


def test_argument_errors():
    x = np.ones((1, 1, 4, 4))
    with pytest.raises(TypeError, match=r"`avg_pool`: `x` must be a floating-point array"):
        lo.avg_pool(x.astype(np.int32), 2)
    with pytest.raises(TypeError, match=r"`lp_pool`: `x` must be a floating-point"):
        lo.lp_pool(x.astype(bool), 2, 2)
    with pytest.raises(TypeError, match=r"`global_avg_pool`: `x` must be a floating"):
        lo.global_avg_pool(x.astype(np.uint8))
    with pytest.raises(TypeError, match=r"`adaptive_avg_pool`: `x` must be a floating"):
        lo.adaptive_avg_pool(x.astype(np.uint8), 2)
    with pytest.raises(ValueError, match=r"`lp_pool`: `p` must be a finite number > 0, got 0"):
        lo.lp_pool(x, 0, 2)
    with pytest.raises(ValueError, match=r"`global_lp_pool`: `p` must be a finite number > 0"):
        lo.global_lp_pool(x, -1.5)
    with pytest.raises(TypeError, match=r"`lp_pool`: `p` must be a real number"):
        lo.lp_pool(x, "2", 2)
    with pytest.raises(ValueError, match=r"`avg_pool`: `divisor_override` must be >= 1, got 0"):
        lo.avg_pool(x, 2, divisor_override=0)
    with pytest.raises(TypeError, match=r"`avg_pool`: `divisor_override` must be an int"):
        lo.avg_pool(x, 2, divisor_override=2.5)
    with pytest.raises(TypeError, match=r"`max_pool`: `ceil_mode` must be a bool"):
        lo.max_pool(x, 2, ceil_mode=1)
    with pytest.raises(TypeError, match=r"`max_pool`: `return_indices` must be a bool"):
        lo.max_pool(x, 2, return_indices="yes")
    with pytest.raises(TypeError, match=r"`avg_pool`: `count_include_pad` must be a bool"):
        lo.avg_pool(x, 2, count_include_pad=None)
    with pytest.raises(ValueError, match=r"`max_pool`: `kernel_size` must be an int or 2 ints"):
        lo.max_pool(x, (2, 2, 2))
    with pytest.raises(ValueError, match=r"`max_pool`: `kernel_size` must be >= 1"):
        lo.max_pool(x, 0)
    with pytest.raises(ValueError, match=r"`max_pool`: `stride` must be >= 1"):
        lo.max_pool(x, 2, stride=0)
    with pytest.raises(ValueError, match=r"`avg_pool`: `padding` must be >= 0"):
        lo.avg_pool(x, 2, padding=-1)
    with pytest.raises(ValueError, match=r"`max_pool1d`: `x` must have 3 axes"):
        lo.max_pool1d(x, 2)
    with pytest.raises(ValueError, match=r"`avg_pool3d`: `x` must have 5 axes"):
        lo.avg_pool3d(x, 2)
    with pytest.raises(ValueError, match=r"`max_pool`: `x` must have at least 3 axes"):
        lo.max_pool(np.ones((4, 4)), 2)
    with pytest.raises(lo.LayoutError, match=r"`max_pool`: layout 'NHWC' has 4 axes"):
        lo.max_pool(np.ones((1, 1, 4)), 2, layout="NHWC")
    with pytest.raises(TypeError, match=r"`max_pool`: `x` must be a numeric array"):
        lo.max_pool(np.array([[["a"]]]), 1)


def test_adaptive_and_global_errors():
    x = np.ones((1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"`adaptive_avg_pool`: `output_size` must be >= 1"):
        lo.adaptive_avg_pool(x, 0)
    with pytest.raises(ValueError, match=r"`adaptive_max_pool`: `output_size` must be an int or 2"):
        lo.adaptive_max_pool(x, (2, 2, 2))
    with pytest.raises(TypeError, match=r"`adaptive_max_pool`: `output_size` must be an int"):
        lo.adaptive_max_pool(x, None)
    with pytest.raises(ValueError, match=r"`adaptive_avg_pool`: spatial axis 'W' must have size"):
        lo.adaptive_avg_pool(np.ones((1, 1, 3, 0)), 2)
    with pytest.raises(ValueError, match=r"`global_max_pool`: spatial axis 'H' must have size"):
        lo.global_max_pool(np.ones((1, 1, 0, 3)))


def test_max_unpool_errors():
    x = np.ones((1, 1, 2, 2))
    idx = np.zeros((1, 1, 2, 2), np.int64)
    with pytest.raises(ValueError, match=r"`max_unpool`: `indices` must have the shape of `x`"):
        lo.max_unpool(x, idx[..., :1], 2)
    with pytest.raises(TypeError, match=r"`max_unpool`: `indices` must be an integer array"):
        lo.max_unpool(x, idx.astype(float), 2)
    with pytest.raises(ValueError, match=r"`max_unpool`: `indices` must lie in \[0, 16\)"):
        lo.max_unpool(x, idx + 16, 2)
    with pytest.raises(ValueError, match=r"`max_unpool`: `indices` must lie in \[0, 16\).*-1"):
        lo.max_unpool(x, idx - 1, 2)
    with pytest.raises(ValueError, match=r"`max_unpool`: `output_size` along 'H' must be in \("):
        lo.max_unpool(x, idx, 2, output_size=(6, 4))
    with pytest.raises(ValueError, match=r"`max_unpool`: `output_size` must have 2 spatial sizes"):
        lo.max_unpool(x, idx, 2, output_size=(4, 4, 4))
    with pytest.raises(ValueError, match=r"`max_unpool`: `output_size` as a full shape must keep"):
        lo.max_unpool(x, idx, 2, output_size=(2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"`max_unpool`: `padding` must be ints or 'valid'"):
        lo.max_unpool(x, idx, 2, padding="same")


@pytest.mark.usefixtures("both_argmax_paths")
@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(1, 7),
    w=st.integers(1, 7),
    k=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    s=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    d=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    pads=st.tuples(*[st.integers(0, 2)] * 4),
    ceil_mode=st.booleans(),
    layout=st.sampled_from(LAYOUTS[2]),
    seed=st.integers(0, 2**16),
)
def test_random_2d_configs_match_reference(h, w, k, s, d, pads, ceil_mode, layout, seed):
    pairs = ((pads[0], pads[1]), (pads[2], pads[3]))
    r = _data((1, 2, h, w), seed=seed)
    x = to_layout(r, layout)
    kw = dict(stride=s, padding=pads, dilation=d, ceil_mode=ceil_mode, layout=layout)
    if not ref.valid_config((h, w), k, s, d, pairs, ceil_mode):
        with pytest.raises(ValueError, match="`max_pool`"):
            lo.max_pool(x, k, **kw)
        return
    out, idx = lo.max_pool(x, k, return_indices=True, **kw)
    want, want_idx = ref.max_pool(r, k, s, d, pairs, ceil_mode)
    np.testing.assert_array_equal(from_layout(out, layout), want)
    np.testing.assert_array_equal(from_layout(idx, layout), want_idx)
    got = lo.avg_pool(x, k, count_include_pad=False, **kw)
    np.testing.assert_allclose(
        from_layout(got, layout), ref.avg_pool(r, k, s, d, pairs, ceil_mode, False), rtol=1e-12
    )


def test_temporaries_stay_within_the_workspace_limit():
    """No window tensor, no padded copy of the input: beyond its result, an op holds at most
    about one tile of temporaries (here 1 MiB) on a 4 MiB input."""
    x = np.random.default_rng(0).standard_normal((4, 16, 128, 128)).astype(np.float32)
    xh = x.astype(np.float16)
    calls = {
        "max_pool": lambda: lo.max_pool(x, 3, stride=1, padding=1),
        "max_pool indices": lambda: lo.max_pool(x, 3, stride=1, padding=1, return_indices=True),
        "avg_pool": lambda: lo.avg_pool(x, 3, stride=1, padding=1, count_include_pad=False),
        "avg_pool float16": lambda: lo.avg_pool(xh, 3, stride=1, padding=1),
        "lp_pool": lambda: lo.lp_pool(x, 3, 3, stride=1, padding=1),
        "adaptive_max_pool": lambda: lo.adaptive_max_pool(x, (37, 29), return_indices=True),
        "adaptive_avg_pool": lambda: lo.adaptive_avg_pool(xh, (37, 29)),
        "global_lp_pool": lambda: lo.global_lp_pool(x, 3),
        "unfold": lambda: lo.unfold(x[:1], 3, padding=1, layout="NCHW"),
    }
    with lo.workspace_limit(2**20):
        for name, call in calls.items():
            extra = temporaries(call)
            assert extra < 1.25 * 2**20, (name, extra)


@pytest.mark.usefixtures("both_argmax_paths")
@pytest.mark.parametrize("layout", ["NCW", "NWC", "NCDHW", "NDHWC"])
def test_max_unpool_1d_3d(layout):
    rank = len(layout) - 2
    in_sizes = (7,) if rank == 1 else (5, 4, 6)
    r = np.random.default_rng(8).standard_normal((2, 2, *in_sizes))
    x = to_layout(r, layout)
    out, idx = lo.max_pool(x, 2, stride=2, padding=1, return_indices=True, layout=layout)
    up = lo.max_unpool(out, idx, 2, padding=1, output_size=in_sizes, layout=layout)
    want = ref.max_unpool(from_layout(out, layout), from_layout(idx, layout), in_sizes)
    np.testing.assert_array_equal(from_layout(up, layout), want)


def test_cached_geometry_follows_each_call():
    """Pool geometries are cached by input shape, layout and typed arguments: a repeated
    call with another argument type or value is still checked and resolved afresh."""
    x = np.arange(2 * 3 * 6 * 6, dtype=np.float32).reshape(2, 3, 6, 6)
    want = lo.avg_pool(x, 2)
    np.testing.assert_array_equal(lo.avg_pool(x, 2), want)
    with pytest.raises(TypeError):
        lo.avg_pool(x, 2, ceil_mode=1)  # 1 == True, but not a bool
    lo.avg_pool(x, 2, ceil_mode=True)
    with pytest.raises(TypeError):
        lo.avg_pool(x, 2, ceil_mode=1)
    for bad in (2.0, True, [2, 2.0]):  # 2.0 == 2 == True... as cache keys
        with pytest.raises((TypeError, ValueError)):
            lo.avg_pool(x, bad)
    np.testing.assert_array_equal(lo.avg_pool(x, np.array([2, 2])), want)  # unhashable
    np.testing.assert_array_equal(lo.avg_pool(x, [2, 2]), want)
    assert lo.avg_pool(x, 3).shape == (2, 3, 2, 2)
    assert lo.max_pool(x, 2, stride=1).shape == (2, 3, 5, 5)
    assert lo.max_pool(x[:, :, :5], 2, stride=1).shape == (2, 3, 4, 5)  # another shape
