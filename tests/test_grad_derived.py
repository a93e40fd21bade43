"""Gradients of the global pools, max_unpool, unfold and fold (ops/grad_derived.py), against
closed forms written here with loops, adjoint identities, finite differences, and PyTorch's
autograd when it is installed. Both layouts, odd and even sizes, 1-D to 3-D."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import layoutops as lo

pytestmark = pytest.mark.usefixtures("both_small_paths")

CF = {1: "NCW", 2: "NCHW", 3: "NCDHW"}
CL = {1: "NWC", 2: "NHWC", 3: "NDHWC"}


def to_layout(a, layout):
    """(N, C, *S) -> ``layout`` (a copy)."""
    if layout.index("C") == 1:
        return a.copy()
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def from_layout(a, layout):
    if layout.index("C") == 1:
        return a
    return np.moveaxis(a, -1, 1)


SHAPES = [(2, 3, (5,)), (1, 2, (4, 6)), (2, 2, (3, 5)), (1, 2, (2, 3, 4))]


def layouts_for(spatial):
    n = len(spatial)
    return [CF[n], CL[n]]


@pytest.mark.parametrize("n,c,spatial", SHAPES)
@pytest.mark.parametrize("last", [False, True])
def test_global_avg_pool_backward_is_the_mean_spread(n, c, spatial, last):
    rng = np.random.default_rng(0)
    layout = layouts_for(spatial)[last]
    x = rng.standard_normal((n, c, *spatial))
    g = rng.standard_normal((n, c) + (1,) * len(spatial))
    got = lo.global_avg_pool_backward(to_layout(g, layout), to_layout(x, layout), layout=layout)
    want = np.empty_like(x)
    plane = int(np.prod(spatial))
    for i, j in itertools.product(range(n), range(c)):
        want[i, j] = g[i, j].item() / plane
    np.testing.assert_allclose(from_layout(got.grad_input, layout), want, rtol=1e-12)


@pytest.mark.parametrize("n,c,spatial", SHAPES)
@pytest.mark.parametrize("last", [False, True])
def test_global_max_pool_backward_goes_to_the_first_maximum(n, c, spatial, last):
    rng = np.random.default_rng(1)
    layout = layouts_for(spatial)[last]
    x = rng.integers(0, 3, size=(n, c, *spatial)).astype(np.float64)  # many ties
    g = rng.standard_normal((n, c) + (1,) * len(spatial))
    got = lo.global_max_pool_backward(to_layout(g, layout), to_layout(x, layout), layout=layout)
    want = np.zeros_like(x)
    for i, j in itertools.product(range(n), range(c)):
        plane = x[i, j]
        best = None
        for pos in itertools.product(*(range(s) for s in spatial)):  # row-major order
            if best is None or plane[pos] > plane[best]:
                best = pos
        want[(i, j, *best)] = g[i, j].item()
    np.testing.assert_array_equal(from_layout(got.grad_input, layout), want)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("last", [False, True])
def test_global_lp_pool_backward_closed_form_and_zero_planes(p, last):
    rng = np.random.default_rng(2)
    layout = ["NCHW", "NHWC"][last]
    x = rng.standard_normal((2, 3, 3, 4))
    x[1, 2] = 0.0  # a zero plane passes no gradient
    g = rng.standard_normal((2, 3, 1, 1))
    got = lo.global_lp_pool_backward(to_layout(g, layout), to_layout(x, layout), p,
                                     layout=layout)
    want = np.zeros_like(x)
    for i, j in itertools.product(range(2), range(3)):
        norm = sum(abs(v) ** p for v in x[i, j].ravel()) ** (1 / p)
        if norm == 0:
            continue
        for pos in itertools.product(range(3), range(4)):
            v = x[(i, j, *pos)]
            want[(i, j, *pos)] = g[i, j].item() * np.sign(v) * abs(v) ** (p - 1) * norm ** (1 - p)
    np.testing.assert_allclose(from_layout(got.grad_input, layout), want, rtol=1e-10,
                               atol=1e-12)


def test_global_lp_pool_backward_matches_finite_differences():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 3, 3))
    g = rng.standard_normal((1, 2, 1, 1))
    grad = lo.global_lp_pool_backward(g, x, 3.0).grad_input
    eps = 1e-6
    for pos in [(0, 0, 1, 2), (0, 1, 0, 0), (0, 1, 2, 1)]:
        up, down = x.copy(), x.copy()
        up[pos] += eps
        down[pos] -= eps
        fd = (np.sum(lo.global_lp_pool(up, 3.0) * g) - np.sum(lo.global_lp_pool(down, 3.0) * g))
        assert grad[pos] == pytest.approx(fd / (2 * eps), rel=1e-6)


@pytest.mark.parametrize("fn", ["global_avg_pool_backward", "global_max_pool_backward"])
def test_global_backward_checks_grad_out_shape(fn):
    x = np.zeros((1, 2, 3, 3))
    with pytest.raises(ValueError, match=f"`{fn}`: `grad_out` must have shape"):
        getattr(lo, fn)(np.zeros((1, 2, 3, 3)), x)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("hw", [(4, 6), (5, 7)])
def test_max_unpool_backward_gathers_at_the_indices(layout, hw):
    rng = np.random.default_rng(4)
    src = rng.standard_normal((2, 3, *hw))
    pooled, idx = lo.max_pool(src, 2, return_indices=True, ceil_mode=True)
    x, ix = to_layout(pooled, layout), to_layout(idx, layout)
    size = hw
    out = lo.max_unpool(x, ix, 2, output_size=size, layout=layout)
    g = rng.standard_normal(out.shape)
    got = from_layout(lo.max_unpool_backward(g, x, ix, 2, output_size=size,
                                             layout=layout).grad_input, layout)
    gc = from_layout(g, layout)
    want = np.empty_like(pooled)
    for i, j in itertools.product(range(2), range(3)):
        flat = gc[i, j].ravel()
        for pos in itertools.product(*(range(s) for s in pooled.shape[2:])):
            want[(i, j, *pos)] = flat[idx[(i, j, *pos)]]
    np.testing.assert_array_equal(got, want)
    # adjoint: <unpool(x), g> == <x, unpool_backward(g)>
    assert np.sum(out * g) == pytest.approx(np.sum(x * to_layout(got, layout)), rel=1e-12)


def test_max_unpool_backward_shared_index_goes_to_the_kept_value():
    x = np.array([[[5.0, 6.0]]])
    idx = np.array([[[1, 1]]])  # both values to cell 1: the later one is kept
    g = np.array([[[10.0, 20.0, 30.0, 40.0]]])
    got = lo.max_unpool_backward(g, x, idx, 2).grad_input
    assert got.tolist() == [[[0.0, 20.0]]]
    assert lo.max_unpool(x, idx, 2).tolist() == [[[0.0, 6.0, 0.0, 0.0]]]


PATCH_CASES = [
    dict(spatial=(5,), kernel=3, stride=2, padding=1, dilation=1),
    dict(spatial=(6, 5), kernel=(2, 3), stride=1, padding=(1, 0), dilation=1),
    dict(spatial=(7, 6), kernel=3, stride=2, padding=2, dilation=2),
    dict(spatial=(3, 4, 5), kernel=2, stride=(1, 2, 1), padding=0, dilation=1),
]


@pytest.mark.parametrize("case", PATCH_CASES)
@pytest.mark.parametrize("last", [False, True])
def test_unfold_and_fold_backward_are_adjoints(case, last):
    rng = np.random.default_rng(5)
    spatial = case["spatial"]
    layout = layouts_for(spatial)[last]
    kw = {k: case[k] for k in ("stride", "padding", "dilation")}
    x = to_layout(rng.standard_normal((2, 3, *spatial)), layout)
    cols = lo.unfold(x, case["kernel"], layout=layout, **kw)
    g_cols = rng.standard_normal(cols.shape)
    gx = lo.unfold_backward(g_cols, x, case["kernel"], layout=layout, **kw).grad_input
    assert gx.shape == x.shape
    assert np.sum(cols * g_cols) == pytest.approx(np.sum(x * gx), rel=1e-12)
    image = lo.fold(g_cols, spatial, case["kernel"], layout=layout, **kw)
    g_img = rng.standard_normal(image.shape)
    gc = lo.fold_backward(g_img, g_cols, spatial, case["kernel"], layout=layout,
                          **kw).grad_input
    assert gc.shape == g_cols.shape
    assert np.sum(image * g_img) == pytest.approx(np.sum(g_cols * gc), rel=1e-12)


def test_patch_backward_checks_grad_out_shape():
    x = np.zeros((1, 2, 4, 4))
    with pytest.raises(ValueError, match="`unfold_backward`: `grad_out` must have shape"):
        lo.unfold_backward(np.zeros((1, 8, 4)), x, 2)  # 9 positions, not 4
    cols = np.zeros((1, 8, 6))
    with pytest.raises(ValueError, match="`fold_backward`: `grad_out` must have shape"):
        lo.fold_backward(np.zeros((1, 2, 4, 3)), cols, (3, 4), 2)  # transposed image


def test_against_torch_autograd():
    torch = pytest.importorskip("torch")
    f = torch.nn.functional
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 5, 4))
    g = rng.standard_normal((2, 3, 1, 1))
    for ours, theirs in [
        (lo.global_avg_pool_backward, lambda t: f.adaptive_avg_pool2d(t, 1)),
        (lo.global_max_pool_backward, lambda t: f.adaptive_max_pool2d(t, 1)),
    ]:
        t = torch.tensor(x, requires_grad=True)
        theirs(t).backward(torch.tensor(g))
        np.testing.assert_allclose(ours(g, x).grad_input, t.grad.numpy(), rtol=1e-12)
    pooled, idx = lo.max_pool(x, 2, return_indices=True)
    t = torch.tensor(pooled, requires_grad=True)
    out = f.max_unpool2d(t, torch.tensor(idx), 2, output_size=(5, 4))
    gu = rng.standard_normal(out.shape)
    out.backward(torch.tensor(gu))
    got = lo.max_unpool_backward(gu, pooled, idx, 2, output_size=(5, 4)).grad_input
    np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-12)
    t = torch.tensor(x, requires_grad=True)
    cols = f.unfold(t, 2, padding=1, stride=2)
    gc = rng.standard_normal(cols.shape)
    cols.backward(torch.tensor(gc))
    got = lo.unfold_backward(gc, x, 2, padding=1, stride=2).grad_input
    np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-12)
