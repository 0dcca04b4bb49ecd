"""Entry point of the Pulumi program (Pulumi.yaml: ``main: infra/``), for ``pulumi up -s STACK``.

Reads and validates the stack config, refuses a backend outside the EU boundary, declares the
stack (``infra/program.py``) and exports its outputs. ``sovereign plan`` runs the same
``build`` under Pulumi's mocks.
"""

import sys

from infra import backend, config, program
from infra.paths import REPO_ROOT


def _main() -> None:
    try:
        program.declare(backend.current_backend(REPO_ROOT))
    except (config.StackConfigError, backend.BackendRefused) as exc:
        # a clear message and no stack trace; nothing has been created
        print(f"sovereign-llm: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


_main()
