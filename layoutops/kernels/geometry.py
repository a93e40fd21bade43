"""The normalized geometry of a windowed op: plain ints and tuples, hashable for plan caches.

Built by ``ops._params.conv_geometry``; kernels only read it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

__all__ = ["Geometry"]


@dataclass(frozen=True)
class Geometry:
    """Per spatial axis, in the layout's spatial order.

    ``pads`` are ``(begin, end)`` pairs of virtual padding; ``out_sizes`` the output sizes.
    """

    in_sizes: tuple[int, ...]
    kernel_sizes: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    out_sizes: tuple[int, ...]

    @property
    def n_spatial(self) -> int:
        return len(self.in_sizes)

    @functools.cached_property
    def extents(self) -> tuple[int, ...]:
        """The effective kernel extents ``dilation * (k - 1) + 1`` (computed once: the kernels
        read them many times per call)."""
        return tuple(
            d * (k - 1) + 1 for k, d in zip(self.kernel_sizes, self.dilations, strict=True)
        )

    @property
    def disjoint_windows(self) -> bool:
        """True if no two windows share a cell: the kernel's spread ``(k - 1) * dilation``
        stays below the stride on every axis (max-pool winners are then distinct, and a
        window scatter's taps write each cell at most once).

        Examples
        --------
        >>> from layoutops.kernels.geometry import Geometry
        >>> Geometry((4,), (2,), (2,), (1,), ((0, 0),), (2,)).disjoint_windows
        True
        >>> Geometry((5,), (3,), (2,), (1,), ((0, 0),), (2,)).disjoint_windows
        False
        """
        return all((k - 1) * d < s for k, d, s in zip(
            self.kernel_sizes, self.dilations, self.strides, strict=True))

    def input_span(self, axis: int, out_start: int, out_stop: int) -> tuple[int, int]:
        """The input positions ``[lo, hi)`` (unpadded coordinates; may reach into the padding,
        i.e. below 0 or beyond the input) read by outputs ``[out_start, out_stop)``."""
        s, pad_lo = self.strides[axis], self.pads[axis][0]
        lo = out_start * s - pad_lo
        hi = (out_stop - 1) * s - pad_lo + self.extents[axis]
        return lo, hi
