"""The release log: ``releases/<model>/`` in the bucket of ``endpoints.model_source``.

Every import records the approved release as its own object, ``<UTC time>-release-<sha12>.json``,
with source, the manifest's SHA-256, its signature document, who (the OpenBao token's display name
and entity; never the token) and when; every rollback and every recorded deploy likewise. One object
per event and no read-modify-write, so two operators never overwrite each other's record, and the
bucket's versioning keeps every version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from infra import objectstore
from infra.config import StackConfig, s3_location
from infra.weights.bucket import model_config, read_object
from infra.weights.manifest import ModelsError

RELEASE_FORMAT = "sovereign-model-release/1"
ROLLBACK_FORMAT = "sovereign-model-rollback/1"
DEPLOY_FORMAT = "sovereign-model-deploy/1"
RELEASES_PREFIX = "releases/"


@dataclass(frozen=True)
class Release:
    key: str  # the record's object key in the model bucket
    source: str
    manifest_sha256: str
    at: str
    who: dict[str, str] = field(default_factory=dict)
    signature: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RollbackRecord:
    key: str
    from_source: str
    from_manifest_sha256: str
    to_source: str
    to_manifest_sha256: str
    reason: str
    at: str
    who: dict[str, str] = field(default_factory=dict)
    stack: str = ""


@dataclass(frozen=True)
class DeployRecord:
    """A release deployed to a stack: written after a rollback's `pulumi up` succeeded, or by
    `sovereign models record-deploy` after an operator's own `pulumi up` (their word for it)."""

    key: str
    stack: str
    source: str
    manifest_sha256: str
    at: str
    how: str  # "rollback" or "record-deploy"
    who: dict[str, str] = field(default_factory=dict)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ReleaseLog:
    """``releases/<model>/`` in the bucket of ``endpoints.model_source``: one object per release,
    per rollback and per deploy, named ``<UTC time>-<kind>-<sha12>.json`` so that names sort by time."""

    def __init__(self, cfg: StackConfig, model: str) -> None:
        model_config(cfg, model)
        self.cfg, self.model = cfg, model
        self.bucket, _ = s3_location(cfg.endpoints.model_source)
        self.prefix = f"{RELEASES_PREFIX}{model}/"
        self.s3 = objectstore.stack_client(cfg)
        self.endpoint = objectstore.endpoint_url(cfg.endpoints.object_storage)

    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _put(self, kind: str, sha256: str, document: dict[str, Any]) -> str:
        import botocore.exceptions

        at = str(document["at"])
        stamp = at.replace("-", "").replace(":", "").replace(".", "")
        key = f"{self.prefix}{stamp}-{kind}-{sha256[:12]}.json"
        try:
            self.s3.put_object(
                Bucket=self.bucket, Key=key, Body=json.dumps(document, indent=2, sort_keys=True).encode(),
                ContentType="application/json", ChecksumAlgorithm="SHA256",
            )  # fmt: skip
        except botocore.exceptions.ClientError as exc:
            raise objectstore.explain(
                exc, f"s3://{self.bucket}/{key}", self.endpoint, self.cfg.stack
            ) from None
        return key

    def record_release(
        self, source: str, manifest_sha256: str, signature: dict[str, Any], who: dict[str, str]
    ) -> Release:
        at = _now()
        document = {
            "format": RELEASE_FORMAT, "model": self.model, "source": source,
            "manifest_sha256": manifest_sha256, "signature": signature, "who": who, "at": at,
        }  # fmt: skip
        key = self._put("release", manifest_sha256, document)
        return Release(key, source, manifest_sha256, at, who, signature)

    def record_rollback(
        self, current: Release, to: Release, reason: str, who: dict[str, str]
    ) -> RollbackRecord:
        at = _now()
        document = {
            "format": ROLLBACK_FORMAT, "model": self.model, "stack": self.cfg.stack,
            "from": {"source": current.source, "manifest_sha256": current.manifest_sha256},
            "to": {"source": to.source, "manifest_sha256": to.manifest_sha256, "release": to.key},
            "reason": reason, "who": who, "at": at,
        }  # fmt: skip
        key = self._put("rollback", to.manifest_sha256, document)
        return RollbackRecord(
            key, current.source, current.manifest_sha256, to.source, to.manifest_sha256, reason, at, who,
            self.cfg.stack,
        )  # fmt: skip

    def record_deploy(self, deployed: Release, how: str, who: dict[str, str]) -> DeployRecord:
        """*deployed* (an approved release) now runs in this stack."""
        at = _now()
        document = {
            "format": DEPLOY_FORMAT, "model": self.model, "stack": self.cfg.stack,
            "source": deployed.source, "manifest_sha256": deployed.manifest_sha256, "release": deployed.key,
            "how": how, "who": who, "at": at,
        }  # fmt: skip
        key = self._put("deploy", deployed.manifest_sha256, document)
        return DeployRecord(key, self.cfg.stack, deployed.source, deployed.manifest_sha256, at, how, who)

    def _documents(self) -> list[tuple[str, dict[str, Any]]]:
        import botocore.exceptions

        keys: list[str] = []
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            ):
                keys.extend(o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".json"))
        except botocore.exceptions.ClientError as exc:
            raise objectstore.explain(exc, f"bucket {self.bucket!r}", self.endpoint, self.cfg.stack) from None
        documents = []
        for key in sorted(keys, reverse=True):  # newest first
            body = read_object(self.s3, self.bucket, key, self.endpoint, self.cfg.stack)
            try:
                documents.append((key, dict(json.loads(body))))
            except (ValueError, TypeError):
                raise ModelsError(f"s3://{self.bucket}/{key}: not a release log record") from None
        return documents

    def releases(self) -> list[Release]:
        """The approved releases, newest first."""
        found = []
        for key, doc in self._documents():
            if doc.get("format") != RELEASE_FORMAT:
                continue
            try:
                found.append(
                    Release(key, str(doc["source"]), str(doc["manifest_sha256"]), str(doc["at"]),
                            dict(doc.get("who") or {}), dict(doc.get("signature") or {}))
                )  # fmt: skip
            except KeyError as exc:
                raise ModelsError(f"s3://{self.bucket}/{key}: release record without {exc}") from None
        return found

    def rollbacks(self) -> list[RollbackRecord]:
        """The rollbacks, newest first."""
        found = []
        for key, doc in self._documents():
            if doc.get("format") != ROLLBACK_FORMAT:
                continue
            found.append(
                RollbackRecord(
                    key, doc["from"]["source"], doc["from"]["manifest_sha256"], doc["to"]["source"],
                    doc["to"]["manifest_sha256"], str(doc["reason"]), str(doc["at"]),
                    dict(doc.get("who") or {}), str(doc.get("stack") or ""),
                )
            )  # fmt: skip
        return found

    def deploys(self) -> list[DeployRecord]:
        """The deploys to this log's stack, newest first."""
        found = []
        for key, doc in self._documents():
            if doc.get("format") != DEPLOY_FORMAT or doc.get("stack") != self.cfg.stack:
                continue
            try:
                found.append(
                    DeployRecord(key, str(doc["stack"]), str(doc["source"]), str(doc["manifest_sha256"]),
                                 str(doc["at"]), str(doc.get("how") or ""), dict(doc.get("who") or {}))
                )  # fmt: skip
            except KeyError as exc:
                raise ModelsError(f"s3://{self.bucket}/{key}: deploy record without {exc}") from None
        return found
