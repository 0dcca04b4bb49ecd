"""The streamed answer's response object: a client that stops reading is cut off, and whatever
ends the stream, the relay's cleanup (upstream connection, final audit record, admission
place) runs at once — also when the relay never started."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from typing import Any

from gateway.relay import RelayResponse


class Relay:
    def __init__(self) -> None:
        self.started = self.finished = False

    async def events(self) -> AsyncIterator[bytes]:
        self.started = True
        try:
            while True:
                yield b"data: {}\n\n"
                await asyncio.sleep(0)
        finally:
            self.finished = True


async def wait(aw: Awaitable[Any], deadline: float) -> Any:
    """Gateway.bounded without the drain."""
    async with asyncio.timeout_at(deadline):
        return await aw


def respond(relay: Relay, receive: Any, send: Any) -> tuple[list[str], RelayResponse]:
    calls: list[str] = []
    response = RelayResponse(
        relay.events(),
        write_timeout_s=0.05,
        wait=wait,
        on_stall=lambda: calls.append("stall"),
        on_close=lambda: calls.append("close"),
        media_type="text/event-stream",
    )
    scope = {"type": "http", "asgi": {"spec_version": "2.3"}}
    asyncio.run(asyncio.wait_for(response(scope, receive, send), 10))  # a hang detector only
    return calls, response


def test_a_client_that_stops_reading_is_cut_off_and_the_relay_closed() -> None:
    relay = Relay()
    sent: list[dict[str, Any]] = []
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await never.wait()  # the client neither reads nor leaves
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if len(sent) > 3:
            await never.wait()  # its window is full: the write never completes

    calls, _ = respond(relay, receive, send)
    assert calls == ["stall", "close"] and relay.finished
    assert not any(m.get("more_body") is False for m in sent)  # the answer was not completed


def test_a_client_gone_before_the_stream_started_still_gets_the_cleanup() -> None:
    relay = Relay()

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        await asyncio.Event().wait()  # the headers never go out

    calls, _ = respond(relay, receive, send)
    assert calls == ["close"] and not relay.started


def test_the_relays_encoder_writes_what_json_dumps_writes() -> None:
    """Streamed events are encoded by one shared encoder: byte for byte json.dumps(ensure_ascii=False)."""
    from gateway.relay import _encode

    events: list[Any] = [
        {
            "choices": [
                {"index": 0, "delta": {"content": 'Müller "q"\n\u2028 \ud800 😀 \x00'}, "finish_reason": None}
            ]
        },
        {"model": "m", "usage": {"completion_tokens": 3}, "n": 1.5, "big": 10**30, "x": [True, None, {}]},
        {"nan": float("nan"), "inf": float("-inf")},
    ]
    for event in events:
        assert _encode(event) == json.dumps(event, ensure_ascii=False)
