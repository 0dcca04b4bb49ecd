"""UpstreamClient against a misbehaving model server (tests.doubles.fault_upstream, a real process):
every answer belongs to its request, nothing is inflated, answers are bounded in size and time,
each failure has its class, and readiness probes do not queue behind chat requests.

No test asserts how long something took: the deadlines under test are short settings (1 s), and
``asyncio.wait_for(..., SAFETY_S)`` only detects a hang (the faults themselves last a minute or
forever)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tracemalloc
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gateway.settings import LimitSettings
from gateway.upstream import (
    UpstreamBroken,
    UpstreamClient,
    UpstreamFailure,
    UpstreamMalformed,
    UpstreamTimeout,
    UpstreamTooLarge,
    UpstreamUnreachable,
)
from tests.support import FaultUpstream, free_port, start_fault_upstream

ROOT = Path(__file__).resolve().parents[2]
SAFETY_S = 20.0
CAP = 256 << 10  # max_answer_bytes in these tests
CHAT = {"model": "fault", "messages": [{"role": "user", "content": "hi"}]}

T = TypeVar("T")


@pytest.fixture(scope="module")
def fault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultUpstream]:
    upstream = start_fault_upstream(tmp_path_factory.mktemp("fault"))
    try:
        yield upstream
    finally:
        assert upstream.proc is not None
        upstream.proc.stop()


def limits(**fields: Any) -> LimitSettings:
    values: dict[str, Any] = {
        "connect_timeout_s": 2.0,
        "read_timeout_s": 10.0,
        "request_deadline_s": 10.0,
        "max_connections": 8,
        "max_answer_bytes": CAP,
    }
    return LimitSettings(**(values | fields))


def run(scenario: Awaitable[T]) -> T:
    async def guarded() -> T:
        return await asyncio.wait_for(scenario, SAFETY_S)

    return asyncio.run(guarded())


def content(body: bytes) -> str:
    text: str = json.loads(body)["choices"][0]["message"]["content"]
    return text


async def post(client: UpstreamClient, fault: FaultUpstream, **kwargs: Any) -> str:
    status, body = await client.post_json(fault.chat, CHAT, **kwargs)
    assert status == 200
    return content(body)


def test_a_well_behaved_upstream_keeps_its_connection_pooled(fault: FaultUpstream) -> None:
    fault.mode("normal")
    before = fault.counts()

    async def scenario() -> list[str]:
        client = UpstreamClient(limits())
        try:
            answers = [await post(client, fault) for _ in range(3)]
            stream = await client.open_stream(fault.chat, CHAT | {"stream": True})
            text = b"".join([c async for c in stream.chunks()])
            stream.close()
            answers.append(text.decode())
            answers.append(await post(client, fault))
            return answers
        finally:
            await client.close()

    answers = run(scenario())
    n = before["chat_requests"]
    assert answers[:3] == [f"answer-{n + 1}", f"answer-{n + 2}", f"answer-{n + 3}"]
    assert f"answer-{n + 4}" in answers[3] and "data: [DONE]" in answers[3]
    assert answers[4] == f"answer-{n + 5}"
    # one connection for all five, the stream's included (read to its end, so pooled)
    assert fault.counts()["chat_connections"] == before["chat_connections"] + 1


@pytest.mark.parametrize("delay_s", [0.0, 0.05], ids=["with-the-answer", "while-idle"])
def test_a_stray_second_answer_never_reaches_the_next_request(fault: FaultUpstream, delay_s: float) -> None:
    # at once, the stray answer is parsed into the connection's buffer before it is released (so
    # aiohttp closes it at release); later, it arrives while the connection idles in the pool
    fault.mode("stray", delay_s=delay_s)

    async def scenario() -> tuple[str, dict[str, Any], str]:
        client = UpstreamClient(limits())
        try:
            first = await post(client, fault)
            await asyncio.sleep(0.5)  # the stray answer has arrived by then
            between = fault.counts()
            second = await post(client, fault)
            return first, between, second
        finally:
            await client.close()

    first, between, second = run(scenario())
    assert first == f"answer-{between['chat_requests']}"
    assert second == f"answer-{between['chat_requests'] + 1}"  # its own, not "STRAY"
    # ... over a new connection: the one that received the stray answer was closed
    assert fault.counts()["chat_connections"] == between["chat_connections"] + 1


def traced_peak(scenario: Awaitable[None]) -> tuple[int, str | None]:
    """Peak bytes allocated by Python while *scenario* runs, and the kind of its failure."""
    tracemalloc.start()
    try:
        run(scenario)
        kind = None
    except UpstreamFailure as exc:
        kind = exc.kind
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, kind


async def one_request(chat: str, stream: bool) -> None:
    client = UpstreamClient(limits())
    try:
        if stream:
            (await client.open_stream(chat, CHAT | {"stream": True})).close()
        else:
            await client.post_json(chat, CHAT)
    finally:
        await client.close()


def measure() -> None:
    """In a fresh process (tracemalloc sees every thread, and a test session has others): the
    peak of one small, well-formed answer (a client session, its connector, the loop), then of
    one answer in the mode given (argv: URL, stream, mode JSON), as JSON on stdout."""
    url, stream, script = sys.argv[1], sys.argv[2] == "stream", json.loads(sys.argv[3])
    fault = FaultUpstream(url)
    fault.mode("normal")
    run(one_request(fault.chat, stream))  # warm: lazy imports and one-time set-up
    base, _ = traced_peak(one_request(fault.chat, stream))
    fault.mode(**script)
    peak, kind = traced_peak(one_request(fault.chat, stream))
    print(json.dumps({"base": base, "peak": peak, "kind": kind}))


def peak_beyond_baseline(fault: FaultUpstream, stream: bool, **script: Any) -> tuple[int, str | None]:
    argv = [sys.executable, "-c", "from tests.gateway.test_upstream_faults import measure; measure()"]
    argv += [fault.url, "stream" if stream else "plain", json.dumps(script)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=60, check=True)
    result = json.loads(done.stdout)
    return result["peak"] - result["base"], result["kind"]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_gzip_bomb_is_malformed_and_never_inflated(fault: FaultUpstream, stream: bool) -> None:
    peak, kind = peak_beyond_baseline(fault, stream, mode="gzip_bomb", bomb_bytes=64 << 20)
    assert kind == "malformed"
    assert peak < 1 << 20  # the body alone is ~64 KiB; inflated, 64 MiB
    assert fault.counts()["accept_encoding"] == "identity"  # we never asked for it


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_huge_answer_is_too_large_and_never_buffered(fault: FaultUpstream, chunked: bool) -> None:
    peak, kind = peak_beyond_baseline(fault, False, mode="huge", size=64 << 20, chunked=chunked)
    assert kind == "too_large"
    assert peak < CAP * 3  # a 64 MiB answer


@pytest.mark.parametrize("mode", ["endless", "no_newline"])
def test_an_endless_stream_is_too_large_past_max_answer_bytes(fault: FaultUpstream, mode: str) -> None:
    fault.mode(mode, interval_s=0)

    async def scenario() -> int:
        client = UpstreamClient(limits())
        received = 0
        try:
            stream = await client.open_stream(fault.chat, CHAT | {"stream": True})
            assert stream.status == 200
            try:
                async for piece in stream.chunks():
                    received += len(piece)
            finally:
                stream.close()
        except UpstreamTooLarge:
            return received
        finally:
            await client.close()
        raise AssertionError("the endless stream ended")

    assert run(scenario()) <= CAP


def test_a_dripping_answer_times_out_at_the_request_deadline(fault: FaultUpstream) -> None:
    # a byte every 0.3 s never trips the 10 s idle timeout; the 1 s deadline ends it
    fault.mode("drip", interval_s=0.3)

    async def scenario(settings: LimitSettings, **kwargs: Any) -> None:
        client = UpstreamClient(settings)
        try:
            await client.post_json(fault.chat, CHAT, **kwargs)
        finally:
            await client.close()

    with pytest.raises(UpstreamTimeout) as failure:
        run(scenario(limits(request_deadline_s=1.0)))
    assert failure.value.kind == "timeout"
    # deadline_s, when given, replaces the setting (the app passes what is left of its own)
    with pytest.raises(UpstreamTimeout):
        run(scenario(limits(request_deadline_s=600.0), deadline_s=1.0))


@pytest.mark.parametrize("mode", ["short_length", "long_length", "bad_chunked"])
def test_bad_framing_is_malformed_and_the_connection_is_not_reused(fault: FaultUpstream, mode: str) -> None:
    async def scenario() -> tuple[dict[str, Any], str]:
        client = UpstreamClient(limits())
        try:
            fault.mode("normal")
            await post(client, fault)  # a pooled connection, which the bad answer then uses
            fault.mode(mode)
            with pytest.raises(UpstreamMalformed) as failure:
                await client.post_json(fault.chat, CHAT)
            assert failure.value.kind == "malformed"
            fault.mode("normal")
            between = fault.counts()
            return between, await post(client, fault)
        finally:
            await client.close()

    before = fault.counts()
    between, answer = run(scenario())
    assert between["chat_connections"] == before["chat_connections"] + 1  # the bad one was reused
    assert answer == f"answer-{between['chat_requests'] + 1}"
    assert fault.counts()["chat_connections"] == between["chat_connections"] + 1


def test_a_hanging_upstream_times_out(fault: FaultUpstream) -> None:
    fault.mode("hang", hang_s=60)

    async def plain() -> None:  # no idle timeout before the minute is up: the deadline ends it
        client = UpstreamClient(limits(request_deadline_s=1.0, read_timeout_s=60.0))
        try:
            await client.post_json(fault.chat, CHAT)
        finally:
            await client.close()

    async def stream() -> None:
        client = UpstreamClient(limits(read_timeout_s=1.0))
        try:
            await client.open_stream(fault.chat, CHAT | {"stream": True})
        finally:
            await client.close()

    with pytest.raises(UpstreamTimeout):
        run(plain())
    with pytest.raises(UpstreamTimeout):
        run(stream())


def test_a_connection_closed_before_the_answer_is_unreachable_and_mid_answer_broken(
    fault: FaultUpstream,
) -> None:
    async def scenario() -> None:
        client = UpstreamClient(limits())
        try:
            fault.mode("hang", hang_s=0.2)  # then the upstream closes without a byte of an answer
            with pytest.raises(UpstreamUnreachable):
                await client.post_json(fault.chat, CHAT)
            with pytest.raises(UpstreamUnreachable):
                await client.open_stream(fault.chat, CHAT | {"stream": True})
            fault.mode("drop", events=3)
            stream = await client.open_stream(fault.chat, CHAT | {"stream": True})
            try:
                with pytest.raises(UpstreamBroken) as broken:
                    async for _ in stream.chunks():
                        pass
            finally:
                stream.close()
            assert broken.value.kind == "broken_stream"
        finally:
            await client.close()

    run(scenario())


def test_a_refused_port_is_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1/chat/completions"

    async def scenario() -> None:
        client = UpstreamClient(limits())
        try:
            with pytest.raises(UpstreamUnreachable) as plain:
                await client.post_json(url, CHAT)
            assert plain.value.kind == "unreachable"
            with pytest.raises(UpstreamUnreachable):
                await client.open_stream(url, CHAT | {"stream": True})
            with pytest.raises(UpstreamUnreachable):
                await client.probe(url.replace("/chat/completions", "/models"))
        finally:
            await client.close()

    run(scenario())


def test_a_stream_closed_before_its_end_does_not_pool_its_connection(fault: FaultUpstream) -> None:
    fault.mode("many_events", events=5000)

    async def scenario() -> tuple[dict[str, Any], str]:
        client = UpstreamClient(limits(max_answer_bytes=8 << 20))
        try:
            stream = await client.open_stream(fault.chat, CHAT | {"stream": True})
            async for _ in stream.chunks():
                break
            stream.close()
            fault.mode("normal")
            between = fault.counts()
            return between, await post(client, fault)
        finally:
            await client.close()

    between, answer = run(scenario())
    assert answer == f"answer-{between['chat_requests'] + 1}"
    assert fault.counts()["chat_connections"] == between["chat_connections"] + 1


def test_probes_do_not_queue_behind_a_saturated_chat_pool(fault: FaultUpstream) -> None:
    fault.mode("hang", hang_s=60)

    async def scenario() -> int:
        client = UpstreamClient(limits(max_connections=1, request_deadline_s=60.0, read_timeout_s=60.0))
        before = fault.counts()["chat_requests"]
        hung = asyncio.create_task(client.post_json(fault.chat, CHAT))
        try:
            while fault.counts()["chat_requests"] == before:  # the pool's one connection is busy
                await asyncio.sleep(0.05)
            return await client.probe(f"{fault.url}/v1/models", timeout_s=5.0)
        finally:
            hung.cancel()
            await asyncio.gather(hung, return_exceptions=True)
            await client.close()

    try:
        assert run(scenario()) == 200
    except UpstreamFailure as exc:  # the old shared pool: the probe timed out in the queue
        pytest.fail(f"the probe failed behind the saturated chat pool: {exc.kind}")
