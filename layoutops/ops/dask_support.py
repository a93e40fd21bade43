"""Scale-out: the windowed ops on `dask.array` inputs (the optional ``dask`` extra).

`accepts_dask` decorates a public NumPy op (``conv``, ``depthwise_conv2d``,
``conv_transpose``, ``max_pool``, ``avg_pool``, ``lp_pool`` and their ``1d``/``2d``/``3d``
names). When ``x`` is a ``dask.array.Array`` the call returns a lazy ``dask.array.Array``
instead of computing; otherwise the op runs unchanged. dask is never imported here: an input
can only be a dask array if the user imported dask, so `is_dask` looks it up in
``sys.modules``.

How a dask call works (see ``docs/scale-out.md``):

1. Validation at call time, exactly as the NumPy path: the NumPy op itself runs on a stand-in
   of ``x`` with a batch of 0 (zero bytes), so every argument error is raised with the same
   type and message; the global geometry (padding strings resolved on the *global* shape,
   ceil-mode sizes, transposed crops) comes from the same normalizers the NumPy ops use.
2. The channel axis is rechunked to one chunk (channels are never split); batch chunks map
   one to one.
3. Along each spatial axis, every output position is assigned to the input chunk holding
   the centre of its window (for a transposed conv: of its contributing inputs), so output
   chunks follow input chunks (a stride-1 ``"same"`` conv keeps the input's chunks, a 2x2
   pool halves them). The input is never rechunked along spatial axes: chunk sizes need not
   be multiples of the stride, because each output block gathers exactly the input span its
   windows read (`Geometry.input_span`), from as many neighbouring chunks as needed (halos
   may be wider than a chunk). Only the needed slices of the neighbours travel.
4. Each output block is one task calling the NumPy op on that span with explicit
   ``(begin, end)`` padding: interior blocks get 0, border blocks the part of the global
   padding they touch, so zero padding and the pooling divisors (``count_include_pad``,
   ceil-mode overhang) are those of the global op. ``reflect``/``replicate``/``circular``
   halos are gathered from the source indices of the global input (PyTorch meanings; dask's
   own ``boundary="reflect"`` is NumPy's ``symmetric``) and the block runs unpadded. A
   transposed-conv block takes the input range that contributes to it and the crops /
   ``output_padding`` that cut exactly its outputs from that range's full output.
   Max-pool indices are translated from block to global flat positions.

Nothing is computed at call time.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import operator
import sys
from dataclasses import dataclass

import numpy as np

from ..kernels.plan import local_workspace_limit, workspace_limit
from ..kernels.window import source_indices
from ..layouts import Layout, activation_layout, kernel_layout
from ._params import conv_geometry, normalize_tuple

__all__ = ["KINDS", "accepts_dask", "dask_call", "is_dask"]

#: the op families `accepts_dask` knows
KINDS = ("conv", "depthwise", "conv_transpose", "max_pool", "avg_pool", "lp_pool")
_POOLS = ("max_pool", "avg_pool", "lp_pool")


def is_dask(x) -> bool:
    """True if ``x`` is a ``dask.array.Array`` (never imports dask).

    Examples
    --------
    >>> import numpy as np
    >>> from layoutops.ops.dask_support import is_dask
    >>> is_dask(np.zeros(3))
    False
    """
    module = sys.modules.get("dask.array")
    return module is not None and isinstance(x, module.Array)


def accepts_dask(kind: str):
    """Decorator: let the public op ``fn(x, ...)`` of family ``kind`` take a dask array ``x``.

    Parameters
    ----------
    kind : {'conv', 'depthwise', 'conv_transpose', 'max_pool', 'avg_pool', 'lp_pool'}

    Returns
    -------
    callable
        A decorator; the wrapped function behaves exactly as before on anything that is not a
        dask array, and returns a lazy dask array (see `dask_call`) on a dask array.

    Examples
    --------
    >>> import numpy as np
    >>> from layoutops.ops.dask_support import accepts_dask
    >>> @accepts_dask("max_pool")
    ... def my_pool(x, kernel_size, *, stride=None, padding=0, dilation=1,
    ...             ceil_mode=False, return_indices=False, layout=None):
    ...     return x
    >>> my_pool(np.ones(2), 2).tolist()
    [1.0, 1.0]
    """
    if kind not in KINDS:
        raise ValueError(f"accepts_dask: `kind` must be one of {KINDS}, got {kind!r}")

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(x, *args, **kwargs):
            if is_dask(x):
                return dask_call(kind, wrapper, x, *args, **kwargs)
            return fn(x, *args, **kwargs)

        wrapper.dask_kind = kind
        return wrapper

    return decorate


# --------------------------------------------------------------------------------------
# per-axis plans
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _AxisBlock:
    """One output block along one spatial axis."""

    out_start: int
    out_stop: int
    src: np.ndarray | None  # global input indices the block reads (None: no in-bounds input)
    pad: tuple[int, int]  # padding passed to the NumPy op for this block
    output_padding: int = 0  # transposed conv only


def _group_by(owner: np.ndarray) -> list[tuple[int, int]]:
    """Runs ``[start, stop)`` of equal consecutive values of a non-decreasing array."""
    cuts = np.flatnonzero(np.diff(owner)) + 1
    edges = [0, *cuts.tolist(), len(owner)]
    return list(itertools.pairwise(edges))


def _chunk_of(pos: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """The chunk holding each (clipped) input position; ``bounds`` are the chunk edges."""
    pos = np.clip(pos, 0, bounds[-1] - 1)
    return np.searchsorted(bounds, pos, side="right") - 1


def _forward_blocks(axis, geometry, bounds, mode: str, pool: bool) -> list[_AxisBlock]:
    """Output blocks of a windowed op (conv, pool) along spatial axis ``axis``."""
    n = geometry.in_sizes[axis]
    s = geometry.strides[axis]
    pad_lo, pad_hi = geometry.pads[axis]
    extent = geometry.extents[axis]
    m = geometry.out_sizes[axis]
    centres = np.arange(m) * s - pad_lo + (extent - 1) // 2
    blocks = []
    for o0, o1 in _group_by(_chunk_of(centres, bounds)):
        lo, hi = geometry.input_span(axis, o0, o1)
        if mode != "zeros":
            blocks.append(_AxisBlock(o0, o1, source_indices(lo, hi, n, mode), (0, 0)))
            continue
        a, b = max(lo, 0), min(hi, n)
        if a >= b:  # every window of the block lies in the padding (conv with pad >= extent)
            blocks.append(_AxisBlock(o0, o1, None, (0, 0)))
            continue
        end = max(hi - n, 0)
        if pool:  # a ceil-mode window may overhang the end padding: that is not padding
            end = min(end, pad_hi)
        blocks.append(_AxisBlock(o0, o1, np.arange(a, b), (a - lo, end)))
    return blocks


def _transpose_blocks(axis, geometry, bounds) -> list[_AxisBlock]:
    """Output blocks of a transposed conv along spatial axis ``axis``.

    ``geometry.pads`` are the crops of the full output (``end < 0`` appends positions).
    Output ``p`` is full position ``q = p + crop_begin``, fed by inputs ``i`` with
    ``i * s + t * d = q``. A block takes the inputs ``[i_lo, i_hi)`` that reach it and crops
    / extends (``output_padding``) their full output to exactly its positions.
    """
    n = geometry.in_sizes[axis]
    s = geometry.strides[axis]
    extent = geometry.extents[axis]
    crop = geometry.pads[axis][0]
    m = geometry.out_sizes[axis]
    q = np.arange(m) + crop
    centres = (q - (extent - 1) // 2) // s
    blocks = []
    for p0, p1 in _group_by(_chunk_of(centres, bounds)):
        q0, q1 = p0 + crop, p1 + crop
        i_lo = min(max((q0 - extent + 1) // s, 0), n - 1)
        i_hi = min(max((q1 - 1) // s + 1, i_lo + 1), n)
        full = (i_hi - 1 - i_lo) * s + extent
        begin = q0 - i_lo * s
        need = q1 - i_lo * s
        extra = max(need - full, 0)
        blocks.append(
            _AxisBlock(p0, p1, np.arange(i_lo, i_hi), (begin, full + extra - need), extra)
        )
    return blocks


def _halo_copy(chunk: np.ndarray, index: tuple) -> np.ndarray:
    """A copy of part of a chunk: a view would keep the whole neighbouring chunk alive."""
    return chunk[index].copy()


def _gather_plan(src: np.ndarray, bounds: np.ndarray):
    """Which chunks a block reads along one axis: ``[(chunk, start, stop)]`` in chunk order
    (local slices), and the index into their concatenation (None when it is the identity)."""
    owner = np.searchsorted(bounds, src, side="right") - 1
    pieces, offset = [], 0
    remap = np.empty_like(src)
    for chunk in np.unique(owner).tolist():
        sel = owner == chunk
        local = src[sel] - bounds[chunk]
        start, stop = int(local.min()), int(local.max()) + 1
        pieces.append((chunk, start, stop))
        remap[sel] = local - start + offset
        offset += stop - start
    identity = offset == len(src) and np.array_equal(remap, np.arange(len(src)))
    return pieces, (None if identity else remap)


# --------------------------------------------------------------------------------------
# the task run per output block
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _BlockCall:
    """Assemble one input block from its pieces, run the NumPy op on it, check the shape."""

    fn: object
    kwargs: dict
    const_names: tuple[str, ...]  # leading task arguments passed by name (weight, bias)
    counts: tuple[int, ...]  # pieces per spatial axis (C order over the spatial axes)
    axes: tuple[int, ...]  # the input's spatial axes
    takes: tuple  # per spatial axis: index into the concatenated pieces, or None
    out_shape: tuple[int, ...]  # expected block shape (batch size filled in at run time)
    out_batch_axis: int
    in_batch_axis: int
    empty: bool = False  # some axis has no in-bounds input: the output is bias only
    out_channel_axis: int = 1
    dtype: object = None
    indices: tuple | None = None  # max-pool indices: (block offsets, block sizes, global sizes)
    workspace: int | None = None  # a `workspace_limit` in force when the op was called

    def __call__(self, *args):
        if self.workspace is None:
            return self._run(args)
        with workspace_limit(self.workspace):
            return self._run(args)

    def _run(self, args):
        consts = dict(zip(self.const_names, args[: len(self.const_names)], strict=True))
        pieces = list(args[len(self.const_names) :])
        shape = list(self.out_shape)
        if self.empty:
            shape[self.out_batch_axis] = pieces[0].shape[self.in_batch_axis]
            out = np.zeros(shape, dtype=self.dtype)
            bias = consts.get("bias")
            if bias is not None:
                view = [1] * len(shape)
                view[self.out_channel_axis] = -1
                out += np.asarray(bias).reshape(view).astype(self.dtype)
            return out
        block = self._assemble(pieces)
        result = self.fn(block, **consts, **self.kwargs)
        shape[self.out_batch_axis] = block.shape[self.in_batch_axis]
        first = result[0] if isinstance(result, tuple) else result
        if first.shape != tuple(shape):
            raise RuntimeError(
                f"layoutops dask block: expected shape {tuple(shape)}, got {first.shape} "
                "(please report this bug)"
            )
        if self.indices is not None:
            offsets, local, whole = self.indices
            coords = np.unravel_index(result[1], local)
            glob = tuple(c + o for c, o in zip(coords, offsets, strict=True))
            result = (result[0], np.ravel_multi_index(glob, whole).astype(result[1].dtype))
        return result

    def _assemble(self, pieces):
        arrays = pieces
        for count, axis in zip(reversed(self.counts), reversed(self.axes), strict=True):
            if count > 1:
                arrays = [
                    np.concatenate(arrays[i : i + count], axis=axis)
                    for i in range(0, len(arrays), count)
                ]
        block = arrays[0]
        for axis, take in zip(self.axes, self.takes, strict=True):
            if take is not None:
                block = np.take(block, take, axis=axis)
        return block


# --------------------------------------------------------------------------------------
# the dask entry point
# --------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """Everything the graph needs, decided at call time."""

    fn: object
    name: str
    x: object  # the dask input, channel axis in one chunk
    x_layout: Layout
    out_layout: Layout
    c_out: int
    out_dtypes: list
    geometry: object
    axes: list  # per spatial axis: the list of `_AxisBlock`
    block_args: dict  # the op's arguments for every block (padding etc. set per block)
    consts: dict  # weight / bias: stored once in the graph, passed by name
    transposed: bool
    return_indices: bool


def _arguments(fn, x, args, kwargs) -> dict:
    """The op's arguments by name (defaults applied, ``x`` left out, ``**kwargs`` flattened)."""
    signature = inspect.signature(fn)
    bound = signature.bind(x, *args, **kwargs)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    del arguments[next(iter(arguments))]
    for param in signature.parameters.values():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            arguments.update(arguments.pop(param.name, {}))
    return arguments


