"""Use-case policies: one versioned YAML file per use case.

The policy version recorded in every audit record is ``<version>+<sha256 of the file>``,
so an auditor can tell exactly which policy text governed a request.

A policy also lists the tools its use case may offer the model and the JSON answers it may ask
for (``tools``, ``structured_output``): each with a JSON Schema reviewed like the field list,
checked on load with the ``jsonschema`` package. The upstream only ever gets these reviewed
definitions, never a client's (gateway/app.py ``Gateway.check_features``).
"""

from __future__ import annotations

import hashlib
import json
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway import validation
from gateway.errors import BadInput
from gateway.phi.context import FIELD_CATEGORIES
from gateway.phi.detect import CATEGORIES
from gateway.phi.tokenise import ALWAYS_REMOVED


class PolicyError(BadInput, ValueError):
    pass


#: a tool's or a response schema's name, as the OpenAI API allows it
NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
#: JSON Schema keywords that only annotate (title, description, ...): they constrain nothing,
#: and SDKs write them differently for the same schema (the openai SDK adds titles, LangChain
#: defaults); a client's schema is compared with the reviewed one without them
ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$comment"})
#: keywords whose value is a map of name -> schema, and those whose value is a schema or a list
#: of schemas (JSON Schema 2020-12 and draft 7's definitions/dependencies)
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
_SCHEMA_VALUES = frozenset(
    {"items", "prefixItems", "additionalItems", "additionalProperties", "unevaluatedItems",
     "unevaluatedProperties", "contains", "propertyNames", "not", "if", "then", "else",
     "anyOf", "allOf", "oneOf", "dependencies"}
)  # fmt: skip


def _json_schema(value: dict[str, Any]) -> dict[str, Any]:
    """*value* if it is a JSON Schema (2020-12) for an object, else ValueError naming the rule."""
    try:
        Draft202012Validator.check_schema(value)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "the top"
        raise ValueError(f"not a valid JSON Schema (at {where}: {exc.validator} rule)") from None
    if value.get("type") != "object":
        raise ValueError("must be a JSON Schema of type 'object'")
    return value


