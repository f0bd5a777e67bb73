"""The modern CNN set of `bench/latency.py --set modern`: torchvision architectures exported to ONNX.

    # once, in a bench-only environment (torchvision's PyPI wheels do not import beside the
    # CPU torch the tests use -- see bench/requirements-modern.txt):
    python -m venv /tmp/tvenv
    /tmp/tvenv/bin/pip install -r bench/requirements-modern.txt
    /tmp/tvenv/bin/python bench/modern_models.py --out /tmp/atcpy-modern

Each model is built by torchvision with random weights (``weights=None``, a fixed
seed); its BatchNorm statistics are then re-estimated on random images (train
mode, cumulative averages, no gradient) so that activations have realistic
ranges instead of the init's zeros and ones; it is exported with
``torch.onnx.export`` (TorchScript exporter, opset 17, batch 1, 224x224; the
segmentation model's output is its ``out`` map).  Nothing is downloaded.  The
files are ``<out>/<name>.onnx``; an existing file is kept (``--force`` rebuilds).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

MODELS = ("resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2_x0_5",
          "regnet_y_400mf", "squeezenet1_1", "densenet121", "convnext_tiny", "swin_t",
          "deeplabv3_mobilenet_v3_large")
BN_BATCHES = 8  # random-image batches for the BatchNorm statistics
BN_BATCH = 4
SIZE = 224
OPSET = 17


def _build(name: str):
    import torch
    import torchvision

    torch.manual_seed(0)
    if name.startswith("deeplabv3"):
        model = torchvision.models.segmentation.__dict__[name](weights=None, weights_backbone=None, aux_loss=False)
    else:
        model = torchvision.models.__dict__[name](weights=None)
    return model


def _reestimate_bn(model) -> None:
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    model.train()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(BN_BATCHES if bns else 0):
            model(torch.randn(BN_BATCH, 3, SIZE, SIZE, generator=g))
    model.eval()


class _OutOnly:
    """torchvision's segmentation models return a dict; export its ``out`` tensor."""

    def __new__(cls, model):
        import torch

        class Wrap(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, x):
                return self.m(x)["out"]

        return Wrap(model)


def export(name: str, out: Path, force: bool = False) -> Path:
    import torch

    path = out / f"{name}.onnx"
    if path.exists() and not force:
        return path
    model = _build(name)
    _reestimate_bn(model)
    if name.startswith("deeplabv3"):
        model = _OutOnly(model).eval()
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    tmp = path.with_suffix(".onnx.tmp")
    torch.onnx.export(model, (x,), str(tmp), input_names=["input"], output_names=["output"], opset_version=OPSET,
                      dynamo=False)
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/atcpy-modern"))
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated torchvision names")
    ap.add_argument("--force", action="store_true", help="rebuild files that exist")
    args = ap.parse_args(argv)
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except Exception as e:  # noqa: BLE001 - the import error of a CUDA/CPU mismatch is an OSError or RuntimeError
        print(f"needs torch and torchvision (a bench-only environment, see the docstring): {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for name in [m for m in args.models.split(",") if m]:
        t0 = time.perf_counter()
        path = export(name, args.out, args.force)
        print(f"{name}: {path} ({path.stat().st_size / 2**20:.1f} MiB, {time.perf_counter() - t0:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
