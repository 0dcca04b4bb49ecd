"""``sovereign openbao import-file --stack S``: the DR takeover's ``pulumi import`` step as a file.

After a snapshot of the primary's OpenBao is restored into the DR region's OpenBao
(docs/backup-restore.md, "DR takeover"), that OpenBao already holds the mounts, keys, policies and
Kubernetes-auth configuration the program declares, but the DR stack's state does not: phase 2's
``pulumi up`` would try to create them and stop on "path is already in use". This module runs the
stack's program under Pulumi's mocks in phase 2 (``platform.openbao.initialised: true``, whatever
the stack file says), takes every pulumi-vault resource of the plan, and writes Pulumi's bulk
import file for the ones the restored snapshot already holds. It only writes a file: no Pulumi
CLI, no OpenBao, no credentials.

The file format (``pulumi import --file FILE``), from Pulumi's docs and source:

- https://www.pulumi.com/docs/iac/cli/commands/pulumi_import/ and its "bulk import operations"
  guide (https://www.pulumi.com/docs/iac/guides/migration/import/#bulk-import-operations):
  ``{"nameTable": {NAME: URN, ...}, "resources": [{"type", "name", "id", "parent", "provider"}]}``;
  ``parent`` and ``provider`` are *names*, resolved through ``nameTable``.
- pulumi/pulumi ``pkg/cmd/pulumi/operations/import.go`` (``parseImportFile``): each resource's URN
  is ``NewURN(stack, project, <parent URN's qualified type>, type, name)``, so it lands on exactly
  the URN the program registers when ``parent`` is the component's URN; ``provider`` must name a
  ``nameTable`` entry holding the provider's plain URN.
- pulumi/pulumi ``pkg/resource/deploy/import.go``: the engine turns that URN into the provider
  reference (``urn::id``) itself, from the provider's state in the stack
  (``providers.NewReference(imp.Provider, state.ID)``); a provider that is not in the state is an
  error. The file therefore never carries the provider's id, but the provider must be in the state
  first: a targeted ``pulumi up`` creates it (and the component around it) before the import. A
  provider is configuration, not a cloud object: it cannot itself be imported.
- pulumi/pulumi ``pkg/resource/deploy/deployment.go`` (``generateURN``): an engine URN carries the
  full chain of parent types, without the root stack's. The mocks' URNs keep only the nearest
  parent's type (pulumi/runtime/mocks.py ``make_urn``), so URNs here are rebuilt from the parent
  chain (``engine_urn``).

Import IDs: the "Import" section of each type's docs in pulumi-vault 7.14.0 (the SDK installed
from pyproject.toml's pin, ``pulumi_vault/**/*.py`` docstrings, "## Import"), checked against the
importers of terraform-provider-vault v5.10.1 (``vault/resource_*.go``), which pulumi-vault
bridges. A vault type this module does not know fails the command, naming it: a resource added to
infra/k8s_platform/openbao.py cannot be skipped silently.
"""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.errors import SovereignError

if TYPE_CHECKING:  # the CLI builds its parser for every command: Pulumi is imported when used only
    from infra import plan as planner

from infra.paths import REPO_ROOT, STACKS_DIR

ROOT_STACK_TYPE = "pulumi:pulumi:Stack"
VAULT_PROVIDER = "pulumi:providers:vault"
MOUNT = "vault:index/mount:Mount"
POLICY = "vault:index/policy:Policy"
AUTH_BACKEND = "vault:index/authBackend:AuthBackend"
TRANSIT_KEY = "vault:transit/secretBackendKey:SecretBackendKey"
PKI_ROLE = "vault:pkiSecret/secretBackendRole:SecretBackendRole"
PKI_ROOT_CERT = "vault:pkiSecret/secretBackendRootCert:SecretBackendRootCert"
PKI_CERT = "vault:pkiSecret/secretBackendCert:SecretBackendCert"
K8S_AUTH_CONFIG = "vault:kubernetes/authBackendConfig:AuthBackendConfig"
K8S_AUTH_ROLE = "vault:kubernetes/authBackendRole:AuthBackendRole"

# type -> the import ID from the resource's inputs (the plan's inputs, camelCase as on the wire).
# Each: pulumi-vault 7.14.0's "## Import" section, and the importer in terraform-provider-vault v5.10.1.
IMPORT_IDS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    # mount.py: "Mounts can be imported using the `path`" (resource_mount.go: d.SetId(path))
    MOUNT: lambda i: str(i["path"]),
    # policy.py: "Policies can be imported using the `name`" (resource_policy.go: d.SetId(name))
    POLICY: lambda i: str(i["name"]),
    # auth_backend.py: "Auth methods can be imported using the `path`" (the path defaults to the type)
    AUTH_BACKEND: lambda i: str(i.get("path") or i["type"]),
    # transit/secret_backend_key.py: `transit/keys/my_key` (regexp "^(.+)/keys/.+$")
    TRANSIT_KEY: lambda i: f"{i['backend']}/keys/{i['name']}",
    # pkisecret/secret_backend_role.py: `pki/roles/my_role` (regexp "^(.+)/roles/.+$")
    PKI_ROLE: lambda i: f"{i['backend']}/roles/{i['name']}",
    # kubernetes/auth_backend_config.py: `auth/kubernetes/config` (regexp "^auth/(.+)/config$")
    K8S_AUTH_CONFIG: lambda i: f"auth/{i.get('backend') or 'kubernetes'}/config",
    # kubernetes/auth_backend_role.py: `auth/kubernetes/role/foo` (regexp "^auth/(.+)/role/.+$")
    K8S_AUTH_ROLE: lambda i: f"auth/{i.get('backend') or 'kubernetes'}/role/{i['roleName']}",
}

