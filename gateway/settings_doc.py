"""Render docs/gateway-settings.md from the settings models (one source of truth).

.venv/bin/python -m gateway.settings_doc > docs/gateway-settings.md
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from gateway.settings import GatewaySettings, Upstream


def default_text(field: FieldInfo) -> str:
    """A field's default as shown in the generated reference pages."""
    if field.default_factory is not None:
        value: Any = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "see section"
    return f"`{json.dumps(value, default=str)}`"


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows: list[str] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(_rows(annotation, f"{prefix}{name}."))
            continue
        env = "SOVEREIGN_GATEWAY__" + f"{prefix}{name}".replace(".", "__").upper()
        rows.append(f"| `{prefix}{name}` | {default_text(field)} | `{env}` | {field.description or ''} |")
    return rows


def render() -> str:
    lines = [
        "# Gateway settings",
        "",
        "Generated from `gateway/settings.py` by `python -m gateway.settings_doc`; a test keeps",
        "this page in step with the code. Settings come from the YAML file named by",
        "`SOVEREIGN_GATEWAY_CONFIG` (or `--config`) and from environment variables, which win.",
        "Unknown keys are refused at start.",
        "",
        "| setting | default | environment variable | meaning |",
        "|---|---|---|---|",
        *_rows(GatewaySettings, ""),
        "",
        "## One upstream (`upstreams.<alias>`)",
        "",
        "| key | default | meaning |",
        "|---|---|---|",
    ]
    for name, field in Upstream.model_fields.items():
        lines.append(f"| `{name}` | {default_text(field)} | {field.description or ''} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
