"""Image files: .npy without pickle, 8-bit PNG with clip or min-max scaling."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from service.imaging import encode_image

X = np.array([[-0.5, 0.0], [0.5, 2.0]], dtype=np.float32)


def test_npy_round_trip_without_pickle() -> None:
    back = np.load(io.BytesIO(encode_image(X, "npy")), allow_pickle=False)
    assert back.dtype == np.float32 and np.array_equal(back, X)


def test_png_clips_to_the_unit_range() -> None:
    png = Image.open(io.BytesIO(encode_image(X, "png")))
    assert png.mode == "L" and np.asarray(png).tolist() == [[0, 0], [128, 255]]


def test_png_minmax_stretches_and_handles_a_flat_image() -> None:
    png = Image.open(io.BytesIO(encode_image(X, "png", "minmax")))
    assert np.asarray(png).tolist() == [[0, 51], [102, 255]]
    flat = Image.open(io.BytesIO(encode_image(np.ones((2, 2), np.float32), "png", "minmax")))
    assert not np.asarray(flat).any()
