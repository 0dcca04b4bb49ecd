"""OpenBao in the cluster (Helm chart: HA, Raft storage, TLS, audit device) and its configuration
through pulumi-vault: transit keys, KV v2, PKI for gateway <-> inference mTLS (and, on a mount of its
own, the front door's: ingress.py), Kubernetes auth
bound to the gateway's service account, least-privilege policies. The file audit device is
declared in the server configuration.

TLS: a private CA made by ``pulumi-tls`` signs the listener certificate; the CA certificate is
published to the gateway's namespace. Its private key lives only in the Pulumi state, which the
stack's secrets provider (OpenBao transit of the operations OpenBao, ``hashivault://``) encrypts.

Unseal: see docs/platform.md ("OpenBao unseal design"). Raft snapshots on a schedule into the
stack's Object Lock bucket, and their restore: ``SnapshotSchedule`` below, docs/backup-restore.md.
"""

from __future__ import annotations

from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s
import pulumi_tls as tls
import pulumi_vault as vault
import yaml

from gateway.files import write_private
from infra import images, openbao_backup
from infra import openbao_contract as contract
from infra.config import StackConfig
from infra.k8s_platform.common import GATEWAY_APP as GATEWAY_SA
from infra.k8s_platform.common import (
    GATEWAY_NS,
    INFERENCE_NS,
    NONROOT_UID,
    OPENBAO_NS,
    OPENBAO_PORT,
    Component,
    Deps,
    container_security,
    labels,
    pod_security,
)
from infra.k8s_platform.common import GATEWAY_OPENBAO_ROLE as OPENBAO_ROLE
from infra.k8s_platform.gpu import ChartWait, pinned_chart
from infra.k8s_platform.secrets import OPENBAO_SNAPSHOT, OPENBAO_SNAPSHOT_COPY, credentials_secret
from infra.paths import REPO_ROOT

CHART_REPO = "https://openbao.github.io/openbao-helm"
# mTLS certificates live 90 days and are re-issued by `pulumi up` once fewer than 30 remain
# (run it at least monthly; the pods roll to the new certificate through an annotation)
CERT_TTL_S = 90 * 24 * 3600
CERT_RENEW_BEFORE_S = 30 * 24 * 3600
# the mTLS CA (gateway <-> vLLM, Prometheus) and the front door's CA are separate PKI mounts
MTLS_PKI_MOUNT = "pki"
INGRESS_PKI_MOUNT = "pki-ingress"
INGRESS_ROLE = "gateway-ingress"  # server certificates for load_balancer.hostname (ingress.py)

# the contract's policies (infra/openbao_contract.py, which the local dev server has too), plus what
# only the cluster has
GATEWAY_POLICY = (
    contract.GATEWAY_POLICY
    + 'path "kv/data/gateway/*" { capabilities = ["read"] }\n'
    + 'path "pki/issue/gateway-client" { capabilities = ["update"] }\n'
)
AUDITOR_POLICY = contract.AUDITOR_POLICY
# the kill switch (`sovereign incident`, docs/operations.md): on-call operators get a token of it;
# the gateway's own policy (above, from the contract) may only read the same path
INCIDENT_POLICY_NAME = contract.INCIDENT_POLICY_NAME
INCIDENT_POLICY = contract.INCIDENT_POLICY
# the Raft snapshot CronJob (SnapshotSchedule below): read snapshots, nothing else
SNAPSHOT_POLICY_NAME = "sovereign-openbao-snapshot"
SNAPSHOT_POLICY = openbao_backup.SNAPSHOT_POLICY
SNAPSHOT_APP = "openbao-snapshot"  # CronJob, ServiceAccount and Kubernetes-auth role name
# hourly, at minute 23 (UTC): a restore loses at most the last hour of changes (docs/backup-restore.md
# says which matter: a transit key rotated since is back at its older version)
SNAPSHOT_SCHEDULE = "23 * * * *"
SNAPSHOT_SETTINGS = "/etc/sovereign/snapshot/snapshot.yaml"
SNAPSHOT_CA = "/etc/openbao-ca/ca.crt"


