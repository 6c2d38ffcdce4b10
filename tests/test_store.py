"""The model store: checksums are checked, a broken store stops the server from starting."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.models.espcn import ESPCN
from service.models.registry import count_parameters, macs_per_lr_pixel
from service.models.store import (
    ModelStoreError,
    discover,
    discover_versions,
    load_weights,
    write_model_dir,
)

from .helpers import SHIPPED_STORE


def _store_with_one_model(root: Path, version: str = "1") -> Path:
    torch.manual_seed(0)
    return write_model_dir(root, ESPCN(2), arch="espcn", arch_args={}, version=version, training={})


def test_written_model_loads_back_identically(tmp_path: Path) -> None:
    directory = _store_with_one_model(tmp_path)
    (card,) = discover(tmp_path)
    model = load_weights(card)
    torch.manual_seed(0)
    reference = ESPCN(2)
    x = torch.rand(1, 1, 8, 8)
    assert torch.equal(model(x), reference(x))
    assert card.ref == "espcn-x2@1" and card.directory == directory


def test_newest_version_wins(tmp_path: Path) -> None:
    _store_with_one_model(tmp_path, "1")
    _store_with_one_model(tmp_path, "10")
    _store_with_one_model(tmp_path, "2")
    assert [c.version for c in discover(tmp_path)] == ["10"]


def test_checksum_mismatch_is_refused(tmp_path: Path) -> None:
    directory = _store_with_one_model(tmp_path)
    weights = directory / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    (card,) = discover(tmp_path)
    with pytest.raises(ModelStoreError, match="sha256"):
        load_weights(card)


def test_missing_weights_are_refused(tmp_path: Path) -> None:
    directory = _store_with_one_model(tmp_path)
    (directory / "weights.safetensors").unlink()
    (card,) = discover(tmp_path)
    with pytest.raises(ModelStoreError, match="missing"):
        load_weights(card)


def test_card_without_a_field_is_refused(tmp_path: Path) -> None:
    directory = _store_with_one_model(tmp_path)
    card = json.loads((directory / "model.json").read_text())
    del card["sha256"]
    (directory / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelStoreError, match="sha256"):
        discover(tmp_path)


def test_server_does_not_start_on_a_corrupt_store(tmp_path: Path) -> None:
    shutil.copytree(SHIPPED_STORE, tmp_path / "store")
    # The served (newest) version: a corrupt older one is never loaded.
    served = next(c for c in discover(tmp_path / "store") if c.arch == "espcn" and c.scale == 3)
    weights = served.directory / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    app = create_app(Settings(model_store=tmp_path / "store", device="cpu"))
    with pytest.raises(ModelStoreError, match="sha256"):
        with TestClient(app):
            pass


def test_server_does_not_start_without_a_store(tmp_path: Path) -> None:
    app = create_app(Settings(model_store=tmp_path / "nowhere", device="cpu"))
    with pytest.raises(ModelStoreError, match="does not exist"):
        with TestClient(app):
            pass


def test_shipped_store_has_espcn_for_every_scale() -> None:
    cards = discover(SHIPPED_STORE)
    assert {(c.arch, c.scale) for c in cards} >= {("espcn", 2), ("espcn", 3), ("espcn", 4)}
    for card in cards:
        load_weights(card)  # checks the sha256 of what ships


def test_every_shipped_card_counts_what_its_network_computes() -> None:
    # The tiers' floors compare these counts (issue #17: "at no more multiply-adds"), and
    # /v1/methods reports them: a card written before the count changed would go stale.
    for cards in discover_versions(SHIPPED_STORE).values():
        for card in cards:
            model = load_weights(card)
            assert card.raw["macs_per_lr_pixel"] == macs_per_lr_pixel(model), card.ref
            assert card.raw["parameters"] == count_parameters(model), card.ref
