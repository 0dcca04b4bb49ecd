"""Admission control decides at once: the pod's limits (503), the tenant's concurrency and rate
(429), each with the seconds to wait; a released place is free again."""

from __future__ import annotations

import pytest

from gateway import admission
from gateway.admission import Admission, Refused
from gateway.settings import LimitSettings, TenantLimit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(admission.time, "monotonic", fake)
    return fake


def limits(**fields: object) -> LimitSettings:
    return LimitSettings.model_validate(fields)


def test_a_tenant_over_its_rate_is_told_when_to_retry_and_the_bucket_refills(clock: Clock) -> None:
    gate = Admission(limits(tenant_defaults={"rate_per_s": 2, "burst": 3, "max_concurrent": 100}))
    for _ in range(3):
        gate.release(gate.admit("a"))
    with pytest.raises(Refused) as refused:
        gate.admit("a")
    assert (refused.value.status, refused.value.code) == (429, "tenant_rate_exceeded")
    assert refused.value.retry_after_s == 1
    gate.admit("b")  # another tenant has its own bucket
    clock.now += 0.5  # one token back at 2 per second
    gate.admit("a")
    with pytest.raises(Refused):
        gate.admit("a")


def test_a_tenant_at_its_concurrency_gets_429_until_one_ends(clock: Clock) -> None:
    gate = Admission(limits(tenants={"a": TenantLimit(max_concurrent=2, rate_per_s=1000, burst=1000)}))
    first, _ = gate.admit("a"), gate.admit("a")
    with pytest.raises(Refused) as refused:
        gate.admit("a")
    assert refused.value.code == "tenant_concurrency_exceeded" and refused.value.status == 429
    gate.release(first)
    gate.release(first)  # twice is once
    gate.admit("a")
    with pytest.raises(Refused):
        gate.admit("a")


def test_a_full_pod_refuses_everyone_with_503_and_retry_after(clock: Clock) -> None:
    gate = Admission(limits(max_concurrent_requests=2, retry_after_s=3))
    tickets = [gate.admit("a"), gate.admit("b")]
    with pytest.raises(Refused) as refused:
        gate.admit("c")
    assert (refused.value.status, refused.value.code, refused.value.retry_after_s) == (503, "gateway_busy", 3)
    gate.release(tickets[0])
    gate.admit("c")


def test_streams_have_their_own_pod_limit_and_a_refused_stream_gives_its_place_back(clock: Clock) -> None:
    gate = Admission(limits(max_concurrent_streams=1))
    first = gate.admit("a")
    gate.admit_stream(first)
    second = gate.admit("a")
    with pytest.raises(Refused) as refused:
        gate.admit_stream(second)
    assert refused.value.status == 503
    assert gate.snapshot() == {"requests": 1, "streams": 1}  # the refused one holds nothing
    gate.release(first)
    assert gate.snapshot() == {"requests": 0, "streams": 0}
