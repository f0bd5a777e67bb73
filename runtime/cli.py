"""`atcpy-run`: run an `.om` executable on input files, like msame.

    atcpy-run --model=out/mlp.om --input=x.npy --output=out/ --loop=10 --profile

Inputs (comma separated, in the model's input order) may be .npy, .npz (arrays
matched by input name, or taken in order) or .bin (raw bytes reshaped to the
input's dtype and static shape).  Outputs are written atomically as
``<output name>.npy`` (or ``.txt`` with ``--outfmt=TXT``), names made safe for
the file system.  Errors print one line ``atcpy-run: error: ...`` and exit
with the error's code: 2 usage, 3 not a decoder (generation), 4 bad .om, 5 bad input.

Generation (a decoder LLM compiled with ``--dim_range``, see `runtime.generator`)::

    atcpy-run --model=llama.om --prompt_ids=ids.npy --max_new_tokens=64 [--output=DIR]
              [--do_sample --temperature=0.8 --top_k=40 --top_p=0.95 --seed=0]
              [--eos_token_id=2] [--window]
    atcpy-run --model=llama.om --tokenizer=tokenizer.json --prompt="Once upon a time" --max_new_tokens=64

prints the tokens as they are produced (the text, with ``--tokenizer``), then
timing lines as llama.cpp does; ``--output`` gets ``output_ids.npy`` (and
``output.txt`` with a tokenizer).
"""

from __future__ import annotations

import argparse
import io
import os
import re
import stat
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from runtime.errors import InputError, OmFormatError, RuntimeFailure
from runtime.npyio import load_npy, load_npz, npz_keys
from runtime.om import np_dtype, write_atomic
from runtime.validate import host_limit

__all__ = ["check_not_onnx", "generate_main", "load_inputs", "main", "output_basenames", "package_version", "regular_file",
           "safe_filename"]


class _UsageError(Exception):
    exit_code = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, our exit code, no usage dump
        raise _UsageError(message)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: ...)`` for flags that have a default worth showing (not None or False)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def package_version() -> str:
    """atcpy's version: the installed distribution's, else the one pyproject.toml beside the source names."""
    from importlib import metadata

    try:
        return metadata.version("atcpy")
    except metadata.PackageNotFoundError:
        import tomllib

        try:
            with open(Path(__file__).resolve().parents[1] / "pyproject.toml", "rb") as f:
                return str(tomllib.load(f)["project"]["version"])
        except (OSError, KeyError, ValueError):
            return "unknown"


def regular_file(flag: str, path: str, error: type[Exception]) -> Path:
    """`path` if it names a regular file (or a link to one); else `error` naming the path and what it is."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise error(f"{flag}: no such file {path!r}") from None
    except OSError as e:
        raise error(f"{flag}: cannot open {path!r}: {e.strerror}") from None
    if stat.S_ISDIR(mode):
        raise error(f"{flag}: {path!r} is a directory, not a file")
    if not stat.S_ISREG(mode):
        raise error(f"{flag}: {path!r} is not a regular file (a device, FIFO or socket)")
    return Path(path)


_ONNX_TAGS = (0x12, 0x1A, 0x22, 0x2A, 0x32, 0x3A, 0x42)  # ModelProto fields 2-8, which follow ir_version


def check_not_onnx(path: str | os.PathLike) -> None:
    """An ONNX model given where an .om belongs: say so (exit 4) instead of reporting its bytes as bad magic."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return  # the loader reports it
    if head.startswith(b"ATCPYOM"):
        return
    looks_onnx = len(head) >= 3 and head[0] == 0x08 and head[2] in _ONNX_TAGS  # ir_version, then a field
    if path.suffix.lower() == ".onnx" or looks_onnx:
        raise OmFormatError(f"{path}: this is an ONNX model, not an .om executable; compile it first with "
                            f"atcpy --model={path} --soc_version=<SoC> --output=<name>")


def safe_filename(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.\-]", "_", name).strip(".")
    return s or "output"


