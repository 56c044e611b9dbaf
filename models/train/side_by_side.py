"""``python -m models.train.side_by_side RECIPE... [--time-budget S] [train options]``.

Trains several recipes at once, one ``python -m models.train`` process each, so
that one GPU (or a many-core machine) serves them all in the same wall-clock
time: small networks leave a GPU mostly idle, and separate processes fill it.
Each run's output goes to ``runs/RECIPE/train.log``; the table at the end gives
every run's final validation PSNR, step count and the command that reproduces
it (from its ``summary.json``).

``--batch-pixels P`` gives each recipe ``P / crop²`` images per step (at least
its own batch), so recipes that train on small crops get as many pixels per
step as the others.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from models.train.__main__ import RUNS
from models.train.recipes import RECIPES

__all__ = ["main"]


def _batch(name: str, pixels: int | None) -> int | None:
    if pixels is None:
        return None
    recipe = RECIPES[name]
    return max(recipe.batch, pixels // recipe.crop**2)


def record_sharing(path: Path, launcher: str, runs: int) -> None:
    """Note in a run's summary that its hardware was shared (its time depends on it)."""
    if path.exists():
        summary = json.loads(path.read_text())
        summary["hardware"] = f"{summary['hardware']}, shared by {runs} runs side by side"
        summary["launcher"] = launcher
        path.write_text(json.dumps(summary, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.train.side_by_side", description=__doc__.splitlines()[0]
    )
    parser.add_argument("recipes", nargs="+", choices=sorted(RECIPES), metavar="RECIPE")
    parser.add_argument("--time-budget", type=float, metavar="SECONDS")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch-pixels", type=int, metavar="P")
    parser.add_argument("--runs", type=Path, default=RUNS)
    args = parser.parse_args(argv)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for name in args.recipes:
        cmd = [sys.executable, "-m", "models.train", name, "--device", args.device]
        cmd += ["--runs", str(args.runs)]
        if args.time_budget:
            cmd += ["--time-budget", str(args.time_budget)]
        if args.steps:
            cmd += ["--steps", str(args.steps)]
        batch = _batch(name, args.batch_pixels)
        if batch:
            cmd += ["--batch", str(batch)]
        (args.runs / name).mkdir(parents=True, exist_ok=True)
        log = (args.runs / name / "train.log").open("wb")
        # One BLAS thread per run: the runs already use every core between them.
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        print(" ".join(cmd), flush=True)
    began = time.perf_counter()
    codes = {name: proc.wait() for name, proc in procs.items()}
    print(f"all done in {time.perf_counter() - began:.0f} s")
    launcher = "python -m models.train.side_by_side " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    for name in codes:
        record_sharing(args.runs / name / "summary.json", launcher, len(codes))
    print("| recipe | exit | steps | val PSNR dB | seconds | command |")
    print("|---|---|---|---|---|---|")
    for name, code in codes.items():
        path = args.runs / name / "summary.json"
        summary = json.loads(path.read_text()) if code == 0 and path.exists() else {}
        print(
            f"| {name} | {code} | {summary.get('step', '-')} | {summary.get('val_psnr_db', '-')}"
            f" | {summary.get('train_seconds', '-')} | {summary.get('command', '-')} |"
        )
    return max(codes.values())


if __name__ == "__main__":
    sys.exit(main())
