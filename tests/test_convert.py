"""Conversions: convert, convert_kernel, convert_weight, padding helpers, convert_indices.

Every conversion is checked by a round trip AND by an independent oracle: plain index loops
written here (letter -> index maps, the grouped and depthwise channel formulas), sharing no
code with ``layoutops.layouts``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import layoutops as lo

SPATIAL = {1: "W", 2: "HW", 3: "DHW"}


def rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def sized(layout: str, sizes: dict[str, int]) -> tuple[int, ...]:
    return tuple(sizes[c] for c in layout)


def oracle_permute(a: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Move ``a`` from ``src`` to ``dst`` by a loop over every element (no transpose)."""
    shape = {c: n for c, n in zip(src, a.shape, strict=True)}
    out = np.empty(tuple(shape[c] for c in dst), dtype=a.dtype)
    for idx in np.ndindex(out.shape):
        where = dict(zip(dst, idx, strict=True))
        out[idx] = a[tuple(where[c] for c in src)]
    return out


# -- convert ------------------------------------------------------------------------------------

ACT_PAIRS = [
    ("NCW", "NWC"),
    ("NCHW", "NHWC"),
    ("NCDHW", "NDHWC"),
    ("NHWC", "NCHW"),
    ("NCHW", "NWHC"),
    ("NHWC", "HWNC"),
]


@pytest.mark.parametrize(("src", "dst"), ACT_PAIRS)
def test_convert_matches_loop_and_round_trips(src, dst):
    sizes = dict(zip("NCDHW", (2, 3, 4, 5, 3), strict=True))
    x = rand(sized(src, sizes))
    y = lo.convert(x, src, dst)
    np.testing.assert_array_equal(y, oracle_permute(x, src, dst))
    assert np.shares_memory(y, x)  # a view
    np.testing.assert_array_equal(lo.convert(y, dst, src), x)


def test_convert_copy_is_contiguous_and_independent():
    x = rand((2, 3, 4, 5))
    y = lo.convert(x, "NCHW", "NHWC", copy=True)
    assert y.flags.c_contiguous and not np.shares_memory(x, y)
    np.testing.assert_array_equal(y, oracle_permute(x, "NCHW", "NHWC"))
    # copy=True of an identity conversion is still a copy
    z = lo.convert(x, "NCHW", "NCHW", copy=True)
    assert not np.shares_memory(x, z)


@pytest.mark.parametrize("ndim", [3, 4, 5])
def test_convert_aliases_resolve_by_rank(ndim):
    x = rand((2, 3) + (4,) * (ndim - 2))
    sp = SPATIAL[ndim - 2]
    np.testing.assert_array_equal(
        lo.convert(x, "channels_first", "channels_last"),
        oracle_permute(x, "NC" + sp, "N" + sp + "C"),
    )
    y = lo.convert(x, "channels_first", "N" + sp + "C")
    np.testing.assert_array_equal(lo.convert(y, "channels_last", "NC" + sp), x)


def test_convert_errors():
    x = np.zeros((2, 3, 4, 5))
    with pytest.raises(lo.LayoutError, match="layout 'NCW' has 3 axes but the array has 4"):
        lo.convert(x, "NCW", "NWC")
    with pytest.raises(lo.LayoutError, match="'NCHW' and 'NDHC' do not have the same letters"):
        lo.convert(x, "NCHW", "NDHC")
    with pytest.raises(lo.LayoutError, match="letter 'H' appears twice"):
        lo.convert(x, "NCHH", "NHWC")
    with pytest.raises(lo.LayoutError, match="at least one spatial axis, got rank 2"):
        lo.convert(np.zeros((2, 3)), "channels_first", "channels_last")


# -- convert_kernel: plain permutations ---------------------------------------------------------

KERNEL_2D = ["OIHW", "HWIO", "OHWI", "IHWO", "IOHW", "HWOI", "WHIO"]


@pytest.mark.parametrize(("src", "dst"), list(itertools.permutations(KERNEL_2D, 2)))
def test_convert_kernel_plain_pairs_2d(src, dst):
    sizes = {"O": 4, "I": 3, "H": 2, "W": 5}
    w = rand(sized(src, sizes))
    out = lo.convert_kernel(w, src, dst)
    np.testing.assert_array_equal(out, oracle_permute(w, src, dst))
    assert np.shares_memory(out, w)
    np.testing.assert_array_equal(lo.convert_kernel(out, dst, src), w)


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize(("src", "dst"), [("OI", "IO"), ("OI", "OI"), ("IO", "OI")])
@pytest.mark.parametrize("spatial_first", [False, True])
def test_convert_kernel_plain_pairs_1d_3d(n, src, dst, spatial_first):
    sp = SPATIAL[n]
    s = src + sp
    d = (sp + dst) if spatial_first else (dst + sp)
    sizes = {"O": 3, "I": 2, "D": 2, "H": 3, "W": 4}
    w = rand(sized(s, sizes))
    out = lo.convert_kernel(w, s, d)
    np.testing.assert_array_equal(out, oracle_permute(w, s, d))
    np.testing.assert_array_equal(lo.convert_kernel(out, d, s), w)


# -- convert_kernel: grouped --------------------------------------------------------------------


def oracle_split_groups(w_oihw: np.ndarray, groups: int) -> np.ndarray:
    """OIHW -> GOIHW with o = g * O_per + o' (loops)."""
    o_total, i, kh, kw = w_oihw.shape
    o_per = o_total // groups
    out = np.empty((groups, o_per, i, kh, kw))
    for g in range(groups):
        for o in range(o_per):
            out[g, o] = w_oihw[g * o_per + o]
    return out


