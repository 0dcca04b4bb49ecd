"""The checks behind every claim of the control mapping: predicates over the plan, the config
and the recorded test results.

A claim in ``controls.yaml`` names its check (``check: <name>``). A check returns a
:class:`Verdict`: ``holds`` or ``fails`` with the reason computed from what it looked at, or
``not applicable`` when the part of the platform the claim is about is not in this stack's plan
(a DR stack without gateway has no audit trail to archive), or ``unverified`` when the claim
rests on a test and no test run of this code is on record. Two generic forms need no Python:

- ``rule:<name>``: holds when the policy pack's rule reports nothing over the plan;
- ``tests``: holds when every test the claim cites passed in the recorded ``make test`` run of
  the code being reported (``infra/evidence/results.py``); a code property no stack setting can
  change is proven this way, never by a check that always answers yes.

A check never answers ``holds`` without looking: when the stack config is refused there is no
plan, and every check that needs one fails with that reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from infra import config as stack_config
from infra import images as image_refs
from infra import plan as planner
from infra import residency
from infra.policy.completeness import pod_spec_of

HOLDS, FAILS, NOT_APPLICABLE, UNVERIFIED, EXCEPTED = (
    "holds",
    "fails",
    "not applicable",
    "unverified",
    "excepted",
)


@dataclass(frozen=True)
class Verdict:
    status: str
    reason: str


def holds(reason: str) -> Verdict:
    return Verdict(HOLDS, reason)


def fails(reason: str) -> Verdict:
    return Verdict(FAILS, reason)


def not_applicable(reason: str) -> Verdict:
    return Verdict(NOT_APPLICABLE, reason)


@dataclass
class Context:
    """What a check may look at."""

    stack: str
    sections: dict[str, Any]
    cfg: stack_config.StackConfig | None
    plan: planner.Plan | None
    # "path::test" -> "passed" | "failed" | "skipped", from the make-test run of this code (empty: none)
    outcomes: dict[str, str] = field(default_factory=dict)
    outcomes_note: str = "no `make test` run of this code is on record (reports/junit/make-test.xml)"


Check = Callable[[Context], Verdict]
CHECKS: dict[str, Check] = {}
REFUSED = "the stack config is refused (see the findings): there is no plan to check"


def check(name: str) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        CHECKS[name] = fn
        return fn

    return register


def run(name: str, ctx: Context, tests: tuple[str, ...] = ()) -> Verdict:
    """The verdict of the check *name* (``rule:<name>``, ``tests`` or a registered check)."""
    if name.startswith("rule:"):
        return _rule(name.removeprefix("rule:"), ctx)
    if name == "tests":
        return tests_passed(tests, ctx)
    return CHECKS[name](ctx)


def known(name: str) -> bool:
    from infra.policy.rules import RULES

    if name.startswith("rule:"):
        return name.removeprefix("rule:") in RULES
    return name == "tests" or name in CHECKS


# -- helpers over the plan -----------------------------------------------------------------------


def _objects(ctx: Context, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
    if ctx.plan is None:
        return []
    return [
        o
        for o in ctx.plan.kubernetes_objects()
        if o.get("kind") == kind and (namespace is None or o["metadata"].get("namespace") == namespace)
    ]


def gateway(ctx: Context) -> dict[str, Any] | None:
    found = _objects(ctx, "StatefulSet", "sovereign-gateway")
    return found[0] if found else None


def gateway_settings(ctx: Context) -> dict[str, Any]:
    for cm in _objects(ctx, "ConfigMap", "sovereign-gateway"):
        if "gateway.yaml" in (cm.get("data") or {}):
            loaded = yaml.safe_load(cm["data"]["gateway.yaml"])
            return loaded if isinstance(loaded, dict) else {}
    return {}


def inference(ctx: Context) -> list[dict[str, Any]]:
    return [
        d
        for d in _objects(ctx, "Deployment", "sovereign-inference")
        if d["metadata"]["name"].startswith("vllm-")
    ]


def pod_specs(ctx: Context) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(kind/namespace/name, pod spec) of every workload the program renders itself."""
    for o in ctx.plan.kubernetes_objects() if ctx.plan is not None else []:
        pod = pod_spec_of(o)
        if pod is not None:
            yield f"{o['kind']}/{o['metadata'].get('namespace')}/{o['metadata']['name']}", pod


def _rule(name: str, ctx: Context) -> Verdict:
    if ctx.plan is None:
        return fails(REFUSED)
    found = [v for v in ctx.plan.violations if v.rule == name]
    if found:
        return fails(f"the policy pack's rule {name} reports {len(found)} resource(s): " +
                     "; ".join(f"{v.resource}: {v.message}" for v in found[:3]))  # fmt: skip
    return holds(f"the policy pack's rule {name} reports nothing over {len(ctx.plan.custom())} resources")


