"""Operand preparation shared by the conv family (conv, depthwise conv, transposed conv).

`prepare_conv` resolves the layouts, validates channels, groups, bias and dtypes, and presents
the kernel with an explicit group axis — as *letters*, not as a transposed copy: the kernels
build their einsum subscripts from these letter strings.

Internal letter strings (not `Layout` objects, since they mix roles):
- ``x_letters``: the input's layout with ``C`` replaced by ``GC`` (``NCHW`` -> ``NGCHW``,
  ``NHWC`` -> ``NHWGC``); ``x_grouped`` is the matching view of ``x`` (C split as (G, C/G)).
- ``w_letters``: the kernel's layout with a ``G`` axis, ``O`` and ``I`` counted per group:
  ``OIHW`` -> ``GOIHW`` (conv: G is the outer part of O), ``IOHW`` -> ``GIOHW``
  (transposed: G is the outer part of I), ``HWCM`` -> ``HWGOI`` (depthwise: C is G, M is O,
  and a unit I axis is appended), ``GOIHW`` unchanged; ``w_grouped`` is the matching view.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..errors import LayoutError
from ..layouts import Layout, activation_layout, kernel_layout
from ..layouts.layout import _DEFAULT
from ._dtypes import as_array, float_dtypes
from ._params import is_int

__all__ = [
    "ConvOperands",
    "ConvPlan",
    "prepare_conv",
    "split_axis",
    "add_bias",
    "check_rank",
    "check_choice",
    "check_padding_mode_limits",
    "groups_from_arg",
]


@dataclass(frozen=True)
class ConvPlan:
    """What `prepare_conv` derives from the operands' shapes and dtypes and the arguments
    alone (cached per call signature, `_conv_plan`); ``w_split`` is the kernel axis split
    into ``(G, O or I)`` (None: the kernel has its group axis, or a depthwise one gets a
    unit ``I`` axis)."""

    x_layout: Layout
    x_letters: str
    w_layout: Layout
    w_letters: str
    w_split: int | None
    out_layout: Layout
    groups: int
    batch: int
    c_in: int
    c_out: int
    in_sizes: tuple[int, ...]
    kernel_sizes: tuple[int, ...]
    dtype: np.dtype
    compute_dtype: np.dtype

    @property
    def spatial(self) -> str:
        """The spatial letters, in the input layout's order (the order of every per-axis
        argument)."""
        return self.x_layout.spatial


@dataclass(frozen=True)
class ConvOperands(ConvPlan):
    """Everything a conv-family kernel needs, validated: the plan and the arrays."""

    op: str
    x: np.ndarray
    x_grouped: np.ndarray
    weight: np.ndarray
    w_grouped: np.ndarray
    bias: np.ndarray | None


def check_rank(op: str, x: np.ndarray, n_spatial: int | None) -> None:
    """For the ``1d``/``2d``/``3d`` names: ``x`` must have ``n_spatial + 2`` axes."""
    if n_spatial is not None and x.ndim != n_spatial + 2:
        raise ValueError(
            f"`{op}`: `x` must have {n_spatial + 2} axes (N, C and {n_spatial} spatial), "
            f"got shape {x.shape}"
        )
    if x.ndim < 3:
        raise ValueError(
            f"`{op}`: `x` must have at least 3 axes (N, C and a spatial axis), got shape {x.shape}"
        )


def split_axis(arr: np.ndarray, axis: int, outer: int) -> np.ndarray:
    """A view of ``arr`` with ``axis`` split into ``(outer, size // outer)`` (never a copy)."""
    inner = arr.shape[axis] // outer
    # splitting one axis never needs a copy, so reshape returns a view (in 0.7 us, where
    # as_strided took 3.3 us of every conv call, twice)
    view = arr.reshape(arr.shape[:axis] + (outer, inner) + arr.shape[axis + 1 :])
    view.flags.writeable = False
    return view


def prepare_conv(
    op: str,
    x,
    weight,
    bias,
    *,
    groups: int | None,
    layout,
    kernel_layout_spec,
    out_layout,
    transposed: bool = False,
    depthwise: bool = False,
    n_spatial: int | None = None,
) -> ConvOperands:
    """Validate and prepare the operands of a conv-family op (see the module docstring).

    ``groups=None`` means: from the kernel (its ``G`` axis, or ``C`` for a depthwise ``HWCM``
    kernel, or the input channels when ``depthwise=True``), else 1.
    """
    x = as_array(x, "x", op)
    weight = as_array(weight, "weight", op)
    args = (op, x.shape, x.dtype, weight.shape, weight.dtype, groups, type(groups), layout,
            kernel_layout_spec, out_layout, transposed, depthwise, n_spatial, _DEFAULT.get())
    try:
        plan = _conv_plan(*args)
    except TypeError as e:
        if "unhashable" not in str(e):
            raise
        plan = _conv_plan.__wrapped__(*args)  # a list or other unhashable argument

    # grouped views (no copies)
    x_grouped = split_axis(x, plan.x_layout.channel_axis, plan.groups)
    if plan.w_split is None:
        w_grouped = weight if plan.w_layout.kind == "grouped_kernel" else weight[..., np.newaxis]
    else:
        w_grouped = split_axis(weight, plan.w_split, plan.groups)

    bias_arr = None
    if bias is not None:
        b = as_array(bias, "bias", op)
        c_out = plan.c_out
        squeezed = b.reshape(-1) if b.size == c_out else None
        if squeezed is None or sum(1 for s in b.shape if s != 1) > 1:
            raise ValueError(
                f"`{op}`: `bias` must have C_out={c_out} elements (shape ({c_out},) or one that "
                f"squeezes to it), got shape {b.shape}"
            )
        bias_arr = squeezed.astype(plan.dtype)

    return ConvOperands(
        **plan.__dict__, op=op, x=x, x_grouped=x_grouped, weight=weight, w_grouped=w_grouped,
        bias=bias_arr,
    )


class _Operand(NamedTuple):
    """An operand's shape and dtype: what the checks of `_conv_plan` read."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)


@functools.lru_cache(maxsize=256)
def _conv_plan(op, x_shape, x_dtype, w_shape, w_dtype, groups, _groups_type, layout,
               kernel_layout_spec, out_layout, transposed, depthwise, n_spatial, _default):
    """Validate the operands' shapes, dtypes and the arguments (`prepare_conv`; cached per
    call signature: a repeated call skips the layout resolution and the checks, 0.1-0.2 ms
    of each conv call on the 2-core test machine). ``_groups_type`` keeps ``True`` and
    ``1`` apart; ``_default`` is the default layout the call resolves ``None`` against."""
    x, weight = _Operand(x_shape, x_dtype), _Operand(w_shape, w_dtype)
    check_rank(op, x, n_spatial)
    dtype, cdtype = float_dtypes(op, x=x, weight=weight)
    x_layout = activation_layout(x.ndim, layout)
    kind = "conv_transpose" if transposed else ("depthwise" if depthwise else "conv")
    try:
        w_layout = kernel_layout(x_layout, kernel_layout_spec, op=kind, ndim=weight.ndim)
    except LayoutError as e:
        raise LayoutError(f"`{op}`: {e}") from e
    o_layout = activation_layout(x.ndim, x_layout if out_layout is None else out_layout)
    if sorted(o_layout.spatial) != sorted(x_layout.spatial):
        raise LayoutError(
            f"`{op}`: out_layout {o_layout.spec!r} must use the input's spatial letters "
            f"{x_layout.spatial!r}"
        )

    dims = w_layout.shape_of(weight.shape)
    c_in = x.shape[x_layout.channel_axis]
    batch = x.shape[x_layout.batch_axis]
    in_sizes = tuple(x.shape[a] for a in x_layout.spatial_axes)
    kernel_sizes = tuple(dims[c] for c in x_layout.spatial)
    if any(k < 1 for k in kernel_sizes):
        raise ValueError(f"`{op}`: kernel spatial sizes must be >= 1, got shape {weight.shape}")

    # the group count and the per-group channel counts, by kernel kind
    if w_layout.kind == "depthwise_kernel":
        if transposed:
            raise LayoutError(f"`{op}`: a depthwise (C, M) kernel layout needs a forward conv")
        g_kernel, o_per, i_per = dims["C"], dims["M"], 1
    elif w_layout.kind == "grouped_kernel":
        g_kernel, o_per, i_per = dims["G"], dims["O"], dims["I"]
    else:
        g_kernel = None
        o_per, i_per = dims["O"], dims["I"]
    if depthwise and groups is None:
        groups = c_in
    if groups is None:
        groups = g_kernel or 1
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"`{op}`: `groups` must be an int >= 1, got {groups!r}")
    groups = int(groups)
    if g_kernel is not None and g_kernel != groups:
        raise ValueError(
            f"`{op}`: `groups`={groups} but the {w_layout.spec} kernel has {g_kernel} groups"
        )
    if c_in % groups:
        raise ValueError(f"`{op}`: `groups` must divide `C_in`={c_in}, got {groups}")

    if transposed:
        # I = C_in (all groups), O = C_out / groups; in G layouts both count per group
        if g_kernel is None:
            total_i = i_per
            if total_i != c_in:
                raise ValueError(
                    f"`{op}`: the kernel's I axis must equal `C_in`={c_in}, got {total_i} "
                    f"(kernel {w_layout.spec} shape {weight.shape})"
                )
            i_per = total_i // groups
        elif i_per * groups != c_in:
            raise ValueError(
                f"`{op}`: the kernel's I axis must be `C_in / groups`={c_in // groups}, got {i_per}"
            )
        c_out = o_per * groups
    else:
        # O = C_out (all groups), I = C_in / groups
        if i_per != c_in // groups:
            raise ValueError(
                f"`{op}`: the kernel's I axis must be `C_in / groups`={c_in // groups} "
                f"(C_in={c_in}, groups={groups}), got {i_per} (kernel {w_layout.spec} shape "
                f"{weight.shape})"
            )
        if g_kernel is None:
            if o_per % groups:
                raise ValueError(
                    f"`{op}`: `groups` must divide `C_out`={o_per}, got {groups}"
                )
            c_out = o_per
            o_per = c_out // groups
        else:
            c_out = o_per * groups

    x_letters = x_layout.spec.replace("C", "GC")
    spec = w_layout.spec
    w_split = None
    if w_layout.kind == "grouped_kernel":
        w_letters = spec
    elif w_layout.kind == "depthwise_kernel":
        w_letters = spec.replace("C", "G").replace("M", "O") + "I"
    else:
        split = "I" if transposed else "O"
        w_split = w_layout.axis(split)
        w_letters = spec.replace(split, "G" + split)
    return ConvPlan(
        x_layout=x_layout,
        x_letters=x_letters,
        w_layout=w_layout,
        w_letters=w_letters,
        w_split=w_split,
        out_layout=o_layout,
        groups=groups,
        batch=batch,
        c_in=c_in,
        c_out=c_out,
        in_sizes=in_sizes,
        kernel_sizes=kernel_sizes,
        dtype=dtype,
        compute_dtype=cdtype,
    )


def add_bias(out: np.ndarray, out_layout: Layout, bias: np.ndarray | None) -> np.ndarray:
    """Add ``bias`` (shape ``(C_out,)``) along the channel axis of ``out``, in place."""
    if bias is not None:
        shape = [1] * out.ndim
        shape[out_layout.channel_axis] = bias.shape[0]
        out += bias.reshape(shape).astype(out.dtype, copy=False)
    return out


def check_choice(op: str, name: str, value, choices) -> str:
    """``value`` lower-cased if it is one of ``choices`` (case-insensitive), else `ValueError`."""
    if not isinstance(value, str) or value.lower() not in choices:
        raise ValueError(f"`{op}`: `{name}` must be one of {', '.join(choices)}; got {value!r}")
    return value.lower()


def check_padding_mode_limits(op: str, mode: str, geometry, spatial: str) -> None:
    """PyTorch's limits: reflect needs padding < the input size, circular padding <= it."""
    if mode == "zeros":
        return
    for letter, size, (b, e) in zip(spatial, geometry.in_sizes, geometry.pads, strict=True):
        if mode == "reflect" and max(b, e) >= size:
            raise ValueError(
                f"`{op}`: `padding` for padding_mode='reflect' must be < the input size along "
                f"{letter!r} ({size}), got {(b, e)}"
            )
        if mode == "circular" and max(b, e) > size:
            raise ValueError(
                f"`{op}`: `padding` for padding_mode='circular' must be <= the input size along "
                f"{letter!r} ({size}), got {(b, e)}"
            )


def groups_from_arg(groups, kernel_layout_spec):
    """SPEC's default ``groups=1`` with a grouped (``G``) kernel layout means "from the kernel":
    returns None then (`prepare_conv` reads the count off the kernel), else ``groups``."""
    if is_int(groups) and groups == 1 and kernel_layout_spec is not None:
        if "G" in str(kernel_layout_spec):
            return None
    return groups
