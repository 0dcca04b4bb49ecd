"""Filtering a tool-heavy request: the gateway's request side (issue #26) on a conversation with
tool calls and JSON tool results, against the same information as plain text, in one run.

    .venv/bin/python -m benchmarks.tool_request_filter [--iterations 40] [--rounds 7] [--no-names]

What is timed is the code ``Gateway.chat`` runs for a request's texts (gateway/app.py):
``gather_texts`` (tool results and tool-call arguments walked as JSON, gateway/phi/jsontexts.py),
the one ``Gateway.filter_request`` (one ``PHIFilter.apply`` over every text, with the patient
context; the name recogniser on, as the gateway's default ``phi_names``), ``untyped`` (the
restoration map) and ``Gathered.put_back`` (the JSON written again). Three requests, same
patient context, policy order-support (the widest ``tokenise`` list of the shipped policies):

- **tools**: a user turn, then three assistant turns each with one tool call (arguments holding
  the patient's name, order id, dates) and its tool result as JSON: an order lookup (name,
  address with a newline, phone, e-mail, ten order lines), a second order's delivery history,
  and a practice calendar with twenty free slots; a last user turn. (No shipped policy offers
  both lookup_order and find_free_slots; tool names are checked before filtering and do not
  change its cost.)
- **plain**: the same values as one user message of plain text, ``key: value`` lines (3,488
  characters), padded with prose to the same number of characters as the tool request's texts.
- **no walk**: the tool request with every tool result and every call's arguments filtered as
  one plain text each (``Gathered.add`` without ``json_aware``): what the filter would cost
  without the JSON walk (and what it would miss: a JSON-escaped value).

The three alternate within each round; CPU time (``time.process_time``) of ``--iterations``
requests per variant and round, medians of ``--rounds``. The JSON walk alone (parse and walk in
``gather_texts``, rebuild in ``put_back``) is timed the same way. Results: printed, and written to
benchmarks/results/tool_request_filter.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, cast

from gateway.app import Gateway, gather_texts, untyped
from gateway.phi.context import PatientContext
from gateway.phi.filter import PHIFilter, recognizers
from gateway.phi.jsontexts import Gathered
from gateway.phi.tokenise import request_key
from gateway.policy import UseCasePolicy, load_policies
from gateway.schemas import ChatRequest

CONTEXT: dict[str, Any] = {
    "name": "Erika Müller-Lüdenscheidt",
    "date_of_birth": "1968-03-14",
    "customer_id": "47110815",
    "email": "erika.mueller@example.de",
    "phone": "+49 30 1234567",
    "address": {"street": "Studio 0\nLindsey Spur 12", "postcode": "10115", "city": "Berlin"},
    "order_ids": ["100023417", "100023988"],
}

ORDER = {
    "order_id": "100023417",
    "status": "shipped",
    "placed": "2026-11-20",
    "customer": {
        "name": "Erika Müller-Lüdenscheidt",
        "customer_id": 47110815,
        "phone": "+49 30 1234567",
        "email": "erika.mueller@example.de",
    },
    "delivery": {
        "name": "Erika Müller-Lüdenscheidt",
        "street": "Studio 0\nLindsey Spur 12",
        "postcode": "10115",
        "city": "Berlin",
        "country": "DE",
    },
    "lines": [
        {
            "sku": f"MED-{4100 + 17 * i}",
            "name": name,
            "qty": 1 + i % 3,
            "price": f"{4.95 + 2.5 * i:.2f}",
            "status": "shipped" if i % 4 else "backordered",
        }
        for i, name in enumerate(
            [
                "Blutdruckmessgerät Oberarm",
                "Teststreifen Blutzucker 50 Stück",
                "Lanzetten 100 Stück",
                "Kompressionsstrümpfe Klasse 2",
                "Verbandpäckchen steril",
                "Fieberthermometer digital",
                "Inhalationsgerät Kompressor",
                "Pflasterstrips sensitiv",
                "Desinfektionsspray 250 ml",
                "Einmalhandschuhe Nitril M",
            ]
        )
    ],
    "total": "187.40",
}

DELIVERY = {
    "order_id": "100023988",
    "carrier": "DHL",
    "tracking": "00340434161094042557",
    "recipient": "Erika Müller-Lüdenscheidt",
    "address": "Studio 0\nLindsey Spur 12, 10115 Berlin",
    "events": [
        {"at": f"2026-11-{21 + i}T{8 + i}:15:00+01:00", "where": where, "what": what}
        for i, (where, what) in enumerate(
            [
                ("Leipzig", "eingeliefert"),
                ("Berlin-Mitte", "im Zustellfahrzeug"),
                ("Berlin-Mitte", "Zustellversuch, Empfängerin nicht angetroffen"),
                ("Berlin-Mitte", "in der Filiale zur Abholung"),
            ]
        )
    ],
    "contact_phone": "+49 30 1234567",
}

CALENDAR = {
    "practice": "Praxis am Park",
    "practitioner": "Dr. Jonas Brandt",
    "patient": "Erika Müller-Lüdenscheidt",
    "free_slots": [
        {
            "slot_id": f"s-{101 + i}",
            "start": f"2026-12-{2 + i // 4:02d}T{9 + 2 * (i % 4):02d}:00:00+01:00",
            "minutes": 30,
            "room": f"Raum {1 + i % 3}",
        }
        for i in range(20)
    ],
}

CALLS = [
    ("lookup_order", {"order_id": "100023417", "customer": "Erika Müller-Lüdenscheidt"}, ORDER),
    ("lookup_order", {"order_id": "100023988", "customer": "Erika Müller-Lüdenscheidt"}, DELIVERY),
    (
        "find_free_slots",
        {"date_from": "2026-12-02", "date_to": "2026-12-06", "practitioner": "Dr. Jonas Brandt"},
        CALENDAR,
    ),
]

ASK = "Wo sind meine Bestellungen 100023417 und 100023988? Ich bin Erika Müller-Lüdenscheidt."
FOLLOW_UP = "Danke. Und bitte einen Termin nächste Woche bei Dr. Brandt, vormittags."
FILLER = "Die Kundin ruft wegen ihrer Lieferung an und möchte außerdem einen Kontrolltermin vereinbaren. "


def tool_request() -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": ASK}]
    for i, (name, arguments, result) in enumerate(CALLS):
        call_id = f"call_{i}"
        function = {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": call_id, "type": "function", "function": function}],
            }
        )
        content = json.dumps(result, ensure_ascii=False)
        messages.append({"role": "tool", "tool_call_id": call_id, "content": content})
    messages.append({"role": "user", "content": FOLLOW_UP})
    return {"messages": messages, "sovereign": {"context": CONTEXT}}


def lines(value: Any, key: str = "") -> list[str]:
    """*value*'s scalars as ``key: value`` lines (a newline in a value stays a newline)."""
    if isinstance(value, dict):
        return [line for k, v in value.items() for line in lines(v, k)]
    if isinstance(value, list):
        return [line for v in value for line in lines(v, key)]
    return [f"{key}: {value}"]


