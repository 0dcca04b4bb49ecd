from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import config
from tests.infra.support import REPO
from tests.support import S3Server

StackFactory = Callable[..., config.StackConfig]


@pytest.fixture
def stack(s3: S3Server, tmp_path: Path) -> StackFactory:
    """A region stack (the eu-central-prod example) whose object storage is the test server,
    with fresh bucket names; keyword arguments replace sections' keys, e.g.
    ``storage={"audit_retention_days": 1}``. Writes stacks/Pulumi.<name>.yaml under tmp_path."""

    def make(name: str = "eu-test", **changes: dict[str, Any]) -> config.StackConfig:
        document = yaml.safe_load((REPO / "stacks" / "Pulumi.eu-central-prod.yaml").read_text())
        sections = document["config"]
        tag = uuid.uuid4().hex[:8]
        sections["sovereign-llm:endpoints"].update(
            object_storage=s3.url,
            model_source=f"s3://models-{tag}/?endpoint={s3.host}",
            pulumi_backend=f"s3://state-{tag}?endpoint={s3.host}&region=us-east-1",
        )
        for model in sections["sovereign-llm:platform"]["models"]:
            model["source"] = f"s3://models-{tag}/{model['name']}/"
        sections["sovereign-llm:residency"]["extra_hosts"].append(
            {"host": "127.0.0.1", "jurisdiction": "DE", "operator": "test S3 server on loopback (moto)"}
        )
        sections["sovereign-llm:storage"]["audit_archive"] = f"s3://audit-{tag}/gateway/"
        # the test S3 server speaks http; RKE2's etcd snapshots go over https only and are required
        # in prod alone, and the buckets these tests make do not depend on the environment
        sections["sovereign-llm:region"]["environment"] = "staging"
        sections["sovereign-llm:rke2"].pop("etcd_snapshots", None)
        # the memory store's backups also go over https only (infra/config.py); these tests make
        # no store backups
        sections["sovereign-llm:platform"]["memory_store"]["enabled"] = False
        # the example copies OpenBao snapshots to hel1; a test names its own copy location (a second
        # test S3 server: tests/storage/test_openbao_restore.py) or none
        sections["sovereign-llm:storage"].pop("openbao_snapshot_copy", None)
        for section, values in changes.items():
            sections.setdefault(f"sovereign-llm:{section}", {}).update(values)
        stacks = tmp_path / "stacks"
        stacks.mkdir(exist_ok=True)
        (stacks / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump(document))
        return config.load(stacks, name)

    return make
