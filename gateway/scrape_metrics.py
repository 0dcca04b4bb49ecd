"""Gateway series read when Prometheus scrapes ``/metrics``, not kept up to date by a thread.

- ``sovereign_gateway_audit_disk_free_bytes`` and ``sovereign_gateway_audit_disk_reserve_bytes``:
  ``os.statvfs`` of the audit trail's folder (free space for an unprivileged writer, as the trail
  itself measures it) and the reserve below which the gateway refuses every request with 503
  ``audit_unavailable`` (``audit.min_free_bytes``, at least ``RECORD_HEADROOM_BYTES``).
- with ``audit.archive`` set (the pod runs the audit-ship sidecar):
  ``sovereign_gateway_audit_unshipped_segments``, the sealed segments the archive does not hold
  yet, ``sovereign_gateway_audit_oldest_unshipped_segment_age_seconds`` (0 when none waits), from
  the local segments and the shipper's ``<trail>.shipped`` marker, and
  ``sovereign_gateway_audit_last_ship_timestamp_seconds``, when the shipper last completed a
  round (absent until it has once);
- ``sovereign_gateway_certificate_expiry_timestamp_seconds{certificate}``: notAfter (Unix time)
  of ``client`` (the upstreams' ``tls.cert_file``), ``upstream-ca`` (``tls.ca_file``),
  ``upstream-server`` (the certificate the upstreams presented in their latest handshakes,
  gateway/upstream.py ``PeerCertificates``) and ``ingress`` (``ingress_cert_file``); the
  earliest when several files or upstreams share a label, every certificate of a PEM file
  counted (a chain or a CA bundle expires with its first certificate).

No path, host or file name becomes a label: the label values above are the only ones. Alert
rules on these series: infra/k8s_platform/alerts.py; what to do: docs/operations.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from cryptography import x509
from prometheus_client.core import REGISTRY, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.audit import free_bytes, reserve_bytes, shipping_state
from gateway.settings import GatewaySettings
from gateway.upstream import PeerCertificates

CERTIFICATES = ("client", "upstream-ca", "upstream-server", "ingress")


def not_after(path: Path) -> float | None:
    """The earliest notAfter (Unix time) of the PEM certificates in *path*; None if it cannot be read."""
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError):
        return None
    return min(c.not_valid_after_utc.timestamp() for c in certs) if certs else None


class GatewayCollector(Collector):
    """The scrape-time series of the gateway bound last (one per process)."""

    def __init__(self) -> None:
        self._settings: GatewaySettings | None = None
        self._peers: PeerCertificates | None = None

    def bind(self, settings: GatewaySettings, peers: PeerCertificates) -> None:
        self._settings, self._peers = settings, peers

    def describe(self) -> list[Metric]:
        return []  # names vary with the settings; nothing else registers them

    def collect(self) -> Iterator[Metric]:
        settings = self._settings
        if settings is None:
            return
        audit = settings.audit
        free = GaugeMetricFamily(
            "sovereign_gateway_audit_disk_free_bytes",
            "Free space on the audit trail's disk for the gateway (statvfs f_bavail).",
        )
        free.add_metric([], free_bytes(audit.path.parent))
        yield free
        reserve = GaugeMetricFamily(
            "sovereign_gateway_audit_disk_reserve_bytes",
            "Below this much free space the gateway refuses requests (audit.min_free_bytes).",
        )
        reserve.add_metric([], reserve_bytes(audit.min_free_bytes))
        yield reserve
        if audit.archive is not None:
            yield from self._shipping(audit.path)
        yield self._certificates(settings)

    @staticmethod
    def _shipping(path: Path) -> Iterator[Metric]:
        state = shipping_state(path)
        count = GaugeMetricFamily(
            "sovereign_gateway_audit_unshipped_segments",
            "Sealed audit segments the Object Lock archive does not hold yet.",
        )
        count.add_metric([], state.unshipped)
        yield count
        age = GaugeMetricFamily(
            "sovereign_gateway_audit_oldest_unshipped_segment_age_seconds",
            "Seconds since the oldest sealed audit segment not yet shipped was sealed (0: none waits).",
        )
        oldest = state.oldest_sealed_at
        age.add_metric([], 0.0 if oldest is None else max(0.0, time.time() - oldest))
        yield age
        if state.last_round_at is not None:
            last = GaugeMetricFamily(
                "sovereign_gateway_audit_last_ship_timestamp_seconds",
                "When `sovereign audit ship` last completed a round for this trail (Unix time).",
            )
            last.add_metric([], state.last_round_at)
            yield last

    def _certificates(self, settings: GatewaySettings) -> Metric:
        found: dict[str, list[float | None]] = {name: [] for name in CERTIFICATES}
        files = {(u.tls.cert_file, "client") for u in settings.upstreams.values() if u.tls is not None}
        files |= {(u.tls.ca_file, "upstream-ca") for u in settings.upstreams.values() if u.tls is not None}
        if settings.ingress_cert_file is not None:
            files.add((settings.ingress_cert_file, "ingress"))
        for path, name in files:
            found[name].append(not_after(path))
        if self._peers is not None:
            found["upstream-server"].append(self._peers.soonest())
        family = GaugeMetricFamily(
            "sovereign_gateway_certificate_expiry_timestamp_seconds",
            "When the certificate expires (notAfter, Unix time); the earliest of those sharing a label.",
            labels=["certificate"],
        )
        for name in CERTIFICATES:
            known = [t for t in found[name] if t is not None]
            if known:
                family.add_metric([name], min(known))
        return family


COLLECTOR = GatewayCollector()
REGISTRY.register(COLLECTOR)
