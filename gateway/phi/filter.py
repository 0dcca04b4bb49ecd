"""The PHI filter: minimise the context by policy, detect, tokenise; one mechanism for the
gateway's requests and for batch anonymisation (``sovereign anonymize``)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.phi.context import FIELD_CATEGORIES, PatientContext, set_fields, spellings
from gateway.phi.detect import CATEGORIES, Detector, KnownValue, Recognizer, Split
from gateway.phi.fold import variants
from gateway.phi.tokenise import Tokeniser, TokenMap
from gateway.policy import UseCasePolicy


@dataclass
class Filtered:
    """The outcome for one request: texts to forward and what happened, never values."""

    texts: list[str]
    context_line: str
    tokens: TokenMap
    fields_used: list[str] = field(default_factory=list)
    fields_dropped: list[str] = field(default_factory=list)

    def audit(self) -> dict[str, Any]:
        return {
            "tokenised": dict(sorted(self.tokens.tokenised.items())),
            "removed": dict(sorted(self.tokens.removed.items())),
            "context_fields_used": self.fields_used,
            "context_fields_dropped": self.fields_dropped,
        }


def load_plugins(specs: Sequence[str]) -> list[Recognizer]:
    """Instantiate recognizer plug-ins named ``package.module:Class`` (e.g. an NER model)."""
    plugins: list[Recognizer] = []
    for spec in specs:
        module_name, _, attr = spec.partition(":")
        if not attr:
            raise ValueError(f"phi_plugins: {spec!r} must read 'package.module:Class'")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"phi_plugins: cannot load {spec!r}: {type(exc).__name__}") from None
        plugins.append(factory())
    return plugins


def recognizers(names: bool, specs: Sequence[str] = ()) -> list[Recognizer]:
    """The recognisers beside the patterns: the name recogniser (on unless *names* is False;
    gateway/phi/names.py, NameDataMissing without its lexicon) and the configured plug-ins."""
    found: list[Recognizer] = []
    if names:
        from gateway.phi.names import NameRecognizer

        found.append(NameRecognizer())
    return found + load_plugins(specs)


class PHIFilter:
    def __init__(self, plugins: Sequence[Recognizer] = ()) -> None:
        self._plugins = plugins
        # tenant -> (data key, tokeniser): HKDF once per data key, not per request; a rotated
        # data key (other bytes) replaces the entry
        self._tokenisers: dict[str, tuple[bytes, Tokeniser]] = {}

    def _tokeniser(self, data_key: bytes, tenant: str) -> Tokeniser:
        cached = self._tokenisers.get(tenant)
        if cached is None or cached[0] != data_key:
            if len(self._tokenisers) >= 1024:
                self._tokenisers.clear()
            cached = (data_key, Tokeniser(data_key, tenant))
            self._tokenisers[tenant] = cached
        return cached[1]

    def apply(
        self,
        policy: UseCasePolicy,
        context: PatientContext | None,
        texts: Sequence[str],
        data_key: bytes,
        tenant: str,
        splits: Sequence[Split | None] | None = None,
        *,
        make_context_line: bool = True,
        tokens: TokenMap | None = None,
    ) -> Filtered:
        """*texts* filtered; *splits*: where and how a value split across two texts is looked
        for (Detector.detect_texts; default: between every two, known values and patterns).
        *make_context_line* false: no context line is made (embeddings send the texts alone), so
        the counts are the texts' only. *tokens*: the map to add to (one request's passes share
        one, and ``TokenMap(distinct=True)`` gives every value of the request a token of its
        own); by default a new one."""
        allowed = set(policy.context_fields)
        present = list(set_fields(context)) if context is not None else []
        used = [(p, v) for p, v in present if p in allowed]
        dropped = [(p, v) for p, v in present if p not in allowed]

        known: list[KnownValue] = []
        for path, value in present:
            category = FIELD_CATEGORIES[path]
            if category is None:
                continue
            for canonical, forms in spellings(path, value):
                known.append(
                    KnownValue(
                        category,
                        frozenset(s for form in forms for s in variants(form)),
                        canonical=canonical,
                        allow_suffix_s=category == "NAME",
                        dropped=path not in allowed,
                    )
                )

        detector = Detector(known, self._plugins)
        tokeniser = self._tokeniser(data_key, tenant)
        tokens = TokenMap() if tokens is None else tokens  # given: this pass adds to another's
        removed = frozenset(set(CATEGORIES) - set(policy.tokenise))
        out = [
            tokeniser.apply(text, spans, removed, tokens)
            for text, spans in zip(texts, detector.detect_texts(texts, splits), strict=True)
        ]

        context_parts = []
        for path, value in used if make_context_line else []:
            category = FIELD_CATEGORIES[path]
            values = value if isinstance(value, list) else [value]
            rendered = [
                str(v) if category is None else tokeniser.token_for(str(v), category, False, tokens)
                for v in values
            ]
            context_parts.append(f"{path}: {', '.join(rendered)}")
        context_line = "Known context: " + "; ".join(context_parts) + "." if context_parts else ""
        return Filtered(
            texts=out,
            context_line=context_line,
            tokens=tokens,
            fields_used=[p for p, _ in used],
            fields_dropped=[p for p, _ in dropped],
        )