def plain_request(size: int) -> dict[str, Any]:
    """The tool request's information, every value of it, as one user text of *size* characters
    (padded with prose)."""
    parts = [ASK]
    for name, arguments, result in CALLS:
        parts += [f"{name}: " + ", ".join(lines(arguments)), *lines(result)]
    parts.append(FOLLOW_UP)
    text = "\n".join(parts)
    if len(text) > size:
        raise ValueError(f"the plain rendering has {len(text)} characters, more than {size}")
    while len(text) < size:
        text += " " + FILLER
    return {"messages": [{"role": "user", "content": text[:size]}], "sovereign": {"context": CONTEXT}}


#: ``gather_texts`` with every text filtered as one plain text (no JSON walk)
gather_no_walk = partial(gather_texts, walk=False)


Gather = Callable[[ChatRequest], tuple[Gathered, list[int | None], dict[int, list[int]], list[int]]]


class _Filtering:
    """What ``Gateway.filter_request`` reads of the gateway: its one PHIFilter (``self.phi``)."""

    def __init__(self, phi: PHIFilter) -> None:
        self.phi = phi


def request_side(
    gateway: Gateway, policy: UseCasePolicy, body: ChatRequest, gather: Gather, data_key: bytes
) -> tuple[list[str], int]:
    """As ``Gateway.chat``: (the texts as they go upstream, the number of values tokenised)."""
    context = body.sovereign.context if body.sovereign else None
    gathered, _, _, _ = gather(body)
    key = request_key(data_key)
    filtered = Gateway.filter_request(
        gateway, policy, context, gathered.texts, key, "bench", gathered.splits()
    )
    if filtered.tokens.originals:
        untyped(filtered.tokens.originals, gathered.texts, context)
    return gathered.put_back(filtered.texts), sum(filtered.tokens.tokenised.values())


def cpu_per_request(fn: Callable[[], object], iterations: int) -> float:
    """ms of CPU per call, *iterations* calls."""
    t0 = time.process_time()
    for _ in range(iterations):
        fn()
    return (time.process_time() - t0) / iterations * 1000


def walk_only(body: ChatRequest) -> None:
    """The JSON walk alone: parse and walk every JSON text, write it back unchanged."""
    gathered, _, _, _ = gather_texts(body)
    gathered.put_back(gathered.texts)


