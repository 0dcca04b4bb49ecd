"""The load-test options both command lines take, declared once: ``sovereign loadtest``
(loadtests/cli.py, which passes them on to Locust) and Locust's own (loadtests/locustfile.py's
``init_command_line_parser``, for ``locust -f loadtests/locustfile.py`` runs). The options only
one of them has (``--target``/``-H``, ``--profile``/``--sla-profile``, ``--out``/``--sla-out``,
the key and CA files, ``--workload``'s default) stay with that command line.
"""

from __future__ import annotations

from typing import Any

from loadtests.schedule import MODES

SHARED: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--use-cases", {
        "default": "", "help": "comma list of the workload's use cases to run (default: all, weighted)",
    }),
    ("--arrival-rate", {
        "type": float, "default": 0.0,
        "help": "open loop: requests/s over all users and processes, started on schedule whether or not "
        "earlier ones ended (0: closed loop, each user sends its next request when the last one ended)",
    }),
    ("--arrival", {
        "choices": MODES, "default": "poisson",
        "help": "open-loop arrivals: poisson (exponential gaps, the default) or constant (evenly spaced)",
    }),
    ("--max-in-flight", {
        "type": int, "default": 1000,
        "help": "open loop: streams in flight per process at most; arrivals beyond are dropped and counted",
    }),
    ("--warm-up", {
        "default": "0s",
        "help": "streams started in the first DURATION (and before every user is spawned) are reported, "
        "not judged: e.g. 10s",
    }),
    ("--seed", {
        "type": int, "default": 7, "help": "seed of the synthetic patient data and of the arrival schedule",
    }),
    ("--stamps", {
        "choices": ("kernel", "read"), "default": "kernel",
        "help": "when a token arrived: the kernel's receive stamp (loadtests/arrival.py, the default) or "
        "the clock when Python read it; TLS: always read",
    }),
    ("--insecure", {
        "action": "store_true", "help": "https: do not verify the gateway's certificate (test stacks)",
    }),
)  # fmt: skip
"""(flag, ``add_argument`` keywords) of each option both command lines take."""


def add_shared(parser: Any) -> None:
    """Add :data:`SHARED` to *parser* (an argparse parser or group, or Locust's)."""
    for flag, kwargs in SHARED:
        parser.add_argument(flag, **kwargs)
