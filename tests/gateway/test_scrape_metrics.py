"""The gateway's scrape-time series (gateway/scrape_metrics.py) against real sources: the audit
disk's statvfs and the reserve that refuses requests, the notAfter of the mTLS certificates on
disk and of the one a real TLS upstream presents, and 503 answers counted by their code."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import UNAVAILABLE_CODES
from gateway.audit import RECORD_HEADROOM_BYTES, AuditKey, AuditLog
from gateway.clientkeys import ClientKeyStore
from gateway.scrape_metrics import CERTIFICATES, COLLECTOR, not_after
from gateway.settings import GatewaySettings
from gateway.upstream import PeerCertificates
from tests import pki
from tests.support import (
    REPO,
    Bao,
    Upstream,
    double,
    free_port,
    gateway_config,
    running_gateway,
    wait_for_port,
)

CERT = "sovereign_gateway_certificate_expiry_timestamp_seconds"
BODY = {"messages": [{"role": "user", "content": "hello"}], "sovereign": {"use_case": "order-support"}}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape_here(settings: GatewaySettings) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    COLLECTOR.bind(settings, PeerCertificates())
    return samples(generate_latest().decode())


# --- the audit disk ------------------------------------------------------------------------------


@pytest.fixture
def quiet_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on a tmpfs (/dev/shm) when there is one: nothing else writes there while we compare."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="sovereign-test-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class StaticKeys:
    def current(self) -> AuditKey:
        return AuditKey(kid="kid-1", wrapped="wrapped-1", key=b"k" * 32)


def test_audit_disk_free_is_statvfs_and_the_reserve_the_setting(quiet_disk: Path) -> None:
    folder = quiet_disk
    settings = GatewaySettings(audit={"path": str(folder / "audit.jsonl"), "min_free_bytes": 5 << 20})
    got = scrape_here(settings)
    st = os.statvfs(folder)
    free = got[("sovereign_gateway_audit_disk_free_bytes", ())]
    assert abs(free - st.f_bavail * st.f_frsize) <= 1 << 20  # what an unprivileged writer may use
    assert got[("sovereign_gateway_audit_disk_reserve_bytes", ())] == 5 << 20
    # a reserve below the records' own headroom: the headroom is what refuses
    small = GatewaySettings(audit={"path": str(folder / "audit.jsonl"), "min_free_bytes": 0})
    assert scrape_here(small)[("sovereign_gateway_audit_disk_reserve_bytes", ())] == RECORD_HEADROOM_BYTES
    # no archive configured: no shipping series (nothing would ship them)
    assert not any(name.startswith("sovereign_gateway_audit_unshipped") for name, _ in got)


def test_free_below_the_reserve_is_exactly_when_the_trail_refuses(quiet_disk: Path) -> None:
    folder = quiet_disk
    st = os.statvfs(folder)
    free_now = st.f_bavail * st.f_frsize
    for reserve, refuses in ((free_now + (256 << 20), True), (max(free_now - (256 << 20), 0), False)):
        settings = GatewaySettings(audit={"path": str(folder / "audit.jsonl"), "min_free_bytes": reserve})
        got = scrape_here(settings)
        below = (
            got[("sovereign_gateway_audit_disk_free_bytes", ())]
            < got[("sovereign_gateway_audit_disk_reserve_bytes", ())]
        )
        log = AuditLog(folder / "audit.jsonl", StaticKeys(), fsync=False, min_free_bytes=reserve)
        assert below is refuses and log.space_ok() is not refuses
        log.close()


# --- certificates ----------------------------------------------------------------------------------


def _issue(issuer: pki.Issued | None, name: str, days: int, **usage: bool) -> pki.Issued:
    """A certificate valid for *days* (tests/pki.py's are all valid for one day: these differ,
    so a value under the wrong label shows)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        if usage.get("server"):
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
    signer = issuer.key if issuer else key
    return pki.Issued(builder.sign(signer, hashes.SHA256()), key)


