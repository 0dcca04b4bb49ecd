"""Web-UI mode: a real `locust` with its web UI on a free loopback port, driven over HTTP as a
tester's browser does. The verdict is per test: computed when a test stops, shown in the UI (a
tab fed by /stats/requests) and as JSON (/sla), counting only that test's streams (a new test
and a stats reset start over), the same streams Locust's own table counts."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.infra.support import REPO
from tests.support import Upstream, free_port, wait_for_port

DEADLINE_S = 60  # a deadlock guard, not a timing bound


@pytest.fixture
def web(upstream: Upstream, tmp_path: Path) -> Iterator[tuple[httpx.Client, Path]]:
    upstream.script(ttft_ms=5, itl_ms=1, tokens=4)
    key = tmp_path / "key"
    key.write_text("sk-sov-test.unused")
    out = tmp_path / "out"
    port = free_port()
    log = (tmp_path / "locust.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", "loadtests/locustfile.py", "--web-host", "127.0.0.1",
         "--web-port", str(port), "-H", upstream.url, "--sla-profile", "cpu-local", "--sla-out", str(out),
         "--api-key-file", str(key)],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for_port(proc, port, f"locust's web UI (log {log.name})")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client, out
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def aggregated(client: httpx.Client) -> dict[str, Any]:
    stats = client.get("/stats/requests").json()
    return next(s for s in stats["stats"] if s["name"] == "Aggregated")


def settled(client: httpx.Client, requests: int) -> dict[str, Any]:
    """Locust's Aggregated row once it shows *requests*: Locust memoizes /stats/requests for 2 s
    (doubled when slow; locust/web.py ``@memoize(timeout=DEFAULT_CACHE_TIME, dynamic_timeout=True)``),
    so a read right after the stop may be the table of up to seconds before. A count that never
    agrees fails as "gave up waiting"."""
    return dict(until(lambda: (row := aggregated(client))["num_requests"] == requests and row))


def until(check: Any) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while not (value := check()):
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.1)
    return value


def swarm(client: httpx.Client, streams: int) -> None:
    """Start a test with 2 users and wait until it runs (every user spawned: Locust starts the
    test in the background, its table still shows the last test until then) and *streams*
    streams were counted."""
    assert client.post("/swarm", data={"user_count": "2", "spawn_rate": "2"}).json()["success"]
    until(lambda: client.get("/stats/requests").json()["state"] == "running")
    until(lambda: aggregated(client)["num_requests"] >= streams)


def swarm_and_stop(client: httpx.Client, streams: int) -> dict[str, Any]:
    """Start a test, let *streams* streams be counted, stop it; the /sla answer."""
    swarm(client, streams)
    client.post("/stop").raise_for_status()
    return dict(until(lambda: client.get("/sla").json().get("verdict") and client.get("/sla").json()))


def test_the_verdict_is_per_test_shown_in_the_ui_and_as_json(web: tuple[httpx.Client, Path]) -> None:
    client, out = web
    assert client.get("/sla").json()["verdict"] is None  # no test has finished yet
    assert "SLA verdict" in client.get("/").text  # the tab, from the template arguments

    first = swarm_and_stop(client, 5)
    verdict = first["verdict"]
    counted = settled(client, verdict["requests"])
    # the verdict counts what Locust's table counts, and it is on the page's stats feed
    assert verdict["requests"] == counted["num_requests"] >= 5
    assert verdict["failures"] == counted["num_failures"] == 0
    rows = client.get("/stats/requests").json()["extendedStats"][0]
    assert rows["key"] == "sla-verdict"
    assert any(
        r.get("use case") == "Aggregated" and r["streams"] == verdict["requests"] for r in rows["data"]
    )
    assert first["report"].startswith("SLA profile cpu-local:")
    assert (out / "sla.json").is_file() and (out / "samples.json").is_file()

    # a second test: its verdict counts its own streams only
    began = time.time()
    second = swarm_and_stop(client, 3)
    assert second["verdict"]["run"]["started"] >= began
    settled(client, second["verdict"]["requests"])
    assert second["verdict"]["run"]["started"] > verdict["run"]["ended"]

    # a stats reset during a test starts the verdict over as well
    swarm(client, 3)
    client.post("/stats/reset").raise_for_status()
    reset_at = time.time()
    until(lambda: aggregated(client)["num_requests"] >= 3)
    client.post("/stop").raise_for_status()
    after = second["verdict"]["run"]["ended"]
    third = until(lambda: (j := client.get("/sla").json())["verdict"]["run"]["started"] > after and j)
    assert third["verdict"]["run"]["measure_from"] <= reset_at
    settled(client, third["verdict"]["requests"])
