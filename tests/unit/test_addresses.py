"""Street addresses and towns the context does not know (issue #20, finding 1: "street and city
unchanged"). German street names end in a street word ("-straße", "-weg", "-platz", "-ring" …),
English ones carry a USPS Publication 28 street suffix after a house number; a town follows a
German postcode.

The addresses come from Faker's locales (its German street lists; its English suffixes are the
USPS list too, the same standard the recogniser reads: an English address without one of those
words is not found, see docs/phi-filter.md)."""

from __future__ import annotations

import pytest
from faker import Faker

from gateway.phi.detect import find_patterns

SAMPLES = 300


def addresses_found(locale: str, template: str) -> float:
    fake = Faker(locale)
    fake.seed_instance(2026)
    found = 0
    for _ in range(SAMPLES):
        address = fake.street_address().replace("\n", ", ")
        text = template.format(address)
        spans = [s for s in find_patterns(text) if s.category == "ADDRESS"]
        # the address is covered by one span of at least its street and number
        start = text.index(address)
        found += any(s.start <= start + len(address) // 2 < s.end for s in spans)
    return found / SAMPLES


@pytest.mark.parametrize(
    ("locale", "template", "floor"),
    [
        ("de_DE", "Bitte schicken Sie das Rezept an {}, danke.", 0.97),
        ("de_AT", "Meine Mutter wohnt in der {} und braucht Hilfe.", 0.97),
        ("en_GB", "Please send it to {} by Friday.", 0.9),
        ("en_US", "My father lives at {} now.", 0.9),
    ],
)
def test_street_addresses_without_context_are_found(locale: str, template: str, floor: float) -> None:
    assert addresses_found(locale, template) >= floor


def test_a_german_address_with_postcode_and_town() -> None:
    text = "Neue Adresse: Paulo-Schleich-Straße 19, 95896 Husum."
    found = {(text[s.start : s.end], s.category) for s in find_patterns(text)}
    assert ("Paulo-Schleich-Straße 19", "ADDRESS") in found
    assert ("95896", "POSTCODE") in found and ("Husum", "ADDRESS") in found


@pytest.mark.parametrize(
    "text",
    [
        "Bring 3 Tabletten mit.",
        "Nehmen Sie 2 Tabletten am Abend.",
        "Der Weg 3 ist lang, am Platz 2 warten.",
        "Ich habe seit 2024 Probleme.",
        "Take 2 Paracetamol Tablets daily.",
        "I waited 3 Hours in the Park.",
        "We walked 5 Miles along the River.",
        "Order 3 Green Tea Bags now.",
    ],
)
def test_everyday_sentences_are_no_addresses(text: str) -> None:
    assert [text[s.start : s.end] for s in find_patterns(text) if s.category == "ADDRESS"] == []


@pytest.mark.parametrize(
    "text",
    ["you can reach me on 447911123456", "Praxis 4930123456789", "Telefon 49030123456789"],
)
def test_an_international_number_written_as_bare_digits_is_a_phone(text: str) -> None:
    """#20 canaries: the country code without "+" or "00" (with or without the trunk zero)."""
    digits = text.split()[-1]
    spans = [s for s in find_patterns(text) if text[s.start : s.end] == digits]
    assert spans and {s.category for s in spans} <= {"PHONE", "CARD"}


def test_a_long_number_that_fits_no_countrys_plan_is_no_phone() -> None:
    text = "Referenz 99912345678901"  # 999 is no calling code
    assert [s for s in find_patterns(text) if s.category == "PHONE"] == []


def test_british_postcodes_and_the_town_after_them() -> None:
    fake = Faker("en_GB")
    fake.seed_instance(7)
    for _ in range(SAMPLES):
        postcode, town = fake.postcode(), fake.city()
        text = f"Please send it to {fake.street_address()}, {postcode} {town}."
        found = {(text[s.start : s.end], s.category) for s in find_patterns(text)}
        assert (postcode, "POSTCODE") in found, text
        assert any(
            category == "ADDRESS" and value.startswith(town.split()[0]) for value, category in found
        ), text
