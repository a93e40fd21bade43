"""The temporaries of a call, measured with tracemalloc (NumPy reports its allocations there)."""

from __future__ import annotations

import tracemalloc


def temporaries(call) -> int:
    """Peak bytes traced while ``call()`` runs, beyond the arrays it returns (a tuple's
    members; None entries count nothing)."""
    tracemalloc.start()
    try:
        result = call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    results = result if isinstance(result, tuple) else (result,)
    return peak - sum(r.nbytes for r in results if r is not None)
