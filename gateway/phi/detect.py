"""PHI detection: the request's own known values, pattern + checksum recognisers, plug-ins,
and deterministic overlap resolution.

Compiled recognisers rather than Presidio's: the same entities (Presidio's German set has the
KVNR) as precompiled regular expressions with checksum validation, about ten times faster
per message than Presidio's regex-only analyzer (benchmarks/README.md), and with no NLP
engine or tldextract to load or keep offline.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from itertools import accumulate
from typing import Any, NamedTuple, Protocol

import phonenumbers

from gateway.phi.checksums import IBAN_LENGTHS, iban_valid, kvnr_valid, luhn_valid
from gateway.phi.encodings import encoded_runs
from gateway.phi.fold import skeleton_with_map
from gateway.phi.normalise import normalise

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


def resolve_overlaps(spans: Iterable[Span], text: str | None = None) -> list[Span]:
    """Keep a non-overlapping subset, deterministically: longest first; at equal length a
    value the request itself names (a field to remove first) over a pattern match, then the
    more specific category, then the earlier start; then, given the *text*, a known spelling
    that is the text's own (``Wendy Harrison`` written so is restored so, not as the context's
    ``WENDY HARRISON``); the rest of the span's fields break the remaining ties (two spellings
    used to be taken in the set's order, which changes with the process's hash seed)."""
    source_rank = {"dropped": 0, "known": 1}

    def preference(s: Span) -> tuple[int, int, int, int, str, bool, str, str]:
        foreign = text is not None and s.canonical != text[s.start : s.end]
        return (s.start - s.end, source_rank.get(s.source, 2), -_RANK.get(s.category, 0), s.start, s.source,
                foreign, s.category, s.canonical)  # fmt: skip

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
    A grown span stands for the text it covers, not for the known value (``canonical`` empty):
    a known first name grown over the name recogniser's ``Erika Schmidt`` must restore as
    ``Erika Schmidt``, not as ``Erika``. The original spans stay candidates: if the grown span
    loses to a longer one, they can still cover what it would have covered."""
    known = [s for s in spans if s.source in ("known", "dropped")]
    patterns = [s for s in spans if s.source not in ("known", "dropped")]
    grown = []
    for k in known:
        start, end = k.start, k.end
        for p in patterns:
            if p.category == k.category and p.start < k.end and k.start < p.end:
                start, end = min(start, p.start), max(end, p.end)
        if (start, end) != (k.start, k.end):
            grown.append(k._replace(start=start, end=end, canonical=""))
    return grown + known + patterns


# -- the request's own values, in every spelling (gateway/phi/fold.py) ---------------------


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
                    if value.category == "DATE":  # a date-time: 1968-03-14T09:30, 14.03.1968 09:30 Uhr
                        time = _TIME_AFTER.match(text, index[pos + len(sk) - 1] + 1)
                        if time is not None and (start == 0 or not text[start - 1].isalnum()):
                            end = time.end()
                    if end is not None:
                        source = "dropped" if value.dropped else "known"
                        spans.append(Span(start, end, value.category, source, value.canonical))
                    pos = skel.find(sk, pos + 1)
        return spans


_TIME_AFTER = re.compile(
    r"(?:[Tt]|,?[ \t]+(?:um[ \t]+|at[ \t]+)?)\d{1,2}[:.]\d{2}(?:[:.]\d{2}(?:[.,]\d+)?)?"
    r"(?:[ \t]*(?:[Zz]|[+-]\d{2}:?\d{2}|Uhr|h|[ap]\.?m\.?))?(?!\w)"
)


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

