"""`sovereign models releases / rollback`: every import recorded as its own object in the model
bucket; a rollback re-verifies the previous approved release (signature and every object),
rewrites the model's source and manifest_sha256 in the stack file with its comments kept, and
records who, why, from and to. Real moto S3 server, real `bao` dev server (transit ed25519).

The deploy (`pulumi up` through the Automation API) needs the Pulumi CLI, which this machine
lacks: the tests stop at --no-deploy, and check that without the CLI the command refuses
clearly, before anything is changed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import hvac
import pytest

from infra import config, objectstore, openbao_contract
from infra.weights import rollback, stack_file, transit, upload
from infra.weights.bucket import model_config
from infra.weights.manifest import ModelsError
from infra.weights.releases import DeployRecord, Release, ReleaseLog
from tests.infra.support import REPO
from tests.storage.conftest import StackFactory
from tests.support import Bao, S3Server, sovereign

MODEL = "llama31-8b-awq"
STACK = "eu-roll"


def publisher_token(bao: Bao) -> str:
    client = hvac.Client(url=bao.address, token=bao.root)
    created = client.auth.token.create(
        policies=["sovereign-model-publisher"], ttl="1h", display_name="release-manager"
    )
    return str(created["auth"]["client_token"])


def approved_folder(root: Path, version: str) -> Path:
    folder = root / "approved" / version / MODEL
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "release": version}))
    (folder / "tokenizer.json").write_text('{"version": "1.0"}')
    (folder / f"model-{version}.safetensors").write_bytes(os.urandom(64 * 1024))
    return folder


@pytest.fixture
def stacks(stack: StackFactory, tmp_path: Path) -> Path:
    """stacks/Pulumi.eu-roll.yaml: the commented eu-central-prod example with the test server's
    buckets (the values of the `stack` fixture, set through ruamel.yaml so every comment stays)."""
    plain = stack(STACK)
    objectstore.bootstrap(plain)
    y = stack_file._yaml()
    document = y.load((REPO / "stacks" / "Pulumi.eu-central-prod.yaml").read_text())
    sections = document["config"]
    endpoints = sections["sovereign-llm:endpoints"]
    for key in ("object_storage", "model_source", "pulumi_backend"):
        endpoints[key] = getattr(plain.endpoints, key)
    for entry in sections["sovereign-llm:platform"]["models"]:
        entry["source"] = next(m.source for m in plain.platform.models if m.name == entry["name"])
    sections["sovereign-llm:residency"]["extra_hosts"].append(
        {"host": "127.0.0.1", "jurisdiction": "DE", "operator": "test S3 server on loopback (moto)"}
    )
    sections["sovereign-llm:storage"]["audit_archive"] = plain.storage.audit_archive
    sections["sovereign-llm:region"]["environment"] = "staging"
    sections["sovereign-llm:rke2"].pop("etcd_snapshots", None)
    # the memory store's backups also go over https only (infra/config.py); these tests make
    # no store backups
    sections["sovereign-llm:platform"]["memory_store"]["enabled"] = False
    folder = tmp_path / "stacks"
    with (folder / f"Pulumi.{STACK}.yaml").open("w") as handle:
        y.dump(document, handle)
    assert (
        "# sha256 of every file, checked before vLLM starts" in (folder / f"Pulumi.{STACK}.yaml").read_text()
    )
    return folder


def load(stacks: Path) -> config.StackConfig:
    return config.load(stacks, STACK)


def keys(bao: Bao) -> dict[int, bytes]:
    return transit.public_keys(bao.address, bao.root, openbao_contract.MANIFEST_KEY)


def release(stacks: Path, bao: Bao, tmp_path: Path, version: str, to: str | None = None) -> Release:
    """Import *version* (to its own prefix *to*) and pin it in the stack file, as an operator would."""
    cfg = load(stacks)
    result = upload.import_model(
        cfg, MODEL, approved_folder(tmp_path, version), openbao_address=bao.address,
        token=publisher_token(bao), state_dir=tmp_path / "uploads", source=to,
    )  # fmt: skip
    assert result.release is not None
    stack_file.pin(stacks, STACK, MODEL, result.release.source, result.release.manifest_sha256)
    return result.release


@pytest.fixture
def two_releases(stacks: Path, bao: Bao, tmp_path: Path) -> tuple[Release, Release]:
    first = release(stacks, bao, tmp_path, "v1")
    bucket, _ = config.s3_location(first.source)
    second = release(stacks, bao, tmp_path, "v2", to=f"s3://{bucket}/{MODEL}-v2/")
    return first, second


def deployed(stacks: Path, what: Release) -> DeployRecord:
    """What `sovereign models record-deploy` writes after an operator's `pulumi up` of *what*."""
    return ReleaseLog(load(stacks), MODEL).record_deploy(what, "record-deploy", {"display_name": "op"})


