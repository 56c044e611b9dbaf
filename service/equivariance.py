"""The test-time equivariance score (DESIGN.md §8), pure numpy.

For a reconstructor ``f``, operator ``A`` and measurements ``y``: ``x̂ = f(y)``;
for each ``g`` of a deterministic set ``S`` of non-identity group elements,
``x_g = T_g x̂`` and ``x̃_g = f(A x_g)`` (noise-free), and

    e_g = ‖x̃_g - x_g‖² / ‖x_g‖²,   score = mean_g e_g,   score_db = -10 log10(score).

The optional per-pixel map is ``sqrt(mean_g (T_g⁻¹ x̃_g - x̂)²)``.

Groups and their element order (``transforms = n`` takes the first ``n``):

* ``rot90``: rot90, rot180, rot270 (square images).
* ``flips``: flip_h (mirror left-right), flip_v (upside down), flip_hv.
* ``D4``: rot90, rot180, rot270, then the reflections flip_h, flip_v,
  transpose, antitranspose (square images).
* ``shifts``: integer circular shifts ``(dy, dx)``. The list is drawn once
  per image shape from ``rng = np.random.default_rng(0)``: repeatedly
  ``dy, dx = rng.integers([-(H//8), -(W//8)], [H//8, W//8], endpoint=True)``,
  skipping (0, 0) and pairs already drawn, until :data:`MAX_SHIFTS` pairs (or
  all of them) are listed. A prefix of the stream is the same for every ``n``.

Rotations follow ``np.rot90`` on the last two axes (counter-clockwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = [
    "DEFAULT_GROUP",
    "DEFAULT_SHIFTS",
    "GROUPS",
    "MAX_SHIFTS",
    "SCORE_FLOOR",
    "Transform",
    "default_group",
    "elements",
    "error_map",
    "score",
    "score_db",
    "select",
]

GROUPS = ("rot90", "flips", "D4", "shifts")
#: Longest list of shifts, and how many a request uses by default.
MAX_SHIFTS, DEFAULT_SHIFTS = 16, 4
#: ``score`` is floored here so ``score_db`` stays a finite JSON number (≤ 120 dB).
SCORE_FLOOR = 1e-12
#: The group used when a request names none, per operator family. CT uses D4, not
#: shifts: its images live in the inscribed circle (the detector sees nothing
#: outside it), which D4 maps onto itself and circular shifts do not, so under
#: shifts every reconstructor scored poorly whatever its quality (TV 23.9 dB,
#: the supervised net 15.3 dB at 40.9 dB PSNR; docs/training-log.md "CT's score uses D4").
#: Uniform view sets are invariant to flips and, for an even view count, to
#: rot90, so the CT score measures the reconstructor's own consistency.
DEFAULT_GROUP = {
    "denoising": "D4",
    "inpainting": "shifts",
    "blur": "D4",
    "superresolution": "shifts",
    "compressed_sensing": "D4",
    "mri": "D4",
    "mri_multicoil": "D4",
    "ct": "D4",
}
_SQUARE_ONLY = ("rot90", "D4")


@dataclass(frozen=True)
class Transform:
    """One group element: mirror the last axis (if ``mirror``), turn ``k`` quarters, then roll."""

    name: str
    k: int = 0
    mirror: bool = False
    shift: tuple[int, int] = (0, 0)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``T_g x`` on the last two axes of ``x``."""
        if self.mirror:
            x = x[..., ::-1]
        x = np.rot90(x, self.k, axes=(-2, -1))
        if self.shift != (0, 0):
            x = np.roll(x, self.shift, axis=(-2, -1))
        return np.ascontiguousarray(x)

    def inverse(self) -> Transform:
        """``T_g⁻¹``: reflections are involutions, turns and shifts are negated."""
        if self.mirror:
            return self
        dy, dx = self.shift
        return Transform(f"{self.name}^-1", (-self.k) % 4, False, (-dy, -dx))