def tests_passed(tests: tuple[str, ...], ctx: Context) -> Verdict:
    if not tests:
        return fails("the claim cites no test")
    if not ctx.outcomes:
        return Verdict(UNVERIFIED, ctx.outcomes_note)
    missing = [t for t in tests if t not in ctx.outcomes]
    failed = [t for t in tests if ctx.outcomes.get(t) == "failed"]
    skipped = [t for t in tests if ctx.outcomes.get(t) == "skipped"]
    if failed:
        return fails("failed in the recorded run: " + ", ".join(failed))
    if missing or skipped:
        return Verdict(UNVERIFIED, "not run in the recorded run: " + ", ".join(missing + skipped))
    return holds(f"{len(tests)} cited test(s) passed in the recorded run of this code")


# -- GDPR Art. 44 / ISO A.5.23: residency ----------------------------------------------------------


@check("backend-in-eu")
def backend_in_eu(ctx: Context) -> Verdict:
    backend = str((ctx.sections.get("endpoints") or {}).get("pulumi_backend") or "")
    host = residency.host_of(backend)
    if host in residency.PULUMI_SAAS_HOSTS:
        allow = (ctx.sections.get("backend") or {}).get("allow_saas")
        why = (
            " (overridden by backend.allow_saas; the stack's justification is shown in section 1)"
            if allow
            else ""
        )
        return fails(f"the Pulumi state is on Pulumi Cloud ({host}, US){why}")
    if not backend:
        return fails("endpoints.pulumi_backend is not set")
    problem = residency.endpoint_problem(backend, _extra(ctx))
    if problem:
        return fails(f"endpoints.pulumi_backend: {problem}")
    return holds(f"the state backend {host or backend} is inside the boundary")


def _extra(ctx: Context) -> list[residency.EuEndpoint]:
    return ctx.cfg.residency.entries() if ctx.cfg is not None else []


@check("every-location-and-endpoint-in-eu")
def every_location_in_eu(ctx: Context) -> Verdict:
    from infra.evidence.model import residency_from_plan, residency_from_sections

    rows = residency_from_plan(ctx.plan, ctx.sections) if ctx.plan else residency_from_sections(ctx.sections)
    outside = [r for r in rows if not r.inside]
    if outside:
        return fails("outside the boundary: " + ", ".join(f"{r.name} ({r.location})" for r in outside))
    return holds(f"all {len(rows)} located resources and endpoints are inside the EU/EEA")


@check("no-foreign-service-declared-eu")
def no_foreign_service_declared_eu(ctx: Context) -> Verdict:
    hosts = (ctx.sections.get("residency") or {}).get("extra_hosts") or []
    wrong = []
    for i, entry in enumerate(hosts):
        host = str((entry or {}).get("host", "")).lower() if isinstance(entry, dict) else ""
        operator = residency.known_foreign_operator(host)
        if operator:
            wrong.append(f"residency.extra_hosts.{i} ({operator})")
    if wrong:
        return fails("declared as EU but operated from outside the EU: " + ", ".join(wrong))
    return holds(f"none of the {len(hosts)} reviewed extra host(s) is a known non-EU service")


@check("client-site-in-eu")
def client_site_in_eu(ctx: Context) -> Verdict:
    if ctx.cfg is None or ctx.plan is None:
        return fails(REFUSED)
    if gateway(ctx) is None:
        return not_applicable("no gateway in this plan: Magento has nothing to call")
    site = ctx.cfg.evidence.magento
    if site is None:
        return fails("Magento's site is not declared (evidence.magento): the map cannot place it")
    if site.jurisdiction.upper() not in residency.EU_EEA_COUNTRIES:
        return fails(f"Magento runs outside the EU/EEA (evidence.magento.jurisdiction {site.jurisdiction})")
    return holds(f"Magento runs in {site.jurisdiction.upper()} ({site.operator})")


# -- supply chain (NIS2 Art. 21(2)(d)/(e), ISO A.8.32) ------------------------------------------------


