"""Helpers for the region-stack tests: the example stacks as data, plans under mocks."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

from infra import chart_sources, config, images, plan

REPO = Path(__file__).resolve().parents[2]
STACKS = REPO / "stacks"
EXAMPLES = ("eu-central-prod", "eu-north-dr")


def sections(stack: str = "eu-central-prod") -> dict[str, Any]:
    data, _ = config.read_stack_file(config.stack_file(STACKS, stack))
    return copy.deepcopy(data)


def plan_of(data: dict[str, Any], stack: str = "test-stack", role_digest: str = "d" * 64) -> plan.Plan:
    cfg = config.parse(stack, data, "test")
    return plan.run(cfg, data, role_digest=role_digest)


def fake_digest(upstream: str) -> str:
    """A test's own value (never a real image's): distinct per image."""
    return "sha256:" + hashlib.sha256(upstream.encode()).hexdigest()


def with_digests(stack: str = "eu-central-prod", data: dict[str, Any] | None = None) -> dict[str, Any]:
    """*data* (default: the example stack) with a test digest in ``platform.images`` for every
    image the program deploys with it and in ``platform.charts`` for every chart, as an operator
    sets them after mirroring."""
    data = copy.deepcopy(data) if data is not None else sections(stack)
    cfg = config.parse(stack, data, "test")
    data["platform"] = {
        **data.get("platform", {}),
        "images": {i.upstream: fake_digest(i.upstream) for i in images.required(cfg)},
        # and each chart's, as `helm push` prints it to the mirror (infra/chart_sources.py)
        "charts": {c.key: fake_digest(c.key) for c in chart_sources.installed(cfg)},
    }
    return data


def without_mirror(stack: str = "eu-north-dr") -> dict[str, Any]:
    """The example stack without ``endpoints.registry_mirror``: what a region that mirrors nothing
    declares (its images and charts would come from their vendors: deploy blockers)."""
    data = sections(stack)
    del data["endpoints"]["registry_mirror"]
    return data
