"""Signing an evidence folder with OpenBao transit (a real `bao server -dev`) and verifying it:
a changed byte, an added or a removed file, a rewritten manifest, a forged signature and a
wrong key are each caught; the exported public key verifies offline after OpenBao is gone,
also with openssl alone."""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import hvac
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from infra import cli
from infra.evidence import bundle
from tests.support import Bao, start_bao

PROVENANCE = {"format": "sovereign-evidence-provenance/1", "commit": "0" * 40, "dirty": False}


def _client(bao: Bao) -> hvac.Client:
    return hvac.Client(url=bao.address, token=bao.root, timeout=30)


def _transit(client: hvac.Client) -> Any:
    return client.secrets.transit  # hvac's stubs leave the transit calls untyped


def _key() -> str:
    return f"evidence-test-{uuid.uuid4().hex[:12]}"


def _evidence(folder: Path) -> Path:
    (folder / "sub").mkdir(parents=True)
    (folder / "evidence.md").write_text("# Evidence\n\n**COMPLIANT**\n", encoding="utf-8")
    (folder / "evidence.html").write_text("<html><body>COMPLIANT</body></html>\n", encoding="utf-8")
    (folder / "dataflow.svg").write_text("<svg></svg>\n", encoding="utf-8")
    (folder / "sub" / "oscal-assessment-results.json").write_text("{}\n", encoding="utf-8")
    return folder


def _signed(folder: Path, client: hvac.Client, key: str) -> Path:
    _evidence(folder)
    bundle.write_manifest(folder, PROVENANCE)
    bundle.sign(folder, client, key)
    return folder


@pytest.fixture
def signed(bao: Bao, tmp_path: Path) -> Path:
    return _signed(tmp_path / "evidence", _client(bao), _key())


def test_a_signed_folder_verifies_offline_online_and_with_its_own_key(bao: Bao, tmp_path: Path) -> None:
    key = _key()
    client = _client(bao)
    folder = _signed(tmp_path / "evidence", client, key)
    # the key did not exist: sign created it, as ed25519
    assert _transit(client).read_key(key)["data"]["type"] == "ed25519"
    manifest = json.loads((folder / bundle.MANIFEST).read_text())
    assert [f["path"] for f in manifest["files"]] == [
        "dataflow.svg", "evidence.html", "evidence.md", "sub/oscal-assessment-results.json",
    ]  # fmt: skip
    assert manifest["provenance"] == PROVENANCE
    document = json.loads((folder / bundle.SIGNATURE).read_text())
    assert document["key"] == key and document["key_version"] == 1
    assert document["signature"].startswith("vault:v1:")
    assert bundle.verify(folder, public_key=folder / bundle.PUBLIC_KEY) == []
    assert bundle.verify(folder, client=client) == []
    assert bundle.verify(folder) == []


def test_one_changed_byte_is_named_with_its_hash(signed: Path) -> None:
    path = signed / "evidence.md"
    data = bytearray(path.read_bytes())
    data[3] ^= 0x01
    path.write_bytes(bytes(data))
    problems = bundle.verify(signed, public_key=signed / bundle.PUBLIC_KEY)
    assert len(problems) == 1, problems
    assert problems[0].startswith("evidence.md: changed after signing: SHA-256 ") and "differs" in problems[0]


def test_an_added_and_a_removed_file_are_named(signed: Path) -> None:
    (signed / "sub" / "extra.txt").write_text("smuggled\n")
    (signed / "dataflow.svg").unlink()
    problems = bundle.verify(signed, public_key=signed / bundle.PUBLIC_KEY)
    assert sorted(problems) == [
        "dataflow.svg: missing (listed in MANIFEST.json, not in the folder)",
        "sub/extra.txt: added after signing (not in MANIFEST.json)",
    ]


