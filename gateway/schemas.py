"""The request contract: OpenAI-compatible chat completions and embeddings plus the
``sovereign`` extension.

Unknown fields are refused (422 naming where, never the unknown name itself: a client chose
it) rather than forwarded: an unreviewed field is a way for patient data to reach the model
unseen. Types are strict, as in the published schema: ``"stream": 0`` or
``"temperature": "0.5"`` is refused, not reinterpreted. ``user`` is accepted for client
compatibility but never forwarded (it is an end-user identifier). docs/gateway-api.md says
what happens to every field: filtered, validated to a safe form, or not forwarded.

Tools and response formats are checked against the use case's policy in gateway/app.py
(``Gateway.check_features``); here only their shape. ``store`` and ``logprobs`` are parsed so
that the refusal can say why (gateway/app.py), not merely "unknown field".
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway import validation
from gateway.phi.context import PatientContext
from gateway.policy import NAME_PATTERN

USE_CASE_HEADER = "x-sovereign-use-case"
TENANT_HEADER = "x-sovereign-tenant"
REQUEST_ID_HEADER = "x-request-id"
#: sent (``true``) when the client's X-Request-Id was not a UUID and a new one was made
REQUEST_ID_REPLACED_HEADER = "x-request-id-replaced"


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text"]
    text: str


#: a function's name (OpenAI's rule): the rule a policy's tool and schema names follow too
FUNCTION_NAME = NAME_PATTERN
#: a tool call's id: never forwarded (the upstream gets call00001, ... in its place)
# the ids model servers make: OpenAI call_<24>, vLLM chatcmpl-tool-<32 hex>, llama-cpp-python 0.3.36
# call__0_<tool name, up to 64>_cmpl-<uuid4> (llama_chat_format.py _convert_completion_to_chat_function)
TOOL_CALL_ID = r"^[A-Za-z0-9_.:-]{1,128}$"


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(pattern=FUNCTION_NAME, description="A tool of the use case's policy.")
    arguments: str = Field(description="JSON text; goes through the PHI filter value by value.")


class ToolCall(BaseModel):
    """A tool call of an earlier assistant turn, sent back in the history."""

    model_config = ConfigDict(extra="forbid", strict=True)
    id: str = Field(pattern=TOOL_CALL_ID, description="Replaced by a positional id upstream.")
    type: Literal["function"]
    function: FunctionCall


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = Field(
        default=None, description="Required, except for an assistant turn with tool_calls."
    )
    name: str | None = Field(default=None, max_length=64)
    tool_calls: list[ToolCall] | None = Field(
        default=None, max_length=64, description="Assistant turns only ([] as none, as vLLM answers)."
    )
    tool_call_id: str | None = Field(
        default=None, pattern=TOOL_CALL_ID, description="Tool turns only (required there)."
    )
    # What an answer's message carries besides, sent back as it came by the OpenAI SDK's tool loop
    # (``messages.append(completion.choices[0].message)``: the SDK sends every field the answer
    # had). vLLM v0.11.0's ChatMessage has refusal, annotations, audio, function_call and
    # reasoning_content (protocol.py); llama-cpp-python 0.3.36 sends function_call beside
    # tool_calls. Assistant turns only; never forwarded.
    refusal: str | None = Field(default=None, description="Accepted in assistant turns, never forwarded.")
    annotations: list[dict[str, Any]] | None = Field(default=None, description="As refusal.")
    audio: dict[str, Any] | None = Field(default=None, description="As refusal.")
    reasoning_content: str | None = Field(default=None, description="As refusal.")
    function_call: FunctionCall | None = Field(
        default=None,
        description="The legacy form (llama-cpp-python answers with it beside tool_calls): only as the "
        "copy of one of the turn's tool_calls; never forwarded.",
    )

    @model_validator(mode="after")
    def _fields_fit_role(self) -> Message:
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("tool_calls is allowed in assistant messages only")
        if self.tool_calls == []:
            self.tool_calls = None  # an answer without calls, as vLLM writes it
        answered = ("refusal", "annotations", "audio", "reasoning_content", "function_call")
        if self.role != "assistant" and any(getattr(self, f) is not None for f in answered):
            raise ValueError(f"{', '.join(answered)} are allowed in assistant messages only")
        if (self.tool_call_id is None) != (self.role != "tool"):
            raise ValueError(
                "a tool message needs tool_call_id (the id of the call it answers); other roles "
                "take no tool_call_id"
            )
        if self.function_call is not None and self.function_call not in [
            c.function for c in self.tool_calls or []
        ]:
            raise ValueError(
                "function_call is accepted only as the copy of one of the message's tool_calls (the "
                "legacy form a model server answers with beside them); send the call in tool_calls"
            )
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required (only an assistant message with tool_calls may omit it)")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(pattern=FUNCTION_NAME, description="A tool of the use case's policy.")
    description: str | None = Field(default=None, description="Never forwarded: the policy's is.")
    parameters: dict[str, Any] | None = Field(
        default=None, description="If sent, must be the policy's JSON Schema (annotations aside)."
    )
    strict: bool | None = None


class Tool(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(pattern=FUNCTION_NAME)


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["function"]
    function: NamedFunction


class ResponseFormatText(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text"]


class ResponseFormatJsonObject(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["json_object"]


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
    name: str = Field(pattern=FUNCTION_NAME, description="A schema of the use case's policy.")
    description: str | None = Field(default=None, description="Never forwarded: the policy's is.")
    schema_: dict[str, Any] | None = Field(
        default=None, alias="schema", description="If sent, must be the policy's (annotations aside)."
    )
    strict: bool | None = None


class ResponseFormatJsonSchema(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJsonObject | ResponseFormatJsonSchema, Field(discriminator="type")
]


def _choice_kind(value: Any) -> str:
    return "function" if isinstance(value, dict | NamedToolChoice) else "mode"


ToolChoice = Annotated[
    Annotated[Literal["none", "auto", "required"], Tag("mode")] | Annotated[NamedToolChoice, Tag("function")],
    Discriminator(_choice_kind),
]
#: fields whose errors pydantic locates with the union member after the field's name
#: (``response_format.json_schema.json_schema.name``): that part is left out of the path
_UNIONS = frozenset({"response_format", "tool_choice"})


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
    tools: list[Tool] | None = Field(
        default=None, max_length=64, description="Tools of the use case's policy only; forwarded as reviewed."
    )
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    store: bool | None = Field(default=None, description="false or absent only: the gateway stores nothing.")
    logprobs: bool | None = Field(default=None, description="false or absent only (refused: see the docs).")
    top_logprobs: int | None = Field(default=None, ge=0, le=20, description="0 or absent only.")
    sovereign: SovereignExtension | None = None

    #: bounded numbers passed on as they are; ``stop`` goes through the PHI filter and
    #: ``seed`` is replaced by a keyed hash of it (gateway/app.py)
    FORWARDED: ClassVar[tuple[str, ...]] = (
        "temperature",
        "top_p",
        "presence_penalty",
        "frequency_penalty",
    )


#: most inputs one embeddings request may carry (OpenAI's limit for an array input)
MAX_EMBEDDING_INPUTS = 2048
#: the refusal of token ids: what the gateway cannot do and what the client sets instead
IDS_REFUSED_MESSAGE = (
    "token ids (arrays of integers) are refused: the gateway cannot check token ids for patient "
    "data (its PHI filter reads text), so it embeds text only; send the text itself. LangChain's "
    "OpenAIEmbeddings sends token ids by default: set check_embedding_ctx_length=False"
)


class EmbeddingRequest(BaseModel):
    """OpenAI's CreateEmbeddingRequest (API reference, "Create embeddings"; openai-python
    3.57.0 types/embedding_create_params.py) plus the ``sovereign`` extension. ``input`` is
    text only: a string or 1 to 2048 non-empty strings (a string is taken as a list of one);
    token ids (OpenAI also takes arrays of integers) are refused, as the PHI filter cannot read
    them. ``encoding_format`` is the answer's form (the upstream is always asked for floats);
    ``dimensions`` only as the upstream's own (model servers do not shorten vectors of a model
    without Matryoshka representation). ``user`` is accepted, never forwarded."""

    model_config = ConfigDict(extra="forbid", strict=True)

    input: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1,
        max_length=MAX_EMBEDDING_INPUTS,
        description="The text to embed: a string, or an array of 1 to 2048 non-empty strings. "
        "Filtered like chat text; token ids are refused.",
    )
    model: str | None = Field(
        default=None, description="The use case's embedding_model alias; the use case decides if omitted."
    )
    encoding_format: Literal["float", "base64"] = Field(
        default="float",
        description="float: arrays of numbers; base64: each vector as little-endian float32 bytes, "
        "base64-encoded (the openai SDK's default, decoded by it).",
    )
    dimensions: int | None = Field(
        default=None, gt=0, description="If sent, must equal the embedding model's dimensions."
    )
    user: str | None = Field(default=None, description="Accepted, never forwarded.")
    sovereign: SovereignExtension | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and any(
            isinstance(v, int) or (isinstance(v, list) and v and all(isinstance(t, int) for t in v))
            for v in value
        ):
            raise ValueError(IDS_REFUSED_MESSAGE)
        return value


def describe_validation_error(exc: ValidationError) -> tuple[str, str]:
    """(field, message) for the first error, never echoing the offending value, nor the name
    of an unknown field (the client chose it: it could be patient data): that one is reported
    at the object that holds it, ``body`` for the top level."""
    first = validation.first(exc)
    loc = first.loc
    if len(loc) > 1 and loc[0] in _UNIONS:
        loc = loc[:1] + loc[2:]
    if first.type == "extra_forbidden":
        where = ".".join(str(p) for p in loc[:-1]) or "body"
        return where, f"{where}: unknown field; the gateway supports only the documented fields"
    field = ".".join(str(p) for p in loc) or "body"
    if first.type == "missing":
        return field, f"field {field!r} is required"
    if first.type in ("union_tag_invalid", "union_tag_not_found"):  # pydantic's words quote the tag
        return field, f"field {field!r}: 'type' must be one of the documented values"
    return field, f"field {field!r}: {first.message}"


def openai_error(message: str, type_: str, code: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "code": code, "param": param}}
