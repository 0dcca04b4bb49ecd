"""`sovereign harden` / `sovereign verify`: where the inventory comes from, and the errors when
it cannot be read (the runs against real hosts are in tests/hosts/test_cluster.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from infra.hosts import operate
from tests import support


def sovereign(*args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = path
    return support.sovereign(*args, env=env, timeout=60)


@pytest.mark.parametrize("command", ["harden", "verify"])
def test_stack_without_the_pulumi_cli_says_how_to_pass_the_inventory(command: str, tmp_path: Path) -> None:
    result = sovereign(command, "--stack", "eu-central-prod", path=str(tmp_path))  # no pulumi on PATH
    assert result.returncode == 2
    assert (
        f"sovereign {command}: --stack eu-central-prod: the Pulumi CLI is not installed here" in result.stderr
    )
    assert "pulumi stack output inventory --json -s eu-central-prod > inventory.json" in result.stderr


def test_stack_or_inventory_is_required_and_exclusive(tmp_path: Path) -> None:
    assert "one of the arguments --stack --inventory is required" in sovereign("harden").stderr
    both = sovereign("verify", "--stack", "x", "--inventory", str(tmp_path / "i.json"))
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "no such file"),
        ("{oops", "not JSON (Expecting property name"),
        ('{"all": {"hosts": {}}}', "not an Ansible inventory object with all.children"),
        ('{"all": {"children": {"control_plane": {"hosts": {}}}}}', "lists no host"),
    ],
)
def test_a_bad_inventory_file_is_named(tmp_path: Path, content: str | None, needle: str) -> None:
    path = tmp_path / "inventory.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(operate.HostsError, match=re.escape(needle)) as info:
        operate.load_inventory(None, path)
    assert str(path) in str(info.value)


def test_an_inventory_file_is_taken_as_is(tmp_path: Path) -> None:
    data = {"all": {"children": {"control_plane": {"hosts": {"cp-1": {"ansible_host": "10.20.1.11"}}}}}}
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps(data))
    assert operate.load_inventory(None, path) == data
