"""What a schema's constraints do to a patient value (issue #26 item 4; docs/phi-filter.md,
"Values under a schema's constraints"): the model sees tokens, and a token must fit where the
schema says the value goes. FF1 tokens keep a digit string's shape, so a value valid under a
pattern stays valid and comes back exactly; surrogate tokens fit no date format, no value
pattern, and restoration can make a document longer than its ``maxLength``. Checked with the
real filter, the real JSON-aware restorer and ``jsonschema`` (its FormatChecker checks
``date`` and ``date-time`` with the standard library: no extra package needed)."""

from __future__ import annotations

import json
import os
import re
from typing import Any

import jsonschema
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from gateway.phi.context import PatientContext
from gateway.phi.filter import PHIFilter
from gateway.phi.jsonrestore import restore_json
from gateway.phi.jsontexts import Gathered
from gateway.phi.tokenise import SURROGATE_RE, count_unrestored, request_key
from gateway.policy import load_policies

POLICIES = load_policies()
CHECKER = FormatChecker()


def valid(document: Any, schema: dict[str, Any]) -> bool:
    return bool(Draft202012Validator(schema, format_checker=CHECKER).is_valid(document))


def filtered(use_case: str, context: dict[str, Any], texts: list[str]) -> tuple[list[str], dict[str, str]]:
    """(the texts as the model gets them, this request's token -> original)."""
    out = PHIFilter().apply(
        POLICIES[use_case], PatientContext.model_validate(context), texts, request_key(os.urandom(32)), "t"
    )
    return out.texts, out.tokens.originals


def test_the_format_checkers_the_documented_behaviour_relies_on_are_there() -> None:
    # jsonschema checks `date` and `date-time` without an extra package (date-time: its
    # rfc3339-validator is installed); were one missing, is_valid would accept anything there
    assert {"date", "date-time"} <= set(CHECKER.checkers)
    assert not valid("2026-13-45", {"type": "string", "format": "date"})
    assert not valid("2026-12-02 09:00", {"type": "string", "format": "date-time"})


@pytest.mark.parametrize(
    "use_case, field, value, pattern",
    [
        ("appointment-scheduling", "customer_id", "4711081", "^[0-9]{7}$"),
        ("telehealth-summary", "kvnr", "A123456780", "^[A-Z][0-9]{9}$"),
    ],
)
def test_an_ff1_token_keeps_a_pattern_valid_and_restores_exactly(
    use_case: str, field: str, value: str, pattern: str
) -> None:
    schema = {
        "type": "object",
        "properties": {field: {"type": "string", "pattern": pattern, "maxLength": len(value)}},
        "required": [field],
        "additionalProperties": False,
    }
    assert valid({field: value}, schema)
    (text,), originals = filtered(use_case, {field: value}, [f"Nummer {value}, bitte prüfen."])
    (token,) = [t for t, v in originals.items() if v == value]
    assert token != value and token in text and value not in text
    # the model copies the token where the schema puts the value: its document is valid, and so
    # is the restored one, which holds exactly the original
    model = {field: token}
    assert valid(model, schema)
    restored, n = restore_json(json.dumps(model), originals)
    assert (json.loads(restored), n) == ({field: value}, 1)


def test_a_phone_token_is_the_e164_form_and_restores_to_the_spelling_sent() -> None:
    (text,), originals = filtered(
        "patient-support", {"phone": "+49 30 1234567"}, ["Rückruf unter +49 30 1234567 bitte."]
    )
    (token,) = [t for t, v in originals.items() if v == "+49 30 1234567"]
    assert re.fullmatch(r"\+[0-9]{11}", token) and token in text  # no spaces: a pattern with them fails
    assert not valid(token, {"type": "string", "pattern": r"^\+49 [0-9]{2} [0-9]{7}$"})
    assert json.loads(restore_json(json.dumps({"phone": token}), originals)[0]) == {"phone": "+49 30 1234567"}


@pytest.mark.parametrize("fmt, value", [("date", "1968-03-14"), ("date-time", "2026-12-02T09:00:00+01:00")])
def test_a_date_reaches_the_model_as_a_surrogate_that_fits_no_date_format(fmt: str, value: str) -> None:
    schema = {"type": "string", "format": fmt}
    assert valid(value, schema)
    # a calendar's free slot in a tool result (appointment-scheduling), walked as JSON as the
    # gateway does: the slot's start becomes a [DATE_…] token, the slot id stays
    gathered = Gathered()
    gathered.add(json.dumps({"free_slots": [{"slot_id": "s-101", "start": value}]}), json_aware=True)
    texts, originals = filtered("appointment-scheduling", {"name": "Erika Müller"}, gathered.texts)
    (slot,) = json.loads(gathered.put_back(texts)[0])["free_slots"]
    token = slot["start"]
    assert SURROGATE_RE.fullmatch(token) and token.startswith("[DATE_") and originals[token] == value
    assert slot["slot_id"] == "s-101"
    assert not valid(token, schema)  # guided decoding cannot let the model copy it there
    # unconstrained, a model that copies the token gets it restored, and the result fits again
    restored = json.loads(restore_json(json.dumps({"start": token}), originals)[0])
    assert restored == {"start": value} and valid(restored["start"], schema)
    # constrained, the model writes a value of its own: nothing to restore, and nothing
    # counts it as unrestored; the client gets the model's value
    invented = json.dumps({"start": value.replace("1968", "1970").replace("12-02", "12-03")})
    text, n = restore_json(invented, originals)
    assert (text, n, count_unrestored(text)) == (invented, 0, 0)


def test_restoration_can_take_a_document_past_a_max_length_the_model_met() -> None:
    name = "Erika Maria Theresia Müller-Lüdenscheidt von und zu Hohenlimburg-Altena"
    schema = {"type": "object", "properties": {"practitioner": {"type": "string", "maxLength": 64}}}
    assert len(name) > 64
    (text,), originals = filtered("appointment-scheduling", {"name": name}, [f"Termin für {name}."])
    (token,) = [t for t, v in originals.items() if v == name]
    assert token.startswith("[NAME_") and token in text
    model = {"practitioner": token}
    assert len(token) == 13 and valid(model, schema)
    restored = json.loads(restore_json(json.dumps(model), originals)[0])
    assert restored == {"practitioner": name}
    with pytest.raises(jsonschema.ValidationError, match="is too long"):
        Draft202012Validator(schema).validate(restored)


def test_the_shipped_schemas_constrain_no_field_a_surrogate_must_fill() -> None:
    # book_appointment carries the patient's name and birth date (surrogates): no format,
    # pattern or maxLength there, so the model can copy the tokens and they come back restored
    book = next(t for t in POLICIES["appointment-scheduling"].tools if t.name == "book_appointment")
    for field in ("patient_name", "date_of_birth"):
        assert set(book.parameters["properties"][field]) <= {"type", "description"}
