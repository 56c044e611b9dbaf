"""Image sources: determinism, value range, disjoint splits, the batch stream."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch

from models.data import sources
from models.data.sources import (
    BRAIN_GAP_MM,
    BRAIN_VAL_SLAB_MM,
    NATURAL_TRAIN_IMAGES,
    NATURAL_VAL_IMAGES,
    SOURCES,
    BrainSlices,
    DataNotInstalledError,
    EllipsePhantoms,
    NaturalPatches,
    batch,
    brain_split,
    iterate_batches,
    make_source,
    natural_image,
)

SIZE = 64
CASES = [(name, split) for name in SOURCES for split in ("train", "val")]


def _digest(image: np.ndarray) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()


class _IndexSource:
    """A fake source whose item ``i`` is a constant image of value ``i``: shows the stream."""

    size = 4
    split: Literal["train"] = "train"

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> np.ndarray:
        return np.full((self.size, self.size), i, np.float32)


def _stream(source: _IndexSource, batch_size: int, seed: int, batches: int) -> list[int]:
    it = iterate_batches(source, batch_size, seed)
    return [int(v) for _ in range(batches) for v in next(it)[:, 0, 0]]


def test_all_names_exist() -> None:
    assert all(hasattr(sources, name) for name in sources.__all__)
    assert set(SOURCES) == {"ellipses", "brain", "natural"}


# --- every source, every split


@pytest.mark.parametrize(("name", "split"), CASES)
def test_items_are_float32_square_images_in_unit_range(name: str, split: str) -> None:
    source = make_source(name, SIZE, split)  # type: ignore[arg-type]
    assert source.split == split and len(source) > 0
    for i in (0, 1, len(source) - 1):
        x = source[i]
        assert x.shape == (SIZE, SIZE) and x.dtype == np.float32
        assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.1


@pytest.mark.parametrize(("name", "split"), CASES)
def test_an_index_always_gives_the_same_image(name: str, split: str) -> None:
    first, second = make_source(name, SIZE, split), make_source(name, SIZE, split)  # type: ignore[arg-type]
    for i in (0, 5, len(first) - 1):
        assert np.array_equal(first[i], second[i])
    assert not np.array_equal(first[0], first[5])


@pytest.mark.parametrize("name", list(SOURCES))
def test_out_of_range_indices_and_bad_arguments_are_refused(name: str) -> None:
    source = make_source(name, SIZE, "val")
    with pytest.raises(IndexError):
        source[len(source)]
    with pytest.raises(IndexError):
        source[-1]
    with pytest.raises(ValueError, match="split"):
        make_source(name, SIZE, "test")  # type: ignore[arg-type]


def test_unknown_source_name_is_refused() -> None:
    with pytest.raises(ValueError, match="ellipses"):
        make_source("faces", SIZE, "train")


# --- ellipses


def test_ellipse_splits_share_no_image() -> None:
    train = {_digest(EllipsePhantoms(SIZE, "train")[i]) for i in range(200)}
    val = EllipsePhantoms(SIZE, "val")
    assert len(val) == 64
    assert train.isdisjoint(_digest(val[i]) for i in range(len(val)))


def test_ellipse_seed_ranges_are_disjoint() -> None:
    assert EllipsePhantoms(SIZE, "val").seed(0) == sources.ELLIPSE_VAL_SEED_OFFSET
    with pytest.raises(ValueError, match="count"):
        EllipsePhantoms(SIZE, "train", count=sources.ELLIPSE_VAL_SEED_OFFSET + 1)


@pytest.mark.parametrize("size", [33, 64, 128])
def test_phantoms_are_zero_outside_the_inscribed_circle(size: int) -> None:
    rows, cols = np.mgrid[:size, :size]
    outside = (rows - size // 2) ** 2 + (cols - size // 2) ** 2 > (size / 2 - 1) ** 2
    phantoms = EllipsePhantoms(size, "train")
    for i in range(50):
        x = phantoms[i]
        assert np.all(x[outside] == 0.0)
        assert x.max() == 1.0


# --- brain


def test_brain_splits_are_disjoint_slabs_with_a_gap() -> None:
    train, val = BrainSlices(SIZE, "train"), BrainSlices(SIZE, "val")
    assert (len(train), len(val)) == (131, 24)
    assert set(train.slice_indices.tolist()).isdisjoint(val.slice_indices.tolist())
    # At least BRAIN_GAP_MM (3 slices of 1 mm) between any training and validation slice.
    distance_mm = np.abs(train.slice_positions_mm[:, None] - val.slice_positions_mm[None, :])
    assert distance_mm.min() > BRAIN_GAP_MM
    distance = np.abs(train.slice_indices[:, None] - val.slice_indices[None, :])
    assert distance.min() == 4
    lo, hi = BRAIN_VAL_SLAB_MM
    assert val.slice_positions_mm.min() == lo and val.slice_positions_mm.max() == hi


def test_brain_split_holds_in_millimetres_for_any_spacing() -> None:
    z = np.arange(-40.0, 60.0, 0.5)  # a 0.5 mm volume, like ch2better
    foreground = np.where(z < 50, 0.5, 0.1)  # the top slices are nearly empty
    parts = brain_split(z, foreground)
    lo, hi = BRAIN_VAL_SLAB_MM
    assert np.all((z[parts["val"]] >= lo) & (z[parts["val"]] <= hi))
    assert len(parts["val"]) == int((hi - lo) / 0.5) + 1
    assert np.abs(z[parts["train"]][:, None] - z[parts["val"]][None, :]).min() > BRAIN_GAP_MM
    assert z[parts["train"]].max() < 50


def test_brain_validation_order_spreads_over_the_slab() -> None:
    positions = BrainSlices(SIZE, "val").slice_positions_mm
    lo, hi = BRAIN_VAL_SLAB_MM
    first = positions[:8]
    assert first.min() - lo < 3 and hi - first.max() < 6
    assert sorted(positions.tolist()) == list(np.arange(lo, hi + 1))


def test_missing_brain_volume_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(DataNotInstalledError, match="apt-get install -y mricron-data"):
        BrainSlices(SIZE, "train", template_dir=tmp_path)


# --- natural photos


def test_held_out_photos_are_never_cropped_for_training() -> None:
    assert set(NATURAL_TRAIN_IMAGES).isdisjoint(NATURAL_VAL_IMAGES)
    train = NaturalPatches(SIZE, "train")
    assert train.names == NATURAL_TRAIN_IMAGES
    used = {train.source_name(i) for i in range(200)}
    assert used <= set(NATURAL_TRAIN_IMAGES)
    assert len(used) > len(NATURAL_TRAIN_IMAGES) // 2  # the draw reaches most photos


def test_validation_views_cover_only_the_held_out_photos() -> None:
    val = NaturalPatches(SIZE, "val")
    assert len(val) == len(NATURAL_VAL_IMAGES) * sources.NATURAL_VAL_VIEWS == 40
    assert [val.source_name(i) for i in range(4)] == list(NATURAL_VAL_IMAGES)
    assert {val.source_name(i) for i in range(len(val))} == set(NATURAL_VAL_IMAGES)
    with pytest.raises(ValueError, match="count"):
        NaturalPatches(SIZE, "val", count=41)


@pytest.mark.parametrize("name", NATURAL_TRAIN_IMAGES + NATURAL_VAL_IMAGES)
def test_every_listed_photo_loads_offline_as_grey_levels(name: str) -> None:
    image = natural_image(name)
    assert image.ndim == 2 and image.dtype == np.float32
    assert min(image.shape) >= 128 and 0.0 <= image.min() < image.max() <= 1.0


# --- batches


def test_batch_stacks_items() -> None:
    source = EllipsePhantoms(SIZE, "val")
    x = batch(source, [3, 1])
    assert x.shape == (2, SIZE, SIZE) and x.dtype == torch.float32
    assert np.array_equal(x[1].numpy(), source[1])


@pytest.mark.parametrize("name", list(SOURCES))
def test_batches_have_the_shape_and_repeat_from_the_seed(name: str) -> None:
    source = make_source(name, SIZE, "train")
    a, b = iterate_batches(source, 3, seed=5), iterate_batches(source, 3, seed=5)
    for _ in range(2):
        x = next(a)
        assert x.shape == (3, SIZE, SIZE) and x.dtype == torch.float32
        assert torch.equal(x, next(b))
    other = next(iterate_batches(source, 3, seed=6))
    assert not torch.equal(other, next(iterate_batches(source, 3, seed=5)))


def test_every_item_appears_once_per_epoch() -> None:
    stream = _stream(_IndexSource(10), batch_size=4, seed=0, batches=5)  # two epochs
    assert sorted(stream[:10]) == list(range(10)) == sorted(stream[10:20])
    assert stream[:10] != stream[10:20]  # each epoch is shuffled anew
    assert stream == _stream(_IndexSource(10), batch_size=4, seed=0, batches=5)


def test_start_skips_whole_batches() -> None:
    source = _IndexSource(10)
    resumed = iterate_batches(source, 4, seed=3, start=3)
    assert [int(v) for v in next(resumed)[:, 0, 0]] == _stream(source, 4, seed=3, batches=4)[12:]


def test_phantoms_are_invariant_to_rotations_as_ei_needs() -> None:
    """Turning a phantom's raster (the EI group ``rotate``) gives the raster of the turned
    phantom to within 40 dB PSNR (44-57 dB at 128x128): the set is rotation-invariant, as
    EI assumes. A point-sampled (aliased) raster misses by ~28 dB."""
    from models.losses.equivariant import rotation

    for seed, angle in [(0, 0.3), (1, -1.0), (2, 2.5), (3, 4.4)]:
        raster = torch.from_numpy(sources.ellipse_phantom(128, seed)).double()[None]
        turned = rotation(angle)(raster)[0].numpy()
        mse = float(np.mean((turned - sources.ellipse_phantom(128, seed, angle)) ** 2))
        assert 10 * math.log10(1 / mse) > 40, (seed, angle)
