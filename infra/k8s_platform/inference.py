"""vLLM serving, one Deployment per model in the stack config.

Weights: a Job (``sovereign weights fetch``) copies the model from EU object storage into the
model's ReadWriteMany volume; the vLLM pods mount it read-only and an init container
(``sovereign weights verify``) checks every file against the SHA-256 manifest before the
server starts. The vLLM pods themselves have no egress at all (network_policies.py), so
only the Job's pods ever talk to object storage; ``HF_HUB_OFFLINE=1`` keeps vLLM from trying.

Releases: with ``manifest_sha256`` (the approved release's manifest, ``sovereign models``) the
Job and the init container refuse any other manifest; the pod template's
``sovereign-llm.io/weights-release`` annotation names source and manifest digest, so a new
release (or a rollback) rolls the pods; and the Job's name ends in a digest of the release, so
a new release is a new Job. Kubernetes refuses changes to a Job's ``spec.template`` (it is
immutable), so pulumi-kubernetes replaces a Job whose template changed (pulumi-kubernetes#330,
#333); with a fixed ``metadata.name`` the replacement would collide with the old Job, and users
report that even ``deleteBeforeReplace`` then fails under server-side apply with "field is
immutable" (pulumi-kubernetes#2575). A name that changes with the release is the maintainers'
advice (pulumi-kubernetes#856: change a property that forces replacement, e.g.
``.metadata.name``): the new Job is created, the Deployment rolls once it has completed, and the
old Job is deleted last. A stack without a pin keeps the fixed name with ``deleteBeforeReplace``
(the example stacks, which have no imported release to pin): pin every deployed model.
With a pin each release has a folder of its own on the volume, ``/models/<model>/<manifest_sha256>``
(``release_dir``): the Job fetches into it, vLLM's ``--model`` and the init container's ``--dir``
name it, so a fetch of the next release never touches the folder the running pods verify
(infra/weights/fetch.py: reuse and pruning of release folders).

The Deployment's ``spec.replicas`` is set on creation only (``REPLICAS_OWNED_BY_KEDA``).

Autoscaling: KEDA scales each Deployment on ``vllm:num_requests_waiting`` from Prometheus
(queue length is what a patient waiting for an answer feels; GPU utilisation is not).

Embedding models (``kind: embeddings``, issue #27) are ModelServers like the chat models: the same
weights Job, manifest check, mTLS, probes, no egress (network_policies.py selects every pod of the
``inference`` component) and KEDA scaler; only vLLM's runner (``runner_args``) and the container's
host-side resources differ. The gateway gets the model as an ``embeddings`` upstream (gateway.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import ssl
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra import images
from infra.config import InferenceModelConfig, StackConfig
from infra.k8s_platform.common import (
    GPU_NODE_LABEL,
    GPU_TOLERATION,
    IMAGE_PULL_S,
    INFERENCE_NS,
    VLLM_IMAGE_PULL_S,
    VLLM_PORT,
    VLLM_SHARED_NAME,
    VLLM_TLS_DIR,
    container_security,
    custom_timeouts,
    labels,
    pod_security,
    pod_start_s,
    selector,
)
from infra.k8s_platform.openbao import OpenBaoConfiguration, mtls_secret

WEIGHTS_MOUNT = "/models"


def model_dir(model: InferenceModelConfig) -> str:
    """The model's folder on its volume: the fetch Job's ``--dest``."""
    return f"{WEIGHTS_MOUNT}/{model.name}"


def release_dir(model: InferenceModelConfig) -> str:
    """The folder of the release the pods serve: ``/models/<model>/<manifest_sha256>`` with a pin
    (each release in a folder of its own, which no other release's fetch writes to; see
    infra/weights/fetch.py), the model's folder itself without one."""
    if model.manifest_sha256 is None:
        return model_dir(model)
    return f"{model_dir(model)}/{model.manifest_sha256}"


