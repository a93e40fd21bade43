"""The argument normalizer (ops/_params.py): every padding form, SAME rules, output sizes."""

import math

import numpy as np
import pytest

from layoutops.ops._params import (
    conv_geometry,
    normalize_tuple,
    parse_padding,
    pool_output_size,
    same_pads,
)


def test_normalize_tuple_forms():
    assert normalize_tuple(3, 2, "stride", "conv2d") == (3, 3)
    assert normalize_tuple([1, 2, 3], 3, "stride", "conv3d") == (1, 2, 3)
    assert normalize_tuple(np.int64(2), 1, "stride", "conv1d") == (2,)


@pytest.mark.parametrize(
    ("value", "match", "exc"),
    [
        (0, r"`conv2d`: `stride` must be >= 1, got 0", ValueError),
        ((1, 2, 3), r"`conv2d`: `stride` must be an int or 2 ints", ValueError),
        ((1.0, 2), r"`conv2d`: `stride` must be an int or 2 ints", ValueError),
        (True, r"`conv2d`: `stride` must be an int or a sequence", TypeError),
        ("2", r"`conv2d`: `stride` must be an int or 2 ints", ValueError),
        (None, r"`conv2d`: `stride` must be an int or a sequence of 2 ints", TypeError),
    ],
)
def test_normalize_tuple_errors(value, match, exc):
    with pytest.raises(exc, match=match):
        normalize_tuple(value, 2, "stride", "conv2d")


@pytest.mark.parametrize(
    ("padding", "n", "expected"),
    [
        (2, 2, ((2, 2), (2, 2))),
        ((1, 3), 2, ((1, 1), (3, 3))),
        ((0, 1, 2, 3), 2, ((0, 1), (2, 3))),
        ([(0, 1), (2, 3)], 2, ((0, 1), (2, 3))),
        ((4, 5), 1, ((4, 5),)),  # 1-D: two ints are (begin, end)
        ((1, 2, 3, 4, 5, 6), 3, ((1, 2), (3, 4), (5, 6))),
        (((1, 2), (3, 4), (5, 6)), 3, ((1, 2), (3, 4), (5, 6))),
        ((7,), 1, ((7, 7),)),
        ("VALID", 2, "valid"),
        ("Same", 3, "same"),
        ("same_lower", 1, "same_lower"),
    ],
)
def test_parse_padding_forms(padding, n, expected):
    assert parse_padding(padding, n, "op") == expected


@pytest.mark.parametrize(
    ("padding", "match"),
    [
        (-1, r"`pool`: `padding` must be >= 0"),
        ((1, 2, 3), r"`pool`: `padding` for 2 spatial axes must be"),
        ("full", r"`pool`: `padding` must be an int, a tuple or one of"),
        ([(1, 2), (3,)], r"`pool`: `padding` for 2 spatial axes must be"),
        ((0, -1, 0, 0), r"`pool`: `padding` must be >= 0"),
    ],
)
def test_parse_padding_errors(padding, match):
    with pytest.raises(ValueError, match=match):
        parse_padding(padding, 2, "pool")


def test_parse_padding_type_error():
    with pytest.raises(TypeError, match="`pool`: `padding` must be an int, a tuple"):
        parse_padding(1.5, 2, "pool")


@pytest.mark.parametrize("n_in", range(1, 12))
@pytest.mark.parametrize(("k", "s", "d"), [(1, 1, 1), (3, 1, 1), (3, 2, 1), (4, 2, 1), (3, 3, 2),
                                           (2, 3, 1), (5, 4, 1)])
def test_same_pads_match_the_tf_rule(n_in, k, s, d):
    # TF's documented rule, written independently: out = ceil(in / s)
    out = math.ceil(n_in / s)
    total = max((out - 1) * s + (k - 1) * d + 1 - n_in, 0)
    (upper,) = same_pads((n_in,), (k,), (s,), (d,))
    (lower,) = same_pads((n_in,), (k,), (s,), (d,), lower=True)
    assert upper == (total // 2, total - total // 2)
    assert lower == (total - total // 2, total // 2)
    # and the conv output size with those pads is ceil(in / s)
    g = conv_geometry("c", (n_in,), (k,), stride=s, padding="same", dilation=d, spatial="W")
    assert g.out_sizes == (out,)


def test_pool_output_size_ceil_mode_last_window_rule():
    # in=5, k=2, s=2, pad 0: floor -> 2, ceil -> 3 (last window starts at 4 < 5)
    assert pool_output_size(5, 2, 2, 1, (0, 0), False) == 2
    assert pool_output_size(5, 2, 2, 1, (0, 0), True) == 3
    # in=4, k=2, s=2, pad (1, 1): ceil gives 3, and the last window starts at 4 = in + pad_begin
    # -> it would start in the end padding and is dropped (PyTorch rule)
    assert pool_output_size(4, 2, 2, 1, (1, 1), True) == 3
    # in=4, k=3, s=2, pad (1, 1): windows start at -1, 1, 3; the last one still reads x[3]
    assert pool_output_size(4, 3, 2, 1, (1, 1), True) == 3
    # in=5, k=2, s=2, pad (1, 1): ceil gives 4 but the 4th window would start at 5 = in + pb
    assert pool_output_size(5, 2, 2, 1, (1, 1), False) == 3
    assert pool_output_size(5, 2, 2, 1, (1, 1), True) == 3


def test_conv_geometry_output_size_error_names_the_inputs():
    with pytest.raises(ValueError, match=r"`conv2d`: output size along 'W' would be 0 < 1 "
                       r"\(input 2, padding \(0, 0\), kernel 3, dilation 1, stride 1\)"):
        conv_geometry("conv2d", (5, 2), (3, 3), stride=1, padding=0, dilation=1, spatial="HW")


def test_geometry_input_span():
    g = conv_geometry("c", (7, 6), (3, 2), stride=(2, 1), padding=((1, 0), (0, 1)),
                      dilation=(1, 2), spatial="HW")
    assert g.out_sizes == ((7 + 1 - 3) // 2 + 1, (6 + 1 - 2 - 1) // 1 + 1)
    # outputs 1..2 along H read input rows 2*1-1 .. 2*2-1+3
    assert g.input_span(0, 1, 3) == (1, 6)
    assert g.extents == (3, 3)
