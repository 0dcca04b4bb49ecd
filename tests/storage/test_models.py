"""`sovereign models import / verify`: an approved model folder into the EU model bucket with a
manifest signed by a real OpenBao transit key (ed25519), multipart and resumable, and the
check of the bucket against the signed manifest. Real moto S3 server, real `bao` dev server."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hvac
import pytest

from infra import config, objectstore, openbao_contract
from infra.weights import bucket, transit, upload
from infra.weights.manifest import MIB, ModelsError, WeightsError, build_manifest
from tests.storage.conftest import StackFactory
from tests.support import Bao, S3Server, sovereign

MODEL = "llama31-8b-awq"  # a platform.models name of the eu-central-prod example


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    model = tmp_path / "approved" / MODEL
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "tokenizer.json").write_text('{"version": "1.0"}')
    (model / "model-00001-of-00001.safetensors").write_bytes(os.urandom(12 * MIB))  # three 5 MiB parts
    return model


@pytest.fixture
def cfg(stack: StackFactory) -> config.StackConfig:
    cfg = stack()
    objectstore.bootstrap(cfg)
    return cfg


def publisher_token(bao: Bao) -> str:
    """A token with only the model publisher's policy (sign, read the public key)."""
    client = hvac.Client(url=bao.address, token=bao.root)
    created = client.auth.token.create(policies=["sovereign-model-publisher"], ttl="1h")
    return str(created["auth"]["client_token"])


def do_import(
    cfg: config.StackConfig, folder: Path, bao: Bao, tmp_path: Path, **kw: object
) -> upload.ImportResult:
    return upload.import_model(
        cfg, MODEL, folder, openbao_address=bao.address, token=publisher_token(bao),
        state_dir=tmp_path / "uploads", part_size=5 * MIB, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def keys(bao: Bao) -> dict[int, bytes]:
    return transit.public_keys(bao.address, publisher_token(bao), openbao_contract.MANIFEST_KEY)


def test_import_signs_uploads_and_verifies(cfg: config.StackConfig, folder: Path, bao: Bao, tmp_path: Path,
                                           s3: S3Server) -> None:  # fmt: skip
    result = do_import(cfg, folder, bao, tmp_path)
    size = sum(f.stat().st_size for f in folder.iterdir())
    assert (result.uploaded, result.skipped, result.bytes) == (3, 0, size)
    assert (result.parts_sent, result.parts_resumed) == (3, 0)
    assert bucket.verify_model(cfg, MODEL, keys(bao)) == 3
    target = bucket.target(cfg, MODEL)
    client = s3.client()
    listed = client.list_objects_v2(Bucket=target.bucket, Prefix=target.prefix)["Contents"]
    assert sorted(o["Key"].removeprefix(target.prefix) for o in listed) == [
        "SHA256SUMS", "SHA256SUMS.sig", "config.json", "model-00001-of-00001.safetensors", "tokenizer.json",
    ]  # fmt: skip
    # the manifest is the sha256sum format the cluster's weights Job checks
    manifest = client.get_object(Bucket=target.bucket, Key=target.prefix + "SHA256SUMS")["Body"].read()
    assert manifest == build_manifest(folder)[0]
    # a second import finds everything in place and sends nothing
    again = do_import(cfg, folder, bao, tmp_path)
    assert (again.uploaded, again.skipped, again.bytes) == (0, 3, 0)


def test_an_interrupted_import_resumes_with_the_missing_parts(
    cfg: config.StackConfig, folder: Path, bao: Bao, tmp_path: Path
) -> None:
    sent = 0

    def cut_after_the_first_part(n: int) -> None:
        nonlocal sent
        sent += n
        if sent > 5 * MIB:
            raise KeyboardInterrupt  # the operator's Ctrl-C, or a dropped connection

    with pytest.raises(KeyboardInterrupt):
        do_import(cfg, folder, bao, tmp_path, on_progress=cut_after_the_first_part)
    # the manifest goes last: the prefix holds none, so the weights Job cannot pick up half a model
    with pytest.raises(ModelsError, match=r"SHA256SUMS does not exist.*interrupted"):
        bucket.verify_model(cfg, MODEL, keys(bao))
    resumed = do_import(cfg, folder, bao, tmp_path)
    assert (resumed.parts_resumed, resumed.parts_sent) == (1, 2)
    assert bucket.verify_model(cfg, MODEL, keys(bao)) == 3


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda c, b, p: c.put_object(Bucket=b, Key=p + "config.json", Body=b"{}"),
         r"config\.json: SHA-256 does not match the signed manifest"),
        (lambda c, b, p: c.put_object(Bucket=b, Key=p + "SHA256SUMS", Body=b"0" * 64 + b"  config.json\n"),
         "the signature does not match the manifest"),
        (lambda c, b, p: c.put_object(Bucket=b, Key=p + "SHA256SUMS.sig", Body=b"{}"),
         "not a manifest signature document"),
        (lambda c, b, p: c.delete_object(Bucket=b, Key=p + "tokenizer.json"),
         "missing, first: tokenizer.json"),
        (lambda c, b, p: c.put_object(Bucket=b, Key=p + "extra.bin", Body=b"x"),
         "not in the manifest, first: extra.bin"),
    ],
)  # fmt: skip
def test_verify_names_what_was_tampered_with(
    cfg: config.StackConfig,
    folder: Path,
    bao: Bao,
    tmp_path: Path,
    s3: S3Server,
    tamper: Callable[[Any, str, str], object],
    message: str,
) -> None:
    do_import(cfg, folder, bao, tmp_path)
    target = bucket.target(cfg, MODEL)
    tamper(s3.client(), target.bucket, target.prefix)
    with pytest.raises(ModelsError, match=message):
        bucket.verify_model(cfg, MODEL, keys(bao))


