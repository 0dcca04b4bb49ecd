"""Where the ``sovereign`` command and the infrastructure code find files: the one definition of
the repository root, and the rules for every default path.

The rules:

1. **Package data** (a module's own YAML, templates, schemas, the locustfile, SLA profiles and
   workloads) is found next to the module (``Path(__file__).with_name(...)``), so it works from a
   checkout and from an installed package alike. It is not defined here.
2. **The repository root** is the folder above the ``infra`` package: :data:`REPO_ROOT`. In a
   checkout (an editable install included) that is the repository. In an installed package (the
   gateway image: a wheel in site-packages) there is no repository, and ``REPO_ROOT`` is
   site-packages: :data:`IS_CHECKOUT` is false there. Code that needs a file only the repository
   has (the playbooks, ``tests/``, ``docs/``, the git history) calls :func:`require_checkout`,
   which fails with a clear message instead of looking in site-packages. The commands the gateway
   image runs (``sovereign audit ship``, ``weights fetch|verify``, ``openbao snapshot --config``)
   read no repository file.
3. **Defaults relative to the repository** (whatever the working directory): the stack configs
   (``--stacks-dir``: :data:`STACKS_DIR`), the local profile (``--profile``: :data:`LOCAL_PROFILE`)
   and the outputs that belong to a stack: ``sovereign plan`` (``.sovereign/plan/<stack>``),
   ``sovereign evidence`` (``reports/evidence/<stack>``, test results from ``reports/``) and
   ``sovereign openbao import-file`` (``.sovereign/openbao/<stack>-import.json``). A parser's
   default is computed without checking that the repository exists, so ``--help`` works
   everywhere; a command given no such file fails with its own "does not exist" error.
4. **Defaults relative to the working directory**: a run's reports, written where the operator
   runs the command: ``sovereign loadtest --out`` (``reports/loadtest``), ``sovereign verify
   --junit`` (``reports/verify-<stack>.xml``), the load test's default API key
   (``.sovereign/secrets/demo.key``) and the locustfile's ``--sla-out``. They are relative paths
   on purpose (:data:`CWD_REPORTS`); run them from the repository root to put them beside the
   others.

Every option's default is the same as before this module existed; only where it is defined moved.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.errors import BadInput

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The folder above the ``infra`` package: the repository in a checkout, site-packages when installed."""

IS_CHECKOUT = (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "infra").is_dir()
"""Whether :data:`REPO_ROOT` is a repository checkout (not an installed package)."""

STACKS_DIR = REPO_ROOT / "stacks"
"""The stack configs (``--stacks-dir``): repository-relative."""

LOCAL_PROFILE = STACKS_DIR / "local.yaml"
"""The local stack's profile (``--profile``): repository-relative."""

CWD_REPORTS = Path("reports")
"""Run reports (``loadtest --out``, ``verify --junit``): relative to the working directory."""


def add_stack_options(parser: argparse.ArgumentParser) -> None:
    """``--stack`` (required) and ``--stacks-dir`` (default :data:`STACKS_DIR`): the options of
    every command that reads one region stack's config."""
    parser.add_argument("--stack", required=True, help="stack name: stacks/Pulumi.<stack>.yaml")
    parser.add_argument("--stacks-dir", default=str(STACKS_DIR))


class NotACheckout(BadInput):
    """A repository-only file was needed where the code runs from an installed package."""


def require_checkout(what: str) -> Path:
    """:data:`REPO_ROOT`, or :class:`NotACheckout` naming *what* needed it when this is an
    installed package (the gateway image), where there is no repository to read."""
    if not IS_CHECKOUT:
        raise NotACheckout(
            f"{what} needs the repository (a git checkout of sovereign-llm); this is an installed "
            f"package in {REPO_ROOT}"
        )
    return REPO_ROOT
