"""The suite's YAML files chosen on the command line: a shipped one by name, or your own by path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gateway import validation


def read_named(
    name: str, directory: Path, *, option: str, kind: str, error: type[Exception]
) -> tuple[Path, Any]:
    """(the file, its parsed YAML) for *name*: ``directory/<name>.yaml``, or *name* itself when it
    ends in ``.yaml``/``.yml``. A missing file raises *error* naming *option* and the shipped
    *kind* files; a file that is not YAML raises it naming the file (never its content)."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else directory / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in directory.glob("*.yaml")))
        raise error(f"{option} {name!r}: no such {kind}; known: {known} (in {directory})")
    try:
        return path, yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise error(f"{path}: {validation.not_yaml(exc)}") from None