def test_certificate_expiry_is_each_certificates_not_after(tmp_path: Path, bao: Bao) -> None:
    folder = tmp_path / "pki"
    ca = _issue(None, "inference mTLS CA", 40)
    folder.mkdir()
    (folder / "ca.crt").write_bytes(ca.cert_pem())
    server_crt, server_key = _issue(ca, "vllm", 10, server=True).write(folder, "server")
    client_crt, client_key = _issue(ca, "gateway", 20, client=True).write(folder, "client")
    ingress_crt, _ = _issue(_issue(None, "front door CA", 60), "llm.example.de", 30).write(folder, "ingress")
    expected = {
        "client": not_after(client_crt),
        "upstream-ca": not_after(folder / "ca.crt"),
        "upstream-server": not_after(server_crt),
        "ingress": not_after(ingress_crt),
    }
    assert set(expected) == set(CERTIFICATES) and len(set(expected.values())) == 4

    port = free_port()
    with (tmp_path / "upstream.log").open("wb") as out:
        proc = subprocess.Popen(
            double("scripted_upstream", "--port", str(port), "--capture",
                   "--tls-cert", str(server_crt), "--tls-key", str(server_key),
                   "--tls-client-ca", str(folder / "ca.crt")),
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
    try:
        wait_for_port(proc, port, "the TLS upstream")
        config = gateway_config(tmp_path, bao.address, bao.gateway_token, f"https://127.0.0.1:{port}")
        document = yaml.safe_load(config.read_text())
        document["upstreams"]["chat"]["tls"] = {
            "ca_file": str(folder / "ca.crt"), "cert_file": str(client_crt), "key_file": str(client_key),
        }  # fmt: skip
        document["ingress_cert_file"] = str(ingress_crt)
        config.write_text(yaml.safe_dump(document))
        _, key = ClientKeyStore(tmp_path / "keys.json").create("clinic")
        with running_gateway(config, tmp_path) as gw:
            before = samples(httpx.get(f"{gw.url}/metrics", timeout=10).text)
            # the files at once; the upstream's certificate once the gateway has connected to it
            assert before[(CERT, (("certificate", "client"),))] == expected["client"]
            assert (CERT, (("certificate", "upstream-server"),)) not in before
            resp = httpx.post(
                f"{gw.url}/v1/chat/completions",
                json=BODY,
                headers={"authorization": f"Bearer {key}"},
                timeout=30,
            )
            assert resp.status_code == 200, resp.text
            after = samples(httpx.get(f"{gw.url}/metrics", timeout=10).text)
        got = {dict(labels)["certificate"]: v for (name, labels), v in after.items() if name == CERT}
        assert got == expected
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_an_unreadable_certificate_file_gives_no_value(tmp_path: Path) -> None:
    (tmp_path / "broken.crt").write_text(
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"
    )
    assert not_after(tmp_path / "broken.crt") is None
    assert not_after(tmp_path / "absent.crt") is None
    ca = _issue(None, "bundle old", 5)
    newer = _issue(None, "bundle new", 50)
    (tmp_path / "bundle.crt").write_bytes(newer.cert_pem() + ca.cert_pem())
    assert not_after(tmp_path / "bundle.crt") == ca.cert.not_valid_after_utc.timestamp()  # the earliest


# --- 503 answers by code ----------------------------------------------------------------------------


def test_a_503_is_counted_under_its_code(tmp_path: Path, bao: Bao, upstream_server: Upstream) -> None:
    # the policies name the model "chat"; an upstream under another alias leaves it unserved
    config = gateway_config(tmp_path, bao.address, bao.gateway_token, upstream_server.url)
    document = yaml.safe_load(config.read_text())
    document["upstreams"] = {"other": document["upstreams"]["chat"]}
    config.write_text(yaml.safe_dump(document))
    _, key = ClientKeyStore(tmp_path / "keys.json").create("clinic")
    with running_gateway(config, tmp_path) as gw:
        headers = {"authorization": f"Bearer {key}"}
        for _ in range(2):
            resp = httpx.post(f"{gw.url}/v1/chat/completions", json=BODY, headers=headers, timeout=30)
            assert resp.status_code == 503 and resp.json()["error"]["code"] == "model_unavailable"
        got = samples(httpx.get(f"{gw.url}/metrics", timeout=10).text)
    unavailable = {
        dict(labels)["code"]: v
        for (name, labels), v in got.items()
        if name == "sovereign_gateway_unavailable_total"
    }
    assert unavailable == {"model_unavailable": 2.0}
    assert (
        got[("sovereign_gateway_requests_total", (("status", "503"), ("use_case", "order-support")))] == 2.0
    )
    assert "use_case_suspended" in UNAVAILABLE_CODES and "model_unavailable" in UNAVAILABLE_CODES


@pytest.mark.parametrize(("code", "label"), [("key_unavailable", "key_unavailable"), ("free text", "other")])
def test_only_the_fixed_codes_become_label_values(code: str, label: str) -> None:
    from gateway.app import UNAVAILABLE, Exchange, count_unavailable

    before = UNAVAILABLE.labels(use_case="order-support", code=label)._value.get()
    count_unavailable(Exchange(request_id="r", use_case="order-support"), code)
    assert UNAVAILABLE.labels(use_case="order-support", code=label)._value.get() == before + 1


# --- PHI values by category ---------------------------------------------------------------------


def test_phi_values_are_counted_by_category_and_never_shown(
    tmp_path: Path, bao: Bao, upstream: Upstream
) -> None:
    upstream.script(mode="echo")
    config = gateway_config(tmp_path, bao.address, bao.gateway_token, upstream.url)
    _, key = ClientKeyStore(tmp_path / "keys.json").create("clinic")
    body = {
        "messages": [{"role": "user", "content": "Termin für Erika Mustermann, Tel. +49 30 1234567"}],
        "sovereign": {"use_case": "appointment-scheduling", "context": {"name": "Erika Mustermann"}},
    }
    with running_gateway(config, tmp_path) as gw:
        headers = {"authorization": f"Bearer {key}"}
        for _ in range(3):
            resp = httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=headers, timeout=30)
            assert resp.status_code == 200, resp.text
        text = httpx.get(f"{gw.url}/metrics", timeout=10).text
    counted = {
        (dict(labels)["category"], dict(labels)["action"]): v
        for (name, labels), v in samples(text).items()
        if name == "sovereign_gateway_phi_values_total"
        and dict(labels)["use_case"] == "appointment-scheduling"
    }
    assert counted[("NAME", "tokenised")] == 6.0  # per request: in the message and the context line
    assert counted.get(("PHONE", "tokenised"), 0) + counted.get(("PHONE", "removed"), 0) == 3.0
    assert "Mustermann" not in text and "1234567" not in text


