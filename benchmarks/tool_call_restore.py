"""Restoring a tool-heavy answer: JSON-aware restoration (gateway/phi/jsonrestore.py) against the
plain restorer (gateway/phi/tokenise.py) on the same text, side by side in one run.

    .venv/bin/python -m benchmarks.tool_call_restore [--calls 20] [--fragment 4] [--rounds 21]

The answer: ``--calls`` tool calls (default 20), each with JSON arguments of about 400
characters holding 7 tokens of this request (names with a quote in them, streets written over
two lines, phone numbers, order numbers in strings and one as a JSON number), made by the real
tokeniser under a request key. Streamed: each call's arguments cut into ``--fragment``-character
fragments (default 4), one restorer per call as the relay has (gateway/relay.py _Restorers),
``feed`` per fragment and ``flush`` at the end; plain: one ``restore`` / ``restore_json`` per
call's arguments, as Gateway._restore_answer does. The two restorers alternate round by round
(medians of ``--rounds``), so a shared VM's drift hits both alike. Also counted: how many calls'
arguments each leaves as valid JSON (the plain restorer puts a quote or a newline in unescaped).
Results: printed, and written to benchmarks/results/tool_call_restore.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.phi.jsonrestore import JsonStreamRestorer, restore_json
from gateway.phi.tokenise import StreamRestorer, Tokeniser, TokenMap, TokenScanner, request_key, restore


def answer(calls: int) -> tuple[list[str], dict[str, str]]:
    """(each tool call's arguments as the model writes them, the request's token -> original)."""
    tok, tokens = Tokeniser(request_key(os.urandom(32)), "bench"), TokenMap()

    def token(value: str, category: str) -> str:
        return tok.token_for(value, category, False, tokens)

    out = []
    for i in range(calls):
        name = token(f'Erika "Eri{i}" Müller-Lüdenscheidt', "NAME")
        street = token(f"Studio {i}\nLindsey Spur {i + 1}", "ADDRESS")
        phone = token(f"+49 30 {1_000_000 + 7919 * i}", "PHONE")
        order = token(f"{100_000_000 + 104_729 * i}", "ORDER_ID")
        number = token(f"{200_000_000 + 3_571 * i}", "CUSTOMER_ID")
        arguments = {
            "patient": name,
            "street": street,
            "note": f"Termin für {name}, Rückruf unter {phone}; Bestellung {order} prüfen.",
            "order_ids": [order, "ORD-OPEN"],
            "slots": [f"2026-12-{d:02d}T09:30:00+01:00" for d in range(1, 4)],
            "reason": "Kontrolle nach Zahnreinigung, bitte 30 Minuten einplanen",
            "customer": 0,
        }
        out.append(
            json.dumps(arguments, ensure_ascii=False).replace('"customer": 0', f'"customer": {number}')
        )
    return out, tokens.originals


def streamed(
    kind: type[StreamRestorer], calls: list[list[str]], originals: dict[str, str], scanner: TokenScanner
) -> tuple[int, list[str]]:
    """(ns for the whole answer, each call's restored arguments)."""
    out = []
    t0 = time.perf_counter_ns()
    for fragments in calls:
        restorer = kind(originals, scanner)
        out.append("".join([restorer.feed(f) for f in fragments]) + restorer.flush())
    return time.perf_counter_ns() - t0, out


def one_shot(
    fn: Callable[[str, dict[str, str], TokenScanner], tuple[str, int]],
    calls: list[str],
    originals: dict[str, str],
    scanner: TokenScanner,
) -> tuple[int, list[str]]:
    t0 = time.perf_counter_ns()
    out = [fn(arguments, originals, scanner)[0] for arguments in calls]
    return time.perf_counter_ns() - t0, out


def event_json_us(fragments: list[str], rounds: int = 5) -> float:
    """For scale: us to decode and encode one chunk event carrying a tool-call fragment, which
    the relay does for every event whatever the restorer (gateway/relay.py StreamRelay._event)."""
    events = [
        json.dumps(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "delta": {"tool_calls": [{"index": 0, "function": {"arguments": f}}]},
                        "finish_reason": None,
                    }
                ],
            }
        ).encode()
        for f in fragments
    ]
    encode = json.JSONEncoder(ensure_ascii=False).encode
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for e in events:
            encode(json.loads(e))
        best = min(best, (time.perf_counter_ns() - t0) / len(events) / 1000)
    return best


