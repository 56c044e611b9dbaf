"""What a training step costs on this machine: float32 against bfloat16 blocks, and CT's
matrix products as padded ELL against sparse CSR.

Issue 3 asks that each shipped model train in about 30 minutes on 2 CPU cores. For each
EI recipe this times its training step (the recipe's loss: SURE + EI for CT and
inpainting, MC + EI + the held-out term for MRI, three network passes and their
backward) with the blocks in float32 and in bfloat16 (``Recipe.precision``: autocast
and channels-last weights, ``models.nets.unrolled``),
the two arms interleaved in one process, and compares the two gradients at the same
weights and batch (cosine similarity, relative norm of the difference): what bfloat16
costs in fidelity. Then the bfloat16 step eager against through ``torch.compile``
(``Recipe.compile``; not with ``--quick``: compiling takes a minute or two). For CT it
also times ``A`` and ``Aᵀ`` on a batch the way the exported graph computes them (a
padded-ELL gather per batch element) and the way training now does (one CSR matrix
shared by the batch, ``Physics.params(sparse=True)``).
Last, inpainting-ei's bfloat16 step at several batch sizes under SURE + EI and MC + EI:
the images per second a bigger batch or the cheaper loss would buy a 30-minute run.
Training side (needs torch); not part of ``make bench``.

    python -m bench.training_step [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import torch

from bench.common import fmt, md_table, results_dir, stats, write_results
from models.physics import functional
from models.train import loop
from models.train.recipes import RECIPES, Recipe

EI_RECIPES = ("ct-ei", "mri-ei", "inpainting-ei")


class _Arm:
    """One recipe at one precision: its network, optimiser and a step of its loss."""

    def __init__(self, recipe: Recipe, precision: str, compiled: bool = False) -> None:
        self.recipe = dataclasses.replace(recipe, precision=precision, compile=compiled)
        torch.manual_seed(0)
        kernel = loop.physics_for(loop.operator_spec(recipe, recipe.crop, 0)).kernel
        self.net = loop.build_network(self.recipe, kernel)
        loop.set_precision(self.net, precision)
        # As models.train.loop runs a recipe with ``compile``: the loss calls the compiled net.
        self.model: Callable[..., torch.Tensor] = torch.compile(self.net) if compiled else self.net
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-4)
        self.batches = loop._batches(self.recipe, 0, 0, 0)
        self.gen = torch.Generator().manual_seed(1)
        self.step_index = 0

    def loss(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        r = self.recipe
        seed = self.step_index if r.vary else None
        physics = loop.physics_for(loop.operator_spec(r, r.crop, seed))
        return loop._loss(r, self.model, physics, x, loop._sigma(r, gen), gen, torch.device("cpu"))

    def step(self) -> float:
        began = time.perf_counter()
        loss = self.loss(next(self.batches), self.gen)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step_index += 1
        return time.perf_counter() - began

    def gradient(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        self.net.zero_grad(set_to_none=True)
        self.loss(x, torch.Generator().manual_seed(seed)).backward()
        return torch.cat([p.grad.reshape(-1) for p in self.net.parameters() if p.grad is not None])


def _step_times(recipe: Recipe, steps: int) -> dict[str, Any]:
    arms = {p: _Arm(recipe, p) for p in ("fp32", "bf16")}
    for arm in arms.values():  # warm-up: oneDNN picks and caches its kernels
        arm.step()
        arm.step()
    seconds: dict[str, list[float]] = {p: [] for p in arms}
    for _ in range(steps):  # interleaved, so that drift on a shared machine hits both
        for p, arm in arms.items():
            seconds[p].append(arm.step())
    # The same weights, batch and noise through both precisions.
    arms["bf16"].net.load_state_dict(arms["fp32"].net.state_dict())
    x = next(arms["fp32"].batches)
    g32, g16 = arms["fp32"].gradient(x, 7), arms["bf16"].gradient(x, 7)
    fp32, bf16 = (stats(seconds[p])["median_ms"] / 1e3 for p in ("fp32", "bf16"))
    return {
        "recipe": recipe.name,
        "batch": recipe.batch,
        "fp32_s": round(fp32, 3),
        "bf16_s": round(bf16, 3),
        "speedup": round(fp32 / bf16, 2),
        "grad_cosine": round(float(torch.nn.functional.cosine_similarity(g32, g16, dim=0)), 5),
        "grad_rel_diff": round(float((g16 - g32).norm() / g32.norm()), 4),
    }


def _compiled_step_times(recipe: Recipe, steps: int) -> dict[str, Any]:
    """bfloat16 steps of ``recipe`` eager against through ``torch.compile``
    (``Recipe.compile``), interleaved after the compiled arm's first steps compile."""
    arms = {c: _Arm(recipe, "bf16", compiled=c) for c in (False, True)}
    began = time.perf_counter()
    for _ in range(3):  # the first compiles; a second shape may recompile
        arms[True].step()
    compile_s = time.perf_counter() - began
    for _ in range(2):
        arms[False].step()
    seconds: dict[bool, list[float]] = {c: [] for c in arms}
    for _ in range(steps):
        for c, arm in arms.items():
            seconds[c].append(arm.step())
    eager, compiled = (stats(seconds[c])["median_ms"] / 1e3 for c in (False, True))
    return {
        "recipe": recipe.name, "batch": recipe.batch, "eager_s": round(eager, 3),
        "compiled_s": round(compiled, 3), "speedup": round(eager / compiled, 2),
        "first_steps_s": round(compile_s, 1),
    }