def _plan(kind: str, fn, x, args, kwargs) -> _Plan:
    """Validate like the NumPy path, then decide chunks, blocks and per-block arguments."""
    name = getattr(fn, "__name__", kind)
    arguments = _arguments(fn, x, args, kwargs)
    if any(np.isnan(c) for chunks in x.chunks for c in chunks):
        raise ValueError(
            f"`{name}`: a dask input needs known chunk sizes (call `x.compute_chunk_sizes()`)"
        )

    # the op itself on a zero-byte stand-in of x: same errors, same messages, output dtype
    try:
        x_layout = activation_layout(x.ndim, arguments.get("layout"))
    except ValueError:
        fn(np.empty((0,) * x.ndim, dtype=x.dtype), *args, **kwargs)
        raise
    stand_in = list(x.shape)
    stand_in[x_layout.batch_axis] = 0
    meta = fn(np.empty(stand_in, dtype=x.dtype), *args, **kwargs)
    metas = meta if isinstance(meta, tuple) else (meta,)

    # the global geometry, from the normalizers the NumPy ops use
    spatial = x_layout.spatial
    in_sizes = tuple(x.shape[a] for a in x_layout.spatial_axes)
    block_args = dict(arguments, layout=x_layout.spec)  # never the context default
    consts = {}
    out_layout = x_layout
    if kind in ("conv", "depthwise", "conv_transpose"):
        weight = np.asarray(block_args.pop("weight"))
        w_layout = kernel_layout(
            x_layout, arguments.get("kernel_layout"), op=kind, ndim=weight.ndim
        )
        if arguments.get("out_layout") is not None:
            out_layout = activation_layout(x.ndim, arguments["out_layout"])
        block_args.update(kernel_layout=w_layout.spec, out_layout=out_layout.spec)
        dims = w_layout.shape_of(weight.shape)
        kernel_sizes = tuple(dims[c] for c in spatial)
        consts["weight"] = weight
        bias = block_args.pop("bias", None)
        if bias is not None:
            consts["bias"] = np.asarray(bias)
        c_out = metas[0].shape[out_layout.channel_axis]
    else:
        kernel_sizes = normalize_tuple(arguments["kernel_size"], len(spatial), "kernel_size", name)
        c_out = x.shape[x_layout.channel_axis]
    if kind == "conv_transpose":
        from .conv_transpose import transposed_crops

        geometry = transposed_crops(
            name,
            in_sizes,
            kernel_sizes,
            stride=arguments.get("stride", 1),
            padding=arguments.get("padding", 0),
            output_padding=arguments.get("output_padding", 0),
            dilation=arguments.get("dilation", 1),
            output_shape=arguments.get("output_shape"),
            spatial=spatial,
        )
    else:
        pool = kind in _POOLS
        stride = arguments.get("stride", None if pool else 1)
        geometry = conv_geometry(
            name,
            in_sizes,
            kernel_sizes,
            stride=kernel_sizes if stride is None else stride,
            padding=arguments.get("padding", 0),
            dilation=arguments.get("dilation", 1),
            spatial=spatial,
            ceil_mode=bool(arguments.get("ceil_mode", False)) and pool,
            pool=pool,
        )
        block_args["stride"] = geometry.strides
    expected = dict(zip(spatial, geometry.out_sizes, strict=True), C=c_out)
    for letter, size in zip(out_layout.spec, metas[0].shape, strict=True):
        if letter != "N" and expected[letter] != size:
            raise RuntimeError(
                f"`{name}`: the dask plan's output size {expected[letter]} along {letter!r} "
                f"differs from the op's {size} (please report this bug)"
            )

    # chunks: channels whole, batch as given, spatial axes planned block by block
    if len(x.chunks[x_layout.channel_axis]) > 1:
        x = x.rechunk({x_layout.channel_axis: -1})
    mode = arguments.get("padding_mode", "zeros").lower()
    if mode != "zeros":
        block_args["padding_mode"] = "zeros"  # the blocks get their halos explicitly
    axes = []
    for i, axis in enumerate(x_layout.spatial_axes):
        bounds = np.concatenate([[0], np.cumsum(x.chunks[axis])]).astype(np.int64)
        if kind == "conv_transpose":
            axes.append(_transpose_blocks(i, geometry, bounds))
        else:
            axes.append(_forward_blocks(i, geometry, bounds, mode, kind in _POOLS))
    return _Plan(
        fn=fn,
        name=name,
        x=x,
        x_layout=x_layout,
        out_layout=out_layout,
        c_out=c_out,
        out_dtypes=[m.dtype for m in metas],
        geometry=geometry,
        axes=axes,
        block_args=block_args,
        consts=consts,
        transposed=kind == "conv_transpose",
        return_indices=kind == "max_pool" and bool(arguments.get("return_indices")),
    )


