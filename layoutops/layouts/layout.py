"""Layout descriptors: parse and validate layout strings, derive permutations and defaults.

A layout is a string of single upper-case letters, one per array axis. ``N`` is the batch,
``C`` the channels of an activation (or the input channel of a depthwise kernel), ``O`` / ``I``
the output / input channels of a kernel, ``G`` the groups of a grouped kernel, ``M`` the
depthwise channel multiplier; every other letter is a spatial axis.

This module imports only numpy and the package's leaf error module.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator

from ..errors import LayoutError

__all__ = [
    "Layout",
    "LayoutLike",
    "ROLE_LETTERS",
    "permutation",
    "activation_layout",
    "kernel_layout",
    "default_layout",
    "channels_first",
    "channels_last",
]

ROLE_LETTERS = frozenset("NCOIGM")

#: spatial letters used by "channels_first" / "channels_last" for 1, 2 and 3 spatial axes
_SPATIAL_BY_RANK = {1: "W", 2: "HW", 3: "DHW"}

ACTIVATION = "activation"
KERNEL = "kernel"
GROUPED_KERNEL = "grouped_kernel"
DEPTHWISE_KERNEL = "depthwise_kernel"

_ROLE_NAMES = {
    "N": "batch",
    "C": "channel",
    "O": "output channel",
    "I": "input channel",
    "G": "group",
    "M": "channel multiplier",
}


class Layout:
    """An immutable, hashable, validated layout descriptor.

    Parameters
    ----------
    spec : str or Layout
        One upper-case letter per axis, e.g. ``"NHWC"``, ``"OIHW"``, ``"GOIHW"``, ``"HWCM"``.

    Raises
    ------
    LayoutError
        For an empty string, a character that is not an upper-case letter, a repeated letter,
        a set of role letters that is not an activation (``N``, ``C``), kernel (``O``, ``I``),
        grouped kernel (``G``, ``O``, ``I``) or depthwise kernel (``C``, ``M``) layout, or no
        spatial letter.

    Examples
    --------
    >>> import layoutops as lo
    >>> lay = lo.Layout("NHWC")
    >>> lay.kind, lay.spatial, lay.spatial_axes, lay.channel_axis
    ('activation', 'HW', (1, 2), 3)
    >>> lay.permutation_to("NCHW")
    (0, 3, 1, 2)
    >>> lo.Layout("HWIO").kind, lo.Layout("GOIHW").kind, lo.Layout("HWCM").kind
    ('kernel', 'grouped_kernel', 'depthwise_kernel')
    """

    __slots__ = ("_spec", "_kind")

    def __init__(self, spec: LayoutLike):
        if isinstance(spec, Layout):
            spec = spec.spec
        if not isinstance(spec, str):
            raise TypeError(f"a layout must be a string such as 'NCHW', got {type(spec).__name__}")
        self._spec = spec
        self._kind = _validate(spec)

    # -- identity -------------------------------------------------------------------------
    @property
    def spec(self) -> str:
        """The layout string."""
        return self._spec

    @property
    def kind(self) -> str:
        """``'activation'``, ``'kernel'``, ``'grouped_kernel'`` or ``'depthwise_kernel'``."""
        return self._kind

    def __str__(self) -> str:
        return self._spec

    def __repr__(self) -> str:
        return f"Layout({self._spec!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Layout):
            return self._spec == other._spec
        if isinstance(other, str):
            return self._spec == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._spec)

    def __len__(self) -> int:
        return len(self._spec)

    def __iter__(self) -> Iterator[str]:
        return iter(self._spec)

    def __contains__(self, letter: object) -> bool:
        return isinstance(letter, str) and len(letter) == 1 and letter in self._spec

    def __setattr__(self, name, value):
        if name in Layout.__slots__ and not hasattr(self, name):
            object.__setattr__(self, name, value)
        else:
            raise AttributeError("Layout is immutable")

    # -- axes -----------------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        """The number of axes."""
        return len(self._spec)

    @property
    def spatial(self) -> str:
        """The spatial letters, in the order they appear."""
        return "".join(c for c in self._spec if c not in ROLE_LETTERS)

    @property
    def n_spatial(self) -> int:
        """The number of spatial axes."""
        return len(self.spatial)

    @property
    def spatial_axes(self) -> tuple[int, ...]:
        """The positions of the spatial axes, in the layout's spatial order."""
        return tuple(i for i, c in enumerate(self._spec) if c not in ROLE_LETTERS)

    def axis(self, letter: str) -> int:
        """The position of ``letter``; `LayoutError` if the layout has no such axis."""
        pos = self._spec.find(letter)
        if pos < 0 or len(letter) != 1:
            raise LayoutError(f"layout {self._spec!r} has no axis {letter!r}")
        return pos

    def role(self, letter: str) -> str:
        """The role of a letter: 'batch', 'channel', ..., or 'spatial'."""
        self.axis(letter)
        return _ROLE_NAMES.get(letter, "spatial")

    @property
    def batch_axis(self) -> int:
        """The position of ``N`` (activation layouts)."""
        return self.axis("N")

    @property
    def channel_axis(self) -> int:
        """The position of ``C``."""
        return self.axis("C")

    @property
    def channels_first(self) -> bool:
        """True if ``C`` (or the channel letters of a kernel) precede every spatial letter."""
        return _channel_side(self) == "first"

    @property
    def channels_last(self) -> bool:
        """True if ``C`` (or the channel letters of a kernel) follow every spatial letter."""
        return _channel_side(self) == "last"

    # -- derived layouts and maps -----------------------------------------------------------
    def permutation_to(self, dst: LayoutLike) -> tuple[int, ...]:
        """The permutation ``p`` such that ``x.transpose(p)`` is in ``dst`` for ``x`` in self."""
        return permutation(self, dst)

    def with_spatial(self, spatial: str) -> Layout:
        """This layout with its spatial letters renamed, in order, to ``spatial``."""
        if len(spatial) != self.n_spatial:
            raise LayoutError(
                f"layout {self._spec!r} has {self.n_spatial} spatial axes, got {spatial!r}"
            )
        it = iter(spatial)
        return Layout("".join(c if c in ROLE_LETTERS else next(it) for c in self._spec))

    def shape_of(self, shape: tuple[int, ...]) -> dict[str, int]:
        """A ``{letter: size}`` map for an array of this layout."""
        self.check_ndim(len(shape))
        return dict(zip(self._spec, (int(s) for s in shape), strict=True))

    def check_ndim(self, ndim: int, what: str = "array") -> None:
        """Raise `LayoutError` if an array of rank ``ndim`` cannot have this layout."""
        if ndim != self.ndim:
            raise LayoutError(
                f"layout {self._spec!r} has {self.ndim} axes but the {what} has {ndim}"
            )

    def subscripts(self, mapping: dict[str, str] | None = None) -> str:
        """Einsum subscripts for an operand in this layout.

        Each letter is replaced by ``mapping[letter]`` (default: itself, lower-cased), so the
        kernels can name axes by role without transposing data.

        Examples
        --------
        >>> import layoutops as lo
        >>> lo.Layout("NHWC").subscripts()
        'nhwc'
        >>> lo.Layout("HWIO").subscripts({"I": "c", "O": "o", "H": "y", "W": "x"})
        'yxco'
        """
        mapping = mapping or {}
        return "".join(mapping.get(c, c.lower()) for c in self._spec)


