"""The breach register (GDPR Art. 33(5)): `sovereign incident register add|list|check`."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import breach_register as br
from infra.cli import main

ENTRY: dict[str, Any] = {
    "id": "INC-2026-7",
    "recorded_by": "DPO (operator)",
    "role": "processor",
    "controllers": ["clinic-a"],
    "status": "open",
    "detected_at": "2026-11-30T09:40:00+00:00",
    "aware_at": "2026-11-30T10:00:00+00:00",
    "controller_notified_at": "2026-11-30T13:00:00+00:00",
    "facts": "Answers of use case appointment-scheduling held unrestored tokens and one KVNR in clear "
    "between 08:00 and 09:30 UTC on 2026-11-30 (policy 3+ab12).",
    "effects": "Health-insurance numbers of patients shown to the same patients' sessions only; "
    "no third party.",
    "remedial_action": "Use case suspended at 09:45 UTC, policy fix with a failing test first, "
    "deployed 2026-12-01.",
    "data_subject_categories": ["patients"],
    "data_subjects_approx": 34,
    "data_categories": ["health data", "KVNR"],
    "records_approx": 41,
    "risk": "risk",
    "risk_reasoning": "Identifiers reached their own data subjects only; no special-category detail "
    "beyond insurance.",
    "authority": {"required": True},
    "data_subjects": {"required": False},
    "nis2": {"significant": False, "reasoning": "No operational disruption beyond one use case for 2 h."},
}
NOW = datetime(2026, 11, 30, 20, 0, tzinfo=UTC)


def write_entry(tmp_path: Path, data: dict[str, Any], name: str = "entry.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_add_list_and_check_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    register = tmp_path / "register.jsonl"
    assert (
        main(
            [
                "incident",
                "register",
                "add",
                "--register",
                str(register),
                "--entry",
                str(write_entry(tmp_path, ENTRY)),
            ]
        )
        == 0
    )
    assert register.stat().st_mode & 0o777 == 0o600
    (line,) = register.read_text().splitlines()
    stored = json.loads(line)
    assert stored["revision"] == 1 and stored["data_subjects_approx"] == 34 and stored["recorded_at"]
    assert main(["incident", "register", "list", "--register", str(register)]) == 0
    out = capsys.readouterr().out
    assert "INC-2026-7 r1  open" in out and "subjects ~34" in out and "records ~41" in out
    assert "KVNR in clear" not in out  # list shows dates and decisions, not the text


def test_update_appends_a_revision_and_keeps_the_history(tmp_path: Path) -> None:
    register = tmp_path / "register.jsonl"
    br.add(register, ENTRY, now=NOW)
    with pytest.raises(
        br.RegisterError, match="already has INC-2026-7; add a new revision of it with --update"
    ):
        br.add(register, ENTRY, now=NOW)
    notified = copy.deepcopy(ENTRY)
    notified["authority"] = {
        "required": True,
        "notified_at": "2026-12-01T09:00:00+00:00",
        "authority": "controller's SA (HmbBfDI)",
        "reference": "HH-2026-113",
    }
    second = br.add(register, notified, update=True, now=NOW)
    assert second.revision == 2
    assert [e.revision for e in br.read(register)] == [1, 2]
    assert br.latest(br.read(register))["INC-2026-7"].authority.reference == "HH-2026-113"
    with pytest.raises(br.RegisterError, match="has no INC-2026-8 to update"):
        br.add(register, {**ENTRY, "id": "INC-2026-8"}, update=True, now=NOW)


@pytest.mark.parametrize(
    ("field", "value", "category", "secret"),
    [
        ("facts", "The answer showed max.mustermann@example.org to another user.", "EMAIL", "mustermann@"),
        ("effects", "A patient's KVNR A123456780 was visible in the vLLM pod log.", "KVNR", "A123456780"),
        ("remedial_action", "Refunded to DE89370400440532013000 and called back.", "IBAN", "0532013000"),
        ("risk_reasoning", "The patient at +49 30 1234567 said nobody else saw it.", "PHONE", "1234567"),
    ],
)
def test_free_text_with_patient_data_is_refused_without_echoing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str, value: str, category: str, secret: str
) -> None:
    register = tmp_path / "register.jsonl"
    entry = write_entry(tmp_path, {**ENTRY, field: value})
    assert main(["incident", "register", "add", "--register", str(register), "--entry", str(entry)]) == 1
    err = capsys.readouterr().err
    assert f"{field}: looks like it holds patient data ({category}" in err
    assert secret not in err and value not in err
    assert not register.exists()


@pytest.mark.parametrize(
    "name", ["patient_name", "date_of_birth", "affected_emails", "request_ids", "kvnr_list"]
)
def test_fields_named_like_patient_data_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(
        br.RegisterError, match=f"field '{name}' is not allowed: the register holds no patient data"
    ):
        br.add(tmp_path / "r.jsonl", {**ENTRY, name: ["Erika Mustermann"]}, now=NOW)


def test_unknown_fields_and_bad_values_name_the_field_not_the_value(tmp_path: Path) -> None:
    with pytest.raises(br.RegisterError) as caught:
        br.add(tmp_path / "r.jsonl", {**ENTRY, "severty": "bad-value-xyz", "risk": "medium-xyz"}, now=NOW)
    message = str(caught.value)
    assert "severty: unknown field" in message and "risk: Input should be" in message
    assert "bad-value-xyz" not in message and "medium-xyz" not in message


def test_decisions_must_be_consistent(tmp_path: Path) -> None:
    with pytest.raises(
        br.RegisterError, match=r"authority\.required: a breach that is likely to result in a risk"
    ):
        br.add(tmp_path / "r.jsonl", {**ENTRY, "authority": {"required": False}}, now=NOW)
    with pytest.raises(br.RegisterError, match="a high risk is communicated to the data subjects"):
        br.add(tmp_path / "r.jsonl", {**ENTRY, "risk": "high"}, now=NOW)
    with pytest.raises(br.RegisterError, match="controllers: name the tenant"):
        br.add(tmp_path / "r.jsonl", {**ENTRY, "controllers": []}, now=NOW)
    with pytest.raises(br.RegisterError, match="aware_at: Input should have timezone info"):
        br.add(tmp_path / "r.jsonl", {**ENTRY, "aware_at": "2026-11-30T10:00:00"}, now=NOW)


def test_check_reports_overdue_and_late_clocks(tmp_path: Path) -> None:
    register = tmp_path / "register.jsonl"
    br.add(register, ENTRY, now=NOW)
    assert br.check(register, now=NOW) == (1, [])  # 10 h after awareness: nothing due yet
    count, problems = br.check(register, now=datetime(2026, 12, 4, tzinfo=UTC))  # 86 h later
    assert count == 1
    assert problems == [
        "INC-2026-7: authority.notified_at: the controller's notification of the supervisory authority "
        "(Art. 33(1), 72 h): due 2026-12-03T10:00+00:00, not done; record the date, or the reasons for the "
        "delay (authority.delay_reasons)"
    ]
    late = copy.deepcopy(ENTRY)
    late["controller_notified_at"] = "2026-12-01T12:00:00+00:00"  # 26 h
    late["nis2"] = {
        "significant": True,
        "reasoning": "Use case down for all tenants for a day.",
        "early_warning_at": "2026-11-30T20:00:00+00:00",
        "notification_at": "2026-12-02T10:00:00+00:00",
    }
    late["authority"] = {
        "required": True,
        "notified_at": "2026-12-04T10:00:00+00:00",
        "delay_reasons": "The controller's DPO was reachable only on the fourth day.",
    }
    br.add(register, late, update=True, now=NOW)
    _, problems = br.check(register, now=datetime(2027, 1, 15, tzinfo=UTC))
    assert [p.split(":")[1].strip() for p in problems] == ["controller_notified_at", "nis2.final_report_at"]
    assert "due 2027-01-02T10:00+00:00" in problems[1]  # one calendar month after the notification


def test_check_finds_a_removed_revision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    register = tmp_path / "register.jsonl"
    for update in (False, True, True):
        br.add(register, ENTRY, update=update, now=NOW)
    lines = register.read_text().splitlines(keepends=True)
    register.write_text(lines[0] + lines[2])
    assert main(["incident", "register", "check", "--register", str(register)]) == 1
    assert "INC-2026-7: revision 3 follows 1: a line was removed or moved" in capsys.readouterr().out


def test_a_damaged_line_is_named_by_number_without_content(tmp_path: Path) -> None:
    register = tmp_path / "register.jsonl"
    br.add(register, ENTRY, now=NOW)
    with register.open("a") as fh:
        fh.write('{"id": "INC-2026-9", "facts": "Erika Mustermann\n')
    with pytest.raises(br.RegisterError, match="line 2: not valid JSON \\(content not shown\\)") as caught:
        br.read(register)
    assert "Mustermann" not in str(caught.value)


def test_bad_yaml_is_reported_by_position(tmp_path: Path) -> None:
    path = tmp_path / "entry.yaml"
    path.write_text("id: INC-2026-1\nfacts: [unclosed Erika\n")
    with pytest.raises(br.RegisterError, match="not valid YAML at line") as caught:
        br.read_entry_file(path)
    assert "Erika" not in str(caught.value)


def test_the_documented_form_is_a_valid_entry(tmp_path: Path) -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "runbooks" / "breach-register.md").read_text()
    form = page.split("```yaml\n", 1)[1].split("```", 1)[0]
    entry = br.add(tmp_path / "r.jsonl", yaml.safe_load(form), now=NOW)
    assert entry.id == "INC-2026-7" and br.check_entry(entry, NOW) == []


PASTED_KEYS = [
    "Mustermann, Erika 1960-02-01",  # a name and a date of birth pasted as a key
    "Erika Mustermann geb. 01.02.1960",  # not flagged as a patient field: refused as unknown
    "patient Erika Mustermann 1960-02-01",  # flagged as a patient field, longer than 40 characters
    "KVNR A123456780",
]


@pytest.mark.parametrize("key", PASTED_KEYS)
def test_a_key_that_holds_data_is_never_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    with pytest.raises(br.RegisterError) as caught:
        br.add(tmp_path / "r.jsonl", {**ENTRY, key: "x"}, now=NOW)
    message = str(caught.value)
    assert br.UNNAMED_FIELD in message
    for fragment in ("Mustermann", "Erika", "1960", "A123456780"):
        assert fragment not in message
    # nested, and through the command line: stderr shows where, not the key
    nested = {**ENTRY, "authority": {**ENTRY["authority"], key: "x"}}
    entry = write_entry(tmp_path, nested)
    register = tmp_path / "register.jsonl"
    assert main(["incident", "register", "add", "--register", str(register), "--entry", str(entry)]) == 1
    err = capsys.readouterr().err
    assert "authority" in err and br.UNNAMED_FIELD in err
    for fragment in ("Mustermann", "Erika", "1960", "A123456780"):
        assert fragment not in err
    assert not register.exists()


def test_a_line_of_the_register_with_a_pasted_key_is_not_echoed_by_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    register = tmp_path / "register.jsonl"
    br.add(register, ENTRY, now=NOW)
    line = json.loads(register.read_text(encoding="utf-8"))
    line["Mustermann, Erika 1960-02-01"] = "seen"
    register.write_text(json.dumps(line) + "\n", encoding="utf-8")
    assert main(["incident", "register", "check", "--register", str(register)]) != 0
    err = capsys.readouterr().err
    assert "line 1" in err and br.UNNAMED_FIELD in err
    assert "Mustermann" not in err and "1960" not in err


def test_an_update_of_an_id_that_is_data_does_not_echo_it(tmp_path: Path) -> None:
    with pytest.raises(br.RegisterError) as caught:
        br.add(tmp_path / "r.jsonl", {**ENTRY, "id": "Mustermann, Erika 1960-02-01"}, update=True, now=NOW)
    assert "has no entry with this id" in str(caught.value) and "Mustermann" not in str(caught.value)
