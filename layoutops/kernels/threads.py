"""The small thread pool the kernels split their memory-bound NumPy work over.

NumPy's ufuncs and copies (``np.copyto``, ``a[...] = b``) release the GIL but run on one
thread; BLAS threads only the GEMMs. The kernels therefore split the elementwise passes of
pooling and the column copies of ``im2col`` into disjoint parts, one per thread: every output
element is still computed by one thread with the same operations in the same order, so the
results do not depend on the thread count.

Thread count: ``LAYOUTOPS_NUM_THREADS`` (environment, read on every call) or
`set_num_threads`, else as many cores as the process may run on (``os.sched_getaffinity``:
a process pinned to one core does not time-slice two threads), at most 8. The worker threads
are per process (a forked child starts its own: the parent's do not exist there). Work done
inside a part of `parallel` is not split again (`get_num_threads` is 1 there), and a
`parallel` call made while another thread's is running runs on its calling thread alone
(the workers are busy; two callers would otherwise time-slice the cores between them).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
import threading
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["balanced_run", "get_num_threads", "set_num_threads", "one_thread", "parallel",
           "parallel_copy"]

_MAX_THREADS = 8
_OVERRIDE: list[int | None] = [None]
_LOCAL = threading.local()  # ``inside``: this thread runs a part of `parallel` (no nesting)


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


_CORES = max(1, min(_cores(), _MAX_THREADS))


def get_num_threads() -> int:
    """The number of threads the kernels split elementwise work over.

    Examples
    --------
    >>> from layoutops.kernels.threads import get_num_threads
    >>> get_num_threads() >= 1
    True
    """
    if getattr(_LOCAL, "inside", False):
        return 1  # a part of `parallel` splits no further: the threads are all busy
    if _OVERRIDE[0] is not None:
        return _OVERRIDE[0]
    env = os.environ.get("LAYOUTOPS_NUM_THREADS")
    if env:
        try:
            return max(1, min(int(env), _MAX_THREADS))
        except ValueError:
            pass
    return _CORES


def set_num_threads(n: int | None) -> int | None:
    """Set the thread count (``None``: back to the environment / core count); returns the
    previous setting.

    Examples
    --------
    >>> from layoutops.kernels.threads import get_num_threads, set_num_threads
    >>> old = set_num_threads(1)
    >>> get_num_threads()
    1
    >>> _ = set_num_threads(old)
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"thread count must be an int >= 1 or None, got {n!r}")
    previous = _OVERRIDE[0]
    _OVERRIDE[0] = None if n is None else min(n, _MAX_THREADS)
    return previous


@contextlib.contextmanager
def one_thread():
    """Run the block's kernel work on the calling thread alone: `get_num_threads` is 1
    there, as inside a part of `parallel` (for work made of many small NumPy calls, which
    two threads would take turns at the GIL for).

    Examples
    --------
    >>> from layoutops.kernels.threads import get_num_threads, one_thread
    >>> with one_thread():
    ...     get_num_threads()
    1
    """
    previous = getattr(_LOCAL, "inside", False)
    _LOCAL.inside = True
    try:
        yield
    finally:
        _LOCAL.inside = previous


class _Worker:
    """One worker thread, handed one part at a time: a lock the caller releases to start it
    and one it releases when done. A `concurrent.futures` pool's queue, futures and
    bookkeeping cost more: 7-round old / new A/B on BENCH.md's shapes, 2 threads, us:
    global average pool 475 -> 464, average pool 2x2 CF / CL 1195 / 781 -> 1161 / 760,
    grouped conv 1459 / 1492 -> 1440 / 1480, 3-D conv CL 2258 -> 2209 (CF equal in a second
    A/B), max pool CF / CL 2676 / 2139 -> 2662 / 2109; depthwise CF 19.4-54.6 ms over the
    rounds -> 19.0-20.9 (median 25.3 -> 19.3), CL 14.6 -> 13.4; resnet 3x3 equal,
    transposed k4 s2 4093 -> 4145."""

    def __init__(self):
        self._go = threading.Lock()
        self._go.acquire()
        self._done = threading.Lock()
        self._done.acquire()
        self._job = None
        self._error: BaseException | None = None
        threading.Thread(target=self._loop, daemon=True, name="layoutops").start()

    def _loop(self):
        while True:
            self._go.acquire()
            context, fn, part = self._job
            self._job = None
            try:
                context.run(_inside, fn, part)
            except BaseException as error:  # handed to the caller in `wait`
                self._error = error
            self._done.release()

    def start(self, fn, part):
        # the part runs in a copy of the caller's context: its contextvars (a
        # ``workspace_limit`` block, NumPy's ufunc buffer size) hold there too
        self._job = (contextvars.copy_context(), fn, part)
        self._go.release()

    def wait(self) -> BaseException | None:
        """Block until the part is done; the exception it raised, if any."""
        self._done.acquire()
        error, self._error = self._error, None
        return error


