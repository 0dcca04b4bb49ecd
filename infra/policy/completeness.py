"""Completeness: what the Kubernetes objects of a program need, the program provides (issue #19).

Checked over every resource of a program, with its parent and dependencies:

- **crd**: every kind that is neither built into Kubernetes nor installed by RKE2 has its
  CustomResourceDefinition installed earlier in the same program: by a CustomResourceDefinition
  resource or a Helm release (charts.py) that the resource depends on (``depends_on``, inputs,
  or a custom-resource parent, followed transitively). The same for what a Helm release renders
  or its operator creates (KEDA's ServiceMonitor, the GPU operator's DCGM ServiceMonitor).
- **storage-class**: every PersistentVolumeClaim (and StatefulSet volumeClaimTemplate, and a
  chart's claims) names a StorageClass the program provides; one without a class needs a
  default StorageClass, and RKE2 has none.
- **reference**: every Secret, ConfigMap and ServiceAccount a pod references (volumes,
  projected sources, env, envFrom, imagePullSecrets, serviceAccountName; and a chart's pods
  through its values) is declared by the program, created by a chart, built in, or listed in
  ``OPERATOR_INPUTS`` with the command that creates it. Every Ingress's TLS Secrets and backend
  Services are declared in its namespace, and its IngressClass is declared or one of RKE2's.
- **image**: every container image (and every image a chart runs) comes from the stack's EU
  registry mirror by digest: ``<mirror host>/<path>[:<tag>]@sha256:<64 hex>``.
- **namespace-policy**: every namespace the program declares has a default-deny NetworkPolicy
  (empty pod selector, Ingress and Egress, no rule) and a Pod Security ``enforce`` label; every
  namespace an object lands in is declared (or is one of RKE2's).
- **chart**: every Helm release's chart and version is declared in charts.py.
- **chart-source**: every Helm release's chart comes from the stack's EU registry mirror as an OCI
  artefact by digest (``oci://<mirror host>/…/<chart>@sha256:<64 hex>``, infra/chart_sources.py),
  never from a vendor's repository at deploy time.
- **dashboard**: every ConfigMap labelled as a Grafana dashboard (the dashboards sidecar's label of a
  Grafana a Helm release installs: kube-prometheus-stack's ``grafana`` subchart or the grafana chart)
  is loaded by such a Grafana (its label value, in a namespace its sidecar searches), holds dashboard
  JSON, and names in its panels only the data source uid that Grafana provisions; a Grafana whose
  sidecar loads dashboards, without the chart's own, has at least one to load.

The same function runs in ``sovereign plan`` (infra/plan.py, under Pulumi's mocks) and in the
policy pack (a stack validation policy, infra/policy/__main__.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from infra.policy import charts

HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
CRD = "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition"
POD_CARRIERS = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
CLUSTER_SCOPED = frozenset(
    {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "StorageClass",
     "PersistentVolume", "RuntimeClass", "PriorityClass", "ValidatingWebhookConfiguration",
     "MutatingWebhookConfiguration", "APIService", "Node", "ClusterPolicy", "NVIDIADriver"}
)  # fmt: skip
# registries outside the boundary: never acceptable, whatever the mirror
PUBLIC_REGISTRIES = frozenset(
    {"docker.io", "registry-1.docker.io", "index.docker.io", "quay.io", "ghcr.io", "gcr.io",
     "registry.k8s.io", "k8s.gcr.io", "nvcr.io", "public.ecr.aws", "mcr.microsoft.com"}
)  # fmt: skip
_DIGEST_REF = re.compile(
    r"^(?P<host>[A-Za-z0-9.-]+(?::\d+)?)/(?P<path>[a-z0-9]+(?:[._/-][a-z0-9]+)*)"
    r"(?::[\w][\w.-]{0,127})?@sha256:[0-9a-f]{64}$"
)
DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"


@dataclass(frozen=True)
class OperatorInput:
    """An object the program references but does not create: an operator creates it, with
    exactly this command, before ``pulumi up`` (listed in the deploy steps)."""

    kind: str  # Secret | ConfigMap | ServiceAccount
    name: str
    namespace: str
    created_by: str  # the exact `sovereign …` / `kubectl create secret …` command
    docs: str  # where the deploy steps describe it


# Nothing is an operator input today: every referenced object must be declared by the program.
OPERATOR_INPUTS: tuple[OperatorInput, ...] = ()


@dataclass(frozen=True)
class Finding:
    kind: str  # crd | storage-class | reference | image | namespace-policy | chart | chart-source | dashboard
    resource: str  # the object (kind namespace/name) and its Pulumi resource name
    missing: str
    fix: str
    image: str | None = None  # an image finding's reference (infra/plan.py: a deploy blocker's)
    chart: str | None = None  # a chart-source finding's chart reference (the same)

    def __str__(self) -> str:
        return f"[{self.kind}] {self.resource}: missing {self.missing} ({self.fix})"


@dataclass(frozen=True)
class Resource:
    """A registered resource as both the plan and the policy pack see it."""

    urn: str
    type: str
    name: str
    custom: bool
    inputs: Mapping[str, Any]
    parent: str | None = None
    dependencies: Sequence[str] = field(default_factory=tuple)

    @property
    def group_kind(self) -> tuple[str, str]:
        """(API group, kind) of a ``kubernetes:<group>/<version>:<Kind>`` type token."""
        _, group_version, kind = self.type.split(":", 2)
        group = group_version.rpartition("/")[0]
        return ("" if group == "core" else group), kind

    @property
    def meta(self) -> Mapping[str, Any]:
        meta = self.inputs.get("metadata")
        return meta if isinstance(meta, Mapping) else {}

    @property
    def namespace(self) -> str | None:
        if self.type == HELM_RELEASE:
            return str(self.inputs.get("namespace") or "default")
        if self.group_kind[1] in CLUSTER_SCOPED:
            return None
        return str(self.meta.get("namespace") or "default")

    def label(self) -> str:
        if self.type == HELM_RELEASE:
            i = self.inputs
            chart = charts.chart_name(str(i.get("chart")))
            return f"Helm release {i.get('name')} (chart {chart} {i.get('version')}) [{self.name}]"
        where = "/".join(x for x in (self.namespace, str(self.meta.get("name", "?"))) if x)
        return f"{self.group_kind[1]} {where} [{self.name}]"


def _kubernetes(resources: Iterable[Resource]) -> list[Resource]:
    return [r for r in resources if r.custom and r.type.startswith("kubernetes:")]


def _at(node: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _list(node: Any) -> list[Any]:
    return [x for x in node if isinstance(x, Mapping)] if isinstance(node, list) else []


class _Program:
    def __init__(self, resources: Sequence[Resource]) -> None:
        self.by_urn = {r.urn: r for r in resources}
        self.children: dict[str, list[str]] = {}
        for r in resources:
            if r.parent:
                self.children.setdefault(r.parent, []).append(r.urn)
        self.k8s = _kubernetes(resources)
        self._closures: dict[str, frozenset[str]] = {}

    def _expand(self, urn: str) -> Iterator[str]:
        """A component stands for its children (the SDK already expands depends_on on local
        components; this covers any that reach us unexpanded)."""
        r = self.by_urn.get(urn)
        if r is not None and not r.custom:
            for child in self.children.get(urn, []):
                yield from self._expand(child)
        else:
            yield urn

    def before(self, resource: Resource) -> frozenset[str]:
        """Every resource that is created before *resource*: its dependencies and custom-resource
        parents, transitively (a child registers once its parent's creation returned)."""
        cached = self._closures.get(resource.urn)
        if cached is not None:
            return cached
        seen: set[str] = set()
        todo = [resource.urn]
        while todo:
            current = self.by_urn.get(todo.pop())
            if current is None:
                continue
            direct = [u for d in current.dependencies for u in self._expand(d)]
            parent = self.by_urn.get(current.parent or "")
            if parent is not None and parent.custom:
                direct.append(parent.urn)
            for urn in direct:
                if urn not in seen:
                    seen.add(urn)
                    todo.append(urn)
        self._closures[resource.urn] = frozenset(seen)
        return self._closures[resource.urn]


def _chart_facts(release: Resource) -> charts.ChartFacts | None:
    i = release.inputs
    rule = charts.CHARTS.get((charts.chart_name(str(i.get("chart"))), str(i.get("version"))))
    values = i.get("values") if isinstance(i.get("values"), Mapping) else None
    return rule(values, str(i.get("name") or i.get("chart"))) if rule else None


def pod_spec_of(obj: Mapping[str, Any], kind: str | None = None) -> Mapping[str, Any] | None:
    """The pod spec of a Kubernetes object that carries one (POD_CARRIERS), else None; *kind* when the
    object does not say it (a resource's inputs, whose kind is in its type token)."""
    path = POD_CARRIERS.get(kind or str(obj.get("kind")))
    spec = _at(obj, path) if path else None
    return spec if isinstance(spec, Mapping) else None


def _pod_spec(r: Resource) -> Mapping[str, Any] | None:
    group, kind = r.group_kind
    return pod_spec_of(r.inputs, kind) if group in ("", "apps", "batch") else None


def _containers(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [
        c for key in ("initContainers", "containers", "ephemeralContainers") for c in _list(spec.get(key))
    ]


def pod_references(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(kind, name) of every Secret, ConfigMap and ServiceAccount a pod spec needs (optional
    references left out)."""
    refs: list[tuple[str, str]] = []

    def add(kind: str, ref: Any, key: str = "name") -> None:
        if isinstance(ref, Mapping) and not ref.get("optional") and isinstance(ref.get(key), str):
            refs.append((kind, ref[key]))

    for volume in _list(spec.get("volumes")):
        add("Secret", volume.get("secret"), "secretName")
        add("ConfigMap", volume.get("configMap"))
        for source in _list(_at(volume, ("projected", "sources"))):
            add("Secret", source.get("secret"))
            add("ConfigMap", source.get("configMap"))
    for container in _containers(spec):
        for env in _list(container.get("env")):
            add("Secret", _at(env, ("valueFrom", "secretKeyRef")))
            add("ConfigMap", _at(env, ("valueFrom", "configMapKeyRef")))
        for env_from in _list(container.get("envFrom")):
            add("Secret", env_from.get("secretRef"))
            add("ConfigMap", env_from.get("configMapRef"))
    for pull in _list(spec.get("imagePullSecrets")):
        add("Secret", pull)
    account = spec.get("serviceAccountName") or spec.get("serviceAccount")
    if isinstance(account, str) and account:
        refs.append(("ServiceAccount", account))
    return refs


def registry_host(mirror: str | None) -> str | None:
    """The host of ``endpoints.registry_mirror`` (a URL or a bare host)."""
    if not mirror:
        return None
    rest = mirror.split("://", 1)[-1]
    return rest.split("/", 1)[0].lower()


def image_problem(image: str, mirror: str | None, *, require_mirror: bool = True) -> str | None:
    """What is wrong with *image*, or None. With require_mirror False (the policy pack without
    a configured mirror) the host only has to be outside the known public registries."""
    match = _DIGEST_REF.match(image)
    if match is None:
        where = f"{mirror}/<path>" if mirror else "<EU mirror>/<path>"
        return f"a digest: {image!r} is not {where}@sha256:<64 hex>"
    host = match["host"].lower()
    if "." not in host and ":" not in host and host != "localhost":
        host = "docker.io"  # Docker's rule: a first component without a dot is a path on Docker Hub
    if mirror is None:
        if require_mirror:
            return "an EU registry mirror: endpoints.registry_mirror is not set"
        if host in PUBLIC_REGISTRIES:
            return f"the EU mirror: {image!r} is pulled from the public registry {host}"
        return None
    if host != mirror:
        return f"the EU mirror: {image!r} is pulled from {host}, not {mirror}"
    return None


def check(
    resources: Sequence[Resource],
    *,
    registry_mirror: str | None,
    require_mirror: bool = True,
    operator_inputs: Sequence[OperatorInput] = OPERATOR_INPUTS,
) -> list[Finding]:
    """Every completeness finding of a program's resources (sorted, without duplicates)."""
    program = _Program(resources)
    mirror = registry_host(registry_mirror)
    findings: list[Finding] = []
    facts = {r.urn: _chart_facts(r) for r in program.k8s if r.type == HELM_RELEASE}
    findings += _charts_known(program, facts)
    findings += _chart_sources(program, mirror, require_mirror)
    findings += _crds(program, facts)
    findings += _storage(program, facts)
    findings += _references(program, facts, operator_inputs)
    findings += _ingresses(program, operator_inputs)
    findings += _images(program, facts, mirror, require_mirror)
    findings += _namespaces(program)
    findings += _dashboards(program)
    unique = {(f.kind, f.resource, f.missing): f for f in findings}
    return sorted(unique.values(), key=lambda f: (f.kind, f.resource, f.missing))


def _charts_known(program: _Program, facts: Mapping[str, charts.ChartFacts | None]) -> list[Finding]:
    return [
        Finding(
            "chart",
            program.by_urn[urn].label(),
            f"a declaration of what chart {charts.chart_name(str(program.by_urn[urn].inputs.get('chart')))} "
            f"{program.by_urn[urn].inputs.get('version')} installs and renders",
            "read its templates at that version and add it to infra/policy/charts.py CHARTS",
        )
        for urn, got in facts.items()
        if got is None
    ]


_OCI_BY_DIGEST = re.compile(r"^oci://(?P<host>[^/@]+)/[^@]+@sha256:[0-9a-f]{64}$")


def chart_source_problem(
    chart: str, repo: str | None, mirror: str | None, *, require_mirror: bool = True
) -> str | None:
    """What is wrong with where a release's chart comes from, or None (see the module's docstring)."""
    match = _OCI_BY_DIGEST.match(chart)
    if repo or not chart.startswith("oci://"):
        where = repo or "the local Helm repository configuration"
        return f"a chart from inside the boundary: {chart!r} is fetched from {where} at deploy time"
    if match is None:
        return f"a digest: {chart!r} is not oci://<mirror>/charts/<chart>@sha256:<64 hex>"
    host = match["host"].lower()
    if mirror is None:
        return "an EU registry mirror: endpoints.registry_mirror is not set" if require_mirror else None
    if host != mirror:
        return f"the EU mirror: {chart!r} is pulled from {host}, not {mirror}"
    return None


def _chart_sources(program: _Program, mirror: str | None, require_mirror: bool) -> list[Finding]:
    findings = []
    for r in program.k8s:
        if r.type != HELM_RELEASE:
            continue
        chart = str(r.inputs.get("chart"))
        opts = r.inputs.get("repositoryOpts")
        repo = opts.get("repo") if isinstance(opts, Mapping) else None
        problem = chart_source_problem(chart, repo, mirror, require_mirror=require_mirror)
        if problem:
            findings.append(
                Finding(
                    "chart-source",
                    r.label(),
                    problem,
                    f"mirror the chart to {mirror or 'the EU registry'} as an OCI artefact and install it by "
                    "digest (`sovereign charts list --stack S` prints the helm pull/push; its digest goes "
                    "in platform.charts)",
                    chart=chart,
                )
            )
    return findings


def _crds(program: _Program, facts: Mapping[str, charts.ChartFacts | None]) -> list[Finding]:
    builtin = {(k.group, k.kind) for k in charts.RKE2_CRDS}
    providers: dict[tuple[str, str], list[Resource]] = {}
    for r in program.k8s:
        if r.type == CRD:
            spec = r.inputs.get("spec") or {}
            key = (str(spec.get("group")), str(_at(spec, ("names", "kind"))))
            providers.setdefault(key, []).append(r)
        got = facts.get(r.urn)
        for installed in got.crds if got else []:
            providers.setdefault((installed.group, installed.kind), []).append(r)
    needs: list[tuple[Resource, str, str, str]] = []  # (resource, group, kind, why)
    for r in program.k8s:
        if r.type == HELM_RELEASE:
            got = facts.get(r.urn)
            for used in got.uses if got else []:
                needs.append((r, used.group, used.kind, f"the release renders or creates it: {used.source}"))
            continue
        group, kind = r.group_kind
        if group not in charts.BUILTIN_GROUPS:
            needs.append((r, group, kind, "the object is of this kind"))
    findings = []
    for r, group, kind, why in needs:
        if group in charts.BUILTIN_GROUPS or (group, kind) in builtin:
            continue
        offered = providers.get((group, kind), [])
        before = program.before(r)
        if any(p.urn == r.urn or p.urn in before for p in offered):
            continue
        crd = f"the CustomResourceDefinition of {kind} ({group})"
        if offered:
            names = ", ".join(p.label() for p in offered)
            findings.append(
                Finding(
                    "crd",
                    r.label(),
                    f"{crd} installed earlier: {names} provides it but is not among its dependencies",
                    f"add depends_on on the provider; {why}",
                )
            )
        else:
            findings.append(
                Finding(
                    "crd",
                    r.label(),
                    f"{crd}: nothing in the program installs it",
                    f"install it (a chart or CRD resource) and depend on it; {why}",
                )
            )
    return findings


CNPG_CLUSTER = (charts.CNPG_GROUP, "Cluster")
CNPG_SOURCE = "CloudNativePG Cluster (API reference postgresql.cnpg.io/v1)"


def cnpg_claims(r: Resource) -> list[tuple[str, str | None]]:
    """The claims the operator makes for a CloudNativePG ``Cluster``: spec.storage (PGDATA) and, if
    set, spec.walStorage, each with its storageClass (None: the default class)."""
    if r.group_kind != CNPG_CLUSTER:
        return []
    found = []
    for part in ("storage", "walStorage"):
        storage = _at(r.inputs, ("spec", part))
        if isinstance(storage, Mapping):
            got = storage.get("storageClass")
            claim = None if got is None else str(got)
            found.append((f"{part} (the operator's PersistentVolumeClaims)", claim))
    return found


def cnpg_references(r: Resource) -> list[tuple[str, str, str]]:
    """(kind, name, via) of the Secrets a CloudNativePG ``Cluster`` names: bootstrap.initdb.secret,
    certificates.serverTLSSecret / serverCASecret / clientCASecret / replicationTLSSecret, and
    backup.barmanObjectStore.s3Credentials' secret key selectors."""
    if r.group_kind != CNPG_CLUSTER:
        return []
    spec = r.inputs.get("spec") or {}
    found = []
    initdb = _at(spec, ("bootstrap", "initdb", "secret", "name"))
    if initdb:
        found.append(("Secret", str(initdb), "bootstrap.initdb.secret"))
    for key in ("serverTLSSecret", "serverCASecret", "clientCASecret", "replicationTLSSecret"):
        name = _at(spec, ("certificates", key))
        if name:
            found.append(("Secret", str(name), f"certificates.{key}"))
    credentials = _at(spec, ("backup", "barmanObjectStore", "s3Credentials"))
    for key, selector in credentials.items() if isinstance(credentials, Mapping) else []:
        if isinstance(selector, Mapping) and selector.get("name"):
            found.append(("Secret", str(selector["name"]), f"backup.barmanObjectStore.s3Credentials.{key}"))
    return found


def _storage(program: _Program, facts: Mapping[str, charts.ChartFacts | None]) -> list[Finding]:
    classes: dict[str, bool] = dict(charts.RKE2_STORAGE_CLASSES)
    for r in program.k8s:
        if r.group_kind == ("storage.k8s.io", "StorageClass"):
            default = str((r.meta.get("annotations") or {}).get(DEFAULT_CLASS)).lower() == "true"
            classes[str(r.meta.get("name"))] = default
        got = facts.get(r.urn)
        for name, default in got.storage_classes if got else []:
            classes[name] = classes.get(name, False) or default
    claims: list[tuple[Resource, str, str | None]] = []
    for r in program.k8s:
        group_kind = r.group_kind
        if group_kind == ("", "PersistentVolumeClaim"):
            claims.append((r, "", _at(r.inputs, ("spec", "storageClassName"))))
        elif group_kind == ("apps", "StatefulSet"):
            for template in _list(_at(r.inputs, ("spec", "volumeClaimTemplates"))):
                name = str(_at(template, ("metadata", "name")))
                claims.append((r, f"volumeClaimTemplate {name}", _at(template, ("spec", "storageClassName"))))
        for what, storage_class in cnpg_claims(r):
            claims.append((r, what, storage_class))
        got = facts.get(r.urn)
        for claim in got.claims if got else []:
            claims.append((r, f"volumeClaimTemplate {claim.name} ({claim.source})", claim.storage_class))
    findings = []
    provided = ", ".join(sorted(classes)) or "none"
    for r, what, storage_class in claims:
        subject = f"{r.label()} {what}".rstrip()
        if storage_class == "":
            continue  # binds a pre-created PersistentVolume only, no provisioner involved
        if storage_class is None:
            if not any(classes.values()):
                findings.append(
                    Finding(
                        "storage-class",
                        subject,
                        "a default StorageClass: the claim names "
                        "no class and the program provides no default (RKE2 has none)",
                        f"name a StorageClass the program installs (provided: {provided})",
                    )
                )
        elif storage_class not in classes:
            findings.append(
                Finding(
                    "storage-class",
                    subject,
                    f"StorageClass {storage_class!r}: nothing in the program provides it",
                    f"install its provisioner, or use one provided: {provided}",
                )
            )
    return findings


def _references(
    program: _Program, facts: Mapping[str, charts.ChartFacts | None], inputs: Sequence[OperatorInput]
) -> list[Finding]:
    declared: set[tuple[str, str, str]] = set()  # (kind, namespace, name)
    for r in program.k8s:
        group_kind = r.group_kind
        if group_kind in (("", "Secret"), ("", "ConfigMap"), ("", "ServiceAccount")):
            declared.add((group_kind[1], r.namespace or "default", str(r.meta.get("name"))))
        got = facts.get(r.urn)
        for made in got.creates if got else []:
            declared.add((made.kind, r.namespace or "default", made.name))
    by_operator = {(i.kind, i.namespace, i.name) for i in inputs}
    findings = []

    def need(r: Resource, kind: str, name: str, via: str) -> None:
        namespace = r.namespace or "default"
        key = (kind, namespace, name)
        if key in declared or key in by_operator or (kind, name) in charts.RKE2_IN_EVERY_NAMESPACE:
            return
        findings.append(
            Finding(
                "reference",
                r.label(),
                f"{kind} {namespace}/{name} ({via}): neither declared by the program nor an operator input",
                "declare it in the program, or list it in OPERATOR_INPUTS (infra/policy/completeness.py) "
                "with the command that creates it",
            )
        )

    for r in program.k8s:
        spec = _pod_spec(r)
        if spec is not None:
            for kind, name in pod_references(spec):
                need(r, kind, name, "referenced by its pods")
        for kind, name, via in cnpg_references(r):
            need(r, kind, name, f"{via} of the {CNPG_SOURCE}")
        got = facts.get(r.urn)
        for ref in got.references if got else []:
            need(r, ref.kind, ref.name, f"referenced through its values: {ref.source}")
    return findings


# images a controller runs that no pod template names: the system-upgrade-controller's (v0.16.3)
# Plans (spec.upgrade.image, spec.prepare.image: its upgrade Jobs' containers, pkg/upgrade/job/job.go)
# and the kubectl of its cordon/drain containers (SYSTEM_UPGRADE_JOB_KUBECTL_IMAGE in its env ConfigMap)
SUC_SOURCE = "; the system-upgrade-controller's Job image (pkg/upgrade/job/job.go)"


def _controller_images(r: Resource) -> list[tuple[str, str, str]]:
    found = []
    if r.group_kind == ("upgrade.cattle.io", "Plan"):
        spec = r.inputs.get("spec")
        for part in ("prepare", "upgrade"):
            container = spec.get(part) if isinstance(spec, Mapping) else None
            if isinstance(container, Mapping) and container.get("image"):
                found.append((part, str(container["image"]), SUC_SOURCE))
    elif r.group_kind == CNPG_CLUSTER:  # the operator runs spec.imageName in every instance pod
        image = _at(r.inputs, ("spec", "imageName"))
        if image:
            found.append(("postgres", str(image), f"; the {CNPG_SOURCE} spec.imageName"))
    elif r.group_kind == ("", "ConfigMap"):
        data = r.inputs.get("data")
        if isinstance(data, Mapping) and data.get("SYSTEM_UPGRADE_JOB_KUBECTL_IMAGE"):
            found.append(("kubectl", str(data["SYSTEM_UPGRADE_JOB_KUBECTL_IMAGE"]), SUC_SOURCE))
    return found


def _images(
    program: _Program, facts: Mapping[str, charts.ChartFacts | None], mirror: str | None, require_mirror: bool
) -> list[Finding]:
    findings = []
    fix = (
        f"mirror it to {mirror or 'the EU registry'} and reference it by digest "
        "(<mirror>/<path>@sha256:<digest>, e.g. from `crane digest`)"
    )
    for r in program.k8s:
        spec = _pod_spec(r)
        images = [(str(c.get("name")), str(c.get("image")), "") for c in _containers(spec)] if spec else []
        got = facts.get(r.urn)
        images += [
            (i.component, i.ref, f"; the chart's image: {i.source}") for i in (got.images if got else [])
        ]
        images += _controller_images(r)
        for container, image, source in images:
            problem = image_problem(image, mirror, require_mirror=require_mirror)
            if problem:
                findings.append(
                    Finding("image", f"{r.label()} container {container}", problem, fix + source, image)
                )
    return findings


def _namespaces(program: _Program) -> list[Finding]:
    declared = {str(r.meta.get("name")): r for r in program.k8s if r.group_kind == ("", "Namespace")}
    findings = []
    for r in program.k8s:
        namespace = r.namespace
        if namespace and namespace not in declared and namespace not in charts.RKE2_NAMESPACES:
            findings.append(
                Finding(
                    "namespace-policy",
                    r.label(),
                    f"namespace {namespace}: not declared by the program (so it has no policies)",
                    "declare it with Namespaces (Pod Security labels) and its default-deny NetworkPolicy",
                )
            )
    for name, ns in declared.items():
        denies = [
            p
            for p in program.k8s
            if p.group_kind == ("networking.k8s.io", "NetworkPolicy")
            and p.namespace == name
            and _denies_all(p)
        ]
        if not denies:
            findings.append(
                Finding(
                    "namespace-policy",
                    ns.label(),
                    "a default-deny NetworkPolicy (podSelector {}, policyTypes Ingress and Egress, no rules)",
                    "add one to NetworkPolicies, then the flows the namespace's pods need",
                )
            )
        labels = ns.meta.get("labels") or {}
        if not labels.get("pod-security.kubernetes.io/enforce"):
            findings.append(
                Finding(
                    "namespace-policy",
                    ns.label(),
                    "the Pod Security label pod-security.kubernetes.io/enforce",
                    "set its level in Namespaces (LEVELS)",
                )
            )
    return findings


def _denies_all(policy: Resource) -> bool:
    spec = policy.inputs.get("spec") or {}
    selector = spec.get("podSelector")
    everything = (
        isinstance(selector, Mapping)
        and not selector.get("matchLabels")
        and not selector.get("matchExpressions")
    )
    types = set(spec.get("policyTypes") or [])
    return (
        everything and {"Ingress", "Egress"} <= types and not spec.get("ingress") and not spec.get("egress")
    )


def _ingresses(program: _Program, inputs: Sequence[OperatorInput]) -> list[Finding]:
    """An Ingress's TLS Secrets (spec.tls[].secretName), backend Services (default backend and
    each rule's paths) and IngressClass (spec.ingressClassName) exist: an Ingress naming a
    missing Secret is served with the controller's self-signed certificate, one naming a missing
    class is served by no controller at all."""
    declared: set[tuple[str, str, str]] = set()
    classes = set(charts.RKE2_INGRESS_CLASSES)
    for r in program.k8s:
        group_kind = r.group_kind
        if group_kind in (("", "Secret"), ("", "Service")):
            declared.add((group_kind[1], r.namespace or "default", str(r.meta.get("name"))))
        elif group_kind == ("networking.k8s.io", "IngressClass"):
            classes.add(str(r.meta.get("name")))
    declared |= {(i.kind, i.namespace, i.name) for i in inputs}
    findings = []
    for r in program.k8s:
        if r.group_kind != ("networking.k8s.io", "Ingress"):
            continue
        spec = r.inputs.get("spec") or {}
        namespace = r.namespace or "default"
        needs = [
            ("Secret", t.get("secretName"), "spec.tls") for t in _list(spec.get("tls")) if t.get("secretName")
        ]
        backends = [spec.get("defaultBackend")] + [
            path.get("backend")
            for rule in _list(spec.get("rules"))
            for path in _list(_at(rule, ("http", "paths")))
        ]
        needs += [
            ("Service", b["service"].get("name"), "a backend")
            for b in backends
            if isinstance(b, Mapping) and isinstance(b.get("service"), Mapping)
        ]
        for kind, name, via in needs:
            if (kind, namespace, str(name)) not in declared:
                findings.append(
                    Finding(
                        "reference",
                        r.label(),
                        f"{kind} {namespace}/{name} ({via} of the Ingress): not declared by the program",
                        "declare it in the program (the Ingress's namespace)",
                    )
                )
        ingress_class = spec.get("ingressClassName")
        if ingress_class is None or str(ingress_class) not in classes:
            provided = ", ".join(sorted(classes))
            findings.append(
                Finding(
                    "reference",
                    r.label(),
                    f"IngressClass {ingress_class!r} (spec.ingressClassName): neither declared by the "
                    f"program nor one of RKE2's (provided: {provided})",
                    "name a class the program or RKE2 provides (infra/policy/charts.py RKE2_INGRESS_CLASSES)",
                )
            )
    return findings


@dataclass(frozen=True)
class _Grafana:
    """What a Grafana's dashboards sidecar loads and which Prometheus data source uid it provisions."""

    release: Resource
    label: str
    label_value: str
    namespaces: frozenset[str] | None  # None: every namespace ("ALL")
    datasource_uid: str | None
    chart_dashboards: bool  # the chart's own dashboards (kube-prometheus-stack defaultDashboardsEnabled)


# the charts' defaults (kube-prometheus-stack 88.5.3 values.yaml grafana.sidecar.*, grafana 12.11.1
# values.yaml sidecar.*): the label, its value, every namespace in kube-prometheus-stack (ALL) and the
# release's own in the grafana chart (searchNamespace unset), the data source uid "prometheus"; a
# Grafana with the chart's own dashboards (kube-prometheus-stack's default) is never without any
_GRAFANA_CHARTS = {"kube-prometheus-stack": ("grafana.", True, "ALL"), "grafana": ("", True, None)}


def _grafanas(program: _Program) -> list[_Grafana]:
    found = []
    for r in program.k8s:
        if r.type != HELM_RELEASE:
            continue
        chart = charts.chart_name(str(r.inputs.get("chart")))
        if chart not in _GRAFANA_CHARTS:
            continue
        prefix, enabled, search_default = _GRAFANA_CHARTS[chart]
        values = r.inputs.get("values") if isinstance(r.inputs.get("values"), Mapping) else {}
        if prefix and not charts.value(values, prefix + "enabled", enabled):
            continue
        if not charts.value(values, prefix + "sidecar.dashboards.enabled", chart == "kube-prometheus-stack"):
            continue
        search = charts.value(values, prefix + "sidecar.dashboards.searchNamespace", search_default)
        namespace = r.namespace or "default"
        if search is None:
            namespaces: frozenset[str] | None = frozenset({namespace})
        elif str(search) == "ALL":
            namespaces = None
        else:
            names = search if isinstance(search, list) else str(search).split(",")
            namespaces = frozenset(str(n).strip() for n in names)
        datasources = charts.value(values, prefix + "sidecar.datasources.enabled", True) and charts.value(
            values, prefix + "sidecar.datasources.defaultDatasourceEnabled", True
        )
        if chart == "kube-prometheus-stack":
            own_dashboards = bool(charts.value(values, "grafana.defaultDashboardsEnabled", True))
        else:
            own_dashboards = bool(charts.value(values, "dashboards", None))
        found.append(
            _Grafana(
                r,
                str(charts.value(values, prefix + "sidecar.dashboards.label", "grafana_dashboard")),
                str(charts.value(values, prefix + "sidecar.dashboards.labelValue", "1")),
                namespaces,
                str(charts.value(values, prefix + "sidecar.datasources.uid", "prometheus"))
                if datasources
                else None,
                own_dashboards,
            )
        )
    return found


def _datasource_uids(node: Any) -> set[str]:
    """Every ``datasource.uid`` in a dashboard's panels, targets and variables."""
    uids: set[str] = set()
    if isinstance(node, Mapping):
        source = node.get("datasource")
        if isinstance(source, Mapping) and source.get("uid") is not None:
            uids.add(str(source["uid"]))
        for child in node.values():
            uids |= _datasource_uids(child)
    elif isinstance(node, list):
        for child in node:
            uids |= _datasource_uids(child)
    return uids


def _dashboards(program: _Program) -> list[Finding]:
    grafanas = _grafanas(program)
    keys = {g.label for g in grafanas} | {"grafana_dashboard"}
    findings = []
    loaded: dict[str, int] = {g.release.urn: 0 for g in grafanas}
    for r in program.k8s:
        labels = r.meta.get("labels") or {}
        if r.group_kind != ("", "ConfigMap") or not isinstance(labels, Mapping) or not keys & set(labels):
            continue
        namespace = r.namespace or "default"
        loaders = [
            g
            for g in grafanas
            if str(labels.get(g.label)) == g.label_value
            and (g.namespaces is None or namespace in g.namespaces)
        ]
        if not loaders:
            findings.append(
                Finding(
                    "dashboard",
                    r.label(),
                    "a Grafana dashboards sidecar that loads it (its label and value, in a namespace the "
                    f"sidecar searches): {len(grafanas)} Grafana(s) in the program, none loads it",
                    "enable Grafana and its dashboards sidecar (kube-prometheus-stack grafana.sidecar."
                    "dashboards) for this label and namespace, or move the ConfigMap",
                )
            )
        for g in loaders:
            loaded[g.release.urn] += 1
        data = r.inputs.get("data") or {}
        for key, text in data.items() if isinstance(data, Mapping) else []:
            try:
                dashboard = json.loads(str(text))
            except ValueError:
                dashboard = None
            if not isinstance(dashboard, Mapping) or not isinstance(dashboard.get("panels"), list):
                findings.append(
                    Finding(
                        "dashboard", r.label(), f"dashboard JSON with panels in data.{key}", "fix the JSON"
                    )
                )
                continue
            provided = {g.datasource_uid for g in loaders if g.datasource_uid}
            for uid in sorted(_datasource_uids(dashboard) - provided) if loaders else []:
                findings.append(
                    Finding(
                        "dashboard",
                        r.label(),
                        f"data source uid {uid!r} (data.{key}): the Grafana that loads it provisions "
                        f"{sorted(provided) or 'no data source'}",
                        "name the uid of the sidecar's data source (grafana.sidecar.datasources.uid)",
                    )
                )
    for g in grafanas:
        if not loaded[g.release.urn] and not g.chart_dashboards:
            where = "any namespace" if g.namespaces is None else ", ".join(sorted(g.namespaces))
            findings.append(
                Finding(
                    "dashboard",
                    g.release.label(),
                    f"dashboards: its sidecar loads ConfigMaps labelled {g.label}={g.label_value} in "
                    f"{where}, and the program declares none",
                    "declare the dashboards (infra/k8s_platform/dashboards.py) or turn the sidecar off",
                )
            )
    return findings
