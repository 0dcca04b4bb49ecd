"""Convergence and idempotence timings of the host roles on a real test host.

A Debian 12 host under systemd-nspawn (tests/hosts/lab.py, image from the cache, packages
through the lab's apt-cacher-ng), the hardening playbook converged through ansible-runner
twice: the first run changes the host, the second must change nothing (and shows what a no-op
re-run costs). Then playbooks/cluster.yml twice on the same host as the first control-plane
server (hardening again, plus rke2 from a stand-in release on a mirror, not started: the
host is a container). Several fresh hosts in a row, so the medians say something on this
noisy machine.

Run as root: .venv/bin/python -m benchmarks.host_roles [--hosts 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from infra.hosts.content import REPO_ROOT
from infra.hosts.converge import run_playbook
from tests.hosts.conftest import VERSION, Mirror, standin_release
from tests.hosts.lab import Lab

PLAYBOOK = REPO_ROOT / "playbooks" / "hardening.yml"
CLUSTER = REPO_ROOT / "playbooks" / "cluster.yml"


def one_host(workdir: Path) -> dict[str, Any]:
    started = time.perf_counter()
    with Lab(workdir, ["bench1"]) as lab:
        booted = time.perf_counter() - started
        host = lab.hosts[0]
        inventory = lab.inventory()
        timings: dict[str, Any] = {"boot_s": round(booted, 2)}
        for label in ("first", "second"):
            t0 = time.perf_counter()
            run = run_playbook(PLAYBOOK, inventory)
            timings[f"{label}_s"] = round(time.perf_counter() - t0, 2)
            timings[f"{label}_changed"] = sum(run.changed.values())
            if run.rc != 0:
                raise SystemExit(f"converge failed: {run.failures}")
        release = standin_release(VERSION)
        (workdir / "mirror" / VERSION).mkdir(parents=True)
        (workdir / "mirror" / VERSION / "rke2.linux-amd64.tar.gz").write_bytes(release)
        mirror = Mirror(workdir / "mirror", host.host_end)
        cluster = {
            "all": {
                "vars": {
                    **inventory["all"]["vars"],
                    "rke2_artifact_url": f"{mirror.url}/{VERSION}",
                    "rke2_artifact_sha256": hashlib.sha256(release).hexdigest(),
                    "rke2_version": VERSION,
                    "rke2_start": False,
                },
                "children": {"control_plane": {"hosts": {**inventory["all"]["hosts"]}}},
            }
        }
        cluster["all"]["children"]["control_plane"]["hosts"][host.name]["rke2_server_url"] = ""
        try:
            for label in ("cluster_first", "cluster_second"):
                t0 = time.perf_counter()
                run = run_playbook(CLUSTER, cluster, {"rke2_token": "b" * 48})
                timings[f"{label}_s"] = round(time.perf_counter() - t0, 2)
                timings[f"{label}_changed"] = sum(run.changed.values())
                if run.rc != 0:
                    raise SystemExit(f"cluster.yml failed: {run.failures}")
        finally:
            mirror.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "host_roles.json"))
    args = parser.parse_args()
    runs = []
    for _ in range(args.hosts):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(one_host(Path(tmp)))
    print("| host | boot s | hardening first s (changed) | hardening second s (changed) "
          "| cluster.yml first s (changed) | cluster.yml second s (changed) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for i, r in enumerate(runs, 1):
        cells = [
            f"{r[f'{k}_s']} ({r[f'{k}_changed']})"
            for k in ("first", "second", "cluster_first", "cluster_second")
        ]
        print(f"| {i} | {r['boot_s']} | {' | '.join(cells)} |")
    for prefix, what in (("", "hardening.yml"), ("cluster_", "cluster.yml")):
        first = statistics.median(r[f"{prefix}first_s"] for r in runs)
        second = statistics.median(r[f"{prefix}second_s"] for r in runs)
        print(
            f"{what}: median first converge {first:.1f} s, second (no change) {second:.1f} s: "
            f"{second / first:.2f} of the first"
        )
    Path(args.out).write_text(json.dumps({"args": vars(args), "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
