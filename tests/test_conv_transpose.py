"""Transposed convolution: plain-loop reference grid, adjoint identity, layouts, dtypes, errors."""

from __future__ import annotations

import numpy as np
import pytest
from conv_transpose_reference import ref_conv, ref_conv_transpose, ref_crops
from hypothesis import given, settings
from hypothesis import strategies as st

import layoutops as lo


def relayout(arr, src, dst):
    """``arr`` from layout ``src`` to ``dst`` by letters (independent of layoutops)."""
    return np.ascontiguousarray(np.transpose(arr, [src.index(c) for c in dst]))


def cf(n):
    return "NC" + "DHW"[3 - n :] if n > 1 else "NCL"


def cl(n):
    return "N" + ("DHW"[3 - n :] if n > 1 else "L") + "C"


def sp(n):
    return "DHW"[3 - n :] if n > 1 else "L"


# ---------------------------------------------------------------------------------------------
# the reference grid
# ---------------------------------------------------------------------------------------------

# (in_sizes, kernel, stride, dilation, groups, padding, ref padding, output_padding, output_shape)
GRID = [
    ((3, 4), (3, 3), (1, 1), (1, 1), 1, 0, ((0, 0), (0, 0)), (0, 0), None),
    ((3, 4), (3, 2), (2, 3), (1, 1), 1, 1, ((1, 1), (1, 1)), (1, 2), None),
    ((4, 5), (2, 3), (3, 4), (1, 1), 1, (0, 1, 2, 0), ((0, 1), (2, 0)), (0, 0), None),
    ((3, 3), (3, 3), (2, 2), (2, 1), 2, (1, 0), ((1, 1), (0, 0)), (1, 1), None),
    ((2, 5), (2, 2), (1, 2), (3, 2), 2, [(2, 1), (0, 3)], ((2, 1), (0, 3)), (2, 1), None),
    ((3, 4), (3, 3), (2, 2), (1, 1), 1, "same", "same", (0, 0), None),
    ((4, 3), (3, 3), (2, 2), (1, 1), 1, "same_lower", "same_lower", (0, 0), None),
    ((3, 4), (4, 4), (2, 3), (1, 1), 1, "SAME", "same", (0, 0), None),
    ((3, 4), (4, 2), (2, 3), (1, 2), 1, "same_lower", "same_lower", (0, 0), None),
    ((3, 2), (1, 2), (3, 4), (1, 1), 1, "same", "same", (0, 0), None),  # span < stride
    ((3, 2), (2, 3), (2, 1), (1, 1), 1, "valid", "valid", (0, 0), None),
    ((3, 3), (3, 3), (3, 2), (1, 1), 1, 0, 0, (0, 0), (10, 8)),
    ((3, 3), (3, 3), (3, 2), (1, 1), 1, 0, 0, (1, 1), (10, 8)),
    ((3, 4), (3, 3), (2, 2), (1, 1), 1, "same", "same", (0, 0), (6, 7)),
    ((3, 4), (3, 3), (2, 2), (1, 1), 1, "same_lower", "same_lower", (0, 0), (5, 8)),
    ((3, 4), (3, 2), (2, 3), (1, 1), 1, 0, 0, (0, 0), (8, 12)),  # T < 0: appended
    ((2, 2), (1, 1), (3, 3), (1, 1), 1, 0, 0, (0, 0), (6, 5)),  # span < stride, T < 0
    ((3, 3), (2, 2), (1, 1), (2, 2), 2, 0, ((0, 0),) * 2, (1, 0), None),  # opad < dilation
]


def grid_case(case, n_batch=2, c_in=4, o_per=3, seed=0):
    in_sizes, ks, s, d, g, padding, ref_pad, opad, oshape = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_batch, c_in, *in_sizes))
    w = rng.standard_normal((c_in, o_per, *ks))
    b = rng.standard_normal(o_per * g)
    kwargs = dict(stride=s, dilation=d, groups=g, padding=padding, output_padding=opad)
    if oshape is not None:
        kwargs["output_shape"] = oshape
    crops = ref_crops(in_sizes, ks, s, d, ref_pad, opad, oshape)
    expected = ref_conv_transpose(x, w, b, s, d, crops, opad, g)
    return x, w, b, kwargs, expected


@pytest.mark.usefixtures("both_small_paths")
@pytest.mark.parametrize("case", GRID, ids=[str(i) for i in range(len(GRID))])
def test_grid_channels_first_iohw(case):
    x, w, b, kwargs, expected = grid_case(case)
    y = lo.conv_transpose2d(x, w, b, **kwargs)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    assert y.flags.c_contiguous and y.dtype == np.float64
    if kwargs.get("output_shape") is not None:
        assert y.shape[2:] == tuple(kwargs["output_shape"])


