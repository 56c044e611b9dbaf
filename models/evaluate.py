"""Validate the served models of a family and write the results into their cards.

For each validation image of the family's data (``models.data``, split
"val"), simulate the card operator with the recipe's noise, reconstruct it
with ``pinv``, ``tv`` and every learned model of the family exactly as the
service does (``service.worker.run_batch`` over the exported zoo), and record
PSNR, SSIM, the test-time equivariance score and, for the masked families (MRI,
inpainting), the held-out measurement error: the one ground-truth-free number here
that ranks the models as PSNR does (:mod:`models.losses.heldout`). Writes ``metrics`` into each
learned card, a figure ``figures/FAMILY.png`` (ground truth, pinv, TV, the
learned models, and their error maps) and refreshes the manifest.

    python -m models.evaluate FAMILY [--count 16]
    python -m models.evaluate FAMILY --objective [--count 8]

``--objective`` prints, for each learned model of the family, the training
objective of its EI recipe on validation measurements (measurement consistency
+ α EI over the recipe's group, no ground truth) beside its PSNR: it tells a
model that EI training could reach from one whose objective is simply lower.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import TypeAdapter
from skimage.metrics import structural_similarity

from models.export import ZOO, write_manifest
from models.losses import HELDOUT_KERNELS, TRANSFORMS, heldout_error, split
from models.physics.operators import Physics
from models.train.loop import operator_spec, physics_for, validation_sigma
from models.train.recipes import RECIPES, SIZE
from service import equivariance as eq
from service.engine import Engine, ReconOptions
from service.operators.compile import compile_operator
from service.operators.spec import Operator
from service.worker import Task, run_batch
from service.zoo import Zoo

__all__ = ["ei_objective", "evaluate_family", "heldout"]


def _psnr(x: np.ndarray, ref: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(float(np.mean((x - ref) ** 2)), 1e-12)))


def heldout(engine: Engine, model: str, op: Any, y: np.ndarray, sigma: float, seed: int) -> float:
    """``model``'s held-out measurement error on one measurement ``y`` of ``op`` (graph
    layout), no ground truth: a fifth of what ``y`` measured is held out by a split drawn
    from ``seed``, ``model`` reconstructs from the rest through the worker, and its
    prediction of the held-out part is scored (:mod:`models.losses.heldout`)."""
    import torch

    physics = Physics(op)
    kept, held = split(physics, np.random.default_rng(seed))
    task = Task(model, kept.compiled, y, ReconOptions(sigma=sigma), None, ())
    x = torch.from_numpy(run_batch(engine, [task])[0].image)[None]
    return float(heldout_error(x, torch.from_numpy(y)[None], physics, held, sigma))


def evaluate_family(family: str, count: int = 16, zoo_dir: Path = ZOO) -> dict[str, Any]:
    from models.data.sources import make_source

    recipes = [r for r in RECIPES.values() if r.family == family]
    if not recipes:
        raise SystemExit(f"no recipe for family {family!r}")
    zoo = Zoo.load(zoo_dir)
    learned = [r.name for r in recipes if r.name in zoo.cards]
    # D4-averaged exports of these (models.export_learned --average) are validated beside them.
    learned += sorted(n for n, c in zoo.cards.items() if c.raw.get("averaged_from") in learned)
    models = ["pinv", "tv", *learned]
    engine = Engine(zoo, "auto")
    recipe = recipes[0]
    spec = TypeAdapter(Operator).validate_python(operator_spec(recipe, SIZE, 0))
    op = compile_operator(spec)
    sigma = validation_sigma(recipe)
    group = eq.default_group(op.family, op.image_shape)
    transforms = tuple(eq.select(group, op.image_shape, None))
    source = make_source(recipe.data, SIZE, "val")
    rows: dict[str, dict[str, list[float]]] = {
        m: {"psnr": [], "ssim": [], "score": [], "heldout": []} for m in models
    }
    examples: dict[str, np.ndarray] = {}
    for i in range(min(count, len(source))):
        truth = np.asarray(source[i], np.float32)
        params = {k: v[None] for k, v in op.params.items()}
        y = engine.forward(op.kernel, truth[None], params)[0]
        y = y + sigma * np.random.default_rng(i).standard_normal(y.shape).astype(np.float32)
        for model in models:
            task = Task(model, op, y, ReconOptions(sigma=sigma), group, transforms)
            outcome = run_batch(engine, [task])[0]
            x = outcome.image
            rows[model]["psnr"].append(_psnr(x, truth))
            rows[model]["ssim"].append(float(structural_similarity(x, truth, data_range=1.0)))
            assert outcome.equivariance is not None
            rows[model]["score"].append(outcome.equivariance.score)
            if op.kernel in HELDOUT_KERNELS:
                rows[model]["heldout"].append(heldout(engine, model, op, y, sigma, i))
            if i == 0:
                examples[model] = x
        if i == 0:
            examples["ground truth"] = truth
    metrics = {
        "validation": f"{recipe.data} val split, first {count} images, {SIZE}x{SIZE}",
        "operator": operator_spec(recipe, SIZE, 0),
        "noise_sigma": sigma,
        "equivariance_group": group,
        "command": f"python -m models.evaluate {family} --count {count}",
        "models": {
            m: {
                "psnr_db": round(float(np.mean(v["psnr"])), 2),
                "ssim": round(float(np.mean(v["ssim"])), 4),
                "score_db": round(-10 * float(np.log10(max(float(np.mean(v["score"])), 1e-12))), 2),
                **({"heldout": float(f"{np.mean(v['heldout']):.4g}")} if v["heldout"] else {}),
            }
            for m, v in rows.items()
        },
    }
    figure = f"figures/{family}.png"
    _figure(examples, ["ground truth", *models], zoo_dir / figure)
    for name in learned:
        path = zoo_dir / "cards" / f"{name}.json"
        card = json.loads(path.read_text())
        card["metrics"] = metrics
        card["figure"] = figure
        path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    write_manifest(zoo_dir)
    return metrics


def ei_objective(
    family: str,
    count: int = 8,
    draws: int = 16,
    zoo_dir: Path = ZOO,
    transform: str | None = None,
) -> dict[str, dict[str, float]]:
    """The training objective of the family's EI recipe, term by term, for each learned
    model of the zoo and for the service's TV (automatic λ), through the service's
    worker, on ``count`` validation measurements: PSNR, MC, SURE, EI (the recipe's group
    unless ``transform`` names another), MOI (the multi-operator term over ``draws``
    fresh masks, for families that vary one; NaN otherwise), the recipe's own sum, and
    beside them the held-out measurement error (:func:`heldout`; masked families, NaN
    otherwise), which no recipe trains on. ``"truth"`` is the ground truth's own MC (the
    noise floor)."""
    import torch

    from models.data.sources import make_source
    from models.losses import mc_loss, random_transform, sure_loss

    recipe = RECIPES.get(f"{family}-ei")
    if recipe is None or recipe.transform is None:
        raise SystemExit(f"no EI recipe for family {family!r}")
    group = transform or recipe.transform
    zoo = Zoo.load(zoo_dir)
    # TV too: the solver the EI networks are measured against, scored as one more f.
    models = [r.name for r in RECIPES.values() if r.family == family and r.name in zoo.cards]
    models.append("tv")
    engine = Engine(zoo, "auto")
    source = make_source(recipe.data, SIZE, "val")
    truth = np.stack([np.asarray(source[i], np.float32) for i in range(min(count, len(source)))])
    sigma = validation_sigma(recipe)

    def operator(seed: int) -> tuple[Any, dict[str, np.ndarray]]:
        spec = operator_spec(recipe, SIZE, seed)
        op = compile_operator(TypeAdapter(Operator).validate_python(spec))
        return op, {k: np.repeat(v[None], len(truth), axis=0) for k, v in op.params.items()}

    op, params = operator(0)
    physics = physics_for(operator_spec(recipe, SIZE, 0))  # the torch twin, for MC and SURE
    clean = engine.forward(op.kernel, truth, params)
    noise = np.random.default_rng(0).standard_normal(clean.shape).astype(np.float32)
    y = clean + sigma * noise
    # Seeds that training never draws (models.train.loop draws fresh ones from 2**30).
    fresh = [operator(2**29 + d) for d in range(draws)] if recipe.vary else []

    def reconstruct(model: str, measurements: np.ndarray, op: Any = op) -> np.ndarray:
        tasks = [Task(model, op, m, ReconOptions(sigma=sigma), None, ()) for m in measurements]
        return np.stack([o.image for o in run_batch(engine, tasks)])

    def mc(x: np.ndarray) -> float:
        return float(mc_loss(torch.from_numpy(x), torch.from_numpy(y), physics))

    def sure(model: str, x: np.ndarray) -> float:
        def recon(measurements: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(reconstruct(model, measurements.numpy()))

        gen = torch.Generator().manual_seed(0)
        x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
        return float(sure_loss(x_t, y_t, physics, recon, sigma, generator=gen))

    def comeback(model: str, target: np.ndarray, op: Any, params: dict[str, np.ndarray]) -> float:
        """``mean((f(A target) - target)²)``: the EI and MOI terms."""
        again = reconstruct(model, engine.forward(op.kernel, target, params), op)
        return float(np.mean((again - target) ** 2))

    nan = float("nan")  # the truth has no reconstructor, so no SURE, EI or MOI
    rows = {
        "truth": {
            "psnr_db": float("inf"),
            "mc": mc(truth),
            "sure": nan,
            "ei": nan,
            "moi": nan,
            "objective": nan,
            "heldout": nan,
        }
    }
    for model in models:
        x1 = reconstruct(model, y)
        gen = torch.Generator().manual_seed(0)
        turned = (
            random_transform(group, gen, (SIZE, SIZE))(torch.from_numpy(x1)).numpy()
            for _ in range(draws)
        )
        ei = float(np.mean([comeback(model, x2, op, params) for x2 in turned]))
        moi = float(np.mean([comeback(model, x1, o, p) for o, p in fresh])) if fresh else nan
        row = {
            "psnr_db": float(np.mean([_psnr(a, b) for a, b in zip(x1, truth, strict=True)])),
            "mc": mc(x1),
            "sure": sure(model, x1),
            "ei": ei,
            "moi": moi,
        }
        # SURE estimates the measurement error R2R trains on (without R2R's extra noise).
        data = row["sure"] if recipe.loss in ("rei", "r2r") else row["mc"]
        row["objective"] = data + recipe.alpha * ei + (recipe.moi * moi if recipe.moi else 0.0)
        # Not a term of the objective: the check against measured data that none trains on.
        row["heldout"] = (
            float(np.mean([heldout(engine, model, op, m, sigma, i) for i, m in enumerate(y)]))
            if op.kernel in HELDOUT_KERNELS
            else nan
        )
        rows[model] = row
    return rows


def _figure(images: dict[str, np.ndarray], order: list[str], path: Path) -> None:
    """Top row: the images; bottom row: |error| x 4 (ground truth column left blank)."""
    truth = images["ground truth"]
    tiles = [np.clip(images[k], 0, 1) for k in order]
    errors = [np.zeros_like(truth)] + [
        np.clip(4 * np.abs(images[k] - truth), 0, 1) for k in order[1:]
    ]
    grid = np.concatenate([np.concatenate(tiles, 1), np.concatenate(errors, 1)], 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((grid * 255).round().astype(np.uint8)).save(path, optimize=True)


def _heldout_cell(metrics: dict[str, Any]) -> str:
    return f"{metrics['heldout']:.2e}" if "heldout" in metrics else "-"


def markdown_table(zoo_dir: Path = ZOO) -> str:
    """The validation metrics of every evaluated family, as one markdown table."""
    lines = [
        "| family | model | PSNR dB | SSIM | equivariance score dB | held-out error "
        "| trained | train time s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    seen: set[str] = set()
    for path in sorted((zoo_dir / "cards").glob("*.json")):
        card = json.loads(path.read_text())
        family = card["families"][0]
        if card["kind"] != "learned" or family in seen or not card.get("metrics"):
            continue
        seen.add(family)
        for model, m in card["metrics"]["models"].items():
            training = {}
            if model not in ("pinv", "tv"):
                training = json.loads((zoo_dir / "cards" / f"{model}.json").read_text())["training"]
            how = training.get("loss", "-").split("(")[0].strip() if training else "-"
            lines.append(
                f"| {family} | {model} | {m['psnr_db']:.2f} | {m['ssim']:.3f} "
                f"| {m['score_db']:.2f} | {_heldout_cell(m)} | {how} "
                f"| {training.get('seconds', '-')} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", nargs="?", choices=sorted({r.family for r in RECIPES.values()}))
    parser.add_argument("--count", type=int, help="validation images (16; 8 with --objective)")
    parser.add_argument("--table", action="store_true", help="print the README table and exit")
    parser.add_argument(
        "--objective",
        action="store_true",
        help="print each model's EI training objective (MC + alpha EI) beside its PSNR",
    )
    parser.add_argument(
        "--transform", choices=TRANSFORMS, help="with --objective: another EI group"
    )
    args = parser.parse_args(argv)
    if args.table or args.family is None:
        print(markdown_table())
        return
    if args.objective:
        # ei_objective first: it says which families have no EI recipe.
        rows = ei_objective(args.family, args.count or 8, transform=args.transform)
        recipe = RECIPES[f"{args.family}-ei"]
        total = ("SURE" if recipe.loss in ("rei", "r2r") else "MC") + " + alpha EI"
        total += f" + {recipe.moi} MOI" if recipe.moi else ""
        print(
            f"| model | PSNR dB | MC | SURE | EI | MOI | {total} | held-out error |\n"
            + "|---" * 8
            + "|"
        )
        for model, r in rows.items():
            keys = ("mc", "sure", "ei", "moi", "objective", "heldout")
            terms = " | ".join(f"{r[k]:.3e}" for k in keys)
            print(f"| {model} | {r['psnr_db']:.2f} | {terms} |")
        return
    print(json.dumps(evaluate_family(args.family, args.count or 16), indent=2))


if __name__ == "__main__":
    main()
