"""What the compliance evidence says, collected from the program, the config and the policies.

Everything here is derived, not written by hand: the stack file is validated by the same
config model the program uses; the resources come from the real Pulumi program run under
Pulumi's mocks (``infra.plan``); the policy results are the policy pack's rules over those
resources; the use cases are the gateway's own policy files; the control mapping is
``controls.yaml``, whose every pointer must resolve to a file, test or setting that exists.

A stack whose config is refused still gets a report: its findings (each problem the config
validation names, mapped to the controls it breaks) and the residency of what it declares,
read from the raw stack file.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel

from infra import config as stack_config
from infra import plan as planner
from infra import residency
from infra.policy.rules import RULES

REPO = Path(__file__).resolve().parents[2]
CONTROLS = Path(__file__).with_name("controls.yaml")
RUNBOOKS = REPO / "docs" / "runbooks"


@dataclass(frozen=True)
class Finding:
    source: str  # "config" (validation), "residency" (what a refused config declares), "policy" (the pack)
    key: str  # the config key, or the rule's name
    subject: str  # the key or the resource
    message: str
    controls: tuple[str, ...] = ()


@dataclass(frozen=True)
class Hop:
    source: str
    target: str
    carries: str  # "in clear" | "tokenised" | "none" | "metadata"
    what: str
    transport: str
    where: str
    code: str


@dataclass(frozen=True)
class ResidencyRow:
    kind: str  # cloud resource | dedicated server | endpoint
    name: str  # the resource's name, or the config key that declares it
    detail: str
    location: str
    jurisdiction: str
    operator: str
    inside: bool
    note: str = ""


@dataclass(frozen=True)
class UseCase:
    name: str
    version: str
    model: str
    served: bool
    fields: tuple[str, ...]
    tokenised: tuple[str, ...]
    removed: tuple[str, ...]
    max_tokens: int
    description: str


@dataclass
class Control:
    id: str
    framework: str
    ref: str
    title: str
    claim: str
    code: list[str]
    tests: list[str]
    config: list[str]
    docs: list[str]
    findings: list[str]
    broken_by: list[Finding] = field(default_factory=list)

    @property
    def holds(self) -> bool:
        return not self.broken_by


@dataclass
class Evidence:
    stack: str
    generated_at: str
    revision: str
    summary: dict[str, str]
    config_refused: bool
    findings: list[Finding]
    hops: list[Hop]
    residency: list[ResidencyRow]
    use_cases: list[UseCase]
    rules: list[str]
    checked_resources: int
    kubernetes_objects: int
    controls: list[Control]
    runbooks: list[str]

    @property
    def compliant(self) -> bool:
        return not self.findings


# -- the control mapping and its pointers ------------------------------------------------------


def load_controls(path: Path = CONTROLS) -> list[Control]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [Control(**{k: v for k, v in c.items()}) for c in data["controls"]]


def _model_has(model: type[BaseModel], dotted: str) -> bool:
    current: Any = model
    for part in dotted.split("."):
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields:
            return False
        annotation = fields[part].annotation
        nested = [
            a for a in (annotation, *get_args(annotation)) if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        current = nested[0] if nested else None
    return True


def unresolved(control: Control, repo: Path = REPO) -> list[str]:
    """The pointers of *control* that do not resolve (empty when every claim has its proof)."""
    from gateway.policy import UseCasePolicy
    from gateway.settings import GatewaySettings

    problems = []
    if not control.code or not control.tests:
        problems.append(f"{control.id}: a control needs at least one code and one test pointer")
    for path in [*control.code, *control.docs]:
        if not (repo / path).exists():
            problems.append(f"{control.id}: {path} does not exist")
    for test in control.tests:
        file, _, name = test.partition("::")
        source = repo / file
        if not source.is_file():
            problems.append(f"{control.id}: test file {file} does not exist")
        elif name and not re.search(rf"^(async )?def {re.escape(name)}\(", source.read_text(), re.MULTILINE):
            problems.append(f"{control.id}: {file} has no test {name}")
    models: dict[str, type[BaseModel]] = {
        "stack": stack_config.StackConfig, "gateway": GatewaySettings, "policy": UseCasePolicy,
    }  # fmt: skip
    for pointer in control.config:
        scope, _, key = pointer.partition(":")
        if scope not in models or not _model_has(models[scope], key):
            problems.append(f"{control.id}: setting {pointer} does not exist")
    return problems


def _matches(pattern: str, finding: Finding) -> bool:
    kind, _, name = pattern.partition(":")
    if kind == "rule":
        return finding.source == "policy" and finding.key == name
    return finding.source in ("config", "residency") and (
        finding.key == name or finding.key.startswith(name + ".")
    )


# -- findings ----------------------------------------------------------------------------------

_PROBLEM = re.compile(rf"^{re.escape(stack_config.PROJECT)}:(?P<key>[^:\s]+):\s*(?P<message>.*)$", re.DOTALL)


def config_findings(problems: list[str]) -> list[Finding]:
    found = []
    for problem in problems:
        match = _PROBLEM.match(problem)
        key, message = (match["key"], match["message"]) if match else ("config", problem)
        found.append(Finding("config", key, key, message))
    return found


# -- residency ---------------------------------------------------------------------------------


def _location_row(kind: str, name: str, detail: str, location: str) -> ResidencyRow:
    where = residency.HCLOUD_EU_LOCATIONS.get(location)
    if where:
        return ResidencyRow(kind, name, detail, f"{location} ({where})", where.rsplit(", ", 1)[1],
                            "Hetzner Online GmbH", True)  # fmt: skip
    site = residency.ROBOT_DATACENTER_RE.match(location)
    if site:
        town = residency.HCLOUD_EU_LOCATIONS[residency.ROBOT_SITE_LOCATION[site["site"]]]
        return ResidencyRow(kind, name, detail, f"{location} ({town})", town.rsplit(", ", 1)[1],
                            "Hetzner Online GmbH", True)  # fmt: skip
    if location in residency.HCLOUD_EU_NETWORK_ZONES:
        return ResidencyRow(kind, name, detail, location, "EU", "Hetzner Online GmbH", True)
    outside = residency.HCLOUD_NON_EU_LOCATIONS.get(location, location)
    return ResidencyRow(kind, name, detail, f"{location} ({outside})", "outside the EU", "-", False,
                        residency.ART_44)  # fmt: skip


def _endpoint_row(name: str, value: str, extra: list[residency.EuEndpoint]) -> ResidencyRow:
    host = residency.host_of(value)
    problem = residency.endpoint_problem(value, extra)
    entry = residency.match_endpoint(host, extra) if host else None
    if entry is not None:
        return ResidencyRow(
            "endpoint", name, value, host, entry.jurisdiction, entry.operator, problem is None
        )
    if problem is None:
        return ResidencyRow("endpoint", name, value, host or value, "inside the boundary",
                            "private network or cluster", True)  # fmt: skip
    return ResidencyRow("endpoint", name, value, host or "-", "not on the EU allowlist", "-", False, problem)


def _endpoints(sections: dict[str, Any]) -> list[tuple[str, str]]:
    endpoints = dict((sections.get("endpoints") or {}).items())
    pairs = [(f"endpoints.{k}", str(v)) for k, v in endpoints.items() if v]
    for key, value in (
        ("rke2.artifact_url", (sections.get("rke2") or {}).get("artifact_url")),
        ("gpu_pool.nvidia_apt_mirror", (sections.get("gpu_pool") or {}).get("nvidia_apt_mirror")),
    ):
        if value:
            pairs.append((key, str(value)))
    archive = (sections.get("storage") or {}).get("audit_archive")
    if archive and endpoints.get("object_storage"):  # a bucket on the stack's object storage
        host = residency.host_of(str(endpoints["object_storage"]))
        pairs.append(("storage.audit_archive", f"{archive}?endpoint={host}"))
    copy = (sections.get("storage") or {}).get("openbao_snapshot_copy") or {}
    if isinstance(copy, dict) and copy.get("endpoint"):  # the OpenBao snapshots' second location
        pairs.append(("storage.openbao_snapshot_copy.endpoint", str(copy["endpoint"])))
    receivers = ((sections.get("platform") or {}).get("alerting") or {}).get("receivers") or []
    for i, receiver in enumerate(receivers):  # where Alertmanager sends alerts
        if isinstance(receiver, dict) and receiver.get("url"):
            pairs.append((f"platform.alerting.receivers.{i}.url", str(receiver["url"])))
    return pairs


def _extra_hosts(sections: dict[str, Any]) -> list[residency.EuEndpoint]:
    hosts = []
    for h in (sections.get("residency") or {}).get("extra_hosts") or []:
        if isinstance(h, dict) and str(h.get("jurisdiction", "")).upper() in residency.EU_EEA_COUNTRIES:
            hosts.append(residency.EuEndpoint(str(h.get("host", "")).lower(), str(h["jurisdiction"]).upper(),
                                              str(h.get("operator", ""))))  # fmt: skip
    return hosts


def residency_from_plan(plan: planner.Plan, sections: dict[str, Any]) -> list[ResidencyRow]:
    rows = []
    for r in plan.custom():
        where = planner.location(r)
        if r.type.startswith("hcloud:") and where not in ("-", "(project)"):
            rows.append(_location_row("cloud resource", r.name, r.type.split(":")[-1], where))
    for host in plan.declared_hosts:
        rows.append(
            _location_row("dedicated server", host["name"], f"{host['product']} (Robot)", host["datacenter"])
        )
    extra = _extra_hosts(sections)
    rows += [_endpoint_row(name, value, extra) for name, value in _endpoints(sections)]
    return rows


def residency_from_sections(sections: dict[str, Any]) -> list[ResidencyRow]:
    """What a refused stack declares, read from the raw file."""
    rows = []
    for section in ("bastion", "control_plane", "workers", "load_balancer"):
        where = (sections.get(section) or {}).get("location")
        if where:
            rows.append(_location_row("cloud resource", f"{section}.location", "declared", str(where)))
    zone = (sections.get("network") or {}).get("zone")
    if zone:
        rows.append(_location_row("cloud resource", "network.zone", "network zone", str(zone)))
    for i, server in enumerate((sections.get("gpu_pool") or {}).get("servers") or []):
        if isinstance(server, dict) and server.get("datacenter"):
            rows.append(_location_row("dedicated server", f"gpu_pool.servers.{i}.datacenter",
                                      str(server.get("name")), str(server["datacenter"])))  # fmt: skip
    extra = _extra_hosts(sections)
    rows += [_endpoint_row(name, value, extra) for name, value in _endpoints(sections)]
    return rows


# -- the data flow -----------------------------------------------------------------------------


def hops(cfg: stack_config.StackConfig) -> list[Hop]:
    lb, region = cfg.load_balancer, cfg.region
    gpu = ", ".join(sorted({s.datacenter for s in cfg.gpu_pool.servers})) or "no GPU servers declared"

    def where(endpoint: str) -> str:
        host = residency.host_of(endpoint)
        entry = residency.match_endpoint(host, cfg.residency.entries()) if host else None
        return f"{host} ({entry.jurisdiction}, {entry.operator})" if entry else (host or endpoint)

    store_where = where(cfg.endpoints.object_storage)
    archive = cfg.storage.audit_archive or "not configured (storage.audit_archive)"
    return [
        Hop("Magento", "gateway", "in clear",
            "the request: free text and the structured patient context Magento already holds",
            f"HTTPS to the private load balancer {lb.private_ip}:{lb.listen_port} (no public interface); "
            "API key per tenant", f"{lb.location} ({region.jurisdiction})",
            "infra/components/load_balancer.py"),
        Hop("gateway", "PHI filter", "in clear",
            "minimisation per use case, detection, FF1 / surrogate tokenisation, in the gateway's memory",
            "in process", f"CPU workers, {cfg.workers.location}", "gateway/phi"),
        Hop("gateway", "vLLM", "tokenised",
            "identifiers as FF1 ciphertexts or keyed surrogates; cards and disallowed categories removed",
            "mTLS with certificates from OpenBao's PKI; inference pods have no egress",
            f"GPU servers {gpu}", "infra/k8s_platform/inference.py"),
        Hop("vLLM", "gateway", "tokenised",
            "the answer, with tokens; the gateway restores the real values (also while streaming)",
            "mTLS", f"GPU servers {gpu}", "gateway/phi/tokenise.py"),
        Hop("gateway", "Magento", "in clear", "the restored answer",
            "HTTPS through the private load balancer", f"{lb.location} ({region.jurisdiction})",
            "gateway/app.py"),
        Hop("gateway", "OpenBao", "none",
            "data-key requests; keys come back wrapped and in clear for memory only",
            "TLS 1.3, Kubernetes auth; OpenBao HA with Raft", f"CPU workers, {cfg.workers.location}",
            "infra/k8s_platform/openbao.py"),
        Hop("gateway", "audit archive", "metadata",
            "categories and counts of PHI, policy version, outcome, latencies: never values",
            "hash-chained, HMAC-signed JSONL; sealed segments over HTTPS into an Object Lock bucket "
            f"({cfg.storage.audit_lock_mode}, {cfg.storage.audit_retention_days} days): {archive}",
            store_where, "infra/audit_archive.py"),
        Hop("model bucket", "vLLM", "none",
            "model weights, checked against a SHA-256 manifest signed with an OpenBao key",
            "HTTPS (weights Job only), then a read-only volume", store_where,
            "infra/k8s_platform/weights.py"),
        Hop("operator", "Pulumi state", "none",
            "infrastructure state; its secrets encrypted by OpenBao transit (hashivault://)",
            "HTTPS", where(cfg.endpoints.pulumi_backend), "infra/backend.py"),
    ]  # fmt: skip


# -- use cases ---------------------------------------------------------------------------------


def use_cases(served: set[str] | None) -> list[UseCase]:
    from gateway.phi.detect import CATEGORIES
    from gateway.policy import load_policies

    allowed = sorted(set(CATEGORIES) - {"OTHER"})
    out = []
    for policy in load_policies().values():
        out.append(UseCase(
            policy.name, policy.policy_version, policy.model,
            served is None or policy.model in served, tuple(policy.context_fields), tuple(policy.tokenise),
            tuple(c for c in allowed if c not in policy.tokenise), policy.max_tokens, policy.description,
        ))  # fmt: skip
    return out


# -- all together ------------------------------------------------------------------------------


def _revision() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True)  # fmt: skip
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"


def collect(stacks_dir: Path, stack: str) -> Evidence:
    path = stack_config.stack_file(stacks_dir, stack)
    sections, document = stack_config.read_stack_file(path)
    controls = load_controls()
    cfg: stack_config.StackConfig | None = None
    plan: planner.Plan | None = None
    try:
        cfg = stack_config.parse(stack, sections, str(path))
    except stack_config.StackConfigError as exc:
        findings = config_findings(exc.problems)
        # a field the validation refused stops its cross-checks (endpoints, backend): what the
        # raw file declares outside the boundary is a finding of its own
        for row in residency_from_sections(sections):
            if not row.inside and not any(
                f.key == row.name or f.key.startswith(row.name + ".") for f in findings
            ):
                findings.append(Finding("residency", row.name, row.name, f"{row.location}: {row.note}"))
    else:
        plan = planner.run(cfg, sections, secrets_provider=document.get("secretsprovider"))
        findings = [Finding("policy", v.rule, v.resource, v.message) for v in plan.violations]
    for control in controls:
        control.broken_by = [f for f in findings if any(_matches(p, f) for p in control.findings)]
    findings = [
        Finding(f.source, f.key, f.subject, f.message, tuple(c.id for c in controls if f in c.broken_by))
        for f in findings
    ]
    for control in controls:
        control.broken_by = [f for f in findings if control.id in f.controls]
    region = sections.get("region") or {}
    summary = {
        "region": str(region.get("name", "?")),
        "environment": str(region.get("environment", "prod")),
        "jurisdiction": str(region.get("jurisdiction", "DE")),
        "data classification": str(region.get("data_classification", "phi")),
        "secrets provider": str(document.get("secretsprovider") or "not set yet (pulumi stack init)"),
        "Pulumi backend": str((sections.get("endpoints") or {}).get("pulumi_backend", "?")),
    }
    served = {a for m in cfg.platform.models for a in (m.name, *m.aliases)} if cfg is not None else None
    return Evidence(
        stack=stack,
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        revision=_revision(),
        summary=summary,
        config_refused=cfg is None,
        findings=findings,
        hops=hops(cfg) if cfg is not None else [],
        residency=residency_from_plan(plan, sections)
        if plan is not None
        else residency_from_sections(sections),
        use_cases=use_cases(served),
        rules=list(RULES),
        checked_resources=len(plan.custom()) if plan is not None else 0,
        kubernetes_objects=len(plan.kubernetes_objects()) if plan is not None else 0,
        controls=controls,
        runbooks=sorted(p.name for p in RUNBOOKS.glob("*.md")) if RUNBOOKS.is_dir() else [],
    )
