"""layoutops: convolution, transposed convolution and pooling in any layout, on NumPy.

>>> import numpy as np
>>> import layoutops as lo
>>> lo.Layout("NHWC").spatial
'HW'
"""

from .errors import LayoutError
from .kernels.plan import get_workspace_limit, set_workspace_limit, workspace_limit
from .layouts import (
    Layout,
    activation_layout,
    channels_first,
    channels_last,
    default_layout,
    kernel_layout,
    permutation,
)

# -- conversions (layouts/convert.py, layouts/padding.py) --
# -- conv (ops/conv.py) --
# -- conv_transpose (ops/conv_transpose.py) --
# -- pooling (ops/pool.py) and patches (ops/patches.py) --
# -- gradients (ops/grad.py) --

__version__ = "0.1.0"
