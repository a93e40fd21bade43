"""Convolution strategies on strided views, tiled under the workspace limit.

Every strategy receives plain arrays, letter strings and a `Geometry`; none imports ``ops``.

The input arrives as a grouped view (``x_letters`` such as ``NGCHW`` or ``NHWGC``: ``C`` split
into ``G`` groups of ``C`` channels) and the kernel as a grouped view (``w_letters`` such as
``GOIHW`` or ``HWIGO``). The output is allocated C-contiguous in ``out_letters`` (``C`` there
is ``G * O``, group-major) and filled tile by tile: the output index space
``(N, *out_spatial)`` is split with `split_tiles` so that the temporaries of one tile fit the
workspace limit. For each tile, `padded_block` gives the input block it reads (a view, or a
small padded copy: padding is never applied to the whole input) and the strategy contracts it
with the kernel.

Results of a tile are produced in one of two canonical orders, chosen by the output layout so
that the GEMM writes (nearly) straight into the output:

- ``A`` (channels-first output): ``(n, G, O, *P)`` — ``out[n, g] = W[g] (O x cK) @ cols``;
- ``B`` (channels-last output): ``(n, *P, G, O)`` — ``out[.., g, :] = cols (nP x Kc) @ W[g]``.

Strategies (``algorithm=``):

``"im2col"``
    Per tile, the window view of the block is copied once into a contiguous column matrix
    (the tile's im2col, never the whole input's) and contracted with the kernel by one batched
    GEMM (``np.matmul``, groups as a batch axis). Channels-first tiles with small planes put
    every sample of the tile into one GEMM (``N = n * P``). Channels-last tiles with groups
    copy their columns group-major ``(G, nP, K)``, so each group's GEMM runs on a contiguous
    matrix (on the strided ``(nP, G, K)`` view it measured 2.4x slower: 7.5 ms against 3.1 ms
    for the grouped case of BENCH.md, 1 thread); each group's GEMM writes its strided
    ``(nP, O)`` block of the output directly (no result copy: ~7%). Channels-last groups
    copy each group's ``c`` channels, and channels-first
    columns with short output rows (under 32 values, stride 1 along the row) each row, as
    one opaque item (NumPy copies short float runs value by value: 1.1-1.2x on the grouped
    case, 2x with 4 channels per group). Tiles hold at most 16 MiB: larger ones gave no
    GEMM speed and lost cache locality in the copy; smaller ones (2 MiB, 0.5 MiB) measured
    slower on every shape. Small convolutions (at most 1 MiB of temporaries, `tiny_macs`)
    skip the tiles: one padded block, one column copy, one GEMM (`_tiny_im2col`).
``"per_tap"``
    For each kernel offset, a GEMM of the block's shifted view with that offset's weight slice,
    accumulated into the tile. No im2col buffer. With stride 1 the shifted view is a flat
    strided view over the block's padded width ("flat trick"): every tap is one large GEMM on
    the input memory itself, and the few columns that fall between rows are discarded. In
    channels-last with one group the offsets along the innermost spatial axis merge with the
    channels into one overlapping ``(q, k * C)`` view, one GEMM per kernel row.
``"direct"``
    Multiply-accumulate over the kernel offsets and input channels (``out += x_shifted *
    w_tap``) with NumPy ufuncs on cache-sized, contiguous runs, for depthwise convolutions:
    in channels-first one flat plane per channel times a scalar weight; in channels-last
    whole output rows ``(W_out, C)`` written straight into the result, times the tap's weights
    repeated along the row, the rows split over threads (ufuncs release the GIL). A
    channels-last depthwise conv with zero padding (1-D or 2-D) reads the input in place, not
    tile by tile: the padding is virtual (each tap multiplies only the output rows and columns
    whose input exists, a tap covering the whole row chunk first), so there is no padded copy
    at all, and a stride along the width reads the ``(rows, W_out, C)`` tap views in place
    (runs of ``C`` contiguous values) instead of computing every column and dropping half.
``"auto"``
    Depthwise (one input channel per group) with few outputs per group among many groups
    -> ``direct`` (`choose_algorithm`: a one-channel input with ``groups=1``, or a large
    channel multiplier, takes ``im2col``); otherwise ``im2col``, which was the fastest or as fast
    as the others on every GEMM-bound shape of BENCH.md on the 2-core test machine (1 and
    2 threads, interleaved runs), and the most robust when another process shares the cores.

Threads: ``im2col`` tiles whose columns exceed `_CHUNK_BYTES` (2 MiB; 8 MiB for GEMMs
with at most 64 outputs per group, `_THIN_CHUNK_BYTES`) are cut into
cache-sized chunks (runs of groups, then samples, then output rows; channels-last cuts
groups last) that run as one pipeline
per thread of the small per-process pool of `layoutops.kernels.threads` (as many threads as
the process may run on, at most 8; ``LAYOUTOPS_NUM_THREADS`` or ``threads.set_num_threads``
sets it), with NumPy's BLAS held to one thread meanwhile (`layoutops.kernels.blas`): each
thread copies a chunk's columns into its own buffer and multiplies them while they are in
its core's cache. Steady state on the 2-core test machine (fresh process per setting,
min/median of 11): resnet 3x3 of BENCH.md channels-first 34.5/36.0 -> 25.4/27.3 ms,
channels-last 30.7/32.7 -> 21.9/23.6 ms; grouped 5.8/6.0 -> 3.8/4.1 ms and 8.2/8.4 ->
4.7/5.3 ms. Only tiles of at most 1 MiB of columns stay one GEMM on BLAS's own threading;
larger ones get at least 2 chunks (`_MIN_SPLIT_BYTES`, `_MIN_CHUNKS`), so no GEMM here leaves
BLAS's workers spinning for the next op.
The channels-last direct strategy splits its rows. Each element is written by one thread:
results do not depend on the thread count. Channels-first depthwise planes stay on one
thread: two threads on planes that share the L2 cache measured slower.
"""

from __future__ import annotations

import contextlib
import itertools
import math

import numpy as np

from . import blas, taps_1d, taps_flat
from .depthwise_flat import (
    depthwise_depth_taps,
    depthwise_flat,
    depthwise_volume,
    row_sizes,
    rows_view,
)
from .gemm import blasable, gemm_sum, reshape_view
from .geometry import Geometry
from .plan import get_workspace_limit, split_tiles
from .scratch import scratch
from .threads import _CORES as _THREADS  # noqa: F401  (the pool's default size, for tests)
from .threads import get_num_threads, parallel_copy
from .threads import parallel as _parallel
from .wide_rows import rows_per_chunk, run_wide_rows
from .window import TileBlock, padded_block, window_view

__all__ = ["ALGORITHMS", "PADDING_MODES", "conv_forward", "choose_algorithm"]

ALGORITHMS = ("auto", "im2col", "per_tap", "direct")

#: public ``padding_mode`` names -> `padded_block` modes
PADDING_MODES = {
    "zeros": "constant",
    "reflect": "reflect",
    "replicate": "replicate",
    "circular": "circular",
}