@pytest.mark.usefixtures("both_small_paths")
@pytest.mark.parametrize("case", GRID, ids=[str(i) for i in range(len(GRID))])
def test_grid_channels_last_hwoi(case):
    x, w, b, kwargs, expected = grid_case(case, seed=1)
    y = lo.conv_transpose(relayout(x, "NCHW", "NHWC"), relayout(w, "IOHW", "HWOI"), b,
                          layout="NHWC", **kwargs)
    np.testing.assert_allclose(y, relayout(expected, "NCHW", "NHWC"), rtol=1e-12, atol=1e-12)
    assert y.flags.c_contiguous


@pytest.mark.usefixtures("both_small_paths")
@pytest.mark.parametrize("case", GRID[::3], ids=[str(i) for i in range(0, len(GRID), 3)])
def test_grid_other_layouts(case):
    x, w, b, kwargs, expected = grid_case(case, seed=2)
    xl = relayout(x, "NCHW", "NHWC")
    # NHWC input with a PyTorch IOHW kernel, output channels-first
    y = lo.conv_transpose(xl, w, b, layout="NHWC", kernel_layout="IOHW", out_layout="NCHW",
                          **kwargs)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    assert y.flags.c_contiguous
    # NCHW input, OIWH kernel, NWHC output (spatial letters permuted)
    y = lo.conv_transpose(x, relayout(w, "IOHW", "OIWH"), b, kernel_layout="OIWH",
                          out_layout="NWHC", **kwargs)
    np.testing.assert_allclose(y, relayout(expected, "NCHW", "NWHC"), rtol=1e-12, atol=1e-12)
    # grouped GIOHW kernel: the group count comes from the kernel
    g = kwargs["groups"]
    wg = w.reshape(g, w.shape[0] // g, *w.shape[1:])
    kw = dict(kwargs)
    kw.pop("groups")
    y = lo.conv_transpose(x, wg, b, kernel_layout="GIOHW", **kw)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    y = lo.conv_transpose(x, wg, b, kernel_layout="GIOHW", **kwargs)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.usefixtures("both_small_paths")
@pytest.mark.parametrize("layout", ["NCL", "NLC"])
@pytest.mark.parametrize(
    "in_size,k,s,d,padding,ref_pad,opad,oshape",
    [
        (5, 3, 2, 1, (1, 2), ((1, 2),), 1, None),
        (4, 2, 3, 2, "same", "same", 0, None),
        (4, 3, 2, 1, "same_lower", "same_lower", 0, None),
        (3, 2, 2, 1, 0, 0, 0, (7,)),
        (6, 1, 1, 1, 0, ((0, 0),), 0, None),
    ],
)
def test_1d(layout, in_size, k, s, d, padding, ref_pad, opad, oshape):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, in_size))
    w = rng.standard_normal((3, 2, k))
    crops = ref_crops((in_size,), (k,), (s,), (d,), ref_pad, (opad,), oshape)
    expected = ref_conv_transpose(x, w, None, (s,), (d,), crops, (opad,), 1)
    kw = dict(stride=s, dilation=d, padding=padding, output_padding=opad, output_shape=oshape)
    wl = w if layout == "NCL" else relayout(w, "IOL", "LOI")
    y = lo.conv_transpose1d(relayout(x, "NCL", layout), wl, layout=layout, **kw)
    np.testing.assert_allclose(y, relayout(expected, "NCL", layout), rtol=1e-12, atol=1e-12)


@pytest.mark.usefixtures("both_small_paths")
@pytest.mark.parametrize("layout", ["NCDHW", "NDHWC"])
@pytest.mark.parametrize(
    "in_sizes,k,s,d,g,padding,ref_pad,opad",
    [
        ((2, 3, 2), (2, 2, 3), (2, 1, 3), (1, 2, 1), 1, (1, 0, 0, 1, 2, 0),
         ((1, 0), (0, 1), (2, 0)), (1, 1, 0)),
        ((3, 2, 3), (3, 2, 2), (2, 2, 2), (1, 1, 1), 2, "same", "same", (0, 0, 0)),
    ],
)
def test_3d(layout, in_sizes, k, s, d, g, padding, ref_pad, opad):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 4, *in_sizes))
    w = rng.standard_normal((4, 2, *k))
    b = rng.standard_normal(2 * g)
    crops = ref_crops(in_sizes, k, s, d, ref_pad, opad, None)
    expected = ref_conv_transpose(x, w, b, s, d, crops, opad, g)
    wl = w if layout == "NCDHW" else relayout(w, "IODHW", "DHWOI")
    y = lo.conv_transpose3d(relayout(x, "NCDHW", layout), wl, b, stride=s, dilation=d, groups=g,
                            padding=padding, output_padding=opad, layout=layout)
    np.testing.assert_allclose(y, relayout(expected, "NCDHW", layout), rtol=1e-12, atol=1e-12)


