"""Every ONNX backend node case of Conv, run channels-first and channels-last, plus the ONNX
reference evaluator on attributes the node cases do not cover (1-D, 3-D, groups, dilations,
SAME_LOWER)."""

from __future__ import annotations

import numpy as np
import pytest

import layoutops as lo

onnx = pytest.importorskip("onnx")
from onnx import helper  # noqa: E402
from onnx_node_cases import collect  # noqa: E402

pytestmark = pytest.mark.usefixtures("both_small_paths")

CASES = collect("conv", "Conv")

EXPECTED_NAMES = {
    "test_basic_conv_with_padding",
    "test_basic_conv_without_padding",
    "test_conv_with_strides_padding",
    "test_conv_with_strides_no_padding",
    "test_conv_with_strides_and_asymmetric_padding",
    "test_conv_with_autopad_same",
}


def test_all_onnx_cases_collected():
    assert EXPECTED_NAMES <= {name for name, *_ in CASES}


def to_kwargs(node, n_spatial):
    """ONNX attributes -> our keyword arguments (pads ``[b..., e...]`` -> pairs)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    kwargs = {}
    if "strides" in attrs:
        kwargs["stride"] = tuple(int(v) for v in attrs["strides"])
    if "dilations" in attrs:
        kwargs["dilation"] = tuple(int(v) for v in attrs["dilations"])
    if "group" in attrs:
        kwargs["groups"] = int(attrs["group"])
    if "pads" in attrs:
        pads = [int(v) for v in attrs["pads"]]
        kwargs["padding"] = tuple(zip(pads[:n_spatial], pads[n_spatial:], strict=True))
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad != "NOTSET":
        kwargs["padding"] = {"SAME_UPPER": "same", "SAME_LOWER": "same_lower",
                             "VALID": "valid"}[auto_pad]
    if "kernel_shape" in attrs:
        kernel_shape = tuple(int(v) for v in attrs["kernel_shape"])
    else:
        kernel_shape = None
    return kwargs, kernel_shape


def run_both_layouts(node, inputs, expected, n_spatial):
    kwargs, kernel_shape = to_kwargs(node, n_spatial)
    x, w = inputs[:2]
    b = inputs[2] if len(inputs) > 2 else None
    if kernel_shape is not None:
        assert w.shape[2:] == kernel_shape
    cf = lo.channels_first(n_spatial).spec
    cl = lo.channels_last(n_spatial).spec
    kcf = "OI" + cf[2:]
    kcl = cf[2:] + "IO"
    out = lo.conv(x, w, b, layout=cf, **kwargs)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    for algorithm in ("im2col", "per_tap", "direct"):
        out = lo.conv(
            lo.convert(x, cf, cl), lo.convert_kernel(w, kcf, kcl), b, layout=cl,
            algorithm=algorithm, **kwargs,
        )
        np.testing.assert_allclose(lo.convert(out, cl, cf), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_onnx_node_case(case):
    name, node, inputs, expected = case
    run_both_layouts(node, inputs, expected, inputs[0].ndim - 2)


# -- the ONNX reference evaluator on more attribute combinations ---------------------------------

MORE = [
    # (x shape, w shape, attributes, with bias)
    ((1, 2, 7), (3, 2, 3), dict(strides=[2], pads=[1, 2], dilations=[1]), True),
    ((2, 4, 6), (4, 2, 2), dict(group=2, dilations=[2], pads=[0, 1]), False),
    ((1, 4, 6, 5), (6, 2, 3, 3), dict(group=2, strides=[2, 1], pads=[1, 0, 2, 1]), True),
    ((1, 2, 6, 6), (2, 2, 3, 3), dict(auto_pad="SAME_LOWER", strides=[2, 2]), False),
    ((1, 2, 5, 6), (2, 2, 3, 2), dict(auto_pad="SAME_UPPER", strides=[2, 3]), True),
    ((1, 3, 7, 6), (3, 1, 3, 3), dict(group=3, dilations=[2, 1], pads=[2, 1, 2, 1]), True),
    ((1, 2, 4, 5, 4), (2, 2, 2, 3, 2), dict(strides=[1, 2, 1], pads=[1, 0, 1, 0, 1, 1]), True),
    ((1, 2, 5, 4, 3), (4, 2, 3, 2, 2), dict(auto_pad="VALID"), False),
]


@pytest.mark.parametrize("shape_x, shape_w, attrs, with_bias", MORE)
def test_onnx_reference_evaluator(shape_x, shape_w, attrs, with_bias):
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(len(shape_x) * 100 + shape_w[0])
    x = rng.standard_normal(shape_x).astype(np.float32)
    w = rng.standard_normal(shape_w).astype(np.float32)
    inputs = [x, w]
    names = ["X", "W"]
    if with_bias:
        inputs.append(rng.standard_normal(shape_w[0]).astype(np.float32))
        names.append("B")
    node = helper.make_node("Conv", names, ["Y"], kernel_shape=list(shape_w[2:]), **attrs)
    graph = helper.make_graph(
        [node], "conv",
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names],
        [helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    (expected,) = ReferenceEvaluator(model).run(None, dict(zip(names, inputs, strict=True)))
    run_both_layouts(node, inputs, expected, x.ndim - 2)
