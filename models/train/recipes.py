"""Training recipes: one per shipped learned model (its id is the recipe name).

A recipe fixes the operator family and its served parameters, the data, the
noise, the loss and the network. ``vary`` names the generator seed redrawn
every step, so a model trained on many masks serves any mask of its family
(the card's constraints say what stays fixed: image shape, number of views).

Ground truth is used only by ``loss="sup"`` recipes and by validation PSNR,
never by the EI/REI losses.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from models.losses.consistency import R2R_ALPHA

__all__ = ["EI_LOSSES", "PIXELWISE_FAMILIES", "RECIPES", "Recipe"]

#: The losses with an EI term: a data term (MC, SURE, R2R) + α EI.
EI_LOSSES = ("ei", "rei", "r2r")

SIZE = 128
#: Families whose operator acts pixel by pixel: on a crop it is the same operator on a
#: smaller image, so their recipes may train on crops (``Recipe.crop``). CT's and MRI's
#: operators couple every pixel: a crop would be another operator.
PIXELWISE_FAMILIES = ("inpainting", "denoising")


@dataclass(frozen=True)
class Recipe:
    name: str
    family: str
    operator: dict[str, Any]
    data: str  # models.data source: "ellipses" | "brain" | "natural"
    # "ei" (MC + α EI), "rei" (SURE + α EI), "r2r" (recorrupted-to-recorrupted + α EI:
    # unbiased like SURE, one network pass fewer; models.losses.consistency), "mc", "sup",
    # "sure", "tv-teacher" (reproduce the service's TV reconstruction of y: a warm start,
    # models.train.teacher)
    loss: str
    sigma: float | tuple[float, float]  # noise std, or a range drawn per sample
    transform: str | None = None  # EI group (models.losses.equivariant)
    vary: str | None = None  # spec path of a seed redrawn every step, e.g. "mask.random.seed"
    alpha: float = 1.0
    # R2R's recorruption strength (loss "r2r"; models.losses.consistency.recorrupt): the
    # network sees y + r2r_alpha w and answers for y - w / r2r_alpha, w ~ N(0, σ²).
    r2r_alpha: float = R2R_ALPHA
    # Re-measure T x̂ with the data's noise in the EI term (models.losses.ei_loss).
    ei_noise: bool = False
    # Stop the gradient through the EI term's target T x̂ (models.losses.ei_loss ``detach``).
    ei_detach: bool = False
    # Weight of the multi-operator term (models.losses.moi_loss): x̂ re-measured through a
    # freshly drawn operator of the family (a new ``vary`` seed) must come back. 0: off.
    moi: float = 0.0
    # Weight of the held-out measurement term (models.losses.heldout; masked families): a
    # fifth of what y measured is held out, the network reconstructs y from the rest and
    # is charged its error on the held-out part against y itself. 0: off.
    heldout: float = 0.0
    block: str = "cnn"  # "cnn" | "p4m"
    # Starting weight of the network's final learned TV proximal step (models.nets.unrolled);
    # 0: none.
    tv_weight: float = 0.0
    # Starting step α of a data-consistency stage after the TV step (models.nets.unrolled:
    # x + α A†(y - A x), for CT a filtered-back-projection correction, then a second learned
    # TV step); 0: none. Needs tv_weight.
    dc_step: float = 0.0
    # Steps of the TV teacher (models.train.teacher: reproduce the service's TV
    # reconstruction, no ground truth) that start a run from scratch, at their own batch and
    # peak learning rate; the recipe's loss then continues from the teacher's weights with a
    # fresh optimiser (models.train.__main__). 0: the run starts at the pseudo-inverse.
    teacher_steps: int = 0
    teacher_batch: int = 8
    teacher_lr: float = 2e-3
    # Batches of TV targets the teacher computes once and revisits. (Through onnxruntime
    # CT's TV took ~1 s an image on 2 CPU cores, so ct-ei took 64; the teacher now runs it
    # in torch on a sparse CSR matrix, 11x faster: python -m bench.teacher_tv.)
    teacher_batches: int = 128
    # "bf16": the blocks' convolutions run in bfloat16 while training (autocast, channels-last
    # weights; models.nets.unrolled), the rest in float32; what is exported and validated is
    # float32 either way. An MRI robust-EI step on 2 AMX-capable CPU cores: 1.07 -> 0.45 s
    # (python -m bench.training_step).
    precision: str = "fp32"
    # True: the loss runs the network through ``torch.compile`` while training, which fuses
    # the final TV step's 20 PDHG iterations (~30 small ops each) and the blocks' pointwise
    # work; the same function, ~1.5 min of compiling first. A bfloat16 step on 2 CPU cores:
    # inpainting-ei 0.47 -> 0.25 s, mri-ei 0.75 -> 0.49, ct-ei 0.92 -> 0.84 (its sparse
    # products stay outside: not worth the compile) (docs/training-log.md "Inpainting: a
    # compiled loss"; python -m bench.training_step).
    compile: bool = False
    # 5 stages of 32-channel, 5-layer blocks: 142k weights (MRI; CT and inpainting widen
    # them to 48 channels, 316k): a CT image with the served D4 score (8 passes) takes
    # ~0.7 s on 2 CPU cores with 48 (python -m bench.serving), under a second.
    stages: int = 5
    block_args: dict[str, Any] = field(default_factory=lambda: {"channels": 32, "depth": 5})
    crop: int = SIZE  # training image size (pixel-wise operators train on smaller crops)
    batch: int = 4
    steps: int = 600
    lr: float = 2e-3
    warmup: int = 100  # linear learning-rate warm-up steps (models.train.loop)
    epoch_steps: int = 200
    constraints: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def teacher(self) -> Recipe:
        """This recipe's TV teacher run: its loss, batch and peak learning rate."""
        return replace(self, loss="tv-teacher", batch=self.teacher_batch, lr=self.teacher_lr)


