"""The stack's EU object storage through boto3: the client, clear errors, and the buckets.

``client`` refuses an endpoint that is not on the EU allowlist before any request is made.
``explain`` turns boto3's errors into one line that names the bucket or endpoint, what went
wrong and what to do. ``bootstrap`` creates (or checks and corrects) the three buckets of a
stack — ``sovereign bootstrap-backend --stack NAME``:

- **state** (the bucket of ``endpoints.pulumi_backend``): versioning, default encryption,
  public access blocked, old versions expire after ``storage.state_noncurrent_days``;
- **models** (``endpoints.model_source``): versioning, encryption, public access blocked;
- **audit archive** (``storage.audit_archive``): Object Lock (only possible when the bucket is
  created) with a default retention of ``storage.audit_retention_days`` in
  ``storage.audit_lock_mode``, encryption, public access blocked;
- **snapshot copy** (``storage.openbao_snapshot_copy``, on *its own* endpoint, another EU location):
  Object Lock with a default retention of ``storage.openbao_snapshot_retention_days`` in
  ``storage.audit_lock_mode``, versioning, encryption, public access blocked. Its key: the AWS
  profile ``bootstrap(cfg, copy_profile=...)`` names, else the same chain as the others.

Idempotent: a second run changes nothing and says so. Credentials come from boto3's usual
chain (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` or a profile); they are never
printed.
"""

from __future__ import annotations

import configparser
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from gateway.errors import SovereignError
from infra import residency
from infra.config import StackConfig, s3_location

# an S3 server that does not implement a bucket setting answers one of these
_UNSUPPORTED = {"NotImplemented", "501", "UnsupportedOperation", "MethodNotAllowed", "InvalidRequest"}
_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}


class StorageError(SovereignError, RuntimeError):
    pass


