"""Non-uniform adaptive average pools: the bin sums by GEMMs with 0/1 bin matrices
(`kernels.pool._bin_sums`) and by gathers of the bin offsets give the plain-loop reference's
means, in 1-D / 2-D / 3-D, both layouts, bins that overlap and bins that repeat cells; a NaN
or an infinity, which a GEMM would spill into every bin, sends its tile to the gathers."""

from __future__ import annotations

import itertools

import numpy as np
import pool_reference as ref
import pytest
from conv_reference import act_from, act_to
from recording import record_taken

import layoutops as lo
import layoutops.kernels.pool as kpool

LAYOUTS = {1: ("NCW", "NWC"), 2: ("NCHW", "NHWC"), 3: ("NCDHW", "NDHWC")}


def _cf(layout):
    """The channels-first layout of ``layout``'s rank (the references' order)."""
    return LAYOUTS[len(layout) - 2][0]
CASES = [
    # in_sizes, out_sizes
    ((10,), (3,)),
    ((5,), (8,)),  # more bins than cells: cells repeat
    ((7, 9), (3, 4)),  # overlapping bins along both axes
    ((14, 14), (3, 3)),
    ((6, 5), (4, 7)),
    ((5, 6, 7), (2, 4, 3)),
]



@pytest.fixture
def gemm_tiles(monkeypatch):
    return record_taken(monkeypatch, kpool, "_bin_sums", taken=lambda result: True)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("gathers", [False, True], ids=["gemms", "gathers"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_bin_sums_match_reference(case, gathers, channels_last, dtype, gemm_tiles,
                                  monkeypatch):
    in_sizes, out_sizes = case
    if gathers:  # every bound exceeded: the gathers
        for name in ("BIN_INNER_MAX", "BIN_KRON_MACS", "BIN_BATCHED_MAX"):
            monkeypatch.setattr(kpool, name, 0)
    layout = LAYOUTS[len(in_sizes)][int(channels_last)]
    r = np.random.default_rng(len(in_sizes)).standard_normal((2, 3, *in_sizes))
    cf = _cf(layout)
    got = lo.adaptive_avg_pool(act_to(r, cf, layout).astype(dtype), out_sizes, layout=layout)
    assert bool(gemm_tiles) is not gathers
    want = ref.adaptive_pool(r.astype(dtype), out_sizes, "avg")
    tol = 2e-6 if dtype == "float32" else 1e-13
    assert got.dtype == np.dtype(dtype) and got.flags.c_contiguous
    np.testing.assert_allclose(act_from(got, layout, cf), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_stay_in_their_bins(bad, gemm_tiles):
    r = np.random.default_rng(3).standard_normal((2, 3, 7, 9))
    r[1, 2, 0, 0] = bad
    got = lo.adaptive_avg_pool(r, (3, 4))
    assert gemm_tiles  # the GEMMs ran, found a NaN, and the gathers redid the tile
    want = ref.adaptive_pool(r, (3, 4), "avg")
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)
    assert np.isfinite(got[0]).all() and np.isfinite(got[1, :2]).all()
    assert np.isfinite(got[1, 2, 1:]).all() and np.isfinite(got[1, 2, :, 1:]).all()


def test_half_input_sums_in_float32(gemm_tiles):
    r = np.random.default_rng(4).standard_normal((2, 3, 7, 9))
    got = lo.adaptive_avg_pool(r.astype(np.float16), (3, 4))
    assert got.dtype == np.float16 and gemm_tiles
    want = ref.adaptive_pool(r.astype(np.float16).astype(np.float32), (3, 4), "avg")
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)


def test_bounds_follow_the_axis_shape():
    """Each axis's GEMM is weighed by its own bound: innermost (plain GEMM), few values after
    it (widened bin matrix), many (batched GEMMs)."""
    pay = kpool.bin_sums_pay
    assert pay((16, 64, 1000), (2,), (64,))  # innermost, 64 cells
    assert not pay((16, 1000, 64), (1,), (64,))  # batched over 64 channels, 64 cells
    assert pay((16, 1000, 64), (1,), (32,))
    assert not pay((16, 64, 1000), (2,), (300,))
    assert pay((8, 64, 112, 112), (2, 3), (9, 9))  # widened: 9 cells x 9 values after
    assert not pay((8, 64, 112, 112), (2, 3), (11, 11))  # 11 x 11 > BIN_KRON_MACS


def _loop_spread(g, in_sizes):
    """Plain loops: each bin's gradient divided by the bin's size, added to its cells."""
    bins = [ref.adaptive_bins(n, o) for n, o in zip(in_sizes, g.shape[2:], strict=True)]
    gx = np.zeros(g.shape[:2] + tuple(in_sizes))
    for o in np.ndindex(*g.shape[2:]):
        ranges = [range(*bins[a][o[a]]) for a in range(len(o))]
        count = np.prod([len(r) for r in ranges])
        for cell in itertools.product(*ranges):
            gx[(slice(None), slice(None), *cell)] += g[(slice(None), slice(None), *o)] / count
    return gx


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("case", CASES + [((7, 6), (1, 1))], ids=str)
def test_backward_spreads_like_loops(case, channels_last, monkeypatch):
    """The adjoint by the transposed bin matrices (or a broadcast for one bin per axis)."""
    import layoutops.kernels.grad as kgrad

    in_sizes, out_sizes = case
    spread = record_taken(monkeypatch, kgrad, "_spread_by_gemms")
    layout = LAYOUTS[len(in_sizes)][int(channels_last)]
    rng = np.random.default_rng(len(in_sizes) + 7)
    x = rng.standard_normal((2, 3, *in_sizes))
    g = rng.standard_normal((2, 3, *out_sizes))
    cf = _cf(layout)
    got = lo.adaptive_avg_pool_backward(act_to(g, cf, layout), act_to(x, cf, layout), out_sizes,
                                        layout=layout).grad_input
    assert spread == [True]
    np.testing.assert_allclose(act_from(got, layout, cf), _loop_spread(g, in_sizes), rtol=1e-12,
                               atol=1e-14)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_backward_non_finite_gradients_stay_in_their_bins(bad, monkeypatch):
    import layoutops.kernels.grad as kgrad

    spread = record_taken(monkeypatch, kgrad, "_spread_by_gemms")
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 2, 7, 9))
    g = rng.standard_normal((1, 2, 3, 4))
    g[0, 1, 0, 0] = bad
    got = lo.adaptive_avg_pool_backward(g, x, (3, 4)).grad_input
    assert spread == [False]  # the GEMMs' NaN sent it to the per-bin loop
    want = _loop_spread(np.nan_to_num(g, nan=0.0, posinf=0.0), (7, 9))
    assert np.isfinite(got[0, 0]).all() and not np.isfinite(got[0, 1, 0, 0])
    np.testing.assert_allclose(got[0, 1, 3:], want[0, 1, 3:], rtol=1e-12)
