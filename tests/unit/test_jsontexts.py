"""JSON content through the PHI filter (gateway/phi/jsontexts.py): every string, key and number
is a text of its own, the filtered texts go back in place, the result is valid JSON."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.phi.context import PatientContext
from gateway.phi.detect import EVERY_SPLIT, Split
from gateway.phi.filter import PHIFilter, recognizers
from gateway.phi.jsontexts import MAX_DEPTH, Gathered, JsonTexts
from gateway.phi.tokenise import Tokeniser, TokenMap
from gateway.policy import load_policies


def test_strings_keys_and_numbers_are_texts_in_document_order() -> None:
    doc = JsonTexts.parse('{"name": "Erika", "ids": [4711, 1.50], "ok": true, "none": null}')
    assert doc is not None
    # each value labelled with its key (an array's items with the array's), for the recognisers
    # that need a label, and to keep neighbouring values apart
    assert doc.texts == ["name", "name: Erika", "ids", "ids: 4711", "ids: 1.50", "ok", "none"]
    # unchanged texts give the same JSON back, number tokens as written (1.50 stays 1.50)
    assert doc.rebuild(doc.texts) == '{"name":"Erika","ids":[4711,1.50],"ok":true,"none":null}'


def test_a_json_escaped_value_is_found_as_the_text_it_stands_for() -> None:
    """The street with a newline, written JSON-escaped in the tool result, is the text
    'Studio 0\\nLindsey Spur' for the filter, and its replacement is escaped again."""
    raw = json.dumps({"address": {"street": "Studio 0\nLindsey Spur", "note": 'say "hi"'}})
    assert "Studio 0\nLindsey" not in raw  # the escape, not the newline, is in the text
    doc = JsonTexts.parse(raw)
    assert doc is not None
    assert "street: Studio 0\nLindsey Spur" in doc.texts
    replaced = [t.replace("Studio 0\nLindsey Spur", 'A "quoted"\ttoken') for t in doc.texts]
    out = doc.rebuild(replaced)
    assert json.loads(out) == {"address": {"street": 'A "quoted"\ttoken', "note": 'say "hi"'}}


def test_the_real_filter_finds_and_replaces_an_escaped_street() -> None:
    """End to end with the gateway's filter: the escaped street of the context is removed."""
    policy = load_policies()["patient-support"]  # the address is not a field of this use case
    context = {"address": {"street": "Studio 0\nLindsey Spur", "postcode": "10115", "city": "Berlin"}}

    gathered = Gathered()
    raw = json.dumps({"delivery": {"street": "Studio 0\nLindsey Spur"}, "items": 2})
    gathered.add(raw, json_aware=True)
    filtered = PHIFilter().apply(
        policy, PatientContext.model_validate(context), gathered.texts, b"k" * 32, "tenant"
    )
    (json_out,) = gathered.put_back(filtered.texts)
    assert "Lindsey" not in json_out and "Studio 0" not in json_out
    assert json.loads(json_out)["items"] == 2
    assert json.loads(json_out)["delivery"]["street"] != "Studio 0\nLindsey Spur"


def test_a_digits_token_stays_a_number_and_other_replacements_become_strings() -> None:
    doc = JsonTexts.parse('{"customer": 4711, "phone": 49301234567, "price": -1.5e3}')
    assert doc is not None
    # the tokeniser's token of a customer number is digits of the same length (FF1)
    token = Tokeniser(b"k" * 32, "tenant").token_for("47110815", "CUSTOMER_ID", False, TokenMap())
    assert token.isdigit() and len(token) == 8 and token != "47110815"
    filtered = ["customer", "8402", "phone", "[PHONE_REMOVED]", "price", "-1.5e3"]
    out = json.loads(doc.rebuild(filtered))
    assert out == {"customer": 8402, "phone": "[PHONE_REMOVED]", "price": -1500.0}


def test_a_digits_token_with_a_leading_zero_is_a_string() -> None:
    doc = JsonTexts.parse("[4711]")
    assert doc is not None
    assert json.loads(doc.rebuild(["0815"])) == ["0815"]  # 0815 is no JSON number


