"""Recall and precision of the name recogniser (gateway/phi/names.py), German and English,
and its cost per 1 KB message side by side with the existing filter, in one run.

    .venv/bin/python -m benchmarks.name_recall [--sentences 2000] [--messages 400]

Corpus (generated here with a fixed seed; tests/unit/test_names.py uses a small sample):
names come from Faker (de_DE, de_AT, de_CH / en_GB, en_US, en_IE), whose lists are curated
census and popular-name lists shipped in the Faker package, independent of the recogniser's
names-dataset (ranked names from social-network profiles) and wordfreq. Sentences are the
kind patients write to a pharmacy or telehealth shop: spouse, doctor, relative, with and
without titles, names at sentence start, in lower case, in lists, hyphenated, with
genitive s; plus sentences with no name at all (capitalised nouns, products, drug names,
cities from Faker, weekdays and months) for precision.

Scores: token level (a word of a gold name span is found if a predicted span covers it;
a predicted word is correct if a gold span covers it), and exact spans, per language.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faker import Faker

LOCALES = {"de": ("de_DE", "de_AT", "de_CH"), "en": ("en_GB", "en_US", "en_IE")}

# {P} a full name, {F} a first name, {L} a surname, {T} a title + surname; {C} a city,
# {D} a drug, {W} a weekday, {M} a month
POSITIVE = {
    "de": [
        "Mein Mann {F} nimmt seit Montag {D} und hat jetzt Ausschlag.",
        "Meine Frau {P} braucht ein neues Rezept für {D}.",
        "Dr. {L} hat mir {D} verschrieben, aber die Packung ist leer.",
        "Frau Dr. {L} meinte, ich soll die Dosis halbieren.",
        "Herr {L} aus der Praxis hat mich an Sie verwiesen.",
        "{P} ist mein Hausarzt, bitte schicken Sie ihm den Befund.",
        "Können Sie das Paket an {P} schicken? Das ist meine Nachbarin.",
        "Meine Tochter {F} ist allergisch gegen {D}.",
        "Ich heiße {P} und habe am {W} bestellt.",
        "Viele Grüße, {P}",
        "Liebe Grüße {F}",
        "Mein Schwiegervater {P} wohnt bei uns in {C}.",
        "Prof. {P} hat die Behandlung übernommen.",
        "Schwester {F} hat mir gesagt, dass ich anrufen soll.",
        "Bitte geben Sie das Rezept nur {P} oder {P} mit.",
        "Unsere Kinder {F}, {F} und {F} brauchen alle den Impfpass.",
        "{F} hat gestern Fieber bekommen, was soll ich tun?",
        "Die Bestellung ist für {P}, nicht für mich.",
        "Mein Name ist {P}, ich bin Kundin seit Jahren.",
        "Bei Frau {L} in der Apotheke war es günstiger.",
        "Der Termin bei Dr. {P} wurde auf {M} verschoben.",
        "hallo, hier ist {p}, ich wollte nach meiner bestellung fragen",
        "Mein Bruder {P} kann das Medikament abholen.",
        "Ich pflege meine Mutter {P}, sie ist 84.",
        "Laut {P} ist {D} besser verträglich.",
    ],
    "en": [
        "My husband {F} has been taking {D} since {W} and now has a rash.",
        "My wife {P} needs a new prescription for {D}.",
        "Dr {L} prescribed {D} but the pack is empty.",
        "Dr. {P} said I should halve the dose.",
        "Mr {L} from the surgery referred me to you.",
        "{P} is my GP, please send the results to them.",
        "Could you send the parcel to {P}? She is my neighbour.",
        "My daughter {F} is allergic to {D}.",
        "My name is {P} and I ordered on {W}.",
        "Best wishes, {P}",
        "Thanks, {F}",
        "My father-in-law {P} lives with us in {C}.",
        "Prof. {P} has taken over the treatment.",
        "Nurse {F} told me to call you.",
        "Please only hand the prescription to {P} or {P}.",
        "Our children {F}, {F} and {F} all need the vaccination card.",
        "{F} got a fever yesterday, what should I do?",
        "The order is for {P}, not for me.",
        "Hi, this is {P}, I have been a customer for years.",
        "Mrs {L} at the pharmacy said it would be cheaper.",
        "The appointment with Dr. {P} was moved to {M}.",
        "hello, this is {p}, i wanted to ask about my order",
        "My brother {P} can collect the medicine.",
        "I look after my mother {P}, she is 84.",
        "According to {P}, {D} is better tolerated.",
    ],
}
NEGATIVE = {
    "de": [
        "Ich habe am {W} ein Rezept für {D} eingereicht.",
        "Die Apotheke in {C} hat {D} nicht vorrätig.",
        "Termin verschoben auf {M}, bitte Bescheid geben.",
        "Bitte schicken Sie mir {D} 400 mg, 20 Tabletten.",
        "Meine Krankenkasse zahlt {D} nicht mehr.",
        "Wir fahren im {M} nach {C}, reicht der Vorrat?",
        "Die Lieferung nach {C} kam am {W} beschädigt an.",
        "Kopfschmerzen, Übelkeit und Schwindel seit dem Wochenende.",
        "Der Hausarzt hat gesagt, ich soll Blutdruck messen.",
        "Gibt es {D} auch als Saft für Kinder?",
        "Frohe Ostern und vielen Dank für die schnelle Lieferung!",
        "Sonnencreme, Pflaster und Fieberthermometer bitte in eine Tüte.",
        "Mein Mann hat Rückenschmerzen und nimmt {D}.",
        "Das Blutzuckermessgerät zeigt seit {W} Fehler an.",
        "Kann ich {D} und {D} zusammen einnehmen?",
        "Die Praxis in {C} ist im {M} geschlossen.",
        "Vielen Dank, die Beratung war sehr hilfreich.",
        "Meine Tochter hat Heuschnupfen, was empfehlen Sie?",
    ],
    "en": [
        "I submitted a prescription for {D} on {W}.",
        "The pharmacy in {C} does not have {D} in stock.",
        "Appointment moved to {M}, please let me know.",
        "Please send me {D} 400 mg, 20 tablets.",
        "My insurance no longer covers {D}.",
        "We are travelling to {C} in {M}, will the supply last?",
        "The delivery to {C} arrived damaged on {W}.",
        "Headache, Nausea and Dizziness since the Weekend.",
        "The GP said I should measure my Blood Pressure.",
        "Is {D} also available as a syrup for Children?",
        "Happy Easter and many Thanks for the quick Delivery!",
        "Sun Cream, Plasters and a Fever Thermometer in one bag please.",
        "My husband has back pain and takes {D}.",
        "The Blood Glucose Meter has shown an error since {W}.",
        "Can I take {D} and {D} together?",
        "The surgery in {C} is closed in {M}.",
        "Thank you, the advice was very helpful.",
        "My daughter has hay fever, what do you recommend?",
    ],
}
DRUGS = [
    "Ibuprofen", "Paracetamol", "Aspirin", "Voltaren", "Novalgin", "Metformin", "Ramipril",
    "Pantoprazol", "Omeprazole", "Amoxicillin", "Simvastatin", "L-Thyroxin", "Bisoprolol",
    "Cetirizin", "Loratadine", "Nasic", "Sinupret", "Gelomyrtol", "Bepanthen", "Fenistil",
    "Lorano", "Dolormin", "Thomapyrin", "Grippostad", "Wick MediNait", "Buscopan", "Iberogast",
    "Calpol", "Lemsip", "Gaviscon", "Nurofen", "Sudafed", "Rennie", "Magnesium Verla",
]  # fmt: skip
WEEKDAYS = {
    "de": ["Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag"],
    "en": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
}
MONTHS = {
    "de": ["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "Oktober"],
    "en": ["January", "February", "March", "April", "May", "June", "July", "August", "October"],
}


@dataclass
class Sentence:
    text: str
    lang: str
    gold: list[tuple[int, int]]  # name spans, titles excluded


def _fill(template: str, lang: str, fk: Faker, rng: random.Random) -> Sentence:
    out, gold, pos = [], [], 0
    i = 0
    while i < len(template):
        if template[i] == "{":
            j = template.index("}", i)
            slot = template[i + 1 : j]
            name = ""
            if slot in ("P", "p"):
                name = f"{fk.first_name()} {fk.last_name()}"
                if rng.random() < 0.1:
                    name = f"{fk.first_name()} {fk.last_name()}-{fk.last_name()}"
                if slot == "p":
                    name = name.lower()
            elif slot == "F":
                name = fk.first_name()
            elif slot == "L":
                name = fk.last_name()
            if name:
                gold.append((pos, pos + len(name)))
                piece = name
            elif slot == "C":
                piece = fk.city()
            elif slot == "D":
                piece = rng.choice(DRUGS)
            elif slot == "W":
                piece = rng.choice(WEEKDAYS[lang])
            else:
                piece = rng.choice(MONTHS[lang])
            out.append(piece)
            pos += len(piece)
            i = j + 1
        else:
            out.append(template[i])
            pos += 1
            i += 1
    return Sentence("".join(out), lang, gold)


def corpus(n: int, seed: int = 20) -> list[Sentence]:
    """*n* sentences per language, two in three with names."""
    rng = random.Random(seed)
    out: list[Sentence] = []
    for lang, locales in LOCALES.items():
        fakers = []
        for k, loc in enumerate(locales):
            fk = Faker(loc)
            fk.seed_instance(seed * 10 + k)
            fakers.append(fk)
        for _ in range(n):
            fk = rng.choice(fakers)
            pool = POSITIVE[lang] if rng.random() < 2 / 3 else NEGATIVE[lang]
            out.append(_fill(rng.choice(pool), lang, fk, rng))
    return out


def _words(text: str, spans: list[tuple[int, int]]) -> set[int]:
    """Start offsets of the words (letters) inside *spans*."""
    starts = set()
    for a, b in spans:
        k = a
        while k < b:
            if text[k].isalpha() and (k == 0 or not text[k - 1].isalpha()):
                starts.add(k)
            k += 1
    return starts


def score(sentences: list[Sentence], predict: Any) -> dict[str, dict[str, float]]:
    """Token- and span-level recall and precision per language."""
    out: dict[str, dict[str, float]] = {}
    for lang in sorted({s.lang for s in sentences}):
        tp = fn = fp = 0
        s_tp = s_gold = s_pred = 0
        for s in (x for x in sentences if x.lang == lang):
            pred = [(sp.start, sp.end) for sp in predict(s.text)]
            g, p = _words(s.text, s.gold), _words(s.text, pred)
            tp += len(g & p)
            fn += len(g - p)
            fp += len(p - g)
            s_tp += len(set(s.gold) & set(pred))
            s_gold += len(s.gold)
            s_pred += len(pred)
        out[lang] = {
            "token_recall": tp / max(1, tp + fn),
            "token_precision": tp / max(1, tp + fp),
            "span_recall": s_tp / max(1, s_gold),
            "span_precision": s_tp / max(1, s_pred),
            "gold_tokens": tp + fn,
            "sentences": sum(1 for x in sentences if x.lang == lang),
        }
    return out


def errors(sentences: list[Sentence], predict: Any, limit: int = 40) -> list[str]:
    lines = []
    for s in sentences:
        pred = [(sp.start, sp.end) for sp in predict(s.text)]
        g, p = _words(s.text, s.gold), _words(s.text, pred)
        if g != p:
            missed = [s.text[k : k + 20].split()[0] for k in sorted(g - p)]
            extra = [s.text[k : k + 20].split()[0] for k in sorted(p - g)]
            lines.append(f"{s.lang} missed={missed} extra={extra} :: {s.text}")
    return lines[:limit]


def bench_cost(n_messages: int, rounds: int) -> dict[str, Any]:
    """p50 per 1 KB message: the existing filter alone, the recogniser alone, the filter with
    the recogniser as a plug-in; alternating rounds, medians."""
    import os

    from benchmarks.phi_filter import messages, percentiles
    from gateway.phi.context import PatientContext
    from gateway.phi.filter import PHIFilter
    from gateway.phi.names import NameRecognizer
    from gateway.policy import load_policies

    msgs = messages(n_messages)
    policy = load_policies()["patient-support"]
    contexts = [PatientContext.model_validate(c) for _, c in msgs]
    rec = NameRecognizer()
    plain, with_names = PHIFilter(), PHIFilter([rec])
    key = os.urandom(32)

    def run(kind: str) -> dict[str, float]:
        times = []
        for (text, _), ctx in zip(msgs, contexts, strict=True):
            t0 = time.perf_counter_ns()
            if kind == "filter":
                plain.apply(policy, ctx, [text], key, "bench")
            elif kind == "names":
                list(rec.analyze(text))
            else:
                with_names.apply(policy, ctx, [text], key, "bench")
            times.append(time.perf_counter_ns() - t0)
        return percentiles(times)

    for kind in ("filter", "names", "both"):
        run(kind)  # warm-up
    rounds_out: dict[str, list[dict[str, float]]] = {"filter": [], "names": [], "both": []}
    for _ in range(rounds):
        for kind in rounds_out:
            rounds_out[kind].append(run(kind))
    result: dict[str, Any] = {
        kind: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for kind, rs in rounds_out.items()
    }
    result["mean_bytes"] = statistics.fmean(len(t.encode()) for t, _ in msgs)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sentences", type=int, default=2000, help="per language")
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20, help="20: the seed the rules were tuned on")
    parser.add_argument("--errors", type=int, default=0, help="print this many mistakes")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "name_recall.json"))
    args = parser.parse_args()

    from gateway.phi.names import NameRecognizer, load_data

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    load_data()
    load_s = time.perf_counter() - t0
    rss_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    rec = NameRecognizer()
    sents = corpus(args.sentences, args.seed)
    scores = score(sents, rec.analyze)
    print(f"{len(sents)} sentences (seed {args.seed}), lexicon load {load_s:.2f} s, +{rss_mb:.0f} MiB RSS")
    print("| language | token recall | token precision | span recall | span precision | gold name tokens |")
    print("|---|---|---|---|---|---|")
    for lang, r in scores.items():
        print(
            f"| {lang} | {r['token_recall']:.1%} | {r['token_precision']:.1%} | "
            f"{r['span_recall']:.1%} | {r['span_precision']:.1%} | {r['gold_tokens']:.0f} |"
        )
    for line in errors(sents, rec.analyze, args.errors):
        print(line)
    cost = bench_cost(args.messages, args.rounds)
    print(f"\n{args.messages} messages, {args.rounds} rounds (medians), mean {cost['mean_bytes']:.0f} bytes")
    print("| path (per 1 KB message) | p50 ms | p99 ms | mean ms |")
    print("|---|---|---|---|")
    for label, kind in (
        ("existing filter (detect + tokenise)", "filter"),
        ("NameRecognizer.analyze alone", "names"),
        ("filter with NameRecognizer as plug-in", "both"),
    ):
        r = cost[kind]
        print(f"| {label} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['mean_ms']:.3f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"scores": scores, "cost": cost, "load_s": load_s, "rss_mib": rss_mb}, indent=2)
    )


if __name__ == "__main__":
    main()
