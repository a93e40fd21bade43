"""3-D channels-last depth columns (`conv._im2col_depth`) copied one kernel row (``kw * c``
values) per item when a pixel's channels are short: the same columns, so the same bits, as the
element copy, and the plain-loop reference."""

from __future__ import annotations

import numpy as np
import pytest
from conv_reference import conv_ref
from recording import record_taken

import layoutops as lo
from layoutops.kernels import conv as kconv

pytestmark = pytest.mark.usefixtures("no_tiny_path")

CASES = [
    # (D, H, W), kernel, stride, dilation, padding
    ((5, 6, 7), (3, 3, 3), (1, 1, 1), (1, 1, 1), 1),
    ((4, 9, 8), (2, 3, 2), (1, 2, 2), (2, 2, 1), (1, 2, 0)),
    ((4, 7, 11), (3, 2, 3), (1, 3, 1), (1, 1, 1), 0),
]


@pytest.mark.parametrize("c", [1, 3, 4])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-k{c[1]}-s{c[2]}-d{c[3]}")
def test_row_items_match_the_element_copy_and_the_reference(case, c, monkeypatch):
    sizes, ks, ss, ds, pad = case
    rng = np.random.default_rng(c + sum(sizes))
    x = rng.standard_normal((2, c, *sizes)).astype(np.float32)
    w = rng.standard_normal((5, c, *ks)).astype(np.float32)
    xl = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    wl = np.ascontiguousarray(np.moveaxis(w, (0, 1), (-1, -2)))  # DHWIO

    def run():
        return lo.conv(xl, wl, stride=ss, dilation=ds, padding=pad, layout="NDHWC",
                       algorithm="im2col")

    taken = record_taken(monkeypatch, kconv, "_copy_row_runs", taken=lambda r: True)
    got = run()
    assert taken == [True] * len(taken) and taken, "the kernel-row copy did not run"
    monkeypatch.setattr(kconv, "_DEPTH_ROW_RUNS", False)
    np.testing.assert_array_equal(got, run())
    pads = [pad] * 3 if isinstance(pad, int) else list(pad)
    want = conv_ref(x, w, None, strides=ss, pads=[(p, p) for p in pads], dilations=ds)
    np.testing.assert_allclose(np.moveaxis(got, -1, 1), want, rtol=1e-5, atol=1e-5)


def test_eight_channels_keep_the_element_copy(monkeypatch):
    taken = record_taken(monkeypatch, kconv, "_copy_row_runs", taken=lambda r: True)
    x = np.ones((1, 4, 5, 6, 8), np.float32)
    lo.conv(x, np.ones((3, 3, 3, 8, 4), np.float32), padding=1, layout="NDHWC")
    assert taken == []
