"""Image files for GET /v1/reconstructions/{id}/image: ``.npy`` and 8-bit PNG.

``npy`` is ``np.save(..., allow_pickle=False)`` of the float32 [H, W] image.
``png`` maps [0, 1] to 0..255 and clips (``scale=clip``, the images' nominal
range) or stretches min..max to 0..255 (``scale=minmax``). DICOM needs
pydicom, which is not a runtime dependency yet.
"""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
from PIL import Image

__all__ = ["MEDIA_TYPES", "Format", "Scale", "encode_image"]

Format = Literal["npy", "png", "dcm"]
Scale = Literal["clip", "minmax"]
MEDIA_TYPES = {"npy": "application/octet-stream", "png": "image/png"}


def _to_uint8(x: np.ndarray, scale: Scale) -> np.ndarray:
    x = x.astype(np.float64)
    if scale == "minmax":
        lo, hi = float(x.min()), float(x.max())
        x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    return np.round(255.0 * np.clip(x, 0.0, 1.0)).astype(np.uint8)


def encode_image(x: np.ndarray, fmt: Literal["npy", "png"], scale: Scale = "clip") -> bytes:
    """The bytes of ``x`` [H, W] as a ``.npy`` or ``.png`` file."""
    buffer = io.BytesIO()
    if fmt == "npy":
        np.save(buffer, np.asarray(x, dtype=np.float32), allow_pickle=False)
    else:
        Image.fromarray(_to_uint8(x, scale)).save(buffer, format="PNG")
    return buffer.getvalue()
