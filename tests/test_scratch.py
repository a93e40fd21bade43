"""Per-thread scratch buffers (kernels/scratch.py): reused within a thread, separate between
threads, bounded, and never part of a result."""

import threading

import numpy as np
import pytest

import layoutops as lo
from layoutops.kernels import conv as kconv
from layoutops.kernels import scratch as ks


def test_slot_reuse_alignment_and_growth():
    ks.release()
    a = ks.scratch("t", 100, np.float32)
    assert a.ctypes.data % 64 == 0 and a.shape == (100,)
    b = ks.scratch("t", 50, np.float64)  # same slot, fits: the same memory
    assert np.shares_memory(a, b)
    c = ks.scratch("t", 10_000, np.float32)  # grows: a new buffer
    assert c.shape == (10_000,) and not np.shares_memory(a, c)
    d = ks.scratch("other", 100, np.float32)  # another slot: other memory
    assert not np.shares_memory(c, d)
    assert ks.cached_bytes() >= 10_000 * 4 + 400
    ks.release()
    assert ks.cached_bytes() == 0


def test_large_requests_are_not_cached():
    ks.release()
    big = ks.scratch("t", ks.MAX_CACHED_BYTES // 4 + 1, np.float32)
    assert big.nbytes > ks.MAX_CACHED_BYTES and ks.cached_bytes() == 0


def test_threads_get_their_own_buffers():
    ks.release()
    mine = ks.scratch("t", 100, np.float32)
    theirs = []
    thread = threading.Thread(target=lambda: theirs.append(ks.scratch("t", 100, np.float32)))
    thread.start()
    thread.join()
    assert not np.shares_memory(mine, theirs[0])


@pytest.mark.parametrize(
    "layout,shape,wshape,kw",
    [
        ("NCHW", (2, 8, 9, 7), (8, 8, 3, 3), dict(padding=1)),  # padded block, im2col chunks
        ("NHWC", (2, 9, 7, 8), (3, 3, 8, 8), dict(padding=1)),
        ("NHWC", (2, 9, 7, 8), (3, 3, 2, 8), dict(padding=1, groups=4)),  # staged groups
        ("NCHW", (2, 8, 6, 5), (4, 8, 1, 1), {}),  # 1x1: views of the input
        ("NDHWC", (2, 4, 5, 6, 3), (3, 3, 3, 3, 4), dict(padding=1)),  # 3-D depth columns
    ],
)
def test_results_never_alias_scratch(layout, shape, wshape, kw, monkeypatch):
    """A second call with the same shapes reuses every scratch buffer; the first result must
    not change."""
    monkeypatch.setattr(kconv, "_CHUNK_BYTES", 512)
    monkeypatch.setattr(kconv, "_THIN_CHUNK_BYTES", 512)
    monkeypatch.setattr(kconv, "_MIN_SPLIT_BYTES", 0)
    monkeypatch.setattr(kconv, "_ONE_THREAD_BYTES", 0)  # chunked, not one GEMM
    rng = np.random.default_rng(0)
    klayout = {"NCHW": "OIHW", "NHWC": "HWIO", "NDHWC": "DHWIO"}[layout]
    w = rng.standard_normal(wshape)
    first = lo.conv(rng.standard_normal(shape), w, layout=layout, kernel_layout=klayout, **kw)
    kept = first.copy()
    second = lo.conv(rng.standard_normal(shape), w, layout=layout, kernel_layout=klayout, **kw)
    np.testing.assert_array_equal(first, kept)
    assert not np.shares_memory(first, second)


def test_reused_key_is_forgotten_by_any_other_request():
    ks.release()

    def ask(size, key):
        arr, same = ks.scratch_reused("k", size, np.float32, key)
        ks.filled("k", arr, key)
        return arr, same

    a, same = ask(16, "layout")
    assert not same
    b, same = ask(16, "layout")
    assert same and np.shares_memory(a, b)
    assert not ask(16, "other layout")[1]
    ks.scratch("k", 16, np.float32)  # a plain request
    assert not ask(16, "other layout")[1]
    ask(16, "layout")
    ask(4096, "layout")  # grown: a new buffer
    assert not ask(16, "layout")[1]  # ... asked with another size: another entry
    big = ks.MAX_CACHED_BYTES // 4 + 1
    ask(big, "layout")
    assert not ask(big, "layout")[1]  # never kept
    ask(16, "layout")
    ks.scratch_reused("k", 16, np.float32, "layout")  # not marked filled afterwards
    assert not ask(16, "layout")[1]
    ask(16, "layout")
    ks.release()
    assert not ask(16, "layout")[1]


def test_a_failed_fill_leaves_no_key(monkeypatch):
    """A padded block whose copy raised half-way (its borders garbage) is not trusted next
    time."""
    from layoutops.kernels import window

    ks.release()
    x = np.ones((1, 3, 3), np.float32)
    spans = ((-1, 4), (-1, 4))
    window.padded_block(x, (1, 2), spans, scratch_slot="pb")
    real = window._copy_padded

    def broken(out, *args):
        out[...] = np.nan
        raise KeyboardInterrupt

    monkeypatch.setattr(window, "_copy_padded", broken)
    with pytest.raises(KeyboardInterrupt):
        window.padded_block(x, (1, 2), spans, scratch_slot="pb")
    monkeypatch.setattr(window, "_copy_padded", real)
    got = window.padded_block(x, (1, 2), spans, scratch_slot="pb")
    np.testing.assert_array_equal(got, np.pad(x, ((0, 0), (1, 1), (1, 1))))
    ks.release()


def test_padded_blocks_in_scratch_keep_their_zero_borders():
    """A padded block in a scratch slot skips its border fill when the slot held a block of
    the same shape and box last time; any other use of the slot in between (garbage in the
    borders) makes it fill them again."""
    from layoutops.kernels.window import padded_block

    ks.release()
    rng = np.random.default_rng(0)
    spans = ((-1, 6), (-2, 5))

    def want(x):
        return np.pad(x, ((0, 0), (1, 1), (2, 1)))

    for step in range(4):
        x = rng.standard_normal((2, 5, 4)).astype(np.float32)
        if step == 2:
            junk = ks.scratch("pb", 2 * 7 * 7, np.float32)
            junk[...] = np.nan  # another user of the slot
        if step == 3:
            junk, _ = ks.scratch_reused("pb", 2 * 7 * 7, np.float32, "someone else")
            junk[...] = np.nan
        got = padded_block(x, (1, 2), spans, scratch_slot="pb")
        np.testing.assert_array_equal(got, want(x))
    # the same box with another fill value is another key
    ks.release()
    x = np.ones((1, 2, 2), np.float32)
    padded_block(x, (1, 2), ((-1, 3), (-1, 3)), scratch_slot="pb")
    got = padded_block(x, (1, 2), ((-1, 3), (-1, 3)), fill=5.0, scratch_slot="pb")
    assert got[0, 0, 0] == 5.0 and got[0, 1, 1] == 1.0
    ks.release()