def vllm_args(model: InferenceModelConfig) -> list[str]:
    quantization = [] if model.quantization is None else ["--quantization", model.quantization]
    return [
        "--model", release_dir(model),  # the served name stays the model's name: the gateway's
        "--served-model-name", model.name,
        "--host", "0.0.0.0",
        "--port", str(VLLM_PORT),
        *runner_args(model),
        *quantization,
        "--max-model-len", str(model.max_model_len),
        "--gpu-memory-utilization", str(model.gpu_memory_utilization),
        "--tensor-parallel-size", str(model.gpus),
        "--disable-log-requests",  # prompts are tokenised, but they still never go to a log
        # mTLS: only clients with a certificate from the inference CA (the gateway, Prometheus)
        "--ssl-certfile", f"{VLLM_TLS_DIR}/tls.crt",
        "--ssl-keyfile", f"{VLLM_TLS_DIR}/tls.key",
        "--ssl-ca-certs", f"{VLLM_TLS_DIR}/ca.crt",
        "--ssl-cert-reqs", str(int(ssl.CERT_REQUIRED)),
        *tool_args(model),
    ]  # fmt: skip


def runner_args(model: InferenceModelConfig) -> list[str]:
    """An embedding model (``kind: embeddings``) runs on vLLM v0.11.0's pooling runner:
    ``--runner pooling`` (vllm/config/model.py RunnerOption: auto, draft, generate, pooling; the
    v0.11.0 engine arguments, docs/configuration/engine_args.md), which serves /v1/embeddings
    (docs/models/pooling_models.md, "Online Serving"). ``--convert`` stays ``auto``: the adapters of
    vllm/model_executor/models/adapters.py are for a model that does not implement
    VllmModelForPooling, and an encoder that vLLM registers as an embedding model (BertModel,
    XLMRobertaModel: docs/models/supported_models.md, "Text Embedding") does; its pooling (CLS for
    BAAI/bge-m3, from the release's Sentence Transformers files modules.json and 1_Pooling/) and
    normalisation are the model's own, so no pooler override either. A chat model keeps vLLM's
    default, the generate runner (``--runner auto``)."""
    return ["--runner", "pooling"] if model.kind == "embeddings" else []


def container_resources(model: InferenceModelConfig) -> dict[str, dict[str, Any]]:
    """The vLLM container's requests and limits: a chat model holds an 8B model's host-side state;
    an embedding encoder (BAAI/bge-m3: 568M parameters, 2.3 GB of weights) far less host memory.
    Both take their GPUs whole (nvidia.com/gpu cannot be shared, docs/capacity.md)."""
    gpus = {"nvidia.com/gpu": model.gpus}
    if model.kind == "embeddings":
        return {
            "requests": {"cpu": "2", "memory": "8Gi", **gpus},
            "limits": {"cpu": "4", "memory": "12Gi", **gpus},
        }
    return {
        "requests": {"cpu": "4", "memory": "24Gi", **gpus},
        "limits": {"cpu": "8", "memory": "32Gi", **gpus},
    }


def tool_args(model: InferenceModelConfig) -> list[str]:
    """Tool calling and structured outputs, as vLLM v0.11.0 names them: with ``tool_calling``,
    ``--enable-auto-tool-choice --tool-call-parser P`` (vllm/entrypoints/openai/cli_args.py; without
    them vLLM answers a request whose tool_choice is "auto" with 400, serving_chat.py) and
    ``--chat-template`` naming a file of the release (checked by the manifest like the weights);
    a backend other than ``auto`` as ``--structured-outputs-config`` (vllm/engine/arg_utils.py
    parses it as a JSON StructuredOutputsConfig)."""
    args: list[str] = []
    tools = model.tool_calling
    if tools is not None:
        args += ["--enable-auto-tool-choice", "--tool-call-parser", tools.parser]
        if tools.chat_template is not None:
            args += ["--chat-template", f"{release_dir(model)}/{tools.chat_template}"]
    if model.structured_outputs_backend != "auto":
        args += ["--structured-outputs-config", json.dumps({"backend": model.structured_outputs_backend})]
    return args


