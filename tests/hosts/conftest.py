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


def standin_release(version: str) -> bytes:
    files = {
        "bin/rke2": f"#!/bin/sh\necho 'rke2 version {version} (test stand-in)'\n",
        **{
            f"lib/systemd/system/rke2-{kind}.service": f"[Unit]\nDescription=RKE2 {kind} (stand-in)\n\n"
            f"[Service]\nType=notify\nExecStart=/usr/local/bin/rke2 {kind}\n\n"
            "[Install]\nWantedBy=multi-user.target\n"
            for kind in ("server", "agent")
        },
        "share/rke2/rke2-cis-sysctl.conf": "vm.panic_on_oom=0\nvm.overcommit_memory=1\nkernel.panic=10\n"
        "kernel.panic_on_oops=1\n",
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
