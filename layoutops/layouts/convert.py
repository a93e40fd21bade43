"""Array, kernel and framework-weight conversions between layouts.

- `convert`: an activation (or any array) from one layout to another with the same letters
  (a transpose; a view unless ``copy=True``).
- `convert_kernel`: a kernel between kernel layouts, including the reshapes that merge or
  split groups (``GOIHW <-> OIHW``) and the depthwise forms (PyTorch ``(C*M, 1, kh, kw)`` as
  ``OIHW`` <-> TF ``HWCM``).
- `convert_weight`: the same driven by framework names, using the table `FRAMEWORKS`
  (data, not scattered ifs), including the spatial flip between transposed-conv conventions.

Channel order across a split is the frameworks' one: ``o = g * O_per_group + o'`` for groups
and ``o = c * M + m`` for a depthwise multiplier.

Imports only numpy and the layout core.
"""

from __future__ import annotations

import dataclasses
import numbers
from types import MappingProxyType

import numpy as np

from ..errors import LayoutError
from .layout import (
    ACTIVATION,
    DEPTHWISE_KERNEL,
    GROUPED_KERNEL,
    KERNEL,
    Layout,
    LayoutLike,
    _resolve_alias,
    _spatial_letters,
    permutation,
)

__all__ = [
    "convert",
    "convert_kernel",
    "convert_weight",
    "Framework",
    "FRAMEWORKS",
    "WEIGHT_OPS",
    "framework_layout",
]


def convert(x, src: LayoutLike, dst: LayoutLike, *, copy: bool = False) -> np.ndarray:
    """An array in layout ``src`` as the same array in layout ``dst``.

    ``"channels_first"`` / ``"channels_last"`` are resolved by ``x.ndim``. Both layouts must
    have the same letters (use `convert_kernel` for conversions that reshape).

    Parameters
    ----------
    x : array_like
        The array, in layout ``src``.
    src, dst : str or Layout
        The source and destination layouts.
    copy : bool, default False
        If False the result is a view of ``x`` (a transpose); if True a new C-contiguous array.

    Returns
    -------
    numpy.ndarray
        ``x`` in layout ``dst``.

    Raises
    ------
    LayoutError
        If a layout is invalid, its rank differs from ``x.ndim``, or the two layouts do not
        have the same letters.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> x = np.zeros((2, 3, 5, 4))
    >>> lo.convert(x, "NCHW", "NHWC").shape
    (2, 5, 4, 3)
    >>> lo.convert(x, "channels_first", "channels_last").shape
    (2, 5, 4, 3)
    >>> np.shares_memory(lo.convert(x, "NCHW", "NHWC"), x)
    True
    """
    x = np.asarray(x)
    src_l = _resolve_alias(src, x.ndim)
    dst_l = _resolve_alias(dst, x.ndim)
    src_l.check_ndim(x.ndim)
    dst_l.check_ndim(x.ndim)
    out = x.transpose(permutation(src_l, dst_l))
    if copy:
        out = np.array(out, order="C", copy=True)
    return out


# -- kernels ------------------------------------------------------------------------------------


def _check_groups(groups, where: str) -> int | None:
    if groups is None:
        return None
    if not isinstance(groups, numbers.Integral) or isinstance(groups, (bool, np.bool_)):
        raise TypeError(f"`{where}`: `groups` must be an int, got {groups!r}")
    if groups < 1:
        raise ValueError(f"`{where}`: `groups` must be >= 1, got {groups}")
    return int(groups)


def _to_plain(w: np.ndarray, src: Layout, transposed: bool) -> tuple[np.ndarray, int | None]:
    """``w`` (in ``src``) in the plain layout ``'OI' + src.spatial``, and the groups implied."""
    sp = src.spatial
    if src.kind == KERNEL:
        return w.transpose(permutation(src, "OI" + sp)), None
    if src.kind == GROUPED_KERNEL:
        if transposed:  # G merges into I as its outer index: i = g * I_per_group + i'
            v = w.transpose(permutation(src, "OGI" + sp))
            o, g, i = v.shape[:3]
            return v.reshape((o, g * i) + v.shape[3:]), g
        v = w.transpose(permutation(src, "GOI" + sp))  # o = g * O_per_group + o'
        g, o, i = v.shape[:3]
        return v.reshape((g * o, i) + v.shape[3:]), g
    # depthwise C, M: o = c * M + m, I = 1
    v = w.transpose(permutation(src, "CM" + sp))
    c, m = v.shape[:2]
    return v.reshape((c * m, 1) + v.shape[2:]), c


