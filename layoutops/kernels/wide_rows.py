"""2-D convolution with unit row stride as one wide GEMM per chunk of output rows.

The ``im2col`` columns of a 2-D convolution hold every kernel offset ``(kh, kw)`` of every
output pixel: ``KH * KW`` copies of the input. With unit stride along the rows, the ``kh``
offsets only move the window down by whole input rows, so the columns need the ``kw``
offsets alone, built once for every input row of the chunk::

    columns[(r, w), (kw, c)] = x[r, w * sw + kw * dw, c]             (KW copies, not KH * KW)
    Y = columns @ [W_0 | W_1 | ... | W_{KH-1}]                      (one GEMM, KH * O wide)
    out[(h, w), o] = sum_kh Y[(h + kh * dh, w), kh * O + o]          (KH - 1 shifted adds)

(channels-first is the transpose: ``Y = [W_0; ...] @ columns`` with rows ``(c, kw)`` of
``W_out``-value runs.) The GEMM computes ``(R + halo) / R`` times the output rows' work, where
``halo = (KH - 1) * dh`` rows above each chunk of ``R`` rows, so this runs only when a chunk
holds at least `MIN_ROWS_PER_HALO` rows per halo row, and the chunk's buffers fit the
per-thread scratch. On the resnet 3x3 case of BENCH.md (8x64x56x56 -> 64, 2-core test
machine, A/B in one process) a prototype measured 11.4 -> 8.8 ms channels-first and 10.3 ->
8.9 ms channels-last; the dilated case (32 rows, halo 4) and the late 3x3 (7 rows) were
slower, which the row condition excludes.

Chunks are ``(sample, row range)`` pairs run as one pipeline per thread on single-threaded
BLAS (`blas.pipelines`), like the ``im2col`` chunks.
"""

from __future__ import annotations

import numpy as np

from . import blas
from .geometry import Geometry
from .scratch import MAX_CACHED_BYTES, scratch

__all__ = ["rows_per_chunk", "run_wide_rows"]

#: a chunk holds at least this many output rows per halo row (the GEMM's extra work is at
#: most 1/16 of the chunk's)
MIN_ROWS_PER_HALO = 16
#: target bytes of one chunk's columns (whole 56-row samples of the resnet 3x3 case, 2.5 MB,
#: measured faster than 28-row halves: 8.8 against 9.9 ms channels-first)
CHUNK_BYTES = 4 << 20


