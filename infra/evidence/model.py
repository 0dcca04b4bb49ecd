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

import ipaddress
import json
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel

from gateway.validation import Problem
from infra import config as stack_config
from infra import egress, residency
from infra import plan as planner
from infra.evidence import claims
from infra.paths import REPO_ROOT as REPO
from infra.policy.rules import RULES

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
    code: str  # the file that declares the implementing resource
    implemented_by: str = ""  # the planned resource(s) or rendered object(s) the hop comes from
    outside: tuple[str, ...] = ()  # the hop's ends that are outside the EU boundary (or not declared)


@dataclass(frozen=True)
class ResidencyRow:
    kind: str  # cloud resource | dedicated server | endpoint | model server | model weights
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


@dataclass(frozen=True)
class ClaimSpec:
    """A claim as controls.yaml states it: what is claimed, which check decides it, what proves it."""

    id: str
    text: str
    check: str
    tests: tuple[str, ...] = ()
    settings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Claim:
    """A claim with its verdict for one stack."""

    id: str  # "<control>.<claim>"
    text: str
    check: str
    status: str  # holds | fails | excepted | unverified | not applicable
    reason: str
    tests: tuple[str, ...]
    settings: tuple[str, ...]
    exception: stack_config.EvidenceException | None = None


@dataclass
class Control:
    id: str
    framework: str
    ref: str
    title: str
    claim: str  # the control's summary
    code: list[str]
    docs: list[str]
    findings: list[str]
    specs: list[ClaimSpec]
    claims: list[Claim] = field(default_factory=list)
    broken_by: list[Finding] = field(default_factory=list)

    @property
    def tests(self) -> list[str]:
        return list(dict.fromkeys(t for s in self.specs for t in s.tests))

    @property
    def config(self) -> list[str]:
        return list(dict.fromkeys(k for s in self.specs for k in s.settings))

    @property
    def status(self) -> str:
        statuses = {c.status for c in self.claims}
        if self.broken_by or claims.FAILS in statuses or not self.claims:
            return claims.FAILS
        for status in (claims.EXCEPTED, claims.UNVERIFIED, claims.HOLDS):
            if status in statuses:
                return status
        return claims.NOT_APPLICABLE

    @property
    def holds(self) -> bool:
        return self.status == claims.HOLDS


NOT_COMPLIANT, INCOMPLETE, WITH_EXCEPTIONS, COMPLIANT = (
    "NOT COMPLIANT",
    "INCOMPLETE",
    "COMPLIANT WITH EXCEPTIONS",
    "COMPLIANT",
)
# `sovereign evidence`'s exit code per verdict (2: the stack file or the folder cannot be used)
EXIT_CODES = {COMPLIANT: 0, WITH_EXCEPTIONS: 0, NOT_COMPLIANT: 1, INCOMPLETE: 3}


@dataclass(frozen=True)
class ExceptionUse:
    """An exception of the stack config and what it did in this report."""

    claim: str
    owner: str
    reason: str
    expires: str
    effect: str  # "applied" | "expired" | "not needed: the claim holds" | "names no claim"


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
    exceptions: list[ExceptionUse] = field(default_factory=list)
    blockers: list[str] = field(
        default_factory=list
    )  # what `pulumi up` would refuse before creating anything
    plan_egress: list[tuple[str, str, str, str]] = field(default_factory=list)  # model.public_egress(plan)
    provenance: Any = None  # infra.evidence.provenance.Provenance, set by the command
    results: list[Any] = field(default_factory=list)  # infra.evidence.results.RunResult, set by the command
    justifications: dict[str, str] = field(default_factory=dict)  # overrides the stack states, with why
    outcomes_note: str = ""

    @property
    def compliant(self) -> bool:
        """No finding and no failing claim (claims may still be unverified or excepted: see verdict)."""
        return not self.findings and all(c.status != claims.FAILS for c in self.controls)

    @property
    def verdict(self) -> str:
        """NOT COMPLIANT (a finding or a failing claim), INCOMPLETE (nothing fails, but claims rest on tests
        no recorded run of this code proves), COMPLIANT WITH EXCEPTIONS, or COMPLIANT."""
        if not self.compliant:
            return NOT_COMPLIANT
        if self.count(claims.UNVERIFIED):
            return INCOMPLETE
        if self.count(claims.EXCEPTED):
            return WITH_EXCEPTIONS
        return COMPLIANT

    def count(self, status: str) -> int:
        return sum(1 for c in self.controls for claim in c.claims if claim.status == status)


