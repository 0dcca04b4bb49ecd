"""`sovereign memory erase|export` and `sovereign catalog load` refuse an input file they cannot
use before anything is sent: exit code 2, the message names the option and what to give, and
never echoes the file's text (a patient's context is personal data)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from infra.cli import main

SECRET = "Erika Mustermann E867537806"


def closed_port() -> int:
    """A loopback port nothing listens on: a command that got past its input check would fail
    to connect (exit 1), not refuse its input (exit 2)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("argv", "text", "named"),
    [
        (["memory", "erase", "--tenant", "clinic-a", "--context"], f"name: {SECRET}", "--context: not JSON"),
        (["memory", "export", "--tenant", "clinic-a", "--context"], f'["{SECRET}"]', "--context: must be"),
        (["catalog", "load", "--file"], f'{{"name": "{SECRET}"}}', "--file: must be a JSON list"),
        (["catalog", "load", "--file"], f"sku,{SECRET}", "--file: not JSON"),
    ],
)
def test_unusable_input_is_refused_by_option_without_its_text(
    argv: list[str], text: str, named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "input.json"
    source.write_text(text)
    key = tmp_path / "key"
    key.write_text("sk-sov-unused")
    code = main([*argv, str(source), "--target", f"http://127.0.0.1:{closed_port()}", "--key-file", str(key)])
    err = capsys.readouterr().err
    assert code == 2 and named in err, err
    assert "Erika" not in err and "E867537806" not in err


def test_an_input_file_that_is_not_utf8_is_refused_without_its_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "latin1.json"
    source.write_bytes('{"name": "Jürgen Müller"}'.encode("latin-1"))
    code = main(
        ["memory", "export", "--tenant", "clinic-a", "--context", str(source), "--key-file", str(source)]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--context: not UTF-8" in err and "rgen" not in err, err


def test_a_missing_input_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.json"
    code = main(
        ["memory", "erase", "--tenant", "clinic-a", "--context", str(missing), "--key-file", str(missing)]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--context: cannot read" in err, err


def test_usable_input_gets_as_far_as_the_gateway(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same command with a usable context is sent, and fails to connect (exit 1, naming
    the target): so the refusals above are the input check's."""
    source = tmp_path / "ctx.json"
    source.write_text('{"kvnr": "E867537806"}')
    key = tmp_path / "key"
    key.write_text("sk-sov-unused")
    target = f"http://127.0.0.1:{closed_port()}"
    code = main(["memory", "erase", "--tenant", "clinic-a", "--context", str(source), "--target", target,
                 "--key-file", str(key)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "did not answer" in err and "E867537806" not in err, err
