"""Pooling kernels: separable reductions over kernel offsets, tile by tile, in any layout.

Max, average and Lp pooling (without indices) reduce a tile one spatial axis at a time
(`_separable`), the axis with the largest memory stride first: a pass reduces the in-bounds
input block along one axis with one ufunc call per kernel offset (``np.maximum`` or
``np.add`` on strided views) into a smaller intermediate, the last pass writes the output
tile -- ``sum(k)`` passes instead of ``prod(k)``, the first ones over long contiguous rows.
For one offset, the outputs whose tap lies inside the input form a range, so padding is
never materialised and never value-filled: a padded cell simply takes no part, which is what
max pooling needs (a uint8 0 must not lose to a padding cell) and what the averages need
(padding adds 0; the divisor is computed per axis as the outer product of 1-D tap counts).
Max pooling with indices keeps the running form over every offset in window order (the
first-maximum rule is not separable); small ones take one ``np.argmax`` over their copied
windows (`_small_argmax`). A pool with one window over each whole plane (an
adaptive pool to size 1, ``avg_pool(x, 7)`` on 7x7 planes) is a global pool and runs as one
(`global_pool`). Channels-last average pools whose windows all lie
inside the input (no padding, no ceil_mode overhang), with long channel runs and few taps
per stride, sum each window in one ``np.einsum`` pass instead (`window_sums`).

The output is split into tiles with `split_tiles` (outermost array axis first, in the
layout's own axis order), at most `CACHE_TILE_BYTES` of output and intermediates, so the
passes reuse them from cache. No kernel transposes its input: the layout is only a list of
axis positions.

Threads: the tiles of max (with or without indices), average and Lp pooling run in contiguous runs
over the small per-process pool of `layoutops.kernels.threads` (NumPy's ufuncs release the
GIL; ``LAYOUTOPS_NUM_THREADS`` or ``threads.set_num_threads`` sets the count). Every output
element is computed by one thread with the same operations in the same order, so results do
not depend on the thread count; the tiles in flight share the workspace limit. 2-core test
machine, BENCH.md cases, 1 -> 2 threads: avg 2x2 s2 channels-last 2.6 -> 1.65 ms, max 3x3
s2 channels-last 7.0 -> 3.2 ms, channels-first 10.7 -> 5.9 ms.

Kernels receive validated plain values (arrays, axis positions, a `Geometry`); the argument
checks live in ``layoutops.ops.pool``.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math

import numpy as np

from . import blas, window_sums
from .geometry import Geometry
from .plan import get_workspace_limit, split_tiles
from .threads import get_num_threads, parallel
from .window import padded_block, window_view

__all__ = [
    "pool_output_shape",
    "avg_divisor",
    "plane_strides",
    "lowest_value",
    "tap_ranges",
    "max_pool",
    "avg_pool",
    "lp_pool",
    "adaptive_bins",
    "adaptive_avg_pool",
    "adaptive_max_pool",
    "max_unpool",
    "plane_offsets",
    "plane_scatter",
    "bin_contract",
    "bin_sums_pay",
    "bin_matrix",
    "bin_sizes",
]

#: upper bound of the bytes one tile of a running reduction touches, so that the output tile
#: it updates once per pass stays in cache (the workspace limit may be lower). Larger tiles
#: mean fewer tiles and fewer GIL hand-offs between the threads, but with fewer than two
#: tiles per thread the work runs on one thread. 4 MiB measured best with 2 threads on the
#: quiet 2-core test machine (7-round A/B against 2 MiB: avg 2x2 s2 6-16% faster in both
#: layouts, max 3x3 s2 of BENCH.md 2-3% faster; 8 MiB 24-32% slower on avg pool); an earlier,
#: noisier machine had measured max 3x3 s2 channels-last 3.2 ms at 1-2 MiB and 3.9 at 4
CACHE_TILE_BYTES = 4 << 20

#: a pool whose whole output and intermediates take at least this many bytes but fit fewer
#: than two tiles per thread is cut into two tiles per thread anyway, so that every thread
#: gets work (with fewer it ran on one thread). 7-round A/Bs, 2 threads, us, before / after:
#: max 3x3 s2 p1 8x56x56x64 channels-last 1057 / 794, channels-first 1449 / 945; avg 3x3 s2
#: p1 of it channels-last 1219 / 904; max 2x2 s2 8x56x56x64 658 / 508 (CL), 738 / 598 (CF);
#: 1-D max k3 s2 16x64x4000 CF 1866 / 1179, 16x2000x64 CL 1109 / 807; 3-D max 2x2 s2
#: 4x16x32x32x32 CL 1743 / 764, 3x3 s2 p1 2x32x24x32x32 CF 1489 / 1028. The BENCH.md pools
#: (more tiles already) unchanged; the one loss measured, 2x16x32x32x32 2x2 s2 CL 501 /
#: 562 (three short passes per tile); at 4 MiB that one and the 1-D channels-last and a
#: 8x64x48x48 max (1074 / 784 at 3 MiB) kept one thread
SPLIT_FOR_THREADS_BYTES = 3 << 20


#: NumPy ufunc buffer (elements) while the separable passes run. With the default 8192 NumPy
#: copies strided operands whose contiguous runs are shorter than that through its buffer;
#: 1024 measured best over the pooling cases of BENCH.md (max 3x3 s2 channels-last 6.4 ->
#: 5.4 ms, avg 2x2 s2 channels-last 2.2 -> 1.8 ms; 1 thread; 16 slowed channels-first max)
UFUNC_BUFFER = 1024


@contextlib.contextmanager
def _ufunc_buffer(size: int):
    old = np.setbufsize(size)
    try:
        yield
    finally:
        np.setbufsize(old)


def _tile_limit(threads: int = 1) -> int:
    """Bytes of temporaries one tile may hold: ``threads`` tiles are in flight at once."""
    return min(get_workspace_limit() // threads, CACHE_TILE_BYTES)


#: pools whose output and intermediates hold at most this many bytes (and less than
#: `SPLIT_FOR_THREADS_BYTES`: one tile on one thread anyway) run here, without the tiling,
#: the thread split and the per-thread ufunc buffer setting (3-round old / new A/Bs, us:
#: 1x16x8x8 max 2x2 37 -> 21, 3x3 s2 p1 43 -> 26, average 2x2 45 -> 30, Lp 36 -> 20;
#: 8x16x16x32 max 2x2 channels-last 49 -> 38; 1-D 4x8x32 max 33 -> 18)
SMALL_WORK_BYTES = 256 << 10


def _run_tiles(work, shape, cost) -> None:
    """``work(tile)`` for the tiles of ``shape`` under the workspace limit, the tiles split
    in contiguous runs over the threads (each output element is computed by one thread, in
    the same order whatever the thread count; the tiles in flight share the limit). Fewer
    than two tiles per thread run on one thread, unless the work reaches
    `SPLIT_FOR_THREADS_BYTES`: then it is cut into two tiles per thread (so the tiling, like
    the split, depends on the thread count; no sum does: each output's taps run along
    whole axes, whatever the tile). Work of at most `SMALL_WORK_BYTES` runs as one tile
    here."""
    if all(shape) and (
        (whole := cost(tuple(shape))) <= min(SMALL_WORK_BYTES, _tile_limit())
        and whole < SPLIT_FOR_THREADS_BYTES
    ):
        work(tuple(slice(0, n) for n in shape))  # one tile here: no split, no thread
        return
    threads = get_num_threads()
    limit = _tile_limit(threads)
    tiles = list(split_tiles(shape, cost, limit))
    if threads > 1 and len(tiles) < 2 * threads:
        whole = cost(tuple(shape))
        if whole >= SPLIT_FOR_THREADS_BYTES:
            tiles = list(split_tiles(shape, cost, min(limit, -(-whole // (2 * threads)))))
    if len(tiles) < 2 * threads:
        threads = 1

    def run(part):
        with _ufunc_buffer(UFUNC_BUFFER):  # a per-thread (context) setting
            for tile in part:
                work(tile)

    parallel(run, tiles, threads)


def pool_output_shape(shape, axes, out_sizes) -> tuple[int, ...]:
    """``shape`` with the sizes of ``axes`` replaced by ``out_sizes``."""
    out = list(shape)
    for ax, size in zip(axes, out_sizes, strict=True):
        out[ax] = int(size)
    return tuple(out)


def plane_strides(sizes) -> tuple[int, ...]:
    """Row-major strides (in elements) of a spatial plane of ``sizes``.

    >>> from layoutops.kernels.pool import plane_strides
    >>> plane_strides((3, 4, 5))
    (20, 5, 1)
    """
    strides = []
    acc = 1
    for size in reversed(sizes):
        strides.append(acc)
        acc *= int(size)
    return tuple(reversed(strides))


def lowest_value(dtype):
    """The smallest value of ``dtype``: ``-inf`` for floats, the minimum for ints, False."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return False
    if dtype.kind in "iu":
        return np.iinfo(dtype).min
    return -np.inf