@check("images-by-digest-from-eu-mirror")
def images_by_digest_from_eu_mirror(ctx: Context) -> Verdict:
    if ctx.cfg is None or ctx.plan is None:
        return fails(REFUSED)
    mirror = ctx.cfg.endpoints.registry_mirror
    if not mirror:
        return fails(
            "no registry mirror (endpoints.registry_mirror): images come from their upstream registries"
        )
    host = image_refs.mirror_host(ctx.cfg)  # as the program names the images (infra/images.py)
    wrong, count = [], 0
    for where, pod in pod_specs(ctx):
        for c in [*pod.get("initContainers", []), *pod.get("containers", [])]:
            count += 1
            try:
                ref = image_refs.parse(str(c.get("image", "")))
            except ValueError:
                wrong.append(f"{where}/{c.get('name')}: not an image reference")
                continue
            if ref.registry != host or not ref.digest:
                wrong.append(
                    f"{where}/{c.get('name')}: {ref.registry}" + ("" if ref.digest else ", no digest")
                )
    if wrong:
        return fails(
            f"{len(wrong)} of {count} containers not pulled by digest from {host}: " + "; ".join(wrong[:4])
        )
    return holds(f"all {count} containers the program renders are pulled by digest from {host}")


@check("charts-from-eu-mirror")
def charts_from_eu_mirror(ctx: Context) -> Verdict:
    if ctx.cfg is None or ctx.plan is None:
        return fails(REFUSED)
    host = image_refs.mirror_host(ctx.cfg)
    releases = ctx.plan.helm_releases()
    wrong = [
        f"{r.get('name')} from {r.get('chart')}"
        for r in releases
        if host is None or not str(r.get("chart", "")).startswith(f"oci://{host}/")
    ]
    if wrong:
        return fails("Helm charts not from the EU mirror: " + ", ".join(wrong))
    return holds(f"all {len(releases)} Helm charts come from oci://{host}/")


@check("weights-signature-checked")
def weights_signature_checked(ctx: Context) -> Verdict:
    if ctx.cfg is None or ctx.plan is None:
        return fails(REFUSED)
    jobs = [
        j for j in _objects(ctx, "Job", "sovereign-inference") if j["metadata"]["name"].startswith("weights-")
    ]
    if not jobs:
        return not_applicable("no model weights Job in this plan")
    unsigned = []
    for job in jobs:
        args = [a for c in job["spec"]["template"]["spec"]["containers"] for a in c.get("args", [])]
        if "--public-key" not in args:
            unsigned.append(job["metadata"]["name"])
    if unsigned:
        return fails(
            "the weights Job checks the SHA-256 manifest but not its signature (no --public-key; set "
            "storage.manifest_public_keys): " + ", ".join(unsigned)
        )
    return holds(f"{len(jobs)} weights Job(s) refuse a manifest not signed by the stack's OpenBao key")


@check("model-release-pinned")
def model_release_pinned(ctx: Context) -> Verdict:
    if ctx.cfg is None:
        return fails(REFUSED)
    if not ctx.cfg.platform.models:
        return not_applicable("no model is served in this stack")
    loose = [m.name for m in ctx.cfg.platform.models if not m.manifest_sha256]
    if loose:
        return fails("no approved release pinned (platform.models[].manifest_sha256): " + ", ".join(loose))
    return holds(f"{len(ctx.cfg.platform.models)} model(s) pinned to an approved manifest")


@check("rke2-pinned")
def rke2_pinned(ctx: Context) -> Verdict:
    if ctx.cfg is None:
        return fails(REFUSED)
    if not ctx.cfg.rke2.artifact_sha256:
        return fails(
            "rke2.artifact_sha256 is not set: the rke2 role would refuse to install (deploy blocker)"
        )
    return holds("RKE2 is installed only from the stack's EU mirror with a pinned SHA-256")


# -- security of processing (GDPR Art. 32, ISO A.8.15/A.8.16/A.8.24) ---------------------------------


@check("audit-archived-under-object-lock")
def audit_archived(ctx: Context) -> Verdict:
    if ctx.cfg is None or ctx.plan is None:
        return fails(REFUSED)
    if gateway(ctx) is None:
        return not_applicable("no gateway in this plan: no request to audit")
    archive = (gateway_settings(ctx).get("audit") or {}).get("archive") or {}
    if not archive.get("url"):
        return fails("the gateway keeps its audit trail only on its volume: storage.audit_archive is not set")
    mode, days = archive.get("lock_mode"), archive.get("retention_days")
    if ctx.cfg.region.environment == "prod" and mode != "COMPLIANCE":
        return fails(f"the archive's Object Lock is {mode} in prod: an admin can shorten or remove it")
    return holds(f"sealed audit segments ship to {archive['url']} under Object Lock {mode}, {days} days")


