"""What the PHI filter's tokenisation does to retrieval quality with the local embedding model
(all-MiniLM-L6-v2 on llama.cpp, infra/local/embedding_model.py), measured.

    .venv/bin/python -m benchmarks.retrieval_quality [--patients 60] [--seed 7] [--url URL]

Corpus (generated here, fictitious, Faker de_DE / en_GB with a fixed seed): each patient has two
notes as a support team writes them, German or English, on two of twenty topics (back pain after a
fall, a penicillin allergy, test strips to reorder, ...), each naming the patient (full name, or
title and surname), the date of birth, the KVNR, a date and a phone number. Queries, three kinds:

- *name + topic*: names the patient and the topic ("Rückenschmerzen von Frau Schmidt"); one
  relevant note;
- *topic only*: the topic in other words, no identifier ("Who had back pain after a fall?");
  relevant: every note on the topic;
- *name only*: the patient and nothing else ("Notizen zu Anna Schmidt"); relevant: the patient's
  two notes.

Conditions: (i) raw notes and raw queries; (ii) notes and queries both filtered by the gateway's
PHI filter (gateway.phi.filter.PHIFilter.apply, the patient-support policy, the gateway's name
recogniser) with one TENANT-scoped key, as issue #27 stores and searches (the same value gets the
same token in every request of the tenant): each note with its patient's context, each query that
names a patient with that patient's context (a memory search runs inside a conversation about
the patient); (iii) as (ii), the queries filtered without any context (the recogniser and the
patterns only); (iv) as (ii), with each surrogate token shown to the model as its category
(``[NAME_95d1f5]`` -> ``NAME``) in what is embedded: not what the gateway does, measured as an
option (the model reads a token as a handful of hex word pieces).

Ranking by cosine over all notes of the corpus (no pseudonym filter: that is the store's, and
it would make *name only* trivial). Scores per query kind: recall@1 and recall@5 (a relevant
note among the first 1 or 5), MRR (the reciprocal rank of the first relevant note).

The embeddings come from the real local embedding server: ``--url`` of a running one (the local
stack's, http://127.0.0.1:8082), else one started here as ``sovereign up`` starts it, on a free
port, with the GGUF converted (or reused) in ``--models`` (default: the local stack's models
folder).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from faker import Faker

# (topic, German note, English note, German topic query, English topic query, German keyword
# phrase, English keyword phrase); {who} the patient as the note names them, {dob} {kvnr} {day}
# {phone}
TOPICS = [
    ("back pain",
     "{who} (geb. {dob}, KVNR {kvnr}) meldet sich wegen starker Rückenschmerzen nach einem Sturz auf "
     "der Treppe am {day}. Bittet um Rückruf unter {phone}.",
     "{who} (born {dob}, KVNR {kvnr}) called about severe back pain after falling down the stairs on "
     "{day}. Please call back on {phone}.",
     "Wer ist gestürzt und hat jetzt Schmerzen im Rücken?", "Who fell and now has pain in the lower back?",
     "Rückenschmerzen nach dem Sturz", "back pain after the fall"),
    ("penicillin allergy",
     "{who}, geboren {dob}, KVNR {kvnr}: Allergie gegen Penicillin bekannt, bitte bei der Bestellung "
     "vom {day} beachten. Tel. {phone}.",
     "{who}, date of birth {dob}, KVNR {kvnr}: known penicillin allergy, please check the order of "
     "{day}. Phone {phone}.",
     "Welche Kundin verträgt kein Antibiotikum?", "Which customer cannot take antibiotics?",
     "Penicillin-Allergie", "penicillin allergy"),
    ("test strips",
     "{who} (geb. {dob}, KVNR {kvnr}) möchte Blutzucker-Teststreifen nachbestellen, die letzten "
     "kamen am {day}. Erreichbar unter {phone}.",
     "{who} (born {dob}, KVNR {kvnr}) wants to reorder blood glucose test strips, the last box "
     "arrived on {day}. Reachable on {phone}.",
     "Diabetiker braucht neue Streifen für das Messgerät", "diabetic needs new strips for the meter",
     "Teststreifen", "glucose test strips"),
    ("compression stockings",
     "{who}, geb. {dob}, KVNR {kvnr}: Kompressionsstrümpfe in Größe 3 passen nicht, Umtausch "
     "gewünscht (Lieferung {day}). Rückruf {phone}.",
     "{who}, born {dob}, KVNR {kvnr}: compression stockings size 3 do not fit, wants an exchange "
     "(delivered {day}). Call back {phone}.",
     "Strümpfe zu eng, Umtausch", "stockings too tight, exchange",
     "Kompressionsstrümpfe", "compression stockings"),
    ("late delivery",
     "{who} (geb. {dob}, KVNR {kvnr}) fragt, wo das Paket bleibt: bestellt am {day}, bis heute nicht "
     "angekommen. Tel. {phone}.",
     "{who} (born {dob}, KVNR {kvnr}) asks where the parcel is: ordered on {day}, still not arrived. "
     "Phone {phone}.",
     "Paket ist nicht angekommen", "the parcel never arrived",
     "verspätete Lieferung", "late delivery"),
    ("wrong inhaler",
     "{who}, geboren {dob}, KVNR {kvnr}: falsches Asthmaspray geliefert am {day}, bestellt war ein "
     "anderes Inhalationsgerät. Rückruf {phone}.",
     "{who}, born {dob}, KVNR {kvnr}: the wrong asthma inhaler was delivered on {day}, a different "
     "one was ordered. Call {phone}.",
     "Asthma Spray verwechselt", "asthma spray mixed up",
     "falsches Asthmaspray", "wrong inhaler"),
    ("insulin pens",
     "{who} (geb. {dob}, KVNR {kvnr}) hat ein neues Rezept für Insulin-Pens, Einlösung am {day} "
     "geplant. Bitte melden unter {phone}.",
     "{who} (born {dob}, KVNR {kvnr}) has a new prescription for insulin pens, to be filled on "
     "{day}. Please ring {phone}.",
     "Rezept für Insulin einlösen", "fill an insulin prescription",
     "Insulin-Rezept", "insulin pens prescription"),
    ("ibuprofen and blood thinners",
     "{who}, geb. {dob}, KVNR {kvnr}: nimmt Blutverdünner und fragt am {day}, ob Ibuprofen dazu "
     "erlaubt ist. Tel. {phone}.",
     "{who}, born {dob}, KVNR {kvnr}: takes blood thinners and asked on {day} whether ibuprofen is "
     "safe with them. Phone {phone}.",
     "Schmerzmittel zusammen mit Gerinnungshemmer?", "painkiller together with anticoagulants?",
     "Ibuprofen und Blutverdünner", "ibuprofen with blood thinners"),
    ("wheelchair repair",
     "{who} (geb. {dob}, KVNR {kvnr}): Rollstuhl hat seit {day} einen platten Reifen, Reparatur "
     "durch den Sanitätsdienst gewünscht. Tel. {phone}.",
     "{who} (born {dob}, KVNR {kvnr}): the wheelchair has had a flat tyre since {day}, asks for a "
     "repair. Phone {phone}.",
     "Rollstuhl kaputt, Reparatur", "broken wheelchair needs fixing",
     "Rollstuhlreparatur", "wheelchair repair"),
    ("hearing aid batteries",
     "{who}, geb. {dob}, KVNR {kvnr}: braucht Hörgerätebatterien Typ 312, zuletzt gekauft am {day}. "
     "Rückruf {phone}.",
     "{who}, born {dob}, KVNR {kvnr}: needs hearing aid batteries size 312, last bought on {day}. "
     "Call back {phone}.",
     "Batterien für das Hörgerät", "batteries for the hearing aid",
     "Hörgerätebatterien", "hearing aid batteries"),
    ("formula intolerance",
     "{who} (geb. {dob}, KVNR {kvnr}) berichtet, dass das Baby die Säuglingsnahrung seit {day} nicht "
     "verträgt und Bauchweh hat. Tel. {phone}.",
     "{who} (born {dob}, KVNR {kvnr}) reports the baby has not tolerated the infant formula since "
     "{day} and has colic. Phone {phone}.",
     "Säugling verträgt Milchpulver nicht", "infant does not tolerate the milk powder",
     "Säuglingsnahrung", "baby formula"),
    ("rash after cream",
     "{who}, geboren {dob}, KVNR {kvnr}: Hautausschlag nach der neuen Salbe, aufgetragen seit {day}. "
     "Bitte zurückrufen: {phone}.",
     "{who}, born {dob}, KVNR {kvnr}: skin rash after the new ointment, used since {day}. Please "
     "call back: {phone}.",
     "Ausschlag wegen Creme", "itchy skin from a cream",
     "Ausschlag nach Salbe", "rash after the ointment"),
    ("blood pressure monitor",
     "{who} (geb. {dob}, KVNR {kvnr}): Blutdruckmessgerät zeigt seit {day} eine Fehlermeldung, "
     "Garantiefall? Tel. {phone}.",
     "{who} (born {dob}, KVNR {kvnr}): the blood pressure monitor has shown an error since {day}, "
     "under warranty? Phone {phone}.",
     "Messgerät für Blutdruck defekt", "blood pressure device broken",
     "Blutdruckmessgerät", "blood pressure monitor"),
    ("double charge",
     "{who}, geb. {dob}, KVNR {kvnr}: Rechnung vom {day} wurde zweimal abgebucht, bittet um "
     "Erstattung. Rückruf {phone}.",
     "{who}, born {dob}, KVNR {kvnr}: the invoice of {day} was charged twice, asks for a refund. "
     "Call back {phone}.",
     "doppelt bezahlt, Geld zurück", "paid twice, wants money back",
     "doppelte Abbuchung", "double charge"),
    ("address change",
     "{who} (geb. {dob}, KVNR {kvnr}) ist am {day} umgezogen und bittet, die Lieferadresse zu "
     "ändern. Tel. {phone}.",
     "{who} (born {dob}, KVNR {kvnr}) moved house on {day} and asks us to change the delivery "
     "address. Phone {phone}.",
     "neue Anschrift nach Umzug", "new address after moving",
     "Adressänderung", "address change"),
    ("home visit",
     "{who}, geb. {dob}, KVNR {kvnr}: wünscht einen Hausbesuch zur Anpassung der Gehhilfe am {day}. "
     "Rückruf {phone}.",
     "{who}, born {dob}, KVNR {kvnr}: would like a home visit to fit the walking frame on {day}. "
     "Call back {phone}.",
     "Termin zu Hause für den Rollator", "appointment at home for the walker",
     "Hausbesuch", "home visit"),
    ("flu vaccination",
     "{who} (geb. {dob}, KVNR {kvnr}) möchte einen Termin zur Grippeimpfung am {day}. Erreichbar "
     "unter {phone}.",
     "{who} (born {dob}, KVNR {kvnr}) wants an appointment for the flu jab on {day}. Reachable on {phone}.",
     "Impfung gegen Influenza buchen", "book an influenza shot",
     "Grippeimpfung", "flu vaccination"),
    ("sleep problems",
     "{who}, geb. {dob}, KVNR {kvnr}: schläft seit {day} schlecht und fragt nach Melatonin. Tel. {phone}.",
     "{who}, born {dob}, KVNR {kvnr}: has slept badly since {day} and asks about melatonin. Phone {phone}.",
     "kann nachts nicht einschlafen", "cannot fall asleep at night",
     "Schlafprobleme", "sleep problems"),
    ("contact lens solution",
     "{who} (geb. {dob}, KVNR {kvnr}): Kontaktlinsenlösung brennt in den Augen seit {day}, will eine "
     "andere Marke. Rückruf {phone}.",
     "{who} (born {dob}, KVNR {kvnr}): contact lens solution has burned the eyes since {day}, wants "
     "another brand. Call back {phone}.",
     "Augen brennen von der Linsenflüssigkeit", "eyes sting from the lens fluid",
     "Kontaktlinsenlösung", "contact lens solution"),
    ("incontinence subscription",
     "{who}, geb. {dob}, KVNR {kvnr}: Abo für Inkontinenzeinlagen ab {day} pausieren, "
     "Krankenhausaufenthalt. Tel. {phone}.",
     "{who}, born {dob}, KVNR {kvnr}: pause the incontinence pads subscription from {day}, hospital "
     "stay. Phone {phone}.",
     "Lieferabo unterbrechen wegen Klinik", "stop the monthly delivery during a hospital stay",
     "Inkontinenz-Abo", "incontinence pads subscription"),
]  # fmt: skip

KINDS = ("name + topic", "topic only", "name only")


@dataclass
class Patient:
    context: dict[str, Any]
    locale: str
    first: str
    last: str
    title: str
    notes: list[int] = field(default_factory=list)  # indices into the corpus


@dataclass
class Query:
    kind: str
    text: str
    relevant: set[int]
    patient: int | None  # whose context a filtered query carries


def corpus(n_patients: int, seed: int) -> tuple[list[str], list[int], list[Patient], list[Query]]:
    """(notes, each note's patient, patients, queries)."""
    from gateway.phi.checksums import kvnr_with_check_digit

    rng = random.Random(seed)
    fakers = {"de_DE": Faker("de_DE"), "en_GB": Faker("en_GB")}
    for i, fk in enumerate(fakers.values()):
        fk.seed_instance(seed + i)
    notes: list[str] = []
    owner: list[int] = []
    topic_of: list[int] = []
    patients: list[Patient] = []
    for p in range(n_patients):
        locale = "de_DE" if p % 2 == 0 else "en_GB"
        fk = fakers[locale]
        female = rng.random() < 0.5
        first = fk.first_name_female() if female else fk.first_name_male()
        last = fk.last_name()
        title = ("Frau" if female else "Herr") if locale == "de_DE" else ("Ms" if female else "Mr")
        dob = fk.date_between_dates(date(1930, 1, 1), date(2005, 12, 31))
        kvnr = kvnr_with_check_digit(rng.choice("ABCDEFGHIJKLMNOPRSTUVWXYZ"), f"{rng.randrange(10**8):08d}")
        phone = fk.phone_number()
        context = {"name": f"{first} {last}", "date_of_birth": dob.isoformat(), "kvnr": kvnr, "phone": phone}
        patient = Patient(context, locale, first, last, title)
        for t in rng.sample(range(len(TOPICS)), 2):
            topic = TOPICS[t]
            who = rng.choice([f"{first} {last}", f"{title} {last}"])
            day = date(2026, 1, 5) + timedelta(days=rng.randrange(300))
            fmt = "%d.%m.%Y" if locale == "de_DE" else "%d/%m/%Y"
            template = topic[1] if locale == "de_DE" else topic[2]
            notes.append(
                template.format(who=who, dob=dob.strftime(fmt), kvnr=kvnr, day=day.strftime(fmt), phone=phone)
            )
            owner.append(p)
            topic_of.append(t)
            patient.notes.append(len(notes) - 1)
        patients.append(patient)

    queries: list[Query] = []
    for p, patient in enumerate(patients):
        de = patient.locale == "de_DE"
        for n in patient.notes:
            phrase = TOPICS[topic_of[n]][5 if de else 6]
            who = rng.choice([f"{patient.title} {patient.last}", f"{patient.first} {patient.last}"])
            text = f"{phrase} von {who}" if de else f"{who}: {phrase}"
            queries.append(Query("name + topic", text, {n}, p))
        who = f"{patient.first} {patient.last}"
        text = f"Notizen zu {who}" if de else f"notes about {who}"
        queries.append(Query("name only", text, set(patient.notes), p))
    for t, topic in enumerate(TOPICS):
        relevant = {n for n, tn in enumerate(topic_of) if tn == t}
        if relevant:
            queries.append(Query("topic only", topic[3], relevant, None))
            queries.append(Query("topic only", topic[4], relevant, None))
    return notes, owner, patients, queries


def filtered(texts: Sequence[str], contexts: Sequence[dict[str, Any] | None], key: bytes) -> list[str]:
    """Each text through the gateway's PHI filter, one request each (its own context), the
    patient-support policy, the name recogniser on, the tenant key *key*."""
    from gateway.phi.context import PatientContext
    from gateway.phi.filter import PHIFilter, recognizers
    from gateway.policy import load_policies

    policy = load_policies()["patient-support"]
    phi = PHIFilter(recognizers(True))
    out = []
    for text, ctx in zip(texts, contexts, strict=True):
        context = PatientContext.model_validate(ctx) if ctx is not None else None
        out.append(phi.apply(policy, context, [text], key, "bench").texts[0])
    return out


# a surrogate token of gateway/phi/tokenise.py: [NAME_95d1f5], [DATE_REMOVED], [CUSTOMER_ID_0a1b2c]
SURROGATE = re.compile(r"\[([A-Z]+(?:_[A-Z]+)*?)_(?:[0-9a-f]{6}|REMOVED)\]")


def as_categories(texts: Sequence[str]) -> list[str]:
    return [SURROGATE.sub(lambda m: m.group(1), t) for t in texts]


def embed(url: str, texts: Sequence[str], batch: int = 16) -> Any:
    """L2-normalised embeddings from the llama.cpp server's /v1/embeddings (which returns the
    mean pool unnormalised)."""
    vectors = []
    with httpx.Client(timeout=300) as client:
        for i in range(0, len(texts), batch):
            resp = client.post(f"{url}/v1/embeddings", json={"input": list(texts[i : i + batch])})
            resp.raise_for_status()
            data = sorted(resp.json()["data"], key=lambda d: d["index"])
            vectors += [d["embedding"] for d in data]
    m = np.asarray(vectors, dtype=np.float64)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def scores(doc_vecs: Any, query_vecs: Any, queries: Sequence[Query]) -> dict[str, dict[str, float]]:
    ranks: dict[str, list[int]] = {k: [] for k in KINDS}
    order = np.argsort(-(query_vecs @ doc_vecs.T), axis=1)
    for q, row in zip(queries, order, strict=True):
        ranks[q.kind].append(next(r for r, n in enumerate(row, 1) if int(n) in q.relevant))
    return {
        kind: {
            "queries": len(rs),
            "recall@1": sum(r <= 1 for r in rs) / len(rs),
            "recall@5": sum(r <= 5 for r in rs) / len(rs),
            "mrr": sum(1 / r for r in rs) / len(rs),
        }
        for kind, rs in ranks.items()
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def embedding_server(models: Path) -> Iterator[str]:
    """The local stack's embedding server, started as `sovereign up` starts it."""
    from infra.local import embedding_model
    from infra.local.process import spawn, stop, wait_ready
    from infra.local.stack import embedding_server_argv

    model_path, _ = embedding_model.ensure_model(models)
    port = _free_port()
    log = models / "retrieval-benchmark-embedding.log"
    proc, started = spawn("embedding", embedding_server_argv(model_path, "127.0.0.1", port, 1), log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(
            "embedding", proc, lambda: httpx.get(f"{url}/v1/models", timeout=1).status_code == 200, 120, log
        )
        yield url
    finally:
        stop(started.pid, started.start_ticks)


def run(url: str, n_patients: int, seed: int) -> dict[str, Any]:
    notes, owner, patients, queries = corpus(n_patients, seed)
    key = random.Random(seed).randbytes(32)  # one tenant key for notes and queries
    note_ctx = [patients[o].context for o in owner]
    query_ctx = [patients[q.patient].context if q.patient is not None else None for q in queries]
    t0 = time.monotonic()
    tok_notes = filtered(notes, note_ctx, key)
    tok_queries = filtered([q.text for q in queries], query_ctx, key)
    bare_queries = filtered([q.text for q in queries], [None] * len(queries), key)
    raw_docs, tok_docs = embed(url, notes), embed(url, tok_notes)
    results = {
        "raw": scores(raw_docs, embed(url, [q.text for q in queries]), queries),
        "tokenised": scores(tok_docs, embed(url, tok_queries), queries),
        "tokenised, queries without context": scores(tok_docs, embed(url, bare_queries), queries),
        "tokenised, tokens embedded as their category": scores(
            embed(url, as_categories(tok_notes)), embed(url, as_categories(tok_queries)), queries
        ),
    }
    return {
        "notes": len(notes),
        "patients": n_patients,
        "topics": len(TOPICS),
        "seed": seed,
        "seconds": round(time.monotonic() - t0, 1),
        "example": {"note": tok_notes[0], "query": tok_queries[0], "query without context": bare_queries[0]},
        "results": results,
    }


def render(report: dict[str, Any]) -> str:
    lines = [
        f"{report['notes']} notes of {report['patients']} patients on {report['topics']} topics "
        f"(seed {report['seed']})",
        "",
        "| condition | query kind | queries | recall@1 | recall@5 | MRR |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for condition, by_kind in report["results"].items():
        for kind, s in by_kind.items():
            cells = [condition, kind, str(s["queries"])] + [
                f"{s[m]:.3f}" for m in ("recall@1", "recall@5", "mrr")
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--url", help="a running embedding server (else one is started here)")
    parser.add_argument("--models", default=".sovereign/models", help="where the GGUF is converted or reused")
    parser.add_argument("--out", default="benchmarks/results/retrieval_quality.json")
    args = parser.parse_args()
    if args.url:
        report = run(args.url.rstrip("/"), args.patients, args.seed)
    else:
        with embedding_server(Path(args.models)) as url:
            report = run(url, args.patients, args.seed)
    Path(args.out).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(render(report))
    print(f"\nexample, tokenised note:  {report['example']['note']}")
    print(f"example, tokenised query: {report['example']['query']}")
    print(f"  ... without context:    {report['example']['query without context']}")


if __name__ == "__main__":
    main()
