"""Build the name lexicon of :mod:`gateway.phi.names` once, at install time (``make install``).

    .venv/bin/python -m gateway.phi.names_build [--out PATH]

Sources (PyPI packages of the ``names`` extra, needed here only, never at request time):

- ``names-dataset`` 3.3.1: first names and surnames with a popularity rank per country
  (derived from public profiles of a social network, 2019). Every name ranked in DE, AT,
  CH, GB, US or IE is taken (about 40,000 first names and 50,000 surnames).
- ``wordfreq`` 3.1.1: word frequencies per language (Zipf scale). A name is marked
  *ambiguous* when it is far more frequent in German or English than in French, Spanish,
  Italian and Portuguese (``Will``, ``May``, ``Lange``, ``Montag``): names are international, a
  common word of one language is not. Also stored: the common German and English words
  (Zipf >= 3), so that a capitalised common word is not taken for a name without a cue.

The result is a compact JSON file (gzip, about 1 MB) under ``~/.cache/sovereign-llm/names/``
(or ``$SOVEREIGN_NAMES_DATA``); the gateway reads only that file.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pickle
import re
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

COUNTRIES = ("DE", "AT", "CH", "GB", "US", "IE")
FORMAT_VERSION = 1
# a word this much more frequent (Zipf) in German or English than in any of the control
# languages is a common word of that language that also happens to be a name
# (German names are often German-only, up to 1.8: Uwe, Jürgen; German words 2.2 and up: Mann,
# Lange, Montag; English names up to 0.7: Mark, Bill; English words 0.9 and up: Sun, Hope)
AMBIGUOUS_EXCESS = {"de": 2.0, "en": 0.9}
AMBIGUOUS_MIN_ZIPF = 3.5
VERY_COMMON_ZIPF = 6.0  # "das", "will", "this": ambiguous whatever the control languages say
COMMON_MIN_ZIPF = 3.0
CONTROL_LANGS = ("fr", "es", "it", "pt")

_TOKEN = re.compile(r"[^\W\d_]+(?:['\u2019\-][^\W\d_]+)*")


def default_path() -> Path:
    env = os.environ.get("SOVEREIGN_NAMES_DATA")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "sovereign-llm" / "names" / f"names-v{FORMAT_VERSION}.json.gz"


def _ranked(kind: str) -> dict[str, int]:
    """Every name of *kind* ranked in one of COUNTRIES, with its best rank."""
    import names_dataset  # type: ignore[import-untyped]

    path = Path(names_dataset.__file__).parent / "v3" / f"{kind}.pkl.gz"
    with gzip.open(path) as f:
        data: dict[str, Any] = pickle.load(f)  # noqa: S301 - the package's own file
    out: dict[str, int] = {}
    for name, info in data.items():
        ranks = [r for c, r in info["rank"].items() if c in COUNTRIES and r]
        if ranks and _TOKEN.fullmatch(name) and len(name) >= 2:
            out[name] = min(ranks)
    return out


def build(out: Path) -> dict[str, Any]:
    from wordfreq import top_n_list, zipf_frequency

    first = _ranked("first_names")
    last = _ranked("last_names")
    names: dict[str, list[Any]] = {}  # casefolded -> [flags, first rank, last rank, ambiguous langs]
    for kind, table in ((1, first), (2, last)):
        for name, rank in table.items():
            entry = names.setdefault(name.casefold(), [0, 0, 0, ""])
            entry[0] |= kind
            slot = 1 if kind == 1 else 2
            entry[slot] = min(entry[slot], rank) if entry[slot] else rank
    for key, entry in names.items():
        control = max(zipf_frequency(key, lang) for lang in CONTROL_LANGS)
        amb = ""
        for lang in ("de", "en"):
            z = zipf_frequency(key, lang)
            if z >= VERY_COMMON_ZIPF or (z >= AMBIGUOUS_MIN_ZIPF and z - control >= AMBIGUOUS_EXCESS[lang]):
                amb += lang[0]
        entry[3] = amb
    common: dict[str, float] = {}
    for lang in ("de", "en"):
        for word in top_n_list(lang, 60_000):
            z = zipf_frequency(word, lang)
            if z < COMMON_MIN_ZIPF:
                break
            if word.isalpha():
                common[word] = max(common.get(word, 0.0), round(z, 2))
    payload = {
        "format": FORMAT_VERSION,
        "sources": {
            "names-dataset": version("names-dataset"),
            "wordfreq": version("wordfreq"),
            "countries": COUNTRIES,
            "ambiguous_excess": AMBIGUOUS_EXCESS,
        },
        "names": names,
        "common": common,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.NamedTemporaryFile("wb", dir=out.parent, delete=False) as tmp,
        gzip.GzipFile(fileobj=tmp, mode="wb", mtime=0) as gz,
    ):
        gz.write(json.dumps(payload, ensure_ascii=False, sort_keys=True).encode())
    os.replace(tmp.name, out)
    return payload


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=default_path())
    args = parser.parse_args()
    payload = build(args.out)
    amb = sum(1 for e in payload["names"].values() if e[3])
    print(
        f"name lexicon: {len(payload['names'])} names ({amb} ambiguous), "
        f"{len(payload['common'])} common words -> {args.out} ({args.out.stat().st_size // 1024} KiB)"
    )


if __name__ == "__main__":
    main()
