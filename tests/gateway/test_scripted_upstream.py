"""The scripted upstream (tests/doubles/scripted_upstream.py) is a test double: its answers must follow
the script the request arrived under, as a model server's answer follows the request it got.
A switch of the script while an answer is being written (the fault tests switch from "echo" to
"hang" under load) must not change that answer half-way."""

from __future__ import annotations

import json
import threading
import time

import httpx

from tests.support import Upstream


def test_a_stream_keeps_the_script_it_arrived_under(upstream: Upstream) -> None:
    upstream.script(mode="echo", ttft_ms=1500, capture=True)
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "Erika Mustermann"}]}
    answers: list[str] = []
    thread = threading.Thread(
        target=lambda: answers.append(
            httpx.post(f"{upstream.url}/v1/chat/completions", json=body, timeout=30).text
        )
    )
    thread.start()
    # the request has arrived (its body is captured) and waits its time to first token
    while not upstream.captured():
        assert thread.is_alive(), answers
        time.sleep(0.01)
    upstream.script(mode="hang", hang_s=30)
    thread.join(timeout=30)
    assert answers, "the stream did not end"
    events = [line[len("data: ") :] for line in answers[0].splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(c["delta"].get("content") or "" for e in events[:-1] for c in json.loads(e)["choices"])
    assert text == "Erika Mustermann"