@check("gateway-to-models-mtls")
def gateway_to_models_mtls(ctx: Context) -> Verdict:
    if ctx.plan is None:
        return fails(REFUSED)
    if gateway(ctx) is None or not inference(ctx):
        return not_applicable("no gateway and model server pair in this plan")
    upstreams = gateway_settings(ctx).get("upstreams") or {}
    plain = [n for n, u in upstreams.items() if not str(u.get("url", "")).startswith("https://")
             or not (u.get("tls") or {}).get("cert_file")]  # fmt: skip
    if plain or not upstreams:
        return fails("upstreams without mTLS: " + (", ".join(plain) or "none configured"))
    certs = [r for r in ctx.plan.custom() if r.type.endswith("secretBackendCert:SecretBackendCert")]
    if not any(r.inputs.get("name") == "inference-server" for r in certs):
        return fails("no server certificate for the model servers is issued by OpenBao's PKI")
    return holds(f"{len(upstreams)} upstream(s) over HTTPS with a client certificate from OpenBao's PKI")


@check("inference-has-no-egress")
def inference_has_no_egress(ctx: Context) -> Verdict:
    if ctx.plan is None:
        return fails(REFUSED)
    if not inference(ctx):
        return not_applicable("no model server in this plan")
    policies = _objects(ctx, "NetworkPolicy", "sovereign-inference")
    deny = [
        p for p in policies
        if p["spec"].get("podSelector") == {} and "Egress" in p["spec"].get("policyTypes", [])
        and not p["spec"].get("egress")
    ]  # fmt: skip
    if not deny:
        return fails("no default-deny egress NetworkPolicy in sovereign-inference")
    opened = [
        p["metadata"]["name"]
        for p in policies
        if p["spec"].get("egress") and _selects_vllm(p["spec"].get("podSelector") or {})
    ]
    if opened:
        return fails("NetworkPolicies open egress for the model servers: " + ", ".join(opened))
    return holds("the model servers' namespace denies all egress and no policy opens it for them")


def _selects_vllm(selector: dict[str, Any]) -> bool:
    labels = selector.get("matchLabels") or {}
    return (not labels and not selector.get("matchExpressions")) or str(labels.get("app", "")).startswith(
        "vllm"
    )


@check("alerts-routed")
def alerts_routed(ctx: Context) -> Verdict:
    if ctx.cfg is None or ctx.plan is None:
        return fails(REFUSED)
    rules = _objects(ctx, "PrometheusRule")
    if not rules:
        return fails("no PrometheusRule in the plan: nothing alerts")
    receivers = ctx.cfg.platform.alerting.receivers
    if not receivers:
        return fails("platform.alerting.receivers is empty: alerts fire but reach no one")
    count = sum(len(r.get("rules", [])) for p in rules for r in p["spec"].get("groups", []))
    return holds(f"{count} alert rules, routed by Alertmanager to {len(receivers)} receiver(s)")


@check("openbao-snapshots-off-site")
def openbao_snapshots(ctx: Context) -> Verdict:
    if ctx.cfg is None or ctx.plan is None:
        return fails(REFUSED)
    if not ctx.cfg.platform.openbao.initialised:
        return not_applicable("OpenBao is installed but not initialised (phase 1): no keys to back up yet")
    if not _objects(ctx, "CronJob", "openbao"):
        return fails("no OpenBao snapshot CronJob in the plan: the keys have no backup")
    if ctx.cfg.storage.openbao_snapshot_copy is None:
        return fails("storage.openbao_snapshot_copy is not set: one location holds every snapshot")
    return holds("OpenBao Raft snapshots are taken on schedule and copied to a second EU location")


@check("etcd-snapshots-to-object-storage")
def etcd_snapshots(ctx: Context) -> Verdict:
    if ctx.cfg is None:
        return fails(REFUSED)
    snapshots = ctx.cfg.rke2.etcd_snapshots
    if snapshots is None:
        return fails("rke2.etcd_snapshots is not set: etcd snapshots stay on the servers they protect")
    return holds(
        f"RKE2 etcd snapshots ({snapshots.schedule_cron}) go to bucket {snapshots.bucket} on EU storage"
    )