def _median_s(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    seconds = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - began)
    return stats(seconds)["median_ms"] / 1e3


def _index64(csr: torch.Tensor) -> torch.Tensor:
    """``csr`` with 64-bit indices, as training built CT's matrix before 2026-12-06."""
    return torch.sparse_csr_tensor(
        csr.crow_indices().long(), csr.col_indices().long(), csr.values(), csr.shape,
        check_invariants=False,  # a copy of a checked matrix
    )


def _ct_products(batch: int, repeats: int) -> dict[str, Any]:
    """CT's ``A`` then ``Aᵀ`` on a batch: padded-ELL gathers (the exported graph's way),
    and the shared CSR matrix training uses, with 64-bit and with 32-bit indices."""
    recipe = RECIPES["ct-ei"]
    physics = loop.physics_for(loop.operator_spec(recipe, recipe.crop, None))
    x = torch.rand(batch, recipe.crop, recipe.crop)
    row: dict[str, Any] = {"batch": batch}
    shared = physics.params(1, sparse=True)  # cached: built once, as in training
    index64 = {k: _index64(shared[k]) for k in ("fwd_csr", "adj_csr")}
    for layout in ("ell", "csr64", "csr"):

        def products(layout: str = layout) -> None:
            # As each training call builds them.
            params = physics.params(batch, sparse=layout != "ell")
            if layout == "csr64":
                params |= index64
            functional.adjoint("ct", functional.forward("ct", x, params), params)

        row[f"{layout}_ms"] = round(_median_s(products, repeats) * 1e3, 2)
    row["speedup"] = round(row["ell_ms"] / row["csr_ms"], 1)
    row["index_speedup"] = round(row["csr64_ms"] / row["csr_ms"], 2)
    return row


def _batch_sweep(
    name: str, batches: tuple[int, ...], steps: int, precision: str
) -> list[dict[str, Any]]:
    """Steps of ``name`` in ``precision`` at several batch sizes, under robust EI (SURE + EI:
    three network passes) and MC + EI (two): what a bigger batch or the cheaper loss buys in
    images per second (inpainting's 30-minute runs, docs/training-log.md)."""
    rows = []
    for loss in ("rei", "ei"):
        for batch in batches:
            arm = _Arm(dataclasses.replace(RECIPES[name], loss=loss, batch=batch), precision)
            arm.step()  # oneDNN picks its kernels for this shape
            seconds = stats([arm.step() for _ in range(steps)])["median_ms"] / 1e3
            rows.append({
                "recipe": name, "loss": loss, "batch": batch, "s_per_step": round(seconds, 3),
                "ms_per_image": round(seconds / batch * 1e3, 1),
            })
            print(rows[-1], flush=True)
    return rows


