"""Channels-last 2-D convolutions of small planes by per-tap GEMMs over the flat pixels of
several samples at once (`taps_flat.run_taps_batch`) against the plain-loop reference, the
path forced onto small inputs."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from conv_reference import conv_ref
from forced_conv import assert_infs_where_due, conv2d_in, on_one_and_two_threads
from recording import record_taken

from layoutops.kernels import conv as kconv
from layoutops.kernels import taps_flat
from layoutops.kernels.gemm import available

pytestmark = [
    pytest.mark.skipif(not available(np.float64),
                       reason="no BLAS gemm with beta for float64 here"),
    pytest.mark.usefixtures("no_tiny_path"),
]


def _force(mp, chunk_bytes: int):
    """The batch path on tiny inputs (not the per-sample flat taps, no single-GEMM shortcut,
    any channel count, planes and borders); records whether each tile took it."""
    mp.setattr(kconv, "_MIN_SPLIT_BYTES", 0)
    mp.setattr(taps_flat, "applies", lambda *args: False)
    mp.setattr(taps_flat, "MIN_CHANNELS", 1)
    mp.setattr(taps_flat, "MIN_GEMM_FLOPS", 0)
    mp.setattr(taps_flat, "MAX_TAPS", 100)
    mp.setattr(taps_flat, "BATCH_SIZE_PER_BORDER", 0)
    mp.setattr(taps_flat, "CHUNK_BYTES", chunk_bytes)
    return record_taken(mp, taps_flat, "run_taps_batch")


@pytest.fixture(params=[1, 4000], ids=["one-sample-chunks", "sample-runs"])
def forced(request, monkeypatch):
    return _force(monkeypatch, request.param)


# (input NCHW, kernel OIHW, padding pairs with pt + pb = (kh - 1) * dh, pl + pr = (kw - 1) *
# dw, dilation): odd and even sizes, the output plane the input's
_CASES = [
    ((3, 3, 11, 9), (4, 3, 3, 3), ((1, 1), (1, 1)), (1, 1)),
    ((4, 4, 12, 10), (5, 4, 2, 2), ((0, 1), (0, 1)), (1, 1)),  # even kernel
    ((3, 2, 13, 8), (3, 2, 3, 5), ((2, 0), (1, 3)), (1, 1)),  # asymmetric, wide kernel
    ((2, 3, 12, 11), (2, 3, 3, 3), ((0, 4), (2, 2)), (2, 2)),  # dilated
    ((2, 3, 9, 10), (4, 3, 2, 2), ((1, 2), (1, 2)), (3, 3)),  # no tap at offset (0, 0)
    ((3, 2, 3, 7), (2, 2, 3, 3), ((3, 3), (1, 1)), (3, 1)),  # taps past the whole plane
    ((5, 3, 1, 6), (2, 3, 1, 3), ((0, 0), (1, 1)), (1, 1)),  # planes of one row
]


@pytest.mark.parametrize("case", _CASES, ids=lambda c: f"{c[0]}-{c[1]}-p{c[2]}-d{c[3]}")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_taps_batch_matches_reference(case, dtype, forced):
    shape, wshape, pads, dilation = case
    rng = np.random.default_rng(31)
    x = rng.standard_normal(shape)
    w = rng.standard_normal(wshape)
    b = rng.standard_normal(wshape[0])
    want = conv_ref(x, w, b, strides=(1, 1), pads=pads, dilations=dilation)
    results = on_one_and_two_threads(functools.partial(
        conv2d_in, "NHWC", x.astype(dtype), w.astype(dtype), bias=b.astype(dtype),
        padding=list(pads), dilation=dilation))
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(results[0], want, rtol=tol, atol=tol)
    np.testing.assert_array_equal(results[0], results[1])
    assert forced and all(forced)


def test_taps_batch_reads_across_rows_and_samples_leave_no_trace(forced):
    """A tap off a plane's edge reads the neighbouring row's or sample's pixels in the flat
    view; an inf there must not reach the output cells it does not belong to (kept and put
    back, not corrected by subtraction)."""
    rng = np.random.default_rng(32)
    x = rng.uniform(1, 2, (3, 3, 6, 7))
    x[0, 1, -1, 3] = np.inf  # sample 0's last row: sample 1's first row reads it
    x[1, 2, 0, 2] = np.inf  # sample 1's first row: sample 0's last row reads it
    x[2, 0, 3, -1] = np.inf  # a row's last column: the next row's first column reads it
    w = rng.uniform(1, 2, (4, 3, 3, 3))
    want = conv_ref(x, w, strides=(1, 1), pads=((1, 1), (1, 1)), dilations=(1, 1))
    got = conv2d_in("NHWC", x, w, padding=1)
    assert forced and all(forced)
    assert_infs_where_due(got, want)


def test_taps_batch_declines_what_it_does_not_cover(forced):
    """One sample, an output plane smaller than the input's, stride 2 and channels-first
    take the other paths, and still match the reference."""
    rng = np.random.default_rng(33)
    x = rng.standard_normal((2, 4, 9, 8))
    w = rng.standard_normal((3, 4, 3, 3))
    for layout, xs, kw in (
        ("NHWC", x[:1], dict(padding=1)),
        ("NHWC", x, dict(padding=((1, 1), (0, 0)))),
        ("NHWC", x, dict(padding=((0, 0), (1, 1)))),
        ("NHWC", x, dict(padding=1, stride=2)),
        ("NCHW", x, dict(padding=1)),
    ):
        pads = kw["padding"] if isinstance(kw["padding"], tuple) else ((1, 1), (1, 1))
        s = kw.get("stride", 1)
        want = conv_ref(xs, w, strides=(s, s), pads=pads, dilations=(1, 1))
        got = conv2d_in(layout, xs, w, **dict(kw, padding=list(pads)))
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert not forced  # none of those reached it


def test_taps_batch_thresholds():
    """Unforced: small channels-last planes with enough channels and work take the batch
    form; larger planes, thin or wide channel counts and one sample do not."""
    geo = kconv.Geometry((8, 8), (3, 3), (1, 1), (1, 1), ((1, 1), (1, 1)), (8, 8))

    def applies(n, c, plane=(8, 8), outputs=64, dtype=np.float32):
        x = np.zeros((n, *plane, c), dtype)
        return taps_flat.applies_batch(geo, 1, x, dtype, -1, -1, plane, outputs)

    assert applies(64, 64)
    assert not applies(1, 64)  # one sample
    assert not applies(64, 16)  # thin K: fewer than MIN_CHANNELS
    assert not applies(64, 512)  # long K: im2col's GEMM pays for its copy
    assert not applies(64, 64, plane=(40, 40))  # more than BATCH_MAX_PIXELS pixels
    assert not applies(2, 64, outputs=8)  # too little work for the GEMM calls
