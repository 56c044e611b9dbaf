"""``python -m models.train RECIPE [--steps N] [--resume] [--export]``.

Trains a recipe of ``models/train/recipes.py`` into ``runs/RECIPE/`` (log.jsonl,
checkpoint.npz, weights.npz), on CUDA when present. ``--export`` then writes
the ONNX graph and model card into ``models/zoo`` (``models.export_learned``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from models.train.loop import train
from models.train.recipes import RECIPES

RUNS = Path(__file__).resolve().parents[2] / "runs"


def _hardware(device: str) -> str:
    """CPU model and core count (and the GPU name on CUDA), for the model card."""
    import os

    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores (CPU)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m models.train", description=__doc__.splitlines()[0]
    )
    parser.add_argument("recipe", choices=sorted(RECIPES))
    parser.add_argument("--steps", type=int, help="override the recipe's step count")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--runs", type=Path, default=RUNS)
    parser.add_argument("--resume", action="store_true", help="continue from checkpoint.npz")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--export", action="store_true", help="export to models/zoo when done")
    args = parser.parse_args(argv)
    recipe = RECIPES[args.recipe]
    out = args.runs / recipe.name
    began = time.perf_counter()
    summary = train(recipe, out, args.device, args.steps, args.resume, args.seed)
    summary["train_seconds"] = round(time.perf_counter() - began, 1)
    summary["hardware"] = _hardware(summary["device"])
    summary["command"] = "python -m models.train " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    if args.export:
        from models.export_learned import export_learned

        export_learned(recipe, out)


if __name__ == "__main__":
    main()
