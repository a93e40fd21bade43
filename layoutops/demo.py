"""``layoutops demo``: one small CNN run in both layouts, layer by layer.

The network is written the way a PyTorch user writes it: NCHW activations and weights in
PyTorch's layouts (``OIHW`` conv, ``(C*M, 1, kh, kw)`` depthwise, ``IOHW`` transposed, a dense
layer after an NCHW flatten). The weights are drawn once (``numpy.random.default_rng(seed)``),
converted to TF/Keras layouts with :func:`layoutops.convert_weight` (and the dense layer's rows
permuted for an NHWC flatten), and the same network is run again in NHWC, as a Keras user would
run it. Every layer's NHWC output is converted back to NCHW and compared with the NCHW one.

The exit status is 0 only if every layer agrees within the tolerance.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._sample import sample_batch

__all__ = ["add_arguments", "run", "build_network", "run_demo", "DemoResult"]

#: absolute tolerance per compute dtype (activations stay O(1) with the weight scaling used)
TOLERANCE = {"float32": 1e-4, "float64": 1e-10}

N_CLASSES = 10


@dataclass(frozen=True)
class Layer:
    """One row of the demo: the same layer written for each layout."""

    name: str
    description: str
    nchw: Callable[[np.ndarray], np.ndarray]
    nhwc: Callable[[np.ndarray], np.ndarray]
    activation: bool = True  # output is an (N, C, H, W) / (N, H, W, C) activation


@dataclass(frozen=True)
class LayerResult:
    name: str
    description: str
    nchw_shape: tuple[int, ...]
    nhwc_shape: tuple[int, ...]
    max_abs_diff: float
    nchw_seconds: float
    nhwc_seconds: float
    torch_diff: float | None = None  # NCHW output vs PyTorch's, with ``torch=True``


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` measured."""

    layers: tuple[LayerResult, ...]
    weights: tuple[tuple[str, str, tuple[int, ...], str, tuple[int, ...], str], ...]
    tolerance: float

    @property
    def max_abs_diff(self) -> float:
        return max(r.max_abs_diff for r in self.layers)

    @property
    def agree(self) -> bool:
        """Both layouts agree on every layer (and PyTorch too, if it was checked)."""
        return self.layouts_agree and self.torch_agrees is not False

    @property
    def layouts_agree(self) -> bool:
        return all(r.max_abs_diff <= self.tolerance for r in self.layers)

    @property
    def torch_diff(self) -> float | None:
        """The largest difference from PyTorch, or None if PyTorch was not run."""
        diffs = [r.torch_diff for r in self.layers if r.torch_diff is not None]
        return max(diffs) if diffs else None

    @property
    def torch_agrees(self) -> bool | None:
        diff = self.torch_diff
        return None if diff is None else diff <= self.tolerance


def _lo():
    import layoutops as lo

    return lo


def _relu(a: np.ndarray) -> np.ndarray:
    return np.maximum(a, 0, out=a)


