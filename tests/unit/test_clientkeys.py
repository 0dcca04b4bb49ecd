from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.clientkeys import ClientKeyStore, KeyStoreError


def test_keys_are_stored_hashed_and_authenticate(tmp_path: Path) -> None:
    store = ClientKeyStore(tmp_path / "keys.json")
    record, key = store.create("clinic-a")
    assert key.startswith("sk-sov-")
    raw = (tmp_path / "keys.json").read_text()
    assert key.split(".", 1)[1] not in raw
    assert (tmp_path / "keys.json").stat().st_mode & 0o777 == 0o600
    assert store.authenticate(key) == record
    assert store.authenticate(key + "x") is None
    assert store.authenticate("sk-sov-" + record.key_id + ".wrong") is None
    assert store.authenticate("Bearer nonsense") is None


def test_revoke_and_reload_from_another_instance(tmp_path: Path) -> None:
    a = ClientKeyStore(tmp_path / "keys.json")
    b = ClientKeyStore(tmp_path / "keys.json")
    record, key = a.create("clinic-a")
    assert b.authenticate(key) is not None
    a.revoke(record.key_id)
    assert b.authenticate(key) is None
    assert [k.revoked for k in b.list()] == [True]


@pytest.mark.parametrize("tenant", ["", "Clinic", "a b", "-x", "x" * 64])
def test_bad_tenant_names_are_refused_with_the_fix(tmp_path: Path, tenant: str) -> None:
    with pytest.raises(KeyStoreError, match="--tenant"):
        ClientKeyStore(tmp_path / "keys.json").create(tenant)


def test_damaged_store_is_reported(tmp_path: Path) -> None:
    (tmp_path / "keys.json").write_text("{oops")
    with pytest.raises(KeyStoreError, match="not valid JSON"):
        ClientKeyStore(tmp_path / "keys.json").authenticate("sk-sov-a.b")


def test_revoke_unknown(tmp_path: Path) -> None:
    (tmp_path / "keys.json").write_text(json.dumps({"keys": []}))
    with pytest.raises(KeyStoreError, match="no key with id"):
        ClientKeyStore(tmp_path / "keys.json").revoke("abc")


def test_revoke_with_a_pasted_full_key_does_not_echo_it(tmp_path: Path) -> None:
    store = ClientKeyStore(tmp_path / "keys.json")
    _, key = store.create("clinic-a")
    with pytest.raises(KeyStoreError, match="no key with id like that") as caught:
        store.revoke(key)
    assert key.split(".", 1)[1] not in str(caught.value) and key not in str(caught.value)
    assert store.authenticate(key) is not None  # nothing was revoked