HEALTH_PROBE = (
    "import ssl, urllib.request; "
    f"c = ssl.create_default_context(cafile='{VLLM_TLS_DIR}/ca.crt'); "
    f"c.load_cert_chain('{VLLM_TLS_DIR}/tls.crt', '{VLLM_TLS_DIR}/tls.key'); "
    f"urllib.request.urlopen('https://127.0.0.1:{VLLM_PORT}/health', context=c, timeout=4)"
)


MANIFEST_KEY_MOUNT = "/etc/model-manifest-key"

# How long the weights take, from the model's volume size: the slowest rates this platform accepts
# (the object storage is in the stack's own region; verify hashes every file on the RWX volume)
FETCH_MIB_S = 50
VERIFY_MIB_S = 100
FETCH_BACKOFF_LIMIT = 3  # retries of the fetch Job; the Job controller waits 10 s, 20 s, 40 s between


def fetch_deadline_s(model: InferenceModelConfig) -> int:
    """The fetch Job's activeDeadlineSeconds: an image pull, then every attempt copying the whole
    volume at FETCH_MIB_S, with the Job controller's back-off (10 s, doubling) between attempts."""
    transfer = math.ceil(model.volume_gi * 1024 / FETCH_MIB_S)
    backoff: int = sum(10 * 2**i for i in range(FETCH_BACKOFF_LIMIT))
    return IMAGE_PULL_S + (FETCH_BACKOFF_LIMIT + 1) * transfer + backoff


def verify_s(model: InferenceModelConfig) -> int:
    """The init container `sovereign weights verify`: an image pull, then hashing the volume."""
    return IMAGE_PULL_S + math.ceil(model.volume_gi * 1024 / VERIFY_MIB_S)


RELEASE_ANNOTATION = "sovereign-llm.io/weights-release"

# The Deployment's spec.replicas belongs to KEDA once its ScaledObject exists: KEDA's HPA scales the
# Deployment through the scale subresource (field manager kube-controller-manager). Pulumi sends
# replicas only when it creates the Deployment (min_replicas, so the pods start before the
# ScaledObject does; the Kubernetes docs on server-side apply warn that dropping the field before
# the HPA owns it sets it to 1). On every later `pulumi up` (a release change, a rollback) sending
# it would either reset the count to min_replicas mid-incident or fail under server-side apply
# (layer.py) with "conflict with kube-controller-manager with subresource scale: .spec.replicas"
# (pulumi-kubernetes#2491, pulumi/pulumi#13321). The Kubernetes HPA docs say to remove
# spec.replicas from a manifest an HPA manages ("Migrating Deployments and StatefulSets to
# horizontal autoscaling"); with Pulumi the maintainers' advice is ignoreChanges on the field
# (pulumi-kubernetes#2215, #2258), and #2491 was closed as fixed on that basis. Not checked
# against a cluster here: tests/platform/test_weights.py proves the option is registered.
REPLICAS_OWNED_BY_KEDA = ["spec.replicas"]


def node_selector(model: InferenceModelConfig) -> dict[str, str]:
    """The GPU servers, and with ``gpu_server`` that one server (its node name as the kubelet's
    ``kubernetes.io/hostname`` label): the fetch Job that makes the local-path volume and every pod
    that mounts it land where the model's GPUs are (config.py, _gpu_placement_problems)."""
    pinned = {} if model.gpu_server is None else {"kubernetes.io/hostname": model.gpu_server}
    return {GPU_NODE_LABEL: "true", **pinned}


def weights_release(model: InferenceModelConfig) -> str:
    """What the pods serve: ``<source>@sha256:<manifest digest>`` (the source alone without a pin)."""
    if model.manifest_sha256 is None:
        return model.source
    return f"{model.source}@sha256:{model.manifest_sha256}"


