"""Commands nobody imports: training, datasets, checkpoints, evaluation, model cards, the gain
fit, plots. They use the server's code; the server never uses theirs."""

from __future__ import annotations

import importlib.util

TRAIN_EXTRA = ("matplotlib",)


def require_train_extra(command: str) -> None:
    """Exit with the install line when the ``train`` extra is missing (the server image has none)."""
    missing = [name for name in TRAIN_EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(
            f"{command} needs {', '.join(missing)}, which the server install leaves out: "
            "pip install 'subpixel[train]'"
        )
