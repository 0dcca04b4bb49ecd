"""The streamed answer: the upstream's server-sent events relayed to the client, tokens restored.

What the relay guarantees, for every streamed chat request:

* Bounds. The next complete event within ``limits.read_timeout_s`` (bytes that complete none,
  dripped or endless, do not count), the whole stream within ``limits.stream_deadline_s``, no
  event longer than ``limits.max_event_bytes``, no more content and tool-call events than the
  request's ``max_tokens``; the shutdown's drain deadline ends the stream too
  (``shutting_down``). A client that stops reading is cut off after ``limits.write_timeout_s``
  per write (``client_stalled``, the connection dropped). Each ends the stream with an
  OpenAI-style error event. One ``Watchdog`` timer per stream keeps all of these for its reads
  and writes: per event only a deadline (a float) is set, where a timeout per wait cost a timer
  and its bookkeeping twice per event (issue 24).
* Restoration across chunk boundaries. Each choice's content has its own ``StreamRestorer``
  (gateway/phi/tokenise.py): a token cut between two upstream chunks is held back until it is
  complete and goes out restored; surrogate-shaped tokens left in the answer are counted. When
  the request asked for a JSON answer (``Exchange.json_answer``) the content's restorer is a
  ``JsonStreamRestorer`` (gateway/phi/jsonrestore.py): originals go into JSON strings
  JSON-escaped. Tool calls (``delta.tool_calls[k]``, OpenAI's chunk object) get one
  ``JsonStreamRestorer`` per (choice, tool-call index) for their ``function.arguments``
  fragments; what one holds back when the choice's ``finish_reason`` arrives goes out in that
  final event, in call k's fragment there or in a fragment ``{index: k, function: {arguments}}``
  of its own; the legacy ``delta.function_call`` llama-cpp-python sends beside them likewise.
  A call's ``id``, ``type`` and name go out once, in its first fragment, as OpenAI streams them,
  also where the upstream repeats them in every fragment (llama-cpp-python 0.3.36): SDKs join
  every repeated string (``_Restorers.said_once``). Tool-call events count toward the
  max_tokens bound as content events do, and the first of them is the time to first token.
  Events that arrive together leave together (one write); the model is named by its alias.
  Once ``[DONE]`` has gone out after a finish reason the stream is answered: a client that
  stops reading there (the openai SDK) is recorded ``ok``, not disconnected, while the relay
  reads the upstream's body to its end (its connection pooled).
* Audit at body end. The final record (the relay's outcome, counts, timings; never text) is
  written once the end of the body has gone out, or the connection went, also when the relay
  never started; the upstream connection is closed and the admission place given back first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from gateway.admission import Ticket
from gateway.connections import STALLED_SCOPE_KEY
from gateway.phi.jsonrestore import JsonStreamRestorer
from gateway.phi.tokenise import SURROGATE_RE, StreamRestorer, TokenScanner
from gateway.schemas import openai_error
from gateway.sse import EventTooLarge, SSEDecoder
from gateway.upstream import UPSTREAM_ERRORS, StreamHandle, UpstreamFailure

if TYPE_CHECKING:
    from gateway.app import Exchange, Gateway

log = logging.getLogger("sovereign.gateway")

T = TypeVar("T")
_INF = float("inf")
#: json.dumps(event, ensure_ascii=False), byte for byte, without building an encoder per event
#: (json.dumps makes a new one for every call with a non-default argument)
_encode = json.JSONEncoder(ensure_ascii=False).encode

#: answers (and stream chunks) of more characters than this are restored in a worker thread,
#: so a large answer never holds the event loop
RESTORE_IN_THREAD_CHARS = 16_384


class TooLong(Exception):
    """The upstream sent more tokens than the request's max_tokens."""


class StreamFailure(NamedTuple):
    """What ends a stream early: the error event's code and message, the audited status."""

    status: int
    code: str
    message: str


