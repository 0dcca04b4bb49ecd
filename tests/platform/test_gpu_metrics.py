"""The DCGM exporter publishes every GPU metric the alert rules and dashboards read.

Its image's default list leaves DCGM_FI_DEV_THERMAL_VIOLATION and DCGM_FI_DEV_ECC_DBE_VOL_TOTAL
commented out (github.com/NVIDIA/dcgm-exporter@4.3.1-4.4.0 etc/dcp-metrics-included.csv), so the
GPU operator gets a list of the project's own (infra/k8s_platform/gpu.py DCGM_METRICS)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from infra.config import load
from infra.k8s_platform import alerts, dashboards, gpu

STACKS = Path(__file__).resolve().parents[2] / "stacks"
DCGM = re.compile(r"\bDCGM_FI_[A-Z0-9_]+\b")


def used_by_rules_and_dashboards() -> set[str]:
    cfg = load(STACKS, "eu-central-prod")
    rules = yaml.safe_dump(alerts.rule_groups(cfg))
    boards = json.dumps(dashboards.dashboards(cfg))
    return set(DCGM.findall(rules)) | set(DCGM.findall(boards))


def test_every_gpu_metric_read_by_an_alert_or_a_dashboard_is_exported() -> None:
    used = used_by_rules_and_dashboards()
    assert {
        "DCGM_FI_DEV_THERMAL_VIOLATION",
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
        "DCGM_FI_DEV_XID_ERRORS",
    } <= used
    assert used <= set(gpu.DCGM_METRICS), used - set(gpu.DCGM_METRICS)


def test_the_operator_mounts_the_list_in_the_exporters_format() -> None:
    config = gpu.gpu_operator_values()["dcgmExporter"]["config"]  # type: ignore[index]
    assert config["name"] == gpu.DCGM_METRICS_CONFIGMAP and config["create"] is True
    # the chart creates the ConfigMap only with create and data set
    # (templates/dcgm_exporter_config.yaml); each line: DCGM field, Prometheus type, help
    lines = config["data"].splitlines()
    assert len(lines) == len(gpu.DCGM_METRICS)
    for line in lines:
        field, kind, text = (part.strip() for part in line.split(",", 2))
        assert field in gpu.DCGM_METRICS and kind in {"gauge", "counter"} and text
    assert any(line.startswith("DCGM_FI_DEV_THERMAL_VIOLATION, counter,") for line in lines)
