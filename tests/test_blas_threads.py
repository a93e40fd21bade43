"""Small products run on one BLAS thread: a BLAS-threaded GEMM leaves OpenBLAS's workers
spinning for ~0.1 s, and the pipelined op after it shares the cores with them
(`layoutops.kernels.blas.one_thread_below`). Each GEMM the kernels issue is recorded with
the BLAS thread count in force when it ran; no timing."""

from __future__ import annotations

import numpy as np
import pytest

import layoutops as lo
from layoutops.kernels import blas, taps_1d, taps_flat
from layoutops.kernels import conv as kconv
from layoutops.kernels import gemm as kgemm

pytestmark = pytest.mark.skipif(not blas.controllable(),
                                reason="no OpenBLAS thread control here")


@pytest.fixture
def blas_threads_seen(monkeypatch):
    """The BLAS thread count at every GEMM the kernels issue, with BLAS set to 2 threads
    (and the kernels to 2) for the test."""
    setter, getter = blas._functions()
    seen: list[int] = []
    real_matmul, real_tensordot, real_gemm = np.matmul, np.tensordot, kgemm.gemm

    def matmul(*args, **kwargs):
        seen.append(getter())
        return real_matmul(*args, **kwargs)

    def tensordot(*args, **kwargs):
        seen.append(getter())
        return real_tensordot(*args, **kwargs)

    def gemm(*args, **kwargs):
        seen.append(getter())
        return real_gemm(*args, **kwargs)

    monkeypatch.setattr(np, "matmul", matmul)
    monkeypatch.setattr(np, "tensordot", tensordot)
    for module in (kgemm, taps_1d, taps_flat):
        monkeypatch.setattr(module, "gemm", gemm)
    saved = getter()
    setter(2)
    old = lo.kernels.threads.set_num_threads(2)
    yield seen
    lo.kernels.threads.set_num_threads(old)
    setter(saved)


def _r(*shape):
    return np.random.default_rng(4).standard_normal(shape).astype(np.float32)


SMALL = {
    "conv CF 1x64x8x8": lambda: lo.conv(_r(1, 64, 8, 8), _r(64, 64, 3, 3), padding=1),
    "conv CL 1x8x8x64": lambda: lo.conv(_r(1, 8, 8, 64), _r(3, 3, 64, 64), padding=1,
                                         layout="NHWC"),
    "conv 1-D": lambda: lo.conv(_r(2, 32, 200), _r(32, 32, 5), padding=2),
    "conv_transpose k3 s1": lambda: lo.conv_transpose(_r(2, 32, 16, 16), _r(32, 32, 3, 3),
                                                      padding=1),
    "conv_transpose one sample k3 s2": lambda: lo.conv_transpose(
        _r(1, 32, 16, 16), _r(32, 16, 3, 3), stride=2, padding=1),
    "conv_transpose CL one sample k4 s2": lambda: lo.conv_transpose(
        _r(1, 8, 8, 64), _r(4, 4, 32, 64), stride=2, padding=1, layout="NHWC"),
    "conv_backward": lambda: lo.conv_backward(_r(2, 32, 16, 16), _r(2, 32, 16, 16),
                                              _r(32, 32, 3, 3), padding=1),
}


@pytest.mark.parametrize("name", SMALL)
def test_small_products_run_on_one_blas_thread(name, blas_threads_seen, both_small_paths):
    SMALL[name]()
    assert blas_threads_seen, "no GEMM recorded"
    assert set(blas_threads_seen) == {1}


def test_the_recorder_sees_blas_threads(blas_threads_seen, monkeypatch, no_tiny_path):
    """Without the rule, a small conv tile's GEMM runs on BLAS's two threads."""
    monkeypatch.setattr(kconv, "_SMALL_ONE_THREAD", False)
    SMALL["conv CF 1x64x8x8"]()
    assert 2 in blas_threads_seen
