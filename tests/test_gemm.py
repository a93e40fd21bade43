"""`layoutops.kernels.gemm`: BLAS GEMMs that add into their output, on strided views."""

from __future__ import annotations

import numpy as np
import pytest

from layoutops.kernels import gemm as kgemm
from layoutops.kernels.gemm import available, gemm, gemm_sum


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


@pytest.mark.parametrize("accumulating", [True, False])
@pytest.mark.parametrize("layout", ["NCDHW", "NDHWC"])
def test_3d_depth_taps_with_and_without_accumulating_gemms(layout, accumulating, monkeypatch):
    """The 3-D depth-column path (`conv._depth_taps`) adds its depth taps with `gemm`, or
    with products and additions when `gemm` declines; both match the loop reference."""
    from conv_reference import act_from, act_to, conv_ref, kernel_to

    import layoutops as lo

    if not accumulating:
        monkeypatch.setattr(kgemm, "gemm", lambda *args, **kwargs: False)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 6, 5, 4))
    w = rng.standard_normal((4, 3, 3, 2, 3))
    pads = ((1, 1), (0, 1), (1, 0))
    want = conv_ref(x, w, strides=(1, 1, 1), pads=pads, dilations=(2, 1, 1))
    klay = "OIDHW" if layout == "NCDHW" else "DHWIO"
    got = lo.conv3d(act_to(x, "NCDHW", layout), kernel_to(w, klay, "OIDHW"),
                    padding=list(pads), dilation=(2, 1, 1), layout=layout, algorithm="im2col")
    np.testing.assert_allclose(act_from(got, layout, "NCDHW"), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("blas", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_gemm_sum_with_and_without_blas(dtype, blas, monkeypatch):
    """Sums of products on strided views; float16 (no BLAS routine) and a declining `gemm`
    take the NumPy path."""
    if not blas:
        monkeypatch.setattr(kgemm, "gemm", lambda *args, **kwargs: False)
    rng = np.random.default_rng(3)
    big = rng.standard_normal((9, 12)).astype(dtype)
    terms = [(big[j : j + 5, :4], rng.standard_normal((4, 3)).astype(dtype)) for j in range(3)]
    out_big = np.full((6, 7), 7.0, dtype)
    out = out_big[1:, 2:5]
    gemm_sum(terms, out)
    want = sum(a.astype(np.float64) @ b.astype(np.float64) for a, b in terms)
    tol = {np.float16: 2e-2, np.float32: 1e-5, np.float64: 1e-12}[dtype]
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol)
    out_big[1:, 2:5] = 7.0
    assert (out_big == 7.0).all()  # nothing outside out written


def test_gemm_sum_mixed_terms():
    """A term BLAS cannot read (inner stride 2) after one it can: added by NumPy."""
    rng = np.random.default_rng(5)
    a1 = rng.standard_normal((4, 3))
    a2 = rng.standard_normal((4, 6))[:, ::2]
    b = rng.standard_normal((3, 2))
    out = np.empty((4, 2))
    gemm_sum([(a1, b), (a2, b)], out)
    np.testing.assert_allclose(out, a1 @ b + a2 @ b, rtol=1e-12, atol=1e-12)
