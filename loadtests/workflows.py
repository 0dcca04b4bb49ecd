"""Healthcare workflows and workloads, built from synthetic patient data only.

Each workflow is one use case of the gateway (its policy in gateway/policies/) with a typical
user message and the structured context Magento would send. The names, dates and numbers are
generated from small fixed lists by a seeded random generator: no real person's data.

A workload (``loadtests/workloads/<name>.yaml``) weights the use cases and gives each a
distribution of output lengths (sent as ``max_tokens``) and optionally of prompt lengths
(reached by appending neutral filler sentences to the synthetic message). Distribution kinds:
``fixed`` (value), ``uniform`` (min, max), ``normal`` (mean, sd, min, max), ``lognormal``
(median, sigma, min, max) and ``empirical`` (values, drawn with equal weight). Draws are
rounded to whole tokens and clamped to [min, max]. Same seed, same requests: a ``fixed``
output and no prompt distribution draw nothing, so the default workload
(``healthcare-default``) sends exactly the requests of the earlier fixed workflows.

Limits: ``max_tokens`` is a ceiling, a model may stop earlier (the gateway accepts no
``min_tokens`` or ``ignore_eos``: its request schema forbids unknown fields) and the gateway
caps it at the use case's policy ``max_tokens``. Prompt lengths are estimated at four
characters per token (no tokenizer here); the run records the upstream's real
``prompt_tokens`` per stream.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway import validation
from gateway.errors import BadInput
from loadtests import files

WORKLOADS = Path(__file__).parent / "workloads"
DEFAULT_WORKLOAD = "healthcare-default"
CHARS_PER_TOKEN = 4  # estimate for padding prompts; the upstream's usage.prompt_tokens is recorded

FIRST = ("Erika", "Max", "Lena", "Jonas", "Mia", "Paul", "Hannah", "Felix", "Sofia", "Noah")
LAST = ("Musterfrau", "Mustermann", "Beispiel", "Probe", "Test", "Muster", "Fiktiv")
CITIES = (("10115", "Berlin"), ("80331", "München"), ("20095", "Hamburg"), ("50667", "Köln"))
# neutral filler for long prompts: no names, no dates, no numbers
FILLER = (
    "Die Beschwerden treten vor allem am Abend auf.",
    "Es wurden keine neuen Medikamente eingenommen.",
    "Der Verlauf war in den letzten Tagen unverändert.",
    "Bitte berücksichtigen Sie die bisherigen Angaben.",
    "Die Rückfrage betrifft die allgemeine Einnahme.",
    "Eine Allergie ist nicht bekannt.",
    "Die Lieferung sollte an die übliche Adresse gehen.",
    "Das Gespräch fand per Video statt.",
)
UseCase = Literal[
    "patient-support", "appointment-scheduling", "order-support", "catalog-search", "telehealth-summary"
]
USE_CASES: tuple[str, ...] = get_args(UseCase)


class WorkloadError(BadInput, ValueError):
    pass


# -- distributions ----------------------------------------------------------------------------


class _Dist(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Fixed(_Dist):
    kind: Literal["fixed"]
    value: int = Field(gt=0)

    @property
    def upper(self) -> int:
        """The largest value a draw can take."""
        return self.value

    def draw(self, rng: random.Random) -> int:
        return self.value  # draws nothing: the default workload's requests stay as they were


class _Bounded(_Dist):
    min: int = Field(gt=0)
    max: int = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> _Bounded:
        if self.min > self.max:
            raise ValueError("min must not exceed max")
        return self

    @property
    def upper(self) -> int:
        return self.max

    def clamp(self, value: float) -> int:
        return max(self.min, min(self.max, round(value)))


class Uniform(_Bounded):
    kind: Literal["uniform"]

    def draw(self, rng: random.Random) -> int:
        return rng.randint(self.min, self.max)


class Normal(_Bounded):
    kind: Literal["normal"]
    mean: float = Field(gt=0)
    sd: float = Field(ge=0)

    def draw(self, rng: random.Random) -> int:
        return self.clamp(rng.gauss(self.mean, self.sd))


class Lognormal(_Bounded):
    kind: Literal["lognormal"]
    median: float = Field(gt=0)
    sigma: float = Field(ge=0)

    def draw(self, rng: random.Random) -> int:
        return self.clamp(rng.lognormvariate(math.log(self.median), self.sigma))


class Empirical(_Dist):
    kind: Literal["empirical"]
    values: list[Annotated[int, Field(gt=0)]] = Field(min_length=1)

    @property
    def upper(self) -> int:
        return max(self.values)

    def draw(self, rng: random.Random) -> int:
        return rng.choice(self.values)


Distribution = Annotated[Fixed | Uniform | Normal | Lognormal | Empirical, Field(discriminator="kind")]


class UseCaseSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    weight: float = Field(gt=0, description="Relative share of the requests.")
    output_tokens: Distribution = Field(description="Output length, sent as max_tokens.")
    prompt_tokens: Distribution | None = Field(
        default=None, description="Prompt length (estimated tokens); none: the message as it is."
    )


class WorkloadFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    use_cases: dict[UseCase, UseCaseSpec] = Field(
        min_length=1, description="Use case -> its share and lengths."
    )


# -- requests ---------------------------------------------------------------------------------


def message(use_case: str, rng: random.Random) -> tuple[str, dict[str, Any]]:
    """The synthetic user message and sovereign context of *use_case* (seeded draws only)."""
    first, last = rng.choice(FIRST), rng.choice(LAST)
    name = f"{first} {last}"
    dob = date(1950, 1, 1) + timedelta(days=rng.randrange(0, 365 * 55))
    customer = f"C-{rng.randrange(10_000, 99_999)}"
    order = f"ORD-{rng.randrange(100_000, 999_999)}"
    postcode, city = rng.choice(CITIES)
    context: dict[str, Any] = {"name": name, "date_of_birth": dob.isoformat(), "customer_id": customer}
    if use_case == "appointment-scheduling":
        text = f"Hallo, hier ist {name}. Kann ich meinen Termin am Dienstag auf Donnerstag verschieben?"
    elif use_case == "patient-support":
        text = f"Ich bin {name}, geboren am {dob:%d.%m.%Y}. Wie nehme ich das verschriebene Ibuprofen ein?"
        context["email"] = f"{first.lower()}.{last.lower()}@example.org"
    elif use_case == "telehealth-summary":
        text = (f"Bitte fasse das Gespräch zusammen: {name} berichtet seit drei Tagen über Kopfschmerzen "
                "und leichtes Fieber, keine Vorerkrankungen, Ibuprofen hilft kurzzeitig.")  # fmt: skip
    elif use_case == "order-support":
        text = f"Wo ist meine Bestellung {order}? Lieferadresse {postcode} {city}."
        context["order_ids"] = [order]
    else:  # catalog-search: no patient data at all
        text = rng.choice(("Blutdruckmessgerät für das Handgelenk", "Pflaster für empfindliche Haut",
                           "Fieberthermometer ohne Quecksilber"))  # fmt: skip
        context = {}
    return text, context


def estimated_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def pad(text: str, tokens: int, rng: random.Random) -> str:
    """*text* with filler sentences appended until it holds about *tokens* (estimated)."""
    parts = [text]
    length = len(text)
    while math.ceil(length / CHARS_PER_TOKEN) < tokens:
        sentence = rng.choice(FILLER)
        parts.append(sentence)
        length += 1 + len(sentence)
    return " ".join(parts)


@dataclass(frozen=True)
class Workflow:
    use_case: str
    weight: float
    output_tokens: Fixed | Uniform | Normal | Lognormal | Empirical
    prompt_tokens: Fixed | Uniform | Normal | Lognormal | Empirical | None = None

    @property
    def max_tokens(self) -> int | None:
        """The fixed output length, when it is fixed."""
        return self.output_tokens.value if isinstance(self.output_tokens, Fixed) else None

    def request(self, rng: random.Random) -> dict[str, Any]:
        text, context = message(self.use_case, rng)
        max_tokens = self.output_tokens.draw(rng)
        if self.prompt_tokens is not None:
            text = pad(text, self.prompt_tokens.draw(rng), rng)
        return {
            "messages": [{"role": "user", "content": text}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": max_tokens,
            "sovereign": {"use_case": self.use_case, **({"context": context} if context else {})},
        }


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    workflows: tuple[Workflow, ...]

    @property
    def use_cases(self) -> tuple[str, ...]:
        return tuple(w.use_case for w in self.workflows)

    def pick(self, rng: random.Random) -> tuple[str, dict[str, Any]]:
        """A use case by weight and its request body, drawn from *rng* only."""
        flow = rng.choices(self.workflows, weights=[w.weight for w in self.workflows])[0]
        return flow.use_case, flow.request(rng)

    def only(self, names: str | list[str] | tuple[str, ...] | None) -> Workload:
        """The use cases named (a comma list or a list; all when empty), in the order named."""
        wanted = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names or ())
        wanted = [n for n in wanted if n]
        if not wanted:
            return self
        known = {w.use_case: w for w in self.workflows}
        unknown = [n for n in wanted if n not in known]
        if unknown:
            # use case names come from the command line, never from patient data: naming them helps
            raise WorkloadError(
                f"--use-cases: unknown {', '.join(unknown)}; "
                f"known in workload {self.name}: {', '.join(known)}"
            )
        return replace(self, workflows=tuple(known[n] for n in wanted))


def load_workload(name_or_path: str = DEFAULT_WORKLOAD, directory: Path = WORKLOADS) -> Workload:
    """A shipped workload by name, or a workload file of your own by its path (``*.yaml``)."""
    name = name_or_path or DEFAULT_WORKLOAD
    path, raw = files.read_named(name, directory, option="--workload", kind="workload", error=WorkloadError)
    try:
        spec = WorkloadFile(**(raw if isinstance(raw, dict) else {}))
    except ValidationError as exc:
        raise WorkloadError(f"{path}: {validation.first(exc)}; see docs/load-tests.md#workloads") from None
    flows = tuple(
        Workflow(use_case, uc.weight, uc.output_tokens, uc.prompt_tokens)
        for use_case, uc in spec.use_cases.items()
    )
    return Workload(spec.name, spec.description, flows)


def select(names: str | None) -> tuple[Workflow, ...]:
    """The default workload's workflows named in a comma list (all when empty); unknown names
    are refused (kept for callers of the earlier API: ``load_workload().only(names)``)."""
    try:
        return load_workload().only(names).workflows
    except WorkloadError as exc:
        raise ValueError(str(exc)) from None


WORKFLOWS = load_workload().workflows