def fetch_job_name(model: InferenceModelConfig) -> str:
    """``weights-fetch-<model>``, and with a pin ``-<10 hex of source and manifest digest>``: a new
    release is a new Job (a Job's template is immutable; see the module's docstring)."""
    if model.manifest_sha256 is None:
        return f"weights-fetch-{model.name}"
    digest = hashlib.sha256(weights_release(model).encode()).hexdigest()[:10]
    return f"weights-fetch-{model.name}-{digest}"  # at most 14 + 32 + 11 = 57 characters


def pin_args(model: InferenceModelConfig) -> list[str]:
    return [] if model.manifest_sha256 is None else ["--manifest-sha256", model.manifest_sha256]


def fetch_args(cfg: StackConfig, model: InferenceModelConfig) -> list[str]:
    args = [
        "weights", "fetch",
        "--source", model.source,
        "--endpoint", cfg.endpoints.object_storage,
        "--manifest", model.manifest,
        "--dest", model_dir(model),  # with a pin, the fetch writes <dest>/<manifest_sha256>/
    ]  # fmt: skip
    if cfg.storage.manifest_public_keys:  # the manifest must carry a valid signature
        args += ["--public-key", f"{MANIFEST_KEY_MOUNT}/keys.json"]
    return args + pin_args(model)


def verify_args(model: InferenceModelConfig) -> list[str]:
    """The init container: every file against the manifest, the manifest against the pin."""
    return ["weights", "verify", "--dir", release_dir(model), "--manifest", model.manifest,
            *pin_args(model)]  # fmt: skip


