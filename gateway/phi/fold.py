"""Folding: the one spelling under which a known value is looked for (its *skeleton*).

What it guarantees:
- ``skeleton`` keeps letters and digits only, one character in for at most one out: lower
  case, without diacritics (``Müller``, ``MULLER``, ``muller`` -> ``muller``), every script's
  digits as 0-9, and Latin letters that do not decompose (ł, ø, đ, æ, þ) as the first letter
  of their transliteration; spaces, punctuation and separators are deleted (``14.03.1968`` and
  ``14 03 1968`` -> ``14031968``).
- ``skeleton_with_map`` gives the same skeleton and, for each of its characters, the index in
  the text it came from, so a match in the skeleton maps back to a span of the original.
- ``variants`` gives the skeletons under which a value may be written: as it is, and with
  umlauts and ø, æ, å, œ, þ spelled out (``Mueller``, ``Soeren``).
The folding is total and deterministic: the same text always folds the same way, with or
without the cp1252 fast path (tests/unit/test_detect.py checks that both agree).

Which library does what: ``unicodedata`` (standard library) decomposes letters (NFKD after
``casefold``) and reads every script's decimal digits; ``anyascii`` (maintained) gives the
transliteration whose first letter stands for a Latin letter with no decomposition. The rest
is by hand, and why: the table itself, because a transliterator maps one character to several
(anyascii's ``ß`` -> ``ss``, ``æ`` -> ``ae``), which would break the position map; the
spelled-out umlauts (ä -> ae), because that is a German writing convention no transliterator
applies (anyascii gives ``ä`` -> ``a``); and 256-entry byte tables for text that encodes as
cp1252, because ``bytes.translate`` runs in C without a dictionary lookup per character on
the gateway's hot path. Look-alikes of other scripts and encoded runs are not folded here:
the detector's input is normalised first (gateway/phi/normalise.py) and encoded runs are
decoded by gateway/phi/encodings.py.
"""

from __future__ import annotations

import unicodedata
from itertools import compress

from anyascii import anyascii

UMLAUT_EXPANSIONS = str.maketrans(
    {"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue", "ß": "ss"}
)


# letters written out in two when typed without their diacritic: "Soeren" for "Søren"
_EXPANSIONS = str.maketrans(
    {
        "ø": "oe",
        "Ø": "Oe",
        "æ": "ae",
        "Æ": "Ae",
        "å": "aa",
        "Å": "Aa",
        "œ": "oe",
        "Œ": "Oe",
        "þ": "th",
        "Þ": "Th",
    }
)


class _FoldTable(dict[int, str | None]):
    """str.translate table, filled on first sight of a character: letters and digits fold to
    one lower-case character without diacritics (ß -> s; spelled-out variants cover "ss"),
    everything else is deleted. One character in, at most one out, so positions map back.
    Latin letters that do not decompose (ł, ø, đ, dotless i, æ) take the first letter of
    their transliteration (anyascii: l, o, d, i, a); digits of every script become 0-9."""

    def __missing__(self, code: int) -> str | None:
        ch = chr(code)
        folded: str | None = None
        if ch.isalnum():
            digit = unicodedata.decimal(ch, None)
            if digit is not None:
                folded = str(digit)
            else:
                base = [c for c in unicodedata.normalize("NFKD", ch.casefold()) if c.isalnum()]
                folded = base[0] if base else ch
                if not folded.isascii() and unicodedata.name(folded, "").startswith("LATIN"):
                    latin = anyascii(folded).lower()
                    folded = latin[0] if latin[:1].isalnum() else folded
        self[code] = folded
        return folded


_FOLD = _FoldTable()


def _byte_tables() -> tuple[bytes, bytes, bytes, bytes]:
    """The same fold and mask as 256-entry byte tables for text that encodes as cp1252
    (nearly all German and English text, with € and typographic quotes): bytes.translate
    runs in C without a dictionary lookup per character."""
    fold, mask, delete, unsafe = bytearray(range(256)), bytearray(256), bytearray(), bytearray()
    for b in range(256):
        try:
            ch = bytes([b]).decode("cp1252")
        except UnicodeDecodeError:
            delete.append(b)
            continue
        folded = _FOLD[ord(ch)]
        if folded is None:
            delete.append(b)
            continue
        try:
            fold[b] = folded.encode("cp1252")[0]  # þ folds to t, æ to a: one cp1252 byte
        except UnicodeEncodeError:
            unsafe.append(b)  # µ folds to Greek μ: such text takes the slow path
        mask[b] = 1
    return bytes(fold), bytes(mask), bytes(delete), bytes(unsafe)


_FOLD_BYTES, _MASK_BYTES, _DELETE_BYTES, _UNSAFE_BYTES = _byte_tables()


def _cp1252(text: str) -> bytes | None:
    """*text* as cp1252 bytes when the byte tables fold it exactly; else None."""
    try:
        raw = text.encode("cp1252")
    except UnicodeEncodeError:
        return None
    return None if any(b in raw for b in _UNSAFE_BYTES) else raw


def skeleton(text: str) -> str:
    if len(text) < 64:  # short values: the dictionary table wins over encoding first
        return text.translate(_FOLD)
    raw = _cp1252(text)
    if raw is None:
        return text.translate(_FOLD)
    return raw.translate(_FOLD_BYTES, _DELETE_BYTES).decode("cp1252")


class _MaskTable(dict[int, str]):
    """str.translate table: letters and digits -> "\\x01", everything else -> "\\x00"."""

    def __missing__(self, code: int) -> str:
        self[code] = "\x01" if chr(code).isalnum() else "\x00"
        return self[code]


_MASK = _MaskTable()


def skeleton_with_map(text: str) -> tuple[str, list[int]]:
    """The skeleton of *text* and, for each of its characters, the index it came from
    (computed in C: a byte mask of the kept characters drives itertools.compress)."""
    raw = _cp1252(text)
    if raw is None:
        mask = text.translate(_MASK).encode("ascii")
        return text.translate(_FOLD), list(compress(range(len(text)), mask))
    skel = raw.translate(_FOLD_BYTES, _DELETE_BYTES).decode("cp1252")
    return skel, list(compress(range(len(text)), raw.translate(_MASK_BYTES)))


def variants(value: str) -> set[str]:
    """Skeletons under which *value* may appear: as written, with umlauts (and ø, æ, å, œ,
    þ) spelled out; without diacritics is the plain skeleton."""
    plain = skeleton(value)
    if value.isascii():
        return {plain} if plain else set()
    out = {plain, skeleton(value.translate(UMLAUT_EXPANSIONS).translate(_EXPANSIONS))}
    return {v for v in out if v}