@check("memory-store-encrypted-and-backed-up-in-eu")
def memory_store(ctx: Context) -> Verdict:
    """The memory store (platform.memory_store): its Cluster on the LUKS-encrypted class, backed up to
    an EU bucket with server-side encryption and the configured retention, admitting the gateway only."""
    if ctx.cfg is None or ctx.plan is None:
        return fails(REFUSED)
    store = ctx.cfg.platform.memory_store
    if not store.enabled:
        return not_applicable("platform.memory_store.enabled is false: nothing is stored")
    clusters = _objects(ctx, "Cluster", "sovereign-memory")
    if not ctx.cfg.platform.openbao.initialised:
        return not_applicable("phase 1 (OpenBao not initialised): the operator only, no store yet")
    if not clusters:
        return fails("platform.memory_store.enabled, but the plan has no CloudNativePG Cluster")
    spec = clusters[0]["spec"]
    barman = (spec.get("backup") or {}).get("barmanObjectStore") or {}
    endpoint = str(barman.get("endpointURL") or "")
    problems = []
    if (spec.get("storage") or {}).get("storageClass") != "hcloud-volumes-encrypted":
        problems.append("its volumes are not on the LUKS-encrypted StorageClass hcloud-volumes-encrypted")
    if not barman.get("destinationPath"):
        problems.append("no barman-cloud backup (spec.backup.barmanObjectStore)")
    elif residency.endpoint_problem(endpoint, ctx.cfg.residency.entries()) is not None:
        problems.append("its backup endpoint is not inside the EU boundary")
    if {(barman.get(part) or {}).get("encryption") for part in ("wal", "data")} - {"AES256", "aws:kms"}:
        problems.append("its WAL or base backups are not server-side encrypted")
    if (spec.get("backup") or {}).get("retentionPolicy") != f"{store.backup_retention_days}d":
        problems.append("its retentionPolicy is not platform.memory_store.backup_retention_days")
    if not _objects(ctx, "ScheduledBackup", "sovereign-memory"):
        problems.append("no ScheduledBackup: only the WAL is archived, no base backup ages out")
    if problems:
        return fails("the memory store: " + "; ".join(problems))
    return holds(
        f"{spec.get('instances')} PostgreSQL instance(s) on LUKS-encrypted volumes; base backups and WAL "
        f"to {barman['destinationPath']} (EU, SSE), kept {store.backup_retention_days} days"
    )


@check("openbao-ha-in-prod")
def openbao_ha(ctx: Context) -> Verdict:
    if ctx.cfg is None:
        return fails(REFUSED)
    replicas = ctx.cfg.platform.openbao.replicas
    if ctx.cfg.region.environment != "prod":
        return not_applicable(
            f"environment {ctx.cfg.region.environment}: {replicas} OpenBao member(s) by design"
        )
    if replicas < 3:
        return fails(f"{replicas} OpenBao member(s) in prod: one failure stops every key request")
    return holds(f"{replicas} OpenBao Raft members")


# -- use cases (GDPR Art. 5(1)(c), 25; PCI DSS) ------------------------------------------------------


def _policies() -> dict[str, Any]:
    from gateway.policy import load_policies

    return dict(load_policies())


@check("catalogue-search-sees-no-patient-data")
def catalogue_search(ctx: Context) -> Verdict:
    policy = _policies().get("catalog-search")
    if policy is None:
        return not_applicable("no catalog-search use case")
    extra = [f for f in policy.context_fields if not f.startswith("product.")]
    if extra or policy.tokenise:
        return fails("catalog-search may see patient fields: " + ", ".join(extra + list(policy.tokenise)))
    return holds("catalog-search sees product fields only and tokenises nothing (no patient data is allowed)")


@check("no-policy-forwards-cards")
def no_policy_forwards_cards(ctx: Context) -> Verdict:
    policies = _policies()
    wrong = [p.name for p in policies.values() if "CARD" in p.tokenise]
    if wrong:
        return fails("use cases that would forward card numbers (tokenised): " + ", ".join(wrong))
    return holds(f"none of {len(policies)} use cases forwards card numbers; they are removed")


@check("every-use-case-served-or-refused")
def use_cases_served(ctx: Context) -> Verdict:
    if ctx.cfg is None:
        return fails(REFUSED)
    served = {a for m in ctx.cfg.platform.models for a in (m.name, *m.aliases)}
    if not served:
        return not_applicable("no model is served in this stack")
    missing = sorted({p.model for p in _policies().values()} - served)
    if missing:
        return fails("use cases name models this stack does not serve: " + ", ".join(missing))
    return holds("every use case's model is served in this stack")


# -- checks of the extended control mapping (NIS2 Art. 21(2) points, ISO A.5.24-A.8.16, NIST AI RMF
# subcategories, EU AI Act Art. 26, PCI DSS scope) ---------------------------------------------------

# namespaces whose workloads need host access by design (docs/platform.md: the GPU operator's driver
# and the system-upgrade controller); every other namespace enforces Pod Security "restricted"
PRIVILEGED_NAMESPACES = frozenset({"gpu-operator", "system-upgrade"})
SIX_MONTHS_DAYS = 183  # AI Act Art. 26(6): logs kept "for a period of at least six months"


