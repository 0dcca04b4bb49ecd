"""What the gateway tells Prometheus about shipping its audit trail (gateway/scrape_metrics.py):
the oldest sealed segment the archive lacks grows older while nobody ships, and drops once
`audit_archive.ship(..., prune=True)` has run against the real (moto) S3 server; the last round's
time is the shipper's marker."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.audit import AuditKey, AuditLog, local_segments, shipped_marker, shipping_state
from gateway.scrape_metrics import COLLECTOR
from gateway.settings import GatewaySettings
from gateway.upstream import PeerCertificates
from infra import audit_archive, objectstore
from tests.storage.conftest import StackFactory

KEY = os.urandom(32)
AGE = "sovereign_gateway_audit_oldest_unshipped_segment_age_seconds"
COUNT = "sovereign_gateway_audit_unshipped_segments"
LAST = "sovereign_gateway_audit_last_ship_timestamp_seconds"


class StaticKeys:
    def current(self) -> AuditKey:
        return AuditKey(kid="kid-1", wrapped="wrapped-1", key=KEY)


@pytest.fixture
def archive(stack: StackFactory) -> audit_archive.Archive:
    cfg = stack(storage={"audit_retention_days": 2})
    objectstore.bootstrap(cfg)
    return audit_archive.from_stack(cfg, "gateway-0")


def scrape(trail: Path) -> dict[str, float]:
    # the archive settings only say that the pod ships (the collector never contacts the endpoint)
    archive = {"url": "s3://audit/gateway/", "endpoint": "https://fsn1.your-objectstorage.com"}
    COLLECTOR.bind(GatewaySettings(audit={"path": str(trail), "archive": archive}), PeerCertificates())
    return {
        s.name: s.value
        for family in text_string_to_metric_families(generate_latest().decode())
        for s in family.samples
        if not s.labels
    }


def filled(tmp_path: Path) -> tuple[Path, AuditLog]:
    """A trail of 24 records in small segments: the older ones sealed, the newest open."""
    trail = tmp_path / "audit" / "audit.jsonl"
    log = AuditLog(trail, StaticKeys(), fsync=False, segment_max_bytes=1500)  # type: ignore[arg-type]
    for i in range(24):
        log.append({"request_id": f"r{i}", "status": 200, "pad": "x" * 200})
    return trail, log


def test_unshipped_segments_age_until_shipped_then_drop(
    archive: audit_archive.Archive, tmp_path: Path
) -> None:
    trail, log = filled(tmp_path)
    sealed = local_segments(trail)
    assert len(sealed) >= 3
    # sealed ten minutes ago (a segment's mtime is its sealing), nobody has shipped since
    sealed_at = time.time() - 600
    for _, file in sealed:
        os.utime(file, (sealed_at, sealed_at))
    start = time.time()
    first = scrape(trail)
    assert first[COUNT] == len(sealed)
    assert start - sealed_at <= first[AGE] <= time.time() - sealed_at
    assert LAST not in first  # no round has completed yet
    time.sleep(1.1)
    assert scrape(trail)[AGE] >= first[AGE] + 1  # grows while the shipper does not run

    before = time.time()
    result = audit_archive.ship(trail, archive, prune=True)
    assert len(result.shipped) == len(sealed) and len(local_segments(trail)) == 1  # the newest stays
    after = scrape(trail)
    assert after[COUNT] == 0 and after[AGE] == 0  # the copy kept for the chain is shipped
    assert before - 1 <= after[LAST] <= time.time() + 1
    last_seq = max(a.last for a in audit_archive.archived(archive))
    assert shipped_marker(trail).read_text().strip() == str(last_seq + 1)

    # the next sealed segment waits again, from its sealing
    for i in range(24, 40):
        log.append({"request_id": f"r{i}", "status": 200, "pad": "x" * 200})
    log.close()
    waiting = scrape(trail)
    assert waiting[COUNT] >= 1 and 0 <= waiting[AGE] <= time.time() - before  # sealed after `before`
    assert waiting[LAST] == after[LAST]


def test_a_failed_round_leaves_the_last_success_and_the_waiting_segments(
    archive: audit_archive.Archive, tmp_path: Path
) -> None:
    trail, log = filled(tmp_path)
    log.close()
    audit_archive.ship(trail, archive)  # without --prune: every local copy stays, all shipped
    state = shipping_state(trail)
    assert state.unshipped == 0 and state.last_round_at is not None
    # a gap: the oldest local segment is taken away, a newer one cannot be shipped after it
    broken = tmp_path / "other" / "audit.jsonl"
    log = AuditLog(broken, StaticKeys(), fsync=False, segment_max_bytes=1500)  # type: ignore[arg-type]
    for i in range(40):
        log.append({"request_id": f"r{i}", "status": 200, "pad": "x" * 200})
    log.close()
    (_, oldest), *_ = local_segments(broken)
    oldest.chmod(0o600)
    oldest.unlink()
    with pytest.raises(objectstore.StorageError, match="are missing"):
        audit_archive.ship(
            broken, audit_archive.Archive(**{**vars(archive), "prefix": archive.prefix + "x/"})
        )
    failed = scrape(broken)
    assert LAST not in failed and failed[COUNT] == len(local_segments(broken))
