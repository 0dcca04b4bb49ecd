from __future__ import annotations

import socket
from pathlib import Path

import pytest

from infra.local.process import port_free
from infra.local.profile import ProfileError, load_profile
from infra.local.stack import LocalStack, StackError

REPO = Path(__file__).resolve().parents[2]


def test_shipped_profile_loads(tmp_path: Path) -> None:
    p = load_profile(REPO / "stacks" / "local.yaml", base=tmp_path)
    assert p.state_dir == (tmp_path / ".sovereign").resolve()
    assert p.url("gateway") == "http://127.0.0.1:8080"
    assert p.url("embedding") == "http://127.0.0.1:8082" and p.embedding.alias == "embed"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("host: 0.0.0.0\n", "host: not a loopback address"),
        ("ports: {gateway: 70000}\n", "ports.gateway"),
        ("modle: {}\n", "modle"),
        ("tenant: Big Clinic\n", "tenant"),
        ("embedding: {n_threads: 0}\n", "embedding.n_threads"),
        ("embedding: {alias: Embed}\n", "embedding.alias"),
        ("embedding: {alias: chat}\n", "embedding.alias: the same as model.alias"),
        ("embedding: {modle: x}\n", "embedding.modle: unknown field"),
        ("ports: {embedding: 8081}\n", "ports.embedding: the same port as ports.model"),
        ("timeouts: {embedding: 0}\n", "timeouts.embedding"),
    ],
)
def test_bad_profile_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(text)
    with pytest.raises(ProfileError, match=message):
        load_profile(f, base=tmp_path)


def test_taken_port_is_reported_with_component_and_log(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not port_free("127.0.0.1", port)
        f = tmp_path / "p.yaml"
        f.write_text(f"ports: {{openbao: {port}}}\n")
        stack = LocalStack(load_profile(f, base=tmp_path))
        with pytest.raises(
            Exception, match=rf"openbao: port 127.0.0.1:{port} is already in use.*openbao.log"
        ):
            stack.up()
    assert not (tmp_path / ".sovereign" / "run" / "stack.json").exists()


def test_second_up_while_running_is_refused(tmp_path: Path) -> None:
    import json
    import os

    from infra.local.process import start_ticks

    stack = LocalStack(load_profile(REPO / "stacks" / "local.yaml", base=tmp_path))
    stack.paths.run.mkdir(parents=True)
    me = os.getpid()
    stack.paths.state.write_text(
        json.dumps({"components": {"gateway": {"pid": me, "start_ticks": start_ticks(me)}}})
    )
    with pytest.raises(StackError, match=rf"already running \(gateway pid {me}\).*make down"):
        stack.up()