@check("every-namespace-default-deny")
def every_namespace_default_deny(ctx: Context) -> Verdict:
    if ctx.plan is None:
        return fails(REFUSED)
    namespaces = [n["metadata"]["name"] for n in _objects(ctx, "Namespace")]
    if not namespaces:
        return fails("the plan creates no Namespace: nothing to isolate")
    policies = _objects(ctx, "NetworkPolicy")
    open_ = [
        ns for ns in namespaces
        if not any(
            p["metadata"].get("namespace") == ns and p["spec"].get("podSelector") == {}
            and {"Ingress", "Egress"} <= set(p["spec"].get("policyTypes", []))
            and not p["spec"].get("ingress") and not p["spec"].get("egress")
            for p in policies
        )
    ]  # fmt: skip
    if open_:
        return fails(
            "namespaces without a default-deny NetworkPolicy (ingress and egress): " + ", ".join(open_)
        )
    return holds(f"all {len(namespaces)} namespaces of the plan deny ingress and egress by default")


@check("pod-security-restricted")
def pod_security_restricted(ctx: Context) -> Verdict:
    if ctx.plan is None:
        return fails(REFUSED)
    namespaces = _objects(ctx, "Namespace")
    if not namespaces:
        return fails("the plan creates no Namespace")
    label = "pod-security.kubernetes.io/enforce"
    loose = [
        f"{n['metadata']['name']} ({(n['metadata'].get('labels') or {}).get(label, 'no label')})"
        for n in namespaces
        if n["metadata"]["name"] not in PRIVILEGED_NAMESPACES
        and (n["metadata"].get("labels") or {}).get(label) != "restricted"
    ]
    if loose:
        return fails(f"namespaces that do not enforce Pod Security restricted ({label}): " + ", ".join(loose))
    kept = sorted(PRIVILEGED_NAMESPACES & {n["metadata"]["name"] for n in namespaces})
    return holds(
        f"{len(namespaces) - len(kept)} namespaces enforce Pod Security restricted"
        + (f" ({', '.join(kept)} privileged by design)" if kept else "")
    )


@check("ingress-tls-only")
def ingress_tls_only(ctx: Context) -> Verdict:
    if ctx.plan is None:
        return fails(REFUSED)
    ingresses = _objects(ctx, "Ingress")
    if not ingresses:
        return not_applicable("no Ingress in this plan: nothing reaches the gateway from outside the cluster")
    plain = [f"{i['metadata'].get('namespace')}/{i['metadata']['name']}" for i in ingresses
             if not (i.get("spec") or {}).get("tls")]  # fmt: skip
    if plain:
        return fails("Ingresses without TLS (spec.tls): " + ", ".join(plain))
    protocols = ""
    for hcc in _objects(ctx, "HelmChartConfig"):
        if hcc["metadata"]["name"] == "rke2-ingress-nginx":
            values = yaml.safe_load(hcc["spec"].get("valuesContent") or "") or {}
            protocols = str(((values.get("controller") or {}).get("config") or {}).get("ssl-protocols", ""))
    if set(protocols.split()) != {"TLSv1.2", "TLSv1.3"}:
        return fails(
            "the ingress controller's ssl-protocols (HelmChartConfig rke2-ingress-nginx) are "
            f"{protocols or 'not set'}, not TLSv1.2 and TLSv1.3 only"
        )
    return holds(f"{len(ingresses)} Ingress(es) with TLS; the controller accepts {protocols} only")


@check("audit-kept-six-months")
def audit_kept_six_months(ctx: Context) -> Verdict:
    archived = audit_archived(ctx)
    if archived.status != HOLDS:
        return archived
    days = (gateway_settings(ctx).get("audit") or {}).get("archive", {}).get("retention_days")
    if not isinstance(days, int) or days < SIX_MONTHS_DAYS:
        return fails(
            f"audit segments are locked for {days} days (storage.audit_retention_days), "
            f"less than six months ({SIX_MONTHS_DAYS} days)"
        )
    return holds(f"audit segments are locked for {days} days, at least six months")


@check("kill-switch-deployed")
def kill_switch_deployed(ctx: Context) -> Verdict:
    if ctx.plan is None:
        return fails(REFUSED)
    if gateway(ctx) is None:
        return not_applicable("no gateway in this plan: no use case to suspend")
    policies = [r for r in ctx.plan.custom() if r.type == "vault:index/policy:Policy"]
    incident = [r for r in policies if r.inputs.get("name") == "sovereign-incident"]
    if not incident:
        return fails("no OpenBao policy sovereign-incident in the plan: no operator can write a suspension")
    return holds(
        "the OpenBao policy sovereign-incident lets operators suspend a use case; the gateway reads it"
    )


