"""The request contract: OpenAI-compatible chat completions plus the ``sovereign`` extension.

Unknown fields are refused (422 naming where, never the unknown name itself: a client chose
it) rather than forwarded: an unreviewed field is a way for patient data to reach the model
unseen. Types are strict, as in the published schema: ``"stream": 0`` or
``"temperature": "0.5"`` is refused, not reinterpreted. ``user`` is accepted for client
compatibility but never forwarded (it is an end-user identifier). docs/gateway-api.md says
what happens to every field: filtered, validated to a safe form, or not forwarded.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway import validation
from gateway.phi.context import PatientContext

USE_CASE_HEADER = "x-sovereign-use-case"
TENANT_HEADER = "x-sovereign-tenant"
REQUEST_ID_HEADER = "x-request-id"
#: sent (``true``) when the client's X-Request-Id was not a UUID and a new one was made
REQUEST_ID_REPLACED_HEADER = "x-request-id-replaced"


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = Field(default=None, max_length=64)

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = False


class SovereignExtension(BaseModel):
    """Magento's extension field: the use case and the structured patient context."""

    model_config = ConfigDict(extra="forbid", strict=True)
    use_case: str | None = Field(default=None, description="Use-case id, e.g. appointment-scheduling.")
    context: PatientContext | None = Field(
        default=None, description="Structured patient context; never forwarded as it is."
    )


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = Field(default=None, description="Model alias; the use case decides if omitted.")
    messages: list[Message] = Field(min_length=1, max_length=256)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, gt=0)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    stop: str | list[str] | None = None
    seed: int | None = None
    # one choice only; an integer, not a bool: Literal[1] let `true` through (True == 1), found
    # by the negative fuzzing of the published schema
    n: int | None = Field(default=None, ge=1, le=1)
    user: str | None = Field(default=None, description="Accepted, never forwarded.")
    sovereign: SovereignExtension | None = None

    #: bounded numbers passed on as they are; ``stop`` goes through the PHI filter and
    #: ``seed`` is replaced by a keyed hash of it (gateway/app.py)
    FORWARDED: ClassVar[tuple[str, ...]] = (
        "temperature",
        "top_p",
        "presence_penalty",
        "frequency_penalty",
    )


def describe_validation_error(exc: ValidationError) -> tuple[str, str]:
    """(field, message) for the first error, never echoing the offending value, nor the name
    of an unknown field (the client chose it: it could be patient data): that one is reported
    at the object that holds it, ``body`` for the top level."""
    first = validation.first(exc)
    if first.type == "extra_forbidden":
        where = ".".join(str(p) for p in first.loc[:-1]) or "body"
        return where, f"{where}: unknown field; the gateway supports only the documented fields"
    field = first.path or "body"
    if first.type == "missing":
        return field, f"field {field!r} is required"
    return field, f"field {field!r}: {first.message}"


def openai_error(message: str, type_: str, code: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "code": code, "param": param}}