def is_json(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def text_chars(body: ChatRequest) -> int:
    gathered, _, _, _ = gather_no_walk(body)
    return sum(map(len, gathered.texts))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=40, help="requests per variant and round")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds; medians are reported")
    parser.add_argument("--no-names", action="store_true", help="without the name recogniser")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "tool_request_filter.json"))
    args = parser.parse_args()
    policy = load_policies()["order-support"]
    # Gateway.filter_request reads only self.phi: the gateway's own method, called on a stand-in
    # holding the filter the gateway builds (a whole Gateway needs OpenBao and an audit trail)
    gateway = cast(Gateway, _Filtering(PHIFilter(recognizers(not args.no_names))))
    data_key = os.urandom(32)
    tools = ChatRequest.model_validate(tool_request())
    size = text_chars(tools)
    plain = ChatRequest.model_validate(plain_request(size))
    assert text_chars(plain) == size
    PatientContext.model_validate(CONTEXT)
    variants: dict[str, tuple[ChatRequest, Gather]] = {
        "tools": (tools, gather_texts),
        "plain": (plain, gather_texts),
        "no_walk": (tools, gather_no_walk),
    }
    found, still_json = {}, {}
    for label, (body, gather) in variants.items():
        sent, found[label] = request_side(gateway, policy, body, gather, data_key)
        leaked = [v for v in ("Müller", "Lindsey", "1234567", "47110815", "100023417") if v in "".join(sent)]
        still_json[label] = sum(is_json(t) for t in sent)
        print(
            f"{label}: {found[label]} values tokenised; in clear upstream: {leaked or 'none of the probes'}; "
            f"texts that are JSON objects after filtering: {still_json[label]}"
        )
    times: dict[str, list[float]] = {label: [] for label in [*variants, "walk"]}
    for r in range(args.rounds + 1):  # the first round warms up and is not counted
        for label, (body, gather) in variants.items():
            ms = cpu_per_request(
                partial(request_side, gateway, policy, body, gather, data_key), args.iterations
            )
            if r:
                times[label].append(ms)
        ms = cpu_per_request(lambda: walk_only(tools), args.iterations)
        if r:
            times["walk"].append(ms)
    med = {label: statistics.median(ms) for label, ms in times.items()}
    gathered, _, _, _ = gather_texts(tools)
    n_texts = {"tools": len(gathered.texts), "plain": len(gather_texts(plain)[0].texts)}
    n_texts["no_walk"] = len(gather_no_walk(tools)[0].texts)
    distinct = len(set(gathered.texts))
    print(
        f"\n{size} characters of text per request (the tool request's JSON as sent); texts the filter "
        f"gets: tools {n_texts['tools']} ({distinct} distinct: keys repeat), plain {n_texts['plain']}, "
        f"no walk {n_texts['no_walk']}; "
        f"name recogniser {'off' if args.no_names else 'on'}; {args.iterations} requests x "
        f"{args.rounds} alternating rounds, CPU time (medians)"
    )
    print("| request | CPU ms per request | / plain | values tokenised |")
    print("|---|---|---|---|")
    rows = (
        ("tools", "tool-heavy (JSON walked, as the gateway does)"),
        ("plain", "same information as plain user text, same size"),
        ("no_walk", "tool-heavy, tool results and arguments as plain text (no walk)"),
    )
    for label, title in rows:
        print(f"| {title} | {med[label]:.3f} | {med[label] / med['plain']:.2f}x | {found[label]} |")
    walk_share = med["walk"] / med["tools"]
    print(
        f"\nJSON walk alone (parse + walk + write back): {med['walk']:.3f} ms, {walk_share:.1%} of the "
        f"tool request; tools / no walk: {med['tools'] / med['no_walk']:.2f}x "
        f"(+{med['tools'] - med['no_walk']:.3f} ms: the walk and the filter's per-text cost over "
        f"{n_texts['tools']} texts instead of {n_texts['no_walk']})"
    )
    results = {
        "chars": size,
        "texts": n_texts,
        "distinct_texts_tools": distinct,
        "names": not args.no_names,
        "iterations": args.iterations,
        "rounds": args.rounds,
        "cpu_ms_median": med,
        "cpu_ms_rounds": times,
        "values_tokenised": found,
        "json_objects_after_filtering": still_json,
        "ratio_tools_plain": med["tools"] / med["plain"],
        "ratio_no_walk_plain": med["no_walk"] / med["plain"],
        "ratio_tools_no_walk": med["tools"] / med["no_walk"],
        "walk_share_of_tools": walk_share,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
