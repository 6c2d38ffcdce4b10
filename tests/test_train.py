"""Training: resumable runs, warm restarts, initialising from another model, scale augmentation.

These run the real training command on a tiny dataset (two pictures for ``train/``, the
Set5 copy in ``tests/data`` for the validation curve), a few steps each.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from service.imaging.borders import upscale_plane
from service.imaging.colour import rgb_to_y
from service.models.ecb import PlainSubPixel
from service.models.registry import ARCHITECTURES, macs_per_lr_pixel
from service.models.resident import ModelSet
from service.models.store import ModelCard, load_weights
from service.offline import train
from service.offline.datasets import TrainImage, load_rgb, train_images

from .helpers import DATA, SHIPPED_STORE, pattern


@pytest.fixture
def tiny_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "datasets"
    for name, size, seed in (("T91", (61, 50), 1), ("BSDS200", (72, 64), 2)):
        (root / "train" / name).mkdir(parents=True)
        Image.fromarray(pattern(*size, seed=seed)).save(root / "train" / name / "a.png")
    (root / "eval").symlink_to((DATA / "eval").resolve())
    monkeypatch.setenv("SR_DATASETS", str(root))
    return root


def test_learning_rate_decays_log_linearly_from_start_to_final() -> None:
    assert train.learning_rate(0, 100, 1e-3, 1e-5) == pytest.approx(1e-3)
    assert train.learning_rate(50, 100, 1e-3, 1e-5) == pytest.approx(1e-4)
    assert train.learning_rate(100, 100, 1e-3, 1e-5) == pytest.approx(1e-5)
    assert train.learning_rate(150, 100, 1e-3, 1e-5) == pytest.approx(1e-5)


def test_resample_adds_shrunk_copies_of_every_image(tiny_datasets: Path) -> None:
    plain = train_images(3)
    augmented = train_images(3, resample=(0.8, 0.6))
    assert len(plain) == 2 and len(augmented) == 6
    # Each source image is followed by its shrunk copies, smaller each time.
    first, shrunk_08, shrunk_06 = augmented[:3]
    assert torch.equal(first.hr, plain[0].hr)
    assert first.hr.shape[0] > shrunk_08.hr.shape[0] > shrunk_06.hr.shape[0]
    for pair in augmented:
        assert pair.hr.shape == (pair.lr.shape[0] * 3, pair.lr.shape[1] * 3)
        assert 0.0 <= float(pair.lr.min()) and float(pair.lr.max()) <= 1.0


def test_shifts_add_copies_whose_lr_samples_another_phase(tiny_datasets: Path) -> None:
    plain = train_images(3)
    shifted = train_images(3, shifts=((1, 2),))
    assert len(shifted) == 2 * len(plain)
    base, moved = shifted[:2]
    assert torch.equal(base.hr, plain[0].hr)
    # The copy's HR is the source with one row and two columns cut off (then cropped to the
    # scale), and its LR is a fresh MATLAB downscale of it, not a crop of the unshifted LR.
    h, w = moved.hr.shape
    source = load_rgb(tiny_datasets / "train" / "T91" / "a.png")
    assert torch.allclose(moved.hr, (rgb_to_y(source[:, 1 : 1 + h, 2 : 2 + w]) / 255.0).float())
    assert moved.hr.shape == (moved.lr.shape[0] * 3, moved.lr.shape[1] * 3)
    overlap = base.lr[: moved.lr.shape[0], : moved.lr.shape[1]]
    assert not torch.allclose(moved.lr, overlap, atol=1e-3)


@pytest.mark.parametrize("shift", ["3,0", "0,0", "-1,1", "1"])
def test_shifts_outside_the_scale_are_refused(shift: str) -> None:
    with pytest.raises(SystemExit):
        train.parse_args(["--scale", "3", "--shifts", shift])


def test_init_from_copies_the_matching_tensors_and_keeps_the_rest() -> None:
    source_dir = SHIPPED_STORE / "espcn-x3" / "1"
    source = load_weights(ModelCard.read(source_dir))
    model = ARCHITECTURES.build("espcn", scale=2)
    head_before = model.conv3.weight.detach().clone()
    copied = train.init_from(model, source_dir)
    # The body has the same shapes at every scale; the head has r*r outputs, so it is skipped.
    assert copied == ["conv1.bias", "conv1.weight", "conv2.bias", "conv2.weight"]
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert torch.equal(model.conv3.weight, head_before)


def _tiny_run(work: Path, store: Path) -> list[str]:
    """The flags every run here shares: two-patch batches, no validation, where it writes."""
    return ["--batch-size", "2", "--validate-every", "1000", "--work-dir", str(work), "--model-store", str(store)]


def _card(store: Path) -> dict:
    return json.loads((store / "espcn-x2" / "1" / "model.json").read_text())


def test_a_run_resumes_and_a_warm_restart_is_recorded(tiny_datasets: Path, tmp_path: Path) -> None:
    work, store = tmp_path / "run", tmp_path / "store"
    common = ["--scale", "2", *_tiny_run(work, store), "--checkpoint-every", "2"]
    train.main([*common, "--steps", "4"])
    first = _card(store)
    assert first["training"]["steps"] == 4
    assert len(first["training"]["segments"]) == 1

    # The same command again has nothing left to do and trains no further.
    train.main([*common, "--steps", "4"])
    assert _card(store)["training"]["steps"] == 4
    assert _card(store)["training"]["segments"] == first["training"]["segments"]

    # A longer warm restart continues from step 4 and says so in the card.
    train.main([*common, "--steps", "6", "--lr", "5e-4", "--restart-schedule", "--resample", "0.8"])
    card = _card(store)
    assert card["training"]["steps"] == 6
    segments = card["training"]["segments"]
    assert [s["from_step"] for s in segments] == [0, 4]
    assert "--restart-schedule" in segments[1]["command"]
    assert card["sha256"] != first["sha256"]
    assert (store / "espcn-x2" / "1" / "curve.png").stat().st_size > 0
    readme = (store / "espcn-x2" / "1" / "README.md").read_text()
    assert f"- from step 4: `{segments[1]['command']}`" in readme
    assert "`python -m service.train --replay model_store/espcn-x2/1`" in readme
    # The exported weights load through the store (sha256 checked) and upscale.
    model = load_weights(ModelCard.read(store / "espcn-x2" / "1"))
    assert model(torch.rand(1, 1, 8, 8)).shape == (1, 1, 16, 16)


def test_init_from_is_recorded_in_the_card(tiny_datasets: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    train.main(["--scale", "2", "--steps", "2", *_tiny_run(tmp_path / "run", store),
                "--init-from", str(SHIPPED_STORE / "espcn-x3" / "1")])
    initialised = _card(store)["training"]["initialised_from"]
    assert initialised["model"].endswith("espcn-x3/1")
    assert "conv1.weight" in initialised["tensors"] and "conv3.weight" not in initialised["tensors"]
    assert initialised["sha256"] == json.loads((SHIPPED_STORE / "espcn-x3" / "1" / "model.json").read_text())["sha256"]
    readme = (store / "espcn-x2" / "1" / "README.md").read_text()
    assert "initialised from" in readme and "4 tensors whose names and shapes match" in readme


def test_a_reparameterisable_network_trains_with_l1_and_is_stored_to_be_served_folded(
    tiny_datasets: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    arch_args = {"channels": 4, "blocks": 1}
    train.main(["--scale", "2", "--steps", "3", "--arch", "ecbsr", "--arch-args", json.dumps(arch_args),
                "--loss", "l1", "--last-layer-lr-factor", "0.1", *_tiny_run(tmp_path / "run", store)])
    card = ModelCard.read(store / "ecbsr-x2" / "1")
    assert card.arch == "ecbsr" and card.arch_args == arch_args
    assert "--loss l1" in card.raw["training"]["command"]
    stored = load_weights(card)  # the training form: every branch, so the card can be trained on
    torch.manual_seed(0)  # the run's --seed: the weights it started from
    untrained = ARCHITECTURES.build("ecbsr", scale=2, **arch_args)
    assert not torch.equal(stored.tail.conv3x3.weight, untrained.tail.conv3x3.weight)  # the head trained
    assert not torch.equal(stored.blocks[0].conv3x3.weight, untrained.blocks[0].conv3x3.weight)  # the body too
    # Served folded: plain 3x3 layers computing what the branches compute, counted as served.
    served = ModelSet.load(store, torch.device("cpu"), torch.float32).get("ecbsr", 2)
    assert served is not None and isinstance(served.module, PlainSubPixel)
    assert card.raw["macs_per_lr_pixel"] == macs_per_lr_pixel(served.module)
    x = torch.rand(1, 1, 20, 20)
    with torch.inference_mode():
        crop = served.module.halo * 2
        want = stored(x)[..., crop:-crop, crop:-crop]
        assert torch.allclose(served.module.forward_valid(x), want, atol=1e-5)


def test_the_card_records_the_command_without_local_paths(tiny_datasets: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    train.main(["--scale", "2", "--steps", "2", *_tiny_run(tmp_path / "run", store), "--device", "cpu"])
    training = _card(store)["training"]
    expected = "python -m service.train --scale 2 --steps 2 --batch-size 2 --validate-every 1000"
    assert training["command"] == expected
    assert training["segments"] == [{"from_step": 0, "command": expected}]
    assert training["device"] == "cpu"


def test_replay_runs_the_recorded_segments_again_to_the_same_weights(
    tiny_datasets: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    common = ["--scale", "2", *_tiny_run(tmp_path / "run", store)]
    # Two segments: stopped at 2 and resumed with the same command (one segment, the sampler
    # reseeded at 2), stopped at 3 of 5, then a warm restart to 6 with another learning rate.
    train.main([*common, "--steps", "5", "--stop-at", "2"])
    train.main([*common, "--steps", "5", "--stop-at", "3"])
    assert not (store / "espcn-x2").exists()  # a stopped run exports nothing
    train.main([*common, "--steps", "6", "--lr", "5e-4", "--restart-schedule"])
    original = _card(store)
    assert [s["from_step"] for s in original["training"]["segments"]] == [0, 3]
    assert original["training"]["resumed_at"] == [2]
    assert "--stop-at" not in original["training"]["segments"][0]["command"]
    assert "resumed with the same command at step 2" in (store / "espcn-x2" / "1" / "README.md").read_text()

    # An export with other (default) flags writes the same weights and keeps the card's
    # batch size: the one that trained them, not the export command's default of 32.
    exported_store = tmp_path / "exported"
    train.main(["--scale", "2", "--export", "--version", "7", "--work-dir", str(tmp_path / "run"),
                "--model-store", str(exported_store)])
    exported = json.loads((exported_store / "espcn-x2" / "7" / "model.json").read_text())
    assert exported["sha256"] == original["sha256"]
    assert exported["training"]["batch_size"] == original["training"]["batch_size"] == 2
    assert exported["training"]["segments"] == original["training"]["segments"]

    replay_store = tmp_path / "replayed"
    train.main(["--replay", str(store / "espcn-x2" / "1"), "--work-dir", str(tmp_path / "replay"),
                "--model-store", str(replay_store)])
    replayed = _card(replay_store)
    assert replayed["training"]["segments"] == original["training"]["segments"]
    assert replayed["training"]["resumed_at"] == [2]
    # Same segments, stopped and resumed at the same steps, draw the same patches: the same weights.
    assert replayed["sha256"] == original["sha256"]


def test_distilled_targets_blend_the_teacher_output_into_hr(tiny_datasets: Path) -> None:
    images = train_images(2)
    teacher_dir = SHIPPED_STORE / "espcn-large-x2" / "1"
    teacher = load_weights(ModelCard.read(teacher_dir))
    taught = [upscale_plane(teacher, im.lr).clamp(0, 1) for im in images]
    assert all(not torch.allclose(t, im.hr, atol=1e-3) for t, im in zip(taught, images, strict=True))
    for weight in (0.0, 0.25, 1.0):
        blended = train.distilled_targets(images, teacher, weight)
        for im, t, b in zip(images, taught, blended, strict=True):
            assert torch.equal(b.lr, im.lr) and b.source == im.source  # --share still applies
            assert torch.allclose(b.hr, (1 - weight) * im.hr + weight * t, atol=1e-6)
    with pytest.raises(ValueError, match="0..1"):
        train.distilled_targets(images, teacher, 1.5)


def test_distillation_is_recorded_and_a_teacher_of_another_scale_refused(
    tiny_datasets: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    teacher = SHIPPED_STORE / "espcn-large-x2" / "1"
    train.main(["--scale", "2", "--steps", "2", *_tiny_run(tmp_path / "run", store),
                "--distill-from", str(teacher), "--distill-weight", "0.5"])
    distilled = _card(store)["training"]["distilled_from"]
    assert distilled["model"].endswith("espcn-large-x2/1") and distilled["weight"] == 0.5
    assert distilled["sha256"] == json.loads((teacher / "model.json").read_text())["sha256"]
    assert "--distill-from" in _card(store)["training"]["command"]
    with pytest.raises(SystemExit, match="x2, not x3"):
        train.main(["--scale", "3", "--steps", "2", *_tiny_run(tmp_path / "run3", store),
                    "--distill-from", str(teacher)])


def _image(source: str, side: int) -> TrainImage:
    return TrainImage(lr=torch.zeros(side, side), hr=torch.zeros(2 * side, 2 * side), source=source)


def test_patch_weights_follow_area_unless_a_set_is_given_a_share() -> None:
    images = [_image("T91", 10), _image("T91", 20), _image("BSDS200", 30), _image("BSDS200", 40)]
    by_area = train.patch_weights(images, {})
    assert by_area.tolist() == pytest.approx([100 / 3000, 400 / 3000, 900 / 3000, 1600 / 3000])
    shared = train.patch_weights(images, {"T91": 0.5})
    # Half for T91, split by area inside it; the other half for BSDS200, by area too.
    assert shared.tolist() == pytest.approx([0.1, 0.4, 0.5 * 900 / 2500, 0.5 * 1600 / 2500])
    with pytest.raises(ValueError, match="names no training images"):
        train.patch_weights(images, {"Set5": 0.5})
    with pytest.raises(ValueError, match="add up to at most 1"):
        train.patch_weights(images, {"T91": 0.7, "BSDS200": 0.6})


def test_a_share_changes_which_set_the_patches_come_from(tiny_datasets: Path) -> None:
    images = train_images(2)
    assert [im.source for im in images] == ["T91", "BSDS200"]
    sampler = train.PatchSampler(images, 2, 9, seed=0, shares={"T91": 0.9})
    picks = torch.multinomial(sampler.weights, 2000, replacement=True, generator=torch.Generator().manual_seed(0))
    assert 0.87 < float((picks == 0).float().mean()) < 0.93
    assert train.parse_shares(["T91=0.25"]) == {"T91": 0.25}
    with pytest.raises(SystemExit, match="SET=FRACTION"):
        train.parse_shares(["T91"])


def test_every_shipped_card_records_the_batch_of_its_last_segment() -> None:
    """The card's batch, HR patch and threads describe the command that trained the weights."""
    import shlex

    for card_path in sorted(SHIPPED_STORE.glob("*/*/model.json")):
        training = json.loads(card_path.read_text())["training"]
        last = training["segments"][-1]["command"] if training.get("segments") else training["command"]
        args = train.parse_args(shlex.split(last)[3:])  # drop "python -m service.train"
        recorded = (training["batch_size"], training["hr_patch_px"], training["threads"])
        assert recorded == (args.batch_size, args.patch * args.scale, args.threads), card_path
