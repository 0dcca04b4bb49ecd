"""The name recogniser is on by default, in the gateway and in `sovereign anonymize` (issue #20,
finding 1), and a gateway without its lexicon refuses to start rather than let names through."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.phi import names
from gateway.phi.filter import PHIFilter, recognizers
from gateway.policy import load_policies
from gateway.settings import GatewaySettings

KEY = bytes(range(32))


def settings(tmp_path: Path, **extra: object) -> GatewaySettings:
    return GatewaySettings(
        upstreams={"chat": {"url": "http://127.0.0.1:9/v1", "model": "gemma"}},
        audit={"path": tmp_path / "audit.jsonl"},
        keys_file=tmp_path / "keys.json",
        openbao={"wrapped_keys_dir": tmp_path / "keys"},
        **extra,
    )


def test_a_name_the_context_does_not_know_never_reaches_the_model_by_default(tmp_path: Path) -> None:
    gw = Gateway(settings(tmp_path))
    policy = load_policies(None)["patient-support"]
    text = "Mein Mann Jürgen Becker und Dr. Petra Lindqvist wissen Bescheid."
    filtered = gw.phi.apply(policy, None, [text], KEY, "clinic")
    assert "Jürgen" not in filtered.texts[0] and "Becker" not in filtered.texts[0]
    assert "Lindqvist" not in filtered.texts[0]
    assert filtered.tokens.tokenised["NAME"] == 2
    # switched off explicitly, the same text passes: the default is what protects it
    off = Gateway(settings(tmp_path, phi_names=False))
    assert off.phi.apply(policy, None, [text], KEY, "clinic").texts[0] == text


def test_without_its_lexicon_the_gateway_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOVEREIGN_NAMES_DATA", str(tmp_path / "absent.json.gz"))
    names.load_data.cache_clear()
    try:
        with pytest.raises(names.NameDataMissing, match="make install"):
            Gateway(settings(tmp_path))
        assert recognizers(False) == []  # only when switched off
    finally:
        names.load_data.cache_clear()


def test_the_batch_path_uses_the_same_recognisers() -> None:
    policy = load_policies(None)["patient-support"]
    text = "Please tell my sister Harriet Coleridge."
    with_names = PHIFilter(recognizers(True)).apply(policy, None, [text], KEY, "clinic")
    assert "Coleridge" not in with_names.texts[0]