PKI_ROOT_WHY = (
    "in the snapshot, but pulumi-vault cannot import it: its docs have no Import section and "
    "terraform-provider-vault v5.10.1 declares no importer for vault_pki_secret_backend_root_cert (its "
    "read only checks the mount). Left in the program, `pulumi up` would generate a SECOND root CA on "
    "the restored mount (POST <backend>/issuers/generate/root/internal: a new key) and the stack output "
    "gateway_ingress_ca_pem would be that new, unused CA. With platform.openbao.restored_pki: true the "
    "program declares no root and reads each restored mount's default issuer instead: set it"
)
NOT_IMPORTED: dict[str, str] = {
    VAULT_PROVIDER: (
        "a provider is configuration, not an OpenBao object, and cannot be imported; the file names it "
        "by URN and `pulumi import` takes its id from the stack's state, so step 1 creates it first"
    ),
    PKI_ROOT_CERT: PKI_ROOT_WHY,
    PKI_CERT: (
        "an issued certificate with its private key, which OpenBao returns once, when it issues it (the "
        "snapshot keeps the serial, never the key); pulumi-vault has no import for it either: phase 2's "
        "`pulumi up` issues a fresh one from the restored CA"
    ),
}


class UnknownVaultType(SovereignError, RuntimeError):
    """A pulumi-vault resource type this module has no rule for: add it to IMPORT_IDS or NOT_IMPORTED."""


@dataclass
class ImportFile:
    stack: str
    document: dict[str, Any]
    # (type, name, why) of each vault resource the file leaves out
    not_covered: list[tuple[str, str, str]] = field(default_factory=list)
    # what step 1's targeted `pulumi up` must create first: the parent components and the provider
    targets: list[str] = field(default_factory=list)
    initialised_in_stack_file: bool = True


def phase_two(sections: Mapping[str, Any]) -> dict[str, Any]:
    """The stack's config sections with ``platform.openbao.initialised: true`` (phase 2) and
    ``restored_pki: true`` (the restored PKI mounts' CAs adopted, not generated anew)."""
    data = copy.deepcopy(dict(sections))
    platform = dict(data.get("platform") or {})
    platform["openbao"] = {**(platform.get("openbao") or {}), "initialised": True, "restored_pki": True}
    data["platform"] = platform
    return data


def _own_type(urn: str) -> str:
    return urn.split("::")[2].split("$")[-1]


def engine_urn(resource: planner.PlannedResource, by_urn: Mapping[str, planner.PlannedResource]) -> str:
    """The URN the Pulumi engine gives *resource*: its parents' types in full, the root stack's left
    out (pulumi/pulumi pkg/resource/deploy/deployment.go, generateURN)."""
    chain = [resource.type]
    parent = resource.parent
    while parent:
        chain.append(_own_type(parent))
        known = by_urn.get(parent)
        parent = known.parent if known is not None else None
    types = [t for t in reversed(chain) if t != ROOT_STACK_TYPE]
    stack, project = resource.urn.split("::")[0].removeprefix("urn:pulumi:"), resource.urn.split("::")[1]
    return f"urn:pulumi:{stack}::{project}::{'$'.join(types)}::{resource.name}"