def publisher_policy(cfg: StackConfig) -> str:
    """The contract's ``sovereign-model-publisher`` (sign manifests, read the public key), for the
    stack's signing key (``storage.manifest_signing_key``): what `sovereign models import` needs."""
    return contract.publisher_policy(cfg.storage.manifest_signing_key)


# chart 0.19.1 (github.com/openbao/openbao-helm, tag openbao-0.19.1, charts/openbao/): the server's
# start script (templates/_helpers.tpl, "openbao.args", used by templates/server-statefulset.yaml)
# runs `cp /openbao/config/extraconfig-from-values.hcl /tmp/storageconfig.hcl` and sed -i on the
# copy before `bao server -config=/tmp/storageconfig.hcl`: with readOnlyRootFilesystem, /tmp must be
# a volume. The chart's `server.volumes` / `server.volumeMounts` (values.yaml, rendered by
# "openbao.volumes" / "openbao.mounts" with toYaml) add it.
TMP_VOLUME = {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}
TMP_MOUNT = {"name": "tmp", "mountPath": "/tmp"}
# the chart's server readinessProbe (values.yaml server.readinessProbe: exec `bao status`, which
# exits 2 while sealed), set here explicitly so the release's wait derives from it
READINESS_PROBE = {"enabled": True, "initialDelaySeconds": 5, "periodSeconds": 5, "failureThreshold": 2}

_RETRY_JOIN = (
    '  retry_join {{ leader_api_addr = "https://openbao-{i}.openbao-internal:8200" '
    'leader_ca_cert_file = "/openbao/userconfig/openbao-tls/ca.crt" }}\n'
)

RAFT_TEMPLATE = """
ui = false
disable_mlock = true
listener "tcp" {
  address = "[::]:8200"
  cluster_address = "[::]:8201"
  tls_cert_file = "/openbao/userconfig/openbao-tls/tls.crt"
  tls_key_file = "/openbao/userconfig/openbao-tls/tls.key"
  tls_min_version = "tls13"
  telemetry { unauthenticated_metrics_access = true }
}
storage "raft" {
  path = "/openbao/data"
{retry_join}}
service_registration "kubernetes" {}
# OpenBao 2.x refuses audit devices enabled through the API: declared here, on its own volume
audit "file" "file" {
  options { file_path = "/openbao/audit/audit.log" }
}
telemetry { prometheus_retention_time = "30s" disable_hostname = true }
"""


def raft_config(replicas: int) -> str:
    """The server configuration (HCL): TLS listener, Raft joined to every member, audit device."""
    joins = "".join(_RETRY_JOIN.format(i=i) for i in range(replicas))
    return RAFT_TEMPLATE.replace("{retry_join}", joins)


def chart_wait(cfg: StackConfig) -> ChartWait:
    """What Helm's wait covers in this release. The StatefulSet keeps the chart's ``OnDelete``
    update strategy (below), which Helm's readiness check skips (helm pkg/kube/ready.go,
    statefulSetReady: "If the update strategy is not a rolling update, there will be nothing to
    wait for"): the members stay sealed, never Ready, until the custodians unseal them. The budget
    still covers one member's readiness, from the probe the values set."""
    probe = {k: v for k, v in READINESS_PROBE.items() if k != "enabled"}
    return ChartWait(
        "openbao",
        cfg.platform.openbao.chart_version,
        "helm_values() below (server.readinessProbe)",
        {"openbao": {"readinessProbe": probe}},
    )


