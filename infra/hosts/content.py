"""A digest of the host-configuration content (roles and playbooks).

The RKE2 bootstrap command re-runs when this digest changes, so editing a role re-converges
the hosts on the next ``pulumi up``, and nothing re-runs when nothing changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from infra.paths import REPO_ROOT as REPO_ROOT  # re-exported: benchmarks/host_roles.py

CONTENT_DIRS = ("roles", "playbooks")
_SKIP_PARTS = {"__pycache__", ".pytest_cache"}


def content_hash(root: Path = REPO_ROOT, dirs: Iterable[str] = CONTENT_DIRS) -> str:
    """sha256 over (relative path, bytes) of every file under *dirs*, in sorted order."""
    digest = hashlib.sha256()
    for name in dirs:
        base = root / name
        if not base.is_dir():
            digest.update(f"absent:{name}\0".encode())
            continue
        for path in sorted(p for p in base.rglob("*") if p.is_file() and not _SKIP_PARTS & set(p.parts)):
            rel = path.relative_to(root).as_posix()
            digest.update(rel.encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
