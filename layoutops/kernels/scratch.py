"""Per-thread scratch buffers that the kernels reuse from call to call.

A pipelined kernel asks for a few MiB of scratch per thread and call (the column chunks of
``im2col``). Allocated fresh each time, that memory is often handed back to the operating
system on free (glibc trims the heaps of non-main threads) and faulted in again, page by
page, on the next call: on the 2-core test VM the resnet 3x3 conv of BENCH.md took ~2400
page faults per call at ~3 us each, 19-20 ms instead of 10-12 ms. Keeping each thread's
buffer between calls removes that.

Each thread keeps one buffer per *slot* (a name the call site chooses), grown to the largest
size asked for, up to `MAX_CACHED_BYTES`; larger requests get a fresh array. A slot's buffer
is valid until the same thread asks for that slot again, so a call site must not hand it out
(results are never scratch) nor ask for its slot twice at once. `release` frees the calling
thread's buffers; they are also freed when the thread ends.

`scratch_reused` also tells a caller whether the buffer it gets is the one it marked `filled`
last time under the same *key*, untouched by any other request for the slot since: the parts
its own writes never touch (the zero borders of a padded block) still hold what it left
there.
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["MAX_CACHED_BYTES", "scratch", "scratch_reused", "filled", "release",
           "cached_bytes"]

#: the largest buffer a thread keeps between calls (bytes); larger requests are not cached
MAX_CACHED_BYTES = 16 << 20

_LOCAL = threading.local()


def _buffers() -> dict:
    buffers = getattr(_LOCAL, "buffers", None)
    if buffers is None:
        buffers = _LOCAL.buffers = {}
    return buffers


def _keys() -> dict:
    """slot -> (key, address, nbytes, dtype) of the buffer last marked `filled`."""
    keys = getattr(_LOCAL, "keys", None)
    if keys is None:
        keys = _LOCAL.keys = {}
    return keys


def scratch(slot: str, size: int, dtype) -> np.ndarray:
    """An uninitialized flat array of ``size`` elements of ``dtype`` from this thread's
    buffer for ``slot`` (valid until this thread asks for ``slot`` again).

    Examples
    --------
    >>> import numpy as np
    >>> from layoutops.kernels.scratch import scratch
    >>> a = scratch("doc", 10, np.float32)
    >>> b = scratch("doc", 4, np.float64)
    >>> a.shape, b.shape, np.shares_memory(a, b)
    ((10,), (4,), True)
    """
    _keys().pop(slot, None)  # the caller may write anything into it
    dtype = np.dtype(dtype)
    nbytes = int(size) * dtype.itemsize
    if nbytes > MAX_CACHED_BYTES:
        return np.empty(size, dtype)
    buffers = _buffers()
    buf = buffers.get(slot)
    if buf is None or buf.nbytes < nbytes + 64:
        # 64 extra bytes: every view starts on a 64-byte boundary
        buf = buffers[slot] = np.empty(max(nbytes, 1) + 64, np.uint8)
    start = (-buf.ctypes.data) % 64
    return buf[start : start + nbytes].view(dtype)


def scratch_reused(slot: str, size: int, dtype, key) -> tuple[np.ndarray, bool]:
    """`scratch`, and whether the buffer is the one this thread last marked with `filled`
    under ``key`` (hashable, equal keys meaning the same layout of what the caller writes),
    with no other request for the slot in between: the cells the caller's writes under
    ``key`` never touch then still hold what it left there. Never true for buffers too large
    to keep (`MAX_CACHED_BYTES`). Mark the buffer with `filled` once it is written (not
    before: an exception half-way must not leave a key behind).

    Examples
    --------
    >>> import numpy as np
    >>> from layoutops.kernels.scratch import filled, scratch, scratch_reused
    >>> a, same = scratch_reused("doc2", 8, np.float32, "borders")
    >>> same
    False
    >>> filled("doc2", a, "borders")
    >>> a, same = scratch_reused("doc2", 8, np.float32, "borders")
    >>> same  # not marked again since: the next request will not count on it
    True
    >>> scratch_reused("doc2", 8, np.float32, "borders")[1]
    False
    """
    previous = _keys().pop(slot, None)
    arr = scratch(slot, size, dtype)
    return arr, previous is not None and previous == _entry(arr, key)


def filled(slot: str, arr: np.ndarray, key) -> None:
    """Mark this thread's buffer ``arr`` of ``slot`` (from `scratch_reused`) as written under
    ``key``; any other request for the slot forgets it."""
    if arr.nbytes <= MAX_CACHED_BYTES:
        _keys()[slot] = _entry(arr, key)


def _entry(arr: np.ndarray, key):
    return (key, arr.ctypes.data, arr.nbytes, arr.dtype.str)


def cached_bytes() -> int:
    """Bytes of scratch the calling thread keeps.

    Examples
    --------
    >>> from layoutops.kernels.scratch import cached_bytes, release, scratch
    >>> _ = scratch("doc", 1000, "float32")
    >>> cached_bytes() >= 4000
    True
    >>> release(); cached_bytes()
    0
    """
    return sum(buf.nbytes for buf in _buffers().values())


def release() -> None:
    """Free the calling thread's scratch buffers."""
    _buffers().clear()
    _keys().clear()
