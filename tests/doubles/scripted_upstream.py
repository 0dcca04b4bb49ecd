"""A scripted OpenAI-compatible upstream for fault, timing and leak tests and benchmarks.

    python -m tests.doubles.scripted_upstream --port 9001 [--capture FILE]

It answers ``/v1/chat/completions`` (plain and SSE) with a fixed answer of ``tokens`` words
(at most the request's ``max_tokens``, where a model server stops too), after ``ttft_ms``,
then one word every ``itl_ms``. ``POST /_control`` switches the behaviour
at run time (JSON with any of the fields of :class:`Script`; it also forgets the captured bodies
and counts tool calls from 1 again); ``GET /_captured`` returns the request bodies it received
when capturing is on. Modes:

- ``normal``: a well-formed answer;
- ``status500``: HTTP 500;
- ``hang``: accept, then send nothing for ``hang_s`` seconds;
- ``malformed``: non-JSON body / non-JSON SSE event;
- ``truncate``: the SSE stream ends after half the words, with no finish_reason;
- ``drop``: the connection dies after half the words: the chunked body is never finished
  (the server aborts it, as a crashed or killed model server would);
- ``echo``: the answer is the last user (or tool) message as received (streamed in pieces of
  ``chunk_chars`` characters, so tokens are cut across events);
- ``tool_call``: the answer is one tool call (``finish_reason`` ``"tool_calls"``, content null)
  of the request's first tool (``lookup`` when it offers none), id ``call_<n>`` (n counts the
  tool calls this upstream made). Its arguments echo the last user or tool message as
  received: that message's JSON object as it is when its text is one, else
  ``{"query": <text>}``. Streamed as vLLM v0.11.0 streams a named tool call: a role chunk, a
  delta with the call's index, id, type and name and empty arguments, the arguments in
  fragments of ``chunk_chars`` characters (tokens cut across events), a last chunk with
  ``finish_reason`` ``"tool_calls"``;
- ``json``: the content is a JSON object echoing the last user or tool message:
  ``{"answer": <text>}``, or, when the request's ``response_format`` is a ``json_schema``, an
  object that fits the schema with every string in it the text (as guided decoding makes a
  model's output fit it). Streamed in pieces of ``chunk_chars`` characters.

It answers ``POST /v1/embeddings`` as llama-cpp-python 0.3.36's server does with
``--embedding true`` (llama_cpp/server/app.py ``create_embedding``, llama_cpp/server/types.py
``CreateEmbeddingRequest``, llama_cpp/llama.py ``Llama.create_embedding``): the request is
``{model?, input: str | list[str], user?}`` validated by pydantic with its default
``extra="ignore"`` (so ``encoding_format`` and ``dimensions`` are dropped unseen: the answer is
always floats of the model's size); anything else in ``input`` (token ids) fails that validation,
which the server's RouteErrorHandler (llama_cpp/server/errors.py) answers with HTTP 500
``{"error": {"message": "N validation errors: ...", "type": "internal_server_error", "param":
null, "code": null}}`` (checked against the real server with the local stack's model). The
answer is ``{"object": "list", "data": [{"object": "embedding", "embedding": [...], "index":
i}], "model": <the request's model, else the model's path>, "usage": {"prompt_tokens": n,
"total_tokens": n}}``, ``n`` the tokens of all inputs (here words + 2 per input: BERT's [CLS]
and [SEP]; the real server counts 7 for ``["a b", "c"]``, as this does). The vector of a text
is ``dimensions`` numbers from its words (each word adds to buckets chosen by its SHA-256),
L2-normalised: the same text always gets the same vector, texts sharing words similar ones.
Modes ``emb_wrong_dims`` (one number short), ``emb_missing_index`` (the last item's index
repeats the first's), ``emb_nan`` (a NaN component, as Python's json writes it),
``emb_no_usage``, ``malformed``/``status500`` and ``hang`` answer what a broken server would.
Mode ``emb_unnormalised`` answers each vector times UNNORMALISED_LENGTH, as the local stack's
llama-cpp-python 0.3.36 server answers vectors that are not unit length (issue #27 phase 1,
measured with all-MiniLM-L6-v2); vLLM v0.11.0's embed pooler normalises by default.

Like vLLM it refuses (400, its error shape) a request it could not turn into a prompt: a tool
that is not a function with a name, a tool message without ``tool_call_id``, an assistant tool
call without an id, a name or string arguments, a ``response_format`` of another type or a
``json_schema`` without a name or schema (see :func:`malformed`).

Every mode answers at most the request's ``max_tokens`` pieces (words, or pieces of
``chunk_chars`` characters), then stops with ``finish_reason`` ``"length"``.

With ``stamp`` on, every SSE event carries ``x_received_at`` (when the request arrived) and
``x_sent_at`` (when the event was written), wall-clock seconds: the truth against which the load
tests' measurement of TTFT and inter-token latency is checked (client and upstream on one machine).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
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

#: modes whose answer is a text cut in pieces of ``chunk_chars`` characters (the others: words)
PIECES = frozenset({"echo", "tool_call", "json"})


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
    # seconds the body stays open after [DONE] (a server's end of body is not the client's cue:
    # the openai SDK stops reading at [DONE], openai/_streaming.py Stream.__stream__)
    linger_s: float = 0.0
    # the length of /v1/embeddings vectors (all-MiniLM-L6-v2's, the local stack's model)
    dimensions: int = 384


def _text(content: Any) -> str:
    """A message's content as text: a string, or its text parts joined (null: empty)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def last_text(body: dict[str, Any]) -> str:
    """The text of the request's last user or tool message, as received."""
    return next(
        (_text(m.get("content")) for m in reversed(body["messages"]) if m.get("role") in ("user", "tool")),
        "",
    )


