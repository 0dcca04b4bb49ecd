"""``sovereign loadtest``: the Locust suite headless against a gateway, with the SLA verdict.

Builds the ``locust`` command line (the same one docs/load-tests.md shows for distributed runs)
and writes everything to one folder: Locust's CSV, HTML and JSON, the SLA verdict
(``sla.json``), the raw samples and PNG plots of the latency percentiles over time. The exit
code is Locust's: 0 when every threshold of the profile holds, 1 on a miss.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from loadtests import sla, workflows

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
LOCAL_KEY = Path(".sovereign") / "secrets" / "demo.key"


class LoadtestError(ValueError):
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
) -> list[str]:
    if not target.startswith(("http://", "https://")):
        raise LoadtestError(f"--target {target!r}: give the gateway's base URL, e.g. http://127.0.0.1:8080")
    sla.load_profile(profile)
    try:
        workflows.select(use_cases)
    except ValueError as exc:
        raise LoadtestError(str(exc)) from None
    if users < 1:
        raise LoadtestError(f"--users {users}: at least 1")
    key = api_key_file or (LOCAL_KEY if LOCAL_KEY.is_file() else None)
    if key is not None and not key.is_file():
        raise LoadtestError(f"--api-key-file {key}: no such file")
    locust = shutil.which("locust", path=str(Path(sys.executable).parent)) or "locust"
    argv = [
        locust, "-f", str(LOCUSTFILE), "--headless", "--only-summary", "-H", target.rstrip("/"),
        "-u", str(users), "-r", f"{spawn_rate:g}", "-t", run_time,
        "--csv", str(out / "locust"), "--html", str(out / "report.html"), "--json-file", str(out / "locust"),
        "--sla-profile", profile, "--sla-out", str(out), "--arrival-rate", f"{arrival_rate:g}",
        "--stamps", stamps,
    ]  # fmt: skip
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
        f"sovereign loadtest: reports in {out}/ (sla.json, report.html, locust_stats.csv, *.png)",
        file=sys.stderr,
    )
    return rc