def _graph(plan: _Plan):
    """The task graph: one task per output block, fed by (copied) slices of input chunks."""
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    x, x_layout = plan.x, plan.x_layout
    ndim, spatial = x.ndim, x_layout.spatial
    token = tokenize(
        x.name,
        getattr(plan.fn, "__module__", ""),
        getattr(plan.fn, "__qualname__", plan.name),
        repr(sorted((k, repr(v)) for k, v in plan.block_args.items())),
        *plan.consts.values(),
    )
    base = f"{plan.name}-dask-{token}"
    main = f"{base}-pair" if plan.return_indices else base
    layer: dict = {}
    const_keys = []
    for cname, value in plan.consts.items():
        layer[f"{base}-{cname}"] = value
        const_keys.append(f"{base}-{cname}")

    out_pos = {letter: i for i, letter in enumerate(plan.out_layout.spec)}
    out_chunks = [()] * ndim
    out_chunks[out_pos["N"]] = x.chunks[x_layout.batch_axis]
    out_chunks[out_pos["C"]] = (plan.c_out,)
    for letter, blocks in zip(spatial, plan.axes, strict=True):
        out_chunks[out_pos[letter]] = tuple(b.out_stop - b.out_start for b in blocks)

    halos = itertools.count()
    gathers = {}  # (axis, block number) -> _gather_plan
    for numbered in itertools.product(*(list(enumerate(blocks)) for blocks in plan.axes)):
        blocks = [blk for _, blk in numbered]
        reads = None
        if all(b.src is not None for b in blocks):
            reads = []
            for axis, (number, blk) in enumerate(numbered):
                if (axis, number) not in gathers:
                    bounds = np.concatenate([[0], np.cumsum(x.chunks[x_layout.spatial_axes[axis]])])
                    gathers[axis, number] = _gather_plan(blk.src, bounds.astype(np.int64))
                reads.append(gathers[axis, number])
        call = _block_call(plan, blocks, reads, out_pos)
        for b_chunk in range(len(x.chunks[x_layout.batch_axis])):
            pieces = []
            if reads is None:  # no input is read: an empty slice keeps the batch size
                combos, whole = [()], False
            else:
                combos, whole = itertools.product(*(r[0] for r in reads)), True
            for combo in combos:
                index = [0] * ndim
                index[x_layout.batch_axis] = b_chunk
                sl = [slice(None)] * ndim
                partial = not whole
                for axis in x_layout.spatial_axes:
                    sl[axis] = slice(0, 0)
                for axis, (chunk, start, stop) in zip(x_layout.spatial_axes, combo, strict=False):
                    index[axis] = chunk
                    sl[axis] = slice(start, stop)
                    partial |= (start, stop) != (0, x.chunks[axis][chunk])
                key = (x.name, *index)
                if partial:
                    piece = (f"{base}-halo", next(halos))
                    layer[piece] = (_halo_copy, key, tuple(sl))
                    key = piece
                pieces.append(key)
            out_index = [0] * ndim
            out_index[out_pos["N"]] = b_chunk
            for letter, (number, _) in zip(spatial, numbered, strict=True):
                out_index[out_pos[letter]] = number
            layer[(main, *out_index)] = (call, *const_keys, *pieces)
            if plan.return_indices:
                layer[(base, *out_index)] = (operator.getitem, (main, *out_index), 0)
                layer[(f"{base}-indices", *out_index)] = (operator.getitem, (main, *out_index), 1)

    metas = [np.empty((0,) * ndim, dtype=d) for d in plan.out_dtypes]
    names = [base, f"{base}-indices"] if plan.return_indices else [base]
    outs = tuple(
        da.Array(
            HighLevelGraph.from_collections(name, layer, dependencies=[x]),
            name,
            tuple(out_chunks),
            meta=meta,
        )
        for name, meta in zip(names, metas, strict=True)
    )
    return outs if plan.return_indices else outs[0]