_STATE: dict = {"workers": [], "busy": threading.Lock()}


def _reset_after_fork():
    # a forked child has none of the parent's threads, and a `busy` lock held by one of
    # them would stay held
    _STATE["workers"] = []
    _STATE["busy"] = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def parallel(fn: Callable[[Sequence], object], items: Sequence, threads: int | None = None):
    """``fn(part)`` on contiguous parts of ``items``, one per thread (the calling thread runs
    the first part). Exceptions propagate.

    Examples
    --------
    >>> from layoutops.kernels.threads import parallel
    >>> seen = []
    >>> parallel(seen.extend, list(range(5)))
    >>> sorted(seen)
    [0, 1, 2, 3, 4]
    """
    threads = min(get_num_threads() if threads is None else threads, len(items))
    busy = _STATE["busy"]
    if threads <= 1 or not busy.acquire(blocking=False):
        fn(items)  # one thread, or the workers are running another caller's parts
        return
    try:
        size = -(-len(items) // threads)
        parts = [items[i : i + size] for i in range(0, len(items), size)]
        workers = _STATE["workers"]
        while len(workers) < len(parts) - 1:
            workers.append(_Worker())
        started = []
        try:
            for worker, part in zip(workers[: len(parts) - 1], parts[1:], strict=True):
                worker.start(fn, part)
                started.append(worker)
            _inside(fn, parts[0])
        finally:
            errors = []
            for worker in started:
                try:
                    error = worker.wait()
                except BaseException as interrupt:  # e.g. KeyboardInterrupt while waiting
                    workers.remove(worker)  # its part may still run: never hand it another
                    errors.append(interrupt)
                else:
                    if error is not None:
                        errors.append(error)
        if errors:
            raise errors[0]
    finally:
        busy.release()


def _inside(fn, part):
    _LOCAL.inside = True
    try:
        return fn(part)
    finally:
        _LOCAL.inside = False


def balanced_run(n: int, most: int, parts: int) -> int:
    """The length of the runs (equal but the last) ``n`` items are cut into, at most
    ``most`` each, such that the fullest of ``parts`` contiguous parts of runs (`parallel`'s
    split over the threads) holds as few items as it can, and the runs are as long as that
    allows (8 items of at most 3 on two threads: runs of 2, 4 items a thread, where runs of
    3 would give one thread 6).

    Examples
    --------
    >>> from layoutops.kernels.threads import balanced_run
    >>> balanced_run(8, 3, 2), balanced_run(8, 8, 2), balanced_run(9, 2, 2), balanced_run(5, 9, 1)
    (2, 4, 1, 5)
    """
    best = math.ceil(n / parts)  # the fewest items the fullest part can hold
    for length in range(max(1, min(most, best)), 1, -1):
        # the first part is the fullest: its runs whole, or every item
        if min(n, math.ceil(math.ceil(n / length) / parts) * length) <= best:
            return length
    return 1  # runs of one item: ceil(n / parts) in the fullest part, always the fewest


#: copies below this many bytes stay on the calling thread (1 MiB: 0.06 ms on one thread,
#: 0.12 on two; 4 MiB: 0.40 -> 0.33; 14 MiB: 2.0 -> 0.93)
MIN_PARALLEL_BYTES = 1 << 21


def parallel_copy(dst: np.ndarray, src) -> None:
    """``dst[...] = src`` split along the first axis of ``dst`` longer than 1 (``src``
    broadcasts to ``dst``'s shape), over the threads when the copy is large enough.

    Examples
    --------
    >>> import numpy as np
    >>> from layoutops.kernels.threads import parallel_copy
    >>> a = np.zeros((4, 3))
    >>> parallel_copy(a, np.arange(12.0).reshape(3, 4).T)
    >>> int(a.sum())
    66
    """
    threads = get_num_threads()
    if threads <= 1 or dst.nbytes < MIN_PARALLEL_BYTES:
        dst[...] = src
        return
    src = np.broadcast_to(src, dst.shape)
    # the first axis long enough to split evenly, else the longest
    axis = next((a for a, n in enumerate(dst.shape) if n >= 4 * threads), None)
    if axis is None:
        axis = int(np.argmax(dst.shape))
    if dst.shape[axis] < 2:
        dst[...] = src
        return
    n = dst.shape[axis]
    threads = min(threads, n)
    bounds = [n * i // threads for i in range(threads + 1)]
    lead = (slice(None),) * axis

    def part(ranges):
        for lo, hi in ranges:
            dst[lead + (slice(lo, hi),)] = src[lead + (slice(lo, hi),)]

    parallel(part, list(zip(bounds[:-1], bounds[1:], strict=True)), threads)
