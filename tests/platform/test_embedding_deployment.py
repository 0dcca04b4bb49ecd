"""The embedding model in the region stacks (issue #27), rendered under Pulumi's mocks: a vLLM
Deployment on v0.11.0's pooling runner with the chat models' isolation (no egress, mTLS, weights
from the EU object storage checked against the signed manifest, HF_HUB_OFFLINE), a GPU of its own,
the gateway's ``embed`` upstream of kind ``embeddings``, the OpenBao transit key for the patient
pseudonyms and the gateway's right to it, the evidence's data flow and residency rows, and the
stack config refusing what would not work. vLLM's command line: tests/doubles/vllm_cli.py (the
v0.11.0 release's parser, cited there)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from gateway.settings import GatewaySettings
from infra import config
from infra import plan as planner
from infra.evidence import model as evidence
from tests.doubles import vllm_cli
from tests.infra.support import STACKS, plan_of, sections

EMBED = "vllm-bge-m3"
CHAT = "vllm-llama31-8b-awq"
SHA = "cd" * 32


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


def pod(plan: planner.Plan, name: str = EMBED) -> dict[str, Any]:
    spec: dict[str, Any] = one(plan, "Deployment", name)["spec"]["template"]["spec"]
    return spec


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def test_the_plan_renders_the_embedding_model_and_passes_completeness_and_policy(prod: planner.Plan) -> None:
    for kind in ("Deployment", "Service", "PodDisruptionBudget", "ScaledObject"):
        assert one(prod, kind, EMBED)["metadata"]["namespace"] == "sovereign-inference"
    assert one(prod, "Job", "weights-fetch-bge-m3") and one(prod, "PersistentVolumeClaim", "weights-bge-m3")
    assert prod.violations == [] and prod.findings == []  # the policy pack and the completeness check
    service = one(prod, "Service", EMBED)["spec"]
    assert service["ports"] == [{"name": "http", "port": 8000, "targetPort": "http"}]
    assert selects({"matchLabels": service["selector"]}, one(prod, "Deployment", EMBED)["spec"]["template"]
                   ["metadata"]["labels"])  # fmt: skip


def test_the_embedding_model_runs_on_vllms_pooling_runner(prod: planner.Plan) -> None:
    (vllm,) = pod(prod)["containers"]
    args = vllm_cli.parse(vllm["args"])  # every flag one vLLM v0.11.0 parses, each value admitted
    assert args["--runner"] == "pooling"
    assert args["--model"] == "/models/bge-m3" and args["--served-model-name"] == "bge-m3"
    # an XLMRobertaModel is a pooling model of vLLM's own (registry: RobertaEmbeddingModel): --convert
    # stays auto (none for it), its pooling comes from the release's Sentence Transformers files
    assert "--convert" not in args and "--pooler-config" not in args
    # no chat settings: no quantisation (bge-m3 is served in its own precision), no tool parser
    assert not {"--quantization", "--enable-auto-tool-choice", "--tool-call-parser", "--chat-template",
                "--structured-outputs-config"} & set(args)  # fmt: skip
    assert args["--max-model-len"] == "8192" and args["--tensor-parallel-size"] == "1"
    assert args["--disable-log-requests"] is True  # the texts are tokenised; they still go to no log
    # the chat model keeps vLLM's default runner (generate) and its flags parse too
    chat = vllm_cli.parse(pod(prod, CHAT)["containers"][0]["args"])
    assert "--runner" not in chat and chat["--quantization"] == "awq_marlin"


def test_the_double_refuses_what_vllm_v0110_refuses() -> None:
    """The check above can fail: the v0.11.0 parser's refusals, as the double names them."""
    for args, why in (
        (["--runner", "embed"], "invalid choice"),  # `embed` is a --convert type, not a runner
        (["--task-runner", "pooling"], "not a flag"),
        (["--runner"], "expects a value"),
        (["--runner", "pooling", "--runner", "pooling"], "given twice"),
        (["--pooler-config", "[]"], "a JSON object"),
    ):
        with pytest.raises(ValueError, match=why):
            vllm_cli.parse(args)


