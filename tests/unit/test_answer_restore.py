"""The gateway's restoration of an answer (gateway/app.py Gateway._restore_answer) and of a
streamed one (gateway/relay.py StreamRelay._event): tool-call arguments restored JSON-aware,
plain and in streamed fragments per (choice, tool call), the held-back rest in the choice's final
event; a JSON answer's content (``Exchange.json_answer``) too; tool-call events bounded by
max_tokens like content events; restored and unrestored counts. Answers are shaped as the OpenAI
API reference has them (chat completion object: ``choices[].message.tool_calls[]``,
``{id, type: "function", function: {name, arguments}}``; chunk object:
``choices[].delta.tool_calls[]``, ``{index, id?, type?, function?: {name?, arguments?}}``) and as
vLLM v0.11.0 streams them (the first fragment of a call carries id, type and name with empty
arguments, the later ones ``{index, function: {arguments}}``, the last event ``delta: {}`` with
``finish_reason: "tool_calls"``)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from gateway.app import Exchange, Gateway
from gateway.relay import StreamRelay, TooLong, _Restorers

NAME, STREET, ORDER = "[NAME_0a1b2c]", "[ADDRESS_00ff00]", "48291037"
ORIGINALS = {NAME: 'Erika "Eri" Müller', STREET: "Studio 0\nLindsey Spur", ORDER: "00012345"}
ARGUMENTS = json.dumps({"patient": NAME, "street": f"{STREET} 7", "order": 0}).replace("0}", f"{ORDER}}}")
MEANT = {"patient": ORIGINALS[NAME], "street": f"{ORIGINALS[STREET]} 7", "order": 12345}


def exchange(**fields: Any) -> Exchange:
    return Exchange(request_id="r", alias="chat", originals=dict(ORIGINALS), **fields)


def answer(content: str | None, calls: list[str]) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [
            {"id": f"call_{k}", "type": "function", "function": {"name": "book_appointment", "arguments": a}}
            for k, a in enumerate(calls)
        ]
    choice = {"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}
    return json.dumps({"id": "c", "object": "chat.completion", "model": "m", "choices": [choice]}).encode()


def test_tool_call_arguments_of_a_plain_answer_are_restored_as_json() -> None:
    ex = exchange()
    out = json.loads(
        Gateway._restore_answer(ex, answer(None, [ARGUMENTS, f'{{"note": "{NAME} [NAME_ffffff]"}}']))
    )
    calls = out["choices"][0]["message"]["tool_calls"]
    assert json.loads(calls[0]["function"]["arguments"]) == MEANT
    assert json.loads(calls[1]["function"]["arguments"]) == {"note": f"{ORIGINALS[NAME]} [NAME_ffffff]"}
    assert [c["function"]["name"] for c in calls] == ["book_appointment"] * 2
    assert out["choices"][0]["message"]["content"] is None and out["model"] == "chat"
    assert (ex.restored, ex.unrestored) == (4, 1)  # the invented surrogate is counted


def test_a_json_answer_content_is_restored_json_escaped_a_text_answer_as_text() -> None:
    content = json.dumps({"patient": NAME})
    ex = exchange(json_answer=True)
    out = json.loads(Gateway._restore_answer(ex, answer(content, [])))
    assert json.loads(out["choices"][0]["message"]["content"]) == {"patient": ORIGINALS[NAME]}
    assert ex.restored == 1
    out = json.loads(Gateway._restore_answer(exchange(), answer(f"Dear {NAME}", [])))
    assert out["choices"][0]["message"]["content"] == f"Dear {ORIGINALS[NAME]}"


def relay(ex: Exchange) -> StreamRelay:
    """A relay for _event only (it reads the exchange and the request's start time)."""
    r = StreamRelay.__new__(StreamRelay)
    r.ex, r.t0 = ex, time.perf_counter()
    return r


def chunk(delta: dict[str, Any], finish: str | None = None, index: int = 0) -> bytes:
    event = {"id": "c", "object": "chat.completion.chunk", "model": "m"}
    return json.dumps(
        event | {"choices": [{"index": index, "delta": delta, "finish_reason": finish}]}
    ).encode()


def fragments(k: int, arguments: str, size: int) -> list[bytes]:
    """Tool call *k* as vLLM streams it: id, type and name first, then the arguments in pieces."""
    first = {"index": k, "id": f"call_{k}", "type": "function", "function": {"name": "find", "arguments": ""}}
    pieces = [arguments[i : i + size] for i in range(0, len(arguments), size)]
    return [chunk({"tool_calls": [first]})] + [
        chunk({"tool_calls": [{"index": k, "function": {"arguments": p}}]}) for p in pieces
    ]


def accumulate(events: list[bytes]) -> tuple[dict[int, dict[str, Any]], str, list[dict[str, Any]]]:
    """What a client makes of the relayed events, as the SDKs do (fragments concatenated by
    tool-call index): (tool calls by index, content, the events), each event checked against the
    chunk object's shape."""
    calls: dict[int, dict[str, Any]] = {}
    content = ""
    parsed = []
    for raw in events:
        assert raw.startswith(b"data: ") and raw.endswith(b"\n\n")
        event = json.loads(raw[len(b"data: ") :])
        parsed.append(event)
        for choice in event["choices"]:
            delta = choice["delta"]
            content += delta.get("content") or ""
            for call in delta.get("tool_calls") or []:
                assert type(call["index"]) is int and set(call) <= {"index", "id", "type", "function"}
                assert set(call.get("function") or {}) <= {"name", "arguments"}
                got = calls.setdefault(call["index"], {"id": None, "name": None, "arguments": ""})
                for key in ("id",):
                    if call.get(key):
                        got[key] = call[key]
                function = call.get("function") or {}
                if function.get("name"):
                    got["name"] = function["name"]
                assert isinstance(function.get("arguments", ""), str)
                got["arguments"] += function.get("arguments") or ""
    return calls, content, parsed


@pytest.mark.parametrize("size", [1, 3, 4, 7, 1000])
def test_streamed_tool_call_fragments_are_restored_across_boundaries(size: int) -> None:
    ex = exchange()
    r = relay(ex)
    restorers = _Restorers(ex.originals, ex.json_answer)
    second = json.dumps({"who": f"{NAME}{NAME}", "where": [STREET]})
    upstream = [chunk({"role": "assistant", "content": ""}), *fragments(0, ARGUMENTS, size)]
    upstream += [*fragments(1, second, size), chunk({}, "tool_calls")]
    out = [r._event(data, restorers) for data in upstream] + [r._event(b"[DONE]", restorers)]
    assert out[-1] == b"data: [DONE]\n\n"
    calls, content, events = accumulate(out[:-1])
    assert content == ""
    assert json.loads(calls[0]["arguments"]) == MEANT
    assert json.loads(calls[1]["arguments"]) == {"who": ORIGINALS[NAME] * 2, "where": [ORIGINALS[STREET]]}
    assert [(c["id"], c["name"]) for c in calls.values()] == [("call_0", "find"), ("call_1", "find")]
    assert all(e["model"] == "chat" for e in events)
    assert ex.finish_reason == "tool_calls" and ex.ttft_ms is not None
    assert restorers.counts() == (6, 0)


@pytest.mark.parametrize("final_has_fragment", [False, True])
def test_the_rest_held_at_finish_goes_into_the_final_event(final_has_fragment: bool) -> None:
    """Arguments cut off mid-token (finish_reason "length"): what was held back goes out with
    the final event, in that call's fragment there or in one of its own."""
    ex = exchange()
    r = relay(ex)
    restorers = _Restorers(ex.originals)
    out = [r._event(e, restorers) for e in fragments(2, '{"a": "x [NAME_0a1b', 100)]
    held = json.loads(out[-1][len(b"data: ") :])["choices"][0]["delta"]["tool_calls"][0]["function"]
    assert held["arguments"] == '{"a": "x '  # the partial token is held back
    own = [{"index": 2, "function": {"arguments": "2c"}}] if final_has_fragment else None
    final = json.loads(
        r._event(chunk({"tool_calls": own} if own else {}, "length"), restorers)[len(b"data: ") :]
    )
    rest = "[NAME_0a1b2c" if final_has_fragment else "[NAME_0a1b"
    assert final["choices"][0]["delta"] == {"tool_calls": [{"index": 2, "function": {"arguments": rest}}]}
    assert final["choices"][0]["finish_reason"] == "length"
    assert restorers.counts() == (0, 0)


def test_a_streamed_json_answer_content_is_restored_json_escaped() -> None:
    text = json.dumps({"patient": NAME, "order": 0}).replace("0}", f"{ORDER}}}")
    for json_answer, check in [
        (True, lambda s: json.loads(s) == {"patient": ORIGINALS[NAME], "order": 12345}),
        (False, lambda s: s == text.replace(NAME, ORIGINALS[NAME]).replace(ORDER, ORIGINALS[ORDER])),
    ]:
        ex = exchange(json_answer=json_answer)
        r = relay(ex)
        restorers = _Restorers(ex.originals, ex.json_answer)
        upstream = [chunk({"content": text[i : i + 5]}) for i in range(0, len(text), 5)]
        out = [r._event(e, restorers) for e in [*upstream, chunk({}, "stop")]]
        assert check(accumulate(out)[1])


def test_tool_call_events_count_toward_max_tokens() -> None:
    ex = exchange(max_tokens=4)
    r = relay(ex)
    restorers = _Restorers(ex.originals)
    events = fragments(0, '{"a": "bcdefgh"}', 5)  # one with the name, four with arguments
    for e in events[:4]:
        r._event(e, restorers)
    with pytest.raises(TooLong):
        r._event(events[4], restorers)


def test_the_first_tool_call_fragment_is_the_first_token() -> None:
    ex = exchange()
    r = relay(ex)
    restorers = _Restorers(ex.originals)
    r._event(chunk({"role": "assistant", "content": ""}), restorers)
    assert ex.ttft_ms is None
    r._event(fragments(0, "{}", 2)[0], restorers)  # the name, no arguments yet
    assert ex.ttft_ms is not None


@pytest.mark.parametrize(
    "tool_calls",
    [
        {"index": 0},  # not a list
        [{"function": {"arguments": "{}"}}],  # no index
        [{"index": "0", "function": {"arguments": "{}"}}],
        [{"index": -1, "function": {"arguments": "{}"}}],
        [{"index": 0, "function": {"arguments": {"a": 1}}}],  # arguments not a string
        [{"index": 0, "function": "f"}],
    ],
)
def test_malformed_tool_call_fragments_are_refused(tool_calls: Any) -> None:
    ex = exchange()
    with pytest.raises(ValueError):
        relay(ex)._event(chunk({"tool_calls": tool_calls}), _Restorers(ex.originals))


def test_the_legacy_function_call_llama_cpp_sends_beside_tool_calls_is_restored_too() -> None:
    """llama-cpp-python 0.3's function-calling chat handlers (llama_cpp/llama_chat_format.py)
    put the same arguments in ``function_call`` and ``tool_calls[0].function``, plain and in
    every streamed chunk."""
    raw = json.loads(answer(None, [ARGUMENTS]))
    raw["choices"][0]["message"]["function_call"] = {"name": "book_appointment", "arguments": ARGUMENTS}
    ex = exchange()
    message = json.loads(Gateway._restore_answer(ex, json.dumps(raw).encode()))["choices"][0]["message"]
    assert json.loads(message["function_call"]["arguments"]) == MEANT
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == MEANT
    assert ex.restored == 3  # the same arguments twice: counted once, as the tool call's

    ex = exchange()
    r = relay(ex)
    restorers = _Restorers(ex.originals)
    legacy = ""
    cut = ARGUMENTS + " [NAME_0a1b"  # cut off mid-token: the rest goes out at finish
    for i in range(0, len(cut), 3):
        piece = {"name": "find", "arguments": cut[i : i + 3]}
        event = chunk(
            {"function_call": piece, "tool_calls": [{"index": 0, "id": "c", "function": dict(piece)}]}
        )
        legacy += json.loads(r._event(event, restorers)[6:])["choices"][0]["delta"]["function_call"][
            "arguments"
        ]
    final = json.loads(r._event(chunk({}, "length"), restorers)[6:])["choices"][0]["delta"]
    legacy += final["function_call"]["arguments"]
    assert final["tool_calls"] == [{"index": 0, "function": {"arguments": "[NAME_0a1b"}}]
    assert json.loads(legacy.removesuffix(" [NAME_0a1b")) == MEANT
    assert restorers.counts() == (3, 0)  # counted once, as the tool call's


def test_a_call_named_in_every_fragment_is_named_once_for_the_client() -> None:
    """llama-cpp-python 0.3.36 repeats a call's id, type and name (and the legacy function_call's
    name) in every streamed fragment (llama_chat_format.py, _stream_response_to_function_stream);
    OpenAI sends them in the first fragment only, and the openai SDK's accumulator joins every
    string it gets again. Relayed, the SDK's accumulator reads one id and one name."""
    from openai.lib.streaming._deltas import accumulate_delta

    ex = exchange()
    r = relay(ex)
    restorers = _Restorers(ex.originals)
    acc: dict[object, object] = {}
    for i in range(0, len(ARGUMENTS), 4):
        piece = {"name": "book_appointment", "arguments": ARGUMENTS[i : i + 4]}
        call = {
            "index": 0,
            "id": "call__0_book_appointment_cmpl-1",
            "type": "function",
            "function": dict(piece),
        }
        event = json.loads(r._event(chunk({"function_call": piece, "tool_calls": [call]}), restorers)[6:])
        accumulate_delta(acc, event["choices"][0]["delta"])
    final = json.loads(r._event(chunk({}, "tool_calls"), restorers)[6:])
    accumulate_delta(acc, final["choices"][0]["delta"])
    [call] = acc["tool_calls"]  # type: ignore[misc]
    assert call["id"] == "call__0_book_appointment_cmpl-1" and call["type"] == "function"
    assert call["function"]["name"] == "book_appointment"
    assert json.loads(call["function"]["arguments"]) == MEANT
    legacy = acc["function_call"]
    assert legacy["name"] == "book_appointment" and json.loads(legacy["arguments"]) == MEANT  # type: ignore[index]
