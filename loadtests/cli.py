"""``sovereign loadtest``: the Locust suite headless against a gateway, with the SLA verdict.

Builds the ``locust`` command line (the same one docs/load-tests.md shows for distributed runs)
and writes everything to one folder: Locust's CSV, HTML and JSON (one request row per use
case, timed to the end of the stream), the SLA verdict (``sla.json``), the stream records
(``samples.json``), the LLM metrics per use case (``llm_stats.csv``), one HTML report with the
verdict and plots (``sla.html``) and the PNG plots. The exit code is Locust's: 0 when every
threshold of the profile holds, 1 on a miss, 3 when an auth failure (401/403) stopped the run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from gateway.errors import BadInput
from loadtests import sla, workflows
from loadtests.schedule import duration_s

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
LOCAL_KEY = Path(".sovereign") / "secrets" / "demo.key"


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
