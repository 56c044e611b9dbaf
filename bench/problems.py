"""The validation problems shared by the quality and calibration scripts.

Validation images come from scikit-image's bundled data (installed offline,
see ../shared/DATA.md) and never from anything a model trains on: natural
photos (camera, astronaut, coins, moon) centre-cropped and resized to
128x128, and the Shepp-Logan phantom for CT and MRI. Each family gets a
little Gaussian noise at a level typical of its measurements.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["PROBLEMS", "psnr", "validation_image"]

SIZE = 128

#: family label -> (operator spec, noise sigma, image name)
PROBLEMS: dict[str, tuple[dict[str, Any], float, str]] = {
    "denoising": ({"type": "denoising", "shape": [SIZE, SIZE]}, 0.1, "camera"),
    "inpainting": (
        {"type": "inpainting", "shape": [SIZE, SIZE], "mask": {"random": {"keep": 0.5, "seed": 0}}},
        0.01,
        "camera",
    ),
    "blur": (
        {"type": "blur", "shape": [SIZE, SIZE], "kernel": {"gaussian": {"sigma": 1.5, "size": 9}}},
        0.01,
        "camera",
    ),
    "superresolution": (
        {"type": "superresolution", "shape": [SIZE, SIZE], "factor": 2},
        0.01,
        "camera",
    ),
    "compressed_sensing (gaussian, 64x64)": (
        {"type": "compressed_sensing", "shape": [64, 64], "m": 1638, "seed": 0},
        0.01,
        "camera",
    ),
    "compressed_sensing (structured)": (
        {
            "type": "compressed_sensing",
            "shape": [SIZE, SIZE],
            "m": 6554,
            "seed": 0,
            "matrix": "structured",
        },
        0.01,
        "camera",
    ),
    "mri": (
        {
            "type": "mri",
            "shape": [SIZE, SIZE],
            "mask": {"cartesian": {"acceleration": 4, "center_fraction": 0.08, "seed": 0}},
        },
        0.01,
        "shepp_logan",
    ),
    "mri_multicoil": (
        {
            "type": "mri_multicoil",
            "shape": [SIZE, SIZE],
            "mask": {"cartesian": {"acceleration": 4, "center_fraction": 0.08, "seed": 0}},
            "coils": {"birdcage": {"count": 8}},
        },
        0.01,
        "shepp_logan",
    ),
    "ct": (
        {"type": "ct", "shape": [SIZE, SIZE], "angles": {"uniform": {"count": 50}}},
        0.1,
        "shepp_logan",
    ),
}


def validation_image(name: str, size: int = SIZE) -> np.ndarray:
    """A float32 [size, size] image in [0, 1] from scikit-image's bundled data."""
    from skimage import data
    from skimage.color import rgb2gray
    from skimage.transform import resize

    if name == "shepp_logan":
        img = data.shepp_logan_phantom()
        img = resize(img, (size, size), anti_aliasing=True)
        yy, xx = np.mgrid[:size, :size]
        c = size // 2
        img = img * (((yy - c) ** 2 + (xx - c) ** 2) <= (c - 1) ** 2)
    else:
        img = getattr(data, name)()
        if img.ndim == 3:
            img = rgb2gray(img)
        h, w = img.shape
        s = min(h, w)
        img = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
        img = resize(img.astype(np.float64), (size, size), anti_aliasing=True)
    img = img - img.min()
    return (img / img.max()).astype(np.float32)


def psnr(x: np.ndarray, ref: np.ndarray) -> float:
    """PSNR in dB for images with peak 1."""
    mse = float(np.mean((np.asarray(x, np.float64) - ref) ** 2))
    return 10.0 * np.log10(1.0 / mse)