# -- the control mapping and its pointers ------------------------------------------------------


def load_controls(path: Path = CONTROLS) -> list[Control]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    controls = []
    for c in data["controls"]:
        specs = [
            ClaimSpec(
                s["id"], s["text"], s["check"], tuple(s.get("tests") or ()), tuple(s.get("settings") or ())
            )
            for s in c.get("claims") or []
        ]
        fields = {k: v for k, v in c.items() if k != "claims"}
        fields.setdefault("code", [])
        fields.setdefault("docs", [])
        fields.setdefault("findings", [])
        controls.append(Control(**fields, specs=specs))
    return controls


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
    if not control.code or not control.specs:
        problems.append(f"{control.id}: a control needs at least one code pointer and one claim")
    ids = [s.id for s in control.specs]
    for spec in control.specs:
        if not claims.known(spec.check):
            problems.append(
                f"{control.id}.{spec.id}: check {spec.check} does not exist (infra/evidence/claims.py)"
            )
        if not spec.tests:
            problems.append(f"{control.id}.{spec.id}: a claim needs at least one test that proves it")
        if ids.count(spec.id) > 1:
            problems.append(f"{control.id}.{spec.id}: claim id used twice")
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


def config_findings(problems: Sequence[Problem]) -> list[Finding]:
    """A finding per problem of a refused stack config, at its key without the project's prefix
    (``endpoints.registry_mirror``); one the file as a whole has is at ``config``."""
    found = []
    prefix = f"{stack_config.PROJECT}:"
    for problem in problems:
        if problem.path.startswith(prefix):
            key, message = problem.path.removeprefix(prefix), problem.message
        else:
            key, message = "config", str(problem)
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
    store = (sections.get("platform") or {}).get("memory_store") or {}
    if isinstance(store, dict) and store.get("enabled") and store.get("backup_bucket"):
        # the memory store's backups: a bucket on its endpoint (default the stack's object storage)
        where = store.get("backup_endpoint") or endpoints.get("object_storage")
        if where:
            host = residency.host_of(str(where))
            pairs.append(("platform.memory_store.backup_bucket", f"{store['backup_bucket']}?endpoint={host}"))
    receivers = ((sections.get("platform") or {}).get("alerting") or {}).get("receivers") or []
    for i, receiver in enumerate(receivers):  # where Alertmanager sends alerts
        if isinstance(receiver, dict) and receiver.get("url"):
            pairs.append((f"platform.alerting.receivers.{i}.url", str(receiver["url"])))
    return pairs


def _extra_hosts(sections: dict[str, Any]) -> list[residency.EuEndpoint]:
    hosts = []
    for h in (sections.get("residency") or {}).get("extra_hosts") or []:
        if isinstance(h, dict) and str(h.get("jurisdiction", "")).upper() in residency.EU_EEA_COUNTRIES:
            hosts.append(
                residency.EuEndpoint(
                    str(h.get("host", "")).lower(), str(h["jurisdiction"]).upper(), str(h.get("operator", ""))
                )
            )
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
    rows += _model_rows(plan, extra)
    return rows


def _model_kind(plan: planner.Plan, deployment: str) -> str:
    """``embeddings`` or ``chat``: what the gateway's upstream entry for this vLLM Deployment says
    (gateway.py upstream, ``kind: embeddings`` for an embedding model)."""
    for cm in plan.kubernetes_objects():
        if cm.get("kind") == "ConfigMap" and "gateway.yaml" in (cm.get("data") or {}):
            upstreams = (yaml.safe_load(cm["data"]["gateway.yaml"]) or {}).get("upstreams") or {}
            for u in upstreams.values():
                if f"//{deployment}." in str(u.get("url", "")) and u.get("kind") == "embeddings":
                    return "embeddings"
    return "chat"


