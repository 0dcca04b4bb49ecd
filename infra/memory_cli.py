"""``sovereign memory erase|export``: the data subject's rights, as a client of the gateway's API.

One code path and one audit writer: the command POSTs to the gateway's
``/v1/sovereign/data_subjects/erase|export`` (gateway/memory/api.py), which pseudonymises,
erases or exports, and writes the audit records; the command never touches the database.
The patient's context comes from a JSON file or stdin (``--context FILE|-``), never from argv
(visible in /proc and shell history); the API key from ``--key-file`` or ``SOVEREIGN_API_KEY``
(default: the local stack's demo key). Errors name the field, never a value: the gateway's
answers never hold one, and this command prints only their code and message.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from gateway.clientkeys import TENANT_RE
from gateway.errors import BadInput, SovereignError

PATHS = {"erase": "/v1/sovereign/data_subjects/erase", "export": "/v1/sovereign/data_subjects/export"}


class MemoryCommandError(SovereignError, RuntimeError):
    pass


def read_json_option(source: str, option: str, kind: type, what: str) -> Any:
    """The JSON in file *source* (- for stdin), given as *option*; it must be a *kind* (dict or
    list): *what* says what to give instead. Never echoes the text (patient data)."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"{option}: cannot read {source} ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise BadInput(f"{option}: not UTF-8 text; save {source} as UTF-8 and give {what}") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise BadInput(f"{option}: not JSON; give {what}") from None
    if not isinstance(data, kind):
        raise BadInput(f"{option}: must be {what}")
    return data


def _context(source: str) -> dict[str, Any]:
    context: dict[str, Any] = read_json_option(
        source, "--context", dict,
        'the patient\'s context as a JSON object (the PatientContext of the gateway API), e.g. '
        '{"customer_id": "..."} or {"kvnr": "..."} or {"email": "..."}',
    )  # fmt: skip
    return context


def post_to_gateway(args: argparse.Namespace, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST *body* to the gateway (--target, or the local stack's) with the tenant's client key
    (and --tenant, which the gateway checks against the key): its JSON answer, or
    MemoryCommandError naming the HTTP status and the gateway's error code and message."""
    import httpx

    if args.target:
        target = args.target.rstrip("/")
    else:
        from infra.local.cli import local_profile

        target = local_profile(args).url("gateway")
    headers = {"authorization": f"Bearer {_api_key(args)}"}
    if args.tenant:
        headers["x-sovereign-tenant"] = args.tenant
    try:
        resp = httpx.post(target + path, json=body, headers=headers, timeout=args.timeout)
    except httpx.HTTPError as exc:
        raise MemoryCommandError(f"the gateway at {target} did not answer ({type(exc).__name__})") from None
    try:
        answer = resp.json()
    except ValueError:
        answer = None
    if resp.status_code != 200 or not isinstance(answer, dict):
        error = answer.get("error", {}) if isinstance(answer, dict) else {}
        raise MemoryCommandError(
            f"the gateway answered HTTP {resp.status_code}: {error.get('code', '-')}: "
            f"{error.get('message', 'no error message')}"
            + (f" (field {error['param']})" if error.get("param") else "")
        )
    return answer


def _api_key(args: argparse.Namespace) -> str:
    if args.key_file:
        try:
            return Path(args.key_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise BadInput(f"--key-file: cannot read {args.key_file} ({exc.strerror})") from None
    if os.environ.get("SOVEREIGN_API_KEY"):
        return os.environ["SOVEREIGN_API_KEY"].strip()
    from infra.local.cli import local_profile

    demo = local_profile(args).state_dir / "secrets" / "demo.key"
    if demo.exists():
        return demo.read_text(encoding="utf-8").strip()
    raise BadInput("no API key: give --key-file FILE or set SOVEREIGN_API_KEY (a client key of the tenant)")


def cmd_memory(args: argparse.Namespace) -> int:
    if not TENANT_RE.match(args.tenant):
        raise BadInput("--tenant: lower-case letters, digits and '-', 1-63 characters")
    sovereign: dict[str, Any] = {"context": _context(args.context)}
    if args.use_case:
        sovereign["use_case"] = args.use_case
    body = post_to_gateway(args, PATHS[args.memory_command], {"sovereign": sovereign})
    if args.memory_command == "erase":
        print(
            f"erased {body['total']} rows of the data subject: " + json.dumps(body["deleted"], sort_keys=True)
        )
        return 0
    out = json.dumps(body, indent=2, ensure_ascii=False)
    if args.output:
        from gateway.files import write_private

        write_private(Path(args.output), out + "\n")  # personal data: 0600
        counts = {k: len(v) for k, v in body.items() if isinstance(v, list)}
        print(f"exported to {args.output}: " + json.dumps(counts, sort_keys=True))
    else:
        print(out)
    return 0


def add_parser(sub: Any) -> None:
    from infra.local.cli import with_profile

    mem = sub.add_parser("memory", help="the data subject's rights over the memory store: erase, export")
    msub = mem.add_subparsers(dest="memory_command", required=True)
    for name, text in (
        ("erase", "erase everything stored for one patient (GDPR Art. 17)"),
        ("export", "export everything stored for one patient, restored (GDPR Art. 15)"),
    ):
        p = msub.add_parser(name, help=text)
        with_profile(p)
        p.add_argument("--tenant", required=True, help="the tenant (must be the API key's)")
        p.add_argument(
            "--context",
            required=True,
            help="JSON file with the patient's context (kvnr, customer_id or email); - for stdin",
        )
        p.add_argument("--use-case", help="the use case the request is made under (audit; optional)")
        p.add_argument("--target", help="the gateway's URL (default: the local stack's)")
        p.add_argument("--key-file", help="file with a client API key of the tenant (or SOVEREIGN_API_KEY)")
        p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the answer")
        if name == "export":
            p.add_argument("--output", help="write the export to this file (mode 0600) instead of stdout")
        p.set_defaults(func=cmd_memory)
