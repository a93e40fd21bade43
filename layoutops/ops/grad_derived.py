"""Vector-Jacobian products of the ops whose gradient is another op.

- The global pools are their windowed pools with one window over the whole plane: the
  gradient is `avg_pool_backward` / `max_pool_backward` / `lp_pool_backward` with
  ``kernel_size`` = the spatial sizes of ``x``.
- `max_unpool` scatters each value to its index; its gradient gathers ``grad_out`` at the
  same indices.
- `fold` is the adjoint of `unfold`, so each is the other's gradient.

Each function checks ``grad_out``'s shape under its own name, then runs the op it reduces
to; the other arguments are validated as the forward op validates them.
"""

from __future__ import annotations

import numpy as np

from ..layouts import activation_layout
from ._dtypes import as_array, check_float
from .grad import PoolGrads, avg_pool_backward, lp_pool_backward, max_pool_backward
from .patches import fold, unfold
from .pool import _check_nonempty_plane, _prepare, max_unpool

__all__ = [
    "global_avg_pool_backward",
    "global_max_pool_backward",
    "global_lp_pool_backward",
    "max_unpool_backward",
    "unfold_backward",
    "fold_backward",
]


def _empty_batch(a: np.ndarray, batch_axis: int) -> np.ndarray:
    """``a`` with its batch axis cut to 0 (a view: the forward ops run on it for free)."""
    index = [slice(None)] * a.ndim
    index[batch_axis] = slice(0, 0)
    return a[tuple(index)]


def _expect_shape(op: str, g: np.ndarray, shape: tuple[int, ...]) -> None:
    if g.shape != tuple(shape):
        raise ValueError(f"`{op}`: `grad_out` must have shape {tuple(shape)}, got {g.shape}")


def _global_setup(op: str, grad_out, x, layout):
    """``(grad_out, x, plane sizes)`` of a global pool's backward, its shapes checked."""
    x, lay = _prepare(op, x, layout, None)
    check_float(x, "x", op)
    _check_nonempty_plane(op, x, lay)
    g = as_array(grad_out, "grad_out", op)
    pooled = list(x.shape)
    for ax in lay.spatial_axes:
        pooled[ax] = 1
    _expect_shape(op, g, tuple(pooled))
    return g, x, tuple(x.shape[ax] for ax in lay.spatial_axes)


def global_avg_pool_backward(grad_out, x, *, layout=None) -> PoolGrads:
    """The vector-Jacobian product of `layoutops.global_avg_pool`: each plane's output
    gradient divided by the plane's size, on every cell of the plane.

    Parameters
    ----------
    grad_out : array_like
        Gradient with respect to ``global_avg_pool(x)``: ``x``'s shape with every spatial size
        1, in the layout of ``x``.
    x : array_like
        The forward input (only its shape and dtype are used).
    layout : str, optional

    Returns
    -------
    PoolGrads
        ``(grad_input,)`` in the layout and shape of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> x = np.zeros((1, 2, 2, 2))
    >>> g = np.array([[[[4.0]], [[8.0]]]])
    >>> lo.global_avg_pool_backward(g, x).grad_input[0, :, 0, 0].tolist()
    [1.0, 2.0]
    """
    g, x, plane = _global_setup("global_avg_pool_backward", grad_out, x, layout)
    return avg_pool_backward(g, x, plane, layout=layout)


def global_max_pool_backward(grad_out, x, *, layout=None) -> PoolGrads:
    """The vector-Jacobian product of `layoutops.global_max_pool`: each plane's output
    gradient goes to the plane's maximum, the first one in row-major order on a tie (the rule
    of `max_pool_backward`, PyTorch's).

    Parameters
    ----------
    grad_out : array_like
        Gradient with respect to ``global_max_pool(x)``, in the layout of ``x``.
    x : array_like
        The forward input (float).
    layout : str, optional

    Returns
    -------
    PoolGrads
        ``(grad_input,)`` in the layout and shape of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> x = np.array([[[[1.0, 5.0], [5.0, 2.0]]]])
    >>> lo.global_max_pool_backward(np.array([[[[3.0]]]]), x).grad_input.tolist()
    [[[[0.0, 3.0], [0.0, 0.0]]]]
    """
    g, x, plane = _global_setup("global_max_pool_backward", grad_out, x, layout)
    return max_pool_backward(g, x, plane, layout=layout)


def global_lp_pool_backward(grad_out, x, p, *, layout=None) -> PoolGrads:
    """The vector-Jacobian product of `layoutops.global_lp_pool`: ``x |x|^(p-2) y^(1-p)``
    times the plane's output gradient, with ``y`` the plane's norm; a plane whose norm is 0
    passes no gradient (PyTorch).

    Parameters
    ----------
    grad_out : array_like
        Gradient with respect to ``global_lp_pool(x, p)``, in the layout of ``x``.
    x : array_like
        The forward input (float).
    p : float
        As for `layoutops.global_lp_pool`.
    layout : str, optional

    Returns
    -------
    PoolGrads
        ``(grad_input,)`` in the layout and shape of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> x = np.array([[[3.0, -4.0]]])                     # NCW, norm 5
    >>> lo.global_lp_pool_backward(np.array([[[10.0]]]), x, 2).grad_input.tolist()
    [[[6.0, -8.0]]]
    """
    g, x, plane = _global_setup("global_lp_pool_backward", grad_out, x, layout)
    return lp_pool_backward(g, x, p, plane, layout=layout)


