"""The kill switch (#22 item 4): `sovereign incident suspend|resume` against a real OpenBao, and a
real gateway process that reads the state with its own (read-only) token.

Timeouts here only detect a hang: the gateway polls every 0.2 s, and what is asserted is the
answer, the error code, what the upstream saw and the audit records."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import hvac
import pytest

from gateway.audit import verify
from gateway.clientkeys import ClientKeyStore
from gateway.kms import transit_unwrapper
from gateway.settings import IncidentSettings
from infra import incident, openbao_contract
from infra.cli import main as sovereign
from tests.support import Bao, Proc, Upstream, gateway_config, running_gateway, start_bao

HANG_DETECTOR_S = 20  # far above the 0.2 s poll
INCIDENT = {"poll_s": 0.2}
GATEWAY_SETTINGS = {"incident": INCIDENT}  # tests/conftest.py: gateway


def _clear(bao: Bao) -> None:
    client = hvac.Client(url=bao.address, token=bao.root, timeout=10)
    client.secrets.kv.v2.delete_metadata_and_all_versions(
        openbao_contract.INCIDENT_PATH, mount_point=openbao_contract.KV_MOUNT
    )


@pytest.fixture(scope="module", autouse=True)
def _cleared(bao: Bao) -> Iterator[None]:
    """Autouse: set up before the module's gateway starts, torn down after it stops."""
    _clear(bao)  # the session's OpenBao: no other module's state
    yield
    _clear(bao)  # nothing suspended for the modules after this one


@pytest.fixture(scope="module")
def api_key(gw_dir: Path, gateway: Proc) -> str:
    return ClientKeyStore(gw_dir / "keys.json").create("clinic-incident")[1]


@pytest.fixture(scope="module")
def operator(gw_dir: Path, bao: Bao) -> Path:
    """A token of the operators' policy, sovereign-incident (not root)."""
    client = hvac.Client(url=bao.address, token=bao.root, timeout=10)
    created = client.auth.token.create(policies=[openbao_contract.INCIDENT_POLICY_NAME], ttl="1h")
    path = gw_dir / "operator.token"
    path.write_text(created["auth"]["client_token"])
    return path


@pytest.fixture(autouse=True)
def _nothing_suspended(bao: Bao, gateway: Proc, api_key: str) -> Iterator[None]:
    yield
    _clear(bao)
    for use_case in ("patient-support", "order-support"):
        until(lambda u=use_case: chat(gateway, api_key, u).status_code == 200)  # type: ignore[misc]


def cli(bao: Bao, token: Path, *args: str) -> int:
    return sovereign(["incident", *args, "--openbao-address", bao.address, "--token-file", str(token)])


def chat(gateway: Proc, key: str, use_case: str, marker: str = "hello") -> httpx.Response:
    body = {
        "messages": [{"role": "user", "content": f"{marker} please"}],
        "sovereign": {"use_case": use_case},
    }
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )


def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + HANG_DETECTOR_S
    while not condition():
        assert time.monotonic() < deadline, "the gateway did not take up the incident state"
        time.sleep(0.05)


