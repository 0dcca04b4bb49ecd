"""The OpenBao restore drill, with real processes: a real `bao server` on Raft storage, initialised
with key shares like the custodians' and bootstrapped like the local stack; a tenant data key and
an audit trail made by the gateway's own code; a snapshot taken with the snapshot policy alone into
the Object Lock bucket (moto's S3 server) by `sovereign openbao snapshot`; the server and its data
lost; a fresh, empty server initialised with new keys; `sovereign openbao restore latest --unseal`
with the ORIGINAL unseal keys. Then: the tokens made before the loss work, the tenant's wrapped
data key unwraps to the same key, the audit chain verifies. A snapshot altered by one byte is
refused by OpenBao itself (its SHA256SUMS), and the fresh server is left as it was.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import shutil
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import botocore.exceptions
import httpx
import hvac
import hvac.exceptions
import pytest

from gateway.audit import AuditLog, verify
from gateway.kms import KeyProvider, transit_unwrapper
from gateway.settings import OpenBaoSettings
from infra import cli, objectstore, openbao_backup, openbao_contract
from infra.local import openbao
from tests.storage.conftest import StackFactory
from tests.support import Bao, Proc, S3Server, free_port, start_process, start_s3

SHARES, THRESHOLD = 3, 2  # like the custodians' (docs/platform.md): any two of three unseal
TENANT = "praxis-nord"


@dataclass
class RaftBao:
    """A real `bao server` with Raft storage on loopback; *audit_log* is the file audit device's
    path, the same for the lost server and the fresh one (OpenBao refuses to unseal when the
    restored audit table and the configuration's audit device differ)."""

    root_dir: Path
    audit_log: Path
    port: int = field(default_factory=free_port)
    cluster_port: int = field(default_factory=free_port)
    proc: Proc | None = None

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data(self) -> Path:
        return self.root_dir / "data"

    def start(self) -> None:
        from infra.local.stack import _bao_binary

        self.data.mkdir(parents=True, exist_ok=True)
        config = self.root_dir / "openbao.hcl"
        config.write_text(
            f'storage "raft" {{\n  path = "{self.data}"\n  node_id = "bao-1"\n}}\n'
            f'listener "tcp" {{\n  address = "127.0.0.1:{self.port}"\n  tls_disable = true\n}}\n'
            f'api_addr = "{self.address}"\ncluster_addr = "http://127.0.0.1:{self.cluster_port}"\n'
            + openbao.server_config(self.audit_log)
        )
        self.proc = start_process(
            "openbao", [_bao_binary(), "server", f"-config={config}"], self.address,
            "/v1/sys/health?uninitcode=200&sealedcode=200", self.root_dir / "openbao.log",
        )  # fmt: skip

    def initialise(self) -> tuple[list[str], str]:
        """Fresh key shares and root token; unsealed with THRESHOLD of them, active."""
        answer = hvac.Client(url=self.address).sys.initialize(
            secret_shares=SHARES, secret_threshold=THRESHOLD
        )
        openbao_backup.unseal(self.address, answer["keys"][:THRESHOLD])
        return list(answer["keys"]), str(answer["root_token"])

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[RaftBao]]:
    made: list[RaftBao] = []
    yield made
    for server in made:
        server.stop()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_restore_drill_tokens_keys_and_audit_chain_survive_the_loss(
    stack: StackFactory,
    s3: S3Server,
    servers: list[RaftBao],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = stack()
    objectstore.bootstrap(cfg)  # the Object Lock bucket of storage.audit_archive
    stacks_dir = str(tmp_path / "stacks")
    audit_log = tmp_path / "openbao-audit" / "audit.log"

    # -- before the loss: a production-like server, the gateway's keys and audit trail -------------
    lost = RaftBao(tmp_path / "bao-lost", audit_log)
    servers.append(lost)
    lost.start()
    unseal_keys, root = lost.initialise()
    tokens = openbao.bootstrap(lost.address, root)
    admin = hvac.Client(url=lost.address, token=root)
    admin.sys.create_or_update_policy("sovereign-openbao-snapshot", openbao_backup.SNAPSHOT_POLICY)
    snapshot_token = admin.auth.token.create(policies=["sovereign-openbao-snapshot"], no_parent=True)
    snapshot_token = snapshot_token["auth"]["client_token"]
    # the snapshot policy is least privilege: no key, no secret, no policy through it
    with pytest.raises(hvac.exceptions.Forbidden):
        hvac.Client(url=lost.address, token=snapshot_token).secrets.transit.generate_data_key(
            name=openbao_contract.AUDIT_KEY, key_type="plaintext"
        )

    wrapped = tmp_path / "gateway" / "wrapped"
    settings = OpenBaoSettings(address=lost.address, token=tokens.gateway)
    keys = KeyProvider(settings, wrapped)
    data_key = asyncio.run(keys.tenant_key(TENANT))
    asyncio.run(keys.refresh_audit_key())
    trail = tmp_path / "gateway" / "audit" / "audit.jsonl"
    log = AuditLog(trail, keys, fsync=False)
    for i in range(5):
        log.admit({"request_id": f"r{i}", "tenant": TENANT})
        log.append({"request_id": f"r{i}", "tenant": TENANT, "outcome": "ok", "phi_counts": {"name": 1}})
    log.close()
    keys.forget()
    before = verify(trail, transit_unwrapper(lost.address, tokens.auditor, openbao_contract.AUDIT_KEY))
    assert before.ok and before.records >= 10, before.message

    # -- the snapshot, taken with the snapshot token alone, into the bucket (the CronJob's command) --
    token_file = _write(tmp_path / "snapshot.token", snapshot_token)
    assert cli.main([
        "openbao", "snapshot", "--stack", cfg.stack, "--stacks-dir", stacks_dir,
        "--openbao-address", lost.address, "--token-file", str(token_file),
    ]) == 0  # fmt: skip
    store = openbao_backup.store_from_stack(cfg)
    [stored] = openbao_backup.snapshots(store)
    head = s3.client().head_object(Bucket=store.bucket, Key=store.prefix + stored.name)
    assert head["ObjectLockMode"] == cfg.storage.audit_lock_mode
    assert head["Metadata"]["sha256"] and int(head["Metadata"]["size"]) == stored.size
    capsys.readouterr()
    assert cli.main(["openbao", "snapshots", "--stack", cfg.stack, "--stacks-dir", stacks_dir]) == 0
    assert stored.name in capsys.readouterr().out

    # a roll-back on the same cluster (its own keys): it stays unsealed, later changes are undone
    admin.sys.create_or_update_policy("made-after-the-snapshot", 'path "kv/*" { capabilities = ["read"] }')
    root_before = _write(tmp_path / "root.token", root)
    assert cli.main([
        "openbao", "restore", "latest", "--stack", cfg.stack, "--stacks-dir", stacks_dir,
        "--openbao-address", lost.address, "--token-file", str(root_before),
    ]) == 0  # fmt: skip
    assert "stays unsealed" in capsys.readouterr().out
    assert "made-after-the-snapshot" not in admin.sys.list_policies()["data"]["policies"]

    # -- the loss: the server and its Raft data are gone -------------------------------------------
    lost.stop()
    shutil.rmtree(lost.root_dir)

    # -- a fresh, empty server with keys of its own --------------------------------------------------
    fresh = RaftBao(tmp_path / "bao-fresh", audit_log)
    servers.append(fresh)
    fresh.start()
    fresh_keys, fresh_root = fresh.initialise()
    assert set(fresh_keys).isdisjoint(unseal_keys)
    with pytest.raises(hvac.exceptions.Forbidden):  # it knows nothing of the lost server's tokens
        hvac.Client(url=fresh.address, token=tokens.gateway).auth.token.lookup_self()

    # a snapshot altered by one byte: OpenBao checks its SHA256SUMS and installs nothing
    good = openbao_backup.download(store, stored.name, tmp_path / "good.snap")
    altered = bytearray(good.path.read_bytes())
    altered[len(altered) // 2] ^= 0x01
    bad = tmp_path / "altered.snap"
    bad.write_bytes(bytes(altered))
    with pytest.raises(openbao_backup.BackupError, match="hash check failed") as refused:
        openbao_backup.restore(openbao_backup.client(fresh.address, fresh_root), bad)
    assert fresh_root not in str(refused.value)
    assert hvac.Client(url=fresh.address, token=fresh_root).auth.token.lookup_self()["data"]["id"]
    assert httpx.get(f"{fresh.address}/v1/sys/health", timeout=5).status_code == 200  # still unsealed

    # -- the restore: `sovereign openbao restore latest --unseal`, original keys on stdin ------------
    root_file = _write(tmp_path / "fresh-root.token", fresh_root)
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(unseal_keys[:THRESHOLD]) + "\n"))
    assert cli.main([
        "openbao", "restore", "latest", "--stack", cfg.stack, "--stacks-dir", stacks_dir,
        "--openbao-address", fresh.address, "--token-file", str(root_file), "--unseal",
    ]) == 0  # fmt: skip
    out = capsys.readouterr()
    for secret in (*unseal_keys, fresh_root, root, snapshot_token):
        assert secret not in out.out + out.err

    # the state is the lost server's: its tokens work, the fresh server's root token is gone
    me = hvac.Client(url=fresh.address, token=tokens.gateway).auth.token.lookup_self()["data"]
    assert "sovereign-gateway" in me["policies"]
    with pytest.raises(hvac.exceptions.Forbidden):
        hvac.Client(url=fresh.address, token=fresh_root).auth.token.lookup_self()
    # the tenant's wrapped data key (on the gateway's disk) unwraps to the same key
    again = KeyProvider(OpenBaoSettings(address=fresh.address, token=tokens.gateway), wrapped)
    assert asyncio.run(again.tenant_key(TENANT)) == data_key
    again.forget()
    # the audit chain verifies with the restored audit key, with the auditor's pre-loss token
    after = verify(trail, transit_unwrapper(fresh.address, tokens.auditor, openbao_contract.AUDIT_KEY))
    assert after.ok and after.records == before.records, after.message


