"""The state backend guard: where the CLI's backend comes from, and the SaaS refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra import backend, config
from tests.infra.support import sections

SOVEREIGN = "s3://sovereign-pulumi-state?endpoint=fsn1.your-objectstorage.com&region=fsn1"


def cfg(**backend_section: object) -> config.StackConfig:
    data = sections()
    data["backend"] = backend_section or {"allow_saas": False}
    return config.parse("eu-central-prod", data, "t")


def test_env_wins_over_project_and_login(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.yaml").write_text("name: x\nbackend:\n  url: file:///srv/state\n")
    home = tmp_path / "home"
    home.mkdir()
    (home / "credentials.json").write_text(json.dumps({"current": "https://api.pulumi.com"}))
    env = {"PULUMI_HOME": str(home), "PULUMI_BACKEND_URL": SOVEREIGN}
    assert backend.current_backend(tmp_path, env) == SOVEREIGN
    del env["PULUMI_BACKEND_URL"]
    assert backend.current_backend(tmp_path, env) == "file:///srv/state"
    (tmp_path / "Pulumi.yaml").write_text("name: x\n")
    assert backend.current_backend(tmp_path, env) == "https://api.pulumi.com"


def test_no_login_means_the_saas_default(tmp_path: Path) -> None:
    assert backend.current_backend(tmp_path, {"PULUMI_HOME": str(tmp_path)}) == backend.DEFAULT_BACKEND


def test_saas_backend_is_refused_and_says_why_and_what_to_do() -> None:
    with pytest.raises(backend.BackendRefused) as info:
        backend.check(cfg(), "https://api.pulumi.com")
    message = str(info.value)
    assert "GDPR Art. 44" in message and "Pulumi Cloud" in message
    assert f"pulumi login '{SOVEREIGN}'" in message


def test_saas_backend_with_explicit_override_is_accepted() -> None:
    backend.check(
        cfg(allow_saas=True, justification="pre-production, synthetic data only"), "https://api.pulumi.com"
    )


@pytest.mark.parametrize(
    "url", [SOVEREIGN, "file:///var/lib/pulumi-state", "s3://b?endpoint=hel1.your-objectstorage.com"]
)
def test_eu_backends_are_accepted(url: str) -> None:
    backend.check(cfg(), url)


def test_s3_backend_outside_the_eu_is_refused() -> None:
    with pytest.raises(backend.BackendRefused, match="not on the EU allowlist"):
        backend.check(cfg(), "s3://state?endpoint=s3.us-west-2.amazonaws.com")
