"""How well a rotation of the pixel grid keeps an image in its set (what EI relies on).

EI trains on ``T_g x̂`` as if it were another image of the set; for the group
``rotate`` that holds only if (a) turning a raster does not blur it and (b) the
turned raster of an image is the raster of the turned image. For random ellipse
phantoms (point-sampled, ``psf=0``, and through the PSF the CT recipes train on,
``models.data.sources.PHANTOM_PSF_PX``) and for brain slices, this prints:

* round trip: PSNR of ``T_{-θ} T_θ x`` against ``x`` (a), bilinear interpolation
  against the three-shear rotation of ``models.losses.equivariant.rotation``;
* turned raster: PSNR of ``T_θ x`` against the raster of the turned phantom (b).

    python -m bench.rotation_fidelity [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.common import fmt, md_table, results_dir, write_results
from bench.problems import psnr
from models.data.sources import PHANTOM_PSF_PX, ellipse_phantom, make_source
from models.losses.equivariant import rotation

ANGLES = (0.3, -1.0, 2.5, 4.4)
SIZE = 128


def bilinear(angle: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """Rotation by ``angle`` in the sense of ``rotation`` (grid_sample, zeros outside)."""

    def apply(x: torch.Tensor) -> torch.Tensor:
        c, s = math.cos(angle), math.sin(angle)
        theta = x.new_tensor([[c, s, 0.0], [-s, c, 0.0]])[None].expand(x.shape[0], 2, 3)
        grid = F.affine_grid(theta, [x.shape[0], 1, *x.shape[-2:]], align_corners=False)
        return F.grid_sample(x[:, None], grid, mode="bilinear", align_corners=False)[:, 0]

    return apply


def measure(images: int) -> dict[str, Any]:
    rows: dict[str, dict[str, float]] = {}
    sets: dict[str, list[tuple[torch.Tensor, Any]]] = {
        "ellipses, point-sampled": [
            (torch.from_numpy(ellipse_phantom(SIZE, s, psf=0.0)).double()[None], (s, 0.0))
            for s in range(images)
        ],
        f"ellipses, PSF {PHANTOM_PSF_PX} px": [
            (torch.from_numpy(ellipse_phantom(SIZE, s)).double()[None], (s, PHANTOM_PSF_PX))
            for s in range(images)
        ],
    }
    brain = make_source("brain", SIZE, "val")
    sets["brain slices"] = [
        (torch.from_numpy(brain[i]).double()[None], None) for i in range(min(images, len(brain)))
    ]
    for name, items in sets.items():
        result: dict[str, list[float]] = {"bilinear": [], "shears": [], "bilinear_turned": [],
                                          "shears_turned": []}
        for x, phantom in items:
            for angle in ANGLES:
                for label, turn in (("bilinear", bilinear), ("shears", rotation)):
                    result[label].append(psnr(turn(-angle)(turn(angle)(x)).numpy(), x.numpy()))
                    if phantom is not None:
                        seed, psf = phantom
                        turned = ellipse_phantom(SIZE, seed, angle, psf=psf)
                        result[f"{label}_turned"].append(psnr(turn(angle)(x)[0].numpy(), turned))
        rows[name] = {k: round(float(np.mean(v)), 2) for k, v in result.items() if v}
    return {"images": images, "angles": list(ANGLES), "size": SIZE, "psnr_db": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.rotation_fidelity")
    parser.add_argument("--quick", action="store_true", help="2 images instead of 8")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    result = measure(2 if args.quick else 8)
    table = md_table(
        ["images", "round trip, bilinear", "round trip, shears", "turned raster, bilinear",
         "turned raster, shears"],
        [
            [name, fmt(r["bilinear"]), fmt(r["shears"]), fmt(r.get("bilinear_turned")),
             fmt(r.get("shears_turned"))]
            for name, r in result["psnr_db"].items()
        ],
    )
    print(table)
    write_results(results_dir(args.out, args.quick), "rotation_fidelity", result,
                  "# Rotation fidelity (PSNR dB, 128x128)\n\n" + table)
    return result


if __name__ == "__main__":
    main()