def choose_algorithm(algorithm: str, c_per_group: int, o_per_group: int = 1, groups: int = 1,
                     channels_last: bool = False, n_spatial: int = 2,
                     width_stride: int = 1) -> str:
    """The strategy ``"auto"`` resolves to (other names are returned unchanged).

    ``direct`` for depthwise convolutions (one input channel per group) with few outputs per
    group among many groups: channels-last, at most ``min(4, groups // 8)`` outputs per group
    (at least 1); channels-first 2-D, or 3-D with a unit ``width_stride`` (one einsum per
    chunk, `depthwise_volume`), one output per group and at least 16 groups. Everything else
    -> ``im2col``. The direct sums cost grows with the outputs per group,
    while ``im2col`` shares one column copy among them: a conv of a one-channel input
    (``groups = 1``: grayscale images, waveforms, volumes) went to ``direct`` before and ran
    10-25x slower than ``im2col`` (8x1x224x224 -> 32 3x3: 142 / 131 ms against 10.8 / 11.7
    ms channels-last / -first; 2x1x32x64x64 -> 16 3-D: 121 / 29 against 4.9 / 4.3 ms).
    Measured crossovers (8 samples, 3x3, ms ``im2col`` / ``direct``, 2-core test machine):
    channels-last 32 groups 56x56, 2 outputs per group 6.6 / 3.5, 4: 8.4 / 6.1, 8: 9.4 /
    14.3; 16 groups 2: 3.2 / 2.6, 4: 4.1 / 4.5; 8 groups 1: 1.9 / 0.8, 2: 1.9 / 1.9;
    channels-first, one output per group, 56x56: 8 groups 1.05 / 1.56, 32 groups 2.8 / 2.3,
    96 groups 8.2 / 5.2; 1-D channels-first 8x128x1000 k3 1.64 / 3.53, 16x64x4000 6.1 / 8.7,
    8x256x500 k5 2.2 / 2.7 (4x32x16000 k9 7.0 / 6.2); 3-D (`depthwise_depth_taps`),
    2x32x16x32x32, 32 groups, channels-first 8.3 / 14.4, channels-last 23.8 / 11.0; by
    `depthwise_volume`, channels-first 2x32x16x32x32 8.1 / 3.9, 1x32x16x16x16 1.25 / 0.81,
    4x96x8x14x14 5.0 / 2.2, 1x16x8x16x16 0.55 / 0.23 (a channel multiplier of 2, by depth
    taps: 8.7 / 30).

    With zero padding the 1-D/2-D direct sums are one fused einsum per chunk in either
    layout (faster than ``im2col`` with strides too, e.g. 8x96x112x112 3x3 stride 2
    channels-first 13.9 -> 10.8 ms). (``per_tap`` on the channels-first resnet 3x3 layer of
    BENCH.md measured 5-10% faster at 1 thread, equal at 2 threads, and 2-5x slower at 2
    threads when the other core was busy: its nine GEMMs per tile each wait for BLAS's
    slowest thread; so ``auto`` keeps the one GEMM of ``im2col``.)

    Examples
    --------
    >>> from layoutops.kernels.conv import choose_algorithm
    >>> choose_algorithm("auto", 1, 1, groups=96)  # depthwise
    'direct'
    >>> choose_algorithm("auto", 1, 32, groups=1, channels_last=True)  # a one-channel input
    'im2col'
    """
    if algorithm != "auto":
        return algorithm
    if c_per_group != 1:
        return "im2col"
    if channels_last:
        direct = o_per_group <= min(4, max(1, groups // 8))
    else:
        direct = o_per_group == 1 and groups >= 16 and (
            n_spatial == 2 or (n_spatial == 3 and width_stride == 1 and _VOLUME_FIRST))
    return "direct" if direct else "im2col"


def conv_forward(
    x_grouped: np.ndarray,
    x_letters: str,
    w_grouped: np.ndarray,
    w_letters: str,
    geometry: Geometry,
    out_letters: str,
    *,
    bias: np.ndarray | None,
    dtype,
    compute_dtype,
    padding_mode: str = "zeros",
    algorithm: str = "auto",
) -> np.ndarray:
    """The convolution of ``x_grouped`` with ``w_grouped``, C-contiguous in ``out_letters``.

    Parameters
    ----------
    x_grouped : ndarray
        The input with its channel axis split into ``(G, C/G)``, letters ``x_letters``
        (``N``, ``G``, ``C`` and the spatial letters).
    w_grouped : ndarray
        The kernel with letters ``w_letters`` (``G``, ``O``, ``I`` per group and the spatial
        letters).
    geometry : Geometry
        Per spatial axis in the input's spatial order.
    out_letters : str
        The output layout (``N``, ``C`` and the spatial letters).
    bias : ndarray or None
        Shape ``(C_out,)``.
    dtype, compute_dtype : dtype
        The result dtype and the dtype arithmetic runs in.
    padding_mode : {'zeros', 'reflect', 'replicate', 'circular'}
    algorithm : {'auto', 'im2col', 'per_tap', 'direct'}
    """
    dtype, cdtype = np.dtype(dtype), np.dtype(compute_dtype)
    spatial = "".join(c for c in x_letters if c not in "NGC")
    dims = dict(zip(x_letters, x_grouped.shape, strict=True))
    wdims = dict(zip(w_letters, w_grouped.shape, strict=True))
    groups, c_per, o_per = dims["G"], dims["C"], wdims["O"]
    batch = dims["N"]
    out_sizes = geometry.out_sizes
    out_dims = {"N": batch, "C": groups * o_per, **dict(zip(spatial, out_sizes, strict=True))}
    out = np.empty(tuple(out_dims[c] for c in out_letters), dtype=dtype)
    if out.size == 0:
        return out
    if c_per == 0:  # no input channels: only the bias
        out[...] = 0
        if bias is not None:
            shape = [1] * out.ndim
            shape[out_letters.index("C")] = bias.shape[0]
            out += bias.reshape(shape).astype(dtype)
        return out
    form = "A" if _channels_first(out_letters) else "B"
    algorithm = choose_algorithm(algorithm, c_per, o_per, groups, form == "B", len(spatial),
                                 geometry.strides[-1])
    if (
        algorithm == "direct"
        and padding_mode == "zeros"
        and _depthwise(x_grouped, x_letters, w_grouped, w_letters, out, out_letters, geometry,
                       bias, cdtype)
    ):
        return out
    res_letters = "NGO" + spatial if form == "A" else "N" + spatial + "GO"

    # the output, grouped (C -> G, O), permuted to the canonical result order: a view
    c_axis = out_letters.index("C")
    out_g = out.reshape(out.shape[:c_axis] + (groups, o_per) + out.shape[c_axis + 1 :])
    og_letters = out_letters.replace("C", "GO")
    out_res = out_g.transpose([og_letters.index(c) for c in res_letters])

    # the kernel, in the order the strategy and the result form want (one small copy)
    prep = _prepare_weight(algorithm, form, w_grouped, w_letters, spatial, cdtype)
    bias_res = None
    if bias is not None:
        shape = [1] * len(res_letters)
        shape[res_letters.index("G")], shape[res_letters.index("O")] = groups, o_per
        bias_res = bias.astype(cdtype).reshape(shape)

    x_axes = tuple(x_letters.index(c) for c in spatial)
    n_axis = x_letters.index("N")
    mode = PADDING_MODES[padding_mode]
    itemsize = cdtype.itemsize
    cast = None if x_grouped.dtype == cdtype else cdtype
    taps = math.prod(geometry.kernel_sizes)
    runner = _RUNNERS[algorithm]

    def cost(tile: tuple[int, ...]) -> int:
        """Bytes of temporaries for one tile: the input block (a copy at the borders), a
        result tile (half types, or an order the GEMM cannot write into the output) and
        the strategy's own buffers."""
        n, pix = tile[0], math.prod(tile[1:])
        spans = zip(tile[1:], geometry.strides, geometry.extents, strict=True)
        block_pix = math.prod((p - 1) * s + e for p, s, e in spans)
        block = n * groups * c_per * block_pix
        res = n * groups * o_per * pix
        wide = algorithm == "im2col" and _wide_cost(geometry, groups, c_per, o_per, tile[1:],
                                                    itemsize, form)
        if wide:
            # wide row columns: the kw kernel offsets only (KW, not KH * KW, copies)
            work = n * wide + res
        elif algorithm == "im2col":
            work = n * groups * c_per * taps * pix + res  # columns, GEMM result
        elif algorithm == "per_tap":
            # flat accumulator and scratch (or the gathered tap)
            work = 2 * n * groups * o_per * block_pix + n * groups * c_per * pix
        else:
            work = n * groups * o_per * block_pix  # flat accumulator (chunked scratch)
        return (block + res + work) * itemsize

    if algorithm == "im2col" and (
        macs := tiny_macs(geometry, x_grouped.size, batch, groups, c_per, o_per, itemsize)
    ) is not None:
        # OpenBLAS keeps GEMMs of up to 2**18 multiply-adds on the calling thread by itself;
        # larger ones would wake its workers, which then spin against whatever runs next
        with blas.single_threaded() if macs > 1 << 18 else contextlib.nullcontext():
            res = _tiny_im2col(x_grouped, x_letters, spatial, geometry, prep, form, mode, cdtype)
        if bias_res is not None:
            res += bias_res
        out_res[...] = res
        return out

    limit = min(get_workspace_limit(), _SPEED_TILE_BYTES[algorithm])
    for tile in split_tiles((batch, *out_sizes), cost, limit):
        spans = tuple(
            geometry.input_span(a, sl.start, sl.stop) for a, sl in enumerate(tile[1:])
        )
        xs = [slice(None)] * x_grouped.ndim
        xs[n_axis] = tile[0]
        if form == "A":
            tgt = out_res[(tile[0], slice(None), slice(None), *tile[1:])]
        else:
            tgt = out_res[tile]
        tgt_arg = tgt if dtype == cdtype else None
        # the block in canonical letters: N G C *S (form A) or N *S G C (form B): views
        blk_letters = "NGC" + spatial if form == "A" else "N" + spatial + "GC"
        perm = [x_letters.index(c) for c in blk_letters]
        res = None
        if algorithm == "im2col" and _TAPS_FLAT and mode == "constant":
            res = _taps_flat_tile(x_grouped[tuple(xs)].transpose(perm), spans, prep, geometry,
                                  form, tgt_arg, cdtype)
        if res is None and algorithm == "im2col" and _WIDE_ROWS:
            res = _wide_tile(x_grouped[tuple(xs)], x_axes, n_axis, perm, spans, prep,
                             geometry, form, tgt_arg, cdtype, mode, cast)
        if res is None and algorithm == "im2col" and _TAPS_1D and form == "A" and (
            mode == "constant"
        ):
            res = _taps_1d_tile(x_grouped[tuple(xs)].transpose(perm), spans, prep, geometry,
                                tgt_arg, cdtype)
        if res is None and algorithm == "im2col":
            # chunks pad their own pieces of the block, on their own threads
            block = TileBlock(x_grouped[tuple(xs)], x_axes, spans, perm, n_axis=n_axis,
                              g_axis=x_letters.index("G"), mode=mode, dtype=cast)
            res = _run_im2col(block, prep, geometry, form, tgt_arg, cdtype)
        elif res is None:
            block = padded_block(x_grouped[tuple(xs)], x_axes, spans, mode=mode, dtype=cast,
                                 scratch_slot="conv block")
            res = runner(block.transpose(perm), prep, geometry, form, tgt_arg, cdtype)
        if bias_res is not None:
            res += bias_res
        if res is not tgt:
            tgt[...] = res
    return out


#: cost a wide row tile by its kw-offset columns, not by the whole im2col columns (those
#: split the resnet 3x3 case of BENCH.md into two tiles, two pipeline starts and drains:
#: 9-round A/B 10.0/9.6 -> 9.8/9.5 ms channels-first/-last)
_WIDE_TILE_COST = True


#: convolutions whose temporaries (padded input, im2col columns, result) hold at most this
#: many bytes, within the workspace limit, and whose GEMMs have at most `_TINY_MACS`
#: multiply-adds each run `_tiny_im2col`: one padded block, one column copy, one GEMM on one
#: thread, none of the tiling, chunking and strategy choices (each a few microseconds of
#: Python) that larger problems pay for (3-round old / new A/Bs, float32, us: 1x16x8x8 -> 16
#: 3x3 channels-first 119 -> 60, 1x1x28x28 -> 8 116 -> 54, 1x7x7x32 -> 32 channels-last
#: 105 -> 66, 8x8x8x16 -> 16 channels-last 144 -> 95, 1x32x16x16 -> 32 183 -> 132,
#: 2-core test machine). 0 turns it off.
_TINY_BYTES = 1 << 20
_TINY_MACS = 1 << 22


def tiny_macs(geometry: Geometry, x_size: int, n: int, groups: int, c: int, o: int,
               itemsize: int) -> int | None:
    """The multiply-adds of the largest GEMM of `_tiny_im2col` (at most: one group's over
    the whole batch) if a convolution is small enough for it, else None. ``x_size``: the
    input's element count."""
    pix = math.prod(geometry.out_sizes)
    cols = n * c * math.prod(geometry.kernel_sizes) * pix  # one group's
    block = n * c * math.prod(
        (p - 1) * s + e for p, s, e in zip(geometry.out_sizes, geometry.strides,
                                           geometry.extents, strict=True)
    )
    temps = (max(groups * block, x_size) + groups * (cols + n * o * pix)) * itemsize
    macs = cols * o
    if temps <= min(_TINY_BYTES, get_workspace_limit()) and macs <= _TINY_MACS:
        return macs
    return None


def _tiny_im2col(x_grouped, x_letters, spatial, geometry, wmat, form, mode, cdtype):
    """The whole convolution as one im2col GEMM (`tiny_macs`), in the result order of
    ``form``: ``(n, G, O, *P)`` (``A``) or ``(n, *P, G, O)`` (``B``). ``wmat`` is the im2col
    kernel (`_prepare_weight`): ``(G, O, c*K)`` / ``(G, K*c, O)``."""
    k = len(spatial)
    letters = "NGC" + spatial if form == "A" else "N" + spatial + "GC"
    xb = x_grouped.transpose([x_letters.index(c) for c in letters])
    axes = tuple(range(3, 3 + k)) if form == "A" else tuple(range(1, 1 + k))
    spans = tuple(geometry.input_span(a, 0, size) for a, size in enumerate(geometry.out_sizes))
    block = padded_block(xb, axes, spans, mode=mode, dtype=None if xb.dtype == cdtype else cdtype)
    win = window_view(block, axes, geometry.kernel_sizes, geometry.strides, geometry.dilations)
    taps = tuple(geometry.kernel_sizes)
    if form == "A":  # win: (n, G, c, *P, *K)
        n, g, c = win.shape[:3]
        pix = win.shape[3 : 3 + k]
        cols = np.empty((n, g, c, *taps, *pix), dtype=cdtype)
        cols[...] = win.transpose(0, 1, 2, *range(3 + k, 3 + 2 * k), *range(3, 3 + k))
        res = np.matmul(wmat, cols.reshape(n, g, wmat.shape[2], -1))  # (n, G, O, P)
        return res.reshape(n, g, wmat.shape[1], *pix)
    # win: (n, *P, G, c, *K); group-major columns (G, n, *P, *K, c)
    n, pix = win.shape[0], win.shape[1 : 1 + k]
    g, c = win.shape[1 + k : 3 + k]
    cols = np.empty((g, n, *pix, *taps, c), dtype=cdtype)
    if _VOID_COPY and g > 1 and block.strides[-1] == block.itemsize:
        # each pixel's c values of a group as one opaque item, as `_im2col_tile` copies them
        # (3-round A/Bs, float32, us: 2x16x16x16 -> 16, 4 groups, 171 -> 102; 2x7x7x64 ->
        # 64, 32 groups, 229 -> 123); with one group the item views cost more than they save
        # on such small copies (1x8x8x16 -> 16: 49 against 58)
        item = np.dtype((np.void, c * block.itemsize))
        winv = window_view(block.view(item)[..., 0], axes, geometry.kernel_sizes,
                           geometry.strides, geometry.dilations)  # (n, *P, G, *K)
        cols.view(item)[..., 0][...] = winv.transpose(
            1 + k, 0, *range(1, 1 + k), *range(2 + k, 2 + 2 * k))
    else:
        cols[...] = win.transpose(1 + k, 0, *range(1, 1 + k), *range(3 + k, 3 + 2 * k), 2 + k)
    res = np.matmul(cols.reshape(g, -1, wmat.shape[1]), wmat)  # (G, nP, O)
    return res.reshape(g, n, *pix, wmat.shape[2]).transpose(*range(1, 2 + k), 0, 2 + k)


def _wide_cost(geometry, groups, c, o, pix, itemsize, form) -> int:
    """Elements of one sample's wide row columns (every chunk's) if a tile with output
    sizes ``pix`` runs as wide row GEMMs (`wide_rows.rows_per_chunk`), else 0."""
    if not (_WIDE_ROWS and _WIDE_TILE_COST):
        return 0
    rows = rows_per_chunk(geometry, groups, c, pix, itemsize, o, form)
    if rows is None:
        return 0
    halo = (geometry.kernel_sizes[0] - 1) * geometry.dilations[0]
    chunks = -(-pix[0] // rows)
    return (pix[0] + chunks * halo) * pix[1] * geometry.kernel_sizes[1] * c


def _kernel_dims(wmat: np.ndarray, form: str) -> tuple[int, int, int]:
    """``(groups, c * K, outputs)`` of the im2col kernel ``wmat``: ``(G, O, cK)`` for form
    ``"A"`` (channels-first results), ``(G, Kc, O)`` for ``"B"``."""
    g, a, b = wmat.shape
    return (g, b, a) if form == "A" else (g, a, b)


def _wide_tile(x_tile, x_axes, n_axis, perm, spans, wmat, geometry, form, tgt, cdtype, mode,
               cast):
    """The tile by wide row GEMMs (`wide_rows`), or ``None`` if they do not apply. No padded
    copy of the whole tile first (on the resnet 3x3 case of BENCH.md a serial 0.5-0.9 ms
    while the other core waited): zero padding is applied by each chunk's column copy, the
    other modes pad each chunk's rows on the chunk's own thread."""
    sizes = [hi - lo for lo, hi in spans]
    pix = tuple(
        (b - e) // s + 1 for b, e, s in zip(sizes, geometry.extents, geometry.strides, strict=True)
    )
    g, ck, o = _kernel_dims(wmat, form)
    c = ck // math.prod(geometry.kernel_sizes)
    n = x_tile.shape[n_axis]
    itemsize = np.dtype(cdtype).itemsize
    if n * g * math.prod(pix) * ck * itemsize <= _MIN_SPLIT_BYTES:
        return None  # small: one GEMM (`_run_im2col`)
    rows = rows_per_chunk(geometry, g, c, pix, itemsize, o, form)
    if rows is None:
        return None
    first = spans[0][0]
    x_canon = x_tile.transpose(perm)  # N G C H W / N H W G C

    def rows_of(s, r, h):
        if mode == "constant":  # zeros: applied by the column copy
            x = x_canon[s, 0] if form == "A" else x_canon[s, :, :, 0]
            return x, first + r, spans[1][0]
        index = [slice(None)] * x_tile.ndim
        index[n_axis] = slice(s, s + 1)
        part_spans = ((first + r, first + r + h), *spans[1:])
        b = padded_block(x_tile[tuple(index)], x_axes, part_spans, mode=mode, dtype=cast,
                         scratch_slot="wide rows block").transpose(perm)
        return (b[0, 0] if form == "A" else b[0, :, :, 0]), 0, 0

    return run_wide_rows(rows_of, n, wmat, geometry, form, tgt, cdtype, pix, rows)



#: 2-D tiles with unit strides, an output as wide as the input and enough channels run as
#: accumulating GEMMs per tap on flat views of the input (`taps_flat`)
_TAPS_FLAT = True


def _taps_flat_tile(x_canon, spans, wmat, geometry, form, tgt, cdtype):
    """The 2-D tile ``x_canon`` (``(n, G, c, H, W)`` / ``(n, H, W, G, c)``, unpadded) by
    per-tap GEMMs on flat views (`taps_flat`), or ``None`` if they do not apply."""
    if geometry.n_spatial != 2 or geometry.strides != (1, 1):
        return None
    x = x_canon[:, 0] if form == "A" else x_canon[:, :, :, 0]
    g, ck, outputs = _kernel_dims(wmat, form)
    pix = tuple(hi - lo - e + 1 for (lo, hi), e in zip(spans, geometry.extents, strict=True))
    if x_canon.shape[0] * math.prod(pix) * ck * np.dtype(cdtype).itemsize <= _MIN_SPLIT_BYTES:
        return None  # small: one GEMM (`_run_im2col`)
    if taps_flat.applies(geometry, g, x, form, cdtype, spans[1][0], pix, outputs):
        return taps_flat.run_taps_flat(x, spans[0][0], spans[1][0], wmat, geometry, form, tgt,
                                       cdtype, pix)
    if form == "B" and taps_flat.applies_batch(geometry, g, x, cdtype, spans[0][0],
                                               spans[1][0], pix, outputs):
        return taps_flat.run_taps_batch(x, spans[0][0], spans[1][0], wmat, geometry, tgt,
                                        cdtype)
    return None


#: channels-first 1-D tiles with unit stride run as accumulating GEMMs per tap (`taps_1d`)
_TAPS_1D = True


def _taps_1d_tile(x_canon, spans, wmat, geometry, tgt, cdtype):
    """The channels-first 1-D tile ``x_canon`` ``(n, G, c, L)`` (unpadded) by per-tap
    accumulating GEMMs (`taps_1d`), or ``None`` if they do not apply."""
    x = x_canon[:, 0]
    g, _, ck = wmat.shape
    n_out = (spans[0][1] - spans[0][0] - geometry.extents[0]) // geometry.strides[0] + 1
    if x_canon.shape[0] * n_out * ck * np.dtype(cdtype).itemsize <= _MIN_SPLIT_BYTES:
        return None  # small: one GEMM (`_run_im2col`)
    if not taps_1d.applies(geometry, g, x, cdtype, wmat.shape[1], n_out):
        return None
    return taps_1d.run_taps_1d(x, spans[0][0], wmat, geometry, tgt, cdtype, n_out)


#: per strategy, the tile size beyond which speed does not improve (the workspace limit caps
#: it). im2col: its cost model counts a tile's whole columns, but a chunked tile
#: (`_run_im2col`) holds only a chunk per thread, so large tiles cost little memory and save
#: a pipeline start and drain per tile (resnet 3x3 of BENCH.md 15.5 -> 12.7 ms, stem 17.5 ->
#: 15 ms channels-first with 64 instead of 16 MiB, 2-core test machine); the direct strategy
#: streams through cache-sized tiles
_SPEED_TILE_BYTES = {"im2col": 64 * 2**20, "per_tap": 16 * 2**20, "direct": 16 * 2**20}


#: output planes (pixels per sample and tile) below this size are batched into one GEMM
_SMALL_PLANE = 1024


def _channels_first(letters: str) -> bool:
    c = letters.index("C")
    return all(c < i for i, ch in enumerate(letters) if ch not in "NC")


# -- weight preparation -----------------------------------------------------------------------


def _ordered(w_grouped: np.ndarray, w_letters: str, order: str, cdtype) -> np.ndarray:
    """``w_grouped`` transposed to ``order`` (letters), contiguous, in ``cdtype``."""
    perm = [w_letters.index(c) for c in order]
    return np.ascontiguousarray(w_grouped.transpose(perm), dtype=cdtype)


def _prepare_weight(algorithm: str, form: str, w_grouped, w_letters: str, spatial: str, cdtype):
    """The kernel as each strategy uses it, built with one transpose from the user's layout.

    ``im2col``: ``(G, O, c*K)`` (form A) or ``(G, K*c, O)`` (form B); ``per_tap``: the list
    of per-offset ``(G, O, c)`` (A) or ``(G, c, O)`` (B) matrices and the whole kernel
    ``(G, *K, O, c)`` / ``(G, *K, c, O)``; ``direct``: ``(G, O, c, *K)``.
    """
    dims = dict(zip(w_letters, w_grouped.shape, strict=True))
    g, o = dims["G"], dims["O"]
    if algorithm == "im2col":
        if form == "A":
            return _ordered(w_grouped, w_letters, "GOI" + spatial, cdtype).reshape(g, o, -1)
        return _ordered(w_grouped, w_letters, "G" + spatial + "IO", cdtype).reshape(g, -1, o)
    if algorithm == "per_tap":
        order = "G" + spatial + ("OI" if form == "A" else "IO")
        wk = _ordered(w_grouped, w_letters, order, cdtype)
        ksz = wk.shape[1:-2]
        return [wk[(slice(None),) + t] for t in np.ndindex(*ksz)], wk
    return _ordered(w_grouped, w_letters, "GOI" + spatial, cdtype)


# -- helpers ----------------------------------------------------------------------------------


def _tap_views(block: np.ndarray, form: str, geometry: Geometry):
    """Yield ``(tap_index, view)``: the block shifted by each kernel offset, with the
    output-position axes strided (letters of the block, no window axes)."""
    k = geometry.n_spatial
    axes = tuple(range(3, 3 + k)) if form == "A" else tuple(range(1, 1 + k))
    win = window_view(block, axes, geometry.kernel_sizes, geometry.strides, geometry.dilations)
    lead = (slice(None),) * block.ndim
    for t in np.ndindex(*geometry.kernel_sizes):
        yield t, win[lead + t]


# -- im2col -----------------------------------------------------------------------------------


#: target bytes of columns per pipeline chunk. Once chunks padded their own pieces on their
#: own threads and the chunk sizes below were set, larger chunks won for wide GEMMs too
#: (fewer GEMMs, each reading the whole kernel): 9-round A/B on the 2-core test machine,
#: 2 / 4 / 8 MiB, channels-first and -last, ms: the late 3x3 of BENCH.md 10.6/9.7,
#: 9.0/8.5, 9.3/8.5; resnet 3x3 stride 2 5.6/5.3, 5.2/4.8, 5.2/4.7; 4x64x112x112 -> 128 3x3
#: stride 2 13.4/12.9, 11.7/10.5, 11.0/9.9; 8x128x28x28 -> 128 5x5 (channels-last on
#: these chunks) 37.7, 29.3, 26.3; 8x256x14x14 -> 512 stride 2 alike. (An earlier version,
#: with a serial padded copy of the whole tile first, had measured 1 and 2 MiB alike and the
#: stride-2 case 5-10% slower with 8 MiB; whole 16 MiB tiles were slowest then.)
_CHUNK_BYTES = 8 << 20
#: ... and for thin GEMMs (at most `_THIN_O` output channels per group) this many (set first,
#: when the wide ones still used 2 MiB): such a GEMM does little work per column byte, so a
#: 2 MiB chunk's GEMM was mostly call and packing overhead. Steady state on the 2-core test
#: machine (AVX-512, NumPy 2.4 / OpenBLAS 0.3.31, with 64 MiB speed tiles): 3-D case of
#: BENCH.md 6.8/6.0 -> 3.5/3.1 ms (channels-first/-last), grouped 2.8/2.9 -> 1.9/2.5 ms
_THIN_CHUNK_BYTES = 8 << 20
_THIN_O = 64
#: channels-last chunks are cut by samples and rows before groups: a chunk holding every
#: group writes whole output pixels (G * O values) while they are in cache, where a run of
#: groups writes O of every G * O (grouped case of BENCH.md 3-5% faster, 9-round A/B)
_GROUPS_LAST = True
#: tiles with fewer column bytes than this do not take the per-sample paths (flat taps, wide
#: rows, 1-D taps) but `_run_im2col`, which runs small GEMMs as one GEMM on one thread
#: (`_SMALL_ONE_THREAD`) and cuts larger ones into at least `_MIN_CHUNKS` chunks (whatever the
#: thread count), so no GEMM here runs on BLAS's threads: those spin on for ~0.1 s after the
#: call and slow whatever pipelines come next. Kernel-heavy tiles (the
#: late 3x3 of BENCH.md: a 9 MiB kernel, 7 MiB of columns) used to stay one BLAS-threaded
#: GEMM, 5-11% faster alone; in a ResNet-50 stage-4 bottleneck block (1x1, that 3x3, 1x1;
#: NHWC, batch 8) the 1x1 conv after it then ran against the spinning workers, and the block
#: took 18.6-18.7 ms against 13.2-13.6 ms with the 3x3 pipelined too (7-round A/Bs, 2-core
#: test machine)
_MIN_SPLIT_BYTES = 1 << 20
_MIN_CHUNKS = 2
#: tiles of at most `_ONE_THREAD_BYTES` of columns whose GEMM is small
#: (`blas.SMALL_GEMM_FLOPS`) run as one GEMM on one BLAS thread: a BLAS-threaded GEMM leaves
#: OpenBLAS's workers spinning, and a resnet 3x3 (8x56x56x64, channels-last) right after a
#: 1x8x8x64 -> 64 conv took 14-15 ms instead of 7.8 ms (2-core test machine). False: tiles
#: of at most `_MIN_SPLIT_BYTES` run as one GEMM on BLAS's threads (the earlier behaviour)
_SMALL_ONE_THREAD = True
#: 4 MiB rather than 1: two pipelines' hand-offs cost more than the second core gives on
#: such GEMMs (5-round A/Bs against 1 MiB, CF / CL, ms: 8x64x8x8 -> 64 3x3 0.90 / 0.69 ->
#: 0.73 / 0.54, 8x32x16x16 -> 32 1.03 / 0.81 -> 0.99 / 0.75; the other conv layers of
#: ``layoutops bench --suite small`` alike)
_ONE_THREAD_BYTES = 4 << 20
#: 2-D tiles with unit row stride and enough output rows per chunk run as wide row GEMMs
#: (`wide_rows.run_wide_rows`: KW instead of KH * KW copies of the input)
_WIDE_ROWS = True


def _run_im2col(block: TileBlock, wmat, geometry, form, tgt, cdtype):
    """`_im2col_tile` on cache-sized chunks of the tile, run as one pipeline per thread.

    ``block`` is the tile's padded input block in canonical order; each chunk pads its own
    piece of it (`TileBlock.piece`), on its own thread. The chunks are runs of groups, then
    samples, then outermost output rows (the block rows they read; channels-last cuts
    groups last, `_GROUPS_LAST`), cut until a chunk's columns hold about `_CHUNK_BYTES`
    (`_THIN_CHUNK_BYTES` for thin GEMMs). Each thread copies the columns of its chunks
    and runs their GEMMs on single-threaded BLAS (`blas.single_threaded`): the copies run
    on every core, out of cache, and no GEMM waits for BLAS threads another pipeline
    holds. Each output element is computed by one GEMM of one chunk, whatever the thread
    count.
    """
    if math.prod(geometry.kernel_sizes) == 1 and all(s == 1 for s in geometry.strides):
        res = _pointwise(block.whole("conv block"), wmat, form, tgt, cdtype)
        if res is not None:
            return res
    k = geometry.n_spatial
    n = block.shape[0]
    g, ck, o = _kernel_dims(wmat, form)
    sizes = block.shape[3:] if form == "A" else block.shape[1 : 1 + k]
    pix = tuple(
        (b - e) // s + 1 for b, e, s in zip(sizes, geometry.extents, geometry.strides, strict=True)
    )
    itemsize = np.dtype(cdtype).itemsize
    row_bytes = math.prod(pix[1:]) * ck * itemsize  # columns of one output row, one group
    if _DEPTH_ROW_BYTES and _depth_columns(g, geometry):
        # depth columns hold the inner kernel axes only: 1/kd of the im2col row (sized as
        # im2col, each sample of the 3-D case of BENCH.md was cut in two along depth, each
        # half copying its depth halo again; 7-round A/B, channels-first / -last: 2.66 /
        # 2.80 -> 2.43 / 2.57 ms)
        row_bytes //= geometry.kernel_sizes[0]
    col_bytes = g * n * pix[0] * row_bytes
    chunk_bytes = _THIN_CHUNK_BYTES if o <= _THIN_O else _CHUNK_BYTES
    small_gemm = 2 * (col_bytes // itemsize) * o < blas.SMALL_GEMM_FLOPS
    if _SMALL_ONE_THREAD and small_gemm and col_bytes <= _ONE_THREAD_BYTES:
        with blas.single_threaded():
            return _im2col_tile(block.whole("conv block"), wmat, geometry, form, tgt, cdtype)
    if not _SMALL_ONE_THREAD and col_bytes <= _MIN_SPLIT_BYTES:  # BLAS as it is
        return _im2col_tile(block.whole("conv block"), wmat, geometry, form, tgt, cdtype)
    # at least _MIN_CHUNKS chunks, whatever the thread count (the split, and so the sums, must
    # not depend on it)
    chunk_bytes = min(chunk_bytes, -(-col_bytes // _MIN_CHUNKS))
    # groups per chunk (channels-last: last), then samples, then rows, each halved until a
    # chunk fits
    gc, nc, rc = g, n, pix[0]
    groups_last = _GROUPS_LAST and form == "B"
    while gc * nc * rc * row_bytes > chunk_bytes:
        if gc > 1 and not (groups_last and (nc > 1 or rc > 1)):
            gc = (gc + 1) // 2
        elif nc > 1:
            nc = (nc + 1) // 2
        elif rc > 1:
            rc = (rc + 1) // 2
        elif gc > 1:
            gc = (gc + 1) // 2
        else:
            break
    chunks = [
        (gs, ns, rs)
        for gs in range(0, g, gc)
        for ns in range(0, n, nc)
        for rs in range(0, pix[0], rc)
    ]
    shape = (n, g, o, *pix) if form == "A" else (n, *pix, g, o)
    res = tgt if tgt is not None else np.empty(shape, dtype=cdtype)
    if _depth_columns(g, geometry):
        part = _depth_chunks(block, wmat, geometry, form, res, (gc, nc, rc), pix, cdtype)
    elif form == "A":
        part = _chunks_a(block, wmat, geometry, res, (gc, nc, rc), pix, cdtype)
    else:
        part = _chunks_b(block, wmat, geometry, res, (gc, nc, rc), pix, cdtype)
    blas.pipelines(part, chunks)
    return res


def _pointwise(block, wmat, form, tgt, cdtype):
    """A 1x1 kernel with unit strides: the block is its own column matrix, so GEMMs on views
    of it, with no column copy (pointwise case of BENCH.md, 2 cores: 0.46x the time of the
    chunked copy and GEMMs, A/B in one process). The pixels are cut into ranges that run as
    one pipeline per thread on single-threaded BLAS, like the im2col chunks: a BLAS-threaded
    GEMM would leave OpenBLAS's worker spinning for ~0.1 s, and a pipelined conv right after
    it ran 2-3x slower (resnet 3x3 13 -> 26 ms). ``None`` if the block's pixels are not one
    strided axis."""
    if block.dtype != cdtype:
        return None
    n = block.shape[0]
    if form == "A":
        g, c = block.shape[1:3]
        pix = block.shape[3:]
        npix = math.prod(pix)
        cols = reshape_view(block, (n, g, c, npix))
        o = wmat.shape[1]
        res = tgt if tgt is not None else np.empty((n, g, o, *pix), dtype=cdtype)
        out = reshape_view(res, (n, g, o, npix))
        if cols is None or out is None:
            return None
        step = _pointwise_step(n * npix, g * (c + o) * block.itemsize)
        chunks = [(ni, p0, min(npix, p0 + step)) for ni in range(n) for p0 in range(0, npix, step)]

        def part(items):
            for ni, p0, p1 in items:
                dst = out[ni, :, :, p0:p1]
                if blasable(dst):
                    np.matmul(wmat, cols[ni, :, :, p0:p1], out=dst)
                else:
                    dst[...] = np.matmul(wmat, cols[ni, :, :, p0:p1])
    else:
        g, c = block.shape[-2:]
        pix = block.shape[1:-2]
        rows = n * math.prod(pix)
        cols = reshape_view(block, (rows, g, c))
        o = wmat.shape[2]
        res = tgt if tgt is not None else np.empty((n, *pix, g, o), dtype=cdtype)
        out = reshape_view(res, (rows, g, o))
        if cols is None or out is None:
            return None
        cols, out = cols.transpose(1, 0, 2), out.transpose(1, 0, 2)  # (G, rows, c|o)
        step = _pointwise_step(rows, g * (c + o) * block.itemsize)
        chunks = [(0, r0, min(rows, r0 + step)) for r0 in range(0, rows, step)]

        def part(items):
            for _, r0, r1 in items:
                dst = out[:, r0:r1]
                if blasable(dst):
                    np.matmul(cols[:, r0:r1], wmat, out=dst)
                else:
                    dst[...] = np.matmul(cols[:, r0:r1], wmat)
    blas.pipelines(part, chunks)
    return res


#: bytes of input and output pixels per GEMM of `_pointwise` (a pixel range per call; 1 MiB
#: measured 14% slower than 4 on the pointwise case, 8 MiB 1-4% faster)
_POINTWISE_BYTES = 8 << 20


def _pointwise_step(pixels: int, pixel_bytes: int) -> int:
    """Pixels per `_pointwise` GEMM: `_POINTWISE_BYTES` of them, but at least one range per
    thread, so that no GEMM runs on BLAS's own threads."""
    step = max(1, _POINTWISE_BYTES // max(1, pixel_bytes))
    return max(1, min(step, -(-pixels // get_num_threads())))


def _depth_columns(groups: int, geometry: Geometry) -> bool:
    """True if an im2col tile builds 3-D columns over (kh, kw) only and runs one GEMM per
    depth offset (`_im2col_depth`, `_im2col_depth_a`): one group, unit depth stride."""
    return (
        _DEPTH_COLUMNS
        and groups == 1
        and geometry.n_spatial == 3
        and geometry.strides[0] == 1
        and geometry.kernel_sizes[0] > 1
    )


def _cut(arr, ax, lo, hi):
    index = [slice(None)] * arr.ndim
    index[ax] = slice(lo, hi)
    return arr[tuple(index)]


def _depth_chunks(block, wmat, geometry, form, res, sizes, pix, cdtype):
    """The chunk runner of `_run_im2col` for the 3-D depth-column tiles: `_im2col_tile`
    on each chunk's cut of the block."""
    k = geometry.n_spatial
    gc, nc, rc = sizes
    t_g, t_s = (1, 3) if form == "A" else (1 + k, 1)
    stride, extent = geometry.strides[0], geometry.extents[0]

    def part(items):
        for gs, ns, rs in items:
            ge, ne, re_ = gs + gc, ns + nc, min(rs + rc, pix[0])
            b = block.piece(slice(ns, ne), slice(gs, ge), (rs * stride,
                                                          (re_ - 1) * stride + extent))
            t = _cut(_cut(res[ns:ne], t_g, gs, ge), t_s, rs, re_)
            r = _im2col_tile(b, wmat[gs:ge], geometry, form, t, cdtype)
            if r is not t:
                t[...] = r

    return part


def _chunks_b(block, wmat, geometry, res, sizes, pix, cdtype):
    """The chunk runner of `_run_im2col`, channels-last output: each chunk's columns
    ``(groups, samples * rows * P_inner, K * c)`` are copied into the thread's buffer from
    a window view of the chunk's piece of the block, then one (batched) GEMM writes the
    chunk's ``(nP, O)`` blocks of the result."""
    k = geometry.n_spatial
    gc, nc, rc = sizes
    g, c = block.shape[-2:]
    ksz = geometry.kernel_sizes
    kc_, o = wmat.shape[1:]
    p_in = math.prod(pix[1:])
    inner = (slice(None),) * (k - 1)
    # groups (or one group of few channels), no dilation along the innermost axis: the
    # chunk's input is first copied group-major, where the kw * c values a window reads on
    # one input row are contiguous, and the columns are copied from there as items of kw * c
    # values instead of c (`_copy_row_runs`; grouped case of BENCH.md 2.45 -> 2.3 ms
    # channels-last; with one group of 64 channels, copied straight from the block, it
    # measured 3-7% slower on resnet 3x3 / 1-D; `_ONE_GROUP_RUN_BYTES` for one group)
    runs = _ROW_RUNS and (g > 1 or c * np.dtype(cdtype).itemsize <= _ONE_GROUP_RUN_BYTES) and (
        geometry.dilations[-1] == 1)
    stride0, extent0 = geometry.strides[0], geometry.extents[0]
    rows_in = (rc - 1) * stride0 + extent0
    rest_in = block.shape[2 : 1 + k]  # the block's spatial sizes after the first

    def part(items):
        buf = scratch("im2col columns", gc * nc * rc * p_in * kc_, cdtype)
        for gs, ns, rs in items:
            ge, ne, re_ = min(gs + gc, g), ns + nc, min(rs + rc, pix[0])
            ne = min(ne, res.shape[0])
            gn, m = ge - gs, (ne - ns) * (re_ - rs) * p_in
            cols = buf[: gn * m * kc_].reshape(gn, ne - ns, re_ - rs, *pix[1:], *ksz, c)
            block_rows = (rs * stride0, (re_ - 1) * stride0 + extent0)
            if runs and _VOID_COPY and c < _ROW_ITEMS and _STAGE_FROM_INPUT:
                staged = block.piece_group_major(slice(ns, ne), slice(gs, ge), block_rows,
                                                 "im2col stage")
                if staged is not None:
                    _copy_row_runs(cols, staged, geometry)
                    _chunk_gemm_b(cols.reshape(gn, m, kc_), wmat[gs:ge], res, ns, ne, rs,
                                  re_, inner, gs, ge, o)
                    continue
            b = block.piece(slice(ns, ne), slice(gs, ge), block_rows)  # (n, *S, G, c)
            item = None
            if _VOID_COPY and c < _ROW_ITEMS and b.strides[-1] == b.itemsize and (
                b.dtype == cdtype
            ):
                # each group's c channels as one opaque item: the copy moves whole c-runs
                item = np.dtype((np.void, c * b.itemsize))
            if runs and item is not None:
                stage = scratch("im2col stage", gc * nc * rows_in * math.prod(rest_in) * c,
                                cdtype)
                _copy_row_runs(cols, _stage_groups(b, stage, item), geometry)
            elif item is not None:
                src = window_view(b.view(item)[..., 0], tuple(range(1, 1 + k)), ksz,
                                  geometry.strides, geometry.dilations)  # (n, *P, G, *K)
                cols.view(item)[..., 0][...] = src.transpose(
                    1 + k, 0, *range(1, 1 + k), *range(2 + k, 2 + 2 * k))
            else:
                src = window_view(b, tuple(range(1, 1 + k)), ksz, geometry.strides,
                                  geometry.dilations)  # (n, *P, G, c, *K)
                cols[...] = src.transpose(1 + k, 0, *range(1, 1 + k),
                                          *range(3 + k, 3 + 2 * k), 2 + k)
            _chunk_gemm_b(cols.reshape(gn, m, kc_), wmat[gs:ge], res, ns, ne, rs, re_, inner,
                          gs, ge, o)

    return part


def _chunk_gemm_b(cols, wmat, res, ns, ne, rs, re_, inner, gs, ge, o) -> None:
    """A channels-last chunk's (batched over groups) GEMM ``cols (gn, m, Kc) @ wmat (gn, Kc,
    O)`` into its block of the result, straight into it when BLAS can write there."""
    gn, m = cols.shape[:2]
    tv = res[(slice(ns, ne), slice(rs, re_), *inner, slice(gs, ge))]
    view = reshape_view(tv, (m, gn, o))
    if view is not None and blasable(view.transpose(1, 0, 2)):
        np.matmul(cols, wmat, out=view.transpose(1, 0, 2))
    else:
        out = np.matmul(cols, wmat)  # (gn, m, o)
        tv[...] = out.transpose(1, 0, 2).reshape(tv.shape)


#: grouped channels-last im2col chunks copy whole kernel rows (kw * c values) as one item
_ROW_RUNS = True
#: ... from a group-major stage padded straight from the input (`TileBlock.piece_group_major`)
_STAGE_FROM_INPUT = True
#: ... and so are one-group chunks whose pixels hold at most this many bytes of channels
#: (5-round A/Bs, channels-last, 2 threads, ms, channel items -> kernel-row items: 8x224x224x3
#: k7 s2 -> 64 10.76 -> 10.29, k3 s2 -> 32 2.58 -> 2.14; 8x128x128x2 k5 -> 16 3.79 -> 3.02;
#: 1-D 16x16000x1 k9 s2 -> 32 1.69 -> 1.55; 8x64x64x4 k3 s2 0.60 -> 0.58)
_ONE_GROUP_RUN_BYTES = 16


def _stage_groups(b, stage, item):
    """``b`` ``(n, *S, G, c)`` copied group-major into the flat buffer ``stage``: ``(G, n, *S,
    c)``, each group's c values moved as one opaque ``item``."""
    shape = (b.shape[-2], *b.shape[:-2], b.shape[-1])
    out = stage[: math.prod(shape)].reshape(shape)
    perm = (b.ndim - 2, *range(b.ndim - 2))
    out.view(item)[..., 0][...] = b.view(item)[..., 0].transpose(perm)
    return out


def _copy_row_runs(cols, b, geometry) -> None:
    """Channels-last columns ``cols`` ``(G, n, *P, *K, c)`` of the contiguous block ``b``
    ``(G, n, *S, c)``, no dilation along the innermost axis: every kernel row's ``kw * c``
    values copied as one opaque item."""
    k = geometry.n_spatial
    c = b.shape[-1]
    kw = geometry.kernel_sizes[-1]
    itm = b.itemsize
    item = np.dtype((np.void, kw * c * itm))
    starts = b.shape[-2] - kw + 1
    runs = np.lib.stride_tricks.as_strided(
        b, b.shape[:-2] + (starts, kw * c), b.strides[:-2] + (c * itm, itm), writeable=False
    ).view(item)[..., 0]  # (G, n, *S[:-1], starts): the kernel row starting at each column
    # windows over the outer spatial axes; along the innermost one the starts are the windows
    win = window_view(
        runs, tuple(range(2, 2 + k)), geometry.kernel_sizes[:-1] + (1,),
        geometry.strides, geometry.dilations[:-1] + (1,),
    )[..., 0]  # (G, n, *P, *K[:-1])
    dst = cols.reshape(cols.shape[: 1 + 2 * k] + (kw * c,)).view(item)[..., 0]
    dst[...] = win[(Ellipsis, slice(0, cols.shape[1 + k])) + (slice(None),) * (k - 1)]


def _chunks_a(block, wmat, geometry, res, sizes, pix, cdtype):
    """The chunk runner of `_run_im2col`, channels-first output: each chunk's columns
    ``(groups, c * K, samples * rows * P_inner)`` (short output rows copied as opaque items,
    `_copy_rows_a`), then ``W (O, cK) @ columns`` per group, straight into the result when
    the chunk holds one sample."""
    k = geometry.n_spatial
    gc, nc, rc = sizes
    g, c = block.shape[1:3]
    ksz = geometry.kernel_sizes
    o, ck = wmat.shape[1:]
    p_in = math.prod(pix[1:])
    perm = (1, 2, *range(3 + k, 3 + 2 * k), 0, *range(3, 3 + k))  # (G, c, *K, n, *P)
    stride, extent = geometry.strides[0], geometry.extents[0]
    inner = (slice(None),) * (k - 1)

    def part(items):
        buf = scratch("im2col columns", gc * nc * rc * p_in * ck, cdtype)
        for gs, ns, rs in items:
            ge, ne, re_ = min(gs + gc, g), min(ns + nc, res.shape[0]), min(rs + rc, pix[0])
            gn, nn, m = ge - gs, ne - ns, (re_ - rs) * p_in
            cols = buf[: gn * ck * nn * m].reshape(gn, c, *ksz, nn, re_ - rs, *pix[1:])
            b = block.piece(slice(ns, ne), slice(gs, ge),
                            (rs * stride, (re_ - 1) * stride + extent))  # (n, G, c, *S)
            if not _copy_rows_a(b, geometry, cols, perm):
                cols[...] = window_view(b, tuple(range(3, 3 + k)), ksz, geometry.strides,
                                        geometry.dilations).transpose(perm)
            cols = cols.reshape(gn, ck, nn * m)
            if nn == 1:
                tv = res[(ns, slice(gs, ge), slice(None), slice(rs, re_))]
                view = reshape_view(tv, (gn, o, m))
                if view is not None and blasable(view):
                    np.matmul(wmat[gs:ge], cols, out=view)
                    continue
            out = np.matmul(wmat[gs:ge], cols).reshape(gn, o, nn, re_ - rs, *pix[1:])
            res[(slice(ns, ne), slice(gs, ge), slice(None), slice(rs, re_), *inner)] = (
                out.transpose(2, 0, 1, *range(3, 3 + k))
            )

    return part


def _im2col_tile(block, wmat, geometry, form, tgt, cdtype):
    k = geometry.n_spatial
    n = block.shape[0]
    if form == "A":
        g, c = block.shape[1:3]
        if _depth_columns(g, geometry):
            return _im2col_depth_a(block, wmat, geometry, tgt, cdtype)
        win = window_view(
            block, tuple(range(3, 3 + k)), geometry.kernel_sizes, geometry.strides,
            geometry.dilations,
        )  # (n, G, c, *P, *K)
        pix = win.shape[3 : 3 + k]
        npix = math.prod(pix)
        o = wmat.shape[1]
        if n > 1 and npix < _SMALL_PLANE:
            # small planes: one GEMM over every sample of the tile (N = n * P, not P), then
            # the (G, O, n, P) result is written to the (n, G, O, P) target
            cols = np.empty((g, c, *geometry.kernel_sizes, n, *pix), dtype=cdtype)
            perm = (1, 2, *range(3 + k, 3 + 2 * k), 0, *range(3, 3 + k))
            if not _copy_rows_a(block, geometry, cols, perm):
                _copy(cols, win.transpose(perm))
            res = np.matmul(wmat, cols.reshape(g, wmat.shape[2], n * npix))
            res = res.reshape(g, o, n, *pix).transpose(2, 0, 1, *range(3, 3 + k))
            if tgt is None:
                tgt = np.empty(res.shape, dtype=cdtype)
            _copy(tgt, res)
            return tgt
        cols = np.empty((n, g, c, *geometry.kernel_sizes, *pix), dtype=cdtype)
        perm = (0, 1, 2, *range(3 + k, 3 + 2 * k), *range(3, 3 + k))
        if not _copy_rows_a(block, geometry, cols, perm):
            _copy(cols, win.transpose(perm))
        cols = cols.reshape(n, g, wmat.shape[2], npix)
        return _matmul_into(wmat, cols, tgt, (n, g, o, npix), pix)
    g, c = block.shape[-2:]
    win = window_view(
        block, tuple(range(1, 1 + k)), geometry.kernel_sizes, geometry.strides, geometry.dilations
    )  # (n, *P, G, c, *K)
    pix = win.shape[1 : 1 + k]
    npix = n * math.prod(pix)
    o = wmat.shape[2]
    if _depth_columns(g, geometry):
        return _im2col_depth(block, wmat, geometry, tgt, cdtype, pix)
    if g > 1:
        # groups: group-major columns, so that every group's GEMM runs on a contiguous
        # matrix (a strided one measured twice as slow), then one copy into the target
        cols = np.empty((g, n, *pix, *geometry.kernel_sizes, c), dtype=cdtype)
        if _VOID_COPY and block.strides[-1] == block.itemsize and block.dtype == cdtype:
            # each group's c channels as one opaque item: the copy moves whole c-runs
            item = np.dtype((np.void, c * block.itemsize))
            winv = window_view(
                block.view(item)[..., 0], tuple(range(1, 1 + k)), geometry.kernel_sizes,
                geometry.strides, geometry.dilations,
            )  # (n, *P, G, *K)
            colsv = cols.view(item)[..., 0]
            perm = (1 + k, 0, *range(1, 1 + k), *range(2 + k, 2 + 2 * k))
            _copy(colsv, winv.transpose(perm))
        else:
            perm = (1 + k, 0, *range(1, 1 + k), *range(3 + k, 3 + 2 * k), 2 + k)
            _copy(cols, win.transpose(perm))
        if _GROUPS_INTO_OUT:
            # each group's GEMM writes its (nP, O) block of the (nP, G, O) target in place
            return _matmul_b(cols.reshape(g, npix, wmat.shape[1]), wmat, tgt,
                             (n, *pix, g, o), cdtype)
        res = np.matmul(cols.reshape(g, npix, wmat.shape[1]), wmat)  # (G, nP, O)
        res = res.reshape(g, n, *pix, o).transpose(*range(1, 2 + k), 0, 2 + k)
        if tgt is None:
            tgt = np.empty(res.shape, dtype=cdtype)
        _copy(tgt, res)
        return tgt
    cols = np.empty((n, *pix, g, *geometry.kernel_sizes, c), dtype=cdtype)
    if (
        _VOID_COPY
        and c < _ROW_ITEMS
        and block.strides[-1] == block.itemsize
        and block.dtype == cdtype
    ):
        # few channels: each pixel's c channels as one opaque item (3-D case of BENCH.md,
        # c = 8, channels-last: ...)
        item = np.dtype((np.void, c * block.itemsize))
        winv = window_view(
            block.view(item)[..., 0], tuple(range(1, 1 + k)), geometry.kernel_sizes,
            geometry.strides, geometry.dilations,
        )  # (n, *P, G, *K)
        _copy(cols.view(item)[..., 0], winv)
    else:
        perm = (0, *range(1, 1 + k), 1 + k, *range(3 + k, 3 + 2 * k), 2 + k)
        _copy(cols, win.transpose(perm))
    cols = cols.reshape(npix, g, wmat.shape[1]).transpose(1, 0, 2)  # (G, nP, Kc)
    return _matmul_b(cols, wmat, tgt, (n, *pix, g, o), cdtype)


def _im2col_depth(block, wmat, geometry, tgt, cdtype, pix):
    """Form B, one group, 3-D, unit depth stride: columns over the inner two kernel axes
    only, for every depth row of the block ``(n, D_block, H, W, kh * kw * c)``; the depth
    taps are then ``kd`` GEMMs on contiguous depth slices of those columns, accumulated. A
    third (``1/kd``) of the column copy of the full im2col, the GEMMs as large (3-D case of
    BENCH.md, channels-last: 9.6 -> 6.0 ms for copy and GEMMs on one thread)."""
    n = block.shape[0]
    c = block.shape[-1]
    kd, dd = geometry.kernel_sizes[0], geometry.dilations[0]
    inner_k = geometry.kernel_sizes[1:]
    o = wmat.shape[2]
    db = block.shape[1]
    win = window_view(
        block, (2, 3), inner_k, geometry.strides[1:], geometry.dilations[1:]
    )  # (n, Db, *P_inner, 1, c, kh, kw)
    pin = math.prod(pix[1:])
    cols = np.empty((n, db, *pix[1:], *inner_k, c), dtype=cdtype)
    b = block[..., 0, :]  # (n, Db, H, W, c)
    if (_DEPTH_ROW_RUNS and geometry.dilations[-1] == 1 and c * b.itemsize < _DEPTH_RUN_BYTES
            and (c == 1 or b.strides[-1] == b.itemsize) and b.strides[-2] == c * b.itemsize
            and b.dtype == cdtype):
        # each kernel row's kw * c values as one item, the depth rows as samples (one
        # channel: the stride of that axis never counts)
        inner = Geometry(b.shape[2:4], inner_k, geometry.strides[1:], geometry.dilations[1:],
                         ((0, 0), (0, 0)), tuple(pix[1:]))
        _copy_row_runs(cols.reshape(1, n * db, *cols.shape[2:]),
                       b.reshape(1, n * db, *b.shape[2:]), inner)
    else:
        _copy(cols, win[..., 0, :, :, :].transpose(0, 1, 2, 3, 5, 6, 4))
    kin = math.prod(inner_k) * c
    cols = cols.reshape(n, db * pin, kin)
    wk = wmat[0].reshape(kd, kin, o)
    m = pix[0] * pin
    res = tgt
    view = None if tgt is None else reshape_view(tgt, (n, m, o))
    if view is None or not blasable(view):
        res = np.empty((n, *pix, 1, o), dtype=cdtype)
        view = res.reshape(n, m, o)
    _depth_taps(lambda j, s: (cols[s, j * dd * pin : j * dd * pin + m], wk[j]), view, kd)
    return res


def _im2col_depth_a(block, wmat, geometry, tgt, cdtype):
    """Form A counterpart of `_im2col_depth`: columns ``(n, c * kh * kw, D_block * P_inner)``,
    then per depth tap ``W_j (O, c*kh*kw) @`` a contiguous column range (a strided matrix)."""
    n, _, c = block.shape[:3]
    kd, dd = geometry.kernel_sizes[0], geometry.dilations[0]
    inner_k = geometry.kernel_sizes[1:]
    o = wmat.shape[1]
    db = block.shape[3]
    win = window_view(
        block, (4, 5), inner_k, geometry.strides[1:], geometry.dilations[1:]
    )  # (n, 1, c, Db, *P_inner, kh, kw)
    p_inner = win.shape[4:6]
    pix = (db - geometry.extents[0] + 1, *p_inner)
    pin = math.prod(p_inner)
    cols = np.empty((n, c, *inner_k, db, *p_inner), dtype=cdtype)
    _copy(cols, win[:, 0].transpose(0, 1, 5, 6, 2, 3, 4))
    kin = c * math.prod(inner_k)
    cols = cols.reshape(n, kin, db * pin)
    wk = np.ascontiguousarray(
        wmat[0].reshape(o, c, kd, -1).transpose(2, 0, 1, 3)
    ).reshape(kd, o, kin)
    m = pix[0] * pin
    res = tgt
    view = None if tgt is None else reshape_view(tgt, (n, o, m))
    if view is None or not blasable(view):
        res = np.empty((n, 1, o, *pix), dtype=cdtype)
        view = res.reshape(n, o, m)
    _depth_taps(lambda j, s: (wk[j], cols[s, :, j * dd * pin : j * dd * pin + m]), view, kd)
    return res


def _depth_taps(operands, view, kd: int) -> None:
    """``view[s] = sum_j a @ b`` over the depth taps ``j``, ``(a, b) = operands(j, s)``, for
    each sample ``s`` of ``view`` (`gemm.gemm_sum`: GEMMs adding into ``view``)."""
    for s in range(view.shape[0]):
        gemm_sum([operands(j, s) for j in range(kd)], view[s])


#: split the column copies of the tiles `_run_im2col` does not chunk (one BLAS-threaded GEMM:
#: a large kernel, or at most one chunk of columns) over the threads. Off: measured 1-12%
#: slower on whole tiles, 2 threads, interleaved -- BLAS's threads still spin after the
#: previous tile's GEMM and take the core the copy wanted
_PARALLEL_COPY = False


def _copy(dst, src) -> None:
    if _PARALLEL_COPY:
        parallel_copy(dst, src)
    else:
        dst[...] = src


#: grouped channels-last GEMMs write into the target's strided (nP, O) blocks
_GROUPS_INTO_OUT = True

#: 3-D, one group, unit depth stride: columns over (kh, kw) only, depth taps as GEMMs on
#: slices (`_im2col_depth`, `_im2col_depth_a`)
_DEPTH_COLUMNS = True
#: ... copied as kernel rows (kw * c values) per item, channels-last, when a pixel's channels
#: are shorter than `_DEPTH_RUN_BYTES` (9-round A/Bs, ms, element copy / row items:
#: 4x8x28x28x4 -> 16 2.00 / 1.79, 2x32x64x64x2 -> 16 7.65 / 6.79; with 8 float32 channels,
#: the 3-D case of BENCH.md, 2.55 / 2.59, and 16: 6.56 / 6.53)
_DEPTH_ROW_RUNS = True
_DEPTH_RUN_BYTES = 32
#: ... whose chunks are sized by those columns, not by the full im2col's
_DEPTH_ROW_BYTES = True

#: output rows shorter than this are copied into channels-first columns as opaque items
_ROW_ITEMS = 32


def _copy_rows_a(block, geometry, cols, perm) -> bool:
    """Form A columns with short output rows (stride 1 along the innermost axis): copy each
    row of ``W_out`` values as one opaque item instead of value by value (1.5x faster for
    rows of 7 or 14 values; equal at 32). ``cols`` holds the window axes ``(n, G, c, *P,
    *K)`` permuted by ``perm`` with the innermost output axis last. False if not applicable.
    """
    k = geometry.n_spatial
    wo = cols.shape[-1]
    itm = block.itemsize
    if (
        not _VOID_COPY
        or wo >= _ROW_ITEMS
        or geometry.strides[-1] != 1
        or block.strides[-1] != itm
        or block.dtype != cols.dtype
    ):
        return False
    item = np.dtype((np.void, wo * itm))
    st = block.strides
    starts = block.shape[-1] - wo + 1
    rows = np.lib.stride_tricks.as_strided(
        block, block.shape[:-1] + (starts, wo), st[:-1] + (itm, itm), writeable=False
    ).view(item)[..., 0]  # (n, G, c, *S[:-1], starts): the row starting at each column
    # window axes (n, G, c, *P, *K) as item strides; the innermost P axis is the item itself
    p_strides = tuple(st[3 + a] * geometry.strides[a] for a in range(k - 1)) + (0,)
    k_strides = tuple(st[3 + a] * geometry.dilations[a] for a in range(k - 1))
    k_strides += (itm * geometry.dilations[-1],)
    full_shape = block.shape[:3] + tuple(cols.shape[perm.index(3 + a)] for a in range(k))
    full_shape += tuple(geometry.kernel_sizes)
    full_strides = st[:3] + p_strides + k_strides
    keep = [ax for ax in perm if ax != 2 + k]  # drop the innermost output axis
    src = np.lib.stride_tricks.as_strided(
        rows, tuple(full_shape[ax] for ax in keep), tuple(full_strides[ax] for ax in keep),
        writeable=False,
    )
    _copy(cols.view(item)[..., 0], src)
    return True


#: copy channels-last grouped columns as opaque per-group items (numpy copies short float
#: runs element by element: 1.2x faster on the grouped case of BENCH.md, 1 thread)
_VOID_COPY = True


def _matmul_into(wmat, cols, tgt, shape, pix):
    """Form A: ``(G, O, cK) @ (n, G, cK, P) -> (n, G, O, *pix)``, into ``tgt`` if it can."""
    if tgt is not None:
        view = reshape_view(tgt, shape)
        if view is not None and blasable(view):
            np.matmul(wmat, cols, out=view)
            return tgt
    return np.matmul(wmat, cols).reshape(shape[:3] + tuple(pix))


def _matmul_b(cols, wmat, tgt, shape, cdtype):
    """Form B: ``(G, nP, Kc) @ (G, Kc, O) -> (n, *P, G, O)``, into ``tgt`` if it can."""
    g, o = shape[-2:]
    npix = math.prod(shape[:-2])
    if tgt is not None:
        view = reshape_view(tgt, (npix, g, o))
        if view is not None:
            view = view.transpose(1, 0, 2)
            if blasable(view):
                np.matmul(cols, wmat, out=view)
                return tgt
    res = np.empty((npix, g, o), dtype=cdtype)
    np.matmul(cols, wmat, out=res.transpose(1, 0, 2))
    return res.reshape(shape)


# -- per tap ----------------------------------------------------------------------------------


def _flat_geometry(block: np.ndarray, form: str, geometry: Geometry):
    """For stride 1: ``(pixel_stride, R, Q)`` where the spatial byte strides of ``block`` are
    ``R[a] * pixel_stride`` and ``Q`` flat positions cover the tile; ``None`` if not flat."""
    if any(s != 1 for s in geometry.strides):
        return None
    k = geometry.n_spatial
    sp = block.strides[3:] if form == "A" else block.strides[1 : 1 + k]
    pixel = min(abs(s) for s in sp)
    if pixel <= 0 or any(s <= 0 or s % pixel for s in sp):
        return None
    ratios = tuple(s // pixel for s in sp)
    sizes = block.shape[3:] if form == "A" else block.shape[1 : 1 + k]
    pix = tuple(b - e + 1 for b, e in zip(sizes, geometry.extents, strict=True))
    q = sum((p - 1) * r for p, r in zip(pix, ratios, strict=True)) + 1
    if q > 2 * math.prod(pix) + 64:
        return None  # too many discarded positions (a strided or oddly ordered input)
    return pixel, ratios, q, pix


def _run_per_tap(block, prep, geometry, form, tgt, cdtype):
    wtaps, wk = prep
    flat = _flat_geometry(block, form, geometry)
    if flat is None:
        return _run_per_tap_gather(block, wtaps, geometry, form, tgt, cdtype)
    pixel, ratios, q, pix = flat
    k = geometry.n_spatial
    n = block.shape[0]
    st = block.strides
    itm = np.dtype(cdtype).itemsize
    if form == "B":
        merged = _run_per_row(block, wk, geometry, flat, cdtype)
        if merged is not None:
            acc = merged
            g, o = acc.shape[2:]
            return _flat_result(acc, form, n, g, o, pix, ratios, itm, tgt)
    if form == "A":
        g, c = block.shape[1:3]
        o = wtaps[0].shape[1]
        acc = np.empty((n, g, o, q), dtype=cdtype)
        acc_v = acc
        tmp = np.empty_like(acc) if len(wtaps) > 1 else None
        shape, strides = (n, g, c, q), (st[0], st[1], st[2], pixel)
    else:
        g, c = block.shape[1 + k :]
        o = wtaps[0].shape[2]
        acc = np.empty((n, q, g, o), dtype=cdtype)
        acc_v = acc.transpose(0, 2, 1, 3)  # (n, G, q, O): blasable
        tmp = np.empty_like(acc).transpose(0, 2, 1, 3) if len(wtaps) > 1 else None
        shape, strides = (n, g, q, c), (st[0], st[1 + k], pixel, st[2 + k])
    for i, t in enumerate(np.ndindex(*geometry.kernel_sizes)):
        start = tuple(ti * d for ti, d in zip(t, geometry.dilations, strict=True))
        if form == "A":
            index = (slice(None),) * 3 + start
            xt = _shifted(block, index, shape, strides)
            pair = (wtaps[i], xt)
        else:
            index = (slice(None),) + start + (slice(None),) * 2
            xt = _shifted(block, index, shape, strides)
            pair = (xt, wtaps[i])
        if i == 0:
            np.matmul(*pair, out=acc_v)
        else:
            np.matmul(*pair, out=tmp)
            acc_v += tmp
    return _flat_result(acc, form, n, g, o, pix, ratios, itm, tgt)


def _flat_result(acc, form, n, g, o, pix, ratios, itm, tgt):
    """The valid positions of a flat accumulator, copied into ``tgt`` (or a new array)."""
    if form == "A":
        res = np.lib.stride_tricks.as_strided(
            acc, shape=(n, g, o, *pix), strides=acc.strides[:3] + tuple(r * itm for r in ratios),
            writeable=False,
        )
    else:
        res = np.lib.stride_tricks.as_strided(
            acc, shape=(n, *pix, g, o),
            strides=(acc.strides[0], *(r * g * o * itm for r in ratios), o * itm, itm),
            writeable=False,
        )
    if tgt is None:
        return res.copy()
    tgt[...] = res
    return tgt


def _run_per_row(block, wk, geometry, flat, cdtype):
    """Form B, one group, channels contiguous: the offsets along the innermost spatial axis
    merge with the channels into one overlapping ``(q, k * c)`` matrix view (rows one pixel
    apart), so each kernel row is one GEMM with ``k`` times the depth. ``None`` if the
    memory does not have that shape."""
    pixel, ratios, q, _ = flat
    k = geometry.n_spatial
    n = block.shape[0]
    g, c = block.shape[1 + k :]
    itm = block.itemsize
    st = block.strides
    if g != 1 or st[2 + k] != itm or pixel != c * itm or 1 not in ratios:
        return None
    axis = ratios.index(1)
    if geometry.dilations[axis] != 1 or geometry.kernel_sizes[axis] == 1:
        return None
    ka = geometry.kernel_sizes[axis]
    o = wk.shape[-1]
    acc = np.empty((n, q, 1, o), dtype=cdtype)
    acc2 = acc.reshape(n, q, o)
    tmp = None
    others = [range(s) if a != axis else range(1) for a, s in enumerate(geometry.kernel_sizes)]
    for i, t in enumerate(itertools.product(*others)):
        start = tuple(ti * d for ti, d in zip(t, geometry.dilations, strict=True))
        index = (slice(None),) + start + (0, 0)
        xt = _shifted(block, index, (n, q, ka * c), (st[0], pixel, itm))
        sel = tuple(slice(None) if a == axis else ti for a, ti in enumerate(t))
        wm = wk[(0, *sel)].reshape(ka * c, o)
        if i == 0:
            np.matmul(xt, wm, out=acc2)
        else:
            if tmp is None:
                tmp = np.empty_like(acc2)
            np.matmul(xt, wm, out=tmp)
            acc2 += tmp
    return acc


def _shifted(block: np.ndarray, index, shape, strides) -> np.ndarray:
    """A strided view of ``block``'s memory starting at the element ``block[index]``."""
    return np.lib.stride_tricks.as_strided(block[index], shape, strides, writeable=False)


def _run_per_tap_gather(block, wtaps, geometry, form, tgt, cdtype):
    """Per tap, gather the shifted view into a contiguous buffer, then one GEMM."""
    k = geometry.n_spatial
    acc = tmp = xbuf = None
    for i, (_, view) in enumerate(_tap_views(block, form, geometry)):
        if xbuf is None:
            xbuf = np.empty(view.shape, dtype=cdtype)
        xbuf[...] = view
        if form == "A":
            n, g, c = view.shape[:3]
            pix = view.shape[3:]
            xm = xbuf.reshape(n, g, c, -1)
            if acc is None:
                acc = np.matmul(wtaps[i], xm)
                tmp = np.empty_like(acc)
                continue
            np.matmul(wtaps[i], xm, out=tmp)
        else:
            n, pix, (g, c) = view.shape[0], view.shape[1 : 1 + k], view.shape[1 + k :]
            o = wtaps[i].shape[2]
            xm = xbuf.reshape(-1, g, c).transpose(1, 0, 2)  # (G, nP, c)
            if acc is None:
                acc = np.empty((xm.shape[1], g, o), dtype=cdtype)
                tmp = np.empty_like(acc)
                np.matmul(xm, wtaps[i], out=acc.transpose(1, 0, 2))
                continue
            np.matmul(xm, wtaps[i], out=tmp.transpose(1, 0, 2))
        acc += tmp
    if form == "A":
        return acc.reshape(acc.shape[:3] + tuple(pix))
    return acc.reshape((n, *pix) + acc.shape[1:])


# -- direct -----------------------------------------------------------------------------------


#: elements of one accumulation chunk of the direct strategy (stays in L2 with its scratch)
_DIRECT_CHUNK = 2**15
#: elements per chunk of the channels-last row runs (split over threads: larger chunks keep
#: the GIL hand-offs rare). On one thread 2**16 had measured 3-10% faster than 2**17 and
#: 20-40% faster than 2**14 or 2**18 (depthwise case of BENCH.md, stride 1 and 2); with two
#: threads, since the per-term Python work is gone, 2**17 is 6% faster than 2**16 and 2**15
#: 17% slower (5-round A/B, quiet 2-core machine)
_DIRECT_ROWS_CHUNK = 2**17


def _run_direct(block, wk, geometry, form, tgt, cdtype):
    """``res = sum over taps and input channels of x_shifted * w_tap`` (broadcast over O).

    Plain ufuncs with ``out=``: one multiply into a scratch chunk and one in-place add per
    term, on chunks that stay in cache. With stride 1 the shifted views are flat over the
    block's padded width (long contiguous inner loops), like the per-tap GEMMs.
    """
    if form == "B":
        done = _direct_rows(block, wk, geometry, tgt, cdtype)
        if done is not None:
            return done
    flat = _flat_geometry(block, form, geometry)
    if flat is None:
        res = _direct_terms(block, wk, geometry, form, None, cdtype)
        if tgt is None:
            return res
        tgt[...] = res
        return tgt
    pixel, ratios, q, pix = flat
    k = geometry.n_spatial
    n = block.shape[0]
    g, o, c = wk.shape[:3]
    st = block.strides
    itm = np.dtype(cdtype).itemsize
    if form == "A":
        acc = np.empty((n, g, o, q), dtype=cdtype)
        shape, strides = (n, g, c, q), (st[0], st[1], st[2], pixel)
    else:
        acc = np.empty((n, q, g, o), dtype=cdtype)
        shape, strides = (n, q, g, c), (st[0], pixel, st[1 + k], st[2 + k])
    views = []
    for t in np.ndindex(*geometry.kernel_sizes):
        start = tuple(ti * d for ti, d in zip(t, geometry.dilations, strict=True))
        if form == "A":
            index = (slice(None),) * 3 + start
        else:
            index = (slice(None),) + start + (slice(None),) * 2
        views.append((t, _shifted(block, index, shape, strides)))
    if form == "A":
        # one (n, q) plane per (group, output, input channel, tap): long contiguous rows
        # times a scalar weight, the fastest elementwise loop NumPy has
        def planes(groups_part):
            tmp = np.empty((n, q), dtype=cdtype)
            for gi in groups_part:
                for oi in range(o):
                    dst = acc[:, gi, oi]
                    first = True
                    for t, v in views:
                        for ci in range(c):
                            wv = wk[(gi, oi, ci) + t]
                            if first:
                                np.multiply(v[:, gi, ci], wv, out=dst)
                                first = False
                            else:
                                np.multiply(v[:, gi, ci], wv, out=tmp)
                                dst += tmp

        planes(range(g))  # (threads measured slower here: the planes share the L2)
    elif o == 1 and c == 1 and pixel == g * itm and strides[2] == itm:
        # depthwise, channels innermost: (positions x G) is one contiguous run per chunk,
        # multiplied by the tap's weights repeated along it (contiguous x contiguous)
        step = max(1, _DIRECT_CHUNK // g)
        wrep = [np.tile(wk[(slice(None), 0, 0) + t], step) for t, _ in views]
        flat_acc = acc.reshape(n, q * g)

        runs_1d = [
            [np.lib.stride_tricks.as_strided(v[ni, 0], (q * g,), (itm,), writeable=False)
             for _, v in views]
            for ni in range(n)
        ]

        def runs(chunks):
            tmp = np.empty(step * g, dtype=cdtype)
            for ni, q0 in chunks:
                length = (min(q, q0 + step) - q0) * g
                dst = flat_acc[ni, q0 * g : q0 * g + length]
                for i, v in enumerate(runs_1d[ni]):
                    xv = v[q0 * g : q0 * g + length]
                    if i == 0:
                        np.multiply(xv, wrep[i][:length], out=dst)
                    else:
                        np.multiply(xv, wrep[i][:length], out=tmp[:length])
                        dst += tmp[:length]

        _parallel(runs, [(ni, q0) for ni in range(n) for q0 in range(0, q, step)])
    else:
        # chunks of positions x (G, O) that stay in cache
        step = max(16, _DIRECT_CHUNK // max(g * o, 1))
        tmp = np.empty((n, min(step, q), g, o), dtype=cdtype)
        for q0 in range(0, q, step):
            q1 = min(q, q0 + step)
            xs = [(t, v[:, q0:q1]) for t, v in views]
            _accumulate(xs, wk, form, acc[:, q0:q1], tmp[:, : q1 - q0])
    return _flat_result(acc, form, n, g, o, pix, ratios, itm, tgt)


def _direct_rows(block, wk, geometry, tgt, cdtype):
    """Depthwise 1-D/2-D, channels innermost, unit stride along the innermost spatial axis: every
    output row ``(W_out, G)`` is one contiguous run, and so is the input row each tap reads.
    Multiply-accumulate whole rows (the tap's weights repeated along the row) straight into
    the output: no padded-width accumulator, no final copy. ``None`` if the memory does not
    have that shape."""
    k = geometry.n_spatial
    n = block.shape[0]
    g, o, c = wk.shape[:3]
    itm = np.dtype(cdtype).itemsize
    st = block.strides
    if (
        o != 1
        or c != 1
        or k > 2
        or geometry.strides[-1] > 2
        or st[1 + k] != itm
        or st[k] != g * itm
    ):
        return None
    # a stride of 2 along the innermost axis: the rows at stride 1, then every other column
    # (twice the multiply-adds, but on contiguous runs: faster than short strided loops)
    stride_last = geometry.strides[-1]
    strides = geometry.strides[:-1] + (1,)
    pix = tuple(
        (b - e) // s + 1
        for b, e, s in zip(block.shape[1 : 1 + k], geometry.extents, strides, strict=True)
    )
    run = pix[-1] * g
    res = tgt
    if (
        stride_last != 1
        or res is None
        or res.strides[k] != g * itm
        or res.strides[1 + k] != itm
    ):
        res = np.empty((n, *pix, g, 1), dtype=cdtype)
    lead = (n, *pix[:-1])
    dst = np.lib.stride_tricks.as_strided(res, lead + (run,), res.strides[:k] + (itm,))
    xstrides = (st[0], *(st[1 + a] * geometry.strides[a] for a in range(k - 1)), itm)
    views, wrep = [], []
    for t in np.ndindex(*geometry.kernel_sizes):
        start = tuple(ti * d for ti, d in zip(t, geometry.dilations, strict=True))
        views.append(_shifted(block, (slice(None),) + start + (0, 0), lead + (run,), xstrides))
        wrep.append(np.tile(wk[(slice(None), 0, 0) + t], pix[-1]))
    rows = pix[0] if k == 2 else 1
    per = max(1, _DIRECT_ROWS_CHUNK // run)  # rows of one sample per chunk
    chunks = [(ni, r0) for ni in range(n) for r0 in range(0, rows, per)]

    def rows_chunk(part):
        tmp = None
        for ni, r0 in part:
            r1 = min(rows, r0 + per)
            d = dst[ni, r0:r1] if k == 2 else dst[ni : ni + 1]
            for i, v in enumerate(views):
                xv = v[ni, r0:r1] if k == 2 else v[ni : ni + 1]
                if i == 0:
                    np.multiply(xv, wrep[i], out=d)
                    continue
                if tmp is None or tmp.shape[0] < d.shape[0]:
                    tmp = np.empty((per, run), dtype=cdtype)
                t = tmp[: d.shape[0]]
                np.multiply(xv, wrep[i], out=t)
                d += t

    _parallel(rows_chunk, chunks)
    if stride_last != 1:
        res = res[(slice(None),) * k + (slice(None, None, stride_last),)]
    if res is tgt:
        return tgt
    if tgt is None:
        return np.ascontiguousarray(res)
    tgt[...] = res
    return tgt


def _depthwise(x_grouped, x_letters, w_grouped, w_letters, out, out_letters, geometry, bias,
               cdtype) -> bool:
    """Depthwise 1-D/2-D with zero padding, any layouts, by `depthwise_flat`: one fused sum
    of products per padded chunk (channels-first input and output go through it as views
    with the channel axis moved last; its chunk copies move the channels innermost and cast
    to ``cdtype``; a channel multiplier ``M`` makes ``M`` sums per chunk). 3-D: one einsum
    per chunk of output depths (`depthwise_volume`), or, with a width stride or a channel
    multiplier, one such 2-D conv per depth tap (`depthwise_depth_taps`). Returns False
    (nothing done) unless one input channel per group."""
    spatial = "".join(c for c in x_letters if c not in "NGC")
    dims = dict(zip(w_letters, w_grouped.shape, strict=True))
    if dims["I"] != 1 or (len(spatial) == 3 and not _DEPTH_TAPS):
        return False
    x = rows_view(x_grouped, x_letters, spatial, "GC")[..., 0]  # (n, [D,] H, W, G)
    w = _ordered(w_grouped, w_letters, spatial + "GOI", cdtype).reshape(
        geometry.kernel_sizes + (dims["G"], dims["O"])
    )  # (*K, C, M): output channel c * M + m
    dst = rows_view(out, out_letters, spatial, "C")
    bias = None if bias is None else bias.astype(cdtype)
    if len(spatial) == 3:
        sizes = (geometry.kernel_sizes, geometry.strides, geometry.dilations, geometry.pads)
        if dims["O"] != 1 or not depthwise_volume(x, w[..., 0], dst, sizes, bias, cdtype):
            depthwise_depth_taps(x, w, dst, sizes, bias, cdtype)
        return True
    if len(spatial) == 1:
        w = w[None]
    sizes = row_sizes(geometry.kernel_sizes, geometry.strides, geometry.dilations,
                      geometry.pads)
    depthwise_flat(x, w, dst, sizes, bias, cdtype)
    return True


#: 3-D depthwise convs (zero padding) as one 2-D `depthwise_flat` conv per depth tap
_DEPTH_TAPS = True
#: channels-first 3-D depthwise convs with a unit width stride take `direct` (one einsum per
#: chunk, `depthwise_volume`)
_VOLUME_FIRST = True


def _accumulate(xs, wk, form, dst, tmp):
    """``dst = sum over (tap, channel) of x * w`` for views ``xs`` of one spatial dimension."""
    g, o, c = wk.shape[:3]
    first = True
    for t, xv_all in xs:
        for ci in range(c):
            w_t = wk[(slice(None), slice(None), ci) + t]  # (G, O)
            if form == "A":
                xv = xv_all[:, :, ci : ci + 1]  # (n, G, 1, q)
                wv = w_t.reshape(1, g, o, 1)
            else:
                xv = xv_all[..., ci : ci + 1]  # (n, q, G, 1)
                wv = w_t.reshape(1, 1, g, o)
            if first:
                np.multiply(xv, wv, out=dst)
                first = False
            else:
                np.multiply(xv, wv, out=tmp)
                dst += tmp


def _direct_terms(block, wk, geometry, form, tgt, cdtype):
    """The direct sum on the (strided) tap views, for strides > 1."""
    k = geometry.n_spatial
    g, o, c = wk.shape[:3]
    res = tmp = None
    for t, view in _tap_views(block, form, geometry):
        for ci in range(c):
            if form == "A":
                xv = view[:, :, ci : ci + 1]  # (n, G, 1, *P): broadcasts over O
                wv = wk[(slice(None), slice(None), ci) + t].reshape((1, g, o) + (1,) * k)
            else:
                xv = view[..., ci : ci + 1]  # (n, *P, G, 1)
                wv = wk[(slice(None), slice(None), ci) + t].reshape((1,) + (1,) * k + (g, o))
            if res is None:
                shape = np.broadcast_shapes(xv.shape, wv.shape)
                res = np.empty(shape, dtype=cdtype)
                np.multiply(xv, wv, out=res)
                continue
            if tmp is None:
                tmp = np.empty(res.shape, dtype=cdtype)
            np.multiply(xv, wv, out=tmp)
            res += tmp
    return res


_RUNNERS = {"im2col": _run_im2col, "per_tap": _run_per_tap, "direct": _run_direct}