def test_the_embedding_pod_has_the_chat_models_isolation(prod: planner.Plan) -> None:
    spec = pod(prod)
    (vllm,) = spec["containers"]
    env = {e["name"]: e["value"] for e in vllm["env"]}
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    assert env["VLLM_NO_USAGE_STATS"] == "1" and env["DO_NOT_TRACK"] == "1"
    # mTLS: vLLM requires a client certificate from the inference CA
    args = vllm_cli.parse(vllm["args"])
    assert args["--ssl-cert-reqs"] == "2"  # ssl.CERT_REQUIRED
    assert {args["--ssl-certfile"], args["--ssl-keyfile"], args["--ssl-ca-certs"]} == {
        "/etc/vllm-tls/tls.crt", "/etc/vllm-tls/tls.key", "/etc/vllm-tls/ca.crt"}  # fmt: skip
    tls = next(v for v in spec["volumes"] if v["name"] == "tls")
    assert tls["secret"]["secretName"] == f"{EMBED}-tls"
    certs = [r for r in prod.of_type("vault:pkiSecret/secretBackendCert:SecretBackendCert")
             if r.inputs["commonName"] == f"{EMBED}.sovereign-inference.svc"]  # fmt: skip
    assert [c.inputs["name"] for c in certs] == ["inference-server"]
    # the weights: the model's volume read-only, every file checked against the manifest first
    (verify,) = spec["initContainers"]
    assert verify["args"] == ["weights", "verify", "--dir", "/models/bge-m3", "--manifest", "SHA256SUMS"]
    weights = next(v for v in spec["volumes"] if v["name"] == "weights")
    assert weights["persistentVolumeClaim"] == {"claimName": "weights-bge-m3", "readOnly": True}
    assert spec["automountServiceAccountToken"] is False and spec["runtimeClassName"] == "nvidia"
    # a GPU of its own, on the server its stack config names (the chat model's is the other one)
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true", "kubernetes.io/hostname": "gpu-fsn1-2"}
    assert pod(prod, CHAT)["nodeSelector"]["kubernetes.io/hostname"] == "gpu-fsn1-1"
    fetch = one(prod, "Job", "weights-fetch-bge-m3")["spec"]["template"]["spec"]
    assert fetch["nodeSelector"] == spec["nodeSelector"]  # the volume is made where the pods run


