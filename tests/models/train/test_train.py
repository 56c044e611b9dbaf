"""CI smoke test: a tiny EI model trains for a few steps, its EI loss drops, export round-trips."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models.export import ZOO
from models.export_learned import export_learned, learned_inputs
from models.losses import ei_loss, moi_loss, random_transform
from models.nets.unrolled import GroupAveraged
from models.train.loop import (
    build_network,
    load_weights,
    operator_spec,
    physics_for,
    train,
    validate,
)
from models.train.recipes import RECIPES, Recipe
from service.zoo import Zoo

TINY = replace(
    RECIPES["inpainting-ei"],
    name="tiny-inpainting-ei",
    operator={
        "type": "inpainting",
        "shape": [32, 32],
        "mask": {"random": {"keep": 0.5, "seed": 0}},
    },
    crop=32,
    batch=4,
    steps=40,
    epoch_steps=20,
    stages=2,
    block_args={"channels": 8, "depth": 3},
    lr=3e-3,
    warmup=4,
    constraints={},
    tv_weight=0.0,  # the TV step has its own test below (its export is slower)
    loss="ei",
    ei_noise=False,
    teacher_steps=0,
    compile=False,  # the compiled loss has its own test below (compiling takes a minute)
    # bfloat16 has its own test below; in float32 the recorded commands do not depend on
    # whether the machine has native bfloat16 (models.train would add --precision fp32).
    precision="fp32",
)


def _ei_on_fixed_batch(net: torch.nn.Module) -> float:
    from models.data.sources import batch, make_source

    x = batch(make_source("natural", 32, "val"), range(4))
    physics = physics_for(operator_spec(TINY, 32, 0))
    params = physics.params(4)
    inv_norm = torch.ones(4)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():

        def recon(v: torch.Tensor) -> torch.Tensor:
            return net(v, params, inv_norm)

        x1 = recon(physics.A(x))
        return float(ei_loss(x1, physics, recon, random_transform("shifts", gen, (32, 32))))


def _assert_same_network(first: Path, second: Path) -> None:
    """Two weights files hold the same network, weight for weight."""
    with np.load(first) as a, np.load(second) as b:
        names = [k for k in a.files if k.startswith("model/")]
        assert names and names == [k for k in b.files if k.startswith("model/")]
        for k in names:
            np.testing.assert_array_equal(a[k], b[k])


def test_tiny_ei_training_lowers_the_ei_loss_and_exports(tmp_path: Path) -> None:
    run = tmp_path / "run"
    torch.manual_seed(0)
    before_net = build_network(TINY, "inpainting")
    # train() seeds torch with 0 before building its network: the same initial weights.
    before = _ei_on_fixed_batch(before_net)
    summary = train(TINY, run, device="cpu", progress=False)
    assert summary["step"] == 40
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [20, 40]
    trained = build_network(TINY, "inpainting")
    load_weights(trained, run / "weights.npz")
    assert _ei_on_fixed_batch(trained) < before
    # The log's ground-truth-free number (models.losses.heldout) falls with training, as
    # the validation PSNR rises.
    assert all(np.isfinite(entry["val_heldout"]) for entry in log)
    untrained, done = (validate(TINY, n.eval(), torch.device("cpu")) for n in (before_net, trained))
    assert done["heldout"] < untrained["heldout"] and done["psnr_db"] > untrained["psnr_db"]
    assert done["heldout"] == pytest.approx(log[-1]["val_heldout"], rel=1e-3)

    # Resuming from the checkpoint continues the step count.
    resumed = train(replace(TINY, steps=60), run, device="cpu", resume=True, progress=False)
    assert resumed["step"] == 60

    zoo = tmp_path / "zoo"
    path = export_learned(TINY, run, zoo)
    names, tensors = learned_inputs(TINY)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: t.numpy() for n, t in zip(names, tensors, strict=True)})[0]
    final = build_network(TINY, "inpainting")
    load_weights(final, run / "weights.npz")
    with torch.no_grad():
        want = final(tensors[0], dict(zip(names[1:-1], tensors[1:-1], strict=True)), tensors[-1])
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4)
    card = Zoo.load(zoo).cards["tiny-inpainting-ei"]
    assert card.kind == "learned" and card.families == ["inpainting"]
    assert card.raw["training"]["ground_truth_used"] is False

    # The D4-averaged export: a second model, exactly equivariant in onnxruntime.
    path = export_learned(TINY, run, zoo, average=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y, mask, inv_norm = (t.numpy() for t in tensors)
    got = session.run(None, {"y": y, "mask": mask, "inv_norm": inv_norm})[0]
    with torch.no_grad():
        want = GroupAveraged(final)(tensors[0], {"mask": tensors[1]}, tensors[-1])
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4)
    turned = session.run(
        None, {"y": np.rot90(y, 1, (1, 2)).copy(), "mask": np.rot90(mask, 1, (1, 2)).copy(),
               "inv_norm": inv_norm},
    )[0]
    error = np.linalg.norm(turned - np.rot90(got, 1, (1, 2))) / np.linalg.norm(got)
    assert error < 1e-5
    cards = Zoo.load(zoo).cards
    assert set(cards) == {"tiny-inpainting-ei", "tiny-inpainting-ei-avg"}
    assert cards["tiny-inpainting-ei-avg"].raw["averaged_from"] == "tiny-inpainting-ei"


def _moi_on_fixed_batch(net: torch.nn.Module) -> float:
    """The multi-operator term on validation crops measured by mask 0, re-measured by a
    mask that training never drew (seed 99)."""
    from models.data.sources import batch, make_source

    x = batch(make_source("natural", 32, "val"), range(4))
    measuring = physics_for(operator_spec(TINY, 32, 0))
    fresh = physics_for(operator_spec(TINY, 32, 99))
    with torch.no_grad():
        x1 = net(measuring.A(x), measuring.params(4), torch.ones(4))
        return float(moi_loss(x1, fresh, lambda v: net(v, fresh.params(4), torch.ones(4))))


def test_r2r_plus_ei_trains_from_one_pass_on_recorrupted_measurements(tmp_path: Path) -> None:
    """The R2R data term (models.losses.consistency) in the loop: the EI loss falls and
    the validation PSNR rises, as under MC + EI."""
    recipe = replace(TINY, loss="r2r", sigma=0.05)
    torch.manual_seed(0)
    before_net = build_network(recipe, "inpainting")
    before = _ei_on_fixed_batch(before_net)
    train(recipe, tmp_path / "run", device="cpu", progress=False)
    trained = build_network(recipe, "inpainting")
    load_weights(trained, tmp_path / "run" / "weights.npz")
    assert _ei_on_fixed_batch(trained) < before
    untrained, done = (
        validate(recipe, n.eval(), torch.device("cpu")) for n in (before_net, trained)
    )
    assert done["psnr_db"] > untrained["psnr_db"] + 1


def test_the_r2r_strength_is_the_recipes(tmp_path: Path) -> None:
    """The loop recorrupts with the recipe's ``r2r_alpha`` (default R2R_ALPHA): with the
    same draws, another strength gives another loss."""
    from models.data.sources import batch, make_source
    from models.losses.consistency import R2R_ALPHA
    from models.train.loop import _loss

    recipe = replace(TINY, loss="r2r", sigma=0.05)
    net = build_network(recipe, "inpainting")
    physics = physics_for(operator_spec(recipe, 32, 0))
    x = batch(make_source("natural", 32, "val"), range(4))

    def loss(alpha: float) -> float:
        with torch.no_grad():
            gen = torch.Generator().manual_seed(0)
            step = replace(recipe, r2r_alpha=alpha)
            return float(_loss(step, net, physics, x, 0.05, gen, torch.device("cpu")))

    assert recipe.r2r_alpha == R2R_ALPHA
    assert loss(R2R_ALPHA) == loss(R2R_ALPHA) != pytest.approx(loss(2.0), rel=1e-3)


def test_the_multi_operator_term_teaches_consistency_across_masks(tmp_path: Path) -> None:
    values = {}
    for moi in (0.0, 1.0):
        recipe = replace(TINY, moi=moi)
        train(recipe, tmp_path / str(moi), device="cpu", progress=False)
        net = build_network(recipe, "inpainting")
        load_weights(net, tmp_path / str(moi) / "weights.npz")
        values[moi] = _moi_on_fixed_batch(net)
    assert values[1.0] < values[0.0]


def test_the_heldout_term_teaches_what_the_measurements_hold_out(tmp_path: Path) -> None:
    """With the EI term off (α = 0) the loss is measurement consistency, blind to the
    unmeasured pixels; the held-out term (measured pixels predicted from the others) makes
    the network fill them: a lower validation held-out error and a higher PSNR."""
    values = {}
    for weight in (0.0, 1.0):
        recipe = replace(TINY, alpha=0.0, heldout=weight)
        train(recipe, tmp_path / str(weight), device="cpu", progress=False)
        log = (tmp_path / str(weight) / "log.jsonl").read_text().splitlines()
        values[weight] = json.loads(log[-1])
    assert values[1.0]["val_heldout"] < values[0.0]["val_heldout"]
    assert values[1.0]["val_psnr_db"] > values[0.0]["val_psnr_db"]


def _graph_matches_network(path: Path, recipe: Recipe, net: torch.nn.Module) -> torch.Tensor:
    """The exported graph at ``path`` computes what ``net`` does (1e-4) on the recipe's
    export inputs; returns the network's output."""
    names, tensors = learned_inputs(recipe)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: t.numpy() for n, t in zip(names, tensors, strict=True)})[0]
    with torch.no_grad():
        want = net(tensors[0], dict(zip(names[1:-1], tensors[1:-1], strict=True)), tensors[-1])
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4)
    return want