def rows_per_chunk(geometry: Geometry, groups: int, c: int, o: int, pix, itemsize: int):
    """Output rows per chunk for a tile with output sizes ``pix`` (``c`` input and ``o``
    output channels per group), or ``None`` if the wide row GEMMs do not apply: one group,
    2-D, unit row stride, more than one kernel row, at least `MIN_ROWS_PER_HALO` rows per
    halo row in a chunk whose buffers fit the per-thread scratch."""
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
    y_row_bytes = pix[1] * kh * o * itemsize
    least = MIN_ROWS_PER_HALO * halo
    if out_rows < least:
        return None
    rows = min(out_rows, max(least, CHUNK_BYTES // row_bytes - halo))
    rows = -(-out_rows // -(-out_rows // rows))  # equal chunks
    if (rows + halo) * max(row_bytes, y_row_bytes) > MAX_CACHED_BYTES:
        return None
    return rows


def run_wide_rows(rows_of, n: int, wmat, geometry: Geometry, form: str, tgt, cdtype, pix,
                  rows: int):
    """The tile's convolution by wide row GEMMs in chunks of ``rows`` output rows
    (`rows_per_chunk`).

    ``rows_of(s, r, h)`` gives the ``h`` padded input rows from the one of output row ``r``
    of sample ``s`` of the tile: ``(c, h, W_block)`` for form ``"A"`` (channels-first),
    ``(h, W_block, c)`` for form ``"B"``; it is called on the chunk's thread, so a chunk's
    padding is done there. ``wmat`` is the ``im2col`` kernel (``(1, O, c*K)`` / ``(1,
    K*c, O)``). The result (``tgt`` if given) is in the im2col result order (``N 1 O H W`` /
    ``N H W 1 O``).
    """
    o = wmat.shape[1] if form == "A" else wmat.shape[2]
    shape = (n, 1, o, *pix) if form == "A" else (n, *pix, 1, o)
    res = tgt if tgt is not None else np.empty(shape, dtype=cdtype)
    chunks = [(s, r, min(r + rows, pix[0])) for s in range(n) for r in range(0, pix[0], rows)]
    make = _part_a if form == "A" else _part_b
    blas.pipelines(make(rows_of, wmat, geometry, res, pix, cdtype), chunks)
    return res


def _part_b(rows_of, wmat, geometry, res, pix, cdtype):
    """Channels-last chunks: columns ``(rows, W_out, KW * c)``, ``Y = columns @ W_wide``
    ``(KW * c, KH * O)``, shifted adds into ``res[s, rows]`` ``(rows * W_out, O)``."""
    kh, kw = geometry.kernel_sizes
    dh, dw = geometry.dilations
    sw = geometry.strides[1]
    wo = pix[1]
    o = wmat.shape[2]
    c = wmat.shape[1] // (kh * kw)
    wwide = np.ascontiguousarray(
        wmat[0].reshape(kh, kw * c, o).transpose(1, 0, 2)
    ).reshape(kw * c, kh * o)
    halo = (kh - 1) * dh

    def part(items):
        for s, r0, r1 in items:
            hb = r1 - r0 + halo
            x = rows_of(s, r0, hb)  # (hb, Wb, c)
            st = x.strides
            itm = x.itemsize
            cols = scratch("wide rows columns", hb * wo * kw * c, cdtype)
            if dw == 1 and st[2] == itm and st[1] == c * itm and x.dtype == cdtype:
                # each window row's kw * c values are contiguous: one opaque item
                item = np.dtype((np.void, kw * c * itm))
                src = np.lib.stride_tricks.as_strided(
                    x, (hb, wo, kw * c), (st[0], sw * st[1], itm), writeable=False
                ).view(item)[..., 0]
                cols.view(item).reshape(hb, wo)[...] = src
            else:
                src = np.lib.stride_tricks.as_strided(
                    x, (hb, wo, kw, c), (st[0], sw * st[1], dw * st[1], st[2]), writeable=False
                )
                cols.reshape(hb, wo, kw, c)[...] = src
            y = scratch("wide rows product", hb * wo * kh * o, cdtype).reshape(hb * wo, kh * o)
            np.matmul(cols.reshape(hb * wo, kw * c), wwide, out=y)
            _shifted_sum_b(y, res[s, r0:r1, :, 0], kh, dh * wo, o)

    return part


def _shifted_sum_b(y, target, kh: int, step: int, o: int) -> None:
    """``target (R, W_out, O) = sum_j y[j * step + (R * W_out rows), j * O : (j + 1) * O]``
    (``target`` may be any strided view)."""
    m = target.shape[0] * target.shape[1]

    def term(j):
        return y[j * step : j * step + m, j * o : (j + 1) * o].reshape(target.shape)

    np.add(term(0), term(1), out=target)
    for j in range(2, kh):
        target += term(j)


def _part_a(rows_of, wmat, geometry, res, pix, cdtype):
    """Channels-first chunks: columns ``(c, KW, rows, W_out)``, ``Y = W_wide (KH * O, c *
    KW) @ columns``, shifted adds into ``res[s, 0, :, rows]`` ``(O, rows * W_out)``."""
    kh, kw = geometry.kernel_sizes
    dh, dw = geometry.dilations
    sw = geometry.strides[1]
    wo = pix[1]
    o = wmat.shape[1]
    c = wmat.shape[2] // (kh * kw)
    wwide = np.ascontiguousarray(
        wmat[0].reshape(o, c, kh, kw).transpose(2, 0, 1, 3)
    ).reshape(kh * o, c * kw)
    halo = (kh - 1) * dh

    def part(items):
        for s, r0, r1 in items:
            hb = r1 - r0 + halo
            x = rows_of(s, r0, hb)  # (c, hb, Wb)
            st = x.strides
            itm = x.itemsize
            cols = scratch("wide rows columns", c * kw * hb * wo, cdtype)
            if sw == 1 and st[2] == itm and x.dtype == cdtype:
                # stride 1 along the rows: each window's W_out values are one contiguous run
                item = np.dtype((np.void, wo * itm))
                starts = x.shape[2] - wo + 1
                runs = np.lib.stride_tricks.as_strided(
                    x, (c, hb, starts, wo), (st[0], st[1], itm, itm), writeable=False
                ).view(item)[..., 0]  # (c, hb, starts)
                src = runs[:, :, 0 : dw * (kw - 1) + 1 : dw].transpose(0, 2, 1)  # (c, KW, hb)
                cols.view(item).reshape(c, kw, hb)[...] = src
            else:
                src = np.lib.stride_tricks.as_strided(
                    x, (c, kw, hb, wo), (st[0], dw * st[2], st[1], sw * st[2]), writeable=False
                )
                cols.reshape(c, kw, hb, wo)[...] = src
            y = scratch("wide rows product", kh * o * hb * wo, cdtype).reshape(kh * o, hb * wo)
            np.matmul(wwide, cols.reshape(c * kw, hb * wo), out=y)
            _shifted_sum_a(y, res[s, 0, :, r0:r1], kh, dh * wo, o)

    return part


def _shifted_sum_a(y, target, kh: int, step: int, o: int) -> None:
    """``target (O, R, W_out) = sum_j y[j * O : (j + 1) * O, j * step + (R * W_out)]``
    (``target`` may be any strided view)."""
    m = target.shape[1] * target.shape[2]

    def term(j):
        return y[j * o : (j + 1) * o, j * step : j * step + m].reshape(target.shape)

    np.add(term(0), term(1), out=target)
    for j in range(2, kh):
        target += term(j)