_HOUSE_NUMBER = r"[ \t]*\d{1,4}(?:[ \t]?[a-zA-Z](?!\w)|[-/]\d{1,4})?(?!\w)"
# glued to the name ("Hauptstraße") or a word of its own after an adjective ("Berliner Straße");
# "ring" only after three letters (not "Bring 3 Tabletten")
_DE_STREET = re.compile(
    r"[A-ZÄÖÜ](?<![\w\-][A-ZÄÖÜ])(?:[\wäöüß]*(?:-[A-ZÄÖÜ]?[\wäöüß]+)*?-?"
    r"(?i:stra(?:ß|ss)e|str\.|weg|allee|platz|gasse|damm|ufer|chaussee|steig|pfad)"
    r"|[\wäöüß]{2,}(?:-[A-ZÄÖÜ]?[\wäöüß]+)*?-?(?i:ring)"
    r"|[a-zäöüß]+er[ \t](?:Stra(?:ß|ss)e|Str\.|Weg|Allee|Platz|Gasse|Ring|Damm))" + _HOUSE_NUMBER
)
# street suffixes of USPS Publication 28, appendix C1 (the common ones; UK and Irish streets use
# the same words), full or in the USPS abbreviation
# a street word right before a house number: the cheap test that lets most texts skip _DE_STREET
_DE_STREET_GATE = re.compile(
    r"(?i:stra(?:ß|ss)e|str\.|weg|allee|platz|gasse|damm|ufer|chaussee|steig|pfad|ring)[ \t]*\d"
)
# _DE_STREET_GATE's matches (it stays as their definition), found faster: a case-insensitive
# alternation is tried at every position of the text (~0.19 ms per 1 KB), a character class is
# scanned for. Every street word ends in one of these characters (no other character matches
# them case-insensitively) and is at most eight characters long; the word itself is then
# matched right before it.
_DE_STREET_GATE_END = re.compile(r"[eEgGzZmMrRdD.][ \t]*\d")
_DE_STREET_WORD = re.compile(
    r"(?i:stra(?:ß|ss)e|str\.|weg|allee|platz|gasse|damm|ufer|chaussee|steig|pfad|ring)\Z"
)


def _de_street_gates(text: str) -> list[tuple[int, int]]:
    """The spans of _DE_STREET_GATE.finditer(text)."""
    gates = []
    for end in _DE_STREET_GATE_END.finditer(text):
        word_end = end.start() + 1
        word = _DE_STREET_WORD.search(text, max(0, word_end - 8), word_end)
        if word is not None:
            gates.append((word.start(), end.end()))
    return gates


_TOWN = r"[A-Z][A-Za-z'\u2019]{2,}"  # a word of a British town's name ("O'Donnellstad")
_UK_POSTCODE = re.compile(r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z]?\d[A-Z\d]?[ \t]?\d[A-Z]{2}(?![A-Za-z0-9])")
_WORD_START = re.compile(r"(?<![\w\-])[A-ZÄÖÜ]")


def _de_streets(text: str) -> list[Span]:
    """German street addresses: the pattern tried only at the word starts in the two words
    before each street word that a house number follows, the farthest first (the whole name)."""
    found: list[Span] = []
    end = -1
    for gate_start, gate_end in _de_street_gates(text):
        if gate_start < end:
            continue  # inside the address found last
        lo = text.rfind(" ", 0, max(0, text.rfind(" ", 0, gate_start)))
        for start in (m.start() for m in _WORD_START.finditer(text, max(lo, 0), gate_start + 1)):
            match = _DE_STREET.match(text, start)
            if match is not None and match.end() >= gate_end:
                found.append(Span(start, match.end(), "ADDRESS"))
                end = match.end()
                break
    return found


