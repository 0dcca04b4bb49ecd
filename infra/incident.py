"""``sovereign incident``: the kill switch's operator side (gateway/incident.py reads it).

suspend (--use-case NAME | --all) --reason TEXT [--by NAME]
resume  (--use-case NAME | --all) [--by NAME] [--reason TEXT]
status
affected FILE --from T --to T [--use-case U] [--tenant T] [--key-id K] [--out CSV]
                                  the requests in a window, from the verified audit trail
                                  (infra/incident_affected.py): ids, tenants, PHI counts, no values
register add|list|check --register FILE   the breach register, GDPR Art. 33(5) (infra/breach_register.py)

The state is one KV v2 secret in OpenBao (``kv/sovereign/incident``), written with
check-and-set: a change made by another operator between this command's read and its write
is refused (run the command again), never overwritten. Gateways pick a change up within
``incident.poll_s`` and write one ``incident`` audit record per change, with who and why.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import sys
import unicodedata
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import requests

from gateway.errors import SovereignError
from gateway.incident import ALL, MAX_REASON_CHARS, IncidentStateError, parse, read_state
from gateway.kms import make_client
from gateway.settings import IncidentSettings

MAX_BY_CHARS = 100


class IncidentError(SovereignError, RuntimeError):
    """A refused or failed `sovereign incident` command (the message says what to do)."""


class Conflict(IncidentError):
    """The state changed between the read and the write (check-and-set)."""


def operator_text(value: str, what: str, limit: int) -> str:
    """*value* stripped; refused when empty, longer than *limit* or holding control characters
    (a line break or escape sequence could forge lines in logs and terminals)."""
    value = value.strip()
    if not value:
        raise IncidentError(f"{what} is empty")
    if len(value) > limit:
        raise IncidentError(f"{what} is longer than {limit} characters")
    if any(unicodedata.category(c).startswith("C") for c in value):
        raise IncidentError(f"{what} holds control characters; write it on one line, plain text")
    return value


def known_use_cases(policies_dir: Path | None = None) -> list[str]:
    from gateway.policy import load_policies

    return sorted(load_policies(policies_dir))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def read(client: hvac.Client, settings: IncidentSettings) -> tuple[dict[str, Any], int]:
    """(the state, its KV version) — {} and 0 when none was ever written."""
    try:
        data, version = read_state(client, settings)
        suspended, resumed = parse(data)
    except IncidentStateError as exc:
        raise IncidentError(str(exc)) from None
    return {"suspended": suspended, "resumed": resumed}, version


def write(client: hvac.Client, settings: IncidentSettings, state: dict[str, Any], version: int) -> int:
    """Store *state* if the stored one is still at *version* (check-and-set); the new version.
    :class:`Conflict` when another write came first."""
    try:
        answer = client.secrets.kv.v2.create_or_update_secret(
            path=settings.path, secret=state, cas=version, mount_point=settings.kv_mount
        )
    except hvac.exceptions.InvalidRequest as exc:
        if "check-and-set" in str(exc):
            raise Conflict(
                "the incident state changed since this command read it (another operator?); "
                "nothing was written: check `sovereign incident status` and run the command again"
            ) from None
        raise IncidentError(f"OpenBao refused the incident state: {type(exc).__name__}") from None
    except hvac.exceptions.Forbidden:
        raise IncidentError(
            "OpenBao refused writing the incident state: the token needs the sovereign-incident policy"
        ) from None
    except hvac.exceptions.VaultError as exc:
        raise IncidentError(f"OpenBao error writing the incident state: {type(exc).__name__}") from None
    except requests.RequestException:
        raise IncidentError("OpenBao is unreachable") from None
    return int(answer["data"]["version"])


def suspend(
    client: hvac.Client, settings: IncidentSettings, name: str, reason: str, by: str
) -> dict[str, Any]:
    """Suspend use case *name* (or every one: ``*``); the state written."""
    state, version = read(client, settings)
    state["suspended"][name] = {"reason": reason, "by": by, "at": _now()}
    write(client, settings, state, version)
    return state


def resume(
    client: hvac.Client, settings: IncidentSettings, name: str, reason: str, by: str
) -> tuple[dict[str, Any], list[str]]:
    """Lift the suspension of *name*, or with ``*`` every suspension; (the state, the names)."""
    state, version = read(client, settings)
    suspended = state["suspended"]
    if name == ALL:
        names = sorted(suspended)
        if not names:
            raise IncidentError("nothing is suspended")
    elif name in suspended:
        names = [name]
    elif ALL in suspended:
        raise IncidentError(
            f"use case {name} is not suspended on its own: every use case is (--all); "
            "`sovereign incident resume --all` lifts that"
        )
    else:
        raise IncidentError(f"use case {name} is not suspended")
    at = _now()
    for n in names:
        del suspended[n]
        state["resumed"][n] = {"reason": reason, "by": by, "at": at}
    write(client, settings, state, version)
    return state, names


# -- the command line --------------------------------------------------------------------------
def _access(args: argparse.Namespace) -> hvac.Client:
    """A client for the given OpenBao, else the local stack's with its root token."""
    from infra.local.cli import openbao_target

    address, token_file = openbao_target(args, "openbao-root.token")
    try:
        token = Path(token_file).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise IncidentError(
            f"--token-file {token_file} does not exist; start the local stack (`sovereign up`) or pass "
            "--openbao-address and --token-file with a token of the sovereign-incident policy"
        ) from None
    return make_client(address, token, 10.0, args.ca_file)


