"""Fixtures of the host checks: the host's inventory groups and whether it is a container
(checks that need a kernel of its own are skipped there, with the reason, never passed)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def groups(host: Any) -> set[str]:
    return set(host.ansible.get_variables().get("group_names", []))


@pytest.fixture
def hostvars(host: Any) -> dict[str, Any]:
    variables: dict[str, Any] = host.ansible.get_variables()
    return variables


@pytest.fixture
def container(host: Any) -> bool:
    return bool(host.run("systemd-detect-virt --container").rc == 0)


def needs_kernel(container: bool, what: str) -> None:
    if container:
        pytest.skip(f"VM tier: {what} (this host is a container)")