@pytest.mark.usefixtures("both_small_paths")
def test_same_matches_conv_adjoint_not_torch_padding():
    # k=3, s=2: "same" crops (0, 1); PyTorch's padding=1, output_padding=1 crops (1, 0)
    x = np.arange(3.0).reshape(1, 1, 3)
    w = np.ones((1, 1, 3))
    same = lo.conv_transpose1d(x, w, stride=2, padding="same")
    torch_like = lo.conv_transpose1d(x, w, stride=2, padding=1, output_padding=1)
    full = lo.conv_transpose1d(x, w, stride=2)
    np.testing.assert_array_equal(full[..., :6], same)
    np.testing.assert_array_equal(full[..., 1:], torch_like)
    assert not np.array_equal(same, torch_like)


@pytest.mark.usefixtures("both_small_paths")
def test_appended_positions_carry_only_bias():
    x = np.ones((1, 1, 2, 2))
    w = np.ones((1, 1, 1, 1))
    y = lo.conv_transpose2d(x, w, np.array([0.5]), stride=3, output_shape=(5, 6))
    # inputs land at 0 and 3; everything else is bias
    expected = np.full((1, 1, 5, 6), 0.5)
    expected[0, 0, ::3, ::3][:2, :2] += 1
    np.testing.assert_array_equal(y, expected)
    y = lo.conv_transpose2d(x, w, np.array([0.5]), stride=3, padding="same")
    assert y.shape == (1, 1, 6, 6)
    assert y[0, 0, 3, 3] == 1.5 and y[0, 0, 5, 5] == 0.5


# ---------------------------------------------------------------------------------------------
# the adjoint identity vdot(conv(x, w), y) == vdot(x, conv_transpose(y, w))
# ---------------------------------------------------------------------------------------------


@st.composite
def adjoint_cases(draw):
    n = draw(st.sampled_from([1, 2, 2, 2, 3]))
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    c_in = groups * draw(st.integers(1, 2))
    c_out = groups * draw(st.integers(1, 2))
    ks, ss, ds, pads, sizes = [], [], [], [], []
    string = draw(st.sampled_from([None, None, "same", "same_lower"]))
    for _ in range(n):
        k = draw(st.integers(1, 3))
        s = draw(st.integers(1, 3))
        d = draw(st.integers(1, 2))
        span = d * (k - 1) + 1
        if string:
            pb = pe = 0
            size = s * draw(st.integers(1, 3))
        else:
            pb = draw(st.integers(0, span - 1))
            pe = draw(st.integers(0, span - 1))
            size = draw(st.integers(max(1, span - pb - pe), span + 4))
        ks.append(k), ss.append(s), ds.append(d), pads.append((pb, pe)), sizes.append(size)
    layout = draw(st.sampled_from(["first", "last", "reversed"]))
    batch = draw(st.integers(1, 2))
    seed = draw(st.integers(0, 2**16))
    return n, groups, c_in, c_out, ks, ss, ds, pads, sizes, string, layout, batch, seed


@settings(max_examples=40, deadline=None)
@given(adjoint_cases())
def test_adjoint_identity(case):
    n, groups, c_in, c_out, ks, ss, ds, pads, sizes, string, which, batch, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, c_in, *sizes))
    w = rng.standard_normal((c_out, c_in // groups, *ks))  # conv OI..., = transposed IO...
    if which == "last":
        layout = cl(n)
        x = relayout(x, cf(n), layout)
        w = relayout(w, "OI" + sp(n), sp(n) + "IO")  # conv HW..IO = transposed HW..OI
    elif which == "reversed":  # e.g. NCWH: per-axis arguments follow the layout's order
        layout = "NC" + sp(n)[::-1]
    else:
        layout = cf(n)
    padding = string or pads
    y_fwd = lo.conv(x, w, stride=ss, padding=padding, dilation=ds, groups=groups, layout=layout)
    y = rng.standard_normal(y_fwd.shape)
    if string:
        opad = 0
    else:
        opad = [(sizes[a] + pads[a][0] + pads[a][1] - ds[a] * (ks[a] - 1) - 1) % ss[a]
                for a in range(n)]
    back = lo.conv_transpose(y, w, stride=ss, padding=padding, dilation=ds, groups=groups,
                             output_padding=opad, layout=layout)
    assert back.shape == x.shape
    lhs = np.vdot(y_fwd, y)
    rhs = np.vdot(x, back)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-10)


def test_library_conv_agrees_with_loop_conv():
    # the adjoint test pairs conv_transpose with lo.conv: pin lo.conv to the loop reference
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 2, 5, 4))
    w = rng.standard_normal((3, 2, 3, 2))
    np.testing.assert_allclose(
        lo.conv(x, w, stride=2, padding=1), ref_conv(x, w, (2, 2), (1, 1), ((1, 1),) * 2, 1),
        rtol=1e-12, atol=1e-12,
    )