def max_unpool_backward(grad_out, x, indices, kernel_size, *, stride=None, padding=0,
                        output_size=None, layout=None) -> PoolGrads:
    """The vector-Jacobian product of `layoutops.max_unpool` with respect to ``x``: each
    value's gradient is ``grad_out`` at the cell its index sent it to.

    Where two values share an index, only the one the forward kept (the later in memory
    order) receives that cell's gradient; the other gets 0, as its value never reached the
    output.

    Parameters
    ----------
    grad_out : array_like
        Gradient with respect to ``max_unpool(x, indices, kernel_size, ...)``, in the layout of
        ``x``.
    x, indices, kernel_size, stride, padding, output_size, layout
        As for `layoutops.max_unpool` (``x``: only its shape and dtype are used).

    Returns
    -------
    PoolGrads
        ``(grad_input,)`` in the layout and shape of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> x = np.array([[[7.0, 8.0]]])
    >>> idx = np.array([[[1, 2]]])
    >>> g = np.array([[[10.0, 20.0, 30.0, 40.0]]])
    >>> lo.max_unpool_backward(g, x, idx, 2).grad_input.tolist()
    [[[20.0, 30.0]]]
    """
    op = "max_unpool_backward"
    x, lay = _prepare(op, x, layout, None)
    check_float(x, "x", op)
    # the forward on tags, not values: which input each output cell holds (ties resolved
    # as the forward resolves them), and the output's shape, validated like the forward
    tags = np.arange(1, x.size + 1, dtype=np.float64).reshape(x.shape)
    owner = max_unpool(tags, indices, kernel_size, stride=stride, padding=padding,
                       output_size=output_size, layout=layout)
    g = as_array(grad_out, "grad_out", op)
    _expect_shape(op, g, owner.shape)
    dtype = np.result_type(x.dtype, g.dtype)
    grad = np.zeros(x.shape, dtype)
    held = owner.ravel() > 0
    grad.reshape(-1)[owner.ravel()[held].astype(np.int64) - 1] = g.ravel()[held]
    return PoolGrads(grad)


def unfold_backward(grad_out, x, kernel_size, *, stride=1, padding=0, dilation=1,
                    layout=None) -> PoolGrads:
    """The vector-Jacobian product of `layoutops.unfold`: `fold` of ``grad_out`` onto ``x``'s
    spatial sizes (overlapping patch cells add up; cells in the padding are dropped).

    Parameters
    ----------
    grad_out : array_like
        Gradient with respect to ``unfold(x, kernel_size, ...)``, in unfold's output form.
    x : array_like
        The forward input (only its shape and dtype are used).
    kernel_size, stride, padding, dilation, layout
        As for `layoutops.unfold`.

    Returns
    -------
    PoolGrads
        ``(grad_input,)`` in the layout and shape of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> x = np.zeros((1, 1, 3, 3))
    >>> g = np.ones((1, 4, 4))                            # (N, C*2*2, L) of 2x2 patches
    >>> lo.unfold_backward(g, x, 2).grad_input[0, 0].tolist()
    [[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]
    """
    op = "unfold_backward"
    x, lay = _prepare(op, x, layout, None)
    g = as_array(grad_out, "grad_out", op)
    # the forward on an empty batch: validates the arguments, gives the patches' shape
    probe = unfold(_empty_batch(x, lay.batch_axis), kernel_size, stride=stride,
                   padding=padding, dilation=dilation, layout=layout)
    _expect_shape(op, g, (x.shape[lay.batch_axis], *probe.shape[1:]))
    sizes = tuple(x.shape[ax] for ax in lay.spatial_axes)
    grad = fold(g, sizes, kernel_size, stride=stride, padding=padding, dilation=dilation,
                layout=layout)
    return PoolGrads(grad.astype(np.result_type(x.dtype, g.dtype), copy=False))


def fold_backward(grad_out, cols, output_size, kernel_size, *, stride=1, padding=0,
                  dilation=1, layout=None) -> PoolGrads:
    """The vector-Jacobian product of `layoutops.fold` with respect to ``cols``: `unfold` of
    ``grad_out`` (each patch cell reads the output cell it was added to; cells in the padding
    get 0).

    Parameters
    ----------
    grad_out : array_like
        Gradient with respect to ``fold(cols, output_size, kernel_size, ...)``, in the layout's
        image form.
    cols : array_like
        The forward input (only its shape and dtype are used).
    output_size, kernel_size, stride, padding, dilation, layout
        As for `layoutops.fold`.

    Returns
    -------
    PoolGrads
        ``(grad_input,)``: the gradient of ``cols``, in its shape.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> cols = np.zeros((1, 4, 4))
    >>> g = np.arange(9.0).reshape(1, 1, 3, 3)
    >>> lo.fold_backward(g, cols, (3, 3), 2).grad_input[0, :, 0].tolist()
    [0.0, 1.0, 3.0, 4.0]
    """
    op = "fold_backward"
    cols = as_array(cols, "cols", op)
    g = as_array(grad_out, "grad_out", op)
    # the forward on an empty batch: validates the arguments, gives the image's shape
    probe = fold(_empty_batch(cols, 0), output_size, kernel_size, stride=stride,
                 padding=padding, dilation=dilation, layout=layout)
    shape = list(probe.shape)
    shape[activation_layout(probe.ndim, layout).batch_axis] = cols.shape[0]
    _expect_shape(op, g, tuple(shape))
    grad = unfold(g, kernel_size, stride=stride, padding=padding, dilation=dilation,
                  layout=layout)
    return PoolGrads(grad.astype(np.result_type(cols.dtype, g.dtype), copy=False))