def helm_values(cfg: StackConfig) -> dict[str, object]:
    bao = cfg.platform.openbao
    restricted = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return {
        "global": {"tlsDisable": False},
        "injector": {"enabled": False},  # the gateway logs in itself (Kubernetes auth)
        "ui": {"enabled": False},
        "server": {
            "extraLabels": labels(cfg, "openbao", "kms"),
            "ha": {
                "enabled": True,
                "replicas": bao.replicas,
                "raft": {"enabled": True, "config": raft_config(bao.replicas)},
            },
            "dataStorage": {"enabled": True, "size": f"{bao.storage_gi}Gi"},
            "auditStorage": {"enabled": True, "size": f"{bao.audit_storage_gi}Gi"},
            "extraVolumes": [{"type": "secret", "name": "openbao-tls"}],
            # the start script copies the configuration to /tmp (TMP_VOLUME above)
            "volumes": [TMP_VOLUME],
            "volumeMounts": [TMP_MOUNT],
            # the chart's default, pinned: sealed members are never Ready, so a RollingUpdate
            # StatefulSet would hold Helm's wait (atomic) until it rolls the release back
            "updateStrategyType": "OnDelete",
            "readinessProbe": READINESS_PROBE,
            "extraEnvironmentVars": {"BAO_CACERT": "/openbao/userconfig/openbao-tls/ca.crt"},
            "statefulSet": {
                "securityContext": {
                    "pod": {
                        "runAsNonRoot": True,
                        "runAsUser": NONROOT_UID,
                        "runAsGroup": NONROOT_UID,
                        "fsGroup": NONROOT_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "container": restricted,
                }
            },
            "affinity": {
                "podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "openbao"}},
                            "topologyKey": "kubernetes.io/hostname",
                        }
                    ]
                }
            },
        },
    }


class OpenBao(Component):
    KIND = "OpenBao"

    def build(self, name: str, cfg: StackConfig, depends_on: Deps) -> None:
        child = pulumi.ResourceOptions(parent=self)
        meta = labels(cfg, "openbao", "kms")
        # TLS: a private CA for the listener (and the gateway trusts exactly this CA)
        ca_key = tls.PrivateKey(f"{name}-ca-key", algorithm="ECDSA", ecdsa_curve="P384", opts=child)
        self.ca = tls.SelfSignedCert(
            f"{name}-ca",
            private_key_pem=ca_key.private_key_pem,
            is_ca_certificate=True,
            subject=tls.SelfSignedCertSubjectArgs(
                common_name=f"{cfg.stack} openbao CA", organization="sovereign-llm"
            ),
            validity_period_hours=24 * 365 * 3,
            allowed_uses=["cert_signing", "crl_signing"],
            opts=child,
        )
        key = tls.PrivateKey(f"{name}-tls-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        hosts = [
            "openbao",
            f"openbao.{OPENBAO_NS}.svc",
            f"openbao.{OPENBAO_NS}.svc.cluster.local",
            "*.openbao-internal",
            f"*.openbao-internal.{OPENBAO_NS}.svc.cluster.local",
            "localhost",
        ]
        csr = tls.CertRequest(
            f"{name}-csr",
            private_key_pem=key.private_key_pem,
            dns_names=hosts,
            ip_addresses=["127.0.0.1"],
            subject=tls.CertRequestSubjectArgs(common_name=f"openbao.{OPENBAO_NS}.svc"),
            opts=child,
        )
        cert = tls.LocallySignedCert(
            f"{name}-tls",
            cert_request_pem=csr.cert_request_pem,
            ca_private_key_pem=ca_key.private_key_pem,
            ca_cert_pem=self.ca.cert_pem,
            validity_period_hours=24 * 365,
            early_renewal_hours=24 * 30,
            allowed_uses=["digital_signature", "key_encipherment", "server_auth", "client_auth"],
            opts=child,
        )
        deps = pulumi.ResourceOptions(parent=self, depends_on=depends_on)
        self.tls_secret = k8s.core.v1.Secret(
            f"{name}-tls-secret",
            metadata={"name": "openbao-tls", "namespace": OPENBAO_NS, "labels": meta},
            type="kubernetes.io/tls",
            string_data={
                "tls.crt": cert.cert_pem,
                "tls.key": key.private_key_pem,  # a secret output of pulumi-tls
                "ca.crt": self.ca.cert_pem,
            },
            opts=deps,
        )
        self.ca_for_gateway = k8s.core.v1.ConfigMap(
            f"{name}-ca-gateway",
            metadata={"name": "openbao-ca", "namespace": GATEWAY_NS, "labels": meta},
            data={"ca.crt": self.ca.cert_pem},
            opts=deps,
        )
        self.release = pinned_chart(
            self, f"{name}-release", cfg, chart="openbao", version=cfg.platform.openbao.chart_version,
            repo=CHART_REPO, namespace=OPENBAO_NS,
            values=images.chart_values(cfg, "openbao", cfg.platform.openbao.chart_version, helm_values(cfg)),
            depends_on=[*depends_on, self.tls_secret], wait_s=chart_wait(cfg).budget_s(),
        )  # fmt: skip
        # an uninitialised, sealed OpenBao cannot be configured: phase 2 of a new region
        self.configuration: OpenBaoConfiguration | None = None
        self.snapshots: SnapshotSchedule | None = None
        if cfg.platform.openbao.initialised:
            self.configuration = OpenBaoConfiguration(
                f"{name}-config",
                cfg,
                ca_pem=self.ca.cert_pem,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.release]),
            )
            if cfg.storage.audit_archive is not None:  # the Object Lock bucket the snapshots go to
                self.snapshots = SnapshotSchedule(
                    f"{name}-snapshots",
                    cfg,
                    depends_on=[self.release, self.configuration],
                    opts=pulumi.ResourceOptions(parent=self),
                )
        self.register_outputs({"ca_cert_pem": self.ca.cert_pem})


