"""PHI detection: the request's own known values, pattern + checksum recognisers, plug-ins,
and deterministic overlap resolution.

Compiled recognisers rather than Presidio's: the same entities (Presidio's German set has the
KVNR) as precompiled regular expressions with checksum validation, about ten times faster
per message than Presidio's regex-only analyzer (benchmarks/README.md), and with no NLP
engine or tldextract to load or keep offline.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from itertools import compress
from typing import NamedTuple, Protocol

from gateway.phi.checksums import iban_valid, kvnr_valid, luhn_valid

# categories, most specific first: the rank breaks ties between equally long spans
CATEGORIES = (
    "CARD",
    "IBAN",
    "KVNR",
    "EMAIL",
    "ORDER_ID",
    "CUSTOMER_ID",
    "PHONE",
    "DATE",
    "POSTCODE",
    "ADDRESS",
    "NAME",
    "PRICING",
    "OTHER",
)
_RANK = {c: len(CATEGORIES) - i for i, c in enumerate(CATEGORIES)}


class Span(NamedTuple):
    """A finding. A tuple, so it sorts by position and hashes in C (the filter makes dozens
    per message)."""

    start: int
    end: int
    category: str
    source: str = "pattern"  # "known", "dropped" (a minimised-away field), "pattern", a plug-in
    canonical: str = ""  # for known values: the context's own spelling (token and restoration)

    @property
    def length(self) -> int:
        return self.end - self.start


class Recognizer(Protocol):
    """The plug-in point (e.g. an NER model): return the spans found in *text*."""

    name: str

    def analyze(self, text: str) -> Iterable[Span]: ...


def resolve_overlaps(spans: Iterable[Span]) -> list[Span]:
    """Keep a non-overlapping subset, deterministically: longest first; at equal length a
    value the request itself names (a field to remove first) over a pattern match, then the
    more specific category, then the earlier start."""
    source_rank = {"dropped": 0, "known": 1}

    def preference(s: Span) -> tuple[int, int, int, int, str]:
        return (s.start - s.end, source_rank.get(s.source, 2), -_RANK.get(s.category, 0), s.start, s.source)

    ordered = sorted(set(_absorb_patterns(list(spans))), key=preference)
    starts: list[int] = []  # of the spans taken, sorted; their neighbours decide overlaps
    taken: list[Span] = []
    for span in ordered:
        k = bisect_right(starts, span.start)
        if (k and taken[k - 1].end > span.start) or (k < len(taken) and taken[k].start < span.end):
            continue
        starts.insert(k, span.start)
        taken.insert(k, span)
    return taken


def _absorb_patterns(spans: list[Span]) -> list[Span]:
    """A known value and a pattern match of the same category that overlap are one finding
    (``+49 30 123 4567`` around a known ``030 1234567``): the known span grows to cover both,
    so a value the use case may not use is removed whole rather than tokenised as a pattern.
    The original spans stay candidates: if the grown span loses to a longer one, they can
    still cover what it would have covered."""
    known = [s for s in spans if s.source in ("known", "dropped")]
    patterns = [s for s in spans if s.source not in ("known", "dropped")]
    grown = []
    for k in known:
        start, end = k.start, k.end
        for p in patterns:
            if p.category == k.category and p.start < k.end and k.start < p.end:
                start, end = min(start, p.start), max(end, p.end)
        if (start, end) != (k.start, k.end):
            grown.append(k._replace(start=start, end=end))
    return grown + known + patterns


# -- folding: case, diacritics, formatting --------------------------------------------------

UMLAUT_EXPANSIONS = str.maketrans(
    {"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue", "ß": "ss"}
)


class _FoldTable(dict[int, str | None]):
    """str.translate table, filled on first sight of a character: letters and digits fold to
    one lower-case character without diacritics (ß -> s; spelled-out variants cover "ss"),
    everything else is deleted. One character in, at most one out, so positions map back."""

    def __missing__(self, code: int) -> str | None:
        ch = chr(code)
        folded: str | None = None
        if ch.isalnum():
            base = [c for c in unicodedata.normalize("NFKD", ch.casefold()) if c.isalnum()]
            folded = base[0] if base else ch
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
            fold[b] = folded.encode("cp1252")[0]  # þ folds to itself: still one cp1252 byte
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
    """Skeletons under which *value* may appear: as written, with umlauts spelled out."""
    plain = skeleton(value)
    if value.isascii():
        return {plain} if plain else set()
    out = {plain, skeleton(value.translate(UMLAUT_EXPANSIONS))}
    return {v for v in out if v}


class KnownValue(NamedTuple):
    category: str
    skeletons: frozenset[str]
    canonical: str = ""
    allow_suffix_s: bool = False  # names: "Erikas Termin"
    dropped: bool = False  # a field the use case may not use: its value is always removed


class KnownValueMatcher:
    """Finds the request's own values anywhere in the text, whatever the case, spacing,
    punctuation, diacritics or separators (``14.03.1968`` and ``14 03 1968``; IBAN with or
    without spaces; ``Müller``, ``MUELLER``, ``muller``)."""

    def __init__(self, values: Sequence[KnownValue]) -> None:
        self._values = values

    def find(self, text: str) -> list[Span]:
        if not self._values:
            return []
        skel, index = skeleton_with_map(text)
        spans: list[Span] = []
        for value in self._values:
            for sk in value.skeletons:
                if len(sk) < 2:
                    continue
                pos = skel.find(sk)
                while pos >= 0:
                    start = index[pos]
                    end = _whole_token_end(text, start, index[pos + len(sk) - 1] + 1, value.allow_suffix_s)
                    if end is not None:
                        source = "dropped" if value.dropped else "known"
                        spans.append(Span(start, end, value.category, source, value.canonical))
                    pos = skel.find(sk, pos + 1)
        return spans


def _whole_token_end(text: str, start: int, end: int, allow_suffix_s: bool) -> int | None:
    """Where the match ends as a whole token (no letter or digit glued to either side; with
    *allow_suffix_s*, one trailing "s" joins it), or None when it is part of a longer one."""
    if start > 0 and text[start - 1].isalnum():
        return None
    if end == len(text) or not text[end].isalnum():
        return end
    if allow_suffix_s and text[end] in "sS" and (end + 1 == len(text) or not text[end + 1].isalnum()):
        return end + 1
    return None


# -- pattern + checksum recognisers -----------------------------------------------------
# Patterns start with a character class or a literal, not a look-behind, so the regex engine
# can skip ahead; keyword patterns run on the lower-cased text without IGNORECASE (ten times
# faster); word boundaries are checked after the match.

_SEP = r"[ \t\-/().]"
# month names, German and English, full or abbreviated: a three-letter stem and its letters
_MONTHS = r"(?:jan|feb|mär|mae|mar|apr|ma[iy]|jun|jul|aug|sep|o[ck]t|nov|de[cz])[a-zä]{0,6}"
_DAY = r"(?:0?[1-9]|[12]\d|3[01])"

# on the original text. The look-behind comes after the first character ("\\d(?<!\\w\\d)": a
# digit with no word character before it): the engine still skips ahead on that first
# character, and no Python check runs per match.
_CASED: list[tuple[str, re.Pattern[str], int]] = [
    ("CARD", re.compile(r"\d(?<!\w\d)(?:[ \-]?\d){11,18}(?!\w)"), 0),  # only inside _LONG_DIGIT_RUN
    ("IBAN", re.compile(r"[A-Z](?<!\w[A-Z])[A-Z]\d{2}(?: ?[A-Z0-9]){11,30}(?!\w)"), 0),
    ("KVNR", re.compile(r"[A-Z](?<!\w[A-Z])\d{9}(?!\w)"), 0),
    ("EMAIL", re.compile(r"@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}(?!\w)"), 0),  # local part: _LOCAL_PART
    ("ORDER_ID", re.compile(r"#\s?(\d{6,12})(?!\w)"), 1),
    (
        "PHONE",
        re.compile(
            rf"(?:\+(?<![\w+.\-]\+)\d{{1,3}}{_SEP}*(?:\(0\){_SEP}*)?"
            rf"|0(?<![\w+.\-/]0)(?:0\d{{2,3}}{_SEP}*|\d{{2,5}}{_SEP}{{0,3}}))"
            rf"\d(?:{_SEP}{{0,2}}\d){{3,13}}(?!\w)"
        ),
        0,
    ),
    # the shape here, the day and month ranges in _date_valid
    ("DATE", re.compile(r"\d(?<![\w.]\d)\d{0,3}([./-])\d{1,2}\1\d{2,4}(?!\w)"), 0),
    ("POSTCODE", re.compile(r"(\d(?<![\w.,]\d)\d{4})\s+(?=[A-ZÄÖÜ][a-zäöüß]{2,})"), 1),
]
# on the lower-cased text
_LOWER: list[tuple[str, re.Pattern[str], int, tuple[str, ...]]] = [
    (
        "ORDER_ID",
        re.compile(
            r"(?:order|bestell|auftrag|rechnung)\w*(?:\s*(?:no\.?|nr\.?|number|nummer|id))?"
            r"\s*[:#]?\s*#?\s*(\d[\d\-]{2,14}\d)(?!\w)"
        ),
        1,
        ("order", "bestell", "auftrag", "rechnung"),
    ),
    (
        "CUSTOMER_ID",
        re.compile(
            r"(?:customer|kunde|client)\w*(?:\s*(?:no\.?|nr\.?|number|nummer|id))?\s*[:#]?\s*#?\s*"
            r"(\d[\d\-]{1,14}\d)(?!\w)"
        ),
        1,
        ("customer", "kunde", "client"),
    ),
    (
        "POSTCODE",
        re.compile(r"(?:plz|postleitzahl|postcode|post code|zip)\s*:?\s*(\d{5})(?!\w)"),
        1,
        ("plz", "postleitzahl", "post", "zip"),
    ),
    # "14. März 1968", "14 March 1968", "March 14, 1968": anchored on the month name
    (
        "DATE",
        re.compile(rf"(?:{_MONTHS})\.?\s+(?:{_DAY}(?:st|nd|rd|th)?,?\s+)?\d{{4}}(?!\w)"),
        0,
        (
            "jan",
            "feb",
            "mär",
            "mae",
            "mar",
            "apr",
            "mai",
            "may",
            "jun",
            "jul",
            "aug",
            "sep",
            "okt",
            "oct",
            "nov",
            "dez",
            "dec",
        ),
    ),
]
_DAY_BEFORE = re.compile(rf"{_DAY}\.?\s+$")

_LONG_DIGIT_RUN = re.compile(r"\d[\d \-]{10,}\d")
_LOCAL_PART = re.compile(r"[\w.+-]{1,64}$")


def _date_valid(text: str) -> bool:
    parts = re.split(r"[./-]", text)
    if len(parts[0]) == 4:  # 1968-03-14
        year, month, day = parts
        if len(month) != 2 or len(day) != 2 or text[4] != "-":
            return False
    else:  # 14.03.1968, 14.3.68, 03/14/1968
        day, month, year = parts
        if len(day) > 2 or len(year) not in (2, 4):
            return False
        if text[len(day)] == "/" and int(day) <= 12 < int(month) <= 31:
            day, month = month, day  # US order
    return 1 <= int(month) <= 12 and 1 <= int(day) <= 31


_VALIDATORS = {
    "CARD": lambda s: luhn_valid(re.sub(r"[ \-]", "", s)),
    "IBAN": iban_valid,
    "KVNR": kvnr_valid,
    "DATE": _date_valid,
}


def find_patterns(text: str) -> list[Span]:
    spans: list[Span] = []
    for category, pattern, group in _CASED:
        validate = _VALIDATORS.get(category)
        if category == "CARD":  # cards need 12+ digits: look only inside such runs
            found = [
                m
                for run in _LONG_DIGIT_RUN.finditer(text)
                for m in pattern.finditer(text, run.start(), run.end())
            ]
        elif category in ("EMAIL", "ORDER_ID"):
            found = list(pattern.finditer(text)) if ("@" if category == "EMAIL" else "#") in text else []
        else:
            found = list(pattern.finditer(text))
        for m in found:
            start, end = m.span(group)
            if category == "EMAIL":
                local = _LOCAL_PART.search(text, max(0, start - 64), start)
                if local is None or (local.start() > 0 and text[local.start() - 1].isalnum()):
                    continue
                start = local.start()
            if validate is None or validate(text[start:end]):
                spans.append(Span(start, end, category))
    low = text.lower()
    if len(low) != len(text):  # a rare character changed length when lower-cased
        low = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    for category, pattern, group, gate in _LOWER:
        if not any(word in low for word in gate):  # a substring test is far cheaper than a scan
            continue
        for m in pattern.finditer(low):
            start, end = m.span(group)
            if category == "DATE":
                if day := _DAY_BEFORE.search(low, max(0, start - 5), start):
                    start = day.start()  # "14. März 1968": take the day in front as well
                if start > 0 and low[start - 1].isalnum():
                    continue
            spans.append(Span(start, end, category))
    return spans


class Detector:
    """Everything found in one text, overlaps resolved."""

    def __init__(self, known: Sequence[KnownValue], plugins: Sequence[Recognizer] = ()) -> None:
        self._known = KnownValueMatcher(known)
        self._plugins = plugins

    def detect(self, text: str) -> list[Span]:
        spans = self._known.find(text)
        spans.extend(find_patterns(text))
        for plugin in self._plugins:
            spans.extend(plugin.analyze(text))
        return resolve_overlaps(spans)
