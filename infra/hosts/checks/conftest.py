"""Fixtures of the host checks: the host's inventory groups, the settings the roles applied
(each role's documented defaults under the inventory's own values) and whether the host is a
container (checks that need a kernel of its own are skipped there, with the reason, never passed)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from infra.paths import REPO_ROOT

HARDENING_DEFAULTS = REPO_ROOT / "roles" / "hardening" / "defaults" / "main.yml"


@pytest.fixture
def groups(host: Any) -> set[str]:
    return set(host.ansible.get_variables().get("group_names", []))


@pytest.fixture
def hostvars(host: Any) -> dict[str, Any]:
    variables: dict[str, Any] = host.ansible.get_variables()
    return variables


@pytest.fixture
def hardening(hostvars: dict[str, Any]) -> dict[str, Any]:
    """The hardening role's settings for this host: its defaults, overridden by the inventory."""
    defaults: dict[str, Any] = yaml.safe_load(HARDENING_DEFAULTS.read_text())
    return {**defaults, **{k: v for k, v in hostvars.items() if k.startswith("hardening_")}}


@pytest.fixture
def container(host: Any) -> bool:
    return bool(host.run("systemd-detect-virt --container").rc == 0)


def needs_kernel(container: bool, what: str) -> None:
    if container:
        pytest.skip(f"VM tier: {what} (this host is a container)")
