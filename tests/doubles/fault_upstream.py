"""A scripted *misbehaving* upstream: raw HTTP/1.1 on asyncio sockets, for fault-injection tests.

    python -m tests.doubles.fault_upstream --port 9002

Unlike :mod:`tests.doubles.scripted_upstream` (a well-behaved server on uvicorn), this one writes its
answers byte by byte itself, so it can break HTTP the way a buggy or hostile model server does.
It parses requests itself (request line, headers, a Content-Length body) and keeps connections
alive by default. Routes:

- ``GET /v1/models``: 200 JSON (the readiness probe);
- ``POST /_control``: a JSON body ``{"mode": ..., "<param>": ...}`` sets the behaviour of the
  following ``POST /v1/chat/completions`` requests; fields left out take their defaults
  (:class:`Script`);
- ``GET /_requests``: ``{"chat_requests": n, "connections": n, "chat_connections": n,
  "accept_encoding": ...}``, counted since start: chat requests, connections accepted,
  connections that carried a chat request (shows whether a connection was reused), and the
  Accept-Encoding of the last chat request;
- ``POST /v1/chat/completions``: an OpenAI chat request (``"stream": true`` for SSE), answered
  according to the mode. A well-formed answer's content is ``answer-<n>``, n the request's
  sequence number (1, 2, ...), so answers can be told apart.

Modes (parameters in brackets):

- ``normal``: a well-formed answer, plain or SSE;
- ``stray`` [delay_s]: a normal answer, then ``delay_s`` later a SECOND complete HTTP response
  (content ``STRAY``) on the same, by then idle, connection;
- ``gzip_bomb`` [bomb_bytes]: ``Content-Encoding: gzip``, a body of a few hundred KB that
  inflates to ``bomb_bytes`` (built once with zlib; the inflated data is never written);
- ``huge`` [size, chunked]: a valid JSON answer of ``size`` bytes, written in 64 KiB pieces
  (with a Content-Length, or chunked without one);
- ``endless`` [interval_s, event_bytes]: SSE content events of ``event_bytes`` characters
  forever, one every ``interval_s``;
- ``no_newline`` [interval_s]: SSE headers, then 1 KiB pieces without any newline, forever;
- ``drip`` [interval_s]: a valid plain answer, one byte every ``interval_s``;
- ``short_length``: a Content-Length 100 bytes larger than the body sent, then close;
- ``long_length``: 16 bytes of garbage after the body that Content-Length announces;
- ``bad_chunked``: a chunked body whose first chunk-size line is not hexadecimal;
- ``hang`` [hang_s]: read the request, send nothing for ``hang_s``, then close;
- ``raw`` [body]: ``body`` verbatim as the plain answer's JSON, or as a stream's one event;
- ``many_events`` [events]: SSE, ``events`` content events, then a finish_reason and
  ``[DONE]`` (max_tokens is ignored);
- ``drop`` [events]: SSE, ``events`` content events, then the connection closes mid-body (no
  last chunk), as a crashed model server's does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

PIECE = 64 << 10


@dataclass
class Script:
    mode: str = "normal"
    delay_s: float = 0.2
    bomb_bytes: int = 64 << 20
    size: int = 64 << 20
    chunked: bool = False
    interval_s: float = 0.01
    hang_s: float = 60.0
    events: int = 100
    event_bytes: int = 5
    body: str = ""


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        value = json.loads(self.body or b"{}")
        return value if isinstance(value, dict) else {}


def head(status: int, headers: dict[str, str | int]) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "Status")
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def json_response(value: Any, status: int = 200) -> bytes:
    body = json.dumps(value).encode()
    return head(status, {"Content-Type": "application/json", "Content-Length": len(body)}) + body


def answer(n: int, content: str | None = None) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-fault-{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "fault",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content or f"answer-{n}"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def event(n: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {
        "id": f"chatcmpl-fault-{n}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": "fault",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


SSE_HEAD = head(200, {"Content-Type": "text/event-stream", "Transfer-Encoding": "chunked"})
LAST_CHUNK = b"0\r\n\r\n"

_bombs: dict[int, bytes] = {}
_background: set[asyncio.Task[None]] = set()  # the stray answers' tasks, referenced until done


def gzip_bomb(inflated: int) -> bytes:
    """A gzip member of a JSON answer followed by blanks up to *inflated* bytes (valid JSON once
    inflated), compressed piece by piece: the inflated data never exists in memory."""
    if inflated not in _bombs:
        z = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip header and trailer
        start = json.dumps(answer(0, "BOMB")).encode()
        out = [z.compress(start)]
        blank = b" " * (1 << 20)
        left = max(0, inflated - len(start))
        while left > 0:
            out.append(z.compress(blank[: min(left, len(blank))]))
            left -= len(blank)
        out.append(z.flush())
        _bombs[inflated] = b"".join(out)
    return _bombs[inflated]


# a mode answers one chat request; it returns whether the connection stays open for the next
Mode = Callable[[asyncio.StreamWriter, int, Request, Script], Awaitable[bool]]


async def send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


async def normal(writer: asyncio.StreamWriter, n: int, req: Request, s: Script) -> bool:
    if req.json().get("stream"):
        body = event(n, {"role": "assistant", "content": ""}) + event(n, {"content": f"answer-{n}"})
        body += event(n, {}, "stop") + b"data: [DONE]\n\n"
        await send(writer, SSE_HEAD + chunk(body) + LAST_CHUNK)
    else:
        await send(writer, json_response(answer(n)))
    return True


async def raw(writer: asyncio.StreamWriter, n: int, req: Request, s: Script) -> bool:
    """``body`` as it is: a plain answer's JSON body, or a stream's one event (then [DONE])."""
    if req.json().get("stream"):
        data = b"data: " + s.body.encode() + b"\n\ndata: [DONE]\n\n"
        await send(writer, SSE_HEAD + chunk(data) + LAST_CHUNK)
    else:
        data = s.body.encode()
        await send(
            writer, head(200, {"Content-Type": "application/json", "Content-Length": len(data)}) + data
        )
    return True


async def stray(writer: asyncio.StreamWriter, n: int, req: Request, s: Script) -> bool:
    await send(writer, json_response(answer(n)))

    async def later() -> None:
        await asyncio.sleep(s.delay_s)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await send(writer, json_response(answer(n, "STRAY")))

    task = asyncio.create_task(later())
    _background.add(task)
    task.add_done_callback(_background.discard)
    return True


async def bomb(writer: asyncio.StreamWriter, n: int, req: Request, s: Script) -> bool:
    body = gzip_bomb(s.bomb_bytes)
    headers: dict[str, str | int] = {
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
        "Content-Length": len(body),
    }
    await send(writer, head(200, headers) + body)
    return True


async def huge(writer: asyncio.StreamWriter, n: int, req: Request, s: Script) -> bool:
    start, end = json.dumps(answer(n, "\0")).encode().split(b"\\u0000")
    pad = max(0, s.size - len(start) - len(end))
    frame = chunk if s.chunked else bytes
    headers: dict[str, str | int] = {"Content-Type": "application/json"}
    if s.chunked:
        headers["Transfer-Encoding"] = "chunked"
    else:
        headers["Content-Length"] = pad + len(start) + len(end)
    await send(writer, head(200, headers) + frame(start))
    piece = frame(b"x" * PIECE)
    while pad > 0:
        await send(writer, piece if pad >= PIECE else frame(b"x" * pad))
        pad -= PIECE
    await send(writer, frame(end) + (LAST_CHUNK if s.chunked else b""))
    return True


async def endless(writer: asyncio.StreamWriter, n: int, req: Request, s: Script) -> bool:
    await send(writer, SSE_HEAD + chunk(event(n, {"role": "assistant", "content": ""})))
    piece = chunk(event(n, {"content": ("more " * (s.event_bytes // 5 + 1))[: s.event_bytes]}))
    while True:
        await send(writer, piece)
        await asyncio.sleep(s.interval_s)


async def no_newline(writer: asyncio.StreamWriter, n: int, req: Request, s: Script) -> bool:
    await send(writer, SSE_HEAD)
    piece = chunk(b"x" * 1024)
    while True:
        await send(writer, piece)
        await asyncio.sleep(s.interval_s)


async def drip(writer: asyncio.StreamWriter, n: int, req: Request, s: Script) -> bool:
    data = json_response(answer(n))
    for i in range(len(data)):
        await send(writer, data[i : i + 1])
        await asyncio.sleep(s.interval_s)
    return True


async def short_length(writer: asyncio.StreamWriter, n: int, req: Request, s: Script) -> bool:
    body = json.dumps(answer(n)).encode()
    headers: dict[str, str | int] = {"Content-Type": "application/json", "Content-Length": len(body) + 100}
    await send(writer, head(200, headers) + body)
    return False


async def long_length(writer: asyncio.StreamWriter, n: int, req: Request, s: Script) -> bool:
    body = json.dumps(answer(n)).encode()
    headers: dict[str, str | int] = {"Content-Type": "application/json", "Content-Length": len(body)}
    await send(writer, head(200, headers) + body + b"GARBAGE-GARBAGE!")
    return True


async def bad_chunked(writer: asyncio.StreamWriter, n: int, req: Request, s: Script) -> bool:
    body = json.dumps(answer(n)).encode()
    headers: dict[str, str | int] = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    await send(writer, head(200, headers) + b"zz\r\n" + body + b"\r\n" + LAST_CHUNK)
    return True


async def hang(writer: asyncio.StreamWriter, n: int, req: Request, s: Script) -> bool:
    await asyncio.sleep(s.hang_s)
    return False


async def many_events(writer: asyncio.StreamWriter, n: int, req: Request, s: Script) -> bool:
    await send(writer, SSE_HEAD + chunk(event(n, {"role": "assistant", "content": ""})))
    for i in range(s.events):
        await send(writer, chunk(event(n, {"content": f"w{i} "})))
    await send(writer, chunk(event(n, {}, "length") + b"data: [DONE]\n\n") + LAST_CHUNK)
    return True


async def drop(writer: asyncio.StreamWriter, n: int, req: Request, s: Script) -> bool:
    await send(writer, SSE_HEAD + chunk(event(n, {"role": "assistant", "content": ""})))
    for i in range(s.events):
        await send(writer, chunk(event(n, {"content": f"w{i} "})))
    return False  # closed without the last chunk


MODES: dict[str, Mode] = {
    "normal": normal,
    "stray": stray,
    "gzip_bomb": bomb,
    "huge": huge,
    "endless": endless,
    "no_newline": no_newline,
    "drip": drip,
    "short_length": short_length,
    "long_length": long_length,
    "bad_chunked": bad_chunked,
    "hang": hang,
    "many_events": many_events,
    "drop": drop,
    "raw": raw,
}


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request on the connection, or None at its end."""
    line = await reader.readline()
    if not line.strip():
        return None
    method, path, _version = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Request(method, path, headers, body)


