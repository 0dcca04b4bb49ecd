"""Use-case policies: one versioned YAML file per use case.

The policy version recorded in every audit record is ``<version>+<sha256 of the file>``,
so an auditor can tell exactly which policy text governed a request.
"""

from __future__ import annotations

import hashlib
from importlib.resources import files
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class PolicyError(ValueError):
    pass


class UseCasePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", description="Use-case id sent by Magento.")
    version: int = Field(ge=1, description="Bumped on every change of the policy text.")
    description: str = ""
    model: str = Field(description="Model alias (a key of the gateway's `upstreams`).")
    max_tokens: int = Field(gt=0, description="Upper bound on max_tokens for this use case.")
    system_prompt: str = Field(default="", description="Prepended as the system message.")
    digest: str = Field(default="", description="SHA-256 of the policy file (set on load).")

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
            raise PolicyError(f"{path}: not valid YAML: {exc}") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise PolicyError(f"{path}: field {loc!r}: {first['msg']}") from None
        if policy.name != path.stem:
            raise PolicyError(f"{path}: name {policy.name!r} must match the file name {path.stem!r}")
        policies[policy.name] = policy
    if not policies:
        raise PolicyError(f"policies_dir {directory} holds no *.yaml policy")
    return policies
