"""The local profile (``stacks/local.yaml``): typed, validated, every field defaulted."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway import validation
from gateway.clientkeys import TENANT_PATTERN
from gateway.errors import BadInput


class ProfileError(BadInput, ValueError):
    pass


class Ports(BaseModel):
    model_config = ConfigDict(extra="forbid")
    openbao: int = Field(default=8200, ge=1, le=65535)
    model: int = Field(default=8081, ge=1, le=65535)
    embedding: int = Field(default=8082, ge=1, le=65535)
    gateway: int = Field(default=8080, ge=1, le=65535)
    postgres: int = Field(default=5433, ge=1, le=65535)


class ModelSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alias: str = Field(default="chat", pattern=r"^[a-z0-9][a-z0-9.-]*$")
    n_threads: int = Field(default=1, ge=1, le=64)
    n_ctx: int = Field(default=2048, ge=256)


class EmbeddingSection(BaseModel):
    """The embedding model (infra/local/embedding_model.py): all-MiniLM-L6-v2 on a second
    llama.cpp server."""

    model_config = ConfigDict(extra="forbid")
    alias: str = Field(default="embed", pattern=r"^[a-z0-9][a-z0-9.-]*$")
    n_threads: int = Field(default=1, ge=1, le=64)


class Timeouts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    openbao: float = Field(default=30, gt=0)
    model: float = Field(default=300, gt=0)
    embedding: float = Field(default=120, gt=0)
    gateway: float = Field(default=30, gt=0)
    postgres: float = Field(default=60, gt=0)


class LocalProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    state_dir: Path = Path(".sovereign")
    ports: Ports = Field(default_factory=Ports)
    model: ModelSection = Field(default_factory=ModelSection)
    embedding: EmbeddingSection = Field(default_factory=EmbeddingSection)
    tenant: str = Field(default="demo", pattern=TENANT_PATTERN)
    demo_use_case: str = "patient-support"
    timeouts: Timeouts = Field(default_factory=Timeouts)

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, value: str) -> str:
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"must be a loopback IP address such as 127.0.0.1, got {value!r}") from None
        if not ip.is_loopback:
            raise ValueError("not a loopback address; the local stack serves loopback only (use 127.0.0.1)")
        return value

    @model_validator(mode="after")
    def _distinct(self) -> LocalProfile:
        if self.embedding.alias == self.model.alias:
            raise ValueError(
                "embedding.alias: the same as model.alias; the gateway names each upstream once "
                "(keep the defaults chat and embed, or choose two names)"
            )
        ports = self.ports.model_dump()
        for name, port in ports.items():
            first = next(n for n, p in ports.items() if p == port)
            if first != name:
                raise ValueError(f"ports.{name}: the same port as ports.{first}; give each component its own")
        return self

    def url(self, component: str) -> str:
        port = getattr(self.ports, component)
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "postgresql" if component == "postgres" else "http"
        return f"{scheme}://{host}:{port}"


def load_profile(path: Path, base: Path, **overrides: object) -> LocalProfile:
    """Read *path*; a relative state_dir is taken relative to *base*."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ProfileError(f"profile {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ProfileError(f"profile {path}: {validation.not_yaml(exc)}") from None
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        profile = LocalProfile(**data)
    except ValidationError as exc:
        raise ProfileError(f"{path}: {validation.first(exc)}") from None
    if not profile.state_dir.is_absolute():
        profile = profile.model_copy(update={"state_dir": (base / profile.state_dir).resolve()})
    return profile
