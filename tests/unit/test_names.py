"""The name recogniser (gateway/phi/names.py): cue forms, common words, titles outside the
span, determinism, and a recall/precision floor on a fixed-seed sample of the benchmark
corpus (names from Faker, independent of the recogniser's names-dataset lexicon)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.phi import names
from gateway.phi.detect import Detector, Span

pytestmark = pytest.mark.skipif(
    not names.data_installed(), reason="name lexicon not built: make install (gateway.phi.names_build)"
)


def found(text: str) -> list[str]:
    return [text[s.start : s.end] for s in names.NameRecognizer().analyze(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mein Mann Sven nimmt Ibuprofen.", ["Sven"]),
        ("Meine Frau Anna Schmidt braucht ein Rezept.", ["Anna Schmidt"]),
        ("Dr. Jürgen Müller-Lüdenscheid hat es verschrieben.", ["Jürgen Müller-Lüdenscheid"]),
        ("Frau Dr. Kowalczyk meinte, ich soll warten.", ["Kowalczyk"]),
        ("Ich heiße Lena Vogt.", ["Lena Vogt"]),
        ("My wife Sarah needs a refill.", ["Sarah"]),
        ("My name is John Hardiman.", ["John Hardiman"]),
        ("Mrs Baker said it was cheaper.", ["Baker"]),
        ("hello, this is amanda lewis, i wanted to ask", ["amanda lewis"]),
        ("Viele Grüße, Heike", ["Heike"]),
        ("Unsere Kinder Ela, Stefanie und Jonas", ["Ela", "Stefanie", "Jonas"]),
    ],
)
def test_names_found_in_cue_forms(text: str, expected: list[str]) -> None:
    assert found(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Ich habe am Montag ein Rezept für Ibuprofen eingereicht, Termin im Mai.",
        "Will you send it in May? I hope so, Thanks.",
        "Die Apotheke in Berlin hat Paracetamol nicht vorrätig.",
        "Mein Mann hat Rückenschmerzen und nimmt Voltaren.",
        "Das Blutzuckermessgerät zeigt seit Sonntag Fehler an.",
        "Bitte schicken Sie mir Lange Tabletten.",
        "Hi, this is about my order.",
    ],
)
def test_common_words_not_flagged(text: str) -> None:
    assert found(text) == []


def test_titles_are_not_part_of_the_span() -> None:
    text = "Herr Prof. Dr. Weber und Mr Smith"
    spans = list(names.NameRecognizer().analyze(text))
    assert [text[s.start : s.end] for s in spans] == ["Weber", "Smith"]
    assert all(s == Span(s.start, s.end, "NAME", "names") for s in spans)


def test_deterministic_and_protocol() -> None:
    rec = names.NameRecognizer()
    assert rec.name == "names"
    text = "Meine Tochter Mia und Dr. Huber, dann Anna Schmidt."
    assert list(rec.analyze(text)) == list(names.NameRecognizer().analyze(text))
    assert names.load_data() is names.load_data()  # loaded once per process
    detected = Detector([], [rec]).detect(text)
    found_names = [text[s.start : s.end] for s in detected if s.category == "NAME"]
    assert found_names == ["Mia", "Huber", "Anna Schmidt"]


def test_missing_data_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SOVEREIGN_NAMES_DATA", str(tmp_path / "absent.json.gz"))
    assert not names.data_installed()


def test_recall_precision_floor_on_independent_names() -> None:
    from benchmarks.name_recall import corpus, score

    result = score(corpus(150, seed=5), names.NameRecognizer().analyze)
    for lang in ("de", "en"):
        assert result[lang]["token_recall"] >= 0.93, result
        assert result[lang]["token_precision"] >= 0.88, result


def test_floor_fails_without_lexicon_or_stoplist(monkeypatch: pytest.MonkeyPatch) -> None:
    """The floor measures the data: with an empty lexicon recall collapses, without the
    ambiguity marks (the stoplist) precision does."""
    from benchmarks.name_recall import corpus, score

    sample = corpus(150, seed=5)
    data = names.load_data()
    monkeypatch.setattr(names, "load_data", lambda: names.NameData({}, data.common))
    empty = score(sample, names.NameRecognizer().analyze)
    assert min(empty[lang]["token_recall"] for lang in ("de", "en")) < 0.93
    no_stop = {k: (v[0], v[1], "") for k, v in data.names.items()}
    monkeypatch.setattr(names, "load_data", lambda: names.NameData(no_stop, {}))
    loose = score(sample, names.NameRecognizer().analyze)
    assert min(loose[lang]["token_precision"] for lang in ("de", "en")) < 0.88


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Hello, this is david murray, date of birth follows.", "david murray"),
        ("Guten Tag, hier schreibt jürgen becker.", "jürgen becker"),
        ("Ich war gestern bei Dr. müller.", "müller"),
    ],
)
def test_a_name_typed_in_lower_case_after_a_cue_is_found(text: str, name: str) -> None:
    """#20 canaries: full names in lower case after a self-introduction all reached the model."""
    assert name in [text[s.start : s.end] for s in names.NameRecognizer().analyze(text)]


@pytest.mark.parametrize("text", ["Hello, this is about my order.", "Guten Tag, hier schreibt die Apotheke."])
def test_common_words_after_a_cue_stay(text: str) -> None:
    assert list(names.NameRecognizer().analyze(text)) == []


def test_letters_glued_to_a_digit_are_no_name() -> None:
    """`make canaries` (10,000): "NA Howardfurt" taken for a name out of the postcode "IM24 8NA"
    won over the postcode's span and left "IM24 8" in the text."""
    text = "sent to 7 Amanda Cliff, IM24 8NA Howardfurt."
    assert not any("NA" in text[s.start : s.end].split() for s in names.NameRecognizer().analyze(text))
