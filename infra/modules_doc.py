"""Render the module maps in docs/ from the modules' own docstrings (one source of truth).

.venv/bin/python -m infra.modules_doc --write   (or ``make docs``)

A doc holds a map between two markers naming a package directory::

    <!-- module-map: gateway -->
    ...generated...
    <!-- /module-map -->

The map is the package docstring's first paragraph, then a table with one row per module: its
path inside the package and the first paragraph of its docstring, subpackages after the modules
beside them, each introduced by its ``__init__.py``. Docstrings are read with :mod:`ast`, nothing
is imported. A module without a docstring is an error naming the file: a row that says nothing
is how a map goes stale. Without ``--write`` the command prints what would change and exits 1
when a map is out of date.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS = REPO_ROOT / "docs"
PACKAGES = ("gateway", "infra", "loadtests")  # every module of these is in some map
BEGIN = re.compile(r"^<!-- module-map: (?P<package>[\w/.-]+) -->$", re.MULTILINE)
END = "<!-- /module-map -->"
NOTE = "<!-- generated from the module docstrings by `python -m infra.modules_doc --write`; edit those -->"
_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")  # :mod:`gateway.phi.names` -> `gateway.phi.names`


class ModuleMapError(ValueError):
    """A map that cannot be rendered: a module without a docstring, a marker without its end."""


@dataclass(frozen=True)
class Section:
    doc: Path
    package: str
    start: int  # the generated text is doc[start:end]
    end: int


def summary(path: Path, root: Path = REPO_ROOT) -> str:
    """The first paragraph of the module's docstring, on one line, as Markdown for a table cell."""
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    if not docstring or not docstring.strip():
        raise ModuleMapError(f"{path.relative_to(root)}: no module docstring; say what the module is for")
    first = " ".join(docstring.strip().split("\n\n", 1)[0].split())
    first = _ROLE.sub(r"`\1`", first).replace("``", "`")
    return first.replace("|", "\\|")


def _rows(directory: Path, prefix: str, root: Path) -> list[str]:
    rows = []
    for module in sorted(p for p in directory.glob("*.py") if p.name != "__init__.py"):
        rows.append(f"| `{prefix}{module.name}` | {summary(module, root)} |")
    for sub in sorted(p for p in directory.iterdir() if (p / "__init__.py").is_file()):
        rows.append(f"| `{prefix}{sub.name}/` | {summary(sub / '__init__.py', root)} |")
        rows.extend(_rows(sub, f"{prefix}{sub.name}/", root))
    return rows


def render(package: str, root: Path = REPO_ROOT) -> str:
    """The generated text of one map (what stands between its markers)."""
    directory = root / package
    if not (directory / "__init__.py").is_file():
        raise ModuleMapError(f"module-map: {package}: not a package directory")
    return "\n".join(
        [
            NOTE,
            f"`{package}/`: {summary(directory / '__init__.py', root)}",
            "",
            "| module | concern |",
            "|---|---|",
            *_rows(directory, "", root),
        ]
    )


def sections(doc: Path) -> list[Section]:
    text = doc.read_text(encoding="utf-8")
    found = []
    for match in BEGIN.finditer(text):
        end = text.find(END, match.end())
        if end == -1:
            raise ModuleMapError(f"{doc.name}: module-map: {match['package']} has no {END}")
        found.append(Section(doc, match["package"], match.end() + 1, end))
    return found


def all_sections(docs: Path = DOCS) -> list[Section]:
    return [s for doc in sorted(docs.rglob("*.md")) for s in sections(doc)]


def updated(doc: Path, root: Path = REPO_ROOT) -> str:
    """The doc's text with each of its maps regenerated."""
    text = doc.read_text(encoding="utf-8")
    for section in reversed(sections(doc)):
        text = text[: section.start] + render(section.package, root) + "\n" + text[section.end :]
    return text


def unmapped(docs: Path = DOCS, root: Path = REPO_ROOT) -> list[str]:
    """Top-level packages of PACKAGES no map covers (a map covers its subpackages)."""
    covered = {s.package for s in all_sections(docs)}
    return [p for p in PACKAGES if not any(p == c or p.startswith(c + "/") for c in covered)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.modules_doc", description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the maps in docs/ in place")
    args = parser.parse_args(argv)
    stale = []
    for doc in sorted({s.doc for s in all_sections()}):
        text = updated(doc)
        if text != doc.read_text(encoding="utf-8"):
            stale.append(doc.relative_to(REPO_ROOT))
            if args.write:
                doc.write_text(text, encoding="utf-8")
    for package in unmapped():
        print(f"modules_doc: no doc holds a <!-- module-map: {package} --> section", file=sys.stderr)
    for doc in stale:
        print(f"modules_doc: {'rewrote' if args.write else 'out of date'}: {doc}", file=sys.stderr)
    return 1 if unmapped() or (stale and not args.write) else 0


if __name__ == "__main__":
    sys.exit(main())
