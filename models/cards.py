"""Model cards of the model-based reconstructions (``adjoint``, ``pinv``, ``tv``).

A card is the JSON the service serves at ``/v1/models/{id}``: what the model
is, which operator families and shapes it accepts, which graph serves each
family, its defaults and its measured quality (``metrics``, filled by
``bench/quality.py`` and kept when cards are rewritten).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from models.physics.operators import OPERATORS

__all__ = ["FAMILY_KERNELS", "write_cards"]

#: operator family -> graph kernels serving it.
FAMILY_KERNELS: dict[str, list[str]] = {
    "denoising": ["denoising"],
    "inpainting": ["inpainting"],
    "blur": ["blur"],
    "superresolution": ["superresolution"],
    "compressed_sensing": ["cs_dense", "cs_structured"],
    "mri": ["mri"],
    "mri_multicoil": ["mri_multicoil"],
    "ct": ["ct"],
}

_CARDS: dict[str, dict[str, Any]] = {
    "adjoint": {
        "kind": "adjoint",
        "title": "Adjoint (back-projection)",
        "description": "x = Aᵀ y. Cheap and always defined; not scaled to the image range, "
        "so it is a baseline, not a reconstruction to read values from.",
        "role": "adjoint",
    },
    "pinv": {
        "kind": "pinv",
        "title": "Pseudo-inverse",
        "description": "x = A† y: closed form for denoising, inpainting, super-resolution, "
        "structured compressed sensing and single-coil MRI (zero-filled, real part); "
        "truncated-SVD inverse filter for blur (cut-off 1e-3 of the peak gain); filtered "
        "back-projection (Ram-Lak) for CT; 30 conjugate-gradient steps for dense compressed "
        "sensing and multi-coil MRI.",
        "role": "pinv",
    },
    "tv": {
        "kind": "tv",
        "title": "Total variation (PDHG)",
        "description": "argmin_{x >= 0} 1/(2‖A‖²) ‖Ax - y‖² + λ TV(x), isotropic TV, solved by "
        "the primal-dual hybrid gradient method in blocks of 10 iterations until the "
        "relative change drops below tol. λ defaults to a calibrated multiple of the noise "
        "level (see options).",
        "role": "tv",
        "options": {"lambda": None, "max_iter": 300, "tol": 1e-4, "nonneg": True},
    },
}


def write_cards(zoo: Path) -> None:
    """Write ``cards/{id}.json`` for the model-based reconstructions."""
    cards = zoo / "cards"
    cards.mkdir(parents=True, exist_ok=True)
    for model_id, base in _CARDS.items():
        path = cards / f"{model_id}.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        role = base["role"]
        card = {
            "id": model_id,
            "kind": base["kind"],
            "title": base["title"],
            "description": base["description"],
            "families": list(FAMILY_KERNELS),
            "constraints": {"shape": None, "note": "any image shape the operator accepts"},
            "group": None,
            "graphs": {k: f"graphs/{k}.{role}.onnx" for k in OPERATORS},
            "options": base.get("options", {}),
            "metrics": old.get("metrics", {}),
        }
        path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
