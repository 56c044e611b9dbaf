"""``python -m models.train RECIPE [--steps N | --time-budget S] [--batch B] [--alpha A]``.

Trains a recipe of ``models/train/recipes.py`` into ``runs/RECIPE/`` (log.jsonl,
checkpoint.npz, weights.npz, summary.json), on CUDA when present. A recipe with
``teacher_steps`` first runs its TV teacher into ``runs/RECIPE/teacher/`` and
continues from those weights (as ``--init`` would), so one command reproduces the
whole chain. ``--time-budget`` covers both and picks the step count from the
speed of the warm-up; ``summary.json`` then records the ``--steps`` command that
reproduces the run. ``--export`` writes the ONNX graph
and model card into ``models/zoo`` (``models.export_learned``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from models.losses import HELDOUT_KERNELS, TRANSFORMS
from models.train import loop
from models.train.loop import train
from models.train.recipes import EI_LOSSES, PIXELWISE_FAMILIES, RECIPES, Recipe

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


#: The EI term's switches, each a Recipe field of the same name (underscored) that a
#: flag turns on (--ei-noise) or off (--no-ei-noise).
_EI_SWITCHES = ("ei-noise", "ei-detach")


def _command(args: argparse.Namespace, steps: int) -> str:
    """The command that reproduces this run (a time budget becomes its step count)."""
    words = ["python -m models.train", args.recipe, "--device", args.device]
    if args.batch:
        words += ["--batch", str(args.batch)]
    if args.crop is not None:
        words += ["--crop", str(args.crop)]
    if args.alpha is not None:
        words += ["--alpha", str(args.alpha)]
    if args.r2r_alpha is not None:
        words += ["--r2r-alpha", str(args.r2r_alpha)]
    if args.transform is not None:
        words += ["--transform", args.transform]
    if args.loss is not None:
        words += ["--loss", args.loss]
    if args.lr is not None:
        words += ["--lr", str(args.lr)]
    if args.moi is not None:
        words += ["--moi", str(args.moi)]
    if args.heldout is not None:
        words += ["--heldout", str(args.heldout)]
    if args.tv_weight is not None:
        words += ["--tv-weight", str(args.tv_weight)]
    if args.dc_step is not None:
        words += ["--dc-step", str(args.dc_step)]
    for flag in _EI_SWITCHES:
        value = getattr(args, flag.replace("-", "_"))
        if value is not None:
            words += [f"--{flag}" if value else f"--no-{flag}"]
    if args.resume:
        words += ["--resume"]
    if args.init is not None:
        words += ["--init", str(args.init)]
    if args.steps or args.time_budget:
        words += ["--steps", str(steps)]
    if args.teacher_steps is not None:
        words += ["--teacher-steps", str(args.teacher_steps)]
    if args.teacher_batches is not None:
        words += ["--teacher-batches", str(args.teacher_batches)]
    if args.precision is not None:
        words += ["--precision", args.precision]
    if args.compile is not None:
        words += ["--compile" if args.compile else "--no-compile"]
    if args.seed:
        words += ["--seed", str(args.seed)]
    return " ".join(words)


def _teach(recipe: Recipe, out: Path, args: argparse.Namespace) -> Path:
    """Run ``recipe``'s TV teacher into ``out/teacher``; returns the weights that start the
    recipe's own loss (its summary tells the chain how many steps the teacher took)."""
    teacher = recipe.teacher()
    run = out / "teacher"
    began = time.perf_counter()
    summary = train(
        teacher, run, args.device, recipe.teacher_steps, False, args.seed, workers=args.workers
    )
    summary |= {
        "train_seconds": round(time.perf_counter() - began, 1),
        "batch": teacher.batch,
        "loss_kind": teacher.loss,
    }
    (run / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return run / "weights.npz"


def _require_ei(parser: argparse.ArgumentParser, recipe: Recipe, flag: str) -> None:
    """Refuse ``flag`` (a usage error) unless ``recipe`` trains by an EI loss."""
    if recipe.loss not in EI_LOSSES:
        parser.error(f"{flag} applies to EI recipes; {recipe.name} trains by {recipe.loss}")


def _chain(summary: dict[str, Any], previous: dict[str, Any]) -> None:
    """Make the record of a run started by ``--init`` from a recorded run cover the chain:
    both commands, the time and steps of both (a TV teacher's steps are counted apart, in
    ``teacher_steps``), and both machines and precisions where they differ."""
    summary["command"] = f"{previous['command']} && {summary['command']}"
    summary["train_seconds"] = round(
        previous.get("train_seconds", 0.0) + summary["train_seconds"], 1
    )
    if previous.get("loss_kind") != "tv-teacher":
        earlier = previous.get("chain_steps", previous.get("step", 0))
        summary["chain_steps"] = earlier + summary["step"]
    for key, joint in (("hardware", "; then "), ("precision", ", then ")):
        if previous.get(key) and previous[key] != summary[key]:
            summary[key] = f"{previous[key]}{joint}{summary[key]}"


def _previous_summary(out: Path) -> dict[str, Any]:
    path = out / "summary.json"
    return json.loads(path.read_text()) if path.exists() else {}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m models.train", description=__doc__.splitlines()[0]
    )
    parser.add_argument("recipe", choices=sorted(RECIPES))
    parser.add_argument("--steps", type=int, help="override the recipe's step count")
    parser.add_argument(
        "--time-budget",
        type=float,
        metavar="SECONDS",
        help="instead of --steps: as many steps as fit in SECONDS",
    )
    parser.add_argument(
        "--batch", type=int, help="override the recipe's batch size (not its TV teacher's)"
    )
    parser.add_argument(
        "--alpha", type=float, help="override the recipe's EI weight (ei/rei losses)"
    )
    parser.add_argument(
        "--r2r-alpha",
        type=float,
        metavar="A",
        help="override R2R's recorruption strength (r2r loss): the network sees y + A w and "
        "answers for y - w/A, w ~ N(0, sigma^2)",
    )
    parser.add_argument(
        "--transform", choices=TRANSFORMS, help="override the recipe's EI group (ei/rei losses)"
    )
    parser.add_argument(
        "--loss",
        choices=[*EI_LOSSES, "tv-teacher"],
        help="override an EI recipe's loss: ei = MC + alpha EI, rei = SURE + alpha EI, "
        "r2r = recorrupted-to-recorrupted + alpha EI (unbiased like SURE, one network pass "
        "fewer), "
        "tv-teacher = reproduce the service's TV reconstruction of each measurement at the "
        "recipe's teacher batch and learning rate (a warm start for an EI run given its "
        "weights by --init; no ground truth)",
    )
    parser.add_argument(
        "--lr",
        type=float,
        help="override the recipe's peak learning rate (a --resume continues the cosine "
        "schedule of --steps from its step, at this scale)",
    )
    parser.add_argument(
        "--moi",
        type=float,
        metavar="WEIGHT",
        help="override the weight of the multi-operator term (EI recipes that vary a mask "
        "seed; 0 turns it off)",
    )
    parser.add_argument(
        "--heldout",
        type=float,
        metavar="WEIGHT",
        help="weight of the held-out measurement term (EI recipes of masked families: MRI, "
        "inpainting): a fifth of each measurement is held out and predicted from the rest; "
        "0: off",
    )
    parser.add_argument(
        "--tv-weight",
        type=float,
        metavar="WEIGHT",
        help="override the starting weight of the network's final learned TV step (0: none; "
        "with --resume, a checkpoint without one starts it at WEIGHT)",
    )
    parser.add_argument(
        "--dc-step",
        type=float,
        metavar="ALPHA",
        help="end the network with data consistency (x + alpha A^+(y - A x): for CT a "
        "filtered-back-projection correction, alpha learned from ALPHA) and a second TV "
        "step; needs a TV step (--tv-weight); 0: none",
    )
    parser.add_argument(
        "--ei-noise",
        action=argparse.BooleanOptionalAction,
        help="override whether the EI term re-measures T x̂ with the data's noise (EI recipes)",
    )
    parser.add_argument(
        "--ei-detach",
        action=argparse.BooleanOptionalAction,
        help="override whether the EI term's target T x̂ is detached: no gradient through "
        "it, so the term only teaches the network to reconstruct it (EI recipes; mri-ei "
        "detaches it)",
    )
    parser.add_argument(
        "--crop",
        type=int,
        metavar="PX",
        help="override the size of the training crops (recipes that train on crops: "
        "inpainting, denoising; the others train at the served size)",
    )
    parser.add_argument(
        "--teacher-steps",
        type=int,
        metavar="N",
        help="override the steps of the recipe's TV teacher, run first when the run starts "
        "from scratch (0: start at the pseudo-inverse); ignored with --resume or --init",
    )
    parser.add_argument(
        "--teacher-batches",
        type=int,
        metavar="N",
        help="override how many batches of TV targets the teacher computes once and revisits "
        "(CT's TV costs ~0.1 s an image, computed in torch); "
        "ignored with --resume or --init, and by a resumed teacher, which reads its cached targets",
    )
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        help="override the recipe's training precision: bf16 runs the blocks' convolutions "
        "in bfloat16 (fast on CPUs with AMX or AVX512-BF16 and on CUDA; a bf16 recipe "
        "trains in fp32 where it would be emulated, unless this asks for bf16); the "
        "exported model is float32 either way",
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        help="override whether the loss runs the network through torch.compile (the same "
        "function, faster steps after ~1.5 min of compiling; the recipe says which do)",
    )
    parser.add_argument("--workers", type=int, help="data workers (default: 2 on CUDA, 0 on CPU)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--runs", type=Path, default=RUNS)
    parser.add_argument("--resume", action="store_true", help="continue from checkpoint.npz")
    parser.add_argument(
        "--init",
        type=Path,
        metavar="WEIGHTS",
        help="start a new run (fresh schedule and optimiser) from another run's weights.npz, "
        "e.g. a --loss tv-teacher run's",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--export", action="store_true", help="export to models/zoo when done")
    args = parser.parse_args(argv)
    if args.steps and args.time_budget:
        parser.error("--steps and --time-budget exclude each other")
    if args.init is not None and args.resume:
        parser.error("--init starts a new run from other weights; --resume continues this one")
    if args.init is not None and not args.init.is_file():
        parser.error(f"--init: no such weights file: {args.init}")
    recipe = RECIPES[args.recipe]
    if args.loss is not None:
        _require_ei(parser, recipe, "--loss")
        # The teacher takes the recipe's teacher batch and learning rate (the flags below
        # still override them).
        recipe = (
            recipe.teacher()
            if args.loss == "tv-teacher"
            else dataclasses.replace(recipe, loss=args.loss)
        )
    if args.batch:
        recipe = dataclasses.replace(recipe, batch=args.batch)
    if args.crop is not None:
        if recipe.family not in PIXELWISE_FAMILIES:
            parser.error(f"--crop applies to pixel-wise operators; {recipe.name} trains at the "
                         "served size")
        if not 16 <= args.crop <= 256:
            parser.error("--crop must be between 16 and 256 pixels")
        recipe = dataclasses.replace(recipe, crop=args.crop)
    if args.alpha is not None:
        recipe = dataclasses.replace(recipe, alpha=args.alpha)
    if args.r2r_alpha is not None:
        if args.r2r_alpha <= 0 or recipe.loss != "r2r":
            parser.error("--r2r-alpha is a positive strength for the r2r loss")
        recipe = dataclasses.replace(recipe, r2r_alpha=args.r2r_alpha)
    if args.lr is not None:
        if args.lr <= 0:
            parser.error("--lr must be positive")
        recipe = dataclasses.replace(recipe, lr=args.lr)
    if args.transform is not None:
        recipe = dataclasses.replace(recipe, transform=args.transform)
    if args.moi is not None:
        if args.moi < 0:
            parser.error("--moi is a weight: >= 0")
        _require_ei(parser, recipe, "--moi")
        if not recipe.vary:
            parser.error(
                f"--moi needs a recipe that varies its operator; {recipe.name} trains on "
                "one fixed operator, so there is no other mask to measure with"
            )
        recipe = dataclasses.replace(recipe, moi=args.moi)
    if args.heldout is not None:
        if args.heldout < 0:
            parser.error("--heldout is a weight: >= 0")
        _require_ei(parser, recipe, "--heldout")
        if args.heldout and recipe.operator["type"] not in HELDOUT_KERNELS:
            parser.error(
                f"--heldout needs a masked family {HELDOUT_KERNELS}; {recipe.name}'s "
                "measurements have nothing that can be held out"
            )
        recipe = dataclasses.replace(recipe, heldout=args.heldout)
    if args.tv_weight is not None:
        if args.tv_weight < 0:
            parser.error("--tv-weight is a weight: >= 0")
        recipe = dataclasses.replace(recipe, tv_weight=args.tv_weight)
    if args.dc_step is not None:
        if args.dc_step < 0 or (args.dc_step and not recipe.tv_weight):
            parser.error("--dc-step is a step >= 0 and needs a TV step (--tv-weight)")
        recipe = dataclasses.replace(recipe, dc_step=args.dc_step)
    for flag in _EI_SWITCHES:
        name = flag.replace("-", "_")
        value = getattr(args, name)
        if value is not None:
            _require_ei(parser, recipe, f"--{flag}" if value else f"--no-{flag}")
            recipe = dataclasses.replace(recipe, **{name: value})
    if args.precision is None:
        device = loop.select_device(args.device)
        if loop.fast_precision(recipe.precision, device) != recipe.precision:
            # The recipe's bfloat16 is for speed; where it would be emulated, float32 is
            # faster and the command recorded on the card (--precision fp32) says so.
            wanted = " (AMX, AVX512-BF16)" if device.type == "cpu" else ""
            print(f"{recipe.name}: no native bfloat16 on this {device.type}{wanted}: "
                  "training in float32; --precision bf16 insists", file=sys.stderr)
            args.precision = "fp32"
    if args.precision is not None:
        recipe = dataclasses.replace(recipe, precision=args.precision)
    if args.compile is not None:
        recipe = dataclasses.replace(recipe, compile=args.compile)
    if args.teacher_steps is not None:
        if args.teacher_steps < 0:
            parser.error("--teacher-steps must be >= 0")
        _require_ei(parser, recipe, "--teacher-steps")
        recipe = dataclasses.replace(recipe, teacher_steps=args.teacher_steps)
    if args.teacher_batches is not None:
        if args.teacher_batches < 1:
            parser.error("--teacher-batches must be >= 1")
        if recipe.loss not in (*EI_LOSSES, "tv-teacher"):
            parser.error("--teacher-batches applies to EI recipes and their TV teacher")
        recipe = dataclasses.replace(recipe, teacher_batches=args.teacher_batches)
    out = args.runs / recipe.name
    began = time.perf_counter()
    init, budget = args.init, args.time_budget
    if recipe.teacher_steps and recipe.loss != "tv-teacher" and not args.resume and init is None:
        init = _teach(recipe, out, args)
        if budget is not None:
            budget -= time.perf_counter() - began
            if budget <= 0:
                raise SystemExit(
                    f"the TV teacher took the whole --time-budget ({args.time_budget:g} s); "
                    "give more time or fewer --teacher-steps"
                )
    # A chain of runs (--resume, --init) remembers how many steps the TV teacher took.
    previous: dict[str, Any] = {}
    if args.resume:
        previous = _previous_summary(out)
    elif init is not None:
        previous = _previous_summary(init.parent)
    teacher_steps = previous.get("teacher_steps", 0)
    if previous.get("loss_kind") == "tv-teacher":
        teacher_steps = previous["step"]
    summary = train(
        recipe,
        out,
        args.device,
        args.steps,
        args.resume,
        args.seed,
        time_budget=budget,
        workers=args.workers,
        init=init,
    )
    # With a teacher run by this command, its time is part of the run's.
    summary["train_seconds"] = round(time.perf_counter() - began, 1)
    summary["batch"] = recipe.batch
    summary["crop"] = recipe.crop
    summary["alpha"] = recipe.alpha
    summary["transform"] = recipe.transform
    summary["moi"] = recipe.moi
    summary["heldout"] = recipe.heldout
    summary["tv_weight"] = recipe.tv_weight
    summary["dc_step"] = recipe.dc_step
    summary["ei_noise"] = recipe.ei_noise
    summary["ei_detach"] = recipe.ei_detach
    summary["loss_kind"] = recipe.loss
    summary["precision"] = recipe.precision
    summary["compile"] = recipe.compile
    if teacher_steps:
        summary["teacher_steps"] = teacher_steps
    summary["hardware"] = _hardware(summary["device"])
    summary["command"] = _command(args, summary["step"])
    if args.init is not None and "command" in previous:
        _chain(summary, previous)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    if args.export:
        from models.export_learned import export_learned

        export_learned(recipe, out)


if __name__ == "__main__":
    main()
