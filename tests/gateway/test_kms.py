"""Keys from a real OpenBao dev server: envelope encryption, caching, token renewal."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import hvac
import pytest

from gateway.kms import KeyProvider, KeyUnavailable
from gateway.settings import OpenBaoSettings
from infra import openbao_contract
from tests.support import Bao


def provider(bao: Bao, tmp_path: Path, token: str) -> KeyProvider:
    settings = OpenBaoSettings(address=bao.address, token=token, wrapped_keys_dir=tmp_path / "keys")
    return KeyProvider(settings, tmp_path / "keys")


def fresh_gateway_token(bao: Bao) -> str:
    root = hvac.Client(url=bao.address, token=bao.root)
    created = root.auth.token.create(policies=["sovereign-gateway"], period="1h", no_parent=True)
    return str(created["auth"]["client_token"])


def test_tenant_keys_are_distinct_stable_and_wrapped_on_disk(bao: Bao, tmp_path: Path) -> None:
    kp = provider(bao, tmp_path, bao.gateway_token)
    a = asyncio.run(kp.tenant_key("clinic-a"))
    b = asyncio.run(kp.tenant_key("clinic-b"))
    assert len(a) == 32 and a != b
    wrapped = (tmp_path / "keys" / "clinic-a.wrapped").read_text()
    assert wrapped.startswith("vault:v1:") and base64.b64encode(a).decode() not in wrapped
    # a new process (empty cache) unwraps the same key through transit decrypt
    again = provider(bao, tmp_path, bao.gateway_token)
    assert asyncio.run(again.tenant_key("clinic-a")) == a


def test_the_plaintext_key_is_nowhere_on_disk(bao: Bao, tmp_path: Path) -> None:
    kp = provider(bao, tmp_path, bao.gateway_token)
    key = asyncio.run(kp.tenant_key("clinic-c"))
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert key not in data and base64.b64encode(key) not in data


def test_audit_key_fetch_renews_the_periodic_token(bao: Bao, tmp_path: Path) -> None:
    token = fresh_gateway_token(bao)
    lookup = hvac.Client(url=bao.address, token=token).auth.token.lookup_self()["data"]
    assert not lookup.get("last_renewal_time")
    kp = provider(bao, tmp_path, token)
    asyncio.run(kp.refresh_audit_key())
    assert kp.current().kid
    lookup = hvac.Client(url=bao.address, token=token).auth.token.lookup_self()["data"]
    assert lookup.get("last_renewal_time")


def test_missing_transit_key_fails_closed(bao: Bao, tmp_path: Path) -> None:
    settings = OpenBaoSettings(address=bao.address, token=bao.root, tenant_key="no-such-key")
    kp = KeyProvider(settings, tmp_path / "keys")
    with pytest.raises(KeyUnavailable, match=r"no transit key .no-such-key. for a data key"):
        asyncio.run(kp.tenant_key("clinic-a"))


def test_no_token_fails_closed(bao: Bao, tmp_path: Path) -> None:
    kp = KeyProvider(OpenBaoSettings(address=bao.address), tmp_path / "keys")
    with pytest.raises(KeyUnavailable, match="no OpenBao token"):
        asyncio.run(kp.tenant_key("clinic-a"))


def test_bad_tenant_name_is_refused_before_any_call(bao: Bao, tmp_path: Path) -> None:
    kp = provider(bao, tmp_path, bao.gateway_token)
    with pytest.raises(ValueError, match="tenant must be"):
        asyncio.run(kp.tenant_key("../etc/passwd"))


def test_gateway_policy_is_least_privilege(bao: Bao) -> None:
    client = hvac.Client(url=bao.address, token=bao.gateway_token)
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.transit.decrypt_data(name=openbao_contract.AUDIT_KEY, ciphertext="vault:v1:AAAA")
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.transit.rotate_key(name=openbao_contract.TENANT_KEY)
    with pytest.raises(hvac.exceptions.Forbidden):
        client.sys.list_enabled_audit_devices()