def test_a_resumed_run_adds_the_final_tv_step_and_exports_it(tmp_path: Path) -> None:
    run, zoo = tmp_path / "run", tmp_path / "zoo"
    train(replace(TINY, steps=8), run, device="cpu", progress=False)
    plain = build_network(TINY, "inpainting")
    load_weights(plain, run / "checkpoint.npz")
    messages: list[str] = []
    with_tv = replace(TINY, steps=12, tv_weight=0.01)
    train(with_tv, run, device="cpu", resume=True, progress=False, log=messages.append)
    assert any("no log_tv" in m for m in messages)
    # The Adam state of the new checkpoint follows the parameters: resuming it again works
    # (the optimiser had put the added parameter last, the network has it first).
    assert train(replace(with_tv, steps=14), run, device="cpu", resume=True,
                 progress=False)["step"] == 14
    net = build_network(with_tv, "inpainting")
    load_weights(net, run / "weights.npz")
    assert net.log_tv is not None and float(net.log_tv.detach().exp()) != 0.01  # trained
    # A network without the step cannot take these weights silently.
    try:
        load_weights(plain, run / "weights.npz")
    except RuntimeError as error:
        assert "log_tv" in str(error)
    else:
        raise AssertionError("loaded a TV step into a network without one")

    # The export builds the network the run trained, as its summary says (models.train
    # writes tv_weight there), even where the recipe has no TV step.
    (run / "summary.json").write_text(json.dumps({"tv_weight": 0.01}))
    want = _graph_matches_network(export_learned(TINY, run, zoo), with_tv, net)
    assert float(want.min()) >= 0.0  # the step includes positivity
    architecture = Zoo.load(zoo).cards["tiny-inpainting-ei"].raw["network"]["architecture"]
    assert "final TV proximal step (learned weight" in architecture


