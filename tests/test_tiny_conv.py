"""The one-GEMM path of small convolutions (`layoutops.kernels.conv._tiny_im2col`): it runs
where `_tiny` says, its results equal the plain-loop reference in every layout, and larger
convolutions or a small workspace limit keep the tiled paths."""

import numpy as np
import pytest
from conv_reference import act_from, act_to, conv_ref, kernel_to
from conv_transpose_reference import ref_conv_transpose

import layoutops as lo
from layoutops.kernels import conv as kconv

#: the kernel layout that goes with each activation layout
_KERNELS = {
    "NCW": "OIW", "NWC": "WIO", "NCHW": "OIHW", "NHWC": "HWIO", "NWHC": "WHIO",
    "NCDHW": "OIDHW", "NDHWC": "DHWIO",
}


@pytest.fixture
def tiny_calls(monkeypatch):
    """The number of `_tiny_im2col` calls made during the test."""
    calls = []

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    real = kconv._tiny_im2col
    monkeypatch.setattr(kconv, "_tiny_im2col", spy)
    return calls


def _canonical_order(layout, per_layout):
    """Per-axis values given in ``layout``'s spatial order (an int: every axis), in
    ``D H W`` order (the references' and ``_run``'s canonical layouts)."""
    spatial = "".join(c for c in "DHW" if c in layout)
    in_layout = "".join(c for c in layout if c in "DHW")
    if isinstance(per_layout, int):
        return (per_layout,) * len(spatial)
    return tuple(per_layout[in_layout.index(c)] for c in spatial)


def _run(layout, x, w, b, **kw):
    """``lo.conv`` of ``x`` (``N C *S``) and ``w`` (``O I *K``) in ``layout``, result back
    in ``N C *S``."""
    canon = "NC" + "".join(c for c in "DHW" if c in layout)
    spatial = canon[2:]
    got = lo.conv(act_to(x, canon, layout), kernel_to(w, _KERNELS[layout], "OI" + spatial), b,
                  layout=layout, **kw)
    return act_from(got, layout, canon)


CASES = {
    # name: (layout, input N C *S, kernel sizes, groups, C_out, conv keywords, reference pads)
    "1d odd": ("NCW", (2, 3, 9), (3,), 1, 4, dict(padding=1), ((1, 1),)),
    "1d even strided cl": ("NWC", (1, 4, 10), (4,), 2, 2, dict(stride=2, padding=(1, 2)),
                           ((1, 2),)),
    "2d odd": ("NCHW", (2, 3, 7, 5), (3, 3), 1, 5, dict(padding=1), ((1, 1), (1, 1))),
    "2d even groups cl": ("NHWC", (2, 4, 6, 8), (2, 3), 2, 6,
                          dict(padding=((1, 0), (1, 1)), dilation=(2, 1)), ((1, 0), (1, 1))),
    "2d stride odd layout": ("NWHC", (1, 3, 9, 7), (3, 2), 1, 2,
                             dict(stride=(2, 3), padding=(0, 1)), ((0, 0), (1, 1))),
    "3d": ("NCDHW", (1, 2, 4, 5, 6), (3, 3, 3), 1, 3, dict(padding=1), ((1, 1),) * 3),
    "3d cl groups": ("NDHWC", (2, 4, 3, 4, 5), (2, 2, 2), 2, 4,
                     dict(stride=(1, 2, 1), padding=(1, 0, 1)), ((1, 1), (0, 0), (1, 1))),
}


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_tiny_path_matches_reference(name, mode, tiny_calls):
    layout, xshape, ksizes, groups, c_out, kw, pads = CASES[name]
    rng = np.random.default_rng(sorted(CASES).index(name))
    x = rng.standard_normal(xshape)
    w = rng.standard_normal((c_out, xshape[1] // groups, *ksizes))
    b = rng.standard_normal(c_out)
    want = conv_ref(x, w, b, strides=_canonical_order(layout, kw.get("stride", 1)),
                    dilations=_canonical_order(layout, kw.get("dilation", 1)),
                    pads=_canonical_order(layout, pads), groups=groups, mode=mode)
    got = _run(layout, x, w, b, groups=groups, padding_mode=mode, **kw)
    assert tiny_calls == [1]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_tiny_path_casts_half_and_keeps_single(layout, dtype, tiny_calls):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 4, 5, 6)).astype(dtype)
    w = rng.standard_normal((3, 4, 3, 3)).astype(dtype)
    got = _run(layout, x, w, None, padding=1)
    assert tiny_calls == [1]
    assert got.dtype == dtype
    want = conv_ref(x.astype(np.float64), w.astype(np.float64), strides=(1, 1),
                    pads=((1, 1), (1, 1)), dilations=(1, 1))
    tol = 1e-2 if dtype == np.float16 else 1e-5
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=tol, atol=tol)


