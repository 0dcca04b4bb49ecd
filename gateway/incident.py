"""The kill switch: use cases an operator suspended, without a redeploy.

``sovereign incident suspend --use-case NAME --reason TEXT`` (or ``--all``) writes the state to
OpenBao, KV v2 ``kv/sovereign/incident`` (settings ``incident.kv_mount``, ``incident.path``)::

    {"suspended": {"<use case, or * for all>": {"reason": str, "by": str, "at": ISO time}},
     "resumed":   {"<use case, or *>": {"reason": str, "by": str, "at": ISO time}}}

``resumed`` keeps who lifted the last suspension of each name and why, for the audit record.
Every gateway reads it with its own token (read only) every ``incident.poll_s``; a request for a
suspended use case gets 503 ``use_case_suspended`` before any key, filter or upstream is used.
A read that fails keeps the last known state (a suspension holds while OpenBao is away) and is
logged once. Each change seen — a name suspended or resumed — becomes one audit record of
``kind: "incident"`` with who and why (operator text, never patient data).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import hvac
import hvac.exceptions
import requests

from gateway.errors import SovereignError
from gateway.settings import IncidentSettings

log = logging.getLogger("sovereign.incident")

ALL = "*"  # the name that suspends every use case
MAX_REASON_CHARS = 200
#: the error code of a request for a suspended use case (docs/gateway-api.md)
SUSPENDED_CODE = "use_case_suspended"


class IncidentStateError(SovereignError, RuntimeError):
    """The state could not be read, or is not what `sovereign incident` writes."""


def _entries(data: Any, section: str) -> dict[str, dict[str, str]]:
    raw = data.get(section, {}) if isinstance(data, dict) else None
    if not isinstance(raw, dict):
        raise IncidentStateError(f"the incident state's {section!r} is not a mapping")
    out: dict[str, dict[str, str]] = {}
    for name, entry in raw.items():
        if not isinstance(name, str) or not isinstance(entry, dict):
            raise IncidentStateError(f"the incident state's {section!r} has a malformed entry")
        out[name] = {k: str(entry.get(k, ""))[:MAX_REASON_CHARS] for k in ("reason", "by", "at")}
    return out


def parse(data: Any) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """(suspended, resumed) from the stored secret's data."""
    return _entries(data, "suspended"), _entries(data, "resumed")


def read_state(client: hvac.Client, settings: IncidentSettings) -> tuple[dict[str, Any], int]:
    """(the stored data, its KV version; 0 and {} when nothing was ever stored). Blocking."""
    try:
        answer = client.secrets.kv.v2.read_secret_version(
            path=settings.path, mount_point=settings.kv_mount, raise_on_deleted_version=True
        )
    except hvac.exceptions.InvalidPath:
        return {}, 0  # no incident was ever declared
    except hvac.exceptions.Forbidden:
        raise IncidentStateError(
            "OpenBao refused reading the incident state: the token lacks permission"
        ) from None
    except hvac.exceptions.VaultError as exc:
        raise IncidentStateError(f"OpenBao error reading the incident state: {type(exc).__name__}") from None
    except requests.RequestException:
        raise IncidentStateError("OpenBao is unreachable (incident state)") from None
    if not isinstance(answer, dict):
        raise IncidentStateError("OpenBao gave no JSON answer for the incident state")
    data = answer.get("data") or {}
    return dict(data.get("data") or {}), int((data.get("metadata") or {}).get("version") or 0)


class IncidentState:
    """The suspended use cases as this gateway last read them."""

    def __init__(
        self, settings: IncidentSettings, client: Callable[[], hvac.Client], timeout_s: float
    ) -> None:
        self.settings = settings
        self._client = client  # a client with the gateway's token (KeyProvider._client)
        self._timeout_s = timeout_s
        self.suspended: dict[str, dict[str, str]] = {}
        self.loaded = False  # a read has succeeded once
        self._failing = False
        #: incident records seen and not yet in the audit trail (its key may be unavailable)
        self.pending: list[dict[str, Any]] = []

    def suspension(self, use_case: str) -> dict[str, str] | None:
        """The suspension that stops *use_case* (its own, or the one of every use case)."""
        return self.suspended.get(use_case) or self.suspended.get(ALL)

    def _read(self) -> dict[str, Any]:
        return read_state(self._client(), self.settings)[0]

    async def refresh(self) -> bool:
        """Read the state once (bounded); True when it was read. A failure keeps the last
        known state and is logged once until a read succeeds again."""
        try:
            # twice the call bound, as for keys: a connect and a read may each take timeout_s
            data = await asyncio.wait_for(asyncio.to_thread(self._read), self._timeout_s * 2)
            suspended, resumed = parse(data)
        except Exception as exc:  # any failure: keep what we know
            if not self._failing:
                self._failing = True
                what = str(exc) if isinstance(exc, IncidentStateError) else type(exc).__name__
                log.error("incident state not read, keeping the last known one (%s): %s",
                          ", ".join(sorted(self.suspended)) or "nothing suspended", what)  # fmt: skip
            return False
        if self._failing:
            self._failing = False
            log.warning("incident state read again")
        self._changes(suspended, resumed)
        self.suspended, self.loaded = suspended, True
        return True

    def _changes(self, suspended: dict[str, dict[str, str]], resumed: dict[str, dict[str, str]]) -> None:
        """Queue one audit record per name suspended or resumed since the last read."""
        first = not self.loaded
        for name, entry in sorted(suspended.items()):
            if self.suspended.get(name) != entry:
                record: dict[str, Any] = {"action": "suspend", "use_case": name, **entry}
                if first:
                    record["seen_at_start"] = True  # suspended before this gateway started
                self.pending.append(record)
                log.warning("use case %s suspended by %s", name, entry["by"])
        for name in sorted(set(self.suspended) - set(suspended)):
            entry = resumed.get(name) or {"reason": "", "by": "", "at": ""}
            self.pending.append({"action": "resume", "use_case": name, **entry})
            log.warning("use case %s resumed by %s", name, entry["by"])
