"""The PHI filter's hot modules compiled to C extensions with mypyc, from the same sources.

mypyc (part of mypy: https://mypyc.readthedocs.io) compiles type-annotated Python modules to C
extensions with the semantics of the source, except that it checks the annotated types at run
time where the interpreter does not (the filter converts what plug-ins answer for that); mypy
itself ships compiled with it. The filter's detection, tokenising and restoration cost about a
quarter less CPU compiled (benchmarks/README.md, "Fourth run of 2026-12-01"). Nothing else
changes: the same source is the specification, and tests/unit/test_phi_compiled.py checks that
both give the same findings, tokens and restorations over the corpora.

    .venv/bin/python -m gateway.phi.compile build     # make install does this; ~40 s
    .venv/bin/python -m gateway.phi.compile status    # which one this interpreter would load

A build goes to ``<base>/<key>/`` where *key* is a digest of the interpreter's ABI, every
compiled module's source and every project module they import (:func:`sources`).
:func:`activate` (``gateway/phi/__init__.py`` calls it on import) puts that directory in front
of the package's path only when it exists for the sources here and now: an edited module is
never shadowed by a build of its old text; it runs interpreted until the next build (the
gateway logs which, and ``sovereign_phi_filter_compiled`` says it).
*base*: ``SOVEREIGN_PHI_COMPILED`` (``off`` never loads a build), by default
``~/.cache/sovereign-llm/phi-compiled``; the gateway image builds into ``/opt/phi-compiled``.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import MutableSequence
from pathlib import Path

from prometheus_client import Gauge

ENV = "SOVEREIGN_PHI_COMPILED"
HERE = Path(__file__).resolve().parent
#: the modules compiled, in dependency order (each imports only those before it, or none)
MODULES = (
    "checksums",
    "encodings",
    "fold",
    "normalise",
    "detect",
    "names",
    "tokenise",
    "filter",
    "jsonrestore",
)
_MYPY_CONFIG = """\
[mypy]
python_version = {version}
mypy_path = {root}
follow_imports = silent
ignore_missing_imports = True
"""

#: the build loaded by this process, if any
active: Path | None = None

COMPILED = Gauge(
    "sovereign_phi_filter_compiled",
    "1 when the PHI filter's modules run compiled (gateway/phi/compiled.py), 0 when interpreted "
    "(no build for these sources: about a quarter more CPU in the filter).",
)


def base_dir() -> Path | None:
    value = os.environ.get(ENV, "").strip()
    if value.lower() == "off":
        return None
    if value:
        return Path(value)
    return Path.home() / ".cache" / "sovereign-llm" / "phi-compiled"


#: import statements, also indented and parenthesised (only these are parsed: a whole module
#: would take ~5 ms each)
_IMPORT = re.compile(
    r"^[ \t]*((?:from[ \t]+[\w.]+[ \t]+import[ \t]*(?:\([^)]*\)|[^\n]*))|import[ \t]+[^\n]*)", re.M
)


def sources(package: Path = HERE) -> list[Path]:
    """The compiled modules and every module of the project they import, directly or not: mypyc
    builds the types of those into the extensions too (a function of an imported module that
    returned another type would make a stale build refuse it)."""
    top = package.parent  # the project's package: gateway
    todo = [package / f"{name}.py" for name in MODULES]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        text = path.read_text(encoding="utf-8")
        for statement in _IMPORT.findall(text):
            node = ast.parse(statement).body[0]
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] != top.name:
                    continue
                module = top.parent.joinpath(*parts)
                for candidate in (module.with_suffix(".py"), module / "__init__.py"):
                    if candidate.is_file():
                        todo.append(candidate)
    return sorted(seen)


def key(package: Path = HERE) -> str:
    """The digest a build is filed under: the interpreter's ABI and every source in it."""
    digest = hashlib.sha256(str(sysconfig.get_config_var("EXT_SUFFIX")).encode())
    root = package.parent.parent
    for path in sources(package):  # the path inside the project: a copy elsewhere keys the same
        source = path.read_bytes()
        digest.update(f"\0{path.relative_to(root).as_posix()}\0{len(source)}\0".encode())
        digest.update(source)
    return digest.hexdigest()[:32]


def _complete(build: Path) -> bool:
    """Every module's extension and mypyc's shared runtime of the group are there."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    modules = all((build / "gateway" / "phi" / f"{name}{suffix}").is_file() for name in MODULES)
    return modules and any(build.glob(f"*__mypyc{suffix}"))


def find(package: Path = HERE) -> Path | None:
    """The build for the sources in *package*, if there is a complete one."""
    base = base_dir()
    if base is None:
        return None
    try:
        build = base / key(package)
    except (OSError, SyntaxError):  # a source missing: an installation without sources loads nothing
        return None
    return build if _complete(build) else None


def activate(path: MutableSequence[str]) -> Path | None:
    """Put the build for these sources, if any, in front of the package's *path*."""
    global active
    if active is not None:
        return active
    build = find()
    if build is None:
        return None
    path.insert(0, str(build / "gateway" / "phi"))
    # mypyc's shared runtime of the group is a top-level module of the build
    sys.path.append(str(build))
    active = build
    COMPILED.set(1)
    return active


def describe(build: Path | None) -> str:
    """One line on *build* (the one loaded, or found; None: none) and how to get one."""
    if build is not None:
        return f"compiled: {build}"
    base = base_dir()
    where = f"{ENV}=off" if base is None else f"under {base}"
    return (
        f"interpreted: no build for these sources {where}; "
        "`python -m gateway.phi.compile build` compiles them (about a quarter less CPU in the filter)"
    )


def build(base: Path | None = None) -> Path:
    """Compile :data:`MODULES` for the sources here into ``<base>/<key>/`` (no-op if there)."""
    from mypyc.build import mypycify  # mypy: the build needs it, the gateway does not
    from setuptools import Distribution  # type: ignore[import-untyped]

    base = base or base_dir()
    if base is None:
        raise SystemExit(f"{ENV}=off: nothing to build into; set it to a directory or unset it")
    target = base / key()
    if _complete(target):
        return target
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=base))
    try:
        config = work / "mypy.ini"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        config.write_text(_MYPY_CONFIG.format(version=version, root=HERE.parent.parent))
        files = [str(HERE / f"{name}.py") for name in MODULES]
        # the source root on mypy's path, its cache in the work directory (not in the tree)
        options = ["--config-file", str(config), "--cache-dir", str(work / "mypy-cache")]
        extensions = mypycify([*options, *files], opt_level="3", target_dir=str(work / "c"))
        staged = work / "out"
        dist = Distribution({"name": "sovereign-phi-compiled", "ext_modules": extensions})
        dist.script_args = ["build_ext", "--build-lib", str(staged), "--build-temp", str(work / "obj")]
        dist.parse_command_line()
        dist.run_commands()
        if not _complete(staged):
            raise SystemExit(f"mypyc built an incomplete set of modules into {staged}")
        try:
            staged.rename(target)  # atomic: a build is there whole or not at all
        except OSError:
            if not _complete(target):  # another build won the race: theirs is the same
                raise
        _prune(base, target)
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)


#: builds kept besides the newest (other checkouts or branches may still load them)
KEEP = 4


def _prune(base: Path, newest: Path) -> None:
    """Remove all but the *KEEP* most recent other builds (1.7 MB each)."""
    builds = sorted(
        (p for p in base.iterdir() if p.is_dir() and p != newest and not p.name.startswith("build-")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in builds[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)