def test_a_manifest_rewritten_to_match_a_change_breaks_the_signature(bao: Bao, signed: Path) -> None:
    (signed / "evidence.md").write_text("# Evidence\n\n**COMPLIANT** (edited)\n")
    manifest = json.loads((signed / bundle.MANIFEST).read_text())
    fresh = {e["path"]: e for e in bundle.entries(signed)}
    manifest["files"] = [fresh[e["path"]] for e in manifest["files"]]
    (signed / bundle.MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    offline = bundle.verify(signed, public_key=signed / bundle.PUBLIC_KEY)
    assert any("signature does not verify" in p for p in offline), offline
    assert any("manifest_sha256 differs" in p for p in offline), offline
    assert not any(p.startswith("evidence.md") for p in offline)  # the files match the forged list
    online = bundle.verify(signed, client=_client(bao))
    assert any("says the signature is not valid" in p for p in online), online


def test_a_signature_by_another_key_is_rejected(bao: Bao, signed: Path, tmp_path: Path) -> None:
    # another transit key signs the same manifest: valid for that key, not for the folder's
    other = _signed(tmp_path / "other", _client(bao), _key())
    forged = json.loads((signed / bundle.SIGNATURE).read_text())
    forged["signature"] = _transit_signature(bao, other, signed)
    (signed / bundle.SIGNATURE).write_text(json.dumps(forged))
    problems = bundle.verify(signed, public_key=signed / bundle.PUBLIC_KEY)
    assert len(problems) == 1 and "signature does not verify" in problems[0], problems
    # and one made with a key outside OpenBao, in transit's format
    private = Ed25519PrivateKey.generate()
    forged["signature"] = (
        "vault:v1:" + base64.b64encode(private.sign((signed / bundle.MANIFEST).read_bytes())).decode()
    )
    (signed / bundle.SIGNATURE).write_text(json.dumps(forged))
    assert any(
        "signature does not verify" in p for p in bundle.verify(signed, public_key=signed / bundle.PUBLIC_KEY)
    )
    assert any("not valid" in p for p in bundle.verify(signed, client=_client(bao)))


def _transit_signature(bao: Bao, other: Path, target: Path) -> str:
    """The other folder's key's signature over *target*'s manifest bytes."""
    key = json.loads((other / bundle.SIGNATURE).read_text())["key"]
    manifest = (target / bundle.MANIFEST).read_bytes()
    answer = _transit(_client(bao)).sign_data(key, hash_input=base64.b64encode(manifest).decode())
    return str(answer["data"]["signature"])


def test_the_wrong_public_key_is_rejected_naming_it(signed: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.pem"
    wrong.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    problems = bundle.verify(signed, public_key=wrong)
    assert len(problems) == 1 and f"--public-key {wrong}" in problems[0] and "SHA256:" in problems[0]


def test_offline_verification_after_openbao_is_gone(tmp_path: Path) -> None:
    (tmp_path / "bao").mkdir()
    server = start_bao(tmp_path / "bao")
    client = hvac.Client(url=server.address, token=server.root, timeout=30)
    try:
        folder = _signed(tmp_path / "evidence", client, bundle.DEFAULT_KEY)
    finally:
        server.proc.stop()
    with pytest.raises(bundle.BundleError, match="cannot reach OpenBao"):
        bundle.verify(folder, client=client)
    key = folder / bundle.PUBLIC_KEY
    assert bundle.verify(folder, public_key=key) == []
    (folder / "evidence.html").write_text("<html>changed</html>\n")
    assert [p.split(":")[0] for p in bundle.verify(folder, public_key=key)] == ["evidence.html"]


def test_openssl_alone_verifies_the_signature(signed: Path, tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed here")
    raw = base64.b64decode(json.loads((signed / bundle.SIGNATURE).read_text())["signature"].split(":", 2)[2])
    sig = tmp_path / "sig.bin"
    sig.write_bytes(raw)

    def check(data: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [openssl, "pkeyutl", "-verify", "-pubin", "-inkey", str(signed / bundle.PUBLIC_KEY), "-rawin",
             "-in", str(data), "-sigfile", str(sig)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    assert check(signed / bundle.MANIFEST).returncode == 0
    changed = tmp_path / "changed.json"
    changed.write_bytes((signed / bundle.MANIFEST).read_bytes().replace(b'"dirty": false', b'"dirty": true'))
    assert check(changed).returncode != 0


def test_a_key_of_another_type_is_refused(bao: Bao, tmp_path: Path) -> None:
    key = _key()
    client = _client(bao)
    _transit(client).create_key(key, key_type="aes256-gcm96")
    folder = _evidence(tmp_path / "evidence")
    bundle.write_manifest(folder)
    with pytest.raises(
        bundle.BundleError, match=f"transit key transit/keys/{key} is aes256-gcm96, not ed25519"
    ):
        bundle.sign(folder, client, key)
    assert not (folder / bundle.SIGNATURE).exists()


def test_a_token_without_the_policy_is_told_which_it_needs(bao: Bao, tmp_path: Path) -> None:
    token = _client(bao).auth.token.create(policies=["default"], ttl="10m")["auth"]["client_token"]
    folder = _evidence(tmp_path / "evidence")
    bundle.write_manifest(folder)
    with pytest.raises(bundle.BundleError) as caught:
        bundle.sign(folder, hvac.Client(url=bao.address, token=token, timeout=30), _key())
    message = str(caught.value)
    assert "denied" in message and "/sign/" in message and token not in message


def test_signing_needs_a_manifest_and_a_plain_folder(bao: Bao, tmp_path: Path) -> None:
    folder = _evidence(tmp_path / "evidence")
    with pytest.raises(bundle.BundleError, match="no manifest to sign; write it first"):
        bundle.sign(folder, _client(bao), _key())
    (folder / "link.md").symlink_to(folder / "evidence.md")
    with pytest.raises(bundle.BundleError, match=r"link\.md is a symbolic link"):
        bundle.write_manifest(folder)


def evidence_verify(*argv: str) -> int:
    """``sovereign evidence verify ARGV`` in this process (its output in capsys)."""
    return cli.main(["evidence", "verify", *argv])


def test_cmd_verify_exit_codes(signed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = str(signed / bundle.PUBLIC_KEY)
    assert evidence_verify(str(signed), "--public-key", key) == 0
    assert "intact: 4 files" in capsys.readouterr().out
    assert evidence_verify(str(signed)) == 0
    out = capsys.readouterr().out
    assert "proves integrity against the key shipped in the folder only, not who signed" in out
    assert _fingerprint_of(signed / bundle.PUBLIC_KEY) in out
    (signed / "evidence.md").write_text("changed\n")
    assert evidence_verify(str(signed), "--public-key", key) == 1
    assert "evidence.md: changed after signing" in capsys.readouterr().err
    assert evidence_verify(str(tmp_path / "nowhere")) == 2
    assert "not a folder" in capsys.readouterr().err
    unsigned = _evidence(tmp_path / "unsigned")
    assert evidence_verify(str(unsigned)) == 2
    assert "MANIFEST.json: missing" in capsys.readouterr().err
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    assert evidence_verify(str(signed), "--public-key", str(bad)) == 2
    assert f"--public-key {bad}: not a PEM public key" in capsys.readouterr().err


def test_sign_evidence_reads_openbao_from_the_environment(
    bao: Bao, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _evidence(tmp_path / "evidence")
    args = argparse.Namespace(openbao_address=None, token_file=None, ca_file=None, signing_key=_key(),
                              transit_mount="transit")  # fmt: skip
    for name in ("VAULT_ADDR", "BAO_ADDR", "VAULT_TOKEN", "BAO_TOKEN", "VAULT_CACERT", "BAO_CACERT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(
        bundle.BundleError, match="no OpenBao address: pass --openbao-address URL or set VAULT_ADDR"
    ):
        bundle.sign_evidence(folder, args, PROVENANCE)
    monkeypatch.setenv("BAO_ADDR", bao.address)
    with pytest.raises(bundle.BundleError, match="no OpenBao token"):
        bundle.sign_evidence(folder, args, PROVENANCE)
    monkeypatch.setenv("VAULT_TOKEN", bao.root)
    bundle.sign_evidence(folder, args, PROVENANCE)
    assert bundle.verify(folder, public_key=folder / bundle.PUBLIC_KEY) == []
    assert evidence_verify(str(folder), "--online", "--signing-key", args.signing_key) == 0
    # without --signing-key, online verification asks transit about the key MANIFEST.sig names (signed
    # here with a key of another name than the default)
    assert _key() != bundle.DEFAULT_KEY
    assert evidence_verify(str(folder), "--online") == 0


def _fingerprint_of(pem: Path) -> str:
    return bundle.fingerprint(bundle.load_public_key(pem))


def _raw(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _swap(folder: Path, recorded: str | None) -> str:
    """The attack: edit the report, rewrite the manifest, sign it with the attacker's key and
    ship that key; MANIFEST.sig keeps *recorded* as the fingerprint (the operator's, or the
    attacker's when None). Returns the attacker's fingerprint."""
    attacker = Ed25519PrivateKey.generate()
    (folder / "evidence.md").write_text("# Evidence\n\n**COMPLIANT** (forged)\n", encoding="utf-8")
    manifest = bundle.write_manifest(folder, PROVENANCE).read_bytes()
    document = {
        "format": bundle.SIGNATURE_FORMAT,
        "signature": "vault:v1:" + base64.b64encode(attacker.sign(manifest)).decode(),
        "key_version": 1,
        "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
        "public_key_fingerprint": recorded or bundle.fingerprint(_raw(attacker)),
    }
    (folder / bundle.SIGNATURE).write_text(json.dumps(document), encoding="utf-8")
    (folder / bundle.PUBLIC_KEY).write_bytes(bundle._pem(_raw(attacker)))
    return bundle.fingerprint(_raw(attacker))


def test_a_swapped_key_keeping_the_operators_fingerprint_is_caught(
    signed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    operator = _fingerprint_of(signed / bundle.PUBLIC_KEY)
    attacker = _swap(signed, operator)
    assert evidence_verify(str(signed)) == 1
    captured = capsys.readouterr()
    assert "intact" not in captured.out and "NOT INTACT" in captured.err
    assert f"public_key_fingerprint {operator} is not the fingerprint of the key shipped" in captured.err
    assert f"signature checked with the key shipped in the folder ({bundle.PUBLIC_KEY}), {attacker}" in (
        captured.err
    )


def test_expect_fingerprint_fails_on_another_key(signed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    operator = _fingerprint_of(signed / bundle.PUBLIC_KEY)
    assert evidence_verify(str(signed), "--expect-fingerprint", operator) == 0
    assert "matches --expect-fingerprint" in capsys.readouterr().out
    # the prefix is optional and the case free, as operators publish it
    bare = operator.removeprefix("SHA256:").upper()
    assert bundle.verify(signed, expect_fingerprint=bare) == []
    wrong = bundle.fingerprint(_raw(Ed25519PrivateKey.generate()))
    assert evidence_verify(str(signed), "--expect-fingerprint", wrong) == 1
    assert f"has fingerprint {operator}, not {wrong} given by --expect-fingerprint" in capsys.readouterr().err
    assert evidence_verify(str(signed), "--expect-fingerprint", "SHA256:abc") == 2
    assert "--expect-fingerprint: not a key fingerprint" in capsys.readouterr().err


def test_a_consistent_swap_shows_the_attackers_fingerprint_and_fails_the_expected_one(
    signed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    operator = _fingerprint_of(signed / bundle.PUBLIC_KEY)
    attacker = _swap(signed, None)  # the attacker also rewrites the recorded fingerprint
    assert evidence_verify(str(signed)) == 0  # intact against the shipped key only ...
    out = capsys.readouterr().out
    assert attacker in out and operator not in out  # ... and it shows the key it used
    assert evidence_verify(str(signed), "--expect-fingerprint", operator) == 1
    assert f"has fingerprint {attacker}, not {operator}" in capsys.readouterr().err


def test_online_verification_names_transits_fingerprint(
    bao: Bao, signed: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    operator = _fingerprint_of(signed / bundle.PUBLIC_KEY)
    monkeypatch.setenv("VAULT_ADDR", bao.address)
    monkeypatch.setenv("VAULT_TOKEN", bao.root)
    document = json.loads((signed / bundle.SIGNATURE).read_text())
    online = ("--online", "--signing-key", document["key"], "--expect-fingerprint", operator)
    assert evidence_verify(str(signed), *online) == 0
    assert f"OpenBao transit key transit/keys/{document['key']} v1, {operator}" in capsys.readouterr().out
    document["public_key_fingerprint"] = bundle.fingerprint(_raw(Ed25519PrivateKey.generate()))
    (signed / bundle.SIGNATURE).write_text(json.dumps(document))
    problems = bundle.verify(signed, client=_client(bao))
    assert len(problems) == 1 and "is not the fingerprint of OpenBao transit key" in problems[0], problems
