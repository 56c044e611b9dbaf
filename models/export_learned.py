"""Export a trained recipe to the zoo: one ONNX graph and its model card.

The graph is the whole unrolled network ``(y, params..., inv_norm) -> x``
(``service/engine.py``, kind ``learned``), exported with every axis dynamic
like the operator graphs, so another mask or angle set of the same count is
just another input. The card carries the recipe, the training log summary
and (after ``python -m models.evaluate``) validation metrics.

``--average`` exports the network averaged over :math:`D_4`
(:class:`models.nets.unrolled.GroupAveraged`, the Reynolds operator) as a
second model ``RECIPE-avg``: exactly equivariant to a rotation or flip of the
scene together with its operator, at eight passes per image.

    python -m models.export_learned RECIPE [--run runs/RECIPE] [--zoo models/zoo] [--average]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from models.export import ZOO, export_module, write_manifest
from models.nets.unrolled import GroupAveraged
from models.train.loop import build_network, load_weights, operator_spec, physics_for
from models.train.recipes import RECIPES, Recipe

__all__ = ["AVERAGED_SUFFIX", "LearnedGraph", "export_learned"]

#: Model id suffix of a group-averaged export (``--average``).
AVERAGED_SUFFIX = "-avg"


class LearnedGraph(torch.nn.Module):
    """Positional ONNX inputs ``(y, *params, inv_norm)`` around an unrolled network."""

    def __init__(self, net: torch.nn.Module, param_names: list[str]) -> None:
        super().__init__()
        self.net, self.param_names = net, param_names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        params = dict(zip(self.param_names, inputs[1:-1], strict=True))
        return self.net(inputs[0], params, inputs[-1])


def learned_inputs(recipe: Recipe, batch: int = 2) -> tuple[list[str], list[torch.Tensor]]:
    """Example inputs for the graph of ``recipe`` (at the served size)."""
    size = recipe.operator["shape"][0]
    physics = physics_for(operator_spec(recipe, size, 0))
    params = physics.params(batch)
    names = sorted(params)
    x = torch.rand(batch, size, size, generator=torch.Generator().manual_seed(0))
    inv_norm = torch.full((batch,), 1.0 / physics.compiled.norm)
    return ["y", *names, "inv_norm"], [physics.A(x), *(params[n] for n in names), inv_norm]


def export_learned(recipe: Recipe, run: Path, zoo: Path = ZOO, average: bool = False) -> Path:
    """Write ``graphs/learned/NAME.onnx`` and ``cards/NAME.json``; refresh the manifest.

    ``average``: export the :math:`D_4`-averaged network as ``NAME-avg`` instead.
    """
    name = recipe.name + (AVERAGED_SUFFIX if average else "")
    summary = _summary(run)
    # A run may add or drop the final TV step (models.train --tv-weight); runs from before
    # the data-consistency stage have none.
    recipe = dataclasses.replace(
        recipe,
        tv_weight=summary.get("tv_weight", recipe.tv_weight),
        dc_step=summary.get("dc_step", 0.0),
    )
    physics = physics_for(operator_spec(recipe, recipe.operator["shape"][0], 0))
    net = build_network(recipe, physics.kernel)
    load_weights(net, run / "weights.npz")
    net.eval()
    names, tensors = learned_inputs(recipe)
    rel = f"graphs/learned/{name}.onnx"
    module = LearnedGraph(GroupAveraged(net) if average else net, names[1:-1])
    # The averaged graph (eight copies of the network) skips onnxscript's optimiser: with
    # the final TV step's unrolled iterations it runs for over ten minutes. The plain one
    # keeps it: 957 nodes instead of 5171 and a little faster (python -m
    # bench.learned_graph); onnxruntime optimises both again when it loads them.
    export_module(
        module, physics.kernel, names, tensors, ["x"], zoo / rel, optimize=not average
    )
    card_path = zoo / "cards" / f"{name}.json"
    old = json.loads(card_path.read_text()) if card_path.exists() else {}
    card = _card(recipe, physics.kernel, rel, run, summary, net, old)
    if average:
        card |= {
            "id": name,
            "title": f"{card['title']}, averaged over D4",
            "description": f"{recipe.description}; averaged over the 8 rotations and flips "
            "of D4 with the operator turned along (Reynolds operator): exactly equivariant, "
            "8 passes per image",
            "group": "D4 (Reynolds average over the scene and its operator, exact)",
            "averaged_from": recipe.name,
        }
        card["network"]["architecture"] += ", D4-averaged (8 passes)"
    card_path.parent.mkdir(parents=True, exist_ok=True)
    card_path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    write_manifest(zoo)
    return zoo / rel


def _tv_step(net: torch.nn.Module) -> str:
    log_tv = getattr(net, "log_tv", None)
    if log_tv is None:
        return ""
    text = f", final TV proximal step (learned weight {float(log_tv.detach().exp()):.3g})"
    log_dc, log_dc_tv = getattr(net, "log_dc", None), getattr(net, "log_dc_tv", None)
    if log_dc is None or log_dc_tv is None:
        return text
    return text + (
        f", then data consistency (x + α A†(y - A x), learned α "
        f"{float(log_dc.detach().exp()):.3g}) and a second TV step "
        f"(learned weight {float(log_dc_tv.detach().exp()):.3g})"
    )


def _summary(run: Path) -> dict[str, Any]:
    path = run / "summary.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _card(
    recipe: Recipe,
    kernel: str,
    rel: str,
    run: Path,
    summary: dict[str, Any],
    net: torch.nn.Module,
    old: dict[str, Any],
) -> dict[str, Any]:
    name = recipe.name
    log = (
        [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        if (run / "log.jsonl").exists()
        else []
    )
    # A run may override the recipe's EI weight and group (models.train --alpha/--transform).
    alpha = summary.get("alpha", recipe.alpha)
    group = summary.get("transform", recipe.transform)
    moi = summary.get("moi", recipe.moi)
    multi = f" + {moi} x multi-operator (fresh masks)" if moi else ""
    heldout = summary.get("heldout", recipe.heldout)
    if heldout:
        multi += f" + {heldout} x held-out measurements (a fifth of each, predicted from the rest)"
    if summary.get("ei_noise", recipe.ei_noise):
        group = f"{group}, noisy re-measurement"
    if summary.get("ei_detach", recipe.ei_detach):
        group = f"{group}, no gradient through the target"
    loss = {
        "ei": f"measurement consistency + {alpha} x EI ({group}){multi}",
        "rei": f"SURE + {alpha} x EI ({group}){multi}",
        "r2r": f"recorrupted-to-recorrupted + {alpha} x EI ({group}){multi}",
        "sure": "SURE (Stein's unbiased risk estimate), no ground truth",
        "mc": "measurement consistency only, no ground truth (the baseline EI improves on)",
        "sup": "supervised mean squared error (uses ground truth)",
        "tv-teacher": "reproduce the service's TV reconstruction of each measurement, no "
        "ground truth",
    }[summary.get("loss_kind", recipe.loss)]
    if summary.get("teacher_steps"):
        loss += (
            f"; started by {summary['teacher_steps']} steps reproducing the service's TV "
            "reconstruction of each measurement (models.train.teacher, no ground truth)"
        )
    return {
        "id": name,
        "kind": "learned",
        "title": recipe.description.split(":")[0],
        "description": recipe.description,
        "families": [recipe.family],
        "constraints": recipe.constraints or {"shape": None},
        "group": "D4 (p4m group convolutions, exact)" if recipe.block == "p4m" else None,
        "graphs": {kernel: rel},
        "network": {
            "architecture": f"unrolled PGD, {recipe.stages} stages, {recipe.block} blocks"
            + _tv_step(net),
            "parameters": sum(p.numel() for p in net.parameters()),
        },
        "training": {
            "data": recipe.data,
            "loss": loss,
            "ground_truth_used": recipe.loss == "sup",
            "operator": recipe.operator,
            "varied": recipe.vary,
            "noise_sigma": recipe.sigma,
            # A chain of runs (models.train --init) counts the steps of all of them.
            "steps": summary.get("chain_steps", summary.get("step")),
            "batch": summary.get("batch", recipe.batch),
            "crop": summary.get("crop", recipe.crop),
            "seconds": summary.get("train_seconds"),
            "hardware": summary.get("hardware"),
            # bf16: the blocks' convolutions trained in bfloat16; the graph is float32.
            "precision": summary.get("precision", "fp32"),
            # True: the loss ran the network through torch.compile (the same function).
            "compiled": summary.get("compile", False),
            "command": summary.get("command", f"python -m models.train {name}"),
            "launcher": summary.get("launcher"),
            "selection": summary.get("selection"),
            "final_val_psnr_db": log[-1]["val_psnr_db"] if log else None,
        },
        "options": {},
        # Validation results come from models.evaluate: a re-export keeps them.
        "metrics": old.get("metrics", {}),
        **({"figure": old["figure"]} if "figure" in old else {}),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m models.export_learned", description=__doc__.splitlines()[0]
    )
    parser.add_argument("recipe", choices=sorted(RECIPES))
    parser.add_argument("--run", type=Path, help="the training run (default runs/RECIPE)")
    parser.add_argument("--zoo", type=Path, default=ZOO, help="the zoo to write into")
    parser.add_argument(
        "--average", action="store_true", help="export the D4-averaged network as RECIPE-avg"
    )
    args = parser.parse_args(argv)
    run = args.run or Path(__file__).resolve().parents[1] / "runs" / args.recipe
    print(export_learned(RECIPES[args.recipe], run, args.zoo, average=args.average))


if __name__ == "__main__":
    main()
