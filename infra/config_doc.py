"""Render docs/stack-config.md from the stack config models (one source of truth).

.venv/bin/python -m infra.config_doc > docs/stack-config.md
"""

from __future__ import annotations

import typing

from pydantic import BaseModel

from gateway.settings_doc import default_text
from infra.config import PROJECT, SECTIONS, StackConfig


def _nested(annotation: object) -> type[BaseModel] | None:
    """A sub-model (platform.gateway) or the model inside list[Model] (servers, keys), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _table(model: type[BaseModel], prefix: str) -> list[str]:
    lines = ["| key | default | meaning |", "|---|---|---|"]
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        lines.append(f"| `{prefix}{name}` | {default_text(field)} | {field.description or ''} |")
        inner = _nested(field.annotation)
        if inner is not None:
            is_list = typing.get_origin(field.annotation) is list
            nested.append((f"{prefix}{name}{'[]' if is_list else ''}", inner))
    for title, inner in nested:
        intro = f"Each entry of `{title}`:" if title.endswith("[]") else f"`{title}`:"
        lines += ["", intro, "", *_table(inner, "")]
    return lines


def render() -> str:
    lines = [
        "# Stack config reference",
        "",
        "Generated from `infra/config.py` by `python -m infra.config_doc`; a test keeps this page in",
        "step with the code. Each section is one Pulumi config key holding an object, under the",
        f"project namespace (`{PROJECT}:<section>`) in `stacks/Pulumi.<stack>.yaml`. Unknown sections",
        "and keys are refused. How the stacks are used: [region-stacks.md](region-stacks.md).",
    ]
    for section in SECTIONS:
        field = StackConfig.model_fields[section]
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"section {section} is not a model")
        required = "required" if field.is_required() else "optional, every key defaulted"
        lines += ["", f"## `{PROJECT}:{section}` ({required})", "", (model.__doc__ or "").strip(), ""]
        lines += _table(model, "")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
