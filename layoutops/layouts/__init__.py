"""Layout descriptors and conversions (imports numpy only)."""

from .layout import (
    Layout,
    activation_layout,
    channels_first,
    channels_last,
    default_layout,
    kernel_layout,
    permutation,
)

# -- conversions (layouts/convert.py, layouts/padding.py) --

__all__ = [
    "Layout",
    "activation_layout",
    "channels_first",
    "channels_last",
    "default_layout",
    "kernel_layout",
    "permutation",
]
