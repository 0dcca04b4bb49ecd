"""Build the PHI filter's compiled modules, or say which this interpreter loads:
``python -m gateway.phi.compile build|status [--into DIR]`` (gateway/phi/compiled.py)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from gateway.phi import compiled


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.phi.compile",
        description=compiled.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["build", "status"])
    parser.add_argument(
        "--into", type=Path, help=f"the base directory (default: {compiled.ENV} or the user cache)"
    )
    args = parser.parse_args(argv)
    if args.command == "build":
        print(compiled.build(args.into))
        return
    if args.into is not None:
        os.environ[compiled.ENV] = str(args.into)
    print(compiled.describe(compiled.find()))


if __name__ == "__main__":
    main()