def _target(args: argparse.Namespace) -> str:
    if args.all:
        return ALL
    known = known_use_cases(args.policies_dir)
    if args.use_case not in known:
        raise IncidentError(f"--use-case: unknown use case {args.use_case!r}; known: {', '.join(known)}")
    return str(args.use_case)


def _by(args: argparse.Namespace) -> str:
    return operator_text(args.by if args.by is not None else getpass.getuser(), "--by", MAX_BY_CHARS)


def _label(name: str) -> str:
    return "every use case (--all)" if name == ALL else f"use case {name}"


def cmd_suspend(args: argparse.Namespace) -> int:
    name, by = _target(args), _by(args)
    reason = operator_text(args.reason, "--reason", MAX_REASON_CHARS)
    suspend(_access(args), IncidentSettings(), name, reason, by)
    print(f"suspended {_label(name)} (by {by}: {reason}); gateways refuse it within incident.poll_s "
          "with 503 use_case_suspended")  # fmt: skip
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    name, by = _target(args), _by(args)
    reason = operator_text(args.reason, "--reason", MAX_REASON_CHARS) if args.reason else ""
    _, names = resume(_access(args), IncidentSettings(), name, reason, by)
    print(f"resumed {', '.join(_label(n) for n in names)} (by {by})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    state, _ = read(_access(args), IncidentSettings())
    if not state["suspended"]:
        print("nothing is suspended")
    for name, entry in sorted(state["suspended"].items()):
        print(f"suspended  {_label(name)}  since {entry['at']}  by {entry['by']}: {entry['reason']}")
    return 0


def cmd_affected(args: argparse.Namespace) -> int:
    from gateway.kms import transit_unwrapper
    from infra import incident_affected as aff
    from infra.local.cli import openbao_target

    window = aff.Window(
        aff.parse_time(args.start, "--from"), aff.parse_time(args.end, "--to"),
        args.use_case, args.tenant, args.key_id,
    )  # fmt: skip
    if window.end <= window.start:
        raise aff.AffectedError("--to: the window ends before it starts; --to must be later than --from")
    path = Path(args.file)
    if not path.exists() and not path.with_name(path.name + ".segments").is_dir():
        raise aff.AffectedError(f"audit file {path} does not exist (nor its .segments folder)")
    address, token_file = openbao_target(args, "auditor.token")
    try:
        token = Path(token_file).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise aff.AffectedError(
            f"--token-file {token_file} does not exist; pass an auditor token file"
        ) from None
    from infra import storage_cli

    archived = storage_cli.archived_segments(args)
    unwrap = transit_unwrapper(address, token, args.transit_key, args.transit_mount)
    result, found = aff.find(path, unwrap, window, archived, check_head=not args.no_head)
    print(result.report()[0], file=sys.stderr)
    if not result.ok:
        raise aff.AffectedError("the audit trail does not verify: nothing selected (see the line above)")
    table = aff.to_csv(found)
    if args.out:
        from gateway.files import write_private

        write_private(Path(args.out), table)
        print(f"{len(found)} requests written to {args.out}", file=sys.stderr)
    else:
        print(table, end="")
    for line in aff.summary(found):
        print(line, file=sys.stderr)
    if result.unfinished:
        print(f"{len(result.unfinished)} requests of the whole trail have no final record: see "
              "`sovereign audit verify`", file=sys.stderr)  # fmt: skip
    return 0


def cmd_register_add(args: argparse.Namespace) -> int:
    from infra import breach_register as br

    entry = br.add(Path(args.register), br.read_entry_file(Path(args.entry)), update=args.update)
    print(f"recorded {entry.id} revision {entry.revision} in {args.register}")
    for problem in br.check_entry(entry, entry.recorded_at or datetime.datetime.now(datetime.UTC)):
        print(f"attention: {entry.id}: {problem}", file=sys.stderr)
    return 0


def cmd_register_list(args: argparse.Namespace) -> int:
    from infra import breach_register as br

    entries = br.latest(br.read(Path(args.register)))
    if not entries:
        print(f"the register {args.register} has no entries")
    for entry in entries.values():
        print(br.describe(entry))
    return 0


def cmd_register_check(args: argparse.Namespace) -> int:
    from infra import breach_register as br

    count, problems = br.check(Path(args.register))
    for problem in problems:
        print(f"PROBLEM {problem}")
    print(f"{count} entries, {len(problems)} problems")
    return 1 if problems else 0


def _add_evidence_parsers(isub: Any, with_profile: Any) -> None:
    aff = with_profile(
        isub.add_parser(
            "affected",
            help="the requests in a time window from the verified audit trail (ids and counts only)",
        )
    )
    aff.add_argument("file", help="the audit trail (its sealed segments are in FILE.segments/)")
    aff.add_argument("--from", dest="start", required=True, help="window start, ISO 8601 with offset")
    aff.add_argument("--to", dest="end", required=True, help="window end (exclusive), ISO 8601 with offset")
    aff.add_argument("--use-case", help="only this use case")
    aff.add_argument("--tenant", help="only this tenant")
    aff.add_argument("--key-id", help="only requests with this client key id")
    aff.add_argument("--out", help="write the CSV to this file (0600) instead of stdout")
    aff.add_argument("--openbao-address", help="default: the local stack's OpenBao")
    aff.add_argument("--token-file", help="auditor token (decrypt on the audit key); default: local stack's")
    aff.add_argument("--transit-key", default="audit-hmac")
    aff.add_argument("--transit-mount", default="transit")
    aff.add_argument("--no-head", action="store_true", help="skip the truncation check against FILE.head")
    from infra import storage_cli

    storage_cli.add_archive_flags(aff)
    aff.set_defaults(func=cmd_affected)

    reg = isub.add_parser("register", help="the breach register (GDPR Art. 33(5)): add, list, check")
    rsub = reg.add_subparsers(dest="register_command", required=True)
    for name, func, helptext in (
        (
            "add",
            cmd_register_add,
            "append an entry (or with --update a new revision) from a filled-in template",
        ),
        ("list", cmd_register_list, "the latest revision of each entry: dates and decisions"),
        ("check", cmd_register_check, "every line valid; clocks kept or explained (exit 1 on a problem)"),
    ):
        p = rsub.add_parser(name, help=helptext)
        p.add_argument("--register", required=True, help="the register file (JSON Lines) the operator keeps")
        if name == "add":
            p.add_argument(
                "--entry", required=True, help="YAML filled in from docs/runbooks/breach-register.md"
            )
            p.add_argument("--update", action="store_true", help="a new revision of an entry already there")
        p.set_defaults(func=func)


def add_parser(sub: Any) -> None:
    from infra.local.cli import with_profile

    inc = sub.add_parser(
        "incident", help="the kill switch (suspend, resume), affected requests, the breach register"
    )
    isub = inc.add_subparsers(dest="incident_command", required=True)
    sus = isub.add_parser("suspend", help="suspend a use case (or all): its requests get 503")
    res = isub.add_parser("resume", help="lift a suspension (with --all: every suspension)")
    st = isub.add_parser("status", help="what is suspended, since when, by whom and why")
    for p, func in ((sus, cmd_suspend), (res, cmd_resume), (st, cmd_status)):
        with_profile(p)
        p.add_argument("--openbao-address", help="OpenBao URL (default: the local stack's)")
        p.add_argument(
            "--token-file", help="a token of the sovereign-incident policy (default: the local stack's root)"
        )
        p.add_argument("--ca-file", type=Path, help="CA certificate OpenBao's TLS certificate chains to")
        p.set_defaults(func=func)
        if p is st:
            continue
        which = p.add_mutually_exclusive_group(required=True)
        which.add_argument("--use-case", help="the use case's name (gateway/policies)")
        which.add_argument("--all", action="store_true", help="every use case")
        p.add_argument("--by", help="who (default: the OS user)")
        p.add_argument("--policies-dir", type=Path, help="use-case policies (default: the shipped ones)")
    sus.add_argument("--reason", required=True, help=f"why: one line, at most {MAX_REASON_CHARS} characters")
    res.add_argument("--reason", help="why it may run again (optional)")
    _add_evidence_parsers(isub, with_profile)
