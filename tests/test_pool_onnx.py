"""The ONNX backend node cases (``onnx.backend.test.case.node``) for the pooling ops and Col2Im,
run in channels-first and channels-last layouts.

The cases are captured without running ONNX's whole node-case collection: each op's case
module is loaded as a private copy with its base class replaced by ``object`` (so importing it
does not run every export), its ``expect`` replaced by a recorder, and its ``export*`` static
methods called one by one.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np
import pytest

import layoutops as lo

onnx = pytest.importorskip("onnx")
from onnx import helper  # noqa: E402

OPS = {
    "maxpool": "MaxPool",
    "averagepool": "AveragePool",
    "lppool": "LpPool",
    "globalaveragepool": "GlobalAveragePool",
    "globalmaxpool": "GlobalMaxPool",
    "maxunpool": "MaxUnpool",
    "col2im": "Col2Im",
}

# expected values written by hand with 4 digits
RTOL = {"test_averagepool_2d_ceil_last_window_starts_on_pad": 1e-3}


@functools.cache
def _cases(module: str):
    """[(name, attrs, inputs, outputs)] of one ONNX node-case module."""
    import onnx.backend.test.case.base as base
    import onnx.backend.test.case.node as node_pkg

    path = os.path.join(os.path.dirname(node_pkg.__file__), module + ".py")
    spec = importlib.util.spec_from_file_location(f"_layoutops_onnx_cases_{module}", path)
    mod = importlib.util.module_from_spec(spec)
    original = base.Base
    base.Base = object  # the metaclass of Base would run every export at class creation
    try:
        spec.loader.exec_module(mod)
    finally:
        base.Base = original
    found = []

    def record(node, inputs, outputs, name, **kwargs):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
        found.append((name, node.op_type, attrs, list(inputs), list(outputs)))

    mod.expect = record
    cls = getattr(mod, OPS[module])
    for key in sorted(vars(cls)):
        if key.startswith("export"):
            np.random.seed(0)  # noqa: NPY002 (the exports draw from the legacy global state)
            getattr(cls, key)()
    return found


def _all_cases():
    params = []
    for module in OPS:
        for case in _cases(module):
            params.append(pytest.param(case, id=case[0]))
    return params


CASES = _all_cases()


def _pads(attrs, n):
    """ONNX's [begins..., ends...] (or auto_pad) as our padding argument."""
    auto = attrs.get("auto_pad", "NOTSET")
    if auto == "SAME_UPPER":
        return "same"
    if auto == "SAME_LOWER":
        return "same_lower"
    if auto == "VALID":
        return "valid"
    pads = attrs.get("pads", [0] * (2 * n))
    return tuple((pads[i], pads[i + n]) for i in range(n))


def _to_last(a):
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def _from_last(a):
    return np.moveaxis(a, -1, 1)


def _onnx_indices(idx, x_shape, storage_order):
    """Our per-plane row-major indices (NC* layout) in ONNX's form: flat over N*C*spatial,
    the spatial part row-major (storage_order 0) or column-major (1)."""
    n, c = x_shape[:2]
    spatial = x_shape[2:]
    plane = int(np.prod(spatial))
    coords = np.unravel_index(idx, spatial)
    flat = np.ravel_multi_index(coords, spatial, order="F" if storage_order else "C")
    base = (np.arange(n)[:, None] * c + np.arange(c)[None, :]) * plane
    return flat + base.reshape((n, c) + (1,) * len(spatial))


def _run(op_type, attrs, inputs, layout_last):
    x = inputs[0]
    n = x.ndim - 2
    layout = lo.channels_last(n).spec if layout_last else lo.channels_first(n).spec
    xin = _to_last(x) if layout_last else x
    window = dict(
        stride=tuple(attrs.get("strides", [1] * n)),
        padding=_pads(attrs, n),
        dilation=tuple(attrs.get("dilations", [1] * n)),
        ceil_mode=bool(attrs.get("ceil_mode", 0)),
        layout=layout,
    )
    if op_type == "MaxPool":
        return lo.max_pool(xin, tuple(attrs["kernel_shape"]), return_indices=True, **window)
    if op_type == "AveragePool":
        return lo.avg_pool(
            xin, tuple(attrs["kernel_shape"]),
            count_include_pad=bool(attrs.get("count_include_pad", 0)), **window,
        )
    if op_type == "LpPool":
        return lo.lp_pool(xin, attrs.get("p", 2), tuple(attrs["kernel_shape"]), **window)
    if op_type == "GlobalAveragePool":
        return lo.global_avg_pool(xin, layout=layout)
    if op_type == "GlobalMaxPool":
        return lo.global_max_pool(xin, layout=layout)
    raise AssertionError(op_type)


