"""``sovereign evidence --stack NAME``: the compliance evidence of a region stack.

Writes ``evidence.md``, ``evidence.html``, ``dataflow.svg`` (and ``evidence.pdf`` with
``--pdf``) into ``--out`` (default ``reports/evidence/<stack>``). Exit 0 when the stack has no
finding, 1 when it has (the report is written and flags each), 2 when the stack file is
missing or unreadable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


def cmd_evidence(args: argparse.Namespace) -> int:
    from infra.config import StackConfigError
    from infra.evidence import model, render

    try:
        evidence = model.collect(Path(args.stacks_dir), args.stack)
    except StackConfigError as exc:  # no stack file, or not YAML: nothing to report on
        print(f"sovereign evidence: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else REPO_ROOT / "reports" / "evidence" / args.stack
    try:
        written = render.write(evidence, out, pdf=args.pdf)
    except render.RenderError as exc:
        print(f"sovereign evidence: {exc}", file=sys.stderr)
        return 2
    files = [written.markdown, written.html] + ([written.svg] if evidence.hops else [])
    files += [written.pdf] if written.pdf else []
    print(f"stack {evidence.stack}: " + ", ".join(str(f) for f in files))
    if evidence.compliant:
        print(f"COMPLIANT: no finding; {len(evidence.controls)} controls mapped to code, tests and settings")
        return 0
    print(f"NOT COMPLIANT: {len(evidence.findings)} finding(s)", file=sys.stderr)
    for finding in evidence.findings:
        controls = ", ".join(finding.controls) or "-"
        print(
            f"  {finding.source}: {finding.subject}: {finding.message} (breaks {controls})", file=sys.stderr
        )
    return 1


def add_parser(sub: Any) -> None:
    ev = sub.add_parser("evidence", help="compliance evidence of a region stack (Markdown, HTML, PDF)")
    ev.add_argument("--stack", required=True, help="stack name: stacks/Pulumi.<stack>.yaml")
    ev.add_argument("--stacks-dir", default=str(REPO_ROOT / "stacks"))
    ev.add_argument("--out", help="output folder (default reports/evidence/<stack>)")
    ev.add_argument("--pdf", action="store_true", help="also print evidence.pdf with headless Chromium")
    ev.set_defaults(func=cmd_evidence)
