"""`layoutops.kernels.gemm`: BLAS GEMMs that add into their output, on strided views."""

from __future__ import annotations

import numpy as np
import pytest

from layoutops.kernels.gemm import available, gemm


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("shape", [(5, 3, 4), (1, 7, 2), (6, 1, 1), (33, 17, 9)])
def test_gemm_matches_matmul_on_strided_rows(dtype, accumulate, shape):
    m, k, n = shape
    rng = np.random.default_rng(1)
    a = rng.standard_normal((m, k + 3)).astype(dtype)[:, 1 : k + 1]  # row stride > k
    b = rng.standard_normal((k + 2, n)).astype(dtype)[2:]
    big = rng.standard_normal((m + 1, n + 5)).astype(dtype)
    c = big[1:, 2 : n + 2]
    before, big_before = c.copy(), big.copy()
    want = a.astype(np.float64) @ b.astype(np.float64) + (before if accumulate else 0)
    done = gemm(a, b, c, accumulate=accumulate)
    assert done == available(dtype)
    if done:
        np.testing.assert_allclose(c, want, rtol=1e-5 if dtype == np.float32 else 1e-12,
                                   atol=1e-5 if dtype == np.float32 else 1e-12)
        big[1:, 2 : n + 2] = big_before[1:, 2 : n + 2]
        np.testing.assert_array_equal(big, big_before)  # nothing outside c written
    else:
        np.testing.assert_array_equal(c, before)


def test_gemm_declines_what_blas_cannot_read():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((4, 6))
    b = rng.standard_normal((6, 3))
    c = np.zeros((4, 3))
    cases = [
        (a[:, ::2], rng.standard_normal((3, 3)), c),  # inner stride 2
        (a[::-1], b, c),  # negative row stride
        (a.astype(np.float32), b, c),  # mixed dtypes
        (a.astype(np.float16), b.astype(np.float16), c.astype(np.float16)),  # no routine
        (a.astype(np.int64), b.astype(np.int64), c.astype(np.int64)),
        (a, b, np.zeros((3, 4)).T),  # c column-major
    ]
    for x, y, z in cases:
        before = z.copy()
        assert gemm(x, y, z, accumulate=True) is False
        np.testing.assert_array_equal(z, before)
    with pytest.raises(ValueError, match="do not match"):
        gemm(a, b, np.zeros((4, 4)), accumulate=False)


def test_gemm_empty_inner_dimension():
    c = np.full((2, 3), 5.0)
    assert gemm(np.zeros((2, 0)), np.zeros((0, 3)), c, accumulate=True) is available(np.float64)
    if available(np.float64):
        assert (c == 5.0).all()
        assert gemm(np.zeros((2, 0)), np.zeros((0, 3)), c, accumulate=False)
        assert (c == 0.0).all()
