"""Pooling ops (SPEC section 4): max, average and Lp pooling, their global and adaptive forms,
and max unpooling, natively in any activation layout.

Every per-axis argument (``kernel_size``, ``stride``, ``padding``, ``dilation``,
``output_size``) follows the order of the spatial letters in ``layout``; the default stride is
the kernel size. The argument checks are all here, before any work; the computation is in
`layoutops.kernels.pool`.
"""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np

from ..errors import LayoutError
from ..kernels import pool as kpool
from ..kernels.geometry import Geometry
from ..layouts import Layout, activation_layout
from ._conv_common import check_rank
from ._dtypes import as_array, check_float, compute_dtype
from ._params import CheckedCache, conv_geometry, normalize_tuple, parse_padding
from .dask_support import accepts_dask

__all__ = [
    "max_pool",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "avg_pool",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "lp_pool",
    "lp_pool1d",
    "lp_pool2d",
    "lp_pool3d",
    "global_avg_pool",
    "global_max_pool",
    "global_lp_pool",
    "adaptive_avg_pool",
    "adaptive_max_pool",
    "max_unpool",
]


# -- argument checks shared by the pools -------------------------------------------------------


def _check_bool(value, name: str, op: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{op}`: `{name}` must be a bool, got {value!r}")
    return bool(value)


def _layout(op: str, x: np.ndarray, layout) -> Layout:
    try:
        return activation_layout(x.ndim, layout)
    except LayoutError as e:
        raise LayoutError(f"`{op}`: {e}") from e


def _prepare(op: str, x, layout, n_spatial: int | None) -> tuple[np.ndarray, Layout]:
    x = as_array(x, "x", op)
    check_rank(op, x, n_spatial)
    return x, _layout(op, x, layout)


def check_windows(op: str, geom: Geometry, spatial: str) -> None:
    """SPEC's pooling window rules: padding smaller than the effective kernel extent, and at
    least one in-bounds tap in every output window on every axis."""
    problem = _window_problem(geom, spatial)
    if problem is not None:
        raise ValueError(f"`{op}`: {problem}")


@functools.lru_cache(maxsize=512)
def _window_problem(geom: Geometry, spatial: str) -> str | None:
    """What breaks `check_windows`'s rules, or None (cached: a pool call's geometry repeats
    from call to call, and the check cost as much as a small pool)."""
    for i, letter in enumerate(spatial):
        n_in, k, s, d = geom.in_sizes[i], geom.kernel_sizes[i], geom.strides[i], geom.dilations[i]
        pb, pe = geom.pads[i]
        extent = d * (k - 1) + 1
        if pb >= extent or pe >= extent:
            return (
                f"padding along {letter!r} must be smaller than the effective kernel "
                f"extent dilation*(kernel_size-1)+1={extent}, got {(pb, pe)}"
            )
        start = np.arange(geom.out_sizes[i], dtype=np.int64) * s - pb
        first = np.maximum(0, -(start // d))  # first offset j with start + j*d >= 0
        ok = (first <= k - 1) & (start + first * d <= n_in - 1)
        if not ok.all():
            o = int(np.argmin(ok))
            return (
                f"output window {o} along {letter!r} contains no input cell (it reads "
                f"positions {int(start[o])}, {int(start[o]) + d}, ... of an input of size "
                f"{n_in} with padding {(pb, pe)}, kernel {k}, dilation {d}, stride {s})"
            )
    return None


def pool_geometry(
    op: str,
    x: np.ndarray,
    lay: Layout,
    kernel_size,
    stride,
    padding,
    dilation,
    ceil_mode,
) -> Geometry:
    """Normalize and validate the window arguments of a pool; the default stride is the
    kernel size. Cached per input shape, layout and (typed) arguments: repeated calls skip
    the checks (`_GEOMETRIES`)."""
    return _GEOMETRIES.get(
        (op, x.shape, lay), (kernel_size, stride, padding, dilation, ceil_mode),
        lambda: _pool_geometry(op, x, lay, kernel_size, stride, padding, dilation, ceil_mode),
    )


#: the geometries of recent pool calls: the argument checks took 0.02-0.04 ms of a 2x2
#: average pool of BENCH.md (1.43 / 1.20 -> 1.40 / 1.18 ms channels-first / -last, 9-round
#: A/Bs on the 2-core test VM)
_GEOMETRIES = CheckedCache()


def _pool_geometry(op, x, lay, kernel_size, stride, padding, dilation, ceil_mode) -> Geometry:
    n = lay.n_spatial
    kernel = normalize_tuple(kernel_size, n, "kernel_size", op)
    ceil_mode = _check_bool(ceil_mode, "ceil_mode", op)
    in_sizes = tuple(x.shape[ax] for ax in lay.spatial_axes)
    geom = conv_geometry(
        op,
        in_sizes,
        kernel,
        stride=kernel if stride is None else stride,
        padding=padding,
        dilation=dilation,
        spatial=lay.spatial,
        ceil_mode=ceil_mode,
        pool=True,
    )
    check_windows(op, geom, lay.spatial)
    return geom


def _float_types(op: str, x: np.ndarray):
    check_float(x, "x", op)
    return x.dtype, compute_dtype(x.dtype)


def _check_p(p, op: str) -> float:
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real):
        raise TypeError(f"`{op}`: `p` must be a real number, got {p!r}")
    if not math.isfinite(float(p)) or p <= 0:
        raise ValueError(f"`{op}`: `p` must be a finite number > 0, got {p!r}")
    return float(p)


def avg_pool_setup(
    op: str, x: np.ndarray, kernel_size, *, stride, padding, dilation, ceil_mode,
    divisor_override, layout,
) -> tuple[Layout, Geometry, int | None]:
    """The layout, geometry and checked ``divisor_override`` of an avg pool (shared with the
    gradients); ``x`` is an array."""
    lay = _layout(op, x, layout)
    if divisor_override is not None:
        if isinstance(divisor_override, (bool, np.bool_)) or not isinstance(
            divisor_override, numbers.Integral
        ):
            raise TypeError(f"`{op}`: `divisor_override` must be an int, got {divisor_override!r}")
        if divisor_override < 1:
            raise ValueError(f"`{op}`: `divisor_override` must be >= 1, got {divisor_override}")
        divisor_override = int(divisor_override)
    geom = pool_geometry(op, x, lay, kernel_size, stride, padding, dilation, ceil_mode)
    return lay, geom, divisor_override


def adaptive_setup(op: str, x: np.ndarray, output_size, *, layout) -> tuple[Layout, tuple]:
    """The layout and checked output sizes of an adaptive pool (shared with the gradients)."""
    check_rank(op, x, None)
    lay = _layout(op, x, layout)
    return lay, _adaptive_sizes(op, x, lay, output_size)


# -- max pooling ---------------------------------------------------------------------------


@accepts_dask("max_pool")
def max_pool(
    x,
    kernel_size,
    *,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode=False,
    return_indices=False,
    layout=None,
    _op="max_pool",
):
    """Max pooling over the spatial axes of ``x``, in its own layout.

    Only in-bounds cells compete: padding is excluded, never value-filled, so a uint8 0
    never loses to a padding cell. Ties go to the first in-bounds cell in window order; a NaN
    in a window makes the output NaN, with the index of the last NaN (PyTorch CPU).

    Parameters
    ----------
    x : array_like
        ``(N, C, *spatial)`` in ``layout``; any float, integer or bool dtype.
    kernel_size : int or tuple of int
        Window size per spatial axis (in the layout's spatial order).
    stride : int or tuple of int, optional
        Default: ``kernel_size``.
    padding : int, tuple or {'valid', 'same', 'same_lower'}
        Every form of SPEC section 3; each pad must be smaller than the effective kernel
        extent ``dilation * (kernel_size - 1) + 1``.
    dilation : int or tuple of int
    ceil_mode : bool
        Round the output size up; a last window starting in the end padding is dropped.
    return_indices : bool
        Also return the arg-max: int64, same shape and layout as the output, each the flat
        row-major index of the winner within its spatial plane of the unpadded input.
    layout : str, optional
        The activation layout of ``x`` (default: the current `default_layout`).
    _op : str
        Internal: the op named in error messages (the gradients pass their own name).

    Returns
    -------
    out : ndarray
        Same dtype and layout as ``x``. ``(out, indices)`` with ``return_indices=True``.

    Raises
    ------
    ValueError
        Bad sizes, a pad not smaller than the kernel extent, a window with no input cell, an
        output size < 1.
    TypeError
        Non-numeric ``x`` or a non-bool flag.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> x = np.arange(16).reshape(1, 1, 4, 4)
    >>> lo.max_pool(x, 2)[0, 0].tolist()
    [[5, 7], [13, 15]]
    >>> out, idx = lo.max_pool(x, 3, stride=2, padding=1, return_indices=True)
    >>> idx[0, 0].tolist()
    [[5, 7], [13, 15]]
    >>> lo.max_pool(x.transpose(0, 2, 3, 1), 2, layout="NHWC")[0, :, :, 0].tolist()
    [[5, 7], [13, 15]]
    """
    return _max_pool(
        _op, None, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices,
        layout,
    )


def _max_pool(op, n_spatial, x, kernel_size, stride, padding, dilation, ceil_mode,
              return_indices, layout):
    x, lay = _prepare(op, x, layout, n_spatial)
    return_indices = _check_bool(return_indices, "return_indices", op)
    geom = pool_geometry(op, x, lay, kernel_size, stride, padding, dilation, ceil_mode)
    return kpool.max_pool(x, lay.spatial_axes, geom, return_indices=return_indices)


@accepts_dask("max_pool")
def max_pool1d(
    x, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False,
    return_indices=False, layout=None,
):
    """`max_pool` for ``(N, C, W)``-rank input (1 spatial axis).

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> lo.max_pool1d(np.array([[[1, 3, 2, 5, 4]]]), 2).tolist()
    [[[3, 5]]]
    """
    return _max_pool(
        "max_pool1d", 1, x, kernel_size, stride, padding, dilation, ceil_mode,
        return_indices, layout,
    )


@accepts_dask("max_pool")
def max_pool2d(
    x, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False,
    return_indices=False, layout=None,
):
    """`max_pool` for 4-D input (2 spatial axes).

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> lo.max_pool2d(np.zeros((2, 3, 8, 8)), 2).shape
    (2, 3, 4, 4)
    """
    return _max_pool(
        "max_pool2d", 2, x, kernel_size, stride, padding, dilation, ceil_mode,
        return_indices, layout,
    )


@accepts_dask("max_pool")
def max_pool3d(
    x, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False,
    return_indices=False, layout=None,
):
    """`max_pool` for 5-D input (3 spatial axes).

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> lo.max_pool3d(np.zeros((1, 4, 4, 4, 2)), 2, layout="NDHWC").shape
    (1, 2, 2, 2, 2)
    """
    return _max_pool(
        "max_pool3d", 3, x, kernel_size, stride, padding, dilation, ceil_mode,
        return_indices, layout,
    )


# -- average pooling -----------------------------------------------------------------------


@accepts_dask("avg_pool")
def avg_pool(
    x,
    kernel_size,
    *,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
    layout=None,
    _op="avg_pool",
):
    """Average pooling over the spatial axes of ``x``, in its own layout.

    Parameters
    ----------
    x : array_like
        ``(N, C, *spatial)`` in ``layout``; float16, float32, float64 or bfloat16 (half types
        accumulate in float32 and return their own dtype).
    kernel_size, stride, padding, dilation, ceil_mode, layout
        As in `max_pool` (default stride: ``kernel_size``).
    count_include_pad : bool
        True: divide by the number of taps inside input + padding (never counting the
        ceil_mode overhang beyond the end padding; PyTorch, onnxruntime). False: by the number
        of taps inside the input.
    divisor_override : int, optional
        Divide every window sum by this positive int instead.
    _op : str
        Internal: the op named in error messages.

    Returns
    -------
    ndarray
        Same dtype and layout as ``x``.

    Raises
    ------
    TypeError
        Integer or bool ``x``.
    ValueError
        As in `max_pool`; a ``divisor_override`` < 1.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> lo.avg_pool(x, 2)[0, 0].tolist()
    [[2.5, 4.5], [10.5, 12.5]]
    >>> lo.avg_pool(np.ones((1, 1, 3)), 2, stride=1, padding=1)[0, 0].tolist()
    [0.5, 1.0, 1.0, 0.5]
    >>> lo.avg_pool(np.ones((1, 1, 3)), 2, stride=1, padding=1,
    ...             count_include_pad=False)[0, 0].tolist()
    [1.0, 1.0, 1.0, 1.0]
    """
    return _avg_pool(
        _op, None, x, kernel_size, stride, padding, dilation, ceil_mode,
        count_include_pad, divisor_override, layout,
    )


def _avg_pool(op, n_spatial, x, kernel_size, stride, padding, dilation, ceil_mode,
              count_include_pad, divisor_override, layout):
    x, lay = _prepare(op, x, layout, n_spatial)
    dtype, cdtype = _float_types(op, x)
    count_include_pad = _check_bool(count_include_pad, "count_include_pad", op)
    lay, geom, divisor_override = avg_pool_setup(
        op, x, kernel_size, stride=stride, padding=padding, dilation=dilation,
        ceil_mode=ceil_mode, divisor_override=divisor_override, layout=lay,
    )
    return kpool.avg_pool(
        x,
        lay.spatial_axes,
        geom,
        count_include_pad=count_include_pad,
        divisor_override=divisor_override,
        dtype=dtype,
        compute_dtype=cdtype,
    )


@accepts_dask("avg_pool")
def avg_pool1d(
    x, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False,
    count_include_pad=True, divisor_override=None, layout=None,
):
    """`avg_pool` for 3-D input (1 spatial axis).

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> lo.avg_pool1d(np.array([[[1.0, 3.0, 2.0, 6.0]]]), 2).tolist()
    [[[2.0, 4.0]]]
    """
    return _avg_pool(
        "avg_pool1d", 1, x, kernel_size, stride, padding, dilation, ceil_mode,
        count_include_pad, divisor_override, layout,
    )


@accepts_dask("avg_pool")
def avg_pool2d(
    x, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False,
    count_include_pad=True, divisor_override=None, layout=None,
):
    """`avg_pool` for 4-D input (2 spatial axes).

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> lo.avg_pool2d(np.ones((1, 6, 6, 3), np.float32), 3, layout="NHWC").shape
    (1, 2, 2, 3)
    """
    return _avg_pool(
        "avg_pool2d", 2, x, kernel_size, stride, padding, dilation, ceil_mode,
        count_include_pad, divisor_override, layout,
    )


@accepts_dask("avg_pool")
def avg_pool3d(
    x, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False,
    count_include_pad=True, divisor_override=None, layout=None,
):
    """`avg_pool` for 5-D input (3 spatial axes).

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> lo.avg_pool3d(np.ones((1, 1, 4, 4, 4)), 2).shape
    (1, 1, 2, 2, 2)
    """
    return _avg_pool(
        "avg_pool3d", 3, x, kernel_size, stride, padding, dilation, ceil_mode,
        count_include_pad, divisor_override, layout,
    )


# -- Lp pooling ----------------------------------------------------------------------------


@accepts_dask("lp_pool")
def lp_pool(
    x,
    p,
    kernel_size,
    *,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode=False,
    layout=None,
    _op="lp_pool",
):
    """Lp pooling: ``(sum |x|^p) ** (1/p)`` over the in-bounds taps of each window.

    This is ONNX LpPool as onnxruntime computes it: ``|x|`` (PyTorch uses ``x`` and so
    returns NaN for odd ``p`` and negative sums), padding adds nothing, and under ceil_mode a
    clipped window gives the true norm of its cells (not PyTorch's rescaling by the full
    kernel size, which the ONNX reference evaluator copies).

    Parameters
    ----------
    x : array_like
        Float input ``(N, C, *spatial)`` in ``layout``.
    p : float
        The norm's order, finite and > 0 (``p=2``: Euclidean norm, ``p=1``: sum of ``|x|``).
    kernel_size, stride, padding, dilation, ceil_mode, layout
        As in `max_pool` (default stride: ``kernel_size``).
    _op : str
        Internal: the op named in error messages (the gradients pass their own name).

    Returns
    -------
    ndarray
        Same dtype and layout as ``x``.

    Raises
    ------
    ValueError
        ``p <= 0`` or not finite; the window errors of `max_pool`.
    TypeError
        Integer or bool ``x``; a non-real ``p``.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> lo.lp_pool(np.array([[[3.0, -4.0, 1.0, 0.0]]]), 2, 2).tolist()
    [[[5.0, 1.0]]]
    >>> lo.lp_pool(np.array([[[3.0, -4.0, 1.0, 0.0]]]), 1, 2).tolist()
    [[[7.0, 1.0]]]
    """
    return _lp_pool(
        _op, None, x, p, kernel_size, stride, padding, dilation, ceil_mode, layout
    )


def _lp_pool(op, n_spatial, x, p, kernel_size, stride, padding, dilation, ceil_mode, layout):
    x, lay = _prepare(op, x, layout, n_spatial)
    dtype, cdtype = _float_types(op, x)
    p = _check_p(p, op)
    geom = pool_geometry(op, x, lay, kernel_size, stride, padding, dilation, ceil_mode)
    return kpool.lp_pool(x, lay.spatial_axes, geom, p, dtype=dtype, compute_dtype=cdtype)


@accepts_dask("lp_pool")
def lp_pool1d(
    x, p, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False, layout=None
):
    """`lp_pool` for 3-D input (1 spatial axis).

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> lo.lp_pool1d(np.array([[[3.0, 4.0]]]), 2, 2).tolist()
    [[[5.0]]]
    """
    return _lp_pool(
        "lp_pool1d", 1, x, p, kernel_size, stride, padding, dilation, ceil_mode, layout
    )


@accepts_dask("lp_pool")
def lp_pool2d(
    x, p, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False, layout=None
):
    """`lp_pool` for 4-D input (2 spatial axes).

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> lo.lp_pool2d(np.ones((1, 1, 2, 2)), 2, 2).tolist()
    [[[[2.0]]]]
    """
    return _lp_pool(
        "lp_pool2d", 2, x, p, kernel_size, stride, padding, dilation, ceil_mode, layout
    )


@accepts_dask("lp_pool")
def lp_pool3d(
    x, p, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False, layout=None
):
    """`lp_pool` for 5-D input (3 spatial axes).

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> lo.lp_pool3d(np.ones((1, 2, 2, 2, 1)), 1, 2, layout="NDHWC").ravel().tolist()
    [8.0]
    """
    return _lp_pool(
        "lp_pool3d", 3, x, p, kernel_size, stride, padding, dilation, ceil_mode, layout
    )


# -- global pools --------------------------------------------------------------------------


def _check_nonempty_plane(op: str, x: np.ndarray, lay: Layout) -> None:
    for ax, letter in zip(lay.spatial_axes, lay.spatial, strict=True):
        if x.shape[ax] < 1:
            raise ValueError(
                f"`{op}`: spatial axis {letter!r} must have size >= 1, got shape {x.shape}"
            )


def global_avg_pool(x, *, layout=None):
    """The mean over all spatial axes, kept as size-1 axes (ONNX GlobalAveragePool).

    Parameters
    ----------
    x : array_like
        Float input ``(N, C, *spatial)`` in ``layout``.
    layout : str, optional

    Returns
    -------
    ndarray
        ``x``'s shape with every spatial size 1; same dtype and layout.

    Raises
    ------
    TypeError
        Integer or bool ``x``.
    ValueError
        An empty spatial axis.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> lo.global_avg_pool(np.arange(8.0).reshape(1, 2, 2, 2)).tolist()
    [[[[1.5]], [[5.5]]]]
    >>> lo.global_avg_pool(np.ones((2, 5, 5, 3)), layout="NHWC").shape
    (2, 1, 1, 3)
    """
    op = "global_avg_pool"
    x, lay = _prepare(op, x, layout, None)
    dtype, cdtype = _float_types(op, x)
    _check_nonempty_plane(op, x, lay)
    return kpool.global_pool(x, lay.spatial_axes, "avg", dtype=dtype, compute_dtype=cdtype)


def global_max_pool(x, *, layout=None):
    """The maximum over all spatial axes, kept as size-1 axes (ONNX GlobalMaxPool).

    A NaN anywhere in a plane makes its output NaN. Integer and bool input is accepted.

    Parameters
    ----------
    x : array_like
        ``(N, C, *spatial)`` in ``layout``.
    layout : str, optional

    Returns
    -------
    ndarray
        ``x``'s shape with every spatial size 1; same dtype and layout.

    Raises
    ------
    ValueError
        An empty spatial axis.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> lo.global_max_pool(np.arange(8).reshape(1, 2, 2, 2)).tolist()
    [[[[3]], [[7]]]]
    """
    op = "global_max_pool"
    x, lay = _prepare(op, x, layout, None)
    _check_nonempty_plane(op, x, lay)
    return kpool.global_pool(x, lay.spatial_axes, "max")


def global_lp_pool(x, p, *, layout=None):
    """``(sum |x|^p) ** (1/p)`` over all spatial axes, kept as size-1 axes (ONNX GlobalLpPool).

    Parameters
    ----------
    x : array_like
        Float input ``(N, C, *spatial)`` in ``layout``.
    p : float
        Finite and > 0.
    layout : str, optional

    Returns
    -------
    ndarray
        ``x``'s shape with every spatial size 1; same dtype and layout.

    Raises
    ------
    TypeError
        Integer or bool ``x``.
    ValueError
        ``p <= 0``; an empty spatial axis.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> lo.global_lp_pool(np.array([[[3.0, 4.0]]]), 2).tolist()
    [[[5.0]]]
    """
    op = "global_lp_pool"
    x, lay = _prepare(op, x, layout, None)
    dtype, cdtype = _float_types(op, x)
    p = _check_p(p, op)
    _check_nonempty_plane(op, x, lay)
    return kpool.global_pool(
        x, lay.spatial_axes, "lp", p=p, dtype=dtype, compute_dtype=cdtype
    )


# -- adaptive pools ------------------------------------------------------------------------


def _adaptive_sizes(op: str, x: np.ndarray, lay: Layout, output_size) -> tuple[int, ...]:
    n = lay.n_spatial
    in_sizes = tuple(x.shape[ax] for ax in lay.spatial_axes)
    if output_size is None:
        raise TypeError(f"`{op}`: `output_size` must be an int or {n} ints, got None")
    if isinstance(output_size, numbers.Integral) and not isinstance(output_size, (bool, np.bool_)):
        sizes = (output_size,) * n
    else:
        try:
            sizes = tuple(output_size)
        except TypeError:
            raise TypeError(
                f"`{op}`: `output_size` must be an int or {n} ints, got {output_size!r}"
            ) from None
        if len(sizes) != n:
            raise ValueError(
                f"`{op}`: `output_size` must be an int or {n} ints (one per spatial axis), "
                f"got {output_size!r}"
            )
        # None keeps the input size (PyTorch)
        sizes = tuple(in_sizes[i] if s is None else s for i, s in enumerate(sizes))
    sizes = normalize_tuple(sizes, n, "output_size", op)
    for letter, size in zip(lay.spatial, in_sizes, strict=True):
        if size < 1:
            raise ValueError(
                f"`{op}`: spatial axis {letter!r} must have size >= 1, got shape {x.shape}"
            )
    return sizes


def adaptive_avg_pool(x, output_size, *, layout=None):
    """Average pooling to a given output size, with PyTorch's bins.

    Output cell ``i`` of an axis averages input cells ``[floor(i*in/out), ceil((i+1)*in/out))``
    (bins may overlap, and ``out > in`` repeats cells).

    Parameters
    ----------
    x : array_like
        Float input ``(N, C, *spatial)`` in ``layout``.
    output_size : int or tuple of int
        Per spatial axis (layout order); ``None`` entries keep the input size.
    layout : str, optional

    Returns
    -------
    ndarray
        Same dtype and layout as ``x``.

    Raises
    ------
    TypeError
        Integer or bool ``x``.
    ValueError
        An output size < 1 or an empty input axis.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> lo.adaptive_avg_pool(np.arange(5.0).reshape(1, 1, 5), 3).tolist()
    [[[0.5, 2.0, 3.5]]]
    """
    op = "adaptive_avg_pool"
    x, lay = _prepare(op, x, layout, None)
    dtype, cdtype = _float_types(op, x)
    lay, sizes = adaptive_setup(op, x, output_size, layout=lay)
    return kpool.adaptive_avg_pool(
        x, lay.spatial_axes, sizes, dtype=dtype, compute_dtype=cdtype
    )


def adaptive_max_pool(x, output_size, *, return_indices=False, layout=None):
    """Max pooling to a given output size, with PyTorch's bins (see `adaptive_avg_pool`).

    Ties, NaN and indices follow `max_pool`. Integer and bool input is accepted.

    Parameters
    ----------
    x : array_like
        ``(N, C, *spatial)`` in ``layout``.
    output_size : int or tuple of int
        Per spatial axis; ``None`` entries keep the input size.
    return_indices : bool
        Also return int64 flat row-major indices within each input plane.
    layout : str, optional

    Returns
    -------
    out : ndarray
        ``(out, indices)`` with ``return_indices=True``.

    Raises
    ------
    ValueError
        An output size < 1 or an empty input axis.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> out, idx = lo.adaptive_max_pool(np.array([[[1, 5, 2, 2, 7]]]), 2, return_indices=True)
    >>> out.tolist(), idx.tolist()
    ([[[5, 7]]], [[[1, 4]]])
    """
    op = "adaptive_max_pool"
    x, lay = _prepare(op, x, layout, None)
    return_indices = _check_bool(return_indices, "return_indices", op)
    lay, sizes = adaptive_setup(op, x, output_size, layout=lay)
    return kpool.adaptive_max_pool(x, lay.spatial_axes, sizes, return_indices=return_indices)


# -- unpooling -----------------------------------------------------------------------------


def max_unpool(x, indices, kernel_size, *, stride=None, padding=0, output_size=None, layout=None):
    """The inverse scatter of ``max_pool(..., return_indices=True)`` (PyTorch MaxUnpool,
    ONNX MaxUnpool).

    Every value of ``x`` goes to position ``indices`` (flat row-major within its spatial
    plane) of an output of zeros; other cells stay 0. If two values share an index, the
    later one in memory order wins.

    Parameters
    ----------
    x : array_like
        Pooled values ``(N, C, *spatial)`` in ``layout`` (any numeric dtype).
    indices : array_like of int
        Same shape as ``x``, as returned by `max_pool`.
    kernel_size, stride, padding
        The pool's (default stride: ``kernel_size``); padding in any numeric form or
        ``"valid"``.
    output_size : tuple of int, optional
        The output's spatial sizes, or its full shape in ``layout`` (PyTorch allows both).
        Default per axis: ``(in - 1) * stride - pad_begin - pad_end + kernel_size``. A given
        size must lie strictly between ``default - stride`` and ``default + stride``.
    layout : str, optional

    Returns
    -------
    ndarray
        Same dtype and layout as ``x``.

    Raises
    ------
    ValueError
        Mismatched shapes, an index outside the output plane, a bad ``output_size``.
    TypeError
        Non-integer ``indices``.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> x = np.array([[[[1.0, 4.0], [3.0, 2.0]]]])
    >>> out, idx = lo.max_pool(x, 2, stride=1, return_indices=True)
    >>> lo.max_unpool(out, idx, 2, stride=1).tolist()
    [[[[0.0, 4.0], [0.0, 0.0]]]]
    >>> lo.max_unpool(np.ones((1, 1, 2)), np.array([[[0, 3]]]), 2).tolist()
    [[[1.0, 0.0, 0.0, 1.0]]]
    """
    op = "max_unpool"
    x, lay = _prepare(op, x, layout, None)
    n = lay.n_spatial
    kernel = normalize_tuple(kernel_size, n, "kernel_size", op)
    strides = normalize_tuple(kernel if stride is None else stride, n, "stride", op)
    pads = parse_padding(padding, n, op)
    if pads in ("same", "same_lower"):
        raise ValueError(
            f"`{op}`: `padding` must be ints or 'valid' (the pooled input size is unknown), "
            f"got {padding!r}; give `output_size` and padding=0 instead"
        )
    if pads == "valid":
        pads = ((0, 0),) * n
    in_sizes = tuple(x.shape[ax] for ax in lay.spatial_axes)
    default = tuple(
        (i - 1) * s - pb - pe + k
        for i, s, (pb, pe), k in zip(in_sizes, strides, pads, kernel, strict=True)
    )
    if output_size is None:
        sizes = default
        for letter, size, i in zip(lay.spatial, sizes, in_sizes, strict=True):
            if size < 1 and i > 0:
                raise ValueError(
                    f"`{op}`: output size along {letter!r} would be {size} < 1 "
                    f"((in - 1) * stride - pads + kernel_size)"
                )
    else:
        sizes = _unpool_output_size(op, x, lay, output_size)
        for letter, size, d, s in zip(lay.spatial, sizes, default, strides, strict=True):
            if not d - s < size < d + s:
                raise ValueError(
                    f"`{op}`: `output_size` along {letter!r} must be in ({d - s}, {d + s}) "
                    f"(the pool's size {d} +- stride {s}, exclusive), got {size}"
                )
    indices = plane_indices(op, indices, x.shape, "`x`", sizes, "output plane")
    return kpool.max_unpool(x, indices, lay.spatial_axes, tuple(max(s, 0) for s in sizes))


def plane_indices(op: str, indices, shape, shape_of: str, sizes, plane_name: str):
    """``indices`` as an integer array of ``shape`` whose values (flat row-major positions
    within a spatial plane of ``sizes``, as `max_pool` returns them) lie in the plane;
    ``TypeError`` / ``ValueError`` naming ``shape_of`` and ``plane_name`` otherwise."""
    indices = as_array(indices, "indices", op)
    if indices.dtype.kind not in "iu":
        raise TypeError(f"`{op}`: `indices` must be an integer array, got dtype {indices.dtype}")
    if indices.shape != tuple(shape):
        raise ValueError(
            f"`{op}`: `indices` must have the shape of {shape_of} {tuple(shape)}, got "
            f"{indices.shape}"
        )
    plane = math.prod(sizes)
    # one pass: seen as unsigned, a negative index is larger than any plane
    unsigned = indices.view(indices.dtype.str.replace("i", "u"))
    if indices.size and int(unsigned.max()) >= plane:
        lowest = int(indices.min())
        bad = lowest if lowest < 0 else int(indices.max())
        raise ValueError(
            f"`{op}`: `indices` must lie in [0, {plane}) (the {plane_name} {tuple(sizes)}), "
            f"got {bad}"
        )
    return indices


def _unpool_output_size(op: str, x: np.ndarray, lay: Layout, output_size) -> tuple[int, ...]:
    n = lay.n_spatial
    try:
        sizes = tuple(output_size)
    except TypeError:
        raise TypeError(
            f"`{op}`: `output_size` must be a sequence of {n} spatial sizes or the full output "
            f"shape, got {output_size!r}"
        ) from None
    if len(sizes) == n + 2:
        full = normalize_tuple(sizes, n + 2, "output_size", op, minimum=0)
        for ax in (lay.batch_axis, lay.channel_axis):
            if full[ax] != x.shape[ax]:
                raise ValueError(
                    f"`{op}`: `output_size` as a full shape must keep N and C of `x` "
                    f"{x.shape} (layout {lay.spec}), got {tuple(sizes)}"
                )
        sizes = tuple(full[ax] for ax in lay.spatial_axes)
    elif len(sizes) != n:
        raise ValueError(
            f"`{op}`: `output_size` must have {n} spatial sizes or {n + 2} (a full shape in "
            f"layout {lay.spec}), got {output_size!r}"
        )
    return normalize_tuple(sizes, n, "output_size", op)
