"""The einsum window sums of channels-last average pools (`kernels.window_sums`).

The shapes here have enough channels for the einsum path (the pooling grid of
``test_pool.py`` uses 3 channels and never reaches it); each case checks that the path ran,
then compares with the plain-loop reference of ``pool_reference``.
"""

from __future__ import annotations

import numpy as np
import pool_reference as ref
import pytest

import layoutops as lo
import layoutops.kernels.pool as kpool
from layoutops.kernels import threads, window_sums

CHANNELS = window_sums.MIN_RUN + 3  # odd, and enough for the einsum path
REAL_MIN_BYTES = window_sums.MIN_BYTES


@pytest.fixture(autouse=True)
def tiny_inputs_qualify(monkeypatch):
    """The einsum path on inputs of a few KiB (it starts at a few MiB)."""
    monkeypatch.setattr(window_sums, "MIN_BYTES", 0)


@pytest.fixture
def calls(monkeypatch):
    """Count the calls of `window_sums.window_sums`."""
    seen = []
    real = window_sums.window_sums

    def spy(*args, **kwargs):
        seen.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(window_sums, "window_sums", spy)
    return seen


def _channels_last(r):
    return np.ascontiguousarray(np.moveaxis(r, 1, -1))


def _data(shape, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(-8, 9, size=shape) + rng.standard_normal(shape) * 0.25


CASES = [
    # in_sizes, kernel, stride, dilation, divisor_override
    ((8, 8), (2, 2), (2, 2), (1, 1), None),  # the BENCH.md shape: a power-of-two divisor
    ((9, 7), (2, 2), (2, 2), (1, 1), None),  # odd sizes: the last row / column unused
    ((11, 10), (3, 3), (2, 2), (1, 1), None),  # overlapping windows, divisor 9
    ((10, 9), (2, 3), (3, 2), (2, 1), None),  # dilation, stride > kernel along one axis
    ((7, 6), (1, 2), (1, 2), (1, 1), 3),  # divisor_override
    ((12,), (4,), (4,), (1,), None),  # 1-D
    ((5, 6, 7), (2, 2, 2), (2, 2, 2), (1, 1, 1), None),  # 3-D
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=[str(c[:3]) for c in CASES])
def test_channels_last_average_pools_match_reference(case, dtype, calls):
    in_sizes, ks, ss, ds, override = case
    r = _data((2, CHANNELS, *in_sizes), seed=len(calls))
    layout = {1: "NWC", 2: "NHWC", 3: "NDHWC"}[len(in_sizes)]
    x = _channels_last(r).astype(dtype)
    got = lo.avg_pool(x, ks, stride=ss, dilation=ds, divisor_override=override, layout=layout)
    assert len(calls) == 1, "the einsum path did not run"
    pads = ((0, 0),) * len(in_sizes)
    want = ref.avg_pool(r.astype(dtype), ks, ss, ds, pads, divisor=override)
    tol = 1e-6 if dtype == "float32" else 1e-13
    assert got.dtype == np.dtype(dtype) and got.flags.c_contiguous
    np.testing.assert_allclose(np.moveaxis(got, -1, 1), want, rtol=tol, atol=tol)


def test_results_do_not_depend_on_the_thread_count(monkeypatch, calls):
    monkeypatch.setattr(window_sums, "PARALLEL_BYTES", 0)
    x = _channels_last(_data((3, CHANNELS, 15, 14), seed=1)).astype(np.float32)
    got = {}
    for n in (1, 2, 3):
        old = threads.set_num_threads(n)
        try:
            got[n] = lo.avg_pool(x, 3, stride=2, layout="NHWC")
        finally:
            threads.set_num_threads(old)
    assert len(calls) == 3
    np.testing.assert_array_equal(got[1], got[2])
    np.testing.assert_array_equal(got[1], got[3])
    # one sample: the split falls on the output rows
    one = x[:1]
    for n in (1, 2):
        old = threads.set_num_threads(n)
        try:
            got[n] = lo.avg_pool(one, 3, stride=2, layout="NHWC")
        finally:
            threads.set_num_threads(old)
    np.testing.assert_array_equal(got[1], got[2])


@pytest.mark.parametrize(
    "why, shape, layout, kwargs",
    [
        ("padding", (1, 8, 8, CHANNELS), "NHWC", dict(kernel_size=2, stride=2, padding=1)),
        ("ceil_mode overhang", (1, 9, 9, CHANNELS), "NHWC",
         dict(kernel_size=2, stride=2, ceil_mode=True)),
        ("channels-first", (1, CHANNELS, 8, 8), "NCHW", dict(kernel_size=2, stride=2)),
        ("short channel run", (1, 8, 8, window_sums.MIN_RUN - 1), "NHWC",
         dict(kernel_size=2, stride=2)),
        ("many taps per stride", (1, 8, 8, CHANNELS), "NHWC", dict(kernel_size=3, stride=1)),
    ],
)
def test_declines_go_to_the_separable_passes(why, shape, layout, kwargs, calls):
    r = _data(shape, seed=3)
    lo.avg_pool(r, layout=layout, **kwargs)
    assert calls == [], why


def test_small_inputs_go_to_the_separable_passes(monkeypatch, calls):
    monkeypatch.setattr(window_sums, "MIN_BYTES", REAL_MIN_BYTES)
    small = np.zeros((8, 16, 16, window_sums.MIN_RUN), np.float32)  # 0.5 MiB
    lo.avg_pool(small, 2, layout="NHWC")
    assert calls == []
    # the bound scales with the run: half the bytes with twice the channels
    run = window_sums.MIN_RUN
    n = REAL_MIN_BYTES // (4 * 4 * 16 * 16 * run)  # n x 16 x 16 x 2 run: half the bytes
    lo.avg_pool(np.zeros((2 * n, 16, 16, run), np.float32), 2, layout="NHWC")
    assert calls == []
    lo.avg_pool(np.zeros((n, 16, 16, 2 * run), np.float32), 2, layout="NHWC")
    assert len(calls) == 1


def test_half_types_keep_their_float32_accumulation(calls):
    x = _channels_last(_data((1, CHANNELS, 8, 8), seed=4)).astype(np.float16)
    got = lo.avg_pool(x, 2, layout="NHWC")
    assert calls == []  # float16 sums in float32 on the separable path
    assert got.dtype == np.float16


def test_switch_off_gives_the_same_values(monkeypatch, calls):
    x = _channels_last(_data((2, CHANNELS, 10, 10), seed=5)).astype(np.float32)
    on = lo.avg_pool(x, 2, layout="NHWC")
    monkeypatch.setattr(kpool, "_WINDOW_SUMS", False)
    off = lo.avg_pool(x, 2, layout="NHWC")
    assert len(calls) == 1
    np.testing.assert_allclose(on, off, rtol=1e-6, atol=1e-6)