def test_a_snapshot_altered_in_the_bucket_is_not_restored(
    stack: StackFactory, s3: S3Server, tmp_path: Path
) -> None:
    """The SHA-256 recorded at upload is checked on download, before OpenBao sees the file."""
    cfg = stack()
    objectstore.bootstrap(cfg)
    store = openbao_backup.store_from_stack(cfg)
    original = tmp_path / "raft.snap"
    original.write_bytes(b"snapshot bytes " * 100)
    snap = openbao_backup.Snapshot(original, hashlib.sha256(original.read_bytes()).hexdigest(), 1500)
    name = openbao_backup.upload(store, snap)
    assert openbao_backup.download(store, name, tmp_path / "ok.snap").sha256 == snap.sha256
    # a new version under the same key (Object Lock keeps the old one), keeping the old metadata
    s3.client().put_object(
        Bucket=store.bucket, Key=store.prefix + name, Body=b"snapshot bytes " * 99 + b"snapshot bytez ",
        Metadata={"sha256": snap.sha256, "size": "1500"},
    )  # fmt: skip
    with pytest.raises(openbao_backup.BackupError, match="differs from the one recorded at upload"):
        openbao_backup.download(store, name, tmp_path / "bad.snap")
    with pytest.raises(openbao_backup.BackupError, match="not a snapshot name"):
        openbao_backup.download(store, "../gateway/000000000000-000000000009.jsonl", tmp_path / "x.snap")


