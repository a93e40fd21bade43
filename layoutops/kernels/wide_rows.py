"""2-D convolution with unit row stride: columns of the ``kw`` kernel offsets only, one GEMM
per kernel row.

The ``im2col`` columns of a 2-D convolution hold every kernel offset ``(kh, kw)`` of every
output pixel: ``KH * KW`` copies of the input. With unit stride along the rows, the ``kh``
offsets only move the window down by whole input rows, so the columns need the ``kw``
offsets alone, built once for every input row of the chunk::

    columns[(r, w), (kw, c)] = x[r, w * sw + kw * dw, c]             (KW copies, not KH * KW)
    out[(h, w), :] = sum_kh columns[(h + kh * dh, w), :] @ W_kh     (KH GEMMs on row slices)

(channels-first is the transpose: ``W_kh (O, c * KW) @`` columns with rows ``(c, kw)`` of
``W_out``-value runs.) The columns cover ``(R + halo) / R`` times the chunk's output rows,
where ``halo = (KH - 1) * dh`` rows above each chunk of ``R`` rows, so this runs only when a
chunk holds at least `MIN_ROWS_PER_HALO` rows per halo row, and the chunk's columns fit the
per-thread scratch. The ``KH`` GEMMs add into the output (`gemm.gemm_sum`): no product
buffer, no addition passes (an earlier version ran one ``KH * O``-wide GEMM and shifted
additions: 10.0 -> 9.1 ms channels-last, 9.7 -> 9.5 channels-first). On the resnet
3x3 case of BENCH.md (8x64x56x56 -> 64, 2-core test machine, A/B in one process) the im2col
chunks took 11.2/10.0 ms (channels-first/-last), this path 8.9/9.1 ms.

Chunks are ``(sample, row range)`` pairs run as one pipeline per thread on single-threaded
BLAS (`blas.pipelines`), like the ``im2col`` chunks.
"""

from __future__ import annotations

import numpy as np

from . import blas
from .gemm import gemm_sum
from .geometry import Geometry
from .scratch import MAX_CACHED_BYTES, scratch

__all__ = ["rows_per_chunk", "run_wide_rows"]

#: a chunk holds at least this many output rows per halo row (the GEMMs' extra work is at
#: most 1/8 of the chunk's). With the accumulating GEMMs, A/B against the im2col chunks on
#: the 2-core test machine (channels-first / -last): 8x128x28x28 3x3 (14 rows per halo row)
#: 9.2/7.7 -> 7.9/7.4 ms, the dilated case of BENCH.md (8) 6.0/5.4 -> 6.0/4.8 ms, but
#: 8x256x14x14 (7) 8.1/7.5 -> 8.7/7.4 ms and the late 3x3 (3.5) 8.9/7.7 -> 14.9/9.7 ms
MIN_ROWS_PER_HALO = 8
#: target bytes of one chunk's columns (whole 56-row samples of the resnet 3x3 case, 2.5 MB,
#: measured faster than 28-row halves: 8.8 against 9.9 ms channels-first)
CHUNK_BYTES = 4 << 20
#: a chunk's GEMMs (one per kernel row: chunk pixels by KW * C by O) do at least this many
#: flops each (channels-first, channels-last): small products run far below BLAS's rate and
#: each call costs ~7 us, where the im2col chunks put several samples into one GEMM. Sweep
#: on the 2-core test machine, 3x3 "same" convs with C = O and ~1.85 GFLOP per call (ms,
#: channels-first / -last, wide rows against im2col): 64x16x56x56 (4.8 Mflop per GEMM)
#: 16.5/16.9 against 16.8/12.6, 64x32x32x32 (6.3) 15.6/16.3 against 14.1/11.2, 63x32x40x40
#: (9.8) 18.4/18.1 against 21.4/15.6, 44x64x24x24 (14.2) 12.7/12.9 against 13.6/11.1,
#: 24x64x32x32 (25) 11.6/10.4 against 12.5/10.7, 4x128x40x40 (157) 8.9/8.0 against 10.0/8.5
MIN_GEMM_FLOPS = {"A": 8_000_000, "B": 24_000_000}


