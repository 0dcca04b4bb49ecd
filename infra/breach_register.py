"""The breach register (GDPR Art. 33(5); NIS2 Art. 23 dates): ``sovereign incident register``.

add --register FILE --entry ENTRY.yaml [--update]   append an entry (or a new revision of one)
list --register FILE                                 the latest revision of each entry
check --register FILE                                every line valid; clocks kept or explained

The register is a JSON Lines file the operator keeps (inside the boundary, backed up like the
evidence reports): one line per revision, appended, never rewritten — an entry's history (when
the risk was assessed, when the controller and the authority were told) stays readable. The
format is docs/runbooks/breach-register.md; the fields are :class:`Entry`.

No patient data in it, ever: it holds facts, effects, remedial action, categories and
*approximate numbers* of data subjects and records, the notifications and the reasoning.
Unknown fields are refused (a field named like patient data with its own message), and the
free-text fields are scanned with the gateway's own pattern recognisers (gateway.phi.detect:
e-mail addresses, phone numbers, IBANs, KVNRs, card, order and customer numbers, street
addresses, postcodes): a hit refuses the entry, naming the field and the category, never the
text. Dates are allowed in the text (a timeline needs them); names are not detected: the
procedure says to write roles, not names, of data subjects.
"""

from __future__ import annotations

import calendar
import json
import os
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway import validation
from gateway.errors import SovereignError
from gateway.phi.detect import find_patterns
from gateway.validation import Problem

MAX_TEXT = 4000
ALLOWED_IN_TEXT = {"DATE"}  # the text may date events; every other category is refused
# fields named like patient data: refused with their own message wherever they appear
PROHIBITED = re.compile(
    r"(patient|name|birth|dob|e-?mail|phone|address|street|postcode|zip|kvnr|insur|iban|"
    r"order_?ids?$|customer_?ids?$|request_?ids?$|diagnos|prescri|symptom|prompt|answer|transcript)",
    re.IGNORECASE,
)
ID_PATTERN = re.compile(r"^INC-[0-9]{4}-[0-9]{1,6}$")
SA_HOURS = 72  # GDPR Art. 33(1)
NIS2_EARLY_WARNING_HOURS = 24  # NIS2 Art. 23(4)(a)
NIS2_NOTIFICATION_HOURS = 72  # Art. 23(4)(b)
CONTROLLER_NOTICE_HOURS = 24  # the processor's target for "without undue delay" (Art. 33(2); the DPA)


# a key shown in an error: only one that looks like a field name (a key that is a pasted name,
# date of birth or other value is never echoed, as a value is not)
PLAUSIBLE_FIELD = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")
UNNAMED_FIELD = "an unknown field (its name is not shown: it may hold data)"


def _key(key: Any) -> str:
    """*key* when it is a plausible field name, else a placeholder that shows nothing of it."""
    text = str(key)
    return text if PLAUSIBLE_FIELD.fullmatch(text) else UNNAMED_FIELD


class RegisterError(SovereignError, ValueError):
    """A refused register operation (the message names the field, the problem and the fix)."""


def _text_problem(value: str) -> str | None:
    found = sorted({s.category for s in find_patterns(value)} - ALLOWED_IN_TEXT)
    if found:
        return (
            f"looks like it holds patient data ({', '.join(found)}); the register holds no patient data: "
            "describe the facts with categories and counts, not identifiers"
        )
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _no_patient_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if str(key) not in cls.model_fields and PROHIBITED.search(str(key)):
                    shown = f"field {key!r}" if PLAUSIBLE_FIELD.fullmatch(str(key)) else UNNAMED_FIELD
                    raise ValueError(
                        f"{shown} is not allowed: the register holds no patient data; give "
                        "categories and approximate numbers (data_categories, data_subjects_approx) instead"
                    )
        return data


def _free_text(value: str) -> str:
    if len(value) > MAX_TEXT:
        raise ValueError(
            f"longer than {MAX_TEXT} characters; summarise, and keep the detail in the incident record"
        )
    problem = _text_problem(value)
    if problem:
        raise ValueError(problem)
    return value