def test_a_ct_network_with_data_consistency_trains_and_exports(tmp_path: Path) -> None:
    """CT's recipes end with data consistency: a filtered-back-projection correction
    through the sparse matrix in training, through the exported graph's gathers when served."""
    recipe = replace(
        TINY, name="tiny-ct-ei", family="ct", data="ellipses", sigma=0.1, vary=None,
        operator={"type": "ct", "shape": [32, 32], "angles": {"uniform": {"count": 12}}},
        transform="rotate", loss="rei", batch=2, steps=6, epoch_steps=3, warmup=2,
        tv_weight=0.004, dc_step=0.5,
    )
    run, zoo = tmp_path / "run", tmp_path / "zoo"
    train(recipe, run, device="cpu", progress=False)
    # Nothing of a CT measurement can be held out (its networks take a fixed view count).
    log = (run / "log.jsonl").read_text().splitlines()
    assert log and all("val_heldout" not in json.loads(line) for line in log)
    (run / "summary.json").write_text(json.dumps({"tv_weight": 0.004, "dc_step": 0.5}))
    net = build_network(recipe, "ct")
    load_weights(net, run / "weights.npz")
    assert net.log_dc is not None and float(net.log_dc.detach().exp()) != 0.5  # trained
    net.eval()
    _graph_matches_network(export_learned(recipe, run, zoo), recipe, net)
    architecture = Zoo.load(zoo).cards["tiny-ct-ei"].raw["network"]["architecture"]
    assert "then data consistency (x + α A†(y - A x), learned α " in architecture
    # From the command line: the stage needs the TV step before it.
    from models.train.__main__ import main

    with pytest.raises(SystemExit):
        main(["mri-sup", "--dc-step", "0.5", "--steps", "1", "--runs", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "ct", "shape": [48, 48], "angles": {"uniform": {"count": 20}}},
        {"type": "mri", "shape": [48, 48],
         "mask": {"cartesian": {"acceleration": 4, "center_fraction": 0.08, "seed": 1}}},
        {"type": "inpainting", "shape": [48, 48], "mask": {"random": {"keep": 0.5, "seed": 2}}},
    ],
    ids=lambda spec: spec["type"],
)
def test_the_teachers_tv_runs_in_torch_and_is_the_services_tv(spec: dict) -> None:
    """The teacher computes its targets with the service's TV loop on the torch functions
    the graphs were exported from (CT through a sparse CSR matrix): the same images as the
    service's onnxruntime graphs give, to float error."""
    from models.data.sources import batch, make_source
    from models.train import teacher
    from service.engine import Engine

    physics = physics_for(spec)
    x = batch(make_source("ellipses", 48, "val"), range(3))
    clean = physics.A(x)
    sigma = 0.02 * float(clean.abs().max())
    y = clean + sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    want = teacher.service_tv(physics, y.numpy(), sigma, Engine(Zoo.load(ZOO), "cpu"))
    got = teacher.service_tv(physics, y.numpy(), sigma)
    # A reconstruction of x (not, say, zeros), and the service's to float error.
    assert float(np.abs(got - x.numpy()).mean()) < 0.5 * float(np.abs(x.numpy()).mean())
    np.testing.assert_allclose(got, want, atol=1e-4 * float(np.abs(want).max()))


