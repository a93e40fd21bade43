"""Which strategy ``algorithm="auto"`` picks for depthwise-like convolutions (one input
channel per group), and that a one-channel input (``groups=1``) takes ``im2col``: it went to
the per-group direct sums before, 10-25x slower. No timing: the route each call takes, and
its result against the plain-loop reference."""

from __future__ import annotations

import numpy as np
import pytest
from conv_reference import conv_ref

import layoutops as lo
from layoutops.kernels import conv as kconv


@pytest.mark.parametrize(
    "c_per, o_per, groups, channels_last, n_spatial, want",
    [
        (8, 8, 32, True, 2, "im2col"),  # grouped, not depthwise
        (1, 1, 96, False, 2, "direct"),  # depthwise (BENCH.md)
        (1, 1, 96, True, 2, "direct"),
        (1, 1, 8, False, 2, "im2col"),  # few groups, channels-first
        (1, 1, 8, True, 2, "direct"),
        (1, 1, 32, False, 3, "direct"),  # 3-D channels-first (by `depthwise_volume`)
        (1, 1, 128, False, 1, "im2col"),  # 1-D channels-first
        (1, 1, 128, True, 1, "direct"),
        (1, 1, 32, True, 3, "direct"),
        (1, 2, 16, True, 2, "direct"),  # a channel multiplier of 2 over 16 groups
        (1, 4, 16, True, 2, "im2col"),
        (1, 4, 32, True, 2, "direct"),
        (1, 8, 64, True, 2, "im2col"),  # at most 4 outputs per group
        (1, 2, 32, False, 2, "im2col"),
        (1, 32, 1, True, 2, "im2col"),  # a one-channel input
        (1, 32, 1, False, 2, "im2col"),
        (1, 16, 1, True, 3, "im2col"),
        (1, 1, 1, True, 2, "direct"),  # one channel in, one out
    ],
)
def test_auto_choice(c_per, o_per, groups, channels_last, n_spatial, want):
    assert kconv.choose_algorithm("auto", c_per, o_per, groups, channels_last,
                                  n_spatial) == want
    # a width stride: 3-D channels-first has no one-einsum path, and keeps im2col
    strided = "im2col" if (n_spatial, channels_last) == (3, False) else want
    assert kconv.choose_algorithm("auto", c_per, o_per, groups, channels_last, n_spatial,
                                  width_stride=2) == strided
    assert kconv.choose_algorithm("per_tap", c_per, o_per, groups, channels_last,
                                  n_spatial) == "per_tap"


@pytest.fixture
def runners(monkeypatch):
    """The strategies the calls ran (im2col's chunks or the direct sums)."""
    ran = []

    def spy(name, real):
        def run(*args, **kwargs):
            ran.append(name)
            return real(*args, **kwargs)
        return run

    monkeypatch.setattr(kconv, "_run_im2col", spy("im2col", kconv._run_im2col))
    monkeypatch.setattr(kconv, "_tiny_im2col", spy("im2col", kconv._tiny_im2col))
    monkeypatch.setattr(kconv, "_depthwise", spy("direct", kconv._depthwise))
    return ran


@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "NCDHW", "NDHWC"])
def test_one_channel_input_takes_im2col(layout, runners):
    rng = np.random.default_rng(3)
    spatial = (5, 7) if len(layout) == 4 else (4, 5, 6)
    x = rng.standard_normal((2, 1, *spatial))
    w = rng.standard_normal((6, 1, *(3,) * len(spatial)))
    want = conv_ref(x, w, None, strides=(1,) * len(spatial), pads=((1, 1),) * len(spatial),
                    dilations=(1,) * len(spatial), groups=1)
    channels_last = layout[-1] == "C"
    if channels_last:
        x, w = np.moveaxis(x, 1, -1), np.moveaxis(w, (0, 1), (-1, -2))
    got = lo.conv(np.ascontiguousarray(x), np.ascontiguousarray(w), padding=1, layout=layout)
    assert runners == ["im2col"]
    np.testing.assert_allclose(np.moveaxis(got, -1, 1) if channels_last else got, want,
                               rtol=1e-12, atol=1e-12)


def test_depthwise_still_takes_the_direct_sums(runners):
    x = np.random.default_rng(4).standard_normal((2, 8, 9, 32))  # NHWC
    w = np.ones((3, 3, 1, 32))
    lo.conv(x, w, padding=1, groups=32, layout="NHWC")
    assert runners == ["direct"]