def build(plan: planner.Plan) -> ImportFile:
    """The import file of *plan*: every vault resource that a restored snapshot holds, with its
    parent and provider through ``nameTable``; the others in ``not_covered`` with the reason."""
    by_urn = {r.urn: r for r in plan.resources}
    vault = [r for r in plan.custom() if r.type.startswith("vault:") or r.type == VAULT_PROVIDER]
    unknown = sorted({r.type for r in vault if r.type not in IMPORT_IDS and r.type not in NOT_IMPORTED})
    if unknown:
        raise UnknownVaultType(
            "no import rule for pulumi-vault type(s) "
            + ", ".join(unknown)
            + ": say in infra/openbao_import.py (IMPORT_IDS or NOT_IMPORTED) whether a restored snapshot "
            "holds it and, if so, its import ID (the Import section of its pulumi-vault docs)"
        )
    providers = [r for r in vault if r.type == VAULT_PROVIDER]
    importable = [r for r in vault if r.type in IMPORT_IDS]
    if importable and len(providers) != 1:
        raise UnknownVaultType(
            f"{len(providers)} vault providers in the plan: the import file cannot tell which one each "
            "resource uses (infra/k8s_platform/openbao.py declares one explicit provider)"
        )
    name_table: dict[str, str] = {}
    resources: list[dict[str, str]] = []
    targets: list[str] = []
    for r in sorted(importable, key=lambda r: (r.type, r.name)):
        entry = {"type": r.type, "name": r.name, "id": IMPORT_IDS[r.type](r.inputs)}
        if r.parent and _own_type(r.parent) != ROOT_STACK_TYPE:
            parent = by_urn[r.parent]
            name_table[parent.name] = engine_urn(parent, by_urn)
            entry["parent"] = parent.name
            if name_table[parent.name] not in targets:
                targets.append(name_table[parent.name])
        provider = providers[0]
        name_table[provider.name] = engine_urn(provider, by_urn)
        entry["provider"] = provider.name
        resources.append(entry)
    if providers and importable:
        targets.append(engine_urn(providers[0], by_urn))
    not_covered = [(r.type, r.name, NOT_IMPORTED[r.type]) for r in vault if r.type in NOT_IMPORTED]
    not_covered.sort(key=lambda t: (t[0], t[1]))
    return ImportFile(
        stack=plan.stack,
        document={"nameTable": dict(sorted(name_table.items())), "resources": resources},
        not_covered=not_covered,
        targets=targets,
    )


def import_file(stacks_dir: Path, stack: str) -> ImportFile:
    """The stack file's config in phase 2, under mocks (infra/plan.py), as an import file."""
    from infra import config as stack_config
    from infra import plan as planner

    path = stack_config.stack_file(stacks_dir, stack)
    sections, document = stack_config.read_stack_file(path)
    openbao = (sections.get("platform") or {}).get("openbao") or {}
    initialised = bool(openbao.get("initialised")) and bool(openbao.get("restored_pki"))
    data = phase_two(sections)
    cfg = stack_config.parse(stack, data, str(path))
    plan = planner.run(cfg, data, secrets_provider=document.get("secretsprovider"))
    result = build(plan)
    result.initialised_in_stack_file = initialised
    return result


def write(result: ImportFile, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result.document, indent=2) + "\n", encoding="utf-8")
    return out


def instructions(result: ImportFile, out: Path) -> str:
    """What to run, in order, and what the file does not cover."""
    stack, count = result.stack, len(result.document["resources"])
    lines = [f"sovereign openbao: wrote {out}: {count} OpenBao objects to import into stack {stack}"]
    if not count:
        return "\n".join([*lines, "nothing to import: the stack's program declares no OpenBao object"])
    if not result.initialised_in_stack_file:
        lines.append(
            "first set platform.openbao.initialised: true and restored_pki: true in "
            f"stacks/Pulumi.{stack}.yaml: the file is made from phase 2's program with the restored CAs "
            "adopted, and the `pulumi up` below runs with the stack file's config"
        )
    targets = " ".join(f"--target '{urn}'" for urn in result.targets)
    lines += [
        "with the restored DR OpenBao unsealed and its tunnel open (docs/backup-restore.md), and VAULT_TOKEN "
        "a token of the restored state (the primary's: the throw-away root token went with the restore), "
        "run in order:",
        f"  1. pulumi up --stack {stack} {targets}",
        "     (records the OpenBaoConfiguration component and the vault provider in the state: "
        "`pulumi import` takes the provider's id from there)",
        f"  2. pulumi import --file {out} --stack {stack} --protect=false --generate-code=false",
        "     (adopts the objects above; the program already declares them, so no code is generated. An "
        "object the snapshot lacks, e.g. a key the DR stack's config names differently from the primary's "
        "(storage.manifest_signing_key), stops it, named: drop that entry, phase 2 creates it. The "
        "imported objects keep the primary's settings until phase 2 applies the DR stack's)",
        f"  3. phase 2: pulumi up --stack {stack}",
        "not covered by the file:",
    ]
    for typ in dict.fromkeys(t for t, _, _ in result.not_covered):
        names = ", ".join(n for t, n, _ in result.not_covered if t == typ)
        lines.append(f"  - {typ} ({names}): {NOT_IMPORTED[typ]}")
    return "\n".join(lines)


def cmd_import_file(args: argparse.Namespace) -> int:

    result = import_file(Path(args.stacks_dir), args.stack)
    out = Path(args.out) if args.out else REPO_ROOT / ".sovereign" / "openbao" / f"{args.stack}-import.json"
    print(instructions(result, write(result, out)))
    return 0


def add_parser(osub: Any) -> None:
    """``sovereign openbao import-file`` (registered by infra/openbao_cli.py's ``openbao`` parser)."""
    p = osub.add_parser(
        "import-file",
        help="DR takeover: the `pulumi import --file` JSON of the OpenBao objects a restored snapshot holds",
    )
    p.add_argument("--stack", required=True, help="the stack taking over (e.g. eu-north-dr)")
    p.add_argument("--out", help="where to write it (default: .sovereign/openbao/<stack>-import.json)")
    p.add_argument("--stacks-dir", default=str(STACKS_DIR))
    p.set_defaults(func=cmd_import_file)
