"""`max_pool_backward` / `adaptive_max_pool_backward` given the forward's ``indices``: only
the scatter runs. Against the plain-loop references (the windows' first maxima, scattered
and summed by loops), in channels-first, channels-last and a layout whose spatial axes are
not adjacent, on one thread and two; indices that are not the windows' maxima are summed
where they fall; bad indices raise."""

import numpy as np
import pytest
from conv_reference import act_from, act_to
from pool_reference import adaptive_pool as ref_adaptive_pool
from pool_reference import max_pool as ref_max_pool
from pool_reference import scatter_add
from recording import spy_parallel

import layoutops as lo
from layoutops.kernels import pool as kpool

LAYOUTS = {1: ["NCW", "NWC"], 2: ["NCHW", "NHWC", "NHCW"], 3: ["NCDHW", "NDHWC"]}
SHAPES = {1: (2, 3, 9), 2: (2, 3, 7, 6), 3: (1, 2, 5, 4, 6)}


@pytest.mark.usefixtures("both_argmax_paths")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k, s, p", [(3, 2, 1), (2, 2, 0), (3, 1, 1)],
                         ids=["overlapping", "disjoint", "stride-1"])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_given_indices_match_the_loops(n, k, s, p, dtype):
    rng = np.random.default_rng(30 + n)
    x = rng.integers(0, 4, size=SHAPES[n]).astype(np.float64)  # ties everywhere
    ks, ss, ds, pads = (k,) * n, (s,) * n, (1,) * n, ((p, p),) * n
    _, ref_idx = ref_max_pool(x, ks, ss, ds, pads)
    g = rng.standard_normal(ref_idx.shape)
    want = scatter_add(g, ref_idx, x.shape[2:])
    for layout in LAYOUTS[n]:
        cf = "NC" + layout.replace("N", "").replace("C", "")
        xin, gin = act_to(x, cf, layout).astype(dtype), act_to(g, cf, layout).astype(dtype)
        out, idx = lo.max_pool(xin, k, stride=s, padding=p, return_indices=True, layout=layout)
        np.testing.assert_array_equal(act_from(idx, layout, cf), ref_idx)
        given = lo.max_pool_backward(gin, xin, k, stride=s, padding=p, layout=layout,
                                     indices=idx).grad_input
        found = lo.max_pool_backward(gin, xin, k, stride=s, padding=p,
                                     layout=layout).grad_input
        assert given.dtype == dtype and given.shape == xin.shape
        tol = 1e-6 if dtype == np.float32 else 1e-13
        np.testing.assert_allclose(act_from(given, layout, cf), want, rtol=tol, atol=tol)
        np.testing.assert_array_equal(given, found)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "NHCW"])
def test_indices_anywhere_in_the_plane_are_summed_on_any_thread_count(layout, threads,
                                                                       monkeypatch):
    """Indices need not be the windows' maxima: every one in the plane gets its output's
    gradient, shared cells summed, the same bits on one thread and on two (whole planes
    per thread, each summed in one order)."""
    monkeypatch.setattr(kpool, "UNPOOL_PARALLEL_BYTES", 0)
    calls = spy_parallel(monkeypatch, kpool)
    rng = np.random.default_rng(31)
    x = rng.standard_normal((4, 3, 7, 6))
    g = rng.standard_normal((4, 3, 3, 2))  # 3x3 stride 2 windows of 7x6
    idx = rng.integers(0, 7 * 6, size=g.shape)  # many shared cells per plane
    idx[0, 0] = 5  # a whole plane's outputs on one cell
    want = scatter_add(g, idx, (7, 6))
    runs = []
    for n in (1, 2):
        threads(n)
        got = lo.max_pool_backward(act_to(g, "NCHW", layout), act_to(x, "NCHW", layout), 3,
                                   stride=2, layout=layout,
                                   indices=act_to(idx, "NCHW", layout)).grad_input
        np.testing.assert_allclose(act_from(got, layout, "NCHW"), want, rtol=1e-13, atol=1e-13)
        runs.append(got)
    assert calls[-1] == 2
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize("out_sizes", [(3, 4), (4, 4), (1, 1)], ids=["uneven", "even", "one"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_adaptive_given_indices_match_the_loops(out_sizes, layout):
    rng = np.random.default_rng(32)
    x = rng.integers(0, 4, size=(2, 3, 7, 8)).astype(np.float64)
    _, ref_idx = ref_adaptive_pool(x, out_sizes, "max")
    g = rng.standard_normal(ref_idx.shape)
    want = scatter_add(g, ref_idx, (7, 8))
    xin, gin = act_to(x, "NCHW", layout), act_to(g, "NCHW", layout)
    _, idx = lo.adaptive_max_pool(xin, out_sizes, return_indices=True, layout=layout)
    given = lo.adaptive_max_pool_backward(gin, xin, out_sizes, layout=layout,
                                          indices=idx).grad_input
    np.testing.assert_allclose(act_from(given, layout, "NCHW"), want, rtol=1e-13, atol=1e-13)
    found = lo.adaptive_max_pool_backward(gin, xin, out_sizes, layout=layout).grad_input
    np.testing.assert_array_equal(given, found)


@pytest.mark.parametrize("op", ["max_pool", "adaptive_max_pool"])
def test_bad_indices_raise(op):
    x = np.zeros((1, 2, 4, 4), np.float32)
    g = np.ones((1, 2, 2, 2), np.float32)
    ok = np.zeros((1, 2, 2, 2), np.int64)

    def call(indices):
        if op == "max_pool":
            return lo.max_pool_backward(g, x, 2, indices=indices)
        return lo.adaptive_max_pool_backward(g, x, 2, indices=indices)

    assert call(ok).grad_input[:, :, 0, 0].tolist() == [[4.0, 4.0]]
    with pytest.raises(TypeError, match="integer"):
        call(ok.astype(np.float32))
    with pytest.raises(ValueError, match="shape of `grad_out`"):
        call(ok[..., :1])
    with pytest.raises(ValueError, match=r"\[0, 16\).*got 16"):
        call(ok + 16)
    neg = ok.astype(np.int8)
    neg[0, 1, 1, 1] = -3
    with pytest.raises(ValueError, match="got -3"):
        call(neg)
    assert call(ok.astype(np.uint16) + 15).grad_input[:, :, 3, 3].tolist() == [[4.0, 4.0]]
