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

from infra.paths import REPO_ROOT, NotACheckout, require_checkout

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


def _modules(directory: Path) -> list[tuple[str, Path]]:
    """(path inside the package, file) of every module a map of *directory* lists, in its order:
    the modules beside each other, then each subpackage (its ``__init__.py`` first)."""
    found = [(p.name, p) for p in sorted(directory.glob("*.py")) if p.name != "__init__.py"]
    for sub in sorted(p for p in directory.iterdir() if (p / "__init__.py").is_file()):
        found.append((f"{sub.name}/", sub / "__init__.py"))
        found.extend((f"{sub.name}/{name}", path) for name, path in _modules(sub))
    return found


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
            *(f"| `{name}` | {summary(path, root)} |" for name, path in _modules(directory)),
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


def unmapped(docs: Path = DOCS, root: Path = REPO_ROOT, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """Modules of PACKAGES that no map lists: a package without a map, or a folder of modules
    without an ``__init__.py`` (a map lists only what its package's ``__init__.py`` files reach)."""
    listed = {
        path
        for section in all_sections(docs)
        if (root / section.package / "__init__.py").is_file()
        for path in [
            root / section.package / "__init__.py",
            *(p for _, p in _modules(root / section.package)),
        ]
    }
    every = (p for package in packages for p in sorted((root / package).rglob("*.py")))
    return [str(p.relative_to(root)) for p in every if p not in listed]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.modules_doc", description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the maps in docs/ in place")
    args = parser.parse_args(argv)
    try:
        require_checkout("python -m infra.modules_doc")
    except NotACheckout as exc:
        print(f"python -m infra.modules_doc: {exc}", file=sys.stderr)
        return exc.exit_code
    stale = []
    for doc in sorted({s.doc for s in all_sections()}):
        text = updated(doc)
        if text != doc.read_text(encoding="utf-8"):
            stale.append(doc.relative_to(REPO_ROOT))
            if args.write:
                doc.write_text(text, encoding="utf-8")
    missing = unmapped()
    for module in missing:
        print(
            f"modules_doc: {module}: in no module map (no <!-- module-map: PACKAGE --> for it)",
            file=sys.stderr,
        )
    for doc in stale:
        print(f"modules_doc: {'rewrote' if args.write else 'out of date'}: {doc}", file=sys.stderr)
    return 1 if missing or (stale and not args.write) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ModuleMapError as exc:
        print(f"modules_doc: {exc}", file=sys.stderr)
        sys.exit(2)
