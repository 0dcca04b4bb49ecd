from __future__ import annotations

from pathlib import Path

from gateway.settings_doc import render

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_settings_page_matches_the_code() -> None:
    page = (DOCS / "gateway-settings.md").read_text()
    assert page == render(), "regenerate: .venv/bin/python -m gateway.settings_doc > docs/gateway-settings.md"


def test_stack_config_page_matches_the_code() -> None:
    from infra.config_doc import render as render_stack_config

    page = (DOCS / "stack-config.md").read_text()
    hint = "regenerate: .venv/bin/python -m infra.config_doc > docs/stack-config.md"
    assert page == render_stack_config(), hint
