"""Day-2 host commands against a region stack's real hosts: ``sovereign harden`` and
``sovereign verify``.

- ``sovereign harden --stack NAME``: the hardening playbook through ansible-runner, the same
  call the RKE2 bootstrap command resource makes (``run_playbook``), with Ansible's output live
  in the terminal and every failure named by host, task and message at the end;
- ``sovereign verify --stack NAME``: the testinfra suite in ``infra/hosts/checks`` against the
  same hosts (SSH through the bastion, as the inventory says), with a JUnit report for CI.

The inventory comes from the stack's ``inventory`` output (``pulumi stack output``, through
Pulumi's Automation API), or from a file with ``--inventory`` (the JSON of
``pulumi stack output inventory --json``) where the Pulumi CLI is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from gateway.errors import BadInput
from infra.hosts import inventory as inv
from infra.hosts.converge import run_playbook
from infra.paths import REPO_ROOT

CHECKS = Path(__file__).parent / "checks"
HARDENING = REPO_ROOT / "playbooks" / "hardening.yml"


class HostsError(BadInput, RuntimeError):
    pass


def _check_inventory(data: Any, source: str) -> dict[str, Any]:
    if not isinstance(data, dict) or "children" not in data.get("all", {}):
        raise HostsError(f"{source} is not an Ansible inventory object with all.children")
    if not any(inv.hosts_of(data, group) for group in data["all"]["children"]):
        raise HostsError(f"{source} lists no host")
    return data


def load_inventory(stack: str | None, inventory_file: Path | None) -> dict[str, Any]:
    """The stack's inventory, from a file or from the stack's ``inventory`` output."""
    if inventory_file is not None:
        try:
            data = json.loads(inventory_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise HostsError(f"--inventory {inventory_file}: no such file") from None
        except json.JSONDecodeError as exc:
            raise HostsError(f"--inventory {inventory_file}: not JSON ({exc.msg} at {exc.pos})") from None
        return _check_inventory(data, f"--inventory {inventory_file}")
    if not stack:
        raise HostsError("name the stack (--stack NAME) or pass --inventory FILE")
    if shutil.which("pulumi") is None:
        raise HostsError(
            f"--stack {stack}: the Pulumi CLI is not installed here, so the stack's outputs cannot be read; "
            f"install it, or run `pulumi stack output inventory --json -s {stack} > inventory.json` where it "
            "is and pass --inventory inventory.json"
        )
    from pulumi import automation as auto

    try:
        outputs = auto.select_stack(stack_name=stack, work_dir=str(REPO_ROOT)).outputs()
    except auto.errors.CommandError as exc:
        raise HostsError(
            f"--stack {stack}: pulumi could not read the stack ({str(exc).strip()[-300:]})"
        ) from None
    if "inventory" not in outputs:
        raise HostsError(f"--stack {stack}: the stack has no inventory output yet; run `pulumi up` first")
    return _check_inventory(outputs["inventory"].value, f"stack {stack}'s inventory output")


def harden(inventory: dict[str, Any], *, playbook: Path = HARDENING, verbosity: int = 0) -> int:
    run = run_playbook(playbook, inventory, verbosity=verbosity)  # ConvergeError: infra/cli.py's handler
    changed = sum(run.changed.values())
    if run.rc == 0:
        print(f"sovereign harden: {len(run.ok)} host(s) converged, {changed} change(s)", file=sys.stderr)
        return 0
    print(f"sovereign harden: failed (status {run.status}, rc {run.rc})", file=sys.stderr)
    for failure in run.failures:
        print(f"  {failure}", file=sys.stderr)
    return 1


def verify(
    inventory: dict[str, Any], junit: Path, *, pytest_args: list[str] | None = None, stack: str | None = None
) -> int:
    """Run the host checks against every host of *inventory*; write a JUnit report to *junit*,
    which names the commit the checks ran at, whether the tree had changes, and *stack*."""
    from infra.evidence.results import code_properties, stamp_junit

    junit.parent.mkdir(parents=True, exist_ok=True)
    junit.unlink(missing_ok=True)  # a run that writes no report must not leave the last one looking new
    properties = code_properties(REPO_ROOT, stack)  # the code as the run starts
    data = json.loads(json.dumps(inventory))
    data["all"].setdefault("vars", {})["ansible_become"] = True  # the checks read root-only files
    with tempfile.TemporaryDirectory(prefix="sovereign-verify-") as tmp:
        inventory_file = Path(tmp) / "inventory.json"  # ansible-inventory reads JSON by its extension
        inventory_file.write_text(json.dumps(data), encoding="utf-8")
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        result = subprocess.run(
            [
                sys.executable, "-m", "pytest", str(CHECKS), "--hosts=ansible://all",
                f"--ansible-inventory={inventory_file}", f"--junitxml={junit}", "-p", "no:cacheprovider",
                "--rootdir", str(CHECKS), "-o", "testpaths=", "-rs", "-q", *(pytest_args or []),
            ],
            cwd=REPO_ROOT, env=env, check=False,
        )  # fmt: skip
    if junit.is_file():
        # stamped here: this pytest has its own rootdir, so tests/conftest.py's recording does not apply
        stamp_junit(junit, properties)
        suite = ET.parse(junit).getroot()  # noqa: S314 - the report pytest just wrote, not untrusted input
        suite = suite if suite.tag == "testsuite" else suite[0]
        print(
            f"sovereign verify: {suite.get('tests')} checks, {suite.get('failures')} failed, "
            f"{suite.get('errors')} errors, {suite.get('skipped')} skipped (each with its reason); "
            f"JUnit report: {junit}",
            file=sys.stderr,
        )
    return result.returncode
