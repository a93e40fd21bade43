"""Plain-loop references for the transposed convolution tests (share no code with layoutops).

Everything here is channels-first (``NC`` + spatial) with PyTorch kernels (``IO`` + spatial
for the transposed conv, ``OI`` + spatial for conv), float64, and written as loops over
positions so that it is obviously right on tiny inputs.
"""

from __future__ import annotations

import itertools

import numpy as np


def ref_crops(in_sizes, kernel_sizes, strides, dilations, padding, output_padding, output_shape):
    """SPEC section 4, written out directly: the (begin, end) crops of the full output
    ``(in - 1) * s + d * (k - 1) + 1 + output_padding`` per axis (end < 0 appends)."""
    n = len(in_sizes)
    crops = []
    for i in range(n):
        full = (
            (in_sizes[i] - 1) * strides[i]
            + dilations[i] * (kernel_sizes[i] - 1)
            + 1
            + output_padding[i]
        )
        if output_shape is not None:
            excess = full - output_shape[i]
            if excess < 0:
                crops.append((0, excess))
            elif padding == "same":
                crops.append((excess // 2, excess - excess // 2))
            else:  # 0 or "same_lower"
                crops.append((excess - excess // 2, excess // 2))
        elif padding in ("same", "same_lower"):
            excess = dilations[i] * (kernel_sizes[i] - 1) + 1 - strides[i]
            if excess < 0:
                crops.append((0, excess))
            elif padding == "same":
                crops.append((excess // 2, excess - excess // 2))
            else:
                crops.append((excess - excess // 2, excess // 2))
        elif padding == "valid":
            crops.append((0, 0))
        else:
            crops.append(tuple(padding[i]))
    return crops


def ref_conv_transpose(x, w, bias, strides, dilations, crops, output_padding, groups):
    """Scatter form: every input cell adds ``x * w[tap]`` at ``i * s + tap * d - crop_begin``.

    ``x``: (N, C_in, *spatial); ``w``: (C_in, C_out / groups, *k) (PyTorch ConvTranspose).
    """
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n_batch, c_in = x.shape[:2]
    in_sizes = x.shape[2:]
    ks = w.shape[2:]
    o_per = w.shape[1]
    c_out = o_per * groups
    i_per = c_in // groups
    full = [
        (in_sizes[a] - 1) * strides[a] + dilations[a] * (ks[a] - 1) + 1 + output_padding[a]
        for a in range(len(in_sizes))
    ]
    out_sizes = [full[a] - crops[a][0] - crops[a][1] for a in range(len(in_sizes))]
    out = np.zeros((n_batch, c_out, *out_sizes))
    for nb in range(n_batch):
        for ci in range(c_in):
            g = ci // i_per
            for pos in itertools.product(*(range(s) for s in in_sizes)):
                value = x[(nb, ci, *pos)]
                for tap in itertools.product(*(range(k) for k in ks)):
                    target = [
                        pos[a] * strides[a] + tap[a] * dilations[a] - crops[a][0]
                        for a in range(len(pos))
                    ]
                    if any(t < 0 or t >= out_sizes[a] for a, t in enumerate(target)):
                        continue
                    for op in range(o_per):
                        out[(nb, g * o_per + op, *target)] += value * w[(ci, op, *tap)]
    if bias is not None:
        out += np.asarray(bias, np.float64).reshape((1, c_out) + (1,) * len(in_sizes))
    return out


def ref_conv(x, w, strides, dilations, pads, groups):
    """Gather form of conv (cross-correlation) with zero padding ``pads`` = (begin, end) pairs.

    ``x``: (N, C_in, *spatial); ``w``: (C_out, C_in / groups, *k) (PyTorch Conv).
    """
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n_batch, c_in = x.shape[:2]
    in_sizes = x.shape[2:]
    c_out, i_per = w.shape[:2]
    ks = w.shape[2:]
    o_per = c_out // groups
    out_sizes = [
        (in_sizes[a] + pads[a][0] + pads[a][1] - dilations[a] * (ks[a] - 1) - 1) // strides[a] + 1
        for a in range(len(in_sizes))
    ]
    out = np.zeros((n_batch, c_out, *out_sizes))
    for nb in range(n_batch):
        for co in range(c_out):
            g = co // o_per
            for pos in itertools.product(*(range(s) for s in out_sizes)):
                total = 0.0
                for ci in range(i_per):
                    for tap in itertools.product(*(range(k) for k in ks)):
                        src = [
                            pos[a] * strides[a] + tap[a] * dilations[a] - pads[a][0]
                            for a in range(len(pos))
                        ]
                        if any(s < 0 or s >= in_sizes[a] for a, s in enumerate(src)):
                            continue
                        total += x[(nb, g * i_per + ci, *src)] * w[(co, ci, *tap)]
                out[(nb, co, *pos)] = total
    return out