@pytest.mark.parametrize(
    "text", ["4711", '"Erika"', "Erika Müller", "{not json", "[NaN]", '{"a": Infinity}', "", "  "]
)
def test_anything_but_a_json_object_or_array_is_a_plain_text(text: str) -> None:
    assert JsonTexts.parse(text) is None
    gathered = Gathered()
    gathered.add(text, json_aware=True)
    assert gathered.texts == [text]
    assert gathered.put_back(["x"]) == ["x"]


def test_json_deeper_than_the_bound_is_a_plain_text() -> None:
    assert JsonTexts.parse("[" * MAX_DEPTH + "1" + "]" * MAX_DEPTH) is not None
    deep = "[" * (MAX_DEPTH + 2) + '"Erika"' + "]" * (MAX_DEPTH + 2)
    assert JsonTexts.parse(deep) is None
    assert JsonTexts.parse("[" * 100_000) is None  # not JSON at all, and no RecursionError


def test_labelled_identifiers_in_json_are_found_as_in_prose() -> None:
    """The recognisers that need a label (order and customer numbers, postcodes) find it in the
    key, as in prose; and two numbers of one list are not read as one card number split across
    two texts (review of #26: both went wrong when each value was filtered alone)."""
    policy = load_policies()["order-support"]
    context = PatientContext.model_validate({"customer_id": "4711", "order_ids": ["100004711"]})
    raw = json.dumps(
        {
            "Bestellnummer": "100004711",
            "other_orders": ["100009999", "100012345"],
            "Kundennummer": "4712",
            "ship_to": {"zip": "10117"},
        }
    )
    gathered = Gathered()
    gathered.add(raw, json_aware=True)
    filtered = PHIFilter().apply(policy, context, gathered.texts, b"k" * 32, "tenant")
    out = json.loads(gathered.put_back(filtered.texts)[0])
    assert out["Kundennummer"].startswith("[CUSTOMER_ID_") and out["ship_to"]["zip"].startswith("[POSTCODE_")
    assert out["Bestellnummer"].isdigit() and out["Bestellnummer"] != "100004711"  # FF1, as the context's
    assert all(o.isdigit() and len(o) == 9 for o in out["other_orders"])  # no [CARD_REMOVED]
    assert list(out) == ["Bestellnummer", "other_orders", "Kundennummer", "ship_to"]


def test_a_key_the_filter_changes_leaves_its_value_filtered_with_it() -> None:
    doc = JsonTexts.parse('{"Erika Mustermann": "4711"}')
    assert doc is not None
    # the key was replaced in both texts: the value's label is the key as filtered
    assert json.loads(doc.rebuild(["[NAME_1]", "[NAME_1]: 4711"])) == {"[NAME_1]": "4711"}
    # the label changed otherwise (a span across it): the whole text, never less filtered
    assert json.loads(doc.rebuild(["[NAME_1]", "[NAME_1]4711"])) == {"[NAME_1]": "[NAME_1]4711"}


def test_gathered_slots_put_back_in_order() -> None:
    gathered = Gathered()
    a = gathered.add("plain")
    b = gathered.add('{"k": "v"}', json_aware=True)
    c = gathered.add('{"k": "v"}')  # not JSON-aware: one text
    assert gathered.texts == ["plain", "k", "k: v", '{"k": "v"}']
    out = gathered.put_back([t.upper() for t in gathered.texts])
    assert (out[a], out[b], out[c]) == ("PLAIN", '{"K":"V"}', '{"K": "V"}')
    with pytest.raises(ValueError, match="4 texts"):
        gathered.put_back(["x"])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(value=st.lists(JSON, max_size=4) | st.dictionaries(st.text(max_size=8), JSON, max_size=4))
def test_any_json_comes_back_equal_when_nothing_is_replaced(value: object) -> None:
    doc = JsonTexts.parse(json.dumps(value))
    assert doc is not None
    assert json.loads(doc.rebuild(doc.texts)) == value


