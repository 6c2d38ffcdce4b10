"""The model store on disk: ``<root>/<name>/<version>/model.json`` + ``weights.safetensors``.

``model.json`` is the model's card (torchvision's weights metadata, on disk): architecture and
its arguments, scale, cost, training data and command, benchmark table, and the sha256 of the
weights, which is checked before any byte of them is used. Weights are safetensors: no pickle.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from service.models.registry import ARCHITECTURES, count_parameters, macs_per_lr_pixel

CARD_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"


class ModelStoreError(RuntimeError):
    """The store is missing, incomplete or corrupt; the server must not start on it."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelCard:
    """What ``model.json`` says about one model version."""

    name: str
    version: str
    arch: str
    scale: int
    sha256: str
    directory: Path
    arch_args: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        """The upscale method this model serves (its architecture name)."""
        return self.arch

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @classmethod
    def read(cls, directory: Path) -> ModelCard:
        card_path = directory / CARD_FILE
        try:
            raw = json.loads(card_path.read_text())
        except FileNotFoundError:
            raise ModelStoreError(f"{card_path} is missing") from None
        except json.JSONDecodeError as exc:
            raise ModelStoreError(f"{card_path} is not valid JSON: {exc}") from None
        try:
            return cls(
                name=str(raw["name"]),
                version=str(raw["version"]),
                arch=str(raw["arch"]),
                scale=int(raw["scale"]),
                sha256=str(raw["sha256"]),
                directory=directory,
                arch_args=dict(raw.get("arch_args", {})),
                raw=raw,
            )
        except KeyError as exc:
            raise ModelStoreError(f"{card_path} lacks the field {exc}") from None


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)


def discover_versions(root: Path) -> dict[str, list[ModelCard]]:
    """Every version of every model under ``root``: name -> cards, oldest first."""
    if not root.is_dir():
        raise ModelStoreError(f"model store {root} does not exist")
    found: dict[str, list[ModelCard]] = {}
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        versions = sorted(
            (p for p in model_dir.iterdir() if (p / CARD_FILE).exists()),
            key=lambda p: _version_key(p.name),
        )
        if versions:
            found[model_dir.name] = [ModelCard.read(v) for v in versions]
    return found


def discover(root: Path) -> list[ModelCard]:
    """The newest version of every model under ``root``."""
    return [cards[-1] for cards in discover_versions(root).values()]


def load_weights(card: ModelCard) -> nn.Module:
    """Build the card's architecture and load its weights after checking their sha256."""
    weights = card.directory / WEIGHTS_FILE
    if not weights.exists():
        raise ModelStoreError(f"{weights} is missing")
    actual = sha256_of(weights)
    if actual != card.sha256:
        raise ModelStoreError(
            f"{weights}: sha256 is {actual}, but {card.directory / CARD_FILE} says {card.sha256}"
        )
    try:
        model = ARCHITECTURES.build(card.arch, scale=card.scale, **card.arch_args)
    except (KeyError, TypeError) as exc:
        raise ModelStoreError(f"{card.ref}: cannot build {card.arch!r}: {exc}") from None
    try:
        model.load_state_dict(load_file(str(weights)))
    except RuntimeError as exc:
        raise ModelStoreError(f"{card.ref}: weights do not fit {card.arch!r}: {exc}") from None
    return model.eval()


def write_model_dir(
    root: Path,
    model: nn.Module,
    *,
    arch: str,
    arch_args: dict[str, Any],
    version: str,
    training: dict[str, Any],
) -> Path:
    """Write weights and a fresh card; benchmarks are added later by the evaluation command."""
    scale = int(model.scale)
    name = f"{arch}-x{scale}"
    directory = root / name / version
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_FILE
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights))
    weights.chmod(0o644)  # safetensors writes 0600; the serving user is often another user
    card = {
        "name": name,
        "version": version,
        "arch": arch,
        "arch_args": arch_args,
        "scale": scale,
        "parameters": count_parameters(model),
        "macs_per_lr_pixel": macs_per_lr_pixel(model),
        "input": "luminance Y (ITU-R BT.601 studio swing, MATLAB rgb2ycbcr) / 255",
        "weights": WEIGHTS_FILE,
        "sha256": sha256_of(weights),
        "training": training,
        "license_note": "trained on T91 and BSDS200 (research use; see datasets README)",
        "benchmarks": {},
    }
    (directory / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    return directory


def update_card(directory: Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into an existing card (used by the evaluation command)."""
    path = directory / CARD_FILE
    card: dict[str, Any] = json.loads(path.read_text())
    card.update(fields)
    path.write_text(json.dumps(card, indent=2) + "\n")
    return card

