"""Package selection of the nvidia_gpu role for each supported OS and driver branch
(roles/nvidia_gpu/filter_plugins/nvidia_packages.py), and the role's use of it through Ansible."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from infra.hosts.converge import run_playbook
from tests.infra.support import REPO

UBUNTU = ("Ubuntu", "24.04")
DEBIAN = ("Debian", "12.12")
KERNEL = "6.8.0-87-generic"


def _load() -> ModuleType:
    path = REPO / "roles" / "nvidia_gpu" / "filter_plugins" / "nvidia_packages.py"
    spec = importlib.util.spec_from_file_location("nvidia_packages", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


nv = _load()


def select(os_: tuple[str, str], **kw: Any) -> dict[str, Any]:
    kw.setdefault("branch", "580")
    kw.setdefault("kernel_release", KERNEL)
    return nv.nvidia_gpu_packages(*os_, **kw)  # type: ignore[no-any-return]


@pytest.mark.parametrize("branch", nv.SUPPORTED_BRANCHES)
def test_ubuntu_uses_precompiled_signed_modules_when_the_archive_has_them(branch: str) -> None:
    s = select(UBUNTU, branch=branch, precompiled_available=True)
    assert s["method"] == "precompiled"
    assert s["kernel"] == [
        f"linux-modules-nvidia-{branch}-server-open-{KERNEL}",
        f"linux-modules-nvidia-{branch}-server-open-generic",  # follows kernel upgrades
    ]
    assert s["userspace"] == [
        f"nvidia-headless-no-dkms-{branch}-server-open",
        f"nvidia-utils-{branch}-server",
    ]
    assert not any("dkms" in p and "no-dkms" not in p for p in s["kernel"] + s["userspace"])
    assert s["nvidia_repository"] is False  # the driver comes from Ubuntu's archive


@pytest.mark.parametrize("branch", nv.SUPPORTED_BRANCHES)
def test_ubuntu_falls_back_to_dkms_without_precompiled_modules(branch: str) -> None:
    s = select(UBUNTU, branch=branch, precompiled_available=False)
    assert s["method"] == "dkms"
    assert s["kernel"] == [f"linux-headers-{KERNEL}", f"nvidia-dkms-{branch}-server-open"]
    assert s["precompiled_probe"] == f"linux-modules-nvidia-{branch}-server-open-{KERNEL}"


def test_ubuntu_dkms_when_precompiled_is_not_wanted_and_closed_modules_on_request() -> None:
    s = select(UBUNTU, precompiled_available=True, prefer_precompiled=False, open_modules=False)
    assert s["method"] == "dkms" and s["kernel"][1] == "nvidia-dkms-580-server"
    assert s["userspace"][0] == "nvidia-headless-580-server"


def test_ubuntu_kernel_flavour_follows_the_running_kernel() -> None:
    s = select(UBUNTU, kernel_release="6.8.0-1020-lowlatency", precompiled_available=True)
    assert s["kernel"][1] == "linux-modules-nvidia-580-server-open-lowlatency"


@pytest.mark.parametrize("branch", nv.SUPPORTED_BRANCHES)
def test_debian_takes_the_pinned_branch_from_nvidias_repository_with_dkms(branch: str) -> None:
    s = select(DEBIAN, branch=branch, precompiled_available=True)  # Debian has no precompiled modules
    assert s["method"] == "dkms" and s["precompiled_probe"] == ""
    assert s["kernel"] == [f"linux-headers-{KERNEL}", "nvidia-kernel-open-dkms"]
    assert "nvidia-persistenced" in s["userspace"]
    assert s["nvidia_repository"] is True
    closed = select(DEBIAN, branch=branch, open_modules=False)
    assert closed["kernel"][1] == "nvidia-kernel-dkms"


@pytest.mark.parametrize("os_", [UBUNTU, DEBIAN])
def test_cuda_and_container_toolkit_are_optional_and_pinned(os_: tuple[str, str]) -> None:
    s = select(os_, cuda_toolkit=True, cuda_version="12-9", container_toolkit_version="1.18.0-1")
    assert s["cuda"] == ["cuda-toolkit-12-9"] and s["nvidia_repository"] is True
    assert "nvidia-container-toolkit=1.18.0-1" in s["container_toolkit"]
    assert all(p.endswith("=1.18.0-1") for p in s["container_toolkit"])
    bare = select(os_, container_toolkit=False)
    assert bare["cuda"] == [] and bare["container_toolkit"] == []
    assert bare["container_toolkit_repository"] is False


@pytest.mark.parametrize(
    ("os_", "kw", "needle"),
    [
        (("Ubuntu", "22.04"), {}, "Ubuntu 22.04, which this role does not support"),
        (("Rocky", "9.4"), {}, "supported: Ubuntu 24.04, Debian 12"),
        (UBUNTU, {"branch": "550"}, "nvidia_gpu_driver_branch: '550' is not a supported branch"),
        (UBUNTU, {"kernel_release": ""}, "kernel_release is empty"),
    ],
)
def test_unsupported_input_is_refused_with_the_fix(
    os_: tuple[str, str], kw: dict[str, Any], needle: str
) -> None:
    with pytest.raises(nv.SelectionError, match=needle):
        select(os_, **kw)


def test_the_role_selects_through_ansible_with_real_facts(tmp_path: Path) -> None:
    dest = tmp_path / "selection.json"
    run = run_playbook(
        REPO / "tests" / "infra" / "playbooks" / "nvidia_select.yml",
        {
            "all": {
                "hosts": {
                    "localhost": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
                }
            }
        },
        {"selection_dest": str(dest)},
    )
    assert run.rc == 0, run.failures
    selection = json.loads(dest.read_text())
    # this machine is Debian 12: DKMS and NVIDIA's repository; the container toolkit is on by default
    assert selection["method"] == "dkms" and selection["nvidia_repository"] is True
    assert selection["kernel"][1] == "nvidia-kernel-open-dkms"
    assert "nvidia-container-toolkit=1.18.0-1" in selection["container_toolkit"]
