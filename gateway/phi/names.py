"""Person names the request's context does not know (a spouse, a doctor, a relative), German
and English: a lexicon recogniser with cues, no model.

Why a lexicon: no NER model for German and English is installable from PyPI alone (spaCy's
pipelines are not on PyPI; GLiNER and flair fetch their weights from a hub at run time).

Data: first names and surnames ranked in DE/AT/CH/GB/US/IE (``names-dataset``), each marked
*ambiguous* when it is also a common German or English word (``wordfreq``: ``Will``,
``May``, ``Lange``, ``Montag``), and the common German and English words. Built once at
install time by :mod:`gateway.phi.names_build` into a 1 MB file; read once per process.

Rules, in order of strength:

1. after a title (``Herr``, ``Frau``, ``Dr.``, ``Prof.``, ``Mr``, ``Mrs``, ``Ms``,
   ``Schwester``, ``Pfleger``) or a relation (``mein Mann``, ``meine Tochter``, ``my wife``,
   ``my GP``) or a self-introduction (``ich heiße``, ``my name is``, ``Grüße,``), the next
   capitalised word is a name unless it is a common word that is no name;
2. a first name followed by a surname (``Anna Schmidt``, ``will smith`` in lower case too)
   when at least one of them is not ambiguous;
3. a capitalised, unambiguous name on its own (not after ``in``/``nach``/``aus``/``from``,
   where it is a place);
4. a name grows over following surnames and hyphenated parts; titles stay outside the span.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from gateway.errors import NameDataMissing
from gateway.phi.detect import Span
from gateway.phi.names_build import default_path

FIRST, LAST = 1, 2
MAX_NAME_WORDS = 6  # words in one span at most (a longer run is split)
# a name ranked worse than this in every country that is also a common word (Zipf >= 3.5)
# is a profile-name artefact ("Bitte", "Juni", "Doktor"), not a name
_RANK_MAX_IF_COMMON = 3000
_COMMON_ZIPF = 3.5
# a word this frequent is never taken for a lower-case name after a cue ("this is", "die")
_VERY_COMMON_ZIPF = 5.0


def _words(text: str) -> frozenset[str]:
    """A word list written as text, one space between words."""
    return frozenset(text.split())


TITLES = _words(
    """
        herr herrn frau fr hr dr prof professor doktor mr mrs ms miss mister sir dame schwester
        pfleger pflegerin dipl med
    """
)
RELATIONS = frozenset(
    # German: after "mein/meine/meinem/meiner/unser..." (checked below)
    [
        "mann",
        "frau",
        "ehemann",
        "ehefrau",
        "partner",
        "partnerin",
        "freund",
        "freundin",
        "sohn",
        "tochter",
        "kind",
        "mutter",
        "vater",
        "mama",
        "papa",
        "bruder",
        "schwester",
        "oma",
        "opa",
        "großmutter",
        "großvater",
        "grossmutter",
        "grossvater",
        "enkel",
        "enkelin",
        "onkel",
        "tante",
        "cousin",
        "cousine",
        "neffe",
        "nichte",
        "schwager",
        "schwägerin",
        "schwiegermutter",
        "schwiegervater",
        "nachbar",
        "nachbarin",
        "arzt",
        "ärztin",
        "hausarzt",
        "hausärztin",
        "kinderarzt",
        "kinderärztin",
        "zahnarzt",
        "zahnärztin",
        "frauenarzt",
        "frauenärztin",
        "hautarzt",
        "hautärztin",
        "kollege",
        "kollegin",
        "chef",
        "chefin",
        "betreuer",
        "betreuerin",
        "husband",
        "wife",
        "son",
        "daughter",
        "child",
        "mother",
        "father",
        "mum",
        "mom",
        "dad",
        "brother",
        "sister",
        "grandmother",
        "grandfather",
        "grandma",
        "grandpa",
        "granny",
        "nan",
        "grandson",
        "granddaughter",
        "uncle",
        "aunt",
        "nephew",
        "niece",
        "boyfriend",
        "girlfriend",
        "fiancé",
        "fiancée",
        "neighbour",
        "neighbor",
        "doctor",
        "gp",
        "dentist",
        "colleague",
        "boss",
        "carer",
        "caregiver",
        "friend",
        "spouse",
    ]
)
_POSSESSIVES = _words(
    """
        mein meine meinem meinen meiner unser unsere unserem unseren unserer sein seine seinem
        seinen ihr ihre ihrem ihren my our his her their
    """
)
# phrases after which the next capitalised word is the writer's (or addressee's) name
_INTRO = re.compile(
    r"(?:ich\s+hei(?:ß|ss)e|mein\s+name\s+ist|my\s+name\s+is|hier\s+schreibt|grüße|grüßen|"
    r"gruß|grüsse|gruss|regards|wishes|thanks|danke|cheers|sincerely|dear|liebe|lieber|"
    r"sehr\s+geehrte|sehr\s+geehrter|namens|named|called|genannt)\s*[,:]?\s*$"
)
# weaker: the next word is a name only if the lexicon knows it ("ich bin Kundin")
_WEAK_INTRO = re.compile(r"(?:i\s+am|i'm|this\s+is|hier\s+ist|ich\s+bin|hallo|hello|hi)\s*[,:]?\s*$")
_INTRO_LAST = _words(
    """
        heiße heisse ist is schreibt grüße grüßen gruß grüsse gruss regards wishes thanks danke
        cheers sincerely dear liebe lieber geehrte geehrter namens named called genannt am i'm
        bin hallo hello hi
    """
)
_PLACE_BEFORE = _words(
    """
        in nach aus im from near nahe sankt st bad lake new north south east west port mount
        fort san santa bay
    """
)
_PLACE_AFTER = frozenset(
    ["ville", "town", "city", "burg", "burgh", "land", "see", "am", "an", "im", "upon", "on"]
)
_PARTICLES = _words(
    """
        von van der de den zu vom ten ter da di le la du mc mac o
    """
)
CALENDAR = _words(
    """
        montag dienstag mittwoch donnerstag freitag samstag sonnabend sonntag januar jänner
        februar märz maerz april mai juni juli august september oktober november dezember monday
        tuesday wednesday thursday friday saturday sunday january february march may june july
        october december ostern pfingsten weihnachten easter christmas
    """
)

_CUES = TITLES | RELATIONS | _INTRO_LAST  # the words step 1 of NameRecognizer.analyze looks at

# a word of letters; not the letters glued to a digit ("8NA" of the postcode "IM24 8NA", "3a")
_WORD = re.compile(r"(?<![\w])[^\W\d_]+(?:['\u2019\-][^\W\d_]+)*\.?(?!\d)")


class NameData(NamedTuple):
    names: dict[str, tuple[int, int, str]]  # casefolded -> (FIRST|LAST flags, best rank, ambiguous)
    common: dict[str, float]  # casefolded common word -> Zipf frequency (max of de, en)


def data_path() -> Path:
    return default_path()


def data_installed() -> bool:
    """True when the lexicon file is there (``make install`` builds it): the gateway should
    refuse to start with the name recogniser on and no data, rather than let names through."""
    return data_path().is_file()


@lru_cache(maxsize=1)
def load_data() -> NameData:
    """Read the lexicon once per process (module-level cache)."""
    path = data_path()
    if not path.is_file():
        raise NameDataMissing(
            f"name lexicon not installed ({path}): run `make install` "
            "(or `.venv/bin/python -m gateway.phi.names_build`)"
        )
    with gzip.open(path) as f:
        raw = json.load(f)
    names: dict[str, tuple[int, int, str]] = {}
    for key, (flags, first_rank, last_rank, amb) in raw["names"].items():
        rank = min(r for r in (first_rank, last_rank) if r)
        entry = (int(flags), int(rank), str(amb))
        names[key] = entry
        plain = key.replace("ä", "ae").replace("ö", "oe").replace("ü", "ue")
        if plain != key and plain not in names:
            names[plain] = entry
    common = {str(k): float(v) for k, v in raw["common"].items()}
    return NameData(names, common)


def _shape(word: str) -> str:
    if word.isalpha() and (word.isascii() or not word.isupper()):
        # all letters (nearly every word): the str methods give the answer of the loop below
        # without a list per word
        if len(word) > 1 and word.isupper():
            return "upper"
        return "cap" if word[0].isupper() else "lower"
    letters = [c for c in word if c.isalpha()]
    if len(letters) > 1 and all(c.isupper() for c in letters):
        return "upper"
    if letters and letters[0].isupper():
        return "cap"
    return "lower"


class NameRecognizer:
    """Plug-in recogniser: spans of category NAME, source ``names``."""

    name = "names"

    def __init__(self) -> None:
        self._data = load_data()

    def _typed_lower_name(
        self, i: int, keys: list[str], shapes: list[str], info: list[tuple[int, bool]], blocked: list[bool]
    ) -> bool:
        """A lower-case word the lexicon knows as a name and not as a common word ("anna",
        "david", "müller"; not "this", "die")."""
        key = keys[i]
        return (
            shapes[i] == "lower"
            and bool(info[i][0])
            and not blocked[i]
            and key not in CALENDAR
            and (info[i][1] or self._common(key) < _VERY_COMMON_ZIPF)
        )

    # -- lexicon ------------------------------------------------------------------------

    def _lookup(self, key: str) -> tuple[int, int, str] | None:
        names = self._data.names
        hit = names.get(key)
        if hit is None and len(key) > 3 and key[-1] == "s":  # genitive: "Annas Termin"
            hit = names.get(key[:-1])
        if hit is None and "-" in key:  # "Müller-Lüdenscheid": the first known part decides
            parts = [names.get(p) for p in key.split("-")]
            known = [p for p in parts if p is not None]
            if known:
                flags = 0
                for p in known:
                    flags |= p[0]
                amb = "" if any(not p[2] for p in known) else known[0][2]
                hit = (flags, min(p[1] for p in known), amb)
        return hit

    def _common(self, key: str) -> float:
        return self._data.common.get(key, 0.0)

    def _is_name(self, key: str, strong: bool) -> tuple[int, bool]:
        """(flags, unambiguous) for *key*; flags 0 when it is no name."""
        if key in CALENDAR or key in TITLES:
            return 0, False
        hit = self._lookup(key)
        if hit is None:
            return 0, False
        flags, rank, amb = hit
        if rank > _RANK_MAX_IF_COMMON and self._common(key) >= _COMMON_ZIPF:
            return 0, False
        return flags, not amb

    # -- detection ----------------------------------------------------------------------

    def analyze(self, text: str) -> Iterable[Span]:
        # the words as parallel lists, each built in C by a comprehension (a NamedTuple per
        # word, appended in a loop, cost ~10 % of a filtered request): where each starts and
        # ends, the word, its key (casefolded); a trailing dot ("Dr.") stays outside
        matches = list(_WORD.finditer(text))
        starts = [m.start() for m in matches]
        ends = [m.end() for m in matches]
        words = [m.group() for m in matches]
        for k in [k for k, w in enumerate(words) if w[-1] == "."]:
            words[k] = words[k][:-1]
            ends[k] -= 1
        keys = [w.casefold() for w in words]
        n = len(words)
        is_name = [False] * n
        # _shape, its common case inline: a word of letters only
        shapes = [
            ("upper" if len(w) > 1 and w.isupper() else "cap" if w[0].isupper() else "lower")
            if w.isalpha() and (w.isascii() or not w.isupper())
            else _shape(w)
            for w in words
        ]
        # one lexicon look-up per distinct word of this text (words repeat: "die", "the")
        looked_up = {key: self._is_name(key, True) for key in set(keys)}
        info = [looked_up[key] for key in keys]
        all_lower = not any(s != "lower" for s in shapes)

        def gap(i: int) -> str:  # the characters between token i-1 and token i
            return text[ends[i - 1] if i else 0 : starts[i]]

        def adjacent(i: int) -> bool:  # token i follows token i-1 within one clause
            g = gap(i)
            if g.strip() == "":
                return 0 < len(g) <= 2 and "\n" not in g
            prev = keys[i - 1]
            return g.strip() == "." and len(g) <= 3 and (prev in TITLES or len(prev) == 1)

        def capitalised(i: int) -> bool:
            return shapes[i] != "lower" or all_lower

        def place(i: int) -> bool:
            if i > 0 and keys[i - 1] in _PLACE_BEFORE and adjacent(i):
                return True
            if keys[i] in _PLACE_BEFORE and shapes[i] != "lower":
                return True
            return i + 1 < n and keys[i + 1] in _PLACE_AFTER and shapes[i + 1] != "lower" and adjacent(i + 1)

        # cue words themselves are never names: "Mein Mann Sven", "Herr Doktor Weber"
        blocked = [
            key in TITLES
            or (key in _PLACE_AFTER and shapes[i] != "lower")
            or (key in RELATIONS and i > 0 and keys[i - 1] in _POSSESSIVES)
            for i, key in enumerate(keys)
        ]

        def cued_name(i: int, after_title: bool = False, weak: bool = False) -> bool:
            """Token i right after a cue: a name unless it is a common word that is no name."""
            if i >= n or not capitalised(i) or blocked[i] or keys[i] in CALENDAR:
                return False
            flags, clear = info[i]
            if weak:
                return bool(flags) and clear
            if flags and (clear or shapes[i] != "lower"):
                return True
            if after_title and shapes[i] != "lower":
                return True
            return not weak and shapes[i] != "lower" and self._common(keys[i]) < _COMMON_ZIPF

        # 1. cues (only a title, a relation or the last word of an introduction can be one)
        for i in [k for k, key in enumerate(keys) if key in _CUES]:
            key = keys[i]
            j, after_title, weak, introduced = -1, False, False, False
            if key in TITLES and (shapes[i] != "lower" or all_lower or key in ("dr", "prof")):
                j = i + 1
                while j < n and keys[j] in TITLES and adjacent(j):
                    j += 1
                if j < n and not adjacent(j) and gap(j).strip() != ".":
                    j = -1
                after_title = key not in RELATIONS or i == 0 or keys[i - 1] not in _POSSESSIVES
            elif key in RELATIONS and i > 0 and keys[i - 1] in _POSSESSIVES:
                j = i + 1
                if j < n and gap(j).strip() not in ("", ","):
                    j = -1
            elif key in _INTRO_LAST:
                tail = text[max(0, ends[i] - 24) : ends[i]].casefold()
                if _INTRO.search(tail) or _WEAK_INTRO.search(tail):
                    j, weak, introduced = i + 1, not _INTRO.search(tail), True
                    if j < n and gap(j).strip() not in ("", ",", ":"):
                        j = -1
            if 0 <= j < n and cued_name(j, after_title, weak):
                is_name[j] = True
            elif (
                0 <= j < n
                and (introduced or after_title)
                and self._typed_lower_name(j, keys, shapes, info, blocked)
            ):
                # "Hello, this is anna schmidt", "Dr. müller": typed in lower case after a cue, a
                # word the lexicon knows as a name, and a surname right after it
                is_name[j] = True
                if (
                    j + 1 < n
                    and adjacent(j + 1)
                    and self._typed_lower_name(j + 1, keys, shapes, info, blocked)
                ):
                    is_name[j + 1] = bool(info[j + 1][0] & LAST)

        # 2. first name + surname pairs
        for i in [k for k in range(n - 1) if info[k][0] & FIRST and info[k + 1][0] & LAST]:
            a, b = info[i], info[i + 1]
            if (
                ((a[1] and b[1]) if shapes[i] == "lower" else (a[1] or b[1]))
                and capitalised(i)
                and capitalised(i + 1)
                and shapes[i] == shapes[i + 1]
                and adjacent(i + 1)
                and not place(i)
                and not place(i + 1)
                and not blocked[i]
                and not blocked[i + 1]
            ):
                is_name[i] = is_name[i + 1] = True

        # 3. unambiguous capitalised names on their own
        for i in [k for k, (flags, clear) in enumerate(info) if flags and clear]:
            if shapes[i] != "lower" and not place(i) and not blocked[i]:
                is_name[i] = True

        # 4. grow: following surnames / unknown capitalised words before a known surname
        # (the loops visit only the words next to a name: most words are none)
        i = 1
        while i < n:
            if not is_name[i - 1]:
                try:
                    i = is_name.index(True, i) + 1
                except ValueError:
                    break
                continue
            if not is_name[i] and adjacent(i) and capitalised(i) and not blocked[i]:
                unknown = not info[i][0] and not self._common(keys[i])
                grows = info[i][0] & LAST or (unknown and info[i - 1][0] & FIRST)
                if grows and keys[i] not in CALENDAR and not place(i):
                    is_name[i] = True
            i += 1
        for i in range(n - 2, -1, -1):
            if not is_name[i + 1]:
                continue
            before = not is_name[i] and adjacent(i + 1) and shapes[i] != "lower"
            before = before and bool(info[i + 1][0] & LAST) and not blocked[i]
            if before and not self._common(keys[i]) and (i == 0 or not place(i)):
                is_name[i] = True

        # particles inside a name: "Anna von Schmidt"
        for i in [k for k in range(1, n - 1) if keys[k] in _PARTICLES]:
            if not is_name[i] and is_name[i - 1] and is_name[i + 1] and adjacent(i) and adjacent(i + 1):
                is_name[i] = True

        spans: list[Span] = []
        i = 0
        while i < n:
            if not is_name[i]:
                try:
                    i = is_name.index(True, i)
                except ValueError:
                    break
            j = i
            # one person's name has a few words ("Maria Anna von der Leyen"): a longer run of
            # names is several people ("Erika Müller Erika Müller …"), a span of its own each
            while j + 1 < n and is_name[j + 1] and adjacent(j + 1) and j + 1 - i < MAX_NAME_WORDS:
                j += 1
            spans.append(Span(starts[i], ends[j], "NAME", source="names"))
            i = j + 1
        return spans
