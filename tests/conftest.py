from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import (
    Bao,
    Proc,
    S3Server,
    Upstream,
    gateway_config,
    running_gateway,
    start_bao,
    start_s3,
    start_upstream,
)


@pytest.fixture(scope="session", autouse=True)
def _record_code_revision(record_testsuite_property: Callable[[str, object], None]) -> None:
    """With --junitxml (make test): the commit and dirty flag this run tested, as testsuite
    properties, so `sovereign evidence` can tell a result of HEAD from an older one."""
    from infra.evidence.results import code_properties

    for name, value in code_properties().items():
        record_testsuite_property(name, value)


@pytest.fixture(scope="session")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bao]:
    server = start_bao(tmp_path_factory.mktemp("bao"))
    yield server
    server.proc.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = start_s3()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The S3 server, with this process holding its access key (as an operator's shell would)."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    return s3_server


@pytest.fixture(scope="session")
def upstream_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    server = start_upstream(tmp_path_factory.mktemp("upstream"))
    yield server
    server.proc.stop()


@pytest.fixture
def upstream(upstream_server: Upstream) -> Upstream:
    upstream_server.reset()
    return upstream_server


@pytest.fixture(scope="module")
def gw_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's gateway folder: its config, client keys, wrapped keys and audit trail."""
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="module")
def gateway_upstream_url(upstream_server: Upstream) -> str:
    """The model server the module's ``gateway`` relays to: the session's scripted upstream; a
    module overrides this fixture for another (test_abuse: the faulty upstream)."""
    return upstream_server.url


@pytest.fixture(scope="module")
def gateway(
    request: pytest.FixtureRequest, gw_dir: Path, bao: Bao, gateway_upstream_url: str
) -> Iterator[Proc]:
    """A gateway process per test module, on the session's OpenBao, with the module's
    ``GATEWAY_SETTINGS`` (settings sections merged into tests.support.gateway_config's) if it has any."""
    settings = getattr(request.module, "GATEWAY_SETTINGS", {})
    config = gateway_config(gw_dir, bao.address, bao.gateway_token, gateway_upstream_url, **settings)
    with running_gateway(config, gw_dir) as proc:
        yield proc


# Property tests run on a shared 2-core VM whose speed varies: no per-example deadline.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("sovereign", deadline=None)
_hypothesis_settings.load_profile("sovereign")