def oracle_split_groups_transposed(w_iohw: np.ndarray, groups: int) -> np.ndarray:
    """IOHW (transposed kernel, I = all input channels) -> GIOHW with i = g * I_per + i'."""
    i_total, o, kh, kw = w_iohw.shape
    i_per = i_total // groups
    out = np.empty((groups, i_per, o, kh, kw))
    for g in range(groups):
        for i in range(i_per):
            for oo in range(o):
                out[g, i, oo] = w_iohw[g * i_per + i, oo]
    return out


@pytest.mark.parametrize("groups", [1, 2, 3])
def test_grouped_split_and_merge_matches_loops(groups):
    w = rand((6, 2, 3, 2))  # OIHW, O = 6
    goihw = lo.convert_kernel(w, "OIHW", "GOIHW", groups=groups)
    np.testing.assert_array_equal(goihw, oracle_split_groups(w, groups))
    np.testing.assert_array_equal(lo.convert_kernel(goihw, "GOIHW", "OIHW"), w)
    # through other letter orders on both sides
    hwio = oracle_permute(w, "OIHW", "HWIO")
    hwigo = lo.convert_kernel(hwio, "HWIO", "HWIGO", groups=groups)
    np.testing.assert_array_equal(
        hwigo, oracle_permute(oracle_split_groups(w, groups), "GOIHW", "HWIGO")
    )
    np.testing.assert_array_equal(lo.convert_kernel(hwigo, "HWIGO", "HWIO"), hwio)
    np.testing.assert_array_equal(lo.convert_kernel(hwigo, "HWIGO", "OIHW"), w)


@pytest.mark.parametrize("groups", [1, 2, 3])
def test_grouped_transposed_merges_into_i(groups):
    w = rand((6, 2, 3, 2))  # IOHW: I = C_in = 6, O = C_out / groups = 2
    giohw = lo.convert_kernel(w, "IOHW", "GIOHW", groups=groups, transposed=True)
    np.testing.assert_array_equal(giohw, oracle_split_groups_transposed(w, groups))
    np.testing.assert_array_equal(
        lo.convert_kernel(giohw, "GIOHW", "IOHW", transposed=True), w
    )
    # to TF's HWOI keeps I whole
    hwoi = lo.convert_kernel(giohw, "GIOHW", "HWOI", transposed=True)
    np.testing.assert_array_equal(hwoi, oracle_permute(w, "IOHW", "HWOI"))


@pytest.mark.parametrize("n", [1, 3])
def test_grouped_1d_3d(n):
    sp = SPATIAL[n]
    w = rand((4, 3) + (2,) * n)  # O = 4, I = 3
    g = lo.convert_kernel(w, "OI" + sp, "GOI" + sp, groups=2)
    assert g.shape == (2, 2, 3) + (2,) * n
    for gg, o in itertools.product(range(2), range(2)):
        np.testing.assert_array_equal(g[gg, o], w[gg * 2 + o])
    np.testing.assert_array_equal(lo.convert_kernel(g, "GOI" + sp, "OI" + sp), w)
    back = lo.convert_kernel(g, "GOI" + sp, sp + "IO")
    np.testing.assert_array_equal(back, oracle_permute(w, "OI" + sp, sp + "IO"))


def test_grouped_errors():
    w = rand((6, 2, 3, 3))
    with pytest.raises(lo.LayoutError, match=r"splits O=6 into groups; pass `groups=`"):
        lo.convert_kernel(w, "OIHW", "GOIHW")
    with pytest.raises(lo.LayoutError, match=r"`groups`=4 does not divide O=6"):
        lo.convert_kernel(w, "OIHW", "GOIHW", groups=4)
    with pytest.raises(lo.LayoutError, match=r"`groups`=4 does not divide I=6"):
        lo.convert_kernel(w.swapaxes(0, 1), "OIHW", "GOIHW", groups=4, transposed=True)
    with pytest.raises(lo.LayoutError, match=r"splits I=2 into groups.*transposed"):
        lo.convert_kernel(w, "OIHW", "GOIHW", transposed=True)
    g = rand((2, 3, 2, 3, 3))
    with pytest.raises(lo.LayoutError, match=r"`groups`=3 but the 'GOIHW' kernel has G=2"):
        lo.convert_kernel(g, "GOIHW", "OIHW", groups=3)
    with pytest.raises(ValueError, match=r"`groups` must be >= 1, got 0"):
        lo.convert_kernel(w, "OIHW", "GOIHW", groups=0)
    with pytest.raises(TypeError, match=r"`groups` must be an int"):
        lo.convert_kernel(w, "OIHW", "GOIHW", groups=2.0)


# -- convert_kernel: depthwise ------------------------------------------------------------------


def oracle_torch_dw_to_hwcm(w: np.ndarray, channels: int) -> np.ndarray:
    """(C*M, 1, kh, kw) -> (kh, kw, C, M) with o = c * M + m (loops)."""
    o_total, _, kh, kw = w.shape
    mult = o_total // channels
    out = np.empty((kh, kw, channels, mult))
    for y, x, c, m in itertools.product(range(kh), range(kw), range(channels), range(mult)):
        out[y, x, c, m] = w[c * mult + m, 0, y, x]
    return out


