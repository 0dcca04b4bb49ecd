"""Synthetic patient messages with structured context (Faker de_DE / en_GB; fictitious data).

Each item is a request as Magento would send it, plus the secrets a leak check looks for:
every context value and every identifier written into the text, in the exact form used.
Formats vary the way people write: case, umlauts spelled out, date and phone formats, IBAN
with and without spaces, abbreviations. Third-party identifiers (a card number, another
IBAN, another phone number, another KVNR) appear that the context does not know.

Every value is also tagged (``Item.fields``): whose it is (the patient's, or another
person's) and its kind (name, first name, surname, street, city, phone, e-mail, date, KVNR,
IBAN, card...), so a leak check can count the rate per kind. With ``others=True`` about half
the texts also mention other persons (a spouse, a parent, a child, a doctor, with titles and
relations): their names, dates of birth, phone numbers, e-mail and street addresses, none of
which is in any context; every name comes from Faker, not from the name recogniser's lists.

The corpus depends on the seed only, never on the day it is made: dates of birth are drawn
between fixed dates (``BORN``), not relative to today as Faker's ``date_of_birth`` is. (With
``date_of_birth`` the corpus of a seed changed every day, and a leak found one day could not
be found again the next.)
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from faker import Faker

from gateway.phi.checksums import kvnr_with_check_digit, luhn_valid
from gateway.phi.context import MONTHS_DE, MONTHS_EN
from gateway.phi.fold import UMLAUT_EXPANSIONS as _UMLAUTS
from gateway.phi.fold import skeleton, skeleton_with_map

PATIENT, OTHER = "patient", "other"
#: the range dates of birth are drawn from: aged 1 to 99 on 2026-01-01
BORN = (date(1926, 1, 2), date(2025, 1, 1))


def date_of_birth(fk: Faker) -> date:
    return fk.date_between_dates(*BORN)


@dataclass(frozen=True)
class Value:
    """One value written into a text: whose it is (``PATIENT``, or ``OTHER``: a person the
    context does not know) and its kind."""

    whose: str
    kind: str
    value: str


@dataclass
class Item:
    context: dict[str, Any]
    text: str
    locale: str
    secrets: list[str] = field(default_factory=list)
    fields: list[Value] = field(default_factory=list)


def card_number(rng: random.Random) -> str:
    while True:
        digits = "4" + "".join(rng.choice("0123456789") for _ in range(15))
        if luhn_valid(digits):
            return " ".join(digits[i : i + 4] for i in range(0, 16, 4))


def _date_forms(d: date, rng: random.Random, locale: str) -> str:
    forms = [f"{d:%d.%m.%Y}", f"{d.day}.{d.month}.{d.year}", f"{d:%Y-%m-%d}"]
    if locale == "de_DE":
        forms.append(f"{d.day}. {MONTHS_DE[d.month - 1]} {d.year}")
    else:
        month = MONTHS_EN[d.month - 1]
        forms += [f"{d.day} {month} {d.year}", f"{month} {d.day}, {d.year}", f"{d:%d/%m/%Y}"]
    return rng.choice(forms)


def _phone_forms(phone: str, rng: random.Random) -> str:
    digits = "".join(c for c in phone if c.isdigit())
    forms = [phone, digits]
    if phone.startswith("+49") and digits.startswith("490"):
        forms.append("0" + digits[3:])
    elif phone.startswith("+49"):
        forms.append("0" + digits[2:])
    return rng.choice(forms)


def _name_forms(first: str, last: str, rng: random.Random) -> tuple[str, str]:
    full = f"{first} {last}"
    return rng.choice([full, full.upper(), full.lower(), full.translate(_UMLAUTS)]), rng.choice(
        [first, last, last.translate(_UMLAUTS)]
    )


FILLER = {
    "de_DE": [
        "Vielen Dank für Ihre schnelle Hilfe beim letzten Mal.",
        "Ich habe seit einigen Tagen leichte Kopfschmerzen und wollte fragen, ob das normal ist.",
        "Bitte melden Sie sich, wenn noch Unterlagen fehlen.",
        "Die Lieferung kam leider beschädigt an, die Verpackung war nass.",
        "Können Sie mir sagen, wann die Praxis am Freitag geöffnet hat?",
    ],
    "en_GB": [
        "Thank you for your quick help last time.",
        "I have had a mild headache for a few days and wanted to ask if that is normal.",
        "Please let me know if any documents are still missing.",
        "Unfortunately the delivery arrived damaged and the box was wet.",
        "Could you tell me when the practice is open on Friday?",
    ],
}


RELATIONS = {
    "de_DE": [("Mein Mann", "m", ""), ("Meine Frau", "f", ""), ("Meine Mutter", "f", ""),
              ("Mein Vater", "m", ""), ("Meine Tochter", "f", ""), ("Mein Sohn", "m", ""),
              ("Meine Schwester", "f", ""), ("Mein Bruder", "m", "")],
    "en_GB": [("My husband", "m", "He"), ("My wife", "f", "She"), ("My mother", "f", "She"),
              ("My father", "m", "He"), ("My daughter", "f", "She"), ("My son", "m", "He"),
              ("My sister", "f", "She"), ("My brother", "m", "He")],
}  # fmt: skip
DOCTOR_TITLES = {
    "de_DE": ["Dr.", "Frau Dr.", "Herr Dr.", "Prof. Dr.", "Frau", "Herr"],
    "en_GB": ["Dr", "Dr.", "Mr", "Mrs", "Ms", "Prof."],
}


def _others(fk: Faker, rng: random.Random, locale: str) -> tuple[list[str], list[Value]]:
    """Sentences about two other persons, a relative and a doctor, and their values."""
    relation, sex, pronoun = rng.choice(RELATIONS[locale])
    first = fk.first_name_female() if sex == "f" else fk.first_name_male()
    last, doctor = fk.last_name(), fk.last_name()
    dob = _date_forms(date_of_birth(fk), rng, locale)
    phone, doctor_phone = _phone_forms(fk.phone_number(), rng), _phone_forms(fk.phone_number(), rng)
    email = fk.email()
    street, postcode, city = fk.street_address(), fk.postcode(), fk.city()
    name_kind, name = rng.choice([("name", f"{first} {last}"), ("first name", first)])
    title = rng.choice(DOCTOR_TITLES[locale])
    doctor_kind, doctor_name = rng.choice([("surname", doctor), ("name", f"{fk.first_name()} {doctor}")])
    if locale == "de_DE":
        sentences = [
            rng.choice([f"{relation} {name}, geboren am {dob}, ist unter {phone} erreichbar.",
                        f"{relation} heißt {name} (geb. {dob}), Telefon {phone}."]),
            f"Anschrift: {street}, {postcode} {city}, E-Mail {email}.",
            rng.choice([f"Überwiesen hat mich {title} {doctor_name}, Praxis {doctor_phone}.",
                        f"Bei {title} {doctor_name} bin ich in Behandlung, Telefon {doctor_phone}."]),
        ]  # fmt: skip
    else:
        sentences = [
            rng.choice([f"{relation} {name}, born {dob}, can be reached on {phone}.",
                        f"{relation} is called {name} (date of birth {dob}), phone {phone}."]),
            f"{pronoun} lives at {street}, {postcode} {city}, e-mail {email}.",
            rng.choice([f"I was referred by {title} {doctor_name}, surgery phone {doctor_phone}.",
                        f"I am being treated by {title} {doctor_name}, phone {doctor_phone}."]),
        ]  # fmt: skip
    values = [(name_kind, name), ("date", dob), ("phone", phone), ("street", street),
              ("postcode", postcode), ("city", city), ("e-mail", email), (doctor_kind, doctor_name),
              ("phone", doctor_phone)]  # fmt: skip
    if name_kind == "name":
        values += [("first name", first), ("surname", last)]
    if doctor_kind == "name":
        values.append(("surname", doctor))
    return sentences, [Value(OTHER, kind, value) for kind, value in values]


def generate(n: int, seed: int = 7, filler_sentences: int = 0, others: bool = False) -> list[Item]:
    """*n* patients' messages. ``others``: about half of them also mention two other persons
    (``_others``), whose values are in ``secrets`` and ``fields`` but in no context."""
    rng = random.Random(seed)
    fakers = {loc: Faker(loc) for loc in ("de_DE", "en_GB")}
    for i, f in enumerate(fakers.values()):
        f.seed_instance(seed + i)
    items = []
    for i in range(n):
        locale = "de_DE" if i % 2 == 0 else "en_GB"
        fk = fakers[locale]
        first, last = fk.first_name(), fk.last_name()
        dob = date_of_birth(fk)
        kvnr = kvnr_with_check_digit(rng.choice("ABCDEFGHIJKLMNOPRSTUVWXYZ"), f"{rng.randrange(10**8):08d}")
        phone = fk.phone_number()
        iban = fk.iban()
        email = fk.email()
        street, postcode, city = fk.street_address(), fk.postcode(), fk.city()
        customer_id = str(rng.randrange(1000, 9_999_999))
        order_id = f"{rng.randrange(10**9):09d}"
        context = {
            "name": f"{first} {last}",
            "date_of_birth": dob.isoformat(),
            "kvnr": kvnr,
            "email": email,
            "phone": phone,
            "iban": iban,
            "address": {"street": street, "postcode": postcode, "city": city},
            "customer_id": customer_id,
            "order_ids": [order_id],
        }
        full, short = _name_forms(first, last, rng)
        dob_text = _date_forms(dob, rng, locale)
        phone_text = _phone_forms(phone, rng)
        iban_text = rng.choice([iban, " ".join(iban[j : j + 4] for j in range(0, len(iban), 4))])
        email_text = rng.choice([email, email.upper()])
        card = card_number(rng)
        other_kvnr = kvnr_with_check_digit("Z", f"{rng.randrange(10**8):08d}")
        other_phone = fk.phone_number()
        if locale == "de_DE":
            parts = [
                f"Guten Tag, hier schreibt {full}, geboren am {dob_text}.",
                f"Meine Versichertennummer ist {kvnr}, erreichbar unter {phone_text} oder {email_text}.",
                f"Bitte buchen Sie die Rechnung von meinem Konto {iban_text} ab, nicht von der Karte {card}.",
                f"Die Bestellung #{order_id} ging an {street}, {postcode} {city}.",
                f"Kundennummer {customer_id}. "
                f"Meine Schwester (KVNR {other_kvnr}) hat die Nummer {other_phone}.",
                f"Grüße, {short}",
            ]
        else:
            parts = [
                f"Hello, this is {full}, date of birth {dob_text}.",
                f"My insurance number is {kvnr}; you can reach me on {phone_text} or at {email_text}.",
                f"Please take the payment from account {iban_text}, not from card {card}.",
                f"Order #{order_id} was sent to {street}, {postcode} {city}.",
                f"Customer number {customer_id}. My sister (KVNR {other_kvnr}) is on {other_phone}.",
                f"Best wishes, {short}",
            ]
        rng.shuffle(parts[1:5])
        fill = [rng.choice(FILLER[locale]) for _ in range(filler_sentences)]
        short_kind = "first name" if short == first else "surname"
        values = [Value(PATIENT, kind, value) for kind, value in (
            ("name", full), (short_kind, short), ("first name", first), ("surname", last),
            ("date", dob_text), ("kvnr", kvnr), ("phone", phone_text), ("iban", iban_text),
            ("e-mail", email_text), ("street", street), ("postcode", postcode), ("city", city),
            ("customer id", customer_id), ("order id", order_id))]  # fmt: skip
        # the sister's KVNR and phone number, and the card: identifiers the context does not know
        values += [
            Value(OTHER, "card", card),
            Value(OTHER, "kvnr", other_kvnr),
            Value(OTHER, "phone", other_phone),
        ]
        if others and rng.random() < 0.5:
            about_others, other_values = _others(fk, rng, locale)
            parts[4:4] = about_others
            values += other_values
        text = " ".join(parts[:3] + fill + parts[3:])
        secrets = [full, short, first, last, dob_text, kvnr, phone_text, iban_text, email_text, card,
                   other_kvnr, other_phone, street, f"{postcode} {city}", customer_id, order_id]  # fmt: skip
        secrets += [v.value for v in values if v.whose == OTHER and v.value not in secrets]
        items.append(Item(context=context, text=text, locale=locale, secrets=secrets, fields=values))
    return items


def leaked(secret: str, sent: str) -> bool:
    """The secret, as written or in any spacing/case/punctuation, is in what was sent."""
    return bool(leaks([secret], sent))


def leaks(secrets: list[str], text: str) -> list[str]:
    """The *secrets* found in *text*, as written or in any spacing, case or punctuation (the
    text is folded once, and its 8-character windows indexed, so a whole log file can be
    scanned for a hundred thousand values).

    A reformatted value of fewer than eight letters and digits ("7.6.1944" folds to "761944")
    counts only where it stands alone in the text: not preceded or followed by a letter or
    digit. Six folded digits turn up inside other numbers by chance (a tokenised phone number
    or IBAN is random digits: about one request in 20,000 holds a given six-digit run), and
    such a chance match is no leak; a value written as "7 6 1944" or "761944" still is."""
    lower, folded = text.lower(), skeleton(text)
    windows = {folded[i : i + 8] for i in range(len(folded) - 7)}
    mapped: tuple[str, list[int]] | None = None  # folded, and each folded character's index in text
    found = []
    for secret in secrets:
        sk = skeleton(secret)
        if len(sk) >= 8 and sk[:8] not in windows:
            continue  # neither as written nor reformatted: its folded start is nowhere
        plain = secret.lower()  # a substring test first: the word-bounded search only where it is
        as_written = plain in lower and re.search(r"(?<!\w)" + re.escape(plain) + r"(?!\w)", lower)
        if as_written or (len(sk) >= 8 and sk in folded):
            found.append(secret)
        elif len(sk) >= 6 and sk in folded:
            mapped = mapped or skeleton_with_map(text)
            if _stands_alone(text, *mapped, sk):
                found.append(secret)
    return found


def _stands_alone(text: str, folded: str, where: list[int], sk: str) -> bool:
    """Whether *sk* occurs in *folded* with no letter or digit of *text* right before or after."""
    at = folded.find(sk)
    while at != -1:
        start, end = where[at], where[at + len(sk) - 1] + 1
        if not (start and text[start - 1].isalnum()) and not (end < len(text) and text[end].isalnum()):
            return True
        at = folded.find(sk, at + 1)
    return False


def distinctive(secret: str) -> bool:
    """A value that cannot turn up by chance in text about other things: not a single name or
    word ("Field" is a surname and a word of an error message), not a short number (six digits
    are a timestamp's microseconds). Full names, e-mail addresses, IBANs, KVNRs, phone numbers,
    dates with a year and ids of eight or more characters are."""
    folded = skeleton(secret)
    if len(folded) < 8:
        return False
    return any(c.isdigit() for c in secret) or "@" in secret or " " in secret.strip()
