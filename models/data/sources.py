r"""Training and validation images for the learned reconstruction models.

Three sources, each a deterministic map from an index to one float32 ``[size, size]``
image in :math:`[0, 1]`:

* :class:`EllipsePhantoms` (``"ellipses"``): random ellipse phantoms for CT, seen through
  a Gaussian PSF, zero outside the inscribed circle.
* :class:`BrainSlices` (``"brain"``): axial slices of a real T1 head MRI (Debian
  ``mricron-data``, the Colin27 "ch2" template).
* :class:`NaturalPatches` (``"natural"``): crops of the photos bundled with scikit-image.

Every source has a ``"train"`` and a ``"val"`` split that share nothing: disjoint seed
ranges (ellipses), spatially disjoint slabs of the head with a gap between them (brain),
disjoint sets of whole photos (natural). Image ``i`` of a split is the same on every call,
in every process. Validation items are ordered so that any prefix is a fair sample
(``validate`` scores the first few).

:func:`batch` stacks items into a ``[B, H, W]`` tensor and :func:`iterate_batches` is
the endless, seeded, epoch-shuffled stream a training loop consumes. Augmentation
(flips, rotations, noise) is the caller's business, not the source's.

Example
-------
>>> source = make_source("ellipses", 64, "val")
>>> x = source[0]
>>> x.shape, x.dtype, float(x.min()), float(x.max())
((64, 64), dtype('float32'), 0.0, 1.0)
>>> next(iterate_batches(source, 4, seed=0)).shape
torch.Size([4, 64, 64])
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal, Protocol, cast, get_args

import numpy as np
import torch
from scipy.special import ndtr
from skimage.transform import resize

__all__ = [
    "BRAIN_GAP_MM",
    "BRAIN_VAL_SLAB_MM",
    "BRAIN_VOLUMES",
    "DEFAULT_TRAIN_COUNT",
    "ELLIPSE_VAL_COUNT",
    "ELLIPSE_VAL_SEED_OFFSET",
    "NATURAL_TRAIN_IMAGES",
    "NATURAL_VAL_IMAGES",
    "NATURAL_VAL_VIEWS",
    "PHANTOM_PSF_PX",
    "SOURCES",
    "TEMPLATE_DIR",
    "BrainSlices",
    "DataNotInstalledError",
    "EllipsePhantoms",
    "ImageSource",
    "NaturalPatches",
    "Split",
    "batch",
    "batch_indices",
    "brain_split",
    "ellipse_phantom",
    "iterate_batches",
    "make_source",
    "natural_image",
]

Split = Literal["train", "val"]

#: Virtual length of the generated training splits (ellipses, natural crops).
DEFAULT_TRAIN_COUNT = 100_000


class DataNotInstalledError(RuntimeError):
    """A source's files or reader are not installed; the message says what to install."""


class ImageSource(Protocol):
    """What every source offers: ``len`` and float32 ``[size, size]`` images in [0, 1]."""

    @property
    def size(self) -> int: ...

    @property
    def split(self) -> Split: ...

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> np.ndarray: ...


# --- ellipses

#: Validation phantom ``i`` has seed ``ELLIPSE_VAL_SEED_OFFSET + i``, training phantom ``i``
#: has seed ``i``; a training split may not reach the offset, so the two never meet.
ELLIPSE_VAL_SEED_OFFSET = 10_000_000
#: Default number of validation phantoms.
ELLIPSE_VAL_COUNT = 64


#: Width (standard deviation, pixels) of the Gaussian point-spread function phantoms are
#: rendered through. Point-sampled edges are aliased, and an aliased image set is not
#: invariant to rotations: a turned raster and the raster of the turned phantom differ by
#: 29 dB PSNR even under exact band-limited rotation (26 dB bilinear); through this PSF
#: (FWHM 1.4 pixels) by 52 dB (``python -m bench.rotation_fidelity``). EI learns from that
#: invariance (``models/losses/equivariant.py``), and every CT scanner has such a PSF.
PHANTOM_PSF_PX = 0.6


