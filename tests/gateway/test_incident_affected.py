"""`sovereign incident affected` on the audit trail of a real gateway process (real OpenBao, the
auditor's token): the requests of the window by id, tenant and PHI counts — and no value."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from infra.cli import main as sovereign
from tests.support import Bao, Proc, Upstream

TENANT = "clinic-affected"
NAME, KVNR = "Erika Mustermann", "A123456780"


def chat(gateway: Proc, key: str, use_case: str) -> httpx.Response:
    body = {
        "messages": [{"role": "user", "content": f"Hier ist {NAME}, KVNR {KVNR}."}],
        "sovereign": {"use_case": use_case, "context": {"name": NAME, "kvnr": KVNR}},
    }
    headers = {"authorization": f"Bearer {key}"}
    return httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers, timeout=10)


def test_affected_lists_the_window_s_requests_by_id_from_the_verified_trail(
    gw_dir: Path,
    bao: Bao,
    gateway: Proc,
    api_key: str,
    upstream: Upstream,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert chat(gateway, api_key, "patient-support").status_code == 200  # before the window
    start = datetime.now(UTC)
    ids = []  # what Magento keeps with the order: the x-request-id of each answer
    for use_case in ("patient-support", "order-support", "patient-support"):
        answer = chat(gateway, api_key, use_case)
        assert answer.status_code == 200
        ids.append(answer.headers["x-request-id"])
    end = datetime.now(UTC) + timedelta(seconds=1)
    token = gw_dir / "auditor.token"
    token.write_text(bao.auditor_token)
    argv = [
        "incident",
        "affected",
        str(gw_dir / "audit" / "audit.jsonl"),
        "--from",
        start.isoformat(),
        "--to",
        end.isoformat(),
        "--openbao-address",
        bao.address,
        "--token-file",
        str(token),
    ]
    capsys.readouterr()
    assert sovereign(argv) == 0
    captured = capsys.readouterr()
    found = list(csv.DictReader(io.StringIO(captured.out)))
    assert [r["request_id"] for r in found] == ids
    assert {r["tenant"] for r in found} == {TENANT} and {r["forwarded"] for r in found} == {"yes"}
    assert all(r["outcome"] == "ok" and r["status"] == "200" for r in found)
    assert "KVNR=" in found[0]["phi_tokenised"] or "KVNR=" in found[0]["phi_removed"]
    assert "OK: " in captured.err and f"tenant {TENANT}  use case patient-support: 2 requests" in captured.err
    everything = captured.out + captured.err
    assert NAME not in everything and "Mustermann" not in everything and KVNR not in everything

    assert sovereign([*argv, "--use-case", "order-support"]) == 0
    only = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["request_id"] for r in only] == [ids[1]]

    # a token that may not decrypt audit keys cannot vouch for the trail: nothing is selected
    token.write_text(bao.gateway_token)
    assert sovereign(argv) == 1
    refused = capsys.readouterr()
    assert refused.out == "" and "does not verify: nothing selected" in refused.err
