"""The base install is the gateway's (pyproject.toml): every gateway module, and the `sovereign`
commands the gateway image runs, import without the infrastructure toolchain (the infra and storage
extras), checked in a fresh interpreter that refuses to import them."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# top-level modules of the infra and storage extras (and of the test tools)
TOOLCHAIN = (
    "pulumi", "pulumi_hcloud", "pulumi_command", "pulumi_policy", "pulumi_kubernetes", "pulumi_vault",
    "pulumi_tls", "pulumi_random", "ansible", "ansible_runner", "boto3", "botocore", "ruamel", "tqdm",
    "jsonschema_rs", "pytest", "hypothesis", "faker", "moto", "locust",
)  # fmt: skip

PROBE = """
import importlib, importlib.abc, pkgutil, sys
BLOCKED = set(sys.argv[1].split(","))
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not in the base install")
        return None
sys.meta_path.insert(0, Refuse())
import gateway
for module in pkgutil.walk_packages(gateway.__path__, "gateway."):
    importlib.import_module(module.name)
from infra.cli import main
for argv in (["gateway", "serve", "--help"], ["gateway", "keys", "list", "--help"],
             ["weights", "verify", "--help"], ["weights", "fetch", "--help"], ["audit", "verify", "--help"]):
    sys.argv = ["sovereign", *argv]
    try:
        main()
    except SystemExit as exit:
        assert exit.code in (0, None), (argv, exit.code)
loaded = sorted({name.split(".")[0] for name in sys.modules} & BLOCKED)
assert not loaded, loaded
print("ok")
"""


def test_gateway_imports_without_the_toolchain() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(TOOLCHAIN)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


def test_base_dependencies_leave_the_toolchain_to_extras() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {dep.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower()
             for dep in project["dependencies"]}  # fmt: skip
    toolchain = {"pulumi", "ansible-core", "ansible-runner", "boto3", "ruamel.yaml", "tqdm", "jsonschema-rs"}
    assert not names & toolchain
    assert not {name for name in names if name.startswith("pulumi")}
    extras = project["optional-dependencies"]
    assert any(dep.startswith("boto3") for dep in extras["storage"])
    assert any(dep.startswith("pulumi>=") for dep in extras["infra"])
    assert "sovereign-llm[storage]" in extras["infra"]
