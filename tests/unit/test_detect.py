"""Detection: checksums, recognisers, known values in every spelling, overlap resolution."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.phi.checksums import iban_valid, kvnr_valid, luhn_valid
from gateway.phi.context import spellings
from gateway.phi.detect import Detector, KnownValue, Span, find_patterns, resolve_overlaps
from gateway.phi.fold import _FOLD, skeleton, skeleton_with_map, variants


def found(text: str) -> set[tuple[str, str]]:
    return {(s.category, text[s.start : s.end]) for s in resolve_overlaps(find_patterns(text))}


def test_checksums() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("DE89 3704 0044 0532 0130 00") and not iban_valid("DE88 3704 0044 0532 0130 00")
    assert iban_valid("GB82WEST12345698765432")
    assert kvnr_valid("A123456780") and not kvnr_valid("A123456781") and not kvnr_valid("a123456780")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Karte 4111 1111 1111 1111 bitte", ("CARD", "4111 1111 1111 1111")),
        ("IBAN DE89 3704 0044 0532 0130 00.", ("IBAN", "DE89 3704 0044 0532 0130 00")),
        ("IBAN DE89370400440532013000", ("IBAN", "DE89370400440532013000")),
        ("KVNR A123456780,", ("KVNR", "A123456780")),
        ("mail me: erika.m+x@klinik-nord.de.", ("EMAIL", "erika.m+x@klinik-nord.de")),
        ("Tel. +49 30 1234567", ("PHONE", "+49 30 1234567")),
        ("Tel. +49 (0)30 123 45 67", ("PHONE", "+49 (0)30 123 45 67")),
        ("Tel. 030/1234567", ("PHONE", "030/1234567")),
        ("call 0171 9876543 now", ("PHONE", "0171 9876543")),
        ("geb. 14.03.1968", ("DATE", "14.03.1968")),
        ("am 2024-05-17?", ("DATE", "2024-05-17")),
        ("am 1. Mai 1970 geboren", ("DATE", "1. Mai 1970")),
        ("born March 14, 1968.", ("DATE", "March 14, 1968")),
        ("born 14 March 1968.", ("DATE", "14 March 1968")),
        ("in 10115 Berlin", ("POSTCODE", "10115")),
        ("PLZ: 80331", ("POSTCODE", "80331")),
        ("Bestellung #000000123 fehlt", ("ORDER_ID", "000000123")),
        ("my order number 100004711 is late", ("ORDER_ID", "100004711")),
        ("Kundennummer: 4711", ("CUSTOMER_ID", "4711")),
        ("customer id 98765", ("CUSTOMER_ID", "98765")),
    ],
)
def test_recognisers_find(text: str, expected: tuple[str, str]) -> None:
    assert expected in found(text)


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("Karte 4111 1111 1111 1112", "CARD"),  # fails Luhn
        ("IBAN DE88 3704 0044 0532 0130 00", "IBAN"),  # fails mod 97
        ("KVNR A123456781", "KVNR"),  # wrong check digit
        ("Die Dosis ist 2 mal 500 mg am Tag.", None),
        ("Version 3.11 und 10 Euro", None),
    ],
)
def test_recognisers_ignore(text: str, category: str | None) -> None:
    categories = {c for c, _ in found(text)}
    assert category not in categories if category else not categories


def known(path: str, value: object, category: str) -> list[KnownValue]:
    return [
        KnownValue(
            category,
            frozenset(s for f in forms for s in variants(f)),
            canonical=c,
            allow_suffix_s=category == "NAME",
        )
        for c, forms in spellings(path, value)
    ]


@pytest.mark.parametrize(
    ("path", "value", "category", "text", "match"),
    [
        ("name", "Erika Müller", "NAME", "Hier ist ERIKA MUELLER.", "ERIKA MUELLER"),
        ("name", "Erika Müller", "NAME", "Frau muller ruft an", "muller"),
        ("name", "Erika Müller", "NAME", "Erikas Termin", "Erikas"),
        ("date_of_birth", date(1968, 3, 14), "DATE", "geb. 14.3.1968", "14.3.1968"),
        ("date_of_birth", date(1968, 3, 14), "DATE", "born 1968-03-14", "1968-03-14"),
        ("date_of_birth", date(1968, 3, 14), "DATE", "am 14. März 1968", "14. März 1968"),
        ("date_of_birth", date(1968, 3, 14), "DATE", "on Mar 14 1968", "Mar 14 1968"),
        ("phone", "+49 30 1234567", "PHONE", "ruf 030 1234567 an", "030 1234567"),
        ("phone", "+49 30 1234567", "PHONE", "ruf 0049-30-1234567 an", "0049-30-1234567"),
        ("phone", "030 1234567", "PHONE", "call +49 30 123 4567", "+49 30 123 4567"),
        (
            "iban",
            "DE89370400440532013000",
            "IBAN",
            "Konto de89 3704 0044 0532 0130 00",
            "de89 3704 0044 0532 0130 00",
        ),
        ("address.street", "Musterstraße 12", "ADDRESS", "in der Musterstr. 12", "Musterstr. 12"),
        ("address.street", "Musterstraße 12", "ADDRESS", "in der Musterstrasse 12", "Musterstrasse 12"),
    ],
)
def test_known_values_in_any_spelling(path: str, value: object, category: str, text: str, match: str) -> None:
    spans = Detector(known(path, value, category)).detect(text)
    assert match in [text[s.start : s.end] for s in spans if s.category == category]


def test_known_values_do_not_match_inside_longer_tokens() -> None:
    spans = Detector(known("customer_id", "4711", "CUSTOMER_ID")).detect("Artikel 47110 und 4711.")
    assert [(s.start, s.end) for s in spans if s.source == "known"] == [(18, 22)]


def test_overlaps_longest_then_known_then_specific() -> None:
    spans = [
        Span(0, 10, "PHONE"),
        Span(0, 10, "CARD"),
        Span(2, 6, "DATE"),
        Span(8, 14, "NAME", "known"),
        Span(0, 10, "PHONE", "known"),
    ]
    assert resolve_overlaps(spans) == [Span(0, 10, "PHONE", "known")]
    assert resolve_overlaps(reversed(spans)) == resolve_overlaps(spans)
    assert resolve_overlaps([Span(0, 4, "DATE"), Span(4, 8, "NAME")]) == [
        Span(0, 4, "DATE"),
        Span(4, 8, "NAME"),
    ]


class UpperCaseWords:
    """A stand-in NER plug-in: every all-capitals word of 3+ letters is a NAME."""

    name = "caps"

    def analyze(self, text: str) -> Iterable[Span]:
        import re

        return [Span(m.start(), m.end(), "NAME", self.name) for m in re.finditer(r"\b[A-Z]{3,}\b", text)]


def test_plugins_contribute_spans() -> None:
    text = "Gruss von HANS an alle"
    assert [text[s.start : s.end] for s in Detector([], [UpperCaseWords()]).detect(text)] == ["HANS"]


@given(
    st.text(
        alphabet="aäöüßÄÖÜéçñAZaz09 .,-/()€„“_@+#\t\nŁİ\u2013\u2014" + "".join(map(chr, range(0x80, 0x100))),
        max_size=40,
    )
)
def test_fast_byte_path_agrees_with_the_unicode_fold(text: str) -> None:
    skel, index = skeleton_with_map(text)
    assert skel == text.translate(_FOLD) == skeleton(text)
    assert index == [i for i, c in enumerate(text) if c.isalnum()]


SPANS = st.lists(
    st.builds(
        lambda start, length, category, source: Span(start, start + length, category, source),
        st.integers(0, 60),
        st.integers(1, 15),
        st.sampled_from(["CARD", "PHONE", "DATE", "NAME", "IBAN"]),
        st.sampled_from(["pattern", "known", "dropped"]),
    ),
    max_size=12,
)


@settings(max_examples=400)
@given(SPANS, st.randoms())
def test_overlap_resolution_is_disjoint_deterministic_and_prefers_longer(spans: list[Span], rnd: Any) -> None:
    kept = resolve_overlaps(spans)
    assert all(a.end <= b.start for a, b in itertools.pairwise(kept))  # sorted, disjoint
    shuffled = list(spans)
    rnd.shuffle(shuffled)
    assert resolve_overlaps(shuffled) == kept  # order of discovery does not matter
    for span in spans:  # anything dropped lost to a kept span at least as long
        if span not in kept:
            assert any(k.start < span.end and span.start < k.end and k.length >= span.length for k in kept)


def test_overlap_resolution_does_not_depend_on_the_hash_seed() -> None:
    """Two known spellings of one text (the context names the patient twice, once in capitals)
    are equally preferred on every ranked field: the one kept, and so the spelling restored,
    must be the same in every process, whatever its hash seed (it was the set's order)."""
    script = (
        "from gateway.phi.detect import Span, resolve_overlaps\n"
        "names = ('Wendy Harrison', 'WENDY HARRISON', 'wendy harrison')\n"
        "spans = [Span(0, 14, 'name', 'known', c) for c in names]\n"
        "print(resolve_overlaps(spans)[0].canonical)\n"
    )
    kept = {
        subprocess.run(
            [sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[2],
        ).stdout.strip()
        for seed in range(12)
    }  # fmt: skip
    assert len(kept) == 1, kept


def test_a_known_spelling_that_is_the_texts_own_is_kept() -> None:
    """Of two equally ranked known spellings of one text, the text's own wins (its restoration
    gives back what the user wrote), whatever order the spans came in."""
    text = "Wendy Harrison"
    spans = [Span(0, 14, "name", "known", c) for c in ("WENDY HARRISON", "Wendy Harrison", "wendy harrison")]
    for order in (spans, spans[::-1]):
        assert resolve_overlaps(order, text)[0].canonical == "Wendy Harrison"