def valid(texts: list[str]) -> int:
    n = 0
    for text in texts:
        try:
            json.loads(text)
            n += 1
        except ValueError:
            pass
    return n


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--fragment", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=21, help="alternating rounds; medians are reported")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "tool_call_restore.json"))
    args = parser.parse_args()
    calls, originals = answer(args.calls)
    size = args.fragment
    split = [[a[i : i + size] for i in range(0, len(a), size)] for a in calls]
    n_fragments = sum(map(len, split))
    scanner = TokenScanner(originals)  # one per answer, as the relay and _restore_answer have
    times: dict[str, list[int]] = {"stream_plain": [], "stream_json": [], "once_plain": [], "once_json": []}
    outputs: dict[str, list[str]] = {}
    for _ in range(args.rounds + 1):  # the first round warms up and is not counted
        runs = [
            ("stream_plain", streamed(StreamRestorer, split, originals, scanner)),
            ("stream_json", streamed(JsonStreamRestorer, split, originals, scanner)),
            ("once_plain", one_shot(restore, calls, originals, scanner)),
            ("once_json", one_shot(restore_json, calls, originals, scanner)),
        ]
        for label, (ns, out) in runs:
            times[label].append(ns)
            outputs[label] = out
    median_ms = {label: statistics.median(ns[1:]) / 1e6 for label, ns in times.items()}
    assert outputs["stream_json"] == outputs["once_json"] and outputs["stream_plain"] == outputs["once_plain"]
    chars = sum(map(len, calls))
    print(
        f"{args.calls} tool calls, {chars} characters of arguments, {len(originals)} tokens known, "
        f"{sum(len(scanner.find(a)) for a in calls)} in the answer; streamed in {n_fragments} fragments "
        f"of {size} characters; {args.rounds} alternating rounds (medians)"
    )
    print("| restoration | plain (StreamRestorer / restore) ms | JSON-aware ms | JSON / plain |")
    print("|---|---|---|---|")
    results: dict[str, Any] = {"calls": args.calls, "chars": chars, "fragments": n_fragments}
    for label, plain, aware in (
        ("streamed, whole answer", "stream_plain", "stream_json"),
        ("plain answer, whole", "once_plain", "once_json"),
    ):
        ratio = median_ms[aware] / median_ms[plain]
        print(f"| {label} | {median_ms[plain]:.3f} | {median_ms[aware]:.3f} | {ratio:.2f}x |")
        results[label] = {"plain_ms": median_ms[plain], "json_ms": median_ms[aware], "ratio": ratio}
    per_fragment = {k: median_ms[k] * 1000 / n_fragments for k in ("stream_plain", "stream_json")}
    print(
        f"\nper streamed fragment: plain {per_fragment['stream_plain']:.2f} us, "
        f"JSON-aware {per_fragment['stream_json']:.2f} us"
    )
    event_us = event_json_us([f for fragments in split for f in fragments])
    print(f"for scale, the relay's JSON decode and encode of each such event: {event_us:.2f} us")
    ok = {k: valid(outputs[k]) for k in ("stream_plain", "stream_json")}
    print(
        f"tool calls whose restored arguments are valid JSON: plain {ok['stream_plain']}/{args.calls}, "
        f"JSON-aware {ok['stream_json']}/{args.calls}"
    )
    results |= {"per_fragment_us": per_fragment, "event_json_us": event_us, "valid_json_calls": ok}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
