"""Depthwise convolution (zero padding, any strides and dilations) as one fused sum of
products per padded chunk, split over the threads; channels-last, and channels-first through
transposing copies.

A chunk is ``R`` output rows by ``Q`` output columns of one sample. Its input (rows and
columns with the zero padding around them) is copied into the thread's scratch as ``(Hq, Wq,
C)``, channels innermost whatever the input's layout (``Hq = (R - 1) * sh + (kh - 1) * dh +
1``, ``Wq`` likewise); over that buffer kernel tap ``(i, j)`` of output cell ``(h, w)`` sits
at ``((h * sh + i * dh) * Wq + w * sw + j * dw) * C``, so the taps of the chunk are one
strided view ``(R, kh, kw, Q * C)`` (unit width stride: the last axis contiguous; else ``(R,
kh, kw, Q, C)``) and the chunk is ONE ``np.einsum`` of that view with the taps' weights
(repeated along ``Q`` columns for the contiguous form), written straight into a
channels-last output (a strided one with runs of C contiguous values, such as a transposed
conv's output phase, through einsum's loop over the channels; a channels-first one through
a few rows of scratch at a time, copied out with the channels moved; a channel multiplier
``M`` makes ``M`` sums per chunk; with a width stride and short channel runs the chunk is
stored by column phase, `_phase_piece`, so that the taps of a phase are whole contiguous rows
again). einsum's C loop adds the products of each value into
the output in tap order without a product array in between: one pass instead of a multiply
and an add per tap. ``Q`` is the whole output width unless the repeated weights would hold
more than `MAX_WEIGHT_ELEMS` values (`ROW_WEIGHT_ELEMS` for outputs of one row: 1-D
convolutions).

On the depthwise case of BENCH.md (8x112x112x96, 3x3, 2-core test machine, interleaved
rounds): the earlier form of this module (a multiply into a product buffer and an add per
tap, over 8-row chunks) 34.7 ms, fused 25.1 ms at the same chunk size and 16.5-17.1 ms with
chunks of half a sample or more (no einsum call is cheaper per value on small chunks: ~0.2 ns per
multiply-add from 2 to 112 rows; larger chunks copy fewer halo rows and hand the GIL over
less often). Before that, a row-by-row form (each tap a multiply-add over the output
columns whose input exists: virtual padding) took 39.4 ms; it also ran the strided convs
(8x96x112x112 3x3 stride 2: 19.3 ms, 6.5 through this module, einsum looping over runs of
C values there). Channels-first, where the per-plane multiply-adds of `conv._run_direct` took 47.5
ms: 25.6 ms (each sample's input moved channels-last into the chunk buffer: ~0.8 ms, the
output moved back 16 rows at a time: ~1.2 ms). Planes too narrow for the earlier form (7x7
to 28x28, which kept the per-plane path) gained most: 8x960x7x7 channels-first 23.6 ->
1.5 ms, 8x576x14x14 channels-last 3.2 -> 1.6 ms.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from .gemm import reshape_view
from .plan import get_workspace_limit
from .scratch import scratch
from .threads import balanced_run, get_num_threads, one_thread, parallel

__all__ = [
    "CHUNK_ELEMS", "MAX_WEIGHT_ELEMS", "OUT_ROWS", "ROW_WEIGHT_ELEMS", "depthwise_flat",
    "depthwise_depth_taps", "depthwise_volume",
    "depthwise_weight_grad", "row_sizes", "rows_view",
]

#: values of one chunk's padded input (a 112x112x96 sample is 1.2 M values; A/Bs of the
#: case above: 2^16 + 2^15 values 22.2 ms, 2^18 + 2^17 17.8, 2^19 + 2^18 16.5, 2^20 + 2^19 17.1)
CHUNK_ELEMS = 3 << 18
#: values of the repeated weights at most (``kh * kw`` rows of ``Q * C``): wider outputs are
#: cut into column tiles. Each output row is gone over once per tap, so it had better stay
#: in cache (2x64x256x256, 7x7: 2^18 values 50 / 35 ms channels-first / -last, 2^20 60 / 52)
MAX_WEIGHT_ELEMS = 1 << 18
#: ... when the output has one row (1-D convolutions): a chunk is then one column tile, and
#: short ones do not pay for their Python work and thread hand-off (8x256x4000, k = 9: 2^18
#: values 34 / 23 ms channels-first / -last, 2^20 25 / 18)
ROW_WEIGHT_ELEMS = 1 << 20
#: output rows computed at a time when the output is not channels-last (they are copied out
#: with the channels moved while in cache; 8, 16, 32 or 112 rows measured equal, 2 slower)
OUT_ROWS = 16


#: forward convs of fewer multiply-adds than this (taps times outputs) run on one thread: two
#: threads trading the GIL over such small chunks were slower (3x3, 2 threads / 1, ms CL /
#: CF: 8x32x32x32 0.80 / 0.60, 1.34 / 0.90; 8x64x16x16 0.62 / 0.37, 0.87 / 0.54; 1x96x56x56
#: 0.72 / 0.71, 1.06 / 1.02; but 8x96x56x56 3.1 / 5.0, 4.8 / 8.0)
MIN_PARALLEL_MACS = 1 << 22

#: forward convs with a width stride (undilated) and at most `PHASE_RUN_BYTES` of channels
#: per pixel store each chunk's columns by phase (`_Chunks.taps`, `_phase_piece`): einsum's
#: contiguous form over whole rows instead of its loop over runs of C values, at the price of
#: zero taps up to a multiple of the stride (3x3 stride 2: 4 column taps per row, not 3).
#: 5-round A/Bs, 3x3 stride 2, ms channels-last / -first, runs -> phases: 8x112x112x16 2.69 /
#: 3.10 -> 1.67 / 2.61, x32 3.49 / 4.54 -> 2.58 / 4.06, x48 4.05 / 5.31 -> 3.26 / 4.84; x64
#: 5.51 / 7.51 -> 4.92 / 7.10 but 8x56x56x64 1.59 / 2.26 -> 1.62 / 2.58, and 96 channels and
#: more 3-35% slower (the extra taps cost more than the short runs saved). Measured again a
#: session later, 64 float32 channels (5-round A/Bs, channels-last / -first, ms, runs
#: -> phases): 8x56x56x64 2.09 / 3.26 -> 1.75 / 2.86, 8x112x112x64 5.30 / 7.09 -> 4.84 /
#: 7.37, 8x28x28x64 0.65 / 0.81 -> 0.66 / 0.76; 128 channels still slower (8x56x56x128
#: 1.99 -> 2.28)
_PHASES = True
PHASE_RUN_BYTES = 256
#: forward chunks hold runs of whole samples when a sample fits one (`_Chunks`)
_SAMPLE_RUNS = True
#: outputs whose columns lie apart (a transposed conv's phases) with fewer bytes of channels
#: than this are summed into scratch and copied out rather than written by einsum's loop
#: over runs of C values (5-round A/Bs, channels-last depthwise transposed convs, ms,
#: direct -> staged: 8x32x28x28 k3 s2 2.49 -> 1.85; but 8x96x56x56 k3 s2 13.3 -> 14.0,
#: 8x144x28x28 k4 s2 7.50 -> 7.27)
STAGED_RUN_BYTES = 256


def rows_view(arr: np.ndarray, letters: str, spatial: str, tail: str) -> np.ndarray:
    """``arr`` (axes ``letters``) as the view ``(N, H, W, *tail)`` this module's functions
    take, whatever its layout: a unit row axis ``H`` for one spatial axis.

    Examples
    --------
    >>> import numpy as np
    >>> rows_view(np.zeros((2, 3, 5)), "NCW", "W", "C").shape
    (2, 1, 5, 3)
    """
    view = arr.transpose([letters.index(c) for c in "N" + spatial + tail])
    return view[:, None] if len(spatial) == 1 else view


def row_sizes(kernel_sizes, strides, dilations, pads) -> tuple:
    """The ``sizes`` argument of this module's functions from per-axis values (a unit row
    axis first for one spatial axis, as in `rows_view`).

    Examples
    --------
    >>> row_sizes((3,), (1,), (2,), ((2, 2),))
    ((1, 3), (1, 1), (1, 2), ((0, 0), (2, 2)))
    """
    sizes = (tuple(kernel_sizes), tuple(strides), tuple(dilations), tuple(pads))
    if len(sizes[0]) == 1:
        sizes = tuple((1,) + v for v in sizes[:3]) + (((0, 0),) + sizes[3],)
    return sizes


class _Chunks:
    """The chunks of a depthwise convolution's output (``rows`` x ``q`` cells of one sample,
    or a run of whole samples) and, per chunk, the view of its kernel taps over the padded
    input piece in scratch. ``items`` are ``(first sample, samples, first row, first column,
    rows, columns)``; with ``parts`` (the threads the items are split over) a chunk may hold
    several whole samples (at most ``n / parts``), else one sample's cells."""

    def __init__(self, x_shape, out_shape, sizes, cdtype, phases: bool = False,
                 parts: int | None = None):
        (kh, kw), (sh, sw), (dh, dw), ((ph, _), (pw, _)) = sizes
        n, _, _, c = x_shape
        ho, wo = out_shape[1:3]
        self.sizes, self.c, self.cdtype = sizes, c, np.dtype(cdtype)
        self.spread, self.halo = (kw - 1) * dw, (kh - 1) * dh
        # under the workspace limit: the repeated weights (shared) a quarter of it, each
        # thread's chunk buffers (padded input, output rows or gradient) another quarter
        # split over the threads (the defaults fit in 64 MiB)
        budget = get_workspace_limit() // (4 * self.cdtype.itemsize)
        cap = min(ROW_WEIGHT_ELEMS if ho == 1 else MAX_WEIGHT_ELEMS, budget)
        chunk = min(CHUNK_ELEMS, budget // get_num_threads())
        q = max(1, min(wo, cap // (kh * kw * c)))
        self.q = q = -(-wo // -(-wo // q))  # equal column tiles
        width = (q - 1) * sw + self.spread + 1  # input columns of a tile
        # a width stride (undilated): the piece's columns stored by phase (column mod sw), so
        # that the taps of one phase are contiguous runs again (`taps`)
        self.phased = (phases and _PHASES and sw > 1 and dw == 1
                       and c * self.cdtype.itemsize <= PHASE_RUN_BYTES)
        self.per_phase = -(-kw // sw) if self.phased else kw  # taps per phase, T
        if self.phased:
            width = sw * -(-width // sw)
        rows = max(1, min(ho, (chunk // (width * c) - self.halo - 1) // sh + 1))
        self.rows = rows = -(-ho // -(-ho // rows))  # equal row chunks
        self.buffer = ((rows - 1) * sh + self.halo + 1) * width * c
        # a tap's values on an output row are one contiguous run
        self.contiguous = sw == 1 or self.phased
        samples = 1
        if parts is not None and _SAMPLE_RUNS and rows == ho and q == wo and self.contiguous:
            # whole samples fit a chunk: runs of them, one piece and one einsum per run
            # (per chunk the Python work costs ~20 us, as much as the sums of a 16x16x32
            # sample). Not over runs of C values (a width stride, >= 64 channels): its
            # pieces are 4x the output, and runs of them measured 10-14% slower (8x28x28x192
            # stride 2 channels-last 1.08 -> 1.22 ms)
            # as many runs as a multiple of the threads (8 samples in runs of 3, 3 and 2 kept
            # one thread busy with two runs: 8x56x56x64 3x3 stride 2 channels-last 2.02 ->
            # 2.29 ms against one-sample chunks)
            samples = balanced_run(n, chunk // self.buffer, parts)
        self.buffer *= samples
        self.items = [(n0, min(n, n0 + samples) - n0, r0, q0, min(ho, r0 + rows) - r0,
                       min(wo, q0 + q) - q0)
                      for n0 in range(0, n, samples) for r0 in range(0, ho, rows)
                      for q0 in range(0, wo, q)]

    def taps(self, x, n0, ns, r0, q0, n_r, n_q) -> np.ndarray:
        """The chunk's input (samples ``n0 .. n0 + ns``) with its zero padding copied into
        this thread's scratch, seen as ``taps[s, r, i, j, v]``: the value tap ``(i, j)``
        reads for output cell ``(r, v)`` of the chunk's sample ``s`` (``v`` over ``n_q * C``
        contiguous values, or ``(n_q, C)`` with a width stride). The view ends exactly at
        the piece's last value; the ndarray constructor, as_strided's checks cost ~5 us a
        call, per chunk."""
        (kh, kw), (sh, sw), (dh, dw), ((ph, _), (pw, _)) = self.sizes
        c, isz = self.c, self.cdtype.itemsize
        buf = scratch("depthwise flat input", self.buffer, self.cdtype)
        hb, wb = (n_r - 1) * sh + self.halo + 1, (n_q - 1) * sw + self.spread + 1
        if self.phased:
            # (hb, sw, wbp, C): input column q0 * sw - pw + p + sw * m at [.., p, m, :];
            # tap j = p + sw * t of output column v reads [.., p, v + t, :]
            wbp = -(-wb // sw)
            prow = sw * wbp * c
            pieces = buf[: ns * hb * prow].reshape(ns, hb, sw, wbp, c)
            for s in range(ns):
                _phase_piece(pieces[s], x[n0 + s], r0 * sh - ph, q0 * sw - pw, wb)
            return np.ndarray((ns, n_r, kh, sw, self.per_phase, n_q * c), self.cdtype, buf,
                              strides=(hb * prow * isz, sh * prow * isz, dh * prow * isz,
                                       wbp * c * isz, c * isz, isz))
        row = wb * c
        _padded_cells(buf[: ns * hb * row].reshape(ns, hb, wb, c), x[n0 : n0 + ns],
                      (r0 * sh - ph, q0 * sw - pw), lead=1)
        if self.contiguous:
            return np.ndarray((ns, n_r, kh, kw, n_q * c), self.cdtype, buf,
                              strides=(hb * row * isz, sh * row * isz, dh * row * isz,
                                       dw * c * isz, isz))
        return np.ndarray((ns, n_r, kh, kw, n_q, c), self.cdtype, buf,
                          strides=(hb * row * isz, sh * row * isz, dh * row * isz,
                                   dw * c * isz, sw * c * isz, isz))


def depthwise_flat(x, w, out, sizes, bias, cdtype) -> None:
    """``out = depthwise conv(x, w) (+ bias)`` with zero padding.

    ``x`` ``(n, H, W, C)`` and ``out`` ``(n, H_out, W_out, C * M)`` are any views
    (channels-last arrays, or channels-first ones with their channel axis moved last), of
    any float dtype (the arithmetic runs in ``cdtype``); ``w`` ``(kh, kw, C)`` or ``(kh, kw,
    C, M)`` (a channel multiplier: output channel ``c * M + m``) in ``cdtype``; ``sizes``
    is ``((kh, kw), (sh, sw), (dh, dw), ((ph, ph_end), (pw, pw_end)))`` (negative padding
    crops); ``bias`` is ``(C * M,)`` or None.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(2 * 4 * 5 * 3, dtype=np.float64).reshape(2, 4, 5, 3)
    >>> w = np.ones((3, 3, 3))
    >>> out = np.empty((2, 4, 5, 3))
    >>> depthwise_flat(x, w, out, ((3, 3), (1, 1), (1, 1), ((1, 1), (1, 1))), None, np.float64)
    >>> float(out[0, 1, 1, 0]) == float(x[0, :3, :3, 0].sum())
    True
    """
    w = w if w.ndim == 4 else w[..., None]  # (kh, kw, C, M)
    mult = w.shape[3]
    kh, kw = sizes[0]
    threads = get_num_threads() if out.size * kh * kw >= MIN_PARALLEL_MACS else 1
    plan = _Chunks(x.shape, out.shape, sizes, cdtype, phases=True, parts=threads)
    c, q = plan.c, plan.q
    if plan.phased:
        # taps by phase: (kh, sw, T, C, M), tap j = p + sw * t, zero weights past the last
        sw, per = sizes[1][1], plan.per_phase
        wp = np.zeros((kh, sw * per, c, mult), w.dtype)
        wp[:, :kw] = w
        w = wp.reshape(kh, per, sw, c, mult).transpose(0, 2, 1, 3, 4)
        kcols = (sw, per)
    else:
        kcols = (kw,)
    if plan.contiguous:  # per m, (kh, *kcols, q * C): each tap's weights repeated along q
        weights = [
            np.ascontiguousarray(np.broadcast_to(w[..., None, :, m], (kh, *kcols, q, c))
                                 ).reshape(kh, *kcols, q * c)
            for m in range(mult)
        ]
    cols = "pt" if plan.phased else "j"  # the kernel-column axes: (phase, tap) or (tap,)
    isz = plan.cdtype.itemsize
    # one output channel per input channel and runs of C contiguous values in ``cdtype``:
    # einsum writes there (whole rows, or runs of C values apart: the phases of a transposed
    # conv). Short runs apart are staged: the chunk summed into scratch by einsum's contiguous
    # form, then copied out (`STAGED_RUN_BYTES`)
    direct = mult == 1 and out.dtype == cdtype and out.strides[3] == isz
    staged = direct and plan.contiguous and out.strides[2] != c * isz and (
        c * isz < STAGED_RUN_BYTES)
    if bias is not None:
        bias = bias.reshape(c, mult)

    def fused(taps, dst, m) -> None:
        """``dst`` ``(s, r, q, C)`` = the sum over the taps of the weights of multiplier
        ``m`` (einsum: tap after tap into zero): over whole rows of ``q * C`` values where
        the taps and ``dst`` have them, else over runs of C values (the loop over the
        channels)."""
        s_, r_, q_ = dst.shape[:3]
        rows = reshape_view(dst, (s_, r_, q_ * c)) if plan.contiguous else None
        if rows is not None and rows.strides[2] == isz:
            np.einsum(f"sri{cols}k,i{cols}k->srk", taps, weights[m][..., : q_ * c],
                      out=rows)
        else:
            np.einsum(f"sri{cols}qc,i{cols}c->srqc",
                      taps.reshape(s_, r_, kh, *kcols, q_, c), w[..., m], out=dst)

    def run(part):
        for n0, ns, r0, q0, n_r, n_q in part:
            taps = plan.taps(x, n0, ns, r0, q0, n_r, n_q)
            if direct:
                dst = out[n0 : n0 + ns, r0 : r0 + n_r, q0 : q0 + n_q]
                if staged:
                    rows = scratch("depthwise flat rows", dst.size, cdtype).reshape(dst.shape)
                    fused(taps, rows, 0)
                    dst[...] = rows
                else:
                    fused(taps, dst, 0)
                if bias is not None:
                    dst += bias[:, 0]
                continue
            res = scratch("depthwise flat rows", OUT_ROWS * n_q * c, cdtype)
            for s, b0 in itertools.product(range(ns), range(0, n_r, OUT_ROWS)):
                nb = min(OUT_ROWS, n_r - b0)
                block = res[: nb * n_q * c].reshape(1, nb, n_q, c)
                # output channel c * M + m: (rows, columns, C, M)
                dsts = out[n0 + s, r0 + b0 : r0 + b0 + nb, q0 : q0 + n_q].reshape(
                    nb, n_q, c, mult)
                for m in range(mult):
                    fused(taps[s : s + 1, b0 : b0 + nb], block, m)
                    dst = dsts[..., m]
                    dst[...] = block[0]
                    if bias is not None:
                        dst += bias[:, m]

    parallel(run, plan.items, threads)


def depthwise_depth_taps(x, w, out, sizes, bias, cdtype) -> None:
    """``out = 3-D depthwise conv(x, w) (+ bias)`` with zero padding, as 2-D ones.

    ``x`` ``(n, D, H, W, C)`` and ``out`` ``(n, D_out, H_out, W_out, C * M)`` are any views,
    ``w`` is ``(kd, kh, kw, C, M)`` in ``cdtype``, ``sizes`` the per-axis ``(kernel, stride,
    dilation, pads)`` of the three axes. For each sample and run of output depths, depth tap
    ``j`` is one `depthwise_flat` call over the input depth planes it reads (the output
    depths as its batch), added into a ``cdtype`` accumulator of the run (a tap whose plane
    falls in the depth padding adds nothing); the run is then written out with the bias.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.ones((1, 3, 4, 4, 2))
    >>> out = np.empty((1, 3, 4, 4, 2))
    >>> pads = ((1, 1),) * 3
    >>> depthwise_depth_taps(x, np.ones((3, 3, 3, 2, 1)), out, ((3, 3, 3), (1, 1, 1),
    ...                      (1, 1, 1), pads), None, np.float64)
    >>> float(out[0, 1, 1, 1, 0]), float(out[0, 0, 0, 0, 0])  # 27 taps inside, 8 at a corner
    (27.0, 8.0)
    """
    (kd, kh, kw), (sd, sh, sw), (dd, dh, dw), (pads_d, pads_h, pads_w) = sizes
    n, d_in, d_out = x.shape[0], x.shape[1], out.shape[1]
    sizes2 = ((kh, kw), (sh, sw), (dh, dw), (pads_h, pads_w))
    plane = math.prod(out.shape[2:])
    # a run's accumulator and one tap's planes: within a quarter of the workspace limit
    budget = get_workspace_limit() // (8 * np.dtype(cdtype).itemsize)
    step = max(1, min(d_out, budget // max(plane, 1)))
    # on one thread: the 2-D convs of a run are small, and on two threads (runs or chunks
    # split) they took turns for the GIL: 1x16x16x16x32 3x3x3 channels-last 2.6-3.2 ms
    # against 1.9 on one, 2x16x32x32x32 16.6-16.9 against 10.7, 4x8x14x14x96 6.4 against 5.0
    with one_thread():
        for ni in range(n):
            for d0 in range(0, d_out, step):
                _depth_run(x, w, out, ni, d0, min(d_out, d0 + step),
                           (kd, sd, dd, pads_d[0], d_in), sizes2, bias, cdtype)


def _depth_run(x, w, out, ni, d0, d1, depth, sizes2, bias, cdtype) -> None:
    """Output depths ``[d0, d1)`` of sample ``ni`` for `depthwise_depth_taps`; ``depth`` is
    ``(kd, stride, dilation, padding before, D)`` of the depth axis."""
    kd, sd, dd, pad, d_in = depth
    acc = np.zeros((d1 - d0, *out.shape[2:]), cdtype)
    tmp = np.empty_like(acc)
    for j in range(kd):
        off = j * dd - pad  # input depth of output depth d: d * sd + off
        lo, hi = max(d0, -(off // sd)), min(d1, (d_in - 1 - off) // sd + 1)
        if hi <= lo:
            continue
        t = tmp[: hi - lo]
        depthwise_flat(x[ni, lo * sd + off : (hi - 1) * sd + off + 1 : sd], w[j], t, sizes2,
                       None, cdtype)
        acc[lo - d0 : hi - d0] += t
    if bias is not None:
        acc += bias
    out[ni, d0:d1] = acc


def depthwise_weight_grad(x, g, sizes, cdtype) -> np.ndarray:
    """The weight gradient ``(kh, kw, C)`` (in ``cdtype``) of the depthwise convolution of
    `depthwise_flat` with output gradient ``g`` ``(n, H_out, W_out, C)``: per chunk, ONE
    ``np.einsum`` of its taps view with the chunk's gradient (summed over the rows), then
    over the chunk's columns; the chunks' sums are added in chunk order, so the result does
    not depend on the thread count.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(2 * 4 * 5 * 3, dtype=np.float64).reshape(2, 4, 5, 3)
    >>> g = np.ones((2, 4, 5, 3))
    >>> sizes = ((3, 3), (1, 1), (1, 1), ((1, 1), (1, 1)))
    >>> dw = depthwise_weight_grad(x, g, sizes, np.float64)
    >>> float(dw[1, 1, 0]) == float(x[..., 0].sum())       # the centre tap sees every input
    True
    """
    plan = _Chunks(x.shape, g.shape, sizes, cdtype)
    kh, kw = sizes[0]
    c = plan.c
    sums = [None] * len(plan.items)

    def run(part):
        for index, (ni, _, r0, q0, n_r, n_q) in part:
            taps = plan.taps(x, ni, 1, r0, q0, n_r, n_q)[0]
            grad = scratch("depthwise grad rows", n_r * n_q * c, cdtype).reshape(n_r, n_q, c)
            grad[...] = g[ni, r0 : r0 + n_r, q0 : q0 + n_q]  # channels innermost, cdtype
            per_cell = scratch("depthwise grad taps", kh * kw * n_q * c, cdtype)
            if plan.contiguous:
                np.einsum("rijk,rk->ijk", taps, grad.reshape(n_r, n_q * c),
                          out=per_cell.reshape(kh, kw, n_q * c))
            else:
                np.einsum("rijqc,rqc->ijqc", taps, grad, out=per_cell.reshape(kh, kw, n_q, c))
            sums[index] = per_cell.reshape(kh, kw, n_q, c).sum(axis=2)

    parallel(run, list(enumerate(plan.items)))
    total = np.zeros((kh, kw, c), cdtype)
    for part_sum in sums:
        total += part_sum
    return total


def _phase_piece(piece, xs, top, left, width) -> None:
    """``piece`` ``(hb, s, wbp, C)`` = the rows ``top ..`` and the ``width`` columns ``left
    ..`` of the sample ``xs`` ``(H, W, C)`` stored by phase: column ``left + p + s * m`` at
    ``piece[:, p, m]``; zeros where a cell falls outside ``xs`` or past ``width``."""
    hb, s, wbp = piece.shape[:3]
    hi, wi = xs.shape[:2]
    a, b = max(top, 0), min(top + hb, hi)
    if b <= a:
        piece[...] = 0
        return
    if a > top:
        piece[: a - top] = 0
    if b - top < hb:
        piece[b - top :] = 0
    rows = piece[a - top : b - top]
    end = min(wi, left + width)  # columns past this are zero
    for p in range(s):
        first = left + p  # the input column of m = 0
        m_lo = max(0, -(first // s))  # the first column inside xs
        m_hi = min(wbp, -(-(end - first) // s)) if end > first else 0
        if m_hi > m_lo:
            c0 = first + s * m_lo
            rows[:, p, m_lo:m_hi] = xs[a:b, c0 : c0 + s * (m_hi - m_lo - 1) + 1 : s]
        else:
            m_lo = m_hi = 0
        rows[:, p, :m_lo] = 0
        rows[:, p, m_hi:] = 0


#: 3-D depthwise convs with unit width stride, one output channel per input channel and
#: repeated weights of at most `MAX_WEIGHT_ELEMS` values run as `depthwise_volume`
_VOLUME = True


def depthwise_volume(x, w, out, sizes, bias, cdtype) -> bool:
    """``out = 3-D depthwise conv(x, w) (+ bias)`` with zero padding, ONE einsum per chunk.

    ``x`` ``(n, D, H, W, C)`` and ``out`` ``(n, D_out, H_out, W_out, C)`` are any views (as
    `depthwise_depth_taps`), ``w`` is ``(kd, kh, kw, C)`` in ``cdtype``, ``sizes`` the
    per-axis ``(kernel, stride, dilation, pads)`` of the three axes. A chunk is a run of
    output depths of one sample: its padded input ``(Db, Hb, Wb, C)`` is copied into scratch
    (channels innermost), where the taps of all its output cells are one strided view
    ``(depths, rows, kd, kh, kw, W_out * C)``, and one einsum with the taps' weights
    (repeated along an output row) sums them, as `depthwise_flat` does for two axes: one
    input copy and one pass instead of a 2-D conv, a copy and an addition per depth tap.
    Returns False (nothing done) with a width stride, a channel multiplier, an output row too
    long for the repeated weights, or when one output depth's input planes would not fit a
    thread's share of the workspace limit.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(4.0).reshape(1, 4, 1, 1, 1) * np.ones((1, 4, 3, 3, 2))  # depth index
    >>> out = np.empty((1, 2, 3, 3, 2))  # depth stride 2
    >>> sizes = ((3, 3, 3), (2, 1, 1), (1, 1, 1), ((1, 1),) * 3)
    >>> depthwise_volume(x, np.ones((3, 3, 3, 2)), out, sizes, None, np.float64)
    True
    >>> float(out[0, 1, 1, 1, 0])  # depths 1, 2, 3, nine cells each
    54.0
    """
    (kd, kh, kw), (sd, sh, sw), (dd, dh, dw), pads = sizes
    n, c = x.shape[0], x.shape[4]
    d_out, h_out, w_out = out.shape[1:4]
    cdtype = np.dtype(cdtype)
    isz = cdtype.itemsize
    taps = kd * kh * kw
    if not _VOLUME or sw != 1 or w.ndim != 4 or taps * w_out * c > MAX_WEIGHT_ELEMS:
        return False
    wb = w_out + (kw - 1) * dw
    hb = (h_out - 1) * sh + (kh - 1) * dh + 1
    row, plane = wb * c, hb * wb * c
    halo = (kd - 1) * dd + 1
    threads = get_num_threads()
    share = get_workspace_limit() // (4 * isz) // threads  # a thread's buffers, as in _Chunks
    if halo * plane > share:
        return False
    depths = max(1, min(d_out, (min(CHUNK_ELEMS, share) // plane - halo) // sd + 1))
    # equal runs; one sample's split so that every thread gets as many output depths
    depths = balanced_run(d_out, depths, threads if n == 1 else 1)
    items = [(ni, d0, min(d_out, d0 + depths)) for ni in range(n) for d0 in range(0, d_out, depths)]
    weights = np.ascontiguousarray(np.broadcast_to(w[:, :, :, None, :], (kd, kh, kw, w_out, c))
                                   ).reshape(kd, kh, kw, w_out * c)
    direct = out.dtype == cdtype and out.strides[4] == isz and out.strides[3] == c * isz
    starts = tuple(-p[0] for p in pads)

    def run(part):
        for ni, d0, d1 in part:
            nd = d1 - d0
            db = (nd - 1) * sd + halo
            buf = scratch("depthwise volume input", db * plane, cdtype)
            _padded_cells(buf[: db * plane].reshape(db, hb, wb, c), x[ni],
                          (d0 * sd + starts[0], *starts[1:]))
            view = np.ndarray((nd, h_out, kd, kh, kw, w_out * c), cdtype, buf,
                              strides=(sd * plane * isz, sh * row * isz, dd * plane * isz,
                                       dh * row * isz, dw * c * isz, isz))
            dst = out[ni, d0:d1]  # (depths, rows, columns, C)
            rows = reshape_view(dst, (nd, h_out, w_out * c)) if direct else None
            if rows is None or rows.strides[2] != isz:
                rows = scratch("depthwise volume rows", dst.size, cdtype).reshape(
                    nd, h_out, w_out * c)
                np.einsum("draijk,aijk->drk", view, weights, out=rows)
                dst[...] = rows.reshape(dst.shape)  # channels-first: moved back, in cache
            else:
                np.einsum("draijk,aijk->drk", view, weights, out=rows)
            if bias is not None:
                dst += bias

    macs = out.size * taps
    parallel(run, items, None if macs >= MIN_PARALLEL_MACS else 1)
    return True


def _padded_cells(piece, xs, starts, lead: int = 0) -> None:
    """``piece`` = the cells of ``xs`` from ``starts`` along the axes after the first
    ``lead`` (taken whole) and before the last (the channels; ``starts`` negative: padding),
    zeros where they fall outside ``xs`` (plain slices: the Python work per chunk is what two
    threads trading the GIL pay for)."""
    src, dst = [slice(None)] * lead, [slice(None)] * lead
    for axis, start in enumerate(starts, lead):
        size, n = piece.shape[axis], xs.shape[axis]
        lo, hi = max(start, 0), min(start + size, n)
        if hi <= lo:
            piece[...] = 0
            return
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    piece[tuple(dst)] = xs[tuple(src)]
    for axis in range(lead, lead + len(starts)):
        sl, index = dst[axis], [slice(None)] * axis
        if sl.start > 0:
            piece[(*index, slice(0, sl.start))] = 0
        if sl.stop < piece.shape[axis]:
            piece[(*index, slice(sl.stop, None))] = 0
