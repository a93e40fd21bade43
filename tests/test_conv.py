"""conv / conv1d / conv2d / conv3d / depthwise_conv2d against a plain-loop reference.

Every case of the generated grid runs in several layout pairs and with every ``algorithm``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from conv_reference import (
    act_from,
    act_to,
    conv_output_sizes,
    conv_ref,
    kernel_to,
    permute_axis_args,
    same_pairs,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import layoutops as lo

pytestmark = pytest.mark.usefixtures("both_small_paths")

ALGORITHMS = ["auto", "im2col", "per_tap", "direct"]
RNG = np.random.default_rng(20260)

# layout pairs per rank: (activation layout, kernel layout or None for the default)
LAYOUTS = {
    1: [("NCW", None), ("NWC", None), ("NWC", "OWI"), ("NCW", "WIO")],
    2: [
        ("NCHW", None),
        ("NHWC", None),
        ("NHWC", "OHWI"),
        ("NWHC", "IHWO"),
        ("NHCW", "OIHW"),
        ("NCHW", "GOIHW"),
    ],
    3: [("NCDHW", None), ("NDHWC", None), ("NCDHW", "DHWIO")],
}
CANON = {1: "W", 2: "HW", 3: "DHW"}


def _case(
    n_spatial,
    in_sizes,
    kernel_sizes,
    *,
    n=2,
    c_in=2,
    c_out=3,
    stride=1,
    dilation=1,
    padding=0,
    groups=1,
    mode="zeros",
    bias=True,
):
    return dict(
        n_spatial=n_spatial,
        in_sizes=in_sizes,
        kernel_sizes=kernel_sizes,
        n=n,
        c_in=c_in,
        c_out=c_out,
        stride=stride,
        dilation=dilation,
        padding=padding,
        groups=groups,
        mode=mode,
        bias=bias,
    )


GRID = {
    # 1-D
    "1d_plain_odd": _case(1, (7,), (3,)),
    "1d_even_stride_gt_kernel": _case(1, (10,), (2,), stride=3),
    "1d_dilated_asym": _case(1, (9,), (3,), dilation=2, padding=((2, 1),)),
    "1d_same_s2_odd": _case(1, (7,), (3,), stride=2, padding="same"),
    "1d_same_lower_s2_even": _case(1, (8,), (4,), stride=2, padding="same_lower"),
    "1d_reflect": _case(1, (6,), (3,), padding=(2, 1), mode="reflect"),
    "1d_circular_groups": _case(1, (5,), (3,), c_in=4, c_out=4, groups=2, padding=2,
                                mode="circular"),
    "1d_depthwise": _case(1, (9,), (3,), c_in=3, c_out=3, groups=3, padding=(2, 1)),
    "1d_depthwise_s2": _case(1, (10,), (3,), c_in=2, c_out=2, groups=2, stride=2, padding=1,
                             mode="replicate"),
    # 2-D
    "2d_plain_even": _case(2, (6, 6), (3, 3), bias=False),
    "2d_odd_rect": _case(2, (5, 7), (2, 3)),
    "2d_stride_gt_kernel": _case(2, (8, 7), (2, 2), stride=(3, 4)),
    "2d_dilation": _case(2, (7, 8), (3, 2), dilation=(2, 3), padding=1),
    "2d_asym_4tuple": _case(2, (5, 6), (3, 3), padding=(0, 2, 1, 0)),
    "2d_pairs": _case(2, (6, 5), (3, 3), padding=((2, 0), (1, 2)), stride=2),
    "2d_same_s2_odd": _case(2, (5, 7), (3, 3), stride=2, padding="same"),
    "2d_same_s2_even": _case(2, (6, 8), (3, 4), stride=2, padding="SAME"),
    "2d_same_lower_s2_even": _case(2, (6, 6), (4, 3), stride=2, padding="same_lower"),
    "2d_same_lower_odd_d2": _case(2, (7, 5), (3, 3), dilation=2, padding="same_lower"),
    "2d_valid": _case(2, (5, 6), (3, 3), padding="valid"),
    "2d_groups": _case(2, (5, 6), (3, 3), c_in=4, c_out=6, groups=2, padding=1),
    "2d_depthwise_mult2": _case(2, (6, 5), (3, 3), c_in=3, c_out=6, groups=3, padding=1),
    "2d_depthwise_s2": _case(2, (7, 6), (3, 3), c_in=2, c_out=2, groups=2, stride=2,
                             padding="same"),
    "2d_depthwise_rows": _case(2, (7, 6), (3, 2), c_in=4, c_out=4, groups=4, stride=(2, 1),
                               dilation=(1, 2), padding=((1, 2), (2, 1)), mode="reflect"),
    "2d_reflect_asym": _case(2, (5, 6), (3, 3), padding=((2, 1), (0, 3)), mode="reflect"),
    "2d_replicate": _case(2, (4, 5), (3, 2), padding=(3, 2), mode="replicate", stride=2),
    "2d_circular": _case(2, (4, 5), (3, 3), padding=((4, 1), (2, 5)), mode="circular"),
    "2d_reflect_groups_dil": _case(2, (6, 7), (2, 3), c_in=4, c_out=2, groups=2,
                                   dilation=2, padding=2, mode="reflect"),
    "2d_wide_channels": _case(2, (5, 4), (3, 3), c_in=40, c_out=5, padding=1, n=1),
    "2d_1x1": _case(2, (4, 5), (1, 1), c_in=3, c_out=4),
    "2d_1x1_groups_pad": _case(2, (5, 4), (1, 1), c_in=4, c_out=6, groups=2, padding=1),
    "2d_1x1_s2": _case(2, (5, 6), (1, 1), c_in=3, c_out=4, stride=2),
    "1d_1x1": _case(1, (7,), (1,), c_in=5, c_out=3),
    "3d_1x1": _case(3, (3, 4, 5), (1, 1, 1), c_in=2, c_out=3, n=1),
    # 3-D
    "3d_plain": _case(3, (4, 5, 4), (2, 3, 2), n=1),
    "3d_stride_pad": _case(3, (5, 4, 6), (3, 2, 3), stride=(2, 1, 3), padding=(1, 0, 2), n=1),
    "3d_same_replicate": _case(3, (3, 4, 5), (2, 2, 3), padding="same", mode="replicate",
                               n=1, stride=2),
    "3d_groups_dil": _case(3, (5, 4, 5), (2, 2, 2), c_in=4, c_out=4, groups=2, dilation=2,
                           n=1),
}

_REF_CACHE: dict = {}


def _ref_data(name):
    if name in _REF_CACHE:
        return _REF_CACHE[name]
    case = GRID[name]
    k = case["n_spatial"]
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    x = rng.standard_normal((case["n"], case["c_in"], *case["in_sizes"]))
    w = rng.standard_normal(
        (case["c_out"], case["c_in"] // case["groups"], *case["kernel_sizes"])
    )
    b = rng.standard_normal(case["c_out"]) if case["bias"] else None
    strides = (case["stride"],) * k if isinstance(case["stride"], int) else case["stride"]
    dilations = (
        (case["dilation"],) * k if isinstance(case["dilation"], int) else case["dilation"]
    )
    pads = _pairs(case["padding"], case["in_sizes"], case["kernel_sizes"], strides, dilations)
    ref = conv_ref(
        x, w, b, strides=strides, pads=pads, dilations=dilations, groups=case["groups"],
        mode=case["mode"],
    )
    _REF_CACHE[name] = (x, w, b, strides, dilations, pads, ref)
    return _REF_CACHE[name]


def _pairs(padding, in_sizes, kernel_sizes, strides, dilations):
    k = len(in_sizes)
    if isinstance(padding, str):
        key = padding.lower()
        if key == "valid":
            return ((0, 0),) * k
        return same_pairs(in_sizes, kernel_sizes, strides, dilations, lower=key == "same_lower")
    if isinstance(padding, int):
        return ((padding, padding),) * k
    if all(isinstance(p, int) for p in padding):
        if len(padding) == k:
            return tuple((p, p) for p in padding)
        return tuple((padding[2 * i], padding[2 * i + 1]) for i in range(k))
    return tuple(tuple(p) for p in padding)


def _run(name, layout, klayout, algorithm, dtype=np.float64, out_layout=None):
    """Run grid case ``name`` in ``layout`` with the kernel in ``klayout`` and compare."""
    case = GRID[name]
    x, w, b, strides, dilations, pads, ref = _ref_data(name)
    k = case["n_spatial"]
    canon = CANON[k]
    spatial = "".join(c for c in layout if c not in "NC")
    # per-axis arguments follow the layout's spatial order
    st = permute_axis_args(strides, canon, spatial)
    dl = permute_axis_args(dilations, canon, spatial)
    if isinstance(case["padding"], str):
        padding = case["padding"]
    else:
        padding = permute_axis_args(pads, canon, spatial)
    xl = act_to(x.astype(dtype), "NC" + canon, layout)
    kl_spec = klayout or str(lo.kernel_layout(lo.Layout(layout)))
    wl = kernel_to(w.astype(dtype), kl_spec, "OI" + canon, groups=case["groups"])
    groups = case["groups"]
    kwargs = dict(stride=st, dilation=dl, padding=padding, padding_mode=case["mode"],
                  layout=layout, kernel_layout=klayout, algorithm=algorithm)
    if out_layout is not None:
        kwargs["out_layout"] = out_layout
    out = lo.conv(xl, wl, b, groups=groups, **kwargs)
    olay = out_layout or layout
    assert out.flags.c_contiguous
    assert out.dtype == np.dtype(dtype)
    got = act_from(out, olay, "NC" + canon)
    return got, ref


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("name", sorted(GRID))
def test_grid_every_layout(name, algorithm):
    k = GRID[name]["n_spatial"]
    for layout, klayout in LAYOUTS[k]:
        if klayout == "GOIHW" and GRID[name]["groups"] == 1:
            continue
        got, ref = _run(name, layout, klayout, algorithm)
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10, err_msg=f"{layout}/{klayout}")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(
    "name", ["2d_pairs", "2d_groups", "2d_depthwise_mult2", "1d_dilated_asym", "3d_stride_pad"]
)
def test_out_layout_differs(name, algorithm):
    k = GRID[name]["n_spatial"]
    cf, cl = lo.channels_first(k).spec, lo.channels_last(k).spec
    for layout, out_layout in [(cf, cl), (cl, cf)]:
        got, ref = _run(name, layout, None, algorithm, out_layout=out_layout)
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)
    if k == 2:
        got, ref = _run(name, "NHWC", None, algorithm, out_layout="NWHC")
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)


def _ml_dtypes():
    try:
        import ml_dtypes
    except ImportError:
        return []
    return [np.dtype(ml_dtypes.bfloat16)]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(
    "dtype", [np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64), *_ml_dtypes()],
    ids=str,
)
def test_dtypes(dtype, algorithm):
    for name in ["2d_groups", "2d_reflect_asym", "2d_wide_channels"]:
        for layout in ["NCHW", "NHWC"]:
            x, w, b, *_ = _ref_data(name)
            # the reference on the values as rounded to dtype
            case = GRID[name]
            xr = x.astype(dtype).astype(np.float64)
            wr = w.astype(dtype).astype(np.float64)
            _, _, _, strides, dilations, pads, _ = _ref_data(name)
            ref = conv_ref(xr, wr, b, strides=strides, pads=pads, dilations=dilations,
                           groups=case["groups"], mode=case["mode"])
            xl = act_to(x.astype(dtype), "NCHW", layout)
            wl = kernel_to(w.astype(dtype), "OIHW" if layout == "NCHW" else "HWIO", "OIHW")
            out = lo.conv2d(xl, wl, b, stride=strides, dilation=dilations, padding=pads,
                            groups=case["groups"], padding_mode=case["mode"], layout=layout,
                            algorithm=algorithm)
            assert out.dtype == dtype
            got = act_from(out, layout, "NCHW").astype(np.float64)
            # tolerance: the output's own rounding (half types accumulate in float32)
            eps = {2: 2e-3, 4: 1e-5, 8: 1e-12}[dtype.itemsize]
            if dtype.name == "bfloat16":
                eps = 1.6e-2
            scale = np.abs(ref).max()
            np.testing.assert_allclose(got, ref, rtol=eps, atol=eps * scale)


def test_result_dtype_rules():
    x32 = np.ones((1, 2, 4, 4), np.float32)
    w16 = np.ones((3, 2, 2, 2), np.float16)
    assert lo.conv2d(x32, w16).dtype == np.float32
    assert lo.conv2d(x32, w16.astype(np.float64)).dtype == np.float64
    assert lo.conv2d(x32.astype(np.float16), w16).dtype == np.float16
    # a list (float64) bias is cast and does not promote
    assert lo.conv2d(x32, w16, [0.5, 1.0, 2.0]).dtype == np.float32
    assert lo.conv2d(x32, w16, np.ones(3, np.float64)).dtype == np.float32
    bf16 = _ml_dtypes()
    if bf16:
        out = lo.conv2d(x32.astype(bf16[0]), w16)
        assert out.dtype == np.float32
        out = lo.conv2d(x32.astype(bf16[0]), w16.astype(bf16[0]))
        assert out.dtype == bf16[0]


def test_half_accumulates_in_float32():
    # 4096 ones in float16: a float16 running sum would stall at 2048
    x = np.ones((1, 4096, 1, 1), np.float16)
    w = np.ones((1, 4096, 1, 1), np.float16)
    for algorithm in ALGORITHMS:
        assert float(lo.conv2d(x, w, algorithm=algorithm)[0, 0, 0, 0]) == 4096.0


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_batch_zero(layout):
    x = np.zeros((0, 3, 5, 6)) if layout == "NCHW" else np.zeros((0, 5, 6, 3))
    w = np.ones((4, 3, 3, 3)) if layout == "NCHW" else np.ones((3, 3, 3, 4))
    out = lo.conv2d(x, w, stride=2, padding=1, layout=layout)
    assert out.shape == ((0, 4, 3, 3) if layout == "NCHW" else (0, 3, 3, 4))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_contiguous_no_alias_inputs_unmodified(layout, algorithm):
    rng = np.random.default_rng(1)
    # a 1x1 identity conv could be a view of x: it must not be
    x = rng.standard_normal((2, 3, 4, 5))
    w = np.eye(3).reshape(3, 3, 1, 1)
    if layout == "NHWC":
        x = act_to(x, "NCHW", "NHWC")
        w = kernel_to(w, "HWIO", "OIHW")
    x_copy, w_copy = x.copy(), w.copy()
    b = np.zeros(3)
    out = lo.conv2d(x, w, b, layout=layout, algorithm=algorithm)
    np.testing.assert_array_equal(out, x)
    assert out.flags.c_contiguous and out.flags.owndata
    assert not np.shares_memory(out, x) and not np.shares_memory(out, w)
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(w, w_copy)
    # non-contiguous inputs (a strided view) work too, and stay untouched
    xs = np.asfortranarray(x)[:, ::1]
    out2 = lo.conv2d(xs, w, layout=layout, algorithm=algorithm, padding=1, padding_mode="reflect")
    out3 = lo.conv2d(np.ascontiguousarray(xs), w, layout=layout, algorithm=algorithm, padding=1,
                     padding_mode="reflect")
    np.testing.assert_allclose(out2, out3)


_TILE_X = np.random.default_rng(2).standard_normal((2, 8, 19, 17)).astype(np.float32)
_TILE_W = np.random.default_rng(3).standard_normal((8, 4, 3, 3)).astype(np.float32)
_TILE_B = np.random.default_rng(4).standard_normal(8).astype(np.float32)
_TILE_REF: dict = {}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("mode", ["zeros", "reflect", "circular"])
def test_workspace_tiling_equals_untiled(layout, algorithm, mode):
    x, w, b = _TILE_X, _TILE_W, _TILE_B
    if mode not in _TILE_REF:
        _TILE_REF[mode] = conv_ref(x[:1], w, b, strides=(1, 1), pads=((2, 2), (1, 1)),
                                   dilations=(1, 1), groups=2, mode=mode)
    if layout == "NHWC":
        x, w = act_to(x, "NCHW", "NHWC"), kernel_to(w, "HWIO", "OIHW")
    kw = dict(padding=(2, 1), groups=2, padding_mode=mode, layout=layout, algorithm=algorithm)
    full = lo.conv2d(x, w, b, **kw)
    with lo.workspace_limit(65536):
        tiled = lo.conv2d(x, w, b, **kw)
    np.testing.assert_allclose(tiled, full, rtol=1e-5, atol=1e-4)
    # the tiled result is right, not just consistent
    np.testing.assert_allclose(act_from(tiled[:1], layout, "NCHW"), _TILE_REF[mode], rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "NWHC"])
def test_workspace_tiling_on_views_of_the_input(layout, algorithm):
    # no padding: interior tiles read views of x itself (strided, never copied)
    x = act_to(_TILE_X, "NCHW", layout)
    klay = "OIHW" if layout == "NCHW" else "HWIO"
    w = kernel_to(_TILE_W, klay, "OIHW")
    kw = dict(groups=2, layout=layout, kernel_layout=klay, algorithm=algorithm)
    for extra in [dict(), dict(dilation=(2, 1)), dict(stride=(1, 2))]:
        full = lo.conv2d(x, w, **kw, **extra)
        with lo.workspace_limit(65536):
            tiled = lo.conv2d(x, w, **kw, **extra)
        np.testing.assert_allclose(tiled, full, rtol=1e-5, atol=1e-4)
    ref = conv_ref(_TILE_X[:1], _TILE_W, strides=(1, 1), pads=((0, 0), (0, 0)),
                   dilations=(1, 1), groups=2)
    with lo.workspace_limit(65536):
        tiled = lo.conv2d(x, w, **kw)
    np.testing.assert_allclose(act_from(tiled[:1], layout, "NCHW"), ref, rtol=1e-4, atol=1e-4)


def test_workspace_tiling_really_tiles(monkeypatch):
    from layoutops.kernels import conv as kconv

    calls = []
    real = kconv.padded_block

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    class TileSpy(kconv.TileBlock):  # im2col tiles: one lazily padded block per tile
        def __init__(self, *args, **kwargs):
            calls.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(kconv, "padded_block", spy)
    monkeypatch.setattr(kconv, "TileBlock", TileSpy)
    with lo.workspace_limit(65536):
        lo.conv2d(_TILE_X, _TILE_W, groups=2, padding=1)
    assert len(calls) > 2


def test_workspace_tiling_1d_long_axis():
    # one sample, one long axis: tiles must split the spatial axis itself
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 4, 3000)).astype(np.float32)
    w = rng.standard_normal((4, 4, 9)).astype(np.float32)
    full = lo.conv1d(x, w, padding=4)
    for algorithm in ALGORITHMS:
        with lo.workspace_limit(65536):
            tiled = lo.conv1d(x, w, padding=4, algorithm=algorithm)
        np.testing.assert_allclose(tiled, full, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("chunk", [1, 7, 2**17])
@pytest.mark.parametrize(
    "in_sizes,kernel,stride,dilation,pads",
    [
        ((7, 9), (3, 3), (1, 1), (1, 1), ((1, 1), (1, 1))),
        ((8, 9), (3, 3), (2, 2), (1, 1), ((1, 1), (1, 1))),
        ((6, 11), (2, 4), (1, 3), (2, 1), ((0, 2), (3, 1))),
        ((5, 10), (3, 5), (3, 2), (1, 2), ((2, 0), (4, 4))),
        ((12,), (5,), (2,), (1,), ((2, 2),)),
    ],
)
def test_depthwise_channels_last_rows_and_phases(monkeypatch, chunk, in_sizes, kernel, stride,
                                                 dilation, pads):
    # the channels-last depthwise path (virtual padding, stride phases, row and column
    # chunks down to one pixel) against the plain-loop reference
    from layoutops.kernels import conv as kconv

    monkeypatch.setattr(kconv, "_DIRECT_ROWS_CHUNK", chunk)
    rng = np.random.default_rng(11)
    c = 5
    k = len(in_sizes)
    x = rng.standard_normal((2, c, *in_sizes))
    w = rng.standard_normal((c, 1, *kernel))
    b = rng.standard_normal(c)
    ref = conv_ref(x, w, b, strides=stride, pads=pads, dilations=dilation, groups=c,
                   mode="zeros")
    canon = CANON[k]
    padding = [p for pair in pads for p in pair]
    got = lo.conv(act_to(x, "NC" + canon, "N" + canon + "C"), w, b, stride=stride,
                  dilation=dilation, padding=padding, groups=c, layout="N" + canon + "C",
                  kernel_layout="OI" + canon, algorithm="direct")
    np.testing.assert_allclose(act_from(got, "N" + canon + "C", "NC" + canon), ref,
                               rtol=1e-10, atol=1e-10)


# -- depthwise_conv2d ---------------------------------------------------------------------------


@pytest.mark.parametrize("mult", [1, 2])
@pytest.mark.parametrize("h,w_", [(5, 5), (6, 7)])
def test_depthwise_conv2d_both_default_kernels(mult, h, w_):
    rng = np.random.default_rng(4)
    c = 3
    x = rng.standard_normal((2, c, h, w_))
    w = rng.standard_normal((c * mult, 1, 3, 3))
    b = rng.standard_normal(c * mult)
    ref = conv_ref(x, w, b, strides=(2, 1), pads=same_pairs((h, w_), (3, 3), (2, 1), (1, 1)),
                   dilations=(1, 1), groups=c)
    out = lo.depthwise_conv2d(x, w, b, stride=(2, 1), padding="same")
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-10)
    # Keras HWCM, the channels-last default: w_hwcm[i, j, c, m] = w[c * M + m, 0, i, j]
    w_hwcm = w[:, 0].reshape(c, mult, 3, 3).transpose(2, 3, 0, 1)
    out = lo.depthwise_conv2d(act_to(x, "NCHW", "NHWC"), w_hwcm, b, stride=(2, 1),
                              padding="same", layout="NHWC")
    np.testing.assert_allclose(act_from(out, "NHWC", "NCHW"), ref, rtol=1e-10, atol=1e-10)
    # HWCM with channels-first input, explicitly
    out = lo.depthwise_conv2d(x, w_hwcm, b, stride=(2, 1), padding="same", kernel_layout="HWCM")
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-10)
    # the conversion utilities give the same kernel
    np.testing.assert_array_equal(lo.convert_kernel(w, "OIHW", "HWCM", groups=c), w_hwcm)


def test_depthwise_padding_modes_and_dilation():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 2, 6, 5))
    w = rng.standard_normal((4, 1, 2, 3))
    for mode in ["reflect", "replicate", "circular"]:
        ref = conv_ref(x, w, strides=(1, 1), pads=((1, 2), (2, 2)), dilations=(2, 1),
                       groups=2, mode=mode)
        out = lo.depthwise_conv2d(x, w, padding=(1, 2, 2, 2), dilation=(2, 1), padding_mode=mode)
        np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-10)


def test_depthwise_rejects_non_depthwise_kernel():
    with pytest.raises(ValueError, match=r"depthwise_conv2d.*I axis must be"):
        lo.depthwise_conv2d(np.ones((1, 4, 5, 5)), np.ones((4, 2, 3, 3)))
    with pytest.raises(ValueError, match=r"depthwise_conv2d.*must have 4 axes"):
        lo.depthwise_conv2d(np.ones((1, 4, 5)), np.ones((4, 1, 3)))


# -- layouts, defaults, kernels, bias -------------------------------------------------------------


def test_default_layout_context_and_aliases():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 2, 5, 6))
    w = rng.standard_normal((3, 2, 3, 3))
    ref = lo.conv2d(x, w, padding=1)
    x_cl, w_cl = act_to(x, "NCHW", "NHWC"), kernel_to(w, "HWIO", "OIHW")
    with lo.default_layout("channels_last"):
        out = lo.conv2d(x_cl, w_cl, padding=1)
    np.testing.assert_allclose(act_from(out, "NHWC", "NCHW"), ref)
    out = lo.conv2d(x_cl, w_cl, padding=1, layout="channels_last", out_layout="channels_first")
    np.testing.assert_allclose(out, ref)


def test_grouped_kernel_carries_groups():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 6, 5, 5))
    w = rng.standard_normal((4, 3, 3, 3))  # groups=2, C_out=4
    ref = conv_ref(x, w, strides=(1, 1), pads=((0, 0),) * 2, dilations=(1, 1), groups=2)
    w_g = kernel_to(w, "GOIHW", "OIHW", groups=2)
    np.testing.assert_allclose(lo.conv2d(x, w_g, kernel_layout="GOIHW"), ref, atol=1e-12)
    np.testing.assert_allclose(lo.conv2d(x, w_g, kernel_layout="GOIHW", groups=2), ref,
                               atol=1e-12)
    # the conversion utilities: GOIHW -> OIHW with groups=2 gives the PyTorch kernel
    np.testing.assert_array_equal(lo.convert_kernel(w_g, "GOIHW", "OIHW"), w)
    with pytest.raises(ValueError, match=r"`groups`=3 but the GOIHW kernel has 2 groups"):
        lo.conv2d(x, w_g, kernel_layout="GOIHW", groups=3)


def test_converted_weights_give_the_same_conv():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 4, 6, 5))
    w = rng.standard_normal((6, 2, 3, 2))
    ref = lo.conv2d(x, w, groups=2, stride=2, padding="same")
    w_tf = lo.convert_weight(w, "conv", "torch", "tf")
    out = lo.conv2d(act_to(x, "NCHW", "NHWC"), w_tf, groups=2, stride=2, padding="same",
                    layout="NHWC")
    np.testing.assert_allclose(act_from(out, "NHWC", "NCHW"), ref, atol=1e-12)
    x_cl = lo.convert(x, "NCHW", "NHWC")
    out = lo.conv2d(x_cl, lo.convert_kernel(w, "OIHW", "OHWI"), groups=2, stride=2,
                    padding="same", layout="NHWC", kernel_layout="OHWI")
    np.testing.assert_allclose(lo.convert(out, "NHWC", "NCHW"), ref, atol=1e-12)


@pytest.mark.parametrize("bias_shape", [(4,), (1, 4, 1, 1), (1, 4), (4, 1, 1)])
def test_bias_shapes(bias_shape):
    x = np.ones((1, 2, 3, 3))
    w = np.ones((4, 2, 2, 2))
    b = np.arange(4.0).reshape(bias_shape)
    out = lo.conv2d(x, w, b)
    np.testing.assert_array_equal(out[0, :, 0, 0], 8.0 + np.arange(4.0))


def test_conv_matches_explicit_geometry_formula():
    cases = [(7, 3, 2, 1, (1, 0)), (8, 2, 3, 2, (0, 2)), (5, 5, 1, 1, (0, 0))]
    for n_in, k, s, d, (pb, pe) in cases:
        out = lo.conv1d(np.ones((1, 1, n_in)), np.ones((1, 1, k)), stride=s, dilation=d,
                        padding=(pb, pe))
        assert out.shape[-1] == conv_output_sizes((n_in,), (k,), (s,), (d,), ((pb, pe),))[0]


# -- errors ----------------------------------------------------------------------------------------

X = np.ones((1, 6, 5, 5))
W = np.ones((4, 3, 3, 3))


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: lo.conv2d(np.ones((1, 6, 5)), np.ones((4, 6, 3))), ValueError,
         r"`conv2d`: `x` must have 4 axes"),
        (lambda: lo.conv1d(X, W), ValueError, r"`conv1d`: `x` must have 3 axes"),
        (lambda: lo.conv3d(X, W), ValueError, r"`conv3d`: `x` must have 5 axes"),
        (lambda: lo.conv(np.ones((6, 5)), np.ones((4, 6, 3))), ValueError,
         r"`conv`: `x` must have at least 3 axes"),
        (lambda: lo.conv2d(X, np.ones((4, 6, 3))), ValueError, r"kernel has 3|axes"),
        (lambda: lo.conv2d(X, W, groups=4), ValueError, r"`groups` must divide `C_in`=6, got 4"),
        (lambda: lo.conv2d(X, np.ones((5, 3, 3, 3)), groups=2), ValueError,
         r"`groups` must divide `C_out`=5, got 2"),
        (lambda: lo.conv2d(X, W), ValueError, r"I axis must be `C_in / groups`=6"),
        (lambda: lo.conv2d(X, W, groups=0), ValueError, r"`groups` must be an int >= 1, got 0"),
        (lambda: lo.conv2d(X, W, groups=2, stride=0), ValueError, r"`stride` must be >= 1"),
        (lambda: lo.conv2d(X, W, groups=2, dilation=(1, 0)), ValueError,
         r"`dilation` must be >= 1"),
        (lambda: lo.conv2d(X, W, groups=2, stride=(1, 2, 3)), ValueError,
         r"`stride` must be an int or 2 ints"),
        (lambda: lo.conv2d(X, W, groups=2, padding=-1), ValueError, r"`padding` must be >= 0"),
        (lambda: lo.conv2d(X, W, groups=2, padding=(1, 2, 3)), ValueError,
         r"`padding` for 2 spatial axes must be"),
        (lambda: lo.conv2d(X, W, groups=2, padding="full"), ValueError,
         r"`padding` must be an int, a tuple or one of"),
        (lambda: lo.conv2d(X, W, groups=2, padding_mode="wrap"), ValueError,
         r"`padding_mode` must be one of zeros, reflect, replicate, circular; got 'wrap'"),
        (lambda: lo.conv2d(X, W, groups=2, algorithm="fft"), ValueError,
         r"`algorithm` must be one of auto, im2col, per_tap, direct; got 'fft'"),
        (lambda: lo.conv2d(X, W, groups=2, padding=5, padding_mode="reflect"), ValueError,
         r"padding_mode='reflect' must be < the input size along 'H' \(5\), got \(5, 5\)"),
        (lambda: lo.conv2d(X, W, groups=2, padding=(0, 0, 0, 6), padding_mode="circular"),
         ValueError, r"padding_mode='circular' must be <= the input size along 'W' \(5\)"),
        (lambda: lo.conv2d(X, W, groups=2, dilation=3), ValueError,
         r"output size along 'H' would be -1 < 1 \(input 5, padding \(0, 0\), kernel 3, "
         r"dilation 3, stride 1\)"),
        (lambda: lo.conv2d(X, W, np.ones(3), groups=2), ValueError,
         r"`bias` must have C_out=4 elements"),
        (lambda: lo.conv2d(X, W, np.ones((2, 2)), groups=2), ValueError,
         r"`bias` must have C_out=4 elements"),
        (lambda: lo.conv2d(X.astype(int), W, groups=2), TypeError,
         r"`conv2d`: `x` must be a floating-point array"),
        (lambda: lo.conv2d(X, W.astype(bool), groups=2), TypeError,
         r"`conv2d`: `weight` must be a floating-point array"),
        (lambda: lo.conv2d([["a"]], W), TypeError, r"`conv2d`: `x` must be"),
        (lambda: lo.conv2d(X, W, groups=2, layout="NCHWD"), lo.LayoutError, r"NCHWD"),
        (lambda: lo.conv2d(X, W, groups=2, layout="NHCW"), lo.LayoutError,
         r"pass kernel_layout= explicitly"),
        (lambda: lo.conv2d(X, W, groups=2, kernel_layout="OIDW"), lo.LayoutError,
         r"spatial letters"),
        (lambda: lo.conv2d(X, W, groups=2, out_layout="NCDW"), lo.LayoutError,
         r"out_layout 'NCDW' must use the input's spatial letters"),
    ],
)
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_errors_come_before_work():
    # a huge input with a bad argument fails fast (no allocation of the output)
    x = np.lib.stride_tricks.as_strided(np.zeros(1), (1024, 64, 4096, 4096), (0,) * 4)
    with pytest.raises(ValueError, match="`groups` must divide"):
        lo.conv2d(x, np.ones((3, 3, 3, 3)), groups=3 * 7)


# -- properties ------------------------------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(2, 6),
    w_=st.integers(2, 6),
    kh=st.integers(1, 3),
    kw=st.integers(1, 3),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    pads=st.tuples(*[st.integers(0, 2)] * 4),
    groups=st.sampled_from([1, 2]),
    mode=st.sampled_from(["zeros", "reflect", "replicate", "circular"]),
    algorithm=st.sampled_from(ALGORITHMS),
    layout=st.sampled_from(["NCHW", "NHWC", "NWHC", "NCWH"]),
)
def test_property_matches_reference_in_any_layout(
    h, w_, kh, kw, stride, dilation, pads, groups, mode, algorithm, layout
):
    pairs = ((pads[0], pads[1]), (pads[2], pads[3]))
    sizes = conv_output_sizes((h, w_), (kh, kw), stride, dilation, pairs)
    if min(sizes) < 1 or (mode == "reflect" and max(pads) >= min(h, w_)):
        return
    if mode == "circular" and (max(pads[:2]) > h or max(pads[2:]) > w_):
        return
    rng = np.random.default_rng(h * 100 + w_ * 10 + kh)
    x = rng.standard_normal((1, 2 * groups, h, w_))
    w = rng.standard_normal((2 * groups, 2, kh, kw))
    ref = conv_ref(x, w, strides=stride, pads=pairs, dilations=dilation, groups=groups, mode=mode)
    spatial = "".join(c for c in layout if c not in "NC")
    klay = "OI" + spatial if layout.index("C") == 1 else spatial + "IO"
    out = lo.conv2d(
        act_to(x, "NCHW", layout), kernel_to(w, klay, "OIHW"), groups=groups,
        stride=permute_axis_args(stride, "HW", spatial),
        dilation=permute_axis_args(dilation, "HW", spatial),
        padding=permute_axis_args(pairs, "HW", spatial), padding_mode=mode, layout=layout,
        algorithm=algorithm,
    )
    np.testing.assert_allclose(act_from(out, layout, "NCHW"), ref, rtol=1e-10, atol=1e-10)
    # linearity in x
    out2 = lo.conv2d(
        act_to(2.0 * x, "NCHW", layout), kernel_to(w, klay, "OIHW"), groups=groups,
        stride=permute_axis_args(stride, "HW", spatial),
        dilation=permute_axis_args(dilation, "HW", spatial),
        padding=permute_axis_args(pairs, "HW", spatial), padding_mode=mode, layout=layout,
        algorithm=algorithm,
    )
    np.testing.assert_allclose(out2, 2.0 * out, rtol=1e-12, atol=1e-12)


def test_no_input_channels_gives_the_bias():
    for algorithm in ALGORITHMS:
        out = lo.conv2d(np.ones((2, 0, 4, 4)), np.ones((3, 0, 3, 3)), [1.0, 2.0, 3.0],
                        algorithm=algorithm)
        assert out.shape == (2, 3, 2, 2)
        np.testing.assert_array_equal(out[1, :, 1, 0], [1.0, 2.0, 3.0])


def _child_conv(queue):
    x = np.ones((2, 40, 40, 4), np.float32)
    w = np.ones((3, 3, 4, 1), np.float32)
    queue.put(float(lo.depthwise_conv2d(x, w, padding=1, layout="NHWC")[0, 5, 5, 0]))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_threaded_strategy_works_in_a_forked_child():
    import multiprocessing

    from layoutops.kernels import conv as kconv
    from layoutops.kernels import threads as kthreads

    x = np.ones((2, 40, 40, 4), np.float32)  # two samples: two chunks, two threads
    w = np.ones((3, 3, 4, 1), np.float32)
    lo.depthwise_conv2d(x, w, padding=1, layout="NHWC")
    assert kconv._THREADS == 1 or kthreads._STATE["workers"]  # the parent's workers exist
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_conv, args=(queue,))
    proc.start()
    proc.join(30)
    alive = proc.is_alive()
    if alive:
        proc.kill()
    assert not alive and queue.get(timeout=5) == 9.0


def test_cached_argument_checks_follow_each_call():
    """`prepare_conv` caches what it derives from shapes, dtypes and arguments: a repeated
    call with other argument types, another default layout, another dtype or an unhashable
    argument must still be checked and resolved as if it were the first."""
    x = np.arange(50, dtype=np.float32).reshape(1, 2, 5, 5)
    w = np.ones((2, 2, 3, 3), np.float32)
    assert lo.conv(x, w, groups=1).shape == (1, 2, 3, 3)
    for bad in (True, 1.0, [1]):  # True == 1 and hash(1.0) == hash(1): not the cached entry
        with pytest.raises(ValueError, match="`groups` must be an int"):
            lo.conv(x, w, groups=bad)
    assert lo.conv(x, w, groups=np.int64(1)).shape == (1, 2, 3, 3)
    # the same shapes under another default layout: (1, 2, 5, 5) is then N H W C
    xl = np.arange(50, dtype=np.float32).reshape(1, 5, 5, 2)
    with lo.default_layout("channels_last"):
        got = lo.conv(xl, np.ones((3, 3, 2, 2), np.float32))
    np.testing.assert_array_equal(got, lo.conv(xl, np.ones((3, 3, 2, 2), np.float32),
                                               layout="NHWC"))
    with lo.default_layout("channels_last"), pytest.raises(ValueError):
        lo.conv(x, w)  # (1, 2, 5, 5) as NHWC has 5 channels: the OIHW-shaped kernel misfits
    assert lo.conv(x.astype(np.float64), w).dtype == np.float64
    with pytest.raises(TypeError, match="floating-point"):
        lo.conv(x.astype(np.int32), w)


def test_cached_geometry_checks_follow_each_call():
    """The checked conv geometry is cached per typed arguments and padding mode: a repeated
    call with a bool or float stride, a padding mode with its own limits, or an unhashable
    padding must be checked as if it were the first."""
    x = np.arange(50, dtype=np.float32).reshape(1, 2, 5, 5)
    w = np.ones((2, 2, 3, 3), np.float32)
    assert lo.conv(x, w, stride=1, padding=5).shape == (1, 2, 13, 13)
    for bad in (True, 1.0, [1, 1.0]):  # equal to 1 as cache keys without their types
        with pytest.raises((TypeError, ValueError), match="stride"):
            lo.conv(x, w, stride=bad, padding=5)
    with pytest.raises(ValueError, match="reflect"):  # padding 5 >= the input size 5
        lo.conv(x, w, stride=1, padding=5, padding_mode="reflect")
    got = lo.conv(x, w, stride=1, padding=np.array([5, 5]))  # unhashable: checked, not cached
    np.testing.assert_array_equal(got, lo.conv(x, w, stride=1, padding=5))


@pytest.mark.parametrize("view", ["contiguous", "reversed", "transposed", "strided", "empty"])
def test_split_axis_is_a_read_only_view(view):
    """The grouped views of the operands: the channel axis split in place, never copied."""
    from layoutops.ops._conv_common import split_axis

    base = np.arange(2 * 12 * 5 * 3, dtype=np.float32).reshape(2, 12, 5, 3)
    arr = {
        "contiguous": base,
        "reversed": base[:, ::-1, :, ::-2],
        "transposed": base.transpose(3, 1, 0, 2),
        "strided": base[:, ::2],
        "empty": base[:0],
    }[view]
    split = split_axis(arr, 1, 3)
    assert split.shape == arr.shape[:1] + (3, arr.shape[1] // 3) + arr.shape[2:]
    assert not split.flags.writeable
    assert split.size == 0 or np.shares_memory(split, base)
    inner = arr.shape[1] // 3
    for g in range(3):
        np.testing.assert_array_equal(split[:, g], arr[:, g * inner : (g + 1) * inner])