def tool_arguments(text: str) -> str:
    """The arguments the double's tool call carries: the message's JSON object as it is when
    its text is one (a tool result echoed into the next call), else ``{"query": text}``. Written
    as vLLM writes them (``json.dumps(..., ensure_ascii=False)``, serving_chat.py): non-ASCII
    letters as they are, quotes, backslashes and control characters escaped."""
    try:
        found = json.loads(text)
    except ValueError:
        found = None
    value = found if isinstance(found, dict) else {"query": text}
    return json.dumps(value, ensure_ascii=False)


def fill(schema: Any, text: str) -> Any:
    """A value that fits *schema* (the subset a reviewed response schema uses: object, array,
    string, integer, number, boolean, null, enum, const), every string in it *text*."""
    if not isinstance(schema, dict):
        return text
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type", "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: fill(sub, text) for name, sub in props.items()}
    if kind == "array":
        return [fill(schema.get("items", {}), text)] * max(1, int(schema.get("minItems", 1)))
    if kind in ("integer", "number"):
        return int(schema.get("minimum", 1))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    # a string as long as the schema lets it be, as a model under guided decoding stops there
    return text[: schema["maxLength"]] if "maxLength" in schema else text


def json_answer(body: dict[str, Any]) -> str:
    """The ``json`` mode's content for *body* (see the module docstring)."""
    text = last_text(body)
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return json.dumps(fill(fmt["json_schema"]["schema"], text), ensure_ascii=False)
    return json.dumps({"answer": text}, ensure_ascii=False)


def malformed(body: dict[str, Any]) -> str | None:
    """Why a model server would refuse *body*, or None. vLLM v0.11.0 validates a request with
    its protocol models (vllm/entrypoints/openai/protocol.py) and answers 400 when they fail:

    - ``tools[i]``: ``ChatCompletionToolsParam`` is ``type: Literal["function"]`` and
      ``function: FunctionDefinition`` with a required ``name: str``. vLLM defaults a missing
      ``type`` to "function"; the OpenAI API reference marks it required, and so does the
      double (the gateway always sends it);
    - ``messages[i].tool_calls[j]``: ``ChatCompletionMessageToolCallParam`` (openai's types,
      used by vLLM's message union) requires ``id``, ``type`` "function" and
      ``function.name`` and ``function.arguments``, both strings;
    - a ``tool`` message without ``tool_call_id``: the OpenAI API refuses it
      (``ChatCompletionToolMessageParam``: ``tool_call_id`` required). vLLM v0.11.0 would let
      it through its ``CustomChatCompletionMessageParam`` into the chat template, which then
      cannot pair the result with its call; the double refuses it as the OpenAI API does;
    - ``response_format``: ``ResponseFormat.type`` is one of text, json_object, json_schema
      (structural_tag is vLLM's own); ``json_schema`` needs ``JsonSchemaResponseFormat.name``
      and a schema (vLLM's guided decoding has nothing to build a grammar from otherwise).
    """
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            return "tools: expected a list"
        for i, tool in enumerate(tools):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(tool, dict) or tool.get("type") != "function":
                return f"tools[{i}].type: expected 'function'"
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                return f"tools[{i}].function.name: field required"
    for i, msg in enumerate(body.get("messages", [])):
        if msg.get("role") == "tool" and not isinstance(msg.get("tool_call_id"), str):
            return f"messages[{i}].tool_call_id: field required"
        for j, call in enumerate(msg.get("tool_calls") or []):
            fn = call.get("function") if isinstance(call, dict) else None
            if (
                not isinstance(call, dict)
                or not isinstance(call.get("id"), str)
                or call.get("type") != "function"
                or not isinstance(fn, dict)
                or not isinstance(fn.get("name"), str)
                or not isinstance(fn.get("arguments"), str)
            ):
                return f"messages[{i}].tool_calls[{j}]: id, type, function.name and arguments required"
    fmt = body.get("response_format")
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
            return "response_format.type: expected text, json_object or json_schema"
        spec = fmt.get("json_schema")
        if fmt["type"] == "json_schema" and (
            not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or "schema" not in spec
        ):
            return "response_format.json_schema: name and schema required"
    return None


