"""The PHI filter compiled with mypyc (gateway/phi/compiled.py) does what its source does.

Every finding, token, context line, audit entry and restoration over the corpora, compiled and
interpreted, in two interpreters side by side; and a build is only ever loaded for the very
sources it was compiled from."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.phi import compiled

ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import json, sys
from gateway.phi import compiled
from gateway.phi.context import PatientContext
from gateway.phi.detect import Detector
from gateway.phi.filter import PHIFilter, recognizers
from gateway.phi.jsonrestore import restore_json
from gateway.phi.names import NameRecognizer
from gateway.phi.tokenise import StreamRestorer, TokenMap, restore
from gateway.policy import load_policies
from benchmarks.name_recall import corpus
from tests.phi_corpus import generate

import re, sysconfig
from dataclasses import dataclass


@dataclass
class Found:  # a plug-in's own span type (plug-ins are duck-typed)
    start: int
    end: int
    category: str


class LongWords:  # a plug-in answering objects with the fields
    name = "long-words"

    def analyze(self, text):
        return [Found(*m.span(), "NAME") for m in re.finditer(r"\b[a-z]{11,}\b", text)]


class EightLetters:  # a plug-in answering plain tuples
    name = "eight-letters"

    def analyze(self, text):
        return [(*m.span(), "NAME", "eight") for m in re.finditer(r"\b[a-z]{8}\b", text)]


key = bytes(range(32))
phi = PHIFilter([*recognizers(True, []), LongWords(), EightLetters()])
suffix = sysconfig.get_config_var("EXT_SUFFIX")
files = {m: sys.modules[f"gateway.phi.{m}"].__file__.endswith(suffix) for m in compiled.MODULES}
policies = load_policies()
results = []
items = generate(int(sys.argv[1]), seed=11, filler_sentences=2, others=True)
for i, item in enumerate(items):
    context = PatientContext.model_validate(item.context)
    # one message, and the same split in two at an odd place (values across two messages)
    cut = len(item.text) // 2 + i % 7
    for texts in ([item.text], [item.text[:cut], item.text[cut:]]):
        for name in sorted(policies):
            tokens = TokenMap(distinct=name == "patient-support")  # a chat request's map too
            f = phi.apply(policies[name], context, texts, key, f"tenant-{i % 3}", tokens=tokens)
            originals = f.tokens.originals
            answer = " / ".join(f.texts)
            streamed = StreamRestorer(originals)
            pieces = [streamed.feed(answer[j : j + 5]) for j in range(0, len(answer), 5)]
            pieces.append(streamed.flush())
            doc = json.dumps({"reply": f.texts, "context": f.context_line})
            results.append([f.texts, f.context_line, originals, f.audit(), restore(answer, originals),
                            "".join(pieces), restore_json(doc, originals)])
names = NameRecognizer()
sentences = corpus(int(sys.argv[2]), seed=5)
results.append([[list(s) for s in names.analyze(s.text)] for s in sentences])
detector = Detector([])
results.append([[list(s) for s in detector.detect(s.text[::-1])] for s in sentences])  # odd text too
print(json.dumps({"compiled": str(compiled.active) if compiled.active else None, "files": files,
                  "results": results}))
"""


def probe(env_value: str, messages: int = 150, sentences: int = 300) -> dict[str, Any]:
    env = {**os.environ, compiled.ENV: env_value, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(messages), str(sentences)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build for these sources: the one `make install` made, or a new one (~40 s)."""
    base = compiled.base_dir()
    if base is None:  # SOVEREIGN_PHI_COMPILED=off in this environment: build aside
        base = tmp_path_factory.mktemp("phi-compiled")
    target = compiled.build(base)
    return target.parent


def test_compiled_and_interpreted_filters_give_the_same_findings_tokens_and_restorations(build: Path) -> None:
    native = probe(str(build))
    interpreted = probe("off")
    assert native["compiled"] is not None and native["compiled"].startswith(str(build))
    assert interpreted["compiled"] is None
    assert set(native["files"].values()) == {True} and set(interpreted["files"].values()) == {False}
    assert len(native["results"]) == len(interpreted["results"]) > 150 * 2 * 3
    for got, want in zip(native["results"], interpreted["results"], strict=True):
        assert got == want
    # the comparison has something to compare: tokens were made, names found, answers restored
    filtered = native["results"][:-2]
    assert sum(len(r[2]) for r in filtered) > 1000
    # the plug-ins' findings were tokenised (their words are lower-case letters only)
    assert sum(1 for r in filtered for value in r[2].values() if value.isalpha() and value.islower()) > 100
    assert sum(len(spans) for spans in native["results"][-2]) > 300


def test_a_build_is_loaded_only_for_the_sources_it_was_compiled_from(
    build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "gateway"
    shutil.copytree(compiled.HERE.parent, project, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    package = project / "phi"
    monkeypatch.setenv(compiled.ENV, str(build))
    assert compiled.find(package) == build / compiled.key(package)
    # a compiled module edited, or a module of the project it imports (its types are built in)
    for edited in (package / "detect.py", project / "policy.py"):
        original = edited.read_text()
        edited.write_text(original + "\n# edited\n")  # one comment more
        assert compiled.key(package) != compiled.key(compiled.HERE)
        assert compiled.find(package) is None  # runs interpreted until rebuilt
        edited.write_text(original)
    assert compiled.find(package) == build / compiled.key(package)
    monkeypatch.setenv(compiled.ENV, "off")
    assert compiled.find(compiled.HERE) is None


def test_without_a_build_the_filter_runs_interpreted_and_says_how_to_build(tmp_path: Path) -> None:
    env = {**os.environ, compiled.ENV: str(tmp_path / "empty"), "PYTHONPATH": str(ROOT)}
    code = (
        "from gateway.phi import compiled; import gateway.phi.detect as d; "
        "print(compiled.describe(compiled.active), d.__file__); print(compiled.COMPILED._value.get())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
    )
    assert out.returncode == 0, out.stderr
    line, gauge = out.stdout.splitlines()
    assert line.startswith("interpreted: no build for these sources")
    assert "python -m gateway.phi.compile build" in line
    assert line.endswith(str(ROOT / "gateway" / "phi" / "detect.py"))
    assert gauge == "0.0"