def _model_rows(plan: planner.Plan, extra: list[residency.EuEndpoint]) -> list[ResidencyRow]:
    """Where each model runs and where its weights come from (issue #27: the embedding model too): a
    row per vLLM Deployment and GPU data centre (its pods run on the GPU servers only, by their
    nodeSelector), and a row per weights fetch Job for the bucket and endpoint it reads."""
    rows: list[ResidencyRow] = []
    sites = sorted({h["datacenter"] for h in plan.declared_hosts})
    for o in plan.kubernetes_objects():
        name = o["metadata"]["name"]
        if o.get("kind") == "Deployment" and o["metadata"].get("namespace") == "sovereign-inference":
            what = (
                "embedding model (vLLM pooling runner), on the GPU servers"
                if _model_kind(plan, name) == "embeddings"
                else "chat model (vLLM), on the GPU servers"
            )
            rows += [_location_row("model server", f"Deployment {name}", what, site) for site in sites]
        elif o.get("kind") == "Job" and name.startswith("weights-fetch-"):
            args = [a for c in o["spec"]["template"]["spec"]["containers"] for a in c.get("args", [])]
            source = args[args.index("--source") + 1] if "--source" in args else "?"
            endpoint = args[args.index("--endpoint") + 1] if "--endpoint" in args else ""
            row = _endpoint_row(f"Job {name}", endpoint, extra)
            rows.append(replace(row, kind="model weights", detail=f"{source} on {endpoint}"))
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
            rows.append(
                _location_row(
                    "dedicated server",
                    f"gpu_pool.servers.{i}.datacenter",
                    str(server.get("name")),
                    str(server["datacenter"]),
                )
            )
    extra = _extra_hosts(sections)
    rows += [_endpoint_row(name, value, extra) for name, value in _endpoints(sections)]
    return rows


# -- the data flow -----------------------------------------------------------------------------


def _where(cfg: stack_config.StackConfig, endpoint: str) -> str:
    host = residency.host_of(endpoint)
    entry = residency.match_endpoint(host, cfg.residency.entries()) if host else None
    return f"{host} ({entry.jurisdiction}, {entry.operator})" if entry else (host or endpoint)


_INTERNAL = [ipaddress.ip_network(n) for n in egress.INTERNAL_RANGES]


def _public(cidr: str) -> bool:
    """Whether *cidr* reaches past the private network and the cluster (RFC 1918, loopback, link-local,
    CGNAT). Documentation ranges (TEST-NET, which the examples use) count as public: they stand for
    real public addresses."""
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False
    return not any(network.version == n.version and network.subnet_of(n) for n in _INTERNAL)  # type: ignore[arg-type]


def _peer(rule: dict[str, Any]) -> str:
    return ", ".join(str(p["ipBlock"]["cidr"]) for p in rule.get("to", []) if "ipBlock" in p)


def _selected(policy: dict[str, Any]) -> str:
    labels = (policy["spec"].get("podSelector") or {}).get("matchLabels") or {}
    pods = ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "every pod"
    return f"{policy['metadata'].get('namespace')} ({pods})"


def public_egress(plan: planner.Plan) -> list[tuple[str, str, str, str]]:
    """(pods, policy, destination CIDRs, ports) of every NetworkPolicy egress rule that reaches a public
    address: read from the rendered manifests, so a rule the program adds is on the map without
    anyone updating the map."""
    found = []
    for o in plan.kubernetes_objects():
        if o.get("kind") != "NetworkPolicy":
            continue
        for rule in o["spec"].get("egress") or []:
            # no `to`: every destination (NetworkPolicyEgressRule: "If this field is empty or missing, this
            # rule matches all destinations")
            peers = rule.get("to") or [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}]
            rule = {**rule, "to": peers}
            blocks = [p["ipBlock"]["cidr"] for p in peers if "ipBlock" in p]
            if any(_public(b) for b in blocks):
                ports = ", ".join(
                    f"{x.get('protocol', 'TCP')}/{x.get('port', 'any')}" for x in rule.get("ports", [])
                )
                found.append((_selected(o), o["metadata"]["name"], _peer(rule), ports or "any port"))
    return found


_NAT_RULE = re.compile(r"iptables -t nat -A POSTROUTING .*?-d (?P<cidr>[0-9a-fA-F.:/]+)")


def bastion_nat(plan: planner.Plan, declared: dict[str, str]) -> dict[str, list[str]]:
    """Destination -> CIDRs the bastion masquerades to, parsed from the bastion server's cloud-init
    (what `pulumi up` hands Hetzner), named by the declared destinations."""
    from infra.egress import HETZNER_RESOLVERS

    resolvers = {f"{ip}/32" for ip in HETZNER_RESOLVERS}
    found: dict[str, list[str]] = {}
    for r in plan.custom():
        if r.type != "hcloud:index/server:Server" or not r.name.endswith("bastion-server"):
            continue
        for match in _NAT_RULE.finditer(str(r.inputs.get("userData", ""))):
            cidr = match["cidr"]
            name = "Hetzner resolvers (DNS)" if cidr in resolvers else declared.get(cidr, f"public {cidr}")
            if cidr not in found.setdefault(name, []):
                found[name].append(cidr)
    return found


