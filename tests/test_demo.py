"""``layoutops demo``: the network, its weight conversions and its verdict."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from layoutops import demo
from layoutops._sample import sample_batch, sample_image


def test_sample_image_is_deterministic_and_in_range():
    a, b = sample_image(32), sample_image(32)
    assert a.shape == (32, 32, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert a.std() > 0.1  # not a flat picture
    batch = sample_batch(5, 12)
    assert batch.shape == (5, 12, 12, 3) and batch.flags.c_contiguous
    np.testing.assert_array_equal(batch[1], np.rot90(sample_image(12), 1))
    np.testing.assert_array_equal(batch[4], sample_image(12)[:, ::-1])
    with pytest.raises(ValueError, match="`size` must be an integer >= 4, got 3"):
        sample_image(3)


@pytest.mark.parametrize(("batch", "size"), [(1, 8), (2, 12), (3, 16)])
def test_both_layouts_agree(batch, size):
    result = demo.run_demo(batch=batch, size=size, repeat=1)
    assert result.agree
    shapes = {r.name: (r.nchw_shape, r.nhwc_shape) for r in result.layers}
    s2, s4 = size // 2, size // 4
    assert shapes["conv1"] == ((batch, 8, size, size), (batch, size, size, 8))
    assert shapes["dw"] == ((batch, 16, s2, s2), (batch, s2, s2, 16))
    assert shapes["maxpool"] == ((batch, 16, s4, s4), (batch, s4, s4, 16))
    assert shapes["up"] == ((batch, 8, s2, s2), (batch, s2, s2, 8))
    assert shapes["fc"] == ((batch, 10), (batch, 10))


def test_float64_is_tight():
    result = demo.run_demo(batch=1, size=8, dtype="float64", repeat=1)
    assert result.agree and result.max_abs_diff < 1e-10


def test_bad_arguments():
    with pytest.raises(ValueError, match="`size` must be a multiple of 4 and >= 8, got 10"):
        demo.run_demo(size=10)
    with pytest.raises(ValueError, match="`batch` must be an integer >= 1, got 0"):
        demo.run_demo(batch=0)
    with pytest.raises(ValueError, match="`dtype` must be one of"):
        demo.run_demo(dtype="int8")


def _args(**kw):
    base = dict(batch=1, size=8, seed=0, dtype="float32", repeat=1, torch=False)
    base.update(kw)
    return argparse.Namespace(**base)


def test_run_prints_the_table_and_returns_0(capsys):
    assert demo.run(_args()) == 0
    out = capsys.readouterr().out
    assert "NCHW shape" in out and "NHWC shape" in out and "max|diff|" in out
    assert out.strip().splitlines()[-1].startswith("layouts agree: max abs diff ")


def test_a_disagreeing_layer_fails_the_demo(monkeypatch, capsys):
    real = demo.build_network

    def sabotaged(*a, **k):
        layers, log = real(*a, **k)
        bad = layers[3]  # maxpool
        layers[3] = demo.Layer(bad.name, bad.description, bad.nchw, lambda x: bad.nhwc(x) + 0.01)
        return layers, log

    monkeypatch.setattr(demo, "build_network", sabotaged)
    assert demo.run(_args()) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("LAYOUTS DISAGREE: max abs diff ")
    assert "maxpool" in last


def test_both_paths_match_pytorch():
    """The demo network rebuilt with torch.nn.functional from the same PyTorch weights."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    size, batch = 16, 2
    tw = demo.torch_weights(0, size=size)
    layers, _ = demo.build_network(size, 0)
    x_cl = sample_batch(batch, size)
    x_cf = np.ascontiguousarray(x_cl.transpose(0, 3, 1, 2))
    ours_cf, ours_cl = x_cf, x_cl
    for layer in layers:
        ours_cf, ours_cl = layer.nchw(ours_cf), layer.nhwc(ours_cl)
    t = {k: torch.from_numpy(v) for k, v in tw.items()}
    y = F.relu(F.conv2d(torch.from_numpy(x_cf), t["conv1.weight"], t["conv1.bias"], padding=1))
    y = F.conv2d(y, t["dw.weight"], t["dw.bias"], stride=2, padding=1, groups=8)
    y = F.relu(F.conv2d(y, t["gconv.weight"], t["gconv.bias"], padding=1, groups=4))
    y = F.max_pool2d(y, 2)
    y = F.relu(F.conv_transpose2d(y, t["up.weight"], t["up.bias"], stride=2, padding=1))
    y = F.avg_pool2d(y, 2)
    logits = F.linear(torch.flatten(y, 1), t["fc.weight"], t["fc.bias"]).numpy()
    np.testing.assert_allclose(ours_cf, logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours_cl, logits, rtol=1e-4, atol=1e-5)


def test_torch_option_compares_every_layer_with_pytorch(capsys):
    pytest.importorskip("torch")
    assert demo.run(_args(size=12, torch=True)) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("PyTorch agrees: max abs diff ")
    assert lines[-1].startswith("layouts agree: ")
    result = demo.run_demo(batch=1, size=8, dtype="float64", repeat=1, torch=True)
    assert result.torch_agrees and result.torch_diff < 1e-10
    assert all(r.torch_diff is not None for r in result.layers)


def test_torch_option_without_torch_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    with pytest.raises(ValueError, match="needs PyTorch"):
        demo.run_demo(batch=1, size=8, repeat=1, torch=True)