def ellipse_phantom(
    size: int, seed: int, angle: float = 0.0, psf: float = PHANTOM_PSF_PX
) -> np.ndarray:
    r"""The random ellipse phantom of ``seed``, seen through a Gaussian PSF on a
    ``size x size`` grid.

    In coordinates normalised to the inscribed disc (centre pixel ``size // 2``, the
    convention of ``skimage.transform.radon``; radius :math:`R = size/2 - 1` pixels),

    .. math::
        x = \mathrm{clip}_{\ge 0}\Big(\sum_{k=1}^{n} v_k \,
            \Phi\big(-d_k(p) / s\big)\Big)
            \cdot \Phi\big(-(\|p\| R - R_0) / s\big) \cdot \mathbb 1[\|p\| \le 1],
            \qquad x \leftarrow x / \max x,

    with :math:`\Phi` the normal CDF, :math:`s` = ``PHANTOM_PSF_PX``, :math:`d_k(p)` the
    signed distance in pixels from :math:`p` to the boundary of ellipse :math:`k` (first
    order: :math:`(q_k - 1) / \|\nabla q_k\|` for :math:`q_k = u_k^2/a_k^2 + w_k^2/b_k^2`,
    :math:`(u_k, w_k)` the position relative to centre :math:`c_k`, rotated by
    :math:`-\theta_k`), which is a straight edge convolved with the PSF exactly, and the
    field of view a disc of radius :math:`R_0 = R - 5 s` that fades out inside the
    inscribed circle. Drawn from ``numpy.random.default_rng(seed)``:
    :math:`n \sim U\{5..15\}`, :math:`c_k` uniform in the disc of radius 0.8,
    :math:`a_k, b_k \sim U(0.05, 0.5)`, :math:`\theta_k \sim U(0, \pi)`,
    :math:`v_1 \sim U(0.5, 1)` and :math:`v_{k>1} \sim U(-0.4, 1)` (negative ellipses cut
    holes; the clip keeps attenuation non-negative). The parameters do not depend on
    ``size``, so one seed gives the same phantom at every resolution. ``angle`` (radians)
    turns the phantom about the centre, from the column axis towards the row axis (the
    sense of the EI group ``rotate``); ``psf=0`` samples the bare ellipses at the pixel
    centres (aliased; ``bench/rotation_fidelity.py`` compares).

    Example
    -------
    >>> x = ellipse_phantom(32, seed=7)
    >>> bool(x[0, 0] == 0.0), float(x.max())
    (True, 1.0)
    """
    rng = np.random.default_rng(seed)
    radius = size / 2 - 1
    rows, cols = np.mgrid[:size, :size].astype(np.float64)
    py, px = (rows - size // 2) / radius, (cols - size // 2) / radius
    r = np.hypot(px, py)
    cos, sin = np.cos(angle), np.sin(angle)
    view = _edge(r * radius - (radius - 5 * psf), psf) * (r <= 1.0)
    while True:  # redraw (deterministically) in the rare case negatives erase everything
        image = _draw_ellipses(rng, cos * px + sin * py, cos * py - sin * px, radius, psf) * view
        peak = float(image.max())
        if peak > 1e-3:
            return (image / peak).astype(np.float32)


def _edge(distance_px: np.ndarray, psf: float) -> np.ndarray:
    """A straight edge at signed distance ``distance_px`` (inside < 0), through the PSF."""
    return ndtr(-distance_px / psf) if psf > 0 else (distance_px <= 0).astype(np.float64)


def _draw_ellipses(
    rng: np.random.Generator, px: np.ndarray, py: np.ndarray, radius: float, psf: float
) -> np.ndarray:
    n = int(rng.integers(5, 16))
    distance, angle = 0.8 * np.sqrt(rng.uniform(size=n)), rng.uniform(0, 2 * np.pi, n)
    cx, cy = distance * np.cos(angle), distance * np.sin(angle)
    a, b = rng.uniform(0.05, 0.5, n), rng.uniform(0.05, 0.5, n)
    theta = rng.uniform(0, np.pi, n)
    value = np.concatenate([rng.uniform(0.5, 1.0, 1), rng.uniform(-0.4, 1.0, n - 1)])
    # One broadcast over [n, H, W] instead of a Python loop per ellipse.
    dx, dy = px - cx[:, None, None], py - cy[:, None, None]
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    a, b = a[:, None, None], b[:, None, None]
    u, w = cos * dx + sin * dy, -sin * dx + cos * dy
    q = (u / a) ** 2 + (w / b) ** 2
    slope = 2 * np.hypot(u / a**2, w / b**2)  # |grad q|, zero only at the centre (q - 1 = -1)
    distance_px = (q - 1) / np.maximum(slope, 1e-12) * radius
    inside = _edge(distance_px, psf)
    return np.clip((inside * value[:, None, None]).sum(axis=0), 0.0, None)


class EllipsePhantoms:
    """Random ellipse phantoms (:func:`ellipse_phantom`) for CT.

    Item ``i`` of ``"train"`` has seed ``i``; item ``i`` of ``"val"`` has seed
    ``ELLIPSE_VAL_SEED_OFFSET + i``. ``count`` defaults to ``DEFAULT_TRAIN_COUNT`` virtual
    training items and ``ELLIPSE_VAL_COUNT`` validation items.

    Example
    -------
    >>> train = EllipsePhantoms(32)
    >>> len(train), train.seed(3), EllipsePhantoms(32, "val").seed(3)
    (100000, 3, 10000003)
    """

    def __init__(self, size: int = 128, split: Split = "train", count: int | None = None) -> None:
        self.size = _check_size(size)
        self.split = _check_split(split)
        default = DEFAULT_TRAIN_COUNT if self.split == "train" else ELLIPSE_VAL_COUNT
        self.count = default if count is None else int(count)
        if not 1 <= self.count <= ELLIPSE_VAL_SEED_OFFSET:
            raise ValueError(f"count must be in [1, {ELLIPSE_VAL_SEED_OFFSET}], got {count}")

    def seed(self, i: int) -> int:
        """The generator seed of item ``i``."""
        i = _check_index(i, self.count)
        return i if self.split == "train" else ELLIPSE_VAL_SEED_OFFSET + i

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> np.ndarray:
        return ellipse_phantom(self.size, self.seed(i))


# --- brain MRI

#: Where Debian's ``mricron-data`` puts the templates.
TEMPLATE_DIR = Path("/usr/share/mricron/templates")
#: Volumes of the Colin27 subject in ``mricron-data``: full head at 1 mm, the brain-only
#: 0.5 mm average, and the skull-stripped 1 mm volume. All are one person.
BRAIN_VOLUMES = ("ch2", "ch2better", "ch2bet")
#: Validation slab: axial slices whose MNI height z (mm) lies in this closed range, the middle
#: ~15% of ch2's 161 usable slices (ventricles and basal ganglia).
BRAIN_VAL_SLAB_MM = (-3.0, 20.0)
#: Slices within this many mm of the validation slab belong to no split.
BRAIN_GAP_MM = 3.0
#: An axial slice is usable when more than this fraction of its voxels is foreground.
BRAIN_MIN_FOREGROUND = 0.2

_INSTALL_HINT = "install it with `apt-get install -y mricron-data` (Debian, ~16 MB)"


def brain_split(z_mm: np.ndarray, foreground: np.ndarray) -> dict[Split, np.ndarray]:
    r"""Axial slice indices of each split, from slice heights and foreground fractions.

    With the slab :math:`[z_0, z_1]` = ``BRAIN_VAL_SLAB_MM`` and gap :math:`g` =
    ``BRAIN_GAP_MM``, a usable slice (foreground fraction > ``BRAIN_MIN_FOREGROUND``)
    is validation when :math:`z_0 \le z \le z_1`, training when
    :math:`z < z_0 - g` or :math:`z > z_1 + g`, and unused otherwise. The split is in
    world millimetres, not indices, so it holds across every volume of the subject: no
    volume's training slab overlaps any volume's validation slab. Validation indices come
    in a spread order (bit reversal), so the first few span the whole slab.

    Example
    -------
    >>> z = np.arange(-10.0, 30.0)
    >>> parts = brain_split(z, np.ones_like(z))
    >>> val = z[parts["val"]]
    >>> float(val.min()), float(val.max()), float(val[1] - val[0]), len(parts["train"])
    (-3.0, 20.0, 16.0, 10)
    """
    usable = foreground > BRAIN_MIN_FOREGROUND
    lo, hi = BRAIN_VAL_SLAB_MM
    val = np.flatnonzero(usable & (z_mm >= lo) & (z_mm <= hi))
    train = np.flatnonzero(usable & ((z_mm < lo - BRAIN_GAP_MM) | (z_mm > hi + BRAIN_GAP_MM)))
    return {"train": train, "val": val[_spread_order(len(val))]}


def _spread_order(n: int) -> np.ndarray:
    """A permutation of ``range(n)`` whose every prefix is spread out (bit-reversal order)."""
    bits = max(1, (n - 1).bit_length())
    reversed_ = [int(format(k, f"0{bits}b")[::-1], 2) for k in range(1 << bits)]
    return np.array([k for k in reversed_ if k < n], dtype=np.int64)


@functools.lru_cache(maxsize=len(BRAIN_VOLUMES))
def _load_volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The volume in RAS+ orientation (float32 [X, Y, Z]) and each axial slice's z in mm."""
    try:
        import nibabel as nib  # build-time only: the service never reads volumes
    except ImportError as exc:
        raise DataNotInstalledError(
            "nibabel reads the brain volumes: pip install -e '.[build]' (or pip install nibabel)"
        ) from exc
    image = nib.as_closest_canonical(nib.load(path))
    volume = np.asarray(image.get_fdata(dtype=np.float32))
    nx, ny, nz = volume.shape
    voxels = np.stack([np.full(nz, (nx - 1) / 2), np.full(nz, (ny - 1) / 2), np.arange(nz)], 1)
    z_mm = nib.affines.apply_affine(image.affine, voxels)[:, 2]
    return volume, z_mm


def _brain_slice_image(plane: np.ndarray, size: int) -> np.ndarray:
    """An axial plane [X, Y] as a ``size x size`` image: anterior up, zero-padded to a
    square, resized with anti-aliasing, divided by the 99.5th percentile of the head."""
    image = np.rot90(plane)  # RAS [x, y] -> [rows, cols]: anterior at the top, right on the right
    height, width = image.shape
    side = max(height, width)
    square = np.zeros((side, side), np.float32)
    top, left = (side - height) // 2, (side - width) // 2
    square[top : top + height, left : left + width] = image
    small = _resize(square, size, clip=False)
    head = small[small > 0]
    scale = float(np.percentile(head, 99.5)) if head.size else 1.0
    return np.clip(small / max(scale, 1e-12), 0.0, 1.0).astype(np.float32)


class BrainSlices:
    """Axial slices of a real T1 head MRI (Colin27, Debian ``mricron-data``).

    Splits are spatially disjoint slabs in world coordinates (:func:`brain_split`):
    with the default ``ch2`` volume (1 mm slices, 161 usable), validation has the 24
    slices at MNI z = -3..20 mm, 3 slices on each side are unused, and training has the
    remaining 131 (below z = -6 and above z = 23 mm). ``ch2`` is the full head (scalp,
    skull, brain), which is what an MRI scanner sees; ``ch2bet`` is its skull-stripped
    copy and ``ch2better`` a 0.5 mm brain-only average. They are the same person, which
    is why the split is by position and not by volume.

    The volume is read on first access and kept in memory, processed slices too.
    A missing file raises :class:`DataNotInstalledError` when the source is built.

    Example
    -------
    >>> val = BrainSlices(64, "val")
    >>> len(val), val[0].shape, float(val[0].max())
    (24, (64, 64), 1.0)
    """

    def __init__(
        self,
        size: int = 128,
        split: Split = "train",
        volume: str = "ch2",
        template_dir: Path = TEMPLATE_DIR,
    ) -> None:
        self.size = _check_size(size)
        self.split = _check_split(split)
        if volume not in BRAIN_VOLUMES:
            raise ValueError(f"volume must be one of {BRAIN_VOLUMES}, got {volume!r}")
        self.path = Path(template_dir) / f"{volume}.nii.gz"
        if not self.path.is_file():
            raise DataNotInstalledError(f"{self.path} is missing: {_INSTALL_HINT}")
        self._images: dict[int, np.ndarray] = {}

    @functools.cached_property
    def slice_indices(self) -> np.ndarray:
        """Axial voxel index (RAS+ volume) of each item of this split."""
        volume, z_mm = _load_volume(self.path)
        foreground = (volume > 0.01 * volume.max()).mean(axis=(0, 1))
        return brain_split(z_mm, foreground)[self.split]

    @property
    def slice_positions_mm(self) -> np.ndarray:
        """MNI height z in mm of each item of this split."""
        return _load_volume(self.path)[1][self.slice_indices]

    def __len__(self) -> int:
        return len(self.slice_indices)

    def __getitem__(self, i: int) -> np.ndarray:
        i = _check_index(i, len(self))
        if i not in self._images:
            volume = _load_volume(self.path)[0]
            self._images[i] = _brain_slice_image(volume[:, :, self.slice_indices[i]], self.size)
        return self._images[i].copy()  # callers may edit their image in place; the cache stays


# --- natural photos

#: Held out for validation (the benchmark's validation photos); never cropped for training.
NATURAL_VAL_IMAGES = ("camera", "coins", "moon", "astronaut")
#: Training photos, all bundled in the scikit-image wheel (no download). Left out: ``clock``
#: (motion-blurred on purpose), ``horse`` (a binary silhouette), ``cat`` (the same file as
#: ``chelsea``), ``logo``/``colorwheel``/``checkerboard`` (synthetic), ``microaneurysms``
#: and ``lfw_subset`` (too small), and everything scikit-image downloads on demand.
NATURAL_TRAIN_IMAGES = (
    "brick",
    "grass",
    "gravel",
    "chelsea",
    "coffee",
    "text",
    "page",
    "cell",
    "retina",
    "hubble_deep_field",
    "immunohistochemistry",
    "rocket",
    "motorcycle",
)
#: Validation views per held-out photo: the whole centre square, then a 3 x 3 grid of crops.
NATURAL_VAL_VIEWS = 10
_VAL_GRID = 3
#: Training crops are taken at a random zoom-out in this range before resizing to ``size``.
NATURAL_SCALE_RANGE = (0.5, 1.0)
#: A training crop flatter than this (retina's black surround) is redrawn, up to 10 times.
_MIN_PATCH_STD = 0.01
_MAX_DRAWS = 10
# Keys the training crop generator, so its streams differ from the ellipse seeds.
_NATURAL_STREAM = 0x6E6174


@functools.cache
def natural_image(name: str) -> np.ndarray:
    """A bundled scikit-image photo as float32 grey levels in [0, 1] (ITU-R 709 luma).

    Example
    -------
    >>> x = natural_image("camera")
    >>> x.shape, x.dtype
    ((512, 512), dtype('float32'))
    """
    from skimage import data
    from skimage.color import rgb2gray

    if name not in NATURAL_TRAIN_IMAGES + NATURAL_VAL_IMAGES:
        raise ValueError(f"unknown natural image {name!r}")
    # stereo_motorcycle returns (left, right, disparity); the right view nearly repeats the left.
    pixels = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    grey = rgb2gray(pixels) if pixels.ndim == 3 else pixels / 255.0
    grey = np.asarray(grey, np.float32)
    grey.setflags(write=False)  # shared by every source through the cache
    return grey


class NaturalPatches:
    r"""Grey-level crops of scikit-image's bundled photos, intensities as photographed.

    ``"train"`` item ``i`` draws, from ``default_rng((_NATURAL_STREAM, i))``, a photo
    uniformly from ``NATURAL_TRAIN_IMAGES``, a scale :math:`s \sim U(0.5, 1)` and a
    square of side :math:`\min(\mathrm{round}(size/s), H, W)` at a uniform position, then
    resizes it to ``size`` with anti-aliasing (so small photos still give full crops, and
    the network sees several scales). Nearly flat crops are redrawn.

    ``"val"`` has ``NATURAL_VAL_VIEWS`` fixed views of each of ``NATURAL_VAL_IMAGES``
    (40 items): view 0 is the centre square resized to ``size``, views 1-9 are
    native-scale ``size`` crops on a 3 x 3 grid spanning the photo. Items interleave the
    photos (item ``i`` is photo ``i % 4``, view ``i // 4``), so the first four are the
    four whole photos.

    Example
    -------
    >>> val = NaturalPatches(64, "val")
    >>> len(val), [val.source_name(i) for i in range(4)]
    (40, ['camera', 'coins', 'moon', 'astronaut'])
    """

    def __init__(self, size: int = 128, split: Split = "train", count: int | None = None) -> None:
        self.size = _check_size(size)
        self.split = _check_split(split)
        self.names = NATURAL_TRAIN_IMAGES if self.split == "train" else NATURAL_VAL_IMAGES
        if self.split == "train":
            available = DEFAULT_TRAIN_COUNT
        else:
            available = len(self.names) * NATURAL_VAL_VIEWS
        self.count = available if count is None else int(count)
        if self.count < 1 or (self.split == "val" and self.count > available):
            raise ValueError(f"count must be in [1, {available}] for {split!r}, got {count}")

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> np.ndarray:
        return self._item(i)[1]

    def source_name(self, i: int) -> str:
        """The photo item ``i`` is cut from."""
        i = _check_index(i, self.count)
        return self.names[i % len(self.names)] if self.split == "val" else self._item(i)[0]

    def _item(self, i: int) -> tuple[str, np.ndarray]:
        i = _check_index(i, self.count)
        if self.split == "val":
            name = self.names[i % len(self.names)]
            return name, self._val_view(natural_image(name), i // len(self.names))
        return self._train_crop(i)

    def _train_crop(self, i: int) -> tuple[str, np.ndarray]:
        rng = np.random.default_rng((_NATURAL_STREAM, i))
        name = self.names[int(rng.integers(len(self.names)))]
        image = natural_image(name)
        height, width = image.shape
        for _ in range(_MAX_DRAWS):  # redraw scale and place, never the photo: keeps it uniform
            side = min(round(self.size / rng.uniform(*NATURAL_SCALE_RANGE)), height, width)
            top, left = int(rng.integers(height - side + 1)), int(rng.integers(width - side + 1))
            patch = image[top : top + side, left : left + side]
            if patch.std() >= _MIN_PATCH_STD:
                break
        return name, _resize(patch, self.size)

    def _val_view(self, image: np.ndarray, view: int) -> np.ndarray:
        height, width = image.shape
        if view == 0:
            side = min(height, width)
            top, left = (height - side) // 2, (width - side) // 2
        else:
            side = min(self.size, height, width)
            row, col = divmod(view - 1, _VAL_GRID)
            top = round(row * (height - side) / (_VAL_GRID - 1))
            left = round(col * (width - side) / (_VAL_GRID - 1))
        return _resize(image[top : top + side, left : left + side], self.size)


# --- common API

#: Source name -> class, for :func:`make_source`.
SOURCES: dict[str, Callable[..., ImageSource]] = {
    "ellipses": EllipsePhantoms,
    "brain": BrainSlices,
    "natural": NaturalPatches,
}


def make_source(name: str, size: int = 128, split: Split = "train") -> ImageSource:
    """The source called ``name`` ("ellipses", "brain", "natural") with default settings.

    Example
    -------
    >>> make_source("natural", 32, "val").split
    'val'
    """
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; known: {sorted(SOURCES)}")
    return SOURCES[name](size, split)


def batch(source: ImageSource, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
    """Items ``indices`` of ``source`` stacked as a float32 tensor ``[B, size, size]``.

    Example
    -------
    >>> batch(EllipsePhantoms(16), [0, 1, 2]).shape
    torch.Size([3, 16, 16])
    """
    images = [source[int(i)] for i in indices]
    return torch.from_numpy(np.stack(images).astype(np.float32, copy=False))


def iterate_batches(
    source: ImageSource, batch_size: int, seed: int, *, start: int = 0
) -> Iterator[torch.Tensor]:
    r"""An endless stream of ``[batch_size, size, size]`` batches, reproducible from ``seed``.

    The index stream is the concatenation of epoch permutations,
    :math:`\pi_0 \Vert \pi_1 \Vert \dots` with :math:`\pi_e` drawn from
    ``default_rng((seed, e))``, cut into consecutive batches: every item appears once per
    epoch, and batches may straddle two epochs. ``start`` skips that many batches without
    building them (resuming a run at step ``start`` costs nothing).

    Example
    -------
    >>> source = EllipsePhantoms(16, count=10)
    >>> a, b = iterate_batches(source, 4, seed=1), iterate_batches(source, 4, seed=1, start=1)
    >>> _ = next(a); bool(torch.equal(next(a), next(b)))
    True
    """
    for indices in batch_indices(len(source), batch_size, seed, start=start):
        yield batch(source, indices)


def batch_indices(n: int, batch_size: int, seed: int, *, start: int = 0) -> Iterator[list[int]]:
    """The index lists of :func:`iterate_batches` over ``n`` items (endless).

    Example
    -------
    >>> next(batch_indices(5, 3, seed=0, start=1))[0] in range(5)
    True
    """
    if batch_size < 1 or seed < 0 or start < 0:
        raise ValueError("batch_size must be >= 1, seed and start >= 0")
    position = start * batch_size
    cached: tuple[int, np.ndarray] = (-1, np.empty(0, np.int64))
    while True:
        indices: list[int] = []
        while len(indices) < batch_size:
            epoch, offset = divmod(position, n)
            if cached[0] != epoch:
                cached = (epoch, np.random.default_rng((seed, epoch)).permutation(n))
            take = min(batch_size - len(indices), n - offset)
            indices.extend(cached[1][offset : offset + take].tolist())
            position += take
        yield indices


# --- helpers


def _resize(image: np.ndarray, size: int, clip: bool = True) -> np.ndarray:
    """``image`` resized to ``size x size`` with anti-aliasing (a copy, float32)."""
    if image.shape == (size, size):
        out = np.array(image, np.float32)
    else:
        out = resize(image, (size, size), anti_aliasing=True).astype(np.float32)
    return np.clip(out, 0.0, 1.0) if clip else out


def _check_size(size: int) -> int:
    size = operator.index(size)
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    return size


def _check_split(split: str) -> Split:
    if split not in get_args(Split):
        raise ValueError(f"split must be one of {get_args(Split)}, got {split!r}")
    return cast(Split, split)


def _check_index(i: int, n: int) -> int:
    i = operator.index(i)
    if not 0 <= i < n:
        raise IndexError(f"index {i} out of range for a source of {n} items")
    return i