def test_out_layout_differs_from_the_input(tiny_calls):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 6, 5))
    w = rng.standard_normal((4, 3, 3, 3))
    got = lo.conv2d(x, w, padding=1, layout="NCHW", out_layout="NHWC")
    assert tiny_calls == [1]
    want = conv_ref(x, w, strides=(1, 1), pads=((1, 1), (1, 1)), dilations=(1, 1))
    np.testing.assert_allclose(act_from(got, "NHWC", "NCHW"), want, rtol=1e-12, atol=1e-12)
    assert got.flags.c_contiguous


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_larger_convolutions_keep_the_tiled_paths(layout, tiny_calls):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 16, 40, 40)).astype(np.float32)  # 1.8 MiB of float32 columns
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    got = _run(layout, x, w, None, padding=1)
    assert tiny_calls == []
    want = conv_ref(x[:1], w, strides=(1, 1), pads=((1, 1), (1, 1)), dilations=(1, 1))
    np.testing.assert_allclose(got[:1], want, rtol=1e-4, atol=1e-4)


def test_a_small_workspace_limit_keeps_the_tiled_paths(tiny_calls):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 4, 12, 12))  # ~100 KiB of float64 temporaries
    w = rng.standard_normal((4, 4, 3, 3))
    full = lo.conv2d(x, w, padding=1)
    assert tiny_calls == [1]
    with lo.workspace_limit(65536):
        tiled = lo.conv2d(x, w, padding=1)
    assert tiny_calls == [1]
    np.testing.assert_allclose(tiled, full, rtol=1e-12, atol=1e-12)


TRANSPOSED = {
    # name: (layout, input N C *S, kernel sizes, groups, O per group, keywords, crops, opad)
    "1d s2": ("NCW", (2, 3, 5), (3,), 1, 2, dict(stride=2, padding=1), ((1, 1),), (0,)),
    "1d s3 d2 cl": ("NWC", (1, 2, 4), (2,), 1, 3, dict(stride=3, dilation=2), ((0, 0),), (0,)),
    "2d k3 s2 p1 op1": ("NCHW", (2, 4, 5, 4), (3, 3), 1, 3,
                        dict(stride=2, padding=1, output_padding=1), ((1, 1), (1, 1)), (1, 1)),
    "2d k4 s2 groups cl": ("NHWC", (1, 4, 4, 6), (4, 4), 2, 2,
                           dict(stride=2, padding=1, groups=2), ((1, 1), (1, 1)), (0, 0)),
    "2d s (2, 3) odd layout": ("NWHC", (2, 2, 3, 5), (2, 3), 1, 2,
                               dict(stride=(3, 2)), ((0, 0), (0, 0)), (0, 0)),
    "3d s2": ("NCDHW", (1, 2, 3, 3, 4), (2, 2, 2), 1, 2, dict(stride=2), ((0, 0),) * 3,
              (0, 0, 0)),
    "2d unit stride few channels": ("NCHW", (2, 3, 5, 4), (3, 3), 1, 2, dict(padding=1),
                                    ((1, 1), (1, 1)), (0, 0)),
    "2d unit stride few channels cl": ("NHWC", (1, 2, 4, 5), (2, 3), 1, 3,
                                       dict(padding=(0, 1)), ((0, 0), (1, 1)), (0, 0)),
}

#: the kernel layout that goes with each activation layout (transposed convs)
_T_KERNELS = {
    "NCW": "IOW", "NWC": "WOI", "NCHW": "IOHW", "NHWC": "HWOI", "NWHC": "WHOI", "NCDHW": "IODHW",
}


@pytest.mark.parametrize("name", sorted(TRANSPOSED))
def test_tiny_transposed_conv_as_one_forward_gemm(name, tiny_calls):
    """A small transposed conv (strided, or with few channels) runs as the forward conv of
    the zero-inserted input (`ops.conv_transpose._as_forward_conv`), on the one-GEMM path."""
    layout, xshape, ksizes, groups, o_per, kw, crops, opad = TRANSPOSED[name]
    rng = np.random.default_rng(len(name))
    x = rng.standard_normal(xshape)
    w = rng.standard_normal((xshape[1], o_per, *ksizes))  # I O *K
    b = rng.standard_normal(o_per * groups)
    want = ref_conv_transpose(x, w, b, _canonical_order(layout, kw.get("stride", 1)),
                              _canonical_order(layout, kw.get("dilation", 1)),
                              _canonical_order(layout, crops), _canonical_order(layout, opad),
                              groups)
    canon = "NC" + "".join(c for c in "DHW" if c in layout)
    got = lo.conv_transpose(act_to(x, canon, layout),
                            kernel_to(w, _T_KERNELS[layout], "IO" + canon[2:]), b,
                            layout=layout, **kw)
    assert tiny_calls == [1]
    np.testing.assert_allclose(act_from(got, layout, canon), want, rtol=1e-12, atol=1e-12)


def test_transposed_crops_beyond_the_kernel_keep_the_scatter(tiny_calls):
    """Crops larger than the kernel's spread have no forward form: the scatter-add runs."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 2, 5, 5))
    w = rng.standard_normal((2, 3, 2, 2))
    got = lo.conv_transpose(x, w, stride=2, padding=2)  # crop 2 > d * (k - 1) = 1
    assert tiny_calls == []
    want = ref_conv_transpose(x, w, None, (2, 2), (1, 1), [(2, 2), (2, 2)], [0, 0], 1)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