@pytest.mark.parametrize(("channels", "mult"), [(3, 2), (1, 4), (4, 1)])
def test_depthwise_torch_tf_matches_loops(channels, mult):
    w = rand((channels * mult, 1, 3, 2))
    hwcm = lo.convert_kernel(w, "OIHW", "HWCM", groups=channels)
    np.testing.assert_array_equal(hwcm, oracle_torch_dw_to_hwcm(w, channels))
    np.testing.assert_array_equal(lo.convert_kernel(hwcm, "HWCM", "OIHW"), w)
    # HWCM -> HWIO (Flax's depthwise: I = 1, O = C*M)
    hwio = lo.convert_kernel(hwcm, "HWCM", "HWIO")
    np.testing.assert_array_equal(hwio, oracle_permute(w, "OIHW", "HWIO"))
    # depthwise as a grouped kernel: G = C, O = M, I = 1
    goihw = lo.convert_kernel(hwcm, "HWCM", "GOIHW")
    np.testing.assert_array_equal(goihw, oracle_split_groups(w, channels))
    np.testing.assert_array_equal(lo.convert_kernel(goihw, "GOIHW", "HWCM"), hwcm)
    # other letter orders of C, M
    mchw = lo.convert_kernel(w, "OIHW", "MCHW", groups=channels)
    np.testing.assert_array_equal(mchw, oracle_permute(hwcm, "HWCM", "MCHW"))


@pytest.mark.parametrize("n", [1, 3])
def test_depthwise_1d_3d(n):
    sp = SPATIAL[n]
    w = rand((6, 1) + (2,) * n)  # C = 2, M = 3
    cm = lo.convert_kernel(w, "OI" + sp, sp + "CM", groups=2)
    assert cm.shape == (2,) * n + (2, 3)
    for c, m in itertools.product(range(2), range(3)):
        np.testing.assert_array_equal(cm[..., c, m], w[c * 3 + m, 0])
    np.testing.assert_array_equal(lo.convert_kernel(cm, sp + "CM", "OI" + sp), w)


def test_depthwise_errors():
    w = rand((6, 1, 3, 3))
    with pytest.raises(lo.LayoutError, match=r"splits O=6 into C channels.*pass `groups=` C"):
        lo.convert_kernel(w, "OIHW", "HWCM")
    with pytest.raises(lo.LayoutError, match=r"`groups`=4 \(C\) does not divide O=6"):
        lo.convert_kernel(w, "OIHW", "HWCM", groups=4)
    with pytest.raises(lo.LayoutError, match=r"depthwise kernel has I=1.*got I=2"):
        lo.convert_kernel(rand((6, 2, 3, 3)), "OIHW", "HWCM", groups=3)
    with pytest.raises(lo.LayoutError, match=r"`groups`=2 but the 'HWCM' kernel has C=3"):
        lo.convert_kernel(rand((3, 3, 3, 2)), "HWCM", "OIHW", groups=2)
    with pytest.raises(lo.LayoutError, match=r"'HWCM' is a depthwise .* no transposed form"):
        lo.convert_kernel(rand((3, 3, 3, 2)), "HWCM", "OIHW", transposed=True)


def test_convert_kernel_layout_errors():
    w = rand((4, 3, 2, 2))
    with pytest.raises(lo.LayoutError, match=r"source layout 'NCHW' is an activation layout"):
        lo.convert_kernel(w, "NCHW", "HWIO")
    with pytest.raises(lo.LayoutError, match=r"destination layout 'NHWC' is an activation"):
        lo.convert_kernel(w, "OIHW", "NHWC")
    with pytest.raises(lo.LayoutError, match=r"layout 'OIW' has 3 axes but the kernel has 4"):
        lo.convert_kernel(w, "OIW", "WIO")
    with pytest.raises(lo.LayoutError, match=r"different spatial letters \('HW' vs 'YX'\)"):
        lo.convert_kernel(w, "OIHW", "YXIO")
    with pytest.raises(lo.LayoutError, match=r"letter 'H' appears twice"):
        lo.convert_kernel(w, "OIHH", "HWIO")


@settings(max_examples=30, deadline=None)
@given(
    groups=st.integers(1, 3),
    o_per=st.integers(1, 3),
    i_per=st.integers(1, 3),
    n=st.integers(1, 3),
    transposed=st.booleans(),
    data=st.data(),
)
def test_grouped_round_trip_any_letter_order(groups, o_per, i_per, n, transposed, data):
    sp = SPATIAL[n]
    grouped = "".join(data.draw(st.permutations("GOI" + sp)))
    plain = "".join(data.draw(st.permutations("OI" + sp)))
    sizes = {"G": groups, "O": o_per, "I": i_per, "D": 2, "H": 1, "W": 3}
    w = rand(sized(grouped, sizes))
    merged = lo.convert_kernel(w, grouped, plain, transposed=transposed)
    merged_letter = "I" if transposed else "O"
    sizes_plain = dict(sizes, **{merged_letter: groups * sizes[merged_letter]})
    assert merged.shape == sized(plain, sizes_plain)
    back = lo.convert_kernel(merged, plain, grouped, groups=groups, transposed=transposed)
    np.testing.assert_array_equal(back, w)
    # oracle: the element at (g, o', i') sits at the merged index g * per + local
    canon = oracle_permute(w, grouped, "GOI" + sp)
    canon_plain = oracle_permute(np.asarray(merged), plain, "OI" + sp)
    for g, o, i in itertools.product(range(groups), range(o_per), range(i_per)):
        if transposed:
            np.testing.assert_array_equal(canon_plain[o, g * i_per + i], canon[g, o, i])
        else:
            np.testing.assert_array_equal(canon_plain[g * o_per + o, i], canon[g, o, i])


# -- convert_weight and the framework table -----------------------------------------------------

