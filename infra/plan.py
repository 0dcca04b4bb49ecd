"""``sovereign plan --stack NAME``: the real program under Pulumi's mocks, for change control.

No Pulumi CLI, no credentials, no network: ``pulumi.runtime.set_mocks`` replaces the engine,
``infra/program.py`` declares the stack exactly as ``pulumi up`` would, and every registered
resource is recorded with its inputs. The result:

- a table of every resource (type, name, location, residency label, key properties) on stdout;
- ``plan.json``: the whole plan (config, resources with inputs, declared hosts, outputs with
  secrets redacted, policy results);
- ``kubernetes.yaml``: every Kubernetes object the program declares, as manifests.

Values only known after a real deploy (server ids, the bastion's public address, the
kubeconfig) are placeholders from the mocks and marked as such; ids are sequence numbers.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs

from gateway.errors import BadInput
from infra import catalogue, chart_sources, images, program
from infra import config as stack_config
from infra.components.gpu_pool import declared_hosts
from infra.config import StackConfig
from infra.policy import completeness, rules

# Completeness findings (infra/policy/completeness.py) are reported but do not fail `sovereign
# plan` (nor, in the policy pack, `pulumi preview`) until the example stacks are complete
COMPLETENESS_FAILS_PLAN = True
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
K8S_SECRET = "kubernetes:core/v1:Secret"  # noqa: S105 (a type token, not a password)
UNKNOWN_IPV4 = "198.51.100.{n}"  # TEST-NET-2: obviously not a real address
KUBECONFIG_PLACEHOLDER = "(produced by `sovereign converge` during pulumi up)"
# outputs only a real deploy produces (certificates and keys): placeholders, marked as such
_ISSUED = "(issued at deploy time)"
PKI_ISSUER_READ = "vault:pkiSecret/getBackendIssuer:getBackendIssuer"
DEPLOY_TIME_OUTPUTS: dict[str, dict[str, str]] = {
    "vault:pkiSecret/secretBackendCert:SecretBackendCert": {
        "serialNumber": _ISSUED, "certificate": _ISSUED, "privateKey": _ISSUED, "issuingCa": _ISSUED,
    },
    "vault:pkiSecret/secretBackendRootCert:SecretBackendRootCert": {"certificate": _ISSUED},
    "tls:index/privateKey:PrivateKey": {"privateKeyPem": _ISSUED},
    "tls:index/selfSignedCert:SelfSignedCert": {"certPem": _ISSUED},
    "tls:index/locallySignedCert:LocallySignedCert": {"certPem": _ISSUED},
    "tls:index/certRequest:CertRequest": {"certRequestPem": _ISSUED},
    "random:index/randomPassword:RandomPassword": {"result": "(generated at deploy time)"},
}  # fmt: skip


@dataclass
class PlannedResource:
    urn: str
    type: str
    name: str
    id: str
    custom: bool
    parent_type: str | None
    inputs: dict[str, Any]
    # the parent's URN and the URNs this resource waits for: its depends_on and the resources
    # its inputs come from, components already expanded to their custom children by the SDK
    # (what the engine receives in RegisterResource)
    parent: str | None = None
    dependencies: list[str] = field(default_factory=list)


@dataclass
class Plan:
    stack: str
    config: dict[str, Any]
    secrets_provider: str | None
    resources: list[PlannedResource]
    declared_hosts: list[dict[str, Any]]
    outputs: dict[str, Any]
    secret_outputs: list[str]
    violations: list[rules.Violation] = field(default_factory=list)
    # what `pulumi up` would refuse before creating anything (program.deploy_blockers)
    blockers: list[str] = field(default_factory=list)
    # local commands `pulumi up` would run on this machine (invokes), in order
    invoked: list[dict[str, Any]] = field(default_factory=list)
    # what the Kubernetes objects need and the program does not provide (issue #19)
    findings: list[completeness.Finding] = field(default_factory=list)
    # image findings whose image is a deploy blocker (no mirror, no digest): reported once, there
    findings_as_blockers: list[completeness.Finding] = field(default_factory=list)

    def custom(self) -> list[PlannedResource]:
        return [r for r in self.resources if r.custom]

    def of_type(self, type_: str) -> list[PlannedResource]:
        return [r for r in self.resources if r.type == type_]

    def kubernetes_objects(self) -> list[dict[str, Any]]:
        return [
            manifest(r) for r in self.custom() if r.type.startswith("kubernetes:") and r.type != HELM_RELEASE
        ]

    def helm_releases(self) -> list[dict[str, Any]]:
        """Charts are rendered by Helm at deploy time (the plan has no chart archives): each
        release with its pinned chart (the EU mirror's OCI reference by digest), version,
        repository (none for an OCI chart), namespace and values."""
        return [
            {
                "name": r.inputs.get("name"),
                "chart": r.inputs.get("chart"),
                "version": r.inputs.get("version"),
                "repository": (r.inputs.get("repositoryOpts") or {}).get("repo"),
                "namespace": r.inputs.get("namespace"),
                "values": r.inputs.get("values"),
            }
            for r in self.of_type(HELM_RELEASE)
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "secrets_provider": self.secrets_provider,
            "config": self.config,
            "resources": [asdict(r) for r in self.resources],
            "declared_hosts": self.declared_hosts,
            "deploy_blockers": self.blockers,
            "helm_releases": self.helm_releases(),
            "outputs": {k: ("[secret]" if k in self.secret_outputs else v) for k, v in self.outputs.items()},
            "policy": {
                "rules": list(rules.RULES),
                "checked_resources": len(self.custom()),
                "violations": [asdict(v) for v in self.violations],
            },
            "completeness": {
                "fails_plan": COMPLETENESS_FAILS_PLAN,
                "operator_inputs": [asdict(i) for i in completeness.OPERATOR_INPUTS],
                "findings": [asdict(f) for f in self.findings],
                # the check is strict; these image findings are deploy blockers above
                "deploy_blockers": [asdict(f) for f in self.findings_as_blockers],
            },
        }


SECRET_SIG = "4dabf18193072939515e22adb298388d"  # noqa: S105 (Pulumi's public wire marker of a secret value)


def _wire(value: Any) -> Any:
    """Inputs as the engine holds them, with integral numbers shown as integers (the wire
    format has doubles only: 443 arrives as 443.0) and secret values redacted (a map keeps
    its keys, so a review still sees which entries a Secret has)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict) and SECRET_SIG in value:
        inner = value.get("value")
        return dict.fromkeys(inner, "[secret]") if isinstance(inner, dict) else "[secret]"
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_wire(v) for v in value]
    return value


