"""JSON content through the PHI filter: every string (value and key) and every number of a JSON
object or array as its own text, the filtered texts put back, the JSON written again.

A tool result Magento sends back (``{"street": "Studio 0\\nLindsey Spur", "phone": 4930...}``)
or a tool call's arguments in the history hold patient data inside JSON: filtered as one plain
text, a value JSON-escaped in it (``\\n``, ``\\"``, ``\\u00fc``) would not be the value the
detector knows, and a token put where an escape was could break the JSON. Walked here, each value
is filtered as the text it stands for, and the result is valid JSON again.

A value is filtered under its key, as ``<key>: <value>`` (an array's items under the array's
key), and the key taken off again afterwards: the recognisers that need a label find it there
(``{"Kundennummer": "4711"}``, ``{"zip": "10117"}`` are a customer number and a postcode, as
"Kundennummer 4711" and "zip 10117" are in prose), and the letters of the label keep
neighbouring values apart, so two numbers of one list are never read as one value split across
two texts (``["100009999", "100012345"]`` is no card number). Where the filter changed the key
itself (a key that is personal data), the value keeps what it was given: the filtered text, key
and all (never less filtered).

Numbers are filtered as their JSON token (``4711``) and written back as a number when the
filtered text is still a JSON number (an FF1 token of a digit run is digits again), else as a
string (``"[PHONE_REMOVED]"``). A number's token is kept as written (the ``json`` module would
turn ``1.10`` into ``1.1`` and ``1e400`` into ``Infinity``), which is why the few lines that
write JSON back are ours: the standard library cannot write a number token verbatim.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

from gateway.phi.detect import EVERY_SPLIT, Split

#: a JSON number token (RFC 8259 section 6)
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
#: deeper JSON is filtered as one plain text (walking it would risk the recursion limit)
MAX_DEPTH = 64


class _Number(str):
    """A JSON number as its token."""


class _NotJson(ValueError):
    pass


def _constant(name: str) -> Any:
    raise _NotJson(name)  # NaN, Infinity: not JSON


def _depth_ok(value: Any, depth: int = 0) -> bool:
    if depth > MAX_DEPTH:
        return False
    if isinstance(value, dict):
        return all(_depth_ok(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return all(_depth_ok(v, depth + 1) for v in value)
    return True


class JsonTexts:
    """The texts of one JSON object or array, in document order (keys before their values; a
    value labelled with its key, ``<key>: <value>``), and the way back: ``rebuild(filtered)``
    with one filtered text per text."""

    def __init__(self, document: dict[str, Any] | list[Any]) -> None:
        self._document = document
        self.texts: list[str] = []
        self._labels: list[str] = []  # per text: the key it is labelled with ("" for none)
        #: text i -> how a value split across texts i and i + 1 is looked for: only between two
        #: strings of one array (address lines: ["Studio 0", "Lindsey Spur"]), and only for the
        #: context's values (two order numbers of a list are no card number)
        self.splits: dict[int, Split] = {}
        self._walk(document, "")

    @classmethod
    def parse(cls, text: str) -> JsonTexts | None:
        """The texts of *text* if it is a JSON object or array, else None (filter it as text)."""
        stripped = text.strip()
        if not stripped or stripped[0] not in "[{":
            return None
        try:
            document = json.loads(stripped, parse_int=_Number, parse_float=_Number, parse_constant=_constant)
        except (ValueError, RecursionError):
            return None
        if not isinstance(document, dict | list) or not _depth_ok(document):
            return None
        return cls(document)

    def _add(self, text: str, key: str) -> None:
        self.texts.append(f"{_label(key)}: {text}" if key else text)
        self._labels.append(key)

    def _walk(self, value: Any, key: str) -> None:
        if isinstance(value, dict):
            for name, item in value.items():
                self._add(name, "")
                self._walk(item, name)
        elif isinstance(value, list):
            skip = len(_label(key)) + 2 if key else 0  # the label and ": " before each item
            after_string = False
            for item in value:
                string = isinstance(item, str) and not isinstance(item, _Number)
                if after_string and string:
                    self.splits[len(self.texts) - 1] = Split(skip=skip, patterns=False)
                self._walk(item, key)
                after_string = string
        elif isinstance(value, str):  # a string or a number's token (_Number)
            self._add(value, key)

    def rebuild(self, filtered: Sequence[str]) -> str:
        """The JSON with each text replaced by its filtered text (its label taken off), written
        compactly."""
        if len(filtered) != len(self.texts):
            raise ValueError(f"{len(self.texts)} texts, {len(filtered)} filtered")
        out: list[str] = []
        self._write(self._document, iter(zip(filtered, self._labels, strict=True)), {}, out)
        return "".join(out)

    def _write(
        self, value: Any, filtered: Iterator[tuple[str, str]], keys: dict[str, str], out: list[str]
    ) -> None:
        """*keys*: each key written so far, raw -> filtered (a value's label as the filter left it)."""
        if isinstance(value, dict):
            out.append("{")
            for i, (key, item) in enumerate(value.items()):
                if i:
                    out.append(",")
                keys[key] = next(filtered)[0]
                out.append(_string(keys[key]))
                out.append(":")
                self._write(item, filtered, keys, out)
            out.append("}")
        elif isinstance(value, list):
            out.append("[")
            for i, item in enumerate(value):
                if i:
                    out.append(",")
                self._write(item, filtered, keys, out)
            out.append("]")
        elif isinstance(value, str):  # a string or a number's token (_Number)
            text, key = next(filtered)
            if key:
                text = _unlabelled(text, _label(key), keys.get(key, key))
            number = isinstance(value, _Number) and _NUMBER.fullmatch(text)
            out.append(text if number else _string(text))
        else:  # true, false, null
            out.append(json.dumps(value))


def _label(key: str) -> str:
    """A value's label: its key in lower case (the name recogniser takes a lower-case name,
    "anna schmidt", only in a text all in lower case; the label-needing recognisers read lower
    case)."""
    return key.lower()


def _unlabelled(text: str, label: str, filtered_key: str) -> str:
    """*text* (``<label>: <value>`` filtered) without its label: as given, or as the filter
    left the key; else the whole text (the filter changed the label in place)."""
    for prefix in (f"{label}: ", f"{filtered_key}: ", f"{filtered_key.lower()}: "):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


def _string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


class Gathered:
    """The texts of one request, gathered for the one filter call: each ``add`` is a slot (a
    plain text, or a JSON document's texts), and ``put_back`` gives one filtered text per slot."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self._slots: list[tuple[int, int, JsonTexts | None]] = []  # (start, count, document)

    def add(self, text: str, json_aware: bool = False) -> int:
        """Add *text* (walked as JSON if *json_aware* and it is a JSON object or array); its slot."""
        document = JsonTexts.parse(text) if json_aware else None
        parts = document.texts if document is not None else [text]
        self._slots.append((len(self.texts), len(parts), document))
        self.texts.extend(parts)
        return len(self._slots) - 1

    def splits(self) -> list[Split | None]:
        """For each two consecutive texts, how a value split across them is looked for
        (Detector.detect_texts): between slots (two messages, a message and a tool result) as
        between any two texts; inside one JSON document only where the document says
        (``JsonTexts.splits``: two strings of one array), not between its fields."""
        out: list[Split | None] = [None] * max(len(self.texts) - 1, 0)
        for start, _, document in self._slots:
            if 0 < start < len(self.texts):  # a slot with texts after others (not an empty "[]" last)
                out[start - 1] = EVERY_SPLIT
            if document is not None:
                for i, split in document.splits.items():
                    out[start + i] = split
        return out

    def put_back(self, filtered: Sequence[str]) -> list[str]:
        """One text per slot, from the filter's texts (one per gathered text, in order)."""
        if len(filtered) != len(self.texts):
            raise ValueError(f"{len(self.texts)} texts, {len(filtered)} filtered")
        out = []
        for start, count, document in self._slots:
            part = filtered[start : start + count]
            out.append(part[0] if document is None else document.rebuild(part))
        return out