def gpu_uplink(plan: planner.Plan) -> tuple[list[str], list[dict[str, Any]]]:
    """(GPU hosts, destinations) their public uplink may reach, read back from the inventory the plan
    hands `sovereign converge` (the hardening role's ``hardening_uplink_destinations``)."""
    for r in plan.custom():
        if not r.type.startswith("command:local:Command"):
            continue
        raw = (r.inputs.get("environment") or {}).get("SOVEREIGN_INVENTORY")
        if not isinstance(raw, str):
            continue
        try:
            gpu = json.loads(raw)["all"]["children"]["gpu"]
        except (ValueError, KeyError, TypeError):
            continue
        hosts = sorted((gpu.get("hosts") or {}).keys())
        return hosts, list((gpu.get("vars") or {}).get("hardening_uplink_destinations") or [])
    return [], []


def _declared_destinations(cfg: stack_config.StackConfig) -> dict[str, str]:
    """CIDR -> "host (name)" of the stack's declared egress destinations (egress.destinations)."""
    egress = getattr(cfg, "egress", None)
    found: dict[str, str] = {}
    for d in getattr(egress, "destinations", None) or []:
        for cidr in d.cidrs:
            found[str(cidr)] = f"{d.host} ({d.name})"
    return found


def _memory_store_hops(ctx: claims.Context) -> list[Hop]:
    """The gateway's memory store (infra/k8s_platform/memory_store.py), where the plan has its Cluster:
    what the gateway stores there, and the store's backups to the EU object storage."""
    cfg, plan = ctx.cfg, ctx.plan
    assert cfg is not None and plan is not None  # noqa: S101 (hops() returned early otherwise)
    clusters = [o for o in plan.kubernetes_objects() if o.get("kind") == "Cluster"
                and str(o.get("apiVersion", "")).startswith("postgresql.cnpg.io/")]  # fmt: skip
    if not clusters or claims.gateway(ctx) is None:
        return []
    cluster = clusters[0]
    spec = cluster["spec"]
    name = f"{cluster['metadata']['namespace']}/{cluster['metadata']['name']}"
    storage = spec.get("storage") or {}
    store = cfg.platform.memory_store
    barman = (spec.get("backup") or {}).get("barmanObjectStore") or {}
    out = [
        Hop(
            "gateway",
            "memory store",
            "tokenised",
            "pseudonymised items: the tenant-scoped pseudonym of the patient (an OpenBao HMAC, never an "
            "identifier), the tokenised text and its embedding vectors",
            f"PostgreSQL over TLS 1.3 (verify-full against the store's CA), only the gateway's pods on "
            f"5432 (NetworkPolicy memory-store); volumes of StorageClass {storage.get('storageClass')} "
            "(LUKS)",
            f"CPU workers, {cfg.workers.location}",
            "infra/k8s_platform/memory_store.py",
            f"CloudNativePG Cluster {name} ({spec.get('instances')} instances), NetworkPolicy memory-store",
        )
    ]
    if barman.get("destinationPath"):
        sse = (barman.get("data") or {}).get("encryption") or "NOT set"
        out.append(
            Hop(
                "memory store",
                "memory backup bucket",
                "tokenised",
                "base backups and WAL of the store: the same pseudonymised items; an erased patient's "
                f"items remain in older backups for at most {store.backup_retention_days} days "
                "(retentionPolicy)",
                f"barman-cloud over HTTPS, server-side encrypted ({sse}), "
                f"daily base backup and continuous WAL archive: {barman['destinationPath']}",
                _where(cfg, str(barman.get("endpointURL", ""))),
                "infra/k8s_platform/memory_store.py",
                f"Cluster {name} spec.backup, ScheduledBackup",
            )
        )
    return out