def test_a_token_without_the_snapshot_policy_is_refused_and_never_shown(
    stack: StackFactory, s3: S3Server, bao: Bao, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = stack()
    objectstore.bootstrap(cfg)
    token_file = _write(tmp_path / "gateway.token", bao.gateway_token)  # transit only, no snapshots
    code = cli.main([
        "openbao", "snapshot", "--stack", cfg.stack, "--stacks-dir", str(tmp_path / "stacks"),
        "--openbao-address", bao.address, "--token-file", str(token_file),
    ])  # fmt: skip
    out = capsys.readouterr()
    assert code == 1
    assert "lacks read on sys/storage/raft/snapshot" in out.err
    assert bao.gateway_token not in out.out + out.err
    assert openbao_backup.snapshots(openbao_backup.store_from_stack(cfg)) == []


def test_the_cronjobs_settings_file_reaches_the_stacks_bucket(
    stack: StackFactory, s3: S3Server, tmp_path: Path
) -> None:
    """What infra/k8s_platform/openbao.py renders into the CronJob's ConfigMap names the bucket,
    endpoint and lock of the stack (the pod has no stack config)."""
    from infra.k8s_platform.openbao import snapshot_settings

    cfg = stack()
    objectstore.bootstrap(cfg)
    settings = openbao_backup.SnapshotSettings.model_validate(snapshot_settings(cfg))
    store = openbao_backup.store_from_target(settings.target)
    snap = tmp_path / "raft.snap"
    snap.write_bytes(b"x" * 64)
    name = openbao_backup.upload(
        store, openbao_backup.Snapshot(snap, hashlib.sha256(snap.read_bytes()).hexdigest(), 64)
    )
    assert [s.name for s in openbao_backup.snapshots(openbao_backup.store_from_stack(cfg))] == [name]
    head = s3.client().head_object(Bucket=store.bucket, Key=store.prefix + name)
    assert head["ObjectLockMode"] == cfg.storage.audit_lock_mode
    retained = head["ObjectLockRetainUntilDate"] - head["LastModified"]
    assert openbao_backup.RETENTION_DAYS - 1 <= retained.days <= openbao_backup.RETENTION_DAYS


# -- the copy location (storage.openbao_snapshot_copy): snapshots that survive the primary region ------
# A second moto server stands in for the other location: its own endpoint (another port), its own
# store and its own IAM, so its key is not the primary's and the primary's key is refused there.
COPY_PROFILE = "dr-copy"


@pytest.fixture(scope="module")
def copy_server() -> Iterator[S3Server]:
    server = start_s3()
    yield server
    server.stop()


@pytest.fixture
def copy_location(
    copy_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, object]:
    """The copy's stack setting; its key only in the AWS profile COPY_PROFILE (as an operator keeps
    a second location's key), the primary's in the environment (the `s3` fixture)."""
    credentials = tmp_path / "aws-credentials"
    credentials.write_text(
        f"[{COPY_PROFILE}]\naws_access_key_id = {copy_server.env['AWS_ACCESS_KEY_ID']}\n"
        f"aws_secret_access_key = {copy_server.env['AWS_SECRET_ACCESS_KEY']}\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    return {"endpoint": copy_server.url, "bucket": f"bao-copy-{uuid.uuid4().hex[:8]}"}


def _locked_days(head: dict[str, object]) -> timedelta:
    return head["ObjectLockRetainUntilDate"] - head["LastModified"]  # type: ignore[operator,no-any-return]


def test_snapshots_reach_the_copy_location_and_the_dr_restore_reads_it_without_the_primary(
    stack: StackFactory,
    s3: S3Server,
    copy_server: S3Server,
    copy_location: dict[str, object],
    servers: list[RaftBao],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    storage = {"openbao_snapshot_retention_days": 7, "openbao_snapshot_copy": copy_location}
    cfg = stack(storage=storage)
    stacks_dir = str(tmp_path / "stacks")
    # bootstrap-backend makes the copy bucket on the copy's endpoint, with the copy's key: Object Lock
    # with the snapshots' retention; a second run changes nothing
    reports = objectstore.bootstrap(cfg, copy_profile=COPY_PROFILE)
    assert [r.plan.role for r in reports if r.created] == ["state", "models", "audit", "copy"]
    bucket = str(copy_location["bucket"])
    lock = copy_server.client().get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled"
    retention = lock["Rule"]["DefaultRetention"]
    assert (retention["Mode"], retention["Days"]) == (cfg.storage.audit_lock_mode, 7)
    assert not [r for r in objectstore.bootstrap(cfg, copy_profile=COPY_PROFILE) if r.created or r.changed]
    with pytest.raises(botocore.exceptions.ClientError, match="InvalidAccessKeyId"):  # not the copy's key
        boto3.client(
            "s3", endpoint_url=copy_server.url, region_name="us-east-1",
            aws_access_key_id=s3.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=s3.env["AWS_SECRET_ACCESS_KEY"],
        ).list_objects_v2(Bucket=bucket)  # fmt: skip

    # a production-like server, a tenant data key made by the gateway's key provider
    audit_log = tmp_path / "openbao-audit" / "audit.log"
    lost = RaftBao(tmp_path / "bao-lost", audit_log)
    servers.append(lost)
    lost.start()
    unseal_keys, root = lost.initialise()
    tokens = openbao.bootstrap(lost.address, root)
    wrapped = tmp_path / "gateway" / "wrapped"
    keys = KeyProvider(OpenBaoSettings(address=lost.address, token=tokens.gateway), wrapped)
    data_key = asyncio.run(keys.tenant_key(TENANT))
    keys.forget()

    # `sovereign openbao snapshot`: one snapshot, in both locations, each locked for the stack's 7 days
    root_file = _write(tmp_path / "root.token", root)
    assert cli.main([
        "openbao", "snapshot", "--stack", cfg.stack, "--stacks-dir", stacks_dir,
        "--openbao-address", lost.address, "--token-file", str(root_file), "--copy-profile", COPY_PROFILE,
    ]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "(primary;" in printed and "(copy;" in printed and copy_server.url in printed
    primary, copy = openbao_backup.stores_from_stack(cfg, COPY_PROFILE)
    [stored] = openbao_backup.snapshots(primary)
    assert [s.name for s in openbao_backup.snapshots(copy)] == [stored.name]
    heads = [
        server.client().head_object(Bucket=store.bucket, Key=store.prefix + stored.name)
        for server, store in ((s3, primary), (copy_server, copy))
    ]
    for head in heads:
        assert head["ObjectLockMode"] == cfg.storage.audit_lock_mode
        assert 6 <= _locked_days(head).days <= 7  # the stack's retention, not the 35-day default
    assert heads[0]["Metadata"] == heads[1]["Metadata"]
    here = [
        openbao_backup.download(st, stored.name, tmp_path / f"{st.location}.snap") for st in (primary, copy)
    ]
    assert here[0].sha256 == here[1].sha256 == heads[0]["Metadata"]["sha256"]
    capsys.readouterr()
    assert cli.main([
        "openbao", "snapshots", "--stack", cfg.stack, "--stacks-dir", stacks_dir, "--location", "copy",
        "--copy-profile", COPY_PROFILE,
    ]) == 0  # fmt: skip
    [line] = capsys.readouterr().out.splitlines()
    assert line.split()[:3] == [stored.name, str(stored.size), "bytes"] and line.endswith("  copy")

    # -- the primary region is lost: its OpenBao, its data and its object storage -------------------
    lost.stop()
    shutil.rmtree(lost.root_dir)
    gone = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = stack(cfg.stack, endpoints={"object_storage": gone}, storage=storage)
    fresh = RaftBao(tmp_path / "bao-dr", audit_log)
    servers.append(fresh)
    fresh.start()
    _, fresh_root = fresh.initialise()
    fresh_file = _write(tmp_path / "fresh-root.token", fresh_root)
    restore = ["openbao", "restore", "latest", "--stack", cfg.stack, "--stacks-dir", stacks_dir,
               "--openbao-address", fresh.address, "--token-file", str(fresh_file)]  # fmt: skip
    assert cli.main(restore) == 1  # from the primary: nothing to read
    assert f"cannot reach the object storage at {gone}" in capsys.readouterr().err
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # nor is the primary's key at hand
        monkeypatch.delenv(name)
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(unseal_keys[:THRESHOLD]) + "\n"))
    assert cli.main([*restore, "--from-copy", "--copy-profile", COPY_PROFILE, "--unseal"]) == 0
    out = capsys.readouterr()
    assert "from the copy location" in out.err
    for secret in (*unseal_keys, fresh_root, root):
        assert secret not in out.out + out.err
    # the lost region's state: its gateway token works, the tenant's wrapped data key unwraps the same
    me = hvac.Client(url=fresh.address, token=tokens.gateway).auth.token.lookup_self()["data"]
    assert "sovereign-gateway" in me["policies"]
    again = KeyProvider(OpenBaoSettings(address=fresh.address, token=tokens.gateway), wrapped)
    assert asyncio.run(again.tenant_key(TENANT)) == data_key
    again.forget()


def test_a_failed_copy_fails_the_snapshot_once_the_primary_is_safe_and_names_the_location(
    stack: StackFactory,
    s3: S3Server,
    copy_server: S3Server,
    copy_location: dict[str, object],
    servers: list[RaftBao],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = stack(storage={"openbao_snapshot_copy": copy_location})
    objectstore.bootstrap(cfg, copy_profile=COPY_PROFILE)
    # the CronJob's copy key is wrong (e.g. revoked at the copy's object storage)
    wrong = "wrong-secret-" + uuid.uuid4().hex
    bad = tmp_path / "bad-credentials"
    bad.write_text(
        f"[{COPY_PROFILE}]\naws_access_key_id = {copy_server.env['AWS_ACCESS_KEY_ID']}\n"
        f"aws_secret_access_key = {wrong}\n"
    )
    server = RaftBao(tmp_path / "bao", tmp_path / "audit" / "audit.log")
    servers.append(server)
    server.start()
    _, root = server.initialise()
    token_file = _write(tmp_path / "root.token", root)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(bad))
    code = cli.main([
        "openbao", "snapshot", "--stack", cfg.stack, "--stacks-dir", str(tmp_path / "stacks"),
        "--openbao-address", server.address, "--token-file", str(token_file), "--copy-profile", COPY_PROFILE,
    ])  # fmt: skip
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    out = capsys.readouterr()
    assert code == 1  # the CronJob's Job fails: OpenBaoSnapshotFailing
    [stored] = openbao_backup.snapshots(openbao_backup.store_from_stack(cfg))  # the primary is safe
    assert f"snapshot {stored.name} is safe in the primary location" in out.err
    assert f"its copy to the copy location ({copy_server.url}, bucket {copy_location['bucket']!r})" in out.err
    assert "refused the credentials" in out.err
    assert openbao_backup.snapshots(openbao_backup.store_from_stack(cfg, "copy", COPY_PROFILE)) == []
    for secret in (wrong, root, copy_server.env["AWS_SECRET_ACCESS_KEY"], s3.env["AWS_SECRET_ACCESS_KEY"]):
        assert secret not in out.out + out.err


def test_the_cronjobs_settings_reach_the_copy_with_its_own_credentials_file(
    stack: StackFactory, s3: S3Server, copy_server: S3Server, copy_location: dict[str, object], tmp_path: Path
) -> None:
    """What the platform renders for a stack with a copy: the pod's settings name the copy's endpoint,
    bucket, lock and credentials file; the Job's upload lands in both, checksummed and locked alike."""
    from infra.k8s_platform.openbao import snapshot_settings

    cfg = stack(storage={"openbao_snapshot_copy": copy_location})
    objectstore.bootstrap(cfg, copy_profile=COPY_PROFILE)
    settings = openbao_backup.SnapshotSettings.model_validate(snapshot_settings(cfg))
    assert settings.copy_target is not None and settings.copy_target.credentials_file is not None
    pod_file = tmp_path / "copy-credentials"  # what the pod mounts from the copy's Secret
    pod_file.write_text(
        f"[default]\naws_access_key_id = {copy_server.env['AWS_ACCESS_KEY_ID']}\n"
        f"aws_secret_access_key = {copy_server.env['AWS_SECRET_ACCESS_KEY']}\n"
    )
    settings.copy_target.credentials_file = pod_file
    primary, copy = openbao_backup.stores_from_settings(settings)
    assert (copy.location, copy.bucket, copy.endpoint) == ("copy", copy_location["bucket"], copy_server.url)
    snap = tmp_path / "raft.snap"
    snap.write_bytes(b"y" * 64)
    digest = hashlib.sha256(snap.read_bytes()).hexdigest()
    # one time for both, as take_and_upload does: the name is the UTC second (two calls may straddle one)
    now = datetime.now(UTC)
    name = openbao_backup.upload(primary, openbao_backup.Snapshot(snap, digest, 64), now)
    assert openbao_backup.upload(copy, openbao_backup.Snapshot(snap, digest, 64), now) == name
    head = copy_server.client().head_object(Bucket=copy.bucket, Key=copy.prefix + name)
    assert head["ObjectLockMode"] == cfg.storage.audit_lock_mode and head["Metadata"]["sha256"] == digest
    assert openbao_backup.RETENTION_DAYS - 1 <= _locked_days(head).days <= openbao_backup.RETENTION_DAYS
