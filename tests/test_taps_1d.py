"""Channels-first 1-D convolutions by per-tap accumulating GEMMs (`layoutops.kernels.taps_1d`)
against the plain-loop reference."""

from __future__ import annotations

import numpy as np
import pytest
from conv_reference import conv_ref
from recording import record_taken

import layoutops as lo
from layoutops.kernels import conv as kconv
from layoutops.kernels import taps_1d
from layoutops.kernels.gemm import available
from layoutops.kernels.threads import set_num_threads

pytestmark = [
    pytest.mark.skipif(not available(np.float64),
                       reason="no BLAS gemm with beta for float64 here"),
    pytest.mark.usefixtures("no_tiny_path"),
]


@pytest.fixture
def forced(monkeypatch):
    """The per-tap path on tiny inputs (no single-GEMM shortcut, runs of 64 outputs);
    records whether each tile took it."""
    monkeypatch.setattr(kconv, "_MIN_SPLIT_BYTES", 0)
    monkeypatch.setattr(taps_1d, "CHUNK_BYTES", 1)
    monkeypatch.setattr(taps_1d, "MIN_GEMM_FLOPS", 0)
    monkeypatch.setattr(taps_1d, "MIN_GEMM_FLOPS_SHORT", 0)
    return record_taken(monkeypatch, kconv, "_taps_1d_tile")


# (input NCW, kernel OIW, padding pair, dilation)
_CASES = [
    ((2, 3, 150), (4, 3, 3), (1, 1), 1),
    ((3, 2, 131), (5, 2, 4), (2, 1), 1),  # even kernel, asymmetric padding
    ((1, 4, 200), (3, 4, 5), (4, 4), 3),  # dilated
    ((2, 3, 97), (2, 3, 3), (70, 80), 1),  # padding wider than a run: runs with no whole tap
    ((2, 3, 140), (2, 3, 3), (0, 0), 2),  # no padding
]


@pytest.mark.parametrize("case", _CASES, ids=lambda c: f"{c[0]}-{c[1]}-p{c[2]}-d{c[3]}")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_taps_1d_matches_reference(case, dtype, forced):
    shape, wshape, pads, dilation = case
    rng = np.random.default_rng(11)
    x = rng.standard_normal(shape)
    w = rng.standard_normal(wshape)
    b = rng.standard_normal(wshape[0])
    want = conv_ref(x, w, b, strides=(1,), pads=(pads,), dilations=(dilation,))
    got = lo.conv1d(x.astype(dtype), w.astype(dtype), b.astype(dtype), padding=[pads],
                    dilation=dilation, layout="NCW", algorithm="im2col")
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    assert forced and all(forced)


def test_taps_1d_same_on_one_and_two_threads_and_under_tiling(forced):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((3, 4, 300))
    w = rng.standard_normal((5, 4, 7))
    want = conv_ref(x, w, strides=(1,), pads=((3, 3),), dilations=(1,))
    previous = set_num_threads(None)
    try:
        results = []
        for n in (1, 2):
            set_num_threads(n)
            results.append(lo.conv1d(x, w, padding=3, layout="NCW", algorithm="im2col"))
    finally:
        set_num_threads(previous)
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_allclose(results[0], want, rtol=1e-12, atol=1e-12)
    with lo.workspace_limit(65536):  # tiles along L: targets are parts of the output rows
        tiled = lo.conv1d(x, w, padding=3, layout="NCW", algorithm="im2col")
    np.testing.assert_allclose(tiled, want, rtol=1e-12, atol=1e-12)


def test_taps_1d_declines_what_it_does_not_cover(forced):
    """Channels-last, stride 2, groups, reflect padding and a strided input run on the
    im2col chunks, and still match the reference."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, 4, 90))
    w = rng.standard_normal((4, 4, 3))
    w2 = rng.standard_normal((4, 2, 3))
    ref = conv_ref(x, w, strides=(1,), pads=((1, 1),), dilations=(1,))
    got = lo.conv1d(np.ascontiguousarray(np.moveaxis(x, 1, -1)), w.transpose(2, 1, 0).copy(),
                    padding=1, layout="NWC", algorithm="im2col")
    np.testing.assert_allclose(np.moveaxis(got, -1, 1), ref, rtol=1e-12, atol=1e-12)
    got = lo.conv1d(x, w, padding=1, stride=2, layout="NCW", algorithm="im2col")
    np.testing.assert_allclose(got, ref[:, :, ::2], rtol=1e-12, atol=1e-12)
    got = lo.conv1d(x, w2, padding=1, groups=2, layout="NCW", algorithm="im2col")
    want = conv_ref(x, w2, strides=(1,), pads=((1, 1),), dilations=(1,), groups=2)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    got = lo.conv1d(x, w, padding=1, padding_mode="reflect", layout="NCW", algorithm="im2col")
    want = conv_ref(x, w, strides=(1,), pads=((1, 1),), dilations=(1,), mode="reflect")
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert not any(forced)  # none of those reached the per-tap path (reflect never asks)
    xs = rng.standard_normal((2, 4, 180))[:, :, ::2]  # unit stride along L is needed
    got = lo.conv1d(xs, w, padding=1, layout="NCW", algorithm="im2col")
    want = conv_ref(xs, w, strides=(1,), pads=((1, 1),), dilations=(1,))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert forced[-1] is False