def test_the_tv_teacher_fits_the_services_tv_and_an_ei_run_resumes_from_it(
    tmp_path: Path,
) -> None:
    from models.train import teacher
    from service.engine import Engine

    run = tmp_path / "run"
    recipe = replace(TINY, loss="tv-teacher", steps=30, teacher_batches=3)

    def misfit(net: torch.nn.Module, cached: teacher.TeacherSet) -> float:
        with torch.no_grad():
            errors = []
            for y, target, spec in zip(cached.y, cached.target, cached.specs, strict=True):
                physics = physics_for(spec)
                inv_norm = torch.full((len(y),), 1 / physics.compiled.norm)
                out = net(y, physics.params(len(y)), inv_norm)
                errors.append(float(((out - target) ** 2).mean()))
        return float(np.mean(errors))

    torch.manual_seed(0)
    untrained = build_network(recipe, "inpainting")
    train(recipe, run, device="cpu", progress=False)
    with np.load(run / "teacher.npz", allow_pickle=False) as data:
        # Measurements, targets and operators: no clean image is kept.
        assert sorted({k.split("/")[0] for k in data.files}) == ["specs", "target", "y"]
    messages: list[str] = []
    cached = teacher.teacher_set(lambda: iter(()), run / "teacher.npz", 3, messages.append)
    assert len(cached) == 3 and "from" in messages[0]
    # Each target is the service's own TV reconstruction of its measurement...
    engine = Engine(Zoo.load(ZOO), "cpu")
    for y, target, spec in zip(cached.y, cached.target, cached.specs, strict=True):
        again = teacher.service_tv(physics_for(spec), y.numpy(), TINY.sigma, engine)
        np.testing.assert_allclose(target.numpy(), again, atol=1e-5)
    # ... with a different mask per batch, as the recipe varies its mask,
    assert len({json.dumps(s, sort_keys=True) for s in cached.specs}) == 3
    # ... and the network learned to reproduce them.
    trained = build_network(recipe, "inpainting")
    load_weights(trained, run / "weights.npz")
    assert misfit(trained, cached) < 0.5 * misfit(untrained, cached)

    # An EI run continues from the teacher's weights.
    assert train(replace(TINY, steps=34), run, device="cpu", resume=True, progress=False)[
        "step"
    ] == 34


