"""The base install is the gateway's (pyproject.toml): every gateway module, and the `sovereign`
commands the gateway image runs, import without the infrastructure toolchain (the infra and storage
extras), checked in a fresh interpreter that refuses to import them."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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


def run_probe(script: str, names: Iterable[str]) -> None:
    """*script* in a fresh interpreter of this venv, given *names* comma-joined: it prints ok."""
    result = subprocess.run(
        [sys.executable, "-c", script, ",".join(names)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


def test_gateway_imports_without_the_toolchain() -> None:
    run_probe(PROBE, TOOLCHAIN)


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


def base_closure() -> set[str]:
    """The distributions the base install brings: pyproject.toml's dependencies, with their
    extras, and what they require in turn (environment markers evaluated here)."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    found: set[str] = set()
    todo = [Requirement(dep) for dep in deps]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        found.add(key[0])
        try:
            requires = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue  # a marker's alternative that this platform does not install
        for line in requires:
            sub = Requirement(line)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in {"", *req.extras}):
                todo.append(sub)
    return found


# A fresh interpreter in which every module of an installed distribution outside the base
# install is missing, as in the gateway image: the gateway's modules import, and a multipart
# form (POST /v1/files) parses. Libraries that import an optional helper when it is there
# (starlette's form parser and python-multipart) fall back, or fail, as they would there.
BASE_ONLY = """
import asyncio, importlib, importlib.abc, pkgutil, sys
from importlib import metadata
ALLOWED = set(sys.argv[1].split(","))
OWN = {"gateway", "infra", "tests", "benchmarks", "loadtests"}
def canonical(name):
    return name.lower().replace("_", "-").replace(".", "-")
DISTS = metadata.packages_distributions()
OWNERS = {module: {canonical(d) for d in dists} for module, dists in DISTS.items()}
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top not in OWN and OWNERS.get(top) and not OWNERS[top] & ALLOWED:
            raise ModuleNotFoundError(f"{name} is not in the base install", name=name)
        return None
sys.meta_path.insert(0, Refuse())
import gateway
for module in pkgutil.walk_packages(gateway.__path__, "gateway."):
    importlib.import_module(module.name)
from starlette.datastructures import Headers
from starlette.formparsers import MultiPartParser
body = (b'--b\\r\\ncontent-disposition: form-data; name="file"; filename="n.md"\\r\\n'
        b'content-type: text/markdown\\r\\n\\r\\nnote\\r\\n--b--\\r\\n')
async def chunks():
    yield body
headers = Headers({"content-type": "multipart/form-data; boundary=b"})
form = asyncio.run(MultiPartParser(headers, chunks()).parse())
assert form["file"].filename == "n.md"
print("ok")
"""


def test_the_gateway_runs_on_its_declared_dependencies_alone() -> None:
    """A dependency the gateway needs but pyproject.toml does not declare (python-multipart,
    which starlette imports only if it is there) passes on a developer's machine that happens
    to have it and fails on a fresh install: here it fails on any machine."""
    run_probe(BASE_ONLY, sorted(base_closure()))
