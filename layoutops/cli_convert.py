"""``layoutops convert IN OUT --from SRC --to DST``: convert the arrays of an .npz/.npy file.

Three modes, chosen by ``SRC`` / ``DST``:

- framework names (``torch``, ``tf``, ``jax``, ``flax``, ``onnx``, ``tflite``): a weight file
  (e.g. a PyTorch ``state_dict`` saved with ``np.savez``). Kernels are chosen BY NAME: the
  globs of ``--kernels`` (default ``*weight`` and ``*kernel``) minus ``--exclude``, and of
  those only rank 3 to 5 (a 1-D ``bn.weight`` is not a kernel; a rank-3 ``pos_embed`` is not
  named like one). Each is converted with `convert_weight` as a ``conv`` weight, or a
  ``conv_transpose`` / ``depthwise`` one when it matches ``--transposed`` / ``--depthwise``;
  ``--groups GLOB=G`` gives groups (the channel count ``C`` for depthwise kernels).
  ``--dense`` also transposes 2-D weights so named when the two frameworks store dense weights
  differently (``(out, in)`` vs ``(in, out)``).
- kernel layout strings (``--from OIHW --to HWIO``): the same name-selected kernels, converted
  with `convert_kernel` (``--transposed`` and ``--groups`` apply; every selected kernel must
  have the layout's rank). ``--dense`` transposes 2-D weights when ``O`` and ``I`` swap order.
- activation layout strings (``--from NCHW --to NHWC``, or ``channels_first`` /
  ``channels_last``): every array of the layout's rank (rank 3 to 5 for the aliases), or those
  matching ``--kernels`` if given, minus ``--exclude``.

A ``.npy`` file is treated as an archive holding one array named after the file (its stem),
and the output must have the same suffix as the input. Everything else is copied unchanged,
and listed. The output is written to a temporary file in the target directory and renamed
over ``OUT``, so it is never half-written; on any error ``OUT`` is untouched.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import tempfile
import zipfile

import numpy as np

from .errors import LayoutError
from .layouts import FRAMEWORKS, Layout, convert, convert_kernel, convert_weight
from .layouts.layout import ACTIVATION, _resolve_alias

__all__ = ["add_arguments", "run", "DEFAULT_KERNEL_GLOBS"]

DEFAULT_KERNEL_GLOBS = ("*weight", "*kernel")
KERNEL_RANKS = (3, 4, 5)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``convert`` arguments to ``parser`` and set ``run`` as its handler."""
    parser.description = (
        "Convert the arrays of an .npz/.npy file between layouts (--from NCHW --to NHWC, "
        "--from OIHW --to HWIO) or between frameworks' weight conventions (--from torch "
        f"--to tf; frameworks: {', '.join(FRAMEWORKS)}). Kernels are chosen by name, "
        "never by rank alone."
    )
    parser.add_argument("input", metavar="IN", help="input .npz or .npy file")
    parser.add_argument("output", metavar="OUT", help="output file (same suffix as IN)")
    parser.add_argument("--from", dest="src", required=True, metavar="SRC",
                        help="source layout or framework")
    parser.add_argument("--to", dest="dst", required=True, metavar="DST",
                        help="destination layout or framework")
    parser.add_argument("--kernels", action="append", metavar="GLOB",
                        help="names of the kernels (repeatable; default: '*weight', '*kernel' "
                             "of rank 3-5)")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                        help="names to leave alone (repeatable)")
    parser.add_argument("--transposed", action="append", default=[], metavar="GLOB",
                        help="kernels of transposed convolutions (repeatable)")
    parser.add_argument("--depthwise", action="append", default=[], metavar="GLOB",
                        help="kernels of depthwise convolutions (repeatable; frameworks only)")
    parser.add_argument("--groups", action="append", default=[], metavar="GLOB=G",
                        help="groups of the matching kernels; for depthwise kernels the "
                             "channel count C (repeatable)")
    parser.add_argument("--dense", action="store_true",
                        help="also transpose 2-D dense weights named like kernels")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``layoutops convert``; user errors raise `layoutops.cli.CliError`."""
    from .cli import CliError

    arrays, kind = _load(args.input, CliError)
    out_suffix = os.path.splitext(args.output)[1].lower()
    if out_suffix != kind:
        raise CliError(
            f"OUT {args.output!r} must end in {kind} like IN, got {out_suffix or 'no suffix'!r}"
        )
    mode, src, dst = _mode(args.src, args.dst, CliError)
    names = list(arrays)
    kernel_globs = list(args.kernels) if args.kernels else list(DEFAULT_KERNEL_GLOBS)
    for flag, globs in (("--kernels", args.kernels or []), ("--exclude", args.exclude)):
        for pattern in globs:
            if not _matching(names, [pattern]):
                raise CliError(f"{flag} {pattern!r} matches no array (arrays: {_listing(names)})")
    excluded = set(_matching(names, args.exclude))
    group_rules = _parse_groups(args.groups, CliError)

    converted: list[tuple[str, tuple, tuple, str]] = []
    left: list[tuple[str, tuple, str]] = []
    result: dict[str, np.ndarray] = {}

    if mode == "activation":
        if args.transposed or args.depthwise or args.groups or args.dense:
            raise CliError(
                "--transposed, --depthwise, --groups and --dense apply to kernels; "
                f"{args.src!r} -> {args.dst!r} are activation layouts"
            )
        explicit = kind == ".npy" or bool(args.kernels)
        chosen = set(_matching(names, args.kernels)) if args.kernels else set(names)
        for name, a in arrays.items():
            want = _resolve_rank(src, a.ndim)
            if name in excluded:
                left.append((name, a.shape, "excluded"))
            elif name not in chosen:
                left.append((name, a.shape, "not matched by --kernels"))
            elif want is None and explicit:
                raise CliError(f"{name} {a.shape}: rank {a.ndim} does not fit layout {src}")
            elif want is None:
                left.append((name, a.shape, f"rank {a.ndim} does not fit {src}"))
            else:
                s, d = want, _resolve_alias(dst, a.ndim)
                out = _apply(CliError, name, a, lambda a=a, s=s, d=d: convert(a, s, d))
                result[name] = out
                converted.append((name, a.shape, out.shape, f"{s.spec} -> {d.spec}"))
                continue
            result[name] = a
    else:
        named = set(_matching(names, kernel_globs)) - excluded
        kernels = [n for n in names if n in named and arrays[n].ndim in KERNEL_RANKS]
        dense = [n for n in names if n in named and arrays[n].ndim == 2]
        for flag, globs in (("--transposed", args.transposed), ("--depthwise", args.depthwise),
                            ("--groups", [g for g, _ in group_rules])):
            for pattern in globs:
                if not _matching(kernels, [pattern]):
                    raise CliError(
                        f"{flag} {pattern!r} matches no kernel (kernels: {_listing(kernels)})"
                    )
        if mode == "kernel" and args.depthwise:
            raise CliError(
                "--depthwise applies to framework names; with kernel layouts name the "
                "depthwise layout itself (e.g. --from OIHW --to HWCM --groups '*=C')"
            )
        transposed = set(_matching(kernels, args.transposed))
        depthwise = set(_matching(kernels, args.depthwise))
        both = sorted(transposed & depthwise)
        if both:
            raise CliError(f"{both[0]!r} matches both --transposed and --depthwise")
        for name, a in arrays.items():
            if name in kernels:
                groups = _groups_for(name, group_rules, CliError)
                if mode == "framework":
                    op = ("conv_transpose" if name in transposed
                          else "depthwise" if name in depthwise else "conv")
                    out = _apply(CliError, name, a, lambda a=a, op=op, g=groups: convert_weight(
                        a, op, src, dst, groups=g))
                    rule = f"{op} {src} -> {dst}"
                    if op == "conv_transpose" and (
                        FRAMEWORKS[src].transpose_flipped != FRAMEWORKS[dst].transpose_flipped
                    ):
                        rule += ", spatially flipped"
                else:
                    if a.ndim != src.ndim:
                        raise CliError(
                            f"{name} {a.shape}: rank {a.ndim} does not fit layout {src.spec!r} "
                            "(exclude it with --exclude)"
                        )
                    tr = name in transposed
                    out = _apply(CliError, name, a, lambda a=a, g=groups, tr=tr: convert_kernel(
                        a, src, dst, groups=g, transposed=tr))
                    rule = f"{src.spec} -> {dst.spec}" + (" (transposed)" if tr else "")
                if groups is not None:
                    rule += f", groups={groups}"
                result[name] = out
                converted.append((name, a.shape, out.shape, rule))
                continue
            if name in dense:
                swap = _dense_swap(mode, src, dst)
                if args.dense and swap:
                    result[name] = a.T
                    converted.append((name, a.shape, a.T.shape, f"dense {swap}"))
                    continue
                reason = ("2-D: dense weight (add --dense to transpose)" if not args.dense
                          else "2-D: dense layout is the same")
                left.append((name, a.shape, reason))
            elif name in excluded:
                left.append((name, a.shape, "excluded"))
            elif name in named:
                left.append((name, a.shape, f"rank {a.ndim}: not a kernel"))
            else:
                left.append((name, a.shape, "not named like a kernel"))
            result[name] = a

    _write(args.output, kind, result, CliError)
    _report(converted, left, args.output)
    return 0


# -- helpers --------------------------------------------------------------------------------------


def _load(path: str, CliError) -> tuple[dict[str, np.ndarray], str]:
    suffix = os.path.splitext(path)[1].lower()
    if not os.path.exists(path):
        raise CliError(f"IN {path!r}: no such file")
    if os.path.isdir(path):
        raise CliError(f"IN {path!r} is a directory, not an .npz/.npy file")
    if suffix not in (".npz", ".npy"):
        raise CliError(f"IN {path!r} is not an .npz or .npy file")
    try:
        if suffix == ".npy":
            a = np.load(path, allow_pickle=False)
            if not isinstance(a, np.ndarray):
                raise ValueError("not a single array")
            return {os.path.splitext(os.path.basename(path))[0]: a}, suffix
        with np.load(path, allow_pickle=False) as f:
            if not hasattr(f, "files"):
                raise ValueError("not an .npz archive")
            return {name: f[name] for name in f.files}, suffix
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise CliError(f"IN {path!r} is not a readable {suffix} array file ({e})") from None


def _mode(src: str, dst: str, CliError):
    parsed = []
    for flag, spec in (("--from", src), ("--to", dst)):
        if spec in FRAMEWORKS:
            parsed.append(("framework", spec))
        elif spec.lower() in ("channels_first", "channels_last"):
            parsed.append(("activation", spec.lower()))
        else:
            try:
                lay = Layout(spec)
            except (LayoutError, TypeError) as e:
                raise CliError(
                    f"{flag} {spec!r} is neither a framework ({', '.join(FRAMEWORKS)}) nor a "
                    f"valid layout: {e}"
                ) from None
            parsed.append(("activation" if lay.kind == ACTIVATION else "kernel", lay))
    (kind_a, a), (kind_b, b) = parsed
    if kind_a != kind_b:
        raise CliError(
            f"--from {src!r} is {_kind_name(kind_a)} but --to {dst!r} is {_kind_name(kind_b)}; "
            "give two frameworks or two layouts of the same kind"
        )
    if kind_a == "framework":
        return "framework", a, b
    if isinstance(a, Layout) and isinstance(b, Layout) and sorted(a.spatial) != sorted(b.spatial):
        raise CliError(f"layouts {a.spec!r} and {b.spec!r} have different spatial letters")
    if kind_a == "activation":
        for x, y in ((a, b), (b, a)):
            if isinstance(x, Layout) and isinstance(y, str) and x.n_spatial not in (1, 2, 3):
                raise CliError(f"{y!r} covers 1 to 3 spatial axes; {x.spec!r} has {x.n_spatial}")
    return kind_a, a, b


def _kind_name(kind: str) -> str:
    return {"framework": "a framework", "activation": "an activation layout",
            "kernel": "a kernel layout"}[kind]


def _resolve_rank(spec, ndim: int):
    """The layout for a rank-``ndim`` array, or None if it does not fit."""
    if isinstance(spec, str):  # an alias
        return _resolve_alias(spec, ndim) if ndim in KERNEL_RANKS else None
    return spec if spec.ndim == ndim else None


def _matching(names, patterns) -> list[str]:
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in (patterns or ()))]


def _listing(names, limit: int = 8) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _parse_groups(rules, CliError) -> list[tuple[str, int]]:
    parsed = []
    for rule in rules:
        pattern, sep, value = rule.rpartition("=")
        if not sep or not pattern:
            raise CliError(f"--groups {rule!r} must be GLOB=G, e.g. 'conv2.weight=2'")
        try:
            g = int(value)
        except ValueError:
            g = 0
        if g < 1:
            raise CliError(f"--groups {rule!r}: G must be an int >= 1, got {value!r}")
        parsed.append((pattern, g))
    return parsed


def _groups_for(name: str, rules, CliError) -> int | None:
    values = {g for pattern, g in rules if fnmatch.fnmatchcase(name, pattern)}
    if len(values) > 1:
        raise CliError(f"{name}: --groups rules give different values {sorted(values)}")
    return values.pop() if values else None


def _dense_swap(mode: str, src, dst) -> str | None:
    if mode == "framework":
        a, b = FRAMEWORKS[src].dense, FRAMEWORKS[dst].dense
    else:
        a = "OI" if src.spec.index("O") < src.spec.index("I") else "IO"
        b = "OI" if dst.spec.index("O") < dst.spec.index("I") else "IO"
    return f"{a} -> {b}" if a != b else None


def _apply(CliError, name: str, a: np.ndarray, fn) -> np.ndarray:
    try:
        return np.ascontiguousarray(fn())
    except (LayoutError, ValueError, TypeError) as e:
        hint = " (use --groups GLOB=G)" if "groups=" in str(e) else ""
        raise CliError(f"{name} {a.shape}: {e}{hint}") from None


def _write(path: str, kind: str, arrays: dict[str, np.ndarray], CliError) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CliError(f"OUT {path!r}: directory {directory!r} does not exist")
    if os.path.isdir(path):
        raise CliError(f"OUT {path!r} is a directory")
    try:
        fd, tmp = tempfile.mkstemp(
            dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp"
        )
    except OSError as e:
        raise CliError(f"OUT {path!r}: cannot write in {directory!r} ({e.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            if kind == ".npy":
                (a,) = arrays.values()
                np.lib.format.write_array(f, np.asanyarray(a), allow_pickle=False)
            else:  # as np.savez, but any array name works (np.savez reserves 'file')
                with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED) as zf:
                    for name, a in arrays.items():
                        with zf.open(name + ".npy", mode="w", force_zip64=True) as member:
                            np.lib.format.write_array(member, np.asanyarray(a),
                                                      allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode(path))
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise CliError(f"OUT {path!r}: {e.strerror or e}") from None
        raise


def _file_mode(path: str) -> int:
    """The mode OUT keeps (if it exists) or a new file gets under the current umask."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _report(converted, left, output: str) -> None:
    rows = [("name", "shape before", "shape after", "rule")]
    rows += [(n, _shape(b), _shape(a), r) for n, b, a, r in converted]
    if converted:
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[3])
    else:
        print("nothing converted")
    if left:
        print(f"left alone ({len(left)}):")
        width = max(len(n) for n, _, _ in left)
        swidth = max(len(_shape(s)) for _, s, _ in left)
        for name, shape, why in left:
            print(f"  {name.ljust(width)}  {_shape(shape).ljust(swidth)}  {why}")
    print(f"wrote {output}: {len(converted)} converted, {len(left)} left alone")


def _shape(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"
