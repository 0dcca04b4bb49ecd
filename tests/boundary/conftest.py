from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.boundary.namespace import Namespace, observed_namespace, unavailable
from tests.support import Bao, Upstream, start_bao, start_upstream


@dataclass
class Sealed:
    """OpenBao and the model upstream inside an observed namespace with only loopback; a test
    that enters ``namespace`` starts its gateway there too."""

    namespace: Namespace
    bao: Bao
    upstream: Upstream


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sealed]:
    if why := unavailable():
        pytest.skip(f"the egress proof needs an observed network namespace: {why}")
    tmp = tmp_path_factory.mktemp("sealed")
    with observed_namespace("sovereign-sealed") as ns, ns.entered():
        bao = start_bao(tmp)
        try:
            upstream = start_upstream(tmp)
            try:
                yield Sealed(ns, bao, upstream)
            finally:
                upstream.proc.stop()
        finally:
            bao.proc.stop()