def explain(exc: BaseException, what: str, endpoint: str, stack: str | None = None) -> StorageError:
    """One line for a boto3 failure on *what* (e.g. ``bucket 'x'``); never includes credentials."""
    import botocore.exceptions

    bootstrap = f"sovereign bootstrap-backend --stack {stack}" if stack else "sovereign bootstrap-backend"
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "error"))
        if code in _CREDENTIALS:
            return StorageError(
                f"{endpoint} refused the credentials ({code}): set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY to an access key of this object storage"
            )
        if code in {"NoSuchBucket", "404"} and what.startswith("bucket"):
            return StorageError(f"{what} does not exist on {endpoint}: create it with `{bootstrap}`")
        if code in {"AccessDenied", "403"}:
            return StorageError(f"{endpoint} denied access to {what} (AccessDenied): the key lacks the right")
        if code in {"NoSuchKey", "404"}:
            return StorageError(f"{what} does not exist on {endpoint}")
        return StorageError(f"{endpoint} refused the request on {what}: {code}")
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return StorageError("no object storage credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if isinstance(exc, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectTimeoutError):
        return StorageError(f"cannot reach the object storage at {endpoint}: check the URL and the network")
    return StorageError(f"object storage at {endpoint} failed on {what}: {type(exc).__name__}")


def endpoint_url(endpoint: str) -> str:
    """An S3 endpoint as a URL: ``https://`` added to a bare host (as in Pulumi's s3:// URLs)."""
    return endpoint if "://" in endpoint else f"https://{endpoint}"


def client(
    endpoint: str,
    extra: list[residency.EuEndpoint] | None = None,
    region: str | None = None,
    *,
    profile: str | None = None,
    credentials_file: Path | None = None,
) -> Any:
    """A boto3 S3 client for *endpoint*, refused unless the endpoint is inside the EU boundary.
    Credentials: boto3's usual chain, or the AWS *profile*, or the default profile of the shared-
    credentials file *credentials_file* (a second location's key beside the first's)."""
    import boto3
    from botocore.config import Config

    url = endpoint_url(endpoint)
    problem = residency.endpoint_problem(url, extra or [])
    if problem:
        raise StorageError(f"object storage endpoint {url!r} {problem}")
    keys: dict[str, str] = {}
    if credentials_file is not None:
        parser = configparser.ConfigParser()
        try:
            parser.read_string(credentials_file.read_text(encoding="utf-8"))
            keys = {
                "aws_access_key_id": parser["default"]["aws_access_key_id"],
                "aws_secret_access_key": parser["default"]["aws_secret_access_key"],
            }
        except (OSError, KeyError, configparser.Error):
            raise StorageError(
                f"no object-storage key for {url} in {credentials_file} (an AWS credentials file with "
                "aws_access_key_id and aws_secret_access_key under [default])"
            ) from None
    # a session of its own: the default session keeps the first credentials it resolved
    try:
        session = boto3.session.Session(profile_name=profile, **keys)
    except Exception as exc:  # botocore's ProfileNotFound
        raise StorageError(f"object storage {url}: AWS profile {profile!r}: {type(exc).__name__}") from None
    return session.client(
        "s3",
        endpoint_url=url,
        region_name=region or "us-east-1",  # boto3 needs one; S3-compatible servers ignore it
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"}),
    )


def stack_client(cfg: StackConfig) -> Any:
    return client(cfg.endpoints.object_storage, cfg.residency.entries(), stack_region(cfg))


def stack_region(cfg: StackConfig) -> str | None:
    if cfg.storage.region:
        return cfg.storage.region
    query = parse_qs(urlsplit(cfg.endpoints.pulumi_backend).query)
    return query.get("region", [None])[0]


@dataclass(frozen=True)
class BucketPlan:
    role: str  # state | models | audit | copy (the OpenBao snapshot copy)
    name: str
    object_lock: bool = False
    endpoint: str | None = None  # another endpoint than endpoints.object_storage (the copy's)


@dataclass
class BucketReport:
    plan: BucketPlan
    created: bool = False
    changed: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        state = "created" if self.created else ("updated" if self.changed else "unchanged")
        out = [f"{self.plan.role:<7} s3://{self.plan.name}: {state}"]
        if self.plan.endpoint:
            out[0] += f" (on {self.plan.endpoint})"
        out += [f"          {c}" for c in self.changed]
        out += [f"          WARNING: {u}" for u in self.unsupported]
        return out


def buckets(cfg: StackConfig) -> list[BucketPlan]:
    """The stack's three buckets; a missing or non-S3 setting is named with its fix."""
    problems = []
    backend = cfg.endpoints.pulumi_backend
    if not backend.startswith("s3://"):
        problems.append(
            f"endpoints.pulumi_backend: {backend!r} is not an s3:// backend, so there is no state bucket to "
            "create; use s3://<bucket>?endpoint=<EU object storage>&region=<region>"
        )
    if cfg.storage.audit_archive is None:
        problems.append(
            "storage.audit_archive: not set — the audit archive bucket (Object Lock) needs a name, "
            "e.g. s3://sovereign-audit-eu-central/gateway/"
        )
    if problems:
        raise StorageError(f"stack {cfg.stack!r}: " + "; ".join(problems))
    plans = []
    for role, url, lock in (
        ("state", backend, False),
        ("models", cfg.endpoints.model_source, False),
        ("audit", cfg.storage.audit_archive or "", True),
    ):
        try:
            bucket, _ = s3_location(url)
        except ValueError as exc:
            raise StorageError(f"stack {cfg.stack!r}: {role} location {url!r} {exc}") from None
        plans.append(BucketPlan(role, bucket, lock))
    for other in (cfg.endpoints.model_source, backend):
        host = residency.host_of(other)
        if host and host != residency.host_of(cfg.endpoints.object_storage):
            raise StorageError(
                f"stack {cfg.stack!r}: {other!r} names endpoint {host!r}, but endpoints.object_storage is "
                f"{cfg.endpoints.object_storage!r}: keep state, models and audit on the one object storage"
            )
    names = [p.name for p in plans]
    if len(set(names)) != len(names):
        raise StorageError(
            f"stack {cfg.stack!r}: state, models and audit archive must be three buckets, got {names}"
        )
    return plans


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class _Bucket:
    """Apply one bucket's settings, recording what changed."""

    def __init__(self, s3: Any, report: BucketReport, endpoint: str, stack: str) -> None:
        self.s3, self.report, self.endpoint, self.stack = s3, report, endpoint, stack
        self.name = report.plan.name

    def call(self, setting: str, fn: Any, **kwargs: Any) -> Any:
        """Call *fn*; an S3 server that lacks the setting is reported, anything else raises."""
        import botocore.exceptions

        try:
            return fn(Bucket=self.name, **kwargs)
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in _UNSUPPORTED:
                self.report.unsupported.append(
                    f"{setting}: not supported by {self.endpoint} ({_code(exc)}); record the gap in the DPIA"
                )
                return None
            raise explain(exc, f"bucket {self.name!r} ({setting})", self.endpoint, self.stack) from None

    def read(self, fn: Any, missing: set[str]) -> Any:
        """A bucket setting, or None where it is not set yet."""
        import botocore.exceptions

        try:
            return fn(Bucket=self.name)
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in missing | _UNSUPPORTED:
                return None
            raise explain(exc, f"bucket {self.name!r}", self.endpoint, self.stack) from None


def check_bucket(s3: Any, bucket: str, endpoint: str, stack: str | None = None) -> bool:
    """True when *bucket* exists and this key can list it; False when it does not exist; raise
    the explained error otherwise (a listing, not HEAD: HEAD answers have no error code)."""
    import botocore.exceptions

    try:
        s3.list_objects_v2(Bucket=bucket, MaxKeys=1)
        return True
    except botocore.exceptions.ClientError as exc:
        if _code(exc) == "NoSuchBucket":
            return False
        if _code(exc) in {"403", "AccessDenied"}:
            raise StorageError(
                f"{endpoint} denied access to bucket {bucket!r} (AccessDenied): it belongs to another "
                "account (choose another name) or this key lacks s3:ListBucket on it"
            ) from None
        raise explain(exc, f"bucket {bucket!r}", endpoint, stack) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise explain(exc, f"bucket {bucket!r}", endpoint, stack) from None


def require_bucket(s3: Any, bucket: str, endpoint: str, stack: str | None = None) -> None:
    if not check_bucket(s3, bucket, endpoint, stack):
        command = f"sovereign bootstrap-backend --stack {stack}" if stack else "sovereign bootstrap-backend"
        raise StorageError(f"bucket {bucket!r} does not exist on {endpoint}: create it with `{command}`")


def _ensure_exists(b: _Bucket, region: str | None) -> None:
    import botocore.exceptions

    if check_bucket(b.s3, b.name, b.endpoint, b.stack):
        return
    kwargs: dict[str, Any] = {}
    if region and region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    if b.report.plan.object_lock:
        kwargs["ObjectLockEnabledForBucket"] = True
    try:
        b.s3.create_bucket(Bucket=b.name, **kwargs)
    except botocore.exceptions.ClientError as exc:
        if _code(exc) != "BucketAlreadyOwnedByYou":
            raise explain(exc, f"bucket {b.name!r} (create)", b.endpoint, b.stack) from None
    b.report.created = True


def _ensure_versioning(b: _Bucket) -> None:
    current = b.read(b.s3.get_bucket_versioning, set()) or {}
    if current.get("Status") != "Enabled":
        b.call("versioning", b.s3.put_bucket_versioning, VersioningConfiguration={"Status": "Enabled"})
        b.report.changed.append("versioning: Enabled")


def _ensure_encryption(b: _Bucket) -> None:
    current = b.read(b.s3.get_bucket_encryption, {"ServerSideEncryptionConfigurationNotFoundError"})
    rules = (current or {}).get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
    if not any(r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm") for r in rules):
        rule = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
        if b.call("default encryption", b.s3.put_bucket_encryption,
                  ServerSideEncryptionConfiguration={"Rules": [rule]}) is not None:  # fmt: skip
            b.report.changed.append("default encryption: AES256 (SSE-S3)")


_BLOCK_ALL = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}


def _ensure_private(b: _Bucket) -> None:
    current = b.read(b.s3.get_public_access_block, {"NoSuchPublicAccessBlockConfiguration"})
    if (current or {}).get("PublicAccessBlockConfiguration") == _BLOCK_ALL:
        return
    if b.call("public access block", b.s3.put_public_access_block,
              PublicAccessBlockConfiguration=_BLOCK_ALL) is not None:  # fmt: skip
        b.report.changed.append("public access: blocked")


def _ensure_lifecycle(b: _Bucket, noncurrent_days: int) -> None:
    rules = [
        {
            "ID": "sovereign-expire-old-state-versions",
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "NoncurrentVersionExpiration": {"NoncurrentDays": noncurrent_days},
        },
        {
            "ID": "sovereign-abort-stale-uploads",
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
        },
    ]
    current = b.read(b.s3.get_bucket_lifecycle_configuration, {"NoSuchLifecycleConfiguration"}) or {}
    have = {r.get("ID"): r for r in current.get("Rules", [])}
    wanted_ok = all(
        have.get(r["ID"], {}).get(k) == r[k]
        for r in rules
        for k in ("Status", "NoncurrentVersionExpiration", "AbortIncompleteMultipartUpload")
        if k in r
    )
    if not wanted_ok:
        keep = [r for r in current.get("Rules", []) if r.get("ID") not in {x["ID"] for x in rules}]
        if b.call("lifecycle", b.s3.put_bucket_lifecycle_configuration,
                  LifecycleConfiguration={"Rules": keep + rules}) is not None:  # fmt: skip
            b.report.changed.append(f"lifecycle: old versions expire after {noncurrent_days} days")


def _ensure_object_lock(b: _Bucket, mode: str, days: int, key: str = "storage.audit_archive") -> None:
    current = b.read(b.s3.get_object_lock_configuration, {"ObjectLockConfigurationNotFoundError"})
    config = (current or {}).get("ObjectLockConfiguration", {})
    if config.get("ObjectLockEnabled") != "Enabled":
        raise StorageError(
            f"bucket {b.name!r} exists without Object Lock, which can only be switched on when a bucket is "
            f"created: set {key} to a new bucket name and run bootstrap-backend again"
        )
    retention = config.get("Rule", {}).get("DefaultRetention", {})
    if retention.get("Mode") != mode or retention.get("Days") != days:
        b.call("object lock", b.s3.put_object_lock_configuration, ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": mode, "Days": days}},
        })  # fmt: skip
        b.report.changed.append(f"object lock: {mode}, {days} days default retention")