def rows_per_chunk(geometry: Geometry, groups: int, c: int, pix, itemsize: int,
                   outputs: int, form: str):
    """Output rows per chunk for a tile with output sizes ``pix`` (``c`` input channels per
    group, ``outputs`` output channels; ``form`` ``"A"`` channels-first, ``"B"``
    channels-last), or ``None`` if the wide row GEMMs do not apply: one group, 2-D, unit row
    stride, more than one kernel row, at least `MIN_ROWS_PER_HALO` rows per halo row in a
    chunk whose columns fit the per-thread scratch, GEMMs of at least `MIN_GEMM_FLOPS`."""
    if (
        groups != 1
        or geometry.n_spatial != 2
        or geometry.strides[0] != 1
        or geometry.kernel_sizes[0] < 2
    ):
        return None
    kh, kw = geometry.kernel_sizes
    halo = (kh - 1) * geometry.dilations[0]
    out_rows = pix[0]
    row_bytes = pix[1] * kw * c * itemsize
    least = MIN_ROWS_PER_HALO * halo
    if out_rows < least:
        return None
    rows = min(out_rows, max(least, CHUNK_BYTES // row_bytes - halo))
    rows = -(-out_rows // -(-out_rows // rows))  # equal chunks
    if (rows + halo) * row_bytes > MAX_CACHED_BYTES:
        return None
    if 2 * rows * pix[1] * kw * c * outputs < MIN_GEMM_FLOPS[form]:
        return None
    return rows


def run_wide_rows(rows_of, n: int, wmat, geometry: Geometry, form: str, tgt, cdtype, pix,
                  rows: int):
    """The tile's convolution by wide row GEMMs in chunks of ``rows`` output rows
    (`rows_per_chunk`).

    ``rows_of(s, r, h)`` gives ``(x, row0, col0)`` for the ``h`` input rows from the one of
    output row ``r`` of sample ``s`` of the tile: the source ``x`` (``(c, H, W)`` for form
    ``"A"``, channels-first; ``(H, W, c)`` for form ``"B"``), the row of ``x`` the first of
    them is and the column of the first window's first tap (both may lie outside ``x``:
    zero padding is applied while the columns are copied). It is called on the chunk's
    thread. ``wmat`` is the ``im2col`` kernel (``(1, O, c*K)`` / ``(1,
    K*c, O)``). The result (``tgt`` if given) is in the im2col result order (``N 1 O H W`` /
    ``N H W 1 O``).
    """
    o = wmat.shape[1] if form == "A" else wmat.shape[2]
    shape = (n, 1, o, *pix) if form == "A" else (n, *pix, 1, o)
    res = tgt if tgt is not None else np.empty(shape, dtype=cdtype)
    chunks = [(s, r, min(r + rows, pix[0])) for s in range(n) for r in range(0, pix[0], rows)]
    blas.pipelines(_part(rows_of, wmat, geometry, form, res, pix, cdtype), chunks)
    return res


def _part(rows_of, wmat, geometry, form, res, pix, cdtype):
    """The chunk runner: per chunk, the columns of its rows, then per row offset ``j`` a GEMM
    with ``W_j`` on the columns shifted by ``j * dh`` rows, adding into the chunk's output
    rows. Channels-last: columns ``(rows, W_out, KW * c)``, ``columns_j @ W_j (KW * c, O)``
    into ``res[s, rows]`` ``(rows * W_out, O)``; channels-first: columns ``(c, KW, rows,
    W_out)``, ``W_j (O, c * KW) @ columns_j`` into ``res[s, 0, :, rows]`` ``(O, rows *
    W_out)``."""
    kh, kw = geometry.kernel_sizes
    dh, dw = geometry.dilations
    sw = geometry.strides[1]
    wo = pix[1]
    step = dh * wo  # column positions per row offset
    first = form == "A"
    if first:
        o, c = wmat.shape[1], wmat.shape[2] // (kh * kw)
        wtaps = np.ascontiguousarray(
            wmat[0].reshape(o, c, kh, kw).transpose(2, 0, 1, 3)
        ).reshape(kh, o, c * kw)
    else:
        o, c = wmat.shape[2], wmat.shape[1] // (kh * kw)
        wtaps = np.ascontiguousarray(wmat[0].reshape(kh, kw * c, o))
    halo = (kh - 1) * dh

    def part(items):
        for s, r0, r1 in items:
            hb = r1 - r0 + halo
            x, row0, col0 = rows_of(s, r0, hb)
            cols = scratch("wide rows columns", hb * wo * kw * c, cdtype)
            m = (r1 - r0) * wo
            if first:
                _fill_a(cols.reshape(c, kw, hb, wo), x, row0, col0, sw, dw)
                cols = cols.reshape(c * kw, hb * wo)
                terms = [(wtaps[j], cols[:, j * step : j * step + m]) for j in range(kh)]
                _sum_into(res[s, 0, :, r0:r1], (o, m), terms)
            else:
                _fill_b(cols.reshape(hb, wo, kw, c), x, row0, col0, sw, dw)
                cols = cols.reshape(hb * wo, kw * c)
                terms = [(cols[j * step : j * step + m], wtaps[j]) for j in range(kh)]
                _sum_into(res[s, r0:r1, :, 0], (m, o), terms)

    return part


def _sum_into(target: np.ndarray, shape, terms) -> None:
    """``target`` (seen as the matrix ``shape``) ``= sum(a @ b for a, b in terms)``
    (`gemm.gemm_sum`); through a temporary when ``target`` is no such matrix view."""
    try:
        flat = np.reshape(target, shape, copy=False)
    except ValueError:
        flat = None
    work = flat if flat is not None else np.empty(shape, target.dtype)
    gemm_sum(terms, work)
    if flat is None:
        target[...] = work.reshape(target.shape)


# -- columns ----------------------------------------------------------------------------------


def _valid(n: int, start: int, step: int, size: int) -> tuple[int, int]:
    """``[a, b)``: the positions ``p`` in ``[0, n)`` with ``0 <= start + p * step < size``."""
    a = 0 if start >= 0 else (-start + step - 1) // step
    b = 0 if start > size - 1 else min(n, (size - 1 - start) // step + 1)
    return min(a, n), max(min(a, n), b)


def _fill_b(cols, x, row0: int, col0: int, sw: int, dw: int) -> None:
    """Channels-last columns ``cols (h, W_out, KW, c)[j, w, k] = x[row0 + j, col0 + w * sw +
    k * dw]`` from the source ``x (H, W, c)``, zero where that falls outside ``x`` (the
    zero padding, applied here: no padded copy of the input). Windows wholly inside move
    each kernel row's ``KW * c`` values as one opaque item when they are contiguous."""
    h, wo, kw, c = cols.shape
    ja, jb = _valid(h, row0, 1, x.shape[0])
    cols[:ja] = 0
    cols[jb:] = 0
    if ja == jb:
        return
    rows = x[row0 + ja : row0 + jb]
    dst = cols[ja:jb]
    width = x.shape[1]
    # the outputs whose every tap is inside (the taps move right with k)
    ia = _valid(wo, col0, sw, width)[0]
    ib = _valid(wo, col0 + (kw - 1) * dw, sw, width)[1]
    border = [(0, wo)]
    if ia < ib:
        border = [(0, ia), (ib, wo)]
        start = col0 + ia * sw
        st = rows.strides
        itm = rows.itemsize
        if dw == 1 and st[2] == itm and st[1] == c * itm and rows.dtype == cols.dtype:
            item = np.dtype((np.void, kw * c * itm))
            src = np.lib.stride_tricks.as_strided(
                rows[:, start:], (rows.shape[0], ib - ia, kw * c), (st[0], sw * st[1], itm),
                writeable=False,
            ).view(item)[..., 0]
            flat = np.reshape(dst[:, ia:ib], (rows.shape[0], ib - ia, kw * c), copy=False)
            flat.view(item)[..., 0] = src
        else:
            dst[:, ia:ib] = np.lib.stride_tricks.as_strided(
                rows[:, start:], (rows.shape[0], ib - ia, kw, c),
                (st[0], sw * st[1], dw * st[1], st[2]), writeable=False,
            )
    for p, q in border:
        for k in range(kw):
            a, b = _valid(wo, col0 + k * dw, sw, width)
            a, b = max(a, p), min(b, q)
            if a >= b:
                dst[:, p:q, k] = 0
                continue
            dst[:, p:a, k] = 0
            dst[:, b:q, k] = 0
            first = col0 + a * sw + k * dw
            dst[:, a:b, k] = rows[:, first : first + (b - a - 1) * sw + 1 : sw]


def _fill_a(cols, x, row0: int, col0: int, sw: int, dw: int) -> None:
    """Channels-first columns ``cols (c, KW, h, W_out)[:, k, j, w] = x[:, row0 + j, col0 + w
    * sw + k * dw]`` from the source ``x (c, H, W)``, zero outside ``x``. With unit stride
    and every tap inside, each window row's ``W_out`` values move as one opaque item."""
    c, kw, h, wo = cols.shape
    ja, jb = _valid(h, row0, 1, x.shape[1])
    cols[:, :, :ja] = 0
    cols[:, :, jb:] = 0
    if ja == jb:
        return
    rows = x[:, row0 + ja : row0 + jb]
    dst = cols[:, :, ja:jb]
    width = x.shape[2]
    spans = [_valid(wo, col0 + k * dw, sw, width) for k in range(kw)]
    st = rows.strides
    itm = rows.itemsize
    if (
        sw == 1
        and all(span == (0, wo) for span in spans)
        and st[2] == itm
        and rows.dtype == cols.dtype
    ):
        item = np.dtype((np.void, wo * itm))
        runs = np.lib.stride_tricks.as_strided(
            rows[:, :, col0:], (c, rows.shape[1], (kw - 1) * dw + 1, wo), (*st[:2], itm, itm),
            writeable=False,
        ).view(item)[..., 0]  # (c, R, starts)
        dst.view(item)[..., 0][...] = runs[:, :, ::dw].transpose(0, 2, 1)
        return
    for k, (a, b) in enumerate(spans):
        dst[:, k, :, :a] = 0
        dst[:, k, :, b:] = 0
        if a < b:
            first = col0 + a * sw + k * dw
            dst[:, k, :, a:b] = rows[:, :, first : first + (b - a - 1) * sw + 1 : sw]
