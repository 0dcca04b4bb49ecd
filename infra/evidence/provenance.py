"""Where a piece of evidence came from: the commit, whether the checkout was clean, each input
file with its SHA-256 and whether it is the committed version, and the versions of the tools
that produced it.

A report may say "from revision X" about an input only when that input is tracked at X and
unmodified; a stack file from outside the repository is recorded with its absolute path and
``outside_repository=True`` and never claims a revision. A tool that is not installed is
recorded as missing, not raised: the report says what it could not name.
"""

from __future__ import annotations

import hashlib
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from infra.paths import REPO_ROOT as REPO

FORMAT = "sovereign-evidence-provenance/1"
# the Python distributions the evidence is produced with (the gateway ships in sovereign-llm)
PACKAGES = ("sovereign-llm", "pulumi", "pulumi-hcloud", "pulumi-kubernetes", "pulumi-policy", "pydantic")
_TIMEOUT_S = 60


@dataclass(frozen=True)
class InputFile:
    path: str  # repo-relative (POSIX), or absolute when outside the repository
    sha256: str
    outside_repository: bool
    tracked: bool  # the path is in the commit's tree
    unmodified: bool  # tracked, and the file's content is the committed blob

    @property
    def from_revision(self) -> bool:
        """Whether the report may say this input is the one at the recorded commit."""
        return self.tracked and self.unmodified and not self.outside_repository


@dataclass(frozen=True)
class Tool:
    name: str
    version: str | None  # None: missing

    @property
    def missing(self) -> bool:
        return self.version is None


@dataclass(frozen=True)
class Provenance:
    commit: str | None  # full 40-hex commit, None outside a git checkout
    dirty: bool
    dirty_paths: tuple[str, ...]
    inputs: tuple[InputFile, ...]
    tools: tuple[Tool, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "commit": self.commit,
            "dirty": self.dirty,
            "dirty_paths": list(self.dirty_paths),
            "inputs": [{**asdict(i), "from_revision": i.from_revision} for i in self.inputs],
            "tools": {t.name: t.version if t.version is not None else "missing" for t in self.tools},
        }

    def describe(self, item: InputFile) -> str:
        """One line a report can print about *item*, claiming a revision only when it may."""
        if item.outside_repository:
            return f"{item.path} (outside the repository; SHA-256 {item.sha256})"
        if self.commit and item.from_revision:
            return f"{item.path} from revision {self.commit}"
        if item.tracked:
            return f"{item.path} (modified since revision {self.commit}; SHA-256 {item.sha256})"
        return f"{item.path} (not committed; SHA-256 {item.sha256})"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _git(repo: Path, *args: str) -> str | None:
    """git's stdout, or None when git is missing or the command fails (not a checkout, no HEAD)."""
    git = shutil.which("git")
    if git is None:
        return None
    try:
        result = subprocess.run([git, "-C", str(repo), *args], capture_output=True, timeout=_TIMEOUT_S,
                                check=False)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.decode("utf-8", "surrogateescape") if result.returncode == 0 else None


def _status(repo: Path) -> tuple[str, ...]:
    """The paths ``git status --porcelain`` names (changed, staged, untracked), sorted."""
    out = _git(repo, "status", "--porcelain=v1", "-z", "--untracked-files=all")
    if not out:
        return ()
    paths, fields, i = set(), out.split("\0"), 0
    while i < len(fields):
        entry = fields[i]
        i += 1
        if len(entry) < 4:
            continue
        paths.add(entry[3:])
        if entry[0] in "RC":  # a rename or copy: the next field is the old path
            paths.add(fields[i])
            i += 1
    return tuple(sorted(paths))


def _input(repo: Path, commit: str | None, path: Path) -> InputFile:
    resolved = path.resolve()
    digest = sha256_file(resolved)
    try:
        rel = resolved.relative_to(repo).as_posix()
    except ValueError:
        return InputFile(str(resolved), digest, True, False, False)
    if commit is None:
        return InputFile(rel, digest, False, False, False)
    listed = _git(repo, "ls-tree", "-z", commit, "--", rel)  # "<mode> blob <id>\t<path>\0"
    committed = listed.split("\t", 1)[0].split()[-1] if listed else None
    if committed is None:
        return InputFile(rel, digest, False, False, False)
    current = _git(repo, "hash-object", "--", rel)
    return InputFile(rel, digest, False, True, current is not None and current.strip() == committed)


def _package(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _command(argv: list[str]) -> str | None:
    """The first non-empty line a ``--version`` style command prints (stdout, else stderr)."""
    if shutil.which(argv[0]) is None and not Path(argv[0]).is_file():
        return None
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    lines = [line.strip() for line in (result.stdout + "\n" + result.stderr).splitlines() if line.strip()]
    return lines[0] if lines else None


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return name
    return None


def tools(repo: Path = REPO) -> tuple[Tool, ...]:
    found = [Tool("python", f"{platform.python_implementation()} {platform.python_version()}")]
    found += [Tool(name, _package(name)) for name in PACKAGES]
    checkov = repo / ".venv-tools" / "bin" / "checkov"
    found.append(Tool("checkov", _command([str(checkov), "--version"]) if checkov.is_file() else None))
    found.append(Tool("graphviz", _command(["dot", "-V"])))
    browser = _chromium()
    found.append(Tool("chromium", _command([browser, "--version"]) if browser else None))
    return tuple(found)


def collect(inputs: list[Path], repo: Path = REPO, with_tools: bool = True) -> Provenance:
    """The provenance of evidence made from *inputs* by the checkout at *repo*."""
    repo = repo.resolve()
    head = _git(repo, "rev-parse", "--verify", "HEAD^{commit}")
    commit = head.strip() if head and len(head.strip()) == 40 else None
    dirty_paths = _status(repo) if commit is not None else ()
    return Provenance(
        commit=commit,
        dirty=bool(dirty_paths),
        dirty_paths=dirty_paths,
        inputs=tuple(_input(repo, commit, Path(p)) for p in inputs),
        tools=tools(repo) if with_tools else (),
    )
