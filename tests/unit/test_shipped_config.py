"""The settings file shipped in config/ must load and match the built-in defaults."""

from __future__ import annotations

from pathlib import Path

from config.settings import Settings, load_settings

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "engagewatch.yaml"


def test_shipped_settings_load_and_document_every_setting() -> None:
    loaded = load_settings(SHIPPED, environ={})
    assert loaded == Settings()
    text = SHIPPED.read_text()
    for name in Settings.model_fields:
        assert f"\n{name}:" in text, f"config/engagewatch.yaml does not show {name}"
