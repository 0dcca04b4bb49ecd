"""The region's memory store (infra/k8s_platform/memory_store.py, issue #27) under Pulumi's mocks: the
CloudNativePG operator release, the pgvector Cluster, its backups, encryption at rest, its network
policies and the gateway's DSN; the completeness and policy checks over them; the Cluster and the
ScheduledBackup against the CRD schemas of the pinned chart (SOVEREIGN_CHART_DIR); the config's
refusals."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any

import jsonschema
import pytest
import yaml

from infra import config
from infra import plan as planner
from infra.k8s_platform import memory_store as ms
from infra.policy import chart_render as cr
from infra.policy import completeness, rules
from tests.infra.support import plan_of, sections, with_digests

MIRROR = "registry.sovereign.example.de"


@pytest.fixture(scope="module")
def prod() -> planner.Plan:
    return plan_of(with_digests("eu-central-prod"), stack="eu-central-prod")


def objects(plan: planner.Plan, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
    return [
        o
        for o in plan.kubernetes_objects()
        if o["kind"] == kind and (namespace is None or o["metadata"].get("namespace") == namespace)
    ]


def one(plan: planner.Plan, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    (found,) = [o for o in objects(plan, kind, namespace) if o["metadata"]["name"] == name]
    return found


def test_the_plan_renders_the_store_and_passes_completeness_and_policy(prod: planner.Plan) -> None:
    (release,) = [r for r in prod.helm_releases() if r["name"] == "cloudnative-pg"]
    assert (release["namespace"], release["version"]) == ("cnpg-system", "0.27.1")
    # from the EU mirror by digest, like every chart (infra/chart_sources.py)
    assert release["chart"].startswith(f"oci://{MIRROR}/charts/cloudnative-pg@sha256:")
    assert release["values"]["crds"]["create"] is True
    assert release["values"]["image"]["repository"] == f"{MIRROR}/ghcr.io/cloudnative-pg/cloudnative-pg"
    cluster = one(prod, "Cluster", "memory", "sovereign-memory")
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    backup = one(prod, "ScheduledBackup", "memory-daily", "sovereign-memory")
    assert backup["spec"]["cluster"] == {"name": "memory"}
    for namespace, name in (
        ("sovereign-memory", "memory-server-tls"),
        ("sovereign-memory", "memory-server-ca"),
        ("sovereign-memory", "memory-gateway-credentials"),
        ("sovereign-memory", "memory-backup-s3"),
        ("sovereign-gateway", "memory-store-dsn"),
        ("kube-system", "hcloud-volumes-luks"),
    ):
        assert one(prod, "Secret", name, namespace)
    assert {p["metadata"]["name"] for p in objects(prod, "NetworkPolicy", "sovereign-memory")} == {
        "default-deny",
        "memory-store",
    }
    assert {p["metadata"]["name"] for p in objects(prod, "NetworkPolicy", "cnpg-system")} == {
        "default-deny",
        "cnpg-operator",
    }
    assert prod.findings == [] and prod.findings_as_blockers == []
    data = with_digests("eu-central-prod")
    rules.configure(rules.declared_from(config.parse("eu-central-prod", data, "test")))
    try:
        store = [r for r in prod.custom() if "memory" in r.name or "cnpg" in r.name]
        assert len(store) >= 10
        assert [v for r in store for v in rules.check(r.type, r.name, r.inputs)] == []
        # the policy pack holds the Cluster's image to the mirror too (the operator runs it)
        (cr_resource,) = [r for r in store if r.type == "kubernetes:postgresql.cnpg.io/v1:Cluster"]
        upstream = copy.deepcopy(cr_resource.inputs)
        upstream["spec"]["imageName"] = config.CNPG_POSTGRES_IMAGE  # the upstream reference, by tag
        found = rules.check(cr_resource.type, cr_resource.name, upstream)
        assert [v.rule for v in found] == ["images-from-eu-mirror"] and "spec.imageName" in found[0].message
    finally:
        rules.configure(None)


def test_the_cluster_waits_for_the_operators_crds_and_the_check_notices_otherwise(
    prod: planner.Plan,
) -> None:
    resources = planner.completeness_view(prod.resources)
    by_type = {r.type: r for r in resources}
    cluster = by_type["kubernetes:postgresql.cnpg.io/v1:Cluster"]
    (release,) = [
        r
        for r in resources
        if r.type == completeness.HELM_RELEASE and r.name.endswith("memory-operator-release")
    ]
    assert release.urn in cluster.dependencies
    scheduled = by_type["kubernetes:postgresql.cnpg.io/v1:ScheduledBackup"]
    assert release.urn in scheduled.dependencies and cluster.urn in scheduled.dependencies
    # the same Cluster without its dependencies: the CRD is not known to be installed before it
    detached = [
        completeness.Resource(r.urn, r.type, r.name, r.custom, r.inputs, None, ())
        if r.urn == cluster.urn
        else r
        for r in resources
    ]
    found = completeness.check(detached, registry_mirror=f"https://{MIRROR}")
    (crd,) = [f for f in found if f.kind == "crd"]
    assert crd.resource.startswith("Cluster sovereign-memory/memory")
    assert "cloudnative-pg" in crd.missing and "not among its dependencies" in crd.missing


def _with_cluster_spec(resources: list[completeness.Resource], change: Any) -> list[completeness.Resource]:
    out = []
    for r in resources:
        if r.type == "kubernetes:postgresql.cnpg.io/v1:Cluster":
            inputs = copy.deepcopy(dict(r.inputs))
            change(inputs["spec"])
            r = completeness.Resource(r.urn, r.type, r.name, r.custom, inputs, r.parent, r.dependencies)
        out.append(r)
    return out


def test_the_check_follows_the_clusters_storage_class_secrets_and_image(prod: planner.Plan) -> None:
    resources = planner.completeness_view(prod.resources)

    def break_it(spec: dict[str, Any]) -> None:
        spec["storage"]["storageClass"] = "fast-unencrypted"
        spec["backup"]["barmanObjectStore"]["s3Credentials"]["accessKeyId"]["name"] = "nobody-made-this"
        spec["imageName"] = "ghcr.io/cloudnative-pg/postgresql:15.19-system-bookworm"

    found = completeness.check(_with_cluster_spec(resources, break_it), registry_mirror=f"https://{MIRROR}")
    kinds = sorted(f.kind for f in found)
    assert kinds == ["image", "reference", "storage-class"], [str(f) for f in found]
    assert any("fast-unencrypted" in f.missing for f in found)
    assert any("nobody-made-this" in f.missing and "s3Credentials.accessKeyId" in f.missing for f in found)


def test_the_cluster_runs_pgvector_encrypted_tls_and_backs_up_to_the_eu_bucket(prod: planner.Plan) -> None:
    spec = one(prod, "Cluster", "memory")["spec"]
    assert spec["instances"] == 3
    assert spec["imageName"].startswith(
        f"{MIRROR}/ghcr.io/cloudnative-pg/postgresql:15.19-202608170814-system-bookworm@sha256:"
    )
    assert spec["enableSuperuserAccess"] is False
    assert spec["bootstrap"]["initdb"]["postInitApplicationSQL"] == [
        "CREATE EXTENSION IF NOT EXISTS vector",
        # what an erasure's pg_switch_wal() and CHECKPOINT need (gateway/memory/rights.py)
        "GRANT EXECUTE ON FUNCTION pg_switch_wal() TO gateway",
        "GRANT pg_checkpoint TO gateway",
    ]
    assert spec["bootstrap"]["initdb"]["secret"] == {"name": "memory-gateway-credentials"}
    owner = one(prod, "Secret", "memory-gateway-credentials")
    assert owner["type"] == "kubernetes.io/basic-auth"  # what bootstrap.initdb.secret requires
    assert owner["stringData"] == {"username": "[secret]", "password": "[secret]"}  # never in the plan
    # encryption at rest: the class hcloud CSI LUKS-encrypts with the passphrase Secret
    assert spec["storage"]["storageClass"] == "hcloud-volumes-encrypted"
    (sc,) = [o for o in objects(prod, "StorageClass") if o["metadata"]["name"] == "hcloud-volumes-encrypted"]
    assert sc["provisioner"] == "csi.hetzner.cloud" and sc["reclaimPolicy"] == "Retain"
    assert sc["parameters"] == {
        "csi.storage.k8s.io/node-publish-secret-name": "hcloud-volumes-luks",
        "csi.storage.k8s.io/node-publish-secret-namespace": "kube-system",
    }
    assert set(one(prod, "Secret", "hcloud-volumes-luks", "kube-system")["stringData"]) == {
        "encryption-passphrase"
    }
    # TLS: the operator uses our server certificate; clients without TLS are rejected
    assert spec["certificates"]["serverTLSSecret"] == "memory-server-tls"
    assert "memory-rw.sovereign-memory.svc" in spec["certificates"]["serverAltDNSNames"]
    assert spec["postgresql"]["pg_hba"][0] == "hostnossl all all all reject"
    # backups: WAL archive and base backups to the EU bucket, SSE, the configured retention
    store = spec["backup"]["barmanObjectStore"]
    assert store["destinationPath"] == "s3://sovereign-memory-backups-eu-central/memory/"
    assert store["endpointURL"] == "https://fsn1.your-objectstorage.com"
    assert store["wal"]["encryption"] == store["data"]["encryption"] == "AES256"
    assert spec["backup"]["retentionPolicy"] == "30d"
    scheduled = one(prod, "ScheduledBackup", "memory-daily")["spec"]
    assert scheduled["method"] == "barmanObjectStore" and len(scheduled["schedule"].split()) == 6


def test_the_retention_follows_the_config() -> None:
    data = with_digests("eu-central-prod")
    data["platform"]["memory_store"]["backup_retention_days"] = 7
    spec = one(plan_of(data, stack="eu-central-prod"), "Cluster", "memory")["spec"]
    assert spec["backup"]["retentionPolicy"] == "7d"


def test_the_gateway_gets_the_dsn_as_a_file_never_in_its_configmap(prod: planner.Plan) -> None:
    settings = yaml.safe_load(one(prod, "ConfigMap", "gateway-config")["data"]["gateway.yaml"])
    assert settings["memory"] == {"dsn_file": "/etc/sovereign/memory/dsn", "dimensions": 1024}  # bge-m3
    pod = one(prod, "StatefulSet", "gateway")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["memory-dsn"]["secret"]["secretName"] == "memory-store-dsn"
    assert volumes["memory-ca"]["configMap"]["name"] == "memory-store-ca"
    (gateway,) = [c for c in pod["containers"] if c["name"] == "gateway"]
    mounts = {m["name"]: m for m in gateway["volumeMounts"]}
    assert mounts["memory-dsn"]["mountPath"] == "/etc/sovereign/memory" and mounts["memory-dsn"]["readOnly"]
    assert one(prod, "Secret", "memory-store-dsn", "sovereign-gateway")["stringData"] == {"dsn": "[secret]"}
    # the DSN verifies the server against the CA mounted beside it
    assert ms.dsn("pw").endswith("?sslmode=verify-full&sslrootcert=/etc/sovereign/memory-ca/ca.crt")
    assert ms.dsn("pw").startswith("postgresql://gateway:pw@memory-rw.sovereign-memory.svc:5432/memory")


def test_without_the_store_nothing_of_it_is_deployed() -> None:
    data = with_digests("eu-central-prod")
    data["platform"]["memory_store"] = {"enabled": False}
    plan = plan_of(data, stack="eu-central-prod")
    kinds = {(o["kind"], o["metadata"]["name"]) for o in plan.kubernetes_objects()}
    assert ("Cluster", "memory") not in kinds and ("Namespace", "sovereign-memory") not in kinds
    assert not [r for r in plan.helm_releases() if r["name"] == "cloudnative-pg"]
    settings = yaml.safe_load(one(plan, "ConfigMap", "gateway-config")["data"]["gateway.yaml"])
    assert "memory" not in settings


# --- network policies: the store admits the gateway only -------------------------------------


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _peer_admits(peer: Mapping[str, Any], target_ns: str, source_ns: str, labels: Mapping[str, str]) -> bool:
    """NetworkPolicy peer semantics (networking.k8s.io/v1 NetworkPolicyPeer): a namespaceSelector
    with a podSelector selects those pods in those namespaces; a podSelector alone, pods of the
    policy's own namespace; an ipBlock, addresses (never a pod here)."""
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer:
        ns_ok = _selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": source_ns})
    else:
        ns_ok = source_ns == target_ns
    return ns_ok and _selects(peer.get("podSelector") or {}, labels)