def _from_plain(
    v: np.ndarray, sp: str, dst: Layout, src: Layout, groups: int | None, transposed: bool
) -> np.ndarray:
    """``v`` in the plain layout ``'OI' + sp`` as an array in ``dst``."""
    plain = Layout("OI" + sp)
    if dst.kind == KERNEL:
        return v.transpose(permutation(plain, dst))
    o, i = v.shape[:2]
    rest = v.shape[2:]
    route = f"convert_kernel: {src.spec!r} -> {dst.spec!r}"
    if dst.kind == GROUPED_KERNEL:
        letter, size = ("I", i) if transposed else ("O", o)
        if groups is None:
            raise LayoutError(
                f"{route} splits {letter}={size} into groups; pass `groups=`"
                + (" (transposed kernels split I)" if transposed else "")
            )
        if size % groups:
            raise LayoutError(f"{route}: `groups`={groups} does not divide {letter}={size}")
        if transposed:
            u = v.reshape((o, groups, i // groups) + rest)
            return u.transpose(permutation("OGI" + sp, dst))
        u = v.reshape((groups, o // groups, i) + rest)
        return u.transpose(permutation("GOI" + sp, dst))
    # depthwise C, M
    if groups is None:
        raise LayoutError(
            f"{route} splits O={o} into C channels times M multipliers; pass `groups=` C"
        )
    if i != 1:
        raise LayoutError(
            f"{route}: a depthwise kernel has I=1 (one input channel per group), got I={i}"
        )
    if o % groups:
        raise LayoutError(f"{route}: `groups`={groups} (C) does not divide O={o}")
    u = v.reshape((groups, o // groups) + rest)
    return u.transpose(permutation("CM" + sp, dst))


def convert_kernel(
    w, src: LayoutLike, dst: LayoutLike, *, groups: int | None = None, transposed: bool = False
) -> np.ndarray:
    """A convolution kernel in layout ``src`` as the same kernel in layout ``dst``.

    Plain permutations (``OIHW``, ``HWIO``, ``OHWI``, ``IHWO``, ``IOHW``, ``HWOI``, ... and
    their 1-D and 3-D analogues) are transposes and return a view. Conversions between kinds
    reshape:

    - grouped ``GOIHW`` <-> ``OIHW``: ``G`` merges into ``O`` as its outer index
      (``o = g * O_per_group + o'``), or into ``I`` when ``transposed=True`` (transposed
      kernels such as PyTorch's ``IOHW`` count all input channels in ``I``). Splitting needs
      ``groups``.
    - depthwise ``HWCM`` (TF/Keras) <-> ``OIHW`` with ``I = 1`` (PyTorch ``(C*M, 1, kh, kw)``),
      ``o = c * M + m``. The direction towards ``C``, ``M`` needs ``groups=C``.
    - grouped <-> depthwise (``G = C``, ``O = M``, ``I = 1``).

    Parameters
    ----------
    w : array_like
        The kernel, in layout ``src``.
    src, dst : str or Layout
        Kernel layouts (``O``/``I``, ``G``/``O``/``I`` or ``C``/``M`` plus the same spatial
        letters).
    groups : int, optional
        The number of groups (for a depthwise kernel: the number of channels ``C``). Needed
        when the conversion splits a channel axis; checked against the kernel otherwise.
    transposed : bool, default False
        The kernel belongs to a transposed convolution (``G`` merges into ``I``).

    Returns
    -------
    numpy.ndarray
        The kernel in layout ``dst`` (a view for a plain permutation, else possibly a copy).

    Raises
    ------
    LayoutError
        If a layout is not a kernel layout, ``src`` does not match ``w.ndim``, the spatial
        letters differ, ``groups`` is missing where a split needs it or does not divide the
        channel axis, a depthwise target gets ``I != 1``, or a depthwise layout is used with
        ``transposed=True``.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> w = np.zeros((8, 3, 5, 4))                   # PyTorch OIHW
    >>> lo.convert_kernel(w, "OIHW", "HWIO").shape   # TF / JAX
    (5, 4, 3, 8)
    >>> lo.convert_kernel(w, "OIHW", "GOIHW", groups=2).shape
    (2, 4, 3, 5, 4)
    >>> dw = np.zeros((6, 1, 3, 3))                  # depthwise, C=3, M=2
    >>> lo.convert_kernel(dw, "OIHW", "HWCM", groups=3).shape
    (3, 3, 3, 2)
    """
    w = np.asarray(w)
    groups = _check_groups(groups, "convert_kernel")
    src_l, dst_l = Layout(src), Layout(dst)
    for role, lay in (("source", src_l), ("destination", dst_l)):
        if lay.kind == ACTIVATION:
            raise LayoutError(
                f"convert_kernel: {role} layout {lay.spec!r} is an activation layout; a kernel "
                "layout has O and I (G too when grouped) or C and M (depthwise); use convert"
            )
        if transposed and lay.kind == DEPTHWISE_KERNEL:
            raise LayoutError(
                f"convert_kernel: {role} layout {lay.spec!r} is a depthwise (C, M) layout, "
                "which has no transposed form; use transposed=False"
            )
    src_l.check_ndim(w.ndim, "kernel")
    if sorted(src_l.spatial) != sorted(dst_l.spatial):
        raise LayoutError(
            f"convert_kernel: layouts {src_l.spec!r} and {dst_l.spec!r} have different spatial "
            f"letters ({src_l.spatial!r} vs {dst_l.spatial!r}); they must match by letter"
        )
    plain, implied = _to_plain(w, src_l, bool(transposed))
    if groups is not None and implied is not None and groups != implied:
        what = "C" if src_l.kind == DEPTHWISE_KERNEL else "G"
        raise LayoutError(
            f"convert_kernel: `groups`={groups} but the {src_l.spec!r} kernel has "
            f"{what}={implied}"
        )
    if src_l.kind == dst_l.kind:  # same letters: a plain transpose, a view
        return w.transpose(permutation(src_l, dst_l))
    return _from_plain(
        plain, src_l.spatial, dst_l, src_l, groups if groups is not None else implied,
        bool(transposed),
    )


# -- frameworks ---------------------------------------------------------------------------------

WEIGHT_OPS = ("conv", "depthwise", "conv_transpose")


@dataclasses.dataclass(frozen=True)
class Framework:
    """The layout conventions of one framework, written for 2-D (``H``, ``W``).

    For 1-D and 3-D the spatial letters ``HW`` are replaced by ``W`` and ``DHW``.

    Attributes
    ----------
    name : str
        The framework's key in `FRAMEWORKS`.
    activation : str
        The default activation layout of its convolution.
    conv, depthwise, conv_transpose : str
        Kernel layouts of the convolution, the depthwise convolution and the transposed
        convolution, in this library's letters (for ``conv_transpose``: ``I`` = channels of the
        op's input, ``O`` = output channels per group).
    transpose_flipped : bool
        True if the framework's transposed convolution uses its kernel unflipped, i.e. its
        kernel is PyTorch's kernel reversed along every spatial axis (JAX's
        ``lax.conv_transpose`` with ``transpose_kernel=False``, Flax's ``ConvTranspose``).
    grouped_transpose : bool
        True if its transposed convolution takes ``groups`` (then ``G`` merges into ``I``).
    dense : str
        The layout of a 2-D dense (linear) weight: ``'OI'`` = ``(out, in)``, ``'IO'`` =
        ``(in, out)``.
    conv_transpose_activation : str
        The default activation layout of its transposed convolution.
    source : str
        Where the convention comes from.
    """

    name: str
    activation: str
    conv: str
    depthwise: str
    conv_transpose: str
    transpose_flipped: bool
    grouped_transpose: bool
    dense: str
    conv_transpose_activation: str
    source: str


def _fw(name, activation, conv, depthwise, conv_transpose, flipped, grouped, dense, source,
        conv_transpose_activation=None):
    return Framework(name, activation, conv, depthwise, conv_transpose, flipped, grouped, dense,
                     conv_transpose_activation or activation, source)


#: Framework conventions, as data. Keys: ``torch``, ``tf`` (Keras), ``jax`` (``jax.lax``
#: defaults), ``flax``, ``onnx``, ``tflite``.
FRAMEWORKS = MappingProxyType({
    "torch": _fw(
        "torch", "NCHW", "OIHW", "OIHW", "IOHW", False, True, "OI",
        "torch.nn.Conv2d weight (C_out, C_in/groups, kh, kw); depthwise (C*M, 1, kh, kw); "
        "ConvTranspose2d weight (C_in, C_out/groups, kh, kw); Linear weight (out, in)",
    ),
    "tf": _fw(
        "tf", "NHWC", "HWIO", "HWCM", "HWOI", False, False, "IO",
        "Keras Conv2D kernel (kh, kw, C_in/groups, C_out); DepthwiseConv2D (kh, kw, C, M); "
        "Conv2DTranspose (kh, kw, C_out, C_in), the gradient of conv2d; Dense (in, out)",
    ),
    "jax": _fw(
        "jax", "NCHW", "OIHW", "OIHW", "HWIO", True, False, "IO",
        "jax.lax.conv_general_dilated default dimension_numbers (NCHW, OIHW, NCHW), depthwise "
        "via feature_group_count=C; jax.lax.conv_transpose defaults to (NHWC, HWIO, NHWC) with "
        "transpose_kernel=False: the kernel is not flipped and I is the input's channels",
        conv_transpose_activation="NHWC",
    ),
    "flax": _fw(
        "flax", "NHWC", "HWIO", "HWIO", "HWIO", True, False, "IO",
        "flax.linen.Conv kernel (kh, kw, C_in/groups, C_out), depthwise via "
        "feature_group_count=C: (kh, kw, 1, C*M); ConvTranspose kernel (kh, kw, C_in, C_out) "
        "with transpose_kernel=False (unflipped); Dense kernel (in, out)",
    ),
    "onnx": _fw(
        "onnx", "NCHW", "OIHW", "OIHW", "IOHW", False, True, "OI",
        "ONNX Conv W (M, C/group, kH, kW); ConvTranspose W (C, M/group, kH, kW); dense as "
        "exported by PyTorch: Gemm with transB=1, B (out, in)",
    ),
    "tflite": _fw(
        "tflite", "NHWC", "OHWI", "IHWO", "OHWI", False, False, "OI",
        "TFLite CONV_2D filter (C_out, kh, kw, C_in); DEPTHWISE_CONV_2D filter (1, kh, kw, C*M); "
        "TRANSPOSE_CONV weights (C_out, kh, kw, C_in); FULLY_CONNECTED weights (out, in)",
    ),
})


def _framework(name, where: str) -> Framework:
    try:
        return FRAMEWORKS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"`{where}`: unknown framework {name!r}; expected one of {', '.join(FRAMEWORKS)}"
        ) from None


def framework_layout(framework: str, op: str, n_spatial: int = 2) -> Layout:
    """The kernel layout a framework uses for ``op`` with ``n_spatial`` spatial axes.

    Parameters
    ----------
    framework : str
        A key of `FRAMEWORKS`.
    op : str
        ``"conv"``, ``"depthwise"`` or ``"conv_transpose"``; also ``"activation"`` and
        ``"conv_transpose_activation"``.
    n_spatial : int, default 2
        1, 2 or 3.

    Returns
    -------
    Layout

    Raises
    ------
    ValueError
        For an unknown framework or op.

    Examples
    --------
    >>> import layoutops as lo
    >>> lo.framework_layout("tf", "conv", 3), lo.framework_layout("torch", "conv_transpose", 1)
    (Layout('DHWIO'), Layout('IOW'))
    """
    fw = _framework(framework, "framework_layout")
    fields = WEIGHT_OPS + ("activation", "conv_transpose_activation")
    if op not in fields:
        raise ValueError(
            f"`framework_layout`: unknown op {op!r}; expected one of {', '.join(fields)}"
        )
    spec = getattr(fw, op)
    return Layout(spec.replace("HW", _spatial_letters(n_spatial)))


def convert_weight(w, op: str, src: str, dst: str, *, groups: int | None = None) -> np.ndarray:
    """A convolution weight in framework ``src``'s convention as one in framework ``dst``'s.

    Uses the layouts of `FRAMEWORKS` and `convert_kernel`; for ``op="conv_transpose"`` it
    also reverses the spatial axes when exactly one of the two frameworks uses the kernel
    unflipped (JAX ``lax.conv_transpose`` defaults, Flax ``ConvTranspose``), so both compute
    the same function. The rank of ``w`` picks 1-D, 2-D or 3-D.

    Parameters
    ----------
    w : array_like
        The weight, in ``src``'s kernel layout for ``op``.
    op : str
        ``"conv"``, ``"depthwise"`` or ``"conv_transpose"``.
    src, dst : str
        Framework names: ``torch``, ``tf``, ``jax``, ``flax``, ``onnx``, ``tflite``.
    groups : int, optional
        For ``"depthwise"``: the number of channels ``C`` (needed to go from a ``(C*M, 1, ...)``
        form to TF's ``(..., C, M)``). For ``"conv"`` and ``"conv_transpose"`` it is checked
        against ``O`` (``I`` for transposed kernels); groups > 1 with ``"conv_transpose"`` is
        only valid between frameworks whose transposed convolution takes groups (torch, onnx).

    Returns
    -------
    numpy.ndarray
        The weight in ``dst``'s layout (a view where no flip or reshape is needed).

    Raises
    ------
    ValueError
        For an unknown framework or op, or groups a framework cannot express.
    LayoutError
        If the weight's rank is not 3 to 5 or a reshape does not fit (see `convert_kernel`).

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> w = np.zeros((8, 3, 5, 4))                         # torch.nn.Conv2d(3, 8, (5, 4))
    >>> lo.convert_weight(w, "conv", "torch", "tf").shape
    (5, 4, 3, 8)
    >>> dw = np.zeros((6, 1, 3, 3))                        # depthwise, C=3, M=2
    >>> lo.convert_weight(dw, "depthwise", "torch", "tf", groups=3).shape
    (3, 3, 3, 2)
    >>> wt = np.arange(4.0).reshape(1, 1, 1, 4)            # ConvTranspose2d(1, 1, (1, 4))
    >>> lo.convert_weight(wt, "conv_transpose", "torch", "flax").ravel()
    array([3., 2., 1., 0.])
    """
    if op not in WEIGHT_OPS:
        raise ValueError(
            f"`convert_weight`: unknown op {op!r}; expected one of {', '.join(WEIGHT_OPS)}"
        )
    src_fw = _framework(src, "convert_weight")
    dst_fw = _framework(dst, "convert_weight")
    groups = _check_groups(groups, "convert_weight")
    w = np.asarray(w)
    n_spatial = w.ndim - 2
    if n_spatial not in (1, 2, 3):
        raise LayoutError(
            f"convert_weight: a {op} weight has rank 3, 4 or 5 (1-D to 3-D), got rank {w.ndim} "
            f"with shape {w.shape}"
        )
    src_l = framework_layout(src, op, n_spatial)
    dst_l = framework_layout(dst, op, n_spatial)
    transposed = op == "conv_transpose"
    if transposed and groups is not None and groups > 1:
        for fw in (src_fw, dst_fw):
            if not fw.grouped_transpose:
                raise ValueError(
                    f"`convert_weight`: {fw.name}'s transposed convolution takes no groups, "
                    f"got groups={groups}"
                )
    if op == "depthwise" and src_l.kind == KERNEL:
        i = w.shape[src_l.axis("I")]
        if i != 1:
            raise LayoutError(
                f"convert_weight: a depthwise weight in {src}'s {src_l.spec!r} layout has I=1, "
                f"got I={i} (shape {w.shape})"
            )
    # groups only drive the depthwise split; for conv / conv_transpose the layouts are
    # plain permutations and groups only count channels: O = C_out (conv), I = C_in
    # (conv_transpose) must split into them.
    if groups is not None and op != "depthwise":
        letter = "I" if transposed else "O"
        size = w.shape[src_l.axis(letter)]
        if size % groups:
            raise LayoutError(
                f"convert_weight: `groups`={groups} does not divide {letter}={size} of the {op} "
                f"weight in {src}'s {src_l.spec!r} layout (shape {w.shape})"
            )
    out = convert_kernel(
        w, src_l, dst_l, groups=groups if op == "depthwise" else None, transposed=transposed
    )
    if transposed and src_fw.transpose_flipped != dst_fw.transpose_flipped:
        out = np.flip(out, axis=dst_l.spatial_axes)
    return out
