"""Convolution (cross-correlation) in any layout: `conv`, `conv1d`, `conv2d`, `conv3d` and
`depthwise_conv2d` (SPEC section 4).

The arguments are validated and normalized here, once (`prepare_conv` for the operands,
`conv_geometry` for stride / dilation / padding); the computation is
`layoutops.kernels.conv.conv_forward`, which works tile by tile on strided views.
"""

from __future__ import annotations

from ..kernels.conv import ALGORITHMS, PADDING_MODES, conv_forward
from ._conv_common import (
    check_choice,
    check_padding_mode_limits,
    groups_from_arg,
    prepare_conv,
)
from ._params import CheckedCache, conv_geometry
from .dask_support import accepts_dask

__all__ = ["conv", "conv1d", "conv2d", "conv3d", "depthwise_conv2d", "ALGORITHMS"]


#: the checked geometries of recent conv calls (`_params.CheckedCache`): the checks took
#: 0.02 ms of every call
_GEOMETRIES = CheckedCache()


def _checked_geometry(op, ops, stride, padding, dilation, padding_mode):
    geometry = conv_geometry(
        op,
        ops.in_sizes,
        ops.kernel_sizes,
        stride=stride,
        padding=padding,
        dilation=dilation,
        spatial=ops.spatial,
    )
    check_padding_mode_limits(op, padding_mode, geometry, ops.spatial)
    return geometry


def _conv(
    op: str,
    x,
    weight,
    bias,
    *,
    stride,
    padding,
    dilation,
    groups,
    padding_mode,
    layout,
    kernel_layout,
    out_layout,
    algorithm,
    n_spatial=None,
    depthwise=False,
):
    padding_mode = check_choice(op, "padding_mode", padding_mode, tuple(PADDING_MODES))
    algorithm = check_choice(op, "algorithm", algorithm, ALGORITHMS)
    ops = prepare_conv(
        op,
        x,
        weight,
        bias,
        groups=groups,
        layout=layout,
        kernel_layout_spec=kernel_layout,
        out_layout=out_layout,
        depthwise=depthwise,
        n_spatial=n_spatial,
    )
    geometry = _GEOMETRIES.get(
        (op, ops.in_sizes, ops.kernel_sizes, ops.spatial, padding_mode),
        (stride, padding, dilation),
        lambda: _checked_geometry(op, ops, stride, padding, dilation, padding_mode),
    )
    return conv_forward(
        ops.x_grouped,
        ops.x_letters,
        ops.w_grouped,
        ops.w_letters,
        geometry,
        ops.out_layout.spec,
        bias=ops.bias,
        dtype=ops.dtype,
        compute_dtype=ops.compute_dtype,
        padding_mode=padding_mode,
        algorithm=algorithm,
    )


