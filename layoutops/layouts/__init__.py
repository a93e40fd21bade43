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
# isort: split
from .convert import (
    FRAMEWORKS,
    Framework,
    convert,
    convert_kernel,
    convert_weight,
    framework_layout,
)
from .padding import convert_indices, pads_from_onnx, pads_from_tf, pads_from_torch

__all__ = [
    "Layout",
    "activation_layout",
    "channels_first",
    "channels_last",
    "default_layout",
    "kernel_layout",
    "permutation",
    "FRAMEWORKS",
    "Framework",
    "convert",
    "convert_kernel",
    "convert_weight",
    "framework_layout",
    "convert_indices",
    "pads_from_onnx",
    "pads_from_tf",
    "pads_from_torch",
]