def hops(ctx: claims.Context) -> list[Hop]:
    """The data flow, one hop per flow the plan implements: a hop whose resource the plan lacks is
    not drawn (the DR stack without gateway draws no Magento, no model server)."""
    cfg, plan = ctx.cfg, ctx.plan
    if cfg is None or plan is None:
        return []
    gw, models = claims.gateway(ctx), claims.inference(ctx)
    lb, region = cfg.load_balancer, cfg.region
    gpu = ", ".join(sorted({s.datacenter for s in cfg.gpu_pool.servers})) or "no GPU servers declared"
    store_where = _where(cfg, cfg.endpoints.object_storage)
    settings = claims.gateway_settings(ctx)
    out: list[Hop] = []
    services = [r for r in plan.custom() if r.type == "hcloud:index/loadBalancerService:LoadBalancerService"]
    ingresses = [o for o in plan.kubernetes_objects() if o.get("kind") == "Ingress"
                 and o["metadata"].get("namespace") == "sovereign-gateway"]  # fmt: skip
    if gw is not None and services and ingresses:
        site = cfg.evidence.magento
        tls = ", ".join(h for o in ingresses for t in o["spec"].get("tls", []) for h in t.get("hosts", []))
        outside = () if site and site.jurisdiction.upper() in residency.EU_EEA_COUNTRIES else ("Magento",)
        client = f"{site.location} ({site.jurisdiction.upper()}, {site.operator})" if site else "not declared"
        out.append(
            Hop(
                "Magento",
                "gateway",
                "in clear",
                "the request: free text and the structured patient context Magento already holds",
                f"HTTPS to {lb.hostname or lb.private_ip}:{services[0].inputs.get('listenPort')} "
                f"(certificate for {tls or 'no host'}), the private load balancer {lb.private_ip} "
                "(no public interface); API key per "
                "tenant",
                f"Magento: {client}; load balancer {lb.location} ({region.jurisdiction})",
                "infra/components/load_balancer.py",
                "LoadBalancerService, Ingress gateway (TLS from OpenBao's ingress PKI)",
                outside,
            )
        )
    if gw is not None:
        out.append(
            Hop(
                "gateway",
                "PHI filter",
                "in clear",
                "minimisation per use case, detection, FF1 / surrogate tokenisation, in the gateway's memory",
                "in process",
                f"CPU workers, {cfg.workers.location}",
                "gateway/phi",
                "StatefulSet gateway",
            )
        )
    upstreams = settings.get("upstreams") or {}
    for model in models if gw is not None else []:
        name = model["metadata"]["name"]
        mtls = any(
            name in str(u.get("url", "")) and (u.get("tls") or {}).get("cert_file")
            for u in upstreams.values()
        )
        transport = "mTLS with certificates from OpenBao's PKI" if mtls else "NOT mutually authenticated"
        if ctx.plan is not None and _model_kind(ctx.plan, name) == "embeddings":
            # /v1/embeddings (issue #27): the text to embed, filtered and tokenised with the tenant's
            # key; back come vectors, never text
            out += [
                Hop("gateway", name, "tokenised",
                    "tokenised text only: the input to embed after minimisation and tokenisation with the "
                    "tenant's key (identifiers as FF1 ciphertexts or keyed surrogates)",
                    f"{transport}; the model servers' namespace denies all egress", f"GPU servers {gpu}",
                    "infra/k8s_platform/inference.py", f"Deployment {name}, NetworkPolicy vllm-from-gateway"),
                Hop(name, "gateway", "tokenised", "vectors (lists of floats) of the tokenised text; no text",
                    transport.split(";")[0], f"GPU servers {gpu}", "infra/k8s_platform/gateway.py",
                    f"Deployment {name}, gateway upstream kind embeddings"),
            ]  # fmt: skip
            continue
        out.append(
            Hop(
                "gateway",
                name,
                "tokenised",
                "identifiers as FF1 ciphertexts or keyed surrogates; cards and disallowed categories removed",
                f"{transport}; the model servers' namespace denies all egress",
                f"GPU servers {gpu}",
                "infra/k8s_platform/inference.py",
                f"Deployment {name}, NetworkPolicy vllm-from-gateway",
            )
        )
        out.append(
            Hop(
                name,
                "gateway",
                "tokenised",
                "the answer, with tokens; the gateway restores the real values (also while streaming)",
                transport.split(";")[0],
                f"GPU servers {gpu}",
                "gateway/phi/tokenise.py",
                f"Deployment {name}",
            )
        )
    openbao = [r for r in plan.helm_releases() if r.get("name") == "openbao"]
    if gw is not None and openbao:
        out.append(
            Hop(
                "gateway",
                "OpenBao",
                "none",
                "data-key requests; keys come back wrapped and in clear for memory only",
                "TLS, Kubernetes auth; OpenBao with Raft",
                f"CPU workers, {cfg.workers.location}",
                "infra/k8s_platform/openbao.py",
                "Helm release openbao, transit keys",
            )
        )
    archive = (settings.get("audit") or {}).get("archive") or {}
    if gw is not None and archive.get("url"):
        out.append(
            Hop(
                "gateway",
                "audit archive",
                "metadata",
                "categories and counts of PHI, policy version, outcome, latencies: never values",
                "hash-chained, HMAC-signed JSONL; sealed segments over HTTPS into an Object Lock bucket "
                f"({archive.get('lock_mode')}, {archive.get('retention_days')} days): {archive['url']}",
                _where(cfg, str(archive.get("endpoint", ""))),
                "infra/audit_archive.py",
                "container audit-ship of StatefulSet gateway",
            )
        )
    for job in [o for o in plan.kubernetes_objects() if o.get("kind") == "Job"
                and o["metadata"]["name"].startswith("weights-")]:  # fmt: skip
        args = [a for c in job["spec"]["template"]["spec"]["containers"] for a in c.get("args", [])]
        signed = (
            "signature checked with the stack's public key"
            if "--public-key" in args
            else ("SHA-256 manifest checked, signature NOT checked (no storage.manifest_public_keys)")
        )
        out.append(
            Hop(
                "model bucket",
                job["metadata"]["name"].removeprefix("weights-fetch-"),
                "none",
                f"model weights; {signed}",
                "HTTPS (weights Job only), then a read-only volume",
                store_where,
                "infra/weights/fetch.py",
                f"Job {job['metadata']['name']}",
            )
        )
    if any(
        o.get("kind") == "CronJob" and o["metadata"]["name"] == "openbao-snapshot"
        for o in plan.kubernetes_objects()
    ):
        copy = cfg.storage.openbao_snapshot_copy
        out.append(
            Hop(
                "OpenBao",
                "snapshot bucket",
                "none",
                "Raft snapshots (sealed by OpenBao's barrier: the data keys, never patient data)",
                "HTTPS into an Object Lock bucket" + (f", copied to {copy.endpoint}" if copy else ""),
                store_where,
                "infra/k8s_platform/openbao.py",
                "CronJob openbao-snapshot",
            )
        )
    out += _memory_store_hops(ctx)
    for name, value in _endpoints(ctx.sections):
        if name.startswith("platform.alerting.receivers."):
            out.append(
                Hop(
                    "Alertmanager",
                    residency.host_of(value) or value,
                    "metadata",
                    "alert names, severities and counts (the rules carry no free text)",
                    "HTTPS webhook",
                    _where(cfg, value),
                    "infra/k8s_platform/monitoring.py",
                    f"setting {name}",
                )
            )
    declared = _declared_destinations(cfg)
    for pods, policy, cidrs, ports in public_egress(plan):
        namespace = pods.split(" ", 1)[0]
        blocks = cidrs.split(", ")
        names = sorted({declared[c] for c in blocks if c in declared})
        undeclared = [c for c in blocks if c not in declared]
        target = ", ".join(names + [f"public {c}" for c in undeclared])
        out.append(
            Hop(
                pods,
                target,
                "none" if namespace != "sovereign-gateway" else "metadata",
                f"what egress NetworkPolicy {policy} allows: {ports}",
                f"{ports} to {cidrs}",
                "NOT a declared destination: " + ", ".join(undeclared)
                if undeclared
                else "declared destination(s) " + ", ".join(names),
                "infra/k8s_platform/network_policies.py",
                f"NetworkPolicy {namespace}/{policy}",
                (target,) if undeclared else (),
            )
        )
    for target, nat_cidrs in bastion_nat(plan, declared).items():  # read back from the bastion's user data
        named = not target.startswith("public ")
        out.append(
            Hop(
                "private hosts (bastion NAT)", target, "none",
                "packages, artefacts, images, time and name resolution for the private hosts",
                f"forwarded and masqueraded to {', '.join(nat_cidrs)} only (FORWARD policy DROP)",
                "declared destination" if named else "NOT a declared destination",
                "infra/components/cloud_init.py", "bastion user data (sovereign-nat.service); the hardening "
                "role's nftables table sovereign_nat keeps the same set", () if named else (target,),
            )
        )  # fmt: skip
    gpu_hosts, uplink = gpu_uplink(plan)
    for destination in uplink if gpu_hosts else []:  # the GPU servers reach the internet by their own uplink
        uplink_cidrs = [str(c) for c in destination.get("cidrs") or []]
        names = sorted({declared[c] for c in uplink_cidrs if c in declared})
        name = str(destination.get("name", ""))
        target = ", ".join(names) or (
            "Hetzner resolvers (DNS)" if name == "hetzner-dns" else f"public {', '.join(uplink_cidrs)}"
        )
        uplink_ports = [f"TCP/{p}" for p in destination.get("tcp_ports") or []] + [
            f"UDP/{p}" for p in destination.get("udp_ports") or []
        ]
        declared_here = bool(names) or name == "hetzner-dns"
        out.append(
            Hop(
                f"GPU servers ({len(gpu_hosts)}, public uplink)", target, "none",
                "packages, artefacts, images, time and name resolution; every other destination is rejected",
                f"{', '.join(uplink_ports)} to {', '.join(uplink_cidrs)} only (nftables output and forward)",
                "declared destination" if declared_here else "NOT a declared destination",
                "roles/hardening/templates/nftables.conf.j2",
                "inventory of sovereign converge: gpu hosts' hardening_uplink_destinations",
                () if declared_here else (target,),
            )
        )  # fmt: skip
    out.append(
        Hop(
            "operator",
            "Pulumi state",
            "none",
            "infrastructure state; its secrets encrypted by OpenBao transit (hashivault://)",
            "HTTPS",
            _where(cfg, cfg.endpoints.pulumi_backend),
            "infra/backend.py",
            "setting endpoints.pulumi_backend",
            ()
            if residency.endpoint_problem(cfg.endpoints.pulumi_backend, cfg.residency.entries()) is None
            else ("Pulumi state",),
        )
    )
    return out