FreeText = Annotated[str, AfterValidator(_free_text)]  # scanned for patient data


class AuthorityNotice(_Strict):
    """The supervisory authority (GDPR Art. 33): required unless the breach is unlikely to
    result in a risk; the controller notifies it (the shop, or the operator for its own data)."""

    required: bool
    notified_at: AwareDatetime | None = None
    authority: FreeText | None = Field(default=None, max_length=200)
    reference: str | None = Field(default=None, max_length=100, pattern=r"^[A-Za-z0-9._/:-]+$")
    delay_reasons: FreeText | None = None  # Art. 33(1): a notification after 72 h says why


class SubjectsNotice(_Strict):
    """The data subjects (GDPR Art. 34): required when the risk is high, unless an Art. 34(3)
    exception applies (then ``exception`` says which and why)."""

    required: bool
    communicated_at: AwareDatetime | None = None
    channel: FreeText | None = Field(default=None, max_length=200)
    exception: FreeText | None = None  # Art. 34(3)(a)/(b)/(c) and why


class Nis2(_Strict):
    """NIS2 Art. 23: a significant incident (Art. 23(3)) is reported to the CSIRT / authority."""

    significant: bool
    reasoning: FreeText = Field(min_length=10)
    early_warning_at: AwareDatetime | None = None
    notification_at: AwareDatetime | None = None
    final_report_at: AwareDatetime | None = None
    reference: str | None = Field(default=None, max_length=100, pattern=r"^[A-Za-z0-9._/:-]+$")


class Entry(_Strict):
    """One revision of a register entry (GDPR Art. 33(5): the facts, the effects and the
    remedial action taken, and the decisions with their reasoning)."""

    id: str = Field(pattern=ID_PATTERN.pattern)
    revision: int = Field(default=1, ge=1)
    recorded_at: AwareDatetime | None = None  # set by `add`
    recorded_by: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")
    role: Literal["processor", "controller"]  # the operator's role for these data (processor for a shop's)
    controllers: list[str] = Field(default_factory=list, max_length=200)  # tenants (shops) whose data
    status: Literal["open", "closed"]
    detected_at: AwareDatetime
    aware_at: AwareDatetime  # became aware that personal data were affected: the clocks start here
    controller_notified_at: AwareDatetime | None = None  # Art. 33(2), role processor
    facts: FreeText = Field(min_length=10)
    effects: FreeText = Field(min_length=10)
    remedial_action: FreeText = Field(min_length=10)
    data_subject_categories: list[Literal["patients", "customers", "staff", "other"]] = Field(
        default_factory=list
    )
    data_subjects_approx: int | None = Field(default=None, ge=0)
    data_categories: list[str] = Field(
        default_factory=list
    )  # e.g. health data, NAME, KVNR (gateway categories)
    records_approx: int | None = Field(default=None, ge=0)
    risk: Literal["unlikely", "risk", "high"]
    risk_reasoning: FreeText = Field(min_length=10)
    authority: AuthorityNotice
    data_subjects: SubjectsNotice
    nis2: Nis2

    @field_validator("controllers")
    @classmethod
    def _tenants(cls, value: list[str]) -> list[str]:
        from gateway.clientkeys import TENANT_RE

        if not all(TENANT_RE.match(v) for v in value):
            raise ValueError("each controller is a tenant name (lower-case letters, digits, '-')")
        return value

    @field_validator("data_categories")
    @classmethod
    def _categories(cls, value: list[str]) -> list[str]:
        if not all(re.fullmatch(r"[A-Za-z][A-Za-z _-]{1,40}", v) for v in value):
            raise ValueError("each category is a word or two (e.g. 'health data', 'KVNR'), not a value")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Entry:
        if self.role == "processor" and not self.controllers:
            raise ValueError("controllers: name the tenant(s) whose data it was (role processor)")
        if self.risk != "unlikely" and not self.authority.required:
            raise ValueError(
                "authority.required: a breach that is likely to result in a risk is notified (Art. 33(1)); "
                "set required: true, or assess the risk as unlikely with the reasoning"
            )
        if self.risk == "high" and not self.data_subjects.required and not self.data_subjects.exception:
            raise ValueError(
                "data_subjects: a high risk is communicated to the data subjects (Art. 34(1)) unless an "
                "Art. 34(3) exception applies: set required: true, or give the exception"
            )
        return self


