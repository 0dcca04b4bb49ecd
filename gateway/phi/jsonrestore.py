"""Restoration inside JSON text: tool-call arguments, and answers whose client asked for JSON
(``response_format``), plain (:func:`restore_json`) and streamed (:class:`JsonStreamRestorer`).

The model writes JSON that holds this request's tokens; the client must get JSON that holds the
originals. Where a token stands decides how its original goes in:

- inside a string literal, JSON-escaped: ``json.dumps(original, ensure_ascii=False)[1:-1]``
  (quote, backslash, newline and the other control characters escaped; everything else, umlauts
  too, as it is). A name written ``Erika "Eri" Müller`` or a street on two lines keeps the
  document valid, and ``json.loads`` gives the original back exactly.
- outside a string (an FF1 token the model wrote as a number): as it is, with one exception: an
  original of digits only with leading zeros (``000123``) where a number starts loses them
  (``123``): JSON allows no leading zero, and the number it stands for is the same. An original
  that is no number (``030 1234567``) goes in as it is; the model's JSON had no valid place for
  it as a number either way.

Where a token stands is read from the model's own characters by a lexical state machine
(:class:`JsonLexer`: inside a string or not, inside an escape sequence or not), the token's
characters included. It needs no parser and no complete document: it reads fragments as they
arrive, in one linear pass, and it never raises; on malformed JSON it restores by the state it
has reached. Tokens contain no quote and no backslash, so the state where a token starts is the
state after the model's text before it, which has already gone out: the streamed restorer holds
back no more than :class:`gateway.phi.tokenise.StreamRestorer` does (a possible partial token).
A token that starts inside an escape sequence (the model wrote ``\\u00e9`` and the hex digits
run into a token's characters) is not a token the model wrote: it is left as it is.

Written by hand because no library does this: ``json`` parses complete documents and stops at
the first error; incremental JSON parsers (ijson, jiter's partial mode) yield values, not the
positions in the text where the characters of a token stand, and fail on malformed input.
"""

from __future__ import annotations

import json
import re

from gateway.phi.tokenise import StreamRestorer, TokenScanner

_STRING_STOP = re.compile(r'["\\]')
_HEX = frozenset("0123456789abcdefABCDEF")
_NUMBER_GOES_ON = frozenset("0123456789.eE+")  # after these a number's digits continue
_AFTER_BACKSLASH = 5  # JsonLexer.escape: the next character says which escape this is


class JsonLexer:
    """The lexical state of JSON text read so far: inside a string literal or not, inside an
    escape sequence or not (``escape``: 5 right after a backslash, 1 to 4 the hex digits of a
    ``\\u`` escape still to come, 0 none), the last character read. ``advance`` reads more
    text; it jumps from quote to quote and backslash to backslash, so the work per character
    is done in C."""

    __slots__ = ("escape", "in_string", "last")

    def __init__(self) -> None:
        self.in_string = False
        self.escape = 0
        self.last = ""

    def escapes(self, char: str) -> bool:
        """Whether *char*, read next, would be part of an escape sequence."""
        return self.escape == _AFTER_BACKSLASH or (self.escape > 0 and char in _HEX)

    def advance(self, text: str, pos: int, end: int) -> None:
        """Read ``text[pos:end]``."""
        if pos >= end:
            return
        in_string, escape = self.in_string, self.escape
        while pos < end:
            if escape:
                char = text[pos]
                if escape == _AFTER_BACKSLASH:
                    escape = 4 if char == "u" else 0
                    pos += 1
                elif char in _HEX:
                    escape -= 1
                    pos += 1
                else:  # a malformed \u escape: this character is read as itself
                    escape = 0
            elif in_string:
                stop = _STRING_STOP.search(text, pos, end)
                if stop is None:
                    break
                pos = stop.end()
                if stop.group() == '"':
                    in_string = False
                else:
                    escape = _AFTER_BACKSLASH
            else:
                quote = text.find('"', pos, end)
                if quote < 0:
                    break
                in_string, pos = True, quote + 1
        self.in_string, self.escape = in_string, escape
        self.last = text[end - 1]


def _splice(
    text: str,
    hits: list[tuple[int, int, str]],
    end: int,
    originals: dict[str, str],
    lexer: JsonLexer,
    escaped: dict[str, str],
) -> tuple[str, int]:
    """(``text[:end]`` with the *hits* replaced as their places in the JSON text ask, the number
    replaced); *lexer* has read the text before *text* and reads ``text[:end]``."""
    out: list[str] = []
    pos = 0
    n = 0
    for start, stop, token in hits:
        lexer.advance(text, pos, start)
        out.append(text[pos:start])
        if lexer.escapes(token[0]):
            out.append(token)  # inside an escape sequence: not a token the model wrote
        elif lexer.in_string:
            value = escaped.get(token)
            if value is None:
                value = escaped[token] = json.dumps(originals[token], ensure_ascii=False)[1:-1]
            out.append(value)
            n += 1
        else:
            out.append(_bare(originals[token], lexer.last))
            n += 1
        lexer.advance(text, start, stop)
        pos = stop
    out.append(text[pos:end])
    lexer.advance(text, pos, end)
    return "".join(out), n


def _bare(original: str, before: str) -> str:
    """A token's original outside a string, *before* the model's character before the token."""
    if original.isascii() and original.isdigit() and before not in _NUMBER_GOES_ON:
        return original.lstrip("0") or "0"  # a number starts here: JSON allows no leading zero
    return original


def restore_json(
    text: str, originals: dict[str, str], scanner: TokenScanner | None = None
) -> tuple[str, int]:
    """(JSON *text* with every known token replaced by its original, JSON-escaped inside
    strings; the number replaced). Linear in the text's length; never raises on malformed
    JSON."""
    if not originals:
        return text, 0
    hits = (scanner or TokenScanner(originals)).find(text)
    if not hits:
        return text, 0
    return _splice(text, hits, len(text), originals, JsonLexer(), {})


class JsonStreamRestorer(StreamRestorer):
    """:class:`StreamRestorer` for JSON text arriving in fragments (streamed tool-call
    arguments, a streamed JSON answer): the same ``feed``/``flush``, the same hold-back (only a
    possible partial token), the originals put in as :func:`restore_json` does, reading the
    JSON state across fragment boundaries. The concatenated output equals
    ``restore_json`` of the concatenated input, however the input is cut."""

    def __init__(self, originals: dict[str, str], scanner: TokenScanner | None = None) -> None:
        super().__init__(originals, scanner)
        self._lexer = JsonLexer()
        self._escaped: dict[str, str] = {}

    def _splice(self, buf: str, hits: list[tuple[int, int, str]], end: int) -> str:
        text, n = _splice(buf, hits, end, self._originals, self._lexer, self._escaped)
        self.restored += n
        return text