def _policies_for(plan: planner.Plan, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    return [p for p in objects(plan, "NetworkPolicy", namespace) if selects(p["spec"]["podSelector"], labels)]


def test_only_the_gateway_reaches_the_embedding_pods_and_they_reach_nothing(prod: planner.Plan) -> None:
    labels = one(prod, "Deployment", EMBED)["spec"]["template"]["metadata"]["labels"]
    policies = _policies_for(prod, "sovereign-inference", labels)
    deny = [p for p in policies if p["metadata"]["name"] == "default-deny"]
    assert deny and "Egress" in deny[0]["spec"]["policyTypes"]
    assert all(not p["spec"].get("egress") for p in policies)  # no egress rule at all: not even DNS
    rules = [rule for p in policies for rule in p["spec"].get("ingress", [])]
    peers = [(peer, rule["ports"]) for rule in rules for peer in rule["from"]]
    # the gateway's pods, and Prometheus' namespace for the metrics (over the same mTLS port)
    assert sorted((p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
                   (p.get("podSelector") or {}).get("matchLabels"), ports) for p, ports in peers) == [
        ("monitoring", None, [{"protocol": "TCP", "port": 8000}]),
        ("sovereign-gateway", {"app.kubernetes.io/name": "gateway"}, [{"protocol": "TCP", "port": 8000}]),
    ]  # fmt: skip
    # and no other pods' policy lets them out to the inference namespace: in monitoring, Prometheus's only
    out = {
        (policy["metadata"]["namespace"], policy["metadata"]["name"])
        for policy in objects(prod, "NetworkPolicy")
        for rule in policy["spec"].get("egress", [])
        for peer in rule.get("to", [])
        if (peer.get("namespaceSelector") or {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
        == "sovereign-inference"
    }
    assert out == {("sovereign-gateway", "gateway-flows"), ("monitoring", "prometheus")}


def test_the_embedding_weights_come_from_eu_object_storage_and_a_pin_is_enforced() -> None:
    data = sections("eu-central-prod")
    data["platform"]["models"][1]["manifest_sha256"] = SHA
    plan = plan_of(data, stack="eu-central-prod")
    (job,) = [j for j in objects(plan, "Job") if j["metadata"]["name"].startswith("weights-fetch-bge-m3-")]
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--source") + 1] == "s3://sovereign-models/bge-m3/"
    assert args[args.index("--endpoint") + 1] == "https://fsn1.your-objectstorage.com"
    assert args[args.index("--manifest-sha256") + 1] == SHA
    assert args[args.index("--public-key") + 1].startswith("/etc/model-manifest-key/")  # signed manifest
    spec = pod(plan)
    assert spec["initContainers"][0]["args"][-2:] == ["--manifest-sha256", SHA]
    assert vllm_cli.parse(spec["containers"][0]["args"])["--model"] == f"/models/bge-m3/{SHA}"


def _upstreams(plan: planner.Plan) -> dict[str, Any]:
    raw = yaml.safe_load(one(plan, "ConfigMap", "gateway-config")["data"]["gateway.yaml"])
    return {"raw": raw["upstreams"], "settings": GatewaySettings(**raw).upstreams}


def test_the_gateway_config_lists_embed_as_an_embeddings_upstream(prod: planner.Plan) -> None:
    upstreams = _upstreams(prod)
    embed = upstreams["settings"]["embed"]
    assert (embed.kind, embed.dimensions, embed.model) == ("embeddings", 1024, "bge-m3")
    assert embed.url == "https://vllm-bge-m3.sovereign-inference.svc:8000/v1" and embed.tls is not None
    assert upstreams["raw"]["embed"] == upstreams["raw"]["bge-m3"]
    assert "tool_choices" not in upstreams["raw"]["embed"]  # chat only
    chat = upstreams["settings"]["chat"]
    assert (chat.kind, chat.dimensions) == ("chat", None)


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(config.StackConfigError) as info:
        config.parse("eu-central-prod", data, "test")
    return [str(p) for p in info.value.problems]


def _embedding(data: dict[str, Any]) -> dict[str, Any]:
    model: dict[str, Any] = data["platform"]["models"][1]
    assert model["kind"] == "embeddings"
    return model


def test_an_embedding_model_without_dimensions_or_with_chat_settings_is_refused() -> None:
    data = sections("eu-central-prod")
    del _embedding(data)["dimensions"]
    [problem] = problems(data)
    assert problem.startswith("sovereign-llm:platform.models.1: dimensions: missing")
    assert "config.json hidden_size" in problem
    data = sections("eu-central-prod")
    _embedding(data)["tool_calling"] = {"parser": "hermes"}
    _embedding(data)["structured_outputs_backend"] = "xgrammar"
    [problem] = problems(data)
    key = "sovereign-llm:platform.models.1: "
    assert problem.startswith(key + "tool_calling, structured_outputs_backend: chat settings")
    assert "hermes" not in problem and "xgrammar" not in problem  # the keys, never the values
    data = sections("eu-central-prod")
    _embedding(data)["dimensions"] = 0
    [problem] = problems(data)
    assert problem.startswith("sovereign-llm:platform.models.1.dimensions:")


def test_a_chat_model_needs_its_quantisation_and_has_no_dimensions() -> None:
    data = sections("eu-central-prod")
    del data["platform"]["models"][0]["quantization"]
    [problem] = problems(data)
    assert problem.startswith("sovereign-llm:platform.models.0: quantization: missing")
    assert "set kind: embeddings for an embedding model" in problem
    data = sections("eu-central-prod")
    data["platform"]["models"][0]["dimensions"] = 4096
    [problem] = problems(data)
    assert problem.startswith("sovereign-llm:platform.models.0: dimensions: only an embedding model")
    assert "4096" not in problem
    data = sections("eu-central-prod")
    _embedding(data)["kind"] = "rerank"
    [problem] = problems(data)
    assert problem.startswith("sovereign-llm:platform.models.1.kind:") and "'embeddings'" in problem


def test_models_never_share_a_gpu_and_each_names_its_server_with_local_volumes() -> None:
    data = sections("eu-central-prod")
    _embedding(data)["gpu_server"] = "gpu-fsn1-1"  # the chat model's one GPU
    [problem] = problems(data)
    assert problem.startswith("sovereign-llm:platform.models: GPU server gpu-fsn1-1 has 1 GPU(s)")
    assert "llama31-8b-awq 1, bge-m3 1" in problem and "a GPU is never shared between models" in problem
    data = sections("eu-central-prod")
    del _embedding(data)["gpu_server"]
    [problem] = problems(data)
    assert problem.startswith("sovereign-llm:platform.models.1.gpu_server: missing")
    data = sections("eu-central-prod")
    _embedding(data)["gpu_server"] = "gpu-hel1-9"
    [problem] = problems(data)
    assert problem.startswith("sovereign-llm:platform.models.1.gpu_server: not a server of gpu_pool.servers")
    assert "gpu-fsn1-1, gpu-fsn1-2" in problem  # the declared names to choose from
    # shared volumes (no local-path): no server named, but the pool's GPUs still count whole
    data = sections("eu-central-prod")
    data["platform"]["weights_storage_class"] = "nfs-weights"
    for m in data["platform"]["models"]:
        del m["gpu_server"]
    config.parse("eu-central-prod", data, "test")
    _embedding(data)["max_replicas"] = 2
    [problem] = problems(data)
    assert problem.startswith("sovereign-llm:platform.models: at max_replicas the models need 3 GPUs")
    assert "gpu_pool.servers have 2" in problem


def test_the_pseudonym_key_is_stable_and_only_the_gateway_may_hmac_with_it(prod: planner.Plan) -> None:
    transit = prod.of_type("vault:transit/secretBackendKey:SecretBackendKey")
    keys = {r.inputs["name"]: r.inputs for r in transit}
    key = keys["sovereign-pseudonym"]
    assert key["backend"] == "transit" and key["type"] == "aes256-gcm96"
    assert key["exportable"] is False and key["deletionAllowed"] is False
    assert key["allowPlaintextBackup"] is False
    assert key["autoRotatePeriod"] == 0  # a rotation would change every patient's pseudonym
    assert keys["tenant-data"]["autoRotatePeriod"] > 0  # unlike the wrapping key (rotation is harmless there)
    policies = {r.inputs["name"]: r.inputs["policy"] for r in prod.of_type("vault:index/policy:Policy")}
    rule = re.compile(r'path "([^"]*sovereign-pseudonym[^"]*)" \{ capabilities = (\[[^]]*\]) \}')
    on_key = {name: rule.findall(body) for name, body in policies.items()}
    assert on_key.pop("sovereign-gateway") == [("transit/hmac/sovereign-pseudonym", '["update"]')]
    assert all(found == [] for found in on_key.values())  # no other policy touches the key
    others = [body for name, body in policies.items() if name != "sovereign-gateway"]
    assert others and all("sovereign-pseudonym" not in body for body in others)


def test_the_evidence_shows_the_embedding_service_its_flow_and_its_residency() -> None:
    collected = evidence.collect(STACKS, "eu-central-prod")
    to_embed = next(h for h in collected.hops if (h.source, h.target) == ("gateway", EMBED))
    assert to_embed.carries == "tokenised" and to_embed.what.startswith("tokenised text only")
    assert "mTLS" in to_embed.transport and "denies all egress" in to_embed.transport
    back = next(h for h in collected.hops if (h.source, h.target) == (EMBED, "gateway"))
    assert back.what.startswith("vectors") and "no text" in back.what
    chat = next(h for h in collected.hops if (h.source, h.target) == ("gateway", CHAT))
    assert not chat.what.startswith("tokenised text only")  # the chat hop keeps its own words
    rows = {r.name: r for r in collected.residency}
    server = rows[f"Deployment {EMBED}"]
    assert server.kind == "model server" and server.inside and "FSN1-DC14" in server.location
    assert server.detail.startswith("embedding model")
    assert rows[f"Deployment {CHAT}"].detail.startswith("chat model")
    weights = rows["Job weights-fetch-bge-m3"]
    assert weights.kind == "model weights" and weights.inside and weights.jurisdiction == "DE"
    assert weights.detail == "s3://sovereign-models/bge-m3/ on https://fsn1.your-objectstorage.com"
