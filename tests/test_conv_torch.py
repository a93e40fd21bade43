"""Cross-checks against PyTorch (skipped when torch is not installed)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import layoutops as lo

pytestmark = pytest.mark.usefixtures("both_small_paths")

torch = pytest.importorskip("torch")
F = torch.nn.functional

TORCH_CONV = {1: "conv1d", 2: "conv2d", 3: "conv3d"}
ALGORITHMS = ["auto", "im2col", "per_tap", "direct"]


def torch_conv(x, w, b, *, stride, padding, dilation, groups, mode):
    """PyTorch's result through nn.ConvNd (which applies padding_mode itself)."""
    n = x.ndim - 2
    cls = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[n]
    c_out, _, *k = w.shape
    m = cls(x.shape[1], c_out, k, stride=stride, padding=padding, dilation=dilation,
            groups=groups, bias=b is not None, padding_mode=mode, dtype=torch.float64)
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(w))
        if b is not None:
            m.bias.copy_(torch.from_numpy(b))
        return m(torch.from_numpy(x)).numpy()


def both_layouts(x, w, b, n, **kwargs):
    cf, cl = lo.channels_first(n).spec, lo.channels_last(n).spec
    kcf, kcl = "OI" + cf[2:], cf[2:] + "IO"
    out_cf = lo.conv(x, w, b, layout=cf, **kwargs)
    out_cl = lo.conv(lo.convert(x, cf, cl, copy=True), lo.convert_kernel(w, kcf, kcl), b,
                     layout=cl, **kwargs)
    return out_cf, lo.convert(out_cl, cl, cf)


CASES = [
    # n, N, C_in, C_out, spatial, k, stride, padding, dilation, groups, mode
    (1, 2, 3, 4, (9,), 3, 1, 1, 1, 1, "zeros"),
    (1, 2, 4, 4, (10,), 4, 2, 3, 2, 2, "reflect"),
    (1, 1, 2, 2, (7,), 3, 1, 4, 1, 2, "circular"),
    (2, 2, 3, 6, (7, 8), 3, 1, 1, 1, 1, "zeros"),
    (2, 2, 4, 6, (8, 7), 3, 2, (2, 1), (1, 2), 2, "reflect"),
    (2, 1, 6, 12, (6, 6), 3, (2, 1), 2, 1, 6, "replicate"),
    (2, 2, 4, 4, (5, 6), (2, 3), 1, (3, 2), 1, 4, "circular"),
    (2, 1, 32, 16, (9, 10), 3, 1, 1, 1, 1, "zeros"),
    (2, 1, 32, 16, (9, 10), 3, 2, 1, 2, 1, "reflect"),
    (3, 1, 2, 4, (4, 5, 6), 3, 1, 1, 1, 1, "zeros"),
    (3, 1, 4, 4, (5, 4, 6), 2, (1, 2, 1), (1, 0, 1), 2, 2, "replicate"),
    (3, 1, 2, 2, (4, 4, 5), 3, 2, 2, 1, 1, "circular"),
]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}d-{c[-1]}-g{c[-2]}")
def test_against_torch(case, algorithm):
    n, batch, c_in, c_out, spatial, k, stride, padding, dilation, groups, mode = case
    rng = np.random.default_rng(sum(spatial) * 7 + c_in)
    ks = (k,) * n if isinstance(k, int) else k
    x = rng.standard_normal((batch, c_in, *spatial))
    w = rng.standard_normal((c_out, c_in // groups, *ks))
    b = rng.standard_normal(c_out)
    ref = torch_conv(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups,
                     mode=mode)
    for out in both_layouts(x, w, b, n, stride=stride, padding=padding, dilation=dilation,
                            groups=groups, padding_mode=mode, algorithm=algorithm):
        np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_same_padding_stride_one_matches_torch():
    rng = np.random.default_rng(9)
    for size in (6, 7):
        x = rng.standard_normal((1, 3, size, size + 1))
        w = rng.standard_normal((2, 3, 4, 3))
        ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding="same",
                       dilation=(1, 2)).numpy()
        for out in both_layouts(x, w, None, 2, padding="same", dilation=(1, 2)):
            np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-9)


def test_depthwise_against_torch():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 4, 9, 8)).astype(np.float32)
    w = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride=2,
                   padding=1, groups=4).numpy()
    np.testing.assert_allclose(lo.depthwise_conv2d(x, w, b, stride=2, padding=1), ref,
                               rtol=1e-5, atol=1e-5)
    w_hwcm = lo.convert_kernel(w, "OIHW", "HWCM", groups=4)
    out = lo.depthwise_conv2d(lo.convert(x, "NCHW", "NHWC"), w_hwcm, b, stride=2, padding=1,
                              layout="NHWC")
    np.testing.assert_allclose(lo.convert(out, "NHWC", "NCHW"), ref, rtol=1e-5, atol=1e-5)


def test_half_types_against_torch_float32():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((1, 8, 6, 6)).astype(np.float16)
    w = rng.standard_normal((4, 8, 3, 3)).astype(np.float16)
    ref = F.conv2d(torch.from_numpy(x).float(), torch.from_numpy(w).float(), padding=1).numpy()
    for algorithm in ALGORITHMS:
        out = lo.conv2d(x, w, padding=1, algorithm=algorithm)
        assert out.dtype == np.float16
        np.testing.assert_allclose(out.astype(np.float32), ref, rtol=2e-3, atol=1e-2)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 3),
    size=st.integers(3, 8),
    k=st.integers(1, 3),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 2),
    pad=st.integers(0, 2),
    groups=st.sampled_from([1, 2]),
    mode=st.sampled_from(["zeros", "reflect", "replicate", "circular"]),
    algorithm=st.sampled_from(ALGORITHMS),
)
def test_hypothesis_against_torch(n, size, k, stride, dilation, pad, groups, mode, algorithm):
    if dilation * (k - 1) + 1 > size + 2 * pad or (mode == "reflect" and pad >= size):
        return
    rng = np.random.default_rng(size * 31 + k)
    x = rng.standard_normal((1, 2 * groups, *(size + i for i in range(n))))
    w = rng.standard_normal((2 * groups, 2, *(k,) * n))
    ref = torch_conv(x, w, None, stride=stride, padding=pad, dilation=dilation, groups=groups,
                     mode=mode)
    for out in both_layouts(x, w, None, n, stride=stride, padding=pad, dilation=dilation,
                            groups=groups, padding_mode=mode, algorithm=algorithm):
        np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-9)
