"""Use-case policies: one versioned YAML file per use case.

The policy version recorded in every audit record is ``<version>+<sha256 of the file>``,
so an auditor can tell exactly which policy text governed a request.
"""

from __future__ import annotations

import hashlib
from importlib.resources import files
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway import validation
from gateway.errors import BadInput
from gateway.phi.context import FIELD_CATEGORIES
from gateway.phi.detect import CATEGORIES
from gateway.phi.tokenise import ALWAYS_REMOVED


class PolicyError(BadInput, ValueError):
    pass


class UseCasePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", description="Use-case id sent by Magento.")
    version: int = Field(ge=1, description="Bumped on every change of the policy text.")
    description: str = ""
    model: str = Field(description="Model alias (a key of the gateway's `upstreams`).")
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
    digest: str = Field(default="", description="SHA-256 of the policy file (set on load).")

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