LayoutLike = str | Layout


def _validate(spec: str) -> str:
    if not spec:
        raise LayoutError("layout '': a layout needs at least one letter")
    seen = set()
    for c in spec:
        if not ("A" <= c <= "Z"):
            raise LayoutError(
                f"layout {spec!r}: {c!r} is not an upper-case letter (one letter per axis)"
            )
        if c in seen:
            raise LayoutError(f"layout {spec!r}: letter {c!r} appears twice")
        seen.add(c)
    roles = seen & ROLE_LETTERS
    if not seen - ROLE_LETTERS:
        raise LayoutError(f"layout {spec!r}: no spatial letter (such as H, W, D or L)")
    if roles == {"N", "C"}:
        return ACTIVATION
    if roles == {"O", "I"}:
        return KERNEL
    if roles == {"G", "O", "I"}:
        return GROUPED_KERNEL
    if roles == {"C", "M"}:
        return DEPTHWISE_KERNEL
    have = "".join(c for c in spec if c in ROLE_LETTERS) or "none"
    raise LayoutError(
        f"layout {spec!r}: role letters {have} are not a valid set; an activation layout has "
        "N and C, a kernel layout O and I (G too when grouped), a depthwise kernel C and M"
    )


def _channel_side(layout: Layout) -> str:
    roles = [i for i, c in enumerate(layout.spec) if c in ROLE_LETTERS and c != "N"]
    spatial = layout.spatial_axes
    if max(roles) < min(spatial):
        return "first"
    if min(roles) > max(spatial):
        return "last"
    return "mixed"


