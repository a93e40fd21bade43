"""The windowing primitive (kernels/window.py) and the tiler (kernels/plan.py)."""

import itertools

import numpy as np
import pytest

import layoutops as lo
from layoutops.kernels import window as kwindow
from layoutops.kernels.plan import split_tiles
from layoutops.kernels.scratch import scratch
from layoutops.kernels.window import TileBlock, padded_block, source_indices, window_view


def reference_index(pos, size, mode):
    """PyTorch's padding meanings, written as plain rules per position."""
    if 0 <= pos < size:
        return pos
    if mode == "constant":
        return None
    if mode == "replicate":
        return 0 if pos < 0 else size - 1
    if mode == "circular":
        return pos % size
    # reflect: mirror about the edge cell, repeatedly
    while not 0 <= pos < size:
        pos = -pos if pos < 0 else 2 * (size - 1) - pos
    return pos


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("size", [2, 3, 4, 5])
def test_source_indices_match_reference(mode, size):
    got = source_indices(-size + 1, 2 * size - 1, size, mode).tolist()
    want = [reference_index(p, size, mode) for p in range(-size + 1, 2 * size - 1)]
    assert got == [-1 if w is None else w for w in want]


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
@pytest.mark.parametrize(("spans", "axes"), [
    (((-2, 3), (1, 6)), (1, 2)),
    (((0, 4), (-1, 5)), (1, 2)),
    (((2, 5), (4, 7)), (1, 2)),
    (((-1, 1),), (2,)),
])
def test_padded_block_matches_reference(mode, spans, axes):
    x = np.arange(2 * 4 * 5, dtype=np.float64).reshape(2, 4, 5)
    block = padded_block(x, axes, spans, mode=mode, fill=-7.0)
    shape = list(x.shape)
    for ax, (lo_, hi) in zip(axes, spans, strict=True):
        shape[ax] = hi - lo_
    assert block.shape == tuple(shape)
    for idx in itertools.product(*(range(s) for s in shape)):
        src = list(idx)
        inside = True
        for ax, (lo_, _) in zip(axes, spans, strict=True):
            r = reference_index(idx[ax] + lo_, x.shape[ax], mode)
            if r is None:
                inside = False
            else:
                src[ax] = r
        assert block[idx] == (x[tuple(src)] if inside else -7.0)


