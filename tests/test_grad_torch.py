"""PyTorch autograd cross-checks of the gradients (skipped when torch is not installed)."""

from __future__ import annotations

import numpy as np
import pytest

import layoutops as lo

pytestmark = pytest.mark.usefixtures("both_small_paths")


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _cl(a):
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def _kernel_cl(w):
    return np.ascontiguousarray(np.moveaxis(w, (0, 1), (-1, -2)))


def _autograd(torch, fn, *arrays, seed=0):
    """Run ``fn`` on leaf tensors, backprop a random cotangent, return it and the grads."""
    leaves = [torch.tensor(a, requires_grad=True) for a in arrays]
    y = fn(*leaves)
    g = np.random.default_rng(seed).standard_normal(tuple(y.shape))
    y.backward(torch.from_numpy(g))
    return g, [leaf.grad.numpy() for leaf in leaves]


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)


# (x shape, C_out, kernel, stride, padding (symmetric), dilation, groups, padding_mode)
CONV_CASES = [
    ((2, 4, 7, 6), 6, (3, 3), (1, 1), (1, 1), (1, 1), 1, "zeros"),
    ((2, 4, 7, 6), 4, (3, 2), (2, 3), (1, 2), (1, 2), 2, "reflect"),
    ((1, 6, 6, 5), 6, (2, 3), (2, 2), (1, 1), (2, 1), 3, "replicate"),
    ((1, 4, 5, 8), 8, (3, 3), (3, 2), (2, 1), (1, 1), 4, "circular"),
    ((2, 3, 9), 4, (4,), (2,), (3,), (2,), 1, "reflect"),
    ((1, 2, 4, 5, 4), 4, (2, 3, 2), (1, 2, 2), (1, 1, 0), (1, 1, 2), 2, "zeros"),
]


@pytest.mark.parametrize("channels_last", [False, True], ids=["cf", "cl"])
@pytest.mark.parametrize("case", CONV_CASES, ids=[str(i) for i in range(len(CONV_CASES))])
def test_conv_backward_matches_torch(torch, case, channels_last):
    shape, c_out, k, stride, pad, dil, groups, mode = case
    rng = np.random.default_rng(len(shape) * 10 + groups)
    x = rng.standard_normal(shape)
    w = rng.standard_normal((c_out, shape[1] // groups, *k))
    b = rng.standard_normal(c_out)
    n_sp = len(k)
    fn = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d,
          3: torch.nn.functional.conv3d}[n_sp]

    def forward(xt, wt, bt):
        if mode == "zeros":
            return fn(xt, wt, bt, stride, pad, dil, groups)
        pads = tuple(p for p in reversed(pad) for _ in range(2))
        return fn(torch.nn.functional.pad(xt, pads, mode=mode), wt, bt, stride, 0, dil, groups)

    g, (gx, gw, gb) = _autograd(torch, forward, x, w, b)
    kw = dict(stride=stride, padding=pad, dilation=dil, groups=groups, padding_mode=mode)
    if channels_last:
        got = lo.conv_backward(_cl(g), _cl(x), _kernel_cl(w), b, layout="channels_last", **kw)
        gx, gw = _cl(gx), _kernel_cl(gw)
    else:
        got = lo.conv_backward(g, x, w, b, **kw)
    _close(got.grad_input, gx)
    _close(got.grad_weight, gw)
    _close(got.grad_bias, gb)


# (x shape, C_out, kernel, stride, padding, output_padding, dilation, groups)
CT_CASES = [
    ((2, 4, 5, 6), 6, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), 1),
    ((2, 4, 5, 6), 6, (3, 2), (2, 3), (1, 0), (0, 2), (1, 1), 2),
    ((1, 6, 4, 7), 3, (2, 3), (3, 1), (0, 2), (2, 0), (2, 3), 3),
    ((3, 2, 7), 5, (4,), (3,), (2,), (2,), (2,), 1),
]


