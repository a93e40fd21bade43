"""Gradients: finite differences in float64 over generated grids, adjoint identities, a plain
loop reference, layout invariance, ``needs=`` skipping and argument errors."""

from __future__ import annotations

import itertools
import random
import zlib

import numpy as np
import pytest

import layoutops as lo

pytestmark = pytest.mark.usefixtures("both_small_paths")

CF = {1: "NCW", 2: "NCHW", 3: "NCDHW"}
CL = {1: "NWC", 2: "NHWC", 3: "NDHWC"}
EPS = 1e-3


def _cl(a):
    """channels-first -> channels-last (N, C, *S) -> (N, *S, C)."""
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def _cf(a):
    return np.ascontiguousarray(np.moveaxis(a, -1, 1))


def _kernel_cl(w):
    """(O, I, *K) -> (*K, I, O): OIHW -> HWIO (and IOHW -> HWOI)."""
    return np.ascontiguousarray(np.moveaxis(w, (0, 1), (-1, -2)))


def _kernel_cf(w):
    return np.ascontiguousarray(np.moveaxis(w, (-1, -2), (0, 1)))


def _fd(f, args, index, v):
    """Central difference of the scalar f along ``v`` in argument ``index``."""
    plus = list(args)
    minus = list(args)
    plus[index] = args[index] + EPS * v
    minus[index] = args[index] - EPS * v
    return (f(*plus) - f(*minus)) / (2 * EPS)


def _check_fd(f, args, grads, rng, rtol=1e-6, atol=1e-8):
    for i, (a, gr) in enumerate(zip(args, grads, strict=True)):
        if gr is None:
            continue
        assert gr.shape == a.shape and gr.dtype == np.float64
        v = rng.standard_normal(a.shape)
        np.testing.assert_allclose(np.vdot(gr, v), _fd(f, args, i, v), rtol=rtol, atol=atol)


# -- conv -------------------------------------------------------------------------------------


def _conv_cases():
    rng = random.Random(6)
    strides = [1, 2, (2, 1), 3]
    dilations = [1, 2, (1, 2)]
    groups = [1, 2]
    paddings = [0, 1, (1, 2, 0, 1), "same", "same_lower", "valid"]
    modes = ["zeros", "reflect", "replicate", "circular"]
    grid = list(itertools.product(strides, dilations, groups, paddings, modes))
    cases = rng.sample(grid, 24)
    # a few fixed edge cases: stride > kernel, even/odd sizes, 1-D and 3-D
    return [
        dict(shape=(2, 4, 7, 6), k=(3, 2), stride=s, dilation=d, groups=g, padding=p,
             padding_mode=m)
        for s, d, g, p, m in cases
    ] + [
        dict(shape=(1, 2, 8, 5), k=(2, 2), stride=3, dilation=1, groups=1, padding=(0, 1),
             padding_mode="zeros"),
        dict(shape=(2, 2, 9), k=(3,), stride=2, dilation=2, groups=2, padding=(2, 1),
             padding_mode="reflect"),
        dict(shape=(1, 2, 4, 5, 4), k=(2, 3, 2), stride=(1, 2, 2), dilation=1, groups=1,
             padding="same", padding_mode="circular"),
    ]


