from __future__ import annotations

import functools
import hashlib
import io
import os
import shutil
import tarfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import hvac
import pytest

from tests.hosts.lab import Lab
from tests.support import Bao


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if os.geteuid() != 0 or shutil.which("systemd-nspawn") is None:
        pytest.fail("test hosts need root and systemd-nspawn: run ./scripts/bootstrap.sh, as root")
    with Lab(Path(tmp_path_factory.mktemp("hosts")), ["node1"]) as running:
        yield running


VERSION = "v1.33.5+rke2r1"
TOKEN_PATH = "sovereign/eu-test/rke2"


# RKE2's CIS kernel parameters (rancher/rke2 v1.33 pkg/cli/cmds/profile_linux.go; the release's
# share/rke2/rke2-cis-sysctl.conf lists the same)
CIS_SYSCTL = {"vm.panic_on_oom": 0, "vm.overcommit_memory": 1, "kernel.panic": 10, "kernel.panic_on_oops": 1}

# The stand-in refuses to start for the reasons the real binary does with `profile: cis`
# (rancher/rke2 v1.33 pkg/cli/cmds/profile_linux.go: validateETCDReqs, validateKernelReqs): on a
# server a missing etcd user or group, on every node a kernel parameter whose live value (read
# from /proc/sys) differs; it exits 1 with RKE2's messages. Otherwise it tells systemd it is
# ready (the units are Type=notify, as RKE2's) and runs until stopped. Any other arguments
# print the version.
STANDIN_RKE2 = """#!/bin/bash
role=$1
if [[ $role == server || $role == agent ]]; then
  if grep -qE '^profile: *"?cis' /etc/rancher/rke2/config.yaml 2>/dev/null; then
    errors=()
    if [[ $role == server ]]; then
      getent passwd etcd >/dev/null || errors+=("missing required: user: unknown user etcd")
      getent group etcd >/dev/null || errors+=("missing required: group: unknown group etcd")
    fi
    for kv in CIS_PAIRS; do
      key=${kv%%=*} want=${kv#*=}
      have=$(< "/proc/sys/${key//.//}")
      [[ $have == "$want" ]] || errors+=("invalid kernel parameter value $key=$have - expected $want")
    done
    if ((${#errors[@]})); then
      printf 'level=fatal msg="%s"\\n' "${errors[@]}" >&2
      exit 1
    fi
  fi
  systemd-notify --ready
  exec sleep infinity
fi
echo 'rke2 version VERSION (test stand-in)'
"""


def standin_release(version: str) -> bytes:
    pairs = " ".join(f"{k}={v}" for k, v in CIS_SYSCTL.items())
    files = {
        "bin/rke2": STANDIN_RKE2.replace("CIS_PAIRS", pairs).replace("VERSION", version),
        **{
            f"lib/systemd/system/rke2-{kind}.service": f"[Unit]\nDescription=RKE2 {kind} (stand-in)\n\n"
            f"[Service]\nType=notify\nNotifyAccess=all\nExecStart=/usr/local/bin/rke2 {kind}\n\n"
            "[Install]\nWantedBy=multi-user.target\n"
            for kind in ("server", "agent")
        },
        "share/rke2/rke2-cis-sysctl.conf": "".join(f"{k}={v}\n" for k, v in CIS_SYSCTL.items()),
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755 if name.startswith("bin/") else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Mirror:
    """The EU artefact mirror, played by an HTTP server on the veth's host end."""

    def __init__(self, root: Path, address: str) -> None:
        self.requests: list[str] = []
        mirror = self

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                mirror.requests.append(self.path)

        self.server = ThreadingHTTPServer((address, 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://{address}:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def mirror(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mirror, str]]:
    root = tmp_path_factory.mktemp("mirror")
    release = standin_release(VERSION)
    (root / VERSION).mkdir()
    (root / VERSION / "rke2.linux-amd64.tar.gz").write_bytes(release)
    tampered = root / "v1.33.6+rke2r1"
    tampered.mkdir()
    (tampered / "rke2.linux-amd64.tar.gz").write_bytes(release + b"\0")  # one byte more than pinned
    server = Mirror(root, lab.hosts[0].host_end)
    yield server, hashlib.sha256(release).hexdigest()
    server.close()


@pytest.fixture(scope="module")
def join_token(bao: Bao) -> str:
    token = hashlib.sha256(b"rke2-join-token-for-the-lab").hexdigest()
    hvac.Client(url=bao.address, token=bao.root).secrets.kv.v2.create_or_update_secret(
        path=TOKEN_PATH, secret={"token": token}, mount_point="secret"
    )
    return token
