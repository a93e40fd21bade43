"""PyTorch cross-checks for pooling, unpooling and patches (skipped without torch)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import layoutops as lo


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.fixture(scope="module")
def F(torch):
    return torch.nn.functional


def _last(a):
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def _first(a):
    return np.moveaxis(a, -1, 1)


RANK_LAYOUTS = {1: ("NCW", "NWC"), 2: ("NCHW", "NHWC"), 3: ("NCDHW", "NDHWC")}


def _configs(rank):
    sizes = {1: [(7,), (8,)], 2: [(7, 6), (5, 9)], 3: [(5, 4, 6)]}[rank]
    for in_sizes, k, s, p, d, ceil in itertools.product(
        sizes, [2, 3], [1, 2, 3], [0, 1], [1, 2], [False, True]
    ):
        if p > k // 2:  # PyTorch's own restriction on padding
            continue
        yield in_sizes, k, s, p, d, ceil


@pytest.mark.usefixtures("both_argmax_paths")
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_max_pool_values_and_indices(torch, F, rank):
    fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[rank]
    rng = np.random.default_rng(rank)
    checked = 0
    for in_sizes, k, s, p, d, ceil in _configs(rank):
        x = rng.integers(-3, 4, size=(2, 3, *in_sizes)).astype(np.float32)  # ties
        try:
            t_out, t_idx = fn(torch.from_numpy(x), k, s, p, d, ceil_mode=ceil, return_indices=True)
        except RuntimeError:
            with pytest.raises(ValueError):
                lo.max_pool(x, k, stride=s, padding=p, dilation=d, ceil_mode=ceil)
            continue
        kw = dict(stride=s, padding=p, dilation=d, ceil_mode=ceil, return_indices=True)
        out, idx = lo.max_pool(x, k, **kw)
        np.testing.assert_array_equal(out, t_out.numpy())
        np.testing.assert_array_equal(idx, t_idx.numpy())
        out, idx = lo.max_pool(_last(x), k, layout=RANK_LAYOUTS[rank][1], **kw)
        np.testing.assert_array_equal(_first(out), t_out.numpy())
        np.testing.assert_array_equal(_first(idx), t_idx.numpy())
        checked += 1
    assert checked > 20


@pytest.mark.usefixtures("both_argmax_paths")
def test_max_pool_nan_and_integers(torch, F):
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 7))
    x[0, 0, 1, 1] = x[0, 0, 2, 2] = x[1, 2, 5, 0] = np.nan
    t_out, t_idx = F.max_pool2d(torch.from_numpy(x), 3, 2, 1, return_indices=True)
    out, idx = lo.max_pool(x, 3, stride=2, padding=1, return_indices=True)
    np.testing.assert_array_equal(out, t_out.numpy())  # NaN == NaN for assert_array_equal
    np.testing.assert_array_equal(idx, t_idx.numpy())
    t_out, t_idx = F.adaptive_max_pool2d(torch.from_numpy(x), (3, 4), return_indices=True)
    out, idx = lo.adaptive_max_pool(x, (3, 4), return_indices=True)
    np.testing.assert_array_equal(out, t_out.numpy())
    np.testing.assert_array_equal(idx, t_idx.numpy())
    u8 = np.random.default_rng(1).integers(0, 3, size=(1, 2, 6, 5)).astype(np.uint8)
    t_out, t_idx = F.max_pool2d(torch.from_numpy(u8), 3, 2, 1, return_indices=True)
    out, idx = lo.max_pool(u8, 3, stride=2, padding=1, return_indices=True)
    np.testing.assert_array_equal(out, t_out.numpy())
    np.testing.assert_array_equal(idx, t_idx.numpy())


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_avg_pool(torch, F, rank):
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[rank]
    rng = np.random.default_rng(rank + 10)
    checked = 0
    for in_sizes, k, s, p, d, ceil in _configs(rank):
        if d != 1:  # PyTorch's avg pools have no dilation
            continue
        x = rng.standard_normal((2, 3, *in_sizes))
        for cip in (True, False):
            extra = {} if rank == 1 else {"divisor_override": None}
            try:
                want = fn(torch.from_numpy(x), k, s, p, ceil_mode=ceil, count_include_pad=cip,
                          **extra).numpy()
            except RuntimeError:
                continue
            kw = dict(stride=s, padding=p, ceil_mode=ceil, count_include_pad=cip)
            np.testing.assert_allclose(lo.avg_pool(x, k, **kw), want, rtol=1e-12, atol=1e-14)
            got = lo.avg_pool(_last(x), k, layout=RANK_LAYOUTS[rank][1], **kw)
            np.testing.assert_allclose(_first(got), want, rtol=1e-12, atol=1e-14)
            checked += 1
        if rank > 1:
            want = fn(torch.from_numpy(x), k, s, p, ceil_mode=ceil, divisor_override=5).numpy()
            got = lo.avg_pool(x, k, stride=s, padding=p, ceil_mode=ceil, divisor_override=5)
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    assert checked > 10


def test_lp_pool_agrees_where_the_definitions_meet(torch, F):
    """PyTorch's lp_pool is ``(sum x^p)^(1/p)`` (no absolute value) computed as an average
    times the kernel size: it equals ours for non-negative input without padding or ceil_mode.
    """
    x = np.abs(np.random.default_rng(4).standard_normal((2, 3, 9, 8)))
    for p, k, s in [(2, 3, 2), (3, 2, 2), (1, (2, 3), 1), (2.5, 3, 3)]:
        want = F.lp_pool2d(torch.from_numpy(x), p, k, s).numpy()
        np.testing.assert_allclose(lo.lp_pool(x, p, k, stride=s), want, rtol=1e-10)
        got = lo.lp_pool(_last(x), p, k, stride=s, layout="NHWC")
        np.testing.assert_allclose(_first(got), want, rtol=1e-10)
    want = F.lp_pool1d(torch.from_numpy(x[..., 0]), 3, 3, 2).numpy()
    np.testing.assert_allclose(lo.lp_pool1d(x[..., 0], 3, 3, stride=2), want, rtol=1e-10)
    # where they differ, ours is the norm of |x| (finite), PyTorch's sum of x^3 can be < 0
    neg = -x
    assert np.isfinite(lo.lp_pool(neg, 3, 2)).all()
    np.testing.assert_allclose(lo.lp_pool(neg, 3, 2), lo.lp_pool(x, 3, 2))


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_adaptive_pools(torch, F, rank):
    avg = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}[rank]
    mx = {1: F.adaptive_max_pool1d, 2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}[rank]
    shapes = {
        1: [((9,), (4,)), ((5,), (7,)), ((8,), (4,))],
        2: [((7, 9), (3, 4)), ((6, 6), (3, 2)), ((5, 4), (7, 3))],
        3: [((5, 6, 4), (2, 3, 3)), ((4, 4, 4), (2, 2, 2))],
    }[rank]
    rng = np.random.default_rng(rank)
    for in_sizes, out_sizes in shapes:
        x = rng.integers(-3, 4, size=(2, 3, *in_sizes)).astype(np.float64)
        tx = torch.from_numpy(x)
        np.testing.assert_allclose(
            lo.adaptive_avg_pool(x, out_sizes), avg(tx, out_sizes).numpy(), rtol=1e-12, atol=1e-15
        )
        t_out, t_idx = mx(tx, out_sizes, return_indices=True)
        for layout in RANK_LAYOUTS[rank]:
            xin = x if layout[1] == "C" else _last(x)
            back = (lambda a: a) if layout[1] == "C" else _first
            out, idx = lo.adaptive_max_pool(xin, out_sizes, return_indices=True, layout=layout)
            np.testing.assert_array_equal(back(out), t_out.numpy())
            np.testing.assert_array_equal(back(idx), t_idx.numpy())
            got = lo.adaptive_avg_pool(xin, out_sizes, layout=layout)
            np.testing.assert_allclose(
                back(got), avg(tx, out_sizes).numpy(), rtol=1e-12, atol=1e-15
            )


def test_global_pools(torch, F):
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 6))
    np.testing.assert_allclose(
        lo.global_avg_pool(x), F.adaptive_avg_pool2d(torch.from_numpy(x), 1).numpy()
    )
    np.testing.assert_array_equal(
        lo.global_max_pool(x), F.adaptive_max_pool2d(torch.from_numpy(x), 1).numpy()
    )


@pytest.mark.usefixtures("both_argmax_paths")
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_max_unpool(torch, F, layout):
    rng = np.random.default_rng(2)
    for in_sizes, k, s, p in [((6, 8), 2, 2, 0), ((7, 5), 3, 2, 1), ((5, 5), 2, 2, 0)]:
        x = rng.standard_normal((2, 3, *in_sizes))
        t_out, t_idx = F.max_pool2d(torch.from_numpy(x), k, s, p, return_indices=True)
        want = F.max_unpool2d(t_out, t_idx, k, s, p, output_size=in_sizes).numpy()
        tin = t_out.numpy() if layout == "NCHW" else _last(t_out.numpy())
        iin = t_idx.numpy() if layout == "NCHW" else _last(t_idx.numpy())
        got = lo.max_unpool(tin, iin, k, stride=s, padding=p, output_size=in_sizes, layout=layout)
        np.testing.assert_array_equal(got if layout == "NCHW" else _first(got), want)
        try:
            want = F.max_unpool2d(t_out, t_idx, k, s, p).numpy()
        except RuntimeError:  # an index beyond the default-size plane (odd input sizes)
            with pytest.raises(ValueError, match="`max_unpool`: `indices` must lie in"):
                lo.max_unpool(tin, iin, k, stride=s, padding=p, layout=layout)
            continue
        got = lo.max_unpool(tin, iin, k, stride=s, padding=p, layout=layout)
        np.testing.assert_array_equal(got if layout == "NCHW" else _first(got), want)
    x = rng.standard_normal((1, 2, 9))
    t_out, t_idx = F.max_pool1d(torch.from_numpy(x), 3, 2, return_indices=True)
    want = F.max_unpool1d(t_out, t_idx, 3, 2, output_size=(9,)).numpy()
    got = lo.max_unpool(t_out.numpy(), t_idx.numpy(), 3, stride=2, output_size=(9,))
    np.testing.assert_array_equal(got, want)


def test_unfold_fold(torch, F):
    rng = np.random.default_rng(5)
    for in_sizes, k, s, p, d in [
        ((6, 7), 3, 1, 1, 1),
        ((8, 5), (2, 3), (2, 1), (1, 0), (1, 2)),
        ((5, 5), 2, 3, 0, 2),
    ]:
        x = rng.standard_normal((2, 3, *in_sizes))
        want = F.unfold(torch.from_numpy(x), k, d, p, s).numpy()
        got = lo.unfold(x, k, stride=s, padding=p, dilation=d)
        np.testing.assert_array_equal(got, want)
        cols = rng.standard_normal(want.shape)
        want = F.fold(torch.from_numpy(cols), in_sizes, k, d, p, s).numpy()
        got = lo.fold(cols, in_sizes, k, stride=s, padding=p, dilation=d)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