EXPECTED_2D = {
    # framework: (activation, conv, depthwise, conv_transpose, transposed kernel flipped)
    "torch": ("NCHW", "OIHW", "OIHW", "IOHW", False),
    "tf": ("NHWC", "HWIO", "HWCM", "HWOI", False),
    "jax": ("NCHW", "OIHW", "OIHW", "HWIO", True),
    "flax": ("NHWC", "HWIO", "HWIO", "HWIO", True),
    "onnx": ("NCHW", "OIHW", "OIHW", "IOHW", False),
    "tflite": ("NHWC", "OHWI", "IHWO", "OHWI", False),
}


def test_framework_table_contents():
    assert set(lo.FRAMEWORKS) == set(EXPECTED_2D)
    for name, (act, conv, dw, ct, flipped) in EXPECTED_2D.items():
        fw = lo.FRAMEWORKS[name]
        assert (fw.activation, fw.conv, fw.depthwise, fw.conv_transpose) == (act, conv, dw, ct)
        assert fw.transpose_flipped is flipped
    assert lo.FRAMEWORKS["jax"].conv_transpose_activation == "NHWC"
    with pytest.raises(TypeError):
        lo.FRAMEWORKS["torch"] = None  # read-only mapping


def torch_sizes(op: str, n: int) -> dict[str, int]:
    # C_in = 6, C_out = 4 for conv/conv_transpose; depthwise C = 3, M = 2
    base = {"D": 2, "H": 3, "W": 2}
    if op == "conv":
        return dict(base, O=4, I=6)
    if op == "conv_transpose":
        return dict(base, I=6, O=4)
    return dict(base, O=6, I=1, C=3, M=2)


@pytest.mark.parametrize("op", ["conv", "depthwise", "conv_transpose"])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_convert_weight_every_pair(op, n):
    sp = SPATIAL[n]
    sizes = torch_sizes(op, n)
    names = list(EXPECTED_2D)
    torch_layout = {"conv": "OI", "depthwise": "OI", "conv_transpose": "IO"}[op] + sp
    w_torch = rand(sized(torch_layout, sizes), seed=n)
    groups = 3 if op == "depthwise" else None
    col = {"conv": 1, "depthwise": 2, "conv_transpose": 3}[op]
    # each framework's weight built by the oracle from torch's
    native = {}
    for name in names:
        spec = EXPECTED_2D[name][col].replace("HW", sp)
        if spec.endswith("CM"):  # out[..., c, m] = w[c * M + m, 0, ...]
            a = np.empty(tuple(sizes[c] for c in sp) + (3, 2))
            for c, m in itertools.product(range(3), range(2)):
                a[..., c, m] = w_torch[c * 2 + m, 0]
        else:
            a = oracle_permute(w_torch, torch_layout, spec)
        if op == "conv_transpose" and EXPECTED_2D[name][4]:
            a = np.flip(a, axis=tuple(spec.index(c) for c in sp))
        native[name] = a
    for src, dst in itertools.product(names, names):
        out = lo.convert_weight(native[src], op, src, dst, groups=groups)
        np.testing.assert_array_equal(out, native[dst], err_msg=f"{op} {src}->{dst}")


def test_convert_weight_flax_flip_is_its_own_inverse_and_named_in_docs():
    w = np.arange(2 * 3 * 2 * 3.0).reshape(2, 3, 2, 3)  # torch IOHW
    flax = lo.convert_weight(w, "conv_transpose", "torch", "flax")
    assert flax.shape == (2, 3, 2, 3)  # HWIO
    for i, o, y, x in np.ndindex(w.shape):
        assert flax[1 - y, 2 - x, i, o] == w[i, o, y, x]
    np.testing.assert_array_equal(lo.convert_weight(flax, "conv_transpose", "flax", "torch"), w)
    # tf and torch agree on the flip: no reversal between them
    tf = lo.convert_weight(w, "conv_transpose", "torch", "tf")
    for i, o, y, x in np.ndindex(w.shape):
        assert tf[y, x, o, i] == w[i, o, y, x]
    # jax and flax share the unflipped convention: a plain permutation between them
    np.testing.assert_array_equal(lo.convert_weight(flax, "conv_transpose", "flax", "jax"), flax)


def test_convert_weight_errors():
    w = rand((4, 6, 3, 3))
    with pytest.raises(ValueError, match=r"unknown framework 'keras'; expected one of torch"):
        lo.convert_weight(w, "conv", "keras", "tf")
    with pytest.raises(ValueError, match=r"unknown op 'conv2d'"):
        lo.convert_weight(w, "conv2d", "torch", "tf")
    with pytest.raises(lo.LayoutError, match=r"rank 3, 4 or 5.*got rank 2"):
        lo.convert_weight(rand((4, 6)), "conv", "torch", "tf")
    with pytest.raises(lo.LayoutError, match=r"depthwise weight in torch's 'OIHW' .* got I=6"):
        lo.convert_weight(w, "depthwise", "torch", "tf", groups=4)
    with pytest.raises(lo.LayoutError, match=r"pass `groups=` C"):
        lo.convert_weight(rand((6, 1, 3, 3)), "depthwise", "torch", "tf")
    with pytest.raises(ValueError, match=r"flax's transposed convolution takes no groups"):
        lo.convert_weight(w, "conv_transpose", "torch", "flax", groups=2)
    with pytest.raises(lo.LayoutError, match=r"`groups`=4 does not divide O=6 of the conv weight "
                                             r"in tf's 'HWIO' layout"):
        lo.convert_weight(rand((3, 3, 2, 6)), "conv", "tf", "torch", groups=4)
    with pytest.raises(lo.LayoutError, match=r"`groups`=3 does not divide I=4 of the "
                                             r"conv_transpose weight in torch's 'IOHW'"):
        lo.convert_weight(w, "conv_transpose", "torch", "onnx", groups=3)
    # torch <-> onnx grouped transposed kernels are plain (same layout)
    out = lo.convert_weight(w, "conv_transpose", "torch", "onnx", groups=2)
    np.testing.assert_array_equal(out, w)


