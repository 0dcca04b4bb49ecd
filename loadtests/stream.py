"""Measure one OpenAI-compatible SSE stream: time to first token, inter-token latency, time per
output token, end-to-end latency and output tokens per second.

``measure`` takes the stream's lines paired with the clock reading at which each line was
read, so the arithmetic is tested without a network, and the Locust user feeds it the real
lines as they arrive. A stream that ends without ``finish_reason``, or carries an error event,
is a failure (the gateway sends an error event and no ``[DONE]`` when an upstream breaks off).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass


class StreamFailure(Exception):
    pass


@dataclass(frozen=True)
class StreamMetrics:
    ttft_ms: float
    itl_ms: list[float]  # one gap per pair of consecutive content events
    tpot_ms: float | None  # None with a single output token
    e2e_ms: float
    output_tokens: int
    tokens_per_s: float
    # measured minus true, when the upstream stamps its events (the accuracy check only)
    ttft_error_ms: float | None = None
    itl_error_ms: list[float] | None = None
    prompt_tokens: int | None = None  # usage.prompt_tokens, when the server sends usage

    def as_samples(self) -> dict[str, list[float]]:
        samples = {"ttft_ms": [self.ttft_ms], "itl_ms": list(self.itl_ms), "e2e_ms": [self.e2e_ms],
                   "tokens_per_s": [self.tokens_per_s]}  # fmt: skip
        if self.tpot_ms is not None:
            samples["tpot_ms"] = [self.tpot_ms]
        if self.ttft_error_ms is not None:
            samples["ttft_error_ms"] = [self.ttft_error_ms]
        if self.itl_error_ms is not None:
            samples["itl_error_ms"] = list(self.itl_error_ms)
        return samples


def _code(error: object) -> str:
    """The error event's code, sanitised as ``client.error_code`` does (never its message); an
    error that is not an object, or has no string code: ``error``."""
    code = error.get("code") if isinstance(error, dict) else None
    safe = "".join(c for c in code[:64] if c.isalnum() or c in "_-.") if isinstance(code, str) else ""
    return safe or "error"


def measure(
    started: float, lines: Iterable[tuple[float, str]], *, started_wall: float | None = None
) -> StreamMetrics:
    """*started*: clock reading (seconds) when the request was sent; *lines*: (clock, line).

    With *started_wall* (``time.time()`` read together with *started*) and an upstream that
    stamps its events (``x_sent_at``, same machine, same wall clock), the measurement error is
    computed too: measured TTFT minus the time the first token actually left the upstream, and
    each measured gap minus the gap between the upstream's sends. What is left is how late the
    client noticed the tokens."""
    content_at: list[float] = []
    sent_at: list[float] = []  # the upstream's own stamps of the content events, when it sends them
    finish: str | None = None
    usage_tokens: int | None = None
    prompt_tokens: int | None = None
    ended = started
    for at, raw in lines:
        line = raw.strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        ended = at
        if data == "[DONE]":
            break
        try:
            event = json.loads(data)
        except json.JSONDecodeError:
            raise StreamFailure("malformed SSE event (not JSON)") from None
        if not isinstance(event, dict):
            raise StreamFailure("malformed SSE event (not a JSON object)")
        if "error" in event:
            raise StreamFailure(f"error event in the stream ({_code(event['error'])})")
        if event.get("usage"):
            usage_tokens = event["usage"].get("completion_tokens")
            prompt_tokens = event["usage"].get("prompt_tokens")
        for choice in event.get("choices") or []:
            if (choice.get("delta") or {}).get("content"):
                content_at.append(at)
                if "x_sent_at" in event:
                    sent_at.append(float(event["x_sent_at"]))
            finish = choice.get("finish_reason") or finish
    if finish is None:
        raise StreamFailure("the stream ended without finish_reason (incomplete answer)")
    if not content_at:
        raise StreamFailure("the stream carried no content")
    ttft = (content_at[0] - started) * 1000
    e2e = (ended - started) * 1000
    tokens = usage_tokens or len(content_at)
    itl = [(b - a) * 1000 for a, b in itertools.pairwise(content_at)]
    tpot = (e2e - ttft) / (tokens - 1) if tokens > 1 else None
    ttft_error = itl_error = None
    if started_wall is not None and sent_at and len(sent_at) == len(content_at):
        ttft_error = ttft - (sent_at[0] - started_wall) * 1000
        true_gaps = [(b - a) * 1000 for a, b in itertools.pairwise(sent_at)]
        itl_error = [m - t for m, t in zip(itl, true_gaps, strict=True)]
    rate = tokens / (e2e / 1000) if e2e > 0 else 0.0
    return StreamMetrics(ttft, itl, tpot, e2e, tokens, rate, ttft_error, itl_error, prompt_tokens)
