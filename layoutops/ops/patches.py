"""Patch ops (SPEC section 4): `unfold` (im2col) and `fold` (col2im, its adjoint), N-d.

The layout decides the form of the patches:

- channels-first (``C`` before the spatial letters): ``(N, C * prod(kernel), L)`` with
  PyTorch's channel-major rows (row ``c * prod(kernel) + kernel_offset``) and ``L`` the
  output positions in row-major order — PyTorch's ``F.unfold`` / ``F.fold`` in 2-D and ONNX
  ``Col2Im`` in N-d;
- channels-last (``C`` after them): ``(N, *out_spatial, prod(kernel) * C)``, each patch
  ordered (kernel offsets..., c) as ``tf.image.extract_patches``.

Kernel offsets are flattened row-major in the layout's spatial order. The output positions
follow the conv size rule ``floor((in + pb + pe - dilation * (k - 1) - 1) / stride) + 1``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..errors import LayoutError
from ..kernels import patches as kpatches
from ..layouts import Layout, activation_layout
from ._conv_common import check_rank
from ._dtypes import as_array, compute_dtype
from ._params import conv_geometry, normalize_tuple

__all__ = ["unfold", "fold"]


def _form(op: str, lay: Layout) -> bool:
    """True for the channels-last form; `LayoutError` when C sits between spatial letters."""
    if lay.channels_first:
        return False
    if lay.channels_last:
        return True
    raise LayoutError(
        f"`{op}`: layout {lay.spec!r} has C between spatial letters; the patches need C "
        "before every spatial letter (channels-first) or after them (channels-last)"
    )


def _canonical(lay: Layout, channels_last: bool) -> tuple[int, ...]:
    """Axes of an array in ``lay`` ordered N, C, spatial... (or N, spatial..., C)."""
    spatial = lay.spatial_axes
    if channels_last:
        return (lay.batch_axis, *spatial, lay.channel_axis)
    return (lay.batch_axis, lay.channel_axis, *spatial)


def unfold(x, kernel_size, *, stride=1, padding=0, dilation=1, layout=None):
    """Extract sliding patches (im2col), N-d, in the layout's own form.

    Parameters
    ----------
    x : array_like
        ``(N, C, *spatial)`` in ``layout`` (any numeric dtype).
    kernel_size, stride, dilation : int or tuple of int
        Per spatial axis, in the layout's spatial order.
    padding : int, tuple or {'valid', 'same', 'same_lower'}
        Zero padding, every form of SPEC section 3; patch cells in the padding are 0.
    layout : str, optional
        The activation layout of ``x``; channels-first or channels-last.

    Returns
    -------
    ndarray
        Channels-first: ``(N, C * prod(kernel_size), L)``; channels-last:
        ``(N, *out_spatial, prod(kernel_size) * C)``. Same dtype as ``x``.

    Raises
    ------
    LayoutError
        A layout with C between spatial letters.
    ValueError
        Bad sizes or an output size < 1.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> x = np.arange(9).reshape(1, 1, 3, 3)
    >>> lo.unfold(x, 2)[0].tolist()      # rows: kernel offsets; columns: the 4 positions
    [[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]]
    >>> lo.unfold(x.transpose(0, 2, 3, 1), 2, layout="NHWC")[0, 0, 0].tolist()
    [0, 1, 3, 4]
    >>> lo.unfold(np.ones((2, 3, 8)), 3, stride=2, padding=1).shape
    (2, 9, 4)
    """
    op = "unfold"
    x = as_array(x, "x", op)
    check_rank(op, x, None)
    try:
        lay = activation_layout(x.ndim, layout)
    except LayoutError as e:
        raise LayoutError(f"`{op}`: {e}") from e
    channels_last = _form(op, lay)
    n = lay.n_spatial
    kernel = normalize_tuple(kernel_size, n, "kernel_size", op)
    in_sizes = tuple(x.shape[ax] for ax in lay.spatial_axes)
    geom = conv_geometry(
        op, in_sizes, kernel, stride=stride, padding=padding, dilation=dilation,
        spatial=lay.spatial,
    )
    view = x.transpose(_canonical(lay, channels_last))
    return kpatches.unfold(view, geom, channels_last=channels_last)


def _is_seq(v) -> bool:
    return not isinstance(v, (str, numbers.Integral)) and hasattr(v, "__len__")


def _fold_rank(cols: np.ndarray, output_size, kernel_size, layout) -> int:
    for v in (output_size, kernel_size):
        if _is_seq(v):
            return len(v)
    if cols.ndim != 3:
        return cols.ndim - 2  # only the channels-last form has another rank
    try:  # a rank-3 cols is 2-D channels-first (PyTorch) or 1-D channels-last
        return 2 if activation_layout(4, layout).channels_first else 1
    except LayoutError:
        return 1


def fold(cols, output_size, kernel_size, *, stride=1, padding=0, dilation=1, layout=None):
    """Sum patches back into an image (col2im): the adjoint of `unfold`, N-d.

    Overlapping patch cells add up; cells that fall in the padding are dropped. So
    ``fold(unfold(x))`` is ``x`` times the number of patches covering each cell, and the fold
    of ones is that count.

    Parameters
    ----------
    cols : array_like
        Patches in the form `unfold` returns for ``layout``: ``(N, C * prod(kernel_size), L)``
        (channels-first) or ``(N, *out_spatial, prod(kernel_size) * C)`` (channels-last).
        Numeric, not bool; half types accumulate in float32.
    output_size : int or tuple of int
        The image's spatial sizes (layout order).
    kernel_size, stride, padding, dilation
        As in `unfold`.
    layout : str, optional
        The layout of the OUTPUT image; it decides the form of ``cols``. The spatial rank is
        ``len(output_size)`` (or ``len(kernel_size)``); with ints only, a rank-3 ``cols`` is
        2-D channels-first (PyTorch) unless the layout is channels-last (then 1-D).

    Returns
    -------
    ndarray
        ``(N, C, *output_size)`` in ``layout``, dtype of ``cols``.

    Raises
    ------
    ValueError
        ``cols`` of the wrong shape for the geometry, bad sizes.
    TypeError
        Bool or non-numeric ``cols``.
    LayoutError
        A layout with C between spatial letters, or a rank mismatch.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> lo.fold(np.ones((1, 4, 4)), (3, 3), 2)[0, 0].tolist()   # overlap counts
    [[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]
    >>> x = np.arange(8.0).reshape(1, 2, 4)
    >>> np.array_equal(lo.fold(lo.unfold(x, 2, stride=2), 4, 2, stride=2, layout="NCW"), x)
    True
    """
    op = "fold"
    cols = as_array(cols, "cols", op)
    if cols.dtype.kind == "b":
        raise TypeError(f"`{op}`: `cols` must be a numeric (not bool) array, got dtype bool")
    n = _fold_rank(cols, output_size, kernel_size, layout)
    try:
        lay = activation_layout(n + 2, layout)
    except LayoutError as e:
        raise LayoutError(f"`{op}`: {e}") from e
    channels_last = _form(op, lay)
    sizes = normalize_tuple(output_size, n, "output_size", op)
    kernel = normalize_tuple(kernel_size, n, "kernel_size", op)
    geom = conv_geometry(
        op, sizes, kernel, stride=stride, padding=padding, dilation=dilation,
        spatial=lay.spatial,
    )
    k = math.prod(kernel)
    blocks = geom.out_sizes
    if channels_last:
        want = f"(N, {', '.join(map(str, blocks))}, {k}*C)"
        ok = cols.ndim == n + 2 and tuple(cols.shape[1:-1]) == blocks and cols.shape[-1] % k == 0
    else:
        want = f"(N, {k}*C, {math.prod(blocks)})"
        ok = cols.ndim == 3 and cols.shape[1] % k == 0 and cols.shape[2] == math.prod(blocks)
    if not ok:
        raise ValueError(
            f"`{op}`: `cols` for layout {lay.spec} with output_size {sizes}, kernel {kernel} "
            f"must have shape {want} ({blocks} blocks), got {cols.shape}"
        )
    batch = cols.shape[0]
    if channels_last:
        c = cols.shape[-1] // k
        cols_view = cols.reshape(batch, *blocks, k, c)
    else:
        c = cols.shape[1] // k
        cols_view = cols.reshape(batch, c, k, *blocks)
    shape = [0] * (n + 2)
    shape[lay.batch_axis], shape[lay.channel_axis] = batch, c
    for ax, size in zip(lay.spatial_axes, sizes, strict=True):
        shape[ax] = size
    out = np.zeros(shape, cols.dtype)
    floating = cols.dtype.kind == "f" or cols.dtype.name == "bfloat16"
    cdtype = compute_dtype(cols.dtype) if floating else cols.dtype
    kpatches.fold(
        cols_view, out.transpose(_canonical(lay, channels_last)), geom,
        channels_last=channels_last, compute_dtype=cdtype,
    )
    return out