@pytest.mark.parametrize("case", _conv_cases(), ids=lambda c: str(tuple(c.values())[1:]))
@pytest.mark.parametrize("channels_last", [False, True], ids=["cf", "cl"])
def test_conv_backward_finite_differences(case, channels_last):
    case = dict(case)
    rng = np.random.default_rng(zlib.crc32(str(case).encode()))
    shape, k = case.pop("shape"), case.pop("k")
    n_sp = len(k)
    c_in, c_out = shape[1], 2 * case["groups"]
    x = rng.standard_normal(shape)
    w = rng.standard_normal((c_out, c_in // case["groups"], *k))
    b = rng.standard_normal(c_out)
    layout = CL[n_sp] if channels_last else CF[n_sp]
    if channels_last:
        x, w = _cl(x), _kernel_cl(w)
    y = lo.conv(x, w, b, layout=layout, **case)
    g = rng.standard_normal(y.shape)

    def f(x_, w_, b_):
        return np.vdot(lo.conv(x_, w_, b_, layout=layout, **case), g)

    grads = lo.conv_backward(g, x, w, b, layout=layout, **case)
    assert isinstance(grads, lo.ConvGrads)
    _check_fd(f, (x, w, b), grads, rng)
    # the bilinear identity: <conv(x, w), g> = <x, gx> = <w, gw>
    value = np.vdot(lo.conv(x, w, layout=layout, **case), g)
    np.testing.assert_allclose(np.vdot(x, grads.grad_input), value, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.vdot(w, grads.grad_weight), value, rtol=1e-9, atol=1e-9)


def _loop_conv_vjp(g, x, w, stride, pads, dilation, groups):
    """Plain loops over output positions (NCHW / OIHW, zero padding): the VJP by the chain
    rule, sharing nothing with the library's kernels."""
    n, c_in, h, wd = x.shape
    c_out, i_per, kh, kw = w.shape
    o_per = c_out // groups
    gx, gw = np.zeros_like(x), np.zeros_like(w)
    for b_ in range(n):
        for o in range(c_out):
            grp = o // o_per
            for oy in range(g.shape[2]):
                for ox in range(g.shape[3]):
                    for i in range(i_per):
                        c = grp * i_per + i
                        for ky in range(kh):
                            for kx in range(kw):
                                iy = oy * stride[0] - pads[0][0] + ky * dilation[0]
                                ix = ox * stride[1] - pads[1][0] + kx * dilation[1]
                                if 0 <= iy < h and 0 <= ix < wd:
                                    gx[b_, c, iy, ix] += g[b_, o, oy, ox] * w[o, i, ky, kx]
                                    gw[o, i, ky, kx] += g[b_, o, oy, ox] * x[b_, c, iy, ix]
    return gx, gw, g.sum(axis=(0, 2, 3))


@pytest.mark.parametrize("h, wd", [(5, 6), (6, 5)])
def test_conv_backward_matches_loop_reference(h, wd):
    rng = np.random.default_rng(h)
    x = rng.standard_normal((2, 4, h, wd))
    w = rng.standard_normal((6, 2, 3, 2))
    kw = dict(stride=(2, 1), padding=(1, 0, 2, 1), dilation=(1, 2), groups=2)
    y = lo.conv(x, w, **kw)
    g = rng.standard_normal(y.shape)
    expected = _loop_conv_vjp(g, x, w, (2, 1), ((1, 0), (2, 1)), (1, 2), 2)
    got = lo.conv_backward(g, x, w, np.zeros(6), **kw)
    for a, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12)
    got_cl = lo.conv_backward(_cl(g), _cl(x), _kernel_cl(w), np.zeros(6), layout="NHWC", **kw)
    np.testing.assert_allclose(_cf(got_cl.grad_input), expected[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(_kernel_cf(got_cl.grad_weight), expected[1], rtol=1e-10,
                               atol=1e-12)


def test_conv_backward_out_layout_and_grouped_kernel():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 5, 5))
    w = rng.standard_normal((2, 3, 2, 3, 3))  # GOIHW
    kw = dict(layout="NCHW", kernel_layout="GOIHW", out_layout="NHWC", groups=2, padding=1)
    y = lo.conv(x, w, **kw)
    g = rng.standard_normal(y.shape)
    grads = lo.conv_backward(g, x, w, **kw)
    assert grads.grad_bias is None
    ref = lo.conv_backward(_cf(g), x, w.reshape(6, 2, 3, 3), groups=2, padding=1)
    np.testing.assert_allclose(grads.grad_input, ref.grad_input, rtol=1e-12)
    np.testing.assert_allclose(grads.grad_weight, ref.grad_weight.reshape(w.shape), rtol=1e-12)


def test_conv_backward_depthwise_hwcm():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 6, 5, 3))  # NHWC, C=3
    w = rng.standard_normal((3, 3, 3, 2))  # HWCM
    kw = dict(layout="NHWC", kernel_layout="HWCM", groups=3, stride=2, padding="same")
    y = lo.conv(x, w, **kw)
    g = rng.standard_normal(y.shape)
    grads = lo.conv_backward(g, x, w, **kw)
    _check_fd(lambda x_, w_: np.vdot(lo.conv(x_, w_, **kw), g), (x, w), grads[:2], rng)


def test_conv_backward_needs_skips_work(monkeypatch):
    import layoutops.ops.grad as grad_mod

    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((1, 2, 5, 5)), rng.standard_normal((3, 2, 3, 3))
    g = rng.standard_normal((1, 3, 3, 3))
    full = lo.conv_backward(g, x, w, np.zeros(3))

    def boom(*args, **kwargs):
        raise AssertionError("skipped gradient was computed")

    monkeypatch.setattr(grad_mod, "conv_transpose", boom)
    only_w = lo.conv_backward(g, x, w, np.zeros(3), needs=("weight",))
    assert only_w.grad_input is None and only_w.grad_bias is None
    np.testing.assert_allclose(only_w.grad_weight, full.grad_weight)
    monkeypatch.setattr(grad_mod, "weight_grad", boom)
    only_b = lo.conv_backward(g, x, w, np.zeros(3), needs="bias")
    np.testing.assert_allclose(only_b.grad_bias, full.grad_bias)
    assert only_b.grad_weight is None
    monkeypatch.setattr(grad_mod, "conv", boom)
    ct = lo.conv_transpose_backward(rng.standard_normal((1, 2, 5, 5)), g, w, needs=("bias",))
    assert ct == (None, None, None)  # no bias: nothing asked for is computable


