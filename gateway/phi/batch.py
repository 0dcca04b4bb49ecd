"""Batch anonymisation of exported conversations (``sovereign anonymize``): the gateway's own
filter and the tenant's own keys, so a DPIA cites one mechanism for both paths.

Input: JSON lines ``{"messages": [{"role": …, "content": …}, …], "context": {…}}`` (the
context may also sit in ``sovereign.context``, as in a gateway request). Output: JSON lines
``{"messages": […]}`` with every content filtered by the use case's policy; the context and
every other field are left out (they are what the filter protects). The output is written to
a temporary file and renamed only when every line succeeded: nothing half-done is left.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway import validation
from gateway.errors import BadInput
from gateway.phi.context import PatientContext
from gateway.phi.detect import Recognizer
from gateway.phi.filter import PHIFilter
from gateway.policy import UseCasePolicy
from gateway.schemas import Message


class BatchError(BadInput, ValueError):
    pass


class _Line(BaseModel):
    model_config = ConfigDict(extra="allow")
    messages: list[Message] = Field(min_length=1)
    context: PatientContext | None = None
    sovereign: dict[str, Any] | None = None


@dataclass
class Summary:
    lines: int = 0
    tokenised: Counter[str] = field(default_factory=Counter)
    removed: Counter[str] = field(default_factory=Counter)
    fields_dropped: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def render(self) -> str:
        rows = [f"anonymised {self.lines} conversations in {self.seconds:.1f} s"]
        for name, counter in (("tokenised", self.tokenised), ("removed", self.removed)):
            if counter:
                rows.append(f"  {name:<10} " + ", ".join(f"{k} {v}" for k, v in sorted(counter.items())))
        if self.fields_dropped:
            rows.append(
                "  context fields dropped: "
                + ", ".join(f"{k} {v}" for k, v in sorted(self.fields_dropped.items()))
            )
        return "\n".join(rows)


def _parse(lineno: int, raw: str) -> _Line:
    try:
        data = json.loads(raw)
    except ValueError:
        raise BatchError(f"line {lineno}: not valid JSON") from None
    if not isinstance(data, dict):
        raise BatchError(f"line {lineno}: must be a JSON object with 'messages'")
    if data.get("context") is None and isinstance(data.get("sovereign"), dict):
        data["context"] = data["sovereign"].get("context")
    try:
        return _Line.model_validate(data)
    except ValidationError as exc:
        raise BatchError(f"line {lineno}: {validation.first(exc)}") from None


def anonymize(
    policy: UseCasePolicy,
    source: Path,
    target: Path,
    data_key: bytes,
    tenant: str,
    progress: Callable[[int, int], None] | None = None,
    plugins: Sequence[Recognizer] = (),
) -> Summary:
    total = sum(1 for line in source.open(encoding="utf-8") if line.strip())
    summary = Summary()
    phi = PHIFilter(plugins)
    t0 = time.monotonic()
    tmp = target.with_name(target.name + ".partial")
    try:
        with source.open(encoding="utf-8") as src, tmp.open("w", encoding="utf-8") as out:
            for lineno, raw in enumerate(src, start=1):
                if not raw.strip():
                    continue
                line = _parse(lineno, raw)
                texts = [m.text() for m in line.messages]
                filtered = phi.apply(policy, line.context, texts, data_key, tenant)
                messages = [
                    {"role": m.role, "content": t} for m, t in zip(line.messages, filtered.texts, strict=True)
                ]
                out.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
                summary.lines += 1
                summary.tokenised.update(filtered.tokens.tokenised)
                summary.removed.update(filtered.tokens.removed)
                summary.fields_dropped.update(filtered.fields_dropped)
                if progress is not None:
                    progress(summary.lines, total)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    summary.seconds = time.monotonic() - t0
    return summary
