"""Running a 2-D conv given in canonical form (NCHW input, OIHW kernel) in another layout,
for the tests that force one kernel path of the ``im2col`` strategy."""

from __future__ import annotations

import numpy as np
from conv_reference import act_from, act_to, kernel_to

import layoutops as lo
from layoutops.kernels.threads import set_num_threads

#: the kernel layout that goes with each activation layout
KERNELS = {"NCHW": "OIHW", "NHWC": "HWIO"}


def conv2d_in(layout: str, x, w, **kw):
    """``lo.conv2d`` of ``x`` (NCHW) and ``w`` (OIHW) run in ``layout`` with
    ``algorithm="im2col"``, the result back in NCHW."""
    got = lo.conv2d(act_to(x, "NCHW", layout), kernel_to(w, KERNELS[layout], "OIHW"),
                    layout=layout, algorithm="im2col", **kw)
    return act_from(got, layout, "NCHW")


def on_one_and_two_threads(call):
    """``[call() with 1 thread, call() with 2 threads]``, the thread setting restored."""
    previous = set_num_threads(None)
    try:
        results = []
        for n in (1, 2):
            set_num_threads(n)
            results.append(call())
    finally:
        set_num_threads(previous)
    return results


def assert_infs_where_due(got, want):
    """``got`` holds no NaN, its infs where ``want``'s are, and ``want``'s finite values
    elsewhere: a tap that read an inf where it does not belong left no trace."""
    assert not np.isnan(got).any()
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-12)