def admitted(plan: planner.Plan, source_ns: str, labels: Mapping[str, str], port: int) -> bool:
    """Whether a pod (namespace, labels) may open *port* on the store's instances: some policy
    selecting them has an ingress rule admitting it (policies are additive; default-deny admits none)."""
    target = {ms.CLUSTER_LABEL: ms.CLUSTER}
    for policy in objects(plan, "NetworkPolicy", "sovereign-memory"):
        spec = policy["spec"]
        if not _selects(spec["podSelector"], target) or "Ingress" not in spec["policyTypes"]:
            continue
        for rule in spec.get("ingress", []):
            ports = {p["port"] for p in rule.get("ports", [])}
            if port in ports and any(
                _peer_admits(peer, "sovereign-memory", source_ns, labels) for peer in rule["from"]
            ):
                return True
    return False


GATEWAY_POD = {"app.kubernetes.io/name": "gateway", "app.kubernetes.io/component": "gateway"}


@pytest.mark.parametrize(
    ("source_ns", "labels", "port", "expected"),
    [
        ("sovereign-gateway", GATEWAY_POD, 5432, True),
        ("sovereign-gateway", {"app.kubernetes.io/name": "not-the-gateway"}, 5432, False),
        ("sovereign-inference", {"app.kubernetes.io/name": "gateway"}, 5432, False),  # another namespace
        ("monitoring", {"app.kubernetes.io/name": "prometheus"}, 5432, False),
        ("kube-system", {"app.kubernetes.io/name": "rke2-ingress-nginx"}, 5432, False),
        ("cnpg-system", {"app.kubernetes.io/name": "cloudnative-pg"}, 5432, False),  # status only
        ("cnpg-system", {"app.kubernetes.io/name": "cloudnative-pg"}, 8000, True),
        ("sovereign-gateway", GATEWAY_POD, 8000, False),
        ("sovereign-memory", {"cnpg.io/cluster": "memory"}, 5432, True),  # replication
        ("sovereign-memory", {"cnpg.io/cluster": "another"}, 5432, False),
    ],
)
def test_the_store_accepts_the_gateway_only(
    prod: planner.Plan, source_ns: str, labels: dict[str, str], port: int, expected: bool
) -> None:
    assert admitted(prod, source_ns, labels, port) is expected


