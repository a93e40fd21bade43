"""2-D convolution with unit strides and an output as wide as the input: one accumulating
GEMM per kernel tap on flat views of the unpadded input, no column copy.

When the output has the input's width (``pad_left + pad_right == (KW - 1) * dw``, "same"
padding along the rows), output pixel ``(h, w)`` and the input pixel tap ``(i, j)`` reads,
``(h + i * dh - pad_top, w + j * dw - pad_left)``, sit a fixed distance apart in the flat
(row-major) pixel order, whatever ``(h, w)``::

    out_flat[:, q] += W_ij (O, C) @ x_flat[:, q + shift_ij]          (channels-first)
    out_flat[q, :] += x_flat[q + shift_ij, :] @ W_ij (C, O)          (channels-last)

so each tap is one GEMM on a view of the input, adding into the output (`gemm.gemm`): no
im2col or kernel-offset columns, no padded copy. The flat shift is wrong only where a tap
falls off the left or right edge of a row: there it reads the neighbouring row's edge
instead of the zero padding, in the ``pad_left`` first output columns for a kernel column
shifted left and the ``pad_right`` last ones for a kernel column shifted right. The true
contribution of such a tap there is zero, so the values of those few output columns are
kept before the GEMMs of that kernel column and put back after them: exact, whatever the
input holds (an inf read by a wrapped tap leaves no trace; a correction by subtraction
would leave NaN or cancellation errors). Rows whose tap falls in the top or bottom padding
are left out of that tap's GEMM.

Against the wide row GEMMs (K = KW * C, with their column copies) the nine flat GEMMs of a
3x3 kernel (K = C) measured faster from 32 channels on (2-core test machine, 9-round A/B,
channels-first / -last): the dilated case of BENCH.md 7.7/6.4 -> 6.8/5.8 ms, 1x64x256x256
-> 64 37.7/29.3 -> 30.1/29.1, the resnet 3x3 case equal (10.9/11.1 -> 10.9/10.9; the
constants below hold the rest).

Chunks (sample, run of output rows) run as one pipeline per thread on single-threaded BLAS.

Channels-last planes too small for per-sample GEMMs (`run_taps_batch`): with "same" padding
both ways the tap shift is fixed across samples too, so each tap is one GEMM over the flat
pixels of several samples; the output rows and columns where a tap falls in the padding
(it reads the neighbouring row or sample there) are kept and put back around its GEMM.
"""

from __future__ import annotations

import math

import numpy as np

from . import blas
from .gemm import available, blasable, gemm, reshape_view
from .geometry import Geometry
from .threads import balanced_run

__all__ = ["applies", "applies_batch", "run_taps_batch", "run_taps_flat"]