def test_framework_layout():
    assert lo.framework_layout("tflite", "depthwise", 2) == "IHWO"
    assert lo.framework_layout("jax", "conv_transpose_activation", 1) == "NWC"
    with pytest.raises(ValueError, match="unknown op 'pool'"):
        lo.framework_layout("torch", "pool")
    with pytest.raises(ValueError, match="unknown framework 'mxnet'"):
        lo.framework_layout("mxnet", "conv")


# numerical cross-checks against PyTorch (guarded): the converted weights compute the same
# function under the other framework's convention, written here as plain loops.


def loop_conv_nhwc_hwio(x, w, groups=1):
    """Valid, stride-1 grouped conv: x NHWC, w HWIO with I = C_in / groups (TF/Flax)."""
    n, h, wd, cin = x.shape
    kh, kw, i_per, cout = w.shape
    o_per = cout // groups
    out = np.zeros((n, h - kh + 1, wd - kw + 1, cout))
    for b, y, xx, o in np.ndindex(out.shape):
        g = o // o_per
        patch = x[b, y:y + kh, xx:xx + kw, g * i_per:(g + 1) * i_per]
        out[b, y, xx, o] = np.sum(patch * w[:, :, :, o])
    return out


def loop_depthwise_nhwc_hwcm(x, w):
    n, h, wd, c = x.shape
    kh, kw, _, m = w.shape
    out = np.zeros((n, h - kh + 1, wd - kw + 1, c * m))
    for b, y, xx, cc, mm in itertools.product(
        range(n), range(out.shape[1]), range(out.shape[2]), range(c), range(m)
    ):
        out[b, y, xx, cc * m + mm] = np.sum(x[b, y:y + kh, xx:xx + kw, cc] * w[:, :, cc, mm])
    return out


def loop_lax_conv_transpose_nhwc_hwio(x, w, stride):
    """jax.lax.conv_transpose(..., padding='VALID', transpose_kernel=False) semantics:
    dilate x by ``stride``, pad by k - 1 on both sides, correlate with w as stored."""
    n, h, wd, cin = x.shape
    kh, kw, _, cout = w.shape
    dh, dw = (h - 1) * stride + 1, (wd - 1) * stride + 1
    z = np.zeros((n, dh + 2 * (kh - 1), dw + 2 * (kw - 1), cin))
    z[:, kh - 1:kh - 1 + dh:stride, kw - 1:kw - 1 + dw:stride] = x
    out = np.zeros((n, z.shape[1] - kh + 1, z.shape[2] - kw + 1, cout))
    for b, y, xx, o in np.ndindex(out.shape):
        out[b, y, xx, o] = np.sum(z[b, y:y + kh, xx:xx + kw, :] * w[:, :, :, o])
    return out


