from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.config import Settings

from .helpers import REPO_ROOT


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"SR_{name.upper()}" not in readme]
    assert not missing, f"settings missing from the README table: {missing}"


def test_environment_prefix_and_api_key_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SR_MAX_QUEUE", "7")
    monkeypatch.setenv("SR_API_KEYS", "a, b,,c")
    monkeypatch.setenv("SR_LOG_LEVEL", "debug")
    settings = Settings()
    assert settings.max_queue == 7 and settings.api_keys == ["a", "b", "c"] and settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("name", "value"),
    [("SR_DEVICE", "tpu"), ("SR_DTYPE", "int8"), ("SR_PNG_COMPRESS_LEVEL", "12"), ("SR_MAX_QUEUE", "0")],
)
def test_bad_settings_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()
