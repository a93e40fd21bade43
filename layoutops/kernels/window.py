"""The one windowing primitive: a padded block of the input for a tile, and its window view.

Padding is never applied to a whole input. For each tile of the output, `padded_block`
returns just the input block that tile reads (a view when the block lies inside the input, a
small copy with the padding filled in otherwise), and `window_view` turns it into a strided
view with one window axis per spatial axis appended at the end, in the layout's spatial order
(``sliding_window_view``'s convention).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .scratch import filled, scratch_reused

__all__ = ["source_indices", "padded_block", "TileBlock", "window_view", "PAD_MODES"]

#: padding modes: PyTorch's meanings (``constant`` is PyTorch's ``zeros`` with any fill value)
PAD_MODES = ("constant", "reflect", "replicate", "circular")


def source_indices(start: int, stop: int, size: int, mode: str) -> np.ndarray:
    """The input index read at positions ``start .. stop - 1`` of a padded axis of length ``size``.

    Positions are in unpadded coordinates (negative = begin padding). For ``"constant"``
    out-of-range positions give ``-1``; the other modes map them into ``[0, size)``:
    ``reflect`` mirrors without repeating the edge (``-1 -> 1``), ``replicate`` repeats the
    edge, ``circular`` wraps.

    Examples
    --------
    >>> from layoutops.kernels.window import source_indices
    >>> source_indices(-2, 6, 4, "reflect").tolist()
    [2, 1, 0, 1, 2, 3, 2, 1]
    >>> source_indices(-2, 6, 4, "replicate").tolist()
    [0, 0, 0, 1, 2, 3, 3, 3]
    >>> source_indices(-2, 6, 4, "circular").tolist()
    [2, 3, 0, 1, 2, 3, 0, 1]
    >>> source_indices(-1, 5, 4, "constant").tolist()
    [-1, 0, 1, 2, 3, -1]
    """
    pos = np.arange(start, stop)
    if mode == "constant":
        return np.where((pos >= 0) & (pos < size), pos, -1)
    if mode == "replicate":
        return np.clip(pos, 0, size - 1)
    if mode == "circular":
        return pos % size
    if mode == "reflect":
        if size == 1:
            return np.zeros_like(pos)
        period = 2 * (size - 1)
        m = pos % period
        return np.where(m < size, m, period - m)
    raise ValueError(f"unknown padding mode {mode!r}; expected one of {PAD_MODES}")


def padded_block(
    x: np.ndarray,
    axes: tuple[int, ...],
    spans: tuple[tuple[int, int], ...],
    *,
    mode: str = "constant",
    fill=0,
    dtype=None,
    scratch_slot: str | None = None,
) -> np.ndarray:
    """``x`` restricted to ``[lo, hi)`` along each of ``axes``, padded where a span leaves ``x``.

    Other axes are kept whole. When every span lies inside ``x`` (and no ``dtype`` change is
    asked for) the result is a view of ``x``: callers must not write into it. Otherwise it is a
    new array of exactly the block's size: padding costs memory per block, never per input.

    Parameters
    ----------
    x : ndarray
    axes : tuple of int
        The spatial axes of ``x``.
    spans : tuple of (int, int)
        Per axis, the positions ``[lo, hi)`` in unpadded coordinates (``lo`` may be negative,
        ``hi`` may exceed the axis length).
    mode : {'constant', 'reflect', 'replicate', 'circular'}
    fill : scalar
        The value of padded cells in ``constant`` mode.
    dtype : dtype, optional
        The dtype of the result (the copy casts once).
    scratch_slot : str, optional
        Build a constant-mode copy in this thread's scratch buffer of that name
        (`layoutops.kernels.scratch`): valid until the slot is asked for again, so only for
        a block the caller uses up before its next request.

    Examples
    --------
    >>> import numpy as np
    >>> from layoutops.kernels.window import padded_block
    >>> x = np.arange(6).reshape(1, 2, 3)
    >>> padded_block(x, (2,), ((-1, 4),))
    array([[[0, 0, 1, 2, 0],
            [0, 3, 4, 5, 0]]])
    >>> padded_block(x, (2,), ((-1, 4),), mode="reflect")[0, 0].tolist()
    [1, 0, 1, 2, 1]
    >>> np.shares_memory(padded_block(x, (2,), ((1, 3),)), x)
    True
    """
    inside = all(0 <= lo and hi <= x.shape[ax] for ax, (lo, hi) in zip(axes, spans, strict=True))
    if inside:
        index = [slice(None)] * x.ndim
        for ax, (lo, hi) in zip(axes, spans, strict=True):
            index[ax] = slice(lo, hi)
        block = x[tuple(index)]
        return block if dtype is None or block.dtype == dtype else block.astype(dtype)
    dtype = x.dtype if dtype is None else np.dtype(dtype)
    if mode == "constant":
        shape = list(x.shape)
        dst = [slice(None)] * x.ndim
        src = [slice(None)] * x.ndim
        for ax, (lo, hi) in zip(axes, spans, strict=True):
            shape[ax] = hi - lo
            src[ax], dst[ax] = _inside(lo, hi, x.shape[ax])
        borders = True
        if scratch_slot is None and math.prod(shape) * dtype.itemsize <= SMALL_BLOCK_BYTES:
            # a small block: one fill and the copy (the border slabs and row pairs cost
            # more Python than a second pass over a few KiB)
            out = np.zeros(shape, dtype=dtype) if fill == 0 else np.full(shape, fill, dtype)
            out[tuple(dst)] = x[tuple(src)]
            return out
        if scratch_slot is None:
            out = np.empty(shape, dtype=dtype)
        else:
            # the copy writes the inside box only: when this thread's buffer held a block of
            # the same shape, box and fill last time, its borders are still set
            box = tuple((dst[ax].start, dst[ax].stop) for ax in axes)
            key = ("padded block", tuple(shape), box, _fill_key(fill))
            flat, borders_set = scratch_reused(scratch_slot, math.prod(shape), dtype, key)
            out = flat.reshape(shape)
            borders = not (borders_set and _REUSE_BORDERS)
        _copy_padded(out, x[tuple(src)], axes, dst, fill, borders)
        if scratch_slot is not None:
            filled(scratch_slot, flat, key)
        return out
    # reflect / replicate / circular: gather from the bounding box of the sources, axis by axis
    box = [slice(None)] * x.ndim
    picks = []
    for ax, (lo, hi) in zip(axes, spans, strict=True):
        idx = source_indices(lo, hi, x.shape[ax], mode)
        first = int(idx.min())
        box[ax] = slice(first, int(idx.max()) + 1)
        picks.append((ax, idx - first))
    block = x[tuple(box)]
    for ax, idx in picks:
        block = np.take(block, idx, axis=ax)
    return block.astype(dtype, copy=False)


def _inside(lo: int, hi: int, size: int) -> tuple[slice, slice]:
    """For the span ``[lo, hi)`` of an axis of length ``size``: the slice of it inside the
    axis, in the axis's coordinates and in the span's."""
    a = max(lo, 0)
    b = max(a, min(hi, size))
    return slice(a, b), slice(a - lo, b - lo)


class TileBlock:
    """The padded input block of one tile, built whole or piece by piece, in a permuted
    (canonical) axis order.

    The chunks of a tile each read a piece of its block: a range of samples, of channel
    groups and of rows along the first spatial axis. `piece` pads just that piece, on the
    thread that reads it, into that thread's scratch, so the tile's padded copy is neither
    made serially before the chunks start nor held whole (on the 2-core test machine the
    whole-tile copy was a serial 0.15-0.8 ms per call on the conv cases of BENCH.md, 2.1 ms
    on the 1-D one in channels-last layout).

    Parameters
    ----------
    x : ndarray
        The tile's input, unpadded, in its own axis order.
    axes : tuple of int
        The spatial axes of ``x``.
    spans : tuple of (int, int)
        Per spatial axis, the input positions the tile reads (`padded_block`).
    perm : sequence of int
        The axes of ``x`` in the order the block is returned in.
    n_axis, g_axis : int
        The sample axis and the channel-group axis of ``x``.
    mode : str
        The padding mode (`padded_block`).
    dtype : dtype, optional
        The dtype of the block (``None``: ``x``'s).

    Examples
    --------
    >>> import numpy as np
    >>> from layoutops.kernels.window import TileBlock
    >>> x = np.arange(12.0).reshape(1, 1, 3, 4)  # N G C W
    >>> blk = TileBlock(x, (3,), ((-1, 5),), (0, 1, 2, 3), n_axis=0, g_axis=1,
    ...                 mode="constant")
    >>> blk.shape
    (1, 1, 3, 6)
    >>> blk.piece(slice(0, 1), slice(0, 1), (0, 3))[0, 0, 0].tolist()
    [0.0, 0.0, 1.0]
    """

    def __init__(self, x, axes, spans, perm, *, n_axis: int, g_axis: int, mode: str,
                 dtype=None):
        self._x, self._axes, self._spans = x, tuple(axes), tuple(spans)
        self._perm, self._mode, self._dtype = tuple(perm), mode, dtype
        self._n_axis, self._g_axis = n_axis, g_axis
        shape = list(x.shape)
        for ax, (lo, hi) in zip(self._axes, self._spans, strict=True):
            shape[ax] = hi - lo
        self.shape = tuple(shape[p] for p in self._perm)

    def whole(self, scratch_slot: str | None = None) -> np.ndarray:
        """The whole block (`padded_block`), axes permuted."""
        return padded_block(self._x, self._axes, self._spans, mode=self._mode,
                            dtype=self._dtype, scratch_slot=scratch_slot).transpose(self._perm)

    def piece(self, samples: slice, groups: slice, rows: tuple[int, int]) -> np.ndarray:
        """The samples ``samples``, groups ``groups`` and block rows ``[rows[0], rows[1])``
        along the first spatial axis of the block, axes permuted: a view where the piece
        lies inside the input, else a padded copy in this thread's scratch slot
        ``"tile block piece"`` (valid until this thread asks for a piece again)."""
        index = [slice(None)] * self._x.ndim
        index[self._n_axis], index[self._g_axis] = samples, groups
        first = self._spans[0][0]
        spans = ((first + rows[0], first + rows[1]), *self._spans[1:])
        return padded_block(self._x[tuple(index)], self._axes, spans, mode=self._mode,
                            dtype=self._dtype, scratch_slot="tile block piece"
                            ).transpose(self._perm)

    def piece_group_major(self, samples: slice, groups: slice, rows: tuple[int, int],
                          slot: str) -> np.ndarray | None:
        """`piece` of a channels-last block ``(n, *S, G, c)``, zero-padded straight into this
        thread's scratch slot ``slot`` in group-major order ``(G, n, *S, c)``: one copy (each
        group's ``c`` values moved as one opaque item; one group's rows as they are)
        instead of a padded piece and a group-major copy of it (grouped case of BENCH.md,
        one thread: 0.24 + 0.22 ms per call). The zero borders are set only when the slot
        did not hold a piece of the same shape and box last time (`scratch.scratch_reused`).
        ``None`` (nothing written) unless the padding is zeros, nothing is cast and the
        channels are contiguous."""
        xb = self._x.transpose(self._perm)  # (n, *S, G, c), spatial axes unpadded
        k = xb.ndim - 3
        itm = xb.itemsize
        if (
            self._mode != "constant"
            or (self._dtype is not None and np.dtype(self._dtype) != xb.dtype)
            or xb.strides[-1] != itm
        ):
            return None
        first = self._spans[0][0]
        spans = ((first + rows[0], first + rows[1]), *self._spans[1:])
        xs = xb[samples, ..., groups, :]
        n, g, c = xs.shape[0], xs.shape[-2], xs.shape[-1]
        shape = (g, n, *(hi - lo for lo, hi in spans), c)
        src = [slice(None)] * (k + 3)
        dst = [slice(None)] * (k + 3)
        for i, (lo, hi) in enumerate(spans):
            src[1 + i], dst[2 + i] = _inside(lo, hi, xs.shape[1 + i])
        box = tuple((d.start, d.stop) for d in dst[2:2 + k])
        key = ("group-major piece", shape, box)
        flat, borders_set = scratch_reused(slot, math.prod(shape), xb.dtype, key)
        out = flat.reshape(shape)
        if not (borders_set and _REUSE_BORDERS):
            for i in range(k):
                for border in (slice(0, dst[2 + i].start), slice(dst[2 + i].stop, shape[2 + i])):
                    if border.start < border.stop:
                        slab = [slice(None)] * (k + 3)
                        slab[2 + i] = border
                        out[tuple(slab)] = 0
        if g == 1 and _PLAIN_ONE_GROUP:
            # nothing to reorder: rows of values, not c-value items (A/B, 5 rounds, ms:
            # 8x224x224x3 k7 s2 channels-last 10.96 -> 10.55, 1-D 16x16000x1 k9 s2 1.57 ->
            # 1.51; others equal)
            out[tuple(dst)][0] = xs[tuple(src)][..., 0, :]
        else:
            item = np.dtype((np.void, c * itm))
            inner = out[tuple(dst)].view(item)[..., 0]  # (G, n, *S)
            inner[...] = xs[tuple(src)].view(item)[..., 0].transpose(k + 1, *range(k + 1))
        filled(slot, flat, key)
        return out


#: zero-padded blocks of at most this many bytes (and no scratch slot) are a zero fill and a
#: copy (float32, us, slabs -> zero fill: 1x16x10x10, the block of a small 3x3 conv, 11.6 ->
#: 4.2; 8x16x18x18 23.0 -> 14.0; 1x64x34x34 25.2 -> 18.4; still 58 -> 47 at 8x32x34x34)
SMALL_BLOCK_BYTES = 256 << 10

#: a padded copy runs piece by piece along its first axis, each piece's borders set right
#: after its copy while its cache lines are hot (one 8x64x58x58 channels-first block:
#: 0.73 -> 0.60 ms)
PAD_PIECE_BYTES = 1 << 20


#: a padded block built in a scratch slot that held a block of the same shape, box and fill
#: the last time skips its border fill (`scratch.scratch_reused`)
_REUSE_BORDERS = True
#: a one-group piece is copied as rows of values (`TileBlock.piece_group_major`)
_PLAIN_ONE_GROUP = True


def _fill_key(fill):
    """``fill`` as part of a scratch key: its type and value (a NaN never matches)."""
    return (type(fill).__name__, fill if fill == fill else object())


def _copy_padded(out: np.ndarray, src: np.ndarray, axes, inner: list, fill,
                 borders: bool = True) -> None:
    """``out[inner] = src`` and ``fill`` around it (unless not ``borders``: already set), in
    pieces along the first axis."""
    dst = tuple(inner)
    if 0 in axes or out.shape[0] < 2 or out.nbytes <= PAD_PIECE_BYTES:
        out[dst] = src
        if borders:
            _fill_borders(out, axes, inner, fill)
        return
    step = max(1, PAD_PIECE_BYTES // (out.nbytes // out.shape[0]))
    for i in range(0, out.shape[0], step):
        piece = out[i : i + step]
        piece[dst] = src[i : i + step]
        if borders:
            _fill_borders(piece, axes, inner, fill)


def _fill_borders(out: np.ndarray, axes, inner: list, fill) -> None:
    """Set ``out`` (C-contiguous) to ``fill`` outside the box ``inner`` (slices along
    ``axes``): border slabs only, not a fill of the whole block before the copy (a second
    pass over it). Along the last axis the right border of each row and the left border of
    the next are adjacent, so they are set as one opaque item per row pair (value by value,
    the one-cell borders of a channels-first 3x3 conv took as long as the copy)."""
    last = out.ndim - 1
    for ax in axes:
        lo_end, hi_start = inner[ax].start, inner[ax].stop
        if ax == last:
            continue
        for part in (slice(0, lo_end), slice(hi_start, out.shape[ax])):
            if part.start < part.stop:
                slab = [slice(None)] * out.ndim
                slab[ax] = part
                out[tuple(slab)] = fill
    if last not in axes or out.size == 0:
        return
    width = out.shape[last]
    left, right = inner[last].start, width - inner[last].stop
    rows = out.reshape(-1, width)
    if left + right == 0:
        return
    if left + right >= width or rows.shape[0] < 2:
        rows[:, :left] = fill
        rows[:, width - right :] = fill
        return
    rows[0, :left] = fill
    rows[-1, width - right :] = fill
    itm = out.itemsize
    size = (left + right) * itm
    # an integer item where one fits: NumPy copies void items one memmove at a time
    item = np.dtype(f"u{size}") if size in (1, 2, 4, 8) else np.dtype((np.void, size))
    template = np.full(left + right, fill, dtype=out.dtype).view(item)[0]
    flat = out.reshape(-1)[width - right :]
    pairs = np.lib.stride_tricks.as_strided(
        flat, (rows.shape[0] - 1, left + right), (width * itm, itm)
    ).view(item)[:, 0]
    pairs[...] = template


def window_view(
    block: np.ndarray,
    axes: tuple[int, ...],
    kernel_sizes: tuple[int, ...],
    strides: tuple[int, ...],
    dilations: tuple[int, ...],
) -> np.ndarray:
    """A strided view of the windows of ``block`` along ``axes``.

    The spatial axes of the result index output positions (``[::stride]`` applied); one
    window axis per spatial axis is appended at the end, in the order of ``axes``, each of
    length ``kernel_size`` (``[::dilation]`` applied). No data is copied.

    Examples
    --------
    >>> import numpy as np
    >>> from layoutops.kernels.window import window_view
    >>> x = np.arange(7)
    >>> window_view(x, (0,), (2,), (3,), (2,)).tolist()
    [[0, 2], [3, 5]]
    """
    # the strides written out directly: `sliding_window_view` and a strided slice of it
    # cost ~25 us per call, which small tiles and chunks pay many times over
    shape, steps = list(block.shape), list(block.strides)
    for ax, k, s, d in zip(axes, kernel_sizes, strides, dilations, strict=True):
        extent = d * (k - 1) + 1
        if block.shape[ax] < extent:
            raise ValueError("window shape cannot be larger than input array shape")
        shape[ax] = (block.shape[ax] - extent) // s + 1
        steps[ax] = block.strides[ax] * s
        shape.append(k)
        steps.append(block.strides[ax] * d)
    return as_strided(block, tuple(shape), tuple(steps), writeable=False)
