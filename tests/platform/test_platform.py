"""The platform layer under Pulumi's mocks: isolation, OpenBao, vLLM, GPU support, the gateway,
observability — and every rendered manifest against the Kubernetes OpenAPI schema."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.settings import GatewaySettings
from infra import plan as planner
from infra.config import Rke2Config
from infra.k8s_platform.openbao import ca_trust_file
from infra.policy.charts import chart_name
from tests import pki
from tests.infra.support import plan_of, sections

# no CRD schemas offline: checked field by field below (Plan: against its pinned CRD in
# test_upgrades.py; HelmChartConfig: against the chart's values in test_ingress.py; PrometheusRule:
# with the real promtool in test_alert_rules.py; CloudNativePG's Cluster and ScheduledBackup: against
# the pinned chart's CRDs in test_memory_store.py)
CRD_KINDS = {"ScaledObject", "ServiceMonitor", "Plan", "HelmChartConfig", "PrometheusRule", "Cluster",
             "ScheduledBackup"}  # fmt: skip


@pytest.fixture(scope="module")
def prod() -> planner.Plan:
    return plan_of(sections("eu-central-prod"), stack="eu-central-prod")


def objects(plan: planner.Plan, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
    return [
        o
        for o in plan.kubernetes_objects()
        if o["kind"] == kind and (namespace is None or o["metadata"].get("namespace") == namespace)
    ]


def one(plan: planner.Plan, kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects(plan, kind) if o["metadata"]["name"] == name]
    return found


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def test_every_manifest_matches_the_kubernetes_schema_of_the_rke2_release(prod: planner.Plan) -> None:
    minor = Rke2Config().version.removeprefix("v").split(".")
    version = f"{minor[0]}.{minor[1]}"
    checked = 0
    for obj in prod.kubernetes_objects():
        if obj["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(obj, version, strict=True)
        checked += 1
    assert checked >= 25


def test_schema_validation_catches_a_mistake(prod: planner.Plan) -> None:
    deployment = one(prod, "StatefulSet", "gateway")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["resource"] = {}  # typo for "resources"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.33", strict=True)


def test_namespaces_enforce_restricted_except_the_gpu_operator_and_the_upgrades(prod: planner.Plan) -> None:
    levels = {
        o["metadata"]["name"]: o["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
        for o in objects(prod, "Namespace")
    }
    assert levels.pop("gpu-operator") == "privileged"
    assert levels.pop("system-upgrade") == "privileged"  # the upgrade Jobs replace RKE2 on the host
    # + monitoring (Prometheus), cnpg-system and sovereign-memory (the memory store)
    assert set(levels.values()) == {"restricted"} and len(levels) == 7


def test_every_pod_spec_is_restricted_compliant(prod: planner.Plan) -> None:
    for kind in ("Deployment", "StatefulSet", "Job"):
        for obj in objects(prod, kind):
            spec = obj["spec"]["template"]["spec"]
            assert spec["securityContext"]["runAsNonRoot"] is True
            assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
            for c in spec["containers"] + spec.get("initContainers", []):
                sc = c["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
                assert "resources" in c and c["resources"]["limits"]
            assert not any("hostPath" in v for v in spec.get("volumes", []))


def _policies_for(plan: planner.Plan, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    return [p for p in objects(plan, "NetworkPolicy", namespace) if selects(p["spec"]["podSelector"], labels)]


def test_inference_pods_have_no_egress_and_only_the_gateway_as_client(prod: planner.Plan) -> None:
    vllm = one(prod, "Deployment", "vllm-llama31-8b-awq")
    pod_labels = vllm["spec"]["template"]["metadata"]["labels"]
    policies = _policies_for(prod, "sovereign-inference", pod_labels)
    assert any(
        p["metadata"]["name"] == "default-deny" and "Egress" in p["spec"]["policyTypes"] for p in policies
    )
    assert all(not p["spec"].get("egress") for p in policies)  # no egress rule anywhere: none allowed
    sources = [peer for p in policies for rule in p["spec"].get("ingress", []) for peer in rule["from"]]
    namespaces = {s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for s in sources}
    assert namespaces == {"sovereign-gateway", "monitoring"}
    gateway_peer = next(s for s in sources if "podSelector" in s)
    assert gateway_peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "gateway"}


def _gateway_egress(plan: planner.Plan) -> tuple[set[tuple[str, int]], list[dict[str, Any]]]:
    """(in-cluster (namespace, port) targets, ipBlock rules) of the gateway pods."""
    gw = one(plan, "StatefulSet", "gateway")
    policies = _policies_for(plan, "sovereign-gateway", gw["spec"]["template"]["metadata"]["labels"])
    egress = [rule for p in policies for rule in p["spec"].get("egress", [])]
    targets = {
        (peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"], port["port"])
        for rule in egress
        for peer in rule["to"]
        if "namespaceSelector" in peer
        for port in rule["ports"]
    }
    return targets, [rule for rule in egress if any("ipBlock" in peer for peer in rule["to"])]


def test_gateway_may_reach_only_inference_openbao_and_dns(prod: planner.Plan) -> None:
    targets, outside = _gateway_egress(prod)
    # and the memory store's PostgreSQL (platform.memory_store.enabled in the example)
    assert targets == {
        ("sovereign-inference", 8000), ("openbao", 8200), ("kube-system", 53), ("sovereign-memory", 5432)
    }  # fmt: skip
    # outside the cluster: only HTTPS for the audit-ship sidecar, to the addresses of the declared
    # destination serving the archive's endpoint (fsn1 object storage) and nowhere else (issue #23:
    # no longer any public IPv4)
    (rule,) = outside
    assert rule["ports"] == [{"protocol": "TCP", "port": 443}]
    assert [peer["ipBlock"] for peer in rule["to"]] == [{"cidr": "192.0.2.16/28"}]


def test_the_audit_ship_sidecar_sends_sealed_segments_to_the_archive(prod: planner.Plan) -> None:
    spec = one(prod, "StatefulSet", "gateway")["spec"]["template"]["spec"]
    gateway, shipper = spec["containers"]
    assert shipper["name"] == "audit-ship" and shipper["image"] == gateway["image"]
    args = shipper["args"]
    assert args[:3] == ["audit", "ship", "/var/lib/sovereign/audit/audit.jsonl"] and "--prune" in args
    mounts = {m["name"]: m["mountPath"] for m in shipper["volumeMounts"]}
    assert mounts["state"] == "/var/lib/sovereign"  # the same volume as the gateway's trail
    settings = GatewaySettings(
        **yaml.safe_load(one(prod, "ConfigMap", "gateway-config")["data"]["gateway.yaml"])
    )
    assert settings.audit.archive is not None
    assert settings.audit.archive.url == "s3://sovereign-audit-eu-central/gateway/"
    assert (settings.audit.archive.lock_mode, settings.audit.archive.retention_days) == ("COMPLIANCE", 3650)
    assert settings.audit.archive.endpoint == "https://fsn1.your-objectstorage.com"


def test_without_an_audit_archive_the_gateway_has_no_way_out() -> None:
    config = sections("eu-central-prod")
    config["storage"] = {}
    config["platform"]["memory_store"] = {"enabled": False}
    plan = plan_of(config, stack="eu-central-prod")
    targets, outside = _gateway_egress(plan)
    assert targets == {("sovereign-inference", 8000), ("openbao", 8200), ("kube-system", 53)}
    assert outside == []
    spec = one(plan, "StatefulSet", "gateway")["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["gateway"]


def test_vllm_deployment(prod: planner.Plan) -> None:
    spec = one(prod, "Deployment", "vllm-llama31-8b-awq")["spec"]["template"]["spec"]
    (vllm,) = spec["containers"]
    assert spec["runtimeClassName"] == "nvidia"
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == 1
    args = vllm["args"]
    for flag, value in (
        ("--quantization", "awq_marlin"),
        ("--max-model-len", "8192"),
        ("--gpu-memory-utilization", "0.9"),
        ("--served-model-name", "llama31-8b-awq"),
    ):
        assert args[args.index(flag) + 1] == value
    env = {e["name"]: e["value"] for e in vllm["env"]}
    assert env["HF_HUB_OFFLINE"] == "1"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = vllm[probe]["exec"]["command"]
        assert command[:2] == ["python3", "-c"] and "https://127.0.0.1:8000/health" in command[2]
    shm = next(v for v in spec["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in vllm["volumeMounts"]
    (verify,) = spec["initContainers"]
    assert verify["args"][:2] == ["weights", "verify"]
    weights = next(v for v in spec["volumes"] if v["name"] == "weights")
    assert weights["persistentVolumeClaim"]["readOnly"] is True


def test_weights_come_from_eu_object_storage_through_the_fetch_job(prod: planner.Plan) -> None:
    job = one(prod, "Job", "weights-fetch-llama31-8b-awq")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["weights", "fetch"]
    assert args[args.index("--endpoint") + 1] == "https://fsn1.your-objectstorage.com"
    assert args[args.index("--source") + 1] == "s3://sovereign-models/llama-3.1-8b-instruct-awq/"
    fetch_labels = job["spec"]["template"]["metadata"]["labels"]
    egress = [
        r
        for p in _policies_for(prod, "sovereign-inference", fetch_labels)
        for r in p["spec"].get("egress", [])
    ]
    https = next(r for r in egress if r["ports"] == [{"protocol": "TCP", "port": 443}])
    # the declared fsn1 object storage's addresses only (egress.destinations objectstorage-fsn1)
    assert [peer["ipBlock"] for peer in https["to"]] == [{"cidr": "192.0.2.16/28"}]


def test_with_public_keys_the_fetch_job_requires_a_signed_manifest(prod: planner.Plan) -> None:
    config = sections("eu-central-prod")
    del config["storage"]["manifest_public_keys"]  # without a key: the manifest's SHA-256 only
    unsigned = one(plan_of(config, stack="eu-central-prod"), "Job", "weights-fetch-llama31-8b-awq")
    assert "--public-key" not in unsigned["spec"]["template"]["spec"]["containers"][0]["args"]
    public = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="  # RFC 8032 test 1's public key
    config["storage"] = {**config["storage"], "manifest_public_keys": {"1": public}}
    signed = plan_of(config, stack="eu-central-prod")
    spec = one(signed, "Job", "weights-fetch-llama31-8b-awq")["spec"]["template"]["spec"]
    args = spec["containers"][0]["args"]
    key_file = args[args.index("--public-key") + 1]
    (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "manifest-key"]
    assert key_file.startswith(mount["mountPath"] + "/")
    config_map = one(signed, "ConfigMap", "manifest-key-llama31-8b-awq")
    assert yaml.safe_load(config_map["data"][key_file.rsplit("/", 1)[1]]) == {"1": public}


def test_model_pdb_and_queue_autoscaling(prod: planner.Plan) -> None:
    assert one(prod, "PodDisruptionBudget", "vllm-llama31-8b-awq")["spec"]["maxUnavailable"] == 1
    scaler = one(prod, "ScaledObject", "vllm-llama31-8b-awq")
    assert scaler["apiVersion"] == "keda.sh/v1alpha1"
    (trigger,) = scaler["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert "vllm:num_requests_waiting" in trigger["metadata"]["query"]
    assert trigger["metadata"]["threshold"] == "5"
    # eu-central-prod: one replica (its weights volume is one GEX44's disk, one GPU: config.py)
    assert (scaler["spec"]["minReplicaCount"], scaler["spec"]["maxReplicaCount"]) == (1, 1)


def test_gateway_deployment_and_its_settings(prod: planner.Plan) -> None:
    cm = one(prod, "ConfigMap", "gateway-config")
    settings = GatewaySettings(**yaml.safe_load(cm["data"]["gateway.yaml"]))  # the gateway's own model
    assert settings.openbao.kubernetes_role == "sovereign-gateway"
    assert settings.openbao.address == "https://openbao.openbao.svc:8200"
    upstream = settings.upstreams["llama31-8b-awq"]
    assert upstream.url.startswith("https://vllm-llama31-8b-awq.sovereign-inference.svc")
    assert upstream.tls is not None and str(upstream.tls.cert_file).startswith("/etc/sovereign/upstream-tls/")
    dep = one(prod, "StatefulSet", "gateway")
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "gateway"
    assert one(prod, "HorizontalPodAutoscaler", "gateway")["spec"]["minReplicas"] == 2
    assert one(prod, "PodDisruptionBudget", "gateway")["spec"]["minAvailable"] == 1


def test_openbao_ha_raft_tls_and_audit(prod: planner.Plan) -> None:
    (release,) = [r for r in prod.helm_releases() if r["name"] == "openbao"]
    assert (chart_name(release["chart"]), release["version"]) == ("openbao", "0.19.1")
    server = release["values"]["server"]
    assert server["ha"]["enabled"] is True and server["ha"]["replicas"] == 3
    config = server["ha"]["raft"]["config"]
    assert 'storage "raft"' in config and config.count("retry_join") == 3
    assert 'audit "file"' in config and "tls_cert_file" in config
    assert release["values"]["global"]["tlsDisable"] is False
    assert server["auditStorage"]["enabled"] is True


def test_openbao_configuration_by_pulumi_vault(prod: planner.Plan) -> None:
    keys = {
        r.inputs["name"]: r.inputs for r in prod.of_type("vault:transit/secretBackendKey:SecretBackendKey")
    }
    assert keys["tenant-data"]["derived"] is True and keys["tenant-data"]["exportable"] is False
    assert "audit-hmac" in keys
    mounts = {r.inputs["path"]: r.inputs for r in prod.of_type("vault:index/mount:Mount")}
    assert mounts["kv"]["options"] == {"version": "2"} and mounts["pki"]["type"] == "pki"
    roles = prod.of_type("vault:kubernetes/authBackendRole:AuthBackendRole")
    (role,) = [r for r in roles if r.inputs["roleName"] == "sovereign-gateway"]  # not the snapshot job's
    assert role.inputs["boundServiceAccountNames"] == ["gateway"]
    assert role.inputs["boundServiceAccountNamespaces"] == ["sovereign-gateway"]
    assert role.inputs["tokenPolicies"] == ["sovereign-gateway"]
    policies = {r.inputs["name"]: r.inputs["policy"] for r in prod.of_type("vault:index/policy:Policy")}
    assert 'path "transit/decrypt/audit-hmac"' in policies["sovereign-auditor"]
    assert (
        'path "transit/decrypt/audit-hmac"' not in policies["sovereign-gateway"]
    )  # cannot unwrap audit keys
    # the kill switch: the gateway reads its state, only the operators' policy writes it
    assert 'path "kv/data/sovereign/incident" { capabilities = ["read"] }' in policies["sovereign-gateway"]
    assert (
        '"update"' in policies["sovereign-incident"]
        and "kv/data/sovereign/incident" in policies["sovereign-incident"]
    )
    pki_roles = {
        r.inputs["name"] for r in prod.of_type("vault:pkiSecret/secretBackendRole:SecretBackendRole")
    }
    assert pki_roles == {"gateway-client", "inference-server", "metrics-client", "gateway-ingress"}


def test_gpu_operator_leaves_driver_and_toolkit_to_ansible_and_uses_rke2_containerd(
    prod: planner.Plan,
) -> None:
    (release,) = [r for r in prod.helm_releases() if r["name"] == "gpu-operator"]
    values = release["values"]
    assert values["driver"]["enabled"] is False
    assert values["toolkit"]["enabled"] is False  # roles/nvidia_gpu installs it on the host
    env = {e["name"]: e["value"] for e in values["toolkit"]["env"]}
    assert env["CONTAINERD_SOCKET"] == "/run/k3s/containerd/containerd.sock"
    assert env["CONTAINERD_CONFIG"].startswith("/var/lib/rancher/rke2/")
    assert values["dcgmExporter"]["enabled"] is True


def test_service_monitors_for_gateway_vllm_and_openbao(prod: planner.Plan) -> None:
    monitors = {o["metadata"]["name"]: o for o in objects(prod, "ServiceMonitor")}
    assert set(monitors) == {"gateway", "vllm", "openbao"}
    for m in monitors.values():
        assert m["apiVersion"] == "monitoring.coreos.com/v1" and m["spec"]["endpoints"][0]["path"]


def test_platform_resources_use_the_cluster_provider(prod: planner.Plan) -> None:
    (provider,) = prod.of_type("pulumi:providers:kubernetes")
    assert provider.parent_type == "sovereign:platform:PlatformLayer"
    assert all(r.parent_type and r.parent_type.startswith("sovereign:") for r in prod.custom())


def test_phase_one_installs_openbao_but_nothing_that_needs_its_keys() -> None:
    """eu-north-dr is a new region (platform.openbao.initialised left false)."""
    dr = plan_of(sections("eu-north-dr"), stack="eu-north-dr")
    assert "openbao" in {r["name"] for r in dr.helm_releases()}
    assert not [r for r in dr.custom() if r.type.startswith("vault:")]
    # the system-upgrade-controller needs no key: it comes in phase 1 (RKE2 upgrades from day one)
    keyless = [o["metadata"]["name"] for o in objects(dr, "Deployment")]
    assert keyless == ["system-upgrade-controller"]
    assert objects(dr, "StatefulSet") == objects(dr, "ServiceMonitor") == []
    assert dr.outputs["gateway_service"] == "(phase 2: after OpenBao is initialised)"
    assert {o["kind"] for o in dr.kubernetes_objects()} >= {"Namespace", "NetworkPolicy", "Secret"}


def test_phase_two_without_models_runs_the_gateway_with_no_upstream() -> None:
    data = sections("eu-north-dr")
    data["platform"] = {"openbao": {"initialised": True, "replicas": 1}}  # two nodes: one member
    dr = plan_of(data, stack="eu-north-dr")
    assert [o["metadata"]["name"] for o in objects(dr, "StatefulSet")] == ["gateway"]
    assert yaml.safe_load(one(dr, "ConfigMap", "gateway-config")["data"]["gateway.yaml"])["upstreams"] == {}


def test_gateway_and_vllm_speak_mtls_with_certificates_from_openbao(prod: planner.Plan) -> None:
    vllm = one(prod, "Deployment", "vllm-llama31-8b-awq")["spec"]["template"]
    (container,) = vllm["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--ssl-cert-reqs") + 1] == "2"  # ssl.CERT_REQUIRED: no client certificate, no TLS
    for flag in ("--ssl-certfile", "--ssl-keyfile", "--ssl-ca-certs"):
        assert args[args.index(flag) + 1].startswith("/etc/vllm-tls/")
    assert {"name": "tls", "secret": {"secretName": "vllm-llama31-8b-awq-tls"}} in vllm["spec"]["volumes"]
    assert "sovereign-llm.io/server-cert-serial" in vllm["metadata"]["annotations"]
    certs = {
        r.inputs["commonName"]: r.inputs
        for r in prod.of_type("vault:pkiSecret/secretBackendCert:SecretBackendCert")
    }
    server = certs["vllm-llama31-8b-awq.sovereign-inference.svc"]
    assert server["name"] == "inference-server" and server["autoRenew"] is True
    assert server["ipSans"] == ["127.0.0.1"] and server["altNames"] == ["vllm.sovereign-inference.svc"]
    assert certs["gateway.sovereign-gateway.svc"]["name"] == "gateway-client"
    assert certs["prometheus.monitoring.svc"]["name"] == "metrics-client"
    secrets = {o["metadata"]["name"]: o for o in objects(prod, "Secret")}
    assert secrets["gateway-upstream-tls"]["stringData"] == dict.fromkeys(
        ("tls.crt", "tls.key", "ca.crt"), "[secret]"
    )
    gateway_pod = one(prod, "StatefulSet", "gateway")["spec"]["template"]["spec"]
    assert {"name": "upstream-tls", "secret": {"secretName": "gateway-upstream-tls"}} in gateway_pod[
        "volumes"
    ]
    monitor = one(prod, "ServiceMonitor", "vllm")["spec"]["endpoints"][0]
    assert monitor["scheme"] == "https" and monitor["tlsConfig"]["keySecret"]["name"] == "vllm-metrics-client"


def test_gateway_audit_chains_survive_restarts_and_scale_in(prod: planner.Plan) -> None:
    gateway = one(prod, "StatefulSet", "gateway")["spec"]
    assert gateway["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    (claim,) = gateway["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "state"
    mounts = {m["name"]: m["mountPath"] for m in gateway["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["state"] == "/var/lib/sovereign"
    settings = yaml.safe_load(one(prod, "ConfigMap", "gateway-config")["data"]["gateway.yaml"])
    assert settings["audit"]["path"].startswith("/var/lib/sovereign/")
    assert settings["openbao"]["wrapped_keys_dir"].startswith("/var/lib/sovereign/")
    hpa = one(prod, "HorizontalPodAutoscaler", "gateway")["spec"]["scaleTargetRef"]
    assert hpa == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "gateway"}


def test_openbao_provider_verifies_tls_against_the_stacks_own_ca(prod: planner.Plan, tmp_path: Path) -> None:
    (provider,) = prod.of_type("pulumi:providers:vault")
    assert provider.inputs["skipTlsVerify"] in (False, "false")
    assert provider.inputs["caCertFile"].endswith(".sovereign/openbao/eu-central-prod-ca.pem")
    # the file is written from the real certificate at deploy time, never from a plan placeholder
    pem = pki.ca("test").cert_pem().decode()
    assert ca_trust_file("s", "(issued at deploy time)", tmp_path) == str(tmp_path / "s-ca.pem")
    assert not (tmp_path / "s-ca.pem").exists()
    ca_trust_file("s", pem, tmp_path)
    assert (tmp_path / "s-ca.pem").read_text() == pem


def test_the_operators_namespaces_deny_by_default_and_allow_only_their_flows(prod: planner.Plan) -> None:
    """keda, gpu-operator and system-upgrade: default-deny, then the API server, DNS (KEDA), the
    API server's calls into KEDA, the metrics apiserver -> operator gRPC, Prometheus (network_policies.py)."""
    by_ns: dict[str, dict[str, dict[str, Any]]] = {}
    for p in objects(prod, "NetworkPolicy"):
        by_ns.setdefault(p["metadata"]["namespace"], {})[p["metadata"]["name"]] = p["spec"]
    for ns in ("keda", "gpu-operator", "system-upgrade"):
        deny = by_ns[ns]["default-deny"]
        assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    servers = {f"10.20.1.{11 + i}/32" for i in range(3)}

    def cidrs(rules: list[dict[str, Any]], port: int) -> set[str]:
        return {
            peer["ipBlock"]["cidr"]
            for rule in rules
            if any(p["port"] == port for p in rule["ports"])
            for peer in rule["to" if "to" in rule else "from"]
            if "ipBlock" in peer
        }

    api = by_ns["gpu-operator"]["gpu-operator-api"]["egress"]
    assert cidrs(api, 443) == {"10.43.0.1/32"} and cidrs(api, 6443) <= servers | {"10.20.1.0/24"}
    assert by_ns["system-upgrade"]["system-upgrade-controller-api"]["egress"] == api
    assert "ingress" not in by_ns["system-upgrade"]["system-upgrade-controller-api"]
    metrics = by_ns["keda"]["keda-metrics-apiserver"]
    assert cidrs(metrics["ingress"], 6443) >= {"10.42.0.0/16"}
    assert cidrs(by_ns["keda"]["keda-admission-webhooks"]["ingress"], 9443) >= {"10.42.0.0/16"}
    operator = by_ns["keda"]["keda-operator"]
    assert {p["port"] for r in operator["ingress"] for p in r["ports"]} == {9666, 8080}
    assert operator["egress"][0]["ports"] == [{"protocol": "TCP", "port": 9090}]
    dcgm = by_ns["gpu-operator"]["dcgm-exporter-scrape"]
    assert dcgm["podSelector"] == {"matchLabels": {"app": "nvidia-dcgm-exporter"}}
    assert dcgm["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 9400}]
    # no namespace-policy finding for the namespaces this layer owns
    assert not [
        f for f in prod.findings if f.kind == "namespace-policy" and any(n in f.resource for n in by_ns)
    ]


def _peers(rules: list[dict[str, Any]], side: str) -> set[tuple[str | None, str, int]]:
    """(namespace or None for the policy's own, pod selector as text, port) of each peer of *rules*."""
    return {
        (
            (peer.get("namespaceSelector") or {}).get("matchLabels", {}).get("kubernetes.io/metadata.name"),
            str(sorted((peer.get("podSelector") or {}).get("matchLabels", {}).items())),
            port["port"],
        )
        for rule in rules
        for peer in rule[side]
        if "ipBlock" not in peer
        for port in rule["ports"]
    }


def test_monitoring_denies_by_default_and_scrapes_exactly_the_service_monitors_ports(
    prod: planner.Plan,
) -> None:
    """Prometheus reaches each ServiceMonitor's namespace on its port, each of those namespaces lets
    it in on that port, and nothing else; the operator only talks to the API (network_policies.py)."""
    policies = {p["metadata"]["name"]: p["spec"] for p in objects(prod, "NetworkPolicy", "monitoring")}
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    prometheus_pod = {
        "app.kubernetes.io/name": "prometheus",
        "prometheus": "kube-prometheus-stack-prometheus",
    }
    operator_pod = {"app": "kube-prometheus-stack-operator", "release": "kube-prometheus-stack"}
    prometheus = [
        s for s in policies.values() if s["podSelector"] and selects(s["podSelector"], prometheus_pod)
    ]
    operator = [s for s in policies.values() if s["podSelector"] and selects(s["podSelector"], operator_pod)]
    assert len(prometheus) == 1 and len(operator) == 1
    egress = prometheus[0]["egress"]
    scraped = {(ns or "monitoring", port) for ns, _, port in _peers(egress, "to")}
    assert scraped == {
        ("sovereign-gateway", 8080),
        ("sovereign-inference", 8000),
        ("openbao", 8200),
        ("keda", 8080),  # KEDA's operator (its ServiceMonitor, gpu.py)
        ("gpu-operator", 9400),  # the DCGM exporter (its ServiceMonitor)
        ("monitoring", 9090),  # Prometheus itself
        ("monitoring", 8080),  # its config reloader and the operator (no TLS: monitoring.py)
        ("monitoring", 9093),  # Alertmanager (alerts and scrape; its reloader and KSM on 8080)
        ("monitoring", 3000),  # Grafana (tests/platform/test_monitoring_stack.py has each pod's flows)
        ("kube-system", 53),
    }
    # every namespace with one of the program's ServiceMonitors is scraped
    assert {m["metadata"]["namespace"] for m in objects(prod, "ServiceMonitor")} <= {ns for ns, _ in scraped}
    # and each scraped namespace lets Prometheus in on that port
    for ns, port in scraped - {("kube-system", 53)} - {("monitoring", p) for p in (9090, 8080, 9093, 3000)}:
        ingress = [r for p in objects(prod, "NetworkPolicy", ns) for r in p["spec"].get("ingress", [])]
        assert any(peer_ns == "monitoring" and p == port for peer_ns, _, p in _peers(ingress, "from")), (
            ns,
            port,
        )
    # the API server (kubernetes_sd) and nothing outside the cluster
    api = {peer["ipBlock"]["cidr"] for rule in egress for peer in rule["to"] if "ipBlock" in peer}
    assert api == {"10.43.0.1/32"} | {f"10.20.1.{11 + i}/32" for i in range(3)}
    # in: KEDA's operator queries it (the ScaledObjects' trigger), and its own self-scrape
    assert {(ns, port) for ns, _, port in _peers(prometheus[0]["ingress"], "from")} == {
        ("keda", 9090),
        (None, 9090),
        (None, 8080),
    }
    # the operator: scraped by Prometheus only; out only to the API server and DNS
    assert {(ns, port) for ns, _, port in _peers(operator[0]["ingress"], "from")} == {(None, 8080)}
    assert {(ns, port) for ns, _, port in _peers(operator[0]["egress"], "to")} == {("kube-system", 53)}
    assert not [f for f in prod.findings if f.kind == "namespace-policy"]


def test_the_prometheus_operator_serves_without_the_webhooks_certificate(
    prod: planner.Plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the admission webhooks off nothing creates the Secret <fullname>-admission that the
    operator's TLS mounts (kube-prometheus-stack 88.5.3 deployment.yaml): TLS is off, and turning
    it back on is a completeness finding naming that Secret."""
    from infra.k8s_platform import monitoring

    (release,) = [
        r
        for r in prod.of_type(planner.HELM_RELEASE)
        if chart_name(r.inputs["chart"]) == "kube-prometheus-stack"
    ]
    assert release.inputs["values"]["prometheusOperator"]["tls"] == {"enabled": False}
    assert not [f for f in prod.findings if "kube-prometheus-stack" in f.resource]
    chart_values = monitoring.values

    def with_tls(cfg: Any) -> dict[str, Any]:
        values = chart_values(cfg)
        del values["prometheusOperator"]["tls"]
        return values

    monkeypatch.setattr(monitoring, "values", with_tls)
    broken = plan_of(sections("eu-central-prod"), stack="eu-central-prod")
    found = [f for f in broken.findings if "kube-prometheus-stack" in f.resource]
    assert len(found) == 1 and "kube-prometheus-stack-admission" in str(found[0]), found


def test_the_gateway_shutdown_fits_in_the_pods_grace_period(prod: planner.Plan) -> None:
    """preStop, then the gateway's drain deadline, uvicorn's backstop and the watchdog: all
    before the kubelet's SIGKILL, so no request in flight is cut off without its record (#21)."""
    from gateway.server import BACKSTOP_S, WATCHDOG_S

    pod = one(prod, "StatefulSet", "gateway")["spec"]["template"]["spec"]
    (gateway,) = [c for c in pod["containers"] if c["name"] == "gateway"]
    prestop = gateway["lifecycle"]["preStop"]["sleep"]["seconds"]
    settings = GatewaySettings(
        **yaml.safe_load(one(prod, "ConfigMap", "gateway-config")["data"]["gateway.yaml"])
    )
    drain = math.ceil(settings.limits.shutdown_deadline_s)
    assert prestop >= 5  # endpoints and the ingress controller drop the pod meanwhile
    assert prestop + drain + BACKSTOP_S + WATCHDOG_S <= pod["terminationGracePeriodSeconds"]
