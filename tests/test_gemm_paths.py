"""Which GEMM path the im2col strategy takes by shape: the per-sample paths (flat taps, wide
rows, 1-D taps) only where their GEMMs are large, the im2col chunks (several samples per
GEMM) on small planes. No timing: the route each call takes, and its result."""

from __future__ import annotations

import numpy as np
import pytest
from forced_conv import conv2d_in
from recording import record_taken

import layoutops as lo
from layoutops.kernels import conv as kconv
from layoutops.kernels.gemm import available

pytestmark = [
    pytest.mark.skipif(not available(np.float32),
                       reason="no BLAS gemm with beta for float32 here"),
    pytest.mark.usefixtures("no_tiny_path"),
]

PATHS = ("_taps_flat_tile", "_wide_tile", "_taps_1d_tile")


@pytest.fixture
def routes(monkeypatch):
    """Per path, whether each call took it."""
    return {name: record_taken(monkeypatch, kconv, name) for name in PATHS}


def _window_ref(x, w, pad: int):
    """A "same" stride-1 convolution in float64 by one einsum over a sliding-window view of
    the zero-padded input (NumPy only; the plain-loop reference is too slow at these
    sizes)."""
    k = len(w.shape) - 2
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + [(pad, pad)] * k)
    axes = tuple(range(2, 2 + k))
    win = np.lib.stride_tricks.sliding_window_view(xp, w.shape[2:], axis=axes)
    letters = "hw"[:k] if k <= 2 else None
    taps = "ab"[:k]
    return np.einsum(f"nc{letters}{taps},oc{taps}->no{letters}", win, w.astype(np.float64))


def _taken(routes) -> set[str]:
    return {name for name, calls in routes.items() if any(calls)}


# (N, C, spatial, O, kernel, layout, the path taken or None for the im2col chunks)
_CASES = [
    # small planes: a tap GEMM of 256 pixels by 32 by 32 (0.5 Mflop) -> im2col chunks
    (8, 32, (16, 16), 32, 3, "NCHW", None),
    (8, 32, (16, 16), 32, 3, "NHWC", None),
    (16, 16, (32, 32), 16, 3, "NHWC", None),
    # 14x14 planes (196 pixels, below 256), though 6.4 Mflop per tap GEMM
    (8, 128, (14, 14), 128, 3, "NCHW", None),
    # ResNet-sized planes: 3136 pixels by 64 by 64 (26 Mflop) per tap
    (2, 64, (56, 56), 64, 3, "NCHW", "_taps_flat_tile"),
    (2, 64, (56, 56), 64, 3, "NHWC", "_taps_flat_tile"),
    # 16 channels (no flat taps): kernel-row GEMMs of 4096 pixels by 48 by 32 / 64
    (2, 16, (64, 64), 32, 3, "NCHW", "_wide_tile"),
    (2, 16, (64, 64), 64, 3, "NHWC", "_wide_tile"),
    # ... and channels-last with 32 outputs (12.6 Mflop: below its 24)
    (2, 16, (64, 64), 32, 3, "NHWC", None),
    # 1-D: short runs of 512 outputs by 32 by 32 (1 Mflop) / 4000 by 32 by 32 (8 Mflop)
    (8, 32, (512,), 32, 7, "NCL", None),
    (2, 32, (4000,), 32, 7, "NCL", "_taps_1d_tile"),
]


@pytest.mark.parametrize("case", _CASES, ids=lambda c: f"{c[0]}x{c[1]}x{c[2]}-{c[3]}-{c[5]}")
def test_gemm_path_by_shape(case, routes):
    n, c, spatial, o, k, layout, path = case
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, c, *spatial)).astype(np.float32)
    w = rng.standard_normal((o, c, *(k,) * len(spatial))).astype(np.float32)
    want = _window_ref(x, w, k // 2)
    if len(spatial) == 2:
        got = conv2d_in(layout, x, w, padding=k // 2)
    else:
        got = lo.conv(x, w, padding=k // 2, layout=layout)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
    assert _taken(routes) == ({path} if path else set())