TRUST_DIR = REPO_ROOT / ".sovereign" / "openbao"


def ca_trust_file(stack: str, ca_pem: str, folder: Path = TRUST_DIR) -> str:
    """The private CA as a file for the pulumi-vault provider, which takes a path only.

    Written from the stack's own state on every run (it is the CA this stack created), so the
    provider verifies OpenBao's certificate instead of skipping verification. A plan has no
    real certificate yet: nothing is written then, the path is still returned."""
    path = folder / f"{stack}-ca.pem"
    if ca_pem.startswith("-----BEGIN CERTIFICATE-----"):
        write_private(path, ca_pem)
    return str(path)


def root_ca(
    name: str, backend: str, common_name: str, opts: pulumi.ResourceOptions
) -> vault.pkisecret.SecretBackendRootCert:
    """A PKI mount's root CA, generated inside OpenBao (its key never leaves it): EC P-384, 5 years."""
    return vault.pkisecret.SecretBackendRootCert(
        name, backend=backend, type="internal", common_name=common_name,
        ttl=str(5 * 365 * 24 * 3600), key_type="ec", key_bits=384, opts=opts,
    )  # fmt: skip


class OpenBaoConfiguration(pulumi.ComponentResource):
    """What ``infra/local/openbao.py`` does for the dev server (the contract's mounts, keys and
    policies, infra/openbao_contract.py), declared for the cluster's OpenBao (the audit device is in
    the server configuration: OpenBao 2.x refuses API-enabled ones)."""

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        ca_pem: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("sovereign:platform:OpenBaoConfiguration", name, None, opts)
        # the token comes from VAULT_TOKEN in the operator's environment, never from the stack
        provider = vault.Provider(
            f"{name}-provider",
            address=cfg.platform.openbao.api_address,
            ca_cert_file=pulumi.Output.from_input(ca_pem).apply(lambda pem: ca_trust_file(cfg.stack, pem)),
            skip_tls_verify=False,
            skip_child_token=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        transit = vault.Mount(f"{name}-transit", path=contract.TRANSIT_MOUNT, type="transit", opts=child)
        after_transit = pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[transit])
        self.tenant_key = vault.transit.SecretBackendKey(
            f"{name}-tenant-data",
            backend=contract.TRANSIT_MOUNT,
            name=contract.TENANT_KEY,
            type="aes256-gcm96",
            derived=True,  # one wrapping key per tenant: the tenant is the derivation context
            deletion_allowed=False,
            exportable=False,
            auto_rotate_period=90 * 24 * 3600,
            opts=after_transit,
        )
        self.audit_key = vault.transit.SecretBackendKey(
            f"{name}-audit-hmac",
            backend=contract.TRANSIT_MOUNT,
            name=contract.AUDIT_KEY,
            type="aes256-gcm96",
            deletion_allowed=False,
            exportable=False,
            opts=after_transit,
        )
        # the patient pseudonyms (issue #27): transit/hmac/sovereign-pseudonym, which the gateway's
        # policy may call and nothing else of this key. HMAC works with every transit key type (each
        # key version carries an HMAC key); aes256-gcm96 like audit-hmac. Never rotated: an HMAC under
        # a new version is another pseudonym for the same patient, so stored items would no longer be
        # found by erasure (Art. 17) or export (Art. 15) unless the store looked each patient up under
        # every version (transit/hmac takes key_version) or re-pseudonymised everything; the store keeps
        # the version beside each pseudonym so a rotation is visible. Not exportable: the key never
        # leaves OpenBao (whoever held it could test guesses of a KVNR against stored pseudonyms);
        # deletion not allowed: losing it makes every stored item unreachable by patient.
        self.pseudonym_key = vault.transit.SecretBackendKey(
            f"{name}-pseudonym",
            backend=contract.TRANSIT_MOUNT,
            name=contract.PSEUDONYM_KEY,
            type="aes256-gcm96",
            deletion_allowed=False,
            exportable=False,
            allow_plaintext_backup=False,
            auto_rotate_period=0,  # 0: no automatic rotation (the tenant-data key's 90 days must not apply)
            opts=after_transit,
        )
        self.manifest_key = vault.transit.SecretBackendKey(
            f"{name}-model-manifests",
            backend=contract.TRANSIT_MOUNT,
            name=cfg.storage.manifest_signing_key,
            type="ed25519",  # signs model manifests (`sovereign models import`); public half checks them
            deletion_allowed=False,
            exportable=False,
            opts=after_transit,
        )
        self.kv = vault.Mount(
            f"{name}-kv", path=contract.KV_MOUNT, type="kv", options={"version": "2"}, opts=child
        )
        pki = vault.Mount(
            f"{name}-pki", path="pki", type="pki", max_lease_ttl_seconds=5 * 365 * 24 * 3600, opts=child
        )
        after_pki = pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[pki])
        # a restored OpenBao (DR takeover) already holds the CA on each PKI mount: generating a root
        # there would add a second CA with a new key (POST <mount>/root/generate/internal); its
        # default issuer is read instead (restored_pki, docs/backup-restore.md)
        restored = cfg.platform.openbao.restored_pki
        self.pki_root: pulumi.Resource = (
            pki
            if restored
            else root_ca(f"{name}-pki-root", "pki", f"{cfg.stack} inference mTLS CA", after_pki)
        )
        # mTLS between the gateway and vLLM: the inference servers' certificates also serve as
        # client certificates for their own exec probes; Prometheus scrapes with metrics-client
        self.pki_roles = {
            role: vault.pkisecret.SecretBackendRole(
                f"{name}-pki-{role}",
                backend="pki",
                name=role,
                allowed_domains=domains,
                allow_subdomains=True,
                allow_bare_domains=True,
                allow_ip_sans=True,
                server_flag=server,
                client_flag=True,
                key_type="ec",
                key_bits=256,
                max_ttl=str(CERT_TTL_S),
                ttl=str(CERT_TTL_S),
                opts=after_pki,
            )
            for role, domains, server in (
                ("gateway-client", [f"gateway.{GATEWAY_NS}.svc"], False),
                ("inference-server", [f"{INFERENCE_NS}.svc"], True),
                ("metrics-client", [f"prometheus.{cfg.platform.monitoring_namespace}.svc"], False),
            )
        }
        self.provider = provider
        self.pki_root_ready: list[pulumi.Resource] = [self.pki_root, *self.pki_roles.values()]
        # the front door's own CA (the one Magento trusts), on a mount of its own: its role can
        # issue a server certificate for the load balancer's host name only, so that trust never
        # extends to the internal mTLS names, and the inference CA stays unknown to Magento
        ingress_pki = vault.Mount(
            f"{name}-pki-ingress",
            path=INGRESS_PKI_MOUNT,
            type="pki",
            max_lease_ttl_seconds=5 * 365 * 24 * 3600,
            opts=child,
        )
        after_ingress_pki = pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[ingress_pki])
        if restored:
            self.ingress_pki_root: pulumi.Resource = ingress_pki
            # the restored mount's default issuer ("default" names it: GET <mount>/issuer/default)
            restored_ca = vault.pkisecret.get_backend_issuer_output(
                backend=INGRESS_PKI_MOUNT,
                issuer_ref="default",
                opts=pulumi.InvokeOutputOptions(parent=self, provider=provider, depends_on=[ingress_pki]),
            )
            ingress_ca_pem: pulumi.Output[str] = restored_ca.certificate
        else:
            root = root_ca(
                f"{name}-pki-ingress-root",
                INGRESS_PKI_MOUNT,
                f"{cfg.stack} gateway ingress CA",
                after_ingress_pki,
            )
            self.ingress_pki_root, ingress_ca_pem = root, root.certificate
        self.ingress_pki_role = vault.pkisecret.SecretBackendRole(
            f"{name}-pki-{INGRESS_ROLE}",
            backend=INGRESS_PKI_MOUNT,
            name=INGRESS_ROLE,
            allowed_domains=[cfg.load_balancer.hostname],
            allow_bare_domains=True,  # exactly the host name: no subdomain, glob, wildcard or localhost
            allow_subdomains=False,
            allow_glob_domains=False,
            allow_wildcard_certificates=False,
            allow_localhost=False,
            allow_any_name=False,
            enforce_hostnames=True,
            allow_ip_sans=True,  # the load balancer's private address (a role cannot restrict IP SANs)
            server_flag=True,
            client_flag=False,
            key_type="ec",
            key_bits=256,
            max_ttl=str(CERT_TTL_S),
            ttl=str(CERT_TTL_S),
            opts=after_ingress_pki,
        )
        self.ingress_ca_pem: pulumi.Output[str] = ingress_ca_pem
        self.ingress_pki_ready: list[pulumi.Resource] = [self.ingress_pki_root, self.ingress_pki_role]
        self.policies = [
            vault.Policy(f"{name}-policy-{pname}", name=pname, policy=body, opts=child)
            for pname, body in (
                (contract.GATEWAY_POLICY_NAME, GATEWAY_POLICY),
                (contract.AUDITOR_POLICY_NAME, AUDITOR_POLICY),
                (contract.PUBLISHER_POLICY_NAME, publisher_policy(cfg)),
                (SNAPSHOT_POLICY_NAME, SNAPSHOT_POLICY),
                (INCIDENT_POLICY_NAME, INCIDENT_POLICY),
            )
        ]
        k8s_auth = vault.AuthBackend(f"{name}-k8s-auth", type="kubernetes", path="kubernetes", opts=child)
        after_auth = pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[k8s_auth])
        self.k8s_auth_config = vault.kubernetes.AuthBackendConfig(
            f"{name}-k8s-auth-config",
            backend="kubernetes",
            kubernetes_host="https://kubernetes.default.svc:443",
            disable_local_ca_jwt=False,  # OpenBao runs in the cluster: its own SA token reviews tokens
            opts=after_auth,
        )
        self.gateway_role = vault.kubernetes.AuthBackendRole(
            f"{name}-k8s-role-gateway",
            backend="kubernetes",
            role_name=OPENBAO_ROLE,
            bound_service_account_names=[GATEWAY_SA],
            bound_service_account_namespaces=[GATEWAY_NS],
            audience="openbao",
            token_policies=[contract.GATEWAY_POLICY_NAME],
            token_ttl=3600,
            token_max_ttl=24 * 3600,
            opts=after_auth,
        )
        # the snapshot CronJob's own role: its service account, its policy, a token for one run
        self.snapshot_role = vault.kubernetes.AuthBackendRole(
            f"{name}-k8s-role-snapshot",
            backend="kubernetes",
            role_name=SNAPSHOT_APP,
            bound_service_account_names=[SNAPSHOT_APP],
            bound_service_account_namespaces=[OPENBAO_NS],
            audience="openbao",
            token_policies=[SNAPSHOT_POLICY_NAME],
            token_ttl=900,
            token_max_ttl=900,
            opts=after_auth,
        )
        self.register_outputs({"gateway_role": OPENBAO_ROLE})