# -- use cases ---------------------------------------------------------------------------------


def use_cases(served: set[str] | None) -> list[UseCase]:
    from gateway.phi.detect import CATEGORIES
    from gateway.policy import load_policies

    allowed = sorted(set(CATEGORIES) - {"OTHER"})
    out = []
    for policy in load_policies().values():
        out.append(
            UseCase(
                policy.name,
                policy.policy_version,
                policy.model,
                served is None or policy.model in served,
                tuple(policy.context_fields),
                tuple(policy.tokenise),
                tuple(c for c in allowed if c not in policy.tokenise),
                policy.max_tokens,
                policy.description,
            )
        )
    return out


# -- all together ------------------------------------------------------------------------------


def _revision() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True)  # fmt: skip
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"


def _verdicts(control: Control, ctx: claims.Context) -> None:
    control.claims = []
    for spec in control.specs:
        verdict = claims.run(spec.check, ctx, spec.tests)
        if verdict.status == claims.HOLDS and spec.check != "tests" and spec.tests and ctx.outcomes:
            proof = claims.tests_passed(spec.tests, ctx)  # the check holds; did its proof pass?
            if proof.status == claims.FAILS:
                verdict = proof
        control.claims.append(
            Claim(
                f"{control.id}.{spec.id}",
                spec.text,
                spec.check,
                verdict.status,
                verdict.reason,
                spec.tests,
                spec.settings,
            )
        )


