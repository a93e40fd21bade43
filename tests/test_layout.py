"""The layout core (layoutops/layouts/layout.py): parsing, roles, every LayoutError rule,
defaults per SPEC section 2, the default_layout context manager (threads and asyncio)."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

import layoutops as lo
from layoutops.layouts.layout import ROLE_LETTERS

# -- parsing and roles --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "kind", "spatial"),
    [
        ("NCHW", "activation", "HW"),
        ("NHWC", "activation", "HW"),
        ("NCW", "activation", "W"),
        ("NCL", "activation", "L"),
        ("NDHWC", "activation", "DHW"),
        ("OIHW", "kernel", "HW"),
        ("HWIO", "kernel", "HW"),
        ("IOHW", "kernel", "HW"),
        ("GOIHW", "grouped_kernel", "HW"),
        ("HWIGO", "grouped_kernel", "HW"),
        ("HWCM", "depthwise_kernel", "HW"),
        ("CMDHW", "depthwise_kernel", "DHW"),
    ],
)
def test_kind_and_spatial(spec, kind, spatial):
    lay = lo.Layout(spec)
    assert lay.kind == kind
    assert lay.spatial == spatial
    assert lay.n_spatial == len(spatial)
    assert lay.ndim == len(spec)
    assert lay.spatial_axes == tuple(i for i, c in enumerate(spec) if c not in ROLE_LETTERS)


def test_axes_and_roles():
    lay = lo.Layout("NHWC")
    assert (lay.batch_axis, lay.channel_axis, lay.axis("W")) == (0, 3, 2)
    assert lay.role("N") == "batch" and lay.role("C") == "channel" and lay.role("H") == "spatial"
    assert lo.Layout("GOIHW").role("G") == "group"
    assert lo.Layout("HWCM").role("M") == "channel multiplier"
    assert lo.Layout("OIHW").role("O") == "output channel"
    assert lo.Layout("OIHW").role("I") == "input channel"
    assert lay.shape_of((2, 5, 4, 3)) == {"N": 2, "H": 5, "W": 4, "C": 3}
    assert lay.with_spatial("YX") == "NYXC"
    assert lay.subscripts() == "nhwc"
    assert lay.subscripts({"C": "k"}) == "nhwk"
    assert list(lay) == list("NHWC") and len(lay) == 4 and "H" in lay and "O" not in lay


def test_channels_first_last_properties():
    assert lo.Layout("NCHW").channels_first and not lo.Layout("NCHW").channels_last
    assert lo.Layout("NHWC").channels_last and not lo.Layout("NHWC").channels_first
    assert lo.Layout("OIHW").channels_first and lo.Layout("HWIO").channels_last
    mixed = lo.Layout("NHCW")
    assert not mixed.channels_first and not mixed.channels_last


def test_equality_hash_immutability():
    a, b = lo.Layout("NCHW"), lo.Layout("NCHW")
    assert a == b and a == "NCHW" and a != "NHWC" and hash(a) == hash(b)
    assert len({a, b, lo.Layout("NHWC")}) == 2
    assert lo.Layout(a) == a and str(a) == "NCHW" and repr(a) == "Layout('NCHW')"
    with pytest.raises(AttributeError, match="immutable"):
        a._spec = "NHWC"
    with pytest.raises(AttributeError, match="immutable"):
        a.foo = 1


def test_permutation():
    assert lo.permutation("NCHW", "NHWC") == (0, 2, 3, 1)
    assert lo.permutation("NHWC", "NCHW") == (0, 3, 1, 2)
    assert lo.permutation("OIHW", "HWIO") == (2, 3, 1, 0)
    x = np.arange(24).reshape(1, 2, 3, 4)
    y = x.transpose(lo.Layout("NCHW").permutation_to("NHWC"))
    for n, c, h, w in np.ndindex(x.shape):
        assert y[n, h, w, c] == x[n, c, h, w]


# -- every LayoutError rule ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("", r"layout '': a layout needs at least one letter"),
        ("NChW", r"layout 'NChW': 'h' is not an upper-case letter"),
        ("NC-W", r"'-' is not an upper-case letter"),
        ("NCHH", r"layout 'NCHH': letter 'H' appears twice"),
        ("NC", r"layout 'NC': no spatial letter"),
        ("OI", r"no spatial letter"),
        ("NHW", r"role letters N are not a valid set"),
        ("CHW", r"role letters C are not a valid set"),
        ("OHW", r"role letters O are not a valid set"),
        ("NCOHW", r"role letters NCO are not a valid set"),
        ("GOHW", r"role letters GO are not a valid set"),
        ("MHW", r"role letters M are not a valid set"),
        ("HW", r"layout 'HW': role letters none are not a valid set"),
        ("NCIHW", r"role letters NCI are not a valid set"),
    ],
)
def test_invalid_layouts(spec, match):
    with pytest.raises(lo.LayoutError, match=match):
        lo.Layout(spec)


def test_layout_error_is_value_error_and_type_error_for_non_strings():
    assert issubclass(lo.LayoutError, ValueError)
    with pytest.raises(TypeError, match="a layout must be a string"):
        lo.Layout(4)


def test_axis_and_rank_errors():
    lay = lo.Layout("NCHW")
    with pytest.raises(lo.LayoutError, match=r"layout 'NCHW' has no axis 'D'"):
        lay.axis("D")
    with pytest.raises(lo.LayoutError, match=r"has no axis 'O'"):
        lay.role("O")
    with pytest.raises(lo.LayoutError, match=r"layout 'NCHW' has 4 axes but the array has 3"):
        lay.check_ndim(3)
    with pytest.raises(lo.LayoutError, match=r"has 4 axes but the kernel has 5"):
        lay.check_ndim(5, "kernel")
    with pytest.raises(lo.LayoutError, match=r"has 4 axes but the array has 5"):
        lay.shape_of((1, 2, 3, 4, 5))
    with pytest.raises(lo.LayoutError, match=r"has 2 spatial axes, got 'Y'"):
        lay.with_spatial("Y")
    with pytest.raises(lo.LayoutError, match=r"layout 'OIHW' has no axis 'N'"):
        _ = lo.Layout("OIHW").batch_axis
    with pytest.raises(lo.LayoutError, match=r"'NCHW' and 'NCDW' do not have the same letters"):
        lo.permutation("NCHW", "NCDW")
    with pytest.raises(lo.LayoutError, match=r"'OIHW' and 'GOIHW' do not have the same letters"):
        lo.permutation("OIHW", "GOIHW")


# -- activation_layout, aliases and defaults ----------------------------------------------------


@pytest.mark.parametrize(
    ("ndim", "first", "last"), [(3, "NCW", "NWC"), (4, "NCHW", "NHWC"), (5, "NCDHW", "NDHWC")]
)
def test_aliases_resolve_by_rank(ndim, first, last):
    assert lo.activation_layout(ndim) == first  # the default is channels-first
    assert lo.activation_layout(ndim, "channels_first") == first
    assert lo.activation_layout(ndim, "channels_last") == last
    assert lo.activation_layout(ndim, "Channels_Last") == last
    assert lo.channels_first(ndim - 2) == first and lo.channels_last(ndim - 2) == last


def test_activation_layout_errors():
    with pytest.raises(lo.LayoutError, match=r"layout 'NCHW' has 4 axes but the input has 3"):
        lo.activation_layout(3, "NCHW")
    with pytest.raises(lo.LayoutError, match=r"'OIHW' is not an activation layout"):
        lo.activation_layout(4, "OIHW")
    with pytest.raises(lo.LayoutError, match=r"at least one spatial axis, got rank 2"):
        lo.activation_layout(2, "channels_last")
    with pytest.raises(lo.LayoutError, match=r"cover 1 to 3 spatial axes, got 4"):
        lo.activation_layout(6, "channels_first")
    with pytest.raises(lo.LayoutError, match=r"cover 1 to 3 spatial axes, got 0"):
        lo.channels_last(0)
    # an explicit layout of any spatial letters is fine
    assert lo.activation_layout(6, "NCTDHW") == "NCTDHW"


@pytest.mark.parametrize(
    ("act", "op", "expected"),
    [
        ("NCHW", "conv", "OIHW"),
        ("NHWC", "conv", "HWIO"),
        ("NCW", "conv", "OIW"),
        ("NDHWC", "conv", "DHWIO"),
        ("NCHW", "conv_transpose", "IOHW"),
        ("NHWC", "conv_transpose", "HWOI"),
        ("NCDHW", "conv_transpose", "IODHW"),
        ("NWC", "conv_transpose", "WOI"),
        ("NCHW", "depthwise", "OIHW"),
        ("NHWC", "depthwise", "HWCM"),
        # the spatial letters keep the input's order
        ("NCWH", "conv", "OIWH"),
        ("NWHC", "conv_transpose", "WHOI"),
        # C first / last with N elsewhere
        ("CHWN", "conv", "OIHW"),
        ("HWNC", "conv", "HWIO"),
    ],
)
def test_default_kernel_layouts(act, op, expected):
    assert lo.kernel_layout(lo.Layout(act), op=op) == expected


def test_kernel_layout_errors():
    with pytest.raises(lo.LayoutError, match=r"'NHCW' has C between spatial.*kernel_layout="):
        lo.kernel_layout(lo.Layout("NHCW"))
    with pytest.raises(lo.LayoutError, match=r"kernel layout 'NCHW' is an activation layout"):
        lo.kernel_layout(lo.Layout("NCHW"), "NCHW")
    with pytest.raises(lo.LayoutError, match=r"spatial letters 'YX' but the input layout 'NCHW'"):
        lo.kernel_layout(lo.Layout("NCHW"), "OIYX")
    with pytest.raises(lo.LayoutError, match=r"spatial letters 'DHW' but the input"):
        lo.kernel_layout(lo.Layout("NCHW"), "OIDHW")
    with pytest.raises(lo.LayoutError, match=r"layout 'OIHW' has 4 axes but the kernel has 5"):
        lo.kernel_layout(lo.Layout("NCHW"), "OIHW", ndim=5)
    # matched by letter, not position
    assert lo.kernel_layout(lo.Layout("NCHW"), "WHIO") == "WHIO"
    assert lo.kernel_layout(lo.Layout("NHWC"), "GOIHW") == "GOIHW"


# -- default_layout -----------------------------------------------------------------------------


def test_default_layout_aliases_adapt_to_rank():
    with lo.default_layout("channels_last"):
        assert lo.activation_layout(3) == "NWC"
        assert lo.activation_layout(4) == "NHWC"
        assert lo.activation_layout(5) == "NDHWC"
        assert lo.activation_layout(4, "NCHW") == "NCHW"  # explicit wins
        with lo.default_layout("channels_first"):
            assert lo.activation_layout(4) == "NCHW"
        assert lo.activation_layout(4) == "NHWC"
    assert lo.activation_layout(4) == "NCHW"


def test_default_layout_concrete_string_applies_to_its_rank_only():
    with lo.default_layout("NHWC"):
        assert lo.activation_layout(4) == "NHWC"
        with pytest.raises(lo.LayoutError, match=r"the default layout 'NHWC' has 4 axes but the "
                                                 r"input has 3"):
            lo.activation_layout(3)
    with lo.default_layout(lo.Layout("NWC")):
        assert lo.activation_layout(3) == "NWC"


def test_default_layout_rejects_non_activation_and_invalid():
    with pytest.raises(lo.LayoutError, match=r"default_layout: 'OIHW' is not an activation"):
        with lo.default_layout("OIHW"):
            pass
    with pytest.raises(lo.LayoutError, match=r"appears twice"):
        with lo.default_layout("NCCW"):
            pass


def test_default_layout_restored_after_exception():
    with pytest.raises(RuntimeError):
        with lo.default_layout("channels_last"):
            raise RuntimeError("boom")
    assert lo.activation_layout(4) == "NCHW"


def test_default_layout_is_thread_local():
    seen = {}
    entered = threading.Event()
    release = threading.Event()

    def worker():
        with lo.default_layout("channels_last"):
            entered.set()
            release.wait(5)
            seen["worker"] = lo.activation_layout(4).spec

    t = threading.Thread(target=worker)
    t.start()
    assert entered.wait(5)
    seen["main_during"] = lo.activation_layout(4).spec  # the worker's block is open now
    release.set()
    t.join(5)
    assert seen == {"worker": "NHWC", "main_during": "NCHW"}

    # a block opened in a thread never leaks into the main thread afterwards
    assert lo.activation_layout(4) == "NCHW"


def test_default_layout_is_isolated_between_asyncio_tasks():
    async def task(spec, gate_in, gate_out):
        with lo.default_layout(spec):
            gate_in.set()
            await gate_out.wait()
            return lo.activation_layout(4).spec

    async def main():
        a_in, a_out, b_in, b_out = (asyncio.Event() for _ in range(4))
        ta = asyncio.create_task(task("channels_last", a_in, a_out))
        tb = asyncio.create_task(task("channels_first", b_in, b_out))
        await a_in.wait()
        await b_in.wait()  # both blocks are open, interleaved
        outside = lo.activation_layout(4).spec
        a_out.set()
        b_out.set()
        return await ta, await tb, outside

    assert asyncio.run(main()) == ("NHWC", "NCHW", "NCHW")
