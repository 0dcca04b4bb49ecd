"""A client key for the module's tenant (``TENANT`` in the module), for the module's gateway
(tests/conftest.py: one gateway process per module, with the module's ``GATEWAY_SETTINGS``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.clientkeys import ClientKeyStore


@pytest.fixture(scope="module")
def api_key(request: pytest.FixtureRequest, gw_dir: Path) -> str:
    return ClientKeyStore(gw_dir / "keys.json").create(request.module.TENANT)[1]
