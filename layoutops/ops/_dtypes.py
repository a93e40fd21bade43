"""Input coercion and dtype rules shared by the ops (SPEC section 3).

float16 and bfloat16 compute in float32 and return their own dtype; the result dtype comes
from the data operands only (a bias is cast to it).
"""

from __future__ import annotations

import numpy as np

__all__ = ["as_array", "is_bfloat16", "float_dtypes", "compute_dtype", "check_float"]


def is_bfloat16(dtype) -> bool:
    """True for ml_dtypes' bfloat16 (without importing ml_dtypes)."""
    return np.dtype(dtype).name == "bfloat16"


def _is_float(dtype) -> bool:
    dtype = np.dtype(dtype)
    return dtype.kind == "f" or is_bfloat16(dtype)


def as_array(value, name: str, op: str) -> np.ndarray:
    """``np.asarray(value)``, rejecting non-numeric data with a `TypeError` naming ``op``."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as e:
        raise TypeError(f"`{op}`: `{name}` must be array_like of numbers: {e}") from e
    if not (arr.dtype.kind in "biuf" or is_bfloat16(arr.dtype)):
        raise TypeError(f"`{op}`: `{name}` must be a numeric array, got dtype {arr.dtype}")
    return arr


def check_float(arr: np.ndarray, name: str, op: str) -> None:
    """Raise `TypeError` unless ``arr`` is float16/32/64 or bfloat16."""
    if not _is_float(arr.dtype):
        raise TypeError(
            f"`{op}`: `{name}` must be a floating-point array (float16, float32, float64 or "
            f"bfloat16), got {arr.dtype}"
        )


def float_dtypes(op: str, **arrays: np.ndarray) -> tuple[np.dtype, np.dtype]:
    """Check that every array is floating and return ``(result_dtype, compute_dtype)``.

    Promotion over {float16, bfloat16, float32, float64}: the wider kind wins; float16 with
    bfloat16 gives float32. Half types compute in float32.

    Examples
    --------
    >>> import numpy as np
    >>> from layoutops.ops._dtypes import float_dtypes
    >>> float_dtypes("conv", x=np.zeros(1, np.float16), weight=np.zeros(1, np.float16))
    (dtype('float16'), dtype('float32'))
    >>> float_dtypes("conv", x=np.zeros(1, np.float32), weight=np.zeros(1))
    (dtype('float64'), dtype('float64'))
    """
    for name, arr in arrays.items():
        check_float(arr, name, op)
    dtypes = {np.dtype(a.dtype) for a in arrays.values()}
    names = {d.name for d in dtypes}
    if "float64" in names:
        result = np.dtype(np.float64)
    elif "float32" in names or ("float16" in names and "bfloat16" in names):
        result = np.dtype(np.float32)
    else:
        result = next(iter(dtypes))
    return result, compute_dtype(result)


def compute_dtype(dtype) -> np.dtype:
    """The dtype arithmetic runs in: float32 for half types, else ``dtype`` itself."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype.itemsize < 4 else dtype