@check("alerts-have-runbooks")
def alerts_have_runbooks(ctx: Context) -> Verdict:
    from infra.paths import REPO_ROOT as REPO

    if ctx.plan is None:
        return fails(REFUSED)
    rules = [r for p in _objects(ctx, "PrometheusRule") for g in p["spec"].get("groups", [])
             for r in g.get("rules", []) if "alert" in r]  # fmt: skip
    if not rules:
        return fails("no alert rule in the plan: nothing starts an incident")
    wrong = []
    for r in rules:
        severity = (r.get("labels") or {}).get("severity")
        runbook = str((r.get("annotations") or {}).get("runbook_url", ""))
        if severity not in ("page", "ticket"):
            wrong.append(f"{r['alert']}: severity {severity}")
        elif not runbook or not (REPO / runbook.split("#", 1)[0]).is_file():
            wrong.append(f"{r['alert']}: runbook {runbook or 'not set'} does not exist")
    if wrong:
        return fails(
            f"{len(wrong)} of {len(rules)} alerts without severity or runbook: " + "; ".join(wrong[:4])
        )
    return holds(f"all {len(rules)} alerts have severity page or ticket and a runbook that exists")


@check("gateway-upstreams-in-cluster")
def gateway_upstreams_in_cluster(ctx: Context) -> Verdict:
    if ctx.plan is None:
        return fails(REFUSED)
    if gateway(ctx) is None:
        return not_applicable("no gateway in this plan")
    settings = gateway_settings(ctx)
    targets = {f"upstreams.{n}": str(u.get("url", "")) for n, u in (settings.get("upstreams") or {}).items()}
    targets["openbao.address"] = str((settings.get("openbao") or {}).get("address", ""))
    outside = [
        f"{key} ({url})" for key, url in targets.items()
        if not (residency.host_of(url) or "").endswith((".svc", ".svc.cluster.local"))
    ]  # fmt: skip
    if outside:
        return fails("gateway targets outside the cluster: " + ", ".join(outside))
    return holds(f"the gateway's {len(targets)} targets are cluster-internal Services")


@check("gateway-name-recogniser-on")
def gateway_name_recogniser_on(ctx: Context) -> Verdict:
    if ctx.plan is None:
        return fails(REFUSED)
    if gateway(ctx) is None:
        return not_applicable("no gateway in this plan")
    if gateway_settings(ctx).get("phi_names", True) is False:
        return fails("the gateway's phi_names is false: names the context does not know reach the model")
    return holds("the deployed gateway keeps the recogniser for names the context does not know (phi_names)")


@check("weights-verified-before-serving")
def weights_verified_before_serving(ctx: Context) -> Verdict:
    if ctx.plan is None:
        return fails(REFUSED)
    servers = inference(ctx)
    if not servers:
        return not_applicable("no model server in this plan")
    wrong = []
    for d in servers:
        pod = d["spec"]["template"]["spec"]
        main = pod["containers"][0]
        args = main.get("args", [])
        model_dir = args[args.index("--model") + 1] if "--model" in args else None
        verify = [
            i.get("args", [])
            for i in pod.get("initContainers", [])
            if i.get("args", [])[:2] == ["weights", "verify"]
        ]
        dirs = [a[a.index("--dir") + 1] for a in verify if "--dir" in a]
        offline = {"name": "HF_HUB_OFFLINE", "value": "1"} in main.get("env", [])
        if model_dir is None or model_dir not in dirs:
            wrong.append(f"{d['metadata']['name']}: no `weights verify` of {model_dir} before it starts")
        elif not offline:
            wrong.append(f"{d['metadata']['name']}: HF_HUB_OFFLINE is not 1")
    if wrong:
        return fails("; ".join(wrong))
    return holds(
        f"{len(servers)} model server(s) verify their weights against the manifest before serving, offline"
    )


@check("transit-keys-declared")
def transit_keys_declared(ctx: Context) -> Verdict:
    if ctx.plan is None:
        return fails(REFUSED)
    if gateway(ctx) is None:
        return not_applicable("no gateway in this plan: OpenBao is not configured yet (phase one)")
    keys = {r.inputs.get("name"): r.inputs for r in ctx.plan.custom()
            if r.type == "vault:transit/secretBackendKey:SecretBackendKey"}  # fmt: skip
    tenant, manifests = keys.get("tenant-data") or {}, keys.get("model-manifests") or {}
    wrong = []
    if tenant.get("derived") is not True or tenant.get("exportable") is not False:
        wrong.append("tenant-data is not a derived, non-exportable key")
    if "audit-hmac" not in keys:
        wrong.append("no audit-hmac key")
    if manifests.get("type") != "ed25519":
        wrong.append(f"model-manifests is {manifests.get('type', 'missing')}, not ed25519")
    if wrong:
        return fails("OpenBao transit keys: " + "; ".join(wrong))
    return holds(
        "OpenBao transit declares tenant-data (derived, not exportable), audit-hmac and "
        "model-manifests (ed25519)"
    )


