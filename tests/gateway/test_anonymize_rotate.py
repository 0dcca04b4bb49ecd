"""Batch anonymisation with the gateway's own filter and keys; tenant key rotation."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx

from gateway.clientkeys import ClientKeyStore
from tests.gateway.test_phi import leaked
from tests.phi_corpus import generate
from tests.support import Bao, Upstream, gateway_config, running_gateway, sovereign


def test_anonymize_matches_the_gateway_and_leaks_nothing(
    tmp_path: Path, bao: Bao, upstream: Upstream
) -> None:
    config = gateway_config(tmp_path, bao.address, bao.gateway_token, upstream.url)
    items = generate(200, seed=5)
    source = tmp_path / "export.jsonl"
    source.write_text(
        "".join(
            json.dumps(
                {
                    "messages": [{"role": "user", "content": i.text}],
                    "context": i.context,
                    "customer_email": "x@example.de",
                }
            )
            + "\n"
            for i in items
        )
    )
    out = tmp_path / "train.jsonl"
    run = sovereign(
        "anonymize",
        "--policy",
        "patient-support",
        "--tenant",
        "clinic-x",
        "--config",
        str(config),
        str(source),
        str(out),
    )
    assert run.returncode == 0, run.stderr
    assert "anonymised 200 conversations" in run.stdout and "CARD 200" in run.stdout
    assert "200/200" in run.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 200 and all(set(line) == {"messages"} for line in lines)
    for item, line in zip(items, lines, strict=True):
        assert not [s for s in item.secrets if leaked(s, line["messages"][0]["content"])]

    # the gateway, with the same tenant keys, sends the model exactly the same text
    upstream.script(capture=True)
    _, key = ClientKeyStore(tmp_path / "keys.json").create("clinic-x")
    with running_gateway(config, tmp_path) as gw:
        body = {
            "messages": [{"role": "user", "content": items[0].text}],
            "sovereign": {"use_case": "patient-support", "context": items[0].context},
        }
        assert (
            httpx.post(
                f"{gw.url}/v1/chat/completions",
                json=body,
                headers={"authorization": f"Bearer {key}"},
                timeout=30,
            ).status_code
            == 200
        )
    # tokens differ (the gateway tokenises each request with a key of its own: docs/phi-filter.md,
    # "Token confirmation"); the text around them, what was found and how, is the same
    sent = upstream.captured()[0]["messages"][-1]["content"]
    assert masked(sent) == masked(lines[0]["messages"][0]["content"])


def masked(text: str) -> str:
    """*text* with every token's value hidden: surrogates and digits (FF1 keeps the shape)."""
    return re.sub(r"\[[A-Z_]+_[0-9a-f]{6}\]|\d", "#", text)


def test_a_bad_line_stops_the_run_names_it_and_leaves_no_output(
    tmp_path: Path, bao: Bao, upstream: Upstream
) -> None:
    config = gateway_config(tmp_path, bao.address, bao.gateway_token, upstream.url)
    source = tmp_path / "export.jsonl"
    source.write_text(
        '{"messages": [{"role": "user", "content": "hi"}]}\n'
        '{"messages": [{"role": "user", "content": "x"}], "context": {"kvnr": "SECRET-KVNR"}}\n'
    )
    out = tmp_path / "train.jsonl"
    run = sovereign(
        "anonymize",
        "--policy",
        "order-support",
        "--tenant",
        "t",
        "--config",
        str(config),
        str(source),
        str(out),
    )
    assert run.returncode == 2  # a refused input line: bad input (README, Errors and exit codes)
    assert "line 2: context.kvnr: must be a KVNR" in run.stderr and "SECRET-KVNR" not in run.stderr
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_rotation_changes_tokens_and_answers_in_flight_still_restore(
    tmp_path: Path, bao: Bao, upstream: Upstream
) -> None:
    config = gateway_config(
        tmp_path, bao.address, bao.gateway_token, upstream.url, openbao={"key_ttl_s": 0.5}
    )
    _, key = ClientKeyStore(tmp_path / "keys.json").create("clinic-r")
    text = "Hier ist Erika Müller."
    body = {
        "messages": [{"role": "user", "content": text}],
        "sovereign": {"use_case": "patient-support", "context": {"name": "Erika Müller"}},
    }
    headers = {"authorization": f"Bearer {key}"}
    with running_gateway(config, tmp_path) as gw:
        upstream.script(mode="echo", capture=True, chunk_chars=2, itl_ms=40)
        with httpx.stream(
            "POST",
            f"{gw.url}/v1/chat/completions",
            json={**body, "stream": True},
            headers=headers,
            timeout=30,
        ) as resp:
            lines = resp.iter_lines()
            first = next(line for line in lines if line.startswith("data: {"))
            rotated = sovereign(
                "gateway", "tenant-key", "rotate", "--tenant", "clinic-r", "--config", str(config)
            )
            assert rotated.returncode == 0, rotated.stderr
            rest = [line for line in lines if line.startswith("data: {")]
        streamed = "".join(
            json.loads(x[6:])["choices"][0]["delta"].get("content") or "" for x in [first, *rest]
        )
        assert streamed == text  # restored although the key changed mid-answer
        upstream.script(mode="echo", capture=True)
        time.sleep(0.6)  # past key_ttl_s: the next request reads the rotated key
        resp2 = httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=headers, timeout=30)
        assert resp2.json()["choices"][0]["message"]["content"] == text
        assert "Erika" not in upstream.captured()[-1]["messages"][-1]["content"]
    # the tenant's tokens changed with its key: the batch path (tokens per tenant key) shows it
    export = tmp_path / "one.jsonl"
    export.write_text(
        json.dumps({"messages": [{"role": "user", "content": text}], "context": body["sovereign"]["context"]})
        + "\n"
    )
    outputs = []
    for step in ("before", "after"):
        if step == "after":
            again = sovereign(
                "gateway", "tenant-key", "rotate", "--tenant", "clinic-r", "--config", str(config)
            )
            assert again.returncode == 0, again.stderr
        out = tmp_path / f"{step}.jsonl"
        run = sovereign(
            "anonymize",
            "--policy",
            "patient-support",
            "--tenant",
            "clinic-r",
            "--config",
            str(config),
            str(export),
            str(out),
        )
        assert run.returncode == 0, run.stderr
        outputs.append(out.read_text())
    assert outputs[0] != outputs[1] and "Erika" not in outputs[1]
