"""Channels-first 1-D convolution with unit stride as one accumulating GEMM per kernel tap.

For a 1-D input ``(C, L)`` and unit stride, the input positions tap ``t`` reads for a run of
outputs are one contiguous column range of the input, so ``out[:, a:b] += W_t (O, C) @ x[:,
a + shift_t : b + shift_t]`` is a GEMM on views: no column copy, no padded copy (the output
positions whose tap falls in the padding are left out of that tap's GEMM), each product
added into the output by BLAS itself (`gemm.gemm`). On the 1-D case of BENCH.md (16x32x8000
-> 64, k7) the whole convolution went from 23.9 to 19.8-20.4 ms (2-core test machine, A/B in
one process); for one sample on one thread the seven GEMMs took 2.09 ms against 2.22 ms for
the im2col GEMM alone and 0.35 ms more for its column copy. Channels-last rows would need a
matrix with overlapping rows; the per-tap GEMMs there were slower (2.35 against 2.25 ms).

Chunks (sample, run of outputs) run as one pipeline per thread on single-threaded BLAS.
"""

from __future__ import annotations

import numpy as np

from . import blas
from .gemm import available, gemm
from .geometry import Geometry

__all__ = ["CHUNK_BYTES", "applies", "run_taps_1d"]

#: target bytes of one chunk's input and output columns (1-D case of BENCH.md, 7-round A/B:
#: 0.5 / 1 / 2 / 4 MiB took 25.3 / 20.9 / 19.8 / 20.7 ms; each GEMM call costs ~7 us of
#: Python and ctypes, so small runs lose). Measured again once the other chunks had grown
#: (9-round A/B, same machine): 2 MiB 25.5 ms, 4 MiB 24.3 (8 MiB 24.2 in a 7-round one)
CHUNK_BYTES = 4 << 20
#: a tap's GEMM (O by C by the sample's outputs) does at least `MIN_GEMM_FLOPS` flops over at
#: least `MIN_RUN` outputs, or at least `MIN_GEMM_FLOPS_SHORT`: each call costs ~7 us and
#: short or thin products run far below BLAS's rate, where the im2col chunks put several
#: samples into one GEMM. Sweep on the 2-core test machine, k7 "same", C = O, ~3.7 GFLOP per
#: call (ms, taps against im2col; Mflop per tap GEMM in brackets): 256x16x2000 (1.0) 59.7
#: against 33.9, 125x64x512 (4.2) 34.2 against 27.8, 125x128x128 (4.2) 32.3 against 18.8,
#: 128x16x8000 (4.1) 59.9 against 89.7, 128x32x2000 (4.1) 39.0 against 40.4, 31x128x512
#: (16.8) 17.4 against 18.9, 32x64x2000 (16.4) 19.3 against 23.1
MIN_GEMM_FLOPS = 4_000_000
MIN_RUN = 1000
MIN_GEMM_FLOPS_SHORT = 16_000_000


def applies(geometry: Geometry, groups: int, x: np.ndarray, cdtype, outputs: int,
            n_out: int) -> bool:
    """True for one group, 1-D, unit stride, more than one tap, a source ``x`` ``(n, c,
    W)`` in ``cdtype`` with unit stride along ``W``, tap GEMMs (``outputs`` channels by
    ``c`` by ``n_out`` positions) large enough (`MIN_GEMM_FLOPS`), and a BLAS `gemm` for
    ``cdtype``."""
    cdtype = np.dtype(cdtype)
    flops = 2 * outputs * x.shape[1] * n_out
    return (
        flops >= (MIN_GEMM_FLOPS if n_out >= MIN_RUN else MIN_GEMM_FLOPS_SHORT)
        and groups == 1
        and geometry.n_spatial == 1
        and geometry.strides[0] == 1
        and geometry.kernel_sizes[0] > 1
        and x.dtype == cdtype
        and x.strides[-1] == cdtype.itemsize
        and available(cdtype)
    )


def _valid(n: int, start: int, size: int) -> tuple[int, int]:
    """``[a, b)``: the ``p`` in ``[0, n)`` with ``0 <= start + p < size``."""
    a = min(n, max(0, -start))
    return a, max(a, min(n, size - start))


def run_taps_1d(x: np.ndarray, col0: int, wmat: np.ndarray, geometry: Geometry, tgt, cdtype,
                n_out: int) -> np.ndarray:
    """``(n, 1, O, n_out)`` (``tgt`` if given): the convolution of the source ``x`` ``(n, c,
    W)``, whose column ``col0`` (may lie outside it: zero padding) is the first tap of the
    first output, with the im2col kernel ``wmat`` ``(1, O, c * K)`` (`applies` must hold)."""
    n, c, width = x.shape
    kw, d = geometry.kernel_sizes[0], geometry.dilations[0]
    o = wmat.shape[1]
    wtaps = np.ascontiguousarray(wmat[0].reshape(o, c, kw).transpose(2, 0, 1))  # (K, O, c)
    res = tgt if tgt is not None else np.empty((n, 1, o, n_out), dtype=cdtype)
    run = max(64, CHUNK_BYTES // ((c + o) * np.dtype(cdtype).itemsize))
    run = -(-n_out // -(-n_out // run))  # equal runs
    chunks = [(s, lo, min(lo + run, n_out)) for s in range(n) for lo in range(0, n_out, run)]

    def part(items):
        for s, lo, hi in items:
            target = res[s, 0, :, lo:hi]
            spans = [_valid(hi - lo, col0 + lo + t * d, width) for t in range(kw)]
            whole = [t for t, span in enumerate(spans) if span == (0, hi - lo)]
            if whole:
                order = [whole[0]] + [t for t in range(kw) if t != whole[0]]
            else:  # no tap covers every output of the run: start from zeros
                target[...] = 0
                order = list(range(kw))
            for i, t in enumerate(order):
                a, b = spans[t]
                if a >= b:
                    continue
                first = col0 + lo + a + t * d
                # the first GEMM writes (over zeros, when no tap covers the whole run)
                done = gemm(wtaps[t], x[s, :, first : first + b - a], target[:, a:b],
                            accumulate=bool(i))
                if not done:
                    raise RuntimeError("taps_1d: BLAS declined a GEMM that applies() allowed")

    blas.pipelines(part, chunks)
    return res