def test_init_starts_a_new_run_from_other_weights_with_a_fresh_optimiser(tmp_path: Path) -> None:
    from models.train.loop import _save

    first = tmp_path / "first"
    train(replace(TINY, steps=6), first, device="cpu", progress=False)
    # --init: the weights, and neither the step nor the Adam moments of the first run.
    torch.manual_seed(0)
    summary = train(replace(TINY, steps=4), tmp_path / "init", device="cpu", progress=False,
                    init=first / "weights.npz")
    assert summary["step"] == 4
    # The same as resuming a checkpoint that holds those weights at step 0 and no moments.
    seeded = tmp_path / "seeded"
    seeded.mkdir()
    net = build_network(TINY, "inpainting")
    load_weights(net, first / "weights.npz")
    _save(seeded / "checkpoint.npz", net, torch.optim.Adam(net.parameters()), 0)
    torch.manual_seed(0)
    train(replace(TINY, steps=4), seeded, device="cpu", progress=False, resume=True)
    _assert_same_network(tmp_path / "init" / "weights.npz", seeded / "weights.npz")
    try:
        train(TINY, first, device="cpu", progress=False, resume=True, init=first / "weights.npz")
    except ValueError as error:
        assert "init" in str(error)
    else:
        raise AssertionError("took --init and --resume together")


def test_a_recipe_with_a_teacher_trains_the_whole_chain_in_one_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from models.train.__main__ import main

    name = "tiny-taught"
    taught = replace(TINY, name=name, loss="rei", teacher_steps=6, teacher_batch=4,
                     teacher_lr=5e-3, teacher_batches=2)
    monkeypatch.setitem(RECIPES, name, taught)
    main([name, "--device", "cpu", "--steps", "4", "--runs", str(tmp_path / "one")])
    run = tmp_path / "one" / name
    first = json.loads((run / "teacher" / "summary.json").read_text())
    assert (first["loss_kind"], first["step"], first["batch"]) == ("tv-teacher", 6, 4)
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["loss_kind"], summary["step"], summary["teacher_steps"]) == ("rei", 4, 6)
    # One command reproduces it: the teacher is the recipe's, not a flag.
    assert summary["command"] == f"python -m models.train {name} --device cpu --steps 4"
    assert f"started {name} from {run / 'teacher' / 'weights.npz'}" in capsys.readouterr().out

    # The same as the two commands it replaces: the teacher run, then --init from it.
    two = tmp_path / "two"
    # (--loss tv-teacher takes the recipe's teacher batch and learning rate)
    main([name, "--device", "cpu", "--loss", "tv-teacher", "--steps", "6",
          "--runs", str(two / "teach")])
    main([name, "--device", "cpu", "--steps", "4", "--runs", str(two),
          "--init", str(two / "teach" / name / "weights.npz")])
    assert json.loads((two / name / "summary.json").read_text())["teacher_steps"] == 6
    _assert_same_network(run / "weights.npz", two / name / "weights.npz")

    # --teacher-steps 0 starts at the pseudo-inverse, and says so in its command.
    main([name, "--device", "cpu", "--steps", "4", "--teacher-steps", "0",
          "--runs", str(tmp_path / "none")])
    plain = json.loads((tmp_path / "none" / name / "summary.json").read_text())
    assert not (tmp_path / "none" / name / "teacher").exists()
    assert "teacher_steps" not in plain and plain["command"].endswith("--teacher-steps 0")


