"""Tool calls in the model's answer come back to the client with the patient's values restored
inside their JSON arguments, validly escaped, plain and streamed (the arguments cut into
fragments mid-token), through a real gateway process.

The module's upstream (``tool_upstream`` below, uvicorn in a thread of this process) answers
every chat request with one tool call whose arguments hold what the gateway sent it: the last
user message as a JSON string and the first number of six or more digits (an FF1 token) as a JSON
number. Its answers have the shape of the OpenAI API reference's chat completion and chunk
objects as vLLM v0.11.0 streams them: a first chunk with the role, a first tool-call fragment
with id, type, name and empty arguments, then ``{index, function: {arguments}}`` fragments of
``CHUNK_CHARS`` characters, a last chunk ``delta: {}`` with ``finish_reason: "tool_calls"``,
``[DONE]``."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support import Proc, free_port

TENANT = "clinic-tool-calls"  # the client key of this module's gateway (tests/gateway/conftest.py)
CHUNK_CHARS = 5
CONTEXT = {
    "name": 'Erika "Eri" Müller',
    "address": {"street": "Studio 0\nLindsey Spur"},
    "order_ids": ["000471123"],
}
TEXT = 'Please book for Erika "Eri" Müller, Studio 0\nLindsey Spur, about order 000471123.'


def tool_upstream() -> Starlette:
    received: list[str] = []

    async def chat(request: Request) -> Response:
        body = await request.json()
        text = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
        received.append(text)
        digits = re.search(r"\b\d{6,}\b", text)  # not the hex digits of a surrogate token
        arguments = json.dumps({"note": text}, ensure_ascii=False)
        if digits:
            arguments = arguments[:-1] + f', "order": {digits.group()}}}'
        if not body.get("stream"):
            call = {
                "id": "call_1",
                "type": "function",
                "function": {"name": "lookup_order", "arguments": arguments},
            }
            return JSONResponse(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 1,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                            "finish_reason": "tool_calls",
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 8, "total_tokens": 9},
                }
            )

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            event = {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": body["model"],
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return b"data: " + json.dumps(event).encode() + b"\n\n"

        async def events() -> AsyncIterator[bytes]:
            yield chunk({"role": "assistant", "content": None})
            first = {"index": 0, "id": "call_1", "type": "function"}
            yield chunk({"tool_calls": [first | {"function": {"name": "lookup_order", "arguments": ""}}]})
            for i in range(0, len(arguments), CHUNK_CHARS):
                piece = arguments[i : i + CHUNK_CHARS]
                yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            yield chunk({}, "tool_calls")
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "scripted", "object": "model"}]})

    async def got(request: Request) -> Response:
        return JSONResponse(received)

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/_received", got, methods=["GET"]),
        ]
    )


@pytest.fixture(scope="module")
def gateway_upstream_url() -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(tool_upstream(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(600):  # a guard against a hang only
        if server.started or not thread.is_alive():
            break
        time.sleep(0.05)
    assert server.started, "the tool-call upstream did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


def request(stream: bool) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": TEXT}],
        "stream": stream,
        "sovereign": {"use_case": "order-support", "context": CONTEXT},
    }


def final_record(gw_dir: Path, request_id: str) -> dict[str, Any]:
    """The request's completing record, waited for (a stream's is written as its body ends)."""
    for _ in range(600):  # a guard against a hang only
        for line in (gw_dir / "audit" / "audit.jsonl").read_text().splitlines():
            try:
                record: dict[str, Any] = json.loads(line)
            except ValueError:  # a line being written as it is read
                continue
            if record.get("kind") == "request" and record.get("request_id") == request_id:
                return record
        time.sleep(0.05)
    raise AssertionError("no final audit record")


@pytest.mark.parametrize("stream", [False, True])
def test_tool_call_arguments_come_back_restored_as_valid_json(
    gateway: Proc, api_key: str, gateway_upstream_url: str, gw_dir: Path, stream: bool
) -> None:
    request_id = str(uuid.uuid4())
    headers = {"authorization": f"Bearer {api_key}", "x-request-id": request_id}
    url = f"{gateway.url}/v1/chat/completions"
    if not stream:
        resp = httpx.post(url, json=request(False), headers=headers, timeout=30)
        assert resp.status_code == 200, resp.text
        message = resp.json()["choices"][0]["message"]
        assert resp.json()["choices"][0]["finish_reason"] == "tool_calls"
        (call,) = message["tool_calls"]
        name, arguments = call["function"]["name"], call["function"]["arguments"]
    else:
        fragments: list[str] = []
        names: list[str] = []
        with httpx.stream("POST", url, json=request(True), headers=headers, timeout=30) as r:
            assert r.status_code == 200
            lines = [line for line in r.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]"
        for line in lines[:-1]:
            (choice,) = json.loads(line[len("data: ") :])["choices"]
            for fragment in choice["delta"].get("tool_calls") or []:
                assert fragment["index"] == 0
                function = fragment.get("function") or {}
                names += [function["name"]] if function.get("name") else []
                fragments.append(function.get("arguments") or "")
        assert choice["finish_reason"] == "tool_calls"
        (name,) = names
        arguments = "".join(fragments)
        assert len(fragments) > 10  # it came in pieces, tokens cut between them
    sent = httpx.get(f"{gateway_upstream_url}/_received", timeout=5).json()[-1]
    assert "Müller" not in sent and "Lindsey" not in sent and "000471123" not in sent
    assert name == "lookup_order"
    # the quote in the name and the street's newline are escaped: the arguments parse, and give
    # back exactly what the patient wrote; the order number the model wrote as a number stays one
    assert json.loads(arguments) == {"note": TEXT, "order": 471123}
    # name, street, order number in the note, order number as a number
    phi = final_record(gw_dir, request_id)["phi"]
    assert (phi["restored"], phi["unrestored"]) == (4, 0)
