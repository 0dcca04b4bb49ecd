"""Normalised matching: the position map of the normaliser, and the pattern recognisers on
real-world spellings without any context (#20 findings 4 and 5).

Identifiers are hand-written fictitious values with valid check digits (the KVNR, IBAN and
card numbers are the usual documentation examples), not taken from the recognisers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.phi.detect import Detector, find_patterns, resolve_overlaps
from gateway.phi.encodings import encoded_runs
from gateway.phi.normalise import normalise
from tests.phi_corpus import FILLER


def found(text: str) -> set[tuple[str, str]]:
    return {(s.category, text[s.start : s.end]) for s in Detector([]).detect(text)}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("M\\u00fcller", "Müller"),
        ("030\\/123", "030/123"),
        ("\\ud83d\\ude00!", "\U0001f600!"),
        ("A\u200b123\u00ad4\ufeff", "A1234"),
        ("1\u00a02\u202f3\u20094", "1 2 3 4"),
        ("\u0661\u0662 \u0967\u0968 \uff11\uff12", "12 12 12"),
        ("\uff21\u0410\u0391", "AAA"),
        ("\ufb01le", "file"),
    ],
)
def test_normalise(text: str, expected: str) -> None:
    norm = normalise(text)
    assert norm is not None and norm.text == expected


def test_plain_text_is_left_alone() -> None:
    for text in ("Erika Müller, geb. 14.03.1968 \u2013 „Straße“ 5 €", "Łódź, Søren, Đorđe", "C:\\Users"):
        assert normalise(text) is None


@given(st.text(alphabet="aZ09 .\\u00fc/\u200b\u00a0\u0661\uff11\u0410\ufb01\U0001d400", max_size=40))
def test_position_map_covers_the_original(text: str) -> None:
    norm = normalise(text)
    if norm is None:
        return
    assert len(norm.starts) == len(norm.ends) == len(norm.text)
    assert all(0 <= a < b <= len(text) for a, b in zip(norm.starts, norm.ends, strict=True))
    assert norm.starts == sorted(norm.starts)
    if norm.text:  # the whole normalised text maps to a span inside the original
        start, end = norm.original(0, len(norm.text))
        assert 0 <= start < end <= len(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # finding 4: KVNR, IBAN, phone, e-mail, date as people type them
        ("KVNR a 123 456 780 bitte", ("KVNR", "a 123 456 780")),
        ("KVNR a123456780.", ("KVNR", "a123456780")),
        ("KVNR A-123-456-780", ("KVNR", "A-123-456-780")),
        ("Konto de89 3704 0044 0532 0130 00 bitte", ("IBAN", "de89 3704 0044 0532 0130 00")),
        ("Konto DE89-3704-0044-0532-0130-00.", ("IBAN", "DE89-3704-0044-0532-0130-00")),
        ("Tel. +49 (0) 30 / 123 45 67", ("PHONE", "+49 (0) 30 / 123 45 67")),
        ("mail max.mustermann [at] example.de bitte", ("EMAIL", "max.mustermann [at] example.de")),
        ("mail max.mustermann(at)example(dot)de.", ("EMAIL", "max.mustermann(at)example(dot)de")),
        ("mail max @ example.de", ("EMAIL", "max @ example.de")),
        ("geb. 14 . 03 . 1968", ("DATE", "14 . 03 . 1968")),
        ("geb. 14. 03. 1968", ("DATE", "14. 03. 1968")),
        ("am 1968-03-14T09:30:00Z", ("DATE", "1968-03-14T09:30:00Z")),
        # zero-width and no-break characters inside
        ("KVNR A12345\u200b6780", ("KVNR", "A12345\u200b6780")),
        ("KVNR A\u00a0123\u00a0456\u00a0780", ("KVNR", "A\u00a0123\u00a0456\u00a0780")),
        (
            "IBAN DE89\u00a03704\u00a00044\u00a00532\u00a00130\u00a000",
            ("IBAN", "DE89\u00a03704\u00a00044\u00a00532\u00a00130\u00a000"),
        ),
        ("Tel. 030\u202f123\u200b4567", ("PHONE", "030\u202f123\u200b4567")),
        ("mail erika\u200b@example.de", ("EMAIL", "erika\u200b@example.de")),
        # digits of other scripts and look-alike letters, no context
        ("KVNR \u0410123456780", ("KVNR", "\u0410123456780")),
        (
            "Karte \uff14\uff11\uff11\uff11 1111 1111 1111",
            ("CARD", "\uff14\uff11\uff11\uff11 1111 1111 1111"),
        ),
        # finding 5: card numbers with dots, slashes, line breaks, repeated or no-break spaces
        ("Karte 4111.1111.1111.1111 bitte", ("CARD", "4111.1111.1111.1111")),
        ("Karte 4111/1111/1111/1111", ("CARD", "4111/1111/1111/1111")),
        ("Karte 4111\n1111\n1111\n1111", ("CARD", "4111\n1111\n1111\n1111")),
        ("Karte 4111\r\n1111\r\n1111\r\n1111", ("CARD", "4111\r\n1111\r\n1111\r\n1111")),
        ("Karte 4111  1111   1111 1111", ("CARD", "4111  1111   1111 1111")),
        ("Karte 4111\u00a01111\u00a01111\u00a01111", ("CARD", "4111\u00a01111\u00a01111\u00a01111")),
        ("Karte 5500 0000 0000 0004, 3 Stück", ("CARD", "5500 0000 0000 0004")),
        ("Amex 3782 822463 10005 danke", ("CARD", "3782 822463 10005")),
    ],
)
def test_real_world_spellings_without_context(text: str, expected: tuple[str, str]) -> None:
    assert expected in found(text)


@pytest.mark.parametrize(
    "text",
    [
        "Die Dosis ist 2 mal 500 mg am Tag.",
        "Version 3.11 und 10 Euro",
        "ab 12 Uhr bitte kommen, Zimmer 3 / 12 / 4",
        "Termine 14.03. und 15.04., je 10 - 12 Uhr",
        "Unfortunately the Versichertennummer and the Kundennummer were missing.",
        "see https://example.org/docs/getting-started/index.html for details",
        "Werte: 120/80 mmHg, Puls 72, 36.8 Grad",
        "Rabatt 20%ige, 50% Anzahlung",
        "I am at home (at the moment)",
        *FILLER["de_DE"],
        *FILLER["en_GB"],
    ],
)
def test_ordinary_text_has_no_findings(text: str) -> None:
    assert found(text) == set()


def test_dates_next_to_each_other_are_not_a_card() -> None:
    text = "vom 14.03.1968 - 15.04.2020 und 01.02.2003/04.05.2006"
    assert {c for c, _ in found(text)} == {"DATE"}


def test_encoded_runs_decode_only_readable_text() -> None:
    runs = encoded_runs("x QTEyMzQ1Njc4MA== y 4111111111111111 Kopfschmerzen abcdefabcdef12 %41%42%43%44")
    assert [d for _, _, d in runs] == ["A123456780", "ABCD"]


def test_spans_found_in_normalised_text_map_back_to_the_original() -> None:
    text = "KVNR A\\u0031\\u0032\\u0033456780 und Tel. \u0660\u0663\u0660 1234567"
    spans = resolve_overlaps(Detector([]).detect(text))
    assert [(s.category, text[s.start : s.end]) for s in spans] == [
        ("KVNR", "A\\u0031\\u0032\\u0033456780"),
        ("PHONE", "\u0660\u0663\u0660 1234567"),
    ]
    assert find_patterns(text) != spans  # the raw text alone does not give them


def test_an_iban_ends_where_it_ends_before_a_following_word() -> None:
    """An IBAN followed by a word: the word is never part of it, even where the longer string
    happens to pass mod 97 (about one in a hundred)."""
    from faker import Faker

    fake = Faker(["de_DE", "en_GB", "fr_FR", "nl_NL"])
    fake.seed_instance(20)
    for _ in range(300):
        iban = fake.iban()
        grouped = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
        for written in (iban, grouped, grouped.lower()):
            assert ("IBAN", written) in found(f"Konto {written} ab sofort"), written
