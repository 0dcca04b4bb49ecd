"""``python -m gateway --config FILE``: serve the gateway (same as ``sovereign gateway serve``)."""

from infra.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["gateway", "serve", *__import__("sys").argv[1:]]))