# ---------------------------------------------------------------------------------------------
# dtypes, batch 0, contiguity, aliasing, tiling
# ---------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("both_small_paths")
@pytest.mark.parametrize(
    "xd,wd,result",
    [
        (np.float16, np.float16, np.float16),
        (np.float32, np.float32, np.float32),
        (np.float32, np.float64, np.float64),
        (np.float16, np.float32, np.float32),
    ],
)
def test_dtypes(xd, wd, result):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 4, 3, 5)).astype(xd)
    w = rng.standard_normal((4, 3, 3, 2)).astype(wd)
    y = lo.conv_transpose2d(x, w, [0.5, 1.0, -1.0], stride=2, padding=1)
    assert y.dtype == result
    expected = ref_conv_transpose(x.astype(np.float64), w.astype(np.float64), [0.5, 1.0, -1.0],
                                  (2, 2), (1, 1), [(1, 1), (1, 1)], (0, 0), 1)
    tol = 1e-2 if result == np.float16 else 1e-5
    np.testing.assert_allclose(y.astype(np.float64), expected, rtol=tol, atol=tol)


@pytest.mark.usefixtures("both_small_paths")
def test_bfloat16():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf16 = ml_dtypes.bfloat16
    x = np.arange(12.0).reshape(1, 2, 2, 3).astype(bf16)
    w = np.ones((2, 1, 2, 2), dtype=bf16)
    y = lo.conv_transpose2d(x, w, stride=2)
    assert y.dtype == bf16
    expected = ref_conv_transpose(x.astype(np.float64), w.astype(np.float64), None, (2, 2),
                                  (1, 1), [(0, 0), (0, 0)], (0, 0), 1)
    np.testing.assert_allclose(y.astype(np.float64), expected, rtol=1e-2)


def test_integer_input_is_rejected():
    with pytest.raises(TypeError, match="conv_transpose2d.*floating"):
        lo.conv_transpose2d(np.ones((1, 1, 2, 2), dtype=np.int32), np.ones((1, 1, 2, 2)))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_batch_zero(layout):
    x = np.zeros((0, 3, 4, 5)) if layout == "NCHW" else np.zeros((0, 4, 5, 3))
    w = np.ones((3, 2, 3, 3)) if layout == "NCHW" else np.ones((3, 3, 2, 3))
    y = lo.conv_transpose2d(x, w, np.ones(2), stride=2, padding=1, layout=layout)
    expected = (0, 2, 7, 9) if layout == "NCHW" else (0, 7, 9, 2)
    assert y.shape == expected and y.flags.c_contiguous


def test_no_aliasing_and_inputs_untouched():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 1, 3, 3))
    w = np.ones((1, 1, 1, 1))
    x0, w0 = x.copy(), w.copy()
    y = lo.conv_transpose2d(x, w)
    np.testing.assert_array_equal(y, x)
    assert not np.shares_memory(y, x)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(w, w0)


@pytest.mark.usefixtures("both_small_paths")
def test_non_contiguous_inputs_and_bias_shapes():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 6, 4, 5))[:, ::2, :, ::-1]
    w = rng.standard_normal((3, 4, 2, 2)).transpose(0, 1, 3, 2)[..., ::1]
    b = rng.standard_normal((1, 4, 1, 1))
    y = lo.conv_transpose2d(x, w, b, stride=(2, 1))
    expected = ref_conv_transpose(x, w, b.ravel(), (2, 1), (1, 1), [(0, 0), (0, 0)], (0, 0), 1)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("groups,c_in,o_per", [(1, 6, 12), (2, 16, 8), (8, 8, 1)])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_tiling_under_small_workspace(groups, c_in, o_per, layout):
    # group loop (BLAS per group) and batched-groups paths, with tiles over batch and space
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, c_in, 23, 18))
    w = rng.standard_normal((c_in, o_per, 3, 4))
    kw = dict(stride=(2, 3), dilation=(1, 2), padding=(1, 2, 0, 3), groups=groups,
              output_padding=(1, 0))
    if layout == "NHWC":
        x, w = relayout(x, "NCHW", "NHWC"), relayout(w, "IOHW", "HWOI")
    full = lo.conv_transpose2d(x, w, layout=layout, **kw)
    with lo.workspace_limit(2**16):
        tiled = lo.conv_transpose2d(x, w, layout=layout, **kw)
    np.testing.assert_allclose(tiled, full, rtol=1e-12, atol=1e-12)
    # and against the direct definition on the full size (a cheap vectorized scatter)
    xc = x if layout == "NCHW" else relayout(x, "NHWC", "NCHW")
    wc = w if layout == "NCHW" else relayout(w, "HWOI", "IOHW")
    expected = _vector_scatter(xc, wc, (2, 3), (1, 2), ((1, 2), (0, 3)), (1, 0), groups)
    fc = full if layout == "NCHW" else relayout(full, "NHWC", "NCHW")
    np.testing.assert_allclose(fc, expected, rtol=1e-10, atol=1e-10)


