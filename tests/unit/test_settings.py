from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.settings import CONFIG_ENV, GatewaySettings, host_allowed


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("vllm.inference.svc", True),
        ("vllm.inference.svc.cluster.local", True),
        ("api.openai.com", False),
        ("8.8.8.8", False),
        ("10.0.0.5", False),
        ("svc", False),
        ("evil-svc.com", False),
    ],
)
def test_default_allowlist(host: str, allowed: bool) -> None:
    assert host_allowed(host, GatewaySettings().egress_allowlist) is allowed


def test_public_upstream_refused_with_reason() -> None:
    with pytest.raises(ValidationError) as err:
        GatewaySettings(upstreams={"gpt": {"url": "https://api.openai.com/v1", "model": "gpt-4o"}})
    text = str(err.value)
    assert "upstreams.gpt.url" in text and "api.openai.com" in text and "GDPR Art. 44" in text


def test_private_in_boundary_host_can_be_allowlisted() -> None:
    s = GatewaySettings(
        upstreams={"m": {"url": "http://10.0.1.20:8000/v1", "model": "m"}},
        egress_allowlist=["127.0.0.0/8", "10.0.1.0/24"],
    )
    assert s.upstreams["m"].host == "10.0.1.20"


def test_openbao_outside_allowlist_refused() -> None:
    with pytest.raises(ValidationError, match=r"openbao\.address"):
        GatewaySettings(openbao={"address": "https://vault.example.com"})


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/v1", "127.0.0.1:8000", "http:///v1"])
def test_upstream_url_must_be_http(url: str) -> None:
    with pytest.raises(ValidationError, match="http"):
        GatewaySettings(upstreams={"m": {"url": url, "model": "m"}})


def test_bad_cidr_named() -> None:
    with pytest.raises(ValidationError, match=r"10\.0\.0\.0/33"):
        GatewaySettings(egress_allowlist=["10.0.0.0/33"])


def test_yaml_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text("limits:\n  max_body_bytes: 1000\naudit:\n  fsync: false\n")
    monkeypatch.setenv(CONFIG_ENV, str(cfg))
    monkeypatch.setenv("SOVEREIGN_GATEWAY__LIMITS__MAX_BODY_BYTES", "2000")
    s = GatewaySettings()
    assert s.limits.max_body_bytes == 2000  # environment wins over the file
    assert s.audit.fsync is False  # file wins over the default


def test_unknown_setting_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text("upstream: {}\n")
    monkeypatch.setenv(CONFIG_ENV, str(cfg))
    with pytest.raises(ValidationError, match="upstream"):
        GatewaySettings()


def test_the_audit_archive_endpoint_is_held_to_the_eu_boundary_like_the_stack_config() -> None:
    """One reviewed-endpoint model and one check for the stack config and the gateway (issue #20,
    finding 12): a US endpoint, or a 'reviewed' host operated in the US, is refused at load."""
    from gateway.settings import AuditArchiveSettings

    base = {"url": "s3://sovereign-audit/gateway/", "endpoint": "https://fsn1.your-objectstorage.com"}
    AuditArchiveSettings(**base)
    with pytest.raises(ValidationError, match="not on the EU allowlist"):
        AuditArchiveSettings(**{**base, "endpoint": "https://s3.us-east-1.amazonaws.com"})
    reviewed = {"host": "minio.example.com", "operator": "Example Inc."}
    with pytest.raises(ValidationError, match="not an EU/EEA country code"):
        AuditArchiveSettings(
            **{
                **base,
                "endpoint": "https://minio.example.com",
                "reviewed_hosts": [{**reviewed, "jurisdiction": "US"}],
            }
        )
    ok = AuditArchiveSettings(
        **{
            **base,
            "endpoint": "https://minio.example.com",
            "reviewed_hosts": [{**reviewed, "jurisdiction": "de"}],
        }
    )
    assert ok.reviewed_hosts[0].jurisdiction == "DE"
    # the stack config uses the very same model
    from infra import config, residency

    assert config.ExtraHostConfig is residency.ReviewedEndpoint is type(ok.reviewed_hosts[0])
