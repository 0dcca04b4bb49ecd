"""Run ``infra/__main__.py`` — the file ``pulumi up`` runs — under Pulumi's mocks, in its own
process (a refusal ends it with SystemExit, as under ``pulumi up``).

Usage: python -m tests.infra.entrypoint_under_mocks STACK  (config sections as JSON on stdin);
prints the stack's exports as JSON.
"""

from __future__ import annotations

import json
import runpy
import sys
from typing import Any

import pulumi

from infra import plan
from tests.infra.support import REPO


def main() -> None:
    stack = sys.argv[1]
    data = json.load(sys.stdin)
    pulumi.runtime.set_mocks(plan.RecordingMocks(), project="sovereign-llm", stack=stack, preview=False)
    # as the CLI passes them: strings as they are (the stack's secrets), objects as JSON
    # and the provider's token, as every real stack has it (pulumi config set --secret hcloud:token)
    pulumi.runtime.set_all_config(
        {f"sovereign-llm:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}
        | {"hcloud:token": "test-token"},
        secret_keys=[f"sovereign-llm:{k}" for k, v in data.items() if isinstance(v, str)] + ["hcloud:token"],
    )
    exported: dict[str, Any] = {}

    async def program() -> None:
        # the directory, as the Pulumi language host runs it (it puts infra/ first on sys.path)
        runpy.run_path(str(REPO / "infra"), run_name="__main__")
        root = pulumi.runtime.get_root_resource()
        assert root is not None
        for key, value in root.outputs.items():  # type: ignore[attr-defined]
            exported[key] = await pulumi.Output.from_input(value).future()

    pulumi.runtime.test(program)()  # type: ignore[no-untyped-call]
    print(json.dumps(exported))


if __name__ == "__main__":
    main()