def bootstrap(cfg: StackConfig, copy_profile: str | None = None) -> list[BucketReport]:
    """Create or correct the stack's buckets, and the snapshot copy's bucket on its own endpoint
    (storage.openbao_snapshot_copy; its key from *copy_profile*); return what was done per bucket."""
    plans = buckets(cfg)
    s3 = stack_client(cfg)
    endpoint = endpoint_url(cfg.endpoints.object_storage)
    reports = []
    for plan in plans:
        report = BucketReport(plan)
        b = _Bucket(s3, report, endpoint, cfg.stack)
        _ensure_exists(b, stack_region(cfg))
        if plan.object_lock:
            _ensure_object_lock(b, cfg.storage.audit_lock_mode, cfg.storage.audit_retention_days)
        _ensure_versioning(b)
        _ensure_encryption(b)
        _ensure_private(b)
        if plan.role == "state":
            _ensure_lifecycle(b, cfg.storage.state_noncurrent_days)
        reports.append(report)
    if (copy := cfg.storage.openbao_snapshot_copy) is not None:
        copy_endpoint = endpoint_url(copy.endpoint)
        report = BucketReport(BucketPlan("copy", copy.bucket, object_lock=True, endpoint=copy_endpoint))
        copy_s3 = client(copy.endpoint, cfg.residency.entries(), copy.region, profile=copy_profile)
        b = _Bucket(copy_s3, report, copy_endpoint, cfg.stack)
        _ensure_exists(b, copy.region)
        _ensure_object_lock(
            b, cfg.storage.audit_lock_mode, cfg.storage.openbao_snapshot_retention_days,
            "storage.openbao_snapshot_copy.bucket",
        )  # fmt: skip
        _ensure_versioning(b)
        _ensure_encryption(b)
        _ensure_private(b)
        reports.append(report)
    return reports


def login_lines(cfg: StackConfig) -> list[str]:
    """The commands that put this stack's state and secrets inside the boundary."""
    backend = cfg.endpoints.pulumi_backend
    if "s3ForcePathStyle" not in backend:
        backend += ("&" if "?" in backend else "?") + "s3ForcePathStyle=true"
    return [
        f"pulumi login '{backend}'",
        # the hashivault:// keeper (gocloud.dev) reads VAULT_SERVER_URL/VAULT_SERVER_TOKEN before
        # VAULT_ADDR/VAULT_TOKEN, which stay for the cluster's OpenBao (docs/region-stacks.md)
        "export VAULT_SERVER_URL=<operations OpenBao URL> "
        "VAULT_SERVER_TOKEN=<token with transit encrypt/decrypt on pulumi-" + cfg.stack + ">",
        f"pulumi stack init {cfg.stack} --secrets-provider='hashivault://pulumi-{cfg.stack}'",
    ]
