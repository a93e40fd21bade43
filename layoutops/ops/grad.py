"""Gradients (vector-Jacobian products) of conv, transposed conv and pooling.

Each ``*_backward`` function takes the output gradient (in the forward op's output layout),
the forward inputs and the forward op's keyword arguments, and returns a named tuple of
gradients, each in the layout of the corresponding forward input. The gradients run on the
same strided-view machinery as the forward ops:

- the input gradient of ``conv`` is ``conv_transpose`` of the output gradient with the same
  weight (its ``output_padding`` chosen to reproduce the input size exactly); with a
  ``reflect``/``replicate``/``circular`` ``padding_mode`` the gradient with respect to the
  padded input is folded back onto the source indices;
- the input gradient of ``conv_transpose`` is ``conv`` of the output gradient;
- weight gradients are correlations of (padded, per-tile) window views with the output
  gradient, tiled under the workspace limit (`layoutops.kernels.grad.weight_grad`);
- pooling gradients scatter: to the winning index (max), evenly with the forward's divisor
  (average), weighted by ``x |x|^(p-2) / norm^(p-1)`` (Lp).
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from ..kernels.depthwise_flat import depthwise_weight_grad, row_sizes, rows_view
from ..kernels.geometry import Geometry
from ..kernels.grad import bin_scatter, fold_padding, index_scatter, weight_grad, window_scatter
from ..kernels.pool import avg_divisor
from ..layouts import activation_layout
from ._conv_common import (
    add_bias,
    check_choice,
    check_padding_mode_limits,
    groups_from_arg,
    prepare_conv,
    split_axis,
)
from ._dtypes import as_array, check_float, float_dtypes
from ._params import conv_geometry
from .conv import ALGORITHMS, PADDING_MODES, conv
from .conv_transpose import conv_transpose, transposed_crops
from .pool import (
    adaptive_max_pool,
    adaptive_setup,
    avg_pool_setup,
    lp_pool,
    max_pool,
    plane_indices,
)

__all__ = [
    "ConvGrads",
    "PoolGrads",
    "conv_backward",
    "conv_transpose_backward",
    "max_pool_backward",
    "avg_pool_backward",
    "lp_pool_backward",
    "adaptive_avg_pool_backward",
    "adaptive_max_pool_backward",
    "conv_jvp",
]

ConvGrads = namedtuple("ConvGrads", ["grad_input", "grad_weight", "grad_bias"])
ConvGrads.__doc__ = """Gradients of a conv-family op: ``grad_input`` (layout of ``x``),
``grad_weight`` (layout of ``weight``), ``grad_bias`` (shape ``(C_out,)``); a gradient that
was not asked for (``needs=``), or ``grad_bias`` without a bias, is ``None``."""
PoolGrads = namedtuple("PoolGrads", ["grad_input"])
PoolGrads.__doc__ = """Gradient of a pooling op: ``grad_input`` in the layout of ``x``."""

_NEEDS = ("input", "weight", "bias")


# -- shared checks --------------------------------------------------------------------------


def _needs(needs, op: str) -> frozenset:
    items = (needs,) if isinstance(needs, str) else needs
    try:
        items = frozenset(items)
    except TypeError:
        raise TypeError(
            f"`{op}`: `needs` must be a sequence of names from {_NEEDS}, got {needs!r}"
        ) from None
    unknown = sorted(str(v) for v in items - set(_NEEDS))
    if unknown:
        raise ValueError(f"`{op}`: `needs` names must be among {_NEEDS}, got {unknown}")
    return items


def _grad_out(grad_out, op: str) -> np.ndarray:
    g = as_array(grad_out, "grad_out", op)
    check_float(g, "grad_out", op)
    return g


def _check_shape(g: np.ndarray, expected: tuple[int, ...], layout, op: str) -> None:
    if tuple(g.shape) != tuple(expected):
        raise ValueError(
            f"`{op}`: `grad_out` must have the forward output's shape {tuple(expected)} "
            f"(layout {layout.spec}), got {tuple(g.shape)}"
        )


def _shape_in(layout, sizes: dict[str, int]) -> tuple[int, ...]:
    return tuple(sizes[c] for c in layout.spec)


def _swap_io(letters: str) -> str:
    return letters.translate(str.maketrans("OI", "IO"))


def _bias_grad(g: np.ndarray, channel_axis: int, cdtype, dtype) -> np.ndarray:
    axes = tuple(a for a in range(g.ndim) if a != channel_axis)
    return np.ascontiguousarray(g.sum(axis=axes, dtype=cdtype).astype(dtype, copy=False))


# -- conv ----------------------------------------------------------------------------------


def conv_backward(
    grad_out,
    x,
    weight,
    bias=None,
    *,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    padding_mode="zeros",
    layout=None,
    kernel_layout=None,
    out_layout=None,
    algorithm="auto",
    needs=_NEEDS,
) -> ConvGrads:
    """The vector-Jacobian product of `layoutops.conv`.

    Parameters
    ----------
    grad_out : array_like
        The gradient of the loss with respect to the output of ``conv(x, weight, bias,
        ...)``, in the forward op's output layout (``out_layout`` if given, else ``layout``).
    x, weight, bias : array_like
        The forward operands (``bias`` may be None).
    stride, padding, dilation, groups, padding_mode, layout, kernel_layout, out_layout
        As for `layoutops.conv`.
    algorithm : str
        Accepted for signature compatibility with `layoutops.conv` (the backward pass has one
        strategy per gradient).
    needs : sequence of {'input', 'weight', 'bias'}
        The gradients to compute; the others are ``None`` and their work is skipped.

    Returns
    -------
    ConvGrads
        ``(grad_input, grad_weight, grad_bias)``: in the layouts of ``x`` and ``weight``, and
        shape ``(C_out,)`` (``None`` without a bias), in the forward's result dtype.

    Raises
    ------
    ValueError, TypeError, LayoutError
        As `layoutops.conv` does for the same arguments; ``ValueError`` if ``grad_out`` does
        not have the forward output's shape.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> x = np.ones((1, 5, 5, 2))                      # NHWC
    >>> w = np.ones((3, 3, 2, 4))                      # HWIO
    >>> g = np.ones((1, 3, 3, 4))
    >>> gx, gw, gb = lo.conv_backward(g, x, w, np.zeros(4), layout="NHWC")
    >>> gx.shape, gw.shape, gb.tolist()
    ((1, 5, 5, 2), (3, 3, 2, 4), [9.0, 9.0, 9.0, 9.0])
    >>> gx[0, :, :, 0].astype(int).tolist()[0]
    [4, 8, 12, 8, 4]
    >>> lo.conv_backward(g, x, w, layout="NHWC", needs=("weight",)).grad_input is None
    True
    """
    op = "conv_backward"
    want = _needs(needs, op)
    padding_mode = check_choice(op, "padding_mode", padding_mode, tuple(PADDING_MODES))
    check_choice(op, "algorithm", algorithm, ALGORITHMS)
    mode = "constant" if padding_mode == "zeros" else padding_mode
    ops = prepare_conv(
        op, x, weight, bias, groups=groups_from_arg(groups, kernel_layout), layout=layout,
        kernel_layout_spec=kernel_layout, out_layout=out_layout,
    )
    spatial = ops.spatial
    geom = conv_geometry(
        op, ops.in_sizes, ops.kernel_sizes, stride=stride, padding=padding, dilation=dilation,
        spatial=spatial,
    )
    check_padding_mode_limits(op, padding_mode, geom, spatial)
    g = _grad_out(grad_out, op)
    sizes = {"N": ops.batch, "C": ops.c_out, **dict(zip(spatial, geom.out_sizes, strict=True))}
    _check_shape(g, _shape_in(ops.out_layout, sizes), ops.out_layout, op)
    dtype, cdtype = float_dtypes(op, x=ops.x, weight=ops.weight, grad_out=g)

    grad_input = grad_weight = grad_bias = None
    if "input" in want:
        grad_input = _conv_input_grad(g, ops, geom, mode, dtype)
    if "weight" in want:
        g_grouped = split_axis(g, ops.out_layout.channel_axis, ops.groups)
        acc = None
        if mode == "constant":
            acc = _depthwise_weight_grad(ops, g_grouped, geom, cdtype)
        if acc is None:
            acc = weight_grad(
                ops.x_grouped, ops.x_letters, g_grouped, ops.out_layout.spec.replace("C", "GC"),
                geom, spatial, ops.w_letters, ops.w_grouped.shape, x_channel="I",
                g_channel="O", mode=mode, dtype=cdtype,
            )
        grad_weight = acc.reshape(ops.weight.shape).astype(dtype, copy=False)
    if "bias" in want and ops.bias is not None:
        grad_bias = _bias_grad(g, ops.out_layout.channel_axis, cdtype, dtype)
    return ConvGrads(grad_input, grad_weight, grad_bias)


def _depthwise_weight_grad(ops, g_grouped, geom: Geometry, cdtype) -> np.ndarray | None:
    """The weight gradient of a 1-D/2-D depthwise conv (one input and one output channel per
    group) with zero padding by `depthwise_weight_grad` (one fused einsum per chunk of the
    forward's padded input: 8x96x56x56 3x3 channels-last 91 -> ~2 ms); None for other convs.
    The result is in ``ops.w_letters`` order, shape ``ops.w_grouped.shape``."""
    spatial = ops.spatial
    dims = dict(zip(ops.w_letters, ops.w_grouped.shape, strict=True))
    if len(spatial) > 2 or dims["O"] != 1 or dims["I"] != 1:
        return None
    g_letters = ops.out_layout.spec.replace("C", "GC")
    x = rows_view(ops.x_grouped, ops.x_letters, spatial, "GC")[..., 0]  # (N, H, W, G)
    g = rows_view(g_grouped, g_letters, spatial, "GC")[..., 0]
    sizes = row_sizes(geom.kernel_sizes, geom.strides, geom.dilations, geom.pads)
    taps = depthwise_weight_grad(x, g, sizes, cdtype)  # (kh, kw, G)
    if len(spatial) == 1:
        taps = taps[0]
    res_letters = spatial + "GOI"
    return taps[..., None, None].transpose([res_letters.index(c) for c in ops.w_letters])


def _conv_input_grad(g, ops, geom: Geometry, mode: str, dtype) -> np.ndarray:
    """conv_transpose of ``g`` with the same weight, sized to reproduce the (padded) input."""
    pads = geom.pads if mode == "constant" else tuple((0, 0) for _ in geom.pads)
    output_padding = tuple(
        n + b + e - ((o - 1) * s + ext)
        for n, (b, e), o, s, ext in zip(
            geom.in_sizes, geom.pads, geom.out_sizes, geom.strides, geom.extents, strict=True
        )
    )
    result = conv_transpose(
        g,
        ops.w_grouped,
        stride=geom.strides,
        padding=pads,
        output_padding=output_padding,
        dilation=geom.dilations,
        groups=ops.groups,
        layout=ops.out_layout.spec,
        kernel_layout=_swap_io(ops.w_letters),
        out_layout=ops.x_layout.spec,
    )
    if mode != "constant":
        result = fold_padding(result, ops.x_layout.spatial_axes, geom.pads, geom.in_sizes, mode)
    return np.ascontiguousarray(result, dtype=dtype)


def conv_jvp(
    x,
    weight,
    bias=None,
    *,
    tangent_x=None,
    tangent_weight=None,
    tangent_bias=None,
    **conv_kwargs,
):
    """Forward mode of `layoutops.conv`: the output and its directional derivative.

    ``conv`` is linear in ``x`` and in ``weight`` separately (bilinear), so the tangent of
    the output along ``(tangent_x, tangent_weight, tangent_bias)`` is ``conv(tangent_x, w) +
    conv(x, tangent_weight) + tangent_bias``, exactly (a padding mode is linear too).

    Parameters
    ----------
    x, weight, bias : array_like
        The primal operands.
    tangent_x, tangent_weight, tangent_bias : array_like, optional
        Tangents shaped like ``x``, ``weight`` and ``(C_out,)``; ``None`` means zero.
    **conv_kwargs
        The keyword arguments of `layoutops.conv`.

    Returns
    -------
    (ndarray, ndarray)
        ``conv(x, weight, bias, **conv_kwargs)`` and its tangent, both in the output layout.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> x, w = np.ones((1, 1, 4)), np.ones((1, 1, 2))
    >>> y, dy = lo.conv_jvp(x, w, tangent_x=np.arange(4.0)[None, None])
    >>> y.tolist(), dy.tolist()
    ([[[2.0, 2.0, 2.0]]], [[[1.0, 3.0, 5.0]]])
    """
    out = conv(x, weight, bias, **conv_kwargs)
    tangent = np.zeros_like(out)
    if tangent_x is not None:
        tangent += conv(tangent_x, weight, **conv_kwargs)
    if tangent_weight is not None:
        tangent += conv(x, tangent_weight, **conv_kwargs)
    if tangent_bias is not None:
        spec = conv_kwargs.get("out_layout") or conv_kwargs.get("layout")
        lay = activation_layout(out.ndim, spec)
        add_bias(tangent, lay, np.asarray(tangent_bias).reshape(-1))
    return out, tangent


# -- conv_transpose ------------------------------------------------------------------------


def conv_transpose_backward(
    grad_out,
    x,
    weight,
    bias=None,
    *,
    stride=1,
    padding=0,
    output_padding=0,
    dilation=1,
    groups=1,
    output_shape=None,
    layout=None,
    kernel_layout=None,
    out_layout=None,
    needs=_NEEDS,
) -> ConvGrads:
    """The vector-Jacobian product of `layoutops.conv_transpose`.

    The input gradient is ``conv`` of the output gradient with the same weight (the crop of
    the transposed conv becomes the conv's padding); the weight gradient is the correlation
    of the (cropped) output gradient's windows with ``x``.

    Parameters
    ----------
    grad_out : array_like
        The gradient with respect to the output of ``conv_transpose(x, weight, bias, ...)``,
        in its output layout (``out_layout`` if given, else ``layout``).
    x, weight, bias : array_like
        The forward operands (``bias`` may be None).
    stride, padding, output_padding, dilation, groups, output_shape, layout, kernel_layout, \
out_layout
        As for `layoutops.conv_transpose`.
    needs : sequence of {'input', 'weight', 'bias'}
        The gradients to compute; the others are ``None`` and their work is skipped.

    Returns
    -------
    ConvGrads
        ``(grad_input, grad_weight, grad_bias)`` in the layouts of ``x`` and ``weight``, and
        shape ``(C_out,)`` (``None`` without a bias).

    Raises
    ------
    ValueError, TypeError, LayoutError
        As `layoutops.conv_transpose` does; ``ValueError`` if ``grad_out`` does not have the
        forward output's shape.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> x = np.ones((1, 2, 3, 3))                      # NCHW
    >>> w = np.ones((2, 4, 3, 3))                      # IOHW
    >>> g = np.ones((1, 4, 7, 7))
    >>> gx, gw, gb = lo.conv_transpose_backward(g, x, w, np.zeros(4), stride=2)
    >>> gx.shape, gw.shape, gb.shape
    ((1, 2, 3, 3), (2, 4, 3, 3), (4,))
    >>> gx[0, 0].astype(int).tolist()
    [[36, 36, 36], [36, 36, 36], [36, 36, 36]]
    """
    op = "conv_transpose_backward"
    want = _needs(needs, op)
    ops = prepare_conv(
        op, x, weight, bias, groups=groups_from_arg(groups, kernel_layout), layout=layout,
        kernel_layout_spec=kernel_layout, out_layout=out_layout, transposed=True,
    )
    spatial = ops.spatial
    fwd = transposed_crops(
        op, ops.in_sizes, ops.kernel_sizes, stride=stride, padding=padding,
        output_padding=output_padding, dilation=dilation, output_shape=output_shape,
        spatial=spatial,
    )
    strides, dilations, out_sizes = fwd.strides, fwd.dilations, fwd.out_sizes
    # crops of the full result (in - 1) * stride + extent, WITHOUT output_padding: a negative
    # end counts the appended positions (output_padding or bias-only) that no tap reaches
    crops = tuple(
        (b, (i - 1) * s + ext - b - size)
        for i, s, ext, (b, _), size in zip(
            ops.in_sizes, strides, fwd.extents, fwd.pads, out_sizes, strict=True
        )
    )
    g = _grad_out(grad_out, op)
    sizes = {"N": ops.batch, "C": ops.c_out, **dict(zip(spatial, out_sizes, strict=True))}
    _check_shape(g, _shape_in(ops.out_layout, sizes), ops.out_layout, op)
    dtype, cdtype = float_dtypes(op, x=ops.x, weight=ops.weight, grad_out=g)

    # the transposed conv read backwards: a conv geometry on grad_out whose output is x
    geom = Geometry(
        tuple(out_sizes), ops.kernel_sizes, strides, dilations, crops, ops.in_sizes
    )
    grad_input = grad_weight = grad_bias = None
    if "input" in want:
        # appended positions (a negative end crop) have no taps: drop their gradient
        index = [slice(None)] * g.ndim
        for letter, size, (_, e) in zip(spatial, out_sizes, crops, strict=True):
            if e < 0:
                index[ops.out_layout.axis(letter)] = slice(0, size + e)
        g_used = g[tuple(index)]
        result = conv(
            g_used,
            ops.w_grouped,
            stride=strides,
            padding=tuple((b, max(e, 0)) for b, e in crops),
            dilation=dilations,
            groups=ops.groups,
            layout=ops.out_layout.spec,
            kernel_layout=_swap_io(ops.w_letters),
            out_layout=ops.x_layout.spec,
        )
        grad_input = np.ascontiguousarray(result, dtype=dtype)
    if "weight" in want:
        g_grouped = split_axis(g, ops.out_layout.channel_axis, ops.groups)
        acc = weight_grad(
            g_grouped, ops.out_layout.spec.replace("C", "GC"), ops.x_grouped, ops.x_letters,
            geom, spatial, ops.w_letters, ops.w_grouped.shape, x_channel="O", g_channel="I",
            dtype=cdtype,
        )
        grad_weight = acc.reshape(ops.weight.shape).astype(dtype, copy=False)
    if "bias" in want and ops.bias is not None:
        grad_bias = _bias_grad(g, ops.out_layout.channel_axis, cdtype, dtype)
    return ConvGrads(grad_input, grad_weight, grad_bias)


# -- pooling -------------------------------------------------------------------------------


def _pool_dtypes(op: str, g: np.ndarray, x: np.ndarray) -> tuple[np.dtype, np.dtype]:
    if x.dtype.kind == "f" or x.dtype.name == "bfloat16":
        return float_dtypes(op, x=x, grad_out=g)
    return float_dtypes(op, grad_out=g)


def _spatial_axes(layout) -> tuple[int, ...]:
    return tuple(layout.spatial_axes)


def max_pool_backward(
    grad_out,
    x,
    kernel_size,
    *,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode=False,
    layout=None,
    indices=None,
) -> PoolGrads:
    """The vector-Jacobian product of `layoutops.max_pool`.

    Each output gradient goes to the input cell that won its window in the forward pass
    (``max_pool(..., return_indices=True)``: ties as the forward picked them, the first
    in-bounds cell in window order; a NaN window routes to its last NaN); overlapping windows
    add up. Without ``indices`` the winners are found again from ``x``; given the forward's
    ``indices`` (as PyTorch's ``max_pool2d_with_indices_backward`` takes them), only the
    scatter runs: 2.5-5x faster.

    Parameters
    ----------
    grad_out : array_like
        Gradient with respect to ``max_pool(x, kernel_size, ...)``, in the layout of ``x``.
    x : array_like
        The forward input (any real dtype, as `layoutops.max_pool` accepts).
    kernel_size, stride, padding, dilation, ceil_mode, layout
        As for `layoutops.max_pool`.
    indices : array_like of int, optional
        The indices ``max_pool(x, ..., return_indices=True)`` returned with the same
        arguments: flat row-major positions in each unpadded spatial plane, the shape of
        ``grad_out``. They are checked to lie in the plane, not to be the windows' maxima:
        any index in the plane receives its output's gradient (summed where several share
        it), as in PyTorch.

    Returns
    -------
    PoolGrads
        ``(grad_input,)`` in the layout and shape of ``x`` (floating: the dtype of
        ``grad_out`` promoted with a floating ``x``).

    Raises
    ------
    ValueError, TypeError, LayoutError
        As `layoutops.max_pool`; ``ValueError`` if ``grad_out`` does not have the forward
        output's shape, or ``indices`` not that shape or outside the plane; ``TypeError``
        for non-integer ``indices``.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> x = np.array([[[1.0, 3.0, 2.0, 0.0, 5.0]]])    # NCW
    >>> lo.max_pool_backward(np.ones((1, 1, 4)), x, 2, stride=1).grad_input.tolist()
    [[[0.0, 2.0, 1.0, 0.0, 1.0]]]
    >>> out, idx = lo.max_pool(x, 2, stride=1, return_indices=True)
    >>> lo.max_pool_backward(np.ones((1, 1, 4)), x, 2, stride=1, indices=idx).grad_input.tolist()
    [[[0.0, 2.0, 1.0, 0.0, 1.0]]]
    """
    op = "max_pool_backward"
    g = _grad_out(grad_out, op)
    x = as_array(x, "x", op)
    lay, geom, _ = avg_pool_setup(
        op, x, kernel_size, stride=stride, padding=padding, dilation=dilation,
        ceil_mode=ceil_mode, divisor_override=None, layout=layout,
    )
    _check_shape(g, _pool_shape(x.shape, _spatial_axes(lay), geom.out_sizes), lay, op)
    dtype, _ = _pool_dtypes(op, g, x)
    axes = _spatial_axes(lay)
    if indices is None:
        _, indices = max_pool(
            x, kernel_size, stride=stride, padding=padding, dilation=dilation,
            ceil_mode=ceil_mode, return_indices=True, layout=lay.spec, _op=op,
        )
        unique = geom.disjoint_windows  # windows that never overlap have distinct winners
    else:
        indices = plane_indices(op, indices, g.shape, "`grad_out`", geom.in_sizes,
                                "input plane")
        unique = False  # given indices may share a cell whatever the windows
    return PoolGrads(index_scatter(g, indices, x.shape, axes, dtype, unique=unique))


def adaptive_max_pool_backward(grad_out, x, output_size, *, layout=None,
                               indices=None) -> PoolGrads:
    """The vector-Jacobian product of `layoutops.adaptive_max_pool`.

    Each output gradient goes to the winner of its bin (the forward's indices: found again
    from ``x``, or given).

    Parameters
    ----------
    grad_out : array_like
        Gradient with respect to ``adaptive_max_pool(x, output_size)``, in the layout of ``x``.
    x : array_like
        The forward input.
    output_size, layout
        As for `layoutops.adaptive_max_pool`.
    indices : array_like of int, optional
        The indices ``adaptive_max_pool(x, output_size, return_indices=True)`` returned, as
        for `max_pool_backward`: only the scatter runs, the bins' maxima are not searched
        again.

    Returns
    -------
    PoolGrads
        ``(grad_input,)`` in the layout and shape of ``x``.

    Raises
    ------
    ValueError, TypeError, LayoutError
        As `layoutops.adaptive_max_pool`; ``ValueError`` for a ``grad_out`` of the wrong
        shape, or ``indices`` not that shape or outside the plane; ``TypeError`` for
        non-integer ``indices``.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> x = np.array([[[1.0, 3.0, 2.0, 0.0, 5.0]]])    # NCW
    >>> lo.adaptive_max_pool_backward(np.ones((1, 1, 2)), x, 2).grad_input.tolist()
    [[[0.0, 1.0, 0.0, 0.0, 1.0]]]
    """
    op = "adaptive_max_pool_backward"
    g = _grad_out(grad_out, op)
    x = as_array(x, "x", op)
    lay, out_sizes = adaptive_setup(op, x, output_size, layout=layout)
    axes = _spatial_axes(lay)
    _check_shape(g, _pool_shape(x.shape, axes, out_sizes), lay, op)
    if indices is None:
        _, indices = adaptive_max_pool(x, out_sizes, return_indices=True, layout=lay.spec)
    else:
        indices = plane_indices(op, indices, g.shape, "`grad_out`",
                                [x.shape[ax] for ax in axes], "input plane")
    dtype, _ = _pool_dtypes(op, g, x)
    return PoolGrads(index_scatter(g, indices, x.shape, axes, dtype))


def avg_pool_backward(
    grad_out,
    x,
    kernel_size,
    *,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
    layout=None,
) -> PoolGrads:
    """The vector-Jacobian product of `layoutops.avg_pool`.

    Each output gradient, divided by the forward's divisor (``divisor_override``, else the
    taps inside input + padding with ``count_include_pad``, never the ceil_mode overhang,
    else the taps inside the input), is added to every in-bounds tap of its window.

    Parameters
    ----------
    grad_out : array_like
        Gradient with respect to ``avg_pool(x, kernel_size, ...)``, in the layout of ``x``.
    x : array_like
        The forward input (only its shape and dtype are used).
    kernel_size, stride, padding, dilation, ceil_mode, count_include_pad, divisor_override, \
layout
        As for `layoutops.avg_pool`.

    Returns
    -------
    PoolGrads
        ``(grad_input,)`` in the layout and shape of ``x``.

    Raises
    ------
    ValueError, TypeError, LayoutError
        As `layoutops.avg_pool`; ``ValueError`` for a ``grad_out`` of the wrong shape.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> x = np.zeros((1, 1, 5))                          # NCW
    >>> g = np.array([[[3.0, 6.0]]])
    >>> lo.avg_pool_backward(g, x, 3, stride=2).grad_input.tolist()
    [[[1.0, 1.0, 3.0, 2.0, 2.0]]]
    """
    op = "avg_pool_backward"
    g = _grad_out(grad_out, op)
    x = as_array(x, "x", op)
    check_float(x, "x", op)
    lay, geom, override = avg_pool_setup(
        op, x, kernel_size, stride=stride, padding=padding, dilation=dilation,
        ceil_mode=ceil_mode, divisor_override=divisor_override, layout=layout,
    )
    axes = _spatial_axes(lay)
    _check_shape(g, _pool_shape(x.shape, axes, geom.out_sizes), lay, op)
    dtype, cdtype = _pool_dtypes(op, g, x)
    vals = g.astype(cdtype, copy=True)
    if override is not None:
        vals /= cdtype.type(override)
    else:
        full = tuple(slice(0, s) for s in vals.shape)
        vals /= avg_divisor(geom, axes, full, vals.ndim, bool(count_include_pad), cdtype)
    grad = window_scatter(
        vals, axes, geom, tile_axes=(lay.batch_axis, lay.channel_axis), dtype=cdtype
    )
    return PoolGrads(grad.astype(dtype, copy=False))


def lp_pool_backward(
    grad_out,
    x,
    p,
    kernel_size,
    *,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode=False,
    layout=None,
) -> PoolGrads:
    """The vector-Jacobian product of `layoutops.lp_pool`.

    With ``y = (sum |x|^p)^(1/p)`` over the in-bounds taps of a window, ``dy/dx = x |x|^(p-2)
    y^(1-p)``; a window whose norm is 0 passes no gradient (PyTorch).

    Parameters
    ----------
    grad_out : array_like
        Gradient with respect to ``lp_pool(x, p, kernel_size, ...)``, in the layout of ``x``.
    x : array_like
        The forward input.
    p, kernel_size, stride, padding, dilation, ceil_mode, layout
        As for `layoutops.lp_pool`.

    Returns
    -------
    PoolGrads
        ``(grad_input,)`` in the layout and shape of ``x``.

    Raises
    ------
    ValueError, TypeError, LayoutError
        As `layoutops.lp_pool`; ``ValueError`` for a ``grad_out`` of the wrong shape.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> x = np.array([[[3.0, -4.0, 0.0, 0.0]]])         # NCW
    >>> lo.lp_pool_backward(np.ones((1, 1, 2)), x, 2, 2).grad_input.tolist()
    [[[0.6, -0.8, 0.0, 0.0]]]
    """
    op = "lp_pool_backward"
    g = _grad_out(grad_out, op)
    x = as_array(x, "x", op)
    lay, geom, _ = avg_pool_setup(
        op, x, kernel_size, stride=stride, padding=padding, dilation=dilation,
        ceil_mode=ceil_mode, divisor_override=None, layout=layout,
    )
    _check_shape(g, _pool_shape(x.shape, _spatial_axes(lay), geom.out_sizes), lay, op)
    dtype, cdtype = _pool_dtypes(op, g, x)
    norm = lp_pool(
        x, p, kernel_size, stride=stride, padding=padding, dilation=dilation,
        ceil_mode=ceil_mode, layout=lay.spec, _op=op,
    )
    p = float(p)
    norm = norm.astype(cdtype, copy=False)
    positive = norm > 0
    safe = np.where(positive, norm, cdtype.type(1))
    scale = 1 / safe if p == 2.0 else safe ** cdtype.type(1.0 - p)
    vals = np.where(positive, g.astype(cdtype, copy=False) * scale, 0)
    spread = window_scatter(
        vals.astype(cdtype, copy=False), _spatial_axes(lay), geom,
        tile_axes=(lay.batch_axis, lay.channel_axis), dtype=cdtype,
    )
    # x |x|^(p-2) written as sign(x) |x|^(p-1), taken as 0 at x = 0 (its limit for p > 1):
    # x itself for p = 2 and sign(x) for p = 1 (no float power over the input: 8x64x56x56
    # float32 p = 2 k2 s2, 2 threads, 23.5 -> 10.5 ms; PyTorch 4.0)
    xc = x.astype(cdtype, copy=False)
    if p == 2.0:
        spread *= xc
    elif p == 1.0:
        spread *= np.sign(xc)
    else:
        ax = np.abs(xc)
        nonzero = ax > 0
        spread *= np.where(
            nonzero, np.sign(xc) * np.where(nonzero, ax, 1) ** cdtype.type(p - 1.0), 0
        )
    return PoolGrads(spread.astype(dtype, copy=False))


def adaptive_avg_pool_backward(grad_out, x, output_size, *, layout=None) -> PoolGrads:
    """The vector-Jacobian product of `layoutops.adaptive_avg_pool`.

    Each output gradient is spread evenly over its bin (PyTorch's bins ``start =
    floor(i * in / out)``, ``end = ceil((i + 1) * in / out)``; overlapping bins add up).

    Parameters
    ----------
    grad_out : array_like
        Gradient with respect to ``adaptive_avg_pool(x, output_size)``, in the layout of ``x``.
    x : array_like
        The forward input (only its shape and dtype are used).
    output_size, layout
        As for `layoutops.adaptive_avg_pool`.

    Returns
    -------
    PoolGrads
        ``(grad_input,)`` in the layout and shape of ``x``.

    Raises
    ------
    ValueError, TypeError, LayoutError
        As `layoutops.adaptive_avg_pool`; ``ValueError`` for a ``grad_out`` of the wrong shape.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> x = np.zeros((1, 1, 3))                          # NCW
    >>> lo.adaptive_avg_pool_backward(np.array([[[2.0, 4.0]]]), x, 2).grad_input.tolist()
    [[[1.0, 3.0, 2.0]]]
    """
    op = "adaptive_avg_pool_backward"
    g = _grad_out(grad_out, op)
    x = as_array(x, "x", op)
    check_float(x, "x", op)
    lay, out_sizes = adaptive_setup(op, x, output_size, layout=layout)
    axes = _spatial_axes(lay)
    _check_shape(g, _pool_shape(x.shape, axes, out_sizes), lay, op)
    dtype, cdtype = _pool_dtypes(op, g, x)
    in_sizes = tuple(x.shape[a] for a in axes)
    return PoolGrads(bin_scatter(g, axes, in_sizes, cdtype).astype(dtype, copy=False))


def _pool_shape(shape, axes, out_sizes) -> tuple[int, ...]:
    out = list(shape)
    for ax, size in zip(axes, out_sizes, strict=True):
        out[ax] = size
    return tuple(out)
