"""``sovereign loadtest``: the Locust suite headless against a gateway, with the SLA verdict.

Builds the ``locust`` command line (the same one docs/load-tests.md shows for distributed runs)
and writes everything to one folder: Locust's CSV, HTML and JSON (one request row per use
case, timed to the end of the stream), the SLA verdict (``sla.json``), the stream records
(``samples.json``), the LLM metrics per use case (``llm_stats.csv``), one HTML report with the
verdict and plots (``sla.html``) and the PNG plots. The exit code is Locust's: 0 when every
threshold of the profile holds, 1 on a miss, 3 when an auth failure (401/403) stopped the run.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from gateway.errors import BadInput
from infra.paths import CWD_REPORTS
from loadtests import compare, sla, workflows
from loadtests.options import add_shared
from loadtests.schedule import duration_s

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
LOCAL_KEY = Path(".sovereign") / "secrets" / "demo.key"  # working-directory-relative (infra/paths.py)


class LoadtestError(BadInput, ValueError):
    pass


def command(
    *,
    target: str,
    profile: str,
    users: int,
    spawn_rate: float,
    run_time: str,
    out: Path,
    api_key_file: Path | None,
    arrival_rate: float = 0.0,
    processes: int = 0,
    use_cases: str = "",
    stamps: str = "kernel",
    arrival: str = "poisson",
    max_in_flight: int = 1000,
    warm_up: str = "0s",
    workload: str = "",
    seed: int = 7,
    ca_file: Path | None = None,
    insecure: bool = False,
) -> list[str]:
    if not target.startswith(("http://", "https://")):
        raise LoadtestError(f"--target {target!r}: give the gateway's base URL, e.g. http://127.0.0.1:8080")
    sla.load_profile(profile)
    try:
        workflows.load_workload(workload or workflows.DEFAULT_WORKLOAD).only(use_cases)
        duration_s(warm_up)
    except ValueError as exc:
        raise LoadtestError(str(exc)) from None
    if users < 1:
        raise LoadtestError(f"--users {users}: at least 1")
    if arrival_rate < 0:
        raise LoadtestError(f"--arrival-rate {arrival_rate:g}: 0 (closed loop) or more")
    if max_in_flight < 1:
        raise LoadtestError(f"--max-in-flight {max_in_flight}: at least 1")
    if ca_file is not None and not ca_file.is_file():
        raise LoadtestError(f"--ca-file {ca_file}: no such file")
    if (ca_file is not None or insecure) and not target.startswith("https://"):
        raise LoadtestError("--ca-file/--insecure: only for an https:// --target")
    key = api_key_file or (LOCAL_KEY if LOCAL_KEY.is_file() else None)
    if key is not None and not key.is_file():
        raise LoadtestError(f"--api-key-file {key}: no such file")
    locust = shutil.which("locust", path=str(Path(sys.executable).parent)) or "locust"
    argv = [
        locust, "-f", str(LOCUSTFILE), "--headless", "--only-summary", "-H", target.rstrip("/"),
        "-u", str(users), "-r", f"{spawn_rate:g}", "-t", run_time,
        "--csv", str(out / "locust"), "--html", str(out / "report.html"), "--json-file", str(out / "locust"),
        "--sla-profile", profile, "--sla-out", str(out), "--arrival-rate", f"{arrival_rate:g}",
        "--stamps", stamps, "--arrival", arrival, "--max-in-flight", str(max_in_flight), "--warm-up", warm_up,
        "--seed", str(seed), "--workload", workload or workflows.DEFAULT_WORKLOAD,
    ]  # fmt: skip
    if ca_file is not None:
        argv += ["--ca-file", str(ca_file)]
    if insecure:
        argv += ["--insecure"]
    if key is not None:
        argv += ["--api-key-file", str(key)]
    if use_cases:
        argv += ["--use-cases", use_cases]
    if processes:
        argv += ["--processes", str(processes)]
    return argv


def run(argv: list[str], out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    rc = subprocess.run(argv, check=False).returncode
    print(
        f"sovereign loadtest: reports in {out}/ (sla.html, sla.json, samples.json, llm_stats.csv, "
        "report.html, locust_stats.csv, *.png)",
        file=sys.stderr,
    )
    return rc


def cmd_loadtest(args: argparse.Namespace) -> int:
    if missing := [a.option_strings[0] for a in args.loadtest_required if getattr(args, a.dest) is None]:
        args.loadtest_parser.error(f"the following arguments are required: {', '.join(missing)}")
    argv = command(
        target=args.target, profile=args.profile, users=args.users, spawn_rate=args.spawn_rate,
        run_time=args.run_time, out=args.out, api_key_file=args.api_key_file,
        arrival_rate=args.arrival_rate, processes=args.processes, use_cases=args.use_cases,
        stamps=args.stamps, arrival=args.arrival, max_in_flight=args.max_in_flight, warm_up=args.warm_up,
        workload=args.workload, seed=args.seed, ca_file=args.ca_file, insecure=args.insecure,
    )  # fmt: skip
    return run(argv, args.out)


def add_parser(sub: Any) -> None:
    lt = sub.add_parser(
        "loadtest",
        help="Locust suite headless against a gateway; exits 1 on an SLA miss",
        description="The Locust suite headless against a gateway, with the SLA verdict (docs/load-tests.md). "
        "`sovereign loadtest compare A B` compares two runs' report folders.",
    )
    required = [
        lt.add_argument(
            "--target", required=True, help="gateway base URL, e.g. http://127.0.0.1:8080 or https://..."
        ),
        lt.add_argument(
            "--profile",
            required=True,
            help="SLA profile: gpu-interactive, gpu-standard, cpu-local or a .yaml",
        ),
    ]
    lt.add_argument("--users", type=int, default=4, help="concurrent users (closed loop: streams in flight)")
    lt.add_argument("--spawn-rate", type=float, default=1.0, help="users started per second (ramp-up)")
    lt.add_argument("--run-time", default="60s", help="e.g. 90s, 10m")
    add_shared(lt)  # the options Locust takes too (loadtests/options.py)
    lt.add_argument("--processes", type=int, default=0, help="fork a master and N worker processes")
    lt.add_argument(
        "--workload", default="",
        help="workload: a name in loadtests/workloads or a .yaml path (default healthcare-default)",
    )  # fmt: skip
    lt.add_argument(
        "--ca-file", type=Path, help="https: PEM file of the CA that signed the gateway's certificate"
    )
    lt.add_argument("--api-key-file", type=Path, help="API key file (default: the local stack's demo key)")
    lt.add_argument("--out", type=Path, default=CWD_REPORTS / "loadtest", help="report folder")
    # `loadtest compare A B` is a sub-command of `loadtest`, whose --target and --profile it does not
    # take: argparse would demand them before the sub-command ran, so cmd_loadtest checks them (the
    # same message and exit code 2 as argparse's) and the usage line still shows them as required.
    usage = lt.format_usage().removeprefix("usage: ").rstrip()
    for action in required:
        action.required = False
    lt.set_defaults(func=cmd_loadtest, loadtest_parser=lt, loadtest_required=required)
    cmp = lt.add_subparsers(dest="loadtest_command", metavar="compare")
    compare_parser = cmp.add_parser(
        "compare", help="difference between two runs, verdict on regressions", description=compare.DESCRIPTION
    )
    compare.add_arguments(compare_parser)
    compare_parser.set_defaults(func=compare.run)
    lt.usage = f"{usage}\n       {compare_parser.format_usage().removeprefix('usage: ').rstrip()}"
