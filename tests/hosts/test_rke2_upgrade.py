"""The rke2 role and a node that already runs RKE2: it never unpacks another release under the
running service (the system-upgrade-controller's Plans upgrade running nodes, one at a time:
infra/k8s_platform/upgrades.py), installs the pinned release where nothing runs, and refuses a
downgrade; and a server's etcd snapshots go to S3 with keys that never reach the output.

The stand-in release (tests/hosts/conftest.py) starts and runs as RKE2 does when its CIS checks
pass; RKE2's CIS kernel parameters cannot be live in a container, so the node that must *run*
here is an agent with no profile (the profile is not what these tests are about: the role reads
the installed release and the service state the same way under either).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.hosts.converge import PlaybookRun, run_playbook
from tests.hosts.conftest import TOKEN_PATH, VERSION, Mirror, standin_release
from tests.hosts.lab import Lab
from tests.support import Bao

PLAYBOOK = Path(__file__).parent / "playbooks" / "rke2.yml"
NEXT = "v1.33.6+rke2r1"
S3_SECRET = "s3-secret-" + hashlib.sha256(b"etcd-s3-secret-key-for-the-lab").hexdigest()


@pytest.fixture(scope="module")
def releases(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mirror, dict[str, str]]]:
    """A mirror with two good stand-in releases: the pinned VERSION and the next patch NEXT."""
    root = tmp_path_factory.mktemp("upgrade-mirror")
    sums = {}
    for version in (VERSION, NEXT):
        release = standin_release(version)
        (root / version).mkdir()
        (root / version / "rke2.linux-amd64.tar.gz").write_bytes(release)
        sums[version] = hashlib.sha256(release).hexdigest()
    server = Mirror(root, lab.hosts[0].host_end)
    yield server, sums
    server.close()


def converge(
    lab: Lab, releases: tuple[Mirror, dict[str, str]], bao: Bao, version: str, **overrides: Any
) -> PlaybookRun:
    server, sums = releases
    inv = lab.inventory()
    inv["all"]["vars"].update(
        {
            "rke2_version": version,
            "rke2_artifact_url": f"{server.url}/{version}",
            "rke2_artifact_sha256": sums[version],
            # a running agent: the stand-in starts where RKE2 would (no CIS profile, see above)
            "rke2_role": "agent",
            "rke2_profile": "",
            "rke2_server_url": "https://10.20.1.11:9345",
            "rke2_start": True,
            "rke2_token_openbao_addr": bao.address,
            "rke2_token_openbao_path": TOKEN_PATH,
            **overrides,
        }
    )
    return run_playbook(PLAYBOOK, inv)


def installed(lab: Lab) -> str:
    return lab.hosts[0].ssh("/usr/local/bin/rke2 --version").stdout.strip()


def main_pid(lab: Lab, unit: str) -> str:
    return lab.hosts[0].ssh(f"systemctl show -p MainPID --value {unit}").stdout.strip()


@pytest.fixture(scope="module")
def node(lab: Lab, releases: tuple[Mirror, dict[str, str]], bao: Bao, join_token: str) -> Iterator[None]:
    """node1 with nothing of RKE2's on it; afterwards as test_rke2.py leaves it (VERSION, stopped)."""
    host = lab.hosts[0]

    def wipe() -> None:
        host.ssh(
            "sudo systemctl disable --now rke2-agent rke2-server; sudo rm -f /usr/local/bin/rke2 "
            "/usr/local/share/rke2/.installed-*"
        )

    wipe()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BAO_TOKEN", bao.root)
        yield
        wipe()
        restored = converge(
            lab, releases, bao, VERSION, rke2_role="server", rke2_profile="cis", rke2_start=False
        )
    assert restored.rc == 0, restored.failures


