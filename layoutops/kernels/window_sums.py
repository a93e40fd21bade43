"""Window sums of a channels-last pool as one ``np.einsum`` per thread.

When every window of a pool lies inside the input (no padding, no ceil_mode overhang) and
the innermost array axis is a non-spatial one with a long contiguous run (channels-last), a
strided view ``(..., out_i, k_i, ..., C)`` holds every window and ``np.einsum`` sums the
kernel axes in one pass over the input: each input value is read once per window that holds
it, the channel run is the inner loop, and no intermediate is written. The separable passes
of `layoutops.kernels.pool` (one ufunc call per kernel offset and axis, an intermediate per
axis) read and write more when the windows overlap little, and two threads running their
many short calls each wait for the GIL in turn. Measured on the 2-core test machine (2
threads, medians of interleaved runs), ms, einsum / separable: avg 2x2 stride 2 of
8x56x56x128 float32 (BENCH.md) 0.71 / 1.19; 3x3 stride 2 of 8x56x56x128 0.94 / 1.56, of
8x112x112x64 2.69 / 2.90; 1-D k4 s4 of 16x4000x64 0.78 / 2.21; but 3x3 stride 1 of
8x56x56x64 2.56 / 1.61 -- hence the bound on taps per window against the stride
(`MAX_TAPS_PER_STRIDE`) -- and short channel runs lose (`MIN_RUN`). Channels-first inputs sum short
strided runs in einsum's inner loop (10.8 ms for the BENCH.md case) and are left to the
separable passes.

The sum of each window runs in einsum's loop order, which depends on the view's strides,
not on how the output is split over the threads: results do not depend on the thread count.
"""

from __future__ import annotations

import math
import string

import numpy as np

from .geometry import Geometry
from .threads import get_num_threads, parallel

__all__ = ["window_sums"]

#: at least this many contiguous values along the innermost (non-spatial) axis: with
#: shorter runs the separable passes were as fast or faster (5-round A/Bs, avg 2x2 stride 2,
#: ms separable / einsum: 8x64x64x16 0.40 / 0.61, x32 0.64 / 0.73, x64 1.93 / 0.84;
#: 8x128x128x32 1.47 / 1.92; 3-D 2x16x32x32x32 0.69 / 0.80, x64 1.96 / 0.90)
MIN_RUN = 64
#: inputs of at least this many bytes at `MIN_RUN` values per run, proportionally fewer with
#: longer runs: small inputs stay in cache between the separable passes, and einsum's inner
#: loop costs more there (7-round A/Bs, avg 2x2 stride 2, us separable / einsum: 8x16x16x64
#: 102 / 112, 8x32x32x64 386 / 427, 8x46x46x64 652 / 607; 4x32x32x128 366 / 332,
#: 8x16x16x256 377 / 335)
MIN_BYTES = 4 << 20
#: windows of at most this many taps per output cell of stride (``prod(k) / prod(s)``)
MAX_TAPS_PER_STRIDE = 2.25
#: inputs smaller than this stay on the calling thread (a hand-off costs ~0.1 ms here)
PARALLEL_BYTES = 1 << 20


def applies(x: np.ndarray, axes, geom: Geometry) -> bool:
    """True if `window_sums` takes ``x``: float32/float64, every window inside the input,
    a channels-last memory order with a run of at least `MIN_RUN` values, large enough
    (`MIN_BYTES`), and few enough taps per stride.

    Examples
    --------
    >>> import numpy as np
    >>> from layoutops.kernels.geometry import Geometry
    >>> from layoutops.kernels.window_sums import applies
    >>> g = Geometry((8, 8), (2, 2), (2, 2), (1, 1), ((0, 0), (0, 0)), (4, 4))
    >>> applies(np.zeros((512, 8, 8, 64), np.float32), (1, 2), g)
    True
    >>> applies(np.zeros((512, 64, 8, 8), np.float32), (2, 3), g)  # channels-first
    False
    """
    if x.dtype not in (np.float32, np.float64) or x.size == 0:
        return False
    if math.prod(geom.kernel_sizes) > MAX_TAPS_PER_STRIDE * math.prod(geom.strides):
        return False
    for i in range(len(axes)):
        last = (geom.out_sizes[i] - 1) * geom.strides[i] + geom.extents[i]
        if geom.pads[i][0] != 0 or last > geom.in_sizes[i]:
            return False
    inner = min(range(x.ndim), key=lambda a: abs(x.strides[a]) if x.shape[a] > 1 else math.inf)
    run = x.shape[inner]
    return (inner not in axes and x.strides[inner] == x.itemsize and run >= MIN_RUN
            and x.nbytes * run >= MIN_BYTES * MIN_RUN)


def window_sums(x: np.ndarray, axes, geom: Geometry, out: np.ndarray, scale=None,
                divisor=None) -> None:
    """``out = sum over each window of x`` (times ``scale``, then divided by ``divisor``
    when given) for an ``x`` that `applies`; ``out`` has the pool's output shape.

    ``scale`` is folded into the einsum (each term times it: exact for a power of two);
    ``divisor`` divides each thread's part of ``out`` after its sums.

    Examples
    --------
    >>> import numpy as np
    >>> from layoutops.kernels.geometry import Geometry
    >>> from layoutops.kernels.window_sums import window_sums
    >>> x = np.arange(32.0).reshape(1, 2, 1, 16)
    >>> g = Geometry((2,), (2,), (2,), (1,), ((0, 0),), (1,))
    >>> out = np.empty((1, 1, 1, 16))
    >>> window_sums(x, (1,), g, out, scale=0.5)
    >>> out[0, 0, 0, :3].tolist()
    [8.0, 9.0, 10.0]
    """
    letters = iter(string.ascii_letters)
    shape, strides, sub_in, sub_out, view_axis = [], [], [], [], []
    for ax, (n, st) in enumerate(zip(x.shape, x.strides, strict=True)):
        view_axis.append(len(shape))
        if ax in axes:
            i = axes.index(ax)
            shape += [geom.out_sizes[i], geom.kernel_sizes[i]]
            strides += [geom.strides[i] * st, geom.dilations[i] * st]
            o, k = next(letters), next(letters)
            sub_in += [o, k]
            sub_out.append(o)
        else:
            shape.append(n)
            strides.append(st)
            sub_in.append(next(letters))
            sub_out.append(sub_in[-1])
    view = np.lib.stride_tricks.as_strided(x, shape, strides, writeable=False)
    spec = "".join(sub_in) + ("," if scale is not None else "") + "->" + "".join(sub_out)
    operands = (view,) if scale is None else (view, np.asarray(scale, x.dtype))

    # split the outermost output axis long enough for every thread
    threads = get_num_threads() if x.nbytes >= PARALLEL_BYTES else 1
    split = next((a for a, n in enumerate(out.shape) if n >= threads), 0)
    threads = min(threads, out.shape[split])
    bounds = [out.shape[split] * t // threads for t in range(threads + 1)]

    def part(ranges):
        for lo, hi in ranges:
            index = [slice(None)] * view.ndim
            index[view_axis[split]] = slice(lo, hi)
            dst = out[(slice(None),) * split + (slice(lo, hi),)]
            np.einsum(spec, operands[0][tuple(index)], *operands[1:], out=dst)
            if divisor is not None:
                dst /= divisor

    parallel(part, list(zip(bounds[:-1], bounds[1:], strict=True)), threads)