@pytest.mark.parametrize("channels_last", [False, True], ids=["cf", "cl"])
@pytest.mark.parametrize("case", CT_CASES, ids=[str(i) for i in range(len(CT_CASES))])
def test_conv_transpose_backward_matches_torch(torch, case, channels_last):
    shape, c_out, k, stride, pad, out_pad, dil, groups = case
    rng = np.random.default_rng(len(shape) * 10 + groups + 1)
    x = rng.standard_normal(shape)
    w = rng.standard_normal((shape[1], c_out // groups, *k))  # IOHW
    b = rng.standard_normal(c_out)
    fn = {1: torch.nn.functional.conv_transpose1d,
          2: torch.nn.functional.conv_transpose2d}[len(k)]
    g, (gx, gw, gb) = _autograd(
        torch, lambda xt, wt, bt: fn(xt, wt, bt, stride, pad, out_pad, groups, dil), x, w, b
    )
    kw = dict(stride=stride, padding=pad, output_padding=out_pad, dilation=dil, groups=groups)
    if channels_last:
        got = lo.conv_transpose_backward(_cl(g), _cl(x), _kernel_cl(w), b,
                                         layout="channels_last", **kw)
        gx, gw = _cl(gx), _kernel_cl(gw)
    else:
        got = lo.conv_transpose_backward(g, x, w, b, **kw)
    _close(got.grad_input, gx)
    _close(got.grad_weight, gw)
    _close(got.grad_bias, gb)


# (kernel, stride, padding, dilation, ceil_mode)
POOL_CASES = [
    ((2, 2), (2, 2), (0, 0), (1, 1), False),
    ((3, 3), (2, 2), (1, 1), (1, 1), True),
    ((3, 2), (2, 1), (1, 0), (1, 1), True),
    ((2, 3), (1, 2), (1, 1), (2, 1), False),
    ((3, 3), (3, 3), (1, 1), (1, 1), True),
]


@pytest.mark.parametrize("channels_last", [False, True], ids=["cf", "cl"])
@pytest.mark.parametrize("case", POOL_CASES, ids=[str(i) for i in range(len(POOL_CASES))])
def test_max_pool_backward_matches_torch(torch, case, channels_last):
    k, s, p, d, ceil = case
    x = np.random.default_rng(3).standard_normal((2, 3, 7, 8))
    g, (gx,) = _autograd(
        torch, lambda xt: torch.nn.functional.max_pool2d(xt, k, s, p, d, ceil_mode=ceil), x
    )
    kw = dict(stride=s, padding=p, dilation=d, ceil_mode=ceil)
    if channels_last:
        got = lo.max_pool_backward(_cl(g), _cl(x), k, layout="NHWC", **kw).grad_input
        gx = _cl(gx)
    else:
        got = lo.max_pool_backward(g, x, k, **kw).grad_input
    _close(got, gx)


@pytest.mark.parametrize("channels_last", [False, True], ids=["cf", "cl"])
@pytest.mark.parametrize("count_include_pad, divisor_override",
                         [(True, None), (False, None), (True, 4)])
@pytest.mark.parametrize("case", [c for c in POOL_CASES if c[3] == (1, 1)],
                         ids=lambda c: str(c))
def test_avg_pool_backward_matches_torch(torch, case, count_include_pad, divisor_override,
                                         channels_last):
    k, s, p, _, ceil = case
    x = np.random.default_rng(4).standard_normal((2, 3, 7, 8))
    g, (gx,) = _autograd(
        torch,
        lambda xt: torch.nn.functional.avg_pool2d(
            xt, k, s, p, ceil_mode=ceil, count_include_pad=count_include_pad,
            divisor_override=divisor_override),
        x,
    )
    kw = dict(stride=s, padding=p, ceil_mode=ceil, count_include_pad=count_include_pad,
              divisor_override=divisor_override)
    if channels_last:
        got = lo.avg_pool_backward(_cl(g), _cl(x), k, layout="NHWC", **kw).grad_input
        gx = _cl(gx)
    else:
        got = lo.avg_pool_backward(g, x, k, **kw).grad_input
    _close(got, gx)


@pytest.mark.parametrize("p", [2.0, 3.0, 1.5])
@pytest.mark.parametrize("channels_last", [False, True], ids=["cf", "cl"])
def test_lp_pool_backward_matches_torch(torch, p, channels_last):
    # PyTorch's lp_pool uses x^p (not |x|^p), has no padding, and rescales clipped ceil_mode
    # windows: compare on positive input, without padding or ceil_mode, where all agree
    x = np.abs(np.random.default_rng(5).standard_normal((2, 3, 7, 8))) + 0.1
    g, (gx,) = _autograd(torch, lambda xt: torch.nn.functional.lp_pool2d(xt, p, (3, 2), (2, 2)),
                         x)
    if channels_last:
        got = lo.lp_pool_backward(_cl(g), _cl(x), p, (3, 2), stride=2,
                                  layout="NHWC").grad_input
        gx = _cl(gx)
    else:
        got = lo.lp_pool_backward(g, x, p, (3, 2), stride=2).grad_input
    np.testing.assert_allclose(got, gx, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("output_size", [(3, 4), (5, 3), (7, 8), (1, 1)])
@pytest.mark.parametrize("channels_last", [False, True], ids=["cf", "cl"])
def test_adaptive_pool_backward_matches_torch(torch, output_size, channels_last):
    x = np.random.default_rng(6).standard_normal((2, 3, 7, 8))
    g_avg, (gx_avg,) = _autograd(
        torch, lambda xt: torch.nn.functional.adaptive_avg_pool2d(xt, output_size), x
    )
    g_max, (gx_max,) = _autograd(
        torch, lambda xt: torch.nn.functional.adaptive_max_pool2d(xt, output_size), x, seed=1
    )
    if channels_last:
        avg = lo.adaptive_avg_pool_backward(_cl(g_avg), _cl(x), output_size, layout="NHWC")
        mx = lo.adaptive_max_pool_backward(_cl(g_max), _cl(x), output_size, layout="NHWC")
        gx_avg, gx_max = _cl(gx_avg), _cl(gx_max)
    else:
        avg = lo.adaptive_avg_pool_backward(g_avg, x, output_size)
        mx = lo.adaptive_max_pool_backward(g_max, x, output_size)
    _close(avg.grad_input, gx_avg)
    _close(mx.grad_input, gx_max)