def _vector_scatter(x, w, s, d, crops, opad, groups):
    """Scatter per tap over whole planes (NCHW/IOHW), uncropped then cropped: test-only."""
    n, c_in, h, wd = x.shape
    o_per = w.shape[1]
    kh, kw = w.shape[2:]
    full_h = (h - 1) * s[0] + d[0] * (kh - 1) + 1 + opad[0]
    full_w = (wd - 1) * s[1] + d[1] * (kw - 1) + 1 + opad[1]
    out = np.zeros((n, o_per * groups, full_h, full_w))
    i_per = c_in // groups
    for g in range(groups):
        xg = x[:, g * i_per : (g + 1) * i_per]
        for a in range(kh):
            for b in range(kw):
                contrib = np.einsum("nchw,co->nohw", xg, w[g * i_per : (g + 1) * i_per, :, a, b])
                out[:, g * o_per : (g + 1) * o_per,
                    a * d[0] : a * d[0] + (h - 1) * s[0] + 1 : s[0],
                    b * d[1] : b * d[1] + (wd - 1) * s[1] + 1 : s[1]] += contrib
    return out[:, :, crops[0][0] : full_h - crops[0][1], crops[1][0] : full_w - crops[1][1]]


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------

X = np.ones((1, 4, 3, 3))
W = np.ones((4, 2, 3, 3))


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(output_padding=1), ValueError, r"`output_padding` must be smaller than max\(stride, "
         r"dilation\) = 1"),
        (dict(stride=2, output_padding=(0, 2)), ValueError, "smaller than .* = 2 along 'W'"),
        (dict(stride=2, padding="same", output_padding=1), ValueError,
         "`output_padding` cannot be combined with padding='same'"),
        (dict(output_padding=-1), ValueError, "`output_padding` must be >= 0"),
        (dict(padding=-1), ValueError, "`padding` must be >= 0"),
        (dict(padding=3), ValueError, r"output size along 'H' would be -1 < 1"),
        (dict(stride=2, output_shape=(3, 9)), ValueError,
         r"`output_shape` along 'W' must be in \[1, 8\].*got 9"),
        (dict(stride=2, output_shape=(0, 5)), ValueError, r"along 'H' must be in \[1, 8\]"),
        (dict(stride=2, padding=1, output_shape=(5, 5)), ValueError,
         "with `output_shape`, `padding` must be 0, 'same' or 'same_lower'"),
        (dict(output_shape=(5,)), ValueError, "`output_shape` must be an int or 2 ints"),
        (dict(groups=3), ValueError, r"`groups` must divide `C_in`=4, got 3"),
        (dict(stride=0), ValueError, "`stride` must be >= 1"),
        (dict(padding="full"), ValueError, "`padding` must be"),
    ],
)
def test_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        lo.conv_transpose2d(X, W, **kwargs)


def test_error_channel_mismatch_and_rank():
    with pytest.raises(ValueError, match=r"conv_transpose2d.*I axis must equal `C_in`=4, got 3"):
        lo.conv_transpose2d(X, np.ones((3, 2, 3, 3)))
    with pytest.raises(ValueError, match="conv_transpose1d.*must have 3 axes"):
        lo.conv_transpose1d(X, W)
    with pytest.raises(ValueError, match="`bias` must have C_out=2 elements"):
        lo.conv_transpose2d(X, W, np.ones(3))
    with pytest.raises(ValueError, match=r"`groups`=4 but the GIOHW kernel has 2 groups"):
        lo.conv_transpose2d(X, np.ones((2, 2, 1, 3, 3)), groups=4, kernel_layout="GIOHW")
    with pytest.raises(lo.LayoutError):
        lo.conv_transpose2d(X, W, layout="NCHW", kernel_layout="IODW")