_EN_SUFFIX_WORDS = (
    "alley allee aly avenue ave bay bend bluff bluffs blvd boulevard branch bridge brook brooks burg "
    "burgs bypass byp camp canyon cape causeway center centre circle circles cir cliff cliffs close "
    "club common corner corners course court courts ct cove coves creek crescent crest crossing "
    "cswy curve dale dam divide dr drive drives estate estates expressway extension falls ferry field "
    "fields flat flats ford fords forest forge forges fork forks fort freeway garden gardens gateway "
    "glen glens green greens grove groves harbor harbour haven heights highway hill hills hollow hwy "
    "inlet island islands isle junction key keys knoll knolls lake lakes land landing lane ln light "
    "lights loaf lock locks lodge loop mall manor manors meadow meadows mews mill mills mission motorway "
    "mount mountain mountains neck orchard oval overpass park parks parkway parade pass passage path "
    "pike pine pines pkwy place pl plain plains plaza point points port ports prairie radial ramp "
    "ranch rapid rapids rd rest ridge ridges river road roads route row rue run shoal shoals shore "
    "shores skyway spring springs spur square squares sq st station stravenue stream street streets "
    "summit terrace ter throughway trace track trafficway trail trailer tunnel turnpike underpass union "
    "unions valley valleys viaduct view views village villages ville vista walk walks wall way ways "
    "well wells"
)
_EN_SUFFIX_SET = frozenset(_EN_SUFFIX_WORDS.split())
# a house number, then up to four words, the first capitalised: _en_streets finds the suffix
_EN_STREET = re.compile(
    r"\d(?<![\w.,]\d)\d{0,4}[A-Za-z]?,?[ \t]+[A-Z][A-Za-z'\u2019]*(?:[ \t]+[A-Za-z'\u2019]+\.?){1,3}"
)
_EN_WORD = re.compile(r"[A-Za-z'\u2019]+")


def _en_streets(text: str) -> list[Span]:
    """English street addresses: a house number and a name of one to three words ending in a
    street suffix (a set lookup per word, not an alternation of 180 words per position)."""
    found: list[Span] = []
    for m in _EN_STREET.finditer(text):
        words = list(_EN_WORD.finditer(text, m.start(), m.end()))
        first = (
            1 if words and words[0].start() < m.start() + 6 and text[words[0].start() - 1].isdigit() else 0
        )
        for k, word in enumerate(words[first + 1 :], start=first + 1):
            if word.group().lower() in _EN_SUFFIX_SET:
                end = word.end() + (1 if text[word.end() : word.end() + 1] == "." else 0)
                found.append(Span(m.start(), end, "ADDRESS"))
                break
            if not word.group()[0].isupper() and k > first + 1:
                break
    return found


