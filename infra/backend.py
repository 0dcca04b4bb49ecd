"""Which Pulumi backend holds this stack's state, and the refusal of the SaaS backend.

The Pulumi program cannot ask the engine for the backend URL, so this reads it where the CLI
takes it from, in the CLI's order: ``PULUMI_BACKEND_URL``, the project's ``backend.url`` in
Pulumi.yaml, then the current login in ``~/.pulumi/credentials.json`` (``PULUMI_HOME``
moves it). No login at all means the CLI's default, Pulumi Cloud.

Pulumi Cloud keeps state (every resource's inputs and outputs, including addresses and
encrypted secrets) in the US: a GDPR Art. 44 transfer. The program refuses it unless the
stack's ``backend.allow_saas`` is set with a justification, which every plan shows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from gateway.errors import SovereignError
from infra import residency
from infra.config import StackConfig

DEFAULT_BACKEND = "https://api.pulumi.com"


class BackendRefused(SovereignError, RuntimeError):
    pass


def current_backend(project_dir: Path, environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
    if environ.get("PULUMI_BACKEND_URL"):
        return environ["PULUMI_BACKEND_URL"]
    project_file = project_dir / "Pulumi.yaml"
    if project_file.is_file():
        project = yaml.safe_load(project_file.read_text(encoding="utf-8")) or {}
        url = (project.get("backend") or {}).get("url")
        if url:
            return str(url)
    home = Path(environ.get("PULUMI_HOME") or Path.home() / ".pulumi")
    credentials = home / "credentials.json"
    if credentials.is_file():
        current = json.loads(credentials.read_text(encoding="utf-8")).get("current")
        if current:
            return str(current)
    return DEFAULT_BACKEND


def is_saas(url: str) -> bool:
    return url.startswith(("https://", "http://")) and residency.host_of(url) in residency.PULUMI_SAAS_HOSTS


def check(cfg: StackConfig, backend_url: str) -> None:
    """Raise BackendRefused when the stack would keep its state outside the EU boundary."""
    if is_saas(backend_url):
        if cfg.backend.allow_saas:
            return
        raise BackendRefused(
            f"stack {cfg.stack!r}: the Pulumi backend is {backend_url} (Pulumi Cloud, US-operated). "
            f"Its state would hold this stack's resources outside the EU boundary; {residency.ART_44}. "
            f"Log in to the sovereign backend instead: pulumi login '{cfg.endpoints.pulumi_backend}' "
            "(or set sovereign-llm:backend.allow_saas with a justification, which every plan shows)"
        )
    problem = residency.endpoint_problem(backend_url, cfg.residency.entries())
    if problem:
        raise BackendRefused(f"stack {cfg.stack!r}: the Pulumi backend {backend_url} {problem}")
