"""Non-uniform adaptive average pools: the bin sums by GEMMs with 0/1 bin matrices
(`kernels.pool._bin_sums`) and by gathers of the bin offsets give the plain-loop reference's
means, in 1-D / 2-D / 3-D, both layouts, bins that overlap and bins that repeat cells; a NaN
or an infinity, which a GEMM would spill into every bin, sends its tile to the gathers."""

from __future__ import annotations

import numpy as np
import pool_reference as ref
import pytest
from recording import record_taken

import layoutops as lo
import layoutops.kernels.pool as kpool

LAYOUTS = {1: ("NCW", "NWC"), 2: ("NCHW", "NHWC"), 3: ("NCDHW", "NDHWC")}
CASES = [
    # in_sizes, out_sizes
    ((10,), (3,)),
    ((5,), (8,)),  # more bins than cells: cells repeat
    ((7, 9), (3, 4)),  # overlapping bins along both axes
    ((14, 14), (3, 3)),
    ((6, 5), (4, 7)),
    ((5, 6, 7), (2, 4, 3)),
]


def _to(r, layout):
    return r if layout[1] == "C" else np.ascontiguousarray(np.moveaxis(r, 1, -1))


def _back(y, layout):
    return y if layout[1] == "C" else np.moveaxis(y, -1, 1)


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
    got = lo.adaptive_avg_pool(_to(r, layout).astype(dtype), out_sizes, layout=layout)
    assert bool(gemm_tiles) is not gathers
    want = ref.adaptive_pool(r.astype(dtype), out_sizes, "avg")
    tol = 2e-6 if dtype == "float32" else 1e-13
    assert got.dtype == np.dtype(dtype) and got.flags.c_contiguous
    np.testing.assert_allclose(_back(got, layout), want, rtol=tol, atol=tol)


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
    pay = kpool._bin_sums_pay
    assert pay((16, 64, 1000), (2,), (64,))  # innermost, 64 cells
    assert not pay((16, 1000, 64), (1,), (64,))  # batched over 64 channels, 64 cells
    assert pay((16, 1000, 64), (1,), (32,))
    assert not pay((16, 64, 1000), (2,), (300,))
    assert pay((8, 64, 112, 112), (2, 3), (9, 9))  # widened: 9 cells x 9 values after
    assert not pay((8, 64, 112, 112), (2, 3), (11, 11))  # 11 x 11 > BIN_KRON_MACS
