"""Model cards for people: a model directory's ``README.md`` rendered from its ``model.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from service.models.store import CARD_FILE


def render(directory: Path) -> str:
    card: dict[str, Any] = json.loads((directory / CARD_FILE).read_text())
    training = card.get("training", {})
    lines = [
        f"# {card['name']} (version {card['version']})",
        "",
        f"Architecture `{card['arch']}`{' ' + json.dumps(card['arch_args']) if card.get('arch_args') else ''}, "
        f"scale x{card['scale']}: "
        f"{card.get('parameters', '?'):,} parameters, {card.get('macs_per_lr_pixel', '?'):,} "
        "multiply-adds per LR pixel. Input: " + card.get("input", "luminance Y") + ".",
        "",
        f"Weights: `{card['weights']}`, sha256 `{card['sha256']}`.",
        "",
        "## Training",
        "",
        f"- data: {', '.join(training.get('data', []))} (never `eval/`)",
        f"- steps: {training.get('steps')} in all; the last segment's batch {training.get('batch_size')}, "
        f"HR patch {training.get('hr_patch_px')} px",
        f"- duration: {training.get('duration_s', 0) / 60:.0f} min wall clock on "
        + (f"{training.get('threads')} CPU thread(s)" if training.get("device", "cpu") == "cpu" else "a GPU")
        + ", all segments",
    ]
    initialised = training.get("initialised_from")
    if initialised:
        lines.append(
            f"- initialised from `{initialised['model']}` (sha256 `{initialised.get('sha256', '?')[:12]}...`): "
            f"{len(initialised['tensors'])} tensors whose names and shapes match"
        )
    for segment in training.get("segments", []):
        lines.append(f"- from step {segment['from_step']}: `{segment['command']}`")
    if training.get("resumed_at"):
        steps = ", ".join(str(s) for s in training["resumed_at"])
        lines.append(f"- resumed with the same command at step {steps} (the patch sampler reseeds there)")
    if not training.get("segments") and training.get("command"):
        lines.append(f"- command: `{training['command']}`")
    if training.get("segments"):
        lines.append(
            f"- train it again: `python -m service.train --replay model_store/{card['name']}/{card['version']}`"
        )
    lines += ["", "![loss and Set5 PSNR during training](curve.png)", ""]
    benchmarks = card.get("benchmarks") or {}
    if benchmarks:
        lines += [
            "## Quality (PSNR dB / SSIM on Y, shave r, benchmark LR files, through the server)",
            "",
            "| set | this model | bicubic (torch, served) | gain |",
            "|---|---|---|---|",
        ]
        for set_name, v in benchmarks.items():
            gain = v["psnr_db"] - v["bicubic_psnr_db"] if v.get("bicubic_psnr_db") is not None else None
            lines.append(
                f"| {set_name} | {v['psnr_db']:.2f} / {v['ssim']:.4f} | "
                f"{v.get('bicubic_psnr_db') or 0:.2f} / {v.get('bicubic_ssim') or 0:.4f} | "
                f"{'' if gain is None else f'{gain:+.2f} dB'} |"
            )
        lines += ["", f"Written by `{card.get('benchmarks_command', 'python -m service.evaluate --write-cards')}`.", ""]
    lines += [card.get("license_note", ""), ""]
    return "\n".join(lines)


def write(directory: Path) -> Path:
    path = directory / "README.md"
    path.write_text(render(directory))
    return path