def _block_call(plan: _Plan, blocks, reads, out_pos) -> _BlockCall:
    """The callable of one output block (the same for every batch chunk)."""
    kwargs = dict(plan.block_args, padding=tuple(b.pad for b in blocks))
    if plan.transposed:
        kwargs.update(output_padding=tuple(b.output_padding for b in blocks), output_shape=None)
    shape = [0] * plan.x.ndim
    shape[out_pos["C"]] = plan.c_out
    for letter, blk in zip(plan.x_layout.spatial, blocks, strict=True):
        shape[out_pos[letter]] = blk.out_stop - blk.out_start
    indices = None
    if plan.return_indices:
        offsets = tuple(int(b.src[0]) for b in blocks)
        indices = (offsets, tuple(len(b.src) for b in blocks), plan.geometry.in_sizes)
    return _BlockCall(
        fn=plan.fn,
        kwargs=kwargs,
        const_names=tuple(plan.consts),
        counts=tuple(len(r[0]) for r in reads) if reads else (),
        axes=plan.x_layout.spatial_axes if reads else (),
        takes=tuple(r[1] for r in reads) if reads else (),
        out_shape=tuple(shape),
        out_batch_axis=out_pos["N"],
        in_batch_axis=plan.x_layout.batch_axis,
        empty=reads is None,
        out_channel_axis=out_pos["C"],
        dtype=plan.out_dtypes[0],
        indices=indices,
        workspace=local_workspace_limit(),
    )