def test_default_layout_context_and_kernel_default():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 3, 4, 5))
    w = rng.standard_normal((3, 2, 3, 2))
    expected = lo.conv_transpose2d(x, w, stride=2, padding=(1, 0))
    with lo.default_layout("channels_last"):
        y = lo.conv_transpose2d(relayout(x, "NCHW", "NHWC"), relayout(w, "IOHW", "HWOI"),
                                stride=2, padding=(1, 0))
    np.testing.assert_allclose(y, relayout(expected, "NCHW", "NHWC"), rtol=1e-12, atol=1e-12)


def test_output_shape_with_valid_and_zero_tuple():
    x = np.arange(6.0).reshape(1, 2, 3)
    w = np.ones((2, 1, 2))
    a = lo.conv_transpose1d(x, w, stride=2, output_shape=(5,))
    b = lo.conv_transpose1d(x, w, stride=2, output_shape=5, padding="valid")
    c = lo.conv_transpose1d(x, w, stride=2, output_shape=[5], padding=(0, 0))
    full = lo.conv_transpose1d(x, w, stride=2)  # size 6, T = 1 -> crops (1, 0)
    np.testing.assert_array_equal(a, full[..., 1:])
    np.testing.assert_array_equal(b, a)
    np.testing.assert_array_equal(c, a)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_peak_memory_stays_within_workspace(layout):
    import tracemalloc

    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 16, 48, 40))
    w = rng.standard_normal((16, 8, 3, 3))
    if layout == "NHWC":
        x, w = relayout(x, "NCHW", "NHWC"), relayout(w, "IOHW", "HWOI")
    limit = 2**18
    with lo.workspace_limit(limit):
        lo.conv_transpose2d(x, w, stride=2, padding=1, layout=layout)  # warm plan caches
        tracemalloc.start()
        y = lo.conv_transpose2d(x, w, stride=2, padding=1, layout=layout)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # an untiled cols buffer alone would be 2*48*40*8*9*8 bytes = 2.2 MB
    assert peak < y.nbytes + 3 * limit, (peak, y.nbytes)


# channels-last, one group, and stride dividing the innermost kernel size (or stride 1): the
# contiguous-row strategy (a GEMM per block of `s` taps, added as whole output rows)
ROW_CASES = [
    # (in_sizes, kernel, stride, dilation, ref padding, output_padding)
    ((5, 6), (4, 4), (2, 2), (1, 1), ((1, 1), (1, 1)), (0, 0)),
    ((4, 5), (2, 2), (2, 2), (1, 1), ((0, 0), (0, 0)), (1, 1)),
    ((3, 7), (3, 6), (2, 3), (1, 1), ((2, 0), (0, 4)), (1, 2)),
    ((4, 4), (3, 3), (1, 1), (2, 2), ((1, 2), (3, 0)), (1, 1)),
    ((3, 5), (2, 4), (3, 2), (1, 1), ((0, -2), (0, -1)), (0, 0)),  # end < 0: appended
    ((6,), (4,), (2,), (1,), ((2, 1),), (1,)),
    ((3, 3, 4), (2, 3, 2), (2, 1, 2), (1, 1, 1), ((0, 1), (1, 1), (1, 0)), (1, 0, 1)),
    # innermost kernel size not a multiple of the stride: zero taps pad it to one
    ((5, 6), (3, 3), (2, 2), (1, 1), ((1, 1), (1, 1)), (1, 1)),
    ((4, 5), (3, 7), (1, 2), (1, 1), ((1, 0), (3, 2)), (0, 1)),
    ((3, 4), (2, 5), (2, 3), (1, 1), ((0, 0), (0, -1)), (0, 0)),  # end < 0: appended
    ((7,), (5,), (3,), (1,), ((1, 2),), (2,)),
]