@given(value=st.dictionaries(st.text(max_size=8), JSON, max_size=4), replacement=st.text())
def test_any_replacement_gives_valid_json(value: object, replacement: str) -> None:
    doc = JsonTexts.parse(json.dumps(value))
    assert doc is not None
    json.loads(doc.rebuild([replacement] * len(doc.texts)))


def test_split_values_are_looked_for_between_slots_and_array_strings() -> None:
    """A value split across two messages is looked for at every slot boundary, known values and
    checksummed identifiers; inside one JSON document only between two strings of one array
    (address lines), known values only and past the label; not between fields."""
    gathered = Gathered()
    gathered.add("Meine KVNR ist A12345")
    gathered.add(
        '{"k": "v", "street": ["Studio 0", "Lindsey Spur"], "ids": ["100009999", "100012345"]}', True
    )
    gathered.add("6780, danke")
    assert gathered.texts[1:9] == [
        "k", "k: v", "street", "street: Studio 0", "street: Lindsey Spur", "ids", "ids: 100009999",
        "ids: 100012345",
    ]  # fmt: skip
    splits = gathered.splits()
    assert splits[0] == EVERY_SPLIT and splits[-1] == EVERY_SPLIT
    assert splits[4] == Split(skip=len("street: "), patterns=False)
    assert splits[7] == Split(skip=len("ids: "), patterns=False)
    assert [i for i, split in enumerate(splits) if split is None] == [1, 2, 3, 5, 6]
    empty = Gathered()  # documents without texts, first and last
    for text in ("[]", "hello", "{}", "[]"):
        empty.add(text, json_aware=True)
    assert empty.texts == ["hello"] and empty.splits() == []
    policy = load_policies()["order-support"]
    plain = Gathered()
    plain.add("Meine KVNR ist A12345")
    plain.add("6780, danke")
    filtered = PHIFilter().apply(policy, None, plain.texts, b"k" * 32, "t", plain.splits())
    assert filtered.texts == ["Meine KVNR ist [KVNR_REMOVED]", "[KVNR_REMOVED], danke"]


@pytest.mark.parametrize("key", ["street", "İSTRASSE"])  # "İ" is two characters in lower case
def test_a_context_street_on_two_array_lines_is_found(key: str) -> None:
    """Magento's address lines as an array, the context's street on two lines (review of #26: with
    no search inside a document the second line went out in clear)."""
    policy = load_policies()["patient-support"]  # the address is not a field of this use case
    context = PatientContext.model_validate(
        {"address": {"street": "Studio 0\nLindsey Spur", "postcode": "10115", "city": "Berlin"}}
    )
    gathered = Gathered()
    gathered.add(json.dumps({key: ["Studio 0", "Lindsey Spur"], "orders": ["100009999", "100012345"]}), True)
    filtered = PHIFilter(recognizers(True)).apply(
        policy, context, gathered.texts, b"k" * 32, "t", gathered.splits()
    )
    out = json.loads(gathered.put_back(filtered.texts)[0])
    assert "Lindsey" not in json.dumps(out) and "Studio" not in json.dumps(out)
    # two order numbers of a list: tokenised as order numbers (the label), not removed as one card
    assert all(o.isdigit() and len(o) == 9 for o in out["orders"])


@pytest.mark.parametrize("key", ["Name", "Patient", "NAME", "name"])
def test_a_lower_case_name_under_any_key_is_found(key: str) -> None:
    """The name recogniser takes a lower-case name only in a text all in lower case: the label is
    lower case (review of #26: "Name: anna schmidt" went out in clear)."""
    policy = load_policies()["order-support"]
    gathered = Gathered()
    gathered.add(json.dumps({key: "anna schmidt"}), True)
    filtered = PHIFilter(recognizers(True)).apply(
        policy, None, gathered.texts, b"k" * 32, "t", gathered.splits()
    )
    out = json.loads(gathered.put_back(filtered.texts)[0])
    assert list(out) == [key] and out[key].startswith("[NAME_")