def test_a_manifest_signed_by_another_key_is_refused(
    cfg: config.StackConfig, folder: Path, bao: Bao, tmp_path: Path
) -> None:
    do_import(cfg, folder, bao, tmp_path)
    other = hvac.Client(url=bao.address, token=bao.root)
    other.secrets.transit.create_key("someone-else", key_type="ed25519")  # type: ignore[no-untyped-call]
    foreign = transit.public_keys(bao.address, bao.root, "someone-else")
    with pytest.raises(ModelsError, match="signature does not match"):
        bucket.verify_model(cfg, MODEL, foreign)


def test_openbao_refusals_are_clear(stack: StackFactory, folder: Path, bao: Bao, tmp_path: Path) -> None:
    cfg = stack()
    objectstore.bootstrap(cfg)
    auditor = bao.auditor_token  # may unwrap audit keys, may not sign
    with pytest.raises(ModelsError, match="denied sign with key 'model-manifests'"):
        upload.import_model(cfg, MODEL, folder, openbao_address=bao.address, token=auditor,
                            state_dir=tmp_path / "u")  # fmt: skip
    nokey = stack("eu-nokey", storage={"manifest_signing_key": "not-there"})
    with pytest.raises(ModelsError, match=r"transit key 'not-there' does not exist.*type=ed25519"):
        upload.import_model(nokey, MODEL, folder, openbao_address=bao.address, token=bao.root,
                            state_dir=tmp_path / "u")  # fmt: skip


def test_a_missing_model_bucket_says_to_bootstrap(
    stack: StackFactory, folder: Path, bao: Bao, tmp_path: Path
) -> None:
    cfg = stack("eu-empty")  # no bootstrap-backend run
    with pytest.raises(objectstore.StorageError, match=r"does not exist.*bootstrap-backend --stack eu-empty"):
        do_import(cfg, folder, bao, tmp_path)
    with pytest.raises(ModelsError, match="declares no such model"):
        bucket.target(cfg, "gpt-unknown")


def test_cli_import_and_offline_verify_with_the_public_key(
    stack: StackFactory, folder: Path, bao: Bao, tmp_path: Path
) -> None:
    cfg = stack("eu-cli")
    objectstore.bootstrap(cfg)
    token_file = tmp_path / "publisher.token"
    token_file.write_text(publisher_token(bao))
    common = ["--stack", "eu-cli", "--stacks-dir", str(tmp_path / "stacks"), "--model", MODEL]
    bao_flags = ["--openbao-address", bao.address, "--token-file", str(token_file)]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return sovereign(*args, cwd=tmp_path)

    imported = run("models", "import", *common, *bao_flags, "--from", str(folder), "--part-size-mib", "5")
    assert imported.returncode == 0, imported.stderr
    assert "3 file(s) uploaded" in imported.stdout and "model-manifests v1" in imported.stdout
    key_file = tmp_path / "manifest-key.json"
    exported = run("models", "public-key", *bao_flags, "--out", str(key_file))
    assert exported.returncode == 0, exported.stderr
    assert set(json.loads(key_file.read_text())) == {"1"}
    verified = run("models", "verify", *common, "--public-key", str(key_file))  # no OpenBao needed
    assert verified.returncode == 0, verified.stderr
    assert "signature valid, 3 file(s) match" in verified.stdout
    no_vault = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    no_token = sovereign("models", "verify", *common, cwd=tmp_path, timeout=120, env=no_vault)
    assert no_token.returncode == 1 and "--openbao-address URL or set VAULT_ADDR" in no_token.stderr


def test_the_weights_job_checks_the_signature_when_given_the_public_key(
    cfg: config.StackConfig, folder: Path, bao: Bao, tmp_path: Path, s3: S3Server
) -> None:
    from infra.weights import fetch as weights

    do_import(cfg, folder, bao, tmp_path)
    source = next(m.source for m in cfg.platform.models if m.name == MODEL)
    dest = tmp_path / "volume" / MODEL
    assert weights.fetch(source, s3.url, dest, public_keys=keys(bao)) == 3
    assert weights.verify(dest) == 3  # the init container's check, with the signature beside the manifest
    target = bucket.target(cfg, MODEL)
    forged = b"0" * 64 + b"  config.json\n"
    s3.client().put_object(Bucket=target.bucket, Key=target.prefix + "SHA256SUMS", Body=forged)
    with pytest.raises(WeightsError, match="signature does not match"):
        weights.fetch(source, s3.url, tmp_path / "again", public_keys=keys(bao))


def test_the_weights_job_fetches_only_the_pinned_release(
    cfg: config.StackConfig, folder: Path, bao: Bao, tmp_path: Path, s3: S3Server
) -> None:
    from infra.weights import fetch as weights

    result = do_import(cfg, folder, bao, tmp_path)
    assert result.release is not None  # the import recorded the release: its pin is the manifest's digest
    pin = result.release.manifest_sha256
    assert pin == result.release.signature["manifest_sha256"]
    source = next(m.source for m in cfg.platform.models if m.name == MODEL)
    dest = tmp_path / "volume" / MODEL
    assert weights.fetch(source, s3.url, dest, public_keys=keys(bao), manifest_sha256=pin) == 3
    with pytest.raises(WeightsError, match="not the approved release's"):
        weights.fetch(source, s3.url, tmp_path / "other", public_keys=keys(bao), manifest_sha256="f" * 64)
    assert not (tmp_path / "other" / "config.json").exists()
