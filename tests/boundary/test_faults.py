"""Fault injection with real processes: OpenBao stopped under load and started again. The
gateway fails closed while it is gone (503, nothing forwarded) and recovers by itself once it
is back, without a restart; the audit chain verifies afterwards.

A dev server keeps its keys in memory, so a restart would be a different OpenBao: this test
runs a real server with Raft storage, initialised and unsealed like production (one key share).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import hvac
import pytest

from gateway.audit import verify
from gateway.clientkeys import ClientKeyStore
from gateway.kms import transit_unwrapper
from infra import openbao_contract
from infra.local import openbao
from tests.support import (
    Bao,
    Proc,
    Upstream,
    free_port,
    gateway_config,
    running_gateway,
    sovereign,
    start_process,
)


@dataclass
class PersistentBao:
    config: Path
    log: Path
    address: str
    unseal_key: str = ""
    root: str = ""
    tokens: openbao.Tokens | None = None
    proc: Proc | None = None

    def start(self) -> None:
        from infra.local.stack import _bao_binary

        self.proc = start_process(
            "openbao", [_bao_binary(), "server", f"-config={self.config}"], self.address,
            "/v1/sys/health?uninitcode=200&sealedcode=200", self.log,
        )  # fmt: skip
        client = hvac.Client(url=self.address)
        if not client.sys.is_initialized():  # type: ignore[no-untyped-call]
            answer = client.sys.initialize(secret_shares=1, secret_threshold=1)  # type: ignore[no-untyped-call]
            self.unseal_key, self.root = answer["keys"][0], answer["root_token"]
        client.sys.submit_unseal_key(self.unseal_key)
        # unsealed is not yet serving: Raft elects this node leader first (health 200 = active)
        deadline = time.monotonic() + 60
        while httpx.get(f"{self.address}/v1/sys/health", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "OpenBao did not become active after unsealing"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


@pytest.fixture(scope="module")
def persistent_bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PersistentBao]:
    tmp = tmp_path_factory.mktemp("bao-file")
    port, cluster_port = free_port(), free_port()
    (tmp / "data").mkdir()
    config = tmp / "openbao.hcl"
    config.write_text(
        f'storage "raft" {{\n  path = "{tmp / "data"}"\n  node_id = "bao-1"\n}}\n'
        f'listener "tcp" {{\n  address = "127.0.0.1:{port}"\n  tls_disable = true\n}}\n'
        f'api_addr = "http://127.0.0.1:{port}"\ncluster_addr = "http://127.0.0.1:{cluster_port}"\n'
        + openbao.server_config(tmp / "audit.log")
    )
    bao = PersistentBao(config, tmp / "openbao.log", f"http://127.0.0.1:{port}")
    bao.start()
    bao.tokens = openbao.bootstrap(bao.address, bao.root)
    yield bao
    bao.stop()


@dataclass
class Load:
    """Clients sending chat requests without pause until stopped; every answer counted: by its
    HTTP status, or for a stream that broke after its 200 by the code of its error event."""

    url: str
    key: str = field(repr=False)
    stream: bool = False
    statuses: Counter[int | str] = field(default_factory=Counter)
    unrestored: int = 0  # answers served without the patient's real name put back
    stuck: int = 0  # clients still waiting after the run
    stopped: threading.Event = field(default_factory=threading.Event)

    def client(self) -> None:
        body = {"messages": [{"role": "user", "content": "Termin für Erika Mustermann bitte"}],
                "sovereign": {"context": {"name": "Erika Mustermann"}}, "stream": self.stream}  # fmt: skip
        headers = {"authorization": f"Bearer {self.key}", "x-sovereign-use-case": "appointment-scheduling"}
        with httpx.Client(timeout=30) as http:
            while not self.stopped.is_set():
                answer = http.post(f"{self.url}/v1/chat/completions", json=body, headers=headers)
                outcome: int | str = answer.status_code
                text = answer.text
                if self.stream and outcome == 200:
                    outcome, text = streamed(text)
                self.statuses[outcome] += 1
                if outcome == 200 and "Erika Mustermann" not in text:
                    self.unrestored += 1

    def until(self, status: int | str, more_than: int, within_s: float = 60) -> None:
        deadline = time.monotonic() + within_s
        start = self.statuses[status]
        while self.statuses[status] <= start + more_than:
            assert time.monotonic() < deadline, (
                f"no {more_than} more answers {status} within {within_s} s: {self.statuses}"
            )
            time.sleep(0.05)


def streamed(sse: str) -> tuple[int | str, str]:
    """(200, the answer's text) for a stream that ended with [DONE]; else (the code of its
    last event's error, "") — a stream that ends neither way is counted as "unterminated"."""
    events = [line[len("data: ") :] for line in sse.splitlines() if line.startswith("data: ")]
    if events and events[-1] == "[DONE]":
        return 200, "".join(
            c["delta"].get("content") or "" for e in events[:-1] for c in json.loads(e)["choices"]
        )
    error = json.loads(events[-1]).get("error") if events else None
    return (str(error["code"]) if error else "unterminated"), ""


@contextmanager
def under_load(
    gateway: Proc, keys_file: Path, tenant: str = "", clients: int = 3, stream: bool = False
) -> Iterator[Load]:
    """*clients* threads sending to *gateway* (streamed requests with *stream*) with a new key
    of *tenant* until the block ends; they are stopped and joined on the way out
    (``load.stuck`` counts any that did not end)."""
    _, key = ClientKeyStore(keys_file).create(tenant or "clinic-" + secrets.token_hex(3))
    load = Load(gateway.url, key, stream)
    threads = [threading.Thread(target=load.client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        yield load
    finally:
        load.stopped.set()
        for t in threads:
            t.join(timeout=30)
        load.stuck = sum(t.is_alive() for t in threads)


def test_openbao_stopped_under_load_fails_closed_and_recovers_without_a_gateway_restart(
    persistent_bao: PersistentBao, upstream: Upstream, tmp_path: Path
) -> None:
    assert persistent_bao.tokens is not None
    upstream.script(mode="echo", capture=True)
    # a short key TTL, so the outage reaches the requests within the test (default: 300 s)
    config = gateway_config(tmp_path, persistent_bao.address, persistent_bao.tokens.gateway, upstream.url,
                            openbao={"key_ttl_s": 1.0, "timeout_s": 1.0})  # fmt: skip
    with running_gateway(config, tmp_path) as gateway:
        with under_load(gateway, tmp_path / "keys.json") as load:
            load.until(200, 20)  # serving
            persistent_bao.stop()  # OpenBao gone, under load
            load.until(503, 20)  # fail closed: refused, not forwarded
            forwarded_during = len(upstream.captured())
            load.until(503, 10)
            assert len(upstream.captured()) <= forwarded_during + 3  # at most those already in flight
            persistent_bao.start()  # back, same keys (Raft storage), unsealed by its custodian
            load.until(200, 20)  # recovered: the same gateway process, no restart
        print(f"\nOpenBao stopped and started under load: statuses {dict(sorted(load.statuses.items()))}, "
              f"{len(upstream.captured())} forwarded")  # fmt: skip
        assert gateway.proc.poll() is None
        assert set(load.statuses) <= {200, 503}, load.statuses  # nothing else: no 500, no hang
        assert load.unrestored == 0
        assert len(upstream.captured()) == load.statuses[200]  # every forwarded request was answered
    unwrap = transit_unwrapper(
        persistent_bao.address, persistent_bao.tokens.auditor, openbao_contract.AUDIT_KEY
    )
    result = verify(tmp_path / "audit" / "audit.jsonl", unwrap)
    assert result.ok, result.message
    assert result.records >= load.statuses[200]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs for the audit trail (a real full disk: ENOSPC from the kernel)."""
    mount = tmp_path / "auditfs"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"needs root to mount a small tmpfs: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize(
    ("reserve", "stream"),
    [(16 * 1024, False), (0, False), (0, True)],
    ids=["refused-at-the-reserve", "reserve-0", "reserve-0-streams"],
)
def test_a_full_audit_disk_refuses_requests_instead_of_serving_them_unaudited(
    bao: Bao, upstream: Upstream, tmp_path: Path, small_disk: Path, reserve: int, stream: bool
) -> None:
    """With the reserve, requests are refused before they are forwarded and /readyz says why;
    with the reserve at 0 the same happens at the audit trail's own headroom (opening the file
    succeeds on a full disk, so that proves nothing), and a write that still fails (ENOSPC) is
    cut off again, so the chain stays whole. Streams too (#21 finding 5: they were delivered
    without a record while /readyz said ready): each started stream has its write-ahead record."""
    upstream.script(mode="echo", capture=True)
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (200 * 1024))  # leaves room for a few dozen records
    audit = {"path": str(small_disk / "audit" / "audit.jsonl"), "fsync": True, "min_free_bytes": reserve}
    config = gateway_config(tmp_path, bao.address, bao.gateway_token, upstream.url, audit=audit)
    with running_gateway(config, tmp_path) as gateway:
        with under_load(gateway, tmp_path / "keys.json", stream=stream) as load:
            load.until(200, 5)
            load.until(503, 20)  # the disk is full: refused, not served without a record
            ready = httpx.get(f"{gateway.url}/readyz", timeout=10)
            assert ready.status_code == 503 and "below the reserve" in ready.json()["checks"]["audit"]
            filler.unlink()  # space again
            load.until(200, 20)  # served again, same process
        assert set(load.statuses) <= {200, 503}, load.statuses
    trail = small_disk / "audit" / "audit.jsonl"
    result = verify(trail, transit_unwrapper(bao.address, bao.auditor_token, openbao_contract.AUDIT_KEY))
    assert result.ok, result.message  # no half-written record was left behind
    lines = trail.read_text().splitlines()
    requests = sum(1 for line in lines if '"kind":"request"' in line)
    admitted = sum(1 for line in lines if '"kind":"admit"' in line)
    assert load.unrestored == 0
    assert requests == load.statuses[200]  # every answer served has its record, and only those
    assert admitted == requests  # and nothing reached the model that has none


def test_tenant_key_rotation_under_load_loses_no_answer(bao: Bao, upstream: Upstream, tmp_path: Path) -> None:
    """Three rotations of the tenant's data key while requests keep coming: every answer is
    served and restored, the tokens the model sees change, the patient's name never reaches it."""
    upstream.script(mode="echo", capture=True)
    config = gateway_config(
        tmp_path, bao.address, bao.gateway_token, upstream.url, openbao={"key_ttl_s": 0.5}
    )
    tenant = "clinic-" + secrets.token_hex(3)
    with (
        running_gateway(config, tmp_path) as gateway,
        under_load(gateway, tmp_path / "keys.json", tenant) as load,
    ):
        for _ in range(3):
            load.until(200, 15)
            rotated = sovereign(
                "gateway", "tenant-key", "rotate", "--tenant", tenant, "--config", str(config), timeout=120
            )
            assert rotated.returncode == 0, rotated.stderr
        load.until(200, 15)
    assert set(load.statuses) == {200} and load.unrestored == 0, (load.statuses, load.unrestored)
    seen = [m["messages"][-1]["content"] for m in upstream.captured()]
    assert len(seen) == load.statuses[200] and not any("Erika" in text for text in seen)
    assert len(set(seen)) >= 2  # the name's token changed with the key


@pytest.mark.parametrize(
    ("stream", "script", "expected"),
    [(False, {"mode": "hang", "hang_s": 30}, 504), (False, {"mode": "malformed"}, 502),
     (False, {"mode": "status500"}, 502), (False, {"mode": "normal", "ttft_ms": 1500}, 504),
     (True, {"mode": "hang", "hang_s": 30}, 504), (True, {"mode": "malformed"}, "upstream_malformed"),
     (True, {"mode": "truncate"}, "upstream_incomplete"), (True, {"mode": "drop"}, "upstream_incomplete"),
     (True, {"mode": "echo", "itl_ms": 1500}, "upstream_timeout")],
    ids=["hangs", "malformed", "fails", "too-slow", "stream-hangs", "stream-malformed-sse",
         "stream-ends-early", "stream-connection-dies", "stream-stalls-mid-answer"],
)  # fmt: skip
def test_a_failing_upstream_under_load_gets_clear_errors_and_leaves_no_stuck_workers(
    bao: Bao, upstream: Upstream, tmp_path: Path, stream: bool, script: dict[str, object], expected: int | str
) -> None:
    """A stream that breaks after its 200 ends with an error event that names the cause."""
    config = gateway_config(tmp_path, bao.address, bao.gateway_token, upstream.url,
                            limits={"read_timeout_s": 1.0})  # fmt: skip
    with running_gateway(config, tmp_path) as gateway:
        upstream.script(mode="echo")
        with under_load(gateway, tmp_path / "keys.json", clients=4, stream=stream) as load:
            load.until(200, 10)
            upstream.script(**script)
            load.until(expected, 8)  # each answered in time, with the error that names the cause
            # one call: no answer in between from another mode
            upstream.script(mode="echo", ttft_ms=0, itl_ms=0)
            load.until(200, 20, within_s=15)  # back to normal: no worker is left waiting
        assert load.stuck == 0
        assert set(load.statuses) <= {200, expected}, load.statuses
        assert load.unrestored == 0