#: the length of the vectors the ``emb_unnormalised`` mode answers
UNNORMALISED_LENGTH = 7.25


def vector(text: str, dimensions: int) -> list[float]:
    """A deterministic vector of *text*: each word adds 1 to the bucket its SHA-256 picks and
    0.5 to the next, then the whole is L2-normalised (a text without words: the first unit vector)."""
    out = [0.0] * dimensions
    for word in text.lower().split():
        h = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "big")
        out[h % dimensions] += 1.0
        out[(h + 1) % dimensions] += 0.5
    norm = math.sqrt(sum(x * x for x in out))
    if not norm:
        out[0] = norm = 1.0
    return [x / norm for x in out]


def embedding_problem(body: Any) -> dict[str, Any] | None:
    """The 500 body llama-cpp-python 0.3.36's server answers a request its CreateEmbeddingRequest
    refuses (``input`` neither a string nor a list of strings), else None (its message names
    the errors; the real one also quotes the input, which the double leaves out)."""
    value = body.get("input") if isinstance(body, dict) else None
    ok = isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    model = body.get("model") if isinstance(body, dict) else None
    if ok and (model is None or isinstance(model, str)):
        return None
    where = "input" if not ok else "model"
    message = f"validation errors:\n  {{'type': 'string_type', 'loc': ('body', '{where}')}}"
    return {"error": {"message": message, "type": "internal_server_error", "param": None, "code": None}}


