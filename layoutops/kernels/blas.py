"""Hold NumPy's BLAS to one thread while the kernels run their own GEMM pipelines.

The ``im2col`` strategy runs one pipeline per thread (copy a cache-sized chunk of columns,
multiply it), so each of its GEMMs must stay on the core of the pipeline that calls it: two
pipelines that each wake BLAS's whole thread team fight over the same cores (the resnet 3x3
case of BENCH.md: 27.8 ms as one BLAS-threaded GEMM per 16 MiB tile, 16.9 ms as two
pipelines of 1 MiB chunks on single-threaded BLAS, 2 cores).

OpenBLAS (NumPy's wheels bundle it as ``scipy_openblas``) is found through its exported
``*openblas_set_num_threads*`` function, looked up once with `ctypes` in the libraries NumPy
ships with or the process has loaded. Other BLAS builds (MKL, Accelerate) are left alone:
`single_threaded` is then a no-op and the pipelines still give correct results. The setting
is process-wide; a counter restores the caller's thread count when the last of several
concurrent users leaves.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import threading
from collections.abc import Iterator

import numpy as np

from .threads import get_num_threads, parallel

__all__ = ["SMALL_GEMM_FLOPS", "controllable", "one_thread_below", "pipelines",
           "single_threaded"]

#: kernels that call BLAS outside their pipelines run products of fewer flops than this on
#: one thread (`one_thread_below`): OpenBLAS hands products from about 64^3 multiply-adds to
#: its thread team, whose workers then spin for ~0.1 s, and a pipelined conv that starts in
#: that window shares the cores with them (2-core test machine: the resnet 3x3 of BENCH.md,
#: channels-last, right after a 1x8x8x64 -> 64 conv took 14-15 ms instead of 7.8 ms). Below
#: this size (~0.5 ms on one core) a second BLAS thread saves at most ~0.25 ms.
SMALL_GEMM_FLOPS = 1 << 26

_NAMES = (
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
)

_LOCK = threading.Lock()
_STATE = {"functions": None, "searched": False, "depth": 0, "saved": None}


def _candidate_libraries() -> list[str]:
    """Shared libraries that may hold OpenBLAS: NumPy's bundled ones, then the loaded ones."""
    root = os.path.dirname(np.__file__)
    found = []
    for folder in (os.path.join(root, "..", "numpy.libs"), os.path.join(root, ".dylibs")):
        found += sorted(glob.glob(os.path.join(folder, "*openblas*")))
    try:
        with open("/proc/self/maps") as maps:
            found += sorted({line.split()[-1] for line in maps if "openblas" in line.lower()})
    except OSError:
        pass
    return found


def _find_functions():
    for path in _candidate_libraries():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in _NAMES:
            if hasattr(lib, set_name) and hasattr(lib, get_name):
                setter, getter = getattr(lib, set_name), getattr(lib, get_name)
                setter.argtypes, setter.restype = [ctypes.c_int], None
                getter.argtypes, getter.restype = [], ctypes.c_int
                return setter, getter
    return None


def _functions():
    if not _STATE["searched"]:
        _STATE["functions"] = _find_functions()
        _STATE["searched"] = True
    return _STATE["functions"]


def controllable() -> bool:
    """True if the BLAS NumPy uses is an OpenBLAS whose thread count can be set.

    Examples
    --------
    >>> from layoutops.kernels.blas import controllable
    >>> isinstance(controllable(), bool)
    True
    """
    with _LOCK:
        return _functions() is not None


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run the block with BLAS on one thread; the previous count comes back afterwards
    (when the last concurrent user leaves).

    Examples
    --------
    >>> import numpy as np
    >>> from layoutops.kernels.blas import single_threaded
    >>> with single_threaded():
    ...     float((np.ones((2, 3)) @ np.ones(3)).sum())
    6.0
    """
    with _LOCK:
        functions = _functions()
        if functions is not None:
            setter, getter = functions
            if _STATE["depth"] == 0:
                _STATE["saved"] = getter()
                setter(1)
            _STATE["depth"] += 1
    try:
        yield
    finally:
        if functions is not None:
            with _LOCK:
                _STATE["depth"] -= 1
                if _STATE["depth"] == 0:
                    setter(_STATE["saved"])


def one_thread_below(flops: int):
    """`single_threaded` for a product of fewer than `SMALL_GEMM_FLOPS` flops, else a
    context that leaves BLAS as it is.

    Examples
    --------
    >>> from layoutops.kernels.blas import one_thread_below
    >>> with one_thread_below(2 * 64**3):
    ...     pass
    """
    return single_threaded() if flops < SMALL_GEMM_FLOPS else contextlib.nullcontext()


def pipelines(fn, items, threads: int | None = None, flops: int | None = None) -> None:
    """``fn(part)`` on contiguous parts of ``items``, one per thread (`threads.parallel`),
    with BLAS held to one thread while they run, so that each part's GEMMs stay on its own
    core and leave no BLAS worker spinning afterwards. With one thread (or one item) ``fn``
    runs here on all of ``items``: BLAS as it is, or on one thread when ``flops`` (the
    work's GEMMs, at most) is below `SMALL_GEMM_FLOPS` (`one_thread_below`).

    Examples
    --------
    >>> from layoutops.kernels.blas import pipelines
    >>> seen = []
    >>> pipelines(seen.extend, [1, 2, 3], threads=2)
    >>> sorted(seen)
    [1, 2, 3]
    """
    threads = min(get_num_threads() if threads is None else threads, len(items))
    if threads > 1:
        with single_threaded():
            parallel(fn, items, threads)
    elif flops is not None:
        with one_thread_below(flops):
            fn(items)
    else:
        fn(items)
