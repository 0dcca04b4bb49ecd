"""A model's ``source`` and ``manifest_sha256`` rewritten in stacks/Pulumi.<stack>.yaml
(``sovereign models import --pin``, ``sovereign models rollback``): a ruamel.yaml round-trip keeps
comments and layout, any other change to the file is refused, and the result must be a valid stack
config before it is written.
"""

from __future__ import annotations

import difflib
import io
import re
from pathlib import Path
from typing import Any

from infra.weights.manifest import ModelsError


def _yaml() -> Any:
    from ruamel.yaml import YAML

    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)  # the layout of stacks/*.yaml
    return y


def pinned_text(text: str, model: str, source: str, manifest_sha256: str, where: str) -> str:
    """*text* (a stack file) with the model's ``source`` and ``manifest_sha256`` set, comments and
    layout kept; refused if any other line would change."""
    y = _yaml()
    document = y.load(text)
    try:
        entries = document["config"]["sovereign-llm:platform"]["models"]
        (entry,) = [e for e in entries if e.get("name") == model]
    except (KeyError, TypeError, ValueError):
        raise ModelsError(f"{where}: no single platform.models entry named {model!r} to rewrite") from None
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    entry["source"] = source
    digest = DoubleQuotedScalarString(manifest_sha256)  # quoted: YAML reads "1e5…" or all digits as numbers
    if "manifest_sha256" in entry:
        entry["manifest_sha256"] = digest
    else:
        keys = list(entry)
        after = "manifest" if "manifest" in entry else "source"
        entry.insert(keys.index(after) + 1, "manifest_sha256", digest)
    out = io.StringIO()
    y.dump(document, out)
    new = out.getvalue()
    for line in difflib.unified_diff(text.splitlines(), new.splitlines(), lineterm="", n=0):
        if line.startswith(("---", "+++", "@@")):
            continue
        if not re.match(r"^[-+]\s+(source|manifest_sha256):", line):
            raise ModelsError(
                f"{where}: rewriting it would change more than {model}'s source and manifest_sha256 "
                "(its layout is not one ruamel.yaml keeps): set them by hand"
            )
    return new


def pin(stacks_dir: Path, stack: str, model: str, source: str, manifest_sha256: str) -> Path:
    """Set the model's ``source`` and ``manifest_sha256`` in stacks/Pulumi.<stack>.yaml, after
    checking that the result is a valid stack config."""
    from infra import config

    path = config.stack_file(stacks_dir, stack)
    new = pinned_and_checked(path, stack, model, source, manifest_sha256)
    path.write_text(new, encoding="utf-8")
    return path


def pinned_and_checked(path: Path, stack: str, model: str, source: str, manifest_sha256: str) -> str:
    import yaml

    from infra import config

    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        raise ModelsError(f"{path}: cannot be read") from None
    new = pinned_text(text, model, source, manifest_sha256, str(path))
    document = yaml.safe_load(new) or {}
    sections = {
        str(k).partition(":")[2]: v
        for k, v in (document.get("config") or {}).items()
        if str(k).partition(":")[0] == config.PROJECT
    }
    config.parse(stack, sections, str(path))  # StackConfigError names the bad key
    return new