def _is_floating(dtype) -> bool:
    dtype = np.dtype(dtype)
    return dtype.kind == "f" or dtype.name == "bfloat16"


@functools.lru_cache(maxsize=4096)
def tap_ranges(
    n_in: int, k: int, s: int, d: int, pad_begin: int, o_lo: int, o_hi: int
) -> tuple[tuple[int, int, int] | None, ...]:
    """Per kernel offset ``j``: the outputs ``[a, b)`` within ``[o_lo, o_hi)`` whose tap
    ``o * s - pad_begin + j * d`` lies inside ``[0, n_in)``, and the input position of
    output ``a``; ``None`` when no output of the range reads inside the input at offset ``j``.

    Examples
    --------
    >>> from layoutops.kernels.pool import tap_ranges
    >>> tap_ranges(5, 3, 2, 1, 1, 0, 3)   # in 5, k 3, stride 2, pad 1: outputs 0..2
    ((1, 3, 1), (0, 3, 0), (0, 2, 1))
    """
    result = []
    for j in range(k):
        off = j * d - pad_begin
        a = max(o_lo, -(off // s))  # smallest o with o * s + off >= 0
        b = min(o_hi, (n_in - 1 - off) // s + 1)  # one past the largest o inside the input
        result.append((a, b, a * s + off) if a < b else None)
    return tuple(result)


def _boxes(geom: Geometry, ranges):
    """The taps of a tile in window order: tuples of per-axis ``(j, a, b, p0)``, in-bounds only.

    ``ranges``: per spatial axis the output range ``(o_lo, o_hi)`` of the tile.
    """
    per_axis = []
    for i, (o_lo, o_hi) in enumerate(ranges):
        taps = tap_ranges(
            geom.in_sizes[i], geom.kernel_sizes[i], geom.strides[i], geom.dilations[i],
            geom.pads[i][0], o_lo, o_hi,
        )
        per_axis.append([(j, *t) for j, t in enumerate(taps) if t is not None])
    return itertools.product(*per_axis)


def _in_bounds_span(geom: Geometry, i: int, o_lo: int, o_hi: int) -> tuple[int, int]:
    lo, hi = geom.input_span(i, o_lo, o_hi)
    return max(lo, 0), min(hi, geom.in_sizes[i])


def _block_elems(geom: Geometry, axes, tile_shape) -> int:
    """Worst-case element count of the in-bounds input block a tile of ``tile_shape`` reads."""
    n = math.prod(tile_shape)
    for i, ax in enumerate(axes):
        t = tile_shape[ax]
        span = min(geom.in_sizes[i], (t - 1) * geom.strides[i] + geom.extents[i])
        n = n // max(t, 1) * span
    return n


def _index_pieces(tile, axes, strides, box, origin=None):
    """(index into the output tile, index into the source) of one tap ``box``.

    The source is ``x`` itself when ``origin`` is None (non-spatial axes take the tile's
    slices), else a block holding exactly the tile's non-spatial range and, per spatial axis,
    the input positions from ``origin[i]`` on.
    """
    dst = [slice(None)] * len(tile)
    src = list(tile) if origin is None else [slice(None)] * len(tile)
    for i, ax in enumerate(axes):
        _, a, b, p0 = box[i]
        s = strides[i]
        o_lo = tile[ax].start
        dst[ax] = slice(a - o_lo, b - o_lo)
        if origin is not None:
            p0 -= origin[i]
        src[ax] = slice(p0, p0 + (b - a - 1) * s + 1, s)
    return tuple(dst), tuple(src)


def _tap_id_dtype(n_taps: int) -> np.dtype:
    for dt in (np.uint8, np.uint16, np.uint32):
        if n_taps < np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.int64)


def _along(arr_1d, ax, ndim):
    shape = [1] * ndim
    shape[ax] = arr_1d.size
    return arr_1d.reshape(shape)


def _first_tap_ids(geom: Geometry, axes, tile, ndim, dtype):
    """1 + the flat kernel offset of the first in-bounds tap of every output of the tile."""
    kstrides = plane_strides(geom.kernel_sizes)
    ids = np.ones((1,) * ndim, dtype)
    for i, ax in enumerate(axes):
        o = np.arange(tile[ax].start, tile[ax].stop, dtype=np.int64)
        start = o * geom.strides[i] - geom.pads[i][0]
        j = np.maximum(0, -(start // geom.dilations[i]))  # ceil(-start / d) when start < 0
        ids = ids + _along((j * kstrides[i]).astype(dtype), ax, ndim)
    return ids


def _tap_ids_to_indices(geom: Geometry, axes, tile, ids) -> np.ndarray:
    """Flat plane indices from tap ids (1 + flat kernel offset) of the outputs of a tile."""
    ranges = tuple((tile[ax].start, tile[ax].stop) for ax in axes)
    out = np.take(_tap_offsets(geom), ids)
    origins = _window_origins if math.prod(b - a for a, b in ranges) <= 1 << 12 else (
        _window_origins.__wrapped__)  # cached for small tiles only: the arrays stay alive
    out += origins(geom, tuple(axes), ids.ndim, ranges)
    return out


@functools.lru_cache(maxsize=256)
def _tap_offsets(geom: Geometry) -> np.ndarray:
    """Per tap id (1 + flat kernel offset; 0 unused) its flat offset in the plane from the
    window's origin."""
    pstrides = plane_strides(geom.in_sizes)
    kstrides = plane_strides(geom.kernel_sizes)
    t = np.arange(math.prod(geom.kernel_sizes), dtype=np.int64)
    table = np.zeros(t.size + 1, np.int64)
    for i, k in enumerate(geom.kernel_sizes):
        table[1:] += t // kstrides[i] % k * geom.dilations[i] * pstrides[i]
    table.flags.writeable = False
    return table


@functools.lru_cache(maxsize=256)
def _window_origins(geom: Geometry, axes, ndim, ranges) -> np.ndarray:
    """The flat plane position (padding included: may be negative) of the window origin of
    every output in the spatial ``ranges``, shaped to broadcast along ``axes``."""
    pstrides = plane_strides(geom.in_sizes)
    base = np.zeros((1,) * ndim, np.int64)
    for i, ax in enumerate(axes):
        o = np.arange(*ranges[i], dtype=np.int64)
        base = base + _along((o * geom.strides[i] - geom.pads[i][0]) * pstrides[i], ax, ndim)
    base.flags.writeable = False
    return base


def _in_bounds_region(geom: Geometry, axes, tile):
    """The tile's slices with each spatial axis replaced by the in-bounds input span it reads;
    and the span starts."""
    region = list(tile)
    origin = []
    for i, ax in enumerate(axes):
        lo, hi = _in_bounds_span(geom, i, tile[ax].start, tile[ax].stop)
        region[ax] = slice(lo, hi)
        origin.append(lo)
    return tuple(region), tuple(origin)


def max_pool(
    x: np.ndarray, axes: tuple[int, ...], geom: Geometry, *, return_indices: bool = False
):
    """Max pooling of ``x`` over its spatial ``axes`` (any layout, any numeric dtype).

    Returns ``out`` or ``(out, indices)``; indices are int64 flat row-major positions in the
    unpadded spatial plane (in the order of ``axes``). Ties: the first in-bounds cell in
    window order; NaN: the output is NaN, with the index of the last NaN in window order.
    Each output window must hold at least one in-bounds tap (the caller checks).
    """
    out = np.empty(pool_output_shape(x.shape, axes, geom.out_sizes), x.dtype)
    idx = np.empty(out.shape, np.int64) if return_indices else None
    if out.size == 0:
        return (out, idx) if return_indices else out
    if _whole_plane(geom) and return_indices and _whole_plane_argmax(x, axes, out, idx):
        return out, idx
    if return_indices and _small_argmax(x, axes, geom, out, idx):
        return out, idx
    ndim = x.ndim
    init = lowest_value(x.dtype)
    floating = _is_floating(x.dtype)
    id_dtype = _tap_id_dtype(math.prod(geom.kernel_sizes))
    kstrides = plane_strides(geom.kernel_sizes)
    order = _axis_order(x.strides, axes)
    if return_indices:
        per_elem = x.dtype.itemsize + 3 * id_dtype.itemsize + 2 + 16

        def cost(t):
            return math.prod(t) * per_elem
    else:
        def cost(t):
            return (math.prod(t) + _separable_elems(geom, axes, t, order)) * x.dtype.itemsize

    if not return_indices:
        if _whole_plane(geom):
            out[...] = global_pool(x, axes, "max")
            return out

        def work(tile):
            if out[tile].size:
                _separable(out[tile], x, tile, axes, geom, order, np.maximum, init)

        _run_tiles(work, out.shape, cost)
        return out
    def index_tile(tile):
        o_t = out[tile]
        if o_t.size == 0:
            return
        ranges = [(tile[ax].start, tile[ax].stop) for ax in axes]
        o_t.fill(init)
        # arg-max as a tap id (1 + flat kernel offset): taps run in window order, so the
        # winner is the last tap that beat the running max -- a running maximum of
        # ``beat * id`` -- started at the first in-bounds tap (the winner of all-equal windows)
        ids = np.empty(o_t.shape, id_dtype)
        ids[...] = _first_tap_ids(geom, axes, tile, ndim, id_dtype)
        beat = np.empty(o_t.shape, bool)
        scratch = np.empty(o_t.shape, id_dtype)
        nan_buf = None
        if floating:
            region, _ = _in_bounds_region(geom, axes, tile)
            if np.isnan(np.max(x[region])):
                nan_buf = np.empty(o_t.shape, bool)
        for box in _boxes(geom, ranges):
            dst, src = _index_pieces(tile, axes, geom.strides, box)
            v = x[src]
            c = o_t[dst]
            m = beat[dst]
            np.greater(v, c, out=m)
            if nan_buf is not None:
                nb = nan_buf[dst]
                np.isnan(v, out=nb)
                np.logical_or(m, nb, out=m)
            np.maximum(c, v, out=c)
            tap_id = 1 + sum(t[0] * ks for t, ks in zip(box, kstrides, strict=True))
            w = scratch[dst]
            np.multiply(m, id_dtype.type(tap_id), out=w)
            np.maximum(ids[dst], w, out=ids[dst])
        idx[tile] = _tap_ids_to_indices(geom, axes, tile, ids)

    # the tiles on the threads, as the pools without indices (each tile's arg-max the same
    # computation whatever thread runs it; 5-round A/B, 8x64x56x56 float32, ms, one thread
    # -> two: 3x3 s2 p1 CF 8.4 -> 5.5, CL 4.7 -> 4.0; 2x2 s2 CF 3.6 -> 3.0, CL equal)
    _run_tiles(index_tile, out.shape, cost)
    return (out, idx) if return_indices else out


def _running(acc, src, boxes, tile, axes, geom, origin, ufunc, identity) -> None:
    """``acc = ufunc.reduce`` over the taps of ``boxes`` (in window order), in place. The first
    tap is copied rather than combined with ``identity`` when it covers the whole tile."""
    first = True
    for box in boxes:
        dst, src_index = _index_pieces(tile, axes, geom.strides, box, origin)
        c = acc[dst]
        if first:
            first = False
            if c.shape == acc.shape:
                np.copyto(c, src[src_index], casting="unsafe")
                continue
            acc.fill(identity)
        ufunc(c, src[src_index], out=c)


def _whole_plane_argmax(x, axes, out, idx) -> bool:
    """The maximum of each whole plane and its flat index, by ``np.argmax`` over the plane
    as one axis (the first maximum in row-major order); a plane holding a NaN takes the
    index of its last NaN (the running form's rule). False (nothing written) unless the
    spatial axes are adjacent (the plane one axis of a reshaped view)."""
    lo, hi = axes[0], axes[-1] + 1
    if list(axes) != list(range(lo, hi)):
        return False
    plane = math.prod(x.shape[lo:hi])
    y = x.reshape(math.prod(x.shape[:lo]), plane, math.prod(x.shape[hi:]))
    # (before, after); with nothing after the plane, along contiguous rows (NumPy moves a
    # middle axis last with a copy first)
    best = np.argmax(y[:, :, 0], axis=1)[:, None] if y.shape[2] == 1 else np.argmax(y, axis=1)
    vals = np.take_along_axis(y, best[:, None, :], axis=1)[:, 0, :]
    if _is_floating(x.dtype):
        nan = np.isnan(vals)
        if nan.any():
            last = plane - 1 - np.argmax(np.isnan(y[:, ::-1, :]), axis=1)
            best = np.where(nan, last, best)
    out[...] = vals.reshape(out.shape)
    idx[...] = best.reshape(idx.shape)
    return True


#: max pools with indices whose padded input, windows copied out whole and winners take at
#: most this many bytes (and the workspace limit allows) run as one ``np.argmax`` over the
#: copied windows (`_small_argmax`) instead of the running form's five ufunc calls per tap.
#: 1x16x8x8 float32, 2 threads, us: 2x2 92 -> 30, 3x3 s2 p1 142 -> 41 (PyTorch 4)
SMALL_ARGMAX_BYTES = 256 << 10


def _small_argmax(x, axes, geom: Geometry, out, idx) -> bool:
    """Max pooling with indices of a small input by ``np.argmax`` over a copy of its windows
    (kernel offsets flat in window order, so the first maximum is the first in window
    order, as in the running form; a window holding a NaN takes its last NaN's index, the
    running form's rule). The padding cells hold the dtype's lowest value: when a window's
    maximum equals it, a padding cell may have won, and nothing is written (False): the
    running form, which never reads the padding, takes that input. False too for inputs
    too large to copy and for dtypes outside NumPy's own."""
    n_taps = math.prod(geom.kernel_sizes)
    if not _SMALL_ARGMAX or x.dtype.kind not in "fiub":
        return False
    spans = tuple(geom.input_span(i, 0, n) for i, n in enumerate(geom.out_sizes))
    others = out.size // math.prod(geom.out_sizes)
    block_elems = others * math.prod(hi - lo for lo, hi in spans)
    # the padded block, the copied windows, the winners and the values
    need = (block_elems + out.size * n_taps) * x.dtype.itemsize + out.size * 24
    if need > min(SMALL_ARGMAX_BYTES, get_workspace_limit()):
        return False
    init = lowest_value(x.dtype)
    block = padded_block(x, axes, spans, fill=init)
    windows = window_view(block, axes, geom.kernel_sizes, geom.strides, geom.dilations)
    rows = windows.reshape(-1, n_taps)  # a copy (window cells overlap), in out's order
    best = np.argmax(rows, axis=1)
    vals = rows[np.arange(rows.shape[0]), best]  # the first maximum itself (-0.0 vs 0.0)
    if not np.may_share_memory(block, x) and np.any(vals == init):
        return False  # (a block that is a view of x has no padding cells)
    if x.dtype.kind == "f":
        nan = np.isnan(vals)
        if nan.any():
            last = n_taps - 1 - np.argmax(np.isnan(rows[:, ::-1]), axis=1)
            best = np.where(nan, last, best)
    out[...] = vals.reshape(out.shape)
    tile = tuple(slice(0, n) for n in out.shape)
    idx[...] = _tap_ids_to_indices(geom, axes, tile, (best + 1).reshape(out.shape))
    return True


#: route small max pools with indices through `_small_argmax` (tests switch it off to keep
#: the running form's coverage on small inputs)
_SMALL_ARGMAX = True


def _whole_plane(geom: Geometry) -> bool:
    """True if the pool has one window, covering every cell of each plane once (no
    padding, no dilation, the kernel the size of the input): a global pool."""
    return _GLOBAL_ROUTE and all(
        o == 1 and k == n and d == 1 and p == (0, 0)
        for o, k, n, d, p in zip(geom.out_sizes, geom.kernel_sizes, geom.in_sizes,
                                 geom.dilations, geom.pads, strict=True)
    )


#: pools with one window over each whole plane run as global pools (`_whole_plane`; 5-round
#: A/B, 8x2048x7x7 float32, 2 threads, us: adaptive avg to 1x1 channels-first 1070 -> 280,
#: channels-last 287 -> 231; adaptive max 942 -> 657 / 273 -> 187; ``avg_pool(x, 7)`` 908 ->
#: 291. The separable passes ran seven taps per axis over the whole input)
_GLOBAL_ROUTE = True


def _axis_order(strides, axes) -> tuple[int, ...]:
    """Spatial axis numbers ``i`` (into ``axes``) by decreasing memory stride: the order of the
    separable passes, so that the early (larger) passes run over long contiguous rows."""
    return tuple(sorted(range(len(axes)), key=lambda i: -abs(strides[axes[i]])))


def _separable_elems(geom: Geometry, axes, tile_shape, order) -> int:
    """Elements of the intermediate buffers `_separable` allocates for a tile of
    ``tile_shape`` (the in-bounds input spans of the axes not yet reduced)."""
    spans = {}
    other = math.prod(tile_shape)
    for i, ax in enumerate(axes):
        t = tile_shape[ax]
        other //= max(t, 1)
        spans[i] = min(geom.in_sizes[i], (t - 1) * geom.strides[i] + geom.extents[i])
    total = 0
    for i in order[:-1]:
        spans[i] = tile_shape[axes[i]]
        total += other * math.prod(spans.values())
    return total


def _separable(acc, x, tile, axes, geom: Geometry, order, ufunc, identity, transform=None):
    """``acc = ufunc.reduce`` over the in-bounds taps of every window of the output ``tile``,
    one spatial axis at a time (max and sum over a box are separable): ``sum(k)`` instead of
    ``prod(k)`` passes, the first ones over long contiguous rows.

    The passes read the in-bounds input block of the tile (through ``transform`` when given:
    a converted copy), in the pass ``order`` (`_axis_order`); each pass allocates the next
    intermediate, the last one is ``acc``.
    """
    ranges = tuple((tile[ax].start, tile[ax].stop) for ax in axes)
    region, stages = _separable_plan(geom, tuple(axes), order, x.ndim, ranges)
    index = list(tile)
    for ax, sl in region:
        index[ax] = sl
    cur = x[tuple(index)]
    if transform is not None:
        cur = transform(cur)
    last = len(stages) - 1
    for step, (ax, n_out, init, rest) in enumerate(stages):
        if step == last:
            nxt = acc
        else:
            shape = list(cur.shape)
            shape[ax] = n_out
            nxt = np.empty(shape, acc.dtype)
        if len(init) == 2:
            ufunc(cur[init[0]], cur[init[1]], out=nxt)
        elif init:
            np.copyto(nxt, cur[init[0]], casting="unsafe")
        else:
            nxt.fill(identity)
        for dst, src in rest:
            c = nxt[dst]
            ufunc(c, cur[src], out=c)
        cur = nxt


@functools.lru_cache(maxsize=1024)
def _separable_plan(geom: Geometry, axes, order, ndim, ranges):
    """The index plan of `_separable` for a tile whose spatial output ranges are ``ranges``:
    ``(region, stages)`` with ``region`` the ``(axis, slice)`` of the in-bounds input span per
    spatial axis, and per pass ``(axis, outputs, init, rest)``: ``init`` the source indices of
    the (up to two) taps that cover every output of the range and start the reduction (none:
    fill with the identity), ``rest`` the ``(destination, source)`` indices of the other taps.
    """
    region = []
    origin = {}
    for i, ax in enumerate(axes):
        lo, hi = _in_bounds_span(geom, i, *ranges[i])
        region.append((ax, slice(lo, hi)))
        origin[i] = lo

    def along(ax, sl):
        index = [slice(None)] * ndim
        index[ax] = sl
        return tuple(index)

    stages = []
    for i in order:
        ax = axes[i]
        o_lo, o_hi = ranges[i]
        s = geom.strides[i]
        taps = tap_ranges(geom.in_sizes[i], geom.kernel_sizes[i], s, geom.dilations[i],
                          geom.pads[i][0], o_lo, o_hi)
        taps = [t for t in taps if t is not None]
        full = [t for t in taps if t[0] == o_lo and t[1] == o_hi][:2]

        def src(a, b, p0, org=origin[i], s=s, ax=ax):
            return along(ax, slice(p0 - org, p0 - org + (b - a - 1) * s + 1, s))

        init = tuple(src(*t) for t in full)
        rest = tuple((along(ax, slice(a - o_lo, b - o_lo)), src(a, b, p0))
                     for a, b, p0 in taps if (a, b, p0) not in full)
        stages.append((ax, o_hi - o_lo, init, rest))
    return tuple(region), tuple(stages)


@functools.lru_cache(maxsize=1024)
def _axis_counts(geom: Geometry, i: int, o_lo: int, o_hi: int, lo: int, hi: int) -> np.ndarray:
    """Per output in ``[o_lo, o_hi)``: how many taps along axis ``i`` fall inside ``[lo, hi)``
    (cached, read-only)."""
    o = np.arange(o_lo, o_hi, dtype=np.int64)[:, None]
    pos = o * geom.strides[i] - geom.pads[i][0] + np.arange(geom.kernel_sizes[i]) * (
        geom.dilations[i]
    )
    counts = ((pos >= lo) & (pos < hi)).sum(axis=1)
    counts.flags.writeable = False
    return counts


def avg_divisor(geom: Geometry, axes, tile, ndim, count_include_pad: bool, dtype):
    """The avg-pool divisor of a tile: the outer product of per-axis tap counts; a 0-d array
    when every output of the tile has the same divisor (cached, read-only).

    ``tile`` holds one slice per axis of the output; ``axes`` are the spatial ones.

    Examples
    --------
    >>> from layoutops.kernels.geometry import Geometry
    >>> from layoutops.kernels.pool import avg_divisor
    >>> g = Geometry(in_sizes=(4,), kernel_sizes=(3,), strides=(1,), dilations=(1,),
    ...              pads=((1, 1),), out_sizes=(4,))
    >>> avg_divisor(g, (0,), (slice(0, 4),), 1, False, "float32").tolist()
    [2.0, 3.0, 3.0, 2.0]
    """
    ranges = tuple((tile[ax].start, tile[ax].stop) for ax in axes)
    return _divisor_of(geom, tuple(axes), ranges, ndim, bool(count_include_pad), np.dtype(dtype))


@functools.lru_cache(maxsize=256)
def _divisor_of(geom: Geometry, axes, ranges, ndim, count_include_pad: bool, dtype):
    parts = []
    for i, ax in enumerate(axes):
        n_in = geom.in_sizes[i]
        lo, hi = (-geom.pads[i][0], n_in + geom.pads[i][1]) if count_include_pad else (0, n_in)
        parts.append((ax, _axis_counts(geom, i, *ranges[i], lo, hi)))
    if all(c.min() == c.max() for _, c in parts):
        div = np.asarray(math.prod(int(c[0]) for _, c in parts), dtype)
    else:
        div = np.ones((1,) * ndim, dtype)
        for ax, counts in parts:
            div = div * _along(counts.astype(dtype), ax, ndim)
    div.flags.writeable = False
    return div


def _power_of_two(v: float) -> bool:
    """True for 2**k (k of either sign): dividing by it equals multiplying by 1/v exactly."""
    if not math.isfinite(v) or v <= 0:
        return False
    mantissa, _ = math.frexp(v)
    return mantissa == 0.5


def _sum_pool(x, axes, geom, dtype, compute_dtype, transform, finish):
    """Shared driver of avg / lp pooling.

    Per tile: the in-bounds input block, passed through ``transform`` (a cast, ``|x|^p``)
    into ``compute_dtype`` unless the input can be summed as it is; a running sum over the
    taps; then ``finish(acc, tile)`` in place (the divisor, the root).
    """
    out = np.empty(pool_output_shape(x.shape, axes, geom.out_sizes), dtype)
    if out.size == 0:
        return out
    compute_dtype = np.dtype(compute_dtype)
    direct = transform is None and x.dtype == compute_dtype == out.dtype
    csize = compute_dtype.itemsize
    if transform is None:
        def transform(block):
            return block.astype(compute_dtype)

    order = _axis_order(x.strides, axes)

    def cost(t):
        n = math.prod(t) + _separable_elems(geom, axes, t, order)
        if direct:
            return n * csize
        return (n + math.prod(t) + _block_elems(geom, axes, t)) * csize

    def work(tile):
        o_t = out[tile]
        if o_t.size == 0:
            return
        acc = o_t if direct else np.empty(o_t.shape, compute_dtype)
        _separable(acc, x, tile, axes, geom, order, np.add, 0, None if direct else transform)
        finish(acc, tile)
        if not direct:
            o_t[...] = acc

    _run_tiles(work, out.shape, cost)
    return out


def avg_pool(
    x: np.ndarray,
    axes: tuple[int, ...],
    geom: Geometry,
    *,
    count_include_pad: bool = True,
    divisor_override=None,
    dtype=None,
    compute_dtype=None,
):
    """Average pooling (float input). The divisor counts the taps inside input + padding
    (``count_include_pad``; never the ceil_mode overhang) or inside the input, unless
    ``divisor_override`` is given."""
    dtype = np.dtype(x.dtype if dtype is None else dtype)
    compute_dtype = np.dtype(dtype if compute_dtype is None else compute_dtype)
    ndim = x.ndim

    def divisor(tile):
        if divisor_override is not None:
            return np.asarray(divisor_override, compute_dtype)
        return avg_divisor(geom, axes, tile, ndim, count_include_pad, compute_dtype)

    if divisor_override is None and _whole_plane(geom):
        # one window over each whole plane (a global pool spelt as a plain one, or the
        # adaptive pool to size 1): the plane sums of `global_pool`
        return global_pool(x, axes, "avg", dtype=dtype, compute_dtype=compute_dtype)
    if _WINDOW_SUMS and x.dtype == dtype == compute_dtype and window_sums.applies(
        x, axes, geom
    ):
        # channels-last, every window inside the input: one einsum pass per thread; the
        # divisor is the same for every window
        out = np.empty(pool_output_shape(x.shape, axes, geom.out_sizes), dtype)
        div = divisor(tuple(slice(0, n) for n in out.shape))
        if div.ndim == 0 and _power_of_two(float(div)):
            window_sums.window_sums(x, axes, geom, out, scale=1.0 / float(div))
        else:
            window_sums.window_sums(x, axes, geom, out, divisor=div)
        return out

    def finish(acc, tile):
        div = divisor(tile)
        if div.ndim == 0 and _power_of_two(float(div)):
            acc *= compute_dtype.type(1.0 / float(div))  # exact, and cheaper than a division
        else:
            acc /= div

    return _sum_pool(x, axes, geom, dtype, compute_dtype, None, finish)


#: channels-last average pools whose windows all lie inside the input take
#: `window_sums.window_sums` (one einsum pass) instead of the separable passes
_WINDOW_SUMS = True


def lp_pool(
    x: np.ndarray,
    axes: tuple[int, ...],
    geom: Geometry,
    p: float,
    *,
    dtype=None,
    compute_dtype=None,
):
    """Lp pooling: ``(sum |x|^p) ** (1/p)`` over the in-bounds taps of each window."""
    dtype = np.dtype(x.dtype if dtype is None else dtype)
    compute_dtype = np.dtype(dtype if compute_dtype is None else compute_dtype)
    p = float(p)

    def transform(block):
        y = block.astype(compute_dtype)
        if p == 2.0:
            np.multiply(y, y, out=y)
        else:
            np.abs(y, out=y)
            if p != 1.0:
                np.power(y, compute_dtype.type(p), out=y)
        return y

    def finish(acc, tile):
        if p == 2.0:
            np.sqrt(acc, out=acc)
        elif p != 1.0:
            np.power(acc, compute_dtype.type(1.0 / p), out=acc)

    return _sum_pool(x, axes, geom, dtype, compute_dtype, transform, finish)


@functools.lru_cache(maxsize=256)
def adaptive_bins(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's adaptive-pool bins: ``start = floor(i*in/out)``, ``end = ceil((i+1)*in/out)``
    (read-only arrays, cached per size pair).

    Examples
    --------
    >>> from layoutops.kernels.pool import adaptive_bins
    >>> [b.tolist() for b in adaptive_bins(5, 3)]
    [[0, 1, 3], [2, 4, 5]]
    """
    i = np.arange(n_out, dtype=np.int64)
    start = (i * n_in) // n_out
    end = -((-(i + 1) * n_in) // n_out)
    start.flags.writeable = end.flags.writeable = False
    return start, end


def _nonspatial_tiles(shape, axes, cost, limit=None):
    """Tiles over the non-spatial axes only (every spatial axis whole), each costing at most
    ``limit`` (default: the workspace limit) where a whole plane allows."""
    others = [ax for ax in range(len(shape)) if ax not in axes]
    sub = tuple(shape[ax] for ax in others)
    spatial = math.prod(shape[ax] for ax in axes)
    for sub_tile in split_tiles(sub, lambda t: cost(math.prod(t) * spatial), limit):
        tile = [slice(None)] * len(shape)
        for ax, sl in zip(others, sub_tile, strict=True):
            tile[ax] = sl
        yield tuple(tile)


def global_pool(x: np.ndarray, axes: tuple[int, ...], kind: str, *, p=None, dtype=None,
                compute_dtype=None) -> np.ndarray:
    """Reduce every spatial axis to size 1: ``kind`` is ``"max"``, ``"avg"`` or ``"lp"``.

    Whole-plane reductions (NumPy's pairwise sums; a NaN propagates through the max), on
    tiles of the non-spatial axes for the ``|x|^p`` temporaries of ``"lp"``.
    """
    if kind == "max":
        if x.size == 0:
            return np.empty(pool_output_shape(x.shape, axes, (1,) * len(axes)), x.dtype)
        return np.ascontiguousarray(np.max(x, axis=axes, keepdims=True))
    out = np.empty(pool_output_shape(x.shape, axes, (1,) * len(axes)), dtype)
    if out.size == 0:
        return out
    if kind == "avg":
        if not (x.dtype == out.dtype == compute_dtype and _plane_sums(x, axes, out)):
            out[...] = np.mean(x, axis=axes, keepdims=True, dtype=compute_dtype)
        else:
            out /= out.dtype.type(x.size // out.size)
        return out
    csize = np.dtype(compute_dtype).itemsize
    for tile in _nonspatial_tiles(x.shape, axes, lambda n: n * csize):
        y = x[tile].astype(compute_dtype)
        if p == 2.0:
            np.multiply(y, y, out=y)
        else:
            np.abs(y, out=y)
            if p != 1.0:
                np.power(y, y.dtype.type(p), out=y)
        acc = np.sum(y, axis=axes, keepdims=True)
        del y
        out[tile] = np.sqrt(acc) if p == 2.0 else acc ** acc.dtype.type(1.0 / p)
    return out


#: inputs below this size sum their planes on the calling thread (a thread hand-off costs
#: ~0.1 ms here: 2x3x3x16 float32 channels-last took 157 us split over two threads, 32 on
#: one; 7-round A/B of 1 against 8 MiB, us, CF / CL: 8x2048x7x7 241 / 228 -> 151 / 139,
#: 8x512x14x14 215 / 217 -> 134 / 148, 16x2048x7x7 348 / 301 -> 296 / 290; 64x1024x7x7
#: (BENCH.md, 12.8 MB) still split, 506 / 480)
PLANE_SUMS_PARALLEL_BYTES = 8 << 20

#: planes up to this many cells are summed as below (sequential float accumulation, as
#: accurate as NumPy's pairwise sums over such short runs); longer ones by `np.mean`
MATVEC_PLANE_MAX = 1024


def _plane_sums(x: np.ndarray, axes, out: np.ndarray) -> bool:
    """Write the sums over the spatial ``axes`` into ``out`` (contiguous, spatial axes of size
    1) when they are adjacent array axes that merge into a view ``(before, plane, after)`` of
    a float32/float64 ``x``: channels-first, ``(N*C, HW) -> N*C`` as one ``np.einsum`` row
    reduction; channels-last, ``1 @ (HW, C)`` per batch as BLAS vector-matrix products (both
    several times faster than ``np.add.reduce`` over short rows). False when that does not
    apply."""
    lo, hi = min(axes), max(axes) + 1
    if x.dtype not in (np.float32, np.float64) or hi - lo != len(axes):
        return False
    plane = math.prod(x.shape[lo:hi])
    if plane > MATVEC_PLANE_MAX or not out.flags.c_contiguous:
        return False
    shape = (math.prod(x.shape[:lo]), plane, math.prod(x.shape[hi:]))
    try:
        y = np.reshape(x, shape, copy=False)
    except ValueError:
        return False
    # the rows (channels-first: N*C planes) or the samples (channels-last: one vector-matrix
    # product each) are split over the threads, with BLAS held to one thread: its own
    # threads would fight the split ones, and after a threaded call they spin on the cores
    # for about 0.1 s (global avg channels-last, 64x7x7x1024 float32: 0.62 -> 0.45 ms with
    # 2 threads). Each row's or sample's sum does not depend on the split.
    rows = shape[0]
    if shape[2] == 1:
        mat, res = y[:, :, 0], out.reshape(rows)

        def product(a, b):
            # einsum's reduction over contiguous rows: 64x1024x7x7 float32 0.51 ms on one
            # thread against 0.72 for BLAS's matrix-vector product (0.63 -> 0.57 ms on two)
            np.einsum("pi->p", mat[a:b], out=res[a:b])
    else:
        res = out.reshape(rows, shape[2])
        ones = np.ones(plane, x.dtype)

        def product(a, b):
            np.matmul(ones, y[a:b], out=res[a:b])

    threads = min(get_num_threads(), rows)
    if x.nbytes < PLANE_SUMS_PARALLEL_BYTES:
        threads = 1  # a hand-off to another thread costs more than such a product
    bounds = [rows * i // threads for i in range(threads + 1)]

    def part(ranges):
        for a, b in ranges:
            if b > a:
                product(a, b)

    with blas.single_threaded():
        parallel(part, list(zip(bounds[:-1], bounds[1:], strict=True)), threads)
    return True


def _uniform_geometry(in_sizes, out_sizes) -> Geometry | None:
    """The plain pool geometry equal to the adaptive bins when every ``in`` is a multiple of
    its ``out`` (kernel = stride = in / out), else None."""
    if any(i % o for i, o in zip(in_sizes, out_sizes, strict=True)):
        return None
    k = tuple(i // o for i, o in zip(in_sizes, out_sizes, strict=True))
    n = len(k)
    return Geometry(tuple(in_sizes), k, k, (1,) * n, ((0, 0),) * n, tuple(out_sizes))


def adaptive_avg_pool(
    x: np.ndarray, axes: tuple[int, ...], out_sizes: tuple[int, ...], *, dtype, compute_dtype
):
    """Adaptive average pooling: a plain average pool when the bins are uniform, else the bin
    sums one spatial axis at a time (the sum over a box is separable) divided by the bins'
    sizes: float32/float64 by GEMMs with 0/1 bin matrices where they pay (`_bin_sums`),
    else by gathers of each bin offset. A tile whose GEMM result holds a NaN is redone by the
    gathers (a NaN or an infinity times a 0 of the bin matrix spills into every bin)."""
    in_sizes = tuple(x.shape[ax] for ax in axes)
    uniform = _uniform_geometry(in_sizes, out_sizes)
    if uniform is not None:
        return avg_pool(x, axes, uniform, dtype=dtype, compute_dtype=compute_dtype)
    out = np.empty(pool_output_shape(x.shape, axes, out_sizes), dtype)
    if out.size == 0:
        return out
    ndim = x.ndim
    compute_dtype = np.dtype(compute_dtype)
    csize = compute_dtype.itemsize
    gemms = _BIN_SUMS and compute_dtype in (np.float32, np.float64) and bin_sums_pay(
        x.shape, axes, out_sizes)
    divisor = bin_sizes(axes, [x.shape[ax] for ax in axes], out_sizes, ndim, compute_dtype)
    with blas.single_threaded():
        for tile in _nonspatial_tiles(x.shape, axes, lambda n: 3 * n * csize):
            sums = None
            if gemms:
                sums = np.ascontiguousarray(x[tile], dtype=compute_dtype)
                with np.errstate(invalid="ignore"):  # inf * 0: a NaN, redone below
                    for i in reversed(range(len(axes))):
                        sums = _bin_sums(sums, axes[i], out_sizes[i])
                if np.isnan(sums).any():
                    sums = None
            if sums is None:
                sums = _gathered_bin_sums(x[tile], axes, out_sizes, compute_dtype)
            np.divide(sums, divisor, out=out[tile], casting="unsafe")
    return out


def _gathered_bin_sums(cur: np.ndarray, axes, out_sizes, compute_dtype) -> np.ndarray:
    """The adaptive bin sums of ``cur``, one axis at a time: per bin offset, the gathered
    cells added where the offset lies inside its bin."""
    ndim = cur.ndim
    for ax, n_out in zip(axes, out_sizes, strict=True):
        start, end = adaptive_bins(cur.shape[ax], n_out)
        acc = np.zeros(pool_output_shape(cur.shape, (ax,), (n_out,)), compute_dtype)
        for j in range(int((end - start).max())):
            pick = np.minimum(start + j, end - 1)
            valid = _along(start + j < end, ax, ndim)
            np.add(acc, np.take(cur, pick, axis=ax), out=acc, where=valid)
        cur = acc
    return cur


def bin_sizes(axes, in_sizes, out_sizes, ndim: int, dtype) -> np.ndarray:
    """The number of cells of every adaptive bin: the outer product of the per-axis bin
    lengths, broadcastable against a pooled array of ``ndim`` axes.

    Examples
    --------
    >>> from layoutops.kernels.pool import bin_sizes
    >>> bin_sizes((0, 1), (5, 4), (3, 2), 2, "float32").tolist()  # lengths 2, 3, 2 by 2, 2
    [[4.0, 4.0], [6.0, 6.0], [4.0, 4.0]]
    """
    sizes = np.ones((1,) * ndim, dtype)
    for ax, n_in, n_out in zip(axes, in_sizes, out_sizes, strict=True):
        start, end = adaptive_bins(n_in, n_out)
        sizes = sizes * _along((end - start).astype(dtype), ax, ndim)
    return sizes


def bin_matrix(n_in: int, n_out: int, dtype) -> np.ndarray:
    """``(n_in, n_out)``: 1 where input cell ``i`` lies in adaptive bin ``j``, else 0.

    Examples
    --------
    >>> from layoutops.kernels.pool import bin_matrix
    >>> bin_matrix(5, 3, "int8").T.tolist()  # bins [0, 2), [1, 4), [3, 5)
    [[1, 1, 0, 0, 0], [0, 1, 1, 1, 0], [0, 0, 0, 1, 1]]
    """
    if n_in * n_out > _CACHED_BIN_CELLS:
        return _bin_matrix.__wrapped__(n_in, n_out, np.dtype(dtype))
    return _bin_matrix(n_in, n_out, np.dtype(dtype))


#: bin matrices of at most this many cells are cached (read-only)
_CACHED_BIN_CELLS = 1 << 14


@functools.lru_cache(maxsize=128)
def _bin_matrix(n_in: int, n_out: int, dtype: np.dtype) -> np.ndarray:
    start, end = adaptive_bins(n_in, n_out)
    cells = np.arange(n_in)[:, None]
    matrix = ((cells >= start) & (cells < end)).astype(dtype)
    matrix.flags.writeable = False
    return matrix


def _bin_sums(cur: np.ndarray, ax: int, n_out: int) -> np.ndarray:
    """The sums of the C-contiguous ``cur`` over the adaptive bins along axis ``ax``
    (`bin_contract` with the 0/1 bin matrix)."""
    return bin_contract(cur, ax, bin_matrix(cur.shape[ax], n_out, cur.dtype))


def bin_contract(cur: np.ndarray, ax: int, bins: np.ndarray) -> np.ndarray:
    """``cur`` (C-contiguous) with its axis ``ax`` contracted with the matrix ``bins`` ``(n_in,
    n_out)``: a GEMM over the rows when the axis is innermost or the values after it are few
    (the matrix widened by them with a Kronecker product), else one per leading index (the
    matrix broadcast). The bin sums of adaptive average pooling, and with the transposed bin
    matrix their adjoint (`grad.bin_scatter`).

    Examples
    --------
    >>> import numpy as np
    >>> from layoutops.kernels.pool import bin_contract, bin_matrix
    >>> x = np.arange(10.0).reshape(2, 5)
    >>> bin_contract(x, 1, bin_matrix(5, 3, x.dtype)).tolist()
    [[1.0, 6.0, 7.0], [11.0, 21.0, 17.0]]
    """
    shape = cur.shape
    n_in, n_out = bins.shape
    pre, post = math.prod(shape[:ax]), math.prod(shape[ax + 1:])
    new_shape = shape[:ax] + (n_out,) + shape[ax + 1:]
    if post <= BIN_KRON_MAX:
        # bins (x) I_post, as one broadcast product (np.kron's own steps cost ~20 us)
        wide = bins if post == 1 else (
            bins[:, None, :, None] * np.eye(post, dtype=cur.dtype)[None, :, None, :]
        ).reshape(n_in * post, n_out * post)
        return (cur.reshape(pre, n_in * post) @ wide).reshape(new_shape)
    return np.matmul(bins.T, cur.reshape(pre, n_in, post)).reshape(new_shape)


def bin_sums_pay(shape, axes, out_sizes) -> bool:
    """True if every axis's `_bin_sums` GEMM stays within its multiply-adds per value:
    `BIN_INNER_MAX` output cells when the axis is innermost, `BIN_KRON_MACS` for the
    widened matrix, `BIN_BATCHED_MAX` cells for the batched GEMMs (beyond them the gathers
    of the bin offsets were faster: each input value costs the GEMM one multiply-add per
    output cell of its axis, the gathers one addition per bin length).

    Examples
    --------
    >>> from layoutops.kernels.pool import bin_sums_pay
    >>> bin_sums_pay((8, 512, 14, 14), (2, 3), (3, 3)), bin_sums_pay((16, 64, 1000), (2,), (300,))
    (True, False)
    """
    cur = list(shape)
    for ax, n_out in reversed(list(zip(axes, out_sizes, strict=True))):
        post = math.prod(cur[ax + 1:])
        if post == 1:
            fits = n_out <= BIN_INNER_MAX
        elif post <= BIN_KRON_MAX:
            fits = n_out * post <= BIN_KRON_MACS
        else:
            fits = n_out <= BIN_BATCHED_MAX
        if not fits:
            return False
        cur[ax] = n_out
    return True


#: non-uniform adaptive average pools of float32/float64 sum their bins by GEMMs with 0/1 bin
#: matrices, one axis at a time (`_bin_sums`), instead of a gather and a masked addition
#: per bin offset. 2 threads (these GEMMs on one), us, CF / CL, before -> after:
#: 8x512x14x14 -> 3x3 2325 / 977 -> 530 / 294; 8x256x28x28 -> 6x6 3683 / 2253 -> 1105 / 543;
#: 8x64x56x56 -> 40x40 9063 / 6102 -> 2465 / 2429; 8x64x112x112 -> 9x9 8050 / 6328 -> 4005 /
#: 1813; 2x32x10x20x30 -> 3x6x7 627 / 527 -> 426 / 198; 1-D 16x64x1000 -> 64 CF 4101 ->
#: 1329 (channels-last 1077 -> 1499: kept by `BIN_BATCHED_MAX`), -> 300 1937 / 1572 ->
#: 4213 / 4743 (kept by the bounds below)
_BIN_SUMS = True
#: ... widening the bin matrix by a Kronecker product while the values after the axis are at
#: most this many (the GEMM's flops grow with them; a batched GEMM per leading index instead)
BIN_KRON_MAX = 16
#: output cells per axis at most: the axis innermost / the widened matrix's multiply-adds per
#: value / batched GEMMs
BIN_INNER_MAX = 128
BIN_KRON_MACS = 96
BIN_BATCHED_MAX = 48


def adaptive_max_pool(
    x: np.ndarray, axes: tuple[int, ...], out_sizes: tuple[int, ...], *, return_indices=False
):
    """Adaptive max pooling: a plain max pool when the bins are uniform, else separably from
    the last spatial axis to the first, carrying the partial flat index. Both give the first
    maximum in row-major window order, or the last NaN (PyTorch CPU's rule)."""
    in_sizes = tuple(x.shape[ax] for ax in axes)
    uniform = _uniform_geometry(in_sizes, out_sizes)
    if uniform is not None:
        return max_pool(x, axes, uniform, return_indices=return_indices)
    out = np.empty(pool_output_shape(x.shape, axes, out_sizes), x.dtype)
    idx = np.empty(out.shape, np.int64) if return_indices else None
    if out.size == 0:
        return (out, idx) if return_indices else out
    ndim = x.ndim
    floating = _is_floating(x.dtype)
    pstrides = plane_strides(in_sizes)
    per = 3 * (x.dtype.itemsize + (18 if return_indices else 0))
    # offsets within a bin, small: one byte while the bins are shorter than 256 cells
    j_dtype = _tap_id_dtype(max(x.shape[ax] for ax in axes))

    def bin_tile(tile):
        cur = x[tile]
        cur_idx = None  # flat index contributed by the axes reduced so far
        # NaN wins by its own rule (the last NaN); without one in the tile, no test per offset
        nan_rule = return_indices and floating and bool(np.isnan(np.max(cur)))
        for i in reversed(range(len(axes))):
            ax = axes[i]
            start, end = adaptive_bins(x.shape[ax], out_sizes[i])
            best = np.take(cur, start, axis=ax)
            if return_indices:
                best_j = np.zeros(best.shape, j_dtype)
                beat = np.empty(best.shape, bool)
                beat_j = np.empty(best.shape, j_dtype)
            for j in range(1, int((end - start).max())):
                v = np.take(cur, np.minimum(start + j, end - 1), axis=ax)
                if return_indices:
                    np.greater(v, best, out=beat)
                    if nan_rule:
                        beat |= np.isnan(v)
                    # the last offset that beat the running max wins: a running maximum
                    np.multiply(beat, j_dtype.type(j), out=beat_j)
                    np.maximum(best_j, beat_j, out=best_j)
                np.maximum(best, v, out=best)
            if return_indices:
                # a repeated last cell (offset past the bin's end) is the last cell itself
                pos = np.minimum(_along(start, ax, ndim) + best_j, _along(end - 1, ax, ndim))
                part = pos * pstrides[i]
                if cur_idx is not None:
                    part += np.take_along_axis(cur_idx, pos, axis=ax)
                cur_idx = part
            cur = best
        out[tile] = cur
        if return_indices:
            idx[tile] = cur_idx

    # the bins run along the spatial axes: whole planes per tile
    bound = ADAPTIVE_PARALLEL_BYTES // (4 if return_indices else 1)
    _run_planes(bin_tile, x, axes, per, bound, get_workspace_limit() // get_num_threads())
    return (out, idx) if return_indices else out


def _run_planes(work, x, axes, per: int, bound: int, limit: int) -> None:
    """``work(tile)`` for tiles of whole planes of ``x`` (the non-spatial axes cut, ``per``
    bytes of work per value, at most ``limit`` per tile), in contiguous runs over the threads
    from ``bound`` bytes of ``x`` on, then at least two tiles per thread. A plane is never
    split: whatever runs along it runs in the same order on any thread count."""
    threads = get_num_threads() if x.nbytes >= bound else 1
    if threads > 1:
        limit = min(limit, max(1, -(-x.size * per // (2 * threads))))
    tiles = list(_nonspatial_tiles(x.shape, axes, lambda n: n * per, limit))

    def run(part):
        for tile in part:
            work(tile)

    parallel(run, tiles, threads if len(tiles) >= 2 * threads else 1)


#: non-uniform adaptive max pools of at least this many input bytes (a quarter with indices:
#: three times the work per value) split their planes over the threads. 5-round A/Bs, 2
#: threads, us, one thread -> two: 8x512x14x14 -> 3x3 with indices CF 3967 -> 2697, CL 2419
#: -> 2065; without, CF 1437 -> 1148 but CL 637 -> 847 (3.2 MB: kept on one); 8x256x28x28 ->
#: 6x6 CL 2344 -> 1337
ADAPTIVE_PARALLEL_BYTES = 4 << 20


def plane_offsets(indices: np.ndarray, axes, sizes, elem) -> np.ndarray:
    """The element offsets, in an array of element strides ``elem``, of the flat row-major
    plane ``indices`` (plane sizes ``sizes`` along ``axes``): int64, the shape of
    ``indices``. With the spatial axes adjacent and in order the plane is one strided axis
    of the array, and each index times its innermost stride is the offset (max_unpool,
    8x64x28x28 -> 56x56 float32, channels-first / -last: 4.6 / 4.7 -> 1.6 / 1.6 ms; the
    max-pool gradient's scatter 12.1 / 11.8 -> 6.1 / 4.9); else each index is decoded per
    axis.

    Examples
    --------
    >>> import numpy as np
    >>> from layoutops.kernels.pool import plane_offsets
    >>> plane_offsets(np.array([0, 5]), (1, 2), (2, 3), (6, 3, 1)).tolist()  # adjacent
    [0, 5]
    >>> plane_offsets(np.array([0, 5]), (0, 2), (2, 3), (6, 3, 1)).tolist()  # (H, C, W)
    [0, 8]
    """
    ind = np.asarray(indices, dtype=np.int64)
    out = np.empty(ind.shape, np.int64)
    if list(axes) == list(range(axes[0], axes[0] + len(axes))):
        np.multiply(ind, elem[axes[-1]], out=out)
        return out
    out.fill(0)
    for ax, n, ps in zip(axes, sizes, plane_strides(sizes), strict=True):
        out += (ind // ps) % n * elem[ax]
    return out


def max_unpool(
    x: np.ndarray, indices: np.ndarray, axes: tuple[int, ...], out_sizes: tuple[int, ...]
) -> np.ndarray:
    """Scatter ``x`` into zeros of spatial size ``out_sizes`` at the flat plane ``indices``
    (validated by the caller to lie in ``[0, prod(out_sizes))``); of values sharing a cell
    the last one stays."""
    return plane_scatter(x, indices, axes, out_sizes, x.dtype)


def plane_scatter(
    values: np.ndarray,
    indices: np.ndarray,
    axes: tuple[int, ...],
    out_sizes: tuple[int, ...],
    dtype,
    *,
    accumulate: bool = False,
) -> np.ndarray:
    """Zeros of spatial size ``out_sizes`` (dtype ``dtype``) with each of ``values`` put at
    its flat plane index (row-major over ``axes``, in ``[0, prod(out_sizes))``, checked by
    the caller): assigned (the last of values sharing a cell stays: `max_unpool`) or, with
    ``accumulate``, summed by `np.add.at` (the max-pool gradient, whose overlapping windows
    can share a winner).

    Whole planes per tile, split over the threads from `UNPOOL_PARALLEL_BYTES` of
    ``values`` on, each thread zeroing the planes it fills: every plane's values land in the
    same order whatever the thread count.

    Examples
    --------
    >>> import numpy as np
    >>> from layoutops.kernels.pool import plane_scatter
    >>> v = np.array([[[1.0, 2.0, 4.0]]])                  # NCW: one plane of 3 values
    >>> idx = np.array([[[1, 1, 3]]])
    >>> plane_scatter(v, idx, (2,), (4,), np.float64).tolist()
    [[[0.0, 2.0, 0.0, 4.0]]]
    >>> plane_scatter(v, idx, (2,), (4,), np.float64, accumulate=True).tolist()
    [[[0.0, 3.0, 0.0, 4.0]]]
    """
    out = np.empty(pool_output_shape(values.shape, axes, out_sizes), dtype)
    if values.size == 0 or out.size == 0:
        out.fill(0)
        return out
    ndim = values.ndim
    flat_out = out.reshape(-1)
    elem = [st // out.itemsize for st in out.strides]

    def scatter(tile):
        out[tile].fill(0)  # the tile's planes, whole: zeroed on the thread that fills them
        if indices[tile].size == 0:
            return
        target = plane_offsets(indices[tile], axes, out_sizes, elem)
        for ax in range(ndim):
            if ax not in axes:
                start, stop, _ = tile[ax].indices(values.shape[ax])
                pos = np.arange(start, stop, dtype=np.int64)
                target += _along(pos * elem[ax], ax, ndim)
        src = values[tile].reshape(-1)
        if accumulate:
            np.add.at(flat_out, target.reshape(-1), src)
        else:
            flat_out[target.reshape(-1)] = src

    _run_planes(scatter, values, axes, 24, UNPOOL_PARALLEL_BYTES, _tile_limit())
    return out


#: `plane_scatter` (`max_unpool`, the max-pool gradient) of at least this many input bytes
#: splits its planes over the threads, each thread zeroing the planes it fills (5-round
#: A/B, max_unpool 8x64x28x28 float32 -> 56x56, CF / CL: 1.59 / 1.61 -> 1.19 / 1.19 ms)
UNPOOL_PARALLEL_BYTES = 1 << 20
