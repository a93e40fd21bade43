"""The ops on dask arrays (issue 9): lazy results equal the NumPy ops to float64 rounding.

A generated grid of ops x layouts x paddings (asymmetric, "same", "same_lower", pad >=
extent) x padding modes (reflect and circular need explicit halos) x strides / dilations x
chunkings (uneven chunks, chunks smaller than the halo, chunk sizes not multiples of the
stride) runs with the threaded scheduler; one small case runs on a
`dask.distributed.LocalCluster` of two worker processes. Argument errors are raised at call
time, with the NumPy path's type and message, and nothing is computed at call time.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import layoutops as lo
from layoutops.ops import dask_support

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

RTOL, ATOL = 1e-10, 1e-12
SEED = 20269


def _public(name, kind):
    """The public op, and the same op as the caller used on dask input (``kind`` names its
    `accepts_dask` family, checked here)."""
    fn = getattr(lo, name)
    assert fn.dask_kind == kind
    return fn, fn


def _spatial_chunks(size, how):
    """Chunk sizes along one spatial axis: an int (regular), or 'uneven'."""
    if how == "uneven":
        out, i = [], 0
        for step in itertools.cycle((2, 1, 3)):
            if i >= size:
                break
            out.append(min(step, size - i))
            i += step
        return tuple(out)
    return how


def _to_dask(x, layout, chunking, batch_chunk=1):
    lay = lo.Layout(layout)
    chunks = [None] * x.ndim
    chunks[lay.batch_axis] = batch_chunk
    chunks[lay.channel_axis] = max(1, x.shape[lay.channel_axis] // 2)  # split: gets rechunked
    for axis in lay.spatial_axes:
        chunks[axis] = _spatial_chunks(x.shape[axis], chunking)
    return da.from_array(x, chunks=tuple(chunks))


def _shape(layout, sizes):
    return tuple(sizes[c] for c in layout)


def _check(got, want):
    assert isinstance(got, da.Array)
    assert got.shape == want.shape and got.dtype == want.dtype
    value = got.compute(scheduler="threads")
    assert value.shape == want.shape and value.dtype == want.dtype
    np.testing.assert_allclose(value, want, rtol=RTOL, atol=ATOL)


def _sample(grid, n, seed):
    """A reproducible sample of ``n`` cases from a product grid."""
    cases = list(itertools.product(*grid))
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(cases), size=min(n, len(cases)), replace=False)
    return [cases[i] for i in sorted(picks)]


# --------------------------------------------------------------------------------------
# conv and depthwise_conv2d
# --------------------------------------------------------------------------------------

CONV_GEOMETRIES = [  # (kernel, stride, dilation)
    ((3, 3), 1, 1),
    ((3, 2), 2, 1),
    ((2, 3), 3, 1),
    ((3, 3), 2, 2),
    ((5, 1), 1, (2, 1)),
    ((1, 1), 4, 1),
]
CONV_PADDINGS = [0, 1, (0, 2, 1, 0), "same", "same_lower", (4, 0, 0, 3)]
MODES = ["zeros", "reflect", "circular", "replicate"]
LAYOUTS_2D = ["NCHW", "NHWC", "NWHC"]
SIZES = [(7, 6), (5, 9)]
CHUNKINGS = [1, 2, 4, "uneven"]

CONV_CASES = _sample(
    [LAYOUTS_2D, SIZES, CONV_GEOMETRIES, CONV_PADDINGS, MODES, CHUNKINGS], 90, SEED
)


@pytest.mark.parametrize("layout,size,geom,padding,mode,chunking", CONV_CASES)
def test_conv_matches_numpy(layout, size, geom, padding, mode, chunking):
    fn, call = _public("conv", "conv")
    (kh, kw), stride, dilation = geom
    rng = np.random.default_rng(SEED)
    sizes = {"N": 2, "C": 4, "H": size[0], "W": size[1]}
    x = rng.standard_normal(_shape(layout, sizes))
    groups = 2 if mode == "zeros" else 1
    kernel_layout = "OIHW" if layout.index("C") == 1 else "HWIO"
    w = rng.standard_normal(_shape(kernel_layout, {"O": 6, "I": 4 // groups, "H": kh, "W": kw}))
    b = rng.standard_normal(6)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                  padding_mode=mode, layout=layout, kernel_layout=kernel_layout)
    try:
        want = fn(x, w, b, **kwargs)
    except ValueError as e:  # e.g. reflect padding >= size: the dask path must agree
        with pytest.raises(ValueError, match=None) as info:
            call(_to_dask(x, layout, chunking), w, b, **kwargs)
        assert str(info.value) == str(e)
        return
    _check(call(_to_dask(x, layout, chunking, batch_chunk=1), w, b, **kwargs), want)


DW_CASES = _sample([["NCHW", "NHWC"], SIZES, CONV_GEOMETRIES[:4], CONV_PADDINGS, MODES,
                    CHUNKINGS], 30, SEED + 1)


@pytest.mark.parametrize("layout,size,geom,padding,mode,chunking", DW_CASES)
def test_depthwise_matches_numpy(layout, size, geom, padding, mode, chunking):
    fn, call = _public("depthwise_conv2d", "depthwise")
    (kh, kw), stride, dilation = geom
    rng = np.random.default_rng(7)
    sizes = {"N": 2, "C": 3, "H": size[0], "W": size[1]}
    x = rng.standard_normal(_shape(layout, sizes))
    if layout == "NCHW":
        w = rng.standard_normal((6, 1, kh, kw))
    else:
        w = rng.standard_normal((kh, kw, 3, 2))
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, padding_mode=mode,
                  layout=layout)
    want = fn(x, w, **kwargs)
    _check(call(_to_dask(x, layout, chunking), w, **kwargs), want)


@pytest.mark.parametrize(
    "layout,kernel_layout,out_layout",
    [("NCW", None, "NWC"), ("NDHWC", None, None), ("NCDHW", "DHWIO", "NDHWC")],
)
def test_conv_1d_3d_and_out_layout(layout, kernel_layout, out_layout):
    fn, call = _public("conv", "conv")
    rng = np.random.default_rng(3)
    lay = lo.Layout(layout)
    sizes = dict(zip(lay.spatial, (5, 6, 4), strict=False), N=3, C=2)
    x = rng.standard_normal(_shape(layout, sizes))
    wl = kernel_layout or lo.kernel_layout(lay).spec
    ks = dict(zip(lay.spatial, (3, 2, 3), strict=False), O=3, I=2)
    w = rng.standard_normal(_shape(wl, ks))
    kwargs = dict(stride=2, padding="same", layout=layout, kernel_layout=kernel_layout,
                  out_layout=out_layout)
    want = fn(x, w, np.arange(3.0), **kwargs)
    _check(call(_to_dask(x, layout, "uneven", batch_chunk=2), w, np.arange(3.0), **kwargs),
           want)


# --------------------------------------------------------------------------------------
# conv_transpose
# --------------------------------------------------------------------------------------

CT_GEOMETRIES = [((3, 3), 1, 1), ((3, 2), 2, 1), ((2, 2), 3, 1), ((3, 3), 2, 2),
                 ((1, 2), 3, (2, 1))]
CT_PADDINGS = [  # (padding, output_padding, output_shape)
    (0, 0, None),
    (1, 0, None),
    ((0, 2, 1, 0), 1, None),
    ("same", 0, None),
    ("same_lower", 0, None),
    ("same", 0, (11, 13)),
    (0, 0, (12, 10)),
]
CT_CASES = _sample([["NCHW", "NHWC"], SIZES, CT_GEOMETRIES, CT_PADDINGS, CHUNKINGS], 40,
                   SEED + 2)


@pytest.mark.parametrize("layout,size,geom,pads,chunking", CT_CASES)
def test_conv_transpose_matches_numpy(layout, size, geom, pads, chunking):
    fn, call = _public("conv_transpose", "conv_transpose")
    (kh, kw), stride, dilation = geom
    padding, output_padding, output_shape = pads
    rng = np.random.default_rng(11)
    sizes = {"N": 2, "C": 4, "H": size[0], "W": size[1]}
    x = rng.standard_normal(_shape(layout, sizes))
    kl = "IOHW" if layout == "NCHW" else "HWOI"
    w = rng.standard_normal(_shape(kl, {"I": 4, "O": 3, "H": kh, "W": kw}))
    b = rng.standard_normal(6)
    kwargs = dict(stride=stride, padding=padding, output_padding=output_padding,
                  dilation=dilation, groups=2, output_shape=output_shape, layout=layout)
    try:
        want = fn(x, w, b, **kwargs)
    except ValueError as e:  # unreachable output_shape, output_padding too large, ...
        with pytest.raises(ValueError) as info:
            call(_to_dask(x, layout, chunking), w, b, **kwargs)
        assert str(info.value) == str(e)
        return
    _check(call(_to_dask(x, layout, chunking), w, b, **kwargs), want)


# --------------------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------------------

POOL_GEOMETRIES = [  # (kernel_size, stride, dilation)
    ((2, 2), None, 1),
    ((3, 3), 2, 1),
    ((3, 2), (1, 2), 1),
    ((2, 3), 3, (2, 1)),
    ((3, 3), 2, 2),
]
POOL_PADDINGS = [0, 1, (0, 1, 1, 0), "same"]
POOL_CASES = _sample(
    [["max_pool", "avg_pool", "avg_pool_excl", "lp_pool"], ["NCHW", "NHWC"], SIZES,
     POOL_GEOMETRIES, POOL_PADDINGS, [False, True], CHUNKINGS],
    70,
    SEED + 3,
)


def _pool_call(kind):
    name = "avg_pool" if kind == "avg_pool_excl" else kind
    fn, call = _public(name, name)
    extra = {"avg_pool_excl": {"count_include_pad": False}}.get(kind, {})
    args = (3,) if kind == "lp_pool" else ()
    return fn, call, args, extra


@pytest.mark.parametrize("kind,layout,size,geom,padding,ceil_mode,chunking", POOL_CASES)
def test_pool_matches_numpy(kind, layout, size, geom, padding, ceil_mode, chunking):
    fn, call, args, extra = _pool_call(kind)
    kernel_size, stride, dilation = geom
    rng = np.random.default_rng(5)
    x = rng.standard_normal(_shape(layout, {"N": 2, "C": 3, "H": size[0], "W": size[1]}))
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode,
                  layout=layout, **extra)
    try:
        want = fn(x, *args, kernel_size, **kwargs)
    except ValueError as e:  # padding >= extent, a window with no in-bounds tap, ...
        with pytest.raises(ValueError) as info:
            call(_to_dask(x, layout, chunking), *args, kernel_size, **kwargs)
        assert str(info.value) == str(e)
        return
    _check(call(_to_dask(x, layout, chunking), *args, kernel_size, **kwargs), want)


@pytest.mark.parametrize("chunking", [1, 2, "uneven"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_max_pool_indices_are_global(layout, chunking):
    fn, call = _public("max_pool", "max_pool")
    rng = np.random.default_rng(9)
    x = rng.integers(0, 5, size=_shape(layout, {"N": 2, "C": 2, "H": 7, "W": 8})).astype(
        np.uint8
    )
    kwargs = dict(stride=2, padding=(1, 0, 0, 1), ceil_mode=True, return_indices=True,
                  layout=layout)
    want, want_idx = fn(x, 3, **kwargs)
    got, got_idx = call(_to_dask(x, layout, chunking), 3, **kwargs)
    np.testing.assert_array_equal(got.compute(), want)
    np.testing.assert_array_equal(got_idx.compute(), want_idx)
    assert got_idx.dtype == want_idx.dtype == np.int64


def test_avg_pool_divisor_override_and_ceil_overhang():
    fn, call = _public("avg_pool", "avg_pool")
    x = np.arange(2 * 1 * 9 * 10, dtype=np.float64).reshape(2, 1, 9, 10)
    for kwargs in (
        dict(stride=2, padding=1, ceil_mode=True),
        dict(stride=2, padding=1, ceil_mode=True, divisor_override=5),
        dict(stride=3, padding=(0, 1, 1, 0), ceil_mode=True, count_include_pad=False),
    ):
        _check(call(_to_dask(x, "NCHW", 2), 3, **kwargs), fn(x, 3, **kwargs))


# --------------------------------------------------------------------------------------
# chunks, batch, defaults, dtypes
# --------------------------------------------------------------------------------------


def test_output_chunks_follow_input_chunks():
    fn, call = _public("conv", "conv")
    x = da.zeros((2, 3, 20, 30), chunks=(1, 1, 8, 10))
    y = call(x, np.ones((4, 3, 3, 3)), padding="same")
    assert y.chunks == ((1, 1), (4,), (8, 8, 4), (10, 10, 10))  # stride 1 "same": unchanged
    pool, pool_call = _public("max_pool", "max_pool")
    assert pool_call(x, 2).chunks == ((1, 1), (3,), (4, 4, 2), (5, 5, 5))


def test_batch_chunks_map_blockwise_and_empty_batch():
    fn, call = _public("conv", "conv")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 6, 6, 2))
    w = rng.standard_normal((3, 3, 2, 4))
    dx = da.from_array(x, chunks=(2, 6, 6, 2))
    y = call(dx, w, padding=1, layout="NHWC")
    assert y.chunks[0] == (2, 2, 1)
    _check(y, fn(x, w, padding=1, layout="NHWC"))
    empty = call(da.zeros((0, 6, 6, 2), chunks=(1, 3, 3, 2)), w, layout="NHWC")
    assert empty.shape == (0, 4, 4, 4)
    assert empty.compute().shape == (0, 4, 4, 4)


def test_default_layout_is_resolved_at_call_time():
    fn, call = _public("conv", "conv")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 7, 6, 3))
    w = rng.standard_normal((3, 3, 3, 2))
    with lo.default_layout("channels_last"):
        y = call(da.from_array(x, chunks=(1, 3, 2, 3)), w, padding="same")
        want = fn(x, w, padding="same")
    _check(y, want)  # computed outside the context: the blocks still use NHWC


def test_workspace_limit_block_is_resolved_at_call_time():
    """A ``with lo.workspace_limit(...)`` block around the call reaches the blocks, which
    dask computes later, outside it and on its own threads."""
    import functools

    seen = []

    @functools.wraps(lo.avg_pool)
    def recording(x, *args, **kwargs):
        seen.append(lo.get_workspace_limit())
        return lo.avg_pool(x, *args, **kwargs)

    x = da.from_array(np.arange(2 * 3 * 8 * 8, dtype=np.float64).reshape(2, 3, 8, 8),
                      chunks=(1, 3, 4, 4))
    with lo.workspace_limit(2**20):
        y = dask_support.dask_call("avg_pool", recording, x, 2)
    z = dask_support.dask_call("avg_pool", recording, x, 2)  # no override: the process value
    seen.clear()
    y.compute(scheduler="threads")
    assert len(seen) == 8 and set(seen) == {2**20}
    seen.clear()
    z.compute(scheduler="threads")
    assert len(seen) == 8 and set(seen) == {lo.get_workspace_limit()} != {2**20}


def test_float32_and_uint8_dtypes():
    fn, call = _public("conv", "conv")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 2, 9, 9)).astype(np.float32)
    w = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    y = call(da.from_array(x, chunks=(1, 2, 4, 4)), w, padding=1)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.compute(), fn(x, w, padding=1), rtol=1e-5, atol=1e-5)
    pool, pool_call = _public("max_pool", "max_pool")
    u = rng.integers(0, 255, size=(1, 1, 9, 9)).astype(np.uint8)
    py = pool_call(da.from_array(u, chunks=(1, 1, 4, 5)), 3, stride=2, padding=1)
    assert py.dtype == np.uint8
    np.testing.assert_array_equal(py.compute(), pool(u, 3, stride=2, padding=1))


# --------------------------------------------------------------------------------------
# call-time errors and laziness
# --------------------------------------------------------------------------------------

ERROR_CASES = [
    ("conv", "conv", (np.ones((4, 4, 3, 3)),), dict(groups=3)),
    ("conv", "conv", (np.ones((2, 4, 3, 3)),), dict(groups=2, padding=-1)),
    ("conv", "conv", (np.ones((2, 4, 9, 3)),), {}),  # output size < 1
    ("conv", "conv", (np.ones((2, 4, 3, 3)),), dict(padding_mode="mirror")),
    ("conv", "conv", (np.ones((2, 4, 3, 3)),), dict(padding=6, padding_mode="reflect")),
    ("conv", "conv", (np.ones((2, 4, 3, 3)),), dict(layout="NCHWX")),
    ("conv_transpose", "conv_transpose", (np.ones((4, 2, 3, 3)),), dict(output_padding=1)),
    ("conv_transpose", "conv_transpose", (np.ones((4, 2, 3, 3)),), dict(output_shape=(99, 9))),
    ("max_pool", "max_pool", (3,), dict(padding=3)),
    ("avg_pool", "avg_pool", (3,), dict(stride=0)),
    ("lp_pool", "lp_pool", (2, 3), dict(padding="bogus")),
]


@pytest.mark.parametrize("name,kind,args,kwargs", ERROR_CASES)
def test_argument_errors_at_call_time_like_numpy(name, kind, args, kwargs):
    fn, call = _public(name, kind)
    x = np.ones((2, 4, 6, 6))
    with pytest.raises((ValueError, TypeError)) as numpy_error:
        fn(x, *args, **kwargs)
    with pytest.raises(type(numpy_error.value)) as dask_error:
        call(da.ones((2, 4, 6, 6), chunks=3), *args, **kwargs)
    assert str(dask_error.value) == str(numpy_error.value)


def test_integer_input_to_conv_is_a_type_error_at_call_time():
    fn, call = _public("conv", "conv")
    with pytest.raises(TypeError, match="`conv`"):
        call(da.ones((1, 1, 4, 4), dtype=np.int32, chunks=2), np.ones((1, 1, 3, 3)))


def _forbidden_scheduler(*args, **kwargs):
    raise AssertionError("something was computed")


@pytest.mark.parametrize(
    "name,kind,args,kwargs",
    [
        ("conv", "conv", (np.ones((2, 2, 3, 3)),), dict(padding=1, padding_mode="circular")),
        ("depthwise_conv2d", "depthwise", (np.ones((2, 1, 3, 3)),), dict(stride=2)),
        ("conv_transpose", "conv_transpose", (np.ones((2, 2, 3, 3)),), dict(stride=2)),
        ("max_pool", "max_pool", (3,), dict(return_indices=True, ceil_mode=True)),
        ("avg_pool", "avg_pool", (2,), {}),
        ("lp_pool", "lp_pool", (2, 2), {}),
    ],
)
def test_nothing_is_computed_at_call_time(name, kind, args, kwargs):
    fn, call = _public(name, kind)
    x = da.random.default_rng(0).standard_normal((2, 2, 9, 8), chunks=(1, 1, 4, 4))
    with dask.config.set(scheduler=_forbidden_scheduler):
        result = call(x, *args, **kwargs)
        with pytest.raises(AssertionError, match="computed"):
            (result[0] if isinstance(result, tuple) else result).compute()
    outs = result if isinstance(result, tuple) else (result,)
    want = fn(x.compute(), *args, **kwargs)
    wants = want if isinstance(want, tuple) else (want,)
    for got, ref in zip(outs, wants, strict=True):
        np.testing.assert_allclose(got.compute(scheduler="sync"), ref, rtol=RTOL, atol=ATOL)


def test_dask_is_not_imported_by_layoutops():
    import subprocess
    import sys

    code = "import sys, layoutops; print('dask' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------------------
# a cluster of two worker processes on loopback
# --------------------------------------------------------------------------------------


def test_distributed_local_cluster():
    distributed = pytest.importorskip("distributed")
    fn, call = _public("conv", "conv")
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 9, 10, 3))
    w = rng.standard_normal((3, 3, 3, 4))
    kwargs = dict(stride=2, padding="same", padding_mode="reflect", layout="NHWC")
    y = call(da.from_array(x, chunks=(1, 4, 3, 3)), w, np.ones(4), **kwargs)
    with (
        distributed.LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=40,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        got = client.compute(y).result()
    np.testing.assert_allclose(got, fn(x, w, np.ones(4), **kwargs), rtol=RTOL, atol=ATOL)


def test_accepts_dask_decorator_dispatches_and_flattens_kwargs():
    wrapped = dask_support.accepts_dask("max_pool")(lo.max_pool2d)  # (x, kernel_size, **kw)
    x = np.random.default_rng(6).standard_normal((2, 7, 9, 3))
    want = lo.max_pool2d(x, 3, stride=2, padding=1, layout="NHWC")
    np.testing.assert_array_equal(wrapped(x, 3, stride=2, padding=1, layout="NHWC"), want)
    _check(wrapped(da.from_array(x, chunks=(1, 2, 4, 3)), 3, stride=2, padding=1,
                   layout="NHWC"), want)
    with pytest.raises(ValueError, match="`max_pool2d`"):
        wrapped(da.from_array(x[0], chunks=2), 3, layout="NHWC")
    with pytest.raises(ValueError, match="kind"):
        dask_support.accepts_dask("unfold")


def test_halo_wider_than_a_chunk_with_circular_padding():
    fn, call = _public("conv", "conv")
    rng = np.random.default_rng(13)
    x = rng.standard_normal((1, 2, 9, 8))
    w = rng.standard_normal((3, 2, 5, 3))
    kwargs = dict(padding=((8, 0), (2, 3)), dilation=(2, 1), padding_mode="circular")
    want = fn(x, w, **kwargs)  # a block reads 8 rows beyond it, from 8 one-row chunks
    _check(call(da.from_array(x, chunks=(1, 1, 1, 1)), w, **kwargs), want)


def test_windows_entirely_in_the_padding_give_the_bias():
    fn, call = _public("conv", "conv")
    x = np.arange(10.0).reshape(1, 2, 1, 5)
    w = np.ones((3, 2, 1, 1))
    kwargs = dict(stride=(3, 1), padding=((1, 1), (2, 0)))  # the one output row is padding
    want = fn(x, w, np.array([1.0, 2.0, 3.0]), **kwargs)
    got = call(da.from_array(x, chunks=(1, 2, 1, 2)), w, np.array([1.0, 2.0, 3.0]), **kwargs)
    _check(got, want)
    assert want.shape == (1, 3, 1, 7) and np.all(want[0, :, 0, 0] == [1.0, 2.0, 3.0])


@pytest.mark.parametrize("kind", ["max_pool", "avg_pool", "avg_pool_excl", "lp_pool"])
def test_pool_ceil_mode_last_window_starts_in_padding(kind):
    fn, call, args, extra = _pool_call(kind)
    x = np.random.default_rng(14).standard_normal((1, 2, 6, 7)) + 3.0
    kwargs = dict(stride=2, padding=1, ceil_mode=True, **extra)  # 6 -> 4, 7 -> 5 windows
    want = fn(x, *args, 3, **kwargs)
    for chunks in ((1, 2, 5, 3), (1, 1, (1, 4, 1), (3, 1, 3))):
        _check(call(da.from_array(x, chunks=chunks), *args, 3, **kwargs), want)


@pytest.mark.parametrize("layout", ["NCW", "NWC", "NCDHW", "NDHWC"])
@pytest.mark.parametrize("kind", ["conv_transpose", "max_pool", "avg_pool", "lp_pool"])
def test_ranks_1_and_3(kind, layout):
    lay = lo.Layout(layout)
    rng = np.random.default_rng(15)
    x = rng.standard_normal(_shape(layout, dict(zip(lay.spatial, (7, 6, 5), strict=False),
                                                N=2, C=2)))
    chunks = [1] * x.ndim
    for axis, size in zip(lay.spatial_axes, (3, 2, 4), strict=False):
        chunks[axis] = size
    dx = da.from_array(x, chunks=tuple(chunks))
    if kind == "conv_transpose":
        fn, call = _public("conv_transpose", "conv_transpose")
        wl = lo.kernel_layout(lay, op="conv_transpose").spec
        w = rng.standard_normal(_shape(wl, dict.fromkeys(lay.spatial, 3) | {"I": 2, "O": 3}))
        args, kwargs = (w,), dict(stride=2, padding="same", layout=layout)
    else:
        fn, call, args, extra = _pool_call(kind)
        args = (*args, 3)
        kwargs = dict(stride=2, padding=1, ceil_mode=True, layout=layout, **extra)
    _check(call(dx, *args, **kwargs), fn(x, *args, **kwargs))
@pytest.mark.parametrize(
    "name,args",
    [
        ("conv", (np.ones((2, 2, 3, 3)),)),
        ("conv1d", (np.ones((2, 2, 3)),)),
        ("conv2d", (np.ones((2, 2, 3, 3)),)),
        ("conv3d", (np.ones((2, 2, 3, 3, 3)),)),
        ("depthwise_conv2d", (np.ones((2, 1, 3, 3)),)),
        ("conv_transpose", (np.ones((2, 2, 3, 3)),)),
        ("conv_transpose1d", (np.ones((2, 2, 3)),)),
        ("conv_transpose2d", (np.ones((2, 2, 3, 3)),)),
        ("conv_transpose3d", (np.ones((2, 2, 3, 3, 3)),)),
        ("max_pool", (2,)),
        ("max_pool1d", (2,)),
        ("max_pool2d", (2,)),
        ("max_pool3d", (2,)),
        ("avg_pool", (2,)),
        ("avg_pool1d", (2,)),
        ("avg_pool2d", (2,)),
        ("avg_pool3d", (2,)),
        ("lp_pool", (2, 2)),
        ("lp_pool1d", (2, 2)),
        ("lp_pool2d", (2, 2)),
        ("lp_pool3d", (2, 2)),
    ],
)
def test_public_ops_accept_dask(name, args):
    fn = getattr(lo, name)
    if name[-2:-1].isdigit():  # conv2d, max_pool3d, ...
        n_spatial = int(name[-2])
    else:
        n_spatial = args[0].ndim - 2 if isinstance(args[0], np.ndarray) else 2
    x = np.random.default_rng(16).standard_normal((2, 2) + (6,) * n_spatial)
    got = fn(da.from_array(x, chunks=(1, 1) + (4,) * n_spatial), *args)
    assert isinstance(got, da.Array)
    _check(got, fn(x, *args))


