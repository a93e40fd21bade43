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


def applies(geometry: Geometry, groups: int, x: np.ndarray, cdtype) -> bool:
    """True for one group, 1-D, unit stride, more than one tap, a source ``x`` ``(n, c,
    W)`` in ``cdtype`` with unit stride along ``W``, and a BLAS `gemm` for ``cdtype``."""
    cdtype = np.dtype(cdtype)
    return (
        groups == 1
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
