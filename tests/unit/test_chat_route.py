"""POST /v1/chat/completions is served straight from the app's ASGI call (gateway/app.py
GatewayApp), past FastAPI's router: what the router and its middleware did for that path still
holds."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi.responses import Response
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.settings import GatewaySettings

CHAT_PATH = "/v1/chat/completions"


def app_at(tmp_path: Path) -> Any:
    settings = GatewaySettings(
        audit={"path": tmp_path / "audit.jsonl"}, keys_file=tmp_path / "keys.json",
        openbao={"wrapped_keys_dir": tmp_path / "keys"}, enforce_egress=False,
    )  # fmt: skip
    return create_app(settings)


def test_the_chat_path_answers_through_the_gateway(tmp_path: Path) -> None:
    client = TestClient(app_at(tmp_path))
    answer = client.post(CHAT_PATH, json={"messages": []})
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "missing_api_key"
    assert answer.headers["connection"] == "close"
    assert answer.headers["x-request-id"]


def test_other_methods_on_the_chat_path_are_the_routers(tmp_path: Path) -> None:
    client = TestClient(app_at(tmp_path))
    answer = client.get(CHAT_PATH)
    assert answer.status_code == 405
    assert answer.headers["allow"] == "POST"
    assert client.post(CHAT_PATH + "x").status_code == 404


def test_an_exception_escaping_the_chat_answer_is_the_apps_500(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As ServerErrorMiddleware with the app's handler did: an OpenAI-style 500, and a log line
    naming the exception's type and the route's path, never its text."""
    app = app_at(tmp_path)

    class Broken(Response):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            raise RuntimeError("patient text")

    async def chat(request: Any) -> Any:
        return Broken(b"")

    app.state.gateway.chat = chat
    client = TestClient(app, raise_server_exceptions=False)
    with caplog.at_level(logging.ERROR, logger="sovereign.gateway"):
        answer = client.post(CHAT_PATH, json={})
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "internal_error"
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert logged == [f"unhandled RuntimeError on {CHAT_PATH}"]
    assert "patient text" not in caplog.text