@accepts_dask("conv")
def conv(
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
):
    """N-d convolution (cross-correlation) in any layout.

    ``out[n, o, p] = bias[o] + sum_{c, k} weight[o, c, k] * x_padded[n, g*C/G + c, p*s + k*d]``
    for output channel ``o`` in group ``g``, in whatever axis order the layouts give. The spatial
    rank is ``x.ndim - 2``.

    Parameters
    ----------
    x : array_like
        The input, shape ``(N, C_in, *spatial)`` in ``layout``.
    weight : array_like
        The kernel in ``kernel_layout``: ``O = C_out``, ``I = C_in / groups`` (``OIHW``
        shape ``(C_out, C_in / groups, kh, kw)``); a ``G`` layout such as ``GOIHW`` counts
        ``O`` and ``I`` per group and sets ``groups`` itself.
    bias : array_like, optional
        ``(C_out,)`` or any shape that squeezes to it; cast to the result dtype.
    stride, dilation : int or tuple of int
        One value, or one per spatial axis in ``layout``'s spatial order; >= 1.
    padding : int, tuple or str
        ``p``; ``(ph, pw)``; ``(top, bottom, left, right)`` (begin, end per axis);
        ``((top, bottom), (left, right))``; ``"valid"``, ``"same"`` (TF SAME / ONNX SAME_UPPER:
        output ``ceil(in / stride)``, the odd unit at the end) or ``"same_lower"``.
    groups : int
        Must divide ``C_in`` and ``C_out``.
    padding_mode : {'zeros', 'reflect', 'replicate', 'circular'}
        PyTorch's meanings; reflect needs padding < the input size, circular <= it.
    layout : str, optional
        The activation layout (``"NCHW"``, ``"NHWC"``, ``"channels_last"``, ...); default
        from `layoutops.default_layout` (channels-first).
    kernel_layout : str, optional
        Default: ``OI`` + spatial for channels-first input (``OIHW``), spatial + ``IO`` for
        channels-last (``HWIO``); required when ``C`` sits between spatial letters.
    out_layout : str, optional
        The output layout (default: ``layout``); same spatial letters.
    algorithm : {'auto', 'im2col', 'per_tap', 'direct'}
        ``"im2col"``: per output tile one contiguous column copy and one GEMM;
        ``"per_tap"``: one GEMM per kernel offset on a shifted strided view, no column buffer;
        ``"direct"``: multiply-accumulate over kernel offsets with ufuncs, for depthwise;
        ``"auto"``: ``direct`` for depthwise convs with many groups and at most a few
        outputs per group (`layoutops.kernels.conv.choose_algorithm`), else ``im2col``.
        All give the same result up to rounding (see `layoutops.kernels.conv`).

    Returns
    -------
    ndarray
        Shape ``(N, C_out, *out)`` in ``out_layout``, C-contiguous, with
        ``out = floor((in + pb + pe - dilation * (k - 1) - 1) / stride) + 1`` per axis; dtype
        ``np.result_type(x, weight)`` (float16 and bfloat16 accumulate in float32).

    Raises
    ------
    TypeError
        Integer, bool or non-numeric ``x`` or ``weight``.
    ValueError
        Wrong ranks, channels that do not match ``groups``, bad stride / dilation / padding,
        unknown ``padding_mode`` or ``algorithm``, reflect / circular padding too large, an
        output size below 1, a bias of the wrong size. `LayoutError` (a ``ValueError``) for
        invalid layouts.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> w = np.arange(4.0).reshape(1, 1, 2, 2)
    >>> lo.conv(x, w)[0, 0]
    array([[24., 30., 36.],
           [48., 54., 60.],
           [72., 78., 84.]])
    >>> x_nhwc = x.transpose(0, 2, 3, 1)
    >>> w_hwio = w.transpose(2, 3, 1, 0)
    >>> lo.conv(x_nhwc, w_hwio, layout="NHWC")[0, :, :, 0]
    array([[24., 30., 36.],
           [48., 54., 60.],
           [72., 78., 84.]])
    >>> lo.conv(np.ones((2, 6, 5, 5)), np.ones((4, 3, 3, 3)), groups=2, stride=2,
    ...         padding="same").shape
    (2, 4, 3, 3)
    """
    return _conv(
        "conv",
        x,
        weight,
        bias,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups_from_arg(groups, kernel_layout),
        padding_mode=padding_mode,
        layout=layout,
        kernel_layout=kernel_layout,
        out_layout=out_layout,
        algorithm=algorithm,
    )


def _fixed_rank(n: int):
    name = f"conv{n}d"

    def fn(
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
    ):
        return _conv(
            name,
            x,
            weight,
            bias,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups_from_arg(groups, kernel_layout),
            padding_mode=padding_mode,
            layout=layout,
            kernel_layout=kernel_layout,
            out_layout=out_layout,
            algorithm=algorithm,
            n_spatial=n,
        )

    fn.__name__ = fn.__qualname__ = name
    return accepts_dask("conv")(fn)


conv1d = _fixed_rank(1)
conv1d.__doc__ = """1-D convolution: `conv` with ``x`` of rank 3 (``NCW``/``NWC``/...).

Same parameters as `conv`; ``ValueError`` if ``x.ndim != 3``.

Examples
--------
>>> import numpy as np
>>> import layoutops as lo
>>> lo.conv1d(np.arange(6.0).reshape(1, 1, 6), np.ones((1, 1, 3))).tolist()
[[[3.0, 6.0, 9.0, 12.0]]]
>>> lo.conv1d(np.ones((2, 10, 3)), np.ones((3, 3, 16)), padding="same", layout="NWC").shape
(2, 10, 16)
"""

