"""What Hetzner sells, from one dated file (``hetzner-cloud.yaml`` beside this module).

The stack config refuses a server type that is not orderable (naming its replacement when it
was withdrawn) or that is not x86 (the RKE2 artefact and the roles' packages are amd64); the
program splits a pool over as many spread placement groups as Hetzner's limit needs; the plan's
engine stand-in refuses both as the Hetzner API would; and the plan warns when the file is
older than STALE_AFTER, naming it. Hand-written: no maintained library ships Hetzner's
orderable types offline (hcloud-python asks the live API, which a plan does not reach).
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from pathlib import Path

import yaml

FILE = Path(__file__).with_name("hetzner-cloud.yaml")
STALE_AFTER = dt.timedelta(days=183)  # about 6 months


@dataclass(frozen=True)
class Catalogue:
    as_of: dt.date
    sources: tuple[str, ...]
    server_types: dict[str, str]  # orderable type -> architecture
    withdrawn: dict[str, str]  # withdrawn type -> orderable replacement
    spread_max_servers: int

    def server_type_problem(self, value: str, arch: str = "x86") -> str | None:
        """Why *value* cannot be ordered for this stack, with the fix; None when it can. The
        message does not repeat the value (the config error shows it before the reason)."""
        where = f"(catalogue {FILE.name}, as of {self.as_of})"
        if value in self.withdrawn:
            return (
                "withdrawn by Hetzner, it can no longer be ordered; use "
                f"{self.withdrawn[value]!r}, its nearest replacement {where}"
            )
        if value not in self.server_types:
            families = sorted({t.rstrip("0123456789") for t in self.server_types})
            return (
                "not a Hetzner Cloud server type on sale; choose one of the "
                f"{', '.join(families)} types {where}"
            )
        if self.server_types[value] != arch:
            return (
                f"an {self.server_types[value]} server; the RKE2 artefact and the roles' "
                f"packages are amd64, so choose an {arch} type (cx, cpx or ccx) {where}"
            )
        return None

    def spread_groups(self, servers: int) -> int:
        """How many spread placement groups *servers* need (at least one)."""
        return max(1, -(-servers // self.spread_max_servers))

    def stale(self, today: dt.date) -> str | None:
        """A warning when the catalogue is older than STALE_AFTER on *today*; None otherwise."""
        age = today - self.as_of
        if age <= STALE_AFTER:
            return None
        return (
            f"WARNING: the Hetzner catalogue is {age.days} days old (as of {self.as_of}): server types "
            f"may have been withdrawn since; refresh {FILE} from its sources and set as_of"
        )


@functools.cache
def load(path: Path = FILE) -> Catalogue:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return Catalogue(
        as_of=data["as_of"],
        sources=tuple(data["sources"]),
        server_types=dict(data["server_types"]),
        withdrawn=dict(data["withdrawn"]),
        spread_max_servers=int(data["placement_groups"]["spread_max_servers"]),
    )
