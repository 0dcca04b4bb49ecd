"""rke2.etcd_snapshots: the stack section, its checks, and what the inventory gives the rke2 role."""

from __future__ import annotations

from typing import Any

import pytest

from infra import config
from infra.hosts import inventory
from tests.infra.support import sections


def parse(data: dict[str, Any], stack: str = "eu-central-prod") -> config.StackConfig:
    return config.parse(stack, data, "test")


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(config.StackConfigError) as caught:
        parse(data)
    return [str(p) for p in caught.value.problems]


def with_snapshots(**changes: Any) -> dict[str, Any]:
    data = sections("eu-central-prod")
    data["rke2"]["etcd_snapshots"] = {**data["rke2"]["etcd_snapshots"], **changes}
    return data


def test_prod_needs_snapshots_on_the_object_storage() -> None:
    data = sections("eu-central-prod")
    del data["rke2"]["etcd_snapshots"]
    (problem,) = problems(data)
    assert problem.startswith("sovereign-llm:rke2.etcd_snapshots: missing — region.environment 'prod'")
    dr = sections("eu-north-dr")
    dr["rke2"].pop("etcd_snapshots", None)
    assert parse(dr, "eu-north-dr").rke2.etcd_snapshots is None  # dr: optional (the example sets them)


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        (
            {"bucket": "Sovereign_Etcd"},
            "rke2.etcd_snapshots.bucket: not an S3 bucket name",
        ),
        ({"folder": "/etcd/"}, "rke2.etcd_snapshots.folder: must be a prefix without leading"),
        (
            {"schedule_cron": "every 6 hours"},
            "rke2.etcd_snapshots.schedule_cron: must be five",
        ),
        ({"schedule_cron": "0 */6 * *"}, "must be five cron fields"),
        ({"retention": 0}, "rke2.etcd_snapshots.retention: Input should be greater than or equal to 1"),
        ({"bucket": "sovereign-pulumi-state"}, "already the bucket of endpoints.pulumi_backend"),
        ({"bucket": "sovereign-audit-eu-central"}, "already the bucket of storage.audit_archive"),
        ({"extra": 1}, "rke2.etcd_snapshots.extra: unknown key"),
    ],
)
def test_a_bad_snapshot_setting_is_named_with_its_fix(changes: dict[str, Any], needle: str) -> None:
    found = problems(with_snapshots(**changes))
    assert any(needle in p for p in found), found


def test_snapshots_go_over_tls_only() -> None:
    data = sections("eu-central-prod")
    data["endpoints"] = {**data["endpoints"], "object_storage": "http://fsn1.your-objectstorage.com"}
    assert any("endpoints.object_storage must be an https:// URL" in p for p in problems(data))


def test_the_access_keys_are_stack_secrets_never_the_typed_config() -> None:
    data = sections("eu-central-prod")
    data["etcd_s3_secret_key"] = {"secure": "v1:AAAA"}  # as `pulumi config set --secret` writes it
    cfg = parse(data)
    assert "etcd_s3_secret_key" not in cfg.model_dump_json() and "v1:AAAA" not in cfg.model_dump_json()
    data["etcd_s3_secret"] = {"secure": "v1:AAAA"}  # a misspelt key is still refused
    assert any("etcd_s3_secret: unknown section" in p for p in problems(data))


def test_the_inventory_gives_the_servers_the_stack_s_snapshot_settings() -> None:
    cfg = parse(sections("eu-central-prod"))
    inv = inventory.build(cfg, bastion_public_ip="203.0.113.5", control_plane={"cp-1": "10.20.1.11"},
                          workers={}, gpu_hosts=[])  # fmt: skip
    found = {k: v for k, v in inv["all"]["vars"].items() if "etcd" in k}
    assert found == {
        "rke2_etcd_snapshot_schedule_cron": "0 */6 * * *",
        "rke2_etcd_snapshot_retention": 5,
        "rke2_etcd_s3": True,
        "rke2_etcd_s3_endpoint": "fsn1.your-objectstorage.com",  # RKE2 takes host[:port], TLS
        "rke2_etcd_s3_region": "fsn1",  # the backend URL's region=
        "rke2_etcd_s3_bucket": "sovereign-etcd-eu-central",
        "rke2_etcd_s3_folder": "etcd",
        "rke2_etcd_s3_retention": 28,
    }
    dr_data = sections("eu-north-dr")
    dr_data["rke2"].pop("etcd_snapshots")  # a region without snapshots: RKE2's S3 upload stays off
    dr = parse(dr_data, "eu-north-dr")
    inv = inventory.build(dr, bastion_public_ip="203.0.113.5", control_plane={"cp-1": "10.30.1.11"},
                          workers={}, gpu_hosts=[])  # fmt: skip
    assert inv["all"]["vars"]["rke2_etcd_s3"] is False
