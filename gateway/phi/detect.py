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
from bisect import bisect_right, insort
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

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


@dataclass(frozen=True, order=True)
class Span:
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
    spans = _absorb_patterns(list(spans))
    ordered = sorted(
        set(spans),
        key=lambda s: (-s.length, source_rank.get(s.source, 2), -_RANK.get(s.category, 0), s.start, s.source),
    )
    taken: list[Span] = []  # kept sorted by start; neighbours decide overlaps
    for span in ordered:
        k = bisect_right(taken, span.start, key=lambda t: t.start)
        if k and taken[k - 1].end > span.start:
            continue
        if k < len(taken) and taken[k].start < span.end:
            continue
        insort(taken, span, key=lambda t: t.start)
    return taken


def _absorb_patterns(spans: list[Span]) -> list[Span]:
    """A known value and a pattern match of the same category that overlap are one finding
    (``+49 30 123 4567`` around a known ``030 1234567``): the known span grows to cover both,
    so a value the use case may not use is removed whole rather than tokenised as a pattern."""
    known = [s for s in spans if s.source in ("known", "dropped")]
    if not known:
        return spans
    out: list[Span] = []
    absorbed: set[Span] = set()
    grown: dict[Span, Span] = {}
    for p in spans:
        if p.source in ("known", "dropped"):
            continue
        for k in known:
            g = grown.get(k, k)
            if k.category == p.category and p.start < g.end and g.start < p.end:
                grown[k] = Span(min(g.start, p.start), max(g.end, p.end), g.category, g.source, g.canonical)
                absorbed.add(p)
    for s in spans:
        if s in absorbed:
            continue
        out.append(grown.get(s, s))
    return out


# -- folding: case, diacritics, formatting --------------------------------------------------