def _note_unset_settings(control: Control, ctx: claims.Context) -> None:
    """A claim that holds while a stack setting it cites is not set holds on the default: say so in its
    reason, so that a reader does not take the pointer for a setting this stack chose."""
    for i, claim in enumerate(control.claims):
        specs = [s for s in control.specs if f"{control.id}.{s.id}" == claim.id]
        unset = unset_settings(replace(control, specs=specs), ctx)
        if unset and claim.status == claims.HOLDS:
            keys = ", ".join(u.split(": ", 1)[1].split(" is not set", 1)[0] for u in unset)
            control.claims[i] = replace(
                claim, reason=f"{claim.reason} (on the default: {keys} not set in this stack)"
            )


def apply_exceptions(
    controls: list[Control], exceptions: list[stack_config.EvidenceException], today: date
) -> tuple[list[ExceptionUse], list[Finding]]:
    """Mark each failing claim that an unexpired exception names as excepted; an expired one leaves the
    claim failing and says so; one that names no claim is a finding (a typo must not look accepted)."""
    by_id = {claim.id: (control, i) for control in controls for i, claim in enumerate(control.claims)}
    uses, findings = [], []
    for n, exc in enumerate(exceptions):
        where = by_id.get(exc.claim)
        if where is None:
            uses.append(
                ExceptionUse(exc.claim, exc.owner, exc.reason, exc.expires.isoformat(), "names no claim")
            )
            findings.append(
                Finding(
                    "config",
                    f"evidence.exceptions.{n}.claim",
                    f"evidence.exceptions.{n}.claim",
                    "names no claim of this report; the claim ids are in section 6 (`<control>.<claim>`)",
                )
            )
            continue
        control, i = where
        claim = control.claims[i]
        if claim.status != claims.FAILS:
            uses.append(
                ExceptionUse(
                    exc.claim,
                    exc.owner,
                    exc.reason,
                    exc.expires.isoformat(),
                    f"not needed: the claim {claim.status}",
                )
            )
            continue
        if exc.expires < today:
            expired = f"{claim.reason}; the exception expired on {exc.expires}"
            control.claims[i] = replace(claim, exception=exc, reason=expired)
            uses.append(ExceptionUse(exc.claim, exc.owner, exc.reason, exc.expires.isoformat(), "expired"))
            continue
        control.claims[i] = replace(claim, status=claims.EXCEPTED, exception=exc)
        uses.append(ExceptionUse(exc.claim, exc.owner, exc.reason, exc.expires.isoformat(), "applied"))
    return uses, findings