def records(gw_dir: Path, kind: str) -> list[dict[str, Any]]:
    lines = (gw_dir / "audit" / "audit.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("kind") == kind]


def verified(gw_dir: Path, bao: Bao) -> None:
    result = verify(
        gw_dir / "audit" / "audit.jsonl", transit_unwrapper(bao.address, bao.auditor_token, "audit-hmac")
    )
    assert result.ok, result.report()


def test_suspend_refuses_only_that_use_case_and_forwards_nothing_then_resume(
    gw_dir: Path, bao: Bao, gateway: Proc, api_key: str, operator: Path, upstream: Upstream
) -> None:
    assert chat(gateway, api_key, "patient-support").status_code == 200
    before = len(records(gw_dir, "incident"))
    assert cli(bao, operator, "suspend", "--use-case", "patient-support", "--reason", "wrong dosage answers",
               "--by", "oncall-anna") == 0  # fmt: skip
    until(lambda: chat(gateway, api_key, "patient-support").status_code == 503)
    upstream.script(capture=True)
    marker = f"suspended-{uuid.uuid4().hex}"
    refused = chat(gateway, api_key, "patient-support", marker)
    assert refused.status_code == 503
    error = refused.json()["error"]
    assert error["code"] == "use_case_suspended"
    assert "patient-support" in error["message"] and "please call the practice" in error["message"]
    assert "wrong dosage" not in refused.text  # the operator's reason stays inside
    assert "retry-after" not in refused.headers
    assert chat(gateway, api_key, "order-support").status_code == 200  # the others still run
    sent = json.dumps(upstream.captured())
    assert marker not in sent
    assert len(upstream.captured()) == 1  # only order-support's request reached the model
    # the refusal is audited like other refusals
    (request,) = [r for r in records(gw_dir, "request") if r["request_id"] == refused.headers["x-request-id"]]
    assert request["outcome"] == "use_case_suspended" and request["status"] == 503
    assert request["use_case"] == "patient-support" and request["admit_seq"] is None

    assert cli(bao, operator, "resume", "--use-case", "patient-support", "--by", "oncall-ben",
               "--reason", "model rolled back") == 0  # fmt: skip
    until(lambda: chat(gateway, api_key, "patient-support").status_code == 200)
    changes = records(gw_dir, "incident")[before:]
    assert [(c["action"], c["use_case"], c["by"], c["reason"]) for c in changes] == [
        ("suspend", "patient-support", "oncall-anna", "wrong dosage answers"),
        ("resume", "patient-support", "oncall-ben", "model rolled back"),
    ]
    assert all(c["at"] for c in changes)
    verified(gw_dir, bao)


def test_all_suspends_every_use_case_and_resume_all_lifts_it(
    gw_dir: Path, bao: Bao, gateway: Proc, api_key: str, operator: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = len(records(gw_dir, "incident"))
    assert (
        cli(bao, operator, "suspend", "--all", "--reason", "upstream returns garbage", "--by", "oncall") == 0
    )
    until(lambda: chat(gateway, api_key, "order-support").status_code == 503)
    for use_case in ("patient-support", "catalog-search", "appointment-scheduling"):
        assert chat(gateway, api_key, use_case).json()["error"]["code"] == "use_case_suspended"
    capsys.readouterr()
    assert cli(bao, operator, "status") == 0
    assert "every use case (--all)" in capsys.readouterr().out
    # one use case cannot be resumed out of an --all suspension
    assert cli(bao, operator, "resume", "--use-case", "order-support", "--by", "oncall") == 1
    assert "resume --all" in capsys.readouterr().err
    assert cli(bao, operator, "resume", "--all", "--by", "oncall") == 0
    until(lambda: chat(gateway, api_key, "order-support").status_code == 200)
    changes = records(gw_dir, "incident")[before:]
    assert [(c["action"], c["use_case"]) for c in changes] == [("suspend", "*"), ("resume", "*")]
    verified(gw_dir, bao)


def test_check_and_set_refuses_a_write_over_another_operators(
    bao: Bao, gateway: Proc, operator: Path
) -> None:
    client = hvac.Client(url=bao.address, token=operator.read_text(), timeout=10)
    settings = IncidentSettings()
    state, version = incident.read(client, settings)
    incident.suspend(client, settings, "order-support", "first operator", "anna")  # another write
    state["suspended"]["patient-support"] = {"reason": "second operator", "by": "ben", "at": "now"}
    with pytest.raises(incident.Conflict, match="run the command again"):
        incident.write(client, settings, state, version)
    after, _ = incident.read(client, settings)
    assert set(after["suspended"]) == {"order-support"}  # the first write stands, nothing lost


def test_unknown_use_case_and_bad_reasons_are_refused(
    bao: Bao, gateway: Proc, operator: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(bao, operator, "suspend", "--use-case", "no-such-case", "--reason", "x") == 1
    err = capsys.readouterr().err
    assert "unknown use case" in err and "patient-support" in err and "order-support" in err
    assert cli(bao, operator, "suspend", "--use-case", "order-support", "--reason", "a\nforged line") == 1
    assert "control characters" in capsys.readouterr().err
    assert cli(bao, operator, "suspend", "--use-case", "order-support", "--reason", "x" * 201) == 1
    assert "200 characters" in capsys.readouterr().err
    assert cli(bao, operator, "status") == 0
    assert "nothing is suspended" in capsys.readouterr().out


def test_the_gateway_cannot_write_the_state(bao: Bao, gw_dir: Path) -> None:
    gateway_token = gw_dir / "gateway-only.token"
    gateway_token.write_text(bao.gateway_token)
    assert (
        cli(bao, gateway_token, "suspend", "--use-case", "order-support", "--reason", "x", "--by", "gw") == 1
    )


def test_a_suspension_holds_while_openbao_is_away(
    tmp_path: Path, upstream_server: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bao").mkdir()
    own = start_bao(tmp_path / "bao")  # its own OpenBao: this test stops it
    try:
        root = tmp_path / "root.token"
        root.write_text(own.root)
        config = gateway_config(
            tmp_path, own.address, own.gateway_token, upstream_server.url, incident=INCIDENT
        )
        with running_gateway(config, tmp_path) as gw:
            key = ClientKeyStore(tmp_path / "keys.json").create("clinic-away")[1]
            assert chat(gw, key, "order-support").status_code == 200
            assert (
                cli(own, root, "suspend", "--use-case", "patient-support", "--reason", "drill", "--by", "t")
                == 0
            )
            until(lambda: chat(gw, key, "patient-support").status_code == 503)
            own.proc.stop()
            time.sleep(1.0)  # several polls fail
            answer = chat(gw, key, "patient-support")
            assert answer.status_code == 503 and answer.json()["error"]["code"] == "use_case_suspended"
            log = gw.log.read_text()
        assert log.count("incident state not read") == 1  # logged once, not per poll
    finally:
        own.proc.stop()