_UMLAUT_EXPANSIONS = str.maketrans(
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
_NOT_ALNUM = re.compile(r"[\W_]+")


def skeleton(text: str) -> str:
    return text.translate(_FOLD)


class IndexMap:
    """Skeleton position -> index in the original text, from the runs the fold deleted
    (fewer than the characters it kept, so cheaper to list)."""

    def __init__(self, text: str) -> None:
        self._starts: list[int] = []  # skeleton position where each deleted run was
        self._shift: list[int] = []  # characters deleted up to and including that run
        deleted = 0
        for m in _NOT_ALNUM.finditer(text):
            deleted += m.end() - m.start()
            self._starts.append(m.end() - deleted)
            self._shift.append(deleted)

    def __getitem__(self, pos: int) -> int:
        k = bisect_right(self._starts, pos)
        return pos + (self._shift[k - 1] if k else 0)


def skeleton_with_map(text: str) -> tuple[str, IndexMap]:
    """The skeleton of *text* and the map from its positions back to *text*."""
    return text.translate(_FOLD), IndexMap(text)


def variants(value: str) -> set[str]:
    """Skeletons under which *value* may appear: as written, with umlauts spelled out."""
    out = {skeleton(value), skeleton(value.translate(_UMLAUT_EXPANSIONS))}
    return {v for v in out if v}


@dataclass(frozen=True)
class KnownValue:
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
                    end = index[pos + len(sk) - 1] + 1
                    if _bounded(text, start, end, value.allow_suffix_s):
                        end = _extend_suffix(text, end, value.allow_suffix_s)
                        source = "dropped" if value.dropped else "known"
                        spans.append(Span(start, end, value.category, source, value.canonical))
                    pos = skel.find(sk, pos + 1)
        return spans


def _bounded(text: str, start: int, end: int, allow_suffix_s: bool) -> bool:
    """The match is a whole token: no letter or digit glued to either side."""
    if start > 0 and text[start - 1].isalnum():
        return False
    return not (
        end < len(text)
        and text[end].isalnum()
        and not (
            allow_suffix_s and text[end] in "sS" and (end + 1 == len(text) or not text[end + 1].isalnum())
        )
    )


def _extend_suffix(text: str, end: int, allow_suffix_s: bool) -> int:
    if allow_suffix_s and end < len(text) and text[end] in "sS":
        return end + 1
    return end


# -- pattern + checksum recognisers -----------------------------------------------------
# Patterns start with a character class or a literal, not a look-behind, so the regex engine
# can skip ahead; keyword patterns run on the lower-cased text without IGNORECASE (ten times
# faster); word boundaries are checked after the match.

_SEP = r"[ \t\-/().]"
_MONTHS = (
    "januar|februar|märz|maerz|april|mai|juni|juli|august|september|oktober|november|dezember|"
    "january|february|march|may|june|july|october|december|"
    "jan|feb|mär|mar|apr|jun|jul|aug|sept|sep|okt|oct|nov|dez|dec"
)
_DAY = r"(?:0?[1-9]|[12]\d|3[01])"

# on the original text
_CASED: list[tuple[str, re.Pattern[str], int]] = [
    ("CARD", re.compile(r"\d(?:[ \-]?\d){11,18}"), 0),
    ("IBAN", re.compile(r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}"), 0),
    ("KVNR", re.compile(r"[A-Z]\d{9}"), 0),
    ("EMAIL", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}"), 0),
    ("ORDER_ID", re.compile(r"#\s?(\d{6,12})"), 1),
    (
        "PHONE",
        re.compile(
            rf"(?:\+\d{{1,3}}{_SEP}*(?:\(0\){_SEP}*)?|00\d{{2,3}}{_SEP}*|0\d{{2,5}}{_SEP}{{0,3}})"
            rf"\d(?:{_SEP}{{0,2}}\d){{3,13}}"
        ),
        0,
    ),
    (
        "DATE",
        re.compile(
            rf"{_DAY}[./-](?:0?[1-9]|1[0-2])[./-](?:\d{{4}}|\d{{2}})"
            r"|\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
        ),
        0,
    ),
    ("POSTCODE", re.compile(r"(\d{5})\s+(?=[A-ZÄÖÜ][a-zäöüß]{2,})"), 1),
]
# on the lower-cased text
_LOWER: list[tuple[str, re.Pattern[str], int]] = [
    (
        "ORDER_ID",
        re.compile(
            r"(?:order|bestell|auftrag|rechnung)\w*(?:\s*(?:no\.?|nr\.?|number|nummer|id))?"
            r"\s*[:#]?\s*#?\s*(\d[\d\-]{2,14}\d)"
        ),
        1,
    ),
    (
        "CUSTOMER_ID",
        re.compile(
            r"(?:customer|kunde|client)\w*(?:\s*(?:no\.?|nr\.?|number|nummer|id))?\s*[:#]?\s*#?\s*"
            r"(\d[\d\-]{1,14}\d)"
        ),
        1,
    ),
    ("POSTCODE", re.compile(r"(?:plz|postleitzahl|postcode|post code|zip)\s*:?\s*(\d{5})"), 1),
    # "14. März 1968", "14 March 1968", "March 14, 1968": anchored on the month name
    ("DATE", re.compile(rf"(?:{_MONTHS})\.?\s+(?:{_DAY}(?:st|nd|rd|th)?,?\s+)?\d{{4}}"), 0),
]
_DAY_BEFORE = re.compile(rf"{_DAY}\.?\s+$")

_VALIDATORS = {
    "CARD": lambda s: luhn_valid(re.sub(r"[ \-]", "", s)),
    "IBAN": iban_valid,
    "KVNR": kvnr_valid,
}


def _free(text: str, start: int, end: int, before: str = "") -> bool:
    """No word character glued to the match (nor one of *before* in front of it)."""
    if start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_" or text[start - 1] in before):
        return False
    return not (end < len(text) and (text[end].isalnum() or text[end] == "_"))


def find_patterns(text: str) -> list[Span]:
    spans: list[Span] = []
    for category, pattern, group in _CASED:
        if category == "EMAIL" and "@" not in text:
            continue
        for m in pattern.finditer(text):
            start, end = m.span(group)
            if not _free(text, start, end, ".+-" if category in ("EMAIL", "PHONE") else ""):
                continue
            validate = _VALIDATORS.get(category)
            if validate is not None and not validate(text[start:end]):
                continue
            spans.append(Span(start, end, category, "pattern"))
    low = text.lower()
    if len(low) != len(text):  # a rare character changed length when lower-cased
        low = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    for category, pattern, group in _LOWER:
        for m in pattern.finditer(low):
            start, end = m.span(group)
            if category == "DATE" and (day := _DAY_BEFORE.search(low, max(0, start - 5), start)):
                start = day.start()  # "14. März 1968": take the day in front as well
            if _free(low, start, end):
                spans.append(Span(start, end, category, "pattern"))
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
