"""Workspace limit and tiling: how much memory one op call may hold, and how work is split.

Every kernel splits its output into tiles (batch first, then the spatial axes in order,
outermost first) so that the temporary memory of one tile stays within the workspace limit
(default 64 MiB). The limit is a process-wide setting (`set_workspace_limit`) that a
``with workspace_limit(...)`` block overrides for the current thread or task.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
from collections.abc import Callable, Iterator

__all__ = [
    "DEFAULT_WORKSPACE_BYTES",
    "get_workspace_limit",
    "local_workspace_limit",
    "set_workspace_limit",
    "workspace_limit",
    "split_tiles",
]

DEFAULT_WORKSPACE_BYTES = 64 * 2**20

_GLOBAL_LIMIT = [DEFAULT_WORKSPACE_BYTES]
_LOCAL_LIMIT: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "layoutops_workspace_limit", default=None
)


def get_workspace_limit() -> int:
    """The workspace limit in bytes that applies here and now.

    Examples
    --------
    >>> import layoutops as lo
    >>> lo.get_workspace_limit() == 64 * 2**20
    True
    """
    local = _LOCAL_LIMIT.get()
    return _GLOBAL_LIMIT[0] if local is None else local


def local_workspace_limit() -> int | None:
    """The limit a ``with workspace_limit(...)`` block sets here, or None outside any (for
    work handed to other threads or processes, which do not inherit the context).

    Examples
    --------
    >>> import layoutops as lo
    >>> from layoutops.kernels.plan import local_workspace_limit
    >>> local_workspace_limit() is None
    True
    >>> with lo.workspace_limit(2**20):
    ...     print(local_workspace_limit())
    1048576
    """
    return _LOCAL_LIMIT.get()


def _check(nbytes) -> int:
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 2**16:
        raise ValueError(f"workspace limit must be an int >= 65536 bytes, got {nbytes!r}")
    return nbytes


def set_workspace_limit(nbytes: int) -> int:
    """Set the process-wide workspace limit (bytes); returns the previous value."""
    previous = _GLOBAL_LIMIT[0]
    _GLOBAL_LIMIT[0] = _check(nbytes)
    return previous


@contextlib.contextmanager
def workspace_limit(nbytes: int) -> Iterator[None]:
    """Use ``nbytes`` of workspace per op call inside a ``with`` block (contextvars-safe).

    Examples
    --------
    >>> import layoutops as lo
    >>> with lo.workspace_limit(8 * 2**20):
    ...     print(lo.get_workspace_limit())
    8388608
    """
    token = _LOCAL_LIMIT.set(_check(nbytes))
    try:
        yield
    finally:
        _LOCAL_LIMIT.reset(token)


def split_tiles(
    shape: tuple[int, ...],
    cost: Callable[[tuple[int, ...]], int],
    limit: int | None = None,
    *,
    multiples: tuple[int, ...] | None = None,
) -> Iterator[tuple[slice, ...]]:
    """Split an index space ``shape`` into tiles whose ``cost(tile_shape)`` fits ``limit``.

    Dimensions are halved in order (the first dimension down to 1, then the next, ...) until
    the tile fits, or every dimension is 1. ``multiples`` optionally rounds tile sizes to a
    multiple per dimension (where the full size allows). Yields one tuple of slices per tile,
    in row-major order.

    Examples
    --------
    >>> from layoutops.kernels.plan import split_tiles
    >>> tiles = list(split_tiles((4, 10), lambda t: t[0] * t[1], limit=20))
    >>> len(tiles), tiles[0]
    (2, (slice(0, 2, None), slice(0, 10, None)))
    """
    limit = get_workspace_limit() if limit is None else limit
    tile = list(max(1, s) for s in shape)
    dim = 0
    while cost(tuple(tile)) > limit and dim < len(tile):
        if tile[dim] <= 1:
            dim += 1
            continue
        tile[dim] = (tile[dim] + 1) // 2
        if multiples and multiples[dim] > 1 and tile[dim] > multiples[dim]:
            tile[dim] -= tile[dim] % multiples[dim]
    ranges = [
        [slice(start, min(start + t, s)) for start in range(0, s, t)] if s > 0 else [slice(0, 0)]
        for s, t in zip(shape, tile, strict=True)
    ]
    yield from itertools.product(*ranges)
