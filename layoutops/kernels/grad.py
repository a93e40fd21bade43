"""Kernel pieces of the gradients: weight correlation, window scatter, padding fold, index scatter.

All of them run on the windowing primitive of `layoutops.kernels.window` and tile their work
with `split_tiles` under the workspace limit; axis orders come from the layout letters, so a
channels-last array is never transposed to channels-first to compute.

- `weight_grad`: the weight gradient of a conv, ``sum_{n, out} window(x)[n, out, taps] *
  g[n, out]`` per group, on the window view of each (padded) input tile: the tile's columns
  are copied once in the order its layout favours (``(G, C*taps, N*positions)`` for
  channels-first, ``(G, N*positions, taps*C)`` for channels-last) and contracted by one
  batched matmul (BLAS per group; an einsum with the group as a batch index would leave
  BLAS).
- `window_scatter`: the adjoint of taking windows with a ones kernel (each output value added
  to every tap of its window) — the input gradient of average and Lp pooling.
- `fold_padding`: the gradient with respect to a reflect/replicate/circular padded input,
  folded back onto the source indices.
- `index_scatter`: scatter-add at max-pool indices (flat per spatial plane).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from . import blas, pool
from .geometry import Geometry
from .plan import get_workspace_limit, split_tiles
from .pool import (
    _boxes,
    _index_pieces,
    adaptive_bins,
    bin_contract,
    bin_matrix,
    bin_sizes,
    plane_offsets,
)
from .scratch import scratch
from .threads import get_num_threads, parallel
from .window import padded_block, source_indices, window_view

__all__ = ["weight_grad", "window_scatter", "fold_padding", "index_scatter", "bin_scatter"]

_ROLE = "NCGOIM"

#: bytes of one `weight_grad` tile (its padded block, columns and gradient) at most: the
#: columns then stay in this thread's kept scratch
TILE_BYTES = 16 << 20


def weight_grad(
    x: np.ndarray,
    x_letters: str,
    g: np.ndarray,
    g_letters: str,
    geom: Geometry,
    spatial: str,
    w_letters: str,
    w_shape: tuple[int, ...],
    *,
    x_channel: str,
    g_channel: str,
    mode: str = "constant",
    dtype=np.float64,
) -> np.ndarray:
    """The weight gradient of a grouped correlation, in the order of ``w_letters``.

    Parameters
    ----------
    x : ndarray
        The windowed operand (the forward input), a grouped view with axes ``x_letters``
        (``N``, ``G``, ``C`` and the spatial letters).
    g : ndarray
        The per-position operand (the output gradient), grouped, axes ``g_letters``; its
        spatial sizes are ``geom.out_sizes``.
    geom : Geometry
        The forward geometry of ``x`` (in the order of ``spatial``).
    spatial : str
        The spatial letters in the order of ``geom``.
    w_letters, w_shape : str, tuple of int
        Letters (``G``, ``O``, ``I`` and the spatial letters) and shape of the result.
    x_channel, g_channel : str
        The weight letters matched by the ``C`` axis of ``x`` and of ``g``.
    mode : str
        The padding mode of ``x`` (see `padded_block`).
    dtype : dtype
        The compute (accumulation) dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from layoutops.kernels.geometry import Geometry
    >>> from layoutops.kernels.grad import weight_grad
    >>> x = np.arange(5.0).reshape(1, 1, 1, 5)          # NGCW
    >>> g = np.ones((1, 1, 1, 3))                        # NGCW: 3 outputs
    >>> geom = Geometry((5,), (3,), (1,), (1,), ((0, 0),), (3,))
    >>> weight_grad(x, "NGCW", g, "NGCW", geom, "W", "GOIW", (1, 1, 1, 3),
    ...             x_channel="I", g_channel="O").ravel().tolist()
    [3.0, 6.0, 9.0]
    """
    n_sp = len(spatial)
    x_axes = tuple(x_letters.index(c) for c in spatial)
    # axes of the window view: x's letters, then one tap axis per spatial letter (lower case)
    view_letters = x_letters + spatial.lower()
    channels_first = x_letters.index("C") < min(x_axes)
    if channels_first:   # columns (G, C * taps, N * positions): C and taps stay together
        x_order = "GC" + spatial.lower() + "N" + spatial
        g_order = "GCN" + spatial
        res_letters = "G" + x_channel + spatial + g_channel
    else:                # columns (G, N * positions, taps * C): the positions stay outermost,
        # each tap's C values one contiguous run of the input (C * taps order made the copy
        # go value by value: resnet 3x3 channels-last 33 -> 17 ms)
        x_order = "GN" + spatial + spatial.lower() + "C"
        g_order = "GN" + spatial + "C"
        res_letters = "G" + spatial + x_channel + g_channel
    x_perm = tuple(view_letters.index(c) for c in x_order)
    g_perm = tuple(g_letters.index(c) for c in g_order)
    w_perm = tuple(res_letters.index(c) for c in w_letters)

    n_axis_x, n_axis_g = x_letters.index("N"), g_letters.index("N")
    g_axes = tuple(g_letters.index(c) for c in spatial)
    itemsize = np.dtype(dtype).itemsize
    per_pos_x = x.shape[x_letters.index("G")] * x.shape[x_letters.index("C")]
    per_pos_g = g.shape[g_letters.index("G")] * g.shape[g_letters.index("C")]
    taps = math.prod(geom.kernel_sizes)

    def cost(tile):
        nb, outs = tile[0], tile[1:]
        block = nb * per_pos_x * math.prod(
            (o - 1) * s + e for o, s, e in zip(outs, geom.strides, geom.extents, strict=True)
        )
        cols = nb * math.prod(outs) * per_pos_x * taps
        return (block + cols + nb * math.prod(outs) * per_pos_g) * itemsize

    acc = np.zeros(w_shape, dtype=dtype)
    batch = x.shape[n_axis_x]
    if not batch:
        return acc
    # tiles sized by the limit alone (not the thread count: the sums' order stays the same),
    # as many in flight as the limit holds
    limit = min(get_workspace_limit(), TILE_BYTES)
    tiles = list(split_tiles((batch, *geom.out_sizes), cost, limit))
    largest = max(cost(tuple(sl.stop - sl.start for sl in tile)) for tile in tiles)
    threads = max(1, min(get_num_threads(), get_workspace_limit() // max(largest, 1)))

    def tile_sum(tile):
        nsl, out_sl = tile[0], tile[1:]
        xi = [slice(None)] * x.ndim
        xi[n_axis_x] = nsl
        spans = tuple(geom.input_span(i, sl.start, sl.stop) for i, sl in enumerate(out_sl))
        block = padded_block(x[tuple(xi)], x_axes, spans, mode=mode, dtype=dtype)
        view = window_view(block, x_axes, geom.kernel_sizes, geom.strides, geom.dilations)
        gi = [slice(None)] * g.ndim
        gi[n_axis_g] = nsl
        for ax, sl in zip(g_axes, out_sl, strict=True):
            gi[ax] = sl
        gt = g[tuple(gi)]
        if gt.dtype != dtype:
            gt = gt.astype(dtype)
        groups, a_per, b_per = gt.shape[g_letters.index("G")], view.shape[
            x_letters.index("C")], gt.shape[g_letters.index("C")]
        rows = math.prod(view.shape[x.ndim:]) * a_per    # C * taps
        cols = view.size // (groups * rows)                  # N * positions
        # the per-tile im2col copy into this thread's kept scratch (a fresh buffer of this
        # size is faulted in page by page on every call), then one BLAS GEMM per group (a
        # batched matmul)
        src = view.transpose(x_perm)
        xm = scratch("weight grad columns", src.size, dtype).reshape(src.shape)
        xm[...] = src
        xm = xm.reshape((groups, rows, cols) if channels_first else (groups, cols, rows))
        gm = gt.transpose(g_perm).reshape(
            (groups, b_per, cols) if channels_first else (groups, cols, b_per)
        )
        if channels_first:
            res = np.matmul(xm, gm.transpose(0, 2, 1))
        else:
            res = np.matmul(xm.transpose(0, 2, 1), gm)
        return res.reshape((groups, a_per, *geom.kernel_sizes[:n_sp], b_per)
                           if channels_first else
                           (groups, *geom.kernel_sizes[:n_sp], a_per, b_per))

    # the tiles run as pipelines on single-threaded BLAS (a BLAS-threaded GEMM leaves its
    # workers spinning for ~0.1 s, and the pipelined convs of the same backward pass ran
    # against them); their sums are added in tile order, so the result does not depend on
    # the thread count
    sums = [None] * len(tiles)

    def part(items):
        for index, tile in items:
            sums[index] = tile_sum(tile)

    flops = 2 * batch * math.prod(geom.out_sizes) * taps * per_pos_x * (
        per_pos_g // x.shape[x_letters.index("G")])
    blas.pipelines(part, list(enumerate(tiles)), threads, flops)
    for res in sums:
        acc += res.transpose(w_perm)
    return acc


def window_scatter(
    values: np.ndarray,
    axes: tuple[int, ...],
    geom: Geometry,
    *,
    tile_axes: tuple[int, ...] = (),
    dtype=None,
) -> np.ndarray:
    """Add every value to each tap of its window: the adjoint of a ones-kernel window sum.

    ``values`` has the output sizes ``geom.out_sizes`` on ``axes``; the result has the input
    sizes ``geom.in_sizes`` there (taps falling into padding are dropped). Each tap adds into
    the result itself, tile by tile over ``tile_axes`` (e.g. batch and channels) so that a
    tile of the result stays in cache across the taps, the tiles split over the threads from
    `SCATTER_PARALLEL_BYTES` on; no padded buffer. Average pool gradients, 2 threads, ms,
    before (a zero-filled padded buffer per tile, cropped, on one thread) / after: k2 s2
    8x128x56x56 CF 8.6 / 1.7, CL 7.0 / 1.4; k3 s1 p1 8x64x56x56 CF 9.5 / 5.0.

    Examples
    --------
    >>> import numpy as np
    >>> from layoutops.kernels.geometry import Geometry
    >>> from layoutops.kernels.grad import window_scatter
    >>> geom = Geometry((5,), (3,), (2,), (1,), ((1, 1),), (3,))
    >>> window_scatter(np.ones(3), (0,), geom).tolist()
    [1.0, 2.0, 1.0, 2.0, 1.0]
    """
    dtype = values.dtype if dtype is None else np.dtype(dtype)
    out_shape = list(values.shape)
    for ax, n in zip(axes, geom.in_sizes, strict=True):
        out_shape[ax] = n
    result = np.empty(out_shape, dtype=dtype)
    if result.size == 0:
        return result
    # each tap adds its values into the input cells it read (taps in the padding dropped:
    # `pool.tap_ranges`); taps that never share a cell (`Geometry.disjoint_windows`) are
    # copied instead, and when they cover every cell (k = s, no dilation or padding, windows
    # to the end) no zeros are written first
    disjoint = geom.disjoint_windows
    covered = disjoint and all(
        d == 1 and k == s and o * s == n and p == (0, 0) for k, d, s, o, n, p in zip(
            geom.kernel_sizes, geom.dilations, geom.strides, geom.out_sizes, geom.in_sizes,
            geom.pads, strict=True))
    outer = tuple(values.shape[a] for a in tile_axes)
    per = result.nbytes // max(1, math.prod(outer))
    ranges = [(0, o) for o in geom.out_sizes]
    boxes = list(_boxes(geom, ranges))
    # tiles of the non-spatial axes whose result stays in cache while every tap adds to it,
    # split over the threads (disjoint parts of the result; every cell's sum runs in tap
    # order whatever the thread)
    threads = get_num_threads()
    limit = min(SCATTER_TILE_BYTES, max(per, -(-result.nbytes // (2 * threads))))
    tiles = list(split_tiles(outer, lambda t: math.prod(t) * per, limit))

    def run(part):
        for tile in part:
            index = [slice(None)] * values.ndim
            for a, sl in zip(tile_axes, tile, strict=True):
                index[a] = sl
            vals = values[tuple(index)]
            res = result[tuple(index)]
            if not covered:
                res.fill(0)
            whole = tuple(slice(0, n) for n in vals.shape)
            for box in boxes:
                dst, src = _index_pieces(whole, axes, geom.strides, box)
                if disjoint:
                    res[src] = vals[dst]
                else:
                    res[src] += vals[dst]

    parallel(run, tiles, threads if result.nbytes >= SCATTER_PARALLEL_BYTES else 1)
    return result


#: bytes of the result one tile of `window_scatter` adds its taps into
SCATTER_TILE_BYTES = 4 << 20
#: ... and from how many bytes of result its tiles are split over the threads
SCATTER_PARALLEL_BYTES = 2 << 20


def fold_padding(
    grad_padded: np.ndarray,
    axes: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    in_sizes: tuple[int, ...],
    mode: str,
) -> np.ndarray:
    """Fold a gradient with respect to a padded input back onto the unpadded input.

    ``grad_padded`` has sizes ``begin + n + end`` on ``axes``; every padded position adds its
    gradient to the input index it was read from (`source_indices` with ``mode``); with
    ``mode="constant"`` padded positions are dropped.

    Examples
    --------
    >>> import numpy as np
    >>> from layoutops.kernels.grad import fold_padding
    >>> fold_padding(np.arange(6.0), (0,), ((2, 1),), (3,), "reflect").tolist()
    [2.0, 9.0, 4.0]
    """
    out = grad_padded
    for ax, (b, e), n in zip(axes, pads, in_sizes, strict=True):
        core = [slice(None)] * out.ndim
        core[ax] = slice(b, b + n)
        folded = np.array(out[tuple(core)], copy=True)
        if mode != "constant":
            src = source_indices(-b, n + e, n, mode)
            for j in itertools.chain(range(b), range(b + n, b + n + e)):
                dst = [slice(None)] * out.ndim
                dst[ax] = int(src[j])
                pick = [slice(None)] * out.ndim
                pick[ax] = j
                folded[tuple(dst)] += out[tuple(pick)]
        out = folded
    return np.ascontiguousarray(out)


def index_scatter(
    g: np.ndarray,
    indices: np.ndarray,
    x_shape: tuple[int, ...],
    spatial_axes: tuple[int, ...],
    dtype,
    *,
    unique: bool = False,
) -> np.ndarray:
    """Scatter-add ``g`` into a zero array of ``x_shape`` at per-plane flat ``indices``.

    ``unique``: the caller knows no two values share an index (max pooling whose windows
    never overlap): they are assigned, not summed.

    ``g`` and ``indices`` share a shape in the same layout as ``x_shape`` (with output spatial
    sizes); each index is the row-major flat position within its own spatial plane (in the
    order of ``spatial_axes``), as `max_pool` returns it, in ``[0, plane size)`` (checked by
    the caller). Whole planes per tile over the threads (`pool.plane_scatter`): each plane's
    values are summed in the same order whatever the thread count (5-round A/B against one
    scatter over the whole array, max_pool_backward of 8x64x56x56 float32, 2 threads, us,
    CF / CL: 2x2 s2 4450 / 4077 -> 3982 / 3621, 3x3 s2 p1 6881 / 5347 -> 6622 / 5143; `np.add.at`
    holds the GIL, the zero fill and the offsets do not). NumPy < 1.25, whose `np.add.at`
    is slow, sums overlapping winners by a float64 `np.bincount` instead.

    Examples
    --------
    >>> import numpy as np
    >>> from layoutops.kernels.grad import index_scatter
    >>> g = np.array([[[1.0, 2.0]]])          # NCW, 2 outputs
    >>> idx = np.array([[[1, 1]]])
    >>> index_scatter(g, idx, (1, 1, 3), (2,), np.float64).tolist()
    [[[0.0, 3.0, 0.0]]]
    """
    dtype = np.dtype(dtype)
    in_sizes = tuple(x_shape[a] for a in spatial_axes)
    if unique or _ADD_AT:
        return pool.plane_scatter(g.astype(dtype, copy=False), indices, spatial_axes, in_sizes,
                                  dtype, accumulate=not unique)
    size = math.prod(x_shape)
    if g.size == 0 or size == 0:
        return np.zeros(x_shape, dtype=dtype)
    elem = np.cumprod((1,) + tuple(x_shape[::-1]))[:-1][::-1]  # C-order element strides
    flat = plane_offsets(indices, spatial_axes, in_sizes, elem)
    for ax in range(g.ndim):
        if ax not in spatial_axes:
            shape = [1] * g.ndim
            shape[ax] = g.shape[ax]
            flat += np.arange(g.shape[ax], dtype=np.int64).reshape(shape) * elem[ax]
    weights = g.astype(np.float64, copy=False).ravel()
    summed = np.bincount(flat.ravel(), weights=weights, minlength=size)
    return summed.astype(dtype, copy=False).reshape(x_shape)


def _spread_by_gemms(values: np.ndarray, axes, in_sizes):
    """`bin_scatter` for float32/float64 by the transposed 0/1 bin matrices
    (`pool.bin_contract`), the values divided by their bins' sizes first (PyTorch's ``g /
    count``); a broadcast when every axis has one bin (the adjoint of a global pool). None
    where the GEMMs do not pay (`_spread_pays`) or their result holds a NaN (a NaN or an
    infinity times a 0 of the matrix spills into every cell)."""
    dtype = values.dtype
    if not _SPREAD_GEMMS or dtype not in (np.float32, np.float64):
        return None
    if not _spread_pays(values.shape, axes, in_sizes):
        return None
    cur = values / bin_sizes(axes, in_sizes, [values.shape[ax] for ax in axes], values.ndim,
                             dtype)
    shape = list(values.shape)
    for ax, n in zip(axes, in_sizes, strict=True):
        shape[ax] = n
    if all(values.shape[ax] == 1 for ax in axes):
        out = np.empty(shape, dtype)
        out[...] = cur
        return out
    with np.errstate(invalid="ignore"), blas.single_threaded():
        for ax, n in reversed(list(zip(axes, in_sizes, strict=True))):
            cur = bin_contract(cur, ax, bin_matrix(n, cur.shape[ax], dtype).T)
    return None if np.isnan(cur).any() else np.ascontiguousarray(cur)


def _spread_pays(shape, axes, in_sizes) -> bool:
    """True if each axis's transposed-bin GEMM of `_spread_by_gemms` (last axis first) does
    at most `pool.BIN_KRON_MACS` multiply-adds per value it writes (bins times the values
    after the axis when the matrix is widened over them; `pool.BIN_INNER_MAX` bins for the
    innermost axis), the bounds of the forward sums."""
    cur = list(shape)
    for ax, n in reversed(list(zip(axes, in_sizes, strict=True))):
        bins, post = cur[ax], math.prod(cur[ax + 1:])
        if post == 1:
            fits = bins <= pool.BIN_INNER_MAX
        elif post <= pool.BIN_KRON_MAX:
            fits = bins * post <= pool.BIN_KRON_MACS
        else:
            fits = bins <= pool.BIN_BATCHED_MAX
        if not fits:
            return False
        cur[ax] = n
    return True


#: `bin_scatter` by GEMMs with the transposed bin matrices (`_spread_by_gemms`; 5-round A/B,
#: adaptive average pool gradients, 2 threads, us, CF / CL, per-bin loop -> GEMMs: 8x2048x7x7
#: from 1x1 678 / 400 -> 188 / 170 (PyTorch ~215); 8x512x14x14 from 3x3 3081 / 751 -> 1006 /
#: 519; 8x256x28x28 from 6x6 6332 / 1673 -> 1072 / 1392)
_SPREAD_GEMMS = True


#: overlapping winners summed by `np.add.at` in the gradient's dtype (NumPy >= 1.25 runs it
#: as a fast indexed loop) instead of a float64 `np.bincount` and two casts (5-round A/B,
#: max_pool_backward 3x3 s2 p1 of 8x64x56x56 float32, 2 threads, CF / CL: 15.6 / 13.6 ->
#: 7.0 / 5.5 ms; adaptive max 8x512x14x14 -> 3x3 5.1 -> 4.6). Older NumPy keeps bincount
_ADD_AT = np.lib.NumpyVersion(np.__version__) >= "1.25.0"


def bin_scatter(
    values: np.ndarray,
    axes: tuple[int, ...],
    in_sizes: tuple[int, ...],
    dtype,
) -> np.ndarray:
    """The adjoint of adaptive average pooling: spread each bin's value evenly over its bin.

    Bins follow PyTorch's rule ``start = floor(i * in / out)``, ``end = ceil((i + 1) * in /
    out)``; the axes are handled one at a time (bins are separable).

    Examples
    --------
    >>> import numpy as np
    >>> from layoutops.kernels.grad import bin_scatter
    >>> bin_scatter(np.array([3.0, 6.0]), (0,), (3,), np.float64).tolist()
    [1.5, 4.5, 3.0]
    """
    out = values.astype(dtype, copy=False)
    spread = _spread_by_gemms(out, axes, in_sizes)
    if spread is not None:
        return spread
    for ax, n in zip(axes, in_sizes, strict=True):
        m = out.shape[ax]
        shape = list(out.shape)
        shape[ax] = n
        spread = np.zeros(shape, dtype=dtype)
        starts, ends = adaptive_bins(n, m)
        for i, (start, end) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
            src = [slice(None)] * out.ndim
            src[ax] = slice(i, i + 1)
            dst = [slice(None)] * out.ndim
            dst[ax] = slice(start, end)
            spread[tuple(dst)] += out[tuple(src)] / (end - start)
        out = spread
    return np.ascontiguousarray(out)