def test_conv_backward_dtypes_and_empty_batch():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    g = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    grads = lo.conv_backward(g, x, w, np.zeros(3, np.float32))
    assert all(a.dtype == np.float32 for a in grads)
    ref = lo.conv_backward(g.astype(np.float64), x.astype(np.float64), w.astype(np.float64))
    np.testing.assert_allclose(grads.grad_weight, ref.grad_weight, rtol=1e-4, atol=1e-4)
    half = lo.conv_backward(g.astype(np.float16), x.astype(np.float16), w.astype(np.float16))
    assert half.grad_input.dtype == np.float16
    np.testing.assert_allclose(half.grad_input, ref.grad_input, rtol=2e-2, atol=2e-2)
    empty = lo.conv_backward(np.zeros((0, 3, 3, 3)), np.zeros((0, 2, 5, 5)), w, np.zeros(3))
    assert empty.grad_input.shape == (0, 2, 5, 5)
    assert not empty.grad_weight.any() and not empty.grad_bias.any()


def test_conv_backward_errors():
    x, w = np.zeros((1, 6, 5, 5)), np.zeros((6, 2, 3, 3))
    g = np.zeros((1, 6, 3, 3))
    with pytest.raises(ValueError, match=r"`conv_backward`: `grad_out` must have .*\(1, 6, 3, 3\)"):
        lo.conv_backward(np.zeros((1, 6, 5, 5)), x, w, groups=3)
    with pytest.raises(ValueError, match=r"`conv_backward`: `groups` must divide `C_in`=6, got 4"):
        lo.conv_backward(np.zeros((1, 4, 3, 3)), x, np.zeros((4, 1, 3, 3)), groups=4)
    with pytest.raises(ValueError, match=r"`conv_backward`: `needs` names must be among"):
        lo.conv_backward(g, x, w, groups=3, needs=("inputs",))
    with pytest.raises(ValueError, match="`conv_backward`: `padding_mode`"):
        lo.conv_backward(g, x, w, groups=3, padding_mode="mirror")
    with pytest.raises(TypeError, match="`conv_backward`: `grad_out` must be a floating"):
        lo.conv_backward(g.astype(int), x, w, groups=3)
    with pytest.raises(ValueError, match="`conv_backward`: `padding` for padding_mode='reflect'"):
        lo.conv_backward(np.zeros((1, 6, 13, 13)), x, w, groups=3, padding=5,
                         padding_mode="reflect")


# -- conv_transpose ---------------------------------------------------------------------------


def _conv_transpose_cases():
    rng = random.Random(16)
    grid = list(itertools.product(
        [1, 2, (3, 2)],                       # stride
        [1, (2, 1)],                          # dilation
        [1, 2],                               # groups
        [0, (1, 0, 2, 1), "same", "same_lower"],  # padding
        [0, 1],                               # output_padding
    ))
    cases = []
    for s, d, g, p, op in rng.sample(grid, 22):
        if isinstance(p, str):
            op = 0
        s_t = (s, s) if isinstance(s, int) else s
        d_t = (d, d) if isinstance(d, int) else d
        if op and any(op >= max(a, b) for a, b in zip(s_t, d_t, strict=True)):
            op = 0
        cases.append(dict(stride=s, dilation=d, groups=g, padding=p, output_padding=op))
    cases += [
        dict(stride=2, dilation=1, groups=1, padding=0, output_shape=(10, 7)),
        dict(stride=3, dilation=1, groups=2, padding="same", output_shape=(13, 10)),
        dict(stride=(2, 3), dilation=1, groups=1, padding="same_lower", output_shape=(8, 9)),
        dict(stride=4, dilation=1, groups=1, padding="same"),  # P < 0: appended positions
    ]
    return cases


@pytest.mark.parametrize("case", _conv_transpose_cases(), ids=lambda c: str(tuple(c.values())))
@pytest.mark.parametrize("channels_last", [False, True], ids=["cf", "cl"])
def test_conv_transpose_backward_finite_differences(case, channels_last):
    rng = np.random.default_rng(zlib.crc32(str(case).encode()))
    groups = case["groups"]
    x = rng.standard_normal((2, 2 * groups, 4, 3))
    w = rng.standard_normal((2 * groups, 2, 3, 2))  # IOHW: O per group = 2
    b = rng.standard_normal(2 * groups)
    layout = "NHWC" if channels_last else "NCHW"
    if channels_last:
        x, w = _cl(x), _kernel_cl(w)
    y = lo.conv_transpose(x, w, b, layout=layout, **case)
    g = rng.standard_normal(y.shape)

    def f(x_, w_, b_):
        return np.vdot(lo.conv_transpose(x_, w_, b_, layout=layout, **case), g)

    grads = lo.conv_transpose_backward(g, x, w, b, layout=layout, **case)
    _check_fd(f, (x, w, b), grads, rng)
    value = np.vdot(lo.conv_transpose(x, w, layout=layout, **case), g)
    np.testing.assert_allclose(np.vdot(x, grads.grad_input), value, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.vdot(w, grads.grad_weight), value, rtol=1e-9, atol=1e-9)


