"""Tokens restored inside JSON text (gateway/phi/jsonrestore.py): JSON-escaped inside strings, as
numbers outside them, the same however the text is cut into fragments (property tests), and
never an exception on malformed JSON."""

from __future__ import annotations

import itertools
import json
import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.phi.jsonrestore import JsonStreamRestorer, restore_json
from gateway.phi.tokenise import SURROGATE_RE, StreamRestorer, restore

NAME, STREET, CITY = "[NAME_0a1b2c]", "[ADDRESS_00ff00]", "[ADDRESS_abcdef]"
ORDER = "48291037"  # an FF1 token of an order number: digits only


def streamed(text: str, originals: dict[str, str], cuts: list[int]) -> tuple[str, int]:
    """(the output of a JsonStreamRestorer fed *text* cut at *cuts*, the most it held back)."""
    restorer = JsonStreamRestorer(originals)
    out, held = [], 0
    for a, b in itertools.pairwise([0, *sorted(cuts), len(text)]):
        out.append(restorer.feed(text[a:b]))
        held = max(held, restorer.held)
    return "".join(out) + restorer.flush(), held


def test_originals_inside_strings_are_json_escaped() -> None:
    originals = {
        NAME: 'Erika "Eri" Müller',
        STREET: "Studio 0\nLindsey Spur",
        CITY: "C:\\Temp\t\x00\x1f\x7f\u2028 Köln 東京 🙂",
    }
    text = json.dumps({"name": NAME, "address": f"{STREET}, {CITY}", NAME: [NAME]})
    out, n = restore_json(text, originals)
    assert n == 5
    assert json.loads(out) == {
        "name": originals[NAME],
        "address": f"{originals[STREET]}, {originals[CITY]}",
        originals[NAME]: [originals[NAME]],  # in a key too
    }
    # escaped as json.dumps escapes, non-ASCII as it is
    assert '"name": "Erika \\"Eri\\" Müller"' in out
    assert "Studio 0\\nLindsey Spur" in out
    assert "C:\\\\Temp\\t\\u0000\\u001f\x7f\u2028 Köln 東京 🙂" in out
    # the plain restorer would have broken the document
    with pytest.raises(json.JSONDecodeError):
        json.loads(restore(text, originals)[0])


def test_ff1_tokens_in_number_position_become_the_number() -> None:
    originals = {ORDER: "73920184", "12345678": "00004711"}
    text = '{"order": 48291037, "other": [12345678, -12345678, 1.12345678, 2e-12345678], "s": "12345678"}'
    out, n = restore_json(text, originals)
    assert n == 6
    # leading zeros go where a number starts (JSON allows none), stay where digits continue
    assert "[4711, -4711, 1.00004711, 2e-4711]" in out  # after a minus: a number may start
    assert json.loads(out) == {
        "order": 73920184,
        "other": [4711, -4711, 1.00004711, 2e-4711],
        "s": "00004711",
    }


def test_escaped_quotes_and_backslashes_decide_where_a_token_stands() -> None:
    originals = {NAME: 'a"b', ORDER: "00012345"}
    # \" does not end the string; \\ is a backslash, and the quote after it does
    text = '["x\\"[NAME_0a1b2c]", "x\\\\", 48291037, "\\u00e9[NAME_0a1b2c]"]'
    out, n = restore_json(text, originals)
    assert n == 3
    assert json.loads(out) == ['x"a"b', "x\\", 12345, 'éa"b']


def test_a_token_inside_an_escape_sequence_is_left_alone() -> None:
    # the model wrote \u0048 followed by "291037": the digits after \u are not a token's
    originals = {"00482910": "leak?", "99999999": "x"}
    text = '"\\u00482910 99999999"'
    out, n = restore_json(text, originals)
    assert (out, n) == ('"\\u00482910 x"', 1)
    assert streamed(text, originals, [3, 5])[0] == out


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "[NAME_0a1b2c]',  # unterminated string
        '{"name": [NAME_0a1b2c]}',  # a surrogate token outside any string
        '"\\',  # a lone backslash at the end
        '"\\u12"[NAME_0a1b2c]"',  # a \u escape cut short by a quote
        '"\\uZZZZ [NAME_0a1b2c]"',  # not hex
        '"\\u[NAME_0a1b2c]"',  # a \u escape that ends where the token starts
        'prose, "quoted [NAME_0a1b2c]" and [NAME_0a1b2c] 48291037\n"',
        "",
    ],
)
def test_malformed_json_is_restored_as_far_as_it_goes(text: str) -> None:
    originals = {NAME: 'Erika "Eri"', ORDER: "00012345"}
    out, n = restore_json(text, originals)
    assert n == text.count(NAME) + text.count(ORDER)
    assert NAME not in out and ORDER not in out
    for cut in range(len(text) + 1):
        assert streamed(text, originals, [cut])[0] == out


def test_without_originals_the_text_is_untouched() -> None:
    assert restore_json('{"a": "[NAME_0a1b2c]"}', {}) == ('{"a": "[NAME_0a1b2c]"}', 0)
    restorer = JsonStreamRestorer({})
    assert restorer.feed('{"a": "[NAME_0') + restorer.feed('a1b2c]"}') + restorer.flush() == (
        '{"a": "[NAME_0a1b2c]"}'
    )


