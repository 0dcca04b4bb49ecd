"""Validation errors reported without the values that caused them (issue #20, finding 11).

A pasted secret or a patient datum in the wrong field must never reach stderr, a log, a report
or an audit record. Every place that turns a pydantic ``ValidationError`` into words (the stack
config, the gateway settings and policies, the local profile, SLA profiles, batch input) uses
``problems``: the field's path and what is wrong, from pydantic's message *without* its input
(``errors(include_input=False)``). pydantic's own messages name the rule, never the input
(``Input should be a valid integer``, ``String should match pattern …``); a validator of ours
raises a message that names the key and the rule only, and the tests feed a canary to every
field to prove it (tests/unit/test_validation_errors.py).

``NOT_ECHOED`` is the error type for a ``PydanticCustomError`` whose message is complete on its
own (no ``Value error,`` prefix to strip).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: gateway/errors.py imports this module, and the weights
    # Job's modules import that with the standard library alone (infra/weights/manifest.py)
    from pydantic import ValidationError

NOT_ECHOED = "value_not_echoed"


@dataclass(frozen=True)
class Problem:
    """One error as data until it is printed: where (the dotted key, "" for the whole object),
    the words (never the value), and pydantic's error type ("" for the project's own checks)."""

    path: str
    message: str
    type: str = ""
    #: pydantic's location, for a caller that must not show a key the client chose (the
    #: gateway's schemas, the breach register): the path is its parts joined with dots
    loc: tuple[str | int, ...] = field(default=(), compare=False, repr=False)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def problems(exc: ValidationError) -> list[Problem]:
    """Every error of *exc*, without the offending values."""
    found = []
    for err in exc.errors(include_input=False, include_url=False, include_context=False):
        path = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            message = "missing: this field is required"
        elif err["type"] == "extra_forbidden":
            message = "unknown field: check the spelling"
        found.append(Problem(path, message, err["type"], tuple(err["loc"])))
    return found


def first(exc: ValidationError) -> Problem:
    return problems(exc)[0]


def not_yaml(exc: BaseException) -> str:
    """What to say of a file PyYAML could not parse: where, never what. PyYAML's own message
    quotes the offending line (a pasted key or a patient datum would be printed)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"not valid YAML{at} (content not shown); fix the file's syntax"
