from __future__ import annotations

from pathlib import Path

import pytest

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


def test_module_maps_match_the_docstrings() -> None:
    from infra.modules_doc import all_sections, render

    found = all_sections(DOCS)
    assert {s.package for s in found} >= {"gateway", "infra", "loadtests"}
    hint = "regenerate: .venv/bin/python -m infra.modules_doc --write (or make docs)"
    for section in found:
        text = section.doc.read_text()[section.start : section.end]
        assert text == render(section.package) + "\n", f"{section.doc.name}: {section.package}: {hint}"


def test_every_package_is_in_a_module_map() -> None:
    from infra.modules_doc import unmapped

    assert unmapped(DOCS) == []


def _package(root: Path, modules: dict[str, str]) -> None:
    for name, text in modules.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_module_added_without_regenerating_makes_the_map_stale(tmp_path: Path) -> None:
    from infra.modules_doc import render, updated

    _package(
        tmp_path, {"__init__.py": '"""The package."""\n', "a.py": '"""Does ``a``: one | two.\n\nMore."""\n'}
    )
    doc = tmp_path / "map.md"
    doc.write_text("# Map\n\n<!-- module-map: pkg -->\n<!-- /module-map -->\n\nAfter.\n")
    doc.write_text(updated(doc, tmp_path))
    assert "| `a.py` | Does `a`: one \\| two. |" in doc.read_text()
    assert doc.read_text().endswith("<!-- /module-map -->\n\nAfter.\n")
    assert updated(doc, tmp_path) == doc.read_text()
    _package(tmp_path, {"sub/__init__.py": '"""A subpackage."""\n', "sub/b.py": '"""B."""\n'})
    assert "| `sub/` | A subpackage. |\n| `sub/b.py` | B. |" in render("pkg", tmp_path)
    assert updated(doc, tmp_path) != doc.read_text()


def test_modules_no_map_lists_are_named(tmp_path: Path) -> None:
    from infra.modules_doc import unmapped

    _package(tmp_path, {"__init__.py": '"""The package."""\n', "loose/c.py": '"""C."""\n'})
    _package(tmp_path / "other", {"__init__.py": '"""Another."""\n'})
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "map.md").write_text("<!-- module-map: pkg -->\n<!-- /module-map -->\n")
    found = unmapped(docs, tmp_path, ("pkg", "other/pkg"))
    assert found == ["pkg/loose/c.py", "other/pkg/__init__.py"]


def test_a_module_without_a_docstring_is_refused_by_name(tmp_path: Path) -> None:
    from infra.modules_doc import ModuleMapError, render

    _package(tmp_path, {"__init__.py": '"""The package."""\n', "silent.py": "X = 1\n"})
    with pytest.raises(ModuleMapError, match=r"pkg/silent\.py: no module docstring"):
        render("pkg", tmp_path)


def _listed_files(page: str, heading: str) -> set[str]:
    """The first column's `names` of the first table after *heading* in docs/<page>."""
    lines = (DOCS / page).read_text().split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return {row.split("`")[1] for row in lines[start + 2 : end]}


def test_component_tables_list_every_module_and_only_those() -> None:
    root = DOCS.parent / "infra"
    for page, heading, package in [
        ("platform.md", "# The platform layer", "k8s_platform"),
        ("region-stacks.md", "## What a stack creates", "components"),
    ]:
        modules = {p.name for p in (root / package).glob("*.py") if p.name != "__init__.py"}
        assert _listed_files(page, heading) == modules, f"docs/{page}: the table of infra/{package}/"


# Sizing and SLO targets: not security-relevant, so the example stack may leave them out. Every
# other key of the stack config must appear in it, set or commented out with its effect.
NOT_SECURITY_RELEVANT = {
    "platform.gateway.cpu",
    "platform.gateway.memory",
    "platform.openbao.storage_gi",
    "platform.models.volume_gi",
    "platform.alerting.slo_days",
    "platform.alerting.default_slo",
    "platform.alerting.use_cases",
    "platform.alerting.receivers.severities",
    "platform.alerting.queue_waiting_max",
}


def test_the_example_stack_shows_every_security_relevant_key() -> None:
    import re

    from pydantic import BaseModel

    from infra.config import SECTIONS, StackConfig
    from infra.config_doc import _nested

    text = (DOCS.parent / "stacks" / "Pulumi.eu-central-prod.yaml").read_text()
    missing = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            path = prefix + name
            if path in NOT_SECURITY_RELEVANT:
                continue
            if not re.search(rf"(^|[\s#-]){re.escape(name)}:", text, re.MULTILINE):
                missing.append(path)
            inner = _nested(field.annotation)
            if inner is not None:
                walk(inner, path + ".")

    for section in SECTIONS:
        model = StackConfig.model_fields[section].annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        walk(model, section + ".")
    assert missing == [], "stacks/Pulumi.eu-central-prod.yaml: show (commented) with its effect"
