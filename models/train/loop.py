"""The training loop: recipe -> network weights, with logs and resumable checkpoints.

Each step draws a batch of images from the recipe's training split, an
operator (a fresh mask seed when the recipe varies one), simulates noisy
measurements, and minimises the recipe's loss. Every ``epoch_steps`` steps it
measures PSNR on the validation split (which training never sees), appends a
JSON line to ``log.jsonl`` and writes ``checkpoint.npz`` (weights and Adam
state as plain arrays: no pickle).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from models.losses import ei_loss, mc_loss, random_transform, supervised_loss, sure_loss
from models.nets.unrolled import Unrolled
from models.physics.operators import Physics
from models.train.recipes import Recipe

__all__ = [
    "build_network",
    "load_weights",
    "operator_spec",
    "physics_for",
    "select_device",
    "train",
    "validate",
]

VAL_IMAGES = 8


def select_device(name: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def build_network(recipe: Recipe, kernel: str) -> Unrolled:
    from models.nets.blocks import CNNBlock, P4MBlock

    block_type = {"cnn": CNNBlock, "p4m": P4MBlock}[recipe.block]
    blocks = [block_type(**recipe.block_args) for _ in range(recipe.stages)]
    return Unrolled(kernel, blocks)


def operator_spec(recipe: Recipe, size: int, seed: int | None) -> dict[str, Any]:
    """The recipe's operator at ``size``, with the varied generator seed set to ``seed``."""
    spec = copy.deepcopy(recipe.operator)
    spec["shape"] = [size, size]
    if recipe.vary and seed is not None:
        node = spec
        *path, leaf = recipe.vary.split(".")
        for key in path:
            node = node[key]
        node[leaf] = seed
    return spec


@lru_cache(maxsize=64)
def _physics(spec_json: str) -> Physics:
    return Physics.from_json(json.loads(spec_json))


def physics_for(spec: dict[str, Any]) -> Physics:
    return _physics(json.dumps(spec, sort_keys=True))