def test_conv_transpose_backward_is_conv_adjoint():
    """conv_transpose is the adjoint of conv in x, so the input gradient of one is the other."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 3, 4, 5))
    w = rng.standard_normal((3, 2, 3, 3))  # IOHW for conv_transpose = OIHW for conv
    kw = dict(stride=2, padding=1, output_padding=1)
    y = lo.conv_transpose(x, w, **kw)
    g = rng.standard_normal(y.shape)
    grads = lo.conv_transpose_backward(g, x, w, **kw)
    np.testing.assert_allclose(grads.grad_input, lo.conv(g, w, stride=2, padding=1),
                               rtol=1e-12)


def test_conv_transpose_backward_errors():
    x, w = np.zeros((1, 2, 4, 4)), np.zeros((2, 3, 3, 3))
    with pytest.raises(ValueError, match="`conv_transpose_backward`: `output_padding`"):
        lo.conv_transpose_backward(np.zeros((1, 3, 9, 9)), x, w, stride=2, output_padding=2)
    with pytest.raises(ValueError, match=r"`grad_out` must have .*\(1, 3, 9, 9\)"):
        lo.conv_transpose_backward(np.zeros((1, 3, 8, 8)), x, w, stride=2)


# -- pooling ----------------------------------------------------------------------------------


def _pool_cases():
    """A grid of window configurations, kept where the forward accepts them."""
    rng = random.Random(26)
    grid = list(itertools.product(
        [(2, 2), (3, 2), (3, 3)],                  # kernel_size
        [None, 1, 2, (2, 1)],                      # stride
        [0, 1, (1, 0, 0, 1)],                      # padding
        [1, (2, 1)],                               # dilation
        [False, True],                             # ceil_mode
    ))
    x = np.zeros((1, 1, 7, 6))
    cases = []
    for k, s, p, d, c in rng.sample(grid, len(grid)):
        kw = dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=c)
        try:
            lo.avg_pool(x, **kw)
        except ValueError:
            continue
        cases.append(kw)
        if len(cases) == 18:
            break
    return cases


_POOL_CASES = _pool_cases()


def _pool_inputs(kw, channels_last, seed_extra=""):
    rng = np.random.default_rng(zlib.crc32((str(kw) + seed_extra).encode()))
    x = rng.standard_normal((2, 3, 7, 6))
    layout = "NHWC" if channels_last else "NCHW"
    return rng, (_cl(x) if channels_last else x), layout


@pytest.mark.parametrize("kw", _POOL_CASES, ids=lambda c: str(tuple(c.values())))
@pytest.mark.parametrize("channels_last", [False, True], ids=["cf", "cl"])
def test_max_pool_backward_finite_differences(kw, channels_last):
    rng, x, layout = _pool_inputs(kw, channels_last, "max")
    g = rng.standard_normal(lo.max_pool(x, layout=layout, **kw).shape)
    grads = lo.max_pool_backward(g, x, layout=layout, **kw)
    assert isinstance(grads, lo.PoolGrads)
    v = rng.standard_normal(x.shape)
    eps = 1e-7  # piecewise linear: exact while no window changes its winner

    def f(x_):
        return np.vdot(lo.max_pool(x_, layout=layout, **kw), g)

    fd = (f(x + eps * v) - f(x - eps * v)) / (2 * eps)
    np.testing.assert_allclose(np.vdot(grads.grad_input, v), fd, rtol=1e-6, atol=1e-6)
    # max pooling is positively homogeneous: <x, grad> = <max_pool(x), g>
    np.testing.assert_allclose(np.vdot(x, grads.grad_input), f(x), rtol=1e-10)


@pytest.mark.parametrize("kw", _POOL_CASES, ids=lambda c: str(tuple(c.values())))
@pytest.mark.parametrize("channels_last", [False, True], ids=["cf", "cl"])
@pytest.mark.parametrize("count_include_pad, divisor_override",
                         [(True, None), (False, None), (True, 5)])
def test_avg_pool_backward_finite_differences(kw, channels_last, count_include_pad,
                                              divisor_override):
    kw = dict(kw, count_include_pad=count_include_pad, divisor_override=divisor_override)
    rng, x, layout = _pool_inputs(kw, channels_last, "avg")
    g = rng.standard_normal(lo.avg_pool(x, layout=layout, **kw).shape)
    grads = lo.avg_pool_backward(g, x, layout=layout, **kw)

    def f(x_):
        return np.vdot(lo.avg_pool(x_, layout=layout, **kw), g)

    _check_fd(f, (x,), grads, rng)
    np.testing.assert_allclose(np.vdot(x, grads.grad_input), f(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kw", _POOL_CASES[::2], ids=lambda c: str(tuple(c.values())))
@pytest.mark.parametrize("channels_last", [False, True], ids=["cf", "cl"])
@pytest.mark.parametrize("p", [1.0, 2, 3.5])
def test_lp_pool_backward_finite_differences(kw, channels_last, p):
    rng, x, layout = _pool_inputs(kw, channels_last, f"lp{p}")
    g = rng.standard_normal(lo.lp_pool(x, p, layout=layout, **kw).shape)
    grads = lo.lp_pool_backward(g, x, p, layout=layout, **kw)

    def f(x_):
        return np.vdot(lo.lp_pool(x_, p, layout=layout, **kw), g)

    v = rng.standard_normal(x.shape)
    eps = 1e-6
    fd = (f(x + eps * v) - f(x - eps * v)) / (2 * eps)
    np.testing.assert_allclose(np.vdot(grads.grad_input, v), fd, rtol=1e-6, atol=1e-7)
    # a p-norm is positively homogeneous of degree 1: <x, grad> = <lp_pool(x), g>
    np.testing.assert_allclose(np.vdot(x, grads.grad_input), f(x), rtol=1e-10)


@pytest.mark.parametrize("output_size", [(3, 4), (2, 2), (7, 6), (5, 4), (1, 1)])
@pytest.mark.parametrize("channels_last", [False, True], ids=["cf", "cl"])
def test_adaptive_pool_backward_finite_differences(output_size, channels_last):
    rng, x, layout = _pool_inputs({"o": output_size}, channels_last, "adaptive")
    g = rng.standard_normal(lo.adaptive_avg_pool(x, output_size, layout=layout).shape)

    def f_avg(x_):
        return np.vdot(lo.adaptive_avg_pool(x_, output_size, layout=layout), g)

    def f_max(x_):
        return np.vdot(lo.adaptive_max_pool(x_, output_size, layout=layout), g)

    avg = lo.adaptive_avg_pool_backward(g, x, output_size, layout=layout)
    _check_fd(f_avg, (x,), avg, rng)
    mx = lo.adaptive_max_pool_backward(g, x, output_size, layout=layout)
    v = rng.standard_normal(x.shape)
    fd = (f_max(x + 1e-7 * v) - f_max(x - 1e-7 * v)) / 2e-7
    np.testing.assert_allclose(np.vdot(mx.grad_input, v), fd, rtol=1e-6, atol=1e-6)


def test_max_pool_backward_ties_follow_the_forward():
    # every window is a tie: the first in-bounds cell of each window wins
    x = np.ones((1, 1, 4))
    grad = lo.max_pool_backward(np.array([[[1.0, 10.0, 100.0]]]), x, 2, stride=1).grad_input
    assert grad.tolist() == [[[1.0, 10.0, 100.0, 0.0]]]
    # a padded cell never wins, even over very negative values (windows [-1, 0] and [1, 2],
    # the second a tie); uint8 input is accepted
    x = np.full((1, 1, 3), -1e30)
    grad = lo.max_pool_backward(np.array([[[1.0, 2.0]]]), x, 2, padding=1).grad_input
    assert grad.tolist() == [[[1.0, 2.0, 0.0]]]
    x8 = np.array([[[0, 0, 7, 0]]], dtype=np.uint8)
    grad = lo.max_pool_backward(np.ones((1, 1, 3), np.float32), x8, 2, stride=1).grad_input
    assert grad.dtype == np.float32 and grad.tolist() == [[[1.0, 0.0, 2.0, 0.0]]]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "NHCW", "HWNC"])
@pytest.mark.parametrize("k, s, p", [(3, 2, 1), (2, 2, 0), (2, 3, 1)],
                         ids=["overlapping", "disjoint", "disjoint-gaps"])
@pytest.mark.parametrize("add_at", [True, False], ids=["add.at", "bincount"])
def test_max_pool_backward_scatters_in_any_layout(layout, k, s, p, add_at, monkeypatch):
    """Plain loops over the windows (first maximum wins) against every layout: the spatial
    axes adjacent (the flat index times the plane's stride) or not (decoded per axis);
    windows that overlap (winners summed by `np.add.at`, or `np.bincount` on NumPy < 1.25)
    or never do (winners assigned)."""
    import layoutops.kernels.grad as kgrad

    monkeypatch.setattr(kgrad, "_ADD_AT", add_at)
    rng = np.random.default_rng(11)
    x = rng.integers(0, 3, size=(2, 3, 5, 6)).astype(np.float64)  # ties everywhere
    oh, ow = (5 + 2 * p - k) // s + 1, (6 + 2 * p - k) // s + 1
    g = rng.standard_normal((2, 3, oh, ow))
    want = np.zeros_like(x)
    for n, c, oy, ox in np.ndindex(g.shape):
        cells = [(y, w) for y in range(s * oy - p, s * oy - p + k)
                 for w in range(s * ox - p, s * ox - p + k) if 0 <= y < 5 and 0 <= w < 6]
        best = max(cells, key=lambda q: (x[n, c, q[0], q[1]], -cells.index(q)))
        want[(n, c, *best)] += g[n, c, oy, ox]
    perm = ["NCHW".index(a) for a in layout]
    got = lo.max_pool_backward(np.ascontiguousarray(g.transpose(perm)),
                               np.ascontiguousarray(x.transpose(perm)), k, stride=s,
                               padding=p, layout=layout).grad_input
    np.testing.assert_allclose(got.transpose(np.argsort(perm)), want, rtol=1e-13, atol=1e-13)


@pytest.mark.usefixtures("both_argmax_paths")
def test_max_pool_backward_nan_routes_to_the_last_nan():
    x = np.array([[[np.nan, 1.0, np.nan, 0.5]]])
    _, idx = lo.max_pool(x, 4, return_indices=True)
    grad = lo.max_pool_backward(np.ones((1, 1, 1)), x, 4).grad_input
    assert idx.item() == 2 and grad.tolist() == [[[0.0, 0.0, 1.0, 0.0]]]


def _loop_avg_pool_vjp(g, x_shape, k, s, pads, ceil_mode, count_include_pad):
    """Plain loops (NCHW, dilation 1): each output spreads g / divisor over its in-bounds
    taps; the divisor counts taps inside input + padding (never past the end padding) or
    inside the input."""
    gx = np.zeros(x_shape)
    h, w = x_shape[2:]
    for oy in range(g.shape[2]):
        for ox in range(g.shape[3]):
            y0, x0 = oy * s[0] - pads[0][0], ox * s[1] - pads[1][0]
            ys = range(y0, y0 + k[0])
            xs = range(x0, x0 + k[1])
            if count_include_pad:
                div = sum(1 for y in ys if y < h + pads[0][1]) * sum(
                    1 for x_ in xs if x_ < w + pads[1][1])
            else:
                div = sum(1 for y in ys if 0 <= y < h) * sum(1 for x_ in xs if 0 <= x_ < w)
            for y in ys:
                for x_ in xs:
                    if 0 <= y < h and 0 <= x_ < w:
                        gx[:, :, y, x_] += g[:, :, oy, ox] / div
    return gx


@pytest.mark.parametrize("h, w", [(5, 6), (6, 7)])
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool_backward_ceil_mode_matches_loop_reference(h, w, count_include_pad):
    rng = np.random.default_rng(h * w)
    x = rng.standard_normal((2, 2, h, w))
    kw = dict(kernel_size=(3, 2), stride=(2, 2), padding=(1, 0, 1, 1), ceil_mode=True,
              count_include_pad=count_include_pad)
    g = rng.standard_normal(lo.avg_pool(x, **kw).shape)
    expected = _loop_avg_pool_vjp(g, x.shape, (3, 2), (2, 2), ((1, 0), (1, 1)), True,
                                  count_include_pad)
    np.testing.assert_allclose(lo.avg_pool_backward(g, x, **kw).grad_input, expected,
                               rtol=1e-12)
    got_cl = lo.avg_pool_backward(_cl(g), _cl(x), layout="NHWC", **kw).grad_input
    np.testing.assert_allclose(_cf(got_cl), expected, rtol=1e-12)


@pytest.mark.parametrize(
    "h, w, k, s, pads",
    [
        (6, 8, (2, 2), (2, 2), ((0, 0), (0, 0))),  # taps cover every cell once: copied
        (7, 9, (2, 2), (2, 3), ((0, 0), (0, 0))),  # disjoint, some cells never read: zeros
        (7, 6, (3, 3), (1, 1), ((1, 1), (1, 1))),  # overlapping, padded: added
        (6, 7, (2, 3), (2, 2), ((1, 0), (0, 1))),  # overlapping along one axis
    ],
)
@pytest.mark.parametrize("channels_last", [False, True], ids=["cf", "cl"])
def test_avg_pool_backward_scatter_over_threads_matches_loops(h, w, k, s, pads,
                                                              channels_last, monkeypatch):
    """`window_scatter`'s tiles on one thread and split over two (tiny tiles, no size
    bound): the plain-loop gradient, and the same bits either way."""
    import layoutops.kernels.grad as kgrad
    from layoutops.kernels.threads import set_num_threads

    monkeypatch.setattr(kgrad, "SCATTER_PARALLEL_BYTES", 0)
    monkeypatch.setattr(kgrad, "SCATTER_TILE_BYTES", 64)
    rng = np.random.default_rng(h * w + k[1])
    x = rng.standard_normal((3, 4, h, w))
    kw = dict(kernel_size=k, stride=s, padding=(pads[0][0], pads[0][1], pads[1][0],
                                                 pads[1][1]))
    g = rng.standard_normal(lo.avg_pool(x, **kw).shape)
    expected = _loop_avg_pool_vjp(g, x.shape, k, s, pads, False, True)
    got = []
    for n in (1, 2):
        previous = set_num_threads(n)
        try:
            if channels_last:
                r = _cf(lo.avg_pool_backward(_cl(g), _cl(x), layout="NHWC", **kw).grad_input)
            else:
                r = lo.avg_pool_backward(g, x, **kw).grad_input
        finally:
            set_num_threads(previous)
        np.testing.assert_allclose(r, expected, rtol=1e-12, atol=1e-15)
        got.append(r)
    np.testing.assert_array_equal(got[0], got[1])


def test_lp_pool_backward_zero_norm_window_passes_no_gradient():
    x = np.array([[[0.0, 0.0, 3.0, 4.0]]])
    for p in (1.0, 2.0, 0.5):  # no RuntimeWarning either (pytest turns them into errors)
        grad = lo.lp_pool_backward(np.ones((1, 1, 2)), x, p, 2).grad_input
        assert grad[0, 0, :2].tolist() == [0.0, 0.0] and np.isfinite(grad).all()
    np.testing.assert_allclose(
        lo.lp_pool_backward(np.ones((1, 1, 2)), x, 2, 2).grad_input[0, 0, 2:], [0.6, 0.8]
    )


def test_pool_backward_dtypes():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    g = rng.standard_normal((1, 2, 3, 3)).astype(np.float32)
    for fn, args in [(lo.max_pool_backward, (2,)), (lo.avg_pool_backward, (2,)),
                     (lo.adaptive_avg_pool_backward, (3,)),
                     (lo.adaptive_max_pool_backward, (3,))]:
        assert fn(g, x, *args).grad_input.dtype == np.float32
    assert lo.lp_pool_backward(g, x, 2, 2).grad_input.dtype == np.float32
    half = lo.avg_pool_backward(g.astype(np.float16), x.astype(np.float16), 2).grad_input
    assert half.dtype == np.float16
    empty = lo.avg_pool_backward(np.zeros((0, 2, 3, 3)), np.zeros((0, 2, 6, 6)), 2)
    assert empty.grad_input.shape == (0, 2, 6, 6)


def test_pool_backward_errors():
    x = np.zeros((1, 1, 6, 6))
    with pytest.raises(ValueError, match=r"`max_pool_backward`: `grad_out` must have .*"
                                         r"\(1, 1, 3, 3\)"):
        lo.max_pool_backward(np.zeros((1, 1, 2, 2)), x, 2)
    with pytest.raises(ValueError, match=r"`avg_pool_backward`: `grad_out` must have"):
        lo.avg_pool_backward(np.zeros((1, 1, 2, 2)), x, 2)
    with pytest.raises(ValueError, match=r"`avg_pool_backward`: padding along 'H' must be "
                                         r"smaller"):
        lo.avg_pool_backward(np.zeros((1, 1, 4, 4)), x, 2, padding=2)
    with pytest.raises(ValueError, match=r"`lp_pool_backward`: `p` must be"):
        lo.lp_pool_backward(np.zeros((1, 1, 3, 3)), x, -1, 2)
    with pytest.raises(ValueError, match=r"`adaptive_avg_pool_backward`: `grad_out` must have"):
        lo.adaptive_avg_pool_backward(np.zeros((1, 1, 2, 2)), x, 3)
    with pytest.raises(TypeError, match=r"`avg_pool_backward`: `divisor_override`"):
        lo.avg_pool_backward(np.zeros((1, 1, 3, 3)), x, 2, divisor_override=1.5)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_conv_jvp_finite_differences_and_duality_with_vjp(layout):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 4, 6, 5))
    w = rng.standard_normal((4, 2, 3, 3))
    if layout == "NHWC":
        x, w = _cl(x), _kernel_cl(w)
    b = rng.standard_normal(4)
    dx, dw, db = (rng.standard_normal(a.shape) for a in (x, w, b))
    kw = dict(layout=layout, groups=2, stride=(2, 1), padding=1, padding_mode="reflect")
    y, dy = lo.conv_jvp(x, w, b, tangent_x=dx, tangent_weight=dw, tangent_bias=db, **kw)
    np.testing.assert_allclose(y, lo.conv(x, w, b, **kw))
    fd = (lo.conv(x + EPS * dx, w + EPS * dw, b + EPS * db, **kw)
          - lo.conv(x - EPS * dx, w - EPS * dw, b - EPS * db, **kw)) / (2 * EPS)
    np.testing.assert_allclose(dy, fd, rtol=1e-7, atol=1e-9)
    # <J t, g> = <t, J^T g>
    g = rng.standard_normal(y.shape)
    grads = lo.conv_backward(g, x, w, b, **kw)
    dual = np.vdot(grads.grad_input, dx) + np.vdot(grads.grad_weight, dw) + np.vdot(
        grads.grad_bias, db)
    np.testing.assert_allclose(np.vdot(dy, g), dual, rtol=1e-10)


def test_gradients_are_tiled_under_the_workspace_limit():
    """A small workspace limit splits the work into many tiles; the result is the same."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 26, 24, 4))   # NHWC
    w = rng.standard_normal((3, 3, 2, 6))     # HWIO, groups=2
    kw = dict(layout="NHWC", groups=2, stride=(2, 1), padding=(1, 2, 0, 1),
              padding_mode="replicate")
    g = rng.standard_normal(lo.conv(x, w, **kw).shape)
    full = lo.conv_backward(g, x, w, **kw)
    xp = rng.standard_normal((2, 8, 41, 40))
    pool_kw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    gp = rng.standard_normal(lo.avg_pool(xp, **pool_kw).shape)
    pool_full = lo.avg_pool_backward(gp, xp, **pool_kw).grad_input
    with lo.workspace_limit(2**16):
        tiled = lo.conv_backward(g, x, w, **kw)
        pool_tiled = lo.avg_pool_backward(gp, xp, **pool_kw).grad_input
    np.testing.assert_allclose(tiled.grad_weight, full.grad_weight, rtol=1e-12)
    np.testing.assert_allclose(tiled.grad_input, full.grad_input, rtol=1e-12)
    np.testing.assert_allclose(pool_tiled, pool_full, rtol=1e-12)