def _load_one(path: Path, spec) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return load_npy(path, spec.shape, host_limit())
    try:
        if suffix == ".bin":
            if not all(isinstance(d, int) for d in spec.shape):
                raise InputError(f"{path}: a .bin input needs a static shape, {spec.name!r} has {spec.shape}")
            dt = np_dtype(spec.dtype)
            want = int(np.prod(spec.shape, dtype=np.int64)) * dt.itemsize
            size = path.stat().st_size  # before reading: a wrong file may be any size
            if size != want:
                raise InputError(f"{path}: {size} bytes, input {spec.name!r} "
                                 f"({'x'.join(map(str, spec.shape))} {spec.dtype}) needs {want}")
            return np.frombuffer(path.read_bytes(), dtype=dt).reshape(spec.shape).copy()
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read input: {e}") from None
    raise InputError(f"{path}: unsupported input format {suffix or '(none)'}; use .npy, .npz or .bin")


def load_inputs(paths: Sequence[str], specs) -> dict[str, np.ndarray]:
    feeds: dict[str, np.ndarray] = {}
    names = [s.name for s in specs]
    if len(paths) == 1 and paths[0].lower().endswith(".npz"):
        path = regular_file("--input", paths[0], InputError)
        keys = npz_keys(path)
        if set(names) <= set(keys):  # matched by name
            by_key = {s.name: s for s in specs}
        elif len(keys) == len(names):  # taken in order
            by_key = dict(zip(keys, specs))
        else:
            raise InputError(f"{path}: holds {sorted(keys)}, the model's inputs are {names}")
        arrays = load_npz(path, lambda k: by_key[k].shape, host_limit(), names=list(by_key))
        return {s.name: arrays[k] for k, s in by_key.items()}
    if len(paths) != len(specs):
        raise InputError(f"{len(paths)} input file(s) given, the model has {len(specs)} input(s): {', '.join(names)}")
    for p, spec in zip(paths, specs):
        feeds[spec.name] = _load_one(regular_file("--input", p, InputError), spec)
    return feeds


def output_basenames(names: Sequence[str]) -> list[str]:
    """A file name (no suffix) for each output: `safe_filename`, and distinct -- ``out/1`` and
    ``out:1`` would both be ``out_1``, so the later one becomes ``out_1-2``."""
    used: set[str] = set()
    bases = []
    for name in names:
        base = stem = safe_filename(name)
        k = 2
        while base.lower() in used:  # lower(): a case-insensitive file system is as likely as not
            base, k = f"{stem}-{k}", k + 1
        used.add(base.lower())
        bases.append(base)
    return bases


def _write_output(outdir: Path, base: str, arr: np.ndarray, fmt: str) -> Path:
    if fmt == "NPY":
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        path = outdir / f"{base}.npy"
        write_atomic(path, buf.getvalue())
    else:
        buf = io.StringIO()
        flat = arr.reshape(1, -1) if arr.ndim < 2 else arr.reshape(-1, arr.shape[-1])
        np.savetxt(buf, flat, fmt="%s" if arr.dtype.kind in "OUSb" else ("%.9g" if arr.dtype.kind == "f" else "%d"))
        path = outdir / f"{base}.txt"
        write_atomic(path, buf.getvalue().encode())
    return path


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="atcpy-run", description="Run an atcpy .om executable on input files.",
                formatter_class=_HelpFormatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    p.add_argument("--model", required=True, help="the .om file")
    p.add_argument("--input", default=None, help="comma-separated .npy/.npz/.bin files, in input order")
    p.add_argument("--output", default=None, help="directory for the outputs")
    p.add_argument("--outfmt", default="NPY", type=str.upper, choices=["NPY", "TXT"], help="output file format")
    p.add_argument("--loop", default=1, type=int, help="runs (the latency is their average)")
    p.add_argument("--profile", action="store_true", help="print per-step times, write profile.json (Chrome trace)")
    g = p.add_argument_group("generation (decoder LLMs)")
    g.add_argument("--prompt_ids", default=None, help="prompt token ids: a .npy of [prompt] or [batch, prompt] ints")
    g.add_argument("--prompt", default=None, help="prompt text (needs --tokenizer)")
    g.add_argument("--tokenizer", default=None, help="a tokenizer.json (the `tokenizers` package) for text in/out")
    g.add_argument("--max_new_tokens", default=32, type=int, help="tokens to generate")
    g.add_argument("--eos_token_id", default=None, type=int, help="stop at this token")
    g.add_argument("--do_sample", action="store_true", help="sample instead of greedy decoding")
    g.add_argument("--temperature", default=1.0, type=float, help="sampling temperature")
    g.add_argument("--top_k", default=0, type=int, help="sample among the k likeliest (0: all)")
    g.add_argument("--top_p", default=1.0, type=float, help="nucleus sampling threshold")
    g.add_argument("--seed", default=None, type=int, help="sampling seed")
    g.add_argument("--window", action="store_true", help="slide the KV cache over the compiled bound")
    return p


