"""layoutops: convolution, transposed convolution and pooling in any layout, on NumPy.

Everything public is importable from the top level (``import layoutops as lo``): layout
descriptors and conversions, the ops, their gradients, and the workspace setting.

>>> import numpy as np
>>> import layoutops as lo
>>> x = np.arange(2 * 5 * 5 * 3, dtype=np.float32).reshape(2, 5, 5, 3)  # NHWC
>>> w = np.ones((3, 3, 3, 4), np.float32)                                # HWIO
>>> lo.conv(x, w, padding="same", layout="NHWC").shape
(2, 5, 5, 4)
"""

from .errors import LayoutError
from .kernels.plan import get_workspace_limit, set_workspace_limit, workspace_limit
from .kernels.threads import get_num_threads, set_num_threads
from .layouts import (
    FRAMEWORKS,
    Framework,
    Layout,
    activation_layout,
    channels_first,
    channels_last,
    convert,
    convert_indices,
    convert_kernel,
    convert_weight,
    default_layout,
    framework_layout,
    kernel_layout,
    pads_from_onnx,
    pads_from_tf,
    pads_from_torch,
    permutation,
)
from .ops.conv import conv, conv1d, conv2d, conv3d, depthwise_conv2d
from .ops.conv_transpose import (
    conv_transpose,
    conv_transpose1d,
    conv_transpose2d,
    conv_transpose3d,
)
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
from .ops.grad_derived import (
    fold_backward,
    global_avg_pool_backward,
    global_lp_pool_backward,
    global_max_pool_backward,
    max_unpool_backward,
    unfold_backward,
)
from .ops.patches import fold, unfold
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

__version__ = "0.1.0"
