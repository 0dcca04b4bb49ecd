"""``sovereign evidence``: the compliance evidence of a region stack, and its verification.

``sovereign evidence --stack NAME [--results DIR] [--pdf] [--sign]`` writes ``evidence.md``,
``evidence.html``, ``dataflow.svg``, ``oscal-assessment-results.json`` (OSCAL) and, with ``--pdf``,
``evidence.pdf`` into ``--out`` (default ``reports/evidence/<stack>``); ``--sign`` adds
``MANIFEST.json`` (every file's SHA-256 and the provenance), its signature by an OpenBao transit key
and the public key to check it with. Exit 0 when COMPLIANT (also with accepted exceptions, which it
lists), 1 when NOT COMPLIANT (a finding or a failing claim; the report is written all the same and
names each), 3 when INCOMPLETE (nothing fails, but claims rest on tests that no recorded run of this
code proves: run `make test` first), 2 when the stack file is missing or unreadable.

``sovereign evidence verify FOLDER [--public-key FILE]`` checks a signed folder: exit 0 when every
byte is as signed, 1 naming what changed, 2 when it cannot be checked.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gateway.errors import BadInput
from infra.paths import REPO_ROOT, STACKS_DIR, require_checkout

INPUTS = (
    "infra/evidence/controls.yaml",
    "infra/evidence/risks.yaml",
    "gateway/policies",
    "loadtests/profiles",
)


def _outcomes(results_dir: Path) -> tuple[list[Any], dict[str, str], str | None]:
    """The run results under *results_dir* and, when the make-test run is of this code, the outcome
    of each test it ran (what the ``tests`` claims are decided by)."""
    from infra.evidence import results

    head = results.head() or ""
    found = results.load(results_dir, "", head)
    make_test = next(r for r in found if r.kind == "make test")
    if make_test.state in ("passed", "failed"):
        return found, results.outcomes(make_test.path, root=REPO_ROOT), None
    return found, {}, f"The make-test result is {make_test.state}: {make_test.note}"


def _inputs(stack_file: Path) -> list[Path]:
    paths = [stack_file]
    for name in INPUTS:
        path = REPO_ROOT / name
        paths += (
            sorted(p for p in path.rglob("*") if p.is_file())
            if path.is_dir()
            else [path]
            if path.exists()
            else []
        )
    return paths


def cmd_evidence(args: argparse.Namespace) -> int:
    if getattr(args, "action", None) == "verify":
        from infra.evidence import bundle

        if not args.folder:
            raise BadInput("name the folder: sovereign evidence verify FOLDER")
        return bundle.cmd_verify(args)
    if not args.stack:
        raise BadInput("--stack NAME is required (or: sovereign evidence verify FOLDER)")
    require_checkout("sovereign evidence")  # the tests, docs and git history it cites
    from infra.config import stack_file
    from infra.evidence import model, oscal, provenance, render

    results_dir = Path(args.results) if args.results else REPO_ROOT / "reports"
    found, outcomes, note = _outcomes(results_dir)
    evidence = model.collect(Path(args.stacks_dir), args.stack, outcomes=outcomes, outcomes_note=note)
    evidence.results = [r for r in found if r.kind == "make test"] + _stack_results(results_dir, args.stack)
    evidence.provenance = provenance.collect(_inputs(stack_file(Path(args.stacks_dir), args.stack)))
    out = Path(args.out) if args.out else REPO_ROOT / "reports" / "evidence" / args.stack
    written = render.write(evidence, out, pdf=args.pdf)
    exported = oscal.write(evidence, out, evidence.provenance.to_dict())
    files = [written.markdown, written.html] + ([written.svg] if evidence.hops else []) + [exported]
    files += [written.pdf] if written.pdf else []
    if args.sign:
        from infra.evidence import bundle

        try:
            files.append(bundle.sign_evidence(out, args, evidence.provenance.to_dict()))
        except bundle.BundleError as exc:
            raise bundle.BundleError(f"not signed: {exc}") from None
    print(f"stack {evidence.stack}: " + ", ".join(str(f) for f in files))
    counts = ", ".join(f"{evidence.count(s)} {s}" for s in ("holds", "fails", "excepted", "unverified"))
    blockers = (
        f"; not deployable yet: {len(evidence.blockers)} deploy blocker(s)" if evidence.blockers else ""
    )
    verdict = evidence.verdict
    if verdict in (model.COMPLIANT, model.WITH_EXCEPTIONS):
        print(f"{verdict}: no finding and no failing claim ({counts}){blockers}")
        for use in evidence.exceptions:
            if use.effect == "applied":
                print(f"  exception {use.claim}: accepted until {use.expires}")
        return model.EXIT_CODES[verdict]
    failing = [c for control in evidence.controls for c in control.claims if c.status == "fails"]
    if verdict == model.INCOMPLETE:
        unverified = evidence.count("unverified")
        print(
            f"{verdict}: nothing fails, but {unverified} claim(s) rest on tests no recorded run of this code "
            f"proves ({counts}){blockers}. {evidence.outcomes_note} Run `make test`, then this command again "
            "(or pass --results DIR).",
            file=sys.stderr,
        )
        return model.EXIT_CODES[verdict]
    summary = f"{len(evidence.findings)} finding(s), {len(failing)} failing claim(s) ({counts}){blockers}"
    print(f"{verdict}: {summary}", file=sys.stderr)
    for finding in evidence.findings:
        controls = ", ".join(finding.controls) or "-"
        print(
            f"  {finding.source}: {finding.subject}: {finding.message} (breaks {controls})", file=sys.stderr
        )
    for claim in failing:  # the id and the check's reason, never a value the stack file states in free text
        print(f"  claim {claim.id} fails: {claim.reason}", file=sys.stderr)
    return model.EXIT_CODES[verdict]


def _stack_results(results_dir: Path, stack: str) -> list[Any]:
    from infra.evidence import results

    return [r for r in results.load(results_dir, stack, results.head() or "") if r.kind != "make test"]


def add_parser(sub: Any) -> None:
    ev = sub.add_parser(
        "evidence", help="compliance evidence of a region stack (Markdown, HTML, PDF, OSCAL), or verify one"
    )
    ev.add_argument(
        "action", nargs="?", choices=["verify"], help="verify FOLDER: check a signed evidence folder"
    )
    ev.add_argument("folder", nargs="?", help="with verify: the signed evidence folder")
    ev.add_argument("--stack", help="stack name: stacks/Pulumi.<stack>.yaml")
    ev.add_argument("--stacks-dir", default=str(STACKS_DIR))
    ev.add_argument("--out", help="output folder (default reports/evidence/<stack>)")
    ev.add_argument(
        "--results", help="folder of recorded run results: junit/make-test.xml, verify-<stack>.xml, "
        "checkov/<stack>.json (default reports/)",
    )  # fmt: skip
    ev.add_argument("--pdf", action="store_true", help="also print evidence.pdf (A4) with headless Chromium")
    ev.add_argument(
        "--sign", action="store_true", help="sign the folder with an OpenBao transit key (ed25519)"
    )
    ev.add_argument("--public-key", type=Path, help="with verify: the exported public key (offline check)")
    ev.add_argument(
        "--online", action="store_true", help="with verify: also check the signature with OpenBao"
    )
    from infra.evidence import bundle

    bundle.add_openbao_arguments(ev)
    bundle.add_expect_fingerprint_argument(ev)
    ev.set_defaults(func=cmd_evidence)
