"""The platform layer: everything on Kubernetes, through one provider built from the cluster's
kubeconfig (a secret output of the RKE2 bootstrap)."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from infra import images
from infra.config import StackConfig
from infra.k8s_platform.alerts import AlertRules
from infra.k8s_platform.cluster_services import ClusterServices
from infra.k8s_platform.dashboards import Dashboards
from infra.k8s_platform.gateway import GatewayDeployment
from infra.k8s_platform.gpu import Autoscaling, GpuSupport
from infra.k8s_platform.inference import ModelServer
from infra.k8s_platform.ingress import GatewayIngress, IngressController
from infra.k8s_platform.memory_store import MemoryStore, MemoryStoreOperator
from infra.k8s_platform.monitoring import Monitoring
from infra.k8s_platform.namespaces import Namespaces
from infra.k8s_platform.network_policies import NetworkPolicies
from infra.k8s_platform.observability import Observability
from infra.k8s_platform.openbao import OpenBao
from infra.k8s_platform.secrets import StackSecrets
from infra.k8s_platform.upgrades import SystemUpgrade


class PlatformLayer(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        kubeconfig: pulumi.Input[str],
        depends_on: list[pulumi.Resource],
        network_id: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("sovereign:platform:PlatformLayer", name, None, opts)
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=kubeconfig,
            # replaced only when this changes: a new tunnel port or a re-run of the bootstrap
            # (whose kubeconfig is unknown during preview) would otherwise replace the provider and
            # with it every object of the platform (pulumi-kubernetes DiffConfig: "If present, this
            # value will control the provider's replacement behavior")
            cluster_identifier=f"{cfg.stack}-rke2",
            enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on),
        )
        # children inherit the provider from this component
        scoped = pulumi.ResourceOptions(parent=self, providers={"kubernetes": self.provider})
        # first: the cloud controller initialises the cloud nodes (until then they carry the
        # node.cloudprovider.kubernetes.io/uninitialized taint), then the storage provisioners
        self.cluster = ClusterServices(f"{name}-cluster", cfg, network_id=network_id, opts=scoped)
        self.namespaces = Namespaces(f"{name}-ns", cfg, opts=scoped)
        ns = list(self.namespaces.by_name.values())
        self.network = NetworkPolicies(f"{name}-netpol", cfg, depends_on=ns, opts=scoped)
        # no workload starts before its policies, the initialised nodes and the StorageClasses exist
        isolated = [*ns, *self.network.policies, self.cluster.ccm, *self.cluster.storage]
        # the prometheus-operator CRDs before every ServiceMonitor user (KEDA, GPU operator, ours)
        self.monitoring = Monitoring(f"{name}-monitoring", cfg, depends_on=isolated, opts=scoped)
        monitored = [*isolated, self.monitoring.release]
        # the alert rules (PrometheusRule: its CRD comes with the monitoring release), phase 1 too
        self.alerts = AlertRules(f"{name}-alerts", cfg, depends_on=[self.monitoring.release], opts=scoped)
        # the service owner's dashboards (ConfigMaps the monitoring release's Grafana sidecar loads)
        self.dashboards = Dashboards(
            f"{name}-dashboards", cfg, depends_on=[self.monitoring.release], opts=scoped
        )
        self.openbao = OpenBao(f"{name}-openbao", cfg, depends_on=isolated, opts=scoped)
        self.gpu = GpuSupport(f"{name}-gpu", cfg, depends_on=monitored, opts=scoped)
        self.autoscaling = Autoscaling(f"{name}-autoscaling", cfg, depends_on=monitored, opts=scoped)
        # the front door's controller (RKE2's ingress-nginx on the load balancer's NodePort): needs no
        # key, so phase 1 too; the gateway's policy admits its pods before it forwards anything
        self.ingress_controller = IngressController(
            f"{name}-ingress-controller", cfg, depends_on=list(self.network.policies), opts=scoped
        )
        # the memory store's operator (its CRDs) and encrypted StorageClass: phase 1, needs no key
        self.memory_operator: MemoryStoreOperator | None = None
        if cfg.platform.memory_store.enabled:
            self.memory_operator = MemoryStoreOperator(
                f"{name}-memory-operator", cfg, depends_on=isolated, opts=scoped
            )
        operators = [self.memory_operator] if self.memory_operator else []
        self.memory: MemoryStore | None = None
        self.models: list[ModelServer] = []
        self.gateway: GatewayDeployment | None = None
        self.observability: Observability | None = None
        self.ingress: GatewayIngress | None = None
        configured = self.openbao.configuration
        if configured is None:
            # phase 1 of a new region: OpenBao is installed but sealed until the custodians
            # initialise it; everything that needs its keys or certificates waits for phase 2
            pulumi.log.warn(
                "platform.openbao.initialised is false: OpenBao is installed but not configured; the "
                "gateway, the models and their certificates follow once the custodians have initialised "
                "and unsealed it (docs/platform.md, OpenBao unseal design)",
                resource=self,
            )
            self.upgrades = self._upgrades(
                name,
                cfg,
                [
                    *isolated,
                    self.monitoring,
                    self.openbao,
                    self.gpu,
                    self.autoscaling,
                    self.ingress_controller,
                    *operators,
                ],
                scoped,
            )
            self.register_outputs({})
            return
        # the Secrets made of stack secrets (client keys, object-storage keys): before what mounts them
        self.secrets = StackSecrets(f"{name}-secrets", cfg, depends_on=ns, opts=scoped)
        mounted = list(self.secrets.by_name.values())
        prometheus = f"http://prometheus-operated.{cfg.platform.monitoring_namespace}.svc:9090"
        self.models = [
            ModelServer(
                f"{name}-model-{model.name}",
                cfg,
                model,
                # `sovereign weights` ships in the gateway image (the EU mirror, by digest)
                tools_image=images.reference(cfg, cfg.platform.gateway.image),
                prometheus_url=prometheus,
                openbao=configured,
                depends_on=[*isolated, *mounted, self.gpu.release, self.autoscaling.release],
                opts=scoped,
            )
            for model in cfg.platform.models
        ]
        # the Cluster after the operator's release (its CRDs) and the encrypted StorageClass; the
        # gateway after the store's DSN Secret and CA it mounts
        store: list[pulumi.Resource] = []
        if self.memory_operator is not None:
            self.memory = MemoryStore(
                f"{name}-memory",
                cfg,
                depends_on=[*isolated, self.memory_operator.release, self.memory_operator.storage_class],
                opts=scoped,
            )
            store = [self.memory.gateway_dsn, self.memory.gateway_ca]
        self.gateway = GatewayDeployment(
            f"{name}-gateway",
            cfg,
            openbao=configured,
            depends_on=[*isolated, *mounted, configured, *store],
            opts=scoped,
        )
        # the gateway behind the private load balancer: TLS from the front door's own CA (pki-ingress)
        self.ingress = GatewayIngress(
            f"{name}-ingress",
            cfg,
            openbao=configured,
            depends_on=[self.gateway, self.ingress_controller],
            opts=scoped,
        )
        self.observability = Observability(
            f"{name}-observability", cfg, openbao=configured, depends_on=monitored, opts=scoped
        )
        everything = [
            *isolated,
            self.monitoring,
            self.openbao,
            self.gpu,
            self.autoscaling,
            self.secrets,
            *self.models,
            self.gateway,
            self.ingress_controller,
            self.ingress,
            *operators,
            *([self.memory] if self.memory else []),
        ]
        self.upgrades = self._upgrades(name, cfg, [*everything, self.observability], scoped)
        self.register_outputs(
            {"gateway": "gateway.sovereign-gateway.svc", "ingress_host": cfg.load_balancer.hostname}
        )

    @staticmethod
    def _upgrades(
        name: str, cfg: StackConfig, before: list[pulumi.Resource], opts: pulumi.ResourceOptions
    ) -> SystemUpgrade:
        """RKE2 upgrades (phase 1 too), declared after everything else: a new Plan makes the
        controller cordon (and, for agents, drain) every node once, one at a time, even at the
        version it runs (v0.16.3 SelectConcurrentNodes selects each node without the Plan's hash
        label), so the rest of the platform is in place before that begins."""
        return SystemUpgrade(f"{name}-upgrades", cfg, depends_on=before, opts=opts)