def _noisy(physics: Physics, x: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    y = physics.A(x)
    return y + sigma * torch.randn(y.shape, generator=gen).to(y.device)


def _sigma(recipe: Recipe, gen: torch.Generator) -> float:
    if isinstance(recipe.sigma, tuple):
        lo, hi = recipe.sigma
        return lo + (hi - lo) * float(torch.rand(1, generator=gen))
    return recipe.sigma


def _loss(
    recipe: Recipe,
    net: Unrolled,
    physics: Physics,
    x: torch.Tensor,
    sigma: float,
    gen: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    params = {k: v.to(device) for k, v in physics.params(x.shape[0]).items()}
    inv_norm = torch.full((x.shape[0],), 1.0 / physics.compiled.norm, device=device)

    def recon(y: torch.Tensor) -> torch.Tensor:
        return net(y, params, inv_norm)

    y = _noisy(physics, x, sigma, gen)
    x1 = recon(y)
    if recipe.loss == "sup":
        return supervised_loss(x1, x)
    if recipe.loss == "sure":
        return sure_loss(x1, y, physics, recon, sigma, generator=gen)
    data = (
        mc_loss(x1, y, physics)
        if recipe.loss == "ei"
        else sure_loss(x1, y, physics, recon, sigma, generator=gen)
    )
    assert recipe.transform is not None
    transform = random_transform(recipe.transform, gen, tuple(x.shape[-2:]))
    return data + recipe.alpha * ei_loss(x1, physics, recon, transform)


def validate(recipe: Recipe, net: Unrolled, device: torch.device, count: int = VAL_IMAGES) -> float:
    """Mean PSNR on the first ``count`` validation images, fixed operator and noise."""
    from models.data.sources import make_source

    size = recipe.operator["shape"][0]
    source = make_source(recipe.data, size, "val")
    physics = physics_for(operator_spec(recipe, size, 0))
    sigma = recipe.sigma[1] / 2 if isinstance(recipe.sigma, tuple) else recipe.sigma
    gen = torch.Generator().manual_seed(1234)
    values = []
    with torch.no_grad():
        for i in range(min(count, len(source))):
            x = torch.from_numpy(np.asarray(source[i], np.float32))[None].to(device)
            y = _noisy(physics, x, sigma, gen)
            params = {k: v.to(device) for k, v in physics.params(1).items()}
            inv_norm = torch.full((1,), 1.0 / physics.compiled.norm, device=device)
            mse = float(((net(y, params, inv_norm) - x) ** 2).mean())
            values.append(10 * math.log10(1.0 / max(mse, 1e-12)))
    return float(np.mean(values))


def _save(path: Path, net: Unrolled, opt: torch.optim.Optimizer, step: int) -> None:
    arrays = {f"model/{k}": v.detach().cpu().numpy() for k, v in net.state_dict().items()}
    for i, state in enumerate(opt.state.values()):
        for k, v in state.items():
            arrays[f"adam/{i}/{k}"] = np.asarray(
                v.detach().cpu().numpy() if torch.is_tensor(v) else v
            )
    arrays["step"] = np.asarray(step)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def load_weights(net: Unrolled, path: Path) -> int:
    """Load ``model/*`` arrays of a checkpoint into ``net``; returns the step."""
    with np.load(path, allow_pickle=False) as data:
        state = {
            k.removeprefix("model/"): torch.from_numpy(data[k])
            for k in data.files
            if k.startswith("model/")
        }
        net.load_state_dict(state)
        return int(data["step"])


def _load_optimizer(opt: torch.optim.Optimizer, net: Unrolled, path: Path) -> None:
    with np.load(path, allow_pickle=False) as data:
        for i, p in enumerate(net.parameters()):
            if f"adam/{i}/exp_avg" in data.files:
                opt.state[p] = {
                    k: torch.from_numpy(data[f"adam/{i}/{k}"]).to(p.device)
                    for k in ("step", "exp_avg", "exp_avg_sq")
                }


def train(
    recipe: Recipe,
    out: Path,
    device: str = "auto",
    steps: int | None = None,
    resume: bool = False,
    seed: int = 0,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``recipe`` into ``out`` (log.jsonl, checkpoint.npz, weights.npz)."""
    from models.data.sources import iterate_batches, make_source

    torch.manual_seed(seed)
    dev = select_device(device)
    out.mkdir(parents=True, exist_ok=True)
    physics0 = physics_for(operator_spec(recipe, recipe.crop, 0))
    net = build_network(recipe, physics0.kernel).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=recipe.lr)
    total = steps or recipe.steps
    start = 0
    checkpoint = out / "checkpoint.npz"
    if resume and checkpoint.exists():
        start = load_weights(net, checkpoint)
        _load_optimizer(opt, net, checkpoint)
        log(f"resumed {recipe.name} at step {start}")
    # Cosine decay over the whole run, so a resumed run follows the same schedule.
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s + start, total) / total))
    )
    # The stream is deterministic: a resumed run skips what it has already seen.
    source = make_source(recipe.data, recipe.crop, "train")
    batches = iterate_batches(source, recipe.batch, seed, start=start)
    gen = torch.Generator().manual_seed(seed + 7919 * (start + 1))
    began = time.perf_counter()
    bar = tqdm(range(start, total), desc=recipe.name, disable=not progress, mininterval=5)
    losses: list[float] = []
    summary: dict[str, Any] = {}
    for step in bar:
        x = next(batches).to(dev)
        physics = physics_for(operator_spec(recipe, recipe.crop, step if recipe.vary else None))
        loss = _loss(recipe, net, physics, x, _sigma(recipe, gen), gen, dev)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if (step + 1) % recipe.epoch_steps == 0 or step + 1 == total:
            net.eval()
            psnr = validate(recipe, net, dev)
            net.train()
            summary = {
                "step": step + 1,
                "loss": float(np.mean(losses)),
                "val_psnr_db": round(psnr, 3),
                "seconds": round(time.perf_counter() - began, 1),
                "lr": schedule.get_last_lr()[0],
            }
            losses = []
            with (out / "log.jsonl").open("a") as fh:
                fh.write(json.dumps(summary) + "\n")
            bar.set_postfix(loss=f"{summary['loss']:.3g}", val=f"{psnr:.2f}dB")
            _save(checkpoint, net, opt, step + 1)
    _save(out / "weights.npz", net, opt, total)
    summary["device"] = str(dev)
    return summary
