"""Checks on the docs beyond their doctests (which pytest collects from README.md and docs/*.md).

- Every relative link in README.md and docs/*.md points to a file that exists.
- The claims docs/porting.md makes about PyTorch are checked against PyTorch itself (when it
  is installed): the page's doctests run on NumPy alone, so only these tests would notice if
  PyTorch behaved differently from what the page says.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import layoutops as lo

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    missing = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        if not (page.parent / target).exists():
            missing.append(target)
    assert not missing, f"{page.name} links to missing files: {missing}"


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


def t(a, torch):
    return torch.from_numpy(np.ascontiguousarray(a))


def test_f_pad_order_and_pads_from_torch(torch):
    F = torch.nn.functional
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 6, 7))
    w = rng.standard_normal((3, 2, 3, 3))
    pad = (3, 4, 1, 2)
    want = F.conv2d(F.pad(t(x, torch), pad), t(w, torch)).numpy()
    got = lo.conv(x, w, padding=lo.pads_from_torch(pad, "NCHW"))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    # on a channels-last tensor the first pair is C
    x_cl = t(x.transpose(0, 2, 3, 1), torch)
    padded = F.pad(x_cl, (0, 0, *pad)).numpy()
    assert padded.shape[1:3] == (6 + 1 + 2, 7 + 3 + 4)
    assert lo.pads_from_torch((0, 0, *pad), "NHWC") == ((1, 2), (3, 4))


def test_stride_2_padding_1_is_not_same_on_even_inputs(torch):
    F = torch.nn.functional
    rng = np.random.default_rng(2)
    w = rng.standard_normal((4, 3, 3, 3))
    for size, agree in ((8, False), (7, True)):
        x = rng.standard_normal((1, 3, size, size))
        torch_y = F.conv2d(t(x, torch), t(w, torch), stride=2, padding=1).numpy()
        same = lo.conv(x, w, stride=2, padding="same")
        assert torch_y.shape == same.shape
        assert np.allclose(torch_y, same) == agree
    with pytest.raises(RuntimeError, match="not supported for strided"):
        F.conv2d(t(x, torch), t(w, torch), stride=2, padding="same")


def test_transposed_k3_s2_padding_1_output_padding_1_crops_the_start(torch):
    F = torch.nn.functional
    rng = np.random.default_rng(3)
    wt = rng.standard_normal((3, 4, 3, 3))
    x = rng.standard_normal((1, 3, 5, 5))
    torch_y = F.conv_transpose2d(
        t(x, torch), t(wt, torch), stride=2, padding=1, output_padding=1
    ).numpy()
    full = F.conv_transpose2d(t(x, torch), t(wt, torch), stride=2).numpy()
    np.testing.assert_allclose(torch_y, full[..., 1:, 1:], atol=1e-12)
    assert not np.allclose(torch_y, lo.conv_transpose(x, wt, stride=2, padding="same"))
    np.testing.assert_allclose(
        lo.conv_transpose(x, wt, stride=2, padding="same"), full[..., :-1, :-1], atol=1e-10
    )


def test_ceil_mode_shapes_and_count_include_pad_default(torch):
    F = torch.nn.functional
    assert F.max_pool2d(torch.zeros(1, 1, 5, 5), 2, 2, 1, ceil_mode=True).shape[-2:] == (3, 3)
    assert F.max_pool2d(torch.zeros(1, 1, 6, 6), 3, 2, ceil_mode=True).shape[-2:] == (3, 3)
    corner = F.avg_pool2d(torch.ones(1, 1, 4, 4, dtype=torch.float64), 3, 1, 1)[0, 0, 0, 0]
    assert abs(corner.item() - 4 / 9) < 1e-12
    assert (
        abs(float(lo.avg_pool(np.ones((1, 1, 4, 4)), 3, stride=1, padding=1)[0, 0, 0, 0]) - 4 / 9)
        < 1e-12
    )


def test_lppool_claims(torch):
    F = torch.nn.functional
    x = np.array([[[[-1.0, -2.0], [3.0, -4.0]]]])
    assert F.lp_pool2d(t(x, torch), 1, 2).item() == pytest.approx(-4.0)
    assert np.isnan(F.lp_pool2d(t(x, torch), 3, 2).item())
    assert F.lp_pool2d(t(x, torch), 2, 2).item() == pytest.approx(
        float(lo.lp_pool(x, 2, 2)[0, 0, 0, 0])
    )
    ones = np.ones((1, 1, 3, 3))
    torch_ceil = F.lp_pool2d(t(ones, torch), 2, 2, ceil_mode=True).numpy()
    np.testing.assert_allclose(torch_ceil, np.sqrt(lo.avg_pool(ones, 2, ceil_mode=True) * 4))
    np.testing.assert_allclose(torch_ceil, 2.0)


def test_max_pool_indices_are_torch_s(torch):
    F = torch.nn.functional
    x = np.random.default_rng(4).standard_normal((2, 3, 4, 4))
    _, idx = lo.max_pool(x, 2, return_indices=True)
    _, t_idx = F.max_pool2d(t(x, torch), 2, return_indices=True)
    np.testing.assert_array_equal(idx, t_idx.numpy())


def test_depthwise_and_transposed_conversions_match_torch(torch):
    F = torch.nn.functional
    rng = np.random.default_rng(5)
    c, m = 3, 2
    w = rng.standard_normal((c * m, 1, 3, 3))
    x = rng.standard_normal((1, c, 5, 5))
    want = F.conv2d(t(x, torch), t(w, torch), groups=c).numpy()
    x_cl = lo.convert(x, "NCHW", "NHWC")
    w_tf = lo.convert_weight(w, "depthwise", "torch", "tf", groups=c)
    got = lo.depthwise_conv2d(x_cl, w_tf, layout="NHWC")
    np.testing.assert_allclose(lo.convert(got, "NHWC", "NCHW"), want, atol=1e-10)
    wt = rng.standard_normal((3, 4, 3, 3))  # ConvTranspose2d(3, 4, 3)
    want = F.conv_transpose2d(t(x, torch), t(wt, torch), stride=2).numpy()
    wt_tf = lo.convert_weight(wt, "conv_transpose", "torch", "tf")
    got = lo.conv_transpose(x_cl, wt_tf, stride=2, layout="NHWC")
    np.testing.assert_allclose(lo.convert(got, "NHWC", "NCHW"), want, atol=1e-10)


def test_porting_model_matches_torch(torch):
    """The model ported in porting.md, run by PyTorch from the same state dict."""
    nn, F = torch.nn, torch.nn.functional
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.dw = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=8)
            self.up = nn.ConvTranspose2d(16, 4, 4, stride=2, padding=1)
            self.fc = nn.Linear(4 * 4 * 4, 10)

        def forward(self, x):
            x = torch.relu(self.conv(x))
            x = F.max_pool2d(self.dw(x), 2)
            x = torch.relu(self.up(x))
            x = F.avg_pool2d(x, 2)
            return self.fc(torch.flatten(x, 1))

    net = Net().double()
    sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    x = np.random.default_rng(6).standard_normal((2, 3, 16, 16))
    with torch.no_grad():
        want = net(t(x, torch)).numpy()

    p = {
        "conv.weight": lo.convert_weight(sd["conv.weight"], "conv", "torch", "tf"),
        "dw.weight": lo.convert_weight(sd["dw.weight"], "depthwise", "torch", "tf", groups=8),
        "up.weight": lo.convert_weight(sd["up.weight"], "conv_transpose", "torch", "tf"),
        "fc.weight": sd["fc.weight"].reshape(10, 4, 4, 4).transpose(2, 3, 1, 0).reshape(64, 10),
    }
    p.update({k: v for k, v in sd.items() if k.endswith(".bias")})
    with lo.default_layout("channels_last"):
        h = np.maximum(
            lo.conv(lo.convert(x, "NCHW", "NHWC"), p["conv.weight"], p["conv.bias"], padding=1), 0
        )
        h = lo.depthwise_conv2d(h, p["dw.weight"], p["dw.bias"], stride=2, padding=1)
        h = lo.max_pool(h, 2)
        h = np.maximum(lo.conv_transpose(h, p["up.weight"], p["up.bias"], stride=2, padding=1), 0)
        h = lo.avg_pool(h, 2)
    got = h.reshape(2, -1) @ p["fc.weight"] + p["fc.bias"]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-10)