@pytest.mark.timeout(1800)
def test_a_running_node_is_left_to_the_system_upgrade_controller(
    lab: Lab,
    releases: tuple[Mirror, dict[str, str]],
    bao: Bao,
    node: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = converge(lab, releases, bao, VERSION)
    assert first.rc == 0, first.failures
    assert f"rke2 version {VERSION}" in installed(lab)
    assert lab.hosts[0].ssh("systemctl is-active rke2-agent").stdout.strip() == "active"
    pid = main_pid(lab, "rke2-agent")
    capsys.readouterr()

    bumped = converge(lab, releases, bao, NEXT)  # the stack's rke2.version moved on

    assert bumped.rc == 0, bumped.failures
    # nothing unpacked under the running service, nothing fetched, nothing restarted
    assert f"rke2 version {VERSION}" in installed(lab)
    assert f"/{NEXT}/rke2.linux-amd64.tar.gz" not in releases[0].requests
    assert main_pid(lab, "rke2-agent") == pid
    assert sum(bumped.changed.values()) == 0, bumped.changed
    said = " ".join(capsys.readouterr().err.split())
    assert f"runs {VERSION} and the stack pins {NEXT}: left as it is" in said
    assert "system-upgrade-controller Plan rke2-agent upgrades it" in said


@pytest.mark.timeout(1800)
def test_a_stopped_node_gets_the_pinned_release(
    lab: Lab, releases: tuple[Mirror, dict[str, str]], bao: Bao, node: None
) -> None:
    lab.hosts[0].ssh("sudo systemctl stop rke2-agent")
    run = converge(lab, releases, bao, NEXT, rke2_start=False)
    assert run.rc == 0, run.failures
    assert f"rke2 version {NEXT}" in installed(lab)
    assert f"/{NEXT}/rke2.linux-amd64.tar.gz" in releases[0].requests
    again = converge(lab, releases, bao, NEXT, rke2_start=False)
    assert again.rc == 0 and sum(again.changed.values()) == 0, again.changed


@pytest.mark.timeout(1800)
def test_a_downgrade_is_refused_before_anything_changes(
    lab: Lab, releases: tuple[Mirror, dict[str, str]], bao: Bao, node: None
) -> None:
    if f"rke2 version {NEXT}" not in installed(lab):
        lab.hosts[0].ssh("sudo systemctl stop rke2-agent")
        assert converge(lab, releases, bao, NEXT, rke2_start=False).rc == 0
    run = converge(lab, releases, bao, VERSION, rke2_start=False)
    assert run.rc != 0
    (failure,) = run.failures
    assert failure.startswith("node1: Refuse a downgrade or a skipped minor release:")
    assert f"has RKE2 {NEXT} installed and the stack pins {VERSION}" in " ".join(failure.split())
    assert sum(run.changed.values()) == 0
    assert f"rke2 version {NEXT}" in installed(lab)


@pytest.mark.timeout(1800)
def test_a_server_snapshots_etcd_to_s3_and_its_keys_stay_out_of_the_output(
    lab: Lab,
    releases: tuple[Mirror, dict[str, str]],
    bao: Bao,
    node: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lab.hosts[0].ssh("sudo systemctl disable --now rke2-agent")
    s3 = {
        "rke2_etcd_s3": True,
        "rke2_etcd_s3_endpoint": "fsn1.your-objectstorage.com",
        "rke2_etcd_s3_region": "fsn1",
        "rke2_etcd_s3_bucket": "sovereign-etcd-eu-test",
        "rke2_etcd_s3_folder": "etcd",
        "rke2_etcd_s3_retention": 28,
        "rke2_etcd_snapshot_schedule_cron": "0 */6 * * *",
        "rke2_etcd_s3_access_key": "lab-access-key-id",
        "rke2_etcd_s3_secret_key": S3_SECRET,
    }
    version = installed(lab).split()[2]
    run = run_playbook_verbose(lab, releases, bao, version, s3)
    assert run.rc == 0, run.failures
    assert S3_SECRET not in capsys.readouterr().err
    host = lab.hosts[0]
    assert host.ssh("sudo stat -c %a:%U /etc/rancher/rke2/config.yaml").stdout.strip() == "600:root"
    config = yaml.safe_load(host.ssh("sudo cat /etc/rancher/rke2/config.yaml").stdout)
    assert config["etcd-s3"] is True and config["etcd-s3-secret-key"] == S3_SECRET
    assert (config["etcd-s3-endpoint"], config["etcd-s3-bucket"], config["etcd-s3-folder"]) == (
        "fsn1.your-objectstorage.com", "sovereign-etcd-eu-test", "etcd",
    )  # fmt: skip
    assert (config["etcd-s3-retention"], config["etcd-snapshot-schedule-cron"]) == (28, "0 */6 * * *")

    missing = converge(lab, releases, bao, version, rke2_role="server", rke2_profile="cis", rke2_start=False,
                       **{**s3, "rke2_etcd_s3_secret_key": ""})  # fmt: skip
    assert missing.rc != 0
    (failure,) = missing.failures
    assert failure.startswith("node1: Refuse S3 snapshots without their access keys:")
    assert "rke2_etcd_s3_secret_key is empty" in failure and "lab-access-key-id" not in failure


def run_playbook_verbose(
    lab: Lab, releases: tuple[Mirror, dict[str, str]], bao: Bao, version: str, s3: dict[str, Any]
) -> PlaybookRun:
    server, sums = releases
    inv = lab.inventory()
    inv["all"]["vars"].update(
        {
            "rke2_version": version,
            "rke2_artifact_url": f"{server.url}/{version}",
            "rke2_artifact_sha256": sums[version],
            "rke2_role": "server",
            "rke2_start": False,
            "rke2_token_openbao_addr": bao.address,
            "rke2_token_openbao_path": TOKEN_PATH,
        }
    )
    return run_playbook(
        PLAYBOOK, inv, s3, verbosity=2
    )  # the keys as extra variables, as converge passes them
