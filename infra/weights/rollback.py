"""``sovereign models rollback`` and ``record-deploy``: back to the release deployed before.

``plan_rollback`` picks the release (``--to``, else the one the release log records as deployed
before the pinned one) and re-verifies it, signature and every object; ``rollback`` records who,
why, from and to, and rewrites the model's ``source`` and ``manifest_sha256`` in the stack file
(infra/weights/stack_file.py); ``deploy`` runs ``pulumi up`` through Pulumi's Automation API.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infra.config import StackConfig
from infra.weights.bucket import model_config, verify_model
from infra.weights.manifest import ModelsError
from infra.weights.releases import DeployRecord, Release, ReleaseLog, RollbackRecord
from infra.weights.stack_file import pinned_and_checked

REASON_MAX = 500
_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_reason(reason: str | None) -> str:
    """The rollback's reason: required, one short line's worth, recorded in the release log only."""
    text = (reason or "").strip()
    if not text:
        raise ModelsError(
            "--reason: required and not empty: say why, e.g. the change request id and the symptom "
            "(never patient data)"
        )
    if len(text) > REASON_MAX:
        raise ModelsError(
            f"--reason: {len(text)} characters, at most {REASON_MAX}: give the change request id and a "
            "short symptom, never patient data (the details belong in the change request)"
        )
    return text


def check_sha256(value: str, flag: str) -> str:
    if not _SHA256.fullmatch(value):
        raise ModelsError(
            f"{flag}: give a manifest SHA-256 as 64 lowercase hex digits (`sovereign models releases`)"
        )
    return value


def current_release(cfg: StackConfig, model: str, releases: list[Release]) -> tuple[int, Release]:
    """The position (newest first) and record of the release the stack pins."""
    m = model_config(cfg, model)
    file = f"stacks/Pulumi.{cfg.stack}.yaml"
    if m.manifest_sha256 is None:
        raise ModelsError(
            f"platform.models[{model}].manifest_sha256 is not set in {file}: a rollback starts from the "
            f"pinned release; pin the deployed one (`sovereign models releases --stack {cfg.stack} --model "
            f"{model}` lists them), deploy, then roll back"
        )
    for index, release in enumerate(releases):
        if (release.source, release.manifest_sha256) == (m.source, m.manifest_sha256):
            return index, release
    raise ModelsError(
        f"platform.models[{model}] (source and manifest_sha256 in {file}) is not an approved release: the "
        f"release log has no import of it; import it with `sovereign models import`, or fix the pin"
    )


@dataclass(frozen=True)
class RollbackPlan:
    current: Release
    target: Release
    files: int
    # the stack pins the target already: an earlier rollback to it (this record) has no deploy
    # recorded after it, so its deploy failed or was not run; deploy it, do not step back again
    resume: RollbackRecord | None = None


def _ident(r: Release | DeployRecord) -> tuple[str, str]:
    return r.source, r.manifest_sha256


def pending_rollback(
    stack: str, current: Release, rollbacks: list[RollbackRecord], deploys: list[DeployRecord]
) -> RollbackRecord | None:
    """The stack's newest rollback, if it went to the pinned release and no deploy of that release
    was recorded after it (*rollbacks* and *deploys* newest first)."""
    last = next((rb for rb in rollbacks if rb.stack == stack), None)
    if last is None or (last.to_source, last.to_manifest_sha256) != _ident(current):
        return None
    if any(_ident(d) == _ident(current) and d.at > last.at for d in deploys):
        return None
    return last


def previous_deployed(
    stack: str,
    current: Release,
    releases: list[Release],
    rollbacks: list[RollbackRecord],
    deploys: list[DeployRecord],
) -> Release | None:
    """The release the stack ran before the pinned one: the newest deploy record of another approved
    release older than the pinned release's newest deploy (if it has one), skipping a release that a
    rollback left after that deploy (it was rolled back for a reason)."""
    approved = {_ident(r): r for r in releases}
    own = [d.at for d in deploys if _ident(d) == _ident(current)]
    for d in deploys:  # newest first
        if (own and d.at >= own[0]) or _ident(d) == _ident(current):
            continue
        left = any(
            rb.stack == stack and (rb.from_source, rb.from_manifest_sha256) == _ident(d) and rb.at > d.at
            for rb in rollbacks
        )
        if not left and _ident(d) in approved:
            return approved[_ident(d)]
    return None


def _candidates(releases: list[Release], current: Release, deploys: list[DeployRecord]) -> str:
    deployed = {_ident(d) for d in deploys}
    lines = [
        f"{r.manifest_sha256} (imported {r.at}{', deployed' if _ident(r) in deployed else ''}) {r.source}"
        for r in releases
        if _ident(r) != _ident(current)
    ]
    return "; ".join(lines) if lines else "(none: no other approved release)"


def plan_rollback(
    cfg: StackConfig, model: str, keys: dict[int, bytes], to: str | None = None
) -> RollbackPlan:
    """Pick the release to return to and re-verify it (the signature and every object against
    the recorded manifest digest): *to*, else the release deployed before the pinned one
    (``previous_deployed``; the release log's deploy records), else a refusal listing the
    candidates. If the stack pins the target of an earlier rollback whose deploy was never
    recorded, the plan is that rollback again (``resume``), not one more step back."""
    log = ReleaseLog(cfg, model)
    releases = log.releases()
    _, current = current_release(cfg, model, releases)
    resume = None
    if to is not None:
        check_sha256(to, "--to")
        if to == current.manifest_sha256:
            raise ModelsError(
                f"--to {to[:12]}…: that is the release the stack pins already; nothing to roll back"
            )
        chosen = next((r for r in releases if r.manifest_sha256 == to), None)
        if chosen is None:
            raise ModelsError(
                f"--to {to[:12]}…: no approved release of {model} has this manifest; "
                f"`sovereign models releases --stack {cfg.stack} --model {model}` lists them"
            )
    else:
        rollbacks, deploys = log.rollbacks(), log.deploys()
        resume = pending_rollback(cfg.stack, current, rollbacks, deploys)
        found = current if resume is not None else previous_deployed(
            cfg.stack, current, releases, rollbacks, deploys
        )  # fmt: skip
        if found is None:
            raise ModelsError(
                f"{model}: no release recorded as deployed to stack {cfg.stack} before the current one "
                f"({current.manifest_sha256[:12]}…, imported {current.at}): the release log records a "
                "deploy only when `sovereign models rollback` deployed it or an operator ran `sovereign "
                "models record-deploy` after their `pulumi up`, and the previous import need not be "
                f"what ran. Choose the release with --to SHA256; candidates, newest first: "
                f"{_candidates(releases, current, deploys)}"
            )
        chosen = found
    files = verify_model(cfg, model, keys, source=chosen.source, manifest_sha256=chosen.manifest_sha256)
    return RollbackPlan(current, chosen, files, resume)


def record_deploy(
    cfg: StackConfig, model: str, who: dict[str, str], how: str = "record-deploy"
) -> DeployRecord:
    """Record that the release the stack file pins now runs in the stack (after `pulumi up`)."""
    log = ReleaseLog(cfg, model)
    _, current = current_release(cfg, model, log.releases())
    return log.record_deploy(current, how, who)


@dataclass(frozen=True)
class RollbackResult:
    plan: RollbackPlan
    record: RollbackRecord
    stack_file: Path


def rollback(
    cfg: StackConfig,
    stacks_dir: Path,
    model: str,
    *,
    reason: str,
    keys: dict[int, bytes],
    who: dict[str, str],
    to: str | None = None,
) -> RollbackResult:
    """Re-verify the previously deployed release (or *to*), record the rollback, pin it in the
    stack file.

    Nothing is written unless the release verifies and the rewritten stack file is valid; the
    record goes before the file, so a pin in the file is never unaudited. If an earlier rollback
    to the pinned release was never recorded as deployed (``plan.resume``), nothing is written:
    the caller deploys it (again) instead of stepping back one more release."""
    from infra import config

    reason = check_reason(reason)
    plan = plan_rollback(cfg, model, keys, to)
    path = config.stack_file(stacks_dir, cfg.stack)
    if plan.resume is not None:  # pinned and recorded already: only the deploy is left
        return RollbackResult(plan, plan.resume, path)
    new = pinned_and_checked(path, cfg.stack, model, plan.target.source, plan.target.manifest_sha256)
    record = ReleaseLog(cfg, model).record_rollback(plan.current, plan.target, reason, who)
    path.write_text(new, encoding="utf-8")
    return RollbackResult(plan, record, path)


# -- the deploy ------------------------------------------------------------------------------------


def deploy_command(stacks_dir: Path, stack: str) -> str:
    return f"cd {stacks_dir.resolve().parent} && pulumi up --stack {stack}"


def require_pulumi_cli(stacks_dir: Path, stack: str) -> Path:
    """The project folder (Pulumi.yaml) the Automation API runs in; refuse clearly without the CLI."""
    work_dir = stacks_dir.resolve().parent
    if shutil.which("pulumi") is None:
        raise ModelsError(
            "the Pulumi CLI is not installed here (no `pulumi` on PATH): the deploy runs `pulumi up` "
            "through Pulumi's Automation API, which drives the CLI. Install it "
            "(https://www.pulumi.com/docs/iac/download-install/) and log in to the stack's EU backend "
            f"(`sovereign bootstrap-backend --stack {stack}` prints the login lines), or pass "
            "--no-deploy and run the printed command where the CLI is; nothing was changed"
        )
    if not (work_dir / "Pulumi.yaml").is_file():
        raise ModelsError(
            f"--stacks-dir {stacks_dir}: its parent {work_dir} holds no Pulumi.yaml, so there is no project "
            "to deploy; use the repository's stacks/ or pass --no-deploy"
        )
    return work_dir


def deploy(work_dir: Path, stack: str, on_output: Callable[[str], None]) -> str:
    """``pulumi up`` of *stack* through the Automation API (the CLI, the program in infra/)."""
    from pulumi import automation as auto

    try:
        selected = auto.select_stack(stack_name=stack, work_dir=str(work_dir))
        result = selected.up(on_output=on_output)
    except FileNotFoundError:
        raise ModelsError(
            "the Pulumi CLI disappeared from PATH during the deploy: install it and rerun"
        ) from None
    except auto.errors.CommandError as exc:
        last = str(exc).strip().splitlines()[-1:] or ["(no output)"]
        raise ModelsError(
            f"`pulumi up --stack {stack}` failed: {last[0][:300]}; the stack file is pinned and the rollback "
            f"recorded, no deploy recorded: fix the cause and run the same `sovereign models rollback` "
            f"again (it deploys the pinned release, it does not step back further), or run "
            f"`{deploy_command(work_dir / 'stacks', stack)}` and then `sovereign models record-deploy`"
        ) from None
    return str(result.summary.result)
