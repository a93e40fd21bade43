"""PyTorch cross-checks of conv_transpose (skipped when torch is not installed)."""

from __future__ import annotations

import numpy as np
import pytest

import layoutops as lo

pytestmark = pytest.mark.usefixtures("both_small_paths")


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def torch_conv_transpose(torch, x, w, b, *, stride, padding, output_padding, dilation, groups):
    fn = {3: torch.nn.functional.conv_transpose1d, 4: torch.nn.functional.conv_transpose2d,
          5: torch.nn.functional.conv_transpose3d}[x.ndim]
    with torch.no_grad():
        y = fn(torch.from_numpy(x), torch.from_numpy(w),
               None if b is None else torch.from_numpy(b), stride=stride, padding=padding,
               output_padding=output_padding, dilation=dilation, groups=groups)
    return y.numpy()


# (x shape NC..., C_out, kernel, stride, padding (symmetric, torch), output_padding, dilation, g)
CASES = [
    ((2, 4, 5, 6), 6, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), 1),
    ((2, 4, 5, 6), 6, (3, 2), (2, 3), (1, 0), (0, 2), (1, 1), 2),
    ((1, 6, 4, 7), 3, (2, 3), (3, 1), (0, 2), (2, 0), (2, 3), 3),
    ((1, 4, 6, 5), 4, (4, 4), (1, 2), (3, 1), (1, 1), (2, 1), 4),  # depthwise-like
    ((3, 2, 7), 5, (4,), (3,), (2,), (2,), (2,), 1),
    ((2, 4, 8), 4, (3,), (2,), (0,), (1,), (1,), 2),
    ((1, 2, 3, 4, 3), 4, (2, 3, 2), (2, 1, 3), (1, 0, 1), (1, 0, 2), (1, 2, 1), 2),
]


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_matches_torch(torch, case, layout):
    shape, c_out, ks, s, p, op, d, g = case
    rng = np.random.default_rng(len(shape) + sum(ks))
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((shape[1], c_out // g, *ks)).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32)
    expected = torch_conv_transpose(torch, x, w, b, stride=s, padding=p, output_padding=op,
                                    dilation=d, groups=g)
    kwargs = dict(stride=s, padding=p, output_padding=op, dilation=d, groups=g)
    n = x.ndim - 2
    if layout == "channels_first":
        y = lo.conv_transpose(x, w, b, **kwargs)
        got = y
    else:
        x_last = np.ascontiguousarray(np.moveaxis(x, 1, -1))
        w_last = np.ascontiguousarray(w.transpose(*range(2, n + 2), 1, 0))  # HWOI
        y = lo.conv_transpose(x_last, w_last, b, layout="channels_last", **kwargs)
        got = np.moveaxis(y, -1, 1)
    assert y.dtype == np.float32 and y.flags.c_contiguous
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_torch_module_weight_shape_and_groups(torch):
    # ConvTranspose2d(6, 4, groups=2).weight.shape == (6, 2, 3, 3): I = C_in, O = C_out/groups
    torch.manual_seed(0)
    m = torch.nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1, groups=2)
    w = m.weight.detach().numpy()
    assert w.shape == (6, 2, 3, 3)
    x = np.random.default_rng(1).standard_normal((2, 6, 4, 5)).astype(np.float32)
    with torch.no_grad():
        expected = m(torch.from_numpy(x)).numpy()
    y = lo.conv_transpose2d(x, w, m.bias.detach().numpy(), stride=2, padding=1,
                            output_padding=1, groups=2)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def test_torch_output_size_argument(torch):
    # PyTorch's output_size= picks output_padding; ours is output_shape with crops at the end
    m = torch.nn.ConvTranspose2d(2, 3, 3, stride=3, padding=1)
    x = np.random.default_rng(2).standard_normal((1, 2, 3, 4)).astype(np.float32)
    with torch.no_grad():
        expected = m(torch.from_numpy(x), output_size=[8, 11]).numpy()
    w, b = m.weight.detach().numpy(), m.bias.detach().numpy()
    # natural size (7, 10): output_size (8, 11) <=> output_padding (1, 1)
    y = lo.conv_transpose2d(x, w, b, stride=3, padding=1, output_padding=(1, 1))
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def test_torch_float64_and_float16(torch):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 3, 4, 4))
    w = rng.standard_normal((3, 2, 3, 3))
    expected = torch_conv_transpose(torch, x, w, None, stride=2, padding=1, output_padding=0,
                                    dilation=1, groups=1)
    np.testing.assert_allclose(lo.conv_transpose2d(x, w, stride=2, padding=1), expected,
                               rtol=1e-12, atol=1e-12)
    y16 = lo.conv_transpose2d(x.astype(np.float16), w.astype(np.float16), stride=2, padding=1)
    assert y16.dtype == np.float16
    np.testing.assert_allclose(y16.astype(np.float64), expected, rtol=2e-2, atol=2e-2)


def test_docs_same_versus_torch_padding_example(torch):
    # docs/transposed.md: for k=3, s=2, PyTorch's padding=1, output_padding=1 crops (1, 0),
    # "same" crops (0, 1)
    x = np.arange(1.0, 5.0).reshape(1, 1, 4)
    w = np.array([1.0, 10.0, 100.0]).reshape(1, 1, 3)
    expected = torch_conv_transpose(torch, x, w, None, stride=2, padding=1, output_padding=1,
                                    dilation=1, groups=1)
    np.testing.assert_allclose(lo.conv_transpose1d(x, w, stride=2, padding=1, output_padding=1),
                               expected, rtol=1e-12)
    full = torch_conv_transpose(torch, x, w, None, stride=2, padding=0, output_padding=0,
                                dilation=1, groups=1)
    same = lo.conv_transpose1d(x, w, stride=2, padding="same")
    np.testing.assert_allclose(same, full[..., :-1], rtol=1e-12)
    assert not np.allclose(same, expected)
