"""The static memory plan on the model zoo's light models (shipped inside the
``onnx`` package): naive (every activation its own buffer), the lower bound
(the most bytes live at once) and the arena assign-buffers builds.

    python -m bench.memory                       # canonicalize,fuse then assign-buffers
    python -m bench.memory --pipeline="assign-buffers{inplace=false}" --models resnet50
    python -m bench.memory --pipeline="canonicalize,fuse,tile{size=256},place,assign-buffers"

Sizes in MiB (2^20 bytes); "arena/LB" is arena over lower bound, "saving" is
the arena against naive.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/memory.py` from anywhere

from compiler.frontend import import_onnx
from passes import PassContext
from passes.assign_buffers import plan_summary

__all__ = ["light_models", "main", "plan_model"]

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
DEFAULT_PIPELINE = "canonicalize,fuse,assign-buffers"
MIB = float(1 << 20)


def light_models() -> list[Path]:
    return sorted(LIGHT.glob("*.onnx"))


def plan_model(path: Path, pipeline: str, soc: str = "Ascend310P3") -> dict:
    from compiler.pipeline import run_pipeline
    from passes.target.soc import load_soc

    g = import_onnx(path)
    run_pipeline(g, pipeline, PassContext(soc=load_soc(soc)))
    return {"model": path.stem.removeprefix("light_"), "ops": g.count() - g.count("const"), **plan_summary(g)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline", default=DEFAULT_PIPELINE, help=f"passes to run (default {DEFAULT_PIPELINE!r})")
    ap.add_argument("--soc_version", default="Ascend310P3")
    ap.add_argument("--models", nargs="*", help="only these models (e.g. resnet50 vgg19)")
    args = ap.parse_args(argv)
    if "assign-buffers" not in args.pipeline:
        ap.error("the pipeline must end with assign-buffers")

    head = ("model", "ops", "weights", "naive", "lower bound", "arena", "arena/LB", "saving", "seconds")
    print(f"pipeline: {args.pipeline}\n")
    print("{:<14} {:>5} {:>10} {:>10} {:>12} {:>10} {:>9} {:>8} {:>8}".format(*head))
    worst = 0.0
    for path in light_models():
        if args.models and path.stem.removeprefix("light_") not in args.models:
            continue
        t = time.perf_counter()
        try:
            r = plan_model(path, args.pipeline, args.soc_version)
        except Exception as e:  # noqa: BLE001  (one broken model must not hide the others)
            print(f"{path.stem.removeprefix('light_'):<14} failed: {type(e).__name__}: {e}".splitlines()[0])
            continue
        worst = max(worst, r["arena_over_lower_bound"])
        print(
            f"{r['model']:<14} {r['ops']:>5} {r['weights_bytes'] / MIB:>8.2f}Mi {r['naive_bytes'] / MIB:>8.2f}Mi "
            f"{r['lower_bound_bytes'] / MIB:>10.2f}Mi {r['arena_bytes'] / MIB:>8.2f}Mi "
            f"{r['arena_over_lower_bound']:>9.4f} {r['saving_vs_naive_pct']:>7.1f}% {time.perf_counter() - t:>8.2f}"
        )
    print(f"\nworst arena/lower bound: {worst:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
