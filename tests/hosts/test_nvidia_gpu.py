"""The nvidia_gpu role on a real Debian 12 host without a GPU: a clean no-op with a message
when the host is not labelled as a GPU host, a loud failure when it is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra.hosts.converge import run_playbook
from tests.hosts.lab import Lab

PLAYBOOK = Path(__file__).parent / "playbooks" / "nvidia_gpu.yml"


def test_a_host_without_gpu_and_without_the_label_is_a_clean_no_op(
    lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    run = run_playbook(PLAYBOOK, lab.inventory())
    assert run.rc == 0, run.failures
    assert sum(run.changed.values()) == 0
    assert (
        "no NVIDIA GPU on node1 and it is not labelled as a GPU host; nothing to install"
        in capsys.readouterr().err
    )
    host = lab.hosts[0]
    assert host.ssh("test -e /etc/modprobe.d/60-sovereign-nouveau.conf").returncode == 1
    assert host.ssh("dpkg -l 'nvidia-*' 2>/dev/null | grep -c ^ii").stdout.strip() in ("", "0")


def test_a_gpu_labelled_host_that_shows_no_gpu_fails_loudly(lab: Lab) -> None:
    inv: dict[str, Any] = lab.inventory()
    inv["all"]["children"] = {"gpu": {"hosts": {"node1": {}}}}  # the stack labels it a GPU host
    run = run_playbook(PLAYBOOK, inv)
    assert run.rc != 0
    (failure,) = run.failures
    assert failure.startswith("node1: Fail loudly on a GPU-labelled host that shows no GPU:")
    assert "shows no NVIDIA GPU on its PCI bus" in failure
