"""`sovereign openbao import-file` (infra/openbao_import.py): the DR takeover's `pulumi import --file`
JSON for the OpenBao objects a restored snapshot of the primary already holds, from the DR stack's
program in phase 2 under Pulumi's mocks. No Pulumi CLI, no OpenBao: what a real `pulumi import`
does with the file is checked against Pulumi's own rules (URNs, nameTable), cited in the module."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from infra import cli, openbao_import
from infra import plan as planner
from infra.config import PROJECT
from tests.infra.support import plan_of, sections

STACK = "eu-north-dr"
COMPONENT = "sovereign:platform:OpenBaoConfiguration"
PROVIDER = "pulumi:providers:vault"

# the IDs each type's pulumi-vault docs ("## Import") give, written out for the DR stack's program
EXPECTED_IDS = {
    "vault:index/mount:Mount": {"transit", "kv", "pki", "pki-ingress"},
    "vault:index/authBackend:AuthBackend": {"kubernetes"},
    "vault:index/policy:Policy": {
        "sovereign-gateway", "sovereign-auditor", "sovereign-model-publisher",
        "sovereign-openbao-snapshot", "sovereign-incident",
    },
    "vault:transit/secretBackendKey:SecretBackendKey": {
        "transit/keys/tenant-data", "transit/keys/audit-hmac", "transit/keys/model-manifests",
        "transit/keys/sovereign-pseudonym",  # the restored key: a new one would change every pseudonym
    },
    "vault:pkiSecret/secretBackendRole:SecretBackendRole": {
        "pki/roles/gateway-client", "pki/roles/inference-server", "pki/roles/metrics-client",
        "pki-ingress/roles/gateway-ingress",
    },
    "vault:kubernetes/authBackendConfig:AuthBackendConfig": {"auth/kubernetes/config"},
    "vault:kubernetes/authBackendRole:AuthBackendRole": {
        "auth/kubernetes/role/sovereign-gateway", "auth/kubernetes/role/openbao-snapshot",
    },
}  # fmt: skip
# the importers' own parsing in terraform-provider-vault v5.10.1 (vault/resource_*.go)
ID_PATTERNS = {
    "vault:transit/secretBackendKey:SecretBackendKey": r"^(.+)/keys/.+$",
    "vault:pkiSecret/secretBackendRole:SecretBackendRole": r"^(.+)/roles/.+$",
    "vault:kubernetes/authBackendConfig:AuthBackendConfig": r"^auth/(.+)/config$",
    "vault:kubernetes/authBackendRole:AuthBackendRole": r"^auth/(.+)/role/.+$",
}


@pytest.fixture(scope="module")
def dr() -> tuple[planner.Plan, dict[str, str]]:
    """The DR stack in phase 2, and the provider reference each resource was registered with (the
    mocks' RegisterResourceRequest.provider, which the plan itself does not keep)."""
    providers: dict[str, str] = {}
    original = planner.RecordingMonitor.RegisterResource

    def recording(self: planner.RecordingMonitor, request: Any) -> Any:
        response = original(self, request)
        providers[response.urn] = request.provider
        return response

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(planner.RecordingMonitor, "RegisterResource", recording)
        plan = plan_of(openbao_import.phase_two(sections(STACK)), stack=STACK)
    return plan, providers


@pytest.fixture(scope="module")
def built(dr: tuple[planner.Plan, dict[str, str]]) -> openbao_import.ImportFile:
    return openbao_import.build(dr[0])


def test_every_importable_vault_resource_is_in_the_file_once_with_its_id(
    dr: tuple[planner.Plan, dict[str, str]], built: openbao_import.ImportFile
) -> None:
    plan, _ = dr
    entries = built.document["resources"]
    importable = [r for r in plan.custom() if r.type in openbao_import.IMPORT_IDS]
    assert len(importable) == 21
    keys = [(e["type"], e["name"]) for e in entries]
    assert sorted(keys) == sorted((r.type, r.name) for r in importable)  # each once, none missing
    ids: dict[str, set[str]] = {}
    for e in entries:
        ids.setdefault(e["type"], set()).add(e["id"])
        assert set(e) == {"type", "name", "id", "parent", "provider"}
        if e["type"] in ID_PATTERNS:
            assert re.fullmatch(ID_PATTERNS[e["type"]], e["id"]), e
    assert ids == EXPECTED_IDS
    # every vault resource of the plan is either in the file or named as not covered
    vault = {(r.type, r.name) for r in plan.custom() if r.type.split(":")[0] == "vault" or r.type == PROVIDER}
    assert vault == set(keys) | {(t, n) for t, n, _ in built.not_covered}


def test_parents_and_the_provider_resolve_through_the_name_table(
    dr: tuple[planner.Plan, dict[str, str]], built: openbao_import.ImportFile
) -> None:
    plan, registered_with = dr
    by_urn = {r.urn: r for r in plan.resources}
    by_engine_urn = {openbao_import.engine_urn(r, by_urn): r for r in plan.resources}
    table = built.document["nameTable"]
    [provider] = plan.of_type(PROVIDER)
    for e in built.document["resources"]:
        [resource] = [r for r in plan.resources if (r.type, r.name) == (e["type"], e["name"])]
        parent = by_engine_urn[table[e["parent"]]]  # a URN of the plan
        assert parent.type == COMPONENT and parent.urn == resource.parent
        assert by_engine_urn[table[e["provider"]]] is provider
        # the provider the program really registers it with (mocks: "<urn>::<id>")
        assert registered_with[resource.urn] == f"{provider.urn}::{provider.id}"
    # step 1 creates exactly the two name-table entries the file needs in the state
    assert sorted(built.targets) == sorted(table.values())


def test_the_import_lands_on_the_urn_the_program_registers(
    dr: tuple[planner.Plan, dict[str, str]], built: openbao_import.ImportFile
) -> None:
    """Pulumi's parseImportFile: NewURN(stack, project, <parent URN's qualified type>, type, name).
    It must equal the engine's URN of the declared resource, or `pulumi up` would create it again."""
    plan, _ = dr
    by_urn = {r.urn: r for r in plan.resources}
    table = built.document["nameTable"]
    for e in built.document["resources"]:
        [resource] = [r for r in plan.resources if (r.type, r.name) == (e["type"], e["name"])]
        parent_type = table[e["parent"]].split("::")[2]
        imported = f"urn:pulumi:{STACK}::{PROJECT}::{parent_type}${e['type']}::{e['name']}"
        assert imported == openbao_import.engine_urn(resource, by_urn)
    # the engine's URNs carry every parent's type, the root stack's left out (deployment.go
    # generateURN); the mocks keep only the nearest parent's
    assert table["eu-north-dr-platform-openbao-config"] == (
        "urn:pulumi:eu-north-dr::sovereign-llm::sovereign:platform:PlatformLayer$sovereign:platform:OpenBao"
        "$sovereign:platform:OpenBaoConfiguration::eu-north-dr-platform-openbao-config"
    )


def test_no_secret_or_setting_reaches_the_file(
    dr: tuple[planner.Plan, dict[str, str]], built: openbao_import.ImportFile
) -> None:
    plan, _ = dr
    text = json.dumps(built.document)
    assert "[secret]" not in text and "BEGIN" not in text and "token" not in text.lower()
    # only the inputs that make an ID: no policy body, host, CA file, common name or audience
    id_fields = {"path", "name", "backend", "roleName", "type"}
    ids = {e["id"] for e in built.document["resources"]}
    leaked = []
    for r in plan.custom():
        if not (r.type.startswith("vault:") or r.type == PROVIDER):
            continue
        for key, value in r.inputs.items():
            if key in id_fields or not isinstance(value, str):
                continue
            if value in ids or (len(value) > 12 and value in text):  # short ones occur in resource names
                leaked.append((r.name, key))
    assert leaked == []
    # and a secret in an input never goes in: the plan's inputs are never copied
    [policy] = [
        r for r in plan.of_type("vault:index/policy:Policy") if r.inputs["name"] == "sovereign-gateway"
    ]
    planted = dataclasses.replace(policy, inputs={**policy.inputs, "policy": "s.SENTINEL-token-value"})
    altered = dataclasses.replace(plan, resources=[planted if r is policy else r for r in plan.resources])
    assert "SENTINEL" not in json.dumps(openbao_import.build(altered).document)


def test_the_types_left_out_are_printed_with_the_reason(built: openbao_import.ImportFile) -> None:
    text = openbao_import.instructions(built, Path("dr-import.json"))
    left_out = {t for t, _, _ in built.not_covered}
    # no root certificate at all: restored_pki adopts the restored CAs (openbao.py)
    assert left_out == {PROVIDER, "vault:pkiSecret/secretBackendCert:SecretBackendCert"}
    not_covered = text.split("not covered by the file:")[1]
    for typ, name, _ in built.not_covered:
        assert typ in not_covered and name in not_covered
    assert "issues a fresh one" in not_covered
    assert not {e["type"] for e in built.document["resources"]} & left_out


def test_the_command_writes_the_file_and_the_commands_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], built: openbao_import.ImportFile
) -> None:
    out = tmp_path / "dr-import.json"
    assert cli.main(["openbao", "import-file", "--stack", STACK, "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == built.document  # phase 2, although the stack file is phase 1
    printed = capsys.readouterr().out
    assert f"pulumi import --file {out} --stack {STACK} --protect=false --generate-code=false" in printed
    targets = " ".join(f"--target '{u}'" for u in built.targets)
    assert f"pulumi up --stack {STACK} {targets}" in printed
    assert "platform.openbao.initialised: true and restored_pki: true" in printed  # the file says false
    # the commands are complete: nothing to fill in by hand (no <placeholder>, no provider id)
    commands = [line for line in printed.splitlines() if line.lstrip().startswith(("1.", "2."))]
    assert len(commands) == 2 and not any("<" in c or ">" in c for c in commands)


def test_a_vault_type_without_a_rule_fails_the_command_naming_it(
    dr: tuple[planner.Plan, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plan, _ = dr
    [mount] = [r for r in plan.of_type("vault:index/mount:Mount") if r.inputs["path"] == "kv"]
    audit = dataclasses.replace(
        mount, type="vault:index/audit:Audit", name="new-audit", urn=mount.urn.replace("-kv", "-audit")
    )
    altered = dataclasses.replace(plan, resources=[*plan.resources, audit])
    with pytest.raises(openbao_import.UnknownVaultType, match="vault:index/audit:Audit"):
        openbao_import.build(altered)
    monkeypatch.setattr(planner, "run", lambda *args, **kwargs: altered)
    out = tmp_path / "import.json"
    assert cli.main(["openbao", "import-file", "--stack", STACK, "--out", str(out)]) == 1
    assert "vault:index/audit:Audit" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.skipif(shutil.which("pulumi") is None, reason="no Pulumi CLI on this machine")
def test_the_pulumi_cli_reads_the_file_as_written(tmp_path: Path, built: openbao_import.ImportFile) -> None:
    """With the real CLI, a fresh local-backend stack: `pulumi import --preview-only` must get past
    reading the file (no name-table, ambiguity or schema error). It cannot import anything there: the
    provider is not in that stack's state (step 1) and no OpenBao answers."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "Pulumi.yaml").write_text(f"name: {PROJECT}\nruntime: python\n")
    out = openbao_import.write(built, tmp_path / "import.json")
    env = {
        **os.environ,
        "PULUMI_BACKEND_URL": (tmp_path / "state").as_uri(),
        "PULUMI_CONFIG_PASSPHRASE": "test only",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
    }
    (tmp_path / "state").mkdir()

    def pulumi(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["pulumi", *args], cwd=project, env=env, capture_output=True, text=True, timeout=300, check=False
        )

    init = pulumi("stack", "init", STACK, "--non-interactive")
    assert init.returncode == 0, init.stderr
    result = pulumi(
        "import", "--file", str(out), "--stack", STACK, "--preview-only", "--non-interactive",
        "--protect=false", "--generate-code=false",
    )  # fmt: skip
    output = result.stdout + result.stderr
    for file_error in ("could not read import file", "has no entry in 'nameTable'", "ambiguous", "has no ID"):
        assert file_error not in output


def test_a_restored_openbao_keeps_its_cas_and_a_fresh_one_gets_new_roots() -> None:
    """restored_pki (openbao.py): no root is generated on a restored PKI mount; the CA Magento is
    told to trust (gateway_ingress_ca_pem) is what the restored mount's default issuer holds."""
    roots = "vault:pkiSecret/secretBackendRootCert:SecretBackendRootCert"
    restored = plan_of(openbao_import.phase_two(sections(STACK)), stack=STACK)
    assert restored.of_type(roots) == []
    assert restored.outputs["gateway_ingress_ca_pem"] == planner.DEPLOY_TIME_OUTPUTS[roots]["certificate"]
    fresh_data = openbao_import.phase_two(sections(STACK))
    fresh_data["platform"]["openbao"]["restored_pki"] = False
    fresh = plan_of(fresh_data, stack=STACK)
    assert sorted(r.inputs["backend"] for r in fresh.of_type(roots)) == ["pki", "pki-ingress"]
