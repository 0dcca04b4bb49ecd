"""Fuzzing the door: requests generated from the gateway's own OpenAPI document (schemathesis,
valid and invalid by the schema) and raw bytes of any content type, against a real gateway
process with a real OpenBao and the scripted upstream. Zero 5xx, and the gateway still answers
afterwards.

``make test`` runs a short version; ``make fuzz`` sets SOVEREIGN_FUZZ_EXAMPLES=2000 per kind
(recorded in benchmarks/README.md).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.clientkeys import ClientKeyStore
from tests.support import Proc, Upstream

CANARY = b"Erika-Mustermann-KVNR-A123456780"
EXAMPLES = int(os.environ.get("SOVEREIGN_FUZZ_EXAMPLES", "150"))
USE_CASES = [
    "patient-support",
    "appointment-scheduling",
    "telehealth-summary",
    "order-support",
    "catalog-search",
]
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))  # fmt: skip


GATEWAY_SETTINGS = {"limits": {"max_body_bytes": 64 * 1024}}  # tests/conftest.py: gateway


@pytest.fixture(scope="module")
def api_key(gw_dir: Path, gateway: Proc) -> str:
    return ClientKeyStore(gw_dir / "keys.json").create("clinic-fuzz")[1]


@pytest.fixture
def client(gateway: Proc) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as c:
        yield c


def report(kind: str, statuses: Counter[int]) -> None:
    """One line per kind for the record (`make fuzz` shows it; benchmarks/README.md)."""
    print(f"\nfuzz {kind}: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}")


def still_serving(gateway: Proc, api_key: str) -> None:
    """The process is alive and a plain valid request still goes through."""
    assert gateway.proc.poll() is None, "the gateway process died"
    answer = httpx.post(
        f"{gateway.url}/v1/chat/completions", timeout=30,
        json={"messages": [{"role": "user", "content": "Hallo"}]},
        headers={"authorization": f"Bearer {api_key}", "x-sovereign-use-case": "patient-support"},
    )  # fmt: skip
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
def test_generated_requests_never_get_a_server_error(
    gateway: Proc, api_key: str, upstream: Upstream, mode: schemathesis.GenerationMode
) -> None:
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
    operation = schema["/v1/chat/completions"]["POST"]
    statuses: Counter[int] = Counter()

    @FUZZ
    @given(case=operation.as_strategy(generation_mode=mode), use_case=st.sampled_from(USE_CASES))
    def run(case: schemathesis.Case[Any], use_case: str) -> None:
        headers = {"authorization": f"Bearer {api_key}", "x-sovereign-use-case": use_case}
        response = case.call(base_url=gateway.url, headers=headers, timeout=30)
        statuses[response.status_code] += 1
        assert response.status_code < 500, (response.status_code, response.text[:300])

    run()
    report(f"schemathesis {mode.value}", statuses)
    assert sum(statuses.values()) >= EXAMPLES
    if mode is schemathesis.GenerationMode.NEGATIVE:  # what the contract calls invalid is refused
        assert statuses[200] == 0 and statuses[422] > 0, statuses
    still_serving(gateway, api_key)


def test_raw_bytes_of_any_content_type_never_get_a_server_error(
    client: httpx.Client, api_key: str, gateway: Proc
) -> None:
    statuses: Counter[int] = Counter()

    @FUZZ
    @given(
        body=st.one_of(st.binary(max_size=2048), st.text(max_size=512).map(str.encode)),
        content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded",
                                      "multipart/form-data", "application/json; charset=latin-1", ""]),
        use_case=st.sampled_from([*USE_CASES, "", "no-such-use-case"]),
    )  # fmt: skip
    def run(body: bytes, content_type: str, use_case: str) -> None:
        headers = {"authorization": f"Bearer {api_key}", "x-sovereign-use-case": use_case}
        if content_type:
            headers["content-type"] = content_type
        cut = len(body) // 2  # a canary inside whatever was generated: it must not come back
        response = client.post(
            "/v1/chat/completions", content=body[:cut] + CANARY + body[cut:], headers=headers
        )
        statuses[response.status_code] += 1
        assert response.status_code in (400, 401, 413, 415, 422), (response.status_code, response.text[:300])
        assert CANARY.decode() not in response.text

    run()
    report("raw bytes", statuses)
    still_serving(gateway, api_key)


def test_huge_bodies_are_refused_with_or_without_a_length(
    client: httpx.Client, api_key: str, gateway: Proc
) -> None:
    """Malformed JSON, invalid UTF-8 and wrong content types: tests/gateway/test_door.py and the
    raw fuzz above. Here: bodies far over the cap, declared or streamed in chunks."""
    headers = {"authorization": f"Bearer {api_key}", "x-sovereign-use-case": "patient-support",
               "content-type": "application/json"}  # fmt: skip
    for size in (64 * 1024 + 1, 1 << 20, 8 << 20):
        assert client.post("/v1/chat/completions", content=b"x" * size, headers=headers).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count as it reads
        for _ in range(256):
            yield b"y" * 4096

    assert client.post("/v1/chat/completions", content=chunks(), headers=headers).status_code == 413
    still_serving(gateway, api_key)