#: input channels (each tap's GEMM's K) from which the flat taps beat the wide rows: every tap's
#: GEMM reads and writes the whole output once, so thin K loses. 7-round A/Bs against the wide
#: rows on the 2-core test machine (channels-first / -last, ms): 3x3 8x32x64x64 -> 32
#: 6.01/5.21 -> 5.40/4.33, 8x16x64x64 -> 16 2.84/2.77 -> 3.66/3.34
MIN_CHANNELS = 32
#: more taps than this only channels-first with at least `MANY_TAPS_CHANNELS` channels: 7x7
#: 4x64x64x64 -> 64 42.6/29.7 -> 34.4/32.4 ms, 5x5 4x32x96x96 -> 32 15.8/12.1 -> 15.2/12.1
MAX_TAPS = 9
MANY_TAPS_CHANNELS = 64
#: target bytes of one chunk's input and output rows: fewer, longer GEMMs win (7-round A/B,
#: 1x64x256x256 -> 64 3x3, channels-first / -last: 1 MiB 29.7/27.0 ms, 2 MiB 29.0/26.3,
#: 4 MiB 26.3-26.9/24.6-25.5, 8 MiB 24.4/23.6, 16 MiB 25.5/23.7; BENCH.md's resnet 3x3 and
#: dilated cases, whole samples from 2 MiB on, alike from 2 to 16 MiB). A call has at least
#: two chunks, whatever the thread count
CHUNK_BYTES = 8 << 20
#: the output is at least this many times as wide as its border columns (kept and put back
#: around the wrapping taps' GEMMs), and a sample has at least `MIN_PIXELS` output pixels
#: (every sample's GEMMs read the whole kernel again, and their M is the plane). 5-round
#: A/Bs against the im2col chunks, channels-first / -last: the late 3x3 of BENCH.md (7x7)
#: 9.8/9.0 -> 16.1/10.5 ms; 14x14 planes channels-first (an earlier 8x256x14x14 A/B had
#: them 3% faster; 5 rounds, once the chunks had grown): 8x256 7.9 -> 9.3 ms, 8x128 2.6 ->
#: 3.3, 1x256 1.8 -> 2.4; 16x16 planes equal (24x128 10.2 / 10.2), 28x28 equal
MIN_WIDTH_PER_BORDER = 4
MIN_PIXELS = 256
#: and a tap's GEMM over one sample's output plane does at least this many flops (2 * pixels
#: * C * O): each GEMM call costs ~7 us of Python and ctypes and small products run far below
#: BLAS's rate, where the im2col chunks put several samples into one GEMM; channels-last
#: also needs `MIN_PIXELS_LAST` pixels per plane. Sweep on the 2-core test machine, 3x3
#: "same" convs with C = O and ~1.85 GFLOP per call (ms, channels-first / -last, flat taps
#: against im2col): 64x32x16x16 (0.5 Mflop per tap GEMM) 15.2/15.3 against 3.8/3.1,
#: 63x32x40x40 (3.3) 25.7/23.6 against 22.1/16.7, 32x32x56x56 (6.4) 14.5/13.1 against
#: 20.2/15.7, 24x64x32x32 (8.4) 9.0/9.0 against 12.6/10.6, 24x128x16x16 (8.4, 256 pixels)
#: 10.2/9.5 against 10.2/8.1, 11x128x24x24 (19, 576 pixels) 8.8/8.3 against 10.6/8.8
MIN_GEMM_FLOPS = 6_000_000
MIN_PIXELS_LAST = 512


def applies(geometry: Geometry, groups: int, x: np.ndarray, form: str, cdtype, col0: int,
            pix, outputs: int) -> bool:
    """True for one group of at least `MIN_CHANNELS` input channels, 2-D, unit strides, more
    than one tap, an output row as wide as the input's (``pix[1] == W``, first tap at column
    ``col0 <= 0``) and many times wider than its border columns, tap GEMMs of at least
    `MIN_GEMM_FLOPS` (``outputs`` output channels), a source ``x`` in
    ``cdtype`` whose pixels are one flat run per channel (channels-first ``(n, c, H, W)``)
    or per pixel (channels-last ``(n, H, W, c)``), and a BLAS `gemm` for ``cdtype``."""
    cdtype = np.dtype(cdtype)
    c, width = (x.shape[1], x.shape[3]) if form == "A" else (x.shape[3], x.shape[2])
    if (
        groups != 1
        or c < MIN_CHANNELS
        or (math.prod(geometry.kernel_sizes) > MAX_TAPS
            and (form != "A" or c < MANY_TAPS_CHANNELS))
        or geometry.n_spatial != 2
        or geometry.strides != (1, 1)
        or geometry.kernel_sizes == (1, 1)
        or x.dtype != cdtype
        or not available(cdtype)
    ):
        return False
    border = (geometry.kernel_sizes[1] - 1) * geometry.dilations[1]
    return (
        pix[1] == width
        and -border <= col0 <= 0
        and width >= MIN_WIDTH_PER_BORDER * border
        and pix[0] * pix[1] >= MIN_PIXELS
        and 2 * pix[0] * pix[1] * c * outputs >= MIN_GEMM_FLOPS
        and (form == "A" or pix[0] * pix[1] >= MIN_PIXELS_LAST)
    )