def test_bf16_blocks_train_in_bfloat16_and_validate_and_export_in_float32(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from models.nets.blocks import CNNBlock
    from models.train.__main__ import main
    from models.train.loop import set_precision

    physics = physics_for(operator_spec(TINY, 32, 0))
    y = physics(torch.rand(2, 32, 32), 0.01, torch.Generator().manual_seed(0))
    params, inv_norm = physics.params(2, sparse=True), torch.ones(2)
    plain = build_network(TINY, "inpainting")
    fast = build_network(TINY, "inpainting")
    fast.load_state_dict(plain.state_dict())
    set_precision(fast, "bf16")
    assert all(p.dtype == torch.float32 for p in fast.parameters())
    # Training: the blocks' convolutions round to bfloat16 (8 bits of mantissa) ...
    with torch.no_grad():
        train_plain, train_fast = plain(y, params, inv_norm), fast(y, params, inv_norm)
    assert train_fast.dtype == torch.float32
    assert 1e-5 < float((train_fast - train_plain).norm() / train_plain.norm()) < 1e-2
    # ... the way autocast rounds them (the residual sum x + f(x) stays float32).
    block = fast.blocks[0]
    assert isinstance(block, CNNBlock)
    x = torch.rand(2, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = x + block.net(x.unsqueeze(1)).squeeze(1).float()
    torch.testing.assert_close(fast._denoise(block, x), want)
    # Eval (validation, export, the served graph): float32, as if never set.
    plain.eval()
    fast.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast(y, params, inv_norm), plain(y, params, inv_norm),
                                   rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="fp32 or bf16"):
        set_precision(plain, "fp16")

    # Through the trainer: the recipe's EI loss falls as in float32, the command records it.
    run = tmp_path / TINY.name
    torch.manual_seed(0)  # train()'s initial weights
    before = _ei_on_fixed_batch(build_network(TINY, "inpainting"))
    summary = train(replace(TINY, precision="bf16"), run, device="cpu", progress=False)
    trained = build_network(TINY, "inpainting")
    load_weights(trained, run / "weights.npz")
    assert _ei_on_fixed_batch(trained) < before
    assert np.isfinite(summary["val_psnr_db"])
    name = "tiny-bf16"
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(RECIPES, name, replace(TINY, name=name))
        main([name, "--device", "cpu", "--steps", "2", "--precision", "bf16",
              "--runs", str(tmp_path)])
    recorded = json.loads((tmp_path / name / "summary.json").read_text())
    assert recorded["precision"] == "bf16"
    assert recorded["command"].endswith("--steps 2 --precision bf16")
    capsys.readouterr()


def test_a_compiled_loss_computes_the_same_loss_and_the_trainer_runs_it(tmp_path: Path) -> None:
    from models.data.sources import batch, make_source
    from models.train import loop

    # torch.compile changes how the loss runs, not what it computes: the same value and
    # gradient from the same weights, batch and noise draws (float32: to rounding).
    recipe = replace(TINY, loss="rei", ei_noise=True, tv_weight=0.01, stages=1, precision="fp32")
    physics = physics_for(operator_spec(recipe, 32, 0))
    x = batch(make_source("natural", 32, "val"), range(4))
    net = build_network(recipe, "inpainting")
    results = []
    for model in (net, torch.compile(net)):
        net.zero_grad(set_to_none=True)
        gen = torch.Generator().manual_seed(3)
        loss = loop._loss(recipe, model, physics, x, 0.01, gen, torch.device("cpu"))
        loss.backward()
        results.append((loss.detach(), torch.cat([p.grad.flatten() for p in net.parameters()])))
    (eager_loss, eager_grad), (compiled_loss, compiled_grad) = results
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=0.0)
    assert float((compiled_grad - eager_grad).norm() / eager_grad.norm()) < 1e-4

    # The trainer compiles what the loss runs, and saves the network's own weights.
    compiled_modules = []

    def spy(module: torch.nn.Module) -> object:
        compiled_modules.append(module)
        return real_compile(module)

    real_compile = torch.compile
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "compile", spy)
        summary = train(replace(recipe, compile=True, steps=3, epoch_steps=3),
                        tmp_path / "run", device="cpu", progress=False)
    assert len(compiled_modules) == 1 and isinstance(compiled_modules[0], type(net))
    trained = build_network(recipe, "inpainting")
    load_weights(trained, tmp_path / "run" / "weights.npz")  # strict: the plain names
    assert summary["step"] == 3 and np.isfinite(summary["val_psnr_db"])


def test_a_time_budget_is_spent_at_the_speed_after_the_first_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from models.train import loop

    # A clock that the loss moves: the first step takes 60 s (compiling), each later one
    # 0.5 s. TINY warms up over 4 steps and is timed over the last 2 of them.
    clock = SimpleNamespace(now=0.0)
    real_loss = loop._loss

    def timed_loss(*args: object, **kwargs: object) -> torch.Tensor:
        clock.now += 60.0 if clock.now == 0.0 else 0.5
        return real_loss(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "_loss", timed_loss)
    monkeypatch.setattr(loop, "time", SimpleNamespace(perf_counter=lambda: clock.now))
    summary = train(TINY, tmp_path / "run", device="cpu", progress=False, time_budget=100)
    # After 4 steps (61.5 s) the run has 0.95 x 100 - 61.5 = 33.5 s left at 0.5 s a step: 67
    # more. Timed from the start, the 60 s would have made it 4 x 33.5 / 61.5 = 2 more.
    assert TINY.warmup == 4 and summary["step"] == 4 + 67
