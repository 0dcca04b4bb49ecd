"""``sovereign``: the command line of sovereign-llm.

sovereign up | down | status                 the local sovereign stack (stacks/local.yaml)
sovereign gateway serve --config FILE        run the gateway
sovereign gateway keys create --tenant NAME  issue a client API key (shown once)
sovereign gateway keys list | revoke KEY_ID [--kubeconfig F]   (--kubeconfig: in the cluster's Secret)
sovereign audit verify FILE [--stack S]      verify the audit trail's chain and signatures (and archive)
sovereign audit ship FILE --stack S          ship sealed audit segments to the Object Lock archive
sovereign plan --stack NAME                  the region stack under Pulumi's mocks: table, plan.json,
                                             kubernetes.yaml, completeness findings; non-zero on a
                                             residency/policy violation
sovereign images list --stack NAME           every image the stack needs: upstream -> EU mirror, digest
sovereign charts list --stack NAME           every Helm chart: upstream -> EU mirror (OCI), digest
sovereign charts check --stack N --chart-dir D   render the pulled charts with the stack's values, check them
sovereign converge --playbook FILE           run the host playbook via ansible-runner (pulumi up calls it)
sovereign tunnel open|close|status --stack N SSH tunnel through the bastion to the Kubernetes API
sovereign harden --stack NAME                harden the stack's hosts (inventory from the stack's outputs)
sovereign verify --stack NAME                testinfra checks of the stack's hosts, JUnit report
sovereign loadtest --target URL --profile P  Locust suite headless against a gateway, SLA verdict
sovereign loadtest compare A B [--json]      difference between two runs, verdict on regressions
sovereign weights fetch|verify …             model weights from EU object storage, SHA-256 verified
sovereign bootstrap-backend --stack NAME     state, model and audit-archive buckets (infra/storage_cli.py)
sovereign models import|verify|public-key …  approved weights with a signed manifest in the model bucket
sovereign evidence --stack NAME              compliance evidence: data flow, residency, controls (md, html)
sovereign openbao snapshot --stack S         a Raft snapshot into the Object Lock bucket and the copy location
sovereign openbao snapshots --stack S        list the snapshots in both locations [--location primary|copy]
sovereign openbao restore SNAPSHOT --stack S restore one into a fresh OpenBao, then unseal it [--from-copy]
sovereign openbao import-file --stack S      DR takeover: `pulumi import --file` JSON of the restored objects
sovereign incident suspend --use-case N --reason T   the kill switch: refuse a use case (or --all) at
                                             once (503 use_case_suspended); resume | status
sovereign memory erase|export --tenant T --context FILE|-   a data subject's erasure or export
                                             through the gateway's API (docs/memory.md)
sovereign catalog load --file FILE|-         load (replace) a use case's product catalogue for
                                             retrieval through the gateway's API (docs/memory.md)
"""

from __future__ import annotations

import argparse
import sys

from gateway.errors import BAD_INPUT, FAILED, SovereignError
from infra.paths import REPO_ROOT

__all__ = ["REPO_ROOT", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``sovereign`` parser: each domain module registers its commands with ``add_parser(sub)``
    (each sub-parser's ``func`` is its handler); this module only assembles them, in this order."""
    from infra import audit_cli, catalog_cli, incident, memory_cli, openbao_cli, stack_cli, storage_cli
    from infra.evidence import cli as evidence_cli
    from infra.hosts import cli as hosts_cli
    from infra.local import cli as local_cli
    from infra.weights import cli as weights_cli
    from loadtests import cli as loadtest_cli

    parser = argparse.ArgumentParser(
        prog="sovereign", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for domain in (
        local_cli,  # up, down, status, gateway, anonymize
        audit_cli,  # audit verify | ship
        stack_cli,  # plan, images, charts
        weights_cli,  # weights fetch | verify
        storage_cli,  # bootstrap-backend, models
        evidence_cli,  # evidence
        openbao_cli,  # openbao
        incident,  # incident
        memory_cli,  # memory erase | export
        catalog_cli,  # catalog load
        hosts_cli,  # harden, verify, tunnel, converge
        loadtest_cli,  # loadtest, loadtest compare
    ):
        domain.add_parser(sub)
    return parser


def _command(parser: argparse.ArgumentParser, argv: list[str]) -> str:
    """The command's words in *argv* (``gateway keys revoke``), for the error line."""
    words: list[str] = []
    for token in argv:
        choices = next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})
        if token not in choices:
            break
        words.append(token)
        parser = choices[token]
    return " ".join(words)


def main(argv: list[str] | None = None) -> int:
    """Run one command. A refused or failed command (``SovereignError``) prints
    ``sovereign <command>: <message>``, its problems one per line, and exits with the error's
    code: 2 for input the command refuses (a stack config, a profile, a flag, an input file), 1
    for a check or an operation that failed (README.md, Errors and exit codes)."""
    given = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(given)
    from pydantic import ValidationError

    from gateway import validation

    command = f"sovereign {_command(parser, given)}"
    try:
        return int(args.func(args))
    except SovereignError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except ValidationError as exc:  # the gateway's settings: bad input, its keys never their values
        for problem in validation.problems(exc):
            print(f"{command}: {exc.title}: {problem.path or 'settings'}: {problem.message}", file=sys.stderr)
        return BAD_INPUT
    except FileNotFoundError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
