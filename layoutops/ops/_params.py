"""The one normalizer of per-axis arguments: stride, dilation, kernel_size, padding, sizes.

Every op turns its arguments into plain hashable tuples here before any work, so the shape
rules and the kernels only ever see one standard form: per spatial axis (in the layout's
spatial order) an int, and padding as ``((begin, end), ...)`` pairs.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..kernels.geometry import Geometry

__all__ = [
    "Geometry",
    "normalize_tuple",
    "parse_padding",
    "same_pads",
    "resolve_pads",
    "conv_output_size",
    "pool_output_size",
    "conv_geometry",
    "PADDING_STRINGS",
    "is_int",
]

PADDING_STRINGS = ("valid", "same", "same_lower")
Pads = tuple[tuple[int, int], ...]


def is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def normalize_tuple(value, n: int, name: str, op: str, *, minimum: int = 1) -> tuple[int, ...]:
    """An int or a sequence of ``n`` ints as a tuple of ``n`` ints, each ``>= minimum``.

    Examples
    --------
    >>> from layoutops.ops._params import normalize_tuple
    >>> normalize_tuple(2, 3, "stride", "conv3d")
    (2, 2, 2)
    >>> normalize_tuple((1, 2), 2, "stride", "conv2d")
    (1, 2)
    """
    if is_int(value):
        values = (int(value),) * n
    else:
        try:
            values = tuple(value)
        except TypeError:
            raise TypeError(
                f"`{op}`: `{name}` must be an int or a sequence of {n} ints, got {value!r}"
            ) from None
        if len(values) != n or not all(is_int(v) for v in values):
            raise ValueError(
                f"`{op}`: `{name}` must be an int or {n} ints (one per spatial axis), got {value!r}"
            )
        values = tuple(int(v) for v in values)
    if any(v < minimum for v in values):
        raise ValueError(f"`{op}`: `{name}` must be >= {minimum}, got {value!r}")
    return values


def parse_padding(padding, n: int, op: str) -> Pads | str:
    """Parse every padding form of SPEC section 3.

    Returns ``((begin, end), ...)`` per spatial axis, or one of ``"valid"``, ``"same"``,
    ``"same_lower"`` (lower-cased) for the caller to resolve with `same_pads`.

    Forms: ``p``; one int per axis; two ints per axis ``(b0, e0, b1, e1, ...)`` (2-D:
    ``(top, bottom, left, right)``); ``(begin, end)`` pairs, one per axis; a string.

    Examples
    --------
    >>> from layoutops.ops._params import parse_padding
    >>> parse_padding(1, 2, "conv2d")
    ((1, 1), (1, 1))
    >>> parse_padding((1, 2), 2, "conv2d")
    ((1, 1), (2, 2))
    >>> parse_padding((0, 1, 2, 3), 2, "conv2d")
    ((0, 1), (2, 3))
    >>> parse_padding([(0, 1), (2, 3)], 2, "conv2d")
    ((0, 1), (2, 3))
    >>> parse_padding("SAME", 2, "conv2d")
    'same'
    """
    if isinstance(padding, str):
        key = padding.lower()
        if key not in PADDING_STRINGS:
            raise ValueError(
                f"`{op}`: `padding` must be an int, a tuple or one of 'valid', 'same', "
                f"'same_lower', got {padding!r}"
            )
        return key
    if is_int(padding):
        pads = ((int(padding), int(padding)),) * n
    else:
        try:
            items = list(padding)
        except TypeError:
            raise TypeError(
                f"`{op}`: `padding` must be an int, a tuple of ints or a string, got {padding!r}"
            ) from None
        if len(items) == n and all(is_int(v) for v in items):
            pads = tuple((int(v), int(v)) for v in items)
        elif len(items) == 2 * n and all(is_int(v) for v in items):
            pads = tuple((int(items[2 * i]), int(items[2 * i + 1])) for i in range(n))
        elif len(items) == n and all(_is_pair(v) for v in items):
            pads = tuple((int(v[0]), int(v[1])) for v in items)
        else:
            raise ValueError(
                f"`{op}`: `padding` for {n} spatial axes must be an int, {n} ints, {2 * n} ints "
                f"(begin, end per axis) or {n} (begin, end) pairs, got {padding!r}"
            )
    if any(p < 0 for pair in pads for p in pair):
        raise ValueError(f"`{op}`: `padding` must be >= 0, got {padding!r}")
    return pads


def _is_pair(v) -> bool:
    try:
        items = list(v)
    except TypeError:
        return False
    return len(items) == 2 and all(is_int(i) for i in items)


def same_pads(
    in_sizes, kernel_sizes, strides, dilations, *, lower: bool = False
) -> Pads:
    """TF SAME / ONNX SAME_UPPER (``lower=False``) or SAME_LOWER padding pairs.

    Output ``ceil(in / stride)``; total ``max((out - 1) * stride + dilation * (k - 1) + 1 - in,
    0)``; the odd unit goes to the end (to the beginning with ``lower=True``).

    Examples
    --------
    >>> from layoutops.ops._params import same_pads
    >>> same_pads((5, 6), (3, 3), (2, 2), (1, 1))
    ((1, 1), (0, 1))
    >>> same_pads((6,), (3,), (2,), (1,), lower=True)
    ((1, 0),)
    """
    pads = []
    for n_in, k, s, d in zip(in_sizes, kernel_sizes, strides, dilations, strict=True):
        out = -(-n_in // s)
        total = max((out - 1) * s + d * (k - 1) + 1 - n_in, 0)
        small, big = total // 2, total - total // 2
        pads.append((big, small) if lower else (small, big))
    return tuple(pads)


def resolve_pads(padding: Pads | str, in_sizes, kernel_sizes, strides, dilations) -> Pads:
    """Turn the result of `parse_padding` into pairs (the conv / pool meaning of strings)."""
    if padding == "valid":
        return ((0, 0),) * len(in_sizes)
    if padding in ("same", "same_lower"):
        return same_pads(
            in_sizes, kernel_sizes, strides, dilations, lower=padding == "same_lower"
        )
    return padding


def conv_output_size(n_in: int, k: int, s: int, d: int, pads: tuple[int, int]) -> int:
    """``floor((in + pb + pe - d * (k - 1) - 1) / s) + 1`` (may be < 1; the caller checks)."""
    return (n_in + pads[0] + pads[1] - d * (k - 1) - 1) // s + 1


def pool_output_size(
    n_in: int, k: int, s: int, d: int, pads: tuple[int, int], ceil_mode: bool
) -> int:
    """Pooling output size, with PyTorch's ceil_mode rule (the last window must start
    inside the input or the begin padding)."""
    span = n_in + pads[0] + pads[1] - d * (k - 1) - 1
    if not ceil_mode:
        return span // s + 1
    out = -(-span // s) + 1
    while out > 1 and (out - 1) * s >= n_in + pads[0]:
        out -= 1
    return out


def conv_geometry(
    op: str,
    in_sizes,
    kernel_sizes,
    *,
    stride,
    padding,
    dilation,
    spatial: str,
    ceil_mode: bool = False,
    pool: bool = False,
) -> Geometry:
    """Normalize stride / dilation / padding for a conv or pool and compute output sizes.

    Raises ``ValueError`` (naming ``op``) for bad values and for an output size below 1, with
    the computed size and the formula's inputs.
    """
    n = len(in_sizes)
    strides = normalize_tuple(stride, n, "stride", op)
    dilations = normalize_tuple(dilation, n, "dilation", op)
    parsed = parse_padding(padding, n, op)
    pads = resolve_pads(parsed, in_sizes, kernel_sizes, strides, dilations)
    outs = []
    for i in range(n):
        args = (in_sizes[i], kernel_sizes[i], strides[i], dilations[i], pads[i])
        out = pool_output_size(*args, ceil_mode) if pool else conv_output_size(*args)
        if out < 1:
            raise ValueError(
                f"`{op}`: output size along {spatial[i]!r} would be {out} < 1 "
                f"(input {in_sizes[i]}, padding {pads[i]}, kernel {kernel_sizes[i]}, "
                f"dilation {dilations[i]}, stride {strides[i]})"
            )
        outs.append(out)
    return Geometry(
        tuple(int(v) for v in in_sizes),
        tuple(int(v) for v in kernel_sizes),
        strides,
        dilations,
        pads,
        tuple(outs),
    )


class CheckedCache:
    """The results of argument checks per call signature: repeated calls skip the checks.

    ``get(fixed, args, compute)``: ``fixed`` holds values the library derived itself (an op
    name, shapes, layouts), ``args`` the user's arguments, each keyed with its type
    (`typed`), so that ``True`` and ``1``, or ``2`` and ``2.0``, never share an entry (one may
    be rejected where the other is not). A call with an unhashable argument is checked every
    time; a check that raises stores nothing. At most ``maxsize`` entries (then it starts
    over).

    Examples
    --------
    >>> from layoutops.ops._params import CheckedCache
    >>> cache, calls = CheckedCache(), []
    >>> def check(v):
    ...     calls.append(v)
    ...     return v * 2
    >>> cache.get("op", (1,), lambda: check(1)), cache.get("op", (1,), lambda: check(1))
    (2, 2)
    >>> cache.get("op", (True,), lambda: check(True)), len(calls)
    (2, 2)
    """

    def __init__(self, maxsize: int = 512):
        self._entries: dict = {}
        self._maxsize = maxsize

    def get(self, fixed, args, compute):
        try:
            key = (fixed, tuple(typed(v) for v in args))
            hit = self._entries.get(key)
        except TypeError:  # an unhashable argument: checked every time
            return compute()
        if hit is None:
            hit = compute()
            if len(self._entries) >= self._maxsize:
                self._entries.clear()
            self._entries[key] = hit
        return hit


def typed(value):
    """``value`` with the type of each element (lists and tuples element by element)."""
    if isinstance(value, (list, tuple)):
        return type(value), tuple(typed(v) for v in value)
    return type(value), value
