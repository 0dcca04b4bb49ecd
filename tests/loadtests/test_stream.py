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


def test_stamped_events_give_the_measurement_error_against_the_truth() -> None:
    def stamped(content: str, sent: float, finish: str | None = None) -> str:
        body = {"choices": [{"delta": {"content": content}, "finish_reason": finish}],
                "x_received_at": 1000.0, "x_sent_at": sent}  # fmt: skip
        return "data: " + json.dumps(body)

    # request sent at wall 1000.0 (monotonic 5.0); the client noticed each event 1.5 ms after it left
    lines = [(5.2015, stamped("a", 1000.2)), (5.2215, stamped("b", 1000.22, "stop")), (5.222, "data: [DONE]")]
    m = measure(5.0, lines, started_wall=1000.0)
    assert m.ttft_error_ms == pytest.approx(1.5)
    assert m.itl_error_ms == pytest.approx([0.0], abs=1e-6)
    assert set(m.as_samples()) >= {"ttft_error_ms", "itl_error_ms"}
    assert (
        measure(0.0, [(0.1, event("x", finish="stop"))], started_wall=1.0).ttft_error_ms is None
    )  # unstamped
    assert measure(5.0, lines).ttft_error_ms is None  # no wall-clock start: no error either


def test_the_prompt_tokens_of_the_usage_event_are_kept() -> None:
    usage = "data: " + json.dumps({"choices": [], "usage": {"completion_tokens": 2, "prompt_tokens": 41}})
    lines = [(1.1, event("a")), (1.2, event("b", finish="stop")), (1.3, usage), (1.4, "data: [DONE]")]
    m = measure(1.0, lines)
    assert m.prompt_tokens == 41 and m.output_tokens == 2


def test_an_error_events_code_is_sanitised_and_a_malformed_one_still_fails() -> None:
    """The code is the gateway's or upstream's text: only its safe characters reach the report
    (as client.error_code does); an error that is not an object is a failure, not a crash."""
    hostile = "data: " + json.dumps({"error": {"code": "bad code\n<script>secret", "message": "m"}})
    with pytest.raises(StreamFailure) as caught:
        measure(0.0, [(0.1, event("a")), (0.2, hostile)])
    assert str(caught.value) == "error event in the stream (badcodescriptsecret)"
    for error in ("boom", ["x"], None, {"code": 7}):
        line = "data: " + json.dumps({"error": error})
        with pytest.raises(StreamFailure, match=r"error event in the stream \(error\)"):
            measure(0.0, [(0.1, event("a")), (0.2, line)])
    with pytest.raises(StreamFailure, match="not a JSON object"):
        measure(0.0, [(0.1, "data: [1, 2]")])