class _FailingAudit:
    def append(self, record: object, key: object = None) -> None:
        from gateway.audit import AuditWriteError

        raise AuditWriteError("disk full")


@pytest.mark.parametrize("answer_waits", [True, False])
def test_an_answer_refused_for_its_audit_record_is_not_counted_as_served(answer_waits: bool) -> None:
    """A non-streamed answer goes out only once its record is written: when it cannot be, the
    client gets 503 audit_unavailable (counted by the handler), so it must not also count as 200.
    A status already sent (a stream's 200, an error answer) is counted as sent."""
    import types

    from gateway.app import REQUESTS, Exchange, Gateway
    from gateway.audit import AuditWriteError

    use_case = f"audit-count-{answer_waits}"
    fake = types.SimpleNamespace(audit=_FailingAudit(), audit_healthy=True, audit_problem=lambda: None)
    ex = Exchange(request_id="r", use_case=use_case, tenant="clinic")
    try:
        fake.audit.append(ex.record("ok", 200))
    except AuditWriteError as exc:  # what the audit writer thread hands back to write_audit
        failure = exc
    assert Gateway._after_record(fake, ex, None, failure, "ok", 200, answer_waits) is None  # type: ignore[arg-type]
    served = REQUESTS.labels(use_case=use_case, status="200")._value.get()
    assert served == (0 if answer_waits else 1) and ex.counted is not answer_waits
    assert fake.audit_healthy is False