# on the original text. The look-behind comes after the first character ("\\d(?<!\\w\\d)": a
# digit with no word character before it): the engine still skips ahead on that first
# character, and no Python check runs per match.
_CASED: list[tuple[str, re.Pattern[str], int]] = [
    ("CARD", re.compile(r"\d(?<!\w\d)(?:[ \-./\t\r\n]{0,3}\d){11,40}(?!\w)"), 0),  # groups: _card_spans
    # upper or lower case, groups separated by a space, hyphen or dot; the end: _iban_end.
    # Anchored on the first check digit, the country code in a look-behind: the engine skips
    # ahead to digits instead of trying every letter of the text. A separator between country
    # code and check digits only after capitals ("DE 89 …", not "am 16. …").
    (
        "IBAN",
        re.compile(
            r"\d(?:(?<=(?<!\w)[A-Za-z]{2}\d)|(?<=(?<!\w)[A-Z]{2}[ \-.]\d))"
            r"\d(?:[ \-.]{0,2}[A-Za-z0-9]){11,40}"
        ),
        0,
    ),
    ("KVNR", re.compile(r"[A-Za-z](?<!\w[A-Za-z])[ \-.]?\d(?:[ \-.]?\d){8}(?!\w)"), 0),
    ("EMAIL", re.compile(r"@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}(?!\w)"), 0),  # local part: _local_part_start
    ("ORDER_ID", re.compile(r"#\s?(\d{6,12})(?!\w)"), 1),
    (
        "PHONE",
        re.compile(
            rf"(?:\+(?<![\w+.\-]\+)\d{{1,3}}{_SEP}*(?:\(0\){_SEP}*)?"
            rf"|0(?<![\w+.\-/]0)(?:0\d{{2,3}}{_SEP}*|\d{{2,5}}{_SEP}{{0,3}}))"
            rf"\d(?:{_SEP}{{0,3}}\d){{3,13}}(?!\w)"
        ),
        0,
    ),
    # the shape here (spaces around the separators allowed, an ISO time after it), the day
    # and month ranges in _date_valid
    (
        "DATE",
        re.compile(
            r"\d(?<![\w.]\d)\d{0,3} ?([./-]) ?\d{1,2} ?\1 ?\d{2,4}"
            r"(?:[Tt]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:[Zz]|[+-]\d{2}:?\d{2})?)?(?!\w)"
        ),
        0,
    ),
    ("POSTCODE", re.compile(r"(\d(?<![\w.,]\d)\d{4})\s+(?=[A-ZÄÖÜ][a-zäöüß]{2,})"), 1),
    # street addresses without context (#20 finding 1): a German street name ending in a street
    # word ("Paulo-Schleich-Straße 19", "Rohlederplatz 8", "Berliner Str. 5a", house numbers
    # "1-2" and "8/7"), an English one after its number ("48 Dawson Drive", "12 Main St") and
    # the town after a German postcode ("10115 Berlin")
    ("ADDRESS", _DE_STREET, 0),
    ("ADDRESS", _EN_STREET, 0),
    ("ADDRESS", re.compile(r"\d(?<![\w.,]\d)\d{4}\s+([A-ZÄÖÜ][a-zäöüß]{2,}(?:-[A-ZÄÖÜ][a-zäöüß]+)?)"), 1),
    # a British postcode ("SW1A 1AA", "M5 5EB": outward code, space, digit and two letters) and
    # the town after it ("PA35 4ZG Joannashire", "M5 5EB South Charlie")
    ("POSTCODE", _UK_POSTCODE, 0),
    ("ADDRESS", re.compile(_UK_POSTCODE.pattern + r",?[ \t]+(" + _TOWN + r"(?:[ \t\-]" + _TOWN + r")?)"), 1),
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
# e-mail written to dodge harvesters: "max.mustermann [at] example [dot] de", "max @ example.de";
# anchored on the "at", on the lower-cased text
_AT_GATE = ("t]", "t)", "t}", "@ ", " @")
_AT_MARK = re.compile(r"\s*(?:[\[({]\s*(?:at|ät)\s*[\])}]|@)\s*")
_DOT = r"(?:\.|\s*[\[({]\s*(?:dot|punkt)\s*[\])}]\s*)"
_OBF_DOMAIN = re.compile(rf"[\w-]+(?:{_DOT}[\w-]+)*{_DOT}[a-z]{{2,}}(?!\w)")
_DAY_BEFORE = re.compile(rf"{_DAY}\.?\s+$")

# runs of digits and separators, nine characters or more: cards and KVNRs are looked for
# only in or right before such runs (a search for digits is far cheaper than trying every
# letter; the patterns themselves decide how many digits and separators make one)
_DIGIT_RUN = re.compile(r"\d[\d \-./\t\r\n]{7,}\d")
_DIGIT_GROUP = re.compile(r"\d+")
_TIME_PART = re.compile(r"[Tt]\d.*$")
_LOCAL_PART = re.compile(r"[\w.+-]{1,64}$")


def _local_part_start(text: str, at: int) -> int | None:
    """Where the local part of an e-mail address whose "@" (or "[at]") starts at *at* begins;
    None when there is none, or when a letter or digit is glued to its front."""
    local = _LOCAL_PART.search(text, max(0, at - 64), at)
    if local is None or (local.start() > 0 and text[local.start() - 1].isalnum()):
        return None
    return local.start()


def _windows(runs: list[tuple[int, int]], before: int, after: int, size: int) -> list[tuple[int, int]]:
    """The runs widened by *before* and *after* characters, overlapping ones merged. A window
    ends one character past a run, so a look-ahead sees what follows it."""
    out: list[tuple[int, int]] = []
    for start, end in runs:
        lo, hi = max(0, start - before), min(size, end + after)
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _card_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Card numbers among the digit groups of text[start:end]: consecutive whole groups of 12
    to 19 digits that pass Luhn, longest first. Groups of 3+ digits (4-4-4-4, 4-6-5) or
    single digits take any separator (dots, slashes, line breaks, repeated spaces); groups
    of two only a single space or hyphen (a date's groups are never a card)."""
    groups = [m.span() for m in _DIGIT_GROUP.finditer(text, start, end)]
    if len(groups) == 1:
        return [groups[0]] if luhn_valid(text[start:end]) else []
    sizes = [b - a for a, b in groups]
    prefix = [0, *accumulate(sizes)]
    plain = [text[groups[k][1] : groups[k + 1][0]] in (" ", "-") for k in range(len(groups) - 1)]
    found: list[tuple[int, int]] = []
    i = 0
    while i < len(groups):
        for j in range(len(groups) - 1, i - 1, -1):
            digits = prefix[j + 1] - prefix[i]
            if digits > 19:
                continue
            if digits < 12:
                break  # fewer groups only have fewer digits
            window = sizes[i : j + 1]
            if not (min(window) >= 3 or max(window) == 1 or all(plain[i:j])):
                continue
            if luhn_valid("".join(text[a:b] for a, b in groups[i : j + 1])):
                found.append((groups[i][0], groups[j][1]))
                i = j
                break
        i += 1
    return found


def _iban_end(text: str, start: int, end: int) -> int | None:
    """The longest valid IBAN from *start* up to *end*, ending at the end of a group (the
    greedy pattern may run into the next word); None if there is none."""
    groups = [(m.end(), m.group()) for m in _ALNUM_GROUP.finditer(text, start, end)]
    if groups and groups[-1][0] == end and end < len(text) and text[end].isalnum():
        groups.pop()  # the match stopped inside a longer word
    lengths = list(accumulate(len(g) for _, g in groups))
    expected = IBAN_LENGTHS.get(text[start : start + 2].upper())
    for k in range(len(groups) - 1, -1, -1):
        if lengths[k] > 34 or (expected is not None and lengths[k] != expected):
            continue
        if lengths[k] < 15:
            return None
        compact = "".join(g for _, g in groups[: k + 1])
        if sum(map(str.isdigit, compact)) >= 10 and iban_valid(compact):
            return groups[k][0]
    return None


_ALNUM_GROUP = re.compile(r"[A-Za-z0-9]+")


def _date_valid(text: str) -> bool:
    text = _TIME_PART.sub("", text.replace(" ", ""))
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


def _bare_international_phone(digits: str) -> bool:
    """An international number written without its "+" or "00" ("4930123456789", with or
    without the trunk zero after the country code: "49030123456789"), of a length libphonenumber's
    metadata allows for the country its first digits name. Only runs of 11 to 14 digits reach
    phonenumbers.parse (about 30 us each)."""
    for size in (1, 2, 3):
        code = int(digits[:size])
        if code not in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            continue
        national = digits[size:]
        if national.startswith("0"):
            national = national[1:]
        try:
            number = phonenumbers.parse(f"+{code}{national}")
        except phonenumbers.NumberParseException:
            return False
        # possible (its length fits the country's plan), not only valid: a number from a range
        # the metadata does not list yet is still someone's number
        return bool(phonenumbers.is_possible_number(number))  # calling codes are prefix-free
    return False


_BARE_PHONE = re.compile(r"\d(?<![\w+.\-/#]\d)\d{10,13}(?!\w)")

_VALIDATORS = {
    "KVNR": lambda s: kvnr_valid(re.sub(r"[ \-.]", "", s).upper()),
    "DATE": _date_valid,
}


def find_patterns(text: str) -> list[Span]:
    spans: list[Span] = []
    runs = [m.span() for m in _DIGIT_RUN.finditer(text)]
    # international phone numbers written as bare digits (#20 canaries: "Praxis 4930…")
    spans.extend(
        Span(*m.span(), "PHONE")
        for lo, hi in runs
        if hi - lo >= 11
        for m in _BARE_PHONE.finditer(text, lo, hi)
        if _bare_international_phone(m.group())
    )
    for category, pattern, group in _CASED:
        validate = _VALIDATORS.get(category)
        if category == "CARD":  # cards need 12+ digits: look only inside such runs
            for run in runs:
                for m in pattern.finditer(text, *run):
                    spans.extend(Span(a, b, "CARD") for a, b in _card_spans(text, *m.span()))
            continue
        if category == "IBAN":  # the greedy match may swallow a second IBAN: search on after the first
            iban = pattern.search(text)
            while iban is not None:
                begin = iban.start() - (2 if text[iban.start() - 1].isalpha() else 3)
                stop = _iban_end(text, begin, iban.end())
                if stop is not None:
                    spans.append(Span(begin, stop, "IBAN"))
                iban = pattern.search(text, stop if stop is not None else iban.start() + 1)
            continue
        if pattern is _DE_STREET:  # only around a street word before a number, not at every capital
            spans.extend(_de_streets(text))
            continue
        if pattern is _EN_STREET:
            spans.extend(_en_streets(text))
            continue
        if category == "KVNR":  # the letter (and a separator) right in front of a digit run
            found = [m for lo, hi in _windows(runs, 2, 1, len(text)) for m in pattern.finditer(text, lo, hi)]
        elif category in ("EMAIL", "ORDER_ID"):
            found = list(pattern.finditer(text)) if ("@" if category == "EMAIL" else "#") in text else []
        else:
            found = list(pattern.finditer(text))
        for m in found:
            start, end = m.span(group)
            if category == "EMAIL":
                local = _local_part_start(text, start)
                if local is None:
                    continue
                start = local
            if validate is None or validate(text[start:end]):
                spans.append(Span(start, end, category))
    low = text.lower()
    if len(low) != len(text):  # a rare character changed length when lower-cased
        low = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    if any(mark in low for mark in _AT_GATE):
        for m in _AT_MARK.finditer(low):
            domain = _OBF_DOMAIN.match(low, m.end())
            local = _local_part_start(low, m.start())
            if domain and local is not None:
                spans.append(Span(local, domain.end(), "EMAIL"))
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
    """Everything found in one text (or in the texts of one request), overlaps resolved.

    The recognisers run on the normalised text (gateway/phi/normalise.py) and their spans are
    mapped back to the original; runs that are an encoding of other text are decoded and
    removed whole when they hold a known value or an identifier; a known value (or a card,
    IBAN or KVNR) split across the end of one message and the start of the next is found in
    both."""

    def __init__(self, known: Sequence[KnownValue], plugins: Sequence[Recognizer] = ()) -> None:
        self._known = KnownValueMatcher(known)
        self._plugins = plugins
        self._known_values = known
        self._window = _SPLIT_PATTERN_WINDOW

    def detect(self, text: str) -> list[Span]:
        return resolve_overlaps(self._find(text), text)

    def detect_texts(
        self, texts: Sequence[str], splits: Sequence[Split | None] | None = None
    ) -> list[list[Span]]:
        """Spans per text, with values split across consecutive texts: between text i and
        i + 1 as ``splits[i]`` says (None: not looked for), by default everywhere
        (gateway/phi/jsontexts.py says where a JSON document's texts are looked across). A text
        that comes again (a JSON key, a label: a tool result's texts repeat) is searched once."""
        seen: dict[str, list[Span]] = {}
        found = []
        for text in texts:
            spans = seen.get(text)
            if spans is None:
                spans = seen[text] = self._find(text)
            found.append(list(spans))  # each text's own list: the split spans are added to it
        if len(texts) > 1:
            longest = max((len(sk) for v in self._known_values for sk in v.skeletons), default=0)
            # characters of each message looked at for a value split across two: the longest
            # skeleton, with room for the separators between its characters
            self._window = max(2 * longest, _SPLIT_PATTERN_WINDOW)
        for i in range(len(texts) - 1):
            split = EVERY_SPLIT if splits is None else splits[i]
            if split is None:
                continue
            first, second = self._split_across(texts[i], texts[i + 1], split)
            found[i].extend(first)
            found[i + 1].extend(second)
        return [resolve_overlaps(spans, text) for spans, text in zip(found, texts, strict=True)]

    def _find(self, text: str) -> list[Span]:
        norm = normalise(text)
        subject = text if norm is None else norm.text
        spans = self._known.find(subject)
        spans.extend(find_patterns(subject))
        spans.extend(self._encoded(subject))
        if norm is not None:
            spans = [s._replace(start=a, end=b) for s in spans for a, b in (norm.original(s.start, s.end),)]
        for plugin in self._plugins:
            answered: Iterable[Any] = plugin.analyze(text)  # not checked as Spans: converted
            spans.extend(_as_span(found) for found in answered)
        return spans

    def _encoded(self, text: str) -> list[Span]:
        """A run that decodes to text holding a known value or an identifier: removed whole
        (source "dropped"), in the category of the longest, most specific finding."""
        spans = []
        for start, end, decoded in encoded_runs(text):
            inner_norm = normalise(decoded)
            inner = decoded if inner_norm is None else inner_norm.text
            hits = self._known.find(inner) + find_patterns(inner)
            if hits:
                best = min(hits, key=lambda s: (s.start - s.end, -_RANK.get(s.category, 0)))
                spans.append(Span(start, end, best.category, "dropped"))
        return spans

    def _split_across(self, first: str, second: str, split: Split) -> tuple[list[Span], list[Span]]:
        """Spans for a value that starts in the tail of *first* and ends in the head of
        *second* (after its first ``split.skip`` characters): each text gets a span over its part."""
        w = self._window
        tail, head = first[-w:], second[split.skip : split.skip + w]
        if not tail.strip() or not head.strip():
            return [], []
        window = tail + head
        cut, offset = len(tail), len(first) - len(tail)
        norm = normalise(window)
        subject = window if norm is None else norm.text
        candidates = self._known.find(subject)
        if split.patterns:
            candidates += [s for s in find_patterns(subject) if s.category in _SPLIT_CATEGORIES]
        out_first: list[Span] = []
        out_second: list[Span] = []
        for span in candidates:
            start, end = (span.start, span.end) if norm is None else norm.original(span.start, span.end)
            if not start < cut < end:
                continue
            a_end = len(tail.rstrip())
            b_start = len(head) - len(head.lstrip())
            if start >= a_end or end <= cut + b_start:
                continue  # all of it on one side, only whitespace on the other
            out_first.append(span._replace(start=offset + start, end=offset + a_end))
            out_second.append(span._replace(start=split.skip + b_start, end=split.skip + end - cut))
        return out_first, out_second


def _as_span(found: Any) -> Span:
    """A plug-in's finding as a Span: a Span, a tuple of its fields or an object with them (a
    plug-in is duck-typed; the compiled module would refuse anything but a tuple)."""
    if isinstance(found, Span):
        return found
    if isinstance(found, tuple):
        return Span(*found)
    return Span(
        found.start,
        found.end,
        found.category,
        getattr(found, "source", "pattern"),
        getattr(found, "canonical", ""),
    )


class Split(NamedTuple):
    """How a value split across two consecutive texts is looked for: *skip* the second text's
    first characters (a label, gateway/phi/jsontexts.py), *patterns*: the checksummed
    identifiers too, not only the known values (the context's)."""

    skip: int = 0
    patterns: bool = True


EVERY_SPLIT = Split()


_SPLIT_CATEGORIES = frozenset({"CARD", "IBAN", "KVNR"})  # identifiers a checksum confirms
_SPLIT_PATTERN_WINDOW = 48
