"""One error model (issue #25): every error the command line reports derives from SovereignError,
carries its exit code (2: the input is refused, 1: a check or an operation failed) and its
problems as data; ``main()`` prints ``sovereign <command>: <message>`` once for all of them, naming
keys and never values (tests/unit/test_validation_errors.py feeds canaries to every key)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.errors import BAD_INPUT, FAILED, BadInput, SovereignError
from gateway.validation import Problem
from infra import cli, config, objectstore
from infra.evidence import model

SECRET = "canary-5f3a9c"  # a value that must never be printed

# commands that read a stack config, as argv before --stack/--stacks-dir
READS_A_STACK = [
    ["plan"],
    ["evidence"],
    ["images", "list"],
    ["charts", "list"],
    ["openbao", "snapshots"],
    ["bootstrap-backend"],
    ["models", "verify", "--model", "m", "--public-key", "k.pem"],
]


def _stacks(tmp_path: Path, text: str) -> Path:
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    (stacks / "Pulumi.broken.yaml").write_text(text, encoding="utf-8")
    return stacks


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize("command", READS_A_STACK, ids=lambda c: " ".join(c[:2]))
def test_an_invalid_stack_config_exits_2_from_every_command_that_reads_one(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stacks = _stacks(tmp_path, f"config:\n  sovereign-llm:region: [{SECRET}\n")
    code, printed = _run([*command, "--stack", "broken", "--stacks-dir", str(stacks)], capsys)
    assert code == 2
    name = " ".join(w for w in command if not w.startswith("-") and w not in ("m", "k.pem"))
    # (plan may warn first that the version catalogue is due for review)
    assert (
        f"sovereign {name}: {stacks / 'Pulumi.broken.yaml'}: invalid stack config:\n  not valid YAML at line"
        in printed
    )
    assert SECRET not in printed  # PyYAML's own message quotes the offending line


@pytest.mark.parametrize("command", [["plan"], ["images", "list"], ["openbao", "snapshots"]])
def test_the_handler_names_the_key_and_never_the_value(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = yaml.safe_load((cli.REPO_ROOT / "stacks" / "Pulumi.eu-north-dr.yaml").read_text())
    document["config"]["sovereign-llm:region"]["location"] = SECRET
    document["config"]["sovereign-llm:no_such_section"] = {"x": SECRET}
    (stacks := tmp_path / "stacks").mkdir()
    (stacks / "Pulumi.eu-north-dr.yaml").write_text(yaml.safe_dump(document))
    code, printed = _run([*command, "--stack", "eu-north-dr", "--stacks-dir", str(stacks)], capsys)
    assert code == 2
    lines = printed[printed.index("sovereign ") :].splitlines()
    assert (
        lines[0]
        == f"sovereign {' '.join(command)}: {stacks / 'Pulumi.eu-north-dr.yaml'}: invalid stack config:"
    )
    assert lines[1].startswith("  sovereign-llm:no_such_section: unknown section")  # one problem a line
    assert SECRET not in printed


def test_a_refused_flag_exits_2_naming_the_whole_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.yaml"
    code, printed = _run(
        ["gateway", "tenant-key", "rotate", "--tenant", "t", "--config", str(missing)], capsys
    )
    assert (code, printed) == (
        2,
        f"sovereign gateway tenant-key rotate: --config: {missing} does not exist; start the local stack or "
        "pass the file\n",
    )


def test_the_exit_code_is_the_errors_and_the_old_bases_still_catch() -> None:
    refused = config.StackConfigError(
        "s.yaml", [Problem("sovereign-llm:region.location", "not an EU location")]
    )
    failed = objectstore.StorageError("the bucket did not answer")
    assert isinstance(refused, SovereignError | ValueError) and isinstance(refused, BadInput)
    assert isinstance(failed, SovereignError) and isinstance(failed, RuntimeError)
    assert (refused.exit_code, failed.exit_code) == (BAD_INPUT, FAILED) == (2, 1)
    assert (
        str(refused) == "s.yaml: invalid stack config:\n  sovereign-llm:region.location: not an EU location"
    )
    assert str(failed) == "the bucket did not answer"


def test_the_evidence_takes_the_problems_as_data() -> None:
    found = model.config_findings(
        [
            Problem("sovereign-llm:endpoints.registry_mirror", "outside the EU: x: y"),
            Problem("", "no stack file"),
        ]
    )
    assert [(f.key, f.message) for f in found] == [
        ("endpoints.registry_mirror", "outside the EU: x: y"),
        ("config", "no stack file"),
    ]


def test_the_errors_of_modules_not_yet_derived_go_through_the_same_handler(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """ModelsError (infra/models.py) does not derive from SovereignError yet: main() reports it the
    same way, exit 1, until it does."""
    monkeypatch.delenv("VAULT_ADDR", raising=False)
    code, printed = _run(["openbao", "snapshot", "--stack", "eu-north-dr"], capsys)
    assert (code, printed) == (
        1,
        "sovereign openbao snapshot: no OpenBao address: pass --openbao-address URL or set VAULT_ADDR\n",
    )


@pytest.mark.parametrize(
    "command", [["gateway", "serve"], ["anonymize", "--policy", "p", "--tenant", "t", "i", "o"]]
)
def test_a_gateway_settings_file_that_is_not_yaml_exits_2_and_its_line_is_not_printed(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """PyYAML's own message quotes the offending line: a pasted key must not reach stderr."""
    config = tmp_path / "gateway.yaml"
    config.write_text(f'openbao:\n  token: "{SECRET}\n  address: [\n', encoding="utf-8")
    code, printed = _run([*command[:2], "--config", str(config), *command[2:]] if command[0] == "gateway"
                         else [command[0], "--config", str(config), *command[1:]], capsys)  # fmt: skip
    assert code == 2, printed
    assert "not valid YAML at line" in printed and SECRET not in printed


def test_gateway_serve_refuses_a_config_file_that_does_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pydantic-settings' YAML source skips a missing file: the gateway would have started on
    its environment alone."""
    code, printed = _run(["gateway", "serve", "--config", str(tmp_path / "missing.yaml")], capsys)
    assert code == 2 and "no such file" in printed