class HetznerRefusal(BadInput, RuntimeError):
    """What the Hetzner Cloud API would answer to a registration: the plan stops, as pulumi up would."""


LOCAL_RUN = "command:local:run"  # pulumi-command's invoke (infra/components/api_access.py)


class RecordingMocks(pulumi.runtime.Mocks):
    """Engine stand-in: records each registration, returns its inputs plus computed outputs.

    It refuses what the Hetzner Cloud API refuses, from infra/catalogue/hetzner-cloud.yaml: a
    server type that is no longer (or never was) on sale, and an eleventh server in one spread
    placement group (docs.hetzner.com/cloud/placement-groups/overview)."""

    def __init__(self) -> None:
        self.registered: dict[str, tuple[str, str, bool, dict[str, Any]]] = {}
        self.placed: dict[Any, list[str]] = {}
        # the local commands a run invokes, each with the resources registered before it
        self.invoked: list[dict[str, Any]] = []

    def _refuse_like_hetzner(self, args: MockResourceArgs) -> None:
        known = catalogue.load()
        server_type = str(args.inputs.get("serverType", ""))
        if server_type not in known.server_types:
            problem = known.server_type_problem(server_type) or "not on sale"
            raise HetznerRefusal(f"{args.name}: Hetzner refuses server type {server_type!r}: {problem}")
        group = args.inputs.get("placementGroupId")
        if group is not None:
            members = self.placed.setdefault(group, [])
            members.append(args.name)
            if len(members) > known.spread_max_servers:
                raise HetznerRefusal(
                    f"{args.name}: Hetzner refuses an eleventh server in one spread placement group "
                    f"(at most {known.spread_max_servers}; already {', '.join(members[:-1])})"
                )

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        if args.typ == rules.SERVER:
            self._refuse_like_hetzner(args)
        # deterministic ids (a plan diffed against the last one shows real changes only);
        # numeric, because hcloud ids are integers and the program converts them
        digest = hashlib.sha256(f"{args.typ}\0{args.name}".encode()).digest()
        resource_id = str(int.from_bytes(digest[:4], "big") % 90_000_000 + 10_000_000)
        state = dict(args.inputs)
        if args.typ == rules.SERVER:
            nets = args.inputs.get("publicNets") or [{}]
            state["ipv4Address"] = (
                UNKNOWN_IPV4.format(n=digest[4] % 254 + 1) if nets[0].get("ipv4Enabled") else ""
            )
        if args.typ == "command:local:Command":
            state["stdout"] = KUBECONFIG_PLACEHOLDER
        for key, value in DEPLOY_TIME_OUTPUTS.get(args.typ, {}).items():
            state[key] = value
        inputs = _wire(dict(args.inputs))
        if args.typ == K8S_SECRET:  # the plan is a review artefact: secret material never goes in it
            for key in ("data", "stringData"):
                if isinstance(inputs.get(key), dict):
                    inputs[key] = dict.fromkeys(inputs[key], "[secret]")
        self.registered[resource_id] = (args.typ, args.name, bool(args.custom), inputs)
        return resource_id, state

    def call(self, args: MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        if args.token == LOCAL_RUN:  # pulumi up runs it on this machine; the plan does not
            before = [f"{typ}::{name}" for typ, name, _, _ in self.registered.values()]
            self.invoked.append(
                {"token": args.token, "command": str(args.args.get("command", "")), "after": before}
            )
            return {"stdout": "", "stderr": ""}, []
        if args.token == PKI_ISSUER_READ:  # restored_pki: the restored CA, read from OpenBao at deploy
            # GET <backend>/issuer/<ref> (pulumi-vault pkisecret.get_backend_issuer): both are required
            if not args.args.get("backend") or not args.args.get("issuerRef"):
                raise ValueError(f"{PKI_ISSUER_READ}: backend and issuerRef are required")
            return {
                "backend": args.args["backend"],
                "issuerRef": args.args["issuerRef"],
                "certificate": _ISSUED,
            }, []
        return {}, []


class RecordingMonitor(MockMonitor):
    """Pulumi's mock monitor, keeping what ``MockResourceArgs`` leaves out: each registration's
    parent and dependencies (``RegisterResourceRequest.dependencies``), so a plan can prove
    that one resource is created after another."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.parents: dict[str, str] = {}
        self.dependencies: dict[str, list[str]] = {}

    def RegisterResource(self, request: Any) -> Any:  # the gRPC method's name
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        self.parents[response.urn] = request.parent
        self.dependencies[response.urn] = sorted(set(request.dependencies))
        return response


def _parent_type(urn: str) -> str | None:
    qualified = urn.split("::")[2]
    chain = qualified.split("$")
    return chain[-2] if len(chain) > 1 else None


def run(
    cfg: StackConfig,
    sections: Mapping[str, Any],
    *,
    secrets_provider: str | None = None,
    role_digest: str | None = None,
) -> Plan:
    """Run the program with the stack config *sections* (as in the stack file) under mocks.

    *cfg* is the same config, already validated, so that errors are reported before Pulumi
    starts; the program reads its own copy from the engine's config, as under ``pulumi up``.
    """
    # a fresh context: Pulumi keeps its runtime settings in context variables, so each plan
    # (several in one test process) starts from a clean engine and a new root stack
    return contextvars.Context().run(_run, cfg, sections, secrets_provider, role_digest)


def _run(
    cfg: StackConfig, sections: Mapping[str, Any], secrets_provider: str | None, role_digest: str | None
) -> Plan:
    # Pulumi's runner drives the loop set for this thread (set_mocks already creates futures
    # on it): one of its own, whatever the caller did with asyncio (asyncio.run leaves none)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return _declare(cfg, sections, secrets_provider, role_digest)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def _declare(
    cfg: StackConfig, sections: Mapping[str, Any], secrets_provider: str | None, role_digest: str | None
) -> Plan:
    mocks = RecordingMocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(
        mocks, project=stack_config.PROJECT, stack=cfg.stack, preview=False, monitor=monitor
    )
    # what the CLI does: every config value reaches the program as a string (objects as JSON)
    pulumi.runtime.set_all_config({f"{stack_config.PROJECT}:{k}": json.dumps(v) for k, v in sections.items()})
    outputs: dict[str, Any] = {}
    secret: list[str] = []

    async def declare() -> None:
        # the configured backend stands in for the login, which a plan does not have
        declared = program.declare(cfg.endpoints.pulumi_backend, role_digest=role_digest, deploying=False)
        for key, value in declared.items():
            out = pulumi.Output.from_input(value)
            outputs[key] = await out.future()
            if await out.is_secret():
                secret.append(key)

    pulumi.runtime.test(declare)()  # type: ignore[no-untyped-call]  # Pulumi's runner for mocks

    resources = _recorded(mocks, monitor)
    hosts = [
        {"type": "hetzner-robot:dedicated (declared, not managed by Pulumi)", **h}
        for h in declared_hosts(cfg)
    ]
    plan = Plan(
        stack=cfg.stack,
        config=cfg.model_dump(mode="json"),
        secrets_provider=secrets_provider,
        resources=resources,
        declared_hosts=hosts,
        outputs=outputs,
        secret_outputs=secret,
    )
    # the image and chart rules hold the resources to what the stack declares (its mirror, its egress)
    rules.configure(rules.declared_from(cfg))
    try:
        plan.violations = [v for r in plan.custom() for v in rules.check(r.type, r.name, r.inputs)]
    finally:
        rules.configure(None)
    plan.invoked = mocks.invoked
    plan.blockers = program.deploy_blockers(cfg)
    strict = completeness.check(completeness_view(resources), registry_mirror=cfg.endpoints.registry_mirror)
    # an image without a digest (or without a mirror) is a deploy blocker already: `pulumi up` stops
    # before it reaches a cluster, so the plan reports it once, as the blocker that names the command
    blocked = images.blocked(cfg)
    blocked_charts = chart_sources.blocked(cfg)
    plan.findings_as_blockers = [
        f
        for f in strict
        if (f.kind == "image" and f.image and images.normalize(f.image) in blocked)
        or (f.kind == "chart-source" and f.chart in blocked_charts)
    ]
    plan.findings = [f for f in strict if f not in plan.findings_as_blockers]
    return plan


def completeness_view(resources: list[PlannedResource]) -> list[completeness.Resource]:
    """The plan's resources as the completeness check (and the policy pack) sees them."""
    return [
        completeness.Resource(r.urn, r.type, r.name, r.custom, r.inputs, r.parent, tuple(r.dependencies))
        for r in resources
    ]


def _recorded(mocks: RecordingMocks, monitor: RecordingMonitor) -> list[PlannedResource]:
    resources = []
    for urn, registration in monitor.get_registered_resources().items():
        type_, name, custom, inputs = mocks.registered[str(registration.id)]
        resources.append(
            PlannedResource(
                urn, type_, name, str(registration.id), custom, _parent_type(urn), inputs,
                parent=monitor.parents.get(urn) or None, dependencies=monitor.dependencies.get(urn, []),
            )
        )  # fmt: skip
    resources.sort(key=lambda r: r.urn)
    return resources


def record(declare: Callable[[], object], *, stack: str = "program") -> list[PlannedResource]:
    """Any program (a function that declares resources) under the same mocks as a plan: every
    resource it registers, with inputs, parent and dependencies. For checks of a few resources
    without a whole stack (tests/infra/test_completeness.py)."""

    def run_it() -> list[PlannedResource]:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            mocks = RecordingMocks()
            monitor = RecordingMonitor(mocks)
            pulumi.runtime.set_mocks(
                mocks, project=stack_config.PROJECT, stack=stack, preview=False, monitor=monitor
            )

            async def body() -> None:
                declare()

            pulumi.runtime.test(body)()  # type: ignore[no-untyped-call]  # Pulumi's runner for mocks
            return _recorded(mocks, monitor)
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    return contextvars.Context().run(run_it)


def manifest(resource: PlannedResource) -> dict[str, Any]:
    """A Kubernetes object from its pulumi-kubernetes type token and inputs."""
    _, group_version, kind = resource.type.split(":")
    group, _, version = group_version.rpartition("/")
    api_version = version if group in ("core", "") else f"{group}/{version}"
    body = {k: v for k, v in resource.inputs.items() if k not in ("apiVersion", "kind")}
    return {"apiVersion": api_version, "kind": kind, **body}


# Hetzner objects that belong to the project, not to a location
_GLOBAL = ("Network", "SshKey", "PlacementGroup", "Firewall")


def location(r: PlannedResource) -> str:
    """Where a resource lives: its location, data centre or network zone; "(project)" for
    Hetzner objects that belong to the project."""
    for key in ("location", "datacenter", "networkZone"):
        if r.inputs.get(key):
            return str(r.inputs[key])
    if r.type.startswith("hcloud:") and r.type.split(":")[-1] in _GLOBAL:
        return "(project)"
    return "-"


def summary(r: PlannedResource) -> str:
    p = r.inputs
    short = r.type.split(":")[-1]
    if short == "Server":
        nets = p.get("publicNets") or [{}]
        public = "public IPv4" if nets[0].get("ipv4Enabled") else "no public IP"
        ip = (p.get("networks") or [{}])[0].get("ip", "?")
        return f"{p.get('serverType')} {p.get('image')}, {public}, private {ip}"
    if short == "Network":
        return f"{p.get('ipRange')}, routes to vSwitch: {p.get('exposeRoutesToVswitch')}"
    if short == "NetworkSubnet":
        extra = f" vswitch {p.get('vswitchId')}" if p.get("type") == "vswitch" else ""
        return f"{p.get('type')} {p.get('ipRange')}{extra}"
    if short == "NetworkRoute":
        return f"{p.get('destination')} via {p.get('gateway')}"
    if short == "Firewall":
        inbound = [r for r in p.get("rules") or [] if r.get("direction") == "in"]
        allowed = "; ".join(
            f"{r.get('protocol')}/{r.get('port', '*')} from {','.join(r['sourceIps'])}" for r in inbound
        )
        return f"inbound: {allowed or 'none (deny all)'}"
    if short == "LoadBalancerNetwork":
        return f"private {p.get('ip')}, public interface: {p.get('enablePublicInterface')}"
    if short == "LoadBalancerService":
        return f"{p.get('protocol')} {p.get('listenPort')} -> {p.get('destinationPort')}"
    if short == "LoadBalancerTarget":
        return f"{p.get('labelSelector')} (private IPs: {p.get('usePrivateIp')})"
    if r.type == HELM_RELEASE:
        repo = (p.get("repositoryOpts") or {}).get("repo")
        where = f" from {repo}" if repo else ""
        return f"chart {p.get('chart')} {p.get('version')}{where} into {p.get('namespace')}"
    if r.type.startswith("kubernetes:"):
        meta = p.get("metadata") or {}
        return "/".join(x for x in (meta.get("namespace"), meta.get("name")) if x)
    if short == "Command":
        return f"`{p.get('create')}`, {len(p.get('triggers') or [])} triggers"
    if short in ("PlacementGroup", "LoadBalancer"):
        return str(p.get("type") or p.get("loadBalancerType"))
    return ""


def table(plan: Plan) -> str:
    rows = [("TYPE", "NAME", "LOCATION", "RESIDENCY", "KEY PROPERTIES")]
    for r in plan.custom():
        labels: Mapping[str, Any] = r.inputs.get("labels") or {}
        k8s_labels: Mapping[str, Any] = (r.inputs.get("metadata") or {}).get("labels") or {}
        residency_label = labels.get("residency") or k8s_labels.get("sovereign-llm.io/residency")
        if residency_label is None:
            residency_label = "MISSING" if r.type in rules.LABELLED else "-"
        rows.append(
            (
                r.type.split(":")[-1] if r.type.startswith("hcloud:") else r.type,
                r.name,
                location(r),
                residency_label,
                summary(r),
            )
        )
    for h in plan.declared_hosts:
        rows.append(
            (
                "Robot dedicated (declared)",
                h["name"],
                h["datacenter"],
                "eu",
                f"{h['product']}, server {h['server_number']}, "
                f"vSwitch {h['vswitch_id']} VLAN {h['vlan_id']}, private {h['private_ip']}",
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(4)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4]
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def write(plan: Plan, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    plan_path = out_dir / "plan.json"
    plan_path.write_text(json.dumps(plan.to_json(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    k8s_path = out_dir / "kubernetes.yaml"
    objects = plan.kubernetes_objects()
    header = f"# Kubernetes objects of stack {plan.stack} ({len(objects)}), rendered by `sovereign plan`\n"
    for release in plan.helm_releases():
        header += (
            f"# + Helm release {release['name']}: chart {release['chart']} {release['version']} "
            f"into {release['namespace']} (rendered by Helm at deploy time; values in plan.json)\n"
        )
    k8s_path.write_text(header + yaml.safe_dump_all(objects, sort_keys=False), encoding="utf-8")
    return plan_path, k8s_path


def plan_stack(stacks_dir: Path, stack: str, *, role_digest: str | None = None) -> Plan:
    """Load and validate ``stacks/Pulumi.<stack>.yaml``, then run the program under mocks."""
    path = stack_config.stack_file(stacks_dir, stack)
    sections, document = stack_config.read_stack_file(path)
    cfg = stack_config.parse(stack, sections, str(path))
    return run(cfg, sections, secrets_provider=document.get("secretsprovider"), role_digest=role_digest)