def test_convert_weight_conv_and_depthwise_compute_the_same_as_torch():
    torch = pytest.importorskip("torch")
    x = rand((2, 6, 5, 4), seed=1)
    w = rand((4, 3, 3, 2), seed=2)  # groups = 2
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), groups=2).numpy()
    hwio = lo.convert_weight(w, "conv", "torch", "tf")
    got = loop_conv_nhwc_hwio(x.transpose(0, 2, 3, 1), hwio, groups=2)
    np.testing.assert_allclose(got.transpose(0, 3, 1, 2), ref, rtol=1e-12, atol=1e-12)

    xd = rand((1, 3, 5, 4), seed=3)
    wd = rand((6, 1, 2, 3), seed=4)  # C = 3, M = 2
    ref = torch.nn.functional.conv2d(torch.from_numpy(xd), torch.from_numpy(wd), groups=3)
    hwcm = lo.convert_weight(wd, "depthwise", "torch", "tf", groups=3)
    got = loop_depthwise_nhwc_hwcm(xd.transpose(0, 2, 3, 1), hwcm)
    np.testing.assert_allclose(got.transpose(0, 3, 1, 2), ref.numpy(), rtol=1e-12, atol=1e-12)
    # Flax's depthwise (HWIO, I = 1, feature_group_count = C) is a grouped conv
    flax = lo.convert_weight(hwcm, "depthwise", "tf", "flax")
    got = loop_conv_nhwc_hwio(xd.transpose(0, 2, 3, 1), flax, groups=3)
    np.testing.assert_allclose(got.transpose(0, 3, 1, 2), ref.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stride", [1, 2])
def test_convert_weight_flax_conv_transpose_flip_matches_torch(stride):
    torch = pytest.importorskip("torch")
    x = rand((1, 2, 3, 4), seed=5)
    w = rand((2, 3, 2, 3), seed=6)  # torch ConvTranspose2d(2, 3, (2, 3)) weight, IOHW
    ref = torch.nn.functional.conv_transpose2d(
        torch.from_numpy(x), torch.from_numpy(w), stride=stride
    ).numpy()
    for fw in ("flax", "jax"):
        k = lo.convert_weight(w, "conv_transpose", "torch", fw)
        got = loop_lax_conv_transpose_nhwc_hwio(x.transpose(0, 2, 3, 1), k, stride)
        np.testing.assert_allclose(got.transpose(0, 3, 1, 2), ref, rtol=1e-12, atol=1e-12)
    # without the flip it would not match (the test can fail)
    unflipped = np.asarray(w).transpose(2, 3, 0, 1)
    bad = loop_lax_conv_transpose_nhwc_hwio(x.transpose(0, 2, 3, 1), unflipped, stride)
    assert not np.allclose(bad.transpose(0, 3, 1, 2), ref)


# -- padding helpers ----------------------------------------------------------------------------


def test_pads_from_onnx():
    assert lo.pads_from_onnx([1, 2, 3, 4]) == ((1, 3), (2, 4))
    assert lo.pads_from_onnx((0, 5)) == ((0, 5),)
    assert lo.pads_from_onnx(np.array([1, 2, 3, 4, 5, 6])) == ((1, 4), (2, 5), (3, 6))
    with pytest.raises(ValueError, match=r"2 ints per spatial axis .* got 3"):
        lo.pads_from_onnx([1, 2, 3])
    with pytest.raises(ValueError, match=r"got 0"):
        lo.pads_from_onnx([])
    with pytest.raises(ValueError, match=r"padding must be >= 0"):
        lo.pads_from_onnx([1, -1])
    with pytest.raises(TypeError, match=r"`pads` must be a sequence of ints"):
        lo.pads_from_onnx([1.5, 2])


def test_pads_from_torch():
    assert lo.pads_from_torch((1, 2, 3, 4), "NCHW") == ((3, 4), (1, 2))
    assert lo.pads_from_torch((1, 2), "NCHW") == ((0, 0), (1, 2))
    assert lo.pads_from_torch((0, 0, 1, 2, 3, 4), "NHWC") == ((3, 4), (1, 2))
    assert lo.pads_from_torch((0, 0, 1, 2), "NHWC") == ((0, 0), (1, 2))
    assert lo.pads_from_torch((1, 2, 3, 4, 5, 6), "NCDHW") == ((5, 6), (3, 4), (1, 2))
    assert lo.pads_from_torch((1, 2), "NCW") == ((1, 2),)
    assert lo.pads_from_torch((1, 2, 3, 4, 0, 0, 0, 0), "NCHW") == ((3, 4), (1, 2))
    with pytest.raises(ValueError, match=r"pads the C axis of 'NHWC' by \(1, 1\)"):
        lo.pads_from_torch((1, 1, 2, 2), "NHWC")
    with pytest.raises(ValueError, match=r"pads the C axis of 'NCHW' by \(0, 1\)"):
        lo.pads_from_torch((0, 0, 0, 0, 0, 1), "NCHW")
    with pytest.raises(ValueError, match=r"pads the N axis"):
        lo.pads_from_torch((0, 0, 0, 0, 0, 0, 1, 0), "NCHW")
    with pytest.raises(ValueError, match=r"even number of ints, at most 2 per axis"):
        lo.pads_from_torch((1, 2, 3), "NCHW")
    with pytest.raises(ValueError, match=r"at most 2 per axis of 'NCW' \(6\), got 8"):
        lo.pads_from_torch((0,) * 8, "NCW")
    with pytest.raises(ValueError, match=r"padding must be >= 0"):
        lo.pads_from_torch((-1, 0), "NCHW")
    with pytest.raises(lo.LayoutError, match=r"'channels_last' needs a rank"):
        lo.pads_from_torch((1, 1), "channels_last")
    with pytest.raises(lo.LayoutError, match=r"'OIHW' is not an activation layout"):
        lo.pads_from_torch((1, 1), "OIHW")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_pads_from_torch_agrees_with_f_pad(layout):
    torch = pytest.importorskip("torch")
    x = rand((1, 2, 3, 4) if layout == "NCHW" else (1, 3, 4, 2))
    pad = (1, 2, 3, 0) if layout == "NCHW" else (0, 0, 1, 2, 3, 0)
    ref = torch.nn.functional.pad(torch.from_numpy(x), pad).numpy()
    pairs = dict(zip("HW", lo.pads_from_torch(pad, layout), strict=True))
    width = [pairs.get(c, (0, 0)) for c in layout]
    np.testing.assert_array_equal(np.pad(x, width), ref)


def test_pads_from_tf():
    assert lo.pads_from_tf([[0, 0], [1, 2], [3, 4], [0, 0]], "NHWC") == ((1, 2), (3, 4))
    assert lo.pads_from_tf([[0, 0], [0, 0], [1, 2], [3, 4]], "NCHW") == ((1, 2), (3, 4))
    assert lo.pads_from_tf(np.array([[0, 0], [5, 6], [0, 0]]), "NWC") == ((5, 6),)
    with pytest.raises(ValueError, match=r"pads the C axis of 'NHWC' by \(0, 1\)"):
        lo.pads_from_tf([[0, 0], [1, 2], [3, 4], [0, 1]], "NHWC")
    with pytest.raises(ValueError, match=r"pads the N axis"):
        lo.pads_from_tf([[1, 0], [1, 2], [3, 4], [0, 0]], "NHWC")
    with pytest.raises(ValueError, match=r"4 \[begin, end\] pairs.*got shape \(2, 2\)"):
        lo.pads_from_tf([[1, 2], [3, 4]], "NHWC")
    with pytest.raises(ValueError, match=r"padding must be >= 0"):
        lo.pads_from_tf([[0, 0], [-1, 2], [3, 4], [0, 0]], "NHWC")


# -- convert_indices ----------------------------------------------------------------------------


def loop_max_pool_indices_nchw(x, k, s):
    """Our max-pool indices (flat row-major within the plane) for NCHW x, no padding."""
    n, c, h, w = x.shape
    oh, ow = (h - k[0]) // s[0] + 1, (w - k[1]) // s[1] + 1
    idx = np.zeros((n, c, oh, ow), dtype=np.int64)
    for b, ch, y, xx in np.ndindex(idx.shape):
        best = None
        for dy, dx in itertools.product(range(k[0]), range(k[1])):
            yy, xxx = y * s[0] + dy, xx * s[1] + dx
            if best is None or x[b, ch, yy, xxx] > best:
                best = x[b, ch, yy, xxx]
                idx[b, ch, y, xx] = yy * w + xxx
    return idx


def test_convert_indices_by_hand():
    # x of shape (N=2, C=3, H=4, W=5); one output cell per plane holding index 13 = (2, 3)
    idx = np.full((2, 3, 1, 1), 13)
    onnx0 = lo.convert_indices(idx, (2, 3, 4, 5), layout="NCHW", to="onnx")
    onnx1 = lo.convert_indices(idx, (2, 3, 4, 5), layout="NCHW", to="onnx", storage_order=1)
    tf = lo.convert_indices(idx, (2, 3, 4, 5), layout="NCHW", to="tf")
    for n, c in np.ndindex(2, 3):
        assert onnx0[n, c, 0, 0] == (n * 3 + c) * 20 + 2 * 5 + 3
        assert onnx1[n, c, 0, 0] == (n * 3 + c) * 20 + 2 + 3 * 4
        assert tf[n, c, 0, 0] == (2 * 5 + 3) * 3 + c
    assert onnx0.dtype == np.int64
    # same in NHWC: the indices array is in NHWC and so is the result
    idx_l = np.full((2, 1, 1, 3), 13)
    tf_l = lo.convert_indices(idx_l, (2, 4, 5, 3), layout="NHWC", to="tf")
    np.testing.assert_array_equal(tf_l, tf.transpose(0, 2, 3, 1))
    on_l = lo.convert_indices(idx_l, (2, 4, 5, 3), layout="channels_last", to="onnx",
                              storage_order=1)
    np.testing.assert_array_equal(on_l, onnx1.transpose(0, 2, 3, 1))


def test_convert_indices_3d_and_1d_by_hand():
    idx = np.array([[[[[7]]]]])  # NCDHW, x (1, 1, 2, 3, 4): 7 = (0, 1, 3)
    assert lo.convert_indices(idx, (1, 1, 2, 3, 4), layout="NCDHW", to="onnx").item() == 7
    # column major: d + D * (h + H * w) = 0 + 2 * (1 + 3 * 3)
    assert lo.convert_indices(idx, (1, 1, 2, 3, 4), layout="NCDHW", to="onnx",
                              storage_order=1).item() == 20
    idx1 = np.array([[[2, 4]]])  # NWC output (N=1, W=1, C=2); x (1, 5, 2)
    out = lo.convert_indices(idx1, (1, 5, 2), layout="NWC", to="tf")
    np.testing.assert_array_equal(out.ravel(), [2 * 2 + 0, 4 * 2 + 1])


def test_convert_indices_errors():
    idx = np.zeros((1, 2, 1, 1), dtype=np.int64)
    with pytest.raises(ValueError, match=r"`to` must be one of onnx, tf, got 'torch'"):
        lo.convert_indices(idx, (1, 2, 3, 3), layout="NCHW", to="torch")
    with pytest.raises(ValueError, match=r"`storage_order` must be 0 or 1, got 2"):
        lo.convert_indices(idx, (1, 2, 3, 3), layout="NCHW", to="onnx", storage_order=2)
    with pytest.raises(ValueError, match=r"`storage_order`=1 is an ONNX option"):
        lo.convert_indices(idx, (1, 2, 3, 3), layout="NCHW", to="tf", storage_order=1)
    with pytest.raises(ValueError, match=r"`indices` has C=2 but `x_shape` has C=3"):
        lo.convert_indices(idx, (1, 3, 3, 3), layout="NCHW", to="onnx")
    with pytest.raises(ValueError, match=r"must lie in \[0, 9\).*\[9, 9\]"):
        lo.convert_indices(idx + 9, (1, 2, 3, 3), layout="NCHW", to="onnx")
    with pytest.raises(TypeError, match=r"must be integers, got dtype float64"):
        lo.convert_indices(idx * 1.0, (1, 2, 3, 3), layout="NCHW", to="onnx")
    with pytest.raises(lo.LayoutError, match=r"'NCHW' has 4 axes but the `indices` array has 3"):
        lo.convert_indices(idx[0], (1, 2, 3, 3), layout="NCHW", to="onnx")
    with pytest.raises(lo.LayoutError, match=r"'HWIO' is not an activation layout"):
        lo.convert_indices(idx, (1, 2, 3, 3), layout="HWIO", to="onnx")


@pytest.mark.parametrize("storage_order", [0, 1])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_convert_indices_matches_onnx_reference(storage_order, layout):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    x = np.random.default_rng(7).permutation(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    x = x.astype(np.float32)
    k, s = (2, 3), (2, 2)
    node = helper.make_node(
        "MaxPool", ["X"], ["Y", "I"], kernel_shape=list(k), strides=list(s),
        storage_order=storage_order,
    )
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 3, 2, 1]),
         helper.make_tensor_value_info("I", TensorProto.INT64, [2, 3, 2, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    onnx.checker.check_model(model)
    _, ref_idx = ReferenceEvaluator(model).run(None, {"X": x})
    ours = loop_max_pool_indices_nchw(x, k, s)
    if layout == "NHWC":
        got = lo.convert_indices(ours.transpose(0, 2, 3, 1), x.transpose(0, 2, 3, 1).shape,
                                 layout="NHWC", to="onnx", storage_order=storage_order)
        got = got.transpose(0, 3, 1, 2)
    else:
        got = lo.convert_indices(ours, x.shape, layout="NCHW", to="onnx",
                                 storage_order=storage_order)
    np.testing.assert_array_equal(got, ref_idx)


def test_convert_indices_tf_formula_by_loop():
    x = np.random.default_rng(3).permutation(2 * 4 * 6 * 3).reshape(2, 3, 4, 6).astype(float)
    ours = loop_max_pool_indices_nchw(x, (2, 2), (2, 2))
    got = lo.convert_indices(ours, x.shape, layout="NCHW", to="tf")
    for b, c, y, xx in np.ndindex(ours.shape):
        # the winner's position [b, yy, xxx, c] in the NHWC tensor
        yy, xxx = divmod(int(ours[b, c, y, xx]), 6)
        assert got[b, c, y, xx] == (yy * 6 + xxx) * 3 + c
        assert x[b, c, yy, xxx] == x[b, c, 2 * y:2 * y + 2, 2 * xx:2 * xx + 2].max()


# -- verified against this library's own convolution ops ---------------------------------------
# The converted weights, used in each framework's layouts through `kernel_layout=`, give the
# same result as the PyTorch-layout op. Skipped while an op does not exist yet.


def _need(*names):
    for name in names:
        if not hasattr(lo, name):
            pytest.skip(f"lo.{name} does not exist yet")


def _in_layout(x_nchw, layout):
    return lo.convert(x_nchw, "NCHW", layout)


@pytest.mark.parametrize("fw", list(EXPECTED_2D))
@pytest.mark.parametrize("groups", [1, 2])
def test_converted_conv_weights_compute_the_same_conv(fw, groups):
    _need("conv")
    x = rand((2, 4, 7, 6), seed=11)
    w = rand((6, 4 // groups, 3, 2), seed=12)  # torch OIHW
    ref = lo.conv(x, w, groups=groups, stride=(2, 1), padding=1)
    act = lo.FRAMEWORKS[fw].activation
    k = lo.convert_weight(w, "conv", "torch", fw)
    out = lo.conv(_in_layout(x, act), k, groups=groups, stride=(2, 1), padding=1, layout=act,
                  kernel_layout=lo.framework_layout(fw, "conv"))
    np.testing.assert_allclose(lo.convert(out, act, "NCHW"), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fw", list(EXPECTED_2D))
def test_converted_depthwise_weights_compute_the_same_conv(fw):
    _need("conv", "depthwise_conv2d")
    x = rand((1, 3, 6, 5), seed=13)
    w = rand((6, 1, 3, 3), seed=14)  # C = 3, M = 2
    ref = lo.depthwise_conv2d(x, w, padding=1)
    act = lo.FRAMEWORKS[fw].activation
    k = lo.convert_weight(w, "depthwise", "torch", fw, groups=3)
    kl = lo.framework_layout(fw, "depthwise")
    if kl.kind == "depthwise_kernel":
        out = lo.depthwise_conv2d(_in_layout(x, act), k, padding=1, layout=act, kernel_layout=kl)
    else:  # a grouped conv with groups = C, as torch / lax / flax / onnx / tflite run it
        out = lo.conv(_in_layout(x, act), k, groups=3, padding=1, layout=act, kernel_layout=kl)
    np.testing.assert_allclose(lo.convert(out, act, "NCHW"), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fw", list(EXPECTED_2D))
@pytest.mark.parametrize("stride", [1, 2])
def test_converted_conv_transpose_weights_compute_the_same(fw, stride):
    _need("conv", "conv_transpose")
    x = rand((1, 3, 4, 5), seed=15)
    w = rand((3, 2, 3, 2), seed=16)  # torch ConvTranspose2d(3, 2, (3, 2)): IOHW
    ref = lo.conv_transpose(x, w, stride=stride)
    fwk = lo.FRAMEWORKS[fw]
    act = fwk.conv_transpose_activation
    k = lo.convert_weight(w, "conv_transpose", "torch", fw)
    kl = lo.framework_layout(fw, "conv_transpose")
    xa = _in_layout(x, act)
    if fwk.transpose_flipped:
        # lax.conv_transpose(transpose_kernel=False): correlate the stride-dilated input,
        # padded by k - 1, with the kernel as stored (I = the input's channels)
        sp = [act.index(c) for c in "HW"]
        shape = list(xa.shape)
        for ax in sp:
            shape[ax] = (shape[ax] - 1) * stride + 1
        z = np.zeros(shape)
        sl = [slice(None)] * xa.ndim
        for ax in sp:
            sl[ax] = slice(None, None, stride)
        z[tuple(sl)] = xa
        out = lo.conv(z, k, padding=((2, 2), (1, 1)), layout=act, kernel_layout=kl)
    else:
        out = lo.conv_transpose(xa, k, stride=stride, layout=act, kernel_layout=kl)
    np.testing.assert_allclose(lo.convert(out, act, "NCHW"), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("storage_order", [0, 1])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_max_pool_indices_converted_match_onnx_reference(storage_order, layout):
    _need("max_pool")
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    x = np.random.default_rng(8).permutation(2 * 3 * 5 * 6).reshape(2, 3, 5, 6)
    x = x.astype(np.float32)
    node = helper.make_node("MaxPool", ["X"], ["Y", "I"], kernel_shape=[2, 3], strides=[2, 2],
                            storage_order=storage_order)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 3, 2, 2]),
         helper.make_tensor_value_info("I", TensorProto.INT64, [2, 3, 2, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    _, ref_idx = ReferenceEvaluator(model).run(None, {"X": x})
    xa = lo.convert(x, "NCHW", layout)
    _, idx = lo.max_pool(xa, (2, 3), stride=2, return_indices=True, layout=layout)
    got = lo.convert_indices(idx, xa.shape, layout=layout, to="onnx",
                             storage_order=storage_order)
    np.testing.assert_array_equal(lo.convert(got, layout, "NCHW"), ref_idx)
