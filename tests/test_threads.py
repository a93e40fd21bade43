"""The threaded paths (kernels/threads.py): grouped-conv pipelines and pool tiles split over
threads give the plain-loop reference's results, identical to the one-thread run."""

import numpy as np
import pytest
from conv_reference import act_from, act_to, conv_ref, kernel_to
from pool_reference import avg_pool as ref_avg_pool
from pool_reference import max_pool as ref_max_pool
from recording import spy_parallel

import layoutops as lo
from layoutops.kernels import blas as kblas
from layoutops.kernels import conv as kconv
from layoutops.kernels import pool as kpool
from layoutops.kernels.threads import get_num_threads, set_num_threads

pytestmark = pytest.mark.usefixtures("no_tiny_path")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("shape", [(2, 8, 7, 6), (3, 8, 6, 5)])
def test_grouped_conv_pipelines_match_reference(layout, shape, threads, monkeypatch):
    monkeypatch.setattr(kconv, "_CHUNK_BYTES", 256)  # many chunks: pipelines on both threads
    monkeypatch.setattr(kconv, "_THIN_CHUNK_BYTES", 256)
    monkeypatch.setattr(kconv, "_MIN_SPLIT_BYTES", 0)
    monkeypatch.setattr(kconv, "_ONE_THREAD_BYTES", 0)  # chunked, not one GEMM
    calls = spy_parallel(monkeypatch, kblas)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    w = rng.standard_normal((8, 2, 3, 3))
    want = conv_ref(x, w, strides=(1, 2), pads=((1, 0), (1, 1)), dilations=(1, 1), groups=4)
    kl = "OIHW" if layout == "NCHW" else "HWIO"
    results = []
    for n in (1, 2):
        threads(n)
        assert get_num_threads() == n
        got = lo.conv(act_to(x, "NCHW", layout), kernel_to(w, kl, "OIHW"), stride=(1, 2),
                      padding=(1, 0, 1, 1), groups=4, layout=layout, algorithm="im2col")
        results.append(got)
        np.testing.assert_allclose(act_from(got, layout, "NCHW"), want, rtol=1e-12, atol=1e-12)
    assert 2 in calls  # the two-thread run did split into pipelines
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_pool_tiles_split_over_threads_match_reference(layout, threads, monkeypatch):
    monkeypatch.setattr(kpool, "CACHE_TILE_BYTES", 256)  # many small tiles: both threads busy
    calls = spy_parallel(monkeypatch, kpool)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 9, 8))
    xin = act_to(x, "NCHW", layout)
    pads = ((1, 0), (1, 1))
    want_max, want_idx = ref_max_pool(x, (3, 2), (2, 2), (1, 1), pads, ceil_mode=True)
    want_avg = ref_avg_pool(x, (3, 2), (2, 2), (1, 1), pads, ceil_mode=True)
    runs = []
    for n in (1, 2):
        threads(n)
        kw = dict(stride=2, padding=(1, 0, 1, 1), ceil_mode=True, layout=layout)
        mx = lo.max_pool(xin, (3, 2), **kw)
        av = lo.avg_pool(xin, (3, 2), **kw)
        mi, idx = lo.max_pool(xin, (3, 2), return_indices=True, **kw)
        runs.append((mx, av, mi, idx))
        np.testing.assert_array_equal(act_from(mx, layout, "NCHW"), want_max)
        np.testing.assert_allclose(act_from(av, layout, "NCHW"), want_avg, rtol=1e-12)
        np.testing.assert_array_equal(act_from(mi, layout, "NCHW"), want_max)
        np.testing.assert_array_equal(act_from(idx, layout, "NCHW"), want_idx)
    assert 2 in calls  # the two-thread run did split its tiles
    for a, b in zip(runs[0], runs[1], strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_pool_work_below_two_tiles_per_thread_is_cut_for_the_threads(layout, threads,
                                                                      monkeypatch):
    """A pool that fits one cache tile: on the calling thread below
    `SPLIT_FOR_THREADS_BYTES` (small work as one tile without `parallel` at all), cut into
    two tiles per thread at or above it, with the one-thread results either way."""
    calls = spy_parallel(monkeypatch, kpool)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 5, 11, 10))
    xin = act_to(x, "NCHW", layout)
    pads = ((1, 1), (1, 1))
    want_max = ref_max_pool(x, (3, 3), (2, 2), (1, 1), pads)[0]
    want_avg = ref_avg_pool(x, (3, 3), (2, 2), (1, 1), pads)
    kw = dict(stride=2, padding=1, layout=layout)
    threads(1)
    one = (lo.max_pool(xin, 3, **kw), lo.avg_pool(xin, 3, **kw))
    threads(2)
    for bound, split in ((2**40, False), (0, True)):
        monkeypatch.setattr(kpool, "SPLIT_FOR_THREADS_BYTES", bound)
        calls.clear()
        got = (lo.max_pool(xin, 3, **kw), lo.avg_pool(xin, 3, **kw))
        assert calls == [2, 2] if split else calls == []
        np.testing.assert_array_equal(act_from(got[0], layout, "NCHW"), want_max)
        np.testing.assert_allclose(act_from(got[1], layout, "NCHW"), want_avg, rtol=1e-12)
        for a, b in zip(one, got, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_max_unpool_planes_split_over_threads_keep_the_last_shared_value(layout, threads,
                                                                          monkeypatch):
    """`max_unpool` with whole planes per tile on one thread and on two: indices shared
    within a plane keep the later value either way (the plain-loop reference's rule)."""
    from pool_reference import max_unpool as ref_max_unpool

    monkeypatch.setattr(kpool, "UNPOOL_PARALLEL_BYTES", 0)
    rng = np.random.default_rng(12)
    x = rng.standard_normal((5, 3, 4, 3))
    idx = rng.integers(0, 7 * 5, size=x.shape)  # many shared cells in each 7x5 plane
    want = ref_max_unpool(x, idx, (7, 5))
    calls = spy_parallel(monkeypatch, kpool)
    runs = []
    for n in (1, 2):
        threads(n)
        got = lo.max_unpool(act_to(x, "NCHW", layout), act_to(idx, "NCHW", layout), 2,
                            output_size=(7, 5), layout=layout)
        np.testing.assert_array_equal(act_from(got, layout, "NCHW"), want)
        runs.append(got)
    assert calls[-1] == 2  # the two-thread run split its planes
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_adaptive_max_pool_planes_split_over_threads_match_reference(layout, threads,
                                                                     monkeypatch):
    """Non-uniform adaptive max pools (values and indices, a NaN in one plane) with their
    planes on one thread and on two: the plain-loop reference's, the same either way."""
    from pool_reference import adaptive_pool as ref_adaptive_pool

    monkeypatch.setattr(kpool, "ADAPTIVE_PARALLEL_BYTES", 0)
    calls = spy_parallel(monkeypatch, kpool)
    rng = np.random.default_rng(13)
    x = rng.integers(-3, 4, size=(4, 3, 7, 9)).astype(np.float64)  # ties
    x[2, 1, 3, 4] = np.nan
    want, want_idx = ref_adaptive_pool(x, (3, 4), "max")
    runs = []
    for n in (1, 2):
        threads(n)
        xin = act_to(x, "NCHW", layout)
        out, idx = lo.adaptive_max_pool(xin, (3, 4), return_indices=True, layout=layout)
        plain = lo.adaptive_max_pool(xin, (3, 4), layout=layout)
        np.testing.assert_array_equal(act_from(out, layout, "NCHW"), want)
        np.testing.assert_array_equal(act_from(idx, layout, "NCHW"), want_idx)
        np.testing.assert_array_equal(act_from(plain, layout, "NCHW"), want)
        runs.append((out, idx))
    assert 2 in calls  # the two-thread run split its planes
    for a, b in zip(runs[0], runs[1], strict=True):
        np.testing.assert_array_equal(a, b)


def test_set_num_threads_rejects_bad_values():
    with pytest.raises(ValueError, match="thread count must be an int >= 1 or None, got 0"):
        set_num_threads(0)


_CHUNK_CASES = [
    # (input NC*S, kernel OI*K, strides, pads, dilations, groups)
    ((2, 6, 9, 8), (4, 6, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    ((3, 4, 7, 10), (6, 2, 2, 3), (2, 1), ((0, 1), (2, 0)), (1, 2), 2),
    ((2, 3, 11, 6), (8, 3, 5, 1), (2, 2), ((2, 2), (0, 0)), (1, 1), 1),  # few channels
    ((2, 8, 6, 5), (8, 1, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 8),  # depthwise
    ((2, 5, 13), (3, 5, 4), (1,), ((2, 1),), (2,), 1),  # 1-D
    ((2, 4, 5, 6, 4), (3, 4, 3, 3, 2), (1, 1, 1), ((1, 1), (1, 1), (0, 1)), (1, 1, 1), 1),
    ((2, 4, 6, 5, 4), (4, 2, 2, 3, 3), (2, 1, 1), ((1, 0), (1, 1), (1, 1)), (1, 1, 1), 2),
]
_LAYOUTS = {1: ("NCW", "NWC"), 2: ("NCHW", "NHWC"), 3: ("NCDHW", "NDHWC")}
_KERNELS = {"NCW": "OIW", "NWC": "WIO", "NCHW": "OIHW", "NHWC": "HWIO", "NCDHW": "OIDHW",
            "NDHWC": "DHWIO"}


@pytest.mark.parametrize("case", _CHUNK_CASES, ids=lambda c: f"{c[0]}-{c[1]}-g{c[5]}")
@pytest.mark.parametrize("last", [False, True], ids=["channels_first", "channels_last"])
@pytest.mark.parametrize("chunk", [64, 700, 5000])
def test_im2col_chunk_pipelines_match_reference(case, last, chunk, threads, monkeypatch):
    """Tiny chunks force every split of `_run_im2col` (groups, samples, rows; several
    samples per chunk in channels-first) on both thread counts."""
    shape, wshape, strides, pads, dilations, groups = case
    monkeypatch.setattr(kconv, "_CHUNK_BYTES", chunk)
    monkeypatch.setattr(kconv, "_THIN_CHUNK_BYTES", chunk)
    monkeypatch.setattr(kconv, "_MIN_SPLIT_BYTES", 0)
    monkeypatch.setattr(kconv, "_ONE_THREAD_BYTES", 0)  # chunked, not one GEMM
    calls = spy_parallel(monkeypatch, kblas)
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape)
    w = rng.standard_normal(wshape)
    b = rng.standard_normal(wshape[0])  # added by each chunk to its own output
    want = conv_ref(x, w, b, strides=strides, pads=pads, dilations=dilations, groups=groups)
    layout = _LAYOUTS[len(shape) - 2][last]
    canon = _LAYOUTS[len(shape) - 2][0]
    padding = [tuple(pair) for pair in pads]
    results = []
    for n in (1, 2):
        threads(n)
        got = lo.conv(act_to(x, canon, layout), kernel_to(w, _KERNELS[layout], _KERNELS[canon]),
                      b, stride=strides, padding=padding, dilation=dilations, groups=groups,
                      layout=layout, algorithm="im2col")
        results.append(got)
        np.testing.assert_allclose(act_from(got, layout, canon), want, rtol=1e-12, atol=1e-12)
    if chunk < 5000:  # (5000 bytes: some of the cases fit one chunk and run unsplit)
        assert 2 in calls  # the two-thread run ran pipelines
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular", "zeros-float16"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize(("groups", "stride"), [(1, 2), (2, 1)])
def test_im2col_chunks_pad_their_own_pieces(mode, layout, groups, stride, threads,
                                            monkeypatch):
    """Each im2col chunk pads its own piece of the tile's block (`window.TileBlock`): every
    padding mode, a cast (float16 input), pieces cut by samples, groups and rows."""
    monkeypatch.setattr(kconv, "_CHUNK_BYTES", 700)
    monkeypatch.setattr(kconv, "_THIN_CHUNK_BYTES", 700)
    monkeypatch.setattr(kconv, "_MIN_SPLIT_BYTES", 0)
    monkeypatch.setattr(kconv, "_ONE_THREAD_BYTES", 0)  # chunked, not one GEMM
    monkeypatch.setattr(kconv, "_WIDE_ROWS", False)  # the im2col chunks themselves
    rng = np.random.default_rng(11)
    dtype = np.float16 if mode == "zeros-float16" else np.float64
    x = rng.standard_normal((3, 4, 9, 8)).astype(dtype)
    w = rng.standard_normal((6, 4 // groups, 3, 3)).astype(dtype)
    pad_mode = "zeros" if mode == "zeros-float16" else mode
    pads = ((2, 1), (1, 2))
    want = conv_ref(x, w, strides=(stride, stride), pads=pads, dilations=(1, 1),
                    groups=groups, mode=pad_mode)
    tol = 1e-2 if dtype == np.float16 else 1e-12
    runs = []
    for n in (1, 2):
        threads(n)
        got = lo.conv2d(act_to(x, "NCHW", layout), kernel_to(w, _KERNELS[layout], "OIHW"),
                        stride=stride, padding=[(2, 1), (1, 2)], groups=groups,
                        padding_mode=pad_mode, layout=layout, algorithm="im2col")
        assert got.dtype == dtype
        np.testing.assert_allclose(act_from(got, layout, "NCHW"), want, rtol=tol, atol=tol)
        runs.append(got)
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("shape", [(5, 6, 7, 7), (4, 9, 6, 5), (3, 70, 4, 5), (33, 7, 3, 3)])
def test_global_avg_pool_plane_sums_split_over_threads(layout, shape, threads, monkeypatch):
    """The matrix-vector plane sums of `global_avg_pool` run their row (or sample) ranges on
    the threads, with BLAS held to one thread; each range gives the mean of its planes."""
    calls = spy_parallel(monkeypatch, kpool)
    monkeypatch.setattr(kpool, "PLANE_SUMS_PARALLEL_BYTES", 0)  # small inputs: split anyway
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape).astype(np.float32)
    want = x.astype(np.float64).mean(axis=(2, 3), keepdims=True)
    runs = []
    for n in (1, 2):
        threads(n)
        got = lo.global_avg_pool(act_to(x, "NCHW", layout), layout=layout)
        assert got.dtype == np.float32
        runs.append(got)
        np.testing.assert_allclose(act_from(got, layout, "NCHW"), want, rtol=1e-5, atol=1e-6)
    rows = shape[0] if layout == "NHWC" else shape[0] * shape[1]
    if rows >= (2 if layout == "NHWC" else 128):  # channels-first splits on 64-row bounds
        assert 2 in calls
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("in_hw,k", [((7, 6), 4), ((6, 5), 2)])
def test_conv_transpose_batch_pipelines_match_reference(layout, in_hw, k, threads, monkeypatch):
    """Transposed-conv tiles of different samples run on both threads (channels-first phase
    planes, channels-last row scatter); tiny tile budgets force several tiles per sample,
    which must stay in order on one thread since their outputs overlap."""
    from conv_transpose_reference import ref_conv_transpose

    from layoutops.kernels import conv_transpose as kct

    monkeypatch.setattr(kct, "PHASE_TILE_BYTES", 1)  # one sample per tile
    monkeypatch.setattr(kct, "ROW_TILE_BYTES", 600)  # several row tiles per sample
    calls = spy_parallel(monkeypatch, kblas)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5, 3, *in_hw))
    w = rng.standard_normal((3, 4, k, k))  # IOHW
    want = ref_conv_transpose(x, w, None, (2, 2), (1, 1), ((1, 1), (1, 1)), (0, 0), 1)
    xl, wl = x, w
    if layout == "NHWC":
        xl = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        wl = np.ascontiguousarray(w.transpose(2, 3, 1, 0))  # HWOI
    results = []
    for n in (1, 2):
        threads(n)
        got = lo.conv_transpose(xl, wl, stride=2, padding=1, layout=layout)
        results.append(got if layout == "NCHW" else got.transpose(0, 3, 1, 2))
    np.testing.assert_allclose(results[1], want, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(results[0], results[1])  # same sums, whatever the threads
    assert 2 in calls  # the two-thread run split the samples


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("groups", [1, 2])
def test_pointwise_pixel_ranges_over_threads_match_reference(layout, groups, threads,
                                                             monkeypatch):
    """1x1 convs multiply views of the input in pixel ranges, one pipeline per thread; tiny
    ranges force many of them."""
    monkeypatch.setattr(kconv, "_POINTWISE_BYTES", 64)
    calls = spy_parallel(monkeypatch, kblas)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 4, 5, 7))
    w = rng.standard_normal((6, 4 // groups, 1, 1))
    want = conv_ref(x, w, strides=(1, 1), pads=((0, 0), (0, 0)), dilations=(1, 1),
                    groups=groups)
    xl = act_to(x, "NCHW", layout)
    klayout = "OIHW" if layout == "NCHW" else "HWIO"
    wl = kernel_to(w, klayout, "OIHW")
    results = []
    for n in (1, 2):
        threads(n)
        got = lo.conv2d(xl, wl, groups=groups, layout=layout, kernel_layout=klayout)
        results.append(act_from(got, layout, "NCHW"))
    np.testing.assert_allclose(results[1], want, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(results[0], results[1])
    assert 2 in calls


def test_parallel_parts_see_the_callers_context(threads):
    """Work handed to the pool's threads runs in a copy of the caller's context, so a
    ``with lo.workspace_limit(...)`` block holds there too."""
    from layoutops.kernels.threads import parallel

    threads(2)
    seen = []
    with lo.workspace_limit(2**20):
        parallel(lambda part: seen.extend(lo.get_workspace_limit() for _ in part), [1, 2, 3, 4])
    assert len(seen) == 4 and set(seen) == {2**20}


def test_global_avg_pool_small_input_stays_on_the_calling_thread(threads, monkeypatch):
    """Below `PLANE_SUMS_PARALLEL_BYTES` the plane sums are not handed to another thread."""
    calls = spy_parallel(monkeypatch, kpool)
    threads(2)
    x = np.random.default_rng(5).standard_normal((2, 3, 3, 16)).astype(np.float32)
    got = lo.global_avg_pool(x, layout="NHWC")
    np.testing.assert_allclose(got, x.mean(axis=(1, 2), keepdims=True), rtol=1e-5)
    assert calls and 2 not in calls


def _fullest_part(n, length, parts):
    """Items in the fullest part when ``n`` items in runs of ``length`` are split by
    `parallel` (contiguous parts of ``ceil(runs / parts)`` runs)."""
    from layoutops.kernels.threads import parallel

    runs = [list(range(s, min(n, s + length))) for s in range(0, n, length)]
    loads = []
    parallel(lambda part: loads.append(sum(len(r) for r in part)), runs, parts)
    return max(loads)


def test_balanced_run_minimises_the_fullest_part(threads):
    """Against a brute force over every run length: the fullest thread's items as few as any
    length allows, and the longest such length (fewer calls)."""
    from layoutops.kernels.threads import balanced_run

    threads(4)
    for n in range(1, 21):
        for most in range(1, 22):
            for parts in (1, 2, 3, 4):
                got = balanced_run(n, most, parts)
                loads = {ln: _fullest_part(n, ln, parts) for ln in range(1, min(most, n) + 1)}
                least = min(loads.values())
                assert got <= max(1, most) and loads[got] == least
                assert got == max(ln for ln, load in loads.items() if load == least)


def test_parallel_hands_parts_to_worker_threads_and_raises_their_errors(threads):
    """Each part after the first runs on a worker thread; an exception raised in any part
    reaches the caller once every part is done, and the workers take the next call."""
    import threading

    from layoutops.kernels.threads import parallel

    threads(3)
    ran = {}

    def record(part):
        ran[tuple(part)] = threading.get_ident()

    parallel(record, [1, 2, 3, 4, 5, 6])
    assert sorted(ran) == [(1, 2), (3, 4), (5, 6)]
    assert ran[(1, 2)] == threading.get_ident()
    assert len({ran[(3, 4)], ran[(5, 6)], threading.get_ident()}) == 3
    finished = []

    def fail_on(bad):
        def fn(part):
            if bad in part:
                raise RuntimeError(f"part {part}")
            finished.append(tuple(part))
        return fn

    for bad in (1, 5):  # the caller's own part, a worker's
        finished.clear()
        with pytest.raises(RuntimeError, match=f"part \\[{bad}, {bad + 1}\\]"):
            parallel(fail_on(bad), [1, 2, 3, 4, 5, 6])
        assert len(finished) == 2  # the other parts ran to their end
    ran.clear()
    parallel(record, [1, 2, 3, 4, 5, 6])
    assert len(set(ran.values())) == 3


def test_parallel_called_while_the_workers_are_busy_runs_on_its_own_thread(threads):
    """A second caller's `parallel` does not wait for the workers (nor share the cores
    with the first caller's parts): it runs every item on its calling thread."""
    import threading

    from layoutops.kernels.threads import parallel

    threads(2)
    inside, release = threading.Event(), threading.Event()

    def first(part):
        inside.set()
        assert release.wait(10)

    outer = threading.Thread(target=parallel, args=(first, [1, 2]))
    outer.start()
    assert inside.wait(10)
    calls = []
    parallel(lambda part: calls.append((list(part), threading.get_ident())), [1, 2, 3, 4])
    assert calls == [([1, 2, 3, 4], threading.get_ident())]
    release.set()
    outer.join(10)
    assert not outer.is_alive()
    calls.clear()
    parallel(lambda part: calls.append(list(part)), [1, 2, 3, 4])  # the workers free again
    assert sorted(calls) == [[1, 2], [3, 4]]


def test_ops_called_from_several_threads_at_once_match_the_serial_results(threads):
    """Four threads of a user's program running convs and pools at the same time: whichever
    call gets the workers and whichever runs alone, every result equals the one computed
    with nobody else running (same bits)."""
    import threading

    threads(2)
    rng = np.random.default_rng(21)
    x = rng.standard_normal((8, 32, 48, 48)).astype(np.float32)  # large enough to split
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    xl = act_to(x, "NCHW", "NHWC")
    jobs = [
        lambda: lo.conv(x, w, padding=1),
        lambda: lo.conv(xl, kernel_to(w, "HWIO", "OIHW"), padding=1, layout="NHWC"),
        lambda: lo.max_pool(x, 3, stride=2, padding=1),
        lambda: lo.avg_pool(xl, 2, stride=2, layout="NHWC"),
    ]
    want = [job() for job in jobs]
    got = [[] for _ in jobs]
    errors = []

    def run(i):
        try:
            for _ in range(8):
                got[i].append(jobs[i]())
        except BaseException as error:  # reported below
            errors.append(error)

    users = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for user in users:
        user.start()
    for user in users:
        user.join(60)
    assert not errors and not any(user.is_alive() for user in users)
    for results, expected in zip(got, want, strict=True):
        assert len(results) == 8
        for result in results:
            np.testing.assert_array_equal(result, expected)