def permutation(src: LayoutLike, dst: LayoutLike) -> tuple[int, ...]:
    """The permutation that takes an array from layout ``src`` to layout ``dst``.

    Both must use the same letters. ``np.transpose(x, permutation(src, dst))`` is ``x`` in
    ``dst``.

    Raises
    ------
    LayoutError
        If the two layouts do not have the same letters.

    Examples
    --------
    >>> import layoutops as lo
    >>> lo.permutation("NCHW", "NHWC")
    (0, 2, 3, 1)
    >>> lo.permutation("OIHW", "HWIO")
    (2, 3, 1, 0)
    """
    src, dst = Layout(src), Layout(dst)
    if sorted(src.spec) != sorted(dst.spec):
        raise LayoutError(
            f"layouts {src.spec!r} and {dst.spec!r} do not have the same letters; "
            "use convert_kernel for reshaping conversions (grouped, depthwise)"
        )
    return tuple(src.spec.index(c) for c in dst.spec)


# -- the default activation layout -------------------------------------------------------------

_DEFAULT = contextvars.ContextVar("layoutops_default_layout", default="channels_first")


def channels_first(n_spatial: int) -> Layout:
    """The channels-first activation layout for ``n_spatial`` axes: NCW, NCHW or NCDHW."""
    return Layout("NC" + _spatial_letters(n_spatial))


def channels_last(n_spatial: int) -> Layout:
    """The channels-last activation layout for ``n_spatial`` axes: NWC, NHWC or NDHWC."""
    return Layout("N" + _spatial_letters(n_spatial) + "C")


def _spatial_letters(n_spatial: int) -> str:
    try:
        return _SPATIAL_BY_RANK[n_spatial]
    except KeyError:
        raise LayoutError(
            f"'channels_first'/'channels_last' cover 1 to 3 spatial axes, got {n_spatial}; "
            "give an explicit layout string"
        ) from None


def _resolve_alias(spec: LayoutLike, ndim: int) -> Layout:
    if isinstance(spec, str):
        return _from_string(spec, ndim)
    return Layout(spec)


@functools.lru_cache(maxsize=256)
def _from_string(spec: str, ndim: int) -> Layout:
    """`_resolve_alias` of a string, parsed and checked once (a `Layout` is immutable; every
    op call resolves its layouts, ~10 us each)."""
    if spec.lower() in ("channels_first", "channels_last"):
        if ndim < 3:
            raise LayoutError(
                f"layout {spec!r} needs an array with at least one spatial axis, got rank {ndim}"
            )
        make = channels_first if spec.lower() == "channels_first" else channels_last
        return make(ndim - 2)
    return Layout(spec)


@contextlib.contextmanager
def default_layout(spec: LayoutLike) -> Iterator[None]:
    """Change the default activation layout inside a ``with`` block.

    Thread- and asyncio-safe (a :class:`contextvars.ContextVar`). ``"channels_first"`` /
    ``"channels_last"`` adapt to the rank of each input; a concrete string such as ``"NHWC"``
    applies to inputs of its rank, and an input of another rank raises `LayoutError`.

    Examples
    --------
    >>> import numpy as np
    >>> import layoutops as lo
    >>> x = np.zeros((2, 5, 5, 3))
    >>> with lo.default_layout("channels_last"):
    ...     print(lo.activation_layout(x.ndim))
    NHWC
    >>> print(lo.activation_layout(x.ndim))
    NCHW
    """
    if not (isinstance(spec, str) and spec.lower() in ("channels_first", "channels_last")):
        lay = Layout(spec)
        if lay.kind != ACTIVATION:
            raise LayoutError(f"default_layout: {lay.spec!r} is not an activation layout")
        spec = lay.spec
    token = _DEFAULT.set(spec if isinstance(spec, str) else spec.spec)
    try:
        yield
    finally:
        _DEFAULT.reset(token)


