"""Two OpenBaos, two pairs of variables (issue #19 item 8).

Pulumi's ``hashivault://`` secrets provider (gocloud.dev ``secrets/hashivault``, which pulumi/pulumi
``pkg/secrets/cloud`` imports) reads VAULT_SERVER_URL / VAULT_SERVER_TOKEN before VAULT_ADDR /
VAULT_TOKEN; the cluster's OpenBao is configured by pulumi-vault, whose token is VAULT_TOKEN. Each
deploy step that sets up the secrets provider must use the VAULT_SERVER_* pair, or one VAULT_TOKEN
would be sent to both servers."""

from __future__ import annotations

import re

import pytest

from infra import config, objectstore
from tests.infra.support import REPO, STACKS

DEPLOY_DOCS = ("docs/first-deploy.md", "docs/region-stacks.md", "docs/object-storage.md", "docs/platform.md")
FENCE = re.compile(r"```[a-z]*\n(.*?)```", re.S)


def _blocks(doc: str) -> list[str]:
    text = (REPO / doc).read_text(encoding="utf-8")
    indented = re.findall(r"(?m)^(?: {2,}\S.*\n)+", text)  # bootstrap-backend's printed lines
    return FENCE.findall(text) + indented


@pytest.mark.parametrize("doc", DEPLOY_DOCS)
def test_the_secrets_provider_is_configured_with_vault_server_variables(doc: str) -> None:
    for block in _blocks(doc):
        if "hashivault://" not in block or "pulumi stack init" not in block:
            continue
        assert "VAULT_SERVER_URL=" in block and "VAULT_SERVER_TOKEN=" in block, block
        assert not re.search(r"\bVAULT_(ADDR|TOKEN)=", block), block


def test_the_cluster_openbao_token_is_vault_token_and_named_apart() -> None:
    platform = (REPO / "docs/platform.md").read_text(encoding="utf-8")
    first = (REPO / "docs/first-deploy.md").read_text(encoding="utf-8")
    assert "`VAULT_TOKEN` in the operator's environment" in platform and "VAULT_SERVER_TOKEN" in platform
    (phase2,) = [b for b in FENCE.findall(first) if "make deploy" in b and "VAULT_TOKEN=" in b]
    assert "VAULT_SERVER_" in phase2  # both pairs set for phase 2, each for its own OpenBao


def test_bootstrap_backend_prints_the_secrets_provider_variables() -> None:
    cfg = config.load(STACKS, "eu-central-prod")
    (line,) = [x for x in objectstore.login_lines(cfg) if x.startswith("export ")]
    assert "VAULT_SERVER_URL=" in line and "VAULT_SERVER_TOKEN=" in line
    assert not re.search(r"\bVAULT_(ADDR|TOKEN)=", line)