_CT = {"type": "ct", "shape": [SIZE, SIZE], "angles": {"uniform": {"count": 50}}}
_MRI = {
    "type": "mri",
    "shape": [SIZE, SIZE],
    "mask": {"cartesian": {"acceleration": 4, "center_fraction": 0.08, "seed": 0}},
}
_INPAINT = {
    "type": "inpainting",
    "shape": [SIZE, SIZE],
    "mask": {"random": {"keep": 0.5, "seed": 0}},
}

_CT_ARGS: dict[str, Any] = {
    "family": "ct",
    "operator": _CT,
    "data": "ellipses",
    "sigma": 0.1,
    "constraints": {"shape": [SIZE, SIZE], "measurement_shape": [50, SIZE]},
    # 48-channel blocks (316k weights): in the same 30 minutes on 2 CPU cores robust EI
    # reaches 46.95 dB where 32 channels gave 46.40, though it fits 876 EI steps, not 1448
    # (docs/training-log.md "CT: 48-channel blocks, a quarter of the TV targets"); the
    # baselines keep the same network.
    "block_args": {"channels": 48, "depth": 5},
}
_MRI_ARGS: dict[str, Any] = {
    "family": "mri",
    "operator": _MRI,
    "data": "brain",
    "sigma": 0.01,
    "vary": "mask.cartesian.seed",
    "constraints": {"shape": [SIZE, SIZE]},
}
_INPAINT_ARGS: dict[str, Any] = {
    "family": "inpainting",
    "operator": _INPAINT,
    "data": "natural",
    "sigma": 0.01,
    "vary": "mask.random.seed",
    "crop": 64,
    "batch": 8,
    # The networks end with a learned TV step started at the service's automatic λ for
    # denoising at this σ (κ = 1, service.engine.LAMBDA_PER_SIGMA): small CNN blocks
    # trained on textured photos leave the noise in flat regions (docs/training-log.md,
    # "Inpainting: a final TV step"). Learned to 0.0061 by robust EI (the shipped
    # 48-channel inpainting-ei), 0.0038 supervised.
    "tv_weight": 0.01,
    # 48-channel blocks (316k weights): in the same 30 minutes on 2 CPU cores robust EI
    # reaches 36.47 dB where 32 channels plateau at 36.26-36.34 (docs/training-log.md
    # "Inpainting: 48-channel blocks"); the baselines keep the same network.
    "block_args": {"channels": 48, "depth": 5},
}

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(
            "ct-ei",
            # One command, 30 minutes on 2 CPU cores: the TV teacher (600 steps, 12 min;
            # teacher_steps, run first by models.train: 46.07 dB against 44.36 from the
            # pseudo-inverse, docs/training-log.md "CT: a TV teacher"), then R2R + EI over
            # rotations (noisy re-measurement) with the final TV step (0.004) and the
            # data-consistency stage (dc_step) from the first step, bfloat16 blocks
            # (docs/training-log.md "CT: recorrupted-to-recorrupted in place of SURE").
            # R2R is as unbiased as SURE at CT's noise with one network pass fewer: steps
            # at ~1.3 s instead of ~1.9, and better ones (48.34 dB on the trainer's 8 at
            # step 400, robust EI 48.02). It replaced a 43-minute chain of robust EI
            # (48.79 dB: 1615 steps without the stage, then 197 adding it; "CT: one
            # filtered-back-projection correction").
            loss="r2r",
            transform="rotate",
            ei_noise=True,
            lr=5e-4,
            tv_weight=0.004,
            dc_step=0.5,
            teacher_steps=600,
            teacher_batches=32,
            steps=736,
            precision="bf16",
            **_CT_ARGS,
            description="CT, 50 views: unrolled CNN ending in a learned TV step and a "
            "data-consistency stage, started by reproducing TV, then trained by R2R + EI over "
            "rotations, no GT",
        ),
        Recipe(
            "ct-mc",
            loss="mc",
            **_CT_ARGS,
            description="CT, 50 views: the same network trained by measurement "
            "consistency alone (the baseline EI improves on: it cannot learn A's null space)",
        ),
        Recipe(
            "ct-sup",
            loss="sup",
            # 30 minutes on 2 CPU cores, like ct-ei, by one command with the network's final
            # TV step and data-consistency stage from the first step: 50.41 dB on the 16
            # validation images (an AMD EPYC with AVX512-BF16), where the chain shipped before
            # (30 minutes without the stage, then 15 adding it) gave 50.06
            # (docs/training-log.md "CT: ct-sup in one command").
            tv_weight=0.004,
            dc_step=0.5,
            steps=2532,
            precision="bf16",
            **_CT_ARGS,
            description="CT, 50 views: the same network trained supervised (the reference)",
        ),
        Recipe(
            "mri-ei",
            # From scratch in one command: the TV teacher (32 batches of TV targets: 128 took
            # ~2.2 s a batch on an AMD EPYC), then measurement consistency + EI over rotations
            # off the grid (noisy re-measurement, no gradient through the target) + the
            # held-out measurement term, bfloat16 blocks, compiled, peak lr 1e-3: 30 min on 2
            # CPU cores (docs/training-log.md "MRI in one command in 30 minutes"). It replaced a
            # 107-minute chain: robust EI over D4 (26.12 dB), continued twice with the EI
            # target detached, rotations and the held-out term (28.10; "A held-out measurement
            # error"). MC, not SURE: at σ 0.01 SURE's correction is ~2.5e-5 against an error
            # of ~2e-3, and its extra network pass cost a third of the steps (30 minutes:
            # 27.56 dB against 27.19). lr 1e-3, not 5e-4: 27.95 against 27.56 dB on the 16
            # validation images from the same teacher.
            loss="ei",
            transform="rotate",
            ei_noise=True,
            ei_detach=True,
            heldout=1.0,
            lr=1e-3,
            tv_weight=0.004,
            teacher_steps=600,
            teacher_batches=32,
            steps=1713,
            precision="bf16",
            compile=True,
            **_MRI_ARGS,
            description="Single-coil MRI, 4x Cartesian: unrolled CNN ending in a learned TV "
            "step, started by reproducing TV, then trained by measurement consistency + EI over "
            "rotations (target detached) + held-out measurements, no GT",
        ),
        Recipe(
            "mri-mc",
            loss="mc",
            **_MRI_ARGS,
            description="Single-coil MRI, 4x Cartesian: the same network trained by measurement "
            "consistency alone (the baseline EI improves on: it cannot learn A's null space)",
        ),
        Recipe(
            "mri-sup",
            loss="sup",
            **_MRI_ARGS,
            description="Single-coil MRI, 4x Cartesian: the same network trained supervised",
        ),
        Recipe(
            "inpainting-ei",
            # From scratch, the TV teacher and these steps of robust EI, compiled, with
            # bfloat16 48-channel blocks, fill 29.7 min on 2 CPU cores: 36.47 dB, the shipped
            # model (docs/training-log.md "Inpainting: 48-channel blocks"). With 32-channel
            # blocks 30 minutes gave 36.26-36.34 whatever else changed: batch 32, MC + EI
            # first ("Inpainting in 30 minutes"), one EI transform per image, 128-pixel crops
            # ("Inpainting: a transform per image"), 47% more steps, averaged weights
            # ("Inpainting: a compiled loss").
            loss="rei",
            transform="shifts+D4",
            ei_noise=True,
            lr=5e-4,
            teacher_steps=600,
            steps=5832,
            precision="bf16",
            compile=True,
            **_INPAINT_ARGS,
            description="Inpainting, 50% pixels: unrolled CNN ending in a learned TV step, "
            "trained by robust EI (SURE + EI over shifts and D4), no GT",
        ),
        Recipe(
            "inpainting-mc",
            loss="mc",
            steps=1000,
            # Without the TV step: MC alone trains it into a degenerate network (0.5 dB,
            # values up to 3 in the unmeasured pixels, docs/training-log.md "Inpainting: a
            # final TV step"): the step couples the pixels, so the unmeasured ones are used
            # to fit the noise of the measured ones.
            **{**_INPAINT_ARGS, "tv_weight": 0.0},
            description="Inpainting, 50% pixels: the same network without its TV step, trained "
            "by measurement consistency alone (the baseline EI improves on: it cannot learn A's "
            "null space)",
        ),
        Recipe(
            "inpainting-sup",
            loss="sup",
            # 30 minutes on 2 CPU cores, like inpainting-ei (one network pass a step, not
            # three: 3x the steps).
            steps=18333,
            precision="bf16",
            compile=True,
            **_INPAINT_ARGS,
            description="Inpainting, 50% pixels: the same network trained supervised",
        ),
        Recipe(
            "denoising-p4m",
            family="denoising",
            operator={"type": "denoising", "shape": [SIZE, SIZE]},
            data="natural",
            loss="sure",
            sigma=(0.0, 0.2),
            block="p4m",
            stages=1,
            crop=64,
            batch=8,
            steps=600,
            block_args={"channels": 8, "depth": 4},
            description="Blind Gaussian denoiser (σ up to 0.2), D4-equivariant by design (p4m "
            "group convolutions), trained with SURE: no ground truth",
        ),
    ]
}