class ModelServer(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        model: InferenceModelConfig,
        tools_image: str,
        openbao: OpenBaoConfiguration,
        prometheus_url: str,
        depends_on: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("sovereign:platform:ModelServer", name, None, opts)
        app = f"vllm-{model.name}"
        # the server certificate for mTLS with the gateway (also the client certificate of its probes)
        self.tls, cert_serial = mtls_secret(
            self, f"{name}-tls", cfg, openbao, role="inference-server",
            common_name=f"{app}.{INFERENCE_NS}.svc", namespace=INFERENCE_NS, secret_name=f"{app}-tls",
            ip_sans=["127.0.0.1"], alt_names=[VLLM_SHARED_NAME],
        )  # fmt: skip
        meta = labels(cfg, app, "inference")
        child = pulumi.ResourceOptions(parent=self, depends_on=depends_on)
        volume = f"weights-{model.name}"
        self.volume = k8s.core.v1.PersistentVolumeClaim(
            f"{name}-weights",
            metadata={"name": volume, "namespace": INFERENCE_NS, "labels": meta},
            spec={
                # the GPU server's own disk (local-path, cluster_services.py): one node, so ReadWriteOnce,
                # which every pod on that node may mount (the Job writes, the vLLM pods read)
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": cfg.platform.weights_storage_class,
                "resources": {"requests": {"storage": f"{model.volume_gi}Gi"}},
            },
            opts=child,
        )
        tools_security = container_security()
        storage = {"name": "weights", "persistentVolumeClaim": {"claimName": volume}}
        fetch_mounts: list[dict[str, Any]] = [
            {"name": "weights", "mountPath": WEIGHTS_MOUNT},
            {"name": "credentials", "mountPath": "/etc/object-storage", "readOnly": True},
        ]
        fetch_volumes: list[dict[str, Any]] = [
            storage,
            {"name": "credentials", "secret": {"secretName": "object-storage-read"}},
        ]
        if cfg.storage.manifest_public_keys:
            self.manifest_key = k8s.core.v1.ConfigMap(
                f"{name}-manifest-key",
                metadata={"name": f"manifest-key-{model.name}", "namespace": INFERENCE_NS, "labels": meta},
                data={"keys.json": json.dumps(cfg.storage.manifest_public_keys, sort_keys=True)},
                opts=child,
            )
            fetch_mounts.append({"name": "manifest-key", "mountPath": MANIFEST_KEY_MOUNT, "readOnly": True})
            key_volume = {"name": "manifest-key", "configMap": {"name": f"manifest-key-{model.name}"}}
            fetch_volumes.append(key_volume)
        fetch_labels = labels(cfg, f"weights-fetch-{model.name}", "weights-fetch")
        self.fetch = k8s.batch.v1.Job(
            f"{name}-fetch",
            metadata={
                "name": fetch_job_name(model),
                "namespace": INFERENCE_NS,
                "labels": fetch_labels,
            },
            spec={
                "backoffLimit": FETCH_BACKOFF_LIMIT,
                # Kubernetes fails the Job past this; Pulumi waits a margin longer (custom_timeouts)
                "activeDeadlineSeconds": fetch_deadline_s(model),
                "template": {
                    "metadata": {"labels": fetch_labels},
                    "spec": {
                        # on a GPU server: the weights volume is that server's disk
                        "nodeSelector": node_selector(model),
                        "tolerations": [GPU_TOLERATION],
                        "restartPolicy": "OnFailure",
                        "automountServiceAccountToken": False,
                        "securityContext": pod_security(),
                        "containers": [
                            {
                                "name": "fetch",
                                "image": tools_image,
                                "imagePullPolicy": "Always",
                                "args": fetch_args(cfg, model),
                                # read-only S3 keys as a file (an AWS shared-credentials file), not as
                                # environment variables that end up in process listings and dumps
                                "env": [
                                    {
                                        "name": "AWS_SHARED_CREDENTIALS_FILE",
                                        "value": "/etc/object-storage/credentials",
                                    }
                                ],
                                "resources": {
                                    "requests": {"cpu": "250m", "memory": "256Mi"},
                                    "limits": {"cpu": "1", "memory": "512Mi"},
                                },
                                "securityContext": tools_security,
                                "volumeMounts": fetch_mounts,
                            }
                        ],
                        "volumes": fetch_volumes,
                    },
                },
            },
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[*depends_on, self.volume],
                custom_timeouts=custom_timeouts(fetch_deadline_s(model)),
                # a fixed name (no pin): the replacement cannot exist beside the old Job
                delete_before_replace=model.manifest_sha256 is None,
            ),
        )
        # kubelet's HTTP probes cannot present a client certificate: the probe runs in the
        # container, with the pod's own certificate, against /health on loopback
        health = {"exec": {"command": ["python3", "-c", HEALTH_PROBE]}, "timeoutSeconds": 5}
        container: dict[str, Any] = {
            "name": "vllm",
            "image": images.reference(cfg, model.image),  # the EU mirror, by digest
            "imagePullPolicy": "Always",
            "args": vllm_args(model),
            "env": [
                {"name": "HF_HUB_OFFLINE", "value": "1"},
                {"name": "TRANSFORMERS_OFFLINE", "value": "1"},
                {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
                {"name": "DO_NOT_TRACK", "value": "1"},
                {"name": "HOME", "value": "/tmp"},
            ],
            "ports": [{"name": "http", "containerPort": VLLM_PORT}],
            "resources": container_resources(model),
            # loading a quantised 8B model takes minutes: the startup probe allows 20
            "startupProbe": {**health, "periodSeconds": 10, "failureThreshold": 120},
            "readinessProbe": {**health, "periodSeconds": 5},
            "livenessProbe": {**health, "periodSeconds": 15, "failureThreshold": 4},
            "securityContext": container_security(),
            "volumeMounts": [
                {"name": "weights", "mountPath": WEIGHTS_MOUNT, "readOnly": True},
                {"name": "dshm", "mountPath": "/dev/shm"},
                {"name": "tmp", "mountPath": "/tmp"},
                {"name": "tls", "mountPath": VLLM_TLS_DIR, "readOnly": True},
            ],
        }
        verify = {
            "name": "verify-weights",
            "image": tools_image,
            "imagePullPolicy": "Always",
            "args": verify_args(model),
            "resources": {
                "requests": {"cpu": "500m", "memory": "128Mi"},
                "limits": {"cpu": "2", "memory": "256Mi"},
            },
            "securityContext": container_security(),
            "volumeMounts": [{"name": "weights", "mountPath": WEIGHTS_MOUNT, "readOnly": True}],
        }
        # one pod: the vLLM image, the verify init container, then the startup probe's 20 minutes
        self.start_s = pod_start_s([container], pull_s=VLLM_IMAGE_PULL_S, init_s=verify_s(model))
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata={"name": app, "namespace": INFERENCE_NS, "labels": meta},
            spec={
                # the count at creation only: KEDA's ScaledObject (its HPA) owns it afterwards; see
                # REPLICAS_OWNED_BY_KEDA on the options below
                "replicas": model.min_replicas,
                # without progress for this long the Deployment reports ProgressDeadlineExceeded, which
                # Pulumi takes as failure: the default 600 s is shorter than one pod's start
                "progressDeadlineSeconds": self.start_s,
                "selector": {"matchLabels": selector(app)},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
                "template": {
                    "metadata": {
                        "labels": meta,
                        "annotations": {
                            "sovereign-llm.io/server-cert-serial": cert_serial,
                            # a new release (or a rollback) changes the template: the pods roll
                            RELEASE_ANNOTATION: weights_release(model),
                        },
                    },
                    "spec": {
                        "runtimeClassName": "nvidia",
                        "automountServiceAccountToken": False,
                        "securityContext": pod_security(),
                        "nodeSelector": node_selector(model),
                        "tolerations": [GPU_TOLERATION],
                        "initContainers": [verify],
                        "containers": [container],
                        "volumes": [
                            {**storage, "persistentVolumeClaim": {"claimName": volume, "readOnly": True}},
                            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}},
                            {"name": "tls", "secret": {"secretName": f"{app}-tls"}},
                            {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}},
                        ],
                    },
                },
            },
            # created pods start together; a rolling update (maxSurge 0, maxUnavailable 1) replaces
            # them one at a time, up to max_replicas of them (KEDA's)
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[*depends_on, self.fetch],
                custom_timeouts=custom_timeouts(self.start_s, model.max_replicas * self.start_s),
                ignore_changes=REPLICAS_OWNED_BY_KEDA,
            ),
        )
        self.service = k8s.core.v1.Service(
            f"{name}-service",
            metadata={"name": app, "namespace": INFERENCE_NS, "labels": meta},
            spec={
                "selector": selector(app),
                "ports": [{"name": "http", "port": VLLM_PORT, "targetPort": "http"}],
            },
            opts=child,
        )
        self.pdb = k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata={"name": app, "namespace": INFERENCE_NS, "labels": meta},
            spec={"maxUnavailable": 1, "selector": {"matchLabels": selector(app)}},
            opts=child,
        )
        query = f'sum(vllm:num_requests_waiting{{namespace="{INFERENCE_NS}",model_name="{model.name}"}})'
        self.scaler = k8s.apiextensions.CustomResource(
            f"{name}-scaler",
            api_version="keda.sh/v1alpha1",
            kind="ScaledObject",
            metadata={"name": app, "namespace": INFERENCE_NS, "labels": meta},
            spec={
                "scaleTargetRef": {"name": app},
                "minReplicaCount": model.min_replicas,
                "maxReplicaCount": model.max_replicas,
                "cooldownPeriod": 600,  # GPU pods are slow to start: do not flap
                "triggers": [
                    {
                        "type": "prometheus",
                        "metadata": {
                            "serverAddress": prometheus_url,
                            "query": query,
                            "threshold": str(model.queue_target),
                        },
                    }
                ],
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*depends_on, self.deployment]),
        )
        self.register_outputs({"service": f"{app}.{INFERENCE_NS}.svc:{VLLM_PORT}"})
