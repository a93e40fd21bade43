"""GEMMs that add into their output (``C += A @ B``), through the BLAS NumPy ships with.

`numpy.matmul` always overwrites its ``out``: a sum of products ``sum_j A_j @ B_j`` then
needs a temporary per term and an addition pass over the result for each. The BLAS routine
under it takes ``beta``: ``C = A @ B + beta * C`` reads and writes ``C`` once, inside the
GEMM's own blocking. `gemm` calls OpenBLAS's ``cblas_?gemm`` with ``ctypes`` (which releases
the GIL, so the pipelines' threads run it in parallel) on strided row-major matrices, without
copies. On the resnet 3x3 case of BENCH.md (one sample's wide-row chunk, one thread) three
accumulating GEMMs took 1.63 ms against 1.71-1.77 ms for one wide GEMM and two shifted
additions.

The routines are looked up once, in the OpenBLAS libraries `blas` finds, by names whose
integer width is known: ``scipy_cblas_?gemm64_`` / ``cblas_?gemm64_`` (64-bit, NumPy's own
wheels) and ``scipy_cblas_?gemm`` (32-bit, scipy-openblas32). Without them (another BLAS,
an unknown build) `gemm` returns False and callers take their NumPy path.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

from .blas import _candidate_libraries

__all__ = ["available", "blasable", "gemm", "gemm_sum", "reshape_view"]

_ROW_MAJOR, _NO_TRANS = 101, 111
#: (prefix, suffix, integer type) of the cblas names tried, in order
_NAMES = (
    ("scipy_cblas_", "64_", ctypes.c_int64),
    ("cblas_", "64_", ctypes.c_int64),
    ("scipy_cblas_", "", ctypes.c_int32),
)
_LOCK = threading.Lock()
_STATE: dict = {"searched": False, "functions": {}, "int_max": 0}


def _bind(lib, name: str, int_type, real_type):
    fn = getattr(lib, name)
    i, e = int_type, ctypes.c_int
    p = ctypes.c_void_p
    fn.argtypes = [e, e, e, i, i, i, real_type, p, i, p, i, real_type, p, i]
    fn.restype = None
    return fn


def _find() -> None:
    for path in _candidate_libraries():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix, int_type in _NAMES:
            names = (f"{prefix}sgemm{suffix}", f"{prefix}dgemm{suffix}")
            if all(hasattr(lib, name) for name in names):
                _STATE["functions"] = {
                    np.dtype(np.float32): _bind(lib, names[0], int_type, ctypes.c_float),
                    np.dtype(np.float64): _bind(lib, names[1], int_type, ctypes.c_double),
                }
                _STATE["int_max"] = 2 ** (8 * ctypes.sizeof(int_type) - 1) - 1
                return


def _functions() -> dict:
    if not _STATE["searched"]:
        with _LOCK:
            if not _STATE["searched"]:
                _find()
                _STATE["searched"] = True
    return _STATE["functions"]


def available(dtype) -> bool:
    """True if `gemm` can run for arrays of ``dtype``.

    Examples
    --------
    >>> import numpy as np
    >>> from layoutops.kernels.gemm import available
    >>> available(np.int32)
    False
    """
    return np.dtype(dtype) in _functions()


def _leading(m: np.ndarray, cols: int, limit: int) -> int | None:
    """The row-major leading dimension of the 2-D ``m`` (elements), or ``None`` if BLAS cannot
    read it as one (inner stride not 1, a row stride not a whole number of elements or
    shorter than a row)."""
    itm = m.itemsize
    rs, cs = m.strides
    if m.shape[1] > 1 and cs != itm:
        return None
    if m.shape[0] == 1:
        rs = max(cols, 1) * itm
    if rs <= 0 or rs % itm or rs // itm < max(cols, 1) or rs // itm > limit:
        return None
    return rs // itm


def gemm(a: np.ndarray, b: np.ndarray, c: np.ndarray, accumulate: bool) -> bool:
    """``c = a @ b`` (``accumulate`` False) or ``c += a @ b``, in place, with the BLAS routine;
    False (``c`` untouched) if it cannot run on these arrays: no routine for their dtype,
    mixed dtypes, not 2-D, or a matrix that is not row-major with unit inner stride.

    ``c`` must not overlap ``a`` or ``b``.

    Examples
    --------
    >>> import numpy as np
    >>> from layoutops.kernels.gemm import available, gemm
    >>> a, b = np.ones((2, 3)), np.ones((3, 4))
    >>> c = np.full((2, 4), 10.0)
    >>> done = gemm(a, b, c, accumulate=True)
    >>> done == available(np.float64), float(c[0, 0]) == (13.0 if done else 10.0)
    (True, True)
    """
    fn = _functions().get(c.dtype)
    if fn is None or a.dtype != c.dtype or b.dtype != c.dtype:
        return False
    if a.ndim != 2 or b.ndim != 2 or c.ndim != 2 or not c.flags.writeable:
        return False
    m, k = a.shape
    n = b.shape[1]
    if b.shape[0] != k or c.shape != (m, n):
        raise ValueError(f"gemm shapes do not match: {a.shape} @ {b.shape} -> {c.shape}")
    if m == 0 or n == 0:
        return True
    if k == 0:
        if not accumulate:
            c[...] = 0
        return True
    limit = _STATE["int_max"]
    lda, ldb, ldc = _leading(a, k, limit), _leading(b, n, limit), _leading(c, n, limit)
    if lda is None or ldb is None or ldc is None or max(m, n, k) > limit:
        return False
    fn(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, m, n, k, 1.0, a.ctypes.data, lda, b.ctypes.data, ldb,
       1.0 if accumulate else 0.0, c.ctypes.data, ldc)
    return True


def gemm_sum(terms, out: np.ndarray) -> None:
    """``out = sum(a @ b for a, b in terms)``: BLAS GEMMs adding into ``out`` (`gemm`) when
    BLAS takes the matrices, else NumPy products into a temporary and additions. ``terms`` is
    a non-empty sequence of 2-D pairs; ``out`` must not overlap them.

    Examples
    --------
    >>> import numpy as np
    >>> from layoutops.kernels.gemm import gemm_sum
    >>> out = np.empty((2, 2))
    >>> gemm_sum([(np.eye(2), np.ones((2, 2))), (np.eye(2), np.eye(2))], out)
    >>> out.tolist()
    [[2.0, 1.0], [1.0, 2.0]]
    """
    (a, b), *rest = terms
    if gemm(a, b, out, accumulate=False):
        for a, b in rest:
            if not gemm(a, b, out, accumulate=True):
                out += np.matmul(a, b)
        return
    np.matmul(a, b, out=out)
    tmp = None
    for a, b in rest:
        tmp = np.matmul(a, b, out=tmp)
        out += tmp


def blasable(a: np.ndarray) -> bool:
    """True if the last two axes of ``a`` are a row-major matrix BLAS can read and write (unit
    inner stride, rows at least a row apart).

    Examples
    --------
    >>> import numpy as np
    >>> from layoutops.kernels.gemm import blasable
    >>> blasable(np.zeros((3, 4))), blasable(np.zeros((3, 4))[:, ::2])
    (True, False)
    """
    if a.ndim < 2:
        return False
    rs, cs = a.strides[-2:]
    return cs == a.itemsize and rs >= a.shape[-1] * a.itemsize and rs % a.itemsize == 0


def reshape_view(a: np.ndarray, shape) -> np.ndarray | None:
    """``a`` reshaped to ``shape`` as a view, or ``None`` if that needs a copy."""
    try:
        return np.reshape(a, shape, copy=False)
    except ValueError:
        return None
