"""Shipped learned models: complete cards, and the p4m denoiser is exactly D4-equivariant."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from models.export import ZOO
from service.zoo import Zoo

ZOO_CARDS = Zoo.load(ZOO).cards
LEARNED = sorted(k for k, c in ZOO_CARDS.items() if c.kind == "learned")


def test_learned_models_ship() -> None:
    assert {"inpainting-ei", "inpainting-sup", "mri-ei", "mri-sup", "denoising-p4m"} <= set(LEARNED)


@pytest.mark.parametrize("model", LEARNED)
def test_card_records_training_and_validation(model: str) -> None:
    card = ZOO_CARDS[model].raw
    training = card["training"]
    assert training["command"].startswith("python -m models.train ")
    assert training["seconds"] > 0 and training["hardware"]
    assert training["ground_truth_used"] == model.endswith("-sup")
    assert card["network"]["parameters"] > 1000
    metrics = card["metrics"]["models"]
    assert {"pinv", "tv", model} <= set(metrics)
    assert metrics[model]["psnr_db"] > metrics["pinv"]["psnr_db"]
    assert (ZOO / card["figure"]).is_file()


def test_p4m_denoiser_is_d4_equivariant() -> None:
    path = ZOO / ZOO_CARDS["denoising-p4m"].graphs["denoising"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    y = rng.random((1, 40, 40), dtype=np.float32)

    def f(v: np.ndarray) -> np.ndarray:
        return session.run(
            None, {"y": np.ascontiguousarray(v), "inv_norm": np.ones(1, np.float32)}
        )[0]

    out = f(y)
    assert float(np.abs(out - y).max()) > 1e-3  # the network changes the image
    for k in range(4):
        for flip in (False, True):

            def t(v: np.ndarray, k: int = k, flip: bool = flip) -> np.ndarray:
                v = np.rot90(v, k, axes=(-2, -1))
                return v[..., ::-1] if flip else v

            err = np.linalg.norm(f(t(y)) - t(out)) / np.linalg.norm(out - y)
            assert err < 1e-4, (k, flip, err)