@pytest.mark.parametrize("layout, shape", [("NWC", (2, 9, 3)), ("NCW", (2, 3, 8)),
                                           ("NCDHW", (1, 2, 5, 4, 5)),
                                           ("NDHWC", (1, 4, 5, 5, 2))])
def test_pool_backward_1d_3d_finite_differences(layout, shape):
    rng = np.random.default_rng(len(shape) + shape[-1])
    x = rng.standard_normal(shape)
    kw = dict(kernel_size=2 if len(shape) == 5 else 3, stride=2, padding=1, ceil_mode=True,
              layout=layout)
    for fwd, bwd, extra in [(lo.avg_pool, lo.avg_pool_backward, {}),
                            (lo.avg_pool, lo.avg_pool_backward, {"count_include_pad": False}),
                            (lo.max_pool, lo.max_pool_backward, {})]:
        g = rng.standard_normal(fwd(x, **kw, **extra).shape)
        grad = bwd(g, x, **kw, **extra).grad_input
        v = rng.standard_normal(x.shape)
        fd = (np.vdot(fwd(x + 1e-7 * v, **kw, **extra), g)
              - np.vdot(fwd(x - 1e-7 * v, **kw, **extra), g)) / 2e-7
        np.testing.assert_allclose(np.vdot(grad, v), fd, rtol=1e-6, atol=1e-7)
    g = rng.standard_normal(lo.lp_pool(x, 3, **kw).shape)
    grad = lo.lp_pool_backward(g, x, 3, **kw).grad_input
    v = rng.standard_normal(x.shape)
    fd = (np.vdot(lo.lp_pool(x + 1e-6 * v, 3, **kw), g)
          - np.vdot(lo.lp_pool(x - 1e-6 * v, 3, **kw), g)) / 2e-6
    np.testing.assert_allclose(np.vdot(grad, v), fd, rtol=1e-6, atol=1e-7)