def test_every_single_split_point_of_a_tool_call() -> None:
    originals = {NAME: 'O\'Neill "Junior" \\ Müller', STREET: "Studio 0\nLindsey Spur", ORDER: "00012345"}
    text = json.dumps({"patient": NAME, "street": STREET}).replace("}", f', "order": {ORDER}}}')
    want, n = restore_json(text, originals)
    assert n == 3
    assert json.loads(want) == {"patient": originals[NAME], "street": originals[STREET], "order": 12345}
    longest = max(map(len, originals))
    for cut in range(len(text) + 1):
        out, held = streamed(text, originals, [cut])
        assert out == want
        assert held < longest


# -- property tests ----------------------------------------------------------------------------

SURROGATES = [NAME, STREET, CITY, "[EMAIL_123abc]", "[DATE_fedcba]"]
DIGIT_TOKENS = [ORDER, "73920184", "10000001", "99999999"]  # fixed length: one cannot hide another
# the model's own text: quotes, backslashes, newlines, tabs, brackets, non-ASCII; no digits (so
# no token is continued by the text around it) and no character json.dumps writes as \uXXXX
MODEL_CHARS = st.characters(exclude_categories=["Cs", "Cc", "Nd"], include_characters='"\\\n\t[]{}:, u')
# what the originals may hold: anything at all, control characters too
ORIGINAL_CHARS = st.characters(exclude_categories=["Cs"])

PIECES = st.lists(
    st.one_of(
        st.text(MODEL_CHARS, max_size=6).map(lambda t: ("text", t)),
        st.sampled_from(SURROGATES + DIGIT_TOKENS).map(lambda t: ("token", t)),
    ),
    max_size=5,
)
LEAVES = st.one_of(
    PIECES.map(lambda p: ("string", p)),
    st.integers(-1000, 1000).map(lambda n: ("number", n)),
    st.sampled_from(DIGIT_TOKENS).map(lambda t: ("number_token", t)),
    st.sampled_from([True, False, None]).map(lambda v: ("constant", v)),
)
DOCUMENTS = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda items: ("array", items)),
        st.lists(st.tuples(PIECES, inner), max_size=4).map(lambda items: ("object", items)),
    ),
    max_leaves=12,
)
ORIGINALS = st.fixed_dictionaries(
    {
        **{t: st.text(ORIGINAL_CHARS, min_size=1, max_size=12) for t in SURROGATES},
        # an FF1 token's original: digits of the same length, leading zeros allowed
        **{t: st.text(string.digits, min_size=8, max_size=8) for t in DIGIT_TOKENS},
    }
)


def model_text(node: tuple[str, Any]) -> str:
    """The document as the model writes it, tokens and all."""
    kind, value = node
    if kind == "string":
        return json.dumps("".join(piece for _, piece in value), ensure_ascii=False)
    if kind == "number_token":
        return str(value)
    if kind in ("number", "constant"):
        return json.dumps(value)
    if kind == "array":
        return "[" + ", ".join(map(model_text, value)) + "]"
    return "{" + ", ".join(f"{model_text(('string', k))}: {model_text(v)}" for k, v in value) + "}"


def meant(node: tuple[str, Any], originals: dict[str, str]) -> Any:
    """The document with each token replaced by its original."""
    kind, value = node
    if kind == "string":
        return "".join(originals[piece] if what == "token" else piece for what, piece in value)
    if kind == "number_token":
        return int(originals[value])
    if kind in ("number", "constant"):
        return value
    if kind == "array":
        return [meant(item, originals) for item in value]
    return {meant(("string", k), originals): meant(v, originals) for k, v in value}


@settings(max_examples=300)
@given(DOCUMENTS, ORIGINALS, st.data())
def test_streamed_json_restores_as_one_shot_and_to_the_originals(
    document: tuple[str, Any], originals: dict[str, str], data: st.DataObject
) -> None:
    text = model_text(document)
    once, _ = restore_json(text, originals)
    assert json.loads(once) == meant(document, originals)
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=12))
    out, held = streamed(text, originals, cuts)
    assert out == once
    assert held <= max(map(len, originals)) - 1


@settings(max_examples=300)
@given(
    st.lists(
        st.one_of(
            st.text(st.characters(exclude_categories=["Cs"]), max_size=5),
            st.sampled_from(['"', "\\", "\\u", "0", "e", *SURROGATES, *DIGIT_TOKENS]),
        ),
        max_size=16,
    ),
    st.lists(st.integers(0, 200), max_size=8),
)
def test_any_text_restores_the_same_however_cut_and_never_raises(pieces: list[str], cuts: list[int]) -> None:
    """Malformed JSON (any text at all, quotes and escapes anywhere) neither raises nor makes
    the streamed output differ from the one-shot one; every token goes but one the model wrote
    right after a backslash (inside an escape sequence)."""
    originals = {t: 'x"\\\n' for t in SURROGATES} | {t: "00012345" for t in DIGIT_TOKENS}
    text = "".join(pieces)
    once, _ = restore_json(text, originals)
    assert streamed(text, originals, [c for c in cuts if c <= len(text)])[0] == once
    assert all(once[m.start() - 1] == "\\" for m in SURROGATE_RE.finditer(once))


def test_the_json_restorer_counts_like_the_plain_one() -> None:
    originals = {NAME: "Erika", ORDER: "73920184"}
    text = f'{{"a": "{NAME} {NAME}", "b": {ORDER}}}'
    plain, json_aware = StreamRestorer(originals), JsonStreamRestorer(originals)
    for restorer in (plain, json_aware):
        for i in range(0, len(text), 3):
            restorer.feed(text[i : i + 3])
        restorer.flush()
    assert plain.restored == json_aware.restored == 3