def torch_weights(seed: int = 0, dtype=np.float32, size: int = 32) -> dict[str, np.ndarray]:
    """The demo network's weights, in PyTorch layouts, drawn from ``default_rng(seed)``.

    Parameters
    ----------
    seed : int, optional
        Seed of :func:`numpy.random.default_rng`. Default 0.
    dtype : dtype, optional
        Default float32.
    size : int, optional
        The input image size, which sets the dense layer's input width
        ``8 * (size // 4) ** 2``. Default 32.

    Returns
    -------
    dict of str to numpy.ndarray
        ``name.weight`` / ``name.bias`` as in a PyTorch ``state_dict``.

    Examples
    --------
    >>> from layoutops.demo import torch_weights
    >>> w = torch_weights()
    >>> w["dw.weight"].shape, w["up.weight"].shape, w["fc.weight"].shape
    ((16, 1, 3, 3), (16, 8, 4, 4), (10, 512))
    """
    rng = np.random.default_rng(seed)

    def he(shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)

    def bias(n):
        return (0.1 * rng.standard_normal(n)).astype(dtype)

    return {
        "conv1.weight": he((8, 3, 3, 3), 3 * 9),  # Conv2d(3, 8, 3, padding=1)
        "conv1.bias": bias(8),
        "dw.weight": he((16, 1, 3, 3), 9),  # Conv2d(8, 16, 3, stride=2, padding=1, groups=8)
        "dw.bias": bias(16),
        "gconv.weight": he((16, 4, 3, 3), 4 * 9),  # Conv2d(16, 16, 3, padding=1, groups=4)
        "gconv.bias": bias(16),
        "up.weight": he((16, 8, 4, 4), 16 * 4),  # ConvTranspose2d(16, 8, 4, stride=2, padding=1)
        "up.bias": bias(8),
        # Linear(8 * (size // 4) ** 2, 10) after the flatten
        "fc.weight": he((N_CLASSES, 8 * (size // 4) ** 2), 8 * (size // 4) ** 2),
        "fc.bias": bias(N_CLASSES),
    }


def tf_weights(tw: dict[str, np.ndarray], fc_hw: tuple[int, int]) -> tuple[dict, list]:
    """Convert :func:`torch_weights` to TF/Keras layouts; also returns a log of what was done."""
    lo = _lo()
    out: dict[str, np.ndarray] = {}
    log = []

    def convert(name, op, groups=None):
        w = tw[name]
        src = lo.framework_layout("torch", op)
        dst = lo.framework_layout("tf", op)
        out[name] = lo.convert_weight(w, op, "torch", "tf", groups=groups)
        label = op if groups is None or op == "depthwise" else f"{op} groups={groups}"
        log.append((name, label, w.shape, src.spec, out[name].shape, dst.spec))

    convert("conv1.weight", "conv")
    convert("dw.weight", "depthwise", groups=8)
    convert("gconv.weight", "conv", groups=4)
    convert("up.weight", "conv_transpose")
    # Dense after flatten: PyTorch flattens (C, H, W), Keras (H, W, C). Permute the weight's
    # input axis from (C, H, W) to (H, W, C) order, and store it (in, out) as Keras does.
    fc = tw["fc.weight"]
    h, w = fc_hw
    c = fc.shape[1] // (h * w)
    out["fc.weight"] = np.ascontiguousarray(
        fc.reshape(fc.shape[0], c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, fc.shape[0])
    )
    log.append(("fc.weight", "dense", fc.shape, "O,CHW", out["fc.weight"].shape, "HWC,O"))
    for name, value in tw.items():
        if name.endswith(".bias"):
            out[name] = value
    return out, log


def build_network(size: int = 32, seed: int = 0, dtype=np.float32):
    """The demo network for a ``size`` x ``size`` RGB input.

    Parameters
    ----------
    size : int, optional
        Input height and width; a multiple of 4 and at least 8. Default 32.
    seed : int, optional
        Weight seed. Default 0.
    dtype : dtype, optional
        Default float32.

    Returns
    -------
    layers : list of Layer
    weight_log : list of tuple
        ``(name, op, torch shape, torch layout, tf shape, tf layout)`` per converted weight.

    Raises
    ------
    ValueError
        If ``size`` is not a multiple of 4 or is smaller than 8.

    Examples
    --------
    >>> from layoutops.demo import build_network
    >>> layers, log = build_network()
    >>> [layer.name for layer in layers]
    ['conv1', 'dw', 'gconv', 'maxpool', 'up', 'avgpool', 'fc']
    """
    if int(size) != size or size < 8 or size % 4:
        raise ValueError(f"`demo`: `size` must be a multiple of 4 and >= 8, got {size}")
    lo = _lo()
    tw = torch_weights(seed, dtype, size)
    fc_hw = (size // 4, size // 4)
    kw, log = tf_weights(tw, fc_hw)
    cf, cl = "NCHW", "NHWC"

    layers = [
        Layer(
            "conv1",
            "conv 3x3, 3->8, p1, relu",
            lambda x: _relu(lo.conv(x, tw["conv1.weight"], tw["conv1.bias"], padding=1, layout=cf)),
            lambda x: _relu(lo.conv(x, kw["conv1.weight"], kw["conv1.bias"], padding=1, layout=cl)),
        ),
        Layer(
            "dw",
            "depthwise 3x3, x2, s2, p1",
            lambda x: lo.depthwise_conv2d(
                x, tw["dw.weight"], tw["dw.bias"], stride=2, padding=1, layout=cf
            ),
            lambda x: lo.depthwise_conv2d(
                x, kw["dw.weight"], kw["dw.bias"], stride=2, padding=1, layout=cl
            ),
        ),
        Layer(
            "gconv",
            "conv 3x3, groups=4, p1, relu",
            lambda x: _relu(
                lo.conv(x, tw["gconv.weight"], tw["gconv.bias"], padding=1, groups=4, layout=cf)
            ),
            lambda x: _relu(
                lo.conv(x, kw["gconv.weight"], kw["gconv.bias"], padding=1, groups=4, layout=cl)
            ),
        ),
        Layer(
            "maxpool",
            "max_pool 2x2",
            lambda x: lo.max_pool(x, 2, layout=cf),
            lambda x: lo.max_pool(x, 2, layout=cl),
        ),
        Layer(
            "up",
            "conv_transpose 4x4, 16->8, s2, p1, relu",
            lambda x: _relu(
                lo.conv_transpose(x, tw["up.weight"], tw["up.bias"], stride=2, padding=1, layout=cf)
            ),
            lambda x: _relu(
                lo.conv_transpose(x, kw["up.weight"], kw["up.bias"], stride=2, padding=1, layout=cl)
            ),
        ),
        Layer(
            "avgpool",
            "avg_pool 2x2",
            lambda x: lo.avg_pool(x, 2, layout=cf),
            lambda x: lo.avg_pool(x, 2, layout=cl),
        ),
        Layer(
            "fc",
            "flatten + dense -> 10",
            lambda x: x.reshape(x.shape[0], -1) @ tw["fc.weight"].T + tw["fc.bias"],
            lambda x: x.reshape(x.shape[0], -1) @ kw["fc.weight"] + kw["fc.bias"],
            activation=False,
        ),
    ]
    return layers, log


def _forward(layers, x, which: str):
    outputs, seconds = [], []
    for layer in layers:
        fn = layer.nchw if which == "nchw" else layer.nhwc
        t0 = time.perf_counter()
        x = fn(x)
        seconds.append(time.perf_counter() - t0)
        outputs.append(x)
    return outputs, seconds


def _torch_forward(weights: dict[str, np.ndarray], x_nchw: np.ndarray) -> list[np.ndarray]:
    """The demo network written with ``torch.nn.functional`` (the PyTorch original)."""
    try:
        import torch
    except ImportError as e:
        raise ValueError("`demo`: the PyTorch check needs PyTorch (pip install torch)") from e
    F = torch.nn.functional
    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}
    outs = []
    with torch.no_grad():
        y = torch.from_numpy(np.ascontiguousarray(x_nchw))
        for step in (
            lambda y: F.relu(F.conv2d(y, t["conv1.weight"], t["conv1.bias"], padding=1)),
            lambda y: F.conv2d(y, t["dw.weight"], t["dw.bias"], stride=2, padding=1, groups=8),
            lambda y: F.relu(F.conv2d(y, t["gconv.weight"], t["gconv.bias"], padding=1, groups=4)),
            lambda y: F.max_pool2d(y, 2),
            lambda y: F.relu(
                F.conv_transpose2d(y, t["up.weight"], t["up.bias"], stride=2, padding=1)
            ),
            lambda y: F.avg_pool2d(y, 2),
            lambda y: F.linear(torch.flatten(y, 1), t["fc.weight"], t["fc.bias"]),
        ):
            y = step(y)
            outs.append(y.numpy())
    return outs


def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("inf")
    diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
    return float("inf") if np.isnan(diff) else diff


def run_demo(
    batch: int = 2,
    size: int = 32,
    seed: int = 0,
    dtype="float32",
    repeat: int = 3,
    torch: bool = False,
):
    """Run the demo network in NCHW and NHWC and compare every layer.

    Parameters
    ----------
    batch, size, seed : int, optional
        Batch size (default 2), image size (default 32), weight seed (default 0).
    dtype : {"float32", "float64"}, optional
        Compute dtype. Default float32.
    repeat : int, optional
        Runs per layout; the fastest time per layer is reported. Default 3.
    torch : bool, optional
        Also run the original network with ``torch.nn.functional`` and compare every layer's
        NCHW output with PyTorch's. Default False.

    Returns
    -------
    DemoResult

    Raises
    ------
    ValueError
        For a batch < 1, a size that is not a multiple of 4 and >= 8, or another dtype;
        with ``torch=True`` if PyTorch is not installed.

    Examples
    --------
    >>> from layoutops.demo import run_demo
    >>> result = run_demo(batch=1, size=16, repeat=1)
    >>> result.agree, [r.nhwc_shape for r in result.layers][:2]
    (True, [(1, 16, 16, 8), (1, 8, 8, 16)])
    """
    if dtype not in TOLERANCE:
        raise ValueError(f"`demo`: `dtype` must be one of {sorted(TOLERANCE)}, got {dtype!r}")
    if int(batch) != batch or batch < 1:
        raise ValueError(f"`demo`: `batch` must be an integer >= 1, got {batch}")
    if int(repeat) != repeat or repeat < 1:
        raise ValueError(f"`demo`: `repeat` must be an integer >= 1, got {repeat}")
    lo = _lo()
    layers, log = build_network(size, seed, np.dtype(dtype))
    x_nhwc = sample_batch(batch, size, np.dtype(dtype))
    x_nchw = np.ascontiguousarray(lo.convert(x_nhwc, "NHWC", "NCHW"))

    out_cf, t_cf = _forward(layers, x_nchw, "nchw")
    out_cl, t_cl = _forward(layers, x_nhwc, "nhwc")
    for _ in range(repeat - 1):
        t_cf = [min(a, b) for a, b in zip(t_cf, _forward(layers, x_nchw, "nchw")[1], strict=True)]
        t_cl = [min(a, b) for a, b in zip(t_cl, _forward(layers, x_nhwc, "nhwc")[1], strict=True)]

    out_torch = [None] * len(layers)
    if torch:
        out_torch = _torch_forward(torch_weights(seed, np.dtype(dtype), size), x_nchw)

    results = []
    for layer, a, b, ta, tb, ref in zip(layers, out_cf, out_cl, t_cf, t_cl, out_torch, strict=True):
        b_cf = lo.convert(b, "NHWC", "NCHW") if layer.activation else b
        diff = _max_abs_diff(a, b_cf)
        torch_diff = None if ref is None else _max_abs_diff(a, ref)
        results.append(
            LayerResult(layer.name, layer.description, a.shape, b.shape, diff, ta, tb, torch_diff)
        )
    return DemoResult(tuple(results), tuple(log), TOLERANCE[dtype])


def _shape(s: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(v) for v in s) + ")"


def format_report(result: DemoResult, *, batch: int, size: int, seed: int, dtype: str) -> str:
    """The demo's printed report (weights conversions, per-layer table, verdict line)."""
    lines = [
        f"layoutops demo: a small CNN on a {size}x{size} RGB sample image, batch {batch}, "
        f"{dtype}, weights seed {seed}",
        "",
        "weights drawn in PyTorch layouts, converted to TF/Keras layouts (lo.convert_weight;",
        "the dense layer's rows permuted from C,H,W to H,W,C flatten order):",
    ]
    for name, op, s_shape, s_lay, d_shape, d_lay in result.weights:
        lines.append(
            f"  {name:<13} {op:<16} {_shape(s_shape):>15} {s_lay:<6} -> "
            f"{_shape(d_shape):>15} {d_lay}"
        )
    lines.append("")
    with_torch = result.torch_diff is not None
    header = (
        f"{'layer':<8} {'op':<40} {'NCHW shape':<16} {'NHWC shape':<16} "
        f"{'max|diff|':>9} {'NCHW ms':>8} {'NHWC ms':>8}"
        + (f" {'vs torch':>9}" if with_torch else "")
    )
    lines += [header, "-" * len(header)]
    for r in result.layers:
        flag = "" if r.max_abs_diff <= result.tolerance else "  <-- DISAGREE"
        torch_col = ""
        if r.torch_diff is not None:
            torch_col = f" {r.torch_diff:>9.1e}"
            if r.torch_diff > result.tolerance:
                flag += "  <-- DIFFERS FROM PYTORCH"
        lines.append(
            f"{r.name:<8} {r.description:<40} {_shape(r.nchw_shape):<16} "
            f"{_shape(r.nhwc_shape):<16} {r.max_abs_diff:>9.1e} "
            f"{r.nchw_seconds * 1e3:>8.2f} {r.nhwc_seconds * 1e3:>8.2f}{torch_col}{flag}"
        )
    total_cf = sum(r.nchw_seconds for r in result.layers) * 1e3
    total_cl = sum(r.nhwc_seconds for r in result.layers) * 1e3
    blank = " " * (8 + 40 + 16 + 16 + 9 + 4)
    lines.append(f"total{blank[5:]} {total_cf:>8.2f} {total_cl:>8.2f}")
    lines.append("(NHWC outputs converted to NCHW before the difference is taken)")
    if with_torch:
        lines.append("(vs torch: our NCHW output against torch.nn.functional on the same weights)")
    lines.append("")
    if with_torch:
        if result.torch_agrees:
            lines.append(f"PyTorch agrees: max abs diff {result.torch_diff:.1e}")
        else:
            bad = [r.name for r in result.layers if r.torch_diff > result.tolerance]
            lines.append(
                f"PYTORCH DISAGREES: max abs diff {result.torch_diff:.1e} > "
                f"{result.tolerance:.0e} at layer(s) {', '.join(bad)}"
            )
    if result.layouts_agree:
        lines.append(
            f"layouts agree: max abs diff {result.max_abs_diff:.1e} <= {result.tolerance:.0e}"
        )
    else:
        bad = [r.name for r in result.layers if r.max_abs_diff > result.tolerance]
        lines.append(
            f"LAYOUTS DISAGREE: max abs diff {result.max_abs_diff:.1e} > {result.tolerance:.0e} "
            f"at layer(s) {', '.join(bad)}"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``layoutops demo`` and set ``run`` as its handler."""
    parser.add_argument("--batch", type=int, default=2, help="batch size (default 2)")
    parser.add_argument(
        "--size", type=int, default=32, help="image height and width, a multiple of 4 (default 32)"
    )
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    parser.add_argument(
        "--dtype", choices=sorted(TOLERANCE), default="float32", help="default float32"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per layout, fastest time shown (default 3)"
    )
    parser.add_argument(
        "--torch",
        action="store_true",
        help="also run the original network in PyTorch and compare (needs torch)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``layoutops demo``; 0 if both layouts (and PyTorch, with ``--torch``) agree, else 1."""
    result = run_demo(
        args.batch, args.size, args.seed, args.dtype, args.repeat, getattr(args, "torch", False)
    )
    print(format_report(result, batch=args.batch, size=args.size, seed=args.seed, dtype=args.dtype))
    sys.stdout.flush()
    return 0 if result.agree else 1
