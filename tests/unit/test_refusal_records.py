"""A refusal's record needs the audit key (gateway/app.py Gateway._audit_key_for_refusal): fetched
for a refusal after the body was read when none is in memory; a failed fetch not tried again
for AUDIT_KEY_RETRY_S, so a flood of refusals never drives OpenBao; admission's refusals (before
the body) never wait for it. The key provider here is gateway/kms.py's KeyProvider with its
audit-key fetch counted (the Vault API itself is tested against a real OpenBao elsewhere:
tests/gateway/test_fail_closed.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gateway import app as gateway_app
from gateway.app import Exchange, Gateway
from gateway.kms import KeyProvider, KeyUnavailable
from gateway.settings import GatewaySettings


class CountingKeys(KeyProvider):
    """The gateway's KeyProvider with its audit-key fetch counted; *fails*: OpenBao refuses it."""

    def __init__(self, settings: GatewaySettings, fails: bool) -> None:
        super().__init__(settings.openbao, settings.openbao.wrapped_keys_dir)
        self.fails, self.fetches = fails, 0

    async def refresh_audit_key(self) -> None:
        self.fetches += 1
        if self.fails:
            raise KeyUnavailable("OpenBao refused the audit HMAC key: the gateway token lacks permission")

    def current(self) -> Any:
        if self.fails:  # as KeyProvider.current with no key in memory
            raise KeyUnavailable("audit key expired and not refreshed")
        return "the audit key"


def gateway(tmp_path: Path, fails: bool) -> tuple[Gateway, CountingKeys]:
    settings = GatewaySettings(
        upstreams={"chat": {"url": "http://127.0.0.1:9/v1", "model": "m"}},
        audit={"path": tmp_path / "audit.jsonl"},
        keys_file=tmp_path / "keys.json",
        openbao={"wrapped_keys_dir": tmp_path / "keys"},
    )
    keys = CountingKeys(settings, fails)
    return Gateway(settings, keys), keys


def refused(body_read: bool = True) -> Exchange:
    return Exchange(request_id="r", tenant="clinic", error="invalid_field", body_read=body_read)


def test_a_failed_fetch_is_not_repeated_for_every_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw, keys = gateway(tmp_path, fails=True)

    async def flood() -> list[Exchange]:
        exchanges = [refused() for _ in range(50)]
        for ex in exchanges:
            await gw._audit_key_for_refusal(ex)
        return exchanges

    assert all(ex.audit_key is None for ex in asyncio.run(flood()))
    assert keys.fetches == 1  # 50 refusals, one OpenBao call
    monkeypatch.setattr(gateway_app.time, "monotonic", lambda: 1e12)  # AUDIT_KEY_RETRY_S later
    asyncio.run(gw._audit_key_for_refusal(refused()))
    assert keys.fetches == 2


def test_a_refusal_after_the_body_gets_the_key_one_before_it_does_not_wait(tmp_path: Path) -> None:
    gw, keys = gateway(tmp_path, fails=False)
    ex = refused()
    asyncio.run(gw._audit_key_for_refusal(ex))
    assert ex.audit_key == "the audit key" and keys.fetches == 1
    gw, keys = gateway(tmp_path / "2", fails=True)
    before_body = refused(body_read=False)  # a 429 of admission, a 413: no fetch, no wait
    assert asyncio.run(gw.write_audit(before_body, "rejected", 429)) is None  # no key: no record
    assert keys.fetches == 0
    asyncio.run(gw.write_audit(refused(), "rejected", 422))  # after the body: fetched (and failed)
    assert keys.fetches == 1