@pytest.mark.parametrize("slot", [None, "test borders"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
@pytest.mark.parametrize(("shape", "axes", "spans"), [
    ((3, 2, 5, 6), (2, 3), ((-1, 6), (-1, 7))),  # one cell each side: row-pair items
    ((3, 2, 5, 6), (2, 3), ((0, 5), (-2, 6))),  # left border only
    ((3, 2, 5, 6), (2, 3), ((-1, 5), (0, 9))),  # right border only (3 cells)
    ((2, 3, 4), (1, 2), ((-2, 6), (-3, 7))),  # wide borders
    ((2, 3, 2), (2,), ((-4, 6),)),  # borders wider than the data
    ((1, 4, 1), (1, 2), ((-1, 5), (-1, 2))),  # one column
    ((2, 5, 3), (0, 2), ((-1, 3), (-1, 4))),  # the first axis padded too
    ((300, 30, 40), (1, 2), ((-1, 31), (-2, 41))),  # > 1 MiB: copied in pieces
])
@pytest.mark.parametrize("small_blocks", ["zero fill", "border slabs"])
def test_padded_block_constant_borders_match_np_pad(shape, axes, spans, dtype, slot,
                                                     small_blocks, monkeypatch):
    if small_blocks == "border slabs":
        monkeypatch.setattr(kwindow, "SMALL_BLOCK_BYTES", 0)
    x = np.arange(np.prod(shape)).reshape(shape).astype(dtype) + 1
    pads = [(0, 0)] * len(shape)
    box = [slice(None)] * len(shape)
    for ax, (lo_, hi) in zip(axes, spans, strict=True):
        pads[ax] = (max(-lo_, 0), max(hi - shape[ax], 0))
        box[ax] = slice(max(lo_, 0), min(hi, shape[ax]))
    # the second call reuses a scratch buffer full of 99s; zeros take the small blocks' fill
    for fill in (99, -3, 0):
        want = np.pad(x[tuple(box)], pads, constant_values=fill)
        got = padded_block(x, axes, spans, fill=fill, scratch_slot=slot)
        np.testing.assert_array_equal(got, want)
        assert got.dtype == dtype


def test_padded_block_is_a_view_inside_and_a_copy_outside():
    x = np.arange(30.0).reshape(5, 6)
    inside = padded_block(x, (0, 1), ((1, 4), (0, 6)))
    assert np.shares_memory(inside, x)
    outside = padded_block(x, (0, 1), ((-1, 4), (0, 6)))
    assert not np.shares_memory(outside, x)
    cast = padded_block(x, (0, 1), ((1, 4), (0, 6)), dtype=np.float32)
    assert cast.dtype == np.float32 and not np.shares_memory(cast, x)



@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("letters", ["NHWGC", "NGCHW", "HNWCG"])
def test_tile_block_pieces_are_cuts_of_the_padded_reference(mode, letters):
    # the reference: np.pad of the whole input, cut to the tile's spans, then to the piece
    rng = np.random.default_rng(5)
    sizes = dict(N=3, G=2, C=3, H=7, W=6)
    x = rng.standard_normal([sizes[c] for c in letters]).astype(np.float32)
    axes = (letters.index("H"), letters.index("W"))
    spans = ((-2, 8), (-1, 7))  # both borders of H, both of W
    canon = "NGCHW"
    perm = [letters.index(c) for c in canon]
    np_mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge",
               "circular": "wrap"}[mode]
    pads = [(0, 0)] * x.ndim
    for ax, (lo_, hi) in zip(axes, spans, strict=True):
        pads[ax] = (-lo_, hi - x.shape[ax])
    want = np.pad(x, pads, mode=np_mode).transpose(perm)  # spans start at the pad edge
    blk = TileBlock(x, axes, spans, perm, n_axis=letters.index("N"),
                    g_axis=letters.index("G"), mode=mode)
    assert blk.shape == want.shape
    np.testing.assert_array_equal(blk.whole(), want)
    for samples, groups, rows in [(slice(0, 3), slice(0, 2), (0, 10)),
                                  (slice(1, 2), slice(1, 2), (0, 3)),
                                  (slice(0, 2), slice(0, 1), (3, 6)),  # inside: a view
                                  (slice(2, 3), slice(0, 2), (8, 10))]:
        got = blk.piece(samples, groups, rows)
        np.testing.assert_array_equal(got, want[samples, groups, :, rows[0] : rows[1]])


@pytest.mark.parametrize(
    ("n", "k", "s", "d"), [(7, 2, 3, 2), (8, 3, 1, 1), (9, 3, 2, 3), (5, 5, 1, 1)]
)
def test_window_view_matches_loops(n, k, s, d):
    x = np.arange(n * 3).reshape(3, n)
    v = window_view(x, (1,), (k,), (s,), (d,))
    out = (n - d * (k - 1) - 1) // s + 1
    assert v.shape == (3, out, k)
    for c in range(3):
        for o in range(out):
            for t in range(k):
                assert v[c, o, t] == x[c, o * s + t * d]


def test_window_view_two_axes_order():
    x = np.arange(4 * 5 * 2).reshape(4, 5, 2)  # H, W, C
    v = window_view(x, (0, 1), (2, 3), (2, 1), (1, 1))
    assert v.shape == (2, 3, 2, 2, 3)  # oh, ow, c, kh, kw
    assert v[1, 2, 1, 1, 2] == x[1 * 2 + 1, 2 + 2, 1]


def test_split_tiles_cover_exactly_once_and_fit():
    shape = (3, 7, 5)
    cost = lambda t: t[0] * t[1] * t[2] * 8  # noqa: E731
    tiles = list(split_tiles(shape, cost, limit=8 * 10))
    seen = np.zeros(shape, int)
    for t in tiles:
        seen[t] += 1
        assert cost(tuple(sl.stop - sl.start for sl in t)) <= 80
    assert (seen == 1).all()


def test_split_tiles_zero_size_and_limit_context():
    assert list(split_tiles((0, 4), lambda t: 0, limit=1)) == [(slice(0, 0), slice(0, 4))]
    with lo.workspace_limit(2**16):
        assert lo.get_workspace_limit() == 2**16
    assert lo.get_workspace_limit() == 64 * 2**20
    with pytest.raises(ValueError, match="workspace limit must be an int >= 65536"):
        lo.set_workspace_limit(10)


@pytest.mark.parametrize("letters", ["NHWGC", "HNWGC"])
@pytest.mark.parametrize("spans", [((-2, 8), (-1, 7)), ((1, 6), (0, 6)), ((-1, 3), (2, 9))])
def test_tile_block_group_major_pieces_match_the_padded_reference(letters, spans):
    """`TileBlock.piece_group_major`: the zero-padded piece in (G, n, *S, c) order, written
    into a scratch slot that held other values before (every border cell is written), and
    again into the same slot (the borders kept from the previous piece of that shape)."""
    rng = np.random.default_rng(6)
    sizes = dict(N=3, G=4, C=2, H=7, W=6)
    x = rng.standard_normal([sizes[c] for c in letters]).astype(np.float32)
    axes = (letters.index("H"), letters.index("W"))
    canon = "NHWGC"
    perm = [letters.index(c) for c in canon]
    pads = [(0, 0)] * x.ndim
    for ax, (lo_, hi) in zip(axes, spans, strict=True):
        pads[ax] = (max(0, -lo_), max(0, hi - x.shape[ax]))
    padded = np.pad(x, pads).transpose(perm)  # (N, H', W', G, C)
    want = padded[:, spans[0][0] + pads[axes[0]][0] : spans[0][1] + pads[axes[0]][0],
                  spans[1][0] + pads[axes[1]][0] : spans[1][1] + pads[axes[1]][0]]
    blk = TileBlock(x, axes, spans, perm, n_axis=letters.index("N"),
                    g_axis=letters.index("G"), mode="constant")
    pieces = [(slice(0, 3), slice(0, 4), (0, want.shape[1])),
              (slice(1, 2), slice(1, 3), (0, 3)),
              (slice(0, 2), slice(2, 4), (2, want.shape[1])),
              (slice(1, 3), slice(3, 4), (1, 4))]  # one group: copied as rows of floats
    for junk_first in (True, False):
        for samples, groups, rows in pieces:
            for _ in range(2):  # the second time into the same slot, borders kept
                if junk_first:
                    scratch("stage", 4096, np.float32)[...] = np.nan
                    junk_first = False
                got = blk.piece_group_major(samples, groups, rows, "stage")
                ref = want[samples, rows[0] : rows[1], :, groups].transpose(3, 0, 1, 2, 4)
                np.testing.assert_array_equal(got, ref)
            scratch("stage", 4096, np.float32)[...] = np.nan  # another user of the slot
    # other padding modes and casts: not done here (the caller pads and stages)
    assert TileBlock(x, axes, spans, perm, n_axis=letters.index("N"), g_axis=letters.index("G"),
                     mode="reflect").piece_group_major(slice(0, 1), slice(0, 1), (0, 2),
                                                       "stage") is None
    assert TileBlock(x, axes, spans, perm, n_axis=letters.index("N"), g_axis=letters.index("G"),
                     mode="constant", dtype=np.float64).piece_group_major(
        slice(0, 1), slice(0, 1), (0, 2), "stage") is None
