"""PHI filter speed, side by side with Presidio's stock pattern recognisers, in one run.

    .venv/bin/python -m benchmarks.phi_filter [--messages 400]

- Our full filter (context minimisation, known values, pattern + checksum recognisers,
  overlap resolution, FF1 / surrogate tokenisation) per 1 KB synthetic patient message
  (tests/phi_corpus.py with filler text), p50/p99.
- Presidio, regex only: the stock predefined recognisers for the same entities (credit card,
  IBAN, e-mail, phone, date, German KVNR and postcode) run on the same messages without an
  NLP engine; detection only, no tokenisation (so the comparison flatters Presidio).
- FF1 encrypt+decrypt pairs per second (AES-256, radix 10, 10-digit values).
Both paths run with the gateway's egress guard installed (loopback only): neither makes an
outbound call (Presidio's tldextract is pointed at its bundled suffix list).
Targets (PHI filter issue): full filter p50 <= 1 ms per 1 KB, FF1 >= 20,000 pairs/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from gateway import egress
from gateway.phi.context import PatientContext
from gateway.phi.filter import PHIFilter
from gateway.phi.tokenise import Tokeniser
from gateway.policy import load_policies
from tests.phi_corpus import FILLER, generate


def messages(n: int) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for i, item in enumerate(generate(n, seed=3)):
        text = item.text
        fill = FILLER[item.locale]
        j = i
        while len(text) < 1024:
            text += " " + fill[j % len(fill)]
            j += 1
        out.append((text[:1024].rsplit(" ", 1)[0], item.context))
    return out


def percentiles(ns: list[int]) -> dict[str, float]:
    ordered = sorted(ns)
    return {
        "p50_ms": ordered[len(ordered) // 2] / 1e6,
        "p99_ms": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] / 1e6,
        "mean_ms": statistics.fmean(ordered) / 1e6,
    }


def bench_ours(msgs: list[tuple[str, dict[str, Any]]], rounds: int) -> dict[str, float]:
    policy = load_policies()["patient-support"]
    phi = PHIFilter()
    key = os.urandom(32)
    contexts = [PatientContext.model_validate(c) for _, c in msgs]
    times: list[int] = []
    for _ in range(rounds):
        for (text, _), ctx in zip(msgs, contexts, strict=True):
            t0 = time.perf_counter_ns()
            phi.apply(policy, ctx, [text], key, "bench")
            times.append(time.perf_counter_ns() - t0)
    return percentiles(times)


def presidio_recognizers() -> list[Any]:
    import tldextract
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        DateRecognizer,
        DeHealthInsuranceRecognizer,
        DePlzRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        PhoneRecognizer,
    )

    # no public-suffix download: the bundled snapshot only
    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=())
    return [
        CreditCardRecognizer(),
        IbanRecognizer(),
        EmailRecognizer(),
        PhoneRecognizer(supported_regions=("DE", "GB")),
        DateRecognizer(),
        DeHealthInsuranceRecognizer(),
        DePlzRecognizer(),
    ]


def presidio_stock_registry() -> list[Any]:
    """Presidio's default registry for English, every recogniser except the spaCy NER one:
    what "stock Presidio, regex only" means in the PHI filter issue (8.5 ms there)."""
    from presidio_analyzer import RecognizerRegistry

    registry = RecognizerRegistry(supported_languages=["en"])
    registry.load_predefined_recognizers(languages=["en"])
    return [r for r in registry.recognizers if r.__class__.__name__ != "SpacyRecognizer"]


def bench_presidio(
    msgs: list[tuple[str, dict[str, Any]]], rounds: int, recognizers: list[Any] | None = None
) -> dict[str, float]:
    recognizers = recognizers if recognizers is not None else presidio_recognizers()
    times: list[int] = []
    for _ in range(rounds):
        for text, _ in msgs:
            t0 = time.perf_counter_ns()
            for r in recognizers:
                r.analyze(text, r.supported_entities, None)
            times.append(time.perf_counter_ns() - t0)
    return percentiles(times)


def bench_ff1(n: int) -> float:
    tok = Tokeniser(os.urandom(32), "bench")
    values = [f"0{i:09d}" for i in range(n)]
    t0 = time.perf_counter()
    for v in values:
        assert tok.ff1_decrypt(tok.ff1_encrypt(v, "PHONE"), "PHONE") == v
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians are reported")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "phi_filter.json"))
    args = parser.parse_args()
    egress.install(["127.0.0.0/8", "::1/128"], [])
    msgs = messages(args.messages)
    size = statistics.fmean(len(t.encode()) for t, _ in msgs)
    bench_ours(msgs[:20], 1)  # warm-up
    bench_presidio(msgs[:20], 1)
    # alternate the two, round by round, so drift on a shared VM hits both alike
    ours_rounds, presidio_rounds = [], []
    for _ in range(args.rounds):
        ours_rounds.append(bench_ours(msgs, 1))
        presidio_rounds.append(bench_presidio(msgs, 1))
    stock = bench_presidio(msgs[:100], 1, presidio_stock_registry())
    ours = {k: statistics.median(r[k] for r in ours_rounds) for k in ours_rounds[0]}
    presidio = {k: statistics.median(r[k] for r in presidio_rounds) for k in presidio_rounds[0]}
    pairs = bench_ff1(20_000)
    refused = sum(egress.EGRESS_REFUSED.labels(kind=k)._value.get() for k in ("connect", "lookup"))
    print(f"{len(msgs)} messages, {args.rounds} alternating rounds (medians), mean size {size:.0f} bytes")
    print("| path (per 1 KB message) | p50 ms | p99 ms | mean ms |")
    print("|---|---|---|---|")
    for label, r in (
        ("sovereign filter (detect + tokenise)", ours),
        ("Presidio, same entities, pattern recognisers (detect only)", presidio),
        ("Presidio stock registry (en), regex only, 100 messages once", stock),
    ):
        print(f"| {label} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['mean_ms']:.3f} |")
    print(f"\nPresidio (same entities) / sovereign at p50: {presidio['p50_ms'] / ours['p50_ms']:.1f}x")
    print(f"Presidio stock registry / sovereign at p50: {stock['p50_ms'] / ours['p50_ms']:.1f}x")
    print(f"FF1 encrypt+decrypt pairs/s: {pairs:,.0f}")
    print(f"outbound connections refused during the run: {refused:.0f}")
    print(f"target p50 <= 1 ms per 1 KB: {'MET' if ours['p50_ms'] <= 1 else 'MISSED'}")
    print(f"target FF1 >= 20,000 pairs/s: {'MET' if pairs >= 20_000 else 'MISSED'}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {"ours": ours, "presidio_same_entities": presidio, "presidio_stock_en": stock}
    results |= {"ff1_pairs_per_s": pairs, "mean_bytes": size, "egress_refused": refused}
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