def without_annotations(schema: Any) -> Any:
    """*schema* less its annotation keywords (ANNOTATIONS) at every schema position (a property
    named ``title`` stays: names in ``properties`` are not keywords)."""
    if isinstance(schema, list):
        return [without_annotations(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ANNOTATIONS:
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: without_annotations(sub) for name, sub in value.items()}
        elif key in _SCHEMA_VALUES:
            out[key] = without_annotations(value)
        else:
            out[key] = value
    return out


def same_schema(sent: Any, reviewed: dict[str, Any]) -> bool:
    """Whether a client's schema is the reviewed one: equal as JSON (``1`` is not ``true``, key
    order does not count), annotations aside."""

    def canonical(schema: Any) -> str:
        return json.dumps(without_annotations(schema), sort_keys=True, separators=(",", ":"))

    return canonical(sent) == canonical(reviewed)


class ToolPolicy(BaseModel):
    """A tool the use case may offer the model: forwarded exactly as written here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN, description="The function's name, as clients send it.")
    description: str = Field(
        min_length=1, description="Forwarded to the model as is (a client's own description never is)."
    )
    parameters: dict[str, Any] = Field(description="JSON Schema (type object) of the arguments.")

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _json_schema(v)


class SchemaPolicy(BaseModel):
    """A JSON answer format the use case may ask for (response_format json_schema)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(pattern=NAME_PATTERN, description="response_format.json_schema.name")
    description: str = Field(default="", description="Forwarded as the format's description.")
    schema_: dict[str, Any] = Field(alias="schema", description="JSON Schema (type object) of the answer.")

    @field_validator("schema_")
    @classmethod
    def _schema(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _json_schema(v)


class StructuredOutput(BaseModel):
    """The response_format values the use case allows (``text`` always)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    json_object: bool = Field(default=False, description='{"type": "json_object"} allowed.')
    schemas: list[SchemaPolicy] = Field(default_factory=list, description="json_schema formats, by name.")

    @field_validator("schemas")
    @classmethod
    def _unique(cls, v: list[SchemaPolicy]) -> list[SchemaPolicy]:
        if len({_folded(s.name) for s in v}) != len(v):
            raise ValueError("schema names must be unique (ignoring case, '_' and '-')")
        return v

    def schema_named(self, name: str) -> SchemaPolicy | None:
        """The schema of that name, ignoring case, ``_`` and ``-``: the openai SDK's ``parse()``
        names the format after the pydantic class (``SlotChoice`` for ``slot_choice``). The
        name is not part of the answer, and the upstream gets the policy's."""
        return next((s for s in self.schemas if _folded(s.name) == _folded(name)), None)


def _folded(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


class MemoryPolicy(BaseModel):
    """What the use case may store in the memory store (docs/memory.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retention_days: int = Field(
        ge=1,
        le=3650,
        description="Days a stored item is kept: its expires_at is its created_at plus this; searches "
        "never return it afterwards, and the purge deletes it.",
    )


class RetrievalPolicy(BaseModel):
    """Retrieval for the use case's chats: the nearest catalogue items in the system prompt
    (docs/memory.md, "The catalogue")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: Literal["catalogue"] = Field(
        description="What is searched: the tenant's product catalogue of this use case "
        "(loaded with POST /v1/sovereign/catalogue, `sovereign catalog load`)."
    )
    top_k: int = Field(ge=1, le=20, description="How many of the nearest items the model is shown.")


class UseCasePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", description="Use-case id sent by Magento.")
    version: int = Field(ge=1, description="Bumped on every change of the policy text.")
    description: str = ""
    model: str = Field(description="Model alias (a key of the gateway's `upstreams`, of kind chat).")
    embedding_model: str | None = Field(
        default=None,
        description="Alias of an embeddings upstream (a key of the gateway's `upstreams`, of kind "
        "embeddings) that POST /v1/embeddings of this use case uses; None (the default): the "
        "use case embeds nothing (422 embeddings_not_allowed). What is embedded is filtered "
        "with this policy's context_fields and tokenise, tokens scoped to the tenant "
        "(docs/phi-filter.md).",
    )
    max_tokens: int = Field(gt=0, description="Upper bound on max_tokens for this use case.")
    system_prompt: str = Field(default="", description="Prepended as the system message.")
    context_fields: list[str] = Field(
        default_factory=list,
        description="Context fields the model may see (tokenised). Every other field is dropped "
        "(data minimisation) and its value removed wherever it appears in the text.",
    )
    tokenise: list[str] = Field(
        default_factory=list,
        description="PHI categories that may reach the model tokenised; every other category "
        "found is removed. CARD is always removed.",
    )
    tools: list[ToolPolicy] = Field(
        default_factory=list,
        description="Tools the use case may offer the model (default none); forwarded as reviewed here.",
    )
    structured_output: StructuredOutput = Field(
        default_factory=StructuredOutput,
        description="JSON answers the use case may ask for (default none: text only).",
    )
    memory: MemoryPolicy | None = Field(
        default=None,
        description="The memory store's use by this use case (retention); None: it stores nothing.",
    )
    retrieval: RetrievalPolicy | None = Field(
        default=None,
        description="Catalogue retrieval for chat: the last user message (filtered) is embedded with "
        "embedding_model and the top_k nearest catalogue items' public fields are added to the "
        "system prompt; None (the default): no retrieval. Needs embedding_model.",
    )
    digest: str = Field(default="", description="SHA-256 of the policy file (set on load).")

    @field_validator("tools")
    @classmethod
    def _unique_tools(cls, v: list[ToolPolicy]) -> list[ToolPolicy]:
        if len({t.name for t in v}) != len(v):
            raise ValueError("tool names must be unique")
        return v

    def tool_named(self, name: str) -> ToolPolicy | None:
        return next((t for t in self.tools if t.name == name), None)

    @field_validator("context_fields")
    @classmethod
    def _known_fields(cls, v: list[str]) -> list[str]:
        unknown = [f for f in v if f not in FIELD_CATEGORIES]
        if unknown:
            raise ValueError(f"unknown context field(s) {unknown}; known: {sorted(FIELD_CATEGORIES)}")
        return v

    @field_validator("tokenise")
    @classmethod
    def _known_categories(cls, v: list[str]) -> list[str]:
        bad = [c for c in v if c not in CATEGORIES or c in ALWAYS_REMOVED or c == "PRICING"]
        if bad:
            raise ValueError(
                f"categories {bad} cannot be tokenised; allowed: "
                f"{sorted(set(CATEGORIES) - ALWAYS_REMOVED - {'PRICING', 'OTHER'})}"
            )
        return v

    @model_validator(mode="after")
    def _fields_fit_categories(self) -> UseCasePolicy:
        for f in self.context_fields:
            category = FIELD_CATEGORIES[f]
            if category is not None and category not in self.tokenise:
                raise ValueError(
                    f"context field {f!r} is allowed but its category {category} is not in tokenise: "
                    "add the category or drop the field"
                )
        return self

    @model_validator(mode="after")
    def _retrieval_embeds(self) -> UseCasePolicy:
        if self.retrieval is not None and self.embedding_model is None:
            raise ValueError("retrieval needs embedding_model (the alias of an embeddings upstream)")
        return self

    @property
    def policy_version(self) -> str:
        return f"{self.version}+{self.digest[:12]}"


def default_policies_dir() -> Path:
    return Path(str(files("gateway").joinpath("policies")))


def load_policies(directory: Path | None = None) -> dict[str, UseCasePolicy]:
    directory = directory or default_policies_dir()
    if not directory.is_dir():
        raise PolicyError(f"policies_dir {directory} is not a directory")
    policies: dict[str, UseCasePolicy] = {}
    for path in sorted(directory.glob("*.yaml")):
        raw = path.read_bytes()
        try:
            data = yaml.safe_load(raw) or {}
            policy = UseCasePolicy(**data, digest=hashlib.sha256(raw).hexdigest())
        except yaml.YAMLError as exc:
            raise PolicyError(f"{path}: {validation.not_yaml(exc)}") from None
        except ValidationError as exc:
            raise PolicyError(f"{path}: {validation.first(exc)}") from None
        if policy.name != path.stem:
            raise PolicyError(f"{path}: name {policy.name!r} must match the file name {path.stem!r}")
        policies[policy.name] = policy
    if not policies:
        raise PolicyError(f"policies_dir {directory} holds no *.yaml policy")
    return policies