class Watchdog:
    """One timer for every wait of one stream, in place of a timeout per wait: a wait (the
    relay's read of the next upstream bytes, a write to the client) sets its deadline, a float,
    and the timer, when it fires, ends the wait in progress if that is past its deadline, or is
    armed again at the earliest deadline a wait can have from then on. While a stream flows the
    timer fires about once per write timeout or idle timeout, not once per event.

    A wait ended by the watchdog raises TimeoutError, as ``asyncio.timeout_at`` would (a
    cancellation from elsewhere during it stays a CancelledError); *drain_at*, the shutdown's
    drain deadline (Gateway.begin_drain calls ``drain``), bounds every wait too."""

    def __init__(self, write_timeout_s: float, drain_at: float = _INF) -> None:
        self.write_timeout_s = write_timeout_s
        self.drain_at = drain_at
        #: the earliest deadline of the stream's next read (the relay keeps it current)
        self.read_by = _INF
        self._waiting = False  # a wait is in progress
        self._until = _INF  # its deadline
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0
        self._expired = False  # the watchdog cancelled the wait in progress
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = _INF
        self._closed = False

    async def wait(self, aw: Awaitable[T], until: float) -> T:
        """*aw*'s result, or TimeoutError once the loop time *until* (or the drain deadline) passed."""
        if until > self.drain_at:
            until = self.drain_at
        self._until, self._waiting = until, True
        task = self._task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Watchdog.wait runs in a task")
        self._cancelling = task.cancelling()
        if until < self._armed_at:
            self._arm(until)
        try:
            return await aw
        except asyncio.CancelledError:
            if self._expired:
                self._expired = False
                if task.uncancel() <= self._cancelling:
                    raise TimeoutError from None
            raise
        finally:
            self._waiting = False
            if self._expired:  # cancelled, but the wait ended otherwise (the cancellation swallowed)
                self._expired = False
                task.uncancel()

    def drain(self, drain_at: float) -> None:
        """The shutdown's drain deadline: the wait in progress, and every later one, end by it."""
        self.drain_at = drain_at
        if self._waiting and self._until > drain_at:
            self._until = drain_at
        if drain_at < self._armed_at:
            self._arm(drain_at)

    def close(self) -> None:
        """The stream has ended: the timer goes."""
        self._closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._armed_at = _INF

    def _arm(self, when: float) -> None:
        if self._closed:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._armed_at = when
        self._handle = asyncio.get_running_loop().call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle, self._armed_at = None, _INF
        if self._closed:
            return
        now = asyncio.get_running_loop().time()
        if self._waiting and self._until <= now:  # the wait in progress is past its deadline
            if not self._expired and self._task is not None:
                self._expired = True
                self._task.cancel()
            return  # the next wait arms the timer again
        # the earliest deadline a wait can have from now on: the one in progress, a write's
        # (it starts now at the earliest), the next read's, the drain's
        when = now + self.write_timeout_s
        if self._waiting and self._until < when:
            when = self._until
        if now < self.read_by < when:
            when = self.read_by
        if now < self.drain_at < when:
            when = self.drain_at
        self._arm(when)


#: the event that ends an OpenAI stream, as it goes to the client
_DONE = b"data: [DONE]\n\n"


