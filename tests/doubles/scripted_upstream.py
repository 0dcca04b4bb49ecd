"""A scripted OpenAI-compatible upstream for fault, timing and leak tests and benchmarks.

    python -m tests.doubles.scripted_upstream --port 9001 [--capture FILE]

It answers ``/v1/chat/completions`` (plain and SSE) with a fixed answer of ``tokens`` words
(at most the request's ``max_tokens``, where a model server stops too), after ``ttft_ms``,
then one word every ``itl_ms``. ``POST /_control`` switches the behaviour
at run time (JSON with any of the fields of :class:`Script`); ``GET /_captured`` returns the
request bodies it received when capturing is on. Modes:

- ``normal``: a well-formed answer;
- ``status500``: HTTP 500;
- ``hang``: accept, then send nothing for ``hang_s`` seconds;
- ``malformed``: non-JSON body / non-JSON SSE event;
- ``truncate``: the SSE stream ends after half the words, with no finish_reason;
- ``drop``: the connection dies after half the words: the chunked body is never finished
  (the server aborts it, as a crashed or killed model server would);
- ``echo``: the answer is the last user message as received (streamed in pieces of
  ``chunk_chars`` characters, so tokens are cut across events).

With ``stamp`` on, every SSE event carries ``x_received_at`` (when the request arrived) and
``x_sent_at`` (when the event was written), wall-clock seconds: the truth against which the load
tests' measurement of TTFT and inter-token latency is checked (client and upstream on one machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, replace
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Script:
    mode: str = "normal"
    tokens: int = 16
    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    hang_s: float = 30.0
    word: str = "ok"
    capture: bool = False
    chunk_chars: int = 3
    stamp: bool = False


def build_app(script: Script | None = None) -> Starlette:
    live = script or Script()
    captured: list[dict[str, Any]] = []

    def words(state: Script, body: dict[str, Any]) -> list[str]:
        """The answer's tokens, at most the request's max_tokens, as a model server stops there
        (vLLM and llama.cpp's server end with finish_reason "length"): the gateway refuses an
        answer with more (upstream_too_long)."""
        if state.mode == "echo":
            text = next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")
            n = max(1, state.chunk_chars)
            found = [text[i : i + n] for i in range(0, len(text), n)]
        else:
            found = [state.word] * state.tokens
        cap = body.get("max_tokens")
        return found[:cap] if isinstance(cap, int) and cap > 0 else found

    def finish(body: dict[str, Any], sent: int) -> str:
        cap = body.get("max_tokens")
        return "length" if isinstance(cap, int) and sent >= cap else "stop"

    async def chat(request: Request) -> Response:
        received_at = time.time()
        # the script as it was when this request arrived: a /_control switch while its stream
        # is being written must not change the answer half-way (a stream begun in "echo" would
        # otherwise end as "normal" words, without the echoed name)
        state = replace(live)
        body = await request.json()
        if state.capture:
            captured.append(body)
        if state.mode == "status500":
            return JSONResponse({"error": {"message": "scripted failure"}}, status_code=500)
        if state.mode == "hang":
            await asyncio.sleep(state.hang_s)
        created = int(time.time())
        rid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        model = body.get("model", "scripted")
        if not body.get("stream"):
            if state.ttft_ms:
                await asyncio.sleep((state.ttft_ms + state.itl_ms * (state.tokens - 1)) / 1000)
            if state.mode == "malformed":
                return Response(b"this is not json", media_type="application/json")
            ws = words(state, body)
            text = "".join(ws) if state.mode == "echo" else " ".join(ws)
            return JSONResponse(
                {
                    "id": rid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": finish(body, len(ws)),
                        }
                    ],
                    "usage": {
                        "prompt_tokens": 1,
                        "completion_tokens": len(ws),
                        "total_tokens": len(ws) + 1,
                    },
                }
            )

        async def events() -> AsyncIterator[bytes]:
            def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
                event = {
                    "id": rid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
                if state.stamp:
                    event |= {"x_received_at": received_at, "x_sent_at": time.time()}
                return b"data: " + json.dumps(event).encode() + b"\n\n"

            if state.ttft_ms:
                await asyncio.sleep(state.ttft_ms / 1000)
            yield chunk({"role": "assistant", "content": ""})
            ws = words(state, body)
            cut = len(ws) // 2 if state.mode in ("truncate", "drop") else len(ws)
            sep = "" if state.mode == "echo" else " "
            for i, w in enumerate(ws[:cut]):
                if i and state.itl_ms:
                    await asyncio.sleep(state.itl_ms / 1000)
                if state.mode == "malformed" and i == 1:
                    yield b"data: {not json\n\n"
                    return
                yield chunk({"content": (sep if i else "") + w})
            if state.mode == "truncate":
                return
            if state.mode == "drop":  # uvicorn closes the connection without the last chunk
                raise ConnectionAbortedError("scripted: the connection dies mid-answer")
            yield chunk({}, finish(body, len(ws)))
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "scripted", "object": "model"}]})

    async def control(request: Request) -> Response:
        for key, value in (await request.json()).items():
            if not hasattr(live, key):
                return JSONResponse({"error": f"unknown field {key}"}, status_code=400)
            setattr(live, key, value)
        captured.clear()
        return JSONResponse(asdict(live))

    async def get_captured(request: Request) -> Response:
        return JSONResponse(captured)

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/_control", control, methods=["POST"]),
            Route("/_captured", get_captured, methods=["GET"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--itl-ms", type=float, default=0.0)
    parser.add_argument("--capture", action="store_true")
    # serve HTTPS and require a client certificate signed by --tls-client-ca (mTLS, as vLLM does
    # in the cluster)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--tls-client-ca")
    args = parser.parse_args()
    tls: dict[str, Any] = {}
    if args.tls_cert:
        tls = {
            "ssl_certfile": args.tls_cert,
            "ssl_keyfile": args.tls_key,
            "ssl_ca_certs": args.tls_client_ca,
            "ssl_cert_reqs": ssl.CERT_REQUIRED,
        }
    script = Script(tokens=args.tokens, ttft_ms=args.ttft_ms, itl_ms=args.itl_ms, capture=args.capture)
    uvicorn.run(
        build_app(script),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        http="httptools",
        **tls,
    )


if __name__ == "__main__":
    main()
