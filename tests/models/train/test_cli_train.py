"""``equirecon train`` and ``equirecon export``: the build-time commands behind the CLI."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest

from models.train import loop
from models.train.loop import learning_rate_factor
from models.train.recipes import RECIPES
from service.cli import main
from service.zoo import Zoo


def test_equirecon_trains_a_recipe_and_exports_it_to_a_zoo(tmp_path: Path) -> None:
    runs, zoo = tmp_path / "runs", tmp_path / "zoo"
    # Without the TV step, whose 20 unrolled iterations (x8 averaged) take minutes to
    # export: its export is tested on a tiny network (tests/models/train/test_train.py).
    argv = ["inpainting-ei", "--device", "cpu", "--batch", "2", "--loss", "rei", "--lr", "0.001",
            "--moi", "0.5", "--heldout", "0.5", "--tv-weight", "0.0", "--ei-noise", "--ei-detach",
            "--steps", "2",
            "--teacher-steps", "0", "--precision", "fp32", "--no-compile"]
    assert main(["train", *argv, "--runs", str(runs)]) == 0
    summary = json.loads((runs / "inpainting-ei" / "summary.json").read_text())
    assert summary["step"] == 2
    warmup = RECIPES["inpainting-ei"].warmup
    assert summary["lr"] == pytest.approx(0.001 * learning_rate_factor(2, warmup, 2))  # --lr
    assert summary["command"] == "python -m models.train " + " ".join(argv)
    run = str(runs / "inpainting-ei")
    assert main(["export", "inpainting-ei", "--run", run, "--zoo", str(zoo)]) == 0
    assert main(["export", "inpainting-ei", "--run", run, "--zoo", str(zoo), "--average"]) == 0
    cards = Zoo.load(zoo).cards
    assert set(cards) == {"inpainting-ei", "inpainting-ei-avg"}
    training = cards["inpainting-ei"].raw["training"]
    assert training["steps"] == 2
    # the --loss, --moi and --heldout overrides
    assert training["loss"] == ("SURE + 1.0 x EI (shifts+D4, noisy re-measurement, no gradient "
                                "through the target) + 0.5 x multi-operator (fresh masks) + 0.5 "
                                "x held-out measurements (a fifth of each, predicted from the "
                                "rest)")


def test_a_chain_started_by_the_tv_teacher_says_so_on_its_card(tmp_path: Path) -> None:
    runs, zoo = tmp_path / "runs", tmp_path / "zoo"
    common = ["ct-ei", "--device", "cpu", "--batch", "1", "--precision", "fp32", "--runs",
              str(runs)]
    teach = ["--loss", "tv-teacher", "--steps", "2", "--teacher-batches", "2"]
    assert main(["train", *common, *teach]) == 0
    run = runs / "ct-ei"
    # --teacher-batches: two batches of TV targets (not the recipe's 32), and the command says so
    with np.load(run / "teacher.npz", allow_pickle=False) as data:
        assert len(json.loads(str(data["specs"]))) == 2
    taught = json.loads((run / "summary.json").read_text())
    assert taught["command"].endswith("--steps 2 --teacher-batches 2 --precision fp32")
    assert main(["train", *common, "--loss", "rei", "--resume", "--steps", "3"]) == 0
    resumed = json.loads((run / "summary.json").read_text())
    assert (resumed["step"], resumed["loss_kind"], resumed["teacher_steps"]) == (3, "rei", 2)
    # --init, the way to leave the teacher (a fresh optimiser), remembers it too.
    weights = str(run / "weights.npz")
    ei_runs = tmp_path / "ei"
    argv = ["ct-ei", "--device", "cpu", "--batch", "1", "--loss", "rei", "--init", weights,
            "--steps", "1", "--precision", "fp32"]
    assert main(["train", *argv, "--runs", str(ei_runs)]) == 0
    summary = json.loads((ei_runs / "ct-ei" / "summary.json").read_text())
    assert (summary["step"], summary["teacher_steps"]) == (1, 2)
    # Its record covers the chain: both commands and both times; the teacher's steps are
    # counted apart.
    assert summary["command"] == f"{resumed['command']} && python -m models.train " + " ".join(argv)
    assert summary["train_seconds"] > resumed["train_seconds"]
    assert summary["chain_steps"] == 3 + 1
    # A further link adds its steps; its card counts them all.
    more = ["ct-ei", "--device", "cpu", "--batch", "1", "--loss", "rei", "--steps", "2",
            "--precision", "fp32", "--init", str(ei_runs / "ct-ei" / "weights.npz")]
    assert main(["train", *more, "--runs", str(tmp_path / "more")]) == 0
    chained = json.loads((tmp_path / "more" / "ct-ei" / "summary.json").read_text())
    assert chained["chain_steps"] == 3 + 1 + 2 and chained["command"].count(" && ") == 2
    assert main(["export", "ct-ei", "--run", str(tmp_path / "more" / "ct-ei"),
                 "--zoo", str(zoo)]) == 0
    training = Zoo.load(zoo).cards["ct-ei"].raw["training"]
    assert training["steps"] == 3 + 1 + 2
    assert training["loss"] == (
        "SURE + 1.0 x EI (rotate, noisy re-measurement); started by 2 steps reproducing the "
        "service's TV reconstruction of each measurement (models.train.teacher, no ground truth)"
    )
    assert training["ground_truth_used"] is False


def test_a_bfloat16_recipe_trains_in_float32_where_bfloat16_would_be_emulated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """inpainting-sup trains its blocks in bfloat16: where the device has no native
    bfloat16 it trains in float32 instead, and its recorded command says so; asked for
    by --precision, bfloat16 it is."""
    assert RECIPES["inpainting-sup"].precision == "bf16"
    argv = ["inpainting-sup", "--device", "cpu", "--batch", "1", "--steps", "1",
            "--no-compile"]

    def trained(native: bool, *flags: str) -> dict:
        monkeypatch.setattr(loop, "native_bf16", lambda device: native)
        runs = tmp_path / f"{native}{len(flags)}"
        assert main(["train", *argv, *flags, "--runs", str(runs)]) == 0
        return json.loads((runs / "inpainting-sup" / "summary.json").read_text())

    emulated = trained(False)
    assert emulated["precision"] == "fp32"
    assert emulated["command"] == "python -m models.train " + " ".join(
        [*argv[:-1], "--precision", "fp32", "--no-compile"]
    )
    assert "no native bfloat16 on this cpu" in capsys.readouterr().err
    insisted = trained(False, "--precision", "bf16")
    assert insisted["precision"] == "bf16" and "--precision bf16" in insisted["command"]
    native = trained(True)
    assert native["precision"] == "bf16" and "--precision" not in native["command"]
    assert "no native bfloat16" not in capsys.readouterr().err


def test_init_and_resume_exclude_each_other(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "weights.npz"
    weights.write_bytes(b"")
    with pytest.raises(SystemExit):
        main(["train", "ct-ei", "--resume", "--init", str(weights)])
    assert "--init starts a new run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "ct-ei", "--init", str(tmp_path / "missing.npz")])
    assert "no such weights file" in capsys.readouterr().err


def test_an_unknown_recipe_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "no-such-recipe"])
    assert info.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_the_learning_rate_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "ct-sup", "--lr", "0"])
    assert "--lr must be positive" in capsys.readouterr().err


def test_the_r2r_strength_is_positive_and_for_the_r2r_loss(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in (["ct-sup", "--r2r-alpha", "0.3"], ["ct-ei", "--r2r-alpha", "0"],
                 ["ct-ei", "--loss", "rei", "--r2r-alpha", "0.3"]):
        with pytest.raises(SystemExit) as info:
            main(["train", *argv])
        assert info.value.code == 2
        assert "--r2r-alpha is a positive strength for the r2r loss" in capsys.readouterr().err


def test_the_tv_weight_is_recorded_for_the_export_and_the_command(tmp_path: Path) -> None:
    # --no-compile: a one-step run is not worth compiling the recipe's loss for (~1.5 min)
    argv = ["inpainting-sup", "--device", "cpu", "--batch", "1", "--tv-weight", "0.02",
            "--steps", "1", "--precision", "fp32", "--no-compile"]
    assert main(["train", *argv, "--runs", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "inpainting-sup" / "summary.json").read_text())
    assert summary["tv_weight"] == 0.02  # export_learned builds the network from it
    assert summary["command"] == "python -m models.train " + " ".join(argv)


@pytest.mark.parametrize("flag", ["--ei-noise", "--ei-detach", "--no-ei-detach"])
def test_the_ei_term_flags_are_for_ei_recipes(
    flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "inpainting-sup", flag])
    assert info.value.code == 2 and f"{flag} applies to EI recipes" in capsys.readouterr().err


def test_a_recipe_s_ei_term_flags_can_be_turned_off_and_the_command_says_so(
    tmp_path: Path,
) -> None:
    """mri-ei detaches its EI target and re-measures with noise; --no-ei-detach and
    --no-ei-noise give the attached, noiseless term of the EI paper, as its card records."""
    recipe = RECIPES["mri-ei"]
    assert recipe.ei_detach and recipe.ei_noise
    argv = ["mri-ei", "--device", "cpu", "--batch", "1", "--no-ei-noise", "--no-ei-detach",
            "--steps", "1", "--teacher-steps", "0", "--precision", "fp32", "--no-compile"]
    assert main(["train", *argv, "--runs", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "mri-ei" / "summary.json").read_text())
    assert not summary["ei_detach"] and not summary["ei_noise"]
    assert summary["command"] == "python -m models.train " + " ".join(argv)


def test_the_heldout_term_is_for_ei_recipes_of_masked_families(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv, why in [
        (["inpainting-sup", "--heldout", "1"], "--heldout applies to EI recipes"),
        (["ct-ei", "--heldout", "1"], "--heldout needs a masked family"),
        (["mri-ei", "--heldout", "-1"], "--heldout is a weight"),
    ]:
        with pytest.raises(SystemExit) as info:
            main(["train", *argv])
        assert info.value.code == 2 and why in capsys.readouterr().err


def test_the_crop_is_for_pixel_wise_operators_and_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "ct-ei", "--crop", "64"])
    assert info.value.code == 2 and "--crop applies to pixel-wise" in capsys.readouterr().err
    argv = ["inpainting-sup", "--device", "cpu", "--batch", "1", "--crop", "32", "--steps", "1",
            "--precision", "fp32", "--no-compile"]
    assert main(["train", *argv, "--runs", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "inpainting-sup" / "summary.json").read_text())
    assert summary["crop"] == 32
    assert summary["command"] == "python -m models.train " + " ".join(argv)


def test_the_tv_weight_is_not_negative(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "inpainting-sup", "--tv-weight", "-0.1"])
    assert "--tv-weight is a weight" in capsys.readouterr().err


def test_the_loss_override_is_for_ei_recipes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "ct-sup", "--loss", "rei"])
    assert info.value.code == 2 and "applies to EI recipes" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ct-sup", "--teacher-batches", "4"], "applies to EI recipes and their TV teacher"),
        (["ct-ei", "--teacher-batches", "0"], "--teacher-batches must be >= 1"),
    ],
)
def test_teacher_batches_are_for_ei_recipes_and_at_least_one(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", *argv])
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_the_multi_operator_term_needs_a_recipe_that_varies_its_operator(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "ct-ei", "--moi", "1"])  # CT serves one fixed view set
    assert info.value.code == 2 and "varies its operator" in capsys.readouterr().err


def test_without_the_build_extra_the_command_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_torch(name: str) -> None:
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr(importlib, "import_module", no_torch)
    assert main(["export", "ct-ei"]) == 2
    assert "pip install -e '.[build]'" in capsys.readouterr().err