def mtls_secret(
    parent: pulumi.Resource,
    resource_name: str,
    cfg: StackConfig,
    openbao: OpenBaoConfiguration,
    *,
    role: str,
    common_name: str,
    namespace: str,
    secret_name: str,
    ip_sans: list[str] | None = None,
    alt_names: list[str] | None = None,
    backend: str = MTLS_PKI_MOUNT,
    component: str = "mtls",
) -> tuple[k8s.core.v1.Secret, pulumi.Output[str]]:
    """A certificate from OpenBao's PKI (role *role* of the mount *backend*: the mTLS CA by
    default, ``INGRESS_PKI_MOUNT`` for the front door) as a ``kubernetes.io/tls`` Secret with the CA.

    Returns the Secret and the certificate's serial number (put it in the pod template's
    annotations so a renewed certificate rolls the pods)."""
    ready = openbao.ingress_pki_ready if backend == INGRESS_PKI_MOUNT else openbao.pki_root_ready
    cert = vault.pkisecret.SecretBackendCert(
        f"{resource_name}-cert",
        backend=backend,
        name=role,
        common_name=common_name,
        ip_sans=ip_sans or [],
        alt_names=alt_names or [],
        ttl=str(CERT_TTL_S),
        auto_renew=True,
        min_seconds_remaining=CERT_RENEW_BEFORE_S,
        opts=pulumi.ResourceOptions(parent=parent, provider=openbao.provider, depends_on=ready),
    )
    secret = k8s.core.v1.Secret(
        f"{resource_name}-secret",
        metadata={"name": secret_name, "namespace": namespace, "labels": labels(cfg, secret_name, component)},
        type="kubernetes.io/tls",
        string_data={"tls.crt": cert.certificate, "tls.key": cert.private_key, "ca.crt": cert.issuing_ca},
        opts=pulumi.ResourceOptions(parent=parent),
    )
    return secret, cert.serial_number


