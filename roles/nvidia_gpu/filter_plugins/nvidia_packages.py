"""Package selection for the nvidia_gpu role: which packages install the pinned driver branch
on each supported OS, with precompiled signed kernel modules where the OS ships them.

Written by hand because no maintained library knows these names: Ubuntu ships NVIDIA's
drivers as ``*-<branch>-server[-open]`` packages (kernel modules prebuilt and signed by
Canonical for each kernel, or DKMS), Debian 12 gets the pinned branch from NVIDIA's CUDA
repository (DKMS only). Unit-tested for every supported OS and driver branch in
tests/infra/test_nvidia_packages.py.
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError

SUPPORTED_OS = {("Ubuntu", "24.04"): "the GPU hosts' OS", ("Debian", "12"): "the test hosts' OS"}
# Data-centre branches with open kernel modules and Ubuntu "-server" packages; 580 is the LTS.
SUPPORTED_BRANCHES = ("535", "570", "580")


class SelectionError(AnsibleFilterError):  # type: ignore[misc]  # ansible ships no type information
    pass


def _os_key(distribution: str, version: str) -> tuple[str, str]:
    major = version if distribution == "Ubuntu" else version.split(".")[0]
    key = (distribution, major)
    if key not in SUPPORTED_OS:
        known = ", ".join(f"{d} {v}" for d, v in SUPPORTED_OS)
        raise SelectionError(
            f"nvidia_gpu: the host runs {distribution} {version}, which this role does not support; "
            f"supported: {known}. Install one of them on the GPU server (Robot installimage)"
        )
    return key


def nvidia_gpu_packages(
    distribution: str,
    version: str,
    *,
    branch: str,
    open_modules: bool = True,
    kernel_release: str,
    precompiled_available: bool = False,
    prefer_precompiled: bool = True,
    cuda_toolkit: bool = False,
    cuda_version: str = "13-0",
    container_toolkit: bool = True,
    container_toolkit_version: str = "",
) -> dict[str, Any]:
    """The packages for one host. Keys: method ("precompiled" or "dkms"), kernel, userspace,
    cuda, container_toolkit (lists of apt package specs), nvidia_repository (bool: whether
    NVIDIA's CUDA repository, mirrored in the EU, is needed), precompiled_probe (the package
    whose presence in the archive means precompiled modules exist for this kernel, or "")."""
    os_key = _os_key(distribution, str(version))
    branch = str(branch)
    if branch not in SUPPORTED_BRANCHES:
        raise SelectionError(
            f"nvidia_gpu_driver_branch: '{branch}' is not a supported branch; use one of "
            f"{', '.join(SUPPORTED_BRANCHES)} (580 is the LTS branch and the default)"
        )
    if not kernel_release:
        raise SelectionError("nvidia_gpu: kernel_release is empty; gather facts (ansible_kernel) first")
    flavour = kernel_release.split("-", 2)[-1] if kernel_release.count("-") >= 2 else "generic"
    nvidia_repository = False
    probe = ""
    if os_key[0] == "Ubuntu":
        suffix = f"{branch}-server" + ("-open" if open_modules else "")
        probe = f"linux-modules-nvidia-{suffix}-{kernel_release}"
        if prefer_precompiled and precompiled_available:
            method = "precompiled"
            # the flavour meta-package keeps signed modules in step with kernel upgrades
            kernel = [probe, f"linux-modules-nvidia-{suffix}-{flavour}"]
            userspace = [f"nvidia-headless-no-dkms-{suffix}", f"nvidia-utils-{branch}-server"]
        else:
            method = "dkms"
            kernel = [f"linux-headers-{kernel_release}", f"nvidia-dkms-{suffix}"]
            userspace = [f"nvidia-headless-{suffix}", f"nvidia-utils-{branch}-server"]
    else:  # Debian 12: the branch comes from NVIDIA's repository, pinned by apt preferences
        method = "dkms"
        nvidia_repository = True
        kernel = [
            f"linux-headers-{kernel_release}",
            "nvidia-kernel-open-dkms" if open_modules else "nvidia-kernel-dkms",
        ]
        userspace = ["nvidia-driver-cuda", "nvidia-persistenced"]
    cuda = [f"cuda-toolkit-{cuda_version}"] if cuda_toolkit else []
    toolkit: list[str] = []
    if container_toolkit:
        pin = f"={container_toolkit_version}" if container_toolkit_version else ""
        toolkit = [
            f"nvidia-container-toolkit{pin}",
            f"nvidia-container-toolkit-base{pin}",
            f"libnvidia-container-tools{pin}",
            f"libnvidia-container1{pin}",
        ]
    return {
        "method": method,
        "kernel": kernel,
        "userspace": userspace,
        "cuda": cuda,
        "container_toolkit": toolkit,
        "nvidia_repository": nvidia_repository or bool(cuda),
        "container_toolkit_repository": bool(toolkit),
        "precompiled_probe": probe,
    }


def _filter(facts: dict[str, Any], **options: Any) -> dict[str, Any]:
    return nvidia_gpu_packages(
        str(facts["distribution"]), str(facts["distribution_version"]),
        kernel_release=str(facts["kernel"]), **options,
    )  # fmt: skip


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"nvidia_gpu_packages": _filter}