def dask_call(kind: str, fn, x, *args, **kwargs):
    """Run the NumPy op ``fn`` (family ``kind``) lazily over the dask array ``x``.

    Arguments are validated now, exactly as ``fn`` validates them; the result is a
    ``dask.array.Array`` (a tuple of two for ``max_pool(..., return_indices=True)``) whose
    blocks equal the corresponding parts of ``fn`` applied to the whole computed input.
    `accepts_dask` calls this; call it directly to run an undecorated op on dask input.

    Parameters
    ----------
    kind : {'conv', 'depthwise', 'conv_transpose', 'max_pool', 'avg_pool', 'lp_pool'}
    fn : callable
        The public NumPy op (its signature names the arguments, as in the SPEC).
    x : dask.array.Array
        Input with known chunk sizes, in the op's ``layout``.
    *args, **kwargs
        The op's other arguments (``weight`` and ``bias`` stay NumPy).

    Returns
    -------
    dask.array.Array or tuple of dask.array.Array

    Raises
    ------
    ValueError, TypeError, LayoutError
        As the NumPy op, at call time; ``ValueError`` also for unknown chunk sizes.

    Examples
    --------
    >>> import numpy as np
    >>> import dask.array as da
    >>> import layoutops as lo
    >>> from layoutops.ops.dask_support import dask_call
    >>> x = da.ones((1, 1, 10, 10), chunks=(1, 1, 4, 4))
    >>> y = dask_call("avg_pool", lo.avg_pool, x, 3, stride=2, padding=1)
    >>> y.shape, y.chunks[2]
    ((1, 1, 5, 5), (2, 2, 1))
    >>> y.compute()[0, 0, 0].tolist() == lo.avg_pool(np.ones((1, 1, 10, 10)), 3, stride=2,
    ...                                               padding=1)[0, 0, 0].tolist()
    True
    """
    if kind not in KINDS:
        raise ValueError(f"dask_call: `kind` must be one of {KINDS}, got {kind!r}")
    return _graph(_plan(kind, fn, x, args, kwargs))
