"""Known values written differently still never reach the model (#20 finding 3): date-times,
JSON escapes, names without their diacritics, digits of other scripts, look-alike letters,
phones without their trunk prefix, values split across two messages, encoded values.

Through the real filter (PHIFilter.apply, as the gateway calls it). Values are hand-written
fictitious data, not taken from the recognisers' own tables.
"""

from __future__ import annotations

import base64
import os
from typing import Any
from urllib.parse import quote

import pytest

from gateway.phi.context import PatientContext
from gateway.phi.filter import Filtered, PHIFilter
from gateway.policy import load_policies

KEY = os.urandom(32)
CONTEXT: dict[str, Any] = {
    "name": "Erika Müller",
    "date_of_birth": "1968-03-14",
    "kvnr": "A123456780",
    "phone": "+49 30 1234567",
    "customer_id": "4711",
}


def run(
    texts: list[str], context: dict[str, Any] | None = None, use_case: str = "telehealth-summary"
) -> Filtered:
    policy = load_policies()[use_case]
    ctx = PatientContext.model_validate(context if context is not None else CONTEXT)
    return PHIFilter().apply(policy, ctx, texts, KEY, "clinic-test")


def sent(texts: list[str], context: dict[str, Any] | None = None) -> str:
    return "\n".join(run(texts, context).texts)


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        ("Termin am 1968-03-14T09:30 bestätigt", ["1968-03-14", "T09:30"]),
        ("Geboren 1968-03-14T09:30:00+01:00.", ["1968-03-14", "09:30:00"]),
        ("geb. 14.03.1968 09:30 Uhr", ["14.03.1968", "09:30"]),
        ("born 14th March 1968", ["14th March 1968"]),
        ("geb. 68-03-14", ["68-03-14"]),
    ],
)
def test_date_times_and_other_orders_of_a_known_date(text: str, gone: list[str]) -> None:
    out = sent([text])
    assert "[DATE_" in out
    for part in gone:
        assert part not in out


@pytest.mark.parametrize(
    "text",
    [
        '{"patient": "Erika M\\u00fcller", "note": "ruft an"}',  # PHP json_encode
        "Frau M\\u00FCller ruft an",
        "Tel. 030\\/1234567, KVNR A\\u0031\\u0032\\u0033456780",
    ],
)
def test_json_escaped_text_inside_a_message(text: str) -> None:
    out = sent([text])
    for part in ("M\\u00fcller", "M\\u00FCller", "1234567", "456780"):
        assert part not in out


@pytest.mark.parametrize(
    ("name", "typed"),
    [
        ("Łukasz Wałęsa", "Lukasz Walesa"),
        ("Søren Kierkegaard", "Soren Kierkegaard"),
        ("Søren Kierkegaard", "Soeren Kierkegaard"),
        ("Đorđe Balašević", "Dorde Balasevic"),
        ("Zeynep Y\u0131ld\u0131z", "Zeynep Yildiz"),
        ("Ærø Dahl", "Aeroe Dahl"),
        ("Lukasz Walesa", "Łukasz Wałęsa"),  # the other way round: the context without them
    ],
)
def test_names_without_their_diacritics(name: str, typed: str) -> None:
    out = sent([f"Patient {typed} hat angerufen."], {"name": name})
    assert "[NAME_" in out
    for part in typed.split():
        assert part not in out


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        (
            "Tel. \u0660\u0663\u0660 \u0661\u0662\u0663\u0664\u0665\u0666\u0667",
            "\u0661\u0662\u0663",
        ),  # Arabic-Indic
        (
            "Tel. \uff10\uff13\uff10\u3000\uff11\uff12\uff13\uff14\uff15\uff16\uff17",
            "\uff11\uff12\uff13",
        ),  # fullwidth
        ("KVNR A\u0967\u0968\u0969\u096a\u096b\u096c\u096d\u096e\u0966", "\u0967\u0968\u0969"),  # Devanagari
        (
            "KVNR \uff21\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff10",
            "\uff11\uff12\uff13",
        ),  # fullwidth
    ],
)
def test_digits_of_other_scripts(text: str, gone: str) -> None:
    result = run([text], use_case="appointment-scheduling")  # KVNR and phone: removed
    assert gone not in result.texts[0]
    assert sum(result.tokens.removed.values()) == 1


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        ("KVNR \u0410123456780 bitte", "123456780"),  # Cyrillic capital A
        ("Hier ist \u0415rika M\u00fcller", "rika"),  # Cyrillic capital E
        ("Hier ist \u0395rika Mu\u0435ller", "rika"),  # Greek capital E, Cyrillic small e
    ],
)
def test_look_alike_letters_from_other_alphabets(text: str, gone: str) -> None:
    assert gone not in sent([text])


@pytest.mark.parametrize("text", ["Rückruf unter 30 1234567", "Rückruf: 30/123 45 67.", "ruf 301234567 an"])
def test_phone_without_its_trunk_prefix(text: str) -> None:
    result = run([text])
    assert "1234567" not in result.texts[0] and "123 45 67" not in result.texts[0]
    assert result.tokens.removed["PHONE"] == 1


@pytest.mark.parametrize(
    ("first", "second", "parts"),
    [
        ("Meine KVNR ist A1234", "56780, danke.", ("A1234", "56780")),
        ("Meine Nummer: +49 30 12", "34567", ("+49 30 12", "34567")),
        ("Ich bin Erika Mül", "ler aus Berlin", ("Mül", "ler")),
    ],
)
def test_a_value_split_across_two_messages(first: str, second: str, parts: tuple[str, str]) -> None:
    out = run([first, second], use_case="appointment-scheduling").texts
    assert parts[0] not in out[0]
    assert parts[1] not in out[1]
    assert out[1].endswith(second[len(parts[1]) :])  # the rest of the message is untouched


def test_a_value_whole_in_one_message_is_not_cut_at_the_boundary() -> None:
    out = run(["KVNR A123456780", "4711 ist die Kundennummer"], use_case="appointment-scheduling").texts
    assert "[KVNR_REMOVED]" in out[0] and "A123456780" not in out[0]
    assert out[1].startswith("[CUSTOMER_ID_")


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


@pytest.mark.parametrize(
    ("encoded", "category"),
    [
        (_b64("A123456780"), "KVNR"),
        (_b64("Erika Müller, 14.03.1968"), "NAME"),
        (base64.urlsafe_b64encode(b"+49 30 1234567").decode().rstrip("="), "PHONE"),
        (b"A123456780".hex(), "KVNR"),
        ("Erika Müller".encode().hex().upper(), "NAME"),
        (quote("Erika Müller"), "NAME"),
        (quote("+49 30 1234567", safe=""), "PHONE"),
        (_b64("Karte 4111 1111 1111 1111"), "CARD"),  # a pattern match inside, not a known value
    ],
)
def test_encodings_of_a_known_value_are_removed_whole(encoded: str, category: str) -> None:
    result = run([f"Daten: {encoded} Ende"])
    assert result.texts[0] == f"Daten: [{category}_REMOVED] Ende"


def test_encoding_like_text_without_a_value_stays() -> None:
    text = (
        "Unfortunately the Versichertennummer was missing; see "
        f"{_b64('nothing to see here')} and {b'harmless text'.hex()} and Hermann-Josef."
    )
    assert run([text]).texts[0] == text
