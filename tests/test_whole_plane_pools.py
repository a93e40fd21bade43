"""Pools with one window over each whole plane (``avg_pool(x, 7)`` on 7x7 planes, adaptive
pools to size 1) run as global pools: the route is taken, the values are the plain-loop
reference's, and pools that only look alike (padding, dilation, a divisor override,
indices, two windows) keep the windowed path."""

from __future__ import annotations

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



@pytest.fixture
def routed(monkeypatch):
    return record_taken(monkeypatch, kpool, "global_pool", taken=lambda result: True)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("sizes", [(7,), (7, 7), (6, 5), (3, 4, 5)], ids=str)
@pytest.mark.parametrize("channels_last", [False, True])
def test_whole_plane_pools_match_reference(sizes, channels_last, dtype, routed):
    k = len(sizes)
    layout = LAYOUTS[k][int(channels_last)]
    r = np.random.default_rng(k).standard_normal((3, 5, *sizes))
    cf = _cf(layout)
    x = act_to(r, cf, layout).astype(dtype)
    pads = ((0, 0),) * k
    ones = (1,) * k
    tol = 1e-6 if dtype == "float32" else 1e-13
    results = {
        "avg": (lo.avg_pool(x, sizes, layout=layout),
                ref.avg_pool(r, sizes, ones, ones, pads)),
        "max": (lo.max_pool(x, sizes, layout=layout),
                ref.max_pool(r, sizes, ones, ones, pads)[0]),
        "adaptive avg": (lo.adaptive_avg_pool(x, 1, layout=layout),
                         ref.adaptive_pool(r, ones, "avg")),
        "adaptive max": (lo.adaptive_max_pool(x, 1, layout=layout),
                         ref.adaptive_pool(r, ones, "max")[0]),
    }
    assert len(routed) == 4
    for name, (got, want) in results.items():
        assert got.dtype == np.dtype(dtype) and got.flags.c_contiguous, name
        assert got.shape == x.shape[:1] + ((1,) * k + x.shape[-1:] if channels_last
                                           else x.shape[1:2] + (1,) * k), name
        np.testing.assert_allclose(act_from(got, layout, cf), want.astype(dtype), rtol=tol,
                                   atol=tol, err_msg=name)


def test_nan_and_half_types_on_the_global_route(routed):
    x = np.arange(2 * 3 * 4 * 4, dtype=np.float16).reshape(2, 3, 4, 4) / 64
    got = lo.avg_pool(x, 4)
    assert got.dtype == np.float16
    np.testing.assert_allclose(got, x.astype(np.float32).mean(axis=(2, 3), keepdims=True),
                               rtol=1e-3)
    y = np.ones((1, 2, 3, 3), np.float32)
    y[0, 1, 2, 0] = np.nan
    m = lo.max_pool(y, 3)
    assert m[0, 0, 0, 0] == 1 and np.isnan(m[0, 1, 0, 0])
    assert len(routed) == 2


@pytest.mark.parametrize(
    "why, call",
    [
        ("padding", lambda x: lo.avg_pool(x, 5, padding=1)),
        ("dilation", lambda x: lo.max_pool(x, 3, dilation=2)),
        ("divisor override", lambda x: lo.avg_pool(x, 5, divisor_override=7)),
        ("indices", lambda x: lo.max_pool(x, 5, return_indices=True)),
        ("two windows", lambda x: lo.avg_pool(x, (5, 3), stride=(5, 2))),
        ("a kernel short of the plane", lambda x: lo.avg_pool(x, 4)),
    ],
)
def test_look_alikes_keep_the_windowed_path(why, call, routed):
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5))
    call(x)
    assert routed == [], why


@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "NHCW"])
def test_whole_plane_arg_max_matches_reference(layout, monkeypatch):
    """The indices of one window over each whole plane by `np.argmax` over the plane (the
    first maximum in row-major order), a NaN plane's the index of its last NaN; NHCW (the
    spatial axes apart) keeps the running form. Values and indices as the plain loops."""
    argmax = record_taken(monkeypatch, kpool, "_whole_plane_argmax", taken=bool)
    r = np.random.default_rng(5).integers(-2, 3, size=(2, 3, 4, 5)).astype(np.float64)
    r[1, 2, 1, 1] = r[1, 2, 3, 0] = np.nan
    want, want_idx = ref.max_pool(r, (4, 5), (1, 1), (1, 1), ((0, 0), (0, 0)))
    perm = ["NCHW".index(a) for a in layout]
    x = np.ascontiguousarray(r.transpose(perm))
    out, idx = lo.max_pool(x, (4, 5), return_indices=True, layout=layout)
    back = np.argsort(perm)
    np.testing.assert_array_equal(out.transpose(back), want)
    np.testing.assert_array_equal(idx.transpose(back), want_idx)
    assert argmax == [layout != "NHCW"]
    grad = lo.max_pool_backward(np.ones(out.shape), x, (4, 5), layout=layout).grad_input
    assert grad.sum() == out.size  # each plane's gradient went to one cell