# the CronJob's object-storage key: a stack secret like the audit-ship sidecar's (secrets.py), an
# access key of the object storage that may only put objects under openbao_backup.SNAPSHOT_PREFIX
SNAPSHOT_CREDENTIALS = OPENBAO_SNAPSHOT.name  # a missing key blocks `pulumi up` (secrets.missing)
SNAPSHOT_SECRET_KEYS = OPENBAO_SNAPSHOT.keys
# the copy location's key (storage.openbao_snapshot_copy), a file of its own beside the primary's
SNAPSHOT_COPY_CREDENTIALS = OPENBAO_SNAPSHOT_COPY.name
SNAPSHOT_COPY_KEYS_DIR = "/etc/object-storage-copy"


def snapshot_settings(cfg: StackConfig) -> dict[str, object]:
    """The CronJob's settings file (infra/openbao_backup.py SnapshotSettings) for this stack."""
    settings = openbao_backup.SnapshotSettings(
        openbao_address=f"https://openbao.{OPENBAO_NS}.svc:{OPENBAO_PORT}",
        ca_file=Path(SNAPSHOT_CA),
        kubernetes_role=SNAPSHOT_APP,
        target=openbao_backup.target(cfg),
        copy_target=None
        if cfg.storage.openbao_snapshot_copy is None
        else openbao_backup.target(cfg, "copy").model_copy(
            update={"credentials_file": Path(SNAPSHOT_COPY_KEYS_DIR) / "credentials"}
        ),
    )
    return settings.model_dump(mode="json", exclude_none=True)


