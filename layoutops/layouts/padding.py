"""Padding specs and max-pool indices from other frameworks' conventions to ours and back.

This library's padding is ``((begin, end), ...)``: one pair per spatial axis, in the order the
spatial letters appear in the layout. Its max-pool indices are PyTorch's: for every output
cell, the flat row-major index (in the layout's spatial order) of the winner within its own
spatial plane.

Imports only numpy and the layout core.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..errors import LayoutError
from .layout import ACTIVATION, Layout, LayoutLike

__all__ = ["pads_from_onnx", "pads_from_torch", "pads_from_tf", "convert_indices"]

Pads = tuple[tuple[int, int], ...]


def _ints(values, name: str, where: str) -> list[int]:
    try:
        flat = [v for v in np.asarray(values, dtype=object).ravel()]
    except Exception:  # pragma: no cover - np.asarray(object) accepts nearly anything
        flat = None
    if flat is None or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) for v in flat
    ):
        raise TypeError(f"`{where}`: `{name}` must be a sequence of ints, got {values!r}")
    return [int(v) for v in flat]


def _non_negative(pads: Pads, where: str, given) -> Pads:
    if any(b < 0 or e < 0 for b, e in pads):
        raise ValueError(f"`{where}`: padding must be >= 0, got {given!r}")
    return pads


def _activation(layout: LayoutLike, where: str) -> Layout:
    if isinstance(layout, str) and layout.lower() in ("channels_first", "channels_last"):
        raise LayoutError(
            f"`{where}`: {layout!r} needs a rank; give a concrete layout such as 'NCHW' or 'NHWC'"
        )
    lay = Layout(layout)
    if lay.kind != ACTIVATION:
        raise LayoutError(
            f"`{where}`: layout {lay.spec!r} is not an activation layout (N, C and spatial letters)"
        )
    return lay


def pads_from_onnx(pads) -> Pads:
    """ONNX ``pads`` ``[b1, ..., bn, e1, ..., en]`` as ``((b1, e1), ..., (bn, en))``.

    ONNX tensors are channels-first, so the spatial axes are in the tensor's order; for an
    input converted to another layout, the pairs follow the same spatial letters.

    Parameters
    ----------
    pads : sequence of int
        An even number of non-negative ints: all begins, then all ends.

    Returns
    -------
    tuple of (int, int)

    Raises
    ------
    TypeError
        If an entry is not an int.
    ValueError
        If the length is odd or zero, or a value is negative.

    Examples
    --------
    >>> import layoutops as lo
    >>> lo.pads_from_onnx([1, 2, 3, 4])      # top=1, left=2, bottom=3, right=4
    ((1, 3), (2, 4))
    """
    values = _ints(pads, "pads", "pads_from_onnx")
    if not values or len(values) % 2:
        raise ValueError(
            f"`pads_from_onnx`: `pads` must have 2 ints per spatial axis (all begins, then all "
            f"ends), got {len(values)}: {pads!r}"
        )
    n = len(values) // 2
    return _non_negative(
        tuple((values[k], values[n + k]) for k in range(n)), "pads_from_onnx", pads
    )


def pads_from_torch(pad, layout: LayoutLike) -> Pads:
    """PyTorch ``F.pad``'s ``pad`` for a tensor in ``layout`` as ``((begin, end), ...)``.

    ``F.pad`` lists pairs from the LAST axis backwards: ``(last_begin, last_end,
    second_last_begin, ...)``. For an ``NCHW`` tensor the first pair is W, then H; for an
    ``NHWC`` tensor the first pair is C (which must be 0), then W, then H. Axes it does not
    reach get ``(0, 0)``. The result is in the layout's spatial order.

    Parameters
    ----------
    pad : sequence of int
        An even number of ints, at most two per axis of the tensor.
    layout : str or Layout
        The tensor's concrete activation layout (not an alias: ``F.pad`` does not tell the rank).

    Returns
    -------
    tuple of (int, int)
        One pair per spatial axis.

    Raises
    ------
    ValueError
        If the length is odd or longer than two per axis, a value is negative, or ``N``/``C``
        would be padded.
    LayoutError
        If ``layout`` is not a concrete activation layout.

    Examples
    --------
    >>> import layoutops as lo
    >>> lo.pads_from_torch((1, 2, 3, 4), "NCHW")          # W: (1, 2), H: (3, 4)
    ((3, 4), (1, 2))
    >>> lo.pads_from_torch((0, 0, 1, 2, 3, 4), "NHWC")    # C: (0, 0), W: (1, 2), H: (3, 4)
    ((3, 4), (1, 2))
    """
    lay = _activation(layout, "pads_from_torch")
    values = _ints(pad, "pad", "pads_from_torch")
    if len(values) % 2 or len(values) > 2 * lay.ndim:
        raise ValueError(
            f"`pads_from_torch`: `pad` must have an even number of ints, at most 2 per axis of "
            f"{lay.spec!r} ({2 * lay.ndim}), got {len(values)}: {pad!r}"
        )
    by_letter = {c: (0, 0) for c in lay.spec}
    for k in range(len(values) // 2):
        by_letter[lay.spec[lay.ndim - 1 - k]] = (values[2 * k], values[2 * k + 1])
    for letter in "NC":
        if by_letter[letter] != (0, 0):
            raise ValueError(
                f"`pads_from_torch`: `pad` {pad!r} pads the {letter} axis of {lay.spec!r} by "
                f"{by_letter[letter]}; only spatial axes can be padded"
            )
    return _non_negative(tuple(by_letter[c] for c in lay.spatial), "pads_from_torch", pad)


def pads_from_tf(paddings, layout: LayoutLike) -> Pads:
    """TensorFlow ``paddings`` (one ``[begin, end]`` per axis) as ``((begin, end), ...)``.

    For ``NHWC``: ``[[0, 0], [top, bottom], [left, right], [0, 0]]`` -> ``((top, bottom),
    (left, right))``. The result is in the layout's spatial order.

    Parameters
    ----------
    paddings : sequence of (int, int)
        One pair per axis of ``layout``, in the layout's axis order.
    layout : str or Layout
        The tensor's concrete activation layout.

    Returns
    -------
    tuple of (int, int)

    Raises
    ------
    ValueError
        If the shape is not ``(ndim, 2)``, a value is negative, or ``N``/``C`` would be padded.
    LayoutError
        If ``layout`` is not a concrete activation layout.

    Examples
    --------
    >>> import layoutops as lo
    >>> lo.pads_from_tf([[0, 0], [1, 2], [3, 4], [0, 0]], "NHWC")
    ((1, 2), (3, 4))
    """
    lay = _activation(layout, "pads_from_tf")
    values = _ints(paddings, "paddings", "pads_from_tf")
    shape = np.shape(np.asarray(paddings, dtype=object))
    if shape != (lay.ndim, 2):
        raise ValueError(
            f"`pads_from_tf`: `paddings` must be {lay.ndim} [begin, end] pairs, one per axis of "
            f"{lay.spec!r}, got shape {shape}: {paddings!r}"
        )
    by_letter = {c: (values[2 * k], values[2 * k + 1]) for k, c in enumerate(lay.spec)}
    for letter in "NC":
        if by_letter[letter] != (0, 0):
            raise ValueError(
                f"`pads_from_tf`: `paddings` {paddings!r} pads the {letter} axis of {lay.spec!r} "
                f"by {by_letter[letter]}; only spatial axes can be padded"
            )
    return _non_negative(tuple(by_letter[c] for c in lay.spatial), "pads_from_tf", paddings)


INDEX_FORMATS = ("onnx", "tf")


def convert_indices(
    indices, x_shape, *, layout: LayoutLike, to: str, storage_order: int = 0
) -> np.ndarray:
    """Max-pool indices from this library's (PyTorch's) form to ONNX's or TensorFlow's.

    Ours: the flat row-major index, in the layout's spatial order, of the winner within its own
    spatial plane. With spatial coordinates ``s_1..s_k`` (layout order) of sizes ``S_1..S_k``,
    batch ``n`` and channel ``c`` of the output cell:

    - ``to="onnx"``, ``storage_order=0``: ``(n * C + c) * prod(S) + row_major(s)``, flat over
      the whole ``N x C x spatial`` tensor (ONNX MaxPool ``Indices``).
    - ``to="onnx"``, ``storage_order=1``: ``(n * C + c) * prod(S) + s_1 + S_1 * (s_2 + S_2 *
      ...)``, the spatial part column-major (as the ONNX reference implementation computes it).
    - ``to="tf"``: ``row_major(s) * C + c``, flattened over the channels-last plane without the
      batch (``tf.nn.max_pool_with_argmax`` with ``include_batch_in_index=False``: ``(y * W +
      x) * C + c``).

    Parameters
    ----------
    indices : array_like of int
        Our indices, shaped like the pooled output, in ``layout``.
    x_shape : sequence of int
        The shape of the pooled input, in ``layout``.
    layout : str or Layout
        The activation layout of both (``"channels_first"``/``"channels_last"`` resolved by
        rank).
    to : str
        ``"onnx"`` or ``"tf"``.
    storage_order : int, default 0
        ONNX's ``storage_order`` (0 row-major, 1 column-major); must be 0 for ``"tf"``.

    Returns
    -------
    numpy.ndarray of int64
        The converted indices, same shape and layout as ``indices``.

    Raises
    ------
    LayoutError
        If ``layout`` is not an activation layout of the rank of ``x_shape`` and ``indices``.
    ValueError
        For an unknown format or storage order, batch/channel sizes that differ between
        ``indices`` and ``x_shape``, or an index outside the spatial plane.
    TypeError
        If ``indices`` is not an integer array.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> idx = np.array([[[[4]], [[7]]]])            # NCHW, x of shape (1, 2, 3, 3)
    >>> lo.convert_indices(idx, (1, 2, 3, 3), layout="NCHW", to="onnx").ravel()
    array([ 4, 16])
    >>> lo.convert_indices(idx, (1, 2, 3, 3), layout="NCHW", to="onnx", storage_order=1).ravel()
    array([ 4, 14])
    >>> lo.convert_indices(idx, (1, 2, 3, 3), layout="NCHW", to="tf").ravel()
    array([ 8, 15])
    """
    from .layout import _resolve_alias

    idx = np.asarray(indices)
    x_shape = tuple(_ints(x_shape, "x_shape", "convert_indices"))
    lay = _resolve_alias(layout, len(x_shape))
    if lay.kind != ACTIVATION:
        raise LayoutError(
            f"`convert_indices`: layout {lay.spec!r} is not an activation layout "
            "(N, C and spatial letters)"
        )
    lay.check_ndim(len(x_shape), "input shape `x_shape`")
    lay.check_ndim(idx.ndim, "`indices` array")
    if to not in INDEX_FORMATS:
        raise ValueError(
            f"`convert_indices`: `to` must be one of {', '.join(INDEX_FORMATS)}, got {to!r}"
        )
    if storage_order not in (0, 1) or isinstance(storage_order, bool):
        raise ValueError(
            f"`convert_indices`: `storage_order` must be 0 or 1, got {storage_order!r}"
        )
    if to == "tf" and storage_order != 0:
        raise ValueError(
            "`convert_indices`: `storage_order`=1 is an ONNX option; TF's indices are "
            f"row-major, got storage_order={storage_order}"
        )
    if not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"`convert_indices`: `indices` must be integers, got dtype {idx.dtype}")
    n_ax, c_ax = lay.batch_axis, lay.channel_axis
    for letter, ax in (("N", n_ax), ("C", c_ax)):
        if idx.shape[ax] != x_shape[ax]:
            raise ValueError(
                f"`convert_indices`: `indices` has {letter}={idx.shape[ax]} but `x_shape` has "
                f"{letter}={x_shape[ax]} (layout {lay.spec!r})"
            )
    sizes = [x_shape[a] for a in lay.spatial_axes]
    plane = int(np.prod(sizes, dtype=np.int64))
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= plane):
        raise ValueError(
            f"`convert_indices`: indices must lie in [0, {plane}) (the spatial plane "
            f"{tuple(sizes)}), got values in [{idx.min()}, {idx.max()}]"
        )
    # broadcastable n and c index grids in the indices' own layout
    shape1 = [1] * idx.ndim
    shape1[n_ax] = idx.shape[n_ax]
    n = np.arange(idx.shape[n_ax], dtype=np.int64).reshape(shape1)
    shape1 = [1] * idx.ndim
    shape1[c_ax] = idx.shape[c_ax]
    c = np.arange(idx.shape[c_ax], dtype=np.int64).reshape(shape1)
    channels = x_shape[c_ax]
    if to == "tf":
        return idx * channels + c
    if storage_order == 1:
        coords = np.unravel_index(idx, sizes)  # row-major coordinates, layout spatial order
        spatial = np.zeros_like(idx)
        stride = 1
        for coord, size in zip(coords, sizes, strict=True):
            spatial += coord * stride
            stride *= size
    else:
        spatial = idx
    return (n * channels + c) * plane + spatial
