"""Healthcare workflows with weights, built from synthetic patient data only.

Each workflow is one use case of the gateway (its policy in gateway/policies/) with a typical
user message and the structured context Magento would send. The names, dates and numbers are
generated from small fixed lists by a seeded random generator: no real person's data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

FIRST = ("Erika", "Max", "Lena", "Jonas", "Mia", "Paul", "Hannah", "Felix", "Sofia", "Noah")
LAST = ("Musterfrau", "Mustermann", "Beispiel", "Probe", "Test", "Muster", "Fiktiv")
CITIES = (("10115", "Berlin"), ("80331", "München"), ("20095", "Hamburg"), ("50667", "Köln"))


@dataclass(frozen=True)
class Workflow:
    use_case: str
    weight: int
    max_tokens: int

    def request(self, rng: random.Random) -> dict[str, Any]:
        first, last = rng.choice(FIRST), rng.choice(LAST)
        name = f"{first} {last}"
        dob = date(1950, 1, 1) + timedelta(days=rng.randrange(0, 365 * 55))
        customer = f"C-{rng.randrange(10_000, 99_999)}"
        order = f"ORD-{rng.randrange(100_000, 999_999)}"
        postcode, city = rng.choice(CITIES)
        context: dict[str, Any] = {"name": name, "date_of_birth": dob.isoformat(), "customer_id": customer}
        if self.use_case == "appointment-scheduling":
            text = f"Hallo, hier ist {name}. Kann ich meinen Termin am Dienstag auf Donnerstag verschieben?"
        elif self.use_case == "patient-support":
            text = (
                f"Ich bin {name}, geboren am {dob:%d.%m.%Y}. Wie nehme ich das verschriebene Ibuprofen ein?"
            )
            context["email"] = f"{first.lower()}.{last.lower()}@example.org"
        elif self.use_case == "telehealth-summary":
            text = (f"Bitte fasse das Gespräch zusammen: {name} berichtet seit drei Tagen über Kopfschmerzen "
                    "und leichtes Fieber, keine Vorerkrankungen, Ibuprofen hilft kurzzeitig.")  # fmt: skip
        elif self.use_case == "order-support":
            text = f"Wo ist meine Bestellung {order}? Lieferadresse {postcode} {city}."
            context["order_ids"] = [order]
        else:  # catalog-search: no patient data at all
            text = rng.choice(("Blutdruckmessgerät für das Handgelenk", "Pflaster für empfindliche Haut",
                               "Fieberthermometer ohne Quecksilber"))  # fmt: skip
            context = {}
        body: dict[str, Any] = {
            "messages": [{"role": "user", "content": text}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": self.max_tokens,
            "sovereign": {"use_case": self.use_case, **({"context": context} if context else {})},
        }
        return body


# Weights: what a healthcare shop's day looks like (chat and scheduling dominate).
WORKFLOWS = (
    Workflow("patient-support", 35, 64),
    Workflow("appointment-scheduling", 25, 48),
    Workflow("order-support", 20, 48),
    Workflow("catalog-search", 15, 32),
    Workflow("telehealth-summary", 5, 96),
)


def select(names: str | None) -> tuple[Workflow, ...]:
    """The workflows named in a comma list (all when empty); unknown names are refused."""
    if not names:
        return WORKFLOWS
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = {w.use_case: w for w in WORKFLOWS}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ValueError(f"--use-cases: unknown {', '.join(unknown)}; known: {', '.join(known)}")
    return tuple(known[n] for n in wanted)
