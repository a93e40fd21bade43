"""Channels-last depthwise convolution with unit strides as multiply-adds over flat runs of
padded row chunks, split over the threads.

A chunk is ``R`` output rows of one sample. Its input rows, with the zero padding around
them, are copied into the thread's scratch as ``(R + halo, Wp, C)``; over that buffer every
kernel tap ``(i, j)`` is ONE contiguous run of ``R * Wp * C`` values starting ``(i * dh * Wp +
j * dw) * C`` further on (output cell ``(h, w)`` sits at ``(h * Wp + w) * C``), seen as ``(R,
Wp * C)`` and multiplied by the tap's weights repeated along one padded row (``Wp * C``
values, broadcast over the rows), then added into an ``(R, Wp * C)`` accumulator. The columns
``w >= W_out`` of each row are computed and dropped when the accumulator is copied into the
output. Every pass runs over long contiguous rows in cache.

Against the row-by-row form (`conv._depthwise_last`: each tap a multiply-add on the output
columns whose input exists, rows ``W_out * C`` long but ``W_in * C`` apart, virtual padding)
on the depthwise case of BENCH.md (8x112x112x96, 3x3, 2-core test machine, 5 interleaved
rounds): 39.4 -> 37.3 ms on two threads, 55.3 -> 41.4 ms on one.
"""

from __future__ import annotations

import numpy as np

from .scratch import scratch
from .threads import parallel

__all__ = ["CHUNK_ELEMS", "MAX_ROW_ELEMS", "MIN_WIDTH_PER_SPREAD", "depthwise_last_flat"]

#: values of one chunk's accumulator (its padded input and product buffer are about as
#: large: the three stay in a core's L2 cache). 2^16 + 2^15: 8 rows of the BENCH.md case
#: (one thread: 12 rows 47 ms, 8 rows 42, 6 rows 43; two threads: 41, 41 and 48 ms)
CHUNK_ELEMS = 3 << 15
#: padded rows longer than this (values) keep the row-by-row form: the repeated weights
#: (one padded row per tap) would not stay in cache
MAX_ROW_ELEMS = 1 << 16
#: ... and so do outputs narrower than this many times the kernel's width spread: the
#: padded columns are computed too (8x14x14x576, 3x3: 3.3 -> 4.0 ms flat)
MIN_WIDTH_PER_SPREAD = 16


def depthwise_last_flat(x, w, out, sizes, bias, cdtype) -> bool:
    """``out = depthwise conv(x, w) (+ bias)``, or False (nothing done) when a padded row is
    longer than `MAX_ROW_ELEMS` values or the output narrower than `MIN_WIDTH_PER_SPREAD`
    times ``(kw - 1) * dw``.

    ``x`` ``(n, H, W, C)``, ``w`` ``(kh, kw, C)`` and ``out`` ``(n, H_out, W_out, C)``
    (C-contiguous) are in ``cdtype``; ``sizes`` is ``((kh, kw), (dh, dw), ((ph, ph_end),
    (pw, pw_end)))`` with unit strides and non-negative zero padding; ``bias`` is ``(C,)`` or
    None.
    """
    (kh, kw), (dh, dw), ((ph, _), (pw, pw_end)) = sizes
    n, hi, wi, c = x.shape
    ho, wo = out.shape[1:3]
    wp = wi + pw + pw_end
    row = wp * c
    if row > MAX_ROW_ELEMS or wo < MIN_WIDTH_PER_SPREAD * (kw - 1) * dw:
        return False
    halo = (kh - 1) * dh
    slack = (kw - 1) * dw * c  # read by the last row's invalid columns only
    rows = max(1, min(ho, CHUNK_ELEMS // row))
    rows = -(-ho // -(-ho // rows))  # equal chunks
    taps = [(i, j) for i in range(kh) for j in range(kw)]
    weights = [np.tile(w[i, j], wp) for i, j in taps]  # (Wp * C,) per tap
    offsets = [(i * dh * wp + j * dw) * c for i, j in taps]
    chunks = [(ni, r0) for ni in range(n) for r0 in range(0, ho, rows)]

    def run(part):
        buf = scratch("depthwise flat input", (rows + halo) * row + slack, cdtype)
        acc = scratch("depthwise flat acc", rows * row, cdtype)
        tmp = scratch("depthwise flat product", rows * row, cdtype)
        for ni, r0 in part:
            n_r = min(ho, r0 + rows) - r0
            hb = n_r + halo
            # the padded input rows (plain slices: the Python work per chunk is what two
            # threads trading the GIL pay for)
            piece = buf[: hb * row].reshape(hb, wp, c)
            lo = r0 - ph
            a, b = max(lo, 0), min(lo + hb, hi)
            piece[a - lo : b - lo, pw : pw + wi] = x[ni, a:b]
            if a > lo:
                piece[: a - lo] = 0
            if b - lo < hb:
                piece[b - lo :] = 0
            if pw:
                piece[:, :pw] = 0
            if pw_end:
                piece[:, pw + wi :] = 0
            buf[hb * row : hb * row + slack] = 0
            total = acc[: n_r * row].reshape(n_r, row)
            product = tmp[: n_r * row].reshape(n_r, row)
            for k, (off, wt) in enumerate(zip(offsets, weights, strict=True)):
                src = buf[off : off + n_r * row].reshape(n_r, row)
                if k == 0:
                    np.multiply(src, wt, out=total)
                else:
                    np.multiply(src, wt, out=product)
                    np.add(total, product, out=total)
            dst = out[ni, r0 : r0 + n_r]
            dst[...] = total.reshape(n_r, wp, c)[:, :wo]
            if bias is not None:
                dst += bias

    parallel(run, chunks)
    return True
