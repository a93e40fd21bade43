"""Patch kernels: unfold (im2col as a layout) and fold (its adjoint, col2im).

Both loop over the kernel offsets, like the pools: for one offset, the output positions whose
tap lies inside the input form a box, and the cells they read are one strided slice of the
input. ``unfold`` copies that slice into its row (or column) of the result; ``fold`` adds the
row back into the image. Padding cells are never read (their patch entries stay 0) and never
written (fold drops them).

Two result forms, picked by the caller from the layout:

- ``channels_last=False``: the patches as ``(N, C, K, *out_spatial)``, reshaped for free to
  PyTorch's ``(N, C * K, L)`` (channel-major rows, ``K = prod(kernel)``, ``L =
  prod(out_spatial)``);
- ``channels_last=True``: ``(N, *out_spatial, K, C)``, reshaped for free to
  ``(N, *out_spatial, K * C)`` (``tf.image.extract_patches`` order).

The input is addressed through a transposed *view* ``(N, C, *spatial)`` or
``(N, *spatial, C)`` of its own layout, never a copy.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from .geometry import Geometry
from .plan import split_tiles
from .pool import tap_ranges

__all__ = ["unfold", "fold"]


def _offset_boxes(geom: Geometry):
    """Per kernel offset in window order: its flat index and per-axis ``(a, b, p0)``, or None
    when some axis has no in-bounds tap (every output reads padding there)."""
    per_axis = [
        tap_ranges(
            geom.in_sizes[i], geom.kernel_sizes[i], geom.strides[i], geom.dilations[i],
            geom.pads[i][0], 0, geom.out_sizes[i],
        )
        for i in range(geom.n_spatial)
    ]
    for flat, boxes in enumerate(itertools.product(*per_axis)):
        yield flat, (None if any(b is None for b in boxes) else boxes)


def _slices(geom: Geometry, boxes):
    dst = tuple(slice(a, b) for a, b, _ in boxes)
    src = tuple(
        slice(p0, p0 + (b - a - 1) * s + 1, s)
        for (a, b, p0), s in zip(boxes, geom.strides, strict=True)
    )
    return dst, src


def unfold(x_view: np.ndarray, geom: Geometry, *, channels_last: bool) -> np.ndarray:
    """Patches of ``x_view`` (``(N, C, *spatial)``, or ``(N, *spatial, C)`` when
    ``channels_last``), in the form the module docstring describes, dtype of ``x_view``."""
    n_batch = x_view.shape[0]
    c = x_view.shape[-1] if channels_last else x_view.shape[1]
    k = math.prod(geom.kernel_sizes)
    out_sp = geom.out_sizes
    if channels_last:
        cols = np.zeros((n_batch, *out_sp, k, c), x_view.dtype)
    else:
        cols = np.zeros((n_batch, c, k, *out_sp), x_view.dtype)
    if cols.size:
        for flat, boxes in _offset_boxes(geom):
            if boxes is None:
                continue
            dst, src = _slices(geom, boxes)
            whole = slice(None)
            if channels_last:
                cols[(whole, *dst, flat)] = x_view[(whole, *src)]
            else:
                cols[(whole, whole, flat, *dst)] = x_view[(whole, whole, *src)]
    if channels_last:
        return cols.reshape(n_batch, *out_sp, k * c)
    return cols.reshape(n_batch, c * k, math.prod(out_sp))


def fold(
    cols: np.ndarray,
    out_view: np.ndarray,
    geom: Geometry,
    *,
    channels_last: bool,
    compute_dtype,
) -> None:
    """Add the patches ``cols`` (``(N, C, K, *out_spatial)``, or ``(N, *out_spatial, K, C)``
    when ``channels_last``) into the zero image ``out_view`` (``(N, C, *spatial)`` or
    ``(N, *spatial, C)``, a view of the result in its own layout), summing overlaps.

    When ``compute_dtype`` differs from the image's dtype (half types), the sums run in
    ``compute_dtype`` on batch tiles under the workspace limit."""
    compute_dtype = np.dtype(compute_dtype)
    direct = compute_dtype == out_view.dtype
    if out_view.size == 0 or cols.size == 0:
        return
    per_image = math.prod(out_view.shape[1:]) * compute_dtype.itemsize
    tiles = (
        [(slice(0, out_view.shape[0]),)]
        if direct
        else split_tiles((out_view.shape[0],), lambda t: t[0] * per_image)
    )
    boxes_all = [(flat, boxes) for flat, boxes in _offset_boxes(geom) if boxes is not None]
    for (nb,) in tiles:
        acc = out_view[nb] if direct else np.zeros(out_view[nb].shape, compute_dtype)
        for flat, boxes in boxes_all:
            dst, src = _slices(geom, boxes)
            if channels_last:
                target = acc[(slice(None), *src)]
                np.add(target, cols[(nb, *dst, flat)], out=target)
            else:
                target = acc[(slice(None), slice(None), *src)]
                np.add(target, cols[(nb, slice(None), flat, *dst)], out=target)
        if not direct:
            out_view[nb] = acc
