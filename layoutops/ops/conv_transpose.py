"""Transposed convolution: the adjoint of `conv` with respect to its input (SPEC section 4).

The public functions normalize every argument once — padding forms, ``"same"``/``"same_lower"``,
``output_shape`` and ``output_padding`` all become per-axis *crops* ``(begin, end)`` of the full
transposed output — and hand plain tuples to ``kernels/conv_transpose.py`` (a GEMM over the
input followed by a col2im scatter-add; see ``docs/transposed.md`` for why).
"""

from __future__ import annotations

import math

import numpy as np

from ..kernels.conv import conv_forward, tiny_macs
from ..kernels.conv_transpose import conv_transpose_scatter
from ..kernels.geometry import Geometry
from ._conv_common import add_bias, groups_from_arg, prepare_conv
from ._params import CheckedCache, normalize_tuple, parse_padding
from .dask_support import accepts_dask

__all__ = [
    "conv_transpose",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "transposed_crops",
]


def transposed_crops(
    op: str,
    in_sizes,
    kernel_sizes,
    *,
    stride=1,
    padding=0,
    output_padding=0,
    dilation=1,
    output_shape=None,
    spatial: str | None = None,
) -> Geometry:
    """Normalize the geometry of a transposed convolution.

    Returns a `Geometry` whose ``pads`` are the crops ``(begin, end)`` of the full output of
    size ``U = (in - 1) * stride + dilation * (k - 1) + 1 + output_padding`` per axis (an
    ``end`` below 0 appends bias-only positions) and whose ``out_sizes`` are the final sizes.

    Raises
    ------
    ValueError
        For negative padding, ``output_padding`` not below ``max(stride, dilation)`` or given
        with a padding string, an unreachable ``output_shape`` (the message states the range),
        padding other than 0 / ``"same"`` / ``"same_lower"`` with ``output_shape``, or an
        output size below 1.

    Examples
    --------
    >>> from layoutops.ops.conv_transpose import transposed_crops
    >>> g = transposed_crops("conv_transpose", (5,), (3,), stride=2, padding="same")
    >>> g.pads, g.out_sizes
    (((0, 1),), (10,))
    >>> g = transposed_crops("conv_transpose", (3,), (3,), stride=3, output_shape=(10,))
    >>> g.pads, g.out_sizes
    (((0, -1),), (10,))
    """
    n = len(in_sizes)
    spatial = spatial or "?" * n
    strides = normalize_tuple(stride, n, "stride", op)
    dilations = normalize_tuple(dilation, n, "dilation", op)
    out_pads = normalize_tuple(output_padding, n, "output_padding", op, minimum=0)
    parsed = parse_padding(padding, n, op)
    limits = tuple(max(s, d) for s, d in zip(strides, dilations, strict=True))
    for i in range(n):
        if out_pads[i] >= limits[i]:
            raise ValueError(
                f"`{op}`: `output_padding` must be smaller than max(stride, dilation) = "
                f"{limits[i]} along {spatial[i]!r}, got {output_padding!r}"
            )
    if isinstance(parsed, str) and any(out_pads):
        raise ValueError(
            f"`{op}`: `output_padding` cannot be combined with padding={padding!r}; use "
            f"`output_shape` or explicit padding pairs, got output_padding={output_padding!r}"
        )
    full = tuple(
        (n_in - 1) * s + d * (k - 1) + 1 + p
        for n_in, k, s, d, p in zip(
            in_sizes, kernel_sizes, strides, dilations, out_pads, strict=True
        )
    )

    if output_shape is not None:
        if parsed == "valid":
            parsed = ((0, 0),) * n
        if not isinstance(parsed, str) and any(p for pair in parsed for p in pair):
            raise ValueError(
                f"`{op}`: with `output_shape`, `padding` must be 0, 'same' or 'same_lower', "
                f"got {padding!r}"
            )
        # sizes < 1 fall through to the reachable-range check below, which states the range
        sizes = normalize_tuple(output_shape, n, "output_shape", op, minimum=0)
        crops = []
        for i in range(n):
            top = full[i] - out_pads[i] - 1 + limits[i]
            if not 1 <= sizes[i] <= top:
                raise ValueError(
                    f"`{op}`: `output_shape` along {spatial[i]!r} must be in [1, {top}] "
                    f"(input {in_sizes[i]}, kernel {kernel_sizes[i]}, stride {strides[i]}, "
                    f"dilation {dilations[i]}: 1 <= S <= (in - 1) * stride + dilation * "
                    f"(k - 1) + max(stride, dilation)), got {sizes[i]}"
                )
            total = full[i] - sizes[i]
            if total < 0:
                crops.append((0, total))
            elif parsed == "same":
                crops.append((total // 2, total - total // 2))
            else:
                crops.append((total - total // 2, total // 2))
    elif isinstance(parsed, str):
        crops = []
        for i in range(n):
            if parsed == "valid":
                crops.append((0, 0))
                continue
            total = dilations[i] * (kernel_sizes[i] - 1) + 1 - strides[i]
            if total < 0:
                crops.append((0, total))
            elif parsed == "same":
                crops.append((total // 2, total - total // 2))
            else:
                crops.append((total - total // 2, total // 2))
    else:
        crops = list(parsed)

    outs = []
    for i in range(n):
        size = full[i] - crops[i][0] - crops[i][1]
        if size < 1:
            raise ValueError(
                f"`{op}`: output size along {spatial[i]!r} would be {size} < 1 "
                f"((in - 1) * stride - pb - pe + dilation * (k - 1) + output_padding + 1 with "
                f"input {in_sizes[i]}, stride {strides[i]}, crops {crops[i]}, dilation "
                f"{dilations[i]}, kernel {kernel_sizes[i]}, output_padding {out_pads[i]})"
            )
        outs.append(size)
    return Geometry(
        tuple(int(v) for v in in_sizes),
        tuple(int(v) for v in kernel_sizes),
        strides,
        dilations,
        tuple((int(b), int(e)) for b, e in crops),
        tuple(outs),
    )


@accepts_dask("conv_transpose")
def conv_transpose(
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
):
    """Transposed convolution ("deconvolution"): the adjoint of `conv` w.r.t. its input.

    Each input position ``i`` scatters ``x[i] * weight[tap]`` to output position
    ``i * stride + tap * dilation - crop_begin``. The output size per axis is
    ``(in - 1) * stride - pb - pe + dilation * (k - 1) + output_padding + 1``.

    Parameters
    ----------
    x : array_like
        Input of shape ``(N, C_in, *spatial)`` in ``layout`` (default channels-first).
    weight : array_like
        Kernel with ``I = C_in`` and ``O = C_out / groups``: ``IOHW`` by default for a
        channels-first input (PyTorch/ONNX), ``HWOI`` for channels-last (TF/Keras); any
        permutation via ``kernel_layout``, or a grouped ``GIOHW``-style layout (``I`` and ``O``
        per group; the group count then comes from the kernel).
    bias : array_like, optional
        ``(C_out,)`` or a shape that squeezes to it.
    stride, dilation : int or tuple of int
        One value, or one per spatial axis in the layout's spatial order.
    padding : int, tuple or str
        Rows/columns *removed* from the output (PyTorch/ONNX meaning) in every SPEC form
        (``p``, one per axis, ``(begin, end)`` per axis flat or as pairs), or ``"valid"`` (0),
        ``"same"`` / ``"same_lower"``: output size ``in * stride``, the adjoint of `conv` with
        the same string on an input of that size.
    output_padding : int or tuple of int
        Extra positions at the end of each axis, each ``< max(stride, dilation)``; not allowed
        with a padding string.
    groups : int
        Input and output channels split into ``groups`` independent groups.
    output_shape : int or tuple of int, optional
        The spatial output sizes (ONNX ``output_shape``); ``padding`` must then be 0,
        ``"same"`` or ``"same_lower"``, which decides where the excess is cropped.
    layout, kernel_layout, out_layout : str, optional
        Layout strings (``"NHWC"``, ``"channels_last"``, ``"HWOI"``, ...).

    Returns
    -------
    numpy.ndarray
        C-contiguous, in ``out_layout`` (default: the input's layout), dtype
        ``np.result_type(x, weight)`` (half types accumulate in float32).

    Raises
    ------
    ValueError
        Channel mismatches, bad ``groups``, negative padding, ``output_padding`` too large,
        unreachable ``output_shape``, output size below 1.
    TypeError
        Integer or bool ``x`` or ``weight``.
    LayoutError
        Invalid or mismatching layouts.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> x = np.arange(3.0).reshape(1, 1, 3)
    >>> w = np.ones((1, 1, 3))
    >>> lo.conv_transpose(x, w, stride=2)
    array([[[0., 0., 1., 1., 3., 2., 2.]]])
    >>> lo.conv_transpose(x, w, stride=2, padding=1, output_padding=1)
    array([[[0., 1., 1., 3., 2., 2.]]])
    >>> lo.conv_transpose(x, w, stride=2, padding="same")  # crops (0, 1), not (1, 0)
    array([[[0., 0., 1., 1., 3., 2.]]])
    >>> y = lo.conv_transpose(np.ones((2, 5, 6, 4)), np.ones((3, 3, 8, 4)), stride=2,
    ...                       layout="NHWC")
    >>> y.shape
    (2, 11, 13, 8)
    """
    return _conv_transpose(
        "conv_transpose",
        None,
        x,
        weight,
        bias,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        groups=groups,
        output_shape=output_shape,
        layout=layout,
        kernel_layout=kernel_layout,
        out_layout=out_layout,
    )


#: transposed convolutions that keep the scatter-add when large (strided ones, and unit-stride
#: ones with one group of few channels) run as the forward convolution of the (zero-inserted)
#: input when that fits one GEMM of at most this many multiply-adds (`_as_forward_conv`);
#: beyond, the zeros' share of the work outweighs the Python saved (1x4x4x64 -> 32, 4x4
#: stride 2, channels-last, 2**21 multiply-adds: 134 -> 140 us; 1x8x8x16 -> 16, 2**20: 125
#: -> 109 us)
TINY_STRIDED_MACS = 1 << 20

#: the checked geometries of recent transposed-conv calls (`_params.CheckedCache`)
_GEOMETRIES = CheckedCache()


def _conv_transpose(
    op,
    n_spatial,
    x,
    weight,
    bias,
    *,
    stride,
    padding,
    output_padding,
    dilation,
    groups,
    output_shape,
    layout,
    kernel_layout,
    out_layout,
):
    ops = prepare_conv(
        op,
        x,
        weight,
        bias,
        groups=groups_from_arg(groups, kernel_layout),
        layout=layout,
        kernel_layout_spec=kernel_layout,
        out_layout=out_layout,
        transposed=True,
        n_spatial=n_spatial,
    )
    spatial = ops.spatial
    geometry = _GEOMETRIES.get(
        (op, ops.in_sizes, ops.kernel_sizes, spatial),
        (stride, padding, output_padding, dilation, output_shape),
        lambda: transposed_crops(
            op,
            ops.in_sizes,
            ops.kernel_sizes,
            stride=stride,
            padding=padding,
            output_padding=output_padding,
            dilation=dilation,
            output_shape=output_shape,
            spatial=spatial,
        ),
    )
    if _AS_FORWARD_CONV:
        forward = _as_forward_conv(ops, spatial, geometry)
        if forward is not None:
            return forward
    sizes = dict(zip(spatial, geometry.out_sizes, strict=True))
    sizes.update(N=ops.batch, C=ops.c_out)
    out_spec = ops.out_layout.spec
    out_shape = tuple(sizes[c] for c in out_spec)
    cdtype = ops.compute_dtype
    out = np.empty(out_shape, dtype=cdtype)  # zeroed by conv_transpose_scatter
    if out.size:
        c_axis = out_spec.index("C")
        grouped_shape = (
            out_shape[:c_axis] + (ops.groups, ops.c_out // ops.groups) + out_shape[c_axis + 1 :]
        )
        conv_transpose_scatter(
            ops.x_grouped,
            ops.x_letters,
            ops.w_grouped.astype(cdtype, copy=False),
            ops.w_letters,
            out.reshape(grouped_shape),
            out_spec.replace("C", "GO"),
            spatial,
            geometry,
            zeroed=False,
        )
    add_bias(out, ops.out_layout, ops.bias)
    if out.dtype != ops.dtype:
        out = out.astype(ops.dtype)
    return out


#: unit-stride transposed convolutions (and small ones, `TINY_STRIDED_MACS`) run as the
#: forward convolution they equal (`_as_forward_conv`)
_AS_FORWARD_CONV = True
#: ... unit-stride ones when grouped, or with at least this many input and output channels:
#: with fewer, the forward conv's thin GEMMs lose to the scatter-add's one wide GEMM (3x3,
#: 2 threads, CF / CL ms scatter -> forward: 64 -> 64 on 8x56x56 11.9 / 12.4 -> 9.7 / 9.2, 128 -> 64
#: 6.5 / 5.1 -> 4.8 / 4.6, 64 -> 128 5.0 / 3.6 -> 3.2 / 2.9; but 32 -> 64 3.6 / 2.3 -> 3.7 /
#: 3.3, 32 -> 16 1.0 / 0.6 -> 1.3 / 1.1, 64 -> 32 5x5 7.3 / 4.3 -> 8.5 / 5.8)
FORWARD_MIN_CHANNELS = 64


def _as_forward_conv(ops, spatial: str, geometry: Geometry):
    """A transposed convolution as the forward convolution it equals, or None. Tap ``t`` of
    input ``i`` lands on ``o = i * s + t * d - crop``: the correlation of the input, with
    ``s - 1`` zeros inserted between neighbours along each axis of stride ``s``, with the
    kernel flipped along its spatial axes, padded by ``d * (k - 1) - crop`` before and
    whatever reaches the output size after (None when either is negative: crops beyond the
    kernel's spread). The kernel's ``I`` and ``O`` letters already name the forward roles
    (input and output channels per group), so the forward kernels (`im2col`, the flat taps,
    the fused depthwise chunks) take it as it is.

    Unit strides (no zeros) take it when grouped or with at least `FORWARD_MIN_CHANNELS`
    input and output channels: the input gradient of a stride-1 conv, 8x64x56x56 3x3, 12-15
    -> 9-10 ms; grouped 8x256x14x14 (32 groups) 7-13 -> 1.9 ms (the scatter-add's GEMMs per
    tap and group were the cost). Other strides, and unit strides with fewer channels (the
    forward conv's thin GEMMs), take it only when the forward convolution is small enough
    for one GEMM (`kernels.conv.tiny_macs`; 1x16x8x8 -> 8 3x3 stride 1: 98 -> 65 us):
    the zeros multiply the work by the strides' product, but a small call skips the
    scatter-add's per-tap and per-tile Python (`TINY_STRIDED_MACS`; 3-round old / new A/Bs,
    float32, us: 1x16x8x8 -> 8, 3x3 stride 2 padding 1, channels-first 185 -> 85;
    1x16x8x8 -> 16, 2x2 stride 2, 121 -> 80; 4x8x32, 1-D 4 stride 2 padding 1, 105 -> 67;
    ``conv_backward`` 2x16x8x8 3x3 stride 2 385 -> 266)."""
    c_per = ops.x_grouped.shape[ops.x_letters.index("C")]
    o_per = ops.w_grouped.shape[ops.w_letters.index("O")]
    unit = all(s == 1 for s in geometry.strides)
    # zeros to insert, or thin GEMMs: only a call small enough for one GEMM gains by it
    small_only = not unit or (ops.groups == 1 and min(c_per, o_per) < FORWARD_MIN_CHANNELS)
    sizes = tuple((n - 1) * s + 1 for n, s in zip(geometry.in_sizes, geometry.strides,
                                                  strict=True))
    pads = []
    for n_in, k, d, (crop, _), n_out in zip(sizes, geometry.kernel_sizes, geometry.dilations,
                                            geometry.pads, geometry.out_sizes, strict=True):
        before = d * (k - 1) - crop
        after = n_out - n_in - before + d * (k - 1)
        if before < 0 or after < 0:
            return None
        pads.append((before, after))
    ones = (1,) * len(spatial)
    forward = Geometry(sizes, geometry.kernel_sizes, ones, geometry.dilations, tuple(pads),
                       geometry.out_sizes)
    x = ops.x_grouped
    if small_only:
        itemsize = np.dtype(ops.compute_dtype).itemsize
        macs = tiny_macs(forward, x.size * math.prod(geometry.strides), ops.batch, ops.groups,
                         c_per, o_per, itemsize)
        if macs is None or macs > TINY_STRIDED_MACS:
            return None
    if not unit:
        axes = [ops.x_letters.index(c) for c in spatial]
        shape = list(x.shape)
        inserted = [slice(None)] * x.ndim
        for ax, size, s in zip(axes, sizes, geometry.strides, strict=True):
            shape[ax], inserted[ax] = size, slice(None, None, s)
        x_zeros = np.zeros(shape, dtype=x.dtype)
        x_zeros[tuple(inserted)] = x
        x = x_zeros
    flip = tuple(slice(None, None, -1) if c in spatial else slice(None) for c in ops.w_letters)
    return conv_forward(
        x, ops.x_letters, ops.w_grouped[flip], ops.w_letters, forward, ops.out_layout.spec,
        bias=ops.bias, dtype=ops.dtype, compute_dtype=ops.compute_dtype,
        algorithm="im2col" if small_only else "auto",
    )


@accepts_dask("conv_transpose")
def conv_transpose1d(
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
):
    """`conv_transpose` for 1-d inputs (``x`` must have 3 axes).

    Parameters, Returns and Raises are those of `conv_transpose`; additionally a ``ValueError``
    if ``x`` does not have 3 axes.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> lo.conv_transpose1d(np.ones((1, 1, 3)), np.ones((1, 2) + (2,) * 1), stride=2).shape
    (1, 2, 6)
    """
    return _conv_transpose(
        "conv_transpose1d",
        1,
        x,
        weight,
        bias,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        groups=groups,
        output_shape=output_shape,
        layout=layout,
        kernel_layout=kernel_layout,
        out_layout=out_layout,
    )


@accepts_dask("conv_transpose")
def conv_transpose2d(
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
):
    """`conv_transpose` for 2-d inputs (``x`` must have 4 axes).

    Parameters, Returns and Raises are those of `conv_transpose`; additionally a ``ValueError``
    if ``x`` does not have 4 axes.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> lo.conv_transpose2d(np.ones((1, 1, 3, 3)), np.ones((1, 2) + (2,) * 2), stride=2).shape
    (1, 2, 6, 6)
    """
    return _conv_transpose(
        "conv_transpose2d",
        2,
        x,
        weight,
        bias,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        groups=groups,
        output_shape=output_shape,
        layout=layout,
        kernel_layout=kernel_layout,
        out_layout=out_layout,
    )


@accepts_dask("conv_transpose")
def conv_transpose3d(
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
):
    """`conv_transpose` for 3-d inputs (``x`` must have 5 axes).

    Parameters, Returns and Raises are those of `conv_transpose`; additionally a ``ValueError``
    if ``x`` does not have 5 axes.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> lo.conv_transpose3d(np.ones((1, 1, 2, 2, 2)), np.ones((1, 2) + (2,) * 3), stride=2).shape
    (1, 2, 4, 4, 4)
    """
    return _conv_transpose(
        "conv_transpose3d",
        3,
        x,
        weight,
        bias,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        groups=groups,
        output_shape=output_shape,
        layout=layout,
        kernel_layout=kernel_layout,
        out_layout=out_layout,
    )
