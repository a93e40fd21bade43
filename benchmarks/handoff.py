"""What one hand-off between the calling thread and a `layoutops.kernels.threads` worker costs
on this machine.

Two measurements, each the median over many repetitions:

1. *Lock wake*: a thread blocked on a ``threading.Lock`` is woken by another thread's
   ``release()``; timed are the ``release()`` call itself (the waker's cost: a futex wake,
   and on a VM the wake-up interrupt it sends) and the delay until the woken thread runs.
   The sleeper's wait before each wake is ``--sleep`` microseconds of its partner's work.
2. *`parallel` timeline*: `threads.parallel` over two parts of equal work (row sums of a
   float32 matrix by ``np.einsum``, as the global average pool does), with the times, from
   the call, at which the caller's part starts and ends, the worker's part starts and ends,
   and the call returns. The difference between the return and the longer part is what the
   hand-offs cost.

Usage::

    python benchmarks/handoff.py [--repeat N] [--rows R] [--sleep US]

No torch needed; run it on a quiet machine (it times microseconds).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import numpy as np

from layoutops.kernels import threads


def _busy(us: float) -> None:
    end = time.perf_counter() + us * 1e-6
    while time.perf_counter() < end:
        pass


def lock_wake(repeat: int, sleep_us: float) -> dict:
    """Median ``release()`` time and wake-up delay (us) of a thread blocked on a lock."""
    go, back = threading.Lock(), threading.Lock()
    go.acquire()
    back.acquire()
    woke = [0.0]

    def sleeper():
        for _ in range(repeat):
            go.acquire()
            woke[0] = time.perf_counter()
            back.release()

    thread = threading.Thread(target=sleeper, daemon=True)
    thread.start()
    release_us, delay_us = [], []
    for _ in range(repeat):
        _busy(sleep_us)  # the sleeper has been blocked this long
        t0 = time.perf_counter()
        go.release()
        t1 = time.perf_counter()
        back.acquire()
        release_us.append((t1 - t0) * 1e6)
        delay_us.append((woke[0] - t0) * 1e6)
    thread.join()
    return {"release_us": statistics.median(release_us),
            "wake_delay_us": statistics.median(delay_us)}


def parallel_timeline(repeat: int, rows: int) -> dict:
    """Median times (us from the call) of the two parts of a two-thread `parallel` call."""
    x = np.random.default_rng(0).standard_normal((rows, 49)).astype(np.float32)
    out = np.empty(rows, np.float32)
    caller = threading.get_ident()
    marks: dict = {}

    def part(ranges):
        who = "caller" if threading.get_ident() == caller else "worker"
        marks[who + "_start"] = time.perf_counter()
        for lo, hi in ranges:
            np.einsum("pi->p", x[lo:hi], out=out[lo:hi])
        marks[who + "_end"] = time.perf_counter()

    halves = [(0, rows // 2), (rows // 2, rows)]
    keys = ("caller_start", "worker_start", "caller_end", "worker_end")
    samples: dict = {key: [] for key in (*keys, "return")}
    for i in range(repeat + 20):
        marks.clear()
        t0 = time.perf_counter()
        threads.parallel(part, halves, 2)
        t1 = time.perf_counter()
        if i < 20:  # warm-up
            continue
        for key in keys:
            samples[key].append((marks[key] - t0) * 1e6)
        samples["return"].append((t1 - t0) * 1e6)
    return {key: statistics.median(values) for key, values in samples.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=400)
    parser.add_argument("--rows", type=int, default=65536,
                        help="rows of 49 float32 values summed (default: 64x1024 planes of 7x7)")
    parser.add_argument("--sleep", type=float, default=200.0,
                        help="microseconds the woken thread has been blocked (default 200)")
    args = parser.parse_args(argv)
    wake = lock_wake(args.repeat, args.sleep)
    print(f"lock wake after {args.sleep:.0f} us blocked: release() {wake['release_us']:.1f} us,"
          f" woken thread runs {wake['wake_delay_us']:.1f} us after the release began")
    line = parallel_timeline(args.repeat, args.rows)
    longer = max(line["caller_end"] - line["caller_start"],
                 line["worker_end"] - line["worker_start"])
    print("parallel, two parts (us from the call): "
          + ", ".join(f"{key} {value:.0f}" for key, value in line.items()))
    print(f"longer part {longer:.0f} us; the call took {line['return']:.0f} us: "
          f"{line['return'] - longer:.0f} us of hand-offs and bookkeeping")


if __name__ == "__main__":
    main()