def measure(
    recipes: tuple[str, ...],
    steps: int,
    repeats: int,
    sweep: tuple[int, ...],
    compiled: bool,
    batch: int | None = None,
) -> dict[str, Any]:
    """``batch``: the precision comparison at this batch, not the recipes' own."""
    threads = torch.get_num_threads()
    rows = []
    for name in recipes:
        recipe = RECIPES[name]
        rows.append(_step_times(dataclasses.replace(recipe, batch=batch or recipe.batch), steps))
        print(rows[-1], flush=True)
    compiled_rows = []
    for name in recipes if compiled else ():
        compiled_rows.append(_compiled_step_times(RECIPES[name], steps))
        print(compiled_rows[-1], flush=True)
    ct = _ct_products(RECIPES["ct-ei"].batch, repeats)
    print(ct, flush=True)
    # The sweep plans runs on this machine: in the precision it trains in (models.train
    # takes a bfloat16 recipe to float32 where bfloat16 would be emulated).
    precision = loop.fast_precision(RECIPES["inpainting-ei"].precision, torch.device("cpu"))
    batches = _batch_sweep("inpainting-ei", sweep, steps, precision)
    return {
        "threads": threads, "steps": steps, "steps_rows": rows, "compiled_rows": compiled_rows,
        "ct_products": ct, "sweep_precision": precision, "batch_rows": batches,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.training_step")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="inpainting-ei only at batch 2, 2 steps, nothing compiled",
    )
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    quick = (("inpainting-ei",), 2, 3, (1, 2), False, 2)
    result = measure(*quick) if args.quick else measure(EI_RECIPES, 10, 20, (8, 16, 32), True)
    steps = md_table(
        ["recipe", "batch", "float32 s/step", "bfloat16 s/step", "speed-up",
         "gradient cosine", "gradient rel. diff"],
        [
            [r["recipe"], r["batch"], fmt(r["fp32_s"], 3), fmt(r["bf16_s"], 3),
             fmt(r["speedup"]), fmt(r["grad_cosine"], 5), fmt(r["grad_rel_diff"], 4)]
            for r in result["steps_rows"]
        ],
    )
    compiled = md_table(
        ["recipe", "batch", "bfloat16 s/step", "compiled s/step", "speed-up",
         "first 3 compiled steps s"],
        [
            [r["recipe"], r["batch"], fmt(r["eager_s"], 3), fmt(r["compiled_s"], 3),
             fmt(r["speedup"]), fmt(r["first_steps_s"], 1)]
            for r in result["compiled_rows"]
        ],
    )
    ct = result["ct_products"]
    products = md_table(
        ["CT A then Aᵀ, batch", "padded ELL ms", "CSR, 64-bit indices ms",
         "CSR, 32-bit indices ms", "speed-up over ELL", "over 64-bit"],
        [[ct["batch"], fmt(ct["ell_ms"], 1), fmt(ct["csr64_ms"], 2), fmt(ct["csr_ms"], 2),
          fmt(ct["speedup"], 1), fmt(ct["index_speedup"], 2)]],
    )
    sweep_precision = {"bf16": "bfloat16", "fp32": "float32"}[result["sweep_precision"]]
    batches = md_table(
        ["recipe", "loss", "batch", f"{sweep_precision} s/step", "ms per image"],
        [
            [r["recipe"], {"rei": "SURE + EI", "ei": "MC + EI"}[r["loss"]], r["batch"],
             fmt(r["s_per_step"], 3), fmt(r["ms_per_image"], 1)]
            for r in result["batch_rows"]
        ],
    )
    print(steps + "\n" + compiled + "\n" + products + "\n" + batches)
    write_results(
        results_dir(args.out, args.quick),
        "training_step",
        result,
        f"# Training step ({result['threads']} threads, median of {result['steps']} steps)\n\n"
        + steps + "\n" + compiled + "\n" + products + "\n" + batches,
    )
    return result


if __name__ == "__main__":
    main()