def activation_layout(ndim: int, layout: LayoutLike | None = None) -> Layout:
    """Resolve the activation layout of a rank-``ndim`` array.

    ``None`` means the current default (see `default_layout`); ``"channels_first"`` and
    ``"channels_last"`` are resolved by rank.

    Raises
    ------
    LayoutError
        If the layout is not an activation layout or its rank differs from ``ndim``.

    Examples
    --------
    >>> import layoutops as lo
    >>> lo.activation_layout(4), lo.activation_layout(3, "channels_last")
    (Layout('NCHW'), Layout('NWC'))
    """
    spec = _DEFAULT.get() if layout is None else layout
    lay = _resolve_alias(spec, ndim)
    if lay.kind != ACTIVATION:
        raise LayoutError(
            f"layout {lay.spec!r} is not an activation layout (it needs N, C and spatial letters)"
        )
    if lay.ndim != ndim:
        where = "the default layout" if layout is None else "layout"
        raise LayoutError(f"{where} {lay.spec!r} has {lay.ndim} axes but the input has {ndim}")
    return lay


_DEFAULT_KERNEL_LETTERS = {
    # op: (letters when channels first, letters when channels last)
    "conv": ("OI", "IO"),
    "conv_transpose": ("IO", "OI"),
    "depthwise": ("OI", "CM"),
}


def kernel_layout(
    activation: Layout,
    kernel: LayoutLike | None = None,
    *,
    op: str = "conv",
    ndim: int | None = None,
) -> Layout:
    """Resolve the kernel layout for an input in ``activation`` layout.

    With ``kernel=None`` the default follows the activation layout (SPEC section 2): for
    channels-first input the channel letters come first (``OIHW``; ``IOHW`` for
    ``op="conv_transpose"``), for channels-last input the spatial letters come first
    (``HWIO``; ``HWOI`` for ``conv_transpose``; ``HWCM`` for ``op="depthwise"``).

    Raises
    ------
    LayoutError
        If the default cannot be derived (``C`` between spatial letters), the layout is not a
        kernel layout, its spatial letters differ from the input's, or its rank is not ``ndim``.

    Examples
    --------
    >>> import layoutops as lo
    >>> lo.kernel_layout(lo.Layout("NCHW")), lo.kernel_layout(lo.Layout("NHWC"))
    (Layout('OIHW'), Layout('HWIO'))
    >>> lo.kernel_layout(lo.Layout("NDHWC"), op="conv_transpose")
    Layout('DHWOI')
    """
    if kernel is None:
        first, last = _DEFAULT_KERNEL_LETTERS[op]
        if activation.channels_first:
            lay = Layout(first + activation.spatial)
        elif activation.channels_last:
            lay = Layout(activation.spatial + last)
        else:
            raise LayoutError(
                f"input layout {activation.spec!r} has C between spatial letters, so no default "
                "kernel layout follows from it; pass kernel_layout= explicitly"
            )
    else:
        lay = Layout(kernel)
        if lay.kind == ACTIVATION:
            raise LayoutError(
                f"kernel layout {lay.spec!r} is an activation layout; a kernel layout has O and I"
            )
        if sorted(lay.spatial) != sorted(activation.spatial):
            raise LayoutError(
                f"kernel layout {lay.spec!r} has spatial letters {lay.spatial!r} but the input "
                f"layout {activation.spec!r} has {activation.spatial!r}; they must match by letter"
            )
    if ndim is not None and lay.ndim != ndim:
        raise LayoutError(
            f"kernel layout {lay.spec!r} has {lay.ndim} axes but the kernel has {ndim}"
        )
    return lay
