"""Admission control: how many requests a pod and each tenant may have in flight, and how fast
a tenant may send them.

Decided at once, never queued: a request over its tenant's limit gets 429, one over the pod's
limit 503, both with ``Retry-After``, so a client backs off and a load balancer tries another
pod instead of the request waiting behind the others. Per pod, in memory: with N pods behind
the Service a tenant gets up to N times its limits, as with NGINX's ``limit_req`` per
instance. Hand-written (a counter and a token bucket per tenant): the rate limiters on PyPI
either queue callers (aiolimiter waits for capacity) or need a shared store (limits with
Redis); the gateway must answer at once and stay inside the pod.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from gateway.settings import LimitSettings


class Refused(Exception):
    """Not admitted: *status* 429 (the tenant's limit) or 503 (the pod's), with the seconds
    after which a retry may succeed."""

    def __init__(self, status: int, code: str, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after_s = status, code, message, retry_after_s


@dataclass
class _Tenant:
    tokens: float
    refilled: float
    in_flight: int = 0


@dataclass
class Ticket:
    """One admitted request; give it back with :meth:`Admission.release` (once)."""

    tenant: str
    stream: bool = False
    released: bool = False


class Admission:
    """Counters for one gateway process (one event loop: no locks needed)."""

    def __init__(self, limits: LimitSettings) -> None:
        self._limits = limits
        self._tenants: dict[str, _Tenant] = {}
        self.requests = 0
        self.streams = 0

    def _tenant(self, name: str) -> _Tenant:
        state = self._tenants.get(name)
        if state is None:
            state = self._tenants[name] = _Tenant(float(self._limits.tenant(name).burst), time.monotonic())
        return state

    def admit(self, tenant: str) -> Ticket:
        """Admit a request of *tenant* or raise :class:`Refused`. The pod's limit is checked
        first: a full pod says 503 to everyone, whoever's request it is."""
        limits = self._limits
        if self.requests >= limits.max_concurrent_requests:
            raise Refused(
                503, "gateway_busy", "this gateway pod has its maximum of requests in flight; retry",
                limits.retry_after_s,
            )  # fmt: skip
        own = limits.tenant(tenant)
        state = self._tenant(tenant)
        if state.in_flight >= own.max_concurrent:
            raise Refused(
                429, "tenant_concurrency_exceeded",
                f"the tenant has its maximum of {own.max_concurrent} requests in flight; retry when one ends",
                1,
            )  # fmt: skip
        now = time.monotonic()
        state.tokens = min(float(own.burst), state.tokens + (now - state.refilled) * own.rate_per_s)
        state.refilled = now
        if state.tokens < 1.0:
            wait = math.ceil((1.0 - state.tokens) / own.rate_per_s)
            raise Refused(
                429, "tenant_rate_exceeded",
                f"the tenant sends more than {own.rate_per_s:g} requests per second; retry after {wait} s",
                max(1, wait),
            )  # fmt: skip
        state.tokens -= 1.0
        state.in_flight += 1
        self.requests += 1
        return Ticket(tenant)

    def admit_stream(self, ticket: Ticket) -> None:
        """Count an admitted request as a stream, or raise :class:`Refused` (503) and release it."""
        if self.streams >= self._limits.max_concurrent_streams:
            self.release(ticket)
            raise Refused(
                503, "gateway_busy", "this gateway pod has its maximum of streams open; retry",
                self._limits.retry_after_s,
            )  # fmt: skip
        ticket.stream = True
        self.streams += 1

    def release(self, ticket: Ticket | None) -> None:
        if ticket is None or ticket.released:
            return
        ticket.released = True
        self.requests -= 1
        if ticket.stream:
            self.streams -= 1
        self._tenants[ticket.tenant].in_flight -= 1

    def snapshot(self) -> dict[str, int]:
        """Requests and streams in flight (for metrics)."""
        return {"requests": self.requests, "streams": self.streams}