@pytest.mark.parametrize("tile_bytes", [None, 64])
@pytest.mark.parametrize("case", ROW_CASES, ids=[str(i) for i in range(len(ROW_CASES))])
def test_channels_last_row_blocks(case, tile_bytes, monkeypatch):
    from layoutops.kernels import conv_transpose as kct

    if tile_bytes is not None:  # one input position per tile: every tile border is cropped
        monkeypatch.setattr(kct, "ROW_TILE_BYTES", tile_bytes)
    in_sizes, ks, s, d, crops, opad = case
    n = len(in_sizes)
    rng = np.random.default_rng(len(in_sizes) + sum(ks))
    x = rng.standard_normal((2, 5, *in_sizes))
    w = rng.standard_normal((5, 3, *ks))
    b = rng.standard_normal(3)
    # explicit crops; an end below 0 is reached through output_shape instead
    pads = [(bg, max(e, 0)) for bg, e in crops]
    full = [(i - 1) * st + dd * (k - 1) + 1 + op
            for i, st, dd, k, op in zip(in_sizes, s, d, ks, opad, strict=True)]
    shape = tuple(f - bg - e for f, (bg, e) in zip(full, crops, strict=True))
    kw = dict(stride=s, dilation=d)
    if any(e < 0 for _, e in crops):
        assert all(bg == 0 for bg, _ in crops)
        kw["output_shape"] = shape
        expected = ref_conv_transpose(x, w, b, s, d, crops, (0,) * n, 1)
    else:
        kw.update(padding=pads, output_padding=opad)
        expected = ref_conv_transpose(x, w, b, s, d, crops, opad, 1)
    assert expected.shape[2:] == shape
    layout, k_layout = cl(n), sp(n) + "OI"
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-4)):
        y = lo.conv_transpose(relayout(x, cf(n), layout).astype(dtype),
                              relayout(w, "IO" + sp(n), k_layout).astype(dtype), b,
                              layout=layout, kernel_layout=k_layout, **kw)
        assert y.dtype == dtype
        np.testing.assert_allclose(y, relayout(expected, cf(n), layout), rtol=tol, atol=tol)


