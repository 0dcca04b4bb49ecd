"""A gateway per test module, on the session's OpenBao and scripted upstream, with a client key
for the module's tenant (``TENANT`` in the module). A module that needs other settings (test_door:
short timeouts) defines its own ``gateway``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.clientkeys import ClientKeyStore
from tests.support import Bao, Proc, Upstream, gateway_config, running_gateway


@pytest.fixture(scope="module")
def gw_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="module")
def gateway(gw_dir: Path, bao: Bao, upstream_server: Upstream) -> Iterator[Proc]:
    config = gateway_config(gw_dir, bao.address, bao.gateway_token, upstream_server.url)
    with running_gateway(config, gw_dir) as proc:
        yield proc


@pytest.fixture(scope="module")
def api_key(request: pytest.FixtureRequest, gw_dir: Path) -> str:
    return ClientKeyStore(gw_dir / "keys.json").create(request.module.TENANT)[1]