def test_the_store_reaches_only_its_peers_the_api_dns_and_the_backup_bucket(prod: planner.Plan) -> None:
    (policy,) = [
        p
        for p in objects(prod, "NetworkPolicy", "sovereign-memory")
        if p["metadata"]["name"] == "memory-store"
    ]
    egress = policy["spec"]["egress"]
    public = [rule for rule in egress if any("ipBlock" in p and not p["ipBlock"]["cidr"].startswith("10.")
                                             for p in rule["to"])]  # fmt: skip
    # the declared destination serving endpoints.object_storage (fsn1), HTTPS only
    assert public == [
        {"to": [{"ipBlock": {"cidr": "192.0.2.16/28"}}], "ports": [{"protocol": "TCP", "port": 443}]}
    ]
    in_cluster = {
        (str(peer.get("podSelector", {}).get("matchLabels")), port["port"])
        for rule in egress
        for peer in rule["to"]
        if "podSelector" in peer
        for port in rule["ports"]
    }
    assert in_cluster == {("{'cnpg.io/cluster': 'memory'}", 5432), ("{'k8s-app': 'kube-dns'}", 53)}
    assert all(rule.get("to") for rule in egress)  # no rule without peers (that would reach everything)


def test_the_store_namespaces_enforce_restricted(prod: planner.Plan) -> None:
    for name in ("cnpg-system", "sovereign-memory"):
        (ns,) = [o for o in objects(prod, "Namespace") if o["metadata"]["name"] == name]
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# --- the Cluster against the pinned chart's CRD schemas (double strictness) -------------------