def test_conv_transpose_backward_out_layout_and_grouped_kernel():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 4, 3, 4))              # NCHW, C_in = 4
    w = rng.standard_normal((2, 2, 3, 2, 2))           # GIOHW: I = 2, O = 3 per group
    kw = dict(stride=2, padding=(1, 0, 0, 1), groups=2, kernel_layout="GIOHW",
              out_layout="NHWC")
    y = lo.conv_transpose(x, w, np.zeros(6), **kw)
    g = rng.standard_normal(y.shape)
    grads = lo.conv_transpose_backward(g, x, w, np.zeros(6), **kw)
    assert grads.grad_input.shape == x.shape and grads.grad_weight.shape == w.shape
    value = np.vdot(lo.conv_transpose(x, w, **kw), g)
    np.testing.assert_allclose(np.vdot(grads.grad_input, x), value, rtol=1e-10)
    np.testing.assert_allclose(np.vdot(grads.grad_weight, w), value, rtol=1e-10)
    np.testing.assert_allclose(grads.grad_bias, _cf(g).sum(axis=(0, 2, 3)), rtol=1e-12)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_weight_gradient_same_on_one_and_two_threads(layout):
    """The weight gradient's tiles run as pipelines on the threads, their sums added in tile
    order: the result does not depend on the thread count (several tiles here)."""
    from layoutops.kernels import grad as kgrad
    from layoutops.kernels.threads import set_num_threads

    rng = np.random.default_rng(21)
    x = rng.standard_normal((4, 8, 20, 18)).astype(np.float32)
    w = rng.standard_normal((6, 8, 3, 3)).astype(np.float32)
    g = rng.standard_normal((4, 6, 20, 18)).astype(np.float32)
    if layout == "NHWC":
        x, g = x.transpose(0, 2, 3, 1), g.transpose(0, 2, 3, 1)
    previous = set_num_threads(None)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(kgrad, "TILE_BYTES", 1 << 14)  # tiles of a few positions
            runs = []
            for n in (1, 2):
                set_num_threads(n)
                runs.append(lo.conv_backward(g, x, w, padding=1, layout=layout,
                                             kernel_layout="OIHW",
                                             needs=("weight",)).grad_weight)
    finally:
        set_num_threads(previous)
    np.testing.assert_array_equal(runs[0], runs[1])