@pytest.mark.usefixtures("no_tiny_path")
def test_channels_last_kernel_padded_to_whole_blocks(monkeypatch):
    """A channels-last kernel whose innermost size the stride does not divide takes the row
    blocks after zero taps pad it (k3 s2 -> k4)."""
    from recording import record_taken

    from layoutops.kernels import conv_transpose as kct

    taken = record_taken(monkeypatch, kct, "_scatter_rows", taken=lambda result: True)
    x = np.random.default_rng(3).standard_normal((2, 5, 6, 4))
    w = np.random.default_rng(4).standard_normal((3, 3, 2, 4))  # HWOI
    y = lo.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1, layout="NHWC",
                            kernel_layout="HWOI")
    assert taken == [True]
    expected = ref_conv_transpose(relayout(x, "NHWC", "NCHW"), relayout(w, "HWOI", "IOHW"),
                                  None, (2, 2), (1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    np.testing.assert_allclose(y, relayout(expected, "NCHW", "NHWC"), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "case", [c for c in GRID if c[4] == 1], ids=[str(i) for i, c in enumerate(GRID) if c[4] == 1]
)
def test_channels_first_phase_planes_one_image_per_tile(case, monkeypatch):
    """Channels-first, one group: output phases on padded planes, here one image per tile."""
    from layoutops.kernels import conv_transpose as kct

    monkeypatch.setattr(kct, "PHASE_TILE_BYTES", 1)
    x, w, b, kwargs, expected = grid_case(case, n_batch=3, seed=2)
    assert kwargs["groups"] == 1
    y = lo.conv_transpose2d(x, w, b, **kwargs)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


class _NanEmptyNumPy:
    """NumPy, except that `empty` returns arrays full of NaN (so an output the kernels
    forget to zero shows)."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def empty(shape, dtype=float, **kwargs):
        return np.full(shape, np.nan, dtype=dtype)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", GRID, ids=[str(i) for i in range(len(GRID))])
def test_uninitialized_output_is_zeroed_on_every_path(case, layout, monkeypatch):
    """The op allocates its output uninitialized; the scatter zeros it, per batch run on the
    pipelines' threads (channels-last rows, channels-first phase planes: several runs here)
    or whole (the general path: groups, dilated strided rows). Appended positions and cells
    no tap reaches must come out as the bias."""
    from layoutops.kernels import conv_transpose as kct
    from layoutops.kernels.threads import set_num_threads
    from layoutops.ops import conv_transpose as oct_

    monkeypatch.setattr(oct_, "np", _NanEmptyNumPy())
    monkeypatch.setattr(kct, "PHASE_TILE_BYTES", 1)  # one image per tile: several runs
    monkeypatch.setattr(kct, "ROW_TILE_BYTES", 64)
    x, w, b, kwargs, expected = grid_case(case, n_batch=3, seed=4)
    old = set_num_threads(2)
    try:
        y = lo.conv_transpose(relayout(x, "NCHW", layout), relayout(w, "IOHW", "IOHW"), b,
                              layout=layout, kernel_layout="IOHW", **kwargs)
    finally:
        set_num_threads(old)
    np.testing.assert_allclose(y, relayout(expected, "NCHW", layout), rtol=1e-12, atol=1e-12)


# unit strides: (in_sizes, kernel, dilation, padding, reference crops, groups)
UNIT_STRIDE = [
    ((5, 6), (3, 3), (1, 1), 1, ((1, 1), (1, 1)), 1),
    ((4, 7), (2, 3), (2, 1), [(1, 0), (2, 1)], ((1, 0), (2, 1)), 1),
    ((6, 5), (3, 2), (1, 2), 0, ((0, 0), (0, 0)), 2),
    ((3, 4), (4, 4), (1, 1), "same", "same", 2),
    ((5,), (5,), (2,), 3, ((3, 3),), 1),
    ((5, 5), (3, 3), (1, 1), 3, ((3, 3), (3, 3)), 1),  # crop beyond the spread: the scatter
]


@pytest.mark.parametrize("case", UNIT_STRIDE, ids=[str(i) for i in range(len(UNIT_STRIDE))])
@pytest.mark.parametrize("channels_last", [False, True], ids=["first", "last"])
def test_unit_stride_as_the_forward_conv(case, channels_last, monkeypatch):
    """A unit-stride transposed conv runs as the forward conv with the flipped kernel (here
    for any channel count), unless a crop exceeds the kernel's spread."""
    from recording import record_taken

    from layoutops.ops import conv_transpose as oct

    monkeypatch.setattr(oct, "FORWARD_MIN_CHANNELS", 1)
    taken = record_taken(monkeypatch, oct, "_as_forward_conv")
    in_sizes, ks, d, padding, ref_pad, g = case
    n = len(in_sizes)
    rng = np.random.default_rng(sum(in_sizes) + sum(ks))
    x = rng.standard_normal((2, 4, *in_sizes))
    w = rng.standard_normal((4, 3, *ks))
    b = rng.standard_normal(3 * g)
    crops = ref_crops(in_sizes, ks, (1,) * n, d, ref_pad, (0,) * n, None)
    expected = ref_conv_transpose(x, w, b, (1,) * n, d, crops, (0,) * n, g)
    layout, k_layout = (cl(n), sp(n) + "OI") if channels_last else (cf(n), "IO" + sp(n))
    y = lo.conv_transpose(relayout(x, cf(n), layout), relayout(w, "IO" + sp(n), k_layout), b,
                          dilation=d, padding=padding, groups=g, layout=layout,
                          kernel_layout=k_layout)
    beyond = any(c > dd * (k - 1) for (c, _), dd, k in zip(crops, d, ks, strict=True))
    assert taken == [not beyond]
    np.testing.assert_allclose(y, relayout(expected, cf(n), layout), rtol=1e-12, atol=1e-12)


@pytest.mark.usefixtures("no_tiny_path")
def test_channels_first_kernel_keeps_its_size(monkeypatch):
    """Zero taps are added only where they make the channels-last row blocks apply: the
    channels-first phase planes get the kernel as it is (extra taps would be extra GEMM rows)."""
    from layoutops.kernels import conv_transpose as kct

    seen = []
    original = kct._phase_planes

    def spy(*args, **kwargs):
        seen.append(args[7].kernel_sizes)  # the geometry
        return original(*args, **kwargs)

    monkeypatch.setattr(kct, "_phase_planes", spy)
    x = np.random.default_rng(5).standard_normal((2, 4, 5, 6))
    w = np.random.default_rng(6).standard_normal((4, 2, 3, 3))
    y = lo.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1)
    assert seen == [(3, 3)]
    expected = ref_conv_transpose(x, w, None, (2, 2), (1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_cached_geometry_checks_follow_each_call():
    """The checked transposed-conv geometry is cached per typed arguments: a repeated call
    with a bool or float stride, an output_padding the stride does not allow, or an
    unhashable argument must be checked as if it were the first."""
    x = np.arange(18, dtype=np.float32).reshape(1, 2, 3, 3)
    w = np.ones((2, 2, 3, 3), np.float32)
    assert lo.conv_transpose(x, w, stride=2, output_padding=1).shape == (1, 2, 8, 8)
    for bad in (True, 2.0, [2, 2.0]):  # equal to 2 (or 1) as cache keys without their types
        with pytest.raises((TypeError, ValueError), match="stride"):
            lo.conv_transpose(x, w, stride=bad, output_padding=1)
    with pytest.raises(ValueError, match="output_padding"):  # 2 is not below the stride 2
        lo.conv_transpose(x, w, stride=2, output_padding=2)
    got = lo.conv_transpose(x, w, stride=np.array([2, 2]), output_padding=1)  # unhashable
    np.testing.assert_array_equal(got, lo.conv_transpose(x, w, stride=2, output_padding=1))
    # a different geometry under the same arguments (the input's size) is not taken from
    # the cache
    assert lo.conv_transpose(x[..., :2], w, stride=2, output_padding=1).shape == (1, 2, 8, 6)
