"""Plain-loop references for the pooling and patch ops, on tiny inputs.

Independent of the library: no import of ``layoutops``, only Python loops over output
positions and kernel offsets. Arrays are ``(N, C, *spatial)`` with the spatial axes in the
order the per-axis arguments use (the tests permute to and from other layouts).
``pads`` are ``(begin, end)`` pairs, one per spatial axis.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def out_size(n_in, k, s, d, pads, ceil_mode=False):
    """PyTorch's pooling output size, with the ceil_mode last-window rule."""
    span = n_in + pads[0] + pads[1] - d * (k - 1) - 1
    if not ceil_mode:
        return math.floor(span / s) + 1
    out = math.ceil(span / s) + 1
    if (out - 1) * s >= n_in + pads[0]:
        out -= 1
    return out


def same_padding(n_in, k, s, d, lower=False):
    """TF SAME / ONNX SAME_UPPER pads (the odd unit at the end), or SAME_LOWER."""
    out = math.ceil(n_in / s)
    total = max((out - 1) * s + d * (k - 1) + 1 - n_in, 0)
    return (total - total // 2, total // 2) if lower else (total // 2, total - total // 2)


def window_taps(o, n_in, k, s, d, pad_begin):
    """Input positions of the taps of output ``o`` along one axis (in or out of bounds)."""
    return [o * s - pad_begin + j * d for j in range(k)]


def valid_config(in_sizes, ks, ss, ds, pads, ceil_mode=False):
    """True when the pool is defined: outputs >= 1, every pad < the kernel extent and every
    window with at least one in-bounds tap per axis."""
    for n_in, k, s, d, p in zip(in_sizes, ks, ss, ds, pads, strict=True):
        ext = d * (k - 1) + 1
        if p[0] >= ext or p[1] >= ext:
            return False
        n_out = out_size(n_in, k, s, d, p, ceil_mode)
        if n_out < 1:
            return False
        for o in range(n_out):
            if not any(0 <= t < n_in for t in window_taps(o, n_in, k, s, d, p[0])):
                return False
    return True


def _windows(x, ks, ss, ds, pads, ceil_mode):
    """Yield (n, c, out_position, [(flat_index, value), ...] in window order, counts)."""
    n_batch, n_chan = x.shape[:2]
    in_sizes = x.shape[2:]
    outs = [
        out_size(n, k, s, d, p, ceil_mode)
        for n, k, s, d, p in zip(in_sizes, ks, ss, ds, pads, strict=True)
    ]
    for n in range(n_batch):
        for c in range(n_chan):
            for o in itertools.product(*[range(v) for v in outs]):
                cells = []
                with_pad = 0
                for js in itertools.product(*[range(k) for k in ks]):
                    pos = [
                        o[a] * ss[a] - pads[a][0] + js[a] * ds[a] for a in range(len(in_sizes))
                    ]
                    if all(-pads[a][0] <= pos[a] < in_sizes[a] + pads[a][1]
                           for a in range(len(pos))):
                        with_pad += 1
                    if all(0 <= pos[a] < in_sizes[a] for a in range(len(pos))):
                        flat = 0
                        for a in range(len(pos)):
                            flat = flat * in_sizes[a] + pos[a]
                        cells.append((flat, x[(n, c, *pos)]))
                yield n, c, o, cells, with_pad
    return outs


def _out_shape(x, ks, ss, ds, pads, ceil_mode):
    return x.shape[:2] + tuple(
        out_size(n, k, s, d, p, ceil_mode)
        for n, k, s, d, p in zip(x.shape[2:], ks, ss, ds, pads, strict=True)
    )


def max_pool(x, ks, ss, ds, pads, ceil_mode=False):
    """(values, indices): first strict maximum in window order; NaN wins, the last one."""
    shape = _out_shape(x, ks, ss, ds, pads, ceil_mode)
    out = np.zeros(shape, x.dtype)
    idx = np.zeros(shape, np.int64)
    floating = x.dtype.kind == "f"
    for n, c, o, cells, _ in _windows(x, ks, ss, ds, pads, ceil_mode):
        best = best_i = None
        for flat, v in cells:
            if best is None or v > best or (floating and np.isnan(v)):
                best, best_i = v, flat
        out[(n, c, *o)] = best
        idx[(n, c, *o)] = best_i
    return out, idx


def avg_pool(x, ks, ss, ds, pads, ceil_mode=False, count_include_pad=True, divisor=None):
    shape = _out_shape(x, ks, ss, ds, pads, ceil_mode)
    out = np.zeros(shape, np.float64)
    for n, c, o, cells, with_pad in _windows(x, ks, ss, ds, pads, ceil_mode):
        total = sum(float(v) for _, v in cells)
        if divisor is not None:
            den = divisor
        else:
            den = with_pad if count_include_pad else len(cells)
        out[(n, c, *o)] = total / den
    return out


def lp_pool(x, p, ks, ss, ds, pads, ceil_mode=False):
    shape = _out_shape(x, ks, ss, ds, pads, ceil_mode)
    out = np.zeros(shape, np.float64)
    for n, c, o, cells, _ in _windows(x, ks, ss, ds, pads, ceil_mode):
        out[(n, c, *o)] = sum(abs(float(v)) ** p for _, v in cells) ** (1.0 / p)
    return out


def adaptive_bins(n_in, n_out):
    return [
        (math.floor(i * n_in / n_out), math.ceil((i + 1) * n_in / n_out)) for i in range(n_out)
    ]


def adaptive_pool(x, out_sizes, kind):
    """kind "avg" -> values; "max" -> (values, indices) with max_pool's rules."""
    in_sizes = x.shape[2:]
    bins = [adaptive_bins(n, o) for n, o in zip(in_sizes, out_sizes, strict=True)]
    shape = x.shape[:2] + tuple(out_sizes)
    out = np.zeros(shape, np.float64 if kind == "avg" else x.dtype)
    idx = np.zeros(shape, np.int64)
    floating = x.dtype.kind == "f"
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            for o in itertools.product(*[range(v) for v in out_sizes]):
                ranges = [range(*bins[a][o[a]]) for a in range(len(o))]
                best = best_i = None
                total = 0.0
                count = 0
                for pos in itertools.product(*ranges):
                    v = x[(n, c, *pos)]
                    flat = 0
                    for a in range(len(pos)):
                        flat = flat * in_sizes[a] + pos[a]
                    total += float(v)
                    count += 1
                    if best is None or v > best or (floating and np.isnan(v)):
                        best, best_i = v, flat
                if kind == "avg":
                    out[(n, c, *o)] = total / count
                else:
                    out[(n, c, *o)] = best
                    idx[(n, c, *o)] = best_i
    return out if kind == "avg" else (out, idx)


def max_unpool(x, indices, out_sizes):
    out = np.zeros(x.shape[:2] + tuple(out_sizes), x.dtype)
    for pos in itertools.product(*[range(v) for v in x.shape]):
        flat = int(indices[pos])
        spatial = []
        for size in reversed(out_sizes):
            spatial.append(flat % size)
            flat //= size
        out[(pos[0], pos[1], *reversed(spatial))] = x[pos]
    return out


def scatter_add(values, indices, in_sizes):
    """The max-pool gradient's scatter: zeros of spatial ``in_sizes``, each value added at its
    flat row-major plane index (values sharing a cell summed), NC* layout."""
    out = np.zeros(values.shape[:2] + tuple(in_sizes), np.float64)
    for pos in itertools.product(*[range(v) for v in values.shape]):
        cell = np.unravel_index(int(indices[pos]), in_sizes)
        out[(pos[0], pos[1], *cell)] += values[pos]
    return out


def unfold(x, ks, ss, ds, pads):
    """PyTorch F.unfold's form, N-d: (N, C * prod(k), L), rows c * K + kernel offset."""
    n_batch, n_chan = x.shape[:2]
    in_sizes = x.shape[2:]
    outs = [
        out_size(n, k, s, d, p) for n, k, s, d, p in zip(in_sizes, ks, ss, ds, pads, strict=True)
    ]
    kk = math.prod(ks)
    cols = np.zeros((n_batch, n_chan * kk, math.prod(outs)), x.dtype)
    for n in range(n_batch):
        for c in range(n_chan):
            for ki, js in enumerate(itertools.product(*[range(k) for k in ks])):
                for li, o in enumerate(itertools.product(*[range(v) for v in outs])):
                    pos = [o[a] * ss[a] - pads[a][0] + js[a] * ds[a] for a in range(len(o))]
                    if all(0 <= pos[a] < in_sizes[a] for a in range(len(pos))):
                        cols[n, c * kk + ki, li] = x[(n, c, *pos)]
    return cols


def fold(cols, out_sizes, ks, ss, ds, pads):
    """The adjoint of `unfold`: (N, C * prod(k), L) -> (N, C, *out_sizes), overlaps summed."""
    kk = math.prod(ks)
    n_batch, rows = cols.shape[:2]
    n_chan = rows // kk
    blocks = [
        out_size(n, k, s, d, p) for n, k, s, d, p in zip(out_sizes, ks, ss, ds, pads, strict=True)
    ]
    out = np.zeros((n_batch, n_chan, *out_sizes), np.float64)
    for n in range(n_batch):
        for c in range(n_chan):
            for ki, js in enumerate(itertools.product(*[range(k) for k in ks])):
                for li, o in enumerate(itertools.product(*[range(v) for v in blocks])):
                    pos = [o[a] * ss[a] - pads[a][0] + js[a] * ds[a] for a in range(len(o))]
                    if all(0 <= pos[a] < out_sizes[a] for a in range(len(pos))):
                        out[(n, c, *pos)] += cols[n, c * kk + ki, li]
    return out


def unfold_channels_last(x, ks, ss, ds, pads):
    """tf.image.extract_patches order from an (N, C, *spatial) array:
    (N, *out_spatial, prod(k) * C) with index kernel_offset * C + c."""
    n_batch, n_chan = x.shape[:2]
    in_sizes = x.shape[2:]
    outs = [
        out_size(n, k, s, d, p) for n, k, s, d, p in zip(in_sizes, ks, ss, ds, pads, strict=True)
    ]
    kk = math.prod(ks)
    res = np.zeros((n_batch, *outs, kk * n_chan), x.dtype)
    for n in range(n_batch):
        for o in itertools.product(*[range(v) for v in outs]):
            for ki, js in enumerate(itertools.product(*[range(k) for k in ks])):
                pos = [o[a] * ss[a] - pads[a][0] + js[a] * ds[a] for a in range(len(o))]
                if all(0 <= pos[a] < in_sizes[a] for a in range(len(pos))):
                    for c in range(n_chan):
                        res[(n, *o, ki * n_chan + c)] = x[(n, c, *pos)]
    return res
