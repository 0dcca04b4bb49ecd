from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hosts.lab import Lab


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if os.geteuid() != 0 or shutil.which("systemd-nspawn") is None:
        pytest.fail("test hosts need root and systemd-nspawn: run ./scripts/bootstrap.sh, as root")
    with Lab(Path(tmp_path_factory.mktemp("hosts")), ["node1"]) as running:
        yield running
