"""The stream arithmetic on scripted event timings (no network)."""

from __future__ import annotations

import json

import pytest

from loadtests.stream import StreamFailure, measure


def event(content: str | None = None, finish: str | None = None, usage: int | None = None) -> str:
    body: dict[str, object] = {
        "choices": [{"delta": {"content": content} if content else {}, "finish_reason": finish}]
    }
    if usage is not None:
        body = {"choices": [], "usage": {"completion_tokens": usage}}
    return "data: " + json.dumps(body)


def test_ttft_itl_tpot_e2e_and_tokens_per_second() -> None:
    lines = [
        (10.000, event()),  # role-only first event: not a token
        (10.200, event("Hal")),
        (10.220, event("lo")),
        (10.250, event(" Welt", finish="stop")),
        (10.251, event(usage=3)),
        (10.260, "data: [DONE]"),
    ]
    m = measure(10.0, lines)
    assert m.ttft_ms == pytest.approx(200)
    assert m.itl_ms == pytest.approx([20, 30])
    assert m.e2e_ms == pytest.approx(260)
    assert m.output_tokens == 3
    assert m.tpot_ms == pytest.approx((260 - 200) / 2)
    assert m.tokens_per_s == pytest.approx(3 / 0.26)


def test_a_stream_without_finish_reason_fails() -> None:
    with pytest.raises(StreamFailure, match="without finish_reason"):
        measure(0.0, [(0.1, event("a")), (0.2, event("b"))])


def test_an_error_event_fails_with_its_code() -> None:
    error = "data: " + json.dumps({"error": {"code": "upstream_incomplete", "message": "m"}})
    with pytest.raises(StreamFailure, match="upstream_incomplete"):
        measure(0.0, [(0.1, event("a")), (0.2, error)])


def test_malformed_and_empty_streams_fail() -> None:
    with pytest.raises(StreamFailure, match="not JSON"):
        measure(0.0, [(0.1, "data: {oops")])
    with pytest.raises(StreamFailure, match="no content"):
        measure(0.0, [(0.1, event(finish="stop")), (0.2, "data: [DONE]")])


def test_a_single_token_has_no_tpot() -> None:
    m = measure(0.0, [(0.1, event("x", finish="stop")), (0.1, "data: [DONE]")])
    assert m.tpot_ms is None and "tpot_ms" not in m.as_samples()