def run_taps_flat(x: np.ndarray, row0: int, col0: int, wmat: np.ndarray, geometry: Geometry,
                  form: str, tgt, cdtype, pix) -> np.ndarray | None:
    """The convolution of the unpadded source ``x`` (``(n, c, H, W)`` for form ``"A"``,
    channels-first; ``(n, H, W, c)`` for ``"B"``) whose pixel ``(row0, col0)`` (may lie
    outside it: zero padding) is the first tap of the first output, with the im2col kernel
    ``wmat`` (``(1, O, c*K)`` / ``(1, K*c, O)``); ``pix`` are the output sizes, ``pix[1]``
    the input's width (`applies` must hold). The result (``tgt`` if given) is in the im2col
    result order (``N 1 O H W`` / ``N H W 1 O``); ``None`` if the arrays do not have flat
    pixel runs."""
    first = form == "A"
    kh, kw = geometry.kernel_sizes
    dh, dw = geometry.dilations
    if first:
        n, c, height, width = x.shape
        o = wmat.shape[1]
        w4 = wmat[0].reshape(o, c, kh, kw)
        wtaps = np.ascontiguousarray(w4.transpose(2, 3, 0, 1))  # (kh, kw, O, c)
        xf = reshape_view(x, (n, c, height * width))
    else:
        n, height, width, c = x.shape
        o = wmat.shape[2]
        w4 = wmat[0].reshape(kh, kw, c, o)
        wtaps = np.ascontiguousarray(w4)  # (kh, kw, c, O)
        xf = reshape_view(x, (n, height * width, c))
    rows_out = pix[0]
    shape = (n, 1, o, rows_out, width) if first else (n, rows_out, width, 1, o)
    res = tgt if tgt is not None else np.empty(shape, dtype=cdtype)
    rf = reshape_view(res[:, 0] if first else res[:, :, :, 0],
               (n, o, rows_out * width) if first else (n, rows_out * width, o))
    if xf is None or rf is None or not (blasable(xf) and blasable(rf)):
        return None
    rows = max(1, CHUNK_BYTES // (width * (c + o) * np.dtype(cdtype).itemsize))
    if n == 1:
        rows = min(rows, -(-rows_out // 2))
    rows = -(-rows_out // -(-rows_out // min(rows, rows_out)))  # equal runs
    chunks = [(s, r, min(r + rows, rows_out)) for s in range(n) for r in range(0, rows_out, rows)]
    size = height * width
    shifts = [col0 + j * dw for j in range(kw)]  # input column - output column, per j
    # kernel columns by shift, the shift 0 first (its taps never wrap)
    by_shift = {}
    for j in sorted(range(kw), key=lambda j: shifts[j] != 0):
        by_shift.setdefault(shifts[j], []).append(j)

    def part(items):
        for s, r0, r1 in items:
            out = res[s, 0, :, r0:r1] if first else res[s, r0:r1, :, 0]
            # the first GEMM writes: a tap of shift 0 that reads inside the input for every
            # row of the chunk, if there is one; else the chunk starts from zeros
            start = next(((i, j) for j in by_shift.get(0, ()) for i in range(kh)
                          if _covers_rows(row0 + i * dh, r0, r1, height)), None)
            if start is None:
                out[...] = 0
            accumulate = start is None
            for shift, js in by_shift.items():
                taps = [(i, j) for j in js for i in range(kh)]
                if start in taps:
                    taps.remove(start)
                    taps.insert(0, start)
                # where this shift wraps, its taps read the neighbouring row instead of the
                # zero padding: keep those columns' values and put them back afterwards
                # (the taps' true contribution there is zero)
                wrong = slice(0, min(-shift, width)) if shift < 0 else slice(
                    max(width - shift, 0), width)
                kept = (out[:, :, wrong] if first else out[:, wrong]).copy() if shift else None
                for i, j in taps:
                    _tap(xf[s], rf[s], wtaps[i, j], row0 + i * dh, shift, r0, r1, width, size,
                         first, accumulate)
                    accumulate = True
                if kept is not None:
                    if first:
                        out[:, :, wrong] = kept
                    else:
                        out[:, wrong] = kept

    blas.pipelines(part, chunks)
    return res


def _tap(xf, rf, wtap, top, shift, r0, r1, width, size, first, accumulate) -> None:
    """One tap's GEMM over the flat output positions of rows ``[r0, r1)`` whose input row
    (``top`` + the output row) lies inside the input and whose flat source lies inside it."""
    h0, h1 = max(r0, -top), min(r1, size // width - top)
    flat = top * width + shift
    a, b = max(h0 * width, -flat), min(h1 * width, size - flat)
    if a >= b:
        return
    if first:
        done = gemm(wtap, xf[:, a + flat : b + flat], rf[:, a:b], accumulate)
    else:
        done = gemm(xf[a + flat : b + flat], wtap, rf[a:b], accumulate)
    if not done:
        raise RuntimeError("taps_flat: BLAS declined a GEMM that applies() allowed")


def _covers_rows(top: int, r0: int, r1: int, height: int) -> bool:
    """True if the tap whose output row 0 reads input row ``top`` reads inside the input for
    every output row in ``[r0, r1)``."""
    return top + r0 >= 0 and top + r1 <= height


def applies_batch(geometry: Geometry, groups: int, x: np.ndarray, cdtype, row0: int,
                  col0: int, pix, outputs: int) -> bool:
    """True for a channels-last source ``x`` ``(n, H, W, c)`` of several samples whose output
    plane is the input's (``pix == (H, W)``: "same" padding both ways, first tap at ``(row0,
    col0)``, both ``<= 0``), one group of at least `MIN_CHANNELS` channels, unit strides,
    2 to `MAX_TAPS` taps, a BLAS `gemm` for ``cdtype``, and planes too small for
    `applies`: their taps run over all the samples of a chunk at once (`run_taps_batch`)."""
    cdtype = np.dtype(cdtype)
    n, height, width, c = x.shape
    if (
        not _BATCH
        or n < 2
        or groups != 1
        or not MIN_CHANNELS <= c <= BATCH_MAX_CHANNELS
        or not 1 < math.prod(geometry.kernel_sizes) <= MAX_TAPS
        or geometry.n_spatial != 2
        or geometry.strides != (1, 1)
        or x.dtype != cdtype
        or not available(cdtype)
        or tuple(pix) != (height, width)
        or height * width > BATCH_MAX_PIXELS
    ):
        return False
    borders = [(k - 1) * d for k, d in zip(geometry.kernel_sizes, geometry.dilations,
                                            strict=True)]
    return (-borders[0] <= row0 <= 0 and -borders[1] <= col0 <= 0
            and height >= BATCH_SIZE_PER_BORDER * borders[0]
            and width >= BATCH_SIZE_PER_BORDER * borders[1]
            and 2 * n * height * width * c * outputs >= 2 * MIN_GEMM_FLOPS)


#: planes of at most this many pixels that `applies` turns down take the batch form, with
#: at most `BATCH_MAX_CHANNELS` channels (more: the im2col GEMM's long K pays for its copy;
#: the late 3x3 of BENCH.md, 512 channels, 6.8 -> 7.0 ms batched) and at least
#: `BATCH_SIZE_PER_BORDER` times as high and wide as their border rows / columns. 7-round
#: A/Bs against the im2col chunks (3x3 "same", channels-last, 2-core test machine, ms):
#: 8x32x32x32 1.53 -> 1.26, 8x16x16x64 1.32 -> 1.09, 64x8x8x64 2.09 -> 1.75, 24x16x16x128
#: 8.58 -> 7.07, 8x14x14x128 2.50 -> 2.18, 8x12x12x96 dilation 2 1.34 -> 1.14; 8x8x8x64
#: and 16x16x16x32 equal, 32x16x16x32 -> 64 2.09 -> 2.19. Planes the per-sample taps take
#: stay there (the dilated case of BENCH.md, 4x32x32x128, 4.65 -> 4.69 batched)
BATCH_MAX_PIXELS = 1024
BATCH_MAX_CHANNELS = 256
BATCH_SIZE_PER_BORDER = 3
_BATCH = True


def run_taps_batch(x: np.ndarray, row0: int, col0: int, wmat: np.ndarray,
                   geometry: Geometry, tgt, cdtype) -> np.ndarray | None:
    """`run_taps_flat` for small planes, channels-last (`applies_batch` must hold): one
    accumulating GEMM per tap over the flat pixels of several whole samples at once.

    With the output plane the size of the input's, output pixel ``q`` (flat over samples,
    rows and columns) and the input pixel tap ``(i, j)`` reads sit ``(row0 + i * dh) * W +
    col0 + j * dw`` apart in every sample, so each tap is one GEMM over a chunk's samples.
    Where the tap falls in the padding (the first or last rows or columns of each sample) it
    reads a neighbouring row or sample instead: those output cells are kept before the tap's
    GEMM and put back after it (the tap adds nothing there). The chunks are runs of samples,
    one pipeline per thread on single-threaded BLAS. Returns the result in the im2col
    order ``(n, H, W, 1, O)`` (``tgt`` if given), or ``None`` if the arrays do not have flat
    pixel runs."""
    n, height, width, c = x.shape
    kh, kw = geometry.kernel_sizes
    dh, dw = geometry.dilations
    o = wmat.shape[2]
    wtaps = np.ascontiguousarray(wmat[0].reshape(kh, kw, c, o))
    plane = height * width
    res = tgt if tgt is not None else np.empty((n, height, width, 1, o), dtype=cdtype)
    xf = reshape_view(x, (n * plane, c))
    rf = reshape_view(res[:, :, :, 0], (n * plane, o))
    if xf is None or rf is None or not (blasable(xf) and blasable(rf)):
        return None
    per_sample = plane * (c + o) * np.dtype(cdtype).itemsize
    # at least two runs, whatever the thread count (the split, and so the sums, must not
    # depend on it), as many as a multiple of two
    step = balanced_run(n, CHUNK_BYTES // per_sample, 2)
    chunks = [(s, min(n, s + step)) for s in range(0, n, step)]
    # (row offset, column offset, weights) per tap that reads inside the plane somewhere;
    # a tap at offset (0, 0) first: it reads inside for every output cell and writes
    taps = [(row0 + i * dh, col0 + j * dw, wtaps[i, j]) for i in range(kh) for j in range(kw)
            if abs(row0 + i * dh) < height and abs(col0 + j * dw) < width]
    taps.sort(key=lambda t: (t[0], t[1]) != (0, 0))
    total = n * plane

    def wrong(offset: int, size: int) -> slice | None:
        """The output rows (columns) whose tap at ``offset`` falls outside ``size``."""
        if offset == 0:
            return None
        return slice(0, -offset) if offset < 0 else slice(size - offset, size)

    def part(items):
        for s0, s1 in items:
            out = res[s0:s1, :, :, 0]  # (samples, H, W, O)
            q0, q1 = s0 * plane, s1 * plane
            accumulate = bool(taps) and (taps[0][0], taps[0][1]) != (0, 0)
            if accumulate or not taps:
                rf[q0:q1] = 0
            for top, left, wt in taps:
                rows, cols = wrong(top, height), wrong(left, width)
                kept_rows = out[:, rows].copy() if rows is not None else None
                kept_cols = out[:, :, cols].copy() if cols is not None else None
                shift = top * width + left
                a, b = max(q0, -shift), min(q1, total - shift)
                if a < b and not gemm(xf[a + shift : b + shift], wt, rf[a:b], accumulate):
                    raise RuntimeError("taps_flat: BLAS declined a GEMM that applies() allowed")
                accumulate = True
                if kept_rows is not None:
                    out[:, rows] = kept_rows
                if kept_cols is not None:
                    out[:, :, cols] = kept_cols

    blas.pipelines(part, chunks)
    return res