@check("openbao-audit-device-enabled")
def openbao_audit_device_enabled(ctx: Context) -> Verdict:
    if ctx.plan is None:
        return fails(REFUSED)
    releases = [r for r in ctx.plan.helm_releases() if r.get("name") == "openbao"]
    if not releases:
        return not_applicable("no OpenBao in this plan")
    server = (releases[0].get("values") or {}).get("server") or {}
    storage = (server.get("auditStorage") or {}).get("enabled") is True
    device = 'audit "file"' in str(((server.get("ha") or {}).get("raft") or {}).get("config", ""))
    if not (storage and device):
        return fails(
            "OpenBao's file audit device is not configured: "
            + ", ".join(
                w
                for w, ok in (("no auditStorage volume", storage), ('no audit "file" stanza', device))
                if not ok
            )
        )
    return holds("OpenBao writes every request to its file audit device on its own volume")


@check("service-monitors-present")
def service_monitors_present(ctx: Context) -> Verdict:
    if ctx.cfg is None or ctx.plan is None:
        return fails(REFUSED)
    need = set()
    if gateway(ctx) is not None:
        need |= {"gateway", "openbao"}
    if inference(ctx):
        need.add("vllm")
    if not need:
        return not_applicable(
            "no gateway and no model server in this plan (phase one): nothing to scrape yet"
        )
    names = {m["metadata"]["name"] for m in _objects(ctx, "ServiceMonitor")}
    missing = sorted(need - names)
    if missing:
        return fails("no ServiceMonitor for: " + ", ".join(missing))
    return holds("Prometheus scrapes " + ", ".join(sorted(need)))


@check("upgrade-plans-match-stack-version")
def upgrade_plans_match(ctx: Context) -> Verdict:
    if ctx.cfg is None or ctx.plan is None:
        return fails(REFUSED)
    plans = _objects(ctx, "Plan")
    if not plans:
        return fails("no system-upgrade Plan in the plan: the cluster is upgraded by hand")
    version = ctx.cfg.rke2.version
    wrong = [
        f"{p['metadata']['name']} ({p['spec'].get('version')})"
        for p in plans
        if p["spec"].get("version") != version
    ]
    if wrong:
        return fails(f"upgrade Plans not at rke2.version {version}: " + ", ".join(wrong))
    return holds(f"{len(plans)} upgrade Plans roll the nodes to rke2.version {version}")


@check("no-pinning-blockers")
def no_pinning_blockers(ctx: Context) -> Verdict:
    if ctx.plan is None:
        return fails(REFUSED)
    prefixes = ("rke2.artifact_sha256", "platform.images", "platform.charts", "endpoints.registry_mirror")
    found = [b for b in ctx.plan.blockers if b.startswith(prefixes)]
    if found:
        return fails(
            f"{len(found)} unpinned artefact(s), `pulumi up` refuses: "
            + "; ".join(b.split(":")[0] for b in found[:4])
        )
    return holds("every artefact the stack installs (RKE2, images, charts) is pinned by digest or checksum")


@check("no-hop-leaves-the-eu")
def no_hop_leaves_the_eu(ctx: Context) -> Verdict:
    from infra.evidence.model import hops

    if ctx.cfg is None or ctx.plan is None:
        return fails(REFUSED)
    drawn = hops(ctx)
    outside = [f"{h.source} -> {h.target} ({', '.join(h.outside)})" for h in drawn if h.outside]
    if outside:
        return fails("data-flow hops with an end outside the EU or undeclared: " + "; ".join(outside))
    return holds(f"all {len(drawn)} hops of the data-flow map run between ends inside the EU/EEA")


@check("config-valid")
def config_valid(ctx: Context) -> Verdict:
    if ctx.cfg is None or ctx.plan is None:
        return fails(REFUSED)
    return holds(
        f"the stack config passes validation and the program plans {len(ctx.plan.custom())} resources"
    )


@check("every-use-case-states-its-purpose")
def every_use_case_states_its_purpose(ctx: Context) -> Verdict:
    policies = _policies()
    if not policies:
        return fails("no use-case policy is loaded")
    missing = [n for n, p in policies.items() if not p.description.strip() or not p.system_prompt.strip()]
    if missing:
        return fails("use cases without a stated purpose (description, system_prompt): " + ", ".join(missing))
    return holds(f"all {len(policies)} use cases state their purpose and instruct the model accordingly")