def _load_tokenizer(path: str):
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise _UsageError("--tokenizer needs the 'tokenizers' package: pip install tokenizers") from None
    if not Path(path).is_file():
        raise _UsageError(f"--tokenizer: no such file {path!r}")
    try:
        return Tokenizer.from_file(path)
    except Exception as e:  # noqa: BLE001 - the tokenizers package raises plain Exceptions
        raise InputError(f"{path}: not a tokenizer.json: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                         ) from None


def _prompt_ids(args, tok) -> np.ndarray:
    if args.prompt is not None:
        ids = tok.encode(args.prompt).ids
        if not ids:
            raise InputError("--prompt encodes to no tokens")
        return np.asarray([ids], np.int64)
    path = regular_file("--prompt_ids", args.prompt_ids, _UsageError)
    ids = load_npy(path, None, host_limit())
    if not isinstance(ids, np.ndarray) or ids.dtype.kind not in "iu" or ids.ndim not in (1, 2):
        raise InputError(f"{path}: prompt ids must be a 1-D or 2-D integer array, "
                         f"got {getattr(ids, 'dtype', '?')} with shape {list(getattr(ids, 'shape', []))}")
    return ids.reshape(1, -1) if ids.ndim == 1 else ids


def generate_main(args) -> int:
    """The generation mode of `main`: prompt -> tokens (and text), timings as llama.cpp prints them."""
    from runtime.generator import Generator

    _check_generation_args(args)
    tok = _load_tokenizer(args.tokenizer) if args.tokenizer else None
    check_not_onnx(regular_file("--model", args.model, _UsageError))
    ids = _prompt_ids(args, tok)
    gen = Generator(args.model)
    batch = ids.shape[0]
    stream = batch == 1
    seq = ids[0].tolist()
    shown = [tok.decode(seq) if tok else " ".join(map(str, seq))]

    def on_token(t: np.ndarray) -> None:  # batch 1: print as produced
        if len(seq) == ids.shape[1]:  # the prompt, once the checks passed and the first token is there
            sys.stdout.write(shown[0])
        seq.append(int(t[0]))
        if tok is None:
            sys.stdout.write(f" {seq[-1]}")
        else:  # decode the whole sequence and print what is new (as transformers' TextStreamer)
            text = tok.decode(seq)
            if text.endswith("\ufffd"):
                return  # an incomplete UTF-8 character: wait for its next byte
            k = 0
            while k < min(len(text), len(shown[0])) and text[k] == shown[0][k]:
                k += 1
            sys.stdout.write(text[k:])
            shown[0] = text
        sys.stdout.flush()

    t0 = time.perf_counter()
    out = gen.generate(ids, args.max_new_tokens, eos_token_id=args.eos_token_id, do_sample=args.do_sample,
                       temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                       streamer=on_token if stream else None, window=args.window)
    total_ms = (time.perf_counter() - t0) * 1e3
    if stream:
        print(shown[0] if len(seq) == ids.shape[1] else "")  # no new token: the prompt alone
    else:
        for row in out:
            print(tok.decode(row.tolist()) if tok else " ".join(map(str, row.tolist())))
    st = gen.stats
    print()
    print(_timing_line("prompt eval time", st.first_token_ms, st.prompt_tokens, "tokens"))
    print(_timing_line("eval time", st.decode_ms, len(st.step_ms), "runs"))
    print(f"{'total time':>16} = {total_ms:10.2f} ms / {st.prompt_tokens + st.new_tokens:5d} tokens")
    if args.output:
        outdir = Path(args.output)
        path = _write_output(outdir, "output_ids", out, "NPY")
        print(f"output ids: {'x'.join(map(str, out.shape))} int64 -> {path}")
        if tok is not None:
            buf = "".join(tok.decode(row.tolist()) + "\n" for row in out)
            write_atomic(outdir / "output.txt", buf.encode())
            print(f"output text -> {outdir / 'output.txt'}")
    return 0


def _check_generation_args(args) -> None:
    if args.input:
        raise _UsageError("--input and --prompt_ids/--prompt are different modes; give one")
    if args.loop != 1 or args.profile:
        raise _UsageError("--loop and --profile do not apply to generation")
    if args.prompt is not None and args.prompt_ids is not None:
        raise _UsageError("give --prompt_ids or --prompt, not both")
    if args.prompt is not None and not args.tokenizer:
        raise _UsageError("--prompt needs --tokenizer=tokenizer.json")
    if args.max_new_tokens < 0:
        raise _UsageError(f"--max_new_tokens={args.max_new_tokens} must be at least 0")


def _timing_line(what: str, ms: float, n: int, unit: str) -> str:
    per = ms / n if n else 0.0
    rate = 1e3 * n / ms if ms > 0 else 0.0
    return (f"{what:>16} = {ms:10.2f} ms / {n:5d} {unit:<6} ({per:8.2f} ms per token, "
            f"{rate:8.2f} tokens per second)")


def estimate_table(sess) -> str:
    """Measured time per step beside the compile-time cost-model estimate for the
    SoC the .om targets (the report's ``per_op_estimate``, in step order)."""
    est = (sess.executable.report or {}).get("per_op_estimate") or []
    agg: dict[int, list] = {}
    for t in sess.profile.steps:
        agg.setdefault(t.index, [t, 0.0])[1] += t.seconds
    runs = max(sess.profile.runs, 1)
    soc = (sess.executable.report or {}).get("soc_version", "?")
    if len(est) != len(sess.executable.program["steps"]):  # one per program step; steps folded or
        return f"(no per-op estimate for {soc} in this .om)"  # dropped at load are not measured
    lines = [f"{'step':>5} {'kernel':<24} {'engine':<7} {'measured ms':>12} {'est. ms (' + soc + ')':>22}"]
    for i, (t, secs) in sorted(agg.items()):
        lines.append(f"{i:>5} {t.kernel[:24]:<24} {t.engine:<7} {secs / runs * 1e3:>12.3f} {est[i]['ms']:>22.4f}")
    total_est = sum(est[i]["ms"] for i in agg)
    total = sum(s for _, s in agg.values()) / runs * 1e3
    lines.append(f"{'total':>5} {'':<24} {'':<7} {total:>12.3f} {total_est:>22.4f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.loop < 1:
            raise _UsageError(f"--loop={args.loop} must be at least 1")
        if args.prompt_ids is not None or args.prompt is not None:
            return generate_main(args)
        from runtime.session import Session

        check_not_onnx(regular_file("--model", args.model, _UsageError))
        sess = Session(args.model)
        specs = sess.get_inputs()
        paths = [s for s in (args.input or "").split(",") if s]
        feeds = load_inputs(paths, specs) if paths or specs else {}
        times = []
        outs: list[np.ndarray] = []
        for _ in range(args.loop):
            t0 = time.perf_counter()
            outs = sess.run(None, feeds, profile=args.profile)
            times.append(time.perf_counter() - t0)
        if args.output:
            outdir = Path(args.output)
            bases = output_basenames([o.name for o in sess.get_outputs()])
            for spec, base, arr in zip(sess.get_outputs(), bases, outs):
                path = _write_output(outdir, base, arr, args.outfmt)
                print(f"output {spec.name}: {'x'.join(map(str, arr.shape)) or 'scalar'} {arr.dtype} -> {path}")
        else:
            for spec, arr in zip(sess.get_outputs(), outs):
                print(f"output {spec.name}: {'x'.join(map(str, arr.shape)) or 'scalar'} {arr.dtype}")
        if args.profile and sess.profile is not None:
            print(sess.profile.table(top=20))
            print(estimate_table(sess))
            if args.output:
                trace = sess.profile.write_chrome_trace(Path(args.output) / "profile.json")
                print(f"profile trace: {trace}")
        print(f"average latency: {1e3 * sum(times) / len(times):.3f} ms over {len(times)} loop(s)")
        return 0
    except _UsageError as e:
        print(f"atcpy-run: error: usage error: {e}", file=sys.stderr)
        return 2
    except (OmFormatError, InputError, RuntimeFailure) as e:
        print(f"atcpy-run: error: {e.kind}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("atcpy-run: error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: still one line, no traceback unless asked
        print(f"atcpy-run: error: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        if os.environ.get("ATCPY_TRACEBACK"):
            raise
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