conv2d = _fixed_rank(2)
conv2d.__doc__ = """2-D convolution: `conv` with ``x`` of rank 4 (``NCHW``/``NHWC``/...).

Same parameters as `conv`; ``ValueError`` if ``x.ndim != 4``.

Examples
--------
>>> import numpy as np
>>> import layoutops as lo
>>> x = np.arange(16.0).reshape(1, 1, 4, 4)
>>> w = np.arange(9.0).reshape(1, 1, 3, 3)
>>> lo.conv2d(x, w, padding=1, stride=(3, 1))[0, 0]
array([[ 73., 121., 154., 103.],
       [139., 187., 202., 113.]])
>>> lo.conv2d(np.ones((2, 32, 32, 3)), np.ones((3, 3, 3, 64)), padding="same",
...           layout="NHWC").shape
(2, 32, 32, 64)
"""

conv3d = _fixed_rank(3)
conv3d.__doc__ = """3-D convolution: `conv` with ``x`` of rank 5 (``NCDHW``/``NDHWC``/...).

Same parameters as `conv`; ``ValueError`` if ``x.ndim != 5``.

Examples
--------
>>> import numpy as np
>>> import layoutops as lo
>>> lo.conv3d(np.ones((1, 2, 4, 4, 4)), np.ones((3, 2, 3, 3, 3))).shape
(1, 3, 2, 2, 2)
>>> lo.conv3d(np.ones((1, 4, 4, 4, 2)), np.ones((3, 3, 3, 2, 3)), layout="NDHWC")[0, 0, 0, 0]
array([54., 54., 54.])
"""


@accepts_dask("depthwise")
def depthwise_conv2d(
    x,
    weight,
    bias=None,
    *,
    stride=1,
    padding=0,
    dilation=1,
    padding_mode="zeros",
    layout=None,
    kernel_layout=None,
    out_layout=None,
):
    """Depthwise 2-D convolution: every input channel with its own ``M`` filters.

    ``groups = C_in``, ``C_out = C_in * M`` with output channel ``c * M + m`` (PyTorch and TF
    order).

    Parameters
    ----------
    x : array_like
        Rank 4, in ``layout``.
    weight : array_like
        Default layout: PyTorch's ``(C * M, 1, kh, kw)`` as ``OIHW`` for channels-first input,
        Keras' ``(kh, kw, C, M)`` as ``HWCM`` for channels-last input; any layout via
        ``kernel_layout`` (e.g. ``"HWCM"`` with NCHW input).
    bias : array_like, optional
        ``(C * M,)`` or a shape that squeezes to it.
    stride, padding, dilation, padding_mode, layout, out_layout
        As in `conv`.
    kernel_layout : str, optional
        See ``weight``.

    Returns
    -------
    ndarray
        Shape ``(N, C * M, H_out, W_out)`` in ``out_layout``.

    Raises
    ------
    TypeError, ValueError
        As `conv`; also when the kernel does not have one input channel per group.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> x = np.arange(18.0).reshape(1, 2, 3, 3)
    >>> w = np.arange(18.0).reshape(2, 1, 3, 3)
    >>> lo.depthwise_conv2d(x, w).ravel().tolist()
    [204.0, 1581.0]
    >>> x_nhwc = x.transpose(0, 2, 3, 1)
    >>> w_hwcm = w.reshape(2, 1, 3, 3).transpose(2, 3, 0, 1)
    >>> lo.depthwise_conv2d(x_nhwc, w_hwcm, layout="NHWC").ravel().tolist()
    [204.0, 1581.0]
    """
    return _conv(
        "depthwise_conv2d",
        x,
        weight,
        bias,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=None,
        padding_mode=padding_mode,
        layout=layout,
        kernel_layout=kernel_layout,
        out_layout=out_layout,
        algorithm="auto",
        n_spatial=2,
        depthwise=True,
    )