def snapshot_pod(cfg: StackConfig) -> dict[str, object]:
    """The pod of each snapshot Job: `sovereign openbao snapshot` from the gateway image, logged in
    with Kubernetes auth as SNAPSHOT_APP, the object-storage key mounted as a credentials file (and the
    copy location's, storage.openbao_snapshot_copy, as a second file its settings name)."""
    copy_keys: dict[str, list[dict[str, object]]] = {"mounts": [], "volumes": []}
    if cfg.storage.openbao_snapshot_copy is not None:
        copy_keys["mounts"].append({"name": "snapshot-copy-keys", "mountPath": SNAPSHOT_COPY_KEYS_DIR,
                                    "readOnly": True})  # fmt: skip
        copy_keys["volumes"].append({"name": "snapshot-copy-keys",
                                     "secret": {"secretName": SNAPSHOT_COPY_CREDENTIALS}})  # fmt: skip
    container = {
        "name": "snapshot",
        "image": images.reference(cfg, cfg.platform.gateway.image),
        "imagePullPolicy": "Always",
        "args": ["openbao", "snapshot", "--config", SNAPSHOT_SETTINGS],
        "env": [{"name": "AWS_SHARED_CREDENTIALS_FILE", "value": "/etc/object-storage/credentials"}],
        "resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"cpu": "500m", "memory": "256Mi"},
        },
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "config", "mountPath": str(Path(SNAPSHOT_SETTINGS).parent), "readOnly": True},
            {"name": "openbao-ca", "mountPath": str(Path(SNAPSHOT_CA).parent), "readOnly": True},
            {"name": "snapshot-keys", "mountPath": "/etc/object-storage", "readOnly": True},
            *copy_keys["mounts"],
            # the snapshot is streamed to a private temporary file before the upload
            {"name": "tmp", "mountPath": "/tmp"},
            {
                "name": "sa-token",
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                "readOnly": True,
            },
        ],
    }
    token = {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600, "audience": "openbao"}}
    return {
        "serviceAccountName": SNAPSHOT_APP,
        "automountServiceAccountToken": False,  # the projected token below is the only one
        "restartPolicy": "Never",
        "securityContext": pod_security(),
        "containers": [container],
        "volumes": [
            {"name": "config", "configMap": {"name": "openbao-snapshot-config"}},
            # the CA certificate only: the listener's key in the same Secret is not projected
            {"name": "openbao-ca",
             "secret": {"secretName": "openbao-tls", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"name": "snapshot-keys", "secret": {"secretName": SNAPSHOT_CREDENTIALS}},
            *copy_keys["volumes"],
            {"name": "tmp", "emptyDir": {"sizeLimit": f"{cfg.platform.openbao.storage_gi}Gi"}},
            {"name": "sa-token", "projected": {"sources": [token]}},
        ],
    }  # fmt: skip


class SnapshotSchedule(Component):
    """OpenBao Raft snapshots on a schedule into the stack's Object Lock bucket (docs/backup-restore.md):
    a CronJob in the OpenBao namespace with a service account of its own, whose Kubernetes-auth role
    carries only the snapshot policy, and an object-storage key that may only write the snapshots."""

    KIND = "OpenBaoSnapshots"

    def build(self, name: str, cfg: StackConfig, depends_on: Deps) -> None:
        meta = labels(cfg, SNAPSHOT_APP, "backup")
        child = pulumi.ResourceOptions(parent=self, depends_on=depends_on)
        self.service_account = k8s.core.v1.ServiceAccount(
            f"{name}-sa",
            metadata={"name": SNAPSHOT_APP, "namespace": OPENBAO_NS, "labels": meta},
            automount_service_account_token=False,
            opts=child,
        )
        self.config = k8s.core.v1.ConfigMap(
            f"{name}-config",
            metadata={"name": "openbao-snapshot-config", "namespace": OPENBAO_NS, "labels": meta},
            data={"snapshot.yaml": yaml.safe_dump(snapshot_settings(cfg), sort_keys=True)},
            opts=child,
        )
        # the object-storage keys (stack secrets; a missing one blocks `pulumi up`: secrets.missing)
        self.credentials = credentials_secret(f"{name}-credentials", cfg, OPENBAO_SNAPSHOT, child)
        self.copy_credentials: k8s.core.v1.Secret | None = None
        if cfg.storage.openbao_snapshot_copy is not None:
            self.copy_credentials = credentials_secret(
                f"{name}-copy-credentials", cfg, OPENBAO_SNAPSHOT_COPY, child
            )
        keys = [self.credentials, *([self.copy_credentials] if self.copy_credentials else [])]
        self.cronjob = k8s.batch.v1.CronJob(
            f"{name}-cronjob",
            metadata={"name": SNAPSHOT_APP, "namespace": OPENBAO_NS, "labels": meta},
            spec={
                "schedule": SNAPSHOT_SCHEDULE,
                "timeZone": "Etc/UTC",
                "concurrencyPolicy": "Forbid",
                "startingDeadlineSeconds": 1800,
                "successfulJobsHistoryLimit": 3,
                "failedJobsHistoryLimit": 3,
                "jobTemplate": {
                    "metadata": {"labels": meta},
                    "spec": {
                        "backoffLimit": 2,
                        "activeDeadlineSeconds": 1800,
                        "ttlSecondsAfterFinished": 7 * 24 * 3600,
                        "template": {"metadata": {"labels": meta}, "spec": snapshot_pod(cfg)},
                    },
                },
            },
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[*depends_on, self.service_account, self.config, *keys],
            ),
        )
        self.register_outputs({"schedule": SNAPSHOT_SCHEDULE})
