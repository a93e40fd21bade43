"""Small max pools with indices by `np.argmax` over their copied windows
(`layoutops.kernels.pool._small_argmax`): when it applies, when it hands back to the running
form, and that its values and indices are the plain loops' (tests/pool_reference.py) in
every layout, with odd and even sizes, dilation, padding and ceil_mode. The reference
modules (test_pool, test_pool_torch, test_pool_onnx) run both paths through the
``both_argmax_paths`` fixture."""

from __future__ import annotations

import numpy as np
import pool_reference as ref
import pytest
from recording import record_taken

import layoutops as lo
import layoutops.kernels.pool as kpool

LAYOUTS = {1: ("NCW", "NWC"), 2: ("NCHW", "NHWC", "NWHC"), 3: ("NCDHW", "NDHWC")}


def _to(r, layout):
    canon = "NC" + "".join(c for c in layout if c not in "NC")
    return np.ascontiguousarray(r.transpose([canon.index(c) for c in layout]))


def _back(y, layout):
    canon = "NC" + "".join(c for c in layout if c not in "NC")
    return y.transpose([layout.index(c) for c in canon])


@pytest.fixture
def taken(monkeypatch):
    return record_taken(monkeypatch, kpool, "_small_argmax", taken=bool)


CASES = [
    # (N, C, spatial), kernel, stride, dilation, padding, ceil_mode
    ((2, 3, 7), 3, 2, 1, 1, False),
    ((1, 2, 8), 2, 2, 1, 0, True),
    ((2, 3, 5, 6), 3, 2, 1, 1, False),
    ((1, 4, 6, 5), 2, 1, 2, 1, False),
    ((2, 2, 7, 7), 3, 2, 1, 1, True),
    ((1, 3, 4, 4), (2, 3), (1, 2), 1, (1, 0), False),
    ((1, 2, 4, 5, 6), 3, 2, 1, 1, False),
    ((2, 1, 3, 4, 4), 2, 2, 1, 0, True),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: str(c))
def test_values_and_indices_match_the_loops(case, taken):
    shape, k, s, d, p, ceil = case
    rank = len(shape) - 2
    ks, ss, ds, ps = ((v,) * rank if isinstance(v, int) else tuple(v) for v in (k, s, d, p))
    rng = np.random.default_rng(len(shape) + sum(ks))
    r = rng.integers(-3, 4, size=shape).astype(np.float32)  # many ties
    want, want_idx = ref.max_pool(r, ks, ss, ds, tuple((q, q) for q in ps), ceil)
    for layout in LAYOUTS[rank]:
        out, idx = lo.max_pool(_to(r, layout), k, stride=s, dilation=d, padding=p,
                               ceil_mode=ceil, return_indices=True, layout=layout)
        np.testing.assert_array_equal(_back(out, layout), want)
        np.testing.assert_array_equal(_back(idx, layout), want_idx)
    assert taken == [True] * len(LAYOUTS[rank])


def test_a_window_whose_maximum_is_the_padding_value_goes_to_the_running_form(taken):
    # -inf cells at the border: the padding (-inf too) would win np.argmax's first-maximum
    # rule there; the running form never reads the padding
    r = np.zeros((1, 1, 4, 5), np.float64)
    r[0, 0, :2, :2] = -np.inf
    want, want_idx = ref.max_pool(r, (3, 3), (2, 2), (1, 1), ((1, 1), (1, 1)))
    out, idx = lo.max_pool(r, 3, stride=2, padding=1, return_indices=True)
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(idx, want_idx)
    assert idx[0, 0, 0, 0] == 0 and taken == [False]


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.bool_])
def test_integer_minimum_at_the_border_goes_to_the_running_form(dtype, taken):
    low = np.iinfo(dtype).min if dtype is not np.bool_ else False
    r = np.full((1, 1, 5, 4), 1, dtype)
    r[0, 0, :2, :] = low
    want, want_idx = ref.max_pool(r, (2, 2), (2, 2), (1, 1), ((1, 1), (1, 1)))
    out, idx = lo.max_pool(r, 2, stride=2, padding=1, return_indices=True)
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(idx, want_idx)
    assert out.dtype == dtype and taken == [False]


def test_the_lowest_value_without_padding_stays_on_the_arg_max_path(taken):
    r = np.full((1, 1, 4, 4), -np.inf)
    out, idx = lo.max_pool(r, 2, return_indices=True)
    assert idx.tolist() == [[[[0, 2], [8, 10]]]] and np.all(out == -np.inf)
    assert taken == [True]


def test_signed_zero_ties_keep_the_first_cell_and_its_sign(taken):
    r = np.array([[[-0.0, 0.0, 0.0, -0.0, 1.0, -0.0]]])
    out, idx = lo.max_pool(r, 2, return_indices=True)
    assert idx.tolist() == [[[0, 2, 4]]]
    assert np.signbit(out).tolist() == [[[True, False, False]]]
    assert taken == [True]


def test_nan_windows_take_the_last_nan(taken):
    nan = np.nan
    r = np.array([[[1.0, nan, 3.0, nan, 2.0, 0.0, 5.0, 4.0]]], np.float32)
    out, idx = lo.max_pool(r, 4, return_indices=True)
    assert np.isnan(out[0, 0, 0]) and out[0, 0, 1] == 5.0
    assert idx.tolist() == [[[3, 6]]] and taken == [True]


def test_larger_pools_and_small_workspace_limits_keep_the_running_form(taken):
    big = np.zeros((8, 32, 32, 32), np.float32)
    lo.max_pool(big, 3, stride=2, padding=1, return_indices=True)
    small = np.random.default_rng(4).standard_normal((2, 16, 16, 16)).astype(np.float32)
    out, idx = lo.max_pool(small, 2, return_indices=True)  # ~112 KiB of temporaries
    with lo.workspace_limit(1 << 16):
        out, idx = lo.max_pool(small, 2, return_indices=True)
    want, want_idx = ref.max_pool(small, (2, 2), (2, 2), (1, 1), ((0, 0), (0, 0)))
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(idx, want_idx)
    assert taken == [False, True, False]


def test_half_precision_and_unsupported_dtypes(taken):
    r = np.random.default_rng(3).standard_normal((1, 2, 5, 5)).astype(np.float16)
    want, want_idx = ref.max_pool(r, (2, 2), (2, 2), (1, 1), ((1, 1), (1, 1)))
    out, idx = lo.max_pool(r, 2, stride=2, padding=1, return_indices=True)
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(idx, want_idx)
    assert out.dtype == np.float16 and taken == [True]
    ml_dtypes = pytest.importorskip("ml_dtypes")
    b = r.astype(ml_dtypes.bfloat16)
    out_b, idx_b = lo.max_pool(b, 2, stride=2, padding=1, return_indices=True)
    want_b, want_bi = ref.max_pool(b.astype(np.float32), (2, 2), (2, 2), (1, 1),
                                   ((1, 1), (1, 1)))
    np.testing.assert_array_equal(out_b.astype(np.float32), want_b)
    np.testing.assert_array_equal(idx_b, want_bi)
    assert taken == [True, False]  # bfloat16 (not one of NumPy's kinds): the running form
