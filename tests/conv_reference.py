"""A plain-loop reference convolution for tests, sharing no code with layoutops' kernels.

Canonical form: channels-first input ``(N, C, *S)`` and ``OI`` + spatial kernel
``(C_out, C_in / groups, *K)``. Padding is per axis ``(begin, end)``; the padding modes are
implemented here with index loops (no ``np.pad``, no layoutops window helpers).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

__all__ = [
    "source_index",
    "same_pairs",
    "conv_output_sizes",
    "conv_ref",
    "act_to",
    "act_from",
    "kernel_to",
    "permute_axis_args",
]


def source_index(i: int, size: int, mode: str):
    """The input index read at padded position ``i`` (``None`` for a zero)."""
    if 0 <= i < size:
        return i
    if mode == "zeros":
        return None
    if mode == "replicate":
        return 0 if i < 0 else size - 1
    if mode == "circular":
        return i % size
    if mode == "reflect":
        while not 0 <= i < size:
            i = -i if i < 0 else 2 * (size - 1) - i
        return i
    raise ValueError(mode)


def same_pairs(in_sizes, kernel_sizes, strides, dilations, lower=False):
    """TF SAME / ONNX SAME_UPPER (or SAME_LOWER) padding pairs, computed independently."""
    pairs = []
    for n, k, s, d in zip(in_sizes, kernel_sizes, strides, dilations, strict=True):
        out = math.ceil(n / s)
        total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
        first = total // 2
        pairs.append((total - first, first) if lower else (first, total - first))
    return tuple(pairs)


def conv_output_sizes(in_sizes, kernel_sizes, strides, dilations, pads):
    return tuple(
        (n + b + e - d * (k - 1) - 1) // s + 1
        for n, k, s, d, (b, e) in zip(in_sizes, kernel_sizes, strides, dilations, pads, strict=True)
    )


def conv_ref(x, w, bias=None, *, strides, pads, dilations, groups=1, mode="zeros"):
    """Loop over every output element; accumulate in float64. Returns ``(N, C_out, *out)``."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    n_batch, c_in = x.shape[:2]
    in_sizes = x.shape[2:]
    c_out, i_per = w.shape[:2]
    kernel_sizes = w.shape[2:]
    o_per = c_out // groups
    outs = conv_output_sizes(in_sizes, kernel_sizes, strides, dilations, pads)
    out = np.zeros((n_batch, c_out, *outs))
    for n in range(n_batch):
        for o in range(c_out):
            g = o // o_per
            for pos in itertools.product(*(range(s) for s in outs)):
                acc = 0.0 if bias is None else float(bias[o])
                for ci in range(i_per):
                    c = g * i_per + ci
                    for tap in itertools.product(*(range(k) for k in kernel_sizes)):
                        src = []
                        for a in range(len(outs)):
                            p = pos[a] * strides[a] - pads[a][0] + tap[a] * dilations[a]
                            src.append(source_index(p, in_sizes[a], mode))
                        if any(s is None for s in src):
                            continue
                        acc += x[(n, c, *src)] * w[(o, ci, *tap)]
                out[(n, o, *pos)] = acc
    return out


def act_to(x, src: str, dst: str):
    """An activation from layout ``src`` to ``dst`` (a C-contiguous copy, via np.transpose)."""
    return np.ascontiguousarray(np.transpose(x, [src.index(c) for c in dst]))


def act_from(y, src: str, dst: str):
    """An activation from layout ``src`` to ``dst``."""
    return np.transpose(y, [src.index(c) for c in dst])


def kernel_to(w, dst: str, src: str, groups: int = 1):
    """A kernel from ``src`` (``OI`` + spatial) to ``dst``; a ``G`` in ``dst`` splits ``O``
    as ``(G, O / G)`` (group-major)."""
    w = np.asarray(w)
    if "G" in dst:
        o = w.shape[0]
        w = w.reshape((groups, o // groups) + w.shape[1:])
        src = "G" + src
    return np.ascontiguousarray(np.transpose(w, [src.index(c) for c in dst]))


def permute_axis_args(values, src_spatial: str, dst_spatial: str):
    """Per-axis values listed in ``src_spatial`` order, reordered to ``dst_spatial`` order."""
    return tuple(values[src_spatial.index(c)] for c in dst_spatial)
