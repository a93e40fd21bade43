"""Every ONNX backend node case of ConvTranspose, run channels-first and channels-last."""

from __future__ import annotations

import numpy as np
import pytest

import layoutops as lo

onnx = pytest.importorskip("onnx")
from onnx import helper  # noqa: E402
from onnx_node_cases import collect  # noqa: E402

pytestmark = pytest.mark.usefixtures("both_small_paths")

CASES = collect("convtranspose", "ConvTranspose")

# the node cases onnx ships (checked so that a silently empty collection cannot pass)
EXPECTED_NAMES = {
    "test_convtranspose",
    "test_convtranspose_1d",
    "test_convtranspose_3d",
    "test_convtranspose_output_shape",
    "test_convtranspose_pad",
    "test_convtranspose_kernel_shape",
    "test_convtranspose_pads",
    "test_convtranspose_dilations",
    "test_convtranspose_autopad_same",
    "test_convtranspose_group_2",
    "test_convtranspose_group_2_image_3",
}


def test_all_onnx_cases_collected():
    assert EXPECTED_NAMES <= {name for name, *_ in CASES}


def to_kwargs(node, n_spatial):
    """ONNX attributes -> our keyword arguments."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    kwargs = {}
    for key in ("strides", "dilations", "output_padding", "output_shape"):
        if key in attrs:
            name = {"strides": "stride", "dilations": "dilation"}.get(key, key)
            kwargs[name] = tuple(int(v) for v in attrs[key])
    if "group" in attrs:
        kwargs["groups"] = int(attrs["group"])
    if "pads" in attrs:  # ONNX [b0, b1, ..., e0, e1, ...] -> (begin, end) pairs
        pads = [int(v) for v in attrs["pads"]]
        kwargs["padding"] = tuple(zip(pads[:n_spatial], pads[n_spatial:], strict=True))
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad != "NOTSET":
        kwargs["padding"] = {"SAME_UPPER": "same", "SAME_LOWER": "same_lower",
                             "VALID": "valid"}[auto_pad]
    return kwargs


def letters(n_spatial):
    return "DHW"[3 - n_spatial :] if n_spatial > 1 else "L"


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_onnx_node_case(case, layout):
    name, node, inputs, expected = case
    x, w = inputs[:2]
    bias = inputs[2] if len(inputs) > 2 else None
    n = x.ndim - 2
    kwargs = to_kwargs(node, n)
    sp = letters(n)
    if layout == "channels_first":
        y = lo.conv_transpose(x, w, bias, **kwargs)
        got = y
    else:
        perm_x = [0, *range(2, n + 2), 1]
        perm_w = [*range(2, n + 2), 1, 0]  # IO+spatial -> spatial+OI (HWOI)
        y = lo.conv_transpose(np.ascontiguousarray(x.transpose(perm_x)),
                              np.ascontiguousarray(w.transpose(perm_w)), bias,
                              layout=f"N{sp}C", **kwargs)
        assert y.shape == tuple(expected.shape[i] for i in perm_x)
        got = np.moveaxis(y, -1, 1)
    assert got.dtype == expected.dtype
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", [c for c in CASES if c[2][0].ndim == 4][:3],
                         ids=lambda c: c[0])
def test_onnx_node_case_nhwc_with_onnx_kernel(case):
    # channels-last activations with the kernel exactly as ONNX stores it (IOHW)
    name, node, inputs, expected = case
    x, w = inputs[:2]
    y = lo.conv_transpose(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), w, layout="NHWC",
                          kernel_layout="IOHW", out_layout="NCHW", **to_kwargs(node, 2))
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
