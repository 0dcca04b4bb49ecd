"""Text as the recognisers should see it, with a map back to the original positions.

People (and programs) write the same value in many encodings of the same characters:
fullwidth or mathematical letters (Unicode compatibility forms), Cyrillic or Greek letters
that look like Latin ones, digits of other scripts, zero-width and no-break characters
inside a number, text pasted from a JSON document (``M\\u00fcller``, ``030\\/1234567``). The
detector runs on the normalised text and maps every span back to the original, which the
tokeniser then replaces.

- Compatibility forms: NFKC (``unicodedata``), per character.
- Digits of every script: ``unicodedata.decimal`` (Arabic-Indic, Devanagari, fullwidth, …).
- Confusable letters: Unicode's confusables.txt as shipped by ``confusable_homoglyphs``
  (only letters of another script that look like a Latin letter or digit are mapped).
- Zero-width and other format characters (category Cf, the soft hyphen) are deleted; every
  space separator (no-break, narrow no-break, thin, figure space, …) becomes a space.
- JSON string escapes inside the text: ``\\uXXXX`` (with surrogate pairs), ``\\/``, ``\\"``,
  ``\\\\``, ``\\n``, ``\\t``, ``\\r``, ``\\b``, ``\\f``.

Text of ASCII, Latin-1 and Latin Extended letters with ordinary punctuation (nearly all German
and English text) needs none of this: one regular-expression scan finds that out and the
text is used as it is.
"""

from __future__ import annotations

import re
import unicodedata
from typing import NamedTuple

# Characters that never need normalising: ASCII but the backslash, Latin-1 but the no-break
# space and soft hyphen, Latin Extended-A/B, typographic dashes, quotes and the euro sign.
# Anything else, or a JSON escape, sends the text through normalise().
_SAFE = r"\x00-\x5b\x5d-\x9f\xa1-\xac\xae-\u024f\u2010-\u2027\u2030-\u205e\u20ac"
_ESCAPE = r"\\(?:u[0-9a-fA-F]{4}|[/\"\\bfnrt])"
_SUSPECT = re.compile(rf"[^{_SAFE}]")  # one character class: the engine scans for it in C
_ESCAPE_AT = re.compile(_ESCAPE)
_SIMPLE_ESCAPES = {"/": "/", '"': '"', "\\": "\\", "b": " ", "f": " ", "n": "\n", "r": "\r", "t": "\t"}


class Normalised(NamedTuple):
    """The normalised text; for each of its characters, the original [start, end)."""

    text: str
    starts: list[int]
    ends: list[int]

    def original(self, start: int, end: int) -> tuple[int, int]:
        """The original span of normalised characters [start, end) (end > start)."""
        return self.starts[start], self.ends[end - 1]


def _confusable(ch: str) -> str | None:
    """The Latin letter or digit *ch* (a letter of another script) is confusable with."""
    from confusable_homoglyphs import confusables  # type: ignore[import-untyped]  # 60 ms: loaded on first need

    found = confusables.is_confusable(ch, preferred_aliases=["latin", "common"], greedy=True)
    if not found:
        return None
    for glyph in found[0]["homoglyphs"]:
        target = glyph["c"]
        if len(target) == 1 and target.isascii() and target.isalnum():
            if ch.isupper() and target == "l":  # Cyrillic capital I: confusables.txt says l
                return "I"
            return str(target)
    return None


class _Table(dict[int, str]):
    """str.translate table: code point -> its normal form, filled on first sight."""

    def __missing__(self, code: int) -> str:
        out = self[code] = _normal_form(chr(code))
        return out


class _Lengths(dict[int, str]):
    """str.translate table: code point -> chr(length of its normal form), so one translate
    tells whether a text keeps one character for one (the position map is then the
    identity) and where it does not."""

    def __missing__(self, code: int) -> str:
        out = self[code] = chr(len(_TABLE[code]))
        return out


def _normal_form(ch: str) -> str:
    if ch == "\u00ad" or unicodedata.category(ch) == "Cf":  # soft hyphen, zero-width, joiners, BOM
        return ""
    if unicodedata.category(ch) in ("Zs", "Zl", "Zp"):
        return " "
    out = []
    for c in unicodedata.normalize("NFKC", ch):
        digit = unicodedata.decimal(c, None)
        if digit is not None:
            out.append(str(digit))
        elif not c.isascii() and c.isalpha() and not unicodedata.name(c, "").startswith("LATIN"):
            out.append(_confusable(c) or c)
        else:
            out.append(c)
    return "".join(out)


_TABLE = _Table()
_LENGTHS = _Lengths()


def normalise(text: str) -> Normalised | None:
    """*text* normalised with its position map, or None when nothing changes."""
    if _SUSPECT.search(text) is None:
        return None
    parts: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    pos = 0
    for escape in _ESCAPE_AT.finditer(text) if "\\" in text else ():
        if escape.start() < pos:
            continue  # the low half of a surrogate pair, already decoded
        _segment(text, pos, escape.start(), parts, starts, ends)
        at, end = escape.span()
        token = escape.group()
        if token[1] == "u":
            code = int(token[2:], 16)
            low = _LOW_SURROGATE.match(text, end) if 0xD800 <= code < 0xDC00 else None
            if low is not None:  # a surrogate pair: one character
                code = 0x10000 + ((code - 0xD800) << 10) + (int(low.group(1), 16) - 0xDC00)
                end = low.end()
            decoded = _TABLE[code] if not 0xD800 <= code < 0xE000 else ""
        else:
            decoded = _SIMPLE_ESCAPES[token[1]]
        parts.append(decoded)
        starts.extend([at] * len(decoded))
        ends.extend([end] * len(decoded))
        pos = end
    _segment(text, pos, len(text), parts, starts, ends)
    out = "".join(parts)
    return None if out == text else Normalised(out, starts, ends)


def _segment(text: str, start: int, end: int, parts: list[str], starts: list[int], ends: list[int]) -> None:
    """Normalise text[start:end] (no escapes in it) onto *parts* and the position map."""
    if start >= end:
        return
    segment = text[start:end]
    parts.append(segment.translate(_TABLE))
    lengths = segment.translate(_LENGTHS)
    if not lengths.strip("\x01"):  # one character for one: the identity map
        starts.extend(range(start, end))
        ends.extend(range(start + 1, end + 1))
        return
    for i, n in enumerate(map(ord, lengths), start):  # deletions or expansions: rare
        starts.extend([i] * n)
        ends.extend([i + 1] * n)


_LOW_SURROGATE = re.compile(r"\\u(d[c-f][0-9a-f]{2})", re.IGNORECASE)
