"""Helpers for the region-stack tests: the example stacks as data, plans under mocks."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from infra import config, plan

REPO = Path(__file__).resolve().parents[2]
STACKS = REPO / "stacks"
EXAMPLES = ("eu-central-prod", "eu-north-dr")


def sections(stack: str = "eu-central-prod") -> dict[str, Any]:
    data, _ = config.read_stack_file(config.stack_file(STACKS, stack))
    return copy.deepcopy(data)


def plan_of(data: dict[str, Any], stack: str = "test-stack", role_digest: str = "d" * 64) -> plan.Plan:
    cfg = config.parse(stack, data, "test")
    return plan.run(cfg, data, role_digest=role_digest)
