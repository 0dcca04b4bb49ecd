"""A holder of a tenant key who has seen a token cannot learn its value by sending candidate
values and watching which one the answer restores (#20 finding 8; docs/phi-filter.md,
"Token confirmation")."""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

import httpx

from tests.support import Proc, Upstream

TENANT = "clinic-confirm"  # the client key of this module's gateway (conftest.py)


def answer(gateway: Proc, key: str, text: str, context: dict[str, Any]) -> str:
    body = {
        "messages": [{"role": "user", "content": text}],
        "sovereign": {"use_case": "patient-support", "context": context},
    }
    resp = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["choices"][0]["message"]["content"])


def test_candidate_dates_with_a_seen_token_reveal_nothing(
    gateway: Proc, api_key: str, upstream: Upstream
) -> None:
    # the victim's request; the token the model saw is what leaks (a model-server log, say)
    upstream.script(mode="echo", capture=True)
    answer(gateway, api_key, "Mein Geburtstag ist der 14.03.1968.", {"name": "Erika Müller"})
    seen = re.findall(r"\[DATE_[0-9a-f]{6}\]", upstream.captured()[0]["messages"][-1]["content"])[0]

    # the attacker: 30 candidate birth dates, each sent beside the seen token
    start = date(1968, 3, 1)
    answers = {}
    for day in range(30):
        candidate = f"{start + timedelta(days=day):%d.%m.%Y}"
        text = f"Geboren {candidate}, Referenz {seen}."
        answers[candidate] = answer(gateway, api_key, text, {})
    # every answer is the attacker's own text: the seen token is never turned into a value
    assert all(a == f"Geboren {c}, Referenz {seen}." for c, a in answers.items())


def test_candidate_phones_with_a_seen_ff1_token_reveal_nothing(
    gateway: Proc, api_key: str, upstream: Upstream
) -> None:
    upstream.script(mode="echo", capture=True)
    answer(gateway, api_key, "Erreichbar unter +49 30 1234567.", {})
    sent = upstream.captured()[0]["messages"][-1]["content"]
    seen = re.search(r"\+[\d ]{10,}\d", sent)
    assert seen is not None and "1234567" not in sent
    # written glued to a word, the seen token is no phone number to the detector: it reaches
    # the model as typed, and the echo brings it back
    for last in range(60, 80):
        candidate = f"+49 30 12345{last}"
        text = f"Tel. {candidate}, Ref.x{seen.group()}"
        assert answer(gateway, api_key, text, {}) == text