class FaultServer:
    def __init__(self) -> None:
        self.script = Script()
        self.chat_requests = 0
        self.connections = 0
        self.chat_connections = 0
        self.accept_encoding: str | None = None  # of the last chat request

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        chatted = False
        try:
            while (req := await read_request(reader)) is not None:
                if req.path == "/v1/models":
                    await send(writer, json_response({"object": "list", "data": [{"id": "fault"}]}))
                elif req.path == "/_requests":
                    counts = {
                        "chat_requests": self.chat_requests,
                        "connections": self.connections,
                        "chat_connections": self.chat_connections,
                        "accept_encoding": self.accept_encoding,
                    }
                    await send(writer, json_response(counts))
                elif req.path == "/_control" and req.method == "POST":
                    await send(writer, self.control(req.json()))
                elif req.path == "/v1/chat/completions" and req.method == "POST":
                    self.chat_requests += 1
                    self.accept_encoding = req.headers.get("accept-encoding")
                    if not chatted:
                        chatted = True
                        self.chat_connections += 1
                    if not await MODES[self.script.mode](writer, self.chat_requests, req, self.script):
                        break
                else:
                    await send(writer, json_response({"error": "not found"}, 404))
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    def control(self, body: dict[str, Any]) -> bytes:
        unknown = set(body) - {f.name for f in fields(Script)}
        if unknown or body.get("mode", "normal") not in MODES:
            problem = f"unknown fields {sorted(unknown)} or mode {body.get('mode')!r}"
            return json_response({"error": problem}, 400)
        self.script = Script(**body)
        return json_response(asdict(self.script))


async def serve(host: str, port: int) -> None:
    server = await asyncio.start_server(FaultServer().handle, host, port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
