"""Channels-last depthwise convolutions by flat multiply-adds over padded row chunks
(`layoutops.kernels.depthwise_flat`) against the plain-loop reference."""

from __future__ import annotations

import numpy as np
import pytest
from conv_reference import act_from, act_to, conv_ref
from recording import record_taken

import layoutops as lo
from layoutops.kernels import conv as kconv
from layoutops.kernels import depthwise_flat
from layoutops.kernels.threads import set_num_threads


@pytest.fixture
def forced(monkeypatch):
    """The flat path on tiny inputs (any width, chunks of a few rows); records whether each
    call took it."""
    monkeypatch.setattr(depthwise_flat, "MIN_WIDTH_PER_SPREAD", 0)
    monkeypatch.setattr(depthwise_flat, "CHUNK_ELEMS", 150)
    return record_taken(monkeypatch, kconv, "depthwise_last_flat", taken=bool)


# (input NC*S, kernel size, padding pairs, dilation): odd and even sizes
_CASES = [
    ((2, 5, 9, 8), (3, 3), ((1, 1), (1, 1)), (1, 1)),
    ((3, 4, 10, 7), (2, 3), ((0, 1), (2, 0)), (1, 1)),  # asymmetric, one side only
    ((2, 3, 8, 11), (3, 2), ((2, 2), (1, 3)), (2, 3)),  # dilated both ways
    ((1, 6, 5, 6), (1, 4), ((0, 0), (0, 0)), (1, 1)),  # no padding, one kernel row
    ((2, 4, 13), (5,), ((2, 2),), (1,)),  # 1-D
    ((2, 3, 12), (3,), ((3, 0),), (2,)),  # 1-D, dilated, one side
]


@pytest.mark.parametrize("case", _CASES, ids=lambda c: f"{c[0]}-k{c[1]}-d{c[3]}")
@pytest.mark.parametrize("threads", [1, 2])
def test_flat_depthwise_matches_reference(case, threads, forced):
    shape, ksize, pads, dilation = case
    n_sp = len(ksize)
    c = shape[1]
    rng = np.random.default_rng(len(shape) + sum(ksize))
    x = rng.standard_normal(shape)
    w = rng.standard_normal((c, 1, *ksize))
    b = rng.standard_normal(c)
    want = conv_ref(x, w, b, strides=(1,) * n_sp, pads=pads, dilations=dilation, groups=c)
    layout = "NWC" if n_sp == 1 else "NHWC"
    canon = "NCW" if n_sp == 1 else "NCHW"
    w_last = np.moveaxis(w, (0, 1), (-1, -2))  # (*K, 1, C): the depthwise HWIO kernel
    previous = set_num_threads(threads)
    try:
        got = lo.conv(act_to(x, canon, layout), w_last, b, padding=[tuple(p) for p in pads],
                      dilation=dilation, groups=c, layout=layout)
    finally:
        set_num_threads(previous)
    assert forced == [True]
    np.testing.assert_allclose(act_from(got, layout, canon), want, rtol=1e-12, atol=1e-12)


def test_flat_depthwise_same_result_on_one_and_two_threads(forced):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 17, 9, 4)).astype(np.float32)
    w = rng.standard_normal((3, 3, 1, 4)).astype(np.float32)
    previous = set_num_threads(None)
    try:
        runs = []
        for n in (1, 2):
            set_num_threads(n)
            runs.append(lo.conv2d(x, w, padding=1, groups=4, layout="NHWC"))
    finally:
        set_num_threads(previous)
    assert forced == [True, True]
    np.testing.assert_array_equal(runs[0], runs[1])


def test_flat_depthwise_declines_long_rows_and_narrow_outputs(monkeypatch):
    """Rows longer than MAX_ROW_ELEMS and outputs narrower than MIN_WIDTH_PER_SPREAD kernel
    spreads keep the row-by-row form (and the same results)."""
    x = np.random.default_rng(2).standard_normal((1, 6, 20, 3))
    w = np.random.default_rng(3).standard_normal((3, 3, 3))
    out = np.empty((1, 6, 20, 3))
    sizes = ((3, 3), (1, 1), ((1, 1), (1, 1)))
    monkeypatch.setattr(depthwise_flat, "MIN_WIDTH_PER_SPREAD", 0)
    monkeypatch.setattr(depthwise_flat, "MAX_ROW_ELEMS", 22 * 3 - 1)
    assert not depthwise_flat.depthwise_last_flat(x, w, out, sizes, None, np.float64)
    monkeypatch.setattr(depthwise_flat, "MAX_ROW_ELEMS", 22 * 3)
    assert depthwise_flat.depthwise_last_flat(x, w, out, sizes, None, np.float64)
    monkeypatch.setattr(depthwise_flat, "MIN_WIDTH_PER_SPREAD", 11)  # 20 < 11 * 2
    assert not depthwise_flat.depthwise_last_flat(x, w, out, sizes, None, np.float64)
