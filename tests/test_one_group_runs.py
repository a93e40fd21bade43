"""Channels-last im2col chunks of one group with few channels (`conv._chunks_b`) copy whole
kernel rows (``kw * c`` values) as one item from a padded piece: the same columns, so the
same bits, as the copy of ``c``-value items, and the plain-loop reference."""

from __future__ import annotations

import numpy as np
import pytest
from conv_reference import conv_ref
from recording import record_taken

import layoutops as lo
from layoutops.kernels import conv as kconv
from layoutops.kernels.threads import set_num_threads

pytestmark = pytest.mark.usefixtures("no_tiny_path")

CASES = [
    # (N, *S), kernel, stride, padding pairs
    ((3, 23, 21), (7, 7), (2, 2), ((3, 3), (3, 3))),  # a stem: odd sizes
    ((2, 10, 12), (3, 2), (1, 3), ((1, 0), (2, 1))),  # asymmetric padding, width stride 3
    ((3, 40), (9,), (2,), ((4, 3),)),  # 1-D
]


@pytest.fixture
def chunked(monkeypatch):
    """Tiny inputs through `_run_im2col`'s chunks (not one whole-tile GEMM, not wide rows)."""
    monkeypatch.setattr(kconv, "_CHUNK_BYTES", 2000)
    monkeypatch.setattr(kconv, "_THIN_CHUNK_BYTES", 2000)
    monkeypatch.setattr(kconv, "_MIN_SPLIT_BYTES", 0)
    monkeypatch.setattr(kconv, "_ONE_THREAD_BYTES", 0)
    monkeypatch.setattr(kconv, "_WIDE_ROWS", False)
    monkeypatch.setattr(kconv, "_TAPS_FLAT", False)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("c", [1, 3, 4])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-k{c[1]}-s{c[2]}")
def test_kernel_row_items_match_the_channel_items_and_the_reference(case, c, threads,
                                                                    chunked, monkeypatch):
    shape, ks, ss, pads = case
    rng = np.random.default_rng(c + sum(shape))
    x = rng.standard_normal((shape[0], c, *shape[1:])).astype(np.float32)
    w = rng.standard_normal((6, c, *ks)).astype(np.float32)
    xl = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    wl = np.ascontiguousarray(np.moveaxis(w, (0, 1), (-1, -2)))  # (*K, I, O)
    layout = "NWC" if len(ks) == 1 else "NHWC"

    def run():
        previous = set_num_threads(threads)
        try:
            return lo.conv(xl, wl, stride=ss, padding=list(pads), layout=layout,
                           algorithm="im2col")
        finally:
            set_num_threads(previous)

    taken = record_taken(monkeypatch, kconv, "_copy_row_runs", taken=lambda r: True)
    got = run()
    assert taken and taken == [True] * len(taken), "the kernel-row copy did not run"
    monkeypatch.setattr(kconv, "_ONE_GROUP_RUN_BYTES", 0)
    taken.clear()
    np.testing.assert_array_equal(got, run())
    assert not taken
    want = conv_ref(x, w, None, strides=ss, pads=pads, dilations=(1,) * len(ks))
    np.testing.assert_allclose(np.moveaxis(got, -1, 1), want, rtol=1e-5, atol=1e-5)


def test_five_channels_keep_the_channel_items(chunked, monkeypatch):
    taken = record_taken(monkeypatch, kconv, "_copy_row_runs", taken=lambda r: True)
    x = np.ones((2, 9, 9, 5), np.float32)  # 20 bytes a pixel
    lo.conv(x, np.ones((3, 3, 5, 4), np.float32), stride=2, padding=1, layout="NHWC",
            algorithm="im2col")
    assert taken == []
