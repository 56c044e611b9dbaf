"""Image sources for training and validating the learned models (see :mod:`.sources`)."""

from models.data.sources import (
    BrainSlices,
    DataNotInstalledError,
    EllipsePhantoms,
    ImageSource,
    NaturalPatches,
    batch,
    iterate_batches,
    make_source,
)

__all__ = [
    "BrainSlices",
    "DataNotInstalledError",
    "EllipsePhantoms",
    "ImageSource",
    "NaturalPatches",
    "batch",
    "iterate_batches",
    "make_source",
]
