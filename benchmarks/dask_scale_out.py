"""Scale-out benchmark: a 3x3 conv + 2x2 max pool over a 20000 x 20000 single-channel image
held as a dask array of 2048 x 2048 chunks, computed with bounded memory.

The image is generated chunk by chunk (never whole in memory), convolved and pooled lazily,
and reduced (sum and max of the pooled map) in one pass on the threaded scheduler. Two crops
of the result -- the top-left corner (zero padding) and a window straddling chunk boundaries
(halos) -- are checked against the in-memory NumPy ops on the same input crops. The script
prints the wall time and the peak resident set size of the process (``ru_maxrss``), the
numbers quoted in ``docs/scale-out.md``.

Usage: ``python benchmarks/dask_scale_out.py [--size 20000] [--chunk 2048]``
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import dask
import dask.array as da
import numpy as np

import layoutops as lo


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--chunk", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()
    size, chunk = args.size, args.chunk

    rng = da.random.default_rng(2026)
    x = rng.standard_normal((1, 1, size, size), chunks=(1, 1, chunk, chunk), dtype=np.float32)
    w = np.array([[[[1, 2, 1], [0, 0, 0], [-1, -2, -1]]]], dtype=np.float32)  # Sobel
    y = lo.max_pool(lo.conv(x, w, np.array([0.5], np.float32), padding=1), 2)
    print(f"input {x.shape} {x.dtype} in {x.numblocks} chunks of {chunk}; output {y.shape} "
          f"in {y.numblocks} chunks; graph {len(y.__dask_graph__())} tasks")

    # a window straddling the first chunk edge: input rows c0 .. c0 + 99 (c0 odd) give conv
    # rows c0 + 1 .. c0 + 98 with padding=0, that is pooled rows (c0 + 1) / 2 .. + 48
    c0 = chunk - 47 if chunk % 2 == 0 else chunk - 48
    p0 = (c0 + 1) // 2
    before = peak_rss_mib()
    start = time.perf_counter()
    with dask.config.set(scheduler="threads", num_workers=args.workers):
        total, biggest, corner, middle = dask.compute(
            y.sum(dtype=np.float64), y.max(), y[..., :149, :149], y[..., p0 : p0 + 49, p0 : p0 + 49]
        )
    elapsed = time.perf_counter() - start
    peak = peak_rss_mib()

    # the same ops in memory on crops of the same input
    x_corner = x[..., :300, :300].compute()
    want_corner = lo.max_pool(lo.conv(x_corner, w, np.array([0.5], np.float32), padding=1), 2)
    x_mid = x[..., c0 : c0 + 100, c0 : c0 + 100].compute()
    want_mid = lo.max_pool(lo.conv(x_mid, w, np.array([0.5], np.float32)), 2)
    np.testing.assert_allclose(corner, want_corner[..., :149, :149], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(middle, want_mid[..., :49, :49], rtol=1e-5, atol=1e-5)

    image_mib = size * size * 4 / 2**20
    print(f"sum {float(total):.6g}, max {float(biggest):.6g}; crops match NumPy")
    print(f"wall time {elapsed:.1f} s with {args.workers} threads")
    print(f"peak RSS {peak:.0f} MiB (before compute {before:.0f} MiB); "
          f"the input alone is {image_mib:.0f} MiB, a chunk {chunk * chunk * 4 / 2**20:.0f} MiB")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, "
          f"numpy {np.__version__}, dask {dask.__version__}")


if __name__ == "__main__":
    main()
