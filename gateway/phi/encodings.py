"""Runs of text that are a simple encoding of other text: base64 (standard and URL-safe),
hex, URL percent-encoding. The detector decodes each run and looks for known values and
identifiers in what comes out; a run that holds one is removed whole.

Only runs that decode to readable UTF-8 text count (no control characters), so words,
numbers and binary blobs cost a failed decode and nothing else.
"""

from __future__ import annotations

import base64
import binascii
import re
from itertools import compress
from urllib.parse import unquote_plus

# 12+ characters of the base64 alphabets (hex is a subset), with padding; shorter runs are
# too often words. The look-behind keeps the engine from restarting inside a word.
_RUN = re.compile(r"[A-Za-z0-9+/_-](?<![\w+/=-][A-Za-z0-9+/_-])[\w+/-]{11,}={0,2}(?![\w+/=-])", re.ASCII)
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
_PERCENT = re.compile(r"[^\s%]*(?:%[0-9A-Fa-f]{2}[^\s%]*)+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]")
_PUNCTUATION = ".,;:!?\"'()[]{}<>"
MIN_DECODED = 4  # a decoded text shorter than this holds no identifier worth the lookup


def _text(raw: bytes) -> str | None:
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(decoded) < MIN_DECODED or _CONTROL.search(decoded):
        return None
    return decoded


def _decode(run: str) -> str | None:
    if _HEX.fullmatch(run):
        decoded = _text(bytes.fromhex(run))
        if decoded is not None:
            return decoded
    body = run.rstrip("=")
    if len(body) % 4 == 1:
        return None
    padded = body + "=" * (-len(body) % 4)
    try:
        raw = (
            base64.urlsafe_b64decode(padded)
            if ("-" in body or "_" in body)
            else base64.b64decode(padded, validate=True)
        )
    except (binascii.Error, ValueError):
        return None
    return _text(raw)


def encoded_runs(text: str) -> list[tuple[int, int, str]]:
    """(start, end, decoded text) of every run of *text* that decodes to readable text."""
    out: list[tuple[int, int, str]] = []
    pos = 0
    words = text.split()  # split and filter in C: only words of 12+ characters are looked at
    for word in compress(words, map((11).__lt__, map(len, words))):
        bare = word.strip(_PUNCTUATION)
        if bare.isalpha() and bare[1:].islower():
            continue  # an ordinary word ("Versichertennummer"), not an encoding
        at = text.find(word, pos)
        pos = at + len(word)
        out.extend(_runs_in(text, at, pos))
    if "%" in text:
        for m in _PERCENT.finditer(text):
            try:
                decoded = unquote_plus(m.group(), errors="strict")
            except UnicodeDecodeError:
                continue
            if len(decoded) >= MIN_DECODED and not _CONTROL.search(decoded):
                out.append((m.start(), m.end(), decoded))
    return out


def _runs_in(text: str, start: int, end: int) -> list[tuple[int, int, str]]:
    out: list[tuple[int, int, str]] = []
    for m in _RUN.finditer(text, start, end):
        run = m.group()
        decoded = _decode(run)
        if decoded is not None:
            out.append((m.start(), m.end(), decoded))
        elif "/" in run:  # a path or URL around a base64 piece: the pieces on their own
            pos = m.start()
            for piece in run.split("/"):
                if len(piece) >= 12 and (decoded := _decode(piece)) is not None:
                    out.append((pos, pos + len(piece), decoded))
                pos += len(piece) + 1
    return out