def unset_settings(control: Control, ctx: claims.Context) -> list[str]:
    """The ``stack:`` settings *control* cites that the stack being reported does not set (a pointer
    to a default nobody chose proves nothing about this stack)."""
    missing = []
    for pointer in control.config:
        scope, _, key = pointer.partition(":")
        if scope != "stack":
            continue
        current: Any = ctx.sections
        for part in key.split("."):
            current = current.get(part) if isinstance(current, dict) else None
        if current in (None, "", [], {}):
            missing.append(f"{control.id}: {pointer} is not set in stack {ctx.stack}")
    return missing


def collect(
    stacks_dir: Path,
    stack: str,
    *,
    outcomes: dict[str, str] | None = None,
    outcomes_note: str | None = None,
    today: date | None = None,
) -> Evidence:
    """The evidence of *stack*. *outcomes* maps ``path::test`` to the outcome of the recorded make-test
    run of this code (infra/evidence/results.py); without it, claims proven by tests are unverified."""
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
    ctx = claims.Context(stack, sections, cfg, plan, dict(outcomes or {}))
    if outcomes_note:
        ctx.outcomes_note = outcomes_note
    for control in controls:
        _verdicts(control, ctx)
        _note_unset_settings(control, ctx)
    exceptions, exception_findings = apply_exceptions(
        controls, cfg.evidence.exceptions if cfg is not None else [], today or datetime.now(UTC).date()
    )
    findings += exception_findings
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
    justifications = {}
    backend = sections.get("backend") or {}
    if isinstance(backend, dict) and backend.get("allow_saas"):
        justifications["backend.allow_saas"] = str(backend.get("justification") or "(none given)")
    served = {a for m in cfg.platform.models for a in (m.name, *m.aliases)} if cfg is not None else None
    return Evidence(
        stack=stack,
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        revision=_revision(),
        summary=summary,
        config_refused=cfg is None,
        findings=findings,
        hops=hops(ctx),
        residency=residency_from_plan(plan, sections)
        if plan is not None
        else residency_from_sections(sections),
        use_cases=use_cases(served),
        rules=list(RULES),
        checked_resources=len(plan.custom()) if plan is not None else 0,
        kubernetes_objects=len(plan.kubernetes_objects()) if plan is not None else 0,
        controls=controls,
        runbooks=sorted(p.name for p in RUNBOOKS.glob("*.md")) if RUNBOOKS.is_dir() else [],
        exceptions=exceptions,
        blockers=list(plan.blockers) if plan is not None else [],
        plan_egress=public_egress(plan) if plan is not None else [],
        justifications=justifications,
        outcomes_note=ctx.outcomes_note if not ctx.outcomes else "",
    )