@pytest.mark.usefixtures("both_argmax_paths")
@pytest.mark.parametrize("layout_last", [False, True], ids=["channels_first", "channels_last"])
@pytest.mark.parametrize("case", CASES)
def test_onnx_node_case(case, layout_last):
    name, op_type, attrs, inputs, outputs = case
    x = inputs[0]
    n = x.ndim - 2
    back = _from_last if layout_last else (lambda a: a)
    if op_type == "MaxUnpool":
        indices = inputs[1]
        k = tuple(attrs["kernel_shape"])
        out_spatial = tuple(int(v) for v in inputs[2][2:]) if len(inputs) > 2 else None
        default = tuple(
            (i - 1) * s + kk
            for i, s, kk in zip(x.shape[2:], attrs.get("strides", [1] * n), k, strict=True)
        )
        # ONNX's indices are flat over N*C*plane; the plane is the pool's default-size one
        # even when output_shape is larger (its expected output keeps each cell's coordinates
        # and pads at the end; onnx/onnx#2398). Ours are PyTorch's: flat within the output
        # plane. Convert by coordinates.
        coords = np.unravel_index(indices % int(np.prod(default)), default)
        ours = np.ravel_multi_index(coords, out_spatial or default)
        layout = lo.channels_last(n).spec if layout_last else lo.channels_first(n).spec
        xin, iin = (_to_last(x), _to_last(ours)) if layout_last else (x, ours)
        got = lo.max_unpool(
            xin, iin, k, stride=tuple(attrs.get("strides", [1] * n)),
            padding=_pads(attrs, n), output_size=out_spatial, layout=layout,
        )
        np.testing.assert_array_equal(back(got), outputs[0])
        return
    if op_type == "Col2Im":
        cols, image_shape, block_shape = inputs
        m = len(image_shape)
        kw = dict(
            stride=tuple(attrs.get("strides", [1] * m)),
            padding=_pads(attrs, m),
            dilation=tuple(attrs.get("dilations", [1] * m)),
        )
        if not layout_last:
            layout = "NC" + "DHW"[-m:]
            got = lo.fold(cols, tuple(image_shape), tuple(block_shape), layout=layout, **kw)
            np.testing.assert_allclose(got, outputs[0], rtol=1e-6)
            return
        # channels-last: the same patches in (N, *blocks, K*C) order, through unfold's form
        layout = "N" + "DHW"[-m:] + "C"
        k = int(np.prod(block_shape))
        c = cols.shape[1] // k
        ones = lo.unfold(np.zeros((1, *image_shape, c)), tuple(block_shape), layout=layout, **kw)
        blocks = ones.shape[1:-1]
        cl = np.moveaxis(cols.reshape(cols.shape[0], c, k, *blocks), (1, 2), (-1, -2))
        cl = cl.reshape(cols.shape[0], *blocks, k * c)
        got = lo.fold(cl, tuple(image_shape), tuple(block_shape), layout=layout, **kw)
        np.testing.assert_allclose(_from_last(got), outputs[0], rtol=1e-6)
        return
    result = _run(op_type, attrs, inputs, layout_last)
    if op_type == "MaxPool":
        out, idx = result
        np.testing.assert_array_equal(back(out), outputs[0])
        if len(outputs) > 1:
            order = attrs.get("storage_order", 0)
            if hasattr(lo, "convert_indices"):
                layout = lo.channels_last(n).spec if layout_last else lo.channels_first(n).spec
                conv = back(lo.convert_indices(idx, _to_last(x).shape if layout_last else x.shape,
                                               layout=layout, to="onnx", storage_order=order))
                np.testing.assert_array_equal(conv, outputs[1])
            mine = _onnx_indices(back(idx), x.shape, order)
            np.testing.assert_array_equal(mine, outputs[1])
        return
    assert result.dtype == outputs[0].dtype
    np.testing.assert_allclose(back(result), outputs[0], rtol=RTOL.get(name, 1e-5), atol=1e-6)


def test_cases_were_captured():
    names = {c[0] for m in OPS for c in _cases(m)}
    assert {
        "test_maxpool_with_argmax_2d_precomputed_strides",
        "test_averagepool_2d_ceil_last_window_starts_on_pad",
        "test_lppool_2d_dilations",
        "test_globalmaxpool",
        "test_maxunpool_export_with_output_shape",
        "test_col2im_5d",
    } <= names
