"""The model zoo on disk: manifest, hash check, model cards.

``models/zoo/manifest.json`` lists every file with its sha256. Loading the
zoo verifies each one and refuses the whole zoo on a mismatch: a worker must
never serve a graph other than the one its card describes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.operators.compile import CompiledOperator

__all__ = ["ModelCard", "Zoo", "ZooError"]


class ZooError(Exception):
    """The zoo is missing, malformed, or a file does not match its sha256."""


@dataclass(frozen=True)
class ModelCard:
    """A served model: what it is and which operators it accepts."""

    id: str
    kind: str
    title: str
    description: str
    families: list[str]
    graphs: dict[str, str]
    raw: dict[str, Any] = field(repr=False)

    def check(self, op: CompiledOperator) -> None:
        """Raise ``ValueError`` if this model cannot serve ``op``."""
        if op.family not in self.families:
            raise ValueError(
                f"model {self.id!r} does not serve operator type {op.family!r}; "
                f"it serves {', '.join(self.families)}"
            )
        if op.kernel not in self.graphs:
            raise ValueError(f"model {self.id!r} has no graph for this {op.family} operator")
        constraints = self.raw.get("constraints") or {}
        for key, got in (("shape", op.image_shape), ("measurement_shape", op.measurement_shape)):
            want = constraints.get(key)
            if want is not None and list(got) != list(want):
                raise ValueError(
                    f"model {self.id!r} was trained for operators with {key} {want}, "
                    f"got {list(got)}"
                )


@dataclass(frozen=True)
class Zoo:
    """Verified zoo: model cards plus the path and hash of every file."""

    root: Path
    files: dict[str, str]  # relative path -> sha256
    cards: dict[str, ModelCard]

    @classmethod
    def load(cls, root: Path | str) -> Zoo:
        root = Path(root)
        manifest_path = root / "manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text())
            entries = manifest["files"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ZooError(f"cannot read {manifest_path}: {exc}") from exc
        files: dict[str, str] = {}
        for rel, entry in sorted(entries.items()):
            path = root / rel
            try:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError as exc:
                raise ZooError(f"zoo file {rel} is missing: {exc}") from exc
            if digest != entry["sha256"]:
                raise ZooError(f"zoo file {rel} does not match its sha256 in manifest.json")
            files[rel] = digest
        cards = {}
        for rel in files:
            if rel.startswith("cards/") and rel.endswith(".json"):
                card = _card(json.loads((root / rel).read_text()), files)
                cards[card.id] = card
        if not cards:
            raise ZooError(f"no model cards in {root}")
        return cls(root, files, cards)

    def path(self, rel: str) -> Path:
        """Absolute path of a verified zoo file."""
        if rel not in self.files:
            raise ZooError(f"{rel} is not listed in manifest.json")
        return self.root / rel


def _card(raw: dict[str, Any], files: dict[str, str]) -> ModelCard:
    try:
        graphs = dict(raw["graphs"])
        missing = [g for g in graphs.values() if g not in files]
        if missing:
            raise ZooError(f"card {raw['id']} names graphs not in the manifest: {missing}")
        served = dict(raw)
        served["sha256"] = {g: files[g] for g in sorted(set(graphs.values()))}
        return ModelCard(
            id=raw["id"],
            kind=raw["kind"],
            title=raw["title"],
            description=raw["description"],
            families=list(raw["families"]),
            graphs=graphs,
            raw=served,
        )
    except (KeyError, TypeError) as exc:
        raise ZooError(f"malformed model card: {exc}") from exc
