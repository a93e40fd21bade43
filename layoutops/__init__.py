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
# isort: split
from .layouts import (
    FRAMEWORKS,
    Framework,
    convert,
    convert_indices,
    convert_kernel,
    convert_weight,
    framework_layout,
    pads_from_onnx,
    pads_from_tf,
    pads_from_torch,
)

# -- conv (ops/conv.py) --
from .ops.conv import conv, conv1d, conv2d, conv3d, depthwise_conv2d
# -- conv_transpose (ops/conv_transpose.py) --
from .ops.conv_transpose import (
    conv_transpose,
    conv_transpose1d,
    conv_transpose2d,
    conv_transpose3d,
)
# -- pooling (ops/pool.py) and patches (ops/patches.py) --
from .ops.pool import (
    adaptive_avg_pool,
    adaptive_max_pool,
    avg_pool,
    avg_pool1d,
    avg_pool2d,
    avg_pool3d,
    global_avg_pool,
    global_lp_pool,
    global_max_pool,
    lp_pool,
    lp_pool1d,
    lp_pool2d,
    lp_pool3d,
    max_pool,
    max_pool1d,
    max_pool2d,
    max_pool3d,
    max_unpool,
)
from .ops.patches import fold, unfold
# -- gradients (ops/grad.py) --
from .ops.grad import (
    ConvGrads,
    PoolGrads,
    adaptive_avg_pool_backward,
    adaptive_max_pool_backward,
    avg_pool_backward,
    conv_backward,
    conv_jvp,
    conv_transpose_backward,
    lp_pool_backward,
    max_pool_backward,
)

__version__ = "0.1.0"
