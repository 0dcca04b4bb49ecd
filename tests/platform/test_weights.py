"""Model weights: fetched from an S3 server (moto, on loopback) and verified against the manifest."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from infra.k8s_platform import weights
from tests.infra.support import REPO
from tests.support import S3Server

FILES = {"config.json": b'{"model_type": "llama"}', "model-00001.safetensors": b"\x00weights" * 1000}


def manifest_for(files: dict[str, bytes]) -> str:
    return "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in sorted(files.items()))


def write_model(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "SHA256SUMS").write_text(manifest_for(files))
    return folder


def test_verify_accepts_exactly_the_manifest(tmp_path: Path) -> None:
    assert weights.verify(write_model(tmp_path / "m", FILES)) == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: (d / "config.json").write_bytes(b"{}"), "config.json: SHA-256 does not match"),
        (lambda d: (d / "extra.bin").write_bytes(b"x"), "not in the manifest, first: extra.bin"),
        (lambda d: (d / "config.json").unlink(), "missing, first: config.json"),
        (lambda d: (d / "SHA256SUMS").write_text("abc  config.json\n"), "line 1: expected"),
        (lambda d: (d / "SHA256SUMS").write_text("0" * 64 + "  ../etc/passwd\n"), "leaves the model folder"),
        (lambda d: (d / "SHA256SUMS").unlink(), "no manifest"),
    ],
)
def test_verify_refuses_anything_else(tmp_path: Path, change, message: str) -> None:  # type: ignore[no-untyped-def]
    folder = write_model(tmp_path / "m", FILES)
    change(folder)
    with pytest.raises(weights.WeightsError, match=message.replace("(", r"\(")):
        weights.verify(folder)


def test_verify_cli_exit_codes(tmp_path: Path) -> None:
    folder = write_model(tmp_path / "m", FILES)
    run = [sys.executable, "-m", "infra.cli", "weights", "verify", "--dir", str(folder)]
    ok = subprocess.run(run, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "2 files verified" in ok.stdout
    (folder / "config.json").write_bytes(b"tampered")
    bad = subprocess.run(run, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "does not match" in bad.stderr


@pytest.fixture
def bucket(s3: S3Server) -> str:
    bucket_name = f"models-{uuid.uuid4().hex[:8]}"
    client = s3.client()
    client.create_bucket(Bucket=bucket_name)
    for name, data in FILES.items():
        client.put_object(Bucket=bucket_name, Key=f"llama/{name}", Body=data)
    client.put_object(Bucket=bucket_name, Key="llama/SHA256SUMS", Body=manifest_for(FILES).encode())
    client.put_object(Bucket=bucket_name, Key="llama/unlisted.bin", Body=b"not in the manifest")
    return bucket_name


def test_fetch_downloads_exactly_the_listed_files_and_verifies(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    dest = tmp_path / "llama"
    assert weights.fetch(f"s3://{bucket}/llama/", s3.url, dest) == 2
    assert sorted(p.name for p in dest.iterdir()) == ["SHA256SUMS", "config.json", "model-00001.safetensors"]


def test_fetch_of_tampered_object_fails(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    s3.client().put_object(Bucket=bucket, Key="llama/config.json", Body=b"tampered")
    with pytest.raises(weights.WeightsError, match=r"config\.json: SHA-256 does not match"):
        weights.fetch(f"s3://{bucket}/llama/", s3.url, tmp_path / "llama")


def test_fetch_of_missing_model_names_the_object(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    with pytest.raises(weights.WeightsError, match=rf"refused s3://{bucket}/nothing/SHA256SUMS: 404"):
        weights.fetch(f"s3://{bucket}/nothing/", s3.url, tmp_path / "x")