def cli(
    stacks: Path, tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    flags = ["--stack", STACK, "--stacks-dir", str(stacks), "--model", MODEL]
    return sovereign("models", *args, *flags, cwd=tmp_path, env=env)


def test_every_import_is_recorded_and_releases_lists_them_newest_first(
    stacks: Path, bao: Bao, tmp_path: Path, s3: S3Server, two_releases: tuple[Release, Release]
) -> None:
    first, second = two_releases
    log = ReleaseLog(load(stacks), MODEL)
    assert [r.manifest_sha256 for r in log.releases()] == [second.manifest_sha256, first.manifest_sha256]
    record = json.loads(s3.client().get_object(Bucket=log.bucket, Key=second.key)["Body"].read())
    assert record["source"] == second.source and record["manifest_sha256"] == second.manifest_sha256
    assert record["who"]["display_name"] == "token-release-manager"  # OpenBao prefixes "token-"
    assert record["signature"]["signature"].startswith("vault:v1:")
    assert record["signature"]["manifest_sha256"] == second.manifest_sha256
    assert second.key.startswith(f"releases/{MODEL}/") and second.key.endswith(
        f"-{second.manifest_sha256[:12]}.json"
    )
    shown = cli(stacks, tmp_path, "releases")
    assert shown.returncode == 0, shown.stderr
    lines = [
        line
        for line in shown.stdout.splitlines()
        if second.manifest_sha256 in line or first.manifest_sha256 in line
    ]
    assert lines[0].startswith("* ") and second.manifest_sha256 in lines[0]  # newest, pinned
    assert lines[1].startswith("  ") and first.manifest_sha256 in lines[1]


def test_rollback_pins_the_previous_release_keeps_comments_and_records_who_and_why(
    stacks: Path, bao: Bao, tmp_path: Path, s3: S3Server, two_releases: tuple[Release, Release]
) -> None:
    first, second = two_releases
    path = stacks / f"Pulumi.{STACK}.yaml"
    before = path.read_text()
    token = publisher_token(bao)
    (tmp_path / "token").write_text(token)
    reason = "CHG-1234: v2 answers in the wrong language"
    bao_flags = ["--openbao-address", bao.address, "--token-file", str(tmp_path / "token")]
    # v1 ran, then v2 (pinned now) was deployed by hand and recorded with record-deploy
    deployed(stacks, first)
    recorded = cli(stacks, tmp_path, "record-deploy", *bao_flags)
    assert recorded.returncode == 0, recorded.stderr
    assert f"recorded as deployed to stack {STACK}" in recorded.stdout
    (newest, _) = ReleaseLog(load(stacks), MODEL).deploys()
    assert (newest.manifest_sha256, newest.how) == (second.manifest_sha256, "record-deploy")
    assert newest.who["display_name"] == "token-release-manager"
    done = cli(stacks, tmp_path, "rollback", "--reason", reason, "--no-deploy", *bao_flags)
    assert done.returncode == 0, done.stderr
    assert "signature valid, 3 file(s) match" in done.stdout
    assert f"pulumi up --stack {STACK}" in done.stdout and "not deployed (--no-deploy)" in done.stdout
    assert f"sovereign models record-deploy --stack {STACK} --model {MODEL}" in done.stdout
    assert f"commit Pulumi.{STACK}.yaml" in done.stdout
    # the stack file: exactly the two values changed, every comment and line of layout kept
    after = path.read_text()
    assert after == before.replace(second.source, first.source).replace(
        second.manifest_sha256, first.manifest_sha256
    )
    assert after != before
    cfg = load(stacks)
    pinned = model_config(cfg, MODEL)
    assert (pinned.source, pinned.manifest_sha256) == (first.source, first.manifest_sha256)
    # the record: who, why, from, to; never the token
    log = ReleaseLog(cfg, MODEL)
    (record,) = log.rollbacks()
    assert record.reason == "CHG-1234: v2 answers in the wrong language"
    assert record.who["display_name"] == "token-release-manager"
    assert (record.from_manifest_sha256, record.to_manifest_sha256) == (
        second.manifest_sha256,
        first.manifest_sha256,
    )
    assert (record.from_source, record.to_source) == (second.source, first.source)
    raw = s3.client().get_object(Bucket=log.bucket, Key=record.key)["Body"].read().decode()
    assert token not in raw
    shown = cli(stacks, tmp_path, "releases")
    assert next(line for line in shown.stdout.splitlines() if first.manifest_sha256 in line).startswith("* ")
    assert "rollback" in shown.stdout and "deployed " in shown.stdout
    # once v1's deploy is recorded, v1 has nothing deployed before it (v2 was rolled back from)
    rollback.record_deploy(cfg, MODEL, {"display_name": "op"})
    with pytest.raises(ModelsError, match=r"no release recorded as deployed.*--to SHA256") as refused:
        rollback.rollback(cfg, stacks, MODEL, reason="again", keys=keys(bao), who={})
    assert f"{second.manifest_sha256} (imported {second.at}, deployed)" in str(refused.value)
    # --to goes forward again, to any approved release
    again = rollback.rollback(cfg, stacks, MODEL, reason="CHG-1235: fixed", keys=keys(bao), who={},
                            to=second.manifest_sha256)  # fmt: skip
    assert again.plan.target.manifest_sha256 == second.manifest_sha256
    assert path.read_text() == before


def test_rollback_returns_to_the_previous_deployed_release_not_the_previous_import(
    stacks: Path, bao: Bao, tmp_path: Path, two_releases: tuple[Release, Release]
) -> None:
    """v1 ran; v2 was imported (and pinned) but never deployed; v3 was deployed. A rollback from v3
    goes to v1, the release that ran (before the fix: v2, the previous import, never tested)."""
    first, second = two_releases
    deployed(stacks, first)
    bucket, _ = config.s3_location(first.source)
    third = release(stacks, bao, tmp_path, "v3", to=f"s3://{bucket}/{MODEL}-v3/")
    deployed(stacks, third)
    done = rollback.rollback(load(stacks), stacks, MODEL, reason="CHG-3: v3 is slow", keys=keys(bao), who={})
    assert done.plan.target.manifest_sha256 == first.manifest_sha256 != second.manifest_sha256
    assert model_config(load(stacks), MODEL).manifest_sha256 == first.manifest_sha256


def test_without_a_recorded_deploy_rollback_refuses_without_to_and_lists_candidates(
    stacks: Path, bao: Bao, tmp_path: Path, two_releases: tuple[Release, Release]
) -> None:
    first, second = two_releases
    path = stacks / f"Pulumi.{STACK}.yaml"
    before = path.read_bytes()
    cfg = load(stacks)
    with pytest.raises(ModelsError, match=r"no release recorded as deployed to stack eu-roll") as refused:
        rollback.rollback(cfg, stacks, MODEL, reason="CHG-5", keys=keys(bao), who={})
    message = str(refused.value)
    assert "record-deploy" in message and "--to SHA256" in message
    assert f"{first.manifest_sha256} (imported {first.at})" in message  # the candidate
    assert second.manifest_sha256 not in message.partition("candidates")[2]  # not the pinned one
    assert path.read_bytes() == before
    assert ReleaseLog(cfg, MODEL).rollbacks() == []
    # --to still works: the operator names the release
    done = rollback.rollback(
        cfg, stacks, MODEL, reason="CHG-5", keys=keys(bao), who={}, to=first.manifest_sha256
    )
    assert done.plan.target == first


def test_a_rollback_whose_deploy_failed_is_deployed_again_not_stepped_back_further(
    stacks: Path, bao: Bao, tmp_path: Path, two_releases: tuple[Release, Release]
) -> None:
    """v1, v2, v3 each ran; the rollback v3 -> v2 pinned and recorded, its `pulumi up` failed (no
    deploy recorded). Running it again deploys v2 (before the fix: it pinned v1, one step more)."""
    first, second = two_releases
    deployed(stacks, first)
    deployed(stacks, second)
    bucket, _ = config.s3_location(first.source)
    third = release(stacks, bao, tmp_path, "v3", to=f"s3://{bucket}/{MODEL}-v3/")
    deployed(stacks, third)
    path = stacks / f"Pulumi.{STACK}.yaml"
    done = rollback.rollback(load(stacks), stacks, MODEL, reason="CHG-6", keys=keys(bao), who={})
    assert (done.plan.target, done.plan.resume) == (second, None)
    pinned = path.read_bytes()
    # the deploy failed: nothing recorded it; the operator runs the same command again
    token_file = tmp_path / "token"
    token_file.write_text(publisher_token(bao))
    again = cli(stacks, tmp_path, "rollback", "--reason", "CHG-6", "--no-deploy", "--openbao-address",
                bao.address, "--token-file", str(token_file))  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "pins it already" in again.stdout and "not rolled back one release further" in again.stdout
    assert path.read_bytes() == pinned  # still v2
    assert model_config(load(stacks), MODEL).manifest_sha256 == second.manifest_sha256
    (only,) = ReleaseLog(load(stacks), MODEL).rollbacks()  # no second rollback recorded
    assert only.key == done.record.key
    plan = rollback.plan_rollback(load(stacks), MODEL, keys(bao))
    assert (plan.target, plan.resume) == (second, done.record)
    # once its deploy is recorded, a further rollback goes to v1 (v3 was rolled back from)
    rollback.record_deploy(load(stacks), MODEL, {"display_name": "op"})
    assert rollback.plan_rollback(load(stacks), MODEL, keys(bao)).target == first


def test_a_changed_object_in_the_old_release_is_refused_and_nothing_is_rewritten(
    stacks: Path, bao: Bao, tmp_path: Path, s3: S3Server, two_releases: tuple[Release, Release]
) -> None:
    first, _ = two_releases
    deployed(stacks, first)
    bucket, prefix = config.s3_location(first.source)
    s3.client().put_object(Bucket=bucket, Key=prefix + "config.json", Body=b'{"model_type": "evil"}')
    path = stacks / f"Pulumi.{STACK}.yaml"
    before = path.read_bytes()
    cfg = load(stacks)
    with pytest.raises(ModelsError, match=r"config\.json: SHA-256 does not match the signed manifest"):
        rollback.rollback(cfg, stacks, MODEL, reason="CHG-9", keys=keys(bao), who={"display_name": "x"})
    assert path.read_bytes() == before
    assert ReleaseLog(cfg, MODEL).rollbacks() == []
    # the release's manifest replaced by another signed one: not the recorded release either
    original = (tmp_path / "approved" / "v1" / MODEL / "config.json").read_bytes()
    s3.client().put_object(Bucket=bucket, Key=prefix + "config.json", Body=original)
    s3.client().copy_object(Bucket=bucket, Key=prefix + "SHA256SUMS",
                            CopySource={"Bucket": bucket, "Key": f"{MODEL}-v2/SHA256SUMS"})  # fmt: skip
    s3.client().copy_object(Bucket=bucket, Key=prefix + "SHA256SUMS.sig",
                            CopySource={"Bucket": bucket, "Key": f"{MODEL}-v2/SHA256SUMS.sig"})  # fmt: skip
    with pytest.raises(ModelsError, match="not the release's"):
        rollback.rollback(cfg, stacks, MODEL, reason="CHG-9", keys=keys(bao), who={})
    assert path.read_bytes() == before


def test_bad_inputs_name_the_flag_and_the_fix(
    stacks: Path, bao: Bao, tmp_path: Path, two_releases: tuple[Release, Release]
) -> None:
    cfg = load(stacks)
    path = stacks / f"Pulumi.{STACK}.yaml"
    before = path.read_bytes()
    for reason in ("", "   "):
        with pytest.raises(ModelsError, match="--reason: required and not empty"):
            rollback.rollback(cfg, stacks, MODEL, reason=reason, keys={}, who={})
    long = "Patient Erika Mustermann, born 1964-08-12, " * 20
    with pytest.raises(ModelsError, match=r"--reason: \d+ characters, at most 500") as refused:
        rollback.rollback(cfg, stacks, MODEL, reason=long, keys={}, who={})
    assert "Mustermann" not in str(refused.value)
    with pytest.raises(ModelsError, match="--to: give a manifest SHA-256 as 64 lowercase hex"):
        rollback.rollback(cfg, stacks, MODEL, reason="r", keys=keys(bao), who={}, to="ABC")
    with pytest.raises(ModelsError, match="no approved release of llama31-8b-awq has this manifest"):
        rollback.rollback(cfg, stacks, MODEL, reason="r", keys=keys(bao), who={}, to="0" * 64)
    pinned = model_config(cfg, MODEL).manifest_sha256
    with pytest.raises(ModelsError, match="the release the stack pins already"):
        rollback.rollback(cfg, stacks, MODEL, reason="r", keys=keys(bao), who={}, to=pinned)
    assert path.read_bytes() == before
    # a pin nobody imported
    other = path.read_text().replace(pinned, "1" * 64)
    path.write_text(other)
    with pytest.raises(ModelsError, match="is not an approved release"):
        rollback.rollback(load(stacks), stacks, MODEL, reason="r", keys=keys(bao), who={})


def test_without_a_pin_rollback_says_how_to_pin(stack: StackFactory, tmp_path: Path) -> None:
    cfg = stack("eu-unpinned")
    objectstore.bootstrap(cfg)
    with pytest.raises(ModelsError, match=r"manifest_sha256 is not set.*sovereign models releases"):
        rollback.rollback(cfg, tmp_path / "stacks", MODEL, reason="r", keys={}, who={})


def test_import_refuses_to_overwrite_another_release(stacks: Path, bao: Bao, tmp_path: Path) -> None:
    release(stacks, bao, tmp_path, "v1")
    with pytest.raises(ModelsError, match=r"holds another release.*prefix of its own: --to s3://"):
        upload.import_model(load(stacks), MODEL, approved_folder(tmp_path, "v2"), openbao_address=bao.address,
                            token=publisher_token(bao), state_dir=tmp_path / "uploads")  # fmt: skip
    bucket, prefix = config.s3_location(model_config(load(stacks), MODEL).source)
    with pytest.raises(ModelsError, match=r"inside one another.*a prefix of its own"):
        upload.import_model(load(stacks), MODEL, approved_folder(tmp_path, "v4"), openbao_address=bao.address,
                            token=publisher_token(bao), state_dir=tmp_path / "uploads",
                            source=f"s3://{bucket}/{prefix}v4/")  # fmt: skip
    with pytest.raises(ModelsError, match="not in the model's bucket"):
        upload.import_model(load(stacks), MODEL, approved_folder(tmp_path, "v3"), openbao_address=bao.address,
                            token=publisher_token(bao), state_dir=tmp_path / "uploads",
                            source="s3://another-bucket/x/")  # fmt: skip


def test_import_with_pin_rewrites_the_stack_file(stacks: Path, bao: Bao, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(publisher_token(bao))
    done = cli(stacks, tmp_path, "import", "--from", str(approved_folder(tmp_path, "v1")), "--pin",
               "--openbao-address", bao.address, "--token-file", str(token_file))  # fmt: skip
    assert done.returncode == 0, done.stderr
    (recorded,) = ReleaseLog(load(stacks), MODEL).releases()
    assert model_config(load(stacks), MODEL).manifest_sha256 == recorded.manifest_sha256
    assert f"manifest_sha256 {recorded.manifest_sha256}" in done.stdout


def test_rollback_without_the_pulumi_cli_refuses_before_changing_anything(
    stacks: Path, bao: Bao, tmp_path: Path, two_releases: tuple[Release, Release]
) -> None:
    bare = "/usr/bin:/bin"
    if shutil.which("pulumi", path=bare):
        pytest.skip("this machine has a Pulumi CLI in /usr/bin or /bin")
    path = stacks / f"Pulumi.{STACK}.yaml"
    before = path.read_bytes()
    token_file = tmp_path / "token"
    token_file.write_text(publisher_token(bao))
    env = {**{k: v for k, v in os.environ.items() if k != "PATH"}, "PATH": bare}
    refused = cli(stacks, tmp_path, "rollback", "--reason", "CHG-7", "--openbao-address", bao.address,
                  "--token-file", str(token_file), env=env)  # fmt: skip
    assert refused.returncode == 1
    assert "the Pulumi CLI is not installed here" in refused.stderr and "--no-deploy" in refused.stderr
    assert "nothing was changed" in refused.stderr
    assert path.read_bytes() == before
    assert ReleaseLog(load(stacks), MODEL).rollbacks() == []