_ROTATIONS = [Transform("rot90", 1), Transform("rot180", 2), Transform("rot270", 3)]
_FLIP_H = Transform("flip_h", 0, True)
_FLIP_V = Transform("flip_v", 2, True)  # mirror then rot180 = upside down
_FLIP_HV = Transform("flip_hv", 2)  # both flips = rot180
_D4 = [*_ROTATIONS, _FLIP_H, _FLIP_V, Transform("transpose", 1, True),
       Transform("antitranspose", 3, True)]


@lru_cache(maxsize=64)
def _shifts(height: int, width: int) -> tuple[Transform, ...]:
    ry, rx = height // 8, width // 8
    available = (2 * ry + 1) * (2 * rx + 1) - 1
    rng = np.random.default_rng(0)
    seen: list[tuple[int, int]] = []
    while len(seen) < min(MAX_SHIFTS, available):
        dy, dx = (int(v) for v in rng.integers([-ry, -rx], [ry, rx], endpoint=True))
        if (dy, dx) != (0, 0) and (dy, dx) not in seen:
            seen.append((dy, dx))
    return tuple(Transform(f"shift({dy},{dx})", shift=(dy, dx)) for dy, dx in seen)


def elements(group: str, shape: tuple[int, int]) -> list[Transform]:
    """Every non-identity element of ``group`` usable on ``shape``, in the documented order."""
    if group in _SQUARE_ONLY and shape[0] != shape[1]:
        raise ValueError(f"group {group} needs a square image, got {list(shape)}")
    if group == "rot90":
        return list(_ROTATIONS)
    if group == "flips":
        return [_FLIP_H, _FLIP_V, _FLIP_HV]
    if group == "D4":
        return list(_D4)
    if group == "shifts":
        return list(_shifts(*shape))
    raise ValueError(f"group must be one of {list(GROUPS)}, got {group!r}")


def default_group(family: str, shape: tuple[int, int]) -> str:
    """The family's group; D4 becomes flips on a non-square image (D4 needs a square)."""
    group = DEFAULT_GROUP[family]
    if group in _SQUARE_ONLY and shape[0] != shape[1]:
        return "flips"
    return group


def select(group: str, shape: tuple[int, int], transforms: int | None) -> list[Transform]:
    """The set ``S``: the first ``transforms`` elements (default: all, or 4 shifts)."""
    available = elements(group, shape)
    if transforms is None:
        transforms = DEFAULT_SHIFTS if group == "shifts" else len(available)
    if not 1 <= transforms <= len(available):
        raise ValueError(
            f"group {group} has {len(available)} usable elements for shape {list(shape)}; "
            f"transforms must lie in [1, {len(available)}]"
        )
    return available[:transforms]


def score(x_hat: np.ndarray, x_tilde: np.ndarray, s: list[Transform]) -> float:
    """``mean_g ‖x̃_g - T_g x̂‖² / ‖T_g x̂‖²`` for ``x̂`` [H, W] and ``x̃`` [|S|, H, W]."""
    x_hat = x_hat.astype(np.float64)
    errors = []
    for g, xt in zip(s, x_tilde, strict=True):
        xg = g.apply(x_hat)
        # ‖T_g x̂‖ = ‖x̂‖ for these permutations; the floor guards an all-zero x̂.
        errors.append(float(np.sum((xt - xg) ** 2)) / max(float(np.sum(xg**2)), 1e-30))
    return float(np.mean(errors))


def score_db(value: float) -> float:
    """``-10 log10(score)``, with the score floored at :data:`SCORE_FLOOR`."""
    return float(-10.0 * np.log10(max(value, SCORE_FLOOR)))


def error_map(x_hat: np.ndarray, x_tilde: np.ndarray, s: list[Transform]) -> np.ndarray:
    """Per-pixel ``sqrt(mean_g (T_g⁻¹ x̃_g - x̂)²)`` as float32 [H, W]."""
    back = np.stack([g.inverse().apply(xt) for g, xt in zip(s, x_tilde, strict=True)])
    diff = back.astype(np.float64) - x_hat.astype(np.float64)
    return np.sqrt(np.mean(diff**2, axis=0)).astype(np.float32)