def build_app(script: Script | None = None) -> Starlette:
    live = script or Script()
    captured: list[dict[str, Any]] = []
    calls = [0]  # tool calls made so far: the next one's id is call_<calls[0] + 1>

    def cut(text: str, state: Script) -> list[str]:
        n = max(1, state.chunk_chars)
        return [text[i : i + n] for i in range(0, len(text), n)]

    def words(state: Script, body: dict[str, Any]) -> list[str]:
        """The answer's pieces, at most the request's max_tokens, as a model server stops there
        (vLLM and llama.cpp's server end with finish_reason "length"): the gateway refuses an
        answer with more (upstream_too_long). Content pieces, or in ``tool_call`` mode the
        pieces of the call's arguments."""
        if state.mode == "echo":
            found = cut(last_text(body), state)
        elif state.mode == "tool_call":
            found = cut(tool_arguments(last_text(body)), state)
        elif state.mode == "json":
            found = cut(json_answer(body), state)
        else:
            found = [state.word] * state.tokens
        cap = body.get("max_tokens")
        return found[:cap] if isinstance(cap, int) and cap > 0 else found

    def finish(state: Script, body: dict[str, Any], sent: int) -> str:
        cap = body.get("max_tokens")
        if isinstance(cap, int) and sent >= cap:
            return "length"
        # vLLM: "tool_calls" once a tool call was streamed (serving_chat.py, tools_streamed)
        return "tool_calls" if state.mode == "tool_call" else "stop"

    def tool_name(body: dict[str, Any]) -> str:
        tools = body.get("tools") or []
        return str(tools[0]["function"]["name"]) if tools else "lookup"

    async def chat(request: Request) -> Response:
        received_at = time.time()
        # the script as it was when this request arrived: a /_control switch while its stream
        # is being written must not change the answer half-way (a stream begun in "echo" would
        # otherwise end as "normal" words, without the echoed name)
        state = replace(live)
        body = await request.json()
        if state.capture:
            captured.append(body)
        problem = malformed(body)
        if problem is not None:  # vLLM's ErrorResponse (protocol.py): {"error": ErrorInfo}
            error = {"message": problem, "type": "BadRequestError", "param": None, "code": 400}
            return JSONResponse({"error": error}, status_code=400)
        if state.mode == "status500":
            return JSONResponse({"error": {"message": "scripted failure"}}, status_code=500)
        if state.mode == "hang":
            await asyncio.sleep(state.hang_s)
        created = int(time.time())
        rid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        model = body.get("model", "scripted")
        call_id = ""
        if state.mode == "tool_call":
            calls[0] += 1
            call_id = f"call_{calls[0]}"
        if not body.get("stream"):
            if state.ttft_ms:
                await asyncio.sleep((state.ttft_ms + state.itl_ms * (state.tokens - 1)) / 1000)
            if state.mode == "malformed":
                return Response(b"this is not json", media_type="application/json")
            ws = words(state, body)
            text = ("" if state.mode in PIECES else " ").join(ws)
            # every field of vLLM v0.11.0's ChatMessage (vllm/entrypoints/openai/protocol.py), as it
            # answers them, null ones too: the OpenAI SDK's tool loop sends them all back
            message: dict[str, Any] = {
                "role": "assistant", "content": text, "refusal": None, "annotations": None,
                "audio": None, "function_call": None, "tool_calls": [], "reasoning_content": None,
            }  # fmt: skip
            if state.mode == "tool_call":
                # OpenAI API reference, "The chat completion object": content null, and
                # tool_calls[] {id, type "function", function {name, arguments: JSON text}}
                call = {"name": tool_name(body), "arguments": text}
                message["content"] = None
                message["tool_calls"] = [{"id": call_id, "type": "function", "function": call}]
            return JSONResponse(
                {
                    "id": rid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {"index": 0, "message": message, "finish_reason": finish(state, body, len(ws))}
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
            if state.mode == "tool_call":
                # vLLM v0.11.0 serving_chat.py (chat_completion_stream_generator, named tool
                # choice): the first delta of a call carries its index, id, type and name,
                # the next ones {index, function: {arguments: <fragment>}}; the OpenAI API
                # reference ("The chat completion chunk object") streams tool calls the same
                # way, ending with an empty delta and finish_reason "tool_calls"
                head = {"index": 0, "id": call_id, "type": "function"}
                yield chunk({"tool_calls": [head | {"function": {"name": tool_name(body), "arguments": ""}}]})
            cut_at = len(ws) // 2 if state.mode in ("truncate", "drop") else len(ws)
            sep = "" if state.mode in PIECES else " "
            for i, w in enumerate(ws[:cut_at]):
                if i and state.itl_ms:
                    await asyncio.sleep(state.itl_ms / 1000)
                if state.mode == "malformed" and i == 1:
                    yield b"data: {not json\n\n"
                    return
                if state.mode == "tool_call":
                    yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": w}}]})
                else:
                    yield chunk({"content": (sep if i else "") + w})
            if state.mode == "truncate":
                return
            if state.mode == "drop":  # uvicorn closes the connection without the last chunk
                raise ConnectionAbortedError("scripted: the connection dies mid-answer")
            yield chunk({}, finish(state, body, len(ws)))
            yield b"data: [DONE]\n\n"
            if state.linger_s:
                await asyncio.sleep(state.linger_s)

        return StreamingResponse(events(), media_type="text/event-stream")

    async def embeddings(request: Request) -> Response:
        state = replace(live)
        body = await request.json()
        if state.capture:
            captured.append(body)
        problem = embedding_problem(body)
        if problem is not None:
            return JSONResponse(problem, status_code=500)
        if state.mode == "status500":
            return JSONResponse({"error": {"message": "scripted failure"}}, status_code=500)
        if state.mode == "malformed":
            return Response(b"this is not json", media_type="application/json")
        if state.mode == "hang":
            await asyncio.sleep(state.hang_s)
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data: list[dict[str, Any]] = [
            {"object": "embedding", "embedding": vector(t, state.dimensions), "index": i}
            for i, t in enumerate(texts)
        ]
        if data and state.mode == "emb_wrong_dims":
            data[-1]["embedding"] = data[-1]["embedding"][:-1]
        if data and state.mode == "emb_missing_index":
            data[-1]["index"] = data[0]["index"] if len(data) > 1 else 1
        if state.mode == "emb_unnormalised":  # llama-cpp-python 0.3.36's server: lengths far from 1
            for item in data:
                item["embedding"] = [x * UNNORMALISED_LENGTH for x in item["embedding"]]
        if data and state.mode == "emb_nan":
            data[0]["embedding"][0] = float("nan")
        tokens = sum(len(t.split()) + 2 for t in texts)
        answer: dict[str, Any] = {
            "object": "list",
            "data": data,
            "model": body.get("model") or "scripted",
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        if state.mode == "emb_no_usage":
            del answer["usage"]
        # json.dumps writes NaN as the bare word, as Python's json (and so a Python server) does
        return Response(json.dumps(answer).encode(), media_type="application/json")

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "scripted", "object": "model"}]})

    async def control(request: Request) -> Response:
        for key, value in (await request.json()).items():
            if not hasattr(live, key):
                return JSONResponse({"error": f"unknown field {key}"}, status_code=400)
            setattr(live, key, value)
        captured.clear()
        calls[0] = 0
        return JSONResponse(asdict(live))

    async def get_captured(request: Request) -> Response:
        return JSONResponse(captured)

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
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
