"""The project's one exception base (issue #25): every error the command line reports derives
from ``SovereignError``, which says how the command exits and what is wrong, as data.

``exit_code``: ``BAD_INPUT`` (2) for input the command refuses (a stack config, a profile, a
policy, a flag, an input file), ``FAILED`` (1) for a check or an operation that failed (a
storage call, a restore, a verification). ``problems``: one ``Problem`` (key, message) per bad
key, printed one per line after the message; never a value (gateway/validation.py).

``infra/cli.py``'s ``main()`` catches ``SovereignError`` once and prints
``sovereign <command>: <message>``. The module lives in the gateway package because the gateway
image carries only the gateway, and both the gateway and the command line import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from gateway.validation import Problem

FAILED = 1
BAD_INPUT = 2


class SovereignError(Exception):
    """A refused or failed command: *exit_code* says which, *problems* what, key by key."""

    exit_code: ClassVar[int] = FAILED
    problems: Sequence[Problem] = ()

    def __str__(self) -> str:
        return super().__str__() + "".join(f"\n  {p}" for p in self.problems)


class BadInput(SovereignError):
    """Input the command refuses: exit 2."""

    exit_code: ClassVar[int] = BAD_INPUT


class NameDataMissing(SovereignError, RuntimeError):
    """The name recogniser's lexicon is not installed (gateway/phi/names.py reads it); kept
    here, out of the compiled module (gateway/phi/compiled.py: mypyc compiles no subclass of a
    built-in exception)."""
