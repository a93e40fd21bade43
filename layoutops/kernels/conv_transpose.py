"""Transposed convolution as a GEMM over the input followed by a col2im scatter-add.

For one tile of the input (a batch chunk times a block of input positions) the kernel computes
``cols = x_tile @ W`` — per group, a ``(pixels x C_in/g) @ (C_in/g x C_out/g * prod(k))``
product, one BLAS call through `opt_einsum` — and then, for every kernel tap ``t``, adds the
slice ``cols[..., t]`` into the strided view ``out[..., t*d - crop : ... : s, ...]``. Tap
ranges are clipped per axis against the (already cropped) output, so the output is allocated
once at its final size and nothing outside it is ever computed into: no zero-inserted input,
no uncropped intermediate. Neighbouring input tiles write overlapping output regions; the
tiles run one after the other and accumulate.

For one group and a channels-last output whose innermost spatial axis has stride 1, or
dilation 1 and a stride dividing its kernel size, `_scatter_rows` groups ``s`` consecutive taps
of that axis per GEMM so that each GEMM's rows add into whole output rows as contiguous runs
(see ``docs/transposed.md``). For one group and a channels-first output, `_phase_planes`
computes each output phase (every ``s``-th cell) on zero-padded planes, where every tap adds
as one contiguous shifted run, and adds each phase into its strided output view once.

Both of those run the tiles of different samples as one pipeline per thread on
single-threaded BLAS (`_run_by_batch`): tiles of one sample overlap in the output and stay in
order on one thread, so the sums do not depend on the thread count.

The geometry is a `Geometry` whose ``pads`` are *crops* ``(begin, end)`` of the full
(uncropped) transposed-conv output — an ``end`` below 0 means positions appended at the end,
which no tap reaches (they keep only the bias). ``out_sizes`` are the final sizes.

Everything here takes plain arrays, letter strings and tuples; the argument checks live in
``ops/conv_transpose.py``.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math

import numpy as np
import opt_einsum

from . import blas
from . import depthwise_flat as flat
from .depthwise_flat import depthwise_flat, rows_view
from .geometry import Geometry
from .plan import get_workspace_limit, split_tiles
from .scratch import scratch
from .threads import get_num_threads, parallel

__all__ = ["conv_transpose_scatter", "tap_ranges"]

#: a group loop with BLAS calls pays off when a group's GEMM has at least this many weights
_GROUP_LOOP_MIN_WEIGHTS = 64


@functools.lru_cache(maxsize=256)
def _expression(subscripts: str, *shapes: tuple[int, ...]):
    return opt_einsum.contract_expression(subscripts, *shapes)


def _run_by_batch(work, tiles, threads: int, clear=None, flops: int | None = None) -> None:
    """``work(tile)`` for every tile (``tile[0]`` its batch slice). Tiles of one batch slice
    write overlapping outputs, so they run in order on one thread; runs of different batch
    slices, whose outputs are disjoint, go to ``threads`` threads as pipelines on
    single-threaded BLAS (each thread's GEMM output is read back hot by the same core's
    additions, and the additions, single-threaded NumPy, run on every core). ``clear``: an
    output (batch axis first) to zero, each run's samples on the run's thread just before
    its tiles add into them (instead of a serial zero fill of the whole output first).
    ``flops``: the GEMM work of all tiles (small work on one thread stays on one BLAS
    thread, `blas.pipelines`)."""
    runs: list[list] = []
    for tile in tiles:
        if runs and runs[-1][0][0] == tile[0]:
            runs[-1].append(tile)
        else:
            runs.append([tile])

    def part(batch_runs):
        for run in batch_runs:
            if clear is not None:
                clear[run[0][0]] = 0
            for tile in run:
                work(tile)

    blas.pipelines(part, runs, threads, flops)


def _threads_within(limit: int, one_tile: int) -> int:
    """Threads whose tiles in flight fit ``limit`` bytes, at least ``one_tile`` bytes each."""
    return max(1, min(get_num_threads(), limit // max(one_tile, 1)))


@functools.lru_cache(maxsize=256)
def tap_ranges(geometry: Geometry, axis: int, in_start: int, in_stop: int):
    """Per kernel tap along ``axis``: the input positions of ``[in_start, in_stop)`` that land in
    the output, and where, as ``(tap, first_local, stop_local, out_start, out_stop)`` tuples;
    taps that miss the output are left out.

    Input position ``i`` and tap ``t`` land at ``i * stride + t * dilation - crop_begin``.

    Examples
    --------
    >>> from layoutops.kernels.geometry import Geometry
    >>> from layoutops.kernels.conv_transpose import tap_ranges
    >>> g = Geometry((3,), (3,), (2,), (1,), ((1, 1),), (5,))
    >>> tap_ranges(g, 0, 0, 3)
    ((0, 1, 3, 1, 4), (1, 0, 3, 0, 5), (2, 0, 2, 1, 4))
    """
    s, d = geometry.strides[axis], geometry.dilations[axis]
    crop = geometry.pads[axis][0]
    size = geometry.out_sizes[axis]
    result = []
    for t in range(geometry.kernel_sizes[axis]):
        shift = t * d - crop
        lo = max(in_start, -(shift // s))  # ceil(-shift / s): first i with i*s + shift >= 0
        hi = min(in_stop, (size - 1 - shift) // s + 1)
        if lo >= hi:
            continue
        start = lo * s + shift
        result.append((t, lo - in_start, hi - in_start, start, (hi - 1) * s + shift + 1))
    return tuple(result)


def _subscripts(x_letters: str, w_letters: str, out_letters: str, spatial: str, grouped: bool):
    """Einsum subscripts ``x, w -> cols`` (cols: the output's grouped letters + tap letters)."""
    drop = "" if grouped else "G"

    def sub(letters, mapping):
        return "".join(mapping.get(c, c.lower()) for c in letters if c not in drop)

    taps = {c: c for c in spatial}  # upper case: tap axes; lower case: positions
    x_sub = sub(x_letters, {"N": "n", "G": "g", "C": "c"})
    w_sub = sub(w_letters, {"G": "g", "I": "c", "O": "o", **taps})
    out_sub = sub(out_letters, {"N": "n", "G": "g", "O": "o"})
    return f"{x_sub},{w_sub}->{out_sub}{spatial}"


def conv_transpose_scatter(
    x_grouped: np.ndarray,
    x_letters: str,
    w_grouped: np.ndarray,
    w_letters: str,
    out_grouped: np.ndarray,
    out_letters: str,
    spatial: str,
    geometry: Geometry,
    *,
    limit: int | None = None,
    zeroed: bool = True,
) -> np.ndarray:
    """Accumulate the transposed convolution of ``x_grouped`` with ``w_grouped`` into
    ``out_grouped`` (in place) and return it.

    Parameters
    ----------
    x_grouped, x_letters : ndarray, str
        The input with its channel axis split as ``G, C`` (letters such as ``NGCHW``).
    w_grouped, w_letters : ndarray, str
        The kernel with a ``G`` axis, ``I`` and ``O`` per group (e.g. ``GIOHW``, ``HWOGI``),
        already in the compute dtype.
    out_grouped, out_letters : ndarray, str
        The preallocated output (compute dtype; zero- or bias-filled, or uninitialized with
        ``zeroed=False``) with ``C`` split as ``G, O`` (e.g. ``NGOHW``); written through, so
        it must be a writeable view.
    spatial : str
        The spatial letters in the order of the per-axis values of ``geometry``.
    geometry : Geometry
        Input, kernel sizes, strides, dilations, crops and output sizes (see the module
        docstring).
    limit : int, optional
        Workspace bytes per tile (default: the current workspace limit).
    zeroed : bool
        False if ``out_grouped`` is uninitialized: it is zeroed here, sample by sample on
        the pipelines' threads where the tiles run by batch (a serial fill of the output
        before them cost 0.14 ms of the 2.7 ms k2 s2 case of BENCH.md).
    """
    clear = None if zeroed else out_grouped
    if not zeroed and _depthwise_as_conv(x_grouped, x_letters, w_grouped, w_letters,
                                         out_grouped, out_letters, spatial, geometry):
        return out_grouped
    if _PAD_TO_ROWS and not _rows_applicable(x_grouped, x_letters, out_grouped, out_letters,
                                             spatial, geometry):
        w_padded, padded = _padded_to_blocks(w_grouped, w_letters, spatial, geometry)
        # only where it makes the row blocks apply (zero taps would slow the other paths)
        if _rows_applicable(x_grouped, x_letters, out_grouped, out_letters, spatial, padded):
            w_grouped, geometry = w_padded, padded
    if _rows_applicable(x_grouped, x_letters, out_grouped, out_letters, spatial, geometry):
        return _scatter_rows(x_grouped, x_letters, w_grouped, w_letters, out_grouped,
                             out_letters, spatial, geometry, limit, clear)
    if (x_grouped.shape[x_letters.index("G")] == 1
            and out_letters.replace("G", "") == "NO" + spatial
            and _phase_planes(x_grouped, x_letters, w_grouped, w_letters, out_grouped,
                              out_letters, spatial, geometry, limit, clear)):
        return out_grouped
    if not zeroed:
        out_grouped[...] = 0
    n_axis = x_letters.index("N")
    g_axis_x = x_letters.index("G")
    x_axes = tuple(x_letters.index(c) for c in spatial)
    out_axes = tuple(out_letters.index(c) for c in spatial)
    g_axis_out = out_letters.index("G")
    n_axis_out = out_letters.index("N")
    groups = x_grouped.shape[g_axis_x]
    c_per = x_grouped.shape[x_letters.index("C")]
    o_per = out_grouped.shape[out_letters.index("O")]
    n_taps = math.prod(geometry.kernel_sizes)
    cdtype = out_grouped.dtype
    loop_groups = groups == 1 or c_per * o_per >= _GROUP_LOOP_MIN_WEIGHTS
    per_call = o_per if loop_groups else o_per * groups
    item = cdtype.itemsize
    cast = x_grouped.dtype != cdtype

    def cost(tile):
        pixels = math.prod(tile)
        # the cols buffer (and a transposed copy einsum may make) + the cast input tile
        return item * pixels * (2 * per_call * n_taps + (2 if cast else 1) * c_per * groups)

    # the cols axes: the output's letters (without G when looping over groups), then the taps
    col_letters = out_letters.replace("G", "") if loop_groups else out_letters
    if loop_groups:
        g_axis_w = w_letters.index("G")
        gemm = _GroupGemm(x_letters.replace("G", ""), w_letters.replace("G", ""), col_letters,
                          spatial)
        w_parts = [gemm.weight(np.take(w_grouped, g, axis=g_axis_w)) for g in range(groups)]
    else:
        subscripts = _subscripts(x_letters, w_letters, out_letters, spatial, grouped=True)
        w_parts = [w_grouped]

    col_axes = tuple(col_letters.index(c) for c in spatial)
    n_lead = len(col_letters)

    shape = (x_grouped.shape[n_axis], *geometry.in_sizes)
    for tile in split_tiles(shape, cost, limit):
        index = [slice(None)] * x_grouped.ndim
        index[n_axis] = tile[0]
        for ax, sl in zip(x_axes, tile[1:], strict=True):
            index[ax] = sl
        x_tile = x_grouped[tuple(index)]
        if cast:
            x_tile = x_tile.astype(cdtype)
        per_axis = [tap_ranges(geometry, i, sl.start, sl.stop) for i, sl in enumerate(tile[1:])]
        if any(not r for r in per_axis):
            continue
        flops = 2 * math.prod(sl.stop - sl.start for sl in tile) * groups * c_per * o_per * n_taps
        # small tiles' GEMMs on one BLAS thread: no spinning BLAS workers after them
        with blas.one_thread_below(flops):
            for g, w_part in enumerate(w_parts):
                if loop_groups:
                    cols = gemm(np.take(x_tile, g, axis=g_axis_x), w_part)
                else:
                    cols = _expression(subscripts, x_tile.shape, w_part.shape)(x_tile, w_part)
                out_index = [slice(None)] * out_grouped.ndim
                out_index[n_axis_out] = tile[0]
                if loop_groups:
                    out_index[g_axis_out] = g
                col_index = [slice(None)] * cols.ndim
                for taps in itertools.product(*per_axis):
                    for i, (t, lo, hi, o_start, o_stop) in enumerate(taps):
                        out_index[out_axes[i]] = slice(o_start, o_stop, geometry.strides[i])
                        col_index[col_axes[i]] = slice(lo, hi)
                        col_index[n_lead + i] = t
                    out_grouped[tuple(out_index)] += cols[tuple(col_index)]
    return out_grouped


def _depthwise_as_conv(x_grouped, x_letters, w_grouped, w_letters, out_grouped, out_letters,
                       spatial, geometry: Geometry) -> bool:
    """A depthwise (one input and one output channel per group) 1-D/2-D transposed
    convolution written into the uninitialized ``out_grouped`` as forward depthwise
    convolutions (`depthwise_flat`: one fused einsum per chunk), one per output phase.

    Along an axis with stride ``s``, tap ``t`` lands on ``o = i * s + t * d - crop``: on the
    phase ``r = o mod s`` the taps with ``(t * d - crop - r) mod s = 0`` read ``i = q - m_t``
    for phase cell ``q`` (``m_t = (t * d - crop - r) / s``, growing by ``D = d * L / s`` from
    one such tap to the next, ``L`` apart). So the phase is the correlation of ``x`` with
    those taps in reverse order, dilation ``D``, padding ``m`` of the last one before (a
    negative one crops), written into the phase's strided view of the output; a phase no tap
    reaches is zero. With unit strides this is the one conv with the flipped kernel. The
    per-group scatter-add took 50-80x longer (8x96x56x56 3x3 channels-last: 81 ms against
    3.8). False (nothing done) for other convolutions."""
    n_sp = len(spatial)
    c_per = x_grouped.shape[x_letters.index("C")]
    o_per = out_grouped.shape[out_letters.index("O")]
    if c_per != 1 or o_per != 1 or n_sp > 2:
        return False
    cdtype = out_grouped.dtype
    # (N, H, W, G) views of the input and the output, whatever their layouts; (*K, G) kernel
    x = rows_view(x_grouped, x_letters, spatial, "GC")[..., 0]
    out = rows_view(out_grouped, out_letters, spatial, "GO")[..., 0]
    w = w_grouped.transpose([w_letters.index(c) for c in spatial + "GIO"])[..., 0, 0]
    per_axis = []  # per axis, per phase r: (taps in conv order, dilation, padding before)
    for k, d, s, (crop, _) in zip(geometry.kernel_sizes, geometry.dilations,
                                  geometry.strides, geometry.pads, strict=True):
        phases = []
        for r in range(s):
            taps = [t for t in range(k) if (t * d - crop - r) % s == 0][::-1]
            step = d * (taps[0] - taps[1]) // s if len(taps) > 1 else 1
            before = (taps[0] * d - crop - r) // s if taps else 0
            phases.append((r, taps, step, before))
        per_axis.append(phases)
    if n_sp == 1:  # the unit row axis of `rows_view`
        w = w[None]
        per_axis.insert(0, [(0, [0], 1, 0)])
    phases = []  # (multiply-adds, output view, kernel, sizes) of each phase a tap reaches
    for (rh, taps_h, dil_h, pad_h), (rw, taps_w, dil_w, pad_w) in itertools.product(
            *per_axis):
        dst = out[:, rh :: len(per_axis[0]), rw :: len(per_axis[1])]
        if dst.size == 0:
            continue
        if not taps_h or not taps_w:
            dst[...] = 0
            continue
        w_phase = np.ascontiguousarray(w[np.ix_(taps_h, taps_w)], dtype=cdtype)
        sizes = ((len(taps_h), len(taps_w)), (1, 1), (dil_h, dil_w),
                 ((pad_h, 0), (pad_w, 0)))
        phases.append((dst.size * len(taps_h) * len(taps_w), dst, w_phase, sizes))

    def run(part):
        for _, dst, w_phase, sizes in part:
            depthwise_flat(x, w_phase, dst, sizes, None, cdtype)

    if len(phases) > 1 and (
            PHASES_PARALLEL_MACS <= max(p[0] for p in phases) < flat.MIN_PARALLEL_MACS):
        # phases too small for depthwise_flat to split over the threads run side by side
        # instead, one thread each (they write disjoint cells; inside a part of `parallel`
        # depthwise_flat stays on its thread); heaviest next to lightest, so that
        # contiguous parts of the list get about equal work
        order = sorted(phases, key=lambda p: p[0])
        paired = [order[-1 - i // 2] if i % 2 == 0 else order[i // 2]
                  for i in range(len(order))]
        parallel(run, paired)
    else:
        run(phases)
    return True


#: depthwise transposed convs whose largest phase has at least this many multiply-adds, but
#: too few for `depthwise_flat` to split it over the threads, run their phases side by side
#: on the threads (`_depthwise_as_conv`). 5-round A/Bs, ms, phase after phase -> side by side:
#: channels-last 8x144x28x28 k4 s2 7.31 -> 5.53, 8x16x56x56 k3 s2 3.17 -> 2.79, 1-D
#: 16x64x1000 k4 s2 3.80 -> 3.39; with smaller phases (below 2^20) equal or slower, their
#: many small NumPy calls trading the GIL (8x64x14x14 k3 s2 1.02 -> 1.18, channels-first
#: 8x32x28x28 2.49 -> 3.07)
PHASES_PARALLEL_MACS = 1 << 20


def _row_group(geometry: Geometry) -> int:
    """Taps per GEMM block along the innermost spatial axis in `_scatter_rows`: the stride
    ``s`` when ``s`` consecutive taps (dilation 1) fill each input position's ``s`` output
    cells, so that a block lands as one contiguous run; 1 when stride is 1 (each tap's run is
    already contiguous); 0 when neither holds (dilated and strided, or ``s`` not dividing
    ``k``: `_padded_to_blocks` first adds the zero taps that make it divide, when undilated)."""
    k, s, d = geometry.kernel_sizes[-1], geometry.strides[-1], geometry.dilations[-1]
    if s == 1:
        return 1
    if d == 1 and k % s == 0:
        return s
    return 0


#: channels-last kernels whose innermost size the stride does not divide get zero taps up to
#: the next multiple, so that `_scatter_rows` takes them
_PAD_TO_ROWS = True


def _padded_to_blocks(w_grouped, w_letters, spatial, geometry: Geometry):
    """``(w_grouped, geometry)`` with the innermost spatial axis of the kernel padded with
    zero taps at its end up to a multiple of its stride (undilated, strided axes only; else
    unchanged). The extra taps land past the old last tap, on cells the larger crop at the
    end removes, and add zeros elsewhere: the result is the same transposed convolution, and
    `_row_group` now groups the taps into whole output rows."""
    k, s, d = geometry.kernel_sizes[-1], geometry.strides[-1], geometry.dilations[-1]
    if s == 1 or d != 1 or k % s == 0:
        return w_grouped, geometry
    extra = -k % s
    axis = w_letters.index(spatial[-1])
    widths = [(0, 0)] * w_grouped.ndim
    widths[axis] = (0, extra)
    pads = geometry.pads[:-1] + ((geometry.pads[-1][0], geometry.pads[-1][1] + extra),)
    return np.pad(w_grouped, widths), Geometry(
        geometry.in_sizes, geometry.kernel_sizes[:-1] + (k + extra,), geometry.strides,
        geometry.dilations, pads, geometry.out_sizes)


def _rows_applicable(x_grouped, x_letters, out_grouped, out_letters, spatial, geometry):
    """Whether `_scatter_rows` applies: one group, a C-contiguous output whose channels follow
    its spatial axes in ``spatial`` order (channels-last), and `_row_group` > 0."""
    return (
        x_grouped.shape[x_letters.index("G")] == 1
        and out_letters.replace("G", "") == "N" + spatial + "O"
        and out_grouped.flags.c_contiguous
        and _row_group(geometry) > 0
    )


#: bytes of one tile's GEMM output and input in `_scatter_rows`: small enough to stay in cache
#: between the GEMM that writes it and the additions that read it
ROW_TILE_BYTES = 1 << 20


def _scatter_rows(x_grouped, x_letters, w_grouped, w_letters, out_grouped, out_letters,
                  spatial, geometry: Geometry, limit, clear=None) -> np.ndarray:
    """The channels-last transposed convolution (one group) as contiguous row additions.

    Along the innermost spatial axis with stride ``s``, ``s`` consecutive taps (a *block*)
    put every input position's contributions on ``s`` adjacent output cells, and the blocks
    of consecutive positions are adjacent too: one GEMM per block (and per tap of the outer
    spatial axes), ``x_tile (pixels, C_in) @ W_block (C_in, s * C_out)``, gives rows that add
    into the output's ``(W_out * C_out)`` rows as single contiguous runs (clipped per element
    at the crops). Per tile of the input (in cache), so the GEMM output is read back hot.
    """
    n_sp = len(spatial)
    x = x_grouped[(slice(None),) * x_letters.index("G") + (0,)]  # a view, never a copy
    x_l = x_letters.replace("G", "")
    x = x.transpose([x_l.index(c) for c in "N" + spatial + "C"])
    w = w_grouped[(slice(None),) * w_letters.index("G") + (0,)]
    w_l = w_letters.replace("G", "")
    w = w.transpose([w_l.index(c) for c in spatial + "IO"])  # (k..., I, O)
    c_in, c_out = w.shape[-2], w.shape[-1]
    gw = _row_group(geometry)
    k_last = geometry.kernel_sizes[-1]
    n_blocks = k_last // gw
    # (k_outer..., block, I, gw * O): one contiguous GEMM operand per outer tap and block
    w = w.reshape(*w.shape[:n_sp - 1], n_blocks, gw, c_in, c_out)
    w = np.ascontiguousarray(np.moveaxis(w, n_sp, n_sp + 1)).reshape(
        *w.shape[:n_sp - 1], n_blocks, c_in, gw * c_out)
    cdtype = out_grouped.dtype
    item = cdtype.itemsize
    out = out_grouped.reshape(*out_grouped.shape[:n_sp], -1)  # (N, OS_outer..., OW * O)
    row_len = out.shape[-1]
    run = gw * c_out  # GEMM output elements per input position

    def cost(tile):
        return item * math.prod(tile) * (run + c_in)

    limit = get_workspace_limit() if limit is None else limit
    threads = _threads_within(limit, cost((1,) * (n_sp + 1)))
    shape = (x.shape[0], *geometry.in_sizes)
    tiles = list(split_tiles(shape, cost, min(limit // threads, ROW_TILE_BYTES)))

    # an uninitialized output whose cells get at most one tap each: rows are written, not
    # added into zeros, and with every cell written no zero fill first
    single, every = _single_taps(geometry)
    owned = _PHASE_WRITES and clear is not None and single
    if owned and every:
        clear = None

    def work(tile):
        with _small_ufunc_buffers():  # a per-thread (context) setting
            _rows_tile(x, tile, w, out, geometry, c_in, cdtype, run, row_len, n_blocks, gw,
                       c_out, owned)

    flops = 2 * math.prod(shape) * c_in * c_out * math.prod(geometry.kernel_sizes)
    _run_by_batch(work, tiles, threads, clear, flops)
    return out_grouped


def _single_taps(geometry: Geometry) -> tuple[bool, bool]:
    """``(single, every)``: every output cell gets at most one tap (kernel spread below the
    stride on every axis), and every cell gets one (tiling kernels, ``k = s`` without
    dilation, reach each cell up to ``in * s - crop``; extra output padding is not reached)."""
    single = geometry.disjoint_windows
    every = all(
        k == s and d == 1 and n * s - crop >= size
        for k, d, s, n, (crop, _), size in zip(
            geometry.kernel_sizes, geometry.dilations, geometry.strides, geometry.in_sizes,
            geometry.pads, geometry.out_sizes, strict=True,
        )
    )
    return single, single and every


@contextlib.contextmanager
def _small_ufunc_buffers(size: int = 16):
    """Run ufuncs with a small iteration buffer (restored after). The default 8192-element
    buffer makes NumPy copy strided rows shorter than that through it: adding ``(32, 2048)``
    rows one row apart in memory ran 4x slower than the contiguous case (NumPy 2.4, 1
    thread); with 16 it runs at the contiguous speed."""
    old = np.setbufsize(size)
    try:
        yield
    finally:
        np.setbufsize(old)


def _rows_tile(x, tile, w, out, geometry, c_in, cdtype, run, row_len, n_blocks, gw, c_out,
              owned=False):
    """One input tile of `_scatter_rows`, its GEMM output in this thread's scratch (written
    into ``out`` with ``owned``, else added)."""
    n_sp = geometry.n_spatial
    s_last, d_last = geometry.strides[-1], geometry.dilations[-1]
    crop_last = geometry.pads[-1][0]
    x_tile = x[tile]
    m = math.prod(x_tile.shape[:-1])
    if m == 0:
        return
    x2 = x_tile.reshape(m, c_in)
    if x2.dtype != cdtype:
        x2 = x2.astype(cdtype)
    outer = [tap_ranges(geometry, i, sl.start, sl.stop) for i, sl in enumerate(tile[1:-1])]
    if any(not r for r in outer):
        return
    cols = scratch("conv_transpose rows", m * run, cdtype).reshape(m, run)
    src_rows = cols.reshape(*x_tile.shape[:-2], -1)  # (n, in_outer..., W_t * run)
    i0 = tile[-1].start
    src_len = src_rows.shape[-1]
    for taps in itertools.product(*outer):
        src_index = [slice(None)] * (n_sp + 1)
        dst_index = [tile[0]] + [slice(None)] * n_sp
        for i, (_, lo, hi, o_start, o_stop) in enumerate(taps):
            src_index[1 + i] = slice(lo, hi)
            dst_index[1 + i] = slice(o_start, o_stop, geometry.strides[i])
        w_outer = w[tuple(t[0] for t in taps)]
        for b in range(n_blocks):
            t0 = b * gw
            off = ((i0 * s_last + t0 * d_last - crop_last) * c_out)
            a, z = max(0, -off), min(src_len, row_len - off)
            if a >= z:
                continue
            np.matmul(x2, w_outer[b], out=cols)
            src_index[-1] = slice(a, z)
            dst_index[-1] = slice(a + off, z + off)
            dst = out[tuple(dst_index)]
            if owned:
                dst[...] = src_rows[tuple(src_index)]
            else:
                np.add(dst, src_rows[tuple(src_index)], out=dst)


#: with an uninitialized output, `_phase_planes` writes each phase's cells (they are
#: disjoint) instead of adding them into zeros, and skips the zero fill when the phases
#: cover every output cell
_PHASE_WRITES = True
#: bytes of one batch tile of `_phase_planes` (padded input, one phase's GEMM output, its
#: phase plane): small enough to stay in cache between the GEMM and the additions
PHASE_TILE_BYTES = 2 << 20


def _phase_planes(x_grouped, x_letters, w_grouped, w_letters, out_grouped, out_letters,
                  spatial, geometry: Geometry, limit, clear=None) -> bool:
    """The channels-first transposed convolution (one group) by output phases on padded
    planes. Returns False (nothing done) when one image does not fit the workspace limit.

    Tap ``t`` of an axis lands at ``o = i*s + t*d - crop = (i + q)*s + r``: on the output
    *phase* ``r`` (every ``s``-th cell from ``r``), shifted by ``q`` cells of that phase. Per
    phase, one GEMM ``W_phase (taps * C_out, C_in) @ x_pad (C_in, N * plane)`` over a zero-padded
    copy of the input tile (each axis widened by the spread of ``q``) gives each tap's
    contributions on the padded plane, so every tap adds into the phase plane as ONE
    contiguous flat run shifted by its ``q`` (what a shift carries across a row boundary
    comes from the zero margin); the phase plane is then added into its strided view of the
    output once. The strided writes (``stride`` elements apart along the innermost axis) are
    one per output cell instead of one per tap.
    """
    n_sp = len(spatial)
    x = x_grouped[(slice(None),) * x_letters.index("G") + (0,)]
    x_l = x_letters.replace("G", "")
    x = x.transpose([x_l.index(c) for c in "CN" + spatial])  # (C_in, N, in...)
    w = w_grouped[(slice(None),) * w_letters.index("G") + (0,)]
    w_l = w_letters.replace("G", "")
    w = w.transpose([w_l.index(c) for c in spatial + "OI"])  # (k..., O, I)
    out = out_grouped[(slice(None),) * out_letters.index("G") + (0,)]  # (N, O, out...)
    c_in, c_out = w.shape[-1], w.shape[-2]
    cdtype = out.dtype
    item = cdtype.itemsize
    per_axis = []  # per axis: per tap (phase r, shift q)
    widths, q_mins = [], []
    for i in range(n_sp):
        s, d, crop = geometry.strides[i], geometry.dilations[i], geometry.pads[i][0]
        taps = [((t * d - crop) % s, (t * d - crop) // s) for t in range(geometry.kernel_sizes[i])]
        q_lo, q_hi = min(q for _, q in taps), max(q for _, q in taps)
        per_axis.append(taps)
        widths.append(geometry.in_sizes[i] + q_hi - q_lo)
        q_mins.append(q_lo)
    pstrides = []
    acc = 1
    for width in reversed(widths):
        pstrides.append(acc)
        acc *= width
    pstrides.reverse()
    plane = acc
    phases: dict[tuple, list] = {}
    for taps in itertools.product(*[list(enumerate(a)) for a in per_axis]):
        r = tuple(rq[0] for _, rq in taps)
        shift = sum((rq[1] - q_mins[i]) * pstrides[i] for i, (_, rq) in enumerate(taps))
        phases.setdefault(r, []).append((tuple(t for t, _ in taps), shift))
    for taps in phases.values():
        taps.sort(key=lambda tap: tap[1])
    most = max(len(v) for v in phases.values())

    def cost(tile):
        return item * tile[0] * plane * (c_in + (most + 1) * c_out)

    limit = get_workspace_limit() if limit is None else limit
    if cost((1,)) > limit:
        return False
    weights = {r: np.concatenate([w[t] for t, _ in taps]).astype(cdtype, copy=False)
               for r, taps in phases.items()}  # (taps * O, I)
    inner = tuple(slice(0, n) for n in geometry.in_sizes)
    threads = _threads_within(limit, cost((1,)))
    tiles = list(split_tiles((out.shape[0],), cost, min(limit // threads, PHASE_TILE_BYTES)))
    owned = _PHASE_WRITES and clear is not None  # uninitialized: phases write, not add

    def work(tile_tuple):
        (tile,) = tile_tuple
        n_t = tile.stop - tile.start
        xp = np.zeros((c_in, n_t, *widths), cdtype)
        xp[(slice(None), slice(None)) + inner] = x[:, tile]
        x2 = xp.reshape(c_in, n_t * plane)
        flat = n_t * plane
        for r, taps in phases.items():
            cols = np.matmul(weights[r], x2).reshape(len(taps), c_out, flat)
            if taps[0][1] == 0:  # an unshifted tap (sorted first) is the plane to add into
                acc_plane, rest = cols[0], range(1, len(taps))
            else:
                acc_plane, rest = np.zeros((c_out, flat), cdtype), range(len(taps))
            for j in rest:
                shift = taps[j][1]
                dst = acc_plane[:, shift:]
                np.add(dst, cols[j, :, : flat - shift], out=dst)
            src_index = [slice(None), slice(None)]
            dst_index = [tile, slice(None)]
            for i in range(n_sp):
                s = geometry.strides[i]
                q_end = (geometry.out_sizes[i] - r[i] + s - 1) // s  # phase cells in output
                qa, qb = max(0, q_mins[i]), min(q_end, q_mins[i] + widths[i])
                if qa >= qb:
                    break
                src_index.append(slice(qa - q_mins[i], qb - q_mins[i]))
                dst_index.append(slice(qa * s + r[i], (qb - 1) * s + r[i] + 1, s))
            else:
                src = np.moveaxis(acc_plane.reshape(c_out, n_t, *widths)[tuple(src_index)], 0, 1)
                dst = out[tuple(dst_index)]
                if owned:
                    dst[...] = src  # the phases' cells are disjoint: written once
                else:
                    np.add(dst, src, out=dst)  # into the caller's zeros or bias
            del cols, acc_plane

    if owned and _phases_cover(phases, per_axis, q_mins, widths, geometry):
        clear = None  # every output cell is written: no zero fill first
    flops = 2 * out.shape[0] * plane * c_in * c_out * sum(len(t) for t in phases.values())
    _run_by_batch(work, tiles, threads, clear, flops)
    return True


def _phases_cover(phases, per_axis, q_mins, widths, geometry: Geometry) -> bool:
    """True if the phase planes write every output cell: every phase ``r`` (residue per
    axis) has taps, and along every axis its plane spans all of the phase's output cells."""
    strides = geometry.strides
    if len(phases) != math.prod(strides):
        return False
    for i, s in enumerate(strides):
        for r in {rq[0] for rq in per_axis[i]}:
            q_end = (geometry.out_sizes[i] - r + s - 1) // s
            if max(0, q_mins[i]) > 0 or min(q_end, q_mins[i] + widths[i]) < q_end:
                return False
    return True


class _GroupGemm:
    """One group's ``x_tile @ W`` as a single `numpy.tensordot` (BLAS), arranged so that each
    tap's slice of the result is a contiguous block whose inner axes match the output's (taps
    outermost for channels-first outputs; ``(..., taps, O)`` for channels-last ones), returned
    as a view with the axes ``col_letters`` + taps.
    """

    def __init__(self, x_letters: str, w_letters: str, col_letters: str, spatial: str):
        self.x_c = x_letters.index("C")
        taps = [("tap", c) for c in spatial]
        x_free = [("pos", c) if c in spatial else c for c in x_letters if c != "C"]
        # channels-last output: O after the positions, so keep it innermost
        self.x_first = col_letters.index("O") > max(col_letters.index(c) for c in spatial)
        w_order = ["I", *spatial, "O"] if self.x_first else [*spatial, "O", "I"]
        self.w_perm = tuple(w_letters.index(c) for c in w_order)
        result = [*x_free, *taps, "O"] if self.x_first else [*taps, "O", *x_free]
        wanted = [("pos", c) if c in spatial else c for c in col_letters] + taps
        self.perm = tuple(result.index(a) for a in wanted)

    def weight(self, w_part: np.ndarray) -> np.ndarray:
        """The group's kernel arranged for `__call__` (a small contiguous copy)."""
        return np.ascontiguousarray(w_part.transpose(self.w_perm))

    def __call__(self, x_part: np.ndarray, w_mat: np.ndarray) -> np.ndarray:
        if self.x_first:
            cols = np.tensordot(x_part, w_mat, axes=([self.x_c], [0]))
        else:
            cols = np.tensordot(w_mat, x_part, axes=([w_mat.ndim - 1], [self.x_c]))
        return cols.transpose(self.perm)