class StreamRelay:
    """One streamed answer: the upstream's events relayed (``events``), the stall of its
    client noted (``stalled``), its end handled once (``end``)."""

    def __init__(
        self, gw: Gateway, ex: Exchange, resp: StreamHandle, t0: float, deadline: float, ticket: Ticket
    ) -> None:
        self.gw, self.ex, self.resp, self.t0, self.deadline, self.ticket = gw, ex, resp, t0, deadline, ticket
        # every wait of the stream, the reads here and the writes in RelayResponse, under one timer
        self.watchdog = Watchdog(gw.settings.limits.write_timeout_s, gw.drain_at)
        gw.watchdogs.add(self.watchdog)  # begin_drain brings its waits forward

    def _event(self, data: bytes, restorers: _Restorers) -> bytes:
        """One upstream event as it goes to the client, tokens restored (in the content, and
        JSON-aware in tool-call argument fragments); raises ValueError when malformed, TooLong
        when a choice has more content or tool-call events than max_tokens (each event carries
        at least one token)."""
        ex = self.ex
        if data == b"[DONE]":
            return _DONE
        try:
            event = json.loads(data)
            for choice in event["choices"]:
                delta = choice.get("delta") or {}
                content = delta.get("content")
                calls = delta.get("tool_calls")
                legacy = delta.get("function_call")
                index = choice.get("index", 0)
                if (isinstance(content, str) and content) or calls or legacy:
                    restorers.events[index] = restorers.events.get(index, 0) + 1
                    if ex.max_tokens is not None and restorers.events[index] > ex.max_tokens:
                        raise TooLong
                text = restorers.feed(index, content if isinstance(content, str) else "")
                called = calls is not None and _restore_calls(index, calls, restorers)
                if legacy is not None:
                    called = _restore_function(index, _FUNCTION_CALL, legacy, restorers) or called
                if choice.get("finish_reason"):
                    ex.finish_reason = choice["finish_reason"]
                    text += restorers.flush(index)
                    rests = restorers.flush_calls(index)
                    if rests:
                        _add_rests(delta, rests)
                        choice["delta"] = delta
                        called = True
                if text or isinstance(content, str):
                    delta["content"] = text
                    choice["delta"] = delta
                if ex.ttft_ms is None and (text or called):
                    ex.ttft_ms = round((time.perf_counter() - self.t0) * 1000, 3)
            usage = event.get("usage")
            if isinstance(usage, dict) and int(usage.get("completion_tokens") or 0) > (
                ex.max_tokens or 1 << 62
            ):
                raise TooLong
        except (AttributeError, KeyError, TypeError) as exc:
            raise ValueError("malformed event") from exc
        event["model"] = ex.alias
        return b"data: " + _encode(event).encode() + b"\n\n"

    async def events(self) -> AsyncIterator[bytes]:
        """Relay the upstream's SSE events, renaming the model to its alias.

        Events that arrive together leave together (one write), so a fast upstream is not
        slowed by one send per token, and a slow one is not held back. Bounded: the next
        complete event within limits.read_timeout_s (bytes that complete none, dripped or
        endless, do not count), the whole stream within limits.stream_deadline_s, no event
        longer than limits.max_event_bytes, no more content and tool-call events than
        max_tokens. Only the wait for the upstream is bounded here (the stream's watchdog),
        never a ``yield`` (the client's pace is RelayResponse's write timeout, under the same
        watchdog).
        """
        gw, ex, resp, t0, deadline = self.gw, self.ex, self.resp, self.t0, self.deadline
        outcome, status = "client_disconnected", 499
        limits = gw.settings.limits
        loop = asyncio.get_running_loop()
        decoder = SSEDecoder(limits.max_event_bytes)
        restorers = _Restorers(ex.originals, ex.json_answer)
        chunks = resp.chunks()
        dog = self.watchdog
        dog.read_by = min(deadline, loop.time() + limits.read_timeout_s)
        try:
            while True:
                try:
                    chunk = await dog.wait(anext(chunks), dog.read_by)
                except StopAsyncIteration:
                    break
                if len(chunk) > RESTORE_IN_THREAD_CHARS:
                    out, failure = await run_in_threadpool(self._chunk, decoder, chunk, restorers)
                else:
                    out, failure = self._chunk(decoder, chunk, restorers)
                if failure is not None:
                    UPSTREAM_ERRORS.labels(kind=failure.code.removeprefix("upstream_")).inc()
                    outcome, status = failure.code, failure.status
                    ex.error = failure.code
                    out.append(_sse_error(failure.code, failure.message))
                    yield self._count(out)
                    return
                if out:
                    dog.read_by = min(deadline, loop.time() + limits.read_timeout_s)
                    yield self._count(out)
                    if _DONE in out and ex.finish_reason is not None and not decoder.pending:
                        # the client has the whole answer: one that stops reading here (the
                        # openai SDK closes its response at [DONE]) leaves an answered stream,
                        # ok, not 499. The body is still read to its end (the connection pooled)
                        ex.upstream_ms = round((time.perf_counter() - t0) * 1000, 3)
                        outcome, status = "ok", 200
            if ex.upstream_ms is None:
                ex.upstream_ms = round((time.perf_counter() - t0) * 1000, 3)
            if ex.finish_reason is None or decoder.pending:
                outcome, status = "upstream_incomplete", 502
                ex.error = outcome
                yield _sse_error("upstream_incomplete", "the model upstream ended the stream early")
            else:
                outcome, status = "ok", 200
        except TimeoutError:
            err = gw.timed_out()
            outcome, status, ex.error = err.code, err.status, err.code
            yield _sse_error(err.code, err.message)
        except UpstreamFailure as exc:
            err = gw._upstream_failure(exc)
            outcome, status, ex.error = err.code, err.status, err.code
            yield _sse_error(err.code, err.message)
        except asyncio.CancelledError:
            if gw.draining:  # uvicorn's backstop after the drain deadline
                ex.drained = True
            raise
        except Exception as exc:  # a defect: the stream still ends with an error and its record
            log.error("unhandled %s in stream %s", type(exc).__name__, ex.request_id)
            outcome, status, ex.error = "internal_error", 500, "internal_error"
            yield _sse_error("internal_error", "internal error")
        finally:
            if isinstance(chunks, AsyncGenerator):
                with contextlib.suppress(BaseException):
                    await chunks.aclose()
            ex.restored, ex.unrestored = restorers.counts()
            # the final record waits for the end of the body (RelayResponse's on_close)
            ex.outcome = (outcome, status)
            resp.close()  # the upstream connection goes back at once

    def stalled(self) -> None:
        """A write to the stream's client timed out: its own write deadline, or the drain's."""
        gw = self.gw
        if gw.draining and asyncio.get_running_loop().time() >= gw.drain_at:
            self.ex.drained = True
        else:
            self.ex.stalled = True

    async def end(self) -> None:
        """Once per stream, after the end of its body went out (or the connection went),
        whether its relay ran or not (a client gone before the first byte): the upstream
        connection closed, the admission place given back (the client may send its next request
        on the connection at once), the final record with the relay's outcome. Records not yet
        written stay bounded: a new request's admit waits behind them in the writer thread."""
        ex = self.ex
        if ex.ended:
            return
        ex.ended = True
        self.watchdog.close()
        self.gw.watchdogs.discard(self.watchdog)
        self.resp.close()
        outcome, status = ex.outcome or ("client_disconnected", 499)
        if outcome == "client_disconnected" and ex.error is None:
            if ex.drained:
                outcome, status = "shutting_down", 503
            elif ex.stalled:
                outcome = "client_stalled"
            ex.error = outcome
        self.gw.admission.release(self.ticket)
        await self.gw.write_audit(ex, outcome, status)

    def _chunk(
        self, decoder: SSEDecoder, chunk: bytes, restorers: _Restorers
    ) -> tuple[list[bytes], StreamFailure | None]:
        """The events *chunk* completes, as they go to the client; (events, the failure that
        ends the stream or None)."""
        out: list[bytes] = []
        failure: StreamFailure | None = None
        try:
            events = decoder.feed(chunk)
        except EventTooLarge as exc:  # the events completed before it still go out
            events = exc.events
            failure = StreamFailure(
                502,
                "upstream_too_large",
                "the model upstream sent an event longer than limits.max_event_bytes",
            )
        try:
            for data in events:
                out.append(self._event(data, restorers))
        except TooLong:
            return out, StreamFailure(
                502, "upstream_too_long", "the model upstream sent more tokens than max_tokens asked for"
            )
        except Exception:  # whatever the upstream's bytes make the parser raise (RecursionError too)
            return out, StreamFailure(502, "upstream_malformed", "the model upstream sent a malformed event")
        return out, failure

    def _count(self, parts: list[bytes]) -> bytes:
        payload = b"".join(parts)
        self.ex.response_bytes += len(payload)
        return payload