def problems(exc: ValidationError) -> list[Problem]:
    """Each error at its field (gateway/validation.py: never the value), nor a key that does not
    look like a field name (an unknown key may be a pasted value)."""
    found = []
    for problem in validation.problems(exc):
        loc = [str(p) if isinstance(p, int) else _key(p) for p in problem.loc]
        message = problem.message
        if problem.type == "extra_forbidden":
            message = "unknown field: check the spelling against docs/runbooks/breach-register.md"
            if loc and loc[-1] == UNNAMED_FIELD:
                loc.pop()
                message = f"{UNNAMED_FIELD}: check the spelling against docs/runbooks/breach-register.md"
        found.append(Problem(".".join(loc) or "entry", message, problem.type, problem.loc))
    return found


def parse(data: Any, where: str) -> Entry:
    try:
        return Entry.model_validate(data)
    except ValidationError as exc:
        raise RegisterError(f"{where}: " + "; ".join(map(str, problems(exc)))) from None


def read_entry_file(path: Path) -> dict[str, Any]:
    """The YAML (or JSON) an operator filled in from the template; errors show positions only."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RegisterError(f"--entry {path} cannot be read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise RegisterError(f"--entry {path}: {validation.not_yaml(exc)}") from None
    if not isinstance(data, dict):
        raise RegisterError(f"--entry {path}: not a mapping of fields; start from the template")
    return data


def read(register: Path) -> list[Entry]:
    """Every revision in the register, in order; the first bad line stops it (named by number)."""
    if not register.exists():
        return []
    entries = []
    for lineno, line in enumerate(register.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError:
            raise RegisterError(f"{register} line {lineno}: not valid JSON (content not shown)") from None
        entries.append(parse(data, f"{register} line {lineno}"))
    return entries


def latest(entries: Iterable[Entry]) -> dict[str, Entry]:
    found: dict[str, Entry] = {}
    for entry in entries:
        found[entry.id] = entry
    return found


def add(register: Path, data: dict[str, Any], update: bool = False, now: datetime | None = None) -> Entry:
    """Append *data* as a new entry (or, with *update*, the next revision of its id)."""
    data = {**data}
    data.pop("revision", None)
    data["recorded_at"] = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    current = latest(read(register))
    entry_id = str(data.get("id", ""))
    if entry_id in current and not update:
        raise RegisterError(
            f"id: the register already has {entry_id}; add a new revision of it with --update (the old "
            "ones stay: the register is append-only)"
        )
    if entry_id not in current and update:
        shown = (
            entry_id
            if ID_PATTERN.fullmatch(entry_id)
            else "entry with this id (not shown: not an INC-YYYY-N id)"
        )
        raise RegisterError(f"id: the register has no {shown} to update; add it without --update")
    data["revision"] = current[entry_id].revision + 1 if entry_id in current else 1
    entry = parse(data, "--entry")
    line = json.dumps(entry.model_dump(mode="json"), sort_keys=True, ensure_ascii=False) + "\n"
    register.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(register, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return entry


def _add_months(when: datetime, months: int) -> datetime:
    month = when.month - 1 + months
    year, month = when.year + month // 12, month % 12 + 1
    return when.replace(year=year, month=month, day=min(when.day, calendar.monthrange(year, month)[1]))


def _late(done: datetime | None, due: datetime, now: datetime) -> str | None:
    if done is None:
        return f"due {due.isoformat(timespec='minutes')}, not done" if now > due else None
    return (
        f"done {done.isoformat(timespec='minutes')}, due {due.isoformat(timespec='minutes')}"
        if done > due
        else None
    )


def check_entry(entry: Entry, now: datetime) -> list[str]:
    """The clocks of *entry* (its latest revision) that were missed or are overdue, and what the
    register still lacks; none: in order. Open clocks not yet due are not problems."""
    found = []
    aware = entry.aware_at
    if entry.role == "processor":
        late = _late(entry.controller_notified_at, aware + timedelta(hours=CONTROLLER_NOTICE_HOURS), now)
        if late:
            found.append(
                f"controller_notified_at: the processor-to-controller notice (Art. 33(2), without undue "
                f"delay; target {CONTROLLER_NOTICE_HOURS} h): {late}"
            )
    if entry.authority.required:
        due = aware + timedelta(hours=SA_HOURS)
        late = _late(entry.authority.notified_at, due, now)
        if late and not entry.authority.delay_reasons:
            who = "the controller's" if entry.role == "processor" else "the"
            found.append(
                f"authority.notified_at: {who} notification of the supervisory authority (Art. 33(1), "
                f"{SA_HOURS} h): {late}; record the date, or the reasons for the delay "
                "(authority.delay_reasons)"
            )
    if (
        entry.data_subjects.required
        and entry.data_subjects.communicated_at is None
        and entry.status == "closed"
    ):
        found.append(
            "data_subjects.communicated_at: a closed entry whose data subjects must be told (Art. 34) "
            "has no date"
        )
    if entry.nis2.significant:
        n = entry.nis2
        for field, done, due in (
            ("nis2.early_warning_at", n.early_warning_at, aware + timedelta(hours=NIS2_EARLY_WARNING_HOURS)),
            ("nis2.notification_at", n.notification_at, aware + timedelta(hours=NIS2_NOTIFICATION_HOURS)),
        ):
            late = _late(done, due, now)
            if late:
                found.append(f"{field}: {late} (NIS2 Art. 23(4))")
        if n.notification_at is not None:
            late = _late(n.final_report_at, _add_months(n.notification_at, 1), now)
            if late:
                found.append(
                    f"nis2.final_report_at: one month after the notification (Art. 23(4)(d)): {late}"
                )
    return found


def check(register: Path, now: datetime | None = None) -> tuple[int, list[str]]:
    """(entries, problems) of the whole register: every line valid, revisions numbered in order,
    and each entry's latest revision :func:`check_entry`."""
    now = now or datetime.now(UTC)
    entries = read(register)
    found = []
    seen: dict[str, int] = {}
    for entry in entries:
        expected = seen.get(entry.id, 0) + 1
        if entry.revision != expected:
            found.append(
                f"{entry.id}: revision {entry.revision} follows {expected - 1}: a line was removed or moved"
            )
        seen[entry.id] = entry.revision
    for entry in latest(entries).values():
        found += [f"{entry.id}: {p}" for p in check_entry(entry, now)]
    return len(seen), found


def describe(entry: Entry) -> str:
    """One line per entry for `list` (dates, decisions, counts; no free text)."""

    def at(value: datetime | None) -> str:
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if value else "-"

    sa = at(entry.authority.notified_at) if entry.authority.required else "not required"
    subjects = at(entry.data_subjects.communicated_at) if entry.data_subjects.required else "not required"
    nis2 = (
        f"significant, notified {at(entry.nis2.notification_at)}"
        if entry.nis2.significant
        else "not significant"
    )
    return (
        f"{entry.id} r{entry.revision}  {entry.status}  aware {at(entry.aware_at)}  risk {entry.risk}  "
        f"controller told {at(entry.controller_notified_at) if entry.role == 'processor' else 'n/a'}  "
        f"authority {sa}  data subjects {subjects}  NIS2 {nis2}  "
        f"subjects ~{entry.data_subjects_approx if entry.data_subjects_approx is not None else '?'}  "
        f"records ~{entry.records_approx if entry.records_approx is not None else '?'}"
    )