def _strict(schema: Any) -> Any:
    """The CRD's structural schema with unknown fields refused, as the API server does with
    fieldValidation=Strict (kubectl --validate=strict): every object schema without
    x-kubernetes-preserve-unknown-fields or additionalProperties gets additionalProperties false."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            out.get("type") == "object"
            and "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def cnpg_schemas(prod: planner.Plan) -> dict[str, Any]:
    """The openAPIV3Schema of each CRD the pinned cloudnative-pg chart renders (templates/crds/crds.yaml
    at cloudnative-pg-v0.27.1), by kind."""
    folder = os.environ.get(cr.CHART_DIR_ENV)
    (release,) = [r for r in cr.releases(prod) if r.chart_name == "cloudnative-pg"]
    if not folder:
        pytest.skip(
            f"{cr.CHART_DIR_ENV} is not set: `{cr.pull_command(release)}` into a folder, point it there"
        )
    path = cr.chart_path(folder, release)
    if path is None:
        pytest.skip(f"cloudnative-pg-{release.version}(.tgz) is not in {folder}: {cr.pull_command(release)}")
    rendered = cr.render(path, release.values, name=release.name, namespace=release.namespace)
    schemas = {}
    for crd in rendered.of_kind("CustomResourceDefinition") + rendered.crds:
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        schemas[crd["spec"]["names"]["kind"]] = _strict(version["schema"]["openAPIV3Schema"])
    return schemas


@pytest.mark.parametrize(("kind", "name"), [("Cluster", "memory"), ("ScheduledBackup", "memory-daily")])
def test_the_custom_resources_match_the_pinned_crd(
    prod: planner.Plan, cnpg_schemas: dict[str, Any], kind: str, name: str
) -> None:
    obj = one(prod, kind, name)
    jsonschema.validate(obj, cnpg_schemas[kind])


@pytest.mark.parametrize(
    "breakage",
    [
        lambda s: s["bootstrap"]["initdb"].update(postInitSQLs=["CREATE EXTENSION vector"]),  # a typo'd key
        lambda s: s["backup"]["barmanObjectStore"]["wal"].update(encryption="aes256"),  # not an enum value
        lambda s: s.update(instances=0),  # below the schema's minimum
    ],
)
def test_the_crd_schema_refuses_a_broken_cluster(
    prod: planner.Plan, cnpg_schemas: dict[str, Any], breakage: Any
) -> None:
    broken = copy.deepcopy(one(prod, "Cluster", "memory"))
    breakage(broken["spec"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, cnpg_schemas["Cluster"])


# --- config: refusals with clear messages ------------------------------------------------------


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(config.StackConfigError) as info:
        config.parse("test-stack", data, "test")
    return [str(p) for p in info.value.problems]


def test_a_backup_endpoint_outside_the_eu_is_refused() -> None:
    data = sections("eu-central-prod")
    data["platform"]["memory_store"]["backup_endpoint"] = "https://s3.us-east-1.amazonaws.com"
    (problem,) = problems_of(data)
    assert problem.startswith("sovereign-llm:platform.memory_store.backup_endpoint: ")
    assert "not on the EU allowlist" in problem and "GDPR Art. 44" in problem
    assert "amazonaws" not in problem  # the value is not echoed


def test_a_plain_http_backup_endpoint_is_refused() -> None:
    data = sections("eu-central-prod")
    data["platform"]["memory_store"]["backup_endpoint"] = "http://fsn1.your-objectstorage.com"
    (problem,) = problems_of(data)
    assert "platform.memory_store.backup_endpoint" in problem and "https://" in problem


@pytest.mark.parametrize(
    ("stack", "instances", "expected"),
    [
        ("eu-central-prod", 2, "region.environment 'prod' needs at least 3"),
        ("eu-central-prod", 0, "greater than or equal to 1"),
        ("eu-central-prod", 10, "less than or equal to 9"),
        ("eu-north-dr", 3, "more than the cluster's cloud nodes"),  # 2 nodes in the DR example
    ],
)
def test_instances_out_of_range_are_refused(stack: str, instances: int, expected: str) -> None:
    data = sections(stack)
    data["platform"]["memory_store"]["instances"] = instances
    (problem,) = problems_of(data)
    assert "platform.memory_store.instances" in problem and expected in problem


def test_a_dr_region_may_run_fewer_instances_than_prod() -> None:
    data = sections("eu-north-dr")
    data["platform"]["memory_store"]["instances"] = 1
    assert config.parse("eu-north-dr", data, "test").platform.memory_store.instances == 1


def test_an_enabled_store_needs_its_backup_bucket() -> None:
    data = sections("eu-central-prod")
    del data["platform"]["memory_store"]["backup_bucket"]
    (problem,) = problems_of(data)
    assert "platform.memory_store.backup_bucket: missing" in problem and "s3://" in problem


def test_the_backup_key_is_a_stack_secret_never_a_section() -> None:
    assert {"memory_backup_s3_access_key", "memory_backup_s3_secret_key"} <= set(config.SECRET_KEYS)


# --- evidence: the data-flow map, the residency table and the check ----------------------------


def _context(plan: planner.Plan, data: dict[str, Any]) -> Any:
    from infra.evidence import claims

    return claims.Context("eu-central-prod", data, config.parse("eu-central-prod", data, "test"), plan)


def test_the_evidence_draws_the_store_and_its_backups(prod: planner.Plan) -> None:
    from infra.evidence import claims, model

    data = with_digests("eu-central-prod")
    ctx = _context(prod, data)
    hops = {(h.source, h.target): h for h in model.hops(ctx)}
    to_store = hops[("gateway", "memory store")]
    assert to_store.carries == "tokenised" and "pseudonym" in to_store.what and "vectors" in to_store.what
    backups = hops[("memory store", "memory backup bucket")]
    assert "30 days" in backups.what and "AES256" in backups.transport and not backups.outside
    rows = {r.name: r for r in model.residency_from_plan(prod, data)}
    assert rows["platform.memory_store.backup_bucket"].inside
    assert claims.run("memory-store-encrypted-and-backed-up-in-eu", ctx).status == claims.HOLDS


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda s: s["storage"].update(storageClass="hcloud-volumes"), "LUKS-encrypted"),
        (lambda s: s["backup"]["barmanObjectStore"]["data"].pop("encryption"), "server-side encrypted"),
        (lambda s: s["backup"].update(retentionPolicy="90d"), "retentionPolicy"),
    ],
)
def test_the_check_fails_a_store_that_lacks_what_it_claims(
    prod: planner.Plan, change: Any, reason: str
) -> None:
    from infra.evidence import claims

    objects = copy.deepcopy(prod.kubernetes_objects())
    for o in objects:
        if o["kind"] == "Cluster":
            change(o["spec"])
    plan = copy.copy(prod)
    plan.kubernetes_objects = lambda: objects  # type: ignore[method-assign]
    verdict = claims.run(
        "memory-store-encrypted-and-backed-up-in-eu", _context(plan, with_digests("eu-central-prod"))
    )
    assert verdict.status == claims.FAILS and reason in verdict.reason


def test_two_embedding_lengths_for_one_store_are_refused() -> None:
    data = sections("eu-central-prod")
    models = data["platform"]["models"]
    (embed,) = [m for m in models if m.get("kind") == "embeddings"]
    second = {**embed, "name": "other-embed", "aliases": [], "dimensions": embed["dimensions"] // 2}
    models.append(second)
    problems = [p for p in problems_of(data) if "platform.models:" in p]
    assert any("different lengths" in p and "memory.dimensions" in p for p in problems), problems


def test_the_gateway_store_gets_the_embedding_models_length() -> None:
    from infra.k8s_platform.gateway import gateway_settings

    cfg = config.parse("eu-central-prod", sections("eu-central-prod"), "test")
    (embed,) = [m for m in cfg.platform.models if m.kind == "embeddings"]
    assert gateway_settings(cfg)["memory"]["dimensions"] == embed.dimensions != 384


def test_a_store_without_an_embedding_model_needs_its_length() -> None:
    data = sections("eu-north-dr")  # no models: a DR region
    data["platform"]["memory_store"].pop("dimensions")
    (problem,) = problems_of(data)
    assert "platform.memory_store.dimensions" in problem and "missing" in problem
    from infra.k8s_platform.gateway import gateway_settings

    cfg = config.parse("eu-north-dr", sections("eu-north-dr"), "test")
    assert gateway_settings(cfg)["memory"]["dimensions"] == 1024


def test_a_store_length_other_than_the_models_is_refused() -> None:
    data = sections("eu-central-prod")
    data["platform"]["memory_store"]["dimensions"] = 384
    (problem,) = problems_of(data)
    assert "platform.memory_store.dimensions" in problem and "1024" in problem