class RelayResponse(StreamingResponse):
    """A streamed answer whose client must keep reading: a write that waits longer than
    *write_timeout_s* (the client's receive window stays full) ends the stream (*on_stall* is
    told first, for the audit record) and the connection is dropped. The body iterator is
    always closed here, at once, so its ``finally`` (upstream connection, audit record) never
    waits for the garbage collector."""

    def __init__(
        self,
        content: AsyncIterator[bytes],
        write_timeout_s: float,
        wait: Callable[[Awaitable[Any], float], Awaitable[Any]],
        on_stall: Callable[[], None],
        on_close: Callable[[], Awaitable[None] | None],
        **kw: Any,
    ) -> None:
        super().__init__(content, **kw)
        self._write_timeout_s = write_timeout_s
        self._wait = wait  # Watchdog.wait: the shutdown's drain deadline cuts a write short too
        self._scope: Scope = {}
        self._on_stall = on_stall
        self._on_close = on_close  # for a relay that never started: closing it runs nothing
        self._relay = content

    async def stream_response(self, send: Send) -> None:
        async def bounded_send(message: Message) -> None:
            try:
                await self._wait(send(message), asyncio.get_running_loop().time() + self._write_timeout_s)
            except TimeoutError:
                self._on_stall()
                self._scope[STALLED_SCOPE_KEY] = True  # gateway/connections.py drops the connection
                raise _Stalled from None

        with contextlib.suppress(_Stalled):  # uvicorn closes a connection whose answer is unfinished
            await super().stream_response(bounded_send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._scope = scope
        try:
            await super().__call__(scope, receive, send)
        finally:
            # also when stream_response never ran (the client left before it started)
            if isinstance(self._relay, AsyncGenerator):
                await self._relay.aclose()
            closing = self._on_close()  # after the end of the body: the final record is written here
            if closing is not None:
                await closing


class _Stalled(Exception):
    pass


#: the longest surrogate token (gateway/phi/tokenise.py SURROGATE_RE) less one: the most text a
#: token cut at a chunk boundary can have on the earlier side
_TOKEN_TAIL = 28
#: _Restorers' keys for a choice's content and its legacy ``function_call`` (a tool call's key
#: is its index, 0 or more)
_CONTENT = -1
_FUNCTION_CALL = -2


def _restore_calls(index: int, calls: Any, restorers: _Restorers) -> bool:
    """Restore choice *index*'s tool-call delta fragments (``delta.tool_calls``: a list of
    ``{index, id?, type?, function?: {name?, arguments?}}``, OpenAI's ChoiceDeltaToolCall) in
    place, each call's arguments by its own JSON-aware restorer; whether any fragment carries
    something (a name, restored arguments). TypeError or ValueError when malformed."""
    if not isinstance(calls, list):
        raise TypeError("tool_calls is not a list")
    carried = False
    for call in calls:
        k = call["index"]
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise TypeError("a tool call's index is not a non-negative integer")
        function = call.get("function")
        if function is not None:
            carried = _restore_function(index, k, function, restorers) or carried
        restorers.said_once(index, k, call, ("id", "type"))
    return carried


def _restore_function(index: int, key: int, function: Any, restorers: _Restorers) -> bool:
    """Restore one ``{name?, arguments?}`` fragment in place: a tool call's ``function``, or the
    legacy ``delta.function_call`` that llama-cpp-python 0.3 sends beside ``tool_calls`` with the
    same arguments (llama_cpp/llama_chat_format.py, its function-calling chat handlers); whether
    it carries something."""
    arguments = function.get("arguments")
    if arguments is not None:
        if not isinstance(arguments, str):
            raise TypeError("a function call's arguments are not a string")
        function["arguments"] = arguments = restorers.feed(index, arguments, key)
    named = bool(function.get("name"))
    restorers.said_once(index, key, function, ("name",))
    return bool(arguments) or named


def _add_rests(delta: dict[str, Any], rests: list[tuple[int, str]]) -> None:
    """Append what the tool calls' restorers held back (*rests*: (tool-call index, text)) to
    the final event's *delta*: to that call's arguments fragment where the event has one, else
    as a fragment of its own, ``{"index": k, "function": {"arguments": rest}}`` (a valid
    ChoiceDeltaToolCall: SDKs concatenate fragments by index); the legacy function call's rest
    to ``delta.function_call.arguments``."""
    for k, rest in rests:
        if k == _FUNCTION_CALL:
            legacy = delta.get("function_call")
            if not isinstance(legacy, dict):
                legacy = delta["function_call"] = {}
            legacy["arguments"] = (legacy.get("arguments") or "") + rest
            continue
        calls = delta.get("tool_calls")
        if not isinstance(calls, list):
            calls = delta["tool_calls"] = []
        for call in calls:
            if call["index"] == k and isinstance(call.get("function"), dict):
                call["function"]["arguments"] = (call["function"].get("arguments") or "") + rest
                break
        else:
            calls.append({"index": k, "function": {"arguments": rest}})


class _Restorers:
    """One stream restorer per text of a streamed answer: each choice's content (JSON-aware
    when the request asked for a JSON answer) and each of its tool calls' arguments (always
    JSON-aware), keyed by (choice index, tool-call index or ``_CONTENT`` or ``_FUNCTION_CALL``,
    the legacy function call's arguments). The restored text is not kept: surrogate-shaped
    tokens left in it are counted as it passes, over the new text and the short tail of the
    same text's earlier part a token could start in."""

    def __init__(self, originals: dict[str, str], json_answer: bool = False) -> None:
        self._originals = originals
        self._scanner = TokenScanner(originals)
        self._json_answer = json_answer
        self._streams: dict[tuple[int, int], StreamRestorer] = {}
        self._tails: dict[tuple[int, int], str] = {}
        self._unrestored = 0
        self.events: dict[int, int] = {}  # content and tool-call events per choice
        #: (choice, tool call, field) -> the value its first fragment carried (said_once)
        self._said: dict[tuple[int, int, str], Any] = {}

    def _get(self, key: tuple[int, int]) -> StreamRestorer:
        restorer = self._streams.get(key)
        if restorer is None:
            json_text = key[1] != _CONTENT or self._json_answer
            kind = JsonStreamRestorer if json_text else StreamRestorer
            restorer = self._streams[key] = kind(self._originals, self._scanner)
        return restorer

    def feed(self, index: int, text: str, call: int = _CONTENT) -> str:
        """Choice *index*'s next fragment of its content, or of tool call *call*'s arguments."""
        key = (index, call)
        out = self._get(key).feed(text) if text else ""
        self._count(key, out)
        return out

    def said_once(self, index: int, call: int, fragment: dict[str, Any], fields: tuple[str, ...]) -> None:
        """Drop from *fragment* each of *fields* that an earlier fragment of the same tool call
        carried with the same value. OpenAI streams a call's ``id``, ``type`` and ``function.name``
        in its first fragment only, and SDKs concatenate every later string they get (the openai
        SDK's accumulate_delta: a name sent twice becomes ``find_slotsfind_slots``);
        llama-cpp-python 0.3.36 repeats all three in every fragment (llama_chat_format.py,
        _stream_response_to_function_stream). A changed value goes through as it came."""
        for name in fields:
            if name not in fragment:
                continue
            key = (index, call, name)
            if key in self._said and self._said[key] == fragment[name]:
                del fragment[name]
            else:
                self._said[key] = fragment[name]

    def flush(self, index: int, call: int = _CONTENT) -> str:
        key = (index, call)
        out = self._get(key).flush()
        self._count(key, out)
        return out

    def flush_calls(self, index: int) -> list[tuple[int, str]]:
        """(tool-call index or ``_FUNCTION_CALL``, the rest held back) for choice *index*'s
        tool calls that held some."""
        calls = [call for choice, call in self._streams if choice == index and call != _CONTENT]
        return [(call, rest) for call in sorted(calls) if (rest := self.flush(index, call))]

    def _count(self, key: tuple[int, int], out: str) -> None:
        if not out or (key[1] == _FUNCTION_CALL and self._has_calls(key[0])):
            return  # the legacy function_call repeats a tool call's arguments: counted there
        text = self._tails.get(key, "") + out
        end = 0
        for match in SURROGATE_RE.finditer(text):
            self._unrestored += 1
            end = match.end()
        self._tails[key] = text[max(end, len(text) - _TOKEN_TAIL) :]

    def _has_calls(self, choice: int) -> bool:
        return any(c == choice and call >= 0 for c, call in self._streams)

    def counts(self) -> tuple[int, int]:
        """(tokens restored, surrogate tokens left in the answer: mangled or invented). The
        legacy function_call's arguments repeat a tool call's (llama-cpp-python): counted only
        where the choice has no tool call."""
        restored = sum(
            r.restored
            for (choice, call), r in self._streams.items()
            if call != _FUNCTION_CALL or not self._has_calls(choice)
        )
        return restored, self._unrestored


def _sse_error(code: str, message: str) -> bytes:
    body = openai_error(message, "server_error", code)
    return b"data: " + json.dumps(body).encode() + b"\n\n"
